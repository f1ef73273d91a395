#include "lightweight/lightweight_worker.h"

#include <google/protobuf/arena.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "codec/json_limits.h"
#include "codec/json_struct.h"
#include "protocol/query_rules.h"
#include "text/utf8.h"
#include "wf/v1/session.pb.h"

namespace wf {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::nanoseconds Since(Clock::time_point start) { return Clock::now() - start; }

/// Room left in a reply for its NATS headers (request id, trace context) under the max payload.
constexpr std::size_t kHeaderRoom = 1024;
/// Longest assistant message a flow turn records in the history: a turn far larger would not fit
/// a history batch (and no prompt wants it whole).
constexpr std::size_t kMaxRecordedAnswerBytes = 64 * 1024;

/// How long after a NATS reconnect flow answers are still sent until confirmed: the gateway may
/// resubscribe later than this worker, and its answers sent meanwhile would reach nobody.
constexpr std::chrono::milliseconds kConfirmAfterReconnect{30000};

/// A request id is used as a NATS subject token and header value: keep it to a safe alphabet.
bool ValidRequestId(const std::string& id) { return IsValidQueryRequestId(id); }

/// Copies `error` into a wire `Error` (the message made valid UTF-8: it may quote upstream text).
void SetWireError(const Error& error, wf::v1::Error* out) {
  out->set_code(std::string(WireName(error.code)));
  out->set_message(ToValidUtf8(error.message));
}

/// The most bytes a message's data (a reply, a forwarded query) may have on `conn`.
std::size_t MaxReplyData(NatsConnection& conn) {
  const std::size_t max = conn.MaxPayload();
  return max > kHeaderRoom ? max - kHeaderRoom : max;
}

Error TooLarge(std::size_t size, std::size_t max, const char* what) {
  return Error{ErrorCode::kResponseTooLarge, std::string(what) + " is " + std::to_string(size) +
                                                 " bytes encoded, more than the " +
                                                 std::to_string(max) +
                                                 " bytes a NATS message may carry here"};
}

/// `event` encoded; if it does not fit `max` bytes, an `error` event (response_too_large) for
/// the same request instead, so the caller always gets an answer it can receive. `event` is
/// then replaced by that error event too (what was sent is what is recorded).
std::string EncodeEvent(wf::v1::QueryEvent& event, std::size_t max) {
  std::string bytes = event.SerializeAsString();
  if (bytes.size() <= max) return bytes;
  Error e = TooLarge(bytes.size(), max, "the answer");
  spdlog::warn("request {}: {}", event.request_id(), e.message);
  event.clear_kind();
  SetWireError(e, event.mutable_error());
  return event.SerializeAsString();
}

/// A ToolResult encoded, or ok=false response_too_large in its place when it does not fit.
std::string EncodeToolResult(wf::v1::ToolResult& result, std::size_t max) {
  std::string bytes = result.SerializeAsString();
  if (bytes.size() <= max) return bytes;
  Error e = TooLarge(bytes.size(), max, "the tool result");
  spdlog::warn("tool {} call {}: {}", result.name(), result.call_id(), e.message);
  result.set_ok(false);
  result.clear_content();
  SetWireError(e, result.mutable_error());
  return result.SerializeAsString();
}

/// Publishes a reply; a failure (connection gone, payload refused) is logged, not dropped silently.
void PublishReply(NatsConnection& conn, const std::string& subject, const std::string& payload,
                  const NatsHeaders& headers, std::string_view what) {
  Status sent = conn.Publish(subject, payload, {}, headers);
  if (!sent.ok()) {
    spdlog::warn("{} reply ({} bytes) to {} not sent: {}", what, payload.size(), subject,
                 sent.error().message);
  }
}

/// The one event that answers a flow call (wf.query or wf.flow.execute): `final` or `error`.
wf::v1::QueryEvent FlowEvent(const std::string& request_id, const std::string& session_id,
                             const std::string& flow_id, const Result<CallOutcome>& outcome) {
  wf::v1::QueryEvent event;
  event.set_request_id(request_id);
  event.set_seq(1);
  if (!outcome.ok()) {
    SetWireError(outcome.error(), event.mutable_error());
    return event;
  }
  auto* final = event.mutable_final();
  final->set_answer(outcome->answer);
  final->set_route("flow");
  final->set_flow_id(flow_id);
  final->set_run_id(request_id);
  final->set_session_id(session_id);
  final->set_upstream_status(outcome->upstream_status);
  *final->mutable_parameters() = JsonToStruct(outcome->parameters);
  return event;
}

}  // namespace

