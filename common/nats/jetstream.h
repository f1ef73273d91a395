#pragma once

#include <nats/nats.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nats/connection.h"

namespace wf {

/// The name of the JetStream stream that holds role `role` ("HEAVY", "HISTORY") for the
/// deployment with subject prefix `subject_prefix`: "<PREFIX>_<ROLE>", the prefix upper-cased
/// and every character a stream name may not hold (anything but A-Z 0-9 _ -) replaced by '_'.
/// Prefix "wf" gives the contract's WF_HEAVY and WF_HISTORY; "t2" gives T2_HEAVY and T2_HISTORY,
/// so deployments sharing one NATS server keep separate streams. (Consumer names live inside a
/// stream and need no prefix.) Pure; any thread.
std::string JetStreamName(std::string_view subject_prefix, std::string_view role);

/// JetStreamName(subject_prefix, "HEAVY"): the agent queries (`<prefix>.heavy.query`).
inline std::string HeavyStreamName(std::string_view subject_prefix) {
  return JetStreamName(subject_prefix, "HEAVY");
}
/// JetStreamName(subject_prefix, "HISTORY"): flow turns to store (`<prefix>.history.append`).
inline std::string HistoryStreamName(std::string_view subject_prefix) {
  return JetStreamName(subject_prefix, "HISTORY");
}

/// What a stream must look like; EnsureStream creates it or updates it to match.
struct StreamSpec {
  std::string name;
  std::vector<std::string> subjects;
  /// Work-queue retention: a message is removed once a consumer acks it.
  bool work_queue = true;
  std::chrono::milliseconds max_age{std::chrono::hours(24)};
  std::chrono::milliseconds duplicate_window{std::chrono::minutes(2)};
  int64_t max_msgs = 1000000;
};

/// Completion of an asynchronous JetStream publish: `stored` is ok once the server stored the
/// message; `duplicate` is true when it was not stored again because the stream already held a
/// message with the same msg_id within the duplicate window (`stored` is then ok too).
using JsPublishDone = std::function<void(Status stored, bool duplicate)>;

/// One `jsCtx*` on a connection. Thread-safe.
class JetStream {
 public:
  /// The callbacks of PublishAsync run on a nats.c thread and must not block.
  static Result<std::unique_ptr<JetStream>> Create(NatsConnection& conn);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  /// Creates the stream, or updates its config when it exists; idempotent and safe when several
  /// processes race. A stream of that name that takes other subjects (another deployment's
  /// prefix whose name maps to the same stream name, or a stream made by someone else) is left
  /// alone: error kBadRequest naming both subject lists. Blocks (start-up only).
  Status EnsureStream(const StreamSpec& spec);
  /// Publishes and calls `done` when the server acknowledged storage (or failed). `msg_id`
  /// (Nats-Msg-Id) makes a republish within the duplicate window a no-op. Never blocks on the
  /// network.
  void PublishAsync(const std::string& subject, std::string_view data, const std::string& msg_id,
                    const NatsHeaders& headers, JsPublishDone done);
  jsCtx* raw() const { return js_; }

 private:
  JetStream() = default;
  static void OnAck(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);

  jsCtx* js_ = nullptr;
  std::mutex mu_;
  uint64_t next_token_ = 0;
  std::unordered_map<uint64_t, JsPublishDone> pending_;
};

/// Formats a jsErrCode/natsStatus pair for messages.
std::string JsErrorText(natsStatus status, jsErrCode code);

}  // namespace wf
