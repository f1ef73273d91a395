#include "matching/parameter_resolver.h"

#include <gtest/gtest.h>

#include "config/config.h"
#include "matching/flow_matcher.h"

namespace wf {
namespace {

using nlohmann::json;

ParameterSpec Spec(std::string name, std::string type, bool required = false,
                   std::optional<json> default_value = std::nullopt) {
  ParameterSpec spec;
  spec.name = std::move(name);
  spec.type = std::move(type);
  spec.required = required;
  spec.default_value = std::move(default_value);
  return spec;
}

json MustResolve(const std::vector<ParameterSpec>& specs, const json& captures,
                 const json& request) {
  auto r = ResolveParameters(specs, captures, request);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : json();
}

TEST(ResolveParametersTest, RequestParametersOverrideCaptures) {
  json out =
      MustResolve({Spec("order_id", "string", true)}, {{"order_id", "111"}, {"extra", "cap"}},
                  {{"order_id", "222"}, {"note", "hi"}});
  EXPECT_EQ(out, json({{"order_id", "222"}, {"extra", "cap"}, {"note", "hi"}}));
}

TEST(ResolveParametersTest, NullRequestValueDoesNotErase) {
  json out = MustResolve({Spec("order_id", "string", true)}, {{"order_id", "111"}},
                         {{"order_id", nullptr}});
  EXPECT_EQ(out, json({{"order_id", "111"}}));
}

TEST(ResolveParametersTest, DefaultsFillWhatIsMissing) {
  std::vector<ParameterSpec> specs = {
      Spec("city", "string", true), Spec("unit", "string", false, json("c")),
      Spec("days", "integer", false, json(1)), Spec("verbose", "boolean", false, json(false)),
      Spec("note", "string")};
  json out = MustResolve(specs, {{"city", "Paris"}}, json());
  EXPECT_EQ(out, json({{"city", "Paris"}, {"unit", "c"}, {"days", 1}, {"verbose", false}}));
  out = MustResolve(specs, {{"city", "Paris"}}, {{"days", 5}});
  EXPECT_EQ(out["days"], 5);
}

TEST(ResolveParametersTest, MissingRequiredNamesTheParameter) {
  auto r = ResolveParameters({Spec("city", "string", true), Spec("order_id", "string", true)},
                             {{"city", "x"}}, json::object());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kMissingParameter);
  EXPECT_EQ(r.error().message, "missing parameter: order_id");
  // A required parameter with a default is satisfied by it.
  EXPECT_TRUE(ResolveParameters({Spec("n", "integer", true, json(3))}, json(), json()).ok());
}

TEST(ResolveParametersTest, CoercesCapturedStrings) {
  std::vector<ParameterSpec> specs = {Spec("days", "integer"),  Spec("amount", "number"),
                                      Spec("ratio", "number"),  Spec("urgent", "boolean"),
                                      Spec("quiet", "boolean"), Spec("filter", "object"),
                                      Spec("ids", "array"),     Spec("raw", "")};
  json out = MustResolve(specs,
                         {{"days", "3"},
                          {"amount", "12"},
                          {"ratio", "2.5"},
                          {"urgent", "TRUE"},
                          {"quiet", "false"},
                          {"filter", R"({"a":1})"},
                          {"ids", "[1,2]"},
                          {"raw", "7"}},
                         json());
  EXPECT_EQ(out["days"], json(3));
  EXPECT_TRUE(out["days"].is_number_integer());
  EXPECT_EQ(out["amount"], json(12));
  EXPECT_TRUE(out["amount"].is_number_integer());
  EXPECT_DOUBLE_EQ(out["ratio"].get<double>(), 2.5);
  EXPECT_EQ(out["urgent"], json(true));
  EXPECT_EQ(out["quiet"], json(false));
  EXPECT_EQ(out["filter"], json({{"a", 1}}));
  EXPECT_EQ(out["ids"], json({1, 2}));
  EXPECT_EQ(out["raw"], json("7"));  // no declared type: left alone
}

TEST(ResolveParametersTest, CoercesRequestValuesToo) {
  json out =
      MustResolve({Spec("order_id", "string"), Spec("days", "integer"), Spec("n", "integer")},
                  json(), {{"order_id", 1234}, {"days", 2.0}, {"n", " 42 "}});
  EXPECT_EQ(out["order_id"], json("1234"));
  EXPECT_EQ(out["days"], json(2));
  EXPECT_TRUE(out["days"].is_number_integer());
  EXPECT_EQ(out["n"], json(42));
}

TEST(ResolveParametersTest, CoercionFailureNamesTheParameter) {
  struct Case {
    ParameterSpec spec;
    json value;
    std::string message;
  };
  for (const Case& t : {
           Case{Spec("days", "integer"), "three",
                "parameter days: expected integer, got \"three\""},
           Case{Spec("days", "integer"), "2.5", "parameter days: expected integer, got \"2.5\""},
           Case{Spec("days", "integer"), "99999999999999999999999",
                "parameter days: expected integer, got \"99999999999999999999999\""},
           Case{Spec("days", "integer"), true, "parameter days: expected integer, got true"},
           Case{Spec("amount", "number"), "12abc",
                "parameter amount: expected number, got \"12abc\""},
           Case{Spec("amount", "number"), "", "parameter amount: expected number, got \"\""},
           Case{Spec("flag", "boolean"), "yes", "parameter flag: expected boolean, got \"yes\""},
           Case{Spec("flag", "boolean"), 1, "parameter flag: expected boolean, got 1"},
           Case{Spec("name", "string"), json({{"a", 1}}),
                "parameter name: expected string, got {\"a\":1}"},
           Case{Spec("filter", "object"), "[1]", "parameter filter: expected object, got \"[1]\""},
           Case{Spec("ids", "array"), "not json",
                "parameter ids: expected array, got \"not json\""},
       }) {
    auto r = ResolveParameters({t.spec}, {{t.spec.name, t.value}}, json());
    ASSERT_FALSE(r.ok()) << t.message;
    EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
    EXPECT_EQ(r.error().message, t.message);
  }
}

TEST(ResolveParametersTest, LongValuesAreShortenedInErrors) {
  auto r = ResolveParameters({Spec("n", "integer")}, {{"n", std::string(1000, 'x')}}, json());
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.error().message.size(), 120u);
}

