#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "error/error.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {

/// The client end of one HTTP exchange: where its response bytes go.
class ClientChannel {
 public:
  virtual ~ClientChannel() = default;
  /// Queues bytes for the client, in call order. Called by Exchange with its lock held (so calls
  /// never overlap) and never after Exchange::OnClientGone. Must not block and must not throw.
  /// Returns false when the bytes were not taken because the client stopped reading: the bytes
  /// it has not taken yet would pass gateway.max_buffered_bytes_per_connection, and the
  /// connection is being dropped. The exchange then counts the client as gone.
  virtual bool Send(std::string bytes) = 0;
  /// No more requests on this connection: once the bytes sent so far are written, half-close it
  /// (the client reads them, then end-of-stream). Called after an answer that said (or, for a
  /// stream whose head promised keep-alive, should have said) `Connection: close`. Same calling
  /// rules as Send.
  virtual void EndConnection() = 0;
};

/// What an HTTP request waits for on NATS.
enum class ExchangeKind {
  kQuery,          ///< POST /api/v1/query: one JSON answer from `final` or `error`.
  kStream,         ///< POST /api/v1/query/stream: Server-Sent Events until `final`/`error`.
  kSessionGet,     ///< GET /api/v1/session/{id}: one SessionReply.
  kSessionDelete,  ///< DELETE /api/v1/session/{id}: one SessionReply.
};

/// The result of feeding something to an Exchange.
struct ExchangeOutcome {
  /// True for exactly one call per exchange: the one that ended it. The caller then removes the
  /// exchange from its table and records `status`.
  bool finished = false;
  /// HTTP status to record: the one sent; 200 for a stream that started; 499 when the client
  /// went away first, or stopped reading (ClientChannel::Send refused) before the answer's end.
  int status = 0;
  /// The caller should publish `<prefix>.cancel.<request_id>` (the worker may still be running).
  bool cancel = false;
};

/// One HTTP request waiting for its answer over NATS. Turns NATS events, deadlines, heartbeats
/// and client disconnects into response bytes for its ClientChannel, exactly once and in order.
///
/// Thread-safety: every method may be called from any thread (a Pistache worker, the NATS
/// delivery thread, the gateway's ticker); an internal mutex serialises them. Nothing blocks
/// except that mutex, held only while formatting and queueing bytes.
class Exchange {
 public:
  struct Params {
    ExchangeKind kind = ExchangeKind::kQuery;
    std::string request_id;
    /// The request's session id, used when a reply leaves it empty.
    std::string session_id;
    /// HTTP keep-alive: the connection carries the next request after this answer (a JSON
    /// response or a complete SSE stream).
    bool keep_alive = true;
    /// The request was HEAD (kSessionGet only): the answer is the GET answer's status and
    /// headers without its body (HeadResponse).
    bool head_only = false;
    std::chrono::steady_clock::time_point start{};
    /// After this, a query/stream ends with 504 deadline_exceeded (and a cancel) and a session
    /// request with 503 no_agent_worker.
    std::chrono::steady_clock::time_point deadline{};
    /// Queries and streams: when no event at all has come by then (not even `queued`), the
    /// worker that took the query is presumed gone: 504 deadline_exceeded (and a cancel).
    /// Default: none (only `deadline`).
    std::chrono::steady_clock::time_point first_event_deadline =
        std::chrono::steady_clock::time_point::max();
    /// gateway.flow_timeout_ms, for the message of that 504.
    std::chrono::milliseconds flow_timeout{0};
    /// Streams: a `: heartbeat` comment after this much silence (the first one already after
    /// min(heartbeat, 1 s), so proxies see bytes from the first second on).
    std::chrono::milliseconds heartbeat{15000};
  };

  Exchange(Params params, std::unique_ptr<ClientChannel> channel);
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  /// kStream only: sends the SSE response head now, unless a write (an event, an error, a
  /// heartbeat) already carried it. Call it right after the request is published: the head
  /// is then off the path to the workers, and an event that comes first carries it in the
  /// same write. A stream's every answer is SSE, whichever writes first.
  ///
  /// The outcome is finished (499, with a cancel) only when the connection refused the head (an
  /// earlier answer's bytes still wait for the client past the bound: see ClientChannel::Send).
  ExchangeOutcome StartStream();

