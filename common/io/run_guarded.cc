#include "io/run_guarded.h"

#include <spdlog/spdlog.h>

namespace wf {

void LogEscapedException(const char* what, std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    spdlog::error("{} threw: {}", what, e.what());
  } catch (...) {
    spdlog::error("{} threw a non-std exception", what);
  }
}

}  // namespace wf
