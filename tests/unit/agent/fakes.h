#pragma once

// Fakes of the agent's collaborators, driven step by step by the tests.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/interfaces.h"
#include "io/timer.h"
#include "llm/llm_client.h"

namespace wf::testing {

/// An LlmClient whose calls the test answers. Thread-safe.
class FakeLlm : public LlmClient {
 public:
  struct Call {
    ChatHandle handle = 0;
    ChatRequestOptions options;
    ChatCallbacks callbacks;
    bool done = false;
    bool cancelled = false;
  };

  ChatHandle StartChat(ChatRequestOptions options, ChatCallbacks callbacks) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto call = std::make_shared<Call>();
    call->handle = next_++;
    call->options = std::move(options);
    call->callbacks = std::move(callbacks);
    calls_.push_back(call);
    return call->handle;
  }

  void Cancel(ChatHandle handle) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : calls_) {
      if (c->handle == handle) c->cancelled = true;
    }
    cancels_.push_back(handle);
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.size();
  }
  std::shared_ptr<Call> at(size_t i) const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.at(i);
  }
  std::shared_ptr<Call> last() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.back();
  }
  std::vector<ChatHandle> cancels() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancels_;
  }

  /// Streams `text` as tokens (one per word) of call `i`.
  void Tokens(size_t i, const std::vector<std::string>& pieces) {
    auto c = at(i);
    for (const auto& p : pieces) {
      if (c->callbacks.on_token) c->callbacks.on_token(p);
    }
  }
  /// Ends call `i` with a plain answer (its tokens streamed first).
  void Answer(size_t i, const std::string& text, uint32_t prompt = 10, uint32_t completion = 5) {
    Tokens(i, {text});
    ChatOutcome o;
    o.content = text;
    o.finish_reason = "stop";
    SetUsage(o, prompt, completion);
    Done(i, std::move(o));
  }
  /// Ends call `i` asking for tools: {id, name, arguments}.
  void CallTools(size_t i, const std::vector<std::vector<std::string>>& calls,
                 const std::string& content = "", uint32_t prompt = 10, uint32_t completion = 5) {
    ChatOutcome o;
    o.content = content;
    for (const auto& c : calls) {
      wf::v1::ToolCall tc;
      tc.set_id(c.at(0));
      tc.set_name(c.at(1));
      tc.set_arguments_json(c.at(2));
      o.tool_calls.push_back(tc);
    }
    o.finish_reason = "tool_calls";
    SetUsage(o, prompt, completion);
    Done(i, std::move(o));
  }
  void Fail(size_t i, Error error) { Done(i, std::move(error)); }
  void Done(size_t i, Result<ChatOutcome> result) {
    auto c = at(i);
    c->done = true;
    c->callbacks.on_done(std::move(result));
  }

 private:
  static void SetUsage(ChatOutcome& o, uint32_t prompt, uint32_t completion) {
    o.usage.set_prompt_tokens(prompt);
    o.usage.set_completion_tokens(completion);
    o.usage.set_total_tokens(prompt + completion);
  }

  mutable std::mutex mu_;
  ChatHandle next_ = 1;
  std::vector<std::shared_ptr<Call>> calls_;
  std::vector<ChatHandle> cancels_;
};

/// A ToolRunner whose calls the test completes. Thread-safe.
class FakeTools : public ToolRunner {
 public:
  struct Run {
    std::string what;  ///< "tool" or "flow"
    wf::v1::ToolCall call;
    TurnContext ctx;
    std::function<void(wf::v1::ToolResult)> done;
  };
  void RunTool(const wf::v1::ToolCall& call, const TurnContext& ctx,
               std::function<void(wf::v1::ToolResult)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    runs_.push_back(Run{"tool", call, ctx, std::move(done)});
  }
  void RunFlow(const wf::v1::ToolCall& call, const TurnContext& ctx,
               std::function<void(wf::v1::ToolResult)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    runs_.push_back(Run{"flow", call, ctx, std::move(done)});
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_.size();
  }
  Run at(size_t i) const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_.at(i);
  }
  void Complete(size_t i, bool ok, const std::string& content) {
    wf::v1::ToolResult r;
    r.set_ok(ok);
    r.set_content(content);
    if (!ok) {
      r.mutable_error()->set_code("upstream_error");
      r.mutable_error()->set_message(content);
    }
    at(i).done(std::move(r));
  }

 private:
  mutable std::mutex mu_;
  std::vector<Run> runs_;
};

/// Records every event. Thread-safe.
class RecordingSink : public EventSink {
 public:
  void Emit(wf::v1::QueryEvent event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }
  std::vector<wf::v1::QueryEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<wf::v1::QueryEvent> events_;
};

/// A Timer whose tasks run when the test says so. Thread-safe.
class ManualTimer : public Timer {
 public:
  TaskId After(std::chrono::milliseconds delay, std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    const TaskId id = next_++;
    tasks_[id] = std::move(fn);
    delays_.push_back(delay);
    return id;
  }
  bool Cancel(TaskId id) override {
    std::lock_guard<std::mutex> lock(mu_);
    return tasks_.erase(id) > 0;
  }
  void RunAll() {
    for (;;) {
      std::function<void()> fn;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (tasks_.empty()) return;
        fn = std::move(tasks_.begin()->second);
        tasks_.erase(tasks_.begin());
      }
      fn();
    }
  }
  size_t pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tasks_.size();
  }

 private:
  mutable std::mutex mu_;
  TaskId next_ = 1;
  std::map<TaskId, std::function<void()>> tasks_;
  std::vector<std::chrono::milliseconds> delays_;
};

}  // namespace wf::testing
