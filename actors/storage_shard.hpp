// The storage shard actor: the only owner of one storage::shard (one slice of the key space).
//
// Placement: hosted on an I/O loop (default: a connection on the same loop reaches it without
// a syscall or a thread switch) or, with no host, on the CAF scheduler. Interface (atoms in actors/messages.hpp):
//   (exec_atom, tag, op_batch)  executes the ops in order; the sender receives
//                               (result_atom, tag, result_batch), results in op order.
//   (stats_atom)                -> storage::shard_stats (request/response)
//   (stats_atom, tag)           the sender receives (stats_atom, tag, shard_stats)
//   (sweep_atom)                internal, every `sweep_interval`: bounded expiry sweep
//   (result_atom, tag, result_batch), (hbwait): internal, a member's answer to handed-back
//                               deletes or copies (see below), and the pass's wait for them
//   (prune_atom, cluster_view_ptr)  with a view: drops the items whose keys this node is not
//                               among the first R live owners of in the view's ring nor in any
//                               of its past rings (those it still warms from), 4096 index
//                               slots per turn (other mail runs in between), keeping what was
//                               written or read in the last prune_untouched_s seconds (looked
//                               at again that much later); with null: stops. The route table
//                               sends it before the view's snapshot, so the node's own ops
//                               routed by that view find it; a member whose view is ahead
//                               may write a key this view does not give this node, which the
//                               recent-write rule keeps.
//                               The same pass hands items back to a member that is alive
//                               again after this shard's views had it dead (a pause, a
//                               partition: it kept its items, and missed the writes made
//                               here meanwhile): every item the pass visits whose key the
//                               member owns now and that was stored here since it was seen
//                               dead (a CAS above the counter's value prune_untouched_s
//                               before: sample_cas), and not sent in a pass whose copies
//                               were all taken, goes to it as a copy with `hand_back` set
//                               (ordered as any copy by the CAS clock): an add if stored
//                               after this node saw it dead (it replaces only an older item, so
//                               of writes on both sides of a partition the later stays;
//                               refused for a key the member deleted lately), a replace if
//                               stored in the seconds before (a member whose view was ahead
//                               wrote here: it only replaces an older item, so a key the
//                               member deleted meanwhile does not come back). Read when sent
//                               (copy_batch_bytes per batch) as warm ops to the member's
//                               peer actor, at most max_hand_back_batches unanswered (the
//                               pass waits), in two passes prune_untouched_s apart; an item
//                               queued is kept until it is sent, a copy the member did not
//                               take is sent again as re-replication's are, and a pass with
//                               one never taken does not count (max_hand_back_redone). (Both
//                               sides of a partition take it that they came back from the
//                               dead, and such a node sends no re-replication copies: these
//                               copies are what brings each side the other's writes.) Keys
//                               deleted here meanwhile (no item left) are kept for it from
//                               the delete on (note_deletes) and sent as deletes with
//                               `hand_back` when it is back (those it did not take again a
//                               few times: tombstone_sent_). A hand-back whose
//                               member dies again before the pass is done waits for it.
//                               With R > 1 the same pass also copies items to their new
//                               owners (re-replication, unless --rereplicate off): for every
//                               item whose live owners in the view's ring include members
//                               that were not its live owners in the placement before it
//                               (a member died, left, joined or came back), or in the one whose
//                               copies were last all made (copied_ring_), a node that owned
//                               the key in the placement before (it took the key's writes
//                               until now; a node that owned it earlier may hold an older
//                               value) and owns it now (or, when no owner before is one now,
//                               every owner before) sends each such owner a copy as a warm op
//                               (an add: never over what the owner holds, a write that got
//                               there first) to its peer actor, at most max_copy_batches
//                               unanswered (the pass waits) and copy_batch_bytes of values
//                               per batch; a copy answered unavailable is sent again a few
//                               times. Keys deleted here lately (the copy guard's notes,
//                               storage::shard::recent_deletes) that have no item are copied
//                               the same way, as a delete's copy: it spares only an item
//                               later than the delete by the CAS clock (it removes one a
//                               member that heard of the change first copied there while
//                               this node, its owner before, still took the key's writes;
//                               one a joining node brought from its data directory). So
//                               after a kill -9 the survivors restore R copies of
//                               the dead node's keys, and a node back from a restart gets the
//                               keys it owns again, read or not; also one that restarted
//                               before anyone had it dead (the view names it: cluster_view::
//                               restarted): the copies made count without it from then on,
//                               and when no owner changed, the current placement counts as
//                               the one before (its owners took the writes). A node joining
//                               sends nothing it held before; one back from the dead (a pause,
//                               a partition) only what it stored since its return
//                               (storage::return_mark; the lowest while the view warms
//                               from a ring without it): what it held may be older than the
//                               owners' copies; so such a member is no owner that stays
//                               and holds the copies, and the other old owners send too. A
//                               copy is refused at a node that deleted its key lately
//                               (storage::shard::guard_copies, on for members:
//                               copy_guard_s). A view that
//                               changes no owner still restarts the pass, which then sends
//                               its copies again (adds: no harm, but traffic).
// Ownership: the actor owns the shard; pinned slices in results keep segments alive on
// whatever thread holds them.
#pragma once

