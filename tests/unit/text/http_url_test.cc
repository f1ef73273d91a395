#include "text/http_url.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

TEST(HttpUrl, SchemeLength) {
  EXPECT_EQ(HttpSchemeLength("http://h/"), 7u);
  EXPECT_EQ(HttpSchemeLength("HTTPS://h/"), 8u);
  EXPECT_EQ(HttpSchemeLength("http:/h"), 0u);
  EXPECT_EQ(HttpSchemeLength("ftp://h"), 0u);
  EXPECT_EQ(HttpSchemeLength(""), 0u);
}

TEST(HttpUrl, ProblemsInOrder) {
  for (const char* good :
       {"http://h", "https://api.openai.com/v1", "HTTPS://Api.Example:8443/x",
        "http://user:key@proxy.example/v1?x=1", "http://h?q={order_id}", "http://{host}/x"}) {
    EXPECT_EQ(HttpUrlProblem(good), "") << good;
  }
  for (const char* bad : {"", "api.openai.com/v1", "ftp://h/", "http:/h", "{base}/x"}) {
    EXPECT_EQ(HttpUrlProblem(bad), "url must start with http:// or https://") << bad;
  }
  for (const char* bad : {"http://h/a b", "http://h/\x01", "https://h/\x7f", "http:// h"}) {
    EXPECT_EQ(HttpUrlProblem(bad), "url contains whitespace or control characters") << bad;
  }
  for (const char* bad : {"http://", "https:///v1", "http://?q", "http://#f", "http://:8080/v1",
                          "https://us:pw@/v1", "http://user@"}) {
    EXPECT_EQ(HttpUrlProblem(bad), "url has no host") << bad;
  }
}

}  // namespace
}  // namespace wf
