#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace wf {

/// Runs callbacks after a delay (retry backoff, turn deadlines). Thread-safe.
class Timer {
 public:
  using TaskId = std::uint64_t;  ///< 0 is never a valid id.
  virtual ~Timer() = default;

  /// Runs `fn` once, no earlier than `delay` from now, on the timer's thread. `fn` must not
  /// block. Returns an id for Cancel. Callable from any thread, including from a callback.
  virtual TaskId After(std::chrono::milliseconds delay, std::function<void()> fn) = 0;

  /// Drops a task that has not started; returns true when it was dropped (it will never run).
  /// False when it already ran, is running, or the id is unknown. Never blocks on a running task.
  virtual bool Cancel(TaskId id) = 0;
};

/// A Timer with one thread and an ordered queue: enough for hundreds of thousands of pending
/// tasks. Tasks run one at a time, in due order. Destruction drops pending tasks and joins the
/// thread (so it must not be destroyed from one of its own tasks).
class TimerThread final : public Timer {
 public:
  TimerThread();
  ~TimerThread() override;
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

  TaskId After(std::chrono::milliseconds delay, std::function<void()> fn) override;
  bool Cancel(TaskId id) override;

 private:
  void Run();

  using Key = std::pair<std::chrono::steady_clock::time_point, TaskId>;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::function<void()>> queue_;
  std::map<TaskId, std::chrono::steady_clock::time_point> due_;
  TaskId next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace wf
