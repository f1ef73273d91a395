// HttpClient on a caller-owned EventLoop (HttpClientOptions::loop) against a real wf-demo-api:
// requests sent from the loop thread (loop tasks, chained completion callbacks), concurrency,
// timeouts and cancellation, connection reuse, and destruction from either thread.

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "demo_api_server.h"
#include "http_client/http_client.h"
#include "io/event_loop.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;
using Json = nlohmann::json;

/// Generous bound for anything that should finish "at once"; only reached when a test fails.
constexpr milliseconds kWaitLimit{20000};

class HttpClientLoopTest : public testing::DemoApiTest {
 protected:
  HttpClientLoopTest() : loop_thread_("test-loop") {}

  EventLoop& loop() { return loop_thread_.loop(); }

  HttpClient::Options OnLoop() {
    HttpClient::Options options;
    options.loop = &loop();
    return options;
  }

  /// Runs `task` on the loop thread and waits for it.
  void RunOnLoop(std::function<void()> task) {
    ASSERT_TRUE(loop().RunAndWait(std::move(task), kWaitLimit));
  }

  EventLoopThread loop_thread_;
};

/// A completion that a test can wait for; records whether it ran on the loop thread.
struct Completion {
  explicit Completion(EventLoop& loop) : loop(loop) {}
  EventLoop& loop;
  std::atomic<bool> on_loop_thread{false};
  std::promise<Result<HttpResponse>> promise;
  std::future<Result<HttpResponse>> future = promise.get_future();

  HttpCallback Callback() {
    return [this](Result<HttpResponse> result) {
      on_loop_thread = loop.InLoopThread();
      promise.set_value(std::move(result));
    };
  }
  Result<HttpResponse> Wait() {
    if (future.wait_for(kWaitLimit) != std::future_status::ready) {
      return Error{ErrorCode::kInternal, "test: no completion within the wait limit"};
    }
    return future.get();
  }
};

TEST_F(HttpClientLoopTest, SendFromAForeignThreadCompletesOnTheCallersLoop) {
  HttpClient client(OnLoop());
  Completion completion(loop());
  client.Send(Get("/api/orders/1234"), completion.Callback());
  auto result = completion.Wait();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(Json::parse(result->body)["order_id"], "1234");
  EXPECT_TRUE(completion.on_loop_thread.load());
}

TEST_F(HttpClientLoopTest, RequestsChainedFromLoopTasksAndCallbacksReuseOneConnection) {
  HttpClient client(OnLoop());
  constexpr int kChain = 30;
  std::vector<std::string> problems;  // Loop thread only until `finished`.
  std::promise<void> finished;
  bool in_send = false;
  std::function<void(int)> send_next = [&](int i) {
    in_send = true;
    client.Send(Get("/api/orders/" + std::to_string(1000 + i)), [&, i](Result<HttpResponse> r) {
      if (in_send) problems.push_back(std::to_string(i) + ": completed inside Send");
      if (!loop().InLoopThread()) problems.push_back(std::to_string(i) + ": not on the loop");
      if (!r.ok()) {
        problems.push_back(std::to_string(i) + ": " + r.error().message);
      } else if (Json::parse(r->body)["order_id"] != std::to_string(1000 + i)) {
        problems.push_back(std::to_string(i) + ": wrong answer " + r->body);
      }
      if (i + 1 < kChain) {
        send_next(i + 1);  // From inside a completion callback.
      } else {
        finished.set_value();
      }
    });
    in_send = false;
  };
  loop().Post([&] { send_next(0); });  // The first from inside a loop task.
  ASSERT_EQ(finished.get_future().wait_for(kWaitLimit), std::future_status::ready);
  RunOnLoop([] {});  // `problems` is now safe to read here.
  EXPECT_TRUE(problems.empty()) << problems.size() << " problems, e.g. " << problems.front();
  EXPECT_EQ(client.ConnectionsOpened(), 1u);
  EXPECT_TRUE(testing::Eventually([&] { return client.InFlight() == 0; }));
}

TEST_F(HttpClientLoopTest, ManyConcurrentRequestsFromBothThreadsAllComplete) {
  HttpClient client(OnLoop());
  constexpr int kPerThread = 300;
  constexpr int kRequests = 2 * kPerThread;
  std::mutex mutex;
  std::vector<std::string> failures;
  std::atomic<int> done{0};
  std::promise<void> all_done;
  auto send = [&](int i) {
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
  };
  loop().Post([&] {
    for (int i = 0; i < kPerThread; ++i) send(i);
  });
  for (int i = kPerThread; i < kRequests; ++i) send(i);
  ASSERT_EQ(all_done.get_future().wait_for(kWaitLimit), std::future_status::ready)
      << done.load() << " of " << kRequests << " completed";
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, e.g. " << failures.front();
  EXPECT_TRUE(testing::Eventually([&] { return client.InFlight() == 0; }));
  EXPECT_GE(client.ConnectionsOpened(), 1u);
  EXPECT_LE(client.ConnectionsOpened(), 64u);  // max_connections_per_host.
}

