// SessionStore against real redis-server and PostgreSQL 15.
#include "session/session_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <future>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "redis/redis_connection.h"
#include "support/test_support.h"

namespace wf {
namespace {

using std::chrono::milliseconds;

wf::v1::TurnRecord MakeTurn(const std::string& session_id, const std::string& run_id,
                            std::vector<std::pair<std::string, std::string>> messages) {
  wf::v1::TurnRecord turn;
  turn.set_session_id(session_id);
  turn.set_run_id(run_id);
  turn.set_request_id("req-" + run_id);
  turn.set_user_id("user-1");
  turn.set_route("agent");
  turn.set_status("ok");
  turn.set_started_unix_ms(1700000000000);
  turn.set_finished_unix_ms(1700000001234);
  turn.mutable_usage()->set_prompt_tokens(10);
  turn.mutable_usage()->set_completion_tokens(5);
  for (auto& [role, content] : messages) {
    auto* message = turn.add_messages();
    message->set_role(role);
    message->set_content(content);
  }
  return turn;
}

/// Now as Unix epoch milliseconds, the clock turns carry in started_unix_ms.
std::int64_t UnixNowMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> Contents(const std::vector<wf::v1::ChatMessage>& messages) {
  std::vector<std::string> out;
  for (const auto& message : messages) out.push_back(message.content());
  return out;
}

RedisConnection RawRedis(int port) {
  RedisEndpoint endpoint;
  endpoint.host = "127.0.0.1";
  endpoint.port = port;
  return RedisConnection(endpoint, {});
}

long long Integer(RedisConnection& redis, std::initializer_list<std::string_view> command) {
  auto reply = redis.Command(command);
  EXPECT_TRUE(reply.ok()) << (reply.ok() ? "" : reply.error().message);
  return reply.ok() ? reply->integer : -1;
}

class SessionStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    postgres_ = new testing::PostgresServer();
    redis_ = new testing::RedisServer();
  }
  static void TearDownTestSuite() {
    delete redis_;
    delete postgres_;
    redis_ = nullptr;
    postgres_ = nullptr;
  }

  void SetUp() override {
    store_ = Connect();
    ASSERT_TRUE(store_);
  }

  static std::unique_ptr<SessionStore> Connect(SessionStoreOptions options = {},
                                               const std::string& redis_url = "") {
    auto store = SessionStore::Connect(redis_url.empty() ? redis_->url() : redis_url,
                                       postgres_->url(), std::move(options));
    EXPECT_TRUE(store.ok()) << store.error().message;
    return store.ok() ? std::move(*store) : nullptr;
  }

  static testing::PostgresServer* postgres_;
  static testing::RedisServer* redis_;
  std::unique_ptr<SessionStore> store_;
};
testing::PostgresServer* SessionStoreTest::postgres_ = nullptr;
testing::RedisServer* SessionStoreTest::redis_ = nullptr;

/// Text that must arrive byte for byte through every encoding on the way (SQL, JSON, arrays).
constexpr const char* kTricky =
    "np \"quoted\" back\\slash {a,b} $1 '; DROP TABLE messages; --\nline\ttab \u00e9 \U0001F642";

TEST_F(SessionStoreTest, AppendThenLoadKeepsEveryField) {
  auto first = MakeTurn("append-load", "run-1", {{"user", "查订单 1234"}, {"assistant", ""}});
  auto* call = first.mutable_messages(1)->add_tool_calls();
  call->set_id("call_1");
  call->set_name("order_status");
  call->set_arguments_json(R"({"order_id":"1234"})");
  call->set_kind("flow");
  auto* tool = first.add_messages();
  tool->set_role("tool");
  tool->set_name("order_status");
  tool->set_tool_call_id("call_1");
  tool->set_content("shipped");
  tool->set_created_unix_ms(1700000000999);
  ASSERT_TRUE(store_->AppendTurn(first).ok());
  ASSERT_TRUE(store_
                  ->AppendTurn(MakeTurn("append-load", "run-2",
                                        {{"user", "thanks"}, {"assistant", kTricky}}))
                  .ok());

  auto history = store_->LoadHistory("append-load");
  ASSERT_TRUE(history.ok()) << history.error().message;
  EXPECT_EQ(Contents(*history),
            (std::vector<std::string>{"查订单 1234", "", "shipped", "thanks", kTricky}));
  const auto& assistant = (*history)[1];
  ASSERT_EQ(assistant.tool_calls_size(), 1);
  EXPECT_EQ(assistant.tool_calls(0).arguments_json(), R"({"order_id":"1234"})");
  EXPECT_EQ(assistant.tool_calls(0).kind(), "flow");
  EXPECT_EQ((*history)[2].tool_call_id(), "call_1");
  EXPECT_EQ((*history)[2].name(), "order_status");
  EXPECT_EQ((*history)[2].created_unix_ms(), 1700000000999);
  EXPECT_EQ((*history)[0].created_unix_ms(), 1700000001234);  // Filled from finished time.
  EXPECT_EQ((*history)[0].run_id(), "run-1");
  EXPECT_EQ((*history)[4].run_id(), "run-2");

  // PostgreSQL holds exactly the same messages.
  auto session = store_->GetSession("append-load");
  ASSERT_TRUE(session.ok()) << session.error().message;
  EXPECT_EQ(session->turn_count(), 2u);
  ASSERT_EQ(session->messages_size(), 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(session->messages(i).SerializeAsString(), (*history)[i].SerializeAsString()) << i;
  }
  // The session's times are its turns' (started 1700000000000, finished 1700000001234).
  EXPECT_EQ(session->created_unix_ms(), 1700000000000);
  EXPECT_EQ(session->updated_unix_ms(), 1700000001234);
}

TEST_F(SessionStoreTest, SessionTimesSpanItsTurnsInWhateverOrderTheyAreStored) {
  auto at = [](const std::string& run, std::int64_t started, std::int64_t finished) {
    auto turn = MakeTurn("times", run, {{"user", run}, {"assistant", "ok"}});
    turn.set_started_unix_ms(started);
    turn.set_finished_unix_ms(finished);
    return turn;
  };
  // An agent turn is stored first; a flow turn that began earlier (recorded in a batch) after it.
  ASSERT_TRUE(store_->AppendTurn(at("agent", 1700000005000, 1700000006000)).ok());
  ASSERT_TRUE(store_->AppendTurn(at("flow", 1700000001000, 1700000001002)).ok());
  auto session = store_->GetSession("times");
  ASSERT_TRUE(session.ok()) << session.error().message;
  EXPECT_EQ(session->created_unix_ms(), 1700000001000);
  EXPECT_EQ(session->updated_unix_ms(), 1700000006000);

  // A turn without start and end times: its messages' times count instead.
  auto untimed = at("untimed", 0, 0);
  untimed.mutable_messages(0)->set_created_unix_ms(1700000000500);
  untimed.mutable_messages(1)->set_created_unix_ms(1700000009000);
  ASSERT_TRUE(store_->AppendTurn(untimed).ok());
  session = store_->GetSession("times");
  ASSERT_TRUE(session.ok()) << session.error().message;
  EXPECT_EQ(session->created_unix_ms(), 1700000000500);
  EXPECT_EQ(session->updated_unix_ms(), 1700000009000);
  EXPECT_EQ(session->turn_count(), 3u);
  // No message is older than its session.
  for (const auto& message : session->messages()) {
    EXPECT_GE(message.created_unix_ms(), session->created_unix_ms()) << message.content();
  }
}

TEST_F(SessionStoreTest, UnknownSessionLoadsEmptyAndIsNotFound) {
  auto history = store_->LoadHistory("never-seen");
  ASSERT_TRUE(history.ok()) << history.error().message;
  EXPECT_TRUE(history->empty());
  auto session = store_->GetSession("never-seen");
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.error().code, ErrorCode::kSessionNotFound);
}

TEST_F(SessionStoreTest, InvalidInputIsBadRequest) {
  EXPECT_EQ(store_->LoadHistory("bad id!").error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(store_->GetSession("").error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(store_->DeleteSession(std::string(200, 'x')).error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(store_->AppendTurn(MakeTurn("bad id", "r", {})).error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(store_->AppendTurn(MakeTurn("ok-id", "", {})).error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(store_->TryLock("s", "", milliseconds(100)).error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(store_->TryLock("s", "o", milliseconds(0)).error().code, ErrorCode::kBadRequest);
}

TEST_F(SessionStoreTest, StoringTheSameRunTwiceChangesNothing) {
  const auto turn = MakeTurn("idempotent", "run-a", {{"user", "q"}, {"assistant", "a"}});
  ASSERT_TRUE(store_->AppendTurn(turn).ok());
  ASSERT_TRUE(store_->AppendTurn(turn).ok());
  // A redelivered record may differ (a re-run turn): the first stored version wins.
  auto rerun = MakeTurn("idempotent", "run-a", {{"user", "q"}, {"assistant", "different"}});
  ASSERT_TRUE(store_->AppendTurn(rerun).ok());
  auto history = store_->LoadHistory("idempotent");
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(Contents(*history), (std::vector<std::string>{"q", "a"}));
  auto session = store_->GetSession("idempotent");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->turn_count(), 1u);
  EXPECT_EQ(session->messages_size(), 2);
  auto redis = RawRedis(redis_->port());
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:idempotent"}), 2);
}

TEST_F(SessionStoreTest, RunIdOfAnotherSessionIsRefused) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("owner-a", "run-shared", {{"user", "x"}})).ok());
  Status status = store_->AppendTurn(MakeTurn("owner-b", "run-shared", {{"user", "y"}}));
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kBadRequest);
  EXPECT_TRUE(store_->LoadHistory("owner-b")->empty());
}

TEST_F(SessionStoreTest, ABatchStoresEveryTurnInSessionOrder) {
  // Already stored: the batch's copy of it must change nothing.
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("batch-b", "b-0", {{"user", "b0"}})).ok());
  std::vector<wf::v1::TurnRecord> batch = {
      MakeTurn("batch-b", "b-1", {{"user", "b1"}, {"assistant", "B1"}}),
      MakeTurn("batch-a", "a-1", {{"user", "a1"}, {"assistant", "A1"}}),
      MakeTurn("batch-b", "b-0", {{"user", "b0"}}),
      MakeTurn("batch-a", "a-2", {{"user", "a2"}, {"assistant", "A2"}}),
      MakeTurn("batch-b", "b-2", {{"user", "b2"}, {"assistant", "B2"}}),
  };
  ASSERT_TRUE(store_->AppendTurns(batch).ok());
  ASSERT_TRUE(store_->AppendTurns(batch).ok());  // a redelivered batch stores nothing twice
  EXPECT_EQ(Contents(*store_->LoadHistory("batch-a")),
            (std::vector<std::string>{"a1", "A1", "a2", "A2"}));
  EXPECT_EQ(Contents(*store_->LoadHistory("batch-b")),
            (std::vector<std::string>{"b0", "b1", "B1", "b2", "B2"}));
  EXPECT_EQ(store_->GetSession("batch-a")->turn_count(), 2u);
  EXPECT_EQ(store_->GetSession("batch-b")->turn_count(), 3u);
  auto redis = RawRedis(redis_->port());
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:batch-b"}), 5);
}