bool LightweightWorker::OutageClock::Recent(std::chrono::milliseconds window) const {
  if (down.load(std::memory_order_relaxed) > 0) return true;
  const int64_t restored = restored_unix_ms.load(std::memory_order_relaxed);
  return restored != 0 && UnixMillisNow() - restored < window.count();
}

std::string NewRequestId() {
  std::string inbox = NatsConnection::NewInbox();  // "_INBOX.<22-char NUID>"
  return inbox.substr(inbox.rfind('.') + 1);
}

LightweightWorker::LightweightWorker(std::shared_ptr<const Config> config, NatsConnection& conn)
    : config_(std::move(config)), conn_(conn), subjects_(config_->subject_prefix) {}

LightweightWorker::~LightweightWorker() {
  Shutdown(std::chrono::milliseconds(2000));
  // Calls still pending after the grace complete (kUnavailable) while the client is destroyed;
  // their callbacks use the stats, the batcher and the loop connections, so the runtime goes
  // first, while all of those still exist.
  runtime_.reset();
}

bool LightweightWorker::Connected() const {
  if (!conn_.Connected()) return false;
  for (const auto& loop_conn : loop_conns_) {
    if (!loop_conn->Connected()) return false;
  }
  return true;
}

Result<std::unique_ptr<LightweightWorker>> LightweightWorker::Start(
    std::shared_ptr<const Config> config, NatsConnection& conn, Options options) {
  std::unique_ptr<LightweightWorker> self(new LightweightWorker(std::move(config), conn));
  auto matcher = FlowMatcher::Build(self->config_->flows);
  if (!matcher.ok()) return matcher.error();
  self->matcher_ = std::move(matcher).value();
  std::vector<EventLoop*> loops;
  for (int i = 0; i < std::max(1, options.loops); ++i) {
    self->loops_.push_back(std::make_unique<EventLoopThread>("wf-lw-loop-" + std::to_string(i)));
    loops.push_back(&self->loops_.back()->loop());
    NatsOptions nats_options;
    nats_options.url = conn.url();
    nats_options.name = "wf-lightweight-loop";
    nats_options.loop = loops.back();
    nats_options.on_disconnected = [outages = self->outages_] {
      outages->down.fetch_add(1, std::memory_order_relaxed);
    };
    nats_options.on_reconnected = [outages = self->outages_] {
      if (outages->down.fetch_sub(1, std::memory_order_relaxed) <= 0) outages->down.store(0);
      outages->restored_unix_ms.store(UnixMillisNow(), std::memory_order_relaxed);
    };
    auto loop_conn = NatsConnection::Connect(nats_options);
    if (!loop_conn.ok()) return loop_conn.error();
    self->loop_conns_.push_back(std::move(loop_conn).value());
  }
  self->confirmer_ =
      std::make_unique<EndConfirmer>(conn, conn, self->timer_, EndConfirmer::Options{});
  if (auto s = self->confirmer_->Start(); !s.ok()) return s.error();
  auto runtime = FlowRuntime::Create(self->config_, loops, MaxReplyData(conn));
  if (!runtime.ok()) return runtime.error();
  self->runtime_ = std::move(runtime).value();

  auto js = JetStream::Create(conn);
  if (!js.ok()) return js.error();
  self->js_ = std::move(js).value();
  StreamSpec heavy{HeavyStreamName(self->config_->subject_prefix), {self->subjects_.heavy_query}};
  heavy.max_age = std::chrono::hours(1);  // agent turns have deadlines far below this
  if (auto s = self->js_->EnsureStream(heavy); !s.ok()) return s.error();
  StreamSpec history{HistoryStreamName(self->config_->subject_prefix),
                     {self->subjects_.history_append}};
  history.max_age = std::chrono::hours(24 * 7);
  if (auto s = self->js_->EnsureStream(history); !s.ok()) return s.error();
  LightweightWorker* owner = self.get();
  self->history_ = std::make_unique<TurnBatcher>(options.history,
                                                 [owner](std::string payload, std::size_t turns) {
                                                   owner->PublishTurns(std::move(payload), turns);
                                                 });

  self->service_ = std::make_unique<MicroService>(conn, "lightweight", options.version,
                                                  "flow matching and execution, tools",
                                                  self->config_->subject_prefix);
  const std::string queue = "lightweight";
  self->query_stats_ = self->service_->AddEndpoint("query", self->subjects_.query, queue);
  self->match_stats_ = self->service_->AddEndpoint("flow_match", self->subjects_.flow_match, queue);
  self->flow_stats_ =
      self->service_->AddEndpoint("flow_execute", self->subjects_.flow_execute, queue);
  self->tool_stats_ =
      self->service_->AddEndpoint("tool_execute", self->subjects_.tool_execute, queue);

  self->pools_ = std::make_unique<PoolMonitor>(conn, self->config_->subject_prefix,
                                               std::vector<std::string>{"heavy"});
  if (auto s = self->pools_->Start(); !s.ok()) return s.error();

  LightweightWorker* w = self.get();
  for (auto& loop_conn : self->loop_conns_) {
    for (auto [subject, handler] :
         {std::pair{self->subjects_.query, &LightweightWorker::OnQuery},
          std::pair{self->subjects_.flow_match, &LightweightWorker::OnMatch},
          std::pair{self->subjects_.flow_execute, &LightweightWorker::OnFlowExecute},
          std::pair{self->subjects_.tool_execute, &LightweightWorker::OnToolExecute}}) {
      auto sub = loop_conn->Subscribe(
          subject, [w, handler](const NatsMsgView& m) { (w->*handler)(m); }, queue);
      if (!sub.ok()) return sub.error();
      w->subs_.push_back(std::move(sub).value());
    }
    if (auto s = loop_conn->Flush(std::chrono::milliseconds(2000)); !s.ok()) return s.error();
  }
  auto replay =
      conn.Subscribe(self->subjects_.query_replay, [w](const NatsMsgView& m) { w->OnReplay(m); });
  if (!replay.ok()) return replay.error();
  w->replay_sub_ = std::move(replay).value();
  if (auto s = self->service_->Start(); !s.ok()) return s.error();
  if (auto s = conn.Flush(std::chrono::milliseconds(2000)); !s.ok()) return s.error();
  spdlog::info("lightweight worker {} ready: {} flows ({} patterns), {} tools", w->service_->id(),
               w->config_->flows.size(), w->matcher_->pattern_count(), w->config_->tools.size());
  return self;
}

