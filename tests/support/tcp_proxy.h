#pragma once
// A TCP forwarder for tests that must cut one client's connection to a server while the server
// and its other clients stay up (e.g. the gateway's NATS connections, as when its node of a NATS
// cluster fails).

#include <atomic>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace wf::testing {

/// Listens on a free local port and forwards every connection to 127.0.0.1:`target_port`, on
/// one thread. Cut() closes every forwarded connection and stops listening (new connections are
/// refused) until Resume() listens on the same port again.
class TcpProxy {
 public:
  explicit TcpProxy(int target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  /// Returns once every connection is closed and the port refuses new ones.
  void Cut();
  /// Returns once the port accepts connections again.
  void Resume();

 private:
  void Listen();
  void Run();
  /// Closes the listener and every pair; mu_ held.
  void CloseAll();

  const int target_port_;
  int port_ = 0;
  std::mutex mu_;  // the descriptors below; Run polls a copy
  int listener_ = -1;
  std::vector<std::pair<int, int>> pairs_;  // (client side, server side)
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace wf::testing
