// wf-heavy's handling of what can go wrong around an agent turn, seen over HTTP and over NATS
// (queries published straight on wf.heavy.query, as outside publishers do): a PostgreSQL outage,
// reused request ids, invalid input, far deadlines, answers larger than a NATS message, a delete
// or a cancel racing a turn, and a redelivered turn's events. Every server and binary is real.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "e2e/stack.h"
#include "nats/connection.h"
#include "support/test_support.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

/// The stack without the gateway and the lightweight worker: `heavy_workers` wf-heavy processes
/// (ack wait `ack_wait_ms`) that the test publishes to directly.
StackOptions HeavyOnly(int heavy_workers = 1, int ack_wait_ms = 30000) {
  return {.heavy_workers = heavy_workers,
          .ack_wait_ms = ack_wait_ms,
          .start_gateway = false,
          .start_lightweight = false};
}

json LlmStats(Stack& s) { return json::parse(HttpCall("GET", s.LlmUrl("/_stats")).body); }

/// The value of an unlabelled metric of the i-th wf-heavy, or -1.
long long HeavyMetric(Stack& s, std::size_t i, const std::string& name) {
  const HttpReply m = HttpCall(
      "GET", "http://127.0.0.1:" + std::to_string(s.heavy_admin_ports_.at(i)) + "/metrics");
  const std::string text = "\n" + m.body;
  const std::size_t at = text.find("\n" + name + " ");
  if (m.status != 200 || at == std::string::npos) return -1;
  return std::stoll(text.substr(at + name.size() + 2));
}

/// A NATS client that publishes queries on wf.heavy.query and collects their events.
class HeavyClient {
 public:
  explicit HeavyClient(Stack& s) {
    NatsOptions options;
    options.url = s.nats_.url();
    auto conn = NatsConnection::Connect(options);
    if (!conn.ok()) throw std::runtime_error(conn.error().message);
    conn_ = std::move(conn).value();
    inbox_ = NatsConnection::NewInbox();
    auto sub = conn_->Subscribe(inbox_ + ".*", [this](const NatsMsgView& m) {
      wf::v1::QueryEvent event;
      if (!event.ParseFromArray(m.data().data(), static_cast<int>(m.data().size()))) return;
      std::lock_guard lock(mu_);
      events_.push_back(std::move(event));
    });
    if (!sub.ok()) throw std::runtime_error(sub.error().message);
    sub_ = std::move(sub).value();
  }

  /// Publishes a query whose events come to this client (tagged by request id); its deadline is
  /// 20 s from now unless `deadline_unix_ms` is not 0.
  void Send(const std::string& request_id, const std::string& session, const std::string& message,
            std::int64_t deadline_unix_ms = 0, bool stream = false) {
    wf::v1::QueryRequest request;
    request.set_request_id(request_id);
    request.set_session_id(session);
    request.set_message(message);
    request.set_reply_to(inbox_ + ".r");
    request.set_stream(stream);
    request.set_deadline_unix_ms(deadline_unix_ms != 0 ? deadline_unix_ms
                                                       : UnixMillisNow() + 20000);
    Publish(request);
  }

  /// Publishes `request` on wf.heavy.query as it is (its events go to its own reply_to).
  void Publish(const wf::v1::QueryRequest& request) {
    ASSERT_TRUE(conn_->Publish("wf.heavy.query", request.SerializeAsString()).ok());
    ASSERT_TRUE(conn_->Flush(milliseconds(2000)).ok());
  }

  std::vector<wf::v1::QueryEvent> Events(const std::string& request_id) {
    std::lock_guard lock(mu_);
    std::vector<wf::v1::QueryEvent> out;
    for (const auto& e : events_) {
      if (e.request_id() == request_id) out.push_back(e);
    }
    return out;
  }

  /// The first terminal event (final or error) of `request_id`, waiting up to `timeout`.
  std::optional<wf::v1::QueryEvent> Terminal(const std::string& request_id,
                                             milliseconds timeout = milliseconds(15000)) {
    std::optional<wf::v1::QueryEvent> out;
    Eventually(
        [&] {
          for (const auto& e : Events(request_id)) {
            if (e.has_final() || e.has_error()) {
              out = e;
              return true;
            }
          }
          return false;
        },
        timeout);
    return out;
  }

  /// True once a token event of `request_id` arrived (the turn is running), within `timeout`.
  bool WaitToken(const std::string& request_id, milliseconds timeout = milliseconds(10000)) {
    return Eventually(
        [&] {
          for (const auto& e : Events(request_id)) {
            if (e.has_token()) return true;
          }
          return false;
        },
        timeout);
  }

  NatsConnection& conn() { return *conn_; }

 private:
  std::unique_ptr<NatsConnection> conn_;
  std::string inbox_;
  std::mutex mu_;
  std::vector<wf::v1::QueryEvent> events_;
  NatsSubscription sub_;  // last: gone (its handler finished) before what the handler touches
};

/// wf.session.get over NATS.
wf::v1::SessionReply GetSession(HeavyClient& c, const std::string& session) {
  wf::v1::SessionRequest request;
  request.set_session_id(session);
  auto reply = c.conn().Request("wf.session.get", request.SerializeAsString(), seconds(10));
  wf::v1::SessionReply out;
  if (reply.ok()) out.ParseFromString(*reply);
  return out;
}

// A PostgreSQL outage: the turn the client was told succeeded goes to WF_HISTORY and is stored
// once PostgreSQL is back (it used to be published as a success and then lost).
TEST(HeavyWorkerTest, ATurnAnsweredDuringAPostgresOutageIsStoredWhenItComesBack) {
  Stack s;
  ASSERT_EQ(s.Query("first words", "p1").first, 200) << s.Logs();  // the hot copy exists
  s.pg_.Stop();
  auto [status, body] = s.Query("said while the database was down", "p1");
  ASSERT_EQ(status, 200) << body << s.Logs();
  EXPECT_EQ(body["status"], "success");
  // The next turn of the session sees it (Redis hot copy) while PostgreSQL is still down.
  auto [status2, body2] = s.Query("please recall", "p1");
  ASSERT_EQ(status2, 200) << body2 << s.Logs();
  EXPECT_EQ(body2["message"],
            "history: first words | said while the database was down | please recall");
  // The outage lasts while the history consumer retries a few times (it used to give up on the
  // query after three deliveries).
  ASSERT_TRUE(Eventually([&] { return HeavyMetric(s, 0, "wf_heavy_store_failures_total") >= 3; },
                         seconds(60)))
      << s.Logs();
  s.pg_.Start();
  json history;
  EXPECT_TRUE(Eventually(
      [&] {
        auto r = HttpCall("GET", s.Url("/api/v1/session/p1"));
        history = json::parse(r.body, nullptr, false);
        if (r.status != 200) return false;
        int found = 0;
        for (auto& m : history["messages"]) {
          if (m["content"] == "said while the database was down" ||
              m["content"] == "please recall") {
            ++found;
          }
        }
        return found == 2;
      },
      seconds(90)))
      << history.dump() << s.Logs();
  // Stored in the order they happened.
  std::vector<std::string> users;
  for (auto& m : history["messages"]) {
    if (m["role"] == "user") users.push_back(m["content"]);
  }
  EXPECT_EQ(users, (std::vector<std::string>{"first words", "said while the database was down",
                                             "please recall"}));
  EXPECT_GE(HeavyMetric(s, 0, "wf_heavy_turns_deferred_total"), 2);
  // Acked once handed over: not redelivered (and so not run again by the LLM).
  EXPECT_EQ(HeavyMetric(s, 0, "wf_heavy_redeliveries_total"), 0);
}

// A session GET or DELETE while PostgreSQL (then Redis) is down: 503 `unavailable` saying what
// failed, over HTTP and over NATS. Its message used to be the store's, which named the
// database's host, port and user (the connection URI and libpq's text) to any client; those are
// in wf-heavy's log only, and there without the user of the URI.
TEST(HeavyWorkerTest, SessionRequestsDuringAnOutageNameNoServer) {
  Stack s;
  HeavyClient c(s);
  ASSERT_EQ(s.Query("first words", "outage-1").first, 200) << s.Logs();
  // The servers as the worker was given them (PostgresServer::url is postgresql://postgres@...).
  auto reveals = [](const std::string& message, int port) {
    for (const std::string& part : {std::string("127.0.0.1"), std::to_string(port),
                                    std::string("postgres"), std::string("redis://")}) {
      if (message.find(part) != std::string::npos) return true;
    }
    return false;
  };
  auto expect_unavailable = [&](const std::string& method, int port) {
    const HttpReply r = HttpCall(method, s.Url("/api/v1/session/outage-1"));
    EXPECT_EQ(r.status, 503) << method << " " << r.body << s.Logs();
    const json error = json::parse(r.body, nullptr, false)["error"];
    ASSERT_TRUE(error.is_object()) << method << " " << r.body;
    EXPECT_EQ(error["code"], "unavailable") << method << " " << r.body;
    EXPECT_EQ(error["message"], "session store unavailable") << method << " " << r.body;
    EXPECT_FALSE(reveals(error["message"].dump(), port)) << method << " " << r.body;
  };

  s.pg_.Stop();
  expect_unavailable("GET", s.pg_.port());
  expect_unavailable("DELETE", s.pg_.port());
  const wf::v1::SessionReply reply = GetSession(c, "outage-1");
  ASSERT_TRUE(reply.has_error()) << reply.DebugString();
  EXPECT_EQ(reply.error().code(), "unavailable");
  EXPECT_FALSE(reveals(reply.error().message(), s.pg_.port())) << reply.error().message();
  // The log says which server failed, without the URI's user.
  const std::string log = s.heavy_[0]->Log();
  EXPECT_NE(log.find("session outage-1 get: postgres postgresql://***@127.0.0.1:" +
                     std::to_string(s.pg_.port())),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("postgres@"), std::string::npos) << log;

  // Redis down: the DELETE clears PostgreSQL, then fails on the hot copy.
  s.pg_.Start();
  s.redis_.process().Stop();
  expect_unavailable("DELETE", s.redis_.port());
}

