#include "codec/json_scan.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "codec/json_dump.h"
#include "codec/json_limits.h"

namespace wf::json_scan {
namespace {

using Json = nlohmann::json;

/// What nlohmann says about `text`: the reference json_scan must agree with.
Verdict Reference(std::string_view text) {
  return Json::accept(text.begin(), text.end()) ? Verdict::kValid : Verdict::kInvalid;
}

/// The value's text as the DOM-based template rendered it: strings raw, the rest dumped.
std::string DomValueText(const Json& v) {
  return v.is_string() ? v.get<std::string>() : DumpJson(v);
}

std::string ScanValueText(std::string_view v) {
  std::string out;
  AppendValueText(v, &out);
  return out;
}

TEST(JsonScanTest, AgreesWithNlohmannOnHandPickedTexts) {
  const std::vector<std::string> texts = {
      "{}",
      "[]",
      "0",
      "-0",
      "1.5",
      "-1.5e10",
      "1E+2",
      "1e-400",
      "1e309",
      "-1e309",
      "01",
      "1.",
      ".5",
      "+1",
      "-",
      "--1",
      "1e",
      "1e+",
      "0x10",
      "true",
      "false",
      "null",
      "tru",
      "nul",
      "True",
      "\"\"",
      "\"a\"",
      "\"\\u0000\"",
      "\"\\ud83d\\ude00\"",
      "\"\\ud83d\"",
      "\"\\ude00\"",
      "\"\\ud83dx\"",
      "\"\\ud83d\\u0041\"",
      "\"\\x\"",
      "\"\\u12g4\"",
      "\"\\u123\"",
      "\"tab\there\"",
      std::string("\"nul\0byte\"", 10),
      "\"\x7f\"",
      "\"\xc3\xa9\"",
      "\"\xc3\"",
      "\"\xc0\x80\"",
      "\"\xe0\x80\x80\"",
      "\"\xe0\xa0\x80\"",
      "\"\xed\xa0\x80\"",
      "\"\xed\x9f\xbf\"",
      "\"\xf0\x8f\xbf\xbf\"",
      "\"\xf0\x90\x80\x80\"",
      "\"\xf4\x8f\xbf\xbf\"",
      "\"\xf4\x90\x80\x80\"",
      "\"\xf5\x80\x80\x80\"",
      "\"\xff\"",
      "\"unterminated",
      "\xef\xbb\xbf{}",
      "\xef\xbb{}",
      " \t\r\n{ \"a\" : [ 1 , 2 ] } \n",
      "{\"a\":1,}",
      "[1,]",
      "[,1]",
      "{,}",
      "{\"a\"}",
      "{\"a\":}",
      "{\"a\" 1}",
      "{1:1}",
      "[1 2]",
      "{\"a\":1 \"b\":2}",
      "[] []",
      "{} x",
      "",
      "   ",
      "[",
      "]",
      "{",
      "}",
      "[[[]]]",
      "[[[]]",
      "{\"a\":{\"b\":{\"c\":[]}}}",
      "\f{}",
      "{}\v",
      std::string(400, '9'),
      "0." + std::string(400, '1'),
      std::string(310, '1') + ".5",
      "-" + std::string(320, '1'),
      "[1e308, 2e308]",
      "12345678901234567890123",
  };
  for (const auto& text : texts) {
    EXPECT_EQ(Validate(text), Reference(text)) << "text: " << text;
  }
}

// Strings are read eight plain bytes at a time: every kind of byte that ends such a run (a
// quote, a backslash escape, a control byte, UTF-8 lead and continuation bytes, invalid bytes)
// at every offset of strings up to 40 bytes long, at every alignment, is judged as nlohmann
// judges it, and a valid string's member is found with its exact text.
TEST(JsonScanTest, EveryByteAtEveryOffsetOfAStringIsJudgedLikeNlohmann) {
  const std::vector<std::string> specials = {
      "\"",   "\\\"", "\\\\", "\\n",         "\\u00e9",  "\\ud83d\\ude00", "\\x",
      "\\",   "\x01", "\x1f", "\x7f",        "\xc3\xa9", "\xe4\xbd\xa0",   "\xf0\x9f\x98\x80",
      "\xc3", "\x80", "\xff", "\xed\xa0\x80"};
  for (std::size_t prefix = 0; prefix < 8; ++prefix) {
    for (std::size_t length = 0; length <= 40; ++length) {
      for (std::size_t at = 0; at <= length; ++at) {
        for (const std::string& special : specials) {
          std::string text = std::string(prefix, ' ') + "{\"k\": \"";
          const std::size_t value_start = text.size() - 1;
          text += std::string(at, 'a') + special + std::string(length - at, 'b') + "\"}";
          ASSERT_EQ(Validate(text), Reference(text)) << text;
          if (Validate(text) == Verdict::kValid) {
            const auto member = FindMember(RootValue(text), "k");
            ASSERT_TRUE(member) << text;
            EXPECT_EQ(*member, std::string_view(text).substr(value_start, member->size()));
            EXPECT_EQ(member->back(), '"') << text;
            EXPECT_EQ(ScanValueText(*member), Json::parse(text)["k"].get<std::string>()) << text;
          }
        }
      }
    }
  }
}

TEST(JsonScanTest, DeepNestingIsLeftToADomParser) {
  const auto nested = [](std::size_t open, std::size_t close) {
    return std::string(open, '[') + "1" + std::string(close, ']');
  };
  EXPECT_EQ(Validate(nested(kMaxDepth + 1, kMaxDepth + 1)), Verdict::kTooDeep);
  EXPECT_EQ(Validate(nested(kMaxDepth, kMaxDepth)), Verdict::kValid);
  EXPECT_EQ(Validate(nested(kMaxDepth, kMaxDepth - 1)), Verdict::kInvalid);
  // An empty innermost container is a level too, as for JsonDepthExceeds.
  const std::string empty_inside =
      std::string(kMaxDepth + 1, '[') + std::string(kMaxDepth + 1, ']');
  EXPECT_TRUE(JsonDepthExceeds(empty_inside, static_cast<int>(kMaxDepth)));
  EXPECT_EQ(Validate(empty_inside), Verdict::kTooDeep);
  EXPECT_EQ(Validate(std::string(kMaxDepth, '[') + std::string(kMaxDepth, ']')), Verdict::kValid);
}

TEST(JsonScanTest, FindsMembersAndElementsLikeADom) {
  const std::string text =
      R"( {"a": 1, "b": {"c": [10, {"d": "x\"y"}, [] ]}, "a\u0062": true, "a": "last",
           "e": null, "": "empty key", "n": -0, "f": 1.50, "o": {"z": 1, "y": [2, 3]}} )";
  ASSERT_EQ(Validate(text), Verdict::kValid);
  const std::string_view root = RootValue(text);
  EXPECT_EQ(FindMember(root, "a"), std::optional<std::string_view>("\"last\""));
  EXPECT_EQ(FindMember(root, "ab"), std::optional<std::string_view>("true"));
  EXPECT_EQ(FindMember(root, ""), std::optional<std::string_view>("\"empty key\""));
  EXPECT_EQ(FindMember(root, "zz"), std::nullopt);
  auto c = FindMember(*FindMember(root, "b"), "c");
  ASSERT_TRUE(c);
  EXPECT_EQ(FindElement(*c, 0), std::optional<std::string_view>("10"));
  EXPECT_EQ(FindElement(*c, 2), std::optional<std::string_view>("[]"));
  EXPECT_EQ(FindElement(*c, 3), std::nullopt);
  EXPECT_EQ(FindElement(*FindElement(*c, 2), 0), std::nullopt);
  EXPECT_EQ(ScanValueText(*FindMember(*FindElement(*c, 1), "d")), "x\"y");
  EXPECT_EQ(FindElement(root, 0), std::nullopt);  // not an array
  EXPECT_EQ(FindMember(*c, "0"), std::nullopt);   // not an object

  EXPECT_EQ(ScanValueText(*FindMember(root, "n")), "0");
  EXPECT_EQ(ScanValueText(*FindMember(root, "f")), "1.5");
  EXPECT_EQ(ScanValueText(*FindMember(root, "e")), "null");
  EXPECT_EQ(ScanValueText(*FindMember(root, "o")), R"({"y":[2,3],"z":1})");

  // Several names in one walk: each value as FindMember finds it; a missing name's slot stays.
  const std::vector<std::string> names = {"a", "ab", "", "zz", "o"};
  std::vector<std::string_view> values(names.size(), "unset");
  EXPECT_TRUE(FindMembers(root, names, values.data()));
  EXPECT_EQ(values, (std::vector<std::string_view>{"\"last\"", "true", "\"empty key\"", "unset",
                                                   *FindMember(root, "o")}));
  EXPECT_FALSE(FindMembers(*c, names, values.data()));  // not an object
}

