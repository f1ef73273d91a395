#include "worker/heavy_worker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>

#include "llm/held_llm_client.h"
#include "protocol/query_rules.h"
#include "session/session_codec.h"
#include "wf/v1/session.pb.h"
#include "worker/event_fit.h"

namespace wf {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kHeavyConsumer = "heavy";
constexpr const char* kHistoryConsumer = "history";
/// History messages (each a batch of up to a few hundred flow turns) taken at once: two, stored
/// side by side unless they share a session (HistoryOrder): then one after the other in stream
/// order, so a client's consecutive flow turns, recorded by different lightweight workers, stay
/// in the order they were sent. Two keep PostgreSQL busy while the other batch waits for its
/// commit, Redis or JetStream; more would take store threads that finished agent turns need.
constexpr int kHistoryInFlight = 2;
/// Recently cancelled request ids remembered for turns still queued in JetStream.
constexpr std::size_t kMaxRememberedCancels = 100000;
/// How long a finished turn handed to WF_HISTORY may wait for JetStream's acknowledgement.
constexpr auto kHistoryPublishTimeout = std::chrono::seconds(5);
/// How often hot copies left stale by a Redis failure are dropped once it answers again.
constexpr auto kHotCopyDropEvery = std::chrono::seconds(1);

/// Decrements `count` when it goes out of scope, also when what runs meanwhile throws.
struct ScopedDecrement {
  std::atomic<int>& count;
  ~ScopedDecrement() { count.fetch_sub(1); }
};

}  // namespace

/// Owns one JetStream message (natsMsg*) and settles it once (`settled`). Acks are published on
/// `conn` to the message's reply subject (JetStream's ack protocol), whichever connection and
/// subscription brought it: nats.c's natsMsg_Ack works only for messages of its own JetStream
/// subscriptions, and the queries come through PullIntake's plain one.
struct HeavyWorker::JsMessage {
  JsMessage(natsMsg* m, NatsConnection& c) : msg(m), conn(c) {}
  ~JsMessage() { DestroyNatsMsg(msg); }
  JsMessage(const JsMessage&) = delete;
  JsMessage& operator=(const JsMessage&) = delete;
  void Ack() { Settle("+ACK"); }
  void Nak() { Settle("-NAK"); }
  void NakWithDelay(std::chrono::milliseconds d) {
    Settle("-NAK {\"delay\":" +
           std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) + "}");
  }
  void Term() { Settle("+TERM"); }
  /// Keeps JetStream waiting for this message (past its ack wait) while it is unsettled, or
  /// settled but held.
  void InProgress() {
    std::lock_guard lock(mu);
    if (!settled || held) Send("+WPI");
  }
  /// The turn's last event went out to be confirmed by its receiver (EndConfirmer): from now on
  /// a settlement waits for Release. A worker killed before the confirmation so leaves the
  /// message to JetStream, which hands the turn to another worker after the ack wait, and that
  /// one answers it from the store: the answer is not lost with the process.
  void Hold() {
    std::lock_guard lock(mu);
    if (!settled) held = true;
  }
  /// The last event was confirmed or given up: a settlement made meanwhile goes out now.
  void Release() {
    std::lock_guard lock(mu);
    held = false;
    if (!deferred.empty()) Send(std::exchange(deferred, std::string()));
  }
  /// Roughly what the message keeps in memory.
  std::size_t Bytes() const {
    return sizeof(*this) + 256 + static_cast<std::size_t>(natsMsg_GetDataLength(msg));
  }
  /// The message's sequence number in its stream (0 when unknown).
  uint64_t StreamSeq() const {
    jsMsgMetaData* meta = nullptr;
    uint64_t n = 0;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      n = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    return n;
  }
  uint64_t Delivered() const {
    jsMsgMetaData* meta = nullptr;
    uint64_t n = 1;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      n = meta->NumDelivered;
      jsMsgMetaData_Destroy(meta);
    }
    return n;
  }
  void Settle(const std::string& body) {
    std::lock_guard lock(mu);
    if (settled) return;
    settled = true;
    if (held) {
      deferred = body;
      return;
    }
    Send(body);
  }
  void Send(const std::string& body) {
    const char* reply = natsMsg_GetReply(msg);
    if (reply == nullptr || *reply == '\0') {
      spdlog::warn("JetStream ack {}: the message has no reply subject", body);
      return;
    }
    if (Status sent = conn.Publish(reply, body); !sent.ok()) {
      spdlog::warn("JetStream ack failed: {}", sent.error().message);
    }
  }
  natsMsg* msg;
  NatsConnection& conn;
  std::mutex mu;
  bool settled = false;
  bool held = false;     // see Hold
  std::string deferred;  // a settlement made while held
};

namespace {

Status EnsureConsumer(jsCtx* js, const char* stream, const char* durable, const char* subject,
                      std::chrono::milliseconds ack_wait, int max_deliver,
                      int64_t max_ack_pending) {
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = durable;
  cfg.AckPolicy = js_AckExplicit;
  cfg.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(ack_wait).count();
  cfg.MaxDeliver = max_deliver;
  cfg.MaxAckPending = max_ack_pending;
  cfg.FilterSubject = subject;
  cfg.DeliverPolicy = js_DeliverAll;
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_AddConsumer(&ci, js, stream, &cfg, nullptr, &jerr);
  if (s != NATS_OK) {
    jerr = static_cast<jsErrCode>(0);
    s = js_UpdateConsumer(&ci, js, stream, &cfg, nullptr, &jerr);
  }
  if (ci) jsConsumerInfo_Destroy(ci);
  if (s != NATS_OK) {
    return Status(ErrorCode::kUnavailable, std::string("cannot create consumer ") + durable +
                                               " on " + stream + ": " + JsErrorText(s, jerr));
  }
  return Status::Ok();
}

/// What the client of a session request is told of the store's `error`. Refusals of its input
/// keep their message; any other failure says only what failed, with its code: the store's
/// messages name its servers (host, port, libpq's text with the database user) and are for the
/// log (the caller logs them).
Error ClientSessionError(const Error& error) {
  switch (error.code) {
    case ErrorCode::kBadRequest:
    case ErrorCode::kSessionNotFound:
      return error;
    case ErrorCode::kUnavailable:
      return Error{error.code, "session store unavailable"};
    default:
      return Error{error.code, "session store failed"};
  }
}

}  // namespace

/// One agent turn in flight.
namespace {
/// Turn objects alive in this process (all workers): once turns are done it must come back to the
/// number in flight; anything above that is a leaked turn (see wf_heavy_turn_objects).
std::atomic<int64_t> g_turn_objects{0};
}  // namespace

struct HeavyWorker::Turn {
  Turn(natsMsg* m, NatsConnection& conn) : msg(std::make_shared<JsMessage>(m, conn)) {
    g_turn_objects.fetch_add(1, std::memory_order_relaxed);
  }
  ~Turn() { g_turn_objects.fetch_sub(1, std::memory_order_relaxed); }
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;
  // Shared with the EndConfirmer's callback while the last event awaits confirmation (Hold):
  // the message outlives the turn's other state then.
  std::shared_ptr<JsMessage> msg;
  wf::v1::QueryRequest request;
  std::string reply_to;
  std::string traceparent;
  std::shared_ptr<AgentTurn> agent;
  std::unique_ptr<EventSink> sink;
  // Set when the turn was started ahead of PostgreSQL's answer (RunAgent): its first agent
  // refers to it.
  std::shared_ptr<Ahead> ahead;
  bool locked = false;
  // The session lock's lease is renewed (TickInProgress) only while this is true; it is cleared
  // under lease_mu before the turn gives the lock up, so a renewal in flight never takes a lock
  // the turn has just released.
  std::mutex lease_mu;
  bool lease_renewing = false;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> handed_back{false};
  std::atomic<bool> released{false};
  std::atomic<uint64_t> seq{0};
  uint32_t attempt = 1;  // JetStream delivery count, set on every event (attempt field)
  uint64_t stream_seq = 0;
  const Clock::time_point received = Clock::now();
  std::atomic<bool> counted{false};  // in $SRV.STATS (CountTurn)
  bool id_assigned = false;      // the request came without an id: this worker made a fresh one
  bool store_checked = false;    // its run id was looked up in PostgreSQL (AnsweredFromStore)
  int64_t deadline_unix_ms = 0;  // min(request's deadline, start + agent.turn_timeout)
  // The final/error event, held back until the turn is stored and the session unlocked, so a
  // client that has its answer can send the next message at once and the answer is durable.
  std::mutex terminal_mu;
  std::optional<wf::v1::QueryEvent> terminal;
};

