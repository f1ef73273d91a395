#include "templating/template.h"

#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace wf {
namespace {

using nlohmann::json;

EndpointConfig Endpoint(std::string url, std::string method = "GET") {
  EndpointConfig e;
  e.url = std::move(url);
  e.method = std::move(method);
  return e;
}

PreparedRequest MustRender(const EndpointConfig& endpoint, const json& values) {
  auto t = EndpointTemplate::Compile(endpoint);
  EXPECT_TRUE(t.ok()) << t.error().message;
  if (!t.ok()) return {};
  auto r = t->Render(values);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : PreparedRequest{};
}

Error RenderError(const EndpointConfig& endpoint, const json& values) {
  auto t = EndpointTemplate::Compile(endpoint);
  EXPECT_TRUE(t.ok()) << t.error().message;
  if (!t.ok()) return t.error();
  auto r = t->Render(values);
  EXPECT_FALSE(r.ok());
  return r.ok() ? Error{} : r.error();
}

std::string Header(const PreparedRequest& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "<absent>";
}

// --- url ------------------------------------------------------------------------------------

TEST(EndpointTemplateTest, UrlValuesArePercentEncoded) {
  auto r = MustRender(Endpoint("http://h/search/{q}?q={q}&n={n}&ok={ok}"),
                      {{"q", "a b/c?d&e#f%g+h=i"}, {"n", 3}, {"ok", true}});
  EXPECT_EQ(r.url,
            "http://h/search/a%20b%2Fc%3Fd%26e%23f%25g%2Bh%3Di?q=a%20b%2Fc%3Fd%26e%23f%25g%2Bh%3Di"
            "&n=3&ok=true");
}

TEST(EndpointTemplateTest, UrlUnreservedCharactersAreKept) {
  auto r = MustRender(Endpoint("http://h/x?v={v}"), {{"v", "AZaz09-._~"}});
  EXPECT_EQ(r.url, "http://h/x?v=AZaz09-._~");
  // In the path too, except for a value of dots only (see DotsInPathValuesNeverFormDotSegments).
  r = MustRender(Endpoint("http://h/{v}"), {{"v", "AZaz09-._~"}});
  EXPECT_EQ(r.url, "http://h/AZaz09-._~");
}

// A value too long for a URL (200,000 CJK characters are 1.8 MB percent-encoded) is the
// caller's bad request, not libcurl's "out of memory" reported as an internal error.
TEST(EndpointTemplateTest, AUrlLongerThanServersTakeIsABadRequest) {
  const std::string prefix = "http://h/x?v=";
  auto fits = MustRender(Endpoint(prefix + "{v}"),
                         {{"v", std::string(kMaxRenderedUrlBytes - prefix.size(), 'a')}});
  EXPECT_EQ(fits.url.size(), kMaxRenderedUrlBytes);
  Error e = RenderError(Endpoint(prefix + "{v}"),
                        {{"v", std::string(kMaxRenderedUrlBytes - prefix.size() + 1, 'a')}});
  EXPECT_EQ(e.code, ErrorCode::kBadRequest);
  EXPECT_NE(e.message.find("url: 8193 bytes"), std::string::npos) << e.message;
  std::string cjk;
  for (int i = 0; i < 200000; ++i) cjk += "中";
  EXPECT_EQ(RenderError(Endpoint(prefix + "{v}"), {{"v", cjk}}).code, ErrorCode::kBadRequest);
}

TEST(EndpointTemplateTest, DotsInPathValuesNeverFormDotSegments) {
  // ".." in a path placeholder would make the upstream (or curl) resolve it to another
  // endpoint: "/api/x/../echo" is "/api/echo".
  auto r = MustRender(Endpoint("http://h/api/x/{p}/echo"), {{"p", ".."}});
  EXPECT_EQ(r.url, "http://h/api/x/%2E%2E/echo");
  r = MustRender(Endpoint("http://h/api/orders/{order_id}"), {{"order_id", ".."}});
  EXPECT_EQ(r.url, "http://h/api/orders/%2E%2E");
  r = MustRender(Endpoint("http://h/api/{a}{b}/z"), {{"a", "."}, {"b", "."}});
  EXPECT_EQ(r.url, "http://h/api/%2E%2E/z");
  r = MustRender(Endpoint("http://h/{a}/{b}/{c}"), {{"a", "."}, {"b", "..."}, {"c", "../x"}});
  EXPECT_EQ(r.url, "http://h/%2E/%2E%2E%2E/..%2Fx");
  // Dots inside other values cannot form a segment of their own ('/' is always encoded).
  r = MustRender(Endpoint("http://h/files/{name}"), {{"name", "report.v2.pdf"}});
  EXPECT_EQ(r.url, "http://h/files/report.v2.pdf");
  // After the '?' (and '#') of the template, dots stay as they are.
  r = MustRender(Endpoint("http://h/a/{p}?q={p}#{p}"), {{"p", ".."}});
  EXPECT_EQ(r.url, "http://h/a/%2E%2E?q=..#..");
  // A literal dot segment of the configured URL itself is the operator's choice: untouched.
  r = MustRender(Endpoint("http://h/a/../{p}"), {{"p", "b"}});
  EXPECT_EQ(r.url, "http://h/a/../b");
}

TEST(EndpointTemplateTest, UrlEncodesUtf8) {
  auto r = MustRender(Endpoint("http://h/weather?city={city}"), {{"city", "北京 市"}});
  EXPECT_EQ(r.url, "http://h/weather?city=%E5%8C%97%E4%BA%AC%20%E5%B8%82");
  r = MustRender(Endpoint("http://h/{e}"), {{"e", "é✅"}});
  EXPECT_EQ(r.url, "http://h/%C3%A9%E2%9C%85");
}

TEST(EndpointTemplateTest, UrlNonStringValuesAsJsonText) {
  auto r = MustRender(Endpoint("http://h/?a={a}&b={b}&c={c}&d={d}"),
                      {{"a", -1.5}, {"b", false}, {"c", json::array({1, "x"})}, {"d", {{"k", 1}}}});
  EXPECT_EQ(r.url, "http://h/?a=-1.5&b=false&c=%5B1%2C%22x%22%5D&d=%7B%22k%22%3A1%7D");
}

TEST(EndpointTemplateTest, UrlLiteralTextIsUntouchedAndBracesEscape) {
  auto r = MustRender(Endpoint("http://h/a%20b/{{id}}?x={x}"), {{"x", "1"}});
  EXPECT_EQ(r.url, "http://h/a%20b/{id}?x=1");
}

TEST(EndpointTemplateTest, DottedPlaceholderReadsNestedValues) {
  auto r = MustRender(Endpoint("http://h/{user.name}/{items.1}/{a.b}"),
                      {{"user", {{"name", "bob"}}}, {"items", {"x", "y"}}, {"a.b", "flat"}});
  EXPECT_EQ(r.url, "http://h/bob/y/flat");
}

TEST(EndpointTemplateTest, MissingPlaceholderNamesIt) {
  Error e = RenderError(Endpoint("http://h/{order_id}?days={days}"), {{"order_id", "1"}});
  EXPECT_EQ(e.code, ErrorCode::kMissingParameter);
  EXPECT_EQ(e.message, "missing parameter: days");
  e = RenderError(Endpoint("http://h/{days}"), {{"days", nullptr}});
  EXPECT_EQ(e.code, ErrorCode::kMissingParameter);
  EXPECT_EQ(e.message, "missing parameter: days");
  e = RenderError(Endpoint("http://h/{user.name}"), {{"user", {{"id", 1}}}});
  EXPECT_EQ(e.message, "missing parameter: user.name");
  e = RenderError(Endpoint("http://h/{x}"), json::array());
  EXPECT_EQ(e.message, "missing parameter: x");
}

// --- headers --------------------------------------------------------------------------------

TEST(EndpointTemplateTest, HeadersAreSubstitutedInConfigOrder) {
  EndpointConfig e = Endpoint("http://h/");
  e.headers = {
      {"X-Session", "{session_id}"}, {"Authorization", "Bearer {token}"}, {"X-Count", "{n}"}};
  auto r = MustRender(e, {{"session_id", "s-1"}, {"token", "abc def/+"}, {"n", 2}});
  ASSERT_EQ(r.headers.size(), 3u);
  EXPECT_EQ(r.headers[0], (std::pair<std::string, std::string>{"X-Session", "s-1"}));
  EXPECT_EQ(r.headers[1],
            (std::pair<std::string, std::string>{"Authorization", "Bearer abc def/+"}));
  EXPECT_EQ(r.headers[2], (std::pair<std::string, std::string>{"X-Count", "2"}));
  EXPECT_EQ(r.body, "");
}

TEST(EndpointTemplateTest, HeaderInjectionIsRejected) {
  EndpointConfig e = Endpoint("http://h/");
  e.headers = {{"X-Session", "id={session_id}"}};
  for (const std::string& bad : {std::string("a\r\nX-Evil: 1"), std::string("a\nb"),
                                 std::string("a\rb"), std::string("a\0b", 3)}) {
    Error err = RenderError(e, {{"session_id", bad}});
    EXPECT_EQ(err.code, ErrorCode::kBadRequest);
    EXPECT_EQ(err.message, "header X-Session: value of {session_id} contains CR, LF or NUL");
  }
}

TEST(EndpointTemplateTest, HeaderMissingPlaceholder) {
  EndpointConfig e = Endpoint("http://h/");
  e.headers = {{"X-Session", "{session_id}"}};
  Error err = RenderError(e, json::object());
  EXPECT_EQ(err.code, ErrorCode::kMissingParameter);
  EXPECT_EQ(err.message, "missing parameter: session_id");
}

// --- body -----------------------------------------------------------------------------------

TEST(EndpointTemplateTest, WholePlaceholderKeepsTheJsonType) {
  EndpointConfig e = Endpoint("http://h/", "POST");
  e.body = json::parse(R"({"days": "{days}", "urgent": "{urgent}", "ratio": "{ratio}",
                           "tags": "{tags}", "who": "{who}", "none": null, "n": 5})");
  auto r = MustRender(
      e,
      {{"days", 3}, {"urgent", true}, {"ratio", 0.5}, {"tags", {"a", "b"}}, {"who", {{"id", 7}}}});
  json body = json::parse(r.body);
  EXPECT_EQ(body, json::parse(R"({"days": 3, "urgent": true, "ratio": 0.5, "tags": ["a","b"],
                                  "who": {"id": 7}, "none": null, "n": 5})"));
  EXPECT_TRUE(body["days"].is_number_integer());
}

