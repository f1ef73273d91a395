#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace wf {

/// `value` as compact JSON text (no spaces, non-ASCII kept as UTF-8). Invalid UTF-8 in its strings
/// becomes U+FFFD instead of nlohmann's type_error exception, so text from outside (a message,
/// an upstream body, a model's output) can never make serialization throw. Header-only: the
/// lowest libraries (error, config) use it too.
template <typename Json>
std::string DumpJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace wf
