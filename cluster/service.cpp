// The cluster service (see cluster/service.hpp for the contract).
//
// Everything below `service` lives on the KJ thread: `service::impl` (the core) is created by
// kj_loop's setup function and destroyed by its teardown function. The hosted actors (peers,
// bridge, replicator) run on the same thread (kj_loop is their actor_host), so they call into
// the core directly; they hold no KJ objects themselves (a CAF actor may be destroyed on any
// thread when its last handle goes), only a pointer to the core, which is valid whenever they
// run: they run only inside kj_loop's drain(), and the core is destroyed after the loop stopped
// draining.
#include "cluster/service.hpp"

#include "actors/cluster_route.hpp"
#include "actors/cluster_view.hpp"
#include "actors/log.hpp"
#include "actors/loop_actor.hpp"
#include "actors/messages.hpp"
#include "actors/node_config.hpp"
#include "actors/route_table.hpp"
#include "cluster/address.hpp"
#include "cluster/arrival_clock.hpp"
#include "cluster/bifrost.capnp.h"
#include "cluster/buffered_stream.hpp"
#include "cluster/convert.hpp"
#include "cluster/kj_loop.hpp"
#include "cluster/link_wire.hpp"
#include "cluster/replicator.hpp"
#include "cluster/ring.hpp"
#include "cluster/tls.hpp"
#include "protocol/memcache.hpp"
#include "storage/keyed_hash.hpp"
#include "storage/parked.hpp"
#include "storage/shard.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>
#include <kj/vector.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

namespace bifrost::cluster {

namespace {

using VatId = capnp::rpc::twoparty::VatId;

// The words that name a refused hello between members whose --replicas differ (in the log
// and in the exception that breaks the connection).
constexpr const char* replicas_mismatch = "replicas mismatch";

uint64_t wall_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// A membership instance for this process (local_member::instance): nonzero and larger at
// every start: the wall clock's ms in the high bits (44 bits: until the year 2527), 20 of
// the kernel's random bits below (storage::hash_key::random, which never throws) for two
// starts in one ms. A clock set back between two starts is mended by the membership (a
// process that hears of a later instance of its name takes one above it).
uint64_t draw_instance() {
  const auto k = storage::hash_key::random();
  return (wall_ms() << 20) | (k.k0 & 0xfffff) | 1;
}

// The membership's clock: steady ms plus 30 days, so that a death reported as older than
// this host's uptime (member_update::age_ms) still has a start time (membership::since_of
// would clamp it at 0, and the record would be kept, and reported, as younger).
constexpr uint64_t k_swim_clock_offset_ms = 30ull * 86400000;

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

uint64_t swim_ms() { return now_ms() + k_swim_clock_offset_ms; }

uint64_t stat_u64(const std::vector<std::pair<std::string, std::string>>& stats,
                  std::string_view name) {
  for (auto& [n, v] : stats)
    if (n == name)
      return std::strtoull(v.c_str(), nullptr, 10);
  return 0;
}

// A data call's progress (chunks of its values that came, chunks it uploaded, its answer),
// and its member's: what the member sent (chunks, answers) counts for every call to the same
// member address too (`peer`), so that a call waiting behind other calls' values on a busy
// connection sees its member at work (service::impl::bounded). An uploaded chunk counts only
// for its own call: it is taken into the stream's flow-control window before the member
// reads it, even by a member that stopped. KJ thread.
struct call_progress {
  uint64_t own = 0;
  std::shared_ptr<uint64_t> peer;  // shared by the calls to one address; never null
  bool waits_for_peer = true;      // false: only `own` keeps the call waiting (replication)
  bool sent = false;               // it left (send_execute: not refused before it did)
  uint64_t answers = 0;            // the member's answers_heard when it left
  void bump() {
    ++own;
    ++*peer;
  }
};

// One value (or part of a batch) to stream through a ValueSink: chunk after chunk, each write
// waiting for the stream's flow control.
struct stream_job {
  uint32_t index;
  std::string_view bytes;
};

kj::Promise<void> stream_out(rpc::ValueSink::Client sink, std::shared_ptr<void> keepalive,
                             std::shared_ptr<std::vector<stream_job>> jobs, size_t job,
                             size_t offset, std::shared_ptr<call_progress> progress) {
  while (job < jobs->size() && offset >= (*jobs)[job].bytes.size()) {
    ++job;
    offset = 0;
  }
  if (job >= jobs->size())
    return kj::READY_NOW;
  auto& j = (*jobs)[job];
  size_t n = std::min(stream_chunk_size, j.bytes.size() - offset);
  auto req = sink.writeRequest();
  req.setIndex(j.index);
  req.setChunk(as_data(j.bytes.substr(offset, n)));
  return req.send().then([sink, keepalive = std::move(keepalive), jobs = std::move(jobs), job,
                          offset, n, progress = std::move(progress)]() mutable {
    if (progress)
      ++progress->own;  // (the member answers the upload at its finish: that bumps `peer`)
    return stream_out(std::move(sink), std::move(keepalive), std::move(jobs), job, offset + n,
                      std::move(progress));
  });
}

// A reader that stops taking a streamed value (a bifrostctl stopped, or writing to a pipe
// nobody reads) must not pin it here for ever: the stream fails after `ms` without a chunk
// taken, which frees the value.
kj::Promise<void> stall_guard(kj::Timer& timer, std::shared_ptr<call_progress> p, uint64_t seen,
                              uint64_t since_ms, uint64_t ms) {
  return timer.afterDelay(std::max<uint64_t>(ms / 8, 1) * kj::MILLISECONDS)
      .then([&timer, p = std::move(p), seen, since_ms, ms]() mutable -> kj::Promise<void> {
        const uint64_t now = now_ms();
        if (p->own != seen) {
          const uint64_t taken = p->own;
          return stall_guard(timer, std::move(p), taken, now, ms);
        }
        if (now - since_ms < ms)
          return stall_guard(timer, std::move(p), seen, since_ms, ms);
        return KJ_EXCEPTION(FAILED, "the reader took no part of the value for too long", ms);
      });
}

// Client side of execute's sink: collects the streamed values by op index.
struct collect_state {
  std::map<uint32_t, std::string> values;
  std::map<uint32_t, uint64_t> expected;  // set once execute returned
  std::shared_ptr<call_progress> progress;  // never null
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> waiter;

  bool complete() const {
    for (auto& [i, size] : expected) {
      auto it = values.find(i);
      if ((it == values.end() ? 0 : it->second.size()) < size)
        return false;
    }
    return true;
  }
  void check() {
    if (!complete())
      return;
    KJ_IF_MAYBE (w, waiter) {
      (*w)->fulfill();
    }
    waiter = nullptr;
  }
};

class collect_sink final : public rpc::ValueSink::Server {
public:
  explicit collect_sink(std::shared_ptr<collect_state> st) : st_(std::move(st)) {}

protected:
  kj::Promise<void> write(WriteContext context) override {
    auto p = context.getParams();
    auto chunk = p.getChunk();
    st_->values[p.getIndex()].append(reinterpret_cast<const char*>(chunk.begin()), chunk.size());
    st_->progress->bump();  // (execute_call always sets it)
    st_->check();
    return kj::READY_NOW;
  }
  kj::Promise<void> finish(FinishContext context) override {
    context.getResults().initResults(0);
    return kj::READY_NOW;
  }

private:
  std::shared_ptr<collect_state> st_;
};

} // namespace

// -- the core -----------------------------------------------------------------------------------

struct service::impl final : public kj::TaskSet::ErrorHandler {
  impl(std::shared_ptr<kj_loop> l, kj::AsyncIoContext& i, const service_config& c, std::string addr,
       std::vector<caf::actor> sh, caf::actor rt, stats_fn st, kj::Own<kj::ConnectionReceiver> lis)
    : loop_ref(std::move(l)), loop(*loop_ref), io(i), timer(i.provider->getTimer()), cfg(c), address(std::move(addr)),
      shards(std::move(sh)), route_table(std::move(rt)), stats(std::move(st)),
      started_ms(now_ms()),
      members(local_member{c.node_name, address, c.client_address, c.weight,
                           c.instance != 0 ? c.instance : draw_instance()},
              c.swim, swim_ms()),
      listener(kj::mv(lis)), tasks(kj::heap<kj::TaskSet>(*this)) {}

  ~impl() noexcept(false) = default;

  void taskFailed(kj::Exception&& e) override {
    if (e.getType() != kj::Exception::Type::DISCONNECTED)
      log_line("bifrost cluster: task failed: %s\n", e.getDescription().cStr());
  }

  void start();
  void shutdown();

  // -- local execution (bridge) --
  /// Runs `ops` at the local shards. After --rpc-timeout an op's result is `unavailable`
  /// although the op still runs (a slow shard). `probes` (by op, local_primary's): they run
  /// as their keys' primary with replication, and the writes among such late ones that change
  /// their item still go to the replicator when their results come (late_probes).
  kj::Promise<storage::result_batch> local_execute(
    storage::op_batch ops, std::shared_ptr<const storage::op_batch> probes = nullptr);
  /// local_execute as the keys' primary: with origin client, the writes that changed their
  /// item then go to the keys' other owners (replicate_results; with `wait`, before the
  /// results answer).
  kj::Promise<storage::result_batch> local_primary(storage::op_batch ops, rpc::Origin origin,
                                                   bool wait);
  /// local_execute, except for re-reads of parked results (storage::op::parked, from a
  /// member's data link or peer): those answer from cfg.parked, without running. A token
  /// not found (expired) runs as a plain read.
  kj::Promise<storage::result_batch> parked_or_local(storage::op_batch ops);
  /// This node's stats from the stats callback into `out`, without blocking the loop (left
  /// empty if no answer came within 1 s).
  kj::Promise<void> local_stats(std::shared_ptr<service::stat_list> out);
  /// For callers that are not members (bifrostctl): each op goes to its key's live primary,
  /// local shards or a peer over RPC (origin client); local writes are replicated. Inside a
  /// warming window, the results go through in_window() before they answer.
  kj::Promise<storage::result_batch> routed_execute(storage::op_batch ops);
  /// A member's client ops (origin client): run here as their keys' primary (writes then go
  /// to the other owners), except, when the member placed them by a ring this node has
  /// replaced (`sender_ring`: actors/cluster_route.hpp, stale placements), those of keys this
  /// node no longer owns: routed_execute() places them again, marked `routed`.
  kj::Promise<storage::result_batch> primary_execute(storage::op_batch ops, uint64_t sender_ring,
                                                     bool wait);
  /// Whether `ops`, a client's that would run here, are refused (cfg.member_writes_refused):
  /// while this node leaves for good, when one of them is a write. The whole call then
  /// answers `unavailable`, as a data link refuses it (cluster/data_link.cpp).
  bool refuses(const storage::op_batch& ops) const;
  /// The router actor's (a data link session's ops placed again): routed_execute(), answered
  /// to `sender` as (result_atom, tag, results).
  void route_call(uint64_t tag, storage::op_batch ops, caf::actor sender, caf::actor self);
  /// routed_execute() of ops a member placed by a ring this node replaced (both callers
  /// above): the item an update or an add needs goes first, from this node's shards to the
  /// key's owner, as an add; the results are marked placed_again (parked strictly).
  kj::Promise<storage::result_batch> execute_again(storage::op_batch ops);
  /// primary_execute's flush_all from a member that placed its call by `sender_ring`, a ring
  /// this node replaced: the same flush goes to the live members of this node's ring that are
  /// not live in that one (the member did not flush them). True once each answered OK (at
  /// once when none); `here`: the ops run here, the flushes among them passed on.
  kj::Promise<bool> relay_flush(const actors::cluster_view& view, uint64_t sender_ring,
                                const storage::op_batch& here);
  uint64_t placed_again = 0;  // ops placed again (Node.stats: cluster_ops_placed_again)
  /// execute_again() calls not answered yet (a data link's through the router, an RPC
  /// execute's or upload's directly): a stopping node waits for them (settle_calls), as their
  /// writes may have been stored at the owners already. Shared with each call's promise,
  /// which counts down when it is destroyed: the RPC system may drop a cancelled one after
  /// this object is gone.
  std::shared_ptr<size_t> again_in_flight = std::make_shared<size_t>(0);
  /// Writes whose local result came too late, handed to the replicator when it came because
  /// it said they changed their item (on_local_result; Node.stats:
  /// cluster_late_writes_replicated).
  uint64_t late_writes_replicated = 0;
  /// What routed_execute's ops looked like, and where the current ring placed them.
  struct routed_ops {
    uint64_t epoch = 0;               // of ring_ when they were placed
    std::vector<storage::op> probes;  // each op without its value (storage::change_probe)
    std::vector<uint32_t> owners;     // ring member id each op went to
    storage::result_batch results;
    /// The plain reads among them (their index, and the op as it went): fail_over_reads.
    std::vector<std::pair<size_t, storage::op>> reads;
    uint64_t until_ms = 0;            // (steady ms) in_window's walks stop then: half the
                                      // RPC timeout after it began (the caller waits)
  };
  /// A client's op does this through its connection (actors/connection.cpp): inside a
  /// warming window, a read that missed at its owner asks the key's past owners in turn
  /// (warm_source; the first hit the CAS clock does not count as taken answers, see
  /// warm_read; nothing is copied), and a write that changed its
  /// item deletes the key at past_holders, so that the value it replaced does not come back
  /// when the key's owners change back (or from a later miss's warming). A delete that ran
  /// at the primary (deleted or not found) goes along its erase chain as a client's does
  /// (warm_source with erase: each past ring's first erase_ranks owners, a current owner
  /// among them — a delete that found nothing at the primary is not replicated), and to
  /// past_holders too (a client's erase chain ends inside the window; these are also
  /// asked up to copies_kept_ms after it). One that found nothing at the primary walks the
  /// chain in turn, as the client gave it (md C compares its CAS: an item that it does not
  /// match stays and answers EX, which ends the chain), and the first item found answers
  /// (erase_walk); the other past holders get a plain delete. Not when the ring changed
  /// meanwhile.
  kj::Promise<void> in_window(std::shared_ptr<routed_ops> r);
  /// routed_execute's plain reads that came back `unavailable` (an owner down, not found dead
  /// yet) go to their key's next live owner, then the next (`tries` owners tried so far), as
  /// a client's read does through its connection (actors::place): bifrostctl's get of a key
  /// whose primary was killed answers from the replica, as a memcached client's get does.
  kj::Promise<void> fail_over_reads(std::shared_ptr<routed_ops> r, size_t tries);
  /// A tool's ops by the member of ring_ they go to (`self`: the local shards), with their
  /// indexes in the call.
  struct routed_group {
    std::vector<size_t> idx;
    storage::op_batch ops;
  };
  using routed_groups = std::map<uint32_t, routed_group>;
  /// Puts op `i` in member `id`'s group (a hop more on its way when that is another node).
  void add_to_group(routed_groups& groups, uint32_t id, size_t i, storage::op o);
  /// Sends each group as a client's ops (routed_execute, fail_over_reads); `idx` gets the
  /// groups' indexes in the order of the results (scatter_results).
  kj::Promise<kj::Array<storage::result_batch>> run_groups(
    routed_groups groups, std::shared_ptr<std::vector<std::vector<size_t>>> idx);
  /// The walk of in_window's read `i`: a hit at a past owner no later by the CAS clock than
  /// the latest delete met (rt.gone_at: the owner's, then each miss's) is none; with
  /// rt.lately (the owner's miss said deleted_lately) so is one whose CAS is no clock value
  /// (a client's meta E), which the clock cannot order after the delete (taken_on_walk).
  /// It stops when the ring changes, and at `until_ms` (steady ms; the member's call waits).
  kj::Promise<void> warm_read(std::shared_ptr<routed_ops> r, size_t i, actors::op_route rt,
                              uint64_t until_ms);
  /// The erase chain of in_window's delete `i` that found nothing at the primary: each past
  /// owner in turn (warm_source with erase) gets the client's delete, with its CAS compare
  /// until one removed the item; the first that held the item answers (with the owner's
  /// not_found deleted_lately, only an item later than the delete point met so far:
  /// keeps_owner_answer), and one whose CAS did not match (exists) ends it. It stops when
  /// the ring changes; from `until_ms` on (steady ms) the rest of the chain gets plain
  /// deletes, not waited for, and the answer stays.
  kj::Promise<void> erase_walk(std::shared_ptr<routed_ops> r, size_t i, actors::op_route rt,
                               uint64_t until_ms);
  /// Runs `ops` at member `id` of `ring` (this node: the local shards), as a warm op.
  kj::Promise<storage::result_batch> execute_at(const ring& in, uint32_t id,
                                                storage::op_batch ops);
  /// Promises waiting for an answer from an actor, by tag.
  template <typename T>
  using waits_for = std::unordered_map<uint64_t, kj::Own<kj::PromiseFulfiller<T>>>;
  /// Fulfils (and forgets) the promise waiting for `tag`, if it still waits.
  template <typename T>
  static void answer(waits_for<T>& waits, uint64_t tag, T&& r) {
    auto it = waits.find(tag);
    if (it == waits.end())
      return;
    auto f = kj::mv(it->second);
    waits.erase(it);
    f->fulfill(kj::mv(r));
  }
  /// The replicator's (replicated_atom) answer to a write that waits for every replica.
  void on_replicated(uint64_t tag, bool ok) { answer(repl_pending, tag, kj::mv(ok)); }
  /// Replicates `keys` once through the replicator (cluster/replicator.hpp); true when every
  /// live owner took them.
  kj::Promise<bool> replicate_once(std::vector<std::string> keys);
  /// Sends the replicator (msg..., tag) under a new tag; resolves to its (replicated_atom, tag,
  /// ok) answer, or to false after `bound_ms` (an answer lost).
  template <class... Ts>
  kj::Promise<bool> ask_replicator(uint64_t bound_ms, Ts&&... msg) {
    uint64_t tag = next_repl_tag++;
    auto paf = kj::newPromiseAndFulfiller<bool>();
    repl_pending.emplace(tag, kj::mv(paf.fulfiller));
    caf::send_as(bridge, replicator, std::forward<Ts>(msg)..., tag);
    return paf.promise.exclusiveJoin(
      timer.afterDelay(bound_ms * kj::MILLISECONDS).then([this, tag] {
        repl_pending.erase(tag);
        return false;
      }));
  }
  void on_local_result(uint64_t tag, storage::result_batch&& r) {
    if (pending.count(tag) != 0) {
      answer(pending, tag, kj::mv(r));
      return;
    }
    auto late = late_probes.find(tag);
    if (late == late_probes.end())
      return;
    std::vector<std::string> keys;
    for (size_t i = 0; i < late->second.size() && i < r.size(); ++i)
      if (storage::changed_item(late->second[i], r[i].st))
        keys.push_back(std::move(late->second[i].key));
    late_probes.erase(late);
    if (!keys.empty() && replicator && !stopping) {
      late_writes_replicated += keys.size();
      caf::anon_send(replicator, actors::replicate_atom::value, std::move(keys));
    }
  }
  /// local_execute's groups (tag) whose results came too late, when it had probes: each op's
  /// change probe, to replicate what the late results say changed (on_local_result).
  std::unordered_map<uint64_t, storage::op_batch> late_probes;

  // -- remote execution (peer actors, replicator) --
  kj::Promise<rpc::Node::Client> get_conn(const std::string& address);
  /// Runs `ops` on the member at `address`. Calls to one member leave in the order they are
  /// asked for (Cap'n Proto delivers them in order), except that a batch with a value too
  /// large to inline does not run on arrival (an upload runs at its finish; a split batch
  /// runs part after part): calls asked for after it wait until it has answered.
  /// `placed_by`: for client ops, the placement of the ring they were placed by (the call
  /// names it: the member places again what that ring, if it replaced it, no longer gives
  /// it); 0: this node's ring when asked. Not replicated state: `unavailable` at once while
  /// the address is unreachable (see `unreachable`).
  kj::Promise<storage::result_batch> remote_execute(const std::string& address,
                                                    storage::op_batch ops, rpc::Origin origin,
                                                    bool wait_replicas = false,
                                                    uint64_t placed_by = 0);
  /// remote_execute without that wait: the call (or the parts of a split batch) goes now.
  kj::Promise<storage::result_batch> send_execute(const std::string& address,
                                                  storage::op_batch ops, rpc::Origin origin,
                                                  bool wait_replicas, uint64_t placed_by);
  // Per member address, while a batch of remote_execute waits or must be waited for: the
  // point after which the next call may leave, and which call set it (empty when nothing
  // waits, so the common call costs a map lookup). Two order streams, as on a data link:
  // [0] forwarded client ops, [1] replicated state (see remote_execute).
  struct send_order {
    kj::Maybe<kj::ForkedPromise<void>> tail;
    uint64_t gen = 0;
  };
  std::map<std::string, send_order> send_orders[2];
  // send_execute of runs[i], then of the runs after it, each once the one before answered;
  // the results appended to `done`.
  kj::Promise<storage::result_batch> run_in_order(const std::string& address,
                                                  std::shared_ptr<std::vector<storage::op_batch>> runs,
                                                  size_t i, rpc::Origin origin, bool wait_replicas,
                                                  uint64_t placed_by, storage::result_batch done);
  /// `placed_by`: as remote_execute's (a connection's placement, from its loop: the ring this
  /// node's service holds may differ by the time the batch reaches the peer actor).
  void peer_call(const std::string& name, rpc::Origin origin, uint64_t tag, storage::op_batch ops,
                 caf::actor sender, caf::actor self, uint64_t placed_by = 0);
  void finish_call(uint64_t id, storage::result_batch&& r);

