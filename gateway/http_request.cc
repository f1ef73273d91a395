#include "gateway/http_request.h"

#include <array>

namespace wf {
namespace {

/// tchar of RFC 9110 5.6.2: the bytes a field name is made of.
constexpr std::array<bool, 256> MakeTokenTable() {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}
constexpr std::array<bool, 256> kTokenChar = MakeTokenTable();

constexpr const char* kBareLineEnd = "bare CR or LF in the HTTP head (lines end in CRLF)";
constexpr const char* kNul = "NUL byte in the HTTP head";
constexpr const char* kMalformedHeader = "malformed HTTP header";

/// ASCII case-insensitive equality with a lower-case `lower`.
bool EqualsLower(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

std::string_view TrimBlanks(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

RequestHeadScan ScanRequestHead(std::string_view input) {
  RequestHeadScan scan;
  const std::size_t n = input.size();
  std::size_t i = 0;
  // The request line (Pistache has parsed it): only its line end is checked.
  for (; i < n && input[i] != '\r'; ++i) {
    if (input[i] == '\n') return {kBareLineEnd};
    if (input[i] == '\0') return {kNul};
  }
  if (i + 1 >= n || input[i + 1] != '\n') return {i + 1 >= n ? kMalformedHeader : kBareLineEnd};
  i += 2;
  int content_lengths = 0;
  while (true) {
    if (i >= n) return {kMalformedHeader};  // no empty line: not a complete head
    if (input[i] == '\r') {
      if (i + 1 >= n || input[i + 1] != '\n') return {kBareLineEnd};
      scan.head_size = i + 2;
      return scan;
    }
    if (input[i] == ' ' || input[i] == '\t') {
      return {"folded HTTP header line (a line may not start with a space or tab)"};
    }
    const std::size_t name_start = i;
    for (; i < n && kTokenChar[static_cast<unsigned char>(input[i])]; ++i) {
    }
    if (i >= n) return {kMalformedHeader};
    if (input[i] != ':') {
      switch (input[i]) {
        case ' ':
        case '\t': {
          // An error path: the rest of the line only decides the message.
          const std::string_view rest = input.substr(i, input.find('\r', i) - i);
          return {rest.find(':') != std::string_view::npos
                      ? "whitespace in an HTTP header name or before its colon"
                      : "HTTP header line without a colon"};
        }
        case '\r':
        case '\n':
          return {"HTTP header line without a colon"};
        case '\0':
          return {kNul};
        default:
          return {kMalformedHeader};
      }
    }
    if (i == name_start) return {"HTTP header without a name"};
    const std::string_view name = input.substr(name_start, i - name_start);
    ++i;  // ':'
    const std::size_t value_start = i;
    for (; i < n && input[i] != '\r'; ++i) {
      if (input[i] == '\n') return {kBareLineEnd};
      if (input[i] == '\0') return {kNul};
    }
    if (i + 1 >= n) return {kMalformedHeader};
    if (input[i + 1] != '\n') return {kBareLineEnd};
    const std::string_view value = input.substr(value_start, i - value_start);
    i += 2;
    if (EqualsLower(name, "content-length")) {
      if (++content_lengths > 1) return {"more than one Content-Length header"};
    } else if (EqualsLower(name, "expect")) {
      scan.expect_continue = EqualsLower(TrimBlanks(value), "100-continue");
    }
  }
}

Result<std::string> DecodePathSegment(std::string_view segment) {
  std::string out;
  out.reserve(segment.size());
  for (std::size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '%') {
      out.push_back(segment[i]);
      continue;
    }
    const bool room = i + 2 < segment.size();
    const int high = room ? HexValue(segment[i + 1]) : -1;
    const int low = room ? HexValue(segment[i + 2]) : -1;
    if (high < 0 || low < 0) {
      return Error{ErrorCode::kBadRequest,
                   "malformed percent-escape in the path: '%' must be followed by two hex digits"};
    }
    const char c = static_cast<char>(high * 16 + low);
    if (c == '/' || c == '\0') {
      return Error{ErrorCode::kBadRequest, c == '/'
                                               ? "the path segment holds an encoded '/' (%2F)"
                                               : "the path segment holds an encoded NUL (%00)"};
    }
    out.push_back(c);
    i += 2;
  }
  return out;
}

bool IsJsonMediaType(std::string_view content_type) {
  return EqualsLower(TrimBlanks(content_type.substr(0, content_type.find(';'))),
                     "application/json");
}

}  // namespace wf
