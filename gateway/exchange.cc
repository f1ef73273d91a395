#include "gateway/exchange.h"

#include <algorithm>

#include "gateway/event_format.h"
#include "gateway/http_response.h"

namespace wf {
namespace {

constexpr int kClientClosedRequest = 499;  // nginx's convention, for metrics only

using Clock = std::chrono::steady_clock;

}  // namespace

Exchange::Exchange(Params params, std::unique_ptr<ClientChannel> channel)
    : params_(std::move(params)),
      keep_alive_(params_.keep_alive),
      channel_(std::move(channel)),
      head_pending_(params_.kind == ExchangeKind::kStream),
      last_write_(params_.start) {}

bool Exchange::DisableKeepAlive() {
  std::lock_guard lock(mu_);
  if (finished_) return false;
  keep_alive_ = false;
  return true;
}

bool Exchange::finished() const {
  std::lock_guard lock(mu_);
  return finished_;
}

void Exchange::Send(std::string bytes, Clock::time_point now) {
  if (client_gone_ || (bytes.empty() && !head_pending_)) return;
  if (head_pending_) {
    head_pending_ = false;
    bytes.insert(0, FormatSseHead(params_.request_id, keep_alive_));
  }
  if (!channel_->Send(std::move(bytes))) {
    client_gone_ = true;
    dropped_ = true;
    return;
  }
  last_write_ = now;
}

ExchangeOutcome Exchange::Dropped() {
  finished_ = true;
  return ExchangeOutcome{true, kClientClosedRequest, IsQueryLike()};
}

ExchangeOutcome Exchange::StartStream() {
  std::lock_guard lock(mu_);
  if (!head_pending_ || finished_) return {};
  Send(std::string(), Clock::now());
  return dropped_ ? Dropped() : ExchangeOutcome{};
}

void Exchange::EndStream(std::string bytes) {
  finished_ = true;
  Send(std::move(bytes), Clock::now());
  // `Connection: close`, or input arrived during the stream (a pipelined request, dropped) after
  // the head promised the connection for another request: it will read nothing more.
  if (!keep_alive_ && !client_gone_) channel_->EndConnection();
}

ExchangeOutcome Exchange::FinishWithResponse(int status, std::string body) {
  finished_ = true;
  std::string response =
      FormatHttpResponse(status, kJsonType, body, params_.request_id, keep_alive_);
  Send(params_.head_only ? HeadResponse(std::move(response)) : std::move(response), Clock::now());
  // `Connection: close` (asked by the client, or input arrived that cannot be answered in
  // order): end the connection, so the client is not left waiting on it.
  if (!keep_alive_ && !client_gone_) channel_->EndConnection();
  return ExchangeOutcome{true, dropped_ ? kClientClosedRequest : status, false};
}

ExchangeOutcome Exchange::FinishWithError(const Error& error, bool cancel) {
  if (params_.kind == ExchangeKind::kStream) {
    std::string frame;
    AppendSseEvent(&frame, "error", ErrorJson(error, params_.request_id));
    std::string bytes;
    AppendHttpChunk(&bytes, frame);
    bytes.append(kHttpLastChunk);
    EndStream(std::move(bytes));
    return ExchangeOutcome{true, dropped_ ? kClientClosedRequest : 200, cancel};
  }
  finished_ = true;
  std::string response = FormatErrorResponse(error, params_.request_id, keep_alive_);
  Send(params_.head_only ? HeadResponse(std::move(response)) : std::move(response), Clock::now());
  if (!keep_alive_ && !client_gone_) channel_->EndConnection();
  return ExchangeOutcome{true, dropped_ ? kClientClosedRequest : HttpStatus(error.code), cancel};
}

ExchangeOutcome Exchange::OnEvent(const v1::QueryEvent& event) {
  std::lock_guard lock(mu_);
  if (finished_) return {};
  heard_ = true;
  // The lightweight worker's note that the agents have the query (seq 0, outside the attempts).
  if (event.kind_case() == v1::QueryEvent::kQueued) return {};
  // A turn redelivered to another worker (the first one died) is run again from the start, its
  // events carrying the higher delivery count: events of an earlier attempt that arrive late are
  // dropped, and a stream is told to discard what the earlier attempt sent.
  const uint32_t attempt = event.attempt();
  if (attempt < attempt_) return {};
  const bool new_attempt = attempt > attempt_ && attempt_ > 0;
  attempt_ = attempt;
  const auto kind = event.kind_case();
  if (params_.kind == ExchangeKind::kQuery) {
    if (kind == v1::QueryEvent::kFinal) {
      return FinishWithResponse(200,
                                AnswerJson(event.final(), params_.request_id, params_.session_id));
    }
    if (kind == v1::QueryEvent::kError) {
      return FinishWithError(ErrorFromWire(event.error()), false);
    }
    return {};  // tokens and tool events are for streams
  }
  if (params_.kind == ExchangeKind::kStream) {
    std::string frame;
    if (new_attempt) AppendSseReset(&frame, params_.request_id, attempt);
    if (!AppendSseForEvent(&frame, event, params_.request_id, params_.session_id)) return {};
    std::string bytes;
    bytes.reserve(frame.size() + 16);
    AppendHttpChunk(&bytes, frame);
    const bool last = kind == v1::QueryEvent::kFinal || kind == v1::QueryEvent::kError;
    wrote_since_head_ = true;
    if (!last) {
      Send(std::move(bytes), Clock::now());
      return dropped_ ? Dropped() : ExchangeOutcome{};
    }
    bytes.append(kHttpLastChunk);
    EndStream(std::move(bytes));
    return ExchangeOutcome{true, dropped_ ? kClientClosedRequest : 200, false};
  }
  // A session request answered with a QueryEvent: a worker bug.
  return FinishWithError(Error{ErrorCode::kInternal, "unexpected reply to a session request"},
                         false);
}

ExchangeOutcome Exchange::OnSessionReply(const v1::SessionReply& reply) {
  std::lock_guard lock(mu_);
  if (finished_) return {};
  if (!(params_.kind == ExchangeKind::kSessionGet ||
        params_.kind == ExchangeKind::kSessionDelete)) {
    return {};
  }
  switch (reply.kind_case()) {
    case v1::SessionReply::kHistory:
      if (params_.kind == ExchangeKind::kSessionGet) {
        return FinishWithResponse(200, SessionHistoryJson(reply.history(), params_.session_id));
      }
      break;
    case v1::SessionReply::kAck:
      if (params_.kind == ExchangeKind::kSessionDelete) {
        if (!reply.ack().deleted()) {
          return FinishWithError(
              Error{ErrorCode::kSessionNotFound, "session '" + params_.session_id + "' not found"},
              false);
        }
        return FinishWithResponse(
            200, SessionDeletedJson(reply.ack().session_id().empty() ? params_.session_id
                                                                     : reply.ack().session_id()));
      }
      break;
    case v1::SessionReply::kError:
      return FinishWithError(ErrorFromWire(reply.error()), false);
    default:
      break;
  }
  return FinishWithError(Error{ErrorCode::kInternal, "unexpected reply from the session service"},
                         false);
}

ExchangeOutcome Exchange::OnNoResponders() {
  std::lock_guard lock(mu_);
  if (finished_) return {};
  if (IsQueryLike()) {
    return FinishWithError(Error{ErrorCode::kNoWorker, "no lightweight worker is running"}, false);
  }
  return FinishWithError(Error{ErrorCode::kNoAgentWorker, "no heavy worker serves sessions"},
                         false);
}

ExchangeOutcome Exchange::OnTick(Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (finished_) return {};
  if (now >= params_.deadline) {
    if (IsQueryLike()) {
      return FinishWithError(
          Error{ErrorCode::kDeadlineExceeded, "no answer before the request's deadline"}, true);
    }
    return FinishWithError(
        Error{ErrorCode::kNoAgentWorker, "no heavy worker answered the session request in time"},
        false);
  }
  if (!heard_ && IsQueryLike() && now >= params_.first_event_deadline) {
    return FinishWithError(
        Error{ErrorCode::kDeadlineExceeded,
              "no worker answered or queued the query within gateway.flow_timeout_ms (" +
                  std::to_string(params_.flow_timeout.count()) +
                  " ms); the worker that took it may have stopped"},
        true);
  }
  if (params_.kind == ExchangeKind::kStream && !client_gone_) {
    auto interval = params_.heartbeat;
    if (!wrote_since_head_)
      interval = std::min<std::chrono::milliseconds>(interval, std::chrono::seconds(1));
    if (now - last_write_ >= interval) {
      std::string bytes;
      AppendHttpChunk(&bytes, kSseHeartbeat);
      wrote_since_head_ = true;
      Send(std::move(bytes), now);
      if (dropped_) return Dropped();
    }
  }
  return {};
}

ExchangeOutcome Exchange::OnClientGone() {
  std::lock_guard lock(mu_);
  client_gone_ = true;
  if (finished_) return {};
  finished_ = true;
  return ExchangeOutcome{true, kClientClosedRequest, IsQueryLike()};
}

ExchangeOutcome Exchange::Fail(const Error& error) {
  std::lock_guard lock(mu_);
  if (finished_) return {};
  return FinishWithError(error, IsQueryLike());
}

}  // namespace wf
