// Membership: a SWIM failure detector and member-list state machine (Das, Gupta, Motivala,
// "SWIM: Scalable Weakly-consistent Infection-style Process Group Membership Protocol",
// DSN 2002), with a few cheap refinements from Lifeguard (Dadgar et al., 2018) and
// HashiCorp memberlist (listed below).
//
// Pure and deterministic: no I/O, no threads, no clock. The owner (an actor) calls
//   tick(now)            whenever the time reaches next_tick_ms() (or more often),
//   on_message(msg, now) for every message that arrives,
// and sends every envelope the calls return. Same inputs, same outputs: randomness comes from
// a splitmix64 generator seeded by hash64(name) ^ config.seed.
//
// Protocol, per member, every probe_interval (one "protocol period"):
//   1. ping the next member of a shuffled round-robin list (alive and suspect members, not
//      self); new members are inserted at random positions (SWIM section 4.3).
//   2. no ack within ping_timeout: ping_req to k = indirect_probes other members, which ping
//      the target and relay its ack.
//   3. no ack, direct or relayed, within ping_timeout + indirect_timeout: the target becomes
//      `suspect` (same incarnation), spread by gossip.
//   4. a suspect not refuted within suspicion_timeout (timed by every node that holds the
//      suspicion, from when it learned it) becomes `dead`, spread by gossip.
//   A member that hears itself suspected, declared dead or left (at an incarnation >= its
//   own) refutes: incarnation = that incarnation + 1, state alive, sent at once to every
//   member it knows and gossiped. A message that still carries an already refuted suspicion
//   of us is answered with our current record.
//
// Which update wins: updates about a member are ordered by (incarnation, rank) with rank
// alive < suspect < dead < left, and a node keeps the largest it has seen. Because that is a
// max over a total order, every node that has heard the same updates holds the same view,
// whatever the order they arrived in. Dead and left records stay as tombstones so a stale
// alive cannot resurrect a member; a member comes back only with a higher incarnation, which
// only it can issue (a restarted node learns its old incarnation from the join reply and
// refutes it).
//
// Dissemination: every message piggybacks up to max_piggyback recent updates, fewest
// transmissions first; each update is sent retransmit_mult * ceil(log2(n + 1)) times (SWIM's
// lambda * log n) and then dropped. Updates are also pushed to gossip_fanout random members
// every gossip_interval while any are pending (memberlist), so suspicions reach the suspect,
// and refutations everyone, in a few tens of milliseconds instead of a protocol period.
//
// Refinements (cheap ones only):
//   - Buddy system (Lifeguard): a ping to a suspect member always carries the suspicion, so the
//     member learns it at the next probe even if gossip was lost.
//   - Anti-entropy (memberlist push/pull): join is a full-state exchange with the seeds
//     (join / join_reply); the same exchange runs with one random member every
//     sync_interval, and with one random dead (or forgotten: forget_after_ms) member every
//     reconnect_interval, so a healed partition or a restarted node whose seeds were not
//     given finds its way back.
//   - A message from a member we do not know (we restarted without seeds while the others
//     still hold us alive) starts that full-state exchange at once (at most once per probe
//     interval).
//   - Refutations go straight to every member (besides gossip): they race suspicion timers.
//   - Fixed probe order: SWIM reshuffles the list after every traversal, which lets the gap
//     between two probes of the same member reach 2m - 1 periods (m = members to probe). We
//     keep one shuffled order (new members at random positions) so the gap is exactly m
//     periods; set reshuffle_each_round for the paper's behaviour.
//
// Detection time of a crashed member (no message loss, n members, m = n - 1, T =
// probe_interval): every other member probes it within m * T, so
//
//   first dead declaration <= m*T + ping_timeout + indirect_timeout + suspicion_timeout
//   all views agree        <= that + one gossip round (gossip_interval + latency)
//
// With the defaults and n = 5: 4*200 + 80 + 80 + 800 = 1760 ms (< 2 s), agreement by ~1.9 s.
// The typical case is better: the first of the m probers reaches the dead member after about
// T/m. For larger clusters the bound grows with n * T; raise suspicion_timeout with log n (as
// memberlist does) when message loss is expected. (A member inserted into the probe order
// during the wait can add one period.)
//
// Measured on the simulated network of tests/cluster/test_membership.cpp (1-2 ms latency,
// BIFROST_SIM_SEEDS=1000): a killed node is dead everywhere after 1110 ms on average, 1561 ms
// at worst (3 and 5 nodes); with 20% random loss, 0 false dead declarations in 60,000 s of
// 5-node cluster time (~355,000 suspicions, all refuted); with 30% loss, 0 in 18,000 s.
//
// Thread affinity: none; one instance is used by one thread (its actor) at a time.
#pragma once

