// Pure parts of the HTTP client: request validation and what a failed transfer means.

#include "http_client/transfer_outcome.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace wf::http_client_internal {
namespace {

using std::chrono::milliseconds;

TEST(HostForMessageTest, KeepsHostAndPortOnly) {
  EXPECT_EQ(HostForMessage("http://127.0.0.1:8081/api/orders/1?x=1"), "127.0.0.1:8081");
  EXPECT_EQ(HostForMessage("https://api.example.com"), "api.example.com");
  EXPECT_EQ(HostForMessage("http://host?q=1"), "host");
  EXPECT_EQ(HostForMessage("http://host#frag"), "host");
  EXPECT_EQ(HostForMessage("http://[::1]:80/x"), "[::1]:80");
}

TEST(HostForMessageTest, DropsCredentials) {
  EXPECT_EQ(HostForMessage("http://user:secret@db.internal:5432/x"), "db.internal:5432");
  EXPECT_EQ(HostForMessage("http://a@b@host/"), "host");
}

TEST(HostForMessageTest, EmptyWithoutScheme) {
  EXPECT_EQ(HostForMessage("not a url"), "");
  EXPECT_EQ(HostForMessage(""), "");
}

TEST(IsHttpTokenTest, AcceptsMethodsAndHeaderNames) {
  EXPECT_TRUE(IsHttpToken("GET"));
  EXPECT_TRUE(IsHttpToken("X-Custom_Header.1"));
  EXPECT_TRUE(IsHttpToken("!#$%&'*+-.^_`|~"));
}

TEST(IsHttpTokenTest, RejectsSeparatorsAndControls) {
  EXPECT_FALSE(IsHttpToken(""));
  EXPECT_FALSE(IsHttpToken("GET /"));
  EXPECT_FALSE(IsHttpToken("X:Y"));
  EXPECT_FALSE(IsHttpToken("X\r\nEvil"));
  EXPECT_FALSE(IsHttpToken("caf\xc3\xa9"));
}

TEST(IsSafeHeaderValueTest, RejectsLineBreaksAndNul) {
  EXPECT_TRUE(IsSafeHeaderValue("application/json; charset=utf-8"));
  EXPECT_TRUE(IsSafeHeaderValue(""));
  EXPECT_TRUE(IsSafeHeaderValue("中文"));
  EXPECT_FALSE(IsSafeHeaderValue("a\r\nX-Evil: 1"));
  EXPECT_FALSE(IsSafeHeaderValue("a\nb"));
  EXPECT_FALSE(IsSafeHeaderValue(std::string_view("a\0b", 3)));
}

TEST(ErrorForCurlCodeTest, TimeoutNamesTheLimit) {
  Error e =
      ErrorForCurlCode(CURLE_OPERATION_TIMEDOUT, "h:1", "Operation timed out", milliseconds(300));
  EXPECT_EQ(e.code, ErrorCode::kUpstreamTimeout);
  EXPECT_EQ(e.message, "h:1: no answer within 300 ms");
}

TEST(ErrorForCurlCodeTest, UnreachableHostsAreUnavailable) {
  for (CURLcode code : {CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_RECV_ERROR,
                        CURLE_SEND_ERROR, CURLE_GOT_NOTHING}) {
    Error e = ErrorForCurlCode(code, "h:1", "", milliseconds(1000));
    EXPECT_EQ(e.code, ErrorCode::kUpstreamUnavailable) << code;
    EXPECT_EQ(e.message.rfind("h:1: ", 0), 0u) << e.message;
    EXPECT_GT(e.message.size(), 5u);
  }
  Error detailed =
      ErrorForCurlCode(CURLE_COULDNT_CONNECT, "h:1", "Connection refused", milliseconds(1));
  EXPECT_EQ(detailed.message, "h:1: Connection refused");
}

TEST(ErrorForCurlCodeTest, BadUrlsAreBadRequests) {
  EXPECT_EQ(ErrorForCurlCode(CURLE_URL_MALFORMAT, "", "", milliseconds(1)).code,
            ErrorCode::kBadRequest);
  EXPECT_EQ(ErrorForCurlCode(CURLE_UNSUPPORTED_PROTOCOL, "", "", milliseconds(1)).code,
            ErrorCode::kBadRequest);
}

TEST(ErrorForCurlCodeTest, AnAnswerThatIsNotHttpIsTheUpstreamsErrorNotABadUrl) {
  // The same codes once the request is on the wire: libcurl 7.88 says "Received HTTP/0.9 when
  // not allowed" for bytes that are not an HTTP response, and "Out of memory" for response
  // headers past its limit.
  Error not_http = ErrorForCurlCode(CURLE_UNSUPPORTED_PROTOCOL, "h:1",
                                    "Received HTTP/0.9 when not allowed", milliseconds(1),
                                    /*request_sent=*/true);
  EXPECT_EQ(not_http.code, ErrorCode::kUpstreamError);
  EXPECT_EQ(not_http.message, "h:1: Received HTTP/0.9 when not allowed");
  Error headers = ErrorForCurlCode(CURLE_OUT_OF_MEMORY, "h:1", "Out of memory", milliseconds(1),
                                   /*request_sent=*/true);
  EXPECT_EQ(headers.code, ErrorCode::kUpstreamError);
  EXPECT_NE(headers.message.find("response headers too large"), std::string::npos)
      << headers.message;
  EXPECT_EQ(ErrorForCurlCode(CURLE_OUT_OF_MEMORY, "h:1", "", milliseconds(1)).code,
            ErrorCode::kInternal);
}

TEST(ResponseHeaderCheckTest, TwoDifferentContentLengthsAreRefused) {
  ResponseHeaderCheck check;
  EXPECT_EQ(check.Check("HTTP/1.1 200 OK\r\n"), "");
  EXPECT_EQ(check.Check("Content-Length: 19\r\n"), "");
  EXPECT_EQ(check.Check("content-length:19 \r\n"), "");  // the same value again: harmless
  const std::string why = check.Check("CONTENT-LENGTH: 5\r\n");
  EXPECT_NE(why.find("two different Content-Length headers (19 and 5)"), std::string::npos) << why;
}

TEST(ResponseHeaderCheckTest, EachResponseIsCheckedOnItsOwn) {
  ResponseHeaderCheck check;
  EXPECT_EQ(check.Check("HTTP/1.1 100 Continue\r\n"), "");
  EXPECT_EQ(check.Check("Content-Length: 0\r\n"), "");
  EXPECT_EQ(check.Check("HTTP/1.1 200 OK\r\n"), "");
  EXPECT_EQ(check.Check("Content-Length: 12\r\n"), "");
  EXPECT_EQ(check.Check("\r\n"), "");
}

TEST(ResponseHeaderCheckTest, AnEncodingNobodyAskedForIsRefused) {
  ResponseHeaderCheck check;
  EXPECT_EQ(check.Check("Content-Encoding: identity\r\n"), "");
  EXPECT_EQ(check.Check("Content-Encoding: IDENTITY\r\n"), "");
  EXPECT_EQ(check.Check("X-Content-Encoding: gzip\r\n"), "");
  EXPECT_EQ(check.Check("Content-Encoding-Extra: gzip\r\n"), "");
  const std::string why = check.Check("Content-Encoding: gzip\r\n");
  EXPECT_EQ(why, "response body is gzip-encoded, which was not asked for");
  // A HEAD request reads no body: its encoding does not matter.
  ResponseHeaderCheck head(/*head_request=*/true);
  EXPECT_EQ(head.Check("Content-Encoding: br\r\n"), "");
}

TEST(ErrorForCurlCodeTest, OtherFailuresAreUpstreamErrors) {
  EXPECT_EQ(ErrorForCurlCode(CURLE_WEIRD_SERVER_REPLY, "h", "", milliseconds(1)).code,
            ErrorCode::kUpstreamError);
  EXPECT_EQ(ErrorForCurlCode(CURLE_BAD_CONTENT_ENCODING, "h", "", milliseconds(1)).code,
            ErrorCode::kUpstreamError);
}

TEST(ResponseTooLargeTest, NamesTheLimit) {
  Error e = ResponseTooLarge("h:1", 1024);
  EXPECT_EQ(e.code, ErrorCode::kUpstreamError);
  EXPECT_EQ(e.message, "h:1: response exceeds 1024 bytes");
}

TEST(ProxyFromEnvironmentTest, OnlyAVariableLibcurlReadsForHttpOrHttpsCounts) {
  auto with = [](std::map<std::string, std::string> env) {
    return ProxyFromEnvironment([&env](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    });
  };
  EXPECT_FALSE(with({}));
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    EXPECT_TRUE(with({{name, "http://proxy:3128"}})) << name;
    EXPECT_FALSE(with({{name, ""}})) << name;  // set but empty: no proxy, as libcurl reads it
  }
  // libcurl never uses HTTP_PROXY (httpoxy), and no_proxy alone names no proxy.
  EXPECT_FALSE(with({{"HTTP_PROXY", "http://proxy:3128"}, {"no_proxy", "*"}, {"NO_PROXY", "x"}}));
}

}  // namespace
}  // namespace wf::http_client_internal
