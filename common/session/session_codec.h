#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "error/error.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {

/// True for 1-128 characters of [A-Za-z0-9._:-] (the session id rule of the HTTP API). Pure.
bool IsValidSessionId(std::string_view session_id);

/// `text` as valid UTF-8 without NUL bytes (PostgreSQL text and jsonb refuse both): each invalid
/// sequence becomes U+FFFD, NULs are dropped. Unchanged when already clean. Pure.
std::string SanitizeText(std::string_view text);

/// Checks a turn to be stored and puts it into the exact form both stores keep, so Redis and
/// PostgreSQL hold identical messages: texts sanitized (SanitizeText), empty status -> "ok",
/// every message's run_id set to the turn's, a message without created_unix_ms gets the turn's
/// finished time (else `now_unix_ms`). Pure.
/// Errors: kBadRequest for an invalid session id, an empty or over 128-byte run id, a status
/// other than ok|error|cancelled, or a time (started, finished, a message's created) after the
/// year 9999.
Status NormalizeTurn(wf::v1::TurnRecord& turn, std::int64_t now_unix_ms);

/// Tool calls as the JSON array stored in messages.tool_calls
/// (`[{"id":..,"name":..,"arguments_json":..,"kind":..}]`); "" when there are none. Pure.
std::string ToolCallsToJson(const wf::v1::ChatMessage& message);

/// Parses ToolCallsToJson's output into `message`'s tool_calls (replacing them); "" = none.
/// Errors: kInternal when the text is not such an array. Pure.
Status ToolCallsFromJson(std::string_view json, wf::v1::ChatMessage& message);

/// Redis keys of one session under a prefix ("wf:").
struct SessionKeys {
  std::string history;       ///< List of serialized ChatMessage, oldest first: `<prefix>hist:<id>`.
  std::string runs;          ///< Set of run ids in `history`: `<prefix>runs:<id>`.
  std::string version;       ///< Change counter guarding re-warms: `<prefix>ver:<id>`.
  std::string lock;          ///< Turn lock (owner token): `<prefix>lock:<id>`.
  std::string queue;         ///< Turns waiting for the lock, by position: `<prefix>queue:<id>`.
  std::string queue_leases;  ///< Waiter -> lease end (Unix ms): `<prefix>qlease:<id>`.

  /// Keys of `session_id` under `prefix`. Pure.
  static SessionKeys For(std::string_view prefix, std::string_view session_id);
};

}  // namespace wf
