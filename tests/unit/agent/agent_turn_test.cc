#include "agent/agent_turn.h"

#include <gtest/gtest.h>

#include <optional>

#include "agent/executor.h"
#include "fakes.h"

namespace wf {
namespace {

using testing::FakeLlm;
using testing::FakeTools;
using testing::ManualTimer;
using testing::RecordingSink;

nlohmann::json ObjectSchema(const std::string& prop, const std::string& type) {
  return {{"type", "object"},
          {"properties", {{prop, {{"type", type}}}}},
          {"required", {prop}}};
}

std::shared_ptr<Config> TestConfig() {
  auto c = std::make_shared<Config>();
  ToolConfig weather;
  weather.name = "weather";
  weather.description = "Current weather for a city";
  weather.parameters_schema = ObjectSchema("city", "string");
  c->tools.push_back(weather);
  ToolConfig time;
  time.name = "time";
  time.description = "Current time in a zone";
  time.parameters_schema = ObjectSchema("tz", "string");
  c->tools.push_back(time);
  FlowConfig order;
  order.flow_id = "order_status";
  order.name = "Order status";
  order.description = "Look up an order by number";
  order.parameters_schema = ObjectSchema("order_id", "string");
  c->flows.push_back(order);
  SkillConfig researcher;
  researcher.name = "researcher";
  researcher.description = "Researches a question with the weather tool";
  researcher.mode = "agent";
  researcher.instructions = "You research.";
  researcher.allowed_tools = {"weather"};
  researcher.model = "small-model";
  researcher.parameters_schema = ObjectSchema("input", "string");
  c->skills.push_back(researcher);
  SkillConfig extract;
  extract.name = "extract";
  extract.description = "Extracts trip details";
  extract.mode = "function";
  extract.instructions = "Extract the city and the number of days.";
  extract.parameters_schema = ObjectSchema("input", "string");
  extract.output_schema = nlohmann::json{
      {"type", "object"},
      {"properties", {{"city", {{"type", "string"}}}, {"days", {{"type", "integer"}}}}},
      {"required", {"city"}}};
  c->skills.push_back(extract);
  c->agent.system_prompt = "SYS";
  c->agent.model = "main-model";
  c->agent.temperature = 0.3;
  c->agent.max_tool_rounds = 3;
  return c;
}

wf::v1::ChatMessage Msg(const std::string& role, const std::string& content) {
  wf::v1::ChatMessage m;
  m.set_role(role);
  m.set_content(content);
  return m;
}

class AgentTurnTest : public ::testing::Test {
 protected:
  std::shared_ptr<AgentTurn> Start(const std::string& message,
                                   std::vector<wf::v1::ChatMessage> history = {},
                                   std::int64_t deadline_unix_ms = 0, bool stream = true) {
    TurnParams p;
    p.config = config_;
    p.history = std::move(history);
    p.user_message = message;
    p.session_id = "s1";
    p.request_id = "r1";
    p.run_id = "run1";
    p.user_id = "u1";
    p.deadline_unix_ms = deadline_unix_ms;
    p.stream_tokens = stream;
    auto turn = AgentTurn::Start(AgentDeps{llm_, tools_, sink_, exec_, timer_}, std::move(p),
                                 [this](wf::v1::TurnRecord r) {
                                   ++done_count_;
                                   record_ = std::move(r);
                                 });
    Run();
    return turn;
  }
  void Run() { exec_.RunUntilIdle(); }

  std::vector<wf::v1::QueryEvent> Events() {
    auto events = sink_.events();
    // Invariants of every turn: request id, seq 1..n, at most one terminal event, last.
    int terminals = 0;
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].request_id(), "r1");
      EXPECT_EQ(events[i].seq(), i + 1);
      if (events[i].has_final() || events[i].has_error()) {
        ++terminals;
        EXPECT_EQ(i, events.size() - 1) << "terminal event is not the last";
      }
    }
    EXPECT_LE(terminals, 1);
    return events;
  }
  wf::v1::QueryEvent Terminal() {
    auto events = Events();
    EXPECT_FALSE(events.empty());
    return events.empty() ? wf::v1::QueryEvent() : events.back();
  }

  std::shared_ptr<Config> config_ = TestConfig();
  FakeLlm llm_;
  FakeTools tools_;
  RecordingSink sink_;
  ManualExecutor exec_;
  ManualTimer timer_;
  int done_count_ = 0;
  std::optional<wf::v1::TurnRecord> record_;
};

