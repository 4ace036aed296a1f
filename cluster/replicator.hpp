// The replicator: the replication side-effect actor of a node (R > 1). A write served here as
// its key's primary is copied to the key's other live owners by this actor, never by the
// connection that served it.
//
// Messages (actors/messages.hpp):
//   - (ring_atom, cluster_view_ptr): the placement to replicate with, from the cluster service
//     on every ring change (the same views the route table gets).
//   - (replicate_atom, keys): in the background. The keys of every such message that arrives
//     before the replicator runs out of mail go as one batch, each key once: one local read
//     (exec_atom to the storage shards, gets that count no access) and one apply_atom per
//     owner. A key whose state could not be read, or that an owner did not take, is tried
//     again after 0.2, 0.6 and 1.8 s, with its state and its owners read again.
//   - (replicate_atom, keys, tag): the same, once; the sender then gets
//     (replicated_atom, tag, bool all_acknowledged) — how a write waits for every replica.
//   - (settle_atom, tag): the sender gets (replicated_atom, tag, true) once nothing is queued,
//     in flight or waiting out a retry's backoff (at once when idle); false if the replicator
//     quits first. A stopping node waits for it before it leaves (service::stop), so that the
//     writes it acknowledged reach their other owners.
//   - (result_atom, tag, result_batch): answers of the shards, links and peers.
// What an owner gets is the key's state as this node holds it now (a set with the value,
// flags, absolute expiry and CAS, or a delete for an absent key), origin replica: the owner
// applies it and replicates no further. Sending current state instead of the client's op makes
// a retry or a lost copy harmless, as long as copies to one owner arrive in the order they
// were read. So jobs send in the order they read (a job whose reads came back first waits for
// earlier jobs still reading), and when an owner's destination changes (its link appears,
// goes, or moves to a new address) while state sent the old way is unanswered, newer state is
// held back until the old way has answered (or its copies were given up on), then sent the
// new way in order — never stuck on the old way under steady load. Not covered: a copy given
// up on at its phase's deadline (RPC timeout + 1 s) can still land after newer state sent
// once it was given up on; the owner then holds the older state until the key's next write.
//
// Where replicated state goes: the data link to the owner (cluster/data_link.hpp), which falls
// back to the owner's RPC peer actor itself, or the RPC peer actor (cluster_view::peers) when
// there is no link. Both take (apply_atom, tag, op_batch). Every phase (the local read, the
// owners' answers) waits at most timeout_ms + 1 s (checked by a tick every timeout_ms / 4,
// 10 ms to 1 s, while jobs are pending), after which what did not answer counts as not
// taken.
//
// Host: bifrostd hosts it on the first I/O loop, beside that loop's shards and data links, so
// that replication crosses no thread whichever thread runs the RPC; without a loop (tests,
// the RPC service alone) it is hosted on the KJ loop. Handlers run on the host's thread.
#pragma once

#include "actors/cluster_view.hpp"
#include "actors/loop_actor.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace bifrost::cluster {

struct replicator_config {
  /// The node's storage shards: a key's state is read from shards[key_hash(key) % size].
  std::vector<caf::actor> shards;
  /// The data link to member `id` of the view's ring, or null (then the view's RPC peer
  /// actor). Called on the replicator's host thread; may be empty.
  std::function<caf::actor(const actors::cluster_view& view, uint32_t id)> link;
  uint32_t timeout_ms = 2000;  ///< the RPC's timeout; a phase waits at most this + 1 s
  /// Kept alive as long as the actor object (its host must outlive it: the KJ loop's owner).
  std::shared_ptr<void> keep_host;
};

/// Spawns the replicator on `host` (an io_loop or the KJ loop).
caf::actor spawn_replicator(caf::actor_system& sys, actors::actor_host& host,
                            replicator_config cfg);

/// Background replication: how often a key not taken is tried again, and the first delay
/// (tripled each time).
constexpr unsigned replicate_retries = 3;
constexpr uint64_t replicate_backoff_ms = 200;

/// How often the replicator looks for phases past their deadline (timeout_ms / 4, 10 ms to
/// 1 s), and the longest a waiting writer's (replicate_atom, keys, tag) can take to be
/// answered: two phases of timeout_ms + 1 s, each noticed up to one tick late.
inline uint64_t replicate_tick_ms(uint32_t timeout_ms) {
  return std::clamp<uint64_t>(timeout_ms / 4, 10, 1000);
}
inline uint64_t replicate_bound_ms(uint32_t timeout_ms) {
  return 2 * (uint64_t{timeout_ms} + 1000 + replicate_tick_ms(timeout_ms));
}

} // namespace bifrost::cluster
