#include "cli/config_step.h"

#include <spdlog/spdlog.h>

#include <iostream>

namespace wf {

std::optional<int> LoadConfigStep(const Flags& flags, const std::string& program,
                                  std::shared_ptr<const Config>* out) {
  auto config = LoadConfigFile(flags.Get("config"));
  if (!config.ok()) {
    std::cerr << program << ": invalid config: " << config.error().message << "\n";
    return 2;
  }
  if (flags.IsSet("check-config")) {
    std::cout << "config OK: " << ConfigSummary(**config) << "\n";
    return 0;
  }
  for (const std::string& warning : (*config)->warnings) {
    spdlog::warn("config {}: {}", flags.Get("config"), warning);
  }
  *out = std::move(config).value();
  return std::nullopt;
}

}  // namespace wf