TEST_F(AgentTurnTest, PlainAnswerIsStreamedThenFinal) {
  auto turn = Start("hello");
  ASSERT_EQ(llm_.size(), 1u);
  const auto& o = llm_.at(0)->options;
  EXPECT_EQ(o.model, "main-model");
  ASSERT_TRUE(o.temperature.has_value());
  EXPECT_DOUBLE_EQ(*o.temperature, 0.3);
  ASSERT_EQ(o.messages.size(), 2u);
  EXPECT_EQ(o.messages[0].role(), "system");
  EXPECT_EQ(o.messages[0].content(), "SYS");
  EXPECT_EQ(o.messages[1].role(), "user");
  EXPECT_EQ(o.messages[1].content(), "hello");
  ASSERT_NE(o.tools, nullptr);
  ASSERT_EQ(o.tools->size(), 5u);
  EXPECT_EQ(o.tools->specs()[0].name, "weather");
  EXPECT_EQ(o.tools->specs()[1].name, "time");
  EXPECT_EQ(o.tools->specs()[2].name, "order_status");
  EXPECT_EQ(o.tools->specs()[2].description, "Look up an order by number");
  EXPECT_EQ(o.tools->specs()[2].parameters["required"][0], "order_id");
  EXPECT_EQ(o.tools->specs()[3].name, "researcher");
  EXPECT_EQ(o.tools->specs()[4].name, "extract");
  EXPECT_FALSE(o.output_schema.has_value());

  llm_.Tokens(0, {"Hi", " there"});
  ChatOutcome out;
  out.content = "Hi there";
  out.usage.set_prompt_tokens(7);
  out.usage.set_completion_tokens(2);
  out.usage.set_total_tokens(9);
  llm_.Done(0, out);
  Run();

  const auto events = Events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].token(), "Hi");
  EXPECT_EQ(events[1].token(), " there");
  ASSERT_TRUE(events[2].has_final());
  const auto& f = events[2].final();
  EXPECT_EQ(f.answer(), "Hi there");
  EXPECT_EQ(f.route(), "agent");
  EXPECT_EQ(f.run_id(), "run1");
  EXPECT_EQ(f.session_id(), "s1");
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(f.usage().total_tokens(), 9u);

  ASSERT_EQ(done_count_, 1);
  EXPECT_EQ(record_->status(), "ok");
  EXPECT_EQ(record_->route(), "agent");
  EXPECT_EQ(record_->session_id(), "s1");
  EXPECT_EQ(record_->run_id(), "run1");
  EXPECT_EQ(record_->request_id(), "r1");
  EXPECT_EQ(record_->user_id(), "u1");
  ASSERT_EQ(record_->messages_size(), 2);
  EXPECT_EQ(record_->messages(0).role(), "user");
  EXPECT_EQ(record_->messages(0).content(), "hello");
  EXPECT_EQ(record_->messages(0).run_id(), "run1");
  EXPECT_GT(record_->messages(0).created_unix_ms(), 0);
  EXPECT_EQ(record_->messages(1).role(), "assistant");
  EXPECT_EQ(record_->messages(1).content(), "Hi there");
  EXPECT_EQ(record_->usage().total_tokens(), 9u);
  EXPECT_LE(record_->started_unix_ms(), record_->finished_unix_ms());
  EXPECT_TRUE(turn->finished());
  EXPECT_EQ(timer_.pending(), 0u);  // the deadline timer was cancelled
}

TEST_F(AgentTurnTest, AnAnswerCutAtTheModelsOutputLimitIsMarked) {
  Start("write a long story");
  llm_.Tokens(0, {"Once upon"});
  ChatOutcome out;
  out.content = "Once upon";
  out.finish_reason = "length";
  llm_.Done(0, out);
  Run();
  const auto events = Events();
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_final());
  EXPECT_EQ(events.back().final().answer(), "Once upon");
  EXPECT_EQ(events.back().final().finish_reason(), "length");
}