  /// A QueryEvent for this request. kQuery answers on final/error and ignores the rest; kStream
  /// forwards every event as SSE and ends after final/error. `queued` only lifts the
  /// first-event deadline. Whenever the client's connection refuses bytes (it stopped reading,
  /// see ClientChannel::Send), here or in OnTick's heartbeat, the exchange ends as if the client
  /// had gone: 499, and a cancel while the query still runs.
  ExchangeOutcome OnEvent(const v1::QueryEvent& event);
  /// The reply of a session request (kSessionGet / kSessionDelete).
  ExchangeOutcome OnSessionReply(const v1::SessionReply& reply);
  /// NATS said nobody listens on the request subject: 503 no_worker (queries) or
  /// no_agent_worker (sessions).
  ExchangeOutcome OnNoResponders();
  /// Time passed: ends the exchange at its deadline, sends a heartbeat on a silent stream.
  ExchangeOutcome OnTick(std::chrono::steady_clock::time_point now);
  /// The client disconnected. After this returns nothing is ever sent again; `cancel` is set
  /// when a query or stream was still running. Call on the connection's Pistache thread before
  /// the connection's file descriptor is closed.
  ExchangeOutcome OnClientGone();
  /// Ends the exchange with `error` (e.g. publish failed, gateway shutting down); `cancel` is set
  /// for queries and streams.
  ExchangeOutcome Fail(const Error& error);

  /// The connection will not carry another request: the answer (if not sent yet) says
  /// `Connection: close`; a stream whose head already said keep-alive half-closes the connection
  /// after its last chunk, so the client is not left waiting on it. Returns false, changing
  /// nothing, when the exchange had already ended (its answer went out as it was: the caller
  /// must treat further input as the next request, not drop it).
  bool DisableKeepAlive();

  ExchangeKind kind() const { return params_.kind; }
  const std::string& request_id() const { return params_.request_id; }
  std::chrono::steady_clock::time_point start() const { return params_.start; }
  /// True once ended (by any of the above).
  bool finished() const;

 private:
  /// Sends a complete non-stream response and ends the exchange. Lock held.
  ExchangeOutcome FinishWithResponse(int status, std::string body);
  /// Ends with `error`: a JSON error response, or an `error` event + end of stream. Lock held.
  ExchangeOutcome FinishWithError(const Error& error, bool cancel);
  /// Sends bytes (if the client is still there) and remembers when; when the channel refuses
  /// them the client counts as gone (`client_gone_`, `dropped_`). Lock held.
  void Send(std::string bytes, std::chrono::steady_clock::time_point now);
  /// Ends the exchange after the channel refused bytes mid-answer: 499, and a cancel for a query
  /// or stream (the worker would run on for nobody). Lock held.
  ExchangeOutcome Dropped();
  /// Sends a stream's last bytes (ending in the last chunk). Lock held.
  void EndStream(std::string bytes);
  bool IsQueryLike() const {
    return params_.kind == ExchangeKind::kQuery || params_.kind == ExchangeKind::kStream;
  }

  const Params params_;
  bool keep_alive_;
  std::unique_ptr<ClientChannel> channel_;
  mutable std::mutex mu_;
  bool finished_ = false;
  bool client_gone_ = false;
  bool dropped_ = false;       ///< The channel refused bytes: the client stopped reading.
  bool head_pending_ = false;  ///< kStream: the SSE head is not written yet (see Send)
  bool wrote_since_head_ = false;
  uint32_t attempt_ =
      0;                ///< Highest QueryEvent.attempt seen (0: none, or a worker that sets none).
  bool heard_ = false;  ///< Some QueryEvent came: first_event_deadline no longer applies.
  std::chrono::steady_clock::time_point last_write_;
};

}  // namespace wf
