#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "wf/v1/query.pb.h"

namespace wf {

/// Who and when a tool call belongs to; passed to the ToolRunner with every call.
struct TurnContext {
  std::string session_id;
  std::string request_id;
  std::string run_id;
  std::string user_id;
  std::string user_message;  ///< The turn's user message ({user_message} of flows).
  std::int64_t deadline_unix_ms = 0;  ///< The turn's deadline (Unix epoch ms), for the wire.
  std::chrono::steady_clock::time_point deadline;  ///< The same deadline, for local timers.
};

/// Runs tools and flows for the agent (the heavy worker implements it over NATS
/// `wf.tool.execute` / `wf.flow.execute`; tests use a fake). Thread-safe; both calls must not
/// block and call `done` exactly once, on any thread, possibly before they return. `done` is
/// called on failure too (ok=false with an error), at the latest shortly after ctx.deadline.
class ToolRunner {
 public:
  virtual ~ToolRunner() = default;
  /// Runs configured tool `call.name` with `call.arguments_json` (a JSON object text);
  /// `call.id` is the model's call id (ExecuteToolRequest.call_id).
  virtual void RunTool(const wf::v1::ToolCall& call, const TurnContext& ctx,
                       std::function<void(wf::v1::ToolResult)> done) = 0;
  /// Runs flow `call.name` (a flow_id) with `call.arguments_json` as its parameters; the
  /// flow's rendered answer (Final.answer) is the result's content.
  virtual void RunFlow(const wf::v1::ToolCall& call, const TurnContext& ctx,
                       std::function<void(wf::v1::ToolResult)> done) = 0;
};

/// Receives every event of a turn, in order, with `request_id` and `seq` already set (the heavy
/// worker publishes them to the reply subject). Called with the turn's lock held, from whichever
/// thread produced the event: must not block and must not call back into the turn.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Emit(wf::v1::QueryEvent event) = 0;
};

/// Runs continuation work off the callback threads (curl, NATS, timers). Post must not block
/// and must not run the task inline; tasks may run on any of the executor's threads.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual void Post(std::function<void()> task) = 0;
};

}  // namespace wf
