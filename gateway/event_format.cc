#include "gateway/event_format.h"

#include <charconv>

#include "codec/json_struct.h"
#include "codec/json_text.h"

namespace wf {
namespace {

template <typename Int>
void AppendInt(std::string* out, Int n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  (void)ec;
  out->append(buf, end);
}

/// Appends `,"key":` (or `"key":` when first).
void Key(std::string* out, std::string_view key, bool first = false) {
  if (!first) out->push_back(',');
  out->push_back('"');
  out->append(key);
  out->append("\":");
}

void StringField(std::string* out, std::string_view key, std::string_view value,
                 bool first = false) {
  Key(out, key, first);
  AppendJsonString(out, value);
}

void AppendToolCall(std::string* out, const v1::ToolCall& call) {
  out->push_back('{');
  StringField(out, "id", call.id(), true);
  StringField(out, "name", call.name());
  StringField(out, "arguments", call.arguments_json());
  StringField(out, "kind", call.kind());
  out->push_back('}');
}

void AppendErrorObject(std::string* out, const Error& error) {
  out->push_back('{');
  StringField(out, "code", WireName(error.code), true);
  StringField(out, "message", error.message);
  out->push_back('}');
}

void AppendAnswer(std::string* out, const v1::Final& final, std::string_view request_id,
                  std::string_view fallback_session_id) {
  const bool agent = final.route() == "agent";
  out->push_back('{');
  StringField(out, "session_id",
              final.session_id().empty() ? fallback_session_id : final.session_id(), true);
  StringField(out, "message", final.answer());
  StringField(out, "status", final.cancelled() ? "cancelled" : "success");
  StringField(out, "routed_to", agent ? "heavy" : "lightweight");
  if (!agent) StringField(out, "flow_id", final.flow_id());
  StringField(out, "request_id", request_id);
  StringField(out, "run_id", final.run_id().empty() ? request_id : final.run_id());
  if (agent) {
    const auto& usage = final.usage();
    Key(out, "usage");
    out->append("{\"prompt_tokens\":");
    AppendInt(out, usage.prompt_tokens());
    out->append(",\"completion_tokens\":");
    AppendInt(out, usage.completion_tokens());
    out->append(",\"total_tokens\":");
    AppendInt(out, usage.total_tokens());
    out->push_back('}');
    if (!final.finish_reason().empty()) StringField(out, "finish_reason", final.finish_reason());
  } else {
    Key(out, "parameters");
    if (final.has_parameters() && final.parameters().fields_size() > 0) {
      AppendStructJson(out, final.parameters());
    } else {
      out->append("{}");
    }
  }
  out->push_back('}');
}

}  // namespace

std::string AnswerJson(const v1::Final& final, std::string_view request_id,
                       std::string_view fallback_session_id) {
  std::string out;
  out.reserve(160 + final.answer().size());
  AppendAnswer(&out, final, request_id, fallback_session_id);
  return out;
}

Error ErrorFromWire(const v1::Error& error) {
  Error out{ErrorCodeFromWire(error.code()), error.message()};
  if (out.message.empty()) out.message = std::string(WireName(out.code));
  return out;
}

void AppendSseEvent(std::string* out, std::string_view name, std::string_view data) {
  out->append("event: ");
  out->append(name);
  out->append("\ndata: ");
  out->append(data);
  out->append("\n\n");
}

void AppendSseReset(std::string* out, std::string_view request_id, uint32_t attempt) {
  std::string data;
  data.push_back('{');
  StringField(&data, "request_id", request_id, true);
  Key(&data, "attempt");
  AppendInt(&data, attempt);
  data.push_back('}');
  AppendSseEvent(out, "reset", data);
}

bool AppendSseForEvent(std::string* out, const v1::QueryEvent& event, std::string_view request_id,
                       std::string_view fallback_session_id) {
  std::string data;
  std::string_view name;
  switch (event.kind_case()) {
    case v1::QueryEvent::kToken:
      name = "token";
      data.reserve(12 + event.token().size());
      data.push_back('{');
      StringField(&data, "token", event.token(), true);
      data.push_back('}');
      break;
    case v1::QueryEvent::kToolCall:
      name = "tool_call";
      AppendToolCall(&data, event.tool_call());
      break;
    case v1::QueryEvent::kToolResult: {
      name = "tool_result";
      const auto& result = event.tool_result();
      data.push_back('{');
      StringField(&data, "call_id", result.call_id(), true);
      StringField(&data, "name", result.name());
      Key(&data, "ok");
      data.append(result.ok() ? "true" : "false");
      StringField(&data, "content", result.content());
      if (result.truncated()) {
        Key(&data, "truncated");
        data.append("true");
      }
      if (!result.ok()) {
        Key(&data, "error");
        AppendErrorObject(&data, ErrorFromWire(result.error()));
      }
      data.push_back('}');
      break;
    }
    case v1::QueryEvent::kFinal:
      name = "done";
      AppendAnswer(&data, event.final(), request_id, fallback_session_id);
      break;
    case v1::QueryEvent::kError:
      name = "error";
      data = ErrorJson(ErrorFromWire(event.error()), request_id);
      break;
    default:
      return false;
  }
  if (event.attempt() > 1 && name != "done" && !data.empty() && data.back() == '}') {
    data.pop_back();
    Key(&data, "attempt");
    AppendInt(&data, event.attempt());
    data.push_back('}');
  }
  AppendSseEvent(out, name, data);
  return true;
}

std::string SessionHistoryJson(const v1::SessionHistory& history,
                               std::string_view fallback_session_id) {
  std::string out;
  out.reserve(128 + static_cast<std::size_t>(history.messages_size()) * 128);
  out.push_back('{');
  StringField(&out, "session_id",
              history.session_id().empty() ? fallback_session_id : history.session_id(), true);
  Key(&out, "messages");
  out.push_back('[');
  bool first = true;
  for (const auto& m : history.messages()) {
    if (!first) out.push_back(',');
    first = false;
    out.push_back('{');
    StringField(&out, "role", m.role(), true);
    StringField(&out, "content", m.content());
    if (!m.name().empty()) StringField(&out, "name", m.name());
    if (!m.tool_call_id().empty()) StringField(&out, "tool_call_id", m.tool_call_id());
    if (m.tool_calls_size() > 0) {
      Key(&out, "tool_calls");
      out.push_back('[');
      for (int i = 0; i < m.tool_calls_size(); ++i) {
        if (i > 0) out.push_back(',');
        AppendToolCall(&out, m.tool_calls(i));
      }
      out.push_back(']');
    }
    Key(&out, "created_unix_ms");
    AppendInt(&out, m.created_unix_ms());
    StringField(&out, "run_id", m.run_id());
    if (m.cancelled()) out.append(",\"cancelled\":true");
    if (m.failed()) out.append(",\"failed\":true");
    out.push_back('}');
  }
  out.push_back(']');
  Key(&out, "turn_count");
  AppendInt(&out, history.turn_count());
  Key(&out, "created_unix_ms");
  AppendInt(&out, history.created_unix_ms());
  Key(&out, "updated_unix_ms");
  AppendInt(&out, history.updated_unix_ms());
  if (history.omitted_messages() > 0) {
    Key(&out, "omitted_messages");
    AppendInt(&out, history.omitted_messages());
  }
  out.push_back('}');
  return out;
}

std::string SessionDeletedJson(std::string_view session_id) {
  std::string out;
  out.push_back('{');
  StringField(&out, "session_id", session_id, true);
  out.append(",\"deleted\":true}");
  return out;
}

}  // namespace wf
