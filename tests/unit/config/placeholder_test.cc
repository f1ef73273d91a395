#include "config/placeholder.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

TEST(PlaceholderTest, SplitsLiteralsAndPlaceholders) {
  auto r = ParseTemplate("订单 {order_id}: {result.items.0}!");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 5u);
  EXPECT_FALSE((*r)[0].is_placeholder);
  EXPECT_EQ((*r)[0].text, "订单 ");
  EXPECT_TRUE((*r)[1].is_placeholder);
  EXPECT_EQ((*r)[1].text, "order_id");
  EXPECT_EQ((*r)[1].path, (std::vector<std::string>{"order_id"}));
  EXPECT_EQ((*r)[3].text, "result.items.0");
  EXPECT_EQ((*r)[3].path, (std::vector<std::string>{"result", "items", "0"}));
  EXPECT_EQ((*r)[4].text, "!");
}

TEST(PlaceholderTest, DoubledBracesAreLiteralAndMerged) {
  auto r = ParseTemplate("{{not}} a {{placeholder}}");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].text, "{not} a {placeholder}");
  auto mixed = ParseTemplate("{{{x}}}");
  ASSERT_TRUE(mixed.ok());
  ASSERT_EQ(mixed->size(), 3u);
  EXPECT_EQ((*mixed)[0].text, "{");
  EXPECT_EQ((*mixed)[1].text, "x");
  EXPECT_EQ((*mixed)[2].text, "}");
}

TEST(PlaceholderTest, EmptyTextHasNoSegments) {
  auto r = ParseTemplate("");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(PlaceholderTest, WholePlaceholder) {
  EXPECT_TRUE(IsWholePlaceholder(*ParseTemplate("{days}")));
  EXPECT_FALSE(IsWholePlaceholder(*ParseTemplate(" {days}")));
  EXPECT_FALSE(IsWholePlaceholder(*ParseTemplate("{a}{b}")));
  EXPECT_FALSE(IsWholePlaceholder(*ParseTemplate("{{days}}")));
}

TEST(PlaceholderTest, SyntaxErrors) {
  struct Case {
    const char* text;
    const char* error;
  };
  for (const Case& c : {Case{"abc {name", "unclosed '{' at offset 4"},
                        Case{"{}", "invalid placeholder name '' at offset 0"},
                        Case{"{1abc}", "invalid placeholder name '1abc' at offset 0"},
                        Case{"x{a b}", "invalid placeholder name 'a b' at offset 1"},
                        Case{"{a..b}", "invalid placeholder name 'a..b' at offset 0"},
                        Case{"{a.}", "invalid placeholder name 'a.' at offset 0"},
                        Case{"{a-b}", "invalid placeholder name 'a-b' at offset 0"},
                        Case{"{a{b}", "invalid placeholder name 'a{b' at offset 0"},
                        Case{"a } b", "single '}' at offset 2 (write '}}' for a literal brace)"},
                        Case{"{x}}", "single '}' at offset 3"}}) {
    auto r = ParseTemplate(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
    EXPECT_NE(r.error().message.find(c.error), std::string::npos)
        << c.text << " -> " << r.error().message;
  }
}

}  // namespace
}  // namespace wf
