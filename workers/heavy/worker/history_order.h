#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

namespace wf {

/// Which WF_HISTORY records a worker may store now. Records arrive in stream order; two that
/// share a session are stored one after the other in that order (so a session's flow turns keep
/// the order they were published in), and records with no session in common side by side.
/// A record that must wait waits behind every earlier record it shares a session with, and
/// also blocks later records that share one with it. Not thread-safe (the worker's lock guards
/// it). Pure logic, no I/O.
class HistoryOrder {
 public:
  /// A record `id` (its stream sequence, increasing) arrived with `sessions` (duplicates are
  /// fine). True: it may be stored now, and counts as storing until Done or Abandon. False: it
  /// waits; Done of the records ahead of it hands it out.
  bool Arrive(std::uint64_t id, const std::vector<std::string>& sessions);

  /// The storing record `id` is stored: the waiting records that may be stored now, in their
  /// order (each now counts as storing).
  std::vector<std::uint64_t> Done(std::uint64_t id);

  /// The storing record `id` was not stored and is kept elsewhere (retried in stream order):
  /// every waiting record, in order, leaves with it (they must stay behind it).
  std::vector<std::uint64_t> Abandon(std::uint64_t id);

  /// Records storing now.
  std::size_t storing() const { return storing_.size(); }
  /// Records waiting.
  std::size_t waiting() const { return waiting_.size(); }

 private:
  struct Record {
    std::uint64_t id = 0;
    std::vector<std::string> sessions;
  };
  bool Free(const Record& record, const std::unordered_map<std::string, int>& also_blocked) const;
  void Mark(const Record& record);
  void Unmark(std::uint64_t id);

  std::unordered_map<std::uint64_t, std::vector<std::string>> storing_;
  std::unordered_map<std::string, int> busy_;  // session -> storing records that hold it
  std::deque<Record> waiting_;
};

}  // namespace wf
