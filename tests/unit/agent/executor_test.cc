#include "agent/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace wf {
namespace {

TEST(ThreadPoolExecutor, RunsEveryTaskAndDrainsOnDestruction) {
  std::atomic<int> n{0};
  {
    ThreadPoolExecutor pool(3);
    for (int i = 0; i < 1000; ++i) pool.Post([&] { ++n; });
    pool.Post([] { throw std::runtime_error("boom"); });  // logged, not fatal
  }
  EXPECT_EQ(n.load(), 1000);
}

TEST(ThreadPoolExecutor, TasksMayPostTasks) {
  ThreadPoolExecutor pool(2);
  std::promise<void> done;
  pool.Post([&] { pool.Post([&] { done.set_value(); }); });
  EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

TEST(ManualExecutor, RunsOnlyWhenAsked) {
  ManualExecutor ex;
  int n = 0;
  ex.Post([&] {
    ++n;
    ex.Post([&] { ++n; });
  });
  EXPECT_EQ(n, 0);
  EXPECT_EQ(ex.RunPending(), 1u);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(ex.Pending(), 1u);
  EXPECT_EQ(ex.RunUntilIdle(), 1u);
  EXPECT_EQ(n, 2);
}

}  // namespace
}  // namespace wf
