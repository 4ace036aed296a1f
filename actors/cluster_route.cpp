#include "actors/cluster_route.hpp"

#include "storage/shard.hpp"

#include <algorithm>

namespace bifrost::actors {

placement place(const cluster_view& cv, uint64_t hash, op_route& rt) noexcept {
  constexpr size_t k_max_tries = 16;  // read failover gives up after this many live nodes
  cluster::ring::member_id owners[k_max_tries];
  const uint64_t placed_in = rt.epoch;
  rt.epoch = cv.ring ? cv.ring->epoch() : 0;
  if (placed_in != 0 && rt.epoch != placed_in && (rt.looked || rt.warmed)) {
    // Placed again in a newer ring after its look ahead or its warming (the op runs where
    // the key goes now): that ring's owner may not hold what the look or the warming put at
    // the owner before, and its previous owners are others. It looks and warms anew (else
    // an update found nothing there and could not warm: replace NOT_STORED, gat a miss; the
    // RingChange sweep, R = 2 join, seeds 318 and 323).
    rt.looked = false;
    rt.warmed = false;
    rt.ahead = false;
    rt.lately = false;
    rt.warm_next = 0;
  }
  if (rt.tries >= k_max_tries || cv.joining)
    return placement::unavailable;
  const size_t want = rt.tries + 1u;
  const size_t n = cv.ring ? cv.ring->live_owner_ids(hash, want, owners) : 0;
  if (n < want)
    return placement::unavailable;
  rt.owner = owners[rt.tries];
  if (rt.owner != cv.self && rt.owner < cv.peers.size() && cv.peers[rt.owner]) {
    rt.local = false;
    return placement::peer;
  }
  rt.local = true;
  return placement::local;
}

warm_class classify(const storage::op& o) noexcept {
  using storage::op_kind;
  using storage::store_mode;
  switch (o.kind) {
    case op_kind::get:
      return o.vivify                   ? warm_class::insert
             : storage::changes_item(o) ? warm_class::update
                                        : warm_class::read;
    case op_kind::store:  // (ms MA/MP with N makes the item: warmed first, as an add)
      return o.mode == store_mode::set                  ? warm_class::blind
             : o.mode == store_mode::add || o.vivify ? warm_class::insert
                                                        : warm_class::update;
    case op_kind::remove:  // (md I keeps the item, made stale: it needs the item)
      return o.invalidate ? warm_class::update : warm_class::remove;
    case op_kind::arith:
      return o.vivify ? warm_class::insert : warm_class::update;
    case op_kind::touch:
      return warm_class::update;
    default:
      return warm_class::blind;
  }
}

namespace {
// Warming may still happen for this op: inside the window after a ring change, not yet done.
bool may_warm(const cluster_view& cv, const op_route& rt, int64_t now_ms) noexcept {
  return !rt.warmed && cv.warming(now_ms);
}
} // namespace

bool may_run_again(const cluster_view& cv, const storage::op& o, int64_t now_ms) noexcept {
  // (Also once it warmed or looked ahead: when the ring changed before its answer came, what
  // found nothing goes to the key's owner now, after_result; so inside the window it keeps
  // its value.)
  return o.kind == storage::op_kind::store && cv.warming(now_ms) &&
         classify(o) == warm_class::update;
}

bool warm_first(const cluster_view& cv, const op_route& rt, const storage::op& o,
                int64_t now_ms) noexcept {
  if (!may_warm(cv, rt, now_ms))
    return false;
  const auto cls = classify(o);
  return cls == warm_class::insert || (cls == warm_class::update && now_ms < cv.check_until_ms);
}

next_step after_result(const cluster_view& cv, op_route& rt, storage::status& st,
                       warm_class cls, bool intact, int64_t now_ms,
                       bool deleted_lately, uint64_t deleted_cas) noexcept {
  using storage::status;
  const bool read = cls == warm_class::read;
  bool moved = !same_ring(cv, rt);
  if (st == status::not_sent) {
    if (moved && intact) {
      rt.tries = 0;
      return next_step::place;
    }
    st = status::unavailable;
  }
  if (st == status::unavailable && read) {
    rt.tries = moved ? 0 : static_cast<uint8_t>(rt.tries + 1);
    return next_step::place;
  }
  // (Placed by a ring since replaced, the op goes to the key's owner now: that one judges.)
  const bool lately = (read || cls == warm_class::update) && found_nothing(st) && deleted_lately;
  // (Warmed or looked ahead already counts in the ring the op was placed in only: placed by
  // a ring since replaced, the node it ran at may own the key no longer, and the op goes to
  // the owner now, where it may warm again. Before, an `ma` that had looked ahead, ran at
  // the key's owner by the ring before and found nothing there answered NF: the sweep,
  // seed 6953.)
  if ((lately && !storage::cas_clocked(deleted_cas) && !moved) || !cv.warming(now_ms) ||
      (rt.warmed && !moved))
    return next_step::accept;
  if ((read && st == status::miss) ||
      (cls == warm_class::update && intact && found_nothing(st))) {
    if (moved) {
      rt.tries = 0;
      return next_step::place;
    }
    rt.lately = lately;
    return next_step::warm;
  }
  if (cls == warm_class::remove && !moved && (st == status::deleted || st == status::not_found))
    return next_step::warm;
  return next_step::accept;
}

namespace {
constexpr size_t ranks = past_ring::max_erase_ranks;

// R: how many owners a key has (cv.replicas, within the bounds of a view).
size_t replicas_of(const cluster_view& cv) noexcept {
  return std::clamp<size_t>(cv.replicas, 1, cluster_view::max_replicas);
}

// The owners of a key in cv's current ring (its first R live nodes), or none.
struct owners_now {
  cluster::ring::member_id ids[cluster_view::max_replicas];
  size_t n = 0;

