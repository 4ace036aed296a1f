// The storage operations a shard executes, and their results.
//
// These are plain values (no sockets, no protocol text): the connection actor translates a
// parsed memcached request (text or meta) into one `op`, the shard executes it against its
// items, and the connection composes the protocol response from the `result`. All memcached
// semantics that concern items (store modes, CAS, arithmetic, TTL, meta's vivify / recache /
// stale / win tokens) live in the shard; all protocol spelling lives in the connection.
//
// Time: `ttl` fields carry memcached's raw exptime convention (0 = never; 1..2592000 =
// seconds from now; larger = absolute unix time; negative = already expired). The shard
// converts with its clock. Results carry absolute unix seconds (`exptime`, 0 = never).
#pragma once

#include "storage/pinned_slice.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace bifrost::storage {

enum class op_kind : uint8_t {
  get,       // read; see get_* fields
  store,     // write; see store_mode
  remove,    // delete (or mark stale with `invalidate`)
  arith,     // incr / decr
  touch,     // update TTL only
  flush,     // flush_all: every item stored before `ttl` (raw exptime; 0 = now) becomes invalid
};

enum class store_mode : uint8_t { set, add, replace, append, prepend, cas };

enum class status : uint8_t {
  hit,          // get/touch/arith found the item
  miss,         // not found (NOT_FOUND / END / EN)
  stored,       // STORED / HD; also get with vivify that created the item (mg N: VA/HD + W)
  not_stored,   // NOT_STORED / NS (add on existing, replace/append/prepend on missing)
  exists,       // EXISTS / EX (CAS mismatch)
  not_found,    // NOT_FOUND / NF (cas, delete, arith, touch on missing)
  deleted,      // DELETED / HD
  too_large,    // value above the max item size: SERVER_ERROR object too large for cache
  no_memory,    // could not make room: SERVER_ERROR out of memory storing object
  non_numeric,  // arith on a value that is not a decimal uint64
  ok,           // flush
  unavailable,  // the owning node could not be reached: SERVER_ERROR unavailable
  not_sent,     // cluster-internal: the op never left this node (its owner was declared dead);
                // the connection places it again on a newer ring, else reports `unavailable`
};

struct op {
  op_kind kind = op_kind::get;
  std::string key;    // raw key bytes (already base64-decoded by the connection)
  std::string value;  // store: the data block (without the trailing \r\n)

  // -- store --
  store_mode mode = store_mode::set;
  uint32_t flags = 0;
  int64_t ttl = 0;            // store/touch/flush, ma T, gat/mg T: raw memcached exptime
  uint64_t compare_cas = 0;   // store(cas)/remove/arith: 0 = no CAS check
  bool cas_given = false;     // remove: compare_cas was given, also as 0 (meta md C0, which
                              // no item matches: EX, as memcached)
  bool invalidate = false;    // meta I flag: ms → if CAS older, store as stale; md → mark stale
  uint64_t explicit_cas = 0;  // meta E flag: use this CAS value instead of a new one (0 = new);
                              // flush: its point on the CAS clock, taken where it was sent
  bool as_stale = false;      // store: the item is stored stale (meta X): a copy of a stale
                              // item (replication, warming)
  bool token_out = false;     // store (a copy): its win token is out already (meta Z)
  bool as_fetched = false;    // store (a copy): the item was read before (meta h1). An add
                              // copy of the write held (same CAS, length and flags) stores
                              // nothing but brings both to it
  bool copy = false;          // store: a copy of another node's item (storage::item_copy); as
                              // an add, refused for a key deleted lately (shard::guard_copies);
                              // remove: a copy of another node's delete (storage::delete_copy)
  bool hand_back = false;     // remove: only an item stored before this node's last return
                              // to its cluster (storage::return_mark) and, with explicit_cas,
                              // older than the sender's item (that CAS), else `exists`; with
                              // `copy`, a delete's copy (its point) as any;
                              // store: a hand-back's copy (counted as such, ordered as any
                              // copy by the CAS clock)

