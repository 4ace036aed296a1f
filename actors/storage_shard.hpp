// The storage shard actor: the only owner of one storage::shard (one slice of the key space).
//
// Placement: hosted on an I/O loop (default: a connection on the same loop reaches it without
// a syscall or a thread switch) or, with no host, on the CAF scheduler. Interface (atoms in actors/messages.hpp):
//   (exec_atom, tag, op_batch)  executes the ops in order; the sender receives
//                               (result_atom, tag, result_batch), results in op order.
//   (stats_atom)                -> storage::shard_stats (request/response)
//   (stats_atom, tag)           the sender receives (stats_atom, tag, shard_stats)
//   (sweep_atom)                internal, every `sweep_interval`: bounded expiry sweep
//   (prune_atom, cluster_view_ptr)  with a view: drops the items whose keys this node is not
//                               among the first R live owners of in the view's ring nor in any
//                               of its past rings (those it still warms from), 4096 index
//                               slots per turn (other mail runs in between), keeping what was
//                               written or read in the last prune_untouched_s seconds (looked
//                               at again that much later); with null: stops. The route table
//                               sends it before the view's snapshot, so the node's own ops
//                               routed by that view find it; a member whose view is ahead
//                               may write a key this view does not give this node, which the
//                               recent-write rule keeps.
// Ownership: the actor owns the shard; pinned slices in results keep segments alive on
// whatever thread holds them.
#pragma once

#include "storage/shard.hpp"

#include "actors/cluster_view.hpp"
#include "actors/loop_actor.hpp"
#include "cluster/ring.hpp"

#include <chrono>
#include <memory>
#include <vector>

namespace bifrost::actors {

class storage_shard : public hosted_actor {
public:
  /// `host` nullptr: the shard runs on the CAF scheduler.
  storage_shard(caf::actor_config& cfg, actor_host* host, std::unique_ptr<storage::shard> shard,
                std::chrono::milliseconds sweep_interval);

  caf::behavior make_behavior() override;
  const char* name() const override { return "storage_shard"; }

private:
  /// A prune keeps what was written or read in this many seconds before its pass began (a
  /// member whose view is ahead of this node's may have written it as its owner's: views
  /// agree within a few seconds), and looks at such items again this long after the pass.
  static constexpr uint32_t prune_untouched_s = 10;
  static_assert(prune_untouched_s * 1000 == cluster_view::copies_kept_ms,
                "writes delete past copies until the prune may drop them");
  void start_prune();
  void prune_step(uint64_t gen);

  std::unique_ptr<storage::shard> shard_;
  std::chrono::milliseconds sweep_interval_;
  // The running prune: the rings whose owned keys it keeps (the view's current and past
  // rings, each with this node's id in it), R; a step message whose generation is not
  // prune_gen_ belongs to a pass stopped or restarted since.
  struct owned_in {
    std::shared_ptr<const cluster::ring> ring;
    cluster::ring::member_id self;
  };
  std::vector<owned_in> prune_rings_;
  uint32_t prune_replicas_ = 1;
  uint64_t prune_gen_ = 0;
  uint32_t prune_since_ = 0;   // unix seconds: items touched since are kept this pass
  size_t prune_recent_ = 0;    // items of this pass kept for that
};

} // namespace bifrost::actors
