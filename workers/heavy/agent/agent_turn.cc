#include "agent/agent_turn.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <set>
#include <utility>

#include "agent/history.h"
#include "agent/output_validation.h"
#include "codec/json_dump.h"
#include "codec/json_limits.h"
#include "llm/utf8.h"

namespace wf {

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// The router agent's catalog for a config, built once per Config (the last one is cached).
std::shared_ptr<const ToolCatalog> AgentCatalog(const std::shared_ptr<const Config>& config) {
  static std::mutex mu;
  static std::weak_ptr<const Config> cached_config;
  static std::shared_ptr<const ToolCatalog> cached;
  std::lock_guard<std::mutex> lock(mu);
  if (cached && cached_config.lock() == config) return cached;
  cached = std::make_shared<const ToolCatalog>(ToolCatalog::ForAgent(*config));
  cached_config = config;
  return cached;
}

/// What a skill is given as its user message (see AgentTurn's contract).
std::string SkillInput(const std::string& arguments_json) {
  Result<nlohmann::json> args = ParseBoundedJson(arguments_json);
  if (args.ok() && args->is_object() && args->size() == 1 && args->begin().value().is_string()) {
    return args->begin().value().get<std::string>();
  }
  return arguments_json;
}

/// The text a tool result is shown to the model as.
std::string ToolResultText(const wf::v1::ToolResult& r) {
  std::string text;
  if (r.ok()) {
    text = r.content().empty() ? std::string("(empty result)") : r.content();
  } else {
    text = "Error";
    if (!r.error().code().empty()) text += " (" + r.error().code() + ")";
    text += ": " + r.error().message();
    if (!r.content().empty()) text += "\n" + r.content();
  }
  return TruncateUtf8(text, AgentTurn::kMaxToolResultBytes);
}

wf::v1::ToolResult ErrorResult(const std::string& code, const std::string& message) {
  wf::v1::ToolResult r;
  r.set_ok(false);
  r.mutable_error()->set_code(code);
  r.mutable_error()->set_message(message);
  return r;
}

void AddUsage(wf::v1::Usage& total, const wf::v1::Usage& u) {
  total.set_prompt_tokens(total.prompt_tokens() + u.prompt_tokens());
  total.set_completion_tokens(total.completion_tokens() + u.completion_tokens());
  total.set_total_tokens(total.total_tokens() + u.total_tokens());
}

/// Ends the stored partial answer of a call cut off at agent.max_answer_bytes.
std::string CutMarker(std::size_t bound) {
  return "\n[answer cut: the model's answer exceeded " + std::to_string(bound) + " bytes]";
}

std::string LimitNotice(int rounds) {
  return "(I stopped here: the limit of " + std::to_string(rounds) +
         " tool rounds for one answer was reached before I could finish.)";
}

}  // namespace

/// Work to do once the turn's mutex is released: posts, cancels, the completion callback.
struct AgentTurn::Actions {
  std::vector<std::function<void()>> later;
  void Run() {
    for (auto& fn : later) {
      try {
        fn();
      } catch (const std::exception& e) {
        spdlog::error("agent turn action threw: {}", e.what());
      }
    }
  }
};

/// How a loop ended.
struct AgentTurn::LoopResult {
  std::optional<Error> error;  ///< Set when the loop failed.
  std::string answer;          ///< The final answer (or the function's JSON).
};

/// One conversation with the model. Guarded by the turn's mutex.
struct AgentTurn::Loop {
  bool main = false;
  bool function = false;  ///< A function-mode skill: one call, JSON out.
  int depth = 0;
  const SkillConfig* skill = nullptr;
  std::shared_ptr<const ToolCatalog> catalog;
  std::string model;
  std::vector<wf::v1::ChatMessage> prefix;  ///< System prompt and history (not stored).
  std::vector<wf::v1::ChatMessage> added;   ///< This turn's messages, the user message first.
  int rounds = 0;                           ///< Tool rounds completed.
  int max_rounds = 0;
  bool finished = false;
  std::uint64_t ticket = 0;   ///< LLM call in flight, 0 when none.
  std::string partial;        ///< Text streamed by the call in flight.
  std::vector<wf::v1::ToolCall> calls;                    ///< The round in flight.
  std::vector<std::optional<wf::v1::ToolResult>> results;
  std::size_t pending = 0;
  /// Called (lock held) when the loop ends.
  std::function<void(LoopResult, Actions&)> on_finish;
};

