// HttpClient against a real wf-demo-api process: success, statuses, failures, limits, reuse,
// concurrency, cancellation, streaming and shutdown.

#include "http_client/http_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "demo_api_server.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;
using Json = nlohmann::json;

/// Generous bound for anything that should finish "at once"; only reached when a test fails.
constexpr milliseconds kWaitLimit{20000};

class HttpClientTest : public testing::DemoApiTest {};

/// A completion that a test can wait for.
struct Completion {
  std::promise<Result<HttpResponse>> promise;
  std::future<Result<HttpResponse>> future = promise.get_future();

  HttpCallback Callback() {
    return [this](Result<HttpResponse> result) { promise.set_value(std::move(result)); };
  }
  Result<HttpResponse> Wait() {
    if (future.wait_for(kWaitLimit) != std::future_status::ready) {
      return Error{ErrorCode::kInternal, "test: no completion within the wait limit"};
    }
    return future.get();
  }
};

TEST_F(HttpClientTest, GetReturnsBodyStatusAndContentType) {
  HttpClient client;
  auto result = HttpCallBlocking(client, Get("/api/orders/1234"));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->content_type, "application/json");
  Json order = Json::parse(result->body);
  EXPECT_EQ(order["order_id"], "1234");
  EXPECT_TRUE(order.contains("status"));
  EXPECT_TRUE(order["items"].is_array());
  EXPECT_EQ(order["currency"], "USD");
}

/// Sets (or, with nullopt, removes) an environment variable for a scope, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::optional<std::string>& value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value) {
      ::setenv(name_.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// A proxy named in the environment when the client is made is used, by libcurl's rules
// (no_proxy included); without one the client tells libcurl there is none (it skips reading
// the environment per request) and goes straight to the host.
TEST_F(HttpClientTest, EnvironmentProxiesAreHonoured) {
  ScopedEnv no_proxy("no_proxy", std::nullopt);
  ScopedEnv no_proxy_upper("NO_PROXY", std::nullopt);
  ScopedEnv all_proxy("all_proxy", std::nullopt);
  ScopedEnv all_proxy_upper("ALL_PROXY", std::nullopt);
  {
    // Nothing listens on the proxy's port: a request that goes through it is refused.
    ScopedEnv proxy("http_proxy", "http://127.0.0.1:" + std::to_string(testing::FreePort()));
    {
      HttpClient client;
      auto result = HttpCallBlocking(client, Get("/api/orders/1234"));
      ASSERT_FALSE(result.ok()) << "the environment's proxy was not used";
      EXPECT_EQ(result.error().code, ErrorCode::kUpstreamUnavailable) << result.error().message;
    }
    {
      ScopedEnv bypass("no_proxy", "127.0.0.1");
      HttpClient client;
      auto result = HttpCallBlocking(client, Get("/api/orders/1234"));
      ASSERT_TRUE(result.ok()) << result.error().message;
      EXPECT_EQ(result->status, 200);
    }
  }
  {
    ScopedEnv proxy("http_proxy", std::nullopt);
    HttpClient client;
    auto result = HttpCallBlocking(client, Get("/api/orders/1234"));
    ASSERT_TRUE(result.ok()) << result.error().message;
    EXPECT_EQ(result->status, 200);
  }
}

TEST_F(HttpClientTest, PostSendsBodyAndHeaders) {
  HttpClient client;
  HttpRequest request;
  request.method = "POST";
  request.url = Url("/api/echo?q=a%20b%26c");
  request.headers = {
      {"Content-Type", "application/json"}, {"X-Session", "s-1 \"quoted\""}, {"X-Empty", ""}};
  request.body = R"({"text":"请假 3 天","quote":"\"","n":3})";
  auto result = HttpCallBlocking(client, request);
  ASSERT_TRUE(result.ok()) << result.error().message;
  ASSERT_EQ(result->status, 200);
  Json echo = Json::parse(result->body);
  EXPECT_EQ(echo["method"], "POST");
  EXPECT_EQ(echo["path"], "/api/echo");
  EXPECT_EQ(echo["query_decoded"]["q"], "a b&c");
  EXPECT_EQ(echo["headers"]["x-session"], "s-1 \"quoted\"");
  EXPECT_EQ(echo["headers"]["x-empty"], "");
  EXPECT_EQ(echo["headers"]["content-type"], "application/json");
  EXPECT_EQ(echo["headers"]["user-agent"], "wf/0.1");
  EXPECT_EQ(echo["headers"]["connection"], "keep-alive");
  EXPECT_FALSE(echo["headers"].contains("expect"));
  EXPECT_EQ(echo["body"], request.body);
  EXPECT_EQ(echo["json"]["text"], "请假 3 天");
}

