#include "text/ascii.h"

#include <gtest/gtest.h>

#include <string_view>

namespace wf {
namespace {

TEST(AsciiTest, CaseMapsOnlyAsciiLetters) {
  for (int i = 0; i < 256; ++i) {
    const char c = static_cast<char>(i);
    const bool upper = c >= 'A' && c <= 'Z';
    const bool lower = c >= 'a' && c <= 'z';
    EXPECT_EQ(AsciiLower(c), upper ? static_cast<char>(c + 32) : c) << i;
    EXPECT_EQ(AsciiUpper(c), lower ? static_cast<char>(c - 32) : c) << i;
  }
}

TEST(AsciiTest, EqualsIgnoreCaseComparesWholeStrings) {
  EXPECT_TRUE(EqualsIgnoreCase("Content-Type", "content-type"));
  EXPECT_TRUE(EqualsIgnoreCase("TRUE", "true"));
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_FALSE(EqualsIgnoreCase("true", "tru"));
  EXPECT_FALSE(EqualsIgnoreCase("tru", "true"));
  EXPECT_FALSE(EqualsIgnoreCase("true", "trve"));
  // '@' (0x40) and '`' (0x60) differ from 'A'/'a' by the same 0x20 but are not letters.
  EXPECT_FALSE(EqualsIgnoreCase("@", "`"));
  EXPECT_FALSE(EqualsIgnoreCase("[", "{"));
  // UTF-8 bytes are compared as they are: no folding outside ASCII.
  EXPECT_FALSE(EqualsIgnoreCase("\xc3\x84", "\xc3\xa4"));  // Ä vs ä
  EXPECT_TRUE(EqualsIgnoreCase(std::string_view("a\0b", 3), std::string_view("A\0B", 3)));
}

static_assert(EqualsIgnoreCase("Expect", "EXPECT"));

}  // namespace
}  // namespace wf
