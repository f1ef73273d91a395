#include "gateway/ids.h"

#include <array>
#include <random>

#include "protocol/query_rules.h"
#include "text/hex.h"

namespace wf {
namespace {

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr char kHex[] = "0123456789abcdef";

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool AllZero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

/// splitmix64: a fast, well-mixed generator for ids (not for secrets).
uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

/// Per-thread random stream, seeded once per thread from std::random_device.
uint64_t NextRandom() {
  thread_local uint64_t state = RandomSeed();
  return SplitMix(state);
}

void AppendHex(std::string* out, uint64_t value, int digits) {
  for (int i = digits - 1; i >= 0; --i) out->push_back(kHex[(value >> (i * 4)) & 0xF]);
}

}  // namespace

bool IsValidSessionId(std::string_view id) { return IsValidQuerySessionId(id); }

RequestIdGenerator::RequestIdGenerator() {
  uint64_t seed = RandomSeed();
  uint64_t bits = SplitMix(seed);
  for (char& c : prefix_) {
    c = kBase62[bits % 62];
    bits /= 62;
  }
  // Start the counter somewhere random so restarted processes do not retrace the same ids.
  counter_.store(SplitMix(seed) % 1000000000ull, std::memory_order_relaxed);
}

std::string RequestIdGenerator::Next() {
  uint64_t n = counter_.fetch_add(1, std::memory_order_relaxed);
  std::string id(15, '0');
  for (int i = 0; i < 8; ++i) id[i] = prefix_[i];
  for (int i = 14; i >= 8; --i) {
    id[i] = kBase62[n % 62];
    n /= 62;
  }
  return id;
}

std::optional<TraceContext> ParseTraceparent(std::string_view h) {
  // version "-" trace-id "-" parent-id "-" flags  = 2+1+32+1+16+1+2 = 55 characters.
  if (h.size() < 55) return std::nullopt;
  std::string_view version = h.substr(0, 2);
  if (!IsLowerHex(version) || version == "ff") return std::nullopt;
  if (h[2] != '-' || h[35] != '-' || h[52] != '-') return std::nullopt;
  if (version == "00") {
    if (h.size() != 55) return std::nullopt;
  } else if (h.size() > 55 && h[55] != '-') {
    return std::nullopt;
  }
  std::string_view trace_id = h.substr(3, 32);
  std::string_view parent_id = h.substr(36, 16);
  std::string_view flags = h.substr(53, 2);
  if (!IsLowerHex(trace_id) || !IsLowerHex(parent_id) || !IsLowerHex(flags)) return std::nullopt;
  if (AllZero(trace_id) || AllZero(parent_id)) return std::nullopt;
  TraceContext context;
  context.trace_id = std::string(trace_id);
  context.parent_id = std::string(parent_id);
  context.flags = static_cast<uint8_t>(HexDigitValue(flags[0]) * 16 + HexDigitValue(flags[1]));
  return context;
}

std::string FormatTraceparent(const TraceContext& context) {
  std::string out;
  out.reserve(55);
  out += "00-";
  out += context.trace_id;
  out += '-';
  out += context.parent_id;
  out += '-';
  AppendHex(&out, context.flags, 2);
  return out;
}

std::string NewTraceparent() {
  std::string out;
  out.reserve(55);
  out += "00-";
  uint64_t hi = NextRandom();
  uint64_t lo = NextRandom();
  if (hi == 0 && lo == 0) lo = 1;
  AppendHex(&out, hi, 16);
  AppendHex(&out, lo, 16);
  out += '-';
  uint64_t span = NextRandom();
  if (span == 0) span = 1;
  AppendHex(&out, span, 16);
  out += "-01";
  return out;
}

std::string TraceparentFor(std::string_view client_header) {
  if (!client_header.empty()) {
    if (client_header.size() == 55 && client_header.substr(0, 3) == "00-") {
      // The common case: already version 00; validate and pass through unchanged.
      if (ParseTraceparent(client_header)) return std::string(client_header);
    } else if (auto context = ParseTraceparent(client_header)) {
      return FormatTraceparent(*context);
    }
  }
  return NewTraceparent();
}

}  // namespace wf
