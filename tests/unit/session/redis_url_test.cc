#include "redis/redis_url.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wf {
namespace {

TEST(RedisUrlTest, HostAndPortDefaults) {
  auto endpoint = ParseRedisUrl("redis://cache.internal");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().message;
  EXPECT_EQ(endpoint->host, "cache.internal");
  EXPECT_EQ(endpoint->port, 6379);
  EXPECT_EQ(endpoint->db, 0);
  EXPECT_TRUE(endpoint->password.empty());
  EXPECT_TRUE(endpoint->username.empty());
}

TEST(RedisUrlTest, PasswordPortAndDb) {
  auto endpoint = ParseRedisUrl("redis://:s3cr3t@127.0.0.1:6380/2");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().message;
  EXPECT_EQ(endpoint->host, "127.0.0.1");
  EXPECT_EQ(endpoint->port, 6380);
  EXPECT_EQ(endpoint->db, 2);
  EXPECT_EQ(endpoint->password, "s3cr3t");
  EXPECT_TRUE(endpoint->username.empty());
}

TEST(RedisUrlTest, UserPasswordPercentDecoded) {
  auto endpoint = ParseRedisUrl("redis://app:p%40ss%2Fw%3Ard@redis:6379");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().message;
  EXPECT_EQ(endpoint->username, "app");
  EXPECT_EQ(endpoint->password, "p@ss/w:rd");
}

TEST(RedisUrlTest, LonePasswordWithoutColon) {
  auto endpoint = ParseRedisUrl("redis://justapassword@h:1");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().message;
  EXPECT_EQ(endpoint->password, "justapassword");
  EXPECT_TRUE(endpoint->username.empty());
}

TEST(RedisUrlTest, UnencodedSpecialCharactersInPassword) {
  // The last '@' ends the credentials, so sloppy URLs still parse.
  auto endpoint = ParseRedisUrl("redis://:pa@ss/w@host:7000/1");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().message;
  EXPECT_EQ(endpoint->password, "pa@ss/w");
  EXPECT_EQ(endpoint->host, "host");
  EXPECT_EQ(endpoint->port, 7000);
  EXPECT_EQ(endpoint->db, 1);
}

TEST(RedisUrlTest, Ipv6Host) {
  auto endpoint = ParseRedisUrl("redis://[::1]:6390");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().message;
  EXPECT_EQ(endpoint->host, "::1");
  EXPECT_EQ(endpoint->port, 6390);
  EXPECT_EQ(endpoint->Describe(), "redis://[::1]:6390/0");
}

TEST(RedisUrlTest, DescribeHidesCredentials) {
  auto endpoint = ParseRedisUrl("redis://admin:s3cr3t@10.0.0.5:6379/3");
  ASSERT_TRUE(endpoint.ok());
  EXPECT_EQ(endpoint->Describe(), "redis://***@10.0.0.5:6379/3");
  EXPECT_EQ(endpoint->Describe().find("s3cr3t"), std::string::npos);
  EXPECT_EQ(endpoint->Describe().find("admin"), std::string::npos);
}

TEST(RedisUrlTest, RejectsMalformedUrls) {
  const std::vector<std::string> bad = {
      "",
      "http://host:6379",
      "rediss://host:6379",
      "redis://",
      "redis://:6379",
      "redis://host:",
      "redis://host:0",
      "redis://host:65536",
      "redis://host:12ab",
      "redis://host:6379/x",
      "redis://host:6379/-1",
      "redis://host:6379?timeout=1",
      "redis://ho st:6379",
      "redis://[::1:6379",
      "redis://[zz]:6379",
  };
  for (const auto& url : bad) {
    auto endpoint = ParseRedisUrl(url);
    EXPECT_FALSE(endpoint.ok()) << url;
    if (!endpoint.ok()) {
      EXPECT_EQ(endpoint.error().code, ErrorCode::kBadRequest) << url;
    }
  }
}

/// Every substring of the secret of length >= 3 is absent from the message.
void ExpectNoSecretIn(const std::string& message, const std::string& secret) {
  for (std::size_t len = 3; len <= secret.size(); ++len) {
    for (std::size_t at = 0; at + len <= secret.size(); ++at) {
      EXPECT_EQ(message.find(secret.substr(at, len)), std::string::npos)
          << "'" << message << "' leaks '" << secret.substr(at, len) << "'";
    }
  }
}

TEST(RedisUrlTest, ErrorsNeverContainThePassword) {
  const std::string secret = "Zq9XwV7kP";
  const std::vector<std::string> bad = {
      "redis://:" + secret + "@host:notaport",
      "redis://:" + secret + "@host:6379/db",
      "redis://:" + secret + "@:6379",
      "redis://:" + secret + "@host:6379?x=1",
      "redis://user:" + secret + "%zz@host:6379",
      "redis://:" + secret.substr(0, 4) + "/" + secret.substr(4) + "@host:bad",
      "redis://:" + secret.substr(0, 4) + "@" + secret.substr(4) + "@ho st",
      "rediss://:" + secret + "@host:6379",
      "http://:" + secret + "@host:6379",
      // A password given as a query parameter (as libpq takes it) was echoed with the host part.
      "redis://host:6379/0?password=" + secret,
      "redis://host:6379#" + secret,
  };
  for (const auto& url : bad) {
    auto endpoint = ParseRedisUrl(url);
    ASSERT_FALSE(endpoint.ok()) << "should fail: (url withheld)";
    ExpectNoSecretIn(endpoint.error().message, secret);
  }
}

}  // namespace
}  // namespace wf
