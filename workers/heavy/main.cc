// wf-heavy: the agent worker. Parses flags, loads the config, connects NATS, Redis and
// PostgreSQL, wires the LLM client and the worker, then waits for SIGTERM and drains.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <iostream>

#include "admin_http/admin_server.h"
#include "cli/command_line.h"
#include "cli/config_step.h"
#include "config/config.h"
#include "http_client/http_client.h"
#include "io/timer.h"
#include "llm/http_llm_client.h"
#include "nats/connection.h"
#include "session/session_store.h"
#include "worker/heavy_worker.h"

int main(int argc, char** argv) {
  wf::BlockTerminationSignals();
  auto spec = wf::CommonFlags();
  spec.push_back({"redis-url", "REDIS_URL", "redis://127.0.0.1:6379", "Redis (hot sessions)"});
  spec.push_back({"database-url", "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres",
                  "PostgreSQL libpq URI (durable sessions)", false, true});
  spec.push_back(wf::HttpUrlFlag("llm-base-url", "LLM_BASE_URL", "http://127.0.0.1:8090/v1",
                                 "OpenAI-compatible base URL, e.g. https://api.openai.com/v1"));
  spec.push_back(
      {"llm-api-key", "LLM_API_KEY", "", "API key (sent as Bearer; never logged)", false, true});
  spec.push_back({"llm-model", "LLM_MODEL", "gpt-4o-mini", "model when the config names none"});
  spec.push_back(wf::IntegerFlag("concurrency", "WF_CONCURRENCY", "64",
                                 "agent turns in flight in this process", 1, 100000));
  spec.push_back(wf::HostPortFlag("admin-listen", "WF_ADMIN_LISTEN", "",
                                  "HOST:PORT for /health, /ready and /metrics (off when empty)",
                                  true));
  spec.push_back(wf::IntegerFlag(
      "drain-ms", "WF_DRAIN_MS", "60000",
      "on SIGTERM, how long turns in flight may finish before being handed back", 0, 3600000));
  spec.push_back(wf::IntegerFlag("ack-wait-ms", "WF_ACK_WAIT_MS", "30000",
                                 "JetStream ack wait of consumer \"heavy\": a dead worker's turn "
                                 "is redelivered after this (in-progress acks every third of it)",
                                 1000, 3600000));
  spec.push_back(wf::IntegerFlag("max-deliver", "WF_MAX_DELIVER", "3",
                                 "JetStream max deliveries of a query (consumer \"heavy\"); after "
                                 "the last, its client gets an error event",
                                 1, 100));
  wf::CommandLine cli("wf-heavy",
                      "Agent worker: consumes WF_HEAVY (consumer \"heavy\"), runs the LLM agent "
                      "loop with tools, flows and skills, stores sessions in Redis and PostgreSQL.",
                      spec);
  auto parsed = cli.Parse(argc, argv);
  if (parsed.exit_code) return *parsed.exit_code;
  if (!parsed.flags) {
    std::cerr << "wf-heavy: " << parsed.error << "\n";
    return 2;
  }
  const wf::Flags& flags = *parsed.flags;
  wf::InitLogging("wf-heavy", flags.Get("log-level"));
  std::shared_ptr<const wf::Config> config;
  if (auto exit_code = wf::LoadConfigStep(flags, "wf-heavy", &config)) return *exit_code;
  const long concurrency = flags.Int("concurrency");
  const long drain_ms = flags.Int("drain-ms");
  const long ack_wait_ms = flags.Int("ack-wait-ms");

  // The admin port is bound before anything connects: a port in use stops the start with one
  // line, before the worker joins its consumer (it would take turns, then exit).
  std::atomic<wf::HeavyWorker*> running{nullptr};
  std::unique_ptr<wf::AdminServer> admin;
  if (!flags.Get("admin-listen").empty()) {
    auto started = wf::AdminServer::Start({flags.Get("admin-listen"),
                                           [&running](std::string* why) {
                                             wf::HeavyWorker* w = running.load();
                                             if (w == nullptr) {
                                               *why = "starting";
                                               return false;
                                             }
                                             return w->Ready(why);
                                           },
                                           [&running] {
                                             wf::HeavyWorker* w = running.load();
                                             return w ? w->MetricsText() : std::string();
                                           },
                                           {}});
    if (!started.ok()) {
      std::cerr << "wf-heavy: admin port: " << started.error().message << "\n";
      return 1;
    }
    admin = std::move(started).value();
  }

  wf::NatsOptions nats_options;
  nats_options.url = flags.Get("nats-url");
  nats_options.name = "wf-heavy";
  auto conn = wf::NatsConnection::Connect(nats_options);
  if (!conn.ok()) {
    std::cerr << "wf-heavy: " << conn.error().message << "\n";
    return 1;
  }
  wf::SessionStoreOptions store_options;
  store_options.ttl = config->agent.session_ttl;
  auto store =
      wf::SessionStore::Connect(flags.Get("redis-url"), flags.Get("database-url"), store_options);
  if (!store.ok()) {
    std::cerr << "wf-heavy: " << store.error().message << "\n";
    return 1;
  }

  wf::TimerThread timer;
  // One LLM connection per turn in flight: the client's default cap (64 per host) would queue
  // turns inside the HTTP client instead of streaming them.
  wf::HttpClientOptions http_options;
  http_options.max_connections_per_host = concurrency;
  http_options.max_total_connections = concurrency + 64;
  wf::HttpClient http(http_options);
  wf::LlmClientOptions llm_options;
  llm_options.base_url = flags.Get("llm-base-url");
  llm_options.api_key = flags.Get("llm-api-key");
  llm_options.default_model =
      config->agent.model.empty() ? flags.Get("llm-model") : config->agent.model;
  wf::HttpLlmClient llm(llm_options, http, timer);

  wf::HeavyWorker::Options options;
  options.concurrency = static_cast<int>(concurrency);
  // Stores and session requests together leave one PostgreSQL connection for turn starts.
  options.store_threads = static_cast<int>(std::max<std::ptrdiff_t>(
      1, static_cast<std::ptrdiff_t>(store_options.pg_pool) - 1 - options.session_threads));
  options.ack_wait = std::chrono::milliseconds(ack_wait_ms);
  options.max_deliver = static_cast<int>(flags.Int("max-deliver"));
  options.in_progress_every = options.ack_wait / 3;
  auto worker = wf::HeavyWorker::Start(config, **conn, **store, llm, timer, options);
  if (!worker.ok()) {
    std::cerr << "wf-heavy: " << worker.error().message << "\n";
    return 1;
  }

  running.store(worker->get());

  int sig = wf::WaitForTerminationSignal();
  spdlog::info("signal {}: draining ({} turns in flight)", sig, (*worker)->active_turns());
  (*worker)->Shutdown(std::chrono::milliseconds(drain_ms));
  if (admin) admin->Stop();  // its handlers call into the worker
  worker->reset();
  spdlog::info("stopped");
  return 0;
}