// A request id reused directly on wf.heavy.query: the same turn again is answered from the store
// without the LLM; another query with that id is refused (before the LLM in the same session,
// when storing in another), nothing stored, never reported as a success.
TEST(HeavyWorkerTest, AReusedRequestIdIsAnsweredFromTheStoreOrRefused) {
  Stack s;
  HeavyClient c(s);
  c.Send("dup-1", "dup-a", "hello there");
  auto first = c.Terminal("dup-1");
  ASSERT_TRUE(first && first->has_final()) << (first ? first->DebugString() : "") << s.Logs();
  const int llm_calls = LlmStats(s)["requests"].get<int>();

  // The same turn again (a publisher retrying): the session's history holds its run, so the
  // stored answer is sent, without calling the LLM.
  HeavyClient again(s);
  again.Send("dup-1", "dup-a", "hello there");
  auto repeated = again.Terminal("dup-1");
  ASSERT_TRUE(repeated && repeated->has_final()) << (repeated ? repeated->DebugString() : "");
  EXPECT_EQ(repeated->final().answer(), first->final().answer());

  // Another message with that id in the same session: refused before the LLM runs.
  HeavyClient other(s);
  other.Send("dup-1", "dup-a", "a different question");
  auto refused = other.Terminal("dup-1");
  ASSERT_TRUE(refused && refused->has_error()) << (refused ? refused->DebugString() : "");
  EXPECT_EQ(refused->error().code(), "duplicate_request_id") << refused->DebugString();
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), llm_calls);

  // The same id in another session: that session's history does not name it, so it is not
  // looked up before running (no PostgreSQL read before every first token); storing refuses it,
  // and the answer is not reported as a success.
  HeavyClient elsewhere(s);
  elsewhere.Send("dup-1", "dup-b", "hello there");
  auto refused2 = elsewhere.Terminal("dup-1");
  ASSERT_TRUE(refused2 && refused2->has_error()) << (refused2 ? refused2->DebugString() : "");
  EXPECT_EQ(refused2->error().code(), "duplicate_request_id");

  EXPECT_EQ(HttpCall("GET", s.Url("/api/v1/session/dup-b")).status, 404);
  auto history = GetSession(c, "dup-a");
  ASSERT_TRUE(history.has_history()) << history.DebugString();
  EXPECT_EQ(history.history().turn_count(), 1u);

  // A request id longer than a run id may be: refused up front.
  const int llm_calls_now = LlmStats(s)["requests"].get<int>();
  HeavyClient longer(s);
  const std::string long_id(200, 'r');
  longer.Send(long_id, "dup-c", "hello");
  auto bad = longer.Terminal(long_id);
  ASSERT_TRUE(bad && bad->has_error());
  EXPECT_EQ(bad->error().code(), "bad_request") << bad->DebugString();
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), llm_calls_now);
}

// An invalid session id is a bad request at once, not "session store unavailable" after three
// deliveries.
// A publisher that reuses a request id the moment it has the answer (here: from inside the
// handler that received the `final`) gets its refusal at once, every time: the worker forgets
// the finished turn before publishing its end, so the new message is never taken for a
// redelivery of a turn still running (which would be kept unanswered until the ack wait).
// Another message with the request id of a turn still running (a publisher reusing ids
// concurrently, or retrying past JetStream's 2-minute duplicate window) used to be kept in
// progress, unanswered, until the ack wait (30 s) redelivered it. Asked on another reply subject
// it is refused at once; asked on the running turn's own subject it adds nothing (the running
// turn answers it, and an error there would end that request too).
TEST(HeavyWorkerTest, AQueryReusingTheIdOfARunningTurnIsAnsweredAtOnce) {
  Stack s;
  HeavyClient first(s);
  first.Send("busy-1", "busy-a", "answer slowly please", 0, /*stream=*/true);
  ASSERT_TRUE(first.WaitToken("busy-1")) << s.Logs();

  HeavyClient other(s);
  const auto asked = std::chrono::steady_clock::now();
  other.Send("busy-1", "busy-b", "a different question");
  auto refused = other.Terminal("busy-1", milliseconds(20000));
  ASSERT_TRUE(refused && refused->has_error()) << (refused ? refused->DebugString() : "");
  EXPECT_EQ(refused->error().code(), "duplicate_request_id");
  EXPECT_NE(refused->error().message().find("still running"), std::string::npos)
      << refused->error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::seconds(20))
      << "answered only after JetStream's ack wait";
  // The same id on the running turn's own reply subject: no second answer there.
  first.Send("busy-1", "busy-a", "answer slowly please", 0, /*stream=*/true);

  auto end = first.Terminal("busy-1");
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  EXPECT_EQ(end->final().answer(), "one two three four five six");
  std::this_thread::sleep_for(milliseconds(500));  // room for a wrong second answer
  int terminals = 0;
  for (const auto& e : first.Events("busy-1")) terminals += e.has_final() || e.has_error();
  EXPECT_EQ(terminals, 1);
  EXPECT_EQ(other.Events("busy-1").size(), 1u);
  // Stored once; a repeat of it now comes from the store.
  HeavyClient again(s);
  again.Send("busy-1", "busy-a", "answer slowly please");
  auto repeated = again.Terminal("busy-1");
  ASSERT_TRUE(repeated && repeated->has_final()) << (repeated ? repeated->DebugString() : "");
  EXPECT_EQ(repeated->final().answer(), "one two three four five six");
}

TEST(HeavyWorkerTest, ARequestIdReusedTheMomentItsAnswerArrivesIsAnsweredAtOnce) {
  Stack s;
  NatsOptions options;
  options.url = s.nats_.url();
  auto conn = std::move(NatsConnection::Connect(options)).value();
  const std::string inbox = NatsConnection::NewInbox();
  std::mutex mu;
  std::map<std::string, std::vector<wf::v1::QueryEvent>> ends;  // request id -> final/error
  auto query = [&](const std::string& id, const std::string& message) {
    wf::v1::QueryRequest request;
    request.set_request_id(id);
    request.set_session_id("reuse-" + id);
    request.set_message(message);
    request.set_reply_to(inbox);
    request.set_deadline_unix_ms(UnixMillisNow() + 20000);
    return conn->Publish("wf.heavy.query", request.SerializeAsString());
  };
  auto sub = conn->Subscribe(inbox, [&](const NatsMsgView& m) {
    wf::v1::QueryEvent event;
    if (!event.ParseFromArray(m.data().data(), static_cast<int>(m.data().size()))) return;
    if (!event.has_final() && !event.has_error()) return;
    bool first = false;
    {
      std::lock_guard lock(mu);
      auto& list = ends[event.request_id()];
      list.push_back(event);
      first = list.size() == 1;
    }
    if (first) (void)query(event.request_id(), "another question");  // at once
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(conn->Flush(milliseconds(2000)).ok());
  // Busy threads, more than the cores: the worker's threads are preempted often, so the moment
  // between publishing an answer and forgetting the turn is long enough to be hit.
  std::atomic<bool> busy{true};
  std::vector<std::thread> spinners;
  for (unsigned i = 0; i < 2 * std::max(1u, std::thread::hardware_concurrency()); ++i) {
    spinners.emplace_back([&busy] {
      while (busy.load(std::memory_order_relaxed)) {
      }
    });
  }
  struct StopSpinning {
    std::atomic<bool>& busy;
    std::vector<std::thread>& threads;
    ~StopSpinning() {
      busy = false;
      for (auto& t : threads) t.join();
    }
  } stop{busy, spinners};
  constexpr int kRounds = 20;
  for (int i = 0; i < kRounds; ++i) {
    const std::string id = "reuse-" + std::to_string(i);
    ASSERT_TRUE(query(id, "hello there").ok());
    ASSERT_TRUE(Eventually(
        [&] {
          std::lock_guard lock(mu);
          return ends[id].size() >= 2;
        },
        seconds(10)))
        << id << ": the reuse got no answer" << s.Logs();
    std::lock_guard lock(mu);
    ASSERT_TRUE(ends[id][0].has_final()) << ends[id][0].DebugString();
    ASSERT_TRUE(ends[id][1].has_error()) << ends[id][1].DebugString();
    EXPECT_EQ(ends[id][1].error().code(), "duplicate_request_id") << ends[id][1].DebugString();
  }
}

/// The `query` endpoint of wf-heavy's $SRV.STATS.
json HeavyQueryStats(HeavyClient& c) {
  auto reply = c.conn().Request("$SRV.STATS.heavy", "", seconds(2));
  if (!reply.ok()) return json();
  const json stats = json::parse(*reply, nullptr, false);
  if (!stats.is_object() || !stats.contains("endpoints")) return json();
  for (const json& endpoint : stats["endpoints"]) {
    if (endpoint["name"] == "query") return endpoint;
  }
  return json();
}

// Input that breaks the rules of wf.query, published straight on wf.heavy.query: refused at once
// as a bad request (not "session store unavailable" after three deliveries), the LLM never
// asked. A request id must be one subject token of [A-Za-z0-9_-] (else `wf.cancel.<id>` could
// not reach the turn, and the id would not be stored as given), and a negative deadline is a
// time long past. Each refusal is counted in $SRV.STATS.
TEST(HeavyWorkerTest, InvalidQueriesAreRefusedAtOnceAndCounted) {
  Stack s;
  HeavyClient c(s);
  const json before = HeavyQueryStats(c);
  c.Send("bad-session-1", "bad id with spaces!", "hello");
  auto event = c.Terminal("bad-session-1");
  ASSERT_TRUE(event && event->has_error()) << s.Logs();
  EXPECT_EQ(event->error().code(), "bad_request") << event->DebugString();
  for (const std::string& id :
       std::vector<std::string>{"a.b", "*", "with space", "x\r\ny", "qa.>"}) {
    c.Send(id, "fine-session", "hello");
    auto refused = c.Terminal(id);
    ASSERT_TRUE(refused && refused->has_error()) << id << s.Logs();
    EXPECT_EQ(refused->error().code(), "bad_request") << id << refused->DebugString();
    EXPECT_NE(refused->error().message().find("request_id"), std::string::npos)
        << refused->error().message();
  }
  c.Send("negative-deadline", "fine-session", "hello", -1);
  auto late = c.Terminal("negative-deadline");
  ASSERT_TRUE(late && late->has_error()) << s.Logs();
  EXPECT_EQ(late->error().code(), "deadline_exceeded") << late->DebugString();

  EXPECT_EQ(HeavyMetric(s, 0, "wf_heavy_redeliveries_total"), 0);
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), 0);
  const json after = HeavyQueryStats(c);
  ASSERT_TRUE(before.is_object() && after.is_object()) << before << after;
  EXPECT_EQ(after["num_requests"].get<int>() - before["num_requests"].get<int>(), 7) << after;
  EXPECT_EQ(after["num_errors"].get<int>() - before["num_errors"].get<int>(), 7) << after;
  EXPECT_GT(after["processing_time"].get<long long>(), 0) << after;
}

