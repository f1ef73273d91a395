#include "llm/http_llm_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace wf {
namespace {

using std::chrono::milliseconds;

/// Scripted transport: records requests; the test answers them.
class FakeTransport : public ChatTransport {
 public:
  struct Pending {
    HttpRequest request;
    HttpDataCallback on_data;
    HttpCallback on_done;
    bool finished = false;
    bool cancelled = false;
  };

  HttpRequestId SendStreaming(HttpRequest request, HttpDataCallback on_data,
                              HttpCallback on_done) override {
    const HttpRequestId id = next_++;
    requests_[id] = Pending{std::move(request), std::move(on_data), std::move(on_done)};
    order_.push_back(id);
    return id;
  }

  void Cancel(HttpRequestId id) override {
    auto it = requests_.find(id);
    if (it == requests_.end() || it->second.finished) return;
    it->second.cancelled = true;
    Finish(id, Error{ErrorCode::kCancelled, "cancelled"});
  }

  size_t count() const { return order_.size(); }
  HttpRequestId last() const { return order_.back(); }
  Pending& at(HttpRequestId id) { return requests_.at(id); }

  /// Sends body bytes; returns what on_data returned.
  bool Data(HttpRequestId id, const std::string& bytes) { return at(id).on_data(bytes); }

  void Finish(HttpRequestId id, Result<HttpResponse> result) {
    Pending& p = at(id);
    if (p.finished) return;
    p.finished = true;
    p.on_done(std::move(result));
  }

  void Status(HttpRequestId id, int status, std::string body = "", std::string retry_after = "") {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    r.retry_after = std::move(retry_after);
    Finish(id, r);
  }

 private:
  HttpRequestId next_ = 1;
  std::map<HttpRequestId, Pending> requests_;
  std::vector<HttpRequestId> order_;
};

/// Timer whose tasks run only when the test says so.
class FakeTimer : public Timer {
 public:
  TaskId After(milliseconds delay, std::function<void()> fn) override {
    const TaskId id = next_++;
    tasks_[id] = {delay, std::move(fn)};
    delays_.push_back(delay);
    return id;
  }
  bool Cancel(TaskId id) override { return tasks_.erase(id) > 0; }
  /// Runs every pending task (and those they schedule), in id order.
  void RunAll() {
    while (!tasks_.empty()) {
      auto it = tasks_.begin();
      auto fn = std::move(it->second.second);
      tasks_.erase(it);
      fn();
    }
  }
  size_t pending() const { return tasks_.size(); }
  const std::vector<milliseconds>& delays() const { return delays_; }

 private:
  TaskId next_ = 1;
  std::map<TaskId, std::pair<milliseconds, std::function<void()>>> tasks_;
  std::vector<milliseconds> delays_;
};

std::string ContentEvent(const std::string& text) {
  return "data: " +
         nlohmann::json{{"choices", {{{"index", 0}, {"delta", {{"content", text}}}}}}}.dump() +
         "\n\n";
}

const std::string kStopEvent =
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n"
    "data: [DONE]\n\n";

struct Outcome {
  std::vector<std::string> tokens;
  std::optional<Result<ChatOutcome>> result;
  int done_calls = 0;
  ChatCallbacks Callbacks() {
    return ChatCallbacks{[this](std::string_view t) { tokens.emplace_back(t); },
                         [this](Result<ChatOutcome> r) {
                           ++done_calls;
                           result.emplace(std::move(r));
                         }};
  }
};

class HttpLlmClientTest : public ::testing::Test {
 protected:
  LlmClientOptions Options() {
    LlmClientOptions o;
    o.base_url = "http://127.0.0.1:1/v1/";
    o.default_model = "scripted";
    o.retry = RetryPolicy{3, milliseconds(100), milliseconds(1000)};
    return o;
  }
  ChatRequestOptions Request() {
    ChatRequestOptions r;
    wf::v1::ChatMessage m;
    m.set_role("user");
    m.set_content("hi");
    r.messages.push_back(m);
    r.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    return r;
  }
  FakeTransport transport_;
  FakeTimer timer_;
};

TEST_F(HttpLlmClientTest, StreamsTokensThenCompletes) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  ASSERT_EQ(transport_.count(), 1u);
  const auto& req = transport_.at(1).request;
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.url, "http://127.0.0.1:1/v1/chat/completions");
  for (const auto& [name, value] : req.headers) EXPECT_NE(name, "Authorization");
  EXPECT_LE(req.timeout, milliseconds(60000));
  EXPECT_GT(req.timeout, milliseconds(50000));
  const auto body = nlohmann::json::parse(req.body);
  EXPECT_EQ(body["model"], "scripted");
  EXPECT_EQ(body["stream"], true);

  const std::string stream = ContentEvent("Hel") + ContentEvent("lo") + kStopEvent;
  // Split the stream at awkward places.
  EXPECT_TRUE(transport_.Data(1, stream.substr(0, 7)));
  EXPECT_TRUE(transport_.Data(1, stream.substr(7, 50)));
  EXPECT_TRUE(transport_.Data(1, stream.substr(57)));
  transport_.Status(1, 200);
  ASSERT_TRUE(out.result.has_value());
  ASSERT_TRUE(out.result->ok()) << out.result->error().message;
  EXPECT_EQ(out.tokens, (std::vector<std::string>{"Hel", "lo"}));
  EXPECT_EQ((*out.result)->content, "Hello");
  EXPECT_EQ((*out.result)->usage.total_tokens(), 7u);
  EXPECT_EQ((*out.result)->attempts, 1);
  EXPECT_EQ(client.InFlight(), 0u);
}

