// SWIM membership: the message handlers one by one, then whole clusters of membership
// instances on a simulated network (virtual clock, latency, loss, partitions, crashes).
#include "cluster/membership.hpp"

#include <boost/test/unit_test.hpp>

#include <limits>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <ostream>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <vector>

using namespace bifrost::cluster;

namespace bifrost::cluster {  // printable in BOOST_TEST failures
std::ostream& operator<<(std::ostream& o, member_state s) { return o << to_string(s); }
std::ostream& operator<<(std::ostream& o, message_kind k) { return o << to_string(k); }
std::ostream& operator<<(std::ostream& o, event_kind k) { return o << to_string(k); }
}  // namespace bifrost::cluster

namespace {

// ---- a deterministic simulated network ------------------------------------------------------

struct logged_event {
  uint64_t at;
  size_t observer;
  event_kind kind;
  std::string member;
  uint64_t incarnation;

  bool operator==(const logged_event& o) const {
    return at == o.at && observer == o.observer && kind == o.kind && member == o.member &&
           incarnation == o.incarnation;
  }
};

// N membership instances exchanging messages through a virtual network. Time advances in
// 1 ms steps; in each step the messages due are delivered (in send order), then every node
// whose next_tick_ms() has come is ticked. Everything random comes from one seeded generator.
class sim_net {
public:
  explicit sim_net(uint64_t seed, membership_config cfg = {}) : rng_(seed), cfg_(cfg) {
    cfg_.seed = seed;
  }

  double loss = 0.0;         // probability that a message is dropped
  uint32_t min_latency = 1;  // ms, inclusive
  uint32_t max_latency = 2;
  std::vector<logged_event> events;
  uint64_t now = 0;
  uint64_t delivered = 0, dropped = 0;

  // Adds and starts a node; with `seeds` it joins through their addresses.
  size_t add(const std::string& name, const std::vector<size_t>& seeds = {}) {
    nodes_.push_back(node{name, name + ":7000", nullptr, false});
    start(nodes_.size() - 1, seeds);
    return nodes_.size() - 1;
  }
  // (Re)starts node i as a fresh process (incarnation 0, a new instance), optionally at a new
  // address.
  void start(size_t i, const std::vector<size_t>& seeds, std::string address = {}) {
    node& n = nodes_[i];
    if (!address.empty()) n.address = address;
    n.m = std::make_unique<membership>(
      local_member{n.name, n.address, n.name + ":11211", 1, ++instances_}, cfg_, now);
    n.up = true;
    std::vector<std::string> seed_addresses;
    for (size_t s : seeds) seed_addresses.push_back(nodes_[s].address);
    handle(i, n.m->join(seed_addresses, now));
  }
  // A crash: the node stops ticking and every message to or from it is lost.
  void kill(size_t i) { nodes_[i].up = false; }
  void leave(size_t i) { handle(i, nodes_[i].m->leave(now)); }
  // Drops all traffic between i and j (both directions) while blocked.
  void block(size_t i, size_t j, bool on = true) {
    if (on) {
      blocked_.insert({i, j});
      blocked_.insert({j, i});
    } else {
      blocked_.erase({i, j});
      blocked_.erase({j, i});
    }
  }
  void isolate(size_t i, bool on = true) {
    for (size_t j = 0; j < nodes_.size(); ++j)
      if (j != i) block(i, j, on);
  }

  membership& m(size_t i) { return *nodes_[i].m; }
  bool up(size_t i) const { return nodes_[i].up; }
  size_t size() const { return nodes_.size(); }
  const std::string& name(size_t i) const { return nodes_[i].name; }
  const std::string& address(size_t i) const { return nodes_[i].address; }

  // Runs until `until` or until `done()` holds after a step; returns the time it stopped.
  uint64_t run(uint64_t until, const std::function<bool()>& done = {}) {
    while (now < until) {
      ++now;
      while (!queue_.empty() && queue_.top().at <= now) {
        flight f = queue_.top();
        queue_.pop();
        deliver(f);
      }
      for (size_t i = 0; i < nodes_.size(); ++i)
        if (nodes_[i].up && nodes_[i].m->next_tick_ms() <= now) handle(i, nodes_[i].m->tick(now));
      if (done && done()) break;
    }
    return now;
  }

  // Every running node that has not left sees exactly the running, not-leaving nodes alive,
  // and every stopped node it knows of as dead or left (not suspect).
  bool views_agree() const {
    std::vector<std::string> expect;
    for (const auto& n : nodes_)
      if (n.up && !n.m->leaving()) expect.push_back(n.name);
    std::sort(expect.begin(), expect.end());
    for (const auto& n : nodes_) {
      if (!n.up || n.m->leaving()) continue;
      if (n.m->alive_names() != expect) return false;
      for (const auto& other : nodes_) {
        if (other.up) continue;
        const member_info* r = n.m->find(other.name);
        if (r && r->state != member_state::dead && r->state != member_state::left) return false;
      }
    }
    return true;
  }

  // First time >= after at which observer logged `kind` about member (0 = never).
  uint64_t first_event(size_t observer, event_kind kind, const std::string& member,
                       uint64_t after) const {
    for (const auto& e : events)
      if (e.observer == observer && e.kind == kind && e.member == member && e.at >= after)
        return e.at;
    return 0;
  }
  size_t count_events(event_kind kind, uint64_t after = 0) const {
    return static_cast<size_t>(std::count_if(events.begin(), events.end(), [&](const auto& e) {
      return e.kind == kind && e.at >= after;
    }));
  }

private:
  struct node {
    std::string name;
    std::string address;
    std::unique_ptr<membership> m;
    bool up;
  };
  struct flight {
    uint64_t at;
    uint64_t order;
    size_t from;
    std::string to_address;
    message msg;
    bool operator>(const flight& o) const {
      return at != o.at ? at > o.at : order > o.order;
    }
  };

  uint64_t next_rand() {  // splitmix64
    uint64_t z = (rng_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next_rand() >> 11) / double(uint64_t(1) << 53); }

  void handle(size_t i, output out) {
    for (const auto& e : out.events)
      events.push_back({now, i, e.kind, e.member.name, e.member.incarnation});
    if (!nodes_[i].up) return;
    for (auto& env : out.send) {
      if (loss > 0 && uniform() < loss) {
        ++dropped;
        continue;
      }
      const uint64_t lat = min_latency + next_rand() % (max_latency - min_latency + 1);
      queue_.push(flight{now + lat, order_++, i, env.to_address, std::move(env.msg)});
    }
  }

  void deliver(const flight& f) {
    for (size_t j = 0; j < nodes_.size(); ++j) {
      if (nodes_[j].address != f.to_address) continue;
      if (!nodes_[j].up || !nodes_[f.from].up || blocked_.count({f.from, j})) {
        ++dropped;
        return;
      }
      ++delivered;
      handle(j, nodes_[j].m->on_message(f.msg, now));
      return;
    }
    ++dropped;  // nobody listens there
  }