TEST(EndpointTemplateTest, EmbeddedPlaceholdersAreTextAndSafelyEscaped) {
  EndpointConfig e = Endpoint("http://h/", "POST");
  e.body =
      json::parse(R"J({"text": "User said: {user_message} ({n})", "session": "{session_id}"})J");
  std::string hostile = "he said \"hi\"\n\\ }{ \u0001 请假";
  auto r = MustRender(e, {{"user_message", hostile}, {"n", 2}, {"session_id", "s1"}});
  json body = json::parse(r.body);  // always valid JSON
  EXPECT_EQ(body["text"], "User said: " + hostile + " (2)");
  EXPECT_EQ(body["session"], "s1");
}

TEST(EndpointTemplateTest, NestedBodyAndObjectKeysAreNotTemplated) {
  EndpointConfig e = Endpoint("http://h/", "POST");
  e.body = json::parse(R"({"{key}": {"list": ["{a}", "x{a}y", 1, {"deep": "{b}"}]},
                           "lit": "{{not a placeholder}}"})");
  auto r = MustRender(e, {{"a", 1}, {"b", "B"}, {"key", "K"}});
  EXPECT_EQ(json::parse(r.body), json::parse(R"({"{key}": {"list": [1, "x1y", 1, {"deep": "B"}]},
                            "lit": "{not a placeholder}"})"));
}