#include "storage/shard.hpp"

#include "actors/cluster_view.hpp"
#include "actors/loop_actor.hpp"
#include "cluster/ring.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bifrost::actors {

class storage_shard : public hosted_actor {
public:
  /// `host` nullptr: the shard runs on the CAF scheduler.
  storage_shard(caf::actor_config& cfg, actor_host* host, std::unique_ptr<storage::shard> shard,
                std::chrono::milliseconds sweep_interval);

  caf::behavior make_behavior() override;
  const char* name() const override { return "storage_shard"; }

  /// Deleted keys kept per shard for members that were dead (`tombstones`).
  static constexpr size_t max_tombstones = 65536;

private:
  /// A prune keeps what was written or read in this many seconds before its pass began (a
  /// member whose view is ahead of this node's may have written it as its owner's: views
  /// agree within a few seconds), and looks at such items again this long after the pass.
  static constexpr uint32_t prune_untouched_s = 10;
  static_assert(prune_untouched_s * 1000 == cluster_view::copies_kept_ms,
                "writes delete past copies until the prune may drop them");
  void start_prune();
  void prune_step(uint64_t gen);
  /// The pass visited every slot (and its copies were answered): hand-backs count a pass
  /// (one with a copy never taken is redone instead, max_hand_back_redone times), and what
  /// was kept for later is looked at again prune_untouched_s later.
  void end_pass(uint64_t gen);

  std::unique_ptr<storage::shard> shard_;
  std::chrono::milliseconds sweep_interval_;
  // The running prune: the rings whose owned keys it keeps (the view's current and past
  // rings, each with this node's id in it), R; a step message whose generation is not
  // prune_gen_ belongs to a pass stopped or restarted since.
  struct owned_in {
    std::shared_ptr<const cluster::ring> ring;
    cluster::ring::member_id self;
  };
  std::vector<owned_in> prune_rings_;
  uint32_t prune_replicas_ = 1;
  uint64_t prune_gen_ = 0;
  uint64_t ring_epoch_ = 0;  // of the last view's ring (shard::ring_changed when it moves)
  uint32_t prune_since_ = 0;   // unix seconds: items touched since are kept this pass
  size_t prune_recent_ = 0;    // items of this pass kept for that

