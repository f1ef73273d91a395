#include "protocol/query_rules.h"

#include <string>

namespace wf {
namespace {

Status FieldError(std::string_view field, std::string_view problem) {
  std::string message;
  message.reserve(field.size() + problem.size() + 2);
  message.append(field).append(": ").append(problem);
  return Status(ErrorCode::kBadRequest, std::move(message));
}

/// Code points of valid UTF-8 text (lead bytes), stopping early once above `limit`.
bool LongerThan(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return false;  // never more code points than bytes
  std::size_t n = 0;
  for (char ch : text) {
    if ((static_cast<unsigned char>(ch) & 0xC0) != 0x80 && ++n > limit) return true;
  }
  return false;
}

bool DeeperThan(const google::protobuf::Struct& s, int limit);

/// Depth of containers inside `value` (0 for a scalar) exceeds `limit`.
bool ValueDeeperThan(const google::protobuf::Value& value, int limit) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kStructValue:
      return DeeperThan(value.struct_value(), limit);
    case google::protobuf::Value::kListValue:
      if (limit < 1) return true;
      for (const auto& item : value.list_value().values()) {
        if (ValueDeeperThan(item, limit - 1)) return true;
      }
      return false;
    default:
      return false;
  }
}

/// The Struct counts as one level. Recursion is bounded by protobuf's own parse depth limit.
bool DeeperThan(const google::protobuf::Struct& s, int limit) {
  if (limit < 1) return true;
  for (const auto& [key, value] : s.fields()) {
    if (ValueDeeperThan(value, limit - 1)) return true;
  }
  return false;
}

}  // namespace

bool IsValidQuerySessionId(std::string_view id) {
  if (id.empty() || id.size() > kMaxQuerySessionIdChars) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool IsValidQueryRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxQueryRequestIdChars) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status ValidateQueryRequest(const wf::v1::QueryRequest& request, const GatewayConfig& limits) {
  if (request.message().empty()) return FieldError("message", "must not be empty");
  if (LongerThan(request.message(), limits.max_message_chars)) {
    return FieldError("message",
                      "longer than " + std::to_string(limits.max_message_chars) + " characters");
  }
  if (!IsValidQuerySessionId(request.session_id())) {
    return FieldError("session_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -");
  }
  if (LongerThan(request.user_id(), kMaxQueryUserIdChars)) {
    return FieldError("user_id",
                      "longer than " + std::to_string(kMaxQueryUserIdChars) + " characters");
  }
  if (request.has_parameters() && DeeperThan(request.parameters(), kMaxQueryNesting - 1)) {
    return FieldError("parameters", "JSON nested deeper than " + std::to_string(kMaxQueryNesting) +
                                        " levels (counting the request body)");
  }
  if (!request.request_id().empty() && !IsValidQueryRequestId(request.request_id())) {
    return FieldError("request_id", "must be 1-128 characters of A-Z a-z 0-9 _ -");
  }
  return Status::Ok();
}

}  // namespace wf