/// MakeTurn for a turn that started at `started_ms` and took 100 ms.
wf::v1::TurnRecord TurnAt(const std::string& session_id, const std::string& run_id,
                          std::int64_t started_ms, const std::string& user_text) {
  wf::v1::TurnRecord turn =
      MakeTurn(session_id, run_id, {{"user", user_text}, {"assistant", "re " + user_text}});
  turn.set_started_unix_ms(started_ms);
  turn.set_finished_unix_ms(started_ms + 100);
  return turn;
}

TEST_F(SessionStoreTest, ATurnStoredLateGoesBeforeTheTurnsThatStartedAfterIt) {
  // Turns 1 and 4 went straight in; 2 and 3 were answered meanwhile and are stored only now
  // (held through a PostgreSQL outage, or taken from WF_HISTORY by another worker).
  constexpr std::int64_t t0 = 1700000100000;
  ASSERT_TRUE(store_->AppendTurn(TurnAt("late-one", "l-1", t0, "one")).ok());
  ASSERT_TRUE(store_->AppendTurn(TurnAt("late-one", "l-4", t0 + 3000, "four")).ok());
  ASSERT_TRUE(store_->AppendTurn(TurnAt("late-one", "l-3", t0 + 2000, "three")).ok());
  ASSERT_TRUE(store_->AppendTurn(TurnAt("late-one", "l-2", t0 + 1000, "two")).ok());
  const std::vector<std::string> in_order = {"one",   "re one",   "two",  "re two",
                                             "three", "re three", "four", "re four"};
  // The hot copy, appended at its end, could not take them in their place: it was dropped, and
  // the history comes from PostgreSQL, in start order, for the agent and GET alike.
  EXPECT_EQ(Contents(*store_->LoadHistory("late-one")), in_order);
  auto redis = RawRedis(redis_->port());
  ASSERT_GE(Integer(redis, {"DEL", "wf:hist:late-one", "wf:runs:late-one"}), 0);
  EXPECT_EQ(Contents(*store_->LoadHistory("late-one")), in_order);
  EXPECT_EQ(store_->GetSession("late-one")->turn_count(), 4u);
  // A repeat of a late turn changes nothing.
  ASSERT_TRUE(store_->AppendTurn(TurnAt("late-one", "l-2", t0 + 1000, "two")).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("late-one")), in_order);
}

TEST_F(SessionStoreTest, ABatchOfLateTurnsIsStoredInStartOrder) {
  // Two heavy workers took one session's flow turns from a WF_HISTORY backlog: each record
  // holds some of them, and the later record was stored first.
  constexpr std::int64_t t0 = 1700000200000;
  ASSERT_TRUE(store_
                  ->AppendTurns({TurnAt("late-batch", "lb-3", t0 + 2000, "three"),
                                 TurnAt("late-other", "lo-1", t0, "other"),
                                 TurnAt("late-batch", "lb-5", t0 + 4000, "five")})
                  .ok());
  // Out of order against what is stored, and within the batch itself.
  ASSERT_TRUE(store_
                  ->AppendTurns({TurnAt("late-batch", "lb-4", t0 + 3000, "four"),
                                 TurnAt("late-batch", "lb-1", t0, "one"),
                                 TurnAt("late-other", "lo-2", t0 + 1000, "other two"),
                                 TurnAt("late-batch", "lb-2", t0 + 1000, "two")})
                  .ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("late-batch")),
            (std::vector<std::string>{"one", "re one", "two", "re two", "three", "re three", "four",
                                      "re four", "five", "re five"}));
  EXPECT_EQ(Contents(*store_->LoadHistory("late-other")),
            (std::vector<std::string>{"other", "re other", "other two", "re other two"}));
  EXPECT_EQ(store_->GetSession("late-batch")->turn_count(), 5u);
}

TEST_F(SessionStoreTest, ARefusedTurnDoesNotHoldBackTheRestOfItsBatch) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("batch-owner", "taken", {{"user", "x"}})).ok());
  std::vector<wf::v1::TurnRecord> batch = {
      MakeTurn("batch-ok", "ok-1", {{"user", "one"}}),
      MakeTurn("batch-thief", "taken", {{"user", "y"}}),
      MakeTurn("batch-ok", "ok-2", {{"user", "two"}}),
  };
  Status status = store_->AppendTurns(batch);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(Contents(*store_->LoadHistory("batch-ok")), (std::vector<std::string>{"one", "two"}));
  EXPECT_TRUE(store_->LoadHistory("batch-thief")->empty());
  // An invalid record is refused alone too.
  std::vector<wf::v1::TurnRecord> invalid = {MakeTurn("batch-new", "bn-1", {{"user", "z"}}),
                                             MakeTurn("bad id", "bn-2", {})};
  EXPECT_EQ(store_->AppendTurns(invalid).error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(Contents(*store_->LoadHistory("batch-new")), (std::vector<std::string>{"z"}));
}

/// Rows of `sql` (its $1 is a session-id prefix) as text, with `prefix` cut from every value
/// that starts with it, so two sets of sessions stored under two prefixes can be compared.
std::vector<std::string> RowsWithout(const std::string& url, const std::string& sql,
                                     const std::string& prefix) {
  pqxx::connection connection(url);
  pqxx::nontransaction tx(connection);
  std::vector<std::string> out;
  for (const pqxx::row& row : tx.exec_params(sql, prefix)) {
    std::string line;
    for (const pqxx::field& field : row) {
      std::string value = field.is_null() ? "NULL" : field.as<std::string>();
      if (value.rfind(prefix, 0) == 0) value.erase(0, prefix.size());
      line += value + "|";
    }
    out.push_back(line);
  }
  return out;
}

TEST_F(SessionStoreTest, ABatchStoresExactlyWhatItsTurnsStoredOneByOneWould) {
  // The same turns under two prefixes: one by one (wf_append_turn) and as one batch
  // (wf_append_turns' set-based path: every run new, no deleted session, every turn started
  // after its session's stored turns ended and after the batch's turns of its session ahead
  // of it).
  auto turns_for = [](const std::string& p) {
    std::vector<wf::v1::TurnRecord> turns;
    turns.push_back(MakeTurn(p + "x", p + "x-2", {{"user", "x2"}, {"assistant", "X2"}}));
    turns.back().set_started_unix_ms(1700000002000);  // after x-1 ended
    turns.back().set_finished_unix_ms(1700000002500);
    turns.back().set_user_id("ann");  // then "bob": the session keeps the last one given
    turns.back().set_route("flow");
    turns.back().set_flow_id("order_status");
    turns.push_back(MakeTurn(p + "y", p + "y-1", {{"user", "y1"}}));
    turns.back().set_started_unix_ms(1699999990000);  // earlier than x's first turn
    turns.back().set_finished_unix_ms(1699999995000);
    turns.push_back(MakeTurn(p + "x", p + "x-3", {{"user", "x3"}, {"assistant", ""}}));
    turns.back().set_user_id("bob");
    turns.back().set_started_unix_ms(1700000003000);
    turns.back().set_finished_unix_ms(1700000009000);                      // moves x's end on
    turns.back().mutable_messages(0)->set_created_unix_ms(1699999000000);  // and its start back
    wf::v1::ChatMessage* tool = turns.back().add_messages();
    tool->set_role("tool");
    tool->set_name("weather");
    tool->set_tool_call_id("call-1");
    tool->set_content("{\"temp\":21}");
    tool->set_created_unix_ms(1700000008000);
    turns.push_back(MakeTurn(p + "y", p + "y-2", {{"user", "y2"}, {"assistant", "Y2"}}));
    turns.back().set_user_id("");
    turns.back().set_status("cancelled");
    return turns;
  };
  for (const std::string p : {"one-", "many-"}) {
    ASSERT_TRUE(
        store_->AppendTurn(MakeTurn(p + "x", p + "x-1", {{"user", "x1"}, {"assistant", "X1"}}))
            .ok());
  }
  std::vector<wf::v1::TurnRecord> one = turns_for("one-");
  std::stable_sort(one.begin(), one.end(),
                   [](const auto& a, const auto& b) { return a.session_id() < b.session_id(); });
  for (const auto& turn : one) ASSERT_TRUE(store_->AppendTurn(turn).ok());
  ASSERT_TRUE(store_->AppendTurns(turns_for("many-")).ok());

  const std::string url = postgres_->url();
  const std::string sessions =
      "SELECT session_id, user_id, turn_count, created_at, updated_at FROM sessions"
      " WHERE starts_with(session_id, $1) ORDER BY 1";
  const std::string runs =
      "SELECT run_id, session_id, replace(request_id, $1, ''), route, flow_id, status, "
      "prompt_tokens,"
      " completion_tokens, started_at, finished_at FROM runs"
      " WHERE starts_with(session_id, $1) ORDER BY 1";
  const std::string messages =
      "SELECT session_id, run_id, seq, role, content, name, tool_call_id, tool_calls::text,"
      " created_at FROM messages WHERE starts_with(session_id, $1) ORDER BY 1, 3";
  for (const std::string& sql : {sessions, runs, messages}) {
    std::vector<std::string> expected = RowsWithout(url, sql, "one-");
    EXPECT_EQ(RowsWithout(url, sql, "many-"), expected) << sql;
    EXPECT_FALSE(expected.empty());
  }
  EXPECT_EQ(Contents(*store_->LoadHistory("many-x")),
            (std::vector<std::string>{"x1", "X1", "x2", "X2", "x3", "", "{\"temp\":21}"}));
  EXPECT_EQ(store_->GetSession("many-y")->turn_count(), 2u);
  auto redis = RawRedis(redis_->port());
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:many-x"}), 7);  // appended to the hot copy
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:many-y"}), 3);  // created by the batch
}