  uint64_t rng_;
  membership_config cfg_;
  std::vector<node> nodes_;
  std::priority_queue<flight, std::vector<flight>, std::greater<flight>> queue_;
  uint64_t order_ = 0;
  uint64_t instances_ = 0;
  std::set<std::pair<size_t, size_t>> blocked_;
};

// How many seeds a simulation test runs: `dflt`, or $BIFROST_SIM_SEEDS for a longer
// measurement (e.g. BIFROST_SIM_SEEDS=1000 test_cluster --run_test=membership_simulation).
uint64_t sim_seeds(uint64_t dflt) {
  const char* env = std::getenv("BIFROST_SIM_SEEDS");
  return env && std::atoll(env) > 0 ? static_cast<uint64_t>(std::atoll(env)) : dflt;
}

// Starts n nodes at t=0, all joining through node 0.
void start_cluster(sim_net& net, size_t n) {
  net.add("node0");
  for (size_t i = 1; i < n; ++i) net.add("node" + std::to_string(i), {0});
}

// n nodes started together and settled for 3 s, every view agreeing.
sim_net settled_cluster(uint64_t seed, size_t n) {
  sim_net net(seed);
  start_cluster(net, n);
  net.run(3000);
  BOOST_REQUIRE(net.views_agree());
  return net;
}

// n nodes that forget a member dead or left for forget_ms, settled for 3 s.
sim_net forgetting_cluster(uint64_t seed, uint64_t forget_ms, size_t n) {
  membership_config cfg;
  cfg.forget_after_ms = forget_ms;
  sim_net net(seed, cfg);
  start_cluster(net, n);
  net.run(3000);
  return net;
}

// ---- helpers for the handler tests ----------------------------------------------------------

message msg(message_kind k, const std::string& from, const std::string& to) {
  message m;
  m.kind = k;
  m.from = from;
  m.from_address = from + ":7000";
  m.to = to;
  return m;
}

member_update upd(const std::string& name, uint64_t inc, member_state s) {
  return member_update{name, name + ":7000", "", 1, inc, s};
}

message gossip_of(std::vector<member_update> u) {
  message m = msg(message_kind::gossip, "x", "");
  m.updates = std::move(u);
  return m;
}

const envelope* find_send(const output& o, message_kind k) {
  for (const auto& e : o.send)
    if (e.msg.kind == k) return &e;
  return nullptr;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(membership_handlers)

BOOST_AUTO_TEST_CASE(updates_follow_incarnation_then_state_precedence) {
  membership m(local_member{"self", "self:7000", "", 1});
  auto state_of = [&](const char* n) { return m.find(n)->state; };

  auto out = m.on_message(gossip_of({upd("b", 1, member_state::alive)}), 10);
  BOOST_REQUIRE_EQUAL(out.events.size(), 1u);
  BOOST_TEST(out.events[0].kind == event_kind::joined);

  out = m.on_message(gossip_of({upd("b", 1, member_state::suspect)}), 20);
  BOOST_TEST(state_of("b") == member_state::suspect);
  BOOST_TEST(out.events.at(0).kind == event_kind::suspect);
  // Same incarnation alive does not refute; a stale dead does not kill.
  m.on_message(gossip_of({upd("b", 1, member_state::alive), upd("b", 0, member_state::dead)}), 30);
  BOOST_TEST(state_of("b") == member_state::suspect);
  // Only the member's own higher incarnation does.
  out = m.on_message(gossip_of({upd("b", 2, member_state::alive)}), 40);
  BOOST_TEST(state_of("b") == member_state::alive);
  BOOST_TEST(out.events.at(0).kind == event_kind::alive_again);
  // Dead at the current incarnation wins over alive; left wins over dead.
  out = m.on_message(gossip_of({upd("b", 2, member_state::dead)}), 50);
  BOOST_TEST(state_of("b") == member_state::dead);
  out = m.on_message(gossip_of({upd("b", 2, member_state::left)}), 60);
  BOOST_TEST(state_of("b") == member_state::left);
  BOOST_TEST(out.events.at(0).kind == event_kind::left);
  BOOST_TEST(m.find("b")->state_since_ms == 60u);
  // A dead record for an unknown member is a silent tombstone that blocks stale alives.
  out = m.on_message(gossip_of({upd("c", 3, member_state::dead)}), 70);
  BOOST_TEST(out.events.empty());
  m.on_message(gossip_of({upd("c", 3, member_state::alive)}), 80);
  BOOST_TEST(state_of("c") == member_state::dead);
  BOOST_TEST(m.alive_names() == std::vector<std::string>{"self"});
}

// A node with nobody alive or suspect to tell is done leaving at once (bifrostd's stop waited
// up to 1 s for a lone node's announcement); one with a live member keeps gossiping it.
BOOST_AUTO_TEST_CASE(leaving_with_nobody_to_tell_is_done_at_once) {
  membership lone(local_member{"self", "self:7000", "", 1});
  BOOST_TEST(!lone.done_leaving());
  lone.leave(10);
  BOOST_TEST(lone.done_leaving());

  membership gone(local_member{"self", "self:7000", "", 1});
  gone.on_message(gossip_of({upd("b", 1, member_state::alive), upd("c", 1, member_state::left)}),
                  10);
  gone.on_message(gossip_of({upd("b", 1, member_state::dead)}), 20);
  membership gone_now = gone;
  gone.leave(20 + membership_config{}.gossip_to_dead_ms);  // b dead long enough: not told
  BOOST_TEST(gone.done_leaving());
  gone_now.leave(30);  // b just died (a partition?): it is still told, as gossip does
  BOOST_TEST(!gone_now.done_leaving());

  for (auto st : {member_state::alive, member_state::suspect}) {
    membership m(local_member{"self", "self:7000", "", 1});
    m.on_message(gossip_of({upd("b", 1, st), upd("c", 1, member_state::dead)}), 10);
    m.leave(20);
    BOOST_TEST(!m.done_leaving());  // b has to hear of it
  }
}

BOOST_AUTO_TEST_CASE(the_order_of_updates_does_not_change_the_result) {
  std::vector<member_update> ups = {
      upd("b", 0, member_state::alive), upd("b", 0, member_state::suspect),
      upd("b", 1, member_state::alive), upd("b", 1, member_state::dead),
      upd("c", 4, member_state::suspect), upd("c", 2, member_state::left)};
  std::sort(ups.begin(), ups.end(), [](const auto& a, const auto& b) {
    return std::tie(a.name, a.incarnation, a.state) < std::tie(b.name, b.incarnation, b.state);
  });
  std::vector<member_info> first;
  bool have_first = false;
  do {
    membership m(local_member{"self", "self:7000", "", 1});
    for (const auto& u : ups) m.on_message(gossip_of({u}), 1);
    auto got = m.members();
    if (!have_first) {
      first = got;
      have_first = true;
    }
    BOOST_REQUIRE_EQUAL(got.size(), first.size());
    for (size_t i = 0; i < got.size(); ++i) {
      BOOST_REQUIRE(got[i].state == first[i].state);
      BOOST_REQUIRE_EQUAL(got[i].incarnation, first[i].incarnation);
    }
  } while (std::next_permutation(ups.begin(), ups.end(), [](const auto& a, const auto& b) {
    return std::tie(a.name, a.incarnation, a.state) < std::tie(b.name, b.incarnation, b.state);
  }));
  BOOST_TEST(first[0].state == member_state::dead);  // b: dead at 1
  BOOST_TEST(first[1].state == member_state::suspect);  // c: suspect at 4 beats left at 2
}

BOOST_AUTO_TEST_CASE(a_suspected_member_refutes_with_a_higher_incarnation) {
  membership m(local_member{"self", "self:7000", "", 1});
  m.on_message(gossip_of({upd("b", 0, member_state::alive)}), 1);
  m.on_message(gossip_of({upd("self", 0, member_state::suspect)}), 2);
  BOOST_TEST(m.incarnation() == 1u);
  m.on_message(gossip_of({upd("self", 5, member_state::dead)}), 3);
  BOOST_TEST(m.incarnation() == 6u);
  m.on_message(gossip_of({upd("self", 2, member_state::dead)}), 4);  // stale
  BOOST_TEST(m.incarnation() == 6u);
  BOOST_TEST(m.stats().refutations == 2u);
  BOOST_TEST(m.stats().declared_gone == 1u);  // the dead record, not the suspicion
  BOOST_TEST(m.find("self")->state == member_state::alive);
  // The refutation rides on the next message.
  auto out = m.on_message(msg(message_kind::ping, "b", "self"), 5);
  const envelope* ack = find_send(out, message_kind::ack);
  BOOST_REQUIRE(ack);
  bool carried = false;
  for (const auto& u : ack->msg.updates)
    carried |= u.name == "self" && u.incarnation == 6 && u.state == member_state::alive;
  BOOST_TEST(carried);
}

// After a partition heals, TCP may deliver a member's suspicion of us, sent as the cut began,
// before its later messages: we refute the suspicion, and its death of us at the same
// incarnation arrives stale. The others took our alive as a return from the dead all the same
// (and hand us back what changed meanwhile: the service marks our return on declared_gone),
// so that death counts, once; and one who had us dead tells us when we come back.
BOOST_AUTO_TEST_CASE(a_death_heard_after_its_suspicion_was_refuted_counts) {
  membership m(local_member{"self", "self:7000", "", 1}, membership_config{}, 0);
  m.on_message(gossip_of({upd("b", 0, member_state::alive)}), 20000);
  m.on_message(gossip_of({upd("self", 0, member_state::suspect)}), 20001);
  BOOST_TEST(m.incarnation() == 1u);
  BOOST_TEST(m.stats().declared_gone == 0u);
  m.on_message(gossip_of({upd("self", 0, member_state::dead)}), 20002);  // stale, but a death
  BOOST_TEST(m.incarnation() == 1u);  // (no second refutation: our alive at 1 wins)
  BOOST_TEST(m.stats().refutations == 1u);
  BOOST_TEST(m.stats().declared_gone == 1u);
  BOOST_TEST(m.stats().declared_gone_at_start == 0u);  // (a flap, not a restart)
  m.on_message(gossip_of({upd("self", 0, member_state::dead)}), 20003);  // the same again
  m.on_message(gossip_of({upd("self", 0, member_state::left)}), 20004);
  BOOST_TEST(m.stats().declared_gone == 1u);
  m.on_message(gossip_of({upd("self", 1, member_state::dead)}), 20005);  // a new death
  BOOST_TEST(m.incarnation() == 2u);
  BOOST_TEST(m.stats().declared_gone == 2u);

  // The member that had us dead hears our alive and tells us: "self" refuted only the
  // suspicion; "a" had it dead at 0.
  membership a(local_member{"a", "a:7000", "", 1}, membership_config{}, 0);
  membership self(local_member{"self", "self:7000", "", 1}, membership_config{}, 0);
  a.on_message(gossip_of({upd("self", 0, member_state::dead)}), 20000);
  self.on_message(gossip_of({upd("a", 0, member_state::alive)}), 20000);
  self.on_message(gossip_of({upd("self", 0, member_state::suspect)}), 20001);
  BOOST_TEST(self.stats().declared_gone == 0u);
  // Its alive rides on a ping: the ack comes first (the RPC answers the caller with the
  // first message to it), the death after.
  message ping = msg(message_kind::ping, "self", "a");
  ping.updates = {upd("self", 1, member_state::alive)};
  auto out = a.on_message(ping, 20002);
  BOOST_TEST(a.find("self")->state == member_state::alive);
  BOOST_REQUIRE(!out.send.empty());
  BOOST_TEST((out.send.front().msg.kind == message_kind::ack));
  size_t told = 0;
  for (const auto& e : out.send) {
    if (e.to_address != "self:7000")
      continue;
    for (const auto& u : e.msg.updates)
      told += u.name == "self" && u.state == member_state::dead && u.incarnation == 0;
    self.on_message(e.msg, 20003);
  }
  BOOST_TEST(told == 1u);
  BOOST_TEST(self.stats().declared_gone == 1u);
  BOOST_TEST(self.incarnation() == 1u);
  // An alive record that was alive before tells nothing.
  out = a.on_message(gossip_of({upd("self", 2, member_state::alive)}), 20004);
  for (const auto& e : out.send)
    for (const auto& u : e.msg.updates)
      BOOST_TEST(!(u.name == "self" && u.state == member_state::dead));
}

// The death told to a member back from it may be lost (its connection comes back as the
// tell leaves): it is told again once per probe interval, a bounded number of times; the
// member counts it once however many arrive. A member that goes again, or whose name another
// process took, is told no more.
BOOST_AUTO_TEST_CASE(a_death_told_to_a_member_back_from_it_is_told_again) {
  // How many messages in `out` carry "self"'s death at incarnation 0 to self's address.
  const auto deaths_to_self = [](const output& out) {
    size_t n = 0;
    for (const auto& e : out.send)
      if (e.to_address == "self:7000")
        for (const auto& u : e.msg.updates)
          n += u.name == "self" && u.state == member_state::dead && u.incarnation == 0;
    return n;
  };
  membership_config cfg;  // (probe interval 200 ms)
  membership a(local_member{"a", "a:7000", "", 1}, cfg, 0);
  membership self(local_member{"self", "self:7000", "", 1}, cfg, 0);
  a.on_message(gossip_of({upd("self", 0, member_state::dead)}), 20000);
  self.on_message(gossip_of({upd("a", 0, member_state::alive)}), 20000);
  self.on_message(gossip_of({upd("self", 0, member_state::suspect)}), 20001);
  BOOST_TEST(self.incarnation() == 1u);
  auto out = a.on_message(gossip_of({upd("self", 1, member_state::alive)}), 20002);
  BOOST_TEST(deaths_to_self(out) == 1u);  // the tell, lost
  // a's tick at `t`, delivered to self, and self's answers to a (a's probes of self succeed).
  const auto exchange = [&](uint64_t t) {
    out = a.tick(t);
    for (const auto& e : out.send)
      if (e.to_address == "self:7000")
        for (const auto& back : self.on_message(e.msg, t).send)
          if (back.to_address == "a:7000") a.on_message(back.msg, t);
    return deaths_to_self(out);
  };
  BOOST_TEST(a.next_tick_ms() <= 20202u);
  BOOST_TEST(exchange(20201) == 0u);  // not before a probe interval
  size_t told = 0;
  for (uint64_t t = 20202; t <= 23000; t += 50) told += exchange(t);
  BOOST_TEST(told == 5u);
  BOOST_TEST(a.stats().deaths_told_again == 5u);
  BOOST_TEST(self.stats().declared_gone == 1u);  // counted at the first repeat, once
  BOOST_TEST(self.incarnation() == 1u);

  // Gone again after its return: the repeats stop.
  membership b(local_member{"b", "b:7000", "", 1}, cfg, 0);
  b.on_message(gossip_of({upd("self", 0, member_state::dead)}), 20000);
  b.on_message(gossip_of({upd("self", 1, member_state::alive)}), 20002);
  b.on_message(gossip_of({upd("self", 1, member_state::dead)}), 20100);
  told = 0;
  for (uint64_t t = 20202; t <= 23000; t += 50) told += deaths_to_self(b.tick(t));
  BOOST_TEST(told == 0u);
  BOOST_TEST(b.stats().deaths_told_again == 0u);

  // Another process took the name (its instance): the repeats stop.
  membership c(local_member{"c", "c:7000", "", 1}, cfg, 0);
  member_update first = upd("self", 1, member_state::alive);
  first.instance = 11;
  member_update other = upd("self", 2, member_state::alive);
  other.instance = 12;
  c.on_message(gossip_of({upd("self", 0, member_state::dead)}), 20000);
  c.on_message(gossip_of({first}), 20002);
  c.on_message(gossip_of({other}), 20100);
  BOOST_TEST(c.find("self")->instance == 12u);
  told = 0;
  for (uint64_t t = 20202; t <= 23000; t += 50) told += deaths_to_self(c.tick(t));
  BOOST_TEST(told == 0u);
}

BOOST_AUTO_TEST_CASE(updates_out_of_bounds_are_ignored) {
  membership m(local_member{"self", "self:7000", "", 1});
  m.on_message(gossip_of({upd("b", 0, member_state::alive)}), 1);
  // An incarnation at the top of the range would wrap our refutation to 0 (dead forever).
  auto out = m.on_message(
      gossip_of({upd("self", std::numeric_limits<uint64_t>::max(), member_state::dead)}), 2);
  BOOST_TEST(m.incarnation() == 0u);
  BOOST_TEST(m.stats().refutations == 0u);
  BOOST_TEST(m.find("self")->state == member_state::alive);
  // The largest one allowed is refuted without wrapping, by one the others accept.
  auto refuted = m.on_message(gossip_of({upd("self", k_max_incarnation - 1, member_state::suspect)}), 3);
  BOOST_TEST(m.incarnation() == k_max_incarnation);
  membership other(local_member{"other", "other:7000", "", 1});
  other.on_message(gossip_of({upd("self", k_max_incarnation - 1, member_state::suspect)}), 3);
  BOOST_REQUIRE(!refuted.send.empty());
  other.on_message(gossip_of(refuted.send.front().msg.updates), 4);  // it went to b; the same here
  BOOST_TEST(other.find("self")->state == member_state::alive);
  BOOST_TEST(other.find("self")->incarnation == k_max_incarnation);
  // Nor may an update evict a member for good, or ask the ring for billions of points.
  m.on_message(gossip_of({upd("b", k_max_incarnation + 1, member_state::left)}), 4);
  BOOST_TEST(m.find("b")->state == member_state::alive);
  member_update heavy = upd("c", 1, member_state::alive);
  heavy.weight = 4000000000u;
  out = m.on_message(gossip_of({heavy}), 5);
  BOOST_TEST(out.events.empty());
  BOOST_TEST(!m.find("c"));
  heavy.weight = k_max_member_weight;
  out = m.on_message(gossip_of({heavy}), 6);
  BOOST_TEST(out.events.size() == 1u);
  // Names and addresses past their bounds.
  out = m.on_message(gossip_of({upd(std::string(k_max_member_name + 1, 'n'), 1, member_state::alive)}), 7);
  BOOST_TEST(out.events.empty());
  member_update far = upd("d", 1, member_state::alive);
  far.client_address = std::string(k_max_member_address + 1, 'a');
  out = m.on_message(gossip_of({far}), 8);
  BOOST_TEST(out.events.empty());
  BOOST_TEST(m.stats().invalid_updates == 5u);
  // A message whose sender fields are too long is dropped whole (nothing answered).
  message p = msg(message_kind::ping, "b", "self");
  p.from_address = std::string(k_max_member_address + 1, 'x');
  out = m.on_message(p, 9);
  BOOST_TEST(out.send.empty());
  BOOST_TEST(m.stats().invalid_updates == 6u);
}

member_update of_instance(member_update u, uint64_t instance) {
  u.instance = instance;
  return u;
}
std::vector<event_kind> kinds(const output& o) {
  std::vector<event_kind> k;
  for (const auto& e : o.events) k.push_back(e.kind);
  return k;
}
using ev = std::vector<event_kind>;

// A record of a member from another process (instance) than the one we had alive is a
// restart; one without an instance (a peer that predates it) tells nothing.
BOOST_AUTO_TEST_CASE(a_record_from_another_instance_of_a_live_member_is_a_restart) {
  membership m(local_member{"self", "self:7000", "", 1, 11}, membership_config{}, 0);
  auto b = [](uint64_t inc, member_state s, uint64_t instance) {
    return of_instance(upd("b", inc, s), instance);
  };
  BOOST_TEST((kinds(m.on_message(gossip_of({b(0, member_state::alive, 5)}), 10)) ==
              ev{event_kind::joined}));
  BOOST_TEST(kinds(m.on_message(gossip_of({b(1, member_state::suspect, 5)}), 20)).size() == 1u);
  BOOST_TEST((kinds(m.on_message(gossip_of({b(2, member_state::alive, 6)}), 30)) ==
              ev{event_kind::restarted, event_kind::alive_again}));
  BOOST_TEST(m.find("b")->instance == 6u);
  BOOST_TEST(kinds(m.on_message(gossip_of({b(3, member_state::alive, 0)}), 40)).empty());
  BOOST_TEST(m.find("b")->instance == 6u);
  BOOST_TEST(kinds(m.on_message(gossip_of({b(4, member_state::alive, 6)}), 50)).empty());
  // Gossip of the process it replaced, still on its way at a higher incarnation (and its
  // address): stale news, passed on as the new process's.
  member_update stale = b(5, member_state::alive, 5);
  stale.address = "b-before:7000";
  BOOST_TEST(kinds(m.on_message(gossip_of({stale}), 55)).empty());
  BOOST_TEST(m.find("b")->instance == 6u);
  BOOST_TEST(m.find("b")->address == "b:7000");
  bool passed_on = false;
  for (const auto& env : m.tick(1000).send)  // (gossip and probes carry the pending updates)
    for (const auto& u : env.msg.updates)
      if (u.name == "b" && u.incarnation == 5) {
        passed_on = true;
        BOOST_TEST(u.instance == 6u);
        BOOST_TEST(u.address == "b:7000");
      }
  BOOST_TEST(passed_on);
  // A new process first heard of in a suspicion of it is a restart too.
  BOOST_TEST((kinds(m.on_message(gossip_of({b(6, member_state::suspect, 7)}), 60)) ==
              ev{event_kind::restarted, event_kind::suspect}));
  // Back from the dead as another process: its return, as before.
  BOOST_TEST((kinds(m.on_message(gossip_of({b(6, member_state::dead, 7)}), 65)) ==
              ev{event_kind::dead}));
  BOOST_TEST((kinds(m.on_message(gossip_of({b(7, member_state::alive, 8)}), 70)) ==
              ev{event_kind::alive_again}));
}

// Instances are ordered. A node that first heard of a member from its current process (a
// node that joined after the restart) and then hears its predecessor's gossip at a higher
// incarnation takes it as stale: the current process's, at that incarnation. It used to take
// it as news (it had no "replaced" instance to tell it by), then rewrote every refutation of
// the current process onto the earlier one, and the refutations never ended.
BOOST_AUTO_TEST_CASE(a_record_of_an_earlier_process_never_replaces_the_current_one) {
  membership m(local_member{"self", "self:7000", "", 1, 100}, membership_config{}, 0);
  auto b = [](uint64_t inc, member_state s, uint64_t instance, std::string address) {
    member_update u = of_instance(upd("b", inc, s), instance);
    u.address = std::move(address);
    return u;
  };
  // Known first as process 20 (incarnation 4: it refuted its predecessor's record at 3).
  BOOST_TEST((kinds(m.on_message(gossip_of({b(4, member_state::alive, 20, "b2:7000")}), 10)) ==
              ev{event_kind::joined}));
  // Its predecessor (process 10) refuted a suspicion up to 5 before it died: stale.
  BOOST_TEST(kinds(m.on_message(gossip_of({b(5, member_state::alive, 10, "b1:7000")}), 20))
               .empty());
  BOOST_TEST(m.find("b")->instance == 20u);
  BOOST_TEST(m.find("b")->address == "b2:7000");
  BOOST_TEST(m.find("b")->incarnation == 5u);
  // Process 20 refutes (6): taken as it is, and passed on as it is.
  BOOST_TEST(kinds(m.on_message(gossip_of({b(6, member_state::alive, 20, "b2:7000")}), 30))
               .empty());
  BOOST_TEST(m.find("b")->instance == 20u);
  BOOST_TEST(m.find("b")->incarnation == 6u);
  bool passed_on = false;
  for (const auto& env : m.tick(1000).send)
    for (const auto& u : env.msg.updates)
      if (u.name == "b") {
        passed_on = passed_on || u.incarnation == 6;
        BOOST_TEST(u.instance == 20u);
        BOOST_TEST(u.address == "b2:7000");
      }
  BOOST_TEST(passed_on);
  // A suspicion of the earlier process: the current one's to refute.
  BOOST_TEST((kinds(m.on_message(gossip_of({b(7, member_state::suspect, 10, "b1:7000")}), 40)) ==
              ev{event_kind::suspect}));
  BOOST_TEST(m.find("b")->instance == 20u);
  BOOST_TEST(m.find("b")->address == "b2:7000");
  // A later process needs a higher incarnation, as any record (a second live process given
  // the name joins at 0 and must not take the record before its name check)...
  BOOST_TEST(kinds(m.on_message(gossip_of({b(7, member_state::suspect, 30, "b3:7000")}), 50))
               .empty());
  BOOST_TEST(m.find("b")->instance == 20u);
  // ...and with one, it is a restart.
  BOOST_TEST((kinds(m.on_message(gossip_of({b(8, member_state::alive, 30, "b3:7000")}), 60)) ==
              ev{event_kind::restarted, event_kind::alive_again}));
  BOOST_TEST(m.find("b")->instance == 30u);
  BOOST_TEST(m.find("b")->address == "b3:7000");
  // The earlier process, even at a higher incarnation, is stale from now on.
  BOOST_TEST(kinds(m.on_message(gossip_of({b(9, member_state::alive, 20, "b2:7000")}), 70))
               .empty());
  BOOST_TEST(m.find("b")->instance == 30u);
  BOOST_TEST(m.find("b")->address == "b3:7000");
}

// A process whose clock went back since an earlier start hears of that start's (larger)
// instance under its name: it takes one above it, so its refutation is not stale news.
BOOST_AUTO_TEST_CASE(a_process_that_hears_of_a_later_instance_of_itself_takes_one_above) {
  membership m(local_member{"self", "self:7000", "", 1, 50}, membership_config{}, 0);
  member_update later = upd("self", 2, member_state::alive);
  later.instance = 90;
  later.address = "self:7000";
  m.on_message(gossip_of({later}), 10);
  BOOST_TEST(m.incarnation() == 3u);
  const auto me = m.find("self");
  BOOST_REQUIRE(me != nullptr);
  BOOST_TEST(me->instance == 91u);
  // Another node, which held the record of 90, takes the refutation as news.
  membership other(local_member{"other", "other:7000", "", 1, 7}, membership_config{}, 0);
  other.on_message(gossip_of({later}), 10);
  member_update refuted = upd("self", 3, member_state::alive);
  refuted.instance = me->instance;
  other.on_message(gossip_of({refuted}), 20);
  BOOST_TEST(other.find("self")->instance == 91u);
  BOOST_TEST(other.find("self")->incarnation == 3u);
  // One at another address is another live node given our name: no instance taken from it.
  member_update elsewhere = upd("self", 3, member_state::alive);
  elsewhere.instance = 500;
  elsewhere.address = "elsewhere:7000";
  m.on_message(gossip_of({elsewhere}), 30);
  BOOST_TEST(m.find("self")->instance == 91u);
}

// A new process under our name hears its predecessor's record, alive at our incarnation and
// address: it refutes, so that the others learn of the restart.
BOOST_AUTO_TEST_CASE(a_record_of_us_from_another_instance_is_refuted) {
  membership m(local_member{"self", "self:7000", "", 1, 11}, membership_config{}, 0);
  member_update old = upd("self", 0, member_state::alive);
  old.instance = 10;
  auto out = m.on_message(gossip_of({old}), 10);
  BOOST_TEST(m.incarnation() == 1u);
  BOOST_TEST(m.stats().refutations == 1u);
  member_update same = upd("self", 1, member_state::alive);
  same.instance = 11;
  m.on_message(gossip_of({same}), 20);
  same.instance = 0;  // (from a peer that predates instances)
  m.on_message(gossip_of({same}), 30);
  BOOST_TEST(m.incarnation() == 1u);
}

BOOST_AUTO_TEST_CASE(a_restart_is_told_apart_from_a_flap) {
  // Restarted without --join, this node hears of the cluster only when a member pushes its
  // full state to it, maybe long after it started: that first contact still counts as "at
  // start" (the service then drops what it recovered). A later dead record (a flap) does not.
  membership m(local_member{"self", "self:7000", "", 1}, membership_config{}, 0);
  message push = msg(message_kind::join, "b", "self");
  push.members = {upd("b", 0, member_state::alive), upd("self", 2, member_state::dead)};
  m.on_message(push, 60000);
  BOOST_TEST(m.stats().declared_gone == 1u);
  BOOST_TEST(m.stats().declared_gone_at_start == 1u);
  BOOST_TEST(m.incarnation() == 3u);
  m.on_message(gossip_of({upd("self", 3, member_state::dead)}), 70000);
  BOOST_TEST(m.stats().declared_gone == 2u);
  BOOST_TEST(m.stats().declared_gone_at_start == 1u);
}

// In its first seconds a node takes a death of its name for one of the process before it (a
// restart: the service drops what it recovered) — unless the record names this process's
// instance: then it was cut off or paused while it ran, and keeps its items.
BOOST_AUTO_TEST_CASE(a_death_of_this_very_process_in_its_first_seconds_is_no_restart) {
  membership m(local_member{"self", "self:7000", "", 1, 500}, membership_config{}, 0);
  m.on_message(gossip_of({upd("b", 0, member_state::alive)}), 1000);
  member_update mine = upd("self", 0, member_state::dead);
  mine.instance = 500;
  m.on_message(gossip_of({mine}), 3000);  // inside the first 10 s
  BOOST_TEST(m.stats().declared_gone == 1u);
  BOOST_TEST(m.stats().declared_gone_at_start == 0u);
  BOOST_TEST(m.incarnation() == 1u);
  member_update before = upd("self", 1, member_state::dead);
  before.instance = 400;  // an earlier process's record: a restart
  m.on_message(gossip_of({before}), 3500);
  BOOST_TEST(m.stats().declared_gone == 2u);
  BOOST_TEST(m.stats().declared_gone_at_start == 1u);
  member_update unknown = upd("self", 2, member_state::dead);  // instance 0: as before
  m.on_message(gossip_of({unknown}), 4000);
  BOOST_TEST(m.stats().declared_gone_at_start == 2u);
}

BOOST_AUTO_TEST_CASE(a_dead_member_is_forgotten_by_the_age_of_its_oldest_report) {
  membership_config cfg;
  cfg.forget_after_ms = 60000;
  membership m(local_member{"self", "self:7000", "", 1}, cfg, 0);
  const uint64_t t0 = 1000000;
  // Dead for 50 s at the sender: forgotten here 10 s later, not a minute later.
  auto d = upd("gone", 4, member_state::dead);
  d.age_ms = 50000;
  m.on_message(gossip_of({upd("b", 0, member_state::alive), d}), t0);
  BOOST_REQUIRE(m.find("gone") != nullptr);
  BOOST_TEST(m.next_tick_ms() <= t0 + 10000);
  // The same record from a node that has known it longer moves the time earlier.
  auto older = d;
  older.age_ms = 55000;
  m.on_message(gossip_of({older}), t0 + 1000);
  auto out = m.tick(t0 + 5999);
  BOOST_TEST(m.find("gone") != nullptr);
  out = m.tick(t0 + 6000);
  BOOST_TEST(m.find("gone") == nullptr);
  BOOST_TEST(m.graveyard_size() == 1u);
  BOOST_TEST(m.stats().forgotten == 1u);
  bool forgotten_event = false;
  for (const auto& e : out.events)
    forgotten_event |= e.kind == event_kind::forgotten && e.member.name == "gone";
  BOOST_TEST(forgotten_event);
  for (const auto& r : m.ring_members()) BOOST_TEST(r.name != "gone");
  // Stale records of it lose: the same or an older incarnation, dead or alive.
  m.on_message(gossip_of({upd("gone", 4, member_state::alive), upd("gone", 4, member_state::dead),
                          upd("gone", 3, member_state::left)}),
               t0 + 7000);
  BOOST_TEST(m.find("gone") == nullptr);
  // A dead record older than forget_after of a member never seen is not taken up at all.
  auto ancient = upd("ancient", 1, member_state::left);
  ancient.age_ms = 60000;
  m.on_message(gossip_of({ancient}), t0 + 8000);
  BOOST_TEST(m.find("ancient") == nullptr);
  BOOST_TEST(m.graveyard_size() == 2u);
  // It comes back at a newer incarnation: a member again.
  m.on_message(gossip_of({upd("gone", 5, member_state::alive)}), t0 + 9000);
  BOOST_REQUIRE(m.find("gone") != nullptr);
  BOOST_TEST(m.find("gone")->state == member_state::alive);
  BOOST_TEST(m.graveyard_size() == 1u);
}

BOOST_AUTO_TEST_CASE(messages_carry_the_age_of_dead_records) {
  membership_config cfg;
  cfg.forget_after_ms = 0;  // never: ages are still sent
  membership m(local_member{"self", "self:7000", "", 1}, cfg, 0);
  m.on_message(gossip_of({upd("b", 0, member_state::alive), upd("gone", 2, member_state::dead)}),
               1000);
  message j = msg(message_kind::join, "b", "self");
  auto out = m.on_message(j, 8000);
  const envelope* r = find_send(out, message_kind::join_reply);
  BOOST_REQUIRE(r != nullptr);
  bool seen = false;
  for (const auto& u : r->msg.members) {
    if (u.name == "gone") {
      seen = true;
      BOOST_TEST(u.age_ms == 7000u);
    } else {
      BOOST_TEST(u.age_ms == 0u);  // alive records carry none
    }
  }
  BOOST_TEST(seen);
  out = m.tick(1000000);  // never forgotten with 0
  BOOST_TEST(m.find("gone") != nullptr);
}

BOOST_AUTO_TEST_CASE(a_forgotten_member_that_talks_is_told_it_was_dead) {
  membership_config cfg;
  cfg.forget_after_ms = 1000;
  membership m(local_member{"self", "self:7000", "", 1}, cfg, 0);
  m.on_message(gossip_of({upd("b", 0, member_state::alive), upd("x", 3, member_state::dead)}),
               100);
  m.tick(1200);
  BOOST_REQUIRE(m.find("x") == nullptr);
  const uint64_t told0 = m.stats().told_forgotten;  // (a reconnect push may have told it)
  auto carries_death = [](const std::vector<member_update>& us) {
    for (const auto& u : us)
      if (u.name == "x" && u.state == member_state::dead && u.incarnation == 3) return true;
    return false;
  };
  // x restarted (incarnation 0) and joins through us: the reply (its first news) says it
  // was dead, so it refutes, and drops what it recovered, as when we still knew it.
  message j = msg(message_kind::join, "x", "");
  j.members = {upd("x", 0, member_state::alive)};
  auto out = m.on_message(j, 2000);
  BOOST_TEST(m.find("x") == nullptr);  // its incarnation 0 is older than the death we keep
  BOOST_REQUIRE(!out.send.empty());
  BOOST_TEST((out.send.front().msg.kind == message_kind::join_reply));  // the RPC's answer
  BOOST_TEST(carries_death(out.send.front().msg.members));
  BOOST_TEST(m.stats().told_forgotten == told0 + 1);
  // Not again within a probe interval; then a ping from it is answered first, told after.
  m.on_message(msg(message_kind::ping, "x", "self"), 2010);
  BOOST_TEST(m.stats().told_forgotten == told0 + 1);
  out = m.on_message(msg(message_kind::ping, "x", "self"), 2300);
  BOOST_TEST(m.stats().told_forgotten == told0 + 2);
  BOOST_REQUIRE(out.send.size() >= 2u);
  BOOST_TEST((out.send.front().msg.kind == message_kind::ack));
  bool told = false;
  for (const auto& e : out.send)
    told |= e.to_address == "x:7000" && carries_death(e.msg.updates);
  BOOST_TEST(told);
  // Its refutation makes it a member again.
  m.on_message(gossip_of({upd("x", 4, member_state::alive)}), 2320);
  BOOST_REQUIRE(m.find("x") != nullptr);
  BOOST_TEST(m.find("x")->state == member_state::alive);
  BOOST_TEST(m.graveyard_size() == 0u);
}

BOOST_AUTO_TEST_CASE(forgotten_members_are_still_sought_now_and_then) {
  // A node restarted without seeds, or the other side of a partition, is found again: the
  // reconnect push goes to dead members and forgotten ones alike, with the forgotten one's death.
  membership_config cfg;
  cfg.forget_after_ms = 1000;
  cfg.reconnect_interval_ms = 1000;
  membership m(local_member{"self", "self:7000", "", 1}, cfg, 0);
  m.on_message(gossip_of({upd("x", 3, member_state::dead)}), 100);
  m.tick(1200);
  BOOST_REQUIRE(m.find("x") == nullptr);
  bool pushed = false;
  for (uint64_t t = 1300; t < 20000 && !pushed; t += 100) {  // (every 10th interval)
    auto out = m.tick(t);
    for (const auto& e : out.send)
      if (e.msg.kind == message_kind::join && e.to_address == "x:7000")
        for (const auto& u : e.msg.members)
          pushed |= u.name == "x" && u.state == member_state::dead && u.incarnation == 3;
  }
  BOOST_TEST(pushed);
}

BOOST_AUTO_TEST_CASE(the_graveyard_is_bounded) {
  membership_config cfg;
  cfg.forget_after_ms = 1000;
  cfg.graveyard_max = 5;
  membership m(local_member{"self", "self:7000", "", 1}, cfg, 0);
  for (int i = 0; i < 12; ++i) {
    auto u = upd("gone" + std::to_string(i), 1, member_state::dead);
    u.age_ms = 5000;  // already past forget_after: buried at once
    m.on_message(gossip_of({u}), 10000 + uint64_t(i));
  }
  BOOST_TEST(m.graveyard_size() == 5u);
  BOOST_TEST(m.members().size() == 1u);
  // The newest are kept: a stale alive of one of them still loses.
  m.on_message(gossip_of({upd("gone11", 1, member_state::alive)}), 20000);
  BOOST_TEST(m.find("gone11") == nullptr);
  // The oldest went: its stale alive is taken as news (what every record did before forgetting).
  m.on_message(gossip_of({upd("gone0", 1, member_state::alive)}), 20000);
  BOOST_TEST(m.find("gone0") != nullptr);
}

BOOST_AUTO_TEST_CASE(an_address_change_is_an_event_in_every_state) {
  membership m(local_member{"self", "self:7000", "", 1});
  m.on_message(gossip_of({upd("b", 3, member_state::alive)}), 1);
  m.on_message(gossip_of({upd("b", 3, member_state::suspect)}), 2);
  // b restarted elsewhere; a third member's suspicion at the new incarnation and address
  // arrives before b's own refutation: the view (ring, links) must follow the address.
  member_update moved = upd("b", 4, member_state::suspect);
  moved.address = "b-new:7000";
  moved.client_address = "b-new:11211";
  auto out = m.on_message(gossip_of({moved}), 3);
  BOOST_REQUIRE_EQUAL(out.events.size(), 1u);
  BOOST_TEST(out.events[0].kind == event_kind::updated);
  BOOST_TEST(out.events[0].member.address == "b-new:7000");
  BOOST_TEST(m.find("b")->client_address == "b-new:11211");
  // The same for a dead record.
  m.on_message(gossip_of({upd("c", 1, member_state::dead)}), 4);
  member_update c2 = upd("c", 2, member_state::dead);
  c2.address = "c-new:7000";
  out = m.on_message(gossip_of({c2}), 5);
  BOOST_REQUIRE_EQUAL(out.events.size(), 1u);
  BOOST_TEST(out.events[0].kind == event_kind::updated);
}

BOOST_AUTO_TEST_CASE(a_message_from_an_unknown_member_starts_a_full_state_exchange) {
  // The first node restarted without seeds; the others still hold it alive and ping it.
  membership m(local_member{"self", "self:7000", "", 1}, membership_config{}, 0);
  auto out = m.on_message(msg(message_kind::ping, "b", "self"), 10);
  const envelope* join = find_send(out, message_kind::join);
  BOOST_REQUIRE(join);
  BOOST_TEST(join->to_address == "b:7000");
  BOOST_TEST(join->msg.members.size() == 1u);  // our full state: ourselves
  BOOST_REQUIRE(!out.send.empty());
  BOOST_TEST(out.send.front().msg.kind == message_kind::ack);  // the answer comes first
  // At most once per probe interval, and not again once the sender is known.
  out = m.on_message(msg(message_kind::ping, "b", "self"), 20);
  BOOST_TEST(!find_send(out, message_kind::join));
  message reply = msg(message_kind::join_reply, "b", "self");
  reply.members = {upd("b", 0, member_state::alive), upd("c", 0, member_state::alive)};
  m.on_message(reply, 30);
  BOOST_TEST(m.alive_names() == (std::vector<std::string>{"b", "c", "self"}));
  out = m.on_message(msg(message_kind::ping, "b", "self"), 1000);
  BOOST_TEST(!find_send(out, message_kind::join));
}

// A seed's join_reply that holds member n2 alive (incarnation 3) at `address`.
message join_reply_holding_n2_at(const std::string& address) {
  message reply = msg(message_kind::join_reply, "seed", "n2");
  reply.from_address = "seed:7000";
  member_update held = upd("n2", 3, member_state::alive);
  held.address = address;
  reply.members = {upd("seed", 0, member_state::alive), held};
  return reply;
}

BOOST_AUTO_TEST_CASE(a_name_held_by_a_live_process_is_not_taken) {
  // A newcomer started with the name of a live member (at another address) asks that address
  // before refuting: the live holder answers, and the newcomer stands down.
  membership newcomer(local_member{"n2", "new:7000", "", 1}, membership_config{}, 0);
  newcomer.join({"seed:7000"}, 0);
  auto out = newcomer.on_message(join_reply_holding_n2_at("old:7000"), 10);
  BOOST_TEST(newcomer.incarnation() == 0u);  // no refutation yet
  const envelope* ask = find_send(out, message_kind::ping);
  BOOST_REQUIRE(ask);
  BOOST_TEST(ask->to_address == "old:7000");
  BOOST_TEST(ask->msg.to == "n2");

  membership holder(local_member{"n2", "old:7000", "", 1}, membership_config{}, 0);
  auto answer = holder.on_message(ask->msg, 100000);  // long after its own start
  BOOST_REQUIRE_EQUAL(answer.send.size(), 1u);
  BOOST_TEST(answer.send[0].msg.kind == message_kind::ack);
  BOOST_TEST(answer.send[0].to_address == "new:7000");
  BOOST_TEST(holder.stats().name_conflicts == 1u);
  BOOST_TEST(holder.incarnation() == 0u);  // the holder keeps its name

  // A holder that is leaving gives the name up: it does not answer.
  membership leaving(local_member{"n2", "old:7000", "", 1}, membership_config{}, 0);
  leaving.leave(50000);
  BOOST_TEST(leaving.on_message(ask->msg, 50001).send.empty());

  newcomer.on_message(answer.send[0].msg, 20);
  BOOST_TEST(newcomer.duplicate_name() == "old:7000");
  out = newcomer.tick(1000);
  BOOST_TEST(newcomer.incarnation() == 0u);  // never refutes
}

BOOST_AUTO_TEST_CASE(a_name_whose_holder_is_gone_is_taken_over) {
  // The same, but the earlier instance died (restarted on other ports): nobody answers, and
  // after a probe's timeouts the newcomer refutes the old record.
  membership newcomer(local_member{"n2", "new:7000", "", 1}, membership_config{}, 0);
  newcomer.join({"seed:7000"}, 0);
  newcomer.on_message(join_reply_holding_n2_at("old:7000"), 10);
  BOOST_TEST(newcomer.incarnation() == 0u);
  BOOST_TEST(newcomer.next_tick_ms() <= 10u + 160u);
  newcomer.tick(10 + 170);
  BOOST_TEST(newcomer.incarnation() == 4u);
  BOOST_TEST(newcomer.duplicate_name().empty());
  BOOST_TEST(newcomer.find("n2")->address == "new:7000");
}

BOOST_AUTO_TEST_CASE(ping_is_acked_and_messages_for_others_are_ignored) {
  membership m(local_member{"self", "self:7000", "", 1});
  message p = msg(message_kind::ping, "b", "self");
  p.seq = 77;
  auto out = m.on_message(p, 1);
  // The ack first (the RPC's reply); then, as b is unknown to us, a full-state join to it.
  BOOST_REQUIRE_EQUAL(out.send.size(), 2u);
  BOOST_TEST(out.send[1].msg.kind == message_kind::join);
  BOOST_TEST(out.send[0].to_address == "b:7000");
  BOOST_TEST(out.send[0].msg.kind == message_kind::ack);
  BOOST_TEST(out.send[0].msg.seq == 77u);
  BOOST_TEST(out.send[0].msg.target == "self");
  BOOST_TEST(out.send[0].msg.to == "b");

  p.to = "someone-else";  // e.g. a new node reusing a dead node's address
  BOOST_TEST(m.on_message(p, 2).send.empty());
}

BOOST_AUTO_TEST_CASE(ping_req_pings_the_target_and_relays_its_ack) {
  membership m(local_member{"relay", "relay:7000", "", 1});
  message r = msg(message_kind::ping_req, "a", "relay");
  r.target = "t";
  r.target_address = "t:7000";
  r.seq = 9;
  auto out = m.on_message(r, 1);
  const envelope* ping = find_send(out, message_kind::ping);
  BOOST_REQUIRE(ping);
  BOOST_TEST(ping->to_address == "t:7000");
  BOOST_TEST(ping->msg.to == "t");

  message ack = msg(message_kind::ack, "t", "relay");
  ack.target = "t";
  ack.seq = ping->msg.seq;
  out = m.on_message(ack, 2);
  const envelope* relayed = find_send(out, message_kind::ack);
  BOOST_REQUIRE(relayed);
  BOOST_TEST(relayed->to_address == "a:7000");
  BOOST_TEST(relayed->msg.seq == 9u);
  BOOST_TEST(relayed->msg.target == "t");
  // A second ack is not relayed twice.
  BOOST_TEST(!find_send(m.on_message(ack, 3), message_kind::ack));
}

BOOST_AUTO_TEST_CASE(probe_escalates_ping_then_ping_req_then_suspect_then_dead) {
  membership_config cfg;
  membership m(local_member{"self", "self:7000", "", 1}, cfg, 0);
  m.on_message(gossip_of({upd("a", 0, member_state::alive), upd("b", 0, member_state::alive)}),
               0);
  // Find the first probe and answer nothing.
  std::string target;
  uint64_t t = 0, started = 0;
  for (; t < 1000 && target.empty(); ++t) {
    auto out = m.tick(t);
    if (const envelope* p = find_send(out, message_kind::ping)) {
      target = p->msg.to;
      started = t;
    }
  }
  BOOST_REQUIRE(!target.empty());
  const std::string other = target == "a" ? "b" : "a";
  bool ping_req = false, suspect = false, dead = false;
  uint64_t ping_req_at = 0, suspect_at = 0, dead_at = 0;
  for (; t < 3000 && !dead; ++t) {
    auto out = m.tick(t);
    for (const auto& e : out.send)
      if (e.msg.kind == message_kind::ping_req && !ping_req) {
        ping_req = true;
        ping_req_at = t;
        BOOST_TEST(e.msg.to == other);
        BOOST_TEST(e.msg.target == target);
      }
    // The other member answers its own pings so that it stays alive.
    for (const auto& e : out.send)
      if (e.msg.kind == message_kind::ping && e.msg.to == other) {
        message a = msg(message_kind::ack, other, "self");
        a.target = other;
        a.seq = e.msg.seq;
        m.on_message(a, t);
      }
    for (const auto& ev : out.events) {
      if (ev.member.name != target) continue;
      if (ev.kind == event_kind::suspect && !suspect) {
        suspect = true;
        suspect_at = t;
      }
      if (ev.kind == event_kind::dead) {
        dead = true;
        dead_at = t;
      }
    }
  }
  BOOST_TEST(ping_req_at == started + cfg.ping_timeout_ms);
  BOOST_TEST(suspect_at == started + cfg.ping_timeout_ms + cfg.indirect_timeout_ms);
  BOOST_TEST(dead_at == suspect_at + cfg.suspicion_timeout_ms);
  BOOST_TEST(m.find(other)->state == member_state::alive);
}

BOOST_AUTO_TEST_CASE(join_exchanges_full_state) {
  membership seed(local_member{"seed", "seed:7000", "", 1});
  seed.on_message(gossip_of({upd("b", 3, member_state::alive), upd("c", 1, member_state::dead)}),
                  0);
  membership joiner(local_member{"new", "new:7000", "", 1});
  auto out = joiner.join({"seed:7000", "new:7000"}, 0);  // own address is skipped
  BOOST_REQUIRE_EQUAL(out.send.size(), 1u);
  BOOST_TEST(!joiner.joined());
  BOOST_TEST(out.send[0].msg.kind == message_kind::join);
  auto reply = seed.on_message(out.send[0].msg, 1);
  BOOST_TEST(seed.find("new") != nullptr);
  const envelope* r = find_send(reply, message_kind::join_reply);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->to_address == "new:7000");
  BOOST_TEST(r->msg.members.size() == 4u);  // seed, b, c (tombstone), new
  joiner.on_message(r->msg, 2);
  BOOST_TEST(joiner.joined());
  BOOST_TEST((joiner.alive_names() == std::vector<std::string>{"b", "new", "seed"}));
  BOOST_REQUIRE(joiner.find("c"));
  BOOST_TEST(joiner.find("c")->state == member_state::dead);
  // Until answered, the join is retried.
  membership lonely(local_member{"l", "l:7000", "", 1});
  lonely.join({"nobody:7000"}, 0);
  BOOST_TEST(lonely.next_tick_ms() <= lonely.config().join_retry_ms);
  BOOST_TEST(find_send(lonely.tick(lonely.config().join_retry_ms), message_kind::join));
}

BOOST_AUTO_TEST_CASE(ring_members_reflect_the_view) {
  membership m(local_member{"self", "self:7000", "self:11211", 2});
  m.on_message(gossip_of({upd("a", 0, member_state::suspect), upd("b", 0, member_state::dead),
                          upd("c", 0, member_state::left)}),
               0);
  auto rm = m.ring_members();
  BOOST_REQUIRE_EQUAL(rm.size(), 3u);  // a, b, self; left ones are omitted
  BOOST_TEST(rm[0].name == "a");
  BOOST_TEST(rm[0].alive);
  BOOST_TEST(!rm[1].alive);
  BOOST_TEST(rm[2].weight == 2u);
  ring r(rm);
  BOOST_TEST(r.live_size() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(membership_simulation)

BOOST_AUTO_TEST_CASE(three_and_five_nodes_converge_from_one_seed) {
  for (size_t n : {3, 5}) {
    for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
      sim_net net(seed);
      start_cluster(net, n);
      const uint64_t t = net.run(10000, [&] { return net.views_agree(); });
      BOOST_TEST_MESSAGE(n << " nodes, seed " << seed << ": converged at " << t << " ms");
      BOOST_TEST(net.views_agree());
      BOOST_TEST(t <= 1000u);
      net.run(t + 5000);  // and they stay so
      BOOST_TEST(net.views_agree());
      BOOST_TEST(net.count_events(event_kind::suspect) == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_killed_node_is_dead_everywhere_within_two_seconds) {
  uint64_t worst_detect = 0, worst_agree = 0, sum_detect = 0, samples = 0;
  for (size_t n : {3, 5}) {
    for (uint64_t seed = 1; seed <= sim_seeds(20); ++seed) {
      sim_net net(seed);
      start_cluster(net, n);
      // Let the cluster settle, then kill at a seed-dependent phase of the probe cycle.
      net.run(3000 + 37 * seed);
      BOOST_REQUIRE(net.views_agree());
      const size_t victim = seed % n;
      const uint64_t killed = net.now;
      net.kill(victim);
      const uint64_t agreed = net.run(killed + 10000, [&] { return net.views_agree(); });
      BOOST_REQUIRE(net.views_agree());
      for (size_t i = 0; i < n; ++i) {
        if (i == victim) continue;
        const uint64_t d = net.first_event(i, event_kind::dead, net.name(victim), killed);
        BOOST_REQUIRE(d != 0);
        worst_detect = std::max(worst_detect, d - killed);
        sum_detect += d - killed;
        ++samples;
        BOOST_TEST(d - killed < 2000u, n << " nodes, seed " << seed << ": node" << i
                                          << " declared the victim dead after " << d - killed);
      }
      worst_agree = std::max(worst_agree, agreed - killed);
      BOOST_TEST(agreed - killed < 3000u);
      // Nobody else was ever declared dead.
      size_t others_dead = 0;
      for (const auto& e : net.events)
        if (e.kind == event_kind::dead && e.member != net.name(victim)) ++others_dead;
      BOOST_TEST(others_dead == 0u);
    }
  }
  BOOST_TEST_MESSAGE("kill: detection mean " << sum_detect / samples << " ms, worst "
                                             << worst_detect << " ms; views agree worst "
                                             << worst_agree << " ms");
}

BOOST_AUTO_TEST_CASE(a_falsely_suspected_node_refutes_and_stays_alive) {
  for (uint64_t seed = 1; seed <= sim_seeds(10); ++seed) {
    sim_net net(seed);
    start_cluster(net, 5);
    net.run(3000);
    BOOST_REQUIRE(net.views_agree());
    const size_t x = 1 + seed % 4;
    const std::string xn = net.name(x);
    // Cut x off until someone suspects it, then heal at once.
    net.isolate(x);
    const uint64_t cut = net.now;
    net.run(cut + 5000, [&] {
      for (const auto& e : net.events)
        if (e.kind == event_kind::suspect && e.member == xn && e.at >= cut) return true;
      return false;
    });
    const uint64_t healed = net.now;
    net.isolate(x, false);
    const uint64_t agreed = net.run(healed + 5000, [&] {
      if (!net.views_agree()) return false;
      for (size_t i = 0; i < 5; ++i)
        if (net.m(i).find(xn)->incarnation < 1) return false;
      return true;
    });
    net.run(agreed + 3000);
    BOOST_TEST_MESSAGE("seed " << seed << ": suspected after " << healed - cut
                               << " ms cut, all agree on the refutation " << agreed - healed
                               << " ms after healing");
    BOOST_TEST(net.m(x).incarnation() >= 1u);
    BOOST_TEST(net.m(x).stats().refutations >= 1u);
    BOOST_TEST(net.count_events(event_kind::dead) == 0u);
    BOOST_TEST(net.views_agree());
  }
}

BOOST_AUTO_TEST_CASE(a_graceful_leave_spreads_as_left) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net(seed);
    start_cluster(net, 5);
    net.run(3000);
    BOOST_REQUIRE(net.views_agree());
    const size_t x = seed % 5;
    const uint64_t t0 = net.now;
    net.leave(x);
    BOOST_TEST(net.m(x).leaving());
    net.run(t0 + 5000, [&] { return net.m(x).done_leaving(); });
    BOOST_TEST(net.m(x).done_leaving());
    const uint64_t stopped = net.now;
    net.kill(x);  // the process exits
    net.run(stopped + 10000);
    uint64_t worst = 0;
    for (size_t i = 0; i < 5; ++i) {
      if (i == x) continue;
      BOOST_TEST(net.m(i).find(net.name(x))->state == member_state::left);
      const uint64_t at = net.first_event(i, event_kind::left, net.name(x), t0);
      BOOST_REQUIRE(at != 0);
      worst = std::max(worst, at - t0);
    }
    BOOST_TEST_MESSAGE("seed " << seed << ": left everywhere after " << worst
                               << " ms, announcement done after " << stopped - t0 << " ms");
    BOOST_TEST(worst < 100u);
    BOOST_TEST(net.count_events(event_kind::dead) == 0u);
    BOOST_TEST(net.count_events(event_kind::suspect) == 0u);
    BOOST_TEST(net.views_agree());
  }
}

// A node that leaves (SIGTERM) before its join was answered: its seed reads the join later
// (it was paused), admits it, and must then find it left, not declare it dead (a dead record
// lasts --forget-after, and its keys answer unavailable until the death is declared).
BOOST_AUTO_TEST_CASE(a_node_that_leaves_before_its_join_is_answered_is_left_at_its_seed) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net(seed);
    start_cluster(net, 2);
    net.run(3000);
    BOOST_REQUIRE(net.views_agree());
    const size_t late = net.add("late", {0});  // its join is on the way
    BOOST_TEST(!net.m(late).joined());
    net.leave(late);
    net.run(net.now + 5);  // (what it sent arrives; before anyone pings it, it exits)
    net.kill(late);
    net.run(net.now + 10000);
    for (size_t i = 0; i < 2; ++i) {
      const member_info* r = net.m(i).find("late");
      BOOST_REQUIRE_MESSAGE(r, "seed " << seed << ": node " << i << " never heard of it");
      BOOST_TEST(r->state == member_state::left);
    }
    BOOST_TEST(net.count_events(event_kind::dead) == 0u);
  }
}

BOOST_AUTO_TEST_CASE(a_restarted_node_rejoins_with_a_higher_incarnation) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    for (bool new_address : {false, true}) {
      sim_net net(seed);
      start_cluster(net, 5);
      net.run(3000);
      const size_t x = 1 + seed % 4;
      const std::string xn = net.name(x);
      net.kill(x);
      net.run(net.now + 10000, [&] { return net.views_agree(); });
      BOOST_REQUIRE(net.views_agree());
      const uint64_t old_inc = net.m(0).find(xn)->incarnation;
      const uint64_t t0 = net.now;
      net.start(x, {0}, new_address ? xn + ":7001" : std::string{});
      BOOST_TEST(net.m(x).incarnation() == 0u);
      const uint64_t agreed = net.run(t0 + 10000, [&] { return net.views_agree(); });
      BOOST_TEST(net.views_agree());
      BOOST_TEST_MESSAGE("seed " << seed << (new_address ? " (new address)" : "")
                                 << ": alive everywhere " << agreed - t0 << " ms after restart");
      BOOST_TEST(agreed - t0 < 2000u);
      BOOST_TEST(net.m(x).incarnation() > old_inc);
      for (size_t i = 0; i < 5; ++i) {
        const member_info* r = net.m(i).find(xn);
        BOOST_TEST(r->state == member_state::alive);
        BOOST_TEST(r->address == net.address(x));
        if (i != x)
          BOOST_TEST(net.first_event(i, event_kind::alive_again, xn, t0) != 0u);
      }
      net.run(net.now + 5000);
      BOOST_TEST(net.views_agree());
    }
  }
}

