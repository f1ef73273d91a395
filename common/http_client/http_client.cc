#include "http_client/http_client.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <future>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "http_client/curl_handles.h"
#include "http_client/transfer_outcome.h"
#include "io/event_loop.h"
#include "text/ascii.h"

namespace wf {
namespace {

using http_client_internal::EasyHandle;
using http_client_internal::HeaderList;
using http_client_internal::MultiHandle;

constexpr std::chrono::milliseconds kMaxConnectTimeout{3000};
/// Most idle easy handles kept for reuse.
constexpr std::size_t kMaxPooledEasyHandles = 1024;

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw std::runtime_error("curl_global_init failed");
    }
  });
}

/// Why the write callback stopped a transfer (CURLE_WRITE_ERROR alone does not say).
enum class StopReason {
  kNone,
  kTooLarge,             ///< Body over its limit.
  kDataCallbackStopped,  ///< The streaming data callback returned false.
  kCallbackThrew,        ///< The data callback or a body append threw.
  kErrorBodyFull,        ///< Streaming, non-2xx: error body kept up to its limit, rest dropped.
  kBadResponse,          ///< A response header makes the body unreadable (callback_error says).
};

/// One request from Send to completion. Owned by the command queue, then by the loop thread.
struct Transfer {
  HttpRequestId id = 0;
  HttpRequest request;
  HttpDataCallback on_data;
  HttpCallback on_done;
  bool streaming = false;
  EasyHandle easy;
  HeaderList headers;
  long status = 0;  ///< Streaming: the status the write callback saw (0 until the first body byte).
  std::string body;
  std::size_t streamed = 0;
  StopReason stop = StopReason::kNone;
  std::string callback_error;
  /// The current response's Content-Length and Content-Encoding checks (CheckResponseHeader).
  http_client_internal::ResponseHeaderCheck header_check;
  /// Set by the pre-request check: the kept-alive connection libcurl picked holds bytes nobody
  /// asked for, so the transfer was stopped before sending and runs again on a new connection.
  bool stale_connection = false;
  bool fresh_retry = false;  ///< Already running again on a new connection (once at most).
  void* owner = nullptr;     ///< The HttpClient::Impl running it (for OnPrereq).
  char error_buffer[CURL_ERROR_SIZE] = {};
};

/// A queued instruction for the loop thread: start `transfer`, or cancel `cancel_id`.
struct Command {
  HttpRequestId cancel_id = 0;
  std::unique_ptr<Transfer> transfer;
};

void RecordThrow(Transfer& t, const char* what) noexcept {
  t.stop = StopReason::kCallbackThrew;
  try {
    t.callback_error = what;
  } catch (...) {
    t.callback_error.clear();
  }
}

/// CURLOPT_WRITEFUNCTION: accumulates or streams body bytes, enforcing the size limits (the
/// Content-Length check of CURLOPT_MAXFILESIZE_LARGE cannot see chunked bodies). Returning less
/// than `len` makes libcurl fail the transfer with CURLE_WRITE_ERROR. Never throws.
size_t OnBody(char* data, size_t size, size_t count, void* user) noexcept {
  auto& t = *static_cast<Transfer*>(user);
  const size_t len = size * count;
  try {
    if (!t.streaming) {
      if (len > t.request.max_response_bytes - t.body.size()) {
        t.stop = StopReason::kTooLarge;
        return 0;
      }
      t.body.append(data, len);
      return len;
    }
    if (t.status == 0) {
      long code = 0;
      curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &code);
      t.status = code;
    }
    if (http_client_internal::IsSuccessStatus(t.status)) {
      if (len > t.request.max_streamed_bytes - t.streamed) {
        t.stop = StopReason::kTooLarge;
        return 0;
      }
      t.streamed += len;
      if (t.on_data && !t.on_data(std::string_view(data, len))) {
        t.stop = StopReason::kDataCallbackStopped;
        return 0;
      }
      return len;
    }
    const size_t room = t.request.max_response_bytes - t.body.size();
    if (len > room) {
      t.body.append(data, room);
      t.stop = StopReason::kErrorBodyFull;
      return 0;
    }
    t.body.append(data, len);
    return len;
  } catch (const std::exception& e) {
    RecordThrow(t, e.what());
  } catch (...) {
    RecordThrow(t, "unknown exception");
  }
  return 0;
}

