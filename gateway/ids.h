#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace wf {

/// Longest session id the wire contract allows.
inline constexpr std::size_t kMaxSessionIdChars = 128;

/// True when `id` is 1..128 characters of [A-Za-z0-9._:-] (ARCHITECTURE.md "Sessions").
/// Pure, any thread.
bool IsValidSessionId(std::string_view id);

/// Makes request ids: 15 characters of [0-9A-Za-z] (so they fit std::string's inline buffer and
/// are valid NATS subject tokens): an 8-character random per-generator prefix followed by a
/// 7-character base-62 counter. Unique within a generator for 62^7 (3.5e12) ids, and across
/// processes with overwhelming probability. Thread-safe and lock-free.
class RequestIdGenerator {
 public:
  /// Seeds the prefix and the counter's start from std::random_device.
  RequestIdGenerator();
  RequestIdGenerator(const RequestIdGenerator&) = delete;
  RequestIdGenerator& operator=(const RequestIdGenerator&) = delete;

  /// The next id. Any thread.
  std::string Next();

 private:
  char prefix_[8];
  std::atomic<uint64_t> counter_;
};

/// A parsed W3C `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header).
struct TraceContext {
  std::string trace_id;   ///< 32 lower-case hex digits, not all zero.
  std::string parent_id;  ///< 16 lower-case hex digits, not all zero.
  uint8_t flags = 0;      ///< trace-flags (bit 0 = sampled).
};

/// Parses a traceparent header. Version 00 must be exactly `00-<32 hex>-<16 hex>-<2 hex>`;
/// a higher version (01..fe) may carry more fields after a '-', which are ignored. Version ff,
/// upper-case hex, all-zero ids and any other shape give nullopt. Pure, any thread.
std::optional<TraceContext> ParseTraceparent(std::string_view header);

/// Formats a version-00 traceparent.
std::string FormatTraceparent(const TraceContext& context);

/// A new traceparent with a random trace id and parent id, flags 01 (sampled). Any thread.
std::string NewTraceparent();

/// What the gateway sends downstream: the client's header re-formatted as version 00 when it
/// parses, otherwise a new one. Any thread.
std::string TraceparentFor(std::string_view client_header);

}  // namespace wf
