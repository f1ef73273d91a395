// wf-lightweight: flow matching and execution worker. Parses flags, loads the config, wires the
// NATS connection, the worker and the admin port, then waits for SIGTERM.
#include <spdlog/spdlog.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "admin_http/admin_server.h"
#include "cli/command_line.h"
#include "cli/config_step.h"
#include "config/config.h"
#include "lightweight/lightweight_worker.h"
#include "nats/connection.h"

int main(int argc, char** argv) {
  wf::BlockTerminationSignals();
  auto flags_spec = wf::CommonFlags();
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  flags_spec.push_back(
      wf::IntegerFlag("threads", "WF_THREADS", std::to_string(std::min(cores, 64u)),
                      "event-loop threads (each: a NATS connection and an HTTP client)", 1, 64));
  flags_spec.push_back(
      wf::HostPortFlag("admin-listen", "WF_ADMIN_LISTEN", "",
                       "HOST:PORT for /health, /ready and /metrics (off when empty)", true));
  flags_spec.push_back(wf::IntegerFlag("drain-ms", "WF_DRAIN_MS", "10000",
                                       "on SIGTERM, wait this long for flows in flight to answer",
                                       0, 3600000));
  wf::CommandLine cli("wf-lightweight",
                      "Matches queries against the configured flows (queue group "
                      "\"lightweight\"), runs flows and tools, forwards the rest to the agent "
                      "pool.",
                      flags_spec);
  auto parsed = cli.Parse(argc, argv);
  if (parsed.exit_code) return *parsed.exit_code;
  if (!parsed.flags) {
    std::cerr << "wf-lightweight: " << parsed.error << "\n";
    return 2;
  }
  const wf::Flags& flags = *parsed.flags;
  wf::InitLogging("wf-lightweight", flags.Get("log-level"));

  std::shared_ptr<const wf::Config> config;
  if (auto exit_code = wf::LoadConfigStep(flags, "wf-lightweight", &config)) return *exit_code;
  const long drain_ms = flags.Int("drain-ms");

  // The admin port is bound before anything connects: a port in use stops the start with one
  // line, before the worker joins its queue group (it would take queries, then exit).
  std::atomic<wf::LightweightWorker*> running{nullptr};
  std::unique_ptr<wf::AdminServer> admin;
  if (!flags.Get("admin-listen").empty()) {
    auto started = wf::AdminServer::Start({flags.Get("admin-listen"),
                                           [&running](std::string* why) {
                                             wf::LightweightWorker* w = running.load();
                                             if (w == nullptr) {
                                               *why = "starting";
                                               return false;
                                             }
                                             if (w->Connected()) return true;
                                             *why = "NATS disconnected";
                                             return false;
                                           },
                                           [&running] {
                                             wf::LightweightWorker* w = running.load();
                                             return w ? w->MetricsText() : std::string();
                                           },
                                           {}});
    if (!started.ok()) {
      std::cerr << "wf-lightweight: admin port: " << started.error().message << "\n";
      return 1;
    }
    admin = std::move(started).value();
  }

  wf::NatsOptions nats_options;
  nats_options.url = flags.Get("nats-url");
  nats_options.name = "wf-lightweight";
  auto conn = wf::NatsConnection::Connect(nats_options);
  if (!conn.ok()) {
    std::cerr << "wf-lightweight: " << conn.error().message << "\n";
    return 1;
  }
  wf::LightweightWorker::Options options;
  options.loops = static_cast<int>(flags.Int("threads"));
  auto worker = wf::LightweightWorker::Start(config, **conn, options);
  if (!worker.ok()) {
    std::cerr << "wf-lightweight: " << worker.error().message << "\n";
    return 1;
  }

  running.store(worker->get());

  int sig = wf::WaitForTerminationSignal();
  spdlog::info("signal {}: draining for up to {} ms", sig, drain_ms);
  (*worker)->Shutdown(std::chrono::milliseconds(drain_ms));
  if (admin) admin->Stop();  // its handlers call into the worker
  spdlog::info("stopped");
  return 0;
}
