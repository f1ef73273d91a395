#include "llm/utf8.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

TEST(Utf8, CompletePrefixHoldsBackAnUnfinishedCharacter) {
  const std::string han = "\xE4\xBD\xA0";  // 你
  EXPECT_EQ(Utf8CompletePrefixLength("ab"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("a" + han), 4u);
  EXPECT_EQ(Utf8CompletePrefixLength("a" + han.substr(0, 1)), 1u);
  EXPECT_EQ(Utf8CompletePrefixLength("a" + han.substr(0, 2)), 1u);
  const std::string emoji = "\xF0\x9F\x98\x80";
  EXPECT_EQ(Utf8CompletePrefixLength(emoji.substr(0, 3)), 0u);
  EXPECT_EQ(Utf8CompletePrefixLength(emoji), 4u);
  // Garbage is never held back: it cannot be completed.
  EXPECT_EQ(Utf8CompletePrefixLength("a\x80"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xFF"), 2u);
}

TEST(Utf8, TruncateNeverSplitsACharacter) {
  const std::string s = "ab\xE4\xBD\xA0";
  EXPECT_EQ(TruncateUtf8(s, 10), s);
  EXPECT_EQ(TruncateUtf8(s, 3), "ab...");
  EXPECT_EQ(TruncateUtf8(s, 2), "ab...");
}

TEST(Utf8, SanitizeReplacesInvalidSequences) {
  EXPECT_EQ(SanitizeUtf8("ok \xE4\xBD\xA0"), "ok \xE4\xBD\xA0");
  EXPECT_EQ(SanitizeUtf8("a\xE4\xBD"), "a\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");       // overlong
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

}  // namespace
}  // namespace wf