/// A flow turn's record as wf-lightweight publishes it on wf.history.append (one TurnRecord).
std::string FlowTurnRecord(const std::string& session, const std::string& run,
                           std::int64_t created_unix_ms) {
  wf::v1::TurnRecord turn;
  turn.set_session_id(session);
  turn.set_run_id(run);
  turn.set_request_id(run);
  turn.set_route("flow");
  turn.set_status("ok");
  for (const char* role : {"user", "assistant"}) {
    auto* message = turn.add_messages();
    message->set_role(role);
    message->set_content(std::string(role) + " of " + run);
    message->set_created_unix_ms(created_unix_ms);
  }
  return turn.SerializeAsString();
}

// Records PostgreSQL cannot hold (a time some 300,000 years ahead: "interval out of range") used
// to be held and retried for ever; two of them took both of a worker's history slots, and no
// record behind them was stored again. They are refused for good now, each turn on its own.
TEST(HeavyWorkerTest, RecordsThatCannotBeStoredDoNotHoldUpTheOnesBehindThem) {
  Stack s;
  HeavyClient c(s);
  for (const char* run : {"poison-1", "poison-2"}) {
    ASSERT_TRUE(c.conn()
                    .Publish("wf.history.append",
                             FlowTurnRecord(std::string("poisoned-") + run, run, 10000000000000000))
                    .ok());
  }
  ASSERT_TRUE(c.conn().Flush(seconds(2)).ok());
  std::this_thread::sleep_for(milliseconds(500));  // both taken (and, before, both held)
  ASSERT_TRUE(
      c.conn()
          .Publish("wf.history.append", FlowTurnRecord("behind", "behind-1", UnixMillisNow()))
          .ok());
  ASSERT_TRUE(Eventually([&] { return GetSession(c, "behind").has_history(); }, seconds(10)))
      << s.Logs();
  EXPECT_FALSE(GetSession(c, "poisoned-poison-1").has_history());
  EXPECT_FALSE(GetSession(c, "poisoned-poison-2").has_history());

  // A batch with a turn that names no session (or no run): that turn alone is refused, the
  // batch's other turns are stored.
  wf::v1::TurnRecordBatch batch;
  batch.add_turns()->ParseFromString(FlowTurnRecord("", "nameless-1", UnixMillisNow()));
  batch.add_turns()->ParseFromString(FlowTurnRecord("beside", "", UnixMillisNow()));
  batch.add_turns()->ParseFromString(FlowTurnRecord("beside", "beside-1", UnixMillisNow()));
  ASSERT_TRUE(c.conn()
                  .Publish("wf.history.append", batch.SerializeAsString(), {},
                           {{kPayloadTypeHeader, "wf.v1.TurnRecordBatch"}})
                  .ok());
  ASSERT_TRUE(Eventually([&] { return GetSession(c, "beside").has_history(); }, seconds(10)))
      << s.Logs();
  EXPECT_EQ(GetSession(c, "beside").history().turn_count(), 1u);
}

// A publisher's far deadline is capped by agent.turn_timeout_ms: a hanging LLM does not hold the
// turn (its slot and the session lock) for an hour.
TEST(HeavyWorkerTest, AFarDeadlineIsCappedByTheTurnTimeout) {
  Stack s({.agent = {{"turn_timeout_ms", 1500}}});
  HeavyClient c(s);
  c.Send("far-1", "far", "please hang", UnixMillisNow() + 3600 * 1000);
  auto event = c.Terminal("far-1", milliseconds(15000));
  ASSERT_TRUE(event.has_value()) << "no answer within 15 s\n" << s.Logs();
  ASSERT_TRUE(event->has_error()) << event->DebugString();
  EXPECT_EQ(event->error().code(), "deadline_exceeded");
}

// An answer larger than a NATS message: a clear error at once (not a 504 after the deadline), the
// turn stays stored, and the session can still be read.
TEST(HeavyWorkerTest, AnAnswerLargerThanANatsMessageIsAClearErrorAndTheSessionStillReads) {
  json rules = DefaultRules();
  std::string huge;
  for (int i = 0; i < 1100; ++i) huge += std::string(999, 'y') + " ";
  rules["rules"].insert(rules["rules"].begin(), json{{"when", {{"last_user_contains", "huge"}}},
                                                     {"then", {{"reply", huge}}}});
  // Within agent.max_answer_bytes, so that the NATS message is what it exceeds.
  Stack s({.agent = {{"max_answer_bytes", 4 << 20}}, .llm_rules = rules});
  auto [status, body] = s.Query("a huge answer please", "big-1");
  EXPECT_EQ(status, 502) << body << s.Logs();
  EXPECT_EQ(body["error"]["code"], "response_too_large") << body;
  auto get = HttpCall("GET", s.Url("/api/v1/session/big-1"));
  ASSERT_EQ(get.status, 200) << get.body.substr(0, 300) << s.Logs();
  auto history = json::parse(get.body);
  ASSERT_EQ(history["messages"].size(), 2u);
  EXPECT_EQ(history["messages"][0]["content"], "a huge answer please");
  EXPECT_NE(history["messages"][1]["content"].get<std::string>().find("[truncated: "),
            std::string::npos);
}

// DELETE while a turn runs: the cancelled turn, stored after the delete, does not bring the
// session back.
TEST(HeavyWorkerTest, DeleteDuringATurnLeavesNoSessionBehind) {
  Stack s;
  ASSERT_EQ(s.Query("remember me", "d1").first, 200) << s.Logs();
  SseReader sse(s.Url("/api/v1/query/stream"), R"({"message":"please hang","session_id":"d1"})");
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["active"].get<int>() >= 1; })) << s.Logs();
  auto del = HttpCall("DELETE", s.Url("/api/v1/session/d1"));
  ASSERT_EQ(del.status, 200) << del.body;
  sse.Join();
  ASSERT_TRUE(Eventually([&] { return HeavyMetric(s, 0, "wf_heavy_active_turns") == 0; }))
      << s.Logs();
  auto get = HttpCall("GET", s.Url("/api/v1/session/d1"));
  EXPECT_EQ(get.status, 404) << get.body;
  // The session starts afresh afterwards.
  ASSERT_EQ(s.Query("a new start", "d1").first, 200);
  auto again = json::parse(HttpCall("GET", s.Url("/api/v1/session/d1")).body);
  ASSERT_EQ(again["messages"].size(), 2u) << again.dump();
}

// A turn cancelled while it still waits in JetStream (no free slot) is dropped when fetched: no
// LLM call for nobody.
TEST(HeavyWorkerTest, ATurnCancelledWhileQueuedDoesNotRun) {
  Stack s({.heavy_args = {"--concurrency", "1"}});
  HeavyClient c(s);
  c.Send("qa-1", "qa", "please hang");
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["active"].get<int>() >= 1; })) << s.Logs();
  c.Send("qb-1", "qb", "hello from qb");
  ASSERT_TRUE(c.conn().Publish("wf.cancel.qb-1", "").ok());
  ASSERT_TRUE(c.conn().Flush(milliseconds(2000)).ok());
  // Then free the slot: one connection, so the worker gets qb's cancel before qa's.
  ASSERT_TRUE(c.conn().Publish("wf.cancel.qa-1", "").ok());
  auto qa = c.Terminal("qa-1");
  ASSERT_TRUE(qa.has_value()) << s.Logs();
  auto qb = c.Terminal("qb-1");
  ASSERT_TRUE(qb && qb->has_error()) << (qb ? qb->DebugString() : "") << s.Logs();
  EXPECT_EQ(qb->error().code(), "cancelled");
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), 1);
  EXPECT_EQ(HttpCall("GET", s.Url("/api/v1/session/qb")).status, 404);
}

