#include "error/error.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace wf {
namespace {

TEST(ErrorTest, WireNamesRoundTripAndMapToHttp) {
  EXPECT_EQ(WireName(ErrorCode::kNoAgentWorker), "no_agent_worker");
  EXPECT_EQ(HttpStatus(ErrorCode::kNoAgentWorker), 503);
  EXPECT_EQ(HttpStatus(ErrorCode::kUpstreamTimeout), 504);
  EXPECT_EQ(HttpStatus(ErrorCode::kUpstreamError), 502);
  EXPECT_EQ(HttpStatus(ErrorCode::kSessionBusy), 409);
  EXPECT_EQ(HttpStatus(ErrorCode::kTooLarge), 413);
  EXPECT_EQ(HttpStatus(ErrorCode::kUnsupportedMediaType), 415);
  EXPECT_EQ(WireName(ErrorCode::kUnsupportedMediaType), "unsupported_media_type");
  for (auto code : {ErrorCode::kBadRequest, ErrorCode::kDeadlineExceeded, ErrorCode::kCancelled,
                    ErrorCode::kSessionNotFound, ErrorCode::kInternal}) {
    EXPECT_EQ(ErrorCodeFromWire(WireName(code)), code);
  }
  EXPECT_EQ(ErrorCodeFromWire("no_such_code"), ErrorCode::kInternal);
}

TEST(ErrorTest, ErrorJsonHasCodeAndMessageEvenForInvalidUtf8) {
  auto j = nlohmann::json::parse(ErrorJson({ErrorCode::kBadRequest, "bad \xff byte"}));
  EXPECT_EQ(j["error"]["code"], "bad_request");
  EXPECT_TRUE(j["error"]["message"].is_string());
}

TEST(ErrorTest, ResultHoldsValueOrError) {
  Result<int> good = 3;
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);
  Result<int> bad(ErrorCode::kNotFound, "nope");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace wf