TEST_F(SessionStoreTest, ABatchWithATurnOfADeletedSessionStoresTheOthers) {
  const std::int64_t now = UnixNowMs();
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("batch-tomb", "bt-1", {{"user", "before"}})).ok());
  ASSERT_TRUE(*store_->DeleteSession("batch-tomb"));
  std::vector<wf::v1::TurnRecord> batch = {
      MakeTurn("batch-live", "bl-1", {{"user", "one"}}),
      MakeTurn("batch-tomb", "bt-2", {{"user", "cancelled"}}),
      MakeTurn("batch-live", "bl-2", {{"user", "two"}}),
  };
  batch[1].set_started_unix_ms(now - 1000);  // started before the delete: refused
  ASSERT_TRUE(store_->AppendTurns(batch).ok());
  EXPECT_EQ(store_->GetSession("batch-tomb").error().code, ErrorCode::kSessionNotFound);
  EXPECT_FALSE(store_->FindRun("bt-2")->has_value());
  EXPECT_EQ(Contents(*store_->LoadHistory("batch-live")), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(store_->GetSession("batch-live")->turn_count(), 2u);
}

// One turn of a batch that cannot be stored (a time past the year 9999, an invalid session id)
// is refused alone: the call says so (kBadRequest, so the record is not retried forever) and the
// other turns are stored.
TEST_F(SessionStoreTest, AnInvalidTurnOfABatchIsRefusedAndTheOthersStored) {
  std::vector<wf::v1::TurnRecord> batch = {
      MakeTurn("poison-a", "pa-1", {{"user", "one"}}),
      MakeTurn("poison-b", "pb-1", {{"user", "far future"}}),
      MakeTurn("poison-a", "pa-2", {{"user", "two"}}),
      MakeTurn("bad id!", "pc-1", {{"user", "bad session"}}),
  };
  batch[1].mutable_messages(0)->set_created_unix_ms(10000000000000000);  // year ~318,000
  Status stored = store_->AppendTurns(batch);
  ASSERT_FALSE(stored.ok());
  EXPECT_EQ(stored.error().code, ErrorCode::kBadRequest);
  EXPECT_NE(stored.error().message.find("pb-1"), std::string::npos) << stored.error().message;
  EXPECT_EQ(Contents(*store_->LoadHistory("poison-a")), (std::vector<std::string>{"one", "two"}));
  EXPECT_FALSE(store_->FindRun("pb-1")->has_value());
  EXPECT_FALSE(store_->FindRun("pc-1")->has_value());
}

// A batch that waits for a session's lock while another transaction stores one of its run ids
// for another session: once it has the lock it sees that run, starts again one turn at a time,
// and stores everything but the turn whose run id is taken.
TEST_F(SessionStoreTest, ARunIdTakenWhileABatchWaitsForItsSessionIsRefusedAlone) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("race-a", "race-0", {{"user", "zero"}})).ok());
  pqxx::connection holder(postgres_->url());
  pqxx::work other(holder);
  other.exec("SELECT 1 FROM sessions WHERE session_id = 'race-a' FOR UPDATE");
  std::vector<wf::v1::TurnRecord> batch = {MakeTurn("race-a", "race-1", {{"user", "one"}}),
                                           MakeTurn("race-a", "race-2", {{"user", "two"}})};
  auto stored = std::async(std::launch::async, [&] { return store_->AppendTurns(batch); });
  // The batch is past its first look at the runs and waits for race-a's row.
  pqxx::connection watcher(postgres_->url());
  ASSERT_TRUE(testing::Eventually([&] {
    pqxx::nontransaction tx(watcher);
    return tx.exec1(
                 "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                 " AND query LIKE '%wf_append_turns%'")[0]
               .as<int>() > 0;
  }));
  other.exec(
      "SELECT * FROM wf_append_turn('race-1', 'race-b', '', 'flow', '', 'ok', 0, 0, 0, 0,"
      " '[{\"role\":\"user\",\"content\":\"elsewhere\",\"name\":\"\","
      "\"tool_call_id\":\"\",\"tool_calls\":\"\",\"created_ms\":1}]', '')");
  other.commit();
  ASSERT_EQ(stored.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  Status status = stored.get();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kBadRequest) << status.error().message;
  EXPECT_EQ(Contents(*store_->LoadHistory("race-a")), (std::vector<std::string>{"zero", "two"}));
  EXPECT_EQ(store_->GetSession("race-a")->turn_count(), 2u);
  EXPECT_EQ(Contents(*store_->LoadHistory("race-b")), (std::vector<std::string>{"elsewhere"}));
}

TEST_F(SessionStoreTest, FlushAllReloadsFromPostgresAndRewarms) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("flushed", "f-1", {{"user", "one"}})).ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("flushed", "f-2", {{"user", "two"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"FLUSHALL"}).ok());
  EXPECT_EQ(Integer(redis, {"EXISTS", "wf:hist:flushed"}), 0);

  auto history = store_->LoadHistory("flushed");
  ASSERT_TRUE(history.ok()) << history.error().message;
  EXPECT_EQ(Contents(*history), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:flushed"}), 2);
  EXPECT_EQ(Integer(redis, {"SCARD", "wf:runs:flushed"}), 2);
  EXPECT_GT(Integer(redis, {"PTTL", "wf:hist:flushed"}), 0);

  // The re-warmed copy keeps growing with new turns.
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("flushed", "f-3", {{"user", "three"}})).ok());
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:flushed"}), 3);
  EXPECT_EQ(Contents(*store_->LoadHistory("flushed")),
            (std::vector<std::string>{"one", "two", "three"}));
}

/// Calls of `command` Redis counted since the last CONFIG RESETSTAT (INFO commandstats).
long long CommandCalls(RedisConnection& redis, std::string_view command) {
  auto info = redis.Command({"INFO", "commandstats"});
  EXPECT_TRUE(info.ok());
  if (!info.ok()) return -1;
  const std::string key = "cmdstat_" + std::string(command) + ":calls=";
  const std::size_t at = info->str.find(key);
  return at == std::string::npos ? 0 : std::stoll(info->str.substr(at + key.size()));
}

// The scripts run by their SHA-1 (their text is not sent and hashed on every call), and a Redis
// that lost its script cache (restart, failover, SCRIPT FLUSH) gets the text once again.
TEST_F(SessionStoreTest, ScriptsRunBySha1AndSurviveAScriptFlush) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("by-sha", "s-1", {{"user", "one"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"CONFIG", "RESETSTAT"}).ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Contents(*store_->LoadHistory("by-sha")), (std::vector<std::string>{"one"}));
  }
  EXPECT_EQ(CommandCalls(redis, "evalsha"), 3);
  EXPECT_EQ(CommandCalls(redis, "eval"), 0);

  ASSERT_TRUE(redis.Command({"SCRIPT", "FLUSH"}).ok());
  ASSERT_TRUE(redis.Command({"CONFIG", "RESETSTAT"}).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("by-sha")), (std::vector<std::string>{"one"}));
  EXPECT_EQ(CommandCalls(redis, "eval"), 1);  // after EVALSHA's NOSCRIPT
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("by-sha", "s-2", {{"user", "two"}})).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("by-sha")), (std::vector<std::string>{"one", "two"}));
  // The append script was lost too (once more EVAL); the load script is cached again.
  EXPECT_EQ(CommandCalls(redis, "eval"), 2);
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:by-sha"}), 2);

  // A lock-and-load whose EVALSHA meets NOSCRIPT while PostgreSQL is asked about an unseen
  // session: the EVAL that follows takes the lock; a stored session is read in full, a new one
  // is empty.
  auto other = Connect();  // has seen neither session
  ASSERT_TRUE(other);
  // Its SHA-1 of the script known (so it sends EVALSHA first).
  ASSERT_TRUE(other->TryLockAndLoadHistory("by-sha-warm", "warm", milliseconds(60000)).ok());
  ASSERT_TRUE(redis.Command({"FLUSHALL"}).ok());
  ASSERT_TRUE(redis.Command({"SCRIPT", "FLUSH"}).ok());
  ASSERT_TRUE(redis.Command({"CONFIG", "RESETSTAT"}).ok());
  auto stored = other->TryLockAndLoadHistory("by-sha", "owner", milliseconds(60000));
  ASSERT_TRUE(stored.ok() && stored->locked && stored->history.ok());
  EXPECT_EQ(Contents(*stored->history), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(CommandCalls(redis, "eval"), 1);
  auto fresh = other->TryLockAndLoadHistory("by-sha-new", "owner", milliseconds(60000));
  ASSERT_TRUE(fresh.ok() && fresh->locked && fresh->history.ok());
  EXPECT_TRUE(fresh->history->empty());
}

