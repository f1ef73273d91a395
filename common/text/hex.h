#pragma once

namespace wf {

/// Value of one hexadecimal digit (0-9, a-f, A-F), or -1 for any other character. Pure.
inline int HexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace wf
