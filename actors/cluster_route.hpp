// Per-op placement in a cluster: where an op's next attempt goes, and what a result means
// for it (read failover, placing again after a ring change, write-on-miss warming).
//
// Pure functions over an immutable cluster_view (actors/cluster_view.hpp): no actor, no
// clock, no I/O, so every decision is unit-tested (tests/actors/test_cluster_route.cpp). The
// connection keeps one op_route per op of a request and calls these on its loop thread.
//
// Ring changes. Member ids are indexes into one ring: an op_route remembers the epoch of the
// ring its `owner` and `tries` refer to. A result that comes back after the node switched to a
// newer ring is judged in the newer ring: the op starts over at that ring's first live owner
// instead of counting tries against a list it was never tried on. (A read refused because its
// owner had just left came back `unavailable`; counting it as a failed try of the new ring sent
// it to the new ring's second owner, which did not hold the key yet: a miss during a graceful
// leave. A leaver is now also still sent to until it exits: cluster/service.cpp, peer_call.)
#pragma once

#include "actors/cluster_view.hpp"
#include "storage/ops.hpp"

#include <cstdint>

namespace bifrost::actors {

/// What the result in flight for an op is (see "Warming" in docs/ARCHITECTURE.md).
enum class warm_phase : uint8_t {
  none,     // the op's own result, from the owner it was placed at
  read,     // a warm read of the key at its previous owner
  restore,  // the previous owner's item being added at the owner; the op runs again after it
  erase,    // a delete's copy at the previous owner
  ahead,    // a warm read before the op runs (add): a hit is added at the owner first
  check,    // a read's hit at the owner, read again at the previous owner (check_source)
};

/// Where one op went (owned by the connection, one per op of a pending request).
struct op_route {
  uint64_t epoch = 0;    // epoch of the ring `owner` and `tries` refer to
  uint32_t owner = 0;    // ring member id the op went to (peer or this node)
  uint8_t tries = 0;     // live owners of that ring already tried (read failover)
  bool local = false;    // served by this node's shards (this node is the primary)
  warm_phase phase = warm_phase::none;
  bool warmed = false;   // warming was started for this op (at most once per ring it is
                         // placed in: place() resets it in a newer one)
  uint8_t warm_next = 0; // warm_source positions before this one were asked (or skipped)
  bool kept = false;     // a store whose value was copied, not moved: it can run again
  bool owners_replicated = false;  // a delete's erase skips the owners now (warm_source)
  bool done = false;     // its final result is in the request's results
  bool held = false;     // not sent yet: an earlier op of its connection on the key is at
                         // work (connection::must_wait)
  bool asked_owner = false;  // its warm or check read went to a node that owns the key now
                             // (owns_now): it may hold a later write's copy already
  bool ahead = false;    // it looks at the previous owners before it runs (warm_first): it
                         // has no result of its own yet
  bool looked = false;   // that look was made (once per ring, as `warmed`; an update whose
                         // look had no answer warms after it ran, as without it)
  uint64_t gone_at = 0;  // the latest delete its warm reads met, at the owner or a previous
                         // owner (storage::result::deleted_cas): an item further back that it
                         // took by the CAS clock (storage::cas_clock_removed: no later, the
                         // expired write itself included) counts as none
  bool lately = false;   // the owner's miss said deleted_lately (storage::result): an item
                         // further back whose CAS is no clock value counts as none too
};

/// How warming treats an op after a ring change, while the owner may not hold a key its
/// previous owner still does.
enum class warm_class : uint8_t {
  read,    // a plain get: a miss is answered (and kept) with the previous owner's item
  update,  // needs the item (touch, gat, mg T/R, incr/decr, ma, append, prepend, replace,
           // cas, md I): when it finds none, the previous owner's item is added first and the
           // op runs again, so it acts on the item the client knew
  remove,  // delete: done at the previous owner too, else a later miss warms the item back
  insert,  // add (and ms in mode E), and an mg or ma with N (vivify): makes an item only
           // when there is none, which it cannot undo once it did: the previous owner's item
           // is added at the owner before it runs
  blind,   // set, flush: they do not depend on an existing item
};
warm_class classify(const storage::op& o) noexcept;

/// An op of class `insert` placed at rt.owner, inside the window and not yet warmed, asks
/// warm_source() for its key before it runs; so does one of class `update` while a ring
/// change is inside its read-check window (cluster_view::check_until_ms): the key's owner
/// may hold an older item than its previous owner, whose view lagged (a later write, or a
/// delete), and the op would act on that (a read of it is checked instead: check_source).
bool warm_first(const cluster_view& cv, const op_route& rt, const storage::op& o,
                int64_t now_ms) noexcept;

/// True when the result of an op of class `update` says it found no item to act on.
inline bool found_nothing(storage::status st) noexcept {
  return st == storage::status::miss || st == storage::status::not_found ||
         st == storage::status::not_stored;
}

/// A store of class `update` must keep its value (send a copy) while it may run again: inside
/// the window, warmed already or not (placed again in a newer ring, it may warm there).
bool may_run_again(const cluster_view& cv, const storage::op& o, int64_t now_ms) noexcept;

enum class placement : uint8_t {
  local,        // this node's shards
  peer,         // cv.peers[rt.owner]
  unavailable,  // every live owner was tried, or the node is joining: not served right now
};

/// Places the op's next attempt in cv's ring: its `rt.tries`-th live owner (primary first).
/// Sets rt.epoch, rt.owner and rt.local. `hash` is cluster::ring::key_hash(key). In a newer
/// ring than its last placement, an op that looked ahead or warmed does so anew (rt.looked,
/// rt.warmed, rt.ahead and rt.warm_next start over).
placement place(const cluster_view& cv, uint64_t hash, op_route& rt) noexcept;

/// What the connection does with a result.
enum class next_step : uint8_t {
  accept,  // the result stands (it may have been rewritten: see after_result)
  place,   // route the op again: place() then send
  warm,    // ask warm_source() for the key before answering
};

/// Judges result `st` of an op whose route is `rt` (its own result: rt.phase is none).
/// `cls`: classify(op); a `read` is safe to repeat after it reached a node. `intact`: the
/// connection still holds the whole op (a store's value goes with the op unless it was kept;
/// it is whole again when the value came back with a not_sent result). `now_ms`: the clock
/// warm_until_ms is measured on.
///  - not_sent (the op never left this node: its owner is gone): placed again if the ring
///    changed since and the op is intact, else it becomes `unavailable` and is judged as such.
///  - unavailable, for a read: the next live owner (of the current ring, from its first owner
///    when the ring changed since).
///  - inside the warming window, once per op and ring it is placed in: a read's miss, or an
///    intact update that found nothing, is placed again when the ring changed since (the new
///    owner may hold it; also after it warmed or looked ahead in the ring it was placed in),
///    else `warm`; a delete that ran (deleted or not found) in the same
///    ring is `warm` (the connection deletes at the previous owner too).
///  - a read's miss, or an update's that found nothing, where the item expired just now or a
///    delete took the key lately (`deleted_lately`: storage::result::deleted_lately) warms
///    only by the CAS clock (`deleted_cas`: storage::result::deleted_cas, which the warm step
///    takes as rt.gone_at; rt.lately is set): the previous owners hold copies the delete's
///    erase chain removed, or a replica that the replication of the write it deleted reached
///    after that (R > 1: a pipelined set + delete, then a get, answered the deleted value),
///    which taken_on_walk counts as none; and a write there after the delete, by a member
///    whose view lagged (the owner judges "lately" by its own view), which answers. With a
///    delete point that is no clock value (0 from an older node, or the expiry of an item
///    whose CAS a client chose: meta E) the result stands.
next_step after_result(const cluster_view& cv, op_route& rt, storage::status& st,
                       warm_class cls, bool intact, int64_t now_ms,
                       bool deleted_lately = false, uint64_t deleted_cas = 0) noexcept;

struct warm_from {
  placement where = placement::unavailable;  // peer: cv.past[depth].peers[id]; local: own shards
  uint8_t depth = 0;                         // index in cv.past
  uint32_t id = 0;                           // member id in cv.past[depth].ring
  uint8_t next = 0;                          // the op_route::warm_next after asking it
};

/// Where an op that missed at rt.owner (in cv's ring) may still find its key. The positions
/// are cv.past's rings, newest first, each with its first live owner (for a delete, `erase`,
/// also the next erase_ranks - 1 owners clockwise); from rt.warm_next on, inside the ring's
/// window, the first whose node
///  - is not the node that missed (rt.owner),
///  - for a delete with rt.owners_replicated (md I made the item stale at rt.owner), is no
///    owner now either: replication brings them the stale item, a delete would remove it,
///  - and was not named at an earlier position (asked already, or about to be).
/// A node dead in the current ring or a newer past one (declared dead since: it lost what it
/// held, or missed the writes meanwhile) ends a read's search (an older owner's copy may be
/// older than what it held); a delete skips it.
/// The connection sets rt.warm_next = next and asks the next source after a miss there, so
/// a key moved by several ring changes inside the window (a rolling restart, two joins) is
/// still found where it was. `unavailable` when no source is left, or the ring changed since
/// the op was placed.
warm_from warm_source(const cluster_view& cv, uint64_t hash, const op_route& rt,
                      int64_t now_ms, bool erase = false) noexcept;

/// The node `from` names (a warm or check source for `hash`) is one of the key's live owners in
/// cv's current ring (with R > 1, the new primary's replica: it gets the primary's writes).
bool owns_now(const cluster_view& cv, uint64_t hash, const warm_from& from) noexcept;

/// Where a plain read that hit at rt.owner (in cv's ring) is read again, or `unavailable`:
/// the warm_source() of a miss, when the ring it names was replaced less than
/// --read-check-window ago (past_ring::check_until_ms). That node may not have heard of the
/// change yet and still take the key's writes (its members' too: they place them by the same
/// ring), while readers that heard read the older copy the new owner holds (warmed, or
/// written before). The connection answers with the later write of the two (by CAS:
/// storage::cas_clock_newer) and adds it at the owner, where it replaces the older item.
warm_from check_source(const cluster_view& cv, uint64_t hash, const op_route& rt,
                       int64_t now_ms) noexcept;

/// Most nodes past_holders() names (each past ring's first R owners, R up to max_erase_ranks).
constexpr size_t max_past_holders = cluster_view::max_past * past_ring::max_erase_ranks;

/// A node named by past_holders(): member `id` of cv.past[depth].ring.
struct past_holder {
  uint8_t depth = 0;
  uint32_t id = 0;
};

/// The nodes that may hold an older copy of a key once a write changed it at its owners: for
/// each past ring inside its window or up to copies_kept_ms after it, its first R live owners (the copies it placed; up to
/// max_erase_ranks), each node once (by name, at the newest ring naming it), that are not
/// among the key's first R live owners in cv's current ring (those have the write) and are
/// not dead there or in a newer past ring (as warm_source counts it). A node that left (no longer in the current ring) is one: it serves warm
/// reads until it exits. This node is one when it is such a past owner. The connection that
/// served the write deletes the key there, so that if the key's owners change back to one of
/// them (the new owner dies, or leaves, inside the window), or a miss at the owner (an
/// eviction, an expiry) warms from them, the value the write replaced does not come back.
/// (Not the further owners a past ring's deletes reach, erase_ranks: copies left from before
/// the rings in the view are dropped by the shards' prune, actors/storage_shard.hpp.)
/// `replicas_too`: also the past owners that are the key's other owners now (not its
/// primary), for a write that left no item (expires_now): replication removes their copy
/// too, but after the write answered, and a read behind it that misses at the primary warms
/// from them meanwhile.
/// Writes `out` (room for max_past_holders); returns the count.
size_t past_holders(const cluster_view& cv, uint64_t hash, int64_t now_ms,
                    past_holder* out, bool replicas_too = false) noexcept;

// -- stale placements -------------------------------------------------------------------------
// A member forwards a client op to the owner *its* ring names. Right after a ring change its
// view may lag (gossip has not reached it): it then sends an op to a node that owned the key
// in the ring before, which stored it locally — where the key's new owner, which may have
// warmed the older value already, never looks (with R = 1 the write was lost for every reader;
// a leaver that took it exited with it). The caller says which ring it placed by
// (cluster::ring::placement: LinkCall.ring, execute's and upload's `ring`). When that is one
// this node has replaced (one of cv.past) and this node is none of the key's live owners in
// its current ring, the op is placed again by the current ring, as this node would place a
// client's (cluster/service.cpp: the item an update or an add needs goes first, as a warm
// copy), and its `routed` count goes up. An op placed max_routed times runs where it
// arrives, whatever that node's ring says: a bound on the hops (rings that flap, A -> B -> A,
// cannot make it cycle). A caller's ring this node does not know may be newer than its own (its own view
// lags): the op runs here, as before.

/// True when `sender_ring` is the placement of one of cv's past rings and not its current
/// one: the sender placed by a ring this node replaced.
bool placed_by_replaced_ring(const cluster_view& cv, uint64_t sender_ring) noexcept;

/// True when this node is among the key's live owners in cv's ring, or no member is.
bool owns(const cluster_view& cv, std::string_view key) noexcept;

/// Times an op may be placed by a node's own ring on its way (storage::op::routed).
constexpr uint8_t max_routed = 2;

/// For a client op of a caller placed_by_replaced_ring() holds for: true when it must be
/// placed again (placed fewer than max_routed times, not a flush nor a re-read of a parked
/// result, and its key not owned here).
bool place_again(const cluster_view& cv, const storage::op& o) noexcept;

/// The store that adds `r` (a hit read of `key`, with its value) where the key is missing:
/// mode add (never over a later write: storage::cas_clock_newer), the same flags, absolute
/// expiry, CAS, stale mark, win token (taken by the read, or before it) and fetched flag.
/// How write-on-miss warming copies an item to its new owner.
storage::op warm_copy(const std::string& key, const storage::result& r);
/// warm_copy of what a client's `read` found at a previous owner, kept at the key's owner:
/// read before (mg h) when that read is a fetch, as it would be at the owner (the look at the
/// previous owner was not one).
storage::op read_copy(const storage::op& read, const storage::result& r);

/// A warm read's answer `r` from a past owner, on rt's walk (rt.gone_at: the latest delete
/// met, at the owner or a past owner; a connection's warm read and a routed one's alike): a
/// miss that names a later delete point raises it; true for a hit the CAS clock counts as
/// taken by it (storage::cas_clock_removed: an item further back than the delete), which the
/// walk takes for a miss; with rt.lately, also for a hit whose CAS is no clock value (a
/// client's meta E), which the clock cannot order after the delete. (A delete's not_found
/// names its point too, and raises it likewise: keeps_owner_answer.)
bool taken_on_walk(op_route& rt, const storage::result& r) noexcept;

/// A delete's erase chain (warm_phase::erase): `own` is the answer so far (the owner's, or a
/// previous owner's that removed or refused the item), `r` the next previous owner's. True
/// when `own` stays the answer: it removed or refused the item (deleted, exists), or found
/// none where a delete took the key lately (result::deleted_lately) and `r` is a copy no
/// later than that by the CAS clock (rt.gone_at: the owner's point, raised by each not_found
/// on the way, as taken_on_walk does) — a replica that the delete's replication had not
/// reached yet; an item written there later (a member whose view lagged) answers, removed
/// (deleted) or refused (exists, for a CAS that does not match it). `invalidate` (md I): its
/// result's CAS is the one it gave the item, which orders nothing.
bool keeps_owner_answer(op_route& rt, const storage::result& own, const storage::result& r,
                        bool invalidate) noexcept;

/// True when rt.owner is an id of cv's current ring (no ring change since the op was placed).
inline bool same_ring(const cluster_view& cv, const op_route& rt) noexcept {
  return cv.ring && cv.ring->epoch() == rt.epoch;
}

/// The placement (cluster::ring::placement) of the ring rt's op was placed in: cv's ring, or
/// the past one of that epoch; 0 when the view holds neither (no caller meets that today:
/// each sends in the ring it just placed by, or after keepable/owner_reachable, same_ring;
/// 0 would let the data link take its loop's ring). A client op sent to a member
/// carries it (LinkCall.ring, execute's and upload's `ring`), taken when the op is placed, not
/// when its batch leaves: the loop's view may change in between (the dispatcher sends at the
/// end of the loop iteration, a data link's batch may wait in its queue), and a member whose
/// ring is that newer one took the op for placed by it, ran it though it owned the key no
/// longer, and `ma k0` answered NF for an item at the new owner (the ring-change sweep, seed
/// 6953, traced).
uint64_t placement_of(const cluster_view& cv, const op_route& rt) noexcept;

} // namespace bifrost::actors
