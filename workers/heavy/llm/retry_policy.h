#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace wf {

/// How failed LLM calls are retried: exponential backoff with jitter, at most `max_attempts`
/// attempts in all, never past the call's deadline.
struct RetryPolicy {
  int max_attempts = 4;                              ///< Attempts in all (1 = no retry).
  std::chrono::milliseconds initial_backoff{500};    ///< Base delay before the 2nd attempt.
  std::chrono::milliseconds max_backoff{8000};       ///< Cap of the exponential base.
};

/// True for upstream statuses worth another attempt: 429 (rate limited), 408 and 5xx. Pure.
bool IsRetryableHttpStatus(int status);

/// The delay before the next attempt after `attempts_made` failed ones, or nullopt when no
/// attempt is left or it could not start before `deadline`. The delay is
/// base/2 + jitter01 * base/2 with base = min(initial_backoff * 2^(attempts_made-1), max_backoff),
/// raised to `retry_after` when the server sent one. `jitter01` in [0,1] (random in production,
/// fixed in tests). Pure.
std::optional<std::chrono::milliseconds> NextRetryDelay(
    const RetryPolicy& policy, int attempts_made, std::optional<std::chrono::milliseconds> retry_after,
    std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline,
    double jitter01);

/// The delay a `Retry-After` header asks for: delta-seconds ("2") or an IMF-fixdate HTTP date
/// ("Wed, 21 Oct 2015 07:28:00 GMT", relative to `now`; a past date is 0). nullopt when the value
/// is empty or malformed. Pure.
std::optional<std::chrono::milliseconds> ParseRetryAfter(std::string_view value,
                                                         std::chrono::system_clock::time_point now);

}  // namespace wf
