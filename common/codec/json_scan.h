#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

/// Reading a few fields of a JSON text without building it: validate once, then walk to a field
/// by skipping the text in between. For answer templates, which use three or four fields of an
/// upstream response and used to parse the whole body into a DOM (a node allocation per value)
/// to read them.
///
/// Everything here is pure, allocation-free on the common path and safe on any thread. Results
/// match nlohmann::json::parse (3.11, comments off) on the same text exactly; the unit tests
/// compare the two on generated and mutated documents.
namespace wf::json_scan {

/// Containers nested deeper than this are not validated here (kTooDeep); the caller parses such
/// a document with a DOM parser instead.
inline constexpr std::size_t kMaxDepth = 64;

enum class Verdict {
  kValid,    ///< one JSON value that nlohmann::json::parse accepts
  kInvalid,  ///< nlohmann::json::parse rejects it
  kTooDeep,  ///< undecided: more than kMaxDepth nested containers
};

/// Checks `text` the way nlohmann::json::parse does: an optional UTF-8 byte order mark, then one
/// value with only space, tab, LF or CR around it; numbers by the RFC 8259 grammar whose value is
/// a finite double; strings of well-formed UTF-8 with no raw control character, escapes as in
/// RFC 8259 and a high surrogate escape always followed by a low one.
Verdict Validate(std::string_view text);

/// The value of a text Validate accepted: `text` without the byte order mark and surrounding
/// whitespace.
std::string_view RootValue(std::string_view text);

/// In a validated value: the member `key` of `object` (the last one if the key repeats, as a DOM
/// parser keeps it), as its value text. nullopt when `object` is not an object or has no such key.
/// Keys are compared decoded (`"a\u0062"` is key "ab").
std::optional<std::string_view> FindMember(std::string_view object, std::string_view key);

/// True when `key`, a key as ForEachMember passes it (string text with its quotes), decodes to
/// `name`. Allocates only for a key with escapes.
bool KeyIs(std::string_view key, std::string_view name);

/// In a validated value: element `index` of `array`; nullopt when it is not an array or too short.
std::optional<std::string_view> FindElement(std::string_view array, std::size_t index);

namespace detail {
using MemberVisit = bool (*)(void* visit, std::string_view key, std::string_view value);
using ElementVisit = bool (*)(void* visit, std::string_view value);
bool ForEachMember(std::string_view object, MemberVisit call, void* visit);
bool ForEachElement(std::string_view array, ElementVisit call, void* visit);
}  // namespace detail

/// In a validated value: calls `visit(key, value)` for each member of `object` in text order
/// (duplicates included), `key` being the key's string text with its quotes (see
/// AppendDecodedString) and `value` the member's value text, until `visit` returns false.
/// Returns false when `object` is not an object. No allocation.
template <class Visit>
bool ForEachMember(std::string_view object, Visit&& visit) {
  return detail::ForEachMember(
      object,
      [](void* v, std::string_view key, std::string_view value) -> bool {
        return (*static_cast<std::remove_reference_t<Visit>*>(v))(key, value);
      },
      &visit);
}

/// In a validated value: calls `visit(value)` for each element of `array` in order until it
/// returns false. Returns false when `array` is not an array. No allocation.
template <class Visit>
bool ForEachElement(std::string_view array, Visit&& visit) {
  return detail::ForEachElement(
      array,
      [](void* v, std::string_view value) -> bool {
        return (*static_cast<std::remove_reference_t<Visit>*>(v))(value);
      },
      &visit);
}

/// In a validated value: the members `names` of `object` found in one walk (FindMember walks
/// the whole object for each name, as the last of a repeated key wins): `values[i]` becomes the
/// value text of `names[i]`, and stays as it was for a name the object lacks. The names must be
/// distinct and `values` at least as long. Returns false when `object` is not an object.
/// `names`: any range of things convertible to std::string_view. No allocation unless a key
/// has escapes.
template <class Names>
bool FindMembers(std::string_view object, const Names& names, std::string_view* values) {
  return ForEachMember(object, [&](std::string_view key, std::string_view value) {
    std::size_t i = 0;
    for (const auto& name : names) {
      if (KeyIs(key, name)) {
        values[i] = value;
        break;  // the names are distinct: no other can match
      }
      ++i;
    }
    return true;
  });
}

/// Appends the decoded text of a validated string value (with its quotes) to `out`.
void AppendDecodedString(std::string_view string_value, std::string* out);

/// Appends a validated value as templates insert it: a string's decoded text; anything else
/// as the compact JSON nlohmann's dump() makes of it (so `-0` is `0`, `1.50` is `1.5` and object
/// keys come out sorted).
void AppendValueText(std::string_view value, std::string* out);

}  // namespace wf::json_scan
