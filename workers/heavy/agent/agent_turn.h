#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/interfaces.h"
#include "agent/tool_catalog.h"
#include "config/config.h"
#include "io/timer.h"
#include "llm/llm_client.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf {

/// The collaborators of agent turns; all must outlive every turn started with them.
struct AgentDeps {
  LlmClient& llm;
  ToolRunner& tools;
  EventSink& events;
  Executor& executor;
  Timer& timer;  ///< Arms the turn deadline.
};

/// One user message to answer with the agent.
struct TurnParams {
  std::shared_ptr<const Config> config;          ///< Required.
  std::vector<wf::v1::ChatMessage> history;      ///< The session's stored messages, oldest first.
  std::string user_message;
  std::string session_id;
  std::string request_id;  ///< Set on every event.
  std::string run_id;      ///< Identifies the stored turn (Final.run_id, TurnRecord.run_id).
  std::string user_id;
  /// Absolute deadline, Unix epoch ms; 0 = now + config.agent.turn_timeout.
  std::int64_t deadline_unix_ms = 0;
  /// False: no `token` events (a non-streaming client); everything else is the same.
  bool stream_tokens = true;
  /// True: Start sends the first LLM request from the calling thread (which must be allowed to
  /// build the request: an executor thread, say, not a NATS or curl callback) instead of posting
  /// it to the executor, saving a thread hand-off before the first token.
  bool first_call_on_caller = false;
};

/// Called once per turn, after its terminal event was emitted, with what to store. Runs on any
/// thread (the one that ended the turn); must not block.
using TurnDoneCallback = std::function<void(wf::v1::TurnRecord)>;

/// The agent loop of one turn, as an asynchronous state machine: no thread of its own, so one
/// process holds hundreds of turns. LLM and tool callbacks (curl, NATS threads) only update state
/// and emit events under the turn's mutex; starting the next LLM call or the tool calls is posted
/// to the Executor.
///
/// Behaviour:
/// - The model sees config.agent.system_prompt, the history trimmed by TrimHistory (oldest whole
///   turns dropped to fit history_max_messages / history_max_chars), then the user message, and
///   is offered every tool, flow (named by flow_id) and skill (ToolCatalog::ForAgent).
/// - Content is streamed as `token` events. When the model calls tools, a `tool_call` event is
///   emitted per call, all calls of the response run in parallel, a `tool_result` event is emitted
///   per result as it arrives, and the results go back to the model in call order. The loop ends
///   when the model answers without tool calls: a `final` event (route "agent", run_id, session_id,
///   usage summed over every LLM call of the turn, sub-agents included).
/// - A name the model invents gets a tool result saying so (with the available names), and
///   arguments that are not a JSON object get an error result: the model can recover.
/// - Round limit (chosen behaviour): after config.agent.max_tool_rounds rounds of tool calls, a
///   response that asks for more tools ends the turn normally (status "ok") with a `final` answer
///   made of the model's text so far plus a sentence saying the tool-round limit was reached; the
///   unexecuted calls are not stored.
/// - Skills, mode "agent": a sub-agent with the skill's instructions as system prompt, only its
///   allowed_tools, its model if set and its own max_tool_rounds budget; its final answer is the
///   tool result. Its tokens and its own tool calls are not emitted. Skills nest at most
///   kMaxSkillDepth deep. Mode "function": one LLM call without tools, with the skill's
///   instructions plus a request to answer with JSON only and response_format json_schema
///   (output_schema); the answer is parsed and validated (ValidateAgainstSchema) and becomes the
///   tool result, or an error result saying what is wrong.
/// - The input the skill gets as its user message: the `input` argument when the arguments are
///   exactly one string member, else the arguments' JSON text.
/// - Cancel(): the LLM call is aborted and pending tool results are no longer awaited; the turn
///   ends at once with a `final` event with cancelled=true and the partial answer (the text
///   streamed by the LLM call in flight), stored with status "cancelled".
/// - Deadline: when it passes, the same, but an `error` event deadline_exceeded and status
///   "error". An LLM failure: an `error` event (llm_error), status "error".
/// - Exactly one terminal event (final or error) per turn, whatever the order of callbacks;
///   `seq` is 1, 2, 3, ... The stored messages (TurnRecord) are the user message, every complete
///   round (assistant message with its tool calls, then one tool message per call; a round cut
///   short by cancel/deadline/error gets a synthesised "not completed" result for calls without
///   one), and the final assistant answer (the partial one when cut short, if non-empty).
///
/// Thread-safety: Start and Cancel may be called from any thread.
class AgentTurn : public std::enable_shared_from_this<AgentTurn> {
 public:
  /// How deep skills may call skills (the main agent is depth 0).
  static constexpr int kMaxSkillDepth = 3;
  /// A tool result longer than this (bytes) is cut before it goes back to the model.
  static constexpr std::size_t kMaxToolResultBytes = 32 * 1024;

