#include "config/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace wf {
namespace {

using nlohmann::json;

std::string FixturesDir() {
  if (const char* src = std::getenv("WF_SOURCE_DIR")) {
    return std::string(src) + "/tests/fixtures/configs";
  }
  return WF_CONFIG_FIXTURES_DIR;
}

/// A small valid config that each test breaks in one place.
json Base() {
  return json::parse(R"J({
    "flows": [
      {"flow_id": "order_status",
       "trigger_patterns": ["order\\s+(?P<order_id>\\d+)", "查询订单(?P<order_id>\\d+)"],
       "parameters": {"type": "object",
                      "properties": {"order_id": {"type": "string"},
                                     "verbose": {"type": "boolean", "default": false}},
                      "required": ["order_id"]},
       "endpoint": {"url": "http://orders.internal/api/orders/{order_id}", "method": "GET",
                    "headers": {"X-Session": "{session_id}"}},
       "response_template": "order {order_id}: {result.status}"},
      {"flow_id": "leave",
       "trigger_patterns": ["leave request"],
       "parameters": {"type": "object", "properties": {"days": {"type": "integer"}}},
       "endpoint": {"url": "http://hr.internal/leave", "method": "POST",
                    "body": {"text": "{user_message}", "days": "{days}"}}}
    ],
    "tools": [
      {"name": "weather", "description": "weather",
       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
       "endpoint": {"url": "http://weather.internal/now?city={city}"}}
    ],
    "skills": [
      {"name": "helper", "mode": "agent", "instructions": "Help.", "allowed_tools": ["weather"]}
    ]
  })J");
}

std::string ErrorOf(const json& config) {
  auto r = ParseConfig(config.dump());
  if (r.ok()) return "<no error>";
  EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
  return r.error().message;
}

std::string ErrorOfText(std::string_view text) {
  auto r = ParseConfig(text);
  if (r.ok()) return "<no error>";
  EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
  return r.error().message;
}

#define EXPECT_STARTS_WITH(text, prefix)                                     \
  EXPECT_EQ(std::string(text).substr(0, std::string(prefix).size()), prefix) \
      << "full message: " << (text)

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "full message: " << (text)

TEST(ConfigTest, BaseIsValid) {
  auto r = ParseConfig(Base().dump());
  ASSERT_TRUE(r.ok()) << r.error().message;
}

TEST(ConfigTest, LoadsFullFixture) {
  std::string path = FixturesDir() + "/good_full.json";
  auto r = LoadConfigFile(path);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const Config& c = **r;
  EXPECT_EQ(c.source_path, path);
  EXPECT_EQ(c.subject_prefix, "wftest");
  ASSERT_EQ(c.flows.size(), 2u);

  const FlowConfig& order = c.flows[0];
  EXPECT_EQ(order.flow_id, "order_status");
  EXPECT_EQ(order.name, "Order status");
  EXPECT_EQ(order.description, "Look up an order by number");
  ASSERT_EQ(order.trigger_patterns.size(), 2u);
  EXPECT_EQ(order.trigger_patterns[0], "(?:查询|查)订单\\s*(?P<order_id>\\d+)");
  EXPECT_EQ(order.capture_groups, std::vector<std::string>{"order_id"});
  ASSERT_EQ(order.parameters.size(), 2u);
  EXPECT_EQ(order.parameters[0].name, "order_id");
  EXPECT_EQ(order.parameters[0].type, "string");
  EXPECT_EQ(order.parameters[0].description, "Order number");
  EXPECT_TRUE(order.parameters[0].required);
  EXPECT_EQ(order.parameters[1].name, "verbose");
  EXPECT_EQ(order.parameters[1].type, "boolean");
  EXPECT_FALSE(order.parameters[1].required);
  ASSERT_TRUE(order.parameters[1].default_value.has_value());
  EXPECT_EQ(*order.parameters[1].default_value, json(false));
  EXPECT_EQ(order.parameters_schema["required"], json::array({"order_id"}));
  EXPECT_EQ(order.endpoint.url, "http://orders.internal/api/orders/{order_id}?verbose={verbose}");
  EXPECT_EQ(order.endpoint.method, "GET");
  ASSERT_EQ(order.endpoint.headers.size(), 2u);
  // Config order, not alphabetical.
  EXPECT_EQ(order.endpoint.headers[0].first, "X-Session");
  EXPECT_EQ(order.endpoint.headers[0].second, "{session_id}");
  EXPECT_EQ(order.endpoint.headers[1].first, "Accept");
  EXPECT_EQ(order.endpoint.timeout, std::chrono::milliseconds(3000));
  EXPECT_EQ(order.endpoint.max_response_bytes, std::size_t{1} << 20);
  EXPECT_FALSE(order.endpoint.body.has_value());
  EXPECT_EQ(order.response_template, "订单 {order_id}: {result.status}");

  const FlowConfig& leave = c.flows[1];
  EXPECT_EQ(leave.name, "Leave request");
  EXPECT_EQ(leave.description, "");
  EXPECT_EQ(leave.endpoint.method, "POST");  // "post" normalized
  EXPECT_EQ(leave.endpoint.timeout, std::chrono::milliseconds(5000));
  EXPECT_EQ(leave.endpoint.max_response_bytes, 65536u);
  ASSERT_TRUE(leave.endpoint.body.has_value());
  EXPECT_EQ((*leave.endpoint.body)["days"], "{days}");
  EXPECT_EQ(leave.parameters_schema, json::parse(R"({"type":"object","properties":{}})"));
  // The capture group is a parameter even without a schema.
  ASSERT_EQ(leave.parameters.size(), 1u);
  EXPECT_EQ(leave.parameters[0].name, "days");
  EXPECT_EQ(leave.parameters[0].type, "");
  EXPECT_FALSE(leave.parameters[0].required);

  ASSERT_EQ(c.tools.size(), 1u);
  const ToolConfig& weather = c.tools[0];
  EXPECT_EQ(weather.name, "weather");
  EXPECT_EQ(weather.response_template, "{result}");
  ASSERT_EQ(weather.parameters.size(), 4u);
  EXPECT_EQ(weather.parameters[0].name, "city");
  EXPECT_EQ(weather.parameters[1].name, "unit");
  EXPECT_EQ(weather.parameters[2].name, "days");
  EXPECT_EQ(weather.parameters[3].name, "tags");
  ASSERT_TRUE(weather.parameters[1].enum_values.has_value());
  EXPECT_EQ(*weather.parameters[1].enum_values, json::array({"c", "f"}));
  EXPECT_EQ(*weather.parameters[2].default_value, json(1));
  EXPECT_EQ(weather.parameters[3].type, "array");

  ASSERT_EQ(c.skills.size(), 2u);
  const SkillConfig& summarize = c.skills[0];
  EXPECT_EQ(summarize.mode, "agent");
  EXPECT_EQ(summarize.model, "small-model");
  // Front matter stripped, the Markdown body kept.
  EXPECT_EQ(summarize.instructions,
            "# Summarize\n\nWrite a summary of the input in at most three sentences.\n");
  EXPECT_EQ(summarize.allowed_tools, (std::vector<std::string>{"weather", "order_status"}));
  EXPECT_EQ(summarize.parameters_schema["required"], json::array({"input"}));
  EXPECT_FALSE(summarize.output_schema.has_value());
  const SkillConfig& classify = c.skills[1];
  EXPECT_EQ(classify.mode, "function");
  EXPECT_EQ(classify.instructions, "Classify the ticket into a category.");
  ASSERT_TRUE(classify.output_schema.has_value());
  EXPECT_EQ((*classify.output_schema)["required"], json::array({"category"}));
  ASSERT_EQ(classify.parameters.size(), 1u);
  EXPECT_EQ(classify.parameters[0].name, "ticket");

  EXPECT_EQ(c.agent.system_prompt, "You are the test assistant.");
  EXPECT_EQ(c.agent.model, "big-model");
  EXPECT_DOUBLE_EQ(c.agent.temperature, 0.5);
  EXPECT_EQ(c.agent.max_tool_rounds, 4);
  EXPECT_EQ(c.agent.turn_timeout, std::chrono::milliseconds(60000));
  EXPECT_EQ(c.agent.history_max_messages, 20);
  EXPECT_EQ(c.agent.history_max_chars, 20000u);
  EXPECT_EQ(c.agent.on_busy, "enqueue");
  EXPECT_EQ(c.agent.session_ttl, std::chrono::milliseconds(3600000));
  EXPECT_EQ(c.agent.max_answer_bytes, 65536u);
  EXPECT_EQ(c.gateway.max_body_bytes, 65536u);
  EXPECT_EQ(c.gateway.max_message_chars, 4000u);
  EXPECT_EQ(c.gateway.flow_timeout, std::chrono::milliseconds(5000));

  EXPECT_EQ(c.FindFlow("leave_request"), &c.flows[1]);
  EXPECT_EQ(c.FindFlow("weather"), nullptr);
  EXPECT_EQ(c.FindTool("weather"), &c.tools[0]);
  EXPECT_EQ(c.FindTool("nope"), nullptr);
  EXPECT_EQ(c.FindSkill("classify"), &c.skills[1]);
  EXPECT_EQ(c.FindSkill("order_status"), nullptr);
}

