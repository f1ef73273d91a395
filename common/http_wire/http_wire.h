#pragma once

#include <string>
#include <string_view>

namespace wf {

/// The chunk that ends a chunked HTTP/1.1 body.
inline constexpr std::string_view kHttpLastChunk = "0\r\n\r\n";

/// The reason phrase of an HTTP status ("OK", "Not Found", ...); "Unknown" for codes not in the
/// table. Pure; any thread.
std::string_view HttpReasonPhrase(int status);

/// Appends the status line of an HTTP/1.1 response: "HTTP/1.1 <status> <reason>\r\n" (reason
/// from HttpReasonPhrase). Pure; any thread.
void AppendHttpStatusLine(std::string* out, int status);

/// Appends `data` as one HTTP/1.1 chunk (hex size, CRLF, data, CRLF). Empty data appends nothing
/// (an empty chunk would end the body). Pure; any thread.
void AppendHttpChunk(std::string* out, std::string_view data);

}  // namespace wf