  /// `p`, or `fallback()` once the call made no progress of its own (`progress->own` did not
  /// move) for rpc_timeout_ms while its member sent nothing for any other call either
  /// (`progress->peer`: a call that waits behind other calls' values on a busy connection
  /// waits on; not replicated state, `waits_for_peer`), or once it made none of its own for
  /// queued_limit_factor × rpc_timeout_ms however busy the member is. Checked every
  /// rpc_timeout_ms, so it fails one to two timeouts after the last progress that counts
  /// (15 to 16 after its own, while the member is busy). Or p's failure.
  /// `fallback(timed_out)`: true when the watchdog ended the call, false on p's failure.
  template <typename T>
  kj::Promise<T> bounded(kj::Promise<T> p, std::shared_ptr<call_progress> progress,
                         kj::Function<T(bool)> fallback);
  kj::Promise<void> watchdog(std::shared_ptr<call_progress> progress, uint64_t seen,
                             uint64_t peer_seen, uint64_t since, bool last_look);
  /// Progress of every data call to each member address (call_progress::peer). KJ thread.
  /// One counter per address ever called (as `backoff`).
  std::map<std::string, std::shared_ptr<uint64_t>> peer_progress_of;
  std::shared_ptr<uint64_t> peer_progress(const std::string& address) {
    auto& h = peer_progress_of[address];
    if (!h)
      h = std::make_shared<uint64_t>(0);
    return h;
  }
  /// Answers heard from each address data calls went to (heard_from: a greeting, a probe's
  /// or SWIM's answer), so that a call sent before one and timed out after it does not take
  /// the member for silent (send_execute). Not progress for the watchdog: a member that
  /// answers SWIM may still leave a data call unanswered. KJ thread; kept and dropped with
  /// peer_progress_of.
  std::map<std::string, uint64_t> answers_heard;
  uint64_t answers_from(const std::string& address) const {
    auto it = answers_heard.find(address);
    return it == answers_heard.end() ? 0 : it->second;
  }

  // -- membership --
  void handle(output&& out);
  void send_swim(const std::string& address, message&& m);
  void on_swim_reply(message&& m) { handle(members.on_message(m, swim_ms())); }
  kj::Promise<void> tick_loop();
  void rebuild(bool force = false);
  void end_windows();
  // cluster_view::joining: seeds given, none answered, no other member seen, not past
  // join_deadline_ms. end_joining publishes the view again once that ends without a rebuild.
  uint64_t join_deadline_ms = 0;
  bool joining_now() const {
    return members.joining() && !seen_others && now_ms() < join_deadline_ms;
  }
  void end_joining();
  /// By member id of `r`: the memcached address data links dial ("" for self and the dead).
  std::vector<std::string> clients_of(const ring& r);
  /// By member id of `r`: the peer actor of each live member (null for self and the dead).
  std::vector<caf::actor> peers_of(const ring& r);
  /// Hands `view` to the replicator and the route table.
  void publish(std::shared_ptr<actors::cluster_view> view);
  caf::actor peer_for(const std::string& name);
  /// What this node keeps per member the membership forgot (dead or left for
  /// forget_after_ms): its peer actor ends once no view has named it for k_reap_grace_ms, and
  /// broken RPC connections to addresses no member has go with their backoff. Every tick.
  void reap_peers();
  static constexpr uint64_t k_reap_grace_ms = 2000;
  std::map<std::string, uint64_t> unreferenced_since;  // peer_by_name names, now_ms()
  /// Waits (at most replicate_bound_ms) until the replicator has nothing queued, in flight or
  /// waiting for a retry, then sets `done`: what this node acknowledged reaches the key's
  /// other owners before it leaves (stop()). `settled` says whether it got there (read by
  /// stop() after `done` is set or its wait for it ran out: false then).
  void settle_replication(std::shared_ptr<std::promise<void>> done);
  std::atomic<bool> settled{false};
  void begin_leave(std::shared_ptr<std::promise<void>> done);
  /// Sets `done` once no peer call is in flight (`calls`, again_in_flight: ops this node
  /// placed on other members, as for a member's write it placed again after its leave), at most
  /// cfg.rpc_timeout_ms: the teardown answers those still waiting unavailable.
  void settle_calls(std::shared_ptr<std::promise<void>> done);
  /// service::forget_routes on the KJ thread.
  void forget_routes(std::shared_ptr<std::promise<void>> done);
  /// Checks `over` every 10 ms and sets `done` once it holds or `deadline` (now_ms) passed.
  kj::Promise<void> watch(std::shared_ptr<std::promise<void>> done, uint64_t deadline,
                          std::function<bool()> over);
  void quit_actors();

  kj::Promise<void> accept_loop();
  void take(kj::Own<kj::AsyncIoStream> s);
  /// Logs `what` unless a line with the same `last_ms` was logged in the last 10 s.
  void log_rarely(uint64_t& last_ms, const std::string& what);
  /// `fd`: the connection's socket under any TLS (-1 if unknown), for holdUntilExit.
  void serve(kj::Own<kj::AsyncIoStream> s, int fd);
  struct served_slot;
  void serve_rpc(kj::Own<kj::AsyncIoStream> s, kj::ArrayPtr<const kj::byte> read_ahead,
                 kj::Own<served_slot> slot, kj::TimePoint hello_by, int fd);

  /// The longest a call between members may take: queued_limit_factor RPC timeouts (a call
  /// behind others' values, an unanswered greeting, a reader that takes no chunk).
  uint64_t call_limit_ms() const { return uint64_t{queued_limit_factor} * cfg.rpc_timeout_ms; }

  uint32_t ring_self() const {
    auto id = ring_ ? ring_->find(cfg.node_name) : std::nullopt;
    return id ? *id : static_cast<uint32_t>(ring_ ? ring_->size() : 0);
  }

  std::shared_ptr<kj_loop> loop_ref;  // hosted actors keep the loop alive (see core_actor)
  kj_loop& loop;
  kj::AsyncIoContext& io;
  kj::Timer& timer;
  service_config cfg;
  std::unique_ptr<tls_context> tls;  // mutual TLS (cfg.tls); outlives every connection
  uint64_t tls_refused_logged_ms = 0;
  std::string address;
  std::vector<caf::actor> shards;
  caf::actor route_table;
  stats_fn stats;
  uint64_t started_ms;
  membership members;
  bool draining = false;
  bool stopping = false;

  // placement
  std::shared_ptr<const ring> ring_;
  uint64_t epoch = 0;
  bool seen_others = false;  // a view with another live member was built (rebuild)
  // The past rings a seed's join reply handed over (newest first), for this node's first
  // view with others (rebuild): it warms from them as the seed does.
  struct handed_ring {
    std::vector<ring_member> members;
    uint64_t until_ms = 0;
    uint8_t erase_ranks = 1;
    std::string joining;
  };
  std::vector<handed_ring> handed_past;
  void hand_past(rpc::SwimMessage::Builder reply) const;
  void take_past(rpc::SwimMessage::Reader reply);
  uint64_t declared_gone_seen = 0;  // members.stats().declared_gone_at_start when handled
  uint64_t declared_gone_all = 0;   // members.stats().declared_gone when handled
  uint64_t refutations_seen = 0;    // members.stats().refutations when handled
  // A pause the others may have taken for a death: this loop's ticks stalled longer than
  // they take to declare one (stalled_ms), and this node refuted something (refuted_ms)
  // within k_return_match_ms of it, in either order. (A paused node often refutes only the
  // suspicion a ping queued during the pause carried, never hearing of its death.)
  static constexpr uint64_t k_return_match_ms = 5000;
  uint64_t last_tick_ms = 0;
  uint64_t stalled_ms = 0;
  uint64_t refuted_ms = 0;
  uint64_t returned_ms = 0;  // when the return mark was last set (storage::mark_return)
  void note_return(const char* why);
  // Back while it ran, after the others may have had it dead (note_return): the next view
  // warms from the ring without this node (rebuild), which they served its keys by meanwhile.
  bool came_back = false;
  // Members that restarted before anyone had them dead (event_kind::restarted) since the last
  // view: the next one names them (cluster_view::restarted).
  std::set<std::string> restarted;
  std::shared_ptr<const std::vector<std::string>> restarted_members();
  // Members seen back (alive_again, restarted), by name, with the number of their latest
  // return; the views carry it (cluster_view::returns) so that the loops' data links to them
  // dial at once. A forgotten member's entry goes (its peer actor and links go too).
  std::map<std::string, uint64_t> returns;
  uint64_t returns_counted = 0;  // the number of the latest return
  bool returns_new = false;      // a return since the last view: the next one must carry it
  std::shared_ptr<const std::map<std::string, uint64_t>> returns_shared;  // (of the last view)
  std::shared_ptr<const std::map<std::string, uint64_t>> returns_for_view();
  bool duplicate_reported = false;  // on_fatal called for a name held by another node
  bool mismatch_reported = false;   // on_fatal called for a peer with another --replicas
  const uint64_t started_at_ms = wall_ms();  // for replicas_conflict
  void replicas_conflict(const std::string& name, const std::string& address, uint32_t theirs,
                         bool their_cluster, uint64_t their_start_ms);
  std::map<std::string, caf::actor> peer_by_name;
  caf::actor bridge;
  caf::actor replicator;
  caf::actor router;  // router_actor: a data link session's ops placed again
  std::atomic<int> actors_running{0};

  // local execution
  uint64_t next_tag = 1;
  waits_for<storage::result_batch> pending;
  // writes waiting for every replica (replicate_once), by tag
  waits_for<bool> repl_pending;
  uint64_t next_repl_tag = 1;
  // the last view built: ring_'s peers and data link addresses (the next view's previous ones)
  std::shared_ptr<const actors::cluster_view> view_;

  // peer calls in flight (answered with unavailable at shutdown)
  struct call_info {
    caf::actor sender, self;
    uint64_t tag;
    size_t n;
  };
  uint64_t next_call = 1;
  std::map<uint64_t, call_info> calls;
  // Data calls (Node.execute / Node.upload) sent to other nodes and served for them, with
  // their ops: ops per call is how well forwarding batches. Reported by Node.stats. (A read
  // whose value comes back streamed is asked again with a sink: only the server counts that.)
  struct call_counts {
    uint64_t calls = 0, ops = 0;
    void add(size_t n) {
      ++calls;
      ops += n;
    }
  } sent, served;

  // outgoing connections, one per RPC address
  struct client_conn;
  struct backoff_state {
    uint64_t delay_ms = 0;
    uint64_t retry_at = 0;
  };
  std::map<std::string, kj::Own<client_conn>> pool;
  std::map<std::string, backoff_state> backoff;
  // Addresses found silent: a data call ended by its watchdog without a word from its member
  // (nothing of its own, no answer to another data call to the address, no answer heard from
  // it since the call left: answers_heard; not a call that waits for the member's replicas),
  // or a connect or hello that timed out. As a data link's
  // "Unreachable" (data_link.hpp, mcrouter's TKO): data calls to it but replicated state
  // answer `unavailable` at once (send_execute) until a probe is answered: a `ring` query on
  // its connection (a new one if it has none), made by the first data call once the last
  // probe failed 1 s ago or more. A probe not answered within the RPC timeout breaks the
  // connection, so the next one dials anew; any connection to the address that is greeted,
  // any SWIM answer from it and any answered data call (replicated state still goes) end the
  // state too (heard_from). Erased with the address's backoff (reap_peers). KJ thread.
  struct unreachable_state {
    uint64_t probe_at = 0;
    uint64_t probe = 0;  // the probe in flight (0: none); a late one's answer is not taken
  };
  uint64_t next_probe = 1;
  std::map<std::string, unreachable_state> unreachable;
  uint64_t calls_failed_fast = 0;
  // Members' client calls refused as later than their sender waits (late_call), and when the
  // last was logged (one line per 10 s, with the count between).
  uint64_t late_calls_refused = 0;
  uint64_t late_logged_ms = 0, late_unlogged = 0;
  /// A member's data call stamped `sent_ms` (0: not said) that came on the connection whose
  /// arrivals `clock` measures: true (counted, logged) when it is a client call later than its
  /// sender's `timeout_ms`, which must not run (cluster/arrival_clock.hpp). Every stamped call
  /// feeds the baseline. (An RPC connection is read as messages come: a call is never held
  /// back here by this node's own replies, as a data link's may be.) `answer_by`, if given,
  /// gets when the sender gives up on a client call that is run (steady_now_ms; 0: not said).
  bool late_call(arrival_clock& clock, const std::string& member, rpc::Origin origin,
                 uint64_t sent_ms, uint32_t timeout_ms, uint64_t* answer_by = nullptr);
  void mark_unreachable(const std::string& addr);
  // A word from the member at `addr` (a greeting, a probe's or SWIM's answer, an answered data
  // call while some address is unreachable): counted (answers_heard), and it ends the mark.
  void heard_from(const std::string& addr);
  void dial_now(const std::string& addr);
  bool failing_fast(const std::string& addr);
  /// Probes `addr` (unreachable) now unless a probe of it is under way.
  void probe_now(const std::string& addr, unreachable_state& u);
  kj::Promise<void> probe(const std::string& addr, uint64_t id);
  /// A new connection to `addr` for `waiters`, in place of the pool's (destroyed, a connect
  /// of its cancelled).
  void dial(const std::string& addr,
            std::vector<kj::Own<kj::PromiseFulfiller<rpc::Node::Client>>> waiters);
  // Why the last connection to an address failed before its hello was answered (erased once
  // one is): what the "no seed answered" line names for each seed.
  std::map<std::string, std::string> connect_errors;
  uint64_t next_conn_id = 1;
  size_t swim_in_flight = 0;

  kj::Own<kj::ConnectionReceiver> listener;
  bool serving = false;
  uint32_t served_connections = 0;  // open server connections (actors::max_rpc_connections)
  uint64_t refused_logged_ms = 0;   // the last "too many" or accept error line
  kj::Own<kj::TaskSet> tasks;       // accept loop, server connections, calls, sends
  kj::Promise<void> ticking = nullptr;
};

// -- hosted actors ------------------------------------------------------------------------------

namespace {

// hosted_actor's destructor reports to its host, and a handle (in a cluster_view held by the
// route table, a connection...) may keep the actor alive after the service has stopped: every
// hosted actor co-owns the kj_loop object. It is a base listed before hosted_actor, so it is
// destroyed after ~hosted_actor ran.
struct loop_keeper {
  std::shared_ptr<kj_loop> kept_loop;
};

class core_actor : private loop_keeper, public actors::hosted_actor {
public:
  core_actor(caf::actor_config& cfg, std::shared_ptr<kj_loop> host, service::impl* core)
    : loop_keeper{std::move(host)}, actors::hosted_actor(cfg, kept_loop.get()), core_(core) {
    core_->actors_running.fetch_add(1);
  }
  void on_exit() override {
    if (core_)
      core_->actors_running.fetch_sub(1);
    core_ = nullptr;
  }

protected:
  /// Starts a call of the service's that answers the current sender (result_atom, tag, ...)
  /// later: `start(sender, self)`. Answers `n` results `unavailable` at once instead when the
  /// service is gone or the start throws.
  template <class Start>
  void start_call(uint64_t tag, size_t n, Start&& start) {
    auto sender = caf::actor_cast<caf::actor>(current_sender());
    auto self = caf::actor_cast<caf::actor>(this);
    if (core_) {
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { start(sender, self); })) {
        (void) e;
      } else {
        return;
      }
    }
    if (sender)
      send(sender, actors::result_atom::value, tag, unavailable(n));
  }

  service::impl* core_;
};

// Stands for a remote node: like a storage shard, over RPC.
class peer_actor final : public core_actor {
public:
  peer_actor(caf::actor_config& cfg, std::shared_ptr<kj_loop> host, service::impl* core,
             std::string name)
    : core_actor(cfg, std::move(host), core), name_(std::move(name)) {}
  const char* name() const override { return "cluster_peer"; }

  caf::behavior make_behavior() override {
    return {
      [this](actors::exec_atom, uint64_t tag, storage::op_batch& ops) {
        call(rpc::Origin::CLIENT, tag, std::move(ops));
      },
      [this](actors::exec_atom, uint64_t tag, storage::op_batch& ops, uint64_t placed_by) {
        call(rpc::Origin::CLIENT, tag, std::move(ops), placed_by);
      },
      [this](actors::warm_atom, uint64_t tag, storage::op_batch& ops) {
        call(rpc::Origin::WARM, tag, std::move(ops));
      },
      [this](actors::apply_atom, uint64_t tag, storage::op_batch& ops) {
        call(rpc::Origin::REPLICA, tag, std::move(ops));  // from the replicator or a link
      },
    };
  }

private:
  void call(rpc::Origin origin, uint64_t tag, storage::op_batch&& ops, uint64_t placed_by = 0) {
    start_call(tag, ops.size(), [&](const caf::actor& sender, const caf::actor& self) {
      core_->peer_call(name_, origin, tag, std::move(ops), sender, self, placed_by);
    });
  }

  std::string name_;
};

// Places again the client ops that a data link session found placed by a ring this node has
// replaced (actors/cluster_route.hpp, stale placements): routed_execute, as for bifrostctl.
class router_actor final : public core_actor {
public:
  using core_actor::core_actor;
  const char* name() const override { return "cluster_router"; }
  caf::behavior make_behavior() override {
    return {
      [this](actors::exec_atom, uint64_t tag, storage::op_batch& ops) {
        start_call(tag, ops.size(), [&](const caf::actor& sender, const caf::actor& self) {
          core_->route_call(tag, std::move(ops), sender, self);
        });
      },
    };
  }
};

// Sends the RPC server's ops to the local shards and receives their results on the KJ thread;
// the same for the writes it asks the replicator to replicate before they answer.
class bridge_actor final : public core_actor {
public:
  using core_actor::core_actor;
  const char* name() const override { return "cluster_bridge"; }
  caf::behavior make_behavior() override {
    return {
      [this](actors::result_atom, uint64_t tag, storage::result_batch& r) {
        if (core_)
          core_->on_local_result(tag, std::move(r));
      },
      [this](actors::replicated_atom, uint64_t tag, bool ok) {
        if (core_)
          core_->on_replicated(tag, ok);
      },
    };
  }
};

// -- RPC server ---------------------------------------------------------------------------------

class upload_sink final : public rpc::ValueSink::Server {
public:
  /// `placed_by`: a member's ring (Node.upload's `ring`), its stores then run as
  /// primary_execute's; nullopt with origin client (a tool, e.g. bifrostctl's set
  /// --value-file: any key to any node): at the keys' owners, as routed_execute's (a tool's
  /// execute's); another origin: here, as local_primary's.
  upload_sink(service::impl& core, storage::op_batch ops, rpc::Origin origin, bool wait,
              std::optional<uint64_t> placed_by)
    : core_(core), ops_(std::move(ops)), origin_(origin), wait_(wait), placed_by_(placed_by),
      too_large_(ops_.size()) {}

protected:
  kj::Promise<void> write(WriteContext context) override {
    KJ_REQUIRE(!finished_, "upload already finished");
    auto p = context.getParams();
    KJ_REQUIRE(p.getIndex() < ops_.size(), "chunk for an op index out of range", p.getIndex());
    if (refused_)
      return kj::READY_NOW;
    auto chunk = p.getChunk();
    // A value past this node's max item size is not buffered on (a peer could stream any
    // amount into one): dropped at once, the op is refused as too large at finish().
    const uint32_t i = p.getIndex();
    if (too_large_[i])
      return kj::READY_NOW;
    auto& value = ops_[i].value;
    if (value.size() + chunk.size() > core_.cfg.max_value) {
      too_large_[i] = true;
      std::string().swap(value);
      return kj::READY_NOW;
    }
    value.append(reinterpret_cast<const char*>(chunk.begin()), chunk.size());
    return kj::READY_NOW;
  }