AgentTurn::AgentTurn(AgentDeps deps, TurnParams params, TurnDoneCallback on_done)
    : deps_(deps), params_(std::move(params)), on_done_(std::move(on_done)) {}

AgentTurn::~AgentTurn() = default;

std::shared_ptr<AgentTurn> AgentTurn::Start(AgentDeps deps, TurnParams params,
                                            TurnDoneCallback on_done) {
  std::shared_ptr<AgentTurn> turn(new AgentTurn(deps, std::move(params), std::move(on_done)));
  turn->Begin();
  return turn;
}

void AgentTurn::Begin() {
  const Config& config = *params_.config;
  started_unix_ms_ = NowUnixMs();
  deadline_unix_ms_ = params_.deadline_unix_ms != 0
                          ? params_.deadline_unix_ms
                          : started_unix_ms_ + config.agent.turn_timeout.count();
  deadline_ = Clock::now() + std::chrono::milliseconds(deadline_unix_ms_ - started_unix_ms_);
  catalog_ = AgentCatalog(params_.config);

  auto loop = std::make_shared<Loop>();
  loop->main = true;
  loop->catalog = catalog_;
  loop->model = config.agent.model;
  loop->max_rounds = config.agent.max_tool_rounds;
  if (!config.agent.system_prompt.empty()) {
    loop->prefix.push_back(MakeMessage("system", config.agent.system_prompt));
  }
  for (auto& m : TrimHistory(params_.history,
                             static_cast<std::size_t>(std::max(0, config.agent.history_max_messages)),
                             config.agent.history_max_chars)) {
    loop->prefix.push_back(std::move(m));
  }
  loop->added.push_back(MakeMessage("user", SanitizeUtf8(params_.user_message)));
  std::weak_ptr<AgentTurn> weak = weak_from_this();
  loop->on_finish = [this](LoopResult r, Actions& act) {
    if (r.error) {
      EndTurnLocked(r.error->code == ErrorCode::kDeadlineExceeded ? EndKind::kDeadline
                                                                  : EndKind::kError,
                    r.answer, *r.error, act);
    } else {
      EndTurnLocked(EndKind::kOk, r.answer, Error{}, act);
    }
  };

  Actions act;
  {
    std::lock_guard<std::mutex> lock(mu_);
    main_ = loop;
    if (Clock::now() >= deadline_) {
      EndTurnLocked(EndKind::kDeadline, "",
                    Error{ErrorCode::kDeadlineExceeded, "the turn's deadline had already passed"},
                    act);
    } else {
      deadline_task_ = deps_.timer.After(
          std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now()), [weak] {
            if (auto self = weak.lock()) self->OnDeadline();
          });
      auto self = shared_from_this();
      if (params_.first_call_on_caller) {
        act.later.push_back([self, loop] { self->StartCall(loop); });
      } else {
        act.later.push_back([this, self, loop] {
          deps_.executor.Post([self, loop] { self->StartCall(loop); });
        });
      }
    }
  }
  act.Run();
}

void AgentTurn::Cancel() {
  auto self = shared_from_this();  // on_done may drop the caller's last reference
  Actions act;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    EndTurnLocked(EndKind::kCancelled, "", Error{ErrorCode::kCancelled, "cancelled"}, act);
  }
  act.Run();
}

