#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/transaction>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "error/error.h"
#include "pg/pg_pool.h"
#include "redis/redis_pool.h"
#include "session/recent_keys.h"
#include "wf/v1/session.pb.h"

namespace wf {

struct SessionKeys;
class EventLoopThread;

/// Tuning of a SessionStore.
struct SessionStoreOptions {
  std::chrono::milliseconds ttl{86400000};       ///< Life of an idle session's hot copy in Redis.
  std::string key_prefix = "wf:";                ///< Prefix of every Redis key.
  std::size_t redis_pool = 8;                    ///< Redis connections.
  std::size_t pg_pool = 4;                       ///< PostgreSQL connections.
  std::chrono::milliseconds redis_timeout{500};  ///< Redis connect and command timeout.
  std::chrono::milliseconds pg_connect_timeout{5000};     ///< PostgreSQL connect timeout.
  std::chrono::milliseconds pg_statement_timeout{10000};  ///< PostgreSQL statement timeout.
};

/// The sessions of the agent path: PostgreSQL holds the durable copy (tables sessions, runs,
/// messages of schemas/sql/), Redis the hot one (`<prefix>hist:<id>` list of serialized
/// ChatMessage, `<prefix>runs:<id>` set of the run ids in it, `<prefix>ver:<id>` change counter,
/// all with the TTL) and the per-session turn lock (`<prefix>lock:<id>`).
///
/// Consistency: PostgreSQL is written first and is the truth. Redis is only ever extended when
/// its copy is exactly the history before the new turn, and re-warmed from PostgreSQL only when
/// nothing changed since the read (Lua scripts check both), otherwise the hot copy is dropped and
/// the next read reloads it. So concurrent writers, redeliveries, evictions and FLUSHALL can make
/// the hot copy absent, never wrong. If Redis is down, reads and writes go to PostgreSQL alone
/// (logged as warnings); a Redis that comes back from a partition with an old copy may serve a
/// history missing the turns stored meanwhile until the next append to that session drops it.
///
/// Thread-safe. Every method BLOCKS on the network (bounded by the configured timeouts): call
/// from executor threads, never from NATS, curl or Pistache callbacks.
class SessionStore {
 public:
  /// Connects to both servers (each must be reachable now) and applies the SQL schema
  /// (idempotent; safe when several processes start at once).
  /// Errors: kBadRequest (bad URL or options), kUnavailable (a server unreachable or refusing),
  /// kInternal (schema failed to apply).
  ~SessionStore();
  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  static Result<std::unique_ptr<SessionStore>> Connect(const std::string& redis_url,
                                                       const std::string& database_url,
                                                       SessionStoreOptions options);

  /// The whole history, oldest first: the Redis hot copy (its TTL is refreshed); on a miss
  /// (expired, flushed, dropped) it is reloaded from PostgreSQL and Redis is re-warmed. Unknown
  /// session -> empty vector. Errors: kBadRequest (invalid session id), kUnavailable (Redis
  /// missed and PostgreSQL failed).
  Result<std::vector<wf::v1::ChatMessage>> LoadHistory(const std::string& session_id);

  /// Stores a finished turn: PostgreSQL first, in one round trip (wf_append_turn of
  /// schemas/sql/002_append_turn.sql as 003_session_times.sql left it, atomic: upsert session
  /// (its created/updated times spanning its turns), insert run, insert messages with
  /// the next seq numbers), then Redis (append + TTL). Idempotent by run_id: storing a run again
  /// changes nothing in PostgreSQL, and only repairs the hot copy if it lacks that run. Texts
  /// are normalized first (see NormalizeTurn). A Redis failure is logged and not returned.
  /// Errors: kBadRequest (invalid record, or run id stored for another session), kUnavailable
  /// (PostgreSQL failed, or the same new run was being stored for another session at that
  /// moment: nothing stored, retry), kInternal.
  /// `unlock_owner` not empty: once stored, the session lock that owner holds is released in
  /// the same Redis round trip as the append (best effort, as the append). Not released when
  /// an error is returned: the caller retries or unlocks.
  Status AppendTurn(const wf::v1::TurnRecord& turn, const std::string& unlock_owner = {});

