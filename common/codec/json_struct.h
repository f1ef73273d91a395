#pragma once

#include <google/protobuf/struct.pb.h>

#include <nlohmann/json.hpp>

namespace wf {

/// JSON object -> google.protobuf.Struct (wire form of `parameters`). Non-objects give an empty
/// Struct. Pure; any thread.
google::protobuf::Struct JsonToStruct(const nlohmann::json& object);

/// google.protobuf.Struct -> JSON object. Numbers that are whole and within ±2^53 come back as
/// integers (Struct only has doubles), so `"days": 3` stays 3, not 3.0.
nlohmann::json StructToJson(const google::protobuf::Struct& s);

/// Single value conversions used by the two above.
google::protobuf::Value JsonToValue(const nlohmann::json& j);
nlohmann::json ValueToJson(const google::protobuf::Value& v);

}  // namespace wf
