// RecentAnswers: what a lightweight worker keeps of the last event of each recent query, for a
// receiver that asks for it again (ReplayRequest).
#include "lightweight/recent_answers.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace wf {
namespace {

using std::chrono::milliseconds;
using Clock = RecentAnswers::Clock;

RecentAnswers::Answer MakeAnswer(const std::string& reply, std::size_t payload_size) {
  return RecentAnswers::Answer{reply, std::string(payload_size, 'x'), {{"Wf-Request-Id", reply}}};
}

TEST(RecentAnswersTest, KeepsTheLastEventOfEachQueryWithItsReplySubjectAndHeaders) {
  RecentAnswers recent({});
  const auto t0 = Clock::now();
  recent.Remember("q1", MakeAnswer("_INBOX.a.q1", 10), t0);
  recent.Remember("q2", MakeAnswer("_INBOX.a.q2", 20), t0);
  auto q1 = recent.Find("q1", t0);
  ASSERT_TRUE(q1.has_value());
  EXPECT_EQ(q1->reply, "_INBOX.a.q1");
  EXPECT_EQ(q1->payload, std::string(10, 'x'));
  ASSERT_EQ(q1->headers.size(), 1u);
  EXPECT_EQ(q1->headers[0].second, "_INBOX.a.q1");
  EXPECT_FALSE(recent.Find("q3", t0).has_value());
  // A later event of the same query replaces the first.
  recent.Remember("q1", MakeAnswer("_INBOX.b.q1", 30), t0 + milliseconds(5));
  EXPECT_EQ(recent.Find("q1", t0 + milliseconds(5))->reply, "_INBOX.b.q1");
  EXPECT_EQ(recent.stats().kept, 2u);
}

TEST(RecentAnswersTest, ForgetsAnEventOnceItIsOlderThanMaxAge) {
  RecentAnswers recent({.max_age = milliseconds(1000)});
  const auto t0 = Clock::now();
  recent.Remember("old", MakeAnswer("r.old", 10), t0);
  recent.Remember("young", MakeAnswer("r.young", 10), t0 + milliseconds(600));
  EXPECT_TRUE(recent.Find("old", t0 + milliseconds(1000)).has_value());
  EXPECT_FALSE(recent.Find("old", t0 + milliseconds(1001)).has_value());
  EXPECT_TRUE(recent.Find("young", t0 + milliseconds(1001)).has_value());
  EXPECT_EQ(recent.stats().kept, 1u);
  // A replaced event is aged from its replacement, not from the first.
  recent.Remember("young", MakeAnswer("r.young2", 10), t0 + milliseconds(1500));
  EXPECT_TRUE(recent.Find("young", t0 + milliseconds(2400)).has_value());
  EXPECT_FALSE(recent.Find("young", t0 + milliseconds(2501)).has_value());
  EXPECT_EQ(recent.stats().kept, 0u);
  EXPECT_EQ(recent.stats().bytes, 0u);
}

TEST(RecentAnswersTest, DropsTheOldestPastMaxBytes) {
  RecentAnswers recent({.max_bytes = 10000});
  const auto t0 = Clock::now();
  for (int i = 0; i < 10; ++i) {
    recent.Remember("q" + std::to_string(i), MakeAnswer("r", 1500), t0 + milliseconds(i));
  }
  const auto now = t0 + milliseconds(10);
  EXPECT_LE(recent.stats().bytes, 10000u);
  EXPECT_GE(recent.stats().kept, 5u);  // about 1,700 bytes each
  EXPECT_FALSE(recent.Find("q0", now).has_value());
  EXPECT_TRUE(recent.Find("q9", now).has_value());
  // Kept are the newest, in a row.
  bool seen_kept = false;
  for (int i = 0; i < 10; ++i) {
    const bool kept = recent.Find("q" + std::to_string(i), now).has_value();
    if (seen_kept) {
      EXPECT_TRUE(kept) << i;
    }
    seen_kept = seen_kept || kept;
  }
  // An event larger than the whole bound is not kept, and drops nothing else.
  const std::size_t kept = recent.stats().kept;
  recent.Remember("huge", MakeAnswer("r", 20000), now);
  EXPECT_FALSE(recent.Find("huge", now).has_value());
  EXPECT_EQ(recent.stats().kept, kept);
  EXPECT_TRUE(recent.Find("q9", now).has_value());
  // Nor does one that replaces a kept event: that event is no longer the query's last.
  recent.Remember("q9", MakeAnswer("r", 20000), now);
  EXPECT_FALSE(recent.Find("q9", now).has_value());
  EXPECT_EQ(recent.stats().kept, kept - 1);
}

// Replacing the same query's event over and over leaves old places in the queue: they count
// against the bound too, so they cannot grow without limit.
TEST(RecentAnswersTest, ReplacementsStayWithinTheBound) {
  RecentAnswers recent({.max_bytes = 10000});
  const auto t0 = Clock::now();
  for (int i = 0; i < 100000; ++i) recent.Remember("same", MakeAnswer("r", 10), t0);
  EXPECT_LE(recent.stats().bytes, 10000u);
  EXPECT_EQ(recent.stats().kept, 1u);
  EXPECT_TRUE(recent.Find("same", t0).has_value());
}

}  // namespace
}  // namespace wf
