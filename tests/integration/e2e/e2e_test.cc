// The whole pipeline, as a client sees it: HTTP and SSE through wf-gateway, flows through
// wf-lightweight, agent turns through JetStream and wf-heavy against the scripted LLM, sessions in
// Redis and PostgreSQL. Every server and binary is real and on free ports.
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "codec/json_struct.h"
#include "nats/connection.h"
#include "stack.h"
#include "wf/v1/query.pb.h"

namespace wf::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

json LlmStats(Stack& s) { return json::parse(HttpCall("GET", s.LlmUrl("/_stats")).body); }

/// Waits until the stored history of `session` has at least `n` messages.
json WaitForHistory(Stack& s, const std::string& session, size_t n) {
  json history;
  Eventually([&] {
    auto r = HttpCall("GET", s.Url("/api/v1/session/" + session));
    history = json::parse(r.body, nullptr, false);
    return r.status == 200 && history["messages"].size() >= n;
  });
  return history;
}

TEST(FlowPathTest, FlowAnswersThroughTheGatewayAndDirectNatsPublishersGetTheSame) {
  Stack s({.heavy_workers = 0});
  auto r = HttpCall("POST", s.Url("/api/v1/query"),
                    R"({"message":"check order 1234","session_id":"flow-1"})",
                    {"Content-Type: application/json"});
  ASSERT_EQ(r.status, 200) << r.body << s.Logs();
  auto body = json::parse(r.body);
  EXPECT_EQ(body["routed_to"], "lightweight");
  EXPECT_EQ(body["flow_id"], "order_status");
  EXPECT_EQ(body["session_id"], "flow-1");
  EXPECT_EQ(body["status"], "success");
  EXPECT_EQ(body["message"].get<std::string>().rfind("Order 1234: ", 0), 0u) << body;
  EXPECT_FALSE(body["request_id"].get<std::string>().empty());
  EXPECT_EQ(r.headers["x-request-id"], body["request_id"]);

  // An outside service publishing protobuf on wf.query gets the same answer.
  NatsOptions options;
  options.url = s.nats_.url();
  auto conn = NatsConnection::Connect(options);
  ASSERT_TRUE(conn.ok());
  wf::v1::QueryRequest request;
  request.set_message("check order 1234");
  request.set_session_id("flow-2");
  auto reply = (*conn)->Request("wf.query", request.SerializeAsString(), milliseconds(10000));
  ASSERT_TRUE(reply.ok());
  wf::v1::QueryEvent event;
  ASSERT_TRUE(event.ParseFromString(*reply));
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  EXPECT_EQ(event.final().answer(), body["message"]);
  EXPECT_FALSE(event.request_id().empty());  // assigned for the publisher
}

TEST(FlowPathTest, UnmatchedWithoutAgentWorkersIs503QuicklyAndFlowsStreamAsOneDone) {
  Stack s({.heavy_workers = 0});
  auto [status, body] = s.Query("write me a poem", "nomatch-1");
  EXPECT_EQ(status, 503) << body;
  EXPECT_EQ(body["error"]["code"], "no_agent_worker");

  SseReader sse(s.Url("/api/v1/query/stream"),
                R"({"message":"查订单 1077","session_id":"flow-sse"})");
  sse.Join();
  auto events = sse.Events();
  std::vector<std::string> kinds;
  for (auto& e : events) {
    if (e.event != "comment") kinds.push_back(e.event);
  }
  ASSERT_EQ(kinds, std::vector<std::string>{"done"}) << sse.Raw();
  auto done = json::parse(events.back().data);
  EXPECT_EQ(done["flow_id"], "order_status");
  EXPECT_FALSE(done["run_id"].get<std::string>().empty());
}

