#include "codec/json_struct.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <iterator>
#include <random>
#include <string>

#include "codec/json_scan.h"

namespace wf {
namespace {

using nlohmann::json;

TEST(JsonStructTest, RoundTripKeepsTypesAndIntegers) {
  json in = {{"days", 3},      {"ratio", 0.5},     {"name", "张三"}, {"ok", true},
             {"none", nullptr}, {"list", {1, "a"}}, {"nested", {{"k", -7}}}};
  json out = StructToJson(JsonToStruct(in));
  EXPECT_EQ(out, in);
  EXPECT_TRUE(out["days"].is_number_integer());
  EXPECT_TRUE(out["ratio"].is_number_float());
}

TEST(JsonStructTest, HugeNumbersStayFloatingPoint) {
  json in = {{"big", 1e300}};
  EXPECT_TRUE(StructToJson(JsonToStruct(in))["big"].is_number_float());
}

TEST(JsonStructTest, NonObjectGivesEmptyStruct) {
  EXPECT_EQ(JsonToStruct(json::array({1, 2})).fields_size(), 0);
  EXPECT_EQ(StructToJson(JsonToStruct("text")), json::object());
}

/// Exact equality of two Values, the sign of zero included (the message differencer has 0 == -0).
bool SameValue(const google::protobuf::Value& a, const google::protobuf::Value& b);
bool SameStruct(const google::protobuf::Struct& a, const google::protobuf::Struct& b) {
  if (a.fields_size() != b.fields_size()) return false;
  for (const auto& [key, value] : a.fields()) {
    auto it = b.fields().find(key);
    if (it == b.fields().end() || !SameValue(value, it->second)) return false;
  }
  return true;
}
bool SameValue(const google::protobuf::Value& a, const google::protobuf::Value& b) {
  if (a.kind_case() != b.kind_case()) return false;
  switch (a.kind_case()) {
    case google::protobuf::Value::kNumberValue:
      return std::bit_cast<std::uint64_t>(a.number_value()) ==
             std::bit_cast<std::uint64_t>(b.number_value());
    case google::protobuf::Value::kStringValue:
      return a.string_value() == b.string_value();
    case google::protobuf::Value::kBoolValue:
      return a.bool_value() == b.bool_value();
    case google::protobuf::Value::kListValue: {
      const auto& x = a.list_value().values();
      const auto& y = b.list_value().values();
      if (x.size() != y.size()) return false;
      for (int i = 0; i < x.size(); ++i) {
        if (!SameValue(x[i], y[i])) return false;
      }
      return true;
    }
    case google::protobuf::Value::kStructValue:
      return SameStruct(a.struct_value(), b.struct_value());
    default:
      return true;
  }
}

/// Random JSON text: keys that repeat, every kind of value, numbers at the edges of how they are
/// read (-0, integers past int64 and uint64, exponents, underflow), strings with escapes and
/// non-ASCII.
std::string RandomJson(std::mt19937& rng, int depth) {
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  static const char* const kNumbers[] = {"0",
                                         "-0",
                                         "7",
                                         "-42",
                                         "9007199254740993",
                                         "-9223372036854775808",
                                         "9223372036854775808",
                                         "18446744073709551616",
                                         "-9223372036854775809",
                                         "1.5",
                                         "-0.0",
                                         "1E2",
                                         "2.50e-3",
                                         "1e-400",
                                         "-1e-400",
                                         "4.9e-324",
                                         "123456789012345678901234567890",
                                         "0.1"};
  static const char* const kStrings[] = {
      R"("")",           R"("a")",    R"("caf\u00e9 \"q\" \\ \/")",
      R"("\n\t\u0001")", R"("张三")", R"("\ud83d\ude00")"};
  static const char* const kKeys[] = {R"("a")",  R"("b")", R"("a\u0062")",
                                      R"("ab")", R"("")",  R"("键")"};
  switch (depth > 3 ? pick(4) : pick(6)) {
    case 0:
      return kNumbers[pick(std::size(kNumbers))];
    case 1:
      return kStrings[pick(std::size(kStrings))];
    case 2:
      return pick(2) ? "true" : "null";
    case 3:
      return "false";
    case 4: {
      std::string out = "[";
      for (std::size_t i = pick(4); i > 0; --i) {
        if (out.size() > 1) out += ", ";
        out += RandomJson(rng, depth + 1);
      }
      return out + "]";
    }
    default: {
      std::string out = "{";
      for (std::size_t i = pick(5); i > 0; --i) {
        if (out.size() > 1) out += ",";
        out +=
            std::string(" ") + kKeys[pick(std::size(kKeys))] + " : " + RandomJson(rng, depth + 1);
      }
      return out + "}";
    }
  }
}

// Read from the text, a Struct is exactly what the DOM gives (repeated keys, -0, integers read
// as int64 or uint64 before they become doubles, underflow to zero).
TEST(JsonStructTest, TextToStructMatchesTheDomOnRandomObjects) {
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const std::string text =
        "{\"root\": " + RandomJson(rng, 0) + ", \"x\": " + RandomJson(rng, 0) + "}";
    ASSERT_EQ(json_scan::Validate(text), json_scan::Verdict::kValid) << text;
    const google::protobuf::Struct from_text = JsonTextToStruct(json_scan::RootValue(text));
    const google::protobuf::Struct from_dom = JsonToStruct(json::parse(text));
    ASSERT_TRUE(SameStruct(from_text, from_dom))
        << text << "\ntext: " << from_text.DebugString() << "\ndom:  " << from_dom.DebugString();
  }
  EXPECT_EQ(JsonTextToStruct("[1]").fields_size(), 0);
  EXPECT_EQ(JsonTextToStruct("").fields_size(), 0);
}

// Written straight from a Struct, the JSON text is byte for byte what dumping StructToJson gives.
TEST(JsonStructTest, AppendStructJsonMatchesTheDomsDump) {
  std::mt19937 rng(11);
  for (int i = 0; i < 3000; ++i) {
    const std::string text = "{\"root\": " + RandomJson(rng, 0) +
                             ", \"k\\u0000\": " + RandomJson(rng, 0) +
                             ", \"z\": 1e300, \"n\": -2.5}";
    const google::protobuf::Struct s = JsonToStruct(json::parse(text));
    std::string out = "prefix:";
    AppendStructJson(&out, s);
    ASSERT_EQ(out, "prefix:" + StructToJson(s).dump()) << text;
  }
  google::protobuf::Struct empty;
  std::string out;
  AppendStructJson(&out, empty);
  EXPECT_EQ(out, "{}");
}

}  // namespace
}  // namespace wf
