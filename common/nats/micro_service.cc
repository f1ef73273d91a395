#include "nats/micro_service.h"

#include <spdlog/spdlog.h>

#include <ctime>
#include <nlohmann/json.hpp>

namespace wf {

using nlohmann::json;

void EndpointStats::Record(std::chrono::nanoseconds took, std::string_view error) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  processing_ns_.fetch_add(static_cast<uint64_t>(took.count()), std::memory_order_relaxed);
  if (!error.empty()) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mu_);
    last_error_ = std::string(error);
  }
}

std::string EndpointStats::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

namespace {

std::string Rfc3339Now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

MicroService::MicroService(NatsConnection& conn, std::string name, std::string version,
                           std::string description, std::string subject_prefix)
    : conn_(conn),
      name_(std::move(name)),
      version_(std::move(version)),
      description_(std::move(description)),
      subject_prefix_(std::move(subject_prefix)) {
  // The inbox's unique token doubles as the instance id.
  std::string inbox = NatsConnection::NewInbox();
  id_ = inbox.substr(inbox.rfind('.') + 1);
  started_ = Rfc3339Now();
}

EndpointStats* MicroService::AddEndpoint(const std::string& name, const std::string& subject,
                                         const std::string& queue_group) {
  return &endpoints_.emplace_back(name, subject, queue_group);
}

std::string MicroService::PingJson() const {
  return json{{"type", "io.nats.micro.v1.ping_response"},
              {"name", name_},
              {"id", id_},
              {"version", version_},
              {"metadata", {{kSubjectPrefixMetadata, subject_prefix_}}}}
      .dump();
}

std::string MicroService::InfoJson() const {
  json eps = json::array();
  for (const auto& e : endpoints_) {
    eps.push_back({{"name", e.name()}, {"subject", e.subject()}, {"queue_group", e.queue_group()}});
  }
  return json{{"type", "io.nats.micro.v1.info_response"},
              {"name", name_},
              {"id", id_},
              {"version", version_},
              {"description", description_},
              {"metadata", {{kSubjectPrefixMetadata, subject_prefix_}}},
              {"endpoints", eps}}
      .dump();
}

std::string MicroService::StatsJson() const {
  json eps = json::array();
  for (const auto& e : endpoints_) {
    uint64_t n = e.requests();
    uint64_t ns = e.processing_ns();
    eps.push_back({{"name", e.name()},
                   {"subject", e.subject()},
                   {"queue_group", e.queue_group()},
                   {"num_requests", n},
                   {"num_errors", e.errors()},
                   {"last_error", e.last_error()},
                   {"processing_time", ns},
                   {"average_processing_time", n ? ns / n : 0}});
  }
  return json{{"type", "io.nats.micro.v1.stats_response"},
              {"name", name_},
              {"id", id_},
              {"version", version_},
              {"started", started_},
              {"metadata", {{kSubjectPrefixMetadata, subject_prefix_}}},
              {"endpoints", eps}}
      .dump();
}

Status MicroService::Start() {
  struct Verb {
    const char* verb;
    std::string (MicroService::*doc)() const;
  };
  for (Verb v : {Verb{"PING", &MicroService::PingJson}, Verb{"INFO", &MicroService::InfoJson},
                 Verb{"STATS", &MicroService::StatsJson}}) {
    std::string base = std::string("$SRV.") + v.verb;
    for (const std::string& subject : {base, base + "." + name_, base + "." + name_ + "." + id_}) {
      auto doc = v.doc;
      auto sub = conn_.Subscribe(subject, [this, doc](const NatsMsgView& msg) {
        if (msg.reply().empty()) return;
        auto status = conn_.Publish(msg.reply(), (this->*doc)());
        if (!status.ok()) spdlog::warn("discovery reply failed: {}", status.error().message);
      });
      if (!sub.ok()) return sub.error();
      subs_.push_back(std::move(sub).value());
    }
  }
  return Status::Ok();
}

void MicroService::Stop() { subs_.clear(); }

PoolMonitor::PoolMonitor(NatsConnection& conn, std::string subject_prefix,
                         std::vector<std::string> pools, std::chrono::milliseconds interval)
    : conn_(conn),
      subject_prefix_(std::move(subject_prefix)),
      pools_(std::move(pools)),
      interval_(interval) {}

PoolMonitor::~PoolMonitor() { Stop(); }

Status PoolMonitor::Start() {
  inbox_ = NatsConnection::NewInbox();
  auto sub = conn_.Subscribe(inbox_ + ".*", [this](const NatsMsgView& msg) { OnPong(msg); });
  if (!sub.ok()) return sub.error();
  sub_ = std::move(sub).value();
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void PoolMonitor::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  sub_.Unsubscribe();
}

void PoolMonitor::Run() {
  std::unique_lock lock(mu_);
  auto next_ping = std::chrono::steady_clock::now();
  while (!stop_) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_ping) {
      lock.unlock();
      for (const auto& pool : pools_) {
        // Errors (NATS down) are fine here: nobody answers, the pool reads as not live.
        (void)conn_.Publish("$SRV.PING." + pool, "", inbox_ + "." + pool);
      }
      lock.lock();
      next_ping = now + interval_;
    }
    // Waiters whose time is up learn that nobody answered.
    std::vector<std::function<void(bool)>> expired;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->deadline <= now) {
        expired.push_back(std::move(it->done));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    if (!expired.empty()) {
      lock.unlock();
      for (auto& done : expired) done(false);
      lock.lock();
    }
    auto wake = next_ping;
    for (const auto& w : waiters_) wake = std::min(wake, w.deadline);
    cv_.wait_until(lock, wake, [this] { return stop_; });
  }
  std::vector<Waiter> left;
  left.swap(waiters_);
  lock.unlock();
  for (auto& w : left) w.done(false);
}

