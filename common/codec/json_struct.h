#pragma once

#include <google/protobuf/struct.pb.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace wf {

/// JSON object -> google.protobuf.Struct (wire form of `parameters`). Non-objects give an empty
/// Struct. Pure; any thread.
google::protobuf::Struct JsonToStruct(const nlohmann::json& object);

/// google.protobuf.Struct -> JSON object. Numbers that are whole and within ±2^53 come back as
/// integers (Struct only has doubles), so `"days": 3` stays 3, not 3.0.
nlohmann::json StructToJson(const google::protobuf::Struct& s);

/// The text of a JSON object that json_scan::Validate accepted (json_scan::RootValue of it) ->
/// google.protobuf.Struct, exactly as JsonToStruct(nlohmann::json::parse(text)) would make it
/// (the last of a repeated key wins; integers go through int64 or uint64 as nlohmann reads them,
/// so `-0` is 0), without building the DOM. Not an object: an empty Struct.
google::protobuf::Struct JsonTextToStruct(std::string_view validated_object);

/// Appends StructToJson(s).dump() to `out` without building the DOM: keys sorted, numbers as
/// StructToJson gives them (whole ones within ±2^53 as integers), strings escaped by
/// AppendJsonString (the same text for valid UTF-8, which protobuf strings are).
void AppendStructJson(std::string* out, const google::protobuf::Struct& s);

/// Single value conversions used by the two above.
google::protobuf::Value JsonToValue(const nlohmann::json& j);
nlohmann::json ValueToJson(const google::protobuf::Value& v);

}  // namespace wf