  kj::Promise<void> finish(FinishContext context) override;

public:
  /// The call came too late (node_server::arrived_late): its chunks are dropped, and finish
  /// answers every op `unavailable` without running one.
  void refuse() { refused_ = true; }
  /// A member's client upload: its finish (when the stores run) is checked as a call is.
  void check_finish(std::shared_ptr<arrival_clock> clock, std::string member) {
    clock_ = std::move(clock);
    member_ = std::move(member);
  }

private:
  bool refused_ = false;
  std::shared_ptr<arrival_clock> clock_;  // (null: not checked)
  std::string member_;
  service::impl& core_;
  storage::op_batch ops_;
  rpc::Origin origin_;
  bool wait_;  // answer after every replica stored the writes
  std::optional<uint64_t> placed_by_;
  bool finished_ = false;
  std::vector<bool> too_large_;  // per op: its value was too large (dropped)
};

// `parked`: where a value streamed without a sink is kept for the caller's re-read (or null).
void fill_results(const storage::result_batch& rs, capnp::List<rpc::Result>::Builder list,
                  bool can_stream, std::vector<stream_job>* jobs, storage::parked_values* parked) {
  for (size_t i = 0; i < rs.size(); ++i) {
    auto b = list[static_cast<unsigned>(i)];
    to_rpc_meta(rs[i], b);
    if (!rs[i].value)
      continue;
    auto v = rs[i].value.view();
    if (v.size() <= inline_value_limit) {
      b.setValue(as_data(v));
    } else {
      // Streamed through the caller's sink; without one the caller asks again with a sink
      // (streamed, no value: see remote_execute).
      b.setStreamed(true);
      if (can_stream && jobs)
        jobs->push_back({static_cast<uint32_t>(i), v});
      else if (parked)  // its re-read gets this result, not what later calls did to the item
        b.setParked(rs[i].placed_again ? parked->park_strict(rs[i]) : parked->park(rs[i]));
    }
  }
}

// After this node executed `ops` as their primary for a client (origin client), the keys it
// changed go to their other owners: in the background (the replicator actor), or with `wait`
// before the results return — a write some live owner did not acknowledge then answers
// `unavailable` (it stays stored on the primary and on the owners that took it).
// (A write whose local result came too late is replicated when it comes: local_execute.)
kj::Promise<storage::result_batch> replicate_results(service::impl& core,
                                                     const storage::op_batch& ops,
                                                     storage::result_batch rs,
                                                     rpc::Origin origin, bool wait) {
  if (origin != rpc::Origin::CLIENT || core.cfg.replicas <= 1 || !core.replicator)
    return kj::mv(rs);
  std::vector<std::string> keys;
  std::vector<size_t> idx;
  for (size_t i = 0; i < ops.size() && i < rs.size(); ++i)
    if (storage::changed_item(ops[i], rs[i].st)) {
      keys.push_back(ops[i].key);
      idx.push_back(i);
    }
  if (keys.empty())
    return kj::mv(rs);
  if (!wait) {
    caf::anon_send(core.replicator, actors::replicate_atom::value, std::move(keys));
    return kj::mv(rs);
  }
  return core.replicate_once(std::move(keys))
      .then([rs = std::move(rs), idx = std::move(idx)](bool ok) mutable {
        if (!ok)
          for (auto i : idx) {
            rs[i].st = storage::status::unavailable;
            rs[i].value = {};
          }
        return std::move(rs);
      });
}

// A member's client ops that run here: what this node places again on another member goes
// with the member's deadline for them (storage::op::answer_by_ms; 0: none said).
void keep_deadline(storage::op_batch& ops, uint64_t answer_by) {
  if (answer_by != 0)
    for (auto& o : ops)
      o.answer_by_ms = answer_by;
}

kj::Promise<void> upload_sink::finish(FinishContext context) {
  KJ_REQUIRE(!finished_, "upload already finished");
  finished_ = true;
  uint64_t answer_by = 0;
  if (const auto p = context.getParams();
      clock_ && core_.late_call(*clock_, member_, rpc::Origin::CLIENT, p.getSentAtMs(),
                                p.getTimeoutMs(), &answer_by))
    refused_ = true;
  if (placed_by_)
    keep_deadline(ops_, answer_by);
  if (refused_) {
    storage::result_batch rs = unavailable(ops_.size());
    fill_results(rs, context.getResults(results_size(rs)).initResults(
                       static_cast<unsigned>(rs.size())), false, nullptr, nullptr);
    return kj::READY_NOW;
  }
  // A value refused as too large removes the old one, as a client's set does (memcached: a
  // stale value must not outlive a failed write); the remove is replicated like any.
  for (size_t i = 0; i < too_large_.size(); ++i)
    if (too_large_[i]) {
      ops_[i].kind = storage::op_kind::remove;
      ops_[i].compare_cas = 0;
    }
  // (Stores all: a member's are placed again when it placed them by a ring this node has
  // replaced, and refused while this node leaves for good, by the time the values are in.)
  auto done =
    placed_by_                       ? core_.primary_execute(std::move(ops_), *placed_by_, wait_)
    : origin_ == rpc::Origin::CLIENT ? core_.routed_execute(std::move(ops_))
                                     : core_.local_primary(std::move(ops_), origin_, wait_);
  return done
      .then([context, too_large = std::move(too_large_)](storage::result_batch rs) mutable {
        // (Not over `unavailable`: a refused call, or a remove that did not run.)
        for (size_t i = 0; i < too_large.size() && i < rs.size(); ++i)
          if (too_large[i] && rs[i].st != storage::status::unavailable) {
            rs[i] = storage::result{};
            rs[i].st = storage::status::too_large;
          }
        auto list = context.getResults(results_size(rs)).initResults(static_cast<unsigned>(rs.size()));
        fill_results(rs, list, false, nullptr, nullptr);
      });
}

storage::op_batch read_ops(capnp::List<rpc::Op>::Reader list, rpc::Origin origin) {
  auto ops = from_rpc(list);  // at most call_max_ops (throws: the call fails)
  if (origin == rpc::Origin::WARM)
    mark_warm(ops);
  return ops;
}

