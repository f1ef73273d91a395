#include "support/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string>

#include "support/test_support.h"

namespace wf::testing {

namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

/// Writes all of `data`; false when the peer is gone.
bool WriteAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

TcpProxy::TcpProxy(int target_port) : target_port_(target_port), port_(FreePort()) {
  Listen();
  thread_ = std::thread([this] { Run(); });
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  thread_.join();
  std::lock_guard lock(mu_);
  CloseAll();
}

void TcpProxy::Listen() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const sockaddr_in addr = Loopback(port_);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd, 64) != 0) {
    ::close(fd);
    throw std::runtime_error("TcpProxy: cannot listen on port " + std::to_string(port_));
  }
  std::lock_guard lock(mu_);
  listener_ = fd;
}

void TcpProxy::Cut() {
  std::lock_guard lock(mu_);
  CloseAll();
}

void TcpProxy::Resume() {
  {
    std::lock_guard lock(mu_);
    if (listener_ >= 0) return;
  }
  Listen();
}

void TcpProxy::CloseAll() {
  if (listener_ >= 0) ::close(listener_);
  listener_ = -1;
  for (auto [client, server] : pairs_) {
    ::close(client);
    ::close(server);
  }
  pairs_.clear();
}

void TcpProxy::Run() {
  std::array<char, 65536> buffer;
  while (!stop_) {
    // Poll a copy, under no lock: Cut may close descriptors meanwhile. A poll on a closed (or
    // reused) descriptor only wakes this loop, which then checks the pair is still listed.
    std::vector<pollfd> fds;
    {
      std::lock_guard lock(mu_);
      if (listener_ >= 0) fds.push_back({listener_, POLLIN, 0});
      for (auto [client, server] : pairs_) {
        fds.push_back({client, POLLIN, 0});
        fds.push_back({server, POLLIN, 0});
      }
    }
    if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
    std::lock_guard lock(mu_);
    for (const pollfd& p : fds) {
      if (p.revents == 0) continue;
      if (p.fd == listener_) {
        const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const sockaddr_in addr = Loopback(target_port_);
        if (::connect(server, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
          ::close(client);
          ::close(server);
          continue;
        }
        const int one = 1;
        ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pairs_.emplace_back(client, server);
        continue;
      }
      for (auto it = pairs_.begin(); it != pairs_.end(); ++it) {
        const bool from_client = it->first == p.fd;
        if (!from_client && it->second != p.fd) continue;
        const int to = from_client ? it->second : it->first;
        const ssize_t n = ::recv(p.fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
            (n > 0 && !WriteAll(to, buffer.data(), static_cast<std::size_t>(n)))) {
          ::close(it->first);
          ::close(it->second);
          pairs_.erase(it);
        }
        break;
      }
    }
  }
}

}  // namespace wf::testing
