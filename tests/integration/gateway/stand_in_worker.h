#pragma once

// A stand-in for the lightweight worker (and the heavy pool's session service), written for the
// gateway's tests: it queue-subscribes `wf.query` (queue "lightweight"), answers
// `$SRV.PING.lightweight` through wf::MicroService, and replies with scripted QueryEvents chosen
// by the message text. NATS itself is real.
//
// Scripts (by message):
//   "error:<code>"      -> one `error` event with that code
//   "silent"            -> nothing at all
//   "stream-order"      -> token "Hel", tool_call, tool_result, token "lo", final (agent)
//   "gate:<name>"       -> token "first", waits (up to 20 s) for gate <name>, token "second", final
//   "queued:<name>"     -> a `queued` event (seq 0, as the real worker sends when it hands the
//                          query to the agents), waits (up to 20 s) for gate <name>, final
//                          "after the queue" (agent)
//   "flood:<n>"         -> n token events "t0".."t<n-1>", then final
//   "bigflood:<n>:<b>"  -> n token events of b bytes ("t<i>:" then padding), then final;
//                          floods_done() counts the finished ones
//   "reply-subject:..." -> like anything else, but answered on the NATS reply subject even when
//                          `reply_to` is set (a worker or outside service older than reply_to)
//   anything else       -> final: answer "echo: <message>", route flow, flow_id "echo",
//                          run_id "run-<request_id>", parameters echoed
// Events go to the request's `reply_to` when set, else to the NATS reply subject (the contract).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nats/connection.h"
#include "nats/micro_service.h"
#include "wf/v1/query.pb.h"
#include "wf/v1/session.pb.h"

