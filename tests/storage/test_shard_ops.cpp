// memcached semantics of shard ops: store modes, CAS, arithmetic, expiry, flush, meta flags.
#include "storage_test_util.hpp"
#include <chrono>
#include <thread>

using namespace bifrost::storage;
using namespace bifrost::storage::test;

BOOST_AUTO_TEST_SUITE(storage_ops)

BOOST_AUTO_TEST_CASE(absolute_exptime_conventions) {
  BOOST_CHECK_EQUAL(absolute_exptime(0, k_t0), 0u);
  BOOST_CHECK_EQUAL(absolute_exptime(10, k_t0), k_t0 + 10);
  BOOST_CHECK_EQUAL(absolute_exptime(2592000, k_t0), k_t0 + 2592000);  // still relative
  BOOST_CHECK_EQUAL(absolute_exptime(2592001, k_t0), 2592001u);        // absolute (past)
  BOOST_CHECK_EQUAL(absolute_exptime(int64_t(k_t0) + 50, k_t0), k_t0 + 50);
  BOOST_CHECK_EQUAL(absolute_exptime(-1, k_t0), 1u);
  BOOST_CHECK_EQUAL(absolute_exptime(int64_t(1) << 40, k_t0), UINT32_MAX);
}

BOOST_AUTO_TEST_CASE(set_get_delete_and_counters) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  result r = do_set(*s, "k", "hello", 0, 42);
  BOOST_CHECK_EQUAL(r.st, status::stored);
  BOOST_CHECK(r.cas != 0);
  r = do_get(*s, "k");
  BOOST_REQUIRE_EQUAL(r.st, status::hit);
  BOOST_CHECK_EQUAL(r.value.view(), "hello");
  BOOST_CHECK_EQUAL(r.value.size(), 5u);
  BOOST_CHECK_EQUAL(r.value_size, 5u);
  BOOST_CHECK_EQUAL(r.flags, 42u);
  BOOST_CHECK_EQUAL(r.exptime, 0u);
  BOOST_CHECK_EQUAL(do_get(*s, "nope").st, status::miss);
  const uint64_t written = r.cas;
  r = do_delete(*s, "k");
  BOOST_CHECK_EQUAL(r.st, status::deleted);
  BOOST_CHECK_EQUAL(r.cas, written);  // (the removed item's: the cluster orders it)
  BOOST_CHECK_EQUAL(do_delete(*s, "k").st, status::not_found);
  BOOST_CHECK_EQUAL(do_get(*s, "k").st, status::miss);
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(st.cmd_set, 1u);
  BOOST_CHECK_EQUAL(st.total_items, 1u);
  BOOST_CHECK_EQUAL(st.get_hits, 1u);
  BOOST_CHECK_EQUAL(st.get_misses, 2u);
  BOOST_CHECK_EQUAL(st.delete_hits, 1u);
  BOOST_CHECK_EQUAL(st.delete_misses, 1u);
  BOOST_CHECK_EQUAL(st.curr_items, 0u);
  BOOST_CHECK_EQUAL(st.bytes, 0u);
}

BOOST_AUTO_TEST_CASE(the_clusters_own_reads_are_not_counted_as_gets) {
  // Warming and replication read through the shard; the client's get was counted where it
  // was asked, so these must not count again (stats --all summed them twice).
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "v");
  for (const char* key : {"k", "nope"}) {
    op o;
    o.kind = op_kind::get;
    o.key = key;
    o.counted = false;
    s->execute(o);
  }
  BOOST_CHECK_EQUAL(s->stats().get_hits, 0u);
  BOOST_CHECK_EQUAL(s->stats().get_misses, 0u);
  BOOST_CHECK_EQUAL(do_get(*s, "k").st, status::hit);
  BOOST_CHECK_EQUAL(do_get(*s, "nope").st, status::miss);
  BOOST_CHECK_EQUAL(s->stats().get_hits, 1u);
  BOOST_CHECK_EQUAL(s->stats().get_misses, 1u);
}

BOOST_AUTO_TEST_CASE(overwrite_keeps_one_item_and_counts_bytes) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  for (int i = 0; i < 100; ++i) do_set(*s, "k", "value-" + std::to_string(i));
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "value-99");
  BOOST_CHECK_EQUAL(s->stats().curr_items, 1u);
  BOOST_CHECK_EQUAL(s->stats().bytes, 32u + 1 + 8);
}

BOOST_AUTO_TEST_CASE(zero_length_value) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  BOOST_CHECK_EQUAL(do_set(*s, "empty", "").st, status::stored);
  result r = do_get(*s, "empty");
  BOOST_REQUIRE_EQUAL(r.st, status::hit);
  BOOST_CHECK(static_cast<bool>(r.value));  // a zero-length value still has a segment
  BOOST_CHECK_EQUAL(r.value.size(), 0u);
  BOOST_CHECK_EQUAL(r.value_size, 0u);
  BOOST_CHECK(r.value.view().empty());
  BOOST_CHECK(r.value.fd() >= 0);
  BOOST_CHECK_EQUAL(do_store(*s, "empty", "x", store_mode::append).st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "empty"), "x");
}

BOOST_AUTO_TEST_CASE(add_replace_append_prepend) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  BOOST_CHECK_EQUAL(do_store(*s, "a", "1", store_mode::add).st, status::stored);
  BOOST_CHECK_EQUAL(do_store(*s, "a", "2", store_mode::add).st, status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "a"), "1");
  BOOST_CHECK_EQUAL(do_store(*s, "r", "1", store_mode::replace).st, status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "r"), "<miss>");
  BOOST_CHECK_EQUAL(do_store(*s, "a", "3", store_mode::replace).st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "a"), "3");
  BOOST_CHECK_EQUAL(do_store(*s, "m", "x", store_mode::append).st, status::not_stored);
  BOOST_CHECK_EQUAL(do_store(*s, "m", "x", store_mode::prepend).st, status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "m"), "<miss>");

  // append/prepend keep flags and TTL of the existing item.
  do_store(*s, "m", "mid", store_mode::set, 100, 7);
  result r = do_store(*s, "m", ">>", store_mode::append, 0, 99);
  BOOST_CHECK_EQUAL(r.st, status::stored);
  r = do_store(*s, "m", "<<", store_mode::prepend, 5000, 1);
  BOOST_CHECK_EQUAL(r.st, status::stored);
  r = do_get(*s, "m");
  BOOST_CHECK_EQUAL(r.value.view(), "<<mid>>");
  BOOST_CHECK_EQUAL(r.flags, 7u);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 100);
}

BOOST_AUTO_TEST_CASE(add_on_expired_item_succeeds) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "old", 10);
  clk.advance(10);
  BOOST_CHECK_EQUAL(do_store(*s, "k", "new", store_mode::add).st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "new");
  BOOST_CHECK_EQUAL(do_store(*s, "k2", "x", store_mode::set, -1).st, status::stored);
  BOOST_CHECK_EQUAL(do_store(*s, "k2", "y", store_mode::replace).st, status::not_stored);
}

BOOST_AUTO_TEST_CASE(cas_cases) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  BOOST_CHECK_EQUAL(do_store(*s, "c", "v", store_mode::cas, 0, 0, 12345).st, status::not_found);
  const uint64_t c1 = do_set(*s, "c", "v1").cas;
  BOOST_CHECK_EQUAL(do_get(*s, "c").cas, c1);
  BOOST_CHECK_EQUAL(do_store(*s, "c", "v2", store_mode::cas, 0, 0, c1 + 1000).st, status::exists);
  BOOST_CHECK_EQUAL(value_of(*s, "c"), "v1");
  result r = do_store(*s, "c", "v2", store_mode::cas, 0, 3, c1);
  BOOST_CHECK_EQUAL(r.st, status::stored);
  BOOST_CHECK(r.cas != c1);
  BOOST_CHECK_EQUAL(value_of(*s, "c"), "v2");
  // The old CAS no longer matches.
  BOOST_CHECK_EQUAL(do_store(*s, "c", "v3", store_mode::cas, 0, 0, c1).st, status::exists);
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(st.cas_misses, 1u);
  BOOST_CHECK_EQUAL(st.cas_badval, 2u);
  BOOST_CHECK_EQUAL(st.cas_hits, 1u);

  // meta: a CAS on set/replace makes it a CAS store; append checks it too.
  const uint64_t c2 = do_get(*s, "c").cas;
  BOOST_CHECK_EQUAL(do_store(*s, "c", "x", store_mode::set, 0, 0, c2 + 1).st, status::exists);
  BOOST_CHECK_EQUAL(do_store(*s, "c", "x", store_mode::replace, 0, 0, c2 + 1).st, status::exists);
  BOOST_CHECK_EQUAL(do_store(*s, "c", "x", store_mode::append, 0, 0, c2 + 1).st, status::exists);
  BOOST_CHECK_EQUAL(do_store(*s, "c", "+", store_mode::append, 0, 0, c2).st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "c"), "v2+");
  BOOST_CHECK_EQUAL(do_store(*s, "nokey", "x", store_mode::set, 0, 0, 5).st, status::not_found);

  // delete with CAS.
  const uint64_t c3 = do_get(*s, "c").cas;
  BOOST_CHECK_EQUAL(do_delete(*s, "c", c3 + 1).st, status::exists);
  BOOST_CHECK_EQUAL(do_delete(*s, "c", c3).st, status::deleted);

  // explicit CAS (meta E).
  op o;
  o.kind = op_kind::store;
  o.key = "e";
  o.value = "v";
  o.explicit_cas = 777777;
  BOOST_CHECK_EQUAL(s->execute(o).cas, 777777u);
  BOOST_CHECK_EQUAL(do_get(*s, "e").cas, 777777u);
}

BOOST_AUTO_TEST_CASE(cas_values_are_unique_and_increasing) {
  const uint64_t a = next_cas();
  const uint64_t b = next_cas();
  BOOST_CHECK(b > a);
  observe_cas(b + 1000);
  BOOST_CHECK(next_cas() > b + 1000);
  observe_cas(5);  // never goes back
  BOOST_CHECK(next_cas() > b + 1000);
}

BOOST_AUTO_TEST_CASE(a_copied_cas_keeps_later_cas_values_above_it) {
  // A replica stores the primary's CAS (explicit_cas). Should it become the primary (the old
  // one died), its next CAS values must be above the copies it holds: a client may still
  // hold one of those, and its `cas` must not succeed against a newer value.
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  op o;
  o.kind = op_kind::store;
  o.key = "copied";
  o.value = "v";
  o.explicit_cas = next_cas() + 5000;
  BOOST_REQUIRE_EQUAL(s->execute(o).cas, o.explicit_cas);
  const result later = do_set(*s, "copied", "newer");
  BOOST_CHECK_MESSAGE(later.cas > o.explicit_cas,
                      "CAS " << later.cas << " after a copy with CAS " << o.explicit_cas);
  BOOST_CHECK_GT(do_set(*s, "other", "v").cas, later.cas);
}

BOOST_AUTO_TEST_CASE(cas_values_start_at_the_clock_floor_without_a_data_directory_too) {
  // Cluster nodes without --data-dir must not all count from 1: a key whose owner changes
  // without a copy (a join, R=1) would get CAS values a client still holds for its old value.
  // (Run alone, this fails when only data-directory shards raise the counter.)
  const uint64_t floor = restart_cas_floor();
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  const uint64_t c = do_set(*s, "floor", "v").cas;
  BOOST_CHECK_MESSAGE(c > floor, "first CAS " << c << " below the clock floor " << floor);
}

BOOST_AUTO_TEST_CASE(cas_values_follow_the_wall_clock) {
  // Of two writes on two nodes, the later one gets the higher CAS (copies are ordered by it).
  const uint64_t before = restart_cas_floor();
  const uint64_t a = next_cas();
  BOOST_CHECK_GE(a, before);
  BOOST_CHECK_GE(a, k_cas_clock_min);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const uint64_t later = restart_cas_floor();
  BOOST_CHECK_GE(next_cas(), later);
  BOOST_CHECK_GT(later, a);  // (2 ms of clock is 512,000 CAS values)
}

