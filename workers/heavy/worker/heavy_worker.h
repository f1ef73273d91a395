#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent/agent_turn.h"
#include "agent/executor.h"
#include "config/config.h"
#include "io/timer.h"
#include "llm/llm_client.h"
#include "nats/connection.h"
#include "nats/end_confirmer.h"
#include "nats/jetstream.h"
#include "nats/micro_service.h"
#include "session/session_store.h"
#include "wf/v1/query.pb.h"
#include "worker/history_order.h"
#include "worker/nats_tool_runner.h"
#include "worker/pull_intake.h"

namespace wf {

/// The agent worker: a durable pull consumer "heavy" on JetStream stream WF_HEAVY
/// (`<prefix>.heavy.query`), taking only as many turns as `concurrency`; each turn runs as an
/// asynchronous AgentTurn (no thread per turn). Acks a message only after its turn is stored
/// (PostgreSQL, then Redis) and, for a query with confirm_end, its last event confirmed or given
/// up (EndConfirmer); sends in-progress acks until then so a live worker keeps it and a dead one
/// hands it back after ack_wait (another worker then answers from the store). Also: consumer
/// "history" on WF_HISTORY (flow turns recorded by the lightweight pool),
/// `<prefix>.session.get|delete` (queue "heavy"),
/// `<prefix>.cancel.<request_id>`, and `$SRV.*` discovery as service "heavy".
///
/// A turn whose session has no hot copy and that this worker has not seen lately starts ahead
/// of PostgreSQL's answer to whether the session exists, as a new session (see Ahead): its LLM
/// call is on its way while PostgreSQL answers, and nothing it brings is acted on until then.
///
/// Threads: the intake thread, an event loop reading its own NATS connection, which pulls the
/// queries (PullIntake) and starts the last turn of each read itself; a fetch thread for
/// WF_HISTORY (blocking JetStream fetch); an executor pool that
/// starts turns (session lock, history) and runs the agent's later rounds; a session pool that
/// answers session requests (GET and DELETE of a history), so that a burst of them never delays
/// a turn; a store pool that stores finished turns and WF_HISTORY records (PostgreSQL, then
/// Redis) on fewer threads than there are PostgreSQL connections, so a PostgreSQL slow to write
/// holds up stores but not turn starts; NATS delivery threads for cancel/session requests (which
/// only post work); curl and timer threads driving the agent loop.
class HeavyWorker {
 public:
  struct Options {
    int concurrency = 64;      ///< Turns in flight in this process.
    int executor_threads = 4;  ///< Threads starting turns and running agent rounds.
    /// Threads answering session requests (wf.session.get / .delete).
    int session_threads = 1;
    /// Session requests waiting for a session thread at most; more are refused at once with
    /// `unavailable` (the NATS subscription's own limits do not bound what was handed over).
    int max_queued_session_requests = 256;
    /// Threads storing finished turns and flow-turn records. With the session threads, fewer
    /// than the session store's PostgreSQL connections, so stores and session requests waiting
    /// on PostgreSQL never take the last connection a turn start needs to read a history.
    int store_threads = 3;
    std::chrono::milliseconds ack_wait{30000};
    int max_deliver = 3;
    std::chrono::milliseconds in_progress_every{10000};
    std::string version = "0.1.0";
  };

  static Result<std::unique_ptr<HeavyWorker>> Start(std::shared_ptr<const Config> config,
                                                    NatsConnection& conn, SessionStore& store,
                                                    LlmClient& llm, Timer& timer, Options options);
  ~HeavyWorker();

  /// Stops fetching, lets turns in flight finish for up to `grace`, then hands the rest back to
  /// JetStream (NAK: redelivered to another worker at once) and returns.
  void Shutdown(std::chrono::milliseconds grace);

  /// /ready: NATS connected, Redis and PostgreSQL reachable.
  bool Ready(std::string* why);
  std::string MetricsText() const;
  int active_turns() const { return active_count_.load(); }

 private:
  struct Turn;
  class TurnEvents;
  struct JsMessage;
  struct Ahead;

