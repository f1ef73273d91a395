#include "matching/flow_matcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "config/pattern.h"

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
  EXPECT_EQ(match->captures.ToJson(), json::object());
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
  EXPECT_EQ(match->captures.ToJson(), json({{"n", "2"}}));
}

TEST(FlowMatcherTest, NamedCaptures) {
  auto m = MustBuild(
      {Flow("order", {"order\\s+(?P<order_id>\\d+)\\s+status(?:\\s+for\\s+(?P<who>\\w+))?"})});
  ASSERT_TRUE(m);
  auto match = m->FindMatch("please: order 1234 status for alice, thanks");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"order_id", "1234"}, {"who", "alice"}}));
  // An optional group that did not take part is omitted, not "".
  match = m->FindMatch("order 77 status");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"order_id", "77"}}));
}

TEST(FlowMatcherTest, EmptyCaptureIsKept) {
  auto m = MustBuild({Flow("a", {"go(?P<suffix>x*)!"})});
  auto match = m->FindMatch("go!");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"suffix", ""}}));
}

TEST(FlowMatcherTest, SameGroupNameInAlternatives) {
  auto m = MustBuild({Flow("a", {"id (?P<id>\\d+)|code (?P<id>[a-z]+)"})});
  auto match = m->FindMatch("my code abc");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"id", "abc"}}));
  match = m->FindMatch("id 42");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"id", "42"}}));
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
  EXPECT_EQ(match->captures.ToJson(), json({{"order_id", "12345"}}));

  match = m->FindMatch("我想请假3天");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "leave");
  EXPECT_EQ(match->pattern_index, 0u);
  EXPECT_EQ(match->captures.ToJson(), json({{"days", "3"}}));

  match = m->FindMatch("我想请假");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->pattern_index, 1u);
  EXPECT_EQ(match->captures.ToJson(), json::object());

  match = m->FindMatch("北京天气怎么样");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "city");
  EXPECT_EQ(match->captures.ToJson(), json({{"city", "北京"}}));
}

TEST(FlowMatcherTest, CaseInsensitive) {
  auto m = MustBuild(
      {Flow("order", {"order\\s+(?P<order_id>\\d+)\\s+status"}), Flow("leave", {"Leave Request"})});
  auto match = m->FindMatch("ORDER 55 STATUS");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "order");
  EXPECT_EQ(match->captures.ToJson(), json({{"order_id", "55"}}));
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
  EXPECT_EQ(match->captures.Find("w"), "abc");
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
  EXPECT_EQ(match->captures.ToJson(), json({{"arg", "quickly"}}));
  match = m->FindMatch("alias5 and alias4");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "flow_4");
  EXPECT_EQ(match->pattern_index, 1u);
}

TEST(FlowMatcherTest, PatternWithoutGroupsHasNoCaptures) {
  auto m = MustBuild({Flow("a", {"check\\s+(?:my\\s+)?order"})});
  auto match = m->FindMatch("please CHECK my order now");
  ASSERT_TRUE(match);
  EXPECT_TRUE(match->captures.empty());
  EXPECT_EQ(match->captures.ToJson(), json::object());
}

TEST(FlowMatcherTest, MoreNamedGroupsThanStoredInline) {
  auto m = MustBuild({Flow(
      "a",
      {"(?P<a>\\d)-(?P<b>\\d)-(?P<c>\\d)-(?:(?P<skip>x)|(?P<d>\\d))-(?P<e>\\d)-(?P<f>\\w+)"})});
  auto match = m->FindMatch("code 1-2-3-4-5-a_very_long_capture_value_over_sso done");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"a", "1"},
                                            {"b", "2"},
                                            {"c", "3"},
                                            {"d", "4"},
                                            {"e", "5"},
                                            {"f", "a_very_long_capture_value_over_sso"}}));
  // Group order is kept, the group that did not take part is left out.
  ASSERT_EQ(match->captures.size(), 6u);
  EXPECT_EQ(match->captures.name(3), "d");
  EXPECT_EQ(match->captures.name(5), "f");
  EXPECT_FALSE(match->captures.Find("skip"));
  // The values are owned: they outlive the message and survive copies and moves.
  CaptureList copy;
  {
    std::string message = "x 9-8-7-6-5-another_long_value_for_the_heap_buffer";
    auto other = m->FindMatch(message);
    ASSERT_TRUE(other);
    copy = other->captures;
    message.assign(message.size(), '#');
  }
  CaptureList moved = std::move(copy);
  EXPECT_EQ(moved.Find("a"), "9");
  EXPECT_EQ(moved.Find("f"), "another_long_value_for_the_heap_buffer");
}

TEST(FlowMatcherTest, LeftmostMatchAfterManyFailedStarts) {
  // Many positions could start a match ('a'), only the last does: more than the anchored
  // attempts the matcher makes before it searches the rest in one pass.
  auto m = MustBuild({Flow("a", {"a(?P<d>\\d)"}), Flow("b", {"(?P<z>z+)y"})});
  auto match = m->FindMatch("aa aaa aaaa ab aA a7 a8");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"d", "7"}}));
  match = m->FindMatch("z zz zzz zzzz zzzzzy");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"z", "zzzzz"}}));
}

