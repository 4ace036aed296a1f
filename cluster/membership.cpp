#include "cluster/membership.hpp"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

namespace bifrost::cluster {

const char* to_string(member_state s) noexcept {
  switch (s) {
    case member_state::alive: return "alive";
    case member_state::suspect: return "suspect";
    case member_state::dead: return "dead";
    case member_state::left: return "left";
  }
  return "?";
}

const char* to_string(message_kind k) noexcept {
  switch (k) {
    case message_kind::ping: return "ping";
    case message_kind::ping_req: return "ping_req";
    case message_kind::ack: return "ack";
    case message_kind::join: return "join";
    case message_kind::join_reply: return "join_reply";
    case message_kind::leave: return "leave";
    case message_kind::gossip: return "gossip";
  }
  return "?";
}

const char* to_string(event_kind k) noexcept {
  switch (k) {
    case event_kind::joined: return "joined";
    case event_kind::alive_again: return "alive_again";
    case event_kind::suspect: return "suspect";
    case event_kind::dead: return "dead";
    case event_kind::left: return "left";
    case event_kind::updated: return "updated";
    case event_kind::restarted: return "restarted";
    case event_kind::forgotten: return "forgotten";
  }
  return "?";
}

namespace {

// The order in which updates about one member override each other.
inline std::pair<uint64_t, int> precedence(uint64_t incarnation, member_state s) noexcept {
  return {incarnation, static_cast<int>(s)};
}

constexpr uint64_t k_never = std::numeric_limits<uint64_t>::max();

}  // namespace

bool valid_update(const member_update& u) noexcept {
  return !u.name.empty() && u.name.size() <= k_max_member_name &&
         u.address.size() <= k_max_member_address &&
         u.client_address.size() <= k_max_member_address && u.weight <= k_max_member_weight &&
         u.incarnation <= k_max_incarnation;
}

membership::membership(local_member self, membership_config cfg, uint64_t now_ms)
    : self_(std::move(self.name)), address_(std::move(self.address)), cfg_(cfg) {
  rng_ = hash64(self_) ^ cfg_.seed;
  name_check_until_ms_ = now_ms + k_name_check_window_ms;
  if (cfg_.probe_interval_ms == 0) cfg_.probe_interval_ms = 1;
  if (cfg_.gossip_interval_ms == 0) cfg_.gossip_interval_ms = 1;
  record me;
  me.info = member_info{self_, address_, std::move(self.client_address), self.weight, 0,
                        member_state::alive, now_ms, self.instance};
  members_.emplace(self_, std::move(me));
  // A random phase so that nodes started together do not probe in lockstep.
  next_probe_ms_ = now_ms + rand_below(cfg_.probe_interval_ms);
  next_gossip_ms_ = now_ms + cfg_.gossip_interval_ms;
  next_sync_ms_ = now_ms + cfg_.sync_interval_ms + rand_below(cfg_.probe_interval_ms);
  next_reconnect_ms_ = now_ms + cfg_.reconnect_interval_ms;
  joined_ = true;
}

uint64_t membership::rand() noexcept {  // splitmix64
  uint64_t z = (rng_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

size_t membership::rand_below(size_t n) noexcept { return n == 0 ? 0 : rand() % n; }

uint64_t membership::incarnation() const noexcept {
  return members_.find(self_)->second.info.incarnation;
}

member_update membership::to_update(const member_info& i) {
  member_update u{i.name, i.address, i.client_address, i.weight, i.incarnation, i.state};
  u.instance = i.instance;
  return u;
}

member_update membership::self_update() const {
  return to_update(members_.find(self_)->second.info);
}

std::vector<member_update> membership::full_state() const {
  std::vector<member_update> res;
  res.reserve(members_.size());
  for (const auto& [name, rec] : members_) res.push_back(to_update(rec.info));
  return res;
}

std::vector<member_update> membership::full_state_for(const std::string& to, uint64_t now_ms,
                                                      bool reply) {
  auto res = full_state();
  // Its first news from us is that it was dead: always in a join's reply (a retried join may
  // have lost the first), else at most once per probe interval.
  if (const member_update* d = death_to_tell(to, now_ms, reply)) res.push_back(*d);
  return res;
}

const member_update* membership::death_to_tell(const std::string& name, uint64_t now_ms,
                                               bool always) {
  auto g = graveyard_.find(name);
  if (g == graveyard_.end() || (!always && now_ms < g->second.told_ms)) return nullptr;
  g->second.told_ms = now_ms + cfg_.probe_interval_ms;
  ++stats_.told_forgotten;
  return &g->second.last;
}

message membership::ack_of(const message& ping) const {
  message a = make(message_kind::ack, ping.from);
  a.target = self_;
  a.seq = ping.seq;
  return a;
}

message membership::make(message_kind k, const std::string& to) const {
  message m;
  m.kind = k;
  m.from = self_;
  m.from_address = address_;
  m.to = to;
  return m;
}

// ---- public calls ---------------------------------------------------------------------------

output membership::join(const std::vector<std::string>& seeds, uint64_t now_ms) {
  output out = join_(seeds, now_ms);
  stamp_ages(out, now_ms);
  return out;
}

output membership::join_(const std::vector<std::string>& seeds, uint64_t now_ms) {
  output out;
  seeds_.clear();
  for (const auto& s : seeds)
    if (s != address_ && std::find(seeds_.begin(), seeds_.end(), s) == seeds_.end())
      seeds_.push_back(s);
  if (seeds_.empty() || leaving_) return out;
  joined_ = false;
  for (const auto& s : seeds_) {
    message m = make(message_kind::join, {});
    m.members = full_state();
    send(out, s, std::move(m));
  }
  next_join_ms_ = now_ms + cfg_.join_retry_ms;
  return out;
}

output membership::leave(uint64_t now_ms) {
  output out = leave_(now_ms);
  stamp_ages(out, now_ms);
  return out;
}

output membership::leave_(uint64_t now_ms) {
  output out;
  if (leaving_) return out;
  leaving_ = true;
  if (!duplicate_name_.empty()) return out;  // the name is another's: announce nothing
  auto& me = members_.find(self_)->second.info;
  me.state = member_state::left;
  me.state_since_ms = now_ms;
  probe_.active = false;
  relays_.clear();
  enqueue(self_update());
  // Tell everyone we know directly; gossip repeats it for those who miss this message.
  for (const auto& [name, rec] : members_) {
    if (name == self_ || !probe_eligible(rec.info.state)) continue;
    send(out, rec.info.address, make(message_kind::leave, name), self_);
  }
  // A join not answered yet may still be taken (a paused seed reads it later): tell the
  // seeds too, or a seed that admits us then declares us dead rather than left.
  if (!joined_)
    for (const auto& s : seeds_)
      send(out, s, make(message_kind::leave, {}), self_);
  return out;
}

bool membership::done_leaving() const noexcept {
  if (!leaving_) return false;
  // Nobody to tell (a lone node, or one whose seeds never answered): done. Those told are the
  // gossip targets at the leave: alive, suspect, or dead for less than gossip_to_dead_ms (a
  // member just cut off by a partition may be alive and still route keys here).
  const auto self = members_.find(self_);
  const uint64_t left_at = self != members_.end() ? self->second.info.state_since_ms : 0;
  bool anyone = false;
  for (const auto& [name, r] : members_)
    anyone = anyone || (name != self_ && gossip_target(r.info, left_at));
  if (!anyone) return true;
  for (const auto& p : queue_)
    if (p.update.name == self_) return false;
  return true;
}

output membership::tick(uint64_t now_ms) {
  output out = tick_(now_ms);
  flush_tells(out);  // (none expected: a timer never brings a member back)
  stamp_ages(out, now_ms);
  return out;
}

output membership::tick_(uint64_t now_ms) {
  output out;
  if (leaving_) {
    run_gossip(now_ms, out);
    return out;
  }
  if (!joined_ && now_ms >= next_join_ms_) {
    for (const auto& s : seeds_) {
      message m = make(message_kind::join, {});
      m.members = full_state();
      send(out, s, std::move(m));
    }
    next_join_ms_ = now_ms + cfg_.join_retry_ms;
  }
  if (name_check_.active && now_ms >= name_check_.deadline_ms) {
    // Nobody answered for our name: it was an earlier instance of us. Refute it now.
    name_check_.active = false;
    name_checked_ = true;
    auto pending = std::move(name_check_.pending);
    name_check_.pending.clear();
    for (const auto& u : pending) apply_self(u, now_ms, out);
  }
  run_forget(now_ms, out);  // (first: no full state of this tick carries what it forgot)
  run_probe(now_ms, out);
  run_suspicion(now_ms, out);
  run_gossip(now_ms, out);
  run_sync(now_ms, out);
  run_retells(now_ms, out);
  for (auto it = relays_.begin(); it != relays_.end();)
    it = now_ms >= it->second.expires_ms ? relays_.erase(it) : std::next(it);
  return out;
}

uint64_t membership::next_tick_ms() const noexcept {
  uint64_t t = k_never;
  const bool pending_gossip = !queue_.empty();
  if (pending_gossip) t = std::min(t, next_gossip_ms_);
  if (leaving_) return t;
  if (!joined_) t = std::min(t, next_join_ms_);
  if (name_check_.active) t = std::min(t, name_check_.deadline_ms);
  if (probe_.active) {
    if (!probe_.ping_req_sent) t = std::min(t, probe_.start_ms + cfg_.ping_timeout_ms);
    t = std::min(t, probe_.start_ms + cfg_.ping_timeout_ms + cfg_.indirect_timeout_ms);
  } else if (!order_.empty()) {
    t = std::min(t, next_probe_ms_);
  }
  for (const auto& [name, rec] : members_) {
    if (rec.info.state == member_state::suspect)
      t = std::min(t, rec.info.state_since_ms + cfg_.suspicion_timeout_ms);
    else if (cfg_.forget_after_ms && name != self_ && is_gone(rec.info.state))
      t = std::min(t, rec.info.state_since_ms > k_never - cfg_.forget_after_ms
                          ? k_never
                          : rec.info.state_since_ms + cfg_.forget_after_ms);
  }
  if (cfg_.sync_interval_ms) t = std::min(t, next_sync_ms_);
  if (cfg_.reconnect_interval_ms) t = std::min(t, next_reconnect_ms_);
  for (const auto& [name, r] : retells_) t = std::min(t, r.next_ms);
  return t;
}

output membership::on_message(const message& m, uint64_t now_ms) {
  output out = on_message_(m, now_ms);
  stamp_ages(out, now_ms);
  return out;
}

output membership::on_message_(const message& m, uint64_t now_ms) {
  output out;
  ++stats_.messages_received;
  if (m.from == self_ && !m.from_address.empty() && m.from_address != address_) {
    // Another process with our name. A newcomer checking whether the name is taken pings the
    // address the cluster holds for it: answer, so it learns that the name is in use.
    ++stats_.name_conflicts;
    if (m.kind == message_kind::ping && m.to == self_ && !leaving_) {  // leaving: it is theirs
      out.send.push_back(envelope{m.from_address, ack_of(m)});
      ++stats_.messages_sent;
    } else if (m.kind == message_kind::ack && name_check_.active &&
               m.from_address == name_check_.address && m.seq == name_check_.seq) {
      name_check_.active = false;
      duplicate_name_ = m.from_address;
    }
    return out;
  }
  if ((!m.to.empty() && m.to != self_) || m.from == self_) return out;
  if (m.from.size() > k_max_member_name || m.from_address.size() > k_max_member_address ||
      m.target.size() > k_max_member_name || m.target_address.size() > k_max_member_address) {
    ++stats_.invalid_updates;
    return out;
  }
  if (leaving_) {
    // We are gone: answer anything that expects an answer with the announcement.
    if (m.kind == message_kind::ping || m.kind == message_kind::ping_req ||
        m.kind == message_kind::join) {
      message g = make(message_kind::leave, m.from);
      g.updates.push_back(self_update());
      out.send.push_back({m.from_address, std::move(g)});
      ++stats_.messages_sent;
    }
    return out;
  }
  // A member that talks to us but that we have never heard of (we restarted without seeds,
  // e.g. the first node, while the others still hold our old record as alive): exchange full
  // state with it now, instead of waiting for a sync that may take several sync intervals.
  const bool sender_unknown = !m.from.empty() && !m.from_address.empty() &&
                              m.kind != message_kind::join && m.kind != message_kind::join_reply &&
                              members_.find(m.from) == members_.end();
  const uint64_t refutations = stats_.refutations;
  bool stale_about_us = false;
  for (const auto* list : {&m.updates, &m.members}) {
    for (const auto& u : *list) {
      apply(u, now_ms, out);
      stale_about_us |= u.name == self_ && u.state != member_state::alive;
    }
  }
  if (stale_about_us && stats_.refutations == refutations) {
    // The sender still holds an old suspicion (or death) of us that we refuted earlier, and
    // our refutation may have run out of retransmissions before reaching it: answer it
    // directly. (A fresh refutation above was already sent to every member.)
    message g = make(message_kind::gossip, m.from);
    g.updates.push_back(self_update());
    out.send.push_back(envelope{m.from_address, std::move(g)});
    ++stats_.messages_sent;
  }

  switch (m.kind) {
    case message_kind::ping: {
      send(out, m.from_address, ack_of(m), m.from);
      break;
    }
    case message_kind::ping_req: {
      if (m.target == self_) {  // odd, but the answer is obvious
        send(out, m.from_address, ack_of(m), m.from);
        break;
      }
      const uint64_t s = ++seq_;
      relays_[s] = relay{m.from, m.from_address, m.seq, m.target,
                         now_ms + cfg_.ping_timeout_ms + cfg_.indirect_timeout_ms};
      message p = make(message_kind::ping, m.target);
      p.seq = s;
      send(out, m.target_address, std::move(p), m.target);
      break;
    }
    case message_kind::ack: {
      auto r = relays_.find(m.seq);
      if (r != relays_.end() && r->second.target == m.from) {
        message a = make(message_kind::ack, r->second.requester);
        a.target = r->second.target;
        a.seq = r->second.requester_seq;
        const std::string to_address = r->second.requester_address;
        const std::string about = r->second.requester;
        relays_.erase(r);
        send(out, to_address, std::move(a), about);
      } else if (probe_.active && m.seq == probe_.seq && m.target == probe_.target) {
        probe_.active = false;
      }
      break;
    }
    case message_kind::leave:
    case message_kind::gossip:
      break;
    case message_kind::join: {
      message r = make(message_kind::join_reply, m.from);
      r.members = full_state_for(m.from, now_ms, true);  // (one we forgot: with its death)
      send(out, m.from_address, std::move(r), m.from);
      break;
    }
    case message_kind::join_reply:
      joined_ = true;
      break;
  }
  if (!first_contact_)
    for (const auto& [name, rec] : members_)
      if (name != self_ && probe_eligible(rec.info.state)) {
        first_contact_ = true;
        break;
      }
  // A member we forgot talks to us (a partition healed after forget_after_ms): tell it it
  // was dead, as its record would have, so that it refutes and becomes a member again. (A
  // join's reply carried it already.) After the answer: the RPC returns the first message
  // for the caller as its reply.
  if (!m.from_address.empty() && m.kind != message_kind::join) {
    if (const member_update* d = death_to_tell(m.from, now_ms, false))
      out.send.push_back(death_message(m.from, m.from_address, *d));
  }
  // Deaths told to members back from the dead (apply), after the answer too.
  flush_tells(out);
  // After the answer (the RPC returns the first message for the caller as its reply).
  if (sender_unknown && now_ms >= next_unknown_sync_ms_) {
    next_unknown_sync_ms_ = now_ms + cfg_.probe_interval_ms;
    message j = make(message_kind::join, m.from);
    j.members = full_state_for(m.from, now_ms, false);
    send(out, m.from_address, std::move(j), m.from);
  }
  return out;
}

// ---- state changes --------------------------------------------------------------------------

void membership::emit(event_kind k, const member_info& i, output& out) {
  out.events.push_back(member_event{k, i});
  ++version_;
}

void membership::apply(const member_update& u, uint64_t now_ms, output& out) {
  if (!valid_update(u)) {
    ++stats_.invalid_updates;
    return;
  }
  if (u.name == self_) {
    apply_self(u, now_ms, out);
    return;
  }
  const bool gone = is_gone(u.state);
  // Dead and left records take their time from the oldest report (age_ms): every node then
  // forgets the member at about the same time.
  const uint64_t since = gone ? since_of(u.age_ms, now_ms) : now_ms;
  auto it = members_.find(u.name);
  if (it == members_.end()) {
    auto g = graveyard_.find(u.name);
    if (g != graveyard_.end()) {
      const member_update& last = g->second.last;
      if (precedence(u.incarnation, u.state) <= precedence(last.incarnation, last.state))
        return;  // a stale record of a member we forgot
      if (gone) {  // it came back and went again elsewhere meanwhile: still forgotten
        g->second.last = u;
        g->second.last.age_ms = 0;
        return;
      }
      graveyard_.erase(g);  // back, at a newer incarnation: a member again
    } else if (gone && cfg_.forget_after_ms && u.age_ms >= cfg_.forget_after_ms) {
      bury(u, now_ms);  // the others forget it now too: only its name is kept
      return;
    }
    record r;
    r.info = member_info{u.name,   u.address,     u.client_address, u.weight,
                         u.incarnation, u.state, since,         u.instance};
    it = members_.emplace(u.name, std::move(r)).first;
    if (probe_eligible(u.state)) {
      order_insert(u.name);
      emit(event_kind::joined, it->second.info, out);
    }
    // A tombstone for a member we never knew: kept (so stale alives lose), no event.
    enqueue(u);
    return;
  }
  member_info& c = it->second.info;
  // Instances are ordered (local_member::instance): a record of an earlier process is stale
  // news (below). A later process still needs a higher incarnation: a second live process
  // given a taken name (it joins at 0) must not take the record before its name check.
  const bool earlier_process = u.instance != 0 && c.instance != 0 && u.instance < c.instance;
  if (precedence(u.incarnation, u.state) <= precedence(c.incarnation, c.state)) {
    // The same death from a node that has known it longer: the oldest report counts.
    if (gone && u.incarnation == c.incarnation && u.state == c.state && since < c.state_since_ms)
      c.state_since_ms = since;
    return;
  }
  const member_info prev = c;
  // A record of a process before the one we know (gossip still on its way, at an incarnation
  // the new one has not passed yet): its incarnation and state count, but the addresses and
  // weight are the new process's, and it travels on as the new one's (which refutes it if
  // it is a suspicion, and at worst raises its incarnation once for an alive one). Never the
  // other way round: one that took an earlier process for the current one would rewrite the
  // current one's refutations onto it, and they would never end.
  member_update fwd = u;
  if (earlier_process) {
    fwd.address = prev.address;
    fwd.client_address = prev.client_address;
    fwd.weight = prev.weight;
    fwd.instance = prev.instance;
  }
  c.address = fwd.address;
  c.client_address = fwd.client_address;
  c.weight = fwd.weight;
  c.incarnation = u.incarnation;
  c.state = u.state;
  c.state_since_ms = since;
  // Another process under its name, while we had it alive (or suspect), and still is: it
  // restarted before failure detection noticed. (From dead or left, its return is a change of
  // state anyway.)
  const bool news = fwd.instance != 0 && fwd.instance != prev.instance;
  const bool restarted =
    news && prev.instance != 0 && probe_eligible(prev.state) && probe_eligible(u.state);
  if (news)
    c.instance = fwd.instance;
  enqueue(fwd);
  if (probe_eligible(prev.state) && !probe_eligible(c.state)) order_remove(c.name);
  if (!probe_eligible(prev.state) && probe_eligible(c.state)) order_insert(c.name);
  if (restarted)
    emit(event_kind::restarted, c, out);
  if (is_gone(prev.state) && probe_eligible(c.state) && !c.address.empty()) {
    // Back from the dead at a higher incarnation: it may have refuted only a suspicion (one
    // of our messages from before its death, delivered late) and not know that we had it
    // dead. Tell it (membership::apply_self counts it), as its return means hand-backs.
    // (Queued after the answer to the message being handled: on_message_.)
    member_update death = to_update(prev);
    tells_.push_back(death_message(c.name, c.address, death));
    retells_[c.name] =
      retell{std::move(death), c.instance, now_ms + cfg_.probe_interval_ms, k_tell_repeats};
  }
  if (c.state != prev.state) {
    switch (c.state) {
      case member_state::alive: emit(event_kind::alive_again, c, out); break;
      case member_state::suspect: emit(event_kind::suspect, c, out); break;
      case member_state::dead: emit(event_kind::dead, c, out); break;
      case member_state::left: emit(event_kind::left, c, out); break;
    }
  } else if (!restarted && (c.address != prev.address ||
                            c.client_address != prev.client_address || c.weight != prev.weight)) {
    // Also for a suspect or dead record: the ring and the data links take addresses from the
    // view, so a member that came back elsewhere must not stay at its old address.
    emit(event_kind::updated, c, out);
  }
}

void membership::apply_self(const member_update& u, uint64_t now_ms, output& out) {
  if (leaving_ || !duplicate_name_.empty()) return;
  member_info& me = members_.find(self_)->second.info;
  if (u.incarnation < me.incarnation) {  // stale: our newer alive will win everywhere
    // Unless it is a death at an incarnation we left by refuting only a suspicion: those
    // that had us dead take our alive as a return (and hand back what changed meanwhile),
    // so it counts as one (stats::declared_gone).
    if (is_gone(u.state) && u.incarnation >= gone_counted_below_)
      count_gone(u, now_ms);
    return;
  }
  // A record of our name and address from a later process than ours: our clock went back
  // since an earlier start here. We take an instance above it, or our refutations would
  // count as stale. (At another address: another live node given our name, which the name
  // check below and the refutation deal with as before.)
  if (u.instance > me.instance && u.instance < UINT64_MAX && u.address == me.address)
    me.instance = u.instance + 1;
  if (u.state == member_state::alive && u.incarnation == me.incarnation &&
      u.address == me.address && u.client_address == me.client_address &&
      u.weight == me.weight && (u.instance == 0 || u.instance == me.instance))
    return;  // agrees with us
  if (!name_checked_ && now_ms < name_check_until_ms_ && u.address != address_ &&
      !u.address.empty() &&
      (u.state == member_state::alive || u.state == member_state::suspect)) {
    // Just started, we find our name alive at another address: a previous instance of us that
    // died (restarted elsewhere), or another live node given the same name. Ask it before
    // taking the name over: no answer within a probe's timeouts, and we refute as usual.
    if (!name_check_.active) {
      name_check_.active = true;
      name_check_.address = u.address;
      name_check_.seq = ++seq_;
      name_check_.deadline_ms = now_ms + cfg_.ping_timeout_ms + cfg_.indirect_timeout_ms;
      message p = make(message_kind::ping, self_);
      p.seq = name_check_.seq;
      out.send.push_back(envelope{u.address, std::move(p)});
      ++stats_.messages_sent;
    }
    if (name_check_.pending.empty() || !(name_check_.pending.back() == u))
      name_check_.pending.push_back(u);
    return;
  }
  // Someone holds a worse (suspect/dead/left) or foreign (other address or instance: a
  // process before us) record of us at >= our incarnation: refute with a higher one.
  if (is_gone(u.state))
    count_gone(u, now_ms);
  // At the bound the refutation stays there (the others accept it; it cannot beat a hostile
  // dead record at the bound itself, which no member issues: incarnations grow by one).
  me.incarnation = std::min(u.incarnation + 1, k_max_incarnation);
  me.state_since_ms = now_ms;
  ++stats_.refutations;
  const member_update alive = self_update();
  enqueue(alive);
  // A refutation races the suspicion timers of every member: tell each one directly, on top
  // of (and without spending) the gossip budget.
  for (const auto& [name, rec] : members_) {
    if (name == self_ || !probe_eligible(rec.info.state)) continue;
    message g = make(message_kind::gossip, name);
    g.updates.push_back(alive);
    out.send.push_back(envelope{rec.info.address, std::move(g)});
    ++stats_.messages_sent;
  }
}

void membership::flush_tells(output& out) {
  for (auto& e : tells_)
    out.send.push_back(std::move(e));
  tells_.clear();
}

envelope membership::death_message(const std::string& name, const std::string& address,
                                   const member_update& death) {
  message t = make(message_kind::gossip, name);
  t.updates.push_back(death);
  ++stats_.messages_sent;
  return envelope{address, std::move(t)};
}

void membership::run_retells(uint64_t now_ms, output& out) {
  for (auto it = retells_.begin(); it != retells_.end();) {
    retell& r = it->second;
    auto m = members_.find(it->first);
    const bool same = m != members_.end() && probe_eligible(m->second.info.state) &&
                      (r.instance == 0 || m->second.info.instance == r.instance);
    if (!same) {
      it = retells_.erase(it);
      continue;
    }
    if (now_ms >= r.next_ms) {
      out.send.push_back(death_message(it->first, m->second.info.address, r.death));
      ++stats_.deaths_told_again;
      r.next_ms = now_ms + cfg_.probe_interval_ms;
      if (--r.left == 0) {
        it = retells_.erase(it);
        continue;
      }
    }
    ++it;
  }
}

void membership::count_gone(const member_update& u, uint64_t now_ms) {
  ++stats_.declared_gone;
  // Just started: in the first message that told us of other members (however late it
  // came: seeds down, no --join), or within the first seconds — unless the record names
  // this very process (its instance): then the cluster had it dead while it ran (a partition
  // or a pause in its first seconds), not a process before it.
  const uint64_t mine = members_.find(self_)->second.info.instance;
  const bool this_process = u.instance != 0 && u.instance == mine;
  if ((!first_contact_ || now_ms < name_check_until_ms_) && !this_process)
    ++stats_.declared_gone_at_start;
  gone_counted_below_ = std::max(gone_counted_below_, u.incarnation + 1);
}

// ---- dissemination --------------------------------------------------------------------------

void membership::enqueue(const member_update& u) {
  for (auto& p : queue_) {
    if (p.update.name == u.name) {
      p.update = u;
      p.transmits = 0;
      p.order = ++queue_order_;
      return;
    }
  }
  queue_.push_back(pending{u, 0, ++queue_order_});
}

uint32_t membership::retransmit_limit() const noexcept {
  size_t n = 0;
  for (const auto& [name, rec] : members_)
    if (probe_eligible(rec.info.state)) ++n;
  uint32_t log2n = 1;  // ceil(log2(n + 1)), at least 1
  while ((size_t(1) << log2n) < n + 1) ++log2n;
  return std::max<uint32_t>(1, cfg_.retransmit_mult) * log2n;
}

std::vector<member_update> membership::piggyback(std::string_view about) {
  std::vector<member_update> res;
  // Buddy system: a message to a suspect member carries the suspicion.
  if (!about.empty()) {
    auto it = members_.find(about);
    if (it != members_.end() && it->second.info.state == member_state::suspect)
      res.push_back(to_update(it->second.info));
  }
  if (queue_.empty() || cfg_.max_piggyback == 0) return res;
  std::vector<size_t> idx(queue_.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  // Updates about the receiver first, then the least transmitted, then the newest.
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    const pending& x = queue_[a];
    const pending& y = queue_[b];
    const bool xa = x.update.name == about, ya = y.update.name == about;
    if (xa != ya) return xa;
    if (x.transmits != y.transmits) return x.transmits < y.transmits;
    return x.order > y.order;
  });
  const size_t take = std::min<size_t>(idx.size(), cfg_.max_piggyback);
  const uint32_t limit = retransmit_limit();
  for (size_t k = 0; k < take; ++k) {
    pending& p = queue_[idx[k]];
    if (res.empty() || !(res.front() == p.update)) res.push_back(p.update);
    ++p.transmits;
  }
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                              [&](const pending& p) { return p.transmits >= limit; }),
               queue_.end());
  return res;
}

