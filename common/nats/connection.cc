#include "nats/connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "io/event_loop.h"

namespace wf {
namespace {

/// natsMsg is opaque, but nats.c 3.4 lays it out as `natsGCItem gc {next, freeCb}; const char*
/// subject; const char* reply; char* hdr; natsStrHash* headers; const char* data; int dataLen`
/// (src/msg.h), and natsMsg_Destroy frees a message on the calling thread when gc.freeCb is
/// null. The layout is checked against the public accessors on a real message before anything
/// relies on it.
constexpr std::size_t kWord = sizeof(void*);

bool MessageLayoutIsKnown() {
  natsMsg* msg = nullptr;
  if (natsMsg_Create(&msg, "layout.check", "layout.reply", "12345", 5) != NATS_OK) return false;
  auto word = [msg](std::size_t i) {
    const void* value;
    std::memcpy(&value, reinterpret_cast<const char*>(msg) + i * kWord, kWord);
    return value;
  };
  int data_len = 0;
  std::memcpy(&data_len, reinterpret_cast<const char*>(msg) + 7 * kWord, sizeof data_len);
  const bool known = word(0) == nullptr && word(1) != nullptr &&
                     word(2) == natsMsg_GetSubject(msg) && word(3) == natsMsg_GetReply(msg) &&
                     word(4) == nullptr && word(5) == nullptr && word(6) == natsMsg_GetData(msg) &&
                     data_len == natsMsg_GetDataLength(msg);
  natsMsg_Destroy(msg);
  return known;
}

std::atomic<bool> free_inline{false};

}  // namespace

void DestroyNatsMsg(natsMsg* msg) {
  if (msg == nullptr) return;
  if (free_inline.load(std::memory_order_relaxed)) {
    std::memset(reinterpret_cast<char*>(msg) + kWord, 0, kWord);  // gc.freeCb = NULL
  }
  natsMsg_Destroy(msg);
}

std::string NatsStatusText(natsStatus status) {
  std::string text = natsStatus_GetText(status);
  const char* last = nats_GetLastError(nullptr);
  if (last && *last && text.find(last) == std::string::npos) {
    text += ": ";
    text += last;
  }
  return text;
}

std::string RedactUrlCredentials(std::string_view text) {
  // A URL ends at a list separator or blank; its credentials are everything between the scheme
  // (if any) and its last '@'.
  constexpr std::string_view kSeparators = ", \t\r\n\"'";
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find_first_of(kSeparators, pos), text.size());
    const std::string_view token = text.substr(pos, end - pos);
    const std::size_t scheme = token.find("://");
    const std::size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
    // A query (`?token=…`, `?password=…`) may carry a secret as well: its value goes.
    const std::size_t query = token.find('?', start);
    const std::string_view url = token.substr(0, query);
    const std::size_t at = url.rfind('@');
    if (at != std::string_view::npos && at >= start) {
      out.append(url.substr(0, start)).append("***").append(url.substr(at));
    } else {
      out.append(url);
    }
    if (query != std::string_view::npos) out.append("?***");
    if (end < text.size()) out.push_back(text[end]);
    pos = end + 1;
  }
  return out;
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
  NatsMsgView view(msg);
  try {
    box->handler(view);
  } catch (const std::exception& e) {
    spdlog::error("handler for {} threw: {}", box->subject, e.what());
  } catch (...) {
    spdlog::error("handler for {} threw a non-exception", box->subject);
  }
  if (!view.taken()) DestroyNatsMsg(msg);
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

/// A subscription whose messages the loop thread takes out of nats.c's queue itself (a nats.c
/// synchronous subscription), right after reading them.
struct NatsSubscription::PolledSub {
  natsSubscription* sub = nullptr;
  HandlerBox* box = nullptr;
  std::weak_ptr<NatsConnection::LoopBinding> binding;
  std::recursive_mutex mu;  // Held while delivering; Unsubscribe takes it to wait for a handler.
  bool closed = false;      // Guarded by mu.

