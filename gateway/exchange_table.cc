#include "gateway/exchange_table.h"

namespace wf {

bool ExchangeTable::Insert(const std::string& request_id, std::shared_ptr<Exchange> exchange) {
  Shard& shard = ShardFor(request_id);
  std::lock_guard lock(shard.mu);
  bool inserted = shard.map.emplace(request_id, std::move(exchange)).second;
  if (inserted) size_.fetch_add(1, std::memory_order_relaxed);
  return inserted;
}

std::shared_ptr<Exchange> ExchangeTable::Find(std::string_view request_id) const {
  Shard& shard = ShardFor(request_id);
  // Request ids are 15 characters: the key fits std::string's inline buffer, no allocation.
  std::string key(request_id);
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(key);
  return it == shard.map.end() ? nullptr : it->second;
}

void ExchangeTable::Erase(std::string_view request_id, const Exchange* exchange) {
  Shard& shard = ShardFor(request_id);
  std::string key(request_id);
  std::shared_ptr<Exchange> doomed;  // destroyed outside the lock
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(key);
  if (it != shard.map.end() && it->second.get() == exchange) {
    doomed = std::move(it->second);
    shard.map.erase(it);
    size_.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::vector<std::shared_ptr<Exchange>> ExchangeTable::Snapshot() const {
  std::vector<std::shared_ptr<Exchange>> out;
  out.reserve(size());
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (const auto& [id, exchange] : shard.map) out.push_back(exchange);
  }
  return out;
}

}  // namespace wf
