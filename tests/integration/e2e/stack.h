#pragma once
// The whole pipeline on free ports for end-to-end tests: nats-server (JetStream), redis-server,
// PostgreSQL, wf-demo-api, wf-scripted-llm, wf-lightweight, wf-heavy (0..n) and wf-gateway.
#include <curl/curl.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/tcp_proxy.h"
#include "support/test_support.h"

namespace wf::testing {

struct StackOptions {
  int heavy_workers = 1;
  nlohmann::json agent = nlohmann::json::object();  ///< The config's "agent" section.
  nlohmann::json llm_rules = nullptr;  ///< wf-scripted-llm rules; null = DefaultRules().
  int ack_wait_ms = 30000;
  bool start_gateway = true;
  bool start_lightweight = true;
  std::vector<std::string> heavy_args = {};  ///< More wf-heavy flags, e.g. --concurrency 1.
  nlohmann::json gateway = nullptr;  ///< The config's "gateway" section; null = none.
  int flow_endpoint_timeout_ms = 0;  ///< The demo flows' endpoint.timeout_ms; 0 = default.
  /// Adds flow "stuck_lookup" ("stuck lookup ..."), whose business API call never answers.
  bool hanging_flow = false;
  /// When > 0, adds flow "slow_lookup" ("slow lookup ..."), whose call answers after this long.
  int slow_flow_ms = 0;
  /// The gateway reaches nats-server through a TcpProxy (Stack::gateway_proxy_), which can cut
  /// its connections alone.
  bool gateway_via_proxy = false;
};

inline nlohmann::json DefaultRules() {
  return {{"rules",
           {{{"when", {{"last_user_regex", "(?i)weather in (?P<city>\\w+)"}, {"no_tool_result", true}}},
             {"then", {{"tool_calls", {{{"name", "weather"}, {"arguments", {{"city", "{city}"}}}}}}}}},
            {{"when", {{"last_user_contains", "use the order flow"}, {"no_tool_result", true}}},
             {"then",
              {{"tool_calls", {{{"name", "order_status"}, {"arguments", {{"order_id", "4242"}}}}}}}}},
            {{"when", {{"last_message_role", "tool"}}},
             {"then", {{"reply", "Tool said: {last_tool_result}"}}}},
            {{"when", {{"last_user_contains", "flaky"}}},
             {"times", 1},
             {"then", {{"status", 429}, {"retry_after_s", 1}}}},
            {{"when", {{"last_user_contains", "slow"}}},
             {"then", {{"reply", "one two three four five six"}, {"delay_ms", 300}}}},
            {{"when", {{"last_user_contains", "hang"}}}, {"then", {{"hang", true}}}},
            {{"when", {{"last_user_contains", "recall"}}},
             {"then", {{"reply", "history: {history_users}"}}}}}}};
}

class Stack {
 public:
  explicit Stack(StackOptions options = {}) : options_(std::move(options)) {
    if (options_.llm_rules.is_null()) options_.llm_rules = DefaultRules();
    api_port_ = FreePort();
    api_.emplace(BinPath("wf-demo-api"),
                 std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(api_port_)});
    llm_port_ = FreePort();
    std::string rules = dir_.path() + "/rules.json";
    std::ofstream(rules) << options_.llm_rules.dump(2);
    llm_.emplace(BinPath("wf-scripted-llm"),
                 std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(llm_port_),
                                          "--rules", rules});
    config_path_ = dir_.path() + "/config.json";
    std::ofstream(config_path_) << Config().dump(2);
    Require(WaitForTcpPort(api_port_, std::chrono::seconds(10)), "demo api", api_->Log());
    Require(WaitForTcpPort(llm_port_, std::chrono::seconds(10)), "scripted llm", llm_->Log());
    if (options_.start_lightweight) StartLightweight();
    for (int i = 0; i < options_.heavy_workers; ++i) StartHeavy();
    if (options_.start_gateway) StartGateway();
  }

  nlohmann::json Config() const {
    std::string base = "http://127.0.0.1:" + std::to_string(api_port_);
    nlohmann::json agent = {{"turn_timeout_ms", 20000}};
    agent.update(options_.agent);
    nlohmann::json endpoint = {{"url", base + "/api/orders/{order_id}"}, {"method", "GET"}};
    if (options_.flow_endpoint_timeout_ms > 0) {
      endpoint["timeout_ms"] = options_.flow_endpoint_timeout_ms;
    }
    nlohmann::json config = {{"agent", agent},
            {"flows",
             {{{"flow_id", "order_status"},
               {"name", "Order status"},
               {"description", "Look up an order by number"},
               {"trigger_patterns", {"(?:查询|查)订单\\s*(?P<order_id>\\d+)", "check order\\s+(?P<order_id>\\d+)"}},
               {"parameters",
                {{"type", "object"},
                 {"properties", {{"order_id", {{"type", "string"}}}}},
                 {"required", {"order_id"}}}},
               {"endpoint", endpoint},
               {"response_template", "Order {order_id}: {result.status}"}}}},
            {"tools",
             {{{"name", "weather"},
               {"description", "Current weather for a city"},
               {"parameters",
                {{"type", "object"},
                 {"properties", {{"city", {{"type", "string"}}}}},
                 {"required", {"city"}}}},
               {"endpoint", {{"url", base + "/api/weather?city={city}"}, {"method", "GET"}}}}}}};
    if (options_.hanging_flow) {
      nlohmann::json stuck = endpoint;
      stuck["url"] = base + "/hang?ms=600000";
      config["flows"].push_back({{"flow_id", "stuck_lookup"},
                                 {"trigger_patterns", {"stuck lookup"}},
                                 {"endpoint", stuck}});
    }
    if (options_.slow_flow_ms > 0) {
      nlohmann::json slow = endpoint;
      slow["url"] = base + "/hang?ms=" + std::to_string(options_.slow_flow_ms);
      config["flows"].push_back({{"flow_id", "slow_lookup"},
                                 {"trigger_patterns", {"slow lookup"}},
                                 {"endpoint", slow},
                                 {"response_template", "slept {result.slept_ms} ms"}});
    }
    if (!options_.gateway.is_null()) config["gateway"] = options_.gateway;
    return config;
  }

  void StartLightweight() {
    lightweight_.push_back(std::make_unique<Process>(
        BinPath("wf-lightweight"),
        std::vector<std::string>{"--config", config_path_, "--nats-url", nats_.url(), "--threads",
                                 "1"}));
  }

  Process& StartHeavy() {
    int admin = FreePort();
    heavy_admin_ports_.push_back(admin);
    std::vector<std::string> args{
        "--config",       config_path_,
        "--nats-url",     nats_.url(),
        "--redis-url",    redis_.url(),
        "--database-url", pg_.url(),
        "--llm-base-url", "http://127.0.0.1:" + std::to_string(llm_port_) + "/v1",
        "--llm-model",    "scripted",
        "--ack-wait-ms",  std::to_string(options_.ack_wait_ms),
        "--admin-listen", "127.0.0.1:" + std::to_string(admin),
        "--drain-ms",     "5000"};
    args.insert(args.end(), options_.heavy_args.begin(), options_.heavy_args.end());
    heavy_.push_back(std::make_unique<Process>(BinPath("wf-heavy"), std::move(args)));
    // Ready once its admin port says so: the port is bound before the worker connects.
    const std::string ready = "http://127.0.0.1:" + std::to_string(admin) + "/ready";
    Require(Eventually([&] { return HttpCall("GET", ready, "", {}, 1000).status == 200; },
                       std::chrono::seconds(30)),
            "wf-heavy", heavy_.back()->Log());
    return *heavy_.back();
  }

  void StartGateway() {
    gateway_port_ = FreePort();
    std::string nats_url = nats_.url();
    if (options_.gateway_via_proxy) {
      if (!gateway_proxy_) gateway_proxy_ = std::make_unique<TcpProxy>(nats_.port());
      nats_url = "nats://127.0.0.1:" + std::to_string(gateway_proxy_->port());
    }
    gateway_.emplace(
        BinPath("wf-gateway"),
        std::vector<std::string>{"--config", config_path_, "--nats-url", nats_url, "--listen",
                                 "127.0.0.1:" + std::to_string(gateway_port_), "--threads", "2",
                                 "--heartbeat-ms", "100"});
    Require(WaitForTcpPort(gateway_port_, std::chrono::seconds(10)), "wf-gateway",
            gateway_->Log());
    // Ready once the workers answer discovery.
    Require(Eventually(
                [&] {
                  auto r = HttpCall("GET", Url("/ready"));
                  if (r.status != 200) return false;
                  auto j = nlohmann::json::parse(r.body, nullptr, false);
                  return j.is_object() &&
                         j["workers"]["heavy"].get<int>() >= options_.heavy_workers;
                },
                std::chrono::seconds(20)),
            "gateway /ready", gateway_->Log());
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(gateway_port_) + path;
  }
  std::string LlmUrl(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(llm_port_) + path;
  }

  /// POST /api/v1/query; the parsed body (or null) and the status.
  std::pair<int, nlohmann::json> Query(const std::string& message, const std::string& session,
                                       long timeout_ms = 30000) {
    nlohmann::json body = {{"message", message}, {"session_id", session}};
    auto r = HttpCall("POST", Url("/api/v1/query"), body.dump(),
                      {"Content-Type: application/json"}, timeout_ms);
    return {r.status, nlohmann::json::parse(r.body, nullptr, false)};
  }

  std::string Logs() {
    std::string out = "--- gateway\n" + (gateway_ ? gateway_->Log() : "");
    for (auto& h : heavy_) out += "--- heavy\n" + h->Log();
    for (auto& l : lightweight_) out += "--- lightweight\n" + l->Log();
    return out;
  }

  NatsServer nats_;
  RedisServer redis_;
  PostgresServer pg_;
  TempDir dir_;
  StackOptions options_;
  int api_port_ = 0, llm_port_ = 0, gateway_port_ = 0;
  std::string config_path_;
  std::unique_ptr<TcpProxy> gateway_proxy_;  // options_.gateway_via_proxy
  std::optional<Process> api_, llm_, gateway_;
  std::vector<std::unique_ptr<Process>> lightweight_, heavy_;
  std::vector<int> heavy_admin_ports_;

 private:
  static void Require(bool ok, const std::string& what, const std::string& log) {
    if (!ok) throw std::runtime_error(what + " did not come up:\n" + log);
  }
};

