#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

/// Hermetic helpers for integration tests: free ports, temp dirs, child processes and real
/// servers (nats-server with JetStream, redis-server, PostgreSQL 15) started on free ports and
/// stopped when the owning object dies, even when a test fails.
namespace wf::testing {

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back), never one
/// this process was given before.
int FreePort();

/// A fresh directory under $TMPDIR, removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// A child process. stdout and stderr go to a log file readable with Log(). The destructor sends
/// SIGTERM, waits up to 3 s, then SIGKILLs, so nothing outlives the test.
class Process {
 public:
  /// `extra_env` entries are "KEY=VALUE", added to (and overriding) this process's environment.
  Process(std::string exe, std::vector<std::string> args, std::vector<std::string> extra_env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  /// True while the child has not exited.
  bool Running();
  void Signal(int sig);
  /// Waits for the exit; the exit code (128+signal when killed), or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  /// Everything the child printed so far.
  std::string Log() const;
  /// Stops the child now (SIGTERM, then SIGKILL after `grace`).
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

 private:
  std::string exe_;
  std::string log_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

/// Polls until something accepts TCP connections on 127.0.0.1:port, or the timeout passes.
bool WaitForTcpPort(int port, std::chrono::milliseconds timeout);

/// Polls `predicate` every few ms until it is true or the timeout passes; returns its last value.
template <typename Predicate>
bool Eventually(Predicate predicate,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (predicate()) return true;
    struct timespec ts{0, 5 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  return predicate();
}

/// nats-server -js on a free port with a temp store directory.
class NatsServer {
 public:
  NatsServer();
  int port() const { return port_; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  Process& process() { return *process_; }
  /// Stops and starts the server again on the same port and store (for reconnect tests).
  void Restart();
  /// Stops the server (an outage); Start brings it back on the same port and store.
  void Stop() { process_.reset(); }
  /// Starts it (again); returns when it accepts connections.
  void Start();

 private:
  TempDir dir_;
  int port_;
  std::optional<Process> process_;
};

/// redis-server without persistence on a free port.
class RedisServer {
 public:
  RedisServer();
  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  Process& process() { return *process_; }

 private:
  void Start();
  int port_;
  std::optional<Process> process_;
};

/// A throwaway PostgreSQL 15 cluster (initdb as user postgres) on a free port.
class PostgresServer {
 public:
  PostgresServer();
  ~PostgresServer();
  int port() const { return port_; }
  /// libpq URI: postgresql://postgres@127.0.0.1:PORT/postgres
  std::string url() const;
  /// Stops the server (fast shutdown), keeping its data: an outage for failure tests.
  void Stop();
  /// Starts it again on the same port and data after Stop; returns when it accepts connections.
  void Start();

 private:
  TempDir dir_;
  int port_;
  std::string data_dir_;
  std::optional<Process> process_;
};

/// $WF_BIN_DIR/name (build/bin), where CMake puts every executable.
std::string BinPath(const std::string& name);
/// $WF_SOURCE_DIR/rel, the repository root.
std::string SourcePath(const std::string& rel);

/// A blocking HTTP call with libcurl, for tests.
struct HttpReply {
  int status = 0;  ///< 0 when the request failed (see body for curl's reason).
  std::string body;
  std::map<std::string, std::string> headers;  ///< lower-cased names.
};
HttpReply HttpCall(const std::string& method, const std::string& url, const std::string& body = "",
                   std::vector<std::string> headers = {}, long timeout_ms = 10000);

}  // namespace wf::testing