TEST(JsonScanTest, NumbersComeOutAsNlohmannDumpsThem) {
  const std::vector<std::string> numbers = {"0",
                                            "-0",
                                            "7",
                                            "-12",
                                            "3.25",
                                            "1.50",
                                            "-0.0",
                                            "0.0",
                                            "785.0",
                                            "1e2",
                                            "2E-3",
                                            "6.02e+23",
                                            "1e-400",
                                            "0.1",
                                            "0.30000000000000004",
                                            "123456.789",
                                            "1e15",
                                            "1e16",
                                            "1e-5",
                                            "1.0e-4",
                                            "18446744073709551615",
                                            "18446744073709551616",
                                            "-9223372036854775808",
                                            "-9223372036854775809",
                                            "9999999999999999999",
                                            "99999999999999999999",
                                            "123456789012345678901234567890",
                                            "1.7976931348623157e308",
                                            "4.9e-324",
                                            "-1.25E+3",
                                            "0." + std::string(100, '3'),
                                            std::string(100, '7') + ".5"};
  for (const auto& n : numbers) {
    ASSERT_EQ(Validate(n), Verdict::kValid) << n;
    EXPECT_EQ(ScanValueText(n), DumpJson(Json::parse(n))) << n;
  }
}

TEST(JsonScanTest, DecodesEveryEscape) {
  const std::string text = R"("q\" b\\ s\/ \b\f\n\r\t \u00e9 \u4e2d \ud83d\ude00 \u0000.")";
  ASSERT_EQ(Validate(text), Verdict::kValid);
  EXPECT_EQ(ScanValueText(text), Json::parse(text).get<std::string>());
}

