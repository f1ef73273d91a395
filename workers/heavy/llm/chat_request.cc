#include "llm/chat_request.h"

#include <nlohmann/json.hpp>

#include "codec/json_dump.h"
#include "codec/json_text.h"

namespace wf {
namespace {

constexpr std::string_view kEmptyObjectSchema = R"({"type":"object","properties":{}})";

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

/// Appends `,"name":` and `text` as a JSON string.
void AppendField(std::string* out, std::string_view name, std::string_view text) {
  out->append(",\"").append(name).append("\":");
  AppendJsonString(out, text);
}

void AppendMessage(std::string* out, const wf::v1::ChatMessage& message) {
  const std::string& role = message.role();
  out->append("{\"role\":");
  AppendJsonString(out, role);
  if (role == "tool") {
    AppendField(out, "tool_call_id", message.tool_call_id());
    AppendField(out, "content", message.content());
  } else if (role == "assistant" && message.tool_calls_size() > 0) {
    // OpenAI wants null content next to tool calls when the model said nothing.
    if (message.content().empty()) {
      out->append(",\"content\":null");
    } else {
      AppendField(out, "content", message.content());
    }
    out->append(",\"tool_calls\":[");
    bool first = true;
    for (const auto& call : message.tool_calls()) {
      if (!first) out->push_back(',');
      first = false;
      out->append("{\"id\":");
      AppendJsonString(out, call.id());
      out->append(",\"type\":\"function\",\"function\":{\"name\":");
      AppendJsonString(out, call.name());
      AppendField(out, "arguments",
                  call.arguments_json().empty() ? std::string_view("{}") : call.arguments_json());
      out->append("}}");
    }
    out->push_back(']');
  } else {
    AppendField(out, "content", message.content());
  }
  out->push_back('}');
}

}  // namespace

ChatTools::ChatTools(std::vector<ChatToolSpec> specs) : specs_(std::move(specs)) {
  json_.push_back('[');
  for (const ChatToolSpec& tool : specs_) {
    if (json_.size() > 1) json_.push_back(',');
    json_.append(R"({"type":"function","function":{"name":)");
    AppendJsonString(&json_, tool.name);
    if (!tool.description.empty()) AppendField(&json_, "description", tool.description);
    json_.append(",\"parameters\":");
    const bool usable = tool.parameters.is_object() && !tool.parameters.empty();
    json_.append(usable ? DumpJson(tool.parameters) : std::string(kEmptyObjectSchema));
    json_.append("}}");
  }
  json_.push_back(']');
}

std::string EncodeChatRequest(const ChatRequestOptions& options, std::string_view default_model) {
  const std::string_view model = options.model.empty() ? default_model : options.model;
  const bool tools = options.tools != nullptr && !options.tools->empty();
  std::size_t size = 192 + model.size() + (tools ? options.tools->json().size() : 0);
  for (const auto& message : options.messages) size += 40 + message.ByteSizeLong();
  std::string out;
  out.reserve(size);
  out.append("{\"model\":");
  AppendJsonString(&out, model);
  out.append(",\"messages\":[");
  bool first = true;
  for (const auto& message : options.messages) {
    if (!first) out.push_back(',');
    first = false;
    AppendMessage(&out, message);
  }
  out.push_back(']');
  if (tools) {
    out.append(",\"tools\":").append(options.tools->json());
    out.append(",\"tool_choice\":\"auto\"");
  }
  if (options.temperature) {
    out.append(",\"temperature\":").append(nlohmann::json(*options.temperature).dump());
  }
  if (options.output_schema) {
    out.append(R"(,"response_format":{"type":"json_schema","json_schema":{"name":)");
    AppendJsonString(&out, SchemaName(options.output_schema_name));
    out.append(",\"schema\":").append(DumpJson(*options.output_schema)).append("}}");
  } else if (options.json_object) {
    out.append(R"(,"response_format":{"type":"json_object"})");
  }
  out.append(R"(,"stream":true,"stream_options":{"include_usage":true}})");
  return out;
}

}  // namespace wf
