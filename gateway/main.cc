// wf-gateway: HTTP + SSE in, NATS out. Parses flags, loads the config, runs GatewayServer until
// SIGTERM/SIGINT, then drains.
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "cli/command_line.h"
#include "cli/config_step.h"
#include "config/config.h"
#include "gateway/gateway_server.h"

namespace {

std::vector<wf::FlagSpec> GatewayFlags() {
  std::vector<wf::FlagSpec> flags = wf::CommonFlags();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  flags.push_back(
      wf::HostPortFlag("listen", "WF_LISTEN", "0.0.0.0:8000", "HOST:PORT to serve HTTP on"));
  flags.push_back(wf::IntegerFlag("threads", "WF_THREADS", std::to_string(std::min(cores, 1024u)),
                                  "HTTP worker threads", 1, 1024));
  flags.push_back(wf::IntegerFlag("heartbeat-ms", "WF_HEARTBEAT_MS", "15000",
                                  "SSE heartbeat comment after this many ms of silence", 10,
                                  3600000));
  flags.push_back(wf::IntegerFlag(
      "drain-ms", "WF_DRAIN_MS", "30000",
      "on SIGTERM, wait this long for open requests and streams to finish", 0, 3600000));
  return flags;
}

int Fail(const std::string& line, int code = 1) {
  std::fprintf(stderr, "wf-gateway: %s\n", line.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the termination signals before any thread exists, so only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  wf::CommandLine command_line("wf-gateway",
                               "HTTP/SSE front end: publishes queries on NATS and streams the "
                               "answers back.",
                               GatewayFlags());
  // Parse validates every flag (ranges, HOST:PORT) before --check-config is looked at.
  auto parsed = command_line.Parse(argc, argv);
  if (parsed.exit_code) return *parsed.exit_code;
  if (!parsed.flags) return Fail(parsed.error, 2);
  const wf::Flags& flags = *parsed.flags;
  wf::InitLogging("wf-gateway", flags.Get("log-level"));

  std::shared_ptr<const wf::Config> config;
  if (auto exit_code = wf::LoadConfigStep(flags, "wf-gateway", &config)) return *exit_code;

  wf::GatewayOptions options;
  options.listen = flags.Get("listen");
  options.threads = static_cast<int>(flags.Int("threads"));
  options.heartbeat = std::chrono::milliseconds(flags.Int("heartbeat-ms"));
  options.nats_url = flags.Get("nats-url");
  options.config = config;
  auto server = wf::GatewayServer::Start(std::move(options));
  if (!server.ok()) return Fail(server.error().message);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  spdlog::info("signal {}: draining for up to {} ms", sig, flags.Int("drain-ms"));
  (*server)->Drain(std::chrono::milliseconds(flags.Int("drain-ms")));
  server->reset();
  return 0;
}
