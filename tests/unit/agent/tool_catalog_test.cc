#include "agent/tool_catalog.h"

#include <gtest/gtest.h>

namespace wf {
namespace {

Config MakeConfig() {
  Config c;
  ToolConfig t;
  t.name = "weather";
  t.description = "w";
  t.parameters_schema = {{"type", "object"}};
  c.tools.push_back(t);
  FlowConfig f;
  f.flow_id = "leave_request";
  f.name = "Leave request";
  f.parameters_schema = {{"type", "object"}, {"properties", {{"days", {{"type", "integer"}}}}}};
  c.flows.push_back(f);
  SkillConfig a;
  a.name = "planner";
  a.allowed_tools = {"weather", "summarize", "leave_request"};
  c.skills.push_back(a);
  SkillConfig b;
  b.name = "summarize";
  b.mode = "function";
  c.skills.push_back(b);
  return c;
}

TEST(ToolCatalog, AgentOffersToolsFlowsAndSkills) {
  const Config c = MakeConfig();
  const ToolCatalog cat = ToolCatalog::ForAgent(c);
  EXPECT_EQ(cat.NameList(), "weather, leave_request, planner, summarize");
  const OfferedTool* flow = cat.Find("leave_request");
  ASSERT_NE(flow, nullptr);
  EXPECT_EQ(flow->kind, ToolKind::kFlow);
  EXPECT_EQ(flow->spec.description, "Leave request");  // the name when there is no description
  EXPECT_EQ(flow->spec.parameters["properties"]["days"]["type"], "integer");
  ASSERT_NE(cat.Find("planner"), nullptr);
  EXPECT_EQ(cat.Find("planner")->kind, ToolKind::kSkill);
  EXPECT_EQ(cat.Find("planner")->skill, &c.skills[0]);
  EXPECT_EQ(cat.Find("nope"), nullptr);
  EXPECT_EQ(ToolKindName(ToolKind::kFlow), "flow");

  // The request's functions: the same entries, in catalog order, encoded once.
  ASSERT_NE(cat.Tools(), nullptr);
  ASSERT_EQ(cat.Tools()->size(), 4u);
  EXPECT_EQ(cat.Tools()->specs()[1].name, "leave_request");
  const auto tools = nlohmann::json::parse(cat.Tools()->json());
  ASSERT_EQ(tools.size(), 4u);
  EXPECT_EQ(tools[1]["function"]["name"], "leave_request");
  EXPECT_EQ(tools[1]["function"]["parameters"]["properties"]["days"]["type"], "integer");
  EXPECT_EQ(tools[3]["function"]["name"], "summarize");
}

TEST(ToolCatalog, AnEmptyCatalogOffersNoFunctions) {
  const ToolCatalog empty;
  ASSERT_NE(empty.Tools(), nullptr);
  EXPECT_TRUE(empty.Tools()->empty());
  EXPECT_EQ(empty.Tools()->json(), "[]");
}

TEST(ToolCatalog, SkillSeesOnlyItsAllowedTools) {
  const Config c = MakeConfig();
  EXPECT_EQ(ToolCatalog::ForSkill(c, c.skills[0], true).NameList(),
            "weather, summarize, leave_request");
  EXPECT_EQ(ToolCatalog::ForSkill(c, c.skills[0], false).NameList(), "weather, leave_request");
  EXPECT_TRUE(ToolCatalog::ForSkill(c, c.skills[1], true).empty());
}

}  // namespace
}  // namespace wf