void membership::send(output& out, const std::string& address, message m,
                      std::string_view about) {
  m.updates = piggyback(about);
  out.send.push_back(envelope{address, std::move(m)});
  ++stats_.messages_sent;
}

// ---- probe order and random picks -----------------------------------------------------------

void membership::order_insert(const std::string& name) {
  if (std::find(order_.begin(), order_.end(), name) != order_.end()) return;
  const size_t pos = rand_below(order_.size() + 1);
  order_.insert(order_.begin() + static_cast<std::ptrdiff_t>(pos), name);
  if (pos < order_pos_) ++order_pos_;
}

void membership::order_remove(const std::string& name) {
  auto it = std::find(order_.begin(), order_.end(), name);
  if (it == order_.end()) return;
  const size_t pos = static_cast<size_t>(it - order_.begin());
  order_.erase(it);
  if (pos < order_pos_) --order_pos_;
}

const membership::record* membership::next_probe_target() {
  for (size_t tries = 0; tries <= order_.size(); ++tries) {
    if (order_.empty()) return nullptr;
    if (order_pos_ >= order_.size()) {
      order_pos_ = 0;
      if (cfg_.reshuffle_each_round) {
        for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rand_below(i)]);
      }
    }
    auto it = members_.find(order_[order_pos_++]);
    if (it != members_.end() && probe_eligible(it->second.info.state)) return &it->second;
  }
  return nullptr;
}

