#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "error/error.h"
#include "llm/chat_types.h"

namespace wf {

/// Builds one ChatOutcome from the `chat.completion.chunk` objects of a streamed response:
/// content deltas are concatenated and handed to `on_token` as they come (held back only while a
/// UTF-8 character is incomplete), tool calls are assembled by `index` (id and name from the first
/// delta that has them, argument fragments concatenated byte for byte, so a fragment may end inside
/// a UTF-8 character), finish_reason and usage are kept. Only choice 0 is read. A delta without an
/// `index` continues the last call unless it brings a new id; a delta whose id differs from that
/// of the call at its index starts a new call (servers that number every call 0, as Ollama does;
/// calls sharing an index keep their arrival order). `refusal` deltas count as content.
///
/// Pure, no I/O; not thread-safe (one per response).
class ChatStreamAssembler {
 public:
  using TokenFn = std::function<void(std::string_view)>;

  /// Applies one chunk object. Errors: kLlmError when the chunk is an `{"error": ...}` object,
  /// kTooLarge ("LLM answer exceeded N bytes") when the answer would grow beyond `max_bytes`
  /// (constructor): content, tool call ids, names and arguments counted together. Content is
  /// then kept (and passed to on_token) up to the bound, cut at a character boundary; the
  /// assembler is not to be fed again.
  Status ApplyChunk(const nlohmann::json& chunk, const TokenFn& on_token);

  /// Parses one SSE `data` payload (a JSON chunk) and applies it. Errors: kLlmError for text that
  /// is not a JSON object, plus ApplyChunk's.
  Status ApplyData(std::string_view data, const TokenFn& on_token);

  /// Applies a whole non-streamed `chat.completion` object (a server that ignored
  /// `stream: true`), as if its message had arrived as one delta. Errors as ApplyChunk.
  Status ApplyCompletion(const nlohmann::json& completion, const TokenFn& on_token);

  /// Flushes any held-back bytes of an incomplete character to `on_token` and returns the
  /// outcome. Call once, at the end.
  ChatOutcome Finish(const TokenFn& on_token);

  /// True once any content was passed to on_token or any tool call delta arrived (after which a
  /// failed call cannot be retried without the user seeing a repeat).
  bool produced_output() const { return produced_output_; }
  /// True once a finish_reason arrived.
  bool finished() const { return !finish_reason_.empty(); }
  /// True once a usage object arrived.
  bool has_usage() const { return has_usage_; }

  /// `secret` (e.g. the API key) is replaced by "***" in every error message built from what the
  /// server sent, before any cut, since some servers and proxies echo the key they received.
  explicit ChatStreamAssembler(std::size_t max_bytes = 8u << 20, std::string secret = {})
      : max_bytes_(max_bytes), secret_(std::move(secret)) {}

 private:
  struct PendingCall {
    int index = 0;
    std::string id;
    std::string name;
    std::string arguments;
  };

  /// What a tool call delta (an element of `delta.tool_calls`) says, however it was read.
  struct ToolCallDelta {
    bool has_index = false;  ///< `index` is an integer
    long long index = 0;
    std::string id;             ///< `id` as AsString reads it; empty when absent
    bool has_function = false;  ///< `function` is an object
    bool has_name = false;      ///< `function.name` is a string
    std::string name;
    bool has_arguments = false;  ///< `function.arguments` is present
    std::string arguments;       ///< its string, or an object's JSON text; else empty
  };
  /// A step of a chunk read by ScanPlainChunk, in the order ApplyChunk would take it.
  struct ScannedStep {
    enum Kind { kUsage, kContent, kFinishReason, kToolCall } kind = kContent;
    std::string text;  ///< kContent, kFinishReason
    std::uint32_t prompt_tokens = 0, completion_tokens = 0, total_tokens = 0;  ///< kUsage
    ToolCallDelta call;                                                        ///< kToolCall
  };
  /// Reads a chunk of the common shape (valid JSON within the nesting limit; an object with no
  /// `error` but null, and no choice with a numeric `index` other than `0`; tool call deltas
  /// whose `index` is absent or an integer within long long, whose `id` is not a number and
  /// whose arguments are not an object) into `steps`, without a DOM. False for any other
  /// chunk, and then `steps` is to be ignored: ApplyChunk reads it.
  static bool ScanPlainChunk(std::string_view data, std::vector<ScannedStep>& steps);
  /// One tool call delta (a validated object) into `out`; false for one ScanPlainChunk leaves
  /// to the DOM (see above).
  static bool ScanToolCallDelta(std::string_view call, ToolCallDelta& out);
  Status ApplyDelta(const nlohmann::json& delta, const TokenFn& on_token);
  Status ApplyToolCallDelta(const ToolCallDelta& delta);
  Status AppendContent(std::string_view text, const TokenFn& on_token);
  /// Bytes the answer may still grow by.
  std::size_t Room() const;
  Status TooLarge() const;
  void ApplyUsage(const nlohmann::json& usage);
  void SetUsage(std::uint32_t prompt, std::uint32_t completion, std::uint32_t total);

  std::size_t max_bytes_;
  std::string secret_;
  std::string content_;
  std::size_t emitted_ = 0;  ///< Bytes of content_ already passed to on_token.
  std::vector<PendingCall> calls_;
  std::size_t last_call_ = 0;  ///< Position in calls_ of the call a delta without index continues.
  std::size_t tool_bytes_ = 0;  ///< Bytes of the ids, names and arguments in calls_.
  std::string finish_reason_;
  wf::v1::Usage usage_;
  bool has_usage_ = false;
  bool produced_output_ = false;
};

/// The human-readable message of an OpenAI-style error body (`{"error":{"message":...}}` or
/// `{"message":...}`), else the body itself; every occurrence of `secret` (when not empty)
/// replaced by "***", then made valid UTF-8 and cut to `max_bytes`. Pure.
std::string UpstreamErrorMessage(std::string_view body, std::size_t max_bytes = 300,
                                 std::string_view secret = {});

/// `text` with every occurrence of `secret` (when not empty) replaced by "***". Pure.
std::string RedactSecret(std::string text, std::string_view secret);

}  // namespace wf
