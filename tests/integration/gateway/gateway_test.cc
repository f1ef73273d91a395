// The real wf-gateway binary against a real nats-server and a stand-in lightweight worker.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "http_probe.h"
#include "nats/connection.h"
#include "stand_in_worker.h"
#include "support/test_support.h"

namespace wf::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

/// One wf-gateway process on a free port.
class Gateway {
 public:
  Gateway(const std::string& nats_url, const std::string& config_json,
          std::vector<std::string> extra_args = {})
      : port_(FreePort()) {
    const std::string config = dir_.path() + "/config.json";
    std::ofstream(config) << config_json;
    std::vector<std::string> args = {"--listen",       "127.0.0.1:" + std::to_string(port_),
                                     "--nats-url",     nats_url,
                                     "--config",       config,
                                     "--heartbeat-ms", "200",
                                     "--threads",      "2",
                                     "--log-level",    "debug"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    process_ = std::make_unique<Process>(BinPath("wf-gateway"), args);
    if (!WaitForTcpPort(port_, milliseconds(15000))) {
      throw std::runtime_error("wf-gateway did not listen: " + process_->Log());
    }
  }
  int port() const { return port_; }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  Process& process() { return *process_; }
  bool WaitReady(milliseconds timeout = milliseconds(15000)) {
    return Eventually([&] { return HttpCall("GET", Url("/ready")).status == 200; }, timeout);
  }

 private:
  TempDir dir_;
  int port_;
  std::unique_ptr<Process> process_;
};

/// Records every subject published under wf.cancel.>.
class CancelListener {
 public:
  explicit CancelListener(const std::string& url) {
    NatsOptions options;
    options.url = url;
    conn_ = std::move(NatsConnection::Connect(options)).value();
    sub_ = std::move(conn_->Subscribe("wf.cancel.*", [this](const NatsMsgView& msg) {
             std::lock_guard lock(mu_);
             subjects_.insert(std::string(msg.subject()));
           })).value();
    (void)conn_->Flush(milliseconds(2000));
  }
  bool Seen(const std::string& request_id) {
    std::lock_guard lock(mu_);
    return subjects_.count("wf.cancel." + request_id) > 0;
  }

 private:
  std::unique_ptr<NatsConnection> conn_;
  std::mutex mu_;
  std::set<std::string> subjects_;
  NatsSubscription sub_;  // last: gone (its handler finished) before what the handler touches
};

constexpr const char* kConfig = R"({"agent": {"turn_timeout_ms": 30000}})";
/// The shared gateway of GatewayTest: SlowReaderGetsEverythingInOrder queues ~6 MB for a reader
/// that pauses and then reads it all, above the default gateway.max_buffered_bytes_per_connection.
constexpr const char* kFixtureConfig =
    R"({"agent": {"turn_timeout_ms": 30000},
        "gateway": {"max_buffered_bytes_per_connection": 33554432}})";

json Body(const HttpReply& r) { return json::parse(r.body, nullptr, false); }

HttpReply Post(const Gateway& gw, const std::string& body, std::vector<std::string> headers = {}) {
  headers.push_back("Content-Type: application/json");
  return HttpCall("POST", gw.Url("/api/v1/query"), body, headers);
}

std::string QueryBody(const std::string& message, const std::string& session = "s1") {
  return json{{"message", message}, {"session_id", session}}.dump();
}

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_ALL);
    nats_ = std::make_unique<NatsServer>();
    worker_ = std::make_unique<StandInWorker>(nats_->url());
    cancels_ = std::make_unique<CancelListener>(nats_->url());
    gateway_ = std::make_unique<Gateway>(nats_->url(), kFixtureConfig);
    ASSERT_TRUE(gateway_->WaitReady()) << gateway_->process().Log();
  }
  static void TearDownTestSuite() {
    gateway_.reset();
    cancels_.reset();
    worker_.reset();
    nats_.reset();
  }
  void TearDown() override {
    ASSERT_TRUE(gateway_->process().Running()) << gateway_->process().Log();
  }

  static std::unique_ptr<NatsServer> nats_;
  static std::unique_ptr<StandInWorker> worker_;
  static std::unique_ptr<CancelListener> cancels_;
  static std::unique_ptr<Gateway> gateway_;
};
std::unique_ptr<NatsServer> GatewayTest::nats_;
std::unique_ptr<StandInWorker> GatewayTest::worker_;
std::unique_ptr<CancelListener> GatewayTest::cancels_;
std::unique_ptr<Gateway> GatewayTest::gateway_;

/// What the worker received for `request_id` (a copy), if anything.
std::optional<Received> FindReceived(const std::vector<Received>& all,
                                     const std::string& request_id) {
  for (const auto& r : all) {
    if (r.request.request_id() == request_id) return r;
  }
  return std::nullopt;
}

TEST_F(GatewayTest, SuccessShapeHeadersAndWireRequest) {
  const std::string trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const auto before = UnixMillisNow();
  HttpReply r = Post(*gateway_,
                     R"({"message":"hello there","session_id":"sess-1","user_id":"u1",)"
                     R"("parameters":{"days":3,"who":"me"}})",
                     {"traceparent: " + trace});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  json body = Body(r);
  EXPECT_EQ(body["session_id"], "sess-1");
  EXPECT_EQ(body["message"], "echo: hello there");
  EXPECT_EQ(body["status"], "success");
  EXPECT_EQ(body["routed_to"], "lightweight");
  EXPECT_EQ(body["flow_id"], "echo");
  EXPECT_EQ(body["parameters"], (json{{"days", 3}, {"who", "me"}}));
  const std::string request_id = body["request_id"];
  EXPECT_EQ(r.headers["x-request-id"], request_id);
  EXPECT_EQ(body["run_id"], "run-" + request_id);

  auto seen = FindReceived(worker_->received(), request_id);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->request_id_header, request_id);
  EXPECT_EQ(seen->traceparent_header, trace);
  EXPECT_EQ(seen->request.traceparent(), trace);
  EXPECT_EQ(seen->request.message(), "hello there");
  EXPECT_EQ(seen->request.user_id(), "u1");
  EXPECT_FALSE(seen->request.stream());
  // Events are asked on `reply_to`; the reply subject (another inbox) is there for NATS's
  // "no responders" status. Both end with the request id.
  EXPECT_NE(seen->reply.find("."), std::string::npos);
  EXPECT_EQ(seen->reply.substr(seen->reply.rfind('.') + 1), request_id);
  const std::string& reply_to = seen->request.reply_to();
  EXPECT_NE(reply_to.find("."), std::string::npos);
  EXPECT_EQ(reply_to.substr(reply_to.rfind('.') + 1), request_id);
  EXPECT_NE(reply_to.substr(0, reply_to.rfind('.')), seen->reply.substr(0, seen->reply.rfind('.')));
  // deadline = now + agent.turn_timeout (30 s in this config).
  EXPECT_GE(seen->request.deadline_unix_ms(), before + 30000);
  EXPECT_LE(seen->request.deadline_unix_ms(), UnixMillisNow() + 30000);
  // route deadline = now + gateway.flow_timeout_ms (10 s: no flow in this config is longer).
  EXPECT_GE(seen->request.route_deadline_unix_ms(), before + 10000);
  EXPECT_LE(seen->request.route_deadline_unix_ms(), UnixMillisNow() + 10000);
}

