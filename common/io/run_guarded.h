#pragma once

#include <exception>

namespace wf {

/// Logs an exception that escaped a task ("<what> threw: <message>"). For RunGuarded.
void LogEscapedException(const char* what, std::exception_ptr error) noexcept;

/// Runs `task`; an exception it throws is logged (LogEscapedException) and dropped, so one
/// failing task never ends the thread that runs the others (an event loop, the timer thread, an
/// executor). A template, so a loop's small lambdas are called in place, not wrapped in a
/// std::function.
template <typename F>
void RunGuarded(const char* what, F&& task) noexcept {
  try {
    task();
  } catch (...) {
    LogEscapedException(what, std::current_exception());
  }
}

}  // namespace wf