  /// Loop thread: hands every queued message to the handler. False when some are left (the
  /// caller schedules another pass so one busy subscription cannot starve the loop).
  bool Deliver() {
    constexpr int kMaxPerPass = 1024;
    std::lock_guard lock(mu);
    if (closed) return true;
    for (int i = 0; i < kMaxPerPass; ++i) {
      int pending = 0;
      if (natsSubscription_GetPending(sub, &pending, nullptr) != NATS_OK || pending <= 0) {
        return true;
      }
      natsMsg* msg = nullptr;
      natsStatus s = natsSubscription_NextMsg(&msg, sub, 0);
      // Slow consumer: reported once, messages are still queued. No responders: the status
      // message was swallowed (and freed); those after it are still to deliver.
      if (s == NATS_SLOW_CONSUMER || s == NATS_NO_RESPONDERS) continue;
      if (s != NATS_OK) return true;
      HandlerBox::OnMessage(nullptr, sub, msg, box);
    }
    return false;
  }
};

/// The state shared by nats.c's event-loop callbacks, the EventLoop and the connection. nats.c
/// calls the callbacks from any thread (connect, reconnect, publishers) with its connection lock
/// held; everything touching the EventLoop itself runs on the loop thread.
struct NatsConnection::LoopBinding : std::enable_shared_from_this<LoopBinding> {
  explicit LoopBinding(EventLoop* l) : loop(l) {}

  EventLoop* loop;
  std::mutex mu;  // Guards the fields up to `subs`.
  natsConnection* nc = nullptr;
  int fd = -1;
  uint64_t attach_generation = 0;
  bool attached = false;
  bool closing = false;  // The connection is being destroyed: watch nothing any more.
  bool want_read = false;
  bool want_write = false;  // nats.c holds buffered bytes for the socket.
  std::vector<std::shared_ptr<NatsSubscription::PolledSub>> subs;
  uint64_t subs_version = 0;  // Bumped on every change of `subs`.
  // Held by whoever calls natsConnection_ProcessWriteEvent, which must never find the buffer
  // empty (it takes a zero-byte send for a closed connection): the holder checks want_write
  // after taking it. The loop thread blocks on it; publishing threads only try it.
  std::mutex write_mu;
  std::atomic<bool> write_interest{false};  // The loop watches for writability.
  // Loop thread only: what the EventLoop watches now.
  int watched_fd = -1;
  uint32_t watched_token = 0;  // nats.c closes the fd before detaching: see EventLoop::Watch
  uint64_t watched_generation = 0;
  uint32_t watched_events = 0;
  bool redeliver_posted = false;
  std::vector<std::shared_ptr<NatsSubscription::PolledSub>> subs_copy;  // `subs` as of...
  uint64_t subs_copy_version = 0;                                       // ...this version

  /// Loop thread: makes the EventLoop watch what nats.c asked for.
  void Sync() {
    int target_fd;
    uint64_t generation;
    uint32_t events;
    {
      std::lock_guard lock(mu);
      target_fd = attached && !closing ? fd : -1;
      generation = attach_generation;
      events = (want_read ? kIoRead : 0u) | (want_write ? kIoWrite : 0u);
    }
    if (target_fd != watched_fd || generation != watched_generation) {
      if (watched_fd >= 0) loop->Unwatch(watched_fd, watched_token);
      watched_fd = -1;
      watched_token = 0;
      watched_events = 0;
      watched_generation = generation;
      write_interest.store(false, std::memory_order_relaxed);
      if (target_fd < 0) return;
      std::weak_ptr<LoopBinding> weak = weak_from_this();
      Status st = loop->Watch(target_fd, events, [weak](uint32_t ready) {
        if (auto self = weak.lock()) self->OnFd(ready);
      });
      if (!st.ok()) {
        spdlog::error("NATS event loop: watching fd {}: {}", target_fd, st.error().message);
        return;
      }
      watched_fd = target_fd;
      watched_token = loop->WatchToken(target_fd);
      watched_events = events;
    } else if (watched_fd >= 0 && events != watched_events) {
      if (loop->Modify(watched_fd, events, watched_token).ok()) watched_events = events;
    }
    write_interest.store((watched_events & kIoWrite) != 0, std::memory_order_relaxed);
  }

  /// Loop thread: stops watching the socket for good, before nats.c closes it (it closes the
  /// descriptor on its own thread and detaches only afterwards).
  void StopWatching() {
    {
      std::lock_guard lock(mu);
      closing = true;
    }
    Sync();
  }

  /// Runs Sync on the loop thread: now when already there, else posted.
  void SyncSoon() {
    if (loop->InLoopThread()) {
      Sync();
      return;
    }
    loop->Post([self = shared_from_this()] { self->Sync(); });
  }