// One per server connection: `hello` tells a member (it sends its RPC address) from a tool.
class node_server final : public rpc::Node::Server {
public:
  /// `fd`: the connection's socket (owned by its stream), or -1.
  node_server(service::impl& core, std::shared_ptr<bool> greeted, int fd)
    : core_(core), greeted_(std::move(greeted)), fd_(fd) {}

protected:
  kj::Promise<void> hello(HelloContext context) override {
    auto peer = context.getParams().getVersion();
    if (peer != rpc::SCHEMA_VERSION)
      kj::throwFatalException(KJ_EXCEPTION(
          FAILED, kj::str("schema version mismatch: this node speaks version ",
                          rpc::SCHEMA_VERSION, ", the peer speaks version ", peer)));
    auto from = context.getParams().getFrom();
    *greeted_ = true;
    member_ = from.getName().size() > 0 && from.getRpcAddress().size() > 0;
    member_name_ = from.getName().cStr();
    if (member_ && context.getParams().getSentAtMs() != 0)
      arrivals_->late_ms(context.getParams().getSentAtMs(), steady_now_ms());  // (the first)
    auto r = context.getResults();
    r.setVersion(rpc::SCHEMA_VERSION);
    r.setReplicas(core_.cfg.replicas);
    r.setInCluster(core_.seen_others);
    r.setStartedAtMs(core_.started_at_ms);
    self_info(r.initSelf());
    const uint32_t theirs = context.getParams().getReplicas();
    if (member_ && theirs != 0 && theirs != core_.cfg.replicas) {
      // Answered (so that the caller can apply the same rule), then nothing more from it.
      member_ = false;
      refused_ = true;
      core_.replicas_conflict(from.getName().cStr(), from.getRpcAddress().cStr(), theirs,
                              context.getParams().getInCluster(),
                              context.getParams().getStartedAtMs());
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> swim(SwimContext context) override {
    message m;
    if (refused_ || !from_rpc(context.getParams().getMsg(), m) || core_.stopping)
      return kj::READY_NOW;
    auto out = core_.members.on_message(m, swim_ms());
    // The first answer to the caller travels back as the reply (a join's, with the rings this
    // node still warms from).
    for (auto it = out.send.begin(); it != out.send.end(); ++it) {
      if (!m.from_address.empty() && it->to_address == m.from_address) {
        auto reply = context.getResults().initReply();
        to_rpc(it->msg, reply);
        if (it->msg.kind == message_kind::join_reply)
          core_.hand_past(reply);
        out.send.erase(it);
        break;
      }
    }
    core_.handle(std::move(out));
    return kj::READY_NOW;
  }

  kj::Promise<void> execute(ExecuteContext context) override {
    auto params = context.getParams();
    auto origin = params.getOrigin();
    auto ops = read_ops(params.getOps(), origin);
    core_.served.add(ops.size());
    bool can_stream = params.hasSink();
    rpc::ValueSink::Client sink = can_stream ? params.getSink() : rpc::ValueSink::Client(nullptr);
    // A member sent these ops to us as their owner; a tool (bifrostctl) sends any key to any
    // node, so its ops are routed to their owners.
    bool route = !member_ && origin == rpc::Origin::CLIENT;
    if (route && core_.cfg.count_tool_ops)
      core_.cfg.count_tool_ops(ops);
    uint64_t answer_by = 0;  // (0 unless a member's client call)
    const bool late =
      arrived_late(origin, params.getSentAtMs(), params.getTimeoutMs(), &answer_by);
    keep_deadline(ops, answer_by);
    auto results =
      late ? kj::Promise<storage::result_batch>(unavailable(ops.size()))  // nothing runs here
      : route ? core_.routed_execute(std::move(ops))
      : origin == rpc::Origin::CLIENT
        ? core_.primary_execute(std::move(ops), params.getRing(), params.getWaitReplicas())
      : origin == rpc::Origin::WARM && member_ ? core_.parked_or_local(std::move(ops))
                                               : core_.local_execute(std::move(ops));
    // (The call may outlive the service at shutdown: the continuation keeps the timer, which
    // is the I/O context's, and no reference to the service.)
    kj::Timer& timer = core_.timer;
    const uint64_t stall_ms = core_.call_limit_ms();
    return results
        .then([&timer, stall_ms, context, can_stream,
               parked = params.getPark() && member_ ? core_.cfg.parked.get() : nullptr,
               sink = kj::mv(sink)](storage::result_batch rs) mutable -> kj::Promise<void> {
          auto list =
            context.getResults(results_size(rs)).initResults(static_cast<unsigned>(rs.size()));
          auto jobs = std::make_shared<std::vector<stream_job>>();
          fill_results(rs, list, can_stream, jobs.get(), parked);
          if (jobs->empty())
            return kj::READY_NOW;
          // Values are streamed before the results return; the slices stay pinned meanwhile,
          // for as long as the reader takes chunks (stall_guard: the queued calls' limit).
          auto hold = std::make_shared<storage::result_batch>(std::move(rs));
          auto taken = std::make_shared<call_progress>();
          taken->peer = std::make_shared<uint64_t>(0);
          return stream_out(kj::mv(sink), hold, jobs, 0, 0, taken)
              .exclusiveJoin(stall_guard(timer, taken, 0, now_ms(), stall_ms));
        });
  }

  kj::Promise<void> upload(UploadContext context) override {
    auto params = context.getParams();
    auto origin = params.getOrigin();
    auto ops = read_ops(params.getOps(), origin);
    core_.served.add(ops.size());
    std::optional<uint64_t> placed_by;
    if (member_ && origin == rpc::Origin::CLIENT)
      placed_by = params.getRing();
    if (!member_ && origin == rpc::Origin::CLIENT && core_.cfg.count_tool_ops)
      core_.cfg.count_tool_ops(ops);
    auto sink = kj::heap<upload_sink>(core_, std::move(ops), origin, params.getWaitReplicas(),
                                      placed_by);
    if (arrived_late(origin, params.getSentAtMs(), params.getTimeoutMs()))
      sink->refuse();
    else if (member_ && origin == rpc::Origin::CLIENT)
      sink->check_finish(arrivals_, member_name_);
    context.getResults().setSink(kj::mv(sink));
    return kj::READY_NOW;
  }

  // A member's client call that reaches this node later than the member's timeout for it
  // after it was sent (this node was stopped, or a cut held the bytes): the member has
  // answered its client `unavailable`, and the call, run now, would be stamped now and win
  // over the writes the key's other owners acknowledged meanwhile (service::impl::late_call).
  bool arrived_late(rpc::Origin origin, uint64_t sent_ms, uint32_t timeout_ms,
                    uint64_t* answer_by = nullptr) {
    if (answer_by)
      *answer_by = 0;
    return member_ &&
           core_.late_call(*arrivals_, member_name_, origin, sent_ms, timeout_ms, answer_by);
  }

  kj::Promise<void> status(StatusContext context) override {
    auto r = context.getResults();
    auto self = r.initSelf();
    self_info(self.initInfo());
    self.setRingShare(core_.ring_ ? core_.ring_->live_share(core_.cfg.node_name) : 0.0);
    self.setDraining(core_.draining);
    r.setVersion(kj::str("bifrost 0.1.0 (schema ", rpc::SCHEMA_VERSION, ")"));
    r.setUptime((now_ms() - core_.started_ms) / 1000);
    const size_t live = core_.ring_ ? core_.ring_->live_size() : 1;
    std::string where;
    if (core_.joining_now())
      where = "joining: no seed answered yet (client requests answer unavailable until one "
              "does, or the join wait ends)";
    else if (live > 1 || core_.seen_others)
      where = std::to_string(live) + " live member" + (live == 1 ? "" : "s");
    else if (core_.members.joining())
      where = "alone: no seed answered (serving alone, still asking them)";
    else
      where = "alone";
    r.setCluster(where);
    auto st = std::make_shared<service::stat_list>();
    return core_.local_stats(st).then([context, st]() mutable {
      auto self = context.getResults().getSelf();
      self.setItems(stat_u64(*st, "curr_items"));
      self.setBytes(stat_u64(*st, "bytes"));
    });
  }

  kj::Promise<void> members(MembersContext context) override {
    auto all = core_.members.members();
    const bool without_sizes = context.getParams().getWithoutSizes();
    // Items and bytes: ours from the stats callback, the others' from their status (bounded).
    // (A member that did not answer in time, or a dead one: nullopt, sizes unknown.)
    using sizes = kj::Maybe<std::pair<uint64_t, uint64_t>>;
    auto promises = kj::heapArrayBuilder<kj::Promise<sizes>>(all.size());
    for (auto& m : all) {
      if (without_sizes) {
        promises.add(sizes(nullptr));
        continue;
      }
      if (m.name == core_.cfg.node_name) {
        auto st = std::make_shared<service::stat_list>();
        promises.add(core_.local_stats(st).then([st]() -> sizes {
          if (st->empty())
            return nullptr;  // (no answer within local_stats' bound)
          return std::make_pair(stat_u64(*st, "curr_items"), stat_u64(*st, "bytes"));
        }));
        continue;
      }
      // (A member that left still serves its linger, and a suspect may only be slow: asked
      // too, within the same bound. A dead one is not.)
      if (m.state == member_state::dead) {
        promises.add(sizes(nullptr));
        continue;
      }
      auto p = core_.get_conn(m.address)
                   .then([](rpc::Node::Client node) { return node.statusRequest().send(); })
                   .then([](capnp::Response<rpc::Node::StatusResults>&& r) -> sizes {
                     auto s = r.getSelf();
                     return std::make_pair(s.getItems(), s.getBytes());
                   })
                   .catch_([](kj::Exception&&) -> sizes { return nullptr; });
      promises.add(p.exclusiveJoin(
          core_.timer.afterDelay(500 * kj::MILLISECONDS).then([]() -> sizes { return nullptr; })));
    }
    auto& core = core_;
    return kj::joinPromises(promises.finish())
        .then([context, all = std::move(all), &core](
                  kj::Array<sizes> known) mutable {
          auto list = context.getResults().initMembers(static_cast<unsigned>(all.size()));
          for (size_t i = 0; i < all.size(); ++i) {
            auto b = list[static_cast<unsigned>(i)];
            to_rpc(all[i], b.initInfo());
            b.setRingShare(core.ring_ ? core.ring_->live_share(all[i].name) : 0.0);
            KJ_IF_MAYBE (s, known[i]) {
              b.setItems(s->first);
              b.setBytes(s->second);
            } else {
              b.setSizeUnknown(true);
            }
            if (all[i].name == core.cfg.node_name)
              b.setDraining(core.draining);
          }
        });
  }

  kj::Promise<void> ring(RingContext context) override {
    auto key = to_string(context.getParams().getKey());
    auto r = context.getResults();
    if (!core_.ring_) {
      r.initOwners(0);
      return kj::READY_NOW;
    }
    r.setEpoch(core_.ring_->epoch());
    auto owners = core_.ring_->live_owners(key, std::max<uint32_t>(1, core_.cfg.replicas));
    auto list = r.initOwners(static_cast<unsigned>(owners.size()));
    for (size_t i = 0; i < owners.size(); ++i) {
      auto b = list[static_cast<unsigned>(i)];
      if (auto* m = core_.members.find(owners[i]->name))
        to_rpc(*m, b);
      else
        to_rpc(*owners[i], b);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> stats(StatsContext context) override {
    auto st = std::make_shared<service::stat_list>();
    return core_.local_stats(st).then([this, context, st]() mutable {
      st->emplace_back("cluster_calls_sent", std::to_string(core_.sent.calls));
      st->emplace_back("cluster_ops_sent", std::to_string(core_.sent.ops));
      st->emplace_back("cluster_calls_served", std::to_string(core_.served.calls));
      st->emplace_back("cluster_ops_served", std::to_string(core_.served.ops));
      st->emplace_back("cluster_ops_placed_again", std::to_string(core_.placed_again));
      st->emplace_back("cluster_late_writes_replicated",
                       std::to_string(core_.late_writes_replicated));
      // What this node keeps per member it has known (forget_after_ms bounds it).
      st->emplace_back("cluster_members_known", std::to_string(core_.members.members().size()));
      st->emplace_back("cluster_members_forgotten",
                       std::to_string(core_.members.stats().forgotten));
      st->emplace_back("cluster_graveyard", std::to_string(core_.members.graveyard_size()));
      st->emplace_back("cluster_peer_actors", std::to_string(core_.peer_by_name.size()));
      st->emplace_back("cluster_rpc_connections", std::to_string(core_.pool.size()));
      st->emplace_back("cluster_rpc_unreachable", std::to_string(core_.unreachable.size()));
      st->emplace_back("cluster_rpc_calls_failed_fast", std::to_string(core_.calls_failed_fast));
      st->emplace_back("cluster_rpc_late_calls_refused",
                       std::to_string(core_.late_calls_refused));
      auto list = context.getResults().initStats(static_cast<unsigned>(st->size()));
      for (size_t i = 0; i < st->size(); ++i) {
        list[static_cast<unsigned>(i)].setName((*st)[i].first);
        list[static_cast<unsigned>(i)].setValue((*st)[i].second);
      }
    });
  }

  kj::Promise<void> drain(DrainContext context) override {
    // Leave at once (the others take our keys and warm them from us), then the daemon stops
    // taking clients and ends after its linger (cli/bifrostd.cpp).
    core_.draining = true;
    begin_leave();
    if (core_.cfg.on_drain)
      core_.cfg.on_drain();
    answer_stop(context.getParams().getHoldUntilExit(), context.getResults());
    return kj::READY_NOW;
  }

  kj::Promise<void> leave(LeaveContext context) override {
    begin_leave();
    if (core_.cfg.on_leave)
      core_.cfg.on_leave();
    answer_stop(context.getParams().getHoldUntilExit(), context.getResults());
    return kj::READY_NOW;
  }

private:
  // bifrostctl drain/leave --wait: the caller's socket stays open until the process ends.
  // (Once per connection: asked again on it, it is held already.)
  template <typename Results>
  void answer_stop(bool hold, Results r) {
    if (hold && !held_ && fd_ >= 0 && core_.cfg.hold_until_exit)
      held_ = core_.cfg.hold_until_exit(fd_);
    r.setHeld(hold && held_);
    r.setStopsInMs(core_.cfg.stops_in_ms ? core_.cfg.stops_in_ms() : 0);
  }

  void begin_leave() {
    if (core_.members.leaving())
      return;
    core_.handle(core_.members.leave(swim_ms()));
    core_.rebuild();  // we are `left`: our keys belong to the others now
  }

  void self_info(rpc::MemberInfo::Builder b) {
    if (auto* m = core_.members.find(core_.cfg.node_name)) {
      to_rpc(*m, b);
    } else {
      b.setName(core_.cfg.node_name);
      b.setRpcAddress(core_.address);
      b.setClientAddress(core_.cfg.client_address);
      b.setWeight(core_.cfg.weight);
    }
  }

  service::impl& core_;
  std::shared_ptr<bool> greeted_;  // set by hello (service::impl::serve_rpc's deadline reads it)
  bool member_ = false;  // hello came from a cluster member
  std::string member_name_;  // its name (hello)
  // How late its calls come (arrived_late; shared with its uploads' sinks, which check their
  // finish). KJ thread.
  std::shared_ptr<arrival_clock> arrivals_ = std::make_shared<arrival_clock>();
  bool refused_ = false;  // ...whose --replicas differ: its membership messages are ignored
  int fd_;  // the connection's socket, or -1 (hold_until_exit)
  bool held_ = false;  // ...held until the process ends
};

struct server_conn {
  server_conn(kj::Own<kj::AsyncIoStream> s, rpc::Node::Client boot)
    : stream(kj::mv(s)), net(*stream, capnp::rpc::twoparty::Side::SERVER, rpc_reader_options()),
      sys(capnp::makeRpcServer(net, kj::mv(boot))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork net;
  capnp::RpcSystem<VatId> sys;
};

} // namespace

// -- outgoing connections -----------------------------------------------------------------------

struct service::impl::client_conn {
  enum class state { connecting, ready, broken };

  client_conn(impl& c, std::string a, uint64_t i) : core(c), address(std::move(a)), id(i) {}

  void fail(const kj::Exception& e) {
    if (st == state::broken)
      return;
    bool was_ready = st == state::ready;
    st = state::broken;
    if (!was_ready)
      core.connect_errors[address] = e.getDescription().cStr();
    for (auto& w : waiters)
      w->reject(kj::cp(e));
    waiters.clear();
    auto& b = core.backoff[address];
    b.delay_ms = was_ready ? 0 : std::min<uint64_t>(std::max<uint64_t>(b.delay_ms * 2, 50), 1000);
    b.retry_at = now_ms() + b.delay_ms;
  }

  void start() {
    auto hello_from = core.members.find(core.cfg.node_name);
    member_info self;
    if (hello_from)
      self = *hello_from;
    auto connecting =
        core.io.provider->getNetwork()
            .parseAddress(address)
            .then([](kj::Own<kj::NetworkAddress> a) { return a->connect().attach(kj::mv(a)); })
            .then([this](kj::Own<kj::AsyncIoStream> s) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
              if (core.tls)
                return core.tls->wrap_client(kj::mv(s), address);
              return kj::mv(s);
            })
            .then([this, self](kj::Own<kj::AsyncIoStream> s) {
              connected = true;
              stream = buffered(kj::mv(s));
              net = kj::heap<capnp::TwoPartyVatNetwork>(
                  *stream, capnp::rpc::twoparty::Side::CLIENT, rpc_reader_options());
              sys = kj::heap<capnp::RpcSystem<VatId>>(capnp::makeRpcClient(*net));
              capnp::MallocMessageBuilder vat_msg(8);
              auto vat = vat_msg.initRoot<VatId>();
              vat.setSide(capnp::rpc::twoparty::Side::SERVER);
              node = sys->bootstrap(vat).castAs<rpc::Node>();
              auto req = node.helloRequest();
              req.setVersion(rpc::SCHEMA_VERSION);
              req.setReplicas(core.cfg.replicas);
              req.setInCluster(core.seen_others);
              req.setStartedAtMs(core.started_at_ms);
              req.setSentAtMs(steady_now_ms());  // (node_server::hello: the first arrival)
              to_rpc(self, req.initFrom());
              return req.send();
            })
            .then([this](capnp::Response<rpc::Node::HelloResults>&& r) {
              KJ_REQUIRE(r.getVersion() == rpc::SCHEMA_VERSION,
                         "schema version mismatch: the peer answered another version",
                         r.getVersion(), rpc::SCHEMA_VERSION);
              if (r.getReplicas() != 0 && r.getReplicas() != core.cfg.replicas) {
                auto peer = r.getSelf();
                core.replicas_conflict(peer.getName().cStr(), address, r.getReplicas(),
                                       r.getInCluster(), r.getStartedAtMs());
                kj::throwFatalException(KJ_EXCEPTION(
                  FAILED, kj::str(replicas_mismatch, ": ", peer.getName(),
                                  " keeps --replicas ", r.getReplicas(), ", ",
                                  core.cfg.node_name, " keeps ", core.cfg.replicas)));
              }
            });
    auto limit = core.timer.afterDelay(core.cfg.rpc_timeout_ms * kj::MILLISECONDS)
                     .then([this]() -> kj::Promise<void> {
                       core.mark_unreachable(address);
                       if (connected)  // (what a memcached port does with the hello's bytes)
                         return KJ_EXCEPTION(DISCONNECTED, "connected, but hello was not "
                                                           "answered in time", address);
                       return KJ_EXCEPTION(DISCONNECTED, "connect timed out", address);
                     });
    task = connecting.exclusiveJoin(kj::mv(limit))
               .then([this]() {
                 st = state::ready;
                 core.backoff[address] = backoff_state{};
                 core.connect_errors.erase(address);
                 core.heard_from(address);
                 for (auto& w : waiters)
                   w->fulfill(rpc::Node::Client(node));
                 waiters.clear();
                 return net->onDisconnect();
               })
               .then([this]() { fail(KJ_EXCEPTION(DISCONNECTED, "peer disconnected", address)); },
                     [this](kj::Exception&& e) { fail(e); })
               .eagerlyEvaluate(nullptr);
  }

  impl& core;
  std::string address;
  uint64_t id;
  state st = state::connecting;
  bool connected = false;  // the TCP connection (and TLS) is up; hello may still be unanswered
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> net;
  kj::Own<capnp::RpcSystem<VatId>> sys;
  rpc::Node::Client node{nullptr};
  std::vector<kj::Own<kj::PromiseFulfiller<rpc::Node::Client>>> waiters;
  kj::Promise<void> task = nullptr;  // destroyed first: it refers to the members above
};

kj::Promise<rpc::Node::Client> service::impl::get_conn(const std::string& addr) {
  if (stopping)
    return KJ_EXCEPTION(DISCONNECTED, "cluster service stopping");
  auto it = pool.find(addr);
  if (it != pool.end()) {
    auto& c = *it->second;
    if (c.st == client_conn::state::ready)
      return rpc::Node::Client(c.node);
    if (c.st == client_conn::state::connecting) {
      auto paf = kj::newPromiseAndFulfiller<rpc::Node::Client>();
      c.waiters.push_back(kj::mv(paf.fulfiller));
      return kj::mv(paf.promise);
    }
    auto b = backoff.find(addr);
    if (b != backoff.end() && now_ms() < b->second.retry_at)
      return KJ_EXCEPTION(DISCONNECTED, "peer unreachable (reconnect backing off)", addr);
  }
  auto paf = kj::newPromiseAndFulfiller<rpc::Node::Client>();
  std::vector<kj::Own<kj::PromiseFulfiller<rpc::Node::Client>>> waiters;
  waiters.push_back(kj::mv(paf.fulfiller));
  dial(addr, kj::mv(waiters));
  return kj::mv(paf.promise);
}

void service::impl::dial(const std::string& addr,
                         std::vector<kj::Own<kj::PromiseFulfiller<rpc::Node::Client>>> waiters) {
  if (auto it = pool.find(addr); it != pool.end()) {
    // Destroyed outside of its own callbacks (and of whatever callback runs now); a connect
    // still under way is cancelled with it.
    tasks->add(kj::evalLater([] {}).attach(kj::mv(it->second)));
    pool.erase(it);
  }
  auto c = kj::heap<client_conn>(*this, addr, next_conn_id++);
  c->waiters = kj::mv(waiters);
  auto& ref = *c;
  pool.emplace(addr, kj::mv(c));
  ref.start();
}

kj::Promise<void> service::impl::watchdog(std::shared_ptr<call_progress> progress,
                                          uint64_t seen, uint64_t peer_seen, uint64_t since,
                                          bool last_look) {
  // The last look comes 1 ms after a timeout would fire: after a stall of this thread the
  // timer may run before the messages that came meanwhile, which are taken first now.
  auto delay = last_look ? 1 * kj::MILLISECONDS : cfg.rpc_timeout_ms * kj::MILLISECONDS;
  return timer.afterDelay(delay).then(
      [this, progress, seen, peer_seen, since, last_look]() -> kj::Promise<void> {
        uint64_t now = now_ms();
        uint64_t peer = *progress->peer;
        if (progress->own != seen)
          return watchdog(progress, progress->own, peer, now, false);
        if (progress->waits_for_peer && peer != peer_seen &&
            now - since < call_limit_ms())
          return watchdog(progress, seen, peer, since, false);
        if (!last_look)
          return watchdog(progress, seen, peer_seen, since, true);
        return kj::READY_NOW;
      });
}

template <typename T>
kj::Promise<T> service::impl::bounded(kj::Promise<T> p, std::shared_ptr<call_progress> progress,
                                      kj::Function<T(bool)> fallback) {
  auto fb = kj::heap<kj::Function<T(bool)>>(kj::mv(fallback));
  auto& f = *fb;
  uint64_t seen = progress->own, peer_seen = *progress->peer;
  return p.catch_([&f](kj::Exception&&) { return f(false); })
      .exclusiveJoin(watchdog(std::move(progress), seen, peer_seen, now_ms(), false)
                         .then([&f]() { return f(true); }))
      .attach(kj::mv(fb));
}

namespace {

// One Node.execute of `ops` (values inline); with `with_sink`, values over the inline limit
// are streamed to a collect_sink and assembled before the promise resolves. Without, such a
// result comes back `streamed` with an empty value.
kj::Promise<storage::result_batch> execute_call(rpc::Node::Client& node,
                                                const storage::op_batch& ops, rpc::Origin origin,
                                                bool wait_replicas, bool with_sink,
                                                std::shared_ptr<call_progress> progress,
                                                uint64_t ring = 0, call_stamp stamp = {}) {
  auto req = node.executeRequest(ops_size(ops));
  auto list = req.initOps(static_cast<unsigned>(ops.size()));
  for (size_t i = 0; i < ops.size(); ++i)
    to_rpc(ops[i], list[static_cast<unsigned>(i)]);
  req.setOrigin(origin);
  req.setWaitReplicas(wait_replicas);
  req.setPark(!with_sink);  // a value streamed without a sink is read again (send_execute)
  req.setRing(ring);
  req.setSentAtMs(stamp.sent_ms);
  req.setTimeoutMs(stamp.timeout_ms);
  auto st = std::make_shared<collect_state>();
  st->progress = progress;
  if (with_sink)
    req.setSink(kj::heap<collect_sink>(st));
  size_t ops_n = ops.size();
  return req.send().then([st, with_sink, ops_n](capnp::Response<rpc::Node::ExecuteResults>&& r)
                             -> kj::Promise<storage::result_batch> {
    st->progress->bump();  // (an answer: the peer is at work, for the calls behind this one)
    auto list = r.getResults();
    KJ_REQUIRE(list.size() == ops_n, "a data call's results do not match its ops", list.size(),
               ops_n);
    storage::result_batch rs;
    rs.reserve(list.size());
    for (auto x : list) {
      rs.push_back(from_rpc(x));
      if (x.getStreamed() && with_sink)
        st->expected[static_cast<uint32_t>(rs.size() - 1)] = x.getValueSize();
    }
    auto assemble = [st, rs = std::move(rs)]() mutable {
      for (auto& [i, size] : st->expected) {
        auto it = st->values.find(i);
        std::string v = it == st->values.end() ? std::string() : std::move(it->second);
        rs[i].value = storage::pinned_slice::from_memory(
            std::make_shared<const std::string>(std::move(v)));
      }
      return std::move(rs);
    };
    if (st->complete())
      return assemble();
    auto paf = kj::newPromiseAndFulfiller<void>();
    st->waiter = kj::mv(paf.fulfiller);
    return paf.promise.then(kj::mv(assemble));
  });
}

} // namespace

kj::Promise<storage::result_batch> service::impl::remote_execute(const std::string& addr,
                                                                 storage::op_batch ops,
                                                                 rpc::Origin origin,
                                                                 bool wait_replicas,
                                                                 uint64_t placed_by) {
  if (origin != rpc::Origin::CLIENT)
    placed_by = 0;
  else if (placed_by == 0 && ring_)
    placed_by = ring_->placement();  // (now: a call queued below may leave after a change)
  bool barrier = false;
  for (auto& o : ops)
    barrier |= o.value.size() > inline_value_limit;
  // Replicated state keeps its own order, apart from forwarded client ops: with
  // --replication-ack all a client write's call answers only after its primary's copies were
  // acknowledged, so a copy queued behind such a call (an upload is a barrier) closes a cycle
  // when two members forward large writes to each other, until the RPC timeout.
  auto& orders = send_orders[origin == rpc::Origin::REPLICA ? 1 : 0];
  auto it = orders.find(addr);
  if (it == orders.end() && !barrier)
    return send_execute(addr, std::move(ops), origin, wait_replicas, placed_by);  // common
  auto& order = orders[addr];
  kj::Promise<void> before = kj::READY_NOW;
  kj::Promise<void> barrier_done = kj::READY_NOW;  // the same point, for `next` below
  KJ_IF_MAYBE (tail, order.tail) {
    before = tail->addBranch().catch_([](kj::Exception&&) {});
    barrier_done = tail->addBranch().catch_([](kj::Exception&&) {});
  }
  auto sent = kj::newPromiseAndFulfiller<void>();
  kj::Promise<storage::result_batch> call =
      before.then([this, addr, ops = std::move(ops), origin, wait_replicas, placed_by,
                   f = kj::mv(sent.fulfiller)]() mutable {
        auto p = send_execute(addr, std::move(ops), origin, wait_replicas, placed_by);
        f->fulfill();
        return p;
      });
  kj::Promise<void> next = nullptr;
  if (barrier) {
    // Later calls wait for this one's answer (an upload runs at its finish, a split batch
    // part after part: a call sent meanwhile would run first).
    auto answered = call.fork();
    call = answered.addBranch();
    next = answered.addBranch().then([](storage::result_batch&&) {}, [](kj::Exception&&) {});
  } else {
    // Queued behind a barrier: later calls follow it out, and still wait for the barrier
    // should this call be dropped unsent (its fulfiller destroyed).
    next = barrier_done.then([s = kj::mv(sent.promise)]() mutable {
      return s.catch_([](kj::Exception&&) {});
    });
  }
  order.tail = next.fork();
  uint64_t gen = ++order.gen;
  KJ_IF_MAYBE (tail, order.tail) {
    tasks->add(tail->addBranch().then([&orders, addr, gen] {
      auto o = orders.find(addr);
      if (o != orders.end() && o->second.gen == gen)
        orders.erase(o);  // nothing queued behind it: calls go straight out again
    }));
  }
  return call;
}

kj::Promise<storage::result_batch> service::impl::send_execute(const std::string& addr,
                                                               storage::op_batch ops,
                                                               rpc::Origin origin,
                                                               bool wait_replicas,
                                                               uint64_t placed_by) {
  size_t n = ops.size();
  if (n == 0)
    return storage::result_batch{};
  // (Here, not before send_orders: a part of a split batch, or a call that waited behind a
  // barrier, fails at once too.)
  if (origin != rpc::Origin::REPLICA && failing_fast(addr))
    return unavailable(n);  // (as a data link's: reads fail over, writes refuse)
  bool large = false, reads = false;
  size_t inline_bytes = 0;
  for (auto& o : ops) {
    large |= o.value.size() > inline_value_limit;
    reads |= storage::reads_value(o);
    inline_bytes += inline_bytes_of(o);
  }
  if (large && reads) {
    // A value too large to inline goes by upload, whose reads come back streamed and empty
    // (only the execute path reads them again with a sink): the batch goes as consecutive
    // calls, each either all value reads or none, one after the other (in order).
    auto runs = std::make_shared<std::vector<storage::op_batch>>();
    for (auto& o : ops) {
      if (runs->empty() || storage::reads_value(runs->back().front()) != storage::reads_value(o))
        runs->emplace_back();
      runs->back().push_back(std::move(o));
    }
    return run_in_order(addr, runs, 0, origin, wait_replicas, placed_by, {});
  }
  if (n > call_max_ops || inline_bytes > call_max_bytes) {
    // Split, so that no message (the call, or its results: at most call_max_ops values
    // inline) comes near the readers' size limit (rpc_reader_options). In order: calls that
    // run on arrival may go together; with an upload among them, one after the other.
    auto runs = std::make_shared<std::vector<storage::op_batch>>();
    size_t first = 0;
    for (size_t end : call_part_ends(ops)) {
      runs->emplace_back(std::make_move_iterator(ops.begin() + first),
                         std::make_move_iterator(ops.begin() + end));
      first = end;
    }
    if (large)
      return run_in_order(addr, runs, 0, origin, wait_replicas, placed_by, {});
    kj::Vector<kj::Promise<storage::result_batch>> parts;
    for (auto& part : *runs)
      parts.add(send_execute(addr, std::move(part), origin, wait_replicas, placed_by));
    return kj::joinPromises(parts.releaseAsArray()).then([](kj::Array<storage::result_batch> rss) {
      storage::result_batch all;
      for (auto& rs : rss)
        all.insert(all.end(), std::make_move_iterator(rs.begin()),
                   std::make_move_iterator(rs.end()));
      return all;
    });
  }
  auto progress = std::make_shared<call_progress>();
  progress->peer = peer_progress(addr);
  // Replicated state keeps the bound of one timeout without progress of its own: the
  // replicator gives up on a copy after its phase's deadline (timeout + 1 s, replicator.hpp),
  // and a copy in flight longer could land after newer state sent once it was given up on.
  progress->waits_for_peer = origin != rpc::Origin::REPLICA;
  auto shared_ops = std::make_shared<storage::op_batch>(std::move(ops));
  const uint64_t started = steady_now_ms();  // (about the watchdog's start: bounded, below)
  // The member's answers heard when the call left (answers_heard: the greeting of the
  // connection it waited for came before it).
  progress->answers = answers_from(addr);
  // A member's client ops this node places again: the member gives up on them at answer_by_ms
  // (the earliest of the batch), and the call may take no longer.
  uint64_t answer_by = 0;
  if (origin == rpc::Origin::CLIENT)
    for (const auto& o : *shared_ops)
      if (o.answer_by_ms != 0 && (answer_by == 0 || o.answer_by_ms < answer_by))
        answer_by = o.answer_by_ms;
  auto call = get_conn(addr).then([this, shared_ops, origin, large, progress, wait_replicas,
                                   placed_by, started, addr, answer_by, n](
                                      rpc::Node::Client node) -> kj::Promise<storage::result_batch> {
    progress->answers = answers_from(addr);
    auto& ops = *shared_ops;
    sent.add(ops.size());  // counted once there is a connection to send it on
    // Stamped (cluster/arrival_clock.hpp) with what is left of the timeout after the connect:
    // a member that reads it later than that refuses it (client ops: this node may have
    // answered its client meanwhile).
    const uint64_t now = steady_now_ms();
    uint64_t budget = std::max<uint64_t>(
      cfg.rpc_timeout_ms - std::min<uint64_t>(now - started, cfg.rpc_timeout_ms), 1);
    if (answer_by != 0) {
      if (now >= answer_by) {  // its sender gave up on it: it must not run now
        ++late_calls_refused;
        return unavailable(n);
      }
      budget = std::min(budget, answer_by - now);
    }
    progress->sent = true;
    const call_stamp stamp{now, static_cast<uint32_t>(budget)};
    if (!large) {
      // A sink costs a capability per call (its own messages): attach one only when a value
      // may be larger than the inline limit AND the op may not simply be sent again (a get
      // that writes: touch, vivify, recache). Plain reads go without; a value too large to
      // inline then comes back `streamed` and empty, and those reads are repeated with a sink.
      bool need_sink = false;  // (and a re-read of a parked value: its value comes now)
      for (auto& o : ops)
        need_sink |= storage::reads_value(o) && (storage::changes_item(o) || o.parked != 0);
      // (The placement these client ops were placed by: the member tells a lagging view.)
      auto first =
        execute_call(node, ops, origin, wait_replicas, need_sink, progress, placed_by, stamp);
      if (need_sink)
        return first;
      return first.then([node, shared_ops, origin, wait_replicas, progress](
                            storage::result_batch rs) mutable -> kj::Promise<storage::result_batch> {
        std::vector<size_t> again;
        storage::op_batch reads = rereads_of(*shared_ops, rs, again);
        if (again.empty())
          return kj::mv(rs);
        // As a warm read: the member neither counts it nor takes it for an access (the first
        // read was both; merge_reread keeps what that one saw).
        return execute_call(node, reads, rpc::Origin::WARM, wait_replicas, true, progress)
            .then([rs = kj::mv(rs), again = std::move(again)](storage::result_batch big) mutable {
              for (size_t j = 0; j < again.size() && j < big.size(); ++j)
                storage::merge_reread(rs[again[j]], std::move(big[j]));
              return kj::mv(rs);
            });
      });
    }
    // Large stores: the values that do not fit inline go through the upload sink.
    auto req = node.uploadRequest();
    req.setRing(placed_by);
    req.setSentAtMs(stamp.sent_ms);
    req.setTimeoutMs(stamp.timeout_ms);
    auto list = req.initOps(static_cast<unsigned>(ops.size()));
    auto jobs = std::make_shared<std::vector<stream_job>>();
    for (size_t i = 0; i < ops.size(); ++i) {
      bool big = ops[i].value.size() > inline_value_limit;
      to_rpc(ops[i], list[static_cast<unsigned>(i)], !big);
      if (big)
        jobs->push_back({static_cast<uint32_t>(i), ops[i].value});
    }
    req.setOrigin(origin);
    req.setWaitReplicas(wait_replicas);
    auto sent = req.send();
    rpc::ValueSink::Client sink = sent.getSink();
    return stream_out(sink, shared_ops, jobs, 0, 0, progress)
        .then([this, sink]() mutable {
          auto fin = sink.finishRequest();
          fin.setSentAtMs(steady_now_ms());  // (the stores run at finish: checked there too)
          fin.setTimeoutMs(cfg.rpc_timeout_ms);
          return fin.send();
        })
        .then([progress](capnp::Response<rpc::ValueSink::FinishResults>&& r) {
          progress->bump();
          storage::result_batch rs;
          for (auto x : r.getResults())
            rs.push_back(from_rpc(x));
          return rs;
        })
        .attach(kj::mv(sent));
  }).then([this, addr, progress](storage::result_batch rs) {
    // An answer is a word from the member: it ends an unreachable mark as a probe's does
    // (replicated state still goes there meanwhile; the mark stayed until the next client
    // call a second on made a probe). (Its own progress counts for the others' watchdogs.)
    if (progress->sent && !unreachable.empty())
      heard_from(addr);
    return rs;
  });
  // The watchdog ended it without a word from the member (of this call or another to it, or
  // any answer since it was sent: a call from before a pause that times out once the member
  // answered a probe would mark it again, and the calls of the next probe's round trip would
  // fail): silent, unless it waited for the member's replicas.
  const uint64_t heard = *progress->peer;
  return bounded<storage::result_batch>(
             kj::mv(call), progress,
             [this, n, addr, progress, heard, wait_replicas](bool timed_out) {
               if (timed_out && !wait_replicas && progress->own == 0 &&
                   *progress->peer == heard && answers_from(addr) == progress->answers)
                 mark_unreachable(addr);
               return unavailable(n);
             })
      .then([n](storage::result_batch rs) { return rs.size() == n ? kj::mv(rs) : unavailable(n); });
}

bool service::impl::late_call(arrival_clock& clock, const std::string& member,
                              rpc::Origin origin, uint64_t sent_ms, uint32_t timeout_ms,
                              uint64_t* answer_by) {
  if (answer_by)
    *answer_by = 0;
  if (sent_ms == 0)
    return false;
  const uint64_t arrived = steady_now_ms();
  const uint64_t late = clock.late_ms(sent_ms, arrived);
  if (origin != rpc::Origin::CLIENT)
    return false;
  if (!refuse_late(late, timeout_ms, false, queued_limit_factor)) {
    if (answer_by)
      *answer_by = answer_deadline(arrived, late, timeout_ms, false, queued_limit_factor);
    return false;
  }
  ++late_calls_refused;
  const uint64_t now = now_ms();
  if (late_logged_ms != 0 && now - late_logged_ms < 10000) {
    ++late_unlogged;
    return true;
  }
  log_line("bifrost cluster: refused a data call from %s that came %llu ms later than the "
           "quickest (its RPC timeout: %u ms; this node stopped, or the network held it)"
           "%s\n",
           member.c_str(), static_cast<unsigned long long>(late), timeout_ms,
           late_unlogged == 0
             ? ""
             : (" (and " + std::to_string(late_unlogged) + " more in the 10 s before)").c_str());
  late_logged_ms = now;
  late_unlogged = 0;
  return true;
}

void service::impl::mark_unreachable(const std::string& addr) {
  // (Members only: a seed or a forgotten member's address that drops packets is no one's
  // data calls' concern, and reap_peers would forget it at once, to mark and log it again.)
  if (stopping || !members.has_address(addr) || !unreachable.try_emplace(addr).second)
    return;
  log_line("bifrost cluster: member at %s said nothing for %u ms; unreachable: data calls "
           "to it fail at once until it answers again\n",
           addr.c_str(), static_cast<unsigned>(cfg.rpc_timeout_ms));
}

void service::impl::heard_from(const std::string& addr) {
  if (peer_progress_of.count(addr) != 0)
    ++answers_heard[addr];
  if (unreachable.erase(addr) != 0)
    log_line("bifrost cluster: member at %s answers again\n", addr.c_str());
}

bool service::impl::failing_fast(const std::string& addr) {
  auto u = unreachable.find(addr);
  if (u == unreachable.end())
    return false;
  ++calls_failed_fast;
  if (now_ms() >= u->second.probe_at)
    probe_now(addr, u->second);
  return true;
}

void service::impl::probe_now(const std::string& addr, unreachable_state& u) {
  if (u.probe != 0 || stopping)
    return;
  u.probe = next_probe++;
  tasks->add(probe(addr, u.probe));
}

kj::Promise<void> service::impl::probe(const std::string& addr, uint64_t id) {
  auto limit = timer.afterDelay(cfg.rpc_timeout_ms * kj::MILLISECONDS)
                 .then([]() -> kj::Promise<void> {
                   return KJ_EXCEPTION(DISCONNECTED, "probe not answered in time");
                 });
  return get_conn(addr)
    .then([](rpc::Node::Client node) { return node.ringRequest().send().ignoreResult(); })
    .exclusiveJoin(kj::mv(limit))
    .then([this, addr]() { heard_from(addr); },
      [this, addr, id](kj::Exception&&) {
        auto v = unreachable.find(addr);
        if (v == unreachable.end() || v->second.probe != id)
          return;  // (ended meanwhile; marked again since: another probe's)
        v->second.probe = 0;
        v->second.probe_at = now_ms() + 1000;
        // Up while nothing crosses (a cut): the next probe dials anew.
        auto it = pool.find(addr);
        if (it != pool.end() && it->second->st == client_conn::state::ready)
          it->second->fail(KJ_EXCEPTION(DISCONNECTED, "member silent for the RPC timeout", addr));
      });
}

kj::Promise<storage::result_batch> service::impl::run_in_order(
    const std::string& addr, std::shared_ptr<std::vector<storage::op_batch>> runs, size_t i,
    rpc::Origin origin, bool wait_replicas, uint64_t placed_by, storage::result_batch done) {
  if (i == runs->size())
    return kj::mv(done);
  return send_execute(addr, std::move((*runs)[i]), origin, wait_replicas, placed_by)
      .then([this, addr, runs, i, origin, wait_replicas, placed_by,
             done = std::move(done)](storage::result_batch rs) mutable {
        done.insert(done.end(), std::make_move_iterator(rs.begin()),
                    std::make_move_iterator(rs.end()));
        return run_in_order(addr, runs, i + 1, origin, wait_replicas, placed_by,
                            std::move(done));
      });
}

void service::impl::peer_call(const std::string& name, rpc::Origin origin, uint64_t tag,
                              storage::op_batch ops, caf::actor sender, caf::actor self,
                              uint64_t placed_by) {
  size_t n = ops.size();
  auto* m = members.find(name);
  // A member that left gracefully still serves until it exits (a connection may route with
  // the ring from before its leave for a moment): it executes the ops, and replicates writes
  // to the owners of its own ring, which no longer holds it. A dead member is not tried.
  if (stopping || !m || m->state == member_state::dead || m->address.empty()) {
    // Nothing was sent: the connection may place the ops again once its ring catches up
    // with this membership change (actors/cluster_route.hpp). A store's value rides back so
    // that the op can be sent again whole.
    if (sender) {
      auto rs = unavailable(n, storage::status::not_sent);
      for (size_t i = 0; i < n; ++i)
        if (ops[i].kind == storage::op_kind::store)
          rs[i].value = storage::pinned_slice::from_memory(
            std::make_shared<const std::string>(std::move(ops[i].value)));
      caf::send_as(self, sender, actors::result_atom::value, tag, std::move(rs));
    }
    return;
  }
  uint64_t id = next_call++;
  calls.emplace(id, call_info{std::move(sender), std::move(self), tag, n});
  tasks->add(remote_execute(m->address, std::move(ops), origin,
                            origin == rpc::Origin::CLIENT && cfg.wait_replicas, placed_by)
                 .then([this, id](storage::result_batch rs) { finish_call(id, std::move(rs)); }));
}

void service::impl::finish_call(uint64_t id, storage::result_batch&& r) {
  auto it = calls.find(id);
  if (it == calls.end())
    return;
  auto c = std::move(it->second);
  calls.erase(it);
  if (c.sender)
    caf::send_as(c.self, c.sender, actors::result_atom::value, c.tag, std::move(r));
}

// -- local execution ----------------------------------------------------------------------------

// Puts the results of per-destination groups back in request order: group g answered the
// ops whose original indexes are idx[g]; a missing answer is `unavailable`.
template <class Index>
storage::result_batch scatter_results(size_t n, const Index& idx,
                                      kj::Array<storage::result_batch>& parts) {
  storage::result_batch rs(n);
  for (size_t g = 0; g < parts.size(); ++g) {
    auto& ix = idx[g];
    for (size_t j = 0; j < ix.size(); ++j) {
      if (j < parts[g].size())
        rs[ix[j]] = std::move(parts[g][j]);
      else
        rs[ix[j]].st = storage::status::unavailable;
    }
  }
  return rs;
}

kj::Promise<void> service::impl::local_stats(std::shared_ptr<service::stat_list> out) {
  if (!stats)
    return kj::READY_NOW;
  // The answer is written by whatever thread calls `reply`, then handed over by the
  // cross-thread fulfiller; `out` is written on this loop only, and only if it came in time.
  auto got = std::make_shared<service::stat_list>();
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto reply =
    std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
  stats([reply, got](service::stat_list st) {
    *got = std::move(st);
    (*reply)->fulfill();
  });
  return paf.promise.then([got, out] { *out = std::move(*got); })
    .exclusiveJoin(timer.afterDelay(1 * kj::SECONDS))
    .catch_([](kj::Exception&&) {});
}

kj::Promise<storage::result_batch> service::impl::parked_or_local(storage::op_batch ops) {
  storage::result_batch found(ops.size());
  std::vector<size_t> run;  // indexes of the ops that run at the shards
  for (size_t i = 0; i < ops.size(); ++i) {
    auto& o = ops[i];
    const bool reread = o.parked != 0 && o.kind == storage::op_kind::get;
    if (reread && cfg.parked && cfg.parked->take(o.parked, found[i]))
      ;  // the result it re-reads
    else if (reread && storage::parked_values::strict(o.parked))
      found[i] = storage::result::of(storage::status::unavailable);  // not our copy to read
    else
      run.push_back(i);
    found[i].parked = 0;
  }
  if (run.size() == ops.size())
    return local_execute(std::move(ops));
  if (run.empty())
    return kj::mv(found);
  storage::op_batch rest;
  rest.reserve(run.size());
  for (auto i : run)
    rest.push_back(std::move(ops[i]));
  return local_execute(std::move(rest))
      .then([found = std::move(found), run = std::move(run)](storage::result_batch rs) mutable {
        for (size_t j = 0; j < run.size(); ++j)
          found[run[j]] = j < rs.size() ? std::move(rs[j])
                                        : storage::result::of(storage::status::unavailable);
        return kj::mv(found);
      });
}

kj::Promise<storage::result_batch> service::impl::local_primary(storage::op_batch ops,
                                                                rpc::Origin origin, bool wait) {
  if (origin != rpc::Origin::CLIENT || cfg.replicas <= 1 || !replicator)
    return local_execute(std::move(ops));  // (nothing to replicate: no probes kept)
  // What replicate_results reads of each op once its result comes, without its value.
  auto probes = std::make_shared<storage::op_batch>();
  probes->reserve(ops.size());
  for (const auto& o : ops)
    probes->push_back(storage::change_probe(o));
  return local_execute(std::move(ops), probes).then([this, probes, origin, wait](storage::result_batch rs) {
    return replicate_results(*this, *probes, std::move(rs), origin, wait);
  });
}

kj::Promise<storage::result_batch> service::impl::local_execute(
  storage::op_batch ops, std::shared_ptr<const storage::op_batch> probes) {
  size_t n = ops.size();
  if (n == 0)
    return storage::result_batch{};
  if (shards.empty() || stopping)
    return unavailable(n);
  struct group {
    std::vector<size_t> idx;
    storage::op_batch ops;
  };
  std::vector<group> groups(shards.size());
  for (size_t i = 0; i < n; ++i) {
    if (ops[i].kind == storage::op_kind::flush) {  // every shard flushes
      for (auto& g : groups) {
        g.idx.push_back(i);
        g.ops.push_back(ops[i]);
      }
      continue;
    }
    auto& g = groups[shards.size() == 1 ? 0 : actors::key_hash(ops[i].key) % shards.size()];
    g.idx.push_back(i);
    g.ops.push_back(std::move(ops[i]));
  }
  auto idx = std::make_shared<std::vector<std::vector<size_t>>>();
  // Sized to the shards that got ops: a KJ array builder must be filled exactly (debug builds
  // check it; release builds would silently return a shorter array).
  size_t used = 0;
  for (auto& g : groups)
    used += g.ops.empty() ? 0 : 1;
  auto promises = kj::heapArrayBuilder<kj::Promise<storage::result_batch>>(used);
  for (size_t s = 0; s < groups.size(); ++s) {
    if (groups[s].ops.empty())
      continue;
    uint64_t tag = next_tag++;
    size_t m = groups[s].ops.size();
    auto paf = kj::newPromiseAndFulfiller<storage::result_batch>();
    pending.emplace(tag, kj::mv(paf.fulfiller));
    caf::send_as(bridge, shards[s], actors::exec_atom::value, tag, std::move(groups[s].ops));
    const size_t group = idx->size();
    idx->push_back(std::move(groups[s].idx));
    auto limit = timer.afterDelay(cfg.rpc_timeout_ms * kj::MILLISECONDS)
                   .then([this, tag, m, probes, idx, group] {
      pending.erase(tag);
      if (probes && !stopping) {  // this group's probes wait for its late result
        storage::op_batch late;
        late.reserve(m);
        for (size_t i : (*idx)[group])
          late.push_back((*probes)[i]);
        late_probes.emplace(tag, std::move(late));
      }
      return unavailable(m);
    });
    promises.add(paf.promise.exclusiveJoin(kj::mv(limit)));
  }
  return kj::joinPromises(promises.finish())
      .then([n, idx](kj::Array<storage::result_batch> parts) {
        return scatter_results(n, *idx, parts);
      });
}

// -- replication --------------------------------------------------------------------------------

kj::Promise<bool> service::impl::replicate_once(std::vector<std::string> keys) {
  if (stopping || !replicator)
    return false;
  // The replicator answers within two bounded phases; this only guards against a lost answer
  // (a second more than the replicator's own bound, so that it never fires first).
  return ask_replicator(replicate_bound_ms(cfg.rpc_timeout_ms) + 1000,
                        actors::replicate_atom::value, std::move(keys));
}

kj::Promise<storage::result_batch> service::impl::routed_execute(storage::op_batch ops) {
  size_t n = ops.size();
  if (n == 0 || stopping || (view_ && view_->joining))  // (joining: as for a client)
    return unavailable(n);
  uint32_t self = ring_self();
  routed_groups groups;
  auto placed = std::make_shared<routed_ops>();
  placed->epoch = ring_ ? ring_->epoch() : 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t id = self;
    ring::member_id owner;
    if (ring_ && ops[i].kind != storage::op_kind::flush &&
        ring_->live_owner_ids(ring::key_hash(ops[i].key), 1, &owner) == 1)
      id = owner;
    placed->probes.push_back(storage::change_probe(ops[i]));
    placed->probes.back().get_value = ops[i].get_value;
    placed->owners.push_back(id);
    if (ops[i].kind == storage::op_kind::get && !storage::changes_item(ops[i]))
      placed->reads.emplace_back(i, ops[i]);
    add_to_group(groups, id, i, std::move(ops[i]));
  }
  auto idx = std::make_shared<std::vector<std::vector<size_t>>>();
  return run_groups(std::move(groups), idx)
      .then([this, n, idx, placed](kj::Array<storage::result_batch> parts) {
        placed->results = scatter_results(n, *idx, parts);
        return fail_over_reads(placed, 1)
            .then([this, placed] { return in_window(placed); })
            .then([placed] { return std::move(placed->results); });
      });
}

kj::Promise<void> service::impl::fail_over_reads(std::shared_ptr<routed_ops> r, size_t tries) {
  constexpr size_t max_tries = 16;  // (as a connection's: actors::place)
  if (!ring_ || ring_->epoch() != r->epoch || stopping || tries >= max_tries)
    return kj::READY_NOW;
  routed_groups groups;
  for (const auto& [i, o] : r->reads) {
    if (i >= r->results.size() || r->results[i].st != storage::status::unavailable)
      continue;
    ring::member_id owners[max_tries];
    if (ring_->live_owner_ids(ring::key_hash(o.key), tries + 1, owners) <= tries)
      continue;  // no next live owner: unavailable it stays
    r->owners[i] = owners[tries];
    add_to_group(groups, owners[tries], i, o);
  }
  if (groups.empty())
    return kj::READY_NOW;
  auto idx = std::make_shared<std::vector<std::vector<size_t>>>();
  return run_groups(std::move(groups), idx)
      .then([this, r, idx, tries](kj::Array<storage::result_batch> parts) {
        for (size_t g = 0; g < parts.size(); ++g)
          for (size_t k = 0; k < (*idx)[g].size() && k < parts[g].size(); ++k)
            r->results[(*idx)[g][k]] = std::move(parts[g][k]);
        return fail_over_reads(r, tries + 1);
      });
}

void service::impl::add_to_group(routed_groups& groups, uint32_t id, size_t i, storage::op o) {
  if (id != ring_self() && o.routed < 255)  // (stale placements: a bound on the hops)
    ++o.routed;
  auto& g = groups[id];
  g.idx.push_back(i);
  g.ops.push_back(std::move(o));
}

kj::Promise<kj::Array<storage::result_batch>> service::impl::run_groups(
  routed_groups groups, std::shared_ptr<std::vector<std::vector<size_t>>> idx) {
  const uint32_t self = ring_self();
  auto promises = kj::heapArrayBuilder<kj::Promise<storage::result_batch>>(groups.size());
  for (auto& [id, g] : groups) {
    idx->push_back(std::move(g.idx));
    if (id == self) {
      promises.add(local_primary(std::move(g.ops), rpc::Origin::CLIENT, cfg.wait_replicas));
    } else {
      promises.add(remote_execute(ring_->member(id).address, std::move(g.ops),
                                  rpc::Origin::CLIENT, cfg.wait_replicas));  // (ring_ named)
    }
  }
  return kj::joinPromises(promises.finish());
}

kj::Promise<storage::result_batch> service::impl::primary_execute(storage::op_batch ops,
                                                                  uint64_t sender_ring,
                                                                  bool wait) {
  std::shared_ptr<const actors::cluster_view> view = view_;
  const size_t n = ops.size();
  if (!view || !actors::placed_by_replaced_ring(*view, sender_ring)) {  // the common case
    if (refuses(ops))
      return unavailable(n);
    return local_primary(std::move(ops), rpc::Origin::CLIENT, wait);
  }
  auto idx = std::make_shared<std::vector<std::vector<size_t>>>(2);  // [0] here, [1] again
  storage::op_batch parts[2];
  std::vector<size_t> flushes;  // (indexes in ops)
  for (size_t i = 0; i < n; ++i) {
    int g = actors::place_again(*view, ops[i]) ? 1 : 0;
    if (ops[i].kind == storage::op_kind::flush)
      flushes.push_back(i);
    (*idx)[g].push_back(i);
    parts[g].push_back(std::move(ops[i]));
  }
  if (refuses(parts[0]))
    return unavailable(n);
  auto relayed = flushes.empty() ? kj::Promise<bool>(true)
                                 : relay_flush(*view, sender_ring, parts[0]);
  kj::Promise<storage::result_batch> done = nullptr;
  if (parts[1].empty()) {
    done = local_primary(std::move(parts[0]), rpc::Origin::CLIENT, wait);
  } else {
    auto promises = kj::heapArrayBuilder<kj::Promise<storage::result_batch>>(2);
    promises.add(local_primary(std::move(parts[0]), rpc::Origin::CLIENT, wait));  // (maybe none)
    promises.add(execute_again(std::move(parts[1])));
    done = kj::joinPromises(promises.finish()).then([n, idx](kj::Array<storage::result_batch> rs) {
      return scatter_results(n, *idx, rs);
    });
  }
  if (flushes.empty())
    return done;
  return done.then([relayed = kj::mv(relayed), flushes = std::move(flushes)](
                     storage::result_batch rs) mutable {
    return relayed.then([rs = std::move(rs), flushes](bool all) mutable {
      for (size_t i : flushes)  // (a member it did not reach may still hold what it held)
        if (!all && i < rs.size())
          rs[i].st = storage::status::unavailable;
      return std::move(rs);
    });
  });
}

kj::Promise<bool> service::impl::relay_flush(const actors::cluster_view& view,
                                             uint64_t sender_ring,
                                             const storage::op_batch& here) {
  if (!view.ring)
    return true;
  const actors::past_ring* theirs = nullptr;
  for (const auto& p : view.past)
    if (p.ring && p.ring->placement() == sender_ring)
      theirs = &p;
  storage::op_batch flushes;  // (every one, in order: several connections' may share a call)
  for (const auto& o : here)
    if (o.kind == storage::op_kind::flush && o.routed < actors::max_routed) {
      flushes.push_back(o);
      ++flushes.back().routed;  // (a bound on relays between views that disagree)
      flushes.back().answer_by_ms = 0;  // (this node's own duty: it flushed here already)
    }
  if (!theirs || flushes.empty())
    return true;
  // The member flushed the members of its ring; those of this node's ring that are not live
  // there (a node that joined since: the member's view lags) would keep their items, which
  // this node's ops placed again reach. They get the same flush (its cut: a shard applies
  // one flush once, however many members pass it on), before this node answers: the
  // member's later ops that go to this node by its data link wait for that answer (the link
  // never overtakes its call in flight), so those placed again land after it there.
  kj::Vector<kj::Promise<bool>> sent;
  const size_t count = flushes.size();
  for (ring::member_id id = 0; id < view.ring->size(); ++id) {
    const auto& m = view.ring->member(id);
    if (!m.alive || m.name == cfg.node_name)
      continue;
    const auto there = theirs->ring->find(m.name);
    if (there && theirs->ring->member(*there).alive)
      continue;
    sent.add(remote_execute(m.address, flushes, rpc::Origin::CLIENT)
               .then([count](storage::result_batch rs) {
                 bool ok = rs.size() == count;
                 for (const auto& r : rs)
                   ok = ok && r.st == storage::status::ok;
                 return ok;
               })
               .catch_([](kj::Exception&&) { return false; }));
  }
  if (sent.empty())
    return true;
  return kj::joinPromises(sent.releaseAsArray()).then([](kj::Array<bool> oks) {
    for (bool ok : oks)
      if (!ok)
        return false;
    return true;
  });
}

bool service::impl::refuses(const storage::op_batch& ops) const {
  if (!cfg.member_writes_refused)
    return false;
  const bool writes = std::any_of(ops.begin(), ops.end(),
                                  [](const storage::op& o) { return storage::changes_item(o); });
  return writes && cfg.member_writes_refused();
}

kj::Promise<storage::result_batch> service::impl::execute_again(storage::op_batch ops) {
  placed_again += ops.size();
  ++*again_in_flight;
  auto done = kj::defer([count = again_in_flight] { --*count; });  // answered, or dropped
  auto mark = [](storage::result_batch rs) {
    for (auto& r : rs)
      r.placed_again = true;
    return rs;
  };
  // An update or an add acts on the item the member's client knew, which this node held
  // before the ring change (or, inside a window, a past owner did) and the key's owner may
  // not have warmed yet: its copy goes first, as an add (never over a later write), as a
  // connection's warming does.
  storage::op_batch reads;
  std::vector<size_t> read_of;  // the op each read is for
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& o = ops[i];
    auto cls = actors::classify(o);
    if (cls != actors::warm_class::update && cls != actors::warm_class::insert)
      continue;
    storage::op r;
    r.kind = storage::op_kind::get;
    r.key = o.key;
    r.get_bump = false;   // not an access
    r.counted = false;
    r.keep_token = true;  // nor a reader of a win token
    reads.push_back(std::move(r));
    read_of.push_back(i);
  }
  if (reads.empty())
    return routed_execute(std::move(ops)).then(mark).attach(kj::mv(done));
  auto held = std::make_shared<storage::op_batch>(std::move(ops));
  auto looked = std::make_shared<routed_ops>();
  auto walked = std::make_shared<std::vector<bool>>(reads.size(), false);
  // (The member's call waits for the walk, the op at the owner and its in_window: a quarter
  // of the RPC timeout for this look.)
  const uint64_t until = now_ms() + cfg.rpc_timeout_ms / 4;
  if (view_ && !view_->past.empty())
    looked->probes = reads;
  return local_execute(std::move(reads))
      .then([this, looked, walked, until](storage::result_batch rs) {
        // Not here, inside a warming window: a past owner may hold it (this node did not
        // warm it, or the member's ring was older still), as a connection's update warms it
        // from there (warm_read's walk, which stops when the ring changes or at `until`;
        // the key's owner has not been asked, so no delete point bounds it: the copy goes
        // as an add, which the owner's guard refuses for a key deleted lately,
        // shard::guard_copies). Left: a past owner's miss that names a later delete point
        // does not remove an older item at the owner, as a connection's look ahead does.
        looked->results = std::move(rs);
        std::shared_ptr<const actors::cluster_view> view = view_;
        if (!view || view->past.empty() || !view->ring ||
            !view->warming(static_cast<int64_t>(now_ms())) ||
            looked->results.size() != looked->probes.size())
          return kj::Promise<void>(kj::READY_NOW);
        looked->epoch = view->ring->epoch();
        kj::Vector<kj::Promise<void>> walks;
        for (size_t j = 0; j < looked->results.size(); ++j) {
          ring::member_id owner;
          if (looked->results[j].st != storage::status::miss ||
              view->ring->live_owner_ids(ring::key_hash(looked->probes[j].key), 1, &owner) != 1)
            continue;
          actors::op_route rt;
          rt.epoch = looked->epoch;
          rt.owner = owner;
          rt.local = owner == view->self;
          (*walked)[j] = true;
          walks.add(warm_read(looked, j, rt, until));
        }
        return kj::joinPromises(walks.releaseAsArray());
      })
      .then([this, held, looked, walked, read_of = std::move(read_of)]() {
        // What a walk found is copied only while the ring it was placed by holds (else the
        // key's owner is another, which the past owner's item may not be current for).
        const bool same = ring_ && ring_->epoch() == looked->epoch;
        auto& rs = looked->results;
        for (size_t j = 0; j < rs.size() && j < walked->size(); ++j)
          if ((*walked)[j] && !same)
            rs[j].st = storage::status::miss;
        storage::op_batch all;
        for (size_t j = 0; j < rs.size() && j < read_of.size(); ++j)
          if (rs[j].st == storage::status::hit && rs[j].value)
            all.push_back(actors::warm_copy((*held)[read_of[j]].key, rs[j]));
        const size_t copies = all.size();
        for (auto& o : *held)
          all.push_back(std::move(o));
        // One batch: each copy reaches its key's owner before the op (routed_execute sends
        // an owner's ops in order).
        return routed_execute(std::move(all)).then([copies](storage::result_batch rs) {
          rs.erase(rs.begin(), rs.begin() + static_cast<long>(std::min(copies, rs.size())));
          return rs;
        });
      })
      .then(mark)
      .attach(kj::mv(done));
}

void service::impl::route_call(uint64_t tag, storage::op_batch ops, caf::actor sender,
                               caf::actor self) {
  uint64_t id = next_call++;
  const size_t n = ops.size();
  auto done = execute_again(std::move(ops))
                .catch_([n](kj::Exception&&) { return unavailable(n); })
                .then([this, id](storage::result_batch rs) { finish_call(id, std::move(rs)); });
  calls.emplace(id, call_info{std::move(sender), std::move(self), tag, n});
  tasks->add(kj::mv(done));
}

kj::Promise<void> service::impl::in_window(std::shared_ptr<routed_ops> r) {
  std::shared_ptr<const actors::cluster_view> view = view_;
  if (!view || view->past.empty() || !view->ring || view->ring->epoch() != r->epoch ||
      stopping)
    return kj::READY_NOW;
  const auto now = static_cast<int64_t>(now_ms());
  r->until_ms = static_cast<uint64_t>(now) + cfg.rpc_timeout_ms / 2;
  kj::Vector<kj::Promise<void>> work;
  for (size_t i = 0; i < r->probes.size(); ++i) {
    const auto& o = r->probes[i];
    if (o.kind == storage::op_kind::flush || (o.kind == storage::op_kind::remove && o.copy))
      continue;  // (a delete's copy removed an older item only: nothing further to erase)
    const auto st = r->results[i].st;
    const uint64_t hash = ring::key_hash(o.key);
    if (o.kind == storage::op_kind::get && !storage::changes_item(o)) {
      // (Not by deleted_lately alone, which the owner judges by its own view and ring: this
      // node placed the op by its ring, which may be newer, or a member whose view lagged
      // wrote the key at a past owner after the delete; then a flush_all that came before
      // the change counted as lately, and the item the past owner wrote after it was not
      // warmed: a read right after a drain answered a miss. The walk goes by the CAS clock
      // instead, as a connection's warm read does; only a delete point that is no clock
      // value (an older node's answer, or the expiry of an item with a client's CAS) still
      // ends it here, as in after_result.)
      const auto& own = r->results[i];
      if (st != storage::status::miss ||
          (own.deleted_lately && !storage::cas_clocked(own.deleted_cas)))
        continue;
      actors::op_route rt;
      rt.epoch = r->epoch;
      rt.owner = r->owners[i];
      rt.local = r->owners[i] == view->self;
      rt.gone_at = own.deleted_cas;
      rt.lately = own.deleted_lately;
      work.add(warm_read(r, i, rt, r->until_ms));
      continue;
    }
    if (o.kind == storage::op_kind::remove
          ? st != storage::status::deleted && st != storage::status::not_found
          : !storage::changed_item(o, st))
      continue;  // (a delete that failed at the primary — unavailable — deletes no copy)
    actors::past_holder holders[actors::max_past_holders * 2];
    size_t h = actors::past_holders(*view, hash, now, holders);
    bool on_chain[std::size(holders)] = {};
    // A delete (not md I, an update: execute_again) that found nothing at the primary: its
    // answer may come from a past owner, along the erase chain in turn as a client's
    // connection walks it (erase_walk); the other past holders get a plain delete. One the
    // primary decided deletes every older copy at once.
    const bool asks = o.kind == storage::op_kind::remove && !o.invalidate &&
                      st == storage::status::not_found;
    actors::op_route chain;
    if (o.kind == storage::op_kind::remove) {
      // The erase chain's nodes, as the client's connection walks it (each once, by name).
      actors::op_route rt;
      rt.epoch = r->epoch;
      rt.owner = r->owners[i];
      rt.local = r->owners[i] == view->self;
      rt.owners_replicated = o.invalidate && st == storage::status::deleted;  // (md I, stale here)
      rt.gone_at = r->results[i].deleted_cas;  // (the owner's delete point: keeps_owner_answer)
      chain = rt;
      const size_t first = h;
      for (auto from = actors::warm_source(*view, hash, rt, now, true);
           from.where != actors::placement::unavailable && h < std::size(holders);
           from = actors::warm_source(*view, hash, rt, now, true)) {
        rt.warm_next = from.next;
        const auto& name = view->past[from.depth].ring->member(from.id).name;
        bool named = false;
        for (size_t k = 0; k < first && !named; ++k)
          if (view->past[holders[k].depth].ring->member(holders[k].id).name == name)
            named = on_chain[k] = true;
        if (!named) {
          on_chain[h] = true;
          holders[h++] = actors::past_holder{from.depth, from.id};
        }
      }
    }
    if (asks)
      work.add(erase_walk(r, i, chain, r->until_ms));
    for (size_t k = 0; k < h; ++k) {
      if (asks && on_chain[k])
        continue;
      storage::op_batch one;
      one.push_back(storage::past_copy_delete(o.key));
      work.add(
        execute_at(*view->past[holders[k].depth].ring, holders[k].id, std::move(one))
          .ignoreResult());
    }
  }
  return kj::joinPromises(work.releaseAsArray());
}

kj::Promise<void> service::impl::warm_read(std::shared_ptr<routed_ops> r, size_t i,
                                           actors::op_route rt, uint64_t until_ms) {
  // The view now, at each step; none once the ring changed (or out of time: the member's
  // call waits for this answer), and the answer stays.
  std::shared_ptr<const actors::cluster_view> view = view_;
  const uint64_t now = now_ms();
  if (stopping || !view || !view->ring || view->ring->epoch() != r->epoch || now >= until_ms)
    return kj::READY_NOW;
  const auto& o = r->probes[i];
  const auto from =
    actors::warm_source(*view, ring::key_hash(o.key), rt, static_cast<int64_t>(now));
  if (from.where == actors::placement::unavailable)
    return kj::READY_NOW;
  rt.warm_next = from.next;
  storage::op w = o;  // (a look: no access counted there, a stale item's token left)
  w.counted = false;
  w.get_bump = false;
  w.keep_token = true;
  storage::op_batch one;
  one.push_back(std::move(w));
  return execute_at(*view->past[from.depth].ring, from.id, std::move(one))
    .then([this, r, i, rt, until_ms](storage::result_batch rs) mutable -> kj::Promise<void> {
      if (rs.empty())
        return kj::READY_NOW;
      const auto st = rs[0].st;
      const bool taken = actors::taken_on_walk(rt, rs[0]);  // (a miss may raise rt.gone_at)
      if (st == storage::status::hit && !taken) {
        r->results[i] = std::move(rs[0]);
        return kj::READY_NOW;
      }
      if (st == storage::status::miss || st == storage::status::hit)  // (a hit it took: none)
        return warm_read(r, i, rt, until_ms);  // (no answer ends it: see warm_source)
      return kj::READY_NOW;
    });
}

kj::Promise<void> service::impl::erase_walk(std::shared_ptr<routed_ops> r, size_t i,
                                            actors::op_route rt, uint64_t until_ms) {
  // The view now, as a connection's chain reads it at each step; none once the ring changed
  // (the key's owners are others: a node on the chain may own it now and take writes).
  std::shared_ptr<const actors::cluster_view> view = view_;
  if (stopping || !view || !view->ring || view->ring->epoch() != r->epoch)
    return kj::READY_NOW;
  const auto& o = r->probes[i];
  const uint64_t hash = ring::key_hash(o.key);
  const uint64_t now = now_ms();
  storage::op d = storage::past_copy_delete(o.key);
  if (now >= until_ms) {
    // Out of time (the member's call waits for this answer): what is left of the chain gets
    // a plain delete, not waited for, and the answer stays. (A slow past owner per step
    // would make the member's call time out: its client would see a failure for a delete
    // that ran.)
    for (auto from = actors::warm_source(*view, hash, rt, static_cast<int64_t>(now), true);
         from.where != actors::placement::unavailable;
         from = actors::warm_source(*view, hash, rt, static_cast<int64_t>(now), true)) {
      rt.warm_next = from.next;
      storage::op_batch one;
      one.push_back(d);
      tasks->add(execute_at(*view->past[from.depth].ring, from.id, std::move(one)).ignoreResult());
    }
    return kj::READY_NOW;
  }
  const auto from = actors::warm_source(*view, hash, rt, static_cast<int64_t>(now), true);
  if (from.where == actors::placement::unavailable)
    return kj::READY_NOW;
  rt.warm_next = from.next;
  // The client's delete, its CAS compare with it (md C), until one removed the item: after
  // that the answer is that one's, and the older copies just go (connection.cpp:
  // warm_next_source).
  if (r->results[i].st != storage::status::deleted) {
    d.compare_cas = o.compare_cas;
    d.cas_given = o.cas_given;
  }
  storage::op_batch one;
  one.push_back(std::move(d));
  return execute_at(*view->past[from.depth].ring, from.id, std::move(one))
    .then([this, r, i, rt, until_ms](storage::result_batch rs) mutable -> kj::Promise<void> {
      storage::result none;
      none.st = storage::status::unavailable;  // (no answer: the chain goes on)
      auto& got = rs.empty() ? none : rs[0];
      // The first that held the item answers (deleted; exists, which ends the chain), unless
      // it is a copy no later than the delete point met so far (keeps_owner_answer).
      auto& own = r->results[i];
      const bool decided = actors::keeps_owner_answer(rt, own, got, false);
      if (!decided &&
          (got.st == storage::status::deleted || got.st == storage::status::exists))
        own = std::move(got);
      if (own.st == storage::status::exists)
        return kj::READY_NOW;
      return erase_walk(r, i, rt, until_ms);
    });
}

kj::Promise<storage::result_batch> service::impl::execute_at(const ring& in, uint32_t id,
                                                             storage::op_batch ops) {
  const auto& m = in.member(id);
  auto done = m.name == cfg.node_name
                ? local_execute(std::move(ops))
                : remote_execute(m.address, std::move(ops), rpc::Origin::WARM);
  return done.catch_([](kj::Exception&&) { return storage::result_batch{}; });
}

// -- membership ---------------------------------------------------------------------------------

void service::impl::replicas_conflict(const std::string& name, const std::string& address,
                                      uint32_t theirs, bool their_cluster,
                                      uint64_t their_start_ms) {
  // Members that keep different numbers of copies place keys differently (a key whose
  // primary has R=1 is never replicated), so they never form one cluster. Both sides apply
  // this rule to the same facts, so one of them stops, or neither: a node in a cluster keeps
  // running against one that is not (the newcomer stops); two nodes alone: the later started
  // stops (by name on a tie); two clusters: both keep running, apart.
  log_line("bifrost cluster: refusing '%s' at %s: it keeps --replicas %u, this node %u; "
           "every member needs the same --replicas\n",
           name.c_str(), address.c_str(), theirs, cfg.replicas);
  // A node given no seeds asked to join nobody: it refuses and keeps serving (a member's
  // reconnect push may reach it at an address a member it forgot once had).
  bool stop;
  if (!members.has_seeds())
    stop = false;
  else if (seen_others != their_cluster)
    stop = !seen_others;
  else if (seen_others)
    stop = false;
  else
    stop = started_at_ms != their_start_ms ? started_at_ms > their_start_ms
                                           : cfg.node_name > name;
  if (!stop || mismatch_reported)
    return;
  mismatch_reported = true;
  const std::string msg = "cannot join '" + name + "' at " + address + ": " +
                          std::string(replicas_mismatch) + ": " + name + " keeps --replicas " +
                          std::to_string(theirs) + ", " + cfg.node_name + " keeps " +
                          std::to_string(cfg.replicas) + "; every member needs the same --replicas";
  if (cfg.on_fatal)
    cfg.on_fatal(msg);  // (which says it: once)
  else
    log_line("bifrost cluster: %s\n", msg.c_str());
}

void service::impl::handle(output&& out) {
  if (stopping)
    return;
  if (!members.duplicate_name().empty() && !duplicate_reported) {
    duplicate_reported = true;
    const std::string msg = "the node name '" + cfg.node_name +
                            "' is in use by a live member at " + members.duplicate_name() +
                            ": give this node another --node-name";
    if (cfg.on_fatal)
      cfg.on_fatal(msg);  // (which says it: once)
    else
      log_line("bifrost cluster: %s\n", msg.c_str());
  }
  {
    const auto& st = members.stats();
    const bool gone = st.declared_gone != declared_gone_all;
    const bool refuted = st.refutations != refutations_seen;
    declared_gone_all = st.declared_gone;
    refutations_seen = st.refutations;
    if (refuted)
      refuted_ms = now_ms();
    if (st.declared_gone_at_start == declared_gone_seen) {  // (a restart: its items go, below)
      if (gone) {
        // From now on what this node stores is newer than the deletes the others hand back
        // (storage::return_mark; the mark is also set when its ticks stall: tick_loop). A
        // death told moments after a return marked already (a member that had it dead tells
        // it when it sees it alive again: membership::apply) is that return: moving the mark
        // would put the writes taken since below it, and it was noted unless only the stall
        // marked it (note_return clears stalled_ms).
        const uint64_t now = now_ms();
        const bool fresh = returned_ms == 0 || now - returned_ms >= k_return_match_ms;
        if (fresh) {
          storage::mark_return();
          returned_ms = now;
        }
        if (fresh || stalled_ms != 0)
          note_return("the cluster had this node dead or left while it ran (a pause, a "
                      "partition)");
      } else if (refuted && stalled_ms != 0 && refuted_ms - stalled_ms < k_return_match_ms) {
        note_return("this node stalled past failure detection and was suspected");
      }
    }
  }
  if (members.stats().declared_gone_at_start != declared_gone_seen) {
    // We restarted, and the cluster had us dead (or left) and served our keys without us:
    // what the local shards recovered from --data-dir may be older than the others' copies,
    // and deletes made meanwhile would come back. Drop it; reads warm the current values from
    // the owners that served them (the first view with others, see rebuild). A node that was
    // declared dead while it ran (a pause, a partition) keeps its items: dropping them would
    // lose its share of the cache on every flap, with nobody to warm them from. The others
    // hand it copies of what they wrote meanwhile and deletes of what they deleted
    // (actors/storage_shard.hpp); it warms what it misses before they come (came_back).
    declared_gone_seen = members.stats().declared_gone_at_start;
    storage::clear_return_mark();  // (nothing from before is left for a hand-back to remove)
    storage::op flush;
    flush.kind = storage::op_kind::flush;
    storage::op_batch ops;
    ops.push_back(std::move(flush));
    tasks->add(local_execute(std::move(ops)).then([](storage::result_batch) {}));
    log_line("%s",
             cfg.recovers_items
               ? "bifrost cluster: restarted after the cluster had declared this node "
                 "dead or left: its recovered items were dropped (the other owners' "
                 "copies are current)\n"
               : "bifrost cluster: restarted after the cluster had declared this node "
                 "dead or left: it rejoins (it started empty; reads warm its keys from "
                 "the others)\n");
  }
  for (auto& e : out.send)
    send_swim(e.to_address, std::move(e.msg));
  // (A forgotten member was dead or left: no live placement changes, so no new ring and no
  // warming window for it. Its dead points leave the ring at the next change; reap_peers
  // drops what this node kept for it.)
  std::string joined;  // (said in one line: a node that joins learns of every member at once)
  size_t joined_count = 0;
  for (const auto& e : out.events) {
    using cluster::event_kind;
    if (e.kind == event_kind::joined || e.kind == event_kind::alive_again ||
        e.kind == event_kind::restarted)
      dial_now(e.member.address);
    if ((e.kind == event_kind::alive_again || e.kind == event_kind::restarted) &&
        e.member.name != cfg.node_name) {
      returns[e.member.name] = ++returns_counted;
      returns_new = true;
    } else if (e.kind == event_kind::forgotten && returns.erase(e.member.name) > 0) {
      returns_shared = nullptr;  // (the next view drops it; none is built for it alone)
    }
    if (e.member.name == cfg.node_name)
      continue;
    if (e.kind == event_kind::joined) {
      if (++joined_count <= 8)
        joined += (joined.empty() ? "'" : ", '") + e.member.name + "' (rpc " + e.member.address +
                  ")";
      continue;
    }
    const char* said = e.kind == event_kind::alive_again ? "is alive again"
                       : e.kind == event_kind::suspect   ? "is suspected (no answer to pings)"
                       : e.kind == event_kind::dead      ? "is dead: its keys go to the next owners"
                       : e.kind == event_kind::left      ? "left the cluster"
                                                         : nullptr;
    if (said)
      log_line("bifrost cluster: member '%s' (rpc %s) %s\n", e.member.name.c_str(),
               e.member.address.c_str(), said);
    if (e.kind == cluster::event_kind::restarted) {
      restarted.insert(e.member.name);
      log_line("bifrost cluster: member '%s' restarted before it was found dead (a new "
               "process under its name): what it held in memory is gone; with --replicas "
               "2 or more its keys are copied to it again\n",
               e.member.name.c_str());
    }
  }
  if (joined_count > 0)
    log_line("bifrost cluster: %s %s %s alive (new to this node)%s\n",
             joined_count == 1 ? "member" : "members", joined.c_str(),
             joined_count == 1 ? "is" : "are",
             joined_count > 8
               ? (" and " + std::to_string(joined_count - 8) + " more").c_str()
               : "");
  const bool changed = std::any_of(out.events.begin(), out.events.end(), [](const auto& e) {
    return e.kind != cluster::event_kind::forgotten;
  });
  if (changed || came_back)
    rebuild(came_back);
}

// A member seen alive (new, again, or as another process) is dialled at once: the backoff of
// the calls that failed while it was away (up to 1 s) refused the writes the others forwarded
// to it right after it rejoined (50–250 per restart at 700 writes a second), and one that was
// unreachable (its calls timed out) is probed now rather than at the next call a second on.
//
// A connection to an unreachable member still being made then was dialled while it was away
// (a cut: the SYN was dropped, and the next try comes a second on, past the connect's limit):
// it is dialled anew, and what waited for the old one (a probe, SWIM's pings, calls) waits
// for the new one. (It took 92–451 ms after the member was seen alive again, writes of its
// keys refused meanwhile, in every trial of a 3 s cut with --cluster-links off.)
void service::impl::dial_now(const std::string& addr) {
  backoff.erase(addr);
  auto u = unreachable.find(addr);
  if (u == unreachable.end())
    return;
  auto it = pool.find(addr);
  if (it != pool.end() && it->second->st == client_conn::state::connecting) {
    dial(addr, kj::mv(it->second->waiters));
    u->second.probe = 0;  // (a fresh probe, with a limit of its own; the old one's end is
                          // not taken)
  }
  probe_now(addr, u->second);
}

void service::impl::note_return(const char* why) {
  if (!seen_others || came_back)
    return;
  came_back = true;
  stalled_ms = 0;
  refuted_ms = 0;
  log_line("bifrost cluster: %s: it refuted, keeps its items, and takes the copies and "
           "deletes the others hand back of what they wrote or deleted meanwhile\n",
           why);
}

void service::impl::send_swim(const std::string& addr, message&& m) {
  if (addr.empty())
    return;
  ++swim_in_flight;
  auto msg = std::make_shared<message>(std::move(m));
  auto call = get_conn(addr)
                  .then([msg](rpc::Node::Client node) {
                    auto req = node.swimRequest();
                    to_rpc(*msg, req.initMsg());
                    return req.send();
                  })
                  .then([this, addr](capnp::Response<rpc::Node::SwimResults>&& r) {
                    heard_from(addr);
                    if (!r.hasReply() || stopping)
                      return;
                    message reply;
                    if (from_rpc(r.getReply(), reply)) {
                      if (reply.kind == message_kind::join_reply)
                        take_past(r.getReply());
                      on_swim_reply(std::move(reply));
                    }
                  })
                  .catch_([](kj::Exception&&) {});  // SWIM tolerates loss
  auto limit = timer.afterDelay(cfg.rpc_timeout_ms * kj::MILLISECONDS);
  tasks->add(call.exclusiveJoin(kj::mv(limit)).then([this] { --swim_in_flight; }));
}

kj::Promise<void> service::impl::tick_loop() {
  uint64_t now = swim_ms();
  uint64_t next = members.next_tick_ms();
  uint64_t delay = next <= now ? 0 : std::min<uint64_t>(next - now, 10);
  return timer.afterDelay(delay * kj::MILLISECONDS).then([this] {
    try {
      const uint64_t now = now_ms();
      const auto& sw = cfg.swim;
      const uint64_t stall_limit = uint64_t(sw.ping_timeout_ms) + sw.indirect_timeout_ms +
                                   sw.suspicion_timeout_ms;
      if (last_tick_ms != 0 && now - last_tick_ms > stall_limit) {
        // The others may have had it dead meanwhile: what it stores from now on is newer
        // than the deletes they may hand back.
        stalled_ms = now;
        storage::mark_return();
        returned_ms = now;
        if (refuted_ms >= last_tick_ms)  // (refuted on waking, before this tick)
          note_return("this node stalled past failure detection and was suspected");
      }
      last_tick_ms = now;
      if (cfg.parked)
        cfg.parked->expire();  // values no re-read came for
      handle(members.tick(swim_ms()));
      end_windows();
      end_joining();
      reap_peers();
    } catch (const std::exception& e) {  // e.g. bad_alloc building a ring: keep probing
      log_line("bifrost cluster: membership tick: %s\n", e.what());
    }
    return tick_loop();
  });
}

caf::actor service::impl::peer_for(const std::string& name) {
  auto it = peer_by_name.find(name);
  if (it != peer_by_name.end())
    return it->second;
  auto a = loop.system().spawn<peer_actor>(loop_ref, this, name);
  peer_by_name.emplace(name, a);
  return a;
}

void service::impl::reap_peers() {
  // The peer actor of a member the membership forgot ends once no view has referred to it for
  // k_reap_grace_ms: the current view has it dead (null), and a past ring that had it alive
  // (a member that left serves warm reads until its window ends) has left the view
  // (end_windows), and connections have taken the route snapshot without it since (an op sent
  // to an ended peer would be dropped, not answered).
  const uint64_t now = now_ms();
  for (auto it = peer_by_name.begin(); it != peer_by_name.end();) {
    bool used = members.find(it->first) != nullptr;
    if (!used && view_) {
      auto refers = [&](const std::vector<caf::actor>& ps) {
        return std::find(ps.begin(), ps.end(), it->second) != ps.end();
      };
      used = refers(view_->peers);
      for (const auto& p : view_->past)
        used = used || refers(p.peers);
    }
    if (used) {
      unreferenced_since.erase(it->first);
      ++it;
      continue;
    }
    auto [since, fresh] = unreferenced_since.try_emplace(it->first, now);
    if (fresh || now - since->second < k_reap_grace_ms) {
      ++it;
      continue;
    }
    unreferenced_since.erase(since);
    caf::anon_send_exit(it->second, caf::exit_reason::user_shutdown);
    it = peer_by_name.erase(it);
  }
  // Broken outgoing connections to addresses no member has (a reconnect push to a member we
  // forgot): gone, with their backoff (else one per address ever pushed to stays).
  for (auto it = pool.begin(); it != pool.end();) {
    if (it->second->st != client_conn::state::broken || !it->second->waiters.empty() ||
        members.has_address(it->first)) {
      ++it;
      continue;
    }
    backoff.erase(it->first);
    unreachable.erase(it->first);
    peer_progress_of.erase(it->first);
    answers_heard.erase(it->first);
    if (std::find(cfg.join.begin(), cfg.join.end(), it->first) == cfg.join.end())
      connect_errors.erase(it->first);  // (a seed's stays for the "no seed answered" line)
    tasks->add(kj::evalLater([] {}).attach(kj::mv(it->second)));  // (outside its callbacks)
    it = pool.erase(it);
  }
}

void service::impl::hand_past(rpc::SwimMessage::Builder reply) const {
  if (!view_ || view_->past.empty())
    return;
  const auto now = static_cast<int64_t>(now_ms());
  size_t n = 0;
  while (n < view_->past.size() && now < view_->past[n].warm_until_ms)
    ++n;
  auto list = reply.initPastRings(static_cast<unsigned>(n));
  for (size_t i = 0; i < n; ++i) {
    const auto& past = view_->past[i];
    auto b = list[static_cast<unsigned>(i)];
    b.setRemainingMs(static_cast<uint64_t>(past.warm_until_ms - now));
    b.setEraseRanks(past.erase_ranks);
    b.setJoining(past.joining);
    const auto& ms = past.ring->members();
    auto members = b.initMembers(static_cast<unsigned>(ms.size()));
    for (size_t j = 0; j < ms.size(); ++j)
      to_rpc(ms[j], members[static_cast<unsigned>(j)]);
  }
}

void service::impl::take_past(rpc::SwimMessage::Reader reply) {
  if (seen_others || !reply.hasPastRings())
    return;  // (only a node's first view with others takes them)
  handed_past.clear();
  const auto now = now_ms();
  for (auto r : reply.getPastRings()) {
    if (handed_past.size() >= actors::cluster_view::max_past)
      break;
    handed_ring h;
    h.until_ms = now + std::min<uint64_t>(r.getRemainingMs(), cfg.warm_window_ms);
    h.erase_ranks = static_cast<uint8_t>(
        std::clamp<unsigned>(r.getEraseRanks(), 1, actors::past_ring::max_erase_ranks));
    if (r.getJoining().size() <= k_max_member_name)
      h.joining = r.getJoining();
    // Checked as membership checks a member record (valid_update): a ring with a member it
    // would refuse, or with more members than the reply itself lists, is not taken.
    bool ok = r.getMembers().size() <= std::max<size_t>(reply.getMembers().size(), 1) + 64;
    for (auto m : r.getMembers()) {
      auto u = from_rpc(m);
      ok = ok && valid_update(u);
      if (!ok)
        break;
      h.members.push_back(ring_member{std::move(u.name), std::move(u.address), u.weight,
                                      u.state != member_state::dead});
    }
    if (!ok)
      continue;
    std::sort(h.members.begin(), h.members.end(),
              [](const ring_member& a, const ring_member& b) { return a.name < b.name; });
    handed_past.push_back(std::move(h));
  }
}

void service::impl::rebuild(bool force) {
  auto rm = members.ring_members();
  std::sort(rm.begin(), rm.end(),
            [](const ring_member& a, const ring_member& b) { return a.name < b.name; });
  auto restarted_now = restarted_members();
  if (!force && ring_ && rm == ring_->members()) {
    // The placement stands, but a member may now advertise another memcached address (it
    // restarted with another -p before anyone declared it dead): the data links must dial
    // the new one; and one that restarted lost the copies it held (cluster_view::restarted).
    // Same ring, same warming window.
    // And a member back from a suspicion keeps its place in the ring: only the view's
    // returns tell the data links to dial it.
    auto clients = clients_of(*ring_);
    if (!view_ || (clients == view_->clients && !restarted_now && !returns_new))
      return;
    auto view = std::make_shared<actors::cluster_view>(*view_);
    view->returns_only = clients == view_->clients && !restarted_now;
    view->restarted = std::move(restarted_now);
    view->returns = returns_for_view();
    view->clients = std::move(clients);
    for (auto& past : view->past)  // warming reads dial the past owners: by name, anew too
      past.clients = clients_of(*past.ring);
    publish(std::move(view));
    return;
  }
  // This view's members with this node dead: the ring the others served its keys by while it
  // was not among them.
  auto without_me = [&] {
    auto without_self = rm;
    for (auto& m : without_self)
      if (m.name == cfg.node_name)
        m.alive = false;
    return ring::build(std::move(without_self), ++epoch);
  };
  // The first view with other live members (this node just joined, or restarted): until now
  // the others served this node's keys without it, so the owners to warm from are this view's
  // owners without this node, not the ring of this node alone it held before.
  std::shared_ptr<const ring> joined_from;
  if (!seen_others) {
    bool others = false;
    for (auto& m : rm)
      others |= m.alive && m.name != cfg.node_name;
    if (others) {
      seen_others = true;
      joined_from = without_me();
    }
  }
  // Back from the dead while it ran (a pause, a partition: it heard of its death, or refuted
  // a suspicion after a stall of its own; note_return): the others served its keys without it
  // meanwhile, and a write there made its copy old. The nodes that took those writes hand
  // this node copies of them (actors/storage_shard.hpp); until they come, what it misses it
  // warms from the ring without it, as after a join. (Its own ring may not even have
  // changed: it never saw itself dead.)
  std::shared_ptr<const ring> served_without_me;
  if (came_back && !joined_from)
    served_without_me = without_me();
  came_back = false;
  auto next = ring::build(std::move(rm), ++epoch);
  auto peers = peers_of(*next);
  auto view = std::make_shared<actors::cluster_view>();
  view->ring = next;
  view->peers = std::move(peers);
  view->clients = clients_of(*next);
  view->replicas = std::max<uint32_t>(1, cfg.replicas);
  view->replicator = replicator;
  view->router = router;
  view->wait_replicas = cfg.wait_replicas;
  view->rereplicate = cfg.rereplicate;
  view->call_limit_ms = call_limit_ms();
  view->restarted = std::move(restarted_now);
  view->returns = returns_for_view();
  // The ring replaced now is warmed from for a window; so are the past rings whose windows
  // still run (newest first), so that keys moved by several changes in a row (a rolling
  // restart, two joins) are still found where they were.
  const auto now = static_cast<int64_t>(now_ms());
  const auto until = now + static_cast<int64_t>(cfg.warm_window_ms);
  // A delete inside the window reaches every copy a past ring placed (its first R owners),
  // and in a joining node's first ring more (actors::past_ring::erase_ranks).
  const auto copies = static_cast<uint8_t>(
      std::min<uint32_t>(std::max<uint32_t>(cfg.replicas, 1), actors::past_ring::max_erase_ranks));
  // The rings replaced now (by index in view->past), whose keys' reads are checked at their
  // owners there for a while: the ring the members served by before.
  std::vector<size_t> replaced_now;
  if (joined_from) {  // same members, same ids: the same peers and links
    view->past.push_back({joined_from, view->peers, view->clients, until,
                          actors::past_ring::max_erase_ranks, cfg.node_name});
    if (!cfg.join.empty())
      replaced_now.push_back(0);  // (on the first node, the ring of itself alone: below)
    // The rings the seed still warms from (its join reply): the nodes that joined just before
    // this one may not have warmed their keys yet, and their previous owners are named there.
    for (auto& h : handed_past) {
      if (static_cast<int64_t>(h.until_ms) <= now ||
          view->past.size() + 1 >= actors::cluster_view::max_past)
        continue;
      auto r = ring::build(std::move(h.members), ++epoch);
      auto ps = peers_of(*r);
      auto cs = clients_of(*r);
      view->past.push_back({std::move(r), std::move(ps), std::move(cs),
                            static_cast<int64_t>(h.until_ms), h.erase_ranks,
                            std::move(h.joining)});
    }
    handed_past.clear();
    // Then, on the first node of a cluster (no --join: it served alone, and was joined), the
    // ring of itself alone it held before: the keys the newcomer took are in its own shards.
    // (Not on a node that joins: a restarted one may hold, from --data-dir, old copies of
    // keys it does not own, which deletes at their owners never reached.)
    if (cfg.join.empty() && view_ && view_->ring) {  // (window: no later than the one before)
      view->past.push_back({view_->ring, view_->peers, view_->clients,
                            std::min(until, view->past.back().warm_until_ms), copies});
      replaced_now.push_back(view->past.size() - 1);
    }
  } else if (view_) {
    // (The ring before first: ops in flight were placed in it, connection::delete_past_copies.
    // For a return it is this ring again; a miss here skips this node in it.)
    view->past.push_back({view_->ring, view_->peers, view_->clients, until, copies});
    replaced_now.push_back(0);
    if (served_without_me) {  // (same members, same ids: the same peers and links)
      view->past.push_back({served_without_me, view->peers, view->clients, until, copies});
      replaced_now.push_back(1);
    }
    for (const auto& past : view_->past)
      if (now < past.warm_until_ms && view->past.size() < actors::cluster_view::max_past)
        view->past.push_back(past);
  }
  // (With served_without_me also the ring the others served by meanwhile. Not a joining
  // node's own ring before, nor the rings a join reply handed: older changes.)
  const int64_t check = std::min(cfg.read_check_window_ms, cfg.warm_window_ms);
  for (size_t i : replaced_now)
    if (check > 0)
      view->past[i].check_until_ms = now + check;
  for (const auto& past : view->past)
    view->check_until_ms = std::max(view->check_until_ms, past.check_until_ms);
  ring_ = next;
  view->self = ring_self();
  view->self_name = cfg.node_name;
  view->joining = joining_now();
  publish(std::move(view));
}

// The members that restarted since the last view (and are still members), for the next one
// (cluster_view::restarted); null when there are none. Forgets them.
std::shared_ptr<const std::vector<std::string>> service::impl::restarted_members() {
  if (restarted.empty())
    return nullptr;
  auto names = std::make_shared<std::vector<std::string>>();
  for (const auto& name : restarted)
    if (auto m = members.find(name); m && name != cfg.node_name &&
                                     m->state != member_state::dead &&
                                     m->state != member_state::left)
      names->push_back(name);
  restarted.clear();
  if (names->empty())
    return nullptr;
  return names;
}

// The members seen back, for the next view (cluster_view::returns); shared by the views until
// one comes back or is forgotten.
std::shared_ptr<const std::map<std::string, uint64_t>> service::impl::returns_for_view() {
  if (returns_new || !returns_shared)
    returns_shared = returns.empty()
                       ? nullptr
                       : std::make_shared<const std::map<std::string, uint64_t>>(returns);
  returns_new = false;
  return returns_shared;
}

// What a failed connection's error says to someone who gave --join: a seed that answered in
// another protocol (Cap'n Proto reads its first bytes as a segment table) is most likely a
// memcached port given for an RPC port.
namespace {
std::string seed_failure(const std::string& error) {
  const char* hint = "not a node's RPC port? (a memcached port, say: the RPC port is the "
                     "memcached port + 1000 unless --rpc-port says otherwise)";
  if (answered_another_protocol(error))
    return std::string("answered, but not in Cap'n Proto RPC: ") + hint;
  if (error.find("hello was not answered") != std::string::npos)
    return "connected, but hello was not answered: a paused or overloaded node, or " +
           std::string(hint);
  return error;
}
} // namespace

void service::impl::end_joining() {
  if (!view_ || !view_->joining || joining_now())
    return;
  if (members.joining()) {
    std::string why;
    for (const auto& seed : cfg.join)
      if (auto e = connect_errors.find(seed); e != connect_errors.end())
        why += "\n  " + seed + ": " + seed_failure(e->second);
    log_line("bifrost cluster: no seed answered within %u ms: serving alone; it keeps "
             "asking them%s\n",
             cfg.join_wait_ms, why.c_str());
  }
  auto view = std::make_shared<actors::cluster_view>(*view_);
  view->restarted = nullptr;  // (acted on in the view that named them)
  view->joining = false;
  publish(std::move(view));
}

// A past ring leaves the view copies_kept_ms after its warming window ended (warm reads stop
// at the end of the window): the view is published again without it (checked at every
// membership tick); writes no longer delete copies at its owners (actors/connection.cpp,
// drop_past_copies), and the shards drop the items of keys this node owns in none of the
// rings left (route_table.cpp) once they were untouched for copies_kept_ms.
void service::impl::end_windows() {
  if (!view_ || view_->past.empty())
    return;
  // From the first ended window on (warming stops there: actors::warm_source), so the rings
  // kept stay at the positions ops in flight refer to.
  const auto now = static_cast<int64_t>(now_ms());
  auto first = std::find_if(view_->past.begin(), view_->past.end(), [now](const auto& p) {
    return now >= p.warm_until_ms + actors::cluster_view::copies_kept_ms;
  });
  if (first == view_->past.end())
    return;
  auto view = std::make_shared<actors::cluster_view>(*view_);
  view->restarted = nullptr;  // (acted on in the view that named them)
  view->past.resize(static_cast<size_t>(first - view_->past.begin()));
  publish(std::move(view));
}

std::vector<caf::actor> service::impl::peers_of(const ring& r) {
  std::vector<caf::actor> peers(r.size());
  for (ring::member_id id = 0; id < r.size(); ++id) {
    auto& m = r.member(id);
    if (m.name != cfg.node_name && m.alive)
      peers[id] = peer_for(m.name);
  }
  return peers;
}

std::vector<std::string> service::impl::clients_of(const ring& r) {
  std::vector<std::string> clients(r.size());
  for (ring::member_id id = 0; id < r.size(); ++id) {
    auto& m = r.member(id);
    if (m.name != cfg.node_name && m.alive)
      if (auto* info = members.find(m.name))
        clients[id] = link_wire::dial_address(info->client_address, m.address);
  }
  return clients;
}

void service::impl::publish(std::shared_ptr<actors::cluster_view> view) {
  view_ = view;
  if (replicator)
    caf::anon_send(replicator, actors::ring_atom::value, actors::cluster_view_ptr(view));
  if (route_table)
    caf::anon_send(route_table, actors::ring_atom::value,
                   actors::cluster_view_ptr(std::move(view)));
}

void service::impl::forget_routes(std::shared_ptr<std::promise<void>> done) {
  if (route_table)
    caf::anon_send(route_table, actors::ring_atom::value, actors::cluster_view_ptr{});
  route_table = nullptr;  // (publish() no longer reaches the loops)
  done->set_value();
}

void service::impl::settle_replication(std::shared_ptr<std::promise<void>> done) {
  settled = false;
  if (!replicator || cfg.replicas <= 1) {
    settled = true;
    done->set_value();
    return;
  }
  const uint64_t bound = replicate_bound_ms(cfg.rpc_timeout_ms);
  tasks->add(ask_replicator(bound, actors::settle_atom::value)
               .then([this, done, bound](bool ok) {
                 settled = ok;
                 if (!ok)
                   log_line("bifrost cluster: stopping: replication to the other owners "
                            "did not finish within %llu ms (an owner unreachable?); "
                            "leaving anyway\n",
                            static_cast<unsigned long long>(bound));
                 done->set_value();
               }));
}

void service::impl::begin_leave(std::shared_ptr<std::promise<void>> done) {
  handle(members.leave(swim_ms()));
  rebuild();
  tasks->add(watch(std::move(done), now_ms() + 1000,
                   [this] { return members.done_leaving() && swim_in_flight == 0; }));
}

kj::Promise<void> service::impl::watch(std::shared_ptr<std::promise<void>> done,
                                       uint64_t deadline, std::function<bool()> over) {
  if (over() || now_ms() >= deadline) {
    done->set_value();
    return kj::READY_NOW;
  }
  return timer.afterDelay(10 * kj::MILLISECONDS)
    .then([this, done, deadline, over = std::move(over)]() mutable {
      return watch(std::move(done), deadline, std::move(over));
    });
}

void service::impl::settle_calls(std::shared_ptr<std::promise<void>> done) {
  tasks->add(watch(std::move(done), now_ms() + cfg.rpc_timeout_ms,
                   [this] { return calls.empty() && *again_in_flight == 0; }));
}

void service::impl::quit_actors() {
  for (auto& [name, a] : peer_by_name)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  if (bridge)
    caf::anon_send_exit(bridge, caf::exit_reason::user_shutdown);
  if (replicator)
    caf::anon_send_exit(replicator, caf::exit_reason::user_shutdown);
  if (router)
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
}

// -- lifecycle ----------------------------------------------------------------------------------

// One of the connections counted in served_connections (take()): given back when destroyed.
struct service::impl::served_slot {
  explicit served_slot(uint32_t& n) : count(n) {}
  ~served_slot() { --count; }
  KJ_DISALLOW_COPY(served_slot);
  uint32_t& count;
};

namespace {

// The first bytes of an accepted connection, read until proto::rpc_greeting_of can tell what
// they are (`maybe`: the client closed first).
struct greeting {
  kj::byte bytes[proto::rpc_greeting_max];
  size_t size = 0;
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes), size}; }
};

