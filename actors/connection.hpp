// The connection actor: one client socket speaking the memcached text and meta protocols.
//
// Hosted on the I/O loop that accepted the socket (actors/loop_actor.hpp). It reads, parses
// every complete request in the buffer (pipelining), turns each into storage ops
// (actors/memcache_exec.hpp), routes every key through the current route snapshot to its
// shard, and hands each op to the loop's dispatcher (actors/dispatcher.hpp), which sends one
// batch per shard per loop iteration for all connections of the loop. Responses are written strictly in request order; values
// arrive as pinned slices and go out by copy or sendfile (actors/socket_writer.hpp).
//
// Backpressure: reading pauses once `max_pending` requests wait, their ops placed at other
// members (when they were parsed; counted until the request is written) reach
// `max_remote_pending`, or `max_output` bytes are queued, and resumes when they drain; a
// read of values also waits while the values of those pending may fill max_output
// (read_allowance(): a value queued pins its segment, which counts in -m). Two
// bounds are earned (window()): of `max_pending`, and of `max_remote_pending` for the reads
// of values among those ops (remote_reads_pending_; all remote ops keep the fixed bound), a
// connection may use 1/16 at first, twice as much each time its output is written whole
// and its client acknowledged what came before, and 1/16 again when its socket blocks; it
// reads nothing more while the socket is blocked with `blocked_output` queued. A long
// get-family line goes in parts under the same bounds (get_rest_). In a cluster the reads of
// values at members are also cut to an estimate of their bytes (remote_read_bytes): their
// answers are copies in this node's memory.
// Ownership: the actor owns the fd and its uv_poll handle; it holds a strong reference to
// itself until the handle is closed, then quits. Thread affinity: the loop thread only.
#pragma once

#include "actors/cluster_route.hpp"
#include "actors/loop_actor.hpp"
#include "actors/loop_links.hpp"
#include "actors/memcache_exec.hpp"
#include "actors/messages.hpp"
#include "actors/node_stats.hpp"
#include "actors/out_queue.hpp"
#include "actors/socket_writer.hpp"
#include "protocol/memcache.hpp"

#include <caf/actor.hpp>

#include <uv.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace bifrost::actors {

class connection;
class dispatcher;

/// What the actors of one I/O loop share. Owned by the node; touched only on that loop.
struct loop_context {
  io_loop* loop = nullptr;
  node_shared* node = nullptr;
  loop_counters* counters = nullptr;
  route_snapshot_ptr routes;               // replaced by the listener on every update
  dispatcher* dispatch = nullptr;          // the loop's op batcher (actors/dispatcher.hpp)
  std::unordered_map<uint64_t, connection*> by_id;  // live connections of this loop
  uint64_t next_conn_id = 1;
  bool draining = false;                   // shutting down: close idle connections
  /// The cluster's data links of this loop (actors/loop_links.hpp); null when the node is
  /// not a cluster member or links are off.
  std::unique_ptr<loop_links> links;
};

class connection : public loop_actor {
public:
  connection(caf::actor_config& cfg, io_loop& loop, loop_context& ctx, int fd);
  ~connection() override;

  caf::behavior make_behavior() override;
  const char* name() const override { return "connection"; }

  /// Closes the socket now (loop thread only); pending replies are dropped, and so is what
  /// was not sent yet: ops held behind an earlier op on their key or looking at a past owner
  /// first inside a window, a flush_all waiting for the requests before it, the parts of a
  /// long get line not planned yet.
  void close_now();
  /// Stops reading; closes once every pending reply is written.
  void close_when_idle();

  /// From the dispatcher: result `index` of pending request `seq` (loop thread).
  void deliver(uint64_t seq, uint32_t index, storage::result&& r);
  /// Writes every request at the head of the queue whose results are all in.
  void complete_ready();

private:
  /// The connection opened with a data link hello: hands the socket and the unread bytes to
  /// ctx_.links and closes without closing the socket. False (nothing done) otherwise.
  bool hand_to_link(std::string_view in);
  // refused: a too-large set; its error (`reply`, empty with noreply) goes out once the old
  // value's removal (ops[0]) is done.
  // detail: `stats detail on|off|dump`, done when it reaches the head of the queue, so that
  // it counts (or dumps) exactly the requests before it, as memcached's serial order does.
  enum class pending_kind : uint8_t { exec, flush, stats, detail, immediate, refused };

