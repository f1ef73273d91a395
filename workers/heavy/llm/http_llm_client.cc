#include "llm/http_llm_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <random>
#include <utility>
#include <vector>

#include "codec/json_limits.h"
#include "llm/chat_request.h"
#include "llm/chat_stream_assembler.h"
#include "llm/sse_parser.h"
#include "llm/utf8.h"

namespace wf {

namespace {

using Clock = std::chrono::steady_clock;

/// Raw bytes kept while no SSE event has been seen, to read a server that ignored `stream: true`
/// and answered one JSON object.
constexpr std::size_t kMaxRawBytes = 4u << 20;

double Jitter01() {
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

bool IsSuccess(int status) { return status >= 200 && status <= 299; }

/// How an assembler's error ends the call: an answer past its bound stays kTooLarge (the caller
/// tells it apart), anything else is the LLM's failure.
Error StreamError(const Error& assembler_error) {
  return Error{
      assembler_error.code == ErrorCode::kTooLarge ? ErrorCode::kTooLarge : ErrorCode::kLlmError,
      assembler_error.message};
}

std::string Trimmed(std::string base_url) {
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  return base_url;
}

}  // namespace

/// One StartChat call across its attempts. `mu` guards the attempt bookkeeping; the per-attempt
/// parser and assembler are touched only by the transport's I/O thread, one callback at a time.
struct HttpLlmClient::Call {
  ChatHandle handle = 0;
  std::string body;
  Clock::time_point deadline;
  std::string request_id;
  std::size_t max_answer_bytes = 0;  ///< The assembler's bound (see ChatRequestOptions).
  ChatCallbacks callbacks;

  std::mutex mu;
  bool cancelled = false;
  bool done = false;
  int attempts = 0;
  HttpRequestId http_id = 0;       ///< The attempt in flight, 0 between attempts.
  Timer::TaskId backoff_task = 0;  ///< The scheduled next attempt, 0 when none.
  Error last_error;

  // Per attempt (I/O thread only).
  std::unique_ptr<SseParser> parser;
  std::unique_ptr<ChatStreamAssembler> assembler;
  std::string raw;
  bool saw_done = false;
  std::optional<Error> stream_error;
  bool produced_output = false;  ///< Any attempt passed on output: no more retries.

  /// Passes content to the caller (and so rules out a retry of this call).
  void EmitToken(std::string_view token) {
    produced_output = true;
    if (callbacks.on_token) callbacks.on_token(token);
  }

  /// Hands `events` to this attempt's assembler in order, up to `[DONE]` (I/O thread).
  Status Apply(const std::vector<SseEvent>& events) {
    const auto on_token = [this](std::string_view token) { EmitToken(token); };
    for (const SseEvent& ev : events) {
      if (saw_done) break;
      if (ev.IsDone()) {
        saw_done = true;
        break;
      }
      if (ev.data.empty()) continue;
      if (Status st = assembler->ApplyData(ev.data, on_token); !st.ok()) return st;
      if (assembler->produced_output()) produced_output = true;
    }
    return Status::Ok();
  }
};

HttpLlmClient::HttpLlmClient(LlmClientOptions options, ChatTransport& transport, Timer& timer)
    : options_(std::move(options)),
      transport_(transport),
      timer_(timer),
      url_(Trimmed(options_.base_url) + "/chat/completions") {}

HttpLlmClient::HttpLlmClient(LlmClientOptions options, HttpClient& http, Timer& timer)
    : options_(std::move(options)),
      owned_transport_(std::make_unique<HttpClientTransport>(http)),
      transport_(*owned_transport_),
      timer_(timer),
      url_(Trimmed(options_.base_url) + "/chat/completions") {}

HttpLlmClient::~HttpLlmClient() {
  std::vector<ChatHandle> handles;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
    for (const auto& [handle, call] : calls_) handles.push_back(handle);
  }
  for (ChatHandle h : handles) Cancel(h);
  std::unique_lock<std::mutex> lock(mu_);
  if (!idle_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return calls_.empty(); })) {
    spdlog::error("llm client destroyed with {} calls still in flight", calls_.size());
  }
}