#include "cluster/ring.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace bifrost::cluster {

/// Ordered by rank: for one incarnation, a later state overrides an earlier one.
enum class member_state : uint8_t { alive = 0, suspect = 1, dead = 2, left = 3 };
const char* to_string(member_state s) noexcept;

/// One fact about one member: the unit of gossip and of full-state sync.
struct member_update {
  std::string name;
  std::string address;         ///< "host:port" of the member's RPC endpoint
  std::string client_address;  ///< "host:port" of its memcached listener (data links dial it)
  uint32_t weight = 1;         ///< ring weight, set by the member itself
  uint64_t incarnation = 0;
  member_state state = member_state::alive;
  /// Dead and left records: how long the sender has held this state (ms), so that every node
  /// forgets the member at about the same time (membership_config::forget_after_ms). Filled
  /// in when a message leaves (0 from peers that predate it: "just now"). Not compared.
  uint64_t age_ms = 0;
  /// The process the record is of (local_member::instance; 0 from peers that predate it).
  uint64_t instance = 0;

  bool operator==(const member_update& o) const {
    return name == o.name && address == o.address && client_address == o.client_address &&
           weight == o.weight && incarnation == o.incarnation && state == o.state &&
           instance == o.instance;
  }
};

/// Bounds on what a peer may tell us; an update outside them is ignored (a buggy or hostile
/// peer on an unauthenticated RPC port must not wrap an incarnation, make the ring allocate
/// terabytes, or store megabyte names).
inline constexpr size_t k_max_member_name = 255;      ///< bytes of a member name
inline constexpr size_t k_max_member_address = 300;   ///< bytes of "host:port"
inline constexpr uint32_t k_max_member_weight = 64;   ///< ring weight (points = 160 × weight)
inline constexpr uint64_t k_max_incarnation = uint64_t(1) << 62;  ///< a refutation stays at it
/// True if `u` is within those bounds (and names someone).
bool valid_update(const member_update& u) noexcept;

/// What this node believes about a member.
struct member_info {
  std::string name;
  std::string address;
  std::string client_address;
  uint32_t weight = 1;
  uint64_t incarnation = 0;
  member_state state = member_state::alive;
  uint64_t state_since_ms = 0;  ///< local time this record last changed state or incarnation
  uint64_t instance = 0;        ///< local_member::instance of its process (0: not known)
};

enum class message_kind : uint8_t {
  ping,        ///< "are you alive?" to = target; answered by ack with the same seq
  ping_req,    ///< "probe `target` (at target_address) for me"; relay answers ack(seq, target)
  ack,         ///< answer to a ping (target = the sender) or a relayed one (target = probed)
  join,        ///< full state (members) push, answered by join_reply: sent to the seeds by
               ///< join(), and as anti-entropy to a random (or a dead) member now and then
  join_reply,  ///< full state of the answering node
  leave,       ///< graceful-leave announcement (updates holds the sender's `left` record)
  gossip,      ///< updates only; no answer
};
const char* to_string(message_kind k) noexcept;

