#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "error/error.h"

namespace wf {

/// What ScanRequestHead found in a request head.
struct RequestHeadScan {
  /// Non-null: why the head is refused (400, and the connection ends: its byte stream cannot be
  /// trusted); the fields below are then meaningless.
  const char* error = nullptr;
  /// Bytes of the head: request line, header lines and the empty line that ends them.
  std::size_t head_size = 0;
  /// An `Expect` header whose value is `100-continue` (case-insensitive, RFC 9110 10.1.1).
  bool expect_continue = false;
};

/// Checks the raw bytes of a request head for what Pistache 0.0.5's parser lets through and
/// reads differently from other HTTP/1.1 implementations (request smuggling, RFC 9112 11.2), in
/// one pass over the head:
///   - every line ends in CRLF: a bare CR or LF, or a NUL, is refused (RFC 9112 2.2);
///   - a header line that starts with a space or tab (obs-fold) is refused (RFC 9112 5.2;
///     Pistache reads it as the start of the next header's name and so loses that header);
///   - a field name is 1+ token characters directly followed by ':'; whitespace before the colon
///     is refused (RFC 9112 5.1), as is a line without a colon (Pistache reads the name on into
///     the next line);
///   - more than one Content-Length header is refused, equal values included (RFC 9112 6.3;
///     Pistache keeps the first, other servers the last).
/// Field values are not otherwise checked (Content-Length's digits: see gateway_server.cc).
///   `input`: the request's bytes from the first byte of its request line on; may hold body
///   bytes and further requests after the head, which are not looked at.
/// An `input` that ends before the empty line ending the head is refused too (callers scan a
/// head the parser has taken as complete). Pure; any thread.
RequestHeadScan ScanRequestHead(std::string_view input);

/// Decodes the percent-escapes of one path segment (RFC 3986 2.1): `%XX` with two hex digits
/// becomes that byte; every other byte stays as it is ('+' too: it means a space only in form
/// data). Refused (kBadRequest, the message says why): a '%' not followed by two hex digits, and
/// an escape that decodes to '/' or NUL (a segment cannot hold them). Pure; any thread.
Result<std::string> DecodePathSegment(std::string_view segment);

/// True when a Content-Type value names JSON: media type `application/json` (case-insensitive,
/// blanks around it and parameters such as `; charset=utf-8` allowed). Pure; any thread.
bool IsJsonMediaType(std::string_view content_type);

}  // namespace wf
