#include "llm/chat_stream_assembler.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wf {
namespace {

nlohmann::json ContentChunk(const std::string& text) {
  return {{"choices", {{{"index", 0}, {"delta", {{"content", text}}}, {"finish_reason", nullptr}}}}};
}

nlohmann::json ToolChunk(nlohmann::json tool_call_delta) {
  return {{"choices", {{{"index", 0}, {"delta", {{"tool_calls", {std::move(tool_call_delta)}}}}}}}};
}

nlohmann::json FinishChunk(const std::string& reason) {
  return {{"choices", {{{"index", 0}, {"delta", nlohmann::json::object()}, {"finish_reason", reason}}}}};
}

struct Collector {
  std::vector<std::string> tokens;
  ChatStreamAssembler::TokenFn Fn() {
    return [this](std::string_view t) { tokens.emplace_back(t); };
  }
};

TEST(ChatStreamAssembler, ContentTokensUsageAndFinish) {
  ChatStreamAssembler a;
  Collector c;
  ASSERT_TRUE(a.ApplyChunk({{"choices", {{{"index", 0}, {"delta", {{"role", "assistant"}}}}}}},
                           c.Fn()).ok());
  EXPECT_FALSE(a.produced_output());
  ASSERT_TRUE(a.ApplyChunk(ContentChunk("Hello"), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ContentChunk(" world"), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(FinishChunk("stop"), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyData(
                   R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}})",
                   c.Fn()).ok());
  EXPECT_TRUE(a.produced_output());
  EXPECT_TRUE(a.finished());
  EXPECT_TRUE(a.has_usage());
  const ChatOutcome out = a.Finish(c.Fn());
  EXPECT_EQ(c.tokens, (std::vector<std::string>{"Hello", " world"}));
  EXPECT_EQ(out.content, "Hello world");
  EXPECT_EQ(out.finish_reason, "stop");
  EXPECT_EQ(out.usage.prompt_tokens(), 12u);
  EXPECT_EQ(out.usage.completion_tokens(), 2u);
  EXPECT_EQ(out.usage.total_tokens(), 14u);
  EXPECT_TRUE(out.tool_calls.empty());
}

TEST(ChatStreamAssembler, TokensSplitInsideACharacterAreHeldBack) {
  ChatStreamAssembler a;
  Collector c;
  const std::string ni = "\xE4\xBD\xA0";  // 你
  ASSERT_TRUE(a.ApplyChunk(ContentChunk("a" + ni.substr(0, 1)), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ContentChunk(ni.substr(1, 1)), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ContentChunk(ni.substr(2) + "b"), c.Fn()).ok());
  const ChatOutcome out = a.Finish(c.Fn());
  EXPECT_EQ(c.tokens, (std::vector<std::string>{"a", ni + "b"}));
  EXPECT_EQ(out.content, "a" + ni + "b");
}

// Ollama's OpenAI-compatible API numbers every tool call of an answer 0 (ollama/ollama#15457):
// the calls are told apart by their ids. They used to be merged into one call with the first
// name and the arguments of all of them concatenated.
TEST(ChatStreamAssembler, CallsThatShareIndexZeroAreToldApartByTheirIds) {
  ChatStreamAssembler a;
  Collector c;
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0},
                                      {"id", "call_x"},
                                      {"type", "function"},
                                      {"function", {{"name", "weather"}, {"arguments", ""}}}}),
                           c.Fn())
                  .ok());
  ASSERT_TRUE(
      a.ApplyChunk(ToolChunk({{"index", 0}, {"function", {{"arguments", "{\"city\":"}}}}), c.Fn())
          .ok());
  ASSERT_TRUE(
      a.ApplyChunk(ToolChunk({{"index", 0}, {"function", {{"arguments", "\"Rome\"}"}}}}), c.Fn())
          .ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0},
                                      {"id", "call_y"},
                                      {"type", "function"},
                                      {"function", {{"name", "time"}, {"arguments", "{\"tz\""}}}}),
                           c.Fn())
                  .ok());
  // The same id again (some servers repeat it) continues that call.
  ASSERT_TRUE(
      a.ApplyChunk(
           ToolChunk({{"index", 0}, {"id", "call_y"}, {"function", {{"arguments", ":\"UTC\"}"}}}}),
           c.Fn())
          .ok());
  ASSERT_TRUE(a.ApplyChunk(FinishChunk("tool_calls"), c.Fn()).ok());
  const ChatOutcome out = a.Finish(c.Fn());
  ASSERT_EQ(out.tool_calls.size(), 2u);
  EXPECT_EQ(out.tool_calls[0].id(), "call_x");
  EXPECT_EQ(out.tool_calls[0].name(), "weather");
  EXPECT_EQ(out.tool_calls[0].arguments_json(), "{\"city\":\"Rome\"}");
  EXPECT_EQ(out.tool_calls[1].id(), "call_y");
  EXPECT_EQ(out.tool_calls[1].name(), "time");
  EXPECT_EQ(out.tool_calls[1].arguments_json(), "{\"tz\":\"UTC\"}");
}

