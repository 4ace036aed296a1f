#include "cluster/replicator.hpp"

#include "actors/messages.hpp"
#include "actors/route_table.hpp"
#include "cluster/convert.hpp"
#include "cluster/ring.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>

namespace bifrost::cluster {

namespace {

// Internal messages: (flush): replicate what was queued; (retry, keys, retries): a backoff
// ended; (tick): look for phases that waited too long. One tick runs while jobs exist, instead
// of a timeout message per phase: each delayed message wakes CAF's clock thread, which cost
// ~0.3 context switches per client op under load.
using flush_atom = caf::atom_constant<caf::atom("rflush")>;
using retry_atom = caf::atom_constant<caf::atom("rretry")>;
using tick_atom = caf::atom_constant<caf::atom("rtick")>;

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// The host outlives the actor object: hosted_actor's destructor reports to it. A base listed
// before hosted_actor, so it is destroyed after ~hosted_actor ran.
struct host_keeper {
  std::shared_ptr<void> kept;
};

class replicator final : private host_keeper, public actors::hosted_actor {
public:
  replicator(caf::actor_config& cfg, actors::actor_host& host, replicator_config rc)
    : host_keeper{std::move(rc.keep_host)}, actors::hosted_actor(cfg, &host),
      cfg_(std::move(rc)) {}

  const char* name() const override { return "cluster_replicator"; }

  caf::behavior make_behavior() override {
    return {
      [this](actors::ring_atom, actors::cluster_view_ptr& v) { view_ = std::move(v); },
      [this](actors::replicate_atom, std::vector<std::string>& keys) {
        if (queue_.empty())
          queue_ = std::move(keys);
        else
          queue_.insert(queue_.end(), std::make_move_iterator(keys.begin()),
                        std::make_move_iterator(keys.end()));
        if (!flush_sent_) {  // after the mail that is already here
          flush_sent_ = true;
          send(this, flush_atom::value);
        }
      },
      [this](flush_atom) {
        flush_sent_ = false;
        start(std::move(queue_), replicate_retries, {}, 0);
        queue_.clear();
      },
      [this](actors::replicate_atom, std::vector<std::string>& keys, uint64_t tag) {
        start(std::move(keys), 0, caf::actor_cast<caf::actor>(current_sender()), tag);
      },
      [this](retry_atom, std::vector<std::string>& keys, uint32_t retries) {
        --retries_waiting_;
        start(std::move(keys), retries, {}, 0);
      },
      [this](actors::settle_atom, uint64_t tag) {
        settle_waiters_.emplace_back(caf::actor_cast<caf::actor>(current_sender()), tag);
        settle_check();
      },
      [this](actors::result_atom, uint64_t tag, storage::result_batch& rs) {
        on_result(tag, rs);
      },
      [this](tick_atom) { on_tick(); },
    };
  }

  void on_exit() override {
    for (auto& [id, j] : jobs_)
      if (j.waiter)
        send(j.waiter, actors::replicated_atom::value, j.waiter_tag, false);
    for (auto& [waiter, tag] : settle_waiters_)
      send(waiter, actors::replicated_atom::value, tag, false);
    settle_waiters_.clear();
    jobs_.clear();
    tags_.clear();
    routes_.clear();
    view_.reset();  // the view holds this actor: no cycle may outlive it
    cfg_.shards.clear();
    cfg_.link = nullptr;
  }

private:
  enum class phase : uint32_t { reading, sending };

  struct job {
    std::vector<std::string> keys;  // sorted, each once
    uint32_t retries = 0;
    caf::actor waiter;  // answered (replicated_atom, waiter_tag, ok), or null
    uint64_t waiter_tag = 0;
    phase at = phase::reading;
    bool read_done = false;  // every read answered (or expired); sends once earlier jobs did
    uint64_t deadline_ms = 0;  // the current phase's answers are not awaited after this
    storage::result_batch state;  // each key's local state (reading)
    std::vector<char> failed;     // per key: not read, or not taken by some owner
    std::vector<uint64_t> tags;   // answers this phase still waits for
  };

  // One answer awaited: a shard's reads or an owner's replicated state, for keys[index[i]].
  struct awaited {
    uint64_t job;
    std::vector<size_t> index;
    std::string owner;  // replicated state: the member it goes to (else empty)
    bool parked = false;      // held back (owner_route::parked); `held` is the apply
    storage::op_batch held;
  };