TEST(FlowPathTest, ReadyIsFalseWithoutLightweightWorkers) {
  Stack s({.heavy_workers = 0, .start_gateway = false, .start_lightweight = false});
  int port = FreePort();
  Process gw(BinPath("wf-gateway"), {"--config", s.config_path_, "--nats-url", s.nats_.url(),
                                     "--listen", "127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(WaitForTcpPort(port, milliseconds(10000)));
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  auto ready = HttpCall("GET", base + "/ready");
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_EQ(json::parse(ready.body)["ready"], false);
  EXPECT_EQ(HttpCall("GET", base + "/health").status, 200);
  auto q = HttpCall("POST", base + "/api/v1/query", R"({"message":"check order 1","session_id":"x"})",
                    {"Content-Type: application/json"});
  EXPECT_EQ(q.status, 503) << q.body;
  EXPECT_EQ(json::parse(q.body)["error"]["code"], "no_worker");
}

// kill -9 of the lightweight worker while its flow waits on the business API: the client gets
// 504 once gateway.flow_timeout_ms has passed, not after the agent deadline (20 s here).
TEST(FlowPathTest, KilledWorkerMidFlowGives504AfterTheFlowTimeout) {
  Stack s({.heavy_workers = 0,
           .gateway = {{"flow_timeout_ms", 3000}},
           .flow_endpoint_timeout_ms = 3000,
           .hanging_flow = true});
  const auto started = std::chrono::steady_clock::now();
  std::pair<int, json> answer;
  std::thread client([&] { answer = s.Query("stuck lookup 7", "stuck-1"); });
  std::this_thread::sleep_for(milliseconds(500));  // the worker is waiting on the API now
  s.lightweight_.front()->Signal(SIGKILL);
  client.join();
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(answer.first, 504) << answer.second << s.Logs();
  EXPECT_EQ(answer.second["error"]["code"], "deadline_exceeded");
  EXPECT_NE(answer.second["error"]["message"].get<std::string>().find("flow_timeout_ms"),
            std::string::npos)
      << answer.second;
  EXPECT_LT(waited, std::chrono::seconds(15)) << "waited for the agent deadline";
}

TEST(AgentPathTest, MultiTurnMemoryIncludesFlowTurns) {
  Stack s;
  auto [st1, t1] = s.Query("hello there, I am Ada", "mem-1");
  ASSERT_EQ(st1, 200) << t1 << s.Logs();
  EXPECT_EQ(t1["routed_to"], "heavy");
  EXPECT_FALSE(t1["run_id"].get<std::string>().empty());
  EXPECT_TRUE(t1.contains("usage"));
  EXPECT_NE(t1["message"].get<std::string>().find("I have seen 1 user messages"), std::string::npos)
      << t1;

  auto [st2, t2] = s.Query("check order 1234", "mem-1");
  ASSERT_EQ(st2, 200) << t2;
  EXPECT_EQ(t2["routed_to"], "lightweight");
  // The flow turn reaches the history through JetStream; wait until it is stored.
  WaitForHistory(s, "mem-1", 4);

  auto [st3, t3] = s.Query("please recall", "mem-1");
  ASSERT_EQ(st3, 200) << t3;
  EXPECT_EQ(t3["message"], "history: hello there, I am Ada | check order 1234 | please recall");
  // And the model really received the earlier turns, flow answer included.
  auto last = LlmStats(s)["last_requests"].back();
  bool saw_flow_answer = false;
  for (auto& m : last["messages"]) {
    if (m["role"] == "assistant" && m["content"].is_string() &&
        m["content"].get<std::string>().rfind("Order 1234: ", 0) == 0) {
      saw_flow_answer = true;
    }
  }
  EXPECT_TRUE(saw_flow_answer) << last.dump();
}

// Flow turns a client sends one after the other reach the history in that order, also through
// two wf-lightweight workers (each batching its own records into WF_HISTORY): wf-heavy stores
// WF_HISTORY's records one at a time, in stream order. It stored two at once, and a later turn's
// record could be stored first.
TEST(AgentPathTest, FlowTurnsSentOneAfterTheOtherAreStoredInThatOrder) {
  Stack s;
  s.StartLightweight();
  constexpr int kTurns = 12;
  std::vector<std::string> sent;
  for (int i = 0; i < kTurns; ++i) {
    sent.push_back("check order " + std::to_string(1000 + i));
    auto [status, body] = s.Query(sent.back(), "flows-in-order");
    ASSERT_EQ(status, 200) << body << s.Logs();
    EXPECT_EQ(body["routed_to"], "lightweight") << body;
  }
  json history = WaitForHistory(s, "flows-in-order", 2 * kTurns);
  std::vector<std::string> stored;
  for (const auto& m : history["messages"]) {
    if (m["role"] == "user") stored.push_back(m["content"].get<std::string>());
  }
  EXPECT_EQ(stored, sent) << history.dump();
}

TEST(AgentPathTest, AReusedRequestIdIsRefusedNotLeftWithoutAnswer) {
  // An outside publisher sets request_id itself. wf-lightweight queues an agent turn on JetStream
  // with that id as the message id, so a second query with the same id is not stored again:
  // it must get a clear error, not silence until its deadline.
  Stack s;
  NatsOptions options;
  options.url = s.nats_.url();
  auto conn = NatsConnection::Connect(options);
  ASSERT_TRUE(conn.ok());
  auto ask = [&](const std::string& session) {
    wf::v1::QueryRequest request;
    request.set_message("hello there, I am Ada");
    request.set_session_id(session);
    request.set_request_id("reused-id-1");
    auto reply = (*conn)->Request("wf.query", request.SerializeAsString(), milliseconds(20000));
    wf::v1::QueryEvent event;
    EXPECT_TRUE(reply.ok()) << s.Logs();
    if (reply.ok()) {
      EXPECT_TRUE(event.ParseFromString(*reply));
    }
    return event;
  };
  // The reply to a request is its first event: a token of the agent's streamed answer.
  wf::v1::QueryEvent first = ask("dup-a");
  EXPECT_FALSE(first.has_error()) << first.DebugString() << s.Logs();
  wf::v1::QueryEvent second = ask("dup-b");
  ASSERT_TRUE(second.has_error()) << second.DebugString() << s.Logs();
  EXPECT_EQ(second.error().code(), "duplicate_request_id");
  EXPECT_EQ(second.request_id(), "reused-id-1");
}

TEST(AgentPathTest, FailedFlowTurnIsStoredAndSeenByTheAgent) {
  Stack s;
  auto [st1, t1] = s.Query("check order 77", "failflow-1");  // the order API answers 404
  ASSERT_EQ(st1, 502) << t1;
  EXPECT_EQ(t1["error"]["code"], "upstream_error");
  // The failed turn reaches PostgreSQL/Redis through WF_HISTORY like a successful one.
  auto history = WaitForHistory(s, "failflow-1", 2);
  ASSERT_EQ(history["messages"].size(), 2u) << history.dump();
  EXPECT_EQ(history["messages"][0]["content"], "check order 77");
  const std::string failed = history["messages"][1]["content"].get<std::string>();
  EXPECT_EQ(
      failed.rfind("[flow order_status failed (upstream_error): upstream answered HTTP 404", 0), 0u)
      << failed;

  auto [st2, t2] = s.Query("please recall", "failflow-1");
  ASSERT_EQ(st2, 200) << t2;
  EXPECT_EQ(t2["message"], "history: check order 77 | please recall");
  // The model was shown the failed turn (polled: the LLM's stats may trail its answer).
  json last;
  EXPECT_TRUE(Eventually(
      [&] {
        last = LlmStats(s)["last_requests"].back();
        for (auto& m : last["messages"]) {
          if (m["role"] == "assistant" && m["content"] == failed) return true;
        }
        return false;
      },
      milliseconds(5000)))
      << last.dump();
}

TEST(AgentPathTest, ToolCallRunsOnTheLightweightPoolAndFlowsAreTools) {
  Stack s;
  auto [st, body] = s.Query("what is the weather in Paris?", "tool-1");
  ASSERT_EQ(st, 200) << body << s.Logs();
  std::string answer = body["message"];
  EXPECT_EQ(answer.rfind("Tool said: ", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"city\":\"Paris\""), std::string::npos) << answer;

  auto [st2, body2] = s.Query("please use the order flow", "tool-2");
  ASSERT_EQ(st2, 200) << body2;
  EXPECT_EQ(body2["message"].get<std::string>().rfind("Tool said: Order 4242: ", 0), 0u) << body2;

  // The stored history keeps the tool call and its result.
  auto history = WaitForHistory(s, "tool-1", 4);
  bool call = false, result = false;
  for (auto& m : history["messages"]) {
    if (m["role"] == "assistant" && m.contains("tool_calls") && !m["tool_calls"].empty()) call = true;
    if (m["role"] == "tool") result = true;
  }
  EXPECT_TRUE(call && result) << history.dump();
}

TEST(AgentPathTest, SseStreamsTokensInOrderWithoutBufferingAndHeartbeats) {
  Stack s;
  SseReader sse(s.Url("/api/v1/query/stream"),
                R"({"message":"slow answer please","session_id":"sse-1"})");
  sse.Join();
  auto events = sse.Events();
  std::vector<SseEvent> tokens;
  const SseEvent* done = nullptr;
  int heartbeats = 0;
  for (auto& e : events) {
    if (e.event == "token") tokens.push_back(e);
    if (e.event == "done") done = &e;
    if (e.event == "comment") ++heartbeats;
  }
  ASSERT_NE(done, nullptr) << sse.Raw();
  ASSERT_EQ(tokens.size(), 6u) << sse.Raw();
  std::string text;
  for (auto& t : tokens) text += json::parse(t.data)["token"].get<std::string>();
  EXPECT_EQ(text, "one two three four five six");
  EXPECT_EQ(json::parse(done->data)["message"], "one two three four five six");
  EXPECT_FALSE(json::parse(done->data)["request_id"].get<std::string>().empty());
  EXPECT_FALSE(json::parse(done->data)["run_id"].get<std::string>().empty());
  // The LLM spaces its tokens 300 ms apart: the first one reached the client while the last
  // was not produced yet (no buffering anywhere on the way).
  EXPECT_GT(tokens.back().at - tokens.front().at, milliseconds(1000));
  EXPECT_GE(heartbeats, 1) << sse.Raw();  // the gateway runs with --heartbeat-ms 100
}

TEST(AgentPathTest, ClientDisconnectCancelsTheTurnAndTheLlmSeesItsConnectionClosed) {
  Stack s;
  SseReader sse(s.Url("/api/v1/query/stream"),
                R"({"message":"hang on forever","session_id":"cancel-1"})");
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["active"].get<int>() >= 1; })) << s.Logs();
  sse.Close();
  sse.Join();
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["client_disconnects"].get<int>() >= 1; }))
      << LlmStats(s).dump() << s.Logs();
  // The partial turn is stored, marked as cancelled; the session is free again.
  auto history = WaitForHistory(s, "cancel-1", 1);
  EXPECT_EQ(history["messages"][0]["content"], "hang on forever");
  auto [st, body] = s.Query("are you there", "cancel-1");
  EXPECT_EQ(st, 200) << body;
}

