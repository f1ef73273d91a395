#include "llm/chat_request.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

wf::v1::ChatMessage Msg(const std::string& role, const std::string& content) {
  wf::v1::ChatMessage m;
  m.set_role(role);
  m.set_content(content);
  return m;
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
  o.tools.push_back(ChatToolSpec{"weather", "Current weather",
                                 {{"type", "object"},
                                  {"properties", {{"city", {{"type", "string"}}}}}}});
  o.tools.push_back(ChatToolSpec{"noargs", "", nullptr});
  o.temperature = 0.2;

  const auto j = BuildChatRequestJson(o, "gpt-test");
  EXPECT_EQ(j["model"], "gpt-test");
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_DOUBLE_EQ(j["temperature"].get<double>(), 0.2);
  EXPECT_EQ(j["tool_choice"], "auto");
  ASSERT_EQ(j["messages"].size(), 4u);
  EXPECT_EQ(j["messages"][0], (nlohmann::json{{"role", "system"}, {"content", "be brief"}}));
  EXPECT_TRUE(j["messages"][2]["content"].is_null());
  EXPECT_EQ(j["messages"][2]["tool_calls"][0],
            (nlohmann::json{{"id", "call_1"},
                            {"type", "function"},
                            {"function", {{"name", "weather"}, {"arguments", "{\"city\":\"Paris\"}"}}}}));
  EXPECT_EQ(j["messages"][3],
            (nlohmann::json{{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "sunny"}}));
  ASSERT_EQ(j["tools"].size(), 2u);
  EXPECT_EQ(j["tools"][0]["type"], "function");
  EXPECT_EQ(j["tools"][0]["function"]["name"], "weather");
  EXPECT_EQ(j["tools"][0]["function"]["description"], "Current weather");
  EXPECT_EQ(j["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
  EXPECT_FALSE(j["tools"][1]["function"].contains("description"));
  EXPECT_EQ(j["tools"][1]["function"]["parameters"],
            (nlohmann::json{{"type", "object"}, {"properties", nlohmann::json::object()}}));
  EXPECT_FALSE(j.contains("response_format"));
}

TEST(ChatRequest, NoToolsMeansNoToolChoice) {
  ChatRequestOptions o;
  o.model = "m1";
  o.messages.push_back(Msg("user", "hi"));
  const auto j = BuildChatRequestJson(o, "default");
  EXPECT_EQ(j["model"], "m1");
  EXPECT_FALSE(j.contains("tools"));
  EXPECT_FALSE(j.contains("tool_choice"));
  EXPECT_FALSE(j.contains("temperature"));
}

TEST(ChatRequest, JsonSchemaResponseFormat) {
  ChatRequestOptions o;
  o.messages.push_back(Msg("user", "x"));
  o.output_schema = nlohmann::json{{"type", "object"}, {"required", {"a"}}};
  o.output_schema_name = "extract.v1";
  const auto j = BuildChatRequestJson(o, "m");
  EXPECT_EQ(j["response_format"]["type"], "json_schema");
  EXPECT_EQ(j["response_format"]["json_schema"]["name"], "extract_v1");
  EXPECT_EQ(j["response_format"]["json_schema"]["schema"]["required"][0], "a");

  ChatRequestOptions o2;
  o2.messages.push_back(Msg("user", "x"));
  o2.json_object = true;
  EXPECT_EQ(BuildChatRequestJson(o2, "m")["response_format"]["type"], "json_object");
}

TEST(ChatRequest, InvalidUtf8IsRepairedSoTheBodyCanBeDumped) {
  ChatRequestOptions o;
  o.messages.push_back(Msg("user", "bad \xE4\xBD"));
  const auto j = BuildChatRequestJson(o, "m");
  EXPECT_NO_THROW((void)j.dump());
  EXPECT_EQ(j["messages"][0]["content"], "bad \xEF\xBF\xBD\xEF\xBF\xBD");
}

}  // namespace
}  // namespace wf
