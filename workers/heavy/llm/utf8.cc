#include "llm/utf8.h"

#include "text/utf8.h"

namespace wf {
namespace {

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

std::size_t Utf8CompletePrefixLength(std::string_view bytes) {
  // Only the last three bytes can belong to an unfinished sequence.
  const std::size_t n = bytes.size();
  const std::size_t start = n > 3 ? n - 3 : 0;
  for (std::size_t i = n; i > start; --i) {
    const auto c = static_cast<unsigned char>(bytes[i - 1]);
    if (IsContinuation(c)) continue;
    const std::size_t len = Utf8LeadLength(c);
    if (len > 1 && n - (i - 1) < len) {
      // A lead byte whose sequence is cut short; hold it back only if what did arrive fits.
      for (std::size_t k = i; k < n; ++k) {
        if (!IsContinuation(static_cast<unsigned char>(bytes[k]))) return n;
      }
      return i - 1;
    }
    return n;
  }
  return n;
}

std::string TruncateUtf8(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  std::string out(Utf8Truncate(text, max_bytes));
  out += "...";
  return out;
}

std::string SanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t len = Utf8SequenceLength(text, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  return out;
}

}  // namespace wf
