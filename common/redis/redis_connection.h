#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "error/error.h"
#include "redis/redis_reply.h"
#include "redis/redis_url.h"

struct redisContext;

namespace wf {

/// Timeouts of one Redis connection.
struct RedisOptions {
  std::chrono::milliseconds connect_timeout{1000};  ///< TCP connect (+ AUTH/SELECT).
  std::chrono::milliseconds command_timeout{1000};  ///< Each read/write on the socket.
  /// After a failed (re)connect, further attempts wait 50 ms, doubling up to this cap, so a
  /// dead server costs callers a fast error instead of a connect timeout each.
  std::chrono::milliseconds max_reconnect_backoff{2000};
};

/// One synchronous hiredis connection (`redisContext`), owned RAII: non-copyable, movable.
/// It connects lazily and reconnects by itself: after an I/O error the context is dropped and the
/// next command opens a new one (AUTH and SELECT again), with backoff after failed attempts.
/// Not thread-safe: one thread at a time (RedisPool hands it out). Every call blocks for at most
/// about connect_timeout + command_timeout.
class RedisConnection {
 public:
  /// A handle that has not connected yet; the first command connects.
  RedisConnection(RedisEndpoint endpoint, RedisOptions options);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  RedisConnection(RedisConnection&& other) noexcept;
  RedisConnection& operator=(RedisConnection&& other) noexcept;

  /// Connects now. Errors: kUnavailable (unreachable, timeout, AUTH/SELECT refused).
  static Result<RedisConnection> Connect(RedisEndpoint endpoint, RedisOptions options);

  /// Connects unless already connected. Errors: kUnavailable.
  Status EnsureConnected();

  /// Sends one command (arguments are binary safe) and waits for its reply.
  /// Errors: kUnavailable for transport failures (the connection is dropped and reopened on the
  /// next call) and for server states that pass (LOADING, BUSY, READONLY, OOM, ...);
  /// kInternal for other error replies (message "redis: <server error>"); kBadRequest for no
  /// arguments. A nil reply is a value (RedisReply::Type::kNil), not an error.
  Result<RedisReply> Command(std::span<const std::string_view> args);
  Result<RedisReply> Command(std::initializer_list<std::string_view> args);
  Result<RedisReply> Command(const std::vector<std::string>& args);

  /// Command, with `meanwhile` run between sending the command and reading its reply: the
  /// server works on the command while this thread does something else (e.g. asks another
  /// server). `meanwhile` runs exactly once whatever happens (also when the command could not be
  /// sent), and must not use this connection. Errors: as Command.
  Result<RedisReply> CommandWhile(std::span<const std::string_view> args,
                                  const std::function<void()>& meanwhile);

  /// Sends all commands in one write and reads all replies (pipelining: one round trip).
  /// Error replies of single commands are kError elements of the result; the whole call fails
  /// only on a transport error (kUnavailable), after which nothing is known about which
  /// commands ran.
  Result<std::vector<RedisReply>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  /// True while a context is open (it may still turn out to be dead on the next command).
  bool connected() const { return ctx_ != nullptr; }

  /// How many times a command or connect attempt failed on transport so far.
  std::uint64_t transport_failures() const { return transport_failures_; }

  /// Closes the context (if any); the next command reconnects at once.
  void Disconnect() { ctx_.reset(); }

  /// The server, without credentials.
  std::string Describe() const { return endpoint_.Describe(); }

 private:
  struct ContextFree {
    void operator()(redisContext* ctx) const;
  };
  using ContextPtr = std::unique_ptr<redisContext, ContextFree>;

  Status Open();
  Error TransportError(const char* what);

  RedisEndpoint endpoint_;
  RedisOptions options_;
  ContextPtr ctx_;
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_{0};
  std::uint64_t transport_failures_ = 0;
};

/// Maps a Redis error reply to our codes: transient server states -> kUnavailable, else kInternal.
Error RedisServerError(std::string_view server_message);

}  // namespace wf
