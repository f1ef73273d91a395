#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error/error.h"

namespace wf {

class EventLoop;

/// NATS header names of the wire contract.
inline constexpr const char* kRequestIdHeader = "Wf-Request-Id";
inline constexpr const char* kTraceparentHeader = "traceparent";
/// Names the protobuf type of a payload where one subject carries several (`wf.history.append`).
inline constexpr const char* kPayloadTypeHeader = "Wf-Payload";

/// Header name/value pairs attached to a published message.
using NatsHeaders = std::vector<std::pair<std::string, std::string>>;

/// Read-only view of a received message, valid only during the handler call.
class NatsMsgView {
 public:
  explicit NatsMsgView(natsMsg* msg) : msg_(msg) {}
  std::string_view subject() const;
  /// The reply subject, empty when none.
  std::string_view reply() const;
  std::string_view data() const;
  /// A header's value, empty when absent.
  std::string Header(const char* name) const;
  /// The underlying message (still owned by the caller of the handler).
  natsMsg* raw() const { return msg_; }
  /// Within the handler: takes the message over. The handler's caller no longer destroys it;
  /// the taker frees it (DestroyNatsMsg).
  natsMsg* Take() const {
    taken_ = true;
    return msg_;
  }
  bool taken() const { return taken_; }

 private:
  natsMsg* msg_;
  mutable bool taken_ = false;
};

/// Handler of received messages. Runs on a nats.c delivery thread (or, for a connection on an
/// EventLoop, on the loop thread): must not block; exceptions are caught at the boundary and
/// logged.
using NatsHandler = std::function<void(const NatsMsgView&)>;

/// An active subscription (one `natsSubscription*`); unsubscribes on destruction. Movable.
class NatsSubscription {
 public:
  NatsSubscription() = default;
  /// Drains (up to 2 s; at once when disconnected), as Drain.
  ~NatsSubscription();
  NatsSubscription(NatsSubscription&& other) noexcept;
  NatsSubscription& operator=(NatsSubscription&& other) noexcept;
  NatsSubscription(const NatsSubscription&) = delete;
  NatsSubscription& operator=(const NatsSubscription&) = delete;

  /// Stops delivery now (pending messages are dropped) and waits (up to 2 s) for a running
  /// handler to return.
  void Unsubscribe();
  /// Stops taking new messages and waits (up to timeout) for queued ones to be handled. When the
  /// connection is down (a drain cannot complete without the server) it unsubscribes at once
  /// instead of waiting. Either way the handler is released only after nats.c reports that it
  /// returned for the last time; a handler still running after the wait is leaked, never freed
  /// under it. On an EventLoop connection, not from the loop thread (Unsubscribe may be).
  void Drain(std::chrono::milliseconds timeout);
  bool valid() const { return sub_ != nullptr; }
  natsSubscription* raw() const { return sub_; }

 private:
  friend class NatsConnection;
  struct PolledSub;
  /// Owns the handler for the C callback's closure pointer.
  struct HandlerBox {
    NatsHandler handler;
    std::string subject;
    std::mutex mu;
    std::condition_variable cv;
    bool armed = false;     // the completion callback is registered
    bool complete = false;  // Guarded by mu: nats.c will not call the handler again
    static void OnMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
    static void OnComplete(void* closure);
    /// Waits until OnComplete ran; false on timeout or when it was never registered.
    bool WaitComplete(std::chrono::milliseconds timeout);
  };
  /// Drain for a subscription delivered by an EventLoop.
  void DrainPolled(std::chrono::milliseconds timeout);
  natsConnection* conn_ = nullptr;
  natsSubscription* sub_ = nullptr;
  std::unique_ptr<HandlerBox> box_;
  std::shared_ptr<PolledSub> polled_;  // Set on an EventLoop connection.
};

/// `text` with the credentials of every server URL in it replaced by `***`:
/// "nats://alice:pw@h:4222" -> "nats://***@h:4222", "nats://s3cr3t-token@h" -> "nats://***@h",
/// also in comma-separated server lists, for URLs without a scheme ("alice:pw@h:4222") and
/// when the password itself holds '/', ':' or '@' (everything before the last '@' of a URL
/// goes); a query goes too ("nats://h:4222?token=x" -> "nats://h:4222?***"). Every place a server
/// URL is logged or put into an error message uses this. Pure; any thread.
std::string RedactUrlCredentials(std::string_view text);

/// Connection settings.
struct NatsOptions {
  std::string url = "nats://127.0.0.1:4222";
  /// Client name shown by the server (e.g. "wf-gateway").
  std::string name;
  /// Flush every publish immediately: p50 request-reply 0.13 ms instead of ~1 ms.
  bool send_asap = true;
  std::chrono::milliseconds connect_timeout{2000};
  /// Reconnect forever after the first successful connect, with this wait between attempts.
  std::chrono::milliseconds reconnect_wait{250};
  /// When set, the connection's socket I/O runs on this loop (nats.c's event-loop mode) instead
  /// of nats.c's reader and flusher threads, and every subscription's messages are handed to
  /// their handlers on the loop thread right after they are read (no delivery thread, no
  /// hand-off). Publishes on the loop thread are buffered and written once per iteration, before
  /// the loop sleeps (replies made in one iteration leave in one write); publishes from other
  /// threads are written at once by the publishing thread, as with send_asap. Such subscriptions
  /// are nats.c synchronous ones, which swallow "no responders" status messages: do not use
  /// them as request inboxes that must see those. The loop must be
  /// running while the
  /// connection exists (Connect, Flush, Request and the destructor wait on it, so none of them
  /// may be called on the loop thread) and must outlive the connection and its subscriptions.
  EventLoop* loop = nullptr;
  /// Called (on a nats.c thread) when the connection is lost / restored.
  std::function<void()> on_disconnected;
  std::function<void()> on_reconnected;
};

/// One `natsConnection*`. Publishing is thread-safe and never blocks on the network (nats.c
/// buffers); Connect blocks up to connect_timeout. Keeps reconnecting (with logs) when the server
/// goes away after start.
class NatsConnection {
 public:
  /// Connects once; error kUnavailable "cannot connect to NATS at URL: reason" when unreachable
  /// (the URL without its credentials, see RedactUrlCredentials).
  static Result<std::unique_ptr<NatsConnection>> Connect(NatsOptions options);
  ~NatsConnection();
  NatsConnection(const NatsConnection&) = delete;
  NatsConnection& operator=(const NatsConnection&) = delete;

