#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "error/error.h"

namespace wf {

/// Readiness bits passed to watchers (the epoll ones).
enum IoEvents : uint32_t {
  kIoRead = 0x001,   // EPOLLIN
  kIoWrite = 0x004,  // EPOLLOUT
  kIoError = 0x008,  // EPOLLERR
  kIoHangup = 0x010, // EPOLLHUP
};

/// A single-threaded epoll event loop, in the manner of Envoy's Dispatcher: fd watchers, one-shot
/// timers, tasks posted from any thread, and hooks run before each sleep. Everything runs on the
/// thread that calls Run (the loop thread). Watch/Modify/Unwatch/AddTimer/CancelTimer/
/// AddPrepareHook are loop-thread only (before Run starts, any single thread may set up); other
/// threads use Post. Post, Wake and Stop are thread-safe.
class EventLoop {
 public:
  using FdCallback = std::function<void(uint32_t events)>;
  using Task = std::function<void()>;
  using TimerId = uint64_t;

  /// Throws std::runtime_error when epoll or eventfd cannot be created.
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Runs until Stop. Each iteration: run posted tasks, run prepare hooks, sleep in epoll_wait
  /// (not at all when tasks are pending; at most until the next timer), dispatch ready fds, then
  /// expired timers. Callbacks that throw are logged and the loop goes on.
  void Run();
  /// Any thread: Run returns after its current iteration; tasks posted before Stop still run.
  void Stop();
  /// Any thread: runs `task` on the loop thread soon (FIFO). From the loop thread it runs in the
  /// next iteration, without a system call.
  void Post(Task task);
  /// Another thread than the loop's: posts `task` and waits until it has returned, at most
  /// `timeout` when one is given. False when the wait ran out; the task then still runs later, so
  /// it must not refer to the caller's stack. The loop must be running (or start) to return.
  bool RunAndWait(Task task, std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// Any thread: makes a sleeping epoll_wait return (no-op on the loop thread).
  void Wake();
  /// True on the thread running Run.
  bool InLoopThread() const {
    return std::this_thread::get_id() == loop_thread_.load(std::memory_order_relaxed);
  }

  /// Watches `fd` for `events` (kIoRead | kIoWrite); errors and hang-ups are always reported.
  /// One watcher per fd. The callback may Unwatch (itself or others) and Modify.
  ///
  /// A descriptor may be closed by code that does not own the loop (nats.c closes its socket on
  /// its own thread before telling us), and its number reused at once by another watcher: when
  /// the kernel no longer knows `fd` (closing removed it from epoll), an old registration of the
  /// same number is stale and Watch replaces it. Owners that can be late pass the token of their
  /// registration (WatchToken) to Modify and Unwatch, which then leave a newer one alone.
  Status Watch(int fd, uint32_t events, FdCallback callback);
  /// The token of `fd`'s current registration; 0 when not watched.
  uint32_t WatchToken(int fd) const;
  /// Changes what `fd` is watched for. With a `token`, only that registration.
  Status Modify(int fd, uint32_t events, uint32_t token = 0);
  /// Stops watching `fd` (a no-op when not watched, or, with a `token`, when the registration is
  /// another one); its callback is not called again, even for events already collected in this
  /// iteration.
  void Unwatch(int fd, uint32_t token = 0);

  /// Calls `task` once, `delay` from now (0: next iteration). Returns an id for CancelTimer.
  TimerId AddTimer(std::chrono::milliseconds delay, Task task);
  /// Cancels a pending timer (a no-op when it ran or is unknown).
  void CancelTimer(TimerId id);
  /// Runs `hook` on every iteration just before the loop sleeps (e.g. to flush buffered writes).
  void AddPrepareHook(Task hook);

 private:
  struct Watcher {
    int fd;
    uint32_t token;  // Unique per Watch: stale epoll events of a closed/re-watched fd are ignored
    FdCallback callback;
  };
  void RunPosted();
  int NextTimeoutMs();
  void RunTimers();

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<std::thread::id> loop_thread_{};
  uint32_t next_token_ = 1;
  std::unordered_map<int, Watcher> watchers_;
  std::multimap<std::chrono::steady_clock::time_point, TimerId> timers_;
  std::unordered_map<TimerId, std::pair<std::chrono::steady_clock::time_point, Task>> timer_tasks_;
  TimerId next_timer_ = 1;
  std::vector<Task> prepare_hooks_;

  std::mutex mutex_;  // Guards posted_, stop_, sleeping_.
  std::vector<Task> posted_;
  bool stop_ = false;
  bool sleeping_ = false;
  std::vector<Task> running_;  // Loop thread: the batch of posted tasks being run.
};

/// An EventLoop running on its own thread, started by the constructor, stopped and joined by
/// the destructor (tasks posted before that still run).
class EventLoopThread {
 public:
  explicit EventLoopThread(const std::string& name);
  ~EventLoopThread();
  EventLoopThread(const EventLoopThread&) = delete;
  EventLoopThread& operator=(const EventLoopThread&) = delete;
  EventLoop& loop() { return loop_; }
  /// Stops the loop and joins the thread (idempotent; not from the loop thread).
  void Join();

 private:
  EventLoop loop_;
  std::thread thread_;
};

}  // namespace wf
