#include "io/event_loop.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <exception>
#include <future>
#include <stdexcept>

#include "io/run_guarded.h"

namespace wf {
namespace {

constexpr int kMaxEventsPerWait = 128;

uint64_t PackEventData(int fd, uint32_t token) {
  return (static_cast<uint64_t>(token) << 32) | static_cast<uint32_t>(fd);
}

}  // namespace

EventLoop::EventLoop() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::runtime_error(std::string("epoll_create1: ") + strerror(errno));
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    close(epoll_fd_);
    throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = PackEventData(wake_fd_, 0);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    close(wake_fd_);
    close(epoll_fd_);
    throw std::runtime_error(std::string("epoll_ctl: ") + strerror(errno));
  }
}

EventLoop::~EventLoop() {
  close(wake_fd_);
  close(epoll_fd_);
}

void EventLoop::Run() {
  loop_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  std::array<epoll_event, kMaxEventsPerWait> events;
  for (;;) {
    RunPosted();
    for (Task& hook : prepare_hooks_) RunGuarded("event loop: prepare hook", hook);
    int timeout = NextTimeoutMs();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_ && posted_.empty()) break;
      if (!posted_.empty()) timeout = 0;
      sleeping_ = timeout != 0;
    }
    int n = epoll_wait(epoll_fd_, events.data(), kMaxEventsPerWait, timeout);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sleeping_ = false;
    }
    if (n < 0) {
      if (errno != EINTR) spdlog::error("event loop: epoll_wait: {}", strerror(errno));
      continue;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = static_cast<int>(static_cast<uint32_t>(events[i].data.u64));
      const uint32_t token = static_cast<uint32_t>(events[i].data.u64 >> 32);
      if (fd == wake_fd_ && token == 0) {
        // One read resets an eventfd's counter, however many writes woke it.
        uint64_t drained;
        [[maybe_unused]] ssize_t ignored = read(wake_fd_, &drained, sizeof drained);
        continue;
      }
      auto it = watchers_.find(fd);
      if (it == watchers_.end() || it->second.token != token) continue;  // Unwatched meanwhile
      // A copy: the callback may Unwatch its own fd, destroying the stored one.
      FdCallback callback = it->second.callback;
      RunGuarded("event loop: fd callback", [&] { callback(events[i].events); });
    }
    RunTimers();
  }
  loop_thread_.store(std::thread::id(), std::memory_order_relaxed);
}

void EventLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  Wake();
}

void EventLoop::Post(Task task) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    posted_.push_back(std::move(task));
    wake = sleeping_;
  }
  if (wake) Wake();
}

bool EventLoop::RunAndWait(Task task, std::optional<std::chrono::milliseconds> timeout) {
  auto done = std::make_shared<std::promise<void>>();
  auto future = done->get_future();
  Post([task = std::move(task), done] {
    RunGuarded("event loop: waited-for task", task);
    done->set_value();
  });
  if (!timeout) {
    future.wait();
    return true;
  }
  return future.wait_for(*timeout) == std::future_status::ready;
}

void EventLoop::Wake() {
  if (InLoopThread()) return;
  const uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the loop will wake anyway.
  [[maybe_unused]] ssize_t ignored = write(wake_fd_, &one, sizeof one);
}

void EventLoop::RunPosted() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (posted_.empty()) return;
    running_.swap(posted_);
  }
  for (Task& task : running_) RunGuarded("event loop: posted task", task);
  running_.clear();
}

Status EventLoop::Watch(int fd, uint32_t events, FdCallback callback) {
  uint32_t token = next_token_++;
  if (token == 0) token = next_token_++;  // 0 marks the wake-up eventfd
  epoll_event ev{};
  ev.events = events & (EPOLLIN | EPOLLOUT);
  ev.data.u64 = PackEventData(fd, token);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    if (errno == EEXIST) return Status(ErrorCode::kInternal, "fd already watched");
    return Status(ErrorCode::kInternal, std::string("epoll_ctl add: ") + strerror(errno));
  }
  // The kernel took it, so a registration we still hold for this number belongs to a closed
  // descriptor: replaced (its owner's late Modify/Unwatch with its token will not touch this one).
  watchers_.insert_or_assign(fd, Watcher{fd, token, std::move(callback)});
  return Status();
}

uint32_t EventLoop::WatchToken(int fd) const {
  auto it = watchers_.find(fd);
  return it == watchers_.end() ? 0 : it->second.token;
}

Status EventLoop::Modify(int fd, uint32_t events, uint32_t token) {
  auto it = watchers_.find(fd);
  if (it == watchers_.end() || (token != 0 && it->second.token != token)) {
    return Status(ErrorCode::kInternal, "fd not watched");
  }
  epoll_event ev{};
  ev.events = events & (EPOLLIN | EPOLLOUT);
  ev.data.u64 = PackEventData(fd, it->second.token);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0) {
    return Status(ErrorCode::kInternal, std::string("epoll_ctl mod: ") + strerror(errno));
  }
  return Status();
}

void EventLoop::Unwatch(int fd, uint32_t token) {
  auto it = watchers_.find(fd);
  if (it == watchers_.end() || (token != 0 && it->second.token != token)) return;
  // ENOENT/EBADF when the fd was already closed (which removes it from epoll): fine.
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  watchers_.erase(it);
}

EventLoop::TimerId EventLoop::AddTimer(std::chrono::milliseconds delay, Task task) {
  const TimerId id = next_timer_++;
  const auto when = std::chrono::steady_clock::now() + delay;
  timers_.emplace(when, id);
  timer_tasks_.emplace(id, std::make_pair(when, std::move(task)));
  return id;
}

void EventLoop::CancelTimer(TimerId id) {
  auto it = timer_tasks_.find(id);
  if (it == timer_tasks_.end()) return;
  auto [first, last] = timers_.equal_range(it->second.first);
  for (auto t = first; t != last; ++t) {
    if (t->second == id) {
      timers_.erase(t);
      break;
    }
  }
  timer_tasks_.erase(it);
}

void EventLoop::AddPrepareHook(Task hook) { prepare_hooks_.push_back(std::move(hook)); }

int EventLoop::NextTimeoutMs() {
  if (timers_.empty()) return -1;
  const auto now = std::chrono::steady_clock::now();
  const auto when = timers_.begin()->first;
  if (when <= now) return 0;
  // Round up: waking a little late is fine, waking early only spins.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(when - now).count();
  return ms > 60'000 ? 60'000 : static_cast<int>(ms);
}

void EventLoop::RunTimers() {
  if (timers_.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  // Only timers due now: ones a timer task adds with delay 0 wait for the next iteration.
  std::vector<TimerId> due;
  for (auto it = timers_.begin(); it != timers_.end() && it->first <= now;) {
    due.push_back(it->second);
    it = timers_.erase(it);
  }
  for (TimerId id : due) {
    auto it = timer_tasks_.find(id);
    if (it == timer_tasks_.end()) continue;  // Cancelled by an earlier timer task
    Task task = std::move(it->second.second);
    timer_tasks_.erase(it);
    RunGuarded("event loop: timer", task);
  }
}

EventLoopThread::EventLoopThread(const std::string& name) {
  thread_ = std::thread([this] { loop_.Run(); });
  pthread_setname_np(thread_.native_handle(), name.substr(0, 15).c_str());
}

EventLoopThread::~EventLoopThread() { Join(); }

void EventLoopThread::Join() {
  if (!thread_.joinable()) return;
  loop_.Stop();
  thread_.join();
}

}  // namespace wf
