#include "llm/chat_request.h"

#include <string>

#include "llm/utf8.h"

namespace wf {
namespace {

nlohmann::json EmptyObjectSchema() {
  return {{"type", "object"}, {"properties", nlohmann::json::object()}};
}

/// OpenAI accepts [A-Za-z0-9_-]{1,64} as a response_format name.
std::string SchemaName(std::string_view name) {
  std::string out;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    out.push_back(ok ? c : '_');
    if (out.size() == 64) break;
  }
  return out.empty() ? std::string("output") : out;
}

}  // namespace

nlohmann::json ChatMessageToJson(const wf::v1::ChatMessage& message) {
  nlohmann::json m;
  const std::string& role = message.role();
  m["role"] = role;
  if (role == "tool") {
    m["tool_call_id"] = SanitizeUtf8(message.tool_call_id());
    m["content"] = SanitizeUtf8(message.content());
    return m;
  }
  if (role == "assistant" && message.tool_calls_size() > 0) {
    // OpenAI wants null content next to tool calls when the model said nothing.
    m["content"] = message.content().empty() ? nlohmann::json(nullptr)
                                             : nlohmann::json(SanitizeUtf8(message.content()));
    nlohmann::json calls = nlohmann::json::array();
    for (const auto& call : message.tool_calls()) {
      calls.push_back({{"id", SanitizeUtf8(call.id())},
                       {"type", "function"},
                       {"function",
                        {{"name", SanitizeUtf8(call.name())},
                         {"arguments", SanitizeUtf8(call.arguments_json().empty()
                                                        ? std::string("{}")
                                                        : call.arguments_json())}}}});
    }
    m["tool_calls"] = std::move(calls);
    return m;
  }
  m["content"] = SanitizeUtf8(message.content());
  return m;
}

nlohmann::json BuildChatRequestJson(const ChatRequestOptions& options,
                                    std::string_view default_model) {
  nlohmann::json body;
  body["model"] = options.model.empty() ? std::string(default_model) : options.model;
  nlohmann::json messages = nlohmann::json::array();
  for (const auto& message : options.messages) messages.push_back(ChatMessageToJson(message));
  body["messages"] = std::move(messages);
  if (!options.tools.empty()) {
    nlohmann::json tools = nlohmann::json::array();
    for (const auto& tool : options.tools) {
      nlohmann::json fn = {{"name", tool.name}};
      if (!tool.description.empty()) fn["description"] = SanitizeUtf8(tool.description);
      const bool usable = tool.parameters.is_object() && !tool.parameters.empty();
      fn["parameters"] = usable ? tool.parameters : EmptyObjectSchema();
      tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    body["tools"] = std::move(tools);
    body["tool_choice"] = "auto";
  }
  if (options.temperature) body["temperature"] = *options.temperature;
  if (options.output_schema) {
    body["response_format"] = {
        {"type", "json_schema"},
        {"json_schema",
         {{"name", SchemaName(options.output_schema_name)}, {"schema", *options.output_schema}}}};
  } else if (options.json_object) {
    body["response_format"] = {{"type", "json_object"}};
  }
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  return body;
}

}  // namespace wf
