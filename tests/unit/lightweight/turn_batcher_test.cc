// TurnBatcher: flow turns become TurnRecordBatch messages, each turn sent exactly once.
#include "lightweight/turn_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace wf {
namespace {

using std::chrono::milliseconds;

wf::v1::TurnRecord Turn(const std::string& run_id, std::size_t answer_bytes = 10) {
  wf::v1::TurnRecord turn;
  turn.set_session_id("s-1");
  turn.set_run_id(run_id);
  turn.add_messages()->set_content(std::string(answer_bytes, 'x'));
  return turn;
}

/// Records every batch the batcher sends.
class Sink {
 public:
  TurnBatcher::Send Callback() {
    return [this](std::string payload, std::size_t turns) {
      wf::v1::TurnRecordBatch batch;
      EXPECT_TRUE(batch.ParseFromString(payload));
      EXPECT_EQ(static_cast<std::size_t>(batch.turns_size()), turns);
      std::lock_guard lock(mu_);
      batches_.push_back(std::move(batch));
      cv_.notify_all();
    };
  }
  bool WaitForTurns(std::size_t n, milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return CountLocked() >= n; });
  }
  std::vector<wf::v1::TurnRecordBatch> Batches() {
    std::lock_guard lock(mu_);
    return batches_;
  }
  std::multiset<std::string> RunIds() {
    std::lock_guard lock(mu_);
    std::multiset<std::string> ids;
    for (const auto& b : batches_) {
      for (const auto& t : b.turns()) ids.insert(t.run_id());
    }
    return ids;
  }

 private:
  std::size_t CountLocked() const {
    std::size_t n = 0;
    for (const auto& b : batches_) n += static_cast<std::size_t>(b.turns_size());
    return n;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<wf::v1::TurnRecordBatch> batches_;
};

TEST(TurnBatcherTest, AFullBatchIsSentAtOnceOnTheAddingThread) {
  Sink sink;
  TurnBatcherOptions options;
  options.max_delay = std::chrono::hours(1);  // only the size can trigger a send
  options.max_turns = 3;
  TurnBatcher batcher(options, sink.Callback());
  batcher.Add(Turn("a"));
  batcher.Add(Turn("b"));
  EXPECT_TRUE(sink.Batches().empty());
  EXPECT_EQ(batcher.Pending(), 2u);
  batcher.Add(Turn("c"));
  auto batches = sink.Batches();  // synchronous: no wait needed
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_EQ(batches[0].turns_size(), 3);
  EXPECT_EQ(batches[0].turns(0).run_id(), "a");
  EXPECT_EQ(batches[0].turns(2).run_id(), "c");
  EXPECT_EQ(batcher.Pending(), 0u);
}

TEST(TurnBatcherTest, EachTurnArrivesExactlyAsAdded) {
  // Sizes around the varint boundaries of the length prefix (1, 2 and 3 bytes).
  Sink sink;
  TurnBatcherOptions options;
  options.max_delay = std::chrono::hours(1);
  options.max_turns = 5;
  TurnBatcher batcher(options, sink.Callback());
  std::vector<wf::v1::TurnRecord> added;
  for (std::size_t answer : {0u, 100u, 127u, 20000u, 70000u}) {
    added.push_back(Turn("run-" + std::to_string(answer), answer));
    added.back().set_flow_id("flow");
    added.back().set_finished_unix_ms(1764000000000 + static_cast<int64_t>(answer));
    batcher.Add(added.back());
  }
  auto batches = sink.Batches();
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_EQ(batches[0].turns_size(), 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(batches[0].turns(i).SerializeAsString(),
              added[static_cast<std::size_t>(i)].SerializeAsString())
        << "turn " << i;
  }
}

TEST(TurnBatcherTest, ABatchOverTheByteLimitIsSentAtOnce) {
  Sink sink;
  TurnBatcherOptions options;
  options.max_delay = std::chrono::hours(1);
  options.max_bytes = 1000;
  TurnBatcher batcher(options, sink.Callback());
  batcher.Add(Turn("small", 10));
  EXPECT_TRUE(sink.Batches().empty());
  batcher.Add(Turn("big", 2000));
  ASSERT_EQ(sink.Batches().size(), 1u);
  EXPECT_EQ(sink.Batches()[0].turns_size(), 2);
}

TEST(TurnBatcherTest, ALoneTurnIsSentAfterTheDelay) {
  Sink sink;
  TurnBatcherOptions options;
  options.max_delay = milliseconds(5);
  TurnBatcher batcher(options, sink.Callback());
  batcher.Add(Turn("alone"));
  ASSERT_TRUE(sink.WaitForTurns(1, milliseconds(5000)));
  EXPECT_EQ(sink.RunIds(), std::multiset<std::string>{"alone"});
  // And the timer keeps working for the next batch.
  batcher.Add(Turn("next"));
  ASSERT_TRUE(sink.WaitForTurns(2, milliseconds(5000)));
  EXPECT_EQ(sink.Batches().size(), 2u);
}

TEST(TurnBatcherTest, FlushAndDestructionSendWhatIsPending) {
  Sink sink;
  TurnBatcherOptions options;
  options.max_delay = std::chrono::hours(1);
  {
    TurnBatcher batcher(options, sink.Callback());
    batcher.Flush();  // nothing pending: nothing sent
    EXPECT_TRUE(sink.Batches().empty());
    batcher.Add(Turn("flushed"));
    batcher.Flush();
    EXPECT_EQ(sink.RunIds(), std::multiset<std::string>{"flushed"});
    batcher.Add(Turn("at-exit"));
  }
  EXPECT_EQ(sink.RunIds(), (std::multiset<std::string>{"flushed", "at-exit"}));
}

TEST(TurnBatcherTest, ConcurrentAddsAreEachSentExactlyOnce) {
  Sink sink;
  TurnBatcherOptions options;
  options.max_delay = milliseconds(1);
  options.max_turns = 7;
  constexpr int kThreads = 4, kPerThread = 500;
  {
    TurnBatcher batcher(options, sink.Callback());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          batcher.Add(Turn(std::to_string(t) + "-" + std::to_string(i)));
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  auto ids = sink.RunIds();
  ASSERT_EQ(ids.size(), static_cast<std::size_t>(kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      EXPECT_EQ(ids.count(std::to_string(t) + "-" + std::to_string(i)), 1u);
    }
  }
  for (const auto& batch : sink.Batches()) EXPECT_LE(batch.turns_size(), 7);
}

}  // namespace
}  // namespace wf
