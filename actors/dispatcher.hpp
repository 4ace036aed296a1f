// The dispatcher of one I/O loop: batches the storage ops of every connection of the loop.
//
// Connections hand each op to their loop's dispatcher with a direct call (same thread). At the
// end of the loop iteration (io_loop check hook) the dispatcher sends one
// (exec_atom, tag, op_batch) per destination — a local storage shard, or a data link or peer
// actor that stands for another node (then one per ring its client ops were placed by, with
// that placement, and flush_all's apart: see add()) — and scatters each
// (result_atom, tag, result_batch) back to the connections that are still open (a closed
// connection's writes at a local shard are handed to the replicator from here: see adopt()).
// Under load one message pair serves every request that arrived in the same iteration, instead
// of one pair per request (docs/ARCHITECTURE.md).
// A batch is cut into messages of at most max_batch_ops ops and max_batch_bytes of keys and
// values, in order: a data link carries at most 256 ops a call (cluster/convert.hpp,
// call_max_ops), and a larger batch would otherwise leave the fast path exactly under load.
//
// Thread affinity: hosted on its loop; add() and the hook run on that loop's thread only.
#pragma once

#include "actors/loop_actor.hpp"
#include "actors/messages.hpp"

#include <caf/actor.hpp>

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

namespace bifrost::actors {

struct loop_context;

class dispatcher : public loop_actor {
public:
  static constexpr size_t max_batch_ops = 256;
  /// Ops a destination's batch holds before it grows (one allocation for most iterations).
  static constexpr size_t first_batch_capacity = 16;
  static constexpr size_t max_batch_bytes = 8 << 20;

  dispatcher(caf::actor_config& cfg, io_loop& loop, loop_context& ctx);

  caf::behavior make_behavior() override;
  void on_exit() override;
  const char* name() const override { return "dispatcher"; }

  /// Queues `op` for `dest`; its result goes to connection `conn` (loop_context::by_id) as
  /// result `index` of pending request `seq`. `warm`: send as warm_atom (a read for
  /// write-on-miss warming from a peer) instead of exec_atom. `placed_by`: for a client op
  /// sent to a member (its data link or peer actor), the placement of the ring the op was
  /// placed by (actors/cluster_route.hpp, placement_of), sent along as
  /// (exec_atom, tag, op_batch, placed_by); ops placed by different rings go in different
  /// batches. 0: (exec_atom, tag, op_batch), as to a local shard. A flush goes in a batch of
  /// flushes only: a member that passes one on to nodes the ring lacks (cluster/service.hpp)
  /// answers its call once they have it, and the ops after it, in a later call, land after
  /// it when they go by the member's data link (which holds them behind the call); not when
  /// they go by RPC too (docs/ARCHITECTURE.md, the relayed flush).
  void add(const caf::actor& dest, uint64_t conn, uint64_t seq, uint32_t index, storage::op&& op,
           bool warm = false, uint64_t placed_by = 0);

  /// For a connection that closes while its write `probe` (kind, key and the flags
  /// storage::changed_item reads; no value) is still running at a local shard, as its key's
  /// primary: once the result of (conn, seq, index) comes, and says the write changed the
  /// item, the key goes to the cluster's replicator (background replication), as the
  /// connection would have done. Nobody answers the client, but the write is applied all the
  /// same, and its replicas must not stay behind.
  void adopt(uint64_t conn, uint64_t seq, uint32_t index, storage::op&& probe);

  /// A write of the node's own at a local shard, for this node as the key's primary (a warm
  /// copy of the previous owner's item): no connection waits for it; once the shard's result
  /// says it changed the item, its key goes to the replicator as an adopted write's does.
  void add_own_write(const caf::actor& shard, storage::op&& op);

  /// An op of the node's own for `dest` whose result nobody waits for (a delete of a copy
  /// left on a past owner); `warm` as in add(). Returns false, and drops the op, while
  /// max_side_effects of them to `dest` are unanswered (a member that stopped answering but
  /// is not declared dead yet would otherwise pile them up without bound; the others' go on).
  bool add_side_effect(const caf::actor& dest, storage::op&& op, bool warm);
  static constexpr size_t max_side_effects = 16384;

private:
  struct ref {
    uint64_t conn;
    uint64_t seq;
    uint32_t index;
  };
  struct outgoing {
    caf::actor dest;
    bool warm;
    uint64_t placed_by;  // see add()
    bool flushes;        // its ops are flush_all's (see add())
    storage::op_batch ops;
    std::vector<ref> refs;
  };

  void flush();
  void on_results(uint64_t tag, storage::result_batch& results);
  void on_orphan_result(const ref& r, storage::status st);

  loop_context& ctx_;
  uint64_t hook_ = 0;
  uint64_t next_tag_ = 1;
  std::vector<outgoing> out_;  // destinations with ops this iteration (few: linear search)
  std::unordered_map<uint64_t, std::vector<ref>> inflight_;
  struct orphan_id {
    uint64_t conn, seq;
    uint32_t index;
    bool operator==(const orphan_id& o) const noexcept {
      return conn == o.conn && seq == o.seq && index == o.index;
    }
  };
  struct orphan_hash {
    size_t operator()(const orphan_id& o) const noexcept {
      return std::hash<uint64_t>{}(o.conn * 0x9e3779b97f4a7c15ULL ^ o.seq) ^ o.index;
    }
  };
  /// Adopted writes (see adopt()), by the result they wait for: an entry goes when its
  /// result comes (local shards answer every batch).
  std::unordered_map<orphan_id, storage::op, orphan_hash> orphans_;
  std::vector<std::string> orphan_keys_;  // scratch: adopted writes that changed their item
  /// add_own_write's: adopted under connection id 0, which no connection has
  /// (loop_context::next_conn_id starts at 1), each under its own number.
  static constexpr uint64_t own_writes = 0;
  uint64_t next_own_write_ = 1;
  /// add_side_effect's: under connection id 0 too, numbered with this bit set, their `index`
  /// the number of their destination in side_dests_ (unanswered ones per destination).
  static constexpr uint64_t side_effect_bit = uint64_t{1} << 63;
  uint64_t next_side_effect_ = 1;
  struct side_dest {
    caf::actor_id dest = 0;
    size_t in_flight = 0;  // 0: a free number
  };
  std::vector<side_dest> side_dests_;
  std::vector<uint64_t> touched_;  // scratch: connections that got results
};

} // namespace bifrost::actors
