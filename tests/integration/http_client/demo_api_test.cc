// wf-demo-api as the business API the demo flows and other tests rely on: its endpoints, their
// determinism, errors and command line.

#include <gtest/gtest.h>

#include <csignal>
#include <nlohmann/json.hpp>
#include <string>

#include "demo_api_server.h"
#include "http_client/http_client.h"
#include "support/test_support.h"

namespace wf {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

class DemoApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new testing::DemoApiServer();
    client_ = new HttpClient();
  }
  static void TearDownTestSuite() {
    delete client_;
    delete server_;
  }

  /// Calls the demo API; fails the test on a transport error.
  static HttpResponse Call(const std::string& method, const std::string& path,
                           const std::string& body = "") {
    HttpRequest request;
    request.method = method;
    request.url = server_->Url(path);
    request.body = body;
    if (!body.empty()) request.headers = {{"Content-Type", "application/json"}};
    auto result = HttpCallBlocking(*client_, request);
    EXPECT_TRUE(result.ok()) << path << ": " << (result.ok() ? "" : result.error().message);
    return result.ok() ? *result : HttpResponse{};
  }

  static Json CallJson(const std::string& method, const std::string& path, int expected_status,
                       const std::string& body = "") {
    HttpResponse response = Call(method, path, body);
    EXPECT_EQ(response.status, expected_status) << method << " " << path << ": " << response.body;
    EXPECT_EQ(response.content_type, "application/json") << path;
    Json json = Json::parse(response.body, nullptr, false);
    EXPECT_FALSE(json.is_discarded()) << path << ": " << response.body;
    return json;
  }

  static testing::DemoApiServer* server_;
  static HttpClient* client_;
};

testing::DemoApiServer* DemoApiTest::server_ = nullptr;
HttpClient* DemoApiTest::client_ = nullptr;

TEST_F(DemoApiTest, Health) {
  EXPECT_EQ(CallJson("GET", "/health", 200), (Json{{"status", "ok"}}));
}

TEST_F(DemoApiTest, OrdersAreDeterministicAndConsistent) {
  Json order = CallJson("GET", "/api/orders/1234", 200);
  EXPECT_EQ(order, CallJson("GET", "/api/orders/1234", 200));
  EXPECT_NE(order, CallJson("GET", "/api/orders/1235", 200));
  EXPECT_EQ(order["order_id"], "1234");
  for (const char* field : {"status", "items", "total", "currency", "eta"}) {
    EXPECT_TRUE(order.contains(field)) << field;
  }
  double sum = 0;
  for (const Json& item : order["items"]) {
    sum += item["unit_price"].get<double>() * item["quantity"].get<int>();
  }
  EXPECT_NEAR(order["total"].get<double>(), sum, 0.001);

  Json verbose = CallJson("GET", "/api/orders/1234?verbose=true", 200);
  EXPECT_TRUE(verbose["history"].is_array());
  EXPECT_FALSE(CallJson("GET", "/api/orders/1234?verbose=false", 200).contains("history"));
}

TEST_F(DemoApiTest, SmallOrderIdsAreUnknown) {
  Json missing = CallJson("GET", "/api/orders/999", 404);
  EXPECT_EQ(missing["error"]["code"], "not_found");
  EXPECT_EQ(CallJson("GET", "/api/orders/12ab", 400)["error"]["code"], "bad_request");
}

TEST_F(DemoApiTest, LeaveEchoesTheRequest) {
  const std::string body = R"({"text":"我要请假 3 天","session":"s-9","days":3})";
  Json leave = CallJson("POST", "/api/leave", 200, body);
  EXPECT_EQ(leave["status"], "submitted");
  EXPECT_EQ(leave["days"], 3);
  EXPECT_EQ(leave["text"], "我要请假 3 天");
  EXPECT_EQ(leave["session"], "s-9");
  EXPECT_EQ(leave["request_id"].get<std::string>().rfind("LV-", 0), 0u);
  EXPECT_EQ(leave["request_id"], CallJson("POST", "/api/leave", 200, body)["request_id"]);
  EXPECT_TRUE(CallJson("POST", "/api/leave", 200, R"({"text":"x"})")["days"].is_null());
  EXPECT_EQ(CallJson("POST", "/api/leave", 400, "days=3")["error"]["code"], "invalid_json");
  EXPECT_EQ(CallJson("GET", "/api/leave", 405)["error"]["code"], "method_not_allowed");
}

