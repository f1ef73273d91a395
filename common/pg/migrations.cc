#include "pg/migrations.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <pqxx/transaction>

namespace wf {
namespace {

/// Key of the advisory lock that serialises schema changes (arbitrary, fixed: "wfschema").
constexpr long long kMigrationLockKey = 0x7766736368656d61LL;

}  // namespace

Status ApplyMigrations(PgPool& pool, const std::vector<Migration>& migrations) {
  auto applied = pool.Run(
      [&](pqxx::connection& connection) -> Result<std::vector<std::string>> {
        std::vector<std::string> newly_applied;
        pqxx::work tx(connection);
        tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
        tx.exec(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())");
        for (const Migration& migration : migrations) {
          const pqxx::result done =
              tx.exec_params("SELECT 1 FROM schema_migrations WHERE name = $1", migration.name);
          if (!done.empty()) continue;
          try {
            tx.exec(migration.sql);
          } catch (const pqxx::sql_error& e) {
            std::string reason = e.what();
            std::replace(reason.begin(), reason.end(), '\n', ' ');
            return Error{ErrorCode::kInternal,
                         "schema migration " + migration.name + " failed: " + reason};
          }
          tx.exec_params("INSERT INTO schema_migrations (name) VALUES ($1)", migration.name);
          newly_applied.push_back(migration.name);
        }
        tx.commit();
        return newly_applied;
      },
      PgRetry::kIdempotent);
  if (!applied) return applied.error();
  for (const std::string& name : *applied) spdlog::info("applied schema migration {}", name);
  return Status::Ok();
}

}  // namespace wf