/// One membership message. The RPC layer serializes it field by field; against
/// cluster/bifrost.capnp's SwimMessage that needs a `gossip` kind and the `fromAddress` and
/// `to` fields (`nack` is not used: Lifeguard's local health awareness is not implemented).
struct message {
  message_kind kind = message_kind::ping;
  std::string from;            ///< sender's name
  std::string from_address;    ///< sender's RPC address: answers go there
  std::string to;              ///< receiver's name; empty when unknown (join to a seed)
  std::string target;          ///< ping_req, ack: the member being probed
  std::string target_address;  ///< ping_req: where to reach the target
  uint64_t seq = 0;            ///< ping/ping_req/ack: the prober's sequence number
  std::vector<member_update> updates;  ///< piggybacked gossip, at most max_piggyback
  std::vector<member_update> members;  ///< join, join_reply: every record the sender holds
};

/// A message and where to send it.
struct envelope {
  std::string to_address;
  message msg;
};

enum class event_kind : uint8_t {
  joined,       ///< first heard of (state alive, or suspect)
  alive_again,  ///< was suspect, dead or left; alive with a higher incarnation
  suspect,
  dead,
  left,
  updated,      ///< same state, but its addresses or weight changed
  restarted,    ///< was alive or suspect, and still is, as another process (its instance):
                ///< a restart before anyone had it dead (it lost what it held in memory).
                ///< Followed by the state's event when that changed too
  forgotten,    ///< dead or left for forget_after_ms: its record is gone (member() is the last)
};
const char* to_string(event_kind k) noexcept;

struct member_event {
  event_kind kind;
  member_info member;  ///< the record after the change
};

/// What a call asks the caller to do: send these, and know that the view changed so.
struct output {
  std::vector<envelope> send;
  std::vector<member_event> events;
};

struct membership_config {
  uint32_t probe_interval_ms = 200;     ///< T: one probe started per period
  uint32_t ping_timeout_ms = 80;        ///< direct ping unanswered this long -> ping_req
  uint32_t indirect_timeout_ms = 80;    ///< then this long for a relayed ack -> suspect
  uint32_t indirect_probes = 3;         ///< k: members asked to ping_req
  uint32_t suspicion_timeout_ms = 800;  ///< suspect not refuted this long -> dead
  uint32_t gossip_interval_ms = 100;    ///< push pending updates this often...
  uint32_t gossip_fanout = 3;           ///< ...to this many random members
  uint32_t gossip_to_dead_ms = 2000;    ///< also gossip to members dead for less than this
  uint32_t retransmit_mult = 3;         ///< lambda: each update sent lambda*ceil(log2(n+1)) times
  uint32_t max_piggyback = 8;           ///< updates carried per message
  uint32_t join_retry_ms = 500;         ///< re-send join until a seed answers
  uint32_t sync_interval_ms = 5000;     ///< full-state exchange with a random member; 0 = off
  uint32_t reconnect_interval_ms = 1000;  ///< full-state push to a random dead member; 0 = off
  /// A member dead or left this long (by the oldest report of it: member_update::age_ms) is
  /// forgotten: its record leaves the member list, ring_members() and every full-state
  /// exchange. Its name, incarnation and address stay in a bounded graveyard: a stale record
  /// still loses; the reconnect push picks among dead and forgotten members alike (a healed
  /// partition, a node restarted without seeds); and a forgotten member that talks to us, or
  /// that a push reaches, is told it was dead (in the join reply, the push's full state, or a
  /// gossip after our answer) and refutes, as before. 0 = never (Serf keeps failed members
  /// 24 h: its reconnect_timeout).
  uint64_t forget_after_ms = 24ull * 3600 * 1000;
  size_t graveyard_max = 10000;         ///< forgotten names kept; the oldest go first
  bool reshuffle_each_round = false;    ///< SWIM's reshuffle after each traversal (see above)
  uint64_t seed = 0;                    ///< mixed with the name into the random generator
};

/// How this node describes itself to the others.
struct local_member {
  std::string name;            ///< unique in the cluster; a restarted node keeps its name
  std::string address;         ///< "host:port" where its RPC server listens
  std::string client_address;  ///< "host:port" of its memcached listener (data links dial it)
  uint32_t weight = 1;         ///< ring weight
  /// Drawn by each process at start (nonzero), larger at every start (the service puts the
  /// start time in its high bits): a record of its name with a smaller instance is of a
  /// process before it (stale, whatever its incarnation says), one with a larger one is of
  /// a process after it. A restart quicker than failure detection changes no state, only
  /// this (event_kind::restarted). 0: not told (as from peers that predate it).
  uint64_t instance = 0;
};

