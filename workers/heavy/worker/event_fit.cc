#include "worker/event_fit.h"

#include <string>

#include "error/error.h"
#include "text/utf8.h"

namespace wf {
namespace {

/// Room left for the note and protobuf framing when a text is cut.
constexpr std::size_t kCutMargin = 256;

/// Cuts `text` so that the message holding it shrinks by at least `excess` bytes; false when
/// the text is too short to make the difference.
bool CutText(std::string* text, std::size_t excess) {
  const std::size_t original = text->size();
  if (original == 0) return false;
  const std::size_t keep = original > excess + kCutMargin ? original - excess - kCutMargin : 0;
  std::string cut(Utf8Truncate(*text, keep));
  cut += "\n[truncated: " + std::to_string(cut.size()) + " of " + std::to_string(original) +
         " bytes shown]";
  if (cut.size() >= original) return false;
  *text = std::move(cut);
  return true;
}

}  // namespace

EventFit FitEvent(wf::v1::QueryEvent& event, std::size_t max_bytes) {
  const std::size_t size = event.ByteSizeLong();
  if (size <= max_bytes) return EventFit::kFits;
  const std::size_t excess = size - max_bytes;
  bool cut = false;
  switch (event.kind_case()) {
    case wf::v1::QueryEvent::kToolResult: {
      auto* result = event.mutable_tool_result();
      cut = CutText(result->mutable_content(), excess);
      if (cut) result->set_truncated(true);
      if (event.ByteSizeLong() > max_bytes && result->has_error()) {
        cut =
            CutText(result->mutable_error()->mutable_message(), event.ByteSizeLong() - max_bytes) ||
            cut;
      }
      break;
    }
    case wf::v1::QueryEvent::kToolCall:
      cut = CutText(event.mutable_tool_call()->mutable_arguments_json(), excess);
      break;
    case wf::v1::QueryEvent::kToken:
      cut = CutText(event.mutable_token(), excess);
      break;
    case wf::v1::QueryEvent::kError:
      cut = CutText(event.mutable_error()->mutable_message(), excess);
      break;
    case wf::v1::QueryEvent::kFinal: {
      const std::size_t answer = event.final().answer().size();
      const std::string session = event.final().session_id();
      std::string message = "the answer (" + std::to_string(answer) +
                            " bytes) is larger than the largest message the event bus carries (" +
                            std::to_string(max_bytes) + " bytes)";
      if (!session.empty()) message += "; the turn is stored in session " + session;
      event.mutable_error()->set_code(std::string(WireName(ErrorCode::kResponseTooLarge)));
      event.mutable_error()->set_message(std::move(message));
      return EventFit::kReplaced;
    }
    default:
      break;
  }
  return cut && event.ByteSizeLong() <= max_bytes ? EventFit::kTruncated : EventFit::kTooLarge;
}

std::size_t FitSessionReply(wf::v1::SessionReply& reply, std::size_t max_bytes) {
  if (!reply.has_history() || reply.ByteSizeLong() <= max_bytes) return 0;
  auto* history = reply.mutable_history();
  const std::size_t longest = max_bytes / 4;
  for (auto& message : *history->mutable_messages()) {
    if (message.content().size() > longest) {
      CutText(message.mutable_content(), message.content().size() - longest);
    }
  }
  std::size_t size = reply.ByteSizeLong();
  int drop = 0;
  // Each message costs its bytes plus a tag and a length prefix (at most 6 bytes here).
  while (size > max_bytes && drop < history->messages_size()) {
    size -= history->messages(drop).ByteSizeLong() + 6;
    ++drop;
  }
  if (drop == 0) return 0;
  history->mutable_messages()->DeleteSubrange(0, drop);
  history->set_omitted_messages(static_cast<std::uint32_t>(drop));
  return static_cast<std::size_t>(drop);
}

}  // namespace wf
