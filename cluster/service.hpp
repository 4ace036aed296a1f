// The cluster service: this node's Cap'n Proto RPC server and client side, SWIM membership
// driver and peer actors, all on one KJ loop (cluster/kj_loop.hpp), and the replicator. Below,
// "the KJ thread" is the thread that runs that loop: a thread of the service's own (bifrostd's
// default), or — attached, `--rpc-thread loop` — the first I/O loop's thread, shared with that
// loop's connections and shards (so nothing here may block: it would stall them too).
//
// What runs where (every KJ object lives on the KJ thread only):
//   - RPC server (`Node`, cluster/bifrost.capnp): hello (schema version check), swim
//     (membership), execute/upload (ops on the local storage shards), status/members/ring/
//     stats (queries), drain/leave (admin).
//   - Membership driver: owns the `membership` state machine, ticks it on a KJ timer, sends its
//     messages as `swim` calls (one cached connection per RPC address, reconnect with backoff;
//     a failed send drops the message) and, when the ring's input changes, builds a new ring
//     and sends (ring_atom, cluster_view_ptr) to the route table.
//   - Peer actors (one per remote member, hosted on the KJ thread, reused across rebuilds):
//     behave like a storage shard — (exec_atom | warm_atom, tag, op_batch) -> the sender gets
//     (result_atom, tag, result_batch); (exec_atom, tag, op_batch, placed_by) names the ring
//     the client ops were placed by in the call (else the service's ring as it is asked). Every RPC is bounded: `rpc_timeout_ms` without
//     progress of its own while its member sends nothing for other data calls either, 15
//     times that without progress of its own however busy the member is, replicated state
//     without the extension (service.cpp, `bounded`); an unreachable node gives
//     status::unavailable for every op of the batch.
//   - Bridge actor (hosted): sends exec_atom to the local shards for the RPC server and
//     receives their result_atom on the KJ thread, where it fulfils a kj::PromiseFulfiller.
//   - Peer actors also take (apply_atom, tag, op_batch): replicated state, sent with origin
//     replica (from the replicator, or from a data link that cannot carry it).
//   - Replicator (cluster/replicator.hpp, R > 1): spawned by the service on
//     `replicator_host` (bifrostd: the first I/O loop) or else on the KJ loop; it gets every
//     view the route table gets. (replicate_atom, keys) copies each key's current state to its
//     other live owners, in the background; (replicate_atom, keys, tag) does it once and
//     answers (replicated_atom, tag, ok): how a write waits for every replica.
//
// Node.execute from a member (its hello carries an RPC address) runs on the local shards: the
// member routed the ops here. From anyone else (bifrostctl) each op goes to its key's live
// primary (local shards or a peer). Origin client writes are handed to the replicator (R > 1).
// A node that left is not in its own ring: cluster_view.self is then ring->size() (no key's
// owner), so every key goes to the others.
//
// Connections: one multiplexed RPC connection per remote RPC address, shared by membership
// and the peer actors; `hello` first. Values up to 64 KiB travel inline; larger get
// results are streamed through the caller's ValueSink, larger stores go through Node.upload.
// A peer attaches a sink only to a batch with a get that must not run twice (gat, vivify,
// recache) or that re-reads a parked value: a plain read whose value is too large to inline
// comes back `streamed` and empty and is asked again with a sink (a sink per call costs
// messages: bench/RESULTS.md). The server parks the first read's result for that re-read
// (storage/parked.hpp), so a later call of the same caller that already ran does not show
// in it.
//
// Thread affinity: start/stop/accessors from any one owning thread. stop() must run before the
// actor system is destroyed (the hosted actors must quit first).
#pragma once

#include "actors/cluster_view.hpp"
#include "cluster/membership.hpp"
#include "cluster/tls_options.hpp"
#include "storage/ops.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bifrost::actors {
class actor_host;
}
namespace bifrost::storage {
class parked_values;
}

