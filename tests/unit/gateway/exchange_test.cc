#include "gateway/exchange.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "gateway/exchange_table.h"

namespace wf {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

/// Records what the exchange sends.
struct Capture {
  std::mutex mu;
  std::vector<std::string> sends;
  /// EndConnection was called after this many sends (-1: never).
  long ended_after = -1;
  /// Sends are refused (the client stopped reading) once this many were taken (-1: never).
  long refuse_after = -1;
  /// Sends attempted after the first refusal.
  int after_refusal = 0;
  std::string All() {
    std::lock_guard lock(mu);
    std::string all;
    for (const auto& s : sends) all += s;
    return all;
  }
  std::size_t Count() {
    std::lock_guard lock(mu);
    return sends.size();
  }
};

class CaptureChannel : public ClientChannel {
  bool refused_ = false;

 public:
  explicit CaptureChannel(std::shared_ptr<Capture> capture) : capture_(std::move(capture)) {}
  bool Send(std::string bytes) override {
    std::lock_guard lock(capture_->mu);
    const long taken = static_cast<long>(capture_->sends.size());
    if (capture_->refuse_after >= 0 && taken >= capture_->refuse_after) {
      if (refused_) ++capture_->after_refusal;
      refused_ = true;
      return false;
    }
    capture_->sends.push_back(std::move(bytes));
    return true;
  }
  void EndConnection() override {
    std::lock_guard lock(capture_->mu);
    capture_->ended_after = capture_->sends.size();
  }

 private:
  std::shared_ptr<Capture> capture_;
};

struct Fixture {
  std::shared_ptr<Capture> capture = std::make_shared<Capture>();
  Clock::time_point start = Clock::now();
  std::unique_ptr<Exchange> exchange;

