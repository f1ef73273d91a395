#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/placeholder.h"
#include "error/error.h"

namespace wf {

/// Longest URL EndpointTemplate::Render produces (8 KiB: the common request-line limit of HTTP
/// servers; libcurl itself fails far longer ones as "out of memory").
inline constexpr std::size_t kMaxRenderedUrlBytes = 8192;

/// A fully substituted outbound HTTP call, ready for the HTTP client.
struct PreparedRequest {
  std::string method;
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  ///< In config order.
  std::string body;                                          ///< "" when the endpoint has no body.
  std::chrono::milliseconds timeout{5000};
  std::size_t max_response_bytes = 1 << 20;
};

/// An EndpointConfig with its placeholders parsed once, at start-up (syntax: ParseTemplate in
/// config/placeholder.h). Values come from one JSON object: user_message, session_id and every
/// resolved parameter. A placeholder name with dots ({a.b}) is first looked up as a whole key,
/// then as a path into objects (and arrays, by decimal index).
///
/// Immutable and cheap to copy (shared state); Render is const and safe on any thread.
class EndpointTemplate {
 public:
  /// Parses url, header values and body strings. Error (kBadRequest) names the field:
  /// "url: invalid template: unclosed '{' at offset 9", "headers.X-Session: ...",
  /// "body.text: ...".
  static Result<EndpointTemplate> Compile(const EndpointConfig& endpoint);

  /// Substitutes `values` (a JSON object):
  /// - url: each value percent-encoded (RFC 3986 unreserved characters kept, every other byte of
  ///   the UTF-8 text %XX): a string's raw text, a number or boolean as its JSON text, an
  ///   object or array as compact JSON. In the path (before the template's first literal '?'
  ///   or '#') '.' is encoded too (%2E), so a value such as ".." can never form a dot segment
  ///   that would move the request to another path ("/api/x/{p}/echo" with p=".." is sent as
  ///   "/api/x/%2E%2E/echo", and the HTTP client sends paths as is);
  /// - headers: the same texts unencoded; a CR, LF or NUL in a substituted value is kBadRequest
  ///   "header X-Name: value contains CR, LF or NUL";
  /// - body: the JSON template with placeholders substituted as JSON values: a string that is
  ///   exactly "{name}" becomes the value itself with its JSON type ("days": 3); a placeholder
  ///   inside a longer string is substituted as text; object keys are not templated. The body
  ///   is built as a JSON value and serialized, never spliced as text. Content-Type:
  ///   application/json is added when there is a body and no Content-Type header is configured.
  /// A placeholder with no value (absent or null) is kMissingParameter "missing parameter: NAME".
  /// A URL longer than kMaxRenderedUrlBytes once substituted is kBadRequest ("url: N bytes ...").
  Result<PreparedRequest> Render(const nlohmann::json& values) const;

 private:
  struct Impl;
  explicit EndpointTemplate(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

/// The answer template of a flow or tool, parsed once.
///
/// - {result}: the whole response body text;
/// - {result.a.b}: a field of the JSON response; {result.items.0} an array element. Strings are
///   inserted raw, other JSON values (including null) as compact JSON;
/// - {name}: a value (parameter, user_message, session_id), same rules; `result` is always the
///   response, never a parameter.
/// A missing value, or a {result.x} field of a body that is not JSON (or nests deeper than
/// kMaxJsonNesting, codec/json_limits.h), renders as empty text:
/// the upstream call has already happened and its effect must not be lost, so rendering never
/// fails a turn.
///
/// Immutable; Render is const and safe on any thread.
class ResponseTemplate {
 public:
  /// Parses `text`. Error (kBadRequest): "invalid template: <reason>".
  static Result<ResponseTemplate> Compile(std::string_view text);

  /// Substitutes `values` (a JSON object; anything else counts as empty) and the response body.
  /// The body is read as JSON only when a {result.x} placeholder is used: validated once, then
  /// each field found by scanning the text (json_scan), with the results of a full parse.
  std::string Render(const nlohmann::json& values, std::string_view response_body) const;
  /// The same, but gives up (nullopt) as soon as the answer would exceed `max_bytes`, before
  /// building more of it: `{result}{result}` of a large body must not grow without bound.
  std::optional<std::string> RenderAtMost(const nlohmann::json& values,
                                          std::string_view response_body,
                                          std::size_t max_bytes) const;

 private:
  explicit ResponseTemplate(std::vector<TemplateSegment> segments);
  std::vector<TemplateSegment> segments_;
  /// The distinct top-level keys the {result.x...} placeholders read (x), at most
  /// kMaxScannedKeys, in order of first use: a JSON object body is walked once for all of them
  /// (each lookup alone walks the whole object, as the last of a repeated key wins).
  static constexpr std::size_t kMaxScannedKeys = 16;
  std::vector<std::string> result_keys_;
  /// Per segment: its index in result_keys_, or -1 (not a {result.x...} placeholder, or its key
  /// is past kMaxScannedKeys and is looked up alone).
  std::vector<int> result_key_of_;
  bool uses_result_fields_ = false;
  std::size_t literal_size_ = 0;
};

/// Appends `text` percent-encoded (RFC 3986: A-Z a-z 0-9 - . _ ~ kept, any other byte as %XX
/// with upper-case hex) to `out`. Pure.
void AppendPercentEncoded(std::string_view text, std::string* out);
/// The same; with `encode_dots`, '.' is encoded as %2E too (for values in a URL path).
void AppendPercentEncoded(std::string_view text, std::string* out, bool encode_dots);

}  // namespace wf
