#pragma once

#include <cstddef>
#include <string_view>

namespace wf {

/// Length of the "http://" or "https://" (any case) that `url` starts with, else 0. Pure.
std::size_t HttpSchemeLength(std::string_view url);

/// Why `url` is not an absolute http(s) URL naming a host, or "" when it is. The checks, in
/// order: the scheme is http or https in any case ("url must start with http:// or https://");
/// no byte is whitespace or a control character ("url contains whitespace or control
/// characters"); the authority (up to the first / ? #), after any user info and before any
/// port, is not empty ("url has no host"). The one rule for outbound URLs, whether a flow's
/// endpoint template or a command-line flag. Pure.
std::string_view HttpUrlProblem(std::string_view url);

}  // namespace wf
