#include "llm/chat_request.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "llm/utf8.h"

namespace wf {
namespace {

using nlohmann::json;

wf::v1::ChatMessage Msg(const std::string& role, const std::string& content) {
  wf::v1::ChatMessage m;
  m.set_role(role);
  m.set_content(content);
  return m;
}

std::shared_ptr<const ChatTools> Tools(std::vector<ChatToolSpec> specs) {
  return std::make_shared<const ChatTools>(std::move(specs));
}

json Encoded(const ChatRequestOptions& o, std::string_view default_model = "m") {
  return json::parse(EncodeChatRequest(o, default_model));  // throws (fails) when not JSON
}

TEST(ChatRequest, FullRequestShape) {
  ChatRequestOptions o;
  o.messages.push_back(Msg("system", "be brief"));
  o.messages.push_back(Msg("user", "weather in Paris?"));
  wf::v1::ChatMessage assistant = Msg("assistant", "");
  auto* call = assistant.add_tool_calls();
  call->set_id("call_1");
  call->set_name("weather");
  call->set_arguments_json("{\"city\":\"Paris\"}");
  call->set_kind("tool");
  o.messages.push_back(assistant);
  wf::v1::ChatMessage tool = Msg("tool", "sunny");
  tool.set_name("weather");
  tool.set_tool_call_id("call_1");
  o.messages.push_back(tool);
  o.tools =
      Tools({ChatToolSpec{"weather",
                          "Current weather",
                          {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}},
             ChatToolSpec{"noargs", "", nullptr}});
  o.temperature = 0.2;

  const json j = Encoded(o, "gpt-test");
  EXPECT_EQ(j["model"], "gpt-test");
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_DOUBLE_EQ(j["temperature"].get<double>(), 0.2);
  EXPECT_EQ(j["tool_choice"], "auto");
  ASSERT_EQ(j["messages"].size(), 4u);
  EXPECT_EQ(j["messages"][0], (json{{"role", "system"}, {"content", "be brief"}}));
  EXPECT_TRUE(j["messages"][2]["content"].is_null());
  EXPECT_EQ(j["messages"][2]["tool_calls"][0],
            (json{{"id", "call_1"},
                  {"type", "function"},
                  {"function", {{"name", "weather"}, {"arguments", "{\"city\":\"Paris\"}"}}}}));
  EXPECT_EQ(j["messages"][3],
            (json{{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "sunny"}}));
  ASSERT_EQ(j["tools"].size(), 2u);
  EXPECT_EQ(j["tools"][0]["type"], "function");
  EXPECT_EQ(j["tools"][0]["function"]["name"], "weather");
  EXPECT_EQ(j["tools"][0]["function"]["description"], "Current weather");
  EXPECT_EQ(j["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
  EXPECT_FALSE(j["tools"][1]["function"].contains("description"));
  EXPECT_EQ(j["tools"][1]["function"]["parameters"],
            (json{{"type", "object"}, {"properties", json::object()}}));
  EXPECT_FALSE(j.contains("response_format"));
}

TEST(ChatRequest, ExactTextOfASmallRequest) {
  ChatRequestOptions o;
  o.messages.push_back(Msg("user", "hi \"you\"\n"));
  o.tools = Tools({ChatToolSpec{"t", "d", {{"type", "object"}, {"required", {"a"}}}}});
  o.temperature = 0.5;
  EXPECT_EQ(EncodeChatRequest(o, "m"),
            R"({"model":"m","messages":[{"role":"user","content":"hi \"you\"\n"}],)"
            R"("tools":[{"type":"function","function":{"name":"t","description":"d",)"
            R"("parameters":{"required":["a"],"type":"object"}}}],"tool_choice":"auto",)"
            R"("temperature":0.5,"stream":true,"stream_options":{"include_usage":true}})");
}

TEST(ChatRequest, AssistantTextNextToToolCallsIsKept) {
  ChatRequestOptions o;
  wf::v1::ChatMessage assistant = Msg("assistant", "Let me check.");
  assistant.add_tool_calls()->set_name("time");  // no id, no arguments
  o.messages.push_back(assistant);
  const json j = Encoded(o);
  EXPECT_EQ(j["messages"][0]["content"], "Let me check.");
  EXPECT_EQ(j["messages"][0]["tool_calls"][0]["id"], "");
  EXPECT_EQ(j["messages"][0]["tool_calls"][0]["function"]["arguments"], "{}");
}

TEST(ChatRequest, NoToolsMeansNoToolChoice) {
  ChatRequestOptions o;
  o.model = "m1";
  o.messages.push_back(Msg("user", "hi"));
  for (auto tools : {std::shared_ptr<const ChatTools>(), Tools({})}) {
    o.tools = tools;
    const json j = Encoded(o, "default");
    EXPECT_EQ(j["model"], "m1");
    EXPECT_FALSE(j.contains("tools"));
    EXPECT_FALSE(j.contains("tool_choice"));
    EXPECT_FALSE(j.contains("temperature"));
  }
  EXPECT_EQ(Encoded(ChatRequestOptions{})["messages"], json::array());
}

TEST(ChatRequest, JsonSchemaResponseFormat) {
  ChatRequestOptions o;
  o.messages.push_back(Msg("user", "x"));
  o.output_schema = json{{"type", "object"}, {"required", {"a"}}};
  o.output_schema_name = "extract.v1";
  json j = Encoded(o);
  EXPECT_EQ(j["response_format"]["type"], "json_schema");
  EXPECT_EQ(j["response_format"]["json_schema"]["name"], "extract_v1");
  EXPECT_EQ(j["response_format"]["json_schema"]["schema"]["required"][0], "a");
  o.output_schema_name = "";
  EXPECT_EQ(Encoded(o)["response_format"]["json_schema"]["name"], "output");

  ChatRequestOptions o2;
  o2.messages.push_back(Msg("user", "x"));
  o2.json_object = true;
  EXPECT_EQ(Encoded(o2)["response_format"], (json{{"type", "json_object"}}));
}

TEST(ChatRequest, InvalidUtf8AndControlCharactersAnywhereStillGiveValidJson) {
  const std::string bad = "bad \xE4\xBD \x01\x1F\x7F \"q\" \\ \xFF/";
  const std::string repaired = SanitizeUtf8(bad);
  ChatRequestOptions o;
  o.model = bad;
  o.messages.push_back(Msg(bad, bad));
  wf::v1::ChatMessage tool = Msg("tool", bad);
  tool.set_tool_call_id(bad);
  o.messages.push_back(tool);
  wf::v1::ChatMessage assistant = Msg("assistant", bad);
  auto* call = assistant.add_tool_calls();
  call->set_id(bad);
  call->set_name(bad);
  call->set_arguments_json(bad);
  o.messages.push_back(assistant);
  o.tools = Tools({ChatToolSpec{bad, bad, {{"type", "object"}, {"description", bad}}}});
  o.output_schema = json{{"description", bad}};
  const json j = Encoded(o);
  EXPECT_EQ(j["model"], repaired);
  EXPECT_EQ(j["messages"][0], (json{{"role", repaired}, {"content", repaired}}));
  EXPECT_EQ(j["messages"][1]["tool_call_id"], repaired);
  EXPECT_EQ(j["messages"][1]["content"], repaired);
  EXPECT_EQ(j["messages"][2]["content"], repaired);
  EXPECT_EQ(j["messages"][2]["tool_calls"][0]["id"], repaired);
  EXPECT_EQ(j["messages"][2]["tool_calls"][0]["function"]["name"], repaired);
  EXPECT_EQ(j["messages"][2]["tool_calls"][0]["function"]["arguments"], repaired);
  EXPECT_EQ(j["tools"][0]["function"]["name"], repaired);
  EXPECT_EQ(j["tools"][0]["function"]["description"], repaired);
  // Strings inside schemas are dumped by nlohmann, which may replace an invalid sequence by
  // one U+FFFD where SanitizeUtf8 gives one per byte: valid JSON either way.
  EXPECT_EQ(j["tools"][0]["function"]["parameters"]["description"].get<std::string>().rfind(
                "bad \xEF\xBF\xBD", 0),
            0u);
  EXPECT_EQ(j["response_format"]["json_schema"]["schema"]["description"].get<std::string>().rfind(
                "bad \xEF\xBF\xBD", 0),
            0u);
}

/// The request as a DOM, built field by field the way the OpenAI reference shows it: the oracle
/// the encoder's parsed output is compared with.
json Reference(const ChatRequestOptions& o, const std::string& default_model) {
  json body;
  body["model"] = SanitizeUtf8(o.model.empty() ? default_model : o.model);
  body["messages"] = json::array();
  for (const auto& message : o.messages) {
    json m{{"role", SanitizeUtf8(message.role())}};
    if (message.role() == "tool") {
      m["tool_call_id"] = SanitizeUtf8(message.tool_call_id());
      m["content"] = SanitizeUtf8(message.content());
    } else if (message.role() == "assistant" && message.tool_calls_size() > 0) {
      m["content"] =
          message.content().empty() ? json(nullptr) : json(SanitizeUtf8(message.content()));
      m["tool_calls"] = json::array();
      for (const auto& call : message.tool_calls()) {
        const std::string args = call.arguments_json().empty() ? "{}" : call.arguments_json();
        m["tool_calls"].push_back(
            {{"id", SanitizeUtf8(call.id())},
             {"type", "function"},
             {"function",
              {{"name", SanitizeUtf8(call.name())}, {"arguments", SanitizeUtf8(args)}}}});
      }
    } else {
      m["content"] = SanitizeUtf8(message.content());
    }
    body["messages"].push_back(std::move(m));
  }
  if (o.tools && !o.tools->empty()) {
    body["tools"] = json::array();
    for (const auto& tool : o.tools->specs()) {
      json fn{{"name", SanitizeUtf8(tool.name)}};
      if (!tool.description.empty()) fn["description"] = SanitizeUtf8(tool.description);
      fn["parameters"] = tool.parameters.is_object() && !tool.parameters.empty()
                             ? tool.parameters
                             : json{{"type", "object"}, {"properties", json::object()}};
      body["tools"].push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    body["tool_choice"] = "auto";
  }
  if (o.temperature) body["temperature"] = *o.temperature;
  if (o.json_object) body["response_format"] = {{"type", "json_object"}};
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  return body;
}

TEST(ChatRequest, RandomConversationsEncodeAsTheReferenceDom) {
  std::mt19937 rng(20261127);
  const std::string alphabet = std::string("aZ09 _-{}[]:,\"\\/\n\r\t\b\f") +
                               std::string("\x00\x01\x1F\x7F", 4) +
                               "\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80\xFF\xC0\xED\xA0\x80";
  auto text = [&](int max) {
    std::string s;
    const int n = std::uniform_int_distribution<int>(0, max)(rng);
    for (int i = 0; i < n; ++i) s.push_back(alphabet[rng() % alphabet.size()]);
    return s;
  };
  const char* roles[] = {"system", "user", "assistant", "tool"};
  for (int round = 0; round < 2000; ++round) {
    ChatRequestOptions o;
    o.model = rng() % 2 ? text(8) : "";
    const int messages = static_cast<int>(rng() % 6);
    for (int i = 0; i < messages; ++i) {
      wf::v1::ChatMessage m = Msg(rng() % 8 ? roles[rng() % 4] : text(5), text(40));
      m.set_tool_call_id(text(6));
      if (m.role() == "assistant" && rng() % 2) {
        for (int c = static_cast<int>(rng() % 3); c >= 0; --c) {
          auto* call = m.add_tool_calls();
          call->set_id(text(6));
          call->set_name(text(6));
          call->set_arguments_json(text(20));
        }
      }
      o.messages.push_back(std::move(m));
    }
    std::vector<ChatToolSpec> specs;
    for (int t = static_cast<int>(rng() % 4); t > 0; --t) {
      json parameters = rng() % 3
                            ? json{{"type", "object"}, {"description", SanitizeUtf8(text(10))}}
                            : json(nullptr);
      specs.push_back(ChatToolSpec{text(8), rng() % 2 ? text(12) : "", std::move(parameters)});
    }
    if (rng() % 2) o.tools = Tools(std::move(specs));
    if (rng() % 2) o.temperature = std::uniform_real_distribution<double>(0, 2)(rng);
    o.json_object = rng() % 4 == 0;
    const std::string encoded = EncodeChatRequest(o, "default-model");
    ASSERT_TRUE(json::accept(encoded)) << encoded;
    ASSERT_EQ(json::parse(encoded), Reference(o, "default-model")) << encoded;
  }
}

}  // namespace
}  // namespace wf
