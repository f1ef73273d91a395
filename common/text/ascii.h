#pragma once

#include <string_view>

namespace wf {

/// `c` with A-Z mapped to a-z; every other byte (UTF-8 included) unchanged. Pure, locale-free.
constexpr char AsciiLower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

/// `c` with a-z mapped to A-Z; every other byte unchanged. Pure, locale-free.
constexpr char AsciiUpper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

/// True when `a` and `b` are equal ignoring ASCII case (HTTP header names, "true"/"false").
constexpr bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

}  // namespace wf
