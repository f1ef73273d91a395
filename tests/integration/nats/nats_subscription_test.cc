// NatsSubscription's drain and unsubscribe against a real nats-server: queued messages are
// handled, a running handler is never freed under itself, and a drain without a server does not
// wait for a server that is gone.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "nats/connection.h"
#include "support/test_support.h"

namespace wf {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::unique_ptr<NatsConnection> Connect(const testing::NatsServer& server) {
  NatsOptions options;
  options.url = server.url();
  options.name = "nats-wrapper-test";
  auto conn = NatsConnection::Connect(options);
  EXPECT_TRUE(conn.ok()) << (conn.ok() ? "" : conn.error().message);
  return conn.ok() ? std::move(conn).value() : nullptr;
}

TEST(NatsSubscriptionTest, DrainHandlesEveryQueuedMessage) {
  testing::NatsServer server;
  auto conn = Connect(server);
  ASSERT_TRUE(conn);
  std::atomic<int> handled{0};
  auto sub = conn->Subscribe("drain.me", [&](const NatsMsgView&) {
    std::this_thread::sleep_for(milliseconds(5));
    handled.fetch_add(1);
  });
  ASSERT_TRUE(sub.ok());
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(conn->Publish("drain.me", "x").ok());
  ASSERT_TRUE(conn->Flush(milliseconds(2000)).ok());
  sub->Drain(milliseconds(30000));
  EXPECT_EQ(handled.load(), kMessages);
  EXPECT_FALSE(sub->valid());
}

TEST(NatsSubscriptionTest, UnsubscribeWaitsForTheRunningHandler) {
  testing::NatsServer server;
  auto conn = Connect(server);
  ASSERT_TRUE(conn);
  std::atomic<bool> started{false}, finished{false};
  auto sub = conn->Subscribe("slow", [&](const NatsMsgView&) {
    started = true;
    std::this_thread::sleep_for(milliseconds(300));
    finished = true;
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(conn->Publish("slow", "x").ok());
  ASSERT_TRUE(testing::Eventually([&] { return started.load(); }));
  sub->Unsubscribe();
  // The handler box (and whatever the handler captured) may be freed now: it must have returned.
  EXPECT_TRUE(finished.load());
}

TEST(NatsSubscriptionTest, DrainWithoutAServerDoesNotWaitForIt) {
  std::optional<testing::NatsServer> server;
  server.emplace();
  auto conn = Connect(*server);
  ASSERT_TRUE(conn);
  std::vector<NatsSubscription> subs;
  for (int i = 0; i < 5; ++i) {
    auto sub = conn->Subscribe("gone." + std::to_string(i), [](const NatsMsgView&) {});
    ASSERT_TRUE(sub.ok());
    subs.push_back(std::move(sub).value());
  }
  server.reset();  // the server dies first, as in a cluster-wide outage
  ASSERT_TRUE(testing::Eventually([&] { return !conn->Connected(); }));
  // Five drains with a one-minute budget each: without a server none can complete, so each must
  // give up at once instead of spending its budget (a worker's shutdown once took 27 s this way).
  auto start = Clock::now();
  for (auto& sub : subs) sub.Drain(milliseconds(60000));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
  for (auto& sub : subs) EXPECT_FALSE(sub.valid());
}

}  // namespace
}  // namespace wf