  /// Notes who the view `v` has dead, and who is alive again since the view before: their
  /// hand-backs join hand_backs_ (they outlive a pass that a later view restarts, and wait
  /// while their member is dead again).
  void note_comebacks(const cluster_view& v);
  /// Every sweep: (now, storage::current_cas()), the last minute or so of them, oldest first.
  void sample_cas();
  /// The CAS counter at unix second `t` (the newest sample not after it; 0: none that old).
  uint64_t cas_before(uint32_t t) const;
  std::deque<std::pair<uint32_t, uint64_t>> cas_samples_;
  // Members the views had dead (not alive in a view since), the CAS counter when they died
  // less prune_untouched_s (what this node stored since has a higher CAS) and when this node
  // saw them dead. Oldest first; at most max_dead_noted.
  static constexpr size_t max_dead_noted = 256;
  struct dead_member {
    std::string name;
    uint64_t since_cas;
    uint64_t dead_cas;
  };
  std::vector<dead_member> dead_since_;
  // The ring of the last view that named this node (note_deletes, the hand-back pass).
  std::shared_ptr<const cluster::ring> view_ring_;
  // A key whose item goes to a member alive again: as an add (stored after this node saw it
  // dead) or as a replace (stored in the seconds before: it brings no key back).
  struct queued_copy {
    std::string key;
    bool replace = false;
  };
  struct hand_back {
    std::string name;         // the member back from the dead
    uint64_t since_cas = 0;   // items stored here with a higher CAS may be newer than its
    uint64_t dead_cas = 0;    // the counter when this node saw it dead (add above, replace
                              // at or below)
    uint64_t copied_cas = 0;  // items up to this went in a pass whose copies were all taken
    uint64_t pass_cas = 0;    // the counter when the running pass began
    uint8_t passes = 0;       // passes done while it was alive (two: see prune_step)
    uint8_t redone = 0;       // passes not counted: a copy it did not take (unavailable)
    bool failed = false;      // this pass: a copy it did not take, after copy_retries
    // Resolved for the running pass (null dest: the member is dead again, it waits).
    cluster::ring::member_id id = 0;
    caf::actor dest;
    std::deque<queued_copy> copies;  // items to send it (read when sent)
    std::deque<queued_copy> retry;   // copies it did not take, sent again after a while
    unsigned retry_round = 0;
  };
  /// Items the member alive again did not take (it answered unavailable: a link just back)
  /// are sent again after copy_retry_ms << round, copy_retries times (at most
  /// max_copy_retries keys); past that the pass is not counted (done again
  /// prune_untouched_s later), at most max_hand_back_redone times.
  static constexpr uint8_t max_hand_back_redone = 4;
  /// Reads `key`'s item as a copy to another node takes it (no access counted, its win token
  /// left as it is): re-replication's and hand-backs' reads.
  storage::result read_for_copy(const std::string& key);
  bool hand_back_copies_queued() const;
  /// Sends batches of queued copies to members alive again while fewer than
  /// max_hand_back_batches are unanswered (reads the items now: one written since the scan
  /// goes as it is now, one gone not at all).
  void send_hand_back_copies();
  /// The scan is done: true while hand-backs' answers or retries are still due (the step is
  /// sent again when they are), false once the pass may end.
  bool hand_backs_pending(uint64_t gen);
  /// Waits for an answer (or answer_wait: then every copy unanswered is sent again).
  void wait_for_hand_backs(uint64_t gen);
  /// A copy `q` that member `hb` did not take: sent again later (bounded).
  void retry_hand_back(hand_back& hb, queued_copy q);
  std::vector<hand_back> hand_backs_;
  uint64_t hand_back_tag_ = 0;
  uint64_t tombstone_tag_ = 0;
  bool hand_back_waits_ = false;  // the pass waits for answers
  uint64_t hand_back_wait_ = 0;   // which wait (a timer of an earlier one does not end it)
  // Batches of copies sent and not answered (at most max_hand_back_batches): their tags,
  // members and keys.
  struct sent_hand_back {
    uint64_t tag;
    std::string member;
    std::vector<queued_copy> keys;
  };
  std::deque<sent_hand_back> hand_back_sent_;
  uint64_t handed_back_ = 0;         // deleted keys sent (stat cluster_handed_back_deletes)
  uint64_t handed_back_copies_ = 0;  // copies sent (stat cluster_handed_back_copies)

