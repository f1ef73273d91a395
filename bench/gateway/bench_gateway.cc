// Micro benchmarks of the gateway's own work on every flow query, besides Pistache's HTTP
// parsing and the NATS round trip: reading the request body (ParseQueryBody) and writing the
// answer (AnswerJson), with the bodies bench/flow_path.sh sends and gets.
//
//   build/bin/bench_gateway [--benchmark_min_time=1]

#include <benchmark/benchmark.h>

#include <string>

#include "config/config.h"
#include "gateway/event_format.h"
#include "gateway/query_body.h"

namespace wf {
namespace {

void ParseBody(benchmark::State& state, const std::string& body) {
  const GatewayConfig limits;
  for (auto _ : state) {
    v1::QueryRequest request;
    Status status = ParseQueryBody(body, limits, &request);
    if (!status.ok()) state.SkipWithError(status.error().message.c_str());
    benchmark::DoNotOptimize(request);
  }
  state.SetLabel(std::to_string(body.size()) + " B body");
}

// What bench/flow_path.sh posts.
void BM_ParseQueryBody_FlowBench(benchmark::State& state) {
  ParseBody(state, R"({"message":"check order 1234","session_id":"bench-1"})");
}
BENCHMARK(BM_ParseQueryBody_FlowBench);

// With a user and parameters of several kinds.
void BM_ParseQueryBody_WithParameters(benchmark::State& state) {
  ParseBody(
      state,
      R"({"message":"请假 3 天，从下周一开始","session_id":"user-42:chat.7","user_id":"u-42",)"
      R"("parameters":{"days":3,"reason":"family","start":"2026-12-01","half_day":false,)"
      R"("approvers":["li","wang"],"meta":{"source":"app","version":2.5}}})");
}
BENCHMARK(BM_ParseQueryBody_WithParameters);

// The answer to bench/flow_path.sh's query (order_status, two parameters).
void BM_AnswerJson_Flow(benchmark::State& state) {
  v1::Final final;
  final.set_answer("Order 1234: pending_payment (total 785.0 USD, ETA 2025-05-20)");
  final.set_route("flow");
  final.set_flow_id("order_status");
  final.set_session_id("bench-1");
  final.set_run_id("ogX38iDI00DAGKm");
  auto& fields = *final.mutable_parameters()->mutable_fields();
  fields["order_id"].set_string_value("1234");
  fields["verbose"].set_bool_value(false);
  for (auto _ : state) {
    std::string out = AnswerJson(final, "ogX38iDI00DAGKm", "bench-1");
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_AnswerJson_Flow);

}  // namespace
}  // namespace wf

BENCHMARK_MAIN();
