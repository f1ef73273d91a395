#pragma once

#include <array>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wf {

/// The named groups of one match: (name, captured text) pairs in group order, each name once.
///
/// Built for the matching hot path: the first kInline entries live inside the object and the
/// captured texts are copied into one string (no allocation while they total at most 15 bytes,
/// the string's inline capacity), so a typical match allocates nothing. The values are owned;
/// the names are views into the FlowMatcher that produced the list, which must outlive it (as
/// it must for Match::flow). Copyable and movable; not thread-safe for concurrent mutation.
class CaptureList {
 public:
  static constexpr std::size_t kInline = 4;

  /// Appends a capture. Precondition: no entry named `name` yet (the matcher checks).
  void Add(std::string_view name, std::string_view value) {
    Entry entry{name, values_.size(), value.size()};
    values_.append(value.data(), value.size());
    if (size_ < kInline) {
      inline_[size_] = entry;
    } else {
      more_.push_back(entry);
    }
    ++size_;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  /// Name of entry `i` (< size()).
  std::string_view name(std::size_t i) const { return At(i).name; }
  /// Captured text of entry `i` (< size()); may be empty. Valid until this list changes.
  std::string_view value(std::size_t i) const {
    const Entry& e = At(i);
    return std::string_view(values_).substr(e.offset, e.size);
  }

  /// The captured text of group `name`, or nullopt when it is not in the list.
  std::optional<std::string_view> Find(std::string_view name) const {
    for (std::size_t i = 0; i < size_; ++i) {
      if (At(i).name == name) return value(i);
    }
    return std::nullopt;
  }

  /// JSON object name -> captured string (the form ResolveParameters and the wire take).
  nlohmann::json ToJson() const {
    nlohmann::json out = nlohmann::json::object();
    for (std::size_t i = 0; i < size_; ++i) out[std::string(name(i))] = std::string(value(i));
    return out;
  }

 private:
  struct Entry {
    std::string_view name;
    std::size_t offset;
    std::size_t size;
  };
  const Entry& At(std::size_t i) const { return i < kInline ? inline_[i] : more_[i - kInline]; }

  std::size_t size_ = 0;
  std::array<Entry, kInline> inline_{};
  std::vector<Entry> more_;  // entries after the first kInline
  std::string values_;       // all captured texts, back to back
};

}  // namespace wf