TEST(FlowMatcherTest, WordBoundariesInTheMiddleOfAMessage) {
  // At the start of a text \b before '-' cannot hold, in "a-x" it does: the match must still
  // be found at the leftmost position, not at the later "y".
  auto m = MustBuild({Flow("a", {"\\b(?P<v>-x)|(?P<v>y)"}), Flow("b", {"\\B(?P<w>oo)|(?P<w>q)"})});
  auto match = m->FindMatch("a-x y");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "a");
  EXPECT_EQ(match->captures.ToJson(), json({{"v", "-x"}}));
  match = m->FindMatch("q foo");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"w", "q"}}));
  match = m->FindMatch("foo q");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"w", "oo"}}));
}

TEST(FlowMatcherTest, CaseSensitiveInlineGroupIsRespected) {
  auto m = MustBuild({Flow("a", {"(?-i:Code) (?P<n>\\d+)"}), Flow("b", {"(?P<any>code) \\d"})});
  auto match = m->FindMatch("code 1 CODE 2 Code 3");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "a");
  EXPECT_EQ(match->captures.ToJson(), json({{"n", "3"}}));
  match = m->FindMatch("code 1 CODE 2");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->flow->flow_id, "b");
  EXPECT_EQ(match->captures.ToJson(), json({{"any", "code"}}));
  // Only 'B' may start the first alternative (not 'b'): the leftmost match is still found.
  m = MustBuild({Flow("c", {"(?-i:B)x(?P<n>\\d)|a(?P<m>\\d)"})});
  match = m->FindMatch("Bx2 a1");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"n", "2"}}));
  match = m->FindMatch("bx2 a1");
  ASSERT_TRUE(match);
  EXPECT_EQ(match->captures.ToJson(), json({{"m", "1"}}));
}

TEST(FlowMatcherTest, CapturesAreThoseOfRe2LeftmostFirstSearch) {
  // Differential check: for each pattern alone, the matcher's captures equal those of RE2's
  // own unanchored search with the same options, on messages that put the match at the start,
  // the middle and the end, after look-alike prefixes, in mixed case and in Chinese.
  const std::vector<std::string> patterns = {
      "check\\s+(?:my\\s+)?order\\s+type5\\s+(?P<id>\\d+)",
      "(?:查看|帮我查看)合同类型9号\\s*(?P<id>\\d+)",
      "(?P<city>\\p{Han}{2,4})天气",
      "order\\s+(?P<order_id>\\d+)\\s+status(?:\\s+for\\s+(?P<who>\\w+))?",
      "(?P<a>a+)(?P<b>a*)b",
      "(?P<x>\\w+)@(?P<y>\\w+)\\.com",
      "^hello (?P<name>\\w+)",
      "(?m)^cmd (?P<arg>\\S+)$",
      "(?P<n>\\d+)$",
      "\\b(?P<w>-\\w+)",
      "(?P<k>[A-Z][a-z]+) (?P<v>\\d)",
      "(?-i:ABC)(?P<t>\\d)|abc(?P<u>\\d)",
      "(?-i:B)x(?P<n>\\d)|a(?P<m>\\d)",
      "(?i)straße (?P<s>\\d)",
      "(?P<kelvin>k)elvin",
      "(?s)begin(?P<body>.*?)end",
      "(?:x|yy|zzz)(?P<tail>\\d*)",
      "(?P<e>)empty-start",
  };
  const std::vector<std::string> messages = {
      "Please CHECK my order type5 123 for me",
      "check order type5 77",
      "你好，麻烦帮我查看合同类型9号 20240601 的状态",
      "查看合同类型9号42",
      "北京天气怎么样 上海天气",
      "ORDER 1234 STATUS for alice and order 5 status",
      "aaab aab",
      "mail bob@example.com and x@y.com",
      "hello world",
      "say hello world",
      "first\ncmd run\ncmd stop",
      "numbers 12 and 345",
      "a-b and x -word",
      "Tom 1 and Ann 2",
      "abc1 ABC2",
      "Bx2 a1 bx3",
      "STRASSE 1 straße 2",
      "KELVIN \xE2\x84\xAA"
      "elvin",
      "begin one end begin two end",
      "zzz9 yy x12",
      "an empty-start here",
  };
  for (const std::string& pattern : patterns) {
    auto m = MustBuild({Flow("f", {pattern})});
    ASSERT_TRUE(m) << pattern;
    auto re = CompileTriggerPattern(pattern);
    ASSERT_TRUE(re.ok()) << pattern;
    const RE2& reference = **re;
    for (const std::string& message : messages) {
      int n = 1 + reference.NumberOfCapturingGroups();
      std::vector<re2::StringPiece> groups(static_cast<std::size_t>(n));
      bool found = reference.Match(message, 0, message.size(), RE2::UNANCHORED, groups.data(), n);
      auto match = m->FindMatch(message);
      ASSERT_EQ(found, match.has_value()) << pattern << " on " << message;
      if (!found) continue;
      json expected = json::object();
      for (const auto& [index, name] : reference.CapturingGroupNames()) {
        const re2::StringPiece& g = groups[static_cast<std::size_t>(index)];
        if (g.data() != nullptr && !expected.contains(name)) {
          expected[name] = std::string(g.data(), g.size());
        }
      }
      EXPECT_EQ(match->captures.ToJson(), expected) << pattern << " on " << message;
    }
  }
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
            match->captures.Find("v") != std::to_string(i)) {
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