TEST_F(AgentTurnTest, NoTokenEventsForANonStreamingClient) {
  Start("hello", {}, 0, /*stream=*/false);
  llm_.Answer(0, "Hi");
  Run();
  const auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].final().answer(), "Hi");
}

TEST_F(AgentTurnTest, OneToolCall) {
  Start("weather in Paris?");
  llm_.CallTools(0, {{"c1", "weather", R"({"city":"Paris"})"}}, "Let me check.");
  Run();
  ASSERT_EQ(tools_.size(), 1u);
  const auto run = tools_.at(0);
  EXPECT_EQ(run.what, "tool");
  EXPECT_EQ(run.call.id(), "c1");
  EXPECT_EQ(run.call.name(), "weather");
  EXPECT_EQ(run.call.arguments_json(), R"({"city":"Paris"})");
  EXPECT_EQ(run.ctx.session_id, "s1");
  EXPECT_EQ(run.ctx.request_id, "r1");
  EXPECT_EQ(run.ctx.run_id, "run1");
  EXPECT_EQ(run.ctx.user_message, "weather in Paris?");
  EXPECT_GT(run.ctx.deadline_unix_ms, 0);
  tools_.Complete(0, true, "sunny, 21C");
  Run();
  ASSERT_EQ(llm_.size(), 2u);
  const auto& msgs = llm_.at(1)->options.messages;
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[2].role(), "assistant");
  EXPECT_EQ(msgs[2].content(), "Let me check.");
  ASSERT_EQ(msgs[2].tool_calls_size(), 1);
  EXPECT_EQ(msgs[2].tool_calls(0).kind(), "tool");
  EXPECT_EQ(msgs[3].role(), "tool");
  EXPECT_EQ(msgs[3].tool_call_id(), "c1");
  EXPECT_EQ(msgs[3].name(), "weather");
  EXPECT_EQ(msgs[3].content(), "sunny, 21C");
  llm_.Answer(1, "It is sunny in Paris.");
  Run();

  const auto events = Events();
  ASSERT_EQ(events.size(), 4u);
  ASSERT_TRUE(events[0].has_tool_call());
  EXPECT_EQ(events[0].tool_call().kind(), "tool");
  EXPECT_EQ(events[0].tool_call().name(), "weather");
  ASSERT_TRUE(events[1].has_tool_result());
  EXPECT_EQ(events[1].tool_result().call_id(), "c1");
  EXPECT_EQ(events[1].tool_result().name(), "weather");
  EXPECT_TRUE(events[1].tool_result().ok());
  EXPECT_FALSE(events[1].tool_result().has_error());  // "set when ok is false"
  EXPECT_EQ(events[2].token(), "It is sunny in Paris.");
  EXPECT_EQ(events[3].final().answer(), "It is sunny in Paris.");
  EXPECT_EQ(events[3].final().usage().total_tokens(), 30u);

  ASSERT_EQ(record_->messages_size(), 4);
  EXPECT_EQ(record_->messages(1).tool_calls(0).id(), "c1");
  EXPECT_EQ(record_->messages(2).role(), "tool");
  EXPECT_EQ(record_->messages(3).content(), "It is sunny in Paris.");
  EXPECT_EQ(record_->usage().total_tokens(), 30u);
}

