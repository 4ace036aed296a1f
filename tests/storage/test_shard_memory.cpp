// Segments, pins and the memory limit: copy-on-write under in-flight pins, eviction, large
// values, and the per-item memory cost.
#include "storage_test_util.hpp"

#include "storage/record.hpp"

#include <cstdio>
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <vector>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace bifrost::storage;
using namespace bifrost::storage::test;

namespace {

shard_config tiny_config(uint64_t limit) {
  shard_config c;
  c.segment_size = 64 << 10;
  c.memory_limit = limit;
  c.max_item_size = 1 << 20;
  return c;
}

std::string read_via_pread(const pinned_slice& s) {
  std::string buf(s.size(), '\0');
  const ssize_t n = ::pread(s.fd(), buf.data(), buf.size(), static_cast<off_t>(s.offset()));
  BOOST_REQUIRE_EQUAL(n, static_cast<ssize_t>(buf.size()));
  return buf;
}

std::string read_via_sendfile(const pinned_slice& s) {
  int sv[2];
  BOOST_REQUIRE_EQUAL(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  off_t off = static_cast<off_t>(s.offset());
  const ssize_t sent = ::sendfile(sv[0], s.fd(), &off, s.size());
  BOOST_REQUIRE_EQUAL(sent, static_cast<ssize_t>(s.size()));
  std::string buf(s.size(), '\0');
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = ::recv(sv[1], buf.data() + got, buf.size() - got, 0);
    BOOST_REQUIRE(n > 0);
    got += size_t(n);
  }
  ::close(sv[0]);
  ::close(sv[1]);
  return buf;
}

uint64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * uint64_t(::sysconf(_SC_PAGESIZE));
}

} // namespace

BOOST_AUTO_TEST_SUITE(storage_memory)

BOOST_AUTO_TEST_CASE(copy_on_write_under_pin) {
  fake_clock clk;
  const uint64_t limit = 256 << 10;  // four 64 KiB segments
  auto s = open_shard(tiny_config(limit), clk);
  const std::string old_value(1000, 'A');
  do_set(*s, "pinned", old_value);
  result held = do_get(*s, "pinned");
  BOOST_REQUIRE_EQUAL(held.st, status::hit);
  const pinned_slice& slice = held.value;

  // Overwrite and delete: the slice still reads the old bytes, through the mapping and the fd.
  do_set(*s, "pinned", std::string(1000, 'B'));
  BOOST_CHECK_EQUAL(value_of(*s, "pinned"), std::string(1000, 'B'));
  do_delete(*s, "pinned");
  BOOST_CHECK_EQUAL(value_of(*s, "pinned"), "<miss>");
  BOOST_CHECK(slice.view() == old_value);
  BOOST_CHECK(read_via_pread(slice) == old_value);
  BOOST_CHECK(read_via_sendfile(slice) == old_value);

  // Force eviction of the pinned segment: the limit holds at every step, counting the pin.
  for (int i = 0; i < 1200; ++i) {
    do_set(*s, "fill" + std::to_string(i), std::string(1000, char('a' + i % 26)));
    BOOST_REQUIRE_LE(s->stats().segment_bytes, limit);
  }
  const shard_stats st = s->stats();
  BOOST_CHECK(st.evictions > 0);
  BOOST_CHECK(slice.view() == old_value);
  BOOST_CHECK(read_via_pread(slice) == old_value);
  BOOST_CHECK(read_via_sendfile(slice) == old_value);
  const uint64_t with_pin = st.segment_bytes;
  const uint64_t segments_with_pin = st.segments;

  held = result{};  // the last pin drops: the evicted segment's memory returns
  BOOST_CHECK_EQUAL(s->stats().segment_bytes, with_pin - (64 << 10));
  BOOST_CHECK_EQUAL(s->stats().segments, segments_with_pin - 1);
}

