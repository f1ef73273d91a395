#pragma once

#include <string>
#include <vector>

struct redisReply;

namespace wf {

/// An owned copy of one Redis reply (hiredis' redisReply is freed right after conversion).
struct RedisReply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kError };

  Type type = Type::kNil;
  std::string str;                   ///< kString, kStatus and kError.
  long long integer = 0;             ///< kInteger.
  std::vector<RedisReply> elements;  ///< kArray.

  bool IsNil() const { return type == Type::kNil; }
  bool IsError() const { return type == Type::kError; }

  /// Deep copy of a hiredis reply; null becomes kNil. Any thread.
  static RedisReply FromHiredis(const redisReply* reply);
};

}  // namespace wf
