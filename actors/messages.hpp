// Every atom and message type of the Bifrost actor system, in one place.
//
// Messages between actors of one process never leave the process (node-to-node traffic is
// Cap'n Proto, see cluster/), so batch types are passed by value without serializers
// (CAF_ALLOW_UNSAFE_MESSAGE_TYPE): CAF moves them, never copies them across a wire.
#pragma once

#include "storage/ops.hpp"
#include "storage/shard.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace bifrost::actors {

// -- storage shard (actors/storage_shard.hpp) -------------------------------------------------
/// (exec_atom, uint64_t tag, op_batch) -> sender receives (result_atom, tag, result_batch)
/// (a member's data link and peer actor also take a trailing uint64_t placed_by: below)
using exec_atom = caf::atom_constant<caf::atom("exec")>;
/// reply to exec_atom: (result_atom, uint64_t tag, result_batch)
using result_atom = caf::atom_constant<caf::atom("result")>;
/// (stats_atom) -> storage::shard_stats (request/response);
/// (stats_atom, uint64_t tag) -> sender receives (stats_atom, tag, shard_stats)
using stats_atom = caf::atom_constant<caf::atom("stats")>;
/// (sweep_atom): internal timer of a shard; reclaims expired items
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
/// (prune_atom, cluster_view_ptr) from the route table: drop in the background the items whose
/// keys this node owns in none of the view's rings (current and past); null: stop dropping
using prune_atom = caf::atom_constant<caf::atom("prune")>;
/// (memlimit_atom, uint64_t bytes): `cache_memlimit` changed the node's -m; this shard's share
/// is `bytes` from now on (storage::shard::set_memory_limit); (memlimit_atom): the shard's own
/// next step of evicting down to it
using memlimit_atom = caf::atom_constant<caf::atom("memlimit")>;

// -- route table (actors/route_table.hpp) ------------------------------------------------------
/// (subscribe_atom, actor) -> the subscriber receives (routes_atom, route_snapshot_ptr) now
/// and after every change
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
/// (routes_atom, route_snapshot_ptr): a new immutable route table snapshot
using routes_atom = caf::atom_constant<caf::atom("routes")>;

// -- cluster (cluster/service.hpp, actors/cluster_view.hpp) ------------------------------------
/// (ring_atom, cluster_view_ptr) to the route table: the cluster's placement changed; the route
/// table publishes a snapshot whose default route is the ring.
using ring_atom = caf::atom_constant<caf::atom("ring")>;
/// (warm_atom, tag, op_batch) to a peer actor: execute on that node with origin `warm` (reads
/// for write-on-miss warming, no access counted); reply (result_atom, tag, result_batch).
using warm_atom = caf::atom_constant<caf::atom("warm")>;
/// (apply_atom, tag, op_batch) to a data link (cluster/data_link.hpp) or a peer actor:
/// replicated state for that member (origin replica: applied there, not replicated further);
/// reply (result_atom, tag, result_batch).
using apply_atom = caf::atom_constant<caf::atom("apply")>;
/// (replicate_atom, std::vector<std::string> keys) to the replicator: these keys were written
/// on this node as their primary; copy their current state (or absence) to the other owners
/// (in the background; a batch an owner did not take is retried a few times).
/// (replicate_atom, keys, uint64_t tag): the same, once, and the sender then receives
/// (replicated_atom, tag, bool all_acknowledged) — for writes that wait for every replica.
using replicate_atom = caf::atom_constant<caf::atom("replicate")>;
using replicated_atom = caf::atom_constant<caf::atom("replicated")>;
/// (settle_atom, uint64_t tag) to the replicator: the sender receives (replicated_atom, tag,
/// true) once the replicator has nothing queued, in flight or waiting for a retry (at once
/// when idle), or (replicated_atom, tag, false) if it quits first. How a stopping node hands
/// its writes to their other owners before it leaves.
using settle_atom = caf::atom_constant<caf::atom("settle")>;
/// A peer actor receives (exec_atom, tag, op_batch) exactly like a storage shard and answers
/// (result_atom, tag, result_batch); results of an unreachable node have status unavailable.
/// A peer actor and a data link also take (exec_atom, tag, op_batch, uint64_t placed_by):
/// client ops placed by that ring (cluster::ring::placement), which their call names
/// (actors/dispatcher.hpp, add). A storage shard never gets that form.

// -- connections and listeners (actors/connection.hpp, actors/listener.hpp) -------------------
/// (close_atom): a loop-hosted actor finishes (socket closed, or node shutting down)
using close_atom = caf::atom_constant<caf::atom("close")>;
/// (finish_atom): a listener ends (the node stops: nothing on its loop needs the routes
/// it published there any more)
using finish_atom = caf::atom_constant<caf::atom("finish")>;
/// (accept_atom) to itself: a listener that paused on a file descriptor shortage accepts again
using accept_atom = caf::atom_constant<caf::atom("accept")>;

} // namespace bifrost::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(bifrost::storage::op_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(bifrost::storage::result_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(bifrost::storage::shard_stats)

namespace bifrost::actors {
struct cluster_view;  // actors/cluster_view.hpp
using cluster_view_ptr = std::shared_ptr<const cluster_view>;
struct route_snapshot;  // actors/route_table.hpp
using route_snapshot_ptr = std::shared_ptr<const route_snapshot>;
} // namespace bifrost::actors
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(bifrost::actors::route_snapshot_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(bifrost::actors::cluster_view_ptr)
