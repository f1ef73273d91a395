#include "gateway/gateway_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>
#include <pistache/peer.h>
#include <pistache/stream.h>
#include <pistache/version.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "cli/command_line.h"
#include "codec/json_text.h"
#include "gateway/event_format.h"
#include "gateway/exchange.h"
#include "gateway/exchange_table.h"
#include "gateway/http_request.h"
#include "gateway/http_response.h"
#include "gateway/ids.h"
#include "gateway/metrics.h"
#include "gateway/query_body.h"
#include "gateway/write_backlog.h"
#include "io/event_loop.h"
#include "nats/connection.h"
#include "nats/micro_service.h"
#include "protocol/query_rules.h"
#include "text/utf8.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {
namespace {

namespace Http = Pistache::Http;
namespace Tcp = Pistache::Tcp;
using Clock = std::chrono::steady_clock;

/// Room for the request line and headers on top of the largest accepted body.
constexpr std::size_t kHeaderAllowance = 64 * 1024;
/// Pistache's own request timeouts come this long after gateway.request_read_timeout_ms, whose
/// JSON 408 (ReadClock) must always come first: Pistache's writes a bodiless 408 and closes the
/// descriptor without telling the handler.
constexpr auto kPistacheReadTimeoutMargin = std::chrono::seconds(5);
/// How long after a query's route deadline the gateway gives up on hearing from any worker.
constexpr auto kRouteDeadlineGrace = std::chrono::milliseconds(500);
/// Pistache's idle timeout never fires before this; it is also raised above the longest
/// possible exchange (see Start), because Pistache closes such connections without telling the
/// handler.
constexpr auto kMinKeepAlive = std::chrono::seconds(300);
constexpr std::string_view kSessionPath = "/api/v1/session/";
/// Room left under the NATS max payload (which counts headers too) when an encoded query is
/// checked against it: the gateway's headers (`NATS/1.0`, Wf-Request-Id, traceparent: ~115
/// bytes) and what the lightweight worker adds when it forwards the query to JetStream
/// (Nats-Msg-Id, Wf-Publish-Token: ~80 bytes; it keeps the proto's fields). 512 bytes is more
/// than twice that, so a query that passes the check also fits after the forward.
constexpr std::size_t kQueryPayloadMargin = 512;
const std::string kConnKey = "wf.gw.conn";  // fits the inline buffer: no allocation per lookup
const std::string kTraceparentName = "traceparent";
const std::string kContentTypeName = "Content-Type";

Route RouteOf(ExchangeKind kind) {
  switch (kind) {
    case ExchangeKind::kQuery:
      return Route::kQuery;
    case ExchangeKind::kStream:
      return Route::kQueryStream;
    case ExchangeKind::kSessionGet:
      return Route::kSessionGet;
    case ExchangeKind::kSessionDelete:
      return Route::kSessionDelete;
  }
  return Route::kOther;
}

/// Writes one connection's response bytes, from any thread.
///
/// The fast path is a non-blocking ::send on the connection's descriptor by the calling thread
/// (the NATS delivery thread for answers): no hop through the Pistache worker. When the socket
/// takes only part of the bytes (or none), the rest goes through Tcp::Peer::send, which pushes
/// onto the owning transport's lock-free MPSC write queue and signals its eventfd; the transport
/// thread writes it when the socket is writable. While anything of this connection sits in that
/// queue (the backlog is not empty; Pistache reports each write done, and the callback releases
/// its bytes), later writes queue behind it, so bytes never overtake each other.
///
/// The queue is bounded (WriteBacklog, gateway.max_buffered_bytes_per_connection): a client that
/// stops reading would otherwise hold in the gateway everything its answer streams. Past the
/// bound the connection is dropped: nothing more is written (a backed-up stream cannot carry an
/// error event), it is reset (SO_LINGER 0: the kernel drops its unsent bytes too instead of
/// holding them for a peer that does not read) and shut down both ways, so that Pistache, on
/// the connection's own thread, reads end-of-stream, calls onDisconnection and removes the
/// peer; removing it destroys the writes still queued for it, bytes included, and closing the
/// descriptor sends the reset. Write returns false, so the exchange ends and cancels its query.
///
/// Why the descriptor is still this connection's when a foreign thread writes (or drops): every
/// foreign write happens inside an Exchange, under its mutex, only while the exchange has not
/// seen OnClientGone; the connection's onDisconnection calls OnClientGone (taking that mutex)
/// before Pistache closes the descriptor, and Pistache's only other closing path, its
/// idle/header timeouts, is configured to fire only after every exchange has ended. (The ticker's
/// 408 follows the same rule under the read clock's mutex. ResponseWriter and
/// ResponseStream::flush are never used off the worker thread: flush runs the transport's
/// single-consumer drain on the calling thread and aborts the process.)
///
/// Callers never write concurrently to the same connection: the HTTP exchange is sequential
/// (one request, one response at a time; input during an open exchange is dropped) and an
/// exchange's writes are serialised by its mutex.
class ConnectionWriter : public std::enable_shared_from_this<ConnectionWriter> {
 public:
  ConnectionWriter(const std::shared_ptr<Tcp::Peer>& peer, std::size_t max_buffered,
                   std::shared_ptr<WriteBacklogTotals> totals)
      : peer_(peer), fd_(peer->fd()), backlog_(max_buffered, std::move(totals)) {}

  /// Writes (or queues) `bytes` after everything written before. False when the connection was
  /// dropped as too slow, by this call or an earlier one: the bytes were not sent, and nothing
  /// more will be. `request_id` names the request in the drop's log line.
  bool Write(std::string bytes, std::string_view request_id = {}) {
    if (backlog_.overflowed()) return false;
    if (bytes.empty()) return true;
    std::size_t offset = 0;
    if (backlog_.bytes() == 0) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n == static_cast<ssize_t>(bytes.size())) return true;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return true;  // the connection is broken; Pistache reports the disconnect on its thread
      }
      if (n > 0) offset = static_cast<std::size_t>(n);
    }
    const std::size_t rest = bytes.size() - offset;
    const std::size_t waiting = backlog_.bytes();
    if (!backlog_.Reserve(rest)) {
      Drop(waiting, rest, request_id);
      return false;
    }
    Queue(offset == 0 ? std::move(bytes) : bytes.substr(offset), rest);
    return true;
  }

  /// Half-closes the connection (FIN) once every byte written so far is on the socket: by the
  /// caller when nothing is queued, else by the transport thread after the last queued write.
  /// Either way the descriptor is still this connection's (see above).
  void ShutdownWrite() {
    if (end_wanted_.exchange(true)) return;
    if (backlog_.bytes() == 0) ::shutdown(fd_, SHUT_WR);
  }

  /// ShutdownWrite was called, or the connection was dropped: it carries no further request.
  bool Ended() const { return end_wanted_.load(std::memory_order_acquire); }

 private:
  void Queue(std::string bytes, std::size_t n) {
    auto peer = peer_.lock();
    if (!peer) {
      backlog_.Release(n);
      return;
    }
    bool handed = false;  // to Pistache: from then on its callbacks release the bytes
    try {
      if (backlog_.bytes() == n) {
        spdlog::debug("connection fd {} backed up: queueing writes behind Pistache", fd_);
      }
      auto self = shared_from_this();
      handed = true;
      peer->send(Pistache::RawBuffer(std::move(bytes), n))
          .then(
              [self, n](ssize_t) {
                // The transport thread, right after writing to the descriptor.
                self->backlog_.Release(n);
                if (self->backlog_.bytes() == 0 && self->end_wanted_.load()) {
                  ::shutdown(self->fd_, SHUT_WR);
                }
              },
              [self, n](std::exception_ptr) { self->backlog_.Release(n); });
    } catch (const std::exception& e) {
      spdlog::debug("queueing a response failed: {}", e.what());
      if (!handed) backlog_.Release(n);
    } catch (...) {
      if (!handed) backlog_.Release(n);
    }
  }

  /// The client stopped reading: `waiting` bytes are queued and `more` would pass the bound.
  void Drop(std::size_t waiting, std::size_t more, std::string_view request_id) {
    end_wanted_.store(true);
    spdlog::warn(
        "request {}: client on fd {} is not reading: {} bytes still queued for it, {} more would "
        "pass gateway.max_buffered_bytes_per_connection ({}); connection dropped",
        request_id.empty() ? std::string_view("-") : request_id, fd_, waiting, more,
        backlog_.limit());
    const linger reset{1, 0};
    (void)::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::shutdown(fd_, SHUT_RDWR);
  }

  std::weak_ptr<Tcp::Peer> peer_;  // weak: the peer owns the ConnState that owns this
  const int fd_;
  WriteBacklog backlog_;
  std::atomic<bool> end_wanted_{false};
};