TEST(ConfigTest, DefaultsForAnEmptyConfig) {
  for (const char* text : {"{}", R"({"flows": []})"}) {
    auto r = ParseConfig(text);
    ASSERT_TRUE(r.ok()) << r.error().message;
    const Config& c = **r;
    EXPECT_TRUE(c.flows.empty());
    EXPECT_EQ(c.subject_prefix, "wf");
    EXPECT_EQ(c.source_path, "");
    EXPECT_FALSE(c.agent.system_prompt.empty());
    EXPECT_EQ(c.agent.model, "");
    EXPECT_DOUBLE_EQ(c.agent.temperature, 0.2);
    EXPECT_EQ(c.agent.max_tool_rounds, 8);
    EXPECT_EQ(c.agent.turn_timeout, std::chrono::milliseconds(120000));
    EXPECT_EQ(c.agent.history_max_messages, 50);
    EXPECT_EQ(c.agent.history_max_chars, 48000u);
    EXPECT_EQ(c.agent.on_busy, "reject");
    EXPECT_EQ(c.agent.session_ttl, std::chrono::milliseconds(86400000));
    EXPECT_EQ(c.agent.max_answer_bytes, std::size_t{1} << 20);
    EXPECT_EQ(c.gateway.max_body_bytes, std::size_t{1} << 20);
    EXPECT_EQ(c.gateway.max_message_chars, 8000u);
    EXPECT_EQ(c.gateway.flow_timeout, std::chrono::milliseconds(10000));
  }
}

TEST(ConfigTest, MinimalFixtureLoads) {
  auto r = LoadConfigFile(FixturesDir() + "/good_minimal.json");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE((*r)->flows.empty());
}

TEST(ConfigTest, MissingFile) {
  auto r = LoadConfigFile("/nonexistent/dir/workflow_config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(r.error().message, "config file not found: /nonexistent/dir/workflow_config.json");
}

TEST(ConfigTest, DirectoryIsNotAConfigFile) {
  auto r = LoadConfigFile(FixturesDir());
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.error().message, "not a regular file");
}

TEST(ConfigTest, EveryBadFixtureFailsWithItsExpectedMessage) {
  std::string dir = FixturesDir() + "/bad";
  std::ifstream in(dir + "/expected.json");
  ASSERT_TRUE(in) << dir;
  json expected = json::parse(in);
  std::size_t checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (name == "expected.json") continue;
    ASSERT_TRUE(expected.contains(name)) << "no expected message for " << name;
    auto r = LoadConfigFile(entry.path().string());
    ASSERT_FALSE(r.ok()) << name << " was accepted";
    EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
    EXPECT_STARTS_WITH(r.error().message, expected[name].get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, expected.size());
}

// --- malformed JSON -------------------------------------------------------------------------

TEST(ConfigTest, MalformedJsonNamesLineAndColumn) {
  std::string message = ErrorOfText("{\n  \"flows\": [\n    {\"flow_id\": }\n  ]\n}");
  EXPECT_STARTS_WITH(message, "config: invalid JSON: parse error at line 3, column 17");
  EXPECT_STARTS_WITH(ErrorOfText(""), "config: invalid JSON: parse error at line 1, column 1");
  EXPECT_STARTS_WITH(ErrorOfText("{\"flows\": [] "), "config: invalid JSON:");
  EXPECT_STARTS_WITH(ErrorOfText("{\"flows\": []} trailing"), "config: invalid JSON:");
  EXPECT_STARTS_WITH(ErrorOfText("{\"a\": \"\xff\"}"), "config: invalid JSON:");
}

TEST(ConfigTest, RootMustBeAnObject) {
  EXPECT_EQ(ErrorOfText("[]"), "config: expected an object, got array");
}

