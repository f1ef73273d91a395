#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "error/error.h"
#include "io/timer.h"
#include "nats/connection.h"

namespace wf {

/// Sends the last event of a turn (`final` or `error`) until its receiver confirms it
/// (QueryRequest.confirm_end). A core NATS message is delivered at most once, and only to the
/// subscriptions the server knows at that moment: an answer published while the gateway's
/// connection is being restored after a nats-server restart (the worker's own buffered
/// publishes are flushed as soon as it is back, often first) reaches nobody, and its client
/// would wait for its deadline although the turn is stored. So the event goes out with a reply
/// subject of ours, and again, same bytes, until an empty message comes back on it or the
/// turn's deadline passes.
///
/// The resends are driven by one sweep on the Timer, armed while something awaits
/// confirmation, instead of one timer per event: a confirmation (normally within a millisecond)
/// then costs a map erase, not a timer cancel that wakes the timer thread. Each event is sent
/// again `first_retry` after its last send, doubling up to `max_retry`, until its deadline
/// (and at most `max_wait` after the first send). A "no responders" status on the reply subject
/// (nobody subscribed to the event's subject) is not a confirmation; it does not hasten the
/// next resend either (an event-loop connection drops such statuses anyway).
///
/// A sender that must not let go of something before the event is delivered (wf-heavy keeps its
/// JetStream message unacknowledged, so a worker killed meanwhile leaves the turn to another)
/// passes `on_settled`, called once with the outcome.
///
/// Thread-safe. Publishes on `publish_conn` (the connection the turn's other events went out
/// on, so the last event cannot overtake them); confirmations are read on `reply_conn`.
class EndConfirmer {
 public:
  struct Options {
    std::chrono::milliseconds first_retry{200};
    std::chrono::milliseconds max_retry{5000};
    /// Longest an event is sent again, whatever its deadline says.
    std::chrono::milliseconds max_wait{60000};
    /// Events, and their bytes, awaiting confirmation at most; past either an event is sent
    /// once, unconfirmed. A gateway gone for a minute must not cost more than this in memory.
    std::size_t max_pending = 100000;
    std::size_t max_pending_bytes = 64 << 20;
  };
  struct Stats {
    std::size_t awaiting = 0;  ///< Sent, not confirmed yet.
    uint64_t confirmed = 0;    ///< Confirmations received.
    uint64_t resent = 0;       ///< Sends after the first.
    uint64_t unconfirmed = 0;  ///< Given up at the deadline (or sent once past max_pending).
  };

  /// The outcome of one Send: true when its receiver confirmed it, false when it was given up
  /// (its deadline passed) or never kept for resending (already past its deadline, past the
  /// bounds, or the confirmer stopping). Runs on the thread that learnt it (the reply
  /// connection's, the timer's, or Send's caller), never under the confirmer's lock. Not called
  /// for events still waiting when the confirmer is destroyed.
  using Settled = std::function<void(bool confirmed)>;

  EndConfirmer(NatsConnection& publish_conn, NatsConnection& reply_conn, Timer& timer,
               Options options);
  ~EndConfirmer();
  EndConfirmer(const EndConfirmer&) = delete;
  EndConfirmer& operator=(const EndConfirmer&) = delete;

  /// Subscribes to the reply inbox (and flushes, so the server knows it before the first send).
  Status Start();
  /// Publishes `data` on `subject` with `headers`, then again until confirmed or
  /// `deadline_unix_ms` (Unix epoch ms, as the wire carries it; 0: none, so `max_wait`).
  /// The error is the first publish's (the event is still sent again later). `on_settled`
  /// (optional) learns the outcome; `held_bytes` is what it keeps alive meanwhile, counted with
  /// the event's own bytes against max_pending_bytes.
  Status Send(const std::string& subject, std::string data, NatsHeaders headers,
              int64_t deadline_unix_ms, Settled on_settled = {}, std::size_t held_bytes = 0);
  /// Waits until nothing awaits confirmation, at most `timeout` (shutdown); true when none does.
  bool WaitIdle(std::chrono::milliseconds timeout);
  Stats stats() const;

 private:
  struct Pending {
    std::string subject;
    std::shared_ptr<const std::string> data;  // shared with a sweep's resend in flight
    NatsHeaders headers;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::steady_clock::time_point next_send;
    std::chrono::milliseconds backoff;
    Settled on_settled;
    std::size_t bytes;  // the data's and what on_settled holds
  };
  void OnReply(const NatsMsgView& msg);
  /// mu_ held: removes the entry; returns its on_settled, to be called outside mu_.
  Settled ErasePending(std::unordered_map<uint64_t, Pending>::iterator it);
  /// Timer thread: sends again what is due, drops what is past its deadline, re-arms.
  void Sweep();
  /// mu_ held: arms the sweep unless it is.
  void ArmSweep();

  NatsConnection& publish_conn_;
  NatsConnection& reply_conn_;
  Timer& timer_;
  const Options options_;
  std::string inbox_;
  NatsSubscription sub_;

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Pending> pending_;  // by token, the last part of the reply subject
  std::size_t pending_bytes_ = 0;                  // Pending::bytes summed
  uint64_t next_token_ = 0;
  bool sweep_armed_ = false;
  bool sweeping_ = false;  // A sweep is sending, outside mu_.
  bool stopped_ = false;
  std::condition_variable sweep_done_;
  Timer::TaskId sweep_task_ = 0;
  std::atomic<uint64_t> confirmed_{0}, resent_{0}, unconfirmed_{0};
};

}  // namespace wf
