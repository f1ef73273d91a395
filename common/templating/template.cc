#include "templating/template.h"

#include <algorithm>
#include <array>
#include <optional>

#include "codec/json_dump.h"
#include "codec/json_scan.h"
#include "config/json_path.h"
#include "text/ascii.h"

namespace wf {
namespace {

using Json = nlohmann::json;

bool IsDecimal(std::string_view s) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

/// Walks `path[start..]` from `root`: object members by key, array elements by decimal index.
const Json* LookupPath(const Json& root, const std::vector<std::string>& path, std::size_t start) {
  const Json* node = &root;
  for (std::size_t i = start; i < path.size(); ++i) {
    const std::string& part = path[i];
    if (node->is_object()) {
      auto it = node->find(part);
      if (it == node->end()) return nullptr;
      node = &*it;
    } else if (node->is_array() && IsDecimal(part)) {
      std::size_t index = std::stoull(part);
      if (index >= node->size()) return nullptr;
      node = &(*node)[index];
    } else {
      return nullptr;
    }
  }
  return node;
}

/// LookupPath over the text of a validated JSON value (json_scan), with the same rules.
std::optional<std::string_view> ScanPath(std::string_view root,
                                         const std::vector<std::string>& path, std::size_t start) {
  std::optional<std::string_view> node = root;
  for (std::size_t i = start; i < path.size() && node; ++i) {
    const std::string& part = path[i];
    if (node->front() == '{') {
      node = json_scan::FindMember(*node, part);
    } else if (node->front() == '[' && IsDecimal(part)) {
      node = json_scan::FindElement(*node, std::stoull(part));
    } else {
      return std::nullopt;
    }
  }
  return node;
}

/// The value of a placeholder among `values`: the whole name as a key first, then as a path.
const Json* LookupValue(const Json& values, const TemplateSegment& placeholder) {
  if (!values.is_object()) return nullptr;
  auto it = values.find(placeholder.text);
  if (it != values.end()) return &*it;
  if (placeholder.path.size() < 2) return nullptr;
  return LookupPath(values, placeholder.path, 0);
}

/// The text a value is substituted as: a string raw, anything else as compact JSON.
void AppendValueText(const Json& value, std::string* out) {
  if (value.is_string()) {
    out->append(value.get_ref<const std::string&>());
  } else {
    out->append(DumpJson(value));
  }
}

Error Missing(const TemplateSegment& placeholder) {
  return Error{ErrorCode::kMissingParameter, "missing parameter: " + placeholder.text};
}

/// A value that a placeholder may take: present and not null.
const Json* Required(const Json& values, const TemplateSegment& placeholder) {
  const Json* v = LookupValue(values, placeholder);
  return v == nullptr || v->is_null() ? nullptr : v;
}

/// A body template compiled into a tree; subtrees without placeholders are kept as constants.
struct BodyNode {
  enum class Kind { kLiteral, kWhole, kText, kObject, kArray };
  Kind kind = Kind::kLiteral;
  Json literal;                                           // kLiteral
  std::vector<TemplateSegment> segments;                  // kWhole (one), kText
  std::vector<std::pair<std::string, BodyNode>> members;  // kObject
  std::vector<BodyNode> elements;                         // kArray
};

Result<BodyNode> CompileBody(const Json& value, const std::string& path) {
  BodyNode node;
  if (value.is_string()) {
    auto segments = ParseTemplate(value.get_ref<const std::string&>());
    if (!segments.ok()) {
      return Error{ErrorCode::kBadRequest,
                   path + ": invalid template: " + segments.error().message};
    }
    bool has_placeholder = false;
    for (const auto& s : *segments) has_placeholder = has_placeholder || s.is_placeholder;
    if (!has_placeholder) {
      node.literal = segments->empty() ? std::string() : segments->front().text;
      return node;
    }
    node.kind = IsWholePlaceholder(*segments) ? BodyNode::Kind::kWhole : BodyNode::Kind::kText;
    node.segments = std::move(segments).value();
    return node;
  }
  if (value.is_object() || value.is_array()) {
    bool object = value.is_object();
    bool all_literal = true;
    std::vector<std::pair<std::string, BodyNode>> members;
    std::vector<BodyNode> elements;
    std::size_t index = 0;
    for (auto it = value.begin(); it != value.end(); ++it, ++index) {
      std::string child_path = object ? JsonPathMember(path, it.key()) : JsonPathIndex(path, index);
      auto child = CompileBody(*it, child_path);
      if (!child.ok()) return std::move(child).error();
      all_literal = all_literal && child->kind == BodyNode::Kind::kLiteral;
      if (object) {
        members.emplace_back(it.key(), std::move(child).value());
      } else {
        elements.push_back(std::move(child).value());
      }
    }
    if (all_literal) {
      // Literal strings may have had {{ }} unescaped: rebuild from the children.
      node.literal = object ? Json::object() : Json::array();
      for (auto& [key, child] : members) node.literal[key] = std::move(child.literal);
      for (auto& child : elements) node.literal.push_back(std::move(child.literal));
      return node;
    }
    node.kind = object ? BodyNode::Kind::kObject : BodyNode::Kind::kArray;
    node.members = std::move(members);
    node.elements = std::move(elements);
    return node;
  }
  node.literal = value;
  return node;
}

Result<Json> RenderBody(const BodyNode& node, const Json& values) {
  switch (node.kind) {
    case BodyNode::Kind::kLiteral:
      return node.literal;
    case BodyNode::Kind::kWhole: {
      const Json* v = Required(values, node.segments.front());
      if (v == nullptr) return Missing(node.segments.front());
      return *v;
    }
    case BodyNode::Kind::kText: {
      std::string text;
      for (const auto& s : node.segments) {
        if (!s.is_placeholder) {
          text += s.text;
          continue;
        }
        const Json* v = Required(values, s);
        if (v == nullptr) return Missing(s);
        AppendValueText(*v, &text);
      }
      return Json(std::move(text));
    }
    case BodyNode::Kind::kObject: {
      Json out = Json::object();
      for (const auto& [key, child] : node.members) {
        auto rendered = RenderBody(child, values);
        if (!rendered.ok()) return rendered;
        out[key] = std::move(rendered).value();
      }
      return out;
    }
    case BodyNode::Kind::kArray: {
      Json out = Json::array();
      for (const auto& child : node.elements) {
        auto rendered = RenderBody(child, values);
        if (!rendered.ok()) return rendered;
        out.push_back(std::move(rendered).value());
      }
      return out;
    }
  }
  return Error{ErrorCode::kInternal, "unknown body node"};
}

/// True for a non-empty text of '.' only.
bool IsAllDots(std::string_view text) {
  return !text.empty() && text.find_first_not_of('.') == std::string_view::npos;
}

}  // namespace

void AppendPercentEncoded(std::string_view text, std::string* out) {
  AppendPercentEncoded(text, out, /*encode_dots=*/false);
}

void AppendPercentEncoded(std::string_view text, std::string* out, bool encode_dots) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '-' || (c == '.' && !encode_dots) || c == '_' || c == '~';
    if (unreserved) {
      out->push_back(ch);
    } else {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0x0F]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// EndpointTemplate

struct EndpointTemplate::Impl {
  std::string method;
  std::vector<TemplateSegment> url;
  /// url[i] for i < url_path_end lies in the path (before the first literal '?' or '#'): values
  /// substituted there have '.' encoded too, so they never form a "." or ".." segment.
  std::size_t url_path_end = 0;
  std::vector<std::pair<std::string, std::vector<TemplateSegment>>> headers;
  std::optional<BodyNode> body;
  bool add_content_type = false;
  std::chrono::milliseconds timeout{5000};
  std::size_t max_response_bytes = 1 << 20;
};

Result<EndpointTemplate> EndpointTemplate::Compile(const EndpointConfig& endpoint) {
  auto impl = std::make_shared<Impl>();
  impl->method = endpoint.method;
  impl->timeout = endpoint.timeout;
  impl->max_response_bytes = endpoint.max_response_bytes;
  auto url = ParseTemplate(endpoint.url);
  if (!url.ok())
    return Error{ErrorCode::kBadRequest, "url: invalid template: " + url.error().message};
  impl->url = std::move(url).value();
  impl->url_path_end = impl->url.size();
  for (std::size_t i = 0; i < impl->url.size(); ++i) {
    const TemplateSegment& s = impl->url[i];
    if (!s.is_placeholder && s.text.find_first_of("?#") != std::string::npos) {
      impl->url_path_end = i;
      break;
    }
  }
  bool has_content_type = false;
  for (const auto& [name, value] : endpoint.headers) {
    std::string path = JsonPathMember("headers", name);
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      return Error{ErrorCode::kBadRequest, path + ": header value contains CR, LF or NUL"};
    }
    auto segments = ParseTemplate(value);
    if (!segments.ok()) {
      return Error{ErrorCode::kBadRequest,
                   path + ": invalid template: " + segments.error().message};
    }
    has_content_type = has_content_type || EqualsIgnoreCase(name, "Content-Type");
    impl->headers.emplace_back(name, std::move(segments).value());
  }
  if (endpoint.body) {
    auto body = CompileBody(*endpoint.body, "body");
    if (!body.ok()) return std::move(body).error();
    impl->body = std::move(body).value();
    impl->add_content_type = !has_content_type;
  }
  return EndpointTemplate(std::move(impl));
}

