#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "llm/chat_types.h"

namespace wf {

/// What a name offered to the model stands for.
enum class ToolKind { kTool, kFlow, kSkill };

/// "tool", "flow" or "skill" (ToolCall.kind on the wire).
std::string_view ToolKindName(ToolKind kind);

/// One function offered to the model.
struct OfferedTool {
  ChatToolSpec spec;
  ToolKind kind = ToolKind::kTool;
  const SkillConfig* skill = nullptr;  ///< For kSkill: points into the Config.
};

/// The functions one agent conversation offers, by name. Holds pointers into the Config it was
/// built from, which must outlive it. Immutable after construction; any thread.
class ToolCatalog {
 public:
  ToolCatalog() = default;

  /// The router agent's catalog: every configured tool (kind "tool"), every flow as a tool named
  /// by its flow_id with its description (or name) and parameters schema (kind "flow"), and every
  /// skill (kind "skill"), in that order. Names are unique (the config guarantees it; a repeat
  /// would be skipped).
  static ToolCatalog ForAgent(const Config& config);

  /// A skill sub-agent's catalog: only the skill's allowed_tools; skills among them only when
  /// `allow_skills` (the nesting depth limit). Empty allowed_tools = nothing offered.
  static ToolCatalog ForSkill(const Config& config, const SkillConfig& skill, bool allow_skills);

  /// The entry named `name`, or nullptr.
  const OfferedTool* Find(std::string_view name) const;
  /// The functions in catalog order, encoded once for every request that offers them.
  const std::shared_ptr<const ChatTools>& Tools() const { return tools_; }
  /// Names in catalog order, joined by ", " (for "unknown tool" messages).
  std::string NameList() const;
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }

 private:
  void Add(OfferedTool entry);
  /// Encodes tools_ from entries_ (the factories' last step).
  void Seal();

  std::vector<OfferedTool> entries_;
  std::unordered_map<std::string, std::size_t> index_;
  std::shared_ptr<const ChatTools> tools_ =
      std::make_shared<const ChatTools>(std::vector<ChatToolSpec>{});
};

}  // namespace wf