  HeavyWorker(std::shared_ptr<const Config> config, NatsConnection& conn, SessionStore& store,
              LlmClient& llm, Timer& timer, Options options);
  Status Setup();
  /// The WF_HISTORY fetch thread.
  void FetchHistoryLoop();
  /// The queries one read of the intake brought (intake thread): each registered
  /// (OnQueryMessage) and started (BeginTurn), the last on this thread.
  void OnQueryMessages(std::vector<natsMsg*> messages);
  /// Decodes and registers a query; returns the turn to start (BeginTurn), or null when the
  /// message was settled here (undecodable, or the id of a turn running here).
  std::shared_ptr<Turn> OnQueryMessage(natsMsg* msg);
  /// A query whose request id names a turn `running` here: a redelivery of it is kept in
  /// progress; another message is refused (`duplicate_request_id`) on its own reply subject,
  /// or dropped when it shares the running turn's (which answers it). Never waits.
  void OnRequestIdRunning(const std::shared_ptr<Turn>& turn, const Turn& running);
  void BeginTurn(const std::shared_ptr<Turn>& turn);
  void AcquireLockThenRun(const std::shared_ptr<Turn>& turn);
  bool AnsweredFromStore(const std::shared_ptr<Turn>& turn);
  /// With the session lock held and the history read: a turn whose session already holds its
  /// run id is answered from the store (or refused); the others run (RunAgent).
  void RunLocked(const std::shared_ptr<Turn>& turn,
                 Result<std::vector<wf::v1::ChatMessage>> history);
  /// Runs the turn with the session lock held and its history loaded (or unlocks and hands the
  /// turn back when the history could not be read). With `deferred` (a hot-copy miss not yet
  /// answered by PostgreSQL), ahead of that answer with an empty history (see Ahead).
  void RunAgent(const std::shared_ptr<Turn>& turn, Result<std::vector<wf::v1::ChatMessage>> history,
                std::shared_ptr<SessionStore::DeferredLookup> deferred = nullptr);
  /// A turn started ahead whose session PostgreSQL holds after all (executor thread): ends its
  /// first agent without a trace and runs it again with the stored history, unless it ended
  /// meanwhile.
  void RunAgainWithStoredHistory(const std::shared_ptr<Turn>& turn,
                                 const std::shared_ptr<Ahead>& ahead,
                                 const SessionStore::DeferredLookup& deferred);
  void FinishTurn(const std::shared_ptr<Turn>& turn, wf::v1::TurnRecord record);
  /// Removes the turn from this worker's active table and frees its slot. Idempotent. Called
  /// before the turn's final or error event is published: a client that has its answer may at
  /// once send another query with the same request id (a repeat, answered from the store, or a
  /// reuse, refused), which must not be taken for a redelivery of a turn still running here
  /// (those are kept in progress, unanswered, until JetStream's ack wait).
  void ReleaseTurn(const std::shared_ptr<Turn>& turn);
  /// Publishes `turn`'s `error` event (after its last event), nothing else. Any thread.
  void PublishError(const Turn& turn, ErrorCode code, const std::string& message);
  /// Counts the turn in the `query` endpoint's $SRV.STATS once (the first call wins): its time
  /// since its message came in, and `error` when it failed. Any thread.
  void CountTurn(Turn& turn, std::string_view error);
  /// Releases the turn (ReleaseTurn), then publishes its `error` event; counts it as failed.
  void EmitTerminalError(const std::shared_ptr<Turn>& turn, ErrorCode code,
                         const std::string& message);
  /// EmitTerminalError, then terminates the message (no redelivery) and releases the turn.
  void RejectTurn(const std::shared_ptr<Turn>& turn, ErrorCode code, const std::string& message);
  /// Publishes one event of `turn` on its reply subject with its attempt, made to fit in a NATS
  /// message first (FitEvent); logs a failure. Any thread.
  bool PublishEvent(const Turn& turn, wf::v1::QueryEvent event);
  /// The connection's largest payload (bytes).
  std::size_t MaxPayload() const;
  /// Hands a finished turn to WF_HISTORY and waits (executor thread, up to 5 s) until JetStream
  /// acknowledged it. Errors: kUnavailable and JetStream's errors.
  Status PublishHistoryRecord(const wf::v1::TurnRecord& record);
  /// Remembers a cancelled request id not running here (it may still be queued) until the
  /// longest turn could have ended; bounded to kMaxRememberedCancels ids.
  void RememberCancel(const std::string& request_id);
  bool WasCancelled(const std::string& request_id);
  /// A WF_HISTORY message and its turns, decoded once.
  struct HistoryItem {
    explicit HistoryItem(std::shared_ptr<JsMessage> m) : msg(std::move(m)) {}
    std::shared_ptr<JsMessage> msg;
    wf::v1::TurnRecordBatch records;
    bool parsed = false;  // False: undecodable, or a turn without session or run id.
  };
  /// Decodes a WF_HISTORY message and stores it now (on the store pool) or after the records
  /// ahead of it that share a session with it (HistoryOrder), or behind the held ones.
  void OnHistoryMessage(natsMsg* msg);
  /// Stores `item` (store pool), then starts what waited for it. When PostgreSQL failed, keeps
  /// it, and everything waiting, in stream order for the retry (2 s, doubling to 10 s, no
  /// limit): while records are held, new ones queue behind them, so a session's turns are
  /// stored in the order they were published.
  void StoreInOrder(const std::shared_ptr<HistoryItem>& item);
  /// Stores one WF_HISTORY message. True when it is settled (acked, or terminated as
  /// undecodable or refused); false when PostgreSQL failed (not settled).
  bool StoreHistoryItem(const HistoryItem& item);
  /// Stores the held messages oldest first until one fails (then re-arms) or none is left; not
  /// while a record taken beside them is still being stored.
  void RetryHeldHistory();
  /// Runs RetryHeldHistory on the store pool after history_retry_delay_. history_mu_ held.
  void ArmHistoryRetry();
  void OnCancel(const NatsMsgView& msg);
  /// JetStream's advisory that a query used up its max deliveries without being acked (the
  /// workers that had it died or handed it back): its client gets an error event instead of
  /// silence until its deadline (AnswerExhaustedQuery, on a session thread).
  void OnDeliveriesExhausted(const NatsMsgView& msg);
  /// Reads query `stream_seq` from WF_HEAVY and, unless its turn was stored or runs here,
  /// publishes an `unavailable` error event to its reply subject. Blocks (NATS, PostgreSQL).
  void AnswerExhaustedQuery(std::uint64_t stream_seq, std::uint64_t deliveries);
  void OnSessionRequest(const NatsMsgView& msg, bool del);
  /// Records the session request in the service stats and publishes `out` on `reply`.
  void ReplySession(const std::string& reply, const wf::v1::SessionReply& out,
                    std::chrono::nanoseconds took, std::string_view session_id);
  /// Every in_progress_every (timer thread): in-progress acks for the turns running here, and
  /// their session locks' leases renewed on lease_executor_ (taken again when lost).
  void TickInProgress();
  /// Every second: hot copies a Redis failure left stale are dropped once Redis answers
  /// (SessionStore::StaleHotCopies), on the lease thread.
  void TickHotCopies();
  /// Stops renewing the turn's lease; called before the turn gives its session lock up.
  void StopLeaseRenewal(Turn& turn);

