// Micro benchmarks of what wf-heavy does with every chunk of a streamed LLM answer: the SSE
// parser splits the body into events, ChatStreamAssembler::ApplyData reads each event's JSON
// chunk and passes its content on as a token.
//
//   build/bin/bench_stream [--benchmark_filter=ApplyData] [--benchmark_min_time=1]
//
// Figures are per CPU second on one thread. The chunks are those the scripted LLM sends, which
// have the shape and size of OpenAI's (`chat.completion.chunk`, ~260 bytes).

#include <benchmark/benchmark.h>

#include <string>
#include <string_view>
#include <vector>

#include "agent/tool_catalog.h"
#include "config/config.h"
#include "llm/chat_request.h"
#include "llm/chat_stream_assembler.h"
#include "llm/sse_parser.h"

namespace wf {
namespace {

std::string Chunk(std::string_view delta, std::string_view finish_reason) {
  return std::string(R"({"choices":[{"delta":)") + std::string(delta) + R"(,"finish_reason":)" +
         std::string(finish_reason) +
         R"(,"index":0,"logprobs":null}],"created":1795731778,)"
         R"("id":"chatcmpl-DO8hBPNubIw2sW5lTlqANVokJdc5j","model":"scripted",)"
         R"("object":"chat.completion.chunk","system_fingerprint":"fp_scripted","usage":null})";
}

/// One whole answer as the scripted LLM streams it: a role chunk, eight content chunks, the
/// finish chunk and the usage chunk.
std::vector<std::string> AnswerChunks() {
  std::vector<std::string> chunks;
  chunks.push_back(Chunk(R"({"content":"","refusal":null,"role":"assistant"})", "null"));
  for (const char* word : {"Hello ", "there, ", "how ", "can ", "I ", "help ", "you ", "today?"}) {
    chunks.push_back(Chunk(std::string(R"({"content":")") + word + "\"}", "null"));
  }
  chunks.push_back(Chunk("{}", R"("stop")"));
  chunks.push_back(
      R"({"choices":[],"created":1795731778,"id":"chatcmpl-DO8hBPNubIw2sW5lTlqANVokJdc5j",)"
      R"("model":"scripted","object":"chat.completion.chunk","system_fingerprint":"fp_scripted",)"
      R"("usage":{"completion_tokens":8,"prompt_tokens":21,"total_tokens":29}})");
  return chunks;
}

void BM_ApplyData_ContentChunk(benchmark::State& state) {
  const std::string chunk = Chunk(R"({"content":"Hello "})", "null");
  std::size_t bytes = 0;
  for (auto _ : state) {
    ChatStreamAssembler assembler;
    Status st = assembler.ApplyData(chunk, [&](std::string_view token) { bytes += token.size(); });
    benchmark::DoNotOptimize(st);
  }
  benchmark::DoNotOptimize(bytes);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(chunk.size()));
}
BENCHMARK(BM_ApplyData_ContentChunk);

/// The eleven chunks of one answer through one assembler, Finish included.
void BM_ApplyData_Answer(benchmark::State& state) {
  const std::vector<std::string> chunks = AnswerChunks();
  std::size_t bytes = 0;
  for (auto _ : state) {
    ChatStreamAssembler assembler;
    const auto on_token = [&](std::string_view token) { bytes += token.size(); };
    for (const std::string& chunk : chunks) {
      Status st = assembler.ApplyData(chunk, on_token);
      benchmark::DoNotOptimize(st);
    }
    ChatOutcome outcome = assembler.Finish(on_token);
    benchmark::DoNotOptimize(outcome);
  }
  benchmark::DoNotOptimize(bytes);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(chunks.size()));
}
BENCHMARK(BM_ApplyData_Answer);

/// A tool call streamed as OpenAI streams one: a chunk with the call's id and name, then its
/// arguments a few characters per chunk (`{"city": "Paris", "unit": "celsius"}` in 12 pieces),
/// then the finish chunk.
void BM_ApplyData_ToolCallStream(benchmark::State& state) {
  std::vector<std::string> chunks;
  chunks.push_back(Chunk(
      R"({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Q3xVb1","type":)"
      R"("function","function":{"name":"weather","arguments":""}}]})",
      "null"));
  for (const char* piece : {R"({\")", R"(city)", R"(\":)", R"( \")", R"(Par)", R"(is)", R"(\",)",
                            R"( \")", R"(unit)", R"(\":)", R"( \"cel)", R"(sius\"})"}) {
    chunks.push_back(Chunk(
        std::string(R"({"tool_calls":[{"index":0,"function":{"arguments":")") + piece + R"("}}]})",
        "null"));
  }
  chunks.push_back(Chunk("{}", R"("tool_calls")"));
  for (auto _ : state) {
    ChatStreamAssembler assembler;
    for (const std::string& chunk : chunks) {
      Status st = assembler.ApplyData(chunk, nullptr);
      benchmark::DoNotOptimize(st);
    }
    ChatOutcome outcome = assembler.Finish(nullptr);
    if (outcome.tool_calls.size() != 1 ||
        outcome.tool_calls[0].arguments_json() != R"({"city": "Paris", "unit": "celsius"})") {
      state.SkipWithError("the call was not assembled");
    }
    benchmark::DoNotOptimize(outcome);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(chunks.size()));
}
BENCHMARK(BM_ApplyData_ToolCallStream);

/// The answer's SSE body (`data: ...` events, then `data: [DONE]`) split into events.
void BM_SseParser_Answer(benchmark::State& state) {
  std::string body;
  for (const std::string& chunk : AnswerChunks()) body += "data: " + chunk + "\n\n";
  body += "data: [DONE]\n\n";
  for (auto _ : state) {
    SseParser parser;
    std::vector<SseEvent> events;
    Status st = parser.Feed(body, events);
    benchmark::DoNotOptimize(st);
    benchmark::DoNotOptimize(events);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(BM_SseParser_Answer);

wf::v1::ChatMessage Message(const char* role, std::string content) {
  wf::v1::ChatMessage m;
  m.set_role(role);
  m.set_content(std::move(content));
  m.set_run_id("r-6b1f0d2a9c");
  m.set_created_unix_ms(1795731778000);
  return m;
}

/// The request body of a turn's first LLM call, as AgentTurn::StartCall and HttpLlmClient build
/// it: the demo config's agent (system prompt, two tools, nine flows, two skills) and a session
/// with three earlier turns.
void BM_ChatRequest_FirstCall(benchmark::State& state) {
  auto config = LoadConfigFile(WF_DEMO_CONFIG);
  if (!config.ok()) {
    state.SkipWithError(config.error().message.c_str());
    return;
  }
  const ToolCatalog catalog = ToolCatalog::ForAgent(**config);
  std::vector<wf::v1::ChatMessage> prefix;
  prefix.push_back(Message("system", (*config)->agent.system_prompt));
  for (const char* q : {"I want to take leave next Monday", "check order 1234", "thanks"}) {
    prefix.push_back(Message("user", q));
    prefix.push_back(Message("assistant", std::string("Done: ") + q +
                                              ". Is there anything else I can help you with?"));
  }
  prefix.push_back(Message("user", "what is the weather like in Paris today?"));
  std::size_t bytes = 0;
  for (auto _ : state) {
    ChatRequestOptions options;
    options.messages = prefix;
    options.tools = catalog.Tools();
    options.temperature = 0.2;
    const std::string body = EncodeChatRequest(options, "gpt-4o-mini");
    bytes += body.size();
    benchmark::DoNotOptimize(body.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}
BENCHMARK(BM_ChatRequest_FirstCall);

}  // namespace
}  // namespace wf

BENCHMARK_MAIN();
