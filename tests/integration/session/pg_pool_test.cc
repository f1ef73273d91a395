// PgPool and ApplyMigrations against a real PostgreSQL 15.
#include "pg/pg_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pg/migrations.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;

class PgPoolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new testing::PostgresServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static testing::PostgresServer* server_;

  std::unique_ptr<PgPool> Pool(PgPoolOptions options = {}) {
    auto pool = PgPool::Connect(server_->url(), options);
    EXPECT_TRUE(pool.ok()) << pool.error().message;
    return pool.ok() ? std::move(*pool) : nullptr;
  }
};
testing::PostgresServer* PgPoolTest::server_ = nullptr;

TEST_F(PgPoolTest, RunsQueries) {
  auto pool = Pool();
  ASSERT_TRUE(pool);
  auto sum = pool->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    return tx.exec_params1("SELECT $1::int + $2::int", 40, 2)[0].as<int>();
  });
  ASSERT_TRUE(sum.ok()) << sum.error().message;
  EXPECT_EQ(*sum, 42);
  EXPECT_TRUE(pool->Ping());
}

// A password given as a URI query parameter (which libpq accepts) used to be logged as written:
// Describe() is the startup log line, and a failed connect's error message goes to stderr.
TEST_F(PgPoolTest, APasswordInTheUriQueryIsNeverShown) {
  const std::string secret = "Query-Pa55word";
  auto pool = PgPool::Connect(server_->url() + "?password=" + secret, {});
  ASSERT_TRUE(pool.ok()) << pool.error().message;
  EXPECT_EQ((*pool)->Describe().find(secret), std::string::npos) << (*pool)->Describe();
  EXPECT_TRUE((*pool)->Ping());

  // Nothing listens on this port: the connect error names the server (host and port), not the
  // password or the user.
  const int closed = testing::FreePort();
  PgPoolOptions options;
  options.connect_timeout = milliseconds(2000);
  auto failed = PgPool::Connect(
      "postgresql://postgres@127.0.0.1:" + std::to_string(closed) + "/postgres?password=" + secret,
      options);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(failed.error().message.find(std::to_string(closed)), std::string::npos)
      << failed.error().message;
  EXPECT_EQ(failed.error().message.find(secret), std::string::npos) << failed.error().message;
  EXPECT_NE(failed.error().message.find("postgresql://***@127.0.0.1:"), std::string::npos)
      << failed.error().message;
  EXPECT_EQ(failed.error().message.find("postgres@"), std::string::npos) << failed.error().message;
}

TEST_F(PgPoolTest, SqlErrorsAreInternalAndKeepThePoolUsable) {
  auto pool = Pool();
  ASSERT_TRUE(pool);
  auto bad = pool->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    tx.exec("SELECT * FROM no_such_table");
    return 0;
  });
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInternal);
  EXPECT_NE(bad.error().message.find("no_such_table"), std::string::npos);
  EXPECT_TRUE(pool->Ping());
}

// A value the database cannot hold is the caller's input, refused for good: kBadRequest, so a
// store does not retry it forever.
TEST_F(PgPoolTest, DataExceptionsAreBadRequests) {
  auto pool = Pool();
  ASSERT_TRUE(pool);
  auto bad = pool->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    tx.exec("SELECT timestamptz 'epoch' + 10000000000000000 * interval '1 ms'");
    return 0;
  });
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kBadRequest);
  EXPECT_NE(bad.error().message.find("22008"), std::string::npos) << bad.error().message;
  EXPECT_TRUE(pool->Ping());
}

TEST_F(PgPoolTest, StatementTimeoutIsUnavailable) {
  PgPoolOptions options;
  options.statement_timeout = milliseconds(100);
  auto pool = Pool(options);
  ASSERT_TRUE(pool);
  auto slow = pool->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    tx.exec("SELECT pg_sleep(5)");
    return 0;
  });
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(slow.error().message.find("timeout"), std::string::npos) << slow.error().message;
  EXPECT_TRUE(pool->Ping());
}

