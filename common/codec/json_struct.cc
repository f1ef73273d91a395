#include "codec/json_struct.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "codec/json_scan.h"
#include "codec/json_text.h"

namespace wf {
namespace {

/// A Struct number that is whole and within ±2^53 (so every such integer is exact): the value as
/// an integer, which StructToJson gives back instead of the double.
std::optional<std::int64_t> ExactInteger(double d) {
  constexpr double kMaxExact = 9007199254740992.0;  // 2^53
  if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) <= kMaxExact) {
    return static_cast<std::int64_t>(d);
  }
  return std::nullopt;
}

}  // namespace

google::protobuf::Value JsonToValue(const nlohmann::json& j) {
  google::protobuf::Value v;
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      v.set_null_value(google::protobuf::NULL_VALUE);
      break;
    case nlohmann::json::value_t::boolean:
      v.set_bool_value(j.get<bool>());
      break;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      v.set_number_value(j.get<double>());
      break;
    case nlohmann::json::value_t::string:
      v.set_string_value(j.get_ref<const std::string&>());
      break;
    case nlohmann::json::value_t::array: {
      auto* list = v.mutable_list_value();
      for (const auto& item : j) *list->add_values() = JsonToValue(item);
      break;
    }
    case nlohmann::json::value_t::object:
      *v.mutable_struct_value() = JsonToStruct(j);
      break;
    case nlohmann::json::value_t::binary:
      v.set_null_value(google::protobuf::NULL_VALUE);
      break;
  }
  return v;
}

google::protobuf::Struct JsonToStruct(const nlohmann::json& object) {
  google::protobuf::Struct s;
  if (!object.is_object()) return s;
  auto* fields = s.mutable_fields();
  for (const auto& [key, value] : object.items()) (*fields)[key] = JsonToValue(value);
  return s;
}

nlohmann::json ValueToJson(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET:
      return nullptr;
    case google::protobuf::Value::kBoolValue:
      return v.bool_value();
    case google::protobuf::Value::kNumberValue:
      if (auto integer = ExactInteger(v.number_value())) return *integer;
      return v.number_value();
    case google::protobuf::Value::kStringValue:
      return v.string_value();
    case google::protobuf::Value::kListValue: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : v.list_value().values()) arr.push_back(ValueToJson(item));
      return arr;
    }
    case google::protobuf::Value::kStructValue:
      return StructToJson(v.struct_value());
  }
  return nullptr;
}

nlohmann::json StructToJson(const google::protobuf::Struct& s) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : s.fields()) out[key] = ValueToJson(value);
  return out;
}

namespace {

/// A validated JSON number's value as nlohmann reads it, then as JsonToValue stores it: an
/// integer that fits int64 (or uint64) is read as one and converted, anything else as a double.
double NumberValue(std::string_view text) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (text.find_first_of(".eE") == std::string_view::npos) {
    std::int64_t i = 0;
    if (std::from_chars(first, last, i).ec == std::errc()) return static_cast<double>(i);
    std::uint64_t u = 0;
    if (text.front() != '-' && std::from_chars(first, last, u).ec == std::errc()) {
      return static_cast<double>(u);
    }
  }
  double d = 0;
  const auto result = std::from_chars(first, last, d);
  // Out of range: validated text is a finite double (json_scan), so this is an underflow.
  if (result.ec != std::errc()) return text.front() == '-' ? -0.0 : 0.0;
  return d;
}

void TextToValue(std::string_view text, google::protobuf::Value* v) {
  switch (text.front()) {
    case 'n':
      v->set_null_value(google::protobuf::NULL_VALUE);
      return;
    case 't':
      v->set_bool_value(true);
      return;
    case 'f':
      v->set_bool_value(false);
      return;
    case '"': {
      std::string decoded;
      json_scan::AppendDecodedString(text, &decoded);
      v->set_string_value(std::move(decoded));
      return;
    }
    case '[': {
      auto* list = v->mutable_list_value();
      json_scan::ForEachElement(text, [&](std::string_view item) {
        TextToValue(item, list->add_values());
        return true;
      });
      return;
    }
    case '{':
      *v->mutable_struct_value() = JsonTextToStruct(text);
      return;
    default:
      v->set_number_value(NumberValue(text));
      return;
  }
}

void AppendValueJson(std::string* out, const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET:
      out->append("null");
      return;
    case google::protobuf::Value::kBoolValue:
      out->append(v.bool_value() ? "true" : "false");
      return;
    case google::protobuf::Value::kNumberValue:
      if (auto integer = ExactInteger(v.number_value())) {
        char text[24];
        const auto result = std::to_chars(text, text + sizeof text, *integer);
        out->append(text, result.ptr);
      } else {
        out->append(nlohmann::json(v.number_value()).dump());  // nlohmann's format (or null)
      }
      return;
    case google::protobuf::Value::kStringValue:
      AppendJsonString(out, v.string_value());
      return;
    case google::protobuf::Value::kListValue: {
      out->push_back('[');
      bool first = true;
      for (const auto& item : v.list_value().values()) {
        if (!first) out->push_back(',');
        first = false;
        AppendValueJson(out, item);
      }
      out->push_back(']');
      return;
    }
    case google::protobuf::Value::kStructValue:
      AppendStructJson(out, v.struct_value());
      return;
  }
  out->append("null");
}

}  // namespace

google::protobuf::Struct JsonTextToStruct(std::string_view validated_object) {
  google::protobuf::Struct s;
  if (validated_object.empty() || validated_object.front() != '{') return s;
  auto* fields = s.mutable_fields();
  std::string key;
  json_scan::ForEachMember(validated_object,
                           [&](std::string_view quoted_key, std::string_view value) {
                             key.clear();
                             json_scan::AppendDecodedString(quoted_key, &key);
                             google::protobuf::Value& slot = (*fields)[key];
                             slot.Clear();  // a repeated key: the last one wins, whole
                             TextToValue(value, &slot);
                             return true;
                           });
  return s;
}

void AppendStructJson(std::string* out, const google::protobuf::Struct& s) {
  // nlohmann's object is a std::map: its keys come out in byte order.
  std::vector<const google::protobuf::MapPair<std::string, google::protobuf::Value>*> members;
  members.reserve(static_cast<std::size_t>(s.fields_size()));
  for (const auto& member : s.fields()) members.push_back(&member);
  std::sort(members.begin(), members.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  out->push_back('{');
  bool first = true;
  for (const auto* member : members) {
    if (!first) out->push_back(',');
    first = false;
    AppendJsonString(out, member->first);
    out->push_back(':');
    AppendValueJson(out, member->second);
  }
  out->push_back('}');
}

}  // namespace wf
