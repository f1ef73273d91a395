// wf-heavy frees every turn once it is done: a turn's event sink held the turn that owns it
// (a shared_ptr cycle), so each turn, its AgentTurn and its JetStream message stayed allocated
// for the life of the process (about 3 KiB per turn; 300 MiB after 100,000 turns).

#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "e2e/stack.h"
#include "support/test_support.h"

namespace wf::testing {
namespace {

/// The value of an unlabelled metric in wf-heavy's /metrics, or nullopt.
std::optional<std::int64_t> HeavyMetric(const Stack& s, const std::string& name) {
  const HttpReply m = HttpCall(
      "GET", "http://127.0.0.1:" + std::to_string(s.heavy_admin_ports_.at(0)) + "/metrics");
  if (m.status != 200) return std::nullopt;
  const std::string key = "\n" + name + " ";
  const std::size_t at = ("\n" + m.body).find(key);
  if (at == std::string::npos) return std::nullopt;
  return std::stoll(m.body.substr(at + key.size() - 1));
}

TEST(HeavyTurnLifetimeTest, EveryTurnIsFreedOnceDone) {
  Stack s;
  // Answered turns, each in a new session, and one more in the first session (history).
  for (int i = 0; i < 12; ++i) {
    auto [status, body] = s.Query("hello number " + std::to_string(i), "lifetime-" + std::to_string(i));
    ASSERT_EQ(status, 200) << body << s.Logs();
    ASSERT_EQ(body["routed_to"], "heavy") << body;
  }
  auto [status, body] = s.Query("please recall", "lifetime-0");
  ASSERT_EQ(status, 200) << body;
  // A turn with a tool call (wf.tool.execute round trip) and a cancelled one (the client leaves a
  // hanging answer).
  auto [tool_status, tool_body] = s.Query("weather in Paris", "lifetime-tool");
  ASSERT_EQ(tool_status, 200) << tool_body;
  const HttpReply gone = HttpCall("POST", s.Url("/api/v1/query/stream"),
                                  R"({"message":"please hang","session_id":"lifetime-hang"})",
                                  {"Content-Type: application/json"}, 1000);
  EXPECT_EQ(gone.status, 0) << "the client must give up on the hanging answer";

  EXPECT_TRUE(Eventually([&] {
    return HeavyMetric(s, "wf_heavy_turns_started_total") == 15 &&
           HeavyMetric(s, "wf_heavy_active_turns") == 0;
  })) << s.Logs();
  // Nothing holds a finished turn: the count of allocated turns comes back to zero.
  EXPECT_TRUE(Eventually([&] { return HeavyMetric(s, "wf_heavy_turn_objects") == 0; }))
      << "turn objects still allocated: "
      << HeavyMetric(s, "wf_heavy_turn_objects").value_or(-1);
}

TEST(HeavyTurnLifetimeTest, ATurnPastItsDeadlineWithTheLlmHangingIsFreed) {
  Stack s({.agent = {{"turn_timeout_ms", 1500}}});
  auto [status, body] = s.Query("please hang", "lifetime-deadline", 20000);
  EXPECT_EQ(status, 504) << body << s.Logs();
  EXPECT_TRUE(Eventually([&] {
    return HeavyMetric(s, "wf_heavy_turns_started_total") == 1 &&
           HeavyMetric(s, "wf_heavy_active_turns") == 0;
  })) << s.Logs();
  EXPECT_TRUE(Eventually([&] { return HeavyMetric(s, "wf_heavy_turn_objects") == 0; }))
      << "turn objects still allocated: "
      << HeavyMetric(s, "wf_heavy_turn_objects").value_or(-1);
}

}  // namespace
}  // namespace wf::testing