TEST_F(HttpLlmClientTest, BearerHeaderOnlyWithAKey) {
  auto options = Options();
  options.api_key = "sk-secret";
  HttpLlmClient client(options, transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  const auto& headers = transport_.at(1).request.headers;
  EXPECT_NE(std::find(headers.begin(), headers.end(),
                      std::pair<std::string, std::string>{"Authorization", "Bearer sk-secret"}),
            headers.end());
  transport_.Status(1, 401, R"({"error":{"message":"bad key"}})");
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().message.find("sk-secret"), std::string::npos);
}

TEST_F(HttpLlmClientTest, RetriesA429AfterRetryAfter) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Status(1, 429, R"({"error":{"message":"slow down"}})", "2");
  EXPECT_FALSE(out.result.has_value());
  ASSERT_EQ(timer_.pending(), 1u);
  EXPECT_GE(timer_.delays().back(), milliseconds(2000));
  timer_.RunAll();
  ASSERT_EQ(transport_.count(), 2u);
  transport_.Data(2, ContentEvent("ok") + kStopEvent);
  transport_.Status(2, 200);
  ASSERT_TRUE(out.result->ok());
  EXPECT_EQ((*out.result)->content, "ok");
  EXPECT_EQ((*out.result)->attempts, 2);
  EXPECT_EQ(client.stats().retries, 1u);
}

TEST_F(HttpLlmClientTest, GivesUpAfterMaxAttempts) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(transport_.count(), static_cast<size_t>(i));
    transport_.Status(transport_.last(), 500, "boom");
    timer_.RunAll();
  }
  EXPECT_EQ(transport_.count(), 3u);
  ASSERT_TRUE(out.result.has_value());
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().code, ErrorCode::kLlmError);
  EXPECT_NE(out.result->error().message.find("HTTP 500"), std::string::npos);
  EXPECT_NE(out.result->error().message.find("after 3 attempts"), std::string::npos);
  EXPECT_EQ(out.done_calls, 1);
  // Backoff grows (jitter aside, the base doubles).
  ASSERT_EQ(timer_.delays().size(), 2u);
  EXPECT_GE(timer_.delays()[0], milliseconds(50));
  EXPECT_LE(timer_.delays()[0], milliseconds(100));
  EXPECT_GE(timer_.delays()[1], milliseconds(100));
  EXPECT_LE(timer_.delays()[1], milliseconds(200));
}

TEST_F(HttpLlmClientTest, OtherClientErrorsAreNotRetried) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Status(1, 400, R"({"error":{"message":"Unknown model 'x'"}})");
  EXPECT_EQ(transport_.count(), 1u);
  EXPECT_EQ(timer_.pending(), 0u);
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().code, ErrorCode::kLlmError);
  EXPECT_EQ(out.result->error().message, "LLM returned HTTP 400: Unknown model 'x'");
}

TEST_F(HttpLlmClientTest, ConnectionErrorsAreRetried) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Finish(1, Error{ErrorCode::kUpstreamUnavailable, "127.0.0.1:1: connection refused"});
  timer_.RunAll();
  ASSERT_EQ(transport_.count(), 2u);
  transport_.Data(2, ContentEvent("x") + kStopEvent);
  transport_.Status(2, 200);
  ASSERT_TRUE(out.result->ok());
}