TEST_F(SessionStoreTest, HotCopyHasTheTtl) {
  SessionStoreOptions options;
  options.ttl = milliseconds(60000);
  options.key_prefix = "ttl:";
  auto store = Connect(options);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->AppendTurn(MakeTurn("ttl", "t-1", {{"user", "hi"}})).ok());
  auto redis = RawRedis(redis_->port());
  for (const char* key : {"ttl:hist:ttl", "ttl:runs:ttl", "ttl:ver:ttl"}) {
    const long long pttl = Integer(redis, {"PTTL", key});
    EXPECT_GT(pttl, 0) << key;
    EXPECT_LE(pttl, 60000) << key;
  }
}

TEST_F(SessionStoreTest, ExpiredHotCopyIsReloaded) {
  SessionStoreOptions options;
  options.ttl = milliseconds(200);
  options.key_prefix = "short:";
  auto store = Connect(options);
  ASSERT_TRUE(store);
  ASSERT_TRUE(
      store->AppendTurn(MakeTurn("expiring", "e-1", {{"user", "a"}, {"assistant", "b"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(testing::Eventually([&] {
    return Integer(redis, {"EXISTS", "short:hist:expiring"}) == 0;
  }));
  auto history = store->LoadHistory("expiring");
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(Contents(*history), (std::vector<std::string>{"a", "b"}));
}

TEST_F(SessionStoreTest, DeleteThenGetIsNotFound) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("doomed", "d-1", {{"user", "bye"}})).ok());
  ASSERT_TRUE(store_->TryLock("doomed", "someone", milliseconds(60000)).value());
  auto deleted = store_->DeleteSession("doomed");
  ASSERT_TRUE(deleted.ok()) << deleted.error().message;
  EXPECT_TRUE(*deleted);
  auto session = store_->GetSession("doomed");
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.error().code, ErrorCode::kSessionNotFound);
  EXPECT_TRUE(store_->LoadHistory("doomed")->empty());
  auto redis = RawRedis(redis_->port());
  EXPECT_EQ(Integer(redis, {"EXISTS", "wf:hist:doomed", "wf:runs:doomed"}), 0);
  // The running turn's lock is its owner's to release; while it holds it, the session is there
  // (a turn of it runs).
  EXPECT_FALSE(store_->TryLock("doomed", "other", milliseconds(100)).value());
  EXPECT_TRUE(*store_->DeleteSession("doomed"));
  ASSERT_TRUE(store_->Unlock("doomed", "someone").ok());
  auto again = store_->DeleteSession("doomed");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  // The id can start over (with a turn that started after the delete; one that started before
  // it is refused, see ATurnThatStartedBeforeADeleteIsNotStoredAfterIt).
  wf::v1::TurnRecord later = MakeTurn("doomed", "d-2", {{"user", "hello again"}});
  later.set_started_unix_ms(UnixNowMs() + 1000);
  ASSERT_TRUE(store_->AppendTurn(later).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("doomed")), (std::vector<std::string>{"hello again"}));
  EXPECT_EQ(store_->GetSession("doomed")->turn_count(), 1u);
}

// A session whose first turn runs (its lock held, nothing stored yet) is there for a DELETE.
TEST_F(SessionStoreTest, ASessionWhoseFirstTurnRunsIsDeleted) {
  ASSERT_TRUE(store_->TryLock("first-running", "turn-1", milliseconds(60000)).value());
  EXPECT_TRUE(*store_->DeleteSession("first-running"));
  wf::v1::TurnRecord cancelled = MakeTurn("first-running", "fr-1", {{"user", "cut short"}});
  cancelled.set_started_unix_ms(UnixNowMs() - 1000);
  ASSERT_TRUE(store_->AppendTurn(cancelled, "turn-1").ok());
  EXPECT_EQ(store_->GetSession("first-running").error().code, ErrorCode::kSessionNotFound);
  EXPECT_FALSE(*store_->DeleteSession("first-running"));  // unlocked by the append
}

// A DELETE while a store of a new session is in progress (its transaction not committed): the
// delete used to see no session, answer "not found", and the store committed after it. It now
// waits for the store, then deletes what it stored.
TEST_F(SessionStoreTest, ADeleteWaitsForAStoreInProgressAndDeletesWhatItStored) {
  pqxx::connection holder(postgres_->url());
  pqxx::work store(holder);
  store.exec(
      "SELECT * FROM wf_append_turn('racing-1', 'racing', '', 'flow', '', 'ok', 0, 0, 1, 1,"
      " '[{\"role\":\"user\",\"content\":\"hi\",\"name\":\"\","
      "\"tool_call_id\":\"\",\"tool_calls\":\"\",\"created_ms\":1}]', '')");
  auto deleted = std::async(std::launch::async, [&] { return store_->DeleteSession("racing"); });
  pqxx::connection watcher(postgres_->url());
  ASSERT_TRUE(testing::Eventually([&] {
    pqxx::nontransaction tx(watcher);
    return tx.exec1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0]
               .as<int>() > 0;
  }));
  EXPECT_EQ(deleted.wait_for(milliseconds(200)), std::future_status::timeout);
  store.commit();
  auto result = deleted.get();
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_TRUE(*result);
  EXPECT_EQ(store_->GetSession("racing").error().code, ErrorCode::kSessionNotFound);
  EXPECT_FALSE(store_->FindRun("racing-1")->has_value());
}

// The other order: a store that comes while a delete of its session is in progress waits for
// it, then sees its tombstone and stores nothing.
TEST_F(SessionStoreTest, AStoreDuringADeleteWaitsAndSeesItsTombstone) {
  pqxx::connection holder(postgres_->url());
  pqxx::work del(holder);
  del.exec("SELECT wf_lock_session_exclusive('racing-2')");
  del.exec_params("INSERT INTO session_deletions (session_id, deleted_ms) VALUES ('racing-2', $1)",
                  UnixNowMs());
  std::vector<wf::v1::TurnRecord> batch = {MakeTurn("racing-2", "r2-1", {{"user", "late"}}),
                                           MakeTurn("racing-3", "r3-1", {{"user", "fine"}})};
  batch[0].set_started_unix_ms(UnixNowMs() - 1000);
  auto stored = std::async(std::launch::async, [&] { return store_->AppendTurns(batch); });
  EXPECT_EQ(stored.wait_for(milliseconds(300)), std::future_status::timeout);
  del.commit();
  ASSERT_TRUE(stored.get().ok());
  EXPECT_FALSE(store_->FindRun("r2-1")->has_value());
  EXPECT_EQ(Contents(*store_->LoadHistory("racing-3")), (std::vector<std::string>{"fine"}));
}

TEST_F(SessionStoreTest, LockIsExclusiveBetweenOwners) {
  const milliseconds lease(60000);
  ASSERT_TRUE(store_->TryLock("locked", "owner-a", lease).value());
  EXPECT_FALSE(store_->TryLock("locked", "owner-b", lease).value());
  EXPECT_TRUE(store_->TryLock("locked", "owner-a", lease).value());  // Re-entrant for the owner.

  // Unlock and renew by a non-owner do nothing.
  EXPECT_TRUE(store_->Unlock("locked", "owner-b").ok());
  EXPECT_FALSE(store_->TryLock("locked", "owner-b", lease).value());
  Status renew = store_->RenewLock("locked", "owner-b", lease);
  ASSERT_FALSE(renew.ok());
  EXPECT_EQ(renew.error().code, ErrorCode::kSessionBusy);

  EXPECT_TRUE(store_->RenewLock("locked", "owner-a", lease).ok());
  EXPECT_TRUE(store_->Unlock("locked", "owner-a").ok());
  EXPECT_TRUE(store_->TryLock("locked", "owner-b", lease).value());
  EXPECT_TRUE(store_->Unlock("locked", "owner-b").ok());
}

