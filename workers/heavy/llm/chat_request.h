#pragma once

#include <string>
#include <string_view>

#include "llm/chat_types.h"

namespace wf {

/// The OpenAI chat completions request body for `options`, as JSON text: model (`default_model`
/// when options.model is empty), messages (assistant `tool_calls` as
/// {id, type:"function", function:{name, arguments}} with null content when the model said
/// nothing, tool results as {role:"tool", tool_call_id, content}), tools (ChatTools::json) with
/// tool_choice "auto", temperature, response_format json_schema (or json_object) when asked, and
/// stream true with stream_options.include_usage. Written straight into one string, the tools
/// copied as encoded once; every string is escaped and made valid UTF-8 (invalid bytes become
/// U+FFFD), so the body is always valid JSON. Pure; any thread; never throws but for bad_alloc.
std::string EncodeChatRequest(const ChatRequestOptions& options, std::string_view default_model);

}  // namespace wf
