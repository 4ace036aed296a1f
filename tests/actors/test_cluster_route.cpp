// Per-op placement in a cluster (actors/cluster_route.hpp): first placement, read failover,
// placing again after a ring change, and the write-on-miss warming source.
#include "actors/cluster_route.hpp"
#include "storage/shard.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace bifrost;
using namespace bifrost::actors;
using storage::status;

namespace {

// A class, not a function: CAF 0.17 dereferences a null shared_ptr<tuple<>> when it spawns a
// function-based actor without arguments (UBSan reports it in CAF's own header).
class idle : public caf::event_based_actor {
public:
  using caf::event_based_actor::event_based_actor;
  caf::behavior make_behavior() override { return {[](int) {}}; }
};

// A node's view as the cluster service builds it: members sorted by name, self by name, a peer
// actor for every other alive member; its past rings: the view before (when given, its window
// ending at `warm_until`), then that one's past rings.
struct views {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<caf::actor> actors;  // one stand-in peer actor per name (kept alive here)

  views() { sys = std::make_unique<caf::actor_system>(cfg); }

  caf::actor actor_for(const std::string&) {
    actors.push_back(sys->spawn<idle>());
    return actors.back();
  }

  std::shared_ptr<cluster_view> make(const std::string& self,
                                     std::vector<std::string> alive_names, uint64_t epoch,
                                     const std::shared_ptr<cluster_view>& before = nullptr,
                                     int64_t warm_until = 0) {
    std::vector<cluster::ring_member> ms;
    int port = 7000;
    for (auto& n : alive_names)
      ms.push_back({n, "127.0.0.1:" + std::to_string(port++), 1, true});
    auto v = std::make_shared<cluster_view>();
    v->ring = cluster::ring::build(ms, epoch);
    v->self = static_cast<uint32_t>(v->ring->size());  // a node that left is not in its ring
    v->peers.resize(v->ring->size());
    for (uint32_t id = 0; id < v->ring->size(); ++id) {
      if (v->ring->member(id).name == self)
        v->self = id;
      else
        v->peers[id] = actor_for(v->ring->member(id).name);
    }
    v->replicas = 2;
    v->self_name = self;
    if (before) {
      v->past.push_back({before->ring, before->peers, before->clients, warm_until});
      v->past.insert(v->past.end(), before->past.begin(), before->past.end());
    }
    return v;
  }
};

std::string name_of(const cluster_view& v, uint32_t id) {
  return id < v.ring->size() ? v.ring->member(id).name : std::string("?");
}

std::vector<std::string> owners(const cluster_view& v, const std::string& key) {
  std::vector<std::string> out;
  for (auto* m : v.ring->live_owners(key, 2))
    out.push_back(m->name);
  return out;
}

// A key whose owners in `v` are exactly `want` (primary first).
std::string key_owned_by(const cluster_view& v, const std::vector<std::string>& want) {
  for (int i = 0; i < 100000; ++i) {
    std::string k = "key-" + std::to_string(i);
    if (owners(v, k) == want)
      return k;
  }
  BOOST_FAIL("no key with the wanted owners");
  return {};
}

// A key whose primary in each view is the name given with it.
std::string key_with_primaries(
    std::initializer_list<std::pair<const cluster_view*, const char*>> steps) {
  for (int i = 0; i < 100000; ++i) {
    std::string k = "key-" + std::to_string(i);
    bool all = true;
    for (const auto& [v, name] : steps)
      all = all && owners(*v, k).front() == name;
    if (all)
      return k;
  }
  BOOST_FAIL("no key with the wanted primaries");
  return {};
}

// A key whose primary was `before` in `a` and is `after` in `b`.
std::string key_moved(const cluster_view& a, const std::string& before, const cluster_view& b,
                      const std::string& after) {
  return key_with_primaries({{&a, before.c_str()}, {&b, after.c_str()}});
}

// n4 joins n1..n3 (seen from n1, warming window until 1000): a key n2 owned is now n4's,
// placed at n4 by `rt`.
struct n4_joined {
  views vs;
  std::shared_ptr<cluster_view> v1 = vs.make("n1", {"n1", "n2", "n3"}, 1);
  std::shared_ptr<cluster_view> v2 = vs.make("n1", {"n1", "n2", "n3", "n4"}, 2, v1, 1000);
  std::string k = key_moved(*v1, "n2", *v2, "n4");
  op_route rt;
};

uint64_t h(const std::string& k) {
  return cluster::ring::key_hash(k);
}

} // namespace

BOOST_AUTO_TEST_SUITE(cluster_route_tests)

BOOST_AUTO_TEST_CASE(first_placement_is_the_primary) {
  views vs;
  auto v = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto remote = key_owned_by(*v, {"n3", "n1"});
  op_route rt;
  BOOST_CHECK(place(*v, h(remote), rt) == placement::peer);
  BOOST_CHECK_EQUAL(name_of(*v, rt.owner), "n3");
  BOOST_CHECK(!rt.local);
  BOOST_CHECK_EQUAL(rt.epoch, 1u);

  auto local = key_owned_by(*v, {"n1", "n2"});
  op_route rl;
  BOOST_CHECK(place(*v, h(local), rl) == placement::local);
  BOOST_CHECK(rl.local);
  BOOST_CHECK_EQUAL(rl.owner, v->self);
}

BOOST_AUTO_TEST_CASE(read_failover_in_the_same_ring_tries_the_next_owner) {
  views vs;
  auto v = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto k = key_owned_by(*v, {"n3", "n2"});
  op_route rt;
  BOOST_REQUIRE(place(*v, h(k), rt) == placement::peer);
  auto st = status::unavailable;
  BOOST_CHECK(after_result(*v, rt, st, warm_class::read, true, 0) == next_step::place);
  BOOST_CHECK(place(*v, h(k), rt) == placement::peer);
  BOOST_CHECK_EQUAL(name_of(*v, rt.owner), "n2");
  // Then every other live node, this one last here; then nobody is left (the connection
  // answers a miss).
  st = status::unavailable;
  BOOST_CHECK(after_result(*v, rt, st, warm_class::read, true, 0) == next_step::place);
  BOOST_CHECK(place(*v, h(k), rt) == placement::local);
  st = status::unavailable;
  BOOST_CHECK(after_result(*v, rt, st, warm_class::read, true, 0) == next_step::place);
  BOOST_CHECK(place(*v, h(k), rt) == placement::unavailable);
}

