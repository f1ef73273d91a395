#include "gateway/query_body.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "codec/json_struct.h"
#include "codec/json_text.h"
#include "protocol/query_rules.h"

namespace wf {
namespace {

using nlohmann::json;

Status Parse(const std::string& body, v1::QueryRequest* out = nullptr, GatewayConfig limits = {}) {
  v1::QueryRequest scratch;
  return ParseQueryBody(body, limits, out ? out : &scratch);
}

/// Expects a 400 whose message names `field`.
void ExpectFieldError(const std::string& body, const std::string& field) {
  Status s = Parse(body);
  ASSERT_FALSE(s.ok()) << body;
  EXPECT_EQ(HttpStatus(s.error().code), 400) << body;
  EXPECT_NE(s.error().message.find(field), std::string::npos)
      << "message '" << s.error().message << "' does not name " << field;
}

TEST(QueryBody, AcceptsAFullBody) {
  v1::QueryRequest q;
  Status s = Parse(R"({"message":"查询订单 42","session_id":"user-1:chat.2_x","user_id":"u7",)"
                   R"("parameters":{"days":3,"verbose":true,"tags":["a"],"nested":{"x":1.5}}})",
                   &q);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(q.message(), "查询订单 42");
  EXPECT_EQ(q.session_id(), "user-1:chat.2_x");
  EXPECT_EQ(q.user_id(), "u7");
  ASSERT_TRUE(q.has_parameters());
  EXPECT_EQ(q.parameters().fields().at("days").number_value(), 3);
  EXPECT_TRUE(q.parameters().fields().at("verbose").bool_value());
  EXPECT_EQ(q.parameters().fields().at("nested").struct_value().fields().at("x").number_value(),
            1.5);
}

TEST(QueryBody, OptionalFieldsMayBeAbsentOrNull) {
  v1::QueryRequest q;
  ASSERT_TRUE(Parse(R"({"message":"hi","session_id":"s"})", &q).ok());
  EXPECT_TRUE(q.user_id().empty());
  EXPECT_FALSE(q.has_parameters());
  ASSERT_TRUE(Parse(R"({"message":"hi","session_id":"s","user_id":null,"parameters":null})").ok());
  ASSERT_TRUE(Parse(R"({"message":"hi","session_id":"s","parameters":{}})").ok());
}

TEST(QueryBody, RejectsBadJsonWithInvalidJson) {
  for (const char* body : {"", "{", "{\"message\":", "not json", "{\"a\":1,}", "\xff\xfe",
                           "{\"message\":\"\xc3\x28\",\"session_id\":\"s\"}"}) {
    Status s = Parse(body);
    ASSERT_FALSE(s.ok()) << body;
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidJson) << body;
    EXPECT_EQ(HttpStatus(s.error().code), 400);
    // Where it went wrong, without the library's own reference.
    EXPECT_EQ(s.error().message.find("json.exception"), std::string::npos) << s.error().message;
    EXPECT_EQ(s.error().message.rfind("body is not valid JSON: ", 0), 0u) << s.error().message;
  }
  EXPECT_EQ(Parse("{\"a\":1,}").error().message.find("parse error at line 1, column 8"),
            std::string("body is not valid JSON: ").size())
      << Parse("{\"a\":1,}").error().message;
}

TEST(QueryBody, RejectsNonObjects) {
  for (const char* body : {"[]", "\"text\"", "42", "null", "true"}) {
    Status s = Parse(body);
    ASSERT_FALSE(s.ok()) << body;
    EXPECT_EQ(s.error().code, ErrorCode::kBadRequest);
    EXPECT_NE(s.error().message.find("JSON object"), std::string::npos) << s.error().message;
  }
}

TEST(QueryBody, RejectsUnknownFieldsByName) {
  Status s = Parse(R"({"message":"hi","session_id":"s","sesion":"typo"})");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kBadRequest);
  EXPECT_NE(s.error().message.find("unknown field \"sesion\""), std::string::npos)
      << s.error().message;
  // A hostile field name is quoted safely and cut short.
  std::string long_name(5000, 'k');
  s = Parse("{\"" + long_name + "\":1,\"message\":\"hi\",\"session_id\":\"s\"}");
  ASSERT_FALSE(s.ok());
  EXPECT_LT(s.error().message.size(), 300u);
}