  /// Stores several finished turns (a TurnRecordBatch of flow turns) in ONE PostgreSQL
  /// transaction, each exactly as AppendTurn would (idempotent by run_id, per-session order
  /// kept), then Redis. A record that is invalid (NormalizeTurn) is left out; when the database
  /// refuses one (kBadRequest, e.g. a value it cannot hold) the others are stored one by one.
  /// Either way the others are stored and the first refusal is returned (kBadRequest: calling
  /// again cannot change it). Errors: as AppendTurn; any other error means "retry the call"
  /// (what it stored is not stored twice).
  /// Takes the records by value: they are normalized and sorted in place.
  Status AppendTurns(std::vector<wf::v1::TurnRecord> turns);

  /// The stored history from PostgreSQL (for GET /api/v1/session/{id}). The assistant messages
  /// of a turn stored with status "cancelled" (a partial answer) carry ChatMessage.cancelled,
  /// those of a turn stored with status "error" ChatMessage.failed.
  /// Errors: kBadRequest, kSessionNotFound (no record), kUnavailable.
  Result<wf::v1::SessionHistory> GetSession(const std::string& session_id);

  /// Deletes the session from PostgreSQL (its runs and messages too) and then from Redis (the
  /// lock is left to its owner). Also records a tombstone (schemas/sql/004_session_deletions.sql,
  /// this process's clock) in the same transaction: a turn that started before this moment and is
  /// stored afterwards (a turn cancelled by the delete, a late flow record) is refused instead of
  /// bringing the session back (AppendTurn returns Ok and stores nothing). It waits for the
  /// stores of the session in progress, and deletes what they stored
  /// (006_delete_serialized.sql). Returns false if neither store held it and no turn holds its
  /// lock. Errors: kBadRequest, kUnavailable (PostgreSQL failed: nothing
  /// deleted; or Redis failed after PostgreSQL was deleted: retry to clear the hot copy).
  Result<bool> DeleteSession(const std::string& session_id);

  /// Hot copies this store could not keep right while Redis failed: a stored turn not appended
  /// to its session's copy, or a delete that cleared PostgreSQL only. Redis may come back with
  /// those copies (restarted from its append-only file, a replica promoted) and a turn would
  /// then read a history without the turn, or a deleted conversation. Each is dropped (the next
  /// read reloads it from PostgreSQL) before this store locks its session again, and by
  /// DropStaleHotCopies, which the worker calls every second so that other workers do not read
  /// them either. At most kMaxStaleHotCopies are remembered (the rest only logged).
  std::size_t StaleHotCopies() const { return stale_count_.load(std::memory_order_relaxed); }
  /// Drops the remembered copies while Redis answers; returns how many it dropped.
  std::size_t DropStaleHotCopies();
  static constexpr std::size_t kMaxStaleHotCopies = 65536;

  /// What PostgreSQL holds of one stored run (FindRun).
  struct StoredRun {
    std::string session_id;    ///< The session the run belongs to.
    std::string status;        ///< "ok", "error" or "cancelled".
    std::string user_message;  ///< Content of the run's first user message ("" if none).
    std::string answer;        ///< Content of its last assistant message without tool calls.
    bool has_answer = false;   ///< False when the run stored no such message.
  };

  /// The stored run `run_id`, or nullopt when none is stored: lets a worker tell a redelivered
  /// turn (same run, same session) from another query reusing the id before it runs anything.
  /// One PostgreSQL round trip (primary-key lookups). Errors: kBadRequest (empty or over 128
  /// bytes), kUnavailable (PostgreSQL failed).
  Result<std::optional<StoredRun>> FindRun(const std::string& run_id);

  /// Appends a finished turn to the Redis hot copy only (PostgreSQL unreachable, the turn handed
  /// to WF_HISTORY for later): extended only when the copy exists (its content so far is then
  /// the session's history), and when `unlock_owner` is not empty the session lock it holds is
  /// released in the same round trip. When the copy is absent nothing is appended (the next read
  /// comes from PostgreSQL once the turn is stored there). Best effort: false on a Redis failure
  /// or an invalid record (logged).
  bool AppendTurnToHotCopy(const wf::v1::TurnRecord& turn, const std::string& unlock_owner);

  /// Takes the session's turn lock for `owner` (non-empty token, e.g. the request id) for
  /// `lease`. True when taken or already held by `owner` (lease restarted); false when another
  /// owner holds it. Errors: kBadRequest (id, owner or lease <= 0), kUnavailable (Redis).
  Result<bool> TryLock(const std::string& session_id, const std::string& owner,
                       std::chrono::milliseconds lease);