  storage::shard_stats stats() const;

  // Keys deleted here, as one of their live owners, while a member that owns them by the ring
  // with it alive was dead: it kept its copy, and a delete finds no item here to hand back in
  // a pass. They go to it as deletes when it is alive again (send_tombstones, from
  // note_comebacks). Each key once per member, however often it is deleted meanwhile (a key
  // deleted over and over, a lock or a queue's head, pushed out every other key's, and the
  // member kept those: deleted values back). At most max_tombstones per shard: past that, the
  // member with the most loses its oldest (counted: tombstones_dropped_).
  // Each key keeps the point on the CAS clock of its latest delete here (the note the copy
  // guard took, storage::shard::recent_delete; 0: none, the guard off or the key written
  // again in the same batch): the delete goes as a copy of it (storage::delete_copy), which
  // the member orders against its item and notes, so that copies of older writes (a past
  // owner's, warmed on a miss; a hand-back's) do not bring the key back there.
  struct tombstones {
    std::string member;
    std::deque<std::string> keys;  // oldest first
    // Views of `keys`' strings, with each one's point: a deque's elements stay where they
    // are when it grows or shrinks at its ends, and keys only come and go at the ends
    // (note_deletes), or all at once (send_tombstones); the struct itself is never moved
    // (held by unique_ptr).
    std::unordered_map<std::string_view, uint64_t> noted;
  };
  void note_deletes(const storage::op_batch& ops, const storage::result_batch& results);
  /// Keeps `key` for `member` with the point of its delete, `at` (once, at the later point;
  /// past max_tombstones the longest list loses its oldest).
  void keep_tombstone(const std::string& member, const std::string& key, uint64_t at);
  void send_tombstones(const cluster_view& v, const std::string& name);
  // Batches of deleted keys sent and not answered (the newest max_tombstone_batches). A key
  // its member did not take (unavailable: its link just back, the first batch failing fast
  // while a probe goes out) is sent again after copy_retry_ms << round, copy_retries times;
  // then it is kept for the member's next return.
  struct sent_tombstones {
    uint64_t tag = 0;
    std::string member;
    caf::actor dest;
    std::vector<std::string> keys;
    std::vector<uint64_t> points;  // each key's delete point (tombstones::noted)
    unsigned round = 0;
    std::chrono::steady_clock::time_point due{};  // (tombstone_retry_: when it goes again)
  };
  static constexpr size_t max_tombstone_batches = 64;
  void send_tombstone_batch(sent_tombstones b);
  std::deque<sent_tombstones> tombstone_sent_, tombstone_retry_;
  std::vector<std::unique_ptr<tombstones>> tombstones_;
  size_t tombstone_count_ = 0;
  uint64_t tombstones_dropped_ = 0;
  bool ring_has_dead_ = false;  // the view's ring lists a dead member with points

