// shard: items in segments, an item_index over them, memcached semantics on top.
// Design notes live in storage/shard.hpp; formats in storage/record.hpp and storage/index.hpp.
#include "storage/shard.hpp"

#include "storage/index.hpp"
#include "storage/keyed_hash.hpp"
#include "storage/record.hpp"
#include "storage/segment.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <unordered_map>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <filesystem>
#include <new>
#include <string_view>
#include <system_error>
#include <unistd.h>
#include <vector>

namespace bifrost::storage {

// ---------------------------------------------------------------------------------------------
// Process-wide helpers

namespace {
std::atomic<uint64_t> g_cas{0};
constexpr int64_t k_relative_exptime_max = 60 * 60 * 24 * 30;  // memcached REALTIME_MAXDELTA
constexpr uint64_t k_cas_observe_max = 1ull << 62;

void raise_cas(uint64_t seen) {
  uint64_t cur = g_cas.load(std::memory_order_relaxed);
  while (cur < seen && !g_cas.compare_exchange_weak(cur, seen, std::memory_order_relaxed)) {
  }
}
} // namespace

uint64_t next_cas() {
  // A hybrid clock: above every value handed out or observed (observe_cas), and at least the
  // wall clock in microseconds times 256 (restart_cas_floor), so that of two writes of a key
  // on two nodes the later one has the higher CAS (cas_clock_newer), as long as their clocks
  // agree better than the writes are apart.
  raise_cas(restart_cas_floor() - 1);
  uint64_t c = g_cas.fetch_add(1, std::memory_order_relaxed) + 1;
  while (c == 0)  // wrapped (cannot happen from observe_cas's values): 0 is "no CAS"
    c = g_cas.fetch_add(1, std::memory_order_relaxed) + 1;
  return c;
}

namespace {
// The CAS clock's values lie in [k_cas_clock_min, this). (A value ahead of this node's clock
// by more than the slack is not one: a client's meta E, or a counter such a value pushed.
// Ordering by it would let it win over later writes.)
uint64_t cas_clock_ceiling() {
  return std::min(restart_cas_floor() + k_cas_clock_slack, k_cas_observe_max);
}
bool clocked_below(uint64_t c, uint64_t ceiling) noexcept {
  return c >= k_cas_clock_min && c < ceiling;
}
} // namespace

bool cas_clock_newer(uint64_t a, uint64_t b) noexcept {
  if (a <= b)
    return false;
  const uint64_t ceiling = cas_clock_ceiling();
  return clocked_below(a, ceiling) && clocked_below(b, ceiling);
}

bool cas_clocked(uint64_t c) noexcept {
  return clocked_below(c, cas_clock_ceiling());
}

bool cas_clock_removed(uint64_t cas, uint64_t point) noexcept {
  if (cas > point)
    return false;
  const uint64_t ceiling = cas_clock_ceiling();
  return clocked_below(cas, ceiling) && clocked_below(point, ceiling);
}

void observe_cas(uint64_t seen) {
  if (seen < k_cas_observe_max) raise_cas(seen);
}

uint64_t cas_for(const op& o) {
  if (o.explicit_cas == 0)
    return next_cas();
  // A copy from another node (replication, warming) or a client's meta `E`: new CAS values
  // of this node stay above it, so that after a failover the new primary does not hand out
  // a CAS a client may still hold from the old one.
  observe_cas(o.explicit_cas);
  return o.explicit_cas;
}

uint64_t current_cas() { return g_cas.load(std::memory_order_relaxed); }

namespace {
std::atomic<uint64_t> g_return_mark{~uint64_t(0)};
} // namespace

void mark_return() { g_return_mark.store(current_cas(), std::memory_order_relaxed); }
void clear_return_mark() { g_return_mark.store(0, std::memory_order_relaxed); }
uint64_t return_mark() { return g_return_mark.load(std::memory_order_relaxed); }

uint64_t restart_cas_floor() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t us = uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
  return std::min(us << 8, k_cas_observe_max - 1);
}

namespace {
// The number in a data-directory name "<prefix><decimal><suffix>" (shard-3, seg-17.dat).
std::optional<uint64_t> name_number(std::string_view name, std::string_view prefix,
                                    std::string_view suffix) {
  if (name.size() <= prefix.size() + suffix.size() || name.substr(0, prefix.size()) != prefix ||
      name.substr(name.size() - suffix.size()) != suffix)
    return std::nullopt;
  const std::string_view digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 19) return std::nullopt;
  uint64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + uint64_t(c - '0');
  }
  return n;
}
} // namespace

uint32_t data_dir_shards(const std::string& dir, std::string& error) {
  error.clear();
  const char* fix = " (give a directory this user may read and write, or a path to create)";
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    // Absent: made at start, with its parents, unless the path or one of them is a symbolic
    // link to nothing (mkdir cannot make it), or the deepest directory of it that exists is
    // not this user's to write in. Anything else (a file, no permission) is the operator's
    // to fix.
    if (errno != ENOENT) {
      error = "cannot open " + dir + ": " + std::strerror(errno) + fix;
      return 0;
    }
    std::string parent = dir[0] == '/' ? "/" : ".";  // (the deepest one that exists)
    for (size_t end = dir.find('/', 1);; end = dir.find('/', end + 1)) {
      const std::string part = dir.substr(0, end);
      struct stat st{};
      if (::stat(part.c_str(), &st) == 0) {
        parent = part;
      } else if (::lstat(part.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        error = "cannot make " + dir + ": " + part + " is a symbolic link to a path that does "
                "not exist" + fix;
        return 0;
      }
      if (end == std::string::npos)
        break;
    }
    if (::access(parent.c_str(), W_OK | X_OK) != 0)
      error = "cannot make " + dir + ": cannot write in " + parent + ": " +
              std::strerror(errno) + fix;
    return 0;
  }
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    error = "cannot write in " + dir + ": " + std::strerror(errno) + fix;
    ::closedir(d);
    return 0;
  }
  std::vector<uint64_t> ids;
  std::string stray;
  while (dirent* de = ::readdir(d)) {
    const std::string_view name = de->d_name;
    if (name.substr(0, 6) != "shard-") continue;
    const auto id = name_number(name, "shard-", "");
    struct stat st{};
    const bool is_dir = ::fstatat(::dirfd(d), de->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode);
    if (!id || !is_dir || *id >= k_max_shards || (name.size() > 7 && name[6] == '0')) {
      if (stray.empty()) stray = std::string(name);
      continue;
    }
    ids.push_back(*id);
  }
  ::closedir(d);
  const std::string path = dir + "/";
  if (!stray.empty()) {
    error = path + stray + " is not a shard directory this node writes (shard-0 .. shard-" +
            std::to_string(k_max_shards - 1) + ", each a directory): remove it";
    return 0;
  }
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] != i) {
      error = path + "shard-" + std::to_string(ids[i]) + " is there but " + path + "shard-" +
              std::to_string(i) + " is not: the shard directories must be shard-0 .. shard-<n-1>";
      return 0;
    }
  }
  return static_cast<uint32_t>(ids.size());
}

uint32_t system_clock_seconds() { return static_cast<uint32_t>(::time(nullptr)); }

uint32_t absolute_exptime(int64_t raw, uint32_t now) {
  if (raw == 0) return 0;
  if (raw < 0) return 1;
  if (raw > k_relative_exptime_max) return raw > int64_t(UINT32_MAX) ? UINT32_MAX : uint32_t(raw);
  const uint64_t t = uint64_t(now) + uint64_t(raw);
  return t > UINT32_MAX ? UINT32_MAX : uint32_t(t);
}

bool expires_now(const op& o, uint32_t now) {
  const bool sets_ttl = o.kind == op_kind::store || o.kind == op_kind::touch ||
                        (o.kind == op_kind::get && o.get_touch) ||
                        (o.kind == op_kind::remove && o.invalidate &&  // md I T (do_remove)
                         (o.get_touch || o.ttl != 0));
  const uint32_t at = sets_ttl ? absolute_exptime(o.ttl, now) : 0;
  return at != 0 && at <= now;
}

shard_stats& shard_stats::operator+=(const shard_stats& o) {
  curr_items += o.curr_items;
  total_items += o.total_items;
  bytes += o.bytes;
  evictions += o.evictions;
  expired_unfetched += o.expired_unfetched;
  evicted_unfetched += o.evicted_unfetched;
  reclaimed += o.reclaimed;
  pruned += o.pruned;
  disk_full_evictions += o.disk_full_evictions;
  handed_back += o.handed_back;
  handed_back_copies += o.handed_back_copies;
  hand_back_dropped += o.hand_back_dropped;
  copies_refused += o.copies_refused;
  copies_superseded += o.copies_superseded;
  copies_replaced += o.copies_replaced;
  rereplicated += o.rereplicated;
  rereplicated_deletes += o.rereplicated_deletes;
  rereplicate_redone += o.rereplicate_redone;
  segments += o.segments;
  segment_bytes += o.segment_bytes;
  index_bytes += o.index_bytes;
  get_hits += o.get_hits;
  get_misses += o.get_misses;
  get_expired += o.get_expired;
  get_flushed += o.get_flushed;
  cmd_set += o.cmd_set;
  cmd_touch += o.cmd_touch;
  touch_hits += o.touch_hits;
  touch_misses += o.touch_misses;
  delete_hits += o.delete_hits;
  delete_misses += o.delete_misses;
  incr_hits += o.incr_hits;
  incr_misses += o.incr_misses;
  decr_hits += o.decr_hits;
  decr_misses += o.decr_misses;
  cas_hits += o.cas_hits;
  cas_misses += o.cas_misses;
  cas_badval += o.cas_badval;
  store_no_memory += o.store_no_memory;
  recovered_items += o.recovered_items;
  recovery_skipped += o.recovery_skipped;
  return *this;
}

