#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "error/error.h"

namespace wf {

/// One dispatched Server-Sent Event.
struct SseEvent {
  std::string event = "message";  ///< The `event:` field, "message" when absent.
  std::string data;               ///< The `data:` lines joined by "\n".
  std::string id;                 ///< The last `id:` field seen (persists across events).

  /// True for the OpenAI end-of-stream marker `data: [DONE]`.
  bool IsDone() const { return data == "[DONE]"; }
};

/// Incremental parser of a `text/event-stream` body (WHATWG HTML "Server-sent events"): bytes can
/// be fed split anywhere, lines end in LF, CRLF or CR (also when the CR and the LF arrive in
/// different pieces), `:` comment lines are skipped, several `data:` lines of one event are joined
/// with "\n", a leading UTF-8 BOM is dropped, `retry:` and unknown fields are ignored.
///
/// Pure, no I/O; not thread-safe (one parser per stream, fed by one thread at a time).
class SseParser {
 public:
  /// `max_event_bytes` bounds one line and one event's data; above it Feed fails.
  explicit SseParser(std::size_t max_event_bytes = 8u << 20) : max_event_bytes_(max_event_bytes) {}

  /// Consumes `bytes` and appends every event completed by them to `out`, in order.
  /// Errors: kTooLarge when a line or an event exceeds max_event_bytes; the parser is then
  /// unusable (every later call fails too).
  Status Feed(std::string_view bytes, std::vector<SseEvent>& out);

  /// End of the stream: per the spec an unterminated event is discarded, but servers that end
  /// with `data: [DONE]` and no blank line exist, so a pending event with data is dispatched
  /// (after completing a final unterminated line). Idempotent.
  void Finish(std::vector<SseEvent>& out);

  /// Number of events dispatched so far.
  std::size_t events_dispatched() const { return dispatched_; }

 private:
  Status ProcessLine(std::string_view line, std::vector<SseEvent>& out);
  void Dispatch(std::vector<SseEvent>& out);

  std::size_t max_event_bytes_;
  std::string line_;          ///< The unterminated line so far.
  std::string data_;          ///< Data of the pending event.
  bool has_data_ = false;     ///< At least one data line arrived for the pending event.
  std::string event_type_;    ///< `event:` of the pending event.
  std::string last_id_;
  bool skip_lf_ = false;      ///< The previous byte was a CR: a following LF ends nothing.
  bool at_start_ = true;      ///< No byte consumed yet (BOM check).
  std::size_t bom_bytes_ = 0; ///< BOM bytes matched so far at the start.
  bool failed_ = false;
  std::size_t dispatched_ = 0;
};

}  // namespace wf
