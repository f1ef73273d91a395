#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error/error.h"
#include "io/event_loop.h"
#include "nats/connection.h"

namespace wf {

/// The body of a JetStream pull request for `batch` messages that lives `expires` at the
/// server. `no_wait`: the request still waits up to `expires` for a first message, but then
/// ends as soon as the consumer has nothing more (with a 408 status), instead of waiting for the
/// whole batch. Pure.
std::string PullRequestBody(int batch, std::chrono::nanoseconds expires, bool no_wait);

/// How many messages the next pull asks for, given the free slots and the turns running: none
/// without a free slot; one when the last pull left nothing pending in the consumer and at most
/// one turn runs (a pull for one ends with that message, a pull for more ends with a status
/// message after it, a second wake before the turn starts); else the free slots, at most 16.
/// Pure.
int NextPullBatch(int free_slots, int active, bool nothing_pending);

/// What a message on a pull request's inbox is. Status messages carry no data and a `Status`
/// header; everything else is a consumer message.
enum class PullReply {
  kMessage,    ///< A consumer message.
  kHeartbeat,  ///< 100: idle heartbeat or flow control; the request goes on.
  kEnd,        ///< 404 (no messages) or 408 (expired, or nothing more for a no_wait request).
  kRefused,    ///< 409 and anything else: the request ended with an error.
};
/// Classifies by the Status header's value (empty: none) and the data's length. Pure.
PullReply ClassifyPullReply(std::string_view status, std::size_t data_length);

/// The heavy worker's intake of queries: JetStream pull requests for one durable consumer,
/// written by hand on a NATS connection in event-loop mode, so that the thread running that
/// loop is the one the server's message wakes (nats.c's natsSubscription_Fetch blocks its caller
/// on a condition variable that its reader thread signals: a second wake, across vCPUs, before
/// every turn).
///
/// One pull is outstanding at a time, each on its own reply subject (`<inbox>.<n>`), so a
/// status message of an earlier pull (a 408 arriving late) never ends a later one. Consumer
/// messages are handed over whichever pull they answer: a message the server sent is never
/// left unhandled. A pull that neither completes nor ends within `expires` + `grace` (lost in a
/// reconnect) is given up and the next one sent.
///
/// Everything but Wake runs on the loop thread; Start and Stop are called from another thread
/// and wait for the loop.
class PullIntake {
 public:
  struct Options {
    std::string stream;
    std::string consumer;
    std::string api_prefix = "$JS.API";
    std::chrono::milliseconds expires{490};
    std::chrono::milliseconds grace{1000};
    /// Pause after a refused pull (409: e.g. the consumer was deleted or is being re-created).
    std::chrono::milliseconds refused_pause{250};
  };
  /// The next pull's size (NextPullBatch with the caller's numbers), 0 when there is no free
  /// slot: call Wake once one frees up. Loop thread.
  using BatchFn = std::function<int(bool nothing_pending)>;
  /// The consumer messages one read brought, after all of them were read, in order; the callee
  /// owns them (DestroyNatsMsg). Loop thread; the next pull is sent after it returns.
  using MessagesFn = std::function<void(std::vector<natsMsg*> messages)>;

  /// `conn` must be on `loop` (NatsOptions::loop) and outlive the intake.
  PullIntake(NatsConnection& conn, EventLoop& loop, Options options, BatchFn batch,
             MessagesFn messages);
  ~PullIntake();
  PullIntake(const PullIntake&) = delete;
  PullIntake& operator=(const PullIntake&) = delete;

  /// Subscribes the inbox and sends the first pull. Not on the loop thread.
  Status Start();
  /// Any thread: a slot became free. Posts a pull only when the last attempt found none.
  void Wake();
  /// Sends no more pulls, and waits (up to expires + grace) for the last one to end: messages
  /// it brings are handed over as before (the owner settles them). Not on the loop thread; the
  /// loop must be running.
  void Stop();
  /// The subject pulls are sent to.
  const std::string& next_subject() const { return next_subject_; }

 private:
  struct Pull {
    uint64_t id = 0;
    std::string reply;
    int batch = 0;
    int received = 0;
    EventLoop::TimerId give_up = 0;
  };
  void OnReply(const NatsMsgView& msg);
  void DeliverArrived();
  void EndPull();
  void MaybePull();

  NatsConnection& conn_;
  EventLoop& loop_;
  Options options_;
  BatchFn batch_;
  MessagesFn messages_;
  std::string inbox_;
  std::string next_subject_;
  NatsSubscription sub_;
  // Loop thread only.
  uint64_t next_id_ = 1;
  std::optional<Pull> pull_;
  bool nothing_pending_ = true;
  bool stopped_ = false;
  bool deliver_posted_ = false;
  EventLoop::TimerId retry_timer_ = 0;
  std::chrono::steady_clock::time_point paused_until_{};
  std::vector<natsMsg*> arrived_;
  // Set by MaybePull before it asks for a batch, cleared when one is sent: Wake posts only
  // then (no lost wake-up: either the loop sees the freed slot or Wake sees the flag).
  std::atomic<bool> starved_{false};
};

}  // namespace wf
