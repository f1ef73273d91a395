#include "config/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>

#include "codec/json_dump.h"
#include "config/json_path.h"
#include "config/pattern.h"
#include "config/placeholder.h"
#include "config/strict_json.h"
#include "text/ascii.h"
#include "text/http_url.h"

namespace wf {
namespace {

using OrderedJson = nlohmann::ordered_json;

constexpr std::size_t kMaxConfigBytes = std::size_t{16} << 20;
constexpr std::size_t kMaxInstructionsBytes = std::size_t{1} << 20;
constexpr int kMaxSchemaDepth = 8;
constexpr std::string_view kReservedNames[] = {"user_message", "session_id", "result"};
constexpr std::string_view kParameterTypes[] = {"string",  "number", "integer",
                                                "boolean", "object", "array"};
constexpr std::string_view kMethods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

/// Thrown by the validators below and caught in ParseConfig; never leaves this file.
struct ConfigError {
  std::string message;
};

[[noreturn]] void Fail(const std::string& path, const std::string& reason) {
  throw ConfigError{(path.empty() ? std::string("config") : path) + ": " + reason};
}

std::string TypeName(const OrderedJson& v) {
  switch (v.type()) {
    case OrderedJson::value_t::null:
      return "null";
    case OrderedJson::value_t::boolean:
      return "boolean";
    case OrderedJson::value_t::number_integer:
    case OrderedJson::value_t::number_unsigned:
      return "integer";
    case OrderedJson::value_t::number_float:
      return "number";
    case OrderedJson::value_t::string:
      return "string";
    case OrderedJson::value_t::array:
      return "array";
    case OrderedJson::value_t::object:
      return "object";
    default:
      return "unsupported value";
  }
}

std::string JoinNames(std::initializer_list<std::string_view> names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out.append(n);
  }
  return out;
}

template <typename Range>
bool Contains(const Range& range, std::string_view value) {
  return std::find(std::begin(range), std::end(range), value) != std::end(range);
}

/// [A-Za-z0-9_-]{1,64}: flow ids, tool and skill names become LLM tool names.
bool IsValidToolName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

/// [A-Za-z_][A-Za-z0-9_]{0,63}: parameter names must be usable as placeholders.
bool IsValidParameterName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto start = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!start(name.front())) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return start(c) || (c >= '0' && c <= '9'); });
}

/// RFC 7230 token characters.
bool IsValidHeaderName(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  static constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           kSpecials.find(c) != std::string_view::npos;
  });
}

std::string ToUpper(std::string s) {
  for (char& c : s) c = AsciiUpper(c);
  return s;
}

std::string ToLower(std::string s) {
  for (char& c : s) c = AsciiLower(c);
  return s;
}

/// True if `value` is a valid instance of parameter type `type` ("" = any).
bool MatchesType(const OrderedJson& value, std::string_view type) {
  if (type.empty()) return true;
  if (type == "string") return value.is_string();
  if (type == "integer") {
    if (value.is_number_integer()) return true;
    if (!value.is_number_float()) return false;
    double d = value.get<double>();
    return std::isfinite(d) && std::floor(d) == d;
  }
  if (type == "number") return value.is_number();
  if (type == "boolean") return value.is_boolean();
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  return false;
}

/// An object whose keys have been checked against a fixed list, with typed accessors that fail
/// with the member's JSON path.
class Fields {
 public:
  Fields(const OrderedJson& value, std::string path,
         std::initializer_list<std::string_view> allowed)
      : value_(value), path_(std::move(path)) {
    if (!value.is_object()) Fail(path_, "expected an object, got " + TypeName(value));
    for (const auto& [key, member] : value.items()) {
      if (!Contains(allowed, key)) {
        Fail(JsonPathMember(path_, key),
             "unknown field (expected one of: " + JoinNames(allowed) + ")");
      }
    }
  }

  const std::string& path() const { return path_; }
  std::string PathOf(std::string_view key) const { return JsonPathMember(path_, key); }

  const OrderedJson* Get(std::string_view key) const {
    auto it = value_.find(key);
    return it == value_.end() ? nullptr : &*it;
  }

  const OrderedJson& Require(std::string_view key) const {
    const OrderedJson* v = Get(key);
    if (v == nullptr) Fail(PathOf(key), "required field is missing");
    return *v;
  }

  std::optional<std::string> String(std::string_view key, bool required = false,
                                    bool non_empty = false) const {
    const OrderedJson* v = required ? &Require(key) : Get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) Fail(PathOf(key), "expected a string, got " + TypeName(*v));
    std::string s = v->get<std::string>();
    if (non_empty && s.empty()) Fail(PathOf(key), "must not be empty");
    return s;
  }

  std::optional<std::int64_t> Integer(std::string_view key, std::int64_t min,
                                      std::int64_t max) const {
    const OrderedJson* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) Fail(PathOf(key), "expected an integer, got " + TypeName(*v));
    bool in_range;
    std::int64_t n = 0;
    if (v->is_number_unsigned()) {
      auto u = v->get<std::uint64_t>();
      in_range = u <= static_cast<std::uint64_t>(max);
      n = in_range ? static_cast<std::int64_t>(u) : 0;
    } else {
      n = v->get<std::int64_t>();
      in_range = n >= min && n <= max;
    }
    in_range = in_range && n >= min;
    if (!in_range) {
      Fail(PathOf(key), "out of range: " + v->dump() + " (allowed " + std::to_string(min) + ".." +
                            std::to_string(max) + ")");
    }
    return n;
  }

  std::optional<double> Number(std::string_view key, double min, double max) const {
    const OrderedJson* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) Fail(PathOf(key), "expected a number, got " + TypeName(*v));
    double d = v->get<double>();
    if (!(d >= min && d <= max)) {
      std::ostringstream range;
      range << min << ".." << max;
      Fail(PathOf(key), "out of range: " + v->dump() + " (allowed " + range.str() + ")");
    }
    return d;
  }

  std::optional<bool> Bool(std::string_view key) const {
    const OrderedJson* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) Fail(PathOf(key), "expected a boolean, got " + TypeName(*v));
    return v->get<bool>();
  }

  const OrderedJson* Array(std::string_view key, bool required = false) const {
    const OrderedJson* v = required ? &Require(key) : Get(key);
    if (v != nullptr && !v->is_array()) {
      Fail(PathOf(key), "expected an array, got " + TypeName(*v));
    }
    return v;
  }

 private:
  const OrderedJson& value_;
  std::string path_;
};