// A worker (or outside service) that answers on the NATS reply subject, ignoring `reply_to`, is
// still heard: the gateway's inbox takes events too, not only "no responders".
TEST_F(GatewayTest, EventsOnTheReplySubjectStillArrive) {
  HttpReply r = Post(*gateway_, QueryBody("reply-subject:hello"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["message"], "echo: reply-subject:hello");
  SseStream stream(gateway_->port(), QueryBody("reply-subject:streamed"));
  ASSERT_TRUE(stream.WaitComplete());
  EXPECT_TRUE(HasEvent(stream.Events(), "done", "echo: reply-subject:streamed"));
}

TEST_F(GatewayTest, InvalidTraceparentIsReplaced) {
  HttpReply r = Post(*gateway_, QueryBody("trace me"), {"traceparent: garbage"});
  ASSERT_EQ(r.status, 200);
  auto seen = FindReceived(worker_->received(), Body(r)["request_id"]);
  ASSERT_TRUE(seen.has_value());
  EXPECT_NE(seen->traceparent_header, "garbage");
  EXPECT_EQ(seen->traceparent_header.size(), 55u);
  EXPECT_EQ(seen->traceparent_header.substr(0, 3), "00-");
  // Different requests get different ids.
  HttpReply r2 = Post(*gateway_, QueryBody("trace me"));
  EXPECT_NE(Body(r2)["request_id"], Body(r)["request_id"]);
}

TEST_F(GatewayTest, BadInputsGetTheRightStatusAndJson) {
  struct Case {
    std::string body;
    int status;
    std::string code;
    std::string names;  // part of the message
  };
  const std::vector<Case> cases = {
      {"{not json", 400, "invalid_json", "JSON"},
      {"[1,2]", 400, "bad_request", "object"},
      {R"({"session_id":"s"})", 400, "bad_request", "message"},
      {R"({"message":"","session_id":"s"})", 400, "bad_request", "message"},
      {json{{"message", std::string(8001, 'x')}, {"session_id", "s"}}.dump(), 400, "bad_request",
       "message"},
      {R"({"message":"hi","session_id":"bad id!"})", 400, "bad_request", "session_id"},
      {R"({"message":"hi"})", 400, "bad_request", "session_id"},
      {R"({"message":"hi","session_id":"s","parameters":[1]})", 400, "bad_request", "parameters"},
      {R"({"message":"hi","session_id":"s","user_id":7})", 400, "bad_request", "user_id"},
      {R"({"message":"hi","session_id":"s","extra":true})", 400, "bad_request", "extra"},
      {json{{"message", std::string(1100000, 'x')}, {"session_id", "s"}}.dump(), 413, "too_large",
       "bytes"},
  };
  for (const auto& c : cases) {
    for (const char* path : {"/api/v1/query", "/api/v1/query/stream"}) {
      HttpReply r = HttpCall("POST", gateway_->Url(path), c.body,
                             {"Content-Type: application/json", "Expect:"});
      EXPECT_EQ(r.status, c.status) << path << " " << c.body.substr(0, 80) << " -> " << r.body;
      json body = Body(r);
      ASSERT_TRUE(body.is_object()) << r.body;
      EXPECT_EQ(body["error"]["code"], c.code) << r.body;
      EXPECT_NE(body["error"]["message"].get<std::string>().find(c.names), std::string::npos)
          << r.body;
      EXPECT_EQ(r.headers["content-type"], "application/json");
    }
  }
}

// A query body must be declared JSON (or not declared): a browser page of another origin can
// post text/plain or a form without a CORS preflight, never application/json.
TEST_F(GatewayTest, QueryBodiesDeclaredAsSomethingElseAre415) {
  const std::string body = QueryBody("hello");
  for (const char* path : {"/api/v1/query", "/api/v1/query/stream"}) {
    for (const char* type :
         {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
      HttpReply r = HttpCall("POST", gateway_->Url(path), body,
                             {std::string("Content-Type: ") + type, "Expect:"});
      EXPECT_EQ(r.status, 415) << path << " " << type << " " << r.body;
      EXPECT_EQ(Body(r)["error"]["code"], "unsupported_media_type") << r.body;
      EXPECT_FALSE(r.headers["x-request-id"].empty());
    }
  }
  EXPECT_EQ(HttpCall("POST", gateway_->Url("/api/v1/query"), body,
                     {"Content-Type: application/json; charset=utf-8"})
                .status,
            200);
  // No Content-Type at all: taken as JSON (curl sends one unless told not to: "Content-Type:").
  EXPECT_EQ(HttpCall("POST", gateway_->Url("/api/v1/query"), body, {"Content-Type:"}).status, 200);
}

TEST_F(GatewayTest, UnknownPathsAndMethodsAreJson) {
  HttpReply r = HttpCall("GET", gateway_->Url("/nope"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Body(r)["error"]["code"], "not_found");
  r = HttpCall("GET", gateway_->Url("/api/v1/query"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(Body(r)["error"]["code"], "method_not_allowed");
  EXPECT_EQ(r.headers["allow"], "POST");
  r = HttpCall("PUT", gateway_->Url("/api/v1/session/known"), "{}");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers["allow"], "GET, HEAD, DELETE");
  r = HttpCall("POST", gateway_->Url("/health"), "{}");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers["allow"], "GET, HEAD");
}

TEST_F(GatewayTest, OversizedUploadsGetJson413) {
  // Declared too large (curl sends Expect: 100-continue): refused before the body is sent.
  HttpReply r = HttpCall("POST", gateway_->Url("/api/v1/query"), std::string(3 << 20, 'x'),
                         {"Content-Type: application/json"});
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Body(r)["error"]["code"], "too_large");
  EXPECT_EQ(r.headers["connection"], "close");

  // Chunked, no length: Pistache's buffer limit trips; still one JSON 413, then the connection
  // is closed by the client (the gateway reads and drops the rest).
  RawConnection conn(gateway_->port());
  conn.Send(
      "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n");
  const std::string chunk(64 * 1024, 'y');
  char size[16];
  std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
  for (int i = 0; i < 40; ++i) {
    if (!conn.Send(size + chunk + "\r\n")) break;  // the server may stop reading; that is fine
  }
  ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; }));
  auto parsed = ParseResponse(conn.Data());
  EXPECT_EQ(parsed.status, 413);
  EXPECT_EQ(json::parse(parsed.body)["error"]["code"], "too_large");
  EXPECT_EQ(parsed.headers["connection"], "close");
  // Nothing else (no garbage answers to the rest of the upload) comes after it.
  conn.Send("0\r\n\r\n");
  EXPECT_EQ(conn.Data().size(), parsed.consumed);
}

TEST_F(GatewayTest, MalformedHttpGetsJson400AndTheServerSurvives) {
  RawConnection conn(gateway_->port());
  conn.Send("BREW /pot HTCPCP/1.0\r\n\r\n");
  ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; }));
  auto parsed = ParseResponse(conn.Data());
  EXPECT_EQ(parsed.status, 400);
  EXPECT_EQ(json::parse(parsed.body)["error"]["code"], "bad_request");
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
}

TEST_F(GatewayTest, ErrorEventsMapToStatuses) {
  const std::pair<const char*, int> cases[] = {{"upstream_timeout", 504}, {"no_agent_worker", 503},
                                               {"session_busy", 409},     {"flow_not_found", 404},
                                               {"upstream_error", 502},   {"rate_limited", 429}};
  for (const auto& [code, status] : cases) {
    HttpReply r = Post(*gateway_, QueryBody(std::string("error:") + code));
    EXPECT_EQ(r.status, status) << code << " " << r.body;
    EXPECT_EQ(Body(r)["error"]["code"], code);
    EXPECT_EQ(Body(r)["error"]["message"], "scripted failure");
    EXPECT_FALSE(r.headers["x-request-id"].empty());
  }
  // On a stream the same error is an `error` event.
  SseStream stream(gateway_->port(), QueryBody("error:upstream_timeout"));
  ASSERT_TRUE(stream.WaitComplete());
  auto events = stream.Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].name, "error");
  EXPECT_EQ(json::parse(events[0].data)["error"]["code"], "upstream_timeout");
}

TEST_F(GatewayTest, StreamDeliversEventsInOrder) {
  SseStream stream(gateway_->port(), QueryBody("stream-order"));
  ASSERT_TRUE(stream.WaitComplete()) << stream.connection().Data();
  auto response = stream.Response();
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.headers["content-type"], "text/event-stream; charset=utf-8");
  EXPECT_EQ(response.headers["transfer-encoding"], "chunked");
  const std::string request_id = response.headers["x-request-id"];
  ASSERT_FALSE(request_id.empty());

  std::vector<SseEvent> events;
  for (const auto& e : stream.Events()) {
    if (!e.name.empty()) events.push_back(e);  // heartbeats may interleave
  }
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].name, "token");
  EXPECT_EQ(json::parse(events[0].data), (json{{"token", "Hel"}}));
  EXPECT_EQ(events[1].name, "tool_call");
  EXPECT_EQ(json::parse(events[1].data), (json{{"id", "call_1"},
                                               {"name", "weather"},
                                               {"arguments", R"({"city":"Paris"})"},
                                               {"kind", "tool"}}));
  EXPECT_EQ(events[2].name, "tool_result");
  EXPECT_EQ(json::parse(events[2].data),
            (json{{"call_id", "call_1"}, {"name", "weather"}, {"ok", true}, {"content", "sunny"}}));
  EXPECT_EQ(events[3].name, "token");
  EXPECT_EQ(events[4].name, "done");
  json done = json::parse(events[4].data);
  EXPECT_EQ(done["request_id"], request_id);
  EXPECT_EQ(done["run_id"], "run-" + request_id);
  EXPECT_EQ(done["routed_to"], "heavy");
  EXPECT_EQ(done["message"], "Hello");
  EXPECT_EQ(done["usage"]["total_tokens"], 18);
  EXPECT_TRUE(FindReceived(worker_->received(), request_id)->request.stream());

  // Flows answer on the stream too, with one `done`.
  SseStream flow(gateway_->port(), QueryBody("a flow question"));
  ASSERT_TRUE(flow.WaitComplete());
  auto flow_events = flow.Events();
  ASSERT_FALSE(flow_events.empty());
  EXPECT_EQ(flow_events.back().name, "done");
  EXPECT_EQ(json::parse(flow_events.back().data)["routed_to"], "lightweight");
}

TEST_F(GatewayTest, FirstTokenArrivesBeforeTheLastIsSent) {
  SseStream stream(gateway_->port(), QueryBody("gate:first-token"));
  // The worker sent "first" and now waits for this test: the token must already be here.
  ASSERT_TRUE(stream.WaitEvents([](const auto& ev) { return HasEvent(ev, "token", "first"); }))
      << stream.connection().Data();
  EXPECT_FALSE(HasEvent(stream.Events(), "token", "second"));
  EXPECT_FALSE(stream.Complete());
  worker_->gates.Open("first-token");
  ASSERT_TRUE(stream.WaitComplete());
  auto events = stream.Events();
  EXPECT_TRUE(HasEvent(events, "token", "second"));
  EXPECT_EQ(events.back().name, "done");
}

/// Complete HTTP responses at the start of `data` (chunked or Content-Length).
std::vector<ParsedResponse> Responses(std::string data) {
  std::vector<ParsedResponse> out;
  while (true) {
    ParsedResponse r = ParseResponse(data);
    if (r.consumed == 0) break;
    out.push_back(r);
    data.erase(0, r.consumed);
  }
  return out;
}

