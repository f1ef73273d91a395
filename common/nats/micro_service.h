#pragma once

#include <atomic>
#include <condition_variable>
#include <thread>
#include <unordered_map>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nats/connection.h"

namespace wf {

/// Per-endpoint counters reported in `$SRV.STATS`. Thread-safe (atomics, one mutex for the text).
class EndpointStats {
 public:
  EndpointStats(std::string name, std::string subject, std::string queue_group)
      : name_(std::move(name)), subject_(std::move(subject)), queue_(std::move(queue_group)) {}
  /// Records one handled request; `error` non-empty when it failed.
  void Record(std::chrono::nanoseconds took, std::string_view error = {});
  const std::string& name() const { return name_; }
  const std::string& subject() const { return subject_; }
  const std::string& queue_group() const { return queue_; }
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  uint64_t processing_ns() const { return processing_ns_.load(std::memory_order_relaxed); }
  std::string last_error() const;

 private:
  std::string name_, subject_, queue_;
  std::atomic<uint64_t> requests_{0}, errors_{0}, processing_ns_{0};
  mutable std::mutex mu_;
  std::string last_error_;
};

/// The metadata key of every discovery answer that names the worker's subject prefix: workers
/// of several deployments (prefixes) on one NATS server all answer `$SRV.PING.<pool>`, and a
/// PoolMonitor counts only those of its own prefix.
inline constexpr const char* kSubjectPrefixMetadata = "subject_prefix";

/// Answers the NATS micro-services discovery protocol (`$SRV.PING|INFO|STATS[.name[.id]]`,
/// `io.nats.micro.v1.*` JSON), which nats.c 3.4 does not provide. One per worker process.
class MicroService {
 public:
  /// `subject_prefix`: the deployment's subject prefix, reported as metadata
  /// `{"subject_prefix": ...}` in every answer.
  MicroService(NatsConnection& conn, std::string name, std::string version, std::string description,
               std::string subject_prefix);
  /// Declares an endpoint whose stats are reported; the caller keeps the pointer and calls
  /// Record on it. Call before Start.
  EndpointStats* AddEndpoint(const std::string& name, const std::string& subject,
                             const std::string& queue_group);
  /// Subscribes to the discovery subjects.
  Status Start();
  void Stop();
  const std::string& id() const { return id_; }
  const std::string& name() const { return name_; }

  /// The JSON documents (exposed for tests).
  std::string PingJson() const;
  std::string InfoJson() const;
  std::string StatsJson() const;

 private:
  NatsConnection& conn_;
  std::string name_, version_, description_, id_;
  std::string subject_prefix_;
  std::string started_;
  std::deque<EndpointStats> endpoints_;
  std::vector<NatsSubscription> subs_;
};

/// Counts live instances of worker pools by sending `$SRV.PING.<pool>` every `interval` and
/// remembering who answered. Used by the gateway's /ready and by the lightweight worker to know
/// whether any agent worker is alive. Owns one thread; Live() is thread-safe.
class PoolMonitor {
 public:
  /// Counts only workers whose answers carry metadata `subject_prefix` equal to
  /// `subject_prefix` (an answer without it counts as prefix "wf", the default).
  PoolMonitor(NatsConnection& conn, std::string subject_prefix, std::vector<std::string> pools,
              std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  ~PoolMonitor();
  Status Start();
  void Stop();
  /// Instances of `pool` that answered within the last 2.5 intervals.
  int Live(const std::string& pool) const;
  /// Calls `done(true)` at once when `pool` is live; otherwise pings it now and calls
  /// `done(true)` on the first answer or `done(false)` after `timeout`. Never blocks; `done` runs
  /// on the caller's thread, a NATS delivery thread or the monitor's thread.
  void WhenLive(const std::string& pool, std::chrono::milliseconds timeout,
                std::function<void(bool)> done);

 private:
  void Run();
  void OnPong(const NatsMsgView& msg);

  NatsConnection& conn_;
  std::string subject_prefix_;
  std::vector<std::string> pools_;
  std::chrono::milliseconds interval_;
  std::string inbox_;
  NatsSubscription sub_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  struct Waiter {
    std::string pool;
    std::chrono::steady_clock::time_point deadline;
    std::function<void(bool)> done;
  };
  std::vector<Waiter> waiters_;
  // pool -> (instance id -> last seen)
  std::unordered_map<std::string,
                     std::unordered_map<std::string, std::chrono::steady_clock::time_point>>
      seen_;
};

}  // namespace wf
