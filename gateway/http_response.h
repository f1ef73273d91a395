#pragma once

#include <string>
#include <string_view>

#include "error/error.h"
#include "http_wire/http_wire.h"

namespace wf {

/// Content types the gateway answers with.
inline constexpr std::string_view kJsonType = "application/json";
inline constexpr std::string_view kPrometheusType = "text/plain; version=0.0.4; charset=utf-8";

/// The interim answer to `Expect: 100-continue`.
inline constexpr std::string_view kContinueResponse = "HTTP/1.1 100 Continue\r\n\r\n";

/// A complete HTTP/1.1 response with Content-Length. The gateway writes responses itself (not
/// through Pistache's ResponseWriter) so that any thread can produce them and so that
/// `Connection` follows HTTP/1.1 (keep-alive unless the client asked to close).
///   `request_id`: non-empty adds `X-Request-Id`.
///   `extra_headers`: complete header lines, each ending in "\r\n" (e.g. "Allow: GET\r\n").
/// Pure; any thread.
std::string FormatHttpResponse(int status, std::string_view content_type, std::string_view body,
                               std::string_view request_id, bool keep_alive,
                               std::string_view extra_headers = {});

/// A complete JSON error response: the status is HttpStatus(error.code) and the body
/// ErrorJson(error, request_id) (common/error, the one place errors become HTTP), with
/// `X-Request-Id` when `request_id` is non-empty. Pure; any thread.
std::string FormatErrorResponse(const Error& error, std::string_view request_id, bool keep_alive,
                                std::string_view extra_headers = {});

/// The answer to a HEAD request whose GET answer would be `response` (a complete response made
/// by FormatHttpResponse or FormatErrorResponse): the same status line and headers, Content-Length
/// still that of the body it would have sent, and no body (RFC 9110 9.3.2). Pure; any thread.
std::string HeadResponse(std::string response);

/// The head of a Server-Sent Events answer: 200, `text/event-stream`, chunked, no caching or
/// proxy buffering, `X-Request-Id`. The stream ends with the last chunk, so the connection can
/// carry the client's next request: `Connection: keep-alive` when `keep_alive`, else `close`.
std::string FormatSseHead(std::string_view request_id, bool keep_alive);

}  // namespace wf
