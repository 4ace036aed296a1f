// Parked values (cluster/parked.hpp): a result kept for its re-read is handed out once, as it
// was parked, whatever happened to its item since; entries are bounded in count, bytes and
// age, and the newest always stays.
#include "cluster/parked.hpp"

#include <boost/test/unit_test.hpp>

#include <memory>
#include <string>
#include <vector>

using namespace bifrost;
using bifrost::cluster::parked_values;

namespace {

storage::result hit(std::string value, uint64_t cas) {
  storage::result r;
  r.st = storage::status::hit;
  r.cas = cas;
  r.flags = 7;
  r.value = storage::pinned_slice::from_memory(std::make_shared<const std::string>(std::move(value)));
  return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(parked)

BOOST_AUTO_TEST_CASE(a_parked_result_is_taken_once_as_it_was) {
  parked_values p;
  auto t1 = p.park(hit("first", 11), 1000);
  auto t2 = p.park(hit("second", 12), 1000);
  BOOST_CHECK_NE(t1, 0u);
  BOOST_CHECK_NE(t1, t2);
  BOOST_CHECK_EQUAL(p.size(), 2u);
  BOOST_CHECK_EQUAL(p.bytes(), 11u);
  storage::result r;
  BOOST_REQUIRE(p.take(t2, r));
  BOOST_CHECK(r.st == storage::status::hit);
  BOOST_CHECK_EQUAL(r.cas, 12u);
  BOOST_CHECK_EQUAL(r.flags, 7u);
  BOOST_CHECK_EQUAL(std::string(r.value.view()), "second");
  BOOST_CHECK(!p.take(t2, r));  // once
  BOOST_CHECK(!p.take(0, r));
  BOOST_CHECK(!p.take(t2 + 100, r));
  BOOST_REQUIRE(p.take(t1, r));
  BOOST_CHECK_EQUAL(std::string(r.value.view()), "first");
  BOOST_CHECK_EQUAL(p.size(), 0u);
  BOOST_CHECK_EQUAL(p.bytes(), 0u);
  BOOST_CHECK_EQUAL(p.dropped(), 0u);
}

BOOST_AUTO_TEST_CASE(entries_expire_and_are_pushed_out_oldest_first) {
  parked_values p;
  auto old = p.park(hit("old", 1), 1000);
  auto mid = p.park(hit("mid", 2), 1000 + parked_values::keep_ms);
  p.expire(1000 + parked_values::keep_ms);  // exactly keep_ms old: still there
  BOOST_CHECK_EQUAL(p.size(), 2u);
  p.expire(1001 + parked_values::keep_ms);
  storage::result r;
  BOOST_CHECK(!p.take(old, r));
  BOOST_CHECK(p.take(mid, r));
  BOOST_CHECK_EQUAL(p.dropped(), 1u);

  // A clock a little behind the last entry's (another thread's reading) drops nothing.
  auto t = p.park(hit("x", 3), 5000);
  p.park(hit("y", 4), 4990);
  BOOST_CHECK_EQUAL(p.size(), 2u);
  BOOST_CHECK(p.take(t, r));

  // More than max_entries: the oldest go.
  parked_values q;
  std::vector<uint64_t> tokens;
  for (size_t i = 0; i < parked_values::max_entries + 5; ++i)
    tokens.push_back(q.park(hit("v", i), 1));
  BOOST_CHECK_EQUAL(q.size(), parked_values::max_entries);
  BOOST_CHECK_EQUAL(q.dropped(), 5u);
  BOOST_CHECK(!q.take(tokens[4], r));
  BOOST_CHECK(q.take(tokens[5], r));
  BOOST_CHECK(q.take(tokens.back(), r));
}

BOOST_AUTO_TEST_CASE(bytes_are_bounded_and_the_newest_always_stays) {
  parked_values p;
  const std::string half(parked_values::max_bytes / 2, 'h');
  auto a = p.park(hit(half, 1), 1);
  auto b = p.park(hit(half, 2), 1);
  BOOST_CHECK_EQUAL(p.size(), 2u);  // exactly max_bytes
  auto c = p.park(hit("c", 3), 1);
  storage::result r;
  BOOST_CHECK(!p.take(a, r));  // pushed out by the byte bound
  BOOST_CHECK(p.take(b, r));
  BOOST_CHECK(p.take(c, r));
  // One value over the whole bound still waits for its re-read (the previous ones go).
  auto d = p.park(hit("d", 4), 1);
  auto huge = p.park(hit(std::string(parked_values::max_bytes + 1, 'x'), 5), 1);
  BOOST_CHECK(!p.take(d, r));
  BOOST_REQUIRE(p.take(huge, r));
  BOOST_CHECK_EQUAL(r.value.size(), parked_values::max_bytes + 1);
  BOOST_CHECK_EQUAL(p.bytes(), 0u);
}

BOOST_AUTO_TEST_SUITE_END()
