#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wf {

/// Path of member `key` of the value at `parent` ("" = the document root), in the notation of
/// config errors: `flows[3].endpoint.headers.X-Session`; a key with characters outside
/// [A-Za-z0-9_-] is quoted: `properties["a b"]`. Pure.
std::string JsonPathMember(std::string_view parent, std::string_view key);

/// Path of element `index` of the array at `parent`: `flows[3]`. Pure.
std::string JsonPathIndex(std::string_view parent, std::size_t index);

}  // namespace wf