// Several requests in one write: those answered at once are served in order on the same
// connection; one answered later (over NATS) ends the connection after its answer (`Connection:
// close`, then end-of-stream), so the client retries the rest instead of waiting forever.
TEST_F(GatewayTest, PipelinedRequestsAreServedInOrderOrEndTheConnection) {
  {
    RawConnection conn(gateway_->port());
    ASSERT_TRUE(conn.Send(RequestText("GET", "/health") + RequestText("GET", "/nope") +
                          RequestText("GET", "/ready")));
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return Responses(d).size() == 3; }))
        << conn.Data();
    auto responses = Responses(conn.Data());
    EXPECT_EQ(responses[0].status, 200);
    EXPECT_EQ(responses[1].status, 404);
    EXPECT_EQ(responses[2].status, 200);
    for (auto& r : responses) EXPECT_EQ(r.headers["connection"], "keep-alive");
    // The connection still serves the next request, also after empty lines (RFC 9112 2.2), in
    // the same write or alone.
    ASSERT_TRUE(conn.Send("\r\n" + RequestText("GET", "/health")));
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return Responses(d).size() == 4; }));
    ASSERT_TRUE(conn.Send("\r\n"));
    ASSERT_TRUE(conn.Send(RequestText("GET", "/health")));
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return Responses(d).size() == 5; }))
        << conn.Data();
    EXPECT_EQ(Responses(conn.Data())[4].status, 200);
  }
  {
    // The query's answer is held back by the worker until the gate opens, so the gateway reads
    // the pipelined GET while the query is pending.
    RawConnection conn(gateway_->port());
    ASSERT_TRUE(conn.Send(RequestText("POST", "/api/v1/query", QueryBody("gate:pipelined-post")) +
                          RequestText("GET", "/health")));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    worker_->gates.Open("pipelined-post");
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return Responses(d).size() >= 1; }))
        << conn.Data();
    auto responses = Responses(conn.Data());
    EXPECT_EQ(responses[0].status, 200);
    EXPECT_EQ(json::parse(responses[0].body)["message"], "first second");
    EXPECT_EQ(responses[0].headers["connection"], "close");
    EXPECT_TRUE(conn.WaitClosed()) << "the connection was left open: " << conn.Data();
    EXPECT_EQ(Responses(conn.Data()).size(), 1u);
  }
}

// A request line or header Pistache cannot parse, or a bad Content-Length: an immediate JSON 400
// in our own words (no parser internals), then the connection ends.
TEST_F(GatewayTest, MalformedHeadsGetAnImmediateJson400AndTheConnectionEnds) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"BLAH\r\n\r\n", "request line"},
      {"GET /health\r\n\r\n", "request line"},
      {"GET /health HTTP/1.1\nHost: x\n\n", "request line"},
      {"GET /health HTTP/1.1\r\nHost localhost\r\n\r\n", "header"},
      {"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", "Content-Length"},
      {"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", "Content-Length"},
      {"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 2x\r\n\r\n{}", "Content-Length"},
  };
  for (const auto& [request, names] : cases) {
    RawConnection conn(gateway_->port());
    const auto sent = std::chrono::steady_clock::now();
    ASSERT_TRUE(conn.Send(request));
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; },
                             milliseconds(5000)))
        << "no answer to " << request;
    EXPECT_LT(std::chrono::steady_clock::now() - sent, seconds(5));
    auto parsed = ParseResponse(conn.Data());
    EXPECT_EQ(parsed.status, 400) << request;
    json body = json::parse(parsed.body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << parsed.body;
    EXPECT_EQ(body["error"]["code"], "bad_request");
    const std::string message = body["error"]["message"];
    EXPECT_NE(message.find(names), std::string::npos) << message;
    EXPECT_EQ(message.find("basic_string"), std::string::npos) << message;
    EXPECT_FALSE(parsed.headers["x-request-id"].empty());
    EXPECT_EQ(body["error"]["request_id"], parsed.headers["x-request-id"]);
    EXPECT_EQ(parsed.headers["connection"], "close");
    EXPECT_TRUE(conn.WaitClosed(milliseconds(5000))) << request;
  }
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
}

// Request smuggling: heads that Pistache reads differently from a proxy in front of the gateway
// (two Content-Length headers, whitespace before a colon, obs-fold) get a JSON 400 and the
// connection ends, so the bytes after them (here a hidden DELETE) are never taken as a request.
// Each is sent in one write and, to take the path where the body is still to come, with its
// head first.
TEST_F(GatewayTest, SmuggledRequestsAreRefusedAndNeverRun) {
  const std::string hidden = "DELETE /api/v1/session/ch-1 HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string body = "{}" + hidden;
  const std::string length = std::to_string(body.size());
  const std::string post =
      "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
  struct Case {
    std::string head;
    std::string rest;
    std::string names;  // part of the message
  };
  const std::vector<Case> cases = {
      {post + "Content-Length: 2\r\nContent-Length: " + length + "\r\n\r\n", body,
       "more than one Content-Length"},
      {post + "Content-Length: " + length + "\r\nContent-Length: 2\r\n\r\n", body,
       "more than one Content-Length"},
      {post + "Content-Length: 2\r\ncontent-length: 2\r\n\r\n", body,
       "more than one Content-Length"},
      {post + "Content-Length : " + length + "\r\n\r\n", body, "before its colon"},
      {"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", hidden, "before its colon"},
      {post + "X-A: a\r\n b\r\nContent-Length: " + length + "\r\n\r\n", body, "folded"},
      {post + "X-A: a\r\n\tb\r\nContent-Length: 2\r\n\r\n", body, "folded"},
  };
  for (const bool split : {false, true}) {
    for (const auto& c : cases) {
      RawConnection conn(gateway_->port());
      if (split) {
        ASSERT_TRUE(conn.Send(c.head));
        std::this_thread::sleep_for(milliseconds(50));  // the head alone is read first
        conn.Send(c.rest);  // may fail: the gateway may have answered and half-closed already
      } else {
        ASSERT_TRUE(conn.Send(c.head + c.rest));
      }
      ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; },
                               milliseconds(5000)))
          << "no answer to " << c.head;
      auto parsed = ParseResponse(conn.Data());
      EXPECT_EQ(parsed.status, 400) << c.head << " -> " << parsed.body;
      json error = json::parse(parsed.body, nullptr, false);
      ASSERT_TRUE(error.is_object()) << parsed.body;
      EXPECT_EQ(error["error"]["code"], "bad_request");
      EXPECT_NE(error["error"]["message"].get<std::string>().find(c.names), std::string::npos)
          << error;
      EXPECT_EQ(parsed.headers["connection"], "close") << c.head;
      EXPECT_TRUE(conn.WaitClosed(milliseconds(5000))) << c.head;
      // Nothing else was answered: the hidden request never ran.
      EXPECT_EQ(conn.Data().size(), parsed.consumed) << c.head << " -> " << conn.Data();
    }
  }
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
}

// `Expect: 100-continue` is answered as soon as the head is in and the body is not: the client
// does not wait (curl waits 1 s for it) and a raw client that sends only the head gets it.
TEST_F(GatewayTest, ExpectContinueIsAnsweredBeforeTheBody) {
  for (const char* expect : {"Expect: 100-continue", "expect: 100-Continue"}) {
    RawConnection conn(gateway_->port());
    const std::string body = QueryBody("continue please");
    ASSERT_TRUE(conn.Send(
        "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\n" +
        std::string(expect) + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n"));
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return !d.empty(); }, milliseconds(3000)))
        << "no 100 Continue for " << expect;
    EXPECT_EQ(conn.Data(), "HTTP/1.1 100 Continue\r\n\r\n");
    ASSERT_TRUE(conn.Send(body));
    const std::size_t interim = std::string_view("HTTP/1.1 100 Continue\r\n\r\n").size();
    ASSERT_TRUE(conn.WaitFor([&](const std::string& d) {
      return ParseResponse(d.substr(interim)).consumed > 0;
    })) << conn.Data();
    auto parsed = ParseResponse(conn.Data().substr(interim));
    EXPECT_EQ(parsed.status, 200) << parsed.body;
    EXPECT_EQ(json::parse(parsed.body)["message"], "echo: continue please");
    EXPECT_EQ(parsed.headers["connection"], "keep-alive");
  }
  // A request whose body came with its head gets no interim answer.
  {
    RawConnection conn(gateway_->port());
    ASSERT_TRUE(conn.Send(
        RequestText("POST", "/api/v1/query", QueryBody("all at once"), {"Expect: 100-continue"})));
    ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; }));
    EXPECT_EQ(ParseResponse(conn.Data()).status, 200) << conn.Data();
  }
  // curl sends the head, waits for the 100 (1 s at most), then the body.
  const auto sent = std::chrono::steady_clock::now();
  HttpReply r = Post(*gateway_, QueryBody("check order 1234", "e"), {"Expect: 100-continue"});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LT(std::chrono::steady_clock::now() - sent, milliseconds(900));
}

// A body under max_body_bytes whose QueryRequest encoding exceeds the NATS max payload (a Struct
// of many small numbers grows ~4x): 413 too_large in plain words, not a 503 with nats.c's text.
TEST_F(GatewayTest, QueryTooLargeOnceEncodedIs413) {
  std::string zeros;
  for (int i = 0; i < 300000; ++i) zeros.append(i == 0 ? "0" : ",0");
  const std::string body =
      R"({"message":"check order 1234","session_id":"p","parameters":{"a":[)" + zeros + "]}}";
  ASSERT_LT(body.size(), std::size_t{1} << 20);  // under the default max_body_bytes
  for (const char* path : {"/api/v1/query", "/api/v1/query/stream"}) {
    HttpReply r =
        HttpCall("POST", gateway_->Url(path), body, {"Content-Type: application/json", "Expect:"});
    EXPECT_EQ(r.status, 413) << path << " -> " << r.body;
    json error = Body(r);
    ASSERT_TRUE(error.is_object()) << r.body;
    EXPECT_EQ(error["error"]["code"], "too_large");
    const std::string message = error["error"]["message"];
    EXPECT_NE(message.find("bytes once encoded; the limit is"), std::string::npos) << message;
    EXPECT_EQ(message.find(".c:"), std::string::npos) << message;
    EXPECT_EQ(message.find("NATS"), std::string::npos) << message;
  }
  // The connection's next query is served as usual.
  EXPECT_EQ(Post(*gateway_, QueryBody("after a large one")).status, 200);
}