ChatHandle HttpLlmClient::StartChat(ChatRequestOptions options, ChatCallbacks callbacks) {
  auto call = std::make_shared<Call>();
  call->deadline = options.deadline;
  call->request_id = options.request_id;
  call->max_answer_bytes = options.max_answer_bytes != 0
                               ? std::min(options.max_answer_bytes, options_.max_stream_bytes)
                               : options_.max_stream_bytes;
  call->callbacks = std::move(callbacks);
  ++stat_calls_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    call->handle = next_handle_++;
    calls_.emplace(call->handle, call);
    if (shutting_down_) {
      CompleteLater(call, Error{ErrorCode::kUnavailable, "LLM client shutting down"});
      return call->handle;
    }
  }
  try {
    call->body = EncodeChatRequest(options, options_.default_model);
  } catch (const std::exception& e) {
    CompleteLater(call, Error{ErrorCode::kInternal,
                              std::string("cannot encode the LLM request: ") + e.what()});
    return call->handle;
  }
  StartAttempt(call);
  return call->handle;
}

void HttpLlmClient::Cancel(ChatHandle handle) {
  std::shared_ptr<Call> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(handle);
    if (it == calls_.end()) return;
    call = it->second;
  }
  HttpRequestId http_id = 0;
  bool dropped_backoff = false;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->done || call->cancelled) return;
    call->cancelled = true;
    http_id = call->http_id;
    if (call->backoff_task != 0) {
      dropped_backoff = timer_.Cancel(call->backoff_task);
      call->backoff_task = 0;
    }
  }
  if (http_id != 0) {
    transport_.Cancel(http_id);  // its on_done completes the call with kCancelled
  } else if (dropped_backoff) {
    CompleteLater(call, Error{ErrorCode::kCancelled, "LLM call cancelled"});
  }
  // Otherwise an attempt is being started (it checks `cancelled` once sent) or the backoff task
  // is running right now (StartAttempt checks `cancelled` first).
}

HttpLlmClient::Stats HttpLlmClient::stats() const {
  return Stats{stat_calls_.load(), stat_attempts_.load(), stat_retries_.load(),
               stat_failures_.load()};
}

std::size_t HttpLlmClient::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

void HttpLlmClient::StartAttempt(const std::shared_ptr<Call>& call) {
  HttpRequest request;
  int attempt;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    call->backoff_task = 0;
    if (call->done) return;
    if (call->cancelled) {
      CompleteLater(call, Error{ErrorCode::kCancelled, "LLM call cancelled"});
      return;
    }
    const auto now = Clock::now();
    std::chrono::milliseconds timeout = options_.default_timeout;
    if (call->deadline != Clock::time_point::max()) {
      if (now >= call->deadline) {
        CompleteLater(call, Error{ErrorCode::kDeadlineExceeded,
                                  "the turn's deadline passed before the LLM answered"});
        return;
      }
      timeout = std::chrono::ceil<std::chrono::milliseconds>(call->deadline - now);
    }
    attempt = ++call->attempts;
    call->parser = std::make_unique<SseParser>();
    call->assembler =
        std::make_unique<ChatStreamAssembler>(call->max_answer_bytes, options_.api_key);
    call->raw.clear();
    call->saw_done = false;
    call->stream_error.reset();
    request.method = "POST";
    request.url = url_;
    request.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
    if (!options_.api_key.empty()) {
      request.headers.emplace_back("Authorization", "Bearer " + options_.api_key);
    }
    request.body = call->body;
    request.timeout = timeout;
    request.max_response_bytes = options_.max_error_body_bytes;
    request.max_streamed_bytes = options_.max_stream_bytes;
  }
  ++stat_attempts_;
  if (attempt > 1) ++stat_retries_;
  const HttpRequestId id = transport_.SendStreaming(
      std::move(request), [this, call](std::string_view bytes) { return OnData(call, bytes); },
      [this, call, attempt](Result<HttpResponse> result) {
        try {
          OnHttpDone(call, attempt, std::move(result));
        } catch (const std::exception& e) {
          Complete(call, Error{ErrorCode::kInternal, std::string("LLM client: ") + e.what()});
        }
      });
  bool cancel_now = false;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (!call->done && call->attempts == attempt && call->http_id == 0) {
      call->http_id = id;
      cancel_now = call->cancelled;
    }
  }
  if (cancel_now) transport_.Cancel(id);
}