/// An Exchange's view of its connection.
class WriterChannel final : public ClientChannel {
 public:
  WriterChannel(std::shared_ptr<ConnectionWriter> writer, std::string_view request_id)
      : writer_(std::move(writer)), request_id_(request_id) {}
  bool Send(std::string bytes) override { return writer_->Write(std::move(bytes), request_id_); }
  void EndConnection() override { writer_->ShutdownWrite(); }

 private:
  std::shared_ptr<ConnectionWriter> writer_;
  std::string request_id_;
};

/// A connection's request-read deadline (gateway.request_read_timeout_ms). While the connection
/// owes a request, or the rest of one, `deadline` is when it must all have arrived: the
/// request's first byte (for a connection's first request: the moment it connected) plus the
/// timeout; otherwise time_point::max(). Past it the ticker answers 408 and half-closes.
///
/// Why the ticker may write: the connection's Pistache thread holds `mu` while it handles input
/// (so the two never write at once), and onDisconnection sets `closed` under `mu` before
/// Pistache closes the descriptor (so the ticker never writes to a descriptor that is no longer
/// this connection's). Pistache's own sweep, which closes without telling the handler, is set to
/// fire kPistacheReadTimeoutMargin after this deadline, on a clock restarted at the same byte.
struct ReadClock {
  explicit ReadClock(std::shared_ptr<ConnectionWriter> w) : writer(std::move(w)) {}
  std::mutex mu;
  const std::shared_ptr<ConnectionWriter> writer;
  Clock::time_point deadline = Clock::time_point::max();  // guarded by mu
  bool closed = false;   // guarded by mu: the connection is gone, or its 408 was written
  bool watched = false;  // guarded by mu: in GatewayCore::read_clocks (deadline is finite)
  bool head = false;     // guarded by mu: the request being read is HEAD (its 408 has no body)
  /// `deadline` for the ticker's scan without taking `mu` (checked again under it).
  std::atomic<Clock::rep> deadline_hint{Clock::time_point::max().time_since_epoch().count()};

  void SetDeadline(Clock::time_point t) {
    deadline = t;
    deadline_hint.store(t.time_since_epoch().count(), std::memory_order_relaxed);
  }
};

/// Per-connection state, kept in the Tcp::Peer's data map; only its Pistache thread touches it
/// (the writer is shared with the connection's exchanges, the read clock with the ticker).
struct ConnState {
  ConnState(const std::shared_ptr<Tcp::Peer>& peer, std::size_t max_buffered,
            std::shared_ptr<WriteBacklogTotals> totals)
      : writer(std::make_shared<ConnectionWriter>(peer, max_buffered, std::move(totals))),
        read_clock(std::make_shared<ReadClock>(writer)) {}
  std::shared_ptr<ConnectionWriter> writer;
  std::shared_ptr<ReadClock> read_clock;
  /// The exchange answering the connection's current request (weak: the exchange holds the
  /// writer, the peer holds this).
  std::weak_ptr<Exchange> active;
  /// Ignore all further input: after an answer that said `Connection: close` (an unparsable or
  /// oversized request, whose byte stream cannot be trusted, or the client's own wish), or
  /// after requests pipelined behind a pending answer. The connection is half-closed after the
  /// answer and read until the client closes (closing first could reset the connection before
  /// the answer is read).
  bool discard = false;
  /// The head checks (CheckHead: the raw head scan, Content-Length, and before the body the
  /// limit and `Expect: 100-continue`) ran for the request being read.
  bool head_checked = false;
  /// The request being answered now is HEAD: Reply and ReplyError send the head without the
  /// body. Set for every request before it is answered (Dispatch, RejectAndDiscard).
  bool head = false;
};

bool WantsKeepAlive(const Http::Request& request) {
  auto connection = request.headers().tryGet<Http::Header::Connection>();
  if (request.version() == Http::Version::Http11) {
    return !(connection && connection->control() == Http::ConnectionControl::Close);
  }
  return connection && connection->control() == Http::ConnectionControl::KeepAlive;
}

// --- What Pistache's request parser does not tell -------------------------------------------
//
// Pistache 0.0.5 keeps the parser's input buffer private and has no call for "the bytes after
// the request just parsed" (its own Handler::onInput drops them with reset(), losing pipelined
// requests) or "the bytes not parsed yet" (its request-line and header steps wait for more input
// on a line they cannot parse). The buffer is read here through a pointer to the private
// member, formed by an explicit instantiation (where access checks do not apply,
// [temp.spec.general]/6): no layout assumption, only the member's name and type, which the
// static_assert ties to the version this was checked against (tag 0.0.5, src/common/http.cc).
static_assert(Pistache::Version::Major == 0 && Pistache::Version::Minor == 0 &&
                  Pistache::Version::Patch == 5,
              "check ParserBase's private `buffer` (and the parser steps) again for this version");

struct ParserBufferTag {
  using Type = Pistache::ArrayStreamBuf<char> Http::Private::ParserBase::*;
  friend Type MemberOf(ParserBufferTag);
};

template <typename Tag, typename Tag::Type Member>
struct PrivateMember {
  friend typename Tag::Type MemberOf(Tag) { return Member; }
};

template struct PrivateMember<ParserBufferTag, &Http::Private::ParserBase::buffer>;

/// The parser's buffered input from its cursor on: after State::Done, what follows the request;
/// after State::Again, what the current step has not consumed.
std::string_view UnparsedInput(Http::RequestParser& parser) {
  const auto& buffer = parser.*MemberOf(ParserBufferTag{});
  return {buffer.curptr(), static_cast<std::size_t>(buffer.endptr() - buffer.curptr())};
}

/// The parser's whole buffered input: once it is past the request line, the current request
/// from its first byte on (a request's bytes are fed to a reset parser; empty lines before it
/// are dropped first, see HandleInput).
std::string_view BufferedInput(Http::RequestParser& parser) {
  const auto& buffer = parser.*MemberOf(ParserBufferTag{});
  return {buffer.begptr(), static_cast<std::size_t>(buffer.endptr() - buffer.begptr())};
}

/// The parser has read the request line of a HEAD request.
bool IsHeadRequest(Http::RequestParser& parser) {
  return parser.step()->id() != Http::Private::RequestLineStep::Id &&
         parser.request.method() == Http::Method::Head;
}

/// The request still being read is HEAD: its request line says so, or, not complete yet, starts
/// with that method (case-sensitive, RFC 9110 9.1; the client knows what it sent and reads the
/// answer as bodiless), or with a part of it: a client stalled after "HEA" is sending HEAD, as
/// no other method starts with 'H'. Empty lines before a request are dropped before it is fed
/// (HandleInput).
bool ReadingHeadRequest(Http::RequestParser& parser) {
  if (parser.step()->id() != Http::Private::RequestLineStep::Id) return IsHeadRequest(parser);
  constexpr std::string_view kHead = "HEAD ";
  const std::string_view input = UnparsedInput(parser);
  return input.starts_with(kHead) || (!input.empty() && kHead.starts_with(input));
}

/// `input` without the empty lines a client may send before a request line (RFC 9112 2.2;
/// Pistache also leaves a chunked body's final CRLF unread).
std::string_view SkipEmptyLines(std::string_view input) {
  while (!input.empty() && (input.front() == '\r' || input.front() == '\n')) input.remove_prefix(1);
  return input;
}