TEST(ConfigTest, DuplicateKeyAnywhere) {
  EXPECT_EQ(ErrorOfText(R"({"flows": [], "flows": []})"), "flows: duplicate key");
  EXPECT_EQ(ErrorOfText(R"({"flows": [{"flow_id": "a"}, {"endpoint": {}, "endpoint": 1}]})"),
            "flows[1].endpoint: duplicate key");
  EXPECT_EQ(ErrorOfText(R"({"a": [[], [{"x": {"y": 1, "y": 2}}]]})"), "a[1][0].x.y: duplicate key");
  EXPECT_EQ(
      ErrorOfText(
          R"({"tools": [{"name": "t", "endpoint": {"url": "http://h/", "url": "http://h/"}}]})"),
      "tools[0].endpoint.url: duplicate key");
}

// --- trigger patterns -----------------------------------------------------------------------

TEST(ConfigTest, InvalidRegexNamesPatternPath) {
  json c = Base();
  c["flows"][1]["trigger_patterns"] = {"fine", "(abc"};
  EXPECT_EQ(ErrorOf(c), "flows[1].trigger_patterns[1]: invalid regex: missing ): (abc");
}

TEST(ConfigTest, LookAroundAndBackReferencesGetAClearMessage) {
  struct Case {
    const char* pattern;
    const char* hint;
  };
  for (const Case& t :
       {Case{"a(?=b)", "look-ahead assertions are not supported by RE2"},
        Case{"a(?!b)", "look-ahead assertions are not supported by RE2"},
        Case{"(?<=a)b", "look-behind assertions"}, Case{"(?<!a)b", "look-behind assertions"},
        Case{"(a)\\1", "back-references are not supported by RE2"},
        Case{"(?P<x>a)(?P=x)", "back-references are not supported by RE2"},
        Case{"(?>a)", "atomic groups are not supported by RE2"},
        Case{"a++", "possessive quantifiers are not supported by RE2"}}) {
    json c = Base();
    c["flows"][0]["trigger_patterns"][1] = t.pattern;
    std::string message = ErrorOf(c);
    EXPECT_STARTS_WITH(message, "flows[0].trigger_patterns[1]: invalid regex: ");
    EXPECT_CONTAINS(message, t.hint);
  }
}

TEST(ConfigTest, EmptyTriggerPatterns) {
  json c = Base();
  c["flows"][1]["trigger_patterns"] = json::array();
  EXPECT_EQ(ErrorOf(c), "flows[1].trigger_patterns: must not be empty");
  c["flows"][1]["trigger_patterns"] = {""};
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[1].trigger_patterns[0]: must not be empty");
  c["flows"][1].erase("trigger_patterns");
  EXPECT_EQ(ErrorOf(c), "flows[1].trigger_patterns: required field is missing");
  c["flows"][1]["trigger_patterns"] = "leave";
  EXPECT_EQ(ErrorOf(c), "flows[1].trigger_patterns: expected an array, got string");
  c["flows"][1]["trigger_patterns"] = {"ok", 3};
  EXPECT_EQ(ErrorOf(c), "flows[1].trigger_patterns[1]: expected a string, got integer");
}

TEST(ConfigTest, ReservedCaptureGroupName) {
  json c = Base();
  c["flows"][1]["trigger_patterns"] = {"leave (?P<session_id>\\w+)"};
  EXPECT_STARTS_WITH(ErrorOf(c),
                     "flows[1].trigger_patterns[0]: named group \"session_id\" is reserved");
}

// --- names ----------------------------------------------------------------------------------

TEST(ConfigTest, DuplicateFlowId) {
  json c = Base();
  c["flows"][1]["flow_id"] = "order_status";
  EXPECT_EQ(ErrorOf(c),
            "flows[1].flow_id: duplicate flow_id \"order_status\" (already defined at "
            "flows[0].flow_id)");
}

TEST(ConfigTest, DuplicateToolName) {
  json c = Base();
  c["tools"].push_back(c["tools"][0]);
  EXPECT_EQ(ErrorOf(c),
            "tools[1].name: duplicate tool name \"weather\" (already defined at tools[0].name)");
}

TEST(ConfigTest, ToolNameCollidingWithFlowId) {
  json c = Base();
  c["tools"][0]["name"] = "leave";
  EXPECT_EQ(ErrorOf(c),
            "tools[0].name: duplicate tool name \"leave\" (already defined at flows[1].flow_id)");
}

TEST(ConfigTest, SkillNameCollidingWithToolOrFlow) {
  json c = Base();
  c["skills"][0]["name"] = "weather";
  EXPECT_EQ(ErrorOf(c),
            "skills[0].name: duplicate skill name \"weather\" (already defined at tools[0].name)");
  c["skills"][0]["name"] = "order_status";
  EXPECT_EQ(ErrorOf(c),
            "skills[0].name: duplicate skill name \"order_status\" (already defined at "
            "flows[0].flow_id)");
}

TEST(ConfigTest, InvalidNames) {
  json c = Base();
  c["flows"][0]["flow_id"] = "order status";
  EXPECT_EQ(ErrorOf(c),
            "flows[0].flow_id: invalid name \"order status\" (expected [A-Za-z0-9_-]{1,64})");
  c = Base();
  c["flows"][0]["flow_id"] = std::string(65, 'a');
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[0].flow_id: invalid name");
  c = Base();
  c["flows"][0]["flow_id"] = "";
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[0].flow_id: invalid name");
  c = Base();
  c["tools"][0]["name"] = "天气";
  EXPECT_STARTS_WITH(ErrorOf(c), "tools[0].name: invalid name");
  c = Base();
  c["skills"][0]["name"] = "a.b";
  EXPECT_STARTS_WITH(ErrorOf(c), "skills[0].name: invalid name");
  c = Base();
  c["flows"][0]["flow_id"] = std::string(64, 'a');
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

TEST(ConfigTest, SubjectPrefix) {
  json c = Base();
  c["subject_prefix"] = "wf.prod";
  EXPECT_STARTS_WITH(ErrorOf(c), "subject_prefix: invalid subject prefix");
  c["subject_prefix"] = "prod-1";
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

// --- unknown fields and wrong types ---------------------------------------------------------

TEST(ConfigTest, UnknownFieldAtEveryLevel) {
  struct Case {
    std::string pointer;  // where to add "bogus"
    std::string path;
  };
  for (const Case& t : {Case{"", "bogus"}, Case{"/flows/1", "flows[1].bogus"},
                        Case{"/flows/0/endpoint", "flows[0].endpoint.bogus"},
                        Case{"/flows/0/parameters", "flows[0].parameters.bogus"},
                        Case{"/flows/0/parameters/properties/verbose",
                             "flows[0].parameters.properties.verbose.bogus"},
                        Case{"/tools/0", "tools[0].bogus"}, Case{"/skills/0", "skills[0].bogus"},
                        Case{"/agent", "agent.bogus"}, Case{"/gateway", "gateway.bogus"}}) {
    json c = Base();
    c["agent"] = json::object();
    c["gateway"] = json::object();
    c[json::json_pointer(t.pointer)]["bogus"] = 1;
    std::string message = ErrorOf(c);
    EXPECT_STARTS_WITH(message, t.path + ": unknown field (expected one of: ");
  }
}

TEST(ConfigTest, WrongTypes) {
  struct Case {
    std::string pointer;
    json value;
    std::string message;
  };
  for (const Case& t : {
           Case{"/flows", json::object(), "flows: expected an array, got object"},
           Case{"/flows/0", json::array(), "flows[0]: expected an object, got array"},
           Case{"/flows/0/flow_id", 7, "flows[0].flow_id: expected a string, got integer"},
           Case{"/flows/0/name", false, "flows[0].name: expected a string, got boolean"},
           Case{"/flows/0/endpoint", "http://x",
                "flows[0].endpoint: expected an object, got string"},
           Case{"/flows/0/endpoint/timeout_ms", "3000",
                "flows[0].endpoint.timeout_ms: expected an integer, got string"},
           Case{"/flows/0/endpoint/timeout_ms", 1.5,
                "flows[0].endpoint.timeout_ms: expected an integer, got number"},
           Case{"/flows/0/endpoint/headers", json::array(),
                "flows[0].endpoint.headers: expected an object, got array"},
           Case{"/flows/0/endpoint/headers/X-Session", 5,
                "flows[0].endpoint.headers.X-Session: expected a string, got integer"},
           Case{"/flows/0/response_template", nullptr,
                "flows[0].response_template: expected a string, got null"},
           Case{"/tools/0/parameters/required", "city",
                "tools[0].parameters.required: expected an array, got string"},
           Case{"/skills/0/allowed_tools", "weather",
                "skills[0].allowed_tools: expected an array, got string"},
           Case{"/agent/temperature", "hot", "agent.temperature: expected a number, got string"},
           Case{"/agent/max_tool_rounds", 2.5,
                "agent.max_tool_rounds: expected an integer, got number"},
           Case{"/gateway/max_body_bytes", true,
                "gateway.max_body_bytes: expected an integer, got boolean"},
       }) {
    json c = Base();
    c["agent"] = json::object();
    c["gateway"] = json::object();
    c[json::json_pointer(t.pointer)] = t.value;
    EXPECT_EQ(ErrorOf(c), t.message) << t.pointer;
  }
}

TEST(ConfigTest, MissingRequiredFields) {
  json c = Base();
  c["flows"][0].erase("flow_id");
  EXPECT_EQ(ErrorOf(c), "flows[0].flow_id: required field is missing");
  c = Base();
  c["flows"][0].erase("endpoint");
  EXPECT_EQ(ErrorOf(c), "flows[0].endpoint: required field is missing");
  c = Base();
  c["flows"][0]["endpoint"].erase("url");
  EXPECT_EQ(ErrorOf(c), "flows[0].endpoint.url: required field is missing");
  c = Base();
  c["tools"][0].erase("name");
  EXPECT_EQ(ErrorOf(c), "tools[0].name: required field is missing");
}

// --- parameters schema ----------------------------------------------------------------------

TEST(ConfigTest, SchemaTypeMustBeObject) {
  json c = Base();
  c["tools"][0]["parameters"]["type"] = "array";
  EXPECT_EQ(ErrorOf(c), "tools[0].parameters.type: must be \"object\", got \"array\"");
  c["tools"][0]["parameters"].erase("type");
  EXPECT_EQ(ErrorOf(c), "tools[0].parameters.type: required field is missing");
  c["tools"][0]["parameters"] = "city";
  EXPECT_EQ(ErrorOf(c), "tools[0].parameters: expected an object, got string");
}

TEST(ConfigTest, SchemaPropertyTypeMustBeKnown) {
  json c = Base();
  c["tools"][0]["parameters"]["properties"]["city"]["type"] = "text";
  EXPECT_EQ(ErrorOf(c),
            "tools[0].parameters.properties.city.type: unsupported type \"text\" (expected one of "
            "string, number, integer, boolean, object, array)");
  c["tools"][0]["parameters"]["properties"]["city"]["type"] = {"string", "null"};
  EXPECT_STARTS_WITH(ErrorOf(c), "tools[0].parameters.properties.city.type: expected a string");
  // Every supported type is accepted; absent type means any.
  for (const char* type : {"string", "number", "integer", "boolean", "object", "array"}) {
    c["tools"][0]["parameters"]["properties"]["city"]["type"] = type;
    EXPECT_EQ(ErrorOf(c), "<no error>") << type;
  }
  c["tools"][0]["parameters"]["properties"]["city"].erase("type");
  auto r = ParseConfig(c.dump());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->tools[0].parameters[0].type, "");
}

TEST(ConfigTest, SchemaUnsupportedKeyword) {
  json c = Base();
  c["tools"][0]["parameters"]["properties"]["city"]["format"] = "email";
  EXPECT_STARTS_WITH(ErrorOf(c), "tools[0].parameters.properties.city.format: unknown field");
  c = Base();
  c["tools"][0]["parameters"]["$schema"] = "http://json-schema.org/draft-07/schema#";
  EXPECT_STARTS_WITH(ErrorOf(c), "tools[0].parameters[\"$schema\"]: unknown field");
}

TEST(ConfigTest, SchemaDefaultMustMatchType) {
  json c = Base();
  c["flows"][0]["parameters"]["properties"]["verbose"]["default"] = "no";
  EXPECT_EQ(ErrorOf(c),
            "flows[0].parameters.properties.verbose.default: default \"no\" does not match type "
            "\"boolean\"");
  c["flows"][0]["parameters"]["properties"]["verbose"] = {{"type", "integer"}, {"default", 2.5}};
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[0].parameters.properties.verbose.default: default 2.5");
  c["flows"][0]["parameters"]["properties"]["verbose"] = {{"type", "integer"}, {"default", 2}};
  EXPECT_EQ(ErrorOf(c), "<no error>");
  c["flows"][0]["parameters"]["properties"]["verbose"] = {{"type", "number"}, {"default", 2}};
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

TEST(ConfigTest, SchemaEnum) {
  json c = Base();
  auto& unit = c["tools"][0]["parameters"]["properties"]["unit"];
  unit = {{"type", "string"}, {"enum", {"c", 1}}};
  EXPECT_EQ(ErrorOf(c),
            "tools[0].parameters.properties.unit.enum[1]: does not match type \"string\"");
  unit = {{"type", "string"}, {"enum", json::array()}};
  EXPECT_EQ(ErrorOf(c), "tools[0].parameters.properties.unit.enum: expected a non-empty array");
  unit = {{"type", "string"}, {"enum", {"c", "f"}}, {"default", "k"}};
  EXPECT_EQ(ErrorOf(c),
            "tools[0].parameters.properties.unit.default: default \"k\" is not one of enum");
}

TEST(ConfigTest, SchemaNestedItemsAndProperties) {
  json c = Base();
  auto& prop = c["tools"][0]["parameters"]["properties"]["filter"];
  prop = json::parse(R"({"type": "object", "properties": {"tags": {"type": "array",
                         "items": {"type": "strin"}}}})");
  EXPECT_STARTS_WITH(ErrorOf(c),
                     "tools[0].parameters.properties.filter.properties.tags.items.type: "
                     "unsupported type \"strin\"");
  prop = json::parse(R"({"type": "string", "items": {"type": "string"}})");
  EXPECT_EQ(ErrorOf(c),
            "tools[0].parameters.properties.filter.items: only allowed when type is \"array\"");
  prop = json::parse(R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})");
  EXPECT_EQ(ErrorOf(c),
            "tools[0].parameters.properties.filter.required[0]: required property \"b\" is not "
            "declared in properties");
}

