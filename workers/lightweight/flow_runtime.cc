#include "lightweight/flow_runtime.h"

#include <algorithm>
#include <utility>

#include "matching/parameter_resolver.h"
#include "nats/connection.h"
#include "text/utf8.h"

namespace wf {

Result<CallOutcome> InterpretUpstream(const std::string& label, const ResponseTemplate& response,
                                      const nlohmann::json& values, Result<HttpResponse> reply,
                                      std::size_t max_answer_bytes) {
  if (!reply.ok()) {
    Error e = std::move(reply).error();
    e.message = label + ": " + e.message;
    return e;
  }
  const HttpResponse& r = reply.value();
  if (r.status < 200 || r.status > 299) {
    // The body never goes into the message: an error body may carry secrets (tokens, keys,
    // internal details) and the message reaches the client and $SRV.STATS.
    std::string msg = label + ": upstream answered HTTP " + std::to_string(r.status);
    const std::string_view type = Utf8Truncate(r.content_type, 100);
    if (!r.body.empty() || !type.empty()) {
      msg += " (";
      if (!type.empty()) msg.append(type).append(", ");
      msg += std::to_string(r.body.size()) + " bytes)";
    }
    return Error{ErrorCode::kUpstreamError, ToValidUtf8(msg)};
  }
  auto answer = response.RenderAtMost(values, r.body, max_answer_bytes);
  if (!answer) {
    return Error{ErrorCode::kResponseTooLarge,
                 label + ": the answer would exceed " + std::to_string(max_answer_bytes) +
                     " bytes, the most that can be delivered (upstream body: " +
                     std::to_string(r.body.size()) + " bytes)"};
  }
  CallOutcome outcome;
  outcome.upstream_status = r.status;
  // Upstream bytes go into protobuf string fields: they must be UTF-8 (checked in place; a copy
  // only when something needs repair).
  if (!IsValidUtf8(*answer)) *answer = ToValidUtf8(*answer);
  outcome.answer = std::move(*answer);
  return outcome;
}

Result<std::unique_ptr<FlowRuntime>> FlowRuntime::Create(std::shared_ptr<const Config> config,
                                                         const std::vector<EventLoop*>& loops,
                                                         std::size_t max_answer_bytes) {
  std::unique_ptr<FlowRuntime> self(new FlowRuntime());
  self->config_ = std::move(config);
  self->max_answer_bytes_ = max_answer_bytes;
  auto compile = [](const std::vector<ParameterSpec>& params, const EndpointConfig& endpoint,
                    const std::string& response_template, std::string label) -> Result<Compiled> {
    auto ep = EndpointTemplate::Compile(endpoint);
    if (!ep.ok()) return Error{ep.error().code, label + ": " + ep.error().message};
    auto rt = ResponseTemplate::Compile(response_template);
    if (!rt.ok()) return Error{rt.error().code, label + ": " + rt.error().message};
    return Compiled{&params, std::move(ep).value(), std::move(rt).value(), std::move(label)};
  };
  for (const auto& flow : self->config_->flows) {
    auto c =
        compile(flow.parameters, flow.endpoint, flow.response_template, "flow " + flow.flow_id);
    if (!c.ok()) return c.error();
    self->flows_.push_back(std::move(c).value());
  }
  for (const auto& tool : self->config_->tools) {
    auto c = compile(tool.parameters, tool.endpoint, tool.response_template, "tool " + tool.name);
    if (!c.ok()) return c.error();
    self->tools_.push_back(std::move(c).value());
  }
  self->loops_ = loops;
  for (EventLoop* loop : loops) {
    HttpClient::Options options;
    options.loop = loop;
    self->clients_.push_back(std::make_unique<HttpClient>(options));
  }
  if (loops.empty()) self->clients_.push_back(std::make_unique<HttpClient>());
  return self;
}

HttpClient& FlowRuntime::ClientForThisThread() {
  for (std::size_t i = 0; i < loops_.size(); ++i) {
    if (loops_[i]->InLoopThread()) return *clients_[i];
  }
  return *clients_[next_client_.fetch_add(1, std::memory_order_relaxed) % clients_.size()];
}

std::size_t FlowRuntime::InFlight() const {
  std::size_t n = 0;
  for (const auto& c : clients_) n += c->InFlight();
  return n;
}

void FlowRuntime::RunFlow(std::size_t index, CallInput input, CallDone done) {
  if (index >= flows_.size()) {
    done(Error{ErrorCode::kFlowNotFound, "no flow with index " + std::to_string(index)});
    return;
  }
  Run(flows_[index], std::move(input), std::move(done));
}

void FlowRuntime::RunFlowById(const std::string& flow_id, CallInput input, CallDone done) {
  for (std::size_t i = 0; i < config_->flows.size(); ++i) {
    if (config_->flows[i].flow_id == flow_id) {
      Run(flows_[i], std::move(input), std::move(done));
      return;
    }
  }
  done(Error{ErrorCode::kFlowNotFound, "unknown flow: " + flow_id});
}

void FlowRuntime::RunTool(const std::string& name, CallInput input, CallDone done) {
  for (std::size_t i = 0; i < config_->tools.size(); ++i) {
    if (config_->tools[i].name == name) {
      Run(tools_[i], std::move(input), std::move(done));
      return;
    }
  }
  done(Error{ErrorCode::kToolNotFound, "unknown tool: " + name});
}

void FlowRuntime::Run(const Compiled& compiled, CallInput input, CallDone done) {
  auto resolved = ResolveParameters(*compiled.parameters, input.captures, input.parameters);
  if (!resolved.ok()) {
    Error e = resolved.error();
    e.message = compiled.label + ": " + e.message;
    done(std::move(e));
    return;
  }
  nlohmann::json parameters = std::move(resolved).value();
  // Placeholder values: the parameters plus the reserved names, which a parameter cannot shadow.
  nlohmann::json values = parameters;
  values["user_message"] = input.user_message;
  values["session_id"] = input.session_id;
  auto prepared = compiled.endpoint.Render(values);
  if (!prepared.ok()) {
    Error e = prepared.error();
    e.message = compiled.label + ": " + e.message;
    done(std::move(e));
    return;
  }
  PreparedRequest& p = prepared.value();
  HttpRequest request;
  request.method = std::move(p.method);
  request.url = std::move(p.url);
  request.headers = std::move(p.headers);
  request.body = std::move(p.body);
  request.timeout = p.timeout;
  request.max_response_bytes = p.max_response_bytes;
  if (input.deadline_unix_ms != 0) {  // 0: none; a negative one is long past
    int64_t left = input.deadline_unix_ms - UnixMillisNow();
    if (left <= 0) {
      done(Error{ErrorCode::kDeadlineExceeded,
                 compiled.label + ": deadline passed before the call"});
      return;
    }
    request.timeout = std::min(request.timeout, std::chrono::milliseconds(left));
  }
  const Compiled* c = &compiled;
  ClientForThisThread().Send(
      std::move(request), [c, max_answer = max_answer_bytes_, values = std::move(values),
                           parameters = std::move(parameters),
                           done = std::move(done)](Result<HttpResponse> reply) mutable {
        auto outcome =
            InterpretUpstream(c->label, c->response, values, std::move(reply), max_answer);
        if (outcome.ok()) outcome->parameters = std::move(parameters);
        done(std::move(outcome));
      });
}

}  // namespace wf