TEST_F(HttpClientTest, OtherMethodsCarryTheirBodies) {
  HttpClient client;
  for (const std::string method : {"PUT", "PATCH", "DELETE"}) {
    HttpRequest request;
    request.method = method;
    request.url = Url("/api/echo");
    request.body = method == "DELETE" ? "" : "{\"m\":\"" + method + "\"}";
    auto result = HttpCallBlocking(client, request);
    ASSERT_TRUE(result.ok()) << method << ": " << result.error().message;
    Json echo = Json::parse(result->body);
    EXPECT_EQ(echo["method"], method);
    EXPECT_EQ(echo["body"], request.body);
    EXPECT_EQ(echo["headers"].contains("content-length"), method != "DELETE") << method;
  }
  HttpRequest head = Get("/health");
  head.method = "HEAD";
  auto result = HttpCallBlocking(client, head);
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_TRUE(result->body.empty());
}

TEST_F(HttpClientTest, NonSuccessStatusesAreResponses) {
  HttpClient client;
  for (int status : {201, 400, 404, 500, 503}) {
    auto result = HttpCallBlocking(client, Get("/status/" + std::to_string(status)));
    ASSERT_TRUE(result.ok()) << status << ": " << result.error().message;
    EXPECT_EQ(result->status, status);
    EXPECT_EQ(Json::parse(result->body)["status"], status);
  }
  auto missing = HttpCallBlocking(client, Get("/api/orders/42"));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Json::parse(missing->body)["error"]["code"], "not_found");
}

TEST_F(HttpClientTest, RetryAfterIsExposed) {
  HttpClient client;
  auto limited = HttpCallBlocking(client, Get("/status/429?retry_after=7"));
  ASSERT_TRUE(limited.ok()) << limited.error().message;
  EXPECT_EQ(limited->status, 429);
  EXPECT_EQ(limited->retry_after, "7");
  auto plain = HttpCallBlocking(client, Get("/status/503"));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->retry_after, "");
}

TEST_F(HttpClientTest, ConnectionRefusedIsUpstreamUnavailable) {
  HttpClient client;
  const int port = testing::FreePort();  // Nothing listens there.
  HttpRequest request;
  request.url = "http://127.0.0.1:" + std::to_string(port) + "/x";
  auto result = HttpCallBlocking(client, request);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUpstreamUnavailable);
  EXPECT_NE(result.error().message.find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << result.error().message;
}

TEST_F(HttpClientTest, UnknownHostIsUpstreamUnavailable) {
  HttpClient client;
  HttpRequest request;
  request.url = "http://no-such-host.invalid/x";
  auto result = HttpCallBlocking(client, request);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUpstreamUnavailable);
  EXPECT_NE(result.error().message.find("no-such-host.invalid"), std::string::npos);
}

TEST_F(HttpClientTest, SlowAnswerIsUpstreamTimeout) {
  HttpClient client;
  HttpRequest request = Get("/hang");
  request.timeout = milliseconds(300);
  auto result = HttpCallBlocking(client, request);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUpstreamTimeout);
  EXPECT_NE(result.error().message.find("no answer within 300 ms"), std::string::npos)
      << result.error().message;
}

TEST_F(HttpClientTest, DelayedAnswerWithinTimeoutArrives) {
  HttpClient client;
  HttpRequest request = Get("/hang?ms=50");
  request.timeout = milliseconds(10000);
  auto result = HttpCallBlocking(client, request);
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Json::parse(result->body)["slept_ms"], 50);
}

