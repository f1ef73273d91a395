// HttpLlmClient and AgentTurn against the real wf-scripted-llm: streaming, tool calls, retries
// (429 then success, 500 until the attempts run out), cancel closing the connection, deadlines.

#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent_turn.h"
#include "agent/executor.h"
#include "http_client/http_client.h"
#include "integration/scripted_llm/scripted_llm_server.h"
#include "io/timer.h"
#include "llm/http_llm_client.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;
using testing::Eventually;
using testing::ScriptedLlmServer;

const char* kRules = R"json({
  "rules": [
    {"when": {"last_user_contains": "dated"}, "times": 1,
     "then": {"status": 503, "retry_after_s": 2, "retry_after_date": true}},
    {"when": {"last_user_contains": "midway"},
     "then": {"reply": "one two three four", "error_after_tokens": 2,
              "message": "The server had an error while processing your request."}},
    {"when": {"last_user_contains": "flaky"}, "times": 1,
     "then": {"status": 429, "retry_after_s": 1}},
    {"when": {"last_user_contains": "boom"}, "then": {"status": 500, "message": "kaboom"}},
    {"when": {"last_user_contains": "bad request"}, "then": {"status": 400, "message": "no such model"}},
    {"when": {"last_user_contains": "hang"}, "then": {"hang": true}},
    {"when": {"last_user_contains": "drop"}, "then": {"reply": "one two three four five", "close_after_tokens": 2}},
    {"when": {"last_user_regex": "weather in (?P<city>\\w+)", "no_tool_result": true},
     "then": {"reply": "Checking. ", "tool_calls": [{"name": "weather", "arguments": {"city": "{city}"}, "id": "call_w"},
                                                     {"name": "time", "arguments": {"tz": "{city}"}, "id": "call_t"}]}},
    {"when": {"last_message_role": "tool"}, "then": {"reply": "Here is what I found: {last_tool_result}"}},
    {"when": {"response_format": "json_schema"}, "then": {"json_reply": {"city": "Rome", "days": 3}}}
  ]})json";

struct ChatRun {
  std::mutex mu;
  std::vector<std::string> tokens;
  std::promise<Result<ChatOutcome>> done;

  ChatCallbacks Callbacks() {
    return ChatCallbacks{[this](std::string_view t) {
                           std::lock_guard<std::mutex> lock(mu);
                           tokens.emplace_back(t);
                         },
                         [this](Result<ChatOutcome> r) { done.set_value(std::move(r)); }};
  }
  Result<ChatOutcome> Wait() {
    auto f = done.get_future();
    if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      return Error{ErrorCode::kInternal, "test: no on_done within 30 s"};
    }
    return f.get();
  }
  std::string Joined() {
    std::lock_guard<std::mutex> lock(mu);
    std::string s;
    for (const auto& t : tokens) s += t;
    return s;
  }
};

ChatRequestOptions UserMessage(const std::string& text, milliseconds budget = milliseconds(20000)) {
  ChatRequestOptions o;
  wf::v1::ChatMessage m;
  m.set_role("user");
  m.set_content(text);
  o.messages.push_back(m);
  o.deadline = std::chrono::steady_clock::now() + budget;
  o.request_id = "it";
  return o;
}

class LlmClientIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ready()) << server_.process().Log(); }

  LlmClientOptions Options() {
    LlmClientOptions o;
    o.base_url = server_.Url("/v1");
    o.api_key = "test-key";
    o.default_model = "scripted";
    o.retry = RetryPolicy{3, milliseconds(50), milliseconds(200)};
    return o;
  }
  /// A chat on `message` succeeds on its second attempt, at least `wait` after it started (the
  /// server's Retry-After honoured).
  void ExpectOneRetryAfterAtLeast(const std::string& message, std::chrono::seconds wait) {
    HttpLlmClient client(Options(), http_, timer_);
    ChatRun run;
    const auto start = std::chrono::steady_clock::now();
    client.StartChat(UserMessage(message), run.Callbacks());
    auto result = run.Wait();
    ASSERT_TRUE(result.ok()) << result.error().message;
    EXPECT_EQ(result->attempts, 2);
    EXPECT_EQ(StatsField("requests"), 2);
    EXPECT_GE(std::chrono::steady_clock::now() - start, wait);
  }
  int StatsField(const char* name) {
    const auto stats = server_.Stats();
    return stats.is_object() && stats.contains(name) ? stats[name].get<int>() : -1;
  }

  ScriptedLlmServer server_{kRules, {"--api-key", "test-key"}};
  HttpClient http_;
  TimerThread timer_;
};