  // -- re-replication (R > 1): copies of items to the owners a ring change gave them ----
  /// Batches sent and not answered, per shard: the pass waits at this many (one read of the
  /// queue sends a batch per owner, so up to this + R - 2).
  static constexpr size_t max_copy_batches = 4;
  static constexpr size_t copy_batch_bytes = 4u << 20;   // values per read of the queue
  static constexpr size_t copy_batch_keys = 512;         // keys per read of the queue
  /// A copy an owner did not take (unavailable) is sent again after 0.2, 0.4, 0.8, 1.6 and
  /// 3.2 s (the pass's other copies go on meanwhile); past that, or past max_copy_retries
  /// keys waiting for that, the pass is done again prune_untouched_s later.
  static constexpr unsigned copy_retries = 5;
  static constexpr uint64_t copy_retry_ms = 100;
  static constexpr size_t max_copy_retries = 65536;
  /// How long a delete here refuses copies of its key (storage::shard::guard_copies): a copy
  /// lands at most cluster_view::call_limit_ms (30 s by default) after the read it carries;
  /// at least 10 s, at most a day.
  static uint32_t copy_guard_s(const cluster_view& v) {
    return static_cast<uint32_t>(std::clamp<uint64_t>((v.call_limit_ms + 999) / 1000, 10, 86400));
  }
  /// The placement whose new owners got their copies: the first ring this node was in, then
  /// the ring of each pass that sent every copy and had every one answered.
  std::shared_ptr<const cluster::ring> copied_ring_;
  /// The ring of the current placement, and of the one before it (views that change no
  /// owner, a warming window's end, leave both).
  std::shared_ptr<const cluster::ring> placed_now_, placed_before_;
  /// The last cluster_view::restarted acted on (views copied from it may still carry it).
  std::shared_ptr<const std::vector<std::string>> restart_seen_;
  struct copy_pass {
    // The ring copied to (null: no copies this pass); copied from: copied_ring_ and
    // placed_before_, which change only when a view plans a new pass.
    std::shared_ptr<const cluster::ring> to;
    cluster::ring::member_id before_self = 0;
    std::vector<int64_t> copied_id, before_id;  // by member id there: the id in `to`, or -1
    std::vector<caf::actor> dests;  // by member id of `to`: peer actors of live members
    bool failed = false;            // a copy not taken after its retries
    bool scanned = false;           // the prune pass visited every slot
    uint64_t since = 0;             // back from the dead: only items (and deletes) above this
    std::vector<char> back;         // by member id of `to`: back from the dead (plan_copies)
  };
  copy_pass copy_;
  /// Back from the dead: the lowest return mark of the views since the return whose past still
  /// holds a ring without this node (plan_copies), else 0.
  uint64_t back_since_ = 0;
  struct copy_job {
    std::string key;
    uint8_t n = 0;  // new owners (ids in copy_.to)
    cluster::ring::member_id to[cluster_view::max_replicas];
  };
  std::deque<copy_job> copy_queue_;
  // The keys deleted here lately (storage::shard::recent_deletes) the pass has still to
  // queue, prune_slots_per_turn a turn: at most 65,536 (the copy guard's bound).
  std::deque<std::string> deleted_keys_;
  struct sent_copies {  // a batch not answered yet: its keys, in op order
    uint64_t tag = 0;
    cluster::ring::member_id to = 0;
    std::vector<std::string> keys;
  };
  std::vector<sent_copies> copy_sent_;  // the batches not answered yet
  std::deque<copy_job> copy_retry_;
  unsigned copy_retry_round_ = 0;
  uint64_t copy_tag_ = 0;
  bool copy_waits_ = false;
  uint64_t copied_ = 0;        // copies sent (stat cluster_rereplicated_items)
  uint64_t copied_deletes_ = 0;  // of them, deletes' (stat cluster_rereplicated_deletes)
  uint64_t copy_failed_ = 0;   // passes redone for a copy not taken (cluster_rereplicate_redone)
  /// Starts the copy part of a pass for the view `v` (after prune_rings_ are set).
  void plan_copies(const cluster_view& v);
  /// Queues `key` if this node sends its copies (called by the pass for every live item);
  /// true if it did.
  bool want_copy(std::string_view key, uint64_t hash);
  /// Reads up to copy_batch_keys / copy_batch_bytes of the queue and sends the copies.
  void send_copies();
  /// A copy to `to` was not taken: it is tried again once the scan is done.
  void retry_copy(std::string key, cluster::ring::member_id to);
  /// The pass visited every slot and every copy was answered: the view's ring is copied.
  void finish_copies();
  cluster::ring::member_id self_ = 0;  // this node's id in view_ring_
};

} // namespace bifrost::actors