// Restarted at once (a supervisor), before any probe found it gone: no member has it dead at
// any time, and every other one learns of the restart.
BOOST_AUTO_TEST_CASE(a_restart_quicker_than_failure_detection_is_seen_everywhere) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net = settled_cluster(seed, 5);
    const size_t x = 1 + seed % 4;
    const std::string xn = net.name(x);
    const uint64_t t0 = net.now;
    net.start(x, {0});
    const uint64_t seen = net.run(t0 + 5000, [&] {
      return net.count_events(event_kind::restarted, t0) == 4u;
    });
    BOOST_TEST_MESSAGE("seed " << seed << ": every member saw the restart " << seen - t0
                               << " ms after it");
    BOOST_TEST(seen - t0 < 1000u);
    net.run(net.now + 3000);
    BOOST_TEST(net.views_agree());
    BOOST_TEST(net.count_events(event_kind::restarted, t0) == 4u);
    for (size_t i = 0; i < 5; ++i) {
      BOOST_TEST(net.m(i).find(xn)->state == member_state::alive);
      if (i != x) {
        BOOST_TEST(net.first_event(i, event_kind::restarted, xn, t0) != 0u);
        BOOST_TEST(net.first_event(i, event_kind::dead, xn, t0) == 0u);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_healed_partition_merges_back) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net(seed);
    start_cluster(net, 5);
    net.run(3000);
    for (size_t a : {0, 1})
      for (size_t b : {2, 3, 4}) net.block(a, b);
    net.run(net.now + 5000);
    BOOST_TEST((net.m(0).alive_names() == std::vector<std::string>{"node0", "node1"}));
    BOOST_TEST((net.m(4).alive_names() == std::vector<std::string>{"node2", "node3", "node4"}));
    for (size_t a : {0, 1})
      for (size_t b : {2, 3, 4}) net.block(a, b, false);
    const uint64_t healed = net.now;
    const uint64_t agreed = net.run(healed + 20000, [&] { return net.views_agree(); });
    BOOST_TEST(net.views_agree());
    BOOST_TEST_MESSAGE("seed " << seed << ": merged " << agreed - healed << " ms after healing");
    BOOST_TEST(agreed - healed < 5000u);
  }
}