TEST_F(AgentTurnTest, ParallelCallsRunTogetherAndResultsGoBackInCallOrder) {
  Start("weather and time?");
  llm_.CallTools(0, {{"c1", "weather", R"({"city":"Oslo"})"}, {"c2", "time", R"({"tz":"CET"})"}});
  Run();
  ASSERT_EQ(tools_.size(), 2u);  // both started before either finished
  tools_.Complete(1, true, "12:00");
  Run();
  EXPECT_EQ(llm_.size(), 1u);  // still waiting for the weather
  tools_.Complete(0, false, "weather service down");
  Run();
  ASSERT_EQ(llm_.size(), 2u);
  const auto& msgs = llm_.at(1)->options.messages;
  ASSERT_EQ(msgs.size(), 5u);
  EXPECT_EQ(msgs[3].tool_call_id(), "c1");
  EXPECT_NE(msgs[3].content().find("weather service down"), std::string::npos);
  EXPECT_EQ(msgs[3].content().rfind("Error", 0), 0u);
  EXPECT_EQ(msgs[4].tool_call_id(), "c2");
  EXPECT_EQ(msgs[4].content(), "12:00");
  llm_.Answer(1, "It is noon; weather unknown.");
  Run();
  const auto events = Events();
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0].tool_call().id(), "c1");
  EXPECT_EQ(events[1].tool_call().id(), "c2");
  EXPECT_EQ(events[2].tool_result().call_id(), "c2");  // in arrival order
  EXPECT_EQ(events[3].tool_result().call_id(), "c1");
  EXPECT_FALSE(events[3].tool_result().ok());
  EXPECT_TRUE(events[3].tool_result().has_error());
  EXPECT_TRUE(events[5].has_final());
}

TEST_F(AgentTurnTest, FlowIsOfferedAndRunAsATool) {
  Start("status of order 42");
  llm_.CallTools(0, {{"c1", "order_status", R"({"order_id":"42"})"}});
  Run();
  ASSERT_EQ(tools_.size(), 1u);
  EXPECT_EQ(tools_.at(0).what, "flow");
  EXPECT_EQ(tools_.at(0).call.name(), "order_status");
  EXPECT_EQ(Events()[0].tool_call().kind(), "flow");
  tools_.Complete(0, true, "Order 42: shipped");
  Run();
  llm_.Answer(1, "Your order 42 has shipped.");
  Run();
  EXPECT_EQ(Terminal().final().answer(), "Your order 42 has shipped.");
}

TEST_F(AgentTurnTest, UnknownToolAndBadArgumentsBecomeErrorResults) {
  Start("do something");
  llm_.CallTools(0, {{"c1", "teleport", "{}"}, {"c2", "weather", "not json"}, {"", "time", ""}});
  Run();
  ASSERT_EQ(tools_.size(), 1u);  // only the valid call ran
  EXPECT_EQ(tools_.at(0).call.name(), "time");
  EXPECT_FALSE(tools_.at(0).call.id().empty());  // a missing id is made up
  EXPECT_EQ(tools_.at(0).call.arguments_json(), "{}");
  tools_.Complete(0, true, "09:00");
  Run();
  ASSERT_EQ(llm_.size(), 2u);
  const auto& msgs = llm_.at(1)->options.messages;
  ASSERT_EQ(msgs.size(), 6u);
  EXPECT_NE(msgs[3].content().find("no tool, flow or skill named \"teleport\""), std::string::npos);
  EXPECT_NE(msgs[3].content().find("weather, time, order_status, researcher, extract"),
            std::string::npos);
  EXPECT_NE(msgs[4].content().find("not a JSON object"), std::string::npos);
  const auto events = Events();
  bool saw_not_found = false;
  for (const auto& e : events) {
    if (e.has_tool_result() && e.tool_result().call_id() == "c1") {
      EXPECT_FALSE(e.tool_result().ok());
      EXPECT_EQ(e.tool_result().error().code(), "tool_not_found");
      saw_not_found = true;
    }
  }
  EXPECT_TRUE(saw_not_found);
  llm_.Answer(1, "Sorry, I cannot teleport.");
  Run();
  EXPECT_EQ(Terminal().final().answer(), "Sorry, I cannot teleport.");
  EXPECT_EQ(record_->status(), "ok");
}