void AgentTurn::OnDeadline() {
  auto self = shared_from_this();
  Actions act;
  {
    std::lock_guard<std::mutex> lock(mu_);
    deadline_task_ = 0;
    if (finished_) return;
    EndTurnLocked(EndKind::kDeadline, "",
                  Error{ErrorCode::kDeadlineExceeded, "the turn did not finish before its deadline"},
                  act);
  }
  act.Run();
}

bool AgentTurn::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_ && on_done_returned_;
}

wf::v1::ChatMessage AgentTurn::MakeMessage(std::string role, std::string content) const {
  wf::v1::ChatMessage m;
  m.set_role(std::move(role));
  m.set_content(std::move(content));
  m.set_created_unix_ms(NowUnixMs());
  m.set_run_id(params_.run_id);
  return m;
}

TurnContext AgentTurn::Context() const {
  TurnContext ctx;
  ctx.session_id = params_.session_id;
  ctx.request_id = params_.request_id;
  ctx.run_id = params_.run_id;
  ctx.user_id = params_.user_id;
  ctx.user_message = params_.user_message;
  ctx.deadline_unix_ms = deadline_unix_ms_;
  ctx.deadline = deadline_;
  return ctx;
}

void AgentTurn::StartCall(const std::shared_ptr<Loop>& loop) {
  ChatRequestOptions options;
  std::uint64_t ticket;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || loop->finished) return;
    const Config& config = *params_.config;
    options.model = loop->model;
    options.messages = loop->prefix;
    options.messages.insert(options.messages.end(), loop->added.begin(), loop->added.end());
    if (!loop->function) {
      options.tools = loop->catalog->Tools();
    } else if (loop->skill->output_schema) {
      options.output_schema = *loop->skill->output_schema;
      options.output_schema_name = loop->skill->name;
    } else {
      options.json_object = true;
    }
    options.temperature = config.agent.temperature;
    options.deadline = deadline_;
    options.request_id = params_.request_id;
    options.max_answer_bytes = config.agent.max_answer_bytes;
    ticket = next_ticket_++;
    chats_.emplace(ticket, std::nullopt);
    loop->ticket = ticket;
    loop->partial.clear();
  }
  auto self = shared_from_this();
  ChatCallbacks callbacks;
  if (loop->main) {
    callbacks.on_token = [self, loop, ticket](std::string_view token) {
      self->OnToken(loop, ticket, token);
    };
  }
  callbacks.on_done = [self, loop, ticket](Result<ChatOutcome> result) {
    self->OnChatDone(loop, ticket, std::move(result));
  };
  const ChatHandle handle = deps_.llm.StartChat(std::move(options), std::move(callbacks));
  bool cancel = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chats_.find(ticket);
    if (finished_) {
      cancel = true;
      if (it != chats_.end()) chats_.erase(it);
    } else if (it != chats_.end()) {
      it->second = handle;
    }
  }
  if (cancel) deps_.llm.Cancel(handle);
}

void AgentTurn::OnToken(const std::shared_ptr<Loop>& loop, std::uint64_t ticket,
                        std::string_view token) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || loop->ticket != ticket) return;
  loop->partial.append(token);
  if (loop->main && params_.stream_tokens) {
    wf::v1::QueryEvent event;
    event.set_token(std::string(token));
    EmitLocked(std::move(event));
  }
}

void AgentTurn::OnChatDone(const std::shared_ptr<Loop>& loop, std::uint64_t ticket,
                           Result<ChatOutcome> result) {
  Actions act;
  {
    std::lock_guard<std::mutex> lock(mu_);
    chats_.erase(ticket);
    if (finished_ || loop->finished || loop->ticket != ticket) return;
    loop->ticket = 0;
    if (!result.ok()) {
      Error error = result.error();
      if (error.code == ErrorCode::kDeadlineExceeded) {
        EndTurnLocked(EndKind::kDeadline, "", error, act);
      } else {
        if (error.code == ErrorCode::kTooLarge) {
          // The client cut the answer off at the bound: what was streamed is stored, marked.
          const std::size_t bound = params_.config->agent.max_answer_bytes;
          error =
              Error{ErrorCode::kLlmError, "the LLM's answer exceeded " + std::to_string(bound) +
                                              " bytes (agent.max_answer_bytes) and was cut off"};
          loop->partial += CutMarker(bound);
        } else if (error.code != ErrorCode::kLlmError) {
          error = Error{ErrorCode::kLlmError, error.message};
        }
        // Keep what was streamed as the partial answer of a failed main call.
        FinishLoopLocked(loop, LoopResult{error, std::move(loop->partial)}, act);
      }
    } else {
      AddUsage(usage_, result->usage);
      if (loop->function) {
        HandleFunctionOutcomeLocked(loop, *result, act);
      } else {
        HandleOutcomeLocked(loop, std::move(result).value(), act);
      }
    }
  }
  act.Run();
}

