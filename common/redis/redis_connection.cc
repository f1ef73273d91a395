#include "redis/redis_connection.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <array>

namespace wf {
namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
  const auto count = std::max<long long>(ms.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(count / 1000);
  tv.tv_usec = static_cast<suseconds_t>((count % 1000) * 1000);
  return tv;
}

constexpr std::array<std::string_view, 8> kTransientPrefixes = {
    "LOADING", "BUSY", "READONLY", "MASTERDOWN", "OOM", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"};

/// A command's arguments as hiredis's *Argv functions take them (pointers and lengths; not
/// const, as they take `const char**`).
template <typename Strings>
struct HiredisArgv {
  explicit HiredisArgv(const Strings& args) {
    argv.reserve(args.size());
    argvlen.reserve(args.size());
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      argvlen.push_back(arg.size());
    }
  }
  int count() const { return static_cast<int>(argv.size()); }

  std::vector<const char*> argv;
  std::vector<std::size_t> argvlen;
};

/// Runs a hiredis command built from argv; returns the raw reply or null on transport error.
redisReply* RunArgv(redisContext* ctx, std::span<const std::string_view> args) {
  HiredisArgv command(args);
  return static_cast<redisReply*>(
      redisCommandArgv(ctx, command.count(), command.argv.data(), command.argvlen.data()));
}

struct ReplyFree {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

}  // namespace

Error RedisServerError(std::string_view server_message) {
  for (const auto prefix : kTransientPrefixes) {
    if (server_message.substr(0, prefix.size()) == prefix) {
      return Error{ErrorCode::kUnavailable, "redis: " + std::string(server_message)};
    }
  }
  return Error{ErrorCode::kInternal, "redis: " + std::string(server_message)};
}

namespace {

/// A command's reply as Command and CommandWhile return it: an error reply becomes an Error.
Result<RedisReply> CommandResult(const redisReply* reply) {
  RedisReply out = RedisReply::FromHiredis(reply);
  if (out.IsError()) return RedisServerError(out.str);
  return out;
}

}  // namespace

void RedisConnection::ContextFree::operator()(redisContext* ctx) const { redisFree(ctx); }

RedisConnection::RedisConnection(RedisEndpoint endpoint, RedisOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {}

RedisConnection::~RedisConnection() = default;
RedisConnection::RedisConnection(RedisConnection&& other) noexcept = default;
RedisConnection& RedisConnection::operator=(RedisConnection&& other) noexcept = default;

Result<RedisConnection> RedisConnection::Connect(RedisEndpoint endpoint, RedisOptions options) {
  RedisConnection connection(std::move(endpoint), options);
  if (Status status = connection.EnsureConnected(); !status.ok()) return status.error();
  return connection;
}

Status RedisConnection::EnsureConnected() {
  if (ctx_) return Status::Ok();
  const auto now = std::chrono::steady_clock::now();
  if (now < retry_at_) {
    return Status(
        ErrorCode::kUnavailable,
        "redis " + endpoint_.Describe() + ": unreachable, next reconnect in " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(retry_at_ - now).count()) +
            " ms");
  }
  Status status = Open();
  if (status.ok()) {
    backoff_ = std::chrono::milliseconds{0};
    retry_at_ = {};
  } else {
    ++transport_failures_;
    backoff_ = backoff_.count() == 0 ? std::chrono::milliseconds{50}
                                     : std::min(backoff_ * 2, options_.max_reconnect_backoff);
    retry_at_ = std::chrono::steady_clock::now() + backoff_;
  }
  return status;
}

Status RedisConnection::Open() {
  ContextPtr ctx(redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port,
                                         ToTimeval(options_.connect_timeout)));
  if (!ctx) {
    return Status(ErrorCode::kUnavailable,
                  "redis " + endpoint_.Describe() + ": cannot allocate a context");
  }
  if (ctx->err != 0) {
    return Status(ErrorCode::kUnavailable,
                  "redis " + endpoint_.Describe() + ": connect failed: " + ctx->errstr);
  }
  // The connect timeout also bounds the handshake below; then switch to the command timeout.
  if (redisSetTimeout(ctx.get(), ToTimeval(options_.connect_timeout)) != REDIS_OK) {
    return Status(ErrorCode::kUnavailable,
                  "redis " + endpoint_.Describe() + ": cannot set socket timeout");
  }
  redisEnableKeepAlive(ctx.get());

