#pragma once

#include <curl/curl.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "error/error.h"

/// Pure pieces of the HTTP client (no I/O): request validation and the mapping of libcurl's
/// outcome to wf errors. Internal to wf_common_http_client; public for its unit tests.
namespace wf::http_client_internal {

/// "host:port" (or "host") of an absolute URL, for error messages: scheme, user info (which may
/// hold credentials), path, query and fragment are dropped. Empty when there is no host.
std::string HostForMessage(std::string_view url);

/// True for a non-empty RFC 9110 token (method or header name).
bool IsHttpToken(std::string_view text);

/// True when a header value may be sent as is: no CR, LF or NUL (no header injection).
bool IsSafeHeaderValue(std::string_view text);

/// The error a failed transfer becomes. `host` comes from HostForMessage, `detail` is libcurl's
/// error buffer (may be empty), `timeout` the request's timeout, `request_sent` whether any byte
/// of the request went out (after that, what fails is the server's answer: a response that is
/// not HTTP or whose headers overflow libcurl's buffer is the upstream's error, not a bad URL or
/// an internal one).
Error ErrorForCurlCode(CURLcode code, std::string_view host, std::string_view detail,
                       std::chrono::milliseconds timeout, bool request_sent = false);

/// The checks of one transfer's response headers, line by line as libcurl passes them (status
/// lines included; each starts a new response, e.g. after a 100 Continue).
class ResponseHeaderCheck {
 public:
  /// `head_request`: the request was HEAD (no body is read, so its encoding does not matter).
  explicit ResponseHeaderCheck(bool head_request = false) : head_request_(head_request) {}

  /// Empty when `line` leaves the response readable; otherwise why not: a second Content-Length
  /// with another value (which one frames the body is a guess, and a wrong guess reads the next
  /// response's bytes as this one's), or a Content-Encoding other than identity (none was asked
  /// for: the body would be passed on compressed).
  std::string Check(std::string_view line);

 private:
  bool head_request_ = false;
  bool has_length_ = false;
  std::string length_;
};

/// kUpstreamError "<host>: response exceeds N bytes".
Error ResponseTooLarge(std::string_view host, std::size_t limit);

/// True when the environment names a proxy that libcurl would use for an http or https URL
/// (http_proxy, https_proxy, HTTPS_PROXY, all_proxy or ALL_PROXY set and non-empty; libcurl
/// ignores HTTP_PROXY). `lookup` is getenv or a stand-in; read once, at start.
bool ProxyFromEnvironment(const std::function<const char*(const char*)>& lookup);

/// True for 200..299.
inline bool IsSuccessStatus(long status) { return status >= 200 && status <= 299; }

}  // namespace wf::http_client_internal