BOOST_AUTO_TEST_CASE(pinned_slice_outlives_shard) {
  fake_clock clk;
  pinned_slice keep;
  {
    auto s = open_shard(tiny_config(1 << 20), clk);
    do_set(*s, "k", "survives the shard");
    keep = do_get(*s, "k").value;
  }
  BOOST_CHECK_EQUAL(keep.view(), "survives the shard");
  BOOST_CHECK_EQUAL(read_via_pread(keep), "survives the shard");
}

BOOST_AUTO_TEST_CASE(pins_dropped_on_other_threads) {
  fake_clock clk;
  const uint64_t limit = 256 << 10;
  auto s = open_shard(tiny_config(limit), clk);
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (int round = 0; round < 8; ++round) {
    const std::string expect(900, char('A' + round));
    // With every segment pinned the store may fail (no_memory); pin only what was stored.
    if (do_set(*s, "p" + std::to_string(round), expect).st != status::stored) continue;
    result r = do_get(*s, "p" + std::to_string(round));
    BOOST_REQUIRE_EQUAL(r.st, status::hit);
    pinned_slice slice = std::move(r.value);
    readers.emplace_back([slice = std::move(slice), expect, &bad]() mutable {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (slice.view() != expect) ++bad;
      slice = pinned_slice{};  // dropped on this thread
    });
    for (int i = 0; i < 150; ++i) {  // evicts older (possibly pinned) segments meanwhile
      do_set(*s, "f" + std::to_string(round) + "-" + std::to_string(i), std::string(1000, 'f'));
      BOOST_REQUIRE_LE(s->stats().segment_bytes, limit);
    }
  }
  for (auto& t : readers) t.join();
  BOOST_CHECK(readers.size() >= 2u);
  BOOST_CHECK_EQUAL(bad.load(), 0);
  // all pins gone: only the shard's own segments remain
  do_set(*s, "last", "x");
  BOOST_CHECK_LE(s->stats().segment_bytes, limit);
  BOOST_CHECK_LE(s->stats().segments, limit / (64 << 10));
}

BOOST_AUTO_TEST_CASE(eviction_under_memory_limit) {
  fake_clock clk;
  const uint64_t limit = 1 << 20;
  auto s = open_shard(tiny_config(limit), clk);
  const int n = 4 * 1100;  // ~4x the limit of 1000-byte values
  for (int i = 0; i < n; ++i) {
    BOOST_REQUIRE_EQUAL(do_set(*s, "k" + std::to_string(i), std::string(1000, 'v')).st,
                        status::stored);
    BOOST_REQUIRE_LE(s->stats().segment_bytes, limit);
  }
  const shard_stats st = s->stats();
  BOOST_CHECK(st.evictions > 0);
  BOOST_CHECK_EQUAL(st.evicted_unfetched, st.evictions);
  BOOST_CHECK_EQUAL(st.curr_items + st.evictions, uint64_t(n));
  BOOST_CHECK_LE(st.segments, limit / (64 << 10));
  // recent keys present, the oldest gone
  for (int i = n - 200; i < n; ++i)
    BOOST_REQUIRE_EQUAL(value_of(*s, "k" + std::to_string(i)), std::string(1000, 'v'));
  BOOST_CHECK_EQUAL(value_of(*s, "k0"), "<miss>");
  // the limit is used, not wasted: most of the memory holds live items
  BOOST_CHECK(st.bytes > limit / 2);
}

BOOST_AUTO_TEST_CASE(second_chance_keeps_read_items) {
  fake_clock clk;
  auto s = open_shard(tiny_config(1 << 20), clk);
  do_set(*s, "hot", "hot value");
  do_set(*s, "cold", "cold value");
  for (int i = 0; i < 4400; ++i) {
    do_set(*s, "k" + std::to_string(i), std::string(1000, 'v'));
    if (i % 50 == 0) BOOST_REQUIRE_EQUAL(value_of(*s, "hot"), "hot value");
  }
  BOOST_CHECK_EQUAL(value_of(*s, "hot"), "hot value");
  BOOST_CHECK_EQUAL(value_of(*s, "cold"), "<miss>");
}