TEST(AgentPathTest, BusySessionIsRejectedWith409) {
  Stack s;
  SseReader first(s.Url("/api/v1/query/stream"),
                  R"({"message":"slow one","session_id":"busy-1"})");
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["active"].get<int>() >= 1; }));
  auto [st, body] = s.Query("another", "busy-1");
  EXPECT_EQ(st, 409) << body;
  EXPECT_EQ(body["error"]["code"], "session_busy");
  first.Join();
  auto [st2, body2] = s.Query("now it is free", "busy-1");
  EXPECT_EQ(st2, 200) << body2;
}

TEST(AgentPathTest, EnqueueWaitsBehindTheRunningTurn) {
  Stack s({.agent = {{"on_busy", "enqueue"}}});
  SseReader first(s.Url("/api/v1/query/stream"),
                  R"({"message":"slow one","session_id":"queue-1"})");
  ASSERT_TRUE(Eventually([&] { return LlmStats(s)["active"].get<int>() >= 1; }));
  auto [st, body] = s.Query("please recall", "queue-1");
  ASSERT_EQ(st, 200) << body;
  // It ran after the first turn and saw it.
  EXPECT_EQ(body["message"], "history: slow one | please recall");
}

TEST(AgentPathTest, Llm429IsRetriedThenSucceeds) {
  Stack s;
  auto [st, body] = s.Query("a flaky question", "flaky-1");
  ASSERT_EQ(st, 200) << body << s.Logs();
  EXPECT_NE(body["message"].get<std::string>().find("You said: a flaky question"),
            std::string::npos);
  EXPECT_EQ(LlmStats(s)["requests"].get<int>(), 2);
}