void CheckTemplate(const std::string& text, const std::string& path) {
  auto parsed = ParseTemplate(text);
  if (!parsed.ok()) Fail(path, "invalid template: " + parsed.error().message);
}

// ---------------------------------------------------------------------------------------------
// JSON Schema subset

/// Validates a property schema (recursively) and returns its type ("" = any).
std::string CheckPropertySchema(const OrderedJson& v, const std::string& path, int depth,
                                bool type_required) {
  if (depth > kMaxSchemaDepth) Fail(path, "schema nested too deeply (max 8 levels)");
  Fields f(v, path,
           {"type", "description", "title", "default", "enum", "items", "properties", "required",
            "additionalProperties"});
  std::string type;
  if (const OrderedJson* t = f.Get("type")) {
    if (!t->is_string()) {
      Fail(f.PathOf("type"),
           "expected a string (one of string, number, integer, boolean, "
           "object, array), got " +
               TypeName(*t));
    }
    type = t->get<std::string>();
    if (!Contains(kParameterTypes, type)) {
      Fail(f.PathOf("type"), "unsupported type " + JsonQuote(type) +
                                 " (expected one of string, number, integer, boolean, object, "
                                 "array)");
    }
  } else if (type_required) {
    Fail(f.PathOf("type"), "required field is missing");
  }
  f.String("description");
  f.String("title");
  if (f.Get("items") != nullptr) {
    if (type != "array") Fail(f.PathOf("items"), "only allowed when type is \"array\"");
    CheckPropertySchema(*f.Get("items"), f.PathOf("items"), depth + 1, false);
  }
  for (std::string_view key : {"properties", "required", "additionalProperties"}) {
    if (f.Get(key) != nullptr && type != "object") {
      Fail(f.PathOf(key), "only allowed when type is \"object\"");
    }
  }
  std::set<std::string> property_names;
  if (const OrderedJson* props = f.Get("properties")) {
    std::string props_path = f.PathOf("properties");
    if (!props->is_object()) Fail(props_path, "expected an object, got " + TypeName(*props));
    for (const auto& [name, schema] : props->items()) {
      CheckPropertySchema(schema, JsonPathMember(props_path, name), depth + 1, false);
      property_names.insert(name);
    }
  }
  if (const OrderedJson* required = f.Array("required")) {
    std::set<std::string> seen;
    for (std::size_t i = 0; i < required->size(); ++i) {
      std::string item_path = JsonPathIndex(f.PathOf("required"), i);
      const OrderedJson& item = (*required)[i];
      if (!item.is_string()) Fail(item_path, "expected a string, got " + TypeName(item));
      std::string name = item.get<std::string>();
      if (!property_names.count(name))
        Fail(item_path, "required property " + JsonQuote(name) + " is not declared in properties");
      if (!seen.insert(name).second) Fail(item_path, "listed twice");
    }
  }
  f.Bool("additionalProperties");
  const OrderedJson* enum_values = f.Get("enum");
  if (enum_values != nullptr) {
    if (!enum_values->is_array() || enum_values->empty()) {
      Fail(f.PathOf("enum"), "expected a non-empty array");
    }
    for (std::size_t i = 0; i < enum_values->size(); ++i) {
      if (!MatchesType((*enum_values)[i], type)) {
        Fail(JsonPathIndex(f.PathOf("enum"), i), "does not match type " + JsonQuote(type));
      }
    }
  }
  if (const OrderedJson* def = f.Get("default")) {
    if (!MatchesType(*def, type)) {
      Fail(f.PathOf("default"),
           "default " + def->dump() + " does not match type " + JsonQuote(type));
    }
    if (enum_values != nullptr &&
        std::find(enum_values->begin(), enum_values->end(), *def) == enum_values->end()) {
      Fail(f.PathOf("default"), "default " + def->dump() + " is not one of enum");
    }
  }
  return type;
}

struct ParsedSchema {
  nlohmann::json schema;
  std::vector<ParameterSpec> parameters;
};