BOOST_AUTO_TEST_CASE(no_memory_when_pins_hold_the_limit) {
  fake_clock clk;
  const uint64_t limit = 128 << 10;  // the minimum: two segments
  auto s = open_shard(tiny_config(limit), clk);
  auto present = [&](const std::string& key) {  // a peek that does not count as a read
    op o;
    o.kind = op_kind::get;
    o.key = key;
    o.get_bump = false;
    o.get_value = false;
    return s->execute(o).st == status::hit;
  };
  do_set(*s, "a", std::string(1000, 'a'));
  result pin_a = do_get(*s, "a");
  // fill until "a"'s segment is evicted (it stays pinned); "a" gets one second chance
  for (int i = 0; i < 300; ++i) do_set(*s, "f" + std::to_string(i), std::string(1000, 'f'));
  BOOST_REQUIRE(!present("a"));
  BOOST_CHECK_LE(s->stats().segment_bytes, limit);
  do_set(*s, "b", std::string(1000, 'b'));
  result pin_b = do_get(*s, "b");
  // now the active segment is pinned too: the next new segment cannot fit
  status last = status::stored;
  for (int j = 0; j < 200 && last == status::stored; ++j)
    last = do_set(*s, "g" + std::to_string(j), std::string(1000, 'g')).st;
  BOOST_CHECK_EQUAL(last, status::no_memory);
  BOOST_CHECK_EQUAL(s->stats().store_no_memory, 1u);  // (memcached's stat of that name)
  BOOST_CHECK_LE(s->stats().segment_bytes, limit);
  BOOST_CHECK(pin_a.value.view() == std::string(1000, 'a'));
  BOOST_CHECK(pin_b.value.view() == std::string(1000, 'b'));
  pin_a = result{};
  pin_b = result{};
  BOOST_CHECK_EQUAL(do_set(*s, "after", "x").st, status::stored);
  BOOST_CHECK_EQUAL(value_of(*s, "after"), "x");
  BOOST_CHECK_EQUAL(s->stats().store_no_memory, 1u);
}

BOOST_AUTO_TEST_CASE(a_segment_sendfile_read_from_is_never_rewritten_in_place) {
  // Linux's sendfile queues references to the file's pages, not copies: a loopback receiver
  // that has not read yet, or a retransmission, reads them after sendfile returned and the
  // slice is gone. So a segment sendfile read from is freed, never reused or compacted.
  // A dup of its fd stands in for the kernel's page references here.
  fake_clock clk;
  const uint64_t limit = 256 << 10;  // four segments of 64 KiB
  for (bool spliced : {true, false}) {
    auto s = open_shard(tiny_config(limit), clk);
    const std::string sent(1000, 's');
    BOOST_REQUIRE_EQUAL(do_set(*s, "sent", sent).st, status::stored);
    for (int i = 0; i < 40; ++i)  // the rest of its segment
      do_set(*s, "fill" + std::to_string(i), std::string(1000, 'f'));
    int fd = -1;
    off_t off = 0;
    {
      result r = do_get(*s, "sent");
      BOOST_REQUIRE_EQUAL(r.st, status::hit);
      if (spliced) r.value.note_spliced();
      fd = ::dup(r.value.fd());
      off = static_cast<off_t>(r.value.offset());
      BOOST_REQUIRE_GE(fd, 0);
      BOOST_REQUIRE(read_via_pread(r.value) == sent);
    }  // the slice is gone
    // Overwrites and new keys: segments are evicted, reused and compacted many times over.
    for (int i = 0; i < 2000; ++i)
      do_set(*s, "k" + std::to_string(i % 300), std::string(1000 + i % 7, char('a' + i % 26)));
    std::string now(sent.size(), '\0');
    BOOST_REQUIRE_EQUAL(::pread(fd, now.data(), now.size(), off), ssize_t(now.size()));
    ::close(fd);
    if (spliced)
      BOOST_CHECK_MESSAGE(now == sent, "a segment sendfile read from was rewritten in place");
    else  // the control: without sendfile its space is reused (the test can see a rewrite)
      BOOST_CHECK_MESSAGE(now != sent, "the unspliced segment was not reused: the test proves nothing");
  }
}