TEST(AgentPathTest, HangingLlmEndsWith504AtTheDeadline) {
  Stack s({.agent = {{"turn_timeout_ms", 2000}}});
  auto start = std::chrono::steady_clock::now();
  auto [st, body] = s.Query("hang please", "deadline-1");
  EXPECT_EQ(st, 504) << body;
  EXPECT_EQ(body["error"]["code"], "deadline_exceeded");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
}

// gateway.flow_timeout_ms bounds only the wait for the lightweight worker's decision: an agent
// turn whose first token comes long after it is answered (the worker said `queued`), on both
// endpoints, and the stream shows nothing for `queued`.
TEST(AgentPathTest, AgentTurnsOutlastTheFlowTimeout) {
  nlohmann::json rules = DefaultRules();
  const nlohmann::json ponder = {{"when", {{"last_user_contains", "ponder"}}},
                                 {"then", {{"reply", "pondered"}, {"delay_ms", 2500}}}};
  rules["rules"].insert(rules["rules"].begin(), ponder);
  Stack s({.llm_rules = rules,
           .gateway = {{"flow_timeout_ms", 600}},
           .flow_endpoint_timeout_ms = 500});
  auto [st, body] = s.Query("ponder this", "ponder-1");
  ASSERT_EQ(st, 200) << body << s.Logs();
  EXPECT_EQ(body["routed_to"], "heavy");
  EXPECT_NE(body["message"].get<std::string>().find("pondered"), std::string::npos) << body;

  SseReader sse(s.Url("/api/v1/query/stream"),
                R"({"message":"ponder that","session_id":"ponder-2"})");
  sse.Join();
  EXPECT_EQ(sse.Raw().find("event: error"), std::string::npos) << sse.Raw();
  EXPECT_EQ(sse.Raw().find("queued"), std::string::npos) << sse.Raw();
  EXPECT_NE(sse.Raw().find("event: done"), std::string::npos) << sse.Raw();

  // Flows still answer within their own timeout under the shorter wait.
  auto [fst, flow] = s.Query("check order 1234", "ponder-3");
  EXPECT_EQ(fst, 200) << flow;
}