TEST(ConfigTest, RequiredMustBeDeclared) {
  json c = Base();
  c["tools"][0]["parameters"]["required"] = {"city", "country"};
  EXPECT_EQ(ErrorOf(c),
            "tools[0].parameters.required[1]: required parameter \"country\" is not declared in "
            "properties");
  c = Base();
  c["flows"][0]["parameters"]["required"] = {"order_id", "days"};
  EXPECT_EQ(ErrorOf(c),
            "flows[0].parameters.required[1]: required parameter \"days\" is neither a property "
            "nor a named capture group of the flow's trigger_patterns");
  c["flows"][0]["parameters"]["required"] = {"order_id", "order_id"};
  EXPECT_EQ(ErrorOf(c), "flows[0].parameters.required[1]: listed twice");
}

TEST(ConfigTest, RequiredMayNameACaptureGroup) {
  json c = Base();
  c["flows"][0]["parameters"]["properties"].erase("order_id");
  auto r = ParseConfig(c.dump());
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& params = (*r)->flows[0].parameters;
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "verbose");
  EXPECT_EQ(params[1].name, "order_id");  // capture group appended, type any, required
  EXPECT_EQ(params[1].type, "");
  EXPECT_TRUE(params[1].required);
}

TEST(ConfigTest, ParameterNames) {
  json c = Base();
  c["tools"][0]["parameters"]["properties"]["session_id"] = {{"type", "string"}};
  EXPECT_STARTS_WITH(ErrorOf(c),
                     "tools[0].parameters.properties.session_id: parameter name \"session_id\" is "
                     "reserved");
  c = Base();
  c["tools"][0]["parameters"]["properties"]["city name"] = {{"type", "string"}};
  EXPECT_STARTS_WITH(ErrorOf(c),
                     "tools[0].parameters.properties[\"city name\"]: invalid parameter name");
}

