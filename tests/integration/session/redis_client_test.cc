// RedisConnection and RedisPool against a real redis-server.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "redis/redis_connection.h"
#include "redis/redis_pool.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;

RedisEndpoint Endpoint(int port) {
  RedisEndpoint endpoint;
  endpoint.host = "127.0.0.1";
  endpoint.port = port;
  return endpoint;
}

/// redis-server with extra arguments on a fixed port (for restarts and requirepass).
std::unique_ptr<testing::Process> StartRedis(int port, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--port", std::to_string(port), "--bind", "127.0.0.1", "--save",
                                   "",       "--appendonly",       "no"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto process = std::make_unique<testing::Process>("redis-server", args);
  EXPECT_TRUE(testing::WaitForTcpPort(port, milliseconds(15000))) << process->Log();
  return process;
}

TEST(RedisConnectionTest, BinarySafeCommands) {
  testing::RedisServer server;
  auto connection = RedisConnection::Connect(Endpoint(server.port()), {});
  ASSERT_TRUE(connection.ok()) << connection.error().message;
  const std::string value("a\0b\r\n\xFF", 6);
  auto set = connection->Command({"SET", "k", value});
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->type, RedisReply::Type::kStatus);
  auto get = connection->Command({"GET", "k"});
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->type, RedisReply::Type::kString);
  EXPECT_EQ(get->str, value);
  auto missing = connection->Command({"GET", "nope"});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->IsNil());
  auto wrong = connection->Command({"LPUSH", "k", "x"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, ErrorCode::kInternal);
  EXPECT_NE(wrong.error().message.find("WRONGTYPE"), std::string::npos);
  // A server error leaves the connection usable.
  EXPECT_TRUE(connection->Command({"PING"}).ok());
}

TEST(RedisConnectionTest, PipelineReturnsEveryReplyInOrder) {
  testing::RedisServer server;
  RedisConnection connection(Endpoint(server.port()), {});
  std::vector<std::vector<std::string>> commands;
  for (int i = 0; i < 100; ++i) commands.push_back({"RPUSH", "list", std::to_string(i)});
  commands.push_back({"LRANGE", "list", "0", "-1"});
  commands.push_back({"INCR", "list"});  // WRONGTYPE: an error element, not a failure.
  auto replies = connection.Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  ASSERT_EQ(replies->size(), 102u);
  EXPECT_EQ((*replies)[99].integer, 100);
  ASSERT_EQ((*replies)[100].elements.size(), 100u);
  EXPECT_EQ((*replies)[100].elements[42].str, "42");
  EXPECT_TRUE((*replies)[101].IsError());
}

TEST(RedisConnectionTest, CommandWhileRunsTheCommandWhileTheCallerWorks) {
  testing::RedisServer server;
  RedisConnection connection(Endpoint(server.port()), {});
  RedisConnection observer(Endpoint(server.port()), {});
  // The command is on the server before `meanwhile` starts: another connection sees its effect
  // from inside `meanwhile`, before the reply is read.
  int runs = 0;
  bool seen_meanwhile = false;
  const std::function<void()> meanwhile = [&] {
    ++runs;
    seen_meanwhile = testing::Eventually([&] {
      auto value = observer.Command({"GET", "while-key"});
      return value.ok() && value->str == "set";
    });
  };
  const std::string_view set[] = {"SET", "while-key", "set"};
  auto reply = connection.CommandWhile(set, meanwhile);
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ(reply->str, "OK");
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(seen_meanwhile);
  // The connection carries on with ordinary commands (no reply left unread).
  auto get = connection.Command({"GET", "while-key"});
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->str, "set");

  // Server errors are errors, as with Command; `meanwhile` still runs once.
  const std::string_view wrong[] = {"INCR", "while-key"};
  auto refused = connection.CommandWhile(wrong, meanwhile);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kInternal);
  EXPECT_EQ(runs, 2);
  // So do an empty command and an unreachable server.
  auto empty = connection.CommandWhile({}, [&] { ++runs; });
  EXPECT_EQ(empty.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(runs, 3);
  RedisConnection dead(Endpoint(testing::FreePort()), {});
  const std::string_view ping[] = {"PING"};
  auto unreachable = dead.CommandWhile(ping, [&] { ++runs; });
  EXPECT_EQ(unreachable.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(runs, 4);
}

TEST(RedisConnectionTest, UnreachableServerIsUnavailable) {
  const int port = testing::FreePort();
  auto connection = RedisConnection::Connect(Endpoint(port), {});
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.error().code, ErrorCode::kUnavailable);
}

TEST(RedisConnectionTest, ReconnectsAfterServerRestart) {
  const int port = testing::FreePort();
  auto server = StartRedis(port);
  RedisConnection connection(Endpoint(port), {});
  ASSERT_TRUE(connection.Command({"SET", "a", "1"}).ok());
  server.reset();  // Stops it.
  auto failed = connection.Command({"GET", "a"});
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, ErrorCode::kUnavailable);
  EXPECT_FALSE(connection.connected());
  server = StartRedis(port);
  // Within the reconnect backoff the connection answers fast; then it reconnects.
  EXPECT_TRUE(testing::Eventually([&] { return connection.Command({"PING"}).ok(); }));
  EXPECT_TRUE(connection.connected());
}

