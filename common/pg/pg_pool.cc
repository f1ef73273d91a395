#include "pg/pg_pool.h"

#include <algorithm>
#include <cctype>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <string_view>
#include <vector>

namespace wf {
namespace {

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool IsUriForm(std::string_view uri) {
  return StartsWith(uri, "postgresql://") || StartsWith(uri, "postgres://");
}

bool IsSecretKey(std::string_view key) { return key == "password" || key == "sslpassword"; }

std::string PercentDecode(const std::string& in);

/// Every secret of a connection string as libpq reads it: the password of a URI's userinfo and
/// the values of `password` / `sslpassword` in a URI's query (`?password=...`, which libpq
/// accepts as well) or in a key=value string (spaces around '=' allowed, values quoted or with
/// backslash escapes). Each both as written and decoded, so either form can be found in text.
std::vector<std::string> ExtractSecrets(const std::string& uri) {
  std::vector<std::string> raw;
  std::vector<std::string> decoded;
  if (IsUriForm(uri)) {
    const std::size_t start = uri.find("://") + 3;
    const std::size_t authority_end = uri.find_first_of("/?", start);
    const std::string authority = uri.substr(
        start, authority_end == std::string::npos ? std::string::npos : authority_end - start);
    if (const std::size_t at = authority.rfind('@'); at != std::string::npos) {
      const std::string userinfo = authority.substr(0, at);
      if (const std::size_t colon = userinfo.find(':'); colon != std::string::npos) {
        raw.push_back(userinfo.substr(colon + 1));
      }
    }
    if (const std::size_t query = uri.find('?', start); query != std::string::npos) {
      std::size_t at = query + 1;
      while (at <= uri.size()) {
        std::size_t amp = uri.find('&', at);
        if (amp == std::string::npos) amp = uri.size();
        const std::string pair = uri.substr(at, amp - at);
        const std::size_t eq = pair.find('=');
        if (eq != std::string::npos && IsSecretKey(PercentDecode(pair.substr(0, eq)))) {
          raw.push_back(pair.substr(eq + 1));
        }
        at = amp + 1;
      }
    }
    for (const std::string& r : raw) decoded.push_back(PercentDecode(r));
  } else {
    // libpq's conninfo grammar: key [spaces] = [spaces] value, value quoted or not.
    std::size_t i = 0;
    const auto space = [&](std::size_t k) {
      return k < uri.size() && std::isspace(static_cast<unsigned char>(uri[k])) != 0;
    };
    while (i < uri.size()) {
      while (space(i)) ++i;
      const std::size_t key_start = i;
      while (i < uri.size() && uri[i] != '=' && !space(i)) ++i;
      const std::string key = uri.substr(key_start, i - key_start);
      while (space(i)) ++i;
      if (i >= uri.size() || uri[i] != '=') break;
      ++i;
      while (space(i)) ++i;
      const std::size_t value_start = i;
      std::string value;
      if (i < uri.size() && uri[i] == '\'') {
        for (++i; i < uri.size() && uri[i] != '\''; ++i) {
          if (uri[i] == '\\' && i + 1 < uri.size()) ++i;
          value.push_back(uri[i]);
        }
        if (i < uri.size()) ++i;  // closing quote
      } else {
        for (; i < uri.size() && !space(i); ++i) {
          if (uri[i] == '\\' && i + 1 < uri.size()) ++i;
          value.push_back(uri[i]);
        }
      }
      if (IsSecretKey(key)) {
        raw.push_back(uri.substr(value_start, i - value_start));
        decoded.push_back(value);
      }
    }
  }
  std::vector<std::string> out;
  for (auto* list : {&raw, &decoded}) {
    for (std::string& secret : *list) {
      if (!secret.empty() && std::find(out.begin(), out.end(), secret) == out.end()) {
        out.push_back(std::move(secret));
      }
    }
  }
  // Longest first, so a secret that contains another is replaced whole.
  std::sort(out.begin(), out.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

std::string PercentDecode(const std::string& in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() && std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(in.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

void ReplaceAll(std::string& text, const std::string& needle, const std::string& with) {
  if (needle.empty()) return;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + with.size())) {
    text.replace(at, needle.size(), with);
  }
}

/// Adds connect_timeout unless the caller set one.
std::string WithConnectTimeout(const std::string& uri, std::chrono::milliseconds timeout) {
  if (uri.find("connect_timeout") != std::string::npos) return uri;
  // libpq counts whole seconds and treats anything below 2 as 2.
  const long long seconds = std::max<long long>(2, (timeout.count() + 999) / 1000);
  if (IsUriForm(uri)) {
    return uri + (uri.find('?') == std::string::npos ? "?" : "&") +
           "connect_timeout=" + std::to_string(seconds);
  }
  return uri + " connect_timeout=" + std::to_string(seconds);
}

}  // namespace

std::string RedactPostgresUri(const std::string& uri) {
  std::string out = uri;
  if (IsUriForm(uri)) {
    const std::size_t start = uri.find("://") + 3;
    const std::size_t authority_end = uri.find_first_of("/?", start);
    const std::size_t at =
        uri.rfind('@', authority_end == std::string::npos ? std::string::npos : authority_end);
    if (at != std::string::npos && at >= start) {
      // The user name goes too (as in RedisEndpoint::Describe): host, port and database are
      // what an operator needs to find the server.
      out = uri.substr(0, start) + "***" + uri.substr(at);
    }
  }
  for (const std::string& secret : ExtractSecrets(uri)) ReplaceAll(out, secret, "***");
  return out;
}

PgPool::PgPool(const std::string& uri, PgPoolOptions options)
    : uri_(WithConnectTimeout(uri, options.connect_timeout)),
      redacted_uri_(RedactPostgresUri(uri)),
      secrets_(ExtractSecrets(uri)),
      options_(options) {}

PgPool::~PgPool() = default;

PgPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Return(std::move(connection_), broken_);
}

Result<std::unique_ptr<PgPool>> PgPool::Connect(const std::string& uri, PgPoolOptions options) {
  if (options.size == 0) return Error{ErrorCode::kBadRequest, "postgres pool size must be >= 1"};
  std::unique_ptr<PgPool> pool(new PgPool(uri, options));
  {
    Result<Lease> lease = pool->Borrow();
    if (!lease) return std::move(lease).error();
  }
  return pool;
}

Result<std::unique_ptr<pqxx::connection>> PgPool::Open() {
  bool broken = false;
  try {
    auto connection = std::make_unique<pqxx::connection>(uri_);
    // set_variable (not a plain SET) so that libpqxx re-applies it if it ever reconnects this
    // connection by itself.
    connection->set_variable("statement_timeout",
                             std::to_string(options_.statement_timeout.count()));
    return connection;
  } catch (...) {
    Error error = TranslateCurrentException(broken);
    error.code = ErrorCode::kUnavailable;
    error.message = "postgres " + redacted_uri_ + ": connect failed: " + error.message;
    return error;
  }
}

Result<PgPool::Lease> PgPool::Borrow() {
  std::unique_lock lock(mutex_);
  if (!available_.wait_for(lock, options_.borrow_timeout,
                           [&] { return !idle_.empty() || open_ < options_.size; })) {
    return Error{ErrorCode::kUnavailable, "postgres: no free connection within " +
                                              std::to_string(options_.borrow_timeout.count()) +
                                              " ms"};
  }
  if (!idle_.empty()) {
    std::unique_ptr<pqxx::connection> connection = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(connection));
  }
  ++open_;
  lock.unlock();
  Result<std::unique_ptr<pqxx::connection>> opened = Open();
  if (!opened) {
    lock.lock();
    --open_;
    lock.unlock();
    available_.notify_one();
    return std::move(opened).error();
  }
  return Lease(this, std::move(*opened));
}

void PgPool::Return(std::unique_ptr<pqxx::connection> connection, bool broken) {
  if (broken || !connection || !connection->is_open()) {
    // The idle ones most likely lost their server too (restart, failover): close them all so
    // the next borrower connects afresh instead of meeting a dead connection.
    std::vector<std::unique_ptr<pqxx::connection>> stale;
    {
      std::lock_guard lock(mutex_);
      stale.swap(idle_);
      open_ -= 1 + stale.size();
    }
    stale.clear();  // Closes them outside the lock.
    connection.reset();
  } else {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(connection));
  }
  available_.notify_one();
}