TEST_F(AgentTurnTest, RoundLimitEndsWithAFinalAnswerSayingSo) {
  config_->agent.max_tool_rounds = 2;
  Start("loop forever");
  for (size_t round = 0; round < 2; ++round) {
    llm_.CallTools(round, {{"c" + std::to_string(round), "time", "{}"}});
    Run();
    tools_.Complete(round, true, "tick");
    Run();
  }
  ASSERT_EQ(llm_.size(), 3u);
  llm_.CallTools(2, {{"c2", "time", "{}"}}, "Still checking");
  Run();
  EXPECT_EQ(tools_.size(), 2u);  // the third round never ran
  const auto final_event = Terminal();
  ASSERT_TRUE(final_event.has_final());
  EXPECT_EQ(final_event.final().answer().rfind("Still checking\n\n", 0), 0u);
  EXPECT_NE(final_event.final().answer().find("limit of 2 tool rounds"), std::string::npos);
  EXPECT_EQ(record_->status(), "ok");
  // user, 2 x (assistant + tool), final assistant: the unexecuted call is not stored.
  ASSERT_EQ(record_->messages_size(), 6);
  EXPECT_EQ(record_->messages(5).role(), "assistant");
  EXPECT_EQ(record_->messages(5).tool_calls_size(), 0);
  EXPECT_EQ(record_->messages(5).content(), final_event.final().answer());
}

TEST_F(AgentTurnTest, AgentSkillRunsASubAgentWhoseAnswerIsTheResult) {
  Start("research Oslo weather");
  llm_.CallTools(0, {{"c1", "researcher", R"({"input":"weather in Oslo"})"}});
  Run();
  ASSERT_EQ(llm_.size(), 2u);
  const auto& sub = llm_.at(1)->options;
  EXPECT_EQ(sub.model, "small-model");
  ASSERT_EQ(sub.messages.size(), 2u);
  EXPECT_EQ(sub.messages[0].role(), "system");
  EXPECT_EQ(sub.messages[0].content(), "You research.");
  EXPECT_EQ(sub.messages[1].content(), "weather in Oslo");
  ASSERT_NE(sub.tools, nullptr);
  ASSERT_EQ(sub.tools->size(), 1u);
  EXPECT_EQ(sub.tools->specs()[0].name, "weather");
  EXPECT_EQ(Events()[0].tool_call().kind(), "skill");

  llm_.Tokens(1, {"thinking..."});  // not streamed as the main answer
  llm_.CallTools(1, {{"s1", "weather", R"({"city":"Oslo"})"}});
  Run();
  ASSERT_EQ(tools_.size(), 1u);
  tools_.Complete(0, true, "-3C, snow");
  Run();
  ASSERT_EQ(llm_.size(), 3u);
  EXPECT_EQ(llm_.at(2)->options.messages.back().content(), "-3C, snow");
  llm_.Answer(2, "Oslo: -3C with snow.");
  Run();
  ASSERT_EQ(llm_.size(), 4u);
  EXPECT_EQ(llm_.at(3)->options.messages.back().role(), "tool");
  EXPECT_EQ(llm_.at(3)->options.messages.back().content(), "Oslo: -3C with snow.");
  llm_.Answer(3, "It is snowing in Oslo.");
  Run();

  const auto events = Events();
  // tool_call(c1), tool_result(c1), token, final: nothing of the sub-agent.
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].tool_call().id(), "c1");
  EXPECT_EQ(events[1].tool_result().call_id(), "c1");
  EXPECT_EQ(events[1].tool_result().content(), "Oslo: -3C with snow.");
  EXPECT_EQ(events[2].token(), "It is snowing in Oslo.");
  EXPECT_EQ(events[3].final().usage().total_tokens(), 60u);  // four LLM calls
  ASSERT_EQ(record_->messages_size(), 4);  // the sub-agent's messages are not stored
}

TEST_F(AgentTurnTest, AgentSkillFailureIsAToolErrorTheModelCanHandle) {
  Start("research");
  llm_.CallTools(0, {{"c1", "researcher", R"({"input":"x"})"}});
  Run();
  llm_.Fail(1, Error{ErrorCode::kLlmError, "LLM returned HTTP 400: bad"});
  Run();
  ASSERT_EQ(llm_.size(), 3u);
  EXPECT_NE(llm_.at(2)->options.messages.back().content().find("HTTP 400"), std::string::npos);
  llm_.Answer(2, "The research failed.");
  Run();
  EXPECT_TRUE(Terminal().has_final());
}

