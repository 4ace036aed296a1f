// Parked values: a read's value that its owner left out of a reply, kept for the reader's
// re-read.
//
// Why: a data link reply (and an RPC execute without a sink) carries values up to the
// inline limit; a larger one comes back `streamed`, empty, and the reader asks again through
// RPC with a sink. Meanwhile later ops of the same pipeline — a `delete`, a `set` of the same
// key after the `get` — have already run at the owner, so a fresh re-read saw their effect:
// `get big\r\ndelete big\r\n` answered `END` then `DELETED` (memcached: the value, then
// DELETED). Now the owner parks the first read's result (its value stays pinned: a
// pinned_slice survives an overwrite or delete of its item) under a token it sends with the
// streamed result; the re-read names the token (storage::op::parked) and gets exactly that
// result, whatever ran since.
//
// Bounds: an entry lives until its re-read takes it, or for keep_ms, or until newer entries
// push it out (more than max_entries, or more than max_bytes of values: the newest is always
// kept). A re-read whose entry is gone runs as a plain read, as before parking existed (its
// result may then show the later ops). Pinned segments count in storage's memory until then.
//
// Thread affinity: any thread (a mutex). The I/O loops' link sessions park; the KJ thread
// parks (Node.execute without a sink), takes (Node.execute of re-reads) and expires (tick).
#pragma once

#include "storage/ops.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

namespace bifrost::cluster {

class parked_values {
public:
  static constexpr size_t max_entries = 1024;
  static constexpr uint64_t max_bytes = 256ull << 20;  // value bytes, all entries together
  static constexpr uint64_t keep_ms = 30000;

  /// Keeps `r` (a hit with its value) and returns its token (never 0).
  uint64_t park(storage::result r) { return park(std::move(r), clock_ms()); }
  /// The result parked under `token`, removed; false when there is none (taken, expired or
  /// pushed out).
  bool take(uint64_t token, storage::result& out);
  /// Drops entries older than keep_ms.
  void expire() { expire(clock_ms()); }

  /// The same with the time given (tests): milliseconds of clock_ms()'s clock.
  uint64_t park(storage::result r, uint64_t now_ms);
  void expire(uint64_t now_ms);
  static uint64_t clock_ms();  // std::chrono::steady_clock

  size_t size() const;
  uint64_t bytes() const;
  /// Entries dropped unread (expired or pushed out) since the start.
  uint64_t dropped() const;

private:
  struct entry {
    storage::result result;
    uint64_t at_ms = 0;
  };
  void drop_front();  // mu_ held

  mutable std::mutex mu_;
  uint64_t next_token_ = 1;
  uint64_t bytes_ = 0;
  uint64_t dropped_ = 0;
  std::map<uint64_t, entry> entries_;  // by token: tokens grow, so begin() is the oldest
};

} // namespace bifrost::cluster
