#include "actors/storage_shard.hpp"

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"

#include <caf/actor_cast.hpp>

#include <algorithm>
#include <iterator>
#include <optional>

namespace bifrost::actors {

namespace {
using prune_step_atom = caf::atom_constant<caf::atom("prunestep")>;
using prune_again_atom = caf::atom_constant<caf::atom("pruneagain")>;
using hand_back_wait_atom = caf::atom_constant<caf::atom("hbwait")>;
using copy_wait_atom = caf::atom_constant<caf::atom("copywait")>;
using tombstone_retry_atom = caf::atom_constant<caf::atom("tombretry")>;
constexpr size_t prune_slots_per_turn = 4096;
constexpr size_t max_hand_back_batches = 4;  // unanswered, per shard: the pass waits for them
constexpr uint64_t tombstone_tag_bit = uint64_t(1) << 63;  // batches of deleted keys
constexpr uint64_t copy_tag_bit = uint64_t(1) << 62;       // batches of copies to new owners
constexpr auto answer_wait = std::chrono::seconds(10);      // for a member's answers
constexpr size_t shrink_step = 8;  // segments evicted a turn after cache_memlimit lowers -m

// A key deleted here handed back to a member alive again (storage::op::hand_back). With the
// delete's point on the CAS clock (`at`), a copy of the delete (storage::delete_copy): the
// member removes an item older than it and notes the delete, so that no copy of an older
// write (a past owner's, warmed on a miss; another hand-back's) brings the key back there,
// and keeps an item newer than it (written on its side of a partition after the delete).
// Without (the guard off, or the key written again here in the delete's batch): it removes
// the member's item only if stored before its return.
storage::op handed_back_delete(std::string key, uint64_t at) {
  storage::op d;
  if (at != 0) {
    d = storage::delete_copy(key, at);
  } else {
    d.kind = storage::op_kind::remove;
    d.key = std::move(key);
    d.counted = false;
  }
  d.hand_back = true;
  return d;
}

// An op of a batch a member answered that it did not take (unavailable: a link just back;
// not sent), or that it did not answer at all: sent again.
bool not_taken(const storage::result_batch& rs, size_t i) {
  return i >= rs.size() || rs[i].st == storage::status::unavailable ||
         rs[i].st == storage::status::not_sent;
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
    // cache_memlimit: a lower limit's evictions go a few segments a turn (the loop hosting
    // the shard keeps serving in between).
    [this](memlimit_atom, uint64_t bytes) {
      shard_->set_memory_limit(bytes);
      if (shard_->shrink(shrink_step))
        send(this, memlimit_atom::value);
    },
    [this](memlimit_atom) {
      if (shard_->shrink(shrink_step))
        send(this, memlimit_atom::value);
    },
    [this](stats_atom, uint64_t tag) {
      send(caf::actor_cast<caf::actor>(current_sender()), stats_atom::value, tag, stats());
    },
    [this](sweep_atom) {
      shard_->sweep();
      sample_cas();
      delayed_send(this, sweep_interval_, sweep_atom::value);
    },
    // A member's answer to a batch of handed-back deletes or of copies (the only calls a
    // shard makes).
    [this](result_atom, uint64_t tag, storage::result_batch& rs) {
      if ((tag & copy_tag_bit) != 0) {
        const uint64_t n = tag & ~copy_tag_bit;
        auto sent = std::find_if(copy_sent_.begin(), copy_sent_.end(),
                                 [&](const sent_copies& b) { return b.tag == n; });
        if (sent == copy_sent_.end())
          return;  // (a batch of a pass restarted since, or given up on at its wait)
        for (size_t i = 0; i < sent->keys.size(); ++i)
          if (not_taken(rs, i))
            retry_copy(std::move(sent->keys[i]), sent->to);
        copy_sent_.erase(sent);
        if (copy_waits_) {
          copy_waits_ = false;
          send(this, prune_step_atom::value, prune_gen_);
        }
        return;
      }
      if ((tag & tombstone_tag_bit) != 0) {  // (deleted keys' batches are not paced)
        auto sent = std::find_if(tombstone_sent_.begin(), tombstone_sent_.end(),
                                 [&](const sent_tombstones& b) { return b.tag == tag; });
        if (sent == tombstone_sent_.end())
          return;
        sent_tombstones again;
        for (size_t i = 0; i < sent->keys.size(); ++i)
          if (not_taken(rs, i)) {
            again.keys.push_back(std::move(sent->keys[i]));
            again.points.push_back(sent->points[i]);
          }
        again.member = std::move(sent->member);
        again.dest = std::move(sent->dest);
        again.round = sent->round + 1;
        tombstone_sent_.erase(sent);
        if (again.keys.empty())
          return;
        if (again.round > copy_retries) {  // (kept for its next return, if still a member)
          if (view_ring_ && view_ring_->find(again.member))
            for (size_t i = 0; i < again.keys.size(); ++i)
              keep_tombstone(again.member, again.keys[i], again.points[i]);
          return;
        }
        const auto wait = std::chrono::milliseconds(copy_retry_ms << again.round);
        again.due = std::chrono::steady_clock::now() + wait;
        tombstone_retry_.push_back(std::move(again));
        delayed_send(this, wait, tombstone_retry_atom::value);
        return;
      }
      auto sent = std::find_if(hand_back_sent_.begin(), hand_back_sent_.end(),
                               [&](const sent_hand_back& b) { return b.tag == tag; });
      if (sent == hand_back_sent_.end())
        return;  // (a batch of a pass restarted since, or given up on at its wait)
      auto hb = std::find_if(hand_backs_.begin(), hand_backs_.end(),
                             [&](const hand_back& h) { return h.name == sent->member; });
      for (size_t i = 0; i < sent->keys.size() && hb != hand_backs_.end(); ++i)
        if (not_taken(rs, i))
          retry_hand_back(*hb, std::move(sent->keys[i]));  // (not taken: sent again)
      hand_back_sent_.erase(sent);
      if (hand_back_waits_ && hand_back_sent_.size() < max_hand_back_batches) {
        hand_back_waits_ = false;
        send(this, prune_step_atom::value, prune_gen_);
      }
    },
    [this](hand_back_wait_atom, uint64_t gen, uint64_t wait) {
      // Answers that never came (a member gone meanwhile): the pass goes on, and those
      // copies are sent again, as if not taken.
      if (gen != prune_gen_ || !hand_back_waits_ || wait != hand_back_wait_)
        return;
      hand_back_waits_ = false;
      for (auto& sent : hand_back_sent_) {
        auto hb = std::find_if(hand_backs_.begin(), hand_backs_.end(),
                               [&](const hand_back& h) { return h.name == sent.member; });
        if (hb != hand_backs_.end())
          for (auto& q : sent.keys)
            retry_hand_back(*hb, std::move(q));
      }
      hand_back_sent_.clear();
      send(this, prune_step_atom::value, prune_gen_);
    },
    [this](tombstone_retry_atom) {
      const auto now = std::chrono::steady_clock::now();
      for (auto it = tombstone_retry_.begin(); it != tombstone_retry_.end();) {
        if (it->due > now) {
          ++it;
          continue;
        }
        send_tombstone_batch(std::move(*it));
        it = tombstone_retry_.erase(it);
      }
    },
    [this](copy_wait_atom, uint64_t gen, uint64_t tag) {
      // Answers that never came (a member gone meanwhile): the pass goes on, and is redone.
      if (gen != prune_gen_ || !copy_waits_ || tag != copy_tag_)
        return;
      for (auto& b : copy_sent_)
        for (auto& k : b.keys)
          retry_copy(std::move(k), b.to);
      copy_sent_.clear();  // (their answers, if they still come, are not looked at)
      copy_waits_ = false;
      send(this, prune_step_atom::value, prune_gen_);
    },
    [this](prune_atom, cluster_view_ptr& v) {
      ++prune_gen_;  // a step still on its way belongs to the pass before
      prune_rings_.clear();
      hand_back_waits_ = false;
      copy_waits_ = false;
      copy_.to.reset();
      // Copies (warming's, re-replication's) read elsewhere before a delete here must not
      // land after it: a member notes its deletes (storage::shard::guard_copies).
      shard_->guard_copies(v && v->ring && v->ring->size() > 1 ? copy_guard_s(*v) : 0);
      if (v && v->ring && v->ring->epoch() != ring_epoch_) {
        ring_epoch_ = v->ring->epoch();
        shard_->ring_changed();
      }
      if (!v || !v->ring || v->ring->empty() || !v->ring->find(v->self_name)) {
        ring_has_dead_ = false;
        copied_ring_.reset();  // (a view that names it again starts from that one)
        placed_now_.reset();
        placed_before_.reset();
        copy_queue_.clear();
        copy_sent_.clear();
        copy_retry_.clear();
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
                                         h.copies.clear();
                                         h.retry.clear();
                                         h.retry_round = 0;
                                         h.failed = false;
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
      hand_back_sent_.clear();  // (the pass reads its items again)
      plan_copies(*v);
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
  for (auto& hb : hand_backs_)
    hb.pass_cas = storage::current_cas();
  copy_queue_.clear();
  copy_sent_.clear();  // (answers to batches sent before are not waited for)
  copy_retry_.clear();
  copy_retry_round_ = 0;
  copy_waits_ = false;
  copy_.failed = false;
  copy_.scanned = false;
  prune_since_ = storage::system_clock_seconds() - prune_untouched_s;
  shard_->begin_prune();
  // Deletes are state to copy too: a key deleted here lately, while a member that heard of
  // the change first copied its older item to the key's new owner (or one joining with an
  // old copy from its data directory), would come back there. Queued by prune_step, a slice
  // a turn. (Keys whose item goes after this: send_copies finds their note.)
  deleted_keys_.clear();
  if (copy_.to)
    shard_->recent_deletes([this](std::string_view key) { deleted_keys_.emplace_back(key); });
  send(this, prune_step_atom::value, prune_gen_);
}

void storage_shard::prune_step(uint64_t gen) {
  if (gen != prune_gen_ || prune_rings_.empty())
    return;
  const bool handing_back =
    view_ring_ && std::any_of(hand_backs_.begin(), hand_backs_.end(),
                              [](const hand_back& hb) { return static_cast<bool>(hb.dest); });
  // Items queued for members alive again go before the scan goes on (bounded reads, paced
  // by the members' answers).
  if (handing_back && hand_back_copies_queued()) {
    if (hand_back_sent_.size() >= max_hand_back_batches)
      return wait_for_hand_backs(gen);
    send_hand_back_copies();
    send(this, prune_step_atom::value, gen);
    return;
  }
  // The copies the last turns queued go first: bounded reads, paced by the owners' answers;
  // once the scan is done, the pass ends when every copy is answered, those an owner could
  // not take (unreachable for a moment: a node just back) tried again a few times.
  auto wait_for_answers = [&] {
    copy_waits_ = true;
    delayed_send(this, answer_wait, copy_wait_atom::value, gen, copy_tag_);
  };
  if (copy_.to && !copy_queue_.empty()) {
    if (copy_sent_.size() >= max_copy_batches)
      return wait_for_answers();
    send_copies();
    send(this, prune_step_atom::value, gen);
    return;
  }
  if (copy_.to && copy_.scanned) {
    if (!copy_sent_.empty())
      return wait_for_answers();
    if (hand_backs_pending(gen))
      return;
    if (!copy_retry_.empty()) {
      if (copy_retry_round_ < copy_retries) {
        ++copy_retry_round_;
        std::move(copy_retry_.begin(), copy_retry_.end(), std::back_inserter(copy_queue_));
        copy_retry_.clear();
        delayed_send(this, std::chrono::milliseconds(copy_retry_ms << copy_retry_round_),
                     prune_step_atom::value, gen);
        return;
      }
      copy_.failed = true;  // (the pass is done again later)
      copy_retry_.clear();
    }
    end_pass(gen);
    return;
  }
  if (!deleted_keys_.empty()) {  // (the pass's deleted keys first, then its scan)
    for (size_t n = 0; n < prune_slots_per_turn && !deleted_keys_.empty(); ++n) {
      if (copy_.to)
        want_copy(deleted_keys_.front(), cluster::ring::key_hash(deleted_keys_.front()));
      deleted_keys_.pop_front();
    }
    send(this, prune_step_atom::value, gen);
    return;
  }
  auto owns = [this](const cluster::ring& r, uint64_t h, cluster::ring::member_id who) {
    cluster::ring::member_id owners[cluster_view::max_replicas];
    size_t n = r.live_owner_ids(h, prune_replicas_, owners);
    return std::find(owners, owners + n, who) != owners + n;
  };
  std::function<void(std::string_view, uint64_t)> hand_back_seen;
  bool held_for_hand_back = false;  // the item seen last goes to a member as a copy
  if (handing_back) {
    hand_back_seen = [&](std::string_view key, uint64_t cas) {
      uint64_t h = 0;
      for (auto& hb : hand_backs_) {
        // (Not an item a pass whose copies were all taken sent it already: a delete there
        // since must not meet it again.)
        if (!hb.dest || cas <= hb.since_cas || cas <= hb.copied_cas)
          continue;
        if (h == 0)
          h = cluster::ring::key_hash(key);
        if (!owns(*view_ring_, h, hb.id))
          continue;
        // Its value goes, not a delete: the member's reads would otherwise miss, or warm a
        // value from before from another node. Stored here while this node had the member
        // dead: an add (a write it cannot have, or one it took on its side of a partition:
        // the later by the CAS clock stays). Stored in the seconds before (a member whose
        // view was ahead wrote here): a replace (the member has it, a later write, an older
        // one to replace, or none: a key it deleted meanwhile must not come back).
        hb.copies.push_back({std::string(key), cas <= hb.dead_cas});
        held_for_hand_back = true;
      }
    };
  }
  size_t kept_for_copy = 0;
  auto progress = shard_->prune(
    [&](std::string_view key) {
      const bool held = std::exchange(held_for_hand_back, false);
      const uint64_t h = cluster::ring::key_hash(key);
      const bool copying = copy_.to && want_copy(key, h);
      for (const auto& [ring, self] : prune_rings_)
        if (owns(*ring, h, self))
          return false;  // an owner there
      if (copying || held) {  // kept until it is copied, and looked at again later
        ++kept_for_copy;
        return false;
      }
      return true;
    },
    prune_since_, prune_slots_per_turn, hand_back_seen);
  prune_recent_ += kept_for_copy;
  prune_recent_ += progress.recent;
  if (!progress.done || !copy_queue_.empty() || hand_back_copies_queued()) {
    send(this, prune_step_atom::value, gen);  // after the mail already here
    return;
  }
  if (copy_.to) {  // the copies' answers end the pass
    copy_.scanned = true;
    send(this, prune_step_atom::value, gen);
    return;
  }
  if (hand_backs_pending(gen))
    return;
  end_pass(gen);
}

storage::result storage_shard::read_for_copy(const std::string& key) {
  storage::op g;
  g.kind = storage::op_kind::get;
  g.key = key;
  g.get_bump = false;
  g.counted = false;
  g.keep_token = true;
  return shard_->execute(g);
}

bool storage_shard::hand_back_copies_queued() const {
  return std::any_of(hand_backs_.begin(), hand_backs_.end(),
                     [](const hand_back& hb) { return !hb.copies.empty(); });
}

void storage_shard::send_hand_back_copies() {
  for (auto& hb : hand_backs_) {
    if (hand_back_sent_.size() >= max_hand_back_batches)
      return;
    if (!hb.dest || hb.copies.empty())
      continue;
    storage::op_batch batch;
    sent_hand_back sent{0, hb.name, {}};
    size_t bytes = 0;
    while (!hb.copies.empty() && batch.size() < copy_batch_keys && bytes < copy_batch_bytes) {
      queued_copy q = std::move(hb.copies.front());
      hb.copies.pop_front();
      const auto r = read_for_copy(q.key);
      if (r.st != storage::status::hit)
        continue;  // (gone since the scan saw it)
      bytes += r.value.view().size() + q.key.size();
      auto o = storage::item_copy(q.key, r,
                                  q.replace ? storage::store_mode::replace
                                            : storage::store_mode::add);
      o.hand_back = true;
      batch.push_back(std::move(o));
      sent.keys.push_back(std::move(q));
    }
    if (batch.empty())
      continue;
    sent.tag = ++hand_back_tag_;
    handed_back_copies_ += batch.size();
    hand_back_sent_.push_back(std::move(sent));
    send(hb.dest, warm_atom::value, hand_back_tag_, std::move(batch));
  }
}

void storage_shard::wait_for_hand_backs(uint64_t gen) {
  hand_back_waits_ = true;  // (an answer sends the step again)
  delayed_send(this, answer_wait, hand_back_wait_atom::value, gen, ++hand_back_wait_);
}

void storage_shard::retry_hand_back(hand_back& hb, queued_copy q) {
  if (hb.failed)
    return;
  if (hb.retry.size() >= max_copy_retries) {  // (a member long unreachable: redo it all)
    hb.failed = true;
    hb.retry.clear();
    return;
  }
  hb.retry.push_back(std::move(q));
}

bool storage_shard::hand_backs_pending(uint64_t gen) {
  if (!hand_back_sent_.empty()) {
    wait_for_hand_backs(gen);
    return true;
  }
  bool retrying = false;
  unsigned round = 0;
  for (auto& hb : hand_backs_) {
    if (!hb.dest || hb.retry.empty())
      continue;
    if (hb.retry_round >= copy_retries) {
      hb.failed = true;  // (the pass is not counted: it is done again)
      hb.retry.clear();
      continue;
    }
    ++hb.retry_round;
    round = std::max(round, hb.retry_round);
    std::move(hb.retry.begin(), hb.retry.end(), std::back_inserter(hb.copies));
    hb.retry.clear();
    retrying = true;
  }
  if (!retrying)
    return false;
  delayed_send(this, std::chrono::milliseconds(copy_retry_ms << round), prune_step_atom::value,
               gen);
  return true;
}

void storage_shard::end_pass(uint64_t gen) {
  // A hand-back takes two passes, the second prune_untouched_s after the first: members
  // whose views still had the member dead wrote here for it meanwhile. (Those waiting for
  // their member's return stay.)
  for (auto& hb : hand_backs_) {
    if (!hb.dest)
      continue;
    if (hb.failed && hb.redone < max_hand_back_redone) {
      ++hb.redone;  // (a copy it did not take: the pass is done again)
    } else {
      ++hb.passes;
      if (!hb.failed)  // (what this pass sent was taken: the next sends what came since)
        hb.copied_cas = std::max(hb.copied_cas, hb.pass_cas);
    }
    hb.failed = false;
    hb.retry_round = 0;
  }
  hand_backs_.erase(std::remove_if(hand_backs_.begin(), hand_backs_.end(),
                                   [](const hand_back& hb) { return hb.passes >= 2; }),
                    hand_backs_.end());
  bool again = std::any_of(hand_backs_.begin(), hand_backs_.end(),
                           [](const hand_back& hb) { return static_cast<bool>(hb.dest); });
  if (copy_.to) {
    finish_copies();
    again = again || copy_.to;  // (a copy not taken: the pass is done again)
  }
  // Items it would have dropped but were written or read lately (by a member whose view may
  // be ahead of this node's) are looked at again once they are old enough.
  if (prune_recent_ > 0 || again)
    delayed_send(this, std::chrono::seconds(prune_untouched_s), prune_again_atom::value, gen);
  else
    prune_rings_.clear();
  prune_recent_ = 0;
}

void storage_shard::plan_copies(const cluster_view& v) {
  copy_ = copy_pass{};
  // A node joining (its ring of itself alone until a seed answers) owns nothing it may copy:
  // it may hold, from --data-dir, old copies of keys deleted at their owners meanwhile.
  if (v.joining)
    return;
  // Back from the dead (a pause, a partition: the view warms from a ring without it that is
  // not its join's): the others served its keys meanwhile, and what it held from before may
  // be older than their copies, or deleted there, so it sends nothing from before; they send
  // to it. What it stored since it came back (a CAS above storage::return_mark: its clients'
  // writes, the copies its primaries replicate to it) it copies as any owner: when another
  // owner of those keys leaves or dies inside the window, it may hold their only copy
  // (before, 350 of 1,000 keys written through it then were on no other node). (The rings
  // after its join's, newest first, are from before it joined: its seed's, which it warms
  // from too. They lack it without saying anything of its death.)
  uint64_t since = 0;  // back from the dead: its return mark (at least 1)
  for (const auto& p : v.past) {
    if (p.joining == v.self_name)
      break;
    if (auto id = p.ring ? p.ring->find(v.self_name) : std::nullopt;
        !id || !p.ring->member(*id).alive) {
      since = std::max<uint64_t>(storage::return_mark(), 1);
      break;
    }
  }
  // The mark moves on every later return or stall (the others may have had it dead again,
  // and hand-backs must spare what it stores from then on); while the view still warms from
  // a ring without it, what it stored since the first of those returns is what it may hold
  // alone (a second stall inside the window moved the mark above writes whose other owner
  // then left: they went nowhere).
  if (since != 0 && back_since_ != 0)
    since = std::min(since, back_since_);
  back_since_ = since;
  // Members that restarted unnoticed (v.restarted) lost the copies they held in memory: the
  // copies made count without them, and when no owner changed, the owners that took the
  // writes are the current ones, so they send (as after a death and a return).
  if (v.restarted && v.restarted != restart_seen_ && placed_now_) {
    restart_seen_ = v.restarted;
    auto made = copied_ring_ ? copied_ring_ : placed_now_;
    // (A pass for the current placement cut short: its placement before keeps its senders.)
    const bool all_made = made->placement() == placed_now_->placement();
    auto ms = made->members();
    bool any = false;
    for (auto& m : ms)
      if (m.alive && m.name != v.self_name &&
          std::find(v.restarted->begin(), v.restarted->end(), m.name) != v.restarted->end()) {
        m.alive = false;
        any = true;
      }
    if (any) {
      copied_ring_ = cluster::ring::build(std::move(ms), made->epoch());
      if (all_made && placed_now_->placement() == v.ring->placement())
        placed_before_ = placed_now_;
    }
  }
  // The placement before the current one: this node held its keys as their owner until now.
  if (!placed_now_ || placed_now_->placement() != v.ring->placement())
    placed_before_ = placed_now_;
  placed_now_ = v.ring;
  const uint32_t r = std::clamp<uint32_t>(v.replicas, 1, cluster_view::max_replicas);
  if (r < 2 || !v.rereplicate)
    return;  // (R = 1: a new owner warms on a miss; no copies are kept)
  if (!copied_ring_ || !placed_before_) {  // the first ring with this node: nothing before it
    copied_ring_ = v.ring;
    return;
  }
  if (copied_ring_->placement() == v.ring->placement()) {
    copied_ring_ = v.ring;  // (the same owners: its copies are made)
    return;
  }
  auto before_self = placed_before_->find(v.self_name);
  if (!before_self)
    return;  // (not a member before: it holds nothing to copy; copied_ring_ stays)
  auto ids_in_now = [&](const cluster::ring& r) {
    std::vector<int64_t> ids(r.size(), -1);
    for (size_t i = 0; i < r.size(); ++i)
      if (auto id = v.ring->find(r.member(static_cast<cluster::ring::member_id>(i)).name))
        ids[i] = *id;
    return ids;
  };
  copy_.to = v.ring;
  copy_.since = since;
  copy_.before_self = *before_self;
  copy_.copied_id = ids_in_now(*copied_ring_);
  copy_.before_id = ids_in_now(*placed_before_);
  copy_.dests.assign(v.ring->size(), caf::actor());
  for (cluster::ring::member_id id = 0; id < v.ring->size(); ++id)
    if (id != self_ && v.ring->member(id).alive && id < v.peers.size())
      copy_.dests[id] = v.peers[id];
  // Members back from the dead (alive now, not alive in a ring of the view's windows: a
  // pause, a partition, a restart), this node too: such an owner sends only what it stored
  // since its return, so it is no owner that stays and holds the copies, and the other old
  // owners send as well. (Before, for a key of such a member and another, and a member that
  // joined meanwhile as its new owner, nobody sent what it held from before: a kill -9 of
  // the returned member lost those keys, 23 of 300 in a user's trial.)
  copy_.back.assign(v.ring->size(), 0);
  for (cluster::ring::member_id id = 0; id < v.ring->size(); ++id) {
    const auto& m = v.ring->member(id);
    if (!m.alive)
      continue;
    if (id == self_) {
      copy_.back[id] = since != 0;
      continue;
    }
    for (const auto& p : v.past)
      if (auto at = p.ring ? p.ring->find(m.name) : std::nullopt;
          at && !p.ring->member(*at).alive) {
        copy_.back[id] = 1;
        break;
      }
  }
}

bool storage_shard::want_copy(std::string_view key, uint64_t h) {
  using id_t = cluster::ring::member_id;
  id_t before[cluster_view::max_replicas], copied[cluster_view::max_replicas],
    now[cluster_view::max_replicas];
  // Only a node that owned the key in the placement before this one sends it: it took the
  // key's writes until now, where a node that owned it earlier may hold an older value.
  const size_t nb = placed_before_->live_owner_ids(h, prune_replicas_, before);
  if (std::find(before, before + nb, copy_.before_self) == before + nb)
    return false;
  const size_t nn = copy_.to->live_owner_ids(h, prune_replicas_, now);
  const size_t nc = copied_ring_->live_owner_ids(h, prune_replicas_, copied);
  auto among = [](const id_t* ids, size_t n, const std::vector<int64_t>& in_now, id_t who) {
    for (size_t i = 0; i < n; ++i)
      if (ids[i] < in_now.size() && in_now[ids[i]] == int64_t(who))
        return true;
    return false;
  };
  // An owner before that holds the copies (one in the placement they were last all made for:
  // not a member that restarted since; and not back from the dead) is an owner now.
  bool stays = false;
  for (size_t i = 0; i < nn && !stays; ++i)
    stays = among(before, nb, copy_.before_id, now[i]) &&
            among(copied, nc, copy_.copied_id, now[i]) && !copy_.back[now[i]];
  if (stays && std::find(now, now + nn, self_) == now + nn)
    return false;  // (an owner that stays one sends it)
  // To each owner now that was not one before, or not one in the placement whose copies were
  // last all made (a pass a newer view cut short may not have reached it).
  copy_job j;
  for (size_t i = 0; i < nn; ++i) {
    const id_t t = now[i];
    if (t == self_ || t >= copy_.dests.size() || !copy_.dests[t])
      continue;
    if (!among(before, nb, copy_.before_id, t) || !among(copied, nc, copy_.copied_id, t))
      j.to[j.n++] = t;
  }
  if (j.n == 0)
    return false;
  j.key.assign(key.data(), key.size());
  copy_queue_.push_back(std::move(j));
  return true;
}

void storage_shard::send_copies() {
  std::vector<std::pair<cluster::ring::member_id, storage::op_batch>> out;
  size_t keys = 0, bytes = 0;
  while (!copy_queue_.empty() && keys < copy_batch_keys && bytes < copy_batch_bytes) {
    copy_job j = std::move(copy_queue_.front());
    copy_queue_.pop_front();
    ++keys;
    const std::string& key = j.key;
    const auto r = read_for_copy(key);
    uint64_t deleted_at = 0;  // with no item: the delete's copy, if one was noted lately
    if (r.st != storage::status::hit) {
      deleted_at = shard_->recent_delete(key);
      if (deleted_at == 0 || deleted_at <= copy_.since)
        continue;  // (gone since the pass saw it, and not by a delete noted here)
      copied_deletes_ += j.n;
    } else if (copy_.since != 0 && r.cas <= copy_.since) {
      continue;  // (back from the dead: stored before its return)
    }
    bytes += r.value.view().size() + key.size();
    for (uint8_t i = 0; i < j.n; ++i) {
      auto dest = std::find_if(out.begin(), out.end(),
                               [&](const auto& d) { return d.first == j.to[i]; });
      if (dest == out.end()) {
        out.emplace_back(j.to[i], storage::op_batch{});
        dest = std::prev(out.end());
      }
      dest->second.push_back(deleted_at != 0
                               ? storage::delete_copy(key, deleted_at)
                               : storage::item_copy(key, r, storage::store_mode::add));
    }
  }
  for (auto& [id, batch] : out) {
    copied_ += batch.size();
    sent_copies sent{++copy_tag_, id, {}};
    sent.keys.reserve(batch.size());
    for (const auto& o : batch)
      sent.keys.push_back(o.key);
    copy_sent_.push_back(std::move(sent));
    send(copy_.dests[id], warm_atom::value, copy_tag_bit | copy_tag_, std::move(batch));
  }
}

void storage_shard::retry_copy(std::string key, cluster::ring::member_id to) {
  if (copy_.failed)
    return;
  if (copy_retry_.size() >= max_copy_retries) {  // (an owner long unreachable: redo it all)
    copy_.failed = true;
    copy_retry_.clear();
    return;
  }
  copy_job j;
  j.key = std::move(key);
  j.n = 1;
  j.to[0] = to;
  copy_retry_.push_back(std::move(j));
}

void storage_shard::finish_copies() {
  if (copy_.failed) {
    ++copy_failed_;
    return;  // (copy_.to stays: the pass is done again)
  }
  copied_ring_ = copy_.to;
  copy_.to.reset();
}

void storage_shard::note_deletes(const storage::op_batch& ops,
                                 const storage::result_batch& results) {
  for (size_t i = 0; i < ops.size() && i < results.size(); ++i) {
    const auto& o = ops[i];
    const auto st = results[i].st;
    // The cluster's own removes (uncounted: a past copy's delete, a warm op, a delete's copy
    // re-replication made) are no deletes of the key to hand back: one that ran while this
    // node's view had the key's owners dead (a past-copy delete held by a cut, run at the
    // heal) went back to them without a point and removed what they took meanwhile. A
    // replicated delete arrives counted (its origin says so).
    if (o.kind != storage::op_kind::remove || o.hand_back || !o.counted ||
        (st != storage::status::deleted && st != storage::status::not_found))
      continue;
    const uint64_t h = cluster::ring::key_hash(o.key);
    cluster::ring::member_id all[cluster_view::max_replicas], live[cluster_view::max_replicas];
    const size_t n = view_ring_->owner_ids(h, prune_replicas_, all);
    const size_t l = view_ring_->live_owner_ids(h, prune_replicas_, live);
    if (std::find(live, live + l, self_) == live + l)
      continue;  // (not an owner here: a past copy's delete)
    std::optional<uint64_t> at;  // (looked up once, for the first dead owner)
    for (size_t j = 0; j < n; ++j) {
      const auto& m = view_ring_->member(all[j]);
      if (m.alive)
        continue;
      if (!at)
        at = shard_->recent_delete(o.key);
      keep_tombstone(m.name, o.key, *at);
    }
  }
}

void storage_shard::keep_tombstone(const std::string& member, const std::string& key,
                                   uint64_t at) {
  auto of_member = [&] {
    return std::find_if(tombstones_.begin(), tombstones_.end(),
                        [&](const auto& x) { return x->member == member; });
  };
  if (auto t = of_member(); t != tombstones_.end()) {
    if (auto it = (*t)->noted.find(key); it != (*t)->noted.end()) {  // noted already
      // (The later delete's point: none if this one has none — the key was written again in
      // its batch —, this one's if the kept one had none, else the later of the two.)
      if (at == 0 || it->second == 0 || storage::cas_clock_newer(at, it->second))
        it->second = at;
      return;
    }
  }
  if (tombstone_count_ >= max_tombstones) {  // the longest list loses its oldest
    auto most = std::max_element(
      tombstones_.begin(), tombstones_.end(),
      [](const auto& a, const auto& b) { return a->keys.size() < b->keys.size(); });
    auto& lost = **most;
    lost.noted.erase(lost.keys.front());
    lost.keys.pop_front();
    --tombstone_count_;
    ++tombstones_dropped_;
    if (lost.keys.empty())
      tombstones_.erase(most);
  }
  auto t = of_member();
  if (t == tombstones_.end()) {
    tombstones_.push_back(std::make_unique<tombstones>());
    t = std::prev(tombstones_.end());
    (*t)->member = member;
  }
  auto& mine = **t;
  mine.keys.push_back(key);
  mine.noted.emplace(mine.keys.back(), at);
  ++tombstone_count_;
}

void storage_shard::send_tombstone_batch(sent_tombstones b) {
  storage::op_batch batch;
  batch.reserve(b.keys.size());
  for (size_t i = 0; i < b.keys.size(); ++i)
    batch.push_back(handed_back_delete(b.keys[i], b.points[i]));
  handed_back_ += batch.size();
  b.tag = tombstone_tag_bit | ++tombstone_tag_;
  send(b.dest, warm_atom::value, b.tag, std::move(batch));
  if (tombstone_sent_.size() >= max_tombstone_batches)
    tombstone_sent_.pop_front();  // (its answer is not looked at)
  tombstone_sent_.push_back(std::move(b));
}

void storage_shard::send_tombstones(const cluster_view& v, const std::string& name) {
  auto t = std::find_if(tombstones_.begin(), tombstones_.end(),
                        [&](const auto& x) { return x->member == name; });
  if (t == tombstones_.end())
    return;
  auto& mine = **t;
  // Each key's point, read before any key moves (`noted` views the keys' strings); and a
  // delete whose note here the copy guard forgot (a cut longer than its seconds) noted here
  // again at its point: else the member's copy of an older write (handed back: it held the
  // key on its side), or a read here that misses and, no longer "deleted lately", warms the
  // key from a past owner, would bring the key back here while the delete removes it there.
  // Only a key with no item here (a write since stays as it is, whatever its CAS: a client's
  // meta E orders nothing) and no note (one still noted needs nothing: no extra work, and
  // the guard's other notes are not pushed out, after a short cut).
  std::vector<uint64_t> points;
  points.reserve(mine.keys.size());
  for (const auto& k : mine.keys) {
    points.push_back(mine.noted.at(k));
    if (points.back() == 0 || !storage::cas_clocked(points.back()))
      continue;
    const auto r = read_for_copy(k);
    if (r.st == storage::status::miss && r.deleted_cas == 0) {
      storage::op again = storage::delete_copy(k, points.back());
      shard_->execute(again);
    }
  }
  mine.noted.clear();
  auto id = v.ring->find(name);
  caf::actor dest = id && *id < v.peers.size() ? v.peers[*id] : caf::actor();
  if (dest) {
    sent_tombstones b;
    auto flush = [&] {
      b.member = name;
      b.dest = dest;
      send_tombstone_batch(std::move(b));
      b = sent_tombstones{};
    };
    for (size_t i = 0; i < mine.keys.size(); ++i) {
      b.keys.push_back(std::move(mine.keys[i]));
      b.points.push_back(points[i]);
      if (b.keys.size() == prune_slots_per_turn)
        flush();
    }
    if (!b.keys.empty())
      flush();
  }
  tombstone_count_ -= mine.keys.size();
  tombstones_.erase(t);
}

storage::shard_stats storage_shard::stats() const {
  auto st = shard_->stats();
  st.handed_back = handed_back_;
  st.handed_back_copies = handed_back_copies_;
  st.hand_back_dropped = tombstones_dropped_;
  st.rereplicated = copied_;
  st.rereplicated_deletes = copied_deletes_;
  st.rereplicate_redone = copy_failed_;
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
                           [&](const auto& d) { return d.name == m.name; });
    if (!m.alive) {
      if (it != dead_since_.end())
        continue;
      if (dead_since_.size() >= max_dead_noted)  // (the longest dead go first)
        dead_since_.erase(dead_since_.begin());
      // What was stored here before then stays: a member whose view was ahead of this
      // node's may have written here for it a little earlier (views agree within seconds).
      dead_since_.push_back({m.name, cas_before(now - std::min(now, prune_untouched_s)),
                             storage::current_cas()});
      continue;
    }
    if (it == dead_since_.end())
      continue;
    // Alive again: what was stored here since it died, for keys it owns now, may be newer
    // than its copies. (Its earlier hand-back, if it died again before it was done, joins.)
    send_tombstones(v, m.name);
    const dead_member d = std::move(*it);
    dead_since_.erase(it);
    auto h = std::find_if(hand_backs_.begin(), hand_backs_.end(),
                          [&](const hand_back& x) { return x.name == m.name; });
    if (h != hand_backs_.end()) {
      // (Dead again before its hand-back was done: both passes anew, from the first death;
      // what went in a pass whose copies were all taken stays a replace.)
      h->since_cas = std::min(h->since_cas, d.since_cas);
      h->dead_cas = std::max(std::min(h->dead_cas, d.dead_cas), h->copied_cas);
      h->passes = 0;
      h->redone = 0;
      continue;
    }
    hand_back nh;
    nh.name = m.name;
    nh.since_cas = d.since_cas;
    nh.dead_cas = d.dead_cas;
    hand_backs_.push_back(std::move(nh));
  }
  // Deleted keys kept for a member the ring no longer lists go (it left, or was dropped).
  tombstones_.erase(std::remove_if(tombstones_.begin(), tombstones_.end(),
                                   [&](const std::unique_ptr<tombstones>& t) {
                                     if (v.ring->find(t->member))
                                       return false;
                                     tombstone_count_ -= t->keys.size();
                                     return true;
                                   }),
                    tombstones_.end());
  view_ring_ = v.ring;
}

} // namespace bifrost::actors