TEST_F(HttpClientLoopTest, ConnectionsOpenedStaysAtTheConcurrencyAcrossRounds) {
  HttpClient client(OnLoop());
  constexpr int kConcurrent = 4;
  for (int round = 0; round < 10; ++round) {
    // Sent in one loop task, so libcurl starts them together: the first round opens one
    // connection per request (the per-host limit is far higher), later rounds reuse them all.
    // (/hang would not do: the fixture closes a delayed answer's connection.)
    std::atomic<int> ok{0};
    std::atomic<int> done{0};
    std::promise<void> round_done;
    RunOnLoop([&] {
      for (int i = 0; i < kConcurrent; ++i) {
        client.Send(Get("/api/orders/" + std::to_string(1000 + i)), [&](Result<HttpResponse> r) {
          if (r.ok() && r->status == 200) ok.fetch_add(1);
          if (done.fetch_add(1) + 1 == kConcurrent) round_done.set_value();
        });
      }
    });
    ASSERT_EQ(round_done.get_future().wait_for(kWaitLimit), std::future_status::ready);
    ASSERT_EQ(ok.load(), kConcurrent) << "round " << round;
    EXPECT_EQ(client.ConnectionsOpened(), static_cast<std::uint64_t>(kConcurrent))
        << "round " << round;
  }
}

TEST_F(HttpClientLoopTest, AnIdleConnectionClosedByTheServerDoesNotSpinTheLoop) {
  HttpClient client(OnLoop());
  std::atomic<std::uint64_t> iterations{0};
  RunOnLoop([&] { loop().AddPrepareHook([&] { iterations.fetch_add(1); }); });
  {
    testing::DemoApiServer own_server;  // Stopped, closing its connections, at the end of scope.
    HttpRequest request;
    request.url = own_server.Url("/health");
    // Chained from completion callbacks, as a busy worker sends them: libcurl then leaves the
    // connection's socket registered between transfers.
    std::promise<void> chain_done;
    int left = 5;
    std::function<void(Result<HttpResponse>)> next = [&](Result<HttpResponse> result) {
      if (!result.ok() || --left == 0) {
        chain_done.set_value();
      } else {
        client.Send(request, next);
      }
    };
    client.Send(request, next);
    ASSERT_EQ(chain_done.get_future().wait_for(kWaitLimit), std::future_status::ready);
    ASSERT_EQ(left, 0);
  }
  // The kept-alive connection is idle in libcurl's cache and its peer is gone: the socket reads
  // EOF. The loop must go back to sleep rather than report that readiness forever.
  // (libcurl unregisters an idle connection's socket; were it left watched, every iteration would
  // report it readable.) The sleep is an observation window, not a wait for readiness.
  Completion after_close(loop());
  RunOnLoop([] {});
  const std::uint64_t before = iterations.load();
  std::this_thread::sleep_for(milliseconds(300));
  const std::uint64_t woken = iterations.load() - before;
  EXPECT_LT(woken, 50u) << "the loop iterated " << woken << " times in 300 ms while idle";
  // The client still works (a new connection to the suite's server).
  client.Send(Get("/health"), after_close.Callback());
  ASSERT_TRUE(after_close.Wait().ok());
}

TEST_F(HttpClientLoopTest, ConnectionsClosedAfterEachAnswerAreReplacedEveryTime) {
  // /hang answers with Connection: close, so each request gets a new socket, usually with the
  // number of the one just closed; a socket number still registered for the old connection must
  // not leave the new one unwatched (that request would hang until its timeout).
  HttpClient client(OnLoop());
  constexpr int kRequests = 30;
  HttpRequest request = Get("/hang?ms=1");
  request.timeout = milliseconds(5000);
  std::promise<void> chain_done;
  int left = kRequests;
  int ok = 0;
  std::function<void(Result<HttpResponse>)> next = [&](Result<HttpResponse> result) {
    if (result.ok() && result->status == 200) ++ok;
    if (--left == 0) {
      chain_done.set_value();
    } else {
      client.Send(request, next);
    }
  };
  RunOnLoop([&] { client.Send(request, next); });
  ASSERT_EQ(chain_done.get_future().wait_for(kWaitLimit), std::future_status::ready);
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(client.ConnectionsOpened(), static_cast<std::uint64_t>(kRequests));
  // And a kept-alive connection still works after all those closes.
  Completion after(loop());
  client.Send(Get("/health"), after.Callback());
  auto last = after.Wait();
  ASSERT_TRUE(last.ok()) << last.error().message;
  EXPECT_EQ(last->status, 200);
}

