#pragma once

#include <cstddef>
#include <string_view>

namespace wf {

/// Length of the well-formed UTF-8 sequence that starts at text[i] (i < text.size()): 1 for an
/// ASCII byte, 2–4 for a complete multi-byte sequence, 0 when the bytes there are not one (a
/// stray continuation byte, an overlong form, a UTF-16 surrogate, a code point above U+10FFFF,
/// or a sequence cut short by the end of `text`). The ranges are RFC 3629's (table 3-7 of the
/// Unicode standard), which are also the ones nlohmann's JSON lexer accepts. Pure; inline
/// because scanners call it per character.
inline std::size_t Utf8SequenceLength(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t length;
  unsigned char low = 0x80;  // allowed range of the second byte
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (text.size() - i < length) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

}  // namespace wf
