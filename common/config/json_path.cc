#include "config/json_path.h"

#include <nlohmann/json.hpp>

#include "codec/json_dump.h"

namespace wf {
namespace {

bool IsPlainKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
    if (!plain) return false;
  }
  return true;
}

}  // namespace

std::string JsonPathMember(std::string_view parent, std::string_view key) {
  std::string out(parent);
  if (IsPlainKey(key)) {
    if (!out.empty()) out += '.';
    out.append(key);
  } else {
    out += '[';
    out += JsonQuote(key);
    out += ']';
  }
  return out;
}

std::string JsonPathIndex(std::string_view parent, std::size_t index) {
  std::string out(parent);
  out += '[';
  out += std::to_string(index);
  out += ']';
  return out;
}

}  // namespace wf