/// Counters for metrics and tests.
struct membership_stats {
  uint64_t probes = 0;           ///< probes started
  uint64_t ping_reqs = 0;        ///< indirect probes asked for
  uint64_t probe_failures = 0;   ///< probes that ended without an ack (-> suspect)
  uint64_t refutations = 0;      ///< times this node raised its incarnation
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  uint64_t invalid_updates = 0;  ///< updates and messages ignored for breaking the bounds above
  /// Times a member told us we were dead or had left (which we then refuted): the others
  /// took our keys over meanwhile, so what this node still holds of them may be stale.
  /// Counted once per incarnation, also for a death that comes after we refuted only a
  /// suspicion at its incarnation (the suspicion arrived first: a message sent before the
  /// death and delivered late, as TCP retransmits after a partition heals): the others that
  /// had us dead take our alive as a return all the same.
  uint64_t declared_gone = 0;
  /// The same, while this node had just started (the first message that told it of other
  /// members, or its first k_name_check_window_ms), for a record not of this process (its
  /// instance: 0 or another): it restarted after the cluster had declared it dead or left.
  uint64_t declared_gone_at_start = 0;
  /// Messages from another process that uses our name (a different address).
  uint64_t name_conflicts = 0;
  uint64_t forgotten = 0;        ///< members forgotten (forget_after_ms)
  uint64_t told_forgotten = 0;   ///< messages to forgotten members carrying their death
  /// Repeats of a death told to a member back from it (run_retells; the first is not counted).
  uint64_t deaths_told_again = 0;
};

class membership {
public:
  /// A node alive at incarnation 0 that knows only itself. `now_ms` is the caller's
  /// monotonic clock (any origin; only differences matter).
  explicit membership(local_member self, membership_config cfg = {}, uint64_t now_ms = 0);

  /// Starts joining through `seeds` ("host:port"; our own address is skipped): sends them a
  /// join message with our full state and keeps re-sending every join_retry_ms until one answers.
  /// With no seeds (the first node) there is nothing to do.
  output join(const std::vector<std::string>& seeds, uint64_t now_ms);
  /// Graceful leave: marks self `left` and sends a `leave` message to every member at once;
  /// tick() keeps gossiping it until done_leaving(). Afterwards the node neither probes nor
  /// refutes, and answers any ping, ping_req or join with a `leave` message.
  output leave(uint64_t now_ms);
  /// True once leave() was called and the announcement has been retransmitted enough (at
  /// once when nobody is left to tell: no member alive, suspect, or dead for less than
  /// gossip_to_dead_ms when it left).
  bool done_leaving() const noexcept;

  /// Runs the timers: starts probes, sends ping_reqs, declares suspects and dead members,
  /// gossips, retries the join, syncs. Cheap when nothing is due.
  output tick(uint64_t now_ms);
  /// Handles one received message. Messages addressed to another name (`to`) are ignored.
  output on_message(const message& msg, uint64_t now_ms);
  /// The earliest time at which tick() has something to do.
  uint64_t next_tick_ms() const noexcept;

  const std::string& name() const noexcept { return self_; }
  uint64_t incarnation() const noexcept;
  bool joined() const noexcept { return joined_; }
  /// join() was given seeds other than ourselves.
  bool has_seeds() const noexcept { return !seeds_.empty(); }
  /// join() was given seeds (other than ourselves) and none has answered yet.
  bool joining() const noexcept { return !seeds_.empty() && !joined_ && !leaving_; }
  /// Non-empty once a join found our name held by another live process: its RPC address.
  /// The node must not take part (two processes cannot share a name: they would take the
  /// name from each other by turns and split its keys); the owner stops it.
  const std::string& duplicate_name() const noexcept { return duplicate_name_; }
  bool leaving() const noexcept { return leaving_; }
  /// Bumped on every event (a local view version, e.g. for the ring's epoch).
  uint64_t version() const noexcept { return version_; }
  const membership_stats& stats() const noexcept { return stats_; }
  const membership_config& config() const noexcept { return cfg_; }

