// Integration tests of wf-scripted-llm: the real binary on a free port, spoken to over HTTP the
// way an OpenAI client would.

#include <gtest/gtest.h>

#include <csignal>
#include <ctime>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "scripted_llm/conversation.h"
#include "scripted_llm_server.h"
#include "stream_client.h"
#include "support/test_support.h"

namespace wf::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

json UserChat(const std::string& text, bool stream = false) {
  return {{"model", "gpt-test"},
          {"stream", stream},
          {"messages", json::array({{{"role", "user"}, {"content", text}}})}};
}

/// A streamed answer put back together the way OpenAI SDKs do it.
struct Assembled {
  bool ok = true;
  std::string error;
  std::string role;
  std::string content;
  std::vector<std::string> pieces;  // content deltas in order
  struct Call {
    std::string id, type, name, arguments;
    int fragments = 0;
  };
  std::map<int, Call> calls;
  std::string finish_reason;
  json usage;
  bool done = false;
  int chunks = 0;
  std::string id;
};

Assembled Assemble(const std::vector<std::string>& data) {
  Assembled a;
  auto fail = [&](const std::string& why) {
    a.ok = false;
    if (a.error.empty()) a.error = why;
  };
  for (const auto& payload : data) {
    if (a.done) fail("frame after [DONE]");
    if (payload == "[DONE]") {
      a.done = true;
      continue;
    }
    const json chunk = json::parse(payload, nullptr, false);
    if (chunk.is_discarded()) {
      fail("unparsable chunk: " + payload);
      continue;
    }
    ++a.chunks;
    if (chunk.value("object", "") != "chat.completion.chunk") fail("bad object");
    if (a.id.empty()) a.id = chunk.value("id", "");
    if (chunk.value("id", "") != a.id) fail("id changed between chunks");
    if (chunk.contains("usage") && chunk["usage"].is_object()) a.usage = chunk["usage"];
    for (const auto& choice : chunk["choices"]) {
      const json& delta = choice["delta"];
      if (delta.contains("role")) a.role = delta["role"];
      if (delta.contains("content") && delta["content"].is_string()) {
        const std::string piece = delta["content"];
        if (!piece.empty()) a.pieces.push_back(piece);
        a.content += piece;
      }
      if (delta.contains("tool_calls")) {
        for (const auto& call : delta["tool_calls"]) {
          const int index = call["index"];
          Assembled::Call& c = a.calls[index];
          if (call.contains("id")) c.id = call["id"];
          if (call.contains("type")) c.type = call["type"];
          if (call.contains("function")) {
            const json& fn = call["function"];
            if (fn.contains("name")) c.name += fn["name"].get<std::string>();
            if (fn.contains("arguments")) {
              c.arguments += fn["arguments"].get<std::string>();
              if (!fn["arguments"].get<std::string>().empty()) ++c.fragments;
            }
          }
        }
      }
      if (!choice["finish_reason"].is_null()) a.finish_reason = choice["finish_reason"];
    }
  }
  if (!a.done) fail("no [DONE]");
  return a;
}

// ---------------------------------------------------------------- plain text