// Errors the gateway makes itself name the request like the ones that come from a worker:
// `X-Request-Id` and `error.request_id`, the same id.
TEST_F(GatewayTest, EveryAnswerCarriesItsRequestId) {
  auto expect_id = [](const HttpReply& r, int status) {
    EXPECT_EQ(r.status, status) << r.body;
    const std::string id = r.headers.count("x-request-id") ? r.headers.at("x-request-id") : "";
    EXPECT_FALSE(id.empty()) << r.status << " " << r.body;
    json body = json::parse(r.body, nullptr, false);
    if (status >= 400) {
      EXPECT_EQ(body["error"]["request_id"], id) << r.body;
    } else if (body.contains("request_id")) {
      EXPECT_EQ(body["request_id"], id) << r.body;
    }
  };
  expect_id(Post(*gateway_, "{not json"), 400);
  expect_id(Post(*gateway_, R"({"message":"hi","session_id":"bad id!"})"), 400);
  expect_id(Post(*gateway_, QueryBody("error:session_busy")), 409);
  expect_id(Post(*gateway_, QueryBody("hello")), 200);
  expect_id(HttpCall("POST", gateway_->Url("/api/v1/query"),
                     json{{"message", std::string(1100000, 'x')}, {"session_id", "s"}}.dump(),
                     {"Content-Type: application/json", "Expect:"}),
            413);
  expect_id(HttpCall("GET", gateway_->Url("/nope")), 404);
  expect_id(HttpCall("GET", gateway_->Url("/api/v1/query")), 405);
  expect_id(HttpCall("GET", gateway_->Url("/api/v1/session/bad%20id")), 400);
  expect_id(HttpCall("GET", gateway_->Url("/health")), 200);
  // A stream's error event names it too.
  SseStream stream(gateway_->port(), QueryBody("error:upstream_timeout"));
  ASSERT_TRUE(stream.WaitComplete());
  const std::string id = stream.Response().headers["x-request-id"];
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(HasEvent(stream.Events(), "error", "upstream_timeout"));
  for (const auto& e : stream.Events()) {
    if (e.name == "error") {
      EXPECT_EQ(json::parse(e.data)["error"]["request_id"], id);
    }
  }
}

// `parameters` travel as google.protobuf.Struct (doubles): integers beyond 2^53 would be changed
// silently, so they are refused, naming the parameter, and nothing is sent.
TEST_F(GatewayTest, IntegersBeyondTwoToThe53AreRefused) {
  const auto before = worker_->received().size();
  HttpReply r = Post(*gateway_, R"({"message":"big numbers","session_id":"s",)"
                                R"("parameters":{"order_id":12345678901234567}})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Body(r)["error"]["code"], "bad_request");
  const std::string message = Body(r)["error"]["message"];
  EXPECT_EQ(message.rfind("parameters.order_id: ", 0), 0u) << message;
  EXPECT_NE(message.find("send it as a string"), std::string::npos) << message;
  EXPECT_EQ(worker_->received().size(), before);
  // As a string it passes unchanged.
  r = Post(*gateway_, R"({"message":"big numbers","session_id":"s",)"
                      R"("parameters":{"order_id":"12345678901234567"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["parameters"]["order_id"], "12345678901234567");
}

TEST_F(GatewayTest, StreamsKeepTheConnectionForTheNextRequest) {
  // A chat client sends its next message on the connection its last stream came on.
  SseStream stream(gateway_->port(), QueryBody("stream-order"));
  ASSERT_TRUE(stream.WaitComplete()) << stream.connection().Data();
  EXPECT_EQ(stream.Response().headers["connection"], "keep-alive");
  RawConnection& conn = stream.connection();
  ASSERT_TRUE(conn.Send(RequestText("POST", "/api/v1/query/stream", QueryBody("a flow question"))));
  ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return Responses(d).size() == 2; }))
      << conn.Data();
  ASSERT_TRUE(conn.Send(RequestText("POST", "/api/v1/query", QueryBody("keep me alive"))));
  ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return Responses(d).size() == 3; }))
      << conn.Data();
  auto responses = Responses(conn.Data());
  bool complete = false;
  auto flow_events = ParseSse(Dechunk(responses[1].body, &complete));
  EXPECT_TRUE(complete);
  ASSERT_FALSE(flow_events.empty());
  EXPECT_EQ(json::parse(flow_events.back().data)["routed_to"], "lightweight");
  EXPECT_EQ(responses[2].status, 200);
  EXPECT_EQ(json::parse(responses[2].body)["message"], "echo: keep me alive");

  // HTTP/1.0 or `Connection: close`: the stream says close and the client closes.
  SseStream closing(gateway_->port(), QueryBody("stream-order"), {"Connection: close"});
  ASSERT_TRUE(closing.WaitComplete());
  EXPECT_EQ(closing.Response().headers["connection"], "close");
}

TEST_F(GatewayTest, RequestPipelinedIntoAStreamEndsTheConnectionAfterIt) {
  // The head already promised keep-alive; a request that arrives while the stream runs is
  // dropped (its answer could not come in order), so the end of the stream must end the
  // connection, not leave the client waiting for that answer. Whether the gateway reads the
  // request before or after the stream's end is a race (after: it is simply answered), so the
  // client must never be left waiting either way, and the half-close must be seen at least once.
  bool half_closed_seen = false;
  for (int attempt = 0; attempt < 5 && !half_closed_seen; ++attempt) {
    const std::string gate = "pipelined-" + std::to_string(attempt);
    SseStream stream(gateway_->port(), QueryBody("gate:" + gate));
    ASSERT_TRUE(stream.WaitEvents([](const auto& ev) { return HasEvent(ev, "token", "first"); }));
    EXPECT_EQ(stream.Response().headers["connection"], "keep-alive");
    ASSERT_TRUE(stream.connection().Send(RequestText("GET", "/health")));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the gateway read it
    worker_->gates.Open(gate);
    ASSERT_TRUE(stream.WaitComplete()) << stream.connection().Data();
    RawConnection& conn = stream.connection();
    ASSERT_TRUE(conn.WaitForOrClosed([](const std::string& d) { return Responses(d).size() == 2; }))
        << "the client was left waiting: " << conn.Data();
    EXPECT_EQ(stream.Events().back().name, "done");
    if (Responses(conn.Data()).size() == 1) {
      half_closed_seen = true;
      EXPECT_TRUE(conn.WaitClosed());
    }
  }
  EXPECT_TRUE(half_closed_seen) << "the pipelined request was never read during the stream";
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
}

TEST_F(GatewayTest, HeartbeatWhenSilent) {
  SseStream stream(gateway_->port(), QueryBody("gate:heartbeat"));
  ASSERT_TRUE(stream.WaitEvents([](const auto& ev) { return HasEvent(ev, "token", "first"); }));
  // The worker is silent now; with --heartbeat-ms 200 a comment arrives.
  ASSERT_TRUE(stream.WaitEvents([](const auto& ev) {
    // a heartbeat after the first token
    bool token = false;
    for (const auto& e : ev) {
      if (e.name == "token") token = true;
      if (token && e.name.empty() && e.comment == " heartbeat") return true;
    }
    return false;
  })) << stream.connection().Data();
  worker_->gates.Open("heartbeat");
  ASSERT_TRUE(stream.WaitComplete());
  EXPECT_EQ(stream.Events().back().name, "done");
}

TEST_F(GatewayTest, ClientDisconnectCancelsTheRun) {
  SseStream stream(gateway_->port(), QueryBody("gate:disconnect"));
  ASSERT_TRUE(stream.WaitEvents([](const auto& ev) { return HasEvent(ev, "token", "first"); }));
  const std::string request_id = stream.Response().headers["x-request-id"];
  ASSERT_FALSE(request_id.empty());
  EXPECT_FALSE(cancels_->Seen(request_id));
  stream.connection().Close();
  EXPECT_TRUE(Eventually([&] { return cancels_->Seen(request_id); }))
      << "no cancel for " << request_id;
  // The worker carries on regardless; its late events are dropped without harm.
  worker_->gates.Open("disconnect");
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
}