/// Publishes a turn's events on its reply subject, with the request id header. Owned by its
/// Turn (Turn::sink) and so refers to it without owning it: a shared_ptr here made a cycle
/// (Turn -> sink -> Turn) that leaked every turn, its AgentTurn and its JetStream message.
/// The AgentTurn emits only until it finishes, which is before the Turn is released.
class HeavyWorker::TurnEvents final : public EventSink {
 public:
  TurnEvents(HeavyWorker& worker, Turn& turn) : worker_(worker), turn_(turn) {}
  void Emit(wf::v1::QueryEvent event) override {
    if (turn_.handed_back) return;  // another worker owns the answer now
    turn_.seq = event.seq();
    if (event.has_final() || event.has_error()) {
      std::lock_guard lock(turn_.terminal_mu);
      turn_.terminal = std::move(event);
      return;
    }
    worker_.PublishEvent(turn_, std::move(event));
  }

 private:
  HeavyWorker& worker_;
  Turn& turn_;
};

/// A turn started on a hot-copy miss before PostgreSQL said whether its session is new, as if
/// it were (an empty history): its LLM call goes out at once, but what it brings is held, so
/// nothing is published and no tool runs until the answer says "new" (`held` released). Else
/// the call is dropped, the agent ended without a trace (`superseded`: its events and its end
/// go nowhere) and the turn run again with the history from PostgreSQL.
struct HeavyWorker::Ahead {
  class Events final : public EventSink {
   public:
    Events(EventSink& inner, const std::atomic<bool>& superseded)
        : inner_(inner), superseded_(superseded) {}
    void Emit(wf::v1::QueryEvent event) override {
      if (!superseded_.load()) inner_.Emit(std::move(event));
    }

   private:
    EventSink& inner_;
    const std::atomic<bool>& superseded_;
  };
  Ahead(LlmClient& llm, EventSink& sink) : held(llm), events(sink, superseded) {}
  HeldLlmClient held;
  std::atomic<bool> superseded{false};
  Events events;
};

std::size_t HeavyWorker::MaxPayload() const {
  const int64_t max = natsConnection_GetMaxPayload(conn_.raw());
  return max > 0 ? static_cast<std::size_t>(max) : std::size_t{1} << 20;
}

bool HeavyWorker::PublishEvent(const Turn& turn, wf::v1::QueryEvent event) {
  if (turn.reply_to.empty()) return false;
  event.set_attempt(turn.attempt);
  // The payload limit covers the headers too: leave room for them.
  const std::size_t header_room = 128 + turn.request.request_id().size() + turn.traceparent.size();
  const std::size_t max = MaxPayload();
  const EventFit fit = FitEvent(event, max > header_room ? max - header_room : 0);
  if (fit == EventFit::kReplaced) {
    spdlog::warn("turn {}: the final answer does not fit in a NATS message: sent as an error",
                 turn.request.request_id());
  } else if (fit == EventFit::kTruncated) {
    spdlog::info("turn {}: an event was cut to fit in a NATS message", turn.request.request_id());
  }
  std::string data = event.SerializeAsString();
  NatsHeaders headers{{kRequestIdHeader, turn.request.request_id()},
                      {kTraceparentHeader, turn.traceparent}};
  Status status;
  if ((event.has_final() || event.has_error()) && turn.request.confirm_end() && confirmer_) {
    // Until the receiver confirms it, or the turn's deadline: see EndConfirmer. The query's
    // message is settled only then (JsMessage::Hold), and kept in progress meanwhile.
    const std::size_t size = data.size();
    EndConfirmer::Settled on_settled;
    std::size_t held_bytes = 0;
    if (turn.msg->msg != nullptr) {  // null: an answer for a query no worker holds
      std::shared_ptr<JsMessage> msg = turn.msg;
      msg->Hold();
      held_bytes = msg->Bytes();
      {
        std::lock_guard lock(mu_);
        held_messages_.emplace(msg.get(), msg);
      }
      on_settled = [this, msg = std::move(msg)](bool /*confirmed*/) {
        msg->Release();
        std::lock_guard lock(mu_);
        held_messages_.erase(msg.get());
      };
    }
    status = confirmer_->Send(turn.reply_to, std::move(data), std::move(headers),
                              turn.deadline_unix_ms, std::move(on_settled), held_bytes);
    if (!status.ok()) {
      spdlog::warn("last event {} of turn {} ({} bytes) not published yet: {}", event.seq(),
                   turn.request.request_id(), size, status.error().message);
    }
    return status.ok();
  }
  status = conn_.Publish(turn.reply_to, data, {}, headers);
  if (!status.ok()) {
    spdlog::warn("event {} of turn {} ({} bytes) not published: {}", event.seq(),
                 turn.request.request_id(), data.size(), status.error().message);
    return false;
  }
  return true;
}

HeavyWorker::HeavyWorker(std::shared_ptr<const Config> config, NatsConnection& conn,
                         SessionStore& store, LlmClient& llm, Timer& timer, Options options)
    : config_(std::move(config)),
      conn_(conn),
      store_(store),
      llm_(llm),
      timer_(timer),
      options_(options),
      prefix_(config_->subject_prefix) {}

HeavyWorker::~HeavyWorker() {
  Shutdown(std::chrono::milliseconds(0));
  // While every other member lives (a last delivery still runs OnQueryMessages): the intake
  // and the confirmer (a subscription on it) before their connection, the connection before the
  // loop it runs on.
  intake_.reset();
  confirmer_.reset();
  intake_conn_.reset();
  intake_loop_.reset();
}

Result<std::unique_ptr<HeavyWorker>> HeavyWorker::Start(std::shared_ptr<const Config> config,
                                                        NatsConnection& conn, SessionStore& store,
                                                        LlmClient& llm, Timer& timer,
                                                        Options options) {
  std::unique_ptr<HeavyWorker> self(
      new HeavyWorker(std::move(config), conn, store, llm, timer, options));
  if (auto s = self->Setup(); !s.ok()) {
    self->Shutdown(std::chrono::milliseconds(0));
    return s.error();
  }
  return self;
}