TEST(ScriptedLlmTest, NonStreamingTextIsADefaultEchoCompletion) {
  ScriptedLlmServer llm;
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const json request = UserChat("hello there");
  const HttpReply reply = llm.Chat(request);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_NE(reply.headers.at("content-type").find("application/json"), std::string::npos);
  const json body = json::parse(reply.body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(body["model"], "gpt-test");
  ASSERT_EQ(body["choices"].size(), 1u);
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["finish_reason"], "stop");
  EXPECT_EQ(choice["message"]["role"], "assistant");
  const std::string digest = scripted_llm::HistoryDigest(request["messages"]);
  EXPECT_EQ(choice["message"]["content"],
            "You said: hello there. I have seen 1 user messages (digest " + digest + ").");
  EXPECT_FALSE(choice["message"].contains("tool_calls"));
  const json& usage = body["usage"];
  EXPECT_GT(usage["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(usage["completion_tokens"], 12);  // You said: hello there. I have seen 1 user ...
  EXPECT_EQ(usage["total_tokens"].get<int>(),
            usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());

  // The same on /chat/completions (base URL without /v1).
  const HttpReply short_path = HttpCall("POST", llm.Url("/chat/completions"), request.dump(),
                                        {"Content-Type: application/json"});
  ASSERT_EQ(short_path.status, 200);
  EXPECT_EQ(json::parse(short_path.body)["choices"][0]["message"]["content"],
            choice["message"]["content"]);

  const json stats = llm.Stats();
  EXPECT_EQ(stats["requests"], 2);
  EXPECT_EQ(stats["completed"], 2);
  EXPECT_EQ(stats["active"], 0);
  ASSERT_EQ(stats["last_requests"].size(), 2u);
  EXPECT_EQ(stats["last_requests"][0], request);
}

TEST(ScriptedLlmTest, ModelsHealthAndUnknownPaths) {
  ScriptedLlmServer llm;
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  HttpReply models = HttpCall("GET", llm.Url("/v1/models"));
  ASSERT_EQ(models.status, 200);
  const json list = json::parse(models.body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "scripted");
  EXPECT_EQ(list["data"][0]["object"], "model");

  HttpReply health = HttpCall("GET", llm.Url("/health"));
  ASSERT_EQ(health.status, 200);
  EXPECT_EQ(json::parse(health.body), json({{"status", "ok"}}));

  HttpReply unknown = HttpCall("POST", llm.Url("/v1/embeddings"), "{}");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_TRUE(json::parse(unknown.body)["error"]["message"].is_string());

  HttpReply wrong_method = HttpCall("GET", llm.Url("/v1/chat/completions"));
  EXPECT_EQ(wrong_method.status, 405);
}

// ---------------------------------------------------------------- streaming

TEST(ScriptedLlmTest, StreamedFramesConcatenateToTheReply) {
  ScriptedLlmServer llm(R"({"rules":[{"when":{"last_user_contains":"poem"},
      "then":{"reply":"Roses are red,\nviolets are blue; 你好世界 done."}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  json request = UserChat("a poem please", true);
  request["stream_options"] = {{"include_usage", true}};
  const HttpReply reply = llm.Chat(request);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.headers.at("content-type").rfind("text/event-stream", 0), 0u);

  const std::vector<std::string> data = SseData(reply.body);
  const Assembled a = Assemble(data);
  ASSERT_TRUE(a.ok) << a.error;
  EXPECT_EQ(a.role, "assistant");
  EXPECT_EQ(a.content, "Roses are red,\nviolets are blue; 你好世界 done.");
  // Words with their trailing whitespace; every CJK character alone.
  const std::vector<std::string> expected = {
      "Roses ", "are ", "red,\n", "violets ", "are ", "blue; ", "你", "好", "世", "界 ", "done."};
  EXPECT_EQ(a.pieces, expected);
  EXPECT_EQ(a.finish_reason, "stop");
  EXPECT_TRUE(a.calls.empty());

  // First frame: the role delta; the usage frame has no choices and comes before [DONE].
  const json first = json::parse(data.front());
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  ASSERT_GE(data.size(), 3u);
  const json usage_frame = json::parse(data[data.size() - 2]);
  EXPECT_TRUE(usage_frame["choices"].empty());
  EXPECT_EQ(usage_frame["usage"]["completion_tokens"], 11);
  EXPECT_EQ(data.back(), "[DONE]");

  // Without include_usage there is no usage frame, and no usage field at all.
  const HttpReply plain = llm.Chat(UserChat("a poem please", true));
  const std::vector<std::string> plain_data = SseData(plain.body);
  const Assembled b = Assemble(plain_data);
  ASSERT_TRUE(b.ok) << b.error;
  EXPECT_EQ(b.content, a.content);
  EXPECT_TRUE(b.usage.is_null());
  EXPECT_FALSE(json::parse(plain_data[plain_data.size() - 2]).contains("usage"));
}

TEST(ScriptedLlmTest, ToolCallsAreStreamedInFragmentsAndAssemble) {
  ScriptedLlmServer llm(R"J({"rules":[
    {"when":{"last_user_regex":"(?i)weather in (?P<city>\\w+)","no_tool_result":true},
     "then":{"tool_calls":[
        {"name":"weather","arguments":{"city":"{city}","unit":"celsius","note":"say \"hi\""}},
        {"name":"clock","arguments":{"timezone":"Europe/{city}"}}]}},
    {"when":{"last_message_role":"tool"},"then":{"reply":"Tool said: {last_tool_result}"}}]})J");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const HttpReply reply = llm.Chat(UserChat("What is the weather in Paris?", true));
  ASSERT_EQ(reply.status, 200) << reply.body;
  const std::vector<std::string> data = SseData(reply.body);
  const Assembled a = Assemble(data);
  ASSERT_TRUE(a.ok) << a.error;
  EXPECT_EQ(a.finish_reason, "tool_calls");
  EXPECT_EQ(a.content, "");
  ASSERT_EQ(a.calls.size(), 2u);
  const auto& weather = a.calls.at(0);
  const auto& clock = a.calls.at(1);
  EXPECT_EQ(weather.name, "weather");
  EXPECT_EQ(weather.type, "function");
  EXPECT_EQ(weather.id.rfind("call_", 0), 0u);
  EXPECT_NE(weather.id, clock.id);
  EXPECT_GT(weather.fragments, 2) << "arguments must arrive in several fragments";
  EXPECT_EQ(json::parse(weather.arguments),
            json({{"city", "Paris"}, {"unit", "celsius"}, {"note", "say \"hi\""}}));
  EXPECT_EQ(clock.name, "clock");
  EXPECT_EQ(json::parse(clock.arguments), json({{"timezone", "Europe/Paris"}}));

  // The first delta of each call carries index, id, type, name and empty arguments.
  int headers_seen = 0;
  for (const auto& payload : data) {
    if (payload == "[DONE]") continue;
    const json chunk = json::parse(payload);
    if (chunk["choices"].empty()) continue;
    const json& delta = chunk["choices"][0]["delta"];
    if (!delta.contains("tool_calls")) continue;
    const json& call = delta["tool_calls"][0];
    if (call.contains("id")) {
      ++headers_seen;
      EXPECT_EQ(call["index"], headers_seen - 1);
      EXPECT_EQ(call["type"], "function");
      EXPECT_EQ(call["function"]["arguments"], "");
    } else {
      EXPECT_FALSE(call["function"].contains("name"));
    }
  }
  EXPECT_EQ(headers_seen, 2);

  // Non-streamed, the same calls come whole, with content null.
  const HttpReply whole = llm.Chat(UserChat("What is the weather in Oslo?"));
  ASSERT_EQ(whole.status, 200);
  const json message = json::parse(whole.body)["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  ASSERT_EQ(message["tool_calls"].size(), 2u);
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(
      json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>())["city"],
      "Oslo");
  EXPECT_EQ(json::parse(whole.body)["choices"][0]["finish_reason"], "tool_calls");

  // Turn 2: the tool result answered.
  json turn2 = UserChat("What is the weather in Oslo?");
  turn2["messages"].push_back(message);
  turn2["messages"].push_back({{"role", "tool"},
                               {"tool_call_id", message["tool_calls"][0]["id"]},
                               {"content", "12 degrees"}});
  const HttpReply answer = llm.Chat(turn2);
  ASSERT_EQ(answer.status, 200);
  EXPECT_EQ(json::parse(answer.body)["choices"][0]["message"]["content"], "Tool said: 12 degrees");
}

