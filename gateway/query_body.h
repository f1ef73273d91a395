#pragma once

#include <cstddef>
#include <string_view>

#include "config/config.h"
#include "error/error.h"
#include "wf/v1/query.pb.h"

namespace wf {

/// Parses and validates the JSON body of a query request:
///   {"message": non-empty string (at most limits.max_message_chars code points),
///    "session_id": 1..128 of [A-Za-z0-9._:-],
///    "user_id": optional string (at most kMaxQueryUserIdChars code points; null = absent),
///    "parameters": optional JSON object (null = absent)}
/// The JSON is checked here (shape, types, nesting at most kMaxQueryNesting levels, numbers
/// exact in a double); the values by ValidateQueryRequest (common/protocol), the same rules as
/// for a QueryRequest published straight on `wf.query`.
/// Any other field is rejected (not ignored), so a client's typo is reported instead of
/// silently dropped.
///
/// Fills message, session_id, user_id and parameters of `out` (other fields are left as they
/// are; on an error `out` may be partly filled: discard it). Errors (the message always names the
/// offending field):
///   kInvalidJson "body is not valid JSON: ..." (including invalid UTF-8),
///   kBadRequest  "body must be a JSON object", "unknown field 'x' (allowed: ...)",
///                "message: ...", "session_id: ...", "user_id: ...", "parameters: ...",
///                "body: JSON nested deeper than N levels",
///                "parameters.a.b[2]: number beyond ±2^53 ... send it as a string" (a number in
///                `parameters` whose magnitude exceeds 2^53: it travels as a double in a
///                google.protobuf.Struct and would arrive changed).
/// Pure; any thread.
Status ParseQueryBody(std::string_view body, const GatewayConfig& limits, v1::QueryRequest* out);

/// nlohmann::json's exception text without its "[json.exception.<kind>.<id>] " prefix (the
/// library's reference, not the client's business): "parse error at line 1, column 2: ...".
/// Pure.
std::string_view JsonErrorReason(std::string_view what);

}  // namespace wf
