#include "session/session_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <unordered_map>

#include "codec/json_dump.h"
#include "io/event_loop.h"
#include "pg/migrations.h"
#include "session/session_codec.h"

namespace wf {
namespace {

using Clock = std::chrono::system_clock;

/// How long a session's deletion tombstone is kept: the retention of WF_HISTORY, the longest a
/// turn that started before the delete may wait to be stored.
constexpr std::int64_t kTombstoneLifeMs = 7LL * 24 * 3600 * 1000;
/// How long a turn waiting for a session's lock keeps its place in the wait queue without
/// asking again (waiters ask every 100 ms; one that crashed or gave up is skipped after this).
constexpr std::int64_t kWaiterLeaseMs = 5000;
/// The look-up of a session in PostgreSQL while its lock is taken (TryLockAndLoadHistory) is an
/// optimization, never a wait: its statement timeout; the longest it may take without counting
/// as a failure; and the pause of the look-ups after a failure (in use by another turn, down,
/// timed out, slow), doubled after each failure in a row up to the longest pause.
constexpr std::chrono::milliseconds kLookupStatementTimeout{250};
constexpr std::int64_t kLookupSlowMs = 20;
constexpr std::int64_t kLookupPauseMs = 1000;
constexpr std::int64_t kLookupLongestPauseMs = 60000;
/// Longest run id (NormalizeTurn's rule).
constexpr std::size_t kMaxRunIdBytes = 128;

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

// All scripts take KEYS = {hist, runs, ver} (or {lock}) and are safe to run twice.

/// ARGV: ttl. Hit -> {1, {msg...}} with the TTLs refreshed; miss -> {0, version or ""}.
constexpr std::string_view kLoadScript = R"lua(
local h = redis.call('LRANGE', KEYS[1], 0, -1)
if #h > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
  return {1, h}
end
local v = redis.call('GET', KEYS[3])
if not v then v = '' end
return {0, v}
)lua";

/// ARGV: ttl, expected version ("" = none), run count, run ids..., messages...
/// Writes the copy read from PostgreSQL only if nothing changed since the miss was seen.
constexpr std::string_view kWarmScript = R"lua(
local v = redis.call('GET', KEYS[3])
if not v then v = '' end
if v ~= ARGV[2] or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
local i = 4
local last = 3 + tonumber(ARGV[3])
while i <= last do
  local j = math.min(i + 99, last)
  redis.call('SADD', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
last = #ARGV
while i <= last do
  local j = math.min(i + 99, last)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
)lua";

/// KEYS: history, runs, version, lock. ARGV: ttl, run id, seq of the turn's first message (-1 =
/// unknown, PostgreSQL being down: extend the copy only if it exists), lock owner ('' = leave the
/// lock alone), messages...
/// 0 = run already in the copy, 1 = appended, 2 = copy absent or not the history before this
/// turn: dropped (the next load reloads it). Every change bumps the version. Then, when ARGV[4]
/// holds the session's lock, releases it: the next turn's lock-and-load sees this turn.
constexpr std::string_view kAppendScript = R"lua(
local function append()
  local ttl = ARGV[1]
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
    return 0
  end
  local len = redis.call('LLEN', KEYS[1])
  local extend = false
  if ARGV[3] == '-1' then
    extend = len > 0
  elseif len == tonumber(ARGV[3]) then
    if len > 0 then
      extend = true
    else
      -- A brand-new session: nothing may have happened to it yet within the TTL.
      extend = redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[3]) == 0
    end
  end
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ttl)
  if not extend then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 2
  end
  local i = 5
  while i <= #ARGV do
    local j = math.min(i + 99, #ARGV)
    redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
    i = j + 1
  end
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return 1
end
local result = append()
if ARGV[4] ~= '' and redis.call('GET', KEYS[4]) == ARGV[4] then
  redis.call('DEL', KEYS[4])
end
return result
)lua";
/// kAppendScript's KEYS for a session.
std::vector<std::string> AppendKeys(const SessionKeys& keys) {
  return {keys.history, keys.runs, keys.version, keys.lock};
}

/// KEYS: hist, runs, ver[, lock]. ARGV: ttl. Drops the copy and bumps the version (so no
/// in-flight re-warm resurrects it); the lock is left to its owner. Returns how many of
/// hist/runs/lock existed.
constexpr std::string_view kDropScript = R"lua(
local n = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
if KEYS[4] then n = n + redis.call('EXISTS', KEYS[4]) end
return n
)lua";

/// KEYS: lock. ARGV: owner, lease. 1 = held by owner now, 0 = held by another.
constexpr std::string_view kTryLockScript = R"lua(
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
)lua";

/// KEYS: lock, hist, runs, ver, queue, queue leases. ARGV: owner, lease, ttl, queue position
/// ('' = no queue), waiter lease. kTryLockScript, then (only when the lock is held by owner now)
/// kLoadScript, in one round trip: {0} = held by another owner or another waiter is first (nothing
/// read); {1, 1, {msg...}} = locked, hot copy hit; {1, 0, version or ""} = locked, miss. With a
/// queue position the owner (re)joins the wait queue with a fresh lease; waiters whose lease ran
/// out are dropped from its head; the lock is taken only by the head waiter.
constexpr std::string_view kTryLockLoadScript = R"lua(
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif ARGV[4] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[5], 'NX', ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[6], ARGV[1], now + tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[5], ARGV[5])
  redis.call('PEXPIRE', KEYS[6], ARGV[5])
  local head
  while true do
    head = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
    if not head then break end
    local until_ms = tonumber(redis.call('HGET', KEYS[6], head) or '0')
    if until_ms >= now then break end
    redis.call('ZREM', KEYS[5], head)
    redis.call('HDEL', KEYS[6], head)
  end
  if v or head ~= ARGV[1] then return {0} end
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif v then
  return {0}
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local h = redis.call('LRANGE', KEYS[2], 0, -1)
if #h > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
  return {1, 1, h}
end
local ver = redis.call('GET', KEYS[4])
if not ver then ver = '' end
return {1, 0, ver}
)lua";

/// KEYS: queue, queue leases. ARGV: owner. Leaves the wait queue.
constexpr std::string_view kLeaveQueueScript = R"lua(
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
)lua";

/// KEYS: lock. ARGV: owner, lease. 1 = extended, 2 = it was free (expired, flushed): taken
/// again, 0 = held by another owner.
constexpr std::string_view kRenewScript = R"lua(
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
)lua";

/// KEYS: lock. ARGV: owner. 1 = released, 0 = not the owner.
constexpr std::string_view kUnlockScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
)lua";

