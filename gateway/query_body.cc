#include "gateway/query_body.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "codec/json_limits.h"
#include "codec/json_scan.h"
#include "codec/json_struct.h"
#include "codec/json_text.h"
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

/// 2^53: beyond it not every integer is a double, and `parameters` travel as a
/// google.protobuf.Struct, whose numbers are doubles.
constexpr uint64_t kMaxExactInteger = uint64_t{1} << 53;

/// A decimal number's exact value: sign, significant digits without leading or trailing zeros
/// ("" for zero) and the power of ten of the last one ("12.50" -> 125e-1). From JSON number
/// text or std::to_chars output; exponents saturate far beyond any double.
struct Decimal {
  bool negative = false;
  std::string digits;
  long exponent = 0;
  bool operator==(const Decimal& o) const {
    if (digits.empty() || o.digits.empty()) return digits.empty() && o.digits.empty();
    return negative == o.negative && digits == o.digits && exponent == o.exponent;
  }
};

Decimal ReadDecimal(std::string_view text) {
  Decimal d;
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) d.negative = text[i++] == '-';
  long fraction_digits = 0;
  bool in_fraction = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.') {
      in_fraction = true;
    } else if (c >= '0' && c <= '9') {
      if (!(d.digits.empty() && c == '0')) d.digits.push_back(c);  // no leading zeros
      if (in_fraction) ++fraction_digits;
    } else {
      break;  // 'e' or 'E'
    }
  }
  long exponent = 0;
  if (i < text.size()) {
    ++i;
    bool negative_exponent = false;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative_exponent = text[i++] == '-';
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      exponent = std::min(exponent * 10 + (text[i] - '0'), 100000000L);
    }
    if (negative_exponent) exponent = -exponent;
  }
  d.exponent = exponent - fraction_digits;
  while (!d.digits.empty() && d.digits.back() == '0') {
    d.digits.pop_back();
    ++d.exponent;
  }
  return d;
}

/// The shortest text that reads back as `value` (what a worker sends upstream for it).
std::string ShortestText(double value) {
  char text[64];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ec == std::errc() ? result.ptr : text);
}

/// Why a number of `parameters` would not reach the worker as sent.
enum class Inexact {
  kNo,
  kBeyondRange,  ///< magnitude above 2^53: not every such number is a double, most are rounded
  kLosesDigits,  ///< a fraction or exponent with more digits than its double prints back
};

/// The verdict on one JSON number text. Integers are judged by magnitude alone (any integer up
/// to 2^53 is a double); fractions and exponents by magnitude too, then by whether the double's
/// shortest text has the same decimal value (`0.1` and `12.50` do;
/// `3.14159265358979323846` does not).
Inexact JudgeNumber(std::string_view text) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (text.find_first_of(".eE") == std::string_view::npos) {
    if (text.front() == '-') {
      int64_t v = 0;
      const auto r = std::from_chars(first, last, v);
      return r.ec != std::errc() || v < -static_cast<int64_t>(kMaxExactInteger)
                 ? Inexact::kBeyondRange
                 : Inexact::kNo;
    }
    uint64_t v = 0;
    const auto r = std::from_chars(first, last, v);
    return r.ec != std::errc() || v > kMaxExactInteger ? Inexact::kBeyondRange : Inexact::kNo;
  }
  double value = 0;
  if (std::from_chars(first, last, value).ec != std::errc()) {
    // Out of a double's range: too large, or so small that it would arrive as 0.
    const Decimal d = ReadDecimal(text);
    return d.exponent + static_cast<long>(d.digits.size()) > 0 ? Inexact::kBeyondRange
                                                               : Inexact::kLosesDigits;
  }
  if (std::fabs(value) > static_cast<double>(kMaxExactInteger)) return Inexact::kBeyondRange;
  return ReadDecimal(text) == ReadDecimal(ShortestText(value)) ? Inexact::kNo
                                                               : Inexact::kLosesDigits;
}

/// Finds the first number in the validated JSON value `value` that would not reach the worker
/// as sent (JudgeNumber). `path` is the value's path on entry and the number's on a hit,
/// `*number` its text. Recursion is bounded by the nesting limit checked before.
Inexact FindInexactNumber(std::string_view value, std::string* path, std::string_view* number) {
  if (value.empty()) return Inexact::kNo;
  const std::size_t length = path->size();
  Inexact found = Inexact::kNo;
  switch (value.front()) {
    case '{':
      json_scan::ForEachMember(value, [&](std::string_view key, std::string_view member) {
        std::string name;
        json_scan::AppendDecodedString(key, &name);
        path->append(".").append(Utf8Truncate(name, 64));
        found = FindInexactNumber(member, path, number);
        if (found == Inexact::kNo) path->resize(length);
        return found == Inexact::kNo;
      });
      return found;
    case '[': {
      std::size_t index = 0;
      json_scan::ForEachElement(value, [&](std::string_view element) {
        path->append("[").append(std::to_string(index++)).append("]");
        found = FindInexactNumber(element, path, number);
        if (found == Inexact::kNo) path->resize(length);
        return found == Inexact::kNo;
      });
      return found;
    }
    case '"':
    case 't':
    case 'f':
    case 'n':
      return Inexact::kNo;
    default:
      found = JudgeNumber(value);
      if (found != Inexact::kNo) *number = value;
      return found;
  }
}

/// The DOM type name of a validated JSON value, from its first character.
const char* TypeNameOfText(std::string_view value) {
  switch (value.empty() ? '\0' : value.front()) {
    case 'n':
      return "null";
    case '{':
      return "an object";
    case '[':
      return "an array";
    case '"':
      return "a string";
    case 't':
    case 'f':
      return "a boolean";
    default:
      return "a number";
  }
}

}  // namespace

