#pragma once

#include <functional>
#include <memory>
#include <string>

#include "error/error.h"

namespace wf {

/// A worker's admin HTTP port: what Kubernetes probes and Prometheus scrape, nothing else.
///
///   GET /health   200 {"status":"ok"} while the process is alive (and `live`, if set, says so);
///                 503 {"status":"unhealthy","reason":...} when `live` says it is not.
///   GET /ready    200 {"status":"ready"} when `ready` returns true;
///                 503 {"status":"not_ready","reason":...} otherwise (or when `ready` throws).
///   GET /metrics  200, Prometheus text format 0.0.4, the string `metrics` returns.
///   HEAD is answered like GET without a body; other methods 405, other paths 404, both with the
///   usual `{"error":{"code","message"}}` body.
///
/// Served by one Pistache thread of its own, so a busy worker pool never delays a probe. The
/// callbacks run on that thread, one request at a time: they must be thread-safe with respect to
/// the worker's own threads, must not block for long (read cached state; a probe has a timeout of
/// a few seconds) and should not throw (an exception is caught and answered 500/503).
///
/// Thread-safety: Start, Stop and the destructor may be called from any one thread (not from a
/// callback). port() may be called from any thread.
class AdminServer {
 public:
  /// What to serve.
  struct Options {
    /// "HOST:PORT" to listen on, e.g. "0.0.0.0:9090"; port 0 picks a free port (see port()).
    /// An IPv6 host goes in brackets: "[::]:9090".
    std::string listen{};
    /// Readiness: true when the process can do its work; on false, *why (never null) says why.
    /// Empty means always ready.
    std::function<bool(std::string* why)> ready{};
    /// Prometheus text exposition of the process's metrics. Empty means an empty body.
    std::function<std::string()> metrics{};
    /// Liveness beyond "the process answers": false (with *why) when the main loop is wedged.
    /// Empty means alive whenever the server answers.
    std::function<bool(std::string* why)> live{};
  };

  /// Binds `options.listen` and starts serving on a thread of its own.
  /// Errors: kBadRequest when `listen` is not HOST:PORT with a port in 0..65535; kUnavailable when
  /// the address cannot be bound (in use, not local, permission).
  static Result<std::unique_ptr<AdminServer>> Start(Options options);

  /// Stops accepting and joins the server thread. Idempotent. In-flight requests may be cut.
  void Stop();

  /// Stops the server (see Stop).
  ~AdminServer();

  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  /// The TCP port actually bound (the chosen one when `listen` asked for port 0).
  int port() const;

 private:
  struct Impl;
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wf
