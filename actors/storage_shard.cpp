#include "actors/storage_shard.hpp"

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"

#include <caf/actor_cast.hpp>

#include <algorithm>

namespace bifrost::actors {

namespace {
using prune_step_atom = caf::atom_constant<caf::atom("prunestep")>;
using prune_again_atom = caf::atom_constant<caf::atom("pruneagain")>;
constexpr size_t prune_slots_per_turn = 4096;
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
      send(caf::actor_cast<caf::actor>(current_sender()), result_atom::value, tag,
           std::move(results));
    },
    [this](stats_atom) -> storage::shard_stats { return shard_->stats(); },
    [this](stats_atom, uint64_t tag) {
      send(caf::actor_cast<caf::actor>(current_sender()), stats_atom::value, tag,
           shard_->stats());
    },
    [this](sweep_atom) {
      shard_->sweep();
      delayed_send(this, sweep_interval_, sweep_atom::value);
    },
    [this](prune_atom, cluster_view_ptr& v) {
      ++prune_gen_;  // a step still on its way belongs to the pass before
      prune_rings_.clear();
      if (!v || !v->ring || v->ring->empty() || !v->ring->find(v->self_name))
        return;  // (not a member: nothing to go by)
      // The rings the node still reads from: the current one and those it warms from.
      auto add = [&](const std::shared_ptr<const cluster::ring>& r) {
        if (auto self = r ? r->find(v->self_name) : std::nullopt)
          prune_rings_.push_back({r, *self});
      };
      add(v->ring);
      for (const auto& p : v->past)
        add(p.ring);
      prune_replicas_ = std::clamp<uint32_t>(v->replicas, 1, cluster_view::max_replicas);
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
  auto progress = shard_->prune(
    [&](std::string_view key) {
      const uint64_t h = cluster::ring::key_hash(key);
      for (const auto& [ring, self] : prune_rings_) {
        cluster::ring::member_id owners[cluster_view::max_replicas];
        size_t n = ring->live_owner_ids(h, prune_replicas_, owners);
        if (std::find(owners, owners + n, self) != owners + n)
          return false;  // an owner there
      }
      return true;
    },
    prune_since_, prune_slots_per_turn);
  prune_recent_ += progress.recent;
  if (!progress.done) {
    send(this, prune_step_atom::value, gen);  // after the mail already here
    return;
  }
  // Items it would have dropped but were written or read lately (by a member whose view may
  // be ahead of this node's) are looked at again once they are old enough.
  if (prune_recent_ > 0)
    delayed_send(this, std::chrono::seconds(prune_untouched_s), prune_again_atom::value, gen);
  else
    prune_rings_.clear();
  prune_recent_ = 0;
}

} // namespace bifrost::actors