BOOST_AUTO_TEST_CASE(read_failover_stops_after_sixteen_nodes) {
  // In a cluster of 20, a read whose owners all answer `unavailable` (links in backoff) is
  // tried on at most 16 live nodes, then answered as a miss (placement::unavailable).
  views vs;
  std::vector<std::string> names;
  for (int i = 0; i < 20; ++i) names.push_back("n" + std::to_string(100 + i));
  auto v = vs.make("n100", names, 1);
  const std::string k = "some-key";
  op_route rt;
  std::vector<uint32_t> tried;
  for (int attempt = 0; attempt < 40; ++attempt) {
    const placement p = place(*v, h(k), rt);
    if (p == placement::unavailable) break;
    tried.push_back(rt.owner);
    auto st = status::unavailable;
    BOOST_REQUIRE(after_result(*v, rt, st, warm_class::read, true, 0) == next_step::place);
  }
  BOOST_CHECK_EQUAL(tried.size(), 16u);
  std::sort(tried.begin(), tried.end());
  BOOST_CHECK(std::unique(tried.begin(), tried.end()) == tried.end());  // 16 distinct nodes
  for (uint32_t id : tried) BOOST_CHECK_LT(id, v->ring->size());
}

BOOST_AUTO_TEST_CASE(a_write_that_reached_a_node_is_not_repeated) {
  views vs;
  auto v = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto k = key_owned_by(*v, {"n3", "n2"});
  op_route rt;
  BOOST_REQUIRE(place(*v, h(k), rt) == placement::peer);
  auto st = status::unavailable;  // timed out: it may have been applied
  BOOST_CHECK(after_result(*v, rt, st, warm_class::blind, true, 0) == next_step::accept);
  BOOST_CHECK(st == status::unavailable);
}

// The graceful-leave miss: n1 still routes with the ring where n3 is the primary, n3 has just
// left (the RPC side refuses to send: not_sent, or a read answered unavailable), and the ring
// without n3 arrives before the result. The read must go to the new ring's primary (n1, which
// held the replica), not to the new ring's second owner (n2, which never held the key).
BOOST_AUTO_TEST_CASE(a_result_from_an_older_ring_starts_over_in_the_new_one) {
  views vs;
  auto v1 = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto k = key_owned_by(*v1, {"n3", "n1"});
  auto v2 = vs.make("n1", {"n1", "n2"}, 2, v1, 1000);
  BOOST_REQUIRE((owners(*v2, k) == std::vector<std::string>{"n1", "n2"}));

  for (auto first : {status::unavailable, status::not_sent}) {
    op_route rt;
    BOOST_REQUIRE(place(*v1, h(k), rt) == placement::peer);
    auto st = first;
    BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 0) == next_step::place);
    BOOST_CHECK(place(*v2, h(k), rt) == placement::local);
    BOOST_CHECK_EQUAL(name_of(*v2, rt.owner), "n1");
    BOOST_CHECK_EQUAL(rt.epoch, 2u);
  }
}

BOOST_AUTO_TEST_CASE(not_sent_is_placed_again_only_when_intact_and_the_ring_moved) {
  views vs;
  auto v1 = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto k = key_owned_by(*v1, {"n3", "n2"});
  auto v2 = vs.make("n1", {"n1", "n2"}, 2, v1);
  {
    // A delete never sent to n3, which has left: it goes to the new primary.
    op_route rt;
    place(*v1, h(k), rt);
    auto st = status::not_sent;
    BOOST_CHECK(after_result(*v2, rt, st, warm_class::blind, true, 0) == next_step::place);
    BOOST_CHECK(place(*v2, h(k), rt) == placement::peer);
    BOOST_CHECK_EQUAL(name_of(*v2, rt.owner), "n2");
  }
  {
    // A store whose value did not come back cannot be sent again: the client hears
    // unavailable.
    op_route rt;
    place(*v1, h(k), rt);
    auto st = status::not_sent;
    BOOST_CHECK(after_result(*v2, rt, st, warm_class::blind, false, 0) == next_step::accept);
    BOOST_CHECK(st == status::unavailable);
  }
  {
    // Same ring (the node has not switched yet): an ordinary unavailable; a read fails over.
    op_route rt;
    place(*v1, h(k), rt);
    auto st = status::not_sent;
    BOOST_CHECK(after_result(*v1, rt, st, warm_class::read, true, 0) == next_step::place);
    BOOST_CHECK(st == status::unavailable);
    BOOST_CHECK(place(*v1, h(k), rt) == placement::peer);
    BOOST_CHECK_EQUAL(name_of(*v1, rt.owner), "n2");
    st = status::not_sent;
    BOOST_CHECK(after_result(*v1, rt, st, warm_class::blind, true, 0) == next_step::accept);
    BOOST_CHECK(st == status::unavailable);
  }
}

BOOST_AUTO_TEST_CASE(a_miss_inside_the_window_warms_from_the_previous_primary) {
  // n4 misses a key n2 owned and asks n2.
  n4_joined j;
  auto &v1 = j.v1, &v2 = j.v2;
  auto& k = j.k;
  auto& rt = j.rt;
  BOOST_REQUIRE(place(*v2, h(k), rt) == placement::peer);
  auto st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 999) == next_step::warm);
  auto w = warm_source(*v2, h(k), rt, 999);
  BOOST_CHECK(w.where == placement::peer);
  BOOST_CHECK_EQUAL(v1->ring->member(w.id).name, "n2");
  BOOST_CHECK_EQUAL(w.depth, 0u);
  BOOST_CHECK(v2->past[w.depth].peers[w.id] == v1->peers[w.id]);

  // After the window, or for a write, the miss stands.
  st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 1000) == next_step::accept);
  st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::blind, true, 999) == next_step::accept);
  // A miss where a delete took the key lately (or the item expired just now) stands when its
  // point is no clock value (an older node's answer)...
  st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 999, true) == next_step::accept);
  // ...and warms by the CAS clock when it is one: a past owner may hold a later write, by a
  // member whose view lagged (the owner judges "lately" by its own view).
  const uint64_t point = storage::next_cas();
  st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 999, true, point) ==
              next_step::warm);
  BOOST_CHECK(rt.lately);
  st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 999, false, point) ==
              next_step::warm);
  BOOST_CHECK(!rt.lately);
  // So does an update's: a touch, an incr or a replace that found the item expired just now.
  for (auto none : {status::not_found, status::not_stored}) {
    st = none;
    BOOST_CHECK(after_result(*v2, rt, st, warm_class::update, true, 999, true) ==
                next_step::accept);
    st = none;
    BOOST_CHECK(after_result(*v2, rt, st, warm_class::update, true, 999, true, point) ==
                next_step::warm);
    BOOST_CHECK(rt.lately);
    st = none;
    BOOST_CHECK(after_result(*v2, rt, st, warm_class::update, true, 999) == next_step::warm);
  }
  {  // ...at the owner it was placed on: placed by the ring before, it goes to the owner now
    op_route old_rt;
    place(*v1, h(k), old_rt);
    st = status::miss;
    BOOST_CHECK(after_result(*v2, old_rt, st, warm_class::read, true, 999, true) ==
                next_step::place);
  }
  // Once warmed, never again.
  rt.warmed = true;
  st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 999) == next_step::accept);
}