void LightweightWorker::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  // One deadline for everything; without a server a drain cannot complete, so do not wait on it.
  auto until = Clock::now() + grace;
  for (auto& sub : subs_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (!conn_.Connected()) left = std::chrono::milliseconds(50);  // The server is gone
    sub.Drain(std::max(left, std::chrono::milliseconds(1)));
  }
  subs_.clear();
  replay_sub_.Unsubscribe();
  // Flows still running record their turns as they finish: wait for them, then send the last
  // batch and wait for its acknowledgement.
  WaitIdle(until);
  if (history_) history_->Flush();
  WaitIdle(until);
  if (service_) service_->Stop();
  if (pools_) pools_->Stop();
  // Put the last replies on the wire: what is left of the grace, at least 100 ms, at most 1 s
  // (a flush without a server returns at once).
  const auto flush_time = [&until] {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    return std::clamp<std::chrono::milliseconds>(left, std::chrono::milliseconds(100),
                                                 std::chrono::milliseconds(1000));
  };
  for (auto& loop_conn : loop_conns_) (void)loop_conn->Flush(flush_time());
  // Flow answers sent around a reconnect are confirmed within milliseconds by a gateway that is
  // there; give them the same time.
  if (confirmer_) (void)confirmer_->WaitIdle(flush_time());
  (void)conn_.Flush(flush_time());
}

NatsConnection& LightweightWorker::ReplyConn() {
  for (std::size_t i = 0; i < loops_.size(); ++i) {
    if (loops_[i]->loop().InLoopThread()) return *loop_conns_[i];
  }
  return conn_;
}