TEST_F(HttpClientTest, ResponseOverTheLimitIsAnError) {
  HttpClient client;
  for (const char* path : {"/big?bytes=2000", "/big?bytes=2000&chunked=1"}) {
    HttpRequest request = Get(path);
    request.max_response_bytes = 1000;
    auto result = HttpCallBlocking(client, request);
    ASSERT_FALSE(result.ok()) << path;
    EXPECT_EQ(result.error().code, ErrorCode::kUpstreamError) << path;
    EXPECT_NE(result.error().message.find("response exceeds 1000 bytes"), std::string::npos)
        << path << ": " << result.error().message;
  }
  for (const char* path : {"/big?bytes=1000", "/big?bytes=1000&chunked=1"}) {
    HttpRequest request = Get(path);
    request.max_response_bytes = 1000;
    auto result = HttpCallBlocking(client, request);
    ASSERT_TRUE(result.ok()) << path << ": " << result.error().message;
    EXPECT_EQ(result->body, std::string(1000, 'x')) << path;
  }
}

TEST_F(HttpClientTest, MalformedRequestsAreBadRequests) {
  HttpClient client;
  std::vector<HttpRequest> bad;
  bad.push_back(HttpRequest{});  // No URL at all.
  HttpRequest r;
  r.url = "http://";
  bad.push_back(r);
  r.url = "file:///etc/passwd";
  bad.push_back(r);
  r.url = "ftp://127.0.0.1/x";
  bad.push_back(r);
  r = Get("/api/echo");
  r.method = "GE T";
  bad.push_back(r);
  r = Get("/api/echo");
  r.headers = {{"X-Evil", "a\r\nInjected: 1"}};
  bad.push_back(r);
  r = Get("/api/echo");
  r.headers = {{"Bad Name", "v"}};
  bad.push_back(r);
  r = Get("/api/echo");
  r.timeout = milliseconds(0);
  bad.push_back(r);
  for (const HttpRequest& request : bad) {
    auto result = HttpCallBlocking(client, request);
    ASSERT_FALSE(result.ok()) << request.url;
    EXPECT_EQ(result.error().code, ErrorCode::kBadRequest)
        << request.url << " " << request.method << ": " << result.error().message;
  }
  // The client still works afterwards.
  auto good = HttpCallBlocking(client, Get("/health"));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->status, 200);
}

TEST_F(HttpClientTest, ManyConcurrentRequestsAllComplete) {
  HttpClient client;
  constexpr int kRequests = 500;
  std::mutex mutex;
  std::vector<std::string> failures;
  std::atomic<int> done{0};
  std::promise<void> all_done;
  for (int i = 0; i < kRequests; ++i) {
    const std::string id = std::to_string(1000 + i);
    client.Send(Get("/api/orders/" + id), [&, id](Result<HttpResponse> result) {
      std::string problem;
      if (!result.ok()) {
        problem = id + ": " + result.error().message;
      } else if (result->status != 200 || Json::parse(result->body)["order_id"] != id) {
        problem = id + ": unexpected answer " + result->body;
      }
      if (!problem.empty()) {
        std::lock_guard<std::mutex> lock(mutex);
        failures.push_back(problem);
      }
      if (done.fetch_add(1) + 1 == kRequests) all_done.set_value();
    });
  }
  ASSERT_EQ(all_done.get_future().wait_for(kWaitLimit), std::future_status::ready)
      << done.load() << " of " << kRequests << " completed";
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, e.g. " << failures.front();
  EXPECT_TRUE(testing::Eventually([&] { return client.InFlight() == 0; }));
  EXPECT_LE(client.ConnectionsOpened(), 64u);  // max_connections_per_host.
}

TEST_F(HttpClientTest, SequentialRequestsReuseOneConnection) {
  const auto before = Stats()["connections_accepted"].get<std::uint64_t>();
  HttpClient client;
  for (int i = 0; i < 50; ++i) {
    auto result = HttpCallBlocking(client, Get("/api/weather?city=Paris"));
    ASSERT_TRUE(result.ok()) << result.error().message;
    ASSERT_EQ(result->status, 200);
  }
  EXPECT_EQ(client.ConnectionsOpened(), 1u);
  // Our 50 requests opened one connection; Stats() itself opens one more.
  const auto after = Stats()["connections_accepted"].get<std::uint64_t>();
  EXPECT_EQ(after - before, 2u);
}

