#include "config/placeholder.h"

#include <utility>

namespace wf {
namespace {

bool IsNameStart(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }

bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9') || c == '.'; }

/// Splits a syntactically valid name at '.'; returns false on an empty part or a bad character.
bool SplitName(std::string_view name, std::vector<std::string>* path) {
  if (name.empty() || !IsNameStart(name.front())) return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  std::size_t start = 0;
  while (true) {
    std::size_t dot = name.find('.', start);
    std::string_view part =
        name.substr(start, dot == std::string_view::npos ? name.npos : dot - start);
    if (part.empty()) return false;
    path->emplace_back(part);
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

void AppendLiteral(std::vector<TemplateSegment>* out, std::string_view text) {
  if (text.empty()) return;
  if (!out->empty() && !out->back().is_placeholder) {
    out->back().text.append(text);
  } else {
    out->push_back(TemplateSegment{false, std::string(text), {}});
  }
}

}  // namespace

Result<std::vector<TemplateSegment>> ParseTemplate(std::string_view text) {
  std::vector<TemplateSegment> out;
  std::size_t literal_start = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '{') {
      AppendLiteral(&out, text.substr(literal_start, i - literal_start));
      if (i + 1 < text.size() && text[i + 1] == '{') {
        AppendLiteral(&out, "{");
        i += 2;
        literal_start = i;
        continue;
      }
      std::size_t close = text.find('}', i + 1);
      if (close == std::string_view::npos) {
        return Error{ErrorCode::kBadRequest, "unclosed '{' at offset " + std::to_string(i)};
      }
      std::string_view name = text.substr(i + 1, close - i - 1);
      TemplateSegment segment{true, std::string(name), {}};
      if (!SplitName(name, &segment.path)) {
        return Error{ErrorCode::kBadRequest, "invalid placeholder name '" + std::string(name) +
                                                 "' at offset " + std::to_string(i)};
      }
      out.push_back(std::move(segment));
      i = close + 1;
      literal_start = i;
    } else if (c == '}') {
      AppendLiteral(&out, text.substr(literal_start, i - literal_start));
      if (i + 1 < text.size() && text[i + 1] == '}') {
        AppendLiteral(&out, "}");
        i += 2;
        literal_start = i;
        continue;
      }
      return Error{ErrorCode::kBadRequest, "single '}' at offset " + std::to_string(i) +
                                               " (write '}}' for a literal brace)"};
    } else {
      ++i;
    }
  }
  AppendLiteral(&out, text.substr(literal_start));
  return out;
}

bool IsWholePlaceholder(const std::vector<TemplateSegment>& segments) {
  return segments.size() == 1 && segments.front().is_placeholder;
}

}  // namespace wf
