#include "codec/json_struct.h"

#include <cmath>

namespace wf {

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
    case google::protobuf::Value::kNumberValue: {
      double d = v.number_value();
      constexpr double kMaxExact = 9007199254740992.0;  // 2^53
      if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) <= kMaxExact) {
        return static_cast<int64_t>(d);
      }
      return d;
    }
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

}  // namespace wf
