#include "matching/flow_matcher.h"

#include <algorithm>
#include <limits>

#include "config/json_path.h"
#include "config/pattern.h"

namespace wf {
namespace {

/// Failed anchored attempts before Extract falls back to one unanchored search from the next
/// candidate position. A failed attempt costs ~20 ns (the one-pass matcher stops at the first
/// byte that cannot continue), an unanchored search with submatches 400-800 ns on 200 bytes.
constexpr int kMaxAnchoredAttempts = 4;

/// Bytes of RE2::PossibleMatchRange asked for when bounding a pattern's first byte.
constexpr int kFirstBytesProbe = 4;

/// Whether a pattern's first-byte range from RE2::PossibleMatchRange holds at every position of
/// a message. PossibleMatchRange describes matches at the beginning of a text; a match in the
/// middle sees a different context only through \b and \B (after a word character), since ^
/// and \A at the beginning of a text only allow more. So: usable unless the pattern contains
/// \b or \B anywhere (conservative: also inside \Q...\E or a character class).
bool FirstRangeHoldsMidText(std::string_view pattern) {
  for (std::size_t i = 0; i + 1 < pattern.size(); ++i) {
    if (pattern[i] == '\\') {
      if (pattern[i + 1] == 'b' || pattern[i + 1] == 'B') return false;
      ++i;  // skip the escaped character
    }
  }
  return true;
}

/// Whether the pattern matches case-insensitively throughout: compiled without case
/// sensitivity and no inline flag group turns it off ("(?-i)", "(?s-i:"). Then the strings it
/// matches are closed under swapping the case of an ASCII letter (RE2 folds every literal and
/// class, and negates classes after folding). Conservative: any flag negation counts.
bool FoldsCaseThroughout(const RE2& re, std::string_view pattern) {
  if (re.options().case_sensitive()) return false;
  for (std::size_t i = 0; i + 1 < pattern.size(); ++i) {
    if (pattern[i] != '(' || pattern[i + 1] != '?') continue;
    for (std::size_t j = i + 2; j < pattern.size(); ++j) {
      char c = pattern[j];
      if (c == '-') return false;
      if (c != 'i' && c != 'm' && c != 's' && c != 'U') break;  // end of the flags
    }
  }
  return true;
}

bool IsAsciiLetter(unsigned b) { return (b | 0x20) >= 'a' && (b | 0x20) <= 'z'; }

}  // namespace

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
      // The bytes a match can start with, when RE2 can bound them: the first bytes of min
      // (non-empty, so no match is empty) and max give a range (max is rounded up in its last
      // byte, hence more than one byte of it); for a pattern that folds case,
      // an ASCII letter is only possible if its other case is in the range too.
      std::string min, max;
      if (FirstRangeHoldsMidText(text) && (*re)->PossibleMatchRange(&min, &max, kFirstBytesProbe) &&
          !min.empty() && !max.empty()) {
        unsigned lo = static_cast<unsigned char>(min[0]);
        unsigned hi = static_cast<unsigned char>(max[0]);
        bool folds = FoldsCaseThroughout(**re, text);
        for (unsigned b = lo; b <= hi; ++b) {
          unsigned other = b ^ 0x20;  // the other case of an ASCII letter
          if (folds && IsAsciiLetter(b) && (other < lo || other > hi)) continue;
          pattern.first_bytes[b] = 1;
        }
        pattern.has_first_bytes = true;
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
  int winner = hits.size() == 1 ? hits[0] : *std::min_element(hits.begin(), hits.end());
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
  Match match{pattern.flow_index, pattern.pattern_index, &flows_[pattern.flow_index], {}};
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
  if (!Extract(pattern, text, groups, needed)) {
    return match;  // cannot happen: the set said this pattern matches
  }
  for (const auto& [index, name] : pattern.named) {
    const re2::StringPiece& group = groups[index];
    if (group.data() == nullptr || match.captures.Find(name)) continue;
    match.captures.Add(name, std::string_view(group.data(), group.size()));
  }
  return match;
}

bool FlowMatcher::Extract(const Pattern& pattern, const re2::StringPiece& text,
                          re2::StringPiece* groups, int n) {
  const RE2& re = *pattern.re;
  std::size_t from = 0;
  if (pattern.has_first_bytes) {
    // The leftmost match starts at the first position where an anchored match exists, and
    // only positions holding a possible first byte can be one. RE2::Match keeps the whole
    // text as context for ^, $ and \b at any startpos, so an anchored match at i is exactly
    // the leftmost-first match when no earlier position has one.
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t size = text.size();
    int attempts = 0;
    std::size_t i = 0;
    for (; i < size; ++i) {
      if (pattern.first_bytes[bytes[i]] == 0) continue;
      if (attempts == kMaxAnchoredAttempts) break;
      if (re.Match(text, i, size, RE2::ANCHOR_START, groups, n)) return true;
      ++attempts;
    }
    // Either no match starts before i, so the unanchored search can begin there, or no
    // candidate matched at all (only if RE2 disagreed with itself): search everything.
    from = i < size ? i : 0;
  }
  return re.Match(text, from, text.size(), RE2::UNANCHORED, groups, n);
}

}  // namespace wf