TEST_F(HttpClientLoopTest, TimeoutOnTheCallersLoop) {
  HttpClient client(OnLoop());
  HttpRequest request = Get("/hang");
  request.timeout = milliseconds(300);
  Completion completion(loop());
  loop().Post([&] { client.Send(request, completion.Callback()); });
  auto result = completion.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUpstreamTimeout);
  EXPECT_NE(result.error().message.find("no answer within 300 ms"), std::string::npos)
      << result.error().message;
  EXPECT_TRUE(completion.on_loop_thread.load());
}

TEST_F(HttpClientLoopTest, CancelFromTheLoopThreadAndFromAForeignThread) {
  HttpClient client(OnLoop());
  HttpRequest request = Get("/hang");  // Answers after 10 minutes.
  request.timeout = milliseconds(60000);
  Completion from_loop(loop());
  Completion from_foreign(loop());
  const std::uint64_t base = ServerRequests();
  HttpRequestId first = 0;
  RunOnLoop([&] { first = client.Send(request, from_loop.Callback()); });
  const HttpRequestId second = client.Send(request, from_foreign.Callback());
  ASSERT_TRUE(WaitUntilServerReceived(base, 2));  // On the wire, not only queued.
  loop().Post([&] { client.Cancel(first); });
  client.Cancel(second);
  for (Completion* completion : {&from_loop, &from_foreign}) {
    auto result = completion->Wait();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code, ErrorCode::kCancelled) << result.error().message;
  }
  EXPECT_EQ(client.InFlight(), 0u);
  // A cancel before the request started also completes it exactly once.
  std::atomic<int> calls{0};
  Completion early(loop());
  RunOnLoop([&] {
    HttpRequestId id = client.Send(Get("/hang?ms=60000"), [&](Result<HttpResponse> result) {
      if (calls.fetch_add(1) == 0) early.promise.set_value(std::move(result));
    });
    client.Cancel(id);
  });
  auto result = early.Wait();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kCancelled);
  Completion after(loop());
  client.Send(Get("/health"), after.Callback());
  ASSERT_TRUE(after.Wait().ok());
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(HttpClientLoopTest, DestroyFromAForeignThreadCompletesEachPendingRequestOnce) {
  std::mutex mutex;
  std::vector<Error> errors;
  std::atomic<int> on_loop{0};
  auto record = [&](Result<HttpResponse> result) {
    if (loop().InLoopThread()) on_loop.fetch_add(1);
    std::lock_guard<std::mutex> lock(mutex);
    errors.push_back(result.ok() ? Error{ErrorCode::kInternal, "unexpected success"}
                                 : result.error());
  };
  auto client = std::make_unique<HttpClient>(OnLoop());
  const std::uint64_t base = ServerRequests();
  HttpRequest request = Get("/hang");
  request.timeout = milliseconds(60000);
  for (int i = 0; i < 5; ++i) client->Send(request, record);
  ASSERT_TRUE(WaitUntilServerReceived(base, 5));  // On the wire, not only queued.
  client->Send(request, record);                  // Maybe still queued.
  client.reset();
  {
    std::lock_guard<std::mutex> lock(mutex);
    ASSERT_EQ(errors.size(), 6u);
    for (const Error& error : errors) {
      EXPECT_EQ(error.code, ErrorCode::kUnavailable);
      EXPECT_EQ(error.message, "client shutting down");
    }
  }
  EXPECT_EQ(on_loop.load(), 6);
  // The loop goes on without the client: nothing of it runs any more, nothing completes twice.
  RunOnLoop([] {});
  RunOnLoop([] {});
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(errors.size(), 6u);
}

TEST_F(HttpClientLoopTest, DestroyOnTheLoopThreadWithCommandsStillQueued) {
  std::vector<Error> errors;  // Loop thread only.
  const std::uint64_t base = ServerRequests();
  auto client = std::make_unique<HttpClient>(OnLoop());
  HttpRequest request = Get("/hang");
  request.timeout = milliseconds(60000);
  auto record = [&](Result<HttpResponse> result) {
    errors.push_back(result.ok() ? Error{ErrorCode::kInternal, "unexpected success"}
                                 : result.error());
  };
  client->Send(request, record);
  ASSERT_TRUE(WaitUntilServerReceived(base, 1));
  RunOnLoop([&] {
    // Both are queued behind a task that runs after the client is gone.
    client->Send(request, record);
    client->Send(Get("/health"), record);
    client.reset();
    EXPECT_EQ(errors.size(), 3u);
  });
  RunOnLoop([] {});  // The stale drain task has run by now.
  ASSERT_EQ(errors.size(), 3u);
  for (const Error& error : errors) {
    EXPECT_EQ(error.code, ErrorCode::kUnavailable);
    EXPECT_EQ(error.message, "client shutting down");
  }
}

}  // namespace
}  // namespace wf