TEST(ResolveParametersTest, Enum) {
  ParameterSpec unit = Spec("unit", "string");
  unit.enum_values = json({"c", "f"});
  EXPECT_EQ(MustResolve({unit}, {{"unit", "f"}}, json())["unit"], "f");
  auto r = ResolveParameters({unit}, {{"unit", "k"}}, json());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(r.error().message, "parameter unit: \"k\" must be one of [\"c\",\"f\"]");
  ParameterSpec level = Spec("level", "integer");
  level.enum_values = json({1, 2, 3});
  EXPECT_EQ(MustResolve({level}, {{"level", "2"}}, json())["level"], 2);  // coerced, then checked
}

TEST(ResolveParametersTest, ArgumentsMustBeObjects) {
  auto r = ResolveParameters({}, json(), json::array({1}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(r.error().message, "parameters must be a JSON object");
  EXPECT_EQ(MustResolve({}, json(), json()), json::object());
}

TEST(ResolveParametersTest, EndToEndFromConfigAndMatcher) {
  auto config = ParseConfig(R"J({"flows": [{
      "flow_id": "leave",
      "trigger_patterns": ["请假(?P<days>\\d+)天", "leave for (?P<days>\\d+) days?"],
      "parameters": {"type": "object",
                     "properties": {"days": {"type": "integer"},
                                    "reason": {"type": "string", "default": "personal"}},
                     "required": ["days"]},
      "endpoint": {"url": "http://hr.internal/leave", "method": "POST",
                   "body": {"days": "{days}", "reason": "{reason}"}}}]})J");
  ASSERT_TRUE(config.ok()) << config.error().message;
  auto matcher = FlowMatcher::Build((*config)->flows);
  ASSERT_TRUE(matcher.ok()) << matcher.error().message;
  auto match = (*matcher)->FindMatch("我要请假3天");
  ASSERT_TRUE(match);
  auto params = ResolveParameters(match->flow->parameters, match->captures, json());
  ASSERT_TRUE(params.ok()) << params.error().message;
  EXPECT_EQ(*params, json({{"days", 3}, {"reason", "personal"}}));
  params = ResolveParameters(match->flow->parameters, match->captures, {{"reason", "sick"}});
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(*params, json({{"days", 3}, {"reason", "sick"}}));
  // The CaptureList overload is the JSON one without the intermediate object.
  auto via_json =
      ResolveParameters(match->flow->parameters, match->captures.ToJson(), {{"reason", "sick"}});
  ASSERT_TRUE(via_json.ok());
  EXPECT_EQ(*params, *via_json);
  auto bad = (*matcher)->FindMatch("leave for x days");
  EXPECT_FALSE(bad);
  bad = (*matcher)->FindMatch("请假abc天");
  EXPECT_FALSE(bad);
  params = ResolveParameters(match->flow->parameters, match->captures, json::array());
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.error().message, "parameters must be a JSON object");
  // Called explicitly (by the agent) without the required parameter.
  params = ResolveParameters(match->flow->parameters, json(), json::object());
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.error().message, "missing parameter: days");
}

}  // namespace
}  // namespace wf