  /// `first_event`: the first-event deadline (gateway.flow_timeout_ms), none when absent.
  explicit Fixture(ExchangeKind kind, bool keep_alive = true,
                   milliseconds deadline = milliseconds(1000),
                   milliseconds heartbeat = milliseconds(200),
                   std::optional<milliseconds> first_event = std::nullopt) {
    Exchange::Params p;
    p.kind = kind;
    p.request_id = "REQ123";
    p.session_id = "sess";
    p.keep_alive = keep_alive;
    p.start = start;
    p.deadline = start + deadline;
    p.heartbeat = heartbeat;
    if (first_event) {
      p.first_event_deadline = start + *first_event;
      p.flow_timeout = *first_event;
    }
    exchange = std::make_unique<Exchange>(p, std::make_unique<CaptureChannel>(capture));
  }
};

struct HttpParts {
  int status = 0;
  std::string head;
  std::string body;
};

HttpParts SplitHttp(const std::string& bytes) {
  HttpParts parts;
  auto end = bytes.find("\r\n\r\n");
  EXPECT_NE(end, std::string::npos) << bytes;
  parts.head = bytes.substr(0, end + 2);
  parts.body = bytes.substr(end + 4);
  parts.status = std::stoi(bytes.substr(9, 3));
  return parts;
}

/// Decodes a chunked body; `complete` tells whether the last chunk was seen.
std::string Dechunk(const std::string& body, bool* complete) {
  std::string out;
  std::size_t pos = 0;
  *complete = false;
  while (pos < body.size()) {
    auto nl = body.find("\r\n", pos);
    std::size_t n = std::stoul(body.substr(pos, nl - pos), nullptr, 16);
    if (n == 0) {
      *complete = body.substr(nl) == "\r\n\r\n";
      break;
    }
    out += body.substr(nl + 2, n);
    EXPECT_EQ(body.substr(nl + 2 + n, 2), "\r\n");
    pos = nl + 2 + n + 2;
  }
  return out;
}

v1::QueryEvent Token(const std::string& text) {
  v1::QueryEvent e;
  e.set_request_id("REQ123");
  e.set_token(text);
  return e;
}

v1::QueryEvent FinalEvent() {
  v1::QueryEvent e;
  e.set_request_id("REQ123");
  e.mutable_final()->set_answer("done!");
  e.mutable_final()->set_route("agent");
  e.mutable_final()->set_run_id("run-7");
  return e;
}

v1::QueryEvent ErrorEvent(const std::string& code) {
  v1::QueryEvent e;
  e.mutable_error()->set_code(code);
  e.mutable_error()->set_message("it failed");
  return e;
}

TEST(Exchange, QueryAnswersOnFinalOnly) {
  Fixture f(ExchangeKind::kQuery);
  EXPECT_FALSE(f.exchange->OnEvent(Token("ignored")).finished);
  EXPECT_EQ(f.capture->Count(), 0u);
  auto outcome = f.exchange->OnEvent(FinalEvent());
  EXPECT_TRUE(outcome.finished);
  EXPECT_EQ(outcome.status, 200);
  EXPECT_FALSE(outcome.cancel);
  auto http = SplitHttp(f.capture->All());
  EXPECT_EQ(http.status, 200);
  EXPECT_NE(http.head.find("X-Request-Id: REQ123\r\n"), std::string::npos);
  EXPECT_NE(http.head.find("Connection: keep-alive\r\n"), std::string::npos);
  json body = json::parse(http.body);
  EXPECT_EQ(body["message"], "done!");
  EXPECT_EQ(body["request_id"], "REQ123");
  EXPECT_EQ(body["run_id"], "run-7");
  EXPECT_EQ(body["session_id"], "sess");
  // Exactly once: later events, ticks and disconnects change nothing.
  EXPECT_FALSE(f.exchange->OnEvent(FinalEvent()).finished);
  EXPECT_FALSE(f.exchange->OnTick(f.start + milliseconds(5000)).finished);
  EXPECT_FALSE(f.exchange->OnClientGone().finished);
  EXPECT_EQ(f.capture->Count(), 1u);
}

TEST(Exchange, ErrorEventsMapThroughTheErrorTable) {
  const std::pair<const char*, int> cases[] = {{"upstream_timeout", 504}, {"no_agent_worker", 503},
                                               {"session_busy", 409},     {"flow_not_found", 404},
                                               {"llm_error", 502},        {"who_knows", 500}};
  for (const auto& [code, status] : cases) {
    Fixture f(ExchangeKind::kQuery, /*keep_alive=*/false);
    auto outcome = f.exchange->OnEvent(ErrorEvent(code));
    EXPECT_TRUE(outcome.finished);
    EXPECT_EQ(outcome.status, status) << code;
    auto http = SplitHttp(f.capture->All());
    EXPECT_EQ(http.status, status) << code;
    EXPECT_NE(http.head.find("Connection: close\r\n"), std::string::npos);
    json body = json::parse(http.body);
    EXPECT_EQ(body["error"]["message"], "it failed");
    // The error names the request, in the body and the header.
    EXPECT_EQ(body["error"]["request_id"], "REQ123");
    EXPECT_NE(http.head.find("X-Request-Id: REQ123\r\n"), std::string::npos) << http.head;
    // `Connection: close` is kept: the connection ends after the answer (RFC 9112 9.6).
    EXPECT_EQ(f.capture->ended_after, 1);
  }
}

TEST(Exchange, DeadlineGives504AndCancels) {
  Fixture f(ExchangeKind::kQuery, true, milliseconds(100));
  EXPECT_FALSE(f.exchange->OnTick(f.start + milliseconds(50)).finished);
  auto outcome = f.exchange->OnTick(f.start + milliseconds(100));
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 504);
  auto http = SplitHttp(f.capture->All());
  EXPECT_EQ(http.status, 504);
  EXPECT_EQ(json::parse(http.body)["error"]["code"], "deadline_exceeded");
}

/// A query whose worker went silent (died mid-flow) ends at the first-event deadline, long
/// before the turn deadline; the 504 names gateway.flow_timeout_ms.
Fixture WithFirstEventDeadline(ExchangeKind kind, milliseconds first_event, milliseconds deadline) {
  return Fixture(kind, true, deadline, milliseconds(200), first_event);
}

v1::QueryEvent QueuedEvent() {
  v1::QueryEvent e;
  e.set_request_id("REQ123");
  e.mutable_queued()->set_route("agent");
  return e;
}

