#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace wf {

/// Every failure the system reports. Each code has exactly one wire name (the `code` of the JSON
/// and NATS `error`) and one HTTP status; both live in error.cc and nowhere else.
enum class ErrorCode {
  kBadRequest,            ///< "bad_request" 400: a field is missing or malformed.
  kInvalidJson,           ///< "invalid_json" 400: the body is not JSON.
  kBadMessage,            ///< "bad_message" 400: NATS payload is not a valid protobuf.
  kMissingParameter,      ///< "missing_parameter" 400: a placeholder has no value.
  kUnauthorized,          ///< "unauthorized" 401.
  kForbidden,             ///< "forbidden" 403.
  kNotFound,              ///< "not_found" 404: unknown path or resource.
  kFlowNotFound,          ///< "flow_not_found" 404.
  kToolNotFound,          ///< "tool_not_found" 404.
  kSessionNotFound,       ///< "session_not_found" 404.
  kMethodNotAllowed,      ///< "method_not_allowed" 405.
  kRequestTimeout,        ///< "request_timeout" 408: the HTTP request did not arrive in time.
  kSessionBusy,           ///< "session_busy" 409: another turn of the session is running.
  kCancelled,             ///< "cancelled" 409: the turn was cancelled.
  kDuplicateRequestId,    ///< "duplicate_request_id" 409: the id names another stored turn.
  kTooLarge,              ///< "too_large" 413.
  kUnsupportedMediaType,  ///< "unsupported_media_type" 415: a body that is not declared JSON.
  kRateLimited,           ///< "rate_limited" 429.
  kUpstreamError,         ///< "upstream_error" 502: business API answered non-2xx.
  kUpstreamUnavailable,   ///< "upstream_unavailable" 502: business API unreachable.
  kLlmError,              ///< "llm_error" 502: the LLM endpoint failed.
  kResponseTooLarge,      ///< "response_too_large" 502: an answer too large to deliver (NATS max
                          ///< payload, answer size limit).
  kUnavailable,           ///< "unavailable" 503: a dependency (NATS, Redis, PostgreSQL) is down.
  kNoWorker,              ///< "no_worker" 503: no lightweight worker answered.
  kNoAgentWorker,         ///< "no_agent_worker" 503: no heavy worker consumes agent turns.
  kUpstreamTimeout,       ///< "upstream_timeout" 504: business API did not answer in time.
  kDeadlineExceeded,      ///< "deadline_exceeded" 504: the request's deadline passed.
  kInternal,              ///< "internal" 500: a bug; details are in the logs.
};

/// The wire name of a code ("no_agent_worker").
std::string_view WireName(ErrorCode code);

/// The HTTP status that a code maps to. The one place where errors become HTTP.
int HttpStatus(ErrorCode code);

/// Parses a wire name back into a code; unknown names become kInternal.
ErrorCode ErrorCodeFromWire(std::string_view wire);

/// A failure with its code and a human-readable message (never containing secrets).
struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

/// `{"error":{"code":"...","message":"..."}}` for an HTTP body; with a non-empty `request_id`
/// `{"error":{"code":"...","message":"...","request_id":"..."}}`.
std::string ErrorJson(const Error& error, std::string_view request_id = {});

/// Value-or-error, for hot paths where exceptions are not wanted (std::expected is C++23).
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  Result(ErrorCode code, std::string message) : v_(Error{code, std::move(message)}) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

/// Result of an operation without a value.
class Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  Status(ErrorCode code, std::string message) : error_{code, std::move(message)}, ok_(false) {}
  static Status Ok() { return Status(); }

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace wf