/// One SSE event as received, with the time it arrived.
struct SseEvent {
  std::string event;
  std::string data;
  std::chrono::steady_clock::time_point at;
};

/// Reads a Server-Sent Events response on a thread; `stop_after` lets a test hang up early.
class SseReader {
 public:
  SseReader(const std::string& url, const std::string& body) : url_(url), body_(body) {
    thread_ = std::thread([this] { Run(); });
  }
  ~SseReader() {
    Close();
    if (thread_.joinable()) thread_.join();
  }
  /// Makes the client hang up (as a browser tab closing would).
  void Close() { close_ = true; }
  bool Done() const { return done_; }
  std::vector<SseEvent> Events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::string Raw() {
    std::lock_guard lock(mu_);
    return raw_;
  }
  long status() const { return status_; }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  static size_t OnData(char* data, size_t size, size_t n, void* self_ptr) {
    auto* self = static_cast<SseReader*>(self_ptr);
    if (self->close_) return 0;  // abort: the connection closes
    std::lock_guard lock(self->mu_);
    self->raw_.append(data, size * n);
    self->buffer_.append(data, size * n);
    size_t end;
    while ((end = self->buffer_.find("\n\n")) != std::string::npos) {
      std::string frame = self->buffer_.substr(0, end);
      self->buffer_.erase(0, end + 2);
      SseEvent e;
      e.at = std::chrono::steady_clock::now();
      size_t pos = 0;
      while (pos <= frame.size()) {
        size_t nl = frame.find('\n', pos);
        std::string line = frame.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (line.rfind("event: ", 0) == 0) e.event = line.substr(7);
        if (line.rfind("data: ", 0) == 0) e.data += line.substr(6);
        if (line.rfind(":", 0) == 0) e.event = "comment";
        if (nl == std::string::npos) break;
        pos = nl + 1;
      }
      self->events_.push_back(e);
    }
    return size * n;
  }
  static int OnProgress(void* self_ptr, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<SseReader*>(self_ptr)->close_ ? 1 : 0;
  }
  void Run() {
    CURL* curl = curl_easy_init();
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body_.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &SseReader::OnData);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &SseReader::OnProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status_);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    done_ = true;
  }

  std::string url_, body_;
  std::thread thread_;
  std::atomic<bool> close_{false}, done_{false};
  std::mutex mu_;
  std::string raw_, buffer_;
  std::vector<SseEvent> events_;
  long status_ = 0;
};

}  // namespace wf::testing
