#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/interfaces.h"
#include "io/run_guarded.h"

namespace wf {

/// An Executor with a fixed number of threads and one FIFO queue. Tasks that throw are logged
/// and dropped. The destructor runs the tasks already queued, then joins the threads (so it must
/// not be destroyed from one of its own tasks).
class ThreadPoolExecutor final : public Executor {
 public:
  explicit ThreadPoolExecutor(std::size_t threads);
  ~ThreadPoolExecutor() override;
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

  /// Thread-safe; never blocks beyond a queue push.
  void Post(std::function<void()> task) override;

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

/// An Executor that only queues; the owner runs the tasks with RunPending/RunUntilIdle on its
/// own thread. Deterministic, for tests and single-threaded drivers.
class ManualExecutor final : public Executor {
 public:
  /// Thread-safe.
  void Post(std::function<void()> task) override;
  /// Runs the tasks queued at the time of the call (not those they post); returns how many ran.
  std::size_t RunPending();
  /// Runs tasks until the queue is empty (at most `max_tasks`); returns how many ran.
  std::size_t RunUntilIdle(std::size_t max_tasks = 1000000);
  /// Tasks waiting.
  std::size_t Pending() const;

 private:
  mutable std::mutex mu_;
  std::deque<std::function<void()>> queue_;
};

}  // namespace wf