// An op that looked ahead (or warmed) in the ring it was placed in, and found nothing at that
// ring's owner, is placed again when the ring changed before its answer came: the node it ran
// at may own the key no longer (an `ma` looked at the previous owners, ran at the owner by
// the ring before and answered NF for an item at the new owner: the sweep, seed 6953). In the
// ring it was placed in, its answer stands.
BOOST_AUTO_TEST_CASE(an_op_that_warmed_and_found_nothing_goes_where_a_newer_ring_places_it) {
  n4_joined j;
  op_route rt;
  place(*j.v1, h(j.k), rt);  // (placed by the ring before n4 joined)
  for (auto [cls, none] : {std::pair{warm_class::update, status::not_found},
                           std::pair{warm_class::update, status::not_stored},
                           std::pair{warm_class::read, status::miss}}) {
    rt.looked = rt.warmed = rt.ahead = true;
    auto st = none;
    BOOST_CHECK(after_result(*j.v2, rt, st, cls, true, 999) == next_step::place);
    st = none;  // (deleted lately there: by the CAS clock or not, the owner now judges)
    BOOST_CHECK(after_result(*j.v2, rt, st, cls, true, 999, true) == next_step::place);
    op_route here;  // (in the ring it was placed in, it stands)
    place(*j.v2, h(j.k), here);
    here.looked = here.warmed = here.ahead = true;
    st = none;
    BOOST_CHECK(after_result(*j.v2, here, st, cls, true, 999) == next_step::accept);
  }
  rt.warmed = true;
  auto st = status::not_found;  // (a store whose value went with it cannot run again)
  BOOST_CHECK(after_result(*j.v2, rt, st, warm_class::update, false, 999) == next_step::accept);
  st = status::deleted;  // (a delete's own result: its erase chain covers the past owners)
  BOOST_CHECK(after_result(*j.v2, rt, st, warm_class::remove, true, 999) == next_step::accept);
}

// An update that looked ahead (or warmed) and is then placed again in a newer ring (the view
// changed again within its round trips: a join's two steps) looks and warms anew there: that
// ring's owner may not hold what was put at the owner before. Before, it found nothing and
// could not warm (the sweep: replace NOT_STORED, gats a miss). In the same ring it does not.
BOOST_AUTO_TEST_CASE(an_op_placed_again_in_a_newer_ring_looks_and_warms_anew) {
  n4_joined j;
  auto& rt = j.rt;
  BOOST_REQUIRE(place(*j.v2, h(j.k), rt) == placement::peer);
  rt.looked = rt.warmed = rt.ahead = true;
  rt.warm_next = 1;
  place(*j.v2, h(j.k), rt);  // (the same ring: a restore's second run)
  BOOST_CHECK(rt.looked && rt.warmed && rt.ahead);
  auto st = status::not_stored;
  BOOST_CHECK(after_result(*j.v2, rt, st, warm_class::update, true, 999) == next_step::accept);
  auto v3 = j.vs.make("n1", {"n1", "n2", "n3", "n4", "n5"}, 3, j.v2, 1000);
  place(*v3, h(j.k), rt);
  BOOST_CHECK(!rt.looked && !rt.warmed && !rt.ahead);
  BOOST_CHECK_EQUAL(rt.warm_next, 0u);
  st = status::not_stored;
  BOOST_CHECK(after_result(*v3, rt, st, warm_class::update, true, 999) == next_step::warm);
}

BOOST_AUTO_TEST_CASE(a_hit_inside_the_check_window_is_read_at_the_previous_owner_too) {
  // n4 joined (warming until 1000, reads checked until 300): a hit at n4 of a key n2 owned
  // is read at n2 too, with the first past owner whatever warm_next says; after 300, or for
  // a key that did not move, not.
  n4_joined j;
  j.v2->past[0].check_until_ms = j.v2->check_until_ms = 300;
  auto &v1 = j.v1, &v2 = j.v2;
  auto& rt = j.rt;
  BOOST_REQUIRE(place(*v2, h(j.k), rt) == placement::peer);
  rt.warm_next = 3;
  auto w = check_source(*v2, h(j.k), rt, 299);
  BOOST_CHECK(w.where == placement::peer);
  BOOST_CHECK_EQUAL(v1->ring->member(w.id).name, "n2");
  BOOST_CHECK_EQUAL(w.depth, 0u);
  BOOST_CHECK(check_source(*v2, h(j.k), rt, 300).where == placement::unavailable);
  rt.warm_next = 0;  // (a miss still warms from n2 until 1000)
  BOOST_CHECK(warm_source(*v2, h(j.k), rt, 300).where == placement::peer);
  auto same = key_owned_by(*v2, {"n2", "n3"});
  BOOST_REQUIRE(owners(*v1, same).front() == "n2");
  op_route rs;
  place(*v2, h(same), rs);
  BOOST_CHECK(check_source(*v2, h(same), rs, 0).where == placement::unavailable);
  // Without a check window (a view made before it, or --read-check-window 0): never; nor
  // when the window is another past ring's (the first node's ring of itself alone, when the
  // first member joins: the ring before is the joiner's view of the others, not one it
  // served by).
  j.v2->past[0].check_until_ms = j.v2->check_until_ms = 0;
  BOOST_CHECK(check_source(*v2, h(j.k), rt, 0).where == placement::unavailable);
  j.v2->check_until_ms = 300;
  BOOST_CHECK(check_source(*v2, h(j.k), rt, 0).where == placement::unavailable);
  // A result from an older ring is not checked.
  j.v2->past[0].check_until_ms = 300;
  op_route old;
  place(*v1, h(j.k), old);
  BOOST_CHECK(check_source(*v2, h(j.k), old, 0).where == placement::unavailable);
}

