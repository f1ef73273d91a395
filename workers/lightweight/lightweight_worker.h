#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "io/event_loop.h"
#include "io/timer.h"
#include "lightweight/flow_runtime.h"
#include "lightweight/recent_answers.h"
#include "lightweight/turn_batcher.h"
#include "matching/flow_matcher.h"
#include "nats/connection.h"
#include "nats/end_confirmer.h"
#include "nats/jetstream.h"
#include "nats/micro_service.h"
#include "wf/v1/query.pb.h"

namespace wf {

/// Subjects of the wire contract under a configurable prefix ("wf").
struct Subjects {
  explicit Subjects(const std::string& prefix)
      : query(prefix + ".query"),
        heavy_query(prefix + ".heavy.query"),
        flow_match(prefix + ".flow.match"),
        flow_execute(prefix + ".flow.execute"),
        tool_execute(prefix + ".tool.execute"),
        history_append(prefix + ".history.append"),
        query_replay(prefix + ".query.replay") {}
  std::string query, heavy_query, flow_match, flow_execute, tool_execute, history_append,
      query_replay;
};

/// The lightweight worker: queue group "lightweight" on `wf.query` (match, run the flow, reply;
/// forward unmatched queries to JetStream for the agent pool), plus `wf.flow.match`,
/// `wf.flow.execute`, `wf.tool.execute` and `$SRV.*` discovery.
///
/// Threads: `loops` event-loop threads, each with its own NATS connection (in the queue group)
/// and HTTP client. A loop reads a query, matches it, sends the business API call, and publishes
/// the reply when the answer arrives, all on its own thread: no hand-off between threads on the
/// flow path. The connection given to Start carries the rest (JetStream, `$SRV`, pool pings).
class LightweightWorker {
 public:
  struct Options {
    /// Event-loop threads (each: a NATS connection subscribed to every endpoint, an HTTP client).
    int loops = 1;
    std::string version = "0.1.0";
    /// How flow turns are batched onto `wf.history.append`.
    TurnBatcherOptions history;
  };

  static Result<std::unique_ptr<LightweightWorker>> Start(std::shared_ptr<const Config> config,
                                                          NatsConnection& conn, Options options);
  ~LightweightWorker();

  /// Stops taking messages and waits (up to `grace`, all told) for flows in flight to answer
  /// and the last turn batch to be acknowledged. Once: later calls return at once.
  void Shutdown(std::chrono::milliseconds grace);

  /// True while the main connection and every loop's connection are up.
  bool Connected() const;
  /// Prometheus text for the admin port.
  std::string MetricsText() const;
  const MicroService& service() const { return *service_; }

 private:
  LightweightWorker(std::shared_ptr<const Config> config, NatsConnection& conn);

  void OnQuery(const NatsMsgView& msg);
  void OnMatch(const NatsMsgView& msg);
  void OnFlowExecute(const NatsMsgView& msg);
  void OnToolExecute(const NatsMsgView& msg);
  /// `<prefix>.query.replay` (ReplayRequest): sends again the kept last events of those queries.
  void OnReplay(const NatsMsgView& msg);
  /// Keeps the last event sent for a query (RecentAnswers), for a later ReplayRequest.
  void Remember(const std::string& request_id, std::string reply, std::string payload,
                NatsHeaders headers);

  /// Publishes a terminal `error` event for `request_id` on `reply`.
  void ReplyError(const std::string& reply, const std::string& request_id, const Error& error);
  void ForwardToAgents(wf::v1::QueryRequest request, const std::string& reply,
                       const std::string& traceparent);
  void Enqueue(wf::v1::QueryRequest request, const std::string& traceparent);
  /// Appends the turn as answered by `event` (final: status ok with the answer, cut to a
  /// bounded size; error: status error with a message saying what failed) to the history.
  void RecordFlowTurn(const wf::v1::QueryRequest& request, const wf::v1::QueryEvent& event,
                      const std::string& flow_id, int64_t started_ms);
  /// Publishes one TurnRecordBatch (TurnBatcher's send callback).
  void PublishTurns(std::string payload, std::size_t turns);
  /// Waits until no call or publish is in flight, or `until`.
  void WaitIdle(std::chrono::steady_clock::time_point until) const;
  /// The connection to answer on: the calling loop's own, else the main one.
  NatsConnection& ReplyConn();

  /// When a loop's NATS connection was last lost and restored: flow answers sent then are
  /// confirmed (see OnQuery's flow callback). Shared with the connections' callbacks.
  struct OutageClock {
    std::atomic<int> down{0};                  // loop connections disconnected now
    std::atomic<int64_t> restored_unix_ms{0};  // the last reconnect of any of them
    /// Down now, or back for less than `window`.
    bool Recent(std::chrono::milliseconds window) const;
  };

  std::shared_ptr<const Config> config_;
  NatsConnection& conn_;
  Subjects subjects_;
  std::shared_ptr<const FlowMatcher> matcher_;
  // Declared before everything that runs on them: destroyed after the clients and connections.
  std::vector<std::unique_ptr<EventLoopThread>> loops_;
  std::vector<std::unique_ptr<NatsConnection>> loop_conns_;  // loop_conns_[i] runs on loops_[i]
  std::shared_ptr<OutageClock> outages_ = std::make_shared<OutageClock>();
  TimerThread timer_;
  /// Sends a flow's answer until the gateway confirms it (QueryRequest.confirm_end), but only
  /// around a NATS reconnect (OutageClock): otherwise the flow path would pay a message more per
  /// request for a window of milliseconds. Before runtime_: flow callbacks use it.
  std::unique_ptr<EndConfirmer> confirmer_;
  std::unique_ptr<FlowRuntime> runtime_;
  std::unique_ptr<JetStream> js_;
  std::unique_ptr<TurnBatcher> history_;  // After js_: its destructor may still publish.
  std::unique_ptr<MicroService> service_;
  std::unique_ptr<PoolMonitor> pools_;
  EndpointStats* query_stats_ = nullptr;
  EndpointStats* match_stats_ = nullptr;
  EndpointStats* flow_stats_ = nullptr;
  EndpointStats* tool_stats_ = nullptr;
  std::vector<NatsSubscription> subs_;
  RecentAnswers recent_{RecentAnswers::Options{}};
  NatsSubscription replay_sub_;  // on the main connection, no queue group: every worker answers
  std::atomic<uint64_t> replayed_{0};
  std::atomic<uint64_t> flows_answered_{0}, forwarded_{0}, no_agent_{0}, errors_{0};
  std::atomic<uint64_t> turns_recorded_{0}, turns_unrecorded_{0}, history_batches_{0};
  std::atomic<int64_t> in_flight_{0};
  bool shut_down_ = false;  // Shutdown ran (the owner's thread only)
};

/// A new request id (NUID-based, URL- and subject-safe).
std::string NewRequestId();

}  // namespace wf
