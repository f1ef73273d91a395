#include "agent/history.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

wf::v1::ChatMessage Msg(const std::string& role, const std::string& content) {
  wf::v1::ChatMessage m;
  m.set_role(role);
  m.set_content(content);
  return m;
}

wf::v1::ChatMessage CallMsg(const std::vector<std::string>& ids) {
  wf::v1::ChatMessage m = Msg("assistant", "");
  for (const auto& id : ids) {
    auto* c = m.add_tool_calls();
    c->set_id(id);
    c->set_name("t");
    c->set_arguments_json("{}");
  }
  return m;
}

wf::v1::ChatMessage ToolMsg(const std::string& id, const std::string& content) {
  wf::v1::ChatMessage m = Msg("tool", content);
  m.set_tool_call_id(id);
  return m;
}

std::vector<std::string> Contents(const std::vector<wf::v1::ChatMessage>& v) {
  std::vector<std::string> out;
  for (const auto& m : v) out.push_back(m.role() + ":" + m.content());
  return out;
}

std::vector<wf::v1::ChatMessage> ThreeTurns() {
  return {Msg("user", "u1"), Msg("assistant", "a1"),
          Msg("user", "u2"), CallMsg({"k1", "k2"}), ToolMsg("k1", "r1"), ToolMsg("k2", "r2"),
          Msg("assistant", "a2"),
          Msg("user", "u3"), Msg("assistant", "a3")};
}

TEST(TrimHistory, EverythingFits) {
  EXPECT_EQ(TrimHistory(ThreeTurns(), 50, 48000).size(), 9u);
  EXPECT_EQ(TrimHistory(ThreeTurns(), 0, 0).size(), 9u);  // 0 = no limit
}

TEST(TrimHistory, DropsOldestWholeTurnsForTheMessageLimit) {
  // 8 allowed: the first turn (2 messages) goes.
  EXPECT_EQ(Contents(TrimHistory(ThreeTurns(), 8, 0)),
            (std::vector<std::string>{"user:u2", "assistant:", "tool:r1", "tool:r2",
                                      "assistant:a2", "user:u3", "assistant:a3"}));
  // 6 allowed: the second turn (5 messages) cannot be split, so it goes too.
  EXPECT_EQ(Contents(TrimHistory(ThreeTurns(), 6, 0)),
            (std::vector<std::string>{"user:u3", "assistant:a3"}));
  // 1 allowed: even the newest turn is too big.
  EXPECT_TRUE(TrimHistory(ThreeTurns(), 1, 0).empty());
}

TEST(TrimHistory, DropsOldestWholeTurnsForTheCharLimit) {
  auto history = ThreeTurns();
  history[1].set_content(std::string(100, 'x'));
  EXPECT_EQ(TrimHistory(history, 0, 50).size(), 7u);
  // Code points, not bytes: 10 Han characters are 10 chars.
  std::vector<wf::v1::ChatMessage> han = {Msg("user", "\xE4\xBD\xA0\xE5\xA5\xBD"),
                                          Msg("assistant", "\xE4\xBD\xA0\xE5\xA5\xBD")};
  EXPECT_EQ(TrimHistory(han, 0, 4).size(), 2u);
  EXPECT_EQ(TrimHistory(han, 0, 3).size(), 0u);
}

TEST(TrimHistory, RepairsToolPairing) {
  std::vector<wf::v1::ChatMessage> h = {
      Msg("system", "old prompt"),
      ToolMsg("orphan", "x"),
      Msg("user", "u1"),
      CallMsg({"k1", "k2"}),  // k2 never answered
      ToolMsg("k1", "r1"),
      ToolMsg("zz", "answers nothing"),
      Msg("assistant", "a1"),
      Msg("user", "u2"),
      CallMsg({"k3"}),  // no result at all, no text: dropped
      Msg("user", "u3"),
  };
  const auto out = TrimHistory(h, 0, 0);
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[0].content(), "u1");
  ASSERT_EQ(out[1].tool_calls_size(), 1);
  EXPECT_EQ(out[1].tool_calls(0).id(), "k1");
  EXPECT_EQ(out[2].tool_call_id(), "k1");
  EXPECT_EQ(out[3].content(), "a1");
  EXPECT_EQ(out[4].content(), "u2");
  EXPECT_EQ(out[5].content(), "u3");
}

}  // namespace
}  // namespace wf
