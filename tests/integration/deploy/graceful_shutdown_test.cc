// What Kubernetes and Compose do at every rollout and node drain: SIGTERM to a process that is in
// the middle of work. Real processes (nats-server, wf-demo-api, wf-lightweight, wf-gateway and,
// for the agent path, redis, PostgreSQL, wf-scripted-llm and wf-heavy); the tests check that no
// answer is lost and that a process leaves within its configured drain period, never how fast
// anything ran.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace wf {
namespace {

using testing::BinPath;
using testing::Eventually;
using testing::FreePort;
using testing::HttpCall;
using testing::HttpReply;
using testing::Process;
using testing::TempDir;
using namespace std::chrono_literals;

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string Base(int port) { return "http://127.0.0.1:" + std::to_string(port); }

/// The value of a Prometheus gauge/counter line `name value`, or -1.
long long Metric(const std::string& text, const std::string& name) {
  std::smatch m;
  std::regex re("(^|\\n)" + name + " (\\d+)");
  if (std::regex_search(text, m, re)) return std::stoll(m[2]);
  return -1;
}

long long DemoRequests(int demo_port) {
  auto reply = HttpCall("GET", Base(demo_port) + "/stats");
  if (reply.status != 200) return -1;
  auto j = nlohmann::json::parse(reply.body, nullptr, false);
  return j.is_object() && j.contains("requests") ? j["requests"].get<long long>() : -1;
}

/// A flow that calls the demo API's /hang, so a query stays in flight until the test is ready.
std::string SlowFlowConfig(int demo_port, int hang_ms) {
  nlohmann::json config = {
      {"flows",
       {{{"flow_id", "slow"},
         {"name", "Slow"},
         {"trigger_patterns", {"slow request"}},
         {"endpoint",
          {{"url", Base(demo_port) + "/hang?ms=" + std::to_string(hang_ms)},
           {"method", "GET"},
           {"timeout_ms", 60000}}},
         {"response_template", "slow done after {result.slept_ms} ms"}}}},
  };
  return config.dump(2);
}

class GatewayShutdownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* bin : {"wf-gateway", "wf-lightweight", "wf-demo-api"}) {
      ASSERT_TRUE(Exists(BinPath(bin))) << BinPath(bin) << " is not built";
    }
  }
};

TEST_F(GatewayShutdownTest, SigtermDrainsOpenStreamsAndRefusesNewWork) {
  testing::NatsServer nats;
  TempDir dir;
  const int demo_port = FreePort();
  Process demo(BinPath("wf-demo-api"), {"--listen", "127.0.0.1:" + std::to_string(demo_port)});
  ASSERT_TRUE(testing::WaitForTcpPort(demo_port, 10s)) << demo.Log();

  const std::string config_path = dir.path() + "/workflow_config.json";
  std::ofstream(config_path) << SlowFlowConfig(demo_port, 4000);
  const std::vector<std::string> env = {"NATS_URL=" + nats.url(), "WF_CONFIG=" + config_path};
  Process lightweight(BinPath("wf-lightweight"), {}, env);

  const int port = FreePort();
  std::vector<std::string> gw_env = env;
  gw_env.push_back("WF_LISTEN=127.0.0.1:" + std::to_string(port));
  gw_env.push_back("WF_DRAIN_MS=60000");
  Process gateway(BinPath("wf-gateway"), {}, gw_env);
  ASSERT_TRUE(Eventually([&] { return HttpCall("GET", Base(port) + "/ready").status == 200; }, 20s))
      << gateway.Log() << lightweight.Log();

  // Three streams, each waiting on the business API.
  constexpr int kStreams = 3;
  std::vector<std::future<HttpReply>> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::async(std::launch::async, [port, i] {
      return HttpCall(
          "POST", Base(port) + "/api/v1/query/stream",
          R"({"message":"slow request","session_id":"drain-)" + std::to_string(i) + R"("})",
          {"Content-Type: application/json"}, 60000);
    }));
  }
  const long long before = DemoRequests(demo_port);
  ASSERT_TRUE(Eventually(
      [&] {
        auto metrics = HttpCall("GET", Base(port) + "/metrics").body;
        return Metric(metrics, "wf_gateway_open_streams") == kStreams &&
               DemoRequests(demo_port) >= before + kStreams;
      },
      20s))
      << "streams never reached the business API\n"
      << gateway.Log();

  gateway.Signal(SIGTERM);

  // Draining: not ready, and new work is refused, while the open streams go on.
  EXPECT_TRUE(
      Eventually([&] { return HttpCall("GET", Base(port) + "/ready").status == 503; }, 10s));
  auto refused = HttpCall("POST", Base(port) + "/api/v1/query",
                          R"({"message":"slow request","session_id":"late"})",
                          {"Content-Type: application/json"}, 10000);
  EXPECT_TRUE(refused.status == 503 || refused.status == 0) << refused.status << refused.body;
  EXPECT_TRUE(gateway.Running()) << "the gateway exited with streams still open";

  // Every stream that was open at SIGTERM gets its whole answer.
  for (auto& f : streams) {
    HttpReply reply = f.get();
    EXPECT_EQ(reply.status, 200);
    EXPECT_NE(reply.body.find("event: done"), std::string::npos) << reply.body;
    EXPECT_NE(reply.body.find("slow done after 4000 ms"), std::string::npos) << reply.body;
    EXPECT_EQ(reply.body.find("event: error"), std::string::npos) << reply.body;
  }
  // Then it exits by itself, cleanly.
  auto code = gateway.Wait(30s);
  ASSERT_TRUE(code.has_value()) << "the gateway did not exit after draining\n" << gateway.Log();
  EXPECT_EQ(*code, 0) << gateway.Log();
}

