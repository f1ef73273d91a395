#include "redis/redis_pool.h"

namespace wf {

RedisPool::Lease& RedisPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) {
      pool_->Return(connection_, connection_->transport_failures() != failures_);
    }
    pool_ = other.pool_;
    connection_ = other.connection_;
    failures_ = other.failures_;
    other.pool_ = nullptr;
    other.connection_ = nullptr;
  }
  return *this;
}

RedisPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Return(connection_, connection_->transport_failures() != failures_);
}

RedisPool::RedisPool(RedisEndpoint endpoint, RedisPoolOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {
  all_.reserve(options_.size);
  for (std::size_t i = 0; i < options_.size; ++i) {
    all_.push_back(std::make_unique<RedisConnection>(endpoint_, options_.connection));
  }
  // Reverse order so that connection 0 (opened by Connect) is handed out first.
  for (auto it = all_.rbegin(); it != all_.rend(); ++it) idle_.push_back(it->get());
}

Result<std::unique_ptr<RedisPool>> RedisPool::Connect(const std::string& url,
                                                      RedisPoolOptions options) {
  if (options.size == 0) return Error{ErrorCode::kBadRequest, "redis pool size must be >= 1"};
  Result<RedisEndpoint> endpoint = ParseRedisUrl(url);
  if (!endpoint) return std::move(endpoint).error();
  std::unique_ptr<RedisPool> pool(new RedisPool(std::move(*endpoint), options));
  {
    Result<Lease> lease = pool->Borrow();
    if (!lease) return std::move(lease).error();
    if (Status status = (*lease)->EnsureConnected(); !status.ok()) return status.error();
  }
  return pool;
}

Result<RedisPool::Lease> RedisPool::Borrow() {
  std::unique_lock lock(mutex_);
  if (!available_.wait_for(lock, options_.borrow_timeout, [&] { return !idle_.empty(); })) {
    return Error{ErrorCode::kUnavailable,
                 "redis " + endpoint_.Describe() + ": no free connection within " +
                     std::to_string(options_.borrow_timeout.count()) + " ms"};
  }
  RedisConnection* connection = idle_.back();
  idle_.pop_back();
  return Lease(this, connection);
}

void RedisPool::Return(RedisConnection* connection, bool failed) {
  {
    std::lock_guard lock(mutex_);
    if (failed) {
      for (RedisConnection* idle : idle_) idle->Disconnect();
    }
    // Open connections go on top so they are reused first; closed ones wait at the bottom.
    if (connection->connected()) {
      idle_.push_back(connection);
    } else {
      idle_.insert(idle_.begin(), connection);
    }
  }
  available_.notify_one();
}

}  // namespace wf