TEST(EndpointTemplateTest, BodyThatIsOnlyAPlaceholderOrAnArray) {
  EndpointConfig e = Endpoint("http://h/", "POST");
  e.body = "{payload}";
  auto r = MustRender(e, {{"payload", {{"x", 1}}}});
  EXPECT_EQ(r.body, R"({"x":1})");
  e.body = json::array({"{a}", "{{b}}"});
  r = MustRender(e, {{"a", "A"}});
  EXPECT_EQ(r.body, R"(["A","{b}"])");
}

TEST(EndpointTemplateTest, BodyMissingPlaceholderNamesIt) {
  EndpointConfig e = Endpoint("http://h/", "POST");
  e.body = json::parse(R"({"text": "{user_message}", "days": "{days}"})");
  Error err = RenderError(e, {{"user_message", "hi"}});
  EXPECT_EQ(err.code, ErrorCode::kMissingParameter);
  EXPECT_EQ(err.message, "missing parameter: days");
  e.body = json::parse(R"({"text": "took {days} days"})");
  err = RenderError(e, json::object());
  EXPECT_EQ(err.message, "missing parameter: days");
}

TEST(EndpointTemplateTest, ContentTypeDefault) {
  EndpointConfig e = Endpoint("http://h/", "POST");
  e.body = json::object();
  auto r = MustRender(e, json::object());
  EXPECT_EQ(r.body, "{}");
  EXPECT_EQ(Header(r, "Content-Type"), "application/json");
  e.headers = {{"content-type", "application/vnd.x+json"}};
  r = MustRender(e, json::object());
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(Header(r, "content-type"), "application/vnd.x+json");
  e.body.reset();
  e.headers.clear();
  r = MustRender(e, json::object());
  EXPECT_TRUE(r.headers.empty());
}

