// A Bifrost node: the actor system, the I/O loops and every long-lived actor, wired together.
//
// start() builds, in order: the CAF actor system (scheduler tuned: see docs/ARCHITECTURE.md),
// the storage shards (opened, or recovered from --data-dir) and their actors, the route table
// actor, the listening sockets (bound before any loop runs, so a busy port is reported at
// once), the I/O loops and one listener actor per loop.
// stop() tears down in reverse, in the only order that cannot hang: listeners stop accepting
// and connections drain (bounded by drain_timeout, then closed), every loop-hosted actor is
// gone, the loops stop, the scheduler actors exit, and finally the actor system is destroyed.
//
// Thread affinity: start(), stop() and the destructor run on the owning (main) thread.
#pragma once

#include "actors/node_config.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <memory>
#include <utility>
#include <vector>
#include <string>

namespace bifrost::actors {

class node {
public:
  /// Starts a node; nullptr with `error` set when it cannot (bind, data dir, memfd...).
  static std::unique_ptr<node> start(const node_config& cfg, std::string& error);
  ~node();

  /// The port the memcached listener is bound to (useful with port 0).
  uint16_t port() const;
  /// Stops accepting and waits (bounded by drain_timeout) for open connections to finish;
  /// closes what remains. Idempotent; stop() calls it first.
  void drain();
  /// Graceful stop (idempotent): drain, then tear down in order.
  void stop();

  // -- for the daemon's wiring (the cluster service) --------------------------------------
  caf::actor_system& system();
  /// The storage shard actors (a key lives on shards()[key_hash(key) % size]).
  std::vector<caf::actor> shards() const;
  caf::actor route_table() const;
  /// memcached's general stats of this node as name/value pairs; asks every shard, bounded
  /// by `timeout`. Any thread except an I/O loop's.
  std::vector<std::pair<std::string, std::string>> stats_snapshot(std::chrono::milliseconds timeout);

  struct impl;

private:
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace bifrost::actors
