#include "codec/json_limits.h"

#include <gtest/gtest.h>

#include <string>

namespace wf {
namespace {

TEST(JsonDepthExceeds, CountsContainersNotBracketsInStrings) {
  EXPECT_FALSE(JsonDepthExceeds(R"({"a":[1,{"b":[]}]})", 4));
  EXPECT_TRUE(JsonDepthExceeds(R"({"a":[1,{"b":[]}]})", 3));
  EXPECT_FALSE(JsonDepthExceeds(R"({"a":"[[[[\"[["})", 1));  // escaped quote stays in the string
  EXPECT_TRUE(JsonDepthExceeds("[[[[[[", 3));                // need not be valid JSON
  EXPECT_FALSE(JsonDepthExceeds("", 0));
  EXPECT_FALSE(JsonDepthExceeds("[][][][]", 1));  // siblings do not add up
}

TEST(JsonDepthExceeds, StopsAtTheLimitOfAHugeDocument) {
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  EXPECT_TRUE(JsonDepthExceeds(deep));
  EXPECT_FALSE(
      JsonDepthExceeds(std::string(kMaxJsonNesting, '[') + std::string(kMaxJsonNesting, ']')));
}

TEST(ParseBoundedJson, RefusesTooDeepAndInvalidText) {
  auto ok = ParseBoundedJson(R"({"a":[1,2]})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)["a"][1], 2);
  auto deep = ParseBoundedJson(std::string(100, '[') + std::string(100, ']'));
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.error().code, ErrorCode::kBadRequest);
  auto bad = ParseBoundedJson("{nope");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidJson);
}

}  // namespace
}  // namespace wf