TEST(ChatStreamAssembler, ParallelToolCallsWithInterleavedIndexes) {
  ChatStreamAssembler a;
  Collector c;
  const std::string city = "\xE5\x8C\x97\xE4\xBA\xAC";  // 北京
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 1}, {"id", "call_b"}, {"type", "function"},
                                      {"function", {{"name", "time"}, {"arguments", ""}}}}),
                           c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0}, {"id", "call_a"}, {"type", "function"},
                                      {"function", {{"name", "weather"}, {"arguments", "{\"ci"}}}}),
                           c.Fn()).ok());
  EXPECT_TRUE(a.produced_output());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 1}, {"function", {{"arguments", "{\"tz\":"}}}}),
                           c.Fn()).ok());
  // The argument fragments end inside a UTF-8 character: bytes are concatenated as they come.
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0},
                                      {"function", {{"arguments", "ty\":\"" + city.substr(0, 2)}}}}),
                           c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0},
                                      {"function", {{"arguments", city.substr(2) + "\"}"}}}}),
                           c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 1},
                                      {"function", {{"name", "ignored"}, {"arguments", "\"UTC\"}"}}}}),
                           c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(FinishChunk("tool_calls"), c.Fn()).ok());
  const ChatOutcome out = a.Finish(c.Fn());
  EXPECT_TRUE(c.tokens.empty());
  EXPECT_EQ(out.finish_reason, "tool_calls");
  ASSERT_EQ(out.tool_calls.size(), 2u);
  EXPECT_EQ(out.tool_calls[0].id(), "call_a");
  EXPECT_EQ(out.tool_calls[0].name(), "weather");
  EXPECT_EQ(out.tool_calls[0].arguments_json(), "{\"city\":\"" + city + "\"}");
  EXPECT_EQ(nlohmann::json::parse(out.tool_calls[0].arguments_json())["city"], city);
  EXPECT_EQ(out.tool_calls[1].id(), "call_b");
  EXPECT_EQ(out.tool_calls[1].name(), "time");
  EXPECT_EQ(out.tool_calls[1].arguments_json(), "{\"tz\":\"UTC\"}");
}

TEST(ChatStreamAssembler, DeltasWithoutIndexContinueTheLastCallUnlessNewId) {
  ChatStreamAssembler a;
  Collector c;
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"id", "x1"}, {"function", {{"name", "f"}, {"arguments", "{"}}}}),
                           c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"function", {{"arguments", "}"}}}}), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"id", "x2"}, {"function", {{"name", "g"}, {"arguments", {{"k", 1}}}}}}),
                           c.Fn()).ok());
  const ChatOutcome out = a.Finish(c.Fn());
  ASSERT_EQ(out.tool_calls.size(), 2u);
  EXPECT_EQ(out.tool_calls[0].arguments_json(), "{}");
  EXPECT_EQ(out.tool_calls[1].name(), "g");
  EXPECT_EQ(out.tool_calls[1].arguments_json(), "{\"k\":1}");
}

TEST(ChatStreamAssembler, ContentAndToolCallsTogether) {
  ChatStreamAssembler a;
  Collector c;
  ASSERT_TRUE(a.ApplyChunk(ContentChunk("Let me check."), c.Fn()).ok());
  ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0}, {"id", "c"}, {"function", {{"name", "f"}, {"arguments", "{}"}}}}),
                           c.Fn()).ok());
  const ChatOutcome out = a.Finish(c.Fn());
  EXPECT_EQ(out.content, "Let me check.");
  ASSERT_EQ(out.tool_calls.size(), 1u);
}

TEST(ChatStreamAssembler, ErrorChunkAndMalformedData) {
  ChatStreamAssembler a;
  Collector c;
  Status st = a.ApplyData(R"({"error":{"message":"overloaded","type":"server_error"}})", c.Fn());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kLlmError);
  EXPECT_NE(st.error().message.find("overloaded"), std::string::npos);
  EXPECT_EQ(a.ApplyData("not json", c.Fn()).error().code, ErrorCode::kLlmError);
  EXPECT_EQ(a.ApplyData("[1,2]", c.Fn()).error().code, ErrorCode::kLlmError);
}

