#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace wf {

/// `value` as compact JSON text (no spaces, non-ASCII kept as UTF-8). Invalid UTF-8 in its strings
/// becomes U+FFFD instead of nlohmann's type_error exception, so text from outside (a message,
/// an upstream body, a model's output) can never make serialization throw. Header-only: the
/// lowest libraries (error, config) use it too.
template <typename Json>
std::string DumpJson(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

/// `text` as a JSON string literal, quotes included (for messages that name a key or a value).
inline std::string JsonQuote(std::string_view text) {
  return DumpJson(nlohmann::json(std::string(text)));
}

}  // namespace wf