TEST(QueryBody, NamesTheBadField) {
  ExpectFieldError(R"({"session_id":"s"})", "message");
  ExpectFieldError(R"({"message":"","session_id":"s"})", "message");
  ExpectFieldError(R"({"message":42,"session_id":"s"})", "message");
  ExpectFieldError(R"({"message":null,"session_id":"s"})", "message");
  ExpectFieldError(R"({"message":["a"],"session_id":"s"})", "message");
  ExpectFieldError(R"({"message":"hi"})", "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":""})", "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":7})", "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":"has space"})", "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":"slash/no"})", "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":"ümlaut"})", "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":")" + std::string(129, 'a') + "\"}",
                   "session_id");
  ExpectFieldError(R"({"message":"hi","session_id":"s","user_id":5})", "user_id");
  ExpectFieldError(
      R"({"message":"hi","session_id":"s","user_id":")" + std::string(129, 'u') + "\"}", "user_id");
  ExpectFieldError(R"({"message":"hi","session_id":"s","parameters":[1]})", "parameters");
  ExpectFieldError(R"({"message":"hi","session_id":"s","parameters":"x"})", "parameters");
  ExpectFieldError(R"({"message":"hi","session_id":"s","parameters":3})", "parameters");
}

TEST(QueryBody, SessionIdOf128CharactersIsFine) {
  EXPECT_TRUE(Parse(R"({"message":"hi","session_id":")" + std::string(128, 'a') + "\"}").ok());
}

TEST(QueryBody, MessageLengthCountsCodePoints) {
  GatewayConfig limits;
  limits.max_message_chars = 5;
  v1::QueryRequest q;
  // Five Chinese characters are 15 bytes but 5 code points.
  EXPECT_TRUE(Parse(R"({"message":"请假五天了","session_id":"s"})", &q, limits).ok());
  Status s = Parse(R"({"message":"请假五天了吗","session_id":"s"})", &q, limits);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("message"), std::string::npos);
  EXPECT_NE(s.error().message.find("5"), std::string::npos);
  // The default limit is 8000.
  EXPECT_TRUE(Parse(json{{"message", std::string(8000, 'x')}, {"session_id", "s"}}.dump()).ok());
  EXPECT_FALSE(Parse(json{{"message", std::string(8001, 'x')}, {"session_id", "s"}}.dump()).ok());
}

TEST(QueryBody, RejectsDeepNestingBeforeConverting) {
  std::string deep = std::string(100, '[') + std::string(100, ']');
  Status s = Parse(R"({"message":"hi","session_id":"s","parameters":{"x":)" + deep + "}}");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kBadRequest);
  EXPECT_NE(s.error().message.find("nested"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_TRUE(Parse(R"({"message":")" + std::string(500, '[') + R"(","session_id":"s"})").ok());
  // A million levels is rejected quickly too.
  std::string huge = std::string(1000000, '[') + std::string(1000000, ']');
  EXPECT_FALSE(Parse(huge).ok());
}

TEST(QueryBody, KeepsIntegersIntegral) {
  v1::QueryRequest q;
  ASSERT_TRUE(
      Parse(R"({"message":"hi","session_id":"s","parameters":{"n":9007199254740991}})", &q).ok());
  EXPECT_EQ(q.parameters().fields().at("n").number_value(), 9007199254740991.0);
}

/// A body with these `parameters` is refused with 400, its message starting with `prefix` and
/// holding `also`, and asking for the number as a string.
void ExpectNumberRefused(const std::string& parameters, const std::string& prefix,
                         const std::string& also = "") {
  const std::string body = R"({"message":"hi","session_id":"s","parameters":)" + parameters + "}";
  Status s = Parse(body);
  ASSERT_FALSE(s.ok()) << body;
  EXPECT_EQ(s.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(s.error().message.rfind(prefix, 0), 0u) << s.error().message;
  EXPECT_NE(s.error().message.find(also), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("send it as a string"), std::string::npos);
}

// `parameters` travel as google.protobuf.Struct (doubles): a number that would arrive changed is
// refused with its path, instead of sending 9007199254740992 for 9007199254740993.
TEST(QueryBody, RefusesNumbersBeyondTwoToThe53) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"n":9007199254740993})", "parameters.n"},
      {R"({"n":-9007199254740993})", "parameters.n"},
      {R"({"order_id":12345678901234567})", "parameters.order_id"},
      {R"({"big":123456789012345678901234567890})", "parameters.big"},
      {R"({"a":{"items":[1,{"id":18446744073709551615}]}})", "parameters.a.items[1].id"},
      {R"({"x":1e300})", "parameters.x"},
      {R"({"y":-9223372036854775809})", "parameters.y"},
  };
  for (const auto& [parameters, path] : cases) ExpectNumberRefused(parameters, path + ": ");
  // 2^53 itself, its negative, fractions and the same digits as a string are exact.
  v1::QueryRequest q;
  ASSERT_TRUE(Parse(R"({"message":"hi","session_id":"s","parameters":{"n":9007199254740992,)"
                    R"("m":-9007199254740992,"f":0.1,"s":"9007199254740993"}})",
                    &q)
                  .ok());
  EXPECT_EQ(q.parameters().fields().at("n").number_value(), 9007199254740992.0);
  EXPECT_EQ(q.parameters().fields().at("s").string_value(), "9007199254740993");
}