kj::Promise<proto::rpc_greeting> read_greeting(kj::AsyncIoStream& s, greeting& g) {
  return s.tryRead(g.bytes + g.size, 1, sizeof g.bytes - g.size)
    .then([&s, &g](size_t n) -> kj::Promise<proto::rpc_greeting> {
      g.size += n;
      const proto::rpc_greeting kind = proto::rpc_greeting_of(g.view());
      if (kind != proto::rpc_greeting::maybe || n == 0)
        return kind;
      return read_greeting(s, g);  // (rpc_greeting_of decides by sizeof g.bytes)
    });
}

// Reads and drops what a client sends after the answer it was given, for at most a second and
// 1 MiB, so that closing with its bytes unread does not reset the connection before it read
// the answer.
kj::Promise<void> drain(kj::AsyncIoStream& s, kj::Timer& timer) {
  auto sink = kj::heapArray<kj::byte>(16 * 1024);
  auto left = kj::heap<size_t>(1024 * 1024);
  struct reader {
    static kj::Promise<void> next(kj::AsyncIoStream& s, kj::ArrayPtr<kj::byte> b, size_t& left) {
      return s.tryRead(b.begin(), 1, b.size()).then([&s, b, &left](size_t n) -> kj::Promise<void> {
        if (n == 0 || n >= left)
          return kj::READY_NOW;
        left -= n;
        return next(s, b, left);
      });
    }
  };
  return reader::next(s, sink.asPtr(), *left)
    .exclusiveJoin(timer.afterDelay(1 * kj::SECONDS))
    .attach(kj::mv(sink), kj::mv(left));
}

} // namespace