/// A session's messages: the columns ReadMessage reads, then seq (kSelectMessagesSeq).
constexpr std::string_view kSelectMessages =
    "SELECT run_id, role, content, COALESCE(name, ''), COALESCE(tool_call_id, ''),"
    " COALESCE(tool_calls::text, ''), (extract(epoch FROM created_at) * 1000)::bigint, seq"
    " FROM messages WHERE session_id = $1";
constexpr int kSelectMessagesSeq = 7;

/// A session's whole history for LoadHistory in ONE statement, so it needs no transaction (one
/// statement sees one snapshot) and costs one round trip: the messages (kind false, in seq
/// order, the columns of kSelectMessages from column 2 on), then, when $2 is true, the session's
/// run ids (kind true, in column 2). Prepared once per connection as kLoadHistoryName.
constexpr const char* kLoadHistoryName = "wf_load_history";
constexpr std::string_view kLoadHistory =
    "SELECT false, seq, run_id, role, content, COALESCE(name, ''), COALESCE(tool_call_id, ''),"
    " COALESCE(tool_calls::text, ''), (extract(epoch FROM created_at) * 1000)::bigint"
    " FROM messages WHERE session_id = $1"
    " UNION ALL SELECT true, 0, run_id, '', '', '', '', '', 0::bigint FROM runs"
    " WHERE session_id = $1 AND $2::boolean"
    " ORDER BY 1, 2";

/// Whether a session exists (TryLockAndLoadHistory's look-up while the lock is taken).
/// Messages and runs belong to a session row, so "no row" means "no history".
constexpr const char* kSessionExistsName = "wf_session_exists";
constexpr std::string_view kSessionExists =
    "SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = $1)";

/// Storing a turn: one call of wf_append_turn (schemas/sql/002_append_turn.sql, last replaced by
/// 003_session_times.sql), which upserts and locks the session, inserts the run, its messages and
/// the counters, only if the run is new, and otherwise names the session the run belongs to.
/// Prepared once per connection.
constexpr const char* kAppendTurnName = "wf_append_turn";
constexpr std::string_view kAppendTurn =
    "SELECT inserted, first_seq, owner FROM wf_append_turn("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12)";

/// Storing a batch of turns: one call of wf_append_turns (schemas/sql/005_append_turns.sql),
/// one row per turn in the order given, each as wf_append_turn's. Prepared once per connection.
constexpr const char* kAppendTurnsName = "wf_append_turns";
constexpr std::string_view kAppendTurns =
    "SELECT inserted, first_seq, owner FROM wf_append_turns($1::jsonb)";

/// The content of the first user message of a turn (empty when it has none).
std::string_view UserMessage(
    const google::protobuf::RepeatedPtrField<wf::v1::ChatMessage>& messages) {
  for (const wf::v1::ChatMessage& message : messages) {
    if (message.role() == "user") return message.content();
  }
  return {};
}

/// A turn's messages as wf_append_turn's p_messages.
nlohmann::json MessagesJson(const wf::v1::TurnRecord& turn) {
  nlohmann::json rows = nlohmann::json::array();
  for (const wf::v1::ChatMessage& message : turn.messages()) {
    rows.push_back({{"role", message.role()},
                    {"content", message.content()},
                    {"name", message.name()},
                    {"tool_call_id", message.tool_call_id()},
                    {"tool_calls", ToolCallsToJson(message)},
                    {"created_ms", message.created_unix_ms()}});
  }
  return rows;
}

/// NormalizeTurn made every string valid UTF-8; DumpJson's replace guards the invariant and
/// never throws.
std::string MessagesParameter(const wf::v1::TurnRecord& turn) {
  return DumpJson(MessagesJson(turn));
}

/// Turns as wf_append_turns's p_turns, in their order.
std::string TurnsParameter(const std::vector<wf::v1::TurnRecord>& turns) {
  nlohmann::json rows = nlohmann::json::array();
  for (const wf::v1::TurnRecord& turn : turns) {
    rows.push_back(
        {{"run_id", turn.run_id()},
         {"session_id", turn.session_id()},
         {"request_id", turn.request_id()},
         {"route", turn.route()},
         {"flow_id", turn.flow_id()},
         {"status", turn.status()},
         {"prompt_tokens", static_cast<std::int64_t>(turn.usage().prompt_tokens())},
         {"completion_tokens", static_cast<std::int64_t>(turn.usage().completion_tokens())},
         {"started_ms", turn.started_unix_ms()},
         {"finished_ms", turn.finished_unix_ms()},
         {"user_id", turn.user_id()},
         {"messages", MessagesJson(turn)}});
  }
  return DumpJson(rows);
}

/// Reads one message from the columns of kSelectMessages starting at `first`.
Status ReadMessage(const pqxx::row& row, int first, wf::v1::ChatMessage& message) {
  message.set_run_id(row[first].as<std::string>());
  message.set_role(row[first + 1].as<std::string>());
  message.set_content(row[first + 2].as<std::string>());
  message.set_name(row[first + 3].as<std::string>());
  message.set_tool_call_id(row[first + 4].as<std::string>());
  if (Status status = ToolCallsFromJson(row[first + 5].as<std::string>(), message); !status.ok()) {
    return status;
  }
  message.set_created_unix_ms(row[first + 6].as<std::int64_t>());
  return Status::Ok();
}

/// Reads rows of kSelectMessages into messages.
Status ReadMessages(const pqxx::result& rows,
                    google::protobuf::RepeatedPtrField<wf::v1::ChatMessage>& out) {
  out.Reserve(static_cast<int>(rows.size()));
  for (const pqxx::row& row : rows) {
    if (Status status = ReadMessage(row, 0, *out.Add()); !status.ok()) return status;
  }
  return Status::Ok();
}

Status CheckSessionId(const std::string& session_id) {
  if (IsValidSessionId(session_id)) return Status::Ok();
  return Status(ErrorCode::kBadRequest, "session_id must be 1-128 characters of [A-Za-z0-9._:-]");
}

Status CheckLockArgs(const std::string& session_id, const std::string& owner,
                     std::chrono::milliseconds lease) {
  if (Status status = CheckSessionId(session_id); !status.ok()) return status;
  if (owner.empty() || owner.size() > 256) {
    return Status(ErrorCode::kBadRequest, "lock owner must be 1-256 bytes");
  }
  if (lease.count() <= 0) return Status(ErrorCode::kBadRequest, "lock lease must be positive");
  return Status::Ok();
}

}  // namespace

struct SessionStore::PgHistory {
  google::protobuf::RepeatedPtrField<wf::v1::ChatMessage> messages;
  std::vector<std::string> run_ids;
};