TEST_F(GatewayTest, SessionGetAndDelete) {
  HttpReply r = HttpCall("GET", gateway_->Url("/api/v1/session/known"));
  ASSERT_EQ(r.status, 200) << r.body;
  json body = Body(r);
  EXPECT_EQ(body["session_id"], "known");
  EXPECT_EQ(body["turn_count"], 1);
  EXPECT_EQ(body["created_unix_ms"], 1000);
  EXPECT_EQ(body["updated_unix_ms"], 2000);
  ASSERT_EQ(body["messages"].size(), 2u);
  EXPECT_EQ(
      body["messages"][0],
      (json{
          {"role", "user"}, {"content", "hello"}, {"created_unix_ms", 1000}, {"run_id", "run-a"}}));

  r = HttpCall("GET", gateway_->Url("/api/v1/session/unknown-1"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Body(r)["error"]["code"], "session_not_found");
  r = HttpCall("GET", gateway_->Url("/api/v1/session/busy"));
  EXPECT_EQ(r.status, 409);

  r = HttpCall("DELETE", gateway_->Url("/api/v1/session/known"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Body(r), (json{{"session_id", "known"}, {"deleted", true}}));
  r = HttpCall("DELETE", gateway_->Url("/api/v1/session/unknown-2"));
  EXPECT_EQ(r.status, 404);

  for (const char* bad : {"/api/v1/session/bad%20id", "/api/v1/session/a*b"}) {
    r = HttpCall("GET", gateway_->Url(bad));
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(Body(r)["error"]["code"], "bad_request");
  }
  r = HttpCall("GET", gateway_->Url("/api/v1/session/" + std::string(129, 'a')));
  EXPECT_EQ(r.status, 400);
}

// Percent-encoded session ids are decoded before they are checked: "user%3A42" is "user:42".
TEST_F(GatewayTest, PercentEncodedSessionIdsAreDecoded) {
  HttpReply r = HttpCall("GET", gateway_->Url("/api/v1/session/%6Bnown"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["session_id"], "known");
  r = HttpCall("DELETE", gateway_->Url("/api/v1/session/kn%6fwn"));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r), (json{{"session_id", "known"}, {"deleted", true}}));
  for (const char* method : {"GET", "DELETE"}) {
    r = HttpCall(method, gateway_->Url("/api/v1/session/user%3A42"));
    EXPECT_EQ(r.status, 404) << method << " " << r.body;
    EXPECT_EQ(Body(r)["error"]["code"], "session_not_found");
    EXPECT_EQ(Body(r)["error"]["message"], "no session user:42");  // the stand-in's words
  }
  // Malformed escapes, an encoded '/' or NUL, and what decodes to a bad id: 400.
  for (const char* bad : {"/api/v1/session/a%ZZ", "/api/v1/session/a%4", "/api/v1/session/a%",
                          "/api/v1/session/a%2Fb", "/api/v1/session/a%00b",
                          "/api/v1/session/bad%20id", "/api/v1/session/%2A"}) {
    for (const char* method : {"GET", "DELETE"}) {
      r = HttpCall(method, gateway_->Url(bad));
      EXPECT_EQ(r.status, 400) << method << " " << bad << " " << r.body;
      EXPECT_EQ(Body(r)["error"]["code"], "bad_request") << r.body;
    }
  }
}

// HEAD works on every GET route with GET's status and headers (Content-Length of the body it
// would have sent) and no body; so do its errors. Pipelined HEAD and GET stay in step.
TEST_F(GatewayTest, HeadAnswersLikeGetWithoutABody) {
  RawConnection conn(gateway_->port());
  const std::vector<std::pair<std::string, std::string>> requests = {
      {"HEAD", "/health"}, {"GET", "/health"},
      {"HEAD", "/ready"},  {"HEAD", "/metrics"},
      {"HEAD", "/nope"},   {"HEAD", "/api/v1/query"},
      {"GET", "/ready"},   {"HEAD", "/api/v1/session/bad*id"},
      {"GET", "/health"}};
  std::string all;
  for (const auto& [method, path] : requests) all += RequestText(method, path);
  ASSERT_TRUE(conn.Send(all));
  auto parse_all = [&](std::string data) {
    std::vector<ParsedResponse> out;
    for (const auto& request : requests) {
      ParsedResponse r = ParseResponse(data, request.first == "HEAD");
      if (r.consumed == 0) break;
      out.push_back(r);
      data.erase(0, r.consumed);
    }
    return out;
  };
  ASSERT_TRUE(conn.WaitFor([&](const std::string& d) { return parse_all(d).size() == 9; }))
      << conn.Data();
  auto responses = parse_all(conn.Data());
  const std::vector<int> statuses = {200, 200, 200, 200, 404, 405, 200, 400, 200};
  std::size_t consumed = 0;
  for (std::size_t i = 0; i < responses.size(); ++i) {
    auto r = responses[i];
    consumed += r.consumed;
    EXPECT_EQ(r.status, statuses[i]) << requests[i].first << " " << requests[i].second;
    EXPECT_EQ(r.headers["connection"], "keep-alive");
    EXPECT_FALSE(r.headers["x-request-id"].empty());
    if (requests[i].first == "HEAD") {
      EXPECT_GT(std::stoul(r.headers["content-length"]), 0u) << requests[i].second;
    }
  }
  EXPECT_EQ(conn.Data().size(), consumed) << "bytes after the last answer: " << conn.Data();
  // HEAD /health: exactly GET's head but for the request id.
  EXPECT_EQ(responses[0].headers["content-length"], responses[1].headers["content-length"]);
  EXPECT_EQ(responses[0].headers["content-type"], responses[1].headers["content-type"]);
  EXPECT_EQ(responses[3].headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(responses[5].headers["allow"], "POST");

  // A session GET answered later over NATS: same status and length as GET, no body; the
  // connection then serves the next request.
  const HttpReply get = HttpCall("GET", gateway_->Url("/api/v1/session/known"));
  ASSERT_EQ(get.status, 200);
  for (const char* path : {"/api/v1/session/known", "/api/v1/session/unknown-head"}) {
    RawConnection session(gateway_->port());
    ASSERT_TRUE(session.Send(RequestText("HEAD", path)));
    ASSERT_TRUE(
        session.WaitFor([](const std::string& d) { return ParseResponse(d, true).consumed > 0; }));
    auto head = ParseResponse(session.Data(), true);
    if (std::string(path) == "/api/v1/session/known") {
      EXPECT_EQ(head.status, 200);
      EXPECT_EQ(head.headers["content-length"], std::to_string(get.body.size()));
    } else {
      EXPECT_EQ(head.status, 404);
    }
    ASSERT_TRUE(session.Send(RequestText("GET", "/health")));
    ASSERT_TRUE(session.WaitFor([&](const std::string& d) {
      return d.size() > head.consumed && ParseResponse(d.substr(head.consumed)).consumed > 0;
    })) << session.Data();
    EXPECT_EQ(ParseResponse(session.Data().substr(head.consumed)).body, R"({"status":"ok"})");
  }
}

TEST_F(GatewayTest, KeepAliveReusesTheConnection) {
  CURL* curl = curl_easy_init();
  std::string sink;
  auto write = +[](char* p, size_t s, size_t n, void* out) {
    static_cast<std::string*>(out)->append(p, s * n);
    return s * n;
  };
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  const std::string body = QueryBody("keep me alive");
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  for (int i = 0; i < 4; ++i) {
    const bool post = i % 2 == 1;
    curl_easy_setopt(curl, CURLOPT_URL, gateway_->Url(post ? "/api/v1/query" : "/health").c_str());
    if (post) {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    } else {
      curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }
    ASSERT_EQ(curl_easy_perform(curl), CURLE_OK);
    long status = 0, connects = -1;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
    EXPECT_EQ(status, 200);
    if (i > 0) {
      EXPECT_EQ(connects, 0) << "request " << i << " opened a new connection";
    }
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);

  // HTTP/1.1 without a Connection header: keep-alive. HTTP/1.0 without: close.
  RawConnection conn(gateway_->port());
  conn.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; }));
  EXPECT_EQ(ParseResponse(conn.Data()).headers["connection"], "keep-alive");
  RawConnection old(gateway_->port());
  old.Send("GET /health HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(old.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; }));
  EXPECT_EQ(ParseResponse(old.Data()).headers["connection"], "close");
}

TEST_F(GatewayTest, TwoHundredParallelRequests) {
  constexpr int kN = 200;
  std::vector<HttpReply> replies(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      replies[i] = Post(*gateway_,
                        QueryBody("parallel " + std::to_string(i), "session-" + std::to_string(i)));
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(replies[i].status, 200) << i << " " << replies[i].body;
    json body = Body(replies[i]);
    EXPECT_EQ(body["message"], "echo: parallel " + std::to_string(i));
    EXPECT_EQ(body["session_id"], "session-" + std::to_string(i));
    ids.insert(body["request_id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kN));
}

// The proof for the threading design: many streams receive many events written from the NATS
// thread while other connections come and go (so descriptors are reused) and some streams are
// abandoned mid-flight. Nothing aborts, every finished stream is complete and in order, and no
// byte lands on the wrong connection.
TEST_F(GatewayTest, StressManyStreamsManyEventsWithChurn) {
  constexpr int kStreams = 24;
  constexpr int kTokens = 400;
  constexpr int kAbandoned = 8;
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> stop{false};
    std::atomic<int> churned{0};
    std::vector<std::thread> churn;
    std::atomic<int> churn_failures{0};
    for (int c = 0; c < 3; ++c) {
      churn.emplace_back([&] {
        while (!stop) {
          RawConnection conn(gateway_->port());
          conn.Send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
          if (!conn.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; })) {
            ++churn_failures;
          } else {
            auto parsed = ParseResponse(conn.Data());
            if (parsed.status != 200 || parsed.body != R"({"status":"ok"})" ||
                conn.Data().size() != parsed.consumed) {
              ++churn_failures;
            }
          }
          ++churned;
        }
      });
    }
    std::vector<std::unique_ptr<SseStream>> streams;
    for (int i = 0; i < kStreams + kAbandoned; ++i) {
      streams.push_back(std::make_unique<SseStream>(
          gateway_->port(), QueryBody("flood:" + std::to_string(kTokens), "stress")));
    }
    for (int i = kStreams; i < kStreams + kAbandoned; ++i) {
      streams[i]->WaitEvents([](const auto& ev) { return ev.size() >= 3; });
      streams[i]->connection().Close();
    }
    for (int i = 0; i < kStreams; ++i) {
      ASSERT_TRUE(streams[i]->WaitComplete(milliseconds(60000))) << "stream " << i;
      int next = 0;
      bool done = false;
      for (const auto& e : streams[i]->Events()) {
        if (e.name == "token") {
          ASSERT_EQ(json::parse(e.data)["token"], "t" + std::to_string(next)) << "stream " << i;
          ++next;
        } else if (e.name == "done") {
          done = true;
        } else {
          ASSERT_TRUE(e.name.empty()) << e.name;  // only heartbeats besides
        }
      }
      EXPECT_EQ(next, kTokens);
      EXPECT_TRUE(done);
    }
    stop = true;
    for (auto& t : churn) t.join();
    EXPECT_EQ(churn_failures.load(), 0);
    EXPECT_GT(churned.load(), 0);
    ASSERT_TRUE(gateway_->process().Running()) << gateway_->process().Log();
  }
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
  EXPECT_EQ(gateway_->process().Log().find("terminate"), std::string::npos);
}

/// The value of the sample `name` (with its labels, if any) from /metrics; -1 when absent.
long long MetricValue(const Gateway& gw, const std::string& name) {
  const std::string text = HttpCall("GET", gw.Url("/metrics")).body;
  const std::string key = "\n" + name + " ";
  auto pos = text.find(key);
  return pos == std::string::npos ? -1 : std::stoll(text.substr(pos + key.size()));
}

/// wf_gateway_events_received_total{matched="true"} from /metrics.
long long MatchedEvents(const Gateway& gw) {
  return MetricValue(gw, "wf_gateway_events_received_total{matched=\"true\"}");
}

