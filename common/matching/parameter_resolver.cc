#include "matching/parameter_resolver.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "codec/json_dump.h"
#include "codec/json_limits.h"
#include "text/ascii.h"

namespace wf {
namespace {

using Json = nlohmann::json;

std::string Preview(const Json& value) {
  std::string text = DumpJson(value);
  constexpr std::size_t kMax = 64;
  if (text.size() > kMax) {
    std::size_t cut = kMax;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
    text = text.substr(0, cut) + "...";
  }
  return text;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() &&
         (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<std::int64_t> ParseInt(std::string_view s) {
  if (s.size() > 1 && s.front() == '+') s.remove_prefix(1);
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return n;
}

std::optional<double> ParseDouble(std::string_view s) {
  if (s.size() > 1 && s.front() == '+') s.remove_prefix(1);
  double d = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !std::isfinite(d)) {
    return std::nullopt;
  }
  return d;
}

/// An integer-valued double within int64 range, as an integer.
std::optional<std::int64_t> IntegralDouble(double d) {
  if (!std::isfinite(d) || std::floor(d) != d) return std::nullopt;
  if (d < -9.2233720368547758e18 || d >= 9.2233720368547758e18) return std::nullopt;
  return static_cast<std::int64_t>(d);
}

/// Converts `value` to `type` in place; false if it cannot be.
bool Coerce(Json& value, const std::string& type) {
  if (type.empty()) return true;
  if (type == "string") {
    if (value.is_string()) return true;
    if (value.is_number() || value.is_boolean()) {
      value = value.dump();
      return true;
    }
    return false;
  }
  if (type == "integer") {
    if (value.is_number_integer()) return true;
    if (value.is_number_float()) {
      auto n = IntegralDouble(value.get<double>());
      if (!n) return false;
      value = *n;
      return true;
    }
    if (!value.is_string()) return false;
    std::string_view s = Trim(value.get_ref<const std::string&>());
    if (auto n = ParseInt(s)) {
      value = *n;
      return true;
    }
    if (auto d = ParseDouble(s)) {
      if (auto n = IntegralDouble(*d)) {
        value = *n;
        return true;
      }
    }
    return false;
  }
  if (type == "number") {
    if (value.is_number()) return true;
    if (!value.is_string()) return false;
    std::string_view s = Trim(value.get_ref<const std::string&>());
    if (auto n = ParseInt(s)) {
      value = *n;
      return true;
    }
    if (auto d = ParseDouble(s)) {
      value = *d;
      return true;
    }
    return false;
  }
  if (type == "boolean") {
    if (value.is_boolean()) return true;
    if (!value.is_string()) return false;
    std::string_view s = Trim(value.get_ref<const std::string&>());
    if (EqualsIgnoreCase(s, "true")) {
      value = true;
      return true;
    }
    if (EqualsIgnoreCase(s, "false")) {
      value = false;
      return true;
    }
    return false;
  }
  if (type == "object" || type == "array") {
    bool want_object = type == "object";
    if (want_object ? value.is_object() : value.is_array()) return true;
    if (!value.is_string()) return false;
    // Bounded: the text may come from a NATS publisher, and a DOM nested without limit would
    // later be copied and serialized recursively.
    auto parsed = ParseBoundedJson(value.get_ref<const std::string&>());
    if (!parsed.ok() || (want_object ? !parsed->is_object() : !parsed->is_array())) return false;
    value = std::move(parsed).value();
    return true;
  }
  return false;  // unknown type: config validation never lets one through
}

/// Merges `request_parameters` (an object or null, checked by the callers) over `out` (the
/// captures), then applies defaults, coercion and enums.
Result<nlohmann::json> Resolve(const std::vector<ParameterSpec>& specs, Json out,
                               const Json& request_parameters) {
  if (request_parameters.is_object()) {
    for (const auto& [name, value] : request_parameters.items()) {
      if (!value.is_null()) out[name] = value;
    }
  }
  for (const ParameterSpec& spec : specs) {
    auto it = out.find(spec.name);
    if (it == out.end()) {
      if (spec.default_value && !spec.default_value->is_null()) {
        out[spec.name] = *spec.default_value;
      } else if (spec.required) {
        return Error{ErrorCode::kMissingParameter, "missing parameter: " + spec.name};
      }
      continue;
    }
    Json original = *it;
    if (!Coerce(*it, spec.type)) {
      return Error{ErrorCode::kBadRequest, "parameter " + spec.name + ": expected " + spec.type +
                                               ", got " + Preview(original)};
    }
    if (spec.enum_values && spec.enum_values->is_array()) {
      const Json& allowed = *spec.enum_values;
      if (std::find(allowed.begin(), allowed.end(), *it) == allowed.end()) {
        return Error{ErrorCode::kBadRequest, "parameter " + spec.name + ": " + Preview(original) +
                                                 " must be one of " + Preview(allowed)};
      }
    }
  }
  return out;
}

}  // namespace

Result<nlohmann::json> ResolveParameters(const std::vector<ParameterSpec>& specs,
                                         const nlohmann::json& captures,
                                         const nlohmann::json& request_parameters) {
  if (!captures.is_null() && !captures.is_object()) {
    return Error{ErrorCode::kBadRequest, "captures must be a JSON object"};
  }
  if (!request_parameters.is_null() && !request_parameters.is_object()) {
    return Error{ErrorCode::kBadRequest, "parameters must be a JSON object"};
  }
  Json out = Json::object();
  if (captures.is_object()) {
    for (const auto& [name, value] : captures.items()) {
      if (!value.is_null()) out[name] = value;
    }
  }
  return Resolve(specs, std::move(out), request_parameters);
}

Result<nlohmann::json> ResolveParameters(const std::vector<ParameterSpec>& specs,
                                         const CaptureList& captures,
                                         const nlohmann::json& request_parameters) {
  if (!request_parameters.is_null() && !request_parameters.is_object()) {
    return Error{ErrorCode::kBadRequest, "parameters must be a JSON object"};
  }
  Json out = Json::object();
  for (std::size_t i = 0; i < captures.size(); ++i) {
    out[std::string(captures.name(i))] = std::string(captures.value(i));
  }
  return Resolve(specs, std::move(out), request_parameters);
}

}  // namespace wf