/// The parser has nothing of a request: it waits for a request line and holds no byte of one.
bool AwaitsRequest(Http::RequestParser& parser) {
  return parser.step()->id() == Http::Private::RequestLineStep::Id && UnparsedInput(parser).empty();
}

/// Bytes of further requests after a complete one (see SkipEmptyLines).
std::string_view PipelinedInput(Http::RequestParser& parser) {
  return SkipEmptyLines(UnparsedInput(parser));
}

/// Non-null (the message) when the parser waits for more input although the part it is stuck on
/// is complete, so more input cannot help: a request line that has its line end (Pistache waits
/// for a space or CRLF forever), or headers that already ended with an empty line (a header line
/// without a colon).
const char* UnparsableHead(Http::RequestParser& parser, Http::Private::StepId step) {
  const std::string_view rest = UnparsedInput(parser);
  if (step == Http::Private::RequestLineStep::Id) {
    return rest.find('\n') != std::string_view::npos ? "malformed HTTP request line" : nullptr;
  }
  if (step == Http::Private::HeadersStep::Id) {
    const bool ended = rest.find("\n\r\n") != std::string_view::npos ||
                       rest.find("\n\n") != std::string_view::npos;
    return ended ? "malformed HTTP header" : nullptr;
  }
  return nullptr;
}

constexpr const char* kBadContentLength = "Content-Length must be a decimal number of bytes";

/// Pistache reads Content-Length with std::stoull, which takes "-5" as 2^64-5 and "abc" or
/// "12abc" as 0 or 12: only 1-18 digits (and optional trailing blanks) are accepted here.
bool ContentLengthIsValid(const Http::Request& request) {
  static const std::string kName = "Content-Length";
  const auto raw = request.headers().tryGetRaw(kName);
  if (!raw) return true;
  std::string_view value = raw->value();
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty() || value.size() > 18) return false;
  return std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// "<inbox>.<request_id>": where a request's answers come back; OnInbox reads the id from the
/// last token.
std::string InboxSubject(std::string_view inbox, std::string_view request_id) {
  std::string subject;
  subject.reserve(inbox.size() + 1 + request_id.size());
  subject.append(inbox).append(".").append(request_id);
  return subject;
}

std::string Escaped(std::string_view text, std::size_t max_bytes) {
  std::string out;
  AppendJsonString(&out, Utf8Truncate(text, max_bytes));
  return out;
}

}  // namespace

/// State shared by every Pistache worker's handler clone, the NATS thread and the ticker.
struct GatewayCore {
  GatewayOptions options;
  std::shared_ptr<const Config> config;
  GatewayConfig limits;  // config.gateway: the body's value limits
  std::size_t max_body_bytes = 0;
  std::chrono::milliseconds turn_timeout{120000};
  /// gateway.flow_timeout_ms: the query's route deadline (see QueryRequest).
  std::chrono::milliseconds flow_timeout{10000};
  /// gateway.request_read_timeout_ms (see ReadClock).
  std::chrono::milliseconds request_read_timeout{60000};
  /// gateway.max_buffered_bytes_per_connection (see ConnectionWriter) and what the connections'
  /// backlogs add up to, for /metrics.
  std::size_t max_buffered_bytes = 1 << 20;
  std::shared_ptr<WriteBacklogTotals> backlog_totals = std::make_shared<WriteBacklogTotals>();

  /// Publishes every request; its inbox (a nats.c asynchronous subscription) gets the replies
  /// of session requests and the "no responders" statuses of every request.
  std::unique_ptr<NatsConnection> nats;
  std::unique_ptr<PoolMonitor> pools;
  NatsSubscription inbox_sub;
  std::string inbox;  // "_INBOX.<nuid>"
  /// Events of queries: a second connection, read on its own event loop, where the query's
  /// `reply_to` points. Its handler runs on the thread that read the message and writes to the
  /// client at once, without nats.c's reader-to-delivery-thread hand-off (one thread wake-up
  /// per event). It cannot serve as the inbox above: its subscriptions are nats.c synchronous
  /// ones, which drop "no responders" statuses. Declared in destruction order: subscription,
  /// connection, then the loop they run on.
  std::unique_ptr<EventLoopThread> events_loop;
  std::unique_ptr<NatsConnection> events;
  NatsSubscription events_sub;
  std::string events_inbox;  // "_INBOX.<nuid>"
  std::string query_subject, session_get_subject, session_delete_subject, cancel_prefix,
      replay_subject;
  /// `events` is set (AskForReplays may run on a nats.c thread from then on).
  std::atomic<bool> events_ready{false};

  ExchangeTable table;
  GatewayMetrics metrics;
  RequestIdGenerator ids;
  std::atomic<bool> draining{false};

  /// The read clocks of the connections that owe a request, for the ticker (weak: the
  /// connection owns its clock). Lock order: a clock's `mu`, then this.
  std::mutex read_clocks_mu;
  std::unordered_map<const ReadClock*, std::weak_ptr<ReadClock>> read_clocks;

  /// Sets a connection's read deadline (time_point::max(): it owes nothing), with its clock's
  /// `mu` held; only connections with a deadline are in read_clocks, so the ticker's scan is
  /// as long as the number of requests on their way in, not of open connections.
  void SetReadDeadline(const std::shared_ptr<ReadClock>& clock, Clock::time_point t) {
    clock->SetDeadline(t);
    const bool reading = t != Clock::time_point::max();
    if (reading == clock->watched) return;
    clock->watched = reading;
    std::lock_guard lock(read_clocks_mu);
    if (reading) {
      read_clocks.emplace(clock.get(), clock);
    } else {
      read_clocks.erase(clock.get());
    }
  }

  // --- Called on Pistache worker threads -------------------------------------------------

  /// Routes one complete request. Never throws.
  void Dispatch(const Http::Request& request, const std::shared_ptr<Tcp::Peer>& peer,
                ConnState& conn);

  /// Answers with a complete response now (with `X-Request-Id: request_id`; without the body
  /// when `conn.head`) and records it. Without keep-alive the connection ends after it (see
  /// EndConnection).
  void Reply(ConnState& conn, Route route, Clock::time_point start, int status,
             std::string_view content_type, std::string_view body, bool keep_alive,
             std::string_view request_id, std::string_view extra_headers = {}) {
    std::string response =
        FormatHttpResponse(status, content_type, body, request_id, keep_alive, extra_headers);
    conn.writer->Write(conn.head ? HeadResponse(std::move(response)) : std::move(response),
                       request_id);
    metrics.RecordRequest(route, status, Clock::now() - start);
    if (!keep_alive) EndConnection(conn);
  }
  /// The same for an error: status and body from FormatErrorResponse (HttpStatus/ErrorJson).
  void ReplyError(ConnState& conn, Route route, Clock::time_point start, const Error& error,
                  bool keep_alive, std::string_view request_id,
                  std::string_view extra_headers = {}) {
    std::string response = FormatErrorResponse(error, request_id, keep_alive, extra_headers);
    conn.writer->Write(conn.head ? HeadResponse(std::move(response)) : std::move(response),
                       request_id);
    metrics.RecordRequest(route, HttpStatus(error.code), Clock::now() - start);
    if (!keep_alive) EndConnection(conn);
  }
  /// After an answer that said `Connection: close`: half-close once it is written (the client
  /// reads it, then end-of-stream) and ignore whatever the client still sends until it closes
  /// (closing at once could reset the connection before the answer is read).
  static void EndConnection(ConnState& conn) {
    conn.discard = true;
    conn.writer->ShutdownWrite();
  }

  void StartQuery(ExchangeKind kind, const Http::Request& request, ConnState& conn, bool keep_alive,
                  Clock::time_point start, std::string request_id);
  void StartSession(ExchangeKind kind, std::string_view session_id, ConnState& conn,
                    bool keep_alive, Clock::time_point start, std::string request_id);
  void ServeReady(ConnState& conn, Clock::time_point start, bool keep_alive,
                  std::string_view request_id);
  /// Answers 503 when nothing can be published now (draining, NATS down): true if it did.
  bool RefusedUnavailable(ConnState& conn, Route route, Clock::time_point start, bool keep_alive,
                          std::string_view request_id);