TEST_F(HttpLlmClientTest, NoRetryOnceTokensWereStreamed) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Data(1, ContentEvent("partial"));
  transport_.Finish(1, Error{ErrorCode::kUpstreamUnavailable, "connection reset"});
  timer_.RunAll();
  EXPECT_EQ(transport_.count(), 1u);
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().code, ErrorCode::kLlmError);
  EXPECT_EQ(out.tokens, (std::vector<std::string>{"partial"}));
}

TEST_F(HttpLlmClientTest, StreamThatEndsEarlyIsAnError) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Data(1, ContentEvent("cut"));
  transport_.Status(1, 200);
  ASSERT_FALSE(out.result->ok());
  EXPECT_NE(out.result->error().message.find("ended before"), std::string::npos);
}

TEST_F(HttpLlmClientTest, EmptyStreamIsRetried) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Status(1, 200);
  timer_.RunAll();
  ASSERT_EQ(transport_.count(), 2u);
  transport_.Data(2, kStopEvent);
  transport_.Status(2, 200);
  ASSERT_TRUE(out.result->ok());
  EXPECT_EQ((*out.result)->content, "");
}

TEST_F(HttpLlmClientTest, CancelDuringTheStreamAbortsTheTransfer) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  const ChatHandle h = client.StartChat(Request(), out.Callbacks());
  EXPECT_TRUE(transport_.Data(1, ContentEvent("a")));
  client.Cancel(h);
  EXPECT_TRUE(transport_.at(1).cancelled);
  ASSERT_TRUE(out.result.has_value());
  EXPECT_EQ(out.result->error().code, ErrorCode::kCancelled);
  client.Cancel(h);  // again: ignored
  EXPECT_EQ(out.done_calls, 1);
}

TEST_F(HttpLlmClientTest, AnswerPastItsBoundAbortsTheTransfer) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  ChatRequestOptions request = Request();
  request.max_answer_bytes = 1024;
  client.StartChat(std::move(request), out.Callbacks());
  const std::string word(100, 'x');
  bool more = true;
  int events = 0;
  while (more && events < 100) {
    more = transport_.Data(1, ContentEvent(word));
    ++events;
  }
  // on_data said stop (the transport then aborts the transfer, closing the connection) on the
  // event that crossed the bound, not at the end of the stream.
  EXPECT_FALSE(more);
  EXPECT_EQ(events, 11);
  transport_.Finish(1, Error{ErrorCode::kUpstreamError, "aborted by the write callback"});
  ASSERT_TRUE(out.result.has_value());
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().code, ErrorCode::kTooLarge);
  EXPECT_EQ(out.result->error().message, "LLM answer exceeded 1024 bytes");
  std::string streamed;
  for (const auto& t : out.tokens) streamed += t;
  EXPECT_EQ(streamed, std::string(1024, 'x'));
  EXPECT_EQ(transport_.count(), 1u);  // not retried
  timer_.RunAll();
  EXPECT_EQ(transport_.count(), 1u);
  EXPECT_EQ(out.done_calls, 1);
}

TEST_F(HttpLlmClientTest, AnswerBoundIsAtMostTheStreamLimit) {
  LlmClientOptions options = Options();
  options.max_stream_bytes = 2048;
  HttpLlmClient client(options, transport_, timer_);
  Outcome out;
  ChatRequestOptions request = Request();
  request.max_answer_bytes = 1 << 20;
  client.StartChat(std::move(request), out.Callbacks());
  EXPECT_EQ(transport_.at(1).request.max_streamed_bytes, 2048u);
  EXPECT_FALSE(transport_.Data(1, ContentEvent(std::string(3000, 'y'))));
  transport_.Finish(1, Error{ErrorCode::kUpstreamError, "aborted by the write callback"});
  ASSERT_TRUE(out.result.has_value());
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().code, ErrorCode::kTooLarge);
}

TEST_F(HttpLlmClientTest, CancelDuringBackoffStopsTheRetry) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  const ChatHandle h = client.StartChat(Request(), out.Callbacks());
  transport_.Status(1, 503);
  ASSERT_EQ(timer_.pending(), 1u);
  client.Cancel(h);
  EXPECT_FALSE(out.result.has_value());  // never inline
  timer_.RunAll();
  EXPECT_EQ(transport_.count(), 1u);
  ASSERT_TRUE(out.result.has_value());
  EXPECT_EQ(out.result->error().code, ErrorCode::kCancelled);
}

