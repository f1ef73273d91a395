#include "support/test_support.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_set>

#include "text/ascii.h"

extern char** environ;

namespace wf::testing {
namespace {

using std::chrono::milliseconds;
namespace fs = std::filesystem;

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

void SleepMs(int ms) { std::this_thread::sleep_for(milliseconds(ms)); }

}  // namespace

namespace {

/// A port the kernel has no socket on right now (bound to port 0, then closed).
int UnboundPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("bind failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace

int FreePort() {
  // A port is closed again before its server binds it, so the kernel may hand it out twice; a
  // test that starts several servers would then see one fail to start, or talk to the wrong one.
  // Never the same port twice in one test process.
  static std::mutex mu;
  static std::unordered_set<int> given;
  std::lock_guard lock(mu);
  for (;;) {
    const int port = UnboundPort();
    if (given.insert(port).second) return port;
  }
}

TempDir::TempDir() {
  std::string tmpl = EnvOr("TMPDIR", "/tmp") + "/wf-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
  ::chmod(path_.c_str(), 0777);  // PostgreSQL runs as user postgres inside it
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

Process::Process(std::string exe, std::vector<std::string> args,
                 std::vector<std::string> extra_env)
    : exe_(std::move(exe)) {
  static int counter = 0;
  log_path_ = EnvOr("TMPDIR", "/tmp") + "/wf-proc-" + std::to_string(::getpid()) + "-" +
              std::to_string(++counter) + "-" + fs::path(exe_).filename().string() + ".log";
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string entry = *e;
    auto key = entry.substr(0, entry.find('='));
    bool overridden = std::any_of(extra_env.begin(), extra_env.end(), [&](const std::string& x) {
      return x.substr(0, x.find('=')) == key;
    });
    if (!overridden) env.push_back(entry);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());

  std::vector<char*> argv;
  argv.push_back(exe_.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::setpgid(0, 0);
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execvpe(exe_.c_str(), argv.data(), envp.data());
    ::perror("exec");
    ::_exit(127);
  }
}

Process::~Process() {
  Stop();
  std::error_code ec;
  if (!std::getenv("WF_KEEP_LOGS")) fs::remove(log_path_, ec);
}

bool Process::Running() {
  if (exit_code_) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return r == 0;
}

void Process::Signal(int sig) {
  if (Running()) ::kill(pid_, sig);
}

std::optional<int> Process::Wait(milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    SleepMs(5);
  }
  return exit_code_;
}

void Process::Stop(milliseconds grace) {
  if (pid_ <= 0 || !Running()) return;
  ::kill(pid_, SIGTERM);
  if (!Wait(grace)) {
    ::kill(pid_, SIGKILL);
    Wait(milliseconds(5000));
  }
}

std::string Process::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitForTcpPort(int port, milliseconds timeout) {
  return Eventually(
      [port] {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<uint16_t>(port));
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        return ok;
      },
      timeout);
}

namespace {

/// Runs `start` (which throws std::runtime_error with the server's log when it did not come
/// up), and again on a new port from `next_port` while the log says the port was taken: FreePort
/// closes the port it found, and a test process running beside this one (ctest -j) may bind it
/// before the server does.
template <typename Start>
void StartOnAFreePort(int& port, Start start) {
  for (int attempt = 1;; ++attempt) {
    try {
      start();
      return;
    } catch (const std::runtime_error& e) {
      std::string log = e.what();
      for (char& c : log) c = AsciiLower(c);
      if (attempt == 5 || log.find("address already in use") == std::string::npos) throw;
      port = FreePort();
    }
  }
}

}  // namespace

NatsServer::NatsServer() : port_(FreePort()) {
  StartOnAFreePort(port_, [this] { Start(); });
}

void NatsServer::Start() {
  process_.emplace(EnvOr("WF_NATS_SERVER", "nats-server"),
                   std::vector<std::string>{"-a", "127.0.0.1", "-p", std::to_string(port_), "-js",
                                            "-sd", dir_.path()});
  bool up = Eventually([&] { return !process_->Running() || WaitForTcpPort(port_, milliseconds(1)); },
                       milliseconds(15000));
  if (!up || !process_->Running()) {
    throw std::runtime_error("nats-server did not start: " + process_->Log());
  }
}

void NatsServer::Restart() {
  process_.reset();
  Start();
}

RedisServer::RedisServer() : port_(FreePort()) {
  StartOnAFreePort(port_, [this] { Start(); });
}

void RedisServer::Start() {
  process_.reset();
  process_.emplace(EnvOr("WF_REDIS_SERVER", "redis-server"),
                   std::vector<std::string>{"--port", std::to_string(port_), "--bind", "127.0.0.1",
                                            "--save", "", "--appendonly", "no", "--daemonize",
                                            "no"});
  bool up = Eventually([&] { return !process_->Running() || WaitForTcpPort(port_, milliseconds(1)); },
                       milliseconds(15000));
  if (!up || !process_->Running()) {
    throw std::runtime_error("redis-server did not start: " + process_->Log());
  }
}

namespace {

std::string PgBin(const std::string& tool) {
  return EnvOr("WF_PG_BINDIR", "/usr/lib/postgresql/15/bin") + "/" + tool;
}

int RunAsPostgres(const std::vector<std::string>& args) {
  std::vector<std::string> full = {"-u", "postgres", "--"};
  full.insert(full.end(), args.begin(), args.end());
  Process p("/usr/sbin/runuser", full);
  auto code = p.Wait(milliseconds(60000));
  if (!code || *code != 0) throw std::runtime_error("command failed: " + args[0] + ": " + p.Log());
  return *code;
}

}  // namespace

PostgresServer::PostgresServer() : port_(FreePort()) {
  data_dir_ = dir_.path() + "/data";
  struct passwd* pw = ::getpwnam("postgres");
  if (!pw) throw std::runtime_error("no user postgres (install postgresql-15)");
  ::mkdir(data_dir_.c_str(), 0700);
  if (::chown(data_dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw std::runtime_error("chown of the PostgreSQL data dir failed");
  }
  RunAsPostgres({PgBin("initdb"), "-D", data_dir_, "-A", "trust", "-U", "postgres",
                 "--no-sync", "-E", "UTF8"});
  StartOnAFreePort(port_, [this] { Start(); });
}

void PostgresServer::Start() {
  std::vector<std::string> args = {"-u",
                                   "postgres",
                                   "--",
                                   PgBin("postgres"),
                                   "-D",
                                   data_dir_,
                                   "-p",
                                   std::to_string(port_),
                                   "-k",
                                   dir_.path(),
                                   "-c",
                                   "listen_addresses=127.0.0.1",
                                   "-c",
                                   "fsync=off",
                                   "-c",
                                   "max_connections=200"};
  process_.emplace("/usr/sbin/runuser", args);
  bool ready = Eventually(
      [&] {
        if (!process_->Running()) return true;
        Process probe(PgBin("pg_isready"),
                      {"-h", "127.0.0.1", "-p", std::to_string(port_), "-U", "postgres"});
        auto code = probe.Wait(milliseconds(5000));
        return code && *code == 0;
      },
      milliseconds(30000));
  if (!ready || !process_->Running()) {
    throw std::runtime_error("postgres did not start: " + process_->Log());
  }
}

PostgresServer::~PostgresServer() { Stop(); }

void PostgresServer::Stop() {
  // postgres runs under runuser: signal the whole group so the postmaster gets SIGTERM too.
  if (process_ && process_->Running()) {
    ::kill(-process_->pid(), SIGINT);  // fast shutdown
    process_->Wait(milliseconds(10000));
  }
  process_.reset();
}

std::string PostgresServer::url() const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres";
}

std::string BinPath(const std::string& name) {
  return EnvOr("WF_BIN_DIR", "build/bin") + "/" + name;
}

std::string SourcePath(const std::string& rel) { return EnvOr("WF_SOURCE_DIR", ".") + "/" + rel; }

namespace {

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), AsciiLower);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of("\r\n \t") + 1);
    (*static_cast<std::map<std::string, std::string>*>(user))[name] = value;
  }
  return size * n;
}

}  // namespace

HttpReply HttpCall(const std::string& method, const std::string& url, const std::string& body,
                   std::vector<std::string> headers, long timeout_ms) {
  HttpReply reply;
  CURL* curl = curl_easy_init();
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.headers);
  CURLcode rc = curl_easy_perform(curl);
  if (rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    reply.status = static_cast<int>(status);
  } else {
    reply.body = curl_easy_strerror(rc);
  }
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return reply;
}

}  // namespace wf::testing