TEST_F(SessionStoreTest, AppendingWithTheLockOwnerReleasesTheLockAfterTheTurn) {
  const milliseconds lease(60000);
  ASSERT_TRUE(store_->TryLock("handover", "ho-1", lease).value());
  ASSERT_TRUE(
      store_
          ->AppendTurn(MakeTurn("handover", "ho-1", {{"user", "q1"}, {"assistant", "a1"}}), "ho-1")
          .ok());
  // The next turn gets the lock and, with it, the turn just stored.
  auto next = store_->TryLockAndLoadHistory("handover", "ho-2", lease);
  ASSERT_TRUE(next.ok()) << next.error().message;
  ASSERT_TRUE(next->locked);
  ASSERT_TRUE(next->history.ok());
  EXPECT_EQ(Contents(*next->history), (std::vector<std::string>{"q1", "a1"}));

  // Another owner's name releases nothing; neither does an append without one.
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("handover", "ho-x", {{"user", "x"}}), "ho-1").ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("handover", "ho-y", {{"user", "y"}})).ok());
  EXPECT_FALSE(store_->TryLock("handover", "ho-3", lease).value());

  // A repeat of a stored run (nothing to append) still releases its owner's lock.
  ASSERT_TRUE(
      store_
          ->AppendTurn(MakeTurn("handover", "ho-1", {{"user", "q1"}, {"assistant", "a1"}}), "ho-2")
          .ok());
  EXPECT_TRUE(store_->TryLock("handover", "ho-3", lease).value());

  // Storing refused: the lock stays with its owner (the caller decides).
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("elsewhere", "ho-z", {{"user", "z"}})).ok());
  EXPECT_FALSE(store_->AppendTurn(MakeTurn("handover", "ho-z", {{"user", "z"}}), "ho-3").ok());
  EXPECT_FALSE(store_->TryLock("handover", "ho-4", lease).value());
  EXPECT_TRUE(store_->Unlock("handover", "ho-3").ok());

  // The append fails (here: the hot copy's key holds the wrong type): the turn is stored in
  // PostgreSQL, and the lock is still released rather than left to its lease.
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"SET", "wf:hist:broken-copy", "not a list"}).ok());
  ASSERT_TRUE(store_->TryLock("broken-copy", "bc-1", lease).value());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("broken-copy", "bc-1", {{"user", "b"}}), "bc-1").ok());
  EXPECT_TRUE(store_->TryLock("broken-copy", "bc-2", lease).value());
  auto session = store_->GetSession("broken-copy");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->messages_size(), 1);
}

TEST_F(SessionStoreTest, LockAndLoadReadsTheHistoryOnlyForTheOwner) {
  const milliseconds lease(60000);
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("lock-load", "ll-1", {{"user", "one"}})).ok());

  auto first = store_->TryLockAndLoadHistory("lock-load", "owner-a", lease);
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(first->locked);
  ASSERT_TRUE(first->history.ok()) << first->history.error().message;
  EXPECT_EQ(Contents(*first->history), (std::vector<std::string>{"one"}));

  // Another owner gets neither the lock nor the history; the owner again gets both.
  auto other = store_->TryLockAndLoadHistory("lock-load", "owner-b", lease);
  ASSERT_TRUE(other.ok()) << other.error().message;
  EXPECT_FALSE(other->locked);
  ASSERT_TRUE(other->history.ok());
  EXPECT_TRUE(other->history->empty());
  auto again = store_->TryLockAndLoadHistory("lock-load", "owner-a", lease);
  ASSERT_TRUE(again.ok() && again->locked);

  // The owner's turn is stored before the unlock: the next owner's history has it.
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("lock-load", "ll-2", {{"user", "two"}})).ok());
  ASSERT_TRUE(store_->Unlock("lock-load", "owner-a").ok());
  auto next = store_->TryLockAndLoadHistory("lock-load", "owner-b", lease);
  ASSERT_TRUE(next.ok() && next->locked);
  ASSERT_TRUE(next->history.ok());
  EXPECT_EQ(Contents(*next->history), (std::vector<std::string>{"one", "two"}));
  EXPECT_TRUE(store_->Unlock("lock-load", "owner-b").ok());

  EXPECT_EQ(store_->TryLockAndLoadHistory("bad id!", "o", lease).error().code,
            ErrorCode::kBadRequest);
  EXPECT_EQ(store_->TryLockAndLoadHistory("s", "", lease).error().code, ErrorCode::kBadRequest);
}

TEST_F(SessionStoreTest, LockAndLoadAfterFlushAllReadsPostgresAndRewarms) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("lock-flushed", "lf-1", {{"user", "one"}})).ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("lock-flushed", "lf-2", {{"user", "two"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"FLUSHALL"}).ok());

  // Absent from Redis but stored in PostgreSQL: not mistaken for a new session.
  auto locked = store_->TryLockAndLoadHistory("lock-flushed", "owner", milliseconds(60000));
  ASSERT_TRUE(locked.ok()) << locked.error().message;
  ASSERT_TRUE(locked->locked);
  ASSERT_TRUE(locked->history.ok()) << locked->history.error().message;
  EXPECT_EQ(Contents(*locked->history), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:lock-flushed"}), 2);
  EXPECT_EQ(Integer(redis, {"SCARD", "wf:runs:lock-flushed"}), 2);
  EXPECT_GT(Integer(redis, {"PTTL", "wf:lock:lock-flushed"}), 1000);
  EXPECT_TRUE(store_->Unlock("lock-flushed", "owner").ok());

  // A session that exists nowhere is empty, and nothing is warmed for it.
  auto fresh = store_->TryLockAndLoadHistory("lock-new", "owner", milliseconds(60000));
  ASSERT_TRUE(fresh.ok() && fresh->locked && fresh->history.ok());
  EXPECT_TRUE(fresh->history->empty());
  EXPECT_EQ(Integer(redis, {"EXISTS", "wf:hist:lock-new"}), 0);
  EXPECT_TRUE(store_->Unlock("lock-new", "owner").ok());
}

// A store that has not seen a session's hot copy lately asks PostgreSQL whether the session
// exists while Redis takes the lock: an existing session missing from Redis is still read in
// full and re-warmed, a new one is empty without anything warmed, a deleted one is new again.
TEST_F(SessionStoreTest, ASessionNotSeenLatelyIsLookedUpInPostgresWhileTheLockIsTaken) {
  const milliseconds lease(60000);
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("unseen", "un-1", {{"user", "one"}})).ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("unseen", "un-2", {{"user", "two"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"FLUSHALL"}).ok());

  auto other = Connect();  // another worker: it has seen nothing
  ASSERT_TRUE(other);
  auto locked = other->TryLockAndLoadHistory("unseen", "owner", lease);
  ASSERT_TRUE(locked.ok()) << locked.error().message;
  ASSERT_TRUE(locked->locked);
  ASSERT_TRUE(locked->history.ok()) << locked->history.error().message;
  EXPECT_EQ(Contents(*locked->history), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:unseen"}), 2);
  ASSERT_TRUE(other->AppendTurn(MakeTurn("unseen", "un-3", {{"user", "three"}}), "owner").ok());

  // Its hot copy, now seen, is read as always; a store that has not seen it reads the same.
  auto third = Connect();
  ASSERT_TRUE(third);
  for (SessionStore* store : {other.get(), third.get()}) {
    auto again = store->TryLockAndLoadHistory("unseen", "owner-2", lease);
    ASSERT_TRUE(again.ok() && again->locked && again->history.ok());
    EXPECT_EQ(Contents(*again->history), (std::vector<std::string>{"one", "two", "three"}));
    ASSERT_TRUE(store->Unlock("unseen", "owner-2").ok());
  }

  // New: empty, nothing warmed; its first turn creates the hot copy.
  auto fresh = other->TryLockAndLoadHistory("unseen-new", "owner", lease);
  ASSERT_TRUE(fresh.ok() && fresh->locked && fresh->history.ok());
  EXPECT_TRUE(fresh->history->empty());
  EXPECT_EQ(Integer(redis, {"EXISTS", "wf:hist:unseen-new"}), 0);
  ASSERT_TRUE(
      other->AppendTurn(MakeTurn("unseen-new", "un-new-1", {{"user", "first"}}), "owner").ok());
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:unseen-new"}), 1);

  // Deleted (by this store or another): new again, whatever was seen before.
  ASSERT_TRUE(store_->DeleteSession("unseen").ok());
  ASSERT_TRUE(other->DeleteSession("unseen-new").ok());
  for (const char* id : {"unseen", "unseen-new"}) {
    auto after = other->TryLockAndLoadHistory(id, "owner-3", lease);
    ASSERT_TRUE(after.ok() && after->locked && after->history.ok()) << id;
    EXPECT_TRUE(after->history->empty()) << id;
    ASSERT_TRUE(other->Unlock(id, "owner-3").ok());
  }
}

// The look-up in PostgreSQL while the lock is taken is an optimization: with PostgreSQL down, a
// store that has not seen a session still serves its hot copy, and one that must read
// PostgreSQL fails as before (kUnavailable), and works again once it is back.
TEST_F(SessionStoreTest, TheLookUpOfAnUnseenSessionNeverStandsInTheWay) {
  testing::PostgresServer postgres;
  auto writer = SessionStore::Connect(redis_->url(), postgres.url(), {});
  ASSERT_TRUE(writer.ok()) << writer.error().message;
  ASSERT_TRUE((*writer)->AppendTurn(MakeTurn("pg-down", "pd-1", {{"user", "one"}})).ok());
  auto reader = SessionStore::Connect(redis_->url(), postgres.url(), {});
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  postgres.Stop();

  const milliseconds lease(60000);
  auto hot = (*reader)->TryLockAndLoadHistory("pg-down", "owner", lease);
  ASSERT_TRUE(hot.ok()) << hot.error().message;
  ASSERT_TRUE(hot->locked);
  ASSERT_TRUE(hot->history.ok()) << hot->history.error().message;
  EXPECT_EQ(Contents(*hot->history), (std::vector<std::string>{"one"}));
  ASSERT_TRUE((*reader)->Unlock("pg-down", "owner").ok());

  auto cold = (*reader)->TryLockAndLoadHistory("pg-down-new", "owner", lease);
  ASSERT_TRUE(cold.ok()) << cold.error().message;
  ASSERT_TRUE(cold->locked);
  ASSERT_FALSE(cold->history.ok());
  EXPECT_EQ(cold->history.error().code, ErrorCode::kUnavailable);
  ASSERT_TRUE((*reader)->Unlock("pg-down-new", "owner").ok());

  postgres.Start();
  EXPECT_TRUE(testing::Eventually([&] {
    auto back = (*reader)->TryLockAndLoadHistory("pg-down-new", "owner", lease);
    const bool ok = back.ok() && back->locked && back->history.ok() && back->history->empty();
    if (back.ok() && back->locked) (void)(*reader)->Unlock("pg-down-new", "owner");
    return ok;
  }));
}

