#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "http_client/http_client.h"
#include "io/timer.h"
#include "llm/llm_client.h"
#include "llm/retry_policy.h"

namespace wf {

/// The streaming HTTP primitive HttpLlmClient needs: HttpClient's SendStreaming/Cancel contract
/// (see http_client/http_client.h). An interface so unit tests can script upstream answers.
class ChatTransport {
 public:
  virtual ~ChatTransport() = default;
  /// As HttpClient::SendStreaming: non-blocking; on_data/on_done on an I/O thread.
  virtual HttpRequestId SendStreaming(HttpRequest request, HttpDataCallback on_data,
                                      HttpCallback on_done) = 0;
  /// As HttpClient::Cancel: on_done then gets kCancelled. Any thread.
  virtual void Cancel(HttpRequestId id) = 0;
};

/// ChatTransport over a real HttpClient (which must outlive it).
class HttpClientTransport final : public ChatTransport {
 public:
  explicit HttpClientTransport(HttpClient& client) : client_(client) {}
  HttpRequestId SendStreaming(HttpRequest request, HttpDataCallback on_data,
                              HttpCallback on_done) override {
    return client_.SendStreaming(std::move(request), std::move(on_data), std::move(on_done));
  }
  void Cancel(HttpRequestId id) override { client_.Cancel(id); }

 private:
  HttpClient& client_;
};

/// Where and how HttpLlmClient talks to the LLM.
struct LlmClientOptions {
  /// OpenAI-compatible base URL, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:8090/v1";
  /// requests go to base_url + "/chat/completions" (a trailing '/' is dropped).
  std::string base_url;
  /// Sent as `Authorization: Bearer <key>` when non-empty; never logged, and replaced by "***"
  /// in error messages built from what the server answered (some echo the key they received).
  std::string api_key;
  /// Model used when a request names none (e.g. from --llm-model / LLM_MODEL).
  std::string default_model;
  RetryPolicy retry;
  /// Per-attempt timeout when a request has no deadline.
  std::chrono::milliseconds default_timeout{600000};
  /// Largest streamed answer (bytes of the event stream) accepted per attempt; also the bound of
  /// the answer's text for a call that sets no (or a larger) max_answer_bytes.
  std::size_t max_stream_bytes = std::size_t{32} << 20;
  /// Largest error body kept to build the error message.
  std::size_t max_error_body_bytes = 64 << 10;
};

/// LlmClient over OpenAI-compatible chat completions with `stream: true` (SSE).
///
/// Each StartChat POSTs base_url/chat/completions, parses the event stream incrementally
/// (SseParser + ChatStreamAssembler) and passes content tokens on as they arrive. A 429, 408 or
/// 5xx answer, a connection failure or a stream that ends early is retried with exponential
/// backoff and jitter (RetryPolicy), waiting at least the Retry-After the server asked for, at
/// most `retry.max_attempts` attempts in all and never past the call's deadline; a call is only
/// retried while it has produced no output yet (no token, no tool call). Every attempt's timeout is
/// the time left until the deadline. Errors (ChatCallbacks::on_done): kLlmError ("LLM returned
/// HTTP 400: <upstream message, cut to 300 bytes>", "... after 3 attempts", "LLM unreachable:
/// ..."), kDeadlineExceeded, kCancelled, and kTooLarge when the answer grew past the call's
/// max_answer_bytes (or max_stream_bytes): that call is not retried and its transfer is aborted
/// at once, closing the connection.
///
/// Thread-safe. Callbacks run on the transport's I/O thread or the timer's thread. The transport
/// and the timer must outlive the client; the destructor cancels calls in flight and waits (up to
/// 5 s) for their on_done.
class HttpLlmClient final : public LlmClient {
 public:
  HttpLlmClient(LlmClientOptions options, ChatTransport& transport, Timer& timer);
  /// Convenience: over a real HttpClient.
  HttpLlmClient(LlmClientOptions options, HttpClient& http, Timer& timer);
  ~HttpLlmClient() override;
  HttpLlmClient(const HttpLlmClient&) = delete;
  HttpLlmClient& operator=(const HttpLlmClient&) = delete;

  ChatHandle StartChat(ChatRequestOptions options, ChatCallbacks callbacks) override;
  void Cancel(ChatHandle handle) override;

  /// Counters for metrics; any thread.
  struct Stats {
    std::uint64_t calls = 0;      ///< StartChat calls.
    std::uint64_t attempts = 0;   ///< HTTP requests sent.
    std::uint64_t retries = 0;    ///< Attempts after a retryable failure.
    std::uint64_t failures = 0;   ///< Calls that ended with an error other than kCancelled.
  };
  Stats stats() const;
  /// Calls in flight.
  std::size_t InFlight() const;

 private:
  struct Call;
  void StartAttempt(const std::shared_ptr<Call>& call);
  bool OnData(const std::shared_ptr<Call>& call, std::string_view bytes);
  void OnHttpDone(const std::shared_ptr<Call>& call, int attempt, Result<HttpResponse> result);
  void RetryOrFail(const std::shared_ptr<Call>& call, Error error,
                   std::optional<std::chrono::milliseconds> retry_after);
  void Complete(const std::shared_ptr<Call>& call, Result<ChatOutcome> result);
  void CompleteLater(const std::shared_ptr<Call>& call, Error error);

  LlmClientOptions options_;
  std::unique_ptr<ChatTransport> owned_transport_;
  ChatTransport& transport_;
  Timer& timer_;
  std::string url_;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<ChatHandle, std::shared_ptr<Call>> calls_;
  ChatHandle next_handle_ = 1;
  bool shutting_down_ = false;

  std::atomic<std::uint64_t> stat_calls_{0};
  std::atomic<std::uint64_t> stat_attempts_{0};
  std::atomic<std::uint64_t> stat_retries_{0};
  std::atomic<std::uint64_t> stat_failures_{0};
};

}  // namespace wf