namespace wf::testing {

/// Named one-shot gates a test opens and the worker waits on.
class Gates {
 public:
  void Open(const std::string& name) {
    {
      std::lock_guard lock(mu_);
      open_.insert(name);
    }
    cv_.notify_all();
  }
  bool Wait(const std::string& name, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return open_.count(name) > 0 || closing_; }) &&
           open_.count(name) > 0;
  }
  /// Releases every waiter (shutdown).
  void CloseAll() {
    {
      std::lock_guard lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> open_;
  bool closing_ = false;
};

/// What the worker received for one query.
struct Received {
  v1::QueryRequest request;
  std::string reply;
  std::string request_id_header;
  std::string traceparent_header;
  std::chrono::steady_clock::time_point at;
};

class StandInWorker {
 public:
  /// Connects and starts serving. `sessions`: also answer wf.session.get/delete (session
  /// "known" exists; "busy" answers session_busy; anything else is session_not_found).
  /// `record`: keep every request for received() (off for benchmarks).
  explicit StandInWorker(const std::string& nats_url, bool sessions = true, bool record = true)
      : conn_(Connect(nats_url)), record_(record) {
    service_ =
        std::make_unique<MicroService>(*conn_, "lightweight", "0.0.1", "stand-in worker", "wf");
    service_->AddEndpoint("query", "wf.query", "lightweight");
    Must(service_->Start());
    auto sub = conn_->Subscribe(
        "wf.query", [this](const NatsMsgView& msg) { OnQuery(msg); }, "lightweight");
    Must(sub.ok() ? Status::Ok() : Status(sub.error()));
    subs_.push_back(std::move(sub).value());
    if (sessions) {
      for (const char* subject : {"wf.session.get", "wf.session.delete"}) {
        auto s = conn_->Subscribe(
            subject, [this](const NatsMsgView& msg) { OnSession(msg); }, "heavy");
        Must(s.ok() ? Status::Ok() : Status(s.error()));
        subs_.push_back(std::move(s).value());
      }
    }
    Must(conn_->Flush(std::chrono::milliseconds(2000)));
  }

  ~StandInWorker() { Stop(); }

  /// Stops answering (as if the worker died). Idempotent.
  void Stop() {
    if (stopped_.exchange(true)) return;
    gates.CloseAll();
    service_->Stop();
    subs_.clear();
    std::list<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  std::vector<Received> received() {
    std::lock_guard lock(mu_);
    return received_;
  }
  /// bigflood scripts that have published everything.
  int floods_done() const { return floods_done_.load(); }
  std::size_t received_count() {
    std::lock_guard lock(mu_);
    return received_.size();
  }

  Gates gates;

 private:
  static std::unique_ptr<NatsConnection> Connect(const std::string& url) {
    NatsOptions options;
    options.url = url;
    options.name = "stand-in-worker";
    auto conn = NatsConnection::Connect(options);
    if (!conn.ok()) throw std::runtime_error(conn.error().message);
    return std::move(conn).value();
  }
  static void Must(const Status& status) {
    if (!status.ok()) throw std::runtime_error(status.error().message);
  }

  /// Publishes events of one request with increasing seq.
  struct Replier {
    NatsConnection* conn;
    std::string reply;
    std::string request_id;
    uint64_t seq = 0;
    void Send(v1::QueryEvent event) {
      event.set_request_id(request_id);
      event.set_seq(++seq);
      (void)conn->Publish(reply, event.SerializeAsString());
    }
    void Token(const std::string& text) {
      v1::QueryEvent e;
      e.set_token(text);
      Send(std::move(e));
    }
    void Final(const std::string& answer, const std::string& route,
               const google::protobuf::Struct* parameters = nullptr,
               const std::string& session_id = "") {
      v1::QueryEvent e;
      auto* f = e.mutable_final();
      f->set_answer(answer);
      f->set_route(route);
      if (route == "flow") f->set_flow_id("echo");
      f->set_run_id("run-" + request_id);
      f->set_session_id(session_id);
      if (route == "agent") {
        f->mutable_usage()->set_prompt_tokens(11);
        f->mutable_usage()->set_completion_tokens(7);
        f->mutable_usage()->set_total_tokens(18);
      }
      if (parameters) *f->mutable_parameters() = *parameters;
      Send(std::move(e));
    }
    void Error(const std::string& code, const std::string& message) {
      v1::QueryEvent e;
      e.mutable_error()->set_code(code);
      e.mutable_error()->set_message(message);
      Send(std::move(e));
    }
  };

  void OnQuery(const NatsMsgView& msg) {
    Received r;
    if (!r.request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) return;
    r.reply = std::string(msg.reply());
    r.request_id_header = msg.Header(kRequestIdHeader);
    r.traceparent_header = msg.Header(kTraceparentHeader);
    r.at = std::chrono::steady_clock::now();
    if (record_) {
      std::lock_guard lock(mu_);
      received_.push_back(r);
    }
    const std::string& message = r.request.message();
    const bool slow = message.rfind("gate:", 0) == 0 || message.rfind("flood:", 0) == 0 ||
                      message.rfind("bigflood:", 0) == 0 || message.rfind("queued:", 0) == 0;
    if (!slow) {
      Run(r);
      return;
    }
    std::lock_guard lock(mu_);
    if (stopped_) return;
    threads_.emplace_back([this, r] { Run(r); });
  }

  void Run(const Received& r) {
    const bool legacy = r.request.message().rfind("reply-subject:", 0) == 0;
    const std::string& to = legacy || r.request.reply_to().empty() ? r.reply : r.request.reply_to();
    Replier out{conn_.get(), to, r.request.request_id()};
    const std::string& message = r.request.message();
    if (message == "silent") return;
    if (message.rfind("error:", 0) == 0) {
      out.Error(message.substr(6), "scripted failure");
      return;
    }
    if (message == "stream-order") {
      out.Token("Hel");
      v1::QueryEvent call;
      call.mutable_tool_call()->set_id("call_1");
      call.mutable_tool_call()->set_name("weather");
      call.mutable_tool_call()->set_arguments_json(R"({"city":"Paris"})");
      call.mutable_tool_call()->set_kind("tool");
      out.Send(call);
      v1::QueryEvent result;
      result.mutable_tool_result()->set_call_id("call_1");
      result.mutable_tool_result()->set_name("weather");
      result.mutable_tool_result()->set_ok(true);
      result.mutable_tool_result()->set_content("sunny");
      out.Send(result);
      out.Token("lo");
      out.Final("Hello", "agent");
      return;
    }
    if (message.rfind("gate:", 0) == 0) {
      out.Token("first");
      gates.Wait(message.substr(5), std::chrono::seconds(20));
      if (stopped_) return;
      out.Token("second");
      out.Final("first second", "agent");
      return;
    }
    if (message.rfind("queued:", 0) == 0) {
      v1::QueryEvent queued;
      queued.set_request_id(r.request.request_id());
      queued.mutable_queued()->set_route("agent");
      (void)conn_->Publish(to, queued.SerializeAsString());
      gates.Wait(message.substr(7), std::chrono::seconds(20));
      if (stopped_) return;
      out.Final("after the queue", "agent");
      return;
    }
    if (message.rfind("bigflood:", 0) == 0) {
      const std::size_t colon = message.find(':', 9);
      const int n = std::stoi(message.substr(9, colon - 9));
      const std::size_t size = std::stoul(message.substr(colon + 1));
      for (int i = 0; i < n && !stopped_; ++i) {
        std::string token = "t" + std::to_string(i) + ":";
        token.resize(std::max(size, token.size()), 'p');
        out.Token(token);
      }
      out.Final("flooded", "agent");
      ++floods_done_;
      return;
    }
    if (message.rfind("flood:", 0) == 0) {
      const int n = std::stoi(message.substr(6));
      for (int i = 0; i < n && !stopped_; ++i) out.Token("t" + std::to_string(i));
      out.Final("flooded", "agent");
      return;
    }
    out.Final("echo: " + message, "flow",
              r.request.has_parameters() ? &r.request.parameters() : nullptr,
              r.request.session_id());
  }

  void OnSession(const NatsMsgView& msg) {
    v1::SessionRequest request;
    if (!request.ParseFromArray(msg.data().data(), static_cast<int>(msg.data().size()))) return;
    const bool get = msg.subject() == "wf.session.get";
    v1::SessionReply reply;
    if (request.session_id() == "known") {
      if (get) {
        auto* h = reply.mutable_history();
        h->set_session_id("known");
        h->set_turn_count(1);
        h->set_created_unix_ms(1000);
        h->set_updated_unix_ms(2000);
        auto* m = h->add_messages();
        m->set_role("user");
        m->set_content("hello");
        m->set_created_unix_ms(1000);
        m->set_run_id("run-a");
        m = h->add_messages();
        m->set_role("assistant");
        m->set_content("hi there");
        m->set_created_unix_ms(2000);
        m->set_run_id("run-a");
      } else {
        reply.mutable_ack()->set_session_id("known");
        reply.mutable_ack()->set_deleted(true);
      }
    } else if (request.session_id() == "busy") {
      reply.mutable_error()->set_code("session_busy");
      reply.mutable_error()->set_message("a turn is running");
    } else {
      reply.mutable_error()->set_code("session_not_found");
      reply.mutable_error()->set_message("no session " + request.session_id());
    }
    (void)conn_->Publish(msg.reply(), reply.SerializeAsString());
  }

  std::unique_ptr<NatsConnection> conn_;
  const bool record_;
  std::unique_ptr<MicroService> service_;
  std::vector<NatsSubscription> subs_;
  std::mutex mu_;
  std::vector<Received> received_;
  std::list<std::thread> threads_;
  std::atomic<bool> stopped_{false};
  std::atomic<int> floods_done_{0};
};

}  // namespace wf::testing