// A copy of another node's item: CAS values say which write is the later one.
BOOST_AUTO_TEST_CASE(copies_never_replace_a_later_write_and_replace_an_earlier_one) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  auto copy = [](const std::string& key, const std::string& value, uint64_t cas,
                 store_mode mode) {
    op o = store_op(key, value, mode);
    o.explicit_cas = cas;
    o.copy = true;
    return o;
  };
  const uint64_t earlier = next_cas();
  const result here = do_set(*s, "k", "written here");
  BOOST_REQUIRE_GT(here.cas, earlier);
  {  // a replicated state older than the write here: not applied, and nothing to retry
    op o = copy("k", "older state", earlier, store_mode::set);
    BOOST_CHECK(s->execute(o).st == status::stored);
    BOOST_CHECK_EQUAL(do_get(*s, "k").value.view(), "written here");
  }
  {  // a warm or re-replication copy of an older write: the item stays
    op o = copy("k", "older copy", earlier, store_mode::add);
    BOOST_CHECK(s->execute(o).st == status::not_stored);
    op same = copy("k", "same item", here.cas, store_mode::add);
    BOOST_CHECK(s->execute(same).st == status::not_stored);
    BOOST_CHECK_EQUAL(do_get(*s, "k").value.view(), "written here");
  }
  const uint64_t newer = next_cas();
  {  // a copy of a later write replaces it, as an add (the node warmed an older value)
    op o = copy("k", "newer copy", newer, store_mode::add);
    BOOST_CHECK(s->execute(o).st == status::stored);
    const result r = do_get(*s, "k");
    BOOST_CHECK_EQUAL(r.value.view(), "newer copy");
    BOOST_CHECK_EQUAL(r.cas, newer);
  }
  {  // and as replicated state
    op o = copy("k", "newest state", next_cas(), store_mode::set);
    BOOST_CHECK(s->execute(o).st == status::stored);
    BOOST_CHECK_EQUAL(do_get(*s, "k").value.view(), "newest state");
  }
  {  // a client's add is still an add
    op o;
    o.kind = op_kind::store;
    o.mode = store_mode::add;
    o.key = "k";
    o.value = "client";
    o.explicit_cas = next_cas();
    BOOST_CHECK(s->execute(o).st == status::not_stored);
  }
  {  // a client's meta E value orders nothing: a copy of it is applied as before
    op o = copy("k", "client chose E", 777, store_mode::set);
    BOOST_CHECK(s->execute(o).st == status::stored);
    BOOST_CHECK_EQUAL(do_get(*s, "k").value.view(), "client chose E");
    op later = copy("k", "after E", next_cas(), store_mode::add);
    BOOST_CHECK(s->execute(later).st == status::not_stored);
    // nor one far ahead of the clock (a nanosecond timestamp). (Checked without storing it:
    // the process's counter would follow it, for the tests after this one too.)
    const uint64_t now = restart_cas_floor();
    BOOST_CHECK(cas_clock_newer(now + 1, now));
    BOOST_CHECK(!cas_clock_newer(now + 2 * k_cas_clock_slack, now));
    BOOST_CHECK(!cas_clock_newer(now, 777));
  }
  const auto st = s->stats();
  BOOST_CHECK_EQUAL(st.copies_superseded, 1u);
  BOOST_CHECK_EQUAL(st.copies_replaced, 1u);
}

BOOST_AUTO_TEST_CASE(the_cas_counter_skips_zero_and_ignores_values_past_two_to_the_62) {
  observe_cas(UINT64_MAX);  // a client's meta E: not followed
  const uint64_t a = next_cas();
  BOOST_CHECK(a != 0);
  BOOST_CHECK(a < (1ull << 62));
}

BOOST_AUTO_TEST_CASE(too_large_values) {
  fake_clock clk;
  shard_config cfg = small_config();
  cfg.max_item_size = 1000;
  auto s = open_shard(cfg, clk);
  do_set(*s, "k", "small");
  BOOST_CHECK_EQUAL(do_set(*s, "k", std::string(1001, 'x')).st, status::too_large);
  // memcached drops the old value when a SET fails, so no stale data is served.
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "<miss>");
  BOOST_CHECK_EQUAL(do_set(*s, "k", std::string(1000, 'x')).st, status::stored);
  // Appending past the limit: memcached answers NOT_STORED and keeps the value.
  BOOST_CHECK_EQUAL(do_store(*s, "k", "y", store_mode::append).st, status::not_stored);
  BOOST_CHECK_EQUAL(do_store(*s, "k", "y", store_mode::prepend).st, status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "k"), std::string(1000, 'x'));
}

BOOST_AUTO_TEST_CASE(invalid_keys) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  BOOST_CHECK_EQUAL(do_set(*s, "", "v").st, status::not_stored);
  BOOST_CHECK_EQUAL(do_set(*s, std::string(251, 'k'), "v").st, status::not_stored);
  BOOST_CHECK_EQUAL(do_set(*s, std::string(250, 'k'), "v").st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, std::string(250, 'k')), "v");
  BOOST_CHECK_EQUAL(do_get(*s, "").st, status::miss);
}

BOOST_AUTO_TEST_CASE(arithmetic) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).st, status::not_found);
  BOOST_CHECK_EQUAL(do_arith(*s, "n", false, 1).st, status::not_found);
  const result set_r = do_set(*s, "n", "10", 100, 5);
  result r = do_arith(*s, "n", true, 5);
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK_EQUAL(r.number, 15u);
  BOOST_CHECK(r.cas != set_r.cas);
  r = do_get(*s, "n");
  BOOST_CHECK_EQUAL(r.value.view(), "15");
  BOOST_CHECK_EQUAL(r.flags, 5u);                // kept
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 100);      // kept
  // decr floors at 0
  BOOST_CHECK_EQUAL(do_arith(*s, "n", false, 20).number, 0u);
  BOOST_CHECK_EQUAL(value_of(*s, "n"), "0");
  // a shorter number is stored exactly (no padding)
  do_set(*s, "n", "100");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", false, 1).number, 99u);
  BOOST_CHECK_EQUAL(value_of(*s, "n"), "99");
  // incr wraps at 2^64
  do_set(*s, "n", "18446744073709551615");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 0u);
  do_set(*s, "n", "18446744073709551610");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 10).number, 4u);
  // 20 digits, largest value
  do_set(*s, "n", "18446744073709551615");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", false, 1).number, 18446744073709551614u);
  BOOST_CHECK_EQUAL(value_of(*s, "n"), "18446744073709551614");
  // leading whitespace / trailing whitespace accepted (strtoull), leading zeros too
  do_set(*s, "n", "  7");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 8u);
  do_set(*s, "n", "7 ");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 8u);
  do_set(*s, "n", "0000000000000000000000042");
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 43u);
  // a NUL ends the number as whitespace does (strtoull reads a C string)
  do_set(*s, "n", std::string("5\0x", 3));
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 6u);
  do_set(*s, "n", std::string("\0" "1", 2));  // no digit before the NUL
  BOOST_CHECK(do_arith(*s, "n", true, 1).st == status::non_numeric);
  // non-numeric
  for (const char* bad : {"", "abc", "12abc", "18446744073709551616", "99999999999999999999999",
                          "-5", " ", "1.5", "0x10"}) {
    do_set(*s, "n", bad);
    BOOST_CHECK_MESSAGE(do_arith(*s, "n", true, 1).st == status::non_numeric, "value " << bad);
    BOOST_CHECK_EQUAL(value_of(*s, "n"), bad);
  }
  // CAS on arith
  const uint64_t c = do_set(*s, "n", "1").cas;
  op o;
  o.kind = op_kind::arith;
  o.key = "n";
  o.delta = 1;
  o.compare_cas = c + 1;
  BOOST_CHECK_EQUAL(s->execute(o).st, status::exists);
  o.compare_cas = c;
  BOOST_CHECK_EQUAL(s->execute(o).number, 2u);
  // memcached's order: an empty value is no number before any CAS is compared; another
  // value's CAS is compared before its digits are read.
  o.compare_cas = do_set(*s, "n", "").cas + 1;
  BOOST_CHECK_EQUAL(s->execute(o).st, status::non_numeric);
  o.compare_cas = do_set(*s, "n", "abc").cas + 1;
  BOOST_CHECK_EQUAL(s->execute(o).st, status::exists);
  o.compare_cas = 0;
  // an incr is no fetch: it keeps the item's fetched flag as it was while the number does
  // not grow (memcached changes it in place), and a longer one is a new item, not fetched
  do_set(*s, "n", "1");
  BOOST_CHECK_EQUAL(s->execute(o).number, 2u);
  BOOST_CHECK(!do_get(*s, "n").fetched);
  BOOST_CHECK_EQUAL(s->execute(o).number, 3u);
  BOOST_CHECK(do_get(*s, "n").fetched);  // (the get before it fetched it)
  do_set(*s, "n", "9");
  do_get(*s, "n");
  BOOST_CHECK_EQUAL(s->execute(o).number, 10u);
  BOOST_CHECK(!do_get(*s, "n").fetched);
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(st.incr_misses, 1u);
  BOOST_CHECK_EQUAL(st.decr_misses, 1u);
  BOOST_CHECK(st.incr_hits >= 6u);
  BOOST_CHECK_EQUAL(st.curr_items, 1u);
}

BOOST_AUTO_TEST_CASE(arithmetic_vivify) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  op o;
  o.kind = op_kind::arith;
  o.key = "ctr";
  o.vivify = true;
  o.vivify_ttl = 60;
  o.initial = 42;
  result r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::stored);  // created (meta q still answers it)
  BOOST_CHECK_EQUAL(r.number, 42u);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 60);
  BOOST_CHECK_EQUAL(value_of(*s, "ctr"), "42");
  r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::hit);  // counted
  BOOST_CHECK_EQUAL(r.number, 43u);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 60);
  // ma T: the TTL changes on success
  o.get_touch = true;
  o.ttl = 500;
  r = s->execute(o);
  BOOST_CHECK_EQUAL(r.number, 44u);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 500);
  BOOST_CHECK_EQUAL(do_get(*s, "ctr").exptime, k_t0 + 500);
}

BOOST_AUTO_TEST_CASE(invalidate_with_touch_flag_sets_ttl) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "v", 100);
  op md;
  md.kind = op_kind::remove;
  md.key = "k";
  md.invalidate = true;
  BOOST_CHECK_EQUAL(s->execute(md).st, status::deleted);
  BOOST_CHECK_EQUAL(do_get(*s, "k").exptime, k_t0 + 100);  // no T: TTL kept
  md.get_touch = true;
  md.ttl = 0;  // md I T0: never expires
  BOOST_CHECK_EQUAL(s->execute(md).st, status::deleted);
  const result r = do_get(*s, "k");
  BOOST_CHECK_EQUAL(r.exptime, 0u);
  BOOST_CHECK(r.stale);
  BOOST_CHECK_EQUAL(s->stats().curr_items, 1u);
}

BOOST_AUTO_TEST_CASE(expiry_relative_absolute_negative) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "rel", "v", 10);
  do_set(*s, "abs", "v", int64_t(k_t0) + 20);
  do_set(*s, "neg", "v", -1);
  do_set(*s, "past", "v", 2592001);  // absolute, in 1970
  do_set(*s, "never", "v", 0);
  BOOST_CHECK_EQUAL(do_get(*s, "rel").exptime, k_t0 + 10);
  BOOST_CHECK_EQUAL(do_get(*s, "abs").exptime, k_t0 + 20);
  BOOST_CHECK_EQUAL(value_of(*s, "neg"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "past"), "<miss>");
  clk.advance(9);
  BOOST_CHECK_EQUAL(value_of(*s, "rel"), "v");
  clk.advance(1);
  BOOST_CHECK_EQUAL(value_of(*s, "rel"), "<miss>");  // exptime <= now: gone
  BOOST_CHECK_EQUAL(value_of(*s, "abs"), "v");
  clk.advance(10);
  BOOST_CHECK_EQUAL(value_of(*s, "abs"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "never"), "v");
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(st.get_expired, 4u);  // found by gets: memcached's do_item_get counts
  BOOST_CHECK_EQUAL(st.reclaimed, 0u);     // them there, not as reclaimed (its sweep's)
  BOOST_CHECK_EQUAL(st.curr_items, 1u);
}