TEST_F(GatewayShutdownTest, SigtermWithNothingOpenExitsPromptly) {
  testing::NatsServer nats;
  TempDir dir;
  const std::string config_path = dir.path() + "/workflow_config.json";
  std::ofstream(config_path) << SlowFlowConfig(1, 10);
  const int port = FreePort();
  Process gateway(BinPath("wf-gateway"), {},
                  {"NATS_URL=" + nats.url(), "WF_CONFIG=" + config_path,
                   "WF_LISTEN=127.0.0.1:" + std::to_string(port), "WF_DRAIN_MS=600000"});
  ASSERT_TRUE(
      Eventually([&] { return HttpCall("GET", Base(port) + "/health").status == 200; }, 20s))
      << gateway.Log();
  gateway.Signal(SIGTERM);
  // Nothing to wait for: it must not sit out the 10-minute drain period.
  auto code = gateway.Wait(30s);
  ASSERT_TRUE(code.has_value()) << gateway.Log();
  EXPECT_EQ(*code, 0) << gateway.Log();
}

// NATS went away first (a node drain takes everything down at once): no reply or batch can be
// sent, so the worker must be gone within its drain period, not sit out flushes that wait for a
// PONG (it used to take ~4 s past a zero drain: two shutdowns, each flushing for 1 s per
// connection). A bound on the configured drain, not a speed measurement.
TEST(LightweightShutdown, SigtermWithNatsGoneExitsWithinTheDrainPeriod) {
  ASSERT_TRUE(Exists(BinPath("wf-lightweight"))) << BinPath("wf-lightweight") << " is not built";
  std::optional<testing::NatsServer> nats;
  nats.emplace();
  TempDir dir;
  const std::string config_path = dir.path() + "/workflow_config.json";
  std::ofstream(config_path) << SlowFlowConfig(1, 10);
  const int admin_port = FreePort();
  Process lightweight(BinPath("wf-lightweight"), {"--threads", "2"},
                      {"NATS_URL=" + nats->url(), "WF_CONFIG=" + config_path, "WF_DRAIN_MS=0",
                       "WF_ADMIN_LISTEN=127.0.0.1:" + std::to_string(admin_port)});
  ASSERT_TRUE(Eventually(
      [&] { return HttpCall("GET", Base(admin_port) + "/ready").status == 200; }, 20s))
      << lightweight.Log();
  nats.reset();
  ASSERT_TRUE(Eventually(
      [&] { return HttpCall("GET", Base(admin_port) + "/ready").status == 503; }, 20s))
      << lightweight.Log();
  lightweight.Signal(SIGTERM);
  auto code = lightweight.Wait(3s);
  ASSERT_TRUE(code.has_value()) << "still running 3 s after SIGTERM with WF_DRAIN_MS=0\n"
                                << lightweight.Log();
  EXPECT_EQ(*code, 0) << lightweight.Log();
}