  // Where replicated state to one member goes while some of it is still unanswered. Later
  // state must not arrive before earlier state, and only one destination keeps them in order:
  // a data link orders its own fallback to RPC, the peer actor is one RPC connection, but a
  // link and the peer actor (or two links, before and after the member's address changed)
  // race each other. So when the member's destination changes while state is in flight to
  // the old one, new state is held back (parked) until the old one has answered everything,
  // then goes, in order, to the destination of that moment.
  struct owner_route {
    caf::actor dest;
    size_t in_flight = 0;
    std::vector<uint64_t> parked;  // tags, in order
  };

  void start(std::vector<std::string> keys, uint32_t retries, caf::actor waiter, uint64_t tag) {
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    auto v = view_;
    if (keys.empty() || !v || !v->ring || v->replicas <= 1) {
      if (waiter)
        send(waiter, actors::replicated_atom::value, tag, true);  // no other owner to wait for
      settle_check();
      return;
    }
    if (cfg_.shards.empty()) {
      if (waiter)
        send(waiter, actors::replicated_atom::value, tag, false);
      settle_check();
      return;
    }
    uint64_t id = next_job_++;
    auto& j = jobs_[id];
    j.keys = std::move(keys);
    j.retries = retries;
    j.waiter = std::move(waiter);
    j.waiter_tag = tag;
    j.state.resize(j.keys.size());
    j.failed.assign(j.keys.size(), 0);
    // One read per shard: gets that count no access and bump nothing.
    size_t n = cfg_.shards.size();
    std::vector<storage::op_batch> reads(n);
    std::vector<std::vector<size_t>> index(n);
    for (size_t i = 0; i < j.keys.size(); ++i) {
      size_t s = n == 1 ? 0 : actors::key_hash(j.keys[i]) % n;
      storage::op o;
      o.kind = storage::op_kind::get;
      o.key = j.keys[i];
      o.get_bump = false;
      o.counted = false;
      o.keep_token = true;  // copying state hands out no win token
      reads[s].push_back(std::move(o));
      index[s].push_back(i);
    }
    for (size_t s = 0; s < n; ++s)
      if (!reads[s].empty())
        await(id, j, cfg_.shards[s], actors::exec_atom::value, std::move(reads[s]),
              std::move(index[s]));
    arm(j);
  }

  // Registers answer `a` as awaited by its job `j`; returns its tag.
  uint64_t expect(job& j, awaited a) {
    uint64_t tag = next_tag_++;
    tags_.emplace(tag, std::move(a));
    j.tags.push_back(tag);
    return tag;
  }

  template <class Atom>
  void await(uint64_t id, job& j, const caf::actor& dest, Atom atom, storage::op_batch ops,
             std::vector<size_t> index) {
    send(dest, atom, expect(j, awaited{id, std::move(index), {}, false, {}}), std::move(ops));
  }

  // Replicated state for member `owner`, whose destination now is `dest`: sent, or parked
  // behind state still in flight to its previous destination.
  void apply_to(uint64_t id, job& j, const std::string& owner, const caf::actor& dest,
                storage::op_batch ops, std::vector<size_t> index) {
    auto& r = routes_[owner];
    if (r.in_flight > 0 && (r.dest != dest || !r.parked.empty())) {
      r.parked.push_back(expect(j, awaited{id, std::move(index), owner, true, std::move(ops)}));
      return;
    }
    send_apply(r, dest, expect(j, awaited{id, std::move(index), owner, false, {}}),
               std::move(ops));
  }

  // Sends an apply by route `r`, now to `dest`, and counts it in flight there.
  void send_apply(owner_route& r, const caf::actor& dest, uint64_t tag, storage::op_batch ops) {
    r.dest = dest;
    ++r.in_flight;
    send(dest, actors::apply_atom::value, tag, std::move(ops));
  }

  // An apply to `a.owner` was answered or given up on. Once nothing is in flight to the
  // member, what was parked goes to its destination of now, in order.
  void settled(const awaited& a) {
    if (a.owner.empty() || a.parked)
      return;  // not replicated state, or never sent (the owner_route forgets it below)
    auto it = routes_.find(a.owner);
    if (it == routes_.end() || --it->second.in_flight > 0)
      return;
    auto& r = it->second;
    auto parked = std::move(r.parked);
    r.parked.clear();
    caf::actor dest;
    if (auto v = view_; v && v->ring)
      if (auto id = v->ring->find(a.owner))
        dest = destination(*v, *id);
    uint64_t now = now_ms();
    for (auto tag : parked) {
      auto t = tags_.find(tag);
      if (t == tags_.end())
        continue;  // its job gave up on it
      t->second.parked = false;
      auto jt = jobs_.find(t->second.job);
      bool late = jt == jobs_.end() || jt->second.deadline_ms <= now;
      if (!dest || late) {  // the member is gone, or its job is about to give up on it: not
        t->second.owner.clear();  // taken (answered later, not from in here)
        send(this, actors::result_atom::value, tag, storage::result_batch{});
        continue;
      }
      send_apply(r, dest, tag, std::move(t->second.held));
    }
    if (r.in_flight == 0)
      routes_.erase(it);
  }

