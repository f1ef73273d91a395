#include "admin_http/admin_server.h"

#include <pistache/endpoint.h>
#include <pistache/http.h>
#include <pistache/net.h>

#include <chrono>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

namespace wf {
namespace {

namespace Http = Pistache::Http;

constexpr size_t kMaxRequestBytes = 8192;  // probes send a request line and a few headers
constexpr auto kHeaderTimeout = std::chrono::seconds(5);
constexpr auto kBodyTimeout = std::chrono::seconds(5);
constexpr std::string_view kPrometheusType = "text/plain; version=0.0.4; charset=utf-8";

/// Splits "HOST:PORT" / "[V6]:PORT"; false when it is not of that shape.
bool ParseListen(const std::string& listen, std::string* host, int* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) return false;
  std::string h = listen.substr(0, colon);
  const std::string p = listen.substr(colon + 1);
  if (p.size() > 5) return false;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
  }
  const int n = std::stoi(p);
  if (n > 65535) return false;
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
  } else if (h.find(':') != std::string::npos) {
    return false;  // a bare IPv6 address is ambiguous: it needs brackets
  }
  for (char c : h) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  *host = std::move(h);
  *port = n;
  return true;
}

std::string StatusJson(std::string_view status, const std::string* reason) {
  nlohmann::json j = {{"status", status}};
  if (reason != nullptr) j["reason"] = *reason;
  return j.dump();
}

/// The three probe callbacks, shared by the handler clones Pistache makes per worker thread.
struct Callbacks {
  std::function<bool(std::string*)> ready;
  std::function<std::string()> metrics;
  std::function<bool(std::string*)> live;
};

class ProbeHandler : public Http::Handler {
 public:
  HTTP_PROTOTYPE(ProbeHandler)

  explicit ProbeHandler(std::shared_ptr<const Callbacks> callbacks)
      : callbacks_(std::move(callbacks)) {}

  // Pistache calls this on its worker thread; nothing may escape into it.
  void onRequest(const Http::Request& request, Http::ResponseWriter response) override {
    try {
      Serve(request, response);
    } catch (const std::exception& e) {
      TrySend(response, Http::Code::Internal_Server_Error,
              ErrorJson(Error{ErrorCode::kInternal, "admin handler failed"}));
    } catch (...) {
      TrySend(response, Http::Code::Internal_Server_Error,
              ErrorJson(Error{ErrorCode::kInternal, "admin handler failed"}));
    }
  }

  void onTimeout(const Http::Request& /*request*/, Http::ResponseWriter response) override {
    TrySend(response, Http::Code::Request_Timeout,
            ErrorJson(Error{ErrorCode::kBadRequest, "request not received in time"}));
  }

 private:
  static void TrySend(Http::ResponseWriter& response, Http::Code code, const std::string& body) {
    try {
      response.setMime(MIME(Application, Json));
      response.send(code, body);
    } catch (...) {
      // The connection is gone; nothing left to tell.
    }
  }

  void Serve(const Http::Request& request, Http::ResponseWriter& response) {
    const bool head = request.method() == Http::Method::Head;
    const std::string& path = request.resource();
    const bool known = path == "/health" || path == "/ready" || path == "/metrics";
    if (!known) {
      TrySend(
          response, Http::Code::Not_Found,
          ErrorJson(Error{ErrorCode::kNotFound, "no such path; try /health, /ready, /metrics"}));
      return;
    }
    if (request.method() != Http::Method::Get && !head) {
      response.headers().add<Http::Header::Allow>(
          std::vector<Http::Method>{Http::Method::Get, Http::Method::Head});
      TrySend(response, Http::Code::Method_Not_Allowed,
              ErrorJson(Error{ErrorCode::kMethodNotAllowed, "only GET and HEAD"}));
      return;
    }

    Http::Code code = Http::Code::Ok;
    std::string body;
    bool json = true;
    if (path == "/health") {
      std::string why;
      const bool alive = Ask(callbacks_->live, &why, "liveness check failed");
      code = alive ? Http::Code::Ok : Http::Code::Service_Unavailable;
      body = alive ? StatusJson("ok", nullptr) : StatusJson("unhealthy", &why);
    } else if (path == "/ready") {
      std::string why;
      const bool ready = Ask(callbacks_->ready, &why, "readiness check failed");
      code = ready ? Http::Code::Ok : Http::Code::Service_Unavailable;
      body = ready ? StatusJson("ready", nullptr) : StatusJson("not_ready", &why);
    } else {
      json = false;
      if (callbacks_->metrics) body = callbacks_->metrics();  // throws → 500 above
    }
    if (json) {
      response.setMime(MIME(Application, Json));
    } else {
      response.setMime(Http::Mime::MediaType::fromString(std::string(kPrometheusType)));
    }
    response.send(code, head ? std::string() : body);
  }

  /// Runs a probe callback; empty means yes, an exception means no.
  static bool Ask(const std::function<bool(std::string*)>& check, std::string* why,
                  const char* on_throw) {
    if (!check) return true;
    try {
      const bool ok = check(why);
      if (!ok && why->empty()) *why = "not ready";
      return ok;
    } catch (...) {
      *why = on_throw;
      return false;
    }
  }

  std::shared_ptr<const Callbacks> callbacks_;
};

}  // namespace

struct AdminServer::Impl {
  std::unique_ptr<Http::Endpoint> endpoint;
  int port = 0;
  std::mutex mu;  // guards `stopped` and the shutdown
  bool stopped = false;
};

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() { Stop(); }

int AdminServer::port() const { return impl_->port; }

void AdminServer::Stop() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  try {
    impl_->endpoint->shutdown();
  } catch (...) {
    // Shutting down a listener that already failed: nothing to do.
  }
  // Pistache closes the listening socket only when the endpoint is destroyed; until then
  // connections would queue in the backlog unanswered.
  impl_->endpoint.reset();
}

Result<std::unique_ptr<AdminServer>> AdminServer::Start(Options options) {
  std::string host;
  int port = 0;
  if (!ParseListen(options.listen, &host, &port)) {
    return Error{ErrorCode::kBadRequest,
                 "admin listen address '" + options.listen + "' is not HOST:PORT"};
  }
  auto callbacks = std::make_shared<Callbacks>(
      Callbacks{std::move(options.ready), std::move(options.metrics), std::move(options.live)});
  auto impl = std::make_unique<Impl>();
  try {
    impl->endpoint = std::make_unique<Http::Endpoint>(Pistache::Address(options.listen));
    auto opts = Http::Endpoint::options()
                    .threads(1)
                    .flags(Pistache::Tcp::Options::ReuseAddr)
                    .maxRequestSize(kMaxRequestBytes)
                    .headerTimeout(kHeaderTimeout)
                    .bodyTimeout(kBodyTimeout);
    impl->endpoint->init(opts);
    impl->endpoint->setHandler(std::make_shared<ProbeHandler>(std::move(callbacks)));
    impl->endpoint->serveThreaded();
    impl->port = static_cast<int>(static_cast<uint16_t>(impl->endpoint->getPort()));
  } catch (const std::exception& e) {
    if (impl->endpoint) {
      try {
        impl->endpoint->shutdown();
      } catch (...) {
      }
    }
    return Error{ErrorCode::kUnavailable,
                 "admin listen " + options.listen + ": " + std::string(e.what())};
  }
  return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
}

}  // namespace wf
