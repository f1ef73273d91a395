#include "gateway/http_request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wf {
namespace {

constexpr const char* kLine = "POST /api/v1/query HTTP/1.1\r\n";

/// The scan's error for a head of `kLine`, `headers` and the empty line, then `after`.
std::string ErrorOf(const std::string& headers, const std::string& after = "") {
  const RequestHeadScan scan = ScanRequestHead(kLine + headers + "\r\n" + after);
  return scan.error == nullptr ? "" : scan.error;
}

TEST(ScanRequestHead, AcceptsOrdinaryHeadsAndMeasuresThem) {
  const std::string head =
      std::string(kLine) +
      "Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Empty:\r\n"
      "X-Blanks: \t a b \t\r\nweird!#$%&'*+-.^_`|~Name: v\r\n\r\n";
  const RequestHeadScan scan = ScanRequestHead(head + "{}GET / HTTP/1.1\r\nbroken\n\n");
  EXPECT_EQ(scan.error, nullptr) << scan.error;
  EXPECT_EQ(scan.head_size, head.size());
  EXPECT_FALSE(scan.expect_continue);
  // No headers at all.
  EXPECT_EQ(ScanRequestHead("GET /health HTTP/1.1\r\n\r\n").head_size, 24u);
  EXPECT_EQ(ErrorOf(""), "");
  // Values may hold obs-text (bytes >= 0x80) and colons.
  EXPECT_EQ(ErrorOf("X-Utf8: caf\xc3\xa9\r\nX-Url: http://a:1/b\r\n"), "");
}

// Request smuggling (RFC 9112 6.3): Pistache keeps the first of two Content-Length headers, a
// proxy in front may keep the last; any repeat is refused, equal values and any case included.
TEST(ScanRequestHead, RefusesRepeatedContentLength) {
  for (const std::string headers : {"Content-Length: 2\r\nContent-Length: 120\r\n",
                                    "Content-Length: 2\r\nContent-Length: 2\r\n",
                                    "content-length: 2\r\nHost: x\r\nCONTENT-LENGTH: 2\r\n"}) {
    EXPECT_EQ(ErrorOf(headers), "more than one Content-Length header") << headers;
  }
  EXPECT_EQ(ErrorOf("Content-Length: 2\r\nX-Content-Length: 3\r\nContent-Lengths: 4\r\n"), "");
}

// RFC 9112 5.1: no whitespace between a field name and its colon (Pistache takes
// "Content-Length " as another header and ignores the length).
TEST(ScanRequestHead, RefusesWhitespaceBeforeTheColon) {
  for (const std::string headers : {"Content-Length : 5\r\n", "Content-Length\t: 5\r\n",
                                    "Host : x\r\n", "X-Any  :1\r\n", "X Y: 1\r\n"}) {
    EXPECT_EQ(ErrorOf(headers), "whitespace in an HTTP header name or before its colon") << headers;
  }
}

// RFC 9112 5.2: obs-fold (a line starting with SP or HTAB) is refused. Pistache reads such a
// line as the start of the next header's name and so loses that header (a Content-Length).
TEST(ScanRequestHead, RefusesObsFold) {
  for (const std::string headers :
       {"X-A: a\r\n b\r\nContent-Length: 5\r\n", "X-A: a\r\n\tb\r\n", " Host: x\r\n"}) {
    EXPECT_EQ(ErrorOf(headers),
              "folded HTTP header line (a line may not start with a space or tab)")
        << headers;
  }
}

TEST(ScanRequestHead, RefusesMalformedLinesAndBareLineEnds) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Host x\r\n", "HTTP header line without a colon"},
      {"Host\r\n", "HTTP header line without a colon"},
      {"X\r\nContent-Length: 5\r\n", "HTTP header line without a colon"},
      {": x\r\n", "HTTP header without a name"},
      {"X(y): 1\r\n", "malformed HTTP header"},
      {"X-A: a\nContent-Length: 5\r\n", "bare CR or LF in the HTTP head (lines end in CRLF)"},
      {"X-A: a\rContent-Length: 5\r\n", "bare CR or LF in the HTTP head (lines end in CRLF)"},
      {"X-A: a\nb\r\n", "bare CR or LF in the HTTP head (lines end in CRLF)"},
      {std::string("X-A: a\0b\r\n", 10), "NUL byte in the HTTP head"},
  };
  for (const auto& [headers, error] : cases) EXPECT_EQ(ErrorOf(headers), error) << headers;
  EXPECT_STREQ(ScanRequestHead("GET /a\nb HTTP/1.1\r\n\r\n").error,
               "bare CR or LF in the HTTP head (lines end in CRLF)");
  EXPECT_STREQ(ScanRequestHead(std::string(kLine) + "Host: x\r\n\rX").error,
               "bare CR or LF in the HTTP head (lines end in CRLF)");
  // A head that has not ended is not a head.
  for (const std::string partial : {"GET / HTTP/1.1", "GET / HTTP/1.1\r\nHost: x\r\n",
                                    "GET / HTTP/1.1\r\nHost: x", "GET / HTTP/1.1\r\nHost"}) {
    EXPECT_NE(ScanRequestHead(partial).error, nullptr) << partial;
  }
}

