#pragma once

#include <string>
#include <vector>

#include "error/error.h"
#include "pg/pg_pool.h"

namespace wf {

/// One schema step: a file of schemas/sql/ (name, e.g. "001_sessions.sql", and its SQL text).
struct Migration {
  std::string name;
  std::string sql;
};

/// The files of schemas/sql/*.sql in lexical order, compiled in at build time.
const std::vector<Migration>& BundledMigrations();

/// Applies, in the given order, each migration not yet recorded in table `schema_migrations`,
/// all in one transaction that first takes a transaction-scoped advisory lock, so several
/// processes starting at once apply each step exactly once and the others wait and then see it
/// done. Blocks (network). Errors: kUnavailable (PostgreSQL unreachable), kInternal (a step's
/// SQL failed: nothing of this call is applied; the message names the file).
Status ApplyMigrations(PgPool& pool, const std::vector<Migration>& migrations);

}  // namespace wf