// A turn redelivered after its worker died runs again from the start: its events say which
// attempt they belong to, so a client can drop the first attempt's tokens.
TEST(HeavyWorkerTest, ARedeliveredTurnsEventsCarryAttemptTwo) {
  Stack s({.heavy_workers = 2, .agent = {{"on_busy", "enqueue"}}, .ack_wait_ms = 2000});
  HeavyClient c(s);
  c.Send("attempt-1", "attempt", "slow turn that survives", 0, /*stream=*/true);
  ASSERT_TRUE(Eventually([&] { return !c.Events("attempt-1").empty(); })) << s.Logs();
  EXPECT_EQ(c.Events("attempt-1").front().attempt(), 1u);
  int victim = -1;
  for (std::size_t i = 0; i < s.heavy_admin_ports_.size(); ++i) {
    if (HeavyMetric(s, i, "wf_heavy_active_turns") == 1) victim = static_cast<int>(i);
  }
  ASSERT_GE(victim, 0);
  s.heavy_[victim]->Signal(SIGKILL);
  ASSERT_TRUE(Eventually(
      [&] {
        auto events = c.Events("attempt-1");
        return !events.empty() && events.back().has_final();
      },
      seconds(30)))
      << s.Logs();
  auto events = c.Events("attempt-1");
  EXPECT_EQ(events.back().attempt(), 2u) << events.back().DebugString();
  EXPECT_EQ(events.back().final().answer(), "one two three four five six");
  std::string second;
  for (const auto& e : events) {
    if (e.attempt() == 2 && e.has_token()) second += e.token();
  }
  EXPECT_EQ(second, "one two three four five six");
}

/// DefaultRules() plus rules that make the model answer `trigger` with a call of `tool` whose
/// arguments are `arguments` (a JSON text), and a function-mode answer of `reply`.
json RulesCalling(const std::string& trigger, const std::string& tool,
                  const std::string& arguments) {
  json rules = DefaultRules();
  rules["rules"].insert(
      rules["rules"].begin(),
      json{{"when", {{"last_user_contains", trigger}, {"no_tool_result", true}}},
           {"then", {{"tool_calls", {{{"name", tool}, {"arguments", arguments}}}}}}});
  return rules;
}

/// A JSON text nesting arrays `depth` deep inside {"order_id": ...}.
std::string DeeplyNestedArguments(int depth) {
  return "{\"order_id\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
}

// The model's tool arguments are input from outside the process: arguments nested far deeper
// than kMaxJsonNesting used to be converted and serialized recursively (flow parameters) and
// crashed wf-heavy with a stack overflow, so the client got a 504 and the turn was lost. Now the
// call gets an error result the model can recover from, and the worker keeps running.
TEST(HeavyWorkerTest, DeeplyNestedToolArgumentsFromTheModelGetAnErrorResult) {
  Stack s(
      {.llm_rules = RulesCalling("deep flow call", "order_status", DeeplyNestedArguments(200000))});
  auto [status, body] = s.Query("please make a deep flow call", "deep-args", 60000);
  ASSERT_EQ(status, 200) << body << s.Logs();
  const std::string answer = body["message"].get<std::string>();
  EXPECT_EQ(answer.rfind("Tool said: Error (bad_request)", 0), 0u) << answer;
  EXPECT_NE(answer.find("nested deeper than"), std::string::npos) << answer;
  EXPECT_TRUE(s.heavy_[0]->Running()) << s.Logs();
  // The turn is stored (its huge tool call keeps it out of the next turn's history budget), and
  // the worker still answers the session afterwards.
  auto stored = HttpCall("GET", s.Url("/api/v1/session/deep-args"));
  ASSERT_EQ(stored.status, 200) << stored.body;
  EXPECT_EQ(json::parse(stored.body)["messages"][0]["content"], "please make a deep flow call");
  auto [status2, body2] = s.Query("recall please", "deep-args");
  ASSERT_EQ(status2, 200) << body2 << s.Logs();
  EXPECT_EQ(body2["message"].get<std::string>().rfind("history:", 0), 0u) << body2;
}

// Some OpenAI-compatible servers and proxies echo the key they received in their error message
// ("Received API Key = sk-..."); that message used to reach the client's error event and the
// worker's log as is. The key is now replaced by "***" before the message is cut or shown.
TEST(HeavyWorkerTest, AnUpstreamErrorThatEchoesTheApiKeyDoesNotShowIt) {
  const std::string key = "sk-test-ab12cd34ef56gh78ij90kl12mn34op56";
  json rules = DefaultRules();
  rules["rules"].insert(
      rules["rules"].begin(),
      json{{"when", {{"last_user_contains", "wrong key"}}},
           {"then",
            {{"status", 401},
             {"message",
              "Authentication Error, Invalid proxy server token passed. Received API Key "
              "= {api_key}, Key Hash (Token) = 0badc0de"}}}});
  Stack s({.llm_rules = rules, .heavy_args = {"--llm-api-key", key}});
  auto [status, body] = s.Query("is this the wrong key?", "echo-key");
  ASSERT_NE(status, 200) << body << s.Logs();
  const std::string error = body.dump();
  EXPECT_NE(error.find("Received API Key = ***"), std::string::npos) << error;
  EXPECT_EQ(error.find(key), std::string::npos) << error;
  // Not in wf-heavy's log either, nor any prefix long enough to matter.
  const std::string heavy_log = s.heavy_[0]->Log();
  EXPECT_NE(heavy_log.find("Received API Key = ***"), std::string::npos) << heavy_log;
  EXPECT_EQ(heavy_log.find(key.substr(0, 12)), std::string::npos) << heavy_log;
}

// An LLM that fails mid-answer the way OpenAI reports it (an error object as a stream frame after
// some tokens): the client gets the tokens, then an llm_error naming the server's message; the
// history keeps what the client saw of the answer (as for a deadline, AgentTurnTest.
// DeadlineEndsTheTurnWithAnError), never the rest of it, and the session goes on.
TEST(HeavyWorkerTest, AnErrorObjectMidStreamEndsTheTurnWithAnLlmError) {
  json rules = DefaultRules();
  rules["rules"].insert(rules["rules"].begin(),
                        json{{"when", {{"last_user_contains", "fail midway"}}},
                             {"then",
                              {{"reply", "one two three four"},
                               {"error_after_tokens", 2},
                               {"message", "The model is overloaded."}}}});
  Stack s({.llm_rules = rules});
  HeavyClient c(s);
  c.Send("midway-1", "midway", "please fail midway", 0, /*stream=*/true);
  auto end = c.Terminal("midway-1");
  ASSERT_TRUE(end && end->has_error()) << (end ? end->DebugString() : "") << s.Logs();
  EXPECT_EQ(end->error().code(), "llm_error");
  EXPECT_NE(end->error().message().find("The model is overloaded."), std::string::npos)
      << end->error().message();
  std::string streamed;
  for (const auto& e : c.Events("midway-1")) {
    if (e.has_token()) streamed += e.token();
  }
  EXPECT_EQ(streamed, "one two ");
  auto [status, body] = s.Query("recall please", "midway");
  ASSERT_EQ(status, 200) << body << s.Logs();
  auto stored = HttpCall("GET", s.Url("/api/v1/session/midway"));
  ASSERT_EQ(stored.status, 200) << stored.body;
  const json history = json::parse(stored.body);  // alive through the loop (not a temporary)
  std::vector<std::string> failed_run;
  int marked_failed = 0;
  for (const auto& m : history["messages"]) {
    EXPECT_NE(m["content"], "one two three four") << stored.body;
    EXPECT_FALSE(m.contains("cancelled")) << stored.body;
    if (m["run_id"] == "midway-1") {
      failed_run.push_back(m["role"].get<std::string>() + ": " + m["content"].get<std::string>());
      // Only the partial answer is marked, not the user's message.
      EXPECT_EQ(m.value("failed", false), m["role"] == "assistant") << stored.body;
    } else {
      EXPECT_FALSE(m.contains("failed")) << stored.body;  // the next turn answered in full
    }
    if (m.value("failed", false)) ++marked_failed;
  }
  EXPECT_EQ(failed_run,
            (std::vector<std::string>{"user: please fail midway", "assistant: one two "}))
      << stored.body;
  EXPECT_EQ(marked_failed, 1) << stored.body;
}

