#include "worker/pull_intake.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <thread>
#include <utility>

namespace wf {
namespace {

/// Messages the consumer still had for its clients when it delivered `msg` (from the message's
/// JetStream metadata); 1 when unknown, so that the caller does not take it for an empty
/// consumer.
uint64_t PendingAfter(natsMsg* msg) {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) return 1;
  const uint64_t pending = meta->NumPending;
  jsMsgMetaData_Destroy(meta);
  return pending;
}

}  // namespace

std::string PullRequestBody(int batch, std::chrono::nanoseconds expires, bool no_wait) {
  std::string body = "{\"batch\":" + std::to_string(std::max(1, batch)) +
                     ",\"expires\":" + std::to_string(std::max<int64_t>(0, expires.count()));
  if (no_wait) body += ",\"no_wait\":true";
  body += '}';
  return body;
}

int NextPullBatch(int free_slots, int active, bool nothing_pending) {
  if (free_slots <= 0) return 0;
  if (nothing_pending && active <= 1) return 1;
  return std::min(16, free_slots);
}

PullReply ClassifyPullReply(std::string_view status, std::size_t data_length) {
  if (status.empty() || data_length > 0) return PullReply::kMessage;
  if (status.starts_with("100")) return PullReply::kHeartbeat;
  if (status.starts_with("404") || status.starts_with("408")) return PullReply::kEnd;
  return PullReply::kRefused;
}

PullIntake::PullIntake(NatsConnection& conn, EventLoop& loop, Options options, BatchFn batch,
                       MessagesFn messages)
    : conn_(conn),
      loop_(loop),
      options_(std::move(options)),
      batch_(std::move(batch)),
      messages_(std::move(messages)),
      inbox_(NatsConnection::NewInbox()),
      next_subject_(options_.api_prefix + ".CONSUMER.MSG.NEXT." + options_.stream + "." +
                    options_.consumer) {}

PullIntake::~PullIntake() {
  sub_.Unsubscribe();  // no reply is handled after this
  // The loop thread's state goes on the loop thread, after every task posted before. No time
  // limit (the task refers to this object): the loop is at most finishing a turn's start, which
  // its Redis and PostgreSQL timeouts bound.
  loop_.RunAndWait([this] {
    stopped_ = true;
    if (retry_timer_ != 0) loop_.CancelTimer(retry_timer_);
    EndPull();
    for (natsMsg* msg : arrived_) DestroyNatsMsg(msg);
    arrived_.clear();
  });
}

Status PullIntake::Start() {
  auto sub = conn_.Subscribe(inbox_ + ".*", [this](const NatsMsgView& msg) { OnReply(msg); });
  if (!sub.ok()) return sub.error();
  sub_ = std::move(sub).value();
  loop_.Post([this] { MaybePull(); });
  return Status::Ok();
}

void PullIntake::Wake() {
  if (starved_.exchange(false)) loop_.Post([this] { MaybePull(); });
}

void PullIntake::Stop() {
  // Without a time limit, as the destructor's (the tasks refer to this object and this frame).
  loop_.RunAndWait([this] { stopped_ = true; });
  // A pull still at the server may yet bring a message: wait for its end, so that whatever it
  // brings is handed over (and settled) rather than left to the ack wait.
  const auto until = std::chrono::steady_clock::now() + options_.expires + options_.grace;
  while (std::chrono::steady_clock::now() < until) {
    bool open = true;
    loop_.RunAndWait([&open, this] { open = pull_.has_value() || deliver_posted_; });
    if (!open) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void PullIntake::OnReply(const NatsMsgView& msg) {
  // Consumer messages carry data (a query); only an empty one may be a status message.
  const PullReply kind =
      msg.data().empty() ? ClassifyPullReply(msg.Header("Status"), 0) : PullReply::kMessage;
  switch (kind) {
    case PullReply::kHeartbeat:
      return;
    case PullReply::kMessage: {
      natsMsg* taken = msg.Take();
      nothing_pending_ = PendingAfter(taken) == 0;
      arrived_.push_back(taken);
      if (pull_ && ++pull_->received >= pull_->batch) EndPull();  // complete: no status follows
      if (!deliver_posted_) {
        // Runs after the rest of this read: the owner gets every message it brought at once.
        deliver_posted_ = true;
        loop_.Post([this] { DeliverArrived(); });
      }
      return;
    }
    case PullReply::kEnd:
    case PullReply::kRefused:
      break;
  }
  if (!pull_ || msg.subject() != pull_->reply) return;  // an earlier pull's late end
  if (pull_->received == 0) nothing_pending_ = true;
  if (kind == PullReply::kRefused) {
    const std::string description = msg.Header("Description");
    spdlog::warn("pull from {} consumer {} refused: {} {}; next in {} ms", options_.stream,
                 options_.consumer, msg.Header("Status"), description,
                 options_.refused_pause.count());
    paused_until_ = std::chrono::steady_clock::now() + options_.refused_pause;
  }
  EndPull();
  if (!deliver_posted_) MaybePull();  // else after the delivery
}

void PullIntake::DeliverArrived() {
  deliver_posted_ = false;
  std::vector<natsMsg*> messages;
  messages.swap(arrived_);
  if (!messages.empty()) {
    try {
      messages_(std::move(messages));
    } catch (const std::exception& e) {
      spdlog::error("pull intake: handing messages over threw: {}", e.what());
    }
  }
  MaybePull();
}

void PullIntake::EndPull() {
  if (!pull_) return;
  loop_.CancelTimer(pull_->give_up);
  pull_.reset();
}

void PullIntake::MaybePull() {
  if (stopped_ || pull_) return;
  auto retry_in = [this](std::chrono::steady_clock::duration delay) {
    if (retry_timer_ != 0) return;
    retry_timer_ = loop_.AddTimer(std::chrono::ceil<std::chrono::milliseconds>(delay), [this] {
      retry_timer_ = 0;
      MaybePull();
    });
  };
  const auto now = std::chrono::steady_clock::now();
  if (now < paused_until_) {
    retry_in(paused_until_ - now);
    return;
  }
  starved_.store(true);
  const int batch = batch_(nothing_pending_);
  if (batch <= 0) {
    // Wake brings the next pull when a slot frees up; this only backs it up.
    retry_in(std::chrono::milliseconds(200));
    return;
  }
  starved_.store(false);
  Pull pull;
  pull.id = next_id_++;
  pull.reply = inbox_ + "." + std::to_string(pull.id);
  pull.batch = batch;
  // A pull for one ends with its message; a pull for more, asked no_wait, ends (408) as soon
  // as the consumer has nothing more instead of holding what came until the whole batch did.
  Status sent =
      conn_.Publish(next_subject_, PullRequestBody(batch, options_.expires, batch > 1), pull.reply);
  if (!sent.ok()) {
    spdlog::warn("pull from {} consumer {}: {}", options_.stream, options_.consumer,
                 sent.error().message);
    paused_until_ = now + options_.refused_pause;
    retry_in(options_.refused_pause);
    return;
  }
  const uint64_t id = pull.id;
  pull.give_up = loop_.AddTimer(options_.expires + options_.grace, [this, id] {
    if (!pull_ || pull_->id != id) return;
    // Lost (e.g. with a reconnect): what it may still bring is handled all the same.
    spdlog::warn("pull from {} consumer {} had no answer in {} ms; pulling again", options_.stream,
                 options_.consumer, (options_.expires + options_.grace).count());
    pull_.reset();
    MaybePull();
  });
  pull_ = std::move(pull);
}

}  // namespace wf
