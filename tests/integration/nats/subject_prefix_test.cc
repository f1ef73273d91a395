// Two deployments with different subject prefixes on one nats-server: each keeps its own
// JetStream streams (WF_* for "wf", T2_* for "t2"), a stream serving other subjects is never
// taken over, and each gateway counts and reaches only the workers of its own prefix.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "nats/connection.h"
#include "nats/jetstream.h"
#include "support/test_support.h"

namespace wf::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

std::string WriteConfig(const TempDir& dir, const std::string& prefix) {
  const std::string path = dir.path() + "/" + prefix + ".json";
  std::ofstream(path)
      << json{{"subject_prefix", prefix}, {"agent", {{"turn_timeout_ms", 5000}}}}.dump();
  return path;
}

/// The subjects of stream `name`, or nullopt when it does not exist.
std::optional<std::vector<std::string>> StreamSubjects(JetStream& js, const std::string& name) {
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (js_GetStreamInfo(&info, js.raw(), name.c_str(), nullptr, &jerr) != NATS_OK || !info) {
    return std::nullopt;
  }
  std::vector<std::string> subjects;
  for (int i = 0; i < info->Config->SubjectsLen; ++i)
    subjects.emplace_back(info->Config->Subjects[i]);
  jsStreamInfo_Destroy(info);
  return subjects;
}

struct Deployment {
  Deployment(const TempDir& dir, const std::string& nats_url, const std::string& prefix)
      : config(WriteConfig(dir, prefix)), port(FreePort()) {
    worker.emplace(
        BinPath("wf-lightweight"),
        std::vector<std::string>{"--config", config, "--nats-url", nats_url, "--threads", "1"});
    gateway.emplace(
        BinPath("wf-gateway"),
        std::vector<std::string>{"--config", config, "--nats-url", nats_url, "--listen",
                                 "127.0.0.1:" + std::to_string(port), "--threads", "1"});
  }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port) + path;
  }
  json Ready() const { return json::parse(HttpCall("GET", Url("/ready")).body, nullptr, false); }

  std::string config;
  int port;
  std::optional<Process> worker;
  std::optional<Process> gateway;
};

TEST(SubjectPrefix, TwoDeploymentsShareOneNatsServer) {
  NatsServer nats;
  TempDir dir;
  Deployment wf(dir, nats.url(), "wf");
  Deployment t2(dir, nats.url(), "t2");
  ASSERT_TRUE(WaitForTcpPort(wf.port, milliseconds(15000))) << wf.gateway->Log();
  ASSERT_TRUE(WaitForTcpPort(t2.port, milliseconds(15000))) << t2.gateway->Log();

  // Each prefix has its own streams; the contract's names stay for "wf".
  NatsOptions options;
  options.url = nats.url();
  auto conn = std::move(NatsConnection::Connect(options)).value();
  auto js = std::move(JetStream::Create(*conn)).value();
  const std::vector<std::pair<std::string, std::string>> streams = {
      {"WF_HEAVY", "wf.heavy.query"},
      {"WF_HISTORY", "wf.history.append"},
      {"T2_HEAVY", "t2.heavy.query"},
      {"T2_HISTORY", "t2.history.append"}};
  for (const auto& [name, subject] : streams) {
    ASSERT_TRUE(Eventually([&, name = name] { return StreamSubjects(*js, name).has_value(); }))
        << name << "\n"
        << wf.worker->Log() << t2.worker->Log();
    EXPECT_EQ(StreamSubjects(*js, name), std::vector<std::string>{subject}) << name;
  }

  // Each gateway counts only its own worker, and its queries reach it (no flow matches and no
  // agent worker runs, so the worker itself answers no_agent_worker; no_worker would mean
  // nobody of this prefix got it).
  for (Deployment* d : {&wf, &t2}) {
    ASSERT_TRUE(Eventually([&] { return d->Ready()["ready"] == true; })) << d->gateway->Log();
  }
  for (int i = 0; i < 3; ++i) {
    for (Deployment* d : {&wf, &t2}) EXPECT_EQ(d->Ready()["workers"]["lightweight"], 1);
    std::this_thread::sleep_for(milliseconds(500));
  }
  for (Deployment* d : {&wf, &t2}) {
    HttpReply r =
        HttpCall("POST", d->Url("/api/v1/query"), R"({"message":"anything","session_id":"s1"})",
                 {"Content-Type: application/json"});
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_EQ(json::parse(r.body, nullptr, false)["error"]["code"], "no_agent_worker") << r.body;
  }

  // Without its own worker, t2 is not ready (the wf worker does not count) while wf still is.
  t2.worker->Stop();
  EXPECT_TRUE(Eventually([&] { return t2.Ready()["ready"] == false; })) << t2.Ready().dump();
  EXPECT_EQ(t2.Ready()["workers"]["lightweight"], 0);
  EXPECT_EQ(wf.Ready()["ready"], true);
  EXPECT_TRUE(wf.worker->Running()) << wf.worker->Log();
}

TEST(SubjectPrefix, AStreamServingOtherSubjectsIsNotTakenOver) {
  NatsServer nats;
  TempDir dir;
  NatsOptions options;
  options.url = nats.url();
  auto conn = std::move(NatsConnection::Connect(options)).value();
  auto js = std::move(JetStream::Create(*conn)).value();
  ASSERT_TRUE(js->EnsureStream(StreamSpec{"T2_HEAVY", {"someone.else.queue"}}).ok());

  Process worker(BinPath("wf-lightweight"),
                 {"--config", WriteConfig(dir, "t2"), "--nats-url", nats.url(), "--threads", "1"});
  auto code = worker.Wait(milliseconds(15000));
  ASSERT_TRUE(code.has_value()) << "the worker started on a stream that is not its own";
  EXPECT_NE(*code, 0);
  EXPECT_NE(worker.Log().find("JetStream stream T2_HEAVY already exists for subjects "
                              "[someone.else.queue]"),
            std::string::npos)
      << worker.Log();
  EXPECT_EQ(StreamSubjects(*js, "T2_HEAVY"), std::vector<std::string>{"someone.else.queue"});
}

}  // namespace
}  // namespace wf::testing