Result<PreparedRequest> EndpointTemplate::Render(const nlohmann::json& values) const {
  try {
    PreparedRequest request;
    request.method = impl_->method;
    request.timeout = impl_->timeout;
    request.max_response_bytes = impl_->max_response_bytes;
    std::string scratch;
    for (std::size_t i = 0; i < impl_->url.size(); ++i) {
      const TemplateSegment& s = impl_->url[i];
      if (!s.is_placeholder) {
        request.url += s.text;
        continue;
      }
      const Json* v = Required(values, s);
      if (v == nullptr) return Missing(s);
      // In the path, a value made only of dots ("." or "..") would be a dot segment that the
      // upstream resolves to another endpoint ("/api/x/../echo" is "/api/echo"): its dots are
      // encoded. Dots inside other values ("report.v2.pdf", "1.5") are kept as they are.
      const bool in_path = i < impl_->url_path_end;
      if (v->is_string()) {
        const std::string& text = v->get_ref<const std::string&>();
        AppendPercentEncoded(text, &request.url, in_path && IsAllDots(text));
      } else {
        AppendPercentEncoded(DumpJson(*v), &request.url, /*encode_dots=*/false);
      }
    }
    if (request.url.size() > kMaxRenderedUrlBytes) {
      return Error{ErrorCode::kBadRequest,
                   "url: " + std::to_string(request.url.size()) +
                       " bytes with its values substituted, more than the " +
                       std::to_string(kMaxRenderedUrlBytes) + " an HTTP server is sure to take"};
    }
    request.headers.reserve(impl_->headers.size() + 1);
    for (const auto& [name, segments] : impl_->headers) {
      std::string value;
      for (const auto& s : segments) {
        if (!s.is_placeholder) {
          value += s.text;
          continue;
        }
        const Json* v = Required(values, s);
        if (v == nullptr) return Missing(s);
        scratch.clear();
        AppendValueText(*v, &scratch);
        if (scratch.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
          return Error{ErrorCode::kBadRequest,
                       "header " + name + ": value of {" + s.text + "} contains CR, LF or NUL"};
        }
        value += scratch;
      }
      request.headers.emplace_back(name, std::move(value));
    }
    if (impl_->body) {
      auto body = RenderBody(*impl_->body, values);
      if (!body.ok()) return std::move(body).error();
      request.body = DumpJson(*body);
      if (impl_->add_content_type) request.headers.emplace_back("Content-Type", "application/json");
    }
    return request;
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal, std::string("rendering the request failed: ") + e.what()};
  }
}

