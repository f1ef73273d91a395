// Many turns at once on real threads: LLM and tool callbacks from "I/O" threads, continuation
// work on a thread pool, cancels and deadlines racing them. Whatever the interleaving, every
// turn must emit seq 1..n with exactly one terminal event, last, and complete exactly once.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "agent/agent_turn.h"
#include "agent/executor.h"

namespace wf {
namespace {

/// Answers every call from its own threads: a tool round first, then a streamed answer.
class AutoLlm : public LlmClient {
 public:
  explicit AutoLlm(Executor& io) : io_(io) {}
  ChatHandle StartChat(ChatRequestOptions options, ChatCallbacks callbacks) override {
    const ChatHandle h = next_++;
    auto cancelled = std::make_shared<std::atomic<bool>>(false);
    {
      std::lock_guard<std::mutex> lock(mu_);
      flags_[h] = cancelled;
    }
    bool has_tool_result = false;
    for (const auto& m : options.messages) has_tool_result = has_tool_result || m.role() == "tool";
    const bool call_tools = options.tools && !options.tools->empty() && !has_tool_result;
    io_.Post([cancelled, call_tools, callbacks = std::move(callbacks)] {
      for (int i = 0; i < 3 && !call_tools; ++i) {
        if (*cancelled) break;
        if (callbacks.on_token) callbacks.on_token("tok ");
        std::this_thread::yield();
      }
      if (*cancelled) {
        callbacks.on_done(Error{ErrorCode::kCancelled, "cancelled"});
        return;
      }
      ChatOutcome o;
      o.usage.set_total_tokens(3);
      if (call_tools) {
        for (const char* name : {"weather", "time"}) {
          wf::v1::ToolCall c;
          c.set_id(std::string("id_") + name);
          c.set_name(name);
          c.set_arguments_json("{}");
          o.tool_calls.push_back(c);
        }
      } else {
        o.content = "tok tok tok ";
      }
      callbacks.on_done(std::move(o));
    });
    return h;
  }
  void Cancel(ChatHandle h) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = flags_.find(h); it != flags_.end()) *it->second = true;
  }

 private:
  Executor& io_;
  std::atomic<ChatHandle> next_{1};
  std::mutex mu_;
  std::map<ChatHandle, std::shared_ptr<std::atomic<bool>>> flags_;
};

class AutoTools : public ToolRunner {
 public:
  explicit AutoTools(Executor& io) : io_(io) {}
  void RunTool(const wf::v1::ToolCall& call, const TurnContext&,
               std::function<void(wf::v1::ToolResult)> done) override {
    io_.Post([name = call.name(), done = std::move(done)] {
      wf::v1::ToolResult r;
      r.set_ok(true);
      r.set_content("result of " + name);
      done(std::move(r));
    });
  }
  void RunFlow(const wf::v1::ToolCall& call, const TurnContext& ctx,
               std::function<void(wf::v1::ToolResult)> done) override {
    RunTool(call, ctx, std::move(done));
  }

 private:
  Executor& io_;
};

class PerRequestSink : public EventSink {
 public:
  void Emit(wf::v1::QueryEvent e) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_[e.request_id()].push_back(std::move(e));
  }
  std::map<std::string, std::vector<wf::v1::QueryEvent>> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<wf::v1::QueryEvent>> events_;
};

TEST(AgentTurnStress, OneTerminalEventPerTurnWhateverTheInterleaving) {
  constexpr int kTurns = 300;
  auto config = std::make_shared<Config>();
  for (const char* name : {"weather", "time"}) {
    ToolConfig t;
    t.name = name;
    t.parameters_schema = {{"type", "object"}};
    config->tools.push_back(t);
  }
  PerRequestSink sink;
  auto timer = std::make_unique<TimerThread>();
  // One pool plays the LLM's and the tools' I/O threads and the agent's executor: then a single
  // reset drains everything in order at the end (separate pools would post into each other
  // while being destroyed).
  auto pool = std::make_unique<ThreadPoolExecutor>(4);
  AutoLlm llm(*pool);
  AutoTools tools(*pool);

  std::mutex mu;
  std::map<std::string, int> done_counts;
  std::map<std::string, std::string> statuses;
  std::atomic<int> finished{0};
  std::vector<std::shared_ptr<AgentTurn>> turns;
  std::mt19937 rng(42);
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (int i = 0; i < kTurns; ++i) {
    TurnParams p;
    p.config = config;
    p.user_message = "hello " + std::to_string(i);
    p.request_id = "r" + std::to_string(i);
    p.run_id = "run" + std::to_string(i);
    p.session_id = "s" + std::to_string(i);
    // A third of the turns get a deadline of a few ms that races everything else.
    p.deadline_unix_ms = (i % 3 == 0) ? now_ms + static_cast<int>(rng() % 5) : 0;
    turns.push_back(AgentTurn::Start(AgentDeps{llm, tools, sink, *pool, *timer}, std::move(p),
                                     [&, id = "r" + std::to_string(i)](wf::v1::TurnRecord r) {
                                       std::lock_guard<std::mutex> lock(mu);
                                       ++done_counts[id];
                                       statuses[id] = r.status();
                                       ++finished;
                                     }));
    // Another third get cancelled at once, racing their first LLM call.
    if (i % 3 == 1) turns.back()->Cancel();
  }
  // Cancel the rest from this thread while they run (most will have finished by then).
  for (int i = 2; i < kTurns; i += 3) turns[static_cast<size_t>(i)]->Cancel();

  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (finished.load() < kTurns && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(finished.load(), kTurns);
  // Let stragglers (late callbacks of finished turns) run, then stop the threads.
  pool.reset();
  timer.reset();

  auto all = sink.events();
  ASSERT_EQ(all.size(), static_cast<size_t>(kTurns));
  for (const auto& [id, events] : all) {
    SCOPED_TRACE(id);
    EXPECT_EQ(done_counts[id], 1);
    int terminals = 0;
    for (size_t k = 0; k < events.size(); ++k) {
      EXPECT_EQ(events[k].seq(), k + 1);
      if (events[k].has_final() || events[k].has_error()) ++terminals;
    }
    ASSERT_EQ(terminals, 1);
    const auto& last = events.back();
    ASSERT_TRUE(last.has_final() || last.has_error());
    if (last.has_final() && !last.final().cancelled()) {
      EXPECT_EQ(statuses[id], "ok");
      EXPECT_EQ(last.final().answer(), "tok tok tok ");
    } else if (last.has_final()) {
      EXPECT_EQ(statuses[id], "cancelled");
    } else {
      EXPECT_EQ(last.error().code(), "deadline_exceeded");
      EXPECT_EQ(statuses[id], "error");
    }
  }
}

}  // namespace
}  // namespace wf