/// CURLOPT_HEADERFUNCTION: refuses a response whose headers make its body unreadable (two
/// different Content-Lengths, an encoding that was not asked for). Returning less than `len`
/// makes libcurl fail the transfer, and close its connection, before any body byte is passed on.
size_t OnHeader(char* data, size_t size, size_t count, void* user) noexcept {
  auto& t = *static_cast<Transfer*>(user);
  const size_t len = size * count;
  try {
    std::string problem = t.header_check.Check(std::string_view(data, len));
    if (problem.empty()) return len;
    t.stop = StopReason::kBadResponse;
    t.callback_error = std::move(problem);
  } catch (const std::exception& e) {
    RecordThrow(t, e.what());
  } catch (...) {
    RecordThrow(t, "unknown exception");
  }
  return 0;
}

void InvokeDone(HttpCallback& on_done, Result<HttpResponse> result) noexcept {
  if (!on_done) return;
  try {
    on_done(std::move(result));
  } catch (const std::exception& e) {
    spdlog::error("http client: completion callback threw: {}", e.what());
  } catch (...) {
    spdlog::error("http client: completion callback threw a non-std exception");
  }
}

}  // namespace

class HttpClient::Impl {
 public:
  explicit Impl(Options options)
      : options_(std::move(options)),
        proxy_from_env_(http_client_internal::ProxyFromEnvironment(
            [](const char* name) -> const char* { return std::getenv(name); })) {
    InitCurlOnce();
    multi_.reset(curl_multi_init());
    if (!multi_) throw std::runtime_error("curl_multi_init failed");
    CURLM* m = multi_.get();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS,
                      std::max(1L, options_.max_connections_per_host));
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      std::max(1L, options_.max_total_connections));
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, std::max(1L, options_.max_total_connections));
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &Impl::OnCurlSocket);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, static_cast<void*>(this));
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &Impl::OnCurlTimer);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, static_cast<void*>(this));
    inbox_->owner = this;
    if (options_.loop != nullptr) {
      loop_ = options_.loop;
    } else {
      owned_loop_ = std::make_unique<EventLoopThread>("wf-http-io");
      loop_ = &owned_loop_->loop();
    }
  }

  ~Impl() {
    if (owned_loop_) {
      // Tasks posted before Stop still run: Shutdown is the last one touching this client.
      loop_->Post([this] { Shutdown(); });
      owned_loop_->Join();
    } else if (loop_->InLoopThread()) {
      Shutdown();
    } else {
      loop_->RunAndWait([this] { Shutdown(); });
    }
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  HttpRequestId Enqueue(HttpRequest request, HttpDataCallback on_data, HttpCallback on_done,
                        bool streaming) {
    const HttpRequestId id = next_id_.fetch_add(1, std::memory_order_relaxed);
    auto transfer = std::make_unique<Transfer>();
    transfer->id = id;
    transfer->request = std::move(request);
    transfer->on_data = std::move(on_data);
    transfer->on_done = std::move(on_done);
    transfer->streaming = streaming;
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    Command command{0, std::move(transfer)};
    if (!Push(command)) {  // During destruction only.
      in_flight_.fetch_sub(1, std::memory_order_relaxed);
      InvokeDone(command.transfer->on_done, Error{ErrorCode::kUnavailable, "client shutting down"});
    }
    return id;
  }

  void Cancel(HttpRequestId id) {
    Command command{id, nullptr};
    Push(command);
  }

  std::size_t InFlight() const { return in_flight_.load(std::memory_order_relaxed); }
  std::uint64_t ConnectionsOpened() const {
    return connections_opened_.load(std::memory_order_relaxed);
  }

 private:
  /// Commands handed to the loop thread. Shared with the tasks posted to the loop, so a task that
  /// runs after the client is gone (destroyed on the loop thread) finds `closed` and does nothing.
  struct Inbox {
    std::mutex mutex;
    std::vector<Command> commands;  // Guarded by mutex.
    bool closed = false;            // Guarded by mutex; set on the loop thread by Shutdown.
    Impl* owner = nullptr;          // Dereferenced on the loop thread only, while !closed.

    /// Loop thread: runs every queued command.
    void Drain() {
      std::vector<Command> batch;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (closed) return;
        batch.swap(commands);
      }
      for (Command& command : batch) owner->Execute(command);
    }
  };

  /// Queues `command` and, when the queue was empty, posts a task that drains it (a task is
  /// pending whenever the queue is not). Even on the loop thread, nothing starts inside Send.
  /// False, with `command` untouched, once the client is shutting down.
  bool Push(Command& command) {
    {
      std::lock_guard<std::mutex> lock(inbox_->mutex);
      if (inbox_->closed) return false;
      const bool post = inbox_->commands.empty();
      inbox_->commands.push_back(std::move(command));
      if (!post) return true;
    }
    loop_->Post([inbox = inbox_] { inbox->Drain(); });
    return true;
  }

  /// Loop thread: starts or cancels.
  void Execute(Command& command) noexcept {
    try {
      if (command.transfer) {
        Start(std::move(command.transfer));
      } else {
        CancelTransfer(command.cancel_id);
      }
    } catch (const std::exception& e) {
      spdlog::error("http client: starting or cancelling a request failed: {}", e.what());
    }
  }

  /// Loop thread, exactly once: completes everything pending with kUnavailable, closes every
  /// connection and leaves no watcher, timer or task of this client behind.
  void Shutdown() {
    const Error down{ErrorCode::kUnavailable, "client shutting down"};
    std::vector<Command> queued;
    {
      std::lock_guard<std::mutex> lock(inbox_->mutex);
      inbox_->closed = true;  // From here on Send completes at once, Cancel is a no-op.
      queued.swap(inbox_->commands);
    }
    for (Command& command : queued) {
      if (command.transfer) Finish(std::move(command.transfer), down);
    }
    auto active = std::move(active_);
    active_.clear();
    for (auto& [id, transfer] : active) {
      curl_multi_remove_handle(multi_.get(), transfer->easy.get());
      Finish(std::move(transfer), down);
    }
    idle_easy_.clear();
    // Closes the cached connections; libcurl reports each socket's removal to OnCurlSocket.
    multi_.reset();
    for (const auto& [fd, socket] : watched_) loop_->Unwatch(fd);
    watched_.clear();
    if (timer_ != 0) loop_->CancelTimer(timer_);
    timer_ = 0;
  }

  /// CURLMOPT_SOCKETFUNCTION: mirrors what libcurl wants to know about `fd` into the loop.
  ///
  /// A kept-alive connection goes REMOVE at the end of each transfer and IN at the start of the
  /// next (libcurl sends the request at once, then waits to read). Mirrored literally that is an
  /// EPOLL_CTL_DEL and an EPOLL_CTL_ADD per request; instead a removed socket stays registered,
  /// "parked": the next interest in it costs nothing when it is the same, one MOD otherwise. A
  /// parked socket that reports anything (the server closed the idle connection, or sent bytes
  /// nobody asked for) is unregistered then, so it cannot keep the loop awake. Sockets leave the
  /// table when libcurl closes them (OnCurlCloseSocket), so a new socket that gets the number of
  /// a closed one is registered afresh.
  static int OnCurlSocket(CURL*, curl_socket_t fd, int what, void* user, void*) noexcept {
    auto& self = *static_cast<Impl*>(user);
    try {
      self.UpdateWatch(fd, what);
    } catch (const std::exception& e) {
      spdlog::error("http client: watching socket {} failed: {}", fd, e.what());
    }
    return 0;
  }

  /// CURLOPT_CLOSESOCKETFUNCTION: libcurl closes one of its sockets (on the loop thread, from a
  /// curl_multi_* call or the multi handle's cleanup).
  static int OnCurlCloseSocket(void* user, curl_socket_t fd) noexcept {
    auto& self = *static_cast<Impl*>(user);
    if (auto it = self.watched_.find(fd); it != self.watched_.end()) {
      self.loop_->Unwatch(fd);
      self.watched_.erase(it);
    }
    self.ForgetIdle(fd);
    return ::close(fd);
  }

  /// CURLOPT_PREREQFUNCTION: libcurl has a connection for the transfer and is about to send the
  /// request. On a kept-alive connection (no connect in this transfer) that already holds unread
  /// bytes, those bytes are not an answer to this request: a server that wrote past its response
  /// (a Content-Length counting characters, not bytes) or wrote again later. libcurl 7.88 reuses
  /// such a connection and would read them as this request's response (one request's answer
  /// given to the next, off by one from then on). Stop the transfer before anything is sent;
  /// libcurl closes that connection and Reap starts the transfer again on a new one.
  static int OnPrereq(void* user, char* primary_ip, char* /*local_ip*/, int primary_port,
                      int local_port) noexcept {
    auto& t = *static_cast<Transfer*>(user);
    long connects = 0;
    if (curl_easy_getinfo(t.easy.get(), CURLINFO_NUM_CONNECTS, &connects) != CURLE_OK ||
        connects != 0 || t.owner == nullptr || primary_ip == nullptr) {
      return CURL_PREREQFUNC_OK;  // a connection opened for this transfer
    }
    const int fd =
        static_cast<const Impl*>(t.owner)->IdleSocket(primary_ip, primary_port, local_port);
    if (fd < 0) return CURL_PREREQFUNC_OK;
    char byte = 0;
    const ssize_t pending = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (pending <= 0) return CURL_PREREQFUNC_OK;  // nothing unread (EOF is libcurl's to see)
    t.stale_connection = true;
    return CURL_PREREQFUNC_ABORT;
  }

  /// The socket of the kept-alive connection from this client to primary_ip:primary_port on
  /// local port `local_port`, or -1.
  int IdleSocket(std::string_view primary_ip, int primary_port, int local_port) const {
    auto [begin, end] = idle_by_ports_.equal_range(PortsKey(primary_port, local_port));
    for (auto it = begin; it != end; ++it) {
      auto conn = idle_.find(it->second);
      if (conn != idle_.end() && conn->second.primary_ip == primary_ip) return it->second;
    }
    return -1;
  }

  /// Notes the socket a finished transfer leaves in libcurl's cache, for OnPrereq to find when
  /// the connection is picked again.
  void RememberIdle(CURL* easy) {
    curl_socket_t fd = CURL_SOCKET_BAD;
    char* ip = nullptr;
    long primary_port = 0;
    long local_port = 0;
    if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK || fd == CURL_SOCKET_BAD ||
        curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK || ip == nullptr ||
        curl_easy_getinfo(easy, CURLINFO_PRIMARY_PORT, &primary_port) != CURLE_OK ||
        curl_easy_getinfo(easy, CURLINFO_LOCAL_PORT, &local_port) != CURLE_OK) {
      return;  // closed at the end of the transfer, or nothing to tell it by
    }
    auto [it, inserted] = idle_.try_emplace(fd);
    const auto key = PortsKey(static_cast<int>(primary_port), static_cast<int>(local_port));
    if (!inserted && it->second.key == key && it->second.primary_ip == ip) return;
    if (!inserted) ForgetIdle(fd);  // the number of a closed socket: forget the old entry
    IdleConnection& conn = idle_[fd];
    conn.primary_ip = ip;
    conn.key = key;
    idle_by_ports_.emplace(key, fd);
  }

  void ForgetIdle(int fd) {
    auto it = idle_.find(fd);
    if (it == idle_.end()) return;
    auto [begin, end] = idle_by_ports_.equal_range(it->second.key);
    for (auto p = begin; p != end; ++p) {
      if (p->second == fd) {
        idle_by_ports_.erase(p);
        break;
      }
    }
    idle_.erase(it);
  }

  static std::uint32_t PortsKey(int primary_port, int local_port) {
    return (static_cast<std::uint32_t>(primary_port & 0xffff) << 16) |
           static_cast<std::uint32_t>(local_port & 0xffff);
  }

  void UpdateWatch(int fd, int what) {
    auto it = watched_.find(fd);
    if (what == CURL_POLL_REMOVE) {
      if (it != watched_.end()) it->second.parked = true;
      return;
    }
    uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= kIoRead;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= kIoWrite;
    if (it != watched_.end()) {
      it->second.parked = false;
      if (it->second.events == events) return;
      if (loop_->Modify(fd, events).ok()) {
        it->second.events = events;
        return;
      }
      // Modify failed (the registration is gone): register afresh.
      loop_->Unwatch(fd);
      watched_.erase(it);
    }
    Status watched =
        loop_->Watch(fd, events, [this, fd](uint32_t ready) { OnSocketReady(fd, ready); });
    if (!watched.ok()) {
      // The transfer then ends at its timeout.
      spdlog::error("http client: cannot watch socket {}: {}", fd, watched.error().message);
      return;
    }
    watched_.emplace(fd, WatchedSocket{events, false});
  }

  /// CURLMOPT_TIMERFUNCTION: (re)arms the client's one loop timer; -1 disarms it. libcurl is
  /// never re-entered from here: the timer runs in a later loop step (0 ms: this iteration's).
  static int OnCurlTimer(CURLM*, long timeout_ms, void* user) noexcept {
    auto& self = *static_cast<Impl*>(user);
    try {
      if (self.timer_ != 0) self.loop_->CancelTimer(self.timer_);
      self.timer_ = 0;
      if (timeout_ms >= 0) {
        self.timer_ = self.loop_->AddTimer(std::chrono::milliseconds(timeout_ms), [&self] {
          self.timer_ = 0;
          self.Drive(CURL_SOCKET_TIMEOUT, 0);
        });
      }
    } catch (const std::exception& e) {
      spdlog::error("http client: arming the libcurl timer failed: {}", e.what());
      return -1;
    }
    return 0;
  }

  void OnSocketReady(int fd, uint32_t ready) {
    if (auto it = watched_.find(fd); it != watched_.end() && it->second.parked) {
      // libcurl does not wait on this socket: stop watching it until it does again.
      loop_->Unwatch(fd);
      watched_.erase(it);
      return;
    }
    int flags = 0;
    if (ready & (kIoRead | kIoHangup)) flags |= CURL_CSELECT_IN;  // Hang-up: let curl read EOF.
    if (ready & kIoWrite) flags |= CURL_CSELECT_OUT;
    if (ready & kIoError) flags |= CURL_CSELECT_ERR;
    Drive(fd, flags);
  }

  /// Lets libcurl act on `fd` (or on its timeouts), then hands out the completions.
  void Drive(curl_socket_t fd, int flags) {
    int running = 0;
    if (CURLMcode mc = curl_multi_socket_action(multi_.get(), fd, flags, &running);
        mc != CURLM_OK) {
      spdlog::error("http client: curl_multi_socket_action: {}", curl_multi_strerror(mc));
    }
    try {
      Reap();
    } catch (const std::exception& e) {
      spdlog::error("http client: completing a request failed: {}", e.what());
    }
  }

  void Start(std::unique_ptr<Transfer> transfer) {
    transfer->easy = AcquireEasy();
    if (!transfer->easy) {
      Finish(std::move(transfer), Error{ErrorCode::kInternal, "curl_easy_init failed"});
      return;
    }
    if (Status configured = Configure(*transfer); !configured.ok()) {
      Finish(std::move(transfer), configured.error());
      return;
    }
    transfer->owner = static_cast<void*>(this);
    CURL* easy = transfer->easy.get();
    const HttpRequestId id = transfer->id;
    auto [it, inserted] = active_.emplace(id, std::move(transfer));
    // Arms the timer at 0 ms: libcurl starts the transfer when it fires, later in this iteration.
    if (CURLMcode mc = curl_multi_add_handle(multi_.get(), easy); mc != CURLM_OK) {
      auto failed = std::move(it->second);
      active_.erase(it);
      Finish(std::move(failed), Error{ErrorCode::kInternal, std::string("curl_multi_add_handle: ") +
                                                                curl_multi_strerror(mc)});
    }
  }

  /// Sets every option of the transfer's (freshly reset) easy handle.
  Status Configure(Transfer& t) {
    const HttpRequest& rq = t.request;
    if (!http_client_internal::IsHttpToken(rq.method)) {
      return Status(ErrorCode::kBadRequest, "HTTP method is not a token");
    }
    if (rq.timeout.count() <= 0) {
      return Status(ErrorCode::kBadRequest, "HTTP timeout must be positive");
    }
    bool has_connection = false;
    bool has_expect = false;
    std::string line;
    for (const auto& [name, value] : rq.headers) {
      if (!http_client_internal::IsHttpToken(name)) {
        return Status(ErrorCode::kBadRequest, "HTTP header name is not a token");
      }
      if (!http_client_internal::IsSafeHeaderValue(value)) {
        return Status(ErrorCode::kBadRequest, "HTTP header " + name + " contains CR, LF or NUL");
      }
      has_connection = has_connection || EqualsIgnoreCase(name, "connection");
      has_expect = has_expect || EqualsIgnoreCase(name, "expect");
      line.assign(name);
      if (value.empty()) {
        line += ';';  // libcurl's way to send an empty header ("Name:" would remove it).
      } else {
        line += ": ";
        line += value;
      }
      if (!AppendHeader(t.headers, line.c_str()))
        return Status(ErrorCode::kInternal, "out of memory");
    }
    if (!has_expect && !AppendHeader(t.headers, "Expect:")) {
      return Status(ErrorCode::kInternal, "out of memory");
    }
    if (!has_connection && !AppendHeader(t.headers, "Connection: keep-alive")) {
      return Status(ErrorCode::kInternal, "out of memory");
    }

    CURL* e = t.easy.get();
    if (curl_easy_setopt(e, CURLOPT_URL, rq.url.c_str()) != CURLE_OK) {
      return Status(ErrorCode::kBadRequest, "malformed URL");
    }
    const auto timeout_ms = static_cast<long>(
        std::min<std::int64_t>(rq.timeout.count(), std::numeric_limits<long>::max()));
    const auto connect_ms = std::min<long>(timeout_ms, kMaxConnectTimeout.count());
    const std::size_t limit = t.streaming ? rq.max_streamed_bytes : rq.max_response_bytes;
    const auto max_file = static_cast<curl_off_t>(
        std::min<std::uint64_t>(limit, std::numeric_limits<curl_off_t>::max()));

    CURLcode rc = CURLE_OK;
    auto set = [&](CURLoption option, auto value) {
      if (rc == CURLE_OK) rc = curl_easy_setopt(e, option, value);
    };
    set(CURLOPT_PROTOCOLS_STR, "http,https");
    if (!proxy_from_env_) {
      // No proxy in the environment (read at start): say so, or libcurl reads five environment
      // variables again for every request (1 % of the lightweight worker's instructions).
      set(CURLOPT_PROXY, "");
      set(CURLOPT_NOPROXY, "");
    }
    // Send the path exactly as given: libcurl would otherwise resolve "/./" and "/../" segments,
    // so a substituted ".." could move a request to another endpoint of the upstream.
    set(CURLOPT_PATH_AS_IS, 1L);
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_CLOSESOCKETFUNCTION, &OnCurlCloseSocket);
    set(CURLOPT_CLOSESOCKETDATA, static_cast<void*>(this));
    set(CURLOPT_TCP_NODELAY, 1L);
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    set(CURLOPT_TIMEOUT_MS, timeout_ms);
    set(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    set(CURLOPT_USERAGENT, options_.user_agent.c_str());
    set(CURLOPT_HTTPHEADER, t.headers.get());
    set(CURLOPT_WRITEFUNCTION, &OnBody);
    set(CURLOPT_WRITEDATA, static_cast<void*>(&t));
    set(CURLOPT_HEADERFUNCTION, &OnHeader);
    set(CURLOPT_HEADERDATA, static_cast<void*>(&t));
    set(CURLOPT_PREREQFUNCTION, &Impl::OnPrereq);
    set(CURLOPT_PREREQDATA, static_cast<void*>(&t));
    set(CURLOPT_PRIVATE, static_cast<void*>(&t));
    set(CURLOPT_ERRORBUFFER, t.error_buffer);
    set(CURLOPT_MAXFILESIZE_LARGE, max_file);
    const bool sends_body =
        !rq.body.empty() || rq.method == "POST" || rq.method == "PUT" || rq.method == "PATCH";
    t.header_check = http_client_internal::ResponseHeaderCheck(rq.method == "HEAD");
    if (rq.method == "HEAD") {
      set(CURLOPT_NOBODY, 1L);
    } else if (!sends_body) {
      set(CURLOPT_HTTPGET, 1L);
      if (rq.method != "GET") set(CURLOPT_CUSTOMREQUEST, rq.method.c_str());
    } else {
      set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(rq.body.size()));
      set(CURLOPT_POSTFIELDS, rq.body.data());
      if (rq.method != "POST") set(CURLOPT_CUSTOMREQUEST, rq.method.c_str());
    }
    if (rc != CURLE_OK) {
      return Status(ErrorCode::kInternal,
                    std::string("curl_easy_setopt: ") + curl_easy_strerror(rc));
    }
    return Status::Ok();
  }

  static bool AppendHeader(HeaderList& list, const char* line) {
    curl_slist* head = curl_slist_append(list.get(), line);
    if (head == nullptr) return false;  // The old list is untouched.
    (void)list.release();
    list.reset(head);
    return true;
  }

  void CancelTransfer(HttpRequestId id) {
    auto it = active_.find(id);
    if (it == active_.end()) return;
    auto transfer = std::move(it->second);
    active_.erase(it);
    // Removing a transfer mid-way makes libcurl close its connection rather than reuse it.
    curl_multi_remove_handle(multi_.get(), transfer->easy.get());
    Finish(std::move(transfer), Error{ErrorCode::kCancelled, "request cancelled"});
  }

  /// Completes every transfer libcurl reports done.
  void Reap() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_.get(), &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      const CURLcode rc = msg->data.result;
      char* raw = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, &raw);
      if (rc == CURLE_OK) RememberIdle(easy);
      curl_multi_remove_handle(multi_.get(), easy);
      auto* owner = reinterpret_cast<Transfer*>(raw);
      auto it = owner != nullptr ? active_.find(owner->id) : active_.end();
      if (it == active_.end()) {
        spdlog::error("http client: libcurl reported an unknown transfer");
        continue;
      }
      if (rc == CURLE_ABORTED_BY_CALLBACK && it->second->stale_connection &&
          !it->second->fresh_retry && RetryOnNewConnection(*it->second)) {
        continue;
      }
      auto transfer = std::move(it->second);
      active_.erase(it);
      Result<HttpResponse> result = Outcome(*transfer, rc);
      Finish(std::move(transfer), std::move(result));
    }
  }

  /// OnPrereq stopped `t` before its request was sent: runs it again, on a new connection.
  /// False (the transfer then fails) when libcurl refuses it back.
  bool RetryOnNewConnection(Transfer& t) {
    spdlog::warn(
        "http client: a kept-alive connection to {} held bytes nobody asked for; closed, and the "
        "request sent on a new connection",
        http_client_internal::HostForMessage(t.request.url));
    t.stale_connection = false;
    t.fresh_retry = true;
    return curl_easy_setopt(t.easy.get(), CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK &&
           curl_multi_add_handle(multi_.get(), t.easy.get()) == CURLM_OK;
  }

  /// What a finished transfer means for its caller.
  static Result<HttpResponse> Outcome(Transfer& t, CURLcode rc) {
    const HttpRequest& rq = t.request;
    const std::size_t limit = t.streaming ? rq.max_streamed_bytes : rq.max_response_bytes;
    switch (t.stop) {
      case StopReason::kTooLarge:
        return http_client_internal::ResponseTooLarge(http_client_internal::HostForMessage(rq.url),
                                                      limit);
      case StopReason::kDataCallbackStopped:
        return Error{ErrorCode::kCancelled, "stream stopped by its data callback"};
      case StopReason::kCallbackThrew:
        return Error{ErrorCode::kInternal, "reading the response of " +
                                               http_client_internal::HostForMessage(rq.url) +
                                               " threw: " + t.callback_error};
      case StopReason::kErrorBodyFull:
        rc = CURLE_OK;
        break;
      case StopReason::kBadResponse:
        return Error{ErrorCode::kUpstreamError,
                     http_client_internal::HostForMessage(rq.url) + ": " + t.callback_error};
      case StopReason::kNone:
        break;
    }
    if (rc == CURLE_FILESIZE_EXCEEDED) {
      return http_client_internal::ResponseTooLarge(http_client_internal::HostForMessage(rq.url),
                                                    limit);
    }
    if (rc != CURLE_OK) {
      // Bytes of the request on the wire: what failed after that is the server's answer.
      long request_bytes = 0;
      curl_easy_getinfo(t.easy.get(), CURLINFO_REQUEST_SIZE, &request_bytes);
      return http_client_internal::ErrorForCurlCode(rc,
                                                    http_client_internal::HostForMessage(rq.url),
                                                    t.error_buffer, rq.timeout, request_bytes > 0);
    }
    HttpResponse response;
    CURL* e = t.easy.get();
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    response.status = static_cast<int>(status);
    char* content_type = nullptr;
    if (curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &content_type) == CURLE_OK && content_type) {
      response.content_type = content_type;
    }
    curl_header* retry_after = nullptr;
    if (curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &retry_after) == CURLHE_OK &&
        retry_after != nullptr && retry_after->value != nullptr) {
      response.retry_after = retry_after->value;
    }
    response.body = std::move(t.body);
    return response;
  }

  /// Returns the easy handle to the pool, frees the transfer, then runs its callback (so the
  /// callback may Send/Cancel freely).
  void Finish(std::unique_ptr<Transfer> transfer, Result<HttpResponse> result) {
    HttpCallback on_done = std::move(transfer->on_done);
    long connects = 0;
    if (transfer->easy &&
        curl_easy_getinfo(transfer->easy.get(), CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK &&
        connects > 0) {
      connections_opened_.fetch_add(static_cast<std::uint64_t>(connects),
                                    std::memory_order_relaxed);
    }
    ReleaseEasy(std::move(transfer->easy));
    transfer.reset();
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    InvokeDone(on_done, std::move(result));
  }

  EasyHandle AcquireEasy() {
    if (!idle_easy_.empty()) {
      EasyHandle easy = std::move(idle_easy_.back());
      idle_easy_.pop_back();
      return easy;
    }
    return EasyHandle(curl_easy_init());
  }

  void ReleaseEasy(EasyHandle easy) {
    if (!easy) return;
    // Forget every option (and the pointers into the finished transfer); connections live in
    // the multi handle's cache, not in the easy handle.
    curl_easy_reset(easy.get());
    if (idle_easy_.size() < kMaxPooledEasyHandles) idle_easy_.push_back(std::move(easy));
  }

  const Options options_;
  /// Whether the environment names a proxy for http(s) (then libcurl's own environment handling
  /// decides per request, no_proxy included).
  const bool proxy_from_env_;
  MultiHandle multi_;  // Declared first: destroyed after every easy handle.

  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  std::atomic<HttpRequestId> next_id_{1};
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<std::uint64_t> connections_opened_{0};

  // Loop thread only.
  std::unordered_map<HttpRequestId, std::unique_ptr<Transfer>> active_;
  std::vector<EasyHandle> idle_easy_;
  struct WatchedSocket {
    uint32_t events;  // As registered in the loop.
    bool parked;      // libcurl has removed it; still registered (see OnCurlSocket).
  };
  std::unordered_map<int, WatchedSocket> watched_;  // libcurl's sockets registered in the loop.
  /// Sockets of kept-alive connections (RememberIdle), by descriptor and by their ports.
  struct IdleConnection {
    std::string primary_ip;
    std::uint32_t key = 0;  // PortsKey
  };
  std::unordered_map<int, IdleConnection> idle_;
  std::unordered_multimap<std::uint32_t, int> idle_by_ports_;
  EventLoop::TimerId timer_ = 0;                    // The libcurl timer, 0 when disarmed.

  EventLoop* loop_ = nullptr;
  std::unique_ptr<EventLoopThread> owned_loop_;  // Only without Options::loop.
};

HttpClient::HttpClient(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpClient::~HttpClient() = default;

HttpRequestId HttpClient::Send(HttpRequest request, HttpCallback on_done) {
  return impl_->Enqueue(std::move(request), nullptr, std::move(on_done), false);
}

HttpRequestId HttpClient::SendStreaming(HttpRequest request, HttpDataCallback on_data,
                                        HttpCallback on_done) {
  return impl_->Enqueue(std::move(request), std::move(on_data), std::move(on_done), true);
}

void HttpClient::Cancel(HttpRequestId id) { impl_->Cancel(id); }

std::size_t HttpClient::InFlight() const { return impl_->InFlight(); }

std::uint64_t HttpClient::ConnectionsOpened() const { return impl_->ConnectionsOpened(); }

Result<HttpResponse> HttpCallBlocking(HttpClient& client, HttpRequest request) {
  auto promise = std::make_shared<std::promise<Result<HttpResponse>>>();
  auto future = promise->get_future();
  client.Send(std::move(request),
              [promise](Result<HttpResponse> result) { promise->set_value(std::move(result)); });
  return future.get();
}

}  // namespace wf