void AgentTurn::HandleOutcomeLocked(const std::shared_ptr<Loop>& loop, ChatOutcome outcome,
                                    Actions& act) {
  if (outcome.tool_calls.empty()) {
    if (loop->main) finish_reason_ = outcome.finish_reason;
    if (loop->main && outcome.finish_reason == "length") {
      spdlog::info("request {}: the model's answer was cut at its output limit",
                   params_.request_id);
    }
    loop->added.push_back(MakeMessage("assistant", outcome.content));
    FinishLoopLocked(loop, LoopResult{std::nullopt, outcome.content}, act);
    return;
  }
  if (loop->rounds >= loop->max_rounds) {
    // The chosen round-limit behaviour: a normal final answer that says so.
    const std::string notice = LimitNotice(loop->max_rounds);
    std::string answer = outcome.content;
    const std::string suffix = (answer.empty() ? "" : "\n\n") + notice;
    answer += suffix;
    if (loop->main && params_.stream_tokens) {
      wf::v1::QueryEvent event;
      event.set_token(suffix);
      EmitLocked(std::move(event));
    }
    spdlog::info("request {}: tool round limit {} reached", params_.request_id, loop->max_rounds);
    loop->added.push_back(MakeMessage("assistant", answer));
    FinishLoopLocked(loop, LoopResult{std::nullopt, answer}, act);
    return;
  }
  // A tool round: name the calls, record the assistant message, announce the calls.
  wf::v1::ChatMessage assistant = MakeMessage("assistant", outcome.content);
  std::set<std::string> ids;
  for (std::size_t i = 0; i < outcome.tool_calls.size(); ++i) {
    wf::v1::ToolCall& call = outcome.tool_calls[i];
    if (call.id().empty() || !ids.insert(call.id()).second) {
      call.set_id("call_" + std::to_string(loop->depth) + "_" + std::to_string(loop->rounds) +
                  "_" + std::to_string(i));
      ids.insert(call.id());
    }
    if (call.arguments_json().empty()) call.set_arguments_json("{}");
    if (const OfferedTool* offered = loop->catalog->Find(call.name())) {
      call.set_kind(std::string(ToolKindName(offered->kind)));
    }
    *assistant.add_tool_calls() = call;
  }
  loop->added.push_back(std::move(assistant));
  loop->calls = std::move(outcome.tool_calls);
  loop->results.assign(loop->calls.size(), std::nullopt);
  loop->pending = loop->calls.size();
  if (loop->main) {
    for (const auto& call : loop->calls) {
      wf::v1::QueryEvent event;
      *event.mutable_tool_call() = call;
      EmitLocked(std::move(event));
    }
  }
  auto self = shared_from_this();
  const int round = loop->rounds;
  act.later.push_back([this, self, loop, round] {
    deps_.executor.Post([self, loop, round] { self->DispatchTools(loop, round); });
  });
}