  owners_now() = default;
  owners_now(const cluster_view& cv, uint64_t hash) noexcept
    : n(cv.ring->live_owner_ids(hash, replicas_of(cv), ids)) {}

  // Member `name`'s position among them (0: the primary), or n when it is none of them.
  size_t rank(const cluster_view& cv, const std::string& name) const noexcept {
    if (n == 0)
      return n;
    auto id = cv.ring->find(name);
    return id ? size_t(std::find(ids, ids + n, *id) - ids) : n;
  }
  // Member `name` is one of them.
  bool named(const cluster_view& cv, const std::string& name) const noexcept {
    return rank(cv, name) < n;
  }
};

// The name (and id) of `r`'s live owner number `rank` (0: the primary) for `hash`, or null.
const std::string* owner_name(const cluster::ring& r, uint64_t hash, size_t rank,
                              cluster::ring::member_id* id) noexcept {
  cluster::ring::member_id owners[ranks];
  if (rank >= ranks || r.live_owner_ids(hash, rank + 1, owners) != rank + 1)
    return nullptr;
  *id = owners[rank];
  return &r.member(owners[rank]).name;
}

// Position `pos` (past ring pos / ranks, its owner pos % ranks) names a source for this op.
const std::string* source_at(const cluster_view& cv, uint64_t hash, size_t pos, bool erase,
                             cluster::ring::member_id* id) noexcept {
  const auto& p = cv.past[pos / ranks];
  if (!p.ring || pos % ranks >= (erase ? std::max<size_t>(p.erase_ranks, 1) : 1))
    return nullptr;
  return owner_name(*p.ring, hash, pos % ranks, id);
}

// `name` is a member `r` has, and has dead.
bool dead_in(const cluster::ring* r, const std::string& name) noexcept {
  if (!r)
    return false;
  auto id = r->find(name);
  return id && !r->member(*id).alive;
}

// `name`, named by past ring `d`, is dead in the current ring or in a newer past ring (not a
// member a ring has dead only because it was joining: past_ring::joining).
bool dead_since(const cluster_view& cv, size_t d, const std::string& name) noexcept {
  bool dead = dead_in(cv.ring.get(), name);
  for (size_t e = 0; e < d && !dead; ++e)
    dead = name != cv.past[e].joining && dead_in(cv.past[e].ring.get(), name);
  return dead;
}
} // namespace

warm_from warm_source(const cluster_view& cv, uint64_t hash, const op_route& rt,
                      int64_t now_ms, bool erase) noexcept {
  if (!same_ring(cv, rt))
    return {};
  const uint32_t at = rt.local ? cv.self : rt.owner;
  const std::string* missed = at < cv.ring->size() ? &cv.ring->member(at).name : nullptr;
  // After md I that found the item, the owners now (the replicas) get the stale item by
  // replication: no copies to delete. (A delete that found nothing replicates nothing: they
  // are deleted at as past owners.)
  const owners_now skipped = erase && rt.owners_replicated ? owners_now(cv, hash) : owners_now();
  const size_t end = std::min(cv.past.size(), cluster_view::max_past) * ranks;
  for (size_t pos = rt.warm_next; pos < end; ++pos) {
    const size_t d = pos / ranks;
    const auto& p = cv.past[d];
    if (now_ms >= p.warm_until_ms)
      break;  // older windows ended before this one
    cluster::ring::member_id id = 0;
    const std::string* source = source_at(cv, hash, pos, erase, &id);
    if (!source || (missed && *source == *missed))
      continue;  // the node that missed is the one that owned it then
    if (skipped.named(cv, *source))
      continue;  // (rt.owners_replicated only: an owner now)
    bool named = false;  // asked already (or about to be)
    for (size_t e = 0; e < pos && !named; ++e) {
      cluster::ring::member_id unused = 0;
      const std::string* n = source_at(cv, hash, e, erase, &unused);
      named = n && *n == *source;
    }
    if (named)
      continue;
    if (dead_since(cv, d, *source)) {
      if (erase)
        continue;  // nothing to delete there (or nothing reachable): the older ones still
      return {};   // what it held is lost; an older owner's copy may be older than it
    }
    warm_from w;
    w.depth = static_cast<uint8_t>(d);
    w.id = id;
    w.next = static_cast<uint8_t>(pos + 1);
    if (id < p.peers.size() && p.peers[id]) {
      w.where = placement::peer;
      return w;
    }
    if (*source == cv.self_name) {
      w.where = placement::local;  // this node owned the key then: its own shards
      return w;
    }
  }
  return {};
}

bool owns_now(const cluster_view& cv, uint64_t hash, const warm_from& from) noexcept {
  if (from.where == placement::unavailable || !cv.ring)
    return false;
  if (from.where == placement::local)
    return owners_now(cv, hash).named(cv, cv.self_name);
  if (from.depth >= cv.past.size() || !cv.past[from.depth].ring ||
      from.id >= cv.past[from.depth].ring->size())
    return false;
  return owners_now(cv, hash).named(cv, cv.past[from.depth].ring->member(from.id).name);
}

warm_from check_source(const cluster_view& cv, uint64_t hash, const op_route& rt,
                       int64_t now_ms) noexcept {
  if (now_ms >= cv.check_until_ms)
    return {};  // (the common case: no change that recent)
  op_route first = rt;
  first.warm_next = 0;
  const warm_from from = warm_source(cv, hash, first, now_ms);
  if (from.where == placement::unavailable || now_ms >= cv.past[from.depth].check_until_ms)
    return {};
  return from;
}

size_t past_holders(const cluster_view& cv, uint64_t hash, int64_t now_ms,
                    past_holder* out, bool replicas_too) noexcept {
  if (!cv.ring || cv.past.empty())
    return 0;
  const owners_now owners(cv, hash);
  const size_t r = replicas_of(cv);
  size_t n = 0;
  for (size_t d = 0; d < cv.past.size() && d < cluster_view::max_past; ++d) {
    const auto& p = cv.past[d];
    if (now_ms >= p.warm_until_ms + cluster_view::copies_kept_ms || !p.ring)
      continue;
    cluster::ring::member_id was[ranks];
    const size_t k = p.ring->live_owner_ids(hash, std::min(r, ranks), was);
    for (size_t i = 0; i < k && n < max_past_holders; ++i) {
      const auto& name = p.ring->member(was[i]).name;
      const size_t rank = owners.rank(cv, name);
      if ((rank < owners.n && !(replicas_too && rank > 0)) || dead_since(cv, d, name))
        continue;  // an owner (it has the write), or dead since (nothing to reach)
      bool named = false;
      for (size_t j = 0; j < n && !named; ++j)
        named = cv.past[out[j].depth].ring->member(out[j].id).name == name;
      if (!named)
        out[n++] = past_holder{static_cast<uint8_t>(d), was[i]};
    }
  }
  return n;
}

bool placed_by_replaced_ring(const cluster_view& cv, uint64_t sender_ring) noexcept {
  if (sender_ring == 0 || !cv.ring || cv.joining || cv.ring->placement() == sender_ring)
    return false;
  for (const auto& p : cv.past)
    if (p.ring && p.ring->placement() == sender_ring)
      return true;
  return false;
}

bool owns(const cluster_view& cv, std::string_view key) noexcept {
  if (!cv.ring)
    return true;
  cluster::ring::member_id owners[cluster_view::max_replicas];
  const size_t r = std::clamp<uint32_t>(cv.replicas, 1, cluster_view::max_replicas);
  const size_t n = cv.ring->live_owner_ids(cluster::ring::key_hash(key), r, owners);
  if (n == 0)
    return true;
  // (A node that left is not in its own ring: its id then names no member, or another.)
  const bool in_ring = cv.self < cv.ring->size() && cv.ring->member(cv.self).name == cv.self_name;
  for (size_t i = 0; i < n; ++i)
    if (in_ring && owners[i] == cv.self)
      return true;
  return false;
}

uint64_t placement_of(const cluster_view& cv, const op_route& rt) noexcept {
  if (same_ring(cv, rt))
    return cv.ring->placement();
  for (const auto& p : cv.past)
    if (p.ring && p.ring->epoch() == rt.epoch)
      return p.ring->placement();
  return 0;
}

bool place_again(const cluster_view& cv, const storage::op& o) noexcept {
  if (o.routed >= max_routed || o.parked != 0 || o.kind == storage::op_kind::flush)
    return false;
  return !owns(cv, o.key);
}

storage::op warm_copy(const std::string& key, const storage::result& r) {
  return storage::item_copy(key, r, storage::store_mode::add);
}

bool taken_on_walk(op_route& rt, const storage::result& r) noexcept {
  if ((r.st == storage::status::miss || r.st == storage::status::not_found) &&
      r.deleted_cas != 0 &&
      (!storage::cas_clocked(rt.gone_at) || storage::cas_clock_newer(r.deleted_cas, rt.gone_at)))
    rt.gone_at = r.deleted_cas;
  return r.st == storage::status::hit &&
         (storage::cas_clock_removed(r.cas, rt.gone_at) ||
          (rt.lately && !storage::cas_clocked(r.cas)));
}

bool keeps_owner_answer(op_route& rt, const storage::result& own, const storage::result& r,
                        bool invalidate) noexcept {
  using storage::status;
  taken_on_walk(rt, r);  // (r's not_found may raise rt.gone_at for the sources after it)
  if (own.st == status::deleted || own.st == status::exists)
    return true;
  if (own.st != status::not_found || !own.deleted_lately)
    return false;
  const bool later = (r.st == status::deleted || r.st == status::exists) && !invalidate &&
                     storage::cas_clock_newer(r.cas, rt.gone_at);
  return !later;
}

storage::op read_copy(const storage::op& read, const storage::result& r) {
  storage::op keep = warm_copy(read.key, r);
  keep.as_fetched |= read.get_bump;
  return keep;
}

} // namespace bifrost::actors
