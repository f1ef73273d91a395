#include "config/pattern.h"

namespace wf {
namespace {

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

/// Why RE2 rejected a construct that other regex engines accept, or "".
std::string Hint(const RE2& re) {
  const std::string& arg = re.error_arg();
  switch (re.error_code()) {
    case RE2::ErrorBadPerlOp:
      if (StartsWith(arg, "(?=") || StartsWith(arg, "(?!")) {
        return "look-ahead assertions are not supported by RE2";
      }
      if (StartsWith(arg, "(?<")) {
        return "look-behind assertions and (?<name>...) groups are not supported by RE2; "
               "write named groups as (?P<name>...)";
      }
      if (StartsWith(arg, "(?>")) return "atomic groups are not supported by RE2";
      if (StartsWith(arg, "(?P")) return "back-references are not supported by RE2";
      return "";
    case RE2::ErrorBadEscape:
      if (arg.size() >= 2 && ((arg[1] >= '1' && arg[1] <= '9') || arg[1] == 'k' || arg[1] == 'g')) {
        return "back-references are not supported by RE2";
      }
      return "";
    case RE2::ErrorRepeatOp:
      if (arg.size() >= 2 && arg.back() == '+') {
        return "possessive quantifiers are not supported by RE2";
      }
      return "";
    default:
      return "";
  }
}

}  // namespace

RE2::Options TriggerPatternOptions() {
  RE2::Options options;
  options.set_encoding(RE2::Options::EncodingUTF8);
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  options.set_max_mem(int64_t{64} << 20);
  return options;
}

Result<std::unique_ptr<RE2>> CompileTriggerPattern(std::string_view pattern) {
  auto re = std::make_unique<RE2>(re2::StringPiece(pattern.data(), pattern.size()),
                                  TriggerPatternOptions());
  if (!re->ok()) {
    std::string message = "invalid regex: " + re->error();
    std::string hint = Hint(*re);
    if (!hint.empty()) message += " (" + hint + ")";
    return Error{ErrorCode::kBadRequest, std::move(message)};
  }
  return re;
}

}  // namespace wf