struct SessionStore::StoredTurn {
  bool inserted = false;  // False: the run was stored before (or refused).
  bool refused = false;   // The session was deleted after the turn started: nothing stored.
  std::int64_t first_seq = 0;
  google::protobuf::RepeatedPtrField<wf::v1::ChatMessage> messages;  // As stored.

  /// Whether the hot copy has anything to get from this turn (its messages, or a repeat's
  /// stored messages to repair it with).
  bool ToAppend() const { return inserted || !messages.empty(); }
};

SessionStore::SessionStore(std::unique_ptr<RedisPool> redis, std::unique_ptr<PgPool> pg,
                           std::unique_ptr<PgPool> lookup_pg, SessionStoreOptions options)
    : redis_(std::move(redis)),
      pg_(std::move(pg)),
      lookup_pg_(std::move(lookup_pg)),
      options_(std::move(options)),
      lookup_thread_(std::make_unique<EventLoopThread>("pg-lookup")) {}

SessionStore::~SessionStore() = default;

void SessionStore::DeferredLookup::Then(std::function<void(bool absent)> then) {
  std::unique_lock lock(mu_);
  if (!absent_.has_value()) {
    then_ = std::move(then);
    return;
  }
  const bool absent = *absent_;
  lock.unlock();
  then(absent);
}

void SessionStore::DeferredLookup::Resolve(bool absent) {
  std::function<void(bool)> then;
  {
    std::lock_guard lock(mu_);
    absent_ = absent;
    then = std::move(then_);
  }
  if (then) then(absent);
}

Result<std::unique_ptr<SessionStore>> SessionStore::Connect(const std::string& redis_url,
                                                            const std::string& database_url,
                                                            SessionStoreOptions options) {
  if (options.ttl.count() <= 0) return Error{ErrorCode::kBadRequest, "session ttl must be > 0"};
  if (options.redis_pool == 0 || options.pg_pool == 0) {
    return Error{ErrorCode::kBadRequest, "session store pool sizes must be >= 1"};
  }
  RedisPoolOptions redis_options;
  redis_options.size = options.redis_pool;
  redis_options.connection.connect_timeout = options.redis_timeout;
  redis_options.connection.command_timeout = options.redis_timeout;
  Result<std::unique_ptr<RedisPool>> redis = RedisPool::Connect(redis_url, redis_options);
  if (!redis) return std::move(redis).error();

  PgPoolOptions pg_options;
  pg_options.size = options.pg_pool;
  pg_options.connect_timeout = options.pg_connect_timeout;
  pg_options.statement_timeout = options.pg_statement_timeout;
  Result<std::unique_ptr<PgPool>> pg = PgPool::Connect(database_url, pg_options);
  if (!pg) return std::move(pg).error();
  if (Status status = ApplyMigrations(**pg, BundledMigrations()); !status.ok()) {
    return status.error();
  }
  // The look-ups of TryLockAndLoadHistory: their own connection, so they never wait for the
  // stores' pool, and a short statement timeout, so a slow server cannot hold a turn for long.
  PgPoolOptions lookup_options;
  lookup_options.size = 1;
  lookup_options.connect_timeout = options.pg_connect_timeout;
  lookup_options.statement_timeout = kLookupStatementTimeout;
  lookup_options.borrow_timeout = std::chrono::milliseconds{0};  // never waits (see lookup_busy_)
  Result<std::unique_ptr<PgPool>> lookup_pg = PgPool::Connect(database_url, lookup_options);
  if (!lookup_pg) return std::move(lookup_pg).error();
  spdlog::info("session store: redis {}, postgres {}", (*redis)->Describe(), (*pg)->Describe());
  return std::unique_ptr<SessionStore>(new SessionStore(std::move(*redis), std::move(*pg),
                                                        std::move(*lookup_pg), std::move(options)));
}

Result<std::string> SessionStore::ScriptSha(std::string_view script) {
  {
    std::lock_guard lock(script_mu_);
    for (const auto& [text, sha] : script_shas_) {
      if (text == script) return sha;
    }
  }
  const std::string_view load[] = {"SCRIPT", "LOAD", script};
  Result<RedisReply> loaded = RedisCommand(load);
  if (!loaded && loaded.error().code == ErrorCode::kUnavailable) return std::move(loaded).error();
  // Refused (an ACL without SCRIPT) or an odd answer: EVAL from now on, without asking again.
  std::string loaded_sha;
  if (loaded && loaded->type == RedisReply::Type::kString && loaded->str.size() == 40) {
    loaded_sha = loaded->str;
  }
  std::lock_guard lock(script_mu_);
  for (const auto& [text, sha] : script_shas_) {
    if (text == script) return sha;  // another thread was first
  }
  script_shas_.emplace_back(std::string(script), loaded_sha);
  return loaded_sha;
}

Result<RedisReply> SessionStore::Eval(std::string_view script, const std::vector<std::string>& keys,
                                      const std::vector<std::string>& args, Meanwhile* meanwhile) {
  Result<std::string> loaded = ScriptSha(script);
  if (!loaded) return std::move(loaded).error();  // unreachable: EVAL would only wait as long
  const std::string sha = std::move(loaded).value();
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  const std::string key_count = std::to_string(keys.size());
  argv.push_back(sha.empty() ? "EVAL" : "EVALSHA");
  argv.push_back(sha.empty() ? script : std::string_view(sha));
  argv.push_back(key_count);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  Result<RedisReply> reply = RedisCommand(argv, meanwhile);
  // NOSCRIPT: not run. EVAL runs it and caches it in Redis again for the next EVALSHA.
  if (sha.empty() || reply.ok() || reply.error().message.find("NOSCRIPT") == std::string::npos) {
    return reply;
  }
  argv[0] = "EVAL";
  argv[1] = script;
  if (meanwhile != nullptr) meanwhile->alongside = false;
  return RedisCommand(argv);
}

Result<RedisReply> SessionStore::RedisCommand(std::span<const std::string_view> argv,
                                              Meanwhile* meanwhile) {
  Error last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<RedisPool::Lease> lease = redis_->Borrow();
    if (!lease) return std::move(lease).error();
    const bool alongside = attempt == 0 && meanwhile != nullptr;
    if (alongside) meanwhile->ran = true;  // CommandWhile runs it, whatever becomes of the command
    Result<RedisReply> reply =
        alongside ? (*lease)->CommandWhile(argv, meanwhile->run) : (*lease)->Command(argv);
    if (reply.ok() || reply.error().code != ErrorCode::kUnavailable) {
      if (meanwhile != nullptr) meanwhile->alongside = alongside;
      return reply;
    }
    last = std::move(reply).error();
  }
  return last;
}

