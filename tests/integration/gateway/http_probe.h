#pragma once

// Raw-socket HTTP helpers for the gateway tests: full control over what is sent, when the
// connection closes, and what exactly comes back (chunked SSE included).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace wf::testing {

/// One TCP connection to 127.0.0.1:port with a reader thread collecting everything received.
class RawConnection {
 public:
  /// `paused`: do not read until Resume() (the server's writes back up); `rcvbuf` > 0 shrinks
  /// the receive buffer so that happens sooner.
  explicit RawConnection(int port, bool paused = false, int rcvbuf = 0) : paused_(paused) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket");
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect");
    }
    reader_ = std::thread([this] { Read(); });
  }
  ~RawConnection() { Close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  /// Sends all bytes; false when the peer is gone.
  bool Send(const std::string& bytes) {
    std::size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  /// Waits until `pred(received so far)` holds or the timeout passes.
  bool WaitFor(const std::function<bool(const std::string&)>& pred,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(data_); });
  }
  /// Waits until the server closed the connection.
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return eof_; });
  }
  /// Waits until `pred(received so far)` holds or the server closed the connection.
  bool WaitForOrClosed(const std::function<bool(const std::string&)>& pred,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return eof_ || pred(data_); });
  }

  std::string Data() {
    std::lock_guard lock(mu_);
    return data_;
  }

  /// Starts reading (see the constructor's `paused`).
  void Resume() {
    {
      std::lock_guard lock(mu_);
      paused_ = false;
    }
    cv_.notify_all();
  }

  /// The client goes away: closes the socket (idempotent).
  void Close() {
    if (closed_.exchange(true)) return;
    stop_ = true;
    Resume();
    ::shutdown(fd_, SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
    ::close(fd_);
  }

 private:
  void Read() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !paused_; });
    }
    char buf[65536];
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, 50);
      if (r <= 0) continue;
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      std::lock_guard lock(mu_);
      if (n <= 0) {
        eof_ = true;
        cv_.notify_all();
        return;
      }
      data_.append(buf, static_cast<std::size_t>(n));
      cv_.notify_all();
    }
  }

  int fd_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string data_;
  bool eof_ = false;
  bool paused_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> closed_{false};
};

/// A parsed HTTP response (head complete; body possibly partial).
struct ParsedResponse {
  bool head_complete = false;
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;  // raw body bytes after the head (chunked framing included)
  /// Bytes of the whole response once complete (Content-Length, or chunked up to the last
  /// chunk; `body` then ends there too); 0 while incomplete.
  std::size_t consumed = 0;
};

/// `to_head`: the response answers a HEAD request, so it ends with its head whatever its
/// Content-Length says (RFC 9110 9.3.2).
inline ParsedResponse ParseResponse(const std::string& data, bool to_head = false) {
  ParsedResponse r;
  auto end = data.find("\r\n\r\n");
  if (end == std::string::npos || data.size() < 12) return r;
  r.head_complete = true;
  r.status = std::atoi(data.substr(9, 3).c_str());
  std::size_t pos = data.find("\r\n") + 2;
  while (pos < end) {
    auto nl = data.find("\r\n", pos);
    std::string line = data.substr(pos, nl - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      r.headers[name] = value;
    }
    pos = nl + 2;
  }
  r.body = data.substr(end + 4);
  if (to_head) {
    r.body.clear();
    r.consumed = end + 4;
  } else if (r.headers.count("content-length")) {
    std::size_t len = std::stoul(r.headers["content-length"]);
    if (r.body.size() >= len) {
      r.body.resize(len);
      r.consumed = end + 4 + len;
    }
  } else if (r.headers["transfer-encoding"] == "chunked") {
    std::size_t pos = 0;  // walk the chunks (no trailers)
    while (true) {
      auto nl = r.body.find("\r\n", pos);
      if (nl == std::string::npos) break;
      std::size_t n = std::stoul(r.body.substr(pos, nl - pos), nullptr, 16);
      if (r.body.size() < nl + 2 + n + 2) break;
      pos = nl + 2 + n + 2;
      if (n == 0) {
        r.body.resize(pos);
        r.consumed = end + 4 + pos;
        break;
      }
    }
  }
  return r;
}

