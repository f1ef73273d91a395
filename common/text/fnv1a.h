#pragma once

#include <cstdint>
#include <string_view>

namespace wf {

/// FNV-1a's 64-bit offset basis.
inline constexpr std::uint64_t kFnv1a64Basis = 14695981039346656037ULL;

/// 64-bit FNV-1a of `text`'s bytes, from `basis` (FNV's own unless a caller must reproduce hashes
/// made from another): a stable hash (the same on every run and machine), fast for short keys,
/// not for anything an adversary must not collide. Pure.
inline std::uint64_t Fnv1a64(std::string_view text, std::uint64_t basis = kFnv1a64Basis) {
  std::uint64_t h = basis;
  for (const char c : text) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

}  // namespace wf
