#include "codec/json_scan.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "codec/json_dump.h"
#include "text/hex.h"
#include "text/utf8.h"

namespace wf::json_scan {
namespace {

using Byte = unsigned char;

bool IsSpace(Byte c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool IsDigit(Byte c) { return c >= '0' && c <= '9'; }

const Byte* SkipSpace(const Byte* p, const Byte* end) {
  while (p < end && IsSpace(*p)) ++p;
  return p;
}

/// The code unit of the four hex digits at `p` (which must have 4 bytes), or -1.
int ReadHex4(const Byte* p) {
  int value = 0;
  for (int i = 0; i < 4; ++i) {
    const int digit = HexDigitValue(static_cast<char>(p[i]));
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

/// Validates the string starting at `p` (its opening quote); returns the byte after the closing
/// quote, or nullptr.
const Byte* ScanString(const Byte* p, const Byte* end) {
  if (p == end || *p != '"') return nullptr;
  ++p;
  while (p < end) {
    // Plain ASCII (no quote, backslash, control byte or byte of 0x80 and above), eight bytes at
    // a time: the lowest flagged byte of `special` is the first one the loop below must see.
    constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
    constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
    while (end - p >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, sizeof w);
      const std::uint64_t quote = w ^ (kOnes * '"');
      const std::uint64_t backslash = w ^ (kOnes * '\\');
      const std::uint64_t special = (((w - kOnes * 0x20) & ~w) | ((quote - kOnes) & ~quote) |
                                     ((backslash - kOnes) & ~backslash) | w) &
                                    kHigh;
      if (special == 0) {
        p += 8;
        continue;
      }
      if constexpr (std::endian::native == std::endian::little) {
        p += std::countr_zero(special) / 8;
      }
      break;
    }
    if (p == end) break;
    const Byte c = *p;
    if (c == '"') return p + 1;
    if (c < 0x20) return nullptr;
    if (c < 0x80 && c != '\\') {
      ++p;
      continue;
    }
    if (c >= 0x80) {
      const std::size_t n = Utf8SequenceLength(
          {reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p)}, 0);
      if (n == 0) return nullptr;
      p += n;
      continue;
    }
    // An escape.
    if (end - p < 2) return nullptr;
    switch (p[1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        p += 2;
        continue;
      case 'u':
        break;
      default:
        return nullptr;
    }
    if (end - p < 6) return nullptr;
    const int unit = ReadHex4(p + 2);
    if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) return nullptr;
    p += 6;
    if (unit >= 0xD800 && unit <= 0xDBFF) {
      if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return nullptr;
      const int low = ReadHex4(p + 2);
      if (low < 0xDC00 || low > 0xDFFF) return nullptr;
      p += 6;
    }
  }
  return nullptr;
}

/// The byte that closes a container opened by `open` ('{' or '[').
Byte Closer(Byte open) { return open == '{' ? '}' : ']'; }

/// Validates an object member's key (at `p`) and the ':' after it; returns the byte after the
/// ':', or nullptr.
const Byte* ScanKeyAndColon(const Byte* p, const Byte* end) {
  p = ScanString(p, end);
  if (p == nullptr) return nullptr;
  p = SkipSpace(p, end);
  if (p == end || *p != ':') return nullptr;
  return p + 1;
}

/// The double strtod makes of a number token (what nlohmann's lexer does with it). strtod needs a
/// terminated string: short tokens are copied to the stack, longer ones (rare) to the heap.
double ParseDouble(std::string_view token) {
  char buffer[80];
  std::string copy;
  const char* text = buffer;
  if (token.size() < sizeof buffer) {
    std::memcpy(buffer, token.data(), token.size());
    buffer[token.size()] = '\0';
  } else {
    copy.assign(token);
    text = copy.c_str();
  }
  return std::strtod(text, nullptr);
}

/// True when a number token is too large for a double (nlohmann rejects it: "number overflow").
/// Only called for tokens with an exponent or very many digits.
bool OverflowsDouble(const Byte* begin, const Byte* end) {
  return !std::isfinite(
      ParseDouble({reinterpret_cast<const char*>(begin), static_cast<std::size_t>(end - begin)}));
}

/// Validates the number starting at `p`; returns the byte after it, or nullptr.
const Byte* ScanNumber(const Byte* p, const Byte* end) {
  const Byte* begin = p;
  if (p < end && *p == '-') ++p;
  if (p == end || !IsDigit(*p)) return nullptr;
  if (*p == '0') {
    ++p;
  } else {
    while (p < end && IsDigit(*p)) ++p;
  }
  bool check_range = p - begin > 300;
  if (p < end && *p == '.') {
    ++p;
    if (p == end || !IsDigit(*p)) return nullptr;
    while (p < end && IsDigit(*p)) ++p;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p < end && (*p == '+' || *p == '-')) ++p;
    if (p == end || !IsDigit(*p)) return nullptr;
    while (p < end && IsDigit(*p)) ++p;
    check_range = true;
  }
  if (check_range && OverflowsDouble(begin, p)) return nullptr;
  return p;
}

const Byte* ScanLiteral(const Byte* p, const Byte* end, std::string_view word) {
  if (static_cast<std::size_t>(end - p) < word.size()) return nullptr;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (p[i] != static_cast<Byte>(word[i])) return nullptr;
  }
  return p + word.size();
}

/// Skips the string at `p` (opening quote) of a validated text: the byte after its closing quote.
const Byte* SkipString(const Byte* p, const Byte* end) {
  ++p;
  while (p < end) {
    const Byte c = *p++;
    if (c == '\\') {
      ++p;
    } else if (c == '"') {
      return p;
    }
  }
  return end;
}

/// Skips the value at `p` of a validated text: the byte after it.
const Byte* SkipValue(const Byte* p, const Byte* end) {
  if (p == end) return end;
  if (*p == '"') return SkipString(p, end);
  if (*p == '{' || *p == '[') {
    std::size_t depth = 0;
    while (p < end) {
      const Byte c = *p;
      if (c == '"') {
        p = SkipString(p, end);
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) return p + 1;
      }
      ++p;
    }
    return end;
  }
  while (p < end && !IsSpace(*p) && *p != ',' && *p != '}' && *p != ']') ++p;
  return p;
}

