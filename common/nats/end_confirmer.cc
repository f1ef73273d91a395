#include "nats/end_confirmer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <thread>
#include <vector>

namespace wf {

EndConfirmer::EndConfirmer(NatsConnection& publish_conn, NatsConnection& reply_conn, Timer& timer,
                           Options options)
    : publish_conn_(publish_conn), reply_conn_(reply_conn), timer_(timer), options_(options) {}

EndConfirmer::~EndConfirmer() {
  sub_.Unsubscribe();
  std::unique_lock lock(mu_);
  stopped_ = true;
  if (sweep_armed_ && timer_.Cancel(sweep_task_)) sweep_armed_ = false;
  // Else a sweep is due or running: it sees stopped_ (or finishes its sends) and says so.
  sweep_done_.wait(lock, [this] { return !sweep_armed_ && !sweeping_; });
  const std::size_t left = pending_.size();
  if (left > 0) {
    unconfirmed_.fetch_add(left, std::memory_order_relaxed);
    spdlog::warn("{} last event(s) of turns never confirmed by their receiver", left);
  }
}

Status EndConfirmer::Start() {
  inbox_ = NatsConnection::NewInbox();
  auto sub = reply_conn_.Subscribe(inbox_ + ".*", [this](const NatsMsgView& m) { OnReply(m); });
  if (!sub.ok()) return sub.error();
  sub_ = std::move(sub).value();
  return reply_conn_.Flush(std::chrono::milliseconds(2000));
}

Status EndConfirmer::Send(const std::string& subject, std::string data, NatsHeaders headers,
                          int64_t deadline_unix_ms, Settled on_settled, std::size_t held_bytes) {
  const auto now = std::chrono::steady_clock::now();
  auto deadline = now + options_.max_wait;
  if (deadline_unix_ms != 0) {
    deadline =
        std::min(deadline, now + std::chrono::milliseconds(deadline_unix_ms - UnixMillisNow()));
  }
  auto shared = std::make_shared<const std::string>(std::move(data));
  const std::size_t bytes = shared->size() + held_bytes;
  std::string reply;
  {
    std::lock_guard lock(mu_);
    if (stopped_ || deadline <= now || pending_.size() >= options_.max_pending ||
        pending_bytes_ + bytes > options_.max_pending_bytes) {
      unconfirmed_.fetch_add(1, std::memory_order_relaxed);
    } else {
      const uint64_t token = ++next_token_;
      reply = inbox_ + "." + std::to_string(token);
      // The first send is below, outside the lock; a confirmation coming before this entry
      // exists cannot happen (it is inserted first).
      pending_bytes_ += bytes;
      pending_.emplace(token,
                       Pending{subject, shared, headers, deadline, now + options_.first_retry,
                               options_.first_retry, std::move(on_settled), bytes});
      ArmSweep();
    }
  }
  Status sent = publish_conn_.Publish(subject, *shared, reply, headers);
  // Not kept for resending (on_settled was moved from when it was): the outcome is known now.
  if (reply.empty() && on_settled) on_settled(false);
  return sent;
}

EndConfirmer::Settled EndConfirmer::ErasePending(
    std::unordered_map<uint64_t, Pending>::iterator it) {
  pending_bytes_ -= it->second.bytes;
  Settled on_settled = std::move(it->second.on_settled);
  pending_.erase(it);
  return on_settled;
}

void EndConfirmer::OnReply(const NatsMsgView& msg) {
  // Nobody subscribed to the event's subject yet (a receiver still reconnecting): not a
  // confirmation; the sweep sends it again. (Connections on an EventLoop never deliver these.)
  if (natsMsg_IsNoResponders(msg.raw())) return;
  const std::string_view subject = msg.subject();
  const std::string_view last = subject.substr(subject.rfind('.') + 1);
  uint64_t token = 0;
  if (std::from_chars(last.data(), last.data() + last.size(), token).ec != std::errc()) return;
  Settled on_settled;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(token);
    if (it == pending_.end()) return;  // a repeat's confirmation, or given up
    on_settled = ErasePending(it);
  }
  confirmed_.fetch_add(1, std::memory_order_relaxed);
  if (on_settled) on_settled(true);
}

void EndConfirmer::ArmSweep() {
  if (sweep_armed_ || stopped_) return;
  sweep_armed_ = true;
  sweep_task_ = timer_.After(options_.first_retry, [this] { Sweep(); });
}

void EndConfirmer::Sweep() {
  struct Resend {
    std::string subject;
    std::shared_ptr<const std::string> data;
    std::string reply;
    NatsHeaders headers;
  };
  std::vector<Resend> due;
  std::vector<Settled> expired;
  {
    std::lock_guard lock(mu_);
    sweep_armed_ = false;
    if (stopped_) {
      sweep_done_.notify_all();
      return;
    }
    sweeping_ = true;
    const auto now = std::chrono::steady_clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      Pending& p = it->second;
      auto next = std::next(it);
      if (now >= p.deadline) {
        expired.push_back(ErasePending(it));
      } else if (now >= p.next_send) {
        p.backoff = std::min(p.backoff * 2, options_.max_retry);
        p.next_send = now + p.backoff;
        due.push_back({p.subject, p.data, inbox_ + "." + std::to_string(it->first), p.headers});
      }
      it = next;
    }
    if (!pending_.empty()) ArmSweep();
  }
  if (!expired.empty()) {
    unconfirmed_.fetch_add(expired.size(), std::memory_order_relaxed);
    spdlog::warn("{} last event(s) of turns not confirmed by their deadline: given up",
                 expired.size());
    for (Settled& on_settled : expired) {
      if (on_settled) on_settled(false);
    }
  }
  for (const Resend& r : due) {
    resent_.fetch_add(1, std::memory_order_relaxed);
    if (auto status = publish_conn_.Publish(r.subject, *r.data, r.reply, r.headers); !status.ok()) {
      spdlog::debug("resending the last event on {}: {}", r.subject, status.error().message);
    }
  }
  if (!due.empty()) {
    spdlog::info("sent {} last event(s) of turns again: not confirmed yet", due.size());
  }
  std::lock_guard lock(mu_);
  sweeping_ = false;
  sweep_done_.notify_all();
}

bool EndConfirmer::WaitIdle(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (pending_.empty()) return true;
    }
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

EndConfirmer::Stats EndConfirmer::stats() const {
  Stats s;
  {
    std::lock_guard lock(mu_);
    s.awaiting = pending_.size();
  }
  s.confirmed = confirmed_.load(std::memory_order_relaxed);
  s.resent = resent_.load(std::memory_order_relaxed);
  s.unconfirmed = unconfirmed_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace wf
