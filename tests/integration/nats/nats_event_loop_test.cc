// A NatsConnection on a wf::EventLoop (nats.c event-loop mode) against a real nats-server:
// handlers run on the loop thread, publishes from the loop and from other threads both arrive,
// request-reply works, drains and unsubscribes are clean, and a server restart is survived.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "io/event_loop.h"
#include "nats/connection.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<NatsConnection> Connect(const testing::NatsServer& server, EventLoop* loop) {
  NatsOptions options;
  options.url = server.url();
  options.name = "nats-event-loop-test";
  options.loop = loop;
  auto conn = NatsConnection::Connect(options);
  EXPECT_TRUE(conn.ok()) << (conn.ok() ? "" : conn.error().message);
  return conn.ok() ? std::move(conn).value() : nullptr;
}

TEST(NatsEventLoopTest, HandlersRunOnTheLoopThreadAndRepliesFromThereArrive) {
  testing::NatsServer server;
  EventLoopThread loop("nats-loop");
  auto conn = Connect(server, &loop.loop());
  ASSERT_TRUE(conn);
  std::atomic<int> off_loop{0};
  // An echo service on the loop connection: its replies are published on the loop thread.
  auto sub = conn->Subscribe(
      "echo",
      [&](const NatsMsgView& msg) {
        if (!loop.loop().InLoopThread()) off_loop++;
        EXPECT_TRUE(conn->Publish(msg.reply(), std::string("re:") + std::string(msg.data())).ok());
      },
      "workers");
  ASSERT_TRUE(sub.ok());
  { auto flushed = conn->Flush(milliseconds(2000)); ASSERT_TRUE(flushed.ok()) << flushed.error().message << server.process().Log(); }
  // A plain (threaded) client asks: the request goes out and the reply comes back through the
  // loop connection both ways.
  NatsOptions plain_options;
  plain_options.url = server.url();
  auto plain = NatsConnection::Connect(plain_options);
  ASSERT_TRUE(plain.ok());
  for (int i = 0; i < 200; ++i) {
    auto reply = (*plain)->Request("echo", "m" + std::to_string(i), milliseconds(5000));
    ASSERT_TRUE(reply.ok()) << i << ": " << reply.error().message;
    EXPECT_EQ(*reply, "re:m" + std::to_string(i));
  }
  EXPECT_EQ(off_loop.load(), 0);
}

TEST(NatsEventLoopTest, PublishesFromManyThreadsAndBurstsAreAllDelivered) {
  testing::NatsServer server;
  EventLoopThread loop("nats-loop");
  auto conn = Connect(server, &loop.loop());
  ASSERT_TRUE(conn);
  std::mutex mu;
  std::set<std::string> seen;
  auto sub = conn->Subscribe("burst", [&](const NatsMsgView& msg) {
    std::lock_guard lock(mu);
    seen.insert(std::string(msg.data()));
  });
  ASSERT_TRUE(sub.ok());
  { auto flushed = conn->Flush(milliseconds(2000)); ASSERT_TRUE(flushed.ok()) << flushed.error().message << server.process().Log(); }
  constexpr int kThreads = 4, kPerThread = 5000;
  // Large payloads make the socket fill up, so partial writes and write interest get exercised.
  const std::string pad(2000, 'p');
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ASSERT_TRUE(conn->Publish("burst", std::to_string(t) + "-" + std::to_string(i) + pad).ok());
      }
    });
  }
  // And a burst from the loop thread itself (buffered, written before the loop sleeps).
  loop.loop().Post([&] {
    for (int i = 0; i < kPerThread; ++i) {
      EXPECT_TRUE(conn->Publish("burst", "loop-" + std::to_string(i) + pad).ok());
    }
  });
  for (auto& th : threads) th.join();
  {
    // The PONG queues behind ~50 MB the loop has to read and hand out first: generous, for
    // sanitizer builds (a plain build takes well under a second).
    auto flushed = conn->Flush(milliseconds(60000));
    ASSERT_TRUE(flushed.ok()) << flushed.error().message << "\nserver log:\n"
                              << server.process().Log();
  }
  EXPECT_TRUE(testing::Eventually([&] {
    std::lock_guard lock(mu);
    return seen.size() == static_cast<size_t>((kThreads + 1) * kPerThread);
  }, milliseconds(60000))) << [&] {
    std::lock_guard lock(mu);
    return std::to_string(seen.size()) + " of " + std::to_string((kThreads + 1) * kPerThread) +
           " delivered; server log:\n" + server.process().Log();
  }();
}

TEST(NatsEventLoopTest, DrainHandlesQueuedMessagesAndUnsubscribeStopsDelivery) {
  testing::NatsServer server;
  EventLoopThread loop("nats-loop");
  auto conn = Connect(server, &loop.loop());
  ASSERT_TRUE(conn);
  std::atomic<int> handled{0};
  auto sub = conn->Subscribe("drain.me", [&](const NatsMsgView&) { handled++; });
  ASSERT_TRUE(sub.ok());
  constexpr int kMessages = 500;
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(conn->Publish("drain.me", "x").ok());
  { auto flushed = conn->Flush(milliseconds(2000)); ASSERT_TRUE(flushed.ok()) << flushed.error().message << server.process().Log(); }
  sub->Drain(milliseconds(10000));
  EXPECT_EQ(handled.load(), kMessages);
  EXPECT_FALSE(sub->valid());

  std::atomic<int> after{0};
  auto other = conn->Subscribe("gone", [&](const NatsMsgView&) { after++; });
  ASSERT_TRUE(other.ok());
  other->Unsubscribe();
  ASSERT_TRUE(conn->Publish("gone", "x").ok());
  { auto flushed = conn->Flush(milliseconds(2000)); ASSERT_TRUE(flushed.ok()) << flushed.error().message << server.process().Log(); }
  EXPECT_EQ(after.load(), 0);
}

TEST(NatsEventLoopTest, SurvivesAServerRestart) {
  testing::NatsServer server;
  EventLoopThread loop("nats-loop");
  auto conn = Connect(server, &loop.loop());
  ASSERT_TRUE(conn);
  std::atomic<int> handled{0};
  auto sub = conn->Subscribe("after.restart", [&](const NatsMsgView&) { handled++; });
  ASSERT_TRUE(sub.ok());
  server.Restart();
  ASSERT_TRUE(testing::Eventually([&] { return conn->Connected(); }));
  // The subscription is re-sent on reconnect and delivered on the loop again.
  ASSERT_TRUE(testing::Eventually([&] {
    (void)conn->Publish("after.restart", "x");
    (void)conn->Flush(milliseconds(500));
    return handled.load() > 0;
  }));
}

}  // namespace
}  // namespace wf
