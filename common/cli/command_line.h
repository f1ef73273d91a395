#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error/error.h"

namespace wf {

/// What a flag's value must be. CommandLine::Parse checks every flag's final value (from the
/// command line, the env var or the default) before it returns, so a bad value stops the program
/// before anything acts on the others (--check-config included).
enum class FlagValue {
  kText,              ///< Anything.
  kInteger,           ///< A decimal integer in [min, max].
  kHostPort,          ///< HOST:PORT (see ParseHostPort).
  kOptionalHostPort,  ///< Empty, or HOST:PORT.
  kChoice,            ///< One of `choices`.
  kHttpUrl,           ///< An http(s) URL naming a host (text/http_url.h HttpUrlProblem).
};

/// One command-line flag. A flag beats its environment variable, which beats the default.
struct FlagSpec {
  std::string name;           ///< "nats-url" for --nats-url.
  std::string env;            ///< "NATS_URL", or empty.
  std::string default_value;  ///< Used when neither flag nor env is given.
  std::string help;           ///< One line for --help.
  bool is_switch = false;     ///< Takes no value (e.g. --check-config).
  bool secret = false;  ///< Its given value is never echoed (e.g. --llm-api-key); the default is.
  FlagValue value = FlagValue::kText;
  long min = 0, max = 0;                  ///< kInteger bounds.
  std::vector<std::string> choices = {};  ///< kChoice values.
};

/// A flag whose value must be an integer in [min, max].
FlagSpec IntegerFlag(std::string name, std::string env, std::string default_value, std::string help,
                     long min, long max);
/// A flag whose value must be HOST:PORT; with `optional`, empty is allowed too (off).
FlagSpec HostPortFlag(std::string name, std::string env, std::string default_value,
                      std::string help, bool optional = false);

/// A flag whose value must be an http:// or https:// URL with a host. The value is never echoed
/// in the error (a URL may carry credentials).
FlagSpec HttpUrlFlag(std::string name, std::string env, std::string default_value,
                     std::string help);

/// The flags every binary takes: --config (WF_CONFIG), --nats-url (NATS_URL),
/// --log-level (WF_LOG_LEVEL: trace, debug, info, warn, error, critical or off), --check-config
/// (a switch: validate the config and exit; an invalid config exits 2 with its JSON path, with or
/// without it; so does any invalid flag).
std::vector<FlagSpec> CommonFlags();

/// Parsed flag values.
class Flags {
 public:
  /// The value of a declared flag ("" when unset and no default). Unknown names throw
  /// std::out_of_range (a programming error).
  const std::string& Get(const std::string& name) const { return values_.at(name); }
  bool IsSet(const std::string& name) const;
  /// The value of a flag declared with IntegerFlag, which CommandLine::Parse checked against
  /// its bounds. Other names throw std::out_of_range (a programming error).
  long Int(const std::string& name) const { return ints_.at(name); }

 private:
  friend class CommandLine;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> set_;
  std::map<std::string, long> ints_;
};

/// Parses `--name value` / `--name=value` / switches, applying env vars and defaults.
class CommandLine {
 public:
  CommandLine(std::string program, std::string summary, std::vector<FlagSpec> flags);
  /// On --help: prints usage to stdout and returns `exit_code` 0. On a bad flag or a value that
  /// is not what its FlagSpec says (from the command line or the env var): returns an error
  /// message naming the flag (the caller prints it and exits 2).
  struct Outcome {
    std::optional<Flags> flags;
    std::optional<int> exit_code;
    std::string error;
  };
  Outcome Parse(int argc, const char* const* argv) const;
  std::string Usage() const;

 private:
  std::string program_, summary_;
  std::vector<FlagSpec> flags_;
};

/// Configures spdlog: "[time] [program] [level] message" on stderr, level from a name
/// (trace, debug, info, warn, error); unknown names mean info. Messages are written through
/// EscapeForLog, so text from outside (an upstream's error body, a client's field) cannot start
/// a forged log line or send terminal escapes.
void InitLogging(const std::string& program, const std::string& level);

/// `text` for a one-line log record: CR and LF as \r and \n, the other C0 controls (tab
/// excepted) and DEL as \xNN, C1 controls (U+0080..U+009F, which some terminals obey) as
/// \u00NN; everything else, invalid UTF-8 included, unchanged.
std::string EscapeForLog(std::string_view text);

/// Splits "HOST:PORT" (IPv4 or name); error names the flag value.
Result<std::pair<std::string, int>> ParseHostPort(const std::string& text);

}  // namespace wf

namespace wf {

/// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread and every thread it starts later.
/// Call first thing in main(), before any library starts a thread.
void BlockTerminationSignals();

/// Waits for SIGTERM or SIGINT (blocked by BlockTerminationSignals) and returns its number.
int WaitForTerminationSignal();

}  // namespace wf