Result<std::vector<RedisReply>> SessionStore::RedisPipeline(
    const std::vector<std::vector<std::string>>& commands) {
  Result<RedisPool::Lease> lease = redis_->Borrow();
  if (!lease) return std::move(lease).error();
  return (*lease)->Pipeline(commands);
}

void SessionStore::MarkStale(const std::string& session_id) {
  std::lock_guard lock(stale_mu_);
  if (stale_.size() >= kMaxStaleHotCopies) {
    spdlog::error(
        "session store: hot copy of session {} may be stale once Redis is back; {} "
        "such sessions remembered already, this one is not",
        session_id, stale_.size());
    return;
  }
  if (stale_.insert(session_id).second) stale_count_.store(stale_.size());
}

bool SessionStore::DropIfStale(const std::string& session_id) {
  {
    std::lock_guard lock(stale_mu_);
    if (stale_.count(session_id) == 0) return true;
  }
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  Result<RedisReply> dropped = Eval(kDropScript, {keys.history, keys.runs, keys.version},
                                    {std::to_string(options_.ttl.count())});
  if (!dropped) return false;
  hot_sessions_.Remove(session_id);
  std::lock_guard lock(stale_mu_);
  stale_.erase(session_id);
  stale_count_.store(stale_.size());
  return true;
}

std::size_t SessionStore::DropStaleHotCopies() {
  std::vector<std::string> sessions;
  {
    std::lock_guard lock(stale_mu_);
    sessions.assign(stale_.begin(), stale_.end());
  }
  std::size_t dropped = 0;
  for (const std::string& session_id : sessions) {
    if (!DropIfStale(session_id)) break;  // Redis still down: the rest wait for the next call
    ++dropped;
  }
  if (dropped > 0) {
    spdlog::info("session store: {} hot cop{} left stale by a Redis failure dropped", dropped,
                 dropped == 1 ? "y" : "ies");
  }
  return dropped;
}

void SessionStore::WarnRedis(std::string_view what, const Error& error) {
  const std::int64_t now = NowUnixMs();
  std::int64_t last = last_redis_warning_ms_.load();
  if (now - last < 10000 || !last_redis_warning_ms_.compare_exchange_strong(last, now)) {
    suppressed_redis_warnings_.fetch_add(1);
    return;
  }
  const std::int64_t suppressed = suppressed_redis_warnings_.exchange(0);
  spdlog::warn("session store: {}: {}; using PostgreSQL alone ({} similar suppressed)", what,
               error.message, suppressed);
}

Result<SessionStore::PgHistory> SessionStore::LoadFromPostgres(const std::string& session_id,
                                                               bool with_runs) {
  return pg_->Run(
      [&](pqxx::connection& connection) -> Result<PgHistory> {
        PgHistory history;
        connection.prepare(kLoadHistoryName, std::string(kLoadHistory));  // no-op once done
        pqxx::nontransaction tx(connection);
        const pqxx::result rows = tx.exec_prepared(kLoadHistoryName, session_id, with_runs);
        for (const pqxx::row& row : rows) {
          if (row[0].as<bool>()) {
            history.run_ids.push_back(row[2].as<std::string>());
          } else if (Status status = ReadMessage(row, 2, *history.messages.Add()); !status.ok()) {
            return status.error();
          }
        }
        return history;
      },
      PgRetry::kIdempotent);
}

std::optional<bool> SessionStore::LookUpInPostgres(const std::string& session_id, bool taken) {
  // In use by another turn: not a failure, this turn just goes without.
  if (!taken && lookup_busy_.exchange(true, std::memory_order_acquire)) return std::nullopt;
  const std::int64_t start = NowUnixMs();
  Result<bool> exists = lookup_pg_->Run([&](pqxx::connection& connection) -> Result<bool> {
    connection.prepare(kSessionExistsName, std::string(kSessionExists));  // no-op once done
    pqxx::nontransaction tx(connection);
    return tx.exec_prepared1(kSessionExistsName, session_id)[0].as<bool>();
  });
  lookup_busy_.store(false, std::memory_order_release);
  const std::int64_t end = NowUnixMs();
  if (exists.ok() && end - start < kLookupSlowMs) {
    lookup_failures_.store(0, std::memory_order_relaxed);
    return *exists;
  }
  const int failures = lookup_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::int64_t pause =
      std::min(kLookupLongestPauseMs, kLookupPauseMs << std::min(failures - 1, 6));
  lookup_paused_until_ms_.store(end + pause, std::memory_order_relaxed);
  spdlog::debug("session store: look-up of session {} {} ({} ms); paused for {} ms", session_id,
                exists.ok() ? "slow" : exists.error().message, end - start, pause);
  if (!exists.ok()) return std::nullopt;
  return *exists;
}

void SessionStore::WarmRedis(const std::string& session_id, const std::string& expected_version,
                             const PgHistory& history) {
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  std::vector<std::string> args;
  args.reserve(3 + history.run_ids.size() + static_cast<std::size_t>(history.messages.size()));
  args.push_back(std::to_string(options_.ttl.count()));
  args.push_back(expected_version);
  args.push_back(std::to_string(history.run_ids.size()));
  args.insert(args.end(), history.run_ids.begin(), history.run_ids.end());
  for (const wf::v1::ChatMessage& message : history.messages) {
    args.push_back(message.SerializeAsString());
  }
  Result<RedisReply> reply = Eval(kWarmScript, {keys.history, keys.runs, keys.version}, args);
  if (!reply) {
    WarnRedis("re-warming a session failed", reply.error());
  } else if (reply->integer == 1) {
    hot_sessions_.Add(session_id);
  }
}

Result<std::vector<wf::v1::ChatMessage>> SessionStore::LoadHistory(const std::string& session_id) {
  if (Status status = CheckSessionId(session_id); !status.ok()) return status.error();
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  Result<RedisReply> reply = Eval(kLoadScript, {keys.history, keys.runs, keys.version},
                                  {std::to_string(options_.ttl.count())});
  if (!reply) {
    WarnRedis("reading a session failed", reply.error());
    return LoadAfterHotCopy(session_id, keys, nullptr);
  }
  return LoadAfterHotCopy(session_id, keys, &*reply);
}