BOOST_AUTO_TEST_CASE(touch_and_gat) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "v", 10);
  clk.advance(5);
  result r = do_touch(*s, "k", 20);
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 25);
  clk.advance(15);  // t0+20: would have expired at t0+10
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "v");
  BOOST_CHECK_EQUAL(do_touch(*s, "missing", 20).st, status::not_found);

  // gat: get and set TTL
  op o;
  o.kind = op_kind::get;
  o.key = "k";
  o.get_touch = true;
  o.ttl = 100;
  r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK_EQUAL(r.exptime, clk.now() + 100);
  BOOST_CHECK_EQUAL(r.value.view(), "v");
  clk.advance(99);
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "v");
  // touch with a negative TTL expires it
  BOOST_CHECK_EQUAL(do_touch(*s, "k", -1).st, status::hit);
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "<miss>");
  o.key = "missing";
  BOOST_CHECK_EQUAL(s->execute(o).st, status::miss);
  const shard_stats& st = s->stats();
  BOOST_CHECK_EQUAL(st.cmd_touch, 5u);
  BOOST_CHECK_EQUAL(st.touch_hits, 3u);
  BOOST_CHECK_EQUAL(st.touch_misses, 2u);
}

BOOST_AUTO_TEST_CASE(sweep_reclaims_expired_with_bounded_work) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  for (int i = 0; i < 500; ++i) do_set(*s, "short" + std::to_string(i), "v", 5);
  for (int i = 0; i < 500; ++i) do_set(*s, "long" + std::to_string(i), "v", 0);
  BOOST_CHECK_EQUAL(s->sweep(100000), 0u);
  clk.advance(6);
  const size_t first = s->sweep(10);
  BOOST_CHECK(first <= 10u);
  size_t total = first;
  for (int i = 0; i < 1000 && s->stats().curr_items > 500; ++i) total += s->sweep(64);
  BOOST_CHECK_EQUAL(total, 500u);
  BOOST_CHECK_EQUAL(s->stats().curr_items, 500u);
  BOOST_CHECK_EQUAL(s->stats().reclaimed, 500u);
  BOOST_CHECK_EQUAL(s->stats().expired_unfetched, 500u);
  BOOST_CHECK_EQUAL(value_of(*s, "long499"), "v");
  BOOST_CHECK_EQUAL(value_of(*s, "short0"), "<miss>");
}

BOOST_AUTO_TEST_CASE(prune_drops_what_it_is_told_in_bounded_steps_and_survives_index_growth) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  auto key = [](int i) { return "k" + std::to_string(i); };
  for (int i = 0; i < 300; ++i) do_set(*s, key(i), "v" + std::to_string(i));
  auto odd = [](std::string_view k) { return (k.back() - '0') % 2 == 1; };
  const uint32_t since = clk.now() + 1;  // every item is older
  s->begin_prune();
  auto first = s->prune(odd, since, 16);
  BOOST_CHECK(!first.done);
  BOOST_CHECK(first.dropped <= 16u);
  // The index grows between steps (its entries move): the pass starts over, misses none.
  const size_t cap_before = s->stats().index_bytes;
  for (int i = 300; i < 5000; ++i) do_set(*s, key(i), "v");
  BOOST_REQUIRE(s->stats().index_bytes > cap_before);
  size_t dropped = first.dropped;
  int steps = 0;
  for (bool done = false; !done && steps < 100000; ++steps) {
    auto p = s->prune(odd, since, 64);
    BOOST_REQUIRE(p.dropped <= 64u);
    dropped += p.dropped;
    done = p.done;
  }
  BOOST_CHECK(steps > 1);
  BOOST_CHECK_EQUAL(dropped, 2500u);
  BOOST_CHECK_EQUAL(s->stats().pruned, 2500u);
  BOOST_CHECK_EQUAL(s->stats().curr_items, 2500u);
  for (int i = 0; i < 5000; ++i)
    BOOST_CHECK_EQUAL(value_of(*s, key(i)),
                      i % 2 == 1 ? std::string("<miss>") : (i < 300 ? "v" + std::to_string(i) : "v"));
  // A pass that selects nothing drops nothing; one that is done stays done.
  s->begin_prune();
  auto none = s->prune([](std::string_view) { return false; }, since, 1u << 20);
  BOOST_CHECK(none.done);
  BOOST_CHECK_EQUAL(none.dropped, 0u);
  BOOST_CHECK(s->prune(odd, since, 64).done);
}

// Items written or read since `untouched_since` are kept (and counted), the older ones go.
BOOST_AUTO_TEST_CASE(prune_keeps_items_touched_since_the_given_time) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  for (int i = 0; i < 100; ++i) do_set(*s, "old" + std::to_string(i), "v");
  do_get(*s, "old7");  // read later: counts as touched
  clk.advance(20);
  do_get(*s, "old7");
  for (int i = 0; i < 50; ++i) do_set(*s, "new" + std::to_string(i), "v");
  s->begin_prune();
  auto p = s->prune([](std::string_view) { return true; }, clk.now() - 5, 1u << 20);
  BOOST_CHECK(p.done);
  BOOST_CHECK_EQUAL(p.dropped, 99u);
  BOOST_CHECK_GE(p.recent, 51u);  // (one more when a drop moved it back across the cursor)
  BOOST_CHECK_LE(p.recent, 51u + p.dropped);
  BOOST_CHECK_EQUAL(value_of(*s, "old7"), "v");
  BOOST_CHECK_EQUAL(value_of(*s, "old8"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "new49"), "v");
}

// `seen` gets every item the pass visits, dropped or kept, with its CAS: the hand-back to a member alive again picks those stored since it
// died, also among those the pass drops.
BOOST_AUTO_TEST_CASE(prune_shows_every_item_with_its_cas) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  for (int i = 0; i < 300; ++i) do_set(*s, "k" + std::to_string(i), "v");
  const uint64_t mark = current_cas();
  const uint32_t before = clk.now();
  clk.advance(30);
  do_set(*s, "k3", "w");  // stored later
  do_get(*s, "k4");       // only read later
  do_set(*s, "k10", "w"); // stored later, kept for being recent
  std::map<std::string, uint64_t> seen;
  size_t calls = 0;
  s->begin_prune();
  bool done = false;
  size_t dropped = 0;
  while (!done) {
    auto p = s->prune([](std::string_view k) { return k.back() == '0'; }, before + 1, 7,
                      [&](std::string_view k, uint64_t cas) {
                        ++calls;
                        seen[std::string(k)] = cas;
                      });
    dropped += p.dropped;
    done = p.done;
  }
  // Each at least once; again only when a drop moved an entry back across the cursor.
  BOOST_CHECK_GE(calls, seen.size());
  BOOST_CHECK_LE(calls, seen.size() + dropped);
  BOOST_CHECK_EQUAL(seen.size(), 300u);  // dropped ones too
  BOOST_CHECK_EQUAL(dropped, 29u);        // the 30 ending in 0 but k10 (recent)
  BOOST_CHECK_EQUAL(value_of(*s, "k30"), "<miss>");
  BOOST_CHECK_LE(seen.at("k30"), mark);
  BOOST_CHECK_GT(seen.at("k3"), mark);
  BOOST_CHECK_LE(seen.at("k4"), mark);
  BOOST_CHECK_GT(seen.at("k10"), mark);
  BOOST_CHECK_LE(seen.at("k5"), mark);
}

// A delete handed back by another node (what it wrote while this one was away) removes only
// an item stored before this node's return (storage::mark_return), never one stored since.
BOOST_AUTO_TEST_CASE(a_handed_back_delete_spares_what_was_stored_since_the_return) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "before", "v");
  do_set(*s, "rewritten", "old");
  mark_return();
  do_set(*s, "rewritten", "new");
  do_set(*s, "after", "v");
  auto hand_back = [&](const std::string& k) {
    op o;
    o.kind = op_kind::remove;
    o.key = k;
    o.hand_back = true;
    return s->execute(o).st;
  };
  BOOST_CHECK(hand_back("before") == status::deleted);
  BOOST_CHECK(hand_back("rewritten") == status::exists);
  BOOST_CHECK(hand_back("after") == status::exists);
  BOOST_CHECK(hand_back("never") == status::not_found);
  // With the sender's CAS: a copy of its very item stays, another goes.
  do_set(*s, "older", "v");
  do_set(*s, "copy", "v");
  const uint64_t copy_cas = do_get(*s, "copy").cas;
  mark_return();
  auto hand_back_of = [&](const std::string& k, uint64_t cas) {
    op o;
    o.kind = op_kind::remove;
    o.key = k;
    o.hand_back = true;
    o.explicit_cas = cas;
    return s->execute(o).st;
  };
  BOOST_CHECK(hand_back_of("copy", copy_cas) == status::exists);
  BOOST_CHECK(hand_back_of("older", copy_cas) == status::deleted);
  BOOST_CHECK(hand_back_of("copy", copy_cas + 1) == status::deleted);
  // An item newer than the sender's (written here while the sender had this node dead: the
  // other side of a partition) stays: the sender's older item must not undo that write.
  do_set(*s, "sent", "v");
  const uint64_t sent_cas = do_get(*s, "sent").cas;
  do_set(*s, "newer", "written-on-this-side");
  mark_return();
  BOOST_CHECK(hand_back_of("newer", sent_cas) == status::exists);
  BOOST_CHECK_EQUAL(value_of(*s, "newer"), "written-on-this-side");
  BOOST_CHECK(hand_back_of("newer", do_get(*s, "newer").cas + 1) == status::deleted);
  // Not ordered by a CAS that is no clock value (a client's meta E5 at the sender): it goes.
  do_set(*s, "clocked", "v");
  mark_return();
  BOOST_CHECK(hand_back_of("clocked", 5) == status::deleted);
  BOOST_CHECK_EQUAL(value_of(*s, "before"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "rewritten"), "new");
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "v");
  // A plain delete is not held back.
  BOOST_CHECK(do_delete(*s, "after").st == status::deleted);
}

// A copy handed back by another node (an item it stored while it had this one dead) is
// ordered as any copy, by the CAS clock: an add lands where there is no item or over an
// older one, a replace (a write stored just before its sender saw this one dead) only over
// an older one, so it brings back no key deleted here. A copy this node took since its return
// (another hand-back's, warming's) is replaced by a later one: the item the cluster holds
// last wins, not the copy that came first.
BOOST_AUTO_TEST_CASE(a_handed_back_copy_lands_only_over_an_older_item) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "older", "here-before");
  do_set(*s, "sender", "theirs");
  const result theirs = do_get(*s, "sender");  // (an item as the sender holds it)
  do_set(*s, "newer", "here-later");
  do_set(*s, "deleted", "v");
  BOOST_CHECK(do_delete(*s, "deleted").st == status::deleted);
  mark_return();
  auto copy_of = [&](const std::string& k, store_mode mode, const result& r) {
    op o = item_copy(k, r, mode);
    o.hand_back = true;
    return s->execute(o).st;
  };
  // Replace: over an older item only; never where there is none.
  BOOST_CHECK(copy_of("older", store_mode::replace, theirs) == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "older"), "theirs");
  BOOST_CHECK(copy_of("newer", store_mode::replace, theirs) == status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "newer"), "here-later");
  BOOST_CHECK(copy_of("deleted", store_mode::replace, theirs) == status::not_stored);
  BOOST_CHECK(copy_of("absent", store_mode::replace, theirs) == status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "deleted"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "absent"), "<miss>");
  // Add: where there is none, or over an older item.
  BOOST_CHECK(copy_of("absent", store_mode::add, theirs) == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "absent"), "theirs");
  BOOST_CHECK(copy_of("newer", store_mode::add, theirs) == status::not_stored);
  // A later item from another sender replaces the copy taken since the return.
  result later = theirs;
  later.cas = do_get(*s, "newer").cas + 1;
  later.value = do_get(*s, "newer").value;
  BOOST_CHECK(copy_of("absent", store_mode::add, later) == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "absent"), "here-later");
  BOOST_CHECK(copy_of("absent", store_mode::add, theirs) == status::not_stored);
}

