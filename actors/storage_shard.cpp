#include "actors/storage_shard.hpp"

#include "actors/messages.hpp"

#include <caf/actor_cast.hpp>

namespace bifrost::actors {

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
  };
}

} // namespace bifrost::actors