BOOST_AUTO_TEST_CASE(warming_sources) {
  views vs;
  auto v1 = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto v2 = vs.make("n1", {"n1", "n2", "n3", "n4"}, 2, v1, 1000);
  // The node that missed owned the key before too: nothing to ask.
  auto same = key_owned_by(*v2, {"n2", "n3"});
  BOOST_REQUIRE(owners(*v1, same).front() == "n2");
  op_route rt;
  place(*v2, h(same), rt);
  BOOST_CHECK(warm_source(*v2, h(same), rt, 0).where == placement::unavailable);

  // This node owned it before and n4 owns it now: read from the own shards.
  auto mine = key_moved(*v1, "n1", *v2, "n4");
  op_route rm;
  place(*v2, h(mine), rm);
  auto w = warm_source(*v2, h(mine), rm, 0);
  BOOST_CHECK(w.where == placement::local);

  // A result from an older ring is never warmed from (its owner id means nothing here).
  op_route old;
  place(*v1, h(mine), old);
  BOOST_CHECK(warm_source(*v2, h(mine), old, 0).where == placement::unavailable);
  auto st = status::miss;
  BOOST_CHECK(after_result(*v2, old, st, warm_class::read, true, 0) == next_step::place);
}

BOOST_AUTO_TEST_CASE(two_joins_inside_the_window_warm_from_each_past_primary_in_turn) {
  // n3 joins n1, n2 (window until 1000), then n4 (window until 2000), seen from n1: a key
  // n2 owned, then n3, now n4, is asked of n3 and then of n2; each inside its own window.
  views vs;
  auto v1 = vs.make("n1", {"n1", "n2"}, 1);
  auto v2 = vs.make("n1", {"n1", "n2", "n3"}, 2, v1, 1000);
  auto v3 = vs.make("n1", {"n1", "n2", "n3", "n4"}, 3, v2, 2000);
  BOOST_REQUIRE_EQUAL(v3->past.size(), 2u);
  auto k = key_with_primaries({{v1.get(), "n2"}, {v2.get(), "n3"}, {v3.get(), "n4"}});
  op_route rt;
  BOOST_REQUIRE(place(*v3, h(k), rt) == placement::peer);
  auto st = status::miss;
  BOOST_CHECK(after_result(*v3, rt, st, warm_class::read, true, 500) == next_step::warm);
  auto w = warm_source(*v3, h(k), rt, 500);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(w.depth, 0u);
  BOOST_CHECK_EQUAL(v3->past[0].ring->member(w.id).name, "n3");
  BOOST_CHECK(v3->past[0].peers[w.id] == v2->peers[w.id]);
  rt.warm_next = w.next;  // n3 missed too
  w = warm_source(*v3, h(k), rt, 500);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(w.depth, 1u);
  BOOST_CHECK_EQUAL(v3->past[1].ring->member(w.id).name, "n2");
  rt.warm_next = w.next;
  BOOST_CHECK(warm_source(*v3, h(k), rt, 500).where == placement::unavailable);
  // Past the older window only the newer ring is asked.
  rt.warm_next = past_ring::max_erase_ranks;  // past the newer ring's positions
  BOOST_CHECK(warm_source(*v3, h(k), rt, 1000).where == placement::unavailable);
  rt.warm_next = 0;
  BOOST_CHECK_EQUAL(warm_source(*v3, h(k), rt, 1999).depth, 0u);
  BOOST_CHECK(warm_source(*v3, h(k), rt, 2000).where == placement::unavailable);

  // A key n2 owned through both joins (now n4's) is asked of n2 once, not twice.
  auto kept = key_with_primaries({{v1.get(), "n2"}, {v2.get(), "n2"}, {v3.get(), "n4"}});
  op_route rk;
  place(*v3, h(kept), rk);
  w = warm_source(*v3, h(kept), rk, 500);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(w.depth, 0u);
  rk.warm_next = w.next;
  BOOST_CHECK(warm_source(*v3, h(kept), rk, 500).where == placement::unavailable);
}

BOOST_AUTO_TEST_CASE(a_rolling_restart_warms_from_where_the_key_was_while_the_node_was_away) {
  // n1 was dead (n2, n3 served its keys), came back (n1 warms from them), then n2 died
  // within the window: a key n3 held while n1 was away is n1's in the last two rings. n1
  // misses it: the newest past ring names n1 itself, the one before it n3.
  views vs;
  auto all = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto away = vs.make("n1", {"n2", "n3"}, 2, all, 1000);
  auto back = vs.make("n1", {"n1", "n2", "n3"}, 3, away, 2000);
  auto last = vs.make("n1", {"n1", "n3"}, 4, back, 3000);
  BOOST_REQUIRE_EQUAL(last->past.size(), 3u);
  auto k = key_with_primaries({{away.get(), "n3"}, {back.get(), "n1"}, {last.get(), "n1"}});
  op_route rt;
  BOOST_REQUIRE(place(*last, h(k), rt) == placement::local);
  auto st = status::miss;
  BOOST_CHECK(after_result(*last, rt, st, warm_class::read, true, 900) == next_step::warm);
  auto w = warm_source(*last, h(k), rt, 900);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(w.depth, 1u);
  BOOST_CHECK_EQUAL(last->past[1].ring->member(w.id).name, "n3");
  rt.warm_next = w.next;  // the oldest ring names n1 again
  BOOST_CHECK(warm_source(*last, h(k), rt, 900).where == placement::unavailable);
}

BOOST_AUTO_TEST_CASE(a_node_dead_in_a_newer_ring_is_not_asked) {
  // n2 died (ring 2), then n4 joined (ring 3), seen from n1: a key n2 owned in ring 1 went to
  // n3 in ring 2 and is n4's now. n3 is asked; n2, which lost it (or missed the deletes
  // meanwhile), is not, though ring 1 still names it.
  views vs;
  auto v1 = vs.make("n1", {"n1", "n2", "n3"}, 1);
  auto v2 = vs.make("n1", {"n1", "n2", "n3"}, 2, v1, 1000);
  auto v3 = vs.make("n1", {"n1", "n2", "n3", "n4"}, 3, v2, 2000);
  // make() builds rings of live members only: mark n2 dead in ring 2 and the current ring.
  auto dead_n2 = [](const cluster_view& v, uint64_t epoch) {
    auto ms = v.ring->members();
    for (auto& m : ms)
      m.alive = m.name != "n2";
    return cluster::ring::build(ms, epoch);
  };
  v2->ring = dead_n2(*v2, 2);
  v3->past[0].ring = v2->ring;
  v3->ring = dead_n2(*v3, 3);
  auto k = key_with_primaries({{v1.get(), "n2"}, {v2.get(), "n3"}, {v3.get(), "n4"}});
  op_route rt;
  BOOST_REQUIRE(place(*v3, h(k), rt) == placement::peer);
  auto w = warm_source(*v3, h(k), rt, 500);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(v3->past[w.depth].ring->member(w.id).name, "n3");
  rt.warm_next = w.next;
  BOOST_CHECK(warm_source(*v3, h(k), rt, 500).where == placement::unavailable);
  // A delete is not sent there either.
  rt.warm_next = w.next;
  BOOST_CHECK(warm_source(*v3, h(k), rt, 500, true).where == placement::unavailable);
}