Result<SessionStore::LockedHistory> SessionStore::TryLockAndLoadHistory(
    const std::string& session_id, const std::string& owner, std::chrono::milliseconds lease,
    std::uint64_t queue_position, bool may_defer_lookup) {
  if (Status status = CheckLockArgs(session_id, owner, lease); !status.ok()) {
    return status.error();
  }
  if (stale_count_.load(std::memory_order_relaxed) > 0 && !DropIfStale(session_id)) {
    return Error{ErrorCode::kUnavailable,
                 "session " + session_id + ": Redis is unavailable (its hot copy is stale)"};
  }
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  // A session not seen lately may well be new: ask PostgreSQL while Redis runs the script
  // (not for waiters in the queue, who ask again every 100 ms).
  // Its answer counts only if it came while Redis ran the script that took the lock (not an
  // attempt after a stale connection or NOSCRIPT, which ran later).
  std::optional<bool> in_postgres;
  Meanwhile ask_postgres;
  const bool ask = queue_position == 0 && !hot_sessions_.Contains(session_id) &&
                   NowUnixMs() >= lookup_paused_until_ms_.load(std::memory_order_relaxed);
  std::shared_ptr<DeferredLookup> deferred;
  if (ask && may_defer_lookup && !lookup_busy_.exchange(true, std::memory_order_acquire)) {
    // On the look-up thread, once the script is on its way (its wake-up, and PostgreSQL's, must
    // not hold back the script's write on a busy core); the caller may go on without its answer.
    deferred = std::make_shared<DeferredLookup>();
    deferred->session_id_ = session_id;
    ask_postgres.run = [this, deferred] {
      lookup_thread_->loop().Post([this, deferred] {
        const std::optional<bool> exists = LookUpInPostgres(deferred->session_id_, true);
        deferred->Resolve(exists.has_value() && !*exists);
      });
    };
  } else if (ask) {
    // Only then the callback (a heap allocation): a session seen lately costs nothing here.
    ask_postgres.run = [&] { in_postgres = LookUpInPostgres(session_id); };
  }
  Result<RedisReply> reply =
      Eval(kTryLockLoadScript,
           {keys.lock, keys.history, keys.runs, keys.version, keys.queue, keys.queue_leases},
           {owner, std::to_string(lease.count()), std::to_string(options_.ttl.count()),
            queue_position > 0 ? std::to_string(queue_position) : std::string(),
            std::to_string(kWaiterLeaseMs)},
           ask ? &ask_postgres : nullptr);
  // No connection to send the script on: the look-up was never posted, so it is not busy.
  if (deferred && !ask_postgres.ran) lookup_busy_.store(false, std::memory_order_release);
  if (!reply) return std::move(reply).error();
  if (reply->type != RedisReply::Type::kArray || reply->elements.empty() ||
      (reply->elements[0].integer == 1 && reply->elements.size() != 3)) {
    return Error{ErrorCode::kInternal, "unexpected reply of the lock-and-load script"};
  }
  LockedHistory out;
  if (reply->elements[0].integer != 1) return out;  // another owner holds the lock
  out.locked = true;
  // The hot copy part, shaped as the load script's answer.
  RedisReply hot;
  hot.type = RedisReply::Type::kArray;
  hot.elements.assign(std::make_move_iterator(reply->elements.begin() + 1),
                      std::make_move_iterator(reply->elements.end()));
  if (deferred && ask_postgres.alongside && hot.type == RedisReply::Type::kArray &&
      hot.elements.size() == 2 && hot.elements[0].integer != 1) {
    // A miss, and PostgreSQL still to answer: the caller decides what to do meanwhile.
    deferred->version_ = hot.elements[1].str;
    out.deferred = std::move(deferred);
    return out;
  }
  // (A deferred look-up not handed out here answers nobody.)
  const bool absent = ask_postgres.alongside && in_postgres.has_value() && !*in_postgres;
  out.history = LoadAfterHotCopy(session_id, keys, &hot, absent);
  return out;
}

Result<std::vector<wf::v1::ChatMessage>> SessionStore::LoadDeferred(
    const DeferredLookup& deferred) {
  Result<PgHistory> history = LoadFromPostgres(deferred.session_id_, true);
  if (!history) return std::move(history).error();
  if (!history->messages.empty()) WarmRedis(deferred.session_id_, deferred.version_, *history);
  return std::vector<wf::v1::ChatMessage>(history->messages.begin(), history->messages.end());
}

Result<std::vector<wf::v1::ChatMessage>> SessionStore::LoadAfterHotCopy(
    const std::string& session_id, const SessionKeys& keys, const RedisReply* reply,
    bool absent_from_postgres) {
  bool may_warm = false;
  std::string version;
  if (reply == nullptr) {
    // Redis failed (already logged): PostgreSQL alone.
  } else if (reply->type != RedisReply::Type::kArray || reply->elements.size() != 2) {
    WarnRedis("reading a session failed",
              Error{ErrorCode::kInternal, "unexpected reply of the load script"});
  } else if (reply->elements[0].integer == 1) {
    std::vector<wf::v1::ChatMessage> messages(reply->elements[1].elements.size());
    bool intact = true;
    for (std::size_t i = 0; i < messages.size() && intact; ++i) {
      intact = messages[i].ParseFromString(reply->elements[1].elements[i].str);
    }
    if (intact) {
      hot_sessions_.Add(session_id);
      return messages;
    }
    spdlog::warn("session store: hot copy of session {} does not decode; reloading it", session_id);
    Result<RedisReply> dropped = Eval(kDropScript, {keys.history, keys.runs, keys.version},
                                      {std::to_string(options_.ttl.count())});
    if (!dropped) WarnRedis("dropping a session failed", dropped.error());
  } else if (absent_from_postgres) {
    return std::vector<wf::v1::ChatMessage>{};  // a new session: nothing to read or re-warm
  } else {
    may_warm = true;
    version = reply->elements[1].str;
  }

  Result<PgHistory> history = LoadFromPostgres(session_id, may_warm);
  if (!history) return std::move(history).error();
  if (may_warm && !history->messages.empty()) WarmRedis(session_id, version, *history);
  return std::vector<wf::v1::ChatMessage>(history->messages.begin(), history->messages.end());
}

bool SessionStore::AppendToRedis(
    const std::string& session_id, const std::string& run_id, std::int64_t first_seq,
    const google::protobuf::RepeatedPtrField<wf::v1::ChatMessage>& messages,
    const std::string& unlock_owner) {
  Result<RedisReply> reply =
      Eval(kAppendScript, AppendKeys(SessionKeys::For(options_.key_prefix, session_id)),
           AppendArgs(run_id, first_seq, messages, unlock_owner));
  if (!reply) {
    WarnRedis("appending a turn failed", reply.error());
    MarkStale(session_id);
    return false;
  }
  NoteAppended(session_id, run_id, *reply);
  return true;
}

