// wf-lightweight end to end over a real nats-server with JetStream, against the real demo API.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "codec/json_struct.h"
#include "nats/connection.h"
#include "nats/micro_service.h"
#include "support/test_support.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {
namespace {

using std::chrono::milliseconds;
using testing::BinPath;
using testing::FreePort;
using testing::Process;
using testing::TempDir;

nlohmann::json RawParameters() {
  return {{"type", "object"},
          {"properties",
           {{"status", {{"type", "integer"}, {"default", 200}}},
            {"hex", {{"type", "string"}}},
            {"repeat", {{"type", "integer"}, {"default", 1}}}}},
          {"required", {"hex"}}};
}

/// The bytes of `text` as hex digits (for the demo API's /raw).
std::string Hex(std::string_view text) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string TestConfig(int api_port, int dead_port) {
  std::string base = "http://127.0.0.1:" + std::to_string(api_port);
  nlohmann::json config = {
      {"flows",
       {{{"flow_id", "order_status"},
         {"name", "Order status"},
         {"trigger_patterns",
          {"(?:查询|查)订单\\s*(?P<order_id>\\d+)", "order\\s+(?P<order_id>\\d+)"}},
         {"parameters",
          {{"type", "object"},
           {"properties", {{"order_id", {{"type", "string"}}}}},
           {"required", {"order_id"}}}},
         {"endpoint", {{"url", base + "/api/orders/{order_id}"}, {"method", "GET"}}},
         {"response_template", "订单 {order_id}: {result.status}"}},
        {{"flow_id", "leave_request"},
         {"name", "Leave"},
         {"trigger_patterns", {"请假", "leave request"}},
         {"parameters", {{"type", "object"}, {"properties", {{"days", {{"type", "integer"}}}}}}},
         {"endpoint",
          {{"url", base + "/api/leave"},
           {"method", "POST"},
           {"headers", {{"Content-Type", "application/json"}}},
           {"body",
            {{"text", "{user_message}"}, {"session", "{session_id}"}, {"days", "{days}"}}}}},
         {"response_template", "{result.days}|{result.text}|{result.session}"}},
        {{"flow_id", "broken"},
         {"name", "Upstream 500"},
         {"trigger_patterns", {"break it"}},
         {"endpoint", {{"url", base + "/status/500"}, {"method", "GET"}}}},
        {{"flow_id", "down"},
         {"name", "Upstream down"},
         {"trigger_patterns", {"nobody home"}},
         {"endpoint",
          {{"url", "http://127.0.0.1:" + std::to_string(dead_port) + "/x"}, {"method", "GET"}}}},
        {{"flow_id", "echo_path"},
         {"name", "Echo the path the upstream received"},
         {"trigger_patterns", {"echo path"}},
         {"parameters", {{"type", "object"}, {"properties", {{"p", {{"type", "string"}}}}}}},
         {"endpoint", {{"url", base + "/api/echo/x/{p}/y"}, {"method", "GET"}}},
         {"response_template", "{result.path}"}},
        {{"flow_id", "raw"},
         {"name", "Any bytes from the upstream"},
         {"trigger_patterns", {"raw bytes"}},
         {"parameters", RawParameters()},
         {"endpoint",
          {{"url", base + "/raw?status={status}&hex={hex}&repeat={repeat}"}, {"method", "GET"}}},
         {"response_template", "{result}"}},
        {{"flow_id", "raw_twice"},
         {"name", "Any bytes, twice"},
         {"trigger_patterns", {"raw twice"}},
         {"parameters", RawParameters()},
         {"endpoint",
          {{"url", base + "/raw?status={status}&hex={hex}&repeat={repeat}"}, {"method", "GET"}}},
         {"response_template", "{result}{result}"}},
        {{"flow_id", "slow"},
         {"name", "Upstream hangs"},
         {"trigger_patterns", {"hang on"}},
         {"endpoint",
          {{"url", base + "/hang?ms=20000"}, {"method", "GET"}, {"timeout_ms", 300}}}},
        {{"flow_id", "patient"},
         {"name", "Upstream hangs, long flow timeout"},
         {"trigger_patterns", {"wait for it"}},
         {"endpoint",
          {{"url", base + "/hang?ms=30000"}, {"method", "GET"}, {"timeout_ms", 20000}}}}}},
      {"tools",
       {{{"name", "weather"},
         {"description", "Weather"},
         {"parameters",
          {{"type", "object"},
           {"properties", {{"city", {{"type", "string"}}}}},
           {"required", {"city"}}}},
         {"endpoint", {{"url", base + "/api/weather?city={city}"}, {"method", "GET"}}}}}}};
  return config.dump(2);
}

class LightweightTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api_port_ = FreePort();
    api_.emplace(BinPath("wf-demo-api"),
                 std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(api_port_)});
    ASSERT_TRUE(testing::WaitForTcpPort(api_port_, milliseconds(10000))) << api_->Log();
    config_path_ = dir_.path() + "/config.json";
    std::ofstream(config_path_) << TestConfig(api_port_, FreePort());
    StartWorker();
    NatsOptions options;
    options.url = nats_.url();
    auto conn = NatsConnection::Connect(options);
    ASSERT_TRUE(conn.ok()) << conn.error().message;
    conn_ = std::move(conn).value();
    // Ready once it answers discovery.
    ASSERT_TRUE(testing::Eventually([&] {
      return conn_->Request("$SRV.PING.lightweight", "", milliseconds(200)).ok();
    })) << workers_.front()->Log();
  }

  void StartWorker(int threads = 1) {
    workers_.push_back(std::make_unique<Process>(
        BinPath("wf-lightweight"),
        std::vector<std::string>{"--config", config_path_, "--nats-url", nats_.url(), "--threads",
                                 std::to_string(threads)}));
  }

  wf::v1::QueryEvent Query(const std::string& message, nlohmann::json parameters = nullptr,
                           const std::string& request_id = "") {
    wf::v1::QueryRequest request;
    request.set_message(message);
    request.set_session_id("s-1");
    request.set_request_id(request_id);
    if (parameters.is_object()) *request.mutable_parameters() = JsonToStruct(parameters);
    return Send(request.SerializeAsString());
  }

  wf::v1::QueryEvent Send(const std::string& bytes, const std::string& subject = "wf.query") {
    auto reply = conn_->Request(subject, bytes, milliseconds(10000));
    EXPECT_TRUE(reply.ok()) << (reply.ok() ? "" : reply.error().message);
    wf::v1::QueryEvent event;
    if (reply.ok()) {
      EXPECT_TRUE(event.ParseFromString(*reply));
    }
    return event;
  }

  testing::NatsServer nats_;
  TempDir dir_;
  int api_port_ = 0;
  std::optional<Process> api_;
  std::string config_path_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<NatsConnection> conn_;
};

