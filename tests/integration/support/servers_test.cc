#include <gtest/gtest.h>

#include "support/test_support.h"

namespace wf::testing {
namespace {

TEST(TestSupportTest, StartsRealServersOnFreePorts) {
  NatsServer nats;
  RedisServer redis;
  PostgresServer pg;
  EXPECT_TRUE(WaitForTcpPort(nats.port(), std::chrono::milliseconds(1000)));
  EXPECT_TRUE(WaitForTcpPort(redis.port(), std::chrono::milliseconds(1000)));
  EXPECT_TRUE(WaitForTcpPort(pg.port(), std::chrono::milliseconds(1000)));
  EXPECT_NE(nats.port(), redis.port());
}

TEST(TestSupportTest, ProcessCapturesOutputAndExitCode) {
  Process p("/bin/sh", {"-c", "echo hello; exit 3"});
  auto code = p.Wait(std::chrono::milliseconds(5000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 3);
  EXPECT_NE(p.Log().find("hello"), std::string::npos);
}

TEST(TestSupportTest, DestructorStopsAChildThatIgnoresNothing) {
  pid_t pid;
  {
    Process p("/bin/sleep", {"60"});
    pid = p.pid();
    EXPECT_TRUE(p.Running());
  }
  EXPECT_NE(::kill(pid, 0), 0);
}

}  // namespace
}  // namespace wf::testing
