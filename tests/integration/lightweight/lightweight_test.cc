// wf-lightweight end to end over a real nats-server with JetStream, against the real demo API.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <fstream>
#include <map>
#include <mutex>
#include <atomic>
#include <set>
#include <thread>
#include <vector>
#include <nlohmann/json.hpp>

#include "codec/json_struct.h"
#include "nats/connection.h"
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

std::string TestConfig(int api_port, int dead_port) {
  std::string base = "http://127.0.0.1:" + std::to_string(api_port);
  nlohmann::json config = {
      {"flows",
       {{{"flow_id", "order_status"},
         {"name", "Order status"},
         {"trigger_patterns", {"(?:查询|查)订单\\s*(?P<order_id>\\d+)", "order\\s+(?P<order_id>\\d+)"}},
         {"parameters",
          {{"type", "object"},
           {"properties", {{"order_id", {{"type", "string"}}}}},
           {"required", {"order_id"}}}},
         {"endpoint", {{"url", base + "/api/orders/{order_id}"}, {"method", "GET"}}},
         {"response_template", "订单 {order_id}: {result.status}"}},
        {{"flow_id", "leave_request"},
         {"name", "Leave"},
         {"trigger_patterns", {"请假", "leave request"}},
         {"endpoint",
          {{"url", base + "/api/leave"},
           {"method", "POST"},
           {"headers", {{"Content-Type", "application/json"}}},
           {"body", {{"text", "{user_message}"}, {"session", "{session_id}"}, {"days", "{days}"}}}}},
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
        {{"flow_id", "slow"},
         {"name", "Upstream hangs"},
         {"trigger_patterns", {"hang on"}},
         {"endpoint", {{"url", base + "/hang?ms=20000"}, {"method", "GET"}, {"timeout_ms", 300}}}}}},
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