TEST_F(LightweightTest, MatchedFlowAnswersWithCapturedParameter) {
  auto event = Query("请帮我查询订单 1234", nullptr, "req-42");
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  EXPECT_EQ(event.request_id(), "req-42");
  EXPECT_EQ(event.seq(), 1u);
  EXPECT_EQ(event.final().route(), "flow");
  EXPECT_EQ(event.final().flow_id(), "order_status");
  EXPECT_EQ(event.final().run_id(), "req-42");
  EXPECT_EQ(event.final().upstream_status(), 200);
  EXPECT_EQ(event.final().answer().rfind("订单 1234: ", 0), 0u) << event.final().answer();
  EXPECT_GT(event.final().answer().size(), std::string("订单 1234: ").size());
  EXPECT_EQ(StructToJson(event.final().parameters())["order_id"], "1234");
}

TEST_F(LightweightTest, CaseInsensitiveAndRequestParametersOverrideCaptures) {
  auto event = Query("ORDER 1500 please", {{"order_id", "2000"}});
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  EXPECT_EQ(event.final().answer().rfind("订单 2000: ", 0), 0u) << event.final().answer();
}

TEST_F(LightweightTest, BodyPlaceholdersAreJsonValuesWithTheirTypes) {
  auto event = Query("leave request \"quoted\"", {{"days", 3}});
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  // The demo API echoes what it received: days stayed a number, the text kept its quotes.
  EXPECT_EQ(event.final().answer(), "3|leave request \"quoted\"|s-1");
}

TEST_F(LightweightTest, MissingParameterIsAnErrorNamingIt) {
  auto event = Query("请假");
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "missing_parameter");
  EXPECT_NE(event.error().message().find("days"), std::string::npos);
}

TEST_F(LightweightTest, UpstreamFailuresAreDistinct) {
  auto e500 = Query("break it");
  ASSERT_TRUE(e500.has_error());
  EXPECT_EQ(e500.error().code(), "upstream_error");
  EXPECT_NE(e500.error().message().find("500"), std::string::npos) << e500.error().message();

  auto down = Query("nobody home");
  ASSERT_TRUE(down.has_error());
  EXPECT_EQ(down.error().code(), "upstream_unavailable") << down.error().message();

  auto start = std::chrono::steady_clock::now();
  auto slow = Query("hang on");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(slow.has_error());
  EXPECT_EQ(slow.error().code(), "upstream_timeout") << slow.error().message();
  // Behaviour, not speed: it ended by the flow's own 300 ms timeout, far before 20 s.
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST_F(LightweightTest, UnmatchedWithoutAgentWorkerFailsFast) {
  auto event = Query("tell me a story about dragons");
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "no_agent_worker");
  EXPECT_FALSE(event.request_id().empty());
}

