// What Kubernetes and Compose do at every rollout and node drain: SIGTERM to a process that is in
// the middle of work. Real processes (nats-server, wf-demo-api, wf-lightweight, wf-gateway and,
// for the agent path, redis, PostgreSQL, wf-scripted-llm and wf-heavy); the tests check that no
// answer is lost, never how long anything took.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
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
      if (!Exists(BinPath(bin))) GTEST_SKIP() << BinPath(bin) << " is not built";
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

}  // namespace
}  // namespace wf
