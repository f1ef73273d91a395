#include "io/event_loop.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <string>
#include <vector>

namespace wf {
namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    if (r >= 0) close(r);
    if (w >= 0) close(w);
  }
};

TEST(EventLoopTest, PostedTasksRunInOrderOnTheLoopThread) {
  EventLoopThread thread("test-loop");
  std::promise<std::vector<int>> done;
  auto order = std::make_shared<std::vector<int>>();
  for (int i = 0; i < 100; ++i) {
    thread.loop().Post([&, order, i] {
      EXPECT_TRUE(thread.loop().InLoopThread());
      order->push_back(i);
      if (i == 99) done.set_value(*order);
    });
  }
  auto got = done.get_future().get();
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], i);
  EXPECT_FALSE(thread.loop().InLoopThread());
}

TEST(EventLoopTest, TasksPostedBeforeStopStillRun) {
  std::atomic<int> ran{0};
  {
    EventLoopThread thread("test-loop");
    for (int i = 0; i < 10; ++i) thread.loop().Post([&] { ran++; });
  }
  EXPECT_EQ(ran.load(), 10);
}

TEST(EventLoopTest, WatchReportsReadableFdAndUnwatchStopsIt) {
  EventLoop loop;
  Pipe p;
  std::string got;
  int calls = 0;
  ASSERT_TRUE(loop.Watch(p.r, kIoRead, [&](uint32_t events) {
                    ++calls;
                    EXPECT_TRUE(events & kIoRead);
                    char buf[16];
                    ssize_t n = read(p.r, buf, sizeof buf);
                    got.append(buf, n > 0 ? n : 0);
                    if (got == "hello") {
                      loop.Unwatch(p.r);
                      loop.Stop();
                    }
                  }).ok());
  EXPECT_FALSE(loop.Watch(p.r, kIoRead, [](uint32_t) {}).ok()) << "one watcher per fd";
  ASSERT_EQ(write(p.w, "hello", 5), 5);
  loop.Run();
  EXPECT_EQ(got, "hello");
  EXPECT_GE(calls, 1);
}

// nats.c closes its socket on its own thread and only then tells the loop; meanwhile another
// watcher on the loop may get the same descriptor number. The new watcher must get its events,
// and the late owner's Modify/Unwatch (with its token) must not touch the new registration.
TEST(EventLoopTest, ClosedDescriptorReusedByAnotherWatcher) {
  EventLoop loop;
  Pipe a;
  int stale_calls = 0;
  ASSERT_TRUE(loop.Watch(a.r, kIoRead, [&](uint32_t) { ++stale_calls; }).ok());
  const int number = a.r;
  const uint32_t stale_token = loop.WatchToken(number);
  ASSERT_NE(stale_token, 0u);
  // Closed behind the loop's back; a new pipe's read end takes the same number.
  Pipe b;
  ASSERT_EQ(dup2(b.r, number), number);
  close(b.r);
  b.r = -1;
  a.r = -1;  // `number` is b's read end now, closed by the test below

  std::string got;
  ASSERT_TRUE(loop.Watch(number, kIoRead, [&](uint32_t) {
                    char buf[16];
                    ssize_t n = read(number, buf, sizeof buf);
                    got.append(buf, n > 0 ? n : 0);
                    loop.Stop();
                  }).ok())
      << "the kernel no longer knew the old descriptor: its registration was stale";
  const uint32_t token = loop.WatchToken(number);
  EXPECT_NE(token, stale_token);
  // The late owner cleans up with its token: the new registration stays.
  EXPECT_FALSE(loop.Modify(number, kIoWrite, stale_token).ok());
  loop.Unwatch(number, stale_token);
  EXPECT_EQ(loop.WatchToken(number), token);
  EXPECT_FALSE(loop.Watch(number, kIoRead, [](uint32_t) {}).ok()) << "a live one is not replaced";

  ASSERT_EQ(write(b.w, "new", 3), 3);
  loop.Run();
  EXPECT_EQ(got, "new");
  EXPECT_EQ(stale_calls, 0);
  loop.Unwatch(number, token);
  EXPECT_EQ(loop.WatchToken(number), 0u);
  close(number);
}

