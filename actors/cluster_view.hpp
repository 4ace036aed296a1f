// What a node knows about the cluster's placement, as connections need it to route a key.
//
// Built by the cluster service (cluster/service.hpp) on every membership change and sent to
// the route table (ring_atom), which publishes it inside the route snapshot. Immutable and
// shared across threads.
//
// Routing a key (connection): owners = ring->live_owner_ids(hash, replicas). If owners[0] is
// `self`, the key is served by the local shards (and writes are then reported to `replicator`
// when replicas > 1; with `wait_replicas` the client's reply waits for the replicator's
// (replicated_atom) answer, else it goes out at once); else the ops go to the loop's data link
// to owners[0] (loop_context::links) or, when no link can carry them, to peers[owners[0]]:
// either behaves like a storage shard (exec_atom -> result_atom). A read whose result is
// `unavailable` is retried on the next owner. Write-on-miss warming: while now < warm_until_ms(), a get that misses at its
// primary asks the primaries of the `past` rings in turn, newest first (each once, skipping
// the node that missed), stores the first hit at the primary, and answers the client with it.
#pragma once

#include "cluster/ring.hpp"

#include <caf/actor.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bifrost::actors {

/// A placement the cluster had before the current one, still warmed from (write-on-miss
/// warming). Its window ends `--warm-window` after it was replaced.
struct past_ring {
  std::shared_ptr<const cluster::ring> ring;
  std::vector<caf::actor> peers;     // by member id of `ring`
  std::vector<std::string> clients;  // by member id of `ring` (links)
  int64_t warm_until_ms = 0;         // steady-clock ms: end of its warming window
  /// Live owners of a key (clockwise, first included) that a delete inside the window reaches
  /// in this ring; reads ask only the first. R (each copy the ring placed: another member's
  /// chain may name a replica as a primary), up to max_erase_ranks; that many in the ring a
  /// node took as its previous one when it joined: nodes that joined just before it may not
  /// have warmed their keys yet, and would then owe them to the next owners clockwise, which
  /// this node never knew as their owners. (Only deletes go there: with R = 1 such a node may
  /// also hold a copy left from long before, which a delete since never reached.)
  uint8_t erase_ranks = 1;
  static constexpr uint8_t max_erase_ranks = 4;
  /// A member this ring has dead only because it was joining (a node's first ring with others
  /// is the others' without itself): not taken for dead when an older ring names it.
  std::string joining = {};
  /// Steady-clock ms: until then a plain read that hits at its key's owner is also read at
  /// the key's owner in this ring when that is another node (actors::check_source), and the
  /// later write of the two answers (by CAS: storage::cas_clock_newer). Such a node may not
  /// have heard of the change yet and take writes as the key's primary (a member that lags
  /// places them there; placing again needs the node itself to know). --read-check-window
  /// after the change; 0 for the rings a join reply hands over, and once copied into a later
  /// view the value stays (the window is per change).
  int64_t check_until_ms = 0;
};

struct cluster_view {
  /// At most this many past rings are kept (several ring changes inside one window: a
  /// rolling restart, two joins at once, a flapping member).
  static constexpr size_t max_past = 8;
  /// The most owners a key has (--replicas is 1..16).
  static constexpr uint32_t max_replicas = 16;

  std::shared_ptr<const cluster::ring> ring;      // current placement
  uint32_t self = 0;                              // this node's member id in `ring`
  std::string self_name;                          // this node's name (also when not in `ring`)
  std::vector<caf::actor> peers;                  // by member id of `ring`; null for self/dead
  std::vector<std::string> clients;               // by member id: memcached "host:port" (links)
  uint32_t replicas = 1;                          // R: owners per key
  caf::actor replicator;                          // replication side-effect actor (may be null)
  caf::actor router;  // places again a member's ops placed by a ring this node replaced (a data
                      // link session's: actors/cluster_route.hpp, stale placements); may be null
  bool wait_replicas = false;                     // writes answer after every live owner stored them
  // R > 1: after a ring change the shards copy their items to the keys' new owners
  // (actors/storage_shard.hpp, re-replication); off: new owners only warm on a miss.
  bool rereplicate = true;
  // Set in the first view after members restarted before anyone had them dead (a process
  // back under its name within the failure detection window: membership's
  // event_kind::restarted): their names. They lost the copies they held in memory; the
  // shards count the copies made without them, so the owners that stay copy to them again.
  // Null otherwise; a shard acts on each such list once.
  std::shared_ptr<const std::vector<std::string>> restarted;
  // Members this node saw come back (alive again after a suspicion, a death or a leave, or a
  // new process under the name: membership's alive_again and restarted events), each with the
  // number of its latest return (rising across all members; cluster/service.cpp). A loop's
  // data link to one dials it at once (cluster/data_link.cpp, on_member_back) instead of
  // waiting out what it learnt while the member was away. Null before any return.
  std::shared_ptr<const std::map<std::string, uint64_t>> returns;
  // Only `returns` changed since the view before (a member back from a suspicion keeps its
  // place in the ring): the route table does not restart the shards' prune for it.
  bool returns_only = false;
  // The longest a call between members may take (queued_limit_factor RPC timeouts): a copy
  // (warming's, re-replication's) lands at most this long after its read.
  uint64_t call_limit_ms = 30000;
  // Started with --join and not joined yet (no seed answered, no other member seen, for at
  // most service::join_wait_ms): the ring holds this node alone, so a key placed by it would
  // land here and be lost (or an older copy at its owner served) once the node joins. Client
  // ops answer `unavailable` meanwhile (place); ops other members send here still run.
  bool joining = false;
  // Past placements inside their warming windows, newest first (so their window ends
  // decrease): the previous ring, then the one before it, ...
  std::vector<past_ring> past;
  // The latest past_ring::check_until_ms of `past` (0: none): reads look no further after it.
  int64_t check_until_ms = 0;

  /// A past ring stays in the view this long after its window ended (warm reads stop at the
  /// window's end): writes still delete the older copies its owners hold until the shards'
  /// prune, which keeps what was written or read in the last copies_kept_ms (a member whose
  /// view is ahead may have written it), can drop them (actors/storage_shard.hpp).
  static constexpr int64_t copies_kept_ms = 10000;

  /// End of the newest past ring's window (steady-clock ms), 0 with none.
  int64_t warm_until_ms() const noexcept { return past.empty() ? 0 : past.front().warm_until_ms; }
  /// A ring change happened less than a warming window ago.
  bool warming(int64_t now_ms) const noexcept { return now_ms < warm_until_ms(); }

  /// Writes served here as their keys' primary are copied to the other owners (R > 1).
  bool replicating() const noexcept { return replicas >= 2 && replicator; }
};

} // namespace bifrost::actors
