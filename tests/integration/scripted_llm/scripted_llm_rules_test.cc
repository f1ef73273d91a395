// Pure-logic tests of the scripted LLM's rules, tokens and wire format (no network).

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "scripted_llm/conversation.h"
#include "scripted_llm/openai_wire.h"
#include "scripted_llm/rules.h"
#include "scripted_llm/tokens.h"

namespace wf::scripted_llm {
namespace {

using nlohmann::json;

Conversation Conv(const json& body) {
  auto conv = ParseConversation(body);
  EXPECT_TRUE(conv.ok()) << (conv.ok() ? "" : conv.error().message);
  return conv.ok() ? *conv : Conversation{};
}

json Chat(std::vector<std::pair<std::string, std::string>> messages, json extra = json::object()) {
  json body = {{"model", "m"}, {"messages", json::array()}};
  for (auto& [role, content] : messages) {
    body["messages"].push_back({{"role", role}, {"content", content}});
  }
  body.update(extra);
  return body;
}

std::shared_ptr<RuleSet> MustParse(const std::string& text) {
  auto rules = RuleSet::Parse(text);
  EXPECT_TRUE(rules.ok()) << (rules.ok() ? "" : rules.error().message);
  return rules.ok() ? *rules : RuleSet::Default();
}

std::string ParseError(const std::string& text) {
  auto rules = RuleSet::Parse(text);
  return rules.ok() ? "" : rules.error().message;
}

TEST(TokenizeTest, PiecesConcatenateToTheText) {
  for (const std::string& text : std::vector<std::string>{
           "", "one", "  leading and trailing  ", "tabs\tand\nnewlines\n\n", "混合 text 和中文。",
           "emoji 🙂 ok", std::string("bad \xff utf8 \xe4\xbd", 12)}) {
    const auto pieces = Tokenize(text);
    EXPECT_EQ(std::accumulate(pieces.begin(), pieces.end(), std::string()), text);
    EXPECT_EQ(CountTokens(text), pieces.size());
  }
}

TEST(TokenizeTest, WordsKeepTrailingSpaceAndCjkCharactersStandAlone) {
  EXPECT_EQ(Tokenize("Hello big world"), (std::vector<std::string>{"Hello ", "big ", "world"}));
  EXPECT_EQ(Tokenize("你好，世界 ok"),
            (std::vector<std::string>{"你", "好", "，", "世", "界 ", "ok"}));
  EXPECT_EQ(Tokenize(" x"), (std::vector<std::string>{" x"}));
}

TEST(TokenizeTest, SplitUtf8NeverCutsACharacter) {
  const auto pieces = SplitUtf8("ab中文cd", 3);
  EXPECT_EQ(pieces, (std::vector<std::string>{"ab中", "文cd"}));
}

TEST(TemplateTest, KnownNamesAreReplacedEverythingElseKept) {
  const Variables vars = {{"city", "Paris"}, {"n", "2"}};
  EXPECT_EQ(RenderTemplate("{city} x{n}", vars), "Paris x2");
  EXPECT_EQ(RenderTemplate(R"({"summary":"{city}"} {unknown} {} {)", vars),
            R"({"summary":"Paris"} {unknown} {} {)");
}

TEST(ConversationTest, ExtractsWhatRulesLookAt) {
  json body = Chat(
      {{"system", "Be brief."},
       {"user", "first"},
       {"assistant", "ok"},
       {"user", "second"},
       {"tool", "42"}},
      {{"stream", true}, {"tools", {{{"type", "function"}, {"function", {{"name", "calc"}}}}}}});
  body["messages"][1]["content"] =
      json::array({{{"type", "text"}, {"text", "fir"}}, {{"type", "text"}, {"text", "st"}}});
  const Conversation conv = Conv(body);
  EXPECT_EQ(conv.user_turns, 2u);
  EXPECT_EQ(conv.message_count, 5u);
  EXPECT_EQ(conv.last_user, "second");
  EXPECT_EQ(conv.history_users, "first | second");
  EXPECT_EQ(conv.system_text, "Be brief.");
  EXPECT_EQ(conv.last_message_role, "tool");
  EXPECT_EQ(conv.last_tool_result.value_or(""), "42");
  EXPECT_TRUE(conv.tool_result_after_last_user);
  EXPECT_TRUE(conv.stream);
  ASSERT_NE(conv.FindTool("calc"), nullptr);
  EXPECT_EQ(conv.history_digest.size(), 8u);
}

TEST(ConversationTest, DigestDependsOnRolesAndContents) {
  const json a = json::array({{{"role", "user"}, {"content", "hi"}}});
  const json b = json::array({{{"role", "system"}, {"content", "hi"}}});
  const json c = json::array({{{"role", "user"}, {"content", "hi!"}}});
  EXPECT_EQ(HistoryDigest(a), HistoryDigest(a));
  EXPECT_NE(HistoryDigest(a), HistoryDigest(b));
  EXPECT_NE(HistoryDigest(a), HistoryDigest(c));
}

TEST(ConversationTest, RejectsMalformedRequests) {
  EXPECT_FALSE(ParseConversation(json::array()).ok());
  EXPECT_FALSE(ParseConversation({{"model", "m"}}).ok());
  EXPECT_FALSE(ParseConversation({{"model", "m"}, {"messages", json::array()}}).ok());
  EXPECT_FALSE(ParseConversation({{"model", "m"}, {"messages", {{{"content", "x"}}}}}).ok());
  EXPECT_FALSE(ParseConversation(Chat({{"user", "x"}}, {{"stream", "yes"}})).ok());
}

TEST(RulesTest, ValidationNamesTheJsonPath) {
  EXPECT_NE(ParseError(R"({"rules":[{"then":{"reply":"x"}},{"when":{"last_user_regex":"(a"},
                                      "then":{}}]})")
                .find("rules[1].when.last_user_regex"),
            std::string::npos);
  EXPECT_NE(ParseError(R"({"rules":[{"when":{"typo":1},"then":{}}]})").find("rules[0].when.typo"),
            std::string::npos);
  EXPECT_NE(ParseError(R"({"rules":[{"then":{"status":200}}]})").find("rules[0].then.status"),
            std::string::npos);
  EXPECT_NE(ParseError(R"({"rules":[{"then":{"status":500,"hang":true}}]})").find("rules[0].then"),
            std::string::npos);
  EXPECT_NE(ParseError(R"({"rules":[{"when":{}}]})").find("rules[0].then"), std::string::npos);
  EXPECT_NE(ParseError(R"({"rules":[{"then":{"tool_calls":[{"arguments":{}}]}}]})")
                .find("rules[0].then.tool_calls[0].name"),
            std::string::npos);
  EXPECT_NE(ParseError("{nope").find("JSON"), std::string::npos);
}