// The same for decimals: a fraction or exponent with more digits than a double holds would
// arrive as another number; refused with its path. Values a double prints back are accepted,
// however they are written (0.1, 12.50, 1e-7, -0.0, 2.5E+3).
TEST(QueryBody, RefusesDecimalsADoubleCannotCarry) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"pi":3.14159265358979323846})", "parameters.pi"},
      {R"({"amount":0.10000000000000000001})", "parameters.amount"},
      {R"({"a":{"rates":[1.5,{"r":1.0000000000000001}]}})", "parameters.a.rates[1].r"},
      {R"({"x":123456789.123456789})", "parameters.x"},
      {R"({"e":1.23456789012345678e-5})", "parameters.e"},
      {R"({"tiny":[false,null,"x\"1.5",1e-400]})", "parameters.tiny[3]"},
  };
  for (const auto& [parameters, path] : cases) {
    ExpectNumberRefused(parameters, path + ": number ", "would arrive as");
  }
  v1::QueryRequest q;
  ASSERT_TRUE(
      Parse(R"({"message":"hi","session_id":"s","parameters":{"f":0.1,"g":12.50,)"
            R"("h":1e-7,"z":-0.0,"k":2.5E+3,"l":[0.30000000000000004,"3.14159265358979323846"],)"
            R"("m":{"n":-1.5e-300},"t":true,"u":null,"s":"1.00000000000000001",)"
            R"("q":"a\"3.14159265358979323846\"","w":[[],{},[false]]}})",
            &q)
          .ok());
  EXPECT_EQ(q.parameters().fields().at("g").number_value(), 12.5);
  EXPECT_EQ(q.parameters().fields().at("k").number_value(), 2500.0);
}

