#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "wf/v1/session.pb.h"

namespace wf {

/// Limits of a TurnBatcher.
struct TurnBatcherOptions {
  /// Longest a recorded turn waits before its batch is sent.
  std::chrono::milliseconds max_delay{5};
  /// A batch is sent as soon as it holds this many turns...
  std::size_t max_turns = 256;
  /// ...or this many serialized bytes (well under NATS's 1 MiB default max_payload).
  std::size_t max_bytes = 256 * 1024;
};

/// Collects flow TurnRecords into TurnRecordBatch messages and hands each batch to `send`,
/// so that the flow path publishes one JetStream message per batch instead of one per turn.
/// A batch is sent when it is full (turns or bytes), `max_delay` after its first turn, or on
/// Flush / destruction. Thread-safe: Add may be called from any thread.
///
/// `send` gets the serialized TurnRecordBatch and the number of turns in it; it runs either on
/// the thread that calls Add (a full batch) or on the batcher's own timer thread, never while
/// the batcher's lock is held, and must not block.
class TurnBatcher {
 public:
  using Send = std::function<void(std::string payload, std::size_t turns)>;

  TurnBatcher(TurnBatcherOptions options, Send send);
  /// Sends what is pending, then stops the timer thread.
  ~TurnBatcher();
  TurnBatcher(const TurnBatcher&) = delete;
  TurnBatcher& operator=(const TurnBatcher&) = delete;

  /// Queues one turn: it is serialized into the pending batch at once, so the caller may build
  /// it on an arena and drop it right after.
  void Add(const wf::v1::TurnRecord& turn);
  /// Sends the pending batch now, if any (on the caller's thread).
  void Flush();
  /// Turns queued and not yet handed to `send`.
  std::size_t Pending() const;

 private:
  using Clock = std::chrono::steady_clock;
  /// Takes the pending batch out under the lock; the caller sends it without the lock.
  bool TakeLocked(std::string& payload, std::size_t& turns);
  void Run();

  const TurnBatcherOptions options_;
  const Send send_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // The pending batch, already in TurnRecordBatch wire form (each turn as field 1), and how
  // many turns it holds. Guarded by mu_.
  std::string batch_;
  std::size_t batch_turns_ = 0;
  Clock::time_point due_{};  // Guarded by mu_: when the pending batch must go.
  bool stopping_ = false;    // Guarded by mu_.
  std::thread timer_;        // Last: starts once everything above exists.
};

}  // namespace wf