TEST_F(LightweightTest, RouteDeadlineIsRefusedOncePassedAndBoundsTheFlowCall) {
  wf::v1::QueryRequest request;
  request.set_message("order 1234");
  request.set_session_id("s-1");
  request.set_route_deadline_unix_ms(UnixMillisNow() - 1);
  auto late = Send(request.SerializeAsString());
  ASSERT_TRUE(late.has_error()) << late.DebugString();
  EXPECT_EQ(late.error().code(), "deadline_exceeded");
  EXPECT_NE(late.error().message().find("route deadline"), std::string::npos);

  // A flow whose own timeout is 20 s is cut at the route deadline: the gateway stops waiting
  // then, so the call must not go on behind its back.
  request.set_message("wait for it");
  request.set_route_deadline_unix_ms(UnixMillisNow() + 500);
  auto start = std::chrono::steady_clock::now();
  auto cut = Send(request.SerializeAsString());
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(cut.has_error()) << cut.DebugString();
  EXPECT_EQ(cut.error().code(), "upstream_timeout") << cut.error().message();
  EXPECT_LT(took, std::chrono::seconds(10)) << "ran to the flow's own 20 s timeout";

  // No route deadline (an outside publisher): the flow's own timeout alone, as before.
  request.set_message("hang on");
  request.clear_route_deadline_unix_ms();
  auto own = Send(request.SerializeAsString());
  ASSERT_TRUE(own.has_error());
  EXPECT_EQ(own.error().code(), "upstream_timeout");
}

TEST_F(LightweightTest, UnmatchedQueryQueuedForTheAgentsIsAnnounced) {
  // An agent pool that answers discovery (its consumer need not exist: the stream keeps the
  // query); the real heavy worker is not needed to see what the lightweight worker does.
  MicroService heavy(*conn_, "heavy", "0.0.1", "agent pool stand-in", "wf");
  ASSERT_TRUE(heavy.Start().ok());
  std::mutex mu;
  std::vector<wf::v1::QueryEvent> events;
  const std::string inbox = NatsConnection::NewInbox();
  auto sub = conn_->Subscribe(inbox, [&](const NatsMsgView& msg) {
    wf::v1::QueryEvent event;
    if (!event.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) return;
    std::lock_guard lock(mu);
    events.push_back(event);
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(conn_->Flush(milliseconds(2000)).ok());
  wf::v1::QueryRequest request;
  request.set_message("tell me a story about dragons");
  request.set_session_id("s-1");
  request.set_request_id("req-queued-1");
  request.set_reply_to(inbox);
  request.set_route_deadline_unix_ms(UnixMillisNow() + 10000);
  ASSERT_TRUE(conn_->Publish("wf.query", request.SerializeAsString()).ok());
  ASSERT_TRUE(testing::Eventually([&] {
    std::lock_guard lock(mu);
    return !events.empty();
  })) << workers_.front()->Log();
  std::this_thread::sleep_for(milliseconds(200));  // nothing else follows
  std::lock_guard lock(mu);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].request_id(), "req-queued-1");
  EXPECT_EQ(events[0].seq(), 0u);
  ASSERT_TRUE(events[0].has_queued()) << events[0].DebugString();
  EXPECT_EQ(events[0].queued().route(), "agent");
  // And the query is in the agents' stream.
  auto info = conn_->Request("$JS.API.STREAM.INFO.WF_HEAVY", "", milliseconds(2000));
  ASSERT_TRUE(info.ok());
  EXPECT_GE(nlohmann::json::parse(*info)["state"]["messages"].get<int>(), 1) << *info;
}

// A query that fits wf.query but not once forwarded (reply_to and headers added): too_large for
// good, not "unavailable" with the NATS library's text (a retry could never fit it).
TEST_F(LightweightTest, AQueryTooLargeToForwardIsTooLarge) {
  MicroService heavy(*conn_, "heavy", "0.0.1", "agent pool stand-in", "wf");
  ASSERT_TRUE(heavy.Start().ok());
  wf::v1::QueryRequest request;
  request.set_message("tell me a story about dragons");
  request.set_session_id("s-big");
  request.set_request_id("req-big-1");
  (*request.mutable_parameters()->mutable_fields())["blob"].set_string_value(
      std::string(conn_->MaxPayload() - 700, 'x'));
  auto event = Send(request.SerializeAsString());
  ASSERT_TRUE(event.has_error()) << event.DebugString().substr(0, 300);
  EXPECT_EQ(event.error().code(), "too_large") << event.error().message();
  EXPECT_NE(event.error().message().find("bytes once forwarded"), std::string::npos)
      << event.error().message();
}

TEST_F(LightweightTest, UndecodableBytesGetAnErrorEvent) {
  auto event = Send(std::string("\xff\xff\xff\x01garbage", 11));
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "bad_message");
  EXPECT_FALSE(event.request_id().empty());
}