const Byte* Begin(std::string_view s) { return reinterpret_cast<const Byte*>(s.data()); }
const Byte* End(std::string_view s) { return Begin(s) + s.size(); }
std::string_view View(const Byte* begin, const Byte* end) {
  return {reinterpret_cast<const char*>(begin), static_cast<std::size_t>(end - begin)};
}

void AppendUtf8(std::uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

/// `p` past a UTF-8 byte order mark, if the text starts with one (nlohmann's lexer skips it).
const Byte* SkipBom(const Byte* p, const Byte* end) {
  return end - p >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF ? p + 3 : p;
}

/// Appends a validated number as nlohmann dumps it: an integer that fits int64/uint64 (nlohmann
/// keeps those exactly) as its digits, anything else (fraction, exponent, a larger integer) as
/// the double strtod makes of it, printed by nlohmann's own shortest round-trip formatter.
void AppendNumberText(std::string_view token, std::string* out) {
  const char* begin = token.data();
  const char* end = begin + token.size();
  if (token.find_first_of(".eE") == std::string_view::npos) {
    if (token.front() != '-') {
      std::uint64_t value = 0;
      if (auto [ptr, ec] = std::from_chars(begin, end, value); ec == std::errc() && ptr == end) {
        out->append(token);
        return;
      }
    } else {
      std::int64_t value = 0;
      if (auto [ptr, ec] = std::from_chars(begin, end, value); ec == std::errc() && ptr == end) {
        char digits[24];
        out->append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);  // -0 is 0
        return;
      }
    }
  }
  const double value = ParseDouble(token);
  if (!std::isfinite(value)) {
    out->append("null");  // not reached for validated text
    return;
  }
  char digits[64];  // nlohmann's serializer uses a 64-byte buffer for the same call
  out->append(digits, nlohmann::detail::to_chars(digits, digits + sizeof digits, value));
}

/// True when the raw (still escaped) key text equals `key` once decoded.
bool KeyEquals(std::string_view raw, std::string_view key) {
  if (raw.find('\\') == std::string_view::npos) return raw == key;
  std::string decoded;
  decoded.reserve(raw.size());
  AppendDecodedString(View(Begin(raw) - 1, End(raw) + 1), &decoded);
  return decoded == key;
}

}  // namespace

Verdict Validate(std::string_view text) {
  const Byte* const end = End(text);
  const Byte* p = SkipBom(Begin(text), end);
  Byte stack[kMaxDepth];  // '{' or '[' per open container
  std::size_t depth = 0;
  for (;;) {
    // A value is expected at p.
    p = SkipSpace(p, end);
    if (p == end) return Verdict::kInvalid;
    switch (*p) {
      case '{':
      case '[': {
        const Byte open = *p;
        // An empty container counts too, as in JsonDepthExceeds (json_limits.h).
        if (depth == kMaxDepth) return Verdict::kTooDeep;
        p = SkipSpace(p + 1, end);
        if (p < end && *p == Closer(open)) {
          ++p;  // empty: a complete value
          break;
        }
        stack[depth++] = open;
        if (open == '{') {
          p = ScanKeyAndColon(p, end);
          if (p == nullptr) return Verdict::kInvalid;
        }
        continue;  // the first member's or element's value
      }
      case '"':
        p = ScanString(p, end);
        break;
      case 't':
        p = ScanLiteral(p, end, "true");
        break;
      case 'f':
        p = ScanLiteral(p, end, "false");
        break;
      case 'n':
        p = ScanLiteral(p, end, "null");
        break;
      default:
        p = ScanNumber(p, end);
        break;
    }
    if (p == nullptr) return Verdict::kInvalid;
    // A value ended: close containers until one continues with a comma.
    for (;;) {
      p = SkipSpace(p, end);
      if (depth == 0) return p == end ? Verdict::kValid : Verdict::kInvalid;
      if (p == end) return Verdict::kInvalid;
      const Byte open = stack[depth - 1];
      if (*p == Closer(open)) {
        ++p;
        --depth;
        continue;
      }
      if (*p != ',') return Verdict::kInvalid;
      ++p;
      if (open == '{') {
        p = ScanKeyAndColon(SkipSpace(p, end), end);
        if (p == nullptr) return Verdict::kInvalid;
      }
      break;
    }
  }
}

