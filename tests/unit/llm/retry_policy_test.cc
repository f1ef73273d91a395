#include "llm/retry_policy.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(RetryPolicy, RetryableStatuses) {
  EXPECT_TRUE(IsRetryableHttpStatus(429));
  EXPECT_TRUE(IsRetryableHttpStatus(500));
  EXPECT_TRUE(IsRetryableHttpStatus(503));
  EXPECT_TRUE(IsRetryableHttpStatus(408));
  EXPECT_FALSE(IsRetryableHttpStatus(400));
  EXPECT_FALSE(IsRetryableHttpStatus(401));
  EXPECT_FALSE(IsRetryableHttpStatus(404));
}

TEST(RetryPolicy, ExponentialWithJitterAndCap) {
  RetryPolicy p{6, milliseconds(100), milliseconds(500)};
  const auto now = Clock::now();
  const auto never = Clock::time_point::max();
  EXPECT_EQ(NextRetryDelay(p, 1, std::nullopt, now, never, 0.0), milliseconds(50));
  EXPECT_EQ(NextRetryDelay(p, 1, std::nullopt, now, never, 1.0), milliseconds(100));
  EXPECT_EQ(NextRetryDelay(p, 2, std::nullopt, now, never, 1.0), milliseconds(200));
  EXPECT_EQ(NextRetryDelay(p, 3, std::nullopt, now, never, 1.0), milliseconds(400));
  EXPECT_EQ(NextRetryDelay(p, 4, std::nullopt, now, never, 1.0), milliseconds(500));
  EXPECT_EQ(NextRetryDelay(p, 5, std::nullopt, now, never, 0.0), milliseconds(250));
  EXPECT_EQ(NextRetryDelay(p, 6, std::nullopt, now, never, 0.0), std::nullopt);  // no attempt left
}

TEST(RetryPolicy, RetryAfterRaisesTheDelay) {
  RetryPolicy p{4, milliseconds(100), milliseconds(1000)};
  const auto now = Clock::now();
  EXPECT_EQ(NextRetryDelay(p, 1, milliseconds(2000), now, Clock::time_point::max(), 0.5),
            milliseconds(2000));
  EXPECT_EQ(NextRetryDelay(p, 1, milliseconds(1), now, Clock::time_point::max(), 1.0),
            milliseconds(100));
}

TEST(RetryPolicy, NeverPastTheDeadline) {
  RetryPolicy p{4, milliseconds(100), milliseconds(1000)};
  const auto now = Clock::now();
  EXPECT_EQ(NextRetryDelay(p, 1, std::nullopt, now, now + milliseconds(80), 1.0), std::nullopt);
  EXPECT_EQ(NextRetryDelay(p, 1, milliseconds(5000), now, now + milliseconds(3000), 0.0),
            std::nullopt);
  EXPECT_EQ(NextRetryDelay(p, 1, std::nullopt, now, now + milliseconds(3000), 1.0),
            milliseconds(100));
}

TEST(RetryPolicy, ParseRetryAfter) {
  const auto now = std::chrono::system_clock::from_time_t(1445412480);  // 2015-10-21 07:28:00
  EXPECT_EQ(ParseRetryAfter("2", now), milliseconds(2000));
  EXPECT_EQ(ParseRetryAfter(" 0 ", now), milliseconds(0));
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:28:30 GMT", now), milliseconds(30000));
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:00:00 GMT", now), milliseconds(0));
  EXPECT_EQ(ParseRetryAfter("", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("soon", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("1.5", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("99999999999999999999", now), std::chrono::hours(24 * 365));
}

}  // namespace
}  // namespace wf
