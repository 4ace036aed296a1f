#include "actors/storage_shard.hpp"

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"

#include <caf/actor_cast.hpp>

#include <algorithm>

namespace bifrost::actors {

namespace {
using prune_step_atom = caf::atom_constant<caf::atom("prunestep")>;
using prune_again_atom = caf::atom_constant<caf::atom("pruneagain")>;
using hand_back_wait_atom = caf::atom_constant<caf::atom("hbwait")>;
constexpr size_t prune_slots_per_turn = 4096;
constexpr size_t max_hand_back_batches = 4;  // unanswered, per shard: the pass waits for them
constexpr uint64_t tombstone_tag_bit = uint64_t(1) << 63;  // batches of deleted keys

// A delete handed back to a member alive again (storage::op::hand_back): it removes the
// member's item only if stored before its return and, with `cas`, not a copy of that item.
storage::op handed_back_delete(std::string key, uint64_t cas) {
  storage::op d;
  d.kind = storage::op_kind::remove;
  d.key = std::move(key);
  d.counted = false;
  d.hand_back = true;
  d.explicit_cas = cas;
  return d;
}
} // namespace

storage_shard::storage_shard(caf::actor_config& cfg, actor_host* host,
                             std::unique_ptr<storage::shard> shard,
                             std::chrono::milliseconds sweep_interval)
  : hosted_actor(cfg, host), shard_(std::move(shard)), sweep_interval_(sweep_interval) {}

caf::behavior storage_shard::make_behavior() {
  // A shard outlives any confused peer: an error message (e.g. a reply that its receiver did
  // not expect) or an unknown message is dropped, never a reason to quit.
  set_error_handler([](caf::error&) {});
  set_default_handler(caf::drop);
  if (sweep_interval_.count() > 0)
    delayed_send(this, sweep_interval_, sweep_atom::value);
  return {
    [this](exec_atom, uint64_t tag, storage::op_batch& ops) {
      storage::result_batch results;
      shard_->execute(ops, results);
      if (ring_has_dead_)
        note_deletes(ops, results);
      send(caf::actor_cast<caf::actor>(current_sender()), result_atom::value, tag,
           std::move(results));
    },
    [this](stats_atom) -> storage::shard_stats { return stats(); },
    [this](stats_atom, uint64_t tag) {
      send(caf::actor_cast<caf::actor>(current_sender()), stats_atom::value, tag, stats());
    },
    [this](sweep_atom) {
      shard_->sweep();
      sample_cas();
      delayed_send(this, sweep_interval_, sweep_atom::value);
    },
    // A member's answer to a batch of handed-back deletes (the only calls a shard makes).
    [this](result_atom, uint64_t tag, storage::result_batch&) {
      if ((tag & tombstone_tag_bit) != 0 || tag > hand_back_tag_ || hand_back_unanswered_ == 0)
        return;  // (deleted keys' batches are not paced)
      --hand_back_unanswered_;
      if (hand_back_waits_ && hand_back_unanswered_ < max_hand_back_batches) {
        hand_back_waits_ = false;
        send(this, prune_step_atom::value, prune_gen_);
      }
    },
    [this](hand_back_wait_atom, uint64_t gen, uint64_t tag) {
      // Answers that never came (a member gone meanwhile): the pass goes on.
      if (gen != prune_gen_ || !hand_back_waits_ || tag != hand_back_tag_)
        return;
      hand_back_unanswered_ = 0;
      hand_back_waits_ = false;
      send(this, prune_step_atom::value, prune_gen_);
    },
    [this](prune_atom, cluster_view_ptr& v) {
      ++prune_gen_;  // a step still on its way belongs to the pass before
      prune_rings_.clear();
      hand_back_waits_ = false;
      if (!v || !v->ring || v->ring->empty() || !v->ring->find(v->self_name)) {
        ring_has_dead_ = false;
        return;  // (not a member: nothing to go by)
      }
      note_comebacks(*v);
      // The rings the node still reads from: the current one and those it warms from.
      auto add = [&](const std::shared_ptr<const cluster::ring>& r) {
        if (auto self = r ? r->find(v->self_name) : std::nullopt)
          prune_rings_.push_back({r, *self});
      };
      add(v->ring);
      for (const auto& p : v->past)
        add(p.ring);
      prune_replicas_ = std::clamp<uint32_t>(v->replicas, 1, cluster_view::max_replicas);
      self_ = *v->ring->find(v->self_name);
      ring_has_dead_ = std::any_of(v->ring->members().begin(), v->ring->members().end(),
                                   [](const auto& m) { return !m.alive && m.weight > 0; });
      // Where this pass's hand-backs go: members alive in this ring. One dead again waits
      // (with what it is owed) until it is back; one the ring no longer lists is forgotten.
      hand_backs_.erase(std::remove_if(hand_backs_.begin(), hand_backs_.end(),
                                       [&](hand_back& h) {
                                         auto id = v->ring->find(h.name);
                                         h.dest = caf::actor();
                                         h.batch.clear();
                                         if (!id)
                                           return true;
                                         if (v->ring->member(*id).alive &&
                                             *id < v->peers.size() && v->peers[*id]) {
                                           h.id = *id;
                                           h.dest = v->peers[*id];
                                         }
                                         return false;
                                       }),
                        hand_backs_.end());
      start_prune();
    },
    [this](prune_step_atom, uint64_t gen) { prune_step(gen); },
    [this](prune_again_atom, uint64_t gen) {
      if (gen == prune_gen_ && !prune_rings_.empty())
        start_prune();
    },
  };
}

void storage_shard::start_prune() {
  prune_recent_ = 0;
  prune_since_ = storage::system_clock_seconds() - prune_untouched_s;
  shard_->begin_prune();
  send(this, prune_step_atom::value, prune_gen_);
}

void storage_shard::prune_step(uint64_t gen) {
  if (gen != prune_gen_ || prune_rings_.empty())
    return;
  auto owns = [this](const cluster::ring& r, uint64_t h, cluster::ring::member_id who) {
    cluster::ring::member_id owners[cluster_view::max_replicas];
    size_t n = r.live_owner_ids(h, prune_replicas_, owners);
    return std::find(owners, owners + n, who) != owners + n;
  };
  std::function<void(std::string_view, uint64_t)> hand_back_seen;
  const bool handing_back =
    view_ring_ && std::any_of(hand_backs_.begin(), hand_backs_.end(),
                              [](const hand_back& hb) { return static_cast<bool>(hb.dest); });
  if (handing_back) {
    if (hand_back_unanswered_ >= max_hand_back_batches) {  // wait for the member's answers
      hand_back_waits_ = true;
      delayed_send(this, std::chrono::seconds(10), hand_back_wait_atom::value, gen,
                   hand_back_tag_);
      return;
    }
    hand_back_seen = [&](std::string_view key, uint64_t cas) {
      uint64_t h = 0;
      for (auto& hb : hand_backs_) {
        if (!hb.dest || cas <= hb.since_cas)
          continue;
        if (h == 0)
          h = cluster::ring::key_hash(key);
        if (!owns(*view_ring_, h, hb.id))
          continue;
        // (The member's copy of this very item stays: its CAS.)
        hb.batch.push_back(handed_back_delete(std::string(key), cas));
      }
    };
  }
  auto progress = shard_->prune(
    [&](std::string_view key) {
      const uint64_t h = cluster::ring::key_hash(key);
      for (const auto& [ring, self] : prune_rings_)
        if (owns(*ring, h, self))
          return false;  // an owner there
      return true;
    },
    prune_since_, prune_slots_per_turn, hand_back_seen);
  for (auto& hb : hand_backs_)
    if (!hb.batch.empty()) {
      handed_back_ += hb.batch.size();
      ++hand_back_unanswered_;
      send(hb.dest, warm_atom::value, ++hand_back_tag_, std::move(hb.batch));
      hb.batch = storage::op_batch{};
    }
  // A hand-back takes two passes, the second prune_untouched_s after the first: members
  // whose views still had the member dead wrote here for it meanwhile. (Those waiting for
  // their member's return stay.)
  bool again = false;
  if (progress.done) {
    for (auto& hb : hand_backs_)
      if (hb.dest)
        ++hb.passes;
    hand_backs_.erase(std::remove_if(hand_backs_.begin(), hand_backs_.end(),
                                     [](const hand_back& hb) { return hb.passes >= 2; }),
                      hand_backs_.end());
    again = std::any_of(hand_backs_.begin(), hand_backs_.end(),
                        [](const hand_back& hb) { return static_cast<bool>(hb.dest); });
  }
  prune_recent_ += progress.recent;
  if (!progress.done) {
    send(this, prune_step_atom::value, gen);  // after the mail already here
    return;
  }
  // Items it would have dropped but were written or read lately (by a member whose view may
  // be ahead of this node's) are looked at again once they are old enough.
  if (prune_recent_ > 0 || again)
    delayed_send(this, std::chrono::seconds(prune_untouched_s), prune_again_atom::value, gen);
  else
    prune_rings_.clear();
  prune_recent_ = 0;
}

void storage_shard::note_deletes(const storage::op_batch& ops,
                                 const storage::result_batch& results) {
  for (size_t i = 0; i < ops.size() && i < results.size(); ++i) {
    const auto& o = ops[i];
    const auto st = results[i].st;
    if (o.kind != storage::op_kind::remove || o.hand_back ||
        (st != storage::status::deleted && st != storage::status::not_found))
      continue;
    const uint64_t h = cluster::ring::key_hash(o.key);
    cluster::ring::member_id all[cluster_view::max_replicas], live[cluster_view::max_replicas];
    const size_t n = view_ring_->owner_ids(h, prune_replicas_, all);
    const size_t l = view_ring_->live_owner_ids(h, prune_replicas_, live);
    if (std::find(live, live + l, self_) == live + l)
      continue;  // (not an owner here: a past copy's delete)
    for (size_t j = 0; j < n; ++j) {
      const auto& m = view_ring_->member(all[j]);
      if (m.alive)
        continue;
      if (tombstone_count_ >= max_tombstones) {  // the longest list loses its oldest
        auto most = std::max_element(
          tombstones_.begin(), tombstones_.end(),
          [](const auto& a, const auto& b) { return a.keys.size() < b.keys.size(); });
        most->keys.pop_front();
        --tombstone_count_;
        ++tombstones_dropped_;
        if (most->keys.empty())
          tombstones_.erase(most);
      }
      auto t = std::find_if(tombstones_.begin(), tombstones_.end(),
                            [&](const auto& x) { return x.member == m.name; });
      if (t == tombstones_.end()) {
        tombstones_.push_back({m.name, {}});
        t = std::prev(tombstones_.end());
      }
      t->keys.push_back(o.key);
      ++tombstone_count_;
    }
  }
}

void storage_shard::send_tombstones(const cluster_view& v, const std::string& name) {
  auto t = std::find_if(tombstones_.begin(), tombstones_.end(),
                        [&](const auto& x) { return x.member == name; });
  if (t == tombstones_.end())
    return;
  auto id = v.ring->find(name);
  caf::actor dest = id && *id < v.peers.size() ? v.peers[*id] : caf::actor();
  if (dest) {
    storage::op_batch batch;
    auto flush = [&] {
      handed_back_ += batch.size();
      send(dest, warm_atom::value, tombstone_tag_bit | ++tombstone_tag_, std::move(batch));
      batch = storage::op_batch{};
    };
    for (auto& k : t->keys) {
      batch.push_back(handed_back_delete(std::move(k), 0));
      if (batch.size() == prune_slots_per_turn)
        flush();
    }
    if (!batch.empty())
      flush();
  }
  tombstone_count_ -= t->keys.size();
  tombstones_.erase(t);
}

storage::shard_stats storage_shard::stats() const {
  auto st = shard_->stats();
  st.handed_back = handed_back_;
  st.hand_back_dropped = tombstones_dropped_;
  return st;
}

void storage_shard::sample_cas() {
  const uint32_t now = storage::system_clock_seconds();
  cas_samples_.emplace_back(now, storage::current_cas());
  // Kept: enough to look prune_untouched_s back, with room for a late sweep.
  while (cas_samples_.size() > 2 && cas_samples_[1].first + 6 * prune_untouched_s < now)
    cas_samples_.pop_front();
}

uint64_t storage_shard::cas_before(uint32_t t) const {
  uint64_t cas = 0;  // (none that old: every item counts as later)
  for (const auto& [when, c] : cas_samples_) {
    if (when > t)
      break;
    cas = c;
  }
  return cas;
}

void storage_shard::note_comebacks(const cluster_view& v) {
  const uint32_t now = storage::system_clock_seconds();
  const auto& ms = v.ring->members();
  for (const auto& m : ms) {
    if (m.name == v.self_name)
      continue;
    auto it = std::find_if(dead_since_.begin(), dead_since_.end(),
                           [&](const auto& d) { return d.first == m.name; });
    if (!m.alive) {
      if (it != dead_since_.end())
        continue;
      if (dead_since_.size() >= max_dead_noted)  // (the longest dead go first)
        dead_since_.erase(dead_since_.begin());
      // What was stored here before then stays: a member whose view was ahead of this
      // node's may have written here for it a little earlier (views agree within seconds).
      dead_since_.emplace_back(m.name, cas_before(now - std::min(now, prune_untouched_s)));
      continue;
    }
    if (it == dead_since_.end())
      continue;
    // Alive again: what was stored here since it died, for keys it owns now, may be newer
    // than its copies. (Its earlier hand-back, if it died again before it was done, joins.)
    send_tombstones(v, m.name);
    const uint64_t since = it->second;
    dead_since_.erase(it);
    auto h = std::find_if(hand_backs_.begin(), hand_backs_.end(),
                          [&](const hand_back& x) { return x.name == m.name; });
    if (h != hand_backs_.end()) {
      h->since_cas = std::min(h->since_cas, since);
      continue;
    }
    hand_back nh;
    nh.name = m.name;
    nh.since_cas = since;
    hand_backs_.push_back(std::move(nh));
  }
  // Deleted keys kept for a member the ring no longer lists go (it left, or was dropped).
  tombstones_.erase(std::remove_if(tombstones_.begin(), tombstones_.end(),
                                   [&](const tombstones& t) {
                                     if (v.ring->find(t.member))
                                       return false;
                                     tombstone_count_ -= t.keys.size();
                                     return true;
                                   }),
                    tombstones_.end());
  view_ring_ = v.ring;
}

} // namespace bifrost::actors
