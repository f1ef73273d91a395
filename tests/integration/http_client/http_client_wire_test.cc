// HttpClient against servers that answer wrongly on the wire: bytes written past a response on
// a kept-alive connection, two Content-Lengths, an encoding nobody asked for, an answer that is
// not HTTP. Each is a raw TCP server in this process that writes exactly the bytes under test.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http_client/http_client.h"

namespace wf {
namespace {

using std::chrono::milliseconds;

/// A TCP server on 127.0.0.1 that reads each request's head and lets the test write the answer.
/// `answer(fd, connection, request)` runs on the server's thread for every request, numbered per
/// server (connections in accept order, requests in arrival order on the server).
class RawServer {
 public:
  using Answer = std::function<void(int fd, int connection, int request)>;

  explicit RawServer(Answer answer) : answer_(std::move(answer)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener_, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~RawServer() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    accept_thread_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : connection_threads_) t.join();
    for (int fd : fds_) ::close(fd);
    ::close(listener_);
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int Connections() const { return connections_.load(); }

  static void Write(int fd, const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      const int connection = connections_.fetch_add(1);
      std::lock_guard lock(mu_);
      fds_.push_back(fd);
      connection_threads_.emplace_back([this, fd, connection] { Serve(fd, connection); });
    }
  }

  void Serve(int fd, int connection) {
    std::string buffer;
    char chunk[4096];
    while (true) {
      const auto end = buffer.find("\r\n\r\n");
      if (end != std::string::npos) {
        buffer.erase(0, end + 4);  // GET requests only: no body
        answer_(fd, connection, requests_.fetch_add(1));
        continue;
      }
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return;
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }

  Answer answer_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> connection_threads_;
};

std::string Ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

HttpRequest GetUrl(const std::string& url) {
  HttpRequest request;
  request.url = url;
  request.timeout = milliseconds(5000);
  return request;
}

TEST(HttpClientWireTest, BytesWrittenPastAnAnswerAreNeverTakenForTheNextAnswer) {
  // The first answer is followed, a moment later, by a whole second response nobody asked for
  // (as a server whose Content-Length counted characters, or that answered twice, would write).
  // Read as the next request's answer, every later request on that connection would get the
  // answer of the one before it.
  std::promise<void> stray_written;
  RawServer server([&](int fd, int connection, int request) {
    if (request == 0) {
      RawServer::Write(fd, Ok("first"));
      std::this_thread::sleep_for(milliseconds(20));
      RawServer::Write(fd, Ok("SMUGGLED"));
      stray_written.set_value();
    } else {
      RawServer::Write(fd, Ok("answer " + std::to_string(request) + " on connection " +
                              std::to_string(connection)));
    }
  });
  HttpClient client;
  auto first = HttpCallBlocking(client, GetUrl(server.Url("/one")));
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->body, "first");
  stray_written.get_future().wait();
  // The stray bytes are in the client's socket by the time the loopback write returned; the
  // client's loop may still be asleep, which is the case under test.
  for (int i = 1; i <= 3; ++i) {
    auto next = HttpCallBlocking(client, GetUrl(server.Url("/next")));
    ASSERT_TRUE(next.ok()) << next.error().message;
    EXPECT_EQ(next->body, "answer " + std::to_string(i) + " on connection 1") << "request " << i;
  }
  // The poisoned connection was dropped once; the new one is kept alive for the others.
  EXPECT_EQ(server.Connections(), 2);
  EXPECT_EQ(client.ConnectionsOpened(), 2u);
}

TEST(HttpClientWireTest, TwoDifferentContentLengthsAreAnUpstreamError) {
  RawServer server([](int fd, int, int request) {
    if (request == 0) {
      RawServer::Write(fd,
                       "HTTP/1.1 200 OK\r\nContent-Length: 19\r\nContent-Length: 5\r\n\r\n"
                       "{\"status\":\"ok\"}    ");
    } else {
      RawServer::Write(fd, Ok("fine"));
    }
  });
  HttpClient client;
  auto bad = HttpCallBlocking(client, GetUrl(server.Url("/two-lengths")));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kUpstreamError);
  EXPECT_NE(bad.error().message.find("two different Content-Length headers (19 and 5)"),
            std::string::npos)
      << bad.error().message;
  auto next = HttpCallBlocking(client, GetUrl(server.Url("/next")));
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next->body, "fine");
}

TEST(HttpClientWireTest, AnEncodingNobodyAskedForIsAnUpstreamError) {
  RawServer server([](int fd, int, int) {
    RawServer::Write(fd,
                     "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n"
                     "\x1f\x8b\x08\x00");
  });
  HttpClient client;
  auto bad = HttpCallBlocking(client, GetUrl(server.Url("/gzip")));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kUpstreamError);
  EXPECT_NE(bad.error().message.find("gzip-encoded, which was not asked for"), std::string::npos)
      << bad.error().message;
  // Streamed, nothing of the body reaches the data callback.
  std::string streamed;
  std::promise<Result<HttpResponse>> done;
  client.SendStreaming(
      GetUrl(server.Url("/gzip")),
      [&](std::string_view chunk) {
        streamed.append(chunk);
        return true;
      },
      [&](Result<HttpResponse> result) { done.set_value(std::move(result)); });
  auto streaming = done.get_future().get();
  ASSERT_FALSE(streaming.ok());
  EXPECT_EQ(streaming.error().code, ErrorCode::kUpstreamError);
  EXPECT_EQ(streamed, "");
}

TEST(HttpClientWireTest, AnAnswerThatIsNotHttpIsAnUpstreamErrorNotABadUrl) {
  RawServer server([](int fd, int, int) {
    RawServer::Write(fd, "hello, this is not HTTP\r\n");
    ::shutdown(fd, SHUT_WR);
  });
  HttpClient client;
  auto bad = HttpCallBlocking(client, GetUrl(server.Url("/x")));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kUpstreamError) << bad.error().message;
}

}  // namespace
}  // namespace wf