TEST_F(HttpClientTest, ConcurrentRequestsStayWithinThePerHostLimit) {
  HttpClient::Options options;
  options.max_connections_per_host = 4;
  HttpClient client(options);
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  std::promise<void> all_done;
  for (int i = 0; i < kRequests; ++i) {
    client.Send(Get("/api/fx?from=EUR&to=GBP"), [&](Result<HttpResponse> result) {
      if (result.ok() && result->status == 200) ok.fetch_add(1);
      if (done.fetch_add(1) + 1 == kRequests) all_done.set_value();
    });
  }
  ASSERT_EQ(all_done.get_future().wait_for(kWaitLimit), std::future_status::ready);
  EXPECT_EQ(ok.load(), kRequests);
  EXPECT_GE(client.ConnectionsOpened(), 1u);
  EXPECT_LE(client.ConnectionsOpened(), 4u);
}

TEST_F(HttpClientTest, CancelAbortsAPendingRequestAndClosesItsConnection) {
  HttpClient client;
  HttpRequest request = Get("/hang");  // Answers after 10 minutes.
  request.timeout = milliseconds(60000);
  Completion completion;
  const std::uint64_t base = ServerRequests();
  HttpRequestId id = client.Send(request, completion.Callback());
  ASSERT_TRUE(WaitUntilServerReceived(base, 1));  // Cancel it on the wire, not in the queue.
  client.Cancel(id);
  auto result = completion.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kCancelled) << result.error().message;
  EXPECT_EQ(client.InFlight(), 0u);

  // Unknown and finished ids are ignored.
  client.Cancel(id);
  client.Cancel(987654321);
  auto after = HttpCallBlocking(client, Get("/health"));
  ASSERT_TRUE(after.ok()) << after.error().message;
  // The cancelled transfer's connection was closed, not reused.
  EXPECT_EQ(client.ConnectionsOpened(), 2u);
}

TEST_F(HttpClientTest, CancelBeforeTheRequestStartsStillCompletesOnce) {
  HttpClient client;
  std::atomic<int> calls{0};
  Completion completion;
  HttpRequestId id = client.Send(Get("/hang?ms=60000"), [&](Result<HttpResponse> result) {
    if (calls.fetch_add(1) == 0) completion.promise.set_value(std::move(result));
  });
  client.Cancel(id);
  auto result = completion.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kCancelled);
  auto after = HttpCallBlocking(client, Get("/health"));  // Flushes the queue.
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(HttpClientTest, StreamingDeliversChunksBeforeTheResponseEnds) {
  HttpClient client;
  // The second event comes a minute after the first: only a streaming client sees the first one
  // before its 30 s timeout.
  HttpRequest request = Get("/stream?chunks=2&delay_ms=60000");
  request.timeout = milliseconds(30000);
  std::string received;
  Completion completion;
  client.SendStreaming(
      request,
      [&](std::string_view chunk) {
        received.append(chunk);
        return received.find("\n\n") == std::string::npos;  // Stop after the first event.
      },
      completion.Callback());
  auto result = completion.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kCancelled) << result.error().message;
  EXPECT_EQ(received, "data: {\"index\":0}\n\n");
}

TEST_F(HttpClientTest, StreamingDeliversTheWholeStream) {
  HttpClient client;
  std::string received;
  int chunks = 0;
  Completion completion;
  client.SendStreaming(
      Get("/stream?chunks=5&delay_ms=10"),
      [&](std::string_view chunk) {
        received.append(chunk);
        ++chunks;
        return true;
      },
      completion.Callback());
  auto result = completion.Wait();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->content_type, "text/event-stream");
  EXPECT_TRUE(result->body.empty());
  std::string expected;
  for (int i = 0; i < 5; ++i) expected += "data: {\"index\":" + std::to_string(i) + "}\n\n";
  EXPECT_EQ(received, expected);
  EXPECT_GE(chunks, 1);
}

