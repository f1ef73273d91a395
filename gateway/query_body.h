#pragma once

#include <cstddef>
#include <string_view>

#include "error/error.h"
#include "wf/v1/query.pb.h"

namespace wf {

/// Limits applied to the body of POST /api/v1/query[/stream] (from Config::gateway).
struct QueryBodyLimits {
  /// `message` may have at most this many Unicode code points.
  std::size_t max_message_chars = 8000;
  /// `user_id` may have at most this many code points.
  std::size_t max_user_id_chars = 128;
  /// Arrays/objects may nest at most this deep in the whole body (the body itself is level 1),
  /// so converting `parameters` never recurses without bound.
  int max_nesting = 32;
};

/// Parses and validates the JSON body of a query request:
///   {"message": non-empty string (at most max_message_chars code points),
///    "session_id": 1..128 of [A-Za-z0-9._:-],
///    "user_id": optional string (at most max_user_id_chars code points; null = absent),
///    "parameters": optional JSON object (null = absent)}
/// Any other field is rejected (not ignored), so a client's typo is reported instead of
/// silently dropped.
///
/// On success fills message, session_id, user_id and parameters of `out` (other fields are left
/// as they are). Errors (the message always names the offending field):
///   kInvalidJson "body is not valid JSON: ..." (including invalid UTF-8),
///   kBadRequest  "body must be a JSON object", "unknown field 'x' (allowed: ...)",
///                "message: ...", "session_id: ...", "user_id: ...", "parameters: ...",
///                "body: JSON nested deeper than N levels",
///                "parameters.a.b[2]: number beyond ±2^53 ... send it as a string" (a number in
///                `parameters` whose magnitude exceeds 2^53: it travels as a double in a
///                google.protobuf.Struct and would arrive changed).
/// Pure; any thread.
Status ParseQueryBody(std::string_view body, const QueryBodyLimits& limits, v1::QueryRequest* out);

}  // namespace wf
