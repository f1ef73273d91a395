#include "gateway/metrics.h"

#include <algorithm>
#include <cstdio>

namespace wf {

std::string_view RouteLabel(Route route) {
  switch (route) {
    case Route::kQuery:
      return "query";
    case Route::kQueryStream:
      return "query_stream";
    case Route::kSessionGet:
      return "session_get";
    case Route::kSessionDelete:
      return "session_delete";
    case Route::kHealth:
      return "health";
    case Route::kReady:
      return "ready";
    case Route::kMetrics:
      return "metrics";
    default:
      return "other";
  }
}

int GatewayMetrics::StatusSlot(int status) {
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) return static_cast<int>(i);
  }
  return status == 504 ? kStatusSlots - 2 : kStatusSlots - 1;
}

int GatewayMetrics::SlotStatus(int slot) {
  if (slot < static_cast<int>(kStatuses.size())) return kStatuses[slot];
  return slot == kStatusSlots - 2 ? 504 : 0;
}

void GatewayMetrics::RecordRequest(Route route, int status, std::chrono::nanoseconds latency) {
  const int r = static_cast<int>(route);
  requests_[r * kStatusSlots + StatusSlot(status)].fetch_add(1, std::memory_order_relaxed);
  const double seconds = static_cast<double>(latency.count()) / 1e9;
  std::size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  buckets_[r * (kBuckets.size() + 1) + b].fetch_add(1, std::memory_order_relaxed);
  latency_ns_sum_[r].fetch_add(static_cast<uint64_t>(latency.count()), std::memory_order_relaxed);
}

void GatewayMetrics::CountInboxMessage(bool matched) {
  (matched ? inbox_matched_ : inbox_unmatched_).fetch_add(1, std::memory_order_relaxed);
}

uint64_t GatewayMetrics::RequestCount(Route route, int status) const {
  return requests_[static_cast<int>(route) * kStatusSlots + StatusSlot(status)].load(
      std::memory_order_relaxed);
}

