#include "cli/command_line.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "text/http_url.h"

namespace wf {

std::vector<FlagSpec> CommonFlags() {
  FlagSpec log_level{"log-level", "WF_LOG_LEVEL", "info", "log level"};
  log_level.value = FlagValue::kChoice;
  log_level.choices = {"trace", "debug", "info", "warn", "warning", "error", "critical", "off"};
  return {
      {"config", "WF_CONFIG", "config/workflow_config.json", "workflow configuration file"},
      {"nats-url", "NATS_URL", "nats://127.0.0.1:4222", "NATS server URL"},
      std::move(log_level),
      {"check-config", "", "", "validate the config, print what it holds and exit", true},
  };
}

FlagSpec IntegerFlag(std::string name, std::string env, std::string default_value, std::string help,
                     long min, long max) {
  FlagSpec spec{std::move(name), std::move(env), std::move(default_value), std::move(help)};
  spec.value = FlagValue::kInteger;
  spec.min = min;
  spec.max = max;
  return spec;
}

FlagSpec HostPortFlag(std::string name, std::string env, std::string default_value,
                      std::string help, bool optional) {
  FlagSpec spec{std::move(name), std::move(env), std::move(default_value), std::move(help)};
  spec.value = optional ? FlagValue::kOptionalHostPort : FlagValue::kHostPort;
  return spec;
}

FlagSpec HttpUrlFlag(std::string name, std::string env, std::string default_value,
                     std::string help) {
  FlagSpec spec{std::move(name), std::move(env), std::move(default_value), std::move(help)};
  spec.value = FlagValue::kHttpUrl;
  return spec;
}

namespace {

/// Empty when `value` is what `spec` asks for, else why not (without the flag's name).
std::string ValueProblem(const FlagSpec& spec, const std::string& value) {
  switch (spec.value) {
    case FlagValue::kText:
      return {};
    case FlagValue::kInteger: {
      char* end = nullptr;
      errno = 0;
      const long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno == ERANGE || v < spec.min || v > spec.max) {
        return "expected an integer in [" + std::to_string(spec.min) + ", " +
               std::to_string(spec.max) + "], got '" + value + "'";
      }
      return {};
    }
    case FlagValue::kOptionalHostPort:
      if (value.empty()) return {};
      [[fallthrough]];
    case FlagValue::kHostPort: {
      auto parsed = ParseHostPort(value);
      return parsed.ok() ? std::string() : parsed.error().message;
    }
    case FlagValue::kChoice: {
      std::string all;
      for (const auto& choice : spec.choices) {
        if (choice == value) return {};
        all.append(all.empty() ? "" : ", ").append(choice);
      }
      return "expected one of " + all + ", got '" + value + "'";
    }
    case FlagValue::kHttpUrl:
      return HttpUrlProblem(value).empty()
                 ? std::string()
                 : std::string("expected an http:// or https:// URL with a host");
  }
  return {};
}

}  // namespace

bool Flags::IsSet(const std::string& name) const {
  auto it = set_.find(name);
  return it != set_.end() && it->second;
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
    // A built-in default is never a secret (a secret flag only hides what it is given).
    if (!f.default_value.empty()) out << " [default: " << f.default_value << "]";
    switch (f.value) {
      case FlagValue::kInteger:
        out << " [range: " << f.min << ".." << f.max << "]";
        break;
      case FlagValue::kHostPort:
        out << " [HOST:PORT]";
        break;
      case FlagValue::kOptionalHostPort:
        out << " [HOST:PORT, or empty: off]";
        break;
      case FlagValue::kChoice: {
        out << " [one of:";
        for (const auto& choice : f.choices) out << " " << choice;
        out << "]";
        break;
      }
      case FlagValue::kHttpUrl:
        out << " [http:// or https:// URL]";
        break;
      case FlagValue::kText:
        break;
    }
    out << "\n";
  }
  return out.str();
}

CommandLine::Outcome CommandLine::Parse(int argc, const char* const* argv) const {
  Outcome outcome;
  Flags flags;
  std::vector<std::string> from_command_line;
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
    from_command_line.push_back(name);
  }
  // Every value, before the program acts on any of them (--check-config included).
  for (const auto& f : flags_) {
    const std::string problem = ValueProblem(f, flags.values_[f.name]);
    if (problem.empty()) continue;
    const bool from_env = !f.env.empty() && flags.set_[f.name] &&
                          std::find(from_command_line.begin(), from_command_line.end(), f.name) ==
                              from_command_line.end();
    outcome.error = "--" + f.name + (from_env ? " (env " + f.env + ")" : std::string()) + ": " +
                    (f.secret ? std::string("invalid value") : problem);
    return outcome;
  }
  for (const auto& f : flags_) {
    if (f.value == FlagValue::kInteger) {
      flags.ints_[f.name] = std::strtol(flags.values_[f.name].c_str(), nullptr, 10);
    }
  }
  outcome.flags = std::move(flags);
  return outcome;
}

namespace {

/// Appends `text` to `out` as EscapeForLog returns it.
template <typename Buffer>
void AppendEscaped(std::string_view text, Buffer& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t clean = 0;  // start of the run not yet copied
  auto flush = [&](std::size_t end) { out.append(text.data() + clean, text.data() + end); };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != 0x7f && c != 0xc2) continue;
    if (c == '\t') continue;
    if (c == 0xc2) {
      if (i + 1 >= text.size()) continue;
      const auto next = static_cast<unsigned char>(text[i + 1]);
      if (next < 0x80 || next > 0x9f) continue;
      flush(i);
      const char esc[] = {'\\', 'u', '0', '0', kHex[next >> 4], kHex[next & 15]};
      out.append(esc, esc + sizeof esc);
      clean = i + 2;
      ++i;
      continue;
    }
    flush(i);
    if (c == '\n') {
      out.append("\\n", "\\n" + 2);
    } else if (c == '\r') {
      out.append("\\r", "\\r" + 2);
    } else {
      const char esc[] = {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
      out.append(esc, esc + sizeof esc);
    }
    clean = i + 1;
  }
  flush(text.size());
}

/// The pattern flag %* : the message, escaped for one log line.
class EscapedMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*time*/,
              spdlog::memory_buf_t& dest) override {
    AppendEscaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessageFlag>();
  }
};

}  // namespace

std::string EscapeForLog(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  struct StringBuffer {
    std::string& s;
    void append(const char* begin, const char* end) { s.append(begin, end); }
  } buffer{out};
  AppendEscaped(text, buffer);
  return out;
}

void InitLogging(const std::string& program, const std::string& level) {
  auto logger = spdlog::stderr_color_mt(program);
  spdlog::set_default_logger(logger);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<EscapedMessageFlag>('*').set_pattern(
      "[%Y-%m-%dT%H:%M:%S.%e] [%n] [%^%l%$] %*");
  spdlog::set_formatter(std::move(formatter));
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
