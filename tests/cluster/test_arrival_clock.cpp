// How late a member's data call comes (cluster/arrival_clock.hpp): measured against the
// quickest arrival on the connection whatever the two clocks' offset, kept across a stop of
// this node, tolerant of the clocks' drift, and the refusal rule around the sender's timeout.
#include "cluster/arrival_clock.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <initializer_list>

using bifrost::cluster::arrival_clock;
using bifrost::cluster::answer_deadline;
using bifrost::cluster::budget_left;
using bifrost::cluster::refuse_late;

BOOST_AUTO_TEST_SUITE(arrival_clock_tests)

BOOST_AUTO_TEST_CASE(lateness_is_measured_from_the_quickest_arrival_whatever_the_offset) {
  // The sender's clock ahead of, behind, and far from this node's (wrapping the difference).
  for (uint64_t offset : {uint64_t{0}, uint64_t{5'000'000}, uint64_t(-7'000'000), uint64_t(1) << 63}) {
    arrival_clock a;
    const uint64_t here = 1'000'000;  // this node's clock at the first call
    auto sent_at = [&](uint64_t t) { return t + offset; };
    BOOST_CHECK_EQUAL(a.late_ms(sent_at(here - 2), here), 0u);  // the first call: never late
    // Delivered in 2, 1 (the quickest), 3 ms.
    BOOST_CHECK_EQUAL(a.late_ms(sent_at(here + 100 - 1), here + 100), 0u);
    BOOST_CHECK_EQUAL(a.late_ms(sent_at(here + 200 - 3), here + 200), 2u);
    // Held 3 s (this node stopped, or a cut): 3 s and 1 ms later than the quickest.
    BOOST_CHECK_EQUAL(a.late_ms(sent_at(here + 300), here + 3301), 3000u);
    // The calls sent after it come as quickly as before.
    BOOST_CHECK_EQUAL(a.late_ms(sent_at(here + 3400), here + 3401), 0u);
  }
}

BOOST_AUTO_TEST_CASE(a_stop_longer_than_a_bucket_keeps_the_baseline_from_before_it) {
  arrival_clock a;
  uint64_t t = 50'000;
  for (int i = 0; i < 400; ++i, t += 100)  // 40 s of calls delivered in 1 ms
    BOOST_CHECK_EQUAL(a.late_ms(t - 1, t), 0u);
  // Stopped 45 s: the calls sent meanwhile are read at once on waking (the bucket turns over).
  const uint64_t woke = t + 45'000;
  const uint64_t first = a.late_ms(t, woke);
  BOOST_CHECK_GE(first, 44'990u);  // (less the drift allowance: 100 ppm of ~75 s)
  BOOST_CHECK_LE(first, 45'000u);
  BOOST_CHECK_GE(a.late_ms(t + 20'000, woke + 1), 24'990u);
  BOOST_CHECK_EQUAL(a.late_ms(woke, woke + 1), 0u);  // sent after the wake: as quick as ever
  // Two turns later, a call held 2 s is as late as ever.
  BOOST_CHECK_EQUAL(a.late_ms(woke + 31'000, woke + 31'001), 0u);
  BOOST_CHECK_EQUAL(a.late_ms(woke + 62'000, woke + 62'001), 0u);
  const uint64_t held = a.late_ms(woke + 62'100, woke + 64'101);
  BOOST_CHECK_GE(held, 1'990u);
  BOOST_CHECK_LE(held, 2'000u);
}

BOOST_AUTO_TEST_CASE(clocks_that_drift_apart_do_not_make_calls_late) {
  // The sender's clock runs 100 ppm slow: each call seems 0.1 ms later per second than the
  // last. Over a day of calls every 10 s, none is a millisecond late beyond the allowance.
  arrival_clock slow, fast;
  uint64_t most = 0;
  for (uint64_t t = 0; t <= 86'400'000; t += 10'000) {
    most = std::max(most, slow.late_ms(1'000'000 + t - t / 10'000, 2'000'000 + t + 1));
    BOOST_CHECK_EQUAL(fast.late_ms(1'000'000 + t + t / 10'000, 2'000'000 + t + 1), 0u);
  }
  BOOST_CHECK_LE(most, 1u);
  // Idle for 10 hours: the baseline is that old, and so is its allowance (3.6 s at 100 ppm).
  arrival_clock idle;
  idle.late_ms(0, 100);
  BOOST_CHECK_EQUAL(idle.late_ms(36'000'000 - 3'000, 36'000'100), 0u);
}

BOOST_AUTO_TEST_CASE(calls_are_refused_past_the_senders_timeout) {
  BOOST_CHECK(!refuse_late(1000, 1000, false, 15));
  BOOST_CHECK(refuse_late(1001, 1000, false, 15));
  BOOST_CHECK(!refuse_late(1'000'000, 0, false, 15));  // not said: an older node, a tool
  // Held back by this node's own replies: the sender saw it at work, and waits 15 timeouts.
  BOOST_CHECK(!refuse_late(14'000, 1000, true, 15));
  BOOST_CHECK(!refuse_late(15'000, 1000, true, 15));
  BOOST_CHECK(refuse_late(15'001, 1000, true, 15));
}

// What a call that is run still has of its sender's wait: what a call placing its ops again
// on another member may take (storage::op::answer_by_ms).
BOOST_AUTO_TEST_CASE(a_call_that_runs_keeps_what_is_left_of_its_senders_wait) {
  BOOST_CHECK_EQUAL(budget_left(0, 1000, false, 15), 1000u);
  BOOST_CHECK_EQUAL(budget_left(400, 1000, false, 15), 600u);
  BOOST_CHECK_EQUAL(budget_left(1000, 1000, false, 15), 1u);  // not refused: at least 1 ms
  BOOST_CHECK_EQUAL(budget_left(400, 1000, true, 15), 14'600u);
  BOOST_CHECK_EQUAL(budget_left(400, 0, false, 15), 0u);  // not said: no bound
  BOOST_CHECK_EQUAL(answer_deadline(5000, 400, 1000, false, 15), 5600u);  // (as a time)
  BOOST_CHECK_EQUAL(answer_deadline(5000, 400, 0, false, 15), 0u);
}

BOOST_AUTO_TEST_SUITE_END()