// A PostgreSQL that does not answer (here: the sessions table locked by another transaction)
// holds an unseen session's turn only for the look-up's statement timeout: its hot copy is
// served while the lock is still held.
TEST_F(SessionStoreTest, ALookUpThatGetsNoAnswerGivesUpAndTheHotCopyIsServed) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("pg-stuck", "ps-1", {{"user", "one"}})).ok());
  SessionStoreOptions options;
  options.pg_statement_timeout = milliseconds(120000);  // the stores' own: longer than the wait
  auto reader = Connect(options);                       // has seen nothing
  ASSERT_TRUE(reader);
  pqxx::connection holder(postgres_->url());
  pqxx::work lock_tx(holder);
  lock_tx.exec("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE");

  auto load = std::async(std::launch::async, [&] {
    return reader->TryLockAndLoadHistory("pg-stuck", "owner", milliseconds(60000));
  });
  // Without the look-up's own timeout this would wait for the table lock, i.e. forever here.
  ASSERT_EQ(load.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  auto locked = load.get();
  ASSERT_TRUE(locked.ok()) << locked.error().message;
  ASSERT_TRUE(locked->locked);
  ASSERT_TRUE(locked->history.ok()) << locked->history.error().message;
  EXPECT_EQ(Contents(*locked->history), (std::vector<std::string>{"one"}));
  lock_tx.abort();
  EXPECT_TRUE(reader->Unlock("pg-stuck", "owner").ok());
}

/// What a DeferredLookup said, waiting up to 10 s for it.
std::optional<bool> AnswerOf(SessionStore::DeferredLookup& deferred) {
  auto answer = std::make_shared<std::promise<bool>>();
  std::future<bool> future = answer->get_future();
  deferred.Then([answer](bool absent) { answer->set_value(absent); });
  if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return std::nullopt;
  return future.get();
}

// With may_defer_lookup, a hot-copy miss of a session not seen lately returns as soon as Redis
// answered, PostgreSQL's answer to come: "new" for a session it does not hold, else the history
// is read by LoadDeferred (and re-warmed). A hot copy is served as always, with no look-up left.
TEST_F(SessionStoreTest, ADeferredLookUpLetsTheCallerGoOnBeforePostgresAnswers) {
  const milliseconds lease(60000);
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("deferred", "df-1", {{"user", "one"}})).ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("deferred", "df-2", {{"user", "two"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"FLUSHALL"}).ok());

  auto reader = Connect();  // has seen nothing
  ASSERT_TRUE(reader);
  auto stored = reader->TryLockAndLoadHistory("deferred", "owner", lease, 0, true);
  ASSERT_TRUE(stored.ok() && stored->locked) << (stored.ok() ? "" : stored.error().message);
  ASSERT_TRUE(stored->deferred);
  ASSERT_TRUE(stored->history.ok());
  EXPECT_TRUE(stored->history->empty());
  EXPECT_EQ(AnswerOf(*stored->deferred), std::optional<bool>(false));
  auto history = reader->LoadDeferred(*stored->deferred);
  ASSERT_TRUE(history.ok()) << history.error().message;
  EXPECT_EQ(Contents(*history), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:deferred"}), 2);  // re-warmed
  ASSERT_TRUE(reader->Unlock("deferred", "owner").ok());

  // Warm now: read from Redis, nothing deferred.
  auto hot = reader->TryLockAndLoadHistory("deferred", "owner", lease, 0, true);
  ASSERT_TRUE(hot.ok() && hot->locked && hot->history.ok());
  EXPECT_FALSE(hot->deferred);
  EXPECT_EQ(Contents(*hot->history), (std::vector<std::string>{"one", "two"}));
  ASSERT_TRUE(reader->Unlock("deferred", "owner").ok());

  // New: PostgreSQL says so.
  auto fresh = reader->TryLockAndLoadHistory("deferred-new", "owner", lease, 0, true);
  ASSERT_TRUE(fresh.ok() && fresh->locked && fresh->history.ok());
  ASSERT_TRUE(fresh->deferred);
  EXPECT_EQ(AnswerOf(*fresh->deferred), std::optional<bool>(true));
  EXPECT_EQ(Integer(redis, {"EXISTS", "wf:hist:deferred-new"}), 0);
  ASSERT_TRUE(reader->Unlock("deferred-new", "owner").ok());

  // PostgreSQL not answering (the table locked): the call still returns at Redis's answer; the
  // look-up gives up at its statement timeout, which does not count as "new".
  auto stuck_reader = Connect();
  ASSERT_TRUE(stuck_reader);
  pqxx::connection holder(postgres_->url());
  pqxx::work lock_tx(holder);
  lock_tx.exec("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE");
  auto stuck = stuck_reader->TryLockAndLoadHistory("deferred-stuck", "owner", lease, 0, true);
  ASSERT_TRUE(stuck.ok() && stuck->locked && stuck->history.ok());
  ASSERT_TRUE(stuck->deferred);
  EXPECT_EQ(AnswerOf(*stuck->deferred), std::optional<bool>(false));
  lock_tx.abort();
  auto empty = stuck_reader->LoadDeferred(*stuck->deferred);
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(empty->empty());
  ASSERT_TRUE(stuck_reader->Unlock("deferred-stuck", "owner").ok());
}

TEST_F(SessionStoreTest, ExpiredLeaseLetsAnotherOwnerIn) {
  ASSERT_TRUE(store_->TryLock("leased", "crashed-worker", milliseconds(150)).value());
  EXPECT_FALSE(store_->TryLock("leased", "next-worker", milliseconds(60000)).value());
  EXPECT_TRUE(testing::Eventually(
      [&] { return store_->TryLock("leased", "next-worker", milliseconds(60000)).value(); }));
  // The old owner has lost it: renewing fails, unlocking does not release the new owner's lock.
  EXPECT_EQ(store_->RenewLock("leased", "crashed-worker", milliseconds(1000)).error().code,
            ErrorCode::kSessionBusy);
  EXPECT_TRUE(store_->Unlock("leased", "crashed-worker").ok());
  EXPECT_FALSE(store_->TryLock("leased", "crashed-worker", milliseconds(1000)).value());
}

TEST_F(SessionStoreTest, RenewExtendsTheLease) {
  ASSERT_TRUE(store_->TryLock("renewed", "owner", milliseconds(100)).value());
  ASSERT_TRUE(store_->RenewLock("renewed", "owner", milliseconds(60000)).ok());
  auto redis = RawRedis(redis_->port());
  EXPECT_GT(Integer(redis, {"PTTL", "wf:lock:renewed"}), 1000);
}

// A lock lost while its owner still runs (lease ran out, Redis flushed or restarted) is taken
// again by the owner's renewal; it used to stay free for any other turn to take.
TEST_F(SessionStoreTest, RenewTakesBackALockThatWasLost) {
  ASSERT_TRUE(store_->TryLock("lost", "owner", milliseconds(60000)).value());
  auto redis = RawRedis(redis_->port());
  ASSERT_EQ(Integer(redis, {"DEL", "wf:lock:lost"}), 1);
  ASSERT_TRUE(store_->RenewLock("lost", "owner", milliseconds(60000)).ok());
  EXPECT_FALSE(store_->TryLock("lost", "other", milliseconds(60000)).value());
  EXPECT_GT(Integer(redis, {"PTTL", "wf:lock:lost"}), 1000);
  EXPECT_TRUE(store_->Unlock("lost", "owner").ok());
}

TEST_F(SessionStoreTest, ConcurrentAppendsLoseNothingAndKeepRunOrder) {
  constexpr int kThreads = 8;
  constexpr int kRunsPerThread = 5;
  constexpr int kMessagesPerRun = 3;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRunsPerThread; ++r) {
        const std::string run = "t" + std::to_string(t) + "-r" + std::to_string(r);
        std::vector<std::pair<std::string, std::string>> messages;
        for (int m = 0; m < kMessagesPerRun; ++m) {
          messages.emplace_back(m == 0 ? "user" : "assistant", run + "-m" + std::to_string(m));
        }
        if (!store_->AppendTurn(MakeTurn("busy", run, messages)).ok()) ++failures;
        if (!store_->LoadHistory("busy").ok()) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_EQ(failures.load(), 0);

  auto history = store_->LoadHistory("busy");
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), std::size_t{kThreads * kRunsPerThread * kMessagesPerRun});
  std::map<std::string, int> next_run_of_thread;
  for (std::size_t i = 0; i < history->size(); i += kMessagesPerRun) {
    const std::string run = (*history)[i].run_id();
    for (int m = 0; m < kMessagesPerRun; ++m) {
      EXPECT_EQ((*history)[i + m].content(), run + "-m" + std::to_string(m));
    }
    const std::string thread = run.substr(0, run.find('-'));
    EXPECT_EQ(run, thread + "-r" + std::to_string(next_run_of_thread[thread]++));
  }
  auto session = store_->GetSession("busy");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->turn_count(), unsigned{kThreads * kRunsPerThread});
  ASSERT_EQ(session->messages_size(), static_cast<int>(history->size()));
  for (int i = 0; i < session->messages_size(); ++i) {
    ASSERT_EQ(session->messages(i).SerializeAsString(), (*history)[i].SerializeAsString()) << i;
  }
  // Whatever the interleaving did to it, the hot copy (now warm) is exactly PostgreSQL's.
  auto redis = RawRedis(redis_->port());
  auto hot = redis.Command({"LRANGE", "wf:hist:busy", "0", "-1"});
  ASSERT_TRUE(hot.ok());
  ASSERT_EQ(hot->elements.size(), history->size());
  for (std::size_t i = 0; i < hot->elements.size(); ++i) {
    ASSERT_EQ(hot->elements[i].str, session->messages(static_cast<int>(i)).SerializeAsString())
        << i;
  }
  EXPECT_EQ(Integer(redis, {"SCARD", "wf:runs:busy"}), kThreads * kRunsPerThread);
}

