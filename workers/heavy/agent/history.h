#pragma once

#include <cstddef>
#include <vector>

#include "wf/v1/session.pb.h"

namespace wf {

/// The part of a session's stored history that the model is shown this turn.
///
/// First the history is made valid for chat completions: system messages are dropped (the
/// agent's own system prompt comes first), an assistant message keeps only the tool calls that
/// are answered by the tool messages directly after it (and is dropped when that leaves it with
/// neither text nor calls), and tool messages that answer no such call are dropped.
///
/// Then, while the history holds more than `max_messages` messages or more than `max_chars`
/// characters (UTF-8 code points of contents and tool-call arguments), the OLDEST WHOLE TURN is
/// dropped. A turn is a user message and everything up to the next user message, so an assistant
/// message with tool calls is never separated from its tool results, and the model never sees
/// half a turn. If the newest turn alone is over a limit, no history is shown. 0 = no limit.
/// Pure; any thread.
std::vector<wf::v1::ChatMessage> TrimHistory(const std::vector<wf::v1::ChatMessage>& history,
                                             std::size_t max_messages, std::size_t max_chars);

/// The size TrimHistory counts for one message (code points of content and tool arguments). Pure.
std::size_t MessageChars(const wf::v1::ChatMessage& message);

}  // namespace wf
