// Parked values (storage/parked.hpp): a result kept for its re-read is handed out once, as it
// was parked, whatever happened to its item since; entries are bounded in count, pinned bytes
// (a segment once, at its size) and age, and the newest always stays.
#include "storage_test_util.hpp"

#include "storage/parked.hpp"

#include <memory>
#include <string>
#include <vector>

using namespace bifrost::storage;
using namespace bifrost::storage::test;

namespace {

result in_memory(std::string value, uint64_t cas) {
  result r;
  r.st = status::hit;
  r.cas = cas;
  r.flags = 7;
  r.value = pinned_slice::from_memory(std::make_shared<const std::string>(std::move(value)));
  return r;
}

parked_values::limits small(size_t entries, uint64_t bytes, uint64_t keep_ms = 1000) {
  parked_values::limits l;
  l.max_entries = entries;
  l.max_pinned_bytes = bytes;
  l.keep_ms = keep_ms;
  return l;
}

} // namespace

BOOST_AUTO_TEST_SUITE(parked)

BOOST_AUTO_TEST_CASE(a_parked_result_is_taken_once_as_it_was_after_its_item_changed) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "first value", 0, 3);
  parked_values p;
  const uint64_t t1 = p.park(do_get(*s, "k"), 1000);
  do_set(*s, "k", "second value");  // overwritten, then deleted: the parked pin still reads
  const uint64_t t2 = p.park(do_get(*s, "k"), 1000);
  BOOST_REQUIRE_EQUAL(do_delete(*s, "k").st, status::deleted);
  BOOST_CHECK_NE(t1, 0u);
  BOOST_CHECK_EQUAL(t2, t1 + 2);
  // A strict entry (a result another node answered): an odd token, in the same order.
  const uint64_t t3 = p.park(do_get(*s, "k"), 1000, true);
  BOOST_CHECK_EQUAL(t3, t2 + 3);
  BOOST_CHECK(parked_values::strict(t3));
  BOOST_CHECK(!parked_values::strict(t1) && !parked_values::strict(t2));
  {
    result r3;
    BOOST_REQUIRE(p.take(t3, r3));
  }
  BOOST_CHECK_EQUAL(p.stats().entries, 2u);
  result r;
  BOOST_REQUIRE(p.take(t1, r));
  BOOST_CHECK(r.st == status::hit);
  BOOST_CHECK_EQUAL(r.flags, 3u);
  BOOST_CHECK_EQUAL(std::string(r.value.view()), "first value");
  BOOST_CHECK(!p.take(t1, r));  // once
  BOOST_CHECK(!p.take(0, r));
  BOOST_CHECK(!p.take(t2 + 100, r));
  BOOST_REQUIRE(p.take(t2, r));
  BOOST_CHECK_EQUAL(std::string(r.value.view()), "second value");
  BOOST_CHECK_EQUAL(p.stats().entries, 0u);
  BOOST_CHECK_EQUAL(p.stats().pinned_bytes, 0u);
  BOOST_CHECK_EQUAL(p.stats().dropped, 0u);
  // Another process (a restarted owner) starts its tokens elsewhere.
  parked_values q;
  BOOST_CHECK_NE(q.park(in_memory("x", 1), 1), t1);
}

BOOST_AUTO_TEST_CASE(a_segment_is_counted_once_at_its_size) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "a", std::string(1000, 'a'));
  do_set(*s, "b", std::string(1000, 'b'));
  result a = do_get(*s, "a"), b = do_get(*s, "b");
  BOOST_REQUIRE_EQUAL(a.value.segment_id(), b.value.segment_id());
  const uint64_t seg = a.value.segment_size();
  BOOST_REQUIRE_GT(seg, 2000u);
  parked_values p(small(16, seg));
  const uint64_t ta = p.park(a, 1), tb = p.park(b, 1);
  BOOST_CHECK_EQUAL(p.stats().pinned_bytes, seg);  // both in one segment: fits exactly
  BOOST_CHECK_EQUAL(p.stats().entries, 2u);
  result r;
  BOOST_REQUIRE(p.take(ta, r));
  BOOST_CHECK_EQUAL(p.stats().pinned_bytes, seg);  // b still pins it
  BOOST_REQUIRE(p.take(tb, r));
  BOOST_CHECK_EQUAL(p.stats().pinned_bytes, 0u);
  // One in-memory byte more than the bound pushes the oldest out.
  p.park(a, 1);
  const uint64_t tm = p.park(in_memory("m", 1), 1);
  BOOST_CHECK_EQUAL(p.stats().entries, 1u);
  BOOST_CHECK_EQUAL(p.stats().dropped, 1u);
  BOOST_CHECK(p.take(tm, r));
}

BOOST_AUTO_TEST_CASE(entries_expire_and_are_pushed_out_oldest_first) {
  parked_values p(small(3, 1000, 500));
  const uint64_t old = p.park(in_memory("old", 1), 1000);
  const uint64_t mid = p.park(in_memory("mid", 2), 1500);
  p.expire(1500);  // exactly keep_ms old: still there
  BOOST_CHECK_EQUAL(p.stats().entries, 2u);
  p.expire(1501);
  result r;
  BOOST_CHECK(!p.take(old, r));
  BOOST_CHECK(p.take(mid, r));
  BOOST_CHECK_EQUAL(p.stats().dropped, 1u);
  // A clock a little behind the last entry's (another thread's reading) drops nothing.
  const uint64_t t = p.park(in_memory("x", 3), 5000);
  p.park(in_memory("y", 4), 4990);
  BOOST_CHECK_EQUAL(p.stats().entries, 2u);
  BOOST_CHECK(p.take(t, r));
  // More than max_entries: the oldest go.
  parked_values q(small(3, 1000));
  std::vector<uint64_t> tokens;
  for (int i = 0; i < 5; ++i)
    tokens.push_back(q.park(in_memory("v", i), 1));
  BOOST_CHECK_EQUAL(q.stats().entries, 3u);
  BOOST_CHECK_EQUAL(q.stats().dropped, 2u);
  BOOST_CHECK(!q.take(tokens[1], r));
  BOOST_CHECK(q.take(tokens[2], r));
  BOOST_CHECK(q.take(tokens[4], r));
}

BOOST_AUTO_TEST_CASE(bytes_are_bounded_and_the_newest_always_stays) {
  parked_values p(small(100, 10));
  const uint64_t a = p.park(in_memory("aaaaa", 1), 1);
  const uint64_t b = p.park(in_memory("bbbbb", 2), 1);
  BOOST_CHECK_EQUAL(p.stats().entries, 2u);  // exactly the bound
  const uint64_t c = p.park(in_memory("c", 3), 1);
  result r;
  BOOST_CHECK(!p.take(a, r));  // pushed out by the byte bound
  BOOST_CHECK(p.take(b, r));
  BOOST_CHECK(p.take(c, r));
  // One value over the whole bound still waits for its re-read (the ones before it go).
  const uint64_t d = p.park(in_memory("d", 4), 1);
  const uint64_t huge = p.park(in_memory(std::string(11, 'x'), 5), 1);
  BOOST_CHECK(!p.take(d, r));
  BOOST_REQUIRE(p.take(huge, r));
  BOOST_CHECK_EQUAL(r.value.size(), 11u);
  BOOST_CHECK_EQUAL(p.stats().pinned_bytes, 0u);
}

BOOST_AUTO_TEST_SUITE_END()
