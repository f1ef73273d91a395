#include <gtest/gtest.h>

#include "nats/connection.h"

namespace wf {
namespace {

TEST(RedactUrlCredentials, HidesUserPasswordAndTokens) {
  EXPECT_EQ(RedactUrlCredentials("nats://alice:s3cretPW@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222");
  EXPECT_EQ(RedactUrlCredentials("nats://s3cr3t-token@nats.internal"), "nats://***@nats.internal");
  EXPECT_EQ(RedactUrlCredentials("tls://u:p@a:1,nats://tok@b:2, nats://c:3"),
            "tls://***@a:1,nats://***@b:2, nats://c:3");
  // A password holding '/', ':' or '@' goes entirely.
  EXPECT_EQ(RedactUrlCredentials("nats://bob:pa/ss:w@rd@host:4222/x"), "nats://***@host:4222/x");
  // No scheme (nats.c accepts it).
  EXPECT_EQ(RedactUrlCredentials("alice:pw@host:4222"), "***@host:4222");
  // Inside a sentence.
  EXPECT_EQ(RedactUrlCredentials("cannot connect to NATS at nats://a:b@h:1: No server"),
            "cannot connect to NATS at nats://***@h:1: No server");
}

TEST(RedactUrlCredentials, LeavesUrlsWithoutCredentialsAlone) {
  for (const char* url : {"nats://127.0.0.1:4222", "nats://h:1,nats://g:2", "", "plain text",
                          "redis://host:6379/0"}) {
    EXPECT_EQ(RedactUrlCredentials(url), url);
  }
}

}  // namespace
}  // namespace wf