TEST_F(LightweightTest, MatchExecuteAndToolSubjects) {
  wf::v1::MatchRequest match;
  match.set_message("查订单 77");
  auto reply = conn_->Request("wf.flow.match", match.SerializeAsString(), milliseconds(5000));
  ASSERT_TRUE(reply.ok());
  wf::v1::MatchResult result;
  ASSERT_TRUE(result.ParseFromString(*reply));
  EXPECT_TRUE(result.matched());
  EXPECT_EQ(result.flow_id(), "order_status");
  EXPECT_EQ(StructToJson(result.parameters())["order_id"], "77");

  match.set_message("nothing here");
  reply = conn_->Request("wf.flow.match", match.SerializeAsString(), milliseconds(5000));
  ASSERT_TRUE(reply.ok() && result.ParseFromString(*reply));
  EXPECT_FALSE(result.matched());

  wf::v1::ExecuteFlowRequest exec;
  exec.set_request_id("x-1");
  exec.set_flow_id("order_status");
  *exec.mutable_parameters() = JsonToStruct({{"order_id", "4321"}});
  auto event = Send(exec.SerializeAsString(), "wf.flow.execute");
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  EXPECT_EQ(event.final().answer().rfind("订单 4321: ", 0), 0u);

  exec.set_flow_id("no_such_flow");
  event = Send(exec.SerializeAsString(), "wf.flow.execute");
  ASSERT_TRUE(event.has_error());
  EXPECT_EQ(event.error().code(), "flow_not_found");

  wf::v1::ExecuteToolRequest tool;
  tool.set_name("weather");
  tool.set_call_id("call-1");
  tool.set_arguments_json(R"({"city":"São Paulo & Rio"})");
  reply = conn_->Request("wf.tool.execute", tool.SerializeAsString(), milliseconds(5000));
  ASSERT_TRUE(reply.ok());
  wf::v1::ToolResult tr;
  ASSERT_TRUE(tr.ParseFromString(*reply));
  EXPECT_TRUE(tr.ok()) << tr.DebugString();
  EXPECT_EQ(tr.call_id(), "call-1");
  auto body = nlohmann::json::parse(tr.content());
  EXPECT_EQ(body["city"], "São Paulo & Rio");  // percent-encoded in the URL, decoded by the API

  tool.set_arguments_json("[1,2]");
  reply = conn_->Request("wf.tool.execute", tool.SerializeAsString(), milliseconds(5000));
  ASSERT_TRUE(reply.ok() && tr.ParseFromString(*reply));
  EXPECT_FALSE(tr.ok());
  EXPECT_EQ(tr.error().code(), "bad_request");
}

TEST_F(LightweightTest, DiscoveryAnswersPingInfoStats) {
  Query("order 1001");
  auto info = conn_->Request("$SRV.INFO.lightweight", "", milliseconds(2000));
  ASSERT_TRUE(info.ok());
  auto doc = nlohmann::json::parse(*info);
  EXPECT_EQ(doc["type"], "io.nats.micro.v1.info_response");
  EXPECT_EQ(doc["name"], "lightweight");
  auto stats = nlohmann::json::parse(*conn_->Request("$SRV.STATS.lightweight", "",
                                                      milliseconds(2000)));
  EXPECT_EQ(stats["type"], "io.nats.micro.v1.stats_response");
  EXPECT_GE(stats["endpoints"][0]["num_requests"].get<int>(), 1);
}