  /// Every record, self included, sorted by name (tombstones included).
  std::vector<member_info> members() const;
  /// Names of the members in state alive (self included unless leaving), sorted.
  std::vector<std::string> alive_names() const;
  /// True if a record (self included) has this RPC address.
  bool has_address(std::string_view address) const;
  /// The record for `name`, or nullptr.
  const member_info* find(std::string_view name) const;
  /// The ring input for this view: alive and suspect members as alive, dead ones as not
  /// alive (they keep their points; live_owners skips them), left ones omitted.
  std::vector<ring_member> ring_members() const;
  /// Members forgotten and still remembered by name (at most graveyard_max).
  size_t graveyard_size() const noexcept { return graveyard_.size(); }

private:
  struct record {
    member_info info;
  };
  struct pending {
    member_update update;
    uint32_t transmits = 0;
    uint64_t order = 0;  // newer = larger
  };
  struct probe_state {
    bool active = false;
    bool ping_req_sent = false;
    std::string target;
    uint64_t seq = 0;
    uint64_t start_ms = 0;
  };
  struct relay {
    std::string requester;
    std::string requester_address;
    uint64_t requester_seq = 0;
    std::string target;
    uint64_t expires_ms = 0;
  };

  uint64_t rand() noexcept;
  size_t rand_below(size_t n) noexcept;
  // The bodies of the public calls (which then stamp the ages of what they send).
  output join_(const std::vector<std::string>& seeds, uint64_t now_ms);
  output leave_(uint64_t now_ms);
  output tick_(uint64_t now_ms);
  output on_message_(const message& msg, uint64_t now_ms);
  member_update self_update() const;
  static member_update to_update(const member_info& i);

  void apply(const member_update& u, uint64_t now_ms, output& out);
  void apply_self(const member_update& u, uint64_t now_ms, output& out);
  /// A death of us, `u` (declared_gone, and declared_gone_at_start when we have just started
  /// and it is not of this process).
  void count_gone(const member_update& u, uint64_t now_ms);
  /// Moves the deaths apply() queued for members back from the dead into `out`.
  void flush_tells(output& out);
  /// A gossip to member `name` at `address` carrying its own `death` (counted as sent).
  envelope death_message(const std::string& name, const std::string& address,
                         const member_update& death);
  void emit(event_kind k, const member_info& i, output& out);
  void enqueue(const member_update& u);
  uint32_t retransmit_limit() const noexcept;
  std::vector<member_update> piggyback(std::string_view about);
  void send(output& out, const std::string& address, message m, std::string_view about = {});
  message make(message_kind k, const std::string& to) const;
  /// Our ack of a ping addressed to us (or of a ping_req naming us as the target).
  message ack_of(const message& ping) const;
  std::vector<member_update> full_state() const;
  /// full_state(), and to a member we forgot its own death (counted as told).
  std::vector<member_update> full_state_for(const std::string& to, uint64_t now_ms, bool reply);
  /// The record of `name` if we forgot it and it is due to be told so (always, or at most once
  /// per probe interval): counted as told. Else null.
  const member_update* death_to_tell(const std::string& name, uint64_t now_ms, bool always);

  /// Whom gossip goes to at `now_ms`: alive, suspect, or dead for less than gossip_to_dead_ms.
  bool gossip_target(const member_info& m, uint64_t now_ms) const noexcept {
    return probe_eligible(m.state) ||
           (m.state == member_state::dead && now_ms < m.state_since_ms + cfg_.gossip_to_dead_ms);
  }
  static bool probe_eligible(member_state s) noexcept {
    return s == member_state::alive || s == member_state::suspect;
  }
  /// Dead or left: a record that ages toward forget_after_ms.
  static bool is_gone(member_state s) noexcept {
    return s == member_state::dead || s == member_state::left;
  }
  void order_insert(const std::string& name);
  void order_remove(const std::string& name);
  const record* next_probe_target();
  std::vector<const record*> random_members(size_t count, std::string_view exclude,
                                            bool include_recent_dead, uint64_t now_ms);

