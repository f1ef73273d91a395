#include "http_wire/http_wire.h"

#include <charconv>

namespace wf {

std::string_view HttpReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void AppendHttpStatusLine(std::string* out, int status) {
  char buf[16];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, status);
  (void)ec;
  out->append("HTTP/1.1 ");
  out->append(buf, end);
  out->push_back(' ');
  out->append(HttpReasonPhrase(status));
  out->append("\r\n");
}

void AppendHttpChunk(std::string* out, std::string_view data) {
  if (data.empty()) return;
  char buf[16];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, data.size(), 16);
  (void)ec;
  out->append(buf, end);
  out->append("\r\n");
  out->append(data);
  out->append("\r\n");
}

}  // namespace wf