// --- endpoint -------------------------------------------------------------------------------

TEST(ConfigTest, PlaceholderSyntaxErrorsNameTheField) {
  struct Case {
    std::string pointer;
    std::string value;
    std::string message;
  };
  for (const Case& t : {
           Case{"/flows/0/endpoint/url", "http://h/{order_id",
                "flows[0].endpoint.url: invalid template: unclosed '{' at offset 9"},
           Case{"/flows/0/endpoint/headers/X-Session", "{session id}",
                "flows[0].endpoint.headers.X-Session: invalid template: invalid placeholder name "
                "'session id' at offset 0"},
           Case{"/flows/1/endpoint/body/text", "hello {user_message",
                "flows[1].endpoint.body.text: invalid template: unclosed '{' at offset 6"},
           Case{"/flows/0/response_template", "done }",
                "flows[0].response_template: invalid template: single '}' at offset 5"},
           Case{"/tools/0/response_template", "{1x}",
                "tools[0].response_template: invalid template: invalid placeholder name '1x'"},
       }) {
    json c = Base();
    c[json::json_pointer(t.pointer)] = t.value;
    EXPECT_STARTS_WITH(ErrorOf(c), t.message);
  }
}

TEST(ConfigTest, BodyTemplatesAreCheckedAtAnyDepth) {
  json c = Base();
  c["flows"][1]["endpoint"]["body"] = json::parse(R"({"a": [1, {"b": "{x"}]})");
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[1].endpoint.body.a[1].b: invalid template");
  // Object keys are not templates.
  c["flows"][1]["endpoint"]["body"] = json::parse(R"({"{key": "{days}"})");
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

TEST(ConfigTest, BodyKeysWithPlaceholdersAreRejected) {
  json c = Base();
  c["flows"][1]["endpoint"]["body"] = json::parse(R"({"a": [{"{days}": 1}]})");
  EXPECT_EQ(ErrorOf(c),
            "flows[1].endpoint.body.a[0][\"{days}\"]: placeholders are not allowed in body object "
            "keys "
            "(\"{days}\" would be sent literally)");
  c["flows"][1]["endpoint"]["body"] = json::parse(R"({"x-{user_message}-y": "v"})");
  EXPECT_STARTS_WITH(ErrorOf(c),
                     "flows[1].endpoint.body[\"x-{user_message}-y\"]: placeholders are");
  // Escaped braces are literal text, fine in a key.
  c["flows"][1]["endpoint"]["body"] = json::parse(R"({"{{literal}}": "{days}"})");
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

// {result} outside a response template can never have a value: an error. A placeholder that
// names no declared parameter or capture group is valid (a request's `parameters` can fill it:
// ARCHITECTURE.md's own example sends "days": "{days}" with no `days` declared) but is listed
// as a warning naming its JSON path, which --check-config prints.
TEST(ConfigTest, UndeclaredPlaceholdersAreWarningsResultOutsideResponseIsAnError) {
  struct Case {
    const char* pointer;
    json value;
    const char* error;    // nullptr: valid
    const char* warning;  // nullptr: no warning
  };
  for (const Case& t : std::vector<Case>{
           {"/flows/0/endpoint/url", "http://h/orders/{order_id}?q={undeclared}", nullptr,
            "flows[0].endpoint.url: placeholder {undeclared} names no declared parameter or "
            "capture group: only a request's \"parameters\" can fill it"},
           {"/flows/0/endpoint/headers/X-Session", "{session_id}-{nope}", nullptr,
            "flows[0].endpoint.headers.X-Session: placeholder {nope} names no declared parameter"},
           {"/flows/1/endpoint/body", json::parse(R"({"a": {"b": ["{days}", "x {ghost.y}"]}})"),
            nullptr, "flows[1].endpoint.body.a.b[1]: placeholder {ghost.y} names no declared"},
           {"/tools/0/endpoint/url", "http://w/now?city={city}&unit={unit}", nullptr,
            "tools[0].endpoint.url: placeholder {unit} names no declared parameter"},
           {"/flows/0/endpoint/url", "http://h/orders/{result}",
            "flows[0].endpoint.url: placeholder {result}: the response ({result}) is only "
            "available in response_template",
            nullptr},
           {"/flows/1/endpoint/body", json::parse(R"({"a": ["{result.x}"]})"),
            "flows[1].endpoint.body.a[0]: placeholder {result.x}: the response", nullptr},
           {"/flows/0/response_template",
            "{order_id} {verbose} {user_message} {session_id} "
            "{result} {result.a.0} {order_id.x}",
            nullptr, nullptr},
           {"/flows/0/response_template", "order {order_id}: {status}", nullptr,
            "flows[0].response_template: placeholder {status} names no declared parameter, "
            "capture group or result field"},
           {"/tools/0/response_template", "{result.temp} in {city}, {country}", nullptr,
            "tools[0].response_template: placeholder {country} names no declared parameter"},
           // Capture groups count as parameters, declared or not.
           {"/flows/0/endpoint/url", "http://h/orders/{order_id}?v={verbose}", nullptr, nullptr},
       }) {
    json c = Base();
    c[json::json_pointer(t.pointer)] = t.value;
    auto r = ParseConfig(c.dump());
    if (t.error != nullptr) {
      ASSERT_FALSE(r.ok()) << t.pointer;
      EXPECT_STARTS_WITH(r.error().message, t.error);
      continue;
    }
    ASSERT_TRUE(r.ok()) << t.pointer << ": " << r.error().message;
    if (t.warning == nullptr) {
      EXPECT_TRUE((*r)->warnings.empty()) << t.pointer << ": " << (*r)->warnings.front();
    } else {
      ASSERT_EQ((*r)->warnings.size(), 1u) << t.pointer;
      EXPECT_STARTS_WITH((*r)->warnings[0], t.warning);
      // --check-config prints the summary: the warning is in it.
      EXPECT_CONTAINS(ConfigSummary(**r), "; 1 warning:\n  " + (*r)->warnings[0]);
    }
  }
  // A capture group that is not a declared property is a parameter too.
  json c = Base();
  c["flows"][1]["trigger_patterns"] = {"leave for (?P<n>\\d+) days"};
  c["flows"][1]["endpoint"]["url"] = "http://hr.internal/leave?n={n}";
  auto r = ParseConfig(c.dump());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE((*r)->warnings.empty());
  EXPECT_EQ(ConfigSummary(**r), "2 flows, 1 tool, 1 skill");
}

// The example config of ARCHITECTURE.md "Configuration" (copied verbatim into the fixture) is
// the contract: it loads. Its leave_request body uses {days}, which it does not declare (the
// request's parameters supply it), so that is its one warning.
TEST(ConfigTest, TheArchitectureExampleConfigLoads) {
  auto r = LoadConfigFile(FixturesDir() + "/architecture_example.json");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->flows.size(), 2u);
  EXPECT_EQ((*r)->tools.size(), 1u);
  ASSERT_EQ((*r)->warnings.size(), 1u);
  EXPECT_STARTS_WITH((*r)->warnings[0],
                     "flows[1].endpoint.body.days: placeholder {days} names no declared");
}

// RE2 compiles (?P<x>..)(?P<x>..) without complaint, and only one group could fill `x`: the
// validator used to accept it silently.
TEST(ConfigTest, ANamedGroupTwiceInOnePatternIsAnError) {
  json c = Base();
  c["flows"][0]["trigger_patterns"] = {"order (?P<order_id>\\d+) or (?P<order_id>\\d+)"};
  EXPECT_EQ(ErrorOf(c),
            "flows[0].trigger_patterns[0]: named group \"order_id\" appears more than once in "
            "this pattern (use it once, or give the alternatives their own trigger_patterns)");
  // The same name in different patterns of a flow is the normal case.
  c["flows"][0]["trigger_patterns"] = {"order (?P<order_id>\\d+)", "查询订单(?P<order_id>\\d+)"};
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

// "" is refused because it matches every message; so is any pattern that matches "", since
// matching is unanchored: the validator accepted "x?", ".*" and "a|" and the flow took every
// message (nothing reached the agent).
TEST(ConfigTest, APatternMatchingTheEmptyStringIsAnError) {
  for (const char* pattern :
       {"x?", ".*", "leave|", "(?:order)*", "^", "(?P<n>\\d*)", "x?$", "$", "^\\s*"}) {
    json c = Base();
    c["flows"][1]["trigger_patterns"] = {"leave request", pattern};
    EXPECT_EQ(ErrorOf(c),
              "flows[1].trigger_patterns[1]: matches the empty string, so it would match every "
              "message and no message would reach the agent")
        << pattern;
  }
  json c = Base();
  c["flows"][1]["trigger_patterns"] = {"leave(?: request)?", "请假(?:\\s*(?P<days>\\d+)\\s*天)?"};
  EXPECT_EQ(ErrorOf(c), "<no error>");
  // Anchored at both ends, a pattern that also matches "" matches only what it spells out.
  c["flows"][1]["trigger_patterns"] = {"^(?:hi|hello)?$", "^\\s*(?:leave)?\\s*$"};
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

TEST(ConfigTest, Method) {
  json c = Base();
  c["flows"][0]["endpoint"]["method"] = "HEAD";
  EXPECT_EQ(ErrorOf(c),
            "flows[0].endpoint.method: unsupported method \"HEAD\" (expected one of GET, POST, "
            "PUT, PATCH, DELETE)");
  for (const char* m : {"GET", "post", "Put", "PATCH", "delete"}) {
    c["flows"][0]["endpoint"]["method"] = m;
    EXPECT_EQ(ErrorOf(c), "<no error>") << m;
  }
}

TEST(ConfigTest, Url) {
  struct Case {
    const char* url;
    const char* message;  // nullptr = valid
  };
  for (const Case& t : {
           Case{"ftp://h/x", "flows[0].endpoint.url: url must start with http:// or https://"},
           Case{"/api/orders", "flows[0].endpoint.url: url must start with http:// or https://"},
           Case{"{base}/orders", "flows[0].endpoint.url: url must start with http:// or https://"},
           Case{"http://{host}/orders",
                "flows[0].endpoint.url: placeholders are not allowed in the scheme or host"},
           Case{"http://api.{domain}.com/x",
                "flows[0].endpoint.url: placeholders are not allowed in the scheme or host"},
           Case{"http:///x", "flows[0].endpoint.url: url has no host"},
           Case{"http://", "flows[0].endpoint.url: url has no host"},
           Case{"http://user@/x", "flows[0].endpoint.url: url has no host"},
           Case{"http://:8080/x", "flows[0].endpoint.url: url has no host"},
           Case{"http://h/a b", "flows[0].endpoint.url: url contains whitespace"},
           Case{"", "flows[0].endpoint.url: must not be empty"},
           Case{"HTTPS://h.example:8443/x?a={order_id}#f", nullptr},
           Case{"http://127.0.0.1:8081", nullptr},
           Case{"http://h?q={order_id}", nullptr},
       }) {
    json c = Base();
    c["flows"][0]["endpoint"]["url"] = t.url;
    if (t.message == nullptr) {
      EXPECT_EQ(ErrorOf(c), "<no error>") << t.url;
    } else {
      EXPECT_STARTS_WITH(ErrorOf(c), t.message);
    }
  }
}

TEST(ConfigTest, Headers) {
  json c = Base();
  c["flows"][0]["endpoint"]["headers"]["Bad Name"] = "x";
  EXPECT_EQ(ErrorOf(c), "flows[0].endpoint.headers[\"Bad Name\"]: invalid header name");
  c = Base();
  c["flows"][0]["endpoint"]["headers"]["x-session"] = "x";
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[0].endpoint.headers.x-session: duplicate header");
  c = Base();
  c["flows"][0]["endpoint"]["headers"]["X-Evil"] = "a\r\nX-Injected: 1";
  EXPECT_EQ(ErrorOf(c), "flows[0].endpoint.headers.X-Evil: header value contains CR, LF or NUL");
}

TEST(ConfigTest, TimeoutRange) {
  json c = Base();
  for (int bad : {0, -5, 600001}) {
    c["flows"][0]["endpoint"]["timeout_ms"] = bad;
    EXPECT_EQ(ErrorOf(c), "flows[0].endpoint.timeout_ms: out of range: " + std::to_string(bad) +
                              " (allowed 1..600000)");
  }
  c["flows"][0]["endpoint"]["timeout_ms"] = 18446744073709551615ull;
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[0].endpoint.timeout_ms: out of range");
  for (int good : {1, 600000}) {
    c["flows"][0]["endpoint"]["timeout_ms"] = good;
    EXPECT_EQ(ErrorOf(c), "<no error>");
  }
  c["flows"][0]["endpoint"]["max_response_bytes"] = 0;
  EXPECT_STARTS_WITH(ErrorOf(c), "flows[0].endpoint.max_response_bytes: out of range");
}

// --- skills ---------------------------------------------------------------------------------

TEST(ConfigTest, SkillModeAndOutputSchema) {
  json c = Base();
  c["skills"][0]["mode"] = "chain";
  EXPECT_STARTS_WITH(ErrorOf(c), "skills[0].mode: unsupported mode \"chain\"");
  c["skills"][0]["mode"] = "function";
  EXPECT_EQ(ErrorOf(c),
            "skills[0].output_schema: required field is missing (mode \"function\" needs it)");
  c["skills"][0]["output_schema"] = {{"type", "object"},
                                     {"properties", {{"x", {{"type", "int"}}}}}};
  EXPECT_STARTS_WITH(ErrorOf(c), "skills[0].output_schema.properties.x.type: unsupported type");
  c["skills"][0]["output_schema"] = {{"properties", json::object()}};
  EXPECT_EQ(ErrorOf(c), "skills[0].output_schema.type: required field is missing");
  c["skills"][0]["output_schema"] = {{"type", "object"}};
  EXPECT_EQ(ErrorOf(c), "<no error>");
  c["skills"][0]["mode"] = "agent";
  EXPECT_EQ(ErrorOf(c), "skills[0].output_schema: only allowed when mode is \"function\"");
}

TEST(ConfigTest, SkillInstructions) {
  json c = Base();
  c["skills"][0].erase("instructions");
  EXPECT_STARTS_WITH(ErrorOf(c), "skills[0].instructions: required field is missing");
  c["skills"][0]["instructions"] = "";
  EXPECT_EQ(ErrorOf(c), "skills[0].instructions: must not be empty");
  c["skills"][0]["instructions"] = "x";
  c["skills"][0]["instructions_file"] = "skills/summarize/SKILL.md";
  EXPECT_EQ(ErrorOf(c),
            "skills[0].instructions_file: give either instructions or instructions_file, not both");
  c["skills"][0].erase("instructions");
  c["skills"][0]["instructions_file"] = "no/such/SKILL.md";
  EXPECT_STARTS_WITH(ErrorOf(c), "skills[0].instructions_file: instructions file not found: ");
  // A directory is there but is no file: said so, not "not found".
  c["skills"][0]["instructions_file"] = "skills";
  auto r = ParseConfig(c.dump(), FixturesDir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "skills[0].instructions_file: instructions file is not a regular "
            "file: " +
                FixturesDir() + "/skills");
}

TEST(ConfigTest, SkillInstructionsFileIsRelativeToBaseDir) {
  json c = Base();
  c["skills"][0].erase("instructions");
  c["skills"][0]["instructions_file"] = "skills/summarize/SKILL.md";
  auto r = ParseConfig(c.dump(), FixturesDir());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->skills[0].instructions.substr(0, 11), "# Summarize");
}

class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    path_ =
        std::filesystem::temp_directory_path() /
        ("wf_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".md");
    std::ofstream(path_, std::ios::binary) << text;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

std::string InstructionsFrom(const std::string& file_text) {
  TempFile file(file_text);
  json c = Base();
  c["skills"][0].erase("instructions");
  c["skills"][0]["instructions_file"] = file.path();  // absolute
  auto r = ParseConfig(c.dump());
  if (!r.ok()) return "<error> " + r.error().message;
  return (*r)->skills[0].instructions;
}

TEST(ConfigTest, FrontMatterStripping) {
  EXPECT_EQ(InstructionsFrom("---\nname: x\n---\nBody\n"), "Body\n");
  EXPECT_EQ(InstructionsFrom("---\r\nname: x\r\n---\r\n\r\nBody"), "Body");
  EXPECT_EQ(InstructionsFrom("No front matter\n---\nstill body\n"),
            "No front matter\n---\nstill body\n");
  // An unclosed block is not front matter.
  EXPECT_EQ(InstructionsFrom("---\nname: x\nBody\n"), "---\nname: x\nBody\n");
  EXPECT_STARTS_WITH(InstructionsFrom("---\nname: x\n---\n"),
                     "<error> skills[0].instructions_file: instructions file has no text");
}

TEST(ConfigTest, SkillAllowedTools) {
  json c = Base();
  c["skills"][0]["allowed_tools"] = {"weather", "ghost"};
  EXPECT_EQ(ErrorOf(c), "skills[0].allowed_tools[1]: unknown tool, flow or skill \"ghost\"");
  c["skills"][0]["allowed_tools"] = {"helper"};
  EXPECT_EQ(ErrorOf(c), "skills[0].allowed_tools[0]: a skill cannot allow itself");
  c["skills"][0]["allowed_tools"] = {"weather", "weather"};
  EXPECT_EQ(ErrorOf(c), "skills[0].allowed_tools[1]: listed twice");
  c["skills"][0]["allowed_tools"] = {"weather", "order_status", "leave"};
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

TEST(ConfigTest, SkillCycle) {
  json c = Base();
  c["skills"][0]["allowed_tools"] = {"second"};
  c["skills"].push_back({{"name", "second"}, {"instructions", "x"}, {"allowed_tools", {"third"}}});
  c["skills"].push_back({{"name", "third"}, {"instructions", "x"}, {"allowed_tools", {"helper"}}});
  EXPECT_EQ(ErrorOf(c),
            "skills[2].allowed_tools[0]: skills call each other in a cycle: helper -> second -> "
            "third -> helper");
  c["skills"][2]["allowed_tools"] = {"weather"};
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

// --- agent and gateway ----------------------------------------------------------------------

TEST(ConfigTest, AgentRanges) {
  struct Case {
    const char* field;
    json value;
    const char* message;
  };
  for (const Case& t : {
           Case{"temperature", 2.5, "agent.temperature: out of range: 2.5 (allowed 0..2)"},
           Case{"temperature", -0.1, "agent.temperature: out of range"},
           Case{"max_tool_rounds", 0, "agent.max_tool_rounds: out of range: 0 (allowed 1..64)"},
           Case{"max_tool_rounds", 65, "agent.max_tool_rounds: out of range"},
           Case{"history_max_messages", 0, "agent.history_max_messages: out of range"},
           Case{"history_max_chars", 10, "agent.history_max_chars: out of range"},
           Case{"turn_timeout_ms", 10, "agent.turn_timeout_ms: out of range"},
           Case{"session_ttl_ms", 0, "agent.session_ttl_ms: out of range"},
           Case{"max_answer_bytes", 1023,
                "agent.max_answer_bytes: out of range: 1023 (allowed 1024..33554432)"},
           Case{"max_answer_bytes", 33554433, "agent.max_answer_bytes: out of range"},
           Case{"max_answer_bytes", "1MiB", "agent.max_answer_bytes: expected"},
           Case{"on_busy", "queue", "agent.on_busy: unsupported value \"queue\""},
           Case{"system_prompt", "", "agent.system_prompt: must not be empty"},
       }) {
    json c = Base();
    c["agent"][t.field] = t.value;
    EXPECT_STARTS_WITH(ErrorOf(c), t.message);
  }
  json c = Base();
  c["agent"] = {{"temperature", 1}, {"max_tool_rounds", 64}};  // an integer is a number
  EXPECT_EQ(ErrorOf(c), "<no error>");
}

TEST(ConfigTest, GatewayRanges) {
  json c = Base();
  c["gateway"]["max_body_bytes"] = 0;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.max_body_bytes: out of range");
  c = Base();
  c["gateway"]["max_message_chars"] = 1000001;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.max_message_chars: out of range");
  c = Base();
  c["gateway"]["flow_timeout_ms"] = 600001;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.flow_timeout_ms: out of range");
  c = Base();
  c["gateway"]["request_read_timeout_ms"] = 99;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.request_read_timeout_ms: out of range");
  c = Base();
  c["gateway"]["request_read_timeout_ms"] = "60s";
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.request_read_timeout_ms: expected an integer");
  c = Base();
  c["gateway"]["request_read_timeout_ms"] = 2500;
  auto parsed = ParseConfig(c.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ((*parsed)->gateway.request_read_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ((*ParseConfig(Base().dump()))->gateway.request_read_timeout,
            std::chrono::milliseconds(60000));
  c = Base();
  c["gateway"]["max_buffered_bytes_per_connection"] = 16383;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.max_buffered_bytes_per_connection: out of range");
  c["gateway"]["max_buffered_bytes_per_connection"] = (std::int64_t{1} << 30) + 1;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.max_buffered_bytes_per_connection: out of range");
  c["gateway"]["max_buffered_bytes_per_connection"] = "1MiB";
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.max_buffered_bytes_per_connection: expected an integer");
  c["gateway"]["max_buffered_bytes_per_connection"] = 65536;
  parsed = ParseConfig(c.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ((*parsed)->gateway.max_buffered_bytes_per_connection, 65536u);
  EXPECT_EQ((*ParseConfig(Base().dump()))->gateway.max_buffered_bytes_per_connection,
            std::size_t{1} << 20);
  c = Base();
  c["gateway"] = "fast";
  EXPECT_EQ(ErrorOf(c), "gateway: expected an object, got string");
}

TEST(ConfigTest, FlowTimeoutCoversEveryFlowsOwnTimeout) {
  auto parse = [](const json& c) {
    auto r = ParseConfig(c.dump());
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? (*r)->gateway.flow_timeout : std::chrono::milliseconds(-1);
  };
  // Absent: 10 s, or the longest flow timeout plus 1 s when that is longer.
  json c = Base();
  EXPECT_EQ(parse(c), std::chrono::milliseconds(10000));
  c["flows"][1]["endpoint"]["timeout_ms"] = 30000;
  EXPECT_EQ(parse(c), std::chrono::milliseconds(31000));
  c["flows"][1]["endpoint"]["timeout_ms"] = 600000;
  EXPECT_EQ(parse(c), std::chrono::milliseconds(600000));
  // Tools do not run on the gateway's path.
  c = Base();
  c["tools"][0]["endpoint"]["timeout_ms"] = 60000;
  EXPECT_EQ(parse(c), std::chrono::milliseconds(10000));

  // Set: used as given when no flow's own timeout is longer (equal is fine)...
  c = Base();
  c["gateway"]["flow_timeout_ms"] = 5000;  // both flows have the default 5000
  EXPECT_EQ(parse(c), std::chrono::milliseconds(5000));
  // ... and a config error naming the flow otherwise.
  c["flows"][1]["endpoint"]["timeout_ms"] = 5001;
  EXPECT_EQ(ErrorOf(c),
            "gateway.flow_timeout_ms: 5000 is shorter than flows[1].endpoint.timeout_ms (5001, "
            "flow \"leave\"): the gateway would give up before the flow's own timeout");
  c = Base();
  c["gateway"]["flow_timeout_ms"] = 1000;
  EXPECT_STARTS_WITH(ErrorOf(c), "gateway.flow_timeout_ms: 1000 is shorter than flows[0]");
}

TEST(ConfigTest, HostileInputNeverCrashes) {
  // Deep nesting, huge numbers, odd unicode: an error or a config, never a crash.
  std::string deep(100000, '[');
  EXPECT_STARTS_WITH(ErrorOfText(deep), "config: invalid JSON");
  EXPECT_EQ(ErrorOfText(deep), "config: invalid JSON: nested deeper than 256 levels");
  auto body_nested = [](int depth) {
    return R"({"tools":[{"name":"t","endpoint":{"url":"http://h/","body":)" +
           std::string(depth, '[') + std::string(depth, ']') + "}}]}";
  };
  EXPECT_EQ(ErrorOfText(body_nested(200)), "<no error>");
  EXPECT_EQ(ErrorOfText(body_nested(5000)), "config: invalid JSON: nested deeper than 256 levels");
  std::string deep_schema =
      R"({"tools":[{"name":"t","endpoint":{"url":"http://h/"},"parameters":{"type":"object","properties":{"a":)";
  for (int i = 0; i < 20; ++i) deep_schema += R"({"type":"array","items":)";
  deep_schema += R"({"type":"string"})";
  for (int i = 0; i < 20; ++i) deep_schema += "}";
  deep_schema += "}}}]}";
  EXPECT_STARTS_WITH(ErrorOfText(deep_schema), "tools[0].parameters.properties.a.items.items");
  EXPECT_CONTAINS(ErrorOfText(deep_schema), "nested too deeply");
  EXPECT_STARTS_WITH(ErrorOfText(R"({"agent":{"temperature":1e400}})"), "config: invalid JSON");
}

TEST(ConfigSummaryTest, CountsWhatTheConfigHolds) {
  auto empty = ParseConfig("{}");
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_EQ(ConfigSummary(**empty), "0 flows, 0 tools, 0 skills");
  auto one = ParseConfig(R"({"flows":[{"flow_id":"a","name":"A","trigger_patterns":["a"],
      "endpoint":{"url":"http://x/","method":"GET"}}]})");
  ASSERT_TRUE(one.ok()) << one.error().message;
  EXPECT_EQ(ConfigSummary(**one), "1 flow, 0 tools, 0 skills");
}

}  // namespace
}  // namespace wf