// Ollama numbers every tool call of one streamed answer 0 (ollama/ollama#15457). Two calls of one
// answer used to be merged into one with both argument objects concatenated, which failed as
// "not a JSON object"; now both run and both results go back to the model.
TEST(HeavyWorkerTest, ParallelToolCallsAllNumberedZeroBothRun) {
  json rules = DefaultRules();
  rules["rules"].insert(
      rules["rules"].begin(),
      json{{"when", {{"last_user_contains", "two cities"}, {"no_tool_result", true}}},
           {"then",
            {{"tool_call_index_zero", true},
             {"tool_calls",
              {{{"name", "weather"}, {"arguments", {{"city", "Rome"}}}},
               {{"name", "weather"}, {"arguments", {{"city", "Paris"}}}}}}}}});
  Stack s({.llm_rules = rules});
  HeavyClient c(s);
  c.Send("zero-1", "zero", "weather for two cities please");
  auto end = c.Terminal("zero-1");
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  std::vector<std::string> calls;
  int ok_results = 0;
  for (const auto& e : c.Events("zero-1")) {
    if (e.has_tool_call()) calls.push_back(e.tool_call().arguments_json());
    if (e.has_tool_result() && e.tool_result().ok()) ++ok_results;
  }
  EXPECT_EQ(calls, (std::vector<std::string>{R"({"city":"Rome"})", R"({"city":"Paris"})"}));
  EXPECT_EQ(ok_results, 2);
  // The model's next request carried both results.
  const json last = LlmStats(s)["last_requests"].back();
  int tool_messages = 0;
  for (const auto& m : last["messages"]) tool_messages += m["role"] == "tool" ? 1 : 0;
  EXPECT_EQ(tool_messages, 2) << last.dump();
}

/// One redis-cli command against the stack's Redis; its output.
std::string RedisCli(Stack& s, std::vector<std::string> args) {
  args.insert(args.begin(), {"-p", std::to_string(s.redis_.port())});
  Process cli("redis-cli", args);
  EXPECT_EQ(cli.Wait(milliseconds(10000)).value_or(-1), 0);
  std::string out = cli.Log();
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// Redis flushed (or restarted) while a turn runs: the session lock is gone. The lease renewal
// used to fail silently, so a second query on the busy session was taken and ran alongside the
// first (without seeing it). The running turn now takes its lock again at the next renewal, and
// the second query is refused as busy.
// A turn whose session has no hot copy starts before PostgreSQL has said whether the session is
// new: its LLM call is on its way meanwhile, but nothing it brings is acted on until then. When
// PostgreSQL holds the session after all (here: a worker that never saw it, Redis flushed),
// the turn runs again with the stored history: the tool the first call asked for does not run,
// and the answer is the one made with the history. PostgreSQL is held up (its tables locked)
// until the first call's answer, a tool call, is back and the look-up gave up (its 250 ms
// statement timeout: an answer that does not count is taken as "exists").
TEST(HeavyWorkerTest, ATurnStartedAheadOfPostgresRunsAgainWithTheStoredHistory) {
  json rules = {
      {"rules",
       {{{"when", {{"last_user_contains", "weather"}, {"no_tool_result", true}}},
         {"then", {{"tool_calls", {{{"name", "weather"}, {"arguments", {{"city", "Paris"}}}}}}}}},
        {{"when", {{"last_message_role", "tool"}}},
         {"then", {{"reply", "history: {history_users}"}}}},
        {{"when", {{"last_user_contains", "name"}}}, {"then", {{"reply", "nice to meet you"}}}}}}};
  Stack s({.llm_rules = rules});
  HeavyClient c(s);
  c.Send("ahead-1", "ahead", "my name is Ada");
  auto first = c.Terminal("ahead-1");
  ASSERT_TRUE(first && first->has_final()) << (first ? first->DebugString() : "") << s.Logs();
  s.heavy_[0]->Stop();
  s.StartHeavy();  // has not seen the session
  ASSERT_EQ(RedisCli(s, {"FLUSHALL"}), "OK");
  std::atomic<int> tool_runs{0};
  auto tools = c.conn().Subscribe("wf.tool.execute", [&](const NatsMsgView&) { ++tool_runs; });
  ASSERT_TRUE(tools.ok()) << tools.error().message;
  ASSERT_TRUE(c.conn().Flush(milliseconds(2000)).ok());
  const int completed = LlmStats(s)["completed"].get<int>();

  pqxx::connection pg(s.pg_.url());
  pqxx::work table_lock(pg);
  table_lock.exec("LOCK TABLE sessions, messages, runs IN ACCESS EXCLUSIVE MODE");
  c.Send("ahead-2", "ahead", "what is the weather");
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["completed"].get<int>() > completed; }))
      << s.Logs();
  // Past the look-up's statement timeout: the first call's tool call came back and waits.
  std::this_thread::sleep_for(milliseconds(400));
  EXPECT_EQ(tool_runs.load(), 0);
  EXPECT_TRUE(c.Events("ahead-2").empty());
  table_lock.abort();

  auto end = c.Terminal("ahead-2");
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  EXPECT_EQ(end->final().answer(), "history: my name is Ada | what is the weather");
  EXPECT_EQ(tool_runs.load(), 1);
  int tool_call_events = 0;
  for (const auto& event : c.Events("ahead-2")) tool_call_events += event.has_tool_call() ? 1 : 0;
  EXPECT_EQ(tool_call_events, 1);
  EXPECT_EQ(HeavyMetric(s, 1, "wf_heavy_turns_started_ahead_total"), 1) << s.Logs();
  EXPECT_EQ(HeavyMetric(s, 1, "wf_heavy_turns_restarted_total"), 1) << s.Logs();

  // A new session started ahead is not run again: PostgreSQL says it is new (once the
  // look-ups, paused after that timeout, are back).
  std::this_thread::sleep_for(milliseconds(1500));
  c.Send("ahead-3", "ahead-new", "my name is Bob");
  auto fresh = c.Terminal("ahead-3");
  ASSERT_TRUE(fresh && fresh->has_final()) << (fresh ? fresh->DebugString() : "") << s.Logs();
  EXPECT_EQ(fresh->final().answer(), "nice to meet you");
  EXPECT_EQ(HeavyMetric(s, 1, "wf_heavy_turns_started_ahead_total"), 2) << s.Logs();
  EXPECT_EQ(HeavyMetric(s, 1, "wf_heavy_turns_restarted_total"), 1) << s.Logs();
}

TEST(HeavyWorkerTest, ALockLostWhileItsTurnRunsIsTakenAgain) {
  json rules = DefaultRules();
  rules["rules"].insert(rules["rules"].begin(),
                        json{{"when", {{"last_user_contains", "long story"}}},
                             {"then",
                              {{"reply",
                                "once upon a time there were many words to stream slowly "
                                "one after another until the very end of this story"},
                               {"delay_ms", 400}}}});
  Stack s({.llm_rules = rules, .ack_wait_ms = 3000});  // renewals every second
  HeavyClient c(s);
  c.Send("lease-1", "lease", "tell me a long story", 0, /*stream=*/true);
  ASSERT_TRUE(c.WaitToken("lease-1")) << s.Logs();
  ASSERT_EQ(RedisCli(s, {"GET", "wf:lock:lease"}), "lease-1");
  ASSERT_EQ(RedisCli(s, {"FLUSHALL"}), "OK");
  EXPECT_TRUE(Eventually(
      [&] {
        return RedisCli(s, {"GET", "wf:lock:lease"}) == "lease-1";
      },
      seconds(10)))
      << s.Logs();
  auto [status, body] = s.Query("may I interrupt?", "lease");
  EXPECT_EQ(status, 409) << body << s.Logs();
  auto end = c.Terminal("lease-1", milliseconds(30000));
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  // Once stored, the lock is released (the renewal did not take it back afterwards).
  EXPECT_TRUE(
      Eventually([&] { return s.Query("now it is my turn", "lease").first == 200; }, seconds(10)))
      << s.Logs();
  EXPECT_EQ(RedisCli(s, {"EXISTS", "wf:lock:lease"}), "0");
}

// A model that streams on and on (a black-box test streamed 100 MB): the call is cut off at
// agent.max_answer_bytes, its connection closed, the client told why (llm_error), and what was
// streamed is stored cut to the bound, marked, as a failed turn. It used to run to the 32 MiB
// stream limit and store all of it, in Redis and PostgreSQL.
TEST(HeavyWorkerTest, AnAnswerPastMaxAnswerBytesIsCutOffAndStoredCut) {
  json rules = DefaultRules();
  std::string endless;
  for (int i = 0; i < 400; ++i) endless += std::string(99, 'n') + " ";  // 40,000 bytes
  // Slow enough that the server is still streaming when the worker hangs up.
  rules["rules"].insert(rules["rules"].begin(),
                        json{{"when", {{"last_user_contains", "write a novel"}}},
                             {"then", {{"reply", endless}, {"delay_ms", 5}}}});
  Stack s({.agent = {{"max_answer_bytes", 4096}}, .llm_rules = rules});
  HeavyClient c(s);
  c.Send("novel-1", "novel", "write a novel", 0, /*stream=*/true);
  auto end = c.Terminal("novel-1");
  ASSERT_TRUE(end && end->has_error()) << (end ? end->DebugString() : "") << s.Logs();
  EXPECT_EQ(end->error().code(), "llm_error");
  EXPECT_EQ(end->error().message(),
            "the LLM's answer exceeded 4096 bytes (agent.max_answer_bytes) and was cut off");
  std::string streamed;
  for (const auto& e : c.Events("novel-1")) {
    if (e.has_token()) streamed += e.token();
  }
  EXPECT_EQ(streamed, endless.substr(0, 4096));
  // The worker closed the LLM connection mid-stream: the server saw the client go, and never
  // finished the answer.
  ASSERT_TRUE(Eventually([&] {
    const json stats = LlmStats(s);
    return stats["client_disconnects"] == 1 && stats["active"] == 0;
  })) << LlmStats(s).dump()
      << s.Logs();
  EXPECT_EQ(LlmStats(s)["completed"], 0);

  const std::string stored_answer =
      endless.substr(0, 4096) + "\n[answer cut: the model's answer exceeded 4096 bytes]";
  wf::v1::SessionReply reply;
  ASSERT_TRUE(Eventually([&] {
    reply = GetSession(c, "novel");
    return reply.has_history() && reply.history().messages_size() == 2;
  })) << reply.DebugString().substr(0, 2000);
  EXPECT_EQ(reply.history().messages(0).content(), "write a novel");
  EXPECT_FALSE(reply.history().messages(0).failed());
  EXPECT_EQ(reply.history().messages(1).role(), "assistant");
  EXPECT_TRUE(reply.history().messages(1).failed());
  EXPECT_EQ(reply.history().messages(1).content(), stored_answer);
  // Both copies hold the cut answer, not the stream: the Redis hot copy and PostgreSQL.
  const long long redis_bytes = std::stoll(RedisCli(s, {"MEMORY", "USAGE", "wf:hist:novel"}));
  EXPECT_GT(redis_bytes, 4096);
  EXPECT_LT(redis_bytes, 16384);
  pqxx::connection pg(s.pg_.url());
  pqxx::work tx(pg);
  const pqxx::row row = tx.exec1(
      "SELECT m.content, r.status FROM messages m JOIN runs r USING (run_id) "
      "WHERE m.session_id = 'novel' AND m.role = 'assistant'");
  EXPECT_EQ(row[0].as<std::string>(), stored_answer);
  EXPECT_EQ(row[1].as<std::string>(), "error");
}