TEST_F(LlmClientIntegrationTest, StreamsTheDefaultReplyTokenByToken) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("hello there"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->content.rfind("You said: hello there. I have seen 1 user messages (digest ", 0),
            0u)
      << result->content;
  EXPECT_GT(run.tokens.size(), 5u);  // streamed in pieces
  EXPECT_EQ(run.Joined(), result->content);
  EXPECT_EQ(result->finish_reason, "stop");
  EXPECT_GT(result->usage.prompt_tokens(), 0u);
  EXPECT_GT(result->usage.completion_tokens(), 0u);
  EXPECT_EQ(result->attempts, 1);
}

TEST_F(LlmClientIntegrationTest, AssemblesParallelToolCalls) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  auto options = UserMessage("weather in Reykjavik");
  options.tools = std::make_shared<const ChatTools>(std::vector<ChatToolSpec>{
      ChatToolSpec{"weather", "w", nullptr}, ChatToolSpec{"time", "t", nullptr}});
  client.StartChat(options, run.Callbacks());
  auto result = run.Wait();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->content, "Checking. ");
  ASSERT_EQ(result->tool_calls.size(), 2u);
  EXPECT_EQ(result->tool_calls[0].id(), "call_w");
  EXPECT_EQ(nlohmann::json::parse(result->tool_calls[0].arguments_json()),
            (nlohmann::json{{"city", "Reykjavik"}}));
  EXPECT_EQ(result->tool_calls[1].name(), "time");
  EXPECT_EQ(result->finish_reason, "tool_calls");
}

TEST_F(LlmClientIntegrationTest, A429IsRetriedAfterRetryAfter) {
  // Retry-After: 1 was honoured (a lower bound, not a timing threshold).
  ExpectOneRetryAfterAtLeast("flaky please", std::chrono::seconds(1));
}

// RFC 9110 allows Retry-After as an HTTP-date too ("Wed, 21 Oct 2015 07:28:00 GMT").
TEST_F(LlmClientIntegrationTest, ARetryAfterDateIsHonoured) {
  // The date is 2 s ahead in whole seconds, so at least 1 s; the test's own backoff is 50-200 ms.
  ExpectOneRetryAfterAtLeast("dated please", std::chrono::seconds(1));
}

TEST_F(LlmClientIntegrationTest, A500IsRetriedThenGivenUp) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("boom"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kLlmError);
  EXPECT_NE(result.error().message.find("HTTP 500: kaboom"), std::string::npos)
      << result.error().message;
  EXPECT_NE(result.error().message.find("after 3 attempts"), std::string::npos);
  EXPECT_EQ(StatsField("requests"), 3);
  EXPECT_EQ(client.stats().retries, 2u);
}

TEST_F(LlmClientIntegrationTest, A400IsNotRetried) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("bad request"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message, "LLM returned HTTP 400: no such model");
  EXPECT_EQ(StatsField("requests"), 1);
}

TEST_F(LlmClientIntegrationTest, AWrongKeyIsAnErrorThatDoesNotShowTheKey) {
  auto options = Options();
  options.api_key = "wrong-secret-key";
  HttpLlmClient client(options, http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("hello"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("HTTP 401"), std::string::npos);
  EXPECT_EQ(result.error().message.find("wrong-secret-key"), std::string::npos);
}

TEST_F(LlmClientIntegrationTest, CancelClosesTheConnection) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  const ChatHandle h = client.StartChat(UserMessage("hang on"), run.Callbacks());
  ASSERT_TRUE(Eventually([&] { return StatsField("active") == 1; }));
  client.Cancel(h);
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kCancelled);
  EXPECT_TRUE(Eventually([&] { return StatsField("client_disconnects") >= 1; }))
      << server_.Stats().dump();
  EXPECT_TRUE(Eventually([&] { return StatsField("active") == 0; }));
}

TEST_F(LlmClientIntegrationTest, TheDeadlineEndsAHangingCall) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("hang on", milliseconds(300)), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kDeadlineExceeded) << result.error().message;
  EXPECT_TRUE(Eventually([&] { return StatsField("client_disconnects") >= 1; }));
}

TEST_F(LlmClientIntegrationTest, AStreamCutMidAnswerIsNotRetried) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("drop it"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kLlmError);
  EXPECT_FALSE(run.Joined().empty());
  EXPECT_EQ(StatsField("requests"), 1);
}

