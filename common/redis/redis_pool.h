#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "error/error.h"
#include "redis/redis_connection.h"
#include "redis/redis_url.h"

namespace wf {

/// Size and timeouts of a RedisPool.
struct RedisPoolOptions {
  std::size_t size = 8;                            ///< Connections at most (>= 1).
  RedisOptions connection;                         ///< Timeouts of each connection.
  std::chrono::milliseconds borrow_timeout{1000};  ///< Wait for a free connection at most this.
};

/// A fixed set of RedisConnections shared by threads: Borrow() hands one out exclusively and
/// the returned Lease gives it back when destroyed. Connections open lazily and reopen by
/// themselves after errors (see RedisConnection); when one comes back after a transport failure
/// the idle ones are closed too (they most likely face the same dead server or restart), so the
/// next borrower gets a fresh connection instead of a stale one. Thread-safe; Borrow blocks up to
/// borrow_timeout when all connections are out. The pool must outlive every Lease.
class RedisPool {
 public:
  /// Exclusive use of one pooled connection until destruction. Movable, not copyable.
  class Lease {
   public:
    Lease(Lease&& other) noexcept
        : pool_(other.pool_), connection_(other.connection_), failures_(other.failures_) {
      other.pool_ = nullptr;
      other.connection_ = nullptr;
    }
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    RedisConnection& operator*() const { return *connection_; }
    RedisConnection* operator->() const { return connection_; }

   private:
    friend class RedisPool;
    Lease(RedisPool* pool, RedisConnection* connection)
        : pool_(pool), connection_(connection), failures_(connection->transport_failures()) {}
    RedisPool* pool_;
    RedisConnection* connection_;
    std::uint64_t failures_;  // The connection's transport failures when borrowed.
  };

  /// Parses `url` (see ParseRedisUrl) and opens one connection to check that the server is
  /// reachable and accepts the credentials. Errors: kBadRequest (URL, size 0), kUnavailable.
  static Result<std::unique_ptr<RedisPool>> Connect(const std::string& url,
                                                    RedisPoolOptions options);

  /// Waits up to borrow_timeout for a free connection. Prefers the most recently returned one
  /// (most likely open). Errors: kUnavailable when none became free in time.
  Result<Lease> Borrow();

  /// The server, without credentials; safe to log.
  std::string Describe() const { return endpoint_.Describe(); }

 private:
  RedisPool(RedisEndpoint endpoint, RedisPoolOptions options);
  void Return(RedisConnection* connection, bool failed);

  RedisEndpoint endpoint_;
  RedisPoolOptions options_;
  std::vector<std::unique_ptr<RedisConnection>> all_;
  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<RedisConnection*> idle_;  // Guarded by mutex_; back() is the most recent.
};

}  // namespace wf