std::vector<const membership::record*> membership::random_members(size_t count,
                                                                  std::string_view exclude,
                                                                  bool gossip_targets,
                                                                  uint64_t now_ms) {
  std::vector<const record*> cand;
  for (const auto& [name, rec] : members_) {
    if (name == self_ || name == exclude) continue;
    const bool ok = rec.info.state == member_state::alive ||
                    (gossip_targets && gossip_target(rec.info, now_ms));
    if (ok) cand.push_back(&rec);
  }
  // Partial Fisher-Yates: the first `count` entries become a uniform random sample.
  const size_t take = std::min(count, cand.size());
  for (size_t i = 0; i < take; ++i) std::swap(cand[i], cand[i + rand_below(cand.size() - i)]);
  cand.resize(take);
  return cand;
}

// ---- timers ---------------------------------------------------------------------------------

void membership::run_probe(uint64_t now_ms, output& out) {
  if (probe_.active) {
    auto it = members_.find(probe_.target);
    if (it == members_.end() || !probe_eligible(it->second.info.state)) {
      probe_.active = false;  // declared dead or left meanwhile: nothing left to find out
    } else {
      if (!probe_.ping_req_sent && now_ms >= probe_.start_ms + cfg_.ping_timeout_ms) {
        probe_.ping_req_sent = true;
        const member_info& t = it->second.info;
        for (const record* r : random_members(cfg_.indirect_probes, t.name, false, now_ms)) {
          message m = make(message_kind::ping_req, r->info.name);
          m.target = t.name;
          m.target_address = t.address;
          m.seq = probe_.seq;
          send(out, r->info.address, std::move(m), r->info.name);
          ++stats_.ping_reqs;
        }
      }
      if (now_ms >= probe_.start_ms + cfg_.ping_timeout_ms + cfg_.indirect_timeout_ms) {
        probe_.active = false;
        ++stats_.probe_failures;
        member_update u = to_update(it->second.info);
        if (u.state == member_state::alive) {
          u.state = member_state::suspect;
          apply(u, now_ms, out);
        }
      }
    }
  }
  if (!probe_.active && now_ms >= next_probe_ms_) {
    next_probe_ms_ += cfg_.probe_interval_ms;
    if (next_probe_ms_ <= now_ms) next_probe_ms_ = now_ms + cfg_.probe_interval_ms;
    if (const record* r = next_probe_target()) {
      probe_ = probe_state{true, false, r->info.name, ++seq_, now_ms};
      message m = make(message_kind::ping, r->info.name);
      m.seq = probe_.seq;
      send(out, r->info.address, std::move(m), r->info.name);
      ++stats_.probes;
    }
  }
}