  natsConnection* AttachedConnection() {
    std::lock_guard lock(mu);
    return attached ? nc : nullptr;
  }

  /// Writes what nats.c has buffered, if anything. Caller holds write_mu.
  void WriteBuffered() {
    natsConnection* conn = nullptr;
    {
      std::lock_guard lock(mu);
      if (attached && want_write) conn = nc;
    }
    if (conn) natsConnection_ProcessWriteEvent(conn);
  }

  void OnFd(uint32_t ready) {
    natsConnection* conn = AttachedConnection();
    if (!conn) return;
    if (ready & (kIoRead | kIoError | kIoHangup)) natsConnection_ProcessReadEvent(conn);
    if (ready & kIoWrite) {
      {
        std::lock_guard w(write_mu);
        WriteBuffered();
      }
      Sync();
    }
    DeliverPolled();
  }

  /// Prepare hook: writes what publishes on the loop thread buffered in this iteration, then
  /// watches for writability if bytes are left (socket full, or a publisher that found the
  /// loop writing left its bytes to it).
  void BeforeSleep() {
    {
      std::lock_guard w(write_mu);
      WriteBuffered();
    }
    Sync();
  }

  void DeliverPolled() {
    {
      std::lock_guard lock(mu);
      if (subs_copy_version != subs_version) {
        subs_copy = subs;
        subs_copy_version = subs_version;
      }
    }
    bool all = true;
    for (std::size_t i = 0; i < subs_copy.size(); ++i) {
      // By index and a local reference: a handler may unsubscribe, and the next read of `subs`
      // (after this pass) replaces subs_copy.
      std::shared_ptr<NatsSubscription::PolledSub> ps = subs_copy[i];
      all = ps->Deliver() && all;
    }
    if (!all && !redeliver_posted) {
      redeliver_posted = true;
      loop->Post([self = shared_from_this()] {
        self->redeliver_posted = false;
        self->DeliverPolled();
      });
    }
  }

  void Remove(const std::shared_ptr<NatsSubscription::PolledSub>& ps) {
    std::lock_guard lock(mu);
    subs.erase(std::remove(subs.begin(), subs.end(), ps), subs.end());
    ++subs_version;
  }
};

natsStatus NatsConnection::LoopAttach(void** user_data, void* loop, natsConnection* nc,
                                      natsSock fd) {
  auto* binding = static_cast<LoopBinding*>(loop);
  {
    std::lock_guard lock(binding->mu);
    binding->nc = nc;
    binding->fd = static_cast<int>(fd);
    binding->attached = true;
    binding->want_read = true;  // Attaching means "poll for reads" (as nats.c's adapters do).
    ++binding->attach_generation;
  }
  *user_data = binding;
  binding->SyncSoon();
  return NATS_OK;
}

natsStatus NatsConnection::LoopRead(void* user_data, bool add) {
  auto* binding = static_cast<LoopBinding*>(user_data);
  {
    std::lock_guard lock(binding->mu);
    binding->want_read = add;
  }
  binding->SyncSoon();
  return NATS_OK;
}

natsStatus NatsConnection::LoopWrite(void* user_data, bool add) {
  auto* binding = static_cast<LoopBinding*>(user_data);
  {
    std::lock_guard lock(binding->mu);
    binding->want_write = add;
  }
  if (binding->loop->InLoopThread()) {
    // Bytes buffered on the loop thread are written by the prepare hook, all at once; a removal
    // (everything written) drops write interest if it was on.
    if (!add && binding->write_interest.load(std::memory_order_relaxed)) binding->Sync();
    return NATS_OK;
  }
  if (!add) {
    if (binding->write_interest.load(std::memory_order_relaxed)) binding->SyncSoon();
    return NATS_OK;
  }
  // Another thread published into an empty buffer: write now, as send_asap would, instead of
  // waking the loop for it. nats.c holds its (recursive) connection lock around this callback;
  // ProcessWriteEvent takes it again and, all written, calls LoopWrite(false) itself. When the
  // loop thread holds write_mu it is about to write (it waits for the lock we hold) or to look
  // at want_write again in Sync, so the bytes are left to it.
  std::unique_lock writing(binding->write_mu, std::try_to_lock);
  if (!writing.owns_lock()) return NATS_OK;
  binding->WriteBuffered();
  writing.unlock();
  bool left;
  {
    std::lock_guard lock(binding->mu);
    left = binding->want_write;
  }
  if (left) binding->SyncSoon();  // The socket was full: let the loop wait for writability.
  return NATS_OK;
}

