#include "http_client/transfer_outcome.h"

#include <optional>
#include <string>

#include "text/ascii.h"

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
                       std::chrono::milliseconds timeout, bool request_sent) {
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
      // Sent: the answer was not HTTP ("Received HTTP/0.9 when not allowed").
      if (request_sent) return Error{ErrorCode::kUpstreamError, where + ": " + reason};
      return Error{ErrorCode::kBadRequest, "bad URL for " + where + ": " + reason};
    case CURLE_FILESIZE_EXCEEDED:
      return Error{ErrorCode::kUpstreamError, where + ": response exceeds the size limit"};
    case CURLE_OUT_OF_MEMORY:
      // Sent: libcurl 7.88 says "Out of memory" for response headers past its 100 KB limit.
      if (request_sent) {
        return Error{ErrorCode::kUpstreamError,
                     where + ": response headers too large or unreadable (" + reason + ")"};
      }
      return Error{ErrorCode::kInternal, where + ": " + reason};
    default:
      return Error{ErrorCode::kUpstreamError, where + ": " + reason};
  }
}

namespace {

/// `line`'s value when it is the header `name` (case-insensitive), trimmed; nullopt otherwise.
std::optional<std::string_view> HeaderValue(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':' ||
      !EqualsIgnoreCase(line.substr(0, name.size()), name)) {
    return std::nullopt;
  }
  std::string_view value = line.substr(name.size() + 1);
  const auto first = value.find_first_not_of(" \t");
  if (first == std::string_view::npos) return std::string_view();
  const auto last = value.find_last_not_of(" \t\r\n");
  return value.substr(first, last - first + 1);
}

}  // namespace

std::string ResponseHeaderCheck::Check(std::string_view line) {
  if (line.substr(0, 5) == "HTTP/") {  // a status line: a new response begins
    has_length_ = false;
    length_.clear();
    return {};
  }
  if (auto length = HeaderValue(line, "content-length")) {
    if (!has_length_) {
      has_length_ = true;
      length_.assign(*length);
    } else if (*length != length_) {
      return "response has two different Content-Length headers (" + length_ + " and " +
             std::string(length->substr(0, 32)) + ")";
    }
    return {};
  }
  if (auto encoding = HeaderValue(line, "content-encoding")) {
    if (head_request_ || encoding->empty()) return {};
    if (!EqualsIgnoreCase(*encoding, "identity")) {
      return "response body is " + std::string(encoding->substr(0, 32)) +
             "-encoded, which was not asked for";
    }
  }
  return {};
}

bool ProxyFromEnvironment(const std::function<const char*(const char*)>& lookup) {
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* value = lookup(name);
    if (value != nullptr && *value != '\0') return true;
  }
  return false;
}

}  // namespace wf::http_client_internal
