#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "error/error.h"

namespace wf {

/// The deepest nesting of JSON arrays and objects accepted from outside the process: JSON texts
/// taken from NATS messages (tool arguments, parameter values), upstream bodies parsed into a
/// DOM, and request bodies of the demo API. nlohmann::json copies and serializes recursively, so
/// an unbounded document would exhaust the stack; the gateway's HTTP limit (32) is below it.
inline constexpr int kMaxJsonNesting = 64;

/// True when `text` nests arrays/objects deeper than `limit` (the outermost container is level
/// 1; brackets inside strings do not count). Linear, allocation-free, stops at the first level
/// past the limit; `text` need not be valid JSON. Pure, any thread.
bool JsonDepthExceeds(std::string_view text, int limit = kMaxJsonNesting);

/// Parses `text` (no comments) after checking its depth. Errors: kBadRequest "JSON nested deeper
/// than N levels", kInvalidJson "not valid JSON". Pure, any thread.
Result<nlohmann::json> ParseBoundedJson(std::string_view text, int limit = kMaxJsonNesting);

}  // namespace wf