// A connection counted in served_connections by take(). Its first bytes tell Cap'n Proto
// (served by serve_rpc) from a person or memcached client (a line of text) or a web client
// (an HTTP request line) at the wrong port: those are answered in their own protocol and
// closed, where Cap'n Proto would answer in binary or wait for more bytes. One that says too
// little to tell by the greeting deadline is closed.
void service::impl::serve(kj::Own<kj::AsyncIoStream> s, int fd) {
  auto slot = kj::heap<served_slot>(served_connections);
  if (!serving)
    return;
  auto first = kj::heap<greeting>();
  auto& stream = *s;
  auto& got = *first;
  // One deadline for the first bytes and the hello together.
  const kj::TimePoint hello_by = timer.now() + call_limit_ms() * kj::MILLISECONDS;
  // (evalNow: a socket's read runs at once, and throws at once on a reset connection)
  auto told = kj::evalNow([&] { return read_greeting(stream, got); }).exclusiveJoin(
    timer.atTime(hello_by).then([] { return proto::rpc_greeting::maybe; }));
  tasks->add(told.then(
    [this, s = kj::mv(s), first = kj::mv(first), slot = kj::mv(slot), hello_by,
     fd](proto::rpc_greeting kind) mutable -> kj::Promise<void> {
      using proto::rpc_greeting;
      if (kind == rpc_greeting::maybe || !serving)
        return kj::READY_NOW;  // (closed: the client left or said too little)
      if (kind == rpc_greeting::rpc || kind == rpc_greeting::other) {
        serve_rpc(kj::mv(s), kj::arrayPtr(first->bytes, first->size), kj::mv(slot), hello_by,
                  fd);
        return kj::READY_NOW;
      }
      auto answer = kj::heapString(proto::rpc_port_answer(kind, cfg.client_address));
      auto& stream = *s;
      return stream.write(answer.begin(), answer.size())
        .then([this, &stream]() {
          stream.shutdownWrite();
          return drain(stream, timer);
        })
        .attach(kj::mv(s), kj::mv(answer), kj::mv(first), kj::mv(slot));
    }));
}