std::vector<std::string> SessionStore::AppendArgs(
    const std::string& run_id, std::int64_t first_seq,
    const google::protobuf::RepeatedPtrField<wf::v1::ChatMessage>& messages,
    const std::string& unlock_owner) const {
  std::vector<std::string> args;
  args.reserve(4 + static_cast<std::size_t>(messages.size()));
  args.push_back(std::to_string(options_.ttl.count()));
  args.push_back(run_id);
  args.push_back(std::to_string(first_seq));
  args.push_back(unlock_owner);
  for (const wf::v1::ChatMessage& message : messages) args.push_back(message.SerializeAsString());
  return args;
}

void SessionStore::NoteAppended(const std::string& session_id, const std::string& run_id,
                                const RedisReply& reply) {
  if (reply.integer == 2) {
    spdlog::debug("session store: hot copy of session {} dropped at run {}", session_id, run_id);
  } else {
    hot_sessions_.Add(session_id);
  }
}

void SessionStore::AppendManyToRedis(const std::vector<wf::v1::TurnRecord>& turns,
                                     const std::vector<StoredTurn>& stored) {
  // The batch's appends in one round trip (each is still the append script, run in order), so
  // a batch of a hundred turns does not wait a hundred times for Redis.
  std::vector<std::size_t> sent;  // indexes into turns
  std::vector<std::vector<std::string>> commands;
  Result<std::string> sha = ScriptSha(kAppendScript);
  if (sha.ok() && !sha->empty()) {
    for (std::size_t i = 0; i < turns.size(); ++i) {
      if (!stored[i].ToAppend()) continue;
      // As Eval sends it: EVALSHA, the SHA, the key count, the keys, the arguments.
      std::vector<std::string> keys =
          AppendKeys(SessionKeys::For(options_.key_prefix, turns[i].session_id()));
      std::vector<std::string> args =
          AppendArgs(turns[i].run_id(), stored[i].first_seq, stored[i].messages, {});
      std::vector<std::string> command = {"EVALSHA", *sha, std::to_string(keys.size())};
      command.insert(command.end(), std::make_move_iterator(keys.begin()),
                     std::make_move_iterator(keys.end()));
      command.insert(command.end(), std::make_move_iterator(args.begin()),
                     std::make_move_iterator(args.end()));
      commands.push_back(std::move(command));
      sent.push_back(i);
    }
  }
  std::vector<bool> done(turns.size(), false);
  if (!commands.empty()) {
    Result<std::vector<RedisReply>> replies = RedisPipeline(commands);
    if (replies.ok() && replies->size() == sent.size()) {
      for (std::size_t k = 0; k < sent.size(); ++k) {
        const RedisReply& reply = (*replies)[k];
        if (reply.IsError()) continue;  // e.g. NOSCRIPT: one by one below
        NoteAppended(turns[sent[k]].session_id(), turns[sent[k]].run_id(), reply);
        done[sent[k]] = true;
      }
    }
  }
  // What the pipeline did not do (no SHA yet, a transport failure, NOSCRIPT after a Redis
  // restart): one by one, as before. Every append is safe to run twice.
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (done[i] || !stored[i].ToAppend()) continue;
    (void)AppendToRedis(turns[i].session_id(), turns[i].run_id(), stored[i].first_seq,
                        stored[i].messages, /*unlock_owner=*/{});
  }
}

Result<SessionStore::StoredTurn> SessionStore::StoreTurn(pqxx::transaction_base& tx,
                                                         const wf::v1::TurnRecord& turn) {
  tx.conn().prepare(kAppendTurnName, std::string(kAppendTurn));  // no-op once done
  const pqxx::row stored = tx.exec_prepared1(
      kAppendTurnName, turn.run_id(), turn.session_id(), turn.request_id(), turn.route(),
      turn.flow_id(), turn.status(), static_cast<std::int64_t>(turn.usage().prompt_tokens()),
      static_cast<std::int64_t>(turn.usage().completion_tokens()), turn.started_unix_ms(),
      turn.finished_unix_ms(), MessagesParameter(turn), turn.user_id());
  return ReadStoredTurn(tx, turn, stored);
}

Result<std::vector<SessionStore::StoredTurn>> SessionStore::StoreTurns(
    pqxx::transaction_base& tx, const std::vector<wf::v1::TurnRecord>& turns) {
  tx.conn().prepare(kAppendTurnsName, std::string(kAppendTurns));  // no-op once done
  const pqxx::result rows = tx.exec_prepared(kAppendTurnsName, TurnsParameter(turns));
  if (rows.size() != turns.size()) {
    return Error{ErrorCode::kInternal, "wf_append_turns answered " + std::to_string(rows.size()) +
                                           " rows for " + std::to_string(turns.size()) + " turns"};
  }
  std::vector<StoredTurn> out;
  out.reserve(turns.size());
  for (std::size_t i = 0; i < turns.size(); ++i) {
    Result<StoredTurn> one = ReadStoredTurn(tx, turns[i], rows[static_cast<int>(i)]);
    if (!one.ok()) return one.error();
    out.push_back(std::move(one).value());
  }
  return out;
}

Result<SessionStore::StoredTurn> SessionStore::ReadStoredTurn(pqxx::transaction_base& tx,
                                                              const wf::v1::TurnRecord& turn,
                                                              const pqxx::row& stored) {
  StoredTurn out;
  if (stored[0].as<bool>()) {
    out.inserted = true;
    out.first_seq = stored[1].as<std::int64_t>();
    out.messages = turn.messages();
    return out;
  }
  if (stored[1].as<std::int64_t>() == -1) {
    out.refused = true;  // 004_session_deletions.sql: deleted after the turn started
    return out;
  }
  if (stored[2].as<std::string>() != turn.session_id()) {
    return Error{ErrorCode::kBadRequest,
                 "run_id " + turn.run_id() + " is stored for another session"};
  }
  // Stored before (a redelivery): report what is stored so the hot copy can be repaired. A
  // stored run's messages were committed with it and never change, so this read needs no lock.
  // In seq order, so the first row holds the run's first seq.
  const pqxx::result rows =
      tx.exec_params(std::string(kSelectMessages) + " AND run_id = $2 ORDER BY seq",
                     turn.session_id(), turn.run_id());
  if (Status status = ReadMessages(rows, out.messages); !status.ok()) {
    return status.error();
  }
  // The same run id with another user message is another query reusing the id, not a
  // redelivery: refused, so its answer is not reported as stored.
  if (UserMessage(out.messages) != UserMessage(turn.messages())) {
    return Error{ErrorCode::kBadRequest,
                 "run_id " + turn.run_id() + " is stored for this session with another message"};
  }
  out.first_seq = rows.empty() ? 0 : rows[0][kSelectMessagesSeq].as<std::int64_t>();
  return out;
}