bool PgPool::Ping() {
  auto result = Run([](pqxx::connection& connection) {
    pqxx::nontransaction tx(connection);
    tx.exec("SELECT 1");
    return true;
  });
  return result.ok();
}

Error PgPool::TranslateCurrentException(bool& broken) const {
  Error error{ErrorCode::kInternal, ""};
  try {
    throw;
  } catch (const pqxx::broken_connection& e) {
    broken = true;
    error = {ErrorCode::kUnavailable, std::string("postgres connection lost: ") + e.what()};
  } catch (const pqxx::in_doubt_error& e) {
    broken = true;
    error = {ErrorCode::kUnavailable, std::string("postgres commit outcome unknown: ") + e.what()};
  } catch (const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    if (state == "57014") {
      error = {ErrorCode::kUnavailable, "postgres statement timeout"};
    } else if (StartsWith(state, "08") || StartsWith(state, "57P") || StartsWith(state, "53")) {
      // Connection exception, admin/crash shutdown, insufficient resources.
      broken = true;
      error = {ErrorCode::kUnavailable, std::string("postgres unavailable: ") + e.what()};
    } else if (state == "40001" || state == "40P01") {
      error = {ErrorCode::kUnavailable, std::string("postgres transaction aborted: ") + e.what()};
    } else if (StartsWith(state, "22")) {
      // Data exception (a value out of range, an invalid text): the statement's input is
      // refused, and running it again cannot change that.
      error = {ErrorCode::kBadRequest, "postgres refused a value (" + state + "): " + e.what()};
    } else {
      error = {ErrorCode::kInternal, "postgres error " + state + ": " + e.what()};
    }
  } catch (const pqxx::failure& e) {
    error = {ErrorCode::kUnavailable, std::string("postgres failure: ") + e.what()};
  } catch (const std::exception& e) {
    error = {ErrorCode::kInternal, std::string("postgres: ") + e.what()};
  } catch (...) {
    error = {ErrorCode::kInternal, "postgres: unknown exception"};
  }
  // libpq may echo parts of the connection string; never let the password through.
  for (const std::string& secret : secrets_) ReplaceAll(error.message, secret, "***");
  // Messages from libpq end with newlines; keep log lines single.
  std::replace(error.message.begin(), error.message.end(), '\n', ' ');
  while (!error.message.empty() && error.message.back() == ' ') error.message.pop_back();
  return error;
}

}  // namespace wf
