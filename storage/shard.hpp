// A storage shard: the items of one slice of the key space, in append-only segments.
//
// Design (after Segcache, Yang et al., NSDI '21, simplified):
// - Values live in segments (storage/segment.hpp): fixed-size append-only files, memfd by
//   default or files under a data directory. An item is a record: header (magic, lengths,
//   flags, CAS, expiry, checksum) + key + value, written once and never modified except for the
//   header's mutable words (expiry on touch, the "dead" mark on overwrite/delete).
// - The index maps key -> (segment, offset) and is compact (no per-item heap node); metadata
//   lives in the record header, so a million small items cost little beyond their bytes.
// - Overwrites append a new record (copy-on-write). A pinned_slice handed out earlier keeps
//   the old segment mapped until the send finishes.
// - Memory limit: the sum of segment sizes (including retired segments still pinned) stays
//   within `memory_limit`. When a new segment is needed at the limit, the oldest segment is
//   evicted whole: its live items leave the index (counted in `evictions`), and its memory
//   returns when the last pin drops.
// - Space reuse before growth (memfd segments): when the active segment is full, the sparsest
//   of the oldest sealed segments whose live records fill at most half of it (and leave room
//   for the new record), and that no pinned_slice references, is compacted in place instead of
//   taking a new segment: its live records slide to its start, their index entries follow, and
//   it becomes the active segment (moving to the back of the eviction FIFO). Its pages are
//   already mapped, so a workload that overwrites its keys does not fault in fresh memory for
//   every write (memcached reuses freed item memory the same way).
// - Expiry is lazy (checked on access) plus `sweep()`, which the owning actor calls
//   periodically to reclaim expired items and fully dead segments.
// - With a data directory, `open()` rebuilds the index from the segment files; a torn or corrupt
//   record is skipped and counted (`recovery_skipped`), never served.
//
// Thread affinity: a shard is single-threaded. It is owned by exactly one storage shard actor
// (actors/storage_shard.hpp) and only ever touched from inside that actor's handlers. The
// pinned_slices it hands out may be moved to and dropped on any thread; a slice may also
// outlive the shard (the segment and its accounting are reference-counted).
//
// Implementation notes (storage/shard.cpp):
// - Index entry: 16 bytes (storage/index.hpp) holding hash (keyed with a secret drawn per
//   shard: storage/keyed_hash.hpp, against hash flooding), segment slot, offset, last access
//   and the "fetched" and "win token handed out" bits. "Stale" is a bit in the record header's
//   mutable state byte (set when the stale record is written), so it survives a restart; so
//   does "win token handed out", set there too when the token goes (k_state_token).
// - Second chance: when the oldest segment is evicted to make room for a new one, its items
//   that were read since they were stored are re-appended to the new segment (at most half a
//   segment per eviction) instead of being evicted; their "fetched" bit is cleared.
// - flush_all: when it takes effect (at once, or at the first op/sweep at or after the delayed
//   time) every segment is released and the index emptied, so exactly the items stored
//   before that moment are gone; items stored later (even within the same second) live. The
//   segment files leave the data directory, so a restart does not resurrect flushed items.
//   Deviation: memcached's delayed flush compares the item's last-access time, we compare
//   store order. get_flushed therefore stays 0 (flushed items are gone, not lazily found).
// - Meta semantics follow memcached's proto_text.c:
//   * mg N on a miss creates an empty item and returns status::stored ("created", not miss)
//     with win = true, the new item's metadata and (with get_value) an empty slice, because
//     memcached answers that like a hit ("VA 0 ... W" / "HD W") and counts it in get_hits. If
//     it cannot be created the result is a plain miss. Later readers get already_won (Z)
//     until the item is replaced.
//   * mg R wins when the remaining TTL is below recache_ttl and no token was handed out.
//   * A stale item (md I, or ms I with an older CAS) reports stale; its first reader wins.
//   * A CAS value on ms set/replace makes it a CAS store; ms I with a CAS lower than the
//     item's stores the value as stale, keeping TTL and token.
//   * md I keeps the item as stale with a new CAS, the token cleared, and a new TTL from `ttl`
//     when get_touch is set (md T) or ttl != 0.
//   * ma N creates the item with `initial` (TTL from vivify_ttl, else ttl) and returns hit
//     with number = initial; ma with get_touch (T) sets the TTL from `ttl` on success.
// - Arithmetic always appends a new record with the exact decimal value and a new CAS.
// - Keys must be 1..250 bytes (the connection validates; otherwise gets miss, stores
//   not_stored, deletes/arith/touch not_found).
#pragma once