Status SessionStore::AppendTurn(const wf::v1::TurnRecord& record, const std::string& unlock_owner) {
  wf::v1::TurnRecord turn = record;
  if (Status status = NormalizeTurn(turn, NowUnixMs()); !status.ok()) return status;

  // One statement, so autocommit: no BEGIN/COMMIT round trips (wf_append_turn is atomic).
  Result<StoredTurn> stored = pg_->Run(
      [&](pqxx::connection& connection) -> Result<StoredTurn> {
        pqxx::nontransaction tx(connection);
        return StoreTurn(tx, turn);
      },
      PgRetry::kIdempotent);
  if (!stored) return stored.error();
  if (stored->refused) {
    spdlog::info("session store: run {} not stored: session {} was deleted after it started",
                 turn.run_id(), turn.session_id());
  }
  if ((!stored->ToAppend() || !AppendToRedis(turn.session_id(), turn.run_id(), stored->first_seq,
                                             stored->messages, unlock_owner)) &&
      !unlock_owner.empty()) {
    // No append carried the unlock (or it failed, perhaps only for a moment): unlock alone, so a
    // Redis blip does not keep the session busy until the lease runs out.
    if (Status unlocked = Unlock(turn.session_id(), unlock_owner); !unlocked.ok()) {
      WarnRedis("unlocking a session failed", unlocked.error());
    }
  }
  return Status::Ok();
}

Status SessionStore::AppendTurns(std::vector<wf::v1::TurnRecord> turns) {
  if (turns.empty()) return Status::Ok();
  if (turns.size() == 1) return AppendTurn(turns[0]);
  // A turn that cannot be stored is refused alone (the first refusal is reported); the others
  // are stored.
  const std::int64_t now = NowUnixMs();
  Status refused = Status::Ok();
  std::erase_if(turns, [&](wf::v1::TurnRecord& turn) {
    Status status = NormalizeTurn(turn, now);
    if (status.ok()) return false;
    if (refused.ok()) {
      refused = Status(status.error().code,
                       "run " + SanitizeText(turn.run_id()) + ": " + status.error().message);
    }
    return true;
  });
  if (turns.size() <= 1) {
    Status one = turns.empty() ? Status::Ok() : AppendTurn(turns[0]);
    return refused.ok() ? one : refused;
  }
  // Sessions are locked in one order (by id) by every batch, so two batches never deadlock;
  // the stable sort keeps each session's turns in the order they finished.
  std::stable_sort(turns.begin(), turns.end(),
                   [](const auto& a, const auto& b) { return a.session_id() < b.session_id(); });
  // wf_append_turns raises serialization_failure when a run or a delete of this batch was
  // committed while it waited for its session locks: once more at once, and that call takes
  // the one-turn-at-a-time path (instead of the caller's retry seconds later).
  Result<std::vector<StoredTurn>> stored = Error{ErrorCode::kInternal, "not run"};
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool conflict = false;
    stored = pg_->Run(
        [&](pqxx::connection& connection) -> Result<std::vector<StoredTurn>> {
          pqxx::work tx(connection);
          try {
            Result<std::vector<StoredTurn>> out = StoreTurns(tx, turns);
            if (out.ok()) tx.commit();  // else the whole batch rolls back
            return out;
          } catch (const pqxx::serialization_failure&) {
            if (attempt > 0) throw;
            conflict = true;
            return Error{ErrorCode::kUnavailable, "batch conflicted with another store"};
          }
        },
        PgRetry::kIdempotent);
    if (!conflict) break;
  }
  if (!stored) {
    if (stored.error().code != ErrorCode::kBadRequest) return stored.error();
    // One record the database refuses (e.g. a run id stored for another session) must not hold
    // back the others: store them one by one, and report the first refusal.
    // A turn that failed for another reason (PostgreSQL went away meanwhile) makes the whole
    // call fail for a retry, which stores nothing twice: a refusal would end the record.
    Status first = refused;
    Status transient = Status::Ok();
    for (const auto& turn : turns) {
      Status one = AppendTurn(turn);
      if (one.ok()) continue;
      if (one.error().code != ErrorCode::kBadRequest) {
        if (transient.ok()) transient = one;
      } else if (first.ok()) {
        first = one;
      }
    }
    return transient.ok() ? first : transient;
  }
  AppendManyToRedis(turns, *stored);
  return refused;
}

Result<wf::v1::SessionHistory> SessionStore::GetSession(const std::string& session_id) {
  if (Status status = CheckSessionId(session_id); !status.ok()) return status.error();
  return pg_->Run(
      [&](pqxx::connection& connection) -> Result<wf::v1::SessionHistory> {
        wf::v1::SessionHistory history;
        pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(connection);
        const pqxx::result session = tx.exec_params(
            "SELECT turn_count, (extract(epoch FROM created_at) * 1000)::bigint,"
            " (extract(epoch FROM updated_at) * 1000)::bigint"
            " FROM sessions WHERE session_id = $1",
            session_id);
        if (session.empty()) {
          return Error{ErrorCode::kSessionNotFound, "session " + session_id + " not found"};
        }
        history.set_session_id(session_id);
        history.set_turn_count(session[0][0].as<std::uint32_t>());
        history.set_created_unix_ms(session[0][1].as<std::int64_t>());
        history.set_updated_unix_ms(session[0][2].as<std::int64_t>());
        const pqxx::result rows =
            tx.exec_params(std::string(kSelectMessages) + " ORDER BY seq", session_id);
        if (Status status = ReadMessages(rows, *history.mutable_messages()); !status.ok()) {
          return status.error();
        }
        // Turns cut short: their assistant messages are partial answers, marked as such.
        const pqxx::result cut_short = tx.exec_params(
            "SELECT run_id, status = 'cancelled' FROM runs"
            " WHERE session_id = $1 AND status IN ('cancelled', 'error')",
            session_id);
        if (!cut_short.empty()) {
          std::unordered_map<std::string, bool> cancelled_by_run;  // run id -> cancelled?
          for (const pqxx::row& row : cut_short) {
            cancelled_by_run.emplace(row[0].as<std::string>(), row[1].as<bool>());
          }
          for (wf::v1::ChatMessage& message : *history.mutable_messages()) {
            if (message.role() != "assistant") continue;
            auto run = cancelled_by_run.find(message.run_id());
            if (run == cancelled_by_run.end()) continue;
            if (run->second) {
              message.set_cancelled(true);
            } else {
              message.set_failed(true);
            }
          }
        }
        tx.commit();
        return history;
      },
      PgRetry::kIdempotent);
}