BOOST_AUTO_TEST_CASE(overwrites_recycle_sparse_segments) {
  // Overwriting a small key set far below the limit reuses the space of dead records
  // (sparse segments are compacted in place) instead of taking new segments.
  fake_clock clk;
  const uint64_t limit = 16 << 20;
  auto s = open_shard(tiny_config(limit), clk);
  const int keys = 400;
  std::vector<std::string> latest(keys);
  std::vector<uint64_t> cas(keys);
  auto value = [](int k, int round) {
    std::string v(1000 + k % 7, char('a' + (k + round) % 26));
    v += std::to_string(round);
    return v;
  };
  for (int k = 0; k < keys; ++k) {
    latest[k] = value(k, 0);
    result r = do_set(*s, "k" + std::to_string(k), latest[k], 0, uint32_t(k));
    BOOST_REQUIRE_EQUAL(r.st, status::stored);
    cas[k] = r.cas;
  }
  // A value pinned before the churn: its segment must never be rewritten under the pin.
  result pinned = do_get(*s, "k0");
  const std::string pinned_bytes(pinned.value.view());
  uint32_t x = 12345;
  for (int i = 1; i <= 20000; ++i) {
    x = x * 1103515245u + 12345u;
    const int k = int((x >> 8) % keys);
    if (k == 0) continue;  // keep k0 (and its pinned segment) as it is
    latest[k] = value(k, i);
    result r = do_set(*s, "k" + std::to_string(k), latest[k], 0, uint32_t(k));
    BOOST_REQUIRE_EQUAL(r.st, status::stored);
    cas[k] = r.cas;
    if (i % 2500 == 0) {
      for (int j = 0; j < keys; ++j) {
        result g = do_get(*s, "k" + std::to_string(j));
        BOOST_REQUIRE_EQUAL(g.st, status::hit);
        BOOST_REQUIRE(g.value.view() == latest[j]);
        BOOST_REQUIRE_EQUAL(g.flags, uint32_t(j));
        BOOST_REQUIRE_EQUAL(g.cas, cas[j]);
      }
    }
  }
  const shard_stats st = s->stats();
  BOOST_TEST_MESSAGE("segment_bytes " << st.segment_bytes);
  // ~20 MB were written; the live data is ~410 KB (7 segments of 64 KiB). Releasing only
  // fully dead segments needs ~30 of them here (every key of a segment must be overwritten).
  BOOST_CHECK_LE(st.segment_bytes, uint64_t(16) * (64 << 10));
  BOOST_CHECK_EQUAL(st.evictions, 0u);
  BOOST_CHECK_EQUAL(st.curr_items, uint64_t(keys));
  BOOST_CHECK(pinned.value.view() == pinned_bytes);
  BOOST_CHECK(read_via_pread(pinned.value) == pinned_bytes);
}

BOOST_AUTO_TEST_CASE(value_larger_than_segment) {
  fake_clock clk;
  auto s = open_shard(tiny_config(4 << 20), clk);
  do_set(*s, "small", "x");
  const shard_stats before = s->stats();
  std::string big(200 << 10, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + i % 23);
  BOOST_REQUIRE_EQUAL(do_set(*s, "big", big).st, status::stored);
  result r = do_get(*s, "big");
  BOOST_REQUIRE_EQUAL(r.st, status::hit);
  BOOST_CHECK(r.value.view() == big);
  BOOST_CHECK(read_via_sendfile(r.value) == big);
  const shard_stats after = s->stats();
  BOOST_CHECK_EQUAL(after.segments, before.segments + 1);
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t dedicated = (record_size(3, big.size()) + page - 1) / page * page;
  BOOST_CHECK_EQUAL(after.segment_bytes, before.segment_bytes + dedicated);
  // overwritten: the dedicated segment is released once unpinned
  do_set(*s, "big", "now small");
  BOOST_CHECK_EQUAL(s->stats().segment_bytes, before.segment_bytes + dedicated);  // pinned
  r = result{};
  BOOST_CHECK_EQUAL(s->stats().segment_bytes, before.segment_bytes);
  BOOST_CHECK_EQUAL(value_of(*s, "big"), "now small");
  BOOST_CHECK_EQUAL(value_of(*s, "small"), "x");
}