TEST(ScanRequestHead, FindsExpectContinue) {
  for (const std::string headers : {"Expect: 100-continue\r\n", "expect:100-CONTINUE \r\n",
                                    "Host: x\r\nEXPECT: \t100-Continue\r\nContent-Length: 3\r\n"}) {
    const RequestHeadScan scan = ScanRequestHead(kLine + headers + "\r\n");
    EXPECT_EQ(scan.error, nullptr) << headers;
    EXPECT_TRUE(scan.expect_continue) << headers;
  }
  for (const std::string headers :
       {"Expect: 100-continued\r\n", "Expect: 200-ok\r\n", "X-Expect: 100-continue\r\n"}) {
    EXPECT_FALSE(ScanRequestHead(kLine + headers + "\r\n").expect_continue) << headers;
  }
}

TEST(DecodePathSegment, DecodesHexEscapes) {
  EXPECT_EQ(DecodePathSegment("user%3A42").value(), "user:42");
  EXPECT_EQ(DecodePathSegment("a%3a%2E%5f%2d").value(), "a:._-");
  EXPECT_EQ(DecodePathSegment("plain-id_1.2:3").value(), "plain-id_1.2:3");
  EXPECT_EQ(DecodePathSegment("a+b%20c").value(), "a+b c");  // '+' is not a space in a path
  EXPECT_EQ(DecodePathSegment("%25").value(), "%");          // decoded once, not twice
  EXPECT_EQ(DecodePathSegment("%C3%A9").value(), "\xc3\xa9");
  EXPECT_EQ(DecodePathSegment("").value(), "");
}

TEST(DecodePathSegment, RefusesMalformedEscapesSlashAndNul) {
  for (const char* bad : {"%", "%3", "a%", "a%4", "%G1", "%1G", "%%41", "%-1", "% 1"}) {
    auto r = DecodePathSegment(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
    EXPECT_NE(r.error().message.find("percent-escape"), std::string::npos) << r.error().message;
  }
  for (const char* bad : {"a%2Fb", "a%2fb", "%00", "x%00y"}) {
    auto r = DecodePathSegment(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
    EXPECT_NE(r.error().message.find("encoded"), std::string::npos) << r.error().message;
  }
}

TEST(IsJsonMediaType, TakesApplicationJsonWithParametersOnly) {
  for (const char* json : {"application/json", "Application/JSON", " application/json ",
                           "application/json; charset=utf-8", "application/json;charset=UTF-8"}) {
    EXPECT_TRUE(IsJsonMediaType(json)) << json;
  }
  for (const char* other : {"", "text/plain", "text/plain; charset=utf-8", "application/jsonx",
                            "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                            "application/json-patch+json", "text/json"}) {
    EXPECT_FALSE(IsJsonMediaType(other)) << other;
  }
}

}  // namespace
}  // namespace wf
