#include "llm/retry_policy.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <string>

namespace wf {

bool IsRetryableHttpStatus(int status) {
  return status == 429 || status == 408 || (status >= 500 && status <= 599);
}

std::optional<std::chrono::milliseconds> NextRetryDelay(
    const RetryPolicy& policy, int attempts_made, std::optional<std::chrono::milliseconds> retry_after,
    std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline,
    double jitter01) {
  if (attempts_made < 1 || attempts_made >= policy.max_attempts) return std::nullopt;
  jitter01 = std::clamp(jitter01, 0.0, 1.0);
  long long base = std::max<long long>(policy.initial_backoff.count(), 0);
  const long long cap = std::max<long long>(policy.max_backoff.count(), 0);
  for (int i = 1; i < attempts_made && base < cap; ++i) base *= 2;
  base = std::min(base, cap);
  long long delay = base / 2 + static_cast<long long>(jitter01 * static_cast<double>(base - base / 2));
  if (retry_after && retry_after->count() > delay) delay = retry_after->count();
  const auto delay_ms = std::chrono::milliseconds(delay);
  if (deadline != std::chrono::steady_clock::time_point::max() && now + delay_ms >= deadline) {
    return std::nullopt;
  }
  return delay_ms;
}

std::optional<std::chrono::milliseconds> ParseRetryAfter(std::string_view value,
                                                         std::chrono::system_clock::time_point now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty() || value.size() > 64) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    long long seconds = 0;
    for (char c : value) {
      seconds = seconds * 10 + (c - '0');
      if (seconds > 86400LL * 365) return std::chrono::hours(24 * 365);  // absurd: cap
    }
    return std::chrono::seconds(seconds);
  }
  std::tm tm{};
  const std::string text(value);
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const std::time_t when = timegm(&tm);
  if (when == static_cast<std::time_t>(-1)) return std::nullopt;
  const auto delta = std::chrono::system_clock::from_time_t(when) - now;
  if (delta.count() <= 0) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(delta);
}

}  // namespace wf