// The session history marks a cancelled turn's partial answer as such.
TEST(HeavyWorkerTest, ACancelledTurnsPartialAnswerIsMarkedInTheHistory) {
  Stack s;
  HeavyClient c(s);
  c.Send("partial-1", "partial", "slow answer please", 0, /*stream=*/true);
  ASSERT_TRUE(Eventually([&] {
    int tokens = 0;
    for (const auto& e : c.Events("partial-1")) tokens += e.has_token() ? 1 : 0;
    return tokens >= 2;
  })) << s.Logs();
  ASSERT_TRUE(c.conn().Publish("wf.cancel.partial-1", "").ok());
  auto end = c.Terminal("partial-1");
  ASSERT_TRUE(end && end->has_final() && end->final().cancelled())
      << (end ? end->DebugString() : "");
  wf::v1::SessionReply reply;
  ASSERT_TRUE(Eventually([&] {
    reply = GetSession(c, "partial");
    return reply.has_history() && reply.history().messages_size() == 2;
  })) << reply.DebugString();
  EXPECT_FALSE(reply.history().messages(0).cancelled());
  EXPECT_EQ(reply.history().messages(1).role(), "assistant");
  EXPECT_TRUE(reply.history().messages(1).cancelled()) << reply.DebugString();
  // A normal answer is not marked.
  ASSERT_EQ(s.Query("hello", "partial").first, 200);
  reply = GetSession(c, "partial");
  ASSERT_EQ(reply.history().messages_size(), 4);
  EXPECT_FALSE(reply.history().messages(3).cancelled());
}

// on_busy "enqueue": turns queued behind a running turn run in the order they arrived (they used
// to race for the lock every 100 ms and ran in any order).
TEST(HeavyWorkerTest, EnqueuedTurnsRunInArrivalOrder) {
  Stack s({.agent = {{"on_busy", "enqueue"}}});
  HeavyClient c(s);
  c.Send("order-0", "order", "slow one", 0, /*stream=*/true);
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["active"].get<int>() >= 1; })) << s.Logs();
  for (int i = 1; i <= 5; ++i) {
    c.Send("order-" + std::to_string(i), "order", "msg" + std::to_string(i));
    std::this_thread::sleep_for(milliseconds(50));
  }
  for (int i = 0; i <= 5; ++i) {
    auto end = c.Terminal("order-" + std::to_string(i), milliseconds(30000));
    ASSERT_TRUE(end && end->has_final()) << i << (end ? end->DebugString() : "") << s.Logs();
  }
  auto reply = GetSession(c, "order");
  ASSERT_TRUE(reply.has_history()) << reply.DebugString();
  std::vector<std::string> users;
  for (const auto& m : reply.history().messages()) {
    if (m.role() == "user") users.push_back(m.content());
  }
  EXPECT_EQ(users, (std::vector<std::string>{"slow one", "msg1", "msg2", "msg3", "msg4", "msg5"}));
}

// How wf-heavy pulls queries: with a backlog in JetStream it asks for batches (few round trips);
// once the consumer has nothing more and at most one turn runs here, it asks for one query at a
// time, without "no_wait" (a pull for several ends with a status message after the query, an
// extra wake-up before the turn starts). Seen from the pull requests on the wire; every query is
// answered either way.
TEST(HeavyWorkerTest, ABacklogIsPulledInBatchesAndALoneQueryAlone) {
  Stack s({.heavy_workers = 0});
  HeavyClient c(s);
  std::mutex mu;
  std::vector<json> pulls;
  auto sub =
      c.conn().Subscribe("$JS.API.CONSUMER.MSG.NEXT.WF_HEAVY.heavy", [&](const NatsMsgView& m) {
        json pull = json::parse(m.data(), nullptr, false);
        std::lock_guard lock(mu);
        pulls.push_back(std::move(pull));
      });
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  ASSERT_TRUE(c.conn().Flush(milliseconds(2000)).ok());
  constexpr int kBacklog = 40;
  for (int i = 0; i < kBacklog; ++i) {
    c.Send("backlog-" + std::to_string(i), "backlog-" + std::to_string(i), "hello");
  }
  s.StartHeavy();
  for (int i = 0; i < kBacklog; ++i) {
    auto end = c.Terminal("backlog-" + std::to_string(i));
    ASSERT_TRUE(end && end->has_final()) << i << (end ? end->DebugString() : "") << s.Logs();
  }
  std::size_t after_backlog = 0;
  {
    std::lock_guard lock(mu);
    after_backlog = pulls.size();
    bool batched = false;
    for (const auto& pull : pulls) batched = batched || pull.value("batch", 0) > 1;
    EXPECT_TRUE(batched) << json(pulls).dump();
    // 40 queries in far fewer pulls than one each.
    EXPECT_LT(pulls.size(), static_cast<std::size_t>(kBacklog)) << json(pulls).dump();
  }
  c.Send("lone", "lone", "hello");
  auto end = c.Terminal("lone");
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  // The pull that follows a lone query (sent once its turn started) asks for one, and waits.
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard lock(mu);
    return pulls.size() > after_backlog + 1;
  }));
  std::lock_guard lock(mu);
  const json& last = pulls.back();
  EXPECT_EQ(last.value("batch", 0), 1) << json(pulls).dump();
  EXPECT_FALSE(last.value("no_wait", false)) << json(pulls).dump();
  EXPECT_GT(last.value("expires", 0LL), 0LL) << json(pulls).dump();
}

/// Messages WF_HEAVY holds (a work queue: an acked query leaves it), or -1.
long long HeavyStreamMessages(HeavyClient& c) {
  auto info = c.conn().Request("$JS.API.STREAM.INFO.WF_HEAVY", "", milliseconds(2000));
  if (!info.ok()) return -1;
  json j = json::parse(*info, nullptr, false);
  if (!j.is_object() || !j.contains("state")) return -1;
  return j["state"].value("messages", -1LL);
}

// The queries come through the intake's own connection, with pull requests and acks written by
// hand: a turn leaves WF_HEAVY once stored (the ack works), and after the NATS server restarts
// (a pull lost with the connection is given up and sent again) turns come in as before.
TEST(HeavyWorkerTest, TurnsAreAckedAndStillComeInAfterNatsRestarts) {
  Stack s(HeavyOnly());
  HeavyClient c(s);
  c.Send("before-restart", "restart-session", "hello");
  auto before = c.Terminal("before-restart");
  ASSERT_TRUE(before && before->has_final()) << (before ? before->DebugString() : "") << s.Logs();
  EXPECT_TRUE(Eventually([&] { return HeavyStreamMessages(c) == 0; }))
      << HeavyStreamMessages(c) << s.Logs();

  s.nats_.Restart();
  const std::string ready =
      "http://127.0.0.1:" + std::to_string(s.heavy_admin_ports_.at(0)) + "/ready";
  ASSERT_TRUE(
      Eventually([&] { return HttpCall("GET", ready).status == 200; }, std::chrono::seconds(20)))
      << s.Logs();
  ASSERT_TRUE(Eventually([&] { return c.conn().Connected(); }, std::chrono::seconds(20)));
  for (int i = 0; i < 3; ++i) {
    const std::string id = "after-restart-" + std::to_string(i);
    c.Send(id, "restart-session", "recall " + std::to_string(i));
    auto after = c.Terminal(id, milliseconds(20000));
    ASSERT_TRUE(after && after->has_final())
        << i << (after ? after->DebugString() : "") << s.Logs();
  }
  EXPECT_TRUE(Eventually([&] { return HeavyStreamMessages(c) == 0; }))
      << HeavyStreamMessages(c) << s.Logs();
  EXPECT_EQ(HeavyMetric(s, 0, "wf_heavy_redeliveries_total"), 0) << s.Logs();
}

