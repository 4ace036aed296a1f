// A Bifrost node: the actor system, the I/O loops and every long-lived actor, wired together.
//
// start() builds, in order: the CAF actor system (scheduler tuned: see docs/ARCHITECTURE.md),
// the I/O loops (started) with their dispatchers, the storage shards (opened, or recovered
// from --data-dir) and their actors (on the loops, or on the scheduler), the route table
// actor, the listening sockets (a busy port is reported before any client is served), and
// one listener actor per loop.
// stop() tears down in reverse, in the only order that cannot hang: listeners stop accepting
// and connections drain (bounded by drain_timeout, then closed), every loop-hosted actor is
// gone, the loops stop, the scheduler actors exit, and finally the actor system is destroyed.
//
// Thread affinity: start(), stop() and the destructor run on the owning (main) thread.
#pragma once

#include "actors/node_config.hpp"
#include "storage/ops.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <utility>
#include <vector>
#include <string>

namespace bifrost::storage {
class parked_values;
}

namespace bifrost::actors {

class io_loop;
class loop_links;
struct loop_context;
struct cluster_view;
using stat_list = std::vector<std::pair<std::string, std::string>>;

class node {
public:
  /// Starts a node; nullptr with `error` set when it cannot (bind, data dir, memfd...).
  /// `before_first_loop`: called with the first I/O loop before its thread starts (the
  /// daemon attaches the cluster's KJ loop there: cluster/kj_loop.hpp).
  static std::unique_ptr<node> start(const node_config& cfg, std::string& error,
                                     std::function<void(io_loop&)> before_first_loop = {});
  ~node();

  /// File descriptors a node with `cfg` may hold at once: every client connection (-c), every
  /// storage segment (a memfd or file each, twice over for retired ones a send still pins),
  /// and room for the rest (listeners, loops, data links, RPC connections). The daemon raises its
  /// RLIMIT_NOFILE to this, as memcached does from -c.
  static uint64_t descriptors_wanted(node_config cfg);
  /// Clients a node with `cfg` serves at once when its process may open `open_files`
  /// descriptors: -c, less what the storage segments and the node's other descriptors
  /// (listeners, loops, RPC) would not find room for (a client beyond it is refused as beyond
  /// -c, instead of its descriptor being one a segment then lacks: a write failed `out of
  /// memory`), but never below half the limit. Members' data links arrive as connections
  /// and count among them.
  static uint32_t client_limit(node_config cfg, uint64_t open_files);
  /// This node's client_limit (set at start from RLIMIT_NOFILE).
  uint32_t client_limit() const;

  /// The port the memcached listener is bound to (useful with port 0).
  uint16_t port() const;
  /// Stops accepting new clients; open connections go on being served (until drain()).
  void stop_accepting();
  /// Stops accepting and waits (bounded by drain_timeout) for open connections to finish;
  /// closes what remains. Idempotent; stop() calls it first.
  void drain();
  /// From now on, a write another member sends over a data link (or over the RPC, which
  /// asks member_writes_refused()) answers unavailable when it would run here (the node is
  /// leaving its cluster: node_shared::member_writes_refused); one this node places again on
  /// the key's owners (the member placed it by a ring this node has replaced) still goes
  /// there. Any thread.
  void refuse_member_writes();
  /// Whether refuse_member_writes() was called (for the RPC's member calls). Any thread.
  bool member_writes_refused() const;
  /// Graceful stop (idempotent): drain, then tear down in order.
  void stop();

  // -- for the daemon's wiring (the cluster service) --------------------------------------
  caf::actor_system& system();
  /// The storage shard actors (a key lives on shards()[key_hash(key) % size]).
  std::vector<caf::actor> shards() const;
  /// Where the cluster parks values left out of its replies (storage/parked.hpp).
  std::shared_ptr<storage::parked_values> parked() const;
  /// Counts a tool's (bifrostctl's) get, set and touch ops as a client's commands (cmd_get,
  /// cmd_set, cmd_touch). Only ever on the thread the cluster RPC runs on.
  void count_tool_ops(const std::vector<storage::op>& ops);
  caf::actor route_table() const;
  /// memcached's general stats of this node as name/value pairs, without waiting: asks every
  /// shard (bounded by `timeout`) and calls `done` with the sum, on a scheduler thread. Any
  /// thread, the I/O loops' and the RPC's included.
  void stats_async(std::chrono::milliseconds timeout, std::function<void(stat_list)> done);

  /// The cluster's data links (cluster/data_link.hpp): `make` runs once on each I/O loop's
  /// thread and its result serves that loop (loop_context::links) until stop() closes it.
  using links_factory = std::function<std::unique_ptr<loop_links>(io_loop&, loop_context&)>;
  void set_links(links_factory make);
  /// Loop `loop`'s data link to member `id` of cv's ring (loop_links::shared_link), or null.
  /// Any thread, between set_links() and stop().
  caf::actor link_for(size_t loop, const cluster_view& cv, uint32_t id);

  struct impl;

private:
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace bifrost::actors
