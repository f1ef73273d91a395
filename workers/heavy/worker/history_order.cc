#include "worker/history_order.h"

#include <algorithm>
#include <utility>

namespace wf {

bool HistoryOrder::Arrive(std::uint64_t id, const std::vector<std::string>& sessions) {
  Record record{id, sessions};
  std::sort(record.sessions.begin(), record.sessions.end());
  record.sessions.erase(std::unique(record.sessions.begin(), record.sessions.end()),
                        record.sessions.end());
  std::unordered_map<std::string, int> waiting_sessions;
  for (const Record& waiting : waiting_) {
    for (const std::string& session : waiting.sessions) ++waiting_sessions[session];
  }
  if (Free(record, waiting_sessions)) {
    Mark(record);
    return true;
  }
  waiting_.push_back(std::move(record));
  return false;
}

std::vector<std::uint64_t> HistoryOrder::Done(std::uint64_t id) {
  Unmark(id);
  std::vector<std::uint64_t> ready;
  std::unordered_map<std::string, int> skipped;  // sessions of the records still waiting
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (Free(*it, skipped)) {
      Mark(*it);
      ready.push_back(it->id);
      it = waiting_.erase(it);
    } else {
      for (const std::string& session : it->sessions) ++skipped[session];
      ++it;
    }
  }
  return ready;
}

std::vector<std::uint64_t> HistoryOrder::Abandon(std::uint64_t id) {
  Unmark(id);
  std::vector<std::uint64_t> left;
  left.reserve(waiting_.size());
  for (const Record& record : waiting_) left.push_back(record.id);
  waiting_.clear();
  return left;
}

bool HistoryOrder::Free(const Record& record,
                        const std::unordered_map<std::string, int>& also_blocked) const {
  return std::none_of(record.sessions.begin(), record.sessions.end(),
                      [&](const std::string& session) {
                        return busy_.contains(session) || also_blocked.contains(session);
                      });
}

void HistoryOrder::Mark(const Record& record) {
  for (const std::string& session : record.sessions) ++busy_[session];
  storing_.emplace(record.id, record.sessions);
}

void HistoryOrder::Unmark(std::uint64_t id) {
  auto it = storing_.find(id);
  if (it == storing_.end()) return;
  for (const std::string& session : it->second) {
    auto busy = busy_.find(session);
    if (busy != busy_.end() && --busy->second == 0) busy_.erase(busy);
  }
  storing_.erase(it);
}

}  // namespace wf