Result<bool> SessionStore::DeleteSession(const std::string& session_id) {
  if (Status status = CheckSessionId(session_id); !status.ok()) return status.error();
  // PostgreSQL first: a load that read it before this point cannot re-warm Redis afterwards,
  // because the drop below bumps the version that re-warming checks.
  Result<bool> deleted = pg_->Run(
      [&](pqxx::connection& connection) {
        pqxx::work tx(connection);
        // After the stores of this session in progress, before any that comes later
        // (006_delete_serialized.sql): what they stored is seen and deleted here, and they see
        // the tombstone.
        tx.exec_params("SELECT wf_lock_session_exclusive($1)", session_id);
        // The tombstone first, in the same transaction: a turn that started before now and is
        // stored later is refused by wf_append_turn (004_session_deletions.sql).
        const std::int64_t now = NowUnixMs();
        tx.exec_params(
            "INSERT INTO session_deletions (session_id, deleted_ms) VALUES ($1, $2)"
            " ON CONFLICT (session_id) DO UPDATE"
            " SET deleted_ms = GREATEST(session_deletions.deleted_ms, EXCLUDED.deleted_ms)",
            session_id, now);
        tx.exec_params("DELETE FROM session_deletions WHERE deleted_ms < $1",
                       now - kTombstoneLifeMs);
        const pqxx::result result =
            tx.exec_params("DELETE FROM sessions WHERE session_id = $1", session_id);
        tx.commit();
        return result.affected_rows() > 0;
      },
      PgRetry::kIdempotent);
  if (!deleted) return deleted;
  hot_sessions_.Remove(session_id);  // new again: its next turn may skip the PostgreSQL read
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  // A turn holding the session's lock (its first, not stored yet) counts as the session.
  Result<RedisReply> dropped = Eval(kDropScript, {keys.history, keys.runs, keys.version, keys.lock},
                                    {std::to_string(options_.ttl.count())});
  if (!dropped) {
    MarkStale(session_id);
    return Error{ErrorCode::kUnavailable,
                 "session " + session_id + " deleted from PostgreSQL but Redis failed (" +
                     dropped.error().message + "); retry to clear the hot copy"};
  }
  return *deleted || dropped->integer > 0;
}

Result<bool> SessionStore::TryLock(const std::string& session_id, const std::string& owner,
                                   std::chrono::milliseconds lease) {
  if (Status status = CheckLockArgs(session_id, owner, lease); !status.ok()) {
    return status.error();
  }
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  Result<RedisReply> reply =
      Eval(kTryLockScript, {keys.lock}, {owner, std::to_string(lease.count())});
  if (!reply) return std::move(reply).error();
  return reply->integer == 1;
}

Status SessionStore::RenewLock(const std::string& session_id, const std::string& owner,
                               std::chrono::milliseconds lease) {
  if (Status status = CheckLockArgs(session_id, owner, lease); !status.ok()) return status;
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  Result<RedisReply> reply =
      Eval(kRenewScript, {keys.lock}, {owner, std::to_string(lease.count())});
  if (!reply) return reply.error();
  if (reply->integer == 0) {
    return Status(ErrorCode::kSessionBusy,
                  "the lock of session " + session_id + " is held by another owner");
  }
  if (reply->integer == 2) {
    spdlog::warn("session store: the lock of session {} was gone while {} held it: taken again",
                 session_id, owner);
  }
  return Status::Ok();
}

Status SessionStore::LeaveQueue(const std::string& session_id, const std::string& owner) {
  if (Status status = CheckLockArgs(session_id, owner, std::chrono::milliseconds{1});
      !status.ok()) {
    return status;
  }
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  Result<RedisReply> reply = Eval(kLeaveQueueScript, {keys.queue, keys.queue_leases}, {owner});
  if (!reply) return reply.error();
  return Status::Ok();
}

Status SessionStore::Unlock(const std::string& session_id, const std::string& owner) {
  if (Status status = CheckLockArgs(session_id, owner, std::chrono::milliseconds{1});
      !status.ok()) {
    return status;
  }
  const SessionKeys keys = SessionKeys::For(options_.key_prefix, session_id);
  Result<RedisReply> reply = Eval(kUnlockScript, {keys.lock}, {owner});
  if (!reply) return reply.error();
  return Status::Ok();
}

Result<std::optional<SessionStore::StoredRun>> SessionStore::FindRun(const std::string& run_id) {
  if (run_id.empty() || run_id.size() > kMaxRunIdBytes) {
    return Error{ErrorCode::kBadRequest, "run_id must be 1-128 bytes"};
  }
  const std::string id = SanitizeText(run_id);  // as NormalizeTurn stores it
  return pg_->Run(
      [&](pqxx::connection& connection) -> Result<std::optional<StoredRun>> {
        pqxx::nontransaction tx(connection);
        // The run, then its messages in order (LEFT JOIN: a run may have none).
        const pqxx::result rows = tx.exec_params(
            "SELECT r.session_id, r.status, COALESCE(m.role, ''), COALESCE(m.content, ''),"
            " m.tool_calls IS NOT NULL FROM runs r LEFT JOIN messages m"
            " ON m.session_id = r.session_id AND m.run_id = r.run_id"
            " WHERE r.run_id = $1 ORDER BY m.seq",
            id);
        if (rows.empty()) return std::optional<StoredRun>();
        StoredRun run;
        run.session_id = rows[0][0].as<std::string>();
        run.status = rows[0][1].as<std::string>();
        bool seen_user = false;
        for (const pqxx::row& row : rows) {
          const std::string role = row[2].as<std::string>();
          if (role == "user" && !seen_user) {
            seen_user = true;
            run.user_message = row[3].as<std::string>();
          } else if (role == "assistant" && !row[4].as<bool>()) {
            run.answer = row[3].as<std::string>();
            run.has_answer = true;
          }
        }
        return std::optional<StoredRun>(std::move(run));
      },
      PgRetry::kIdempotent);
}

bool SessionStore::AppendTurnToHotCopy(const wf::v1::TurnRecord& record,
                                       const std::string& unlock_owner) {
  wf::v1::TurnRecord turn = record;
  if (Status status = NormalizeTurn(turn, NowUnixMs()); !status.ok()) {
    spdlog::warn("session store: turn {} not appended to the hot copy: {}", turn.run_id(),
                 status.error().message);
    return false;
  }
  return AppendToRedis(turn.session_id(), turn.run_id(), /*first_seq=*/-1, turn.messages(),
                       unlock_owner);
}

bool SessionStore::Healthy() {
  const std::array<std::string_view, 1> ping = {"PING"};
  return RedisCommand(ping).ok() && pg_->Ping();
}

}  // namespace wf
