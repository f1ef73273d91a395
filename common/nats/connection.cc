#include "nats/connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <mutex>

namespace wf {

std::string NatsStatusText(natsStatus status) {
  std::string text = natsStatus_GetText(status);
  const char* last = nats_GetLastError(nullptr);
  if (last && *last && text.find(last) == std::string::npos) {
    text += ": ";
    text += last;
  }
  return text;
}

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view NatsMsgView::subject() const {
  const char* s = natsMsg_GetSubject(msg_);
  return s ? s : "";
}

std::string_view NatsMsgView::reply() const {
  const char* r = natsMsg_GetReply(msg_);
  return r ? r : "";
}

std::string_view NatsMsgView::data() const {
  return {natsMsg_GetData(msg_), static_cast<size_t>(natsMsg_GetDataLength(msg_))};
}

std::string NatsMsgView::Header(const char* name) const {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg_, name, &value) == NATS_OK && value) return value;
  return {};
}

void NatsSubscription::HandlerBox::OnMessage(natsConnection*, natsSubscription*, natsMsg* msg,
                                             void* closure) {
  auto* box = static_cast<HandlerBox*>(closure);
  try {
    box->handler(NatsMsgView(msg));
  } catch (const std::exception& e) {
    spdlog::error("handler for {} threw: {}", box->subject, e.what());
  } catch (...) {
    spdlog::error("handler for {} threw a non-exception", box->subject);
  }
  natsMsg_Destroy(msg);
}

void NatsSubscription::HandlerBox::OnComplete(void* closure) {
  auto* box = static_cast<HandlerBox*>(closure);
  std::lock_guard lock(box->mu);
  box->complete = true;
  box->cv.notify_all();
}

bool NatsSubscription::HandlerBox::WaitComplete(std::chrono::milliseconds timeout) {
  if (!armed) return false;
  std::unique_lock lock(mu);
  return cv.wait_for(lock, timeout, [this] { return complete; });
}

NatsSubscription::~NatsSubscription() { Drain(std::chrono::milliseconds(2000)); }

NatsSubscription::NatsSubscription(NatsSubscription&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      sub_(std::exchange(other.sub_, nullptr)),
      box_(std::move(other.box_)) {}

NatsSubscription& NatsSubscription::operator=(NatsSubscription&& other) noexcept {
  if (this != &other) {
    Unsubscribe();
    conn_ = std::exchange(other.conn_, nullptr);
    sub_ = std::exchange(other.sub_, nullptr);
    box_ = std::move(other.box_);
  }
  return *this;
}

void NatsSubscription::Unsubscribe() { Drain(std::chrono::milliseconds(0)); }

void NatsSubscription::Drain(std::chrono::milliseconds timeout) {
  if (!sub_) return;
  using Clock = std::chrono::steady_clock;
  auto until = Clock::now() + timeout;
  bool connected = conn_ && natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
  bool drained = false;
  if (connected && timeout.count() > 0 && natsSubscription_Drain(sub_) == NATS_OK) {
    drained = natsSubscription_WaitForDrainCompletion(sub_, timeout.count()) == NATS_OK;
  }
  // Not drained (no server, no time, or the wait ran out): stop delivery now.
  if (!drained) natsSubscription_Unsubscribe(sub_);
  // A handler may be running its last message right now: free it only once nats.c says it
  // returned. Handlers are short; a little time is allowed even when the budget is spent.
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
  bool complete = box_->WaitComplete(std::max(left, std::chrono::milliseconds(2000)));
  natsSubscription_Destroy(sub_);
  sub_ = nullptr;
  conn_ = nullptr;
  if (complete) {
    box_.reset();
  } else {
    spdlog::warn("handler for {} still running at unsubscribe; leaving it allocated",
                 box_->subject);
    (void)box_.release();
  }
}

Result<std::unique_ptr<NatsConnection>> NatsConnection::Connect(NatsOptions options) {
  // nats.c spins up to 2,000 times on a contended lock before sleeping by default; with a few
  // cores and more busy threads than cores the holder is often not running, so spinning only
  // burns the core it needs. Must precede every other nats.c call of the process.
  static std::once_flag opened;
  std::call_once(opened, [] { (void)nats_Open(0); });
  std::unique_ptr<NatsConnection> self(new NatsConnection(std::move(options)));
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, self->options_.url.c_str());
  if (s == NATS_OK && !self->options_.name.empty()) {
    s = natsOptions_SetName(opts, self->options_.name.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, self->options_.send_asap);
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, self->options_.connect_timeout.count());
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, self->options_.reconnect_wait.count());
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 32 * 1024 * 1024);
  if (s == NATS_OK) s = natsOptions_SetMaxPendingMsgs(opts, 1 << 20);
  if (s == NATS_OK) {
    s = natsOptions_SetDisconnectedCB(opts, &NatsConnection::OnDisconnected, self.get());
  }
  if (s == NATS_OK) {
    s = natsOptions_SetReconnectedCB(opts, &NatsConnection::OnReconnected, self.get());
  }
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, &NatsConnection::OnError, self.get());
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, &NatsConnection::OnClosed, self.get());
  if (s == NATS_OK) s = natsConnection_Connect(&self->conn_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    return Error{ErrorCode::kUnavailable,
                 "cannot connect to NATS at " + self->options_.url + ": " + NatsStatusText(s)};
  }
  return self;
}

NatsConnection::~NatsConnection() {
  if (!conn_) return;
  closing_ = true;
  if (natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED) {
    natsConnection_FlushTimeout(conn_, 1000);
  }
  natsConnection_Close(conn_);
  {
    // Callbacks run on nats.c's own thread; `this` must outlive the last one.
    std::unique_lock lock(closed_mu_);
    closed_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return closed_; });
  }
  natsConnection_Destroy(conn_);
}

