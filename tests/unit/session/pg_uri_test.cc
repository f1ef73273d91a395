#include <gtest/gtest.h>

#include "pg/migrations.h"
#include "pg/pg_pool.h"

namespace wf {
namespace {

// The user name goes with the password (it used to be logged): host, port and database stay.
TEST(PgUriTest, RedactsUriCredentials) {
  EXPECT_EQ(RedactPostgresUri("postgresql://app:s3cr3t@db:5432/wf"), "postgresql://***@db:5432/wf");
  EXPECT_EQ(RedactPostgresUri("postgres://app:p%40ss@db/wf?sslmode=disable"),
            "postgres://***@db/wf?sslmode=disable");
  EXPECT_EQ(RedactPostgresUri("postgresql://postgres@127.0.0.1:5432/postgres"),
            "postgresql://***@127.0.0.1:5432/postgres");
  EXPECT_EQ(RedactPostgresUri("postgresql://127.0.0.1:5432/postgres"),
            "postgresql://127.0.0.1:5432/postgres");
}

TEST(PgUriTest, RedactsKeyValuePassword) {
  const std::string redacted = RedactPostgresUri("host=db user=app password=s3cr3t dbname=wf");
  EXPECT_EQ(redacted.find("s3cr3t"), std::string::npos);
  EXPECT_NE(redacted.find("host=db"), std::string::npos);
  const std::string quoted = RedactPostgresUri("host=db password='s3 cr3t' dbname=wf");
  EXPECT_EQ(quoted.find("s3 cr3t"), std::string::npos);
}

// libpq also takes the password as a URI query parameter and in key=value strings with spaces
// around '='; those used to be shown as written (logs, startup errors).
TEST(PgUriTest, RedactsPasswordsInUriQueryParameters) {
  const std::string redacted =
      RedactPostgresUri("postgresql://app@db/wf?sslmode=disable&password=Qu3ry%40Secret&x=1");
  EXPECT_EQ(redacted.find("Qu3ry"), std::string::npos) << redacted;
  EXPECT_EQ(redacted, "postgresql://***@db/wf?sslmode=disable&password=***&x=1");
  const std::string ssl = RedactPostgresUri("postgres://db/wf?sslpassword=KeyPass99");
  EXPECT_EQ(ssl.find("KeyPass99"), std::string::npos) << ssl;
}

TEST(PgUriTest, RedactsKeyValuePasswordWithSpacesAroundTheEqualsSign) {
  const std::string redacted = RedactPostgresUri("host=db password = Sp4ced dbname=wf");
  EXPECT_EQ(redacted.find("Sp4ced"), std::string::npos) << redacted;
  EXPECT_NE(redacted.find("dbname=wf"), std::string::npos) << redacted;
  const std::string both =
      RedactPostgresUri("host=db sslpassword=SslOne password='It\\'s2' dbname=wf");
  EXPECT_EQ(both.find("SslOne"), std::string::npos) << both;
  EXPECT_EQ(both.find("s2"), std::string::npos) << both;
}

// libpq also takes the password as a URI query parameter (and sslpassword for the client key):
// those were printed verbatim in wf-heavy's start-up error ("postgres <uri>: connect failed").
TEST(PgUriTest, RedactsPasswordQueryParameters) {
  EXPECT_EQ(RedactPostgresUri("postgresql://app@db:5432/wf?password=qs3cr3t&sslmode=disable"),
            "postgresql://***@db:5432/wf?password=***&sslmode=disable");
  EXPECT_EQ(RedactPostgresUri("postgresql://app@db/wf?sslmode=require&password=qs3cr3t"),
            "postgresql://***@db/wf?sslmode=require&password=***");
  EXPECT_EQ(RedactPostgresUri("postgres://app:us3cr3t@db/wf?password=qs3cr3t&sslpassword=ks3cr3t"),
            "postgres://***@db/wf?password=***&sslpassword=***");
  // An '@' in the query is not the end of the credentials.
  EXPECT_EQ(RedactPostgresUri("postgresql://db/wf?password=a@b"),
            "postgresql://db/wf?password=***");
  EXPECT_EQ(RedactPostgresUri("host=db password=s3cr3t sslpassword=k3y"),
            "host=db password=*** sslpassword=***");
}

TEST(BundledMigrationsTest, AreTheSqlFilesInLexicalOrder) {
  const auto& bundled = BundledMigrations();
  ASSERT_FALSE(bundled.empty());
  EXPECT_EQ(bundled.front().name, "001_sessions.sql");
  EXPECT_NE(bundled.front().sql.find("CREATE TABLE IF NOT EXISTS messages"), std::string::npos);
  for (std::size_t i = 1; i < bundled.size(); ++i) {
    EXPECT_LT(bundled[i - 1].name, bundled[i].name);
  }
}

}  // namespace
}  // namespace wf