  /// Registers a started exchange and publishes its request; on publish failure ends it.
  void Launch(const std::shared_ptr<Exchange>& exchange, ConnState& conn,
              const std::string& subject, const std::string& payload,
              const std::string& traceparent);

  // --- Any thread ----------------------------------------------------------------------------

  /// Applies an exchange's outcome: on finish removes it and records metrics; publishes the
  /// cancel if asked.
  void Settle(const std::shared_ptr<Exchange>& exchange, const ExchangeOutcome& outcome) {
    if (outcome.cancel) PublishCancel(exchange->request_id());
    if (!outcome.finished) return;
    table.Erase(exchange->request_id(), exchange.get());
    metrics.RecordRequest(RouteOf(exchange->kind()), outcome.status,
                          Clock::now() - exchange->start());
    metrics.AddInFlight(-1);
    if (exchange->kind() == ExchangeKind::kStream) metrics.AddOpenStreams(-1);
  }

  void PublishCancel(const std::string& request_id) {
    metrics.CountCancel();
    auto status = nats->Publish(cancel_prefix + request_id, "");
    if (!status.ok()) spdlog::warn("cancel of {} not sent: {}", request_id, status.error().message);
  }

  // --- NATS delivery thread (inbox) or the events loop thread -------------------------------

  void OnInbox(const NatsMsgView& msg);
  /// Events loop thread, after OnInbox: a worker asks for confirmation of a stream's last
  /// event (QueryRequest.confirm_end) by giving it a reply subject. The empty reply goes out
  /// whether or not the exchange is still here: a repeat of an event already handled must stop
  /// the worker's resending too. Written after the client's bytes, in the loop's next flush.
  void ConfirmEnd(const NatsMsgView& msg) {
    const std::string_view reply = msg.reply();
    if (reply.empty()) return;
    metrics.CountEndConfirmed();
    if (auto status = events->Publish(reply, ""); !status.ok()) {
      spdlog::debug("confirming {}: {}", msg.subject(), status.error().message);
    }
  }

  /// A nats.c thread, once the events connection is back (its inbox subscribed again): an
  /// event published to the inbox while it was gone reached nobody. Asks the workers to send
  /// again the last event of every request still waiting (ReplayRequest; wf-lightweight keeps
  /// those of flows and `queued` for 30 s; an agent's last event is resent until confirmed
  /// anyway). Published on the events connection, after its subscription, so every answer
  /// comes to the inbox again.
  void AskForReplays() {
    if (!events_ready.load(std::memory_order_acquire)) return;
    wf::v1::ReplayRequest request;
    std::size_t asked = 0;
    auto send = [&] {
      if (request.request_ids_size() == 0) return;
      if (auto status = events->Publish(replay_subject, request.SerializeAsString());
          !status.ok()) {
        spdlog::warn("asking for {} answers again: {}", request.request_ids_size(),
                     status.error().message);
      }
      asked += static_cast<std::size_t>(request.request_ids_size());
      request.clear_request_ids();
    };
    for (const auto& exchange : table.Snapshot()) {
      request.add_request_ids(exchange->request_id());
      if (request.request_ids_size() == kMaxReplayRequestIds) send();
    }
    send();
    metrics.CountReplayAsked(asked);
    spdlog::info(
        "NATS events connection restored: asked the workers to send again the answers "
        "of {} open request(s)",
        asked);
  }

  /// Both connections are up.
  bool NatsConnected() const { return nats->Connected() && events->Connected(); }

  // --- Ticker thread ------------------------------------------------------------------------

  void Tick() {
    const auto now = Clock::now();
    for (const auto& exchange : table.Snapshot()) Settle(exchange, exchange->OnTick(now));
    ExpireReads(now);
  }

  /// Answers 408 `request_timeout` (Connection: close; without the body to a HEAD request) to
  /// every connection whose request did not arrive by its read deadline, and half-closes it; its
  /// later input is dropped.
  void ExpireReads(Clock::time_point now) {
    std::vector<std::shared_ptr<ReadClock>> due;
    {
      std::lock_guard lock(read_clocks_mu);
      for (auto it = read_clocks.begin(); it != read_clocks.end();) {
        auto clock = it->second.lock();
        if (!clock) {
          it = read_clocks.erase(it);
          continue;
        }
        if (clock->deadline_hint.load(std::memory_order_relaxed) <=
            now.time_since_epoch().count()) {
          due.push_back(std::move(clock));
        }
        ++it;
      }
    }
    for (const auto& clock : due) {
      std::lock_guard lock(clock->mu);
      if (clock->closed || now < clock->deadline) continue;
      clock->closed = true;
      SetReadDeadline(clock, Clock::time_point::max());
      const Error error{ErrorCode::kRequestTimeout,
                        "the request did not arrive within gateway.request_read_timeout_ms (" +
                            std::to_string(request_read_timeout.count()) + " ms)"};
      const std::string request_id = ids.Next();
      std::string response = FormatErrorResponse(error, request_id, /*keep_alive=*/false);
      // A HEAD request's answer has no body, its 408 included (RFC 9110 9.3.2): the client
      // would read the body as the start of the next response.
      clock->writer->Write(clock->head ? HeadResponse(std::move(response)) : std::move(response),
                           request_id);
      clock->writer->ShutdownWrite();
      metrics.RecordRequest(Route::kOther, HttpStatus(error.code), request_read_timeout);
    }
  }

  GatewayMetrics::Gauges Gauges() const {
    GatewayMetrics::Gauges g;
    g.nats_connected = NatsConnected();
    g.lightweight_workers = pools->Live("lightweight");
    g.heavy_workers = pools->Live("heavy");
    g.draining = draining.load(std::memory_order_relaxed);
    g.queued_write_bytes = backlog_totals->queued_bytes.load(std::memory_order_relaxed);
    g.slow_clients_dropped = backlog_totals->overflows.load(std::memory_order_relaxed);
    return g;
  }
};

namespace {

/// The Pistache handler. Pistache clones it per worker thread (HTTP_PROTOTYPE); the clones share
/// the Core. It replaces Http::Handler's input processing (same parser; its buffer read as
/// described above) so that it can: answer oversized or malformed requests at once with JSON
/// and end the connection, serve pipelined requests in order (or, behind an answer that comes
/// later from NATS, end the connection after that answer so the client retries the rest),
/// answer `Expect: 100-continue`, reject a declared Content-Length above the limit before the
/// body arrives, and decide keep-alive by HTTP/1.1 rules.
class GatewayHttpHandler final : public Http::Handler {
 public:
  HTTP_PROTOTYPE(GatewayHttpHandler)

  explicit GatewayHttpHandler(std::shared_ptr<GatewayCore> core) : core_(std::move(core)) {}

  /// Unused: onInput dispatches itself.
  void onRequest(const Http::Request& /*request*/, Http::ResponseWriter /*response*/) override {}

  /// Pistache worker thread, for a new connection: what Http::Handler::onConnection does
  /// (Pistache 0.0.5, src/common/http.cc: the connection's parser), then the connection's
  /// state, whose read clock runs from now until its first request is in.
  void onConnection(const std::shared_ptr<Tcp::Peer>& peer) override {
    peer->putData(ParserData, std::make_shared<Http::RequestParser>(getMaxRequestSize()));
    try {
      (void)ConnOf(peer);
    } catch (...) {
      // Made on its first input instead (onInput).
    }
  }

