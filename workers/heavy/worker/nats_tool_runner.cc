#include "worker/nats_tool_runner.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "codec/json_limits.h"
#include "codec/json_struct.h"

namespace wf {

wf::v1::ToolResult ToolError(const std::string& call_id, const std::string& name, ErrorCode code,
                             const std::string& message) {
  wf::v1::ToolResult r;
  r.set_call_id(call_id);
  r.set_name(name);
  r.set_ok(false);
  r.mutable_error()->set_code(std::string(WireName(code)));
  r.mutable_error()->set_message(message);
  return r;
}

NatsToolRunner::NatsToolRunner(NatsConnection& conn, Timer& timer, std::string subject_prefix,
                               std::chrono::milliseconds max_call_time)
    : conn_(conn), timer_(timer), prefix_(std::move(subject_prefix)),
      max_call_time_(max_call_time) {}

NatsToolRunner::~NatsToolRunner() {
  sub_.Unsubscribe();
  std::unordered_map<uint64_t, Pending> left;
  {
    std::lock_guard lock(mu_);
    left.swap(pending_);
  }
  for (auto& [token, p] : left) {
    timer_.Cancel(p.timeout);
    p.done(ToolError(p.call_id, p.name, ErrorCode::kUnavailable, "worker shutting down"));
  }
}

Status NatsToolRunner::Start() {
  inbox_ = NatsConnection::NewInbox();
  auto sub = conn_.Subscribe(inbox_ + ".*", [this](const NatsMsgView& m) { OnReply(m); });
  if (!sub.ok()) return sub.error();
  sub_ = std::move(sub).value();
  return Status::Ok();
}

void NatsToolRunner::RunTool(const wf::v1::ToolCall& call, const TurnContext& ctx,
                             std::function<void(wf::v1::ToolResult)> done) {
  wf::v1::ExecuteToolRequest request;
  request.set_request_id(ctx.request_id);
  request.set_name(call.name());
  request.set_arguments_json(call.arguments_json().empty() ? "{}" : call.arguments_json());
  request.set_session_id(ctx.session_id);
  request.set_deadline_unix_ms(ctx.deadline_unix_ms);
  request.set_call_id(call.id());
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      ctx.deadline - std::chrono::steady_clock::now());
  Send(prefix_ + ".tool.execute", request.SerializeAsString(),
       Pending{call.id(), call.name(), false, 0, std::move(done)}, left);
}

void NatsToolRunner::RunFlow(const wf::v1::ToolCall& call, const TurnContext& ctx,
                             std::function<void(wf::v1::ToolResult)> done) {
  // Bounded: JsonToStruct and the request's serialization recurse into the arguments.
  auto args = ParseBoundedJson(call.arguments_json().empty() ? "{}" : call.arguments_json());
  if (!args.ok() || !args->is_object()) {
    done(ToolError(call.id(), call.name(), ErrorCode::kBadRequest,
                   !args.ok() && args.error().code == ErrorCode::kBadRequest
                       ? "arguments are " + args.error().message
                       : "arguments must be a JSON object"));
    return;
  }
  wf::v1::ExecuteFlowRequest request;
  request.set_request_id(ctx.request_id);
  request.set_flow_id(call.name());
  request.set_session_id(ctx.session_id);
  request.set_user_message(ctx.user_message);
  *request.mutable_parameters() = JsonToStruct(*args);
  request.set_deadline_unix_ms(ctx.deadline_unix_ms);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      ctx.deadline - std::chrono::steady_clock::now());
  Send(prefix_ + ".flow.execute", request.SerializeAsString(),
       Pending{call.id(), call.name(), true, 0, std::move(done)}, left);
}

void NatsToolRunner::Send(const std::string& subject, const std::string& payload, Pending pending,
                          std::chrono::milliseconds timeout) {
  timeout = std::clamp(timeout, std::chrono::milliseconds(1), max_call_time_);
  uint64_t token;
  {
    std::lock_guard lock(mu_);
    token = ++next_token_;
    pending.timeout = timer_.After(timeout, [this, token, subject] {
      Fail(token, ErrorCode::kDeadlineExceeded, "no answer from " + subject + " in time");
    });
    pending_.emplace(token, std::move(pending));
  }
  auto status = conn_.Publish(subject, payload, inbox_ + "." + std::to_string(token));
  if (!status.ok()) Fail(token, ErrorCode::kUnavailable, status.error().message);
}

void NatsToolRunner::Fail(uint64_t token, ErrorCode code, const std::string& message) {
  Pending p;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(token);
    if (it == pending_.end()) return;
    p = std::move(it->second);
    pending_.erase(it);
  }
  timer_.Cancel(p.timeout);
  p.done(ToolError(p.call_id, p.name, code, message));
}

void NatsToolRunner::OnReply(const NatsMsgView& msg) {
  std::string_view subject = msg.subject();
  uint64_t token = std::strtoull(std::string(subject.substr(subject.rfind('.') + 1)).c_str(),
                                 nullptr, 10);
  Pending p;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(token);
    if (it == pending_.end()) return;  // timed out already
    p = std::move(it->second);
    pending_.erase(it);
  }
  timer_.Cancel(p.timeout);
  wf::v1::ToolResult result;
  if (p.flow) {
    wf::v1::QueryEvent event;
    if (!event.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
      result = ToolError(p.call_id, p.name, ErrorCode::kBadMessage, "undecodable flow reply");
    } else if (event.has_final()) {
      result.set_call_id(p.call_id);
      result.set_name(p.name);
      result.set_ok(true);
      result.set_content(event.final().answer());
      result.set_upstream_status(event.final().upstream_status());
    } else {
      result = ToolError(p.call_id, p.name, ErrorCodeFromWire(event.error().code()),
                         event.error().message());
      result.mutable_error()->set_code(event.error().code());
    }
  } else if (!result.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) {
    result = ToolError(p.call_id, p.name, ErrorCode::kBadMessage, "undecodable tool reply");
  }
  if (result.call_id().empty()) result.set_call_id(p.call_id);
  if (result.name().empty()) result.set_name(p.name);
  p.done(std::move(result));
}

}  // namespace wf