// A copy carries whether the item was read before (mg h): a warmed or replicated item
// answers h1 where its source would.
BOOST_AUTO_TEST_CASE(a_copy_keeps_the_fetched_flag) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "read", "v");
  do_get(*s, "read");
  const result was_read = do_get(*s, "read");
  BOOST_REQUIRE(was_read.fetched);
  do_set(*s, "unread", "v");
  op look;  // (a look that is no fetch: a warm read's, the replicator's)
  look.kind = op_kind::get;
  look.key = "unread";
  look.get_bump = false;
  const result unread = s->execute(look);
  BOOST_REQUIRE(!unread.fetched);
  op copy_read = item_copy("copy-read", was_read, store_mode::add);
  op copy_unread = item_copy("copy-unread", unread, store_mode::set);
  BOOST_CHECK(s->execute(copy_read).st == status::stored);
  BOOST_CHECK(s->execute(copy_unread).st == status::stored);
  BOOST_CHECK(do_get(*s, "copy-read").fetched);
  BOOST_CHECK(!do_get(*s, "copy-unread").fetched);
}

// Replication copies writes, not reads: a replica holds the primary's write unread. When the
// primary hands its items over (drain, re-replication), the copy of that same write (same
// CAS, same length) brings what reads did to it there: read before (mg h) and its win token
// out (mg W/Z). A copy of another write brings neither, and none of it stores anything.
BOOST_AUTO_TEST_CASE(a_copy_of_the_write_held_brings_its_reads) {
  fake_clock clk;
  auto primary = open_shard(small_config(), clk);
  auto replica = open_shard(small_config(), clk);
  auto look = [](shard& s, const std::string& k) {  // (no access: a warm read's, the replicator's)
    op o;
    o.kind = op_kind::get;
    o.key = k;
    o.get_bump = false;
    return s.execute(o);
  };
  for (const char* k : {"k", "other"}) {
    do_set(*primary, k, "value", 100);
    op copy = item_copy(k, look(*primary, k), store_mode::set);
    BOOST_REQUIRE(replica->execute(copy).st == status::stored);
  }
  // Read at the primary only: 20 s left under a 30 s recache takes the token (and fetches).
  clk.advance(80);
  op recache;
  recache.kind = op_kind::get;
  recache.key = "k";
  recache.recache = true;
  recache.recache_ttl = 30;
  BOOST_REQUIRE(primary->execute(recache).win);
  const result handed = look(*primary, "k");
  BOOST_REQUIRE(handed.fetched && handed.already_won);
  BOOST_REQUIRE(!look(*replica, "k").fetched && !look(*replica, "k").already_won);

  op copy = item_copy("k", handed, store_mode::add);
  BOOST_CHECK(replica->execute(copy).st == status::not_stored);
  const result after = look(*replica, "k");
  BOOST_CHECK(after.fetched);
  BOOST_CHECK(after.already_won);
  BOOST_CHECK_EQUAL(after.cas, handed.cas);
  BOOST_CHECK_EQUAL(value_of(*replica, "k"), "value");

  // The same CAS on a write of other flags or another length is not that write, nor is a
  // client's add with that CAS (meta E): nothing comes over.
  op other_flags = item_copy("k", handed, store_mode::add);
  other_flags.flags = 7;
  op client_add = item_copy("k", handed, store_mode::add);
  client_add.copy = false;
  auto fresh = open_shard(small_config(), clk);
  op unread = item_copy("k", look(*replica, "k"), store_mode::set);
  unread.as_fetched = false;
  unread.token_out = false;
  BOOST_REQUIRE(fresh->execute(unread).st == status::stored);
  BOOST_CHECK(fresh->execute(other_flags).st == status::not_stored);
  BOOST_CHECK(fresh->execute(client_add).st == status::not_stored);
  BOOST_CHECK(!look(*fresh, "k").fetched);
  BOOST_CHECK(!look(*fresh, "k").already_won);
  // The same CAS on a write of another length is not that write: nothing comes over.
  do_set(*primary, "other", "value!", 100);
  do_get(*primary, "other");
  op other = item_copy("other", look(*primary, "other"), store_mode::add);
  BOOST_REQUIRE(other.as_fetched);
  other.explicit_cas = look(*replica, "other").cas;
  BOOST_CHECK(replica->execute(other).st == status::not_stored);
  BOOST_CHECK(!look(*replica, "other").fetched);
  BOOST_CHECK_EQUAL(value_of(*replica, "other"), "value");
}

// merge_reads: a read's hit with another node's look at the same write (a read check).
BOOST_AUTO_TEST_CASE(merge_reads_counts_the_reads_of_the_other_copy) {
  result own;
  own.st = status::hit;
  own.last_access = 100;
  own.win = true;  // (took the token here)
  result there;
  there.st = status::hit;
  there.fetched = true;
  there.last_access = 150;
  there.already_won = true;
  merge_reads(own, there);
  BOOST_CHECK(own.fetched);
  BOOST_CHECK_EQUAL(own.last_access, 150u);
  BOOST_CHECK(!own.win);
  BOOST_CHECK(own.already_won);
  result later;  // read here before, and later: nothing comes from a copy read less
  later.st = status::hit;
  later.fetched = true;
  later.last_access = 200;
  later.win = true;
  result unread;
  unread.st = status::hit;
  unread.last_access = 150;
  merge_reads(later, unread);
  BOOST_CHECK(later.fetched);
  BOOST_CHECK_EQUAL(later.last_access, 200u);
  BOOST_CHECK(later.win);
  BOOST_CHECK(!later.already_won);
}

// A copy of another node's item (warming, re-replication) read there before a delete here
// lands after it: while the guard is on, the add is refused for a key deleted here lately,
// and for every key just after a flush_all, unless the item it copies was written after
// them by the CAS clock; a client's add is not, and replication's set only when the write it
// copies came before the delete by the CAS clock.
BOOST_AUTO_TEST_CASE(a_copy_that_lands_after_a_delete_is_refused_while_guarded) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "src", "old");
  const result src = do_get(*s, "src");
  auto copy_of = [&](const std::string& k, store_mode mode) {
    op o = item_copy(k, src, mode);
    return s->execute(o).st;
  };
  // Off (a node alone): nothing is noted.
  BOOST_CHECK(do_delete(*s, "a").st == status::not_found);
  BOOST_CHECK(copy_of("a", store_mode::add) == status::stored);

  s->guard_copies(10);
  BOOST_CHECK(do_delete(*s, "a").st == status::deleted);
  BOOST_CHECK(do_delete(*s, "b").st == status::not_found);  // (absent: still to stay absent)
  BOOST_CHECK(copy_of("a", store_mode::add) == status::not_stored);
  BOOST_CHECK(copy_of("b", store_mode::add) == status::not_stored);
  BOOST_CHECK(copy_of("c", store_mode::add) == status::stored);  // never deleted
  BOOST_CHECK_EQUAL(s->stats().copies_refused, 2u);
  BOOST_CHECK_EQUAL(value_of(*s, "a"), "<miss>");
  {  // a client's add is no copy
    op o;
    o.kind = op_kind::store;
    o.mode = store_mode::add;
    o.key = "b";
    o.value = "client";
    BOOST_CHECK(s->execute(o).st == status::stored);
  }
  BOOST_CHECK(do_delete(*s, "b").st == status::deleted);
  // Replication's set: the primary's state, taken when written after the delete by the CAS
  // clock; one written before it (a retried copy, the other side of a healed partition)
  // would bring the key back.
  BOOST_CHECK(copy_of("b", store_mode::set) == status::not_stored);
  BOOST_CHECK_EQUAL(s->stats().copies_refused, 3u);
  BOOST_CHECK_EQUAL(value_of(*s, "b"), "<miss>");
  {
    auto run = [&](op o) { return s->execute(o).st; };
    do_set(*s, "after", "newer");  // (a write after the delete, by this process's clock)
    BOOST_CHECK(run(item_copy("b", do_get(*s, "after"), store_mode::set)) == status::stored);
    BOOST_CHECK_EQUAL(value_of(*s, "b"), "newer");
    BOOST_CHECK(do_delete(*s, "b").st == status::deleted);
    result e = src;  // a client's meta E: no clock value, orders nothing, taken
    e.cas = 12345;
    BOOST_CHECK(run(item_copy("b", e, store_mode::set)) == status::stored);
    BOOST_CHECK_EQUAL(value_of(*s, "b"), "old");
    BOOST_CHECK(do_delete(*s, "b").st == status::deleted);
    // A delete's copy with no point (the primary noted none) notes nothing here: a set
    // copy of any write is taken after it.
    BOOST_CHECK(do_delete(*s, "nopoint").st == status::not_found);  // (noted: a client's)
    BOOST_CHECK(copy_of("nopoint", store_mode::set) == status::not_stored);
    BOOST_CHECK(run(delete_copy("np2", 0)) == status::not_found);
    BOOST_CHECK(copy_of("np2", store_mode::set) == status::stored);
    BOOST_CHECK(run(delete_copy("np2", 0)) == status::deleted);
    BOOST_CHECK(copy_of("np2", store_mode::set) == status::stored);
    // A delete's copy with its point: set copies of writes before it are refused.
    BOOST_CHECK(run(delete_copy("p", next_cas())) == status::not_found);
    BOOST_CHECK(copy_of("p", store_mode::set) == status::not_stored);
    BOOST_CHECK_EQUAL(s->stats().copies_refused, 5u);
    // An expiry is noted at the expired write's CAS: a set copy of that very write (a touch
    // at the primary before it expired there, replicated) is taken.
    do_set(*s, "ttl", "v", 1);
    result touched = do_get(*s, "ttl");
    clk.advance(2);
    BOOST_CHECK_EQUAL(value_of(*s, "ttl"), "<miss>");
    touched.exptime = 0;
    BOOST_CHECK(run(item_copy("ttl", touched, store_mode::set)) == status::stored);
    BOOST_CHECK_EQUAL(value_of(*s, "ttl"), "v");
    BOOST_CHECK_EQUAL(s->stats().copies_refused, 5u);
    // The expiry of an item whose CAS orders nothing (a client's meta E, taken after a
    // delete) does not replace the delete's point: a copy of a write before that delete is
    // still refused.
    BOOST_CHECK(do_delete(*s, "ue").st == status::not_found);
    do_set(*s, "ue-src", "e", 1);
    result unordered = do_get(*s, "ue-src");
    unordered.cas = 12345;
    BOOST_CHECK(run(item_copy("ue", unordered, store_mode::set)) == status::stored);
    clk.advance(2);
    BOOST_CHECK_EQUAL(value_of(*s, "ue"), "<miss>");  // (expired: noted at CAS 12345)
    BOOST_CHECK(copy_of("ue", store_mode::set) == status::not_stored);
    BOOST_CHECK_EQUAL(value_of(*s, "ue"), "<miss>");
    BOOST_CHECK_EQUAL(s->stats().copies_refused, 6u);
    // ... and a warm add after that expiry is refused whatever it copies: a write after the
    // delete (by the clock) may have been overwritten by the client's E write.
    // (`key` deleted, then w1 written, copied, and overwritten by an E write that expired.)
    auto overwritten_by_e = [&](const std::string& key) {
      BOOST_CHECK(do_delete(*s, key).st == status::not_found);
      do_set(*s, key + "-w1", "w1");
      const result w1 = do_get(*s, key + "-w1");  // (written after the delete)
      BOOST_CHECK(run(item_copy(key, w1, store_mode::set)) == status::stored);
      do_set(*s, key + "-src", "e", 1);
      result over = do_get(*s, key + "-src");
      over.cas = 12345;
      BOOST_CHECK(run(item_copy(key, over, store_mode::set)) == status::stored);  // over w1
      clk.advance(2);
      BOOST_CHECK_EQUAL(value_of(*s, key), "<miss>");
      return w1;
    };
    const result w1 = overwritten_by_e("ue2");
    BOOST_CHECK(run(item_copy("ue2", w1, store_mode::add)) == status::not_stored);
    BOOST_CHECK_EQUAL(value_of(*s, "ue2"), "<miss>");
    BOOST_CHECK(run(item_copy("ue2", w1, store_mode::set)) == status::stored);  // (ordered)
    BOOST_CHECK_EQUAL(s->stats().copies_refused, 7u);
    // ... and still after a late copy of a delete with an older point (another owner's copy
    // of the first delete): it does not order the adds again (w1 came back).
    const uint64_t first_delete = next_cas();
    const result w1b = overwritten_by_e("ue4");
    BOOST_CHECK(run(delete_copy("ue4", first_delete)) == status::not_found);
    BOOST_CHECK(run(item_copy("ue4", w1b, store_mode::add)) == status::not_stored);
    BOOST_CHECK_EQUAL(value_of(*s, "ue4"), "<miss>");
    // A delete made here later orders them again: a copy of a write after it is taken.
    BOOST_CHECK(do_delete(*s, "ue4").st == status::not_found);
    do_set(*s, "ue4-w2", "w2");
    BOOST_CHECK(run(item_copy("ue4", do_get(*s, "ue4-w2"), store_mode::add)) == status::stored);
    BOOST_CHECK_EQUAL(value_of(*s, "ue4"), "w2");
    BOOST_CHECK_EQUAL(s->stats().copies_refused, 8u);
    // A note past the guard's seconds lends its point to nothing: once forgotten, a later
    // note that orders nothing orders no copy either.
    BOOST_CHECK(do_delete(*s, "ue3").st == status::not_found);
    clk.advance(11);
    do_set(*s, "ue3-src", "e", 1);
    result late = do_get(*s, "ue3-src");
    late.cas = 12345;
    BOOST_CHECK(run(item_copy("ue3", late, store_mode::set)) == status::stored);
    clk.advance(2);
    BOOST_CHECK_EQUAL(value_of(*s, "ue3"), "<miss>");
    BOOST_CHECK(copy_of("ue3", store_mode::set) == status::stored);
    BOOST_CHECK_EQUAL(value_of(*s, "ue3"), "old");
    BOOST_CHECK_EQUAL(s->stats().copies_refused, 8u);
  }
  // The cluster's own removes (uncounted: a past owner's copy dropped after a write
  // elsewhere) note nothing: a copy of the current item is welcome after them.
  {
    op o;
    o.kind = op_kind::remove;
    o.key = "u";
    o.counted = false;
    BOOST_CHECK(s->execute(o).st == status::not_found);
  }
  BOOST_CHECK(copy_of("u", store_mode::add) == status::stored);
  // A delete whose CAS does not match removes nothing (here the item stays; with none here,
  // inside a ring change's window, the previous owner's may, and that is the one to copy).
  {
    do_set(*s, "kept", "v");
    op o;
    o.kind = op_kind::remove;
    o.key = "kept";
    o.compare_cas = 1;
    BOOST_CHECK(s->execute(o).st == status::exists);
    o.key = "absent";
    BOOST_CHECK(s->execute(o).st == status::not_found);
  }
  BOOST_CHECK(copy_of("absent", store_mode::add) == status::stored);
  BOOST_CHECK(do_delete(*s, "kept").st == status::deleted);  // (a copy would be refused now)
  BOOST_CHECK(copy_of("kept", store_mode::add) == status::not_stored);
  // md I keeps the item (stale): no delete noted.
  do_set(*s, "i", "v");
  {
    op o;
    o.kind = op_kind::remove;
    o.key = "i";
    o.invalidate = true;
    BOOST_CHECK(s->execute(o).st == status::deleted);
  }
  BOOST_CHECK(do_delete(*s, "x").st == status::not_found);
  clk.advance(10);
  BOOST_CHECK(copy_of("x", store_mode::add) == status::not_stored);  // (10 s: still)
  clk.advance(1);
  BOOST_CHECK(copy_of("x", store_mode::add) == status::stored);  // forgotten
  BOOST_CHECK(copy_of("a", store_mode::add) == status::stored);
  BOOST_CHECK(copy_of("i", store_mode::add) == status::not_stored);  // (it is there, stale)

  // flush_all: every key, for the guard's time.
  {
    op f;
    f.kind = op_kind::flush;
    BOOST_CHECK(s->execute(f).st == status::ok);
  }
  BOOST_CHECK(copy_of("never-deleted", store_mode::add) == status::not_stored);
  // Replication's copies (set) of writes before the flush, by the CAS clock, are refused
  // too (a write then flush_all: its copy still on its way); a later write's copy is not.
  BOOST_CHECK(copy_of("replicated", store_mode::set) == status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "replicated"), "<miss>");
  do_set(*s, "later-src", "new");
  const result later = do_get(*s, "later-src");
  op newer = item_copy("replicated", later, store_mode::set);
  BOOST_CHECK(s->execute(newer).st == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "replicated"), "new");
  {  // a CAS that is no clock value (a client's meta E) orders nothing: taken
    result e = src;
    e.cas = 12345;
    op o = item_copy("e-cas", e, store_mode::set);
    BOOST_CHECK(s->execute(o).st == status::stored);
  }
  clk.advance(11);
  BOOST_CHECK(copy_of("never-deleted", store_mode::add) == status::stored);
  BOOST_CHECK(copy_of("replicated-late", store_mode::set) == status::stored);  // (guard over)

  // The flush's point on the CAS clock is the one its sender took (op::explicit_cas), not
  // this replica's clock when it arrived: a write the client made at the primary right after
  // the flush (pipelined), whose copy comes here after the flush did, is kept.
  const uint64_t cut = next_cas();
  do_set(*s, "after-src", "after");  // (CAS above the cut: written after the flush)
  const result after = do_get(*s, "after-src");
  {
    op f;
    f.kind = op_kind::flush;
    f.explicit_cas = cut;
    BOOST_CHECK(s->execute(f).st == status::ok);
  }
  op after_copy = item_copy("after", after, store_mode::set);
  BOOST_CHECK(s->execute(after_copy).st == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "after");
  BOOST_CHECK(copy_of("before", store_mode::set) == status::not_stored);  // ("src": before)

  // A warm add of an item written after the delete (or the flush_all) by the CAS clock is
  // the key's newest state: taken. (A flush_all, a write at the key's owner, then a ring
  // change: the new owner refused the write's warm copy, and the write was lost there.)
  BOOST_CHECK(do_delete(*s, "w").st == status::not_found);
  BOOST_CHECK(copy_of("w", store_mode::add) == status::not_stored);  // (src: older)
  do_set(*s, "w-src", "after the delete");
  op w_copy = item_copy("w", do_get(*s, "w-src"), store_mode::add);
  BOOST_CHECK(s->execute(w_copy).st == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "w"), "after the delete");
  BOOST_CHECK(do_delete(*s, "w").st == status::deleted);
  {  // a CAS that is no clock value tells nothing: refused
    result e = do_get(*s, "w-src");
    e.cas = 12345;
    op o = item_copy("w", e, store_mode::add);
    BOOST_CHECK(s->execute(o).st == status::not_stored);
  }
  {
    op f;
    f.kind = op_kind::flush;
    BOOST_CHECK(s->execute(f).st == status::ok);
  }
  BOOST_CHECK(copy_of("f", store_mode::add) == status::not_stored);
  do_set(*s, "f-src", "after the flush");
  op f_copy = item_copy("f", do_get(*s, "f-src"), store_mode::add);
  BOOST_CHECK(s->execute(f_copy).st == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "f"), "after the flush");

  // Off again: forgotten at once.
  BOOST_CHECK(do_delete(*s, "y").st == status::not_found);
  s->guard_copies(0);
  BOOST_CHECK(copy_of("y", store_mode::add) == status::stored);
}