void NatsConnection::OnClosed(natsConnection*, void* closure) {
  auto* self = static_cast<NatsConnection*>(closure);
  std::lock_guard lock(self->closed_mu_);
  self->closed_ = true;
  self->closed_cv_.notify_all();
}

void NatsConnection::OnDisconnected(natsConnection*, void* closure) {
  auto* self = static_cast<NatsConnection*>(closure);
  if (self->closing_) return;
  spdlog::warn("NATS connection to {} lost; reconnecting", self->options_.url);
  if (self->options_.on_disconnected) self->options_.on_disconnected();
}

void NatsConnection::OnReconnected(natsConnection*, void* closure) {
  auto* self = static_cast<NatsConnection*>(closure);
  spdlog::info("NATS connection to {} restored", self->options_.url);
  if (self->options_.on_reconnected) self->options_.on_reconnected();
}

void NatsConnection::OnError(natsConnection*, natsSubscription* sub, natsStatus err, void*) {
  const char* subject = sub ? natsSubscription_GetSubject(sub) : nullptr;
  if (!subject) subject = "";
  spdlog::warn("NATS async error on '{}': {}", subject, natsStatus_GetText(err));
}

Status NatsConnection::Publish(std::string_view subject, std::string_view data,
                               std::string_view reply, const NatsHeaders& headers) {
  natsStatus s;
  std::string subj(subject);
  if (headers.empty()) {
    if (reply.empty()) {
      s = natsConnection_Publish(conn_, subj.c_str(), data.data(), static_cast<int>(data.size()));
    } else {
      std::string rep(reply);
      s = natsConnection_PublishRequest(conn_, subj.c_str(), rep.c_str(), data.data(),
                                        static_cast<int>(data.size()));
    }
  } else {
    natsMsg* msg = nullptr;
    std::string rep(reply);
    s = natsMsg_Create(&msg, subj.c_str(), rep.empty() ? nullptr : rep.c_str(), data.data(),
                       static_cast<int>(data.size()));
    for (const auto& [name, value] : headers) {
      if (s == NATS_OK && !value.empty()) s = natsMsgHeader_Set(msg, name.c_str(), value.c_str());
    }
    if (s == NATS_OK) s = natsConnection_PublishMsg(conn_, msg);
    natsMsg_Destroy(msg);
  }
  if (s != NATS_OK) {
    return Status(ErrorCode::kUnavailable, "NATS publish on " + subj + ": " + NatsStatusText(s));
  }
  return Status::Ok();
}

Result<NatsSubscription> NatsConnection::Subscribe(const std::string& subject, NatsHandler handler,
                                                   const std::string& queue) {
  NatsSubscription sub;
  sub.box_ = std::make_unique<NatsSubscription::HandlerBox>();
  sub.box_->handler = std::move(handler);
  sub.box_->subject = subject;
  natsStatus s;
  if (queue.empty()) {
    s = natsConnection_Subscribe(&sub.sub_, conn_, subject.c_str(),
                                 &NatsSubscription::HandlerBox::OnMessage, sub.box_.get());
  } else {
    s = natsConnection_QueueSubscribe(&sub.sub_, conn_, subject.c_str(), queue.c_str(),
                                      &NatsSubscription::HandlerBox::OnMessage, sub.box_.get());
  }
  if (s == NATS_OK) {
    s = natsSubscription_SetOnCompleteCB(sub.sub_, &NatsSubscription::HandlerBox::OnComplete,
                                         sub.box_.get());
    sub.box_->armed = s == NATS_OK;
  }
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub.sub_, 1 << 20, 1 << 30);
  sub.conn_ = conn_;
  if (s != NATS_OK) {
    return Error{ErrorCode::kUnavailable, "NATS subscribe " + subject + ": " + NatsStatusText(s)};
  }
  return sub;
}

Result<std::string> NatsConnection::Request(const std::string& subject, std::string_view data,
                                            std::chrono::milliseconds timeout,
                                            const NatsHeaders& headers) {
  natsMsg* request = nullptr;
  natsMsg* reply = nullptr;
  natsStatus s = natsMsg_Create(&request, subject.c_str(), nullptr, data.data(),
                                static_cast<int>(data.size()));
  for (const auto& [name, value] : headers) {
    if (s == NATS_OK && !value.empty()) s = natsMsgHeader_Set(request, name.c_str(), value.c_str());
  }
  if (s == NATS_OK) s = natsConnection_RequestMsg(&reply, conn_, request, timeout.count());
  natsMsg_Destroy(request);
  if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) {
    return Error{ErrorCode::kNoWorker, "no answer on " + subject};
  }
  if (s != NATS_OK) {
    return Error{ErrorCode::kUnavailable, "NATS request " + subject + ": " + NatsStatusText(s)};
  }
  std::string out(natsMsg_GetData(reply), static_cast<size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  return out;
}

Status NatsConnection::Flush(std::chrono::milliseconds timeout) {
  natsStatus s = natsConnection_FlushTimeout(conn_, timeout.count());
  if (s != NATS_OK) return Status(ErrorCode::kUnavailable, "NATS flush: " + NatsStatusText(s));
  return Status::Ok();
}

bool NatsConnection::Connected() const {
  return natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
}

std::string NatsConnection::NewInbox() {
  natsInbox* inbox = nullptr;
  if (natsInbox_Create(&inbox) != NATS_OK) return "_INBOX.fallback";
  std::string out = inbox;
  natsInbox_Destroy(inbox);
  return out;
}

}  // namespace wf
