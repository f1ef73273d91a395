#include "cli/command_line.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <iostream>
#include <sstream>

namespace wf {

std::vector<FlagSpec> CommonFlags() {
  return {
      {"config", "WF_CONFIG", "config/workflow_config.json", "workflow configuration file"},
      {"nats-url", "NATS_URL", "nats://127.0.0.1:4222", "NATS server URL"},
      {"log-level", "WF_LOG_LEVEL", "info", "trace, debug, info, warn or error"},
      {"check-config", "", "", "validate the config, print what it holds and exit", true},
  };
}

bool Flags::IsSet(const std::string& name) const {
  auto it = set_.find(name);
  return it != set_.end() && it->second;
}

Result<long> Flags::GetInt(const std::string& name, long min, long max) const {
  const std::string& text = Get(name);
  char* end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < min || v > max) {
    return Error{ErrorCode::kBadRequest, "--" + name + ": expected an integer in [" +
                                             std::to_string(min) + ", " + std::to_string(max) +
                                             "], got '" + text + "'"};
  }
  return v;
}

CommandLine::CommandLine(std::string program, std::string summary, std::vector<FlagSpec> flags)
    : program_(std::move(program)), summary_(std::move(summary)), flags_(std::move(flags)) {
  flags_.push_back({"help", "", "", "print this help and exit", true});
}

std::string CommandLine::Usage() const {
  std::ostringstream out;
  out << "Usage: " << program_ << " [flags]\n"
      << summary_ << "\n\nFlags (a flag beats its env var):\n";
  for (const auto& f : flags_) {
    out << "  --" << f.name << (f.is_switch ? "" : " VALUE");
    out << "\n      " << f.help;
    if (!f.env.empty()) out << " (env " << f.env << ")";
    if (!f.default_value.empty() && !f.secret) out << " [default: " << f.default_value << "]";
    out << "\n";
  }
  return out.str();
}

CommandLine::Outcome CommandLine::Parse(int argc, const char* const* argv) const {
  Outcome outcome;
  Flags flags;
  for (const auto& f : flags_) {
    flags.values_[f.name] = f.default_value;
    flags.set_[f.name] = false;
    if (!f.env.empty()) {
      if (const char* v = std::getenv(f.env.c_str()); v && *v) {
        flags.values_[f.name] = v;
        flags.set_[f.name] = true;
      }
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      outcome.error = "unexpected argument '" + arg + "' (see --help)";
      return outcome;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const FlagSpec* spec = nullptr;
    for (const auto& f : flags_) {
      if (f.name == name) spec = &f;
    }
    if (!spec) {
      outcome.error = "unknown flag --" + name + " (see --help)";
      return outcome;
    }
    if (name == "help") {
      std::cout << Usage();
      outcome.exit_code = 0;
      return outcome;
    }
    if (spec->is_switch) {
      if (value) {
        outcome.error = "--" + name + " takes no value";
        return outcome;
      }
      value = "true";
    } else if (!value) {
      if (i + 1 >= argc) {
        outcome.error = "--" + name + " needs a value";
        return outcome;
      }
      value = argv[++i];
    }
    flags.values_[name] = *value;
    flags.set_[name] = true;
  }
  outcome.flags = std::move(flags);
  return outcome;
}

void InitLogging(const std::string& program, const std::string& level) {
  auto logger = spdlog::stderr_color_mt(program);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%Y-%m-%dT%H:%M:%S.%e] [%n] [%^%l%$] %v");
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") lvl = spdlog::level::info;
  spdlog::set_level(lvl);
}

Result<std::pair<std::string, int>> ParseHostPort(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Error{ErrorCode::kBadRequest, "expected HOST:PORT, got '" + text + "'"};
  }
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 0 || port > 65535) {
    return Error{ErrorCode::kBadRequest, "bad port in '" + text + "'"};
  }
  return std::make_pair(host, static_cast<int>(port));
}

}  // namespace wf

#include <csignal>

namespace wf {
namespace {

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

int WaitForTerminationSignal() {
  sigset_t set = TerminationSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

}  // namespace wf
