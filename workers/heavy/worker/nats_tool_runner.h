#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "agent/interfaces.h"
#include "io/timer.h"
#include "nats/connection.h"

namespace wf {

/// Runs the agent's tool and flow calls on the lightweight pool over NATS (`<prefix>.tool.execute`
/// -> ToolResult, `<prefix>.flow.execute` -> QueryEvent final/error), asynchronously: one wildcard
/// inbox subscription demultiplexes replies by token, a Timer bounds each call by the turn's
/// deadline (and at most `max_call_time`). Thread-safe; callbacks run on a NATS delivery thread or
/// the timer thread, exactly once per call.
class NatsToolRunner final : public ToolRunner {
 public:
  NatsToolRunner(NatsConnection& conn, Timer& timer, std::string subject_prefix,
                 std::chrono::milliseconds max_call_time = std::chrono::seconds(60));
  ~NatsToolRunner() override;
  Status Start();

  void RunTool(const wf::v1::ToolCall& call, const TurnContext& ctx,
               std::function<void(wf::v1::ToolResult)> done) override;
  void RunFlow(const wf::v1::ToolCall& call, const TurnContext& ctx,
               std::function<void(wf::v1::ToolResult)> done) override;

 private:
  struct Pending {
    std::string call_id, name;
    bool flow = false;
    Timer::TaskId timeout = 0;
    std::function<void(wf::v1::ToolResult)> done;
  };
  void Send(const std::string& subject, const std::string& payload, Pending pending,
            std::chrono::milliseconds timeout);
  void OnReply(const NatsMsgView& msg);
  void Fail(uint64_t token, ErrorCode code, const std::string& message);

  NatsConnection& conn_;
  Timer& timer_;
  std::string prefix_;
  std::chrono::milliseconds max_call_time_;
  std::string inbox_;
  NatsSubscription sub_;
  std::mutex mu_;
  uint64_t next_token_ = 0;
  std::unordered_map<uint64_t, Pending> pending_;
};

/// Builds a failed ToolResult.
wf::v1::ToolResult ToolError(const std::string& call_id, const std::string& name, ErrorCode code,
                             const std::string& message);

}  // namespace wf