// ---------------------------------------------------------------------------------------------
// Internals

namespace {

using entry = item_index::entry;
constexpr size_t npos = item_index::npos;
constexpr uint64_t k_hdr = sizeof(record_header);

bool valid_key(std::string_view key) noexcept {
  return !key.empty() && key.size() <= k_max_key_len;
}

bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/// memcached's safe_strtoull on an item value: leading whitespace and a sign are accepted
/// (strtoull), at least one digit, the number must end the value or be followed by
/// whitespace or a NUL (strtoull reads the value as a C string), overflow fails, and a '-'
/// that yields a number >= 2^63 fails.
bool parse_counter(std::string_view s, uint64_t& out) noexcept {
  size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    neg = s[i] == '-';
    ++i;
  }
  const size_t first = i;
  uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    const uint64_t d = uint64_t(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;  // ERANGE
    v = v * 10 + d;
    ++i;
  }
  if (i == first) return false;
  if (i < s.size() && !is_space(s[i]) && s[i] != '\0') return false;
  if (neg) {
    v = uint64_t(0) - v;
    if (static_cast<int64_t>(v) < 0) return false;
  }
  out = v;
  return true;
}

bool all_zero(const char* p, uint64_t n) noexcept {
  for (uint64_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

uint64_t round_up(uint64_t v, uint64_t to) noexcept { return (v + to - 1) / to * to; }

struct seg_slot {
  std::shared_ptr<segment> seg;  // null: free slot
  uint64_t used = 0;             // bytes appended (next record offset)
  uint64_t live_items = 0;       // index entries pointing into this segment
  uint64_t live_bytes = 0;       // padded bytes of those entries' records
};

/// A record saved from an evicted segment for re-append (second chance).
struct rescued_record {
  std::string bytes;
  uint32_t atime;
  bool token;
};

/// What to write for one item.
struct item_spec {
  std::string_view key;
  uint32_t hash;
  std::string_view value;
  uint32_t flags = 0;
  uint32_t exptime = 0;
  uint64_t cas = 0;
  uint8_t state = 0;
  bool fetched = false;
  bool token = false;
  uint32_t atime = 0;
};

} // namespace

struct shard::impl {
  shard_config cfg;
  clock_fn clock;
  uint32_t now = 0;
  shard_stats st;
  std::shared_ptr<segment_accounting> acct = std::make_shared<segment_accounting>();

  std::vector<seg_slot> segs;
  std::vector<uint32_t> free_slots;
  std::deque<uint32_t> fifo;  // live segments, oldest first
  int64_t active = -1;        // slot of the segment small records are appended to
  uint64_t next_seq = 1;
  uint64_t live_seg_bytes = 0;  // bytes of segments in `segs` (the rest of acct is pinned)
  uint64_t limit = 0;
  uint64_t seg_size = 0;
  uint64_t page = 4096;
  uint64_t max_value = 0;
  bool second_chance = true;

  item_index idx;
  const hash_key index_key = hash_key::random();  // secret per shard: storage/keyed_hash.hpp
  uint32_t flush_at = 0;  // pending delayed flush_all (absolute seconds), 0 = none
  size_t sweep_cursor = 0;
  size_t prune_cursor = 0;    // next index slot prune() looks at
  size_t prune_capacity = 0;  // the index capacity that cursor refers to
  std::string dir;  // shard directory; empty: memfd segments
  std::string last_error;
  /// The op running is a client's (execute): an item it finds expired counts in get_expired,
  /// as memcached's do_item_get counts it; the cluster's own reads and copies count it as
  /// reclaimed, as the sweep does.
  bool client_op = false;
  uint64_t disk_full_unreported = 0;  // disk-full evictions since the last cfg.warn line
  uint32_t disk_full_warned_at = 0;   // when that line went (shard clock)
  bool disk_full_warned = false;

  /// `n` segments were evicted because the data directory was full: say so (cfg.warn), at
  /// most once a minute.
  void note_disk_full(uint64_t n) {
    disk_full_unreported += n;
    if (!cfg.warn || (disk_full_warned && now - disk_full_warned_at < 60)) return;
    cfg.warn("the data directory " + dir + " is full: " + std::to_string(disk_full_unreported) +
             " segment(s) evicted early to make room (storage_disk_full_evictions); free disk "
             "space there or lower -m");
    disk_full_warned_at = now;
    disk_full_warned = true;
    disk_full_unreported = 0;
  }

  /// The index's hash of a key (high 32 bits of its keyed SipHash-1-3).
  uint32_t key_hash(std::string_view key) const noexcept {
    if (key.data() == memo_key && key.size() == memo_len)
      return memo_hash;  // the batch's prefetch pass hashed this very key (shard::execute)
    return static_cast<uint32_t>(siphash<1, 3>(key, index_key) >> 32);
  }
  const char* memo_key = nullptr;  // the op's key the batch loop hashed already, and its hash
  size_t memo_len = 0;
  uint32_t memo_hash = 0;

  // -- deletes lately (shard::guard_copies) ----------------------------------------------------
  uint32_t guard_s = 0;           // 0: off
  uint32_t guard_flushed_at = 0;  // the last flush_all that took effect while on
  uint64_t guard_flushed_cas = 0;  // a CAS taken then: the clock's value at that flush
  uint64_t applied_cuts[4] = {};  // the cuts (op::explicit_cas) of the last flush_alls applied
  size_t next_cut = 0;            // (round robin)
  // Deletes and flushes noted are numbered: which came after the node's view last named a new
  // ring (shard::ring_changed) is known to the op, not to the second.
  uint64_t noted_seq = 0;        // the last number given
  uint64_t ring_seq = 0;         // noted_seq when the view named a new ring
  uint64_t guard_flushed_seq = 0;
  struct noted {
    uint32_t at;   // unix second
    uint64_t seq;  // noted_seq
    uint64_t cas;  // a CAS taken then: the clock's value at that delete
    // The latest point on the clock of this note and the earlier ones it follows, 0: none.
    // Equals `cas` when that is on the clock; when it orders nothing (the expiry of a client's
    // meta E write, a delete while a client's E pushed the counter past the clock), the
    // earlier note's: what a replication's copy is still ordered against.
    uint64_t ordered;
  };
  std::unordered_map<uint64_t, noted> deleted_at;  // keyed 64-bit hash -> the last delete
  struct deletion {
    uint64_t hash;  // guard_hash(key)
    noted n;
    std::string key;  // (a delete's copy names it: recent_deletes)
  };
  std::deque<deletion> deletions;  // every one, oldest first
  static constexpr size_t max_deletions = 65536;

  uint64_t guard_hash(std::string_view key) const noexcept {
    return siphash<1, 3>(key, index_key);
  }
  void forget_deletions(uint32_t until) {
    while (!deletions.empty() &&
           (deletions.front().n.at + guard_s < until || deletions.size() > max_deletions)) {
      auto it = deleted_at.find(deletions.front().hash);
      if (it != deleted_at.end() && it->second.seq == deletions.front().n.seq)
        deleted_at.erase(it);
      deletions.pop_front();
    }
  }
  /// `cas`: the delete's point on the CAS clock when it was taken elsewhere (a delete's
  /// copy), else 0: now, here. A note keeps the later of its point and an earlier note's (in
  /// the guard's seconds); a point that orders nothing stays the note's point (a warm add is
  /// then refused whatever it copies: its write may have come after the earlier delete and
  /// before this one), also past a later copy of a delete with its point (which may be older
  /// than that write: another owner's copy of the earlier delete), until a delete here, now;
  /// and the earlier note's point on the clock stays its `ordered` (a replication's copy of a
  /// write before that delete stays refused).
  void note_delete(std::string_view key, uint64_t cas = 0) {
    forget_deletions(now);  // (an earlier note lends its point only inside the guard's seconds)
    const uint64_t h = guard_hash(key);
    noted n{now, ++noted_seq, cas != 0 ? cas : next_cas(), 0};
    n.ordered = cas_clocked(n.cas) ? n.cas : 0;
    auto it = deleted_at.find(h);
    if (it != deleted_at.end()) {
      if (cas_clock_newer(it->second.cas, n.cas) || (cas != 0 && !cas_clocked(it->second.cas)))
        n.cas = it->second.cas;
      if (it->second.ordered != 0 &&
          (n.ordered == 0 || cas_clock_newer(it->second.ordered, n.ordered)))
        n.ordered = it->second.ordered;
    }
    deleted_at[h] = n;
    deletions.push_back(deletion{h, n, std::string(key)});
    forget_deletions(now);
  }
  /// An item found expired leaves the index (reclaimed by an op or the sweep, or evicted
  /// with its segment): counted, and a delete to note, at its write's point, not now: an
  /// expiry removes that item and nothing written after it elsewhere, which a delete's copy
  /// must spare and an add's copy must bring (not its CAS + 1 either: the next CAS this node
  /// hands out, which its next write of the key may get). Best effort: without memory for the
  /// note, the item still goes.
  /// Counted as memcached counts it: in get_expired when a command found it (`by_op`: its
  /// do_item_get, whatever the command), else (the sweep, an eviction) in reclaimed and, if
  /// never read, expired_unfetched.
  void expired_leaves(const entry& e, const record_header* r, bool by_op) noexcept {
    if (by_op) {
      ++st.get_expired;
    } else {
      ++st.reclaimed;
      if (!e.fetched()) ++st.expired_unfetched;
    }
    if (guard_s == 0)
      return;
    try {
      note_delete(r->key_view(), r->cas);
    } catch (...) {
    }
  }

  /// A copy that is no warm add (replication's): the flush_all that took effect here in the
  /// last guard_s seconds came after the write it copies, by the CAS clock (a copy the
  /// primary sent before the flush reached this node: R > 1, a write then flush_all).
  bool written_before_flush(const op& o) const {
    return flushed_lately() && cas_clock_newer(guard_flushed_cas, o.explicit_cas);
  }

  /// A replication's copy (a set): a delete of its key noted here in the last guard_s
  /// seconds has a point on the CAS clock later than the write it copies (a delete's copy
  /// brings its sender's point; a delete made here, this node's clock then; an expiry, the
  /// expired write's CAS). The copy was read before the delete where it came from, and
  /// arrives after it (a retried job, or the other side of a partition that heals): stored,
  /// it would bring the key back here. Unordered values (a client's meta E) are taken.
  bool written_before_delete(const op& o) const {
    const noted* n = noted_lately(o.key);  // (judges the guard's seconds itself)
    return n != nullptr && cas_clock_newer(n->ordered, o.explicit_cas);
  }

  /// A flush_all took effect here in the last guard_s seconds (+ 1: whole seconds; a moment
  /// before the next one counts as this one).
  bool flushed_lately() const {
    return guard_flushed_at != 0 && now < guard_flushed_at + guard_s + 1;
  }

  /// The note of a delete of `key` in the last guard_s seconds, or null.
  const noted* noted_lately(std::string_view key) const {
    auto it = deleted_at.find(guard_hash(key));
    return it != deleted_at.end() && now < it->second.at + guard_s + 1 ? &it->second : nullptr;
  }

  /// A warm add (a copy of another node's item): a flush_all or a delete of its key took
  /// effect here in the last guard_s seconds, and the item it copies was not written after
  /// it by the CAS clock (or its CAS is no clock value: a client's meta E). Such a copy was
  /// read before the delete reached the node it came from, and would bring the key back; a
  /// copy of an item written after it is the key's newest state (a flush_all, then a write,
  /// then a ring change: refusing it lost the write at the key's new owner).
  bool copied_before_delete(const op& o) {
    if (flushed_lately() && !cas_clock_newer(o.explicit_cas, guard_flushed_cas))
      return true;
    forget_deletions(now);
    const noted* n = noted_lately(o.key);
    return n != nullptr && !cas_clock_newer(o.explicit_cas, n->cas);
  }

  /// result::deleted_lately of an op that found no item for `key`: a client's delete (or its
  /// replication), a flush_all, or an item's expiry (lookup) took the key lately, after the
  /// node's view named its current ring. The key's past owners had it before that, and hold
  /// nothing newer.
  /// `n`: noted_lately of the key.
  bool gone_here(const noted* n) const {
    if (flushed_lately() && guard_flushed_seq > ring_seq)
      return true;
    return n != nullptr && n->seq > ring_seq;
  }

  /// An op that found no item for `key`: result::deleted_lately (gone_here) and
  /// result::deleted_cas (the later point of the key's note and a flush_all's, in the
  /// guard's seconds, whichever ring they came in).
  void mark_gone(result& res, std::string_view key) const {
    if (guard_s == 0)
      return;
    const noted* n = noted_lately(key);
    res.deleted_lately = gone_here(n);
    res.deleted_cas = n ? n->cas : 0;
    if (flushed_lately() &&
        (res.deleted_cas == 0 || cas_clock_newer(guard_flushed_cas, res.deleted_cas)))
      res.deleted_cas = guard_flushed_cas;
  }

  // -- record access ---------------------------------------------------------------------------

  record_header* hdr(uint32_t slot, uint64_t off) const noexcept {
    return reinterpret_cast<record_header*>(segs[slot].seg->data() + off);
  }
  record_header* hdr(const entry& e) const noexcept { return hdr(e.slot(), e.offset()); }

  bool expired(const record_header* r) const noexcept {
    return r->exptime != 0 && r->exptime <= now;
  }

  /// `key` has an item here that has not expired (found, not reclaimed: nothing changes).
  bool live(std::string_view key) const {
    const size_t pos = find(key, key_hash(key));
    return pos != npos && !expired(hdr(idx.at(pos)));
  }

  size_t find(std::string_view key, uint32_t h) const {
    return idx.find(h, [&](const entry& e) {
      const record_header* r = hdr(e);
      return r->key_len == key.size() && std::memcmp(r->key(), key.data(), key.size()) == 0;
    });
  }

  pinned_slice value_slice(const entry& e, const record_header* r) const {
    return pinned_slice(segs[e.slot()].seg, e.offset() + k_hdr + r->key_len, r->value_len);
  }

  static void fill_meta(result& res, const entry& e, const record_header* r) {
    res.flags = r->flags;
    res.cas = r->cas;
    res.exptime = r->exptime;
    res.exptime_before = r->exptime;
    res.value_size = r->value_len;
    res.stale = r->stale();
    res.last_access = e.atime;
    res.fetched = e.fetched();
  }

  // -- segment lifecycle -----------------------------------------------------------------------

  std::string segment_path(uint64_t seq) const {
    if (dir.empty()) return {};
    char name[48];
    std::snprintf(name, sizeof name, "/seg-%016" PRIu64 ".dat", seq);
    return dir + name;
  }

  uint32_t take_slot() {
    if (free_slots.empty()) {
      segs.emplace_back();
      free_slots.reserve(segs.size());  // release() must not allocate
      return static_cast<uint32_t>(segs.size() - 1);
    }
    const uint32_t s = free_slots.back();
    free_slots.pop_back();
    return s;
  }

  /// Drops the shard's reference to a segment with no index entries left: the file leaves the
  /// data directory now; the memory goes when the last pinned_slice drops.
  void release(uint32_t slot) noexcept {
    seg_slot& s = segs[slot];
    s.seg->unlink_file();
    live_seg_bytes -= s.seg->size();
    s = seg_slot{};
    auto it = std::find(fifo.begin(), fifo.end(), slot);
    if (it != fifo.end()) fifo.erase(it);
    free_slots.push_back(slot);  // capacity reserved in take_slot()
    if (active == int64_t(slot)) active = -1;
  }

  /// The record behind `e` is no longer referenced by the index (already erased/replaced).
  void kill_record(const entry& e) noexcept {
    record_header* r = hdr(e);
    r->state |= k_state_dead;
    st.bytes -= record_bytes(r->key_len, r->value_len);
    seg_slot& s = segs[e.slot()];
    s.live_bytes -= record_size(r->key_len, r->value_len);
    if (--s.live_items == 0 && int64_t(e.slot()) != active) release(e.slot());
  }

  void remove_at(size_t pos) noexcept {
    const entry e = idx.at(pos);
    idx.erase(pos);
    kill_record(e);
  }

  void reclaim_expired(size_t pos, bool by_op) noexcept {
    expired_leaves(idx.at(pos), hdr(idx.at(pos)), by_op);
    remove_at(pos);
  }

  /// Erases every index entry still pointing into `slot` (safety net; normally none).
  void purge_slot(uint32_t slot) noexcept {
    for (size_t i = 0; i < idx.capacity();) {
      const entry& e = idx.at(i);
      if (!e.empty() && e.slot() == slot) {
        const record_header* r = hdr(e);
        st.bytes -= record_bytes(r->key_len, r->value_len);
        ++st.evictions;
        idx.erase(i);  // a follower may have moved into i: look again
      } else {
        ++i;
      }
    }
  }

  /// Calls fn(record, offset, size, index position or npos) for each record of `slot` not
  /// marked dead, in order, up to the first unwritten or torn record. fn may move the record
  /// to a lower offset (the walk has already read its size).
  template <typename Fn>
  void for_each_live_record(uint32_t slot, Fn&& fn) {
    seg_slot& s = segs[slot];
    char* base = s.seg->data();
    uint64_t off = 0;
    while (off + k_hdr <= s.used) {
      auto* r = reinterpret_cast<record_header*>(base + off);
      if (r->magic != k_record_magic) break;
      const uint64_t rs = record_size(r->key_len, r->value_len);
      if (off + rs > s.used) break;
      if (!r->dead()) {
        const size_t pos = idx.find(key_hash(r->key_view()), [&](const entry& e) {
          return e.slot() == slot && e.offset() == off;
        });
        fn(r, off, rs, pos);
      }
      off += rs;
    }
  }

  /// Evicts the oldest segment whole. Live items leave the index (evictions); items read since
  /// they were written are copied to `keep` while `budget` lasts (second chance).
  void evict_oldest(std::vector<rescued_record>* keep, uint64_t& budget) {
    const uint32_t slot = fifo.front();
    seg_slot& s = segs[slot];
    char* base = s.seg->data();
    uint64_t removed = 0;
    for_each_live_record(slot, [&](record_header* r, uint64_t off, uint64_t rs, size_t pos) {
      if (pos != npos) {
        const entry e = idx.at(pos);
        if (expired(r)) {
          expired_leaves(e, r, false);
        } else if (keep && e.fetched() && rs <= budget) {
          keep->push_back(rescued_record{std::string(base + off, rs), e.atime, e.token()});
          budget -= rs;
        } else {
          ++st.evictions;
          if (!e.fetched()) ++st.evicted_unfetched;
        }
        idx.erase(pos);
        st.bytes -= record_bytes(r->key_len, r->value_len);
        ++removed;
      }
      r->state |= k_state_dead;
    });
    if (removed < s.live_items) purge_slot(slot);
    release(slot);
  }

  /// May the bytes of `seg` (held once by the shard, and by every pinned_slice of it) be
  /// overwritten in place? Not while a pinned_slice refers to it, nor ever once sendfile(2)
  /// read from it: the kernel may still read those pages (segment::note_spliced).
  static bool rewritable(const std::shared_ptr<segment>& seg) noexcept {
    if (seg.use_count() != 1) return false;
    // Pairs with the release decrement of the last pinned_slice dropped on another thread:
    // its reads of these bytes, and its note_spliced(), happen before what follows.
    std::atomic_thread_fence(std::memory_order_acquire);
    return !seg->spliced();
  }

  /// A new segment of `size` bytes, evicting old ones as the memory limit requires. With
  /// `rescue_budget` > 0, fetched items of evicted segments are re-appended to it first.
  /// Returns the slot, or -1 (limit unreachable because of pins, or the syscall failed).
  int64_t new_segment(uint64_t size, uint64_t rescue_budget) {
    if (size > limit) {
      last_error = "segment larger than the memory limit";
      return -1;
    }
    std::vector<rescued_record> keep;
    const bool rescue = second_chance && rescue_budget > 0;
    // An evicted memfd segment of the right size that nobody pins is reused as is: no munmap,
    // no new mapping, no page faults (its old bytes are beyond `used` and never read).
    std::shared_ptr<segment> reuse;
    auto extra = [&] { return reuse ? 0 : size; };
    while (acct->bytes.load(std::memory_order_relaxed) + extra() > limit && !fifo.empty()) {
      std::shared_ptr<segment> victim;
      if (!reuse && dir.empty() && segs[fifo.front()].seg->size() == size)
        victim = segs[fifo.front()].seg;
      evict_oldest(rescue ? &keep : nullptr, rescue_budget);
      if (victim && rewritable(victim))
        reuse = std::move(victim);
    }
    if (acct->bytes.load(std::memory_order_relaxed) + extra() > limit) {
      st.evictions += keep.size();
      last_error = "memory limit reached (pinned segments)";
      return -1;
    }
    const uint32_t slot = take_slot();
    std::shared_ptr<segment> seg = std::move(reuse);
    if (!seg) {
      std::string err;
      bool no_space = false;
      seg = segment::create(next_seq, size, segment_path(next_seq), acct, err, &no_space);
      // A full file system (the data directory's, or a quota) limits the shard as its memory
      // limit does: the oldest segments go until the new one fits. An evicted file's blocks
      // come back when its last pinned_slice drops (a send in flight keeps them until then):
      // when the free space and every unpinned segment together cannot hold it, nothing is
      // evicted for it.
      if (!seg && no_space && !disk_room_by_evicting(size)) no_space = false;
      uint64_t full_evictions = 0;
      while (!seg && no_space && !fifo.empty()) {
        ++full_evictions;
        evict_oldest(rescue ? &keep : nullptr, rescue_budget);
        seg = segment::create(next_seq, size, segment_path(next_seq), acct, err, &no_space);
      }
      if (full_evictions > 0) {
        st.disk_full_evictions += full_evictions;
        note_disk_full(full_evictions);
      }
      if (!seg) {
        free_slots.push_back(slot);
        st.evictions += keep.size();
        last_error = err;
        return -1;
      }
      ++next_seq;
    }
    segs[slot].seg = std::move(seg);
    segs[slot].used = 0;
    segs[slot].live_items = 0;
    segs[slot].live_bytes = 0;
    fifo.push_back(slot);
    live_seg_bytes += size;
    for (const rescued_record& k : keep) {
      const auto* src = reinterpret_cast<const record_header*>(k.bytes.data());
      const uint64_t off = segs[slot].used;
      copy_record(segs[slot].seg->data() + off, src);
      segs[slot].used += k.bytes.size();
      ++segs[slot].live_items;
      segs[slot].live_bytes += k.bytes.size();
      st.bytes += record_bytes(src->key_len, src->value_len);
      entry e;
      e.hash = key_hash(src->key_view());
      e.set_location(slot, off);
      e.atime = k.atime;
      e.set_token(k.token);
      const size_t at = idx.insert(e);  // these entries were erased above: no growth needed
      if (at < prune_cursor && prune_capacity == idx.capacity())
        prune_cursor = at;  // an item a prune pass has not looked at yet may land behind it
    }
    return slot;
  }

  /// Could evicting this shard's unpinned segments free room for a new segment of `size`
  /// bytes in the data directory's file system (with what is free there now)?
  bool disk_room_by_evicting(uint64_t size) const {
    struct statvfs fs{};
    if (::statvfs(dir.c_str(), &fs) != 0) return true;  // (unknown: try)
    uint64_t room = uint64_t(fs.f_bavail) * fs.f_frsize;
    for (uint32_t slot : fifo)
      if (segs[slot].seg.use_count() == 1) room += segs[slot].seg->size();
    return room >= size;
  }

  /// Recycles the sparsest sealed segment in place instead of taking a new one: when its live
  /// records fill at most `max_live` bytes, they slide to its start (their index entries
  /// follow; positions in the index do not change), and the rest of the segment, whose pages
  /// are already mapped, takes new records. The segment moves to the back of the eviction
  /// FIFO (its items get a second life, as with second chance). Only memfd segments of the
  /// regular size that no pinned_slice references (a send in flight reads the old bytes).
  /// Looks at the oldest `k_compact_scan` segments. Returns the slot (with at least `need`
  /// bytes free), or -1.
  static constexpr size_t k_compact_scan = 256;
  int64_t compact_sparsest(uint64_t max_live, uint64_t need) {
    if (!dir.empty()) return -1;
    int64_t best = -1;
    uint64_t best_live = max_live;
    size_t looked = 0;
    for (uint32_t slot : fifo) {
      if (++looked > k_compact_scan) break;
      const seg_slot& c = segs[slot];
      if (int64_t(slot) == active || c.seg->size() != seg_size || c.live_bytes > best_live ||
          !rewritable(c.seg))
        continue;
      best = slot;
      best_live = c.live_bytes;
    }
    if (best < 0) return -1;
    const auto slot = uint32_t(best);
    seg_slot& s = segs[slot];
    char* base = s.seg->data();
    uint64_t dst = 0;
    for_each_live_record(slot, [&](record_header*, uint64_t off, uint64_t rs, size_t pos) {
      if (pos == npos) return;
      if (dst != off) std::memmove(base + dst, base + off, rs);
      idx.at(pos).set_location(slot, dst);
      dst += rs;
    });
    s.used = dst;
    fifo.erase(std::find(fifo.begin(), fifo.end(), slot));
    fifo.push_back(slot);
    if (s.used + need > s.seg->size()) return -1;  // (live_bytes was off) sealed, still valid
    return best;
  }

  /// Space for a record of `rs` bytes: in the active segment, a new one, or a dedicated one.
  bool allocate(uint64_t rs, uint32_t& slot, uint64_t& off) {
    if (rs > seg_size) {
      const int64_t s = new_segment(round_up(rs, page), 0);
      if (s < 0) return false;
      segs[s].used = rs;
      slot = uint32_t(s);
      off = 0;
      return true;
    }
    if (active >= 0 && segs[active].used + rs <= segs[active].seg->size()) {
      slot = uint32_t(active);
      off = segs[active].used;
      segs[active].used += rs;
      return true;
    }
    if (active >= 0) {  // seal the full active segment
      const auto a = uint32_t(active);
      active = -1;
      if (segs[a].live_items == 0) release(a);
    }
    int64_t s = compact_sparsest(std::min(seg_size / 2, seg_size - rs), rs);
    if (s < 0) s = new_segment(seg_size, std::min(seg_size / 2, seg_size - rs));
    if (s < 0) return false;
    active = s;
    slot = uint32_t(s);
    off = segs[s].used;
    segs[s].used += rs;
    return true;
  }

  /// Appends a record for `it` and points the index at it (replacing and killing any current
  /// record for the key). Returns the index position, or npos when no memory could be found.
  /// `known_pos` (the key's position, npos if absent) found at index generation `known_gen`
  /// saves the second probe when nothing moved meanwhile.
  size_t commit(const item_spec& it, size_t known_pos = npos, uint64_t known_gen = ~0ull) {
    idx.reserve_one();  // may throw bad_alloc: nothing changed yet
    const uint64_t rs = record_size(it.key.size(), it.value.size());
    uint32_t slot;
    uint64_t off;
    if (!allocate(rs, slot, off)) return npos;
    // Positions found before allocate() are stale if entries moved (eviction erases, growth
    // rehashes): then look again.
    size_t pos = idx.generation() == known_gen ? known_pos : find(it.key, it.hash);
    // The record replaced dies (kill_record below) only once the new one is written whole: a
    // crash (kill -9) in between leaves both, of which recovery keeps the one in the later
    // segment (the new one, or the old one when it has a segment of its own newer than the
    // active one): the old value or the new one for a write never acknowledged, as a client
    // may see either. (Marking the old one dead first, as it was, lost the key's acknowledged
    // value when the crash came while a large new value was being copied: a torn record.)
    write_record(segs[slot].seg->data() + off, it.key, it.value, it.flags, it.exptime, it.cas,
                 uint8_t((it.state & ~k_state_token) | (it.token ? k_state_token : 0)));
    ++segs[slot].live_items;
    segs[slot].live_bytes += rs;
    st.bytes += record_bytes(it.key.size(), it.value.size());
    ++st.total_items;
    entry ne;
    ne.hash = it.hash;
    ne.set_location(slot, off);
    ne.set_fetched(it.fetched);
    ne.set_token(it.token);
    ne.atime = it.atime;
    if (pos != npos) {
      const entry old = idx.at(pos);
      idx.at(pos) = ne;
      kill_record(old);
    } else {
      pos = idx.insert(ne);
    }
    return pos;
  }

  /// Position of the live item for `key`, or npos; an expired item is reclaimed on the way.
  /// In a cluster (the copy guard on) an item found expired is noted like a delete: the key
  /// went here lately, for this op and the next ones (gone_here), and older copies of it are
  /// refused (copied_before_delete). (Whatever ring it was written in: with R > 1 the owners
  /// of two rings overlap, and an item written before the change expired at an owner while
  /// a past ring's owner still held an older version, which an update warmed back.)
  size_t lookup(std::string_view key, uint32_t h) {
    const size_t pos = find(key, h);
    if (pos == npos) return npos;
    if (expired(hdr(idx.at(pos)))) {
      reclaim_expired(pos, client_op);
      return npos;
    }
    return pos;
  }

  void remove_key(std::string_view key, uint32_t h) {
    const size_t pos = find(key, h);
    if (pos != npos) remove_at(pos);
  }

  // -- flush -----------------------------------------------------------------------------------

  /// flush_all taking effect: every item stored so far becomes invalid. All current segments
  /// are released at once (files unlinked, so a restart does not resurrect them) and the index
  /// is emptied; items stored afterwards go to fresh segments. `cut`: the flush's point on
  /// the CAS clock (0: now, here), what the copy guard compares copies with
  /// (written_before_flush): the connection that sent it takes one for every shard and
  /// member (op::explicit_cas of the flush), a delayed one its deadline.
  void flush_now(uint64_t cut = 0) noexcept {
    if (guard_s != 0) {
      guard_flushed_at = now;
      guard_flushed_seq = ++noted_seq;
      guard_flushed_cas = cut != 0 ? cut : next_cas();
    }
    while (!fifo.empty()) release(fifo.front());
    active = -1;
    idx.clear();
    st.bytes = 0;
  }

  void apply_pending_flush() noexcept {
    if (flush_at != 0 && now >= flush_at) {
      // (the segment files go first: a crash in between flushes again)
      flush_now(uint64_t{flush_at} * 1000000u << 8);  // (its deadline on the CAS clock)
      set_flush_at(0);
    }
  }

  /// A delayed flush_all lives in the data directory too (`flush_at`: its deadline in unix
  /// seconds as 10 digits and a newline, 0 = none), so that a restart before its deadline
  /// keeps it, and one after flushes what it recovers: else a delayed flush that the node did
  /// not live to apply would be lost and the items it flushed would come back for good. The
  /// file is made at recovery and then rewritten in place, 11 bytes at offset 0 (no new
  /// blocks: it is written even on a full disk; one page, so a crash leaves one whole value).
  std::string flush_path() const { return dir + "/flush_at"; }
  struct fd_holder {
    int fd = -1;
    ~fd_holder() {
      if (fd >= 0) ::close(fd);
    }
  } flush_file;
  static constexpr size_t k_flush_text = 11;
  void set_flush_at(uint32_t at) noexcept {
    flush_at = at;
    if (flush_file.fd < 0) return;
    char text[k_flush_text + 1];
    std::snprintf(text, sizeof text, "%010" PRIu32 "\n", at);
    if (::pwrite(flush_file.fd, text, k_flush_text, 0) != ssize_t(k_flush_text))
      last_error = "cannot write " + flush_path() + ": " + std::strerror(errno);
  }

  /// At recovery: the delayed flush the directory holds, if any (see set_flush_at).
  void recover_flush_at(uint32_t t) {
    flush_file.fd = ::open(flush_path().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (flush_file.fd < 0) {
      last_error = "cannot open " + flush_path() + ": " + std::strerror(errno);
      return;
    }
    char text[k_flush_text + 1] = {};
    const ssize_t n = ::pread(flush_file.fd, text, k_flush_text, 0);
    uint64_t at = 0;
    bool ok = n == ssize_t(k_flush_text) && text[k_flush_text - 1] == '\n';
    for (size_t i = 0; ok && i + 1 < k_flush_text; ++i) {
      ok = std::isdigit(static_cast<unsigned char>(text[i])) != 0;
      at = at * 10 + uint64_t(text[i] - '0');
    }
    if (!ok || at > UINT32_MAX) at = 0;  // new, torn or not ours: no flush
    if (at != 0 && t >= at) {  // its deadline passed while the node was down: all predates it
      flush_now();
      at = 0;
    }
    struct stat fst{};
    if ((::fstat(flush_file.fd, &fst) != 0 || fst.st_size != off_t(k_flush_text)) &&
        ::ftruncate(flush_file.fd, k_flush_text) != 0)
      last_error = "cannot size " + flush_path() + ": " + std::strerror(errno);
    set_flush_at(uint32_t(at));  // (also gives a new file its bytes, while there is room)
  }

  // -- ops -------------------------------------------------------------------------------------

  result do_get(const op& o) {
    result res;
    const bool touch = o.get_touch;
    if (touch) ++st.cmd_touch;
    // As memcached counts them: gat's misses are touches, mg T's are gets' (its touch is
    // counted only once it found the item); `me` counts in neither.
    const bool counts = o.counted && o.counts != op::counting::nothing;
    auto count_miss = [&] {
      if (!counts) return;
      if (touch && o.counts != op::counting::touch_or_miss) ++st.touch_misses;
      else ++st.get_misses;
    };
    if (!valid_key(o.key)) {
      count_miss();
      return res;
    }
    const uint32_t h = key_hash(o.key);
    const size_t pos = lookup(o.key, h);
    if (pos == npos) {
      res.st = status::miss;
      mark_gone(res, o.key);
      if (o.vivify) {
        // mg N: create an empty item; this client wins the right to fill it, later readers
        // see it with the token already handed out (Z). memcached answers this like a hit
        // ("VA 0 ... W" / "HD W") and counts it as one (proto_text.c process_mget_cmd).
        item_spec s;
        s.key = o.key;
        s.hash = h;
        s.exptime = absolute_exptime(o.vivify_ttl, now);  // (N's or a later T's: the parser)
        s.cas = cas_for(o);
        s.token = true;
        // memcached: the next mg answers h1 (this one h0: fill_meta below), unless this one
        // asked for no bump (u): then h0 still.
        s.fetched = o.get_bump;
        s.atime = now;
        const size_t p = commit(s);
        if (p != npos) {
          const entry& e = idx.at(p);
          const record_header* r = hdr(e);
          fill_meta(res, e, r);
          res.exptime_before = 0;  // (memcached makes it without a TTL, then applies N's)
          res.fetched = false;  // (nobody had it before this request)
          res.win = true;
          res.st = status::stored;
          if (o.get_value) res.value = value_slice(e, r);
          if (counts) {
            if (touch) ++st.touch_hits; else ++st.get_hits;
          }
          return res;
        }
      }
      count_miss();
      return res;
    }
    entry& e = idx.at(pos);
    record_header* r = hdr(e);
    const uint32_t before = r->exptime;
    if (touch) {
      r->exptime = absolute_exptime(o.ttl, now);
      ++st.touch_hits;
    } else if (counts) {
      ++st.get_hits;
    }
    fill_meta(res, e, r);  // last_access / fetched: as before this access
    res.exptime_before = before;
    res.st = status::hit;
    bool won = false;
    const uint32_t recache_exptime = o.recache_before_touch ? before : r->exptime;
    if (o.recache && !e.token() && recache_exptime != 0) {
      const uint32_t threshold = absolute_exptime(o.recache_ttl, now);
      if (recache_exptime < threshold) won = true;
    }
    if (e.token()) res.already_won = true;
    if (r->stale() && !e.token() && !o.keep_token) won = true;
    if (won) {
      res.win = true;
      hand_out_token(e);
    }
    if (o.get_bump) {
      e.atime = now;
      e.set_fetched(true);
    }
    if (o.get_value) res.value = value_slice(e, r);
    // The cluster's own reads (warming, replication) copy the item to a node that may not
    // have this pending flush_all (it joined during the delay): the copy dies with it.
    if (!o.counted && flush_at != 0 && (res.exptime == 0 || res.exptime > flush_at))
      res.exptime = flush_at;
    return res;
  }

  result do_store(const op& o) {
    result res;
    ++st.cmd_set;
    if (!valid_key(o.key)) {
      res.st = status::not_stored;
      return res;
    }
    const uint32_t h = key_hash(o.key);
    if (o.copy && guard_s != 0) {
      // An item here that expired is a delete the add must be ordered after: finding it
      // notes it (lookup), so that a copy of an older write does not bring the key back.
      if (o.mode == store_mode::add)
        lookup(o.key, h);
      if (o.mode == store_mode::add ? copied_before_delete(o)
                                    : written_before_flush(o) ||
                                        (o.mode == store_mode::set && written_before_delete(o))) {
        ++st.copies_refused;  // (read before a delete or flush here, landing after it)
        res.st = status::not_stored;
        return res;
      }
    }
    store_mode mode = o.mode;
    // meta ms: a CAS value upgrades set and replace to a CAS store (memcached process_mset).
    if (o.compare_cas != 0 && (mode == store_mode::set || mode == store_mode::replace))
      mode = store_mode::cas;
    if (o.value.size() > max_value) {
      res.st = status::too_large;
      if (mode == store_mode::set) remove_key(o.key, h);  // memcached: no stale data on SET
      return res;
    }
    const size_t pos = lookup(o.key, h);
    const uint64_t gen = idx.generation();
    const entry* e = pos != npos ? &idx.at(pos) : nullptr;
    const record_header* old = e ? hdr(*e) : nullptr;
    // (an op that needs the item and finds none here says whether it went lately)
    auto nothing_here = [&](status st_none) {
      res.st = st_none;
      mark_gone(res, o.key);
      return res;
    };

    item_spec s;
    s.key = o.key;
    s.hash = h;
    s.value = o.value;
    s.flags = o.flags;
    s.exptime = absolute_exptime(o.ttl, now);
    s.cas = cas_for(o);
    s.atime = now;
    if (o.as_stale)
      s.state = k_state_stale;
    s.token = o.token_out;
    s.fetched = o.as_fetched;
    std::string combined;

    switch (mode) {
      case store_mode::set:
        // A copy of another node's state (replication) never replaces a later write: with two
        // nodes briefly acting as the key's primary (their views of the ring differ), each
        // one's copies would otherwise land over the other's newer write. The owner holds
        // something newer: nothing to do, and nothing to try again.
        if (o.copy && old && cas_clock_newer(old->cas, o.explicit_cas)) {
          ++st.copies_superseded;
          res.st = status::stored;
          res.cas = old->cas;
          return res;
        }
        break;
      case store_mode::add:
        // A copy (warming, re-replication) replaces an older item (a node warmed the key
        // from an owner that took a write after; it recovered the item from --data-dir):
        // the later write wins, as its CAS says; otherwise an add stores nothing over an item.
        if (old && !(o.copy && cas_clock_newer(o.explicit_cas, old->cas))) {
          // A copy of the very write held here (same CAS, length and flags) still carries
          // what reads did to it where it came from, which replication does not send: read
          // (mg h) and its win token out (W/Z): a moved key's new owner gets them from its
          // owner before (a read check, an update's look ahead: actors/connection.cpp).
          if (o.copy && o.explicit_cas != 0 && o.explicit_cas == old->cas &&
              o.value.size() == old->value_len && o.flags == old->flags) {
            entry& held = idx.at(pos);
            if (o.as_fetched) held.set_fetched(true);
            if (o.token_out) hand_out_token(held);
          }
          res.st = status::not_stored;
          return res;
        }
        break;
      case store_mode::replace:
        if (!old)
          return nothing_here(status::not_stored);
        // A copy (a hand-back's, of a write its sender took just before it saw this node
        // dead) replaces only an older item by the CAS clock: it brings no key back.
        if (o.copy && !cas_clock_newer(o.explicit_cas, old->cas)) {
          ++st.copies_superseded;
          res.st = status::not_stored;
          res.cas = old->cas;
          return res;
        }
        break;
      case store_mode::append:
      case store_mode::prepend:
        if (!old) {
          if (o.vivify) {  // meta ms MA/MP with N: create the item
            s.exptime = absolute_exptime(o.vivify_ttl, now);
            break;
          }
          return nothing_here(status::not_stored);
        }
        if (o.compare_cas != 0 && o.compare_cas != old->cas) {
          res.st = status::exists;
          return res;
        }
        if (uint64_t(old->value_len) + o.value.size() > max_value) {
          // memcached: the combined item cannot be allocated, NOT_STORED (meta NS); the
          // request's own size was checked against -I above.
          res.st = status::not_stored;
          return res;
        }
        combined.reserve(old->value_len + o.value.size());
        if (mode == store_mode::append) {
          combined.append(old->value(), old->value_len);
          combined.append(o.value);
        } else {
          combined.append(o.value);
          combined.append(old->value(), old->value_len);
        }
        s.value = combined;
        s.flags = old->flags;      // append/prepend keep flags and TTL
        s.exptime = old->exptime;
        break;
      case store_mode::cas:
        if (!old) {
          ++st.cas_misses;
          return nothing_here(status::not_found);
        }
        if (o.compare_cas != old->cas) {
          if (o.invalidate && o.compare_cas != 0 && o.compare_cas < old->cas) {
            // ms I with an older CAS: store, but as stale, keeping TTL and a handed-out token
            // (memcached CAS_STALE; `ms k C0 I` answers EX there, as C0 without I).
            s.exptime = old->exptime;
            s.state = k_state_stale;
            s.token = e->token();
          } else {
            ++st.cas_badval;
            res.st = status::exists;
            return res;
          }
        }
        ++st.cas_hits;
        break;
    }

    const size_t p = commit(s, pos, gen);
    if (p == npos) {
      res.st = status::no_memory;
      if (mode == store_mode::set) remove_key(o.key, h);
      return res;
    }
    if (old && o.copy && (mode == store_mode::add || mode == store_mode::replace))
      ++st.copies_replaced;  // (a copy of a later write: see above)
    const entry& ne = idx.at(p);
    fill_meta(res, ne, hdr(ne));
    res.st = status::stored;
    return res;
  }

  result do_remove(const op& o) {
    result res;
    // A client's delete counts (a hand-back, the cluster's own removes and a too-large set's
    // removal do not: memcached counts none of them); md I counts a miss, not a hit.
    const bool counts = o.counted && !o.hand_back && o.counts != op::counting::nothing;
    if (!valid_key(o.key)) {
      if (counts) ++st.delete_misses;
      res.st = status::not_found;
      return res;
    }
    // A client's delete, or its replication, that removes the item, or finds none and has no
    // CAS to match (the key is to be absent); not the cluster's own removes (uncounted: a past
    // owner's copy dropped after a write elsewhere, a hand-back), after which a copy of the
    // current item is welcome. Not a delete whose CAS did not match: the item stays, here or
    // (none here, inside a ring change's window) at the key's previous owner, whose copy is
    // then the item the client knows (md C that answers EX, then cas: EXISTS, not NOT_FOUND).
    const uint32_t h = key_hash(o.key);
    if (o.copy)
      return remove_copy(o, h);
    const bool noted = guard_s != 0 && o.counted && !o.hand_back && !o.invalidate;
    const bool cas_check = o.compare_cas != 0 || o.cas_given;
    const size_t pos = lookup(o.key, h);
    if (pos == npos) {
      if (counts) ++st.delete_misses;
      mark_gone(res, o.key);
      if (noted && !cas_check)
        note_delete(o.key);
      res.st = status::not_found;
      return res;
    }
    const entry e = idx.at(pos);
    const record_header* r = hdr(e);
    // A hand-back spares an item stored since this node came back, a copy of the sender's
    // very item (its CAS, explicit_cas: the deletes nodes before session 47 handed back
    // carried the CAS of the sender's item; a hand-back of a delete with its point on the CAS
    // clock is a delete's copy, remove_copy) and an item newer than it by the CAS clock
    // (cas_clock_newer: a client's meta E orders nothing): a write this node took while the
    // sender had it dead (the other side of a partition), which the sender's older item must
    // not undo.
    const bool cas_differs = cas_check && o.compare_cas != r->cas;
    if (counts && cas_differs)
      ++st.delete_misses;  // (md C<other>: memcached counts a miss, then answers EX)
    if (cas_differs ||
        (o.hand_back &&
         (r->cas > return_mark() ||
          (o.explicit_cas != 0 &&
           (r->cas == o.explicit_cas || cas_clock_newer(r->cas, o.explicit_cas)))))) {
      res.st = status::exists;
      res.cas = r->cas;  // (as a removal's, below)
      return res;
    }
    if (noted)
      note_delete(o.key);
    if (o.invalidate) {
      // md I: keep the item but mark it stale with a new CAS (a new record, since the CAS is
      // checksummed); the token is cleared so the next reader wins. md T (get_touch, or a
      // nonzero ttl) sets a new TTL.
      const std::string value(r->value(), r->value_len);
      item_spec s;
      s.key = o.key;
      s.hash = h;
      s.value = value;
      s.flags = r->flags;
      s.exptime = (o.get_touch || o.ttl != 0) ? absolute_exptime(o.ttl, now) : r->exptime;
      s.cas = cas_for(o);
      s.state = k_state_stale;
      s.fetched = e.fetched();
      s.atime = e.atime;
      const size_t p = commit(s);
      if (p == npos) {
        res.st = status::no_memory;
        return res;
      }
      --st.total_items;  // not a new item
      const entry& ne = idx.at(p);
      fill_meta(res, ne, hdr(ne));
      res.st = status::deleted;
      return res;
    }
    res.cas = r->cas;  // (which a delete at the key's owner orders against: cluster)
    remove_at(pos);
    if (counts) ++st.delete_hits;
    res.st = status::deleted;
    return res;
  }

  /// A delete's copy (re-replication of a delete its sender noted, shard::recent_deletes;
  /// replication's, when the primary noted it; a hand-back's, of a delete made while this
  /// node was dead to its sender: op::hand_back):
  /// spares only an item later than it by the CAS clock (a write that reached this owner
  /// before the delete's copy); any other goes, also one whose CAS or the delete's point is
  /// no clock value (unordered: as a plain delete, which replication's used to be). Notes the
  /// delete with its point, so that copies of older writes are refused after it. Counted in
  /// no delete stat: the client's delete counted at its primary (a replica counting it too
  /// made one delete two in a cluster's sums).
  result remove_copy(const op& o, uint32_t h) {
    result res;
    observe_cas(o.explicit_cas);  // (as a copy's store: later writes here get a later CAS)
    const size_t pos = lookup(o.key, h);
    if (pos != npos && cas_clock_newer(hdr(idx.at(pos))->cas, o.explicit_cas)) {
      res.st = status::exists;
      return res;
    }
    if (guard_s != 0 && o.explicit_cas != 0)
      note_delete(o.key, o.explicit_cas);
    if (pos == npos) {
      res.st = status::not_found;
      return res;
    }
    remove_at(pos);
    res.st = status::deleted;
    return res;
  }

  result do_arith(const op& o) {
    result res;
    uint64_t& hits = o.incr ? st.incr_hits : st.decr_hits;
    uint64_t& misses = o.incr ? st.incr_misses : st.decr_misses;
    if (!valid_key(o.key)) {
      ++misses;
      res.st = status::not_found;
      return res;
    }
    const uint32_t h = key_hash(o.key);
    const size_t pos = lookup(o.key, h);
    if (pos == npos) {
      if (!o.vivify) {
        ++misses;
        res.st = status::not_found;
        mark_gone(res, o.key);
        return res;
      }
      // ma N: create the counter with `initial` (returned as is, not incremented).
      const std::string v = std::to_string(o.initial);
      item_spec s;
      s.key = o.key;
      s.hash = h;
      s.value = v;
      s.exptime = absolute_exptime(o.vivify_ttl, now);  // N's, or a later T's (the parser)
      s.cas = cas_for(o);
      s.atime = now;
      const size_t p = commit(s);
      if (p == npos) {
        res.st = status::no_memory;
        return res;
      }
      const entry& ne = idx.at(p);
      fill_meta(res, ne, hdr(ne));
      res.exptime_before = 0;  // (memcached makes it without a TTL, then applies N's)
      res.number = o.initial;
      res.st = status::stored;  // created, not counted: meta q still answers (as memcached)
      return res;
    }
    const entry e = idx.at(pos);
    const record_header* r = hdr(e);
    // An empty value is no number whatever the CAS says; any other is compared first (the
    // order of memcached's do_add_delta: `ma K C<other>` on "abc" answers EX).
    if (r->value_view().empty()) {
      res.st = status::non_numeric;
      return res;
    }
    if (o.compare_cas != 0 && o.compare_cas != r->cas) {
      res.st = status::exists;
      return res;
    }
    uint64_t v;
    if (!parse_counter(r->value_view(), v)) {
      res.st = status::non_numeric;
      return res;
    }
    if (o.incr) v += o.delta;  // wraps mod 2^64
    else v = o.delta > v ? 0 : v - o.delta;
    // Always a new record with the exact decimal (memcached may pad in place with spaces).
    const std::string nv = std::to_string(v);
    item_spec s;
    s.key = o.key;
    s.hash = h;
    s.value = nv;
    s.flags = r->flags;
    const uint32_t before = r->exptime;
    s.exptime = o.get_touch ? absolute_exptime(o.ttl, now) : r->exptime;  // ma T
    s.cas = cas_for(o);
    // Not a fetch. memcached changes a counter in place while the result is no longer (the
    // item keeps its fetched flag, and an `md I` item stays stale with its win token handed
    // out or not) and else makes a new item (not fetched, not stale, no token).
    // (memcached compares with the item's length, which keeps a decr's space padding: after
    // "100" decr 1 incr 1 it changes in place where this node makes a new item.)
    const bool in_place = nv.size() <= r->value_view().size();
    s.fetched = e.fetched() && in_place;
    if (in_place) {
      s.state = r->state & k_state_stale;
      s.token = e.token();
    }
    s.atime = now;
    const size_t p = commit(s);
    if (p == npos) {
      res.st = status::no_memory;
      return res;
    }
    if (in_place) --st.total_items;  // (memcached links a new item when the number grows)
    ++hits;
    const entry& ne = idx.at(p);
    fill_meta(res, ne, hdr(ne));
    res.exptime_before = before;
    res.last_access = e.atime;
    res.fetched = e.fetched();
    res.number = v;
    res.st = status::hit;
    return res;
  }

  result do_touch(const op& o) {
    result res;
    ++st.cmd_touch;
    const size_t pos = valid_key(o.key) ? lookup(o.key, key_hash(o.key)) : npos;
    if (pos == npos) {
      ++st.touch_misses;
      res.st = status::not_found;
      mark_gone(res, o.key);
      return res;
    }
    entry& e = idx.at(pos);
    record_header* r = hdr(e);
    r->exptime = absolute_exptime(o.ttl, now);
    ++st.touch_hits;
    fill_meta(res, e, r);
    e.atime = now;
    e.set_fetched(true);
    res.st = status::hit;
    return res;
  }

  result do_flush(const op& o) {
    result res;
    const uint32_t at = o.ttl > 0 ? absolute_exptime(o.ttl, now) : 0;
    if (at == 0 || at <= now) {
      // The same flush_all again (its cut: taken once where it was sent, unique): it came by
      // more than one way (members pass on a flush from one whose view lags,
      // cluster/service.cpp relay_flush), and the writes stored since the first copy came
      // after it. Nothing more to take. (Not by order: cuts from different nodes' clocks.)
      if (o.explicit_cas != 0) {
        for (uint64_t c : applied_cuts)
          if (c == o.explicit_cas) {
            res.st = status::ok;
            return res;
          }
        applied_cuts[next_cut++ % std::size(applied_cuts)] = o.explicit_cas;
      }
      // Due now in the directory first, as a delayed one that came due: a crash while the
      // segment files go (one unlink each) flushes again at recovery, instead of bringing
      // back the part not unlinked yet.
      set_flush_at(now);
      flush_now(o.explicit_cas);
      set_flush_at(0);
    } else {
      set_flush_at(at);  // replaces an earlier pending flush, like memcached's oldest_live
    }
    res.st = status::ok;
    return res;
  }

  // -- recovery --------------------------------------------------------------------------------

  /// Rebuilds the index from one segment file's records; returns where the scan stopped.
  uint64_t recover_segment(uint32_t slot, uint64_t& max_cas) {
    char* base = segs[slot].seg->data();
    const uint64_t size = segs[slot].seg->size();
    uint64_t off = 0;
    while (off < size) {
      auto* r = reinterpret_cast<record_header*>(base + off);
      if (size - off < k_hdr || r->magic != k_record_magic) {
        // Unwritten tail (all zero), or a torn / foreign record: stop here.
        if (!all_zero(base + off, size - off)) ++st.recovery_skipped;
        break;
      }
      if (r->version != k_record_version || r->key_len == 0 || r->key_len > k_max_key_len) {
        ++st.recovery_skipped;
        break;
      }
      const uint64_t rs = record_size(r->key_len, r->value_len);
      if (rs > size - off) {
        ++st.recovery_skipped;
        break;
      }
      const uint32_t sum = record_checksum(r->key_len, r->value_len, r->flags, r->cas,
                                           r->key_view(), r->value_view());
      if (sum != r->checksum) {
        ++st.recovery_skipped;
        r->state |= k_state_dead;
        off += rs;
        continue;
      }
      // Dead ones too (a client may still hold theirs); not a client's meta E of 2^62 and
      // more (observe_cas would ignore the whole maximum).
      if (r->cas < k_cas_observe_max) max_cas = std::max(max_cas, r->cas);
      if (r->dead() || expired(r)) {
        r->state |= k_state_dead;
        off += rs;
        continue;
      }
      const std::string_view key = r->key_view();
      const uint32_t h = key_hash(key);
      idx.reserve_one();
      entry ne;
      ne.hash = h;
      ne.set_location(slot, off);
      ne.atime = now;
      ne.set_token(r->token());
      const size_t pos = find(key, h);
      if (pos != npos) {  // a later record for the same key wins
        const entry old = idx.at(pos);
        idx.at(pos) = ne;
        record_header* orec = hdr(old);
        orec->state |= k_state_dead;
        st.bytes -= record_bytes(orec->key_len, orec->value_len);
        --segs[old.slot()].live_items;
        segs[old.slot()].live_bytes -= record_size(orec->key_len, orec->value_len);
      } else {
        idx.insert(ne);
      }
      ++segs[slot].live_items;
      segs[slot].live_bytes += rs;
      st.bytes += record_bytes(r->key_len, r->value_len);
      off += rs;
    }
    return off;
  }

  bool recover(std::string& error) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      error = "cannot create data directory " + dir + ": " + ec.message();
      return false;
    }
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
      error = "cannot open data directory " + dir + ": " + std::strerror(errno);
      return false;
    }
    std::vector<std::pair<uint64_t, std::string>> files;
    while (dirent* de = ::readdir(d)) {
      const std::string_view name = de->d_name;
      if (const auto seq = name_number(name, "seg-", ".dat"))
        files.emplace_back(*seq, dir + "/" + std::string(name));
    }
    ::closedir(d);
    std::sort(files.begin(), files.end());

    uint64_t max_cas = 0;
    for (const auto& [seq, path] : files) {
      next_seq = std::max(next_seq, seq + 1);
      std::string err;
      bool unusable = false;
      auto seg = segment::open_file(seq, path, acct, err, unusable);
      if (!seg && !unusable) {
        // The system's fault (too many open files, no memory, permissions): the data may be
        // fine, so it stays, and the node does not start without it.
        error = "cannot recover " + path + ": " + err;
        return false;
      }
      if (!seg || seg->size() > item_index::k_max_offset) {
        ++st.recovery_skipped;  // unusable file (empty, not regular, too large)
        ::unlink(path.c_str());
        continue;
      }
      const uint32_t slot = take_slot();
      segs[slot].seg = std::move(seg);
      segs[slot].live_items = 0;
      segs[slot].live_bytes = 0;
      fifo.push_back(slot);
      live_seg_bytes += segs[slot].seg->size();
      segs[slot].used = recover_segment(slot, max_cas);
    }
    // Segments left without live items are deleted; the rest stay, sealed.
    std::vector<uint32_t> empty;
    for (uint32_t slot : fifo)
      if (segs[slot].live_items == 0) empty.push_back(slot);
    for (uint32_t slot : empty) release(slot);
    observe_cas(max_cas);
    recover_flush_at(clock());
    // Honor the memory limit (it may have shrunk since the files were written). Room for the
    // next records is made by the first write that needs it, as any write at the limit does.
    uint64_t no_budget = 0;
    while (acct->bytes.load(std::memory_order_relaxed) > limit && !fifo.empty())
      evict_oldest(nullptr, no_budget);
    st.recovered_items = idx.size();
    return true;
  }

  /// After recover(): the newest segment, when records may go on after its last one (a
  /// regular one whose tail is unwritten, all zero), else -1. open() appends there instead of
  /// taking a new segment, which at a full -m or a full disk evicted the oldest one at every
  /// restart (a clean SIGTERM then restart of a full cache lost a 16th of a shard). (Its
  /// tail's blocks are allocated again: a copy of the directory by a sparse-aware tool leaves
  /// a hole there, and a write into a hole of a full disk's mapping is a SIGBUS.)
  int64_t resumable_segment() const {
    if (fifo.empty()) return -1;
    const seg_slot& last = segs[fifo.back()];
    const uint64_t size = last.seg->size();
    const bool resumes = size == seg_size && last.used + k_hdr < size &&
                         all_zero(last.seg->data() + last.used, size - last.used) &&
                         ::posix_fallocate(last.seg->fd(), off_t(last.used),
                                           off_t(size - last.used)) == 0;
    return resumes ? int64_t(fifo.back()) : -1;
  }

  /// meta W: the item's win token goes out, in its index entry and its record (so that a
  /// restart keeps it handed out).
  void hand_out_token(entry& e) noexcept {
    e.set_token(true);
    hdr(e)->state |= k_state_token;
  }
};