void LightweightWorker::WaitIdle(Clock::time_point until) const {
  while (in_flight_.load() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void LightweightWorker::ReplyError(const std::string& reply, const std::string& request_id,
                                   const Error& error) {
  errors_.fetch_add(1, std::memory_order_relaxed);
  if (reply.empty()) return;
  wf::v1::QueryEvent event;
  event.set_request_id(request_id);
  event.set_seq(1);
  SetWireError(error, event.mutable_error());
  std::string payload = event.SerializeAsString();
  NatsHeaders headers{{kRequestIdHeader, request_id}};
  PublishReply(ReplyConn(), reply, payload, headers, "error");
  Remember(request_id, reply, std::move(payload), std::move(headers));
}

void LightweightWorker::Remember(const std::string& request_id, std::string reply,
                                 std::string payload, NatsHeaders headers) {
  recent_.Remember(request_id,
                   RecentAnswers::Answer{std::move(reply), std::move(payload), std::move(headers)},
                   RecentAnswers::Clock::now());
}

void LightweightWorker::OnReplay(const NatsMsgView& msg) {
  wf::v1::ReplayRequest request;
  if (!request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
    spdlog::warn("undecodable message on {}: ignored", msg.subject());
    return;
  }
  if (request.request_ids_size() > kMaxReplayRequestIds) {
    spdlog::warn("replay request for {} queries: only the first {} are looked up",
                 request.request_ids_size(), kMaxReplayRequestIds);
  }
  const auto now = RecentAnswers::Clock::now();
  std::size_t sent = 0;
  for (int i = 0; i < std::min(request.request_ids_size(), kMaxReplayRequestIds); ++i) {
    auto answer = recent_.Find(request.request_ids(i), now);
    if (!answer) continue;  // answered by another worker, long ago, or not yet
    PublishReply(conn_, answer->reply, answer->payload, answer->headers, "replayed");
    ++sent;
  }
  replayed_.fetch_add(sent, std::memory_order_relaxed);
  if (sent > 0) {
    spdlog::info("sent {} answer(s) again on request ({} asked)", sent, request.request_ids_size());
  }
}

void LightweightWorker::OnQuery(const NatsMsgView& msg) {
  auto started = Clock::now();
  int64_t started_ms = UnixMillisNow();
  wf::v1::QueryRequest request;
  const std::string reply(msg.reply());
  std::string request_id = msg.Header(kRequestIdHeader);
  if (!request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
    if (!ValidRequestId(request_id)) request_id = NewRequestId();
    ReplyError(reply, request_id, {ErrorCode::kBadMessage, "payload is not a wf.v1.QueryRequest"});
    query_stats_->Record(Since(started), "bad message");
    return;
  }
  if (ValidRequestId(request.request_id())) request_id = request.request_id();
  if (!ValidRequestId(request_id)) request_id = NewRequestId();
  if (reply.empty() && request.reply_to().empty()) {
    query_stats_->Record(Since(started), "no reply subject");
    return;  // nobody to answer; nothing to do
  }
  // `reply_to` wins: the gateway points it at a connection of its own for events and keeps the
  // NATS reply subject for the "no responders" status only.
  const std::string reply_to = request.reply_to().empty() ? reply : request.reply_to();
  // The gateway's input rules, for publishers that bypass it: nothing invalid is matched,
  // forwarded to the agents or recorded in a session.
  if (Status valid = ValidateQueryRequest(request, config_->gateway); !valid.ok()) {
    ReplyError(reply_to, request_id, valid.error());
    query_stats_->Record(Since(started), "bad request");
    return;
  }
  request.set_request_id(request_id);
  if (request.deadline_unix_ms() == 0) {
    request.set_deadline_unix_ms(started_ms + config_->agent.turn_timeout.count());
  } else if (request.deadline_unix_ms() <= started_ms) {
    ReplyError(reply_to, request_id,
               {ErrorCode::kDeadlineExceeded, "deadline passed before the query was handled"});
    query_stats_->Record(Since(started), "deadline");
    return;
  }
  if (request.route_deadline_unix_ms() != 0 && request.route_deadline_unix_ms() <= started_ms) {
    ReplyError(reply_to, request_id,
               {ErrorCode::kDeadlineExceeded,
                "route deadline passed before a worker took the query (workers overloaded?)"});
    query_stats_->Record(Since(started), "deadline");
    return;
  }

  auto match = matcher_->FindMatch(request.message());
  if (!match) {
    ForwardToAgents(std::move(request), reply_to, msg.Header(kTraceparentHeader));
    query_stats_->Record(Since(started));
    return;
  }

  CallInput input;
  input.captures = match->captures.ToJson();  // owned: the call outlives this callback
  if (request.has_parameters()) input.parameters = StructToJson(request.parameters());
  input.user_message = request.message();
  input.session_id = request.session_id();
  // The gateway stops waiting at the route deadline: the call must not outlive it.
  input.deadline_unix_ms =
      request.route_deadline_unix_ms() != 0
          ? std::min(request.deadline_unix_ms(), request.route_deadline_unix_ms())
          : request.deadline_unix_ms();
  std::string flow_id = match->flow->flow_id;
  in_flight_.fetch_add(1);
  runtime_->RunFlow(
      match->flow_index, std::move(input),
      [this, request = std::move(request), reply_to, flow_id, started,
       started_ms](Result<CallOutcome> outcome) {
        wf::v1::QueryEvent event =
            FlowEvent(request.request_id(), request.session_id(), flow_id, outcome);
        NatsConnection& conn = ReplyConn();
        std::string payload = EncodeEvent(event, MaxReplyData(conn));
        if (event.has_final()) {
          flows_answered_.fetch_add(1, std::memory_order_relaxed);
        } else {
          errors_.fetch_add(1, std::memory_order_relaxed);
        }
        query_stats_->Record(Since(started), event.has_final() ? "" : event.error().message());
        NatsHeaders headers{{kRequestIdHeader, request.request_id()}};
        if (request.confirm_end() && outages_->Recent(kConfirmAfterReconnect)) {
          // Around a reconnect: sent again until the gateway confirms it, up to the time the
          // gateway waits for a flow (its route deadline, plus the half second it allows).
          const int64_t until_ms = request.route_deadline_unix_ms() != 0
                                       ? request.route_deadline_unix_ms() + 500
                                       : request.deadline_unix_ms();
          if (Status sent = confirmer_->Send(reply_to, payload, headers, until_ms); !sent.ok()) {
            spdlog::warn("flow reply ({} bytes) to {} not sent yet: {}", payload.size(), reply_to,
                         sent.error().message);
          }
        } else {
          PublishReply(conn, reply_to, payload, headers, "flow");
        }
        Remember(request.request_id(), reply_to, std::move(payload), std::move(headers));
        // Off the critical path: the client already has its answer. Failed
        // turns are recorded too, so the agent knows what happened.
        RecordFlowTurn(request, event, flow_id, started_ms);
        in_flight_.fetch_sub(1);
      });
}

void LightweightWorker::ForwardToAgents(wf::v1::QueryRequest request, const std::string& reply,
                                        const std::string& traceparent) {
  request.set_reply_to(reply);
  if (!traceparent.empty() && request.traceparent().empty()) request.set_traceparent(traceparent);
  in_flight_.fetch_add(1);
  // Queue the turn only when an agent worker is alive (asking it right away if the last ping
  // round saw none), so a client never waits for its deadline on an empty pool.
  pools_->WhenLive("heavy", std::chrono::milliseconds(250),
                   [this, request = std::move(request), traceparent](bool live) mutable {
                     const int64_t route_deadline = request.route_deadline_unix_ms();
                     if (live && route_deadline != 0 && route_deadline <= UnixMillisNow()) {
                       // The client has been told 504 (or is about to be): queueing now
                       // would run an agent turn nobody waits for.
                       ReplyError(request.reply_to(), request.request_id(),
                                  {ErrorCode::kDeadlineExceeded,
                                   "route deadline passed before the query could be queued"});
                     } else if (live) {
                       Enqueue(std::move(request), traceparent);
                     } else {
                       no_agent_.fetch_add(1, std::memory_order_relaxed);
                       ReplyError(request.reply_to(), request.request_id(),
                                  {ErrorCode::kNoAgentWorker,
                                   "no flow matched and no agent worker is running to answer it"});
                     }
                     in_flight_.fetch_sub(1);
                   });
}

void LightweightWorker::Enqueue(wf::v1::QueryRequest request, const std::string& traceparent) {
  std::string request_id = request.request_id();
  std::string reply = request.reply_to();
  std::string payload = request.SerializeAsString();
  if (const std::size_t max = MaxReplyData(conn_); payload.size() > max) {
    // It came in under the limit, but the forward adds reply_to and headers: too large for
    // good, not "unavailable" (a retry cannot fit it).
    ReplyError(reply, request_id,
               {ErrorCode::kTooLarge, "the query is " + std::to_string(payload.size()) +
                                          " bytes once forwarded to the agents; the limit is " +
                                          std::to_string(max) + " bytes"});
    return;
  }
  in_flight_.fetch_add(1);
  js_->PublishAsync(
      subjects_.heavy_query, std::move(payload), request_id,
      {{kRequestIdHeader, request_id}, {kTraceparentHeader, traceparent}},
      [this, reply, request_id](Status stored, bool duplicate) {
        if (stored.ok() && duplicate) {
          // JetStream already holds a turn with this id (the msg id): another
          // query reused it, and would otherwise get no answer at all.
          ReplyError(
              reply, request_id,
              {ErrorCode::kDuplicateRequestId,
               "request_id " + request_id + " was already used by another query; send a new one"});
        } else if (stored.ok()) {
          forwarded_.fetch_add(1, std::memory_order_relaxed);
          // The agents have it: the gateway now waits for the turn's deadline, not the route's.
          wf::v1::QueryEvent queued;
          queued.set_request_id(request_id);
          queued.mutable_queued()->set_route("agent");
          std::string payload = queued.SerializeAsString();
          NatsHeaders headers{{kRequestIdHeader, request_id}};
          PublishReply(ReplyConn(), reply, payload, headers, "queued");
          Remember(request_id, reply, std::move(payload), std::move(headers));
        } else {
          ReplyError(reply, request_id,
                     {ErrorCode::kUnavailable,
                      "could not queue the query for an agent: " + stored.error().message});
        }
        in_flight_.fetch_sub(1);
      });
}

void LightweightWorker::RecordFlowTurn(const wf::v1::QueryRequest& request,
                                       const wf::v1::QueryEvent& event, const std::string& flow_id,
                                       int64_t started_ms) {
  if (request.session_id().empty()) return;
  const bool ok = event.has_final();
  // What the user was told: the answer, or what failed. The error message starts with the
  // call's label ("flow order_status: "), which the bracketed text already says.
  std::string content;
  if (ok) {
    const std::string& answer = event.final().answer();
    if (answer.size() > kMaxRecordedAnswerBytes) {
      spdlog::info("turn {} of session {}: answer of {} bytes recorded cut to {} bytes",
                   request.request_id(), request.session_id(), answer.size(),
                   kMaxRecordedAnswerBytes);
      content.assign(Utf8Truncate(answer, kMaxRecordedAnswerBytes));
      content += "\n[answer cut: " + std::to_string(answer.size()) + " bytes in all]";
    } else {
      content = answer;
    }
  } else {
    std::string_view message = event.error().message();
    const std::string label = "flow " + flow_id + ": ";
    if (message.substr(0, label.size()) == label) message.remove_prefix(label.size());
    content = "[flow " + flow_id + " failed (" + event.error().code() +
              "): " + std::string(Utf8Truncate(message, 1024)) + "]";
  }
  // Built on an arena whose first block is on the stack: a dozen strings and two messages
  // without a malloc, serialized into the batch by Add and dropped at once.
  alignas(8) char first_block[2048];
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = first_block;
  arena_options.initial_block_size = sizeof first_block;
  google::protobuf::Arena arena(arena_options);
  auto& turn = *google::protobuf::Arena::CreateMessage<wf::v1::TurnRecord>(&arena);
  int64_t now = UnixMillisNow();
  turn.set_session_id(request.session_id());
  turn.set_run_id(request.request_id());
  turn.set_request_id(request.request_id());
  turn.set_user_id(request.user_id());
  turn.set_route("flow");
  turn.set_flow_id(flow_id);
  turn.set_status(ok ? "ok" : "error");
  turn.set_started_unix_ms(started_ms);
  turn.set_finished_unix_ms(now);
  auto* user = turn.add_messages();
  user->set_role("user");
  user->set_content(request.message());
  user->set_created_unix_ms(started_ms);
  user->set_run_id(request.request_id());
  auto* answer = turn.add_messages();
  answer->set_role("assistant");
  answer->set_content(std::move(content));
  answer->set_created_unix_ms(now);
  answer->set_run_id(request.request_id());
  history_->Add(turn);
}

void LightweightWorker::PublishTurns(std::string payload, std::size_t turns) {
  in_flight_.fetch_add(1);
  history_batches_.fetch_add(1, std::memory_order_relaxed);
  // The message id lets JetStream drop a duplicate if nats.c ever republishes the batch.
  js_->PublishAsync(subjects_.history_append, payload, "turns-" + NewRequestId(),
                    {{kPayloadTypeHeader, "wf.v1.TurnRecordBatch"}},
                    [this, turns](Status stored, bool /*duplicate: already recorded*/) {
                      if (stored.ok()) {
                        turns_recorded_.fetch_add(turns, std::memory_order_relaxed);
                      } else {
                        turns_unrecorded_.fetch_add(turns, std::memory_order_relaxed);
                        spdlog::warn("{} flow turns not recorded: {}", turns,
                                     stored.error().message);
                      }
                      in_flight_.fetch_sub(1);
                    });
}

void LightweightWorker::OnMatch(const NatsMsgView& msg) {
  auto started = Clock::now();
  if (msg.reply().empty()) return;
  wf::v1::MatchRequest request;
  wf::v1::MatchResult result;
  if (!request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
    SetWireError({ErrorCode::kBadMessage, "payload is not a wf.v1.MatchRequest"},
                 result.mutable_error());
    match_stats_->Record(Since(started), "bad message");
  } else if (request.message().empty()) {
    SetWireError({ErrorCode::kBadRequest, "message: must not be empty"}, result.mutable_error());
    match_stats_->Record(Since(started), "empty message");
  } else {
    if (auto match = matcher_->FindMatch(request.message())) {
      result.set_matched(true);
      result.set_flow_id(match->flow->flow_id);
      result.set_pattern_index(static_cast<uint32_t>(match->pattern_index));
      auto& fields = *result.mutable_parameters()->mutable_fields();
      for (std::size_t i = 0; i < match->captures.size(); ++i) {
        fields[std::string(match->captures.name(i))].set_string_value(
            std::string(match->captures.value(i)));
      }
    }
    match_stats_->Record(Since(started));
  }
  // After Record: the reply implies it.
  PublishReply(ReplyConn(), std::string(msg.reply()), result.SerializeAsString(), {}, "match");
}

void LightweightWorker::OnFlowExecute(const NatsMsgView& msg) {
  auto started = Clock::now();
  const std::string reply(msg.reply());
  if (reply.empty()) return;
  wf::v1::ExecuteFlowRequest request;
  if (!request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
    ReplyError(reply, msg.Header(kRequestIdHeader),
               {ErrorCode::kBadMessage, "payload is not a wf.v1.ExecuteFlowRequest"});
    flow_stats_->Record(Since(started), "bad message");
    return;
  }
  CallInput input;
  if (request.has_parameters()) input.parameters = StructToJson(request.parameters());
  input.user_message = request.user_message();
  input.session_id = request.session_id();
  input.deadline_unix_ms = request.deadline_unix_ms();
  in_flight_.fetch_add(1);
  runtime_->RunFlowById(
      request.flow_id(), std::move(input),
      [this, reply, request_id = request.request_id(), flow_id = request.flow_id(),
       session_id = request.session_id(), started](Result<CallOutcome> outcome) {
        wf::v1::QueryEvent event = FlowEvent(request_id, session_id, flow_id, outcome);
        NatsConnection& conn = ReplyConn();
        const std::string payload = EncodeEvent(event, MaxReplyData(conn));
        flow_stats_->Record(Since(started), event.has_final() ? "" : event.error().message());
        PublishReply(conn, reply, payload, {}, "flow execute");
        in_flight_.fetch_sub(1);
      });
}

void LightweightWorker::OnToolExecute(const NatsMsgView& msg) {
  auto started = Clock::now();
  const std::string reply(msg.reply());
  if (reply.empty()) return;
  wf::v1::ExecuteToolRequest request;
  auto fail = [&](const std::string& call_id, const std::string& name, const Error& e) {
    wf::v1::ToolResult result;
    result.set_call_id(call_id);
    result.set_name(name);
    result.set_ok(false);
    SetWireError(e, result.mutable_error());
    tool_stats_->Record(Since(started), e.message);
    PublishReply(ReplyConn(), reply, result.SerializeAsString(), {}, "tool");
  };
  if (!request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
    fail("", "", {ErrorCode::kBadMessage, "payload is not a wf.v1.ExecuteToolRequest"});
    return;
  }
  CallInput input;
  if (!request.arguments_json().empty()) {
    // Bounded: a document nested without limit would be copied and dumped recursively.
    auto args = ParseBoundedJson(request.arguments_json());
    if (!args.ok() && args.error().code == ErrorCode::kBadRequest) {
      fail(request.call_id(), request.name(),
           {ErrorCode::kBadRequest, "arguments_json: " + args.error().message});
      return;
    }
    if (!args.ok() || !args->is_object()) {
      fail(request.call_id(), request.name(),
           {ErrorCode::kBadRequest, "arguments_json must be a JSON object"});
      return;
    }
    input.parameters = std::move(args).value();
  }
  input.session_id = request.session_id();
  input.deadline_unix_ms = request.deadline_unix_ms();
  in_flight_.fetch_add(1);
  runtime_->RunTool(request.name(), std::move(input),
                    [this, reply, call_id = request.call_id(), name = request.name(),
                     started](Result<CallOutcome> outcome) {
                      wf::v1::ToolResult result;
                      result.set_call_id(call_id);
                      result.set_name(name);
                      result.set_ok(outcome.ok());
                      if (outcome.ok()) {
                        result.set_content(outcome->answer);
                        result.set_upstream_status(outcome->upstream_status);
                      } else {
                        SetWireError(outcome.error(), result.mutable_error());
                      }
                      NatsConnection& conn = ReplyConn();
                      const std::string payload = EncodeToolResult(result, MaxReplyData(conn));
                      tool_stats_->Record(Since(started),
                                          result.ok() ? "" : result.error().message());
                      PublishReply(conn, reply, payload, {}, "tool");
                      in_flight_.fetch_sub(1);
                    });
}

std::string LightweightWorker::MetricsText() const {
  std::string out;
  auto counter = [&out](const char* name, const char* help, uint64_t value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
           " " + std::to_string(value) + "\n";
  };
  counter("wf_lightweight_flows_answered_total", "Queries answered by a flow.",
          flows_answered_.load());
  counter("wf_lightweight_forwarded_total", "Unmatched queries queued for the agent pool.",
          forwarded_.load());
  counter("wf_lightweight_no_agent_total", "Unmatched queries refused: no agent worker alive.",
          no_agent_.load());
  counter("wf_lightweight_errors_total", "Queries and calls that ended in an error.",
          errors_.load());
  counter("wf_lightweight_turns_recorded_total",
          "Flow turns stored in the history stream (acknowledged by JetStream).",
          turns_recorded_.load());
  counter("wf_lightweight_turns_unrecorded_total",
          "Flow turns whose history publish failed (logged).", turns_unrecorded_.load());
  counter("wf_lightweight_history_batches_total", "TurnRecordBatch messages published.",
          history_batches_.load());
  if (confirmer_) {
    const EndConfirmer::Stats ends = confirmer_->stats();
    counter("wf_lightweight_flow_answers_resent_total",
            "Flow answers sent again around a NATS reconnect, not yet confirmed by the gateway.",
            ends.resent);
    counter("wf_lightweight_flow_answers_unconfirmed_total",
            "Flow answers sent around a NATS reconnect that were never confirmed in time.",
            ends.unconfirmed);
  }
  counter("wf_lightweight_answers_replayed_total",
          "Last events of queries sent again on a ReplayRequest (a receiver back from a "
          "reconnect).",
          replayed_.load());
  const RecentAnswers::Stats kept = recent_.stats();
  out +=
      "# HELP wf_lightweight_recent_answers Last events of recent queries kept for replay.\n"
      "# TYPE wf_lightweight_recent_answers gauge\n";
  out += "wf_lightweight_recent_answers " + std::to_string(kept.kept) + "\n";
  out +=
      "# HELP wf_lightweight_in_flight Calls in flight.\n# TYPE wf_lightweight_in_flight gauge\n";
  out += "wf_lightweight_in_flight " + std::to_string(in_flight_.load()) + "\n";
  out +=
      "# HELP wf_nats_connected 1 while every NATS connection of the worker is up.\n"
      "# TYPE wf_nats_connected gauge\n";
  out += std::string("wf_nats_connected ") + (Connected() ? "1" : "0") + "\n";
  return out;
}

}  // namespace wf
