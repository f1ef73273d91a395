#include "agent/history.h"

#include <set>
#include <string>
#include <string_view>

namespace wf {
namespace {

std::size_t CodePoints(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

/// The history with system messages dropped and tool calls paired with their results.
std::vector<wf::v1::ChatMessage> Repair(const std::vector<wf::v1::ChatMessage>& history) {
  std::vector<wf::v1::ChatMessage> out;
  out.reserve(history.size());
  std::size_t i = 0;
  while (i < history.size()) {
    const auto& m = history[i];
    if (m.role() == "system" || m.role() == "tool") {
      ++i;  // a system message is replaced by ours; a tool message here answers nothing
      continue;
    }
    if (m.role() != "assistant" || m.tool_calls_size() == 0) {
      out.push_back(m);
      ++i;
      continue;
    }
    // An assistant message with tool calls and the tool messages right after it.
    std::set<std::string> call_ids;
    for (const auto& c : m.tool_calls()) call_ids.insert(c.id());
    std::size_t j = i + 1;
    std::set<std::string> answered;
    std::vector<const wf::v1::ChatMessage*> results;
    while (j < history.size() && history[j].role() == "tool") {
      const auto& t = history[j];
      if (call_ids.count(t.tool_call_id()) != 0 && answered.insert(t.tool_call_id()).second) {
        results.push_back(&t);
      }
      ++j;
    }
    wf::v1::ChatMessage assistant = m;
    assistant.clear_tool_calls();
    std::set<std::string> kept;
    for (const auto& c : m.tool_calls()) {
      if (answered.count(c.id()) != 0 && kept.insert(c.id()).second) {
        *assistant.add_tool_calls() = c;
      }
    }
    if (assistant.tool_calls_size() > 0 || !assistant.content().empty()) {
      out.push_back(std::move(assistant));
      for (const auto* r : results) out.push_back(*r);
    }
    i = j;
  }
  return out;
}

}  // namespace

std::size_t MessageChars(const wf::v1::ChatMessage& message) {
  std::size_t n = CodePoints(message.content());
  for (const auto& c : message.tool_calls()) n += CodePoints(c.arguments_json());
  return n;
}

std::vector<wf::v1::ChatMessage> TrimHistory(const std::vector<wf::v1::ChatMessage>& history,
                                             std::size_t max_messages, std::size_t max_chars) {
  std::vector<wf::v1::ChatMessage> messages = Repair(history);
  // Turn boundaries: index of each turn's first message. Messages before the first user message
  // (which a well-formed history does not have) count as one turn of their own.
  std::vector<std::size_t> starts;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 || messages[i].role() == "user") starts.push_back(i);
  }
  std::size_t total_chars = 0;
  for (const auto& m : messages) total_chars += MessageChars(m);
  std::size_t first = 0;  // index into messages of the first kept message
  std::size_t turn = 0;
  auto over = [&] {
    const std::size_t count = messages.size() - first;
    return (max_messages != 0 && count > max_messages) || (max_chars != 0 && total_chars > max_chars);
  };
  while (first < messages.size() && over()) {
    const std::size_t end = turn + 1 < starts.size() ? starts[turn + 1] : messages.size();
    for (std::size_t k = first; k < end; ++k) total_chars -= MessageChars(messages[k]);
    first = end;
    ++turn;
  }
  return {messages.begin() + static_cast<std::ptrdiff_t>(first), messages.end()};
}

}  // namespace wf
