// What is and is not safe to do with Pistache 0.0.5 from a thread that does not own the
// connection, measured in-process without NATS (the gateway's own stress test covers the same
// pattern end to end):
//
//  * SAFE: Tcp::Peer::send(RawBuffer) from any thread. It only pushes onto the owning
//    transport's lock-free MPSC write queue (PollableQueue, push is multi-producer) and writes
//    its eventfd; the transport thread performs the socket write. Bytes of one connection keep
//    the order of the pushes.
//  * NOT SAFE: ResponseStream::flush() (and anything that calls Transport::flush) from another
//    thread: it runs the transport's single-consumer queue drain and epoll bookkeeping on the
//    calling thread, and the server dies with "Assertion Error: could not find write data"
//    (see DISABLED_FlushFromForeignThreadAborts; run with --gtest_also_run_disabled_tests).
//  * The pattern that makes peer->send usable: each stream guards its writes with a mutex and a
//    `closed` flag that the connection's onDisconnection sets (on the transport thread, before
//    Pistache closes the descriptor), so no write is queued for a descriptor after it closed and
//    can be reused by another connection.
#include <gtest/gtest.h>
#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/peer.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>

#include "http_probe.h"

namespace wf::testing {
namespace {

using namespace Pistache;
using std::chrono::milliseconds;

/// A pool of "foreign" threads (standing in for the NATS delivery thread).
class ForeignThreads {
 public:
  explicit ForeignThreads(int n) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this] {
        for (;;) {
          std::function<void()> job;
          {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
            if (jobs_.empty()) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
          }
          job();
        }
      });
    }
  }
  ~ForeignThreads() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Post(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

/// One streamed answer written from foreign threads.
struct Stream {
  std::mutex mu;
  bool closed = false;
  std::weak_ptr<Tcp::Peer> peer;  // weak: the peer's data map owns this
  void Send(std::string bytes) {
    std::lock_guard lock(mu);
    if (closed) return;
    if (auto p = peer.lock()) {
      const std::size_t n = bytes.size();
      (void)p->send(RawBuffer(std::move(bytes), n));
    }
  }
};

ForeignThreads* g_foreign = nullptr;
bool g_flush_from_foreign = false;

std::string Chunk(const std::string& data) {
  char size[16];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

class StreamingHandler : public Http::Handler {
 public:
  HTTP_PROTOTYPE(StreamingHandler)

  void onRequest(const Http::Request& request, Http::ResponseWriter writer) override {
    const int n = std::stoi(request.query().get("n").value_or("100"));
    if (g_flush_from_foreign) {
      // The unsafe way: the ResponseStream is flushed on a foreign thread.
      auto stream = std::make_shared<Http::ResponseStream>(writer.stream(Http::Code::Ok));
      stream->flush();
      g_foreign->Post([stream, n] {
        for (int i = 0; i < n; ++i) {
          *stream << "x";
          stream->flush();
        }
        stream->ends();
      });
      return;
    }
    auto peer = writer.peer();
    peer->setIdle(true);  // only the keep-alive timeout applies from now on
    auto stream = std::make_shared<Stream>();
    stream->peer = peer;
    peer->putData("stream", stream);
    stream->Send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    g_foreign->Post([stream, n] {
      for (int i = 0; i < n; ++i) stream->Send(Chunk("line " + std::to_string(i) + "\n"));
      stream->Send("0\r\n\r\n");
    });
  }

  void onDisconnection(const std::shared_ptr<Tcp::Peer>& peer) override {
    if (auto data = peer->tryGetData("stream")) {
      auto* stream = static_cast<Stream*>(data.get());
      std::lock_guard lock(stream->mu);
      stream->closed = true;
    }
  }
};

class PistacheServer {
 public:
  PistacheServer() : endpoint_(Address("127.0.0.1:0")) {
    endpoint_.init(Http::Endpoint::options()
                       .threads(2)
                       .flags(Tcp::Options::ReuseAddr)
                       .keepaliveTimeout(std::chrono::seconds(300)));
    endpoint_.setHandler(Http::make_handler<StreamingHandler>());
    endpoint_.serveThreaded();
  }
  ~PistacheServer() { endpoint_.shutdown(); }
  int port() { return static_cast<int>(static_cast<uint16_t>(endpoint_.getPort())); }

 private:
  Http::Endpoint endpoint_;
};

std::string Expected(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += "line " + std::to_string(i) + "\n";
  return out;
}

TEST(PistacheThreading, PeerSendFromForeignThreadsUnderChurn) {
  ForeignThreads foreign(4);
  g_foreign = &foreign;
  g_flush_from_foreign = false;
  PistacheServer server;
  constexpr int kLines = 500;
  const std::string expected = Expected(kLines);
  for (int round = 0; round < 10; ++round) {
    std::vector<std::unique_ptr<RawConnection>> complete, abandoned;
    for (int i = 0; i < 48; ++i) {
      auto conn = std::make_unique<RawConnection>(server.port());
      conn->Send("GET /s?n=" + std::to_string(kLines) + " HTTP/1.1\r\nHost: x\r\n\r\n");
      (i % 4 == 3 ? abandoned : complete).push_back(std::move(conn));
    }
    // A quarter of the clients leave mid-stream; their descriptors get reused by the next
    // connections while foreign threads are still producing for them.
    for (auto& conn : abandoned) {
      conn->WaitFor([](const std::string& d) { return d.size() > 200; });
      conn->Close();
    }
    std::vector<std::unique_ptr<RawConnection>> late;
    for (int i = 0; i < 16; ++i) {
      auto conn = std::make_unique<RawConnection>(server.port());
      conn->Send("GET /s?n=" + std::to_string(kLines) + " HTTP/1.1\r\nHost: x\r\n\r\n");
      late.push_back(std::move(conn));
    }
    for (auto* group : {&complete, &late}) {
      for (auto& conn : *group) {
        ASSERT_TRUE(conn->WaitFor(
            [](const std::string& d) {
              return d.size() >= 5 && d.compare(d.size() - 5, 5, "0\r\n\r\n") == 0;
            },
            milliseconds(30000)));
        auto parsed = ParseResponse(conn->Data());
        ASSERT_EQ(parsed.status, 200);
        bool done = false;
        // Exactly this connection's bytes, complete and in order: nothing lost, nothing foreign.
        ASSERT_EQ(Dechunk(parsed.body, &done), expected);
        ASSERT_TRUE(done);
      }
    }
  }
  g_foreign = nullptr;
}

// Demonstrates the unsafe way; it kills the process (under load, within seconds). Disabled
// because its outcome is a crash; run it explicitly to see the failure mode.
TEST(PistacheThreadingDeathTest, DISABLED_FlushFromForeignThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ForeignThreads foreign(4);
        g_foreign = &foreign;
        g_flush_from_foreign = true;
        PistacheServer server;
        for (int round = 0; round < 50; ++round) {
          std::vector<std::unique_ptr<RawConnection>> conns;
          for (int i = 0; i < 32; ++i) {
            conns.push_back(std::make_unique<RawConnection>(server.port()));
            conns.back()->Send("GET /s?n=300 HTTP/1.1\r\nHost: x\r\n\r\n");
          }
          for (auto& c : conns) c->WaitFor([](const std::string& d) { return d.size() > 2000; });
        }
        std::fprintf(stderr, "survived\n");
        std::_Exit(0);
      },
      "could not find write data");
}

}  // namespace
}  // namespace wf::testing
