#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error/error.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {

/// A function the model may call (`tools[].function` of a chat completions request).
struct ChatToolSpec {
  std::string name;           ///< [A-Za-z0-9_-]{1,64}, as validated by the config.
  std::string description;
  nlohmann::json parameters;  ///< JSON Schema of the arguments; null = an empty object schema.
};

/// The functions offered to the model, with the `tools` array's JSON text encoded once: a
/// catalog builds it once and every call that offers the same functions shares it. Immutable;
/// any thread.
class ChatTools {
 public:
  explicit ChatTools(std::vector<ChatToolSpec> specs);

  const std::vector<ChatToolSpec>& specs() const { return specs_; }
  /// `[{"type":"function","function":{"name","description","parameters"}}, ...]`: no
  /// `description` when it is empty, an empty object schema when `parameters` is not a non-empty
  /// object, invalid UTF-8 replaced by U+FFFD.
  const std::string& json() const { return json_; }
  bool empty() const { return specs_.empty(); }
  std::size_t size() const { return specs_.size(); }

 private:
  std::vector<ChatToolSpec> specs_;
  std::string json_;
};

/// Everything one chat completions call needs. Plain data.
struct ChatRequestOptions {
  /// The model; "" = the client's default model.
  std::string model;
  /// The conversation, oldest first (system prompt first when there is one).
  std::vector<wf::v1::ChatMessage> messages;
  /// Functions offered; null or empty = no `tools` field (and no tool_choice).
  std::shared_ptr<const ChatTools> tools;
  /// Sampling temperature; absent = the server's default.
  std::optional<double> temperature;
  /// When set: `response_format: {type: json_schema, json_schema: {name, schema}}`.
  std::optional<nlohmann::json> output_schema;
  /// Name given to output_schema ([A-Za-z0-9_-]{1,64}; sanitised by the builder).
  std::string output_schema_name = "output";
  /// When true and no output_schema: `response_format: {type: json_object}`.
  bool json_object = false;
  /// The call, including retries and backoff, must be over by then.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  /// For log lines only (never the prompt, never a key).
  std::string request_id;
  /// The most text the call may produce, answer content and tool calls (ids, names, arguments)
  /// together, in bytes; 0 = the client's own limit. Past it the call is cut off at once (its
  /// connection closed) and ends with kTooLarge, after the content up to the limit was passed
  /// on as tokens. Keeps what one answer costs in memory close to this bound.
  std::size_t max_answer_bytes = 0;
};

/// What one finished chat completions call produced.
struct ChatOutcome {
  std::string content;                          ///< The assistant text (all content deltas).
  std::vector<wf::v1::ToolCall> tool_calls;     ///< In index order; `kind` left empty.
  std::string finish_reason;                    ///< "stop", "tool_calls", "length", ... or "".
  wf::v1::Usage usage;                          ///< As reported (zeros when the server did not).
  int attempts = 1;                             ///< HTTP attempts made (1 = no retry).
};

/// Callbacks of one chat call. Both run on the HTTP client's I/O thread (or the client's timer
/// thread) and must not block.
struct ChatCallbacks {
  /// A piece of the assistant text, always whole UTF-8 characters. May be empty (not set).
  std::function<void(std::string_view token)> on_token;
  /// Exactly once per StartChat: the outcome, or kCancelled / kDeadlineExceeded / kLlmError, or
  /// kTooLarge when the answer grew past ChatRequestOptions::max_answer_bytes.
  std::function<void(Result<ChatOutcome>)> on_done;
};

/// Identifies a chat call for Cancel. 0 is never a valid handle.
using ChatHandle = std::uint64_t;

}  // namespace wf
