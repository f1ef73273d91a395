#include "llm/chat_stream_assembler.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "codec/json_limits.h"

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
  const Status st = a.ApplyChunk(ContentChunk("67890"), c.Fn());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kTooLarge);
  EXPECT_EQ(st.error().message, "LLM answer exceeded 8 bytes");
}

TEST(ChatStreamAssembler, ContentPastTheBoundIsPassedOnUpToIt) {
  // The delta that crosses the bound still brings what fits, cut where a character ends, so
  // the partial answer is as long as the bound allows and never more.
  ChatStreamAssembler a(10);
  Collector c;
  ASSERT_TRUE(a.ApplyData(ContentChunk("12345").dump(), c.Fn()).ok());
  const Status st = a.ApplyData(ContentChunk("67\u00e9\u00e9xyz").dump(), c.Fn());  // 67éé: 6 bytes
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kTooLarge);
  EXPECT_EQ(c.tokens, (std::vector<std::string>{"12345", "67\u00e9"}));  // 9 bytes: é would be 11
}

TEST(ChatStreamAssembler, ToolCallsCountAgainstTheSameBound) {
  // Content and tool calls (ids, names, arguments) share one bound: a model cannot get past it
  // by moving its text into arguments or by opening ever new calls.
  {
    ChatStreamAssembler a(20);
    Collector c;
    ASSERT_TRUE(a.ApplyChunk(ContentChunk("0123456789"), c.Fn()).ok());
    ASSERT_TRUE(a.ApplyChunk(ToolChunk({{"index", 0},
                                        {"id", "c1"},
                                        {"function", {{"name", "w"}, {"arguments", "{\"a\""}}}}),
                             c.Fn())
                    .ok());  // 10 + 2 + 1 + 4 = 17
    const Status st =
        a.ApplyChunk(ToolChunk({{"index", 0}, {"function", {{"arguments", ":1234}"}}}}), c.Fn());
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kTooLarge);
  }
  {
    ChatStreamAssembler a(64);
    Collector c;
    Status st = Status::Ok();
    for (int i = 0; i < 100 && st.ok(); ++i) {
      st = a.ApplyData(
          ToolChunk({{"id", "call_" + std::to_string(i)}, {"function", {{"name", "x"}}}}).dump(),
          c.Fn());
    }
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kTooLarge);
  }
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

// ApplyData reads the common chunks without a DOM (ScanPlainChunk). The reference here is the
// DOM path: ParseBoundedJson, then ApplyChunk. Both must agree on everything observable.
struct Observed {
  std::vector<std::string>
      statuses;  // per chunk: "ok", or the error code (and message if not kLlmError)
  std::vector<std::string> tokens;
  ChatOutcome outcome;
  bool produced_output = false, finished = false, has_usage = false;
};

Observed Run(const std::vector<std::string>& chunks, bool reference, std::size_t max_bytes) {
  ChatStreamAssembler a(max_bytes);
  Observed o;
  const auto on_token = [&o](std::string_view t) { o.tokens.emplace_back(t); };
  for (const std::string& data : chunks) {
    Status st = Status::Ok();
    if (!reference) {
      st = a.ApplyData(data, on_token);
    } else if (Result<nlohmann::json> dom = ParseBoundedJson(data);
               !dom.ok() || !dom->is_object()) {
      st = Status(ErrorCode::kLlmError, "not applied");
    } else {
      st = a.ApplyChunk(*dom, on_token);
    }
    // Messages of a malformed chunk differ by design (the DOM path names the chunk); the rest
    // must match exactly.
    o.statuses.push_back(st.ok() ? "ok"
                         : st.error().code == ErrorCode::kLlmError
                             ? "llm_error"
                             : std::string(WireName(st.error().code)) + ": " + st.error().message);
  }
  o.produced_output = a.produced_output();
  o.finished = a.finished();
  o.has_usage = a.has_usage();
  o.outcome = a.Finish(on_token);
  return o;
}

