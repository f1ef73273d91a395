#pragma once

#include <memory>
#include <optional>
#include <string>

#include "cli/command_line.h"
#include "config/config.h"

namespace wf {

/// The config step of every binary's main(), after the flags are parsed and logging is set up:
/// loads `--config`. Returns the exit code when main() should stop: 2 after printing
/// "<program>: invalid config: <json path>: <reason>" on stderr, 0 after printing
/// "config OK: <summary>" on stdout for `--check-config`. Otherwise stores the config in `*out`,
/// logs each of its warnings (spdlog warn, so a running service shows what `--check-config`
/// would) and returns nullopt.
std::optional<int> LoadConfigStep(const Flags& flags, const std::string& program,
                                  std::shared_ptr<const Config>* out);

}  // namespace wf
