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

/// One outbound HTTP/1.1 request. Plain data: build it, then hand it to HttpClient::Send.
struct HttpRequest {
  /// An HTTP token ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", ...); anything else is
  /// kBadRequest.
  std::string method = "GET";
  /// Absolute http:// or https:// URL, already percent-encoded. Other schemes are kBadRequest.
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

/// Completion callback: runs on the client's I/O thread, exactly once per request, never inside
/// Send; must not block (no HttpCallBlocking, no waiting on other requests of the same client).
using HttpCallback = std::function<void(Result<HttpResponse>)>;
/// Streaming data callback (on the I/O thread): return false to abort the transfer (then the
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
};

/// Asynchronous HTTP/1.1 client with connection reuse (a curl share/connection cache: never a new
/// TCP connection per request when one to the host is idle), per-request timeout and size limit.
/// Thread-safe: Send/Cancel may be called from any thread.
///
/// One dedicated I/O thread per client drives libcurl's multi interface (curl_multi_poll, woken
/// by curl_multi_wakeup); Send/Cancel cost the caller one queue push and, at most, one wake-up.
/// Easy handles are pooled and connections kept alive in the multi handle's connection cache.
/// Environment proxies (http_proxy, no_proxy) are honoured as libcurl does.
class HttpClient {
 public:
  using Options = HttpClientOptions;

  /// Starts the I/O thread. Throws std::runtime_error only when libcurl cannot be initialised.
  explicit HttpClient(Options options = {});
  /// Stops the thread; pending requests complete (on the I/O thread, before this returns) with
  /// kUnavailable "client shutting down". Must not be called from a callback of this client, nor
  /// concurrently with Send/Cancel on it.
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Non-blocking. Non-2xx statuses are NOT errors here: the status is returned. Errors:
  /// kUpstreamUnavailable (connection refused, DNS, reset: message names host and curl reason),
  /// kUpstreamTimeout ("no answer within N ms"), kUpstreamError for a response larger than
  /// max_response_bytes ("response exceeds N bytes") or a malformed answer, kCancelled,
  /// kBadRequest (malformed URL, method or header), kInternal (a callback threw, out of memory).
  /// Called during destruction, it completes at once (on the caller's thread) with kUnavailable.
  HttpRequestId Send(HttpRequest request, HttpCallback on_done);
  /// Like Send, but body bytes are handed to on_data as they arrive (not accumulated in
  /// HttpResponse::body, except when the status is not 2xx, in which case the error body IS kept in
  /// HttpResponse::body, up to max_response_bytes (silently cut there), and on_data is not
  /// called). For SSE/LLM streaming. A 2xx body beyond max_streamed_bytes is kUpstreamError.
  HttpRequestId SendStreaming(HttpRequest request, HttpDataCallback on_data, HttpCallback on_done);
  /// Aborts a pending request within a few ms (closes its connection); its on_done gets kCancelled.
  /// Unknown/finished ids are ignored. Any thread, including the I/O thread.
  void Cancel(HttpRequestId id);
  /// Requests in flight (for metrics): sent, and their on_done not yet started.
  std::size_t InFlight() const;
  /// TCP connections this client has opened so far (for metrics and connection-reuse tests).
  std::uint64_t ConnectionsOpened() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// Blocking convenience for start-up code and tests only (never on a callback thread): sends
/// `request` and waits for its completion, which the request's timeout bounds.
Result<HttpResponse> HttpCallBlocking(HttpClient& client, HttpRequest request);

}  // namespace wf