BOOST_AUTO_TEST_CASE(a_read_does_not_look_past_a_newer_owner_that_died) {
  // n3 joined n1, n2 (a client then overwrote keys it took), n4 joined, and n3 died: a key n1
  // held, then n3, now n4, is not read from n1 (its copy is older than what n3 lost); a
  // delete still goes there.
  views vs;
  auto v1 = vs.make("n2", {"n1", "n2"}, 1);
  auto v2 = vs.make("n2", {"n1", "n2", "n3"}, 2, v1, 1000);
  auto v3 = vs.make("n2", {"n1", "n2", "n3", "n4"}, 3, v2, 2000);
  auto v4 = vs.make("n2", {"n1", "n2", "n3", "n4"}, 4, v3, 3000);
  auto ms = v4->ring->members();
  for (auto& m : ms)
    m.alive = m.name != "n3";
  v4->ring = cluster::ring::build(ms, 4);
  auto k = key_with_primaries(
      {{v1.get(), "n1"}, {v2.get(), "n3"}, {v3.get(), "n4"}, {v4.get(), "n4"}});
  op_route rt;
  BOOST_REQUIRE(place(*v4, h(k), rt) == placement::peer);
  // past: ring 3 (n4: the node that missed), ring 2 (n3: dead now), ring 1 (n1).
  BOOST_CHECK(warm_source(*v4, h(k), rt, 500).where == placement::unavailable);
  std::vector<std::string> erased;
  for (int hops = 0; hops < 8; ++hops) {
    auto w = warm_source(*v4, h(k), rt, 500, true);
    if (w.where == placement::unavailable)
      break;
    erased.push_back(v4->past[w.depth].ring->member(w.id).name);
    rt.warm_next = w.next;
  }
  BOOST_REQUIRE_EQUAL(erased.size(), 1u);
  BOOST_CHECK_EQUAL(erased[0], "n1");
}

BOOST_AUTO_TEST_CASE(a_joining_node_deletes_at_the_next_owners_of_its_first_ring_too) {
  // n4 joins right after n3: its first ring (without itself) has n3, which may not have
  // warmed the keys it took from n1/n2 yet. A read through n4 asks n3 only; a delete also
  // goes to the next owner clockwise, the one before n3 joined.
  views vs;
  auto before = vs.make("n4", {"n1", "n2"}, 1);
  auto joined = vs.make("n4", {"n1", "n2", "n3"}, 2);
  auto now = vs.make("n4", {"n1", "n2", "n3", "n4"}, 3);
  now->past.push_back({joined->ring, joined->peers, joined->clients, 1000,
                       past_ring::max_erase_ranks});
  auto k = key_with_primaries({{before.get(), "n1"}, {joined.get(), "n3"}, {now.get(), "n4"}});
  op_route rt;
  BOOST_REQUIRE(place(*now, h(k), rt) == placement::local);
  auto w = warm_source(*now, h(k), rt, 0);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(now->past[0].ring->member(w.id).name, "n3");
  rt.warm_next = w.next;
  BOOST_CHECK(warm_source(*now, h(k), rt, 0).where == placement::unavailable);  // a read
  rt.warm_next = 0;
  std::vector<std::string> erased;
  for (int hops = 0; hops < 8; ++hops) {
    w = warm_source(*now, h(k), rt, 0, true);
    if (w.where == placement::unavailable)
      break;
    erased.push_back(now->past[w.depth].ring->member(w.id).name);
    rt.warm_next = w.next;
  }
  // n3, then n1 (the owner without n3), then the one after (the owner without both): each
  // once; n4 itself is never asked.
  BOOST_REQUIRE_EQUAL(erased.size(), 3u);
  BOOST_CHECK_EQUAL(erased[0], "n3");
  BOOST_CHECK_EQUAL(erased[1], "n1");
  BOOST_CHECK_EQUAL(erased[2], "n2");
}

// R = 2: after md I marked the item stale at its primary, the erase inside the window does
// not delete at a past owner that is an owner now (the replica): replication brings it the
// stale item, which a delete there would remove. A delete that found nothing (replicating
// nothing) still deletes there.
BOOST_AUTO_TEST_CASE(md_i_leaves_the_past_owner_that_is_a_replica_now_to_replication) {
  views vs;
  auto v1 = vs.make("n3", {"n1", "n2"}, 1);
  auto v2 = vs.make("n3", {"n1", "n2", "n3"}, 2, v1, 1000);
  std::string k;
  for (int i = 0; i < 100000 && k.empty(); ++i) {
    std::string c = "key-" + std::to_string(i);
    if (owners(*v2, c) == std::vector<std::string>{"n3", "n1"} && owners(*v1, c).front() == "n1")
      k = c;
  }
  BOOST_REQUIRE(!k.empty());
  op_route rt;
  BOOST_REQUIRE(place(*v2, h(k), rt) == placement::local);
  auto w = warm_source(*v2, h(k), rt, 500);  // a read that missed asks n1
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(v2->past[w.depth].ring->member(w.id).name, "n1");
  w = warm_source(*v2, h(k), rt, 500, true);  // a delete: n1 too
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(v2->past[w.depth].ring->member(w.id).name, "n1");
  rt.owners_replicated = true;  // md I that found the item
  BOOST_CHECK(warm_source(*v2, h(k), rt, 500, true).where == placement::unavailable);
  v2->replicas = 1;  // n1 is no owner now: the erase goes there
  w = warm_source(*v2, h(k), rt, 500, true);
  BOOST_REQUIRE(w.where == placement::peer);
  BOOST_CHECK_EQUAL(v2->past[w.depth].ring->member(w.id).name, "n1");
}

BOOST_AUTO_TEST_CASE(a_node_that_left_routes_everything_to_the_others) {
  views vs;
  auto v1 = vs.make("n3", {"n1", "n2", "n3"}, 1);
  auto k = key_owned_by(*v1, {"n3", "n1"});
  auto v2 = vs.make("n3", {"n1", "n2"}, 2, v1, 1000);
  BOOST_CHECK_EQUAL(v2->self, v2->ring->size());
  op_route rt;
  BOOST_CHECK(place(*v2, h(k), rt) == placement::peer);
  BOOST_CHECK_EQUAL(name_of(*v2, rt.owner), "n1");
  // n1 misses (say it lost the replica): n3 held it before and asks its own shards.
  auto st = status::miss;
  BOOST_CHECK(after_result(*v2, rt, st, warm_class::read, true, 0) == next_step::warm);
  auto w = warm_source(*v2, h(k), rt, 999);
  BOOST_CHECK(w.where == placement::local);
}

