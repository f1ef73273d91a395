#pragma once

#include <cstddef>

#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {

/// What FitEvent did to an event.
enum class EventFit {
  kFits,       ///< Unchanged: it fits.
  kTruncated,  ///< A display text was cut (UTF-8-safely, with a note) and now it fits.
  kReplaced,   ///< A `final` too large to send became an `error` response_too_large.
  kTooLarge,   ///< Nothing could be cut enough (e.g. a huge request id): the publish will fail.
};

/// Makes `event` serialize to at most `max_bytes` bytes (a NATS message's payload), so that it is
/// never dropped by the publish: a `tool_result`'s content (ToolResult.truncated set), a
/// `tool_call`'s arguments, a `token` or an `error` message is cut at a UTF-8 character boundary
/// with a note saying how much was kept; a `final` cannot be cut (it is the answer) and becomes an
/// `error` with code response_too_large naming both sizes (request_id, seq and attempt kept).
/// Pure.
EventFit FitEvent(wf::v1::QueryEvent& event, std::size_t max_bytes);

/// Makes a wf.session.get reply serialize to at most `max_bytes` bytes: a message text longer than
/// a quarter of the limit is cut (UTF-8-safely, with a note), then the oldest messages are left
/// out until the rest fits, and SessionHistory.omitted_messages says how many. Returns that
/// number. Pure.
std::size_t FitSessionReply(wf::v1::SessionReply& reply, std::size_t max_bytes);

}  // namespace wf
