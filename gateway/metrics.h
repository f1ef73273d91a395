#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace wf {

/// The gateway's HTTP routes, as metric labels.
enum class Route : int {
  kQuery,
  kQueryStream,
  kSessionGet,
  kSessionDelete,
  kHealth,
  kReady,
  kMetrics,
  kOther,  ///< unknown paths, wrong methods, unparsable requests
  kCount,
};

/// The label of a route ("query", "query_stream", ...).
std::string_view RouteLabel(Route route);

/// Counters and histograms of the gateway, rendered in the Prometheus text format. Lock-free:
/// every method may be called from any thread; nothing allocates except Render.
class GatewayMetrics {
 public:
  /// Values read at render time from the rest of the gateway.
  struct Gauges {
    bool nats_connected = false;
    int lightweight_workers = 0;
    int heavy_workers = 0;
    bool draining = false;
    /// Bytes in Pistache's write queues, not yet taken by a socket (all connections).
    int64_t queued_write_bytes = 0;
    /// Connections dropped because a client stopped reading (their queue would have passed
    /// gateway.max_buffered_bytes_per_connection).
    uint64_t slow_clients_dropped = 0;
  };

  /// One finished HTTP request: its route, the status sent (499 when the client left first)
  /// and how long it took from the parsed request to the last byte queued.
  void RecordRequest(Route route, int status, std::chrono::nanoseconds latency);
  void AddInFlight(int delta) { in_flight_.fetch_add(delta, std::memory_order_relaxed); }
  void AddOpenStreams(int delta) { open_streams_.fetch_add(delta, std::memory_order_relaxed); }
  /// A NATS message arrived on the inbox (`matched`: for a waiting request).
  void CountInboxMessage(bool matched);
  /// A cancel was published.
  void CountCancel() { cancels_.fetch_add(1, std::memory_order_relaxed); }
  /// A worker's last event of a query was confirmed (QueryRequest.confirm_end).
  void CountEndConfirmed() { ends_confirmed_.fetch_add(1, std::memory_order_relaxed); }
  /// A ReplayRequest published after the events connection came back, asking for `requests`.
  void CountReplayAsked(std::size_t requests) {
    replays_asked_.fetch_add(requests, std::memory_order_relaxed);
  }

  /// The exposition text (format 0.0.4).
  std::string Render(const Gauges& gauges) const;

  /// Requests recorded for route/status so far (for tests).
  uint64_t RequestCount(Route route, int status) const;

 private:
  static constexpr std::array<int, 14> kStatuses = {200, 400, 401, 403, 404, 405, 408,
                                                    409, 413, 429, 499, 500, 502, 503};
  // 504 and anything else: the last two slots.
  static constexpr int kStatusSlots = static_cast<int>(kStatuses.size()) + 2;
  static constexpr std::array<double, 17> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  static constexpr int kRoutes = static_cast<int>(Route::kCount);
  static int StatusSlot(int status);
  static int SlotStatus(int slot);

  std::array<std::atomic<uint64_t>, kRoutes * kStatusSlots> requests_{};
  std::array<std::atomic<uint64_t>, kRoutes*(kBuckets.size() + 1)> buckets_{};
  std::array<std::atomic<uint64_t>, kRoutes> latency_ns_sum_{};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> open_streams_{0};
  std::atomic<uint64_t> inbox_matched_{0};
  std::atomic<uint64_t> inbox_unmatched_{0};
  std::atomic<uint64_t> cancels_{0};
  std::atomic<uint64_t> ends_confirmed_{0};
  std::atomic<uint64_t> replays_asked_{0};
};

}  // namespace wf
