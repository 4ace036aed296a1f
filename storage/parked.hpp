// Parked values: a read's result whose value its owner left out of a reply, kept for the
// reader's re-read.
//
// Why: a data link reply (and a Node.execute without a sink) carries values up to the inline
// limit (cluster/convert.hpp); a larger one comes back `streamed`, empty, and the reader asks
// again through RPC with a sink. Meanwhile later ops of the same pipeline — a `delete` or a
// `set` of the same key after the `get` — have already run at the owner, so a fresh re-read
// saw their effect: `get big\r\ndelete big\r\n` answered `END` then `DELETED` (memcached: the
// value, then DELETED). When the reader asks for it (LinkCall.park, execute's `park`), the
// owner parks the first read's result (a pinned_slice keeps its bytes even after its item is
// overwritten or deleted: storage/pinned_slice.hpp) under a token it sends with the streamed
// result; the re-read names the token (op::parked) and gets exactly that result.
//
// Bounds: an entry lives until its re-read takes it, for keep_ms at most, or until newer
// entries push it out (more than max_entries, or more than max_pinned_bytes pinned: each
// segment counted once, at its whole size, since a pinned segment that its shard retired
// still counts in the shard's memory). The newest entry always stays. A re-read whose entry
// is gone runs as a plain read, as before parking existed: its result may then show a later
// op of the pipeline (stats: cluster_parked_dropped counts them) — except a strict entry's
// (park_strict: a result this node got from the key's owner after it placed the op again,
// actors/cluster_route.hpp: a plain read here would read an older copy), which answers
// `unavailable` instead.
//
// Tokens start at a random even point (a restarted owner does not hand out the tokens its
// previous process did) and grow by two; a strict entry's token is odd.
//
// Thread affinity: any thread (one mutex). The I/O loops' link sessions park; the KJ thread
// parks (Node.execute), takes (re-reads) and expires (membership tick). Entries dropped are
// destroyed after the mutex is released (a segment's last pin unmaps it).
#pragma once

#include "storage/ops.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <utility>

namespace bifrost::storage {

class parked_values {
public:
  struct limits {
    size_t max_entries = 1024;
    uint64_t max_pinned_bytes = 64ull << 20;
    uint64_t keep_ms = 10000;  // a reader's re-read follows its reply within milliseconds
  };

  parked_values() : parked_values(limits{}) {}
  explicit parked_values(limits l);

  /// Keeps `r` (a hit with its value) and returns its token (never 0).
  uint64_t park(result r) { return park(std::move(r), clock_ms()); }
  /// The same for a strict entry (see above): its token is odd.
  uint64_t park_strict(result r) { return park(std::move(r), clock_ms(), true); }
  /// True for a strict entry's token: a re-read that finds it gone must not read afresh.
  static bool strict(uint64_t token) noexcept { return (token & 1) != 0; }
  /// The result parked under `token`, removed; false when there is none (taken, expired or
  /// pushed out).
  bool take(uint64_t token, result& out);
  /// Drops entries older than keep_ms.
  void expire() { expire(clock_ms()); }

  /// The same with the time given (tests): milliseconds of clock_ms()'s clock.
  uint64_t park(result r, uint64_t now_ms, bool strict = false);
  void expire(uint64_t now_ms);
  static uint64_t clock_ms();  // std::chrono::steady_clock

  struct counts {
    size_t entries = 0;
    uint64_t pinned_bytes = 0;  // segments (each once) and in-memory values the entries hold
    uint64_t dropped = 0;       // entries dropped unread (expired or pushed out), cumulative
  };
  counts stats() const;
  /// `cache_memlimit`: a new bound on the bytes the entries pin; entries past it go now,
  /// oldest first.
  void set_max_pinned_bytes(uint64_t bytes);

private:
  struct entry {
    result res;
    uint64_t at_ms = 0;
  };
  void hold(const pinned_slice& v);      // mu_ held: counts its pin
  void release(const pinned_slice& v);   // mu_ held
  // mu_ held: moves the oldest entry out into `gone` (destroyed by the caller, unlocked).
  void drop_front(std::vector<result>& gone);

  limits limits_;  // (max_pinned_bytes under mu_: set_max_pinned_bytes)
  mutable std::mutex mu_;
  uint64_t next_token_;
  uint64_t pinned_ = 0;
  uint64_t dropped_ = 0;
  std::map<uint64_t, entry> entries_;  // by token: tokens grow, so begin() is the oldest
  std::unordered_map<const void*, size_t> segments_;  // pinned segment -> entries on it
};

} // namespace bifrost::storage