/// The agent path: nats, redis, PostgreSQL, the scripted LLM (answering "slow" messages one
/// piece at a time), lightweight (which forwards unmatched queries to WF_HEAVY) and a gateway.
/// Heavy workers are started by the tests.
class HeavyShutdownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* bin : {"wf-gateway", "wf-lightweight", "wf-heavy", "wf-scripted-llm"}) {
      ASSERT_TRUE(Exists(BinPath(bin))) << BinPath(bin) << " is not built";
    }
    nats_.emplace();
    redis_.emplace();
    postgres_.emplace();
    rules_path_ = dir_.path() + "/rules.json";
    std::ofstream(rules_path_) << R"({"rules": [
      {"when": {"last_user_contains": "slow"},
       "then": {"reply": "one two three four five six seven eight nine ten", "delay_ms": 300}}]})";
    llm_port_ = FreePort();
    llm_.emplace(BinPath("wf-scripted-llm"),
                 std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(llm_port_),
                                          "--rules", rules_path_});
    ASSERT_TRUE(testing::WaitForTcpPort(llm_port_, 10s)) << llm_->Log();

    config_path_ = dir_.path() + "/workflow_config.json";
    std::ofstream(config_path_) << R"({"flows": [], "agent": {"turn_timeout_ms": 60000}})";
    lightweight_.emplace(BinPath("wf-lightweight"), std::vector<std::string>{}, CommonEnv());
    port_ = FreePort();
    auto gw_env = CommonEnv();
    gw_env.push_back("WF_LISTEN=127.0.0.1:" + std::to_string(port_));
    gateway_.emplace(BinPath("wf-gateway"), std::vector<std::string>{}, gw_env);
  }

  std::vector<std::string> CommonEnv() const {
    return {"NATS_URL=" + nats_->url(), "WF_CONFIG=" + config_path_};
  }

  std::vector<std::string> HeavyEnv(const std::string& drain_ms, int admin_port) const {
    auto env = CommonEnv();
    env.push_back("WF_ADMIN_LISTEN=127.0.0.1:" + std::to_string(admin_port));
    env.push_back("REDIS_URL=" + redis_->url());
    env.push_back("DATABASE_URL=" + postgres_->url());
    env.push_back("LLM_BASE_URL=http://127.0.0.1:" + std::to_string(llm_port_) + "/v1");
    env.push_back("LLM_MODEL=scripted");
    env.push_back("WF_DRAIN_MS=" + drain_ms);
    return env;
  }

  long long LlmStat(const std::string& key) const {
    auto reply = HttpCall("GET", Base(llm_port_) + "/_stats");
    auto j = nlohmann::json::parse(reply.body, nullptr, false);
    return j.is_object() && j.contains(key) ? j[key].get<long long>() : -1;
  }

  bool GatewayReady() const {
    auto reply = HttpCall("GET", Base(port_) + "/ready");
    auto j = nlohmann::json::parse(reply.body, nullptr, false);
    return reply.status == 200 && j.is_object() && j["workers"]["heavy"].get<int>() >= 1;
  }

  /// Polls with a quick turn until the whole path (gateway, lightweight's view of the agent pool,
  /// a heavy worker, the LLM) answers; each pool learns of the others within a ping interval.
  bool AgentPathAnswers() const {
    return Eventually(
        [&] {
          auto reply = HttpCall("POST", Base(port_) + "/api/v1/query",
                                R"({"message":"hello","session_id":"warm-up"})",
                                {"Content-Type: application/json"}, 30000);
          return reply.status == 200;
        },
        30s);
  }

  std::future<HttpReply> AskSlow(const std::string& session) const {
    const int port = port_;
    return std::async(std::launch::async, [port, session] {
      return HttpCall("POST", Base(port) + "/api/v1/query/stream",
                      R"({"message":"tell me something slow","session_id":")" + session + R"("})",
                      {"Content-Type: application/json"}, 90000);
    });
  }

  /// Everything that helps when a turn never reached the LLM.
  std::string Diagnose(std::future<HttpReply>& answer, Process& heavy) const {
    std::string out = "--- answer: ";
    if (answer.wait_for(5s) == std::future_status::ready) {
      auto reply = answer.get();
      out += std::to_string(reply.status) + " " + reply.body;
    } else {
      out += "(still waiting)";
    }
    out += "\n--- llm /_stats: " + HttpCall("GET", Base(llm_port_) + "/_stats").body;
    out += "\n--- heavy:\n" + heavy.Log() + "\n--- lightweight:\n" + lightweight_->Log() +
           "\n--- gateway:\n" + gateway_->Log() + "\n--- llm:\n" + llm_->Log();
    return out;
  }

  TempDir dir_;
  std::optional<testing::NatsServer> nats_;
  std::optional<testing::RedisServer> redis_;
  std::optional<testing::PostgresServer> postgres_;
  std::string rules_path_, config_path_;
  int llm_port_ = 0, port_ = 0;
  std::optional<Process> llm_, lightweight_, gateway_;
};

