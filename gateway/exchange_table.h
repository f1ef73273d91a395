#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gateway/exchange.h"

namespace wf {

/// The exchanges waiting for NATS replies, by request id. Sharded (16 mutex-protected hash maps)
/// so Pistache workers inserting, the NATS thread looking up and the ticker scanning rarely
/// contend. Thread-safe; every method may be called from any thread.
class ExchangeTable {
 public:
  /// Adds an exchange; false (and nothing changes) when the id is already present.
  bool Insert(const std::string& request_id, std::shared_ptr<Exchange> exchange);
  /// The exchange for `request_id`, or null.
  std::shared_ptr<Exchange> Find(std::string_view request_id) const;
  /// Removes the entry for `request_id` if it still is `exchange`.
  void Erase(std::string_view request_id, const Exchange* exchange);
  /// A snapshot of every exchange (for the ticker and shutdown).
  std::vector<std::shared_ptr<Exchange>> Snapshot() const;
  /// Number of entries.
  std::size_t size() const { return size_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::size_t kShards = 16;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, std::shared_ptr<Exchange>> map;
  };
  Shard& ShardFor(std::string_view id) const {
    return shards_[std::hash<std::string_view>{}(id) % kShards];
  }

  mutable std::array<Shard, kShards> shards_;
  std::atomic<std::size_t> size_{0};
};

}  // namespace wf