TEST(RedisConnectionTest, AuthAndDatabaseFromUrl) {
  const int port = testing::FreePort();
  const std::string secret = "Pw-9f8e7d6c";
  auto server = StartRedis(port, {"--requirepass", secret});

  auto endpoint = ParseRedisUrl("redis://:" + secret + "@127.0.0.1:" + std::to_string(port) + "/3");
  ASSERT_TRUE(endpoint.ok());
  auto connection = RedisConnection::Connect(*endpoint, {});
  ASSERT_TRUE(connection.ok()) << connection.error().message;
  ASSERT_TRUE(connection->Command({"SET", "in-db-3", "x"}).ok());
  auto db = connection->Command({"CLIENT", "INFO"});
  ASSERT_TRUE(db.ok());
  EXPECT_NE(db->str.find("db=3"), std::string::npos) << db->str;

  auto wrong = ParseRedisUrl("redis://:wrong-" + secret + "@127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(wrong.ok());
  auto refused = RedisConnection::Connect(*wrong, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(refused.error().message.find(secret), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("AUTH"), std::string::npos) << refused.error().message;

  auto none = RedisConnection::Connect(Endpoint(port), {});
  ASSERT_TRUE(none.ok());  // Connecting works; commands are refused.
  auto denied = none->Command({"GET", "x"});
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.error().message.find("NOAUTH"), std::string::npos);
}

TEST(RedisConnectionTest, CommandTimeoutIsUnavailable) {
  testing::RedisServer server;
  RedisOptions options;
  options.command_timeout = milliseconds(200);
  RedisConnection connection(Endpoint(server.port()), options);
  // The server blocks on BLPOP for 5 s; the client gives up after its timeout.
  auto blocked = connection.Command({"BLPOP", "never", "5"});
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(testing::Eventually([&] { return connection.Command({"PING"}).ok(); }));
}

TEST(RedisPoolTest, SharedByThreads) {
  testing::RedisServer server;
  RedisPoolOptions options;
  options.size = 4;
  auto pool = RedisPool::Connect(server.url(), options);
  ASSERT_TRUE(pool.ok()) << pool.error().message;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto lease = (*pool)->Borrow();
        if (!lease || !(*lease)->Command({"INCR", "counter"}).ok()) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  auto lease = (*pool)->Borrow();
  ASSERT_TRUE(lease.ok());
  auto counter = (*lease)->Command({"GET", "counter"});
  ASSERT_TRUE(counter.ok());
  EXPECT_EQ(counter->str, "1600");
}

TEST(RedisPoolTest, AfterARestartOneFailureRefreshesEveryConnection) {
  const int port = testing::FreePort();
  auto server = StartRedis(port);
  RedisPoolOptions options;
  options.size = 4;
  auto pool = RedisPool::Connect("redis://127.0.0.1:" + std::to_string(port), options);
  ASSERT_TRUE(pool.ok()) << pool.error().message;
  {
    // Open all four.
    std::vector<RedisPool::Lease> leases;
    for (int i = 0; i < 4; ++i) {
      auto lease = (*pool)->Borrow();
      ASSERT_TRUE(lease.ok());
      ASSERT_TRUE((*lease)->Command({"PING"}).ok());
      leases.push_back(std::move(*lease));
    }
  }
  server.reset();
  server = StartRedis(port);
  {
    auto lease = (*pool)->Borrow();
    ASSERT_TRUE(lease.ok());
    EXPECT_FALSE((*lease)->Command({"PING"}).ok());  // The stale socket.
  }
  // Every connection was closed with the failed one: the next four all work at once.
  std::vector<RedisPool::Lease> leases;
  for (int i = 0; i < 4; ++i) {
    auto lease = (*pool)->Borrow();
    ASSERT_TRUE(lease.ok());
    auto pong = (*lease)->Command({"PING"});
    EXPECT_TRUE(pong.ok()) << i << ": " << pong.error().message;
    leases.push_back(std::move(*lease));
  }
}

TEST(RedisPoolTest, BorrowTimesOutWhenAllAreLent) {
  testing::RedisServer server;
  RedisPoolOptions options;
  options.size = 1;
  options.borrow_timeout = milliseconds(50);
  auto pool = RedisPool::Connect(server.url(), options);
  ASSERT_TRUE(pool.ok());
  {
    auto held = (*pool)->Borrow();
    ASSERT_TRUE(held.ok());
    auto second = (*pool)->Borrow();
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
  }
  EXPECT_TRUE((*pool)->Borrow().ok());
}

TEST(RedisPoolTest, ConnectFailsFastOnBadUrlOrDeadServer) {
  auto bad = RedisPool::Connect("redis://:s3cr3t@host:port", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(bad.error().message.find("s3cr3t"), std::string::npos);
  auto dead =
      RedisPool::Connect("redis://:s3cr3t@127.0.0.1:" + std::to_string(testing::FreePort()), {});
  ASSERT_FALSE(dead.ok());
  EXPECT_EQ(dead.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(dead.error().message.find("s3cr3t"), std::string::npos) << dead.error().message;
}

}  // namespace
}  // namespace wf