// Every stored message of WF_HISTORY, decoded: the lightweight worker sends TurnRecordBatch
// messages marked with the Wf-Payload header.
std::vector<wf::v1::TurnRecord> StoredTurns(jsCtx* js, int* messages) {
  std::vector<wf::v1::TurnRecord> turns;
  *messages = 0;
  jsStreamInfo* info = nullptr;
  if (js_GetStreamInfo(&info, js, "WF_HISTORY", nullptr, nullptr) != NATS_OK) return turns;
  uint64_t last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  for (uint64_t seq = 1; seq <= last; ++seq) {
    natsMsg* msg = nullptr;
    if (js_GetMsg(&msg, js, "WF_HISTORY", seq, nullptr, nullptr) != NATS_OK) continue;
    ++*messages;
    const char* type = nullptr;
    EXPECT_EQ(natsMsgHeader_Get(msg, "Wf-Payload", &type), NATS_OK);
    EXPECT_STREQ(type, "wf.v1.TurnRecordBatch");
    wf::v1::TurnRecordBatch batch;
    EXPECT_TRUE(batch.ParseFromArray(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
    EXPECT_GT(batch.turns_size(), 0);
    for (auto& turn : *batch.mutable_turns()) turns.push_back(std::move(turn));
    natsMsg_Destroy(msg);
  }
  return turns;
}

/// Polls WF_HISTORY until it holds at least `count` turns (or the poll's deadline passes).
std::vector<wf::v1::TurnRecord> WaitForStoredTurns(natsConnection* conn, std::size_t count,
                                                   int* messages) {
  jsCtx* js = nullptr;
  EXPECT_EQ(natsConnection_JetStream(&js, conn, nullptr), NATS_OK);
  std::vector<wf::v1::TurnRecord> turns;
  EXPECT_TRUE(testing::Eventually([&] {
    turns = StoredTurns(js, messages);
    return turns.size() >= count;
  }));
  jsCtx_Destroy(js);
  return turns;
}

TEST_F(LightweightTest, FlowTurnIsRecordedOnTheHistoryStream) {
  auto event = Query("order 1002", nullptr, "hist-1");
  ASSERT_TRUE(event.has_final());
  int messages = 0;
  std::vector<wf::v1::TurnRecord> turns = WaitForStoredTurns(conn_->raw(), 1, &messages);
  ASSERT_EQ(turns.size(), 1u);
  const wf::v1::TurnRecord& turn = turns[0];
  EXPECT_EQ(turn.run_id(), "hist-1");
  EXPECT_EQ(turn.route(), "flow");
  EXPECT_EQ(turn.flow_id(), "order_status");
  ASSERT_EQ(turn.messages_size(), 2);
  EXPECT_EQ(turn.messages(0).content(), "order 1002");
  EXPECT_EQ(turn.messages(1).content(), event.final().answer());
}

TEST_F(LightweightTest, ManyFlowTurnsAreEachRecordedExactlyOnce) {
  // Concurrent queries finish close together, so the worker batches their turns; whatever the
  // batching, every turn must be stored once and only once.
  constexpr int kTurns = 40;
  std::vector<std::thread> clients;
  std::atomic<int> answered{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = c; i < kTurns; i += 4) {
        if (Query("order " + std::to_string(1000 + i), nullptr, "many-" + std::to_string(i))
                .has_final()) {
          answered.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  ASSERT_EQ(answered.load(), kTurns);
  int messages = 0;
  std::vector<wf::v1::TurnRecord> turns = WaitForStoredTurns(conn_->raw(), kTurns, &messages);
  std::multiset<std::string> ids;
  for (const auto& turn : turns) ids.insert(turn.run_id());
  for (int i = 0; i < kTurns; ++i) EXPECT_EQ(ids.count("many-" + std::to_string(i)), 1u) << i;
  EXPECT_EQ(turns.size(), static_cast<std::size_t>(kTurns));
  EXPECT_LE(messages, kTurns);
}

TEST_F(LightweightTest, TwoReplicasShareTheQueueGroup) {
  StartWorker();
  ASSERT_TRUE(testing::Eventually([&] {
    auto ids = std::set<std::string>();
    for (int i = 0; i < 10; ++i) {
      auto r = conn_->Request("$SRV.PING.lightweight", "", milliseconds(200));
      if (r.ok()) ids.insert(nlohmann::json::parse(*r)["id"].get<std::string>());
    }
    return ids.size() == 2;
  }));
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(Query("order " + std::to_string(1000 + i)).has_final());
  // Collect every instance's stats: each replica handled part of the load.
  std::string inbox = NatsConnection::NewInbox();
  std::mutex mu;
  std::vector<int> counts;
  auto sub = conn_->Subscribe(inbox, [&](const NatsMsgView& m) {
    auto doc = nlohmann::json::parse(m.data());
    std::lock_guard lock(mu);
    counts.push_back(doc["endpoints"][0]["num_requests"].get<int>());
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(conn_->Publish("$SRV.STATS.lightweight", "", inbox).ok());
  ASSERT_TRUE(testing::Eventually([&] {
    std::lock_guard lock(mu);
    return counts.size() == 2;
  }));
  EXPECT_EQ(counts[0] + counts[1], 60);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
}

// A receiver back from a reconnect asks for the last events of its open queries again
// (ReplayRequest on wf.query.replay, to every replica): the replica that answered sends the same
// bytes again to the same reply subject, once per ask; unknown ids and undecodable asks are
// ignored.
TEST_F(LightweightTest, AReplayRequestSendsTheLastEventAgainFromTheReplicaThatSentIt) {
  StartWorker();  // a second replica, which never saw the query
  ASSERT_TRUE(testing::Eventually([&] {
    return workers_.back()->Log().find("ready:") != std::string::npos;
  })) << workers_.back()->Log();
  std::mutex mu;
  std::vector<std::string> seen;
  auto sub = conn_->Subscribe("replayed.>", [&](const NatsMsgView& m) {
    std::lock_guard lock(mu);
    seen.emplace_back(m.data());
  });
  ASSERT_TRUE(sub.ok());
  auto count = [&] {
    std::lock_guard lock(mu);
    return seen.size();
  };
  wf::v1::QueryRequest request;
  request.set_message("order 1234 please");
  request.set_session_id("s-1");
  request.set_request_id("replay-1");
  request.set_reply_to("replayed.replay-1");
  ASSERT_TRUE(conn_->Publish("wf.query", request.SerializeAsString()).ok());
  ASSERT_TRUE(testing::Eventually([&] { return count() == 1; })) << workers_.front()->Log();

  ASSERT_TRUE(conn_->Publish("wf.query.replay", "\xff\xff not a ReplayRequest").ok());
  wf::v1::ReplayRequest replay;
  replay.add_request_ids("unknown-id");
  replay.add_request_ids("replay-1");
  ASSERT_TRUE(conn_->Publish("wf.query.replay", replay.SerializeAsString()).ok());
  ASSERT_TRUE(testing::Eventually([&] { return count() >= 2; })) << workers_.front()->Log();
  std::this_thread::sleep_for(milliseconds(300));  // a second copy would have come by now
  std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], seen[0]);
  wf::v1::QueryEvent event;
  ASSERT_TRUE(event.ParseFromString(seen[1]));
  EXPECT_EQ(event.request_id(), "replay-1");
  EXPECT_TRUE(event.has_final()) << event.DebugString();
}

TEST_F(LightweightTest, SeveralLoopsAnswerConcurrentQueriesEachExactlyOnce) {
  // One process with three event loops (three connections in the queue group), queried by many
  // requests in flight at once: every request gets its own answer, once.
  workers_.clear();
  StartWorker(3);
  ASSERT_TRUE(testing::Eventually([&] {
    return conn_->Request("$SRV.PING.lightweight", "", milliseconds(200)).ok();
  })) << workers_.front()->Log();
  const std::string inbox = NatsConnection::NewInbox();
  std::mutex mu;
  std::map<int, int> answers;  // order number -> answers seen
  int received = 0;
  std::vector<std::string> wrong;
  auto sub = conn_->Subscribe(inbox + ".*", [&](const NatsMsgView& m) {
    wf::v1::QueryEvent event;
    const bool parsed = event.ParseFromArray(m.data().data(), static_cast<int>(m.data().size()));
    std::lock_guard lock(mu);
    ++received;
    const std::string subject(m.subject());
    const int order = std::stoi(subject.substr(subject.rfind('.') + 1));
    ++answers[order];
    if (!parsed || !event.has_final() ||
        StructToJson(event.final().parameters())["order_id"] != std::to_string(order) ||
        event.request_id() != "loops-" + std::to_string(order)) {
      wrong.push_back(subject + ": " + event.DebugString());
    }
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(conn_->Flush(milliseconds(2000)).ok());
  constexpr int kQueries = 300, kFirst = 5000;
  for (int order = kFirst; order < kFirst + kQueries; ++order) {
    wf::v1::QueryRequest request;
    request.set_message("order " + std::to_string(order));
    request.set_session_id("loops");
    request.set_request_id("loops-" + std::to_string(order));
    ASSERT_TRUE(conn_
                    ->Publish("wf.query", request.SerializeAsString(),
                              inbox + "." + std::to_string(order))
                    .ok());
  }
  ASSERT_TRUE(testing::Eventually([&] {
    std::lock_guard lock(mu);
    return answers.size() == static_cast<size_t>(kQueries);
  })) << received << " answers";
  // A later query's answer: anything duplicated before it has arrived by then.
  ASSERT_TRUE(Query("order 4242").has_final());
  std::lock_guard lock(mu);
  EXPECT_EQ(received, kQueries);
  for (const auto& [order, count] : answers) EXPECT_EQ(count, 1) << order;
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " wrong answers, first: " << wrong.front();
}

wf::v1::QueryRequest Request(const std::string& message, const std::string& request_id = "") {
  wf::v1::QueryRequest request;
  request.set_message(message);
  request.set_session_id("s-1");
  request.set_request_id(request_id);
  return request;
}

TEST_F(LightweightTest, DeeplyNestedToolArgumentsAreABadRequestNotACrash) {
  // {"city": [[[...]]]} 300,000 levels deep (~600 KB): used to overflow the loop's stack.
  wf::v1::ExecuteToolRequest tool;
  tool.set_name("weather");
  tool.set_call_id("deep-1");
  tool.set_arguments_json(R"({"city":)" + std::string(300000, '[') + std::string(300000, ']') +
                          "}");
  auto reply = conn_->Request("wf.tool.execute", tool.SerializeAsString(), milliseconds(10000));
  ASSERT_TRUE(reply.ok()) << workers_.front()->Log();
  wf::v1::ToolResult result;
  ASSERT_TRUE(result.ParseFromString(*reply));
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.call_id(), "deep-1");
  EXPECT_EQ(result.error().code(), "bad_request");
  EXPECT_NE(result.error().message().find("nested deeper than 64 levels"), std::string::npos)
      << result.error().message();
  // A parameter value that is a JSON text for an object/array parameter is bounded as well.
  tool.set_arguments_json(R"({"city":"x"})");
  reply = conn_->Request("wf.tool.execute", tool.SerializeAsString(), milliseconds(10000));
  ASSERT_TRUE(reply.ok() && result.ParseFromString(*reply));
  EXPECT_TRUE(result.ok()) << result.DebugString();
  EXPECT_TRUE(workers_.front()->Running());
  EXPECT_TRUE(Query("order 1001").has_final());
}

TEST_F(LightweightTest, InvalidUtf8FromTheUpstreamIsRepaired) {
  // "a", a stray 0xFF, "b", then 中 cut short: the answer must still be a decodable event.
  auto event = Query("raw bytes", {{"hex", "61ff62e4b8"}});
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  EXPECT_EQ(event.final().answer(),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  // The turn recorded for it decodes as well (the whole batch would be lost otherwise).
  int messages = 0;
  auto turns = WaitForStoredTurns(conn_->raw(), 1, &messages);
  ASSERT_EQ(turns.size(), 1u);
  EXPECT_EQ(turns[0].messages(1).content(), event.final().answer());
}

TEST_F(LightweightTest, UpstreamErrorBodiesNeverReachTheClient) {
  // A multi-byte body (100 x "错误", 600 bytes) once cut mid-character into the message, and an
  // error body with a secret once returned verbatim: the message says status and size only.
  std::string chinese;
  for (int i = 0; i < 100; ++i) chinese += "错误";
  auto event = Query("raw bytes", {{"status", 500}, {"hex", Hex(chinese)}});
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "upstream_error");
  EXPECT_EQ(event.error().message(),
            "flow raw: upstream answered HTTP 500 (text/plain, 600 bytes)");

  const std::string secret = R"({"error":"invalid key sk-live-ABCDEF0123456789"})";
  event = Query("raw bytes", {{"status", 401}, {"hex", Hex(secret)}});
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "upstream_error");
  EXPECT_NE(event.error().message().find("HTTP 401"), std::string::npos);
  EXPECT_EQ(event.error().message().find("sk-live"), std::string::npos) << event.error().message();
  auto stats = conn_->Request("$SRV.STATS.lightweight", "", milliseconds(2000));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->find("sk-live"), std::string::npos) << *stats;
  EXPECT_NE(stats->find("HTTP 401"), std::string::npos) << *stats;  // last_error is there
  EXPECT_EQ(workers_.front()->Log().find("sk-live"), std::string::npos);
}

TEST_F(LightweightTest, AnswersTooLargeForNatsAreAnErrorNotSilence) {
  // Under max_response_bytes (1 MiB) but, with the event around it, over NATS's max payload.
  auto event = Query("raw bytes", {{"hex", "78"}, {"repeat", 1048570}});
  ASSERT_TRUE(event.has_error()) << event.DebugString().substr(0, 300);
  EXPECT_EQ(event.error().code(), "response_too_large");
  EXPECT_NE(event.error().message().find("bytes"), std::string::npos);
  // A template that doubles a 600 KB body: bounded while rendering.
  event = Query("raw twice", {{"hex", "78"}, {"repeat", 600000}});
  ASSERT_TRUE(event.has_error()) << event.DebugString().substr(0, 300);
  EXPECT_EQ(event.error().code(), "response_too_large");
  // The same over wf.flow.execute.
  wf::v1::ExecuteFlowRequest exec;
  exec.set_flow_id("raw_twice");
  *exec.mutable_parameters() = JsonToStruct({{"hex", "78"}, {"repeat", 600000}});
  event = Send(exec.SerializeAsString(), "wf.flow.execute");
  ASSERT_TRUE(event.has_error()) << event.DebugString().substr(0, 300);
  EXPECT_EQ(event.error().code(), "response_too_large");

  // A large answer that fits is delivered, and its turn is recorded cut to size, in a batch
  // that still carries the turns around it.
  event = Query("raw bytes", {{"hex", "79"}, {"repeat", 900000}}, "big-ok");
  ASSERT_TRUE(event.has_final());
  EXPECT_EQ(event.final().answer(), std::string(900000, 'y'));
  ASSERT_TRUE(Query("order 1003", nullptr, "after-big").has_final());
  int messages = 0;
  auto turns = WaitForStoredTurns(conn_->raw(), 4, &messages);
  std::map<std::string, const wf::v1::TurnRecord*> by_run;
  for (const auto& turn : turns) by_run[turn.run_id()] = &turn;
  ASSERT_TRUE(by_run.count("big-ok")) << turns.size();
  ASSERT_TRUE(by_run.count("after-big"));
  const std::string& recorded = by_run["big-ok"]->messages(1).content();
  EXPECT_LT(recorded.size(), 70000u);
  EXPECT_NE(recorded.find("[answer cut: 900000 bytes in all]"), std::string::npos);
  EXPECT_EQ(by_run["after-big"]->status(), "ok");
}

TEST_F(LightweightTest, DotSegmentsInParametersStayInThePath) {
  // The upstream receives the encoded dots literally: the request is not moved to /api/echo/y.
  auto event = Query("echo path", {{"p", ".."}});
  ASSERT_TRUE(event.has_final()) << event.DebugString();
  EXPECT_EQ(event.final().answer(), "/api/echo/x/%2E%2E/y");
  // The demo's order flow: order_id ".." used to call GET /api/ (404); now the orders endpoint
  // sees an invalid id (400).
  event = Query("order 1 status", {{"order_id", ".."}});
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "upstream_error");
  EXPECT_NE(event.error().message().find("HTTP 400"), std::string::npos) << event.error().message();
}

TEST_F(LightweightTest, DirectPublishersGetTheGatewaysInputRules) {
  struct Case {
    std::function<void(wf::v1::QueryRequest&)> change;
    std::string message_prefix;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.set_session_id(std::string(2500, 'a') + " " + std::string(2499, 'b')); },
       "session_id: must be 1-128 characters"},
      {[](auto& r) { r.set_session_id(""); }, "session_id: must be 1-128 characters"},
      {[](auto& r) { r.set_user_id(std::string(100 * 1024, 'u')); },
       "user_id: longer than 128 characters"},
      {[](auto& r) { r.set_message("order 1001 " + std::string(8000, 'x')); },
       "message: longer than 8000 characters"},
      {[](auto& r) { r.set_message(""); }, "message: must not be empty"},
      {[](auto& r) { r.set_request_id("not a valid id!"); }, "request_id: must be"},
  };
  int i = 0;
  for (const Case& c : cases) {
    auto request = Request("order 1001", "rules-" + std::to_string(i++));
    c.change(request);
    auto event = Send(request.SerializeAsString());
    ASSERT_TRUE(event.has_error())
        << c.message_prefix << ": " << event.DebugString().substr(0, 200);
    EXPECT_EQ(event.error().code(), "bad_request");
    EXPECT_EQ(event.error().message().rfind(c.message_prefix, 0), 0u) << event.error().message();
    EXPECT_FALSE(event.request_id().empty());
  }
  // None of them was run or recorded: the only turn stored is the valid one that follows.
  ASSERT_TRUE(Send(Request("order 1001", "rules-ok").SerializeAsString()).has_final());
  int messages = 0;
  auto turns = WaitForStoredTurns(conn_->raw(), 1, &messages);
  ASSERT_EQ(turns.size(), 1u);
  EXPECT_EQ(turns[0].run_id(), "rules-ok");
}

