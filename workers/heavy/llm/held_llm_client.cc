#include "llm/held_llm_client.h"

#include <string>
#include <utility>

namespace wf {

template <typename Run, typename Hold>
void HeldLlmClient::Shared::Deliver(Run&& run, Hold&& hold) {
  std::unique_lock lock(mu);
  switch (state) {
    case State::kDiscarded:
      return;
    case State::kHolding:
      held.emplace_back(hold());
      return;
    case State::kReleased:
      if (draining) {
        held.emplace_back(hold());
        return;
      }
      break;
  }
  lock.unlock();
  run();
}

HeldLlmClient::HeldLlmClient(LlmClient& inner)
    : inner_(inner), shared_(std::make_shared<Shared>()) {}

HeldLlmClient::~HeldLlmClient() = default;

ChatHandle HeldLlmClient::StartChat(ChatRequestOptions options, ChatCallbacks callbacks) {
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->state == State::kDiscarded) return 0;
  }
  // The callbacks are shared with what is held, which may run after inner dropped its copy.
  ChatCallbacks wrapped;
  std::shared_ptr<Shared> shared = shared_;
  if (callbacks.on_token) {
    auto on_token =
        std::make_shared<std::function<void(std::string_view)>>(std::move(callbacks.on_token));
    wrapped.on_token = [shared, on_token](std::string_view token) {
      shared->Deliver([&] { (*on_token)(token); },
                      [&] {
                        return std::function<void()>(
                            [on_token, text = std::string(token)] { (*on_token)(text); });
                      });
    };
  }
  auto on_done =
      std::make_shared<std::function<void(Result<ChatOutcome>)>>(std::move(callbacks.on_done));
  wrapped.on_done = [shared, on_done](Result<ChatOutcome> outcome) {
    shared->Deliver([&] { (*on_done)(std::move(outcome)); },
                    [&] {
                      auto box = std::make_shared<Result<ChatOutcome>>(std::move(outcome));
                      return std::function<void()>([on_done, box] { (*on_done)(std::move(*box)); });
                    });
  };
  const ChatHandle handle = inner_.StartChat(std::move(options), std::move(wrapped));
  std::lock_guard lock(shared_->mu);
  if (handle != 0) shared_->handles.push_back(handle);
  return handle;
}

void HeldLlmClient::Cancel(ChatHandle handle) { inner_.Cancel(handle); }

void HeldLlmClient::Release() {
  std::unique_lock lock(shared_->mu);
  if (shared_->state != State::kHolding) return;
  shared_->state = State::kReleased;
  shared_->draining = true;
  while (!shared_->held.empty()) {
    std::deque<std::function<void()>> batch;
    batch.swap(shared_->held);
    lock.unlock();
    for (auto& run : batch) run();
    lock.lock();
  }
  shared_->draining = false;
}

bool HeldLlmClient::Discard() {
  std::vector<ChatHandle> handles;
  std::deque<std::function<void()>> dropped;  // destroyed outside the lock
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->state != State::kHolding) return false;
    shared_->state = State::kDiscarded;
    dropped.swap(shared_->held);
    handles = shared_->handles;
  }
  for (ChatHandle handle : handles) inner_.Cancel(handle);
  return true;
}

}  // namespace wf