BOOST_AUTO_TEST_CASE(every_node_forgets_a_dead_member_at_about_the_same_time) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net = forgetting_cluster(seed, 20000, 5);
    BOOST_REQUIRE(net.views_agree());
    const size_t victim = 1 + seed % 4;
    const std::string vn = net.name(victim);
    const uint64_t killed = net.now;
    net.kill(victim);
    net.run(killed + 10000, [&] { return net.views_agree(); });
    BOOST_REQUIRE(net.views_agree());
    // A node that joins 12 s after the death learns it with its age: it forgets the member
    // when the others do, not 20 s after it joined.
    net.run(killed + 12000);
    const size_t late = net.add("late", {0});
    net.run(killed + 60000);
    uint64_t first = 0, last = 0;
    for (size_t i = 0; i < net.size(); ++i) {
      if (i == victim) continue;
      const uint64_t f = net.first_event(i, event_kind::forgotten, vn, killed);
      if (i == late && f == 0) {
        // (It may never have heard of the member: nothing to forget.)
        BOOST_TEST(net.m(i).find(vn) == nullptr);
        continue;
      }
      BOOST_REQUIRE_MESSAGE(f != 0, "seed " << seed << ": node " << i << " never forgot");
      first = first == 0 ? f : std::min(first, f);
      last = std::max(last, f);
      BOOST_TEST(net.m(i).find(vn) == nullptr);
    }
    BOOST_TEST_MESSAGE("seed " << seed << ": forgotten " << first - killed << "-" << last - killed
                               << " ms after the kill");
    BOOST_TEST(first - killed >= 20000u);
    BOOST_TEST(last - killed < 23000u);
    // Nobody learns it again from another and forgets it twice (full-state syncs ran for 37 s
    // since), and every view still agrees.
    for (size_t i = 0; i < net.size(); ++i) {
      size_t n = 0;
      for (const auto& e : net.events)
        n += e.observer == i && e.kind == event_kind::forgotten && e.member == vn;
      BOOST_TEST(n <= 1u, "node " << i << " forgot it " << n << " times");
    }
    BOOST_TEST(net.views_agree());
    // The member restarts: told of its death by whoever it joins, it refutes and is alive
    // everywhere again.
    const uint64_t t0 = net.now;
    net.start(victim, {0});
    const uint64_t agreed = net.run(t0 + 10000, [&] {
      if (!net.views_agree()) return false;
      for (size_t i = 0; i < net.size(); ++i) {
        const member_info* r = net.m(i).find(vn);
        if (!r || r->state != member_state::alive) return false;
      }
      return true;
    });
    BOOST_TEST(agreed - t0 < 3000u, "seed " << seed << ": back after " << agreed - t0);
    BOOST_TEST(net.m(victim).stats().declared_gone_at_start == 1u);
    BOOST_TEST(net.m(victim).incarnation() > 0u);
  }
}

