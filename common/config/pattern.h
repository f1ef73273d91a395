#pragma once

#include <re2/re2.h>

#include <memory>
#include <string>
#include <string_view>

#include "error/error.h"

namespace wf {

/// The RE2 options every trigger pattern is compiled with, by the config validator and by the
/// matcher alike: UTF-8, case-insensitive, no logging, a generous memory budget.
RE2::Options TriggerPatternOptions();

/// Compiles one trigger pattern with TriggerPatternOptions(). Error (kBadRequest, no JSON path):
/// "invalid regex: <RE2's reason>", with a hint for what RE2 never supports (look-around,
/// back-references, atomic groups, possessive quantifiers, `(?<name>` groups). Any thread.
Result<std::unique_ptr<RE2>> CompileTriggerPattern(std::string_view pattern);

}  // namespace wf