  // Member `id` of `v`'s ring: its data link, else its RPC peer actor (null: neither).
  caf::actor destination(const actors::cluster_view& v, uint32_t id) {
    caf::actor dest;
    if (cfg_.link)
      dest = cfg_.link(v, id);
    if (!dest && id < v.peers.size())
      dest = v.peers[id];
    return dest;
  }

  void arm(job& j) {
    j.deadline_ms = now_ms() + cfg_.timeout_ms + 1000;
    if (ticking_)
      return;
    ticking_ = true;
    delayed_send(this, tick_every(), tick_atom::value);
  }

  std::chrono::milliseconds tick_every() const {
    return std::chrono::milliseconds(replicate_tick_ms(cfg_.timeout_ms));
  }

  void on_tick() {
    uint64_t now = now_ms();
    std::vector<uint64_t> late;
    for (auto& [id, j] : jobs_)
      if (j.deadline_ms <= now)
        late.push_back(id);
    for (auto id : late) {
      // Expiring one job may have moved another one on to its next phase, with a new
      // deadline (a job waiting in send_in_order sends when the one before it is given up).
      auto jt = jobs_.find(id);
      if (jt != jobs_.end() && jt->second.deadline_ms <= now)
        expire(id);
    }
    if (jobs_.empty()) {
      ticking_ = false;
      return;
    }
    delayed_send(this, tick_every(), tick_atom::value);
  }

  void on_result(uint64_t tag, storage::result_batch& rs) {
    auto it = tags_.find(tag);
    if (it == tags_.end())
      return;  // expired
    auto a = std::move(it->second);
    tags_.erase(it);
    settled(a);
    auto jt = jobs_.find(a.job);
    if (jt == jobs_.end())
      return;
    auto& j = jt->second;
    j.tags.erase(std::find(j.tags.begin(), j.tags.end(), tag));
    for (size_t i = 0; i < a.index.size(); ++i) {
      bool answered = i < rs.size();
      if (j.at == phase::reading) {
        if (answered)
          j.state[a.index[i]] = std::move(rs[i]);
        else
          j.state[a.index[i]].st = storage::status::unavailable;
      } else if (!answered || rs[i].st == storage::status::unavailable ||
                 rs[i].st == storage::status::not_sent) {
        j.failed[a.index[i]] = 1;
      }
    }
    if (j.tags.empty())
      advance(a.job, j);
  }

  // The current phase of job `id` waited long enough: what did not answer counts as not read
  // (reading) or not taken (sending).
  void expire(uint64_t id) {
    auto jt = jobs_.find(id);
    if (jt == jobs_.end())
      return;
    auto& j = jt->second;
    for (auto tag : j.tags) {
      auto it = tags_.find(tag);
      if (it == tags_.end())
        continue;
      for (auto i : it->second.index) {
        j.failed[i] = 1;
        j.state[i].st = storage::status::unavailable;
      }
      auto a = std::move(it->second);
      tags_.erase(it);
      settled(a);
    }
    j.tags.clear();
    advance(id, j);
  }

  // Every answer of the current phase is in (or expired).
  void advance(uint64_t id, job& j) {
    if (j.at == phase::reading) {
      j.read_done = true;
      send_in_order();
    } else {
      finish(id, j);
    }
  }

  // Jobs send state in the order they read it (by id: a shard answers reads in the order they
  // were sent), so that a later job's newer state of a key never leaves before an earlier
  // job's older state of it, when the earlier one waited for another, slower shard. A job
  // whose reads are in waits for the earlier ones still reading (at most until their phase's
  // deadline, which comes first).
  void send_in_order() {
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      auto cur = it++;
      auto& j = cur->second;
      if (j.at != phase::reading)
        continue;
      if (!j.read_done)
        break;
      send_state(cur->first, j);  // may end this job (erased), never another one
    }
  }

