// EndConfirmer (wf-heavy's resending of a turn's last event until confirmed) against a real
// nats-server: what it sends, what a confirmation stops, and its bounds.
#include "nats/end_confirmer.h"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "io/timer.h"
#include "nats/connection.h"
#include "support/test_support.h"

namespace wf::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct Message {
  std::string subject, data, reply;
};

class EndConfirmerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsOptions options;
    options.url = nats_.url();
    auto conn = NatsConnection::Connect(options);
    ASSERT_TRUE(conn.ok()) << conn.error().message;
    conn_ = std::move(conn).value();
    auto sub = conn_->Subscribe("ev.>", [this](const NatsMsgView& m) {
      std::lock_guard lock(mu_);
      received_.push_back(
          {std::string(m.subject()), std::string(m.data()), std::string(m.reply())});
    });
    ASSERT_TRUE(sub.ok());
    sub_ = std::move(sub).value();
  }

  /// What arrived on `subject`, in order.
  std::vector<Message> Of(const std::string& subject) {
    std::lock_guard lock(mu_);
    std::vector<Message> out;
    for (const auto& r : received_) {
      if (r.subject == subject) out.push_back(r);
    }
    return out;
  }

  NatsServer nats_;
  TimerThread timer_;
  std::unique_ptr<NatsConnection> conn_;
  std::mutex mu_;
  std::vector<Message> received_;
  NatsSubscription sub_;
};

// Past max_pending events or max_pending_bytes, an event is sent once without a reply subject
// (counted unconfirmed) instead of held: a receiver gone for a while costs bounded memory.
TEST_F(EndConfirmerTest, EventsPastTheBoundsAreSentOnceAndCountedUnconfirmed) {
  EndConfirmer::Options options;
  options.max_pending = 2;
  options.max_pending_bytes = 1000;
  EndConfirmer confirmer(*conn_, *conn_, timer_, options);
  ASSERT_TRUE(confirmer.Start().ok());
  const int64_t deadline = UnixMillisNow() + 30000;
  ASSERT_TRUE(confirmer.Send("ev.1", std::string(600, 'a'), {}, deadline).ok());
  ASSERT_TRUE(confirmer.Send("ev.2", std::string(600, 'b'), {}, deadline).ok());  // bytes
  ASSERT_TRUE(confirmer.Send("ev.3", std::string(10, 'c'), {}, deadline).ok());
  ASSERT_TRUE(confirmer.Send("ev.4", "d", {}, deadline).ok());  // count
  EXPECT_EQ(confirmer.stats().awaiting, 2u);
  EXPECT_EQ(confirmer.stats().unconfirmed, 2u);
  ASSERT_TRUE(Eventually([&] { return !Of("ev.2").empty() && !Of("ev.4").empty(); }));
  EXPECT_TRUE(Of("ev.2")[0].reply.empty());
  EXPECT_TRUE(Of("ev.4")[0].reply.empty());
  ASSERT_TRUE(Eventually([&] { return !Of("ev.1").empty() && !Of("ev.3").empty(); }));
  const std::string reply1 = Of("ev.1")[0].reply;
  ASSERT_FALSE(reply1.empty());
  EXPECT_EQ(Of("ev.1")[0].data, std::string(600, 'a'));

  // Confirming the first frees its place and its bytes: the next event is held again.
  ASSERT_TRUE(conn_->Publish(reply1, "").ok());
  ASSERT_TRUE(Eventually([&] { return confirmer.stats().awaiting == 1; }));
  EXPECT_EQ(confirmer.stats().confirmed, 1u);
  ASSERT_TRUE(confirmer.Send("ev.5", std::string(600, 'e'), {}, deadline).ok());
  EXPECT_EQ(confirmer.stats().awaiting, 2u);
  ASSERT_TRUE(Eventually([&] { return !Of("ev.5").empty(); }));
  EXPECT_FALSE(Of("ev.5")[0].reply.empty());

  // The unconfirmed ones are sent again, the same bytes under the same reply subject; the
  // confirmed one and those sent once are not.
  ASSERT_TRUE(Eventually([&] { return Of("ev.3").size() >= 2; }, seconds(5)));
  EXPECT_EQ(Of("ev.3")[1].data, Of("ev.3")[0].data);
  EXPECT_EQ(Of("ev.3")[1].reply, Of("ev.3")[0].reply);
  EXPECT_EQ(Of("ev.2").size(), 1u);
  EXPECT_EQ(Of("ev.4").size(), 1u);
  EXPECT_LE(Of("ev.1").size(), 2u);  // at most one resend raced its confirmation
}

// NATS answers an event nobody is subscribed to (a receiver still reconnecting) with a "no
// responders" status on its reply subject: that is not a confirmation, the event is sent again.
TEST_F(EndConfirmerTest, NoRespondersIsNotAConfirmation) {
  EndConfirmer confirmer(*conn_, *conn_, timer_, EndConfirmer::Options{});
  ASSERT_TRUE(confirmer.Start().ok());
  ASSERT_TRUE(confirmer.Send("unheard.1", "z", {}, UnixMillisNow() + 30000).ok());
  ASSERT_TRUE(Eventually([&] { return confirmer.stats().resent >= 2; }, seconds(5)));
  EXPECT_EQ(confirmer.stats().awaiting, 1u);
  EXPECT_EQ(confirmer.stats().confirmed, 0u);
}