// Ops that leave no item once they ran (a TTL already past): their key's past copies go at the
// key's other owners too (actors/connection.cpp, past_holders' replicas_too). md I with T-1
// is one (it was not: its replicas' copies could be warmed back before replication came).
BOOST_AUTO_TEST_CASE(ops_that_expire_their_item_now) {
  const uint32_t now = 1000000;
  op set_past, gat_past, touch_past, md_i_past, md_i, md_past, set_later;
  set_past.kind = set_later.kind = op_kind::store;
  set_past.ttl = -1;
  set_later.ttl = 100;
  gat_past.get_touch = true;
  gat_past.ttl = -1;
  touch_past.kind = op_kind::touch;
  touch_past.ttl = -1;
  md_i_past.kind = md_i.kind = md_past.kind = op_kind::remove;
  md_i_past.invalidate = md_i.invalidate = true;
  md_i_past.ttl = md_past.ttl = -1;
  for (const op* o : {&set_past, &gat_past, &touch_past, &md_i_past})
    BOOST_CHECK(expires_now(*o, now));
  for (const op* o : {&md_i, &md_past, &set_later})  // (md without I: a delete anyway)
    BOOST_CHECK(!expires_now(*o, now));
}

// A read's miss (and a delete's not_found) tells whether the item expired just now or a delete
// (or flush_all) took the key here since the node's view last named a new ring: the
// connection then asks no previous owner (their copies are older). Deletes before the ring
// change, and those older than the guard's seconds, do not count.
BOOST_AUTO_TEST_CASE(a_miss_says_when_a_delete_took_the_key_in_this_ring) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "a", "v");
  do_delete(*s, "a");
  BOOST_CHECK(!do_get(*s, "a").deleted_lately);  // (off: a node alone)
  s->guard_copies(10);
  do_set(*s, "a", "v");
  do_set(*s, "b", "v");
  do_delete(*s, "a");
  do_delete(*s, "n");  // (absent: noted all the same)
  BOOST_CHECK(do_get(*s, "a").st == status::miss);
  BOOST_CHECK(do_get(*s, "a").deleted_lately);
  BOOST_CHECK(do_get(*s, "n").deleted_lately);
  BOOST_CHECK(!do_get(*s, "never").deleted_lately);
  s->ring_changed();  // the deletes came before the ring: its past owners may hold newer
  BOOST_CHECK(!do_get(*s, "a").deleted_lately);
  do_delete(*s, "a");  // the same second, after the change
  BOOST_CHECK(do_get(*s, "a").deleted_lately);
  clk.advance(11);
  BOOST_CHECK(!do_get(*s, "a").deleted_lately);  // the guard's seconds are over
  do_set(*s, "c", "v");
  do_flush(*s, 0);
  BOOST_CHECK(do_get(*s, "b").deleted_lately);  // a flush_all takes every key
  BOOST_CHECK(do_get(*s, "never").deleted_lately);
  s->ring_changed();
  BOOST_CHECK(!do_get(*s, "c").deleted_lately);
  // An item found expired (and reclaimed) by an op: its key is gone here, as after a delete,
  // for that op and the next ones (noted).
  do_set(*s, "e", "v", 5);
  do_set(*s, "f", "v", 5);
  clk.advance(6);
  BOOST_CHECK(do_get(*s, "e").deleted_lately);
  BOOST_CHECK(do_get(*s, "e").deleted_lately);  // (reclaimed, but noted)
  const result d = do_delete(*s, "f");
  BOOST_CHECK(d.st == status::not_found);
  BOOST_CHECK(d.deleted_lately);
  BOOST_CHECK(!do_delete(*s, "never").deleted_lately);
  BOOST_CHECK(do_delete(*s, "never").deleted_lately);  // (the first was noted)
  // Updates that need the item say so too: touch, incr, replace, append, cas.
  s->ring_changed();
  op touch, incr, replace, append, cas;
  touch.kind = op_kind::touch;
  touch.ttl = 100;
  incr.kind = op_kind::arith;
  incr.incr = true;
  incr.delta = 1;
  replace.kind = append.kind = cas.kind = op_kind::store;
  replace.mode = store_mode::replace;
  append.mode = store_mode::append;
  cas.mode = store_mode::cas;
  cas.compare_cas = 1;
  replace.value = append.value = cas.value = "x";
  for (op* o : {&touch, &incr, &replace, &append, &cas}) {
    o->key = "u";
    do_set(*s, "u", "1", 5);
    clk.advance(6);  // (expired: found by the op)
    const result r = s->execute(*o);
    BOOST_CHECK(r.st == status::not_found || r.st == status::not_stored);
    BOOST_CHECK(r.deleted_lately);
    BOOST_CHECK(do_get(*s, "u").deleted_lately);  // (and a read after it)
  }
  // An item written before the node's current ring that expires in it: gone here too (with
  // R > 1 the owners of two rings overlap; a past ring's owner may hold an older version).
  do_set(*s, "old", "v", 5);
  s->ring_changed();
  BOOST_CHECK(!s->execute(touch).deleted_lately);  // ("u": its expiry came before the ring)
  clk.advance(6);
  op touch_old = touch;
  touch_old.key = "old";
  BOOST_CHECK(s->execute(touch_old).deleted_lately);
  BOOST_CHECK(do_get(*s, "old").deleted_lately);
  do_delete(*s, "u");
  BOOST_CHECK(s->execute(touch).deleted_lately);  // a delete in this ring
  BOOST_CHECK(s->execute(replace).deleted_lately);
}