  /// Pistache worker thread. Nothing escapes: an exception here would terminate the process.
  void onInput(const char* buffer, size_t len, const std::shared_ptr<Tcp::Peer>& peer) override {
    ConnState* conn = nullptr;
    try {
      conn = &ConnOf(peer);
    } catch (...) {
      return;  // out of memory for a connection's state: its input cannot be handled
    }
    std::shared_ptr<Http::RequestParser> parser;
    try {
      parser = Http::Handler::getParser(peer);
    } catch (...) {
      return;  // no parser (onConnection always makes one): nothing can be read
    }
    ReadClock& clock = *conn->read_clock;
    std::lock_guard lock(clock.mu);
    if (clock.closed) return;  // answered 408: nothing after it is read
    if (clock.deadline == Clock::time_point::max() && AwaitsRequest(*parser)) {
      // The first byte of a request on a kept-alive connection: restart Pistache's clock (its
      // parser's; nothing is buffered, so reset() loses nothing), which until now ran from the
      // end of the previous request (see UpdateReadClock).
      parser->reset();
    }
    HandleInput(buffer, len, peer, *conn, parser);
    try {
      UpdateReadClock(peer, *conn, *parser);
    } catch (...) {
      // Out of memory for the ticker's list: leave the clock as it was.
    }
  }

  /// Pistache worker thread, before the connection's descriptor is closed: stops its read
  /// clock, ends the connection's exchange (no byte is queued for this descriptor afterwards)
  /// and cancels it.
  void onDisconnection(const std::shared_ptr<Tcp::Peer>& peer) override {
    try {
      auto data = peer->tryGetData(kConnKey);
      if (!data) return;
      auto* conn = static_cast<ConnState*>(data.get());
      {
        std::lock_guard lock(conn->read_clock->mu);
        conn->read_clock->closed = true;
        core_->SetReadDeadline(conn->read_clock, Clock::time_point::max());
      }
      if (auto exchange = conn->active.lock()) core_->Settle(exchange, exchange->OnClientGone());
    } catch (...) {
      // Never let an exception reach Pistache's event loop.
    }
  }

 private:
  /// A connection's first byte of a request starts its read clock; a complete request (or an
  /// answer that ends the connection) stops it. Pistache's own clock (its parser's) is restarted
  /// at the same byte and, with the peer not idle, runs on its header and body timeouts, which
  /// are set to end after this one (see ReadClock).
  void UpdateReadClock(const std::shared_ptr<Tcp::Peer>& peer, ConnState& conn,
                       Http::RequestParser& parser) {
    if (conn.discard || conn.writer->Ended() || AwaitsRequest(parser)) {
      core_->SetReadDeadline(conn.read_clock, Clock::time_point::max());
      return;
    }
    if (conn.read_clock->deadline == Clock::time_point::max()) {
      core_->SetReadDeadline(conn.read_clock, Clock::now() + core_->request_read_timeout);
      peer->setIdle(false);
    }
    conn.read_clock->head = ReadingHeadRequest(parser);
  }

  void HandleInput(const char* buffer, size_t len, const std::shared_ptr<Tcp::Peer>& peer,
                   ConnState& conn_state, const std::shared_ptr<Http::RequestParser>& parser) {
    ConnState* conn = &conn_state;
    try {
      if (conn->discard) return;
      if (conn->writer->Ended()) {
        // The last answer said `Connection: close`: nothing after it is read.
        conn->discard = true;
        return;
      }
      if (auto active = conn->active.lock(); active && active->DisableKeepAlive()) {
        // Bytes while a request is still being answered: a pipelined request (answers could not
        // be kept in order) or garbage. Drop them and everything after; the pending answer says
        // `Connection: close` (or a stream half-closes after its end) and the connection ends
        // after it, so an HTTP/1.1 client retries what was not answered. (An exchange that ended
        // meanwhile refuses, and the bytes are the next request.)
        conn->discard = true;
        return;
      }
      if (!parser->feed(buffer, len)) {
        RejectAndDiscard(
            peer, *conn, parser.get(),
            Error{ErrorCode::kTooLarge,
                  "request larger than " + std::to_string(getMaxRequestSize()) + " bytes"});
        return;
      }
      std::string next;  // bytes of pipelined requests after the one just parsed
      while (true) {
        if (parser->step()->id() == Http::Private::RequestLineStep::Id) {
          // Empty lines before a request line are ignored (RFC 9112 2.2; some clients send a
          // CRLF after a POST body); Pistache would take them as part of the method.
          const std::string_view input = UnparsedInput(*parser);
          const std::string_view request = SkipEmptyLines(input);
          if (request.size() != input.size()) {
            next.assign(request.data(), request.size());
            parser->reset();
            if (next.empty()) return;
            (void)parser->feed(next.data(), next.size());  // fits: it was in the buffer already
          }
        }
        const auto state = parser->parse();
        if (state == Http::Private::State::Again) {
          const auto step = parser->step()->id();
          if (step == Http::Private::BodyStep::Id) {
            if (!conn->head_checked) {
              conn->head_checked = true;
              (void)CheckHead(peer, *conn, *parser, /*body_pending=*/true);
            }
          } else if (const char* what = UnparsableHead(*parser, step)) {
            // Pistache waits for more input on a request line or header it cannot parse (no
            // space in "BLAH", no colon, no CRLF): once the head is complete, more input cannot
            // help, so answer now instead of at the header timeout.
            RejectAndDiscard(peer, *conn, parser.get(), Error{ErrorCode::kBadRequest, what});
          }
          return;
        }
        // Done: one complete request; its head is checked now if it all came at once.
        if (!std::exchange(conn->head_checked, false) &&
            !CheckHead(peer, *conn, *parser, /*body_pending=*/false)) {
          return;
        }
        const std::string_view rest = PipelinedInput(*parser);
        core_->Dispatch(parser->request, peer, *conn);
        if (rest.empty() || conn->discard) {
          parser->reset();
          return;
        }
        if (auto active = conn->active.lock(); active && active->DisableKeepAlive()) {
          // The answer comes later, from another thread: the next request's answer could not
          // follow it in order. This answer says `Connection: close` and ends the connection;
          // the client retries the rest.
          conn->discard = true;
          parser->reset();
          return;
        }
        // Answered already (synchronously, or the exchange ended meanwhile): serve the next
        // request in order.
        next.assign(rest.data(), rest.size());
        parser->reset();
        (void)parser->feed(next.data(), next.size());  // fits: it was in the buffer already
      }
    } catch (const Http::HttpError& e) {
      Recover(peer, conn, parser, e.code() == 413 ? ErrorCode::kTooLarge : ErrorCode::kBadRequest);
    } catch (...) {
      Recover(peer, conn, parser, ErrorCode::kBadRequest);
    }
  }