TEST_F(PgPoolTest, ReplacesABrokenConnection) {
  PgPoolOptions options;
  options.size = 1;
  auto pool = Pool(options);
  ASSERT_TRUE(pool);
  auto pid = pool->Run([](pqxx::connection& connection) { return connection.backendpid(); });
  ASSERT_TRUE(pid.ok());
  // Kill the pooled connection's backend from another connection.
  {
    pqxx::connection admin(server_->url());
    pqxx::work tx(admin);
    tx.exec_params("SELECT pg_terminate_backend($1)", *pid);
    tx.commit();
  }
  // An idempotent run retries once on a fresh connection.
  auto again = pool->Run(
      [](pqxx::connection& connection) {
        pqxx::work tx(connection);
        return tx.exec1("SELECT 7")[0].as<int>();
      },
      PgRetry::kIdempotent);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, 7);
  auto new_pid = pool->Run([](pqxx::connection& connection) { return connection.backendpid(); });
  ASSERT_TRUE(new_pid.ok());
  EXPECT_NE(*new_pid, *pid);
}

TEST_F(PgPoolTest, BrokenConnectionWithoutRetryIsUnavailableThenRecovers) {
  PgPoolOptions options;
  options.size = 1;
  auto pool = Pool(options);
  ASSERT_TRUE(pool);
  auto pid = pool->Run([](pqxx::connection& connection) { return connection.backendpid(); });
  ASSERT_TRUE(pid.ok());
  {
    pqxx::connection admin(server_->url());
    pqxx::work tx(admin);
    tx.exec_params("SELECT pg_terminate_backend($1)", *pid);
    tx.commit();
  }
  auto failed = pool->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    return tx.exec1("SELECT 1")[0].as<int>();
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(pool->Ping());
}

TEST_F(PgPoolTest, AfterAllBackendsDieOneRetrySucceeds) {
  PgPoolOptions options;
  options.size = 3;
  auto pool = Pool(options);
  ASSERT_TRUE(pool);
  {
    std::vector<PgPool::Lease> leases;  // Open all three.
    for (int i = 0; i < 3; ++i) {
      auto lease = pool->Borrow();
      ASSERT_TRUE(lease.ok());
      leases.push_back(std::move(*lease));
    }
  }
  {
    pqxx::connection admin(server_->url());
    pqxx::work tx(admin);
    tx.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'");
    tx.commit();
  }
  auto value = pool->Run(
      [](pqxx::connection& connection) {
        pqxx::work tx(connection);
        return tx.exec1("SELECT 3")[0].as<int>();
      },
      PgRetry::kIdempotent);
  ASSERT_TRUE(value.ok()) << value.error().message;
  EXPECT_EQ(*value, 3);
}

TEST_F(PgPoolTest, UnreachableServerIsUnavailableAndHidesThePassword) {
  const int port = testing::FreePort();
  auto pool =
      PgPool::Connect("postgresql://app:Sup3rS3cret@127.0.0.1:" + std::to_string(port) + "/db", {});
  ASSERT_FALSE(pool.ok());
  EXPECT_EQ(pool.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(pool.error().message.find("Sup3rS3cret"), std::string::npos) << pool.error().message;
}

TEST_F(PgPoolTest, BorrowWaitsForAFreeConnection) {
  PgPoolOptions options;
  options.size = 2;
  options.borrow_timeout = milliseconds(100);
  auto pool = Pool(options);
  ASSERT_TRUE(pool);
  auto a = pool->Borrow();
  auto b = pool->Borrow();
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  auto c = pool->Borrow();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kUnavailable);
}