TEST(AgentPathTest, DeleteThenGetIs404) {
  Stack s;
  ASSERT_EQ(s.Query("remember me", "del-1").first, 200);
  auto del = HttpCall("DELETE", s.Url("/api/v1/session/del-1"));
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(json::parse(del.body)["deleted"], true);
  EXPECT_EQ(HttpCall("GET", s.Url("/api/v1/session/del-1")).status, 404);
  EXPECT_EQ(HttpCall("DELETE", s.Url("/api/v1/session/del-1")).status, 404);
  EXPECT_EQ(HttpCall("GET", s.Url("/api/v1/session/never-seen")).status, 404);
}

TEST(AgentPathTest, RedisFlushedMidSessionHistoryComesBackFromPostgres) {
  Stack s;
  ASSERT_EQ(s.Query("first words", "flush-1").first, 200);
  Process flush("redis-cli", {"-p", std::to_string(s.redis_.port()), "FLUSHALL"});
  ASSERT_EQ(flush.Wait(milliseconds(10000)).value_or(-1), 0);
  auto [st, body] = s.Query("please recall", "flush-1");
  ASSERT_EQ(st, 200) << body;
  EXPECT_EQ(body["message"], "history: first words | please recall");
}

/// The index of the wf-heavy that runs a turn (its /metrics say so), waiting for one; -1 if none.
int WorkerRunningATurn(Stack& s) {
  int running = -1;
  Eventually([&] {
    for (size_t i = 0; i < s.heavy_admin_ports_.size(); ++i) {
      auto m = HttpCall("GET", "http://127.0.0.1:" + std::to_string(s.heavy_admin_ports_[i]) +
                                   "/metrics");
      if (m.body.find("wf_heavy_active_turns 1") != std::string::npos) {
        running = static_cast<int>(i);
        return true;
      }
    }
    return false;
  });
  return running;
}

TEST(AgentPathTest, KilledWorkerMidTurnHandsTheTurnToAnother) {
  Stack s({.heavy_workers = 2, .ack_wait_ms = 3000});
  SseReader sse(s.Url("/api/v1/query/stream"),
                R"({"message":"slow turn that survives","session_id":"kill-1"})");
  // Find the worker running the turn and kill it without warning.
  const int victim = WorkerRunningATurn(s);
  ASSERT_GE(victim, 0) << s.Logs();
  s.heavy_[victim]->Signal(SIGKILL);
  sse.Join();
  auto events = sse.Events();
  ASSERT_FALSE(events.empty());
  // The turn completed on the other worker (or, at worst, ended in a clean error): never silence.
  std::string last = events.back().event;
  ASSERT_TRUE(last == "done" || last == "error") << sse.Raw();
  if (last == "done") {
    EXPECT_EQ(json::parse(events.back().data)["message"], "one two three four five six");
  }
}