  /// The connection's state, made on first use (onConnection), with its read clock running:
  /// the first request must be in within gateway.request_read_timeout_ms.
  ConnState& ConnOf(const std::shared_ptr<Tcp::Peer>& peer) {
    if (auto data = peer->tryGetData(kConnKey)) return *static_cast<ConnState*>(data.get());
    auto conn = std::make_shared<ConnState>(peer, core_->max_buffered_bytes, core_->backlog_totals);
    {
      std::lock_guard lock(conn->read_clock->mu);
      core_->SetReadDeadline(conn->read_clock, Clock::now() + core_->request_read_timeout);
    }
    peer->putData(kConnKey, conn);
    // Each SSE event is its own small write: never let Nagle hold one back.
    int one = 1;
    (void)::setsockopt(peer->fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return *conn;
  }

  /// Once per request, as soon as its head is complete. Refuses (400, the connection ends) a
  /// head that ScanRequestHead refuses (request smuggling: repeated Content-Length, obs-fold,
  /// whitespace before a colon, bare CR/LF) or whose Content-Length is not a plain number. With
  /// the body still to come (`body_pending`) it also refuses a declared length above
  /// gateway.max_body_bytes (413 at once, so the body is never uploaded) and otherwise answers
  /// `Expect: 100-continue`. Returns false when it refused (the parser is then reset).
  bool CheckHead(const std::shared_ptr<Tcp::Peer>& peer, ConnState& conn,
                 Http::RequestParser& parser, bool body_pending) {
    const RequestHeadScan scan = ScanRequestHead(BufferedInput(parser));
    if (scan.error != nullptr) {
      RejectAndDiscard(peer, conn, &parser, Error{ErrorCode::kBadRequest, scan.error});
      return false;
    }
    if (!ContentLengthIsValid(parser.request)) {
      RejectAndDiscard(peer, conn, &parser, Error{ErrorCode::kBadRequest, kBadContentLength});
      return false;
    }
    if (!body_pending) return true;
    if (auto length = parser.request.headers().tryGet<Http::Header::ContentLength>()) {
      if (length->value() > core_->max_body_bytes) {
        RejectAndDiscard(
            peer, conn, &parser,
            Error{ErrorCode::kTooLarge,
                  "body larger than " + std::to_string(core_->max_body_bytes) + " bytes"});
        return false;
      }
    }
    // From the raw scan: Pistache's own Expect header compares its value with strcmp on bytes
    // that are not NUL-terminated (the rest of the request follows them), so it never says
    // 100-continue. An HTTP/1.0 request's expectation is ignored (RFC 9110 10.1.1).
    if (scan.expect_continue && parser.request.version() == Http::Version::Http11) {
      conn.writer->Write(std::string(kContinueResponse));
    }
    return true;
  }

  /// Answers once with `Connection: close` and ends the connection (the byte stream cannot be
  /// trusted any more); later input is dropped until the client closes. Resets `parser` (when
  /// given) after reading whether the request is HEAD (then the answer has no body).
  void RejectAndDiscard(const std::shared_ptr<Tcp::Peer>& peer, ConnState& conn,
                        Http::RequestParser* parser, const Error& error) {
    conn.head = parser != nullptr && IsHeadRequest(*parser);
    if (parser != nullptr) parser->reset();
    peer->setIdle(true);
    core_->ReplyError(conn, Route::kOther, Clock::now(), error, /*keep_alive=*/false,
                      core_->ids.Next());
  }

  /// After Pistache's parser threw: a message of our own (its exception texts are internals,
  /// e.g. "basic_string::_M_create" for a Content-Length of -5), chosen by where it failed.
  void Recover(const std::shared_ptr<Tcp::Peer>& peer, ConnState* conn,
               const std::shared_ptr<Http::RequestParser>& parser, ErrorCode code) {
    try {
      std::string message = "malformed HTTP request";
      if (code == ErrorCode::kTooLarge) {
        message = "request larger than " + std::to_string(getMaxRequestSize()) + " bytes";
      } else if (parser) {
        const auto step = parser->step()->id();
        if (step == Http::Private::RequestLineStep::Id) {
          message = "malformed HTTP request line";
        } else if (step == Http::Private::HeadersStep::Id) {
          message = "malformed HTTP header";
        } else if (!ContentLengthIsValid(parser->request)) {
          message = kBadContentLength;
        } else {
          message = "malformed HTTP body (Content-Length or chunked encoding)";
        }
      }
      if (conn != nullptr && !conn->discard) {
        RejectAndDiscard(peer, *conn, parser.get(), Error{code, std::move(message)});
      } else if (parser) {
        parser->reset();
      }
    } catch (...) {
    }
  }

  std::shared_ptr<GatewayCore> core_;
};

}  // namespace

void GatewayCore::Dispatch(const Http::Request& request, const std::shared_ptr<Tcp::Peer>& peer,
                           ConnState& conn) {
  const auto start = Clock::now();
  bool keep_alive = true;
  // Every answer carries one (README "HTTP API"); the query endpoints send it downstream too.
  std::string request_id = ids.Next();
  try {
    keep_alive = WantsKeepAlive(request);
    // Idle in Pistache's sense: only its keep-alive timeout (set above the longest exchange)
    // applies from now on, never the header timeout that would write a 408 into a stream.
    peer->setIdle(true);
    if (auto active = conn.active.lock(); active && active->DisableKeepAlive()) {
      // Another request while one is still being answered (see onInput).
      conn.discard = true;
      return;
    }

    const std::string& path = request.resource();
    const auto method = request.method();
    // HEAD is GET without the body, on every GET route (load balancers' health checks use it);
    // its error answers have no body either (RFC 9110 9.3.2).
    conn.head = method == Http::Method::Head;
    const bool get = method == Http::Method::Get || conn.head;
    auto method_not_allowed = [&](std::string_view allow) {
      std::string header = "Allow: ";
      header.append(allow).append("\r\n");
      ReplyError(conn, Route::kOther, start,
                 Error{ErrorCode::kMethodNotAllowed, "use " + std::string(allow) + " on " + path},
                 keep_alive, request_id, header);
    };

    if (path == "/api/v1/query" || path == "/api/v1/query/stream") {
      if (method != Http::Method::Post) return method_not_allowed("POST");
      StartQuery(path == "/api/v1/query" ? ExchangeKind::kQuery : ExchangeKind::kStream, request,
                 conn, keep_alive, start, std::move(request_id));
      return;
    }
    if (path.size() > kSessionPath.size() &&
        path.compare(0, kSessionPath.size(), kSessionPath) == 0) {
      if (!get && method != Http::Method::Delete) return method_not_allowed("GET, HEAD, DELETE");
      const std::string_view raw_id = std::string_view(path).substr(kSessionPath.size());
      const Route route = get ? Route::kSessionGet : Route::kSessionDelete;
      // Clients percent-encode what a path segment may not hold as it is ("user%3A42").
      auto id = DecodePathSegment(raw_id);
      if (!id.ok()) {
        return ReplyError(conn, route, start,
                          Error{ErrorCode::kBadRequest,
                                "session id " + Escaped(raw_id, 160) + ": " + id.error().message},
                          keep_alive, request_id);
      }
      if (!IsValidSessionId(*id)) {
        return ReplyError(
            conn, route, start,
            Error{ErrorCode::kBadRequest, "session id " + Escaped(*id, 160) +
                                              " must be 1-128 characters of A-Z a-z 0-9 . _ : -"},
            keep_alive, request_id);
      }
      StartSession(get ? ExchangeKind::kSessionGet : ExchangeKind::kSessionDelete, *id, conn,
                   keep_alive, start, std::move(request_id));
      return;
    }
    if (path == "/health") {
      if (!get) return method_not_allowed("GET, HEAD");
      return Reply(conn, Route::kHealth, start, 200, kJsonType, R"({"status":"ok"})", keep_alive,
                   request_id);
    }
    if (path == "/ready") {
      if (!get) return method_not_allowed("GET, HEAD");
      return ServeReady(conn, start, keep_alive, request_id);
    }
    if (path == "/metrics") {
      if (!get) return method_not_allowed("GET, HEAD");
      return Reply(conn, Route::kMetrics, start, 200, kPrometheusType, metrics.Render(Gauges()),
                   keep_alive, request_id);
    }
    ReplyError(conn, Route::kOther, start,
               Error{ErrorCode::kNotFound, "no such path: " + Escaped(path, 200)}, keep_alive,
               request_id);
  } catch (const std::exception& e) {
    spdlog::error("request handling failed: {}", e.what());
    ReplyError(conn, Route::kOther, start, Error{ErrorCode::kInternal, "internal error"},
               keep_alive, request_id);
  }
}

void GatewayCore::ServeReady(ConnState& conn, Clock::time_point start, bool keep_alive,
                             std::string_view request_id) {
  const auto g = Gauges();
  const bool ready = g.nats_connected && g.lightweight_workers >= 1 && !g.draining;
  std::string body = "{\"ready\":";
  body.append(ready ? "true" : "false");
  body.append(",\"nats\":").append(g.nats_connected ? "\"connected\"" : "\"disconnected\"");
  body.append(",\"workers\":{\"lightweight\":").append(std::to_string(g.lightweight_workers));
  body.append(",\"heavy\":").append(std::to_string(g.heavy_workers)).append("}");
  if (g.draining) body.append(",\"draining\":true");
  body.push_back('}');
  Reply(conn, Route::kReady, start, ready ? 200 : 503, kJsonType, body, keep_alive, request_id);
}

void GatewayCore::StartQuery(ExchangeKind kind, const Http::Request& request, ConnState& conn,
                             bool keep_alive, Clock::time_point start, std::string request_id) {
  const Route route = RouteOf(kind);
  const std::string& body = request.body();
  if (body.size() > max_body_bytes) {
    return ReplyError(conn, route, start,
                      Error{ErrorCode::kTooLarge,
                            "body larger than " + std::to_string(max_body_bytes) + " bytes"},
                      keep_alive, request_id);
  }
  // A body declared as something else is refused: a browser may send text/plain (or a form)
  // to another origin without asking it first (no CORS preflight), but never application/json.
  // No Content-Type at all is taken as JSON. (curl -d sends application/x-www-form-urlencoded:
  // add -H 'Content-Type: application/json', as the README's examples do.)
  if (auto type = request.headers().tryGetRaw(kContentTypeName);
      type && !IsJsonMediaType(type->value())) {
    return ReplyError(
        conn, route, start,
        Error{ErrorCode::kUnsupportedMediaType,
              "Content-Type must be application/json, not " + Escaped(type->value(), 100)},
        keep_alive, request_id);
  }
  v1::QueryRequest query;
  if (auto status = ParseQueryBody(body, limits, &query); !status.ok()) {
    return ReplyError(conn, route, start, status.error(), keep_alive, request_id);
  }
  if (RefusedUnavailable(conn, route, start, keep_alive, request_id)) return;
  if (pools->Live("lightweight") == 0) {
    return ReplyError(conn, route, start,
                      Error{ErrorCode::kNoWorker, "no lightweight worker is running"}, keep_alive,
                      request_id);
  }

  std::string traceparent;
  if (auto raw = request.headers().tryGetRaw(kTraceparentName)) {
    traceparent = TraceparentFor(raw->value());
  } else {
    traceparent = NewTraceparent();
  }
  query.set_request_id(request_id);
  const int64_t now_ms = UnixMillisNow();
  query.set_deadline_unix_ms(now_ms + turn_timeout.count());
  query.set_route_deadline_unix_ms(now_ms + flow_timeout.count());
  query.set_stream(kind == ExchangeKind::kStream);
  query.set_traceparent(traceparent);
  // Events come to the events connection; the NATS reply subject (the inbox, see Launch) then
  // only ever gets a "no responders" status.
  query.set_reply_to(InboxSubject(events_inbox, request_id));
  // The last event is sent until we confirm it (ConfirmEnd), so an answer a worker sends while
  // this connection resubscribes after a NATS reconnect is not lost.
  query.set_confirm_end(true);
  std::string payload;
  query.SerializeToString(&payload);
  // A body under max_body_bytes can still encode larger than a NATS message may be (a Struct
  // of many small numbers grows ~4x): refuse it as too large, not as NATS being unavailable.
  const std::size_t max_payload = nats->MaxPayload();
  const std::size_t limit =
      max_payload > kQueryPayloadMargin ? max_payload - kQueryPayloadMargin : 0;
  if (payload.size() > limit) {
    return ReplyError(conn, route, start,
                      Error{ErrorCode::kTooLarge, "the query is " + std::to_string(payload.size()) +
                                                      " bytes once encoded; the limit is " +
                                                      std::to_string(limit) + " bytes"},
                      keep_alive, request_id);
  }

  Exchange::Params params;
  params.kind = kind;
  params.request_id = std::move(request_id);
  params.session_id = query.session_id();
  params.keep_alive = keep_alive;
  params.start = start;
  params.deadline = start + turn_timeout;
  // The worker enforces the route deadline itself and says why it gave up; the gateway's own
  // cut comes a little later, for a worker that can no longer say anything.
  params.first_event_deadline = start + flow_timeout + kRouteDeadlineGrace;
  params.flow_timeout = flow_timeout;
  params.heartbeat = options.heartbeat;
  auto channel = std::make_unique<WriterChannel>(conn.writer, params.request_id);
  auto exchange = std::make_shared<Exchange>(std::move(params), std::move(channel));
  if (kind == ExchangeKind::kStream) metrics.AddOpenStreams(1);
  Launch(exchange, conn, query_subject, payload, traceparent);
  // After the publish: the head's write (and the client's wake-up) is not on the query's way.
  Settle(exchange, exchange->StartStream());
}

bool GatewayCore::RefusedUnavailable(ConnState& conn, Route route, Clock::time_point start,
                                     bool keep_alive, std::string_view request_id) {
  if (draining.load(std::memory_order_relaxed)) {
    ReplyError(conn, route, start, Error{ErrorCode::kUnavailable, "the gateway is shutting down"},
               false, request_id);
    return true;
  }
  if (!NatsConnected()) {
    ReplyError(conn, route, start, Error{ErrorCode::kUnavailable, "not connected to NATS"},
               keep_alive, request_id);
    return true;
  }
  return false;
}

void GatewayCore::StartSession(ExchangeKind kind, std::string_view session_id, ConnState& conn,
                               bool keep_alive, Clock::time_point start, std::string request_id) {
  const Route route = RouteOf(kind);
  if (RefusedUnavailable(conn, route, start, keep_alive, request_id)) return;
  v1::SessionRequest session;
  session.set_session_id(std::string(session_id));
  session.set_request_id(request_id);
  std::string payload;
  session.SerializeToString(&payload);

  Exchange::Params params;
  params.kind = kind;
  params.request_id = std::move(request_id);
  params.session_id = std::string(session_id);
  params.keep_alive = keep_alive;
  params.head_only = conn.head;
  params.start = start;
  params.deadline = start + options.session_timeout;
  auto channel = std::make_unique<WriterChannel>(conn.writer, params.request_id);
  auto exchange = std::make_shared<Exchange>(std::move(params), std::move(channel));
  Launch(exchange, conn,
         kind == ExchangeKind::kSessionGet ? session_get_subject : session_delete_subject, payload,
         NewTraceparent());
}

void GatewayCore::Launch(const std::shared_ptr<Exchange>& exchange, ConnState& conn,
                         const std::string& subject, const std::string& payload,
                         const std::string& traceparent) {
  const std::string& request_id = exchange->request_id();
  metrics.AddInFlight(1);
  if (!table.Insert(request_id, exchange)) {
    // Cannot happen with RequestIdGenerator; fail loudly rather than cross answers.
    Settle(exchange, exchange->Fail(Error{ErrorCode::kInternal, "duplicate request id"}));
    return;
  }
  conn.active = exchange;
  auto status = nats->Publish(subject, payload, InboxSubject(inbox, request_id),
                              {{kRequestIdHeader, request_id}, {kTraceparentHeader, traceparent}});
  if (!status.ok()) {
    // nats.c's text (with its source file and line) goes to the log, not to the client.
    spdlog::warn("request {}: {}", request_id, status.error().message);
    Settle(exchange,
           exchange->Fail(Error{ErrorCode::kUnavailable, "could not publish the request to NATS"}));
  }
}

void GatewayCore::OnInbox(const NatsMsgView& msg) {
  const std::string_view subject = msg.subject();
  const std::string_view request_id = subject.substr(subject.rfind('.') + 1);
  auto exchange = table.Find(request_id);
  metrics.CountInboxMessage(exchange != nullptr);
  if (!exchange) return;  // late event of a finished request
  ExchangeOutcome outcome;
  if (natsMsg_IsNoResponders(msg.raw())) {
    outcome = exchange->OnNoResponders();
  } else if (exchange->kind() == ExchangeKind::kSessionGet ||
             exchange->kind() == ExchangeKind::kSessionDelete) {
    thread_local v1::SessionReply reply;
    const auto data = msg.data();
    if (reply.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      outcome = exchange->OnSessionReply(reply);
    } else {
      outcome = exchange->Fail(Error{ErrorCode::kInternal, "undecodable session reply"});
    }
  } else {
    thread_local v1::QueryEvent event;
    const auto data = msg.data();
    if (event.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      outcome = exchange->OnEvent(event);
    } else {
      outcome = exchange->Fail(Error{ErrorCode::kInternal, "undecodable event from a worker"});
    }
  }
  Settle(exchange, outcome);
}

/// Owns everything; destruction order matters (see Stop).
struct GatewayServer::Impl {
  std::shared_ptr<GatewayCore> core;
  std::unique_ptr<Http::Endpoint> endpoint;
  int port = 0;

