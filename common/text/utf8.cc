#include "text/utf8.h"

namespace wf {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

/// Offset of the first byte that does not start a well-formed sequence, or text.size().
std::size_t FirstInvalid(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const std::size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return i;
    i += n;
  }
  return i;
}

}  // namespace

bool IsValidUtf8(std::string_view text) { return FirstInvalid(text) == text.size(); }

std::string ToValidUtf8(std::string_view text) {
  std::size_t i = FirstInvalid(text);
  if (i == text.size()) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  out.append(text.substr(0, i));
  while (i < text.size()) {
    const std::size_t n = Utf8SequenceLength(text, i);
    if (n > 0) {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    // One U+FFFD for the lead byte and the continuation bytes that belong to it (a truncated
    // sequence), or for one stray byte.
    out.append(kReplacement);
    const std::size_t want = Utf8LeadLength(static_cast<unsigned char>(text[i]));
    ++i;
    for (std::size_t k = 1; k < want && i < text.size(); ++k) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c < 0x80 || c > 0xBF) break;
      ++i;
    }
  }
  return out;
}

std::string_view Utf8Truncate(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t end = max_bytes;
  // Step back over at most three continuation bytes to the lead byte the cut would split.
  std::size_t back = 0;
  while (end > 0 && back < 3 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
    --end;
    ++back;
  }
  if ((static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) end = max_bytes;  // not UTF-8 anyway
  return text.substr(0, end);
}

}  // namespace wf
