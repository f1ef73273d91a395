#include "config/strict_json.h"

#include <string>
#include <utility>
#include <vector>

#include "config/json_path.h"

namespace wf {
namespace {

using OrderedJson = nlohmann::ordered_json;

/// SAX handler that builds an ordered_json document and stops at the first duplicate key.
/// Pointers on the stack stay valid because a container receives no new member while one of
/// its children is still open.
class StrictDomBuilder {
 public:
  using number_integer_t = OrderedJson::number_integer_t;
  using number_unsigned_t = OrderedJson::number_unsigned_t;
  using number_float_t = OrderedJson::number_float_t;
  using string_t = OrderedJson::string_t;
  using binary_t = OrderedJson::binary_t;

  explicit StrictDomBuilder(OrderedJson* root) : root_(root) {}

  bool null() { return Add(nullptr) != nullptr; }
  bool boolean(bool v) { return Add(v) != nullptr; }
  bool number_integer(number_integer_t v) { return Add(v) != nullptr; }
  bool number_unsigned(number_unsigned_t v) { return Add(v) != nullptr; }
  bool number_float(number_float_t v, const string_t& /*text*/) { return Add(v) != nullptr; }
  bool string(string_t& v) { return Add(std::move(v)) != nullptr; }
  bool binary(binary_t& /*v*/) {
    error_ = "invalid JSON: binary values are not supported";
    return false;
  }

  bool start_object(std::size_t /*size*/) { return Open(OrderedJson::object()); }
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  bool key(string_t& k) {
    Frame& top = stack_.back();
    if (top.value->contains(k)) {
      error_ = JsonPathMember(PathOfTop(), k) + ": duplicate key";
      return false;
    }
    top.key = k;
    return true;
  }
  bool start_array(std::size_t /*size*/) { return Open(OrderedJson::array()); }
  bool end_array() {
    stack_.pop_back();
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    std::string what = ex.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix; the rest names line and column.
    if (!what.empty() && what.front() == '[') {
      std::size_t end = what.find("] ");
      if (end != std::string::npos) what.erase(0, end + 2);
    }
    error_ = "invalid JSON: " + what;
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  struct Frame {
    OrderedJson* value;
    std::string key;  // current member key (objects)
  };

  /// Path of the innermost open container, built only when an error needs it.
  std::string PathOfTop() const {
    std::string path;
    for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      path = f.value->is_object() ? JsonPathMember(path, f.key)
                                  : JsonPathIndex(path, f.value->size() - 1);
    }
    return path;
  }

  template <typename V>
  OrderedJson* Add(V&& v) {
    if (stack_.empty()) {
      *root_ = OrderedJson(std::forward<V>(v));
      return root_;
    }
    Frame& top = stack_.back();
    if (top.value->is_object()) {
      auto result = top.value->emplace(top.key, OrderedJson(std::forward<V>(v)));
      return &*result.first;
    }
    top.value->push_back(OrderedJson(std::forward<V>(v)));
    return &top.value->back();
  }

  bool Open(OrderedJson container) {
    if (stack_.size() >= kMaxDepth) {
      error_ = "invalid JSON: nested deeper than " + std::to_string(kMaxDepth) + " levels";
      return false;
    }
    OrderedJson* slot = Add(std::move(container));
    stack_.push_back(Frame{slot, {}});
    return true;
  }

  static constexpr std::size_t kMaxDepth = 256;

  OrderedJson* root_;
  std::vector<Frame> stack_;
  std::string error_;
};

}  // namespace

Result<nlohmann::ordered_json> ParseStrictJson(std::string_view text) {
  OrderedJson root;
  StrictDomBuilder builder(&root);
  bool ok = false;
  try {
    ok = OrderedJson::sax_parse(text, &builder, nlohmann::detail::input_format_t::json,
                                /*strict=*/true);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kBadRequest, std::string("invalid JSON: ") + e.what()};
  }
  if (!ok) {
    return Error{ErrorCode::kBadRequest,
                 builder.error().empty() ? std::string("invalid JSON") : builder.error()};
  }
  return root;
}

}  // namespace wf