BOOST_AUTO_TEST_CASE(ops_placed_by_a_replaced_ring_are_placed_again_only_off_their_owners) {
  // n4 joins n1..n3, as seen from n2 (R = 2). A member whose view lags still places by the
  // ring without n4 and sends n2 a key that n4 and n1 own now (n2 owned it before).
  views vs;
  auto v1 = vs.make("n2", {"n1", "n2", "n3"}, 1);
  auto v2 = vs.make("n2", {"n1", "n2", "n3", "n4"}, 2, v1, 1000);
  const uint64_t old_ring = v1->ring->placement(), new_ring = v2->ring->placement();
  BOOST_CHECK_NE(old_ring, new_ring);
  BOOST_CHECK(placed_by_replaced_ring(*v2, old_ring));
  BOOST_CHECK(!placed_by_replaced_ring(*v2, new_ring));  // the member's ring is ours
  BOOST_CHECK(!placed_by_replaced_ring(*v2, 0));         // an older node says nothing
  BOOST_CHECK(!placed_by_replaced_ring(*v2, 12345));     // a ring we never had: maybe newer
  BOOST_CHECK(!placed_by_replaced_ring(*v1, old_ring));  // no past ring at all
  // A ring built elsewhere from the same live members is the same placement, whatever its
  // dead members and epoch.
  auto other = cluster::ring::build({{"n3", "x:1", 1, true}, {"n1", "y:2", 1, true},
                                     {"n2", "z:3", 1, true}, {"n9", "w:4", 1, false}}, 77);
  BOOST_CHECK_EQUAL(other->placement(), old_ring);

  storage::op o;
  o.kind = storage::op_kind::store;
  o.key = key_with_primaries({{v1.get(), "n2"}, {v2.get(), "n4"}});
  bool n2_still_owner = owners(*v2, o.key).back() == "n2";
  BOOST_CHECK_EQUAL(place_again(*v2, o), !n2_still_owner);
  // A key n2 still owns runs here.
  storage::op mine = o;
  mine.key = key_owned_by(*v2, {"n2", "n1"});
  BOOST_CHECK(!place_again(*v2, mine));
  mine.key = key_owned_by(*v2, {"n1", "n2"});  // a replica here: runs here, replicated on
  BOOST_CHECK(!place_again(*v2, mine));
  // Neither owner: placed again, reads too; never an op already placed again, a flush or a
  // re-read of a parked result.
  storage::op away = o;
  away.key = key_owned_by(*v2, {"n4", "n3"});
  BOOST_CHECK(place_again(*v2, away));
  away.kind = storage::op_kind::get;
  BOOST_CHECK(place_again(*v2, away));
  storage::op routed = away;
  routed.routed = 1;  // placed once on its way (by bifrostctl's node, or a node like this one)
  BOOST_CHECK(place_again(*v2, routed));
  routed.routed = max_routed;  // the bound: it runs where it arrives
  BOOST_CHECK(!place_again(*v2, routed));
  storage::op parked = away;
  parked.parked = 5;
  BOOST_CHECK(!place_again(*v2, parked));
  storage::op flush = away;
  flush.kind = storage::op_kind::flush;
  BOOST_CHECK(!place_again(*v2, flush));
  // With R = 1 only the primary counts.
  v2->replicas = 1;
  mine.key = key_owned_by(*v2, {"n1", "n2"});
  BOOST_CHECK(place_again(*v2, mine));
  // A joining node places nothing again (its ring is itself alone).
  v2->joining = true;
  BOOST_CHECK(!placed_by_replaced_ring(*v2, old_ring));
}

BOOST_AUTO_TEST_CASE(a_node_that_left_places_every_key_again) {
  // n3 left: out of its own ring, it owns nothing, and a lagging member's ops for it go on.
  views vs;
  auto v1 = vs.make("n3", {"n1", "n2", "n3"}, 1);
  auto v2 = vs.make("n3", {"n1", "n2"}, 2, v1, 1000);
  BOOST_CHECK(placed_by_replaced_ring(*v2, v1->ring->placement()));
  storage::op o;
  o.kind = storage::op_kind::remove;
  o.key = key_owned_by(*v1, {"n3", "n1"});
  BOOST_CHECK(place_again(*v2, o));
  o.key = key_owned_by(*v2, {"n1", "n2"});  // (n3's self id names no member of this ring)
  BOOST_CHECK(place_again(*v2, o));
}

