#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "http_client/http_client.h"
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

/// A test suite sharing one DemoApiServer (started once per suite), with the request and
/// server-counter helpers the HttpClient suites use.
class DemoApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new DemoApiServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  static std::string Url(const std::string& path) { return server_->Url(path); }

  static HttpRequest Get(const std::string& path) {
    HttpRequest request;
    request.url = Url(path);
    return request;
  }

  /// Server-side counters from GET /stats.
  static nlohmann::json Stats() {
    HttpReply reply = HttpCall("GET", Url("/stats"));
    return nlohmann::json::parse(reply.body);
  }

  /// Requests the server has received so far (this /stats call included).
  static std::uint64_t ServerRequests() { return Stats()["requests"].get<std::uint64_t>(); }

  /// Polls /stats until the server has received `count` requests since ServerRequests() returned
  /// `base`, besides the polls themselves.
  static bool WaitUntilServerReceived(std::uint64_t base, std::uint64_t count) {
    std::uint64_t polls = 0;
    return Eventually([&] {
      ++polls;
      return ServerRequests() >= base + polls + count;
    });
  }

  static inline DemoApiServer* server_ = nullptr;
};

}  // namespace wf::testing