std::string_view RootValue(std::string_view text) {
  const Byte* end = End(text);
  const Byte* p = SkipSpace(SkipBom(Begin(text), end), end);
  while (end > p && IsSpace(end[-1])) --end;
  return View(p, end);
}

namespace detail {

bool ForEachMember(std::string_view object, MemberVisit call, void* visit) {
  const Byte* p = Begin(object);
  const Byte* const end = End(object);
  if (p == end || *p != '{') return false;
  p = SkipSpace(p + 1, end);
  while (p < end && *p == '"') {
    const Byte* key_end = SkipString(p, end);
    const std::string_view key = View(p, key_end);
    p = SkipSpace(key_end, end);
    p = SkipSpace(p + 1, end);  // the ':'
    const Byte* value_end = SkipValue(p, end);
    if (!call(visit, key, View(p, value_end))) break;
    p = SkipSpace(value_end, end);
    if (p == end || *p != ',') break;
    p = SkipSpace(p + 1, end);
  }
  return true;
}

bool ForEachElement(std::string_view array, ElementVisit call, void* visit) {
  const Byte* p = Begin(array);
  const Byte* const end = End(array);
  if (p == end || *p != '[') return false;
  p = SkipSpace(p + 1, end);
  if (p < end && *p == ']') return true;
  while (p < end) {
    const Byte* value_end = SkipValue(p, end);
    if (!call(visit, View(p, value_end))) break;
    p = SkipSpace(value_end, end);
    if (p == end || *p != ',') break;
    p = SkipSpace(p + 1, end);
  }
  return true;
}

}  // namespace detail

bool KeyIs(std::string_view key, std::string_view name) {
  return key.size() >= 2 && KeyEquals(key.substr(1, key.size() - 2), name);
}

std::optional<std::string_view> FindMember(std::string_view object, std::string_view key) {
  std::optional<std::string_view> found;
  ForEachMember(object, [&](std::string_view name, std::string_view value) {
    if (KeyIs(name, key)) found = value;
    return true;  // the last one wins, as in a DOM
  });
  return found;
}

std::optional<std::string_view> FindElement(std::string_view array, std::size_t index) {
  std::optional<std::string_view> found;
  std::size_t i = 0;
  ForEachElement(array, [&](std::string_view value) {
    if (i++ == index) found = value;
    return !found;
  });
  return found;
}

void AppendDecodedString(std::string_view string_value, std::string* out) {
  const Byte* p = Begin(string_value) + 1;
  const Byte* const end = End(string_value) - 1;  // the closing quote
  while (p < end) {
    const Byte* run = p;
    while (p < end && *p != '\\') ++p;
    out->append(View(run, p));
    if (p == end) break;
    const Byte escape = p[1];
    p += 2;
    switch (escape) {
      case 'b':
        out->push_back('\b');
        break;
      case 'f':
        out->push_back('\f');
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'u': {
        std::uint32_t unit = static_cast<std::uint32_t>(ReadHex4(p));
        p += 4;
        if (unit >= 0xD800 && unit <= 0xDBFF && end - p >= 6) {
          const auto low = static_cast<std::uint32_t>(ReadHex4(p + 2));
          unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
          p += 6;
        }
        AppendUtf8(unit, out);
        break;
      }
      default:
        out->push_back(static_cast<char>(escape));
        break;  // " \ /
    }
  }
}

void AppendValueText(std::string_view value, std::string* out) {
  if (value.empty()) return;
  const char first = value.front();
  if (first == '"') {
    AppendDecodedString(value, out);
    return;
  }
  if (first == 't' || first == 'f' || first == 'n') {
    out->append(value);
    return;
  }
  if (first == '-' || (first >= '0' && first <= '9')) {
    AppendNumberText(value, out);
    return;
  }
  // Objects and arrays: dumped exactly as a DOM would (keys sorted, last duplicate kept).
  const auto parsed = nlohmann::json::parse(value.begin(), value.end(), nullptr,
                                            /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) {
    out->append(DumpJson(parsed));
  }
}

}  // namespace wf::json_scan