BOOST_AUTO_TEST_CASE(max_size_values) {
  fake_clock clk;
  shard_config cfg;  // defaults: 1 MiB segments, 1 MiB max item, 64 MiB limit
  auto s = open_shard(cfg, clk);
  std::string max(cfg.max_item_size, 'm');
  max[12345] = 'X';
  BOOST_CHECK_EQUAL(do_set(*s, "max", max).st, status::stored);
  BOOST_CHECK(do_get(*s, "max").value.view() == max);
  BOOST_CHECK_EQUAL(do_set(*s, "over", max + "!").st, status::too_large);
  // many of them: eviction of dedicated segments keeps the limit
  for (int i = 0; i < 100; ++i) {
    BOOST_REQUIRE_EQUAL(do_set(*s, "max" + std::to_string(i), max).st, status::stored);
    BOOST_REQUIRE_LE(s->stats().segment_bytes, cfg.memory_limit);
  }
  BOOST_CHECK(do_get(*s, "max99").value.view() == max);
  BOOST_CHECK(s->stats().evictions > 0);
}

BOOST_AUTO_TEST_CASE(million_items_memory_vs_memcached) {
  fake_clock clk;
  shard_config cfg;
  cfg.memory_limit = 1ull << 30;
  auto s = open_shard(cfg, clk);
  const uint64_t rss0 = rss_bytes();
  const int n = 1000000;
  const std::string value(100, 'v');
  char key[32];
  for (int i = 0; i < n; ++i) {
    std::snprintf(key, sizeof key, "key:%08d", i);  // 12-byte keys
    op o;
    o.kind = op_kind::store;
    o.key = key;
    o.value = value;
    BOOST_REQUIRE(s->execute(o).st == status::stored);
  }
  const shard_stats st = s->stats();
  BOOST_REQUIRE_EQUAL(st.curr_items, uint64_t(n));
  const uint64_t rss1 = rss_bytes();
  const double ours = double(st.segment_bytes + st.index_bytes) / n;
  const double rss_per_item = double(rss1 - rss0) / n;

  // memcached 1.6: 48-byte item header (with CAS) + key + 1 + value + "\r\n", rounded up to
  // its slab class (96 * 1.25^k, 8-aligned), plus 8 bytes per hash bucket (2^20 buckets).
  const uint64_t mc_item = 48 + 12 + 1 + 100 + 2;
  uint64_t slab = 96;
  while (slab < mc_item) slab = (uint64_t(double(slab) * 1.25) + 7) & ~uint64_t(7);
  const double memcached = double(slab) + double(8ull << 20) / n;
  BOOST_TEST_MESSAGE("1M x 100 B: segments+index " << ours << " B/item (index "
                     << double(st.index_bytes) / n << " B/item), RSS growth " << rss_per_item
                     << " B/item; memcached ~" << memcached << " B/item (slab class " << slab
                     << ")");
  BOOST_CHECK_LE(ours, 1.1 * memcached);
  BOOST_CHECK_LE(double(st.index_bytes) / n, 30.0);
  BOOST_CHECK(value_of(*s, "key:00000000") == value);
  BOOST_CHECK(value_of(*s, "key:00999999") == value);
}

BOOST_AUTO_TEST_SUITE_END()