// A Cap'n Proto connection: served until it closes, or until `hello_by` when it says no hello
// by then (a client that connects and says nothing must not hold one of the connections the
// node serves).
void service::impl::serve_rpc(kj::Own<kj::AsyncIoStream> s,
                              kj::ArrayPtr<const kj::byte> read_ahead,
                              kj::Own<served_slot> slot, kj::TimePoint hello_by, int fd) {
  auto greeted = std::make_shared<bool>(false);
  auto c = kj::heap<server_conn>(buffered(kj::mv(s), 32 * 1024, read_ahead),
                                 kj::heap<node_server>(*this, greeted, fd));
  auto& net = c->net;
  auto deadline = timer.atTime(hello_by)
                      .then([greeted]() -> kj::Promise<void> {
                        if (*greeted)
                          return kj::NEVER_DONE;
                        return kj::READY_NOW;  // (the connection closes with its task)
                      });
  tasks->add(net.onDisconnect()
                 .exclusiveJoin(kj::mv(deadline))
                 .attach(kj::mv(c), kj::mv(slot)));
}

void service::impl::log_rarely(uint64_t& last_ms, const std::string& what) {
  if (last_ms != 0 && now_ms() - last_ms < 10000)
    return;  // (at most a line every 10 s: a client that is refused retries)
  last_ms = now_ms();
  log_line("bifrost cluster: %s\n", what.c_str());
}