// A client that stops reading: its socket fills up, the gateway's writes fall back from direct
// sends to Pistache's write queue, and when the client reads again every byte arrives once and
// in order.
TEST_F(GatewayTest, SlowReaderGetsEverythingInOrder) {
  // 10 MB: more than the kernel buffers (tcp_wmem max 4 MB) can absorb.
  constexpr int kTokens = 20000;
  constexpr std::size_t kSize = 500;
  const int floods_before = worker_->floods_done();
  const long long events_before = MatchedEvents(*gateway_);
  SseStream stream(gateway_->port(),
                   QueryBody("bigflood:" + std::to_string(kTokens) + ":" + std::to_string(kSize)),
                   {}, /*paused=*/true, /*rcvbuf=*/4096);
  ASSERT_TRUE(Eventually([&] { return worker_->floods_done() > floods_before; }, seconds(30)));
  // Every event reached the exchange (and was written or queued) while the client was not
  // reading.
  ASSERT_TRUE(Eventually([&] { return MatchedEvents(*gateway_) >= events_before + kTokens + 1; },
                         seconds(30)));
  EXPECT_FALSE(stream.Complete());
  stream.connection().Resume();
  ASSERT_TRUE(stream.WaitComplete(milliseconds(60000)));
  int next = 0;
  for (const auto& e : stream.Events()) {
    if (e.name != "token") continue;
    const std::string token = json::parse(e.data)["token"];
    ASSERT_EQ(token.substr(0, token.find(':')), "t" + std::to_string(next));
    ASSERT_EQ(token.size(), kSize);
    ++next;
  }
  EXPECT_EQ(next, kTokens);
  EXPECT_EQ(stream.Events().back().name, "done");
  // The queueing path really was taken (the gateway runs with --log-level debug).
  EXPECT_NE(gateway_->process().Log().find("backed up"), std::string::npos);
}

// A few hundred random bodies and raw byte sequences: every answer is JSON with a sane status,
// and the gateway keeps running.
TEST_F(GatewayTest, FuzzedRequestsNeverCrash) {
  std::mt19937 rng(7);
  const std::string alphabet = "{}[]\":,\\ abcms_-019.eEnulltrue\x01\xc3\xa9\xff";
  for (int i = 0; i < 300; ++i) {
    std::string body;
    if (i % 2 == 0) {
      std::uniform_int_distribution<int> len(0, 120);
      std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
      for (int n = len(rng); n > 0; --n) body.push_back(alphabet[pick(rng)]);
    } else {
      body = R"({"message":"fuzz","session_id":"f","parameters":{"a":[1,2,{"b":null}]}})";
      std::uniform_int_distribution<std::size_t> pos(0, body.size() - 1);
      std::uniform_int_distribution<int> byte(0, 255);
      for (int e = 0; e < 3; ++e) body[pos(rng)] = static_cast<char>(byte(rng));
    }
    HttpReply r = Post(*gateway_, body);
    ASSERT_TRUE(r.status == 200 || r.status == 400) << r.status << " " << body;
    ASSERT_TRUE(Body(r).is_object()) << r.body;
  }
  for (int i = 0; i < 100; ++i) {
    RawConnection conn(gateway_->port());
    std::uniform_int_distribution<int> len(1, 600);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string junk;
    if (i % 2) junk = "POST /api/v1/query HTTP/1.1\r\nContent-Length: 5\r\n";
    for (int n = len(rng); n > 0; --n) junk.push_back(static_cast<char>(byte(rng)));
    conn.Send(junk);
  }
  EXPECT_EQ(HttpCall("GET", gateway_->Url("/health")).status, 200);
}

TEST_F(GatewayTest, MetricsAndHealth) {
  HttpReply r = HttpCall("GET", gateway_->Url("/health"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Body(r), (json{{"status", "ok"}}));
  r = HttpCall("GET", gateway_->Url("/ready"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Body(r)["ready"], true);
  EXPECT_EQ(Body(r)["nats"], "connected");
  EXPECT_GE(Body(r)["workers"]["lightweight"], 1);
  EXPECT_EQ(Body(r)["workers"]["heavy"], 0);
  ASSERT_EQ(Post(*gateway_, QueryBody("for metrics")).status, 200);
  r = HttpCall("GET", gateway_->Url("/metrics"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  for (const char* part : {"wf_gateway_requests_total{route=\"query\",status=\"200\"}",
                           "wf_gateway_request_duration_seconds_bucket{route=\"query\"",
                           "wf_gateway_in_flight_requests", "wf_gateway_open_streams",
                           "wf_gateway_nats_connected 1", "wf_gateway_events_received_total"}) {
    EXPECT_NE(r.body.find(part), std::string::npos) << part;
  }
}

// --- Gateways of their own ----------------------------------------------------------------

TEST(GatewayAlone, NoWorkerMeans503AndNotReadyUntilOneStarts) {
  NatsServer nats;
  Gateway gw(nats.url(), kConfig);
  ASSERT_TRUE(Eventually([&] { return HttpCall("GET", gw.Url("/health")).status == 200; }));
  HttpReply ready = HttpCall("GET", gw.Url("/ready"));
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(Body(ready), (json{{"ready", false},
                               {"nats", "connected"},
                               {"workers", {{"lightweight", 0}, {"heavy", 0}}}}));
  // No waiting for the 30 s deadline: 503 right away (the call's own timeout is 5 s).
  HttpReply r = HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("anyone?"),
                         {"Content-Type: application/json"}, 5000);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Body(r)["error"]["code"], "no_worker");
  r = HttpCall("POST", gw.Url("/api/v1/query/stream"), QueryBody("anyone?"),
               {"Content-Type: application/json"}, 5000);
  EXPECT_EQ(r.status, 503);
  // Sessions: nobody serves them -> 503 no_agent_worker (NATS reports no responders).
  r = HttpCall("GET", gw.Url("/api/v1/session/known"), "", {}, 5000);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Body(r)["error"]["code"], "no_agent_worker");

  auto worker = std::make_unique<StandInWorker>(nats.url(), /*sessions=*/false);
  ASSERT_TRUE(gw.WaitReady());
  EXPECT_EQ(Body(HttpCall("GET", gw.Url("/ready")))["workers"]["lightweight"], 1);
  EXPECT_EQ(HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("now?"),
                     {"Content-Type: application/json"})
                .status,
            200);
  // The worker dies: answers are 503 again, quickly (NATS no-responders, then the monitor).
  worker->Stop();
  worker.reset();
  r = HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("gone?"),
               {"Content-Type: application/json"}, 5000);
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Body(r)["error"]["code"], "no_worker");
}

TEST(GatewayAlone, NatsOutageGives503AndRecovers) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  Gateway gw(nats.url(), kConfig);
  ASSERT_TRUE(gw.WaitReady());
  nats.process().Stop();
  ASSERT_TRUE(Eventually([&] {
    return Body(HttpCall("GET", gw.Url("/ready")))["nats"] == "disconnected";
  })) << gw.process().Log();
  HttpReply r = HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("during outage"),
                         {"Content-Type: application/json"}, 5000);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Body(r)["error"]["code"], "unavailable");
  EXPECT_EQ(HttpCall("GET", gw.Url("/ready")).status, 503);
  EXPECT_EQ(HttpCall("GET", gw.Url("/health")).status, 200);
  // The server comes back on the same port: the gateway (and the worker) reconnect by
  // themselves and answers flow again.
  nats.Restart();
  ASSERT_TRUE(gw.WaitReady(milliseconds(30000))) << gw.process().Log();
  ASSERT_TRUE(Eventually([&] {
    return HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("after outage"),
                    {"Content-Type: application/json"})
               .status == 200;
  }));
  EXPECT_TRUE(gw.process().Running());
}

TEST(GatewayAlone, DeadlineGives504AndPublishesCancel) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  CancelListener cancels(nats.url());
  Gateway gw(nats.url(), R"({"agent": {"turn_timeout_ms": 1000}})");
  ASSERT_TRUE(gw.WaitReady());
  HttpReply r = HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("silent"),
                         {"Content-Type: application/json"});
  EXPECT_EQ(r.status, 504);
  EXPECT_EQ(Body(r)["error"]["code"], "deadline_exceeded");
  const std::string request_id = r.headers["x-request-id"];
  ASSERT_FALSE(request_id.empty());
  EXPECT_TRUE(Eventually([&] { return cancels.Seen(request_id); }));

  // A silent stream ends with an `error` event.
  SseStream stream(gw.port(), QueryBody("silent"));
  ASSERT_TRUE(stream.WaitComplete());
  EXPECT_TRUE(HasEvent(stream.Events(), "error", "deadline_exceeded"));
  EXPECT_TRUE(Eventually([&] { return cancels.Seen(stream.Response().headers["x-request-id"]); }));
}

// A lightweight worker that took a query and died (here: never answers) costs the client
// gateway.flow_timeout_ms, not the agent turn's deadline; a query the worker queued for the
// agents (a `queued` event) waits for its answer past that.
TEST(GatewayAlone, AWorkerGoneMidFlowGives504AfterTheFlowTimeout) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  CancelListener cancels(nats.url());
  Gateway gw(nats.url(),
             R"({"agent": {"turn_timeout_ms": 60000}, "gateway": {"flow_timeout_ms": 1000}})");
  ASSERT_TRUE(gw.WaitReady());
  const auto started = std::chrono::steady_clock::now();
  HttpReply r = Post(gw, QueryBody("silent"));
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(Body(r)["error"]["code"], "deadline_exceeded");
  EXPECT_NE(r.body.find("gateway.flow_timeout_ms (1000 ms)"), std::string::npos) << r.body;
  EXPECT_GE(waited, milliseconds(1000));
  EXPECT_LT(waited, seconds(30)) << "waited for the turn deadline instead";
  EXPECT_TRUE(Eventually([&] { return cancels.Seen(r.headers["x-request-id"]); }));

  // The same on a stream: an `error` event, not a 60 s wait.
  SseStream silent(gw.port(), QueryBody("silent"));
  ASSERT_TRUE(silent.WaitComplete(seconds(30)));
  EXPECT_TRUE(HasEvent(silent.Events(), "error", "deadline_exceeded"));

  // Queued for the agents: the answer 2 s later still arrives (no event shown for `queued`).
  std::thread opener([&] {
    std::this_thread::sleep_for(milliseconds(2000));
    worker.gates.Open("slow-agent");
  });
  HttpReply answered = Post(gw, QueryBody("queued:slow-agent"));
  opener.join();
  EXPECT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(Body(answered)["message"], "after the queue");
  SseStream stream(gw.port(), QueryBody("queued:slow-agent"));
  ASSERT_TRUE(stream.WaitComplete(seconds(30)));
  auto events = stream.Events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().name, "done");
  for (const auto& e : events) EXPECT_NE(e.name, "error") << e.data;
}