// A turn that ends while nats-server is down: the worker stores it and publishes its answer into
// its connection's reconnect buffer, which it flushes as soon as it is back, often before the
// gateway has subscribed again. The gateway confirms the answer (QueryRequest.confirm_end) and
// the worker sends it again until it does, so the client gets the answer, not a 504 at the
// deadline for a turn that is stored.
TEST(AgentPathTest, AnAnswerSentWhileNatsIsDownStillReachesTheClient) {
  Stack s({.agent = {{"turn_timeout_ms", 15000}}});
  // Two plain queries and two streams at once, each in its own session.
  constexpr int kEach = 2;
  const std::string turn = "slow answer through an outage";
  auto body = [&](const std::string& session) {
    return json{{"message", turn}, {"session_id", session}}.dump();
  };
  std::vector<HttpReply> replies(kEach);
  std::vector<std::thread> clients;
  for (int i = 0; i < kEach; ++i) {
    clients.emplace_back([&, i] {
      replies[i] =
          HttpCall("POST", s.Url("/api/v1/query"), body("outage-query-" + std::to_string(i)),
                   {"Content-Type: application/json"}, 30000);
    });
  }
  std::vector<std::unique_ptr<SseReader>> streams;
  for (int i = 0; i < kEach; ++i) {
    streams.push_back(std::make_unique<SseReader>(s.Url("/api/v1/query/stream"),
                                                  body("outage-stream-" + std::to_string(i))));
  }
  const std::string metrics =
      "http://127.0.0.1:" + std::to_string(s.heavy_admin_ports_[0]) + "/metrics";
  auto active_turns = [&](int n) {
    return HttpCall("GET", metrics)
               .body.find("wf_heavy_active_turns " + std::to_string(n) + "\n") != std::string::npos;
  };
  ASSERT_TRUE(Eventually([&] { return active_turns(2 * kEach); })) << s.Logs();
  // The LLM streams six tokens 300 ms apart: the turns end and are stored while nats-server is
  // down.
  s.nats_.Stop();
  ASSERT_TRUE(Eventually([&] { return active_turns(0); }, std::chrono::seconds(10))) << s.Logs();
  // wf-heavy reconnects first and flushes the answers it published meanwhile, while the gateway
  // is held (stopped) before it can subscribe again: nobody receives them then. The order is
  // forced here; on its own it is a race, which wf-heavy wins about half the time.
  s.gateway_->Signal(SIGSTOP);
  s.nats_.Start();
  const std::string ready =
      "http://127.0.0.1:" + std::to_string(s.heavy_admin_ports_[0]) + "/ready";
  EXPECT_TRUE(
      Eventually([&] { return HttpCall("GET", ready).status == 200; }, std::chrono::seconds(10)));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  s.gateway_->Signal(SIGCONT);

  for (int i = 0; i < kEach; ++i) {
    SCOPED_TRACE("query " + std::to_string(i));
    clients[i].join();
    EXPECT_EQ(replies[i].status, 200) << replies[i].body << s.Logs();
    const json answer = json::parse(replies[i].body, nullptr, false);
    EXPECT_EQ(answer.value("message", ""), "one two three four five six") << replies[i].body;
    EXPECT_EQ(answer.value("routed_to", ""), "heavy");
  }
  for (int i = 0; i < kEach; ++i) {
    SCOPED_TRACE("stream " + std::to_string(i));
    streams[i]->Join();
    auto events = streams[i]->Events();
    ASSERT_FALSE(events.empty()) << streams[i]->Raw();
    ASSERT_EQ(events.back().event, "done") << streams[i]->Raw() << s.Logs();
    EXPECT_EQ(json::parse(events.back().data)["message"], "one two three four five six");
  }
  // Each turn stored once: the session's next turn sees it a single time.
  ASSERT_TRUE(Eventually([&] { return HttpCall("GET", s.Url("/ready")).status == 200; },
                         std::chrono::seconds(10)));
  for (const std::string kind : {"query", "stream"}) {
    const std::string session = "outage-" + kind + "-0";
    auto [status, recalled] = s.Query("recall please", session);
    ASSERT_EQ(status, 200) << recalled.dump();
    const std::string said = recalled.value("message", "");
    EXPECT_NE(said.find(turn), std::string::npos) << said;
    EXPECT_EQ(said.find(turn), said.rfind(turn)) << said;
  }
}

