#include "matching/flow_matcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace wf {
namespace {

using nlohmann::json;

FlowConfig Flow(std::string id, std::vector<std::string> patterns) {
  FlowConfig flow;
  flow.flow_id = std::move(id);
  flow.trigger_patterns = std::move(patterns);
  flow.endpoint.url = "http://h/";
  return flow;
}

std::shared_ptr<const FlowMatcher> MustBuild(const std::vector<FlowConfig>& flows) {
  auto r = FlowMatcher::Build(flows);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : nullptr;
}

TEST(FlowMatcherTest, FirstFlowInConfigOrderWins) {
  auto m = MustBuild({Flow("a", {"nothing here", "hello"}), Flow("b", {"hello", "hel+o"}),
                      Flow("c", {"^hello$"})});
  ASSERT_TRUE(m);
  EXPECT_EQ(m->pattern_count(), 5u);
  auto match = m->FindMatch("hello");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow_index, 0u);
  EXPECT_EQ(match->pattern_index, 1u);
  EXPECT_EQ(match->flow->flow_id, "a");
  EXPECT_EQ(match->captures, json::object());
  auto second = m->FindMatch("say helllo");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->flow->flow_id, "b");
  EXPECT_EQ(second->pattern_index, 1u);
}

TEST(FlowMatcherTest, FirstMatchingPatternOfTheWinningFlow) {
  auto m = MustBuild({Flow("a", {"x(?P<n>\\d)", "(?P<n>\\d)y"})});
  ASSERT_TRUE(m);
  auto match = m->FindMatch("1y x2");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->pattern_index, 0u);
  EXPECT_EQ(match->captures, json({{"n", "2"}}));
}

TEST(FlowMatcherTest, NamedCaptures) {
  auto m = MustBuild(
      {Flow("order", {"order\\s+(?P<order_id>\\d+)\\s+status(?:\\s+for\\s+(?P<who>\\w+))?"})});
  ASSERT_TRUE(m);
  auto match = m->FindMatch("please: order 1234 status for alice, thanks");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures, json({{"order_id", "1234"}, {"who", "alice"}}));
  // An optional group that did not take part is omitted, not "".
  match = m->FindMatch("order 77 status");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures, json({{"order_id", "77"}}));
}

TEST(FlowMatcherTest, EmptyCaptureIsKept) {
  auto m = MustBuild({Flow("a", {"go(?P<suffix>x*)!"})});
  auto match = m->FindMatch("go!");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures, json({{"suffix", ""}}));
}

TEST(FlowMatcherTest, SameGroupNameInAlternatives) {
  auto m = MustBuild({Flow("a", {"id (?P<id>\\d+)|code (?P<id>[a-z]+)"})});
  auto match = m->FindMatch("my code abc");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures, json({{"id", "abc"}}));
  match = m->FindMatch("id 42");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures, json({{"id", "42"}}));
}

TEST(FlowMatcherTest, ChinesePatternsAndMessages) {
  auto m = MustBuild({Flow("order_status", {"(?:查询|查)订单\\s*(?P<order_id>\\d+)",
                                            "order\\s+(?P<order_id>\\d+)\\s+status"}),
                      Flow("leave", {"请假(?P<days>\\d+)天", "请假"}),
                      Flow("city", {"(?P<city>\\p{Han}{2,4})天气"})});
  ASSERT_TRUE(m);
  auto match = m->FindMatch("你好，帮我查询订单 12345 的状态");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "order_status");
  EXPECT_EQ(match->captures, json({{"order_id", "12345"}}));

  match = m->FindMatch("我想请假3天");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "leave");
  EXPECT_EQ(match->pattern_index, 0u);
  EXPECT_EQ(match->captures, json({{"days", "3"}}));

  match = m->FindMatch("我想请假");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->pattern_index, 1u);
  EXPECT_EQ(match->captures, json::object());

  match = m->FindMatch("北京天气怎么样");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "city");
  EXPECT_EQ(match->captures, json({{"city", "北京"}}));
}

