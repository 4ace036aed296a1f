// The storage shard actor: the only owner of one storage::shard (one slice of the key space).
//
// Placement: hosted on an I/O loop (default: a connection on the same loop reaches it without
// a syscall or a thread switch) or, with no host, on the CAF scheduler. Interface (atoms in actors/messages.hpp):
//   (exec_atom, tag, op_batch)  executes the ops in order; the sender receives
//                               (result_atom, tag, result_batch), results in op order.
//   (stats_atom)                -> storage::shard_stats (request/response)
//   (stats_atom, tag)           the sender receives (stats_atom, tag, shard_stats)
//   (sweep_atom)                internal, every `sweep_interval`: bounded expiry sweep
// Ownership: the actor owns the shard; pinned slices in results keep segments alive on
// whatever thread holds them.
#pragma once

#include "storage/shard.hpp"

#include "actors/loop_actor.hpp"

#include <chrono>
#include <memory>

namespace bifrost::actors {

class storage_shard : public hosted_actor {
public:
  /// `host` nullptr: the shard runs on the CAF scheduler.
  storage_shard(caf::actor_config& cfg, actor_host* host, std::unique_ptr<storage::shard> shard,
                std::chrono::milliseconds sweep_interval);

  caf::behavior make_behavior() override;
  const char* name() const override { return "storage_shard"; }

private:
  std::unique_ptr<storage::shard> shard_;
  std::chrono::milliseconds sweep_interval_;
};

} // namespace bifrost::actors
