#include "gateway/write_backlog.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace wf {
namespace {

TEST(WriteBacklog, AcceptsUpToTheLimitThenOverflowsForGood) {
  auto totals = std::make_shared<WriteBacklogTotals>();
  WriteBacklog backlog(1000, totals);
  EXPECT_TRUE(backlog.Reserve(600));
  EXPECT_TRUE(backlog.Reserve(400));  // exactly the limit
  EXPECT_EQ(backlog.bytes(), 1000u);
  EXPECT_EQ(totals->queued_bytes.load(), 1000);
  EXPECT_FALSE(backlog.Reserve(1));
  EXPECT_TRUE(backlog.overflowed());
  EXPECT_EQ(backlog.bytes(), 1000u);  // nothing counted for the refused write
  EXPECT_EQ(totals->overflows.load(), 1u);
  // Written bytes leave, but an overflowed backlog takes nothing more (the connection is being
  // dropped) and counts its overflow once.
  backlog.Release(1000);
  EXPECT_EQ(backlog.bytes(), 0u);
  EXPECT_FALSE(backlog.Reserve(1));
  EXPECT_EQ(totals->overflows.load(), 1u);
  EXPECT_EQ(totals->queued_bytes.load(), 0);
}

TEST(WriteBacklog, AWriteThatFindsItEmptyIsAcceptedWhateverItsSize) {
  auto totals = std::make_shared<WriteBacklogTotals>();
  WriteBacklog backlog(1000, totals);
  EXPECT_TRUE(backlog.Reserve(5000));  // one answer larger than the limit
  EXPECT_FALSE(backlog.overflowed());
  EXPECT_FALSE(backlog.Reserve(1));  // but nothing behind it
  EXPECT_TRUE(backlog.overflowed());
}

TEST(WriteBacklog, ReleasedBytesMakeRoom) {
  WriteBacklog backlog(1000, nullptr);  // totals are optional
  EXPECT_TRUE(backlog.Reserve(900));
  backlog.Release(500);
  EXPECT_TRUE(backlog.Reserve(600));
  EXPECT_EQ(backlog.bytes(), 1000u);
  EXPECT_FALSE(backlog.overflowed());
}

TEST(WriteBacklog, HugeWritesDoNotWrapAround) {
  WriteBacklog backlog(1000, nullptr);
  EXPECT_TRUE(backlog.Reserve(10));
  EXPECT_FALSE(backlog.Reserve(static_cast<std::size_t>(-1)));
  EXPECT_EQ(backlog.bytes(), 10u);
}

// Pistache destroys the writes it never made when the peer closes: the bytes still counted
// leave the totals with the backlog.
TEST(WriteBacklog, DestructionTakesWhatIsLeftFromTheTotals) {
  auto totals = std::make_shared<WriteBacklogTotals>();
  {
    WriteBacklog a(1000, totals);
    WriteBacklog b(1000, totals);
    EXPECT_TRUE(a.Reserve(300));
    EXPECT_TRUE(b.Reserve(200));
    b.Release(50);
    EXPECT_EQ(totals->queued_bytes.load(), 450);
  }
  EXPECT_EQ(totals->queued_bytes.load(), 0);
}

// One writer thread, one releasing thread (the transport's): the counts stay exact.
TEST(WriteBacklog, ConcurrentReserveAndRelease) {
  auto totals = std::make_shared<WriteBacklogTotals>();
  WriteBacklog backlog(std::size_t{1} << 30, totals);
  constexpr int kWrites = 100000;
  std::atomic<int> reserved{0};
  std::thread writer([&] {
    for (int i = 0; i < kWrites; ++i) {
      ASSERT_TRUE(backlog.Reserve(7));
      reserved.fetch_add(1, std::memory_order_release);
    }
  });
  int released = 0;
  while (released < kWrites) {
    if (released < reserved.load(std::memory_order_acquire)) {
      backlog.Release(7);
      ++released;
    }
  }
  writer.join();
  EXPECT_EQ(backlog.bytes(), 0u);
  EXPECT_EQ(totals->queued_bytes.load(), 0);
  EXPECT_FALSE(backlog.overflowed());
}

}  // namespace
}  // namespace wf