void ExpectSameAsDom(const std::vector<std::string>& chunks, std::size_t max_bytes = 8u << 20) {
  const Observed fast = Run(chunks, false, max_bytes);
  const Observed dom = Run(chunks, true, max_bytes);
  std::string all;
  for (const std::string& c : chunks) all += c + "\n";
  EXPECT_EQ(fast.statuses, dom.statuses) << all;
  EXPECT_EQ(fast.tokens, dom.tokens) << all;
  EXPECT_EQ(fast.outcome.content, dom.outcome.content) << all;
  EXPECT_EQ(fast.outcome.finish_reason, dom.outcome.finish_reason) << all;
  EXPECT_EQ(fast.outcome.usage.SerializeAsString(), dom.outcome.usage.SerializeAsString()) << all;
  ASSERT_EQ(fast.outcome.tool_calls.size(), dom.outcome.tool_calls.size()) << all;
  for (std::size_t i = 0; i < fast.outcome.tool_calls.size(); ++i) {
    EXPECT_EQ(fast.outcome.tool_calls[i].SerializeAsString(),
              dom.outcome.tool_calls[i].SerializeAsString())
        << all;
  }
  EXPECT_EQ(fast.produced_output, dom.produced_output) << all;
  EXPECT_EQ(fast.finished, dom.finished) << all;
  EXPECT_EQ(fast.has_usage, dom.has_usage) << all;
}

/// Chunks as OpenAI, Azure, vLLM, Ollama, Groq and odd servers send them, and edge cases of
/// every field ScanPlainChunk reads.
std::vector<std::string> ChunkCorpus() {
  return {
      R"({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null})",
      R"({"choices":[{"index":0,"delta":{"content":"Hello "},"finish_reason":null}]})",
      R"({"choices":[{"delta":{"content":"no index"}}]})",
      R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})",
      R"({"choices":[],"usage":{"prompt_tokens":21,"completion_tokens":8,"total_tokens":29}})",
      R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})",
      R"({"choices":[],"usage":{"prompt_tokens":3.9,"completion_tokens":-4,"total_tokens":"7"}})",
      R"({"choices":[],"usage":{"prompt_tokens":1e-400,"completion_tokens":5e9,"total_tokens":1E2}})",
      R"({"choices":[],"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":-0,"total_tokens":null}})",
      R"({"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens":2}})",
      R"({"choices":[],"usage":{}})",
      R"({"choices":[],"usage":[1,2]})",
      R"({"choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]})",
      R"({"choices":[{"index":1,"delta":{"content":"other"}}]})",
      R"({"choices":[{"index":-0,"delta":{"content":"minus zero"}}]})",
      R"({"choices":[{"index":0.0,"delta":{"content":"float zero"}}]})",
      R"({"choices":[{"index":1e0,"delta":{"content":"float one"}}]})",
      R"({"choices":[{"index":"1","delta":{"content":"string index"}}]})",
      R"({"choices":[{"index":null,"delta":{"content":"null index"}}]})",
      R"({"choices":[{"index":99999999999999999999,"delta":{"content":"huge index"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"first"}},{"index":0,"delta":{"content":"second"},"finish_reason":"length"}]})",
      R"({"choices":[{"index":0,"delta":{"content":"a","content":"b","refusal":"c"},"finish_reason":"x","finish_reason":null}]})",
      R"({"choices":[{"index":0,"delta":{"refusal":"I can't"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":null,"refusal":"r"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":42}}]})",
      R"({"choices":[{"index":0,"delta":"text"}]})",
      R"({"choices":[{"index":0,"delta":{"content":"esc \" \\ \/ \b\f\n\r\t \u00e9 \u4f60 \ud83d\ude00"}}]})",
      "\xEF\xBB\xBF"
      R"( {"choices":[{"index":0,"delta":{"content":"bom"}}]} )",
      R"({"choices":[{"index":0,"delta":{"content":"caf\u00)"
      "e9"
      R"("}}]})",
      R"({"choi\u0063es":[{"ind\u0065x":1,"delta":{"cont\u0065nt":"escaped keys"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"dup"}}],"choices":[{"index":0,"delta":{"content":"last"}}]})",
      R"({"choices":{"index":0,"delta":{"content":"not an array"}}})",
      R"({"choices":[1,"two",null,{"delta":{"content":"after junk"}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":"}},{"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"id":"call_9","function":{"name":"h","arguments":"{\"q\":\"caf\u00e9 \\\" \"}"}}]}}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"function":{"arguments":" more"}}]}}]})",
      R"({"choices":[{"delta":{"tool_calls":[{"id":"call_10","function":{"name":"h2"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"o1","function":{"name":"w","arguments":"{}"}},{"index":0,"id":"o2","function":{"name":"w","arguments":"{}"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1.0,"id":"fl","function":{"name":"f"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":-1,"function":{"name":"neg"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":2000,"function":{"name":"far"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":99999999999999999999,"function":{"name":"huge"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":"2","function":{"name":"string index"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":7,"function":{"name":"int id"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":null,"function":null}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":4,"id":true,"function":"f"}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":4,"function":{"name":5,"arguments":null}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":4,"function":{"name":"n1","name":"n2","arguments":3}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":5,"function":{"name":"obj","arguments":{"b":[1,2],"a":"x"}}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[1,null,"x",{"index":6,"function":{"name":"after junk","arguments":""}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"let me check","tool_calls":[{"index":7,"id":"c7","function":{"name":"both","arguments":"{}"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":8,"id":"c8","function":{"name":"big","arguments":"0123456789012345678901234567890123456789"}}]}}]})",
      R"({"choices":[{"index":0,"delta":{"tool_calls":{"index":0}}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"x"}}],"error":null})",
      R"({"error":{"message":"overloaded","type":"server_error"}})",
      R"({"error":"plain"})",
      R"({"error":false,"choices":[{"delta":{"content":"false error"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"x"}}],"x_groq":{"usage":{"prompt_tokens":1}}})",
      R"([{"choices":[]}])",
      R"("just a string")",
      R"({"choices":[{"index":0,"delta":{"content":"unterminated"}})",
      R"({"choices":[{"index":0,"delta":{"content":"trailing"}}]} x)",
      R"({"choices":[{"index":0,"delta":{"content":"bad \x escape"}}]})",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"raw\x01control\"}}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"bad utf8 \xC3\x28\"}}]}",
      R"({"choices":[{"index":0,"delta":{"content":"lone \ud83d surrogate"}}]})",
      R"({"choices":[{"index":0,"delta":{"content":"x"}}],"n":1e999})",
      "",
      "null",
      "{}",
  };
}

