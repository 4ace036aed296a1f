// What a node knows about the cluster's placement, as connections need it to route a key.
//
// Built by the cluster service (cluster/service.hpp) on every membership change and sent to
// the route table (ring_atom), which publishes it inside the route snapshot. Immutable and
// shared across threads.
//
// Routing a key (connection): owners = ring->live_owner_ids(hash, replicas). If owners[0] is
// `self`, the key is served by the local shards (and writes are then reported to `replicator`
// when replicas > 1; with `wait_replicas` the client's reply waits for the replicator's
// (replicated_atom) answer, else it goes out at once); else the ops go to peers[owners[0]], an actor that behaves like a
// storage shard (exec_atom -> result_atom). A read whose result is `unavailable` is retried on
// the next owner. Write-on-miss warming: while now < warm_until_ms, a get that misses at its
// primary (this node) asks the primary of `previous` (if another node) with warm_atom, stores a
// hit locally, and answers the client with it.
#pragma once

#include "cluster/ring.hpp"

#include <caf/actor.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bifrost::actors {

struct cluster_view {
  std::shared_ptr<const cluster::ring> ring;      // current placement
  uint32_t self = 0;                              // this node's member id in `ring`
  std::string self_name;                          // this node's name (also when not in `ring`)
  std::vector<caf::actor> peers;                  // by member id of `ring`; null for self/dead
  std::vector<std::string> clients;               // by member id: memcached "host:port" (links)
  uint32_t replicas = 1;                          // R: owners per key
  caf::actor replicator;                          // replication side-effect actor (may be null)
  bool wait_replicas = false;                     // writes answer after every live owner stored them
  std::shared_ptr<const cluster::ring> previous;  // placement before the last change, or null
  std::vector<caf::actor> previous_peers;         // by member id of `previous`
  std::vector<std::string> previous_clients;      // by member id of `previous` (links)
  int64_t warm_until_ms = 0;                      // steady-clock ms; warming window end

  /// Writes served here as their keys' primary are copied to the other owners (R > 1).
  bool replicating() const noexcept { return replicas >= 2 && replicator; }
};

} // namespace bifrost::actors
