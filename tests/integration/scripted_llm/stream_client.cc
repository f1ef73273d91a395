#include "stream_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

namespace wf::testing {
namespace {

using Clock = std::chrono::steady_clock;

int RemainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<long long>(0, left));
}

}  // namespace

StreamClient::StreamClient(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

StreamClient::~StreamClient() { Close(); }

void StreamClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool StreamClient::Fill(Clock::time_point deadline) {
  if (fd_ < 0) return false;
  pollfd pfd{fd_, POLLIN, 0};
  for (;;) {
    const int ready = ::poll(&pfd, 1, RemainingMs(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    char buf[8192];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    raw_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
}

bool StreamClient::Write(const std::string& method, const std::string& path,
                         const std::string& body, const std::vector<std::string>& headers) {
  if (fd_ < 0) return false;
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  request +=
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  for (const auto& h : headers) request += h + "\r\n";
  request += "\r\n" + body;
  std::string_view rest = request;
  while (!rest.empty()) {
    const ssize_t n = ::send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool StreamClient::Send(const std::string& method, const std::string& path, const std::string& body,
                        std::vector<std::string> headers, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  // The rest of a previous chunked body (e.g. the terminating chunk after [DONE]) comes first.
  while (chunked_ && !body_done_) {
    DecodeChunks();
    if (!body_done_ && !Fill(deadline)) return false;
  }
  if (!Write(method, path, body, headers)) return false;
  status_ = 0;
  headers_.clear();
  decoded_.clear();
  chunked_ = false;
  body_done_ = false;
  std::size_t end;
  while ((end = raw_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill(deadline)) return false;
  }
  const std::string head = raw_.substr(0, end);
  raw_.erase(0, end + 4);
  const std::size_t line_end = head.find("\r\n");
  const std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12) return false;
  status_ = std::stoi(status_line.substr(9, 3));
  std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    std::size_t next = head.find("\r\n", pos);
    if (next == std::string::npos) next = head.size();
    const std::string line = head.substr(pos, next - pos);
    pos = next + 2;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    headers_[name] = value;
  }
  chunked_ = headers_.count("transfer-encoding") > 0;
  return true;
}

bool StreamClient::DecodeChunks() {
  bool progress = false;
  while (!body_done_) {
    const std::size_t line_end = raw_.find("\r\n");
    if (line_end == std::string::npos) break;
    const std::size_t size = std::stoul(raw_.substr(0, line_end), nullptr, 16);
    if (raw_.size() < line_end + 2 + size + 2) break;
    decoded_ += raw_.substr(line_end + 2, size);
    raw_.erase(0, line_end + 2 + size + 2);
    if (size == 0) body_done_ = true;
    progress = true;
  }
  return progress;
}

std::optional<std::string> StreamClient::NextEvent(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (chunked_) {
      DecodeChunks();
    } else {
      decoded_ += raw_;
      raw_.clear();
    }
    const std::size_t end = decoded_.find("\n\n");
    if (end != std::string::npos) {
      std::string event = decoded_.substr(0, end);
      decoded_.erase(0, end + 2);
      if (event.rfind("data: ", 0) == 0) return event.substr(6);
      continue;  // comments and other fields are skipped
    }
    if (body_done_) return std::nullopt;
    if (!Fill(deadline)) return std::nullopt;
  }
}

std::optional<std::string> StreamClient::ReadBody(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  if (chunked_) {
    for (;;) {
      DecodeChunks();
      if (body_done_) {
        std::string body = std::move(decoded_);
        decoded_.clear();
        return body;
      }
      if (!Fill(deadline)) return std::nullopt;
    }
  }
  const auto it = headers_.find("content-length");
  if (it == headers_.end()) return std::nullopt;
  const std::size_t length = std::stoul(it->second);
  while (raw_.size() < length) {
    if (!Fill(deadline)) return std::nullopt;
  }
  std::string body = raw_.substr(0, length);
  raw_.erase(0, length);
  return body;
}

bool StreamClient::ServerClosed(std::chrono::milliseconds timeout) {
  if (fd_ < 0) return true;
  const auto deadline = Clock::now() + timeout;
  pollfd pfd{fd_, POLLIN, 0};
  for (;;) {
    const int ready = ::poll(&pfd, 1, RemainingMs(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n == 0 || (n < 0 && errno != EINTR)) return true;
  }
}

}  // namespace wf::testing