TEST_F(LightweightTest, FailedFlowTurnIsRecordedWithWhatFailed) {
  auto event = Query("order 77", nullptr, "fail-1");  // unknown order: the upstream says 404
  ASSERT_TRUE(event.has_error()) << event.DebugString();
  EXPECT_EQ(event.error().code(), "upstream_error");
  int messages = 0;
  auto turns = WaitForStoredTurns(conn_->raw(), 1, &messages);
  ASSERT_EQ(turns.size(), 1u);
  const wf::v1::TurnRecord& turn = turns[0];
  EXPECT_EQ(turn.run_id(), "fail-1");
  EXPECT_EQ(turn.session_id(), "s-1");
  EXPECT_EQ(turn.route(), "flow");
  EXPECT_EQ(turn.flow_id(), "order_status");
  EXPECT_EQ(turn.status(), "error");
  ASSERT_EQ(turn.messages_size(), 2);
  EXPECT_EQ(turn.messages(0).role(), "user");
  EXPECT_EQ(turn.messages(0).content(), "order 77");
  EXPECT_EQ(turn.messages(1).role(), "assistant");
  EXPECT_EQ(turn.messages(1).content().rfind(
                "[flow order_status failed (upstream_error): upstream answered HTTP 404", 0),
            0u)
      << turn.messages(1).content();
}