TEST(EndpointTemplateTest, CopiesMethodTimeoutAndLimit) {
  EndpointConfig e = Endpoint("https://h/x", "DELETE");
  e.timeout = std::chrono::milliseconds(1234);
  e.max_response_bytes = 99;
  auto r = MustRender(e, json::object());
  EXPECT_EQ(r.method, "DELETE");
  EXPECT_EQ(r.url, "https://h/x");
  EXPECT_EQ(r.timeout, std::chrono::milliseconds(1234));
  EXPECT_EQ(r.max_response_bytes, 99u);
}

TEST(EndpointTemplateTest, CompileErrorsNameTheField) {
  auto t = EndpointTemplate::Compile(Endpoint("http://h/{x"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(t.error().message, "url: invalid template: unclosed '{' at offset 9");
  EndpointConfig e = Endpoint("http://h/");
  e.headers = {{"X-A", "{bad name}"}};
  t = EndpointTemplate::Compile(e);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message,
            "headers.X-A: invalid template: invalid placeholder name 'bad name' at offset 0");
  e.headers = {{"X-A", "a\r\nb"}};
  t = EndpointTemplate::Compile(e);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message, "headers.X-A: header value contains CR, LF or NUL");
  e.headers.clear();
  e.body = json::parse(R"({"a": [0, {"b": "x}"}]})");
  t = EndpointTemplate::Compile(e);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(
      t.error().message,
      "body.a[1].b: invalid template: single '}' at offset 1 (write '}}' for a literal brace)");
}

TEST(EndpointTemplateTest, InvalidUtf8ValueNeverThrows) {
  EndpointConfig e = Endpoint("http://h/{v}", "POST");
  e.body = json::parse(R"({"v": "x{v}"})");
  auto r = MustRender(e, {{"v", std::string("\xff\xfe")}});
  EXPECT_EQ(r.url, "http://h/%FF%FE");
  EXPECT_TRUE(json::accept(r.body));
}

// --- response templates ---------------------------------------------------------------------

std::string RenderResponse(std::string_view text, const json& values, std::string_view body) {
  auto t = ResponseTemplate::Compile(text);
  EXPECT_TRUE(t.ok()) << t.error().message;
  return t.ok() ? t->Render(values, body) : "<compile error>";
}

TEST(ResponseTemplateTest, RenderAtMostStopsBeforeExceedingTheLimit) {
  auto t = ResponseTemplate::Compile("<{result}{result}>");
  ASSERT_TRUE(t.ok());
  const std::string body(600, 'x');
  auto whole = t->RenderAtMost(json::object(), body, 1202);
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->size(), 1202u);
  EXPECT_FALSE(t->RenderAtMost(json::object(), body, 1201).has_value());
  EXPECT_FALSE(t->RenderAtMost(json::object(), body, 700).has_value());
  EXPECT_FALSE(t->RenderAtMost(json::object(), "", 1).has_value());  // the literals alone: 2
  EXPECT_EQ(*t->RenderAtMost(json::object(), "", 2), "<>");
  EXPECT_EQ(t->Render(json::object(), body).size(), 1202u);  // Render has no limit
}