void PoolMonitor::WhenLive(const std::string& pool, std::chrono::milliseconds timeout,
                           std::function<void(bool)> done) {
  if (Live(pool) > 0) {
    done(true);
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (stop_) {
      done(false);
      return;
    }
    waiters_.push_back({pool, std::chrono::steady_clock::now() + timeout, std::move(done)});
  }
  cv_.notify_all();
  (void)conn_.Publish("$SRV.PING." + pool, "", inbox_ + "." + pool);
}

void PoolMonitor::OnPong(const NatsMsgView& msg) {
  std::string_view subject = msg.subject();
  std::string pool(subject.substr(subject.rfind('.') + 1));
  auto doc = json::parse(msg.data(), nullptr, false);
  if (!doc.is_object() || !doc.contains("id") || !doc["id"].is_string()) return;
  // Another deployment's worker on the same server (see kSubjectPrefixMetadata).
  std::string_view prefix = "wf";
  if (auto meta = doc.find("metadata"); meta != doc.end() && meta->is_object()) {
    if (auto p = meta->find(kSubjectPrefixMetadata); p != meta->end() && p->is_string()) {
      prefix = p->get_ref<const std::string&>();
    }
  }
  if (prefix != subject_prefix_) return;
  std::vector<std::function<void(bool)>> ready;
  {
    std::lock_guard lock(mu_);
    seen_[pool][doc["id"].get<std::string>()] = std::chrono::steady_clock::now();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->pool == pool) {
        ready.push_back(std::move(it->done));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& done : ready) done(true);
}

int PoolMonitor::Live(const std::string& pool) const {
  auto cutoff = std::chrono::steady_clock::now() - interval_ * 5 / 2;
  std::lock_guard lock(mu_);
  auto it = seen_.find(pool);
  if (it == seen_.end()) return 0;
  int live = 0;
  for (const auto& [id, when] : it->second) {
    if (when >= cutoff) ++live;
  }
  return live;
}

}  // namespace wf
