#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "error/error.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {

/// The comment line sent on a silent stream so proxies keep it open.
inline constexpr std::string_view kSseHeartbeat = ": heartbeat\n\n";

/// The body of a successful answer (POST /api/v1/query, and the data of the `done` event):
///   {"session_id","message","status":"success"|"cancelled","routed_to":"lightweight"|"heavy",
///    "flow_id" (flows),"request_id","run_id","usage":{prompt_tokens,completion_tokens,
///    total_tokens} (agent),"parameters":{...} (flows)}
/// Route "agent" is "heavy"; anything else is a flow ("lightweight"). `session_id` is the
/// final's, or `fallback_session_id` when the worker left it empty. Pure; any thread.
std::string AnswerJson(const v1::Final& final, std::string_view request_id,
                       std::string_view fallback_session_id);

/// An Error built from a wire error: the code through ErrorCodeFromWire (unknown codes become
/// kInternal), the message as sent (or the code's wire name when empty).
Error ErrorFromWire(const v1::Error& error);

/// Appends "event: <name>\ndata: <data>\n\n". `data` must be one line (compact JSON is).
void AppendSseEvent(std::string* out, std::string_view name, std::string_view data);

/// Appends the SSE frame of a stream event:
///   token       -> event: token        data {"token"}
///   tool_call   -> event: tool_call    data {"id","name","arguments","kind"} (arguments: the
///                                      model's JSON text, as a string)
///   tool_result -> event: tool_result  data {"call_id","name","ok","content","truncated"?,
///                                      "error"?}
///   final       -> event: done         data AnswerJson(...)
///   error       -> event: error        data {"error":{"code","message","request_id"}}
/// Every data object but done's also carries "attempt":N when the event's attempt is above 1
/// (a turn re-run by another worker). Returns false (appending nothing) for an event with no
/// kind set.
bool AppendSseForEvent(std::string* out, const v1::QueryEvent& event, std::string_view request_id,
                       std::string_view fallback_session_id);

/// Appends "event: reset" with data {"request_id","attempt"}: the turn is being run again from
/// the start (attempt N, after the worker running it died); what the stream sent before is void.
void AppendSseReset(std::string* out, std::string_view request_id, uint32_t attempt);

/// {"session_id","messages":[{"role","content","name"?,"tool_call_id"?,"tool_calls"?,
///  "created_unix_ms","run_id","cancelled"?:true}],"turn_count","created_unix_ms",
///  "updated_unix_ms","omitted_messages"?}: "cancelled" marks the partial answer of a cancelled
/// turn; "omitted_messages" counts the oldest messages left out to fit one NATS message.
/// `fallback_session_id` is used when the history leaves it empty.
std::string SessionHistoryJson(const v1::SessionHistory& history,
                               std::string_view fallback_session_id);

/// {"session_id":"...","deleted":true}
std::string SessionDeletedJson(std::string_view session_id);

}  // namespace wf
