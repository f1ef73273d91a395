#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wf {

/// Bytes in the UTF-8 sequence that `lead` starts: 1 for ASCII, 2–4 for a lead byte RFC 3629
/// allows (C2–DF, E0–EF, F0–F4), 0 for a byte that cannot start one (a continuation byte, C0,
/// C1, F5–FF). Says nothing of the bytes that follow. Pure.
inline std::size_t Utf8LeadLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

/// Length of the well-formed UTF-8 sequence that starts at text[i] (i < text.size()): 1 for an
/// ASCII byte, 2–4 for a complete multi-byte sequence, 0 when the bytes there are not one (a
/// stray continuation byte, an overlong form, a UTF-16 surrogate, a code point above U+10FFFF,
/// or a sequence cut short by the end of `text`). The ranges are RFC 3629's (table 3-7 of the
/// Unicode standard), which are also the ones nlohmann's JSON lexer accepts. Pure; inline
/// because scanners call it per character.
inline std::size_t Utf8SequenceLength(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  const std::size_t length = Utf8LeadLength(lead);
  if (length <= 1) return length;
  unsigned char low = 0x80;  // allowed range of the second byte
  unsigned char high = 0xBF;
  if (lead == 0xE0) low = 0xA0;   // overlong
  if (lead == 0xED) high = 0x9F;  // surrogates
  if (lead == 0xF0) low = 0x90;   // overlong
  if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  if (text.size() - i < length) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

/// True when all of `text` is well-formed UTF-8 (Utf8SequenceLength's rules). Pure.
bool IsValidUtf8(std::string_view text);

/// `text` as well-formed UTF-8: each maximal ill-formed piece (a byte that cannot start a
/// sequence, or a sequence cut short) becomes U+FFFD; valid text comes back unchanged (one
/// validating pass and a copy, no per-character work). For upstream and user bytes going into
/// protobuf `string` fields, which must be UTF-8. Pure, any thread.
std::string ToValidUtf8(std::string_view text);

/// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a UTF-8
/// sequence (cut before the lead byte of a sequence the limit would split). Meant for valid
/// UTF-8; on invalid input it still never returns more than `max_bytes`. Pure.
std::string_view Utf8Truncate(std::string_view text, std::size_t max_bytes);

}  // namespace wf
