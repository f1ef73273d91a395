#include "http_client/transfer_outcome.h"

#include <string>

namespace wf::http_client_internal {

std::string HostForMessage(std::string_view url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return {};
  std::string_view rest = url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  return std::string(rest);
}

bool IsHttpToken(std::string_view text) {
  if (text.empty()) return false;
  for (unsigned char c : text) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!ok) {
      switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '.':
        case '^':
        case '_':
        case '`':
        case '|':
        case '~':
          ok = true;
          break;
        default:
          break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

bool IsSafeHeaderValue(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

Error ResponseTooLarge(std::string_view host, std::size_t limit) {
  return Error{ErrorCode::kUpstreamError,
               std::string(host) + ": response exceeds " + std::to_string(limit) + " bytes"};
}

Error ErrorForCurlCode(CURLcode code, std::string_view host, std::string_view detail,
                       std::chrono::milliseconds timeout) {
  std::string reason = detail.empty() ? std::string(curl_easy_strerror(code)) : std::string(detail);
  std::string where = host.empty() ? std::string("upstream") : std::string(host);
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return Error{ErrorCode::kUpstreamTimeout,
                   where + ": no answer within " + std::to_string(timeout.count()) + " ms"};
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_PARTIAL_FILE:
      return Error{ErrorCode::kUpstreamUnavailable, where + ": " + reason};
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return Error{ErrorCode::kBadRequest, "bad URL for " + where + ": " + reason};
    case CURLE_FILESIZE_EXCEEDED:
      return Error{ErrorCode::kUpstreamError, where + ": response exceeds the size limit"};
    case CURLE_OUT_OF_MEMORY:
      return Error{ErrorCode::kInternal, where + ": " + reason};
    default:
      return Error{ErrorCode::kUpstreamError, where + ": " + reason};
  }
}

bool ProxyFromEnvironment(const std::function<const char*(const char*)>& lookup) {
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* value = lookup(name);
    if (value != nullptr && *value != '\0') return true;
  }
  return false;
}

}  // namespace wf::http_client_internal
