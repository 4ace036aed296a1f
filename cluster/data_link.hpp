// Data links: forwarded ops between members over plain sockets on the I/O loops, framed as
// Cap'n Proto messages (cluster/link_wire.hpp), without the RPC's promise machinery.
//
// Why: a forwarded op through Cap'n Proto RPC cost ~45 000 instructions across the two nodes
// (bench/cg_cluster: 58 % of a 3-node cluster's user time ran in KJ's event loop, capnp-rpc
// and their allocations). The RPC stays for everything else: membership, admin, queries,
// replication and warm reads when no link can carry them, values over the inline limit
// (streamed) and bifrostctl.
//
// Client side — `data_link`, one loop actor per (I/O loop, member), spawned on first use by
// that loop's loop_links (actors/loop_links.hpp). It behaves like a storage shard:
// (exec_atom, tag, op_batch) -> the sender gets (result_atom, tag, result_batch).
//   (exec_atom, tag, op_batch, placed_by) alike, for client ops placed by that ring
//   (cluster::ring::placement: the sender's placement, actors/dispatcher.hpp); without it the
//   batch takes the loop's ring as it arrives. The call (LinkCall.ring, or the RPC's `ring`
//   through the peer actor) names that ring, never the loop's ring when the batch leaves,
//   which may be newer by then.
//   - A batch goes over the link when every op fits inline (no value over inline_value_limit,
//     no get that writes — touch, vivify, recache — and, with wait_replicas, no write), it is
//     within call_max_ops / call_max_bytes, and the link is not backing off. Any other batch
//     goes to the member's RPC peer actor, which answers the link.
//   - Order: a batch is issued on one transport only while no call of its stream is in flight
//     on the other, so ops reach the member in the order they were sent (as on one RPC
//     connection). Connections' batches (client, warm) and the replicator's (replica) are two
//     streams that never wait for each other: with --replication-ack all a forwarded write's
//     RPC answers only after its primary's copies did, and two members forwarding writes to
//     each other would each hold the copy the other waits for (a deadlock until rpc_timeout).
//   - The link connects on first use (hello line, then frames); a host name in the address is
//     resolved on libuv's thread pool, never on the loop thread. A connection or greeting
//     failure (but see "Unreachable") sends the waiting batches through RPC and backs off
//     (0.1 s doubling to 5 s); a refused hello backs off 30 s: a member that serves no
//     links, speaks another version, or answers with another node's name (another node
//     listens where the member's memcached port was: a stale address;
//     cluster/link_wire.hpp). A connection lost with
//     calls in flight answers them `unavailable` (they may have run: reads fail over, writes
//     report an error), as a failed RPC does. A call unanswered rpc_timeout_ms after it was
//     sent while no whole reply came for as long (or a connect or hello without progress
//     for as long) fails the connection the same way; a call behind other calls' replies
//     waits while they come, up to queued_limit_factor × rpc_timeout_ms
//     (cluster/convert.hpp), as an RPC data call does (service.cpp, `bounded`).
//   - Unreachable (as mcrouter's TKO): a link that failed because its member said nothing
//     for rpc_timeout_ms (a call unanswered while no reply came, or, once a hello was
//     answered at that address, a connect or hello without progress; silence is seen at two
//     timer ticks, so what came while this loop stalled is read first) answers connections'
//     batches (client, warm) `unavailable` at once — reads fail over to the next owner,
//     writes report an error — instead of sending them by RPC to wait out the same timeout:
//     SWIM keeps a member alive that others reach (a cut between two members only), and
//     each op then stalled 2-5 s. Replicated state goes by RPC as while backing off (the
//     replicator's retries each span a timeout, as before). A probe (connect and hello) is
//     made when a batch comes and the last one, failed, started unreachable_probe_max_ms
//     (1 s, less while the backoff is shorter) ago or more; it ends the state once greeted
//     (or refused: the member answers, RPC it is). Nothing but a batch starts a probe (a
//     failed one does not start the next). A probe's connect not through after 200 ms (or
//     4 × the last connect's time at the address, at most half the timeout) is dialled
//     anew, within the probe's limit: a cut dropped its SYN, and the kernel's next try comes
//     a second later. So a one-way cut SWIM never saw (nothing to wake the link, below) is
//     found healed within 200-300 ms and a hello while batches come (stat
//     cluster_link_probe_redials).
//     A member seen back (cluster_view::returns: SWIM has it alive again, or a new process
//     under its name) is probed at once, and a probe still connecting then is dialled anew
//     (its SYN may have been dropped by a cut); a backoff ends.
//     A link never greeted (a memcached port closed to this node while its RPC port is
//     open) keeps falling back to RPC. Stats: cluster_links_unreachable,
//     cluster_link_calls_failed_fast.
//   - A get result that came back `streamed` (value over the inline limit) is read again
//     through RPC, with a sink, before the batch is answered. The member parked the first
//     read's result for it (storage/parked.hpp): the re-read names the token and gets that
//     result, not the effect of a later op of the same pipeline that already ran there.
//   - (warm_atom, tag, op_batch): write-on-miss warming reads (origin warm), on the link of the
//     member of a past ring that may hold the key (loop_links::previous_link), with
//     the same fallback to RPC.
//   - (apply_atom, tag, op_batch) from the replicator: replicated state (origin replica),
//     with the same fallback to RPC (the peer actor takes apply_atom too).
//   - Links are spawned on first use. A ring change does not end them (a member that left
//     still serves until it exits), but a link whose member (at that address) is in neither
//     the new ring nor a past one still warmed from (cluster_view::past) is retired: it
//     quits once it has had nothing to do for retire_idle_ms (10 s) — so a cluster whose
//     members come and go under new names or addresses does not keep one link per member it
//     ever saw. A later lookup spawns anew. A link is to a member at an address through its
//     RPC peer actor: a member forgotten and back under its name (a new peer actor) gets a
//     new link; the old one answers what would go by RPC unavailable until it is retired.
// Server side — `link_session`, a loop actor per accepted link: a connection on the memcached
// port whose first bytes are a link hello is handed over (actors/connection.cpp). It executes
// each call's ops on the local shards and answers with a LinkReply; writes of origin client
// are handed to the replicator (R > 1), as Node.execute does; origin replica is applied
// without replicating further. A client call placed by a ring this node replaced (LinkCall.ring:
// the caller's view lags) sends the ops of keys this node no longer owns to the view's router
// (on the KJ loop), which places them again (actors/cluster_route.hpp, stale placements); the
// rest run here. The data_link stamps each client call with the ring its ops were placed by
// (above). Sessions are not client connections: a drain leaves them open
// (members still forward until this node has left); node shutdown closes them (close_all).
//
// Not used when the RPC runs over TLS: links would carry values in clear text (--cluster-links
// off disables them too).
//
// Thread affinity: everything here runs on its I/O loop's thread (the loop_links of a loop
// and the actors it spawns belong to that loop), except loop_links::shared_link().
#pragma once

#include "actors/loop_links.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace bifrost::actors {
class io_loop;
struct loop_context;
} // namespace bifrost::actors

namespace bifrost::storage {
class parked_values;
}

namespace bifrost::cluster {


struct link_settings {
  std::string node_name;          // sent in the hello
  uint32_t rpc_timeout_ms = 2000; // a call unanswered this long while no reply came (or
                                  // queued_limit_factor × this) fails its link
  bool wait_replicas = false;     // writes wait for every replica: they go through RPC
  /// A retired link (its member in neither the current ring nor a past one) quits once
  /// nothing was asked of it for this long and nothing is pending.
  uint32_t retire_idle_ms = 10000;
  /// Where this node's sessions park a read's value too large for a reply, for the reader's
  /// re-read (storage/parked.hpp; shared with the service). Null: nothing is parked, and a
  /// re-read reads afresh (it may then see a later op of the reader's pipeline).
  std::shared_ptr<storage::parked_values> parked;
};

/// The data links of one I/O loop (call on that loop's thread; it lives in ctx.links).
std::unique_ptr<actors::loop_links> make_loop_links(actors::io_loop& loop,
                                                    actors::loop_context& ctx,
                                                    link_settings settings);

} // namespace bifrost::cluster