  struct pending {
    pending_kind kind = pending_kind::immediate;
    std::vector<op_route> routing;  // per op, cluster mode only
    proto::request req;        // views point into `line`
    std::string line;          // owned copy of the command line
    std::vector<storage::op> ops;
    std::vector<storage::result> results;
    uint32_t outstanding = 0;
    uint32_t remote_ops = 0;   // ops routed to other members (counted in remote_pending_)
    uint32_t remote_reads = 0; // of those, reads of values (in remote_reads_pending_)
    uint32_t reads = 0;        // reads of values among all its ops (in reads_pending_)
    std::string reply;         // immediate / error reply bytes
    bool close_after = false;  // quit
    bool partial = false;      // a part of a long get that is not its last: no END
    bool replicated = false;   // writes already handed to the replicator (wait_replicas)
    uint32_t must_answer = 0;  // flush: results past this many are from members on their
                               // way out (left, lingering): their silence is no error
    uint64_t flush_ring = 0;   // flush: the placement of the ring it was sent by (0: none)
    storage::shard_stats stats;
    proto::stats_kind stats_sub = proto::stats_kind::general;  // stats, detail: which one

    /// Back to a fresh state for reuse; keeps small buffers' capacity, drops pinned values.
    void reset() noexcept;
  };

  /// The requests waiting for their replies, oldest first: a ring of reused `pending`
  /// objects (a request with its buffers is about 1 KiB; std::deque allocated and freed
  /// one node per request). Elements never move (the ring holds pointers), so views of a
  /// request into its own `line` stay valid, and references stay valid across pushes.
  class pending_ring {
  public:
    bool empty() const noexcept { return size_ == 0; }
    size_t size() const noexcept { return size_; }
    pending& operator[](size_t i) noexcept { return *slots_[(head_ + i) & (slots_.size() - 1)]; }
    const pending& operator[](size_t i) const noexcept {
      return *slots_[(head_ + i) & (slots_.size() - 1)];
    }
    pending& front() noexcept { return (*this)[0]; }
    pending& emplace_back();
    /// Resets and recycles the oldest request (its pinned values are released now).
    void pop_front() noexcept;
    void clear() noexcept;

  private:
    std::vector<std::unique_ptr<pending>> slots_;  // size: 0 or a power of two
    size_t head_ = 0;
    size_t size_ = 0;
  };

  static void on_poll(uv_poll_t* h, int status, int events);
  static void on_closed(uv_handle_t* h);