  auto handshake = [&](std::span<const std::string_view> args, std::string_view what) -> Status {
    ReplyPtr reply(RunArgv(ctx.get(), args));
    if (!reply) {
      return Status(ErrorCode::kUnavailable, "redis " + endpoint_.Describe() + ": " +
                                                 std::string(what) + " failed: " + ctx->errstr);
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      // Server errors to AUTH/SELECT never echo the password.
      return Status(ErrorCode::kUnavailable,
                    "redis " + endpoint_.Describe() + ": " + std::string(what) +
                        " refused: " + std::string(reply->str, reply->len));
    }
    return Status::Ok();
  };
  if (!endpoint_.password.empty()) {
    Status status;
    if (endpoint_.username.empty()) {
      const std::array<std::string_view, 2> args = {"AUTH", endpoint_.password};
      status = handshake(args, "AUTH");
    } else {
      const std::array<std::string_view, 3> args = {"AUTH", endpoint_.username, endpoint_.password};
      status = handshake(args, "AUTH");
    }
    if (!status.ok()) return status;
  }
  if (endpoint_.db != 0) {
    const std::string db = std::to_string(endpoint_.db);
    const std::array<std::string_view, 2> args = {"SELECT", db};
    if (Status status = handshake(args, "SELECT"); !status.ok()) return status;
  }
  if (redisSetTimeout(ctx.get(), ToTimeval(options_.command_timeout)) != REDIS_OK) {
    return Status(ErrorCode::kUnavailable,
                  "redis " + endpoint_.Describe() + ": cannot set socket timeout");
  }
  ctx_ = std::move(ctx);
  return Status::Ok();
}

Error RedisConnection::TransportError(const char* what) {
  std::string message = "redis " + endpoint_.Describe() + ": " + what + " failed";
  if (ctx_ && ctx_->err != 0) {
    message += ": ";
    message += ctx_->errstr;
  }
  // A context that saw an I/O or protocol error cannot be used again: drop it, the next call
  // reconnects.
  ctx_.reset();
  ++transport_failures_;
  return Error{ErrorCode::kUnavailable, std::move(message)};
}

Result<RedisReply> RedisConnection::Command(std::span<const std::string_view> args) {
  if (args.empty()) return Error{ErrorCode::kBadRequest, "redis: empty command"};
  if (Status status = EnsureConnected(); !status.ok()) return status.error();
  ReplyPtr reply(RunArgv(ctx_.get(), args));
  if (!reply) return TransportError("command");
  return CommandResult(reply.get());
}

Result<RedisReply> RedisConnection::CommandWhile(std::span<const std::string_view> args,
                                                 const std::function<void()>& meanwhile) {
  Status sent =
      args.empty() ? Status(ErrorCode::kBadRequest, "redis: empty command") : EnsureConnected();
  if (sent.ok()) {
    HiredisArgv command(args);
    int done = 0;
    if (redisAppendCommandArgv(ctx_.get(), command.count(), command.argv.data(),
                               command.argvlen.data()) != REDIS_OK) {
      sent = TransportError("command");
    } else {
      // The write is blocking (bounded by the command timeout): flush it all now.
      while (done == 0) {
        if (redisBufferWrite(ctx_.get(), &done) != REDIS_OK) {
          sent = TransportError("command write");
          break;
        }
      }
    }
  }
  meanwhile();
  if (!sent.ok()) return sent.error();
  void* raw = nullptr;
  if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
    if (raw != nullptr) freeReplyObject(raw);
    return TransportError("command read");
  }
  ReplyPtr reply(static_cast<redisReply*>(raw));
  return CommandResult(reply.get());
}

Result<RedisReply> RedisConnection::Command(std::initializer_list<std::string_view> args) {
  return Command(std::span<const std::string_view>(args.begin(), args.size()));
}

Result<RedisReply> RedisConnection::Command(const std::vector<std::string>& args) {
  std::vector<std::string_view> views(args.begin(), args.end());
  return Command(std::span<const std::string_view>(views));
}

Result<std::vector<RedisReply>> RedisConnection::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  std::vector<RedisReply> replies;
  if (commands.empty()) return replies;
  for (const auto& command : commands) {
    if (command.empty()) return Error{ErrorCode::kBadRequest, "redis: empty command in pipeline"};
  }
  if (Status status = EnsureConnected(); !status.ok()) return status.error();
  for (const auto& strings : commands) {
    HiredisArgv command(strings);
    if (redisAppendCommandArgv(ctx_.get(), command.count(), command.argv.data(),
                               command.argvlen.data()) != REDIS_OK) {
      return TransportError("pipeline append");
    }
  }
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
      if (raw != nullptr) freeReplyObject(raw);
      return TransportError("pipeline read");
    }
    ReplyPtr reply(static_cast<redisReply*>(raw));
    replies.push_back(RedisReply::FromHiredis(reply.get()));
  }
  return replies;
}

}  // namespace wf