  // -- get --
  bool get_value = true;      // false: metadata only (mg without v) - no slice is pinned
  bool get_touch = false;     // gat/gats, mg T: set TTL to `ttl` on hit
  bool get_bump = true;       // count as an access (last-access time, fetched flag)
  bool vivify = false;        // mg N / ma N: on miss create an empty item with TTL `vivify_ttl`
  int64_t vivify_ttl = 0;
  bool recache = false;       // mg R: if remaining TTL < `recache_ttl`, hand out a win token
  int64_t recache_ttl = 0;
  bool recache_before_touch = false;  // mg R before T: R compares the TTL the item had before
                                      // this op's touch (memcached applies flags in order)
  bool counted = true;        // counts in get_hits / get_misses; false for the cluster's own
                              // reads (warming, replication), which a client did not ask for
  /// How a client op counts in the hit and miss stats, where memcached does not count it as
  /// its kind would (crosses nodes, Op.counts; `counted` false counts nothing anyway).
  enum class counting : uint8_t {
    as_kind = 0,       // get/gat, delete, incr/decr...: as memcached counts that command
    nothing = 1,       // `me`, and the removal of a value refused as too large
    touch_or_miss = 2  // mg T: a hit counts as a touch, a miss as a get's miss
  };
  counting counts = counting::as_kind;
  bool keep_token = false;    // reads a stale item without taking its win token (W), which
                              // stays for a meta reader: text get/gets/gat/gats, me, and the
                              // replicator's reads (as in memcached, only mg hands it out)
  uint64_t parked = 0;        // cluster: a re-read of the result its owner parked for this
                              // op's first read (storage/parked.hpp); shards ignore it
  uint8_t routed = 0;         // cluster: times a node placed this client op by its own ring
                              // on the way (Op.routed, actors/cluster_route.hpp); shards ignore it
  uint64_t answer_by_ms = 0;  // cluster: a member's client op this node places again: when its
                              // sender gives up on it (this host's cluster::steady_now_ms);
                              // the call that places it again is stamped with what is left.
                              // 0: no such bound. Not on the wire; shards ignore it

  // -- arith --
  bool incr = true;           // false: decr (floors at 0); incr wraps at 2^64
  uint64_t delta = 1;
  uint64_t initial = 0;       // ma J: value created by vivify (N)
};

/// A get whose result carries the value (not an mg without v, nor a look at metadata).
inline bool reads_value(const op& o) noexcept {
  return o.kind == op_kind::get && o.get_value;
}

/// True for an op that changes the item: store, remove, arith, touch, and a get that touches,
/// vivifies or recaches (a plain get only reads; flush is not about one item).
inline bool changes_item(const op& o) noexcept {
  switch (o.kind) {
    case op_kind::store:
    case op_kind::remove:
    case op_kind::arith:
    case op_kind::touch:
      return true;
    case op_kind::get:
      return o.get_touch || o.vivify || o.recache;
    default:
      return false;
  }
}

struct result {
  status st = status::miss;
  // Item metadata (valid for hit / stored / deleted when the item exists afterwards).
  uint32_t flags = 0;
  uint64_t cas = 0;           // (also a plain delete's: the CAS of the item it removed, or
                              // refused: exists)
  uint32_t exptime = 0;       // absolute unix seconds, 0 = never
  uint32_t exptime_before = 0;  // the item's exptime before this op's mg/ma T (0 for an item
                                // N made): what a meta `t` left of T or N shows
  uint32_t last_access = 0;   // absolute unix seconds of the previous access
  bool fetched = false;       // the item had been read before this op (mg h)
  bool win = false;           // meta W: this client won the right to recache
  bool stale = false;         // meta X: item is marked stale
  bool already_won = false;   // meta Z: a win token was already handed out
  uint32_t value_size = 0;    // size of the value in bytes (also when get_value is false)
  uint64_t number = 0;        // arith: the new value
  pinned_slice value;         // get with get_value: the value bytes
  uint64_t parked = 0;        // cluster: the value was left out of the reply and parked at
                              // its owner under this token (storage/parked.hpp); 0 = not
  bool deleted_lately = false;  // found no item (a read's miss, a delete's not_found, an
                                // update's not_found / not_stored; cluster only) where a
                                // client's delete (or its replication), a flush_all or the
                                // expiry of an item written here took the key lately (the
                                // copy guard's seconds) under the node's current ring: the
                                // previous owners' copies are older, unless a member whose
                                // view lagged wrote there after it (deleted_cas orders them:
                                // actors/cluster_route.hpp, after_result)
  uint64_t deleted_cas = 0;   // found no item where a delete, a flush_all or an expiry was
                              // noted in the copy guard's seconds (cluster only; in the
                              // current ring or before it): the note's point on the CAS
                              // clock, which a read check orders against an item elsewhere
                              // (an expiry's: the expired write's CAS; cas_clock_removed)
  bool placed_again = false;  // cluster: the key's owner answered it after this node placed
                              // the op again (actors/cluster_route.hpp): parked strictly

  /// A result with status `s` and nothing else (an op that failed or did not run).
  static result of(status s) {
    result r;
    r.st = s;
    return r;
  }
};