Status HeavyWorker::Setup() {
  executor_ = std::make_unique<ThreadPoolExecutor>(std::max(1, options_.executor_threads));
  session_executor_ = std::make_unique<ThreadPoolExecutor>(std::max(1, options_.session_threads));
  store_executor_ = std::make_unique<ThreadPoolExecutor>(std::max(1, options_.store_threads));
  lease_executor_ = std::make_unique<ThreadPoolExecutor>(1);
  tools_ = std::make_unique<NatsToolRunner>(conn_, timer_, prefix_);
  if (auto s = tools_->Start(); !s.ok()) return s;

  auto js = JetStream::Create(conn_);
  if (!js.ok()) return js.error();
  js_ = std::move(js).value();
  const std::string query_subject = prefix_ + ".heavy.query";
  const std::string history_subject = prefix_ + ".history.append";
  const std::string heavy_stream = HeavyStreamName(prefix_);  // WF_HEAVY for prefix "wf"
  const std::string history_stream = HistoryStreamName(prefix_);
  const char* const kHeavyStream = heavy_stream.c_str();
  const char* const kHistoryStream = history_stream.c_str();
  StreamSpec heavy{kHeavyStream, {query_subject}};
  heavy.max_age = std::chrono::hours(1);
  if (auto s = js_->EnsureStream(heavy); !s.ok()) return s;
  StreamSpec history{kHistoryStream, {history_subject}};
  history.max_age = std::chrono::hours(24 * 7);
  if (auto s = js_->EnsureStream(history); !s.ok()) return s;
  // Many workers share one consumer: the pool-wide cap is generous, each process limits itself
  // by fetching only as many messages as it has free slots.
  if (auto s = EnsureConsumer(js_->raw(), kHeavyStream, kHeavyConsumer, query_subject.c_str(),
                              options_.ack_wait, options_.max_deliver, 100000);
      !s.ok()) {
    return s;
  }
  if (auto s = EnsureConsumer(js_->raw(), kHistoryStream, kHistoryConsumer, history_subject.c_str(),
                              std::chrono::seconds(30), -1, 10000);
      !s.ok()) {
    return s;
  }
  {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = kHistoryStream;
    so.Consumer = kHistoryConsumer;
    so.ManualAck = true;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_PullSubscribe(&history_sub_, js_->raw(), history_subject.c_str(),
                                    kHistoryConsumer, nullptr, &so, &jerr);
    if (s != NATS_OK) {
      return Status(ErrorCode::kUnavailable, std::string("pull subscribe ") + kHistoryConsumer +
                                                 ": " + JsErrorText(s, jerr));
    }
  }
  // The queries come through their own connection, whose socket the intake thread reads
  // itself (PullIntake): the server's message wakes the thread that starts the turn.
  intake_loop_ = std::make_unique<EventLoopThread>("heavy-intake");
  NatsOptions intake_options;
  intake_options.url = conn_.url();
  intake_options.name = "wf-heavy intake";
  intake_options.loop = &intake_loop_->loop();
  auto intake_conn = NatsConnection::Connect(std::move(intake_options));
  if (!intake_conn.ok()) return intake_conn.error();
  intake_conn_ = std::move(intake_conn).value();
  // Confirmations come on the intake connection: read by its loop thread as they arrive.
  confirmer_ =
      std::make_unique<EndConfirmer>(conn_, *intake_conn_, timer_, EndConfirmer::Options{});
  if (auto s = confirmer_->Start(); !s.ok()) return s;
  PullIntake::Options pull;
  pull.stream = heavy_stream;
  pull.consumer = kHeavyConsumer;
  intake_ = std::make_unique<PullIntake>(
      *intake_conn_, intake_loop_->loop(), pull,
      [this](bool nothing_pending) {
        if (!fetching_) return 0;
        const int active = active_count_.load();
        return NextPullBatch(options_.concurrency - active, active, nothing_pending);
      },
      [this](std::vector<natsMsg*> messages) { OnQueryMessages(std::move(messages)); });

  service_ = std::make_unique<MicroService>(conn_, "heavy", options_.version,
                                            "agent turns, sessions", prefix_);
  query_stats_ = service_->AddEndpoint("query", query_subject, kHeavyConsumer);
  session_stats_ = service_->AddEndpoint("session", prefix_ + ".session.*", "heavy");
  for (auto [subject, del] :
       {std::pair{prefix_ + ".session.get", false}, std::pair{prefix_ + ".session.delete", true}}) {
    auto sub = conn_.Subscribe(
        subject, [this, del = del](const NatsMsgView& m) { OnSessionRequest(m, del); }, "heavy");
    if (!sub.ok()) return sub.error();
    subs_.push_back(std::move(sub).value());
  }
  auto cancel =
      conn_.Subscribe(prefix_ + ".cancel.*", [this](const NatsMsgView& m) { OnCancel(m); });
  if (!cancel.ok()) return cancel.error();
  subs_.push_back(std::move(cancel).value());
  // One worker of the pool answers each advisory (queue group).
  auto exhausted = conn_.Subscribe(
      "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + heavy_stream + "." + kHeavyConsumer,
      [this](const NatsMsgView& m) { OnDeliveriesExhausted(m); }, "heavy");
  if (!exhausted.ok()) return exhausted.error();
  subs_.push_back(std::move(exhausted).value());
  if (auto s = service_->Start(); !s.ok()) return s;

  if (auto s = intake_->Start(); !s.ok()) return s;
  history_fetcher_ = std::thread([this] { FetchHistoryLoop(); });
  {
    // Under the tick's lock: the first tick (timer thread) re-arms and writes tick_task_ too.
    std::lock_guard tick(tick_mu_);
    tick_task_ = timer_.After(options_.in_progress_every, [this] { TickInProgress(); });
    hot_copy_task_ = timer_.After(kHotCopyDropEvery, [this] { TickHotCopies(); });
  }
  spdlog::info("heavy worker {} ready: concurrency {}, {} tools, {} flows, {} skills",
               service_->id(), options_.concurrency, config_->tools.size(), config_->flows.size(),
               config_->skills.size());
  return Status::Ok();
}

void HeavyWorker::FetchHistoryLoop() {
  while (fetching_) {
    int batch = 0;
    {
      // Storing history blocks executor threads that agent turns share: only a few batches at
      // a time, and the rest stays in JetStream (not in this process's memory, not past ack_wait).
      std::unique_lock lock(mu_);
      slots_cv_.wait_for(lock, std::chrono::milliseconds(200), [this] {
        return !fetching_ || history_in_flight_.load() < kHistoryInFlight;
      });
      if (!fetching_) break;
      batch = kHistoryInFlight - history_in_flight_.load();
      if (batch <= 0) continue;
    }
    natsMsgList list{nullptr, 0};
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = natsSubscription_Fetch(&list, history_sub_, batch, 500, &jerr);
    if (s == NATS_TIMEOUT) continue;
    if (s != NATS_OK) {
      if (fetching_) {
        spdlog::warn("fetch from history: {}", JsErrorText(s, jerr));
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
      continue;
    }
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* msg = list.Msgs[i];
      list.Msgs[i] = nullptr;  // ownership moves on
      OnHistoryMessage(msg);
    }
    natsMsgList_Destroy(&list);
  }
}

void HeavyWorker::OnQueryMessages(std::vector<natsMsg*> messages) {
  if (!fetching_) {
    // Shutting down: what a last pull brought goes straight back, for another worker.
    for (natsMsg* msg : messages) JsMessage(msg, conn_).Nak();
    return;
  }
  // The read's last turn starts on this thread, the others on the executor: a lone turn (the
  // common case below saturation) reaches Redis without a hand-off to another thread (an
  // across-CPU wake), and the next pull waits until the turn's LLM call is on its way instead
  // of competing with it. Meanwhile new turns wait in JetStream, where another worker can take
  // them.
  std::shared_ptr<Turn> last;
  for (natsMsg* msg : messages) {
    if (auto turn = OnQueryMessage(msg)) {
      if (last) executor_->Post([this, last] { BeginTurn(last); });
      last = std::move(turn);
    }
  }
  if (last) RunGuarded("executor task", [this, &last] { BeginTurn(last); });
}

std::shared_ptr<HeavyWorker::Turn> HeavyWorker::OnQueryMessage(natsMsg* msg) {
  auto turn = std::make_shared<Turn>(msg, conn_);
  if (!turn->request.ParseFromArray(natsMsg_GetData(msg), natsMsg_GetDataLength(msg))) {
    // No reply subject can be trusted: drop it for good.
    spdlog::warn("undecodable message on {}: terminated", natsMsg_GetSubject(msg));
    turn->msg->Term();
    query_stats_->Record(std::chrono::nanoseconds(0), "bad message");
    return nullptr;
  }
  turn->reply_to = turn->request.reply_to();
  turn->traceparent = turn->request.traceparent();
  if (turn->request.request_id().empty()) {
    std::string inbox = NatsConnection::NewInbox();
    turn->request.set_request_id(inbox.substr(inbox.rfind('.') + 1));
    turn->id_assigned = true;
  }
  std::shared_ptr<Turn> running;
  {
    std::lock_guard lock(mu_);
    auto [it, inserted] = active_.emplace(turn->request.request_id(), turn);
    if (!inserted) running = it->second;
  }
  if (running) {
    OnRequestIdRunning(turn, *running);
    return nullptr;
  }
  active_count_.fetch_add(1);
  turns_started_.fetch_add(1, std::memory_order_relaxed);
  return turn;
}

void HeavyWorker::OnRequestIdRunning(const std::shared_ptr<Turn>& turn, const Turn& running) {
  if (turn->msg->StreamSeq() == running.msg->StreamSeq()) {
    // A redelivery of the turn this process still runs (e.g. a long stall): keep the first.
    turn->msg->InProgress();
    return;
  }
  // Another message with the id of a turn running here. Asked on the same reply subject, the
  // running turn's answer is its answer: nothing to add (an error there would end the first
  // request too). Asked elsewhere, it is told now, not after JetStream's ack wait; once the
  // turn is stored, a repeat is answered from the store.
  if (turn->reply_to != running.reply_to) {
    PublishError(*turn, ErrorCode::kDuplicateRequestId,
                 "request_id " + turn->request.request_id() +
                     " names a turn still running; its answer goes to the first request's reply "
                     "subject, and once it is stored a repeat of the same query is answered from "
                     "there");
  }
  turn->msg->Term();
  query_stats_->Record(std::chrono::nanoseconds(0), "duplicate request id");
}

