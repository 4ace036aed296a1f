// How late a member's data call reaches this node, from the clock stamp its sender put on it.
//
// A forwarded client op that its caller gave up on (answered SERVER_ERROR unavailable when its
// RPC timeout ran out: this node was stopped, or a cut held the bytes) must not run when it
// finally arrives: it would be stamped with this node's clock then and win over the writes
// acknowledged meanwhile at the key's other owners, for good. So the sender stamps each data
// call with its steady clock (LinkCall.sentAtMs, Node.execute/upload's sentAtMs) and its RPC
// timeout, and the owner refuses a client call that comes later than that timeout
// (data_link.cpp's link_session, service.cpp's node_server).
//
// The two steady clocks (of two hosts) differ by an unknown offset, so lateness is measured
// against the smallest difference (arrival − stamp) seen on the connection lately: that
// offset plus the quickest delivery. A call whose difference exceeds it by more than the
// sender's timeout came later than the sender waited. The smallest difference is kept over
// the last one to two buckets of bucket_ms (a bucket turns over only when a call arrives, so
// a stop of this node keeps the one before it), and the clocks may drift apart by up to
// drift_ppm over the age of the older bucket, which is added to the allowance. Every stamped
// message on the connection feeds the baseline (replicated state and warm reads as well as
// client calls, and an RPC connection's hello); the first sets it and is never late (a
// connection's first data call follows its greeting, which needs this node to answer).
//
// arrival_clock is pure (no clock of its own, no I/O): the caller passes both times, read
// with steady_now_ms() on either side. Thread affinity: one per connection, used by the thread
// that reads it.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>

namespace bifrost::cluster {

/// When a data call was sent (its sender's steady_now_ms()) and how long its sender waits for
/// it (ms): LinkCall.sentAtMs/timeoutMs, Node.execute/upload's (0: not said).
struct call_stamp {
  uint64_t sent_ms = 0;
  uint32_t timeout_ms = 0;
};

/// The clock both sides of a data call stamp and compare with, in milliseconds:
/// CLOCK_MONOTONIC_RAW, which NTP does not slew (chrony slews the monotonic clock by up to
/// 8 % while it corrects an offset: a host doing so would see every call late for a while).
inline uint64_t steady_now_ms() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

class arrival_clock {
public:
  static constexpr uint64_t bucket_ms = 30000;
  static constexpr uint64_t drift_ppm = 100;

  /// Milliseconds by which a call stamped `sent_ms` (its sender's steady clock) that arrives
  /// at `now_ms` (this node's) is later than the quickest arrival lately, less the drift
  /// allowance; 0 when it is not later. Records the arrival.
  uint64_t late_ms(uint64_t sent_ms, uint64_t now_ms) noexcept {
    const int64_t d = static_cast<int64_t>(now_ms - sent_ms);  // (offsets wrap: two's complement)
    if (!any_) {
      any_ = true;
      cur_min_ = prev_min_ = d;
      cur_start_ = prev_start_ = now_ms;
      return 0;
    }
    if (now_ms - cur_start_ >= bucket_ms) {  // turn over: the current bucket becomes the older
      prev_min_ = cur_min_;
      prev_start_ = cur_start_;
      cur_min_ = d;
      cur_start_ = now_ms;
    }
    cur_min_ = std::min(cur_min_, d);
    const int64_t base = std::min(prev_min_, cur_min_);
    const uint64_t late = static_cast<uint64_t>(d - base);
    const uint64_t drift = (now_ms - prev_start_) * drift_ppm / 1000000;
    return late > drift ? late - drift : 0;
  }

private:
  bool any_ = false;
  int64_t cur_min_ = 0, prev_min_ = 0;
  uint64_t cur_start_ = 0, prev_start_ = 0;
};

/// Whether a member's client call `late` ms late (arrival_clock) is refused, for a sender whose
/// RPC timeout is `timeout_ms` (0: not said, an older node or a tool): past the timeout the
/// sender has answered its client, unless this node held the call back itself (`held_back`:
/// it stopped reading for its own replies, while the sender saw it at work) — then only past
/// the longest a sender waits for a call whose member answers others (`queued_factor`).
inline bool refuse_late(uint64_t late, uint32_t timeout_ms, bool held_back,
                        uint32_t queued_factor) noexcept {
  if (timeout_ms == 0)
    return false;
  return late > (held_back ? uint64_t{queued_factor} * timeout_ms : uint64_t{timeout_ms});
}

/// How much longer the sender of a call that refuse_late did not refuse still waits for it
/// (ms, at least 1): what a call that places its ops again on another member may be given
/// (storage::op::answer_by_ms), so that the op is refused there too once its sender gave up.
/// 0: the sender said no timeout.
inline uint64_t budget_left(uint64_t late, uint32_t timeout_ms, bool held_back,
                            uint32_t queued_factor) noexcept {
  if (timeout_ms == 0)
    return 0;
  const uint64_t limit =
    held_back ? uint64_t{queued_factor} * timeout_ms : uint64_t{timeout_ms};
  return late >= limit ? 1 : limit - late;
}

/// The same as a time: when the sender gives up on a call that `arrived` (steady_now_ms)
/// `late` ms late and was not refused. 0: the sender said no timeout.
inline uint64_t answer_deadline(uint64_t arrived, uint64_t late, uint32_t timeout_ms,
                                bool held_back, uint32_t queued_factor) noexcept {
  const uint64_t left = budget_left(late, timeout_ms, held_back, queued_factor);
  return left == 0 ? 0 : arrived + left;
}

}  // namespace bifrost::cluster
