#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <pqxx/connection>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "error/error.h"

namespace wf {

/// Size and timeouts of a PgPool.
struct PgPoolOptions {
  std::size_t size = 4;                                ///< Connections at most (>= 1).
  std::chrono::milliseconds connect_timeout{5000};     ///< libpq connect_timeout (>= 2 s).
  std::chrono::milliseconds statement_timeout{10000};  ///< SET statement_timeout per connection.
  std::chrono::milliseconds borrow_timeout{5000};      ///< Wait for a free connection at most.
};

template <typename T>
struct IsResult : std::false_type {};
template <typename T>
struct IsResult<Result<T>> : std::true_type {};

/// What PgPool::Run returns for a function returning T: T itself when it is already a Result,
/// else Result<T>.
template <typename T>
using PgRunResult = std::conditional_t<IsResult<T>::value, T, Result<T>>;

/// Whether PgPool::Run may run the function again on a fresh connection when the first one
/// turns out to be broken.
enum class PgRetry {
  kNever,       ///< Not idempotent: report the failure.
  kIdempotent,  ///< Safe to repeat (e.g. guarded by a unique key): one retry on a new connection.
};

/// A bounded set of libpqxx connections shared by threads. Connections open lazily (the first at
/// Connect), each with the statement timeout set; one that breaks is closed together with the
/// idle ones (which most likely broke too) and replaced by new ones on later Borrows, so the pool
/// survives a PostgreSQL restart. Thread-safe; Borrow and Run
/// block (up to borrow_timeout, then the statement timeout). The pool must outlive every Lease.
class PgPool {
 public:
  /// Exclusive use of one connection until destruction. Movable, not copyable.
  class Lease {
   public:
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), connection_(std::move(other.connection_)) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    pqxx::connection& operator*() const { return *connection_; }
    pqxx::connection* operator->() const { return connection_.get(); }
    /// Closes the connection instead of returning it (call after a broken_connection).
    void MarkBroken() { broken_ = true; }

   private:
    friend class PgPool;
    Lease(PgPool* pool, std::unique_ptr<pqxx::connection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    PgPool* pool_;
    std::unique_ptr<pqxx::connection> connection_;
    bool broken_ = false;
  };

  /// Opens one connection to `uri` (a libpq URI `postgresql://user:pass@host:port/db` or a
  /// `key=value` string) to check that the server is reachable. Errors: kBadRequest (size 0),
  /// kUnavailable (with libpq's reason, the password masked).
  static Result<std::unique_ptr<PgPool>> Connect(const std::string& uri, PgPoolOptions options);

  ~PgPool();

  /// A connection: an idle one, else a new one while fewer than `size` exist, else waits up to
  /// borrow_timeout. Errors: kUnavailable (none free in time, or connecting failed).
  Result<Lease> Borrow();

  /// Runs `fn(pqxx::connection&)` on a borrowed connection and returns its (non-void) result
  /// (a function may return a Result itself to report its own errors).
  /// Exceptions become errors: lost connection, statement timeout, admin shutdown, too many
  /// connections -> kUnavailable (the connection is discarded); serialization failures and
  /// deadlocks -> kUnavailable; data exceptions (SQLSTATE class 22: a value the database cannot
  /// hold) -> kBadRequest; other SQL errors -> kInternal.
  /// With PgRetry::kIdempotent a broken connection is retried once on a new connection.
  template <typename Fn>
  auto Run(Fn&& fn, PgRetry retry = PgRetry::kNever)
      -> PgRunResult<std::invoke_result_t<Fn&, pqxx::connection&>>;

  /// `SELECT 1` on a pooled connection.
  bool Ping();

  /// The URI with its credentials (a URI's `user:password@`, every password) replaced by
  /// `***`; safe to log.
  const std::string& Describe() const { return redacted_uri_; }

 private:
  PgPool(const std::string& uri, PgPoolOptions options);
  Result<std::unique_ptr<pqxx::connection>> Open();
  void Return(std::unique_ptr<pqxx::connection> connection, bool broken);

  /// Classifies the exception in flight; sets `broken` when the connection must be discarded.
  Error TranslateCurrentException(bool& broken) const;

  std::string uri_;
  std::string redacted_uri_;
  std::vector<std::string> secrets_;  ///< Passwords of uri_ (raw and decoded): never shown.
  PgPoolOptions options_;
  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;  // Guarded by mutex_.
  std::size_t open_ = 0;  // Connections existing (idle + lent). Guarded by mutex_.
};

/// The URI (or key=value string) with any password, and a URI's whole userinfo (`***@host`),
/// replaced by `***`. Pure; any thread.
std::string RedactPostgresUri(const std::string& uri);

template <typename Fn>
auto PgPool::Run(Fn&& fn, PgRetry retry)
    -> PgRunResult<std::invoke_result_t<Fn&, pqxx::connection&>> {
  using T = std::invoke_result_t<Fn&, pqxx::connection&>;
  using R = PgRunResult<T>;
  static_assert(!std::is_void_v<T>, "PgPool::Run needs a function that returns a value");
  const int attempts = retry == PgRetry::kIdempotent ? 2 : 1;
  Error last;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    Result<Lease> lease = Borrow();
    if (!lease) return R(std::move(lease).error());
    bool broken = false;
    try {
      return R(fn(**lease));
    } catch (...) {
      last = TranslateCurrentException(broken);
    }
    if (!broken) return R(std::move(last));
    lease->MarkBroken();
  }
  return R(std::move(last));
}

}  // namespace wf