TEST_F(HeavyShutdownTest, SigtermMidTurnFinishesTheTurn) {
  Process heavy(BinPath("wf-heavy"), {}, HeavyEnv("60000", FreePort()));
  ASSERT_TRUE(Eventually([&] { return GatewayReady(); }, 30s)) << heavy.Log() << gateway_->Log();
  ASSERT_TRUE(AgentPathAnswers()) << heavy.Log() << lightweight_->Log();
  const long long warm_up_requests = LlmStat("requests");

  auto answer = AskSlow("sigterm-finish");
  // The LLM is streaming this turn's answer: the worker is mid-turn.
  ASSERT_TRUE(Eventually([&] { return LlmStat("active") == 1; }, 30s)) << Diagnose(answer, heavy);
  heavy.Signal(SIGTERM);

  HttpReply reply = answer.get();
  EXPECT_EQ(reply.status, 200);
  EXPECT_NE(reply.body.find("event: done"), std::string::npos) << reply.body << heavy.Log();
  EXPECT_NE(reply.body.find("ten"), std::string::npos) << reply.body;
  EXPECT_EQ(reply.body.find("event: error"), std::string::npos) << reply.body;
  EXPECT_EQ(LlmStat("requests"), warm_up_requests + 1)
      << "the turn ran once, on the worker that had it";
  auto code = heavy.Wait(60s);
  ASSERT_TRUE(code.has_value()) << "wf-heavy did not exit after its turn\n" << heavy.Log();
  EXPECT_EQ(*code, 0) << heavy.Log();
}

TEST_F(HeavyShutdownTest, SigtermPastTheDrainHandsTheTurnToAnotherWorker) {
  Process first(BinPath("wf-heavy"), {}, HeavyEnv("0", FreePort()));
  ASSERT_TRUE(Eventually([&] { return GatewayReady(); }, 30s)) << first.Log() << gateway_->Log();
  ASSERT_TRUE(AgentPathAnswers()) << first.Log() << lightweight_->Log();
  const long long warm_up_requests = LlmStat("requests");

  auto answer = AskSlow("sigterm-handback");
  ASSERT_TRUE(Eventually([&] { return LlmStat("active") == 1; }, 30s)) << Diagnose(answer, first);
  // A second worker joins while the first holds the turn; then the first is told to stop at
  // once (drain 0): the turn must go back to JetStream and on to the second.
  const int second_admin = FreePort();
  Process second(BinPath("wf-heavy"), {}, HeavyEnv("60000", second_admin));
  ASSERT_TRUE(
      Eventually([&] { return HttpCall("GET", Base(second_admin) + "/ready").status == 200; }, 30s))
      << second.Log();
  first.Signal(SIGTERM);
  auto code = first.Wait(60s);
  ASSERT_TRUE(code.has_value()) << first.Log();
  EXPECT_EQ(*code, 0) << first.Log();

  HttpReply reply = answer.get();
  EXPECT_EQ(reply.status, 200);
  EXPECT_NE(reply.body.find("event: done"), std::string::npos) << reply.body << "\n--- first\n"
                                                               << first.Log() << "\n--- second\n"
                                                               << second.Log();
  EXPECT_NE(reply.body.find("ten"), std::string::npos) << reply.body;
  EXPECT_GE(LlmStat("requests"), warm_up_requests + 2) << "the second worker re-ran the turn";
}

}  // namespace
}  // namespace wf