  std::shared_ptr<const Config> config_;
  NatsConnection& conn_;
  SessionStore& store_;
  LlmClient& llm_;
  Timer& timer_;
  Options options_;
  std::string prefix_;
  std::unique_ptr<JetStream> js_;
  std::unique_ptr<ThreadPoolExecutor> executor_;          ///< Turn starts, agent rounds.
  std::unique_ptr<ThreadPoolExecutor> session_executor_;  ///< Session GET and DELETE.
  std::atomic<int> session_requests_queued_{0};           ///< Posted, not yet started.
  std::unique_ptr<ThreadPoolExecutor> store_executor_;  ///< FinishTurn, WF_HISTORY records.
  std::unique_ptr<ThreadPoolExecutor> lease_executor_;  ///< Lock renewals only (Redis).
  std::unique_ptr<NatsToolRunner> tools_;
  std::unique_ptr<MicroService> service_;
  EndpointStats* query_stats_ = nullptr;
  EndpointStats* session_stats_ = nullptr;
  natsSubscription* history_sub_ = nullptr;
  std::vector<NatsSubscription> subs_;
  std::unique_ptr<EventLoopThread> intake_loop_;  ///< Runs intake_conn_ and intake_.
  std::unique_ptr<NatsConnection> intake_conn_;
  std::unique_ptr<PullIntake> intake_;  ///< Pulls the queries (consumer "heavy").
  /// Sends turns' last events until confirmed (QueryRequest.confirm_end); confirmations are
  /// read on intake_conn_.
  std::unique_ptr<EndConfirmer> confirmer_;
  std::thread history_fetcher_;
  std::atomic<bool> fetching_{true};
  std::mutex tick_mu_;   // Guards ticking_ and tick_task_.
  bool ticking_ = true;  // False once Shutdown stopped the in-progress tick.
  Timer::TaskId tick_task_ = 0;
  Timer::TaskId hot_copy_task_ = 0;  // TickHotCopies, under tick_mu_

  mutable std::mutex mu_;
  std::condition_variable slots_cv_;
  std::unordered_map<std::string, std::shared_ptr<Turn>> active_;  // by request id
  // Messages of ended turns whose last event awaits confirmation (JsMessage::Hold): kept in
  // progress by TickInProgress until the EndConfirmer settles them.
  std::unordered_map<const JsMessage*, std::shared_ptr<JsMessage>> held_messages_;
  // Cancelled request ids not running here, with when they are forgotten (RememberCancel).
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> cancelled_ids_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> cancel_order_;
  std::atomic<int> active_count_{0};
  std::atomic<bool> shutting_down_{false};

  std::atomic<uint64_t> turns_started_{0}, turns_ok_{0}, turns_failed_{0}, turns_cancelled_{0},
      redeliveries_{0}, handed_back_{0}, history_stored_{0}, store_failures_{0}, deferred_turns_{0};
  std::atomic<int> history_in_flight_{0};  // History messages being stored (or held).
  std::atomic<int> turns_storing_{0};      // Finished turns posted to store_executor_, not done.
  std::atomic<int> lookups_pending_{0};    // Turns started ahead, PostgreSQL's answer to come.
  std::atomic<uint64_t> turns_started_ahead_{0}, restarted_turns_{0};
  static constexpr std::chrono::milliseconds kHistoryRetryFirst{2000};
  static constexpr std::chrono::milliseconds kHistoryRetryMax{10000};
  std::mutex history_mu_;
  // WF_HISTORY messages PostgreSQL could not store yet, by stream sequence (StoreInOrder).
  std::map<uint64_t, std::shared_ptr<HistoryItem>> held_history_;
  // Which records may be stored now, and the records waiting for others, by stream sequence.
  HistoryOrder history_order_;
  std::map<uint64_t, std::shared_ptr<HistoryItem>> waiting_history_;
  Timer::TaskId history_retry_task_ = 0;  // 0 = no retry armed.
  std::chrono::milliseconds history_retry_delay_ = kHistoryRetryFirst;
};

}  // namespace wf
