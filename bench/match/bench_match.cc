// Micro benchmarks of the lightweight worker's pure hot path: deciding which flow a message
// triggers (FlowMatcher over 1,000 generated patterns, each with a named group), resolving its
// parameters and rendering the outbound request and the answer.
//
//   build/bin/bench_match [--benchmark_filter=FindMatch] [--benchmark_min_time=2]
//
// Single-thread figures are per CPU second (items_per_second = matches/s on one core); the
// "threads:2" variants use wall-clock time, i.e. the throughput of the whole process.

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "matching/flow_matcher.h"
#include "templating/template.h"

namespace wf {
namespace {

constexpr int kFlows = 1000;

/// 1,000 flows, half English and half Chinese, each with one pattern and one named group.
std::vector<FlowConfig> GeneratedFlows() {
  static const char* kVerbs[] = {"check", "show", "cancel", "track", "renew"};
  static const char* kNouns[] = {"order", "ticket", "invoice", "parcel", "contract"};
  static const char* kZhVerbs[] = {"查询", "取消", "跟踪", "续订", "查看"};
  static const char* kZhNouns[] = {"订单", "工单", "发票", "包裹", "合同"};
  std::vector<FlowConfig> flows;
  flows.reserve(kFlows);
  for (int i = 0; i < kFlows; ++i) {
    FlowConfig flow;
    flow.flow_id = "flow_" + std::to_string(i);
    std::string n = std::to_string(i);
    if (i % 2 == 0) {
      flow.trigger_patterns.push_back(std::string(kVerbs[i % 5]) + "\\s+(?:my\\s+)?" +
                                      kNouns[(i / 5) % 5] + "\\s+type" + n + "\\s+(?P<id>\\d+)");
    } else {
      flow.trigger_patterns.push_back(std::string("(?:") + kZhVerbs[i % 5] + "|帮我" +
                                      kZhVerbs[i % 5] + ")" + kZhNouns[(i / 5) % 5] + "类型" + n +
                                      "号\\s*(?P<id>\\d+)");
    }
    flow.endpoint.url = "http://h/";
    flows.push_back(std::move(flow));
  }
  return flows;
}

const FlowMatcher& Matcher() {
  static std::shared_ptr<const FlowMatcher> matcher = [] {
    auto built = FlowMatcher::Build(GeneratedFlows());
    if (!built.ok()) std::abort();
    return *built;
  }();
  return *matcher;
}

std::string Pad(std::string core) {
  // About 200 bytes: filler around the part that matters.
  std::string filler =
      "Hello there, I hope you are doing well today and that the weather is nice. ";
  std::string out = filler + core + " Thanks a lot for your help, have a wonderful day!";
  while (out.size() < 200) out += " Cheers.";
  return out;
}

void RunFindMatch(benchmark::State& state, const std::string& message, bool expect_match,
                  std::size_t expect_flow) {
  const FlowMatcher& matcher = Matcher();
  auto check = matcher.FindMatch(message);
  if (check.has_value() != expect_match || (check && check->flow_index != expect_flow)) {
    state.SkipWithError("unexpected match result");
    return;
  }
  for (auto _ : state) {
    auto match = matcher.FindMatch(message);
    benchmark::DoNotOptimize(match);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::to_string(message.size()) + " B message, " +
                 std::to_string(matcher.pattern_count()) + " patterns");
}

void BM_FindMatch_NoMatch(benchmark::State& state) {
  RunFindMatch(state, Pad("Could you tell me something about the history of the order of knights?"),
               false, 0);
}
BENCHMARK(BM_FindMatch_NoMatch);
BENCHMARK(BM_FindMatch_NoMatch)->Threads(2)->UseRealTime();

void BM_FindMatch_MiddleFlow(benchmark::State& state) {
  // flow_500: "check\s+(?:my\s+)?(order)\s+type500\s+(?P<id>\d+)" (500 % 5 = 0, (500/5) % 5 = 0)
  RunFindMatch(state, Pad("Please check my order type500 123456 for me."), true, 500);
}
BENCHMARK(BM_FindMatch_MiddleFlow);
BENCHMARK(BM_FindMatch_MiddleFlow)->Threads(2)->UseRealTime();

void BM_FindMatch_LastFlowChinese(benchmark::State& state) {
  // flow_999: 999 % 5 = 4 -> 查看, (999/5) % 5 = 4 -> 合同
  std::string message = "你好，麻烦帮我查看合同类型999号 20240601 的状态，谢谢！";
  message = Pad(message);
  RunFindMatch(state, message, true, 999);
}
BENCHMARK(BM_FindMatch_LastFlowChinese);
BENCHMARK(BM_FindMatch_LastFlowChinese)->Threads(2)->UseRealTime();

void BM_FindMatch_ShortMessage(benchmark::State& state) {
  RunFindMatch(state, "check my order type500 123456", true, 500);
}
BENCHMARK(BM_FindMatch_ShortMessage);

void BM_BuildMatcher(benchmark::State& state) {
  auto flows = GeneratedFlows();
  for (auto _ : state) {
    auto built = FlowMatcher::Build(flows);
    benchmark::DoNotOptimize(built);
  }
  state.SetLabel(std::to_string(kFlows) + " patterns");
}
BENCHMARK(BM_BuildMatcher)->Unit(benchmark::kMillisecond);

void BM_ResolveParameters(benchmark::State& state) {
  std::vector<ParameterSpec> specs(3);
  specs[0].name = "order_id";
  specs[0].type = "integer";
  specs[0].required = true;
  specs[1].name = "verbose";
  specs[1].type = "boolean";
  specs[1].default_value = false;
  specs[2].name = "lang";
  specs[2].type = "string";
  specs[2].default_value = "zh";
  nlohmann::json captures = {{"order_id", "123456"}};
  nlohmann::json request = {{"verbose", "true"}};
  for (auto _ : state) {
    auto params = ResolveParameters(specs, captures, request);
    benchmark::DoNotOptimize(params);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ResolveParameters);

nlohmann::json Values() {
  return {{"order_id", 123456},
          {"verbose", true},
          {"city", "北京 朝阳区"},
          {"session_id", "sess-0123456789abcdef"},
          {"days", 3},
          {"user_message", "我想请假3天，下周一开始，家里有事需要处理。"}};
}

void BM_EndpointRender_Get(benchmark::State& state) {
  EndpointConfig e;
  e.url = "http://orders.internal/api/orders/{order_id}?verbose={verbose}&city={city}";
  e.headers = {{"X-Session", "{session_id}"}, {"Accept", "application/json"}};
  auto t = EndpointTemplate::Compile(e);
  nlohmann::json values = Values();
  for (auto _ : state) {
    auto r = t->Render(values);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EndpointRender_Get);

void BM_EndpointRender_PostBody(benchmark::State& state) {
  EndpointConfig e;
  e.url = "http://hr.internal/api/leave";
  e.method = "POST";
  e.headers = {{"X-Session", "{session_id}"}};
  e.body = nlohmann::json::parse(
      R"J({"text": "{user_message}", "session": "{session_id}", "days": "{days}",
          "meta": {"source": "wf", "note": "requested via chat ({days} days)"}})J");
  auto t = EndpointTemplate::Compile(e);
  nlohmann::json values = Values();
  for (auto _ : state) {
    auto r = t->Render(values);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EndpointRender_PostBody);

/// Renders `t` over `values` and `body` in the benchmark loop; labels the run with the body size.
void RunResponseRender(benchmark::State& state, const ResponseTemplate& t,
                       const nlohmann::json& values, const std::string& body) {
  for (auto _ : state) {
    std::string out = t.Render(values, body);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::to_string(body.size()) + " B JSON body");
}

void BM_ResponseRender_Field(benchmark::State& state) {
  auto t =
      ResponseTemplate::Compile("订单 {order_id}: {result.status}，预计 {result.eta.days} 天送达");
  std::string body = R"({"status": "shipped", "eta": {"days": 2}, "items": [)";
  for (int i = 0; i < 10; ++i)
    body += std::string(i ? "," : "") + R"({"sku": "A-)" + std::to_string(i) + R"(", "qty": 1})";
  body += "]}";
  RunResponseRender(state, *t, Values(), body);
}
BENCHMARK(BM_ResponseRender_Field);

// The demo's order_status answer (config/workflow_config.json) over wf-demo-api's body for order
// 1234, as the flow benchmark renders it on every request: four fields, the last at the end.
void BM_ResponseRender_DemoOrder(benchmark::State& state) {
  auto t = ResponseTemplate::Compile(
      "Order {order_id}: {result.status} (total {result.total} {result.currency}, ETA "
      "{result.eta})");
  const std::string body =
      R"({"order_id":"1234","status":"pending_payment","items":[{"sku":"SKU-1003","name":)"
      R"("Laptop Stand","quantity":2,"unit_price":34.0},{"sku":"SKU-1006","name":"27\" 4K )"
      R"(Monitor","quantity":3,"unit_price":239.0}],"total":785.0,"currency":"USD",)"
      R"("eta":"2025-05-20"})";
  RunResponseRender(state, *t, {{"order_id", "1234"}, {"verbose", false}}, body);
}
BENCHMARK(BM_ResponseRender_DemoOrder);

void BM_ResponseRender_WholeBody(benchmark::State& state) {
  auto t = ResponseTemplate::Compile("✅ 已提交\n\n{result}");
  std::string body = R"({"status": "submitted", "request_id": "lr-2024-000123"})";
  RunResponseRender(state, *t, Values(), body);
}
BENCHMARK(BM_ResponseRender_WholeBody);

}  // namespace
}  // namespace wf

BENCHMARK_MAIN();