BOOST_AUTO_TEST_CASE(a_forgotten_node_restarted_without_seeds_is_found_again) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net = forgetting_cluster(seed, 5000, 4);
    const size_t victim = 0;  // the first node: started without seeds
    const std::string vn = net.name(victim);
    net.kill(victim);
    net.run(net.now + 8000);
    for (size_t i = 1; i < 4; ++i) BOOST_REQUIRE(net.m(i).find(vn) == nullptr);
    const uint64_t t0 = net.now;
    net.start(victim, {});  // no --join: only the others' reconnect pushes can find it
    const uint64_t agreed = net.run(t0 + 20000, [&] { return net.views_agree(); });
    BOOST_TEST(net.views_agree(), "seed " << seed);
    BOOST_TEST_MESSAGE("seed " << seed << ": found again " << agreed - t0 << " ms after restart");
    BOOST_TEST(net.m(victim).stats().declared_gone_at_start == 1u);  // (it drops its items)
  }
}

BOOST_AUTO_TEST_CASE(a_partition_longer_than_forget_after_heals) {
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net = forgetting_cluster(seed, 5000, 5);
    for (size_t a : {0, 1})
      for (size_t b : {2, 3, 4}) net.block(a, b);
    net.run(net.now + 10000);  // each side has forgotten the other
    BOOST_REQUIRE(net.m(0).find("node3") == nullptr);
    BOOST_REQUIRE(net.m(4).find("node1") == nullptr);
    for (size_t a : {0, 1})
      for (size_t b : {2, 3, 4}) net.block(a, b, false);
    const uint64_t healed = net.now;
    const uint64_t agreed = net.run(healed + 30000, [&] { return net.views_agree(); });
    BOOST_TEST(net.views_agree(), "seed " << seed);
    BOOST_TEST_MESSAGE("seed " << seed << ": merged " << agreed - healed
                               << " ms after healing (both sides had forgotten the other)");
  }
}