TEST(ResponseTemplateTest, WholeBody) {
  EXPECT_EQ(RenderResponse("✅ 已提交\n\n{result}", json::object(), R"({"ok":true})"),
            "✅ 已提交\n\n{\"ok\":true}");
  EXPECT_EQ(RenderResponse("{result}", json::object(), "plain text, not JSON"),
            "plain text, not JSON");
}

TEST(ResponseTemplateTest, FieldsOfAJsonBody) {
  std::string body = R"({"status": "shipped", "order": {"id": 1234, "eta": {"days": 2}},
                         "items": [{"name": "pen"}, {"name": "书"}], "paid": true,
                         "total": 12.5, "note": null, "tags": ["a", "b"], "0": "zero"})";
  json values = {{"order_id", "1234"}};
  EXPECT_EQ(RenderResponse("订单 {order_id}: {result.status}", values, body), "订单 1234: shipped");
  EXPECT_EQ(RenderResponse("{result.order.id}/{result.order.eta.days}", values, body), "1234/2");
  EXPECT_EQ(RenderResponse("{result.items.0.name},{result.items.1.name}", values, body), "pen,书");
  EXPECT_EQ(RenderResponse("{result.paid} {result.total} {result.note}", values, body),
            "true 12.5 null");
  EXPECT_EQ(RenderResponse("{result.tags} {result.order.eta}", values, body),
            R"(["a","b"] {"days":2})");
  EXPECT_EQ(RenderResponse("{result.0}", values, body), "zero");  // an object key, not an index
}

TEST(ResponseTemplateTest, TopLevelArrayBody) {
  EXPECT_EQ(RenderResponse("{result.1.id}", json::object(), R"([{"id": 1}, {"id": 2}])"), "2");
}

TEST(ResponseTemplateTest, MissingValuesRenderEmpty) {
  std::string body = R"({"status": "ok", "items": [1]})";
  EXPECT_EQ(RenderResponse("[{result.nope}][{result.items.5}][{result.status.x}][{p}]",
                           json::object(), body),
            "[][][][]");
  // A field of a body that is not JSON.
  EXPECT_EQ(RenderResponse("status={result.status};raw={result}", json::object(), "oops"),
            "status=;raw=oops");
  EXPECT_EQ(RenderResponse("{result.status}", json::object(), ""), "");
}

TEST(ResponseTemplateTest, BodiesReadAsAFullParseWouldReadThem) {
  // A repeated key: the last one counts, its whole value (not a merge of both).
  EXPECT_EQ(RenderResponse("[{result.a.b}][{result.a.c}]", json::object(),
                           R"({"a": {"b": 1}, "a": {"c": 2}})"),
            "[][2]");
  // Escaped keys and values are decoded; numbers and containers come out as compact JSON.
  EXPECT_EQ(
      RenderResponse("{result.key} {result.n} {result.f} {result.big} {result.o}", json::object(),
                     R"({"k\u0065y": "caf\u00e9 \"x\"", "n": -0, "f": 2.50, "big": 1e2,
                               "o": {"z": [1, 2.0], "a": null}})"),
      R"(café "x" 0 2.5 100.0 {"a":null,"z":[1,2.0]})");
  // A body that is not one whole JSON value gives no fields, however much of it looks right.
  for (const char* broken :
       {R"({"status": "ok")", R"({"status": "ok"} trailing)", R"({"status": "ok",})",
        "{\"status\": \"\xff\"}", R"({"status": "ok", "n": 1e999})"}) {
    EXPECT_EQ(RenderResponse("[{result.status}]", json::object(), broken), "[]") << broken;
  }
  // Nesting up to the shared limit is read; deeper counts as not JSON (no DOM is built of it,
  // however deep: 300,000 levels must not exhaust the stack).
  std::string ok = R"({"status": "ok", "x": )" + std::string(60, '[') + std::string(60, ']') + "}";
  EXPECT_EQ(RenderResponse("{result.status}", json::object(), ok), "ok");
  for (std::size_t levels : {std::size_t{100}, std::size_t{300000}}) {
    std::string deep =
        R"({"status": "deep", "x": )" + std::string(levels, '[') + std::string(levels, ']') + "}";
    EXPECT_EQ(RenderResponse("[{result.status}]", json::object(), deep), "[]") << levels;
    EXPECT_EQ(RenderResponse("{result.x}", json::object(), deep), "") << levels;
  }
}

