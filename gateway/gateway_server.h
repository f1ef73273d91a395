#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "config/config.h"
#include "error/error.h"

namespace wf {

/// How to run the gateway (built by main from flags and the config file).
struct GatewayOptions {
  /// "HOST:PORT" to listen on; port 0 picks a free port (see GatewayServer::port()).
  std::string listen = "0.0.0.0:8000";
  /// Pistache worker threads (event loops).
  int threads = 1;
  /// SSE heartbeat after this much silence.
  std::chrono::milliseconds heartbeat{15000};
  std::string nats_url = "nats://127.0.0.1:4222";
  /// The validated configuration (subject prefix, gateway limits, agent turn timeout).
  std::shared_ptr<const Config> config;
  /// Session GET/DELETE: answer 503 no_agent_worker when nobody replies within this.
  std::chrono::milliseconds session_timeout{5000};
  /// How often worker pools are pinged for /ready and the no-worker check.
  std::chrono::milliseconds pool_ping_interval{1000};
};

/// The HTTP + SSE front end (ARCHITECTURE.md "HTTP API"): validates requests, publishes them on
/// NATS (`<prefix>.query`, `<prefix>.session.get|delete`) with a reply subject on the process's
/// single wildcard inbox (`_INBOX.<nuid>.*`, demultiplexed by request id), and turns the events
/// that come back into JSON answers or Server-Sent Events.
///
/// Threads: Pistache worker threads parse requests and publish; one NATS delivery thread turns
/// inbox messages into response bytes; one ticker thread enforces deadlines and sends
/// heartbeats. Those two write to the client socket themselves (a non-blocking send, or
/// Tcp::Peer::send, Pistache's thread-safe write queue, when the socket is full) and never touch
/// a ResponseWriter; gateway/README.md explains why this is safe and how it was tested.
///
/// Start, Drain, Stop and the destructor are for one controlling thread (main); port() may be
/// called from any thread.
class GatewayServer {
 public:
  /// Connects to NATS, subscribes the inbox, starts the pool monitor and the ticker, then binds
  /// and serves HTTP. Errors: kUnavailable (NATS unreachable, address in use), kBadRequest
  /// (listen address malformed, missing config).
  static Result<std::unique_ptr<GatewayServer>> Start(GatewayOptions options);

  /// Stops (see Stop).
  ~GatewayServer();
  GatewayServer(const GatewayServer&) = delete;
  GatewayServer& operator=(const GatewayServer&) = delete;

  /// The TCP port actually bound.
  int port() const;

  /// Graceful shutdown: from now on new API requests get 503 (Connection: close) and /ready
  /// says not ready; waits until every in-flight request and open stream has ended or `grace`
  /// has passed, ends what is left (503 / an `error` event, and a cancel to the worker), then
  /// stops. Blocks; call once.
  void Drain(std::chrono::milliseconds grace);

  /// Stops now: ends in-flight requests with 503, stops the ticker, the inbox subscription and
  /// the HTTP server, and closes the NATS connection. Idempotent.
  void Stop();

  /// Requests waiting for an answer right now.
  std::size_t InFlight() const;

 private:
  struct Impl;
  explicit GatewayServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wf