bool HttpLlmClient::OnData(const std::shared_ptr<Call>& call, std::string_view bytes) {
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->cancelled || call->done) return false;
  }
  try {
    if (call->parser->events_dispatched() == 0 && call->raw.size() < kMaxRawBytes) {
      call->raw.append(bytes.substr(0, kMaxRawBytes - call->raw.size()));
    }
    std::vector<SseEvent> events;
    Status st = call->parser->Feed(bytes, events);
    if (Status applied = call->Apply(events); !applied.ok()) {
      // Returning false aborts the transfer and closes the connection: an answer past its bound
      // costs nothing more from here on.
      call->stream_error = StreamError(applied.error());
      return false;
    }
    if (!st.ok()) {
      call->stream_error = Error{ErrorCode::kLlmError, "LLM stream: " + st.error().message};
      return false;
    }
  } catch (const std::exception& e) {
    call->stream_error = Error{ErrorCode::kInternal, std::string("LLM stream: ") + e.what()};
    return false;
  }
  return true;
}

void HttpLlmClient::OnHttpDone(const std::shared_ptr<Call>& call, int attempt,
                               Result<HttpResponse> result) {
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->attempts == attempt) call->http_id = 0;
    if (call->done) return;
    cancelled = call->cancelled;
  }
  if (cancelled) {
    Complete(call, Error{ErrorCode::kCancelled, "LLM call cancelled"});
    return;
  }
  if (call->stream_error) {
    Complete(call, *call->stream_error);
    return;
  }
  if (!result.ok()) {
    Error err = std::move(result).error();
    switch (err.code) {
      case ErrorCode::kCancelled:
        // Not cancelled by us (checked above): the transport gave up on its own.
        Complete(call, Error{ErrorCode::kLlmError, "LLM call aborted: " + err.message});
        return;
      case ErrorCode::kUpstreamTimeout:
        if (call->deadline != Clock::time_point::max() &&
            Clock::now() + std::chrono::milliseconds(20) >= call->deadline) {
          Complete(call, Error{ErrorCode::kDeadlineExceeded,
                               "the turn's deadline passed while waiting for the LLM"});
          return;
        }
        RetryOrFail(call, Error{ErrorCode::kLlmError, "LLM timed out: " + err.message},
                    std::nullopt);
        return;
      case ErrorCode::kUpstreamUnavailable:
        RetryOrFail(call,
                    Error{ErrorCode::kLlmError,
                          (call->produced_output ? "LLM connection lost: " : "LLM unreachable: ") +
                              err.message},
                    std::nullopt);
        return;
      default:
        Complete(call, Error{ErrorCode::kLlmError, "LLM request failed: " + err.message});
        return;
    }
  }
  HttpResponse& response = result.value();
  if (!IsSuccess(response.status)) {
    const std::string message = "LLM returned HTTP " + std::to_string(response.status) + ": " +
                                UpstreamErrorMessage(response.body, 300, options_.api_key);
    if (IsRetryableHttpStatus(response.status)) {
      RetryOrFail(call, Error{ErrorCode::kLlmError, message},
                  ParseRetryAfter(response.retry_after, std::chrono::system_clock::now()));
    } else {
      Complete(call, Error{ErrorCode::kLlmError, message});
    }
    return;
  }
  // 2xx: finish the stream.
  const auto on_token = [&call](std::string_view token) { call->EmitToken(token); };
  std::vector<SseEvent> events;
  call->parser->Finish(events);
  if (Status st = call->Apply(events); !st.ok()) {
    Complete(call, StreamError(st.error()));
    return;
  }
  if (call->parser->events_dispatched() == 0 && !call->raw.empty()) {
    // Not an event stream: a server that answers one chat.completion object.
    // Bounded: the completion is copied recursively to be read as a chunk.
    Result<nlohmann::json> completion = ParseBoundedJson(call->raw);
    if (!completion.ok() && completion.error().code == ErrorCode::kBadRequest) {
      Complete(call, Error{ErrorCode::kLlmError, "LLM answered " + completion.error().message});
      return;
    }
    if (completion.ok() && completion->is_object()) {
      if (Status st = call->assembler->ApplyCompletion(*completion, on_token); !st.ok()) {
        Complete(call, StreamError(st.error()));
        return;
      }
      call->saw_done = true;
    }
  }
  if (call->assembler->produced_output()) call->produced_output = true;
  if (!call->saw_done && !call->assembler->finished()) {
    RetryOrFail(call,
                Error{ErrorCode::kLlmError, "LLM stream ended before the answer was complete"},
                std::nullopt);
    return;
  }
  ChatOutcome outcome = call->assembler->Finish(on_token);
  {
    std::lock_guard<std::mutex> lock(call->mu);
    outcome.attempts = call->attempts;
  }
  Complete(call, std::move(outcome));
}