BOOST_AUTO_TEST_CASE(writes_that_find_nothing_warm_before_they_run_again) {
  using storage::op_kind;
  using storage::store_mode;
  storage::op get, gat, incr, touch, del, md_i, set, add, append, cas, flush;
  gat.get_touch = true;
  incr.kind = op_kind::arith;
  touch.kind = op_kind::touch;
  del.kind = md_i.kind = op_kind::remove;
  md_i.invalidate = true;  // md I keeps the item (stale): it needs it, as an update
  set.kind = add.kind = append.kind = cas.kind = op_kind::store;
  add.mode = store_mode::add;
  append.mode = store_mode::append;
  cas.mode = store_mode::cas;
  flush.kind = op_kind::flush;
  BOOST_CHECK(classify(get) == warm_class::read);
  for (auto* o : {&gat, &incr, &touch, &append, &cas, &md_i})
    BOOST_CHECK(classify(*o) == warm_class::update);
  BOOST_CHECK(classify(del) == warm_class::remove);
  BOOST_CHECK(classify(add) == warm_class::insert);
  for (auto* o : {&set, &flush})
    BOOST_CHECK(classify(*o) == warm_class::blind);
  // mg N, ma N and ms MA/MP N make the item when there is none: warmed first, as an add
  storage::op mg_n = get, ma_n = incr, ms_append_n = append;
  mg_n.vivify = ma_n.vivify = ms_append_n.vivify = true;
  for (auto* o : {&mg_n, &ma_n, &ms_append_n})
    BOOST_CHECK(classify(*o) == warm_class::insert);

  n4_joined j;
  auto &v1 = j.v1, &v2 = j.v2;
  auto& k = j.k;
  auto& rt = j.rt;
  BOOST_REQUIRE(place(*v2, h(k), rt) == placement::peer);
  // Only an update store keeps its value, and only inside the window, before warming.
  BOOST_CHECK(may_run_again(*v2, append, 999));
  BOOST_CHECK(!may_run_again(*v2, append, 1000));
  BOOST_CHECK(!may_run_again(*v2, set, 999));
  BOOST_CHECK(!may_run_again(*v2, incr, 999));  // no value: always whole
  // An add looks at the previous owner before it runs (it cannot be undone after), once,
  // inside the window; nothing else does.
  BOOST_CHECK(warm_first(*v2, rt, add, 999));
  BOOST_CHECK(!warm_first(*v2, rt, add, 1000));
  BOOST_CHECK(warm_first(*v2, rt, ma_n, 999) && warm_first(*v2, rt, mg_n, 999));
  for (auto* o : {&set, &append, &get, &del})
    BOOST_CHECK(!warm_first(*v2, rt, *o, 999));
  for (auto st : {status::not_found, status::not_stored, status::miss}) {
    op_route r = rt;
    auto s = st;
    BOOST_CHECK(after_result(*v2, r, s, warm_class::update, true, 999) == next_step::warm);
    s = st;  // a store whose value went with it cannot run again
    BOOST_CHECK(after_result(*v2, r, s, warm_class::update, false, 999) == next_step::accept);
  }
  // An update that found its item, a blind write, or anything after the window: as it is.
  auto s = status::hit;
  BOOST_CHECK(after_result(*v2, rt, s, warm_class::update, true, 999) == next_step::accept);
  s = status::not_stored;  // add on an existing item
  BOOST_CHECK(after_result(*v2, rt, s, warm_class::blind, true, 999) == next_step::accept);
  s = status::not_found;
  BOOST_CHECK(after_result(*v2, rt, s, warm_class::update, true, 1000) == next_step::accept);
  // A delete that ran goes to the previous owner too, whatever it found; one refused (a CAS
  // mismatch) does not.
  for (auto st : {status::deleted, status::not_found}) {
    op_route r = rt;
    s = st;
    BOOST_CHECK(after_result(*v2, r, s, warm_class::remove, true, 999) == next_step::warm);
  }
  s = status::exists;
  BOOST_CHECK(after_result(*v2, rt, s, warm_class::remove, true, 999) == next_step::accept);
  // A result from an older ring: an update that found nothing is placed again; a delete
  // that ran is not repeated.
  op_route old;
  place(*v1, h(k), old);
  s = status::not_found;
  BOOST_CHECK(after_result(*v2, old, s, warm_class::update, true, 999) == next_step::place);
  op_route old2;
  place(*v1, h(k), old2);
  s = status::deleted;
  BOOST_CHECK(after_result(*v2, old2, s, warm_class::remove, true, 999) == next_step::accept);
  // Once warmed, never again.
  rt.warmed = true;
  s = status::not_found;
  BOOST_CHECK(after_result(*v2, rt, s, warm_class::update, true, 999) == next_step::accept);
  BOOST_CHECK(may_run_again(*v2, append, 999));  // (a newer ring may place it again)
  BOOST_CHECK(!warm_first(*v2, rt, add, 999));
}

// A warm copy is the item as the previous owner holds it: value, flags, absolute expiry, CAS
// and md I's stale mark, added only where the key is missing.
BOOST_AUTO_TEST_CASE(a_warm_copy_keeps_the_item_as_it_was) {
  storage::result r;
  r.st = status::hit;
  r.flags = 7;
  r.exptime = 1900000000;
  r.cas = 99;
  r.stale = true;
  auto o = warm_copy("k", r);
  BOOST_CHECK(o.kind == storage::op_kind::store && o.mode == storage::store_mode::add);
  BOOST_CHECK_EQUAL(o.key, "k");
  BOOST_CHECK_EQUAL(o.flags, 7u);
  BOOST_CHECK_EQUAL(o.ttl, 1900000000);
  BOOST_CHECK_EQUAL(o.explicit_cas, 99u);
  BOOST_CHECK(o.as_stale);
  BOOST_CHECK(!o.token_out);
  BOOST_CHECK(o.copy);  // (refused after a delete there lately: storage::shard::guard_copies)
  r.win = true;  // the warming reader took the token there: nobody wins it again here
  BOOST_CHECK(warm_copy("k", r).token_out);
  r.win = false;
  r.already_won = true;  // a reader before it took it
  BOOST_CHECK(warm_copy("k", r).token_out);
  r.stale = false;
  BOOST_CHECK(!warm_copy("k", r).as_stale);
}

// A write inside the window deletes the key at past_holders(): the past owners that may hold
// an older copy and are not owners now, so that the key's owners changing back to one of them
// does not bring the older value back.
BOOST_AUTO_TEST_CASE(past_holders_are_the_past_owners_that_are_not_owners_now) {
  views vs;
  auto v1 = vs.make("n4", {"n1", "n2", "n3"}, 1);
  auto v2 = vs.make("n4", {"n1", "n2", "n3", "n4"}, 2, v1, 1000);
  past_holder out[max_past_holders];
  auto named = [&](const cluster_view& v, const std::string& k, int64_t now) {
    std::vector<std::string> names;
    size_t n = past_holders(v, h(k), now, out);
    for (size_t i = 0; i < n; ++i)
      names.push_back(v.past[out[i].depth].ring->member(out[i].id).name);
    std::sort(names.begin(), names.end());
    return names;
  };
  using names = std::vector<std::string>;
  // R = 1: a key n2 owned and n4 owns now; n2 may still hold it.
  v2->replicas = 1;
  auto moved = key_moved(*v1, "n2", *v2, "n4");
  BOOST_CHECK(named(*v2, moved, 0) == names{"n2"});
  BOOST_CHECK(named(*v2, moved, 999) == names{"n2"});
  // Warm reads stop when the window ends; the deletes go on copies_kept_ms longer.
  BOOST_CHECK(named(*v2, moved, 1000) == names{"n2"});
  BOOST_CHECK(named(*v2, moved, 1000 + cluster_view::copies_kept_ms - 1) == names{"n2"});
  BOOST_CHECK(named(*v2, moved, 1000 + cluster_view::copies_kept_ms).empty());
  // A key that stayed where it was: nobody else holds it.
  auto stayed = key_with_primaries({{v1.get(), "n3"}, {v2.get(), "n3"}});
  BOOST_CHECK(named(*v2, stayed, 0).empty());
  // Each past ring placed copies at its first R owners (not the further ones its deletes
  // reach, erase_ranks).
  v2->past[0].erase_ranks = 4;
  auto two = key_owned_by(*v1, {"n2", "n3"});
  BOOST_CHECK(named(*v2, two, 0) == (owners(*v2, two).front() == "n2" ? names{} : names{"n2"}));
  // R = 2: both copies it placed; an owner now has the write (as a replica), and is not one.
  v2->replicas = 2;
  auto both = key_owned_by(*v1, {"n2", "n3"});
  auto now_owners = owners(*v2, both);
  names want;
  for (const char* n : {"n2", "n3"})
    if (std::find(now_owners.begin(), now_owners.end(), n) == now_owners.end())
      want.push_back(n);
  BOOST_CHECK(named(*v2, both, 0) == want);
  auto moved2 = key_owned_by(*v2, {"n4", "n2"});
  for (const auto& n : named(*v2, moved2, 0))
    BOOST_CHECK(n != "n4" && n != "n2");
  // A past owner that left (not in the ring any more) still serves warm reads until it
  // exits: it is one. One the ring has dead is not (nothing to reach there).
  auto v3 = vs.make("n4", {"n1", "n3", "n4"}, 3, v2, 2000);
  v3->replicas = 1;
  auto gone = key_moved(*v1, "n2", *v3, "n4");
  BOOST_CHECK(named(*v3, gone, 0) == names{"n2"});
  std::vector<cluster::ring_member> with_dead;
  for (auto n : {"n1", "n2", "n3", "n4"})
    with_dead.push_back({n, "127.0.0.1:7000", 1, std::string(n) != "n2"});
  auto v5 = std::make_shared<cluster_view>(*v3);
  v5->ring = cluster::ring::build(with_dead, 5);
  v5->self = *v5->ring->find("n4");
  BOOST_CHECK(named(*v5, gone, 0).empty());
  // This node is one when it held the key and does not own it now (a client wrote it here,
  // and the write went to n4): its own copy goes too.
  auto w1 = vs.make("n2", {"n1", "n2", "n3"}, 1);
  auto w2 = vs.make("n2", {"n1", "n2", "n3", "n4"}, 2, w1, 1000);
  w2->replicas = 1;
  auto mine = key_moved(*w1, "n2", *w2, "n4");
  BOOST_CHECK(named(*w2, mine, 0) == names{"n2"});
  BOOST_CHECK(w2->past[out[0].depth].ring->member(out[0].id).name == w2->self_name);
}

