#pragma once

#include <string>
#include <string_view>

#include "error/error.h"

namespace wf {

/// Where and how to reach one Redis server, parsed from a `redis://` URL.
/// Holds the password: never log the struct itself, log `Describe()`.
struct RedisEndpoint {
  std::string host;      ///< Host name or IP (IPv6 without brackets).
  int port = 6379;       ///< TCP port.
  std::string username;  ///< ACL user (Redis 6+); empty = the default user.
  std::string password;  ///< Empty = no AUTH.
  int db = 0;            ///< Logical database selected after connecting.

  /// `redis://host:port/db`, with `***` in place of credentials when there are any. Safe to log.
  std::string Describe() const;
};

/// Parses `redis://[[user]:password@]host[:port][/db]` (user and password percent-decoded,
/// IPv6 hosts in brackets, port defaults to 6379, db to 0). Pure; any thread.
/// Errors: kBadRequest with a message that never contains the credentials (nor any part of
/// the text before the last '@').
Result<RedisEndpoint> ParseRedisUrl(std::string_view url);

}  // namespace wf