// ---------------------------------------------------------------- errors

TEST(ScriptedLlmTest, RateLimitedOnceWithRetryAfterThenSuccess) {
  ScriptedLlmServer llm(R"({"rules":[
    {"when":{"last_user_contains":"flaky"},"times":1,"then":{"status":429,"retry_after_s":1}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const HttpReply first = llm.Chat(UserChat("a flaky request"));
  ASSERT_EQ(first.status, 429);
  EXPECT_EQ(first.headers.at("retry-after"), "1");
  const json error = json::parse(first.body)["error"];
  EXPECT_TRUE(error["message"].is_string());
  EXPECT_EQ(error["type"], "requests");
  EXPECT_EQ(error["code"], "rate_limit_exceeded");

  const HttpReply second = llm.Chat(UserChat("a flaky request"));
  ASSERT_EQ(second.status, 200) << second.body;

  // /_reset refills the budget.
  ASSERT_EQ(HttpCall("POST", llm.Url("/_reset")).status, 200);
  EXPECT_EQ(llm.Chat(UserChat("a flaky request")).status, 429);
  const json stats = llm.Stats();
  EXPECT_EQ(stats["requests"], 1);
  EXPECT_EQ(stats["errors"], 1);
  EXPECT_EQ(stats["completed"], 0);
}

TEST(ScriptedLlmTest, ServerErrorHasOpenAiShape) {
  ScriptedLlmServer llm(R"({"rules":[
    {"when":{"last_user_contains":"boom"},"then":{"status":500}},
    {"when":{"last_user_contains":"custom"},
     "then":{"status":503,"message":"overloaded {model}","error_code":"busy"}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const HttpReply boom = llm.Chat(UserChat("boom", true));
  ASSERT_EQ(boom.status, 500);
  const json error = json::parse(boom.body)["error"];
  EXPECT_EQ(error["type"], "server_error");
  EXPECT_TRUE(error.contains("code"));
  EXPECT_TRUE(error["message"].is_string());

  const HttpReply custom = llm.Chat(UserChat("custom"));
  ASSERT_EQ(custom.status, 503);
  EXPECT_EQ(json::parse(custom.body)["error"]["message"], "overloaded gpt-test");
  EXPECT_EQ(json::parse(custom.body)["error"]["code"], "busy");
}

TEST(ScriptedLlmTest, BadJsonAndBadRequestsAre400) {
  ScriptedLlmServer llm;
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const HttpReply bad = HttpCall("POST", llm.Url("/v1/chat/completions"), "{not json",
                                 {"Content-Type: application/json"});
  ASSERT_EQ(bad.status, 400);
  const json error = json::parse(bad.body)["error"];
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_TRUE(error["message"].is_string());
  EXPECT_TRUE(error.contains("code"));

  const HttpReply no_messages =
      HttpCall("POST", llm.Url("/v1/chat/completions"), R"({"model":"m"})");
  EXPECT_EQ(no_messages.status, 400);
  const HttpReply no_model = HttpCall("POST", llm.Url("/v1/chat/completions"),
                                      R"({"messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(no_model.status, 400);
  EXPECT_NE(json::parse(no_model.body)["error"]["message"].get<std::string>().find("model"),
            std::string::npos);

  // The server is still fine.
  EXPECT_EQ(llm.Chat(UserChat("still there?")).status, 200);
}

TEST(ScriptedLlmTest, BodiesAbove8MiBAre413) {
  ScriptedLlmServer llm;
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  json big = UserChat(std::string(9u << 20, 'x'));
  const HttpReply reply = llm.Chat(big, {}, 30000);
  ASSERT_EQ(reply.status, 413) << reply.body;
  EXPECT_EQ(json::parse(reply.body)["error"]["type"], "invalid_request_error");

  // Just under the limit is accepted.
  json fits = UserChat(std::string((8u << 20) - 200, 'y'));
  EXPECT_EQ(llm.Chat(fits, {}, 30000).status, 200);
}

// ---------------------------------------------------------------- hangs, delays, disconnects

TEST(ScriptedLlmTest, HangEndsWhenTheClientGivesUpAndIsCountedAsADisconnect) {
  ScriptedLlmServer llm(
      R"({"rules":[{"when":{"last_user_contains":"hang"},"then":{"hang":true}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const HttpReply reply = llm.Chat(UserChat("please hang", true), {}, 300);
  EXPECT_EQ(reply.status, 0) << "the client must time out";
  EXPECT_TRUE(Eventually([&] {
    const json stats = llm.Stats();
    return stats["client_disconnects"] == 1 && stats["active"] == 0;
  })) << llm.Stats().dump();
  EXPECT_EQ(llm.Stats()["completed"], 0);
}

TEST(ScriptedLlmTest, PerTokenDelayStreamsTheFirstChunkBeforeTheLastIsProduced) {
  ScriptedLlmServer llm(R"({"rules":[{"when":{"last_user_contains":"slow"},
      "then":{"reply":"one two three four five six seven eight nine ten","delay_ms":150}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  StreamClient client(llm.port());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("POST", "/v1/chat/completions", UserChat("slow", true).dump()));
  ASSERT_EQ(client.status(), 200);
  EXPECT_EQ(client.headers().at("transfer-encoding"), "chunked");

  std::optional<std::string> role = client.NextEvent();
  ASSERT_TRUE(role.has_value());
  std::optional<std::string> first = client.NextEvent();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(json::parse(*first)["choices"][0]["delta"]["content"], "one ");
  // The answer is still being produced while its first piece is in our hands.
  json stats = llm.Stats();
  EXPECT_EQ(stats["active"], 1);
  EXPECT_EQ(stats["completed"], 0);

  std::string content = json::parse(*first)["choices"][0]["delta"]["content"];
  bool done = false;
  while (auto event = client.NextEvent()) {
    if (*event == "[DONE]") {
      done = true;
      break;
    }
    const json chunk = json::parse(*event);
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(content, "one two three four five six seven eight nine ten");
  EXPECT_TRUE(Eventually([&] { return llm.Stats()["completed"] == 1; }));

  // The connection is kept alive for the next request.
  ASSERT_TRUE(client.Send("GET", "/health", "")) << llm.process().Log();
  EXPECT_EQ(client.status(), 200);
  EXPECT_EQ(client.ReadBody().value_or(""), R"({"status":"ok"})");
}

TEST(ScriptedLlmTest, ClientClosingMidStreamStopsTheAnswerAndIsCounted) {
  ScriptedLlmServer llm(R"({"default_delay_ms":100})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  StreamClient client(llm.port());
  ASSERT_TRUE(client.Send("POST", "/v1/chat/completions", UserChat("talk to me", true).dump()));
  ASSERT_TRUE(client.NextEvent().has_value());  // role
  ASSERT_TRUE(client.NextEvent().has_value());  // first token
  client.Close();
  EXPECT_TRUE(Eventually([&] {
    const json stats = llm.Stats();
    return stats["client_disconnects"] == 1 && stats["active"] == 0;
  })) << llm.Stats().dump();
  EXPECT_EQ(llm.Stats()["completed"], 0);
}

TEST(ScriptedLlmTest, HangAfterTokensAndCloseAfterTokens) {
  ScriptedLlmServer llm(R"({"rules":[
    {"when":{"last_user_contains":"stall"},"then":{"reply":"a b c d e","hang_after_tokens":2}},
    {"when":{"last_user_contains":"drop"},"then":{"reply":"a b c d e","close_after_tokens":3}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  {
    StreamClient client(llm.port());
    ASSERT_TRUE(client.Send("POST", "/v1/chat/completions", UserChat("stall", true).dump()));
    ASSERT_TRUE(client.NextEvent().has_value());  // role
    EXPECT_EQ(json::parse(client.NextEvent().value())["choices"][0]["delta"]["content"], "a ");
    EXPECT_EQ(json::parse(client.NextEvent().value())["choices"][0]["delta"]["content"], "b ");
    EXPECT_FALSE(client.NextEvent(milliseconds(300)).has_value()) << "must stall after 2 tokens";
    EXPECT_EQ(llm.Stats()["active"], 1);
  }  // closes the connection
  EXPECT_TRUE(Eventually([&] { return llm.Stats()["client_disconnects"] == 1; }));

  StreamClient client(llm.port());
  ASSERT_TRUE(client.Send("POST", "/v1/chat/completions", UserChat("drop", true).dump()));
  int events = 0;
  while (client.NextEvent()) ++events;
  EXPECT_EQ(events, 4);  // role + 3 tokens, then the server drops the connection
  EXPECT_TRUE(client.ServerClosed());
}

TEST(ScriptedLlmTest, ErrorAfterTokensAndRetryAfterDate) {
  ScriptedLlmServer llm(R"({"rules":[
    {"when":{"last_user_contains":"fail"},"then":{"reply":"a b c d e","error_after_tokens":2,
      "message":"overloaded","error_type":"server_error"}},
    {"when":{"last_user_contains":"later"},"then":{"status":429,"retry_after_s":30,
      "retry_after_date":true}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  StreamClient client(llm.port());
  ASSERT_TRUE(client.Send("POST", "/v1/chat/completions", UserChat("fail", true).dump()));
  std::vector<json> events;
  while (auto event = client.NextEvent()) {
    if (*event == "[DONE]") break;
    events.push_back(json::parse(*event));
  }
  ASSERT_EQ(events.size(), 4u);  // role, 2 tokens, the error object; no finish, no [DONE]
  EXPECT_EQ(events[1]["choices"][0]["delta"]["content"], "a ");
  EXPECT_EQ(events[2]["choices"][0]["delta"]["content"], "b ");
  EXPECT_EQ(events[3]["error"]["message"], "overloaded");
  EXPECT_EQ(events[3]["error"]["type"], "server_error");
  EXPECT_FALSE(events[3].contains("choices"));
  EXPECT_EQ(llm.Stats()["errors"], 1);
  // Not streamed: an error status with the same error.
  const HttpReply plain = llm.Chat(UserChat("fail"));
  EXPECT_EQ(plain.status, 500);
  EXPECT_EQ(json::parse(plain.body)["error"]["message"], "overloaded");

  const HttpReply later = llm.Chat(UserChat("later"));
  EXPECT_EQ(later.status, 429);
  const std::string date =
      later.headers.count("retry-after") ? later.headers.at("retry-after") : "";
  std::tm tm{};
  const char* end = strptime(date.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  ASSERT_TRUE(end != nullptr && *end == '\0') << "not an HTTP-date: '" << date << "'";
  const auto ahead =
      std::chrono::system_clock::from_time_t(timegm(&tm)) - std::chrono::system_clock::now();
  EXPECT_GT(ahead, std::chrono::seconds(25));
  EXPECT_LE(ahead, std::chrono::seconds(30));

  // Both need what they qualify.
  for (const char* rules : {R"({"rules":[{"then":{"status":429,"retry_after_date":true}}]})",
                            R"({"rules":[{"then":{"status":500,"error_after_tokens":1}}]})"}) {
    const HttpReply bad = HttpCall("POST", llm.Url("/_rules"), rules);
    EXPECT_EQ(bad.status, 400) << rules;
    EXPECT_NE(bad.body.find("rules[0].then."), std::string::npos) << bad.body;
  }
}

// ---------------------------------------------------------------- history

TEST(ScriptedLlmTest, HistoryDigestAndStatsProveWhatWasSent) {
  ScriptedLlmServer llm(R"({"rules":[{"when":{"last_user_contains":"recap"},
      "then":{"reply":"turns={user_turns} msgs={message_count} users={history_users} d={history_digest}"}}]})");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  json turn1 = UserChat("my name is Ada");
  const HttpReply r1 = llm.Chat(turn1);
  ASSERT_EQ(r1.status, 200);
  const std::string answer1 = json::parse(r1.body)["choices"][0]["message"]["content"];

  json turn2 = turn1;
  turn2["messages"].push_back({{"role", "assistant"}, {"content", answer1}});
  turn2["messages"].push_back({{"role", "user"}, {"content", "recap"}});
  const HttpReply r2 = llm.Chat(turn2);
  ASSERT_EQ(r2.status, 200);
  const std::string digest2 = scripted_llm::HistoryDigest(turn2["messages"]);
  EXPECT_EQ(json::parse(r2.body)["choices"][0]["message"]["content"],
            "turns=2 msgs=3 users=my name is Ada | recap d=" + digest2);
  EXPECT_NE(digest2, scripted_llm::HistoryDigest(turn1["messages"]));

  // A different history gives a different digest; the same history the same digest.
  json other = turn2;
  other["messages"][0]["content"] = "my name is Bob";
  EXPECT_NE(scripted_llm::HistoryDigest(other["messages"]), digest2);
  const HttpReply again = llm.Chat(turn2);
  EXPECT_EQ(json::parse(again.body)["choices"][0]["message"]["content"],
            json::parse(r2.body)["choices"][0]["message"]["content"]);

  const json last = llm.Stats()["last_requests"];
  ASSERT_EQ(last.size(), 3u);
  EXPECT_EQ(last[1]["messages"][0]["content"], "my name is Ada");  // turn 2 carried turn 1
  EXPECT_EQ(last[1]["messages"][1]["content"], answer1);
}

// ---------------------------------------------------------------- auth

TEST(ScriptedLlmTest, ApiKeyIsRequiredWhenConfigured) {
  ScriptedLlmServer llm("", {"--api-key", "sk-test-123"});
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const HttpReply missing = llm.Chat(UserChat("hi"));
  ASSERT_EQ(missing.status, 401);
  EXPECT_EQ(json::parse(missing.body)["error"]["type"], "invalid_request_error");

  const HttpReply wrong = llm.Chat(UserChat("hi"), {"Authorization: Bearer nope"});
  ASSERT_EQ(wrong.status, 401);
  EXPECT_EQ(json::parse(wrong.body)["error"]["code"], "invalid_api_key");
  EXPECT_EQ(wrong.body.find("sk-test-123"), std::string::npos);

  EXPECT_EQ(llm.Chat(UserChat("hi"), {"Authorization: Bearer sk-test-123"}).status, 200);
  EXPECT_EQ(HttpCall("GET", llm.Url("/v1/models")).status, 401);
  EXPECT_EQ(
      HttpCall("GET", llm.Url("/v1/models"), "", {"Authorization: Bearer sk-test-123"}).status,
      200);
  EXPECT_EQ(HttpCall("GET", llm.Url("/health")).status, 200);  // probes need no key
  EXPECT_EQ(llm.process().Log().find("sk-test-123"), std::string::npos) << "no secrets in logs";
}

TEST(ScriptedLlmTest, ApiKeyFromEnvironment) {
  ScriptedLlmServer llm("", {}, {"SCRIPTED_LLM_API_KEY=from-env"});
  ASSERT_TRUE(llm.ready()) << llm.process().Log();
  EXPECT_EQ(llm.Chat(UserChat("hi")).status, 401);
  EXPECT_EQ(llm.Chat(UserChat("hi"), {"Authorization: Bearer from-env"}).status, 200);
}

// ---------------------------------------------------------------- rules files

TEST(ScriptedLlmTest, InvalidRulesFileIsRefusedNamingThePath) {
  TempDir dir;
  const std::string path = dir.path() + "/bad.json";
  std::ofstream(path)
      << R"({"rules":[{"then":{"reply":"x"}},{"when":{"last_user_regex":"(a"},"then":{}}]})";
  Process process(BinPath("wf-scripted-llm"),
                  {"--listen", "127.0.0.1:" + std::to_string(FreePort()), "--rules", path});
  const std::optional<int> code = process.Wait(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_NE(process.Log().find("rules[1].when.last_user_regex"), std::string::npos)
      << process.Log();
}

TEST(ScriptedLlmTest, RulesCanBeReplacedAtRunTime) {
  ScriptedLlmServer llm;
  ASSERT_TRUE(llm.ready()) << llm.process().Log();
  const HttpReply bad = HttpCall("POST", llm.Url("/_rules"), R"({"rules":[{"then":{"bogus":1}}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("rules[0].then.bogus"), std::string::npos) << bad.body;

  ASSERT_EQ(HttpCall("POST", llm.Url("/_rules"), R"([{"then":{"reply":"swapped"}}])").status, 200);
  EXPECT_EQ(json::parse(llm.Chat(UserChat("x")).body)["choices"][0]["message"]["content"],
            "swapped");
}

TEST(ScriptedLlmTest, DemoRulesDriveTheDemoAgent) {
  ScriptedLlmServer llm(std::string(),
                        {"--rules", SourcePath("tests/fixtures/scripted_llm/demo_rules.json")});
  ASSERT_TRUE(llm.ready()) << llm.process().Log();

  const json tools = json::parse(R"([
    {"type":"function","function":{"name":"weather",
      "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
    {"type":"function","function":{"name":"skill_summarise",
      "parameters":{"type":"object","properties":{"text":{"type":"string"}},
                    "required":["text"]}}}])");

  // "weather in X" -> a weather tool call.
  json ask = UserChat("What's the weather in Berlin today?", true);
  ask["tools"] = tools;
  const Assembled call = Assemble(SseData(llm.Chat(ask).body));
  ASSERT_TRUE(call.ok) << call.error;
  ASSERT_EQ(call.calls.size(), 1u);
  EXPECT_EQ(call.calls.at(0).name, "weather");
  EXPECT_EQ(json::parse(call.calls.at(0).arguments)["city"], "Berlin");

  // The tool result -> an answer using it.
  json answer = ask;
  answer["messages"].push_back(
      {{"role", "assistant"},
       {"content", nullptr},
       {"tool_calls",
        {{{"id", call.calls.at(0).id},
          {"type", "function"},
          {"function", {{"name", "weather"}, {"arguments", call.calls.at(0).arguments}}}}}}});
  answer["messages"].push_back(
      {{"role", "tool"}, {"tool_call_id", call.calls.at(0).id}, {"content", "sunny, 21°C"}});
  const Assembled text = Assemble(SseData(llm.Chat(answer).body));
  ASSERT_TRUE(text.ok) << text.error;
  EXPECT_NE(text.content.find("sunny, 21°C"), std::string::npos) << text.content;

  // "summarise" -> the summarise skill is called with a schema-shaped argument object.
  json summarise = UserChat("Please summarise our chat", false);
  summarise["tools"] = tools;
  const json msg = json::parse(llm.Chat(summarise).body)["choices"][0]["message"];
  ASSERT_EQ(msg["tool_calls"].size(), 1u) << msg.dump();
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "skill_summarise");
  EXPECT_TRUE(json::parse(msg["tool_calls"][0]["function"]["arguments"].get<std::string>())["text"]
                  .is_string());

  // The skill's own (function-mode) call gets JSON that fits its schema.
  const json skill = json::parse(R"({"model":"gpt-test",
    "messages":[{"role":"system","content":"Summarise the conversation."},
                {"role":"user","content":"we talked about the weather"}],
    "response_format":{"type":"json_schema","json_schema":{"name":"summary","schema":{
      "type":"object","required":["summary"],
      "properties":{"summary":{"type":"string"},
                    "bullets":{"type":"array","items":{"type":"string"}}}}}}})");
  const json out = json::parse(
      json::parse(llm.Chat(skill).body)["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_TRUE(out["summary"].is_string());
  EXPECT_TRUE(out["bullets"].is_array());

  // Anything else: the echo reply.
  const json echo = json::parse(llm.Chat(UserChat("hello")).body);
  EXPECT_EQ(
      echo["choices"][0]["message"]["content"].get<std::string>().rfind("You said: hello.", 0), 0u);
}

// wf-heavy opens as many LLM connections as its --concurrency; the server used to stop at a
// fixed 512 (the 513th hanging turn got 503), which broke hanging-stream benchmarks above that.
TEST(ScriptedLlmTest, MaxConnectionsBoundsHangingConnectionsAndRefusesTheNext) {
  constexpr int kHanging = 600;  // above the old fixed cap of 512
  // One more than kHanging, for the /_stats probes.
  ScriptedLlmServer llm(R"([{"then":{"hang":true}}])",
                        {"--max-connections", std::to_string(kHanging + 1)});
  ASSERT_TRUE(llm.ready()) << llm.process().Log();
  std::vector<std::unique_ptr<StreamClient>> clients;
  for (int i = 0; i < kHanging; ++i) {
    clients.push_back(std::make_unique<StreamClient>(llm.port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
    ASSERT_TRUE(clients.back()->Write("POST", "/v1/chat/completions", UserChat("x", true).dump()))
        << i;
  }
  ASSERT_TRUE(Eventually([&] {
    const json stats = llm.Stats();
    return stats.is_object() && stats["active"] == kHanging;
  })) << llm.Stats().dump();

  // Take the last slot with an idle connection (the /_stats probe may still hold it for a
  // moment, then this one is refused: try again): the next one is refused with 503.
  std::unique_ptr<StreamClient> idle;
  ASSERT_TRUE(Eventually([&] {
    idle = std::make_unique<StreamClient>(llm.port());
    return idle->connected() && !idle->ServerClosed(milliseconds(200));
  }));
  const HttpReply refused = HttpCall("GET", llm.Url("/health"));
  EXPECT_EQ(refused.status, 503);
  EXPECT_NE(refused.body.find("Too many connections"), std::string::npos) << refused.body;

  // A hanging client leaves: its slot is served again, the other hangs go on.
  clients.front()->Close();
  EXPECT_TRUE(Eventually([&] {
    const json stats = llm.Stats();
    return stats.is_object() && stats["active"] == kHanging - 1;
  })) << llm.Stats().dump();
}

TEST(ScriptedLlmTest, MaxConnectionsFlagIsValidated) {
  for (const char* bad : {"0", "-3", "many", ""}) {
    Process llm(BinPath("wf-scripted-llm"), {"--listen", "127.0.0.1:0", "--max-connections", bad});
    const std::optional<int> code = llm.Wait(std::chrono::seconds(5));
    ASSERT_TRUE(code.has_value()) << bad;
    EXPECT_EQ(*code, 2) << bad;
    EXPECT_NE(llm.Log().find("--max-connections"), std::string::npos) << llm.Log();
  }
}

TEST(ScriptedLlmTest, StopsOnSigtermEvenWithAHangingClient) {
  ScriptedLlmServer llm(R"([{"then":{"hang":true}}])");
  ASSERT_TRUE(llm.ready()) << llm.process().Log();
  StreamClient client(llm.port());
  ASSERT_TRUE(client.Write("POST", "/v1/chat/completions", UserChat("x", true).dump()));
  ASSERT_TRUE(Eventually([&] { return llm.Stats()["active"] == 1; }));
  llm.process().Signal(SIGTERM);
  const std::optional<int> code = llm.process().Wait(std::chrono::seconds(5));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_TRUE(client.ServerClosed());
}

}  // namespace
}  // namespace wf::testing