  void on_readable();
  void process_input();
  void process_input_pass();  // one pass of process_input (it loops while input_again_)
  void handle_request(size_t consumed);
  /// Input waits: too many requests pending, ops at members, or bytes queued.
  bool over_budget() const;
  /// Sends the next part of get_rest_ as a pending request.
  void push_get_part();
  /// Moves the next part of get_rest_ into `p` (its ops, partial); get_rest_ ends
  /// with its last part.
  void take_get_part(pending& p);
  /// Routes the ops of pending request `seq` (`p`), counting those placed at members.
  void dispatch_ops(uint64_t seq, pending& p);
  /// Routes op `index` of request `seq`, the first time, unless it must wait behind an earlier
  /// op of this connection on its key (must_wait): then it is held (op_route::held) until
  /// that op's result came (release_held).
  void route_new_op(uint64_t seq, uint32_t index);
  /// Inside a ring change's window (the view has past rings), op `o` of request `seq` waits
  /// while a request before it has an op on o's key whose result has not come and that
  /// changes the item — or, for an op that changes the item or makes it when there is none
  /// (an add, a vivifying mg/ma: warm_class::insert), any op on the key: a read there that
  /// misses warms the item, a write; and for a read that reports the reads before it (mg h
  /// or l, me), any op on the key too: an earlier read's warming makes the item read (its
  /// copy lands marked so); and for a read that counts as an access (all but meta u) or may
  /// take a stale item's win token (mg, meta u too), any earlier op whose request reports
  /// reads (it must not see that access, nor lose the token). Other reads pass reads. Such
  /// an op may take several
  /// steps (a read that misses at the owner reads the previous owner; an add looks there
  /// first; an update that finds nothing there warms the item and runs again; a delete goes
  /// to the previous owners too; a read's warm copy lands after its answer), and an op sent
  /// meanwhile overtook it: a pipelined `get` after an `add` missed the value just stored, a
  /// read after an `incr` answered the value before it, the add answered SERVER_ERROR (it
  /// would have landed after the later op), an add after a `get` that warmed the item
  /// stored over it, and a `get` before a `delete` missed (R >= 2: the delete reached the
  /// previous owner, still one of the key's owners, before the read's look there), and
  /// `get k` then `mg k h` answered h0 (both missed at the new owner and read the previous
  /// one, where warm reads count no access). Outside windows every op is one step to its
  /// owner, in order on the way there, and nothing is held. Every op waits behind a flush_all
  /// still at work that was sent by a ring the connection's view has since replaced: the
  /// nodes that ring lacks get the flush only from a member that passes it on (its second
  /// hop), and an op sent to one of them directly landed first (a delete found what the
  /// flush took).
  bool must_wait(uint64_t seq, const storage::op& o) const;
  /// Op `index` of request `seq` is done: the ops held behind it on its key that no earlier
  /// op holds any longer are routed now, in request order. A flush_all's last answer: the
  /// ops held behind it on every key.
  void release_held(uint64_t seq, uint32_t index);
  /// A flush_all before request `seq` is still at work, sent by a ring the view has since
  /// replaced (see must_wait).
  bool behind_replaced_flush(uint64_t seq) const;
  /// The removal of the old value a refused too-large set (or `ms`) owes, if any.
  std::optional<storage::op> refused_value_removal() const;
  /// A line too long to take (not a get: 2048 bytes; a get: 1 MiB): reads nothing more,
  /// answers the requests before it, then closes (as `quit`).
  void hang_up_after_answers();
  /// The counter a get-family or mg request's keys count in: cmd_touch for gat/gats and
  /// mg T, cmd_get for the others (memcached's).
  std::atomic<uint64_t>& read_counter(const proto::request& req) const;
  /// How many more reads of values may go out now: the values their pending requests may
  /// bring (reads_pending_ × value_estimate_) and the output queued stay within max_output;
  /// at least 1 when no read waits. At 0 a get-family or mg request waits, parsed again
  /// once values went out; a long get line's parts are cut to it. A reply's value pins its
  /// segment, which counts in -m: without this bound one client that pipelined gets of
  /// large values (or named 80 in one line) and did not read pinned every one of them, and
  /// the writes of every other client failed `out of memory` while it stayed connected.
  /// In a cluster also: the values asked of members (remote_reads_pending_ ×
  /// remote_estimate_) stay within remote_read_bytes; at least 1 when none is asked.
  size_t read_allowance() const;
  /// The local storage shard actor that holds `key`.
  const caf::actor& local_shard_for(const std::string& key) const;
  /// Sends one op whose reply nobody waits for (a side effect of a request) to a member's data
  /// link or peer actor; `placed_by` as in dispatcher::add (0: not known, the receiver's ring).
  void send_side_effect(const caf::actor& dest, storage::op o, uint64_t placed_by);
  /// After op `o`, placed by `rt`, changed its item at the key's owners (result `st`), inside
  /// a warming window: deletes the copies that past rings placed on other nodes (past_holders
  /// in actors/cluster_route.hpp), fire and forget, batched with the loop's other ops.
  void drop_past_copies(const cluster_view& cv, const op_route& rt, const storage::op& o,
                        storage::status st);
  /// The deletes of drop_past_copies for `key`, placed by `rt` (the node it ran at is spared);
  /// `gone`: the write left no item (storage::expires_now), so in the ring it was placed in
  /// the key's other owners that were past owners too (past_holders' replicas_too).
  void delete_past_copies(const cluster_view& cv, const op_route& rt, const std::string& key,
                          bool gone = false);
  /// At close: the same for every op still at work that may change its item (or a delete's
  /// erase chain under way), whose result deliver() will never see.
  void drop_past_copies_of_unfinished();
  void handle_local(pending& p);
  /// `cache_memlimit`: the node's -m is `bytes` from now on (stats), each local shard's share
  /// of it (as at start: an even split) sent to it.
  void set_memory_limit(uint64_t bytes);
  void route_op(uint64_t seq, uint32_t index, size_t shard);
  // Where an op for rt's owner in cv's ring goes: this node's shard for `key`, else the
  // member's data link, else its peer actor.
  caf::actor owner_actor(const cluster_view& cv, const op_route& rt, const std::string& key);
  // Where an op for member `id` of cv.past[depth]'s ring goes (warm reads, deletes and
  // flushes of past owners): the member's previous link, else its peer actor (null: none).
  caf::actor past_member_actor(const cluster_view& cv, size_t depth, uint32_t id);
  // Sends `o` for result `index` of request `seq` to the previous owner `from` (a member's
  // previous link or peer actor, as a warm op, else this node's shard).
  void send_to_previous(uint64_t seq, uint32_t index, const cluster_view& cv,
                        const warm_from& from, storage::op&& o);
  // Sends op `index` of request `seq` to its next warm source (warm_source() from
  // rt.warm_next on): a warm read for `phase` read or ahead, a delete for erase. Sets
  // rt.phase and rt.warm_next. False (nothing sent) when no source is left, or when a source
  // beyond the first would be asked for a read while an earlier write of this connection
  // on the key is still at work (its delete may not have reached that one yet).
  bool warm_next_source(uint64_t seq, uint32_t index, const cluster_view& cv, warm_phase phase);
  // A warm read's answer `r` can be kept at rt's owner: a hit with its value, in the ring
  // the op was placed in, at an owner this node can reach (owner_reachable).
  static bool keepable(const cluster_view& cv, const op_route& rt, const storage::result& r);
  static bool owner_reachable(const cluster_view& cv, const op_route& rt);
  // Stores `copy` (warm_copy of a previous owner's item) at rt's owner, in order with the
  // client's writes to it, not waited for: local (as the key's primary: replicated once
  // stored) or a side effect sent to the owner.
  void keep_at_owner(const cluster_view& cv, const op_route& rt, storage::op&& copy);
  // The hit `r` of plain read `index` of request `seq` inside a recent ring change's check
  // window (check_source): it waits in its slot while the key's owner before the change is
  // read too (phase check). False, `r` untouched: no such owner, or an earlier write of this
  // connection on the key is still at work; the hit answers.
  bool check_at_previous(uint64_t seq, uint32_t index, const cluster_view& cv,
                         storage::result& r);
  // Asks the previous owner `from` for o's key (a warm read, no access, not counted): as the
  // client's read `o` asked, or `quiet`ly (an update's or an add's look at the item).
  void send_warm_read(uint64_t seq, uint32_t index, const cluster_view& cv,
                      const warm_from& from, const storage::op& o, bool quiet);
  // True when a request after `seq` changes `key` or is a flush_all that went out (it was
  // routed when it was parsed, so what is sent for `seq` now would land after it; not an op
  // held behind an earlier write, nor a flush_all that waits: they go after `seq` is done).
  // Later reads do not count: they saw the state before, as they would have a moment earlier.
  bool later_request_on(uint64_t seq, const std::string& key) const;
  // True when a request before `seq` has an op on `key` that is not done (with its warming:
  // its result came), or is a flush_all still waiting for results; `changes_only`: counting
  // only ops on `key` that change the item. (An op that is done counts no more than a request
  // that is: an add released from behind `gets k x` once k's op was done, while x's was not,
  // skipped its look at the previous owner, and stored over the item there when the ring had
  // changed meanwhile: the new owner did not hold it yet.)
  bool earlier_request_on(uint64_t seq, const std::string& key, bool changes_only = false) const;
  // Sends `o` for result `index` of request `seq` to owner_actor(); to a member, with the
  // placement of the ring rt placed it by (placement_of: not the loop's ring when the batch
  // leaves, which may be newer by then).
  void send_to_owner(uint64_t seq, uint32_t index, const cluster_view& cv, const op_route& rt,
                     storage::op&& o);
  /// Routes a key op: by the ring in a cluster (owner `tries`), else to its local shard.
  void route_key_op(uint64_t seq, uint32_t index);
  /// Op `i` of `p` is a successful write this node made as the key's primary (cluster).
  static bool primary_write(const pending& p, size_t i);
  /// Keys of `p` this node wrote as their primary (cluster).
  std::vector<std::string> primary_writes(const pending& p) const;
  /// Sends the keys written here as their primary to the replicator (cluster, R > 1; a
  /// no-op otherwise).
  void report_writes(pending& p);
  /// With wait_replicas: once every op of `p` is done, holds its reply until the replicator
  /// answers (replicated_atom) for the keys written here as their primary.
  void await_replicas(uint64_t seq, pending& p);
  /// On close, for the requests not yet done: the writes this node already applied as their
  /// keys' primary go to the replicator now, and those still running at a local shard are
  /// left to the dispatcher (dispatcher::adopt), which hands their keys on once they ran.
  /// Without `adopt_running` (lose_client: the requests run on), only the first: a write
  /// does not wait for the rest of its request, as its reply would have, to be replicated
  /// (its request_done replicates its keys again, a copy of the same state).
  void hand_over_writes(bool adopt_running = true);
  /// The last result of cluster request `seq` came: its writes here as their keys' primary
  /// go to the replicator (or its reply waits for them, with wait_replicas).
  void request_done(uint64_t seq, pending& p);
  /// Background replication of keys written here as their primary (cluster, R > 1; a no-op
  /// otherwise). The writes must have run: the replicator reads the keys' state now.
  void replicate(std::vector<std::string> keys);
  void on_replicated(uint64_t seq, bool ok);
  void on_stats(uint64_t seq, const storage::shard_stats& st);
  /// Asks the local shards for the stats of pending request `seq` (see stats_barrier_).
  void send_stats(uint64_t seq);
  /// A request before the newest one (the one being handled) still waits for results.
  bool earlier_running() const;
  /// `stats detail on`: counts request `p`'s keys by prefix as it is answered (gets by
  /// result; storage commands and deletes whatever they answered, as memcached).
  void count_prefixes(const pending& p);
  /// Sends the flush ops of pending flush_all request `seq` to this node's shards and the
  /// cluster's members (see flush_unsent_).
  void send_flush(uint64_t seq);
  /// The client is gone (a reset, or another error on its socket) while requests are at
  /// work: nothing more is read or written (input not parsed yet is dropped), and their
  /// replies are dropped, but the requests parsed run on to their end, as memcached runs
  /// every request it read: a write held behind an earlier op on its key or looking at a
  /// past owner first inside a window, a flush_all waiting for the requests before it, a
  /// long gat line's parts (a get line's are dropped). close_now dropped them. Closes once
  /// none is left, as a client that shut its side (EOF) waits for its requests; at once
  /// when none is, or when lingering (everything was answered).
  void lose_client();
  void write_out();
  /// Everything read was answered and written, and no more is read: closes, or, if the
  /// client sent more, ends our side and drops its input until it closes (close_answered).
  void close_answered();
  /// Lingering (or hung up): reads and drops input; closes at EOF or an error (hung up with
  /// replies still to write: stops reading, and they go first).
  void linger_read();
  /// The part of `bound` (max_pending, max_remote_pending) this connection may use now.
  size_t window(size_t bound) const;
  /// The client acknowledged what was written to it before the last `just_written` bytes.
  bool client_reads(size_t just_written) const;
  void update_poll();
  pending& push_pending(pending_kind k);
  void adopt_line(pending& p);