// A few hundred random and mutated bodies: every one is either accepted or rejected with a 400,
// never a crash, a hang or an exception.
TEST(QueryBody, FuzzedBodiesNeverCrash) {
  std::mt19937 rng(12345);
  const std::string seeds[] = {
      R"({"message":"hi","session_id":"s"})",
      R"({"message":"查询订单 42","session_id":"a:b.c","user_id":"u","parameters":{"a":[1,{"b":null}]}})",
      R"({"message":"x","session_id":"s","parameters":{"k":"v","n":-1.5e300}})",
  };
  const std::string alphabet = "{}[]\":,\\ abc019-.eE+nulltruefalse\x01\x7f\xc3\xa9\xff";
  int accepted = 0;
  for (int i = 0; i < 600; ++i) {
    std::string body;
    if (i % 3 == 0) {
      std::uniform_int_distribution<int> len(0, 200);
      std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
      for (int n = len(rng); n > 0; --n) body.push_back(alphabet[pick(rng)]);
    } else {
      body = seeds[i % 3];
      std::uniform_int_distribution<int> edits(1, 6);
      for (int e = edits(rng); e > 0; --e) {
        std::uniform_int_distribution<std::size_t> pos(0, body.size());
        std::uniform_int_distribution<int> op(0, 2);
        std::uniform_int_distribution<int> byte(0, 255);
        std::size_t p = pos(rng);
        switch (op(rng)) {
          case 0:
            body.insert(p, 1, static_cast<char>(byte(rng)));
            break;
          case 1:
            if (p < body.size()) body.erase(p, 1);
            break;
          default:
            if (p < body.size()) body[p] = static_cast<char>(byte(rng));
        }
      }
    }
    v1::QueryRequest q;
    Status s = Status::Ok();
    ASSERT_NO_THROW(s = ParseQueryBody(body, GatewayConfig{}, &q)) << body;
    if (s.ok()) {
      ++accepted;
      EXPECT_FALSE(q.message().empty());
    } else {
      EXPECT_EQ(HttpStatus(s.error().code), 400) << body;
      // The error body is valid JSON whatever the input was.
      EXPECT_FALSE(json::parse(ErrorJson(s.error()), nullptr, false).is_discarded());
    }
  }
  EXPECT_GT(accepted, 0);
}

/// The reading a DOM gives, by the rules of query_body.h, for the differential test below: the
/// parser reads the text without building a DOM and must decide every body exactly as this does.
struct DomReading {
  std::optional<Error> error;  ///< set: the body is refused with exactly this
  v1::QueryRequest request;    ///< otherwise: what it carries (then ValidateQueryRequest decides)
};

const char* DomTypeName(const json& value) {
  if (value.is_null()) return "null";
  if (value.is_object()) return "an object";
  if (value.is_array()) return "an array";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  return "a number";
}

DomReading ReadWithDom(const std::string& body) {
  DomReading r;
  auto refuse = [&](ErrorCode code, std::string message) {
    r.error = Error{code, std::move(message)};
    return r;
  };
  json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded()) {
    try {
      json ignored = json::parse(body);
      (void)ignored;
    } catch (const json::exception& e) {
      return refuse(ErrorCode::kInvalidJson,
                    "body is not valid JSON: " + std::string(JsonErrorReason(e.what())));
    }
  }
  if (!doc.is_object()) {
    return refuse(ErrorCode::kBadRequest,
                  std::string("body must be a JSON object, not ") + DomTypeName(doc));
  }
  for (const auto& [key, value] : doc.items()) {  // in key order
    if (key != "message" && key != "session_id" && key != "user_id" && key != "parameters") {
      std::string text = "unknown field ";
      AppendJsonString(&text, key);
      return refuse(ErrorCode::kBadRequest,
                    text + " (allowed: message, session_id, user_id, parameters)");
    }
  }
  auto field = [&](const char* name) { return doc.contains(name) ? &doc[name] : nullptr; };
  const json* message = field("message");
  const json* session_id = field("session_id");
  const json* user_id = field("user_id");
  const json* parameters = field("parameters");
  if (message == nullptr) return refuse(ErrorCode::kBadRequest, "message: required");
  if (!message->is_string()) {
    return refuse(ErrorCode::kBadRequest,
                  std::string("message: must be a string, not ") + DomTypeName(*message));
  }
  if (session_id == nullptr) return refuse(ErrorCode::kBadRequest, "session_id: required");
  if (!session_id->is_string()) {
    return refuse(ErrorCode::kBadRequest,
                  std::string("session_id: must be a string, not ") + DomTypeName(*session_id));
  }
  if (user_id != nullptr && !user_id->is_null() && !user_id->is_string()) {
    return refuse(ErrorCode::kBadRequest,
                  std::string("user_id: must be a string, not ") + DomTypeName(*user_id));
  }
  if (parameters != nullptr && !parameters->is_null() && !parameters->is_object()) {
    return refuse(ErrorCode::kBadRequest, std::string("parameters: must be a JSON object, not ") +
                                              DomTypeName(*parameters));
  }
  r.request.set_message(message->get<std::string>());
  r.request.set_session_id(session_id->get<std::string>());
  if (user_id != nullptr && user_id->is_string())
    r.request.set_user_id(user_id->get<std::string>());
  if (parameters != nullptr && parameters->is_object() && !parameters->empty()) {
    *r.request.mutable_parameters() = JsonToStruct(*parameters);
  }
  return r;
}