// ---------------------------------------------------------------------------------------------
// Generated documents: the scanner and nlohmann must agree on validity, and every path into a
// valid document must give the same value text.

class Generator {
 public:
  explicit Generator(unsigned seed) : rng_(seed) {}

  std::string Value(int depth) {
    switch (Pick(depth > 3 ? 5 : 7)) {
      case 0:
        return Number();
      case 1:
        return String();
      case 2:
        return std::vector<std::string>{"true", "false", "null"}[Pick(3)];
      case 3:
        return Number();
      case 4:
        return String();
      case 5: {
        std::string out = "{" + Space();
        const int n = Pick(4);
        for (int i = 0; i < n; ++i) {
          if (i > 0) out += "," + Space();
          out += Key() + Space() + ":" + Space() + Value(depth + 1) + Space();
        }
        return out + "}";
      }
      default: {
        std::string out = "[" + Space();
        const int n = Pick(4);
        for (int i = 0; i < n; ++i) {
          if (i > 0) out += "," + Space();
          out += Value(depth + 1) + Space();
        }
        return out + "]";
      }
    }
  }

  /// A key from a small set, so that lookups hit and keys repeat; sometimes escaped.
  std::string Key() {
    static const std::vector<std::string> kKeys = {
        "\"a\"", "\"b\"", "\"c\"", "\"\\u0061\"", "\"0\"", "\"\"", "\"\xe4\xb8\xad\""};
    return kKeys[Pick(static_cast<int>(kKeys.size()))];
  }

  std::string Number() {
    static const std::vector<std::string> kNumbers = {"0",
                                                      "-0",
                                                      "7",
                                                      "-12",
                                                      "3.25",
                                                      "1.50",
                                                      "-0.0",
                                                      "1e2",
                                                      "2E-3",
                                                      "6.02e+23",
                                                      "18446744073709551615",
                                                      "18446744073709551616",
                                                      "-9223372036854775808",
                                                      "-9223372036854775809",
                                                      "9999999999999999999",
                                                      "123456789012345678901234567890",
                                                      "1e-400",
                                                      "0.1"};
    return kNumbers[Pick(static_cast<int>(kNumbers.size()))];
  }

  std::string String() {
    static const std::vector<std::string> kStrings = {"\"\"",
                                                      "\"plain\"",
                                                      "\"with \\\"quote\\\"\"",
                                                      "\"\\\\\"",
                                                      "\"\\n\\t\"",
                                                      "\"\xc3\xa9t\xc3\xa9\"",
                                                      "\"\\u00e9\"",
                                                      "\"\\ud83d\\ude00\"",
                                                      "\"\xf0\x9f\x98\x80\"",
                                                      "\"}{][,:\"",
                                                      "\"\\/\""};
    return kStrings[Pick(static_cast<int>(kStrings.size()))];
  }

