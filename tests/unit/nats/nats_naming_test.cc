#include <gtest/gtest.h>

#include "nats/connection.h"
#include "nats/jetstream.h"

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
  // A query may hold a secret too; an '@' in it is not user info.
  EXPECT_EQ(RedactUrlCredentials("nats://h:4222?token=s3cr3t"), "nats://h:4222?***");
  EXPECT_EQ(RedactUrlCredentials("nats://u:p@h:1/?password=x@y, nats://g:2"),
            "nats://***@h:1/?***, nats://g:2");
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

TEST(JetStreamName, DefaultPrefixKeepsTheContractNames) {
  EXPECT_EQ(HeavyStreamName("wf"), "WF_HEAVY");
  EXPECT_EQ(HistoryStreamName("wf"), "WF_HISTORY");
}

TEST(JetStreamName, OtherPrefixesGetTheirOwnStreams) {
  EXPECT_EQ(HeavyStreamName("t2"), "T2_HEAVY");
  EXPECT_EQ(HistoryStreamName("t2"), "T2_HISTORY");
  EXPECT_EQ(HeavyStreamName("acme-prod_1"), "ACME-PROD_1_HEAVY");
  // Characters a stream name may not hold become '_'.
  EXPECT_EQ(JetStreamName("a.b*c>d e/f", "HEAVY"), "A_B_C_D_E_F_HEAVY");
}

}  // namespace
}  // namespace wf