void HeavyWorker::CountTurn(Turn& turn, std::string_view error) {
  if (turn.counted.exchange(true)) return;
  query_stats_->Record(Clock::now() - turn.received, error);
}

void HeavyWorker::EmitTerminalError(const std::shared_ptr<Turn>& turn, ErrorCode code,
                                    const std::string& message) {
  ReleaseTurn(turn);  // before the client can see the end (see ReleaseTurn)
  PublishError(*turn, code, message);
  CountTurn(*turn, message);
}

void HeavyWorker::PublishError(const Turn& turn, ErrorCode code, const std::string& message) {
  wf::v1::QueryEvent event;
  event.set_request_id(turn.request.request_id());
  event.set_seq(turn.seq + 1);
  event.mutable_error()->set_code(std::string(WireName(code)));
  event.mutable_error()->set_message(message);
  PublishEvent(turn, std::move(event));
}

void HeavyWorker::RejectTurn(const std::shared_ptr<Turn>& turn, ErrorCode code,
                             const std::string& message) {
  EmitTerminalError(turn, code, message);
  turn->msg->Term();
  turns_failed_.fetch_add(1, std::memory_order_relaxed);
}

void HeavyWorker::RememberCancel(const std::string& request_id) {
  const auto now = Clock::now();
  const auto life = config_->agent.turn_timeout + std::chrono::minutes(1);
  std::lock_guard lock(mu_);
  while (!cancel_order_.empty() &&
         (cancel_order_.front().first <= now || cancel_order_.size() >= kMaxRememberedCancels)) {
    auto it = cancelled_ids_.find(cancel_order_.front().second);
    if (it != cancelled_ids_.end() && it->second == cancel_order_.front().first) {
      cancelled_ids_.erase(it);
    }
    cancel_order_.pop_front();
  }
  const auto until = now + life;
  cancelled_ids_[request_id] = until;
  cancel_order_.emplace_back(until, request_id);
}

bool HeavyWorker::WasCancelled(const std::string& request_id) {
  std::lock_guard lock(mu_);
  auto it = cancelled_ids_.find(request_id);
  return it != cancelled_ids_.end() && it->second > Clock::now();
}

