#include "text/utf8.h"

#include <gtest/gtest.h>

#include <string>

#include "text/hex.h"

namespace wf {
namespace {

std::size_t At0(const std::string& s) { return Utf8SequenceLength(s, 0); }

TEST(Utf8LeadLengthTest, EveryByteValue) {
  for (int b = 0; b < 256; ++b) {
    std::size_t expected = 0;  // C0, C1, F5-FF and continuation bytes start nothing
    if (b < 0x80) expected = 1;
    if (b >= 0xC2 && b <= 0xDF) expected = 2;
    if (b >= 0xE0 && b <= 0xEF) expected = 3;
    if (b >= 0xF0 && b <= 0xF4) expected = 4;
    EXPECT_EQ(Utf8LeadLength(static_cast<unsigned char>(b)), expected) << b;
  }
}

TEST(Utf8SequenceLengthTest, WellFormedSequences) {
  EXPECT_EQ(At0("a"), 1u);
  EXPECT_EQ(At0(std::string(1, '\0')), 1u);
  EXPECT_EQ(At0("\x7f"), 1u);
  EXPECT_EQ(At0("\xc2\x80"), 2u);          // U+0080
  EXPECT_EQ(At0("\xdf\xbf"), 2u);          // U+07FF
  EXPECT_EQ(At0("\xe0\xa0\x80"), 3u);      // U+0800
  EXPECT_EQ(At0("\xe4\xb8\xad"), 3u);      // 中
  EXPECT_EQ(At0("\xed\x9f\xbf"), 3u);      // U+D7FF, just below the surrogates
  EXPECT_EQ(At0("\xee\x80\x80"), 3u);      // U+E000, just above them
  EXPECT_EQ(At0("\xef\xbf\xbf"), 3u);      // U+FFFF
  EXPECT_EQ(At0("\xf0\x90\x80\x80"), 4u);  // U+10000
  EXPECT_EQ(At0("\xf0\x9f\x98\x80"), 4u);  // 😀
  EXPECT_EQ(At0("\xf4\x8f\xbf\xbf"), 4u);  // U+10FFFF
}

TEST(Utf8SequenceLengthTest, IllFormedSequences) {
  EXPECT_EQ(At0("\x80"), 0u);  // a continuation byte alone
  EXPECT_EQ(At0("\xbf"), 0u);
  EXPECT_EQ(At0("\xc0\x80"), 0u);          // overlong NUL
  EXPECT_EQ(At0("\xc1\xbf"), 0u);          // overlong
  EXPECT_EQ(At0("\xe0\x9f\xbf"), 0u);      // overlong 3-byte form
  EXPECT_EQ(At0("\xed\xa0\x80"), 0u);      // U+D800, a surrogate
  EXPECT_EQ(At0("\xed\xbf\xbf"), 0u);      // U+DFFF
  EXPECT_EQ(At0("\xf0\x8f\xbf\xbf"), 0u);  // overlong 4-byte form
  EXPECT_EQ(At0("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(At0("\xf5\x80\x80\x80"), 0u);
  EXPECT_EQ(At0("\xff"), 0u);
  EXPECT_EQ(At0("\xc3\x28"), 0u);      // second byte not a continuation
  EXPECT_EQ(At0("\xe4\xb8\x28"), 0u);  // third byte not a continuation
}

TEST(Utf8SequenceLengthTest, SequencesCutShortByTheEnd) {
  EXPECT_EQ(At0("\xc3"), 0u);
  EXPECT_EQ(At0("\xe4\xb8"), 0u);
  EXPECT_EQ(At0("\xf0\x9f\x98"), 0u);
  const std::string text = "ab\xe4\xb8\xad";
  EXPECT_EQ(Utf8SequenceLength(text, 2), 3u);
  EXPECT_EQ(Utf8SequenceLength(text.substr(0, 4), 2), 0u);
  EXPECT_EQ(Utf8SequenceLength(text, 3), 0u);  // starts on a continuation byte
}

TEST(HexDigitValueTest, DigitsOfBothCasesAndNothingElse) {
  EXPECT_EQ(HexDigitValue('0'), 0);
  EXPECT_EQ(HexDigitValue('9'), 9);
  EXPECT_EQ(HexDigitValue('a'), 10);
  EXPECT_EQ(HexDigitValue('f'), 15);
  EXPECT_EQ(HexDigitValue('A'), 10);
  EXPECT_EQ(HexDigitValue('F'), 15);
  for (char c : {'g', 'G', '/', ':', '@', '`', ' ', '\0', '\xff'}) {
    EXPECT_EQ(HexDigitValue(c), -1) << static_cast<int>(c);
  }
}

TEST(ToValidUtf8Test, ValidTextIsReturnedUnchanged) {
  for (std::string text : {std::string(), std::string("plain ascii"), std::string("中文 😀 é"),
                           std::string("a\0b", 3), std::string("\xf4\x8f\xbf\xbf")}) {
    EXPECT_EQ(ToValidUtf8(text), text);
    EXPECT_TRUE(IsValidUtf8(text));
  }
}

TEST(ToValidUtf8Test, InvalidSequencesBecomeReplacementCharacters) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(ToValidUtf8("a\xff"
                        "b"),
            "a" + fffd + "b");
  EXPECT_EQ(ToValidUtf8("\x80\x80"), fffd + fffd);  // two stray continuation bytes
  EXPECT_EQ(ToValidUtf8("x\xe4\xb8"), "x" + fffd);  // 中 cut short: one U+FFFD
  EXPECT_EQ(ToValidUtf8("\xe4\xb8(\xe4\xb8\xad"), fffd + "(中");
  EXPECT_EQ(ToValidUtf8("\xed\xa0\x80"), fffd);     // a surrogate: lead and its continuations
  EXPECT_EQ(ToValidUtf8("\xc0\xaf"), fffd + fffd);  // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xc3"));
  // Whatever the input, the output is valid.
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_TRUE(IsValidUtf8(ToValidUtf8(all)));
  EXPECT_TRUE(IsValidUtf8(ToValidUtf8(all + all.substr(0xE4))));
}

TEST(Utf8TruncateTest, NeverSplitsACharacter) {
  const std::string text = "ab中文";  // 2 + 3 + 3 bytes
  EXPECT_EQ(Utf8Truncate(text, 100), text);
  EXPECT_EQ(Utf8Truncate(text, 8), text);
  EXPECT_EQ(Utf8Truncate(text, 7), "ab中");
  EXPECT_EQ(Utf8Truncate(text, 6), "ab中");
  EXPECT_EQ(Utf8Truncate(text, 5), "ab中");
  EXPECT_EQ(Utf8Truncate(text, 4), "ab");
  EXPECT_EQ(Utf8Truncate(text, 2), "ab");
  EXPECT_EQ(Utf8Truncate(text, 0), "");
  // 100 x "错误" cut at 200 bytes: whole characters only, still valid.
  std::string errors;
  for (int i = 0; i < 100; ++i) errors += "错误";
  const std::string_view cut = Utf8Truncate(errors, 200);
  EXPECT_EQ(cut.size(), 198u);
  EXPECT_TRUE(IsValidUtf8(cut));
  // Invalid input: never longer than the limit.
  EXPECT_LE(Utf8Truncate(std::string(10, '\x80'), 4).size(), 4u);
}

}  // namespace
}  // namespace wf