// Bodies built from the four fields, unknown and repeated keys, escaped keys, every JSON type
// in every place, and random byte edits: each is decided as the DOM reading decides it, to the
// byte of the error message, and an accepted body carries the same request.
TEST(QueryBody, DecidesEveryBodyAsADomReadingWould) {
  std::mt19937 rng(20261127);
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  const std::vector<std::string> keys = {
      R"("message")", R"("session_id")", R"("user_id")", R"("parameters")", R"("mess\u0061ge")",
      R"("extra")",   R"("Message")",    R"("")",        R"("zz")",         R"("a\"b")"};
  const std::vector<std::string> values = {
      R"("hi there")",
      R"("s-1")",
      R"("")",
      R"("caf\u00e9 \n")",
      R"("bad id!")",
      "null",
      "true",
      "0",
      "-0",
      "1.5",
      "9007199254740993",
      "[]",
      "[1, \"a\"]",
      "{}",
      R"({"days": 3, "k": "v", "k": -0, "deep": {"x": [null, 2.5e-3]}})",
      R"({"n": 0.1})",
      R"({"big": 123456789012345678})",
      R"({"a": {"b": {"c": 1}}})",
      R"("查询订单 42")"};
  int accepted = 0;
  for (int round = 0; round < 4000; ++round) {
    std::string body;
    if (pick(10) == 0) {
      body = values[pick(values.size())];  // not an object
    } else {
      body = "{";
      const bool valid_first = pick(2) == 0;
      if (valid_first) body += R"("message": "check order 1234", "session_id": "s1")";
      for (std::size_t n = pick(5); n > 0; --n) {
        if (body.size() > 1) body += ", ";
        body += keys[pick(keys.size())] + ": " + values[pick(values.size())];
      }
      body += "}";
    }
    for (std::size_t edits = pick(6) == 0 ? 1 + pick(3) : 0; edits > 0; --edits) {
      const std::size_t at = pick(body.size() + 1);
      const char byte = "{}[]\":,\\ a0-.e\x01\xff"[pick(16)];
      if (pick(2) == 0 || at == body.size()) {
        body.insert(at, 1, byte);
      } else {
        body[at] = byte;
      }
    }
    const DomReading want = ReadWithDom(body);
    v1::QueryRequest got;
    const Status status = ParseQueryBody(body, GatewayConfig{}, &got);
    if (want.error) {
      ASSERT_FALSE(status.ok()) << body;
      EXPECT_EQ(status.error().code, want.error->code) << body;
      ASSERT_EQ(status.error().message, want.error->message) << body;
      continue;
    }
    const Status rules = ValidateQueryRequest(want.request, GatewayConfig{});
    if (!status.ok() && status.error().message.rfind("parameters", 0) == 0 &&
        status.error().message.find("number") != std::string::npos) {
      continue;  // a number the worker would not get exactly: checked on the text, tested above
    }
    ASSERT_EQ(status.ok(), rules.ok()) << body << (status.ok() ? "" : status.error().message);
    if (!status.ok()) {
      EXPECT_EQ(status.error().message, rules.error().message) << body;
      continue;
    }
    ++accepted;
    EXPECT_EQ(got.message(), want.request.message()) << body;
    EXPECT_EQ(got.session_id(), want.request.session_id()) << body;
    EXPECT_EQ(got.user_id(), want.request.user_id()) << body;
    ASSERT_EQ(got.has_parameters(), want.request.has_parameters()) << body;
    EXPECT_EQ(got.parameters().DebugString(), want.request.parameters().DebugString()) << body;
  }
  EXPECT_GT(accepted, 100);
}

}  // namespace
}  // namespace wf