TEST_F(AgentTurnTest, FunctionSkillWithValidOutput) {
  Start("plan 3 days in Rome");
  llm_.CallTools(0, {{"c1", "extract", R"({"input":"3 days in Rome"})"}});
  Run();
  ASSERT_EQ(llm_.size(), 2u);
  const auto& fn = llm_.at(1)->options;
  EXPECT_EQ(fn.tools, nullptr);  // a function call offers no tools
  ASSERT_TRUE(fn.output_schema.has_value());
  EXPECT_EQ((*fn.output_schema)["required"][0], "city");
  EXPECT_EQ(fn.output_schema_name, "extract");
  EXPECT_EQ(fn.model, "main-model");
  ASSERT_EQ(fn.messages.size(), 2u);
  EXPECT_EQ(fn.messages[0].content().rfind("Extract the city and the number of days.", 0), 0u);
  EXPECT_NE(fn.messages[0].content().find("JSON"), std::string::npos);
  EXPECT_EQ(fn.messages[1].content(), "3 days in Rome");
  llm_.Answer(1, "```json\n{\"city\": \"Rome\", \"days\": 3}\n```");
  Run();
  const auto events = Events();
  ASSERT_EQ(events.size(), 2u);
  ASSERT_TRUE(events[1].tool_result().ok());
  EXPECT_EQ(nlohmann::json::parse(events[1].tool_result().content()),
            (nlohmann::json{{"city", "Rome"}, {"days", 3}}));
  llm_.Answer(2, "Enjoy Rome!");
  Run();
  EXPECT_EQ(Terminal().final().answer(), "Enjoy Rome!");
}

TEST_F(AgentTurnTest, FunctionSkillWithInvalidOutputIsAToolError) {
  Start("plan a trip");
  llm_.CallTools(0, {{"c1", "extract", R"({"input":"a trip"})"}, {"c2", "extract", R"({"input":"b"})"}});
  Run();
  ASSERT_EQ(llm_.size(), 3u);
  llm_.Answer(1, R"({"city": "Rome", "days": "three"})");
  llm_.Answer(2, "I think Rome");
  Run();
  const auto events = Events();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_FALSE(events[2].tool_result().ok());
  EXPECT_NE(events[2].tool_result().error().message().find("$.days: expected integer, got string"),
            std::string::npos)
      << events[2].tool_result().error().message();
  EXPECT_FALSE(events[3].tool_result().ok());
  EXPECT_NE(events[3].tool_result().error().message().find("did not answer JSON"),
            std::string::npos);
  ASSERT_EQ(llm_.size(), 4u);  // the main agent goes on
}

TEST_F(AgentTurnTest, CancelMidStreamStoresThePartialAnswer) {
  auto turn = Start("tell me a story");
  llm_.Tokens(0, {"Once", " upon"});
  turn->Cancel();
  const auto events = Events();
  ASSERT_EQ(events.size(), 3u);
  ASSERT_TRUE(events[2].has_final());
  EXPECT_TRUE(events[2].final().cancelled());
  EXPECT_EQ(events[2].final().answer(), "Once upon");
  ASSERT_EQ(llm_.cancels().size(), 1u);
  EXPECT_EQ(llm_.cancels()[0], llm_.at(0)->handle);
  ASSERT_EQ(done_count_, 1);
  EXPECT_EQ(record_->status(), "cancelled");
  ASSERT_EQ(record_->messages_size(), 2);
  EXPECT_EQ(record_->messages(1).content(), "Once upon");
  // Late callbacks change nothing.
  llm_.Tokens(0, {" a time"});
  llm_.Fail(0, Error{ErrorCode::kCancelled, "cancelled"});
  turn->Cancel();
  Run();
  EXPECT_EQ(sink_.events().size(), 3u);
  EXPECT_EQ(done_count_, 1);
}

TEST_F(AgentTurnTest, CancelWhileToolsRunStopsWaiting) {
  auto turn = Start("weather and time");
  llm_.CallTools(0, {{"c1", "weather", R"({"city":"Rome"})"}, {"c2", "time", "{}"}});
  Run();
  tools_.Complete(0, true, "hot");
  Run();
  turn->Cancel();
  ASSERT_TRUE(Terminal().final().cancelled());
  EXPECT_EQ(Terminal().final().answer(), "");
  ASSERT_EQ(record_->messages_size(), 4);  // user, assistant(calls), 2 tool messages
  EXPECT_EQ(record_->messages(2).content(), "hot");
  EXPECT_NE(record_->messages(3).content().find("cancelled"), std::string::npos);
  tools_.Complete(1, true, "late");
  Run();
  EXPECT_EQ(llm_.size(), 1u);
  EXPECT_EQ(done_count_, 1);
}