void AgentTurn::HandleFunctionOutcomeLocked(const std::shared_ptr<Loop>& loop,
                                            const ChatOutcome& outcome, Actions& act) {
  const SkillConfig& skill = *loop->skill;
  Result<nlohmann::json> parsed = ParseModelJson(outcome.content);
  if (!parsed.ok()) {
    FinishLoopLocked(loop,
                     LoopResult{Error{ErrorCode::kLlmError, "skill " + skill.name +
                                                                " did not answer JSON: " +
                                                                parsed.error().message},
                                ""},
                     act);
    return;
  }
  Status valid = Status::Ok();
  if (skill.output_schema) {
    valid = ValidateAgainstSchema(*parsed, *skill.output_schema);
  } else if (!parsed->is_object()) {
    valid = Status(ErrorCode::kBadRequest, "$: expected object");
  }
  if (!valid.ok()) {
    FinishLoopLocked(loop,
                     LoopResult{Error{ErrorCode::kLlmError,
                                      "skill " + skill.name +
                                          " answered JSON that does not match its output_schema: " +
                                          valid.error().message},
                                ""},
                     act);
    return;
  }
  FinishLoopLocked(loop, LoopResult{std::nullopt, DumpJson(*parsed)}, act);
}

void AgentTurn::DispatchTools(const std::shared_ptr<Loop>& loop, int round) {
  std::vector<wf::v1::ToolCall> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || loop->finished || loop->rounds != round) return;
    calls = loop->calls;
  }
  const TurnContext ctx = Context();
  auto self = shared_from_this();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const wf::v1::ToolCall& call = calls[i];
    auto done = [self, loop, round, i](wf::v1::ToolResult result) {
      self->OnToolResult(loop, round, i, std::move(result));
    };
    const OfferedTool* offered = loop->catalog->Find(call.name());
    if (offered == nullptr) {
      const std::string available = loop->catalog->NameList();
      done(ErrorResult(std::string(WireName(ErrorCode::kToolNotFound)),
                       "there is no tool, flow or skill named \"" +
                           TruncateUtf8(call.name(), 64) + "\"; available: " +
                           (available.empty() ? std::string("none") : available)));
      continue;
    }
    // Bounded: tools, flows and skills copy and serialize the arguments recursively.
    Result<nlohmann::json> args = ParseBoundedJson(call.arguments_json());
    if (!args.ok() || !args->is_object()) {
      done(ErrorResult(std::string(WireName(ErrorCode::kBadRequest)),
                       !args.ok() && args.error().code == ErrorCode::kBadRequest
                           ? "the arguments are " + args.error().message
                           : "the arguments are not a JSON object: " +
                                 TruncateUtf8(call.arguments_json(), 200)));
      continue;
    }
    try {
      switch (offered->kind) {
        case ToolKind::kTool:
          deps_.tools.RunTool(call, ctx, std::move(done));
          break;
        case ToolKind::kFlow:
          deps_.tools.RunFlow(call, ctx, std::move(done));
          break;
        case ToolKind::kSkill: {
          Actions act;
          {
            std::lock_guard<std::mutex> lock(mu_);
            if (finished_ || loop->finished || loop->rounds != round) return;
            StartSkillLocked(loop, round, i, call, *offered->skill, act);
          }
          act.Run();
          break;
        }
      }
    } catch (const std::exception& e) {
      OnToolResult(loop, round, i,
                   ErrorResult(std::string(WireName(ErrorCode::kInternal)),
                               std::string("the tool could not be started: ") + e.what()));
    }
  }
}