// The fields of an object body are found in one walk for all of a template's keys, except
// past the 16th distinct key, which is looked up alone: both give what a DOM gives. The oracle
// here parses the body with nlohmann and follows each path, as the documented rules say.
TEST(ResponseTemplateTest, ManyFieldsReadInOneWalkMatchADom) {
  std::mt19937 rng(20261127);
  const std::vector<std::string> names = {"a",   "b",   "k0",  "k1",  "k2",  "k3",  "k4",  "k5",
                                          "k6",  "k7",  "k8",  "k9",  "k10", "k11", "k12", "k13",
                                          "k14", "k15", "k16", "k17", "k18", "0",   "1"};
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  std::function<json(int)> value = [&](int depth) -> json {
    switch (depth > 2 ? pick(3) : pick(5)) {
      case 0:
        return names[pick(names.size())];
      case 1:
        return static_cast<int>(pick(100));
      case 2:
        return nullptr;
      case 3: {
        json arr = json::array();
        for (std::size_t i = pick(3); i > 0; --i) arr.push_back(value(depth + 1));
        return arr;
      }
      default: {
        json obj = json::object();
        for (std::size_t i = pick(4); i > 0; --i) obj[names[pick(names.size())]] = value(depth + 1);
        return obj;
      }
    }
  };
  auto expected_text = [](const json* v) -> std::string {
    if (v == nullptr) return "";
    return v->is_string() ? v->get<std::string>() : v->dump();
  };
  for (int round = 0; round < 500; ++round) {
    // An object body whose members may repeat (the text keeps every copy; a DOM the last).
    std::string body = "{";
    json dom = json::object();
    for (std::size_t i = pick(30); i > 0; --i) {
      const std::string& key = names[pick(names.size())];
      const json v = value(0);
      if (body.size() > 1) body += ", ";
      body += json(key).dump() + ": " + v.dump();
      dom[key] = v;
    }
    body += "}";
    std::string text;
    std::string want;
    for (std::size_t i = 1 + pick(24); i > 0; --i) {
      std::vector<std::string> path = {names[pick(names.size())]};
      for (std::size_t depth = pick(3); depth > 0; --depth)
        path.push_back(names[pick(names.size())]);
      std::string name = "result";
      const json* node = &dom;
      for (const std::string& part : path) {
        name += "." + part;
        if (node == nullptr) continue;
        if (node->is_object()) {
          auto it = node->find(part);
          node = it == node->end() ? nullptr : &*it;
        } else if (node->is_array() && std::isdigit(static_cast<unsigned char>(part[0]))) {
          const std::size_t index = std::stoul(part);
          node = index < node->size() ? &(*node)[index] : nullptr;
        } else {
          node = nullptr;
        }
      }
      text += "[{" + name + "}]";
      want += "[" + expected_text(node) + "]";
    }
    ASSERT_EQ(RenderResponse(text, json::object(), body), want) << text << "\n" << body;
  }
}

TEST(ResponseTemplateTest, ParametersAndValues) {
  json values = {{"order_id", "1234"},
                 {"days", 3},
                 {"user_message", "hi"},
                 {"session_id", "s"},
                 {"meta", {{"k", "v"}}}};
  EXPECT_EQ(
      RenderResponse("{order_id} {days} {user_message} {session_id} {meta.k} {meta}", values, ""),
      R"(1234 3 hi s v {"k":"v"})");
  // `result` is always the response, even if a value has that name.
  EXPECT_EQ(RenderResponse("{result}", {{"result", "param"}}, "body"), "body");
  EXPECT_EQ(RenderResponse("{x}", json("not an object"), "body"), "");
}

TEST(ResponseTemplateTest, EscapedBraces) {
  EXPECT_EQ(RenderResponse("{{result}} = {result}}}", json::object(), "1"), "{result} = 1}");
}

TEST(ResponseTemplateTest, CompileErrors) {
  auto t = ResponseTemplate::Compile("Order {order_id");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(t.error().message, "invalid template: unclosed '{' at offset 6");
}

}  // namespace
}  // namespace wf