TEST_F(AgentTurnTest, CancelBeforeTheFirstCallStarts) {
  TurnParams p;
  p.config = config_;
  p.user_message = "hi";
  p.request_id = "r1";
  auto turn = AgentTurn::Start(AgentDeps{llm_, tools_, sink_, exec_, timer_}, std::move(p),
                               [this](wf::v1::TurnRecord r) {
                                 ++done_count_;
                                 record_ = std::move(r);
                               });
  turn->Cancel();
  Run();  // the posted first call sees the turn is over
  EXPECT_EQ(llm_.size(), 0u);
  EXPECT_TRUE(Terminal().final().cancelled());
  EXPECT_EQ(record_->messages_size(), 1);
}

TEST_F(AgentTurnTest, FirstCallOnCallerStartsTheLlmCallInsideStart) {
  TurnParams p;
  p.config = config_;
  p.user_message = "hi";
  p.request_id = "r1";
  p.first_call_on_caller = true;
  auto turn = AgentTurn::Start(AgentDeps{llm_, tools_, sink_, exec_, timer_}, std::move(p),
                               [this](wf::v1::TurnRecord r) {
                                 ++done_count_;
                                 record_ = std::move(r);
                               });
  // Sent before Start returned, with nothing posted to the executor.
  ASSERT_EQ(llm_.size(), 1u);
  EXPECT_EQ(exec_.Pending(), 0u);
  EXPECT_EQ(llm_.at(0)->options.messages.back().content(), "hi");
  llm_.Answer(0, "Hello");
  Run();
  const auto ev = Terminal();
  ASSERT_TRUE(ev.has_final());
  EXPECT_EQ(ev.final().answer(), "Hello");
  EXPECT_EQ(done_count_, 1);
}

TEST_F(AgentTurnTest, DeadlineEndsTheTurnWithAnError) {
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto turn = Start("slow", {}, now_ms + 60000);
  ASSERT_EQ(timer_.pending(), 1u);
  EXPECT_LE(llm_.at(0)->options.deadline - std::chrono::steady_clock::now(),
            std::chrono::seconds(61));
  llm_.Tokens(0, {"I am"});
  timer_.RunAll();  // the deadline passes
  const auto ev = Terminal();
  ASSERT_TRUE(ev.has_error());
  EXPECT_EQ(ev.error().code(), "deadline_exceeded");
  EXPECT_EQ(record_->status(), "error");
  ASSERT_EQ(record_->messages_size(), 2);
  EXPECT_EQ(record_->messages(1).content(), "I am");
  EXPECT_EQ(llm_.cancels().size(), 1u);
  llm_.Answer(0, "late");
  Run();
  EXPECT_EQ(done_count_, 1);
}

TEST_F(AgentTurnTest, DeadlineAlreadyPassed) {
  Start("late", {}, 1000);
  EXPECT_EQ(llm_.size(), 0u);
  EXPECT_EQ(Terminal().error().code(), "deadline_exceeded");
  EXPECT_EQ(done_count_, 1);
}

TEST_F(AgentTurnTest, LlmDeadlineErrorIsDeadlineExceeded) {
  Start("x");
  llm_.Fail(0, Error{ErrorCode::kDeadlineExceeded, "deadline"});
  EXPECT_EQ(Terminal().error().code(), "deadline_exceeded");
}

TEST_F(AgentTurnTest, LlmErrorEndsTheTurnWithAnErrorEvent) {
  Start("hello");
  llm_.Fail(0, Error{ErrorCode::kLlmError, "LLM returned HTTP 500: boom (after 4 attempts)"});
  Run();
  const auto ev = Terminal();
  ASSERT_TRUE(ev.has_error());
  EXPECT_EQ(ev.error().code(), "llm_error");
  EXPECT_EQ(ev.error().message(), "LLM returned HTTP 500: boom (after 4 attempts)");
  EXPECT_EQ(record_->status(), "error");
  ASSERT_EQ(record_->messages_size(), 1);
  EXPECT_EQ(record_->messages(0).role(), "user");
}

