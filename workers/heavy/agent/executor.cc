#include "agent/executor.h"

#include <utility>

namespace wf {

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t threads) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPoolExecutor::Post(std::function<void()> task) {
  // Notified under the lock: once a task is taken, the executor may be destroyed (its owner
  // waits for the work, not for Post to return), and a notify after the unlock would touch a
  // destroyed condition variable.
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(task));
  cv_.notify_one();
}

void ThreadPoolExecutor::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and drained
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    RunGuarded("executor task", task);
    lock.lock();
  }
}

void ManualExecutor::Post(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(task));
}

std::size_t ManualExecutor::RunPending() {
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(queue_);
  }
  const std::size_t n = batch.size();
  for (auto& task : batch) RunGuarded("executor task", task);
  return n;
}

std::size_t ManualExecutor::RunUntilIdle(std::size_t max_tasks) {
  std::size_t ran = 0;
  while (ran < max_tasks) {
    std::function<void()> task;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) break;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    RunGuarded("executor task", task);
    ++ran;
  }
  return ran;
}

std::size_t ManualExecutor::Pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

}  // namespace wf