TEST_F(HttpLlmClientTest, PastDeadlineFailsWithoutARequest) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  auto request = Request();
  request.deadline = std::chrono::steady_clock::now() - milliseconds(1);
  client.StartChat(request, out.Callbacks());
  EXPECT_EQ(transport_.count(), 0u);
  timer_.RunAll();
  ASSERT_TRUE(out.result.has_value());
  EXPECT_EQ(out.result->error().code, ErrorCode::kDeadlineExceeded);
}

TEST_F(HttpLlmClientTest, RetryAfterBeyondTheDeadlineGivesUp) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  auto request = Request();
  request.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  client.StartChat(request, out.Callbacks());
  transport_.Status(1, 429, "", "30");
  EXPECT_EQ(timer_.pending(), 0u);
  ASSERT_TRUE(out.result.has_value());
  EXPECT_EQ(out.result->error().code, ErrorCode::kLlmError);
  EXPECT_NE(out.result->error().message.find("429"), std::string::npos);
}

TEST_F(HttpLlmClientTest, TimeoutAtTheDeadlineIsDeadlineExceeded) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  auto request = Request();
  request.deadline = std::chrono::steady_clock::now() + milliseconds(10);
  client.StartChat(request, out.Callbacks());
  if (transport_.count() == 1) {  // (0 when the 10 ms were gone before StartChat looked)
    transport_.Finish(1, Error{ErrorCode::kUpstreamTimeout, "no answer within 10 ms"});
  }
  timer_.RunAll();
  ASSERT_TRUE(out.result.has_value());
  EXPECT_EQ(out.result->error().code, ErrorCode::kDeadlineExceeded);
}

TEST_F(HttpLlmClientTest, ServerThatIgnoresStreamingIsUnderstood) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Data(1, R"({"choices":[{"index":0,"finish_reason":"stop",)");
  transport_.Data(1, R"("message":{"role":"assistant","content":"whole"}}]})");
  HttpResponse r;
  r.status = 200;
  r.content_type = "application/json";
  transport_.Finish(1, r);
  ASSERT_TRUE(out.result->ok()) << out.result->error().message;
  EXPECT_EQ((*out.result)->content, "whole");
  EXPECT_EQ(out.tokens, (std::vector<std::string>{"whole"}));
}

TEST_F(HttpLlmClientTest, ErrorEventInsideTheStream) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  EXPECT_FALSE(transport_.Data(1, "data: {\"error\":{\"message\":\"model overloaded\"}}\n\n"));
  transport_.Finish(1, Error{ErrorCode::kCancelled, "aborted by callback"});
  ASSERT_FALSE(out.result->ok());
  EXPECT_EQ(out.result->error().code, ErrorCode::kLlmError);
  EXPECT_NE(out.result->error().message.find("model overloaded"), std::string::npos);
}

TEST_F(HttpLlmClientTest, ToolCallsAreAssembled) {
  HttpLlmClient client(Options(), transport_, timer_);
  Outcome out;
  client.StartChat(Request(), out.Callbacks());
  transport_.Data(1,
                  "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\","
                  "\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\"}}]}}]}\n\n"
                  "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                  "\"function\":{\"arguments\":\"\\\":\\\"Oslo\\\"}\"}}]}}]}\n\n"
                  "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
                  "data: [DONE]\n\n");
  transport_.Status(1, 200);
  ASSERT_TRUE(out.result->ok()) << out.result->error().message;
  ASSERT_EQ((*out.result)->tool_calls.size(), 1u);
  EXPECT_EQ((*out.result)->tool_calls[0].arguments_json(), "{\"city\":\"Oslo\"}");
  EXPECT_TRUE(out.tokens.empty());
}

TEST_F(HttpLlmClientTest, DestructorCancelsCallsInFlight) {
  Outcome out;
  {
    HttpLlmClient client(Options(), transport_, timer_);
    client.StartChat(Request(), out.Callbacks());
  }
  ASSERT_TRUE(out.result.has_value());
  EXPECT_EQ(out.result->error().code, ErrorCode::kCancelled);
}

}  // namespace
}  // namespace wf