#include "storage/ops.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace bifrost::storage {

struct shard_config {
  uint32_t id = 0;                       // shard number; names files in the data directory
  uint64_t memory_limit = 64ull << 20;   // bytes of segments this shard may hold
  uint32_t segment_size = 1u << 20;      // bytes per segment; a larger item gets its own
  uint64_t max_item_size = 1ull << 20;   // max value bytes (memcached -I)
  std::string data_dir;                  // empty: memfd segments, nothing survives a restart
  /// Called on the shard's thread with one line when a full data directory made the shard
  /// evict segments early (storage_disk_full_evictions): at the first such eviction, then at
  /// most once a minute (shard clock) while they go on, with the count since the last line.
  /// Empty: no lines (the counter still counts).
  std::function<void(const std::string&)> warn;
};

/// Per-shard counters; plain struct so that the node can sum shards with +=.
struct shard_stats {
  uint64_t curr_items = 0;        // live items in the index
  uint64_t total_items = 0;       // items ever stored
  uint64_t bytes = 0;             // bytes of live records (header + key + value)
  uint64_t evictions = 0;         // live items removed to make room
  uint64_t expired_unfetched = 0;
  uint64_t evicted_unfetched = 0;
  uint64_t reclaimed = 0;         // expired items the sweep, an eviction or the cluster's own
                                  // ops took (a client's op that finds one counts it in
                                  // get_expired, as memcached does)
  uint64_t segments = 0;          // segments currently held (active + retired-pinned)
  uint64_t segment_bytes = 0;     // bytes of those segments
  uint64_t index_bytes = 0;       // bytes of the item index (memcached's hash_bytes)
  uint64_t get_hits = 0, get_misses = 0, get_expired = 0, get_flushed = 0;
  uint64_t cmd_set = 0, cmd_touch = 0, touch_hits = 0, touch_misses = 0;
  uint64_t delete_hits = 0, delete_misses = 0;
  uint64_t incr_hits = 0, incr_misses = 0, decr_hits = 0, decr_misses = 0;
  uint64_t cas_hits = 0, cas_misses = 0, cas_badval = 0;
  uint64_t store_no_memory = 0;   // clients' storage commands refused for want of room
  uint64_t recovered_items = 0;   // items rebuilt from the data directory at open()
  uint64_t recovery_skipped = 0;  // torn or corrupt records skipped at open()
  uint64_t disk_full_evictions = 0;  // segments evicted because the data directory was full
  uint64_t pruned = 0;            // items prune() dropped (keys a cluster node no longer owns)
  /// Deleted keys (as deletes) and items (as copies) handed back to members alive again
  /// (counted by actors/storage_shard, not here).
  uint64_t handed_back = 0;
  uint64_t handed_back_copies = 0;
  /// Deleted keys not kept for that, over the bound (actors/storage_shard).
  uint64_t hand_back_dropped = 0;
  /// Copies refused for a key deleted here lately (shard::guard_copies).
  uint64_t copies_refused = 0;
  /// Copies of another node's state older than the item here (not applied), and copies
  /// (warming, re-replication, hand-backs) that replaced an older item (shard::execute,
  /// cas_clock_newer).
  uint64_t copies_superseded = 0;
  uint64_t copies_replaced = 0;
  /// Copies sent to keys' new owners after ring changes (R > 1, actors/storage_shard), of
  /// them the copies of deletes (shard::recent_deletes), and passes done again because a
  /// copy was not taken.
  uint64_t rereplicated = 0;
  uint64_t rereplicated_deletes = 0;
  uint64_t rereplicate_redone = 0;

  shard_stats& operator+=(const shard_stats& o);
};

/// The most shards a node runs (--shards 1..1024), so the most shard directories a data
/// directory may hold.
inline constexpr uint32_t k_max_shards = 1024;

/// The file in a data directory (beside the shard directories) that the node using it
/// holds an exclusive flock on (actors/node.cpp).
inline constexpr const char* data_dir_lock_name = "lock";

/// Shards of a data directory (`<dir>/shard-<id>`, one per shard, made at open): their
/// number, or 0 when there are none (or `dir` does not exist). Keys are hashed over the
/// shards, so a node must reopen a data directory with the same count: with another, the
/// recovered items sit in shards their keys no longer hash to (misses, and old values back
/// once the count is restored). The directories must be exactly shard-0 .. shard-<n-1>: an
/// entry named shard-* that is not one of them (a gap, a file, another spelling, an id past
/// the limit) sets `error` (naming it) and returns 0, rather than change the count. So does
/// a `dir` this user cannot read and write, or could not make (a file on its path, a symbolic
/// link to nothing, a parent it may not write in).
uint32_t data_dir_shards(const std::string& dir, std::string& error);