void membership::run_suspicion(uint64_t now_ms, output& out) {
  std::vector<member_update> expired;
  for (const auto& [name, rec] : members_) {
    if (name != self_ && rec.info.state == member_state::suspect &&
        now_ms >= rec.info.state_since_ms + cfg_.suspicion_timeout_ms) {
      member_update u = to_update(rec.info);
      u.state = member_state::dead;
      expired.push_back(std::move(u));
    }
  }
  for (const auto& u : expired) apply(u, now_ms, out);
}

void membership::run_gossip(uint64_t now_ms, output& out) {
  if (now_ms < next_gossip_ms_) return;
  next_gossip_ms_ += cfg_.gossip_interval_ms;
  if (next_gossip_ms_ <= now_ms) next_gossip_ms_ = now_ms + cfg_.gossip_interval_ms;
  if (queue_.empty()) return;
  for (const record* r : random_members(cfg_.gossip_fanout, {}, true, now_ms)) {
    if (queue_.empty()) break;
    send(out, r->info.address, make(message_kind::gossip, r->info.name), r->info.name);
  }
}

void membership::run_sync(uint64_t now_ms, output& out) {
  if (cfg_.sync_interval_ms && now_ms >= next_sync_ms_) {
    next_sync_ms_ = now_ms + cfg_.sync_interval_ms;
    for (const record* r : random_members(1, {}, false, now_ms)) {
      message m = make(message_kind::join, r->info.name);
      m.members = full_state();
      send(out, r->info.address, std::move(m), r->info.name);
    }
  }
  if (cfg_.reconnect_interval_ms && now_ms >= next_reconnect_ms_) {
    next_reconnect_ms_ = now_ms + cfg_.reconnect_interval_ms;
    // A random dead member: a healed partition, or a node restarted without seeds, finds its
    // way back. Every k_grave_push_every-th interval the push goes to one we forgot dead
    // instead (told of its death): slower, so that many forgotten names do not crowd out the
    // dead members; not to those that left (they come back with --join).
    const bool grave_turn = ++reconnects_ % k_grave_push_every == 0;
    std::vector<std::pair<const std::string*, const std::string*>> dead;  // name, address
    if (grave_turn)
      for (const auto& [name, g] : graveyard_)
        if (g.last.state == member_state::dead) dead.emplace_back(&name, &g.last.address);
    if (dead.empty())
      for (const auto& [name, rec] : members_)
        if (rec.info.state == member_state::dead) dead.emplace_back(&name, &rec.info.address);
    if (!dead.empty()) {
      const auto [name, address] = dead[rand_below(dead.size())];
      message m = make(message_kind::join, *name);
      m.members = full_state_for(*name, now_ms, false);
      send(out, *address, std::move(m), *name);
    }
  }
}