  // Each key's state to its other live owners, one batch per owner.
  void send_state(uint64_t id, job& j) {
    j.at = phase::sending;
    auto v = view_;
    if (!v || !v->ring) {
      finish(id, j);
      return;
    }
    struct batch {
      storage::op_batch ops;
      std::vector<size_t> index;
    };
    std::unordered_map<uint32_t, batch> per_owner;
    std::vector<ring::member_id> owners(v->replicas);
    for (size_t i = 0; i < j.keys.size(); ++i) {
      auto& r = j.state[i];
      if (r.st != storage::status::hit && r.st != storage::status::miss) {
        // Never mistake an unread state (unavailable, a read that failed for want of memory)
        // for an absence: that would delete the replicas' copies of an item held here.
        j.failed[i] = 1;
        continue;
      }
      size_t k = v->ring->live_owner_ids(ring::key_hash(j.keys[i]), v->replicas, owners.data());
      storage::op o;
      if (r.st == storage::status::hit) {
        o = storage::item_copy(j.keys[i], r, storage::store_mode::set);
      } else if (r.deleted_cas != 0) {
        // The delete (expiry, flush_all) noted here, with its point on the CAS clock: a
        // replica notes that point, not the moment the copy reached it, which may come after
        // a later write here (a read checked there then took that write for deleted).
        o = storage::delete_copy(j.keys[i], r.deleted_cas);
      } else {
        // Absent with no delete noted here (a delete whose CAS matched nothing, a removal
        // of a value refused as too large, a note pushed out): a delete's copy without a
        // point, which removes any item there and notes nothing, as nothing was noted here.
        // (A plain remove was noted at the replica's own clock, which may be later than this
        // node's next write of the key: its copy would have been refused there.)
        o = storage::delete_copy(j.keys[i], 0);
      }
      r = {};  // the value is copied: release the pinned slice now
      for (size_t m = 0; m < k; ++m)
        if (owners[m] != v->self) {
          auto& b = per_owner[owners[m]];
          b.ops.push_back(o);
          b.index.push_back(i);
        }
    }
    for (auto& [owner, b] : per_owner) {
      const std::string& name = v->ring->member(owner).name;
      caf::actor dest = destination(*v, owner);
      if (!dest) {
        for (auto i : b.index)
          j.failed[i] = 1;
        continue;
      }
      // In pieces a data link call carries (call_max_ops, call_max_bytes): a larger batch would
      // leave the link for the RPC exactly under load. In order, to one destination.
      size_t first = 0;
      for (size_t end : call_part_ends(b.ops)) {
        storage::op_batch part(std::make_move_iterator(b.ops.begin() + first),
                               std::make_move_iterator(b.ops.begin() + end));
        std::vector<size_t> index(b.index.begin() + first, b.index.begin() + end);
        apply_to(id, j, name, dest, std::move(part), std::move(index));
        first = end;
      }
    }
    if (j.tags.empty())
      finish(id, j);
    else
      arm(j);
  }

  void finish(uint64_t id, job& j) {
    std::vector<std::string> again;
    for (size_t i = 0; i < j.keys.size(); ++i)
      if (j.failed[i])
        again.push_back(std::move(j.keys[i]));
    if (j.waiter)
      send(j.waiter, actors::replicated_atom::value, j.waiter_tag, again.empty());
    if (!again.empty() && j.retries > 0) {
      uint64_t delay = replicate_backoff_ms;
      for (unsigned a = j.retries; a < replicate_retries; ++a)
        delay *= 3;
      ++retries_waiting_;
      delayed_send(this, std::chrono::milliseconds(delay), retry_atom::value, std::move(again),
                   j.retries - 1);
    }
    jobs_.erase(id);
    settle_check();
  }

  // Answers the settle waiters once nothing is queued, in flight or waiting for a retry.
  void settle_check() {
    if (settle_waiters_.empty() || !queue_.empty() || flush_sent_ || !jobs_.empty() ||
        retries_waiting_ != 0)
      return;
    for (auto& [waiter, tag] : settle_waiters_)
      send(waiter, actors::replicated_atom::value, tag, true);
    settle_waiters_.clear();
  }

  replicator_config cfg_;
  actors::cluster_view_ptr view_;
  std::vector<std::string> queue_;  // background keys not yet started
  bool flush_sent_ = false;
  bool ticking_ = false;  // a tick_atom is on its way
  size_t retries_waiting_ = 0;  // retry_atoms on their way (their backoff runs)
  std::vector<std::pair<caf::actor, uint64_t>> settle_waiters_;  // (settle_atom) senders, tags
  uint64_t next_job_ = 1;
  uint64_t next_tag_ = 1;
  std::map<uint64_t, job> jobs_;  // by id: the order they started (and read) in
  std::unordered_map<uint64_t, awaited> tags_;
  std::unordered_map<std::string, owner_route> routes_;  // by member name
};

} // namespace

caf::actor spawn_replicator(caf::actor_system& sys, actors::actor_host& host,
                            replicator_config cfg) {
  return sys.spawn<replicator>(host, std::move(cfg));
}

} // namespace bifrost::cluster
