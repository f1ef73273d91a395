#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace wf {

/// Totals over every connection of one gateway, for /metrics. Shared (by shared_ptr) by the
/// connections' backlogs, so it outlives the last of them whatever the destruction order.
struct WriteBacklogTotals {
  /// Bytes handed to Pistache's write queues and not yet written to a socket, all connections.
  std::atomic<int64_t> queued_bytes{0};
  /// Connections dropped because their backlog would have passed the limit.
  std::atomic<uint64_t> overflows{0};
};

/// The bytes one connection has handed to Pistache's write queue that its socket has not taken
/// yet, held under gateway.max_buffered_bytes_per_connection: a client that reads slowly or not
/// at all costs the gateway at most that much, not everything its answer streams.
///
/// A write that finds the backlog empty is always accepted, whatever its size: it is one answer
/// or event (at most one NATS message once formatted), already in memory, and a client that
/// reads it should get it. Past the limit the backlog is overflowed for good: the connection is
/// to be dropped, and nothing more is accepted.
///
/// Thread-safety: Reserve is called by the connection's writers (never two at once: the HTTP
/// exchange is sequential), Release by the connection's Pistache transport thread, concurrently
/// with it. Lock-free.
class WriteBacklog {
 public:
  WriteBacklog(std::size_t limit, std::shared_ptr<WriteBacklogTotals> totals);
  /// Takes from the totals what is still counted: once the backlog's owner is gone, Pistache has
  /// destroyed the writes it never made (the peer closed), and their bytes with them.
  ~WriteBacklog();
  WriteBacklog(const WriteBacklog&) = delete;
  WriteBacklog& operator=(const WriteBacklog&) = delete;

  /// Counts `n` more bytes as queued; false (nothing counted) when that would take a non-empty
  /// backlog over the limit, or the backlog already overflowed. The first refusal marks the
  /// backlog overflowed and counts one in the totals' `overflows`.
  bool Reserve(std::size_t n);
  /// `n` bytes counted by Reserve left the queue (written, or failed).
  void Release(std::size_t n);

  /// Bytes counted now.
  std::size_t bytes() const { return bytes_.load(std::memory_order_acquire); }
  bool overflowed() const { return overflowed_.load(std::memory_order_acquire); }
  std::size_t limit() const { return limit_; }

 private:
  const std::size_t limit_;
  const std::shared_ptr<WriteBacklogTotals> totals_;
  std::atomic<std::size_t> bytes_{0};
  std::atomic<bool> overflowed_{false};
};

}  // namespace wf