/// Asks the gateway, on a thread of its own, for flow "slow_lookup" (StackOptions::slow_flow_ms)
/// in session `session`; `*reply` is its answer once the thread is joined.
std::thread AskSlowLookup(Stack& s, const std::string& session, HttpReply* reply) {
  return std::thread([&s, session, reply] {
    *reply = HttpCall("POST", s.Url("/api/v1/query"),
                      json{{"message", "slow lookup please"}, {"session_id", session}}.dump(),
                      {"Content-Type: application/json"}, 30000);
  });
}

/// `reply` is the slow_lookup flow's answer after `ms`.
void ExpectSlowLookupAnswer(Stack& s, const HttpReply& reply, int ms) {
  EXPECT_EQ(reply.status, 200) << reply.body << s.Logs();
  const json answer = json::parse(reply.body, nullptr, false);
  EXPECT_EQ(answer.value("message", ""), "slept " + std::to_string(ms) + " ms") << reply.body;
  EXPECT_EQ(answer.value("routed_to", ""), "lightweight");
}

// The same for a flow whose answer is sent while nats-server is down: the lightweight worker,
// having just lost its connection, sends it until the gateway confirms it.
TEST(FlowPathTest, AFlowAnswerSentWhileNatsIsDownStillReachesTheClient) {
  Stack s({.gateway = {{"flow_timeout_ms", 20000}}, .slow_flow_ms = 1500});
  HttpReply reply;
  std::thread client = AskSlowLookup(s, "outage-flow", &reply);
  // The business API call is under way (it answers 1.5 s after it started) when NATS goes.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  s.nats_.Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  // As above: the worker is back, and its answer flushed, before the gateway resubscribes.
  s.gateway_->Signal(SIGSTOP);
  s.nats_.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  s.gateway_->Signal(SIGCONT);
  client.join();
  ExpectSlowLookupAnswer(s, reply, 1500);
}

// Only the gateway's NATS connections drop (as when its node of a NATS cluster fails while the
// workers stay connected to others) while a flow runs, and the answer is published before the
// gateway is back: it reached nobody, and the client used to get 504 at the flow timeout. Now
// the gateway, once back, asks the lightweight workers to send again the last events of its
// open requests (ReplayRequest), and the answer comes.
TEST(FlowPathTest, AFlowAnswerSentWhileOnlyTheGatewayIsAwayStillReachesTheClient) {
  Stack s(
      {.gateway = {{"flow_timeout_ms", 8000}}, .slow_flow_ms = 1000, .gateway_via_proxy = true});
  HttpReply reply;
  std::thread client = AskSlowLookup(s, "away-flow", &reply);
  // The business API call is under way (it answers 1 s after it started) when the gateway's
  // connections go; they are refused until after the answer was published.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  s.gateway_proxy_->Cut();
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  s.gateway_proxy_->Resume();
  client.join();
  ExpectSlowLookupAnswer(s, reply, 1000);
  const std::string metrics = HttpCall("GET", s.Url("/metrics")).body;
  EXPECT_NE(metrics.find("wf_gateway_replays_asked_total 1"), std::string::npos) << metrics;
}

// The same on the query's last delivery (max_deliver 1 here): no worker will run it again, and
// the client is told so when JetStream reports the deliveries used up (an advisory one of the
// remaining workers answers), instead of waiting in silence for the turn's deadline.
TEST(AgentPathTest, AWorkerKilledOnTheLastDeliveryEndsTheTurnInAnError) {
  Stack s({.heavy_workers = 2, .ack_wait_ms = 1500, .heavy_args = {"--max-deliver", "1"}});
  SseReader sse(s.Url("/api/v1/query/stream"),
                R"({"message":"slow turn that survives","session_id":"kill-last"})");
  const int victim = WorkerRunningATurn(s);
  ASSERT_GE(victim, 0) << s.Logs();
  s.heavy_[victim]->Signal(SIGKILL);
  sse.Join();
  auto events = sse.Events();
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(events.back().event, "error") << sse.Raw();
  const json error = json::parse(events.back().data)["error"];
  EXPECT_EQ(error["code"], "unavailable") << sse.Raw();
  EXPECT_NE(error["message"].get<std::string>().find("in 1 delivery "), std::string::npos) << error;
}

}  // namespace
}  // namespace wf::testing