  void run_probe(uint64_t now_ms, output& out);
  void run_suspicion(uint64_t now_ms, output& out);
  void run_gossip(uint64_t now_ms, output& out);
  void run_sync(uint64_t now_ms, output& out);
  void run_forget(uint64_t now_ms, output& out);
  /// Sets age_ms on the dead and left records of every message in `out` (from our records).
  void stamp_ages(output& out, uint64_t now_ms) const;
  /// The local time a record of age `age_ms` took its state (never after now).
  static uint64_t since_of(uint64_t age_ms, uint64_t now_ms) noexcept {
    return age_ms < now_ms ? now_ms - age_ms : 0;
  }

  std::string self_;
  std::string address_;
  membership_config cfg_;
  uint64_t rng_;
  std::map<std::string, record, std::less<>> members_;  // self included
  // Forgotten members (run_forget): what a returning one must be told, and what a stale
  // record of it must beat.
  struct grave {
    member_update last;   // its record when forgotten (age_ms unused)
    uint64_t buried_ms = 0;
    uint64_t told_ms = 0;  // not told again of its death before this (on_message)
  };
  std::map<std::string, grave, std::less<>> graveyard_;
  void bury(const member_update& u, uint64_t now_ms);
  uint64_t reconnects_ = 0;  // reconnect intervals so far (run_sync)
  static constexpr uint64_t k_grave_push_every = 10;
  std::vector<pending> queue_;
  uint64_t queue_order_ = 0;
  std::vector<std::string> order_;  // probe order
  size_t order_pos_ = 0;
  probe_state probe_;
  std::map<uint64_t, relay> relays_;
  uint64_t seq_ = 0;
  uint64_t next_probe_ms_;
  uint64_t next_gossip_ms_;
  uint64_t next_sync_ms_;
  uint64_t next_reconnect_ms_;
  uint64_t next_join_ms_ = 0;
  uint64_t next_unknown_sync_ms_ = 0;  // full-state exchange with an unknown sender, rate-limited
  struct name_check {  // joining: is the process that holds our name elsewhere alive?
    bool active = false;
    std::string address;
    uint64_t seq = 0;
    uint64_t deadline_ms = 0;
    std::vector<member_update> pending;  // the records of us to refute if it is not
  };
  name_check name_check_;
  bool name_checked_ = false;
  // Only a node that has just started asks: one that has run for a while holds its name.
  static constexpr uint64_t k_name_check_window_ms = 10000;
  uint64_t name_check_until_ms_ = 0;
  bool first_contact_ = false;  // a message has told us of another live member
  uint64_t gone_counted_below_ = 0;  // deaths of us at incarnations below this were counted
  std::vector<envelope> tells_;      // apply(): deaths to tell members back from them
  // apply(): each death told to a member back from it is told again once per probe interval,
  // k_tell_repeats times (run_retells): the first message may be lost as the member's
  // connection comes back, and its death then goes uncounted there (no return marked, no
  // came-back view). The member counts a death once (gone_counted_below_), so repeats that
  // follow a delivered tell do nothing. Dropped when the member is no longer alive or
  // suspect, or another process (instance) took its name.
  struct retell {
    member_update death;
    uint64_t instance = 0;
    uint64_t next_ms = 0;
    uint32_t left = 0;
  };
  std::map<std::string, retell, std::less<>> retells_;
  static constexpr uint32_t k_tell_repeats = 5;
  void run_retells(uint64_t now_ms, output& out);
  std::string duplicate_name_;
  std::vector<std::string> seeds_;
  bool joined_ = false;
  bool leaving_ = false;
  uint64_t version_ = 0;
  membership_stats stats_;
};

}  // namespace bifrost::cluster