// ---------------------------------------------------------------------------------------------
// ResponseTemplate

ResponseTemplate::ResponseTemplate(std::vector<TemplateSegment> segments)
    : segments_(std::move(segments)), result_key_of_(segments_.size(), -1) {
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    const TemplateSegment& s = segments_[i];
    if (!s.is_placeholder) {
      literal_size_ += s.text.size();
      continue;
    }
    if (s.path.size() < 2 || s.path[0] != "result") continue;
    uses_result_fields_ = true;
    auto known = std::find(result_keys_.begin(), result_keys_.end(), s.path[1]);
    if (known == result_keys_.end()) {
      if (result_keys_.size() == kMaxScannedKeys) continue;
      known = result_keys_.insert(result_keys_.end(), s.path[1]);
    }
    result_key_of_[i] = static_cast<int>(known - result_keys_.begin());
  }
}

Result<ResponseTemplate> ResponseTemplate::Compile(std::string_view text) {
  auto segments = ParseTemplate(text);
  if (!segments.ok()) {
    return Error{ErrorCode::kBadRequest, "invalid template: " + segments.error().message};
  }
  return ResponseTemplate(std::move(segments).value());
}

std::string ResponseTemplate::Render(const nlohmann::json& values,
                                     std::string_view response_body) const {
  return *RenderAtMost(values, response_body, std::string::npos);
}