TEST(RulesTest, FirstMatchingRuleWinsAndRegexGroupsBecomeVariables) {
  const auto rules = MustParse(R"J({"rules":[
    {"when":{"last_user_regex":"(?i)weather in (?P<city>\\w+)","no_tool_result":true,
             "has_tool":"weather"},
     "then":{"tool_calls":[{"name":"weather","arguments":{"city":"{city}","n":3}}]}},
    {"when":{"last_message_role":"tool"},"then":{"reply":"Tool said: {last_tool_result}"}},
    {"when":{"last_user_contains":"weather"},"then":{"reply":"no tool offered"}}]})J");
  const json tools = {{{"type", "function"}, {"function", {{"name", "weather"}}}}};

  Plan call = rules->Decide(Conv(Chat({{"user", "Weather in Rome?"}}, {{"tools", tools}})));
  EXPECT_EQ(call.rule_index, 0);
  ASSERT_EQ(call.tool_calls.size(), 1u);
  EXPECT_EQ(call.tool_calls[0].name, "weather");
  EXPECT_EQ(json::parse(call.tool_calls[0].arguments), json({{"city", "Rome"}, {"n", 3}}));
  EXPECT_FALSE(call.content.has_value());
  EXPECT_EQ(call.finish_reason, "tool_calls");

  Plan answer = rules->Decide(
      Conv(Chat({{"user", "Weather in Rome?"}, {"tool", "sunny"}}, {{"tools", tools}})));
  EXPECT_EQ(answer.content.value_or(""), "Tool said: sunny");

  Plan no_tool = rules->Decide(Conv(Chat({{"user", "weather in Rome"}})));
  EXPECT_EQ(no_tool.content.value_or(""), "no tool offered");

  Plan fallback = rules->Decide(Conv(Chat({{"user", "hi"}})));
  EXPECT_EQ(fallback.rule_index, -1);
  EXPECT_EQ(fallback.content.value_or("").rfind("You said: hi. I have seen 1 user messages", 0),
            0u);
}

TEST(RulesTest, TimesBudgetIsSpentThenSkippedAndResetRefillsIt) {
  const auto rules = MustParse(R"([
    {"when":{"last_user_contains":"flaky"},"times":2,"then":{"status":429,"retry_after_s":1}}])");
  const Conversation conv = Conv(Chat({{"user", "flaky"}}));
  EXPECT_EQ(rules->Decide(conv).kind, Plan::Kind::kError);
  EXPECT_EQ(rules->Decide(conv).retry_after_s.value_or(-1), 1);
  EXPECT_EQ(rules->Decide(conv).kind, Plan::Kind::kCompletion);
  rules->ResetCounters();
  EXPECT_EQ(rules->Decide(conv).status, 429);
}