TEST(EventLoopTest, ModifySwitchesToWriteInterest) {
  EventLoop loop;
  Pipe p;
  int writable = 0;
  ASSERT_TRUE(loop.Watch(p.w, 0, [&](uint32_t events) {
                    if (events & kIoWrite) {
                      ++writable;
                      loop.Unwatch(p.w);
                      loop.Stop();
                    }
                  }).ok());
  loop.Post([&] { EXPECT_TRUE(loop.Modify(p.w, kIoWrite).ok()); });
  loop.Run();
  EXPECT_EQ(writable, 1);
  EXPECT_FALSE(loop.Modify(p.w, kIoRead).ok()) << "no longer watched";
}

TEST(EventLoopTest, AnEventCollectedForAnUnwatchedFdIsDropped) {
  EventLoop loop;
  Pipe a, b;
  int b_calls = 0;
  // Both become readable in the same epoll_wait; whichever runs first unwatches the other.
  ASSERT_TRUE(loop.Watch(a.r, kIoRead, [&](uint32_t) {
                    loop.Unwatch(b.r);
                    loop.Unwatch(a.r);
                  }).ok());
  ASSERT_TRUE(loop.Watch(b.r, kIoRead, [&](uint32_t) {
                    ++b_calls;
                    loop.Unwatch(a.r);
                    loop.Unwatch(b.r);
                  }).ok());
  ASSERT_EQ(write(a.w, "x", 1), 1);
  ASSERT_EQ(write(b.w, "x", 1), 1);
  loop.AddTimer(std::chrono::milliseconds(20), [&] { loop.Stop(); });
  loop.Run();
  EXPECT_LE(b_calls, 1);
}

TEST(EventLoopTest, TimersFireInDeadlineOrderAndCancelledOnesDoNot) {
  EventLoop loop;
  std::vector<int> fired;
  loop.AddTimer(std::chrono::milliseconds(30), [&] {
    fired.push_back(30);
    loop.Stop();
  });
  loop.AddTimer(std::chrono::milliseconds(10), [&] { fired.push_back(10); });
  auto cancelled = loop.AddTimer(std::chrono::milliseconds(5), [&] { fired.push_back(5); });
  loop.AddTimer(std::chrono::milliseconds(0), [&] { fired.push_back(0); });
  loop.CancelTimer(cancelled);
  loop.CancelTimer(12345);  // unknown: ignored
  loop.Run();
  EXPECT_EQ(fired, (std::vector<int>{0, 10, 30}));
}

TEST(EventLoopTest, PrepareHooksRunBeforeEachSleepAndThrowingCallbacksAreContained) {
  EventLoop loop;
  int hooks = 0;
  loop.AddPrepareHook([&] { ++hooks; });
  loop.Post([] { throw std::runtime_error("boom"); });
  loop.AddTimer(std::chrono::milliseconds(1), [&] { throw 42; });
  loop.AddTimer(std::chrono::milliseconds(5), [&] { loop.Stop(); });
  loop.Run();
  EXPECT_GE(hooks, 2);
}

TEST(EventLoopTest, RunAndWaitReturnsOnceTheTaskRanOrTheWaitRunsOut) {
  {
    EventLoop idle;  // Nothing runs it: a bounded wait gives up, the task stays queued.
    EXPECT_FALSE(idle.RunAndWait([] {}, std::chrono::milliseconds(20)));
  }
  EventLoopThread thread("test-loop");
  bool on_loop = false;
  EXPECT_TRUE(thread.loop().RunAndWait([&] { on_loop = thread.loop().InLoopThread(); }));
  EXPECT_TRUE(on_loop);
  // A task that throws is contained and still ends the wait.
  EXPECT_TRUE(thread.loop().RunAndWait([] { throw std::runtime_error("boom"); },
                                       std::chrono::milliseconds(20000)));
}

TEST(EventLoopTest, ForeignPostWakesASleepingLoop) {
  EventLoopThread thread("test-loop");
  for (int i = 0; i < 50; ++i) {
    std::promise<void> ran;
    // The loop has nothing else to do, so it is asleep in epoll_wait with no timeout.
    thread.loop().Post([&] { ran.set_value(); });
    ran.get_future().get();
  }
}

}  // namespace
}  // namespace wf