// Deletes as state to copy (re-replication): the keys deleted lately that have no item now,
// each with its note's point on the CAS clock; a delete's copy (remove + op::copy) removes
// only an item it is later than, and guards against older copies after it.
BOOST_AUTO_TEST_CASE(a_deletes_copy_removes_only_older_items_and_refuses_older_copies) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  auto listed = [&] {
    std::vector<std::string> keys;
    s->recent_deletes([&](std::string_view k) { keys.emplace_back(k); });
    return keys;
  };
  do_delete(*s, "x");
  BOOST_CHECK(listed().empty());  // (off: a node alone notes nothing)
  BOOST_CHECK_EQUAL(s->recent_delete("x"), 0u);

  s->guard_copies(10);
  do_set(*s, "old", "v1");
  const result old_item = do_get(*s, "old");
  do_delete(*s, "x");
  const uint64_t point = s->recent_delete("x");  // a delete's point, after old_item's write
  BOOST_REQUIRE(cas_clock_newer(point, old_item.cas));
  do_set(*s, "newer", "v2");  // written after that point
  do_delete(*s, "back");
  do_set(*s, "back", "v3");   // deleted, then written again: its item is the state
  do_delete(*s, "x");         // (noted twice: listed once, at its latest place)
  auto copy_of_delete = [&](const std::string& k, uint64_t at) {
    op o = delete_copy(k, at);
    return s->execute(o);
  };
  const auto hits_before = s->stats().delete_hits;
  BOOST_CHECK(copy_of_delete("old", point).st == status::deleted);  // older: removed
  BOOST_CHECK_EQUAL(value_of(*s, "old"), "<miss>");
  BOOST_CHECK(copy_of_delete("newer", point).st == status::exists);  // later: stays
  BOOST_CHECK_EQUAL(value_of(*s, "newer"), "v2");
  BOOST_CHECK(copy_of_delete("absent", point).st == status::not_found);
  BOOST_CHECK_EQUAL(s->stats().delete_hits, hits_before);  // (the cluster's own: uncounted)
  // An item whose CAS is no clock value (a client's meta E) is not ordered: it goes, as with
  // a plain delete (a replicated delete must not leave it at a replica).
  {
    op e = store_op("e-cas", "v", store_mode::set);
    e.explicit_cas = 55;
    BOOST_REQUIRE(s->execute(e).st == status::stored);
    BOOST_CHECK(copy_of_delete("e-cas", point).st == status::deleted);
    BOOST_CHECK(copy_of_delete("no-point", 0).st == status::not_found);  // (noted nothing)
  }
  // Noted with the copy's point: a copy of the older item is refused after it, a miss says
  // the key went here lately, and the key is listed with that point.
  auto copy_of = [&](const std::string& k) {
    op o = item_copy(k, old_item, store_mode::add);
    return s->execute(o).st;
  };
  BOOST_CHECK(copy_of("old") == status::not_stored);
  BOOST_CHECK(copy_of("absent") == status::not_stored);
  BOOST_CHECK(do_get(*s, "old").deleted_lately);
  BOOST_CHECK_EQUAL(s->recent_delete("old"), point);
  BOOST_CHECK_EQUAL(s->recent_delete("newer"), 0u);  // (a live item)
  BOOST_CHECK_EQUAL(s->recent_delete("back"), 0u);
  BOOST_CHECK_EQUAL(s->recent_delete("no-point"), 0u);
  const std::vector<std::string> want{"x", "old", "absent", "e-cas"};
  BOOST_CHECK(listed() == want);
  // An item that expired: its key is listed (lookup noted it), with its write's point (not
  // the moment the expiry was found: a write elsewhere after it stays newer).
  const uint64_t exp_cas = do_set(*s, "exp", "v", 5).cas;
  clk.advance(6);
  BOOST_CHECK_EQUAL(value_of(*s, "exp"), "<miss>");
  BOOST_CHECK_EQUAL(s->recent_delete("exp"), exp_cas);
  BOOST_CHECK(cas_clock_newer(s->recent_delete("exp"), point));
  // A note keeps the later point of two: an older delete's copy does not move it back.
  BOOST_CHECK(copy_of_delete("exp", point).st == status::not_found);
  BOOST_CHECK(cas_clock_newer(s->recent_delete("exp"), point));
  clk.advance(11);  // the guard's seconds are over for all of them
  BOOST_CHECK(listed().empty());
  BOOST_CHECK_EQUAL(s->recent_delete("old"), 0u);
}

// An item that expired is a delete too, at its write's point, also when nothing looked at it
// since: a copy of an older write (an update's look ahead at a previous owner that still
// holds it) or of that write itself is refused; a copy of any later write is taken, even one
// with the very next CAS. Before, the add found no note (the lookup reclaimed the expired
// item after the guard had looked) and brought the older value back; and the point was the
// next CAS, which refused that next write.
BOOST_AUTO_TEST_CASE(a_copy_of_an_older_write_is_refused_over_an_item_expired_unseen) {
  fake_clock clk;
  auto source = open_shard(small_config(), clk);
  auto s = open_shard(small_config(), clk);
  s->guard_copies(10);
  do_set(*source, "k", "older");
  const uint64_t expiring = do_set(*s, "k", "newer", 5).cas;  // (gat -1 would do the same)
  const uint64_t expiring2 = do_set(*s, "k2", "expiring", 5).cas;
  const result older = do_get(*source, "k");
  BOOST_REQUIRE(cas_clock_newer(expiring, older.cas));
  clk.advance(6);  // both expired here, unseen
  op copy = item_copy("k", older, store_mode::add);
  BOOST_CHECK(s->execute(copy).st == status::not_stored);
  op itself = item_copy("k", older, store_mode::add);
  itself.explicit_cas = expiring;  // (the expired write's own copy)
  BOOST_CHECK(s->execute(itself).st == status::not_stored);
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "<miss>");
  BOOST_CHECK_EQUAL(s->stats().copies_refused, 2u);
  op next = item_copy("k2", older, store_mode::add);
  next.explicit_cas = expiring2 + 1;  // a later write, with the very next CAS
  BOOST_CHECK(s->execute(next).st == status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "k"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "k2"), "older");

  // Reclaimed by the sweep (no op looked at it): noted all the same.
  const uint64_t swept = do_set(*s, "k3", "newer", 5).cas;
  clk.advance(6);
  BOOST_CHECK_GE(s->sweep(), 1u);
  BOOST_CHECK_EQUAL(s->recent_delete("k3"), swept);
  op copy3 = item_copy("k3", older, store_mode::add);
  BOOST_CHECK(s->execute(copy3).st == status::not_stored);
  // A delete's copy at an expiry's point takes the expired write itself where it lives on
  // (no later write), and spares a later one.
  const uint64_t same = do_set(*source, "k4", "v").cas;
  op at_same = delete_copy("k4", same);
  BOOST_CHECK(source->execute(at_same).st == status::deleted);
}

// cas_clock_removed: what the connection asks of a delete's point and an item elsewhere.
BOOST_AUTO_TEST_CASE(a_delete_point_removes_its_own_write_and_older_ones) {
  const uint64_t c = next_cas();
  BOOST_CHECK(cas_clock_removed(c, c));
  BOOST_CHECK(cas_clock_removed(c - 1, c));
  BOOST_CHECK(!cas_clock_removed(c + 1, c));
  BOOST_CHECK(!cas_clock_removed(c, 0));    // no point
  BOOST_CHECK(!cas_clock_removed(55, c));   // a client's E: unordered
  BOOST_CHECK(!cas_clock_removed(55, 55));
}

// At most 65,536 deletes are noted: the oldest go first, the newest still refuse copies.
BOOST_AUTO_TEST_CASE(the_deletes_a_guard_notes_are_bounded) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  s->guard_copies(10);
  do_set(*s, "src", "v");
  const result src = do_get(*s, "src");
  for (int i = 0; i < 70000; ++i)
    do_delete(*s, "d" + std::to_string(i));
  auto copy = [&](const std::string& k) {
    op o = item_copy(k, src, store_mode::add);
    return s->execute(o).st;
  };
  BOOST_CHECK(copy("d69999") == status::not_stored);
  BOOST_CHECK(copy("d4464") == status::not_stored);  // the oldest of the 65,536 kept
  BOOST_CHECK(copy("d4463") == status::stored);      // (forgotten: over the bound)
  BOOST_CHECK(copy("d10") == status::stored);
}

// Other erasures between two steps (deletes, expiry, eviction) shift entries back across the
// cursor: none may escape the pass. Many shards (each keys its index hash afresh), the index
// near its 80 % load (long runs of entries); without the cursor's step back 8 of 50 rounds'
// selected items escaped.
BOOST_AUTO_TEST_CASE(prune_misses_nothing_when_entries_are_erased_between_its_steps) {
  size_t escaped = 0, dropped_kept = 0;
  const int n = 3100;  // 6200 items: just under 80 % of a 7776-slot index
  for (int round = 0; round < 200; ++round) {
    fake_clock clk;
    auto s = open_shard(small_config(), clk);
    for (int i = 0; i < n; ++i) {
      do_set(*s, "d" + std::to_string(i), "v");  // selected
      do_set(*s, "k" + std::to_string(i), "v");  // kept, and deleted by the test meanwhile
    }
    s->begin_prune();
    int deleted = 0;
    for (bool done = false; !done;) {
      done = s->prune([](std::string_view k) { return k[0] == 'd'; }, clk.now() + 1, 32).done;
      for (int j = 0; j < 16 && deleted < n; ++j)
        do_delete(*s, "k" + std::to_string(deleted++));
    }
    for (int i = 0; i < n; ++i) {
      escaped += value_of(*s, "d" + std::to_string(i)) != "<miss>";
      if (i >= deleted)
        dropped_kept += value_of(*s, "k" + std::to_string(i)) == "<miss>";
    }
  }
  BOOST_CHECK_EQUAL(escaped, 0u);
  BOOST_CHECK_EQUAL(dropped_kept, 0u);
}

BOOST_AUTO_TEST_CASE(flush_immediate) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  for (int i = 0; i < 2000; ++i) do_set(*s, "k" + std::to_string(i), std::string(100, 'x'));
  BOOST_CHECK(s->stats().segments > 1u);
  BOOST_CHECK_EQUAL(do_flush(*s, 0).st, status::ok);
  BOOST_CHECK_EQUAL(s->stats().curr_items, 0u);
  BOOST_CHECK_EQUAL(s->stats().segments, 0u);
  BOOST_CHECK_EQUAL(value_of(*s, "k1"), "<miss>");
  do_set(*s, "after", "v");
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "v");  // stored after the flush: lives
  BOOST_CHECK_EQUAL(s->stats().curr_items, 1u);
}

// One flush_all that comes again (a member passes on a flush from one whose view lags, and
// another member did too: each copy carries the cut its sender took) takes effect once: the
// writes stored after the first copy came after that flush. Another flush (another cut, older
// or later: cuts from different nodes' clocks do not say which came first) flushes.
BOOST_AUTO_TEST_CASE(a_flush_that_comes_again_takes_effect_once) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  auto flush_at = [&](uint64_t cut) {
    op f;
    f.kind = op_kind::flush;
    f.explicit_cas = cut;
    return s->execute(f).st;
  };
  do_set(*s, "before", "v");
  const uint64_t cut = next_cas();
  const uint64_t older = cut - 256;
  BOOST_CHECK_EQUAL(flush_at(cut), status::ok);
  BOOST_CHECK_EQUAL(value_of(*s, "before"), "<miss>");
  do_set(*s, "after", "v");
  BOOST_CHECK_EQUAL(flush_at(cut), status::ok);  // the same flush again
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "v");  // (before: flushed by the copy)
  BOOST_CHECK_EQUAL(flush_at(older), status::ok);  // another, older
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "<miss>");
  do_set(*s, "after", "v");
  BOOST_CHECK_EQUAL(flush_at(next_cas()), status::ok);  // another, later
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "<miss>");
  do_set(*s, "after", "v");
  BOOST_CHECK_EQUAL(flush_at(cut), status::ok);  // the first again, two flushes later
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "v");
  // A flush with no cut (a tool's, an older node's) always takes effect.
  do_set(*s, "again", "v");
  BOOST_CHECK_EQUAL(do_flush(*s, 0).st, status::ok);
  BOOST_CHECK_EQUAL(value_of(*s, "again"), "<miss>");
}