TEST_F(SessionStoreTest, TheSameRunStoredByManyAtOnceIsStoredOnce) {
  // A redelivered turn stored by two workers at the same moment: each sees success, PostgreSQL
  // and the hot copy hold one copy. Several rounds, each with a fresh run, to vary the timing.
  constexpr int kWriters = 6;
  for (int round = 0; round < 5; ++round) {
    const std::string run = "dup-" + std::to_string(round);
    const auto turn = MakeTurn("dup", run, {{"user", run + "-q"}, {"assistant", run + "-a"}});
    std::atomic<int> failures{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&] {
        if (!store_->AppendTurn(turn).ok()) ++failures;
      });
    }
    for (auto& writer : writers) writer.join();
    EXPECT_EQ(failures.load(), 0) << run;
  }
  auto session = store_->GetSession("dup");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->turn_count(), 5u);
  std::vector<std::string> expected;
  for (int round = 0; round < 5; ++round) {
    expected.push_back("dup-" + std::to_string(round) + "-q");
    expected.push_back("dup-" + std::to_string(round) + "-a");
  }
  std::vector<std::string> stored;
  for (const auto& m : session->messages()) stored.push_back(m.content());
  EXPECT_EQ(stored, expected);
  EXPECT_EQ(Contents(*store_->LoadHistory("dup")), expected);
}

TEST_F(SessionStoreTest, ARunIdClaimedByTwoSessionsAtOnceGoesToOne) {
  for (int round = 0; round < 5; ++round) {
    const std::string run = "claimed-" + std::to_string(round);
    const std::string a = "claim-a-" + std::to_string(round);
    const std::string b = "claim-b-" + std::to_string(round);
    Status sa, sb;
    std::thread ta([&] { sa = store_->AppendTurn(MakeTurn(a, run, {{"user", "from a"}})); });
    std::thread tb([&] { sb = store_->AppendTurn(MakeTurn(b, run, {{"user", "from b"}})); });
    ta.join();
    tb.join();
    // A writer that lost the race may see a transient failure (retried by its caller); once
    // retried, exactly one session has the run and the other is refused without a trace.
    if (!sa.ok() && sa.error().code == ErrorCode::kUnavailable) {
      sa = store_->AppendTurn(MakeTurn(a, run, {{"user", "from a"}}));
    }
    if (!sb.ok() && sb.error().code == ErrorCode::kUnavailable) {
      sb = store_->AppendTurn(MakeTurn(b, run, {{"user", "from b"}}));
    }
    ASSERT_NE(sa.ok(), sb.ok()) << round;
    const Status& refused = sa.ok() ? sb : sa;
    EXPECT_EQ(refused.error().code, ErrorCode::kBadRequest);
    const std::string& loser = sa.ok() ? b : a;
    auto gone = store_->GetSession(loser);
    ASSERT_FALSE(gone.ok()) << loser << " was left behind";
    EXPECT_EQ(gone.error().code, ErrorCode::kSessionNotFound);
    auto kept = store_->GetSession(sa.ok() ? a : b);
    ASSERT_TRUE(kept.ok());
    EXPECT_EQ(kept->turn_count(), 1u);
  }
}

TEST_F(SessionStoreTest, MissedRedisWriteIsHealedByTheNextAppend) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("healing", "h-1", {{"user", "a"}})).ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("healing", "h-2", {{"user", "b"}})).ok());
  auto redis = RawRedis(redis_->port());
  // As if the Redis write of h-2 had been lost.
  ASSERT_TRUE(redis.Command({"RPOP", "wf:hist:healing"}).ok());
  ASSERT_TRUE(redis.Command({"SREM", "wf:runs:healing", "h-2"}).ok());
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("healing", "h-3", {{"user", "c"}})).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("healing")), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:healing"}), 3);
}

TEST_F(SessionStoreTest, RedeliveryRepairsAMissingTail) {
  const auto turn = MakeTurn("repair", "p-2", {{"user", "second"}, {"assistant", "reply"}});
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("repair", "p-1", {{"user", "first"}})).ok());
  ASSERT_TRUE(store_->AppendTurn(turn).ok());
  auto redis = RawRedis(redis_->port());
  // As if the worker died after the PostgreSQL commit, before the Redis write.
  ASSERT_TRUE(redis.Command({"RPOP", "wf:hist:repair", "2"}).ok());
  ASSERT_TRUE(redis.Command({"SREM", "wf:runs:repair", "p-2"}).ok());
  ASSERT_TRUE(store_->AppendTurn(turn).ok());  // JetStream redelivers it.
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:repair"}), 3);
  EXPECT_EQ(Contents(*store_->LoadHistory("repair")),
            (std::vector<std::string>{"first", "second", "reply"}));
}

TEST_F(SessionStoreTest, UndecodableHotCopyFallsBackToPostgres) {
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("corrupt", "c-1", {{"user", "fine"}})).ok());
  auto redis = RawRedis(redis_->port());
  ASSERT_TRUE(redis.Command({"RPUSH", "wf:hist:corrupt", std::string("\xFF\xFF\xFF", 3)}).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("corrupt")), (std::vector<std::string>{"fine"}));
  EXPECT_EQ(Contents(*store_->LoadHistory("corrupt")), (std::vector<std::string>{"fine"}));
  EXPECT_EQ(Integer(redis, {"LLEN", "wf:hist:corrupt"}), 1);
}

TEST_F(SessionStoreTest, WorksOnPostgresAloneWhenRedisStops) {
  auto own_redis = std::make_unique<testing::RedisServer>();
  auto store = Connect({}, own_redis->url());
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->AppendTurn(MakeTurn("no-redis", "n-1", {{"user", "before"}})).ok());
  EXPECT_TRUE(store->Healthy());
  own_redis->process().Stop();

  ASSERT_TRUE(store->AppendTurn(MakeTurn("no-redis", "n-2", {{"user", "during"}})).ok());
  auto history = store->LoadHistory("no-redis");
  ASSERT_TRUE(history.ok()) << history.error().message;
  EXPECT_EQ(Contents(*history), (std::vector<std::string>{"before", "during"}));
  auto session = store->GetSession("no-redis");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->turn_count(), 2u);
  EXPECT_FALSE(store->Healthy());
  auto lock = store->TryLock("no-redis", "owner", milliseconds(1000));
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.error().code, ErrorCode::kUnavailable);
  auto deleted = store->DeleteSession("no-redis");
  ASSERT_FALSE(deleted.ok());
  EXPECT_EQ(deleted.error().code, ErrorCode::kUnavailable);
}

TEST_F(SessionStoreTest, HotCopiesARedisFailureLeftStaleAreDroppedOnceItAnswers) {
  // Redis stops answering (SIGSTOP) and comes back with what it held before (as after a restart
  // from an append-only file that missed the last writes, or a replica promoted): a turn stored
  // meanwhile is missing from the session's hot copy, and a session deleted meanwhile still has
  // one. The keys are saved (DUMP) before and put back (RESTORE) after: the commands the
  // stopped server finds in its sockets when it resumes would otherwise still run.
  auto own_redis = std::make_unique<testing::RedisServer>();
  auto store = Connect({}, own_redis->url());
  auto other_worker = Connect({}, own_redis->url());
  ASSERT_TRUE(store && other_worker);
  ASSERT_TRUE(store->AppendTurn(MakeTurn("stale-hot", "sh-1", {{"user", "before"}})).ok());
  ASSERT_TRUE(store->AppendTurn(MakeTurn("stale-gone", "sg-1", {{"user", "secret"}})).ok());
  EXPECT_EQ(store->StaleHotCopies(), 0u);
  auto raw = RawRedis(own_redis->port());
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* key :
       {"wf:hist:stale-hot", "wf:runs:stale-hot", "wf:hist:stale-gone", "wf:runs:stale-gone"}) {
    auto dump = raw.Command({"DUMP", key});
    ASSERT_TRUE(dump.ok() && dump->type == RedisReply::Type::kString) << key;
    saved.emplace_back(key, dump->str);
  }

  own_redis->process().Signal(SIGSTOP);
  ASSERT_TRUE(store->AppendTurn(MakeTurn("stale-hot", "sh-2", {{"user", "during"}})).ok());
  auto deleted = store->DeleteSession("stale-gone");
  ASSERT_FALSE(deleted.ok());
  EXPECT_EQ(deleted.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(store->StaleHotCopies(), 2u);
  EXPECT_EQ(store->DropStaleHotCopies(), 0u);  // Redis still silent: nothing dropped, kept
  EXPECT_EQ(store->StaleHotCopies(), 2u);
  own_redis->process().Signal(SIGCONT);
  std::this_thread::sleep_for(milliseconds(300));  // the resumed server runs what it found
  for (const auto& [key, value] : saved) {
    ASSERT_TRUE(raw.Command({"RESTORE", key, "0", value, "REPLACE"}).ok()) << key;
  }

  // The same store drops a stale copy before it locks the session again.
  auto locked = store->TryLockAndLoadHistory("stale-gone", "owner", milliseconds(60000));
  ASSERT_TRUE(locked.ok()) << locked.error().message;
  ASSERT_TRUE(locked->locked);
  ASSERT_TRUE(locked->history.ok());
  EXPECT_TRUE(locked->history->empty()) << "the deleted conversation came back";
  ASSERT_TRUE(store->Unlock("stale-gone", "owner").ok());
  // The others go at the worker's next tick; until then another worker reads the stale copy.
  EXPECT_EQ(Contents(*other_worker->LoadHistory("stale-hot")),
            (std::vector<std::string>{"before"}));
  EXPECT_EQ(store->DropStaleHotCopies(), 1u);
  EXPECT_EQ(store->StaleHotCopies(), 0u);
  EXPECT_EQ(Contents(*other_worker->LoadHistory("stale-hot")),
            (std::vector<std::string>{"before", "during"}));
}