/// Events published on `late.>` as they come, with their reply subjects; confirms none.
class LateListener {
 public:
  struct Seen {
    wf::v1::QueryEvent event;
    std::string reply;
  };
  explicit LateListener(HeavyClient& c) {
    auto sub = c.conn().Subscribe("late.>", [this](const NatsMsgView& m) {
      Seen one;
      if (!one.event.ParseFromArray(m.data().data(), static_cast<int>(m.data().size()))) return;
      one.reply = std::string(m.reply());
      std::lock_guard lock(mu_);
      seen_.push_back(std::move(one));
    });
    if (!sub.ok()) throw std::runtime_error("subscribing to late.>: " + sub.error().message);
    sub_ = std::move(sub).value();
  }
  /// Every event of `request_id` so far, in order.
  std::vector<Seen> Events(const std::string& request_id) {
    std::vector<Seen> out;
    std::lock_guard lock(mu_);
    for (const Seen& one : seen_) {
      if (one.event.request_id() == request_id) out.push_back(one);
    }
    return out;
  }
  /// Its `final` events so far.
  std::vector<Seen> Finals(const std::string& request_id) {
    std::vector<Seen> out;
    for (Seen& one : Events(request_id)) {
      if (one.event.has_final()) out.push_back(std::move(one));
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<Seen> seen_;
  NatsSubscription sub_;
};

/// A QueryRequest for wf.heavy.query that asks for its last event to be confirmed.
wf::v1::QueryRequest ConfirmedQuery(const std::string& request_id, const std::string& session_id,
                                    int64_t timeout_ms) {
  wf::v1::QueryRequest request;
  request.set_request_id(request_id);
  request.set_session_id(session_id);
  request.set_message("hello");
  request.set_reply_to("late." + request_id);
  request.set_deadline_unix_ms(UnixMillisNow() + timeout_ms);
  request.set_confirm_end(true);
  return request;
}

// QueryRequest.confirm_end: the last event comes with a reply subject and is sent again until an
// empty message on it confirms it, so a receiver that subscribes late (as the gateway does while
// it reconnects to NATS) still gets it; then the resending stops. Without the flag it is sent
// once, with no reply subject.
TEST(HeavyWorkerTest, ALastEventIsSentAgainUntilItsReceiverConfirmsIt) {
  Stack s(HeavyOnly());
  HeavyClient c(s);
  wf::v1::QueryRequest request = ConfirmedQuery("confirm-1", "confirm-session", 20000);
  c.Publish(request);
  // The turn ends and its final waits for a confirmation that cannot come: nobody listens yet.
  ASSERT_TRUE(Eventually([&] {
    return HeavyMetric(s, 0, "wf_heavy_end_events_awaiting_confirmation") == 1;
  })) << s.Logs();

  LateListener late(c);
  // Sent again: the late subscriber gets it, twice if it does not confirm.
  ASSERT_TRUE(Eventually([&] { return late.Events("confirm-1").size() >= 2; }, seconds(10)))
      << s.Logs();
  const auto two = late.Events("confirm-1");
  for (const LateListener::Seen& one : two) {
    ASSERT_TRUE(one.event.has_final()) << one.event.DebugString();
    EXPECT_EQ(one.event.seq(), two[0].event.seq());
    EXPECT_EQ(one.event.final().answer(), two[0].event.final().answer());
    EXPECT_FALSE(one.reply.empty());
  }
  ASSERT_TRUE(c.conn().Publish(two.back().reply, "").ok());
  ASSERT_TRUE(Eventually([&] {
    return HeavyMetric(s, 0, "wf_heavy_end_events_awaiting_confirmation") == 0;
  })) << s.Logs();
  EXPECT_GE(HeavyMetric(s, 0, "wf_heavy_end_events_resent_total"), 2);
  // Confirmed: no further copy (the next would have come within 0.8 s).
  const std::size_t confirmed_at = late.Events("confirm-1").size();
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_EQ(late.Events("confirm-1").size(), confirmed_at);

  // Without confirm_end: one send, no reply subject, nothing awaits confirmation.
  request = ConfirmedQuery("confirm-2", "confirm-session", 20000);
  request.set_confirm_end(false);
  c.Publish(request);
  ASSERT_TRUE(Eventually([&] { return !late.Finals("confirm-2").empty(); })) << s.Logs();
  std::this_thread::sleep_for(milliseconds(500));
  ASSERT_EQ(late.Finals("confirm-2").size(), 1u);
  EXPECT_TRUE(late.Finals("confirm-2")[0].reply.empty());
  EXPECT_EQ(HeavyMetric(s, 0, "wf_heavy_end_events_awaiting_confirmation"), 0);
}

// A last event nobody confirms is given up at its turn's deadline (counted), not sent forever.
TEST(HeavyWorkerTest, AnUnconfirmedLastEventIsGivenUpAtTheTurnsDeadline) {
  Stack s(HeavyOnly());
  HeavyClient c(s);
  const wf::v1::QueryRequest request = ConfirmedQuery("unconfirmed-1", "unconfirmed-session", 3000);
  c.Publish(request);
  ASSERT_TRUE(Eventually([&] {
    return HeavyMetric(s, 0, "wf_heavy_end_events_awaiting_confirmation") == 1;
  })) << s.Logs();
  ASSERT_TRUE(Eventually(
      [&] { return HeavyMetric(s, 0, "wf_heavy_end_events_awaiting_confirmation") == 0; },
      seconds(10)))
      << s.Logs();
  EXPECT_EQ(HeavyMetric(s, 0, "wf_heavy_end_events_unconfirmed_total"), 1);
  // Sent again in the meantime (0.2, 0.6, 1.4 s after the first send: the deadline is 3 s).
  EXPECT_GE(HeavyMetric(s, 0, "wf_heavy_end_events_resent_total"), 2);
  // The turn itself was stored: the answer is in the history for whoever asks.
  EXPECT_TRUE(GetSession(c, "unconfirmed-session").has_history());
}

// The last event is all a client waits for. A worker killed after storing its turn, before the
// receiver confirmed that event, used to have acknowledged the query already: nobody answered it
// again and the client waited for its deadline. Now the query stays unacknowledged until the
// confirmation, so JetStream hands it to the other worker, which answers from the store without
// running the turn again.
TEST(HeavyWorkerTest, AWorkerKilledBeforeItsLastEventIsConfirmedLeavesTheAnswerToAnother) {
  Stack s(HeavyOnly(2, 2000));
  HeavyClient c(s);
  LateListener late(c);
  c.Publish(ConfirmedQuery("kill-confirm-1", "kill-confirm-session", 30000));
  ASSERT_TRUE(Eventually([&] { return !late.Finals("kill-confirm-1").empty(); })) << s.Logs();
  const LateListener::Seen first = late.Finals("kill-confirm-1").front();
  EXPECT_EQ(first.event.attempt(), 1u);
  int victim = -1;
  for (std::size_t i = 0; i < s.heavy_admin_ports_.size(); ++i) {
    if (HeavyMetric(s, i, "wf_heavy_end_events_awaiting_confirmation") == 1) {
      victim = static_cast<int>(i);
    }
  }
  ASSERT_GE(victim, 0) << s.Logs();
  s.heavy_[victim]->Signal(SIGKILL);
  // The other worker gets the query after the ack wait (2 s) and sends the stored answer.
  ASSERT_TRUE(Eventually(
      [&] {
        for (const auto& one : late.Finals("kill-confirm-1")) {
          if (one.event.attempt() == 2) return true;
        }
        return false;
      },
      seconds(15)))
      << s.Logs();
  LateListener::Seen again;
  for (const auto& one : late.Finals("kill-confirm-1")) {
    if (one.event.attempt() == 2) again = one;
  }
  EXPECT_EQ(again.event.final().answer(), first.event.final().answer());
  EXPECT_EQ(again.event.final().run_id(), "kill-confirm-1");
  ASSERT_FALSE(again.reply.empty());
  ASSERT_TRUE(c.conn().Publish(again.reply, "").ok());
  const std::size_t survivor = victim == 0 ? 1 : 0;
  ASSERT_TRUE(Eventually([&] {
    return HeavyMetric(s, survivor, "wf_heavy_end_events_awaiting_confirmation") == 0;
  })) << s.Logs();
  // Answered from the store: the model was asked once, and the turn is stored once.
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), 1);
  EXPECT_EQ(GetSession(c, "kill-confirm-session").history().turn_count(), 1u);
}

// While its last event waits for a confirmation (here longer than the ack wait), the query is
// kept in progress: JetStream does not hand it to another worker meanwhile, and the
// confirmation then acknowledges it.
TEST(HeavyWorkerTest, AQueryWaitingForItsConfirmationIsNotRedelivered) {
  Stack s(HeavyOnly(2, 2000));
  HeavyClient c(s);
  LateListener late(c);
  c.Publish(ConfirmedQuery("held-1", "held-session", 30000));
  ASSERT_TRUE(Eventually([&] { return !late.Finals("held-1").empty(); })) << s.Logs();
  // Twice the ack wait (its in-progress renewals come every 0.67 s).
  std::this_thread::sleep_for(milliseconds(4500));
  auto finals = late.Finals("held-1");
  for (const auto& one : finals) EXPECT_EQ(one.event.attempt(), 1u) << one.event.DebugString();
  ASSERT_TRUE(c.conn().Publish(finals.back().reply, "").ok());
  auto awaiting = [&] {
    return HeavyMetric(s, 0, "wf_heavy_end_events_awaiting_confirmation") +
           HeavyMetric(s, 1, "wf_heavy_end_events_awaiting_confirmation");
  };
  ASSERT_TRUE(Eventually([&] { return awaiting() == 0; })) << s.Logs();
  // Acknowledged: nothing comes again after another ack wait.
  std::this_thread::sleep_for(milliseconds(2500));
  EXPECT_EQ(HeavyMetric(s, 0, "wf_heavy_redeliveries_total") +
                HeavyMetric(s, 1, "wf_heavy_redeliveries_total"),
            0);
  for (const auto& one : late.Finals("held-1")) EXPECT_EQ(one.event.attempt(), 1u);
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), 1);
}

