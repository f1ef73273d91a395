#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error/error.h"

namespace wf {

class EventLoop;

/// One outbound HTTP/1.1 request. Plain data: build it, then hand it to HttpClient::Send.
struct HttpRequest {
  /// An HTTP token ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", ...); anything else is
  /// kBadRequest.
  std::string method = "GET";
  /// Absolute http:// or https:// URL, already percent-encoded. Other schemes are kBadRequest.
  /// The path is sent as is: dot segments ("/../") are not resolved by the client.
  std::string url;
  /// Extra request headers, sent in order. A name that is not an HTTP token or a value with CR, LF
  /// or NUL is kBadRequest. Unless set here, the client adds `Connection: keep-alive` (servers
  /// such as Pistache close the connection without it) and an empty `Expect:` (no 100-continue
  /// round trip). Bodies sent without a Content-Type get libcurl's default for POST,
  /// `application/x-www-form-urlencoded`: set `Content-Type: application/json` for JSON.
  std::vector<std::pair<std::string, std::string>> headers;
  /// Request body, with a Content-Length. POST, PUT and PATCH always send one (maybe empty); other
  /// methods only when it is non-empty; HEAD never.
  std::string body;
  /// Whole transfer, queueing for a connection included. The connect phase alone is limited to
  /// min(timeout, 3 s).
  std::chrono::milliseconds timeout{5000};
  /// Largest response body accepted by Send (larger: kUpstreamError "response exceeds N bytes"),
  /// and the largest error body kept by SendStreaming.
  std::size_t max_response_bytes = 1 << 20;
  /// Largest 2xx body SendStreaming passes to its data callback before failing the transfer with
  /// kUpstreamError "response exceeds N bytes". Unused by Send.
  std::size_t max_streamed_bytes = std::size_t{64} << 20;
};

/// What the server answered. Any status is a response, not an error.
struct HttpResponse {
  int status = 0;
  /// The body (Send), or the error body of a non-2xx answer (SendStreaming; empty for 2xx).
  std::string body;
  /// The Content-Type header, or empty.
  std::string content_type;
  /// The Retry-After header exactly as sent (delta-seconds or an HTTP date), or empty.
  std::string retry_after;
};

/// Completion callback: runs on the client's loop thread, exactly once per request, never inside
/// Send; must not block (no HttpCallBlocking, no waiting on other requests of the same client),
/// since it holds up every other transfer and watcher of that loop.
using HttpCallback = std::function<void(Result<HttpResponse>)>;
/// Streaming data callback (on the loop thread): return false to abort the transfer (then the
/// completion callback gets kCancelled).
using HttpDataCallback = std::function<bool(std::string_view chunk)>;
/// Identifies a request of one HttpClient; never 0.
using HttpRequestId = std::uint64_t;

/// Limits and identity of an HttpClient (HttpClient::Options).
struct HttpClientOptions {
  /// Open connections per host; further requests wait in libcurl's queue for one.
  long max_connections_per_host = 64;
  /// Open connections in total; also the number of idle connections kept for reuse.
  long max_total_connections = 256;
  std::string user_agent = "wf/0.1";
  /// The event loop that drives the client, or null for a loop thread of the client's own
  /// ("wf-http-io"). The caller runs it (e.g. on the thread that also serves a NATS connection,
  /// so a request and its answer never change threads) and keeps it, running, until the client
  /// is destroyed.
  EventLoop* loop = nullptr;
};

/// Asynchronous HTTP/1.1 client with connection reuse (a curl share/connection cache: never a new
/// TCP connection per request when one to the host is idle), per-request timeout and size limit.
/// Environment proxies (http_proxy, https_proxy, all_proxy, no_proxy) are honoured as libcurl
/// does; the environment is read when the client is made.
///
/// Threading: all I/O runs on one EventLoop thread (the "loop thread"): either Options::loop, run
/// by the caller, or a thread the client starts. libcurl's multi-socket interface puts each
/// connection's socket and one timer in that loop, so work per event is O(that connection), not
/// O(all connections). Send, SendStreaming and Cancel may be called from any thread, the loop
/// thread included (a completion callback may Send the next request); they queue a command and
/// post one loop task per batch of commands (a system call only when the loop sleeps; none on the
/// loop thread). Callbacks run on the loop thread. Easy handles are pooled, connections kept in
/// the multi handle's connection cache.
class HttpClient {
 public:
  using Options = HttpClientOptions;

  /// Does not touch the loop (any thread may construct). Without Options::loop it starts the
  /// client's own loop thread. Throws std::runtime_error only when libcurl (or the own loop)
  /// cannot be initialised.
  explicit HttpClient(Options options = {});
  /// Pending requests complete (on the loop thread, before this returns) with kUnavailable
  /// "client shutting down"; afterwards no watcher, timer or task of this client runs.
  /// Own loop: stops and joins its thread; call it from any thread but that one.
  /// Options::loop: either on the loop thread (shuts down inline; e.g. from a loop task, but not
  /// from a callback of this client) or on another thread while the loop runs (posts the
  /// shutdown and waits for it; it blocks forever if nothing runs the loop).
  /// Never concurrently with Send/Cancel on this client.
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Non-blocking. Non-2xx statuses are NOT errors here: the status is returned. Errors:
  /// kUpstreamUnavailable (connection refused, DNS, reset: message names host and curl reason),
  /// kUpstreamTimeout ("no answer within N ms"), kUpstreamError for a response larger than
  /// max_response_bytes ("response exceeds N bytes") or a malformed answer, kCancelled,
  /// kBadRequest (malformed URL, method or header), kInternal (a callback threw, out of memory).
  /// Called during destruction (e.g. by a callback the shutdown runs), it completes at once, on
  /// the caller's thread, with kUnavailable.
  HttpRequestId Send(HttpRequest request, HttpCallback on_done);
  /// Like Send, but body bytes are handed to on_data as they arrive (not accumulated in
  /// HttpResponse::body, except when the status is not 2xx, in which case the error body IS kept in
  /// HttpResponse::body, up to max_response_bytes (silently cut there), and on_data is not
  /// called). For SSE/LLM streaming. A 2xx body beyond max_streamed_bytes is kUpstreamError.
  HttpRequestId SendStreaming(HttpRequest request, HttpDataCallback on_data, HttpCallback on_done);
  /// Aborts a pending request within a few ms (closes its connection); its on_done gets kCancelled.
  /// Unknown/finished ids are ignored. Any thread, including the loop thread.
  void Cancel(HttpRequestId id);
  /// Requests in flight (for metrics): sent, and their on_done not yet started.
  std::size_t InFlight() const;
  /// TCP connections this client has opened so far (for metrics and connection-reuse tests).
  std::uint64_t ConnectionsOpened() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// Blocking convenience for start-up code and tests only (never on a callback thread, and never on
/// the client's loop thread, which it would wait for forever): sends `request` and waits for its
/// completion, which the request's timeout bounds.
Result<HttpResponse> HttpCallBlocking(HttpClient& client, HttpRequest request);

}  // namespace wf
