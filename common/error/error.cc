#include "error/error.h"

#include <array>
#include <nlohmann/json.hpp>

#include "codec/json_dump.h"

namespace wf {
namespace {

struct CodeInfo {
  ErrorCode code;
  std::string_view wire;
  int http;
};

constexpr std::array kCodes = {
    CodeInfo{ErrorCode::kBadRequest, "bad_request", 400},
    CodeInfo{ErrorCode::kInvalidJson, "invalid_json", 400},
    CodeInfo{ErrorCode::kBadMessage, "bad_message", 400},
    CodeInfo{ErrorCode::kMissingParameter, "missing_parameter", 400},
    CodeInfo{ErrorCode::kUnauthorized, "unauthorized", 401},
    CodeInfo{ErrorCode::kForbidden, "forbidden", 403},
    CodeInfo{ErrorCode::kNotFound, "not_found", 404},
    CodeInfo{ErrorCode::kFlowNotFound, "flow_not_found", 404},
    CodeInfo{ErrorCode::kToolNotFound, "tool_not_found", 404},
    CodeInfo{ErrorCode::kSessionNotFound, "session_not_found", 404},
    CodeInfo{ErrorCode::kMethodNotAllowed, "method_not_allowed", 405},
    CodeInfo{ErrorCode::kRequestTimeout, "request_timeout", 408},
    CodeInfo{ErrorCode::kSessionBusy, "session_busy", 409},
    CodeInfo{ErrorCode::kCancelled, "cancelled", 409},
    CodeInfo{ErrorCode::kDuplicateRequestId, "duplicate_request_id", 409},
    CodeInfo{ErrorCode::kTooLarge, "too_large", 413},
    CodeInfo{ErrorCode::kUnsupportedMediaType, "unsupported_media_type", 415},
    CodeInfo{ErrorCode::kRateLimited, "rate_limited", 429},
    CodeInfo{ErrorCode::kUpstreamError, "upstream_error", 502},
    CodeInfo{ErrorCode::kUpstreamUnavailable, "upstream_unavailable", 502},
    CodeInfo{ErrorCode::kLlmError, "llm_error", 502},
    CodeInfo{ErrorCode::kResponseTooLarge, "response_too_large", 502},
    CodeInfo{ErrorCode::kUnavailable, "unavailable", 503},
    CodeInfo{ErrorCode::kNoWorker, "no_worker", 503},
    CodeInfo{ErrorCode::kNoAgentWorker, "no_agent_worker", 503},
    CodeInfo{ErrorCode::kUpstreamTimeout, "upstream_timeout", 504},
    CodeInfo{ErrorCode::kDeadlineExceeded, "deadline_exceeded", 504},
    CodeInfo{ErrorCode::kInternal, "internal", 500},
};

const CodeInfo& Info(ErrorCode code) {
  for (const auto& info : kCodes) {
    if (info.code == code) return info;
  }
  return kCodes.back();
}

}  // namespace

std::string_view WireName(ErrorCode code) { return Info(code).wire; }

int HttpStatus(ErrorCode code) { return Info(code).http; }

ErrorCode ErrorCodeFromWire(std::string_view wire) {
  for (const auto& info : kCodes) {
    if (info.wire == wire) return info.code;
  }
  return ErrorCode::kInternal;
}

std::string ErrorJson(const Error& error, std::string_view request_id) {
  nlohmann::json j = {{"error", {{"code", WireName(error.code)}, {"message", error.message}}}};
  if (!request_id.empty()) j["error"]["request_id"] = request_id;
  // Replace invalid UTF-8 rather than throwing: an error body must always be produced.
  return DumpJson(j);
}

}  // namespace wf