  loop_context& ctx_;
  int fd_;
  std::shared_ptr<conn_entry> entry_;  // in node_shared::conns from make_behavior to close_now
  uv_poll_t poll_;
  int poll_events_ = 0;
  bool poll_open_ = false;
  bool closing_ = false;
  bool first_line_seen_ = false;  // the first bytes were checked for a data link hello
  bool read_closed_ = false;   // EOF, quit, or draining: no more input
  bool input_paused_ = false;
  /// A `stats` (or `stats reset`) is waiting for its reply: nothing after it is parsed until
  /// then, and its shards are asked only once every request before it is answered (as
  /// memcached, which runs a connection's requests one after another: the counters show the
  /// requests before it, none after). `stats_unsent_`: its request to the shards waits.
  bool stats_barrier_ = false;
  bool stats_unsent_ = false;
  /// Inside a ring change's window, a `flush_all` waits until every request before it is
  /// answered (handle_local): its ops are not sent yet, and nothing after it is parsed. Its
  /// sequence number.
  std::optional<uint64_t> flush_unsent_;
  bool lingering_ = false;     // our side ended (close_answered): input is dropped until EOF
  bool hung_up_ = false;       // a line too long: close once answered, lingering
  bool hung_up_eof_ = false;   // hung up, and the client's input ended
  size_t lingered_ = 0;        // bytes dropped while lingering (bounded: linger_max)
  bool no_linger_ = false;     // quit or a binary request: close at once, as memcached
  bool client_lost_ = false;   // lose_client(): requests run on, nothing is read or written
  caf::actor self_ref_;        // keeps the actor alive until the handle is closed