std::optional<std::string> ResponseTemplate::RenderAtMost(const nlohmann::json& values,
                                                          std::string_view response_body,
                                                          std::size_t max_bytes) const {
  std::string out;
  if (literal_size_ > max_bytes) return std::nullopt;
  out.reserve(std::min(literal_size_ + response_body.size(), max_bytes));
  // The response body, read on the first {result.x}: validated and then walked to each field
  // without building it. A body nested deeper than the scanner's limit (the shared JSON nesting
  // limit) counts as not JSON: a DOM of it would be copied and dumped recursively.
  enum class Body { kUnread, kScanned, kInvalid } body = Body::kUnread;
  std::string_view root;
  // For an object body: the value of each of result_keys_ (empty when absent), found in one walk
  // over its members.
  std::array<std::string_view, kMaxScannedKeys> members;
  bool members_read = false;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    const TemplateSegment& s = segments_[i];
    if (out.size() > max_bytes) return std::nullopt;
    if (!s.is_placeholder) {
      out += s.text;
      continue;
    }
    try {
      if (s.path[0] == "result") {
        if (s.path.size() == 1) {
          if (response_body.size() > max_bytes - out.size()) return std::nullopt;
          out.append(response_body);
          continue;
        }
        if (body == Body::kUnread) {
          switch (json_scan::Validate(response_body)) {
            case json_scan::Verdict::kValid:
              body = Body::kScanned;
              root = json_scan::RootValue(response_body);
              break;
            case json_scan::Verdict::kInvalid:
            case json_scan::Verdict::kTooDeep:
              body = Body::kInvalid;
              break;
          }
        }
        if (body != Body::kScanned) continue;
        std::optional<std::string_view> v;
        if (root.front() == '{' && result_key_of_[i] >= 0) {
          if (!members_read) {
            members_read = true;
            json_scan::FindMembers(root, result_keys_, members.data());
          }
          const std::string_view member = members[static_cast<std::size_t>(result_key_of_[i])];
          if (!member.empty()) v = ScanPath(member, s.path, 2);
        } else {
          v = ScanPath(root, s.path, 1);
        }
        if (v) json_scan::AppendValueText(*v, &out);
        continue;
      }
      if (const Json* v = LookupValue(values, s)) AppendValueText(*v, &out);
    } catch (const std::exception&) {
      // A value that cannot be rendered renders as nothing; the turn goes on.
    }
  }
  if (out.size() > max_bytes) return std::nullopt;
  return out;
}

}  // namespace wf