/// Clock in unix seconds; injectable so tests control expiry.
using clock_fn = std::function<uint32_t()>;
uint32_t system_clock_seconds();

/// CAS values are unique across all shards of a process, and never 0 (0 means "no CAS").
/// They follow a hybrid clock: each is above every CAS handed out or observed, and at least
/// the wall clock in microseconds times 256 (restart_cas_floor), so CAS values of different
/// nodes order their writes in time (to within the nodes' clock offset).
uint64_t next_cas();
/// CAS values from this clock are at least this (2020-01-01 in microseconds, times 256), and
/// at most an hour ahead of this node's clock (k_cas_clock_slack). Others (a client's meta E
/// such as a memcached counter value, or one far in the future) order nothing. A client's E
/// inside that range is taken as a clock value.
inline constexpr uint64_t k_cas_clock_min = uint64_t{1577836800} * 1000000u << 8;
inline constexpr uint64_t k_cas_clock_slack = uint64_t{3600} * 1000000u << 8;
/// True when CAS `a` says a later write than `b`: both clock values (above), a above b. How
/// copies of stored items between nodes are ordered (shard::execute: replicated state never
/// replaces a later write, and an add that is a copy replaces an earlier one). Deletes carry
/// no CAS and are not ordered. Reads the clock.
bool cas_clock_newer(uint64_t a, uint64_t b) noexcept;
/// `c` is a value on the CAS clock (what cas_clock_newer orders). Reads the clock.
bool cas_clocked(uint64_t c) noexcept;
/// A delete (an expiry, a flush_all) at `point` on the CAS clock took the write of CAS `cas`:
/// that write is not later than it (an expiry's point is the CAS of the write it removed,
/// so equal counts as taken). An unordered value (no clock value, or no point: 0) is not.
/// Reads the clock.
bool cas_clock_removed(uint64_t cas, uint64_t point) noexcept;
/// After recovery: make sure next_cas() returns values above `seen`. Values of 2^62 and more
/// are ignored: the counter never gets there, so they were chosen by a client (meta `E`), and
/// following them could wrap the counter.
void observe_cas(uint64_t seen);
/// The CAS a write of `o` gets: its explicit one (observed, see observe_cas), else next_cas().
uint64_t cas_for(const op& o);
/// CAS values must stay above those a previous process handed out (with a data directory,
/// for items that are gone from disk: deleted, overwritten, flushed), and apart from those
/// of the cluster's other nodes (a key whose owner changes without a copy, after a join or
/// with R=1, must not get a CAS a client still holds for its old value): open() raises the
/// counter to the wall clock in microseconds times 256 (a process started earlier would have
/// had to issue over 256 CAS values per microsecond of head start to get there). Exposed
/// for tests.
uint64_t restart_cas_floor();
/// The last CAS value handed out or observed in this process (next_cas() returns more).
uint64_t current_cas();
/// A cluster node that (re)joins its cluster marks it: what it stores from now on gets a CAS
/// above the mark, so a remove with `hand_back` set (a delete another node hands back for
/// what it wrote while this node was away) removes only items stored before (see
/// actors/storage_shard.hpp). Until the first mark, every item counts as before.
void mark_return();
/// After a restart's flush nothing from before is left: no hand-back removes anything.
void clear_return_mark();
uint64_t return_mark();

class shard {
public:
  /// Opens the shard: creates the first segment, or with a data directory recovers every
  /// segment file of this shard id found there. Errors (unwritable dir, memfd_create failing)
  /// are returned as a message naming the path/syscall; never thrown.
  static std::unique_ptr<shard> open(const shard_config& cfg, clock_fn clock, std::string& error);

  ~shard();
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;

  /// Executes one op. Never throws; storage failures come back as status::no_memory.
  result execute(op& o);

  /// Executes a batch in order (results in op order), as execute() one by one, but first
  /// prefetches the index slots and then the record headers the ops will look at, so that a
  /// batch waits for its cache misses in parallel instead of one after another.
  void execute(op_batch& ops, result_batch& out);

  /// Reclaims expired items (fully dead segments are released as soon as their last item
  /// dies); bounded work (`max_items` index slots visited, resuming where the last call
  /// stopped). Also applies a delayed flush_all whose time has come. Returns the number of
  /// items reclaimed.
  size_t sweep(size_t max_items = 4096);