// gateway.request_read_timeout_ms bounds how long a connection may take to send one request,
// counted from its first byte (from the connection's opening for its first request): past it a
// JSON 408 with `Connection: close`, then the connection ends. Trickling bytes does not extend
// it; a kept-alive connection idle between requests, and an answer that takes longer than the
// timeout, are not affected.
TEST(GatewayAlone, SlowRequestsGetAJson408AndTheConnectionEnds) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  Gateway gw(
      nats.url(),
      R"({"agent": {"turn_timeout_ms": 30000}, "gateway": {"request_read_timeout_ms": 1500}})");
  ASSERT_TRUE(gw.WaitReady()) << gw.process().Log();
  const milliseconds timeout(1500);
  auto has_answer = [](const std::string& d) { return ParseResponse(d).consumed > 0; };
  auto expect_408 = [&](RawConnection& conn, std::chrono::steady_clock::time_point since,
                        const std::string& what) {
    ASSERT_TRUE(conn.WaitFor(has_answer, milliseconds(15000))) << what << ": no answer";
    EXPECT_GE(std::chrono::steady_clock::now() - since, timeout) << what;
    auto parsed = ParseResponse(conn.Data());
    EXPECT_EQ(parsed.status, 408) << what;
    EXPECT_EQ(parsed.headers["content-type"], "application/json") << what;
    EXPECT_EQ(parsed.headers["connection"], "close") << what;
    json body = json::parse(parsed.body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << what << ": " << parsed.body;
    EXPECT_EQ(body["error"]["code"], "request_timeout") << what;
    EXPECT_NE(body["error"]["message"].get<std::string>().find("request_read_timeout_ms (1500 ms)"),
              std::string::npos)
        << body.dump();
    EXPECT_EQ(body["error"]["request_id"], parsed.headers["x-request-id"]) << what;
    EXPECT_TRUE(conn.WaitClosed(milliseconds(15000))) << what << ": not closed";
  };

  const std::string head =
      "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
  {  // Connected, nothing sent.
    const auto since = std::chrono::steady_clock::now();
    RawConnection conn(gw.port());
    expect_408(conn, since, "silent connection");
  }
  {  // Half a head.
    RawConnection conn(gw.port());
    const auto since = std::chrono::steady_clock::now();
    ASSERT_TRUE(conn.Send(head));
    expect_408(conn, since, "incomplete head");
  }
  {  // The head, half the body.
    RawConnection conn(gw.port());
    const auto since = std::chrono::steady_clock::now();
    ASSERT_TRUE(conn.Send(head + "Content-Length: 100\r\n\r\n{\"message\":"));
    expect_408(conn, since, "incomplete body");
  }
  {  // A header byte every 100 ms for 6 s: the answer comes at the timeout, mid-trickle.
    RawConnection conn(gw.port());
    const auto since = std::chrono::steady_clock::now();
    ASSERT_TRUE(conn.Send("GET /health HTTP/1.1\r\nX-Slow: "));
    bool answered_mid_trickle = false;
    for (int i = 0; i < 60; ++i) {
      if (!conn.Send("a")) break;  // the gateway closed: nothing more to send
      if (conn.WaitFor(has_answer, milliseconds(100))) {
        answered_mid_trickle = true;
        break;
      }
    }
    EXPECT_TRUE(answered_mid_trickle) << "the trickle extended the deadline";
    expect_408(conn, since, "trickled head");
  }
  {  // Kept alive: idle between requests is fine, however long (here longer than the read
     // timeout plus Pistache's own margin); the next request's clock starts at its first byte.
    RawConnection conn(gw.port());
    ASSERT_TRUE(conn.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(conn.WaitFor(has_answer));
    EXPECT_EQ(ParseResponse(conn.Data()).status, 200);
    const std::size_t first = conn.Data().size();
    EXPECT_FALSE(conn.WaitForOrClosed([&](const std::string& d) { return d.size() > first; },
                                      milliseconds(7000)))
        << "the idle kept-alive connection was answered or closed: " << conn.Data().substr(first);
    const auto since = std::chrono::steady_clock::now();
    ASSERT_TRUE(conn.Send("GET /health HTTP/1.1\r\n"));
    ASSERT_TRUE(conn.WaitFor(
        [&](const std::string& d) {
          return d.size() > first && ParseResponse(d.substr(first)).consumed > 0;
        },
        milliseconds(15000)));
    EXPECT_GE(std::chrono::steady_clock::now() - since, timeout);
    auto parsed = ParseResponse(conn.Data().substr(first));
    EXPECT_EQ(parsed.status, 408);
    EXPECT_EQ(json::parse(parsed.body, nullptr, false)["error"]["code"], "request_timeout")
        << parsed.body;
    EXPECT_TRUE(conn.WaitClosed(milliseconds(15000)));
  }
  {  // An answer slower than the read timeout: a stream held open 3 s ends normally.
    std::thread opener([&] {
      std::this_thread::sleep_for(timeout * 2);
      worker.gates.Open("slow-answer");
    });
    SseStream stream(gw.port(), QueryBody("gate:slow-answer"));
    ASSERT_TRUE(stream.WaitComplete(seconds(30)));
    opener.join();
    auto events = stream.Events();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().name, "done");
    for (const auto& e : events) EXPECT_NE(e.name, "error") << e.data;
  }
  EXPECT_EQ(HttpCall("GET", gw.Url("/health")).status, 200);
  const std::string metrics = HttpCall("GET", gw.Url("/metrics")).body;
  EXPECT_NE(metrics.find("status=\"408\""), std::string::npos);
}

// The 408 of the read deadline to a HEAD request has no body, like every other answer to HEAD
// (RFC 9110 9.3.2): the status and headers, Content-Length that of the JSON body it would have
// sent. It used to carry that body, which a client (which reads no body after HEAD) would take
// for the start of the next response. Whether the request stalls in its body (a HEAD with a
// Content-Length), its headers, its request line or its method ("HEA": no other method starts
// with 'H'), or on a kept-alive connection.
TEST(GatewayAlone, ASlowHeadRequestGetsA408WithoutABody) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  Gateway gw(nats.url(), R"({"gateway": {"request_read_timeout_ms": 1500}})");
  ASSERT_TRUE(gw.WaitReady()) << gw.process().Log();
  auto head_answered = [](const std::string& d) { return ParseResponse(d, true).consumed > 0; };

  // Each stalls at once; their clocks run together.
  const std::vector<std::pair<std::string, std::string>> stalls = {
      {"body pending",
       "HEAD /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"message\""},
      {"incomplete head", "HEAD /health HTTP/1.1\r\nHost: x\r\n"},
      {"incomplete request line", "HEAD /heal"},
      {"incomplete method", "HEA"}};
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (const auto& [what, bytes] : stalls) {
    conns.push_back(std::make_unique<RawConnection>(gw.port()));
    ASSERT_TRUE(conns.back()->Send(bytes)) << what;
  }
  // A GET that stalls, for comparison: its 408 keeps the JSON body.
  RawConnection get(gw.port());
  ASSERT_TRUE(get.Send("GET /health HTTP/1.1\r\nHost: x\r\n"));
  // Kept alive: a HEAD answered (bodiless), then the next HEAD stalls.
  auto kept = std::make_unique<RawConnection>(gw.port());
  ASSERT_TRUE(kept->Send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(kept->WaitFor(head_answered));
  const ParsedResponse health = ParseResponse(kept->Data(), true);
  EXPECT_EQ(health.status, 200);
  ASSERT_TRUE(kept->Send("HEAD /health HTTP/1.1\r\nHost: x\r\n"));

  auto expect_bodiless_408 = [&](RawConnection& conn, std::size_t from, const std::string& what) {
    ASSERT_TRUE(conn.WaitFor(
        [&](const std::string& d) { return d.size() > from && head_answered(d.substr(from)); },
        milliseconds(15000)))
        << what << ": no answer";
    ASSERT_TRUE(conn.WaitClosed(milliseconds(15000))) << what << ": not closed";
    const std::string answer = conn.Data().substr(from);
    ParsedResponse r = ParseResponse(answer, true);
    EXPECT_EQ(r.status, 408) << what;
    EXPECT_EQ(r.headers.count("content-length"), 1u) << what;
    // The length of the JSON error body it leaves out.
    EXPECT_GT(std::stoul(r.headers["content-length"]), 0u) << what;
    EXPECT_EQ(r.headers["content-type"], "application/json") << what;
    EXPECT_EQ(r.headers["connection"], "close") << what;
    EXPECT_FALSE(r.headers["x-request-id"].empty()) << what;
    EXPECT_EQ(answer.size(), r.consumed) << what << ": bytes after the head: " << answer;
  };
  for (std::size_t i = 0; i < stalls.size(); ++i) {
    expect_bodiless_408(*conns[i], 0, stalls[i].first);
  }
  expect_bodiless_408(*kept, health.consumed, "kept-alive connection");

  ASSERT_TRUE(get.WaitFor([](const std::string& d) { return ParseResponse(d).consumed > 0; },
                          milliseconds(15000)));
  const ParsedResponse r = ParseResponse(get.Data());
  EXPECT_EQ(r.status, 408);
  EXPECT_EQ(json::parse(r.body, nullptr, false)["error"]["code"], "request_timeout") << r.body;
  EXPECT_EQ(r.headers.at("content-length"), std::to_string(r.body.size()));
}