TEST_F(SessionStoreTest, ConnectFailsWhenAServerIsUnreachable) {
  const std::string dead_redis = "redis://127.0.0.1:" + std::to_string(testing::FreePort());
  auto no_redis = SessionStore::Connect(dead_redis, postgres_->url(), {});
  ASSERT_FALSE(no_redis.ok());
  EXPECT_EQ(no_redis.error().code, ErrorCode::kUnavailable);
  const std::string dead_pg =
      "postgresql://postgres:pw-XYZ123@127.0.0.1:" + std::to_string(testing::FreePort()) + "/x";
  auto no_pg = SessionStore::Connect(redis_->url(), dead_pg, {});
  ASSERT_FALSE(no_pg.ok());
  EXPECT_EQ(no_pg.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(no_pg.error().message.find("pw-XYZ123"), std::string::npos);
}

TEST_F(SessionStoreTest, SchemaAppliesOnceWhenStoresStartTogether) {
  {
    pqxx::connection admin(postgres_->url());
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE fresh_schema");
  }
  const std::string fresh_url =
      "postgresql://postgres@127.0.0.1:" + std::to_string(postgres_->port()) + "/fresh_schema";
  std::atomic<int> failures{0};
  std::vector<std::unique_ptr<SessionStore>> stores(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < stores.size(); ++i) {
    threads.emplace_back([&, i] {
      auto store = SessionStore::Connect(redis_->url(), fresh_url, {});
      if (!store.ok()) {
        ADD_FAILURE() << store.error().message;
        ++failures;
        return;
      }
      stores[i] = std::move(*store);
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_EQ(failures.load(), 0);
  // A later start finds everything applied.
  ASSERT_TRUE(SessionStore::Connect(redis_->url(), fresh_url, {}).ok());
  pqxx::connection check(fresh_url);
  pqxx::work tx(check);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM schema_migrations WHERE name = '001_sessions.sql'")[0]
                .as<int>(),
            1);
  SessionStoreOptions options;
  options.key_prefix = "fresh:";
  auto store = SessionStore::Connect(redis_->url(), fresh_url, options);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->AppendTurn(MakeTurn("fresh", "x-1", {{"user", "works"}})).ok());
  EXPECT_EQ(Contents(*(*store)->LoadHistory("fresh")), (std::vector<std::string>{"works"}));
}

// A delete leaves a tombstone: a turn that started before it and is stored after it (the turn the
// delete cancelled, a late flow record) does not bring the session back; a later turn does.
TEST_F(SessionStoreTest, ATurnThatStartedBeforeADeleteIsNotStoredAfterIt) {
  const std::int64_t now = UnixNowMs();
  ASSERT_TRUE(store_->AppendTurn(MakeTurn("tomb", "tomb-1", {{"user", "before"}})).ok());
  ASSERT_TRUE(*store_->DeleteSession("tomb"));
  wf::v1::TurnRecord late = MakeTurn("tomb", "tomb-2", {{"user", "cancelled"}});
  late.set_started_unix_ms(now - 1000);
  ASSERT_TRUE(store_->AppendTurn(late).ok());
  EXPECT_EQ(store_->GetSession("tomb").error().code, ErrorCode::kSessionNotFound);
  EXPECT_TRUE(store_->LoadHistory("tomb")->empty());
  EXPECT_FALSE(store_->FindRun("tomb-2")->has_value());
  wf::v1::TurnRecord fresh = MakeTurn("tomb", "tomb-3", {{"user", "after"}});
  fresh.set_started_unix_ms(now + 60000);
  ASSERT_TRUE(store_->AppendTurn(fresh).ok());
  EXPECT_EQ(Contents(*store_->LoadHistory("tomb")), (std::vector<std::string>{"after"}));
}

TEST_F(SessionStoreTest, FindRunTellsWhichSessionMessageAndAnswerARunHas) {
  EXPECT_FALSE(store_->FindRun("nowhere")->has_value());
  ASSERT_TRUE(store_
                  ->AppendTurn(MakeTurn("find", "find-1",
                                        {{"user", "question"}, {"assistant", "the answer"}}))
                  .ok());
  auto run = store_->FindRun("find-1");
  ASSERT_TRUE(run.ok() && run->has_value());
  EXPECT_EQ((*run)->session_id, "find");
  EXPECT_EQ((*run)->user_message, "question");
  EXPECT_TRUE((*run)->has_answer);
  EXPECT_EQ((*run)->answer, "the answer");
  EXPECT_EQ(store_->FindRun(std::string(129, 'x')).error().code, ErrorCode::kBadRequest);
}

/// Stores a turn of `status` with `messages` (run `<id>-1`), then a complete one (`<id>-2`: "q2",
/// "whole"), in session `id`, and reads the session back as GET /api/v1/session does.
Result<wf::v1::SessionHistory> HistoryAfterATurnOfStatus(
    SessionStore& store, const std::string& id, const std::string& status,
    std::vector<std::pair<std::string, std::string>> messages) {
  wf::v1::TurnRecord turn = MakeTurn(id, id + "-1", std::move(messages));
  turn.set_status(status);
  EXPECT_TRUE(store.AppendTurn(turn).ok());
  EXPECT_TRUE(
      store.AppendTurn(MakeTurn(id, id + "-2", {{"user", "q2"}, {"assistant", "whole"}})).ok());
  return store.GetSession(id);
}

TEST_F(SessionStoreTest, ACancelledTurnsAnswerIsMarkedInTheStoredHistory) {
  auto history = HistoryAfterATurnOfStatus(*store_, "marks", "cancelled",
                                           {{"user", "q"}, {"assistant", "part"}});
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->messages_size(), 4);
  EXPECT_FALSE(history->messages(0).cancelled());
  EXPECT_TRUE(history->messages(1).cancelled());
  EXPECT_FALSE(history->messages(1).failed());
  EXPECT_FALSE(history->messages(3).cancelled());
}

TEST_F(SessionStoreTest, AFailedTurnsAnswerIsMarkedFailedInTheStoredHistory) {
  auto history = HistoryAfterATurnOfStatus(
      *store_, "fails", "error", {{"user", "q"}, {"assistant", "calling"}, {"assistant", "par"}});
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->messages_size(), 5);
  std::vector<bool> failed;
  for (const auto& m : history->messages()) {
    failed.push_back(m.failed());
    EXPECT_FALSE(m.cancelled()) << m.DebugString();
  }
  EXPECT_EQ(failed, (std::vector<bool>{false, true, true, false, false}));
}

// Turns waiting for a session's lock get it in the order of their queue positions.
TEST_F(SessionStoreTest, QueuedOwnersTakeTheLockInPositionOrder) {
  const milliseconds lease(60000);
  ASSERT_TRUE(store_->TryLockAndLoadHistory("queued", "running", lease, 1)->locked);
  EXPECT_FALSE(store_->TryLockAndLoadHistory("queued", "late", lease, 9)->locked);
  EXPECT_FALSE(store_->TryLockAndLoadHistory("queued", "early", lease, 5)->locked);
  ASSERT_TRUE(store_->Unlock("queued", "running").ok());
  // Free, but "early" waits before "late".
  EXPECT_FALSE(store_->TryLockAndLoadHistory("queued", "late", lease, 9)->locked);
  EXPECT_TRUE(store_->TryLockAndLoadHistory("queued", "early", lease, 5)->locked);
  ASSERT_TRUE(store_->Unlock("queued", "early").ok());
  EXPECT_TRUE(store_->TryLockAndLoadHistory("queued", "late", lease, 9)->locked);
  ASSERT_TRUE(store_->Unlock("queued", "late").ok());
  // A waiter that gives up leaves the queue.
  ASSERT_TRUE(store_->TryLockAndLoadHistory("queued", "holder", lease, 20)->locked);
  EXPECT_FALSE(store_->TryLockAndLoadHistory("queued", "quitter", lease, 21)->locked);
  EXPECT_FALSE(store_->TryLockAndLoadHistory("queued", "patient", lease, 22)->locked);
  ASSERT_TRUE(store_->LeaveQueue("queued", "quitter").ok());
  ASSERT_TRUE(store_->Unlock("queued", "holder").ok());
  EXPECT_TRUE(store_->TryLockAndLoadHistory("queued", "patient", lease, 22)->locked);
}

}  // namespace
}  // namespace wf
