#include "actors/storage_shard.hpp"

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"

#include <caf/actor_cast.hpp>

#include <algorithm>

namespace bifrost::actors {

namespace {
using prune_step_atom = caf::atom_constant<caf::atom("prunestep")>;
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
      prune_ring_.reset();
      if (!v || !v->ring || v->ring->empty())
        return;
      auto self = v->ring->find(v->self_name);
      if (!self)
        return;  // (not a member: nothing to go by)
      prune_ring_ = v->ring;
      prune_self_ = *self;
      prune_replicas_ = std::clamp<uint32_t>(v->replicas, 1, max_prune_replicas);
      shard_->begin_prune();
      send(this, prune_step_atom::value, prune_gen_);
    },
    [this](prune_step_atom, uint64_t gen) { prune_step(gen); },
  };
}

void storage_shard::prune_step(uint64_t gen) {
  if (gen != prune_gen_ || !prune_ring_)
    return;
  const auto& ring = *prune_ring_;
  auto progress = shard_->prune(
    [&](std::string_view key) {
      cluster::ring::member_id owners[max_prune_replicas];
      size_t n = ring.live_owner_ids(cluster::ring::key_hash(key), prune_replicas_, owners);
      return std::find(owners, owners + n, prune_self_) == owners + n;
    },
    prune_slots_per_turn);
  if (progress.done)
    prune_ring_.reset();
  else
    send(this, prune_step_atom::value, gen);  // after the mail already here
}

} // namespace bifrost::actors
