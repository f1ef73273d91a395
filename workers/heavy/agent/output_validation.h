#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "error/error.h"

namespace wf {

/// Checks `value` against a JSON Schema subset, the one the config accepts for skill
/// `output_schema`: `type` (a name or an array of names: object, array, string, number, integer,
/// boolean, null), `required`, `properties` (recursively), `items` (recursively), `enum`,
/// `additionalProperties: false`. Other keywords are ignored. Errors: kBadRequest with the path
/// of the first offending value, e.g. "$.items[2].price: expected number, got string". Pure.
Status ValidateAgainstSchema(const nlohmann::json& value, const nlohmann::json& schema);

/// Reads a model's JSON answer: surrounding whitespace and a ```json ... ``` fence are tolerated.
/// Errors: kBadRequest "not JSON: ...". Pure.
Result<nlohmann::json> ParseModelJson(std::string_view text);

}  // namespace wf
