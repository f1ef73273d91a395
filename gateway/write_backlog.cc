#include "gateway/write_backlog.h"

#include <utility>

namespace wf {

WriteBacklog::WriteBacklog(std::size_t limit, std::shared_ptr<WriteBacklogTotals> totals)
    : limit_(limit), totals_(std::move(totals)) {}

WriteBacklog::~WriteBacklog() {
  const std::size_t left = bytes_.load(std::memory_order_acquire);
  if (left > 0 && totals_) {
    totals_->queued_bytes.fetch_sub(static_cast<int64_t>(left), std::memory_order_relaxed);
  }
}

bool WriteBacklog::Reserve(std::size_t n) {
  if (overflowed_.load(std::memory_order_acquire)) return false;
  // Release only lowers bytes_ meanwhile: the check can only be stricter than needed.
  const std::size_t now = bytes_.load(std::memory_order_acquire);
  if (now > 0 && (n > limit_ || now > limit_ - n)) {
    if (!overflowed_.exchange(true, std::memory_order_acq_rel) && totals_) {
      totals_->overflows.fetch_add(1, std::memory_order_relaxed);
    }
    return false;
  }
  bytes_.fetch_add(n, std::memory_order_acq_rel);
  if (totals_) totals_->queued_bytes.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  return true;
}

void WriteBacklog::Release(std::size_t n) {
  bytes_.fetch_sub(n, std::memory_order_acq_rel);
  if (totals_) totals_->queued_bytes.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
}

}  // namespace wf