/// Validates a top-level `parameters` schema. `extra_names` (named capture groups of a flow's
/// patterns) may also be `required`; those not declared as properties are appended as specs of
/// type "" (any).
ParsedSchema ParseParametersSchema(const OrderedJson& v, const std::string& path,
                                   const std::vector<std::string>& extra_names) {
  Fields f(v, path,
           {"type", "properties", "required", "description", "title", "additionalProperties"});
  std::string type = *f.String("type", /*required=*/true);
  if (type != "object") Fail(f.PathOf("type"), "must be \"object\", got " + JsonQuote(type));
  f.String("description");
  f.String("title");
  f.Bool("additionalProperties");

  ParsedSchema out;
  if (const OrderedJson* props = f.Get("properties")) {
    std::string props_path = f.PathOf("properties");
    if (!props->is_object()) Fail(props_path, "expected an object, got " + TypeName(*props));
    for (const auto& [name, schema] : props->items()) {
      std::string prop_path = JsonPathMember(props_path, name);
      if (!IsValidParameterName(name)) {
        Fail(prop_path, "invalid parameter name (expected [A-Za-z_][A-Za-z0-9_]{0,63})");
      }
      if (Contains(kReservedNames, name)) {
        Fail(prop_path, "parameter name " + JsonQuote(name) +
                            " is reserved (user_message, session_id, result)");
      }
      ParameterSpec spec;
      spec.name = name;
      spec.type = CheckPropertySchema(schema, prop_path, 1, false);
      if (auto it = schema.find("description"); it != schema.end()) {
        spec.description = it->get<std::string>();
      }
      if (auto it = schema.find("default"); it != schema.end()) spec.default_value = *it;
      if (auto it = schema.find("enum"); it != schema.end()) spec.enum_values = *it;
      out.parameters.push_back(std::move(spec));
    }
  }
  auto find_spec = [&](std::string_view name) -> ParameterSpec* {
    for (auto& spec : out.parameters) {
      if (spec.name == name) return &spec;
    }
    return nullptr;
  };
  for (const std::string& extra : extra_names) {
    if (find_spec(extra) == nullptr)
      out.parameters.push_back(ParameterSpec{extra, "", "", {}, false, {}});
  }
  if (const OrderedJson* required = f.Array("required")) {
    std::set<std::string> seen;
    for (std::size_t i = 0; i < required->size(); ++i) {
      std::string item_path = JsonPathIndex(f.PathOf("required"), i);
      const OrderedJson& item = (*required)[i];
      if (!item.is_string()) Fail(item_path, "expected a string, got " + TypeName(item));
      std::string name = item.get<std::string>();
      ParameterSpec* spec = find_spec(name);
      if (spec == nullptr) {
        Fail(item_path, "required parameter " + JsonQuote(name) +
                            (extra_names.empty() ? " is not declared in properties"
                                                 : " is neither a property nor a named capture "
                                                   "group of the flow's trigger_patterns"));
      }
      if (!seen.insert(name).second) Fail(item_path, "listed twice");
      spec->required = true;
    }
  }
  out.schema = nlohmann::json(v);
  return out;
}

nlohmann::json EmptyObjectSchema() {
  return nlohmann::json{{"type", "object"}, {"properties", nlohmann::json::object()}};
}

// ---------------------------------------------------------------------------------------------
// Endpoints

void CheckUrl(const std::string& url, const std::string& path) {
  auto segments = ParseTemplate(url);
  if (!segments.ok()) Fail(path, "invalid template: " + segments.error().message);
  if (std::string_view problem = HttpUrlProblem(url); !problem.empty()) {
    Fail(path, std::string(problem));
  }
  // The scheme and host must be literal: a parameter must never choose where a request goes.
  // The url starts with "http", so the first segment is literal text.
  const std::string& first = segments->front().text;
  if (first.find_first_of("/?#", HttpSchemeLength(url)) == std::string::npos &&
      segments->size() > 1) {
    Fail(path, "placeholders are not allowed in the scheme or host of the url");
  }
}

void CheckBodyTemplates(const OrderedJson& v, const std::string& path) {
  if (v.is_string()) {
    CheckTemplate(v.get<std::string>(), path);
  } else if (v.is_object()) {
    for (const auto& [key, member] : v.items()) {
      std::string member_path = JsonPathMember(path, key);
      // Keys are sent as written; one that looks like a placeholder would go out literally.
      auto key_segments = ParseTemplate(key);
      if (key_segments.ok()) {
        for (const auto& s : *key_segments) {
          if (s.is_placeholder) {
            Fail(member_path, "placeholders are not allowed in body object keys (\"{" + s.text +
                                  "}\" would be sent literally)");
          }
        }
      }
      CheckBodyTemplates(member, member_path);
    }
  } else if (v.is_array()) {
    for (std::size_t i = 0; i < v.size(); ++i) CheckBodyTemplates(v[i], JsonPathIndex(path, i));
  }
}

EndpointConfig ParseEndpoint(const OrderedJson& v, const std::string& path) {
  Fields f(v, path, {"url", "method", "headers", "body", "timeout_ms", "max_response_bytes"});
  EndpointConfig e;
  e.url = *f.String("url", /*required=*/true, /*non_empty=*/true);
  CheckUrl(e.url, f.PathOf("url"));
  if (auto method = f.String("method")) {
    e.method = ToUpper(*method);
    if (!Contains(kMethods, e.method)) {
      Fail(f.PathOf("method"), "unsupported method " + JsonQuote(*method) +
                                   " (expected one of GET, POST, PUT, PATCH, DELETE)");
    }
  }
  if (const OrderedJson* headers = f.Get("headers")) {
    std::string headers_path = f.PathOf("headers");
    if (!headers->is_object()) Fail(headers_path, "expected an object, got " + TypeName(*headers));
    std::set<std::string> seen;
    for (const auto& [name, value] : headers->items()) {
      std::string header_path = JsonPathMember(headers_path, name);
      if (!IsValidHeaderName(name)) Fail(header_path, "invalid header name");
      if (!seen.insert(ToLower(name)).second) {
        Fail(header_path, "duplicate header (names are case-insensitive)");
      }
      if (!value.is_string()) Fail(header_path, "expected a string, got " + TypeName(value));
      std::string text = value.get<std::string>();
      if (text.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
        Fail(header_path, "header value contains CR, LF or NUL");
      }
      CheckTemplate(text, header_path);
      e.headers.emplace_back(name, std::move(text));
    }
  }
  if (const OrderedJson* body = f.Get("body")) {
    CheckBodyTemplates(*body, f.PathOf("body"));
    e.body = nlohmann::json(*body);
  }
  if (auto ms = f.Integer("timeout_ms", 1, 600000)) e.timeout = std::chrono::milliseconds(*ms);
  if (auto bytes = f.Integer("max_response_bytes", 1, std::int64_t{256} << 20)) {
    e.max_response_bytes = static_cast<std::size_t>(*bytes);
  }
  return e;
}

