#include "gateway/ids.h"

#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace wf {
namespace {

TEST(SessionId, Validation) {
  EXPECT_TRUE(IsValidSessionId("a"));
  EXPECT_TRUE(IsValidSessionId("user-1:chat.2_x"));
  EXPECT_TRUE(IsValidSessionId(std::string(128, 'z')));
  EXPECT_FALSE(IsValidSessionId(""));
  EXPECT_FALSE(IsValidSessionId(std::string(129, 'z')));
  for (const char* bad : {"a b", "a/b", "a%20", "é", "a*", "a>", "a\n", "a?b", "a#"}) {
    EXPECT_FALSE(IsValidSessionId(bad)) << bad;
  }
}

TEST(RequestId, ShapeAndUniquenessAcrossThreads) {
  RequestIdGenerator gen;
  std::mutex mu;
  std::set<std::string> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<std::string> mine;
      for (int i = 0; i < 20000; ++i) mine.push_back(gen.Next());
      std::lock_guard lock(mu);
      seen.insert(mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen.size(), 80000u);
  for (const auto& id : seen) {
    ASSERT_EQ(id.size(), 15u);
    for (char c : id) ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << id;
  }
  // Two generators (two processes) do not share a prefix (with overwhelming probability).
  RequestIdGenerator other;
  EXPECT_NE(gen.Next().substr(0, 8), other.Next().substr(0, 8));
}

constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(Traceparent, ParsesTheSpecExample) {
  auto context = ParseTraceparent(kValid);
  ASSERT_TRUE(context);
  EXPECT_EQ(context->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(context->parent_id, "00f067aa0ba902b7");
  EXPECT_EQ(context->flags, 1);
  EXPECT_EQ(FormatTraceparent(*context), kValid);
}

TEST(Traceparent, RejectsMalformed) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",           // no flags
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",        // upper case
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        // zero parent id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  // v00 + extra
           "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",        // separators
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",        // not hex
           "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(ParseTraceparent(bad)) << bad;
  }
}

TEST(Traceparent, AcceptsHigherVersionsWithExtraFields) {
  auto context = ParseTraceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what");
  ASSERT_TRUE(context);
  EXPECT_EQ(TraceparentFor("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"), kValid);
}

TEST(Traceparent, PropagatesValidAndReplacesInvalid) {
  EXPECT_EQ(TraceparentFor(kValid), kValid);
  for (const char* client :
       {"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}) {
    std::string generated = TraceparentFor(client);
    auto context = ParseTraceparent(generated);
    ASSERT_TRUE(context) << generated;
    EXPECT_EQ(context->flags, 1);
  }
  EXPECT_NE(NewTraceparent(), NewTraceparent());
}

}  // namespace
}  // namespace wf