TEST_F(DemoApiTest, HrAndItEndpoints) {
  EXPECT_EQ(CallJson("POST", "/api/password/reset", 200, R"({"username":"alice"})"),
            (Json{{"status", "sent"}, {"channel", "email"}, {"username", "alice"}}));
  CallJson("POST", "/api/password/reset", 400, R"({"user":"alice"})");

  Json payslip = CallJson("GET", "/api/payslip?month=2025-03", 200);
  EXPECT_EQ(payslip["month"], "2025-03");
  EXPECT_NEAR(payslip["net"].get<double>(),
              payslip["gross"].get<double>() - payslip["tax"].get<double>() -
                  payslip["pension"].get<double>(),
              0.001);
  CallJson("GET", "/api/payslip?month=2025-13", 400);
  CallJson("GET", "/api/payslip", 400);

  Json ticket = CallJson("GET", "/api/it/tickets/IT-2041", 200);
  EXPECT_EQ(ticket["ticket_id"], "IT-2041");
  EXPECT_TRUE(ticket["summary"].is_string());
  Json created = CallJson("POST", "/api/it/tickets", 201, R"({"summary":"VPN is down"})");
  EXPECT_EQ(created["status"], "open");
  EXPECT_EQ(created["ticket_id"].get<std::string>().rfind("IT-", 0), 0u);
  CallJson("POST", "/api/it/tickets", 400, R"({"summary":""})");

  Json expense = CallJson("GET", "/api/expenses/EX-77", 200);
  EXPECT_EQ(expense["expense_id"], "EX-77");
  EXPECT_EQ(expense["currency"], "USD");
}

TEST_F(DemoApiTest, RoomsWeatherFxHolidays) {
  Json rooms = CallJson("GET", "/api/rooms?date=2025-05-01&size=10", 200);
  ASSERT_FALSE(rooms["rooms"].empty());
  for (const Json& room : rooms["rooms"]) EXPECT_GE(room["capacity"].get<int>(), 10);
  CallJson("GET", "/api/rooms?date=2025-02-30", 400);

  Json weather = CallJson("GET", "/api/weather?city=%E5%8C%97%E4%BA%AC", 200);
  EXPECT_EQ(weather["city"], "北京");
  EXPECT_TRUE(weather["temp_c"].is_number_integer());
  EXPECT_TRUE(weather["condition"].is_string());
  CallJson("GET", "/api/weather", 400);

  Json fx = CallJson("GET", "/api/fx?from=USD&to=EUR", 200);
  EXPECT_DOUBLE_EQ(fx["rate"].get<double>(), 0.92);
  EXPECT_EQ(CallJson("GET", "/api/fx?from=eur&to=usd", 200)["from"], "EUR");
  CallJson("GET", "/api/fx?from=USD&to=XXX", 400);

  Json holidays = CallJson("GET", "/api/holidays?year=2026", 200);
  EXPECT_EQ(holidays["year"], 2026);
  EXPECT_EQ(holidays["holidays"][0]["date"], "2026-01-01");
}

TEST_F(DemoApiTest, EchoShowsExactlyWhatArrived) {
  HttpRequest request;
  request.method = "POST";
  request.url = server_->Url("/api/echo?name=%E4%B8%AD+%22x%22&a=1%262");
  request.headers = {{"X-Flow", "order_status"}};
  request.body = "not json \"at all\"";
  auto result = HttpCallBlocking(*client_, request);
  ASSERT_TRUE(result.ok());
  Json echo = Json::parse(result->body);
  EXPECT_EQ(echo["query"]["name"], "%E4%B8%AD+%22x%22");
  EXPECT_EQ(echo["query_decoded"]["name"], "中 \"x\"");
  EXPECT_EQ(echo["query_decoded"]["a"], "1&2");
  EXPECT_EQ(echo["headers"]["x-flow"], "order_status");
  EXPECT_EQ(echo["body"], request.body);
  EXPECT_TRUE(echo["json"].is_null());
}