BOOST_AUTO_TEST_CASE(a_cluster_read_during_a_flush_delay_carries_the_flush_time) {
  // A warm or replication read copies the item to a node that may not have this pending
  // flush (it joined during the delay): the copy's expiry is the flush time. A client's read
  // shows the item's own expiry, as memcached does.
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "never", "1");
  do_set(*s, "late", "2", 100);     // expires at t0+100
  do_set(*s, "soon", "3", 5);       // expires at t0+5, before the flush
  const uint32_t t0 = clk.now();
  do_flush(*s, 10);
  auto cluster_read = [&](const std::string& k) {
    op o;
    o.key = k;
    o.counted = false;
    o.get_bump = false;
    return s->execute(o);
  };
  BOOST_CHECK_EQUAL(cluster_read("never").exptime, t0 + 10);
  BOOST_CHECK_EQUAL(cluster_read("late").exptime, t0 + 10);
  BOOST_CHECK_EQUAL(cluster_read("soon").exptime, t0 + 5);
  BOOST_CHECK_EQUAL(do_get(*s, "never").exptime, 0u);
  BOOST_CHECK_EQUAL(do_get(*s, "late").exptime, t0 + 100);
  do_flush(*s, 0);  // no pending flush: the item's own
  do_set(*s, "after", "4");
  BOOST_CHECK_EQUAL(cluster_read("after").exptime, 0u);
}

BOOST_AUTO_TEST_CASE(flush_with_delay) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "a", "1");
  BOOST_CHECK_EQUAL(do_flush(*s, 10).st, status::ok);  // relative: at t0+10
  clk.advance(5);
  BOOST_CHECK_EQUAL(value_of(*s, "a"), "1");
  do_set(*s, "b", "2");  // stored before the flush time: also invalidated
  clk.advance(4);        // t0+9
  BOOST_CHECK_EQUAL(value_of(*s, "b"), "2");
  clk.advance(1);        // t0+10: flush takes effect
  do_set(*s, "c", "3");  // stored at the flush time: lives
  BOOST_CHECK_EQUAL(value_of(*s, "a"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "b"), "<miss>");
  BOOST_CHECK_EQUAL(value_of(*s, "c"), "3");

  // absolute flush time, applied by sweep() without any other op
  do_flush(*s, int64_t(clk.now()) + 3);
  clk.advance(3);
  s->sweep(1);
  BOOST_CHECK_EQUAL(s->stats().curr_items, 0u);

  // an immediate flush cancels a pending delayed one
  do_set(*s, "d", "4");
  do_flush(*s, 100);
  do_flush(*s, 0);
  do_set(*s, "e", "5");
  clk.advance(200);
  BOOST_CHECK_EQUAL(value_of(*s, "e"), "5");
}

BOOST_AUTO_TEST_CASE(meta_fetched_and_last_access) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "v");
  clk.advance(5);
  result r = do_get(*s, "k");
  BOOST_CHECK(!r.fetched);
  BOOST_CHECK_EQUAL(r.last_access, k_t0);
  clk.advance(2);
  r = do_get(*s, "k");
  BOOST_CHECK(r.fetched);
  BOOST_CHECK_EQUAL(r.last_access, k_t0 + 5);
  // no bump (mg u): does not update last access
  op o;
  o.kind = op_kind::get;
  o.key = "k";
  o.get_bump = false;
  clk.advance(3);
  s->execute(o);
  r = do_get(*s, "k");
  BOOST_CHECK_EQUAL(r.last_access, k_t0 + 7);
  // metadata only: no pin, but the size is known
  o.get_value = false;
  r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK(!r.value);
  BOOST_CHECK_EQUAL(r.value_size, 1u);
}

BOOST_AUTO_TEST_CASE(meta_vivify_win_and_already_won) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  op o;
  o.kind = op_kind::get;
  o.key = "lease";
  o.vivify = true;
  o.vivify_ttl = 30;
  result r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::stored);  // created; memcached answers "VA 0 ... W"
  BOOST_CHECK(r.win);
  BOOST_CHECK(static_cast<bool>(r.value));
  BOOST_CHECK(r.value.view().empty());
  BOOST_CHECK(!r.already_won);
  BOOST_CHECK_EQUAL(r.value_size, 0u);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 30);
  BOOST_CHECK(r.cas != 0);
  // second client: the empty item exists, the token was already handed out
  r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK(!r.win);
  BOOST_CHECK(r.already_won);
  BOOST_CHECK_EQUAL(r.value_size, 0u);
  // the winner fills it with CAS; afterwards no W/Z
  const uint64_t cas = r.cas;
  BOOST_CHECK_EQUAL(do_store(*s, "lease", "data", store_mode::set, 120, 0, cas + 1).st,
                    status::exists);
  BOOST_CHECK_EQUAL(do_store(*s, "lease", "data", store_mode::set, 120, 0, cas).st,
                    status::stored);
  r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK(!r.win);
  BOOST_CHECK(!r.already_won);
  BOOST_CHECK_EQUAL(r.value.view(), "data");
}

BOOST_AUTO_TEST_CASE(meta_vivify_with_touch_and_the_fetched_flag) {
  // mg K T1000 N30: the item made takes vivify_ttl (the parser gives it the later flag's
  // TTL), not the touch's; it counts as fetched for the next read, not for this one.
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  op o;
  o.kind = op_kind::get;
  o.key = "viv";
  o.vivify = true;
  o.vivify_ttl = 30;
  o.get_touch = true;
  o.ttl = 1000;
  result r = s->execute(o);
  BOOST_CHECK_EQUAL(r.st, status::stored);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 30);
  BOOST_CHECK(!r.fetched);  // mc: "mg k N30 h" -> h0, the next "mg k h" -> h1
  r = do_get(*s, "viv");
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 30);
  BOOST_CHECK(r.fetched);
  // A counter made by ma N is not fetched (mc: "ma k N30" then "mg k h" -> h0).
  op a;
  a.kind = op_kind::arith;
  a.key = "ctr";
  a.vivify = true;
  a.vivify_ttl = 30;
  BOOST_CHECK_EQUAL(s->execute(a).st, status::stored);
  BOOST_CHECK(!do_get(*s, "ctr").fetched);
}

BOOST_AUTO_TEST_CASE(meta_recache) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "k", "v", 100);
  op o;
  o.kind = op_kind::get;
  o.key = "k";
  o.recache = true;
  o.recache_ttl = 30;
  result r = s->execute(o);
  BOOST_CHECK(!r.win && !r.already_won);  // 100 s left
  clk.advance(80);                          // 20 s left < 30
  r = s->execute(o);
  BOOST_CHECK(r.win);
  BOOST_CHECK(!r.already_won);
  r = s->execute(o);
  BOOST_CHECK(!r.win);
  BOOST_CHECK(r.already_won);
  // a plain get also reports Z while the token is out
  r = do_get(*s, "k");
  BOOST_CHECK(r.already_won);
  // recache never triggers on items without TTL
  do_set(*s, "forever", "v");
  o.key = "forever";
  BOOST_CHECK(!s->execute(o).win);
  // a new value clears the token
  do_set(*s, "k", "v2", 100);
  o.key = "k";
  r = s->execute(o);
  BOOST_CHECK(!r.win && !r.already_won);
}

// mg R T: R compares the TTL before the touch when it stands left of T, the touched one when
// right of it; the result reports the TTL before the touch for a meta `t` left of T.
BOOST_AUTO_TEST_CASE(meta_recache_and_ttl_before_a_touch) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  op o;
  o.kind = op_kind::get;
  o.recache = true;
  o.recache_ttl = 30;
  o.get_touch = true;
  o.ttl = 100;
  for (bool before : {true, false}) {
    o.key = before ? "RT" : "TR";
    do_set(*s, o.key, "v", 10);
    o.recache_before_touch = before;
    const result r = s->execute(o);
    BOOST_CHECK_EQUAL(r.win, before);  // 10 s left < 30; after the touch 100 s
    BOOST_CHECK_EQUAL(r.exptime_before, clk.now() + 10);
    BOOST_CHECK_EQUAL(r.exptime, clk.now() + 100);
  }
  op v;  // a vivified item had no TTL before N
  v.kind = op_kind::get;
  v.key = "made";
  v.vivify = true;
  v.vivify_ttl = 30;
  const result made = s->execute(v);
  BOOST_CHECK(made.st == status::stored);
  BOOST_CHECK_EQUAL(made.exptime_before, 0u);
  BOOST_CHECK_EQUAL(made.exptime, clk.now() + 30);
  op a;  // ma T on a counter without TTL
  a.kind = op_kind::arith;
  a.key = "ctr";
  a.delta = 1;
  a.get_touch = true;
  a.ttl = 50;
  do_set(*s, "ctr", "5");
  const result ar = s->execute(a);
  BOOST_CHECK_EQUAL(ar.number, 6u);
  BOOST_CHECK_EQUAL(ar.exptime_before, 0u);
  BOOST_CHECK_EQUAL(ar.exptime, clk.now() + 50);
}

// A re-read (a value too large to travel inline, read again) keeps the first read's TTL
// from before its T; without a T, the TTL the re-read found (the item may have changed).
BOOST_AUTO_TEST_CASE(a_reread_keeps_the_ttl_before_the_first_reads_touch) {
  result first, again;
  first.st = again.st = status::hit;
  first.exptime_before = 100;
  first.exptime = again.exptime = again.exptime_before = 200;  // mg T set 200
  merge_reread(first, std::move(again));
  BOOST_CHECK_EQUAL(first.exptime_before, 100u);
  BOOST_CHECK_EQUAL(first.exptime, 200u);
  result plain, changed;
  plain.st = changed.st = status::hit;
  plain.exptime = plain.exptime_before = 100;
  changed.exptime = changed.exptime_before = 300;  // set again, with a new TTL, in between
  merge_reread(plain, std::move(changed));
  BOOST_CHECK_EQUAL(plain.exptime_before, 300u);
  BOOST_CHECK_EQUAL(plain.exptime, 300u);
}

// mc: "set n 0 0 1 / 5", "md n I", "incr n 1", "mg n s v" -> "VA 1 s1 X W": the counter
// changed in place stays stale, with its token as it was; one that grows is a new item.
BOOST_AUTO_TEST_CASE(an_incr_in_place_keeps_a_stale_item_stale) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  op md;
  md.kind = op_kind::remove;
  md.invalidate = true;
  op incr;
  incr.kind = op_kind::arith;
  incr.delta = 1;
  for (const char* key : {"n", "w"}) {
    do_set(*s, key, "5");
    md.key = key;
    BOOST_CHECK_EQUAL(s->execute(md).st, status::deleted);
  }
  do_get(*s, "w");  // w's token goes out
  for (const char* key : {"n", "w"}) {
    incr.key = key;
    BOOST_CHECK_EQUAL(s->execute(incr).number, 6u);
  }
  result r = do_get(*s, "n");
  BOOST_CHECK(r.stale && r.win && !r.already_won);
  r = do_get(*s, "w");
  BOOST_CHECK(r.stale && !r.win && r.already_won);
  incr.delta = 4;  // 6 -> 10: longer, a new item
  BOOST_CHECK_EQUAL(s->execute(incr).number, 10u);
  r = do_get(*s, "w");
  BOOST_CHECK(!r.stale && !r.win && !r.already_won);
}