// OpenAI reports a failure mid-answer as an error object in a data frame, then ends the stream:
// an llm_error naming the server's message, after the tokens already streamed, not retried
// (the client has seen those tokens), and never a success with half an answer.
TEST_F(LlmClientIntegrationTest, AnErrorObjectMidStreamIsAnLlmError) {
  HttpLlmClient client(Options(), http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("midway"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok()) << "a half answer was taken for a whole one: " << run.Joined();
  EXPECT_EQ(result.error().code, ErrorCode::kLlmError);
  EXPECT_NE(result.error().message.find("The server had an error while processing your request"),
            std::string::npos)
      << result.error().message;
  EXPECT_EQ(run.Joined(), "one two ");
  EXPECT_EQ(StatsField("requests"), 1);
}

TEST_F(LlmClientIntegrationTest, UnreachableServerIsRetriedThenAnError) {
  auto options = Options();
  options.base_url = "http://127.0.0.1:" + std::to_string(testing::FreePort()) + "/v1";
  HttpLlmClient client(options, http_, timer_);
  ChatRun run;
  client.StartChat(UserMessage("hi"), run.Callbacks());
  auto result = run.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kLlmError);
  EXPECT_NE(result.error().message.find("unreachable"), std::string::npos)
      << result.error().message;
  EXPECT_EQ(client.stats().attempts, 3u);
}

// --- The agent loop over the real server ---------------------------------------------------

class InlineTools : public ToolRunner {
 public:
  void RunTool(const wf::v1::ToolCall& call, const TurnContext&,
               std::function<void(wf::v1::ToolResult)> done) override {
    wf::v1::ToolResult r;
    r.set_ok(true);
    r.set_content(call.name() == "weather" ? "sunny" : "noon");
    done(std::move(r));
  }
  void RunFlow(const wf::v1::ToolCall& call, const TurnContext& ctx,
               std::function<void(wf::v1::ToolResult)> done) override {
    RunTool(call, ctx, std::move(done));
  }
};

class CollectingSink : public EventSink {
 public:
  void Emit(wf::v1::QueryEvent e) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  std::vector<wf::v1::QueryEvent> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::vector<wf::v1::QueryEvent> events_;
};

std::shared_ptr<Config> AgentConfig() {
  auto c = std::make_shared<Config>();
  for (const char* name : {"weather", "time"}) {
    ToolConfig t;
    t.name = name;
    t.description = name;
    t.parameters_schema = {{"type", "object"}, {"properties", nlohmann::json::object()}};
    c->tools.push_back(t);
  }
  return c;
}

struct TurnRun {
  std::promise<wf::v1::TurnRecord> done;
  TurnDoneCallback Callback() {
    return [this](wf::v1::TurnRecord r) { done.set_value(std::move(r)); };
  }
  std::optional<wf::v1::TurnRecord> Wait() {
    auto f = done.get_future();
    if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) return std::nullopt;
    return f.get();
  }
};

TEST_F(LlmClientIntegrationTest, AgentTurnWithParallelToolsOverTheRealServer) {
  HttpLlmClient client(Options(), http_, timer_);
  InlineTools tools;
  CollectingSink sink;
  ThreadPoolExecutor executor(2);
  TurnParams p;
  p.config = AgentConfig();
  p.user_message = "weather in Lima";
  p.session_id = "s";
  p.request_id = "r";
  p.run_id = "run";
  TurnRun run;
  auto turn = AgentTurn::Start(AgentDeps{client, tools, sink, executor, timer_}, std::move(p),
                               run.Callback());
  auto record = run.Wait();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->status(), "ok");
  const auto events = sink.events();
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_final());
  EXPECT_EQ(events.back().final().answer(), "Here is what I found: noon");
  int calls = 0, results = 0;
  for (const auto& e : events) {
    calls += e.has_tool_call();
    results += e.has_tool_result();
  }
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(results, 2);
  // user, assistant(2 calls), 2 tool results, final answer.
  ASSERT_EQ(record->messages_size(), 5);
  EXPECT_EQ(record->messages(1).tool_calls_size(), 2);
  EXPECT_GT(record->usage().total_tokens(), 0u);
}

TEST_F(LlmClientIntegrationTest, AgentTurnCancelledMidHangClosesTheConnection) {
  HttpLlmClient client(Options(), http_, timer_);
  InlineTools tools;
  CollectingSink sink;
  ThreadPoolExecutor executor(2);
  TurnParams p;
  p.config = AgentConfig();
  p.user_message = "hang on";
  p.request_id = "r";
  TurnRun run;
  auto turn = AgentTurn::Start(AgentDeps{client, tools, sink, executor, timer_}, std::move(p),
                               run.Callback());
  ASSERT_TRUE(Eventually([&] { return StatsField("active") == 1; }));
  turn->Cancel();
  auto record = run.Wait();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->status(), "cancelled");
  ASSERT_TRUE(sink.events().back().final().cancelled());
  EXPECT_TRUE(Eventually([&] { return StatsField("client_disconnects") >= 1; }));
}

}  // namespace
}  // namespace wf