TEST_F(LightweightTest, MatchReportsRequestsItCannotMatch) {
  auto reply = conn_->Request("wf.flow.match", std::string("\xff\xff\xff\x01garbage", 11),
                              milliseconds(5000));
  ASSERT_TRUE(reply.ok());
  wf::v1::MatchResult result;
  ASSERT_TRUE(result.ParseFromString(*reply));
  EXPECT_FALSE(result.matched());
  ASSERT_TRUE(result.has_error());
  EXPECT_EQ(result.error().code(), "bad_message");

  reply = conn_->Request("wf.flow.match", wf::v1::MatchRequest().SerializeAsString(),
                         milliseconds(5000));
  ASSERT_TRUE(reply.ok() && result.ParseFromString(*reply));
  ASSERT_TRUE(result.has_error());
  EXPECT_EQ(result.error().code(), "bad_request");

  wf::v1::MatchRequest match;
  match.set_message("nothing matches this");
  reply = conn_->Request("wf.flow.match", match.SerializeAsString(), milliseconds(5000));
  ASSERT_TRUE(reply.ok() && result.ParseFromString(*reply));
  EXPECT_FALSE(result.matched());
  EXPECT_FALSE(result.has_error());  // an ordinary "no match"
}

TEST(LightweightConfigTest, InvalidConfigStopsStartWithThePath) {
  TempDir dir;
  std::string path = dir.path() + "/bad.json";
  std::ofstream(path) << R"({"flows":[{"flow_id":"a","name":"A","trigger_patterns":["(?P<x"],
      "endpoint":{"url":"http://x/","method":"GET"}}]})";
  Process p(BinPath("wf-lightweight"), {"--config", path, "--check-config"});
  auto code = p.Wait(milliseconds(10000));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(p.Log().find("flows[0].trigger_patterns[0]"), std::string::npos) << p.Log();

  Process missing(BinPath("wf-lightweight"), {"--config", dir.path() + "/nope.json"});
  code = missing.Wait(milliseconds(10000));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(missing.Log().find("not found"), std::string::npos) << missing.Log();
}

TEST(LightweightConfigTest, UnreachableNatsIsAOneLineStartError) {
  Process p(BinPath("wf-lightweight"),
            {"--config", testing::SourcePath("config/workflow_config.json"), "--nats-url",
             "nats://127.0.0.1:" + std::to_string(FreePort())});
  auto code = p.Wait(milliseconds(20000));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(p.Log().find("cannot connect to NATS"), std::string::npos) << p.Log();
}

}  // namespace
}  // namespace wf