TEST_F(HttpClientTest, StreamingKeepsTheErrorBodyOfANonSuccessStatus) {
  HttpClient client;
  bool data_called = false;
  Completion completion;
  client.SendStreaming(
      Get("/status/503?retry_after=3"),
      [&](std::string_view) {
        data_called = true;
        return true;
      },
      completion.Callback());
  auto result = completion.Wait();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->status, 503);
  EXPECT_EQ(result->retry_after, "3");
  EXPECT_EQ(Json::parse(result->body)["status"], 503);
  EXPECT_FALSE(data_called);

  // An error body over max_response_bytes is cut there, and still a response.
  HttpRequest small = Get("/api/orders/42");
  small.max_response_bytes = 10;
  Completion cut;
  client.SendStreaming(
      small, [&](std::string_view) { return true; }, cut.Callback());
  auto cut_result = cut.Wait();
  ASSERT_TRUE(cut_result.ok()) << cut_result.error().message;
  EXPECT_EQ(cut_result->status, 404);
  EXPECT_EQ(cut_result->body.size(), 10u);
}

TEST_F(HttpClientTest, StreamingOverItsLimitIsAnError) {
  HttpClient client;
  HttpRequest request = Get("/big?bytes=5000&chunked=1");
  request.max_streamed_bytes = 1000;
  std::size_t received = 0;
  Completion completion;
  client.SendStreaming(
      request,
      [&](std::string_view chunk) {
        received += chunk.size();
        return true;
      },
      completion.Callback());
  auto result = completion.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUpstreamError);
  EXPECT_NE(result.error().message.find("response exceeds 1000 bytes"), std::string::npos);
  EXPECT_LE(received, 1000u);
}

TEST_F(HttpClientTest, DestructorCompletesPendingRequests) {
  std::mutex mutex;
  std::vector<Error> errors;
  {
    HttpClient client;
    const std::uint64_t base = ServerRequests();
    for (int i = 0; i < 3; ++i) {
      HttpRequest request = Get("/hang");
      request.timeout = milliseconds(60000);
      client.Send(request, [&](Result<HttpResponse> result) {
        std::lock_guard<std::mutex> lock(mutex);
        errors.push_back(result.ok() ? Error{ErrorCode::kInternal, "unexpected success"}
                                     : result.error());
      });
    }
    ASSERT_TRUE(WaitUntilServerReceived(base, 3));  // On the wire, not only queued.
    HttpRequest queued = Get("/hang");
    queued.timeout = milliseconds(60000);
    client.Send(queued, [&](Result<HttpResponse> result) {
      std::lock_guard<std::mutex> lock(mutex);
      errors.push_back(result.ok() ? Error{ErrorCode::kInternal, "unexpected success"}
                                   : result.error());
    });
  }
  ASSERT_EQ(errors.size(), 4u);
  for (const Error& error : errors) {
    EXPECT_EQ(error.code, ErrorCode::kUnavailable);
    EXPECT_EQ(error.message, "client shutting down");
  }
}

TEST_F(HttpClientTest, CallbacksMaySendAndMayThrow) {
  HttpClient client;
  Completion second;
  client.Send(Get("/api/holidays?year=2026"), [&](Result<HttpResponse> first) {
    ASSERT_TRUE(first.ok());
    client.Send(Get("/api/expenses/EX-1"), second.Callback());
  });
  auto result = second.Wait();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(Json::parse(result->body)["expense_id"], "EX-1");

  client.Send(Get("/health"), [](Result<HttpResponse>) { throw std::runtime_error("boom"); });
  Completion streaming;
  client.SendStreaming(
      Get("/stream?chunks=3&delay_ms=0"),
      [](std::string_view) -> bool { throw std::runtime_error("bad chunk"); },
      streaming.Callback());
  auto streamed = streaming.Wait();
  ASSERT_FALSE(streamed.ok());
  EXPECT_EQ(streamed.error().code, ErrorCode::kInternal);
  EXPECT_NE(streamed.error().message.find("bad chunk"), std::string::npos);

  auto after = HttpCallBlocking(client, Get("/health"));
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after->status, 200);
}

}  // namespace
}  // namespace wf
