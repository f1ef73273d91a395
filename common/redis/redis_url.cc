#include "redis/redis_url.h"

#include <charconv>

#include "text/hex.h"

namespace wf {
namespace {

constexpr std::string_view kScheme = "redis://";

Error UrlError(std::string_view shown_part, std::string_view what) {
  std::string message = "invalid redis url";
  if (!shown_part.empty()) {
    message += " (host part '";
    message += shown_part.substr(0, 100);
    message += "')";
  }
  message += ": ";
  message += what;
  return Error{ErrorCode::kBadRequest, std::move(message)};
}

/// Percent-decodes credentials; false on a malformed escape.
bool PercentDecode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = HexDigitValue(in[i + 1]);
    const int lo = HexDigitValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

bool ParseInt(std::string_view text, int min, int max, int& out) {
  if (text.empty() || text.size() > 9) return false;
  int value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  if (value < min || value > max) return false;
  out = value;
  return true;
}

bool ValidHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

}  // namespace

std::string RedisEndpoint::Describe() const {
  std::string out(kScheme);
  if (!username.empty() || !password.empty()) out += "***@";
  if (host.find(':') != std::string::npos) {
    out += "[" + host + "]";
  } else {
    out += host;
  }
  out += ":" + std::to_string(port) + "/" + std::to_string(db);
  return out;
}

Result<RedisEndpoint> ParseRedisUrl(std::string_view url) {
  if (url.substr(0, 9) == "rediss://") {
    return UrlError({}, "TLS (rediss://) is not supported");
  }
  if (url.substr(0, kScheme.size()) != kScheme) {
    return UrlError({}, "must start with redis://");
  }
  std::string_view rest = url.substr(kScheme.size());
  RedisEndpoint endpoint;

  // Everything before the last '@' is credentials: a password may hold '/', ':' or '@'
  // unencoded, so nothing before it is ever echoed in an error.
  const std::size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const std::size_t colon = userinfo.find(':');
    const std::string_view user = userinfo.substr(0, colon);
    const std::string_view pass =
        colon == std::string_view::npos ? std::string_view{} : userinfo.substr(colon + 1);
    if (colon == std::string_view::npos) {
      // `redis://secret@host`: by long convention the lone field is the password.
      if (!PercentDecode(user, endpoint.password)) {
        return UrlError(rest, "malformed percent-escape in the credentials");
      }
    } else if (!PercentDecode(user, endpoint.username) || !PercentDecode(pass, endpoint.password)) {
      return UrlError(rest, "malformed percent-escape in the credentials");
    }
  }

  if (const std::size_t query = rest.find_first_of("?#"); query != std::string_view::npos) {
    // Only the part before it is shown: a query is where a password is often put
    // (`?password=...`, as libpq and other clients take it).
    return UrlError(rest.substr(0, query), "query and fragment are not supported");
  }
  std::string_view authority = rest;
  std::string_view path;
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    path = rest.substr(slash + 1);
  }

  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return UrlError(rest, "unterminated '[' in host");
    endpoint.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return UrlError(rest, "unexpected text after ']'");
      port_text = after.substr(1);
      if (port_text.empty()) return UrlError(rest, "empty port");
    }
    for (char c : endpoint.host) {
      if (!(HexDigitValue(c) >= 0 || c == ':' || c == '.')) {
        return UrlError(rest, "invalid IPv6 address");
      }
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    endpoint.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return UrlError(rest, "empty port");
    }
    for (char c : endpoint.host) {
      if (!ValidHostChar(c)) return UrlError(rest, "invalid character in host");
    }
  }
  if (endpoint.host.empty()) return UrlError(rest, "missing host");
  if (endpoint.host.size() > 253) return UrlError({}, "host too long");
  if (!port_text.empty() && !ParseInt(port_text, 1, 65535, endpoint.port)) {
    return UrlError(rest, "port must be a number in 1..65535");
  }
  if (!path.empty() && !ParseInt(path, 0, 1 << 20, endpoint.db)) {
    return UrlError(rest, "database must be a non-negative number");
  }
  return endpoint;
}

}  // namespace wf
