#include "llm/sse_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wf {
namespace {

std::vector<SseEvent> ParseWhole(const std::string& text) {
  SseParser p;
  std::vector<SseEvent> out;
  EXPECT_TRUE(p.Feed(text, out).ok());
  p.Finish(out);
  return out;
}

std::vector<SseEvent> ParseByteByByte(const std::string& text) {
  SseParser p;
  std::vector<SseEvent> out;
  for (char c : text) EXPECT_TRUE(p.Feed(std::string_view(&c, 1), out).ok());
  p.Finish(out);
  return out;
}

void ExpectSame(const std::vector<SseEvent>& a, const std::vector<SseEvent>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].event, b[i].event) << i;
    EXPECT_EQ(a[i].data, b[i].data) << i;
    EXPECT_EQ(a[i].id, b[i].id) << i;
  }
}

TEST(SseParser, OpenAiStreamWholeAndByteByByte) {
  const std::string stream =
      "data: {\"a\":1}\n\n"
      ": keep-alive comment\n\n"
      "data: {\"b\":\"x y\"}\n\n"
      "data: [DONE]\n\n";
  const auto whole = ParseWhole(stream);
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(whole[0].data, "{\"a\":1}");
  EXPECT_EQ(whole[0].event, "message");
  EXPECT_EQ(whole[1].data, "{\"b\":\"x y\"}");
  EXPECT_TRUE(whole[2].IsDone());
  ExpectSame(whole, ParseByteByByte(stream));
}

TEST(SseParser, EverySplitPointGivesTheSameEvents) {
  const std::string stream =
      "\xEF\xBB\xBFid: 7\r\nevent: delta\r\ndata: line one\r\ndata:line two\r\n\r\n"
      ":c\rdata: cr only\r\rdata: last\n\n";
  const auto expected = ParseWhole(stream);
  ASSERT_EQ(expected.size(), 3u);
  EXPECT_EQ(expected[0].event, "delta");
  EXPECT_EQ(expected[0].data, "line one\nline two");
  EXPECT_EQ(expected[0].id, "7");
  EXPECT_EQ(expected[1].data, "cr only");
  EXPECT_EQ(expected[1].event, "message");
  EXPECT_EQ(expected[2].data, "last");
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    for (size_t cut2 = cut; cut2 <= stream.size(); cut2 += 3) {
      SseParser p;
      std::vector<SseEvent> out;
      ASSERT_TRUE(p.Feed(stream.substr(0, cut), out).ok());
      ASSERT_TRUE(p.Feed(stream.substr(cut, cut2 - cut), out).ok());
      ASSERT_TRUE(p.Feed(stream.substr(cut2), out).ok());
      p.Finish(out);
      SCOPED_TRACE("cut at " + std::to_string(cut) + "," + std::to_string(cut2));
      ExpectSame(expected, out);
    }
  }
}

TEST(SseParser, CrLfSplitBetweenPiecesEndsOneLine) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.Feed("data: a\r", out).ok());
  ASSERT_TRUE(p.Feed("\n", out).ok());  // the LF of the CRLF: not a blank line
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(p.Feed("\r\n", out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "a");
}

TEST(SseParser, FieldWithoutSpaceAndEmptyData) {
  const auto events = ParseWhole("data:x\n\ndata\n\ndata:\ndata:\n\n");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].data, "x");
  EXPECT_EQ(events[1].data, "");
  EXPECT_EQ(events[2].data, "\n");
}

TEST(SseParser, EventWithoutDataIsNotDispatched) {
  const auto events = ParseWhole("event: ping\n\nretry: 100\nid: 1\n\n");
  EXPECT_TRUE(events.empty());
}

TEST(SseParser, UnterminatedLastEventIsDispatchedAtFinish) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.Feed("data: {\"x\":1}\n\ndata: [DONE]", out).ok());
  ASSERT_EQ(out.size(), 1u);
  p.Finish(out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[1].IsDone());
  p.Finish(out);  // idempotent
  EXPECT_EQ(out.size(), 2u);
}

TEST(SseParser, NotABomIsKeptAsContent) {
  const auto events = ParseWhole("\xEF\xBB" "data: y\n\n");
  EXPECT_TRUE(events.empty());  // the field name is "\xEF\xBBdata": unknown, ignored
  const auto ok = ParseWhole("data: \xEF\xBB\xBF\n\n");
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].data, "\xEF\xBB\xBF");  // a BOM inside data is data
}

TEST(SseParser, OverlongLineFailsAndStaysFailed) {
  SseParser p(16);
  std::vector<SseEvent> out;
  EXPECT_TRUE(p.Feed("data: 0123456789", out).ok());
  Status st = p.Feed("abcdef", out);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kTooLarge);
  EXPECT_FALSE(p.Feed("\n\n", out).ok());
}

TEST(SseParser, OverlongEventFails) {
  SseParser p(16);
  std::vector<SseEvent> out;
  EXPECT_TRUE(p.Feed("data: 01234567\n", out).ok());
  EXPECT_FALSE(p.Feed("data: 01234567\n", out).ok());
}

}  // namespace
}  // namespace wf
