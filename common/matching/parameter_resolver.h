#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "config/config.h"
#include "error/error.h"
#include "matching/capture_list.h"

namespace wf {

/// The parameters of a matched or explicitly called flow/tool/skill, ready for templating.
///
/// Builds one object from, in increasing precedence: `captures` (named groups of the matched
/// pattern), then `request_parameters` (the request's `parameters`, or the LLM's tool-call
/// arguments) merged over them; then, for each spec still missing, its schema default. A JSON
/// null counts as "not given". Names without a spec are passed through unchanged.
///
/// Each value with a declared type is coerced to it: a string "3" becomes 3 for integer/number,
/// "true"/"false" (any case) a boolean, a JSON text an object/array; a number or boolean becomes
/// its JSON text for a string parameter; an integer-valued number is accepted as an integer.
/// A value with `enum` must be one of its values.
///
/// Either argument may be null (= empty object). Pure; any thread.
/// Errors: kMissingParameter "missing parameter: NAME" for a required parameter with no value
/// and no default; kBadRequest "parameter NAME: expected integer, got \"abc\"" (or "... must be
/// one of [...]") when coercion or enum fails; kBadRequest "parameters must be a JSON object"
/// when an argument is neither an object nor null.
Result<nlohmann::json> ResolveParameters(const std::vector<ParameterSpec>& specs,
                                         const nlohmann::json& captures,
                                         const nlohmann::json& request_parameters);

/// The same with the captures of a FlowMatcher match, each a string (so never "not given"):
/// identical to passing captures.ToJson(), without building that object.
Result<nlohmann::json> ResolveParameters(const std::vector<ParameterSpec>& specs,
                                         const CaptureList& captures,
                                         const nlohmann::json& request_parameters);

}  // namespace wf
