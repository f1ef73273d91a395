#include "io/timer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

namespace wf {
namespace {

TEST(TimerThread, RunsTasksInDueOrder) {
  TimerThread timer;
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> all;
  std::atomic<int> n{0};
  auto add = [&](int v) {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(v);
    if (++n == 3) all.set_value();
  };
  timer.After(std::chrono::milliseconds(60), [&] { add(3); });
  timer.After(std::chrono::milliseconds(0), [&] { add(1); });
  timer.After(std::chrono::milliseconds(20), [&] { add(2); });
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(TimerThread, CancelledTaskNeverRuns) {
  TimerThread timer;
  std::atomic<bool> ran{false};
  const auto id = timer.After(std::chrono::milliseconds(50), [&] { ran = true; });
  EXPECT_TRUE(timer.Cancel(id));
  EXPECT_FALSE(timer.Cancel(id));
  std::promise<void> later;
  timer.After(std::chrono::milliseconds(100), [&] { later.set_value(); });
  ASSERT_EQ(later.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_FALSE(ran);
}

TEST(TimerThread, TaskMayScheduleAnother) {
  TimerThread timer;
  std::promise<void> done;
  timer.After(std::chrono::milliseconds(0), [&] {
    timer.After(std::chrono::milliseconds(1), [&] { done.set_value(); });
  });
  EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

}  // namespace
}  // namespace wf