/// Checks the placeholders of the (syntactically valid) template `text`. `{result...}` outside a
/// response template is an error: the response does not exist yet. A placeholder that names no
/// declared parameter, named capture group, user_message or session_id (or, in a response
/// template, result) is valid, as ARCHITECTURE.md's own example config shows (`"days": "{days}"`
/// with no `days` declared): a request's `parameters` (or a tool call's arguments) can supply any
/// name, and without a value the call fails with missing_parameter naming it. It is recorded in
/// `warnings` instead, so that `--check-config` shows a likely typo. A dotted name ({user.name},
/// {result.a.0}) is judged by its first part.
void CheckPlaceholderNames(const std::string& text, const std::string& path,
                           const std::vector<ParameterSpec>& parameters, bool response,
                           std::vector<std::string>& warnings) {
  auto segments = ParseTemplate(text);
  if (!segments.ok()) return;  // reported by CheckTemplate
  for (const TemplateSegment& s : *segments) {
    if (!s.is_placeholder) continue;
    const std::string& name = s.path.front();
    if (name == "user_message" || name == "session_id") continue;
    if (name == "result") {
      if (response) continue;
      Fail(path, "placeholder {" + s.text +
                     "}: the response ({result}) is only available in response_template");
    }
    bool declared = false;
    for (const ParameterSpec& p : parameters) declared = declared || p.name == name;
    if (!declared) {
      warnings.push_back(path + ": placeholder {" + s.text + "} names no declared parameter" +
                         (response ? ", capture group or result field" : " or capture group") +
                         ": only a request's \"parameters\" can fill it, else the call fails "
                         "with missing_parameter (declare " +
                         JsonQuote(name) + " under \"parameters\" if it is meant)");
    }
  }
}

void CheckBodyPlaceholderNames(const nlohmann::json& v, const std::string& path,
                               const std::vector<ParameterSpec>& parameters,
                               std::vector<std::string>& warnings) {
  if (v.is_string()) {
    CheckPlaceholderNames(v.get_ref<const std::string&>(), path, parameters, false, warnings);
  } else if (v.is_object()) {
    for (const auto& [key, member] : v.items()) {
      CheckBodyPlaceholderNames(member, JsonPathMember(path, key), parameters, warnings);
    }
  } else if (v.is_array()) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      CheckBodyPlaceholderNames(v[i], JsonPathIndex(path, i), parameters, warnings);
    }
  }
}

/// Checks every placeholder of an endpoint and its response template (see
/// CheckPlaceholderNames); undeclared names go to `warnings`.
void CheckEndpointPlaceholders(const EndpointConfig& e, const std::string& response_template,
                               const Fields& f, const std::vector<ParameterSpec>& parameters,
                               std::vector<std::string>& warnings) {
  const std::string endpoint_path = f.PathOf("endpoint");
  CheckPlaceholderNames(e.url, JsonPathMember(endpoint_path, "url"), parameters, false, warnings);
  const std::string headers_path = JsonPathMember(endpoint_path, "headers");
  for (const auto& [name, value] : e.headers) {
    CheckPlaceholderNames(value, JsonPathMember(headers_path, name), parameters, false, warnings);
  }
  if (e.body) {
    CheckBodyPlaceholderNames(*e.body, JsonPathMember(endpoint_path, "body"), parameters, warnings);
  }
  CheckPlaceholderNames(response_template, f.PathOf("response_template"), parameters, true,
                        warnings);
}

std::string ParseResponseTemplate(const Fields& f) {
  auto text = f.String("response_template");
  if (!text) return "{result}";
  CheckTemplate(*text, f.PathOf("response_template"));
  return *text;
}

void CheckToolName(const std::string& name, const std::string& path) {
  if (!IsValidToolName(name))
    Fail(path, "invalid name " + JsonQuote(name) + " (expected [A-Za-z0-9_-]{1,64})");
}

// ---------------------------------------------------------------------------------------------
// Sections

