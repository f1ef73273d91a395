#include "codec/json_limits.h"

#include <string>

namespace wf {

bool JsonDepthExceeds(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > limit) return true;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return false;
}

Result<nlohmann::json> ParseBoundedJson(std::string_view text, int limit) {
  if (JsonDepthExceeds(text, limit)) {
    return Error{ErrorCode::kBadRequest,
                 "JSON nested deeper than " + std::to_string(limit) + " levels"};
  }
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Error{ErrorCode::kInvalidJson, "not valid JSON"};
  return doc;
}

}  // namespace wf