/// Token events "t<i>:pppp..." of `size` bytes, in order and complete, from a stream's events.
::testing::AssertionResult AllTokensInOrder(const std::vector<SseEvent>& events, int count,
                                            std::size_t size) {
  int next = 0;
  for (const auto& e : events) {
    if (e.name != "token") continue;
    const std::string token = json::parse(e.data)["token"];
    if (token.substr(0, token.find(':')) != "t" + std::to_string(next) || token.size() != size) {
      return ::testing::AssertionFailure() << "token " << next << " is " << token.substr(0, 20);
    }
    ++next;
  }
  if (next != count) return ::testing::AssertionFailure() << next << " tokens of " << count;
  if (events.empty() || events.back().name != "done") {
    return ::testing::AssertionFailure() << "no done event at the end";
  }
  return ::testing::AssertionSuccess();
}

// gateway.max_buffered_bytes_per_connection bounds what the gateway holds for a client that does
// not read: a stream whose queued bytes would pass it is dropped (the connection reset, the turn
// cancelled, the drop counted and logged), its queue is freed at once, and other clients,
// including a paused reader under the bound, are not affected. A paused reader's queue is freed
// when it goes away.
TEST(GatewayAlone, AClientThatStopsReadingIsDroppedAndItsTurnCancelled) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  CancelListener cancels(nats.url());
  // 8 MiB: a paused reader's socket takes up to ~4 MB (tcp_wmem max) before anything queues in
  // the gateway, so a reader under the bound with something queued needs room above that.
  Gateway gw(nats.url(), R"({"agent": {"turn_timeout_ms": 30000},
                             "gateway": {"max_buffered_bytes_per_connection": 8388608}})");
  ASSERT_TRUE(gw.WaitReady()) << gw.process().Log();
  const std::string queued = "wf_gateway_queued_write_bytes";
  const std::string dropped = "wf_gateway_slow_clients_dropped_total";
  auto request_of = [&](const std::string& session) {
    std::string id;
    EXPECT_TRUE(Eventually([&] {
      for (const auto& r : worker.received()) {
        if (r.request.session_id() == session) id = r.request.request_id();
      }
      return !id.empty();
    }));
    return id;
  };
  // Every flood published so far has reached its exchange, and each has ended.
  auto streams_done = [&](int floods) {
    return Eventually([&] { return worker.floods_done() >= floods; }, seconds(30)) &&
           Eventually([&] { return MetricValue(gw, "wf_gateway_open_streams") == 0; }, seconds(30));
  };
  // ~6.5 MB of events in all: under the bound whatever the kernel takes, and more than it takes.
  constexpr int kSmall = 12000;
  constexpr std::size_t kSize = 500;
  const std::string small = "bigflood:" + std::to_string(kSmall) + ":" + std::to_string(kSize);

  // A paused reader under the bound that goes away: what was queued for it is freed.
  {
    SseStream leaver(gw.port(), QueryBody(small, "leaver"), {}, /*paused=*/true,
                     /*rcvbuf=*/4096);
    ASSERT_TRUE(streams_done(1)) << gw.process().Log();
    ASSERT_GT(MetricValue(gw, queued), 0) << "the kernel took it all: nothing to check";
    leaver.connection().Close();
  }
  ASSERT_TRUE(Eventually([&] { return MetricValue(gw, queued) == 0; })) << MetricValue(gw, queued);

  // A paused reader under the bound that will read later.
  SseStream patient(gw.port(), QueryBody(small, "patient"), {}, /*paused=*/true,
                    /*rcvbuf=*/4096);
  ASSERT_TRUE(streams_done(2)) << gw.process().Log();
  const long long patient_queued = MetricValue(gw, queued);
  ASSERT_GT(patient_queued, 0);

  // ~21.6 MB to a client that never reads, next to a reader that keeps up and a plain query.
  constexpr int kBig = 40000;
  SseStream stuck(
      gw.port(),
      QueryBody("bigflood:" + std::to_string(kBig) + ":" + std::to_string(kSize), "stuck"), {},
      /*paused=*/true, /*rcvbuf=*/4096);
  constexpr int kNormal = 4000;
  SseStream reader(
      gw.port(),
      QueryBody("bigflood:" + std::to_string(kNormal) + ":" + std::to_string(kSize), "reader"));
  const std::string stuck_id = request_of("stuck");
  ASSERT_TRUE(Eventually([&] { return cancels.Seen(stuck_id); }, seconds(30)))
      << gw.process().Log();
  EXPECT_EQ(MetricValue(gw, dropped), 1);
  EXPECT_EQ(MetricValue(gw, "wf_gateway_requests_total{route=\"query_stream\",status=\"499\"}"), 1);
  const std::string log = gw.process().Log();
  const auto line = log.find("request " + stuck_id + ": client on fd");
  ASSERT_NE(line, std::string::npos) << log;
  EXPECT_NE(log.find("max_buffered_bytes_per_connection (8388608); connection dropped", line),
            std::string::npos)
      << log.substr(line, 300);
  HttpReply answer = Post(gw, QueryBody("meanwhile", "query"));
  EXPECT_EQ(answer.status, 200) << answer.body;
  ASSERT_TRUE(reader.WaitComplete(seconds(60)));
  EXPECT_TRUE(AllTokensInOrder(reader.Events(), kNormal, kSize));

  // The dropped connection's queue is gone (only the patient reader's is left), and the
  // connection ends: reading now, the client gets no complete stream, then the end.
  ASSERT_TRUE(streams_done(4));
  EXPECT_TRUE(Eventually([&] { return MetricValue(gw, queued) == patient_queued; }))
      << MetricValue(gw, queued) << " vs " << patient_queued;
  stuck.connection().Resume();
  EXPECT_TRUE(stuck.connection().WaitClosed(seconds(30)));
  EXPECT_FALSE(stuck.Complete());

  // The patient reader under the bound gets every byte, in order.
  patient.connection().Resume();
  ASSERT_TRUE(patient.WaitComplete(seconds(60)));
  EXPECT_TRUE(AllTokensInOrder(patient.Events(), kSmall, kSize));
  EXPECT_TRUE(Eventually([&] { return MetricValue(gw, queued) == 0; }));
  EXPECT_EQ(MetricValue(gw, dropped), 1);
  EXPECT_TRUE(gw.process().Running());
}

TEST(GatewayAlone, SigtermDrainsAnOpenStreamThenExitsZero) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  Gateway gw(nats.url(), kConfig, {"--drain-ms", "20000"});
  ASSERT_TRUE(gw.WaitReady());
  SseStream stream(gw.port(), QueryBody("gate:drain"));
  ASSERT_TRUE(stream.WaitEvents([](const auto& ev) { return HasEvent(ev, "token", "first"); }));
  gw.process().Signal(SIGTERM);
  // New requests are refused while the stream drains; readiness goes down.
  ASSERT_TRUE(Eventually([&] {
    return HttpCall("POST", gw.Url("/api/v1/query"), QueryBody("late"),
                    {"Content-Type: application/json"})
               .status == 503;
  }));
  EXPECT_EQ(HttpCall("GET", gw.Url("/ready")).status, 503);
  EXPECT_TRUE(gw.process().Running());
  worker.gates.Open("drain");
  ASSERT_TRUE(stream.WaitComplete());
  EXPECT_EQ(stream.Events().back().name, "done");
  auto code = gw.process().Wait(milliseconds(15000));
  ASSERT_TRUE(code.has_value()) << gw.process().Log();
  EXPECT_EQ(*code, 0) << gw.process().Log();
}

TEST(GatewayAlone, DrainPeriodOverEndsOpenStreams) {
  NatsServer nats;
  StandInWorker worker(nats.url());
  CancelListener cancels(nats.url());
  Gateway gw(nats.url(), kConfig, {"--drain-ms", "300"});
  ASSERT_TRUE(gw.WaitReady());
  SseStream stream(gw.port(), QueryBody("gate:never"));
  ASSERT_TRUE(stream.WaitEvents([](const auto& ev) { return HasEvent(ev, "token", "first"); }));
  const std::string request_id = stream.Response().headers["x-request-id"];
  gw.process().Signal(SIGTERM);
  ASSERT_TRUE(stream.WaitComplete());
  EXPECT_TRUE(HasEvent(stream.Events(), "error", "unavailable"));
  EXPECT_TRUE(Eventually([&] { return cancels.Seen(request_id); }));
  auto code = gw.process().Wait(milliseconds(15000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

TEST(GatewayCommandLine, HelpInvalidConfigAndUnreachableNats) {
  TempDir dir;
  {
    Process help(BinPath("wf-gateway"), {"--help"});
    auto code = help.Wait(milliseconds(10000));
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 0);
    for (const char* env : {"WF_CONFIG", "NATS_URL", "WF_LOG_LEVEL", "WF_LISTEN", "WF_THREADS",
                            "WF_HEARTBEAT_MS", "WF_DRAIN_MS"}) {
      EXPECT_NE(help.Log().find(env), std::string::npos) << env;
    }
  }
  {
    const std::string bad = dir.path() + "/bad.json";
    std::ofstream(bad) << R"({"gateway": {"max_body_bytes": "big"}})";
    Process p(BinPath("wf-gateway"), {"--config", bad, "--listen", "127.0.0.1:0"});
    auto code = p.Wait(milliseconds(10000));
    ASSERT_TRUE(code.has_value());
    EXPECT_NE(*code, 0);
    EXPECT_NE(p.Log().find("invalid config"), std::string::npos) << p.Log();
  }
  {
    const std::string good = dir.path() + "/good.json";
    std::ofstream(good) << "{}";
    Process p(BinPath("wf-gateway"), {"--config", good, "--listen", "127.0.0.1:0", "--nats-url",
                                      "nats://127.0.0.1:" + std::to_string(FreePort())});
    auto code = p.Wait(milliseconds(15000));
    ASSERT_TRUE(code.has_value());
    EXPECT_NE(*code, 0);
    EXPECT_NE(p.Log().find("cannot connect to NATS"), std::string::npos) << p.Log();
  }
}

}  // namespace
}  // namespace wf::testing