TEST(Exchange, SilenceUntilTheFirstEventDeadlineGives504AndCancels) {
  Fixture f = WithFirstEventDeadline(ExchangeKind::kQuery, milliseconds(300), milliseconds(60000));
  EXPECT_FALSE(f.exchange->OnTick(f.start + milliseconds(299)).finished);
  EXPECT_EQ(f.capture->Count(), 0u);
  auto outcome = f.exchange->OnTick(f.start + milliseconds(300));
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 504);
  auto body = json::parse(SplitHttp(f.capture->All()).body);
  EXPECT_EQ(body["error"]["code"], "deadline_exceeded");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("flow_timeout_ms (300 ms)"),
            std::string::npos)
      << body.dump();
}

TEST(Exchange, QueuedLiftsTheFirstEventDeadlineAndShowsNothing) {
  for (ExchangeKind kind : {ExchangeKind::kQuery, ExchangeKind::kStream}) {
    Fixture f = WithFirstEventDeadline(kind, milliseconds(300), milliseconds(5000));
    f.exchange->StartStream();
    const std::size_t before = f.capture->Count();
    EXPECT_FALSE(f.exchange->OnEvent(QueuedEvent()).finished);
    EXPECT_EQ(f.capture->Count(), before) << "queued is not shown to the client";
    EXPECT_FALSE(f.exchange->OnTick(f.start + milliseconds(301)).finished);
    EXPECT_FALSE(f.exchange->OnTick(f.start + milliseconds(4999)).finished);
    // The turn deadline still holds.
    auto outcome = f.exchange->OnTick(f.start + milliseconds(5000));
    EXPECT_TRUE(outcome.finished);
    EXPECT_NE(f.capture->All().find("request's deadline"), std::string::npos);
  }
}

TEST(Exchange, AnyEventLiftsTheFirstEventDeadline) {
  Fixture f = WithFirstEventDeadline(ExchangeKind::kStream, milliseconds(300), milliseconds(5000));
  f.exchange->StartStream();
  EXPECT_FALSE(f.exchange->OnEvent(Token("Hel")).finished);
  EXPECT_FALSE(f.exchange->OnTick(f.start + milliseconds(1000)).finished);
  EXPECT_TRUE(f.exchange->OnEvent(FinalEvent()).finished);
}