  /// Publishes `data` on `subject` with an optional reply subject and headers.
  Status Publish(std::string_view subject, std::string_view data, std::string_view reply = {},
                 const NatsHeaders& headers = {});
  /// Subscribes; `queue` non-empty makes it a queue subscription.
  Result<NatsSubscription> Subscribe(const std::string& subject, NatsHandler handler,
                                     const std::string& queue = {});
  /// Blocking request-reply, for start-up code, tools and tests only (never on a callback
  /// thread). kNoWorker when nobody answers in time (or there are no responders).
  Result<std::string> Request(const std::string& subject, std::string_view data,
                              std::chrono::milliseconds timeout, const NatsHeaders& headers = {});
  /// Flushes pending publishes to the server, waiting up to timeout.
  Status Flush(std::chrono::milliseconds timeout);
  /// True while connected (not reconnecting or closed).
  bool Connected() const;
  /// The most bytes one message (data plus headers) may have: the server's max_payload as of
  /// the last (re)connect, 1 MiB (the server's default) if it announced none. Lock-free (no
  /// nats.c lock), any thread.
  std::size_t MaxPayload() const;
  /// A new unique inbox prefix (`_INBOX.<nuid>`).
  static std::string NewInbox();
  natsConnection* raw() const { return conn_; }
  const std::string& url() const { return options_.url; }

 private:
  explicit NatsConnection(NatsOptions options)
      : options_(std::move(options)), redacted_url_(RedactUrlCredentials(options_.url)) {}
  static void OnDisconnected(natsConnection* nc, void* closure);
  static void OnReconnected(natsConnection* nc, void* closure);
  static void OnError(natsConnection* nc, natsSubscription* sub, natsStatus err, void* closure);
  static void OnClosed(natsConnection* nc, void* closure);

  friend class NatsSubscription;
  struct LoopBinding;
  static natsStatus LoopAttach(void** user_data, void* loop, natsConnection* nc, natsSock fd);
  static natsStatus LoopRead(void* user_data, bool add);
  static natsStatus LoopWrite(void* user_data, bool add);
  static natsStatus LoopDetach(void* user_data);

  NatsOptions options_;
  std::string redacted_url_;  // options_.url for logs and errors
  natsConnection* conn_ = nullptr;
  std::shared_ptr<LoopBinding> binding_;  // Set when options_.loop is.
  // Set when the destructor starts: a disconnect then is ours, not news.
  std::atomic<bool> closing_{false};
  // natsConnection_GetMaxPayload, read after each (re)connect (see MaxPayload).
  std::atomic<int64_t> max_payload_{0};
  // The closed callback is nats.c's last call into this object; the destructor waits for it.
  std::mutex closed_mu_;
  std::condition_variable closed_cv_;
  bool closed_ = false;
};

/// Destroys a message, freeing it on the calling thread. natsMsg_Destroy alone hands every
/// message to nats.c's garbage-collector thread and wakes it (a futex call and a context switch
/// per message whenever the collector sleeps, which under load is nearly every time). Use this
/// instead of natsMsg_Destroy everywhere. Falls back to natsMsg_Destroy when the library's
/// message layout is not the one checked for (see connection.cc).
void DestroyNatsMsg(natsMsg* msg);

/// The text of a nats.c status plus its last error detail, for messages.
std::string NatsStatusText(natsStatus status);

/// Unix epoch milliseconds now (deadlines on the wire are absolute).
int64_t UnixMillisNow();

}  // namespace wf