void HttpLlmClient::RetryOrFail(const std::shared_ptr<Call>& call, Error error,
                                std::optional<std::chrono::milliseconds> retry_after) {
  if (call->produced_output) {
    Complete(call, Error{error.code, error.message + " (after part of the answer was streamed)"});
    return;
  }
  std::unique_lock<std::mutex> lock(call->mu);
  if (call->done) return;
  if (call->cancelled) {
    lock.unlock();
    Complete(call, Error{ErrorCode::kCancelled, "LLM call cancelled"});
    return;
  }
  const int attempts = call->attempts;
  const auto delay = NextRetryDelay(options_.retry, attempts, retry_after, Clock::now(),
                                    call->deadline, Jitter01());
  if (!delay) {
    lock.unlock();
    const bool out_of_time = attempts < options_.retry.max_attempts;
    Complete(call, Error{ErrorCode::kLlmError,
                         error.message +
                             (out_of_time ? " (no time left before the deadline to retry)"
                                          : " (after " + std::to_string(attempts) + " attempts)")});
    return;
  }
  spdlog::warn("llm call {} (request {}): attempt {} failed: {}; retrying in {} ms", call->handle,
               call->request_id, attempts, error.message, delay->count());
  call->last_error = std::move(error);
  call->backoff_task = timer_.After(*delay, [this, call] { StartAttempt(call); });
}

void HttpLlmClient::Complete(const std::shared_ptr<Call>& call, Result<ChatOutcome> result) {
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->done) return;
    call->done = true;
  }
  if (!result.ok() && result.error().code != ErrorCode::kCancelled) {
    ++stat_failures_;
    spdlog::warn("llm call {} (request {}) failed: {}", call->handle, call->request_id,
                 result.error().message);
  }
  ChatCallbacks callbacks = std::move(call->callbacks);
  call->callbacks = {};
  try {
    if (callbacks.on_done) callbacks.on_done(std::move(result));
  } catch (const std::exception& e) {
    spdlog::error("llm call {}: on_done threw: {}", call->handle, e.what());
  } catch (...) {
    spdlog::error("llm call {}: on_done threw", call->handle);
  }
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(call->handle);
  if (calls_.empty()) idle_cv_.notify_all();
}

void HttpLlmClient::CompleteLater(const std::shared_ptr<Call>& call, Error error) {
  timer_.After(std::chrono::milliseconds(0), [this, call, error = std::move(error)]() mutable {
    Complete(call, std::move(error));
  });
}

}  // namespace wf