void AgentTurn::StartSkillLocked(const std::shared_ptr<Loop>& parent, int round, std::size_t index,
                                 const wf::v1::ToolCall& call, const SkillConfig& skill,
                                 Actions& act) {
  const Config& config = *params_.config;
  if (parent->depth + 1 > kMaxSkillDepth) {
    DeliverToolResultLocked(parent, round, index,
                            ErrorResult(std::string(WireName(ErrorCode::kBadRequest)),
                                        "skills are nested too deeply"),
                            act);
    return;
  }
  auto child = std::make_shared<Loop>();
  child->depth = parent->depth + 1;
  child->skill = &skill;
  child->function = skill.mode == "function";
  child->model = skill.model.empty() ? config.agent.model : skill.model;
  if (child->function) {
    child->catalog = std::make_shared<const ToolCatalog>();
    std::string system = skill.instructions +
                         "\n\nAnswer with a single JSON object only: no prose, no code fences.";
    if (skill.output_schema) {
      system += " It must match this JSON Schema:\n" + skill.output_schema->dump();
    }
    child->prefix.push_back(MakeMessage("system", std::move(system)));
  } else {
    child->catalog = std::make_shared<const ToolCatalog>(
        ToolCatalog::ForSkill(config, skill, child->depth < kMaxSkillDepth));
    child->max_rounds = config.agent.max_tool_rounds;
    child->prefix.push_back(MakeMessage("system", skill.instructions));
  }
  child->added.push_back(MakeMessage("user", SkillInput(call.arguments_json())));
  child->on_finish = [this, parent, round, index, name = skill.name](LoopResult r,
                                                                      Actions& act2) {
    wf::v1::ToolResult result;
    if (r.error) {
      result = ErrorResult(std::string(WireName(r.error->code)), r.error->message);
    } else {
      result.set_ok(true);
      result.set_content(r.answer);
    }
    DeliverToolResultLocked(parent, round, index, std::move(result), act2);
  };
  auto self = shared_from_this();
  act.later.push_back([this, self, child] {
    deps_.executor.Post([self, child] { self->StartCall(child); });
  });
}

void AgentTurn::OnToolResult(const std::shared_ptr<Loop>& loop, int round, std::size_t index,
                             wf::v1::ToolResult result) {
  Actions act;
  {
    std::lock_guard<std::mutex> lock(mu_);
    DeliverToolResultLocked(loop, round, index, std::move(result), act);
  }
  act.Run();
}

void AgentTurn::DeliverToolResultLocked(const std::shared_ptr<Loop>& loop, int round,
                                        std::size_t index, wf::v1::ToolResult result,
                                        Actions& act) {
  if (finished_ || loop->finished || loop->rounds != round || index >= loop->results.size() ||
      loop->results[index]) {
    return;
  }
  const wf::v1::ToolCall& call = loop->calls[index];
  result.set_call_id(call.id());
  result.set_name(call.name());
  result.set_content(SanitizeUtf8(result.content()));
  if (result.has_error()) {  // set only when the call failed (ToolResult.error)
    result.mutable_error()->set_message(SanitizeUtf8(result.error().message()));
  }
  if (loop->main) {
    wf::v1::QueryEvent event;
    *event.mutable_tool_result() = result;
    EmitLocked(std::move(event));
  }
  loop->results[index] = std::move(result);
  if (--loop->pending > 0) return;
  // The round is complete: feed the results back in call order.
  for (std::size_t i = 0; i < loop->calls.size(); ++i) {
    wf::v1::ChatMessage m = MakeMessage("tool", ToolResultText(*loop->results[i]));
    m.set_name(loop->calls[i].name());
    m.set_tool_call_id(loop->calls[i].id());
    loop->added.push_back(std::move(m));
  }
  loop->calls.clear();
  loop->results.clear();
  ++loop->rounds;
  auto self = shared_from_this();
  act.later.push_back([this, self, loop] {
    deps_.executor.Post([self, loop] { self->StartCall(loop); });
  });
}

void AgentTurn::FinishLoopLocked(const std::shared_ptr<Loop>& loop, LoopResult result,
                                 Actions& act) {
  if (loop->finished) return;
  loop->finished = true;
  auto on_finish = std::move(loop->on_finish);
  loop->on_finish = nullptr;
  if (on_finish) on_finish(std::move(result), act);
}

void AgentTurn::EmitLocked(wf::v1::QueryEvent event) {
  event.set_request_id(params_.request_id);
  event.set_seq(++seq_);
  try {
    deps_.events.Emit(std::move(event));
  } catch (const std::exception& e) {
    spdlog::error("request {}: event sink threw: {}", params_.request_id, e.what());
  }
}

