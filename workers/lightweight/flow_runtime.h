#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "error/error.h"
#include "http_client/http_client.h"
#include "io/event_loop.h"
#include "templating/template.h"

namespace wf {

/// Default bound of a rendered answer: NATS's default max payload (1 MiB).
inline constexpr std::size_t kMaxAnswerBytes = 1 << 20;

/// The answer of one flow or tool call.
struct CallOutcome {
  std::string answer;         ///< Rendered response_template.
  int upstream_status = 0;    ///< HTTP status of the business API.
  nlohmann::json parameters;  ///< What the call ran with (resolved, defaulted).
};

using CallDone = std::function<void(Result<CallOutcome>)>;

/// Inputs of one call: the parameters as given (captures and/or request parameters) and the
/// reserved values available to placeholders.
struct CallInput {
  nlohmann::json captures = nlohmann::json::object();
  nlohmann::json parameters = nlohmann::json::object();
  std::string user_message;
  std::string session_id;
  /// Absolute deadline (Unix epoch ms); 0 = only the endpoint's own timeout applies.
  int64_t deadline_unix_ms = 0;
};

/// Every flow and tool of a config with their templates compiled once at start-up, executing
/// calls asynchronously over HttpClients (connection reuse), one per event loop.
/// Thread-safe; Run* never block and call `done` exactly once, on an HTTP I/O thread (or inline
/// when the call fails before any I/O). Called on one of `loops`' threads, a call runs on that
/// loop's client, so `done` runs on the calling thread (no hand-off between threads).
class FlowRuntime {
 public:
  /// Compiles all templates; errors name the flow/tool. One HttpClient is created per loop (the
  /// loops must outlive the runtime); with no loops, one client with its own I/O thread.
  /// `max_answer_bytes` bounds a rendered answer (kResponseTooLarge above it).
  static Result<std::unique_ptr<FlowRuntime>> Create(
      std::shared_ptr<const Config> config, const std::vector<EventLoop*>& loops,
      std::size_t max_answer_bytes = kMaxAnswerBytes);

  /// Runs flow `index` (config order). Errors: kMissingParameter / kBadRequest (parameters),
  /// kUpstreamError (non-2xx, status in the message), kUpstreamUnavailable, kUpstreamTimeout,
  /// kDeadlineExceeded (deadline already passed), kResponseTooLarge (answer over the limit).
  /// Answers and messages are valid UTF-8 (upstream bytes repaired).
  void RunFlow(std::size_t index, CallInput input, CallDone done);
  /// Runs a flow by id; kFlowNotFound when unknown.
  void RunFlowById(const std::string& flow_id, CallInput input, CallDone done);
  /// Runs a tool by name; kToolNotFound when unknown.
  void RunTool(const std::string& name, CallInput input, CallDone done);

  const Config& config() const { return *config_; }
  /// Outbound requests in flight over all clients.
  std::size_t InFlight() const;

 private:
  struct Compiled {
    const std::vector<ParameterSpec>* parameters;
    EndpointTemplate endpoint;
    ResponseTemplate response;
    std::string label;  // "flow order_status" / "tool weather" for messages
  };
  FlowRuntime() = default;
  void Run(const Compiled& compiled, CallInput input, CallDone done);
  /// The client of the loop running on this thread, else the next one round-robin.
  HttpClient& ClientForThisThread();

  std::shared_ptr<const Config> config_;
  std::vector<Compiled> flows_;
  std::vector<Compiled> tools_;
  std::vector<std::unique_ptr<HttpClient>> clients_;
  std::vector<EventLoop*> loops_;  // loops_[i] drives clients_[i] (empty: clients own threads)
  std::atomic<std::size_t> next_client_{0};
  std::size_t max_answer_bytes_ = kMaxAnswerBytes;
};

/// Maps a completed HTTP exchange to a call outcome: non-2xx -> kUpstreamError with the status,
/// content type and body size (never body text: it may hold secrets); an answer over
/// `max_answer_bytes` -> kResponseTooLarge. The answer is valid UTF-8 (invalid upstream bytes
/// become U+FFFD). Pure; exposed for tests.
Result<CallOutcome> InterpretUpstream(const std::string& label, const ResponseTemplate& response,
                                      const nlohmann::json& values, Result<HttpResponse> reply,
                                      std::size_t max_answer_bytes = kMaxAnswerBytes);

}  // namespace wf
