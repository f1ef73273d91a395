#include "gateway/http_response.h"

#include <charconv>

namespace wf {

namespace {

void AppendNumber(std::string* out, std::size_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  (void)ec;
  out->append(buf, end);
}

}  // namespace

std::string FormatHttpResponse(int status, std::string_view content_type, std::string_view body,
                               std::string_view request_id, bool keep_alive,
                               std::string_view extra_headers) {
  std::string out;
  out.reserve(160 + extra_headers.size() + body.size());
  AppendHttpStatusLine(&out, status);
  out.append("Content-Type: ").append(content_type).append("\r\n");
  out.append("Content-Length: ");
  AppendNumber(&out, body.size());
  out.append("\r\n");
  if (!request_id.empty()) out.append("X-Request-Id: ").append(request_id).append("\r\n");
  out.append(extra_headers);
  out.append(keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
  out.append(body);
  return out;
}

std::string FormatErrorResponse(const Error& error, std::string_view request_id, bool keep_alive,
                                std::string_view extra_headers) {
  return FormatHttpResponse(HttpStatus(error.code), kJsonType, ErrorJson(error, request_id),
                            request_id, keep_alive, extra_headers);
}

std::string HeadResponse(std::string response) {
  // The formatters write no empty line before the one that ends the head.
  const std::size_t end = response.find("\r\n\r\n");
  if (end != std::string::npos) response.resize(end + 4);
  return response;
}

std::string FormatSseHead(std::string_view request_id, bool keep_alive) {
  std::string out;
  out.reserve(256);
  AppendHttpStatusLine(&out, 200);
  out.append(
      "Content-Type: text/event-stream; charset=utf-8\r\n"
      "Cache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\n"
      "Transfer-Encoding: chunked\r\n");
  if (!request_id.empty()) out.append("X-Request-Id: ").append(request_id).append("\r\n");
  out.append(keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
  return out;
}

}  // namespace wf