TEST_F(AgentTurnTest, AnswerPastTheBoundFailsTheTurnAndStoresItCut) {
  config_->agent.max_answer_bytes = 4096;
  Start("write a novel");
  ASSERT_EQ(llm_.size(), 1u);
  // Every call of the turn carries the bound to the client, which enforces it.
  EXPECT_EQ(llm_.at(0)->options.max_answer_bytes, 4096u);
  llm_.Tokens(0, {std::string(4000, 'a'), std::string(96, 'b')});
  llm_.Fail(0, Error{ErrorCode::kTooLarge, "LLM answer exceeded 4096 bytes"});
  Run();
  const auto ev = Terminal();
  ASSERT_TRUE(ev.has_error());
  EXPECT_EQ(ev.error().code(), "llm_error");
  EXPECT_EQ(ev.error().message(),
            "the LLM's answer exceeded 4096 bytes (agent.max_answer_bytes) and was cut off");
  ASSERT_EQ(done_count_, 1);
  EXPECT_EQ(record_->status(), "error");
  ASSERT_EQ(record_->messages_size(), 2);
  EXPECT_EQ(record_->messages(1).role(), "assistant");
  EXPECT_EQ(record_->messages(1).content(),
            std::string(4000, 'a') + std::string(96, 'b') +
                "\n[answer cut: the model's answer exceeded 4096 bytes]");
}

TEST_F(AgentTurnTest, SkillAnswerPastTheBoundIsAToolError) {
  // A sub-agent's call has the same bound; its failure is the skill's error result, which the
  // main agent can handle.
  config_->agent.max_answer_bytes = 2048;
  Start("summarise");
  llm_.CallTools(0, {{"c1", "researcher", R"({"input":"long text"})"}});
  Run();
  ASSERT_EQ(llm_.size(), 2u);
  EXPECT_EQ(llm_.at(1)->options.max_answer_bytes, 2048u);
  llm_.Fail(1, Error{ErrorCode::kTooLarge, "LLM answer exceeded 2048 bytes"});
  Run();
  ASSERT_EQ(llm_.size(), 3u);
  const auto& tool_message = llm_.at(2)->options.messages.back();
  EXPECT_EQ(tool_message.role(), "tool");
  EXPECT_EQ(tool_message.content(),
            "Error (llm_error): the LLM's answer exceeded 2048 bytes (agent.max_answer_bytes) and "
            "was cut off");
}

TEST_F(AgentTurnTest, HistoryIsTrimmedByWholeTurns) {
  config_->agent.history_max_messages = 4;
  std::vector<wf::v1::ChatMessage> history = {Msg("user", "u1"), Msg("assistant", "a1"),
                                              Msg("user", "u2")};
  wf::v1::ChatMessage with_call = Msg("assistant", "");
  auto* call = with_call.add_tool_calls();
  call->set_id("k1");
  call->set_name("time");
  history.push_back(with_call);
  wf::v1::ChatMessage result = Msg("tool", "10:00");
  result.set_tool_call_id("k1");
  history.push_back(result);
  history.push_back(Msg("assistant", "a2"));
  history.push_back(Msg("user", "u3"));
  history.push_back(Msg("assistant", "a3"));
  Start("u4", history);
  const auto& msgs = llm_.at(0)->options.messages;
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[0].content(), "SYS");
  EXPECT_EQ(msgs[1].content(), "u3");
  EXPECT_EQ(msgs[2].content(), "a3");
  EXPECT_EQ(msgs[3].content(), "u4");
}

TEST_F(AgentTurnTest, ExactlyOneTerminalWhenCancelRacesTheAnswer) {
  auto turn = Start("hi");
  llm_.Answer(0, "done");
  turn->Cancel();
  Run();
  const auto ev = Terminal();
  EXPECT_FALSE(ev.final().cancelled());
  EXPECT_EQ(done_count_, 1);
}

}  // namespace
}  // namespace wf
