#pragma once

#include <cstddef>
#include <string_view>

#include "config/config.h"
#include "error/error.h"
#include "wf/v1/query.pb.h"

namespace wf {

/// Longest session id (ARCHITECTURE.md "Sessions": 1-128 characters of [A-Za-z0-9._:-]).
inline constexpr std::size_t kMaxQuerySessionIdChars = 128;
/// Longest user id, in Unicode code points.
inline constexpr std::size_t kMaxQueryUserIdChars = 128;
/// Longest request id; its alphabet is [A-Za-z0-9_-] (a NATS subject token and header value).
inline constexpr std::size_t kMaxQueryRequestIdChars = 128;
/// Deepest JSON nesting of a query body, the body object itself being level 1, so `parameters`
/// (level 2) may nest kMaxQueryNesting - 1 levels.
inline constexpr int kMaxQueryNesting = 32;
/// Most request ids in one ReplayRequest (`<prefix>.query.replay`): a sender splits longer lists,
/// a worker looks up no more than these.
inline constexpr int kMaxReplayRequestIds = 10000;

/// True when `id` is 1..128 characters of [A-Za-z0-9._:-]. Pure.
bool IsValidQuerySessionId(std::string_view id);
/// True when `id` is 1..128 characters of [A-Za-z0-9_-]. Pure.
bool IsValidQueryRequestId(std::string_view id);

/// Checks a query against the input rules of the wire contract, the same for the gateway's HTTP
/// bodies and for QueryRequests published straight on `wf.query`:
///   message     non-empty, at most limits.max_message_chars code points;
///   session_id  1-128 characters of [A-Za-z0-9._:-];
///   user_id     optional, at most kMaxQueryUserIdChars code points;
///   parameters  optional, nested at most kMaxQueryNesting - 1 levels (the Struct is level 1);
///   request_id  optional (the receiver assigns one), else 1-128 characters of [A-Za-z0-9_-].
/// Fields the sender does not control (reply_to, deadline_unix_ms, stream, traceparent) are not
/// checked here. Strings are valid UTF-8 already (protobuf refuses anything else on parse).
/// Errors: kBadRequest with a message naming the field, worded as the gateway's body errors
/// ("session_id: must be 1-128 characters of A-Z a-z 0-9 . _ : -"). Pure, any thread.
Status ValidateQueryRequest(const wf::v1::QueryRequest& request, const GatewayConfig& limits);

}  // namespace wf