TEST(ChatStreamAssembler, OtherChoicesAreIgnored) {
  ChatStreamAssembler a;
  Collector c;
  ASSERT_TRUE(a.ApplyChunk({{"choices", {{{"index", 1}, {"delta", {{"content", "other"}}}}}}}, c.Fn()).ok());
  EXPECT_EQ(a.Finish(c.Fn()).content, "");
}

TEST(ChatStreamAssembler, SizeLimit) {
  ChatStreamAssembler a(8);
  Collector c;
  ASSERT_TRUE(a.ApplyChunk(ContentChunk("12345"), c.Fn()).ok());
  EXPECT_EQ(a.ApplyChunk(ContentChunk("67890"), c.Fn()).error().code, ErrorCode::kTooLarge);
}

TEST(ChatStreamAssembler, NonStreamedCompletion) {
  ChatStreamAssembler a;
  Collector c;
  const auto completion = nlohmann::json::parse(R"({
    "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
      "tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                    {"id":"c2","type":"function","function":{"name":"g","arguments":"{}"}}]}}],
    "usage":{"prompt_tokens":3,"completion_tokens":4}})");
  ASSERT_TRUE(a.ApplyCompletion(completion, c.Fn()).ok());
  const ChatOutcome out = a.Finish(c.Fn());
  ASSERT_EQ(out.tool_calls.size(), 2u);
  EXPECT_EQ(out.tool_calls[0].name(), "f");
  EXPECT_EQ(out.tool_calls[1].id(), "c2");
  EXPECT_EQ(out.usage.total_tokens(), 7u);
  EXPECT_EQ(out.finish_reason, "tool_calls");
}

// A chunk nested far deeper than kMaxJsonNesting is refused before it is read: an error object or
// object arguments that deep used to be serialized recursively and overflowed the stack.
TEST(ChatStreamAssembler, DeeplyNestedChunksAreRefused) {
  constexpr int kDepth = 200000;
  const std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
  ChatStreamAssembler a;
  Collector c;
  Status error = a.ApplyData(R"({"error":)" + deep + "}", c.Fn());
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.error().code, ErrorCode::kLlmError);
  EXPECT_NE(error.error().message.find("nested deeper than"), std::string::npos)
      << error.error().message;
  ChatStreamAssembler b;
  Status args = b.ApplyData(
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":)" +
          deep + "}}]}}]}",
      c.Fn());
  ASSERT_FALSE(args.ok());
  EXPECT_EQ(args.error().code, ErrorCode::kLlmError);
  // An ordinary chunk still passes.
  EXPECT_TRUE(b.ApplyChunk(ContentChunk("fine"), c.Fn()).ok());
}

// Some servers and proxies echo the API key they received in their errors: never shown, not
// even a prefix of it when the message is cut.
TEST(UpstreamErrorMessage, RedactsTheSecretBeforeCutting) {
  const std::string key = "sk-live-0123456789abcdef0123456789abcdef";
  const std::string body =
      R"({"error":{"message":"Invalid proxy server token passed. Received API Key = )" + key +
      R"(, Key Hash (Token) = abc"}})";
  const std::string message = UpstreamErrorMessage(body, 300, key);
  EXPECT_EQ(message.find(key), std::string::npos) << message;
  EXPECT_NE(message.find("Received API Key = ***"), std::string::npos) << message;
  const std::string cut = UpstreamErrorMessage(body, 70, key);
  EXPECT_EQ(cut.find("sk-live"), std::string::npos) << cut;
  ChatStreamAssembler a(1u << 20, key);
  Collector c;
  Status streamed = a.ApplyData(body, c.Fn());
  ASSERT_FALSE(streamed.ok());
  EXPECT_EQ(streamed.error().message.find(key), std::string::npos) << streamed.error().message;
}

TEST(UpstreamErrorMessage, ReadsOpenAiErrorsAndCuts) {
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":{"message":"Invalid model","code":"x"}})"), "Invalid model");
  EXPECT_EQ(UpstreamErrorMessage(R"({"error":"nope"})"), "nope");
  EXPECT_EQ(UpstreamErrorMessage("plain text"), "plain text");
  EXPECT_EQ(UpstreamErrorMessage(std::string(400, 'x'), 10), std::string(10, 'x') + "...");
}

}  // namespace
}  // namespace wf
