// The placement ring: the hash is xxHash64 bit for bit, the ring is a pure function of the
// member list, keys are balanced by weight, membership changes move the minimum of keys, and
// the owner queries honour R, distinctness and liveness.
#include "cluster/ring.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace bifrost::cluster;

namespace {

std::string key(size_t i) {
  // 20-byte keys, the size memcached workloads typically use.
  char buf[32];
  std::snprintf(buf, sizeof buf, "user:%015zu", i);
  return buf;
}

std::vector<ring_member> nodes(std::initializer_list<const char*> names) {
  std::vector<ring_member> res;
  int port = 7000;
  for (const char* n : names) res.push_back({n, "127.0.0.1:" + std::to_string(port++), 1, true});
  return res;
}

std::map<std::string, size_t> primary_counts(const ring& r, size_t keys) {
  std::map<std::string, size_t> counts;
  for (size_t i = 0; i < keys; ++i) ++counts[r.primary(key(i))->name];
  return counts;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ring_tests)

BOOST_AUTO_TEST_CASE(hash64_matches_xxhash64_reference_vectors) {
  BOOST_TEST(hash64("") == 0xEF46DB3751D8E999ULL);
  BOOST_TEST(hash64("a") == 0xD24EC4F1A98C6E5BULL);
  BOOST_TEST(hash64("abc") == 0x44BC2CF5AD770999ULL);
  // 39 bytes: the 32-byte stripe loop, an 8-byte lane and the 4-byte and 1-byte tails.
  BOOST_TEST(hash64("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ULL);
  BOOST_TEST(hash64("abc", 1) != hash64("abc", 0));
}

BOOST_AUTO_TEST_CASE(placement_is_frozen_across_builds) {
  // Golden values: if these change, nodes built from different versions disagree on owners.
  ring r(nodes({"node-a", "node-b", "node-c"}));
  BOOST_TEST(r.points() == 480u);
  std::string got;
  for (size_t i = 0; i < 12; ++i) got += r.primary(key(i))->name.back();
  BOOST_TEST_MESSAGE("golden: " << got);
  BOOST_TEST(got == "cbabbccabbcc");
}

BOOST_AUTO_TEST_CASE(the_placement_id_names_the_live_placement) {
  auto id = [](std::vector<ring_member> ms, uint64_t epoch = 0) {
    return ring(std::move(ms), epoch).placement();
  };
  const uint64_t abc = id({{"a", "h:1", 1, true}, {"b", "h:2", 1, true}, {"c", "h:3", 1, true}});
  BOOST_CHECK_NE(abc, 0u);
  // Order, addresses, epoch and dead members do not change where keys live: the same id.
  BOOST_CHECK_EQUAL(abc, id({{"c", "x:9", 1, true}, {"a", "y:8", 1, true}, {"b", "z:7", 1, true},
                             {"d", "h:4", 1, false}}, 42));
  // Another live member, a member dead, or another weight: another id.
  BOOST_CHECK_NE(abc, id({{"a", "h:1", 1, true}, {"b", "h:2", 1, true}, {"c", "h:3", 1, true},
                          {"d", "h:4", 1, true}}));
  BOOST_CHECK_NE(abc, id({{"a", "h:1", 1, true}, {"b", "h:2", 1, true}, {"c", "h:3", 1, false}}));
  BOOST_CHECK_NE(abc, id({{"a", "h:1", 1, true}, {"b", "h:2", 2, true}, {"c", "h:3", 1, true}}));
  // A member of weight 0 owns nothing: as if it were not there.
  BOOST_CHECK_EQUAL(abc, id({{"a", "h:1", 1, true}, {"b", "h:2", 1, true}, {"c", "h:3", 1, true},
                             {"z", "h:5", 0, true}}));
  // Names are delimited: "ab"+"c" is not "a"+"bc".
  BOOST_CHECK_NE(id({{"ab", "h:1", 1, true}, {"c", "h:2", 1, true}}),
                 id({{"a", "h:1", 1, true}, {"bc", "h:2", 1, true}}));
}

BOOST_AUTO_TEST_CASE(same_members_in_any_order_give_the_same_owners) {
  auto a = nodes({"n1", "n2", "n3", "n4", "n5"});
  auto b = a;
  std::reverse(b.begin(), b.end());
  auto c = a;
  std::rotate(c.begin(), c.begin() + 2, c.end());
  ring ra(a), rb(b), rc(c);
  BOOST_TEST(ra.members() == rb.members());
  for (size_t i = 0; i < 10000; ++i) {
    auto oa = ra.owners(key(i), 3), ob = rb.owners(key(i), 3), oc = rc.owners(key(i), 3);
    BOOST_REQUIRE_EQUAL(oa.size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      BOOST_REQUIRE_EQUAL(oa[j]->name, ob[j]->name);
      BOOST_REQUIRE_EQUAL(oa[j]->name, oc[j]->name);
    }
  }
  for (const auto& m : ra.members()) BOOST_TEST(ra.share(m.name) == rb.share(m.name));
}

// A lone member owns exactly all of the space (its arcs summed one by one as doubles gave
// 1.0000000000000002, which `members --json` printed as a ring share above 1).
BOOST_AUTO_TEST_CASE(a_lone_member_owns_exactly_the_whole_space) {
  for (const char* name : {"node-a", "127.0.0.1:11211", "n1"}) {
    ring r(nodes({name}));
    BOOST_TEST(r.share(name) == 1.0, name);
    BOOST_TEST(r.live_share(name) == 1.0, name);
  }
}

BOOST_AUTO_TEST_CASE(three_equal_members_share_the_space_evenly) {
  ring r(nodes({"node-a", "node-b", "node-c"}));
  const size_t keys = 100000;
  auto counts = primary_counts(r, keys);
  double total_share = 0;
  for (const auto& m : r.members()) {
    const double measured = double(counts[m.name]) / keys;
    const double computed = r.share(m.name);
    BOOST_TEST_MESSAGE(m.name << ": measured " << measured << ", share() " << computed);
    BOOST_TEST(std::abs(measured - 1.0 / 3) <= 0.15 / 3);
    BOOST_TEST(std::abs(computed - 1.0 / 3) <= 0.15 / 3);
    BOOST_TEST(std::abs(measured - computed) <= 0.01);  // share() agrees with the keys
    total_share += computed;
  }
  BOOST_TEST(std::abs(total_share - 1.0) < 1e-9);
}

BOOST_AUTO_TEST_CASE(weights_scale_the_share) {
  auto m = nodes({"light", "heavy"});
  m[1].weight = 2;
  ring r(m);
  BOOST_TEST(r.points() == 480u);
  auto counts = primary_counts(r, 100000);
  const double ratio = double(counts["heavy"]) / double(counts["light"]);
  BOOST_TEST_MESSAGE("heavy/light keys: " << ratio << ", shares " << r.share("heavy") << " / "
                                          << r.share("light"));
  BOOST_TEST(ratio > 1.6);
  BOOST_TEST(ratio < 2.5);
  BOOST_TEST(r.share("heavy") / r.share("light") > 1.6);
  BOOST_TEST(r.share("heavy") / r.share("light") < 2.5);
}

BOOST_AUTO_TEST_CASE(adding_a_member_moves_about_a_quarter_of_keys_only_to_it) {
  ring before(nodes({"node-a", "node-b", "node-c"}));
  ring after(nodes({"node-a", "node-b", "node-c", "node-d"}));
  const size_t keys = 100000;
  size_t moved = 0;
  for (size_t i = 0; i < keys; ++i) {
    const auto& was = before.primary(key(i))->name;
    const auto& now = after.primary(key(i))->name;
    if (was != now) {
      ++moved;
      BOOST_REQUIRE_EQUAL(now, "node-d");
    }
  }
  const double frac = double(moved) / keys;
  BOOST_TEST_MESSAGE("moved " << frac << " of keys; share(node-d) " << after.share("node-d"));
  BOOST_TEST(frac > 0.25 * 0.8);
  BOOST_TEST(frac < 0.25 * 1.2);
  BOOST_TEST(std::abs(frac - after.share("node-d")) < 0.01);
}

BOOST_AUTO_TEST_CASE(removing_a_member_moves_only_its_keys) {
  ring before(nodes({"node-a", "node-b", "node-c", "node-d"}));
  ring after(nodes({"node-a", "node-b", "node-d"}));
  for (size_t i = 0; i < 50000; ++i) {
    const auto& was = before.primary(key(i))->name;
    const auto& now = after.primary(key(i))->name;
    if (was != "node-c") BOOST_REQUIRE_EQUAL(was, now);
    // The new primary of a moved key was its second owner before.
    if (was == "node-c") BOOST_REQUIRE_EQUAL(now, before.owners(key(i), 2)[1]->name);
  }
}

BOOST_AUTO_TEST_CASE(owners_are_r_distinct_members) {
  ring r(nodes({"n1", "n2", "n3", "n4", "n5"}));
  for (size_t i = 0; i < 5000; ++i) {
    for (size_t rr = 1; rr <= 5; ++rr) {
      auto o = r.owners(key(i), rr);
      BOOST_REQUIRE_EQUAL(o.size(), rr);
      std::set<std::string> distinct;
      for (auto* m : o) distinct.insert(m->name);
      BOOST_REQUIRE_EQUAL(distinct.size(), rr);
      BOOST_REQUIRE_EQUAL(o[0], r.primary(key(i)));
    }
    // A longer list extends a shorter one.
    auto o2 = r.owners(key(i), 2), o3 = r.owners(key(i), 3);
    BOOST_REQUIRE(o2[0] == o3[0] && o2[1] == o3[1]);
  }
}

BOOST_AUTO_TEST_CASE(more_replicas_than_members_gives_every_member) {
  ring r(nodes({"n1", "n2", "n3"}));
  auto o = r.owners("some-key", 10);
  BOOST_TEST(o.size() == 3u);
  std::set<std::string> names;
  for (auto* m : o) names.insert(m->name);
  BOOST_TEST(names.size() == 3u);
  ring::member_id ids[10];
  BOOST_TEST(r.owner_ids(ring::key_hash("some-key"), 10, ids) == 3u);
}

BOOST_AUTO_TEST_CASE(live_owners_skip_dead_members) {
  auto m = nodes({"n1", "n2", "n3", "n4"});
  m[1].alive = false;  // n2
  ring r(m);
  BOOST_TEST(r.size() == 4u);
  BOOST_TEST(r.live_size() == 3u);
  size_t n2_primary = 0;
  for (size_t i = 0; i < 5000; ++i) {
    auto all = r.owners(key(i), 4);
    std::vector<const ring_member*> expect;
    for (auto* o : all)
      if (o->alive) expect.push_back(o);
    for (size_t rr = 1; rr <= 4; ++rr) {
      auto live = r.live_owners(key(i), rr);
      BOOST_REQUIRE_EQUAL(live.size(), std::min<size_t>(rr, 3));
      for (size_t j = 0; j < live.size(); ++j) BOOST_REQUIRE(live[j] == expect[j]);
    }
    BOOST_REQUIRE(r.live_primary(key(i)) == expect[0]);
    if (r.primary(key(i))->name == "n2") ++n2_primary;
  }
  BOOST_TEST(n2_primary > 0u);  // a dead member keeps its points: primary() may name it
  BOOST_TEST(r.live_share("n2") == 0.0);
  BOOST_TEST(r.share("n2") > 0.0);
  BOOST_TEST(std::abs(r.live_share("n1") + r.live_share("n3") + r.live_share("n4") - 1.0) < 1e-9);
}

// A cluster that saw many members die: live lookups walk only the alive members' points
// (ring::live_only_), and must name exactly the owners a ring of the alive members alone gives
// (a point's position depends only on its member's name), for every R and weight mix.
BOOST_AUTO_TEST_CASE(live_owners_with_many_dead_match_a_ring_of_the_alive) {
  for (const size_t dead : {1u, 7u, 40u, 300u}) {
    std::vector<ring_member> all, alive;
    for (size_t i = 0; i < dead + 4; ++i) {
      // The alive ones spread among the dead (every (dead/4)-th), weights 1-3.
      const bool is_alive = i % (dead / 4 + 2) == 0 && alive.size() < 4;
      ring_member m{"node-" + std::to_string(i), "h:" + std::to_string(i),
                    static_cast<uint32_t>(1 + i % 3), is_alive};
      all.push_back(m);
      if (is_alive) alive.push_back(m);
    }
    const ring with_dead(all), only_alive(alive);
    BOOST_REQUIRE_EQUAL(with_dead.live_size(), alive.size());
    BOOST_REQUIRE_EQUAL(with_dead.points(), [&] {
      size_t p = 0;
      for (auto& m : all) p += 160u * m.weight;
      return p;
    }());
    for (size_t i = 0; i < 3000; ++i) {
      for (size_t rr = 1; rr <= alive.size() + 1; ++rr) {
        auto got = with_dead.live_owners(key(i), rr);
        auto want = only_alive.owners(key(i), rr);
        BOOST_REQUIRE_EQUAL(got.size(), want.size());
        for (size_t j = 0; j < got.size(); ++j) BOOST_REQUIRE_EQUAL(got[j]->name, want[j]->name);
      }
      // The walk over every point is unchanged: dead members keep theirs.
      BOOST_REQUIRE_EQUAL(with_dead.owners(key(i), 1).size(), 1u);
    }
    for (auto& m : alive)
      BOOST_TEST(std::abs(with_dead.live_share(m.name) - only_alive.share(m.name)) < 1e-9);
  }
}

BOOST_AUTO_TEST_CASE(empty_and_degenerate_rings) {
  ring empty({});
  BOOST_TEST(empty.empty());
  BOOST_TEST(empty.primary("k") == nullptr);
  BOOST_TEST(empty.live_primary("k") == nullptr);
  BOOST_TEST(empty.owners("k", 3).empty());
  BOOST_TEST(empty.share("x") == 0.0);

  auto zero = nodes({"n1"});
  zero[0].weight = 0;
  ring weightless(zero);
  BOOST_TEST(weightless.empty());
  BOOST_TEST(weightless.size() == 1u);
  BOOST_TEST(weightless.owners("k", 1).empty());

  auto dead = nodes({"n1", "n2"});
  for (auto& d : dead) d.alive = false;
  ring all_dead(dead);
  BOOST_TEST(!all_dead.empty());
  BOOST_TEST(all_dead.primary("k") != nullptr);
  BOOST_TEST(all_dead.live_primary("k") == nullptr);
  BOOST_TEST(all_dead.live_owners("k", 2).empty());

  ring single(nodes({"solo"}));
  BOOST_TEST(single.owners("k", 3).size() == 1u);
  BOOST_TEST(std::abs(single.share("solo") - 1.0) < 1e-9);

  ring one_point(nodes({"p"}), 0, ring_options{1});
  BOOST_TEST(one_point.points() == 1u);
  BOOST_TEST(one_point.primary("anything")->name == "p");
  BOOST_TEST(one_point.share("p") == 1.0);
}

BOOST_AUTO_TEST_CASE(members_are_sorted_deduplicated_and_findable) {
  std::vector<ring_member> m = {
      {"b", "h:2", 1, true}, {"a", "h:1", 1, true}, {"b", "h:0", 3, false}};
  auto r = ring::build(m, 42);
  BOOST_TEST(r->epoch() == 42u);
  BOOST_REQUIRE_EQUAL(r->size(), 2u);
  BOOST_TEST(r->members()[0].name == "a");
  BOOST_TEST(r->members()[1].address == "h:0");  // (name, address, ...) sorts first
  BOOST_TEST(r->find("b").value() == 1u);
  BOOST_TEST(!r->find("c").has_value());
  std::reverse(m.begin(), m.end());
  BOOST_TEST(ring(m).members() == r->members());
}

BOOST_AUTO_TEST_CASE(wraps_around_the_top_of_the_hash_space) {
  ring r(nodes({"n1", "n2", "n3"}));
  ring::member_id a, b;
  // Past the last point belongs to the first point's member.
  BOOST_REQUIRE_EQUAL(r.owner_ids(~uint64_t(0), 1, &a), 1u);
  BOOST_REQUIRE_EQUAL(r.owner_ids(0, 1, &b), 1u);
  BOOST_TEST(a == b);
}

BOOST_AUTO_TEST_SUITE_END()