  /// Starts a turn and returns at once; the first LLM call is posted to the executor (or sent
  /// from the calling thread, see TurnParams::first_call_on_caller). `on_done`
  /// runs exactly once. Keep the returned pointer to Cancel; the turn keeps itself alive while
  /// callbacks are pending.
  static std::shared_ptr<AgentTurn> Start(AgentDeps deps, TurnParams params,
                                          TurnDoneCallback on_done);

  /// Cancels the turn (no-op once it ended). Never blocks on the network; the terminal event is
  /// emitted and on_done runs before Cancel returns, on the caller's thread.
  void Cancel();

  /// True once the terminal event was emitted and on_done has returned: from then on the turn
  /// posts nothing to the executor and calls nothing of its owner (so the owner may shut its
  /// executors down).
  bool finished() const;

  const std::string& request_id() const { return params_.request_id; }

  ~AgentTurn();

 private:
  struct Loop;  // one conversation with the model (the main agent, a sub-agent, a function call)
  struct Actions;
  struct LoopResult;
  enum class EndKind { kOk, kCancelled, kDeadline, kError };

  AgentTurn(AgentDeps deps, TurnParams params, TurnDoneCallback on_done);

  void Begin();
  void StartCall(const std::shared_ptr<Loop>& loop);
  void OnToken(const std::shared_ptr<Loop>& loop, std::uint64_t ticket, std::string_view token);
  void OnChatDone(const std::shared_ptr<Loop>& loop, std::uint64_t ticket,
                  Result<ChatOutcome> result);
  void DispatchTools(const std::shared_ptr<Loop>& loop, int round);
  void OnToolResult(const std::shared_ptr<Loop>& loop, int round, std::size_t index,
                    wf::v1::ToolResult result);
  void OnDeadline();

  void HandleOutcomeLocked(const std::shared_ptr<Loop>& loop, ChatOutcome outcome, Actions& act);
  void HandleFunctionOutcomeLocked(const std::shared_ptr<Loop>& loop, const ChatOutcome& outcome,
                                   Actions& act);
  void DeliverToolResultLocked(const std::shared_ptr<Loop>& loop, int round, std::size_t index,
                               wf::v1::ToolResult result, Actions& act);
  void StartSkillLocked(const std::shared_ptr<Loop>& parent, int round, std::size_t index,
                        const wf::v1::ToolCall& call, const SkillConfig& skill, Actions& act);
  void FinishLoopLocked(const std::shared_ptr<Loop>& loop, LoopResult result, Actions& act);
  void EndTurnLocked(EndKind kind, const std::string& answer, const Error& error, Actions& act);
  void EmitLocked(wf::v1::QueryEvent event);
  wf::v1::ChatMessage MakeMessage(std::string role, std::string content) const;
  TurnContext Context() const;

  AgentDeps deps_;
  TurnParams params_;
  TurnDoneCallback on_done_;
  std::shared_ptr<const ToolCatalog> catalog_;
  std::chrono::steady_clock::time_point deadline_;
  std::int64_t deadline_unix_ms_ = 0;
  std::int64_t started_unix_ms_ = 0;

  mutable std::mutex mu_;
  bool finished_ = false;
  bool on_done_returned_ = false;
  std::uint64_t seq_ = 0;
  wf::v1::Usage usage_;
  /// The main loop's last answer's finish_reason (Final::finish_reason).
  std::string finish_reason_;
  std::shared_ptr<Loop> main_;
  /// LLM calls in flight, by ticket; the handle once StartChat returned.
  std::map<std::uint64_t, std::optional<ChatHandle>> chats_;
  std::uint64_t next_ticket_ = 1;
  Timer::TaskId deadline_task_ = 0;
};

}  // namespace wf
