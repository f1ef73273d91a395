#include "pg/pg_pool.h"

#include <algorithm>
#include <cctype>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <utility>
#include <vector>

namespace wf {
namespace {

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool IsUriForm(std::string_view uri) {
  return StartsWith(uri, "postgresql://") || StartsWith(uri, "postgres://");
}

/// Where each `password=` value (also `sslpassword=`) of a connection string lies: [begin, end)
/// offsets into `uri`. In a URI the value is a query parameter, ending at `&` or `#`; in the
/// key=value form it ends at whitespace, or is quoted ('...', with backslash escapes).
std::vector<std::pair<std::size_t, std::size_t>> PasswordParameterSpans(const std::string& uri) {
  const bool uri_form = IsUriForm(uri);
  const std::size_t query = uri_form ? uri.find('?') : 0;
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  if (query == std::string::npos) return spans;
  for (std::size_t key = uri.find("password=", query); key != std::string::npos;
       key = uri.find("password=", key + 1)) {
    std::size_t begin = key + 9;
    std::size_t end;
    if (uri_form) {
      end = uri.find_first_of("&#", begin);
    } else if (begin < uri.size() && uri[begin] == '\'') {
      ++begin;
      end = begin;
      while (end < uri.size() && uri[end] != '\'') end += uri[end] == '\\' ? 2 : 1;
      end = std::min(end, uri.size());
    } else {
      end = uri.find_first_of(" \t", begin);
    }
    spans.emplace_back(begin, end == std::string::npos ? uri.size() : end);
  }
  return spans;
}

/// Every password of a URI (`scheme://user:pass@host`, and `?password=...` parameters) or
/// key=value string (`password=...`), as written (still percent-encoded in a URI).
std::vector<std::string> ExtractPasswords(const std::string& uri) {
  std::vector<std::string> out;
  if (IsUriForm(uri)) {
    const std::size_t start = uri.find("://") + 3;
    // Like libpq: credentials end at the first '@' that comes before any '/'.
    const std::size_t at = uri.find_first_of("@/", start);
    if (at != std::string::npos && uri[at] == '@') {
      const std::string userinfo = uri.substr(start, at - start);
      const std::size_t colon = userinfo.find(':');
      if (colon != std::string::npos && colon + 1 < userinfo.size()) {
        out.push_back(userinfo.substr(colon + 1));
      }
    }
  }
  for (const auto& [begin, end] : PasswordParameterSpans(uri)) {
    if (end > begin) out.push_back(uri.substr(begin, end - begin));
  }
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
  // Parameter values first, from the last one back, so earlier offsets stay valid.
  const auto spans = PasswordParameterSpans(uri);
  for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
    out.replace(it->first, it->second - it->first, "***");
  }
  if (IsUriForm(out)) {
    const std::size_t start = out.find("://") + 3;
    const std::size_t at = out.find_first_of("@/", start);
    if (at != std::string::npos && out[at] == '@') {
      const std::string userinfo = out.substr(start, at - start);
      const std::size_t colon = userinfo.find(':');
      if (colon != std::string::npos) {
        out = out.substr(0, start) + userinfo.substr(0, colon) + ":***" + out.substr(at);
      }
    }
  }
  // Anywhere else it appears verbatim (e.g. repeated in another parameter).
  for (const std::string& password : ExtractPasswords(uri)) {
    ReplaceAll(out, password, "***");
    ReplaceAll(out, PercentDecode(password), "***");
  }
  return out;
}

PgPool::PgPool(const std::string& uri, PgPoolOptions options)
    : uri_(WithConnectTimeout(uri, options.connect_timeout)),
      redacted_uri_(RedactPostgresUri(uri)),
      passwords_(ExtractPasswords(uri)),
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
  for (const std::string& password : passwords_) {
    ReplaceAll(error.message, password, "***");
    ReplaceAll(error.message, PercentDecode(password), "***");
  }
  // Messages from libpq end with newlines; keep log lines single.
  std::replace(error.message.begin(), error.message.end(), '\n', ' ');
  while (!error.message.empty() && error.message.back() == ' ') error.message.pop_back();
  return error;
}

}  // namespace wf
