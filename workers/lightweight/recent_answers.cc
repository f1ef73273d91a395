#include "lightweight/recent_answers.h"

#include <utility>

namespace wf {

namespace {

/// What an entry costs: its strings and a fixed share for the map node and the strings'
/// headers.
std::size_t EntryBytes(const std::string& request_id, const RecentAnswers::Answer& answer) {
  std::size_t bytes = 128 + request_id.size() + answer.reply.size() + answer.payload.size();
  for (const auto& [name, value] : answer.headers) bytes += 64 + name.size() + value.size();
  return bytes;
}

/// What a place in the queue costs (a replaced entry leaves its old place until it is oldest).
std::size_t PlaceBytes(const std::string& request_id) { return 48 + request_id.size(); }

}  // namespace

void RecentAnswers::Remember(const std::string& request_id, Answer answer, Clock::time_point now) {
  const std::size_t bytes = EntryBytes(request_id, answer);
  std::lock_guard lock(mu_);
  if (bytes + PlaceBytes(request_id) > options_.max_bytes) {
    // Larger than the whole bound: not kept, and nothing else dropped for it. An earlier event
    // of the query is no longer its last.
    if (auto it = by_id_.find(request_id); it != by_id_.end()) {
      bytes_ -= it->second.bytes;
      by_id_.erase(it);  // its place goes when it is the oldest
    }
    return;
  }
  const uint64_t seq = ++next_seq_;
  auto [it, inserted] = by_id_.try_emplace(request_id);
  if (!inserted) bytes_ -= it->second.bytes;
  it->second = Entry{std::move(answer), now, seq, bytes};
  bytes_ += bytes + PlaceBytes(request_id);
  order_.emplace_back(seq, request_id);
  Evict(now);
}

std::optional<RecentAnswers::Answer> RecentAnswers::Find(const std::string& request_id,
                                                         Clock::time_point now) {
  std::lock_guard lock(mu_);
  Evict(now);
  auto it = by_id_.find(request_id);
  if (it == by_id_.end()) return std::nullopt;
  return it->second.answer;
}

RecentAnswers::Stats RecentAnswers::stats() const {
  std::lock_guard lock(mu_);
  return Stats{by_id_.size(), bytes_};
}

void RecentAnswers::Evict(Clock::time_point now) {
  const Clock::time_point oldest_kept = now - options_.max_age;
  while (!order_.empty()) {
    auto it = by_id_.find(order_.front().second);
    // A replaced entry's older place in the queue: nothing to drop but the place.
    const bool current = it != by_id_.end() && it->second.seq == order_.front().first;
    if (current && it->second.at >= oldest_kept && bytes_ <= options_.max_bytes) break;
    if (current) {
      bytes_ -= it->second.bytes;
      by_id_.erase(it);
    }
    bytes_ -= PlaceBytes(order_.front().second);
    order_.pop_front();
  }
}

}  // namespace wf
