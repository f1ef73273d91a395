// AdminServer on a real socket: the probes Kubernetes sends, what a scraper reads, and input that
// must not take the port down.
#include "admin_http/admin_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "support/test_support.h"

namespace wf {
namespace {

using testing::HttpCall;

std::string Url(const AdminServer& server, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(server.port()) + path;
}

std::unique_ptr<AdminServer> MustStart(AdminServer::Options options) {
  auto server = AdminServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << (server.ok() ? "" : server.error().message);
  if (!server.ok()) return nullptr;
  return std::move(server).value();
}

/// Sends raw bytes and returns whatever comes back before the server closes or 5 s pass.
std::string RawExchange(int port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    (void)!::write(fd, bytes.data(), bytes.size());
    ::shutdown(fd, SHUT_WR);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST(AdminServerTest, HealthAnswersOkOnAPickedPort) {
  auto server = MustStart({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(server);
  ASSERT_GT(server->port(), 0);
  auto reply = HttpCall("GET", Url(*server, "/health"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(nlohmann::json::parse(reply.body), nlohmann::json({{"status", "ok"}}));
  EXPECT_NE(reply.headers["content-type"].find("application/json"), std::string::npos);
}

TEST(AdminServerTest, ReadyFollowsTheCallbackAndSaysWhy) {
  std::atomic<bool> ready{false};
  auto server = MustStart({.listen = "127.0.0.1:0", .ready = [&](std::string* why) {
                             if (!ready) *why = "nats: not connected";
                             return ready.load();
                           }});
  ASSERT_TRUE(server);
  auto reply = HttpCall("GET", Url(*server, "/ready"));
  EXPECT_EQ(reply.status, 503);
  auto body = nlohmann::json::parse(reply.body);
  EXPECT_EQ(body["status"], "not_ready");
  EXPECT_EQ(body["reason"], "nats: not connected");

  ready = true;
  reply = HttpCall("GET", Url(*server, "/ready"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(nlohmann::json::parse(reply.body)["status"], "ready");
}

TEST(AdminServerTest, NoReadyCallbackMeansReady) {
  auto server = MustStart({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(server);
  EXPECT_EQ(HttpCall("GET", Url(*server, "/ready")).status, 200);
}

TEST(AdminServerTest, LivenessCallbackTurnsHealthUnhealthy) {
  std::atomic<bool> alive{true};
  auto server = MustStart({.listen = "127.0.0.1:0", .live = [&](std::string* why) {
                             if (!alive) *why = "main loop stalled";
                             return alive.load();
                           }});
  ASSERT_TRUE(server);
  EXPECT_EQ(HttpCall("GET", Url(*server, "/health")).status, 200);
  alive = false;
  auto reply = HttpCall("GET", Url(*server, "/health"));
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(nlohmann::json::parse(reply.body)["reason"], "main loop stalled");
}

TEST(AdminServerTest, MetricsServesPrometheusText) {
  const std::string text =
      "# HELP wf_turns_total Agent turns finished.\n# TYPE wf_turns_total counter\n"
      "wf_turns_total 42\n";
  auto server = MustStart({.listen = "127.0.0.1:0", .metrics = [&] { return text; }});
  ASSERT_TRUE(server);
  auto reply = HttpCall("GET", Url(*server, "/metrics"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, text);
  EXPECT_NE(reply.headers["content-type"].find("text/plain"), std::string::npos);
  EXPECT_NE(reply.headers["content-type"].find("version=0.0.4"), std::string::npos);
}

TEST(AdminServerTest, ThrowingCallbacksAnswerErrorsAndTheServerLives) {
  auto server = MustStart({.listen = "127.0.0.1:0",
                           .ready = [](std::string*) -> bool { throw std::runtime_error("boom"); },
                           .metrics = []() -> std::string { throw std::runtime_error("boom"); }});
  ASSERT_TRUE(server);
  auto ready = HttpCall("GET", Url(*server, "/ready"));
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(nlohmann::json::parse(ready.body)["status"], "not_ready");
  auto metrics = HttpCall("GET", Url(*server, "/metrics"));
  EXPECT_EQ(metrics.status, 500);
  EXPECT_EQ(nlohmann::json::parse(metrics.body)["error"]["code"], "internal");
  EXPECT_EQ(HttpCall("GET", Url(*server, "/health")).status, 200);
}

TEST(AdminServerTest, UnknownPathsAndMethodsAreRefused) {
  auto server = MustStart({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(server);
  auto missing = HttpCall("GET", Url(*server, "/api/v1/query"));
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(nlohmann::json::parse(missing.body)["error"]["code"], "not_found");
  auto post = HttpCall("POST", Url(*server, "/health"), "{}");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(nlohmann::json::parse(post.body)["error"]["code"], "method_not_allowed");
  EXPECT_EQ(HttpCall("HEAD", Url(*server, "/health")).status, 200);
}

TEST(AdminServerTest, GarbageAndOversizedRequestsDoNotTakeThePortDown) {
  auto server = MustStart({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(server);
  RawExchange(server->port(), "\x16\x03\x01\x02\x00 not http at all\r\n\r\n");
  RawExchange(server->port(),
              "GET /health HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n");
  RawExchange(server->port(), "GET /health HT");  // half a request, then close
  auto reply = HttpCall("GET", Url(*server, "/health"));
  EXPECT_EQ(reply.status, 200);
}

TEST(AdminServerTest, BadListenAddressesAreErrorsNotCrashes) {
  for (const std::string listen : {"", ":", "9090", "127.0.0.1:", "127.0.0.1:99999",
                                   "127.0.0.1:90a", "::1:9090", "bad host:1", "127.0.0.1:123456"}) {
    auto server = AdminServer::Start({.listen = listen});
    ASSERT_FALSE(server.ok()) << listen;
    EXPECT_EQ(server.error().code, ErrorCode::kBadRequest) << listen;
  }
}

TEST(AdminServerTest, PortInUseIsUnavailable) {
  auto first = MustStart({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(first);
  auto second = AdminServer::Start({.listen = "127.0.0.1:" + std::to_string(first->port())});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(second.error().message.find(std::to_string(first->port())), std::string::npos);
  EXPECT_EQ(HttpCall("GET", Url(*first, "/health")).status, 200);
}

TEST(AdminServerTest, StopClosesThePortAndIsIdempotent) {
  auto server = MustStart({.listen = "127.0.0.1:0"});
  ASSERT_TRUE(server);
  const int port = server->port();
  ASSERT_EQ(HttpCall("GET", Url(*server, "/health")).status, 200);
  server->Stop();
  server->Stop();
  EXPECT_EQ(
      HttpCall("GET", "http://127.0.0.1:" + std::to_string(port) + "/health", "", {}, 2000).status,
      0);
  server.reset();  // the destructor after Stop is fine too
  // The port is free again: a restarted worker can take it.
  auto again = MustStart({.listen = "127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(again);
  EXPECT_EQ(HttpCall("GET", Url(*again, "/health")).status, 200);
}

TEST(AdminServerTest, ManySequentialProbesAllAnswered) {
  std::atomic<int> calls{0};
  auto server = MustStart({.listen = "127.0.0.1:0", .ready = [&](std::string*) {
                             ++calls;
                             return true;
                           }});
  ASSERT_TRUE(server);
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(HttpCall("GET", Url(*server, i % 2 ? "/ready" : "/health")).status, 200) << i;
  }
  EXPECT_EQ(calls.load(), 100);
}

}  // namespace
}  // namespace wf