namespace bifrost::cluster {

class kj_loop;

/// "host:port" as other hosts dial it: a wildcard host (empty, 0.0.0.0, ::) becomes
/// `machine` (this host's name; kept when that is empty: it works on one host only), and an
/// IPv6 literal goes in brackets (KJ reads "::1:22001" as an address without a port).
std::string advertised_address(std::string host, uint16_t port, const std::string& machine);

/// This host's name (gethostname), or "" when it has none.
std::string host_name();

struct service_config {
  std::string node_name;            ///< unique in the cluster; default derived by the caller
  std::string rpc_host = "127.0.0.1";
  uint16_t rpc_port = 0;            ///< 0 = any free port
  std::string rpc_advertise;        ///< "host:port" others reach us at; empty =
                                    ///< advertised_address(rpc_host, bound port, host_name())
  std::string client_address;       ///< host:port of this node's memcached listener (advertised)
  std::vector<std::string> join;    ///< seeds, "host:port" of their RPC listeners
  uint32_t replicas = 1;            ///< R: owners per key
  /// Writes answer after every live owner stored them (else after the primary; the other
  /// owners are written in the background, with retries).
  bool wait_replicas = false;
  bool rereplicate = true;  // --rereplicate: copies to keys' new owners (cluster_view)
  /// Mutual TLS on every RPC connection, in and out (cluster/tls.hpp); off when empty.
  tls_options tls;
  uint32_t weight = 1;              ///< ring weight
  /// This process's membership instance (local_member::instance); 0: drawn at start.
  uint64_t instance = 0;
  membership_config swim;
  uint32_t rpc_timeout_ms = 2000;   ///< an RPC without progress for this long fails (a
                                    ///< forwarded data call: up to 15 × this while its
                                    ///< member sends other calls' values; see `bounded`)
  uint32_t warm_window_ms = 30000;  ///< write-on-miss warming window after a ring change
  /// After a ring change, this long (at most the warming window) a read that hits at a key's
  /// owner is checked at the key's owner in the ring replaced (actors::past_ring::
  /// check_until_ms): while that node has not heard of the change it may take writes.
  uint32_t read_check_window_ms = 2000;
  /// With seeds: how long client ops answer `unavailable` while no seed has answered
  /// (cluster_view::joining); then the node serves alone, and keeps asking the seeds.
  uint32_t join_wait_ms = 5000;
  /// The local shards recovered items at start (--data-dir): said when they are dropped on
  /// a restart after the cluster had this node dead or left.
  bool recovers_items = false;
  /// Where a read's value too large for an execute without a sink is kept for the caller's
  /// re-read (storage/parked.hpp; shared with the data links' sessions). Null: not kept.
  std::shared_ptr<storage::parked_values> parked;
  /// The largest value this node stores (its -I): an `upload` of a larger value is refused as
  /// too large as soon as it passes this, whatever a peer streams.
  uint64_t max_value = uint64_t(1) << 30;
  /// The data link (cluster/data_link.hpp) to member `id` of `view`'s ring, or null: the
  /// replicator sends replicated state through it (apply_atom), to the RPC peer actor when it
  /// is null. Called on the replicator's host thread.
  std::function<caf::actor(const actors::cluster_view& view, uint32_t id)> replica_link;
  /// Where the replicator runs (cluster/replicator.hpp): an I/O loop that outlives the
  /// service, or null for the KJ loop.
  actors::actor_host* replicator_host = nullptr;
  /// True once this node leaves its cluster for good (actors::node::refuse_member_writes,
  /// read on the KJ thread): a write that would run here for a member's client (Node.execute,
  /// Node.upload) answers `unavailable` instead, as over a data link: it would be neither
  /// replicated nor kept. Writes placed again on their owners still go there. Empty: never.
  std::function<bool()> member_writes_refused;
  /// Called on the KJ thread with the ops a tool (a caller that is no member: bifrostctl)
  /// sends, before they run: the node counts them as a client's commands. Empty: not counted.
  std::function<void(const storage::op_batch&)> count_tool_ops;
  std::function<void()> on_drain;   ///< Node.drain was called (run on the KJ thread)
  std::function<void()> on_leave;   ///< Node.leave was called (run on the KJ thread)
  /// Node.drain or Node.leave with holdUntilExit: called on the KJ thread with the socket of
  /// the caller's connection (borrowed: dup it to keep it), so that the process holds it open
  /// until it ends (cli/bifrostd.cpp) and the caller sees the node stop. Returns whether it
  /// holds it. Empty: not held (the connection closes with the service).
  std::function<bool(int fd)> hold_until_exit;
  /// After on_drain or on_leave: ms until the linger ends and the stop begins (KJ thread).
  /// Empty: unknown (0 in the answer).
  std::function<uint32_t()> stops_in_ms;
  /// The node cannot take part (its name is held by another live node): the message says
  /// why. Run once, on the KJ thread; the owner should stop the node.
  std::function<void(const std::string&)> on_fatal;
};

class service {
public:
  using stat_list = std::vector<std::pair<std::string, std::string>>;
  /// Asks for this node's stats; the answer may come later and from any thread.
  using stats_fn = std::function<void(std::function<void(stat_list)> reply)>;