TEST(Exchange, QueuedAfterTheAgentsEventsChangesNothing) {
  // Two publishers: the agent's first events may overtake the lightweight worker's `queued`.
  Fixture f = WithFirstEventDeadline(ExchangeKind::kStream, milliseconds(300), milliseconds(5000));
  f.exchange->StartStream();
  v1::QueryEvent token = Token("Hel");
  token.set_attempt(1);
  EXPECT_FALSE(f.exchange->OnEvent(token).finished);
  EXPECT_FALSE(f.exchange->OnEvent(QueuedEvent()).finished);
  v1::QueryEvent done = FinalEvent();
  done.set_attempt(1);
  EXPECT_TRUE(f.exchange->OnEvent(done).finished);
  bool complete = false;
  std::string sse = Dechunk(SplitHttp(f.capture->All()).body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_EQ(sse.find("reset"), std::string::npos) << sse;
  EXPECT_NE(sse.find("event: done"), std::string::npos) << sse;
}

TEST(Exchange, NoRespondersIs503NoWorker) {
  Fixture f(ExchangeKind::kQuery);
  auto outcome = f.exchange->OnNoResponders();
  EXPECT_EQ(outcome.status, 503);
  EXPECT_EQ(json::parse(SplitHttp(f.capture->All()).body)["error"]["code"], "no_worker");
}

TEST(Exchange, StreamForwardsEventsInOrderAndEndsWithDone) {
  Fixture f(ExchangeKind::kStream);
  f.exchange->StartStream();
  f.exchange->OnEvent(Token("Hel"));
  f.exchange->OnEvent(Token("lo"));
  auto outcome = f.exchange->OnEvent(FinalEvent());
  EXPECT_TRUE(outcome.finished);
  EXPECT_EQ(outcome.status, 200);
  EXPECT_EQ(f.capture->Count(), 4u);  // head + one write per event
  auto http = SplitHttp(f.capture->All());
  EXPECT_EQ(http.status, 200);
  EXPECT_NE(http.head.find("text/event-stream"), std::string::npos);
  bool complete = false;
  std::string sse = Dechunk(http.body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_EQ(sse.substr(0, sse.find("event: done")),
            "event: token\ndata: {\"token\":\"Hel\"}\n\n"
            "event: token\ndata: {\"token\":\"lo\"}\n\n");
  auto done_data = sse.substr(sse.find("data: ", sse.find("event: done")) + 6);
  json done = json::parse(done_data.substr(0, done_data.find('\n')));
  EXPECT_EQ(done["request_id"], "REQ123");
  EXPECT_EQ(done["run_id"], "run-7");
}

TEST(Exchange, AReRunTurnResetsTheStreamAndLateEventsOfTheEarlierRunAreDropped) {
  Fixture f(ExchangeKind::kStream);
  f.exchange->StartStream();
  auto token = [](const std::string& text, uint32_t attempt) {
    v1::QueryEvent e = Token(text);
    e.set_attempt(attempt);
    return e;
  };
  f.exchange->OnEvent(token("one ", 1));
  f.exchange->OnEvent(token("two ", 1));
  f.exchange->OnEvent(token("one ", 2));   // another worker re-runs the turn
  f.exchange->OnEvent(token("late ", 1));  // the earlier run's last bytes: dropped
  f.exchange->OnEvent(token("two", 2));
  v1::QueryEvent done = FinalEvent();
  done.set_attempt(2);
  EXPECT_TRUE(f.exchange->OnEvent(done).finished);
  bool complete = false;
  std::string sse = Dechunk(SplitHttp(f.capture->All()).body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_EQ(sse.substr(0, sse.find("event: done")),
            "event: token\ndata: {\"token\":\"one \"}\n\n"
            "event: token\ndata: {\"token\":\"two \"}\n\n"
            "event: reset\ndata: {\"request_id\":\"REQ123\",\"attempt\":2}\n\n"
            "event: token\ndata: {\"token\":\"one \",\"attempt\":2}\n\n"
            "event: token\ndata: {\"token\":\"two\",\"attempt\":2}\n\n");
}

TEST(Exchange, AQueryIgnoresTheEndOfAnEarlierRun) {
  Fixture f(ExchangeKind::kQuery);
  v1::QueryEvent token = Token("x");
  token.set_attempt(2);
  f.exchange->OnEvent(token);
  v1::QueryEvent stale = ErrorEvent("internal");
  stale.set_attempt(1);
  EXPECT_FALSE(f.exchange->OnEvent(stale).finished);
  v1::QueryEvent done = FinalEvent();
  done.set_attempt(2);
  auto outcome = f.exchange->OnEvent(done);
  EXPECT_TRUE(outcome.finished);
  EXPECT_EQ(outcome.status, 200);
}

// The gateway publishes first and writes the head after (StartStream): an event, an error or a
// heartbeat that comes before carries the head in its own write, and StartStream then writes
// nothing. The answer is SSE either way.
TEST(Exchange, StreamEventBeforeStartStreamCarriesTheHead) {
  Fixture f(ExchangeKind::kStream);
  EXPECT_FALSE(f.exchange->OnEvent(Token("Hel")).finished);
  ASSERT_EQ(f.capture->Count(), 1u);
  auto http = SplitHttp(f.capture->All());
  EXPECT_EQ(http.status, 200);
  EXPECT_NE(http.head.find("text/event-stream"), std::string::npos) << http.head;
  f.exchange->StartStream();
  EXPECT_EQ(f.capture->Count(), 1u) << "a second head";
  EXPECT_TRUE(f.exchange->OnEvent(FinalEvent()).finished);
  bool complete = false;
  std::string sse = Dechunk(SplitHttp(f.capture->All()).body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_NE(sse.find("event: token"), std::string::npos) << sse;
  EXPECT_NE(sse.find("event: done"), std::string::npos) << sse;

  // An error before the head (e.g. "no responders"): still a 200 SSE stream with an error event.
  Fixture g(ExchangeKind::kStream);
  EXPECT_TRUE(g.exchange->OnNoResponders().finished);
  g.exchange->StartStream();
  ASSERT_EQ(g.capture->Count(), 1u);
  auto failed = SplitHttp(g.capture->All());
  EXPECT_EQ(failed.status, 200);
  std::string error_sse = Dechunk(failed.body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_NE(error_sse.find("event: error"), std::string::npos) << error_sse;
  EXPECT_NE(error_sse.find("no_worker"), std::string::npos) << error_sse;
}

TEST(Exchange, StreamKeepsTheConnectionForTheNextRequest) {
  for (bool keep_alive : {true, false}) {
    Fixture f(ExchangeKind::kStream, keep_alive);
    f.exchange->StartStream();
    EXPECT_TRUE(f.exchange->OnEvent(FinalEvent()).finished);
    auto http = SplitHttp(f.capture->All());
    EXPECT_NE(http.head.find(keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n"),
              std::string::npos)
        << http.head;
    // keep-alive: the client sends its next request (no half-close); close: the connection
    // ends after the last chunk.
    EXPECT_EQ(f.capture->ended_after, keep_alive ? -1 : 2);
  }
}

TEST(Exchange, ConnectionCloseAnswersEndTheConnection) {
  Fixture query(ExchangeKind::kQuery, /*keep_alive=*/false);
  query.exchange->OnEvent(FinalEvent());
  EXPECT_EQ(query.capture->ended_after, 1);
  Fixture kept(ExchangeKind::kQuery, /*keep_alive=*/true);
  kept.exchange->OnEvent(FinalEvent());
  EXPECT_EQ(kept.capture->ended_after, -1);
}

TEST(Exchange, StreamPromisedKeepAliveHalfClosesWhenInputWasDropped) {
  // A pipelined request arrives mid-stream (the connection drops it): the head already said
  // keep-alive, so the end of the stream must end the connection or the client would wait for
  // an answer that never comes.
  for (bool by_error : {false, true}) {
    Fixture f(ExchangeKind::kStream, true);
    f.exchange->StartStream();
    f.exchange->OnEvent(Token("Hel"));
    f.exchange->DisableKeepAlive();
    EXPECT_EQ(f.capture->ended_after, -1);
    auto outcome = by_error ? f.exchange->Fail(Error{ErrorCode::kUnavailable, "stopping"})
                            : f.exchange->OnEvent(FinalEvent());
    EXPECT_TRUE(outcome.finished);
    EXPECT_EQ(f.capture->ended_after, 3) << "after the head, the token and the last chunk";
    bool complete = false;
    Dechunk(SplitHttp(f.capture->All()).body, &complete);
    EXPECT_TRUE(complete);
  }
}

TEST(Exchange, DisablingKeepAliveAfterTheEndChangesNothing) {
  // The connection's thread saw the exchange unfinished, then the answer went out: the input it
  // holds is the client's next request, which the refusal tells it not to drop.
  for (auto kind : {ExchangeKind::kQuery, ExchangeKind::kStream}) {
    Fixture f(kind, true);
    f.exchange->StartStream();
    EXPECT_TRUE(f.exchange->OnEvent(FinalEvent()).finished);
    EXPECT_FALSE(f.exchange->DisableKeepAlive());
    EXPECT_NE(SplitHttp(f.capture->All()).head.find("Connection: keep-alive\r\n"),
              std::string::npos);
    EXPECT_EQ(f.capture->ended_after, -1);
  }
  Fixture running(ExchangeKind::kQuery, true);
  EXPECT_TRUE(running.exchange->DisableKeepAlive());
  running.exchange->OnEvent(FinalEvent());
  EXPECT_NE(SplitHttp(running.capture->All()).head.find("Connection: close\r\n"),
            std::string::npos);
}

TEST(Exchange, StreamDisabledBeforeTheHeadSaysCloseAndEndsTheConnection) {
  Fixture f(ExchangeKind::kStream, true);
  f.exchange->DisableKeepAlive();
  f.exchange->StartStream();
  f.exchange->OnEvent(FinalEvent());
  EXPECT_NE(SplitHttp(f.capture->All()).head.find("Connection: close\r\n"), std::string::npos);
  EXPECT_EQ(f.capture->ended_after, 2);
}

TEST(Exchange, StreamEndingAfterTheClientLeftSendsNothing) {
  Fixture f(ExchangeKind::kStream, true);
  f.exchange->StartStream();
  f.exchange->DisableKeepAlive();
  EXPECT_TRUE(f.exchange->OnClientGone().finished);
  EXPECT_FALSE(f.exchange->OnEvent(FinalEvent()).finished);
  EXPECT_EQ(f.capture->Count(), 1u);
  EXPECT_EQ(f.capture->ended_after, -1);
}

TEST(Exchange, StreamErrorEventEndsTheStream) {
  Fixture f(ExchangeKind::kStream);
  f.exchange->StartStream();
  auto outcome = f.exchange->OnEvent(ErrorEvent("llm_error"));
  EXPECT_TRUE(outcome.finished);
  bool complete = false;
  std::string sse = Dechunk(SplitHttp(f.capture->All()).body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_EQ(sse,
            "event: error\ndata: {\"error\":{\"code\":\"llm_error\",\"message\":\"it failed\","
            "\"request_id\":\"REQ123\"}}\n\n");
}

TEST(Exchange, StreamHeartbeatsWhenSilent) {
  Fixture f(ExchangeKind::kStream, true, milliseconds(100000), milliseconds(200));
  f.exchange->StartStream();
  // Not yet silent long enough.
  f.exchange->OnTick(Clock::now() + milliseconds(100));
  EXPECT_EQ(f.capture->Count(), 1u);
  f.exchange->OnTick(Clock::now() + milliseconds(250));
  EXPECT_EQ(f.capture->Count(), 2u);
  bool complete = false;
  EXPECT_EQ(Dechunk(SplitHttp(f.capture->All()).body, &complete), ": heartbeat\n\n");
}

TEST(Exchange, FirstHeartbeatComesWithinTheFirstSecond) {
  Fixture f(ExchangeKind::kStream, true, milliseconds(100000), milliseconds(15000));
  f.exchange->StartStream();
  f.exchange->OnTick(Clock::now() + milliseconds(1001));
  EXPECT_EQ(f.capture->Count(), 2u);
  // Afterwards the configured interval applies.
  f.exchange->OnTick(Clock::now() + milliseconds(5000));
  EXPECT_EQ(f.capture->Count(), 2u);
}

TEST(Exchange, StreamDeadlineSendsErrorEventAndCancels) {
  Fixture f(ExchangeKind::kStream, true, milliseconds(100));
  f.exchange->StartStream();
  auto outcome = f.exchange->OnTick(f.start + milliseconds(150));
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  bool complete = false;
  std::string sse = Dechunk(SplitHttp(f.capture->All()).body, &complete);
  EXPECT_TRUE(complete);
  EXPECT_NE(sse.find("deadline_exceeded"), std::string::npos);
}

TEST(Exchange, ClientGoneStopsAllWritesAndCancels) {
  Fixture f(ExchangeKind::kStream);
  f.exchange->StartStream();
  f.exchange->OnEvent(Token("a"));
  auto outcome = f.exchange->OnClientGone();
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);
  const auto before = f.capture->Count();
  f.exchange->OnEvent(Token("b"));
  f.exchange->OnEvent(FinalEvent());
  f.exchange->OnTick(Clock::now() + milliseconds(100000));
  EXPECT_FALSE(f.exchange->Fail(Error{ErrorCode::kUnavailable, "x"}).finished);
  EXPECT_EQ(f.capture->Count(), before);
}

// A connection that refuses bytes (its client stopped reading: the gateway's write queue for it
// is full) ends a stream as a disconnect does: 499, a cancel, and not another byte.
TEST(Exchange, RefusedStreamWriteEndsTheStreamAndCancels) {
  Fixture f(ExchangeKind::kStream);
  f.capture->refuse_after = 2;  // the head and one event, then the client stops reading
  EXPECT_FALSE(f.exchange->StartStream().finished);
  EXPECT_FALSE(f.exchange->OnEvent(Token("a")).finished);
  auto outcome = f.exchange->OnEvent(Token("b"));
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);
  EXPECT_FALSE(f.exchange->OnEvent(Token("c")).finished);
  EXPECT_FALSE(f.exchange->OnEvent(FinalEvent()).finished);
  EXPECT_FALSE(f.exchange->OnTick(Clock::now() + milliseconds(100000)).finished);
  EXPECT_FALSE(f.exchange->Fail(Error{ErrorCode::kUnavailable, "x"}).finished);
  EXPECT_FALSE(f.exchange->OnClientGone().finished);
  EXPECT_FALSE(f.exchange->DisableKeepAlive());
  EXPECT_EQ(f.capture->Count(), 2u);
  EXPECT_EQ(f.capture->after_refusal, 0);
  EXPECT_EQ(f.capture->ended_after, -1);  // the connection is being dropped already
}

TEST(Exchange, RefusedHeartbeatEndsTheStreamAndCancels) {
  Fixture f(ExchangeKind::kStream, true, milliseconds(100000), milliseconds(200));
  f.capture->refuse_after = 1;
  EXPECT_FALSE(f.exchange->StartStream().finished);
  auto outcome = f.exchange->OnTick(Clock::now() + milliseconds(1000));
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);
  EXPECT_EQ(f.capture->Count(), 1u);
}

// The head itself refused (an earlier answer on the kept-alive connection still fills it).
TEST(Exchange, RefusedStreamHeadEndsTheStreamAndCancels) {
  Fixture f(ExchangeKind::kStream);
  f.capture->refuse_after = 0;
  auto outcome = f.exchange->StartStream();
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);
  EXPECT_FALSE(f.exchange->OnEvent(Token("a")).finished);
  EXPECT_EQ(f.capture->Count(), 0u);
  EXPECT_EQ(f.capture->after_refusal, 0);
}

// A refused last write: the answer is complete on the worker's side (no cancel), but the client
// did not get it (499).
TEST(Exchange, RefusedLastWriteRecords499WithoutCancel) {
  Fixture query(ExchangeKind::kQuery);
  query.capture->refuse_after = 0;
  auto outcome = query.exchange->OnEvent(FinalEvent());
  EXPECT_TRUE(outcome.finished);
  EXPECT_FALSE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);

  Fixture stream(ExchangeKind::kStream, /*keep_alive=*/false);
  stream.capture->refuse_after = 1;
  EXPECT_FALSE(stream.exchange->StartStream().finished);
  outcome = stream.exchange->OnEvent(FinalEvent());
  EXPECT_TRUE(outcome.finished);
  EXPECT_FALSE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);
  EXPECT_EQ(stream.capture->ended_after, -1);

  Fixture late(ExchangeKind::kStream);
  late.capture->refuse_after = 1;
  EXPECT_FALSE(late.exchange->StartStream().finished);
  outcome = late.exchange->OnTick(late.start + milliseconds(5000));  // past the deadline
  EXPECT_TRUE(outcome.finished);
  EXPECT_TRUE(outcome.cancel);
  EXPECT_EQ(outcome.status, 499);
}

// A HEAD of GET /api/v1/session/{id}: the GET answer's status and headers, no body, for
// answers and errors alike.
TEST(Exchange, HeadOfASessionGetHasNoBody) {
  for (const bool found : {true, false}) {
    auto capture = std::make_shared<Capture>();
    Exchange::Params p;
    p.kind = ExchangeKind::kSessionGet;
    p.request_id = "REQ123";
    p.session_id = "sess";
    p.head_only = true;
    p.start = Clock::now();
    p.deadline = p.start + milliseconds(1000);
    Exchange exchange(p, std::make_unique<CaptureChannel>(capture));
    v1::SessionReply reply;
    if (found) {
      reply.mutable_history()->set_turn_count(2);
    } else {
      reply.mutable_error()->set_code("session_not_found");
      reply.mutable_error()->set_message("no such session");
    }
    EXPECT_EQ(exchange.OnSessionReply(reply).status, found ? 200 : 404);
    const std::string bytes = capture->All();
    HttpParts http = SplitHttp(bytes);
    EXPECT_EQ(http.status, found ? 200 : 404);
    EXPECT_EQ(http.body, "") << bytes;
    const auto length = http.head.find("Content-Length: ");
    ASSERT_NE(length, std::string::npos);
    EXPECT_GT(std::stoul(http.head.substr(length + 16)), 10u) << "the GET body's length";
  }
}

TEST(Exchange, SessionRepliesMapToHttp) {
  {
    Fixture f(ExchangeKind::kSessionGet);
    v1::SessionReply reply;
    reply.mutable_history()->set_turn_count(2);
    EXPECT_EQ(f.exchange->OnSessionReply(reply).status, 200);
    json body = json::parse(SplitHttp(f.capture->All()).body);
    EXPECT_EQ(body["session_id"], "sess");
    EXPECT_EQ(body["turn_count"], 2);
  }
  {
    Fixture f(ExchangeKind::kSessionGet);
    v1::SessionReply reply;
    reply.mutable_error()->set_code("session_not_found");
    reply.mutable_error()->set_message("no such session");
    EXPECT_EQ(f.exchange->OnSessionReply(reply).status, 404);
    EXPECT_EQ(SplitHttp(f.capture->All()).status, 404);
  }
  {
    Fixture f(ExchangeKind::kSessionDelete);
    v1::SessionReply reply;
    reply.mutable_ack()->set_deleted(true);
    EXPECT_EQ(f.exchange->OnSessionReply(reply).status, 200);
    EXPECT_EQ(json::parse(SplitHttp(f.capture->All()).body),
              (json{{"session_id", "sess"}, {"deleted", true}}));
  }
  {
    Fixture f(ExchangeKind::kSessionDelete);
    v1::SessionReply reply;
    reply.mutable_ack()->set_deleted(false);
    EXPECT_EQ(f.exchange->OnSessionReply(reply).status, 404);
  }
  {
    Fixture f(ExchangeKind::kSessionGet, true, milliseconds(5000));
    auto outcome = f.exchange->OnTick(f.start + milliseconds(5000));
    EXPECT_EQ(outcome.status, 503);
    EXPECT_FALSE(outcome.cancel);
    EXPECT_EQ(json::parse(SplitHttp(f.capture->All()).body)["error"]["code"], "no_agent_worker");
  }
  {
    Fixture f(ExchangeKind::kSessionDelete);
    EXPECT_EQ(f.exchange->OnNoResponders().status, 503);
    EXPECT_EQ(json::parse(SplitHttp(f.capture->All()).body)["error"]["code"], "no_agent_worker");
  }
}

// Many threads race to end the same exchange: exactly one wins, one response is sent.
TEST(Exchange, ExactlyOnceUnderRaces) {
  for (int round = 0; round < 200; ++round) {
    Fixture f(round % 2 ? ExchangeKind::kStream : ExchangeKind::kQuery);
    f.exchange->StartStream();
    std::atomic<int> finished{0};
    std::vector<std::thread> threads;
    threads.emplace_back([&] { finished += f.exchange->OnEvent(FinalEvent()).finished; });
    threads.emplace_back(
        [&] { finished += f.exchange->OnTick(f.start + milliseconds(5000)).finished; });
    threads.emplace_back([&] { finished += f.exchange->OnClientGone().finished; });
    threads.emplace_back([&] {
      finished += f.exchange->Fail(Error{ErrorCode::kUnavailable, "x"}).finished;
    });
    for (auto& t : threads) t.join();
    EXPECT_EQ(finished.load(), 1);
  }
}

TEST(ExchangeTable, InsertFindEraseSnapshot) {
  ExchangeTable table;
  Fixture a(ExchangeKind::kQuery), b(ExchangeKind::kQuery);
  std::shared_ptr<Exchange> ea(std::move(a.exchange)), eb(std::move(b.exchange));
  EXPECT_TRUE(table.Insert("a", ea));
  EXPECT_FALSE(table.Insert("a", eb));
  EXPECT_TRUE(table.Insert("b", eb));
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.Find("a"), ea);
  EXPECT_EQ(table.Find("zzz"), nullptr);
  table.Erase("a", eb.get());  // not the same exchange: kept
  EXPECT_EQ(table.size(), 2u);
  table.Erase("a", ea.get());
  EXPECT_EQ(table.size(), 1u);
  EXPECT_EQ(table.Snapshot().size(), 1u);
}

}  // namespace
}  // namespace wf
