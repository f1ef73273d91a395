#include "text/http_url.h"

#include <algorithm>

#include "text/ascii.h"

namespace wf {

std::size_t HttpSchemeLength(std::string_view url) {
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (url.size() >= scheme.size() && EqualsIgnoreCase(url.substr(0, scheme.size()), scheme)) {
      return scheme.size();
    }
  }
  return 0;
}

std::string_view HttpUrlProblem(std::string_view url) {
  const std::size_t scheme = HttpSchemeLength(url);
  if (scheme == 0) return "url must start with http:// or https://";
  if (std::any_of(url.begin(), url.end(), [](char c) {
        const auto b = static_cast<unsigned char>(c);
        return b <= 0x20 || b == 0x7F;
      })) {
    return "url contains whitespace or control characters";
  }
  std::string_view authority = url.substr(scheme);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  if (authority.empty() || authority.front() == ':') return "url has no host";
  return {};
}

}  // namespace wf
