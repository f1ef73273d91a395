#pragma once

#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace wf::testing {

/// wf-scripted-llm started on a free port with the given rules (JSON text, written to a temp
/// file; empty = no --rules), stopped when the object dies. Test thread only.
class ScriptedLlmServer {
 public:
  explicit ScriptedLlmServer(const std::string& rules_json = "",
                             std::vector<std::string> extra_args = {},
                             std::vector<std::string> extra_env = {}) {
    std::vector<std::string> base;
    if (!rules_json.empty()) {
      const std::string path = dir_.path() + "/rules.json";
      std::ofstream(path) << rules_json;
      base = {"--rules", path};
    }
    base.insert(base.end(), extra_args.begin(), extra_args.end());
    // A free port can be taken between FreePort and bind: try a few.
    for (int attempt = 0; attempt < 3 && !ready_; ++attempt) {
      port_ = FreePort();
      std::vector<std::string> args = {"--listen", "127.0.0.1:" + std::to_string(port_)};
      args.insert(args.end(), base.begin(), base.end());
      process_ = std::make_unique<Process>(BinPath("wf-scripted-llm"), args, extra_env);
      // Our own log line proves that this process (not another test's server that happens to
      // hold the port) bound it.
      const std::string banner = "listening on 127.0.0.1:" + std::to_string(port_);
      ready_ =
          Eventually(
              [&] {
                return !process_->Running() || process_->Log().find(banner) != std::string::npos;
              },
              std::chrono::seconds(10)) &&
          process_->Running() && WaitForTcpPort(port_, std::chrono::seconds(10));
    }
  }

  bool ready() const { return ready_; }
  int port() const { return port_; }
  Process& process() { return *process_; }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  /// GET /_stats parsed (null when the call fails).
  nlohmann::json Stats() const {
    const HttpReply reply = HttpCall("GET", Url("/_stats"));
    if (reply.status != 200) return nullptr;
    return nlohmann::json::parse(reply.body, nullptr, false);
  }

  /// POST /v1/chat/completions with `body`.
  HttpReply Chat(const nlohmann::json& body, std::vector<std::string> headers = {},
                 long timeout_ms = 10000) const {
    headers.push_back("Content-Type: application/json");
    return HttpCall("POST", Url("/v1/chat/completions"), body.dump(), headers, timeout_ms);
  }

 private:
  TempDir dir_;
  int port_ = 0;
  bool ready_ = false;
  std::unique_ptr<Process> process_;
};

/// `data:` payloads of an SSE body, in order.
inline std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < body.size()) {
    std::size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    const std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

}  // namespace wf::testing