void AgentTurn::EndTurnLocked(EndKind kind, const std::string& answer, const Error& error,
                              Actions& act) {
  if (finished_) return;
  finished_ = true;
  Loop& loop = *main_;
  loop.finished = true;
  loop.on_finish = nullptr;

  std::string text = answer;
  if (kind != EndKind::kOk) {
    // Cut short: complete the round in flight and keep the partial answer.
    if (!loop.calls.empty()) {
      const std::string why = kind == EndKind::kCancelled ? "the turn was cancelled"
                                                          : "the turn ended before it finished";
      for (std::size_t i = 0; i < loop.calls.size(); ++i) {
        const std::string content =
            loop.results[i] ? ToolResultText(*loop.results[i])
                            : "Error (not_completed): " + why + " before this call returned.";
        wf::v1::ChatMessage m = MakeMessage("tool", content);
        m.set_name(loop.calls[i].name());
        m.set_tool_call_id(loop.calls[i].id());
        loop.added.push_back(std::move(m));
      }
      loop.calls.clear();
      loop.results.clear();
    }
    if (text.empty() && loop.ticket != 0) text = loop.partial;
    text = SanitizeUtf8(text);
    if (!text.empty()) loop.added.push_back(MakeMessage("assistant", text));
  }

  wf::v1::QueryEvent event;
  if (kind == EndKind::kOk || kind == EndKind::kCancelled) {
    wf::v1::Final* final = event.mutable_final();
    final->set_answer(text);
    final->set_route("agent");
    final->set_run_id(params_.run_id);
    *final->mutable_usage() = usage_;
    final->set_session_id(params_.session_id);
    final->set_cancelled(kind == EndKind::kCancelled);
    if (kind == EndKind::kOk) final->set_finish_reason(finish_reason_);
  } else {
    event.mutable_error()->set_code(std::string(WireName(error.code)));
    event.mutable_error()->set_message(SanitizeUtf8(error.message));
  }
  EmitLocked(std::move(event));

  wf::v1::TurnRecord record;
  record.set_session_id(params_.session_id);
  record.set_run_id(params_.run_id);
  record.set_request_id(params_.request_id);
  record.set_user_id(params_.user_id);
  record.set_route("agent");
  for (auto& m : loop.added) *record.add_messages() = std::move(m);
  loop.added.clear();
  record.set_status(kind == EndKind::kOk          ? "ok"
                    : kind == EndKind::kCancelled ? "cancelled"
                                                  : "error");
  *record.mutable_usage() = usage_;
  record.set_started_unix_ms(started_unix_ms_);
  record.set_finished_unix_ms(NowUnixMs());
  if (kind == EndKind::kError || kind == EndKind::kDeadline) {
    spdlog::warn("request {}: agent turn failed: {}", params_.request_id, error.message);
  }

  // Abort what is still running; results that arrive later are ignored.
  std::vector<ChatHandle> handles;
  for (auto it = chats_.begin(); it != chats_.end();) {
    if (it->second) {
      handles.push_back(*it->second);
      it = chats_.erase(it);
    } else {
      ++it;  // StartChat has not returned yet: StartCall cancels it when it does
    }
  }
  const Timer::TaskId deadline_task = deadline_task_;
  deadline_task_ = 0;
  auto on_done = std::move(on_done_);
  on_done_ = nullptr;
  act.later.push_back([this, handles, deadline_task, on_done = std::move(on_done),
                       record = std::move(record)]() mutable {
    if (deadline_task != 0) deps_.timer.Cancel(deadline_task);
    for (ChatHandle h : handles) deps_.llm.Cancel(h);
    struct Returned {  // also when on_done throws
      AgentTurn& turn;
      ~Returned() {
        std::lock_guard<std::mutex> lock(turn.mu_);
        turn.on_done_returned_ = true;
      }
    } returned{*this};
    if (on_done) on_done(std::move(record));
  });
}

}  // namespace wf
