#include "agent/output_validation.h"

#include <cmath>

#include "codec/json_dump.h"
#include "codec/json_limits.h"
#include "llm/utf8.h"

namespace wf {
namespace {

std::string TypeOf(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::object: return "object";
    case nlohmann::json::value_t::array: return "array";
    case nlohmann::json::value_t::string: return "string";
    case nlohmann::json::value_t::boolean: return "boolean";
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "integer";
    case nlohmann::json::value_t::number_float: return "number";
    default: return "unknown";
  }
}

bool HasType(const nlohmann::json& v, const std::string& type) {
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    if (v.is_number_float()) {
      const double d = v.get<double>();
      return std::isfinite(d) && std::floor(d) == d;
    }
    return false;
  }
  return TypeOf(v) == type;
}

Status Check(const nlohmann::json& value, const nlohmann::json& schema, const std::string& path) {
  if (!schema.is_object()) return Status::Ok();
  if (auto t = schema.find("type"); t != schema.end()) {
    bool ok = false;
    std::string wanted;
    if (t->is_string()) {
      wanted = t->get<std::string>();
      ok = HasType(value, wanted);
    } else if (t->is_array()) {
      for (const auto& name : *t) {
        if (!name.is_string()) continue;
        if (!wanted.empty()) wanted += " or ";
        wanted += name.get<std::string>();
        ok = ok || HasType(value, name.get<std::string>());
      }
    } else {
      ok = true;
    }
    if (!ok) {
      return Status(ErrorCode::kBadRequest, path + ": expected " + wanted + ", got " + TypeOf(value));
    }
  }
  if (auto e = schema.find("enum"); e != schema.end() && e->is_array()) {
    bool found = false;
    for (const auto& option : *e) found = found || option == value;
    if (!found) {
      return Status(ErrorCode::kBadRequest, path + ": " + TruncateUtf8(DumpJson(value), 60) +
                                                " is not one of " +
                                                TruncateUtf8(DumpJson(*e), 200));
    }
  }
  if (value.is_object()) {
    if (auto req = schema.find("required"); req != schema.end() && req->is_array()) {
      for (const auto& key : *req) {
        if (key.is_string() && !value.contains(key.get<std::string>())) {
          return Status(ErrorCode::kBadRequest,
                        path + ": missing required key \"" + key.get<std::string>() + "\"");
        }
      }
    }
    const auto props = schema.find("properties");
    const bool has_props = props != schema.end() && props->is_object();
    for (const auto& [key, member] : value.items()) {
      if (has_props) {
        if (auto p = props->find(key); p != props->end()) {
          if (Status st = Check(member, *p, path + "." + key); !st.ok()) return st;
          continue;
        }
      }
      if (auto ap = schema.find("additionalProperties");
          ap != schema.end() && ap->is_boolean() && !ap->get<bool>()) {
        return Status(ErrorCode::kBadRequest, path + ": unexpected key \"" + key + "\"");
      }
    }
  }
  if (value.is_array()) {
    if (auto items = schema.find("items"); items != schema.end() && items->is_object()) {
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (Status st = Check(value[i], *items, path + "[" + std::to_string(i) + "]"); !st.ok()) {
          return st;
        }
      }
    }
  }
  return Status::Ok();
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\r' ||
                        s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Status ValidateAgainstSchema(const nlohmann::json& value, const nlohmann::json& schema) {
  return Check(value, schema, "$");
}

Result<nlohmann::json> ParseModelJson(std::string_view text) {
  std::string_view body = TrimSpace(text);
  if (body.size() >= 6 && body.substr(0, 3) == "```" && body.substr(body.size() - 3) == "```") {
    body.remove_suffix(3);
    const std::size_t nl = body.find('\n');
    body = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
    body = TrimSpace(body);
  }
  // Bounded: the answer is serialized recursively once validated.
  Result<nlohmann::json> j = ParseBoundedJson(body);
  if (!j.ok() && j.error().code == ErrorCode::kBadRequest) return j.error();
  if (!j.ok()) {
    return Error{ErrorCode::kBadRequest, "not JSON: " + TruncateUtf8(SanitizeUtf8(body), 120)};
  }
  return j;
}

}  // namespace wf
