#include "session/session_codec.h"

#include <gtest/gtest.h>

#include <string>

namespace wf {
namespace {

TEST(SessionIdTest, AcceptsTheDocumentedAlphabet) {
  EXPECT_TRUE(IsValidSessionId("a"));
  EXPECT_TRUE(IsValidSessionId("user-42:chat_1.v2"));
  EXPECT_TRUE(IsValidSessionId(std::string(128, 'x')));
}

TEST(SessionIdTest, RejectsOthers) {
  EXPECT_FALSE(IsValidSessionId(""));
  EXPECT_FALSE(IsValidSessionId(std::string(129, 'x')));
  EXPECT_FALSE(IsValidSessionId("a b"));
  EXPECT_FALSE(IsValidSessionId("a/b"));
  EXPECT_FALSE(IsValidSessionId("a*"));
  EXPECT_FALSE(IsValidSessionId(std::string("a\0b", 3)));
  EXPECT_FALSE(IsValidSessionId("会话"));
}

TEST(SanitizeTextTest, KeepsValidUtf8) {
  EXPECT_EQ(SanitizeText("hello"), "hello");
  EXPECT_EQ(SanitizeText("订单 1234 ✅ 😀"), "订单 1234 ✅ 😀");
  EXPECT_EQ(SanitizeText(""), "");
}

TEST(SanitizeTextTest, DropsNulAndReplacesInvalidSequences) {
  EXPECT_EQ(SanitizeText(std::string("a\0b", 3)), "ab");
  EXPECT_EQ(SanitizeText("a\xFF"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  // A multi-byte character cut in half (as a token boundary may do).
  EXPECT_EQ(SanitizeText("x\xE8\xAE"), "x\xEF\xBF\xBD\xEF\xBF\xBD");
  // Overlong encoding of '/', and a UTF-16 surrogate.
  EXPECT_EQ(SanitizeText("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(SanitizeText("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

wf::v1::TurnRecord SampleTurn() {
  wf::v1::TurnRecord turn;
  turn.set_session_id("s-1");
  turn.set_run_id("run-1");
  turn.set_finished_unix_ms(1700000000123);
  auto* user = turn.add_messages();
  user->set_role("user");
  user->set_content("hi");
  auto* assistant = turn.add_messages();
  assistant->set_role("assistant");
  assistant->set_content(std::string("ok\0", 3));
  assistant->set_created_unix_ms(5);
  assistant->set_run_id("something-else");
  return turn;
}

TEST(NormalizeTurnTest, FillsDefaultsAndSanitizes) {
  wf::v1::TurnRecord turn = SampleTurn();
  ASSERT_TRUE(NormalizeTurn(turn, 42).ok());
  EXPECT_EQ(turn.status(), "ok");
  EXPECT_EQ(turn.messages(0).created_unix_ms(), 1700000000123);
  EXPECT_EQ(turn.messages(1).created_unix_ms(), 5);
  EXPECT_EQ(turn.messages(0).run_id(), "run-1");
  EXPECT_EQ(turn.messages(1).run_id(), "run-1");
  EXPECT_EQ(turn.messages(1).content(), "ok");
}

TEST(NormalizeTurnTest, UsesNowWithoutFinishedTime) {
  wf::v1::TurnRecord turn = SampleTurn();
  turn.set_finished_unix_ms(0);
  ASSERT_TRUE(NormalizeTurn(turn, 42).ok());
  EXPECT_EQ(turn.messages(0).created_unix_ms(), 42);
}

TEST(NormalizeTurnTest, RejectsInvalidRecords) {
  wf::v1::TurnRecord turn = SampleTurn();
  turn.set_session_id("bad id");
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
  turn = SampleTurn();
  turn.set_run_id("");
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
  turn = SampleTurn();
  turn.set_run_id(std::string(129, 'r'));
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
  turn = SampleTurn();
  turn.set_status("done");
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
  for (const char* status : {"ok", "error", "cancelled"}) {
    turn = SampleTurn();
    turn.set_status(status);
    EXPECT_TRUE(NormalizeTurn(turn, 1).ok()) << status;
  }
}

// Times PostgreSQL's `epoch + ms * interval '1 ms'` cannot hold are refused before they reach it
// (a record it refused with "interval out of range" used to be retried forever).
TEST(NormalizeTurnTest, RejectsTimesAfterTheYear9999) {
  constexpr std::int64_t kLast = 253402300799999;  // 9999-12-31T23:59:59.999Z
  wf::v1::TurnRecord turn = SampleTurn();
  turn.set_started_unix_ms(kLast);
  turn.set_finished_unix_ms(kLast);
  turn.mutable_messages(1)->set_created_unix_ms(kLast);
  EXPECT_TRUE(NormalizeTurn(turn, 1).ok());
  turn = SampleTurn();
  turn.set_started_unix_ms(kLast + 1);
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
  turn = SampleTurn();
  turn.set_finished_unix_ms(INT64_MAX);
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
  turn = SampleTurn();
  turn.mutable_messages(1)->set_created_unix_ms(10000000000000000);
  EXPECT_EQ(NormalizeTurn(turn, 1).error().code, ErrorCode::kBadRequest);
}

TEST(ToolCallsJsonTest, RoundTrips) {
  wf::v1::ChatMessage message;
  message.set_role("assistant");
  EXPECT_EQ(ToolCallsToJson(message), "");
  auto* call = message.add_tool_calls();
  call->set_id("call_1");
  call->set_name("weather");
  call->set_arguments_json(R"({"city":"北京","n":1})");
  call->set_kind("tool");
  auto* flow = message.add_tool_calls();
  flow->set_id("call_2");
  flow->set_name("order_status");
  flow->set_kind("flow");
  const std::string json = ToolCallsToJson(message);
  wf::v1::ChatMessage back;
  ASSERT_TRUE(ToolCallsFromJson(json, back).ok());
  ASSERT_EQ(back.tool_calls_size(), 2);
  EXPECT_EQ(back.tool_calls(0).id(), "call_1");
  EXPECT_EQ(back.tool_calls(0).name(), "weather");
  EXPECT_EQ(back.tool_calls(0).arguments_json(), R"({"city":"北京","n":1})");
  EXPECT_EQ(back.tool_calls(0).kind(), "tool");
  EXPECT_EQ(back.tool_calls(1).name(), "order_status");
  EXPECT_EQ(back.tool_calls(1).arguments_json(), "");
}

TEST(ToolCallsJsonTest, RejectsGarbage) {
  wf::v1::ChatMessage message;
  EXPECT_TRUE(ToolCallsFromJson("", message).ok());
  EXPECT_FALSE(ToolCallsFromJson("{", message).ok());
  EXPECT_FALSE(ToolCallsFromJson("{}", message).ok());
  EXPECT_FALSE(ToolCallsFromJson("[1]", message).ok());
}

TEST(SessionKeysTest, UsesThePrefix) {
  const SessionKeys keys = SessionKeys::For("wf:", "s-1");
  EXPECT_EQ(keys.history, "wf:hist:s-1");
  EXPECT_EQ(keys.runs, "wf:runs:s-1");
  EXPECT_EQ(keys.version, "wf:ver:s-1");
  EXPECT_EQ(keys.lock, "wf:lock:s-1");
}

}  // namespace
}  // namespace wf