void membership::run_forget(uint64_t now_ms, output& out) {
  if (!cfg_.forget_after_ms) return;
  for (auto it = members_.begin(); it != members_.end();) {
    const member_info& i = it->second.info;
    if (it->first == self_ || !is_gone(i.state) || now_ms - i.state_since_ms < cfg_.forget_after_ms ||
        now_ms < i.state_since_ms) {
      ++it;
      continue;
    }
    bury(to_update(i), now_ms);
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                [&](const pending& p) { return p.update.name == it->first; }),
                 queue_.end());
    order_remove(it->first);
    ++stats_.forgotten;
    emit(event_kind::forgotten, i, out);
    it = members_.erase(it);
  }
}

void membership::bury(const member_update& u, uint64_t now_ms) {
  grave& g = graveyard_[u.name];
  g.last = u;
  g.last.age_ms = 0;
  g.buried_ms = now_ms;
  g.told_ms = 0;
  while (graveyard_.size() > std::max<size_t>(cfg_.graveyard_max, 1)) {
    auto oldest = graveyard_.begin();
    for (auto j = graveyard_.begin(); j != graveyard_.end(); ++j)
      if (j->second.buried_ms < oldest->second.buried_ms) oldest = j;
    graveyard_.erase(oldest);
  }
}

void membership::stamp_ages(output& out, uint64_t now_ms) const {
  for (auto& e : out.send) {
    for (auto* list : {&e.msg.updates, &e.msg.members}) {
      for (auto& u : *list) {
        if (!is_gone(u.state)) continue;
        auto it = members_.find(u.name);
        const bool ours = it != members_.end() && it->second.info.incarnation == u.incarnation &&
                          it->second.info.state == u.state;
        u.age_ms = ours && now_ms > it->second.info.state_since_ms
                       ? now_ms - it->second.info.state_since_ms
                       : 0;
      }
    }
  }
}

// ---- views ----------------------------------------------------------------------------------

std::vector<member_info> membership::members() const {
  std::vector<member_info> res;
  res.reserve(members_.size());
  for (const auto& [name, rec] : members_) res.push_back(rec.info);
  return res;
}

std::vector<std::string> membership::alive_names() const {
  std::vector<std::string> res;
  for (const auto& [name, rec] : members_)
    if (rec.info.state == member_state::alive) res.push_back(name);
  return res;
}

bool membership::has_address(std::string_view address) const {
  for (const auto& [name, rec] : members_)
    if (rec.info.address == address) return true;
  return false;
}

const member_info* membership::find(std::string_view name) const {
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : &it->second.info;
}

std::vector<ring_member> membership::ring_members() const {
  std::vector<ring_member> res;
  for (const auto& [name, rec] : members_) {
    const member_info& i = rec.info;
    if (i.state == member_state::left) continue;
    res.push_back(ring_member{i.name, i.address, i.weight, i.state != member_state::dead});
  }
  return res;
}

}  // namespace bifrost::cluster
