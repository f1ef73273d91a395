#pragma once

#include "llm/chat_types.h"

namespace wf {

/// A chat completions endpoint, streaming. Implemented over HTTP by HttpLlmClient; tests use a
/// fake. Implementations are thread-safe: StartChat and Cancel may be called from any thread,
/// concurrently, for any number of calls at once.
class LlmClient {
 public:
  virtual ~LlmClient() = default;

  /// Starts one call and returns at once (never blocks on the network). `callbacks.on_done` runs
  /// exactly once, possibly before StartChat returns (e.g. a deadline already past); tokens
  /// (if on_token is set) arrive before it, in order. Implementations honour
  /// `options.max_answer_bytes` (content passed on up to it, then kTooLarge).
  virtual ChatHandle StartChat(ChatRequestOptions options, ChatCallbacks callbacks) = 0;

  /// Aborts the call: the transfer is stopped and on_done gets kCancelled soon after (unless it
  /// already ran). Unknown or finished handles are ignored. Never blocks, never calls on_done
  /// inline.
  virtual void Cancel(ChatHandle handle) = 0;
};

}  // namespace wf