  /// PostgreSQL's answer, still to come, to whether a session with no hot copy exists
  /// (TryLockAndLoadHistory with `may_defer_lookup`). Thread-safe.
  class DeferredLookup {
   public:
    /// Calls `then` once: with true when PostgreSQL said the session does not exist (a new
    /// session: its history is empty), with false when it does or there is no answer that
    /// counts (a failure, a timeout): then LoadDeferred reads the history. Runs on the store's
    /// look-up thread, or inline when the answer is already in; must not block for long.
    void Then(std::function<void(bool absent)> then);

   private:
    friend class SessionStore;
    void Resolve(bool absent);
    std::string session_id_;
    std::string version_;  // the hot copy's change counter at the miss, for re-warming
    std::mutex mu_;
    std::optional<bool> absent_;
    std::function<void(bool)> then_;
  };

  /// What TryLockAndLoadHistory found.
  struct LockedHistory {
    /// False: another owner holds the lock; nothing was read and `history` is empty.
    bool locked = false;
    /// When `locked`: the history as LoadHistory returns it, or its error (the lock is held
    /// all the same: Unlock it).
    Result<std::vector<wf::v1::ChatMessage>> history = std::vector<wf::v1::ChatMessage>{};
    /// Only with `may_defer_lookup`: set, with `history` empty, when the session had no hot
    /// copy and PostgreSQL had not yet said whether it exists. The history is empty if its
    /// answer says the session is new, else LoadDeferred's.
    std::shared_ptr<DeferredLookup> deferred;
  };

  /// TryLock, then, only when the lock is held by `owner`, LoadHistory, with the lock and the
  /// hot-copy read in one Redis round trip (one script: the history is read after the lock is
  /// taken, so it holds every turn stored by the lock's previous owners). On a hot-copy miss
  /// PostgreSQL is read and Redis re-warmed as in LoadHistory. Errors (lock not attempted or its
  /// outcome unknown): kBadRequest (id, owner or lease <= 0), kUnavailable (Redis), kInternal.
  ///
  /// A session whose hot copy this store has not seen lately (most often a new one) costs no
  /// second round trip when PostgreSQL does not know it either: while Redis runs the script
  /// (sent first), PostgreSQL is asked whether the session exists, and "no" together with a
  /// hot-copy miss is an empty history (unless the script that took the lock was a later attempt:
  /// after a stale connection or NOSCRIPT the history is read as before). The question never waits
  /// for anything but its answer: it has its own connection (one more per store; skipped while
  /// another turn uses it) and a 250 ms statement timeout, and after a failure or an answer slower
  /// than 20 ms the questions pause (1 s, doubling while they keep failing, up to 60 s). Its only
  /// blind spot: a turn of that session stored and unlocked between PostgreSQL's answer and Redis
  /// running this script, whose hot copy is gone by then (a FLUSHALL or eviction within those
  /// microseconds). That turn is then missing from this turn's history only: nothing is re-warmed
  /// from an empty answer, and this turn's append, finding the copy not to be the history before
  /// it, drops the copy.
  ///
  /// `queue_position` > 0 (on_busy "enqueue"): waiting turns take the lock in the order of their
  /// positions (e.g. JetStream stream sequences): the caller joins the session's wait queue
  /// (`<prefix>queue:<id>`, a sorted set, with a 5 s lease per waiter kept in
  /// `<prefix>qlease:<id>`), and gets the lock only when it is free and the caller is the first
  /// live waiter; a waiter that stops calling (crashed, gave up) is skipped once its lease ran
  /// out. 0: no queue, the lock is taken whenever it is free.
  ///
  /// `may_defer_lookup`: the look-up runs on the store's look-up thread instead, and when Redis
  /// answers first with a hot-copy miss, the call returns without waiting for PostgreSQL (see
  /// LockedHistory::deferred): a caller can start work that needs the history to be empty and
  /// act on it only once the answer says so.
  Result<LockedHistory> TryLockAndLoadHistory(const std::string& session_id,
                                              const std::string& owner,
                                              std::chrono::milliseconds lease,
                                              std::uint64_t queue_position = 0,
                                              bool may_defer_lookup = false);