  /// Starts the KJ thread, binds the RPC server, spawns the hosted actors, publishes the first
  /// view (a ring of this node alone) and joins the seeds. nullptr and `error` on failure.
  /// `local_shards`: this node's storage shard actors (key -> local_shards[key_hash % n]).
  /// `route_table`: receives (ring_atom, cluster_view_ptr) on every ring change.
  /// `stats`: this node's memcached stats (Node.stats; curr_items/bytes for status/members);
  /// called on the KJ loop, it must not wait there (the shards may share the thread); an
  /// answer later than 1 s counts as empty.
  /// `host`: the KJ loop to run on (attached to an I/O loop: cluster/kj_loop.hpp); null = a
  /// KJ thread of the service's own.
  static std::unique_ptr<service> start(caf::actor_system& sys, const service_config& cfg,
                                        std::vector<caf::actor> local_shards,
                                        caf::actor route_table, stats_fn stats,
                                        std::string& error,
                                        std::shared_ptr<kj_loop> host = nullptr);

  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  uint16_t rpc_port() const;
  std::string node_name() const;
  /// "host:port" advertised to the other members.
  std::string rpc_address() const;

  /// The first half of stop(): announce leave and wait (bounded ~1 s) until the others
  /// know, then wait until the replicator has handed the writes acknowledged here to the
  /// keys' owners (bounded by replicate_bound_ms; at once when it is idle). The node goes on
  /// serving meanwhile: what members still send it (placed before they knew) runs here and
  /// is replicated to the owners without it, or is placed again on them. Idempotent; stop()
  /// does it if not done.
  void leave();
  /// The node's loops route no more keys through the cluster: the route table gets a null
  /// view, and no later view (a membership change while stop() waits) is published to it.
  /// Idempotent.
  void forget_routes();
  /// Graceful: leave() if not done, wait (bounded) until the calls it placed on other
  /// members are answered and again until the replicator has handed on what was acknowledged
  /// meanwhile (unless the first wait gave up), quit the hosted actors, then tear down on the
  /// KJ thread (cancel task sets, destroy the RPC systems, drain the loop) and join the
  /// thread. Idempotent.
  void stop();
  /// Like stop() without the leave announcement: the others find out by failure detection
  /// (a crash, as far as the cluster can tell). For tests and fatal errors.
  void halt();

  struct impl;

private:
  service();
  void shutdown(bool announce);
  /// Starts `step` on the KJ thread and waits until it sets its promise, at most `limit`.
  void on_loop_until_done(void (impl::*step)(std::shared_ptr<std::promise<void>>),
                          std::chrono::milliseconds limit);
  /// How long a wait for the replicator (impl::settle_replication) may take: its own bound
  /// and a second.
  std::chrono::milliseconds settle_limit() const;

  std::shared_ptr<kj_loop> loop_;  // co-owned by the hosted actors (their host must outlive them)
  impl* impl_ = nullptr;  // lives on the KJ thread; destroyed by the teardown
  std::string name_;
  std::string address_;
  uint16_t port_ = 0;
  bool stopped_ = false;
  bool left_ = false;
  bool first_settle_ok_ = false;  // leave()'s wait for the replicator got there
};

} // namespace bifrost::cluster