  std::string Space() { return std::vector<std::string>{"", "", " ", "\n\t", "\r "}[Pick(5)]; }

  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  /// `text` with one random edit: a byte changed, dropped, duplicated, or the text cut short.
  std::string Mutate(std::string text) {
    if (text.empty()) return "x";
    static const std::string kBytes =
        std::string("{}[],:\"\\ 0-.eE+tfnu\x01\x7f\xc3\xa9\xff\xed", 25);
    const std::size_t at = static_cast<std::size_t>(Pick(static_cast<int>(text.size())));
    switch (Pick(4)) {
      case 0:
        text[at] = kBytes[static_cast<std::size_t>(Pick(static_cast<int>(kBytes.size())))];
        break;
      case 1:
        text.erase(at, 1);
        break;
      case 2:
        text.insert(at, 1, kBytes[static_cast<std::size_t>(Pick(static_cast<int>(kBytes.size())))]);
        break;
      default:
        text.resize(at);
        break;
    }
    return text;
  }

 private:
  std::mt19937 rng_;
};

/// Every path of up to three steps over keys and indices the generator uses.
std::vector<std::vector<std::string>> Paths() {
  const std::vector<std::string> steps = {"a", "b", "c", "0", "1", "", "\xe4\xb8\xad"};
  std::vector<std::vector<std::string>> paths;
  for (const auto& x : steps) {
    paths.push_back({x});
    for (const auto& y : steps) {
      paths.push_back({x, y});
      for (const auto& z : {"a", "0"}) paths.push_back({x, y, z});
    }
  }
  return paths;
}

std::optional<std::string> DomLookup(const Json& root, const std::vector<std::string>& path) {
  const Json* node = &root;
  for (const auto& part : path) {
    if (node->is_object()) {
      auto it = node->find(part);
      if (it == node->end()) return std::nullopt;
      node = &*it;
    } else if (node->is_array() && !part.empty() &&
               part.find_first_not_of("0123456789") == std::string::npos) {
      const std::size_t index = std::stoull(part);
      if (index >= node->size()) return std::nullopt;
      node = &(*node)[index];
    } else {
      return std::nullopt;
    }
  }
  return DomValueText(*node);
}

std::optional<std::string> ScanLookup(std::string_view text, const std::vector<std::string>& path) {
  std::optional<std::string_view> node = RootValue(text);
  for (const auto& part : path) {
    if (node->front() == '{') {
      node = FindMember(*node, part);
    } else if (node->front() == '[' && !part.empty() &&
               part.find_first_not_of("0123456789") == std::string::npos) {
      node = FindElement(*node, std::stoull(part));
    } else {
      return std::nullopt;
    }
    if (!node) return std::nullopt;
  }
  return ScanValueText(*node);
}

TEST(JsonScanTest, GeneratedDocumentsReadLikeADom) {
  Generator gen(20261126);
  const auto paths = Paths();
  int valid = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string text = gen.Space() + gen.Value(0) + gen.Space();
    ASSERT_EQ(Validate(text), Verdict::kValid) << text;
    ++valid;
    const Json dom = Json::parse(text);
    for (const auto& path : paths) {
      ASSERT_EQ(ScanLookup(text, path), DomLookup(dom, path))
          << "text: " << text << "\npath: " << ::testing::PrintToString(path);
    }
  }
  EXPECT_EQ(valid, 3000);
}

TEST(JsonScanTest, MutatedDocumentsAreJudgedLikeNlohmann) {
  Generator gen(7);
  int invalid = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text = gen.Value(0);
    const int edits = 1 + gen.Pick(3);
    for (int e = 0; e < edits; ++e) text = gen.Mutate(std::move(text));
    const Verdict expected = Reference(text);
    ASSERT_EQ(Validate(text), expected) << "text: " << ::testing::PrintToString(text);
    if (expected == Verdict::kInvalid) ++invalid;
  }
  EXPECT_GT(invalid, 5000);  // the mutations do produce broken documents
  EXPECT_LT(invalid, 20000);
}

}  // namespace
}  // namespace wf::json_scan