  /// After a DeferredLookup said false: the history read from PostgreSQL and the hot copy
  /// re-warmed, as TryLockAndLoadHistory would have done. Blocks.
  Result<std::vector<wf::v1::ChatMessage>> LoadDeferred(const DeferredLookup& deferred);

  /// Extends the lock to `lease` from now if `owner` still holds it, or takes it again for
  /// `owner` when nobody holds it (its lease ran out, or Redis lost it: FLUSHALL, a restart), so
  /// a turn that still runs keeps its session busy. Only for an owner whose turn still runs.
  /// Errors: kSessionBusy (another owner holds it), kBadRequest, kUnavailable.
  Status RenewLock(const std::string& session_id, const std::string& owner,
                   std::chrono::milliseconds lease);

  /// Removes `owner` from the session's wait queue (a waiting turn that gives up), so the next
  /// waiter need not wait for its lease to run out. Errors: kBadRequest, kUnavailable.
  Status LeaveQueue(const std::string& session_id, const std::string& owner);

  /// Releases the lock if `owner` holds it; does nothing otherwise (not an error).
  /// Errors: kBadRequest, kUnavailable.
  Status Unlock(const std::string& session_id, const std::string& owner);

  /// True when both Redis (PING) and PostgreSQL (SELECT 1) answer. For /ready.
  bool Healthy();

 private:
  SessionStore(std::unique_ptr<RedisPool> redis, std::unique_ptr<PgPool> pg,
               std::unique_ptr<PgPool> lookup_pg, SessionStoreOptions options);

  struct StoredTurn;
  struct PgHistory;

  /// The PostgreSQL part of storing one normalized turn: one call of wf_append_turn (atomic on
  /// its own, so `tx` may be a nontransaction), plus reads of what was stored before when the
  /// run is a repeat. Inside a batch's transaction, which the caller commits.
  Result<StoredTurn> StoreTurn(pqxx::transaction_base& tx, const wf::v1::TurnRecord& turn);
  /// StoreTurn for a batch of normalized turns, sorted by session: one call of wf_append_turns.
  Result<std::vector<StoredTurn>> StoreTurns(pqxx::transaction_base& tx,
                                             const std::vector<wf::v1::TurnRecord>& turns);
  /// What wf_append_turn(s) answered for `turn` (`stored`: inserted, first_seq, owner).
  Result<StoredTurn> ReadStoredTurn(pqxx::transaction_base& tx, const wf::v1::TurnRecord& turn,
                                    const pqxx::row& stored);

  /// Work done while a Redis command is on the server (RedisCommand, Eval).
  struct Meanwhile {
    /// Runs at most once, alongside the first attempt's command (RedisConnection::
    /// CommandWhile); not at all when no connection could be borrowed.
    std::function<void()> run;
    /// Set when the reply returned is the answer to that command, not to a later attempt.
    bool alongside = false;
    /// Set once `run` has run.
    bool ran = false;
  };

