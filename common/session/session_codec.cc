#include "session/session_codec.h"

#include <nlohmann/json.hpp>

#include "codec/json_dump.h"
#include "protocol/query_rules.h"
#include "text/utf8.h"

namespace wf {
namespace {

constexpr std::size_t kMaxRunIdLength = 128;
/// Latest time a turn may carry: 9999-12-31T23:59:59.999Z. PostgreSQL's timestamps go further,
/// but `epoch + ms * interval '1 ms'` overflows its interval (int64 µs) past ~292,000 years.
constexpr std::int64_t kMaxUnixMs = 253402300799999;
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool IsClean(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] == '\0') return false;
    const std::size_t length = Utf8SequenceLength(text, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

void SanitizeInPlace(std::string* text) {
  if (!IsClean(*text)) *text = SanitizeText(*text);
}

}  // namespace

bool IsValidSessionId(std::string_view session_id) { return IsValidQuerySessionId(session_id); }

std::string SanitizeText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] == '\0') {
      ++i;
      continue;
    }
    const std::size_t length = Utf8SequenceLength(text, i);
    if (length == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(text.substr(i, length));
    i += length;
  }
  return out;
}

Status NormalizeTurn(wf::v1::TurnRecord& turn, std::int64_t now_unix_ms) {
  if (!IsValidSessionId(turn.session_id())) {
    return Status(ErrorCode::kBadRequest, "session_id must be 1-128 characters of [A-Za-z0-9._:-]");
  }
  if (turn.run_id().empty() || turn.run_id().size() > kMaxRunIdLength) {
    return Status(ErrorCode::kBadRequest, "run_id must be 1-128 bytes");
  }
  SanitizeInPlace(turn.mutable_run_id());
  if (turn.status().empty()) turn.set_status("ok");
  if (turn.status() != "ok" && turn.status() != "error" && turn.status() != "cancelled") {
    return Status(ErrorCode::kBadRequest, "status must be ok, error or cancelled");
  }
  if (turn.started_unix_ms() > kMaxUnixMs || turn.finished_unix_ms() > kMaxUnixMs) {
    return Status(ErrorCode::kBadRequest,
                  "started_unix_ms and finished_unix_ms must be Unix ms before the year 10000");
  }
  for (const wf::v1::ChatMessage& message : turn.messages()) {
    if (message.created_unix_ms() > kMaxUnixMs) {
      return Status(ErrorCode::kBadRequest,
                    "messages[].created_unix_ms must be Unix ms before the year 10000");
    }
  }
  SanitizeInPlace(turn.mutable_request_id());
  SanitizeInPlace(turn.mutable_user_id());
  SanitizeInPlace(turn.mutable_route());
  SanitizeInPlace(turn.mutable_flow_id());
  const std::int64_t default_time =
      turn.finished_unix_ms() > 0 ? turn.finished_unix_ms() : now_unix_ms;
  for (wf::v1::ChatMessage& message : *turn.mutable_messages()) {
    SanitizeInPlace(message.mutable_role());
    SanitizeInPlace(message.mutable_content());
    SanitizeInPlace(message.mutable_name());
    SanitizeInPlace(message.mutable_tool_call_id());
    for (wf::v1::ToolCall& call : *message.mutable_tool_calls()) {
      SanitizeInPlace(call.mutable_id());
      SanitizeInPlace(call.mutable_name());
      SanitizeInPlace(call.mutable_arguments_json());
      SanitizeInPlace(call.mutable_kind());
    }
    if (message.created_unix_ms() <= 0) message.set_created_unix_ms(default_time);
    message.set_run_id(turn.run_id());
  }
  return Status::Ok();
}

std::string ToolCallsToJson(const wf::v1::ChatMessage& message) {
  if (message.tool_calls().empty()) return {};
  nlohmann::json calls = nlohmann::json::array();
  for (const wf::v1::ToolCall& call : message.tool_calls()) {
    calls.push_back({{"id", call.id()},
                     {"name", call.name()},
                     {"arguments_json", call.arguments_json()},
                     {"kind", call.kind()}});
  }
  return DumpJson(calls);
}

Status ToolCallsFromJson(std::string_view json, wf::v1::ChatMessage& message) {
  message.clear_tool_calls();
  if (json.empty()) return Status::Ok();
  const nlohmann::json calls = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!calls.is_array()) return Status(ErrorCode::kInternal, "stored tool_calls is not an array");
  for (const nlohmann::json& call : calls) {
    if (!call.is_object()) return Status(ErrorCode::kInternal, "stored tool call is not an object");
    wf::v1::ToolCall* out = message.add_tool_calls();
    const auto field = [&](const char* key) -> std::string {
      const auto it = call.find(key);
      return it != call.end() && it->is_string() ? it->get<std::string>() : std::string{};
    };
    out->set_id(field("id"));
    out->set_name(field("name"));
    out->set_arguments_json(field("arguments_json"));
    out->set_kind(field("kind"));
  }
  return Status::Ok();
}

SessionKeys SessionKeys::For(std::string_view prefix, std::string_view session_id) {
  const std::string base(prefix);
  const std::string id(session_id);
  return SessionKeys{base + "hist:" + id, base + "runs:" + id,  base + "ver:" + id,
                     base + "lock:" + id, base + "queue:" + id, base + "qlease:" + id};
}

}  // namespace wf