  /// Drops, in bounded steps, the live items whose key `drop` selects and that were neither
  /// stored nor read since `untouched_since` (unix seconds, the shard's clock): a cluster
  /// node's copies of keys it owns in no ring it still knows (actors/storage_shard.hpp); a
  /// recent write may come from a member whose view is ahead of this node's. begin_prune()
  /// starts a pass over the whole index; each prune() visits at most `max_slots` index slots,
  /// resuming where the last call stopped (from the first slot again when the index was
  /// resized meanwhile; erasures meanwhile, which shift later entries back, and second
  /// chance's re-inserts move the cursor back to where they put an entry it has not looked
  /// at: item_index::watch), and says when every slot was visited and how many items `drop`
  /// selected but were too recent. A dropped item is gone as a deleted one is (also from the
  /// data directory).
  struct prune_progress {
    size_t dropped = 0;
    size_t recent = 0;  // selected, but stored or read since untouched_since: kept
    bool done = false;
  };
  void begin_prune();
  /// `seen`, when given, is called with every live item the call visits, before it is
  /// dropped or kept: its key and CAS (a pass may show an item twice when the index moved
  /// entries meanwhile).
  prune_progress prune(const std::function<bool(std::string_view key)>& drop,
                       uint32_t untouched_since, size_t max_slots = 4096,
                       const std::function<void(std::string_view key, uint64_t cas)>& seen = {});

  /// Copies that land after a delete: while on (`seconds` > 0), every counted remove (a
  /// client's or its replication; not md I, not the cluster's own) notes its key and the CAS
  /// clock's value then (a delete's copy: its own point; an item found expired: its CAS)
  /// (at most 65,536, the oldest forgotten first), and an add that is a
  /// copy of another node's item (op::copy: warming, re-replication) is refused (not_stored,
  /// stat copies_refused) when a delete of its key or a flush_all took effect here in the
  /// last `seconds` and the item it copies was not written after it by the CAS clock
  /// (cas_clock_newer; a CAS that is no clock value counts as older): such a copy was read
  /// before the delete reached the node it came from, and would bring the key back. In those
  /// `seconds` after a flush_all, a copy that is no add (replication's) is refused too when
  /// the write it copies came before the flush by the CAS clock: R > 1, a write then a
  /// flush_all, the write's copy still on its way to this replica; and a replication's set
  /// copy when a delete of its key noted here has a point later than that write by the CAS
  /// clock (cas_clock_newer: unordered values, a client's meta E, are taken): a retried
  /// copy, or one from the other side of a healed partition, read before the delete where
  /// it came from. A cluster node turns it on
  /// (actors/storage_shard.hpp); 0 turns it off and forgets what was noted.
  void guard_copies(uint32_t seconds);
  /// Deletes as state to copy (re-replication, actors/storage_shard.hpp): the keys noted by
  /// guard_copies in its last seconds (the latest note of each) that have no live item here
  /// now, oldest first; and for one key, the CAS clock's value its note took (0: none in
  /// those seconds, or the key has a live item). A delete's copy is a remove with op::copy
  /// and that value as op::explicit_cas: it spares only an item later than it by the CAS
  /// clock (`exists`), and is noted here with that value, as a delete (older copies of the
  /// item are then refused).
  void recent_deletes(const std::function<void(std::string_view key)>& each);
  uint64_t recent_delete(std::string_view key);
  /// The node's view names a new ring (a member joined, left or died): a read's miss of a
  /// key deleted here before now warms from the key's past owners again
  /// (result::deleted_lately counts only the deletes after it).
  void ring_changed();

  /// `cache_memlimit`: the shard may hold `bytes` of segments from now on (at least two
  /// segments). A write that needs room evicts down to it; shrink() evicts the oldest
  /// segments beyond it now, at most `segments` a call (segments a reply pins still count
  /// until it is written): true while more remain beyond it.
  void set_memory_limit(uint64_t bytes);
  bool shrink(size_t segments);

  const shard_stats& stats() const;
  const shard_config& config() const;

  struct impl;
private:
  explicit shard(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Converts memcached's raw exptime to absolute unix seconds (0 = never); negative -> 1 (past).
uint32_t absolute_exptime(int64_t raw, uint32_t now);
/// `o` sets its item's expiry at or before `now` (absolute_exptime of its ttl): once it ran
/// there is no item, as after a delete.
bool expires_now(const op& o, uint32_t now);

} // namespace bifrost::storage