/// True when `st`, the result of `o`, says the item changed: the writes replication copies to
/// a key's other owners.
inline bool changed_item(const op& o, status st) noexcept {
  switch (o.kind) {
    case op_kind::store:
      return st == status::stored;
    case op_kind::remove:
      return st == status::deleted;
    case op_kind::arith:
    case op_kind::touch:
      return st == status::hit || st == status::stored;
    case op_kind::get:
      return changes_item(o) && (st == status::hit || st == status::stored);
    default:
      return false;
  }
}

/// What changed_item reads of `o` (kind, key, flags), without its value: kept to tell, once
/// the result of `o` comes, whether it changed the item.
inline op change_probe(const op& o) {
  op p;
  p.kind = o.kind;
  p.key = o.key;
  p.get_touch = o.get_touch;
  p.vivify = o.vivify;
  p.recache = o.recache;
  p.invalidate = o.invalidate;  // (md I's erase: cluster_route.hpp, owners_replicated)
  p.compare_cas = o.compare_cas;  // (a delete's answer: service in_window)
  p.cas_given = o.cas_given;
  p.copy = o.copy;  // (a delete's copy erases nothing further: service in_window)
  return p;
}

/// A read repeated to fetch a value too large to travel inline (`again`) replaces the first
/// answer, except for what the first read saw of the item's history: the win token (it took
/// it, W, or found it taken, Z; the repeat finds it taken by the first) and the access
/// before it (mg h, l: the repeat finds the first's access).
inline void merge_reread(result& first, result&& again) {
  const bool win = first.win, already_won = first.already_won, fetched = first.fetched;
  const uint32_t last_access = first.last_access;
  // The TTL before the first read's T, when it changed it (a re-read's is the TTL it found).
  const bool touched = first.exptime_before != first.exptime;
  const uint32_t exptime_before = first.exptime_before;
  first = std::move(again);
  if (first.st == status::hit) {
    first.win = win;
    first.already_won = already_won;
    first.fetched = fetched;
    first.last_access = last_access;
    if (touched)
      first.exptime_before = exptime_before;
  }
}

/// `own`, a read's hit, and `there`, a look at another node's copy of the same write (same
/// CAS, length and flags): the reads that node saw count as this item's too (replication copies
/// writes, not reads): read before (mg h), the latest access (mg l), and a win token out
/// there, which this read then did not win (mg Z, not W).
inline void merge_reads(result& own, const result& there) {
  own.fetched = own.fetched || there.fetched;
  own.last_access = std::max(own.last_access, there.last_access);
  if (there.already_won || there.win) {
    own.win = false;
    own.already_won = true;
  }
}

/// The store that puts the item a read found (`r`, a hit with its value) on another node as
/// it is here: value, flags, absolute expiry, CAS, stale mark (md I), whether its win token
/// is out (taken by this read, or before it) and whether it was read before (mg h). `mode`:
/// set (replication: an owner takes the primary's state, unless the owner holds a later
/// write) or add (warming: never over a later write; over an earlier one, by CAS:
/// storage::cas_clock_newer).
inline op item_copy(const std::string& key, const result& r, store_mode mode) {
  op o;
  o.kind = op_kind::store;
  o.mode = mode;
  o.key = key;
  o.value.assign(r.value.view().data(), r.value.view().size());
  o.flags = r.flags;
  o.ttl = r.exptime;  // absolute unix time (or 0): memcached's exptime convention
  o.explicit_cas = r.cas;
  o.as_stale = r.stale;
  o.token_out = r.win || r.already_won;
  o.as_fetched = r.fetched;
  o.copy = true;
  return o;
}

/// The cluster's own remove of whatever item a node holds for `key` (a copy a past ring placed
/// there, after a write or a delete at the key's owners): uncounted, no CAS compared.
inline op past_copy_delete(const std::string& key) {
  op o;
  o.kind = op_kind::remove;
  o.key = key;
  o.counted = false;
  return o;
}

/// The remove that puts a delete noted here (its point on the CAS clock, `at`: a note's CAS,
/// shard::recent_delete, result::deleted_cas) on another node: it spares only an item later
/// than `at` there, and is noted there with it (the copy guard). Uncounted here (the
/// cluster's own); another node counts it as its origin says (`counted` does not travel):
/// replication's as a replicated delete (the delete stats, dead owners' hand-back), a warm
/// op's (re-replication) not.
inline op delete_copy(const std::string& key, uint64_t at) {
  op o;
  o.kind = op_kind::remove;
  o.key = key;
  o.explicit_cas = at;
  o.copy = true;
  o.counted = false;
  return o;
}

/// A batch of ops for one shard; results come back in the same order.
using op_batch = std::vector<op>;
using result_batch = std::vector<result>;

} // namespace bifrost::storage
