#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/chat_types.h"

namespace wf {

/// The OpenAI chat completions request body for `options`: model (`default_model` when
/// options.model is empty), messages (assistant `tool_calls` as
/// {id, type:"function", function:{name, arguments}}, tool results as {role:"tool", tool_call_id,
/// content}), tools as {type:"function", function:{name, description, parameters}} with
/// tool_choice "auto", temperature, stream true with stream_options.include_usage, and
/// response_format json_schema (or json_object) when asked. Message text is made valid UTF-8.
/// Pure; any thread.
nlohmann::json BuildChatRequestJson(const ChatRequestOptions& options,
                                    std::string_view default_model);

/// One ChatMessage in OpenAI form (see BuildChatRequestJson). Pure.
nlohmann::json ChatMessageToJson(const wf::v1::ChatMessage& message);

}  // namespace wf