TEST_F(PgPoolTest, MigrationsApplyOnceEvenConcurrently) {
  PgPoolOptions options;
  options.size = 1;
  const std::vector<Migration> migrations = {
      {"001_a.sql", "CREATE TABLE mig_a (id int PRIMARY KEY);"},
      {"002_b.sql", "CREATE TABLE mig_b (id int); INSERT INTO mig_b VALUES (1);"},
  };
  std::vector<std::unique_ptr<PgPool>> pools;
  for (int i = 0; i < 6; ++i) pools.push_back(Pool(options));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (auto& pool : pools) {
    threads.emplace_back([&, raw = pool.get()] {
      if (!raw || !ApplyMigrations(*raw, migrations).ok()) ++failures;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(ApplyMigrations(*pools[0], migrations).ok());
  auto rows = pools[0]->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    return tx.exec1("SELECT count(*) FROM mig_b")[0].as<int>();
  });
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, 1);  // 002 ran exactly once.
}

TEST_F(PgPoolTest, FailedMigrationAppliesNothingAndNamesTheFile) {
  auto pool = Pool();
  ASSERT_TRUE(pool);
  const std::vector<Migration> migrations = {
      {"101_ok.sql", "CREATE TABLE mig_ok (id int);"},
      {"102_bad.sql", "CREATE TABLE mig_bad (id nosuchtype);"},
  };
  Status status = ApplyMigrations(*pool, migrations);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message.find("102_bad.sql"), std::string::npos);
  auto exists = pool->Run([](pqxx::connection& connection) {
    pqxx::work tx(connection);
    return !tx.exec1("SELECT to_regclass('mig_ok')")[0].is_null();
  });
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(*exists);
}

TEST_F(PgPoolTest, BundledMigrationsUpgradeADatabaseOfAnEarlierRelease) {
  auto pool = Pool();
  ASSERT_TRUE(pool);
  const std::vector<Migration>& all = BundledMigrations();
  ASSERT_GE(all.size(), 3u);
  ASSERT_EQ(all[2].name, "003_session_times.sql");
  // The schema as the release before 003 left it, with a session stored by its wf_append_turn.
  ASSERT_TRUE(ApplyMigrations(*pool, {all[0], all[1]}).ok());
  auto append = [&](const std::string& run, std::int64_t started, std::int64_t finished) {
    auto stored = pool->Run([&](pqxx::connection& connection) {
      pqxx::work tx(connection);
      const std::string messages =
          R"([{"role":"user","content":"hi","created_ms":)" + std::to_string(started) + "}]";
      bool inserted = tx.exec_params1(
                            "SELECT inserted FROM wf_append_turn($1, 'upgrade', $1, 'flow', 'f', "
                            "'ok', 0, 0, $2, $3, $4::jsonb, '')",
                            run, started, finished, messages)[0]
                          .as<bool>();
      tx.commit();
      return inserted;
    });
    ASSERT_TRUE(stored.ok()) << stored.error().message;
    EXPECT_TRUE(*stored) << run;
  };
  append("before-upgrade", 1700000000000, 1700000001000);
  auto times = [&] {
    return pool->Run([](pqxx::connection& connection) {
      pqxx::work tx(connection);
      auto row = tx.exec1(
          "SELECT (extract(epoch FROM created_at) * 1000)::bigint, turn_count FROM sessions "
          "WHERE session_id = 'upgrade'");
      return std::make_pair(row[0].as<std::int64_t>(), row[1].as<int>());
    });
  };
  auto before = times();
  ASSERT_TRUE(before.ok());
  EXPECT_GT(before->first, 1700000001000);  // 002 stamped the session with the storing time.

  ASSERT_TRUE(ApplyMigrations(*pool, all).ok());
  append("after-upgrade", 1700000005000, 1700000006000);
  auto after = times();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->first, 1700000005000);  // 003's function: the earliest turn it has seen.
  EXPECT_EQ(after->second, 2);
  auto recorded = pool->Run([&](pqxx::connection& connection) {
    pqxx::work tx(connection);
    return tx.exec_params1("SELECT count(*) FROM schema_migrations WHERE name = $1", all[2].name)[0]
        .as<int>();
  });
  ASSERT_TRUE(recorded.ok());
  EXPECT_EQ(*recorded, 1);
}

}  // namespace
}  // namespace wf
