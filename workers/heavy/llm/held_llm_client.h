#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "llm/llm_client.h"

namespace wf {

/// An LlmClient that starts its calls at once, on `inner`, but holds what they bring (tokens,
/// outcomes) until it is told whether the caller may act on it: Release hands over what was
/// held, in order, and then lets everything through as it comes; Discard cancels the calls and
/// drops what they bring, held or still to come. For work started before the last fact it
/// depends on is known (a turn whose session PostgreSQL has not yet said is new). Thread-safe.
class HeldLlmClient final : public LlmClient {
 public:
  /// `inner` must outlive this client.
  explicit HeldLlmClient(LlmClient& inner);
  ~HeldLlmClient() override;
  HeldLlmClient(const HeldLlmClient&) = delete;
  HeldLlmClient& operator=(const HeldLlmClient&) = delete;

  /// Starts the call on `inner`. Its callbacks run as `inner` calls them once released; while
  /// held they are queued; after Discard never (then not even on_done: the caller gives the
  /// work up), and a call started after Discard is not started at all.
  ChatHandle StartChat(ChatRequestOptions options, ChatCallbacks callbacks) override;
  void Cancel(ChatHandle handle) override;

  /// Runs what was held, in the order it came, on the calling thread (callbacks arriving
  /// meanwhile wait their turn), then lets callbacks through. No-op unless holding.
  void Release();
  /// Cancels every call started on `inner` and drops what they brought. True when it was
  /// holding (false: released or discarded already).
  bool Discard();

 private:
  enum class State { kHolding, kReleased, kDiscarded };
  struct Shared {
    std::mutex mu;
    State state = State::kHolding;
    bool draining = false;  // Release is running held callbacks: new ones queue behind them
    std::deque<std::function<void()>> held;
    std::vector<ChatHandle> handles;  // calls started on inner
    /// Runs `run` now when released and nothing is queued; queues `hold()` while holding or
    /// draining; drops it when discarded.
    template <typename Run, typename Hold>
    void Deliver(Run&& run, Hold&& hold);
  };
  LlmClient& inner_;
  std::shared_ptr<Shared> shared_;  // also held by the callbacks given to inner
};

}  // namespace wf