FlowConfig ParseFlow(const OrderedJson& v, const std::string& path,
                     std::vector<std::string>& warnings) {
  Fields f(v, path,
           {"flow_id", "name", "description", "trigger_patterns", "parameters", "endpoint",
            "response_template"});
  FlowConfig flow;
  flow.flow_id = *f.String("flow_id", /*required=*/true);
  CheckToolName(flow.flow_id, f.PathOf("flow_id"));
  flow.name = f.String("name").value_or(flow.flow_id);
  flow.description = f.String("description").value_or("");

  const OrderedJson& patterns = *f.Array("trigger_patterns", /*required=*/true);
  std::string patterns_path = f.PathOf("trigger_patterns");
  if (patterns.empty()) Fail(patterns_path, "must not be empty");
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    std::string pattern_path = JsonPathIndex(patterns_path, i);
    const OrderedJson& p = patterns[i];
    if (!p.is_string()) Fail(pattern_path, "expected a string, got " + TypeName(p));
    std::string pattern = p.get<std::string>();
    if (pattern.empty()) Fail(pattern_path, "must not be empty (it would match every message)");
    auto re = CompileTriggerPattern(pattern);
    if (!re.ok()) Fail(pattern_path, re.error().message);
    // Matching is unanchored: a pattern that matches "" ("x?", ".*", "a|", "^", "x?$") matches
    // at the start or end of every message, exactly like the empty pattern refused above. One
    // anchored at both ends ("^(hi|hello)?$") matches "" but not every message: it is fine, as
    // its failing a text no pattern spells out ("\x01") shows.
    if (RE2::PartialMatch("", **re) && RE2::PartialMatch("\x01", **re)) {
      Fail(pattern_path,
           "matches the empty string, so it would match every message and no message would "
           "reach the agent");
    }
    std::set<std::string> groups_of_pattern;
    for (const auto& [index, group] : (*re)->CapturingGroupNames()) {
      if (!groups_of_pattern.insert(group).second) {
        // RE2 accepts it, but only one of the groups could become the parameter.
        Fail(pattern_path, "named group " + JsonQuote(group) +
                               " appears more than once in this pattern (use it once, or give "
                               "the alternatives their own trigger_patterns)");
      }
      if (Contains(kReservedNames, group)) {
        Fail(pattern_path,
             "named group " + JsonQuote(group) + " is reserved (user_message, session_id, result)");
      }
      if (!IsValidParameterName(group)) {
        Fail(pattern_path, "named group " + JsonQuote(group) +
                               " is not a valid parameter name ([A-Za-z_][A-Za-z0-9_]{0,63})");
      }
      if (!Contains(flow.capture_groups, group)) flow.capture_groups.push_back(group);
    }
    flow.trigger_patterns.push_back(std::move(pattern));
  }

  if (const OrderedJson* params = f.Get("parameters")) {
    ParsedSchema parsed =
        ParseParametersSchema(*params, f.PathOf("parameters"), flow.capture_groups);
    flow.parameters_schema = std::move(parsed.schema);
    flow.parameters = std::move(parsed.parameters);
  } else {
    flow.parameters_schema = EmptyObjectSchema();
    for (const std::string& group : flow.capture_groups) {
      flow.parameters.push_back(ParameterSpec{group, "", "", {}, false, {}});
    }
  }
  flow.endpoint = ParseEndpoint(f.Require("endpoint"), f.PathOf("endpoint"));
  flow.response_template = ParseResponseTemplate(f);
  CheckEndpointPlaceholders(flow.endpoint, flow.response_template, f, flow.parameters, warnings);
  return flow;
}

ToolConfig ParseTool(const OrderedJson& v, const std::string& path,
                     std::vector<std::string>& warnings) {
  Fields f(v, path, {"name", "description", "parameters", "endpoint", "response_template"});
  ToolConfig tool;
  tool.name = *f.String("name", /*required=*/true);
  CheckToolName(tool.name, f.PathOf("name"));
  tool.description = f.String("description").value_or("");
  if (const OrderedJson* params = f.Get("parameters")) {
    ParsedSchema parsed = ParseParametersSchema(*params, f.PathOf("parameters"), {});
    tool.parameters_schema = std::move(parsed.schema);
    tool.parameters = std::move(parsed.parameters);
  } else {
    tool.parameters_schema = EmptyObjectSchema();
  }
  tool.endpoint = ParseEndpoint(f.Require("endpoint"), f.PathOf("endpoint"));
  tool.response_template = ParseResponseTemplate(f);
  CheckEndpointPlaceholders(tool.endpoint, tool.response_template, f, tool.parameters, warnings);
  return tool;
}

/// Removes a leading YAML front matter block ("---" line ... "---" line) and the blank lines
/// after it. A file without a closing "---" is returned unchanged.
std::string StripFrontMatter(std::string text) {
  auto line_end = [&](std::size_t pos) {
    std::size_t nl = text.find('\n', pos);
    return nl == std::string::npos ? text.size() : nl;
  };
  auto line_is_fence = [&](std::size_t begin, std::size_t end) {
    std::string_view line(text.data() + begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    return line == "---";
  };
  std::size_t start = 0;
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) start = 3;  // UTF-8 BOM
  std::size_t first_end = line_end(start);
  if (first_end == text.size() || !line_is_fence(start, first_end)) return text;
  std::size_t pos = first_end + 1;
  while (pos <= text.size()) {
    std::size_t end = line_end(pos);
    if (line_is_fence(pos, end)) {
      std::size_t rest = end < text.size() ? end + 1 : end;
      while (rest < text.size() && (text[rest] == '\n' || text[rest] == '\r')) ++rest;
      return text.substr(rest);
    }
    if (end == text.size()) break;
    pos = end + 1;
  }
  return text;
}

std::string ReadInstructionsFile(const std::string& file, const std::string& base_dir,
                                 const std::string& path) {
  std::filesystem::path p(file);
  if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) Fail(path, "instructions file not found: " + p.string());
  if (!std::filesystem::is_regular_file(p, ec)) {
    Fail(path, "instructions file is not a regular file: " + p.string());
  }
  auto size = std::filesystem::file_size(p, ec);
  if (ec) Fail(path, "cannot read instructions file " + p.string() + ": " + ec.message());
  if (size > kMaxInstructionsBytes)
    Fail(path, "instructions file larger than 1 MiB: " + p.string());
  std::ifstream in(p, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) Fail(path, "cannot read instructions file " + p.string());
  return StripFrontMatter(text.str());
}