// ---------------------------------------------------------------------------------------------
// shard

shard::shard(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
shard::~shard() = default;

std::unique_ptr<shard> shard::open(const shard_config& cfg, clock_fn clock, std::string& error) {
  try {
    auto p = std::make_unique<impl>();
    p->cfg = cfg;
    p->clock = clock ? std::move(clock) : clock_fn(system_clock_seconds);
    const long pg = ::sysconf(_SC_PAGESIZE);
    p->page = pg > 0 ? uint64_t(pg) : 4096;
    uint64_t seg = std::max<uint64_t>(cfg.segment_size, p->page);
    seg = std::min<uint64_t>(round_up(seg, p->page), 1ull << 32);
    p->seg_size = seg;
    p->limit = std::max<uint64_t>(cfg.memory_limit, 2 * seg);
    p->max_value = std::min<uint64_t>(cfg.max_item_size, UINT32_MAX - 4096);
    p->now = p->clock();
    if (!cfg.data_dir.empty()) {
      p->dir = cfg.data_dir + "/shard-" + std::to_string(cfg.id);
      if (!p->recover(error)) return nullptr;
    }
    raise_cas(restart_cas_floor());
    // The newest recovered segment goes on when it can; else a new one, unless that would
    // evict (a full shard recovered): then the first write takes it (active -1, as after a
    // flush). A fresh shard makes its first segment now, so that an unusable memfd or data
    // directory is reported at start.
    int64_t slot = p->resumable_segment();
    if (slot < 0 && (p->fifo.empty() ||
                     p->acct->bytes.load(std::memory_order_relaxed) + p->seg_size <= p->limit)) {
      slot = p->new_segment(p->seg_size, 0);
      if (slot < 0) {
        error = "cannot create the first segment: " + p->last_error;
        return nullptr;
      }
    }
    p->active = slot;
    return std::unique_ptr<shard>(new shard(std::move(p)));
  } catch (const std::bad_alloc&) {
    error = "out of memory opening shard " + std::to_string(cfg.id);
    return nullptr;
  } catch (const std::exception& ex) {
    error = std::string("opening shard: ") + ex.what();
    return nullptr;
  }
}

void shard::execute(op_batch& ops, result_batch& out) {
  impl& m = *impl_;
  out.reserve(out.size() + ops.size());
  constexpr size_t k_window = 32;  // ops whose misses overlap (bounded stack, lines in flight)
  uint32_t hashes[k_window];
  for (size_t base = 0; base < ops.size(); base += k_window) {
    const size_t n = std::min(k_window, ops.size() - base);
    if (n > 1) {
      for (size_t i = 0; i < n; ++i) {
        const std::string& key = ops[base + i].key;
        if (!valid_key(key)) continue;
        hashes[i] = m.key_hash(key);
        m.idx.prefetch(hashes[i]);
      }
      for (size_t i = 0; i < n; ++i) {
        const std::string& key = ops[base + i].key;
        if (!valid_key(key)) continue;
        const entry* e = m.idx.first_with_hash(hashes[i]);
        if (e == nullptr) continue;
        const char* r = reinterpret_cast<const char*>(m.hdr(*e));
        __builtin_prefetch(r);                          // header (and usually the key)
        __builtin_prefetch(r + k_hdr + key.size() - 1);  // the key's last byte
      }
    }
    for (size_t i = 0; i < n; ++i) {
      if (n > 1 && valid_key(ops[base + i].key)) {  // its hash is known: not computed again
        m.memo_key = ops[base + i].key.data();
        m.memo_len = ops[base + i].key.size();
        m.memo_hash = hashes[i];
      }
      result r = execute(ops[base + i]);  // catches everything: the memo is always reset
      m.memo_key = nullptr;
      out.push_back(std::move(r));
    }
  }
}

void shard::set_memory_limit(uint64_t bytes) {
  impl_->limit = std::max<uint64_t>(bytes, 2 * impl_->seg_size);
}

bool shard::shrink(size_t segments) {
  impl& m = *impl_;
  uint64_t no_budget = 0;
  for (size_t i = 0; i < segments && m.live_seg_bytes > m.limit && !m.fifo.empty(); ++i)
    m.evict_oldest(nullptr, no_budget);
  return m.live_seg_bytes > m.limit && !m.fifo.empty();
}

result shard::execute(op& o) {
  impl& m = *impl_;
  result res;
  res.st = status::no_memory;  // (what a throw answers: std::bad_alloc of index growth...)
  try {
    m.now = m.clock();
    m.client_op = o.counted && !o.hand_back && !o.copy;
    m.apply_pending_flush();
    switch (o.kind) {
      case op_kind::get: return m.do_get(o);
      case op_kind::store: res = m.do_store(o); break;
      case op_kind::remove: return m.do_remove(o);
      case op_kind::arith: return m.do_arith(o);
      case op_kind::touch: return m.do_touch(o);
      case op_kind::flush: return m.do_flush(o);
    }
  } catch (...) {
  }
  if (o.kind == op_kind::store && res.st == status::no_memory && m.client_op)
    ++m.st.store_no_memory;  // (memcached's: a client's write refused for want of room)
  return res;
}

size_t shard::sweep(size_t max_items) {
  impl& m = *impl_;
  m.now = m.clock();
  m.apply_pending_flush();
  size_t reclaimed = 0;
  for (size_t visited = 0; visited < max_items && m.idx.size() > 0; ++visited) {
    if (m.sweep_cursor >= m.idx.capacity()) m.sweep_cursor = 0;
    const entry& e = m.idx.at(m.sweep_cursor);
    if (!e.empty() && m.expired(m.hdr(e))) {
      m.reclaim_expired(m.sweep_cursor, false);  // a follower may move into this slot: look again
      ++reclaimed;
      continue;
    }
    ++m.sweep_cursor;
  }
  return reclaimed;
}

void shard::begin_prune() {
  impl_->prune_cursor = 0;
  impl_->prune_capacity = impl_->idx.capacity();
  impl_->idx.watch(&impl_->prune_cursor);
}

shard::prune_progress shard::prune(
  const std::function<bool(std::string_view key)>& drop, uint32_t untouched_since,
  size_t max_slots, const std::function<void(std::string_view key, uint64_t cas)>& seen) {
  impl& m = *impl_;
  prune_progress p;
  if (m.prune_capacity != m.idx.capacity()) {  // resized since: entries moved, look at all
    m.prune_cursor = 0;
    m.prune_capacity = m.idx.capacity();
  }  // (erasures since lowered the cursor where they moved an entry behind it: watch())
  for (size_t visited = 0; visited < max_slots && m.prune_cursor < m.idx.capacity(); ++visited) {
    const entry& e = m.idx.at(m.prune_cursor);
    if (!e.empty()) {
      const record_header* r = m.hdr(e);
      const std::string_view key(r->key(), r->key_len);
      if (seen)
        seen(key, r->cas);
      if (drop(key)) {
        if (e.atime >= untouched_since) {
          ++p.recent;
        } else {
          m.remove_at(m.prune_cursor);  // a follower may move into this slot: look again
          ++m.st.pruned;
          ++p.dropped;
          continue;
        }
      }
    }
    ++m.prune_cursor;
  }
  p.done = m.prune_cursor >= m.idx.capacity();
  return p;
}

const shard_stats& shard::stats() const {
  impl& m = *impl_;
  m.st.curr_items = m.idx.size();
  m.st.segments = m.acct->count.load(std::memory_order_relaxed);
  m.st.segment_bytes = m.acct->bytes.load(std::memory_order_relaxed);
  m.st.index_bytes = m.idx.memory_bytes();
  return m.st;
}

const shard_config& shard::config() const { return impl_->cfg; }

void shard::ring_changed() {
  impl_->ring_seq = impl_->noted_seq;
}

void shard::recent_deletes(const std::function<void(std::string_view key)>& each) {
  impl& m = *impl_;
  if (m.guard_s == 0)
    return;
  m.now = m.clock();
  m.forget_deletions(m.now);
  for (const auto& d : m.deletions) {
    auto it = m.deleted_at.find(d.hash);
    if (it == m.deleted_at.end() || it->second.seq != d.n.seq)
      continue;  // (a later note of the key comes later)
    if (!m.live(d.key))
      each(d.key);
  }
}

uint64_t shard::recent_delete(std::string_view key) {
  impl& m = *impl_;
  if (m.guard_s == 0 || !valid_key(key))
    return 0;
  m.now = m.clock();
  if (m.live(key))
    return 0;
  const auto* n = m.noted_lately(key);
  return n ? n->cas : 0;
}

void shard::guard_copies(uint32_t seconds) {
  impl& m = *impl_;
  m.guard_s = seconds;
  if (seconds == 0) {
    m.deleted_at.clear();
    m.deletions.clear();
    m.guard_flushed_at = 0;
    m.guard_flushed_cas = 0;
  }
}

} // namespace bifrost::storage