/// Runs one turn on each of the sessions `<prefix>-0` .. `<prefix>-<count - 1>` (ids
/// `<prefix>-warm-<i>`), so PostgreSQL holds them, then locks their rows in `*locker`, a
/// transaction on `pg` left open: writes to those sessions wait until it ends.
void StoreThenLockSessions(Stack& s, HeavyClient& c, pqxx::connection& pg,
                           const std::string& prefix, int count,
                           std::unique_ptr<pqxx::work>* locker) {
  for (int i = 0; i < count; ++i) {
    const std::string id = prefix + "-warm-" + std::to_string(i);
    c.Send(id, prefix + "-" + std::to_string(i), "hello");
    auto end = c.Terminal(id);
    ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  }
  *locker = std::make_unique<pqxx::work>(pg);
  ASSERT_EQ((*locker)
                ->exec("SELECT 1 FROM sessions WHERE session_id LIKE '" + prefix + "-%' FOR UPDATE")
                .size(),
            static_cast<std::size_t>(count));
}

// PostgreSQL slow to write (here: the rows of the stalled sessions locked, so their stores wait):
// finished turns wait to be stored, but other turns still start, from their Redis hot copy or
// from a PostgreSQL read. The stores used to take every executor thread and PostgreSQL
// connection, so no turn could start (and no session be read) until PostgreSQL answered.
TEST(HeavyWorkerTest, TurnsStillStartWhileStoresWaitOnASlowPostgres) {
  Stack s;
  HeavyClient c(s);
  constexpr int kStalled = 6;  // more than wf-heavy's threads and PostgreSQL connections
  pqxx::connection pg(s.pg_.url());
  std::unique_ptr<pqxx::work> locker;
  ASSERT_NO_FATAL_FAILURE(StoreThenLockSessions(s, c, pg, "stall", kStalled + 1, &locker));
  for (int i = 0; i < kStalled; ++i) {
    c.Send("stall-next-" + std::to_string(i), "stall-" + std::to_string(i), "hello again");
  }
  // Every one is answered by the LLM and then waits for its store (the terminal event follows
  // the store).
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["requests"].get<int>() >= 2 * kStalled + 1; }))
      << LlmStats(s).dump() << s.Logs();
  std::this_thread::sleep_for(milliseconds(300));
  for (int i = 0; i < kStalled; ++i) {
    EXPECT_FALSE(c.Terminal("stall-next-" + std::to_string(i), milliseconds(1)))
        << i << ": answered although its session row is locked";
  }
  // Meanwhile a warm session's next turn (Redis) and a new session's first turn (a PostgreSQL
  // read) start and stream.
  c.Send("stall-hot", "stall-" + std::to_string(kStalled), "please recall", 0, /*stream=*/true);
  c.Send("stall-fresh", "stall-fresh", "please recall", 0, /*stream=*/true);
  EXPECT_TRUE(c.WaitToken("stall-hot", milliseconds(3000))) << s.Logs();
  EXPECT_TRUE(c.WaitToken("stall-fresh", milliseconds(3000))) << s.Logs();
  // A session's history reads too: what is stored so far (the waiting turn is not yet).
  EXPECT_EQ(GetSession(c, "stall-0").history().messages_size(), 2);
  EXPECT_FALSE(c.Terminal("stall-hot", milliseconds(1)));  // its own store waits too
  EXPECT_TRUE(Eventually(
      [&] { return HeavyMetric(s, 0, "wf_heavy_turns_storing") >= kStalled + 1; }, seconds(3)))
      << HeavyMetric(s, 0, "wf_heavy_turns_storing");
  locker->abort();
  for (int i = 0; i < kStalled; ++i) {
    auto end = c.Terminal("stall-next-" + std::to_string(i), milliseconds(30000));
    ASSERT_TRUE(end && end->has_final()) << i << (end ? end->DebugString() : "") << s.Logs();
  }
  auto end = c.Terminal("stall-hot", milliseconds(30000));
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  EXPECT_EQ(end->final().answer(), "history: hello | please recall");
  end = c.Terminal("stall-fresh", milliseconds(30000));
  ASSERT_TRUE(end && end->has_final()) << (end ? end->DebugString() : "") << s.Logs();
  EXPECT_EQ(end->final().answer(), "history: please recall");
  EXPECT_EQ(GetSession(c, "stall-" + std::to_string(kStalled)).history().messages_size(), 4);
  EXPECT_EQ(GetSession(c, "stall-fresh").history().messages_size(), 2);
  EXPECT_TRUE(Eventually([&] { return HeavyMetric(s, 0, "wf_heavy_turns_storing") == 0; }));
}

// Session requests have a thread of their own: DELETEs stuck on PostgreSQL (their sessions'
// rows locked) hold up other session requests, never a turn's start. They used to run on the
// turn executor, so four stuck DELETEs stopped every turn of the process from starting. The
// requests waiting for the session thread are bounded: past 256 the rest are refused at once
// with `unavailable` (an answer, never silence), and the held ones are answered once
// PostgreSQL is free again.
TEST(HeavyWorkerTest, SessionRequestsStuckOnPostgresNeverHoldUpTurns) {
  Stack s;
  HeavyClient c(s);
  constexpr int kStuck = 6;  // more than wf-heavy's turn executor threads
  pqxx::connection pg(s.pg_.url());
  std::unique_ptr<pqxx::work> locker;
  ASSERT_NO_FATAL_FAILURE(StoreThenLockSessions(s, c, pg, "stuck", kStuck, &locker));

  // DELETEs of the locked sessions, then many more of one of them, all at once; replies
  // gathered on one inbox.
  constexpr int kRequests = 300;
  std::mutex mu;
  std::map<std::string, wf::v1::SessionReply> replies;  // by request number
  const std::string inbox = NatsConnection::NewInbox();
  auto sub = c.conn().Subscribe(inbox + ".*", [&](const NatsMsgView& m) {
    wf::v1::SessionReply reply;
    reply.ParseFromString(std::string(m.data()));
    std::lock_guard lock(mu);
    replies[std::string(m.subject().substr(inbox.size() + 1))] = reply;
  });
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  for (int i = 0; i < kRequests; ++i) {
    wf::v1::SessionRequest request;
    request.set_session_id("stuck-" + std::to_string(i < kStuck ? i : 0));
    ASSERT_TRUE(c.conn()
                    .Publish("wf.session.delete", request.SerializeAsString(),
                             inbox + "." + std::to_string(i))
                    .ok());
  }
  auto refused = [&] {  // by the bound (not, say, a PostgreSQL timeout)
    std::lock_guard lock(mu);
    int n = 0;
    for (const auto& [id, reply] : replies) {
      if (reply.has_error() && reply.error().code() == "unavailable" &&
          reply.error().message().find("too many session requests") != std::string::npos) {
        ++n;
      }
    }
    return n;
  };
  // One DELETE runs (and waits on its row) and 256 wait for the session thread; the rest are
  // refused at once (one more if the thread had not yet taken the first when the rest came).
  ASSERT_TRUE(Eventually([&] { return refused() >= kRequests - 1 - 256; }))
      << refused() << " refused" << s.Logs();
  std::this_thread::sleep_for(milliseconds(200));  // any last refusal
  const int refused_now = refused();
  EXPECT_TRUE(refused_now == kRequests - 1 - 256 || refused_now == kRequests - 256) << refused_now;
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(replies.size(), static_cast<std::size_t>(refused_now))
        << "a session request was answered while PostgreSQL held every one";
  }

  // Meanwhile turns start and stream: a warm session's (Redis) and a new one's (PostgreSQL).
  c.Send("stuck-hot", "stuck-1", "please recall", 0, /*stream=*/true);
  c.Send("stuck-fresh", "stuck-fresh", "please recall", 0, /*stream=*/true);
  EXPECT_TRUE(c.WaitToken("stuck-hot", milliseconds(5000))) << s.Logs();
  EXPECT_TRUE(c.WaitToken("stuck-fresh", milliseconds(5000))) << s.Logs();
  auto fresh = c.Terminal("stuck-fresh", milliseconds(10000));
  ASSERT_TRUE(fresh && fresh->has_final()) << (fresh ? fresh->DebugString() : "") << s.Logs();

  // PostgreSQL free again: every held request is answered; the locked sessions are deleted.
  locker->abort();
  ASSERT_TRUE(Eventually(
      [&] {
        std::lock_guard lock(mu);
        return replies.size() == static_cast<std::size_t>(kRequests);
      },
      seconds(30)))
      << replies.size() << s.Logs();
  std::lock_guard lock(mu);
  int deleted = 0;
  for (const auto& [id, reply] : replies) {
    if (reply.has_ack() && reply.ack().deleted()) ++deleted;
  }
  EXPECT_EQ(deleted, kStuck) << "each locked session deleted once";
  for (int i = 0; i < kStuck; ++i) {
    if (i == 1) continue;  // the "please recall" turn may have been stored after its delete
    EXPECT_EQ(GetSession(c, "stuck-" + std::to_string(i)).error().code(), "session_not_found");
  }
}

}  // namespace
}  // namespace wf::testing