void HeavyWorker::BeginTurn(const std::shared_ptr<Turn>& turn) {
  const auto& req = turn->request;
  uint64_t delivered = turn->msg->Delivered();
  turn->attempt = static_cast<uint32_t>(std::min<uint64_t>(delivered, UINT32_MAX));
  turn->stream_seq = turn->msg->StreamSeq();
  if (delivered > 1) redeliveries_.fetch_add(1, std::memory_order_relaxed);
  const int64_t now = UnixMillisNow();
  // A publisher's deadline never holds a slot and the session lock longer than the configured
  // turn timeout.
  const int64_t longest = now + config_->agent.turn_timeout.count();
  // 0 is "no deadline of its own"; any other value is a time, and a negative one is long past.
  turn->deadline_unix_ms =
      req.deadline_unix_ms() != 0 ? std::min(req.deadline_unix_ms(), longest) : longest;
  if (req.deadline_unix_ms() != 0 && req.deadline_unix_ms() <= now) {
    EmitTerminalError(turn, ErrorCode::kDeadlineExceeded,
                      "the turn's deadline passed before it ran");
    turn->msg->Ack();
    turns_failed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // Invalid input is refused at once and for good: a redelivery cannot make it valid. The rules
  // of wf.query, for publishers that bypass the lightweight worker: among them, a request id
  // that is one NATS subject token (so `wf.cancel.<id>` reaches the turn) and stored as given.
  if (Status valid = ValidateQueryRequest(req, config_->gateway); !valid.ok()) {
    RejectTurn(turn, ErrorCode::kBadRequest, valid.error().message);
    return;
  }
  if (WasCancelled(req.request_id())) {
    // Cancelled while it waited in JetStream (its client left): nobody wants the answer, so the
    // LLM is not called and nothing is stored.
    spdlog::info("turn {} was cancelled before it ran: dropped", req.request_id());
    EmitTerminalError(turn, ErrorCode::kCancelled, "the turn was cancelled before it ran");
    turn->msg->Ack();
    turns_cancelled_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The request id is the run id: on a redelivery, the earlier attempt may have stored it.
  if (!turn->id_assigned && turn->msg->Delivered() > 1 && AnsweredFromStore(turn)) return;
  AcquireLockThenRun(turn);
}

/// A stored run of this turn's id is either this very turn (stored by a worker that died before
/// acking, or a publisher sending the same query again) or another query reusing the id. Looked
/// up before the LLM runs, but not on every turn (a PostgreSQL round trip before the first
/// token): on a redelivery (BeginTurn) and when the session's history already holds a message of
/// this run id (AcquireLockThenRun). Other reuse is refused by JetStream's duplicate window
/// (wf-lightweight) or when storing (a run id of another session, or with another message).
/// True when the turn was answered from the store or refused (and released).
bool HeavyWorker::AnsweredFromStore(const std::shared_ptr<Turn>& turn) {
  const auto& req = turn->request;
  turn->store_checked = true;
  auto found = store_.FindRun(req.request_id());
  if (!found.ok()) {
    // PostgreSQL unreachable: go on; storing refuses a run id of another session, and a turn
    // that cannot be stored goes to WF_HISTORY (FinishTurn).
    spdlog::warn("turn {}: stored runs not checked: {}", req.request_id(), found.error().message);
  } else if (found->has_value()) {
    const SessionStore::StoredRun& run = **found;
    if (run.session_id != req.session_id() || run.user_message != SanitizeText(req.message())) {
      spdlog::warn("turn {} refused: its request id names a stored turn of {} session",
                   req.request_id(), run.session_id != req.session_id() ? "another" : "this");
      RejectTurn(
          turn, ErrorCode::kDuplicateRequestId,
          "request_id " + req.request_id() + " already names a stored turn " +
              (run.session_id != req.session_id() ? "of another session" : "with another message") +
              "; send a new request_id");
      return true;
    }
    // The same turn, stored before: answer from the store, without running it again.
    ReleaseTurn(turn);  // before the client can see the answer (see ReleaseTurn)
    if (run.has_answer) {
      wf::v1::QueryEvent event;
      event.set_request_id(req.request_id());
      event.set_seq(1);
      auto* final = event.mutable_final();
      final->set_answer(run.answer);
      final->set_route("agent");
      final->set_run_id(req.request_id());
      final->set_session_id(req.session_id());
      final->set_cancelled(run.status == "cancelled");
      PublishEvent(*turn, std::move(event));
      CountTurn(*turn, "");
    } else {
      EmitTerminalError(turn, ErrorCode::kDuplicateRequestId,
                        "request_id " + req.request_id() + " already ended (status " + run.status +
                            ") and is stored without an answer to repeat");
    }
    turn->msg->Ack();
    turns_ok_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void HeavyWorker::AcquireLockThenRun(const std::shared_ptr<Turn>& turn) {
  const auto& req = turn->request;
  const bool enqueue = config_->agent.on_busy == "enqueue";
  if (turn->cancelled) {
    if (enqueue) (void)store_.LeaveQueue(req.session_id(), req.request_id());
    EmitTerminalError(turn, ErrorCode::kCancelled, "cancelled while waiting for the session");
    turn->msg->Ack();
    turns_cancelled_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (turn->handed_back) {
    ReleaseTurn(turn);
    return;
  }
  auto lease = options_.ack_wait + options_.in_progress_every;
  // The lock and the history in one Redis round trip (PostgreSQL only on a hot-copy miss): the
  // history is read after the lock is taken, on the path to the first token. Queued turns take
  // the lock in the order they entered WF_HEAVY (their stream sequence).
  auto locked = store_.TryLockAndLoadHistory(req.session_id(), req.request_id(), lease,
                                             enqueue ? turn->stream_seq : 0,
                                             /*may_defer_lookup=*/true);
  if (!locked.ok() && locked.error().code == ErrorCode::kBadRequest) {
    RejectTurn(turn, ErrorCode::kBadRequest, locked.error().message);
    return;
  }
  if (!locked.ok()) {
    // Redis down: the lock cannot be taken, so hand the turn back for a later attempt.
    spdlog::warn("session lock for {}: {}", req.session_id(), locked.error().message);
    if (turn->msg->Delivered() >= static_cast<uint64_t>(options_.max_deliver)) {
      EmitTerminalError(turn, ErrorCode::kUnavailable, "session store unavailable");
      turn->msg->Term();
    } else {
      turn->msg->NakWithDelay(std::chrono::seconds(1));
    }
    ReleaseTurn(turn);
    return;
  }
  if (!locked->locked) {
    int64_t left = turn->deadline_unix_ms - UnixMillisNow();
    if (enqueue && left <= 0) (void)store_.LeaveQueue(req.session_id(), req.request_id());
    if (!enqueue || left <= 0) {
      EmitTerminalError(turn, enqueue ? ErrorCode::kDeadlineExceeded : ErrorCode::kSessionBusy,
                        enqueue ? "the turn's deadline passed while queued behind another turn"
                                : "session " + req.session_id() + " is busy with another turn");
      turn->msg->Ack();
      turns_failed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Queued behind the running turn: try again shortly, without holding a thread.
    timer_.After(std::chrono::milliseconds(std::min<int64_t>(100, left)),
                 [this, turn] { executor_->Post([this, turn] { AcquireLockThenRun(turn); }); });
    return;
  }
  turn->locked = true;
  {
    std::lock_guard lease(turn->lease_mu);
    turn->lease_renewing = true;
  }
  if (locked->deferred) {
    RunAgent(turn, std::move(locked->history), std::move(locked->deferred));
    return;
  }
  RunLocked(turn, std::move(locked->history));
}

void HeavyWorker::RunLocked(const std::shared_ptr<Turn>& turn,
                            Result<std::vector<wf::v1::ChatMessage>> history) {
  const auto& req = turn->request;
  if (!turn->id_assigned && !turn->store_checked && history.ok() &&
      std::any_of(history->begin(), history->end(),
                  [&](const wf::v1::ChatMessage& m) { return m.run_id() == req.request_id(); })) {
    // The session already holds this run: a repeat of a stored turn, or another query reusing
    // its id. Answered (or refused) from PostgreSQL without the lock; if PostgreSQL does not
    // have it yet (it is on its way through WF_HISTORY), the turn goes on as a new one.
    StopLeaseRenewal(*turn);
    (void)store_.Unlock(req.session_id(), req.request_id());
    turn->locked = false;
    if (!AnsweredFromStore(turn)) AcquireLockThenRun(turn);
    return;
  }
  RunAgent(turn, std::move(history));
}

void HeavyWorker::RunAgainWithStoredHistory(const std::shared_ptr<Turn>& turn,
                                            const std::shared_ptr<Ahead>& ahead,
                                            const SessionStore::DeferredLookup& deferred) {
  std::shared_ptr<AgentTurn> first;
  {
    std::lock_guard lock(mu_);
    first = turn->agent;
    // Ended meanwhile (cancelled, its deadline, handed back on shutdown): that end stands.
    if (turn->handed_back || turn->cancelled || !first || first->finished()) return;
    ahead->superseded = true;
  }
  first->Cancel();  // silently: its events and its end are dropped (superseded)
  restarted_turns_.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("turn {}: session {} is stored in PostgreSQL: running again with its history",
                turn->request.request_id(), turn->request.session_id());
  RunLocked(turn, store_.LoadDeferred(deferred));
}

void HeavyWorker::RunAgent(const std::shared_ptr<Turn>& turn,
                           Result<std::vector<wf::v1::ChatMessage>> history,
                           std::shared_ptr<SessionStore::DeferredLookup> deferred) {
  const auto& req = turn->request;
  if (!history.ok()) {
    spdlog::warn("history of {}: {}", req.session_id(), history.error().message);
    StopLeaseRenewal(*turn);
    (void)store_.Unlock(req.session_id(), req.request_id());
    turn->locked = false;
    if (turn->msg->Delivered() >= static_cast<uint64_t>(options_.max_deliver)) {
      EmitTerminalError(turn, ErrorCode::kUnavailable, "session history unavailable");
      turn->msg->Term();
    } else {
      turn->msg->NakWithDelay(std::chrono::seconds(1));
    }
    ReleaseTurn(turn);
    return;
  }
  if (!turn->sink) turn->sink = std::make_unique<TurnEvents>(*this, *turn);
  std::shared_ptr<Ahead> ahead;
  if (deferred) {
    ahead = std::make_shared<Ahead>(llm_, *turn->sink);
    turn->ahead = ahead;
    turns_started_ahead_.fetch_add(1, std::memory_order_relaxed);
  }
  TurnParams params;
  params.config = config_;
  params.history = std::move(history).value();
  params.user_message = req.message();
  params.session_id = req.session_id();
  params.request_id = req.request_id();
  params.run_id = req.request_id();
  params.user_id = req.user_id();
  params.deadline_unix_ms = turn->deadline_unix_ms;
  params.stream_tokens = req.stream();
  params.first_call_on_caller = true;  // this is an executor thread: no hand-off before the LLM
  AgentDeps deps{ahead ? static_cast<LlmClient&>(ahead->held) : llm_, *tools_,
                 ahead ? static_cast<EventSink&>(ahead->events) : *turn->sink, *executor_, timer_};
  std::weak_ptr<Turn> weak = turn;
  auto agent =
      AgentTurn::Start(deps, std::move(params), [this, weak, ahead](wf::v1::TurnRecord record) {
        if (ahead && ahead->superseded.load()) return;  // run again (RunAgainWithStoredHistory)
        if (auto t = weak.lock()) {
          turns_storing_.fetch_add(1, std::memory_order_relaxed);
          store_executor_->Post([this, t, record = std::move(record)]() mutable {
            // Also when FinishTurn throws (the executor logs and drops the task).
            ScopedDecrement done{turns_storing_};
            FinishTurn(t, std::move(record));
          });
        }
      });
  {
    std::lock_guard lock(mu_);
    turn->agent = std::move(agent);
    // Cancelled, or handed back by Shutdown, while this agent was being made (e.g. a turn run
    // again with its stored history): it ends at once.
    if (turn->cancelled || turn->handed_back) turn->agent->Cancel();
  }
  if (!ahead) return;
  lookups_pending_.fetch_add(1);
  deferred->Then([this, weak, ahead, deferred](bool absent) {
    ScopedDecrement done{lookups_pending_};  // Shutdown waits for this before the executor goes
    if (absent) {
      ahead->held.Release();  // a new session: what the call brought counts
      return;
    }
    ahead->held.Discard();  // nothing it brings is acted on
    if (auto t = weak.lock()) {
      executor_->Post(
          [this, t, ahead, deferred] { RunAgainWithStoredHistory(t, ahead, *deferred); });
    }
  });
}

void HeavyWorker::FinishTurn(const std::shared_ptr<Turn>& turn, wf::v1::TurnRecord record) {
  const auto& req = turn->request;
  if (turn->handed_back) {
    ReleaseTurn(turn);
    return;
  }
  if (record.status() == "ok") {
    turns_ok_.fetch_add(1, std::memory_order_relaxed);
  } else if (record.status() == "cancelled") {
    turns_cancelled_.fetch_add(1, std::memory_order_relaxed);
  } else {
    turns_failed_.fetch_add(1, std::memory_order_relaxed);
  }
  // Stored, then appended to the hot copy and unlocked in one Redis round trip.
  StopLeaseRenewal(*turn);
  const std::string unlock_owner = turn->locked ? req.request_id() : std::string();
  Status stored = Status(ErrorCode::kInternal, "not attempted");
  for (int attempt = 0; attempt < 3 && !stored.ok(); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
    stored = store_.AppendTurn(record, unlock_owner);
    if (!stored.ok() && stored.error().code == ErrorCode::kBadRequest) break;  // for good
  }
  bool durable = stored.ok();
  if (!durable && stored.error().code != ErrorCode::kBadRequest) {
    // PostgreSQL is unreachable: the turn goes to WF_HISTORY, whose consumer stores it once
    // PostgreSQL is back, and to the Redis hot copy so the session's next turn sees it.
    Status handed = PublishHistoryRecord(record);
    if (handed.ok()) {
      durable = true;
      deferred_turns_.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("turn {} of {} handed to {} for storing later: {}", req.request_id(),
                   req.session_id(), HistoryStreamName(prefix_), stored.error().message);
      (void)store_.AppendTurnToHotCopy(record, unlock_owner);
    } else {
      spdlog::error("turn {} of {} not handed to {} either: {}", req.request_id(), req.session_id(),
                    HistoryStreamName(prefix_), handed.error().message);
    }
  }
  if (turn->locked && !stored.ok()) (void)store_.Unlock(req.session_id(), req.request_id());
  std::optional<wf::v1::QueryEvent> terminal;
  {
    std::lock_guard lock(turn->terminal_mu);
    terminal.swap(turn->terminal);
  }
  ReleaseTurn(turn);  // before the client can see the outcome (see ReleaseTurn)
  if (durable) {
    if (terminal) PublishEvent(*turn, std::move(*terminal));
    turn->msg->Ack();
  } else if (stored.error().code == ErrorCode::kBadRequest) {
    // Refused for good (e.g. its run id was stored for another session meanwhile): no success
    // is reported and a redelivery cannot help.
    store_failures_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("turn {} of {} refused by the store: {}", req.request_id(), req.session_id(),
                  stored.error().message);
    // SessionStore: "run_id X is stored for another session" / "for this session with another
    // message": another query reused the id.
    const bool duplicate = stored.error().message.find(" is stored for ") != std::string::npos;
    EmitTerminalError(turn, duplicate ? ErrorCode::kDuplicateRequestId : ErrorCode::kBadRequest,
                      duplicate ? "request_id " + req.request_id() +
                                      " already names a stored turn of another session or with "
                                      "another message; send a new request_id"
                                : "turn could not be stored: " + stored.error().message);
    turn->msg->Term();
  } else {
    // Neither PostgreSQL nor JetStream took it: the answer is not reported as a success. The
    // client gets an error; JetStream redelivers the query (a worker runs it again) until its
    // last delivery, which ends it for good.
    store_failures_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("turn {} of {} not stored: {}", req.request_id(), req.session_id(),
                  stored.error().message);
    EmitTerminalError(turn, ErrorCode::kUnavailable, "turn could not be stored");
    if (turn->msg->Delivered() >= static_cast<uint64_t>(options_.max_deliver)) {
      turn->msg->Term();
    } else {
      turn->msg->NakWithDelay(std::chrono::seconds(2));
    }
  }
  CountTurn(*turn, record.status() == "error" ? "turn failed" : "");
}

Status HeavyWorker::PublishHistoryRecord(const wf::v1::TurnRecord& record) {
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  // Nats-Msg-Id: a redelivered turn handed over twice within the duplicate window is stored once
  // (storing is idempotent by run id anyway).
  js_->PublishAsync(prefix_ + ".history.append", record.SerializeAsString(),
                    "turn:" + record.run_id(), {},
                    [done](Status status, bool /*duplicate: already handed over*/) {
                      done->set_value(std::move(status));
                    });
  if (result.wait_for(kHistoryPublishTimeout) != std::future_status::ready) {
    return Status(ErrorCode::kUnavailable, "JetStream did not acknowledge the turn record");
  }
  return result.get();
}

void HeavyWorker::ReleaseTurn(const std::shared_ptr<Turn>& turn) {
  if (turn->released.exchange(true)) return;
  {
    std::lock_guard lock(mu_);
    auto it = active_.find(turn->request.request_id());
    if (it != active_.end() && it->second == turn) active_.erase(it);
  }
  active_count_.fetch_sub(1);
  if (intake_) intake_->Wake();
}

void HeavyWorker::OnHistoryMessage(natsMsg* raw) {
  auto item = std::make_shared<HistoryItem>(std::make_shared<JsMessage>(raw, conn_));
  // A TurnRecordBatch (lightweight workers batch their flow turns) or one TurnRecord.
  const char* type = nullptr;
  JsMessage& msg = *item->msg;
  const bool batch = natsMsgHeader_Get(msg.msg, kPayloadTypeHeader, &type) == NATS_OK && type &&
                     std::string_view(type) == "wf.v1.TurnRecordBatch";
  item->parsed =
      batch ? item->records.ParseFromArray(natsMsg_GetData(msg.msg), natsMsg_GetDataLength(msg.msg))
            : item->records.add_turns()->ParseFromArray(natsMsg_GetData(msg.msg),
                                                        natsMsg_GetDataLength(msg.msg));
  // The sessions the record writes (an undecodable one is terminated without a store: it waits
  // for nothing). A turn without a session id is refused alone by the store (NormalizeTurn),
  // and the record's other turns are stored: it has no session to wait for.
  std::vector<std::string> sessions;
  if (item->parsed) {
    for (const auto& record : item->records.turns()) {
      if (!record.session_id().empty()) sessions.push_back(record.session_id());
    }
  }
  history_in_flight_.fetch_add(1);
  {
    std::lock_guard lock(history_mu_);
    if (!held_history_.empty()) {
      // PostgreSQL failed for an earlier record: this one waits behind it, so records of one
      // session are stored in the order they were published.
      held_history_.emplace(msg.StreamSeq(), item);
      return;
    }
    if (!history_order_.Arrive(msg.StreamSeq(), sessions)) {
      waiting_history_.emplace(msg.StreamSeq(), item);
      return;
    }
  }
  store_executor_->Post([this, item] { StoreInOrder(item); });
}

void HeavyWorker::StoreInOrder(const std::shared_ptr<HistoryItem>& item) {
  const bool settled = StoreHistoryItem(*item);
  const std::uint64_t seq = item->msg->StreamSeq();
  std::vector<std::shared_ptr<HistoryItem>> ready;
  {
    std::lock_guard lock(history_mu_);
    if (settled) {
      for (std::uint64_t id : history_order_.Done(seq)) {
        auto waiting = waiting_history_.extract(id);
        if (!waiting.empty()) ready.push_back(std::move(waiting.mapped()));
      }
    } else {
      // Kept for the retry, and what waits behind it (sharing a session with it or with what
      // shares one) keeps its place: all of it is retried in stream order.
      std::vector<std::uint64_t> behind = history_order_.Abandon(seq);
      if (shutting_down_) {
        item->msg->Nak();  // another worker stores it (the shutdown hands back the others)
        history_in_flight_.fetch_sub(1);
      } else {
        held_history_.emplace(seq, item);
        for (std::uint64_t id : behind) {
          auto waiting = waiting_history_.extract(id);
          if (!waiting.empty()) held_history_.emplace(id, std::move(waiting.mapped()));
        }
        if (history_retry_task_ == 0) ArmHistoryRetry();
      }
    }
  }
  for (auto& next : ready) store_executor_->Post([this, next] { StoreInOrder(next); });
  if (settled) {
    history_in_flight_.fetch_sub(1);
    slots_cv_.notify_all();
  }
}

bool HeavyWorker::StoreHistoryItem(const HistoryItem& item) {
  JsMessage& msg = *item.msg;
  if (!item.parsed) {
    spdlog::warn("undecodable turn record on {}: terminated", natsMsg_GetSubject(msg.msg));
    msg.Term();
    return true;
  }
  // One PostgreSQL transaction for the whole batch; idempotent by run_id, so a message that
  // is retried after a failure stores nothing twice.
  const std::size_t count = static_cast<std::size_t>(item.records.turns_size());
  Status stored = store_.AppendTurns({item.records.turns().begin(), item.records.turns().end()});
  if (stored.ok()) {
    history_stored_.fetch_add(count, std::memory_order_relaxed);
    msg.Ack();
    return true;
  }
  if (stored.error().code == ErrorCode::kBadRequest) {
    // Refused by the database (the rest of a batch is stored): retrying cannot change that.
    spdlog::error("turn records refused for good: {}", stored.error().message);
    msg.Term();
    return true;
  }
  store_failures_.fetch_add(1, std::memory_order_relaxed);
  spdlog::warn("{} turns not stored yet: {}", count, stored.error().message);
  return false;
}

void HeavyWorker::ArmHistoryRetry() {
  history_retry_task_ = timer_.After(
      history_retry_delay_, [this] { store_executor_->Post([this] { RetryHeldHistory(); }); });
}

void HeavyWorker::RetryHeldHistory() {
  for (;;) {
    std::shared_ptr<HistoryItem> next;
    {
      std::lock_guard lock(history_mu_);
      history_retry_task_ = 0;
      if (held_history_.empty()) {
        history_retry_delay_ = kHistoryRetryFirst;
        return;
      }
      // Each attempt tells JetStream the held records are still being worked on (the history
      // consumer's ack_wait is 30 s; attempts are at most kHistoryRetryMax apart).
      for (auto& [seq, held] : held_history_) held->msg->InProgress();
      if (history_order_.storing() > 0) {
        // A record taken beside the one that failed is still being stored, and a held one may
        // share a session with it: after it.
        if (!shutting_down_) ArmHistoryRetry();
        return;
      }
      next = held_history_.begin()->second;
    }
    if (!StoreHistoryItem(*next)) {
      std::lock_guard lock(history_mu_);
      history_retry_delay_ = std::min(history_retry_delay_ * 2, kHistoryRetryMax);
      if (!shutting_down_) ArmHistoryRetry();
      return;
    }
    {
      std::lock_guard lock(history_mu_);
      held_history_.erase(held_history_.begin());
    }
    history_in_flight_.fetch_sub(1);
    slots_cv_.notify_all();
  }
}

void HeavyWorker::OnDeliveriesExhausted(const NatsMsgView& msg) {
  // io.nats.jetstream.advisory.v1.max_deliver: {"stream", "consumer", "stream_seq",
  // "deliveries", ...}
  const nlohmann::json advisory = nlohmann::json::parse(msg.data(), nullptr, false);
  if (!advisory.is_object()) return;
  const auto seq = advisory.find("stream_seq");
  const auto deliveries = advisory.find("deliveries");
  if (seq == advisory.end() || !seq->is_number_unsigned()) return;
  const std::uint64_t stream_seq = seq->get<std::uint64_t>();
  const std::uint64_t count = deliveries != advisory.end() && deliveries->is_number_unsigned()
                                  ? deliveries->get<std::uint64_t>()
                                  : static_cast<std::uint64_t>(options_.max_deliver);
  session_executor_->Post([this, stream_seq, count] { AnswerExhaustedQuery(stream_seq, count); });
}

void HeavyWorker::AnswerExhaustedQuery(std::uint64_t stream_seq, std::uint64_t deliveries) {
  natsMsg* raw = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const std::string stream = HeavyStreamName(prefix_);
  natsStatus s = js_GetMsg(&raw, js_->raw(), stream.c_str(), stream_seq, nullptr, &jerr);
  if (s != NATS_OK) {
    spdlog::warn(
        "query {} of {} used up its {} deliveries and cannot be read ({}): its client "
        "is not told",
        stream_seq, stream, deliveries, JsErrorText(s, jerr));
    return;
  }
  wf::v1::QueryRequest request;
  const bool parsed = request.ParseFromArray(natsMsg_GetData(raw), natsMsg_GetDataLength(raw));
  natsMsg_Destroy(raw);
  if (!parsed || request.reply_to().empty() || request.request_id().empty()) return;
  {
    std::lock_guard lock(mu_);
    if (active_.count(request.request_id()) > 0) return;  // still running here
  }
  if (auto found = store_.FindRun(request.request_id()); found.ok() && found->has_value()) {
    return;  // it ended and was stored; only its ack was lost
  }
  spdlog::warn("turn {} of {}: no worker finished it in {} deliveries: its client is told",
               request.request_id(), request.session_id(), deliveries);
  turns_failed_.fetch_add(1, std::memory_order_relaxed);
  // As a further attempt, so a client drops what the last one streamed before it died.
  Turn turn(nullptr, conn_);
  turn.request = std::move(request);
  turn.reply_to = turn.request.reply_to();
  turn.traceparent = turn.request.traceparent();
  turn.attempt = static_cast<uint32_t>(std::min<std::uint64_t>(deliveries + 1, UINT32_MAX));
  PublishError(turn, ErrorCode::kUnavailable,
               "no agent worker finished this turn in " + std::to_string(deliveries) +
                   (deliveries == 1 ? " delivery" : " deliveries") +
                   " (a worker running it may have crashed); it is not run again");
}

void HeavyWorker::OnCancel(const NatsMsgView& msg) {
  std::string_view subject = msg.subject();
  std::string request_id(subject.substr(subject.rfind('.') + 1));
  {
    std::lock_guard lock(mu_);
    auto it = active_.find(request_id);
    if (it != active_.end()) {
      it->second->cancelled = true;
      if (it->second->agent) it->second->agent->Cancel();
      request_id.clear();
    }
  }
  if (!request_id.empty()) {
    // Not running here: perhaps still queued in JetStream, so it is dropped when fetched (every
    // worker gets every cancel).
    RememberCancel(request_id);
    return;
  }
  spdlog::info("turn {} cancelled", std::string(subject.substr(subject.rfind('.') + 1)));
}

void HeavyWorker::OnSessionRequest(const NatsMsgView& msg, bool del) {
  std::string reply(msg.reply());
  if (reply.empty()) return;
  if (session_requests_queued_.fetch_add(1, std::memory_order_relaxed) >=
      std::max(1, options_.max_queued_session_requests)) {
    session_requests_queued_.fetch_sub(1, std::memory_order_relaxed);
    wf::v1::SessionReply out;
    out.mutable_error()->set_code(std::string(WireName(ErrorCode::kUnavailable)));
    out.mutable_error()->set_message("too many session requests waiting here; retry shortly");
    ReplySession(reply, out, std::chrono::nanoseconds(0), "(refused)");
    return;
  }
  std::string data(msg.data());
  session_executor_->Post([this, reply, data, del] {
    session_requests_queued_.fetch_sub(1, std::memory_order_relaxed);
    auto started = Clock::now();
    wf::v1::SessionRequest request;
    wf::v1::SessionReply out;
    auto fail = [&](ErrorCode code, const std::string& message) {
      out.mutable_error()->set_code(std::string(WireName(code)));
      out.mutable_error()->set_message(message);
    };
    auto store_failed = [&](const Error& error) {
      const Error client = ClientSessionError(error);
      if (client.message != error.message) {
        spdlog::warn("session {} {}: {}", request.session_id(), del ? "delete" : "get",
                     error.message);
      }
      fail(client.code, client.message);
    };
    if (!request.ParseFromString(data) || request.session_id().empty()) {
      fail(ErrorCode::kBadMessage, "payload is not a wf.v1.SessionRequest with a session_id");
    } else if (del) {
      // Stop turns of that session that run here before forgetting it.
      {
        std::lock_guard lock(mu_);
        for (auto& [id, turn] : active_) {
          if (turn->request.session_id() == request.session_id()) {
            turn->cancelled = true;
            if (turn->agent) turn->agent->Cancel();
          }
        }
      }
      auto deleted = store_.DeleteSession(request.session_id());
      if (!deleted.ok()) {
        store_failed(deleted.error());
      } else if (!*deleted) {
        fail(ErrorCode::kSessionNotFound, "no session " + request.session_id());
      } else {
        out.mutable_ack()->set_session_id(request.session_id());
        out.mutable_ack()->set_deleted(true);
      }
    } else {
      auto history = store_.GetSession(request.session_id());
      if (!history.ok()) {
        store_failed(history.error());
      } else {
        *out.mutable_history() = std::move(history).value();
      }
    }
    if (std::size_t omitted = FitSessionReply(out, MaxPayload() - 256); omitted > 0) {
      spdlog::info("session {}: the oldest {} messages left out of the reply to fit NATS",
                   request.session_id(), omitted);
    }
    ReplySession(reply, out, Clock::now() - started, request.session_id());
  });
}

void HeavyWorker::ReplySession(const std::string& reply, const wf::v1::SessionReply& out,
                               std::chrono::nanoseconds took, std::string_view session_id) {
  session_stats_->Record(took, out.has_error() && out.error().code() != "session_not_found"
                                   ? out.error().message()
                                   : "");
  const std::string payload = out.SerializeAsString();
  if (Status sent = conn_.Publish(reply, payload); !sent.ok()) {
    spdlog::warn("session {} reply ({} bytes) not published: {}", session_id, payload.size(),
                 sent.error().message);
  }
}

void HeavyWorker::StopLeaseRenewal(Turn& turn) {
  std::lock_guard lease(turn.lease_mu);
  turn.lease_renewing = false;
}

void HeavyWorker::TickInProgress() {
  std::lock_guard tick(tick_mu_);
  if (!ticking_ || (shutting_down_ && active_count_.load() == 0)) return;
  std::vector<std::shared_ptr<Turn>> turns;
  std::vector<std::shared_ptr<JsMessage>> held;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, turn] : active_) turns.push_back(turn);
    for (auto& [ptr, msg] : held_messages_) held.push_back(msg);
  }
  for (auto& turn : turns) turn->msg->InProgress();
  for (auto& msg : held) msg->InProgress();
  // On a thread of its own: executor threads may all be blocked on a slow PostgreSQL, and a
  // renewal that waits behind them lets the lease run out while the turn still runs.
  lease_executor_->Post([this, turns] {
    auto lease = options_.ack_wait + options_.in_progress_every;
    for (const auto& turn : turns) {
      std::lock_guard guard(turn->lease_mu);
      if (!turn->lease_renewing) continue;
      // Takes the lock again if it is gone (expired, Redis flushed or restarted): the turn
      // still runs, so the session must stay busy for others.
      Status renewed =
          store_.RenewLock(turn->request.session_id(), turn->request.request_id(), lease);
      if (!renewed.ok()) {
        spdlog::warn("turn {}: the lock of session {} could not be renewed: {}",
                     turn->request.request_id(), turn->request.session_id(),
                     renewed.error().message);
      }
    }
  });
  tick_task_ = timer_.After(options_.in_progress_every, [this] { TickInProgress(); });
}

void HeavyWorker::TickHotCopies() {
  std::lock_guard tick(tick_mu_);
  if (!ticking_) return;
  if (store_.StaleHotCopies() > 0) lease_executor_->Post([this] { store_.DropStaleHotCopies(); });
  hot_copy_task_ = timer_.After(kHotCopyDropEvery, [this] { TickHotCopies(); });
}

void HeavyWorker::Shutdown(std::chrono::milliseconds grace) {
  if (shutting_down_.exchange(true)) return;
  fetching_ = false;
  slots_cv_.notify_all();
  if (intake_) intake_->Stop();
  if (history_fetcher_.joinable()) history_fetcher_.join();
  auto until = Clock::now() + grace;
  while (active_count_.load() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Whatever still runs goes back to JetStream for another worker, unstored and unanswered here.
  std::vector<std::shared_ptr<Turn>> left;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, turn] : active_) left.push_back(turn);
  }
  // A turn's agent under mu_: one being made meanwhile (RunAgent) sees handed_back and ends.
  auto agent_of = [this](Turn& turn) {
    std::lock_guard lock(mu_);
    return turn.agent;
  };
  for (auto& turn : left) {
    {
      std::lock_guard lock(mu_);
      turn->handed_back = true;
    }
    turn->msg->Nak();
    handed_back_.fetch_add(1, std::memory_order_relaxed);
    if (auto agent = agent_of(*turn)) agent->Cancel();
    StopLeaseRenewal(*turn);
    if (turn->locked) (void)store_.Unlock(turn->request.session_id(), turn->request.request_id());
    spdlog::info("turn {} handed back for redelivery", turn->request.request_id());
  }
  // Cancelled agents end within ~100 ms; wait for them so no callback outlives the executor.
  auto cancel_until = Clock::now() + std::chrono::seconds(2);
  for (auto& turn : left) {
    for (auto agent = agent_of(*turn); agent && !agent->finished() && Clock::now() < cancel_until;
         agent = agent_of(*turn)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // PostgreSQL's answers for turns started ahead of them (a 250 ms statement timeout each)
  // call back into this worker and may post to the executor.
  while (lookups_pending_.load() > 0 && Clock::now() < cancel_until + std::chrono::seconds(1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    std::lock_guard tick(tick_mu_);
    ticking_ = false;
    timer_.Cancel(tick_task_);
    timer_.Cancel(hot_copy_task_);
  }
  {
    // Records held for a PostgreSQL outage go back to JetStream for another worker.
    std::lock_guard lock(history_mu_);
    if (history_retry_task_ != 0) timer_.Cancel(history_retry_task_);
    history_retry_task_ = 0;
    for (auto& [seq, held] : held_history_) held->msg->Nak();
    held_history_.clear();
    // And those waiting for a record still being stored (which ends on the store pool).
    for (auto& [seq, waiting] : waiting_history_) waiting->msg->Nak();
    waiting_history_.clear();
  }
  subs_.clear();
  if (service_) service_->Stop();
  executor_.reset();          // runs what was queued (which may post stores), then joins
  session_executor_.reset();  // session requests already taken are answered
  store_executor_.reset();    // then the stores
  lease_executor_.reset();
  if (history_sub_) {
    natsSubscription_Destroy(history_sub_);
    history_sub_ = nullptr;
  }
  tools_.reset();
  // The last events just sent are confirmed within milliseconds while their receivers are
  // there; wait for that (within the grace) so an exit does not end their resending early.
  if (confirmer_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (!confirmer_->WaitIdle(std::max(left, std::chrono::milliseconds(1000)))) {
      spdlog::warn("shutting down with {} last event(s) not confirmed by their receivers",
                   confirmer_->stats().awaiting);
    }
  }
  // The intake, its connection and its loop stay until the destructor (in that order): Ready
  // may still read the connection, and a message of the last pull is handed back (Nak).
  (void)conn_.Flush(std::chrono::milliseconds(1000));
}

bool HeavyWorker::Ready(std::string* why) {
  if (!conn_.Connected() || (intake_conn_ && !intake_conn_->Connected())) {
    *why = "NATS disconnected";
    return false;
  }
  if (!store_.Healthy()) {
    *why = "Redis or PostgreSQL unreachable";
    return false;
  }
  return true;
}

std::string HeavyWorker::MetricsText() const {
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, uint64_t value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + std::to_string(value) + "\n";
  };
  metric("wf_heavy_turns_started_total", "counter", "Agent turns taken from JetStream.",
         turns_started_.load());
  metric("wf_heavy_turns_ok_total", "counter", "Turns answered.", turns_ok_.load());
  metric("wf_heavy_turns_failed_total", "counter", "Turns ended by an error.",
         turns_failed_.load());
  metric("wf_heavy_turns_cancelled_total", "counter", "Turns cancelled.", turns_cancelled_.load());
  metric("wf_heavy_redeliveries_total", "counter", "Turns received again after a failure.",
         redeliveries_.load());
  metric("wf_heavy_handed_back_total", "counter", "Turns handed back on shutdown.",
         handed_back_.load());
  metric("wf_heavy_turns_started_ahead_total", "counter",
         "Turns whose LLM call started before PostgreSQL said their session was new.",
         turns_started_ahead_.load());
  metric("wf_heavy_turns_restarted_total", "counter",
         "Turns started ahead whose session PostgreSQL held after all: run again with it.",
         restarted_turns_.load());
  metric("wf_heavy_history_stored_total", "counter", "Flow turns stored from WF_HISTORY.",
         history_stored_.load());
  metric("wf_heavy_store_failures_total", "counter", "Turns that could not be stored.",
         store_failures_.load());
  metric("wf_heavy_turns_deferred_total", "counter",
         "Finished turns handed to WF_HISTORY because PostgreSQL failed.", deferred_turns_.load());
  metric("wf_heavy_active_turns", "gauge", "Turns in flight.",
         static_cast<uint64_t>(active_count_.load()));
  metric("wf_heavy_turns_storing", "gauge",
         "Finished turns waiting for or in their store (PostgreSQL, then Redis); a number that "
         "stays up means PostgreSQL is slow.",
         static_cast<uint64_t>(std::max(0, turns_storing_.load())));
  metric("wf_heavy_turn_objects", "gauge",
         "Turn objects allocated in this process; above active_turns once idle means a leak.",
         static_cast<uint64_t>(std::max<int64_t>(0, g_turn_objects.load())));
  if (confirmer_) {
    const EndConfirmer::Stats ends = confirmer_->stats();
    metric("wf_heavy_end_events_awaiting_confirmation", "gauge",
           "Last events of turns sent and not yet confirmed by their receiver (the gateway).",
           ends.awaiting);
    metric("wf_heavy_end_events_resent_total", "counter",
           "Last events sent again because their receiver had not confirmed them (e.g. while it "
           "reconnected to NATS).",
           ends.resent);
    metric("wf_heavy_end_events_unconfirmed_total", "counter",
           "Last events given up at their turn's deadline without a confirmation.",
           ends.unconfirmed);
  }
  metric("wf_nats_connected", "gauge", "1 while the NATS connection is up.",
         conn_.Connected() ? 1 : 0);
  return out;
}

}  // namespace wf