TEST(RulesTest, ConditionsOnSystemModelStreamAndFormat) {
  const auto rules = MustParse(R"({"default_delay_ms":7,"rules":[
    {"when":{"system_regex":"(?i)summari[sz]e","response_format":"json_schema"},
     "then":{"schema_reply":true,"reply":"short"}},
    {"when":{"model":"other","stream":true},"then":{"reply":"streamed other","delay_ms":1}},
    {"when":{"system_contains":"JSON"},"then":{"json_reply":{"echo":"{last_user}","n":1}}}]})");
  const json schema = {{"type", "object"},
                       {"properties",
                        {{"summary", {{"type", "string"}}},
                         {"score", {{"type", "integer"}, {"minimum", 1}}},
                         {"mood", {{"enum", {"good", "bad"}}}}}}};
  Plan skill = rules->Decide(Conv(Chat(
      {{"system", "Summarize this."}, {"user", "text"}},
      {{"response_format", {{"type", "json_schema"}, {"json_schema", {{"schema", schema}}}}}})));
  EXPECT_EQ(json::parse(skill.content.value()),
            json({{"summary", "short"}, {"score", 1}, {"mood", "good"}}));
  EXPECT_EQ(skill.delay_ms, 7);

  Plan other = rules->Decide(Conv(Chat({{"user", "x"}}, {{"model", "other"}, {"stream", true}})));
  EXPECT_EQ(other.content.value_or(""), "streamed other");
  EXPECT_EQ(other.delay_ms, 1);

  Plan json_reply = rules->Decide(Conv(Chat({{"system", "Answer in JSON"}, {"user", "q\"uote"}})));
  EXPECT_EQ(json::parse(json_reply.content.value()), json({{"echo", "q\"uote"}, {"n", 1}}));
}

TEST(RulesTest, ToolArgumentsOmittedAreSynthesisedFromTheToolSchema) {
  const auto rules = MustParse(R"([{"when":{"has_tool_matching":"(?i)summar"},
      "then":{"tool_calls":[{"name":"{matched_tool}"}]}}])");
  const json tools = {{{"type", "function"},
                       {"function",
                        {{"name", "skill_summarise"},
                         {"parameters",
                          {{"type", "object"},
                           {"properties",
                            {{"text", {{"type", "string"}}},
                             {"tags", {{"type", "array"}, {"items", {{"type", "string"}}}}}}}}}}}}};
  Plan plan = rules->Decide(Conv(Chat({{"user", "sum it"}}, {{"tools", tools}})));
  ASSERT_EQ(plan.tool_calls.size(), 1u);
  EXPECT_EQ(plan.tool_calls[0].name, "skill_summarise");
  EXPECT_EQ(json::parse(plan.tool_calls[0].arguments),
            json({{"text", "sum it"}, {"tags", {"sum it"}}}));
}

TEST(RulesTest, MaxTokensCutsTheReplyWithFinishReasonLength) {
  const auto rules = RuleSet::Default();
  const Plan cut = rules->Decide(Conv(Chat({{"user", "hi"}}, {{"max_tokens", 3}})));
  EXPECT_EQ(cut.content.value_or(""), "You said: hi. ");
  EXPECT_EQ(cut.finish_reason, "length");
  const Plan whole = rules->Decide(Conv(Chat({{"user", "hi"}}, {{"max_completion_tokens", 100}})));
  EXPECT_EQ(whole.finish_reason, "stop");
  EXPECT_FALSE(ParseConversation(Chat({{"user", "hi"}}, {{"max_tokens", 0}})).ok());
}

TEST(WireTest, StreamFramesFollowTheOpenAiOrder) {
  Plan plan;
  plan.content = "hi there";
  plan.tool_calls.push_back({"call_1", "f", R"({"a":"0123456789"})"});
  plan.finish_reason = "tool_calls";
  const CompletionMeta meta{"chatcmpl-x", 1, "m"};
  Conversation conv;
  const Usage usage = ComputeUsage(conv, plan);
  const auto frames = BuildStream(meta, plan, usage, true);
  std::size_t token_frames = 0;
  for (const auto& f : frames) token_frames += f.is_token ? 1 : 0;
  EXPECT_EQ(token_frames, usage.completion_tokens);
  EXPECT_EQ(frames.back().data, "data: [DONE]\n\n");
  const json usage_chunk = json::parse(frames[frames.size() - 2].data.substr(6));
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], usage.completion_tokens);
  const json first = json::parse(frames[0].data.substr(6));
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["usage"].is_null());
}

}  // namespace
}  // namespace wf::scripted_llm