  std::thread ticker;
  std::mutex mu;
  std::condition_variable cv;
  bool stop_ticker = false;
  bool stopped = false;

  void RunTicker(std::chrono::milliseconds period) {
    std::unique_lock lock(mu);
    while (!stop_ticker) {
      cv.wait_for(lock, period, [this] { return stop_ticker; });
      if (stop_ticker) break;
      lock.unlock();
      try {
        core->Tick();
      } catch (const std::exception& e) {
        spdlog::error("ticker: {}", e.what());
      }
      lock.lock();
    }
  }
};

GatewayServer::GatewayServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GatewayServer::~GatewayServer() { Stop(); }

int GatewayServer::port() const { return impl_->port; }

std::size_t GatewayServer::InFlight() const { return impl_->core->table.size(); }

Result<std::unique_ptr<GatewayServer>> GatewayServer::Start(GatewayOptions options) {
  if (!options.config) return Error{ErrorCode::kBadRequest, "no configuration given"};
  auto listen = ParseHostPort(options.listen);
  if (!listen.ok()) return Error{ErrorCode::kBadRequest, "--listen: " + listen.error().message};
  if (options.threads < 1) options.threads = 1;

  auto core = std::make_shared<GatewayCore>();
  core->options = options;
  core->config = options.config;
  const Config& config = *options.config;
  core->limits = config.gateway;
  core->max_body_bytes = config.gateway.max_body_bytes;
  core->turn_timeout = config.agent.turn_timeout;
  core->flow_timeout = config.gateway.flow_timeout;
  core->request_read_timeout = config.gateway.request_read_timeout;
  core->max_buffered_bytes = config.gateway.max_buffered_bytes_per_connection;
  const std::string& prefix = config.subject_prefix;
  core->query_subject = prefix + ".query";
  core->session_get_subject = prefix + ".session.get";
  core->session_delete_subject = prefix + ".session.delete";
  core->cancel_prefix = prefix + ".cancel.";
  core->replay_subject = prefix + ".query.replay";

  NatsOptions nats_options;
  nats_options.url = options.nats_url;
  nats_options.name = "wf-gateway";
  auto nats = NatsConnection::Connect(std::move(nats_options));
  if (!nats.ok()) return nats.error();
  core->nats = std::move(nats).value();

  core->inbox = NatsConnection::NewInbox();
  GatewayCore* raw_core = core.get();
  auto sub = core->nats->Subscribe(core->inbox + ".*",
                                   [raw_core](const NatsMsgView& msg) { raw_core->OnInbox(msg); });
  if (!sub.ok()) return sub.error();
  core->inbox_sub = std::move(sub).value();

  core->events_loop = std::make_unique<EventLoopThread>("wf-gw-events");
  NatsOptions events_options;
  events_options.url = options.nats_url;
  events_options.name = "wf-gateway-events";
  events_options.loop = &core->events_loop->loop();
  // Set before the connection exists; called only once it is restored after a loss.
  events_options.on_reconnected = [raw_core] { raw_core->AskForReplays(); };
  auto events = NatsConnection::Connect(std::move(events_options));
  if (!events.ok()) return events.error();
  core->events = std::move(events).value();
  core->events_ready.store(true, std::memory_order_release);
  core->events_inbox = NatsConnection::NewInbox();
  auto events_sub =
      core->events->Subscribe(core->events_inbox + ".*", [raw_core](const NatsMsgView& msg) {
        raw_core->OnInbox(msg);
        raw_core->ConfirmEnd(msg);
      });
  if (!events_sub.ok()) return events_sub.error();
  core->events_sub = std::move(events_sub).value();
  // The subscription must be known to the server before the other connection publishes a query
  // whose events come here.
  if (auto status = core->events->Flush(std::chrono::milliseconds(2000)); !status.ok()) {
    return status.error();
  }

  core->pools = std::make_unique<PoolMonitor>(*core->nats, prefix,
                                              std::vector<std::string>{"lightweight", "heavy"},
                                              options.pool_ping_interval);
  if (auto status = core->pools->Start(); !status.ok()) return status.error();
  (void)core->nats->Flush(std::chrono::milliseconds(2000));

  auto impl = std::make_unique<Impl>();
  impl->core = core;

  // The longest an exchange can wait; Pistache's idle timeout must stay above it, since it
  // closes idle connections without notifying the handler (see README.md).
  const auto longest =
      std::max<std::chrono::milliseconds>(core->turn_timeout, options.session_timeout) +
      std::chrono::seconds(60);
  const auto keep_alive = std::max<std::chrono::milliseconds>(kMinKeepAlive, longest);
  try {
    impl->endpoint = std::make_unique<Http::Endpoint>(Pistache::Address(options.listen));
    auto flags = Pistache::Flags<Tcp::Options>(Tcp::Options::ReuseAddr) | Tcp::Options::NoDelay;
    auto opts = Http::Endpoint::options()
                    .threads(options.threads)
                    .flags(flags)
                    .backlog(1024)
                    .maxRequestSize(core->max_body_bytes + kHeaderAllowance)
                    .headerTimeout(core->request_read_timeout + kPistacheReadTimeoutMargin)
                    .bodyTimeout(core->request_read_timeout + kPistacheReadTimeoutMargin)
                    .keepaliveTimeout(keep_alive);
    impl->endpoint->init(opts);
    impl->endpoint->setHandler(std::make_shared<GatewayHttpHandler>(core));
    impl->endpoint->serveThreaded();
    impl->port = static_cast<int>(static_cast<uint16_t>(impl->endpoint->getPort()));
  } catch (const std::exception& e) {
    if (impl->endpoint) {
      try {
        impl->endpoint->shutdown();
      } catch (...) {
      }
      impl->endpoint.reset();
    }
    core->pools->Stop();
    core->inbox_sub.Unsubscribe();
    core->events_sub.Unsubscribe();
    return Error{ErrorCode::kUnavailable, "cannot listen on " + options.listen + ": " + e.what()};
  }

  const auto period = std::clamp<std::chrono::milliseconds>(
      options.heartbeat / 4, std::chrono::milliseconds(5), std::chrono::milliseconds(100));
  Impl* raw_impl = impl.get();
  impl->ticker = std::thread([raw_impl, period] { raw_impl->RunTicker(period); });
  spdlog::info("wf-gateway listening on {} (port {}), {} threads, inbox {}.*, subjects {}.*",
               options.listen, impl->port, options.threads, core->inbox, prefix);
  return std::unique_ptr<GatewayServer>(new GatewayServer(std::move(impl)));
}

void GatewayServer::Drain(std::chrono::milliseconds grace) {
  GatewayCore& core = *impl_->core;
  core.draining.store(true);
  const auto until = Clock::now() + grace;
  spdlog::info("draining: {} request(s) in flight, waiting up to {} ms", core.table.size(),
               grace.count());
  while (core.table.size() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (core.table.size() > 0) {
    spdlog::warn("drain period over: ending {} request(s)", core.table.size());
  }
  Stop();
}

void GatewayServer::Stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
    impl_->stop_ticker = true;
  }
  impl_->cv.notify_all();
  if (impl_->ticker.joinable()) impl_->ticker.join();
  GatewayCore& core = *impl_->core;
  core.draining.store(true);

  // End what is left, while the HTTP threads still run to write it out.
  const Error shutting_down{ErrorCode::kUnavailable, "the gateway is shutting down"};
  for (const auto& exchange : core.table.Snapshot()) {
    core.Settle(exchange, exchange->Fail(shutting_down));
  }
  // No more events: after this no thread but Pistache's own touches a connection.
  core.inbox_sub.Unsubscribe();
  core.events_sub.Unsubscribe();
  core.pools->Stop();
  (void)core.nats->Flush(std::chrono::milliseconds(1000));
  // Give the transports a moment to write the last answers before their loops stop.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (impl_->endpoint) {
    try {
      impl_->endpoint->shutdown();
    } catch (...) {
    }
    // Exchanges created by a request that raced with shutdown must not outlive the transports.
    for (const auto& exchange : core.table.Snapshot()) {
      core.Settle(exchange, exchange->OnClientGone());
    }
    impl_->endpoint.reset();
  }
  spdlog::info("wf-gateway stopped");
}

}  // namespace wf
