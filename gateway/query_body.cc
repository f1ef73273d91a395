#include "gateway/query_body.h"

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "codec/json_limits.h"
#include "codec/json_struct.h"
#include "gateway/json_text.h"
#include "protocol/query_rules.h"
#include "text/utf8.h"

namespace wf {
namespace {

using nlohmann::json;

constexpr std::string_view kAllowedFields = "message, session_id, user_id, parameters";

Status FieldError(std::string_view field, std::string_view problem) {
  std::string message;
  message.reserve(field.size() + problem.size() + 2);
  message.append(field).append(": ").append(problem);
  return Status(ErrorCode::kBadRequest, std::move(message));
}

const char* TypeName(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "a number";
    default:
      return "not a JSON value";
  }
}

/// 2^53: beyond it not every integer is a double, and `parameters` travel as a
/// google.protobuf.Struct, whose numbers are doubles.
constexpr uint64_t kMaxExactInteger = uint64_t{1} << 53;

bool BeyondExactRange(const json& number) {
  switch (number.type()) {
    case json::value_t::number_unsigned:
      return number.get<uint64_t>() > kMaxExactInteger;
    case json::value_t::number_integer: {
      const int64_t v = number.get<int64_t>();
      return v > static_cast<int64_t>(kMaxExactInteger) ||
             v < -static_cast<int64_t>(kMaxExactInteger);
    }
    case json::value_t::number_float:
      // Too large for a 64-bit integer, or written with a fraction or exponent; every double
      // this large is an integer, most of them a rounded one.
      return std::fabs(number.get<double>()) > static_cast<double>(kMaxExactInteger);
    default:
      return false;
  }
}

/// Finds the first number in `value` that would not reach the worker as sent; `path` is
/// `value`'s path on entry and that number's on a hit. Recursion is bounded by the nesting limit
/// checked before.
bool FindInexactNumber(const json& value, std::string* path) {
  if (value.is_number()) return BeyondExactRange(value);
  const std::size_t length = path->size();
  if (value.is_object()) {
    for (auto it = value.begin(); it != value.end(); ++it) {
      path->append(".").append(Utf8Truncate(it.key(), 64));
      if (FindInexactNumber(it.value(), path)) return true;
      path->resize(length);
    }
  } else if (value.is_array()) {
    std::size_t index = 0;
    for (const auto& item : value) {
      path->append("[").append(std::to_string(index++)).append("]");
      if (FindInexactNumber(item, path)) return true;
      path->resize(length);
    }
  }
  return false;
}

}  // namespace

Status ParseQueryBody(std::string_view body, const GatewayConfig& limits, v1::QueryRequest* out) {
  if (JsonDepthExceeds(body, kMaxQueryNesting)) {
    return Status(ErrorCode::kBadRequest,
                  "body: JSON nested deeper than " + std::to_string(kMaxQueryNesting) + " levels");
  }
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    // Parse again with exceptions only on this (rare) path, for a message with the position.
    std::string reason = "malformed";
    try {
      json ignored = json::parse(body);
      (void)ignored;
    } catch (const json::exception& e) {
      reason = e.what();
    }
    return Status(ErrorCode::kInvalidJson, "body is not valid JSON: " + reason);
  }
  if (!doc.is_object()) {
    return Status(ErrorCode::kBadRequest,
                  std::string("body must be a JSON object, not ") + TypeName(doc));
  }

  json* message = nullptr;
  json* session_id = nullptr;
  json* user_id = nullptr;
  json* parameters = nullptr;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& key = it.key();
    if (key == "message") {
      message = &it.value();
    } else if (key == "session_id") {
      session_id = &it.value();
    } else if (key == "user_id") {
      user_id = &it.value();
    } else if (key == "parameters") {
      parameters = &it.value();
    } else {
      std::string text = "unknown field ";
      AppendJsonString(&text, Utf8Truncate(key, 64));
      text.append(" (allowed: ").append(kAllowedFields).append(")");
      return Status(ErrorCode::kBadRequest, std::move(text));
    }
  }

  // The JSON shape here; the values' rules (lengths, the session id's alphabet) are the wire
  // contract's, checked below by ValidateQueryRequest as for any publisher on `wf.query`.
  if (message == nullptr) return FieldError("message", "required");
  if (!message->is_string()) {
    return FieldError("message", std::string("must be a string, not ") + TypeName(*message));
  }
  if (session_id == nullptr) return FieldError("session_id", "required");
  if (!session_id->is_string()) {
    return FieldError("session_id", std::string("must be a string, not ") + TypeName(*session_id));
  }
  if (user_id != nullptr && !user_id->is_null() && !user_id->is_string()) {
    return FieldError("user_id", std::string("must be a string, not ") + TypeName(*user_id));
  }
  if (parameters != nullptr && !parameters->is_null() && !parameters->is_object()) {
    return FieldError("parameters",
                      std::string("must be a JSON object, not ") + TypeName(*parameters));
  }
  if (parameters != nullptr && parameters->is_object()) {
    std::string path = "parameters";
    if (FindInexactNumber(*parameters, &path)) {
      return FieldError(path,
                        "number beyond ±2^53 (9007199254740992) cannot be passed exactly "
                        "(parameters travel as double-precision numbers); send it as a "
                        "string");
    }
  }

  out->set_message(std::move(message->get_ref<std::string&>()));
  out->set_session_id(std::move(session_id->get_ref<std::string&>()));
  if (user_id != nullptr && user_id->is_string()) {
    out->set_user_id(std::move(user_id->get_ref<std::string&>()));
  }
  if (parameters != nullptr && parameters->is_object() && !parameters->empty()) {
    *out->mutable_parameters() = JsonToStruct(*parameters);
  }
  return ValidateQueryRequest(*out, limits);
}

}  // namespace wf