BOOST_AUTO_TEST_CASE(twenty_percent_loss_causes_no_false_dead_declaration) {
  size_t total_suspects = 0, total_dead = 0;
  uint64_t total_ms = 0;
  for (uint64_t seed = 1; seed <= sim_seeds(5); ++seed) {
    sim_net net(seed);
    start_cluster(net, 5);
    net.run(3000);
    BOOST_REQUIRE(net.views_agree());
    net.loss = 0.2;
    const uint64_t t0 = net.now;
    net.run(t0 + 60000);
    const size_t suspects = net.count_events(event_kind::suspect, t0);
    const size_t dead = net.count_events(event_kind::dead, t0);
    total_suspects += suspects;
    total_dead += dead;
    total_ms += 60000;
    BOOST_TEST_MESSAGE("seed " << seed << ": 60 s at 20% loss: " << suspects
                               << " suspect events, " << dead << " dead events, "
                               << net.dropped << " of " << net.dropped + net.delivered
                               << " messages dropped");
    BOOST_TEST(dead == 0u);
    net.loss = 0;
    net.run(net.now + 3000);
    BOOST_TEST(net.views_agree());
  }
  BOOST_TEST_MESSAGE("20% loss: " << total_suspects << " suspect events, " << total_dead
                                  << " false dead events in " << total_ms / 1000
                                  << " s of 5-node cluster time");
}

BOOST_AUTO_TEST_CASE(simulations_are_deterministic) {
  auto run_once = [] {
    sim_net net(7);
    net.loss = 0.1;
    start_cluster(net, 5);
    net.run(3000);
    net.kill(2);
    net.run(8000);
    return net.events;
  };
  auto a = run_once(), b = run_once();
  BOOST_TEST(a.size() > 10u);
  BOOST_TEST((a == b));
}

BOOST_AUTO_TEST_SUITE_END()
