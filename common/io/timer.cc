#include "io/timer.h"

#include "io/run_guarded.h"

namespace wf {

TimerThread::TimerThread() : thread_([this] { Run(); }) {}

TimerThread::~TimerThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();
    due_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

Timer::TaskId TimerThread::After(std::chrono::milliseconds delay, std::function<void()> fn) {
  if (delay.count() < 0) delay = std::chrono::milliseconds(0);
  const auto when = std::chrono::steady_clock::now() + delay;
  TaskId id;
  bool first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    queue_.emplace(Key{when, id}, std::move(fn));
    due_.emplace(id, when);
    first = queue_.begin()->first.second == id;
  }
  if (first) cv_.notify_one();
  return id;
}

bool TimerThread::Cancel(TaskId id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = due_.find(id);
  if (it == due_.end()) return false;
  queue_.erase(Key{it->second, id});
  due_.erase(it);
  return true;
}

void TimerThread::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (queue_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = queue_.begin();
    const auto when = first->first.first;
    if (std::chrono::steady_clock::now() < when) {
      cv_.wait_until(lock, when);
      continue;
    }
    std::function<void()> fn = std::move(first->second);
    due_.erase(first->first.second);
    queue_.erase(first);
    lock.unlock();
    RunGuarded("timer task", fn);
    lock.lock();
  }
}

}  // namespace wf
