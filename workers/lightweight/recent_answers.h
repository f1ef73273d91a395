#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "nats/connection.h"

namespace wf {

/// The last event a lightweight worker sent for each recent query (a flow's answer or error, or
/// `queued`), kept a short while by request id, so that a receiver whose subscription was gone
/// when it went out can ask for it again (ReplayRequest on `<prefix>.query.replay`). Core NATS
/// delivers a message only to the subscriptions the server knows at that moment: a gateway
/// whose connection is being restored (its node of a NATS cluster failed while the workers stay
/// connected to others) misses what is sent meanwhile, and its clients would wait for the flow
/// timeout.
///
/// Bounded: an event is kept at most `max_age`, and the oldest go first past `max_bytes`.
/// Thread-safe; the clock is the caller's, so tests need no sleeping.
class RecentAnswers {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    std::chrono::milliseconds max_age{30000};
    std::size_t max_bytes = 16 << 20;
  };
  struct Answer {
    std::string reply;
    std::string payload;
    NatsHeaders headers;
  };
  struct Stats {
    std::size_t kept = 0;   ///< Events kept now.
    std::size_t bytes = 0;  ///< Their bytes, as counted against max_bytes.
  };

  explicit RecentAnswers(Options options) : options_(options) {}

  /// Keeps `answer` as the last event sent for `request_id` (replacing an earlier one).
  void Remember(const std::string& request_id, Answer answer, Clock::time_point now);
  /// The last event sent for `request_id` within max_age of `now`, if still kept.
  std::optional<Answer> Find(const std::string& request_id, Clock::time_point now);
  Stats stats() const;

 private:
  struct Entry {
    Answer answer;
    Clock::time_point at;
    uint64_t seq;  // matches the newest of its id in order_
    std::size_t bytes;
  };
  /// mu_ held: drops what is too old, then the oldest while over max_bytes.
  void Evict(Clock::time_point now);

  const Options options_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> by_id_;
  std::deque<std::pair<uint64_t, std::string>> order_;  // (seq, request id), oldest first
  uint64_t next_seq_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace wf
