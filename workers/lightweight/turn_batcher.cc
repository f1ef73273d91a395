#include "lightweight/turn_batcher.h"

#include <google/protobuf/io/coded_stream.h>

#include <cstring>
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

void TurnBatcher::Add(const wf::v1::TurnRecord& turn) {
  // Field 1 of TurnRecordBatch, length-delimited: tag, varint length, the record's bytes.
  constexpr std::uint32_t kTag = (wf::v1::TurnRecordBatch::kTurnsFieldNumber << 3) |
                                 /*WIRETYPE_LENGTH_DELIMITED=*/2;
  const std::size_t size = turn.ByteSizeLong();
  std::uint8_t head[1 + 5];
  std::uint8_t* head_end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
      static_cast<std::uint32_t>(size),
      google::protobuf::io::CodedOutputStream::WriteTagToArray(kTag, head));
  std::string payload;
  std::size_t turns = 0;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    const std::size_t at = batch_.size();
    const std::size_t head_size = static_cast<std::size_t>(head_end - head);
    batch_.resize(at + head_size + size);
    auto* out = reinterpret_cast<std::uint8_t*>(batch_.data() + at);
    std::memcpy(out, head, head_size);
    turn.SerializeWithCachedSizesToArray(out + head_size);
    if (++batch_turns_ == 1) {
      due_ = Clock::now() + options_.max_delay;
      wake = true;
    }
    if (batch_turns_ >= options_.max_turns || batch_.size() >= options_.max_bytes) {
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
  return batch_turns_;
}

bool TurnBatcher::TakeLocked(std::string& payload, std::size_t& turns) {
  if (batch_turns_ == 0) return false;
  turns = batch_turns_;
  payload = std::move(batch_);
  batch_.clear();
  batch_.reserve(payload.size());  // the next batch is likely as large
  batch_turns_ = 0;
  return true;
}

void TurnBatcher::Run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (batch_turns_ == 0) {
      cv_.wait(lock, [this] { return stopping_ || batch_turns_ > 0; });
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