natsStatus NatsConnection::LoopDetach(void* user_data) {
  auto* binding = static_cast<LoopBinding*>(user_data);
  {
    std::lock_guard lock(binding->mu);
    binding->attached = false;
    binding->want_read = false;
    binding->want_write = false;
  }
  binding->SyncSoon();
  return NATS_OK;
}

NatsSubscription::~NatsSubscription() { Drain(std::chrono::milliseconds(2000)); }

NatsSubscription::NatsSubscription(NatsSubscription&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      sub_(std::exchange(other.sub_, nullptr)),
      box_(std::move(other.box_)),
      polled_(std::move(other.polled_)) {}

NatsSubscription& NatsSubscription::operator=(NatsSubscription&& other) noexcept {
  if (this != &other) {
    Unsubscribe();
    conn_ = std::exchange(other.conn_, nullptr);
    sub_ = std::exchange(other.sub_, nullptr);
    box_ = std::move(other.box_);
    polled_ = std::move(other.polled_);
  }
  return *this;
}

void NatsSubscription::Unsubscribe() { Drain(std::chrono::milliseconds(0)); }

void NatsSubscription::Drain(std::chrono::milliseconds timeout) {
  if (!sub_) return;
  if (polled_) {
    DrainPolled(timeout);
    return;
  }
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

void NatsSubscription::DrainPolled(std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto until = Clock::now() + timeout;
  auto binding = polled_->binding.lock();
  bool connected = conn_ && natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
  bool drained = false;
  if (binding && connected && timeout.count() > 0 && natsSubscription_Drain(sub_) == NATS_OK) {
    // The loop thread delivers what is queued; a synchronous subscription's drain completes
    // when a read finds its queue empty, so the loop is asked to look until it does.
    auto ps = polled_;
    while (!drained && Clock::now() < until) {
      binding->loop->RunAndWait(
          [ps] {
            std::lock_guard lock(ps->mu);
            if (ps->closed) return;
            ps->Deliver();
            natsMsg* msg = nullptr;
            if (natsSubscription_NextMsg(&msg, ps->sub, 0) == NATS_OK) {
              HandlerBox::OnMessage(nullptr, ps->sub, msg, ps->box);
            }
          },
          std::chrono::milliseconds(200));
      drained = natsSubscription_WaitForDrainCompletion(sub_, 10) == NATS_OK;
    }
  }
  {
    // Waits for a handler running on the loop thread; none runs for this subscription after.
    std::lock_guard lock(polled_->mu);
    polled_->closed = true;
  }
  if (binding) binding->Remove(polled_);
  if (!drained) natsSubscription_Unsubscribe(sub_);
  natsSubscription_Destroy(sub_);
  sub_ = nullptr;
  conn_ = nullptr;
  polled_.reset();
  box_.reset();
}

Result<std::unique_ptr<NatsConnection>> NatsConnection::Connect(NatsOptions options) {
  // nats.c spins up to 2,000 times on a contended lock before sleeping by default; with a few
  // cores and more busy threads than cores the holder is often not running, so spinning only
  // burns the core it needs. Must precede every other nats.c call of the process.
  static std::once_flag opened;
  std::call_once(opened, [] {
    (void)nats_Open(0);
    free_inline.store(MessageLayoutIsKnown());
    if (!free_inline.load()) {
      spdlog::warn("nats.c message layout not recognised: messages are freed by its collector");
    }
  });
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
  if (s == NATS_OK && self->options_.loop) {
    self->binding_ = std::make_shared<LoopBinding>(self->options_.loop);
    std::weak_ptr<LoopBinding> weak = self->binding_;
    self->options_.loop->Post([weak, loop = self->options_.loop] {
      loop->AddPrepareHook([weak] {
        if (auto binding = weak.lock()) binding->BeforeSleep();
      });
    });
    s = natsOptions_SetEventLoop(opts, self->binding_.get(), &NatsConnection::LoopAttach,
                                 &NatsConnection::LoopRead, &NatsConnection::LoopWrite,
                                 &NatsConnection::LoopDetach);
  }
  if (s == NATS_OK) s = natsConnection_Connect(&self->conn_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    return Error{ErrorCode::kUnavailable, "cannot connect to NATS at " + self->redacted_url_ +
                                              ": " + RedactUrlCredentials(NatsStatusText(s))};
  }
  self->max_payload_.store(natsConnection_GetMaxPayload(self->conn_));
  return self;
}

NatsConnection::~NatsConnection() {
  if (!conn_) return;
  closing_ = true;
  if (natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED) {
    natsConnection_FlushTimeout(conn_, 1000);
  }
  auto on_loop = [this](EventLoop::Task task) {
    if (!binding_->loop->RunAndWait(std::move(task), std::chrono::seconds(2))) {
      spdlog::warn("NATS event loop did not answer while closing the connection");
    }
  };
  if (binding_) {
    // The loop lets go of the socket first: nats.c closes it on this thread, and the loop must
    // not be in epoll_ctl on that number meanwhile (it may already belong to a new socket).
    on_loop([binding = binding_] { binding->StopWatching(); });
  }
  natsConnection_Close(conn_);
  {
    // Callbacks run on nats.c's own thread; `this` must outlive the last one.
    std::unique_lock lock(closed_mu_);
    closed_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return closed_; });
  }
  if (binding_) {
    // Detached now; once the loop has run one more task it is not inside a callback that holds
    // the connection, and will not enter one.
    on_loop([] {});
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
  spdlog::warn("NATS connection to {} lost; reconnecting", self->redacted_url_);
  if (self->options_.on_disconnected) self->options_.on_disconnected();
}

void NatsConnection::OnReconnected(natsConnection* nc, void* closure) {
  auto* self = static_cast<NatsConnection*>(closure);
  // nats.c's callback thread, without the connection's lock: the new server's limit.
  self->max_payload_.store(natsConnection_GetMaxPayload(nc));
  spdlog::info("NATS connection to {} restored", self->redacted_url_);
  if (self->options_.on_reconnected) self->options_.on_reconnected();
}

void NatsConnection::OnError(natsConnection*, natsSubscription* sub, natsStatus err, void*) {
  const char* subject = sub ? natsSubscription_GetSubject(sub) : nullptr;
  if (!subject) subject = "";
  spdlog::warn("NATS async error on '{}': {}", subject, natsStatus_GetText(err));
}

std::size_t NatsConnection::MaxPayload() const {
  const int64_t max = max_payload_.load(std::memory_order_relaxed);
  return max > 0 ? static_cast<std::size_t>(max) : std::size_t{1} << 20;
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
    DestroyNatsMsg(msg);
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
  if (binding_) {
    // Delivered by the loop thread: a synchronous subscription it empties after each read.
    if (queue.empty()) {
      s = natsConnection_SubscribeSync(&sub.sub_, conn_, subject.c_str());
    } else {
      s = natsConnection_QueueSubscribeSync(&sub.sub_, conn_, subject.c_str(), queue.c_str());
    }
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub.sub_, 1 << 20, 1 << 30);
    sub.conn_ = conn_;
    if (s != NATS_OK) {
      return Error{ErrorCode::kUnavailable, "NATS subscribe " + subject + ": " + NatsStatusText(s)};
    }
    sub.polled_ = std::make_shared<NatsSubscription::PolledSub>();
    sub.polled_->sub = sub.sub_;
    sub.polled_->box = sub.box_.get();
    sub.polled_->binding = binding_;
    std::lock_guard lock(binding_->mu);
    binding_->subs.push_back(sub.polled_);
    ++binding_->subs_version;
    return sub;
  }
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
  DestroyNatsMsg(request);
  if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) {
    return Error{ErrorCode::kNoWorker, "no answer on " + subject};
  }
  if (s != NATS_OK) {
    return Error{ErrorCode::kUnavailable, "NATS request " + subject + ": " + NatsStatusText(s)};
  }
  std::string out(natsMsg_GetData(reply), static_cast<size_t>(natsMsg_GetDataLength(reply)));
  DestroyNatsMsg(reply);
  return out;
}

Status NatsConnection::Flush(std::chrono::milliseconds timeout) {
  // Without a server no PONG can come: do not sit out the timeout (shutdowns flush on the way
  // out, and NATS may be what went away).
  if (!Connected()) return Status(ErrorCode::kUnavailable, "NATS flush: not connected");
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