  /// Runs a command on a pooled connection, once more on another after kUnavailable (a stale
  /// connection after a Redis restart); every command this class sends is safe to repeat.
  Result<RedisReply> RedisCommand(std::span<const std::string_view> argv,
                                  Meanwhile* meanwhile = nullptr);
  /// Commands in one round trip on one pooled connection (RedisConnection::Pipeline); not
  /// repeated on a transport failure, after which nothing is known of what ran.
  Result<std::vector<RedisReply>> RedisPipeline(
      const std::vector<std::vector<std::string>>& commands);
  /// Runs `script` with `keys` and `args`: EVALSHA of its SHA-1 (SCRIPT LOAD once per store),
  /// so the script's text is not sent and hashed on every call; EVAL when Redis has lost it
  /// (NOSCRIPT: a restart, a failover, SCRIPT FLUSH), which also caches it there again.
  /// `meanwhile`: as RedisCommand's (an EVAL after NOSCRIPT is a later attempt).
  Result<RedisReply> Eval(std::string_view script, const std::vector<std::string>& keys,
                          const std::vector<std::string>& args, Meanwhile* meanwhile = nullptr);
  /// The SHA-1 SCRIPT LOAD gave for `script`, loading it the first time. Empty (for good) when
  /// Redis refused or answered something else; the error (asked again next time) when Redis was
  /// unreachable.
  Result<std::string> ScriptSha(std::string_view script);
  /// The rest of LoadHistory after the hot-copy read: `reply` is the load script's answer, or
  /// null when Redis failed. A hit is decoded; a miss (or an undecodable or missing copy) reads
  /// PostgreSQL and re-warms Redis when nothing changed since the miss, except that a plain miss
  /// of a session PostgreSQL was just found not to hold (`absent_from_postgres`) is empty.
  Result<std::vector<wf::v1::ChatMessage>> LoadAfterHotCopy(const std::string& session_id,
                                                            const SessionKeys& keys,
                                                            const RedisReply* reply,
                                                            bool absent_from_postgres = false);
  /// Whether PostgreSQL holds the session (one primary-key look-up, prepared) on the look-up
  /// connection; nullopt when it is in use by another turn or the look-up failed. A failure or
  /// a slow answer pauses the look-ups (see TryLockAndLoadHistory). `taken`: the caller
  /// already set lookup_busy_.
  std::optional<bool> LookUpInPostgres(const std::string& session_id, bool taken = false);
  /// The history from PostgreSQL in one statement (and the session's run ids when `with_runs`).
  Result<PgHistory> LoadFromPostgres(const std::string& session_id, bool with_runs);
  void WarmRedis(const std::string& session_id, const std::string& expected_version,
                 const PgHistory& history);
  /// Appends to the hot copy and, when `unlock_owner` is not empty, releases the session lock
  /// it holds, in one round trip. A failure is logged and returns false.
  bool AppendToRedis(const std::string& session_id, const std::string& run_id,
                     std::int64_t first_seq,
                     const google::protobuf::RepeatedPtrField<wf::v1::ChatMessage>& messages,
                     const std::string& unlock_owner);
  /// The append script's ARGV.
  std::vector<std::string> AppendArgs(
      const std::string& run_id, std::int64_t first_seq,
      const google::protobuf::RepeatedPtrField<wf::v1::ChatMessage>& messages,
      const std::string& unlock_owner) const;
  /// Bookkeeping after the append script answered `reply`.
  void NoteAppended(const std::string& session_id, const std::string& run_id,
                    const RedisReply& reply);
  /// AppendToRedis for each turn of a batch that has something to append (`stored` matches
  /// `turns`), pipelined; whatever the pipeline did not do goes one by one.
  void AppendManyToRedis(const std::vector<wf::v1::TurnRecord>& turns,
                         const std::vector<StoredTurn>& stored);
  /// Logs a Redis problem at warn level, at most about once per 10 s (outages are loud enough).
  void WarnRedis(std::string_view what, const Error& error);

  std::unique_ptr<RedisPool> redis_;
  std::unique_ptr<PgPool> pg_;
  std::unique_ptr<PgPool> lookup_pg_;  ///< One connection for TryLockAndLoadHistory's look-ups.
  SessionStoreOptions options_;
  std::mutex script_mu_;
  /// Script text -> SHA-1 (a handful of scripts), under script_mu_.
  std::vector<std::pair<std::string, std::string>> script_shas_;
  /// Sessions whose hot copy this store read or wrote lately: the others are looked up in
  /// PostgreSQL while their lock is taken (TryLockAndLoadHistory). A hint only.
  RecentKeys<4096> hot_sessions_;
  /// A turn is using the look-up connection (the others go without).
  std::atomic<bool> lookup_busy_{false};
  /// Look-ups fail or come slowly this many times in a row; none until this time (Unix ms).
  std::atomic<int> lookup_failures_{0};
  std::atomic<std::int64_t> lookup_paused_until_ms_{0};
  std::atomic<std::int64_t> last_redis_warning_ms_{0};
  /// Sessions whose hot copy must be dropped once Redis answers (StaleHotCopies).
  void MarkStale(const std::string& session_id);
  /// Drops `session_id`'s copy if it is remembered as stale; false if Redis failed doing so.
  bool DropIfStale(const std::string& session_id);
  mutable std::mutex stale_mu_;
  std::unordered_set<std::string> stale_;  // guarded by stale_mu_
  std::atomic<std::size_t> stale_count_{0};
  std::atomic<std::int64_t> suppressed_redis_warnings_{0};
  /// Runs deferred look-ups. Last: stopped (its queued look-ups run) before anything they use.
  std::unique_ptr<EventLoopThread> lookup_thread_;
};

}  // namespace wf