SkillConfig ParseSkill(const OrderedJson& v, const std::string& path, const std::string& base_dir) {
  Fields f(v, path,
           {"name", "description", "mode", "instructions", "instructions_file", "allowed_tools",
            "model", "parameters", "output_schema"});
  SkillConfig skill;
  skill.name = *f.String("name", /*required=*/true);
  CheckToolName(skill.name, f.PathOf("name"));
  skill.description = f.String("description").value_or("");
  skill.mode = f.String("mode").value_or("agent");
  if (skill.mode != "agent" && skill.mode != "function") {
    Fail(f.PathOf("mode"),
         "unsupported mode " + JsonQuote(skill.mode) + " (expected \"agent\" or \"function\")");
  }
  auto inline_text = f.String("instructions");
  auto file = f.String("instructions_file", false, /*non_empty=*/true);
  if (inline_text && file) {
    Fail(f.PathOf("instructions_file"), "give either instructions or instructions_file, not both");
  }
  if (!inline_text && !file)
    Fail(f.PathOf("instructions"), "required field is missing (or give instructions_file)");
  if (inline_text) {
    skill.instructions = *inline_text;
    if (skill.instructions.empty()) Fail(f.PathOf("instructions"), "must not be empty");
  } else {
    skill.instructions = ReadInstructionsFile(*file, base_dir, f.PathOf("instructions_file"));
    if (skill.instructions.find_first_not_of(" \t\r\n") == std::string::npos) {
      Fail(f.PathOf("instructions_file"), "instructions file has no text after its front matter");
    }
  }
  if (const OrderedJson* allowed = f.Array("allowed_tools")) {
    for (std::size_t i = 0; i < allowed->size(); ++i) {
      std::string item_path = JsonPathIndex(f.PathOf("allowed_tools"), i);
      const OrderedJson& item = (*allowed)[i];
      if (!item.is_string()) Fail(item_path, "expected a string, got " + TypeName(item));
      std::string name = item.get<std::string>();
      if (Contains(skill.allowed_tools, name)) Fail(item_path, "listed twice");
      skill.allowed_tools.push_back(std::move(name));
    }
  }
  skill.model = f.String("model").value_or("");
  if (const OrderedJson* params = f.Get("parameters")) {
    ParsedSchema parsed = ParseParametersSchema(*params, f.PathOf("parameters"), {});
    skill.parameters_schema = std::move(parsed.schema);
    skill.parameters = std::move(parsed.parameters);
  } else {
    skill.parameters_schema = {{"type", "object"},
                               {"properties", {{"input", {{"type", "string"}}}}},
                               {"required", {"input"}}};
    skill.parameters.push_back(ParameterSpec{"input", "string", "", {}, true, {}});
  }
  if (const OrderedJson* output = f.Get("output_schema")) {
    if (skill.mode != "function") {
      Fail(f.PathOf("output_schema"), "only allowed when mode is \"function\"");
    }
    CheckPropertySchema(*output, f.PathOf("output_schema"), 1, /*type_required=*/true);
    skill.output_schema = nlohmann::json(*output);
  } else if (skill.mode == "function") {
    Fail(f.PathOf("output_schema"), "required field is missing (mode \"function\" needs it)");
  }
  return skill;
}

AgentConfig ParseAgent(const OrderedJson& v, const std::string& path) {
  Fields f(v, path,
           {"system_prompt", "model", "temperature", "max_tool_rounds", "turn_timeout_ms",
            "history_max_messages", "history_max_chars", "on_busy", "session_ttl_ms",
            "max_answer_bytes"});
  AgentConfig a;
  if (auto s = f.String("system_prompt", false, /*non_empty=*/true)) a.system_prompt = *s;
  if (auto s = f.String("model")) a.model = *s;
  if (auto d = f.Number("temperature", 0.0, 2.0)) a.temperature = *d;
  if (auto n = f.Integer("max_tool_rounds", 1, 64)) a.max_tool_rounds = static_cast<int>(*n);
  if (auto n = f.Integer("turn_timeout_ms", 1000, 3600000)) {
    a.turn_timeout = std::chrono::milliseconds(*n);
  }
  if (auto n = f.Integer("history_max_messages", 1, 10000)) {
    a.history_max_messages = static_cast<int>(*n);
  }
  if (auto n = f.Integer("history_max_chars", 1000, 10000000)) {
    a.history_max_chars = static_cast<std::size_t>(*n);
  }
  if (auto s = f.String("on_busy")) {
    if (*s != "reject" && *s != "enqueue") {
      Fail(f.PathOf("on_busy"),
           "unsupported value " + JsonQuote(*s) + " (expected \"reject\" or \"enqueue\")");
    }
    a.on_busy = *s;
  }
  if (auto n = f.Integer("session_ttl_ms", 1000, std::int64_t{31536000000})) {
    a.session_ttl = std::chrono::milliseconds(*n);
  }
  if (auto n = f.Integer("max_answer_bytes", 1024, std::int64_t{32} << 20)) {
    a.max_answer_bytes = static_cast<std::size_t>(*n);
  }
  return a;
}

