#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wf {

/// Appends `text` as a JSON string literal (with quotes) to `out`. Escapes `"`, `\` and control
/// characters; invalid UTF-8 bytes become U+FFFD, so the output is always valid JSON whatever the
/// input. Pure, any thread; allocates only by growing `out`.
void AppendJsonString(std::string* out, std::string_view text);

/// Number of Unicode code points in `text`, which must be valid UTF-8 (counts lead bytes).
std::size_t Utf8CodePoints(std::string_view text);

}  // namespace wf
