#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "error/error.h"

namespace wf {

/// One piece of a parsed template: literal text, or a `{name}` placeholder.
struct TemplateSegment {
  bool is_placeholder = false;
  /// The literal text (braces already unescaped), or the placeholder's full name ("result.a.0").
  std::string text;
  /// For a placeholder: its name split at '.' ({"result", "a", "0"}); empty for literal text.
  std::vector<std::string> path;
};

/// Parses the template syntax shared by endpoint url/headers/body strings and response templates:
/// `{name}` where name is [A-Za-z_][A-Za-z0-9_.]* with no empty '.'-separated part, `{{` and `}}`
/// for literal braces. Adjacent literal text is merged into one segment.
/// Errors (kBadRequest, message without a JSON path; the caller prefixes one):
/// "unclosed '{' at offset N", "invalid placeholder name 'x y' at offset N",
/// "single '}' at offset N (write '}}' for a literal brace)". Pure; any thread.
Result<std::vector<TemplateSegment>> ParseTemplate(std::string_view text);

/// True if `text` is exactly one placeholder and nothing else ("{days}"), which a JSON body
/// template replaces by the value itself, keeping its JSON type.
bool IsWholePlaceholder(const std::vector<TemplateSegment>& segments);

}  // namespace wf
