#include "gateway/metrics.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

TEST(GatewayMetrics, RendersCountersHistogramsAndGauges) {
  GatewayMetrics m;
  m.RecordRequest(Route::kQuery, 200, std::chrono::microseconds(300));
  m.RecordRequest(Route::kQuery, 200, std::chrono::milliseconds(3));
  m.RecordRequest(Route::kQueryStream, 504, std::chrono::seconds(2));
  m.RecordRequest(Route::kOther, 418, std::chrono::microseconds(1));
  m.AddInFlight(3);
  m.AddOpenStreams(2);
  m.CountInboxMessage(true);
  m.CountInboxMessage(false);
  m.CountCancel();
  EXPECT_EQ(m.RequestCount(Route::kQuery, 200), 2u);

  GatewayMetrics::Gauges g;
  g.nats_connected = true;
  g.lightweight_workers = 2;
  g.heavy_workers = 1;
  g.queued_write_bytes = 12345;
  g.slow_clients_dropped = 4;
  const std::string text = m.Render(g);
  for (const char* expected : {
           "wf_gateway_requests_total{route=\"query\",status=\"200\"} 2\n",
           "wf_gateway_requests_total{route=\"query_stream\",status=\"504\"} 1\n",
           "wf_gateway_requests_total{route=\"other\",status=\"other\"} 1\n",
           "wf_gateway_request_duration_seconds_bucket{route=\"query\",le=\"0.0005\"} 1\n",
           "wf_gateway_request_duration_seconds_bucket{route=\"query\",le=\"0.005\"} 2\n",
           "wf_gateway_request_duration_seconds_bucket{route=\"query\",le=\"+Inf\"} 2\n",
           "wf_gateway_request_duration_seconds_count{route=\"query\"} 2\n",
           "wf_gateway_in_flight_requests 3\n",
           "wf_gateway_open_streams 2\n",
           "wf_gateway_nats_connected 1\n",
           "wf_gateway_live_workers{pool=\"lightweight\"} 2\n",
           "wf_gateway_events_received_total{matched=\"true\"} 1\n",
           "wf_gateway_cancels_total 1\n",
           "wf_gateway_queued_write_bytes 12345\n",
           "wf_gateway_slow_clients_dropped_total 4\n",
       }) {
    EXPECT_NE(text.find(expected), std::string::npos) << "missing: " << expected << "\n" << text;
  }
  // Every line is a comment or "name{labels} value".
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    ASSERT_NE(nl, std::string::npos);
    std::string line = text.substr(pos, nl - pos);
    EXPECT_TRUE(line.rfind("# ", 0) == 0 || line.find(' ') != std::string::npos) << line;
    pos = nl + 1;
  }
}

}  // namespace
}  // namespace wf