namespace {

// A peer that vanished without closing (a host that went down, a killed bifrostctl behind a
// NAT) is found by TCP keepalive within about a minute, and its connection closes.
void keep_alive(kj::AsyncIoStream& s) {
  try {
    int on = 1, idle = 30, interval = 10, count = 3;
    s.setsockopt(SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    s.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    s.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    s.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  } catch (const kj::Exception&) {
    // (not a TCP socket: nothing to set)
  }
}

} // namespace

// One accepted RPC connection: served (after the TLS handshake with --rpc-tls-*), or closed
// when as many as the node serves are open.
void service::impl::take(kj::Own<kj::AsyncIoStream> s) {
  if (!serving)
    return;
  if (served_connections >= actors::max_rpc_connections) {
    // (dropping `s` closes it: what a client sees from a node that cannot take it)
    log_rarely(refused_logged_ms, "refused an RPC connection: " +
                                    std::to_string(actors::max_rpc_connections) +
                                    " are open, the most it serves");
    return;
  }
  ++served_connections;  // (from here on: serve()'s served_slot gives it back)
  keep_alive(*s);
  int fd = -1;
  KJ_IF_MAYBE(f, s->getFd()) { fd = *f; }
  if (!tls) {
    serve(kj::mv(s), fd);
    return;
  }
  // The handshake runs beside the accept loop; a client without a certificate from our CA is
  // dropped (logged at most every 10 s: a misconfigured peer retries often).
  // (evalNow: what the handshake throws at once goes to the error branch, which gives the
  // count back)
  tasks->add(kj::evalNow([&] { return tls->wrap_server(kj::mv(s)); })
                 .then([this, fd](kj::Own<kj::AsyncIoStream> s) { serve(kj::mv(s), fd); },
                       [this](kj::Exception&& e) {
                         --served_connections;
                         log_rarely(tls_refused_logged_ms,
                                    std::string("refused an RPC connection: TLS handshake "
                                                "failed: ") +
                                      e.getDescription().cStr());
                       }));
}

kj::Promise<void> service::impl::accept_loop() {
  // (evalNow: accept() throws at once when the accept4 it tries first fails)
  auto accepted = kj::evalNow([this]() { return listener->accept(); });
  return accepted.then(
    [this](kj::Own<kj::AsyncIoStream> s) {
      // One connection's failure (a client that reset before its first byte) is its own,
      // never the accept loop's: that left the port deaf for good.
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { take(kj::mv(s)); })) {
        if (e->getType() != kj::Exception::Type::DISCONNECTED)
          log_rarely(refused_logged_ms, std::string("an RPC connection failed at once: ") +
                                          e->getDescription().cStr());
      }
      return accept_loop();
    },
    [this](kj::Exception&& e) {
      // No descriptor left (EMFILE, ENFILE), no memory: the listener stays and is asked
      // again after a pause, as memcached does, instead of the port going deaf for good.
      log_rarely(refused_logged_ms,
                 std::string("accepting an RPC connection failed (trying again): ") +
                   e.getDescription().cStr());
      return timer.afterDelay(100 * kj::MILLISECONDS).then([this]() { return accept_loop(); });
    });
}

void service::impl::start() {
  serving = true;
  // What this node stored before it joined (recovered from --data-dir) may be older than what
  // the others wrote meanwhile: deletes they hand back remove it (storage::return_mark).
  storage::mark_return();
  bridge = loop.system().spawn<bridge_actor>(loop_ref, this);
  router = loop.system().spawn<router_actor>(loop_ref, this);
  if (cfg.replicas > 1) {
    replicator_config rc;
    rc.shards = shards;
    rc.link = cfg.replica_link;
    rc.timeout_ms = cfg.rpc_timeout_ms;
    if (cfg.replicator_host) {
      replicator = spawn_replicator(loop.system(), *cfg.replicator_host, std::move(rc));
    } else {
      rc.keep_host = loop_ref;
      replicator = spawn_replicator(loop.system(), loop, std::move(rc));
    }
  }
  tasks->add(accept_loop());
  // The seeds first: with any, the first view says that this node is joining.
  auto joined = members.join(cfg.join, swim_ms());
  join_deadline_ms = now_ms() + cfg.join_wait_ms;
  rebuild(true);  // a ring of this node alone
  handle(std::move(joined));
  ticking = tick_loop().eagerlyEvaluate(
      [](kj::Exception&& e) {
        log_line("bifrost cluster: membership timer: %s\n", e.getDescription().cStr());
      });
}

void service::impl::shutdown() {
  stopping = true;
  ticking = nullptr;
  // Cancels the accept loop, the server connections (their RPC systems), sends and calls.
  tasks = nullptr;
  for (auto& orders : send_orders)
    orders.clear();  // barriers' answers, which queued calls and uploads wait on
  pool.clear();
  for (auto& [id, c] : calls)
    if (c.sender)
      caf::send_as(c.self, c.sender, actors::result_atom::value, c.tag, unavailable(c.n));
  calls.clear();
  repl_pending.clear();
  pending.clear();
  late_probes.clear();
  listener = nullptr;
  serving = false;
  peer_by_name.clear();
  view_.reset();  // drops the peer actor handles
  bridge = nullptr;
  replicator = nullptr;
  router = nullptr;
  route_table = nullptr;
  shards.clear();
}

// -- service ------------------------------------------------------------------------------------

service::service() = default;

service::~service() { stop(); }

std::unique_ptr<service> service::start(caf::actor_system& sys, const service_config& cfg,
                                        std::vector<caf::actor> local_shards,
                                        caf::actor route_table, stats_fn stats,
                                        std::string& error, std::shared_ptr<kj_loop> host) {
  if (cfg.node_name.empty()) {
    error = "cluster: the node name is empty";
    return nullptr;
  }
  std::unique_ptr<service> svc(new service());
  svc->loop_ = host ? std::move(host) : std::make_shared<kj_loop>(sys);
  svc->name_ = cfg.node_name;
  auto* s = svc.get();
  auto err = svc->loop_->start([&, s](kj::AsyncIoContext& io) -> std::string {
    std::unique_ptr<tls_context> tls;
    if (cfg.tls.enabled()) {
      std::string tls_error;
      tls = tls_context::load(cfg.tls, &io.provider->getTimer(), tls_error);
      if (!tls)
        return tls_error;
    }
    auto addr = io.provider->getNetwork().parseAddress(cfg.rpc_host, cfg.rpc_port).wait(io.waitScope);
    auto listener = addr->listen();
    s->port_ = static_cast<uint16_t>(listener->getPort());
    s->address_ = cfg.rpc_advertise.empty()
                    ? advertised_address(cfg.rpc_host, s->port_, host_name())
                    : cfg.rpc_advertise;
    s->impl_ = new impl(s->loop_, io, cfg, s->address_, std::move(local_shards),
                        std::move(route_table), std::move(stats), kj::mv(listener));
    s->impl_->tls = std::move(tls);
    s->impl_->start();
    return "";
  });
  if (!err.empty()) {
    error = "cluster: cannot start the RPC server on " + cfg.rpc_host + ":" +
            std::to_string(cfg.rpc_port) + ": " + err;
    svc->stopped_ = true;
    return nullptr;
  }
  return svc;
}

uint16_t service::rpc_port() const { return port_; }
std::string advertised_address(std::string host, uint16_t port, const std::string& machine) {
  if (is_wildcard_host(host) && !machine.empty())
    host = machine;
  if (host.find(':') != std::string::npos && host.front() != '[')
    host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

std::string host_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0)
    return {};
  return host;
}

std::string service::node_name() const { return name_; }
std::string service::rpc_address() const { return address_; }

void service::stop() { shutdown(true); }
void service::halt() { shutdown(false); }

void service::on_loop_until_done(void (impl::*step)(std::shared_ptr<std::promise<void>>),
                                 std::chrono::milliseconds limit) {
  auto* core = impl_;
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  loop_->post([core, done, step] { (core->*step)(done); });
  fut.wait_for(limit);
}

std::chrono::milliseconds service::settle_limit() const {
  return std::chrono::milliseconds(replicate_bound_ms(impl_->cfg.rpc_timeout_ms) + 1000);
}

void service::leave() {
  if (stopped_ || left_ || !impl_)
    return;
  left_ = true;
  on_loop_until_done(&impl::begin_leave, std::chrono::milliseconds(1500));
  // Then the writes acknowledged here reach the keys' owners (the replicator's view has the
  // ring without this node: each key's R owners there). After the leave, not before: until
  // the others know, members send their writes here, and a replicator that is never idle
  // would hold the wait to its bound; once they know, the writes they placed by the ring
  // before go on to the owners (cluster_view::router), not to the replicator.
  on_loop_until_done(&impl::settle_replication, settle_limit());
  first_settle_ok_ = impl_->settled;  // (set before the promise, or false if timed out)
}

void service::forget_routes() {
  if (stopped_ || !impl_)
    return;
  on_loop_until_done(&impl::forget_routes, std::chrono::milliseconds(1000));
}

void service::shutdown(bool announce) {
  if (stopped_)
    return;
  if (announce)
    leave();
  stopped_ = true;
  auto* core = impl_;
  if (!core)
    return;
  using namespace std::chrono_literals;
  if (announce) {
    // Members' writes this node placed again on their owners are answered first (bounded).
    on_loop_until_done(&impl::settle_calls,
                       std::chrono::milliseconds(core->cfg.rpc_timeout_ms + 500));
    // And what it acknowledged since leave()'s wait: a member's call that found it still an
    // owner (by RPC or data link, placed by a ring this node did not replace). Skipped
    // when the first wait gave up (an owner unreachable: it would wait again).
    if (first_settle_ok_)
      on_loop_until_done(&impl::settle_replication, settle_limit());
  }
  loop_->post([core] { core->quit_actors(); });
  auto deadline = std::chrono::steady_clock::now() + 1s;
  while (core->actors_running.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  loop_->stop([core] {
    KJ_DEFER(delete core);
    core->shutdown();
  });
  impl_ = nullptr;
}

} // namespace bifrost::cluster
