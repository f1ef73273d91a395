#include "gateway/event_format.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "codec/json_text.h"
#include "gateway/http_response.h"
#include "text/utf8.h"

namespace wf {
namespace {

using nlohmann::json;

v1::Final FlowFinal() {
  v1::Final f;
  f.set_answer("订单 42: shipped");
  f.set_route("flow");
  f.set_flow_id("order_status");
  f.set_run_id("run-1");
  f.set_session_id("s1");
  (*f.mutable_parameters()->mutable_fields())["order_id"].set_string_value("42");
  (*f.mutable_parameters()->mutable_fields())["days"].set_number_value(3);
  return f;
}

v1::Final AgentFinal() {
  v1::Final f;
  f.set_answer("Hello \"there\"\n");
  f.set_route("agent");
  f.set_run_id("run-2");
  f.mutable_usage()->set_prompt_tokens(10);
  f.mutable_usage()->set_completion_tokens(5);
  f.mutable_usage()->set_total_tokens(15);
  return f;
}

TEST(AnswerJson, FlowShape) {
  json j = json::parse(AnswerJson(FlowFinal(), "req-1", "fallback"));
  EXPECT_EQ(j["session_id"], "s1");
  EXPECT_EQ(j["message"], "订单 42: shipped");
  EXPECT_EQ(j["status"], "success");
  EXPECT_EQ(j["routed_to"], "lightweight");
  EXPECT_EQ(j["flow_id"], "order_status");
  EXPECT_EQ(j["request_id"], "req-1");
  EXPECT_EQ(j["run_id"], "run-1");
  EXPECT_EQ(j["parameters"], (json{{"order_id", "42"}, {"days", 3}}));
  EXPECT_FALSE(j.contains("usage"));
}

TEST(AnswerJson, AgentShape) {
  json j = json::parse(AnswerJson(AgentFinal(), "req-2", "fallback"));
  EXPECT_EQ(j["session_id"], "fallback");
  EXPECT_EQ(j["message"], "Hello \"there\"\n");
  EXPECT_EQ(j["routed_to"], "heavy");
  EXPECT_EQ(j["run_id"], "run-2");
  EXPECT_EQ(j["usage"],
            (json{{"prompt_tokens", 10}, {"completion_tokens", 5}, {"total_tokens", 15}}));
  EXPECT_FALSE(j.contains("flow_id"));
  EXPECT_FALSE(j.contains("parameters"));
  EXPECT_FALSE(j.contains("finish_reason"));  // the model did not say
}

TEST(AnswerJson, AnAnswerCutAtTheModelsLimitSaysSo) {
  v1::Final f = AgentFinal();
  f.set_finish_reason("length");
  json j = json::parse(AnswerJson(f, "req-2", "s"));
  EXPECT_EQ(j["status"], "success");
  EXPECT_EQ(j["finish_reason"], "length");
  v1::QueryEvent done;
  *done.mutable_final() = f;
  std::string sse;
  AppendSseForEvent(&sse, done, "req-2", "s");
  EXPECT_NE(sse.find("event: done\n"), std::string::npos) << sse;
  EXPECT_NE(sse.find("\"finish_reason\":\"length\""), std::string::npos) << sse;
}

TEST(AnswerJson, RunIdDefaultsToRequestIdAndCancelledIsReported) {
  v1::Final f = FlowFinal();
  f.clear_run_id();
  f.set_cancelled(true);
  json j = json::parse(AnswerJson(f, "req-3", "s"));
  EXPECT_EQ(j["run_id"], "req-3");
  EXPECT_EQ(j["status"], "cancelled");
}

TEST(JsonText, EscapesAndRepairsUtf8) {
  std::string out;
  static const char kInput[] = "a\"b\\c\n\t\x01 é 中 \xff\xc3(";
  AppendJsonString(&out, std::string_view(kInput, sizeof kInput - 1));
  json j = json::parse(out);  // must be valid JSON
  EXPECT_EQ(j.get<std::string>(), "a\"b\\c\n\t\x01 é 中 \xEF\xBF\xBD\xEF\xBF\xBD(");
  // Overlong and surrogate encodings are replaced too.
  out.clear();
  AppendJsonString(&out, "\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80");
  EXPECT_FALSE(json::parse(out, nullptr, false).is_discarded());
  EXPECT_EQ(Utf8CodePoints("请假 ok"), 5u);
  EXPECT_EQ(Utf8Truncate("中文", 4), "中");  // how error messages quote client text
}

/// Splits "event: x\ndata: y\n\n" into (x, parsed y).
std::pair<std::string, json> ParseSse(const std::string& frame) {
  EXPECT_EQ(frame.rfind("event: ", 0), 0u) << frame;
  auto nl = frame.find('\n');
  std::string name = frame.substr(7, nl - 7);
  EXPECT_EQ(frame.compare(nl + 1, 6, "data: "), 0) << frame;
  auto end = frame.find('\n', nl + 1);
  EXPECT_EQ(frame.substr(end), "\n\n");
  return {name, json::parse(frame.substr(nl + 7, end - nl - 7))};
}

TEST(Sse, FramesEveryEventKind) {
  v1::QueryEvent e;
  std::string out;

  e.set_token("Hel\nlo");
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  auto [name, data] = ParseSse(out);
  EXPECT_EQ(name, "token");
  EXPECT_EQ(data, (json{{"token", "Hel\nlo"}}));

  out.clear();
  e.mutable_tool_call()->set_id("call_1");
  e.mutable_tool_call()->set_name("weather");
  e.mutable_tool_call()->set_arguments_json(R"({"city":"Paris"})");
  e.mutable_tool_call()->set_kind("tool");
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  std::tie(name, data) = ParseSse(out);
  EXPECT_EQ(name, "tool_call");
  EXPECT_EQ(data, (json{{"id", "call_1"},
                        {"name", "weather"},
                        {"arguments", R"({"city":"Paris"})"},
                        {"kind", "tool"}}));

  out.clear();
  auto* result = e.mutable_tool_result();
  result->set_call_id("call_1");
  result->set_name("weather");
  result->set_ok(false);
  result->set_content("");
  result->mutable_error()->set_code("upstream_timeout");
  result->mutable_error()->set_message("slow");
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  std::tie(name, data) = ParseSse(out);
  EXPECT_EQ(name, "tool_result");
  EXPECT_EQ(data["ok"], false);
  EXPECT_EQ(data["error"], (json{{"code", "upstream_timeout"}, {"message", "slow"}}));

  out.clear();
  result->set_ok(true);
  result->set_content("sunny");
  result->clear_error();
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  std::tie(name, data) = ParseSse(out);
  EXPECT_FALSE(data.contains("error"));
  EXPECT_EQ(data["content"], "sunny");

  out.clear();
  *e.mutable_final() = AgentFinal();
  ASSERT_TRUE(AppendSseForEvent(&out, e, "req-9", "s"));
  std::tie(name, data) = ParseSse(out);
  EXPECT_EQ(name, "done");
  EXPECT_EQ(data["request_id"], "req-9");
  EXPECT_EQ(data["run_id"], "run-2");

  out.clear();
  e.mutable_error()->set_code("no_agent_worker");
  e.mutable_error()->set_message("none");
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  std::tie(name, data) = ParseSse(out);
  EXPECT_EQ(name, "error");
  EXPECT_EQ(
      data,
      (json{{"error", {{"code", "no_agent_worker"}, {"message", "none"}, {"request_id", "r"}}}}));

  out.clear();
  EXPECT_FALSE(AppendSseForEvent(&out, v1::QueryEvent(), "r", "s"));
  EXPECT_TRUE(out.empty());
}

TEST(Sse, ReRunTurnsCarryTheirAttemptAndTruncationIsMarked) {
  v1::QueryEvent e;
  std::string out;
  e.set_token("hi");
  e.set_attempt(1);  // the first run: nothing added
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  EXPECT_EQ(ParseSse(out).second, (json{{"token", "hi"}}));

  out.clear();
  e.set_attempt(2);
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  EXPECT_EQ(ParseSse(out).second, (json{{"token", "hi"}, {"attempt", 2}}));

  out.clear();
  e.mutable_error()->set_code("deadline_exceeded");
  e.mutable_error()->set_message("late");
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  auto [name, data] = ParseSse(out);
  EXPECT_EQ(name, "error");
  EXPECT_EQ(data["attempt"], 2);
  EXPECT_EQ(data["error"]["code"], "deadline_exceeded");

  out.clear();
  auto* result = e.mutable_tool_result();
  result->set_call_id("c1");
  result->set_name("weather");
  result->set_ok(true);
  result->set_content("sunny...");
  result->set_truncated(true);
  e.set_attempt(0);
  ASSERT_TRUE(AppendSseForEvent(&out, e, "r", "s"));
  std::tie(name, data) = ParseSse(out);
  EXPECT_EQ(name, "tool_result");
  EXPECT_EQ(data["truncated"], true);
  EXPECT_FALSE(data.contains("attempt"));

  out.clear();
  AppendSseReset(&out, "REQ9", 3);
  std::tie(name, data) = ParseSse(out);
  EXPECT_EQ(name, "reset");
  EXPECT_EQ(data, (json{{"request_id", "REQ9"}, {"attempt", 3}}));
}

TEST(SessionJson, CancelledAndFailedAnswersAndOmittedMessagesAreShown) {
  v1::SessionHistory h;
  auto* user = h.add_messages();
  user->set_role("user");
  user->set_content("tell me a story");
  auto* partial = h.add_messages();
  partial->set_role("assistant");
  partial->set_content("Once upon");
  partial->set_cancelled(true);
  json j = json::parse(SessionHistoryJson(h, "sess"));
  EXPECT_FALSE(j["messages"][0].contains("cancelled"));
  EXPECT_EQ(j["messages"][1]["cancelled"], true);
  EXPECT_FALSE(j["messages"][1].contains("failed"));
  partial->set_cancelled(false);
  partial->set_failed(true);
  j = json::parse(SessionHistoryJson(h, "sess"));
  EXPECT_FALSE(j["messages"][1].contains("cancelled"));
  EXPECT_EQ(j["messages"][1]["failed"], true);
  EXPECT_FALSE(j["messages"][0].contains("failed"));
  EXPECT_FALSE(j.contains("omitted_messages"));
  h.set_omitted_messages(40);
  j = json::parse(SessionHistoryJson(h, "sess"));
  EXPECT_EQ(j["omitted_messages"], 40);
}

TEST(ErrorFromWire, MapsThroughTheErrorTable) {
  v1::Error e;
  e.set_code("upstream_timeout");
  EXPECT_EQ(HttpStatus(ErrorFromWire(e).code), 504);
  EXPECT_EQ(ErrorFromWire(e).message, "upstream_timeout");
  e.set_code("something_new");
  EXPECT_EQ(HttpStatus(ErrorFromWire(e).code), 500);
}

TEST(SessionJson, HistoryAndDelete) {
  v1::SessionHistory h;
  h.set_turn_count(1);
  h.set_created_unix_ms(1000);
  h.set_updated_unix_ms(2000);
  auto* user = h.add_messages();
  user->set_role("user");
  user->set_content("weather?");
  user->set_created_unix_ms(1000);
  user->set_run_id("run-1");
  auto* assistant = h.add_messages();
  assistant->set_role("assistant");
  auto* call = assistant->add_tool_calls();
  call->set_id("c1");
  call->set_name("weather");
  call->set_arguments_json("{}");
  call->set_kind("tool");
  auto* tool = h.add_messages();
  tool->set_role("tool");
  tool->set_name("weather");
  tool->set_tool_call_id("c1");
  tool->set_content("sunny");
  json j = json::parse(SessionHistoryJson(h, "sess"));
  EXPECT_EQ(j["session_id"], "sess");
  EXPECT_EQ(j["turn_count"], 1);
  EXPECT_EQ(j["created_unix_ms"], 1000);
  EXPECT_EQ(j["updated_unix_ms"], 2000);
  ASSERT_EQ(j["messages"].size(), 3u);
  EXPECT_EQ(j["messages"][0], (json{{"role", "user"},
                                    {"content", "weather?"},
                                    {"created_unix_ms", 1000},
                                    {"run_id", "run-1"}}));
  EXPECT_EQ(j["messages"][1]["tool_calls"][0]["name"], "weather");
  EXPECT_EQ(j["messages"][2]["tool_call_id"], "c1");
  EXPECT_EQ(j["messages"][2]["name"], "weather");
  EXPECT_EQ(json::parse(SessionDeletedJson("sess")),
            (json{{"session_id", "sess"}, {"deleted", true}}));
}

TEST(HttpResponse, FormatsHeadersAndChunks) {
  std::string r = FormatHttpResponse(404, kJsonType, "{}", "rid", true, "Allow: GET\r\n");
  EXPECT_EQ(r,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            "X-Request-Id: rid\r\nAllow: GET\r\nConnection: keep-alive\r\n\r\n{}");
  EXPECT_NE(FormatHttpResponse(200, kJsonType, "", "", false).find("Connection: close\r\n\r\n"),
            std::string::npos);
  std::string head = FormatSseHead("rid", true);
  EXPECT_NE(head.find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_NE(head.find("Connection: keep-alive\r\n\r\n"), std::string::npos);
  EXPECT_NE(FormatSseHead("rid", false).find("Connection: close\r\n\r\n"), std::string::npos);
  EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos);
  EXPECT_NE(head.find("X-Request-Id: rid\r\n"), std::string::npos);
  std::string chunk;
  AppendHttpChunk(&chunk, std::string(26, 'x'));
  EXPECT_EQ(chunk, "1a\r\n" + std::string(26, 'x') + "\r\n");
  chunk.clear();
  AppendHttpChunk(&chunk, "");
  EXPECT_TRUE(chunk.empty());
}

// RFC 9110 9.3.2: a HEAD answer is the GET answer's status and headers, Content-Length still
// the body's, and nothing after the head.
TEST(HttpResponse, HeadResponseKeepsTheHeadAndDropsTheBody) {
  const std::string get = FormatHttpResponse(200, kJsonType, R"({"status":"ok"})", "rid", true);
  const std::string head = HeadResponse(get);
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
            "X-Request-Id: rid\r\nConnection: keep-alive\r\n\r\n");
  const std::string error = FormatErrorResponse(Error{ErrorCode::kMethodNotAllowed, "use GET"},
                                                "rid", false, "Allow: GET, HEAD\r\n");
  const std::string error_head = HeadResponse(error);
  EXPECT_EQ(error_head, error.substr(0, error.find("\r\n\r\n") + 4));
  EXPECT_NE(error_head.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_NE(error_head.find("Content-Length: " + std::to_string(error.size() - error_head.size()) +
                            "\r\n"),
            std::string::npos);
  EXPECT_EQ(HeadResponse(FormatHttpResponse(204, kJsonType, "", "", true)),
            FormatHttpResponse(204, kJsonType, "", "", true));
}

TEST(HttpWire, StatusLine) {
  std::string line = "x";
  AppendHttpStatusLine(&line, 404);
  EXPECT_EQ(line, "xHTTP/1.1 404 Not Found\r\n");
  line.clear();
  AppendHttpStatusLine(&line, 599);
  EXPECT_EQ(line, "HTTP/1.1 599 Unknown\r\n");
}

}  // namespace
}  // namespace wf