/// Decodes as much of a chunked body as has arrived; `complete` when the last chunk was seen.
inline std::string Dechunk(const std::string& body, bool* complete) {
  std::string out;
  std::size_t pos = 0;
  *complete = false;
  while (pos < body.size()) {
    auto nl = body.find("\r\n", pos);
    if (nl == std::string::npos) break;
    std::size_t n = std::stoul(body.substr(pos, nl - pos), nullptr, 16);
    if (n == 0) {
      *complete = body.size() >= nl + 4;
      break;
    }
    if (body.size() < nl + 2 + n + 2) break;
    out += body.substr(nl + 2, n);
    pos = nl + 2 + n + 2;
  }
  return out;
}

/// One Server-Sent Event (or comment).
struct SseEvent {
  std::string name;  // empty for a comment
  std::string data;
  std::string comment;  // text after ':' for comments
};

inline std::vector<SseEvent> ParseSse(const std::string& text) {
  std::vector<SseEvent> events;
  std::size_t pos = 0;
  while (true) {
    auto end = text.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string block = text.substr(pos, end - pos);
    SseEvent e;
    std::size_t lp = 0;
    while (lp <= block.size()) {
      auto nl = block.find('\n', lp);
      std::string line = block.substr(lp, nl == std::string::npos ? std::string::npos : nl - lp);
      if (line.rfind("event: ", 0) == 0)
        e.name = line.substr(7);
      else if (line.rfind("data: ", 0) == 0)
        e.data = line.substr(6);
      else if (line.rfind(":", 0) == 0)
        e.comment = line.substr(1);
      if (nl == std::string::npos) break;
      lp = nl + 1;
    }
    events.push_back(e);
    pos = end + 2;
  }
  return events;
}

/// An HTTP/1.1 request text.
inline std::string RequestText(const std::string& method, const std::string& path,
                               const std::string& body = "",
                               const std::vector<std::string>& headers = {}) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& h : headers) r += h + "\r\n";
  if (!body.empty() || method == "POST") {
    r +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  r += "\r\n" + body;
  return r;
}

/// A streaming POST /api/v1/query/stream on its own connection.
class SseStream {
 public:
  SseStream(int port, const std::string& body, const std::vector<std::string>& headers = {},
            bool paused = false, int rcvbuf = 0)
      : conn_(port, paused, rcvbuf) {
    conn_.Send(RequestText("POST", "/api/v1/query/stream", body, headers));
  }
  /// Waits until the decoded events satisfy `pred`.
  bool WaitEvents(const std::function<bool(const std::vector<SseEvent>&)>& pred,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    return conn_.WaitFor(
        [&](const std::string& data) {
          auto r = ParseResponse(data);
          if (!r.head_complete) return false;
          bool complete = false;
          return pred(ParseSse(Dechunk(r.body, &complete)));
        },
        timeout);
  }
  /// Waits for the last chunk. (Checks only the tail: SSE chunks end in "\n\n\r\n", so only
  /// the terminating chunk ends in "0\r\n\r\n".)
  bool WaitComplete(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    return conn_.WaitFor(
        [&](const std::string& data) {
          return data.size() >= 5 && data.compare(data.size() - 5, 5, "0\r\n\r\n") == 0 &&
                 data.find("\r\n\r\n") != data.size() - 4;
        },
        timeout);
  }
  ParsedResponse Response() { return ParseResponse(conn_.Data()); }
  std::vector<SseEvent> Events() {
    bool complete = false;
    return ParseSse(Dechunk(Response().body, &complete));
  }
  bool Complete() {
    bool complete = false;
    Dechunk(Response().body, &complete);
    return complete;
  }
  RawConnection& connection() { return conn_; }

 private:
  RawConnection conn_;
};

inline bool HasEvent(const std::vector<SseEvent>& events, const std::string& name,
                     const std::string& data_part = "") {
  for (const auto& e : events) {
    if (e.name == name && e.data.find(data_part) != std::string::npos) return true;
  }
  return false;
}

inline bool HasHeartbeat(const std::vector<SseEvent>& events) {
  for (const auto& e : events) {
    if (e.name.empty() && e.comment == " heartbeat") return true;
  }
  return false;
}

}  // namespace wf::testing
