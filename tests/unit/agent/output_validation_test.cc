#include "agent/output_validation.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

const nlohmann::json kSchema = nlohmann::json::parse(R"({
  "type": "object",
  "properties": {
    "city": {"type": "string"},
    "days": {"type": "integer"},
    "budget": {"type": ["number", "null"]},
    "mode": {"type": "string", "enum": ["train", "plane"]},
    "stops": {"type": "array", "items": {"type": "object", "required": ["name"],
                                         "properties": {"name": {"type": "string"}}}},
    "meta": {"type": "object", "additionalProperties": false, "properties": {"v": {"type": "boolean"}}}
  },
  "required": ["city", "days"]
})");

std::string Check(const std::string& json) {
  Status st = ValidateAgainstSchema(nlohmann::json::parse(json), kSchema);
  return st.ok() ? "ok" : st.error().message;
}

TEST(ValidateAgainstSchema, AcceptsMatchingValues) {
  EXPECT_EQ(Check(R"({"city":"Rome","days":3})"), "ok");
  EXPECT_EQ(Check(R"({"city":"Rome","days":3.0,"budget":null,"mode":"train",
                      "stops":[{"name":"Pisa"}],"meta":{"v":true},"extra":1})"),
            "ok");
}

TEST(ValidateAgainstSchema, NamesThePathOfTheFirstProblem) {
  EXPECT_EQ(Check(R"({"days":3})"), "$: missing required key \"city\"");
  EXPECT_EQ(Check(R"({"city":"Rome","days":"3"})"), "$.days: expected integer, got string");
  EXPECT_EQ(Check(R"({"city":"Rome","days":2.5})"), "$.days: expected integer, got number");
  EXPECT_EQ(Check(R"({"city":"Rome","days":1,"budget":"x"})"),
            "$.budget: expected number or null, got string");
  EXPECT_EQ(Check(R"({"city":"Rome","days":1,"mode":"car"})"),
            "$.mode: \"car\" is not one of [\"train\",\"plane\"]");
  EXPECT_EQ(Check(R"({"city":"Rome","days":1,"stops":[{"name":"a"},{}]})"),
            "$.stops[1]: missing required key \"name\"");
  EXPECT_EQ(Check(R"({"city":"Rome","days":1,"meta":{"w":1}})"), "$.meta: unexpected key \"w\"");
  EXPECT_EQ(Check(R"([1])"), "$: expected object, got array");
}

TEST(ParseModelJson, ToleratesFencesAndSpace) {
  EXPECT_EQ(*ParseModelJson("  {\"a\":1}\n"), (nlohmann::json{{"a", 1}}));
  EXPECT_EQ(*ParseModelJson("```json\n{\"a\":1}\n```"), (nlohmann::json{{"a", 1}}));
  EXPECT_EQ(*ParseModelJson("```\n[1]\n```"), nlohmann::json::array({1}));
  EXPECT_FALSE(ParseModelJson("The answer is {\"a\":1}").ok());
  EXPECT_FALSE(ParseModelJson("").ok());
}

// A function-mode skill's answer nested far deeper than kMaxJsonNesting is refused: it passed
// {"type":"object"} and was then serialized recursively, overflowing the stack.
TEST(ParseModelJson, RefusesAnswersNestedTooDeeply) {
  constexpr int kDepth = 200000;
  std::string deep;
  for (int i = 0; i < kDepth; ++i) deep += R"({"a":)";
  deep += "1" + std::string(kDepth, '}');
  auto parsed = ParseModelJson(deep);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code, ErrorCode::kBadRequest);
  EXPECT_NE(parsed.error().message.find("nested deeper than"), std::string::npos)
      << parsed.error().message;
  EXPECT_TRUE(ParseModelJson(R"({"a":{"b":[1,2]}})").ok());
}

}  // namespace
}  // namespace wf
