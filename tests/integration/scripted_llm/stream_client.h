#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace wf::testing {

/// A raw HTTP/1.1 client over one TCP connection that reads a response incrementally, so tests
/// can observe a stream while it is produced, close the connection mid-stream, and reuse it
/// (keep-alive). Single-threaded; every read has a deadline.
class StreamClient {
 public:
  /// Connects to 127.0.0.1:port. Check connected().
  explicit StreamClient(int port);
  ~StreamClient();
  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;

  bool connected() const { return fd_ >= 0; }

  /// Sends a request with a Content-Length body without waiting for an answer.
  bool Write(const std::string& method, const std::string& path, const std::string& body,
             const std::vector<std::string>& headers = {});

  /// Sends a request with a Content-Length body and reads the status line and headers.
  /// Returns false when the connection fails or no head arrives before `timeout`.
  bool Send(const std::string& method, const std::string& path, const std::string& body,
            std::vector<std::string> headers = {},
            std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  int status() const { return status_; }
  /// Response headers of the last Send, names lower-cased.
  const std::map<std::string, std::string>& headers() const { return headers_; }

  /// The next SSE `data:` payload of a chunked event stream, or nullopt when the stream ended,
  /// the connection closed, or `timeout` passed.
  std::optional<std::string> NextEvent(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  /// Reads the whole body (Content-Length or chunked) of the last Send.
  std::optional<std::string> ReadBody(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  /// True when the server closed the connection within `timeout` (reads until EOF).
  bool ServerClosed(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  /// Closes the connection now.
  void Close();

 private:
  bool Fill(std::chrono::steady_clock::time_point deadline);
  bool DecodeChunks();

  int fd_ = -1;
  int status_ = 0;
  std::map<std::string, std::string> headers_;
  std::string raw_;      // bytes received, not yet decoded
  std::string decoded_;  // body bytes decoded from chunks, not yet consumed
  bool chunked_ = false;
  bool body_done_ = false;
};

}  // namespace wf::testing