std::string GatewayMetrics::Render(const Gauges& gauges) const {
  std::string out;
  out.reserve(8192);
  char line[1024];
  auto add = [&](const char* fmt, auto... args) {
    int n = std::snprintf(line, sizeof line, fmt, args...);
    if (n > 0) out.append(line, static_cast<std::size_t>(std::min<int>(n, sizeof line - 1)));
  };

  out.append(
      "# HELP wf_gateway_requests_total HTTP requests answered, by route and status (499: the "
      "client left first).\n# TYPE wf_gateway_requests_total counter\n");
  for (int r = 0; r < kRoutes; ++r) {
    const std::string route(RouteLabel(static_cast<Route>(r)));
    for (int s = 0; s < kStatusSlots; ++s) {
      const uint64_t n = requests_[r * kStatusSlots + s].load(std::memory_order_relaxed);
      if (n == 0) continue;
      const int status = SlotStatus(s);
      if (status == 0) {
        add("wf_gateway_requests_total{route=\"%s\",status=\"other\"} %llu\n", route.c_str(),
            static_cast<unsigned long long>(n));
      } else {
        add("wf_gateway_requests_total{route=\"%s\",status=\"%d\"} %llu\n", route.c_str(), status,
            static_cast<unsigned long long>(n));
      }
    }
  }

  out.append(
      "# HELP wf_gateway_request_duration_seconds Time from the parsed request to the last byte "
      "queued.\n# TYPE wf_gateway_request_duration_seconds histogram\n");
  for (int r = 0; r < kRoutes; ++r) {
    const std::string route(RouteLabel(static_cast<Route>(r)));
    uint64_t cumulative = 0;
    for (std::size_t b = 0; b <= kBuckets.size(); ++b) {
      cumulative += buckets_[r * (kBuckets.size() + 1) + b].load(std::memory_order_relaxed);
      if (b < kBuckets.size()) {
        add("wf_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
            route.c_str(), kBuckets[b], static_cast<unsigned long long>(cumulative));
      } else {
        add("wf_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
            route.c_str(), static_cast<unsigned long long>(cumulative));
      }
    }
    add("wf_gateway_request_duration_seconds_sum{route=\"%s\"} %.9f\n", route.c_str(),
        static_cast<double>(latency_ns_sum_[r].load(std::memory_order_relaxed)) / 1e9);
    add("wf_gateway_request_duration_seconds_count{route=\"%s\"} %llu\n", route.c_str(),
        static_cast<unsigned long long>(cumulative));
  }

  add("# HELP wf_gateway_in_flight_requests Requests waiting for an answer.\n"
      "# TYPE wf_gateway_in_flight_requests gauge\nwf_gateway_in_flight_requests %lld\n",
      static_cast<long long>(in_flight_.load(std::memory_order_relaxed)));
  add("# HELP wf_gateway_open_streams Server-Sent Events streams open.\n"
      "# TYPE wf_gateway_open_streams gauge\nwf_gateway_open_streams %lld\n",
      static_cast<long long>(open_streams_.load(std::memory_order_relaxed)));
  add("# HELP wf_gateway_nats_connected 1 while connected to NATS.\n"
      "# TYPE wf_gateway_nats_connected gauge\nwf_gateway_nats_connected %d\n",
      gauges.nats_connected ? 1 : 0);
  add("# HELP wf_gateway_live_workers Live worker instances by pool ($SRV.PING).\n"
      "# TYPE wf_gateway_live_workers gauge\n"
      "wf_gateway_live_workers{pool=\"lightweight\"} %d\n"
      "wf_gateway_live_workers{pool=\"heavy\"} %d\n",
      gauges.lightweight_workers, gauges.heavy_workers);
  add("# HELP wf_gateway_draining 1 while shutting down.\n"
      "# TYPE wf_gateway_draining gauge\nwf_gateway_draining %d\n",
      gauges.draining ? 1 : 0);
  add("# HELP wf_gateway_events_received_total NATS messages on the reply inbox.\n"
      "# TYPE wf_gateway_events_received_total counter\n"
      "wf_gateway_events_received_total{matched=\"true\"} %llu\n"
      "wf_gateway_events_received_total{matched=\"false\"} %llu\n",
      static_cast<unsigned long long>(inbox_matched_.load(std::memory_order_relaxed)),
      static_cast<unsigned long long>(inbox_unmatched_.load(std::memory_order_relaxed)));
  add("# HELP wf_gateway_cancels_total Cancels published (client gone, deadline, shutdown).\n"
      "# TYPE wf_gateway_cancels_total counter\nwf_gateway_cancels_total %llu\n",
      static_cast<unsigned long long>(cancels_.load(std::memory_order_relaxed)));
  add("# HELP wf_gateway_end_events_confirmed_total Last events of queries confirmed to the worker "
      "that sent them (repeats included: a worker sends again until confirmed).\n"
      "# TYPE wf_gateway_end_events_confirmed_total counter\n"
      "wf_gateway_end_events_confirmed_total %llu\n",
      static_cast<unsigned long long>(ends_confirmed_.load(std::memory_order_relaxed)));
  add("# HELP wf_gateway_replays_asked_total Open requests whose last event the gateway asked "
      "the workers to send again after its events connection was restored (ReplayRequest).\n"
      "# TYPE wf_gateway_replays_asked_total counter\nwf_gateway_replays_asked_total %llu\n",
      static_cast<unsigned long long>(replays_asked_.load(std::memory_order_relaxed)));
  add("# HELP wf_gateway_queued_write_bytes Response bytes waiting in the gateway for sockets "
      "that do not take them yet (slow readers), all connections.\n"
      "# TYPE wf_gateway_queued_write_bytes gauge\nwf_gateway_queued_write_bytes %lld\n",
      static_cast<long long>(gauges.queued_write_bytes));
  add("# HELP wf_gateway_slow_clients_dropped_total Connections dropped because the client stopped "
      "reading: its queued bytes would have passed gateway.max_buffered_bytes_per_connection.\n"
      "# TYPE wf_gateway_slow_clients_dropped_total counter\n"
      "wf_gateway_slow_clients_dropped_total %llu\n",
      static_cast<unsigned long long>(gauges.slow_clients_dropped));
  return out;
}

}  // namespace wf
