#include "codec/json_struct.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

using nlohmann::json;

TEST(JsonStructTest, RoundTripKeepsTypesAndIntegers) {
  json in = {{"days", 3},      {"ratio", 0.5},     {"name", "张三"}, {"ok", true},
             {"none", nullptr}, {"list", {1, "a"}}, {"nested", {{"k", -7}}}};
  json out = StructToJson(JsonToStruct(in));
  EXPECT_EQ(out, in);
  EXPECT_TRUE(out["days"].is_number_integer());
  EXPECT_TRUE(out["ratio"].is_number_float());
}

TEST(JsonStructTest, HugeNumbersStayFloatingPoint) {
  json in = {{"big", 1e300}};
  EXPECT_TRUE(StructToJson(JsonToStruct(in))["big"].is_number_float());
}

TEST(JsonStructTest, NonObjectGivesEmptyStruct) {
  EXPECT_EQ(JsonToStruct(json::array({1, 2})).fields_size(), 0);
  EXPECT_EQ(StructToJson(JsonToStruct("text")), json::object());
}

}  // namespace
}  // namespace wf