TEST(ChatStreamAssembler, ScannedChunksMatchTheDomPathOneByOne) {
  for (const std::string& chunk : ChunkCorpus()) ExpectSameAsDom({chunk});
}

TEST(ChatStreamAssembler, ScannedAnswerMatchesTheDomPath) {
  const std::vector<std::string> corpus = ChunkCorpus();
  ExpectSameAsDom(corpus);
  // The size limit reached in the middle of a chunk's steps.
  ExpectSameAsDom(corpus, 12);
  ExpectSameAsDom(
      {R"({"choices":[{"index":0,"delta":{"content":"12345","refusal":"67890"},"finish_reason":"stop"}]})"},
      8);
  // A character split across chunks, with escapes.
  ExpectSameAsDom({R"({"choices":[{"delta":{"content":"a\u00"}}]})",
                   R"({"choices":[{"delta":{"content":"a)"
                   "\xE4"
                   R"("}}]})",
                   R"({"choices":[{"delta":{"content":")"
                   "\xBD\xA0"
                   R"(b"}}]})"});
}

// Around the nesting limit both paths must take the same side (json_scan stops at the same
// depth as ParseBoundedJson).
TEST(ChatStreamAssembler, ScannedChunksAtTheNestingLimit) {
  for (int depth : {kMaxJsonNesting - 5, kMaxJsonNesting - 4, kMaxJsonNesting - 3}) {
    // {"choices":[{"delta":{"content":"x","deep":[[...]]}}]}: four levels above the deep value.
    const std::string deep = std::string(depth, '[') + std::string(depth, ']');
    ExpectSameAsDom({R"({"choices":[{"delta":{"content":"x","deep":)" + deep + "}}]}"});
  }
}

TEST(ChatStreamAssembler, ScannedMutatedChunksMatchTheDomPath) {
  std::mt19937 rng(20261126);
  const std::string alphabet = "{}[]\",:\\ 0-1eE.truefalsnul\xC3\xA9u";
  for (const std::string& base : ChunkCorpus()) {
    for (int i = 0; i < 300; ++i) {
      std::string text = base;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) {
        const std::size_t at = text.empty() ? 0 : rng() % (text.size() + 1);
        const char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 3) {
          case 0:
            if (at < text.size()) text.erase(at, 1);
            break;
          case 1:
            text.insert(at, 1, c);
            break;
          default:
            if (at < text.size()) text[at] = c;
        }
      }
      ExpectSameAsDom({text});
      if (HasFailure()) return;
    }
  }
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