TEST(FlowMatcherTest, CaseInsensitive) {
  auto m = MustBuild(
      {Flow("order", {"order\\s+(?P<order_id>\\d+)\\s+status"}), Flow("leave", {"Leave Request"})});
  auto match = m->FindMatch("ORDER 55 STATUS");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "order");
  EXPECT_EQ(match->captures, json({{"order_id", "55"}}));
  match = m->FindMatch("i have a leave REQUEST");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "leave");
}

TEST(FlowMatcherTest, NoMatch) {
  auto m = MustBuild({Flow("order", {"order\\s+(?P<order_id>\\d+)"}), Flow("hi", {"^hi$"})});
  EXPECT_FALSE(m->FindMatch("tell me a joke"));
  EXPECT_FALSE(m->FindMatch(""));
  EXPECT_FALSE(m->FindMatch("order abc"));
  EXPECT_FALSE(m->FindMatch("oh hi there"));  // anchors are respected
  EXPECT_TRUE(m->FindMatch("hi"));
}

TEST(FlowMatcherTest, UnanchoredSearch) {
  auto m = MustBuild({Flow("a", {"leave"})});
  EXPECT_TRUE(m->FindMatch("I want to take leave tomorrow"));
}

TEST(FlowMatcherTest, NoFlows) {
  auto m = MustBuild({});
  ASSERT_TRUE(m);
  EXPECT_EQ(m->pattern_count(), 0u);
  EXPECT_FALSE(m->FindMatch("anything"));
}

TEST(FlowMatcherTest, BadPatternNamesItsPath) {
  auto r = FlowMatcher::Build({Flow("a", {"ok"}), Flow("b", {"fine", "(?P<x"})});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(r.error().message,
            "flows[1].trigger_patterns[1]: invalid regex: invalid named capture group: (?P<x");
  r = FlowMatcher::Build({Flow("a", {"x(?=y)"})});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("look-ahead"), std::string::npos) << r.error().message;
}

TEST(FlowMatcherTest, MatchPointsAtTheMatchersOwnCopy) {
  std::vector<FlowConfig> flows = {Flow("a", {"x"})};
  auto m = MustBuild(flows);
  flows.clear();  // the matcher does not depend on the caller's vector
  auto match = m->FindMatch("x");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow, &m->flows()[0]);
  EXPECT_EQ(match->flow->flow_id, "a");
}

TEST(FlowMatcherTest, InvalidUtf8MessageDoesNotCrash) {
  auto m = MustBuild({Flow("a", {"(?P<w>\\w+)"})});
  auto match = m->FindMatch(std::string_view("\xff\xfe abc \xc3", 9));
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures["w"], "abc");
}

TEST(FlowMatcherTest, ManyPatternsPickTheRightOne) {
  std::vector<FlowConfig> flows;
  for (int i = 0; i < 1000; ++i) {
    flows.push_back(Flow(
        "flow_" + std::to_string(i),
        {"cmd" + std::to_string(i) + "\\s+(?P<arg>\\w+)", "alias" + std::to_string(i) + "\\b"}));
  }
  auto m = MustBuild(flows);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->pattern_count(), 2000u);
  auto match = m->FindMatch("please run cmd731 quickly");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "flow_731");
  // "cmd73" and "cmd7" are prefixes of "cmd731" but need whitespace after them.
  EXPECT_EQ(match->captures, json({{"arg", "quickly"}}));
  match = m->FindMatch("alias5 and alias4");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "flow_4");
  EXPECT_EQ(match->pattern_index, 1u);
}

TEST(FlowMatcherTest, ConcurrentMatchingIsConsistent) {
  std::vector<FlowConfig> flows;
  for (int i = 0; i < 200; ++i) {
    flows.push_back(Flow("f" + std::to_string(i), {"key" + std::to_string(i) + "=(?P<v>\\d+)"}));
  }
  auto m = MustBuild(flows);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        int k = (i * 7 + t) % 200;
        auto match = m->FindMatch("x key" + std::to_string(k) + "=" + std::to_string(i) + " y");
        if (!match || match->flow_index != static_cast<std::size_t>(k) ||
            match->captures["v"] != std::to_string(i)) {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace wf
