#pragma once

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

#include "support/test_support.h"

namespace wf::testing {

/// wf-demo-api on a free port of 127.0.0.1, stopped (SIGTERM, then SIGKILL) on destruction.
class DemoApiServer {
 public:
  DemoApiServer() : port_(FreePort()) {
    process_.emplace(BinPath("wf-demo-api"),
                     std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(port_),
                                              "--threads", "2"});
    bool up = Eventually(
        [&] { return !process_->Running() || WaitForTcpPort(port_, std::chrono::milliseconds(1)); },
        std::chrono::milliseconds(15000));
    if (!up || !process_->Running()) {
      throw std::runtime_error("wf-demo-api did not start: " + process_->Log());
    }
  }

  int port() const { return port_; }
  /// "http://127.0.0.1:PORT" + path.
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  Process& process() { return *process_; }

 private:
  int port_;
  std::optional<Process> process_;
};

}  // namespace wf::testing