GatewayConfig ParseGateway(const OrderedJson& v, const std::string& path) {
  Fields f(v, path,
           {"max_body_bytes", "max_message_chars", "flow_timeout_ms", "request_read_timeout_ms",
            "max_buffered_bytes_per_connection"});
  GatewayConfig g;
  if (auto n = f.Integer("max_body_bytes", 1, std::int64_t{64} << 20)) {
    g.max_body_bytes = static_cast<std::size_t>(*n);
  }
  if (auto n = f.Integer("max_message_chars", 1, 1000000)) {
    g.max_message_chars = static_cast<std::size_t>(*n);
  }
  if (auto n = f.Integer("flow_timeout_ms", 1, 600000)) {
    g.flow_timeout = std::chrono::milliseconds(*n);
  }
  if (auto n = f.Integer("request_read_timeout_ms", 100, 600000)) {
    g.request_read_timeout = std::chrono::milliseconds(*n);
  }
  if (auto n = f.Integer("max_buffered_bytes_per_connection", 16384, std::int64_t{1} << 30)) {
    g.max_buffered_bytes_per_connection = static_cast<std::size_t>(*n);
  }
  return g;
}

/// The gateway's wait for a worker's decision covers every flow's own timeout: a default long
/// enough for the longest one, or a value the file gives (`given`) checked against each.
void CheckFlowTimeout(Config& c, bool given) {
  constexpr std::chrono::milliseconds kDefaultFlowTimeout{10000};
  constexpr std::chrono::milliseconds kTransitAllowance{1000};
  if (!given) {
    std::chrono::milliseconds longest{0};
    for (const FlowConfig& flow : c.flows) longest = std::max(longest, flow.endpoint.timeout);
    c.gateway.flow_timeout = std::min<std::chrono::milliseconds>(
        std::max(kDefaultFlowTimeout, longest + kTransitAllowance), std::chrono::minutes(10));
    return;
  }
  for (std::size_t i = 0; i < c.flows.size(); ++i) {
    const FlowConfig& flow = c.flows[i];
    if (flow.endpoint.timeout > c.gateway.flow_timeout) {
      Fail("gateway.flow_timeout_ms",
           std::to_string(c.gateway.flow_timeout.count()) + " is shorter than " +
               JsonPathIndex("flows", i) + ".endpoint.timeout_ms (" +
               std::to_string(flow.endpoint.timeout.count()) + ", flow " + JsonQuote(flow.flow_id) +
               "): the gateway would give up before the flow's own timeout");
    }
  }
}

/// Flow ids, tool names and skill names share one namespace: they are all LLM tool names.
void CheckUniqueNames(const Config& c) {
  std::map<std::string, std::string, std::less<>> owner;  // name -> path of its definition
  auto claim = [&](const std::string& name, const std::string& path, std::string_view what) {
    auto [it, inserted] = owner.emplace(name, path);
    if (!inserted) {
      Fail(path, "duplicate " + std::string(what) + " " + JsonQuote(name) +
                     " (already defined at " + it->second + ")");
    }
  };
  for (std::size_t i = 0; i < c.flows.size(); ++i) {
    claim(c.flows[i].flow_id, JsonPathIndex("flows", i) + ".flow_id", "flow_id");
  }
  for (std::size_t i = 0; i < c.tools.size(); ++i) {
    claim(c.tools[i].name, JsonPathIndex("tools", i) + ".name", "tool name");
  }
  for (std::size_t i = 0; i < c.skills.size(); ++i) {
    claim(c.skills[i].name, JsonPathIndex("skills", i) + ".name", "skill name");
  }
}

/// Every allowed tool exists; skills never reach themselves.
void CheckSkillReferences(const Config& c) {
  std::map<std::string, std::size_t, std::less<>> skill_index;
  for (std::size_t i = 0; i < c.skills.size(); ++i) skill_index.emplace(c.skills[i].name, i);
  for (std::size_t i = 0; i < c.skills.size(); ++i) {
    const SkillConfig& skill = c.skills[i];
    for (std::size_t j = 0; j < skill.allowed_tools.size(); ++j) {
      const std::string& name = skill.allowed_tools[j];
      std::string item_path = JsonPathIndex(JsonPathIndex("skills", i) + ".allowed_tools", j);
      if (name == skill.name) Fail(item_path, "a skill cannot allow itself");
      if (c.FindFlow(name) == nullptr && c.FindTool(name) == nullptr &&
          c.FindSkill(name) == nullptr) {
        Fail(item_path, "unknown tool, flow or skill " + JsonQuote(name));
      }
    }
  }
  // Depth-first search for a cycle among skills; report it at the edge that closes it.
  enum class Mark { kNew, kActive, kDone };
  std::vector<Mark> marks(c.skills.size(), Mark::kNew);
  std::vector<std::string> trail;
  std::function<void(std::size_t)> visit = [&](std::size_t i) {
    marks[i] = Mark::kActive;
    trail.push_back(c.skills[i].name);
    const auto& allowed = c.skills[i].allowed_tools;
    for (std::size_t j = 0; j < allowed.size(); ++j) {
      auto it = skill_index.find(allowed[j]);
      if (it == skill_index.end()) continue;
      if (marks[it->second] == Mark::kActive) {
        std::string cycle;
        auto start = std::find(trail.begin(), trail.end(), allowed[j]);
        for (auto t = start; t != trail.end(); ++t) cycle += *t + " -> ";
        cycle += allowed[j];
        Fail(JsonPathIndex(JsonPathIndex("skills", i) + ".allowed_tools", j),
             "skills call each other in a cycle: " + cycle);
      }
      if (marks[it->second] == Mark::kNew) visit(it->second);
    }
    trail.pop_back();
    marks[i] = Mark::kDone;
  };
  for (std::size_t i = 0; i < c.skills.size(); ++i) {
    if (marks[i] == Mark::kNew) visit(i);
  }
}

