#include "lightweight/turn_batcher.h"

#include <utility>

namespace wf {

TurnBatcher::TurnBatcher(TurnBatcherOptions options, Send send)
    : options_(options), send_(std::move(send)), timer_([this] { Run(); }) {}

TurnBatcher::~TurnBatcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  timer_.join();
  Flush();
}

void TurnBatcher::Add(wf::v1::TurnRecord turn) {
  std::string payload;
  std::size_t turns = 0;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    // Field 1 of TurnRecordBatch: tag, length prefix and the record itself.
    batch_bytes_ += turn.ByteSizeLong() + 6;
    *batch_.add_turns() = std::move(turn);
    if (batch_.turns_size() == 1) {
      due_ = Clock::now() + options_.max_delay;
      wake = true;
    }
    if (static_cast<std::size_t>(batch_.turns_size()) >= options_.max_turns ||
        batch_bytes_ >= options_.max_bytes) {
      TakeLocked(payload, turns);
      wake = false;
    }
  }
  if (turns > 0) send_(std::move(payload), turns);
  if (wake) cv_.notify_one();
}

void TurnBatcher::Flush() {
  std::string payload;
  std::size_t turns = 0;
  {
    std::lock_guard lock(mu_);
    if (!TakeLocked(payload, turns)) return;
  }
  send_(std::move(payload), turns);
}

std::size_t TurnBatcher::Pending() const {
  std::lock_guard lock(mu_);
  return static_cast<std::size_t>(batch_.turns_size());
}

bool TurnBatcher::TakeLocked(std::string& payload, std::size_t& turns) {
  if (batch_.turns_size() == 0) return false;
  turns = static_cast<std::size_t>(batch_.turns_size());
  payload = batch_.SerializeAsString();
  batch_.Clear();
  batch_bytes_ = 0;
  return true;
}

void TurnBatcher::Run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (batch_.turns_size() == 0) {
      cv_.wait(lock, [this] { return stopping_ || batch_.turns_size() > 0; });
      continue;
    }
    if (Clock::now() < due_) {
      cv_.wait_until(lock, due_);
      continue;  // re-check: the batch may have been taken (full) meanwhile
    }
    std::string payload;
    std::size_t turns = 0;
    TakeLocked(payload, turns);
    lock.unlock();
    send_(std::move(payload), turns);
    lock.lock();
  }
}

}  // namespace wf