  std::vector<char> rbuf_;
  size_t want_ = 0;  // bytes from rpos_ the incomplete request needs (0: unknown)
  size_t rpos_ = 0;
  size_t rend_ = 0;
  size_t swallow_ = 0;
  proto::request req_;
  proto::parser_config pcfg_;

  pending_ring pending_;
  size_t remote_pending_ = 0;  // Σ remote_ops of pending_ (input pauses at a bound)
  size_t remote_reads_pending_ = 0;  // Σ remote_reads of pending_ (pauses at a window)
  size_t reads_pending_ = 0;   // Σ reads of pending_ (read_allowance)
  /// What a value read is expected to hold (read_allowance): initial_value_estimate at
  /// first (at most -I), then at each read the larger of its value's size (a miss: 0) and
  /// half the estimate before it. (Misses that left it as it was made a long get line of
  /// misses go 32 keys per round trip: 7 times slower.)
  uint64_t value_estimate_ = 0;
  /// The same for a read a member answers (remote_read_bytes in connection.cpp): -I at
  /// first, then as value_estimate_ (the client's values, wherever they are).
  uint64_t remote_estimate_ = 1;
  /// The read allowance cut the output flushed next: its being written whole earns no window
  /// (small bursts are taken by any socket; a client that never reads would otherwise earn
  /// the window its first bursts did not cut).
  bool read_gated_ = false;
  bool in_input_ = false;      // process_input is on the stack (no nested pass)
  bool input_again_ = false;   // a resume came meanwhile: process_input makes another pass
  size_t held_ = 0;            // ops of pending_ held behind an earlier write (op_route::held)
  unsigned window_level_ = 0;  // the share of the bounds earned by reading (window())
  /// The keys of a long get-family request not sent yet. A member's values are
  /// copies held until the client reads them, and a request is answered whole: one get line
  /// of 10 000 keys of 60 KiB values made a node hold 650 MiB. So such a request goes as
  /// parts of at most get_part_keys keys, each a pending request (only the last answers
  /// END), sent as the backpressure allows, before any request after it is parsed.
  /// Also a long line of local keys: each key planned at once made an op of ~184 bytes, so
  /// one 1 MiB line of one-byte keys held ~96 MB (keys are planned one part at a time now:
  /// at most the line's bytes wait here).
  struct get_rest {
    proto::request req;  // cmd and exptime of the line; `keys` of the part being planned
    std::string keys;    // the keys not sent yet, each followed by one space
    size_t next = 0;     // offset of the first of them in `keys`
  };
  std::optional<get_rest> get_rest_;
  uint64_t base_seq_ = 0;      // sequence number of pending_.front()
  uint64_t id_ = 0;            // key in loop_context::by_id

  out_queue out_;
  socket_writer writer_;
  bool want_write_ = false;
};

} // namespace bifrost::actors
