#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "text/fnv1a.h"

namespace wf {

/// A lossy memory of keys seen lately: a direct-mapped table of `Slots` key hashes. Contains()
/// is true for a key added since and not pushed out by a later key of the same slot, and (with
/// a probability of about one in 2^64 per lookup) for a key never added: a hint, for choices
/// that stay correct either way, never for anything that must be exact. Lock-free, thread-safe,
/// fixed size (8 bytes per slot), no allocation.
template <std::size_t Slots>
class RecentKeys {
  static_assert(Slots > 0 && (Slots & (Slots - 1)) == 0, "Slots must be a power of two");

 public:
  void Add(std::string_view key) {
    const std::uint64_t hash = Hash(key);
    slots_[hash & (Slots - 1)].store(hash, std::memory_order_relaxed);
  }

  bool Contains(std::string_view key) const {
    const std::uint64_t hash = Hash(key);
    return slots_[hash & (Slots - 1)].load(std::memory_order_relaxed) == hash;
  }

  void Remove(std::string_view key) {
    const std::uint64_t hash = Hash(key);
    std::uint64_t expected = hash;
    slots_[hash & (Slots - 1)].compare_exchange_strong(expected, 0, std::memory_order_relaxed);
  }

 private:
  /// Never 0 (the empty slot).
  static std::uint64_t Hash(std::string_view key) {
    // FNV-1a over the bytes, then a final mix (splitmix64) so the low bits choosing the slot
    // depend on every byte.
    std::uint64_t h = Fnv1a64(key);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h == 0 ? 1 : h;
  }

  std::array<std::atomic<std::uint64_t>, Slots> slots_{};
};

}  // namespace wf
