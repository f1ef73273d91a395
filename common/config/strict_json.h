#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "error/error.h"

namespace wf {

/// Parses JSON text keeping object members in document order, and rejecting what
/// nlohmann::json::parse silently accepts in a config: a duplicate key in an object, and nesting
/// deeper than 256 levels. Errors (kBadRequest): "invalid JSON: parse error at line L, column C:
/// <reason>", "invalid JSON: nested deeper than 256 levels" or "<json path>: duplicate key".
/// Linear in the size of the text. Pure; any thread.
Result<nlohmann::ordered_json> ParseStrictJson(std::string_view text);

}  // namespace wf