// A warm read's walk keeps the latest delete point it met (a miss's deleted_cas), and a hit
// no later than it by the CAS clock (the deleted write itself included) counts as taken.
BOOST_AUTO_TEST_CASE(a_walk_keeps_the_latest_delete_and_takes_older_hits) {
  const uint64_t t = storage::k_cas_clock_min + (uint64_t{1000} << 8);  // clock values
  op_route rt;
  auto miss = [](uint64_t at) {
    auto r = storage::result::of(storage::status::miss);
    r.deleted_cas = at;
    return r;
  };
  auto hit = [](uint64_t cas) {
    auto r = storage::result::of(storage::status::hit);
    r.cas = cas;
    return r;
  };
  BOOST_CHECK(!taken_on_walk(rt, hit(t)));  // (no delete met)
  BOOST_CHECK(!taken_on_walk(rt, miss(t + 10)));
  BOOST_CHECK_EQUAL(rt.gone_at, t + 10);
  BOOST_CHECK(!taken_on_walk(rt, miss(t + 5)));  // an older point keeps the later one
  BOOST_CHECK_EQUAL(rt.gone_at, t + 10);
  BOOST_CHECK(!taken_on_walk(rt, miss(0)));
  BOOST_CHECK_EQUAL(rt.gone_at, t + 10);
  BOOST_CHECK(taken_on_walk(rt, hit(t + 9)));
  BOOST_CHECK(taken_on_walk(rt, hit(t + 10)));  // (an expiry's point: the write's own CAS)
  BOOST_CHECK(!taken_on_walk(rt, hit(t + 11)));
  BOOST_CHECK(!taken_on_walk(rt, hit(12345)));  // not on the clock: not ordered
  BOOST_CHECK(!taken_on_walk(rt, miss(t + 20)));
  BOOST_CHECK_EQUAL(rt.gone_at, t + 20);
  BOOST_CHECK(taken_on_walk(rt, hit(t + 11)));
  rt.lately = true;  // (the owner's miss said deleted_lately)
  BOOST_CHECK(taken_on_walk(rt, hit(12345)));  // then an unordered hit counts as older
  BOOST_CHECK(!taken_on_walk(rt, hit(t + 21)));
}

BOOST_AUTO_TEST_CASE(a_delete_that_found_nothing_lately_answers_only_for_a_later_item) {
  const uint64_t t = storage::k_cas_clock_min + (uint64_t{1000} << 8);  // clock values
  auto of = [](status st, uint64_t cas, uint64_t point = 0) {
    auto r = storage::result::of(st);
    r.cas = cas;
    r.deleted_cas = point;
    return r;
  };
  auto own = of(status::not_found, 0, t + 10);
  own.deleted_lately = true;
  op_route rt;
  rt.gone_at = own.deleted_cas;  // (as the warm step sets it)
  BOOST_CHECK(keeps_owner_answer(rt, own, of(status::deleted, t + 5), false));  // a replica
  BOOST_CHECK(keeps_owner_answer(rt, own, of(status::deleted, t + 10), false));
  BOOST_CHECK(keeps_owner_answer(rt, own, of(status::deleted, 12345), false));  // unordered
  BOOST_CHECK(!keeps_owner_answer(rt, own, of(status::deleted, t + 11), false));  // later
  BOOST_CHECK(!keeps_owner_answer(rt, own, of(status::exists, t + 11), false));
  BOOST_CHECK(keeps_owner_answer(rt, own, of(status::deleted, t + 11), true));  // md I's CAS
  // A previous owner where a delete took the key later still: an item further back no later
  // than that is a copy it removed.
  BOOST_CHECK(keeps_owner_answer(rt, own, of(status::not_found, 0, t + 20), false));
  BOOST_CHECK_EQUAL(rt.gone_at, t + 20);
  BOOST_CHECK(keeps_owner_answer(rt, own, of(status::deleted, t + 15), false));
  BOOST_CHECK(!keeps_owner_answer(rt, own, of(status::deleted, t + 21), false));
  // Not lately: whatever the chain removes answers; a removal or refusal of its own stands.
  op_route plain;
  auto none = of(status::not_found, 0);
  BOOST_CHECK(!keeps_owner_answer(plain, none, of(status::deleted, t + 5), false));
  BOOST_CHECK(keeps_owner_answer(plain, of(status::deleted, t), of(status::deleted, t + 5), false));
  BOOST_CHECK(keeps_owner_answer(plain, of(status::exists, t), of(status::deleted, t + 5), false));
}

BOOST_AUTO_TEST_SUITE_END()