std::string_view JsonErrorReason(std::string_view what) {
  // "[json.exception.parse_error.101] parse error at line 1, column 2: ...": the bracket is the
  // library's own reference, nothing a client can use.
  if (what.starts_with("[json.exception.")) {
    const std::size_t end = what.find("] ");
    if (end != std::string_view::npos) what.remove_prefix(end + 2);
  }
  return what;
}

namespace {

/// The error for a body nlohmann::json::parse rejects, with its position.
Status InvalidJson(std::string_view body) {
  std::string reason = "malformed";
  try {
    json ignored = json::parse(body);
    (void)ignored;
  } catch (const json::exception& e) {
    reason = JsonErrorReason(e.what());
  }
  return Status(ErrorCode::kInvalidJson, "body is not valid JSON: " + reason);
}

}  // namespace

Status ParseQueryBody(std::string_view body, const GatewayConfig& limits, v1::QueryRequest* out) {
  if (JsonDepthExceeds(body, kMaxQueryNesting)) {
    return Status(ErrorCode::kBadRequest,
                  "body: JSON nested deeper than " + std::to_string(kMaxQueryNesting) + " levels");
  }
  // Validated once as nlohmann::json::parse would accept it, then read field by field from the
  // text (json_scan): no DOM of the body. kMaxQueryNesting is below the scanner's own limit.
  static_assert(kMaxQueryNesting <= static_cast<int>(json_scan::kMaxDepth));
  if (json_scan::Validate(body) != json_scan::Verdict::kValid) return InvalidJson(body);
  const std::string_view root = json_scan::RootValue(body);
  if (root.front() != '{') {
    return Status(ErrorCode::kBadRequest,
                  std::string("body must be a JSON object, not ") + TypeNameOfText(root));
  }

  // The last of a repeated key counts, as in a DOM. Of several unknown keys the first in byte
  // order is named, as iterating a DOM (a sorted map) names it.
  std::optional<std::string_view> message;
  std::optional<std::string_view> session_id;
  std::optional<std::string_view> user_id;
  std::optional<std::string_view> parameters;
  std::optional<std::string> unknown;
  std::string key;
  json_scan::ForEachMember(root, [&](std::string_view quoted_key, std::string_view value) {
    key.clear();
    json_scan::AppendDecodedString(quoted_key, &key);
    if (key == "message") {
      message = value;
    } else if (key == "session_id") {
      session_id = value;
    } else if (key == "user_id") {
      user_id = value;
    } else if (key == "parameters") {
      parameters = value;
    } else if (!unknown || key < *unknown) {
      unknown = key;
    }
    return true;
  });
  if (unknown) {
    std::string text = "unknown field ";
    AppendJsonString(&text, Utf8Truncate(*unknown, 64));
    text.append(" (allowed: ").append(kAllowedFields).append(")");
    return Status(ErrorCode::kBadRequest, std::move(text));
  }

  // The JSON shape here; the values' rules (lengths, the session id's alphabet) are the wire
  // contract's, checked below by ValidateQueryRequest as for any publisher on `wf.query`.
  if (!message) return FieldError("message", "required");
  if (message->front() != '"') {
    return FieldError("message", std::string("must be a string, not ") + TypeNameOfText(*message));
  }
  if (!session_id) return FieldError("session_id", "required");
  if (session_id->front() != '"') {
    return FieldError("session_id",
                      std::string("must be a string, not ") + TypeNameOfText(*session_id));
  }
  if (user_id && user_id->front() != 'n' && user_id->front() != '"') {
    return FieldError("user_id", std::string("must be a string, not ") + TypeNameOfText(*user_id));
  }
  if (parameters && parameters->front() != 'n' && parameters->front() != '{') {
    return FieldError("parameters",
                      std::string("must be a JSON object, not ") + TypeNameOfText(*parameters));
  }
  if (parameters && parameters->front() == '{') {
    // On the text: a double has lost what the check must see by the time it holds the number.
    std::string path = "parameters";
    std::string_view number;
    switch (FindInexactNumber(*parameters, &path, &number)) {
      case Inexact::kNo:
        break;
      case Inexact::kBeyondRange:
        return FieldError(path,
                          "number beyond ±2^53 (9007199254740992) cannot be passed exactly "
                          "(parameters travel as double-precision numbers); send it as a "
                          "string");
      case Inexact::kLosesDigits: {
        double value = 0;
        (void)std::from_chars(number.data(), number.data() + number.size(), value);
        std::string problem = "number ";
        problem.append(Utf8Truncate(number, 48))
            .append(
                " has more digits than a double-precision number carries (it would "
                "arrive as ")
            .append(ShortestText(value))
            .append("; parameters travel as doubles); send it as a string");
        return FieldError(path, problem);
      }
    }
  }

  std::string text;
  json_scan::AppendDecodedString(*message, &text);
  out->set_message(std::move(text));
  text.clear();
  json_scan::AppendDecodedString(*session_id, &text);
  out->set_session_id(std::move(text));
  if (user_id && user_id->front() == '"') {
    text.clear();
    json_scan::AppendDecodedString(*user_id, &text);
    out->set_user_id(std::move(text));
  }
  if (parameters && parameters->front() == '{') {
    google::protobuf::Struct fields = JsonTextToStruct(*parameters);
    if (fields.fields_size() > 0) *out->mutable_parameters() = std::move(fields);
  }
  return ValidateQueryRequest(*out, limits);
}

}  // namespace wf
