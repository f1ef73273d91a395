#include "matching/flow_matcher.h"

#include <algorithm>
#include <limits>

#include "config/json_path.h"
#include "config/pattern.h"

namespace wf {

Result<std::shared_ptr<const FlowMatcher>> FlowMatcher::Build(
    const std::vector<FlowConfig>& flows) {
  std::shared_ptr<FlowMatcher> matcher(new FlowMatcher());
  matcher->flows_ = flows;
  std::size_t total = 0;
  for (const FlowConfig& flow : flows) total += flow.trigger_patterns.size();
  if (total == 0) return std::shared_ptr<const FlowMatcher>(std::move(matcher));
  if (total > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return Error{ErrorCode::kBadRequest, "flows: too many trigger patterns"};
  }

  RE2::Options set_options = TriggerPatternOptions();
  // The set's DFA holds states for all patterns at once: give it room, so that matching never
  // falls back to the one-by-one path for realistic configs.
  set_options.set_max_mem(
      std::max<int64_t>(set_options.max_mem(), static_cast<int64_t>(total) * (256 << 10)));
  auto set = std::make_unique<RE2::Set>(set_options, RE2::UNANCHORED);
  matcher->patterns_.reserve(total);
  for (std::size_t f = 0; f < flows.size(); ++f) {
    for (std::size_t p = 0; p < flows[f].trigger_patterns.size(); ++p) {
      const std::string& text = flows[f].trigger_patterns[p];
      std::string path = JsonPathIndex(JsonPathIndex("flows", f) + ".trigger_patterns", p);
      auto re = CompileTriggerPattern(text);
      if (!re.ok()) return Error{ErrorCode::kBadRequest, path + ": " + re.error().message};
      std::string set_error;
      int index = set->Add(text, &set_error);
      if (index < 0) {
        return Error{ErrorCode::kBadRequest, path + ": invalid regex: " + set_error};
      }
      Pattern pattern;
      pattern.flow_index = f;
      pattern.pattern_index = p;
      pattern.group_count = (*re)->NumberOfCapturingGroups();
      for (const auto& [group_index, name] : (*re)->CapturingGroupNames()) {
        pattern.named.emplace_back(group_index, name);
      }
      pattern.re = std::move(re).value();
      matcher->patterns_.push_back(std::move(pattern));
    }
  }
  if (!set->Compile()) {
    return Error{ErrorCode::kBadRequest, "flows: cannot compile " + std::to_string(total) +
                                             " trigger patterns into one set (out of memory)"};
  }
  matcher->set_ = std::move(set);
  return std::shared_ptr<const FlowMatcher>(std::move(matcher));
}

std::optional<FlowMatcher::Match> FlowMatcher::FindMatch(std::string_view message) const {
  if (!set_) return std::nullopt;
  thread_local std::vector<int> hits;
  hits.clear();
  RE2::Set::ErrorInfo info{RE2::Set::kNoError};
  re2::StringPiece text(message.data(), message.size());
  if (!set_->Match(text, &hits, &info)) {
    if (info.kind == RE2::Set::kOutOfMemory || info.kind == RE2::Set::kInconsistent) {
      return FindMatchOneByOne(message);
    }
    return std::nullopt;
  }
  if (hits.empty()) return std::nullopt;
  int winner = *std::min_element(hits.begin(), hits.end());
  return MakeMatch(patterns_[static_cast<std::size_t>(winner)], message);
}

std::optional<FlowMatcher::Match> FlowMatcher::FindMatchOneByOne(std::string_view message) const {
  re2::StringPiece text(message.data(), message.size());
  for (const Pattern& pattern : patterns_) {
    if (RE2::PartialMatch(text, *pattern.re)) return MakeMatch(pattern, message);
  }
  return std::nullopt;
}

FlowMatcher::Match FlowMatcher::MakeMatch(const Pattern& pattern, std::string_view message) const {
  Match match{pattern.flow_index, pattern.pattern_index, &flows_[pattern.flow_index],
              nlohmann::json::object()};
  if (pattern.named.empty()) return match;
  // Only as many submatches as the highest named group needs; on the stack for common sizes.
  int needed = pattern.named.back().first + 1;
  constexpr int kInline = 16;
  re2::StringPiece inline_groups[kInline];
  std::vector<re2::StringPiece> heap_groups;
  re2::StringPiece* groups = inline_groups;
  if (needed > kInline) {
    heap_groups.resize(static_cast<std::size_t>(needed));
    groups = heap_groups.data();
  }
  re2::StringPiece text(message.data(), message.size());
  if (!pattern.re->Match(text, 0, text.size(), RE2::UNANCHORED, groups, needed)) {
    return match;  // cannot happen: the set said this pattern matches
  }
  for (const auto& [index, name] : pattern.named) {
    const re2::StringPiece& group = groups[index];
    if (group.data() == nullptr || match.captures.contains(name)) continue;
    match.captures[name] = std::string(group.data(), group.size());
  }
  return match;
}

}  // namespace wf
