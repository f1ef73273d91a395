#pragma once

#include <re2/re2.h>
#include <re2/set.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "error/error.h"
#include "matching/capture_list.h"
#include "matching/parameter_resolver.h"

namespace wf {

/// Decides which flow a user message triggers. All trigger patterns of all flows are compiled
/// into one RE2::Set (case-insensitive, UTF-8, unanchored search) that answers "which patterns
/// match" in one pass over the message; only the winning pattern's own RE2 then runs, and only
/// when it has named groups, to extract the captures. That extraction gives exactly RE2's
/// leftmost-first match of the winning pattern; when the pattern's possible first bytes are
/// known (RE2::PossibleMatchRange) it is found with a few anchored attempts at the positions
/// where a match can start, which skips RE2's forward and reverse DFA passes.
///
/// Immutable after Build; FindMatch is const and safe to call from any number of threads at once
/// (RE2 and RE2::Set are thread-safe for matching). Never blocks on I/O.
class FlowMatcher {
 public:
  /// Compiles every pattern of `flows` (which are copied: the matcher owns what Match::flow
  /// points to). Error (kBadRequest): "flows[i].trigger_patterns[j]: invalid regex: ..." when a
  /// pattern does not compile, or "flows: cannot compile N trigger patterns into one set (out of
  /// memory)". Takes about 70 ms per 1,000 patterns (bench_match); call at start-up.
  static Result<std::shared_ptr<const FlowMatcher>> Build(const std::vector<FlowConfig>& flows);

  /// The winning flow of a message.
  struct Match {
    std::size_t flow_index;     ///< Index in the flows given to Build (config order).
    std::size_t pattern_index;  ///< Index of the winning pattern in that flow's trigger_patterns.
    const FlowConfig* flow;     ///< The matcher's copy of that flow; lives as long as the matcher.
    /// Named groups, in group order: name -> captured text (owned; names point into the
    /// matcher). Groups that did not take part in the match are omitted; if several groups
    /// share a name, the first one that took part wins. captures.ToJson() gives the JSON object.
    CaptureList captures;
  };

  /// The first flow in config order with a pattern that matches somewhere in `message` (then
  /// the first of its matching patterns), or nullopt when nothing matches. Any size of message
  /// is handled (callers bound it); cost is linear in its length. Thread-safe.
  std::optional<Match> FindMatch(std::string_view message) const;

  /// Total number of trigger patterns over all flows.
  std::size_t pattern_count() const { return patterns_.size(); }

  /// The flows given to Build, in order.
  const std::vector<FlowConfig>& flows() const { return flows_; }

  FlowMatcher(const FlowMatcher&) = delete;
  FlowMatcher& operator=(const FlowMatcher&) = delete;

 private:
  struct Pattern {
    std::size_t flow_index;
    std::size_t pattern_index;
    std::unique_ptr<RE2> re;
    int group_count;                                 // capturing groups, named or not
    std::vector<std::pair<int, std::string>> named;  // group index -> name, ascending
    // When has_first_bytes: every match of the pattern starts with a byte b for which
    // first_bytes[b] is 1 (see Build for when that is known to hold). A byte per value, not a
    // bit: the scan for candidates is one load and test per byte of the message.
    bool has_first_bytes = false;
    std::array<uint8_t, 256> first_bytes{};
  };

  FlowMatcher() = default;
  Match MakeMatch(const Pattern& pattern, std::string_view message) const;
  /// The winning pattern's leftmost-first match of `text` with `n` submatches.
  static bool Extract(const Pattern& pattern, const re2::StringPiece& text,
                      re2::StringPiece* groups, int n);
  /// Slow path when the set's DFA runs out of memory: try each pattern in order.
  std::optional<Match> FindMatchOneByOne(std::string_view message) const;

  std::vector<FlowConfig> flows_;
  std::vector<Pattern> patterns_;  // in set index order = config order
  std::unique_ptr<RE2::Set> set_;  // null when there are no patterns
};

}  // namespace wf
