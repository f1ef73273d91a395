#include "agent/tool_catalog.h"

#include <utility>

namespace wf {
namespace {

OfferedTool FromTool(const ToolConfig& t) {
  return OfferedTool{ChatToolSpec{t.name, t.description, t.parameters_schema}, ToolKind::kTool,
                     nullptr};
}

OfferedTool FromFlow(const FlowConfig& f) {
  std::string description = f.description;
  if (description.empty()) description = f.name;
  return OfferedTool{ChatToolSpec{f.flow_id, description, f.parameters_schema}, ToolKind::kFlow,
                     nullptr};
}

OfferedTool FromSkill(const SkillConfig& s) {
  return OfferedTool{ChatToolSpec{s.name, s.description, s.parameters_schema}, ToolKind::kSkill,
                     &s};
}

}  // namespace

std::string_view ToolKindName(ToolKind kind) {
  switch (kind) {
    case ToolKind::kTool: return "tool";
    case ToolKind::kFlow: return "flow";
    case ToolKind::kSkill: return "skill";
  }
  return "tool";
}

void ToolCatalog::Add(OfferedTool entry) {
  if (Find(entry.spec.name) != nullptr) return;
  index_.emplace(entry.spec.name, entries_.size());
  entries_.push_back(std::move(entry));
}

ToolCatalog ToolCatalog::ForAgent(const Config& config) {
  ToolCatalog catalog;
  for (const auto& t : config.tools) catalog.Add(FromTool(t));
  for (const auto& f : config.flows) catalog.Add(FromFlow(f));
  for (const auto& s : config.skills) catalog.Add(FromSkill(s));
  catalog.Seal();
  return catalog;
}

ToolCatalog ToolCatalog::ForSkill(const Config& config, const SkillConfig& skill,
                                  bool allow_skills) {
  ToolCatalog catalog;
  for (const auto& name : skill.allowed_tools) {
    if (name == skill.name) continue;
    if (const ToolConfig* t = config.FindTool(name)) {
      catalog.Add(FromTool(*t));
    } else if (const FlowConfig* f = config.FindFlow(name)) {
      catalog.Add(FromFlow(*f));
    } else if (const SkillConfig* s = config.FindSkill(name); s != nullptr && allow_skills) {
      catalog.Add(FromSkill(*s));
    }
  }
  catalog.Seal();
  return catalog;
}

const OfferedTool* ToolCatalog::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void ToolCatalog::Seal() {
  std::vector<ChatToolSpec> specs;
  specs.reserve(entries_.size());
  for (const auto& e : entries_) specs.push_back(e.spec);
  tools_ = std::make_shared<const ChatTools>(std::move(specs));
}

std::string ToolCatalog::NameList() const {
  std::string out;
  for (const auto& e : entries_) {
    if (!out.empty()) out += ", ";
    out += e.spec.name;
  }
  return out;
}

}  // namespace wf