BOOST_AUTO_TEST_CASE(meta_stale_via_invalidate) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "toinv", "moo");
  result r = do_get(*s, "toinv");
  BOOST_CHECK(!r.stale && !r.win && !r.already_won);
  const uint64_t cas0 = r.cas;

  op md;
  md.kind = op_kind::remove;
  md.key = "toinv";
  md.invalidate = true;
  md.ttl = 30;
  r = s->execute(md);
  BOOST_CHECK_EQUAL(r.st, status::deleted);

  r = do_get(*s, "toinv");
  BOOST_CHECK_EQUAL(r.st, status::hit);
  BOOST_CHECK(r.stale);
  BOOST_CHECK(r.win);  // first reader of a stale item wins
  BOOST_CHECK(!r.already_won);
  BOOST_CHECK(r.cas != cas0);  // invalidation bumps CAS
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 30);
  BOOST_CHECK_EQUAL(r.value.view(), "moo");
  const uint64_t cas1 = r.cas;

  r = do_get(*s, "toinv");
  BOOST_CHECK(r.stale && !r.win && r.already_won);

  // ms with a CAS that does not match and without I: EXISTS
  BOOST_CHECK_EQUAL(do_store(*s, "toinv", "f", store_mode::set, 90, 0, 1).st, status::exists);
  // ms I with an older CAS: stored, but stays stale with the old TTL and the token out
  op ms;
  ms.kind = op_kind::store;
  ms.key = "toinv";
  ms.value = "f";
  ms.ttl = 90;
  ms.mode = store_mode::cas;
  ms.invalidate = true;
  // (mc: `ms toinv 1 C0 I` answers EX, as C0 without I)
  BOOST_CHECK_EQUAL(s->execute(ms).st, status::exists);
  BOOST_CHECK_EQUAL(do_get(*s, "toinv").value.view(), "moo");
  ms.compare_cas = 1;
  BOOST_CHECK_EQUAL(s->execute(ms).st, status::stored);
  r = do_get(*s, "toinv");
  BOOST_CHECK_EQUAL(r.value.view(), "f");
  BOOST_CHECK(r.stale && r.already_won && !r.win);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 30);
  BOOST_CHECK(r.cas != cas1);

  // a valid CAS store clears stale, token and sets the new TTL
  BOOST_CHECK_EQUAL(do_store(*s, "toinv", "g", store_mode::set, 90, 0, r.cas).st, status::stored);
  r = do_get(*s, "toinv");
  BOOST_CHECK(!r.stale && !r.win && !r.already_won);
  BOOST_CHECK_EQUAL(r.exptime, k_t0 + 90);
  BOOST_CHECK_EQUAL(r.value.view(), "g");

  // md I on a missing key
  md.key = "absent";
  BOOST_CHECK_EQUAL(s->execute(md).st, status::not_found);
}

// A copy of a stale item (what replication and warming send: a set or an add with the item's
// CAS) is stored stale: its first meta reader there wins, as after md I, unless the copy says
// the token is out already.
BOOST_AUTO_TEST_CASE(a_copy_of_a_stale_item_stays_stale) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  for (auto mode : {store_mode::set, store_mode::add}) {
    op copy;
    copy.kind = op_kind::store;
    copy.mode = mode;
    copy.key = mode == store_mode::set ? "replica" : "warmed";
    copy.value = "old";
    copy.ttl = k_t0 + 30;  // absolute, as copies carry it
    copy.explicit_cas = 4242;
    copy.as_stale = true;
    BOOST_CHECK_EQUAL(s->execute(copy).st, status::stored);
    result r = do_get(*s, copy.key);
    BOOST_CHECK(r.stale && r.win && !r.already_won);
    BOOST_CHECK_EQUAL(r.cas, 4242u);
    BOOST_CHECK_EQUAL(r.exptime, k_t0 + 30);
    r = do_get(*s, copy.key);
    BOOST_CHECK(r.stale && !r.win && r.already_won);
    // A copy whose token is out (a reader took it where the copy came from): nobody wins here.
    copy.token_out = true;
    BOOST_CHECK_EQUAL(s->execute(copy).st, mode == store_mode::set ? status::stored
                                                                   : status::not_stored);
    if (mode == store_mode::set) {
      r = do_get(*s, copy.key);
      BOOST_CHECK(r.stale && !r.win && r.already_won);
    }
    // A plain copy is fresh.
    copy.token_out = false;
    copy.as_stale = false;
    copy.mode = store_mode::set;
    BOOST_CHECK_EQUAL(s->execute(copy).st, status::stored);
    r = do_get(*s, copy.key);
    BOOST_CHECK(!r.stale && !r.win && !r.already_won);
  }
}

BOOST_AUTO_TEST_CASE(stats_sum) {
  shard_stats a, b;
  a.curr_items = 1;
  a.recovery_skipped = 2;
  a.index_bytes = 3;
  b.curr_items = 10;
  b.recovery_skipped = 20;
  b.cas_badval = 7;
  a += b;
  BOOST_CHECK_EQUAL(a.curr_items, 11u);
  BOOST_CHECK_EQUAL(a.recovery_skipped, 22u);
  BOOST_CHECK_EQUAL(a.cas_badval, 7u);
  BOOST_CHECK_EQUAL(a.index_bytes, 3u);
}

BOOST_AUTO_TEST_CASE(batch_execute_equals_one_by_one) {
  // The batch form prefetches, then executes in order: same results as op by op, including
  // ops on one key inside a batch, invalid keys, and batches longer than the prefetch window.
  fake_clock clk;
  auto a = open_shard(small_config(), clk);
  auto b = open_shard(small_config(), clk);
  op_batch ops;
  auto add = [&](op_kind k, const std::string& key, const std::string& value = {}) {
    op o;
    o.kind = k;
    o.key = key;
    o.value = value;
    ops.push_back(std::move(o));
  };
  for (int i = 0; i < 50; ++i) add(op_kind::store, "k" + std::to_string(i), std::to_string(i));
  for (int i = 0; i < 50; ++i) {
    add(op_kind::get, "k" + std::to_string(i % 60));  // k50..k59 miss
    if (i % 7 == 0) add(op_kind::store, "k" + std::to_string(i), "new" + std::to_string(i));
    if (i % 11 == 0) add(op_kind::remove, "k" + std::to_string(i + 1));
  }
  add(op_kind::get, "");                      // invalid key
  add(op_kind::get, std::string(300, 'x'));   // invalid key
  for (int i = 0; i < 50; ++i) add(op_kind::get, "k" + std::to_string(i));
  op_batch copy = ops;
  result_batch batch;
  a->execute(ops, batch);
  BOOST_REQUIRE_EQUAL(batch.size(), copy.size());
  for (size_t i = 0; i < copy.size(); ++i) {
    result one = b->execute(copy[i]);
    BOOST_REQUIRE_MESSAGE(batch[i].st == one.st, "op " << i);
    BOOST_REQUIRE_EQUAL(batch[i].flags, one.flags);
    BOOST_REQUIRE_EQUAL(batch[i].value_size, one.value_size);
    BOOST_REQUIRE(batch[i].value.view() == one.value.view());
  }
  result_batch single;
  op_batch one_op(1);
  one_op[0].kind = op_kind::get;
  one_op[0].key = "k14";
  a->execute(one_op, single);
  BOOST_REQUIRE_EQUAL(single.size(), 1u);
  BOOST_CHECK_EQUAL(single[0].st, status::hit);
  BOOST_CHECK(single[0].value.view() == "new14");
}

// The hit and miss counters count what memcached counts: a client's deletes, not hand-backs
// (a member back from the dead was sent deletes that showed as hundreds of delete_misses no
// client asked for), nor a too-large set's removal (counting::nothing), nor md I's stale
// mark; mg T's miss is a get's miss and its hit a touch; `me` counts nothing; ma N counts
// no miss for the counter it makes.
BOOST_AUTO_TEST_CASE(hit_and_miss_counters_count_what_memcached_counts) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);
  do_set(*s, "a", "1");
  do_set(*s, "b", "1");
  op back;
  back.kind = op_kind::remove;
  back.key = "a";
  back.hand_back = true;
  s->execute(back);  // (stored before any return: removed)
  back.key = "none";
  s->execute(back);
  op refused = back;
  refused.hand_back = false;
  refused.counts = op::counting::nothing;
  s->execute(refused);
  refused.key = "b";
  s->execute(refused);
  do_set(*s, "c", "1");
  op stale;
  stale.kind = op_kind::remove;
  stale.key = "c";
  stale.invalidate = true;
  BOOST_CHECK(s->execute(stale).st == status::deleted);
  BOOST_CHECK_EQUAL(s->stats().delete_hits, 0u);
  BOOST_CHECK_EQUAL(s->stats().delete_misses, 0u);
  do_delete(*s, "c");
  do_delete(*s, "c");
  BOOST_CHECK_EQUAL(s->stats().delete_hits, 1u);
  BOOST_CHECK_EQUAL(s->stats().delete_misses, 1u);

  op mg;
  mg.kind = op_kind::get;
  mg.key = "none";
  mg.get_touch = true;
  mg.ttl = 30;
  mg.counts = op::counting::touch_or_miss;
  s->execute(mg);
  do_set(*s, "d", "1");
  mg.key = "d";
  s->execute(mg);
  op me;
  me.kind = op_kind::get;
  me.key = "d";
  me.get_value = false;
  me.get_bump = false;
  me.counts = op::counting::nothing;
  s->execute(me);
  me.key = "none";
  s->execute(me);
  auto st = s->stats();
  BOOST_CHECK_EQUAL(st.get_misses, 1u);
  BOOST_CHECK_EQUAL(st.get_hits, 0u);
  BOOST_CHECK_EQUAL(st.touch_misses, 0u);
  BOOST_CHECK_EQUAL(st.touch_hits, 1u);

  op made;
  made.kind = op_kind::arith;
  made.key = "n";
  made.vivify = true;
  made.initial = 99;
  BOOST_CHECK(s->execute(made).st == status::stored);
  const uint64_t items = s->stats().total_items;
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 100u);  // longer: a new item
  BOOST_CHECK_EQUAL(do_arith(*s, "n", true, 1).number, 101u);  // as long: in place
  BOOST_CHECK_EQUAL(do_arith(*s, "n", false, 100).number, 1u);
  st = s->stats();
  BOOST_CHECK_EQUAL(st.incr_misses, 0u);
  BOOST_CHECK_EQUAL(st.incr_hits, 2u);
  BOOST_CHECK_EQUAL(st.decr_hits, 1u);
  BOOST_CHECK_EQUAL(st.total_items, items + 1);

  // An expired item found by the cluster's own read (warming, replication: not counted) is
  // reclaimed, not a client's get_expired; md C with another CAS is a delete miss.
  do_set(*s, "old", "v", 5);
  clk.advance(6);
  op look;
  look.kind = op_kind::get;
  look.key = "old";
  look.counted = false;
  BOOST_CHECK(s->execute(look).st == status::miss);
  BOOST_CHECK_EQUAL(s->stats().get_expired, 0u);
  BOOST_CHECK_EQUAL(s->stats().reclaimed, 1u);
  do_set(*s, "e", "1");
  BOOST_CHECK(do_delete(*s, "e", 12345).st == status::exists);
  BOOST_CHECK_EQUAL(s->stats().delete_misses, 2u);
}

// cache_memlimit: a lower limit evicts the oldest segments at once, and the shard stays
// under it as writes go on; a higher one (up to the start's) lets it grow again.
BOOST_AUTO_TEST_CASE(a_memory_limit_set_at_run_time_holds) {
  fake_clock clk;
  auto s = open_shard(small_config(), clk);  // 16 MiB of 64 KiB segments
  const std::string value(10000, 'v');
  for (int i = 0; i < 1500; ++i)  // 15 MB
    do_set(*s, "k" + std::to_string(i), value);
  BOOST_CHECK_GT(s->stats().segment_bytes, 12u << 20);
  const uint64_t before = s->stats().curr_items;
  s->set_memory_limit(4 << 20);
  size_t steps = 0;
  while (s->shrink(8))  // (a few segments a call: the loop hosting the shard goes on)
    ++steps;
  BOOST_CHECK_GE(steps, 10u);  // (about 190 segments of 64 KiB to evict, 8 a call)
  BOOST_CHECK_LE(s->stats().segment_bytes, 4u << 20);
  BOOST_CHECK_LT(s->stats().curr_items, before);
  BOOST_CHECK_EQUAL(value_of(*s, "k1499"), value);  // the newest stay
  BOOST_CHECK_EQUAL(value_of(*s, "k0"), "<miss>");   // the oldest went
  for (int i = 1500; i < 2500; ++i)
    do_set(*s, "k" + std::to_string(i), value);
  BOOST_CHECK_LE(s->stats().segment_bytes, 4u << 20);
  BOOST_CHECK_EQUAL(value_of(*s, "k2499"), value);
  s->set_memory_limit(16 << 20);
  for (int i = 2500; i < 3500; ++i)
    do_set(*s, "k" + std::to_string(i), value);
  BOOST_CHECK_GT(s->stats().segment_bytes, 8u << 20);
}

BOOST_AUTO_TEST_SUITE_END()
