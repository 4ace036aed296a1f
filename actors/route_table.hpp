// The route table: which target serves a key.
//
// The route table actor owns the table and publishes immutable snapshots. Subscribers (one
// listener per I/O loop) receive every snapshot and hand it to their connections by pointer,
// so routing a request costs a hash and a lookup, never an extra actor hop.
// Standalone (and in a cluster until its first view) every key goes to local storage, hashed
// over the shard actors; in a cluster each snapshot also carries the cluster_view
// (actors/cluster_view.hpp): the ring names a key's owners, and a connection sends a key owned
// elsewhere to that member's data link or peer actor.
//
// Interface (atoms in actors/messages.hpp):
//   (subscribe_atom, actor)  the actor receives (routes_atom, route_snapshot_ptr) now and on
//                            every change; it is unsubscribed when it terminates.
//   (ring_atom, cluster_view_ptr)  the cluster's placement changed: publish a new snapshot.
//                            First each local shard gets (prune_atom, view): drop the items of
//                            keys this node owns in none of the view's rings.
// Thread affinity: snapshots are immutable and shared across threads (shared_ptr<const>).
#pragma once

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bifrost::actors {

/// 64-bit hash of a key used for shard placement (stable across processes and versions).
uint64_t key_hash(std::string_view key) noexcept;

struct route_target {
  enum class kind : uint8_t { local };
  kind k = kind::local;
  std::vector<caf::actor> shards;  // local: the storage shard actors

  /// Index into `shards` for a key.
  size_t shard_index(std::string_view key) const noexcept {
    return shards.size() <= 1 ? 0 : static_cast<size_t>(key_hash(key) % shards.size());
  }
};

struct route {
  std::string prefix;  // keys starting with this prefix take this route
  route_target target;
};

struct route_snapshot {
  uint64_t version = 0;
  std::vector<route> routes;   // first match wins
  route_target fallback;       // the default route
  /// In a cluster: keys of the default route are placed by this ring (see cluster_view.hpp);
  /// null for a standalone node.
  cluster_view_ptr cluster;
  /// Started to join a cluster (--join) and no cluster view came yet: keys are unavailable,
  /// as with cluster_view::joining (the view's placement would land them here alone).
  bool awaiting_cluster = false;
  /// The node's cluster members are not known yet (awaiting_cluster, cluster_view::joining).
  bool joining() const noexcept { return awaiting_cluster || (cluster && cluster->joining); }

  const route_target& lookup(std::string_view key) const noexcept;
  /// Every distinct local shard (for broadcasts: flush_all, stats).
  const std::vector<caf::actor>& local_shards() const noexcept { return fallback.shards; }
};

/// The cluster view of `routes` when writes served here are replicated
/// (cluster_view::replicating), else null.
inline const cluster_view* replicating_view(const route_snapshot_ptr& routes) noexcept {
  return routes && routes->cluster && routes->cluster->replicating() ? routes->cluster.get()
                                                                     : nullptr;
}

class route_table : public caf::event_based_actor {
public:
  route_table(caf::actor_config& cfg, route_snapshot initial);
  caf::behavior make_behavior() override;
  const char* name() const override { return "route_table"; }

private:
  route_snapshot_ptr current_;
  std::vector<caf::actor> subscribers_;
};

} // namespace bifrost::actors