std::shared_ptr<Config> BuildConfig(const OrderedJson& root, const std::string& base_dir) {
  Fields f(root, "", {"subject_prefix", "flows", "tools", "skills", "agent", "gateway"});
  auto c = std::make_shared<Config>();
  if (auto prefix = f.String("subject_prefix")) {
    if (!IsValidToolName(*prefix)) {
      Fail(f.PathOf("subject_prefix"),
           "invalid subject prefix " + JsonQuote(*prefix) + " (expected [A-Za-z0-9_-]{1,64})");
    }
    c->subject_prefix = *prefix;
  }
  if (const OrderedJson* flows = f.Array("flows")) {
    for (std::size_t i = 0; i < flows->size(); ++i) {
      c->flows.push_back(ParseFlow((*flows)[i], JsonPathIndex("flows", i), c->warnings));
    }
  }
  if (const OrderedJson* tools = f.Array("tools")) {
    for (std::size_t i = 0; i < tools->size(); ++i) {
      c->tools.push_back(ParseTool((*tools)[i], JsonPathIndex("tools", i), c->warnings));
    }
  }
  if (const OrderedJson* skills = f.Array("skills")) {
    for (std::size_t i = 0; i < skills->size(); ++i) {
      c->skills.push_back(ParseSkill((*skills)[i], JsonPathIndex("skills", i), base_dir));
    }
  }
  if (const OrderedJson* agent = f.Get("agent")) c->agent = ParseAgent(*agent, "agent");
  const OrderedJson* gateway = f.Get("gateway");
  if (gateway) c->gateway = ParseGateway(*gateway, "gateway");
  CheckUniqueNames(*c);
  CheckSkillReferences(*c);
  CheckFlowTimeout(*c, gateway != nullptr && gateway->contains("flow_timeout_ms"));
  return c;
}

template <typename T, typename Key>
const T* FindByName(const std::vector<T>& items, std::string_view name, Key key) {
  for (const T& item : items) {
    if (item.*key == name) return &item;
  }
  return nullptr;
}

}  // namespace

const FlowConfig* Config::FindFlow(std::string_view id) const {
  return FindByName(flows, id, &FlowConfig::flow_id);
}

const ToolConfig* Config::FindTool(std::string_view name) const {
  return FindByName(tools, name, &ToolConfig::name);
}

const SkillConfig* Config::FindSkill(std::string_view name) const {
  return FindByName(skills, name, &SkillConfig::name);
}

namespace {

Result<std::shared_ptr<Config>> ParseMutableConfig(std::string_view json_text,
                                                   const std::string& base_dir) {
  if (json_text.size() > kMaxConfigBytes) {
    return Error{ErrorCode::kBadRequest, "config: larger than 16 MiB"};
  }
  auto root = ParseStrictJson(json_text);
  if (!root.ok()) {
    std::string message = root.error().message;
    if (message.rfind("invalid JSON", 0) == 0) message = "config: " + message;
    return Error{ErrorCode::kBadRequest, std::move(message)};
  }
  try {
    return BuildConfig(*root, base_dir);
  } catch (const ConfigError& e) {
    return Error{ErrorCode::kBadRequest, e.message};
  } catch (const std::exception& e) {
    // nlohmann or std errors that slipped past a check: still a config error, never a crash.
    return Error{ErrorCode::kBadRequest, std::string("config: ") + e.what()};
  }
}

}  // namespace

Result<std::shared_ptr<const Config>> ParseConfig(std::string_view json_text,
                                                  std::string base_dir) {
  auto parsed = ParseMutableConfig(json_text, base_dir);
  if (!parsed.ok()) return std::move(parsed).error();
  return std::shared_ptr<const Config>(std::move(parsed).value());
}

Result<std::shared_ptr<const Config>> LoadConfigFile(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p(path);
  if (!std::filesystem::exists(p, ec)) {
    return Error{ErrorCode::kBadRequest, "config file not found: " + path};
  }
  if (!std::filesystem::is_regular_file(p, ec)) {
    return Error{ErrorCode::kBadRequest, "config path is not a regular file: " + path};
  }
  auto size = std::filesystem::file_size(p, ec);
  if (ec)
    return Error{ErrorCode::kBadRequest, "cannot read config file " + path + ": " + ec.message()};
  if (size > kMaxConfigBytes) {
    return Error{ErrorCode::kBadRequest, "config file larger than 16 MiB: " + path};
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) return Error{ErrorCode::kBadRequest, "cannot read config file " + path};
  std::ostringstream text;
  text << in.rdbuf();
  std::string base_dir = p.parent_path().string();
  if (base_dir.empty()) base_dir = ".";
  auto parsed = ParseMutableConfig(text.str(), base_dir);
  if (!parsed.ok()) return std::move(parsed).error();
  std::shared_ptr<Config> config = std::move(parsed).value();
  config->source_path = path;
  return std::shared_ptr<const Config>(std::move(config));
}

std::string ConfigSummary(const Config& config) {
  auto count = [](std::size_t n, const char* noun) {
    return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
  };
  std::string out = count(config.flows.size(), "flow") + ", " + count(config.tools.size(), "tool") +
                    ", " + count(config.skills.size(), "skill");
  if (!config.warnings.empty()) {
    out += "; " + count(config.warnings.size(), "warning") + ":";
    for (const std::string& warning : config.warnings) out += "\n  " + warning;
  }
  return out;
}

}  // namespace wf