// An event whose deadline has passed is sent once, unconfirmed; a destroyed confirmer counts
// what was still awaiting confirmation.
TEST_F(EndConfirmerTest, PastDeadlinesAndShutdownEndTheResending) {
  auto confirmer = std::make_unique<EndConfirmer>(*conn_, *conn_, timer_, EndConfirmer::Options{});
  ASSERT_TRUE(confirmer->Start().ok());
  ASSERT_TRUE(confirmer->Send("ev.late", "x", {}, UnixMillisNow() - 1).ok());
  EXPECT_EQ(confirmer->stats().awaiting, 0u);
  EXPECT_EQ(confirmer->stats().unconfirmed, 1u);
  ASSERT_TRUE(confirmer->Send("ev.held", "y", {}, UnixMillisNow() + 30000).ok());
  EXPECT_FALSE(confirmer->WaitIdle(milliseconds(300)));
  ASSERT_TRUE(Eventually([&] { return Of("ev.held").size() >= 2; }, seconds(5)));
  confirmer.reset();  // while its sweep is armed: cancels it, never runs it afterwards
  const std::size_t sent = Of("ev.held").size();
  std::this_thread::sleep_for(milliseconds(1000));
  EXPECT_EQ(Of("ev.held").size(), sent);
}

/// Records each event's outcome (EndConfirmer::Settled), by name.
class Outcomes {
 public:
  EndConfirmer::Settled For(const std::string& name) {
    return [this, name](bool confirmed) {
      std::lock_guard lock(mu_);
      calls_.emplace_back(name, confirmed);
    };
  }
  std::vector<std::pair<std::string, bool>> Calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::string, bool>> calls_;
};

// on_settled learns each event's outcome once: confirmed, given up at its deadline, or never
// held (past its deadline already, or past the bounds, which count held_bytes); an event still
// waiting when the confirmer goes is never settled (wf-heavy then leaves its query
// unacknowledged for another worker).
TEST_F(EndConfirmerTest, EachOutcomeIsReportedOnceAndNoneAfterDestruction) {
  EndConfirmer::Options options;
  options.max_pending_bytes = 1000;
  auto confirmer = std::make_unique<EndConfirmer>(*conn_, *conn_, timer_, options);
  ASSERT_TRUE(confirmer->Start().ok());
  Outcomes outcomes;
  const int64_t later = UnixMillisNow() + 30000;
  ASSERT_TRUE(confirmer->Send("ev.confirmed", "a", {}, later, outcomes.For("confirmed")).ok());
  ASSERT_TRUE(
      confirmer->Send("ev.expiring", "b", {}, UnixMillisNow() + 700, outcomes.For("expiring"))
          .ok());
  // Sent once: its deadline has passed / what it holds does not fit in the byte bound.
  ASSERT_TRUE(confirmer->Send("ev.past", "c", {}, UnixMillisNow() - 1, outcomes.For("past")).ok());
  ASSERT_TRUE(confirmer->Send("ev.big", "d", {}, later, outcomes.For("big"), 2000).ok());
  ASSERT_TRUE(confirmer->Send("ev.left", "e", {}, later, outcomes.For("left"), 500).ok());
  EXPECT_EQ(confirmer->stats().awaiting, 3u);
  const std::vector<std::pair<std::string, bool>> at_once = {{"past", false}, {"big", false}};
  EXPECT_EQ(outcomes.Calls(), at_once);

  ASSERT_TRUE(Eventually([&] { return !Of("ev.confirmed").empty(); }));
  ASSERT_TRUE(conn_->Publish(Of("ev.confirmed")[0].reply, "").ok());
  ASSERT_TRUE(Eventually([&] { return outcomes.Calls().size() >= 3; }));
  EXPECT_EQ(outcomes.Calls()[2], std::make_pair(std::string("confirmed"), true));
  // A second confirmation of the same event (a repeat's) reports nothing more; the one nobody
  // confirms is given up at its deadline.
  ASSERT_TRUE(conn_->Publish(Of("ev.confirmed")[0].reply, "").ok());
  ASSERT_TRUE(Eventually([&] { return outcomes.Calls().size() >= 4; }, seconds(5)));
  EXPECT_EQ(outcomes.Calls().size(), 4u);
  EXPECT_EQ(outcomes.Calls()[3], std::make_pair(std::string("expiring"), false));

  // "left" holds 500 bytes of the 1000: another 600 do not fit, 400 do.
  ASSERT_TRUE(confirmer->Send("ev.more", "f", {}, later, outcomes.For("more"), 600).ok());
  EXPECT_EQ(outcomes.Calls().back(), std::make_pair(std::string("more"), false));
  ASSERT_TRUE(confirmer->Send("ev.fits", "g", {}, later, outcomes.For("fits"), 400).ok());
  EXPECT_EQ(confirmer->stats().awaiting, 2u);
  confirmer.reset();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(outcomes.Calls().size(), 5u);  // neither "left" nor "fits"
}

}  // namespace
}  // namespace wf::testing
