#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wf {

/// Length of the longest prefix of `bytes` that does not end inside a multi-byte UTF-8
/// sequence: a lead byte at the end whose continuation bytes have not all arrived is held back.
/// Bytes that are not valid UTF-8 anyway are never held back (they cannot be completed). Pure.
std::size_t Utf8CompletePrefixLength(std::string_view bytes);

/// `text` cut to at most `max_bytes` bytes without splitting a UTF-8 character; "..." is appended
/// when something was cut (the result may then be up to max_bytes + 3 bytes). Pure.
std::string TruncateUtf8(std::string_view text, std::size_t max_bytes);

/// `text` with every byte sequence that is not valid UTF-8 replaced by U+FFFD, so that it can go
/// into a protobuf `string` field. Pure.
std::string SanitizeUtf8(std::string_view text);

}  // namespace wf
