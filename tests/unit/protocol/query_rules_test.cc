#include "protocol/query_rules.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "codec/json_struct.h"

namespace wf {
namespace {

wf::v1::QueryRequest Valid() {
  wf::v1::QueryRequest request;
  request.set_message("check order 1234");
  request.set_session_id("user-1:chat.2_x");
  return request;
}

std::string ErrorOf(const wf::v1::QueryRequest& request, GatewayConfig limits = {}) {
  Status s = ValidateQueryRequest(request, limits);
  if (s.ok()) return "ok";
  EXPECT_EQ(s.error().code, ErrorCode::kBadRequest);
  return s.error().message;
}

TEST(ValidateQueryRequestTest, AcceptsWhatTheGatewayAccepts) {
  auto request = Valid();
  EXPECT_EQ(ErrorOf(request), "ok");
  request.set_user_id(std::string(128, 'u'));
  request.set_request_id("abcDEF123_-x");
  request.set_session_id(std::string(128, 's'));
  *request.mutable_parameters() = JsonToStruct({{"order_id", "1"}, {"n", {{"a", {1, 2}}}}});
  EXPECT_EQ(ErrorOf(request), "ok");
  request.set_message(std::string(8000, 'm'));
  EXPECT_EQ(ErrorOf(request), "ok");
  std::string chinese;
  for (int i = 0; i < 8000; ++i) chinese += "中";  // 8000 characters, 24000 bytes
  request.set_message(chinese);
  EXPECT_EQ(ErrorOf(request), "ok");
}

TEST(ValidateQueryRequestTest, EachRuleNamesItsField) {
  auto request = Valid();
  request.set_message("");
  EXPECT_EQ(ErrorOf(request), "message: must not be empty");
  request.set_message(std::string(8001, 'm'));
  EXPECT_EQ(ErrorOf(request), "message: longer than 8000 characters");
  GatewayConfig small;
  small.max_message_chars = 5;
  request.set_message("中文中文中");
  EXPECT_EQ(ErrorOf(request, small), "ok");
  request.set_message("中文中文中文");
  EXPECT_EQ(ErrorOf(request, small), "message: longer than 5 characters");

  for (std::string bad : {std::string(), std::string(129, 's'), std::string("a b"),
                          std::string(5000, ' '), std::string("a/b"), std::string("会话")}) {
    request = Valid();
    request.set_session_id(bad);
    EXPECT_EQ(ErrorOf(request), "session_id: must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        << bad;
  }

  request = Valid();
  request.set_user_id(std::string(100 * 1024, 'u'));
  EXPECT_EQ(ErrorOf(request), "user_id: longer than 128 characters");

  request = Valid();
  for (std::string bad : {std::string("a.b"), std::string(129, 'r'), std::string("a b")}) {
    request.set_request_id(bad);
    EXPECT_EQ(ErrorOf(request), "request_id: must be 1-128 characters of A-Z a-z 0-9 _ -") << bad;
  }
}

TEST(ValidateQueryRequestTest, ParametersNestAsDeepAsTheGatewayBodyAllows) {
  // Body level 1, parameters level 2: parameters may hold 30 more levels (32 in all).
  auto nested = [](int levels) {
    nlohmann::json value = 1;
    for (int i = 0; i < levels; ++i) value = nlohmann::json::array({value});
    return nlohmann::json{{"p", value}};
  };
  auto request = Valid();
  *request.mutable_parameters() = JsonToStruct(nested(30));
  EXPECT_EQ(ErrorOf(request), "ok");
  *request.mutable_parameters() = JsonToStruct(nested(31));
  EXPECT_EQ(ErrorOf(request),
            "parameters: JSON nested deeper than 32 levels (counting the request body)");
}

}  // namespace
}  // namespace wf