TEST_F(DemoApiTest, RepliesCarryTheirTypeAndHeadersButNoInjectedLine) {
  HttpResponse raw = Call("GET", "/raw?status=201&hex=6869&repeat=2&type=text/csv");
  EXPECT_EQ(raw.status, 201);
  EXPECT_EQ(raw.content_type, "text/csv");
  EXPECT_EQ(raw.body, "hihi");
  HttpResponse limited = Call("GET", "/status/503?retry_after=7");
  EXPECT_EQ(limited.status, 503);
  EXPECT_EQ(limited.retry_after, "7");
  // The type becomes a header line as sent: a CR/LF in it would add a header of the caller's.
  EXPECT_EQ(CallJson("GET", "/raw?status=200&hex=6869&type=text/plain%0D%0AX-Evil:%201",
                     400)["error"]["code"],
            "bad_request");
  EXPECT_EQ(CallJson("GET", "/raw?status=200&hex=6869&type=", 400)["error"]["code"], "bad_request");
}

TEST_F(DemoApiTest, UnknownPathsAre404) {
  EXPECT_EQ(CallJson("GET", "/api/nothing", 404)["error"]["code"], "not_found");
  EXPECT_EQ(CallJson("GET", "/", 404)["error"]["code"], "not_found");
}

TEST_F(DemoApiTest, DeeplyNestedJsonIsA400NotACrash) {
  // {"a": [[[...]]]} 100,000 levels deep (~200 KB): used to overflow the server's stack.
  const std::string deep = R"({"a":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  for (const char* path : {"/api/leave", "/api/echo", "/api/it/tickets", "/api/password/reset"}) {
    Json reply = CallJson("POST", path, 400, deep);
    EXPECT_EQ(reply["error"]["code"], "invalid_json") << path;
    EXPECT_NE(reply["error"]["message"].get<std::string>().find("nested deeper than 64"),
              std::string::npos)
        << path;
  }
  // Nesting within the limit is still fine.
  const std::string ok = R"({"days":1,"a":)" + std::string(60, '[') + std::string(60, ']') + "}";
  EXPECT_EQ(CallJson("POST", "/api/leave", 200, ok)["days"], 1);
  EXPECT_EQ(CallJson("GET", "/health", 200)["status"], "ok");  // Still serving.
}

TEST_F(DemoApiTest, OversizedRequestIsRejected) {
  // Just over the 1 MiB limit: Pistache 0.0.5 rescans the excess quadratically before its 413.
  testing::HttpReply reply = testing::HttpCall(
      "POST", server_->Url("/api/echo"), std::string((1 << 20) + (64 << 10), 'a'), {"Expect:"});
  EXPECT_EQ(reply.status, 413);
  EXPECT_EQ(CallJson("GET", "/health", 200)["status"], "ok");  // Still serving.
}

TEST_F(DemoApiTest, Http11ConnectionsPersistUnlessTheClientCloses) {
  // Pistache alone answers "Connection: close" to HTTP/1.1 requests without a Connection header.
  testing::HttpReply plain = testing::HttpCall("GET", server_->Url("/health"));
  EXPECT_EQ(plain.status, 200);
  EXPECT_EQ(plain.headers["connection"], "Keep-Alive");
  testing::HttpReply closing =
      testing::HttpCall("GET", server_->Url("/health"), "", {"Connection: close"});
  EXPECT_EQ(closing.status, 200);
  EXPECT_EQ(closing.headers["connection"], "Close");
}

TEST(DemoApiCommandLineTest, HelpAndBadFlags) {
  testing::Process help(testing::BinPath("wf-demo-api"), {"--help"});
  EXPECT_EQ(help.Wait(milliseconds(10000)), 0);
  EXPECT_NE(help.Log().find("--listen HOST:PORT"), std::string::npos);

  testing::Process bad(testing::BinPath("wf-demo-api"), {"--threads", "zero"});
  EXPECT_EQ(bad.Wait(milliseconds(10000)), 2);
  EXPECT_NE(bad.Log().find("--threads"), std::string::npos);
}

TEST(DemoApiCommandLineTest, PortInUseExitsWithAReason) {
  testing::DemoApiServer first;
  testing::Process second(testing::BinPath("wf-demo-api"),
                          {"--listen", "127.0.0.1:" + std::to_string(first.port())});
  EXPECT_EQ(second.Wait(milliseconds(10000)), 1);
  EXPECT_NE(second.Log().find("cannot serve on 127.0.0.1"), std::string::npos) << second.Log();
}

TEST(DemoApiCommandLineTest, StopsOnSigterm) {
  testing::DemoApiServer server;
  server.process().Signal(SIGTERM);
  EXPECT_EQ(server.process().Wait(milliseconds(10000)), 0);
}

}  // namespace
}  // namespace wf
