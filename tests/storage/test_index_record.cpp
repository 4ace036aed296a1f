// item_index against a reference map (collisions, wrap-around, deletion, growth) and the
// record encoding / CRC-32C.
#include "storage/index.hpp"
#include "storage/record.hpp"

#include <boost/test/unit_test.hpp>
#include <algorithm>

#include <random>
#include <string>
#include <unordered_map>

using namespace bifrost::storage;

namespace {

/// Finds the entry for item `id` (stored in `atime`, unique per item).
size_t find_id(const item_index& idx, uint32_t hash, uint32_t id) {
  return idx.find(hash, [&](const item_index::entry& e) { return e.atime == id; });
}

void check_against(const item_index& idx, const std::unordered_map<uint32_t, uint32_t>& ref) {
  BOOST_REQUIRE_EQUAL(idx.size(), ref.size());
  for (const auto& [id, hash] : ref) {
    const size_t pos = find_id(idx, hash, id);
    BOOST_REQUIRE(pos != item_index::npos);
    BOOST_REQUIRE_EQUAL(idx.at(pos).offset(), uint64_t(id) * 8);
  }
}

} // namespace

BOOST_AUTO_TEST_SUITE(storage_index)

BOOST_AUTO_TEST_CASE(random_ops_match_reference) {
  for (const uint32_t hash_space : {7u, 1000u, 0u}) {  // 0: full 32-bit hashes
    std::mt19937 rng(hash_space + 1);
    item_index idx(16);
    std::unordered_map<uint32_t, uint32_t> ref;  // id -> hash
    uint32_t next_id = 1;
    const int steps = hash_space == 7 ? 8000 : 60000;  // 7 hashes: every op walks a long run
    for (int step = 0; step < steps; ++step) {
      const bool insert = ref.size() < 50 || rng() % 100 < 55;
      if (insert) {
        const uint32_t id = next_id++;
        // Small hash spaces force long collision chains; high bits decide the home slot.
        const uint32_t hash = hash_space ? (rng() % hash_space) * (0xFFFFFFFFu / hash_space)
                                         : uint32_t(rng());
        idx.reserve_one();
        item_index::entry e;
        e.hash = hash;
        e.set_location(id % 1000, uint64_t(id) * 8);
        e.atime = id;
        idx.insert(e);
        ref.emplace(id, hash);
      } else {
        auto it = ref.begin();
        std::advance(it, rng() % ref.size());
        const size_t pos = find_id(idx, it->second, it->first);
        BOOST_REQUIRE(pos != item_index::npos);
        idx.erase(pos);
        ref.erase(it);
      }
      if (step % 2000 == 0) check_against(idx, ref);
    }
    check_against(idx, ref);
    BOOST_CHECK_LE(idx.size() * 5, idx.capacity() * 4);  // load stays <= 80%
  }
}

// A scan paused at a cursor: an erase that moves an entry it has not visited to a slot before
// the cursor lowers the cursor to it (two erasures could leave a gap a step back to the start
// of the run would stop at: the entry at slot 10 ends at 5 with 6 empty).
BOOST_AUTO_TEST_CASE(a_watched_cursor_follows_entries_an_erase_moves_behind_it) {
  item_index idx(16);
  auto with_home = [](uint32_t home, uint32_t tag) {
    item_index::entry e;
    e.hash = (home << 28) | tag;  // home slot = hash * 16 >> 32
    e.set_location(0, 0);
    return e;
  };
  for (uint32_t h = 5; h <= 9; ++h)
    BOOST_REQUIRE_EQUAL(idx.insert(with_home(h, 0)), h);
  const auto x = with_home(5, 1);
  BOOST_REQUIRE_EQUAL(idx.insert(x), 10u);  // its home and the slots after it are taken
  size_t cursor = 10;                          // slots 0..9 visited
  idx.watch(&cursor);
  idx.erase(5);  // the entry of home 5 goes: x moves back into slot 5
  BOOST_CHECK_EQUAL(idx.at(5).hash, x.hash);
  BOOST_CHECK_EQUAL(cursor, 5u);
  idx.erase(6);  // slot 6 empties; x stays at its home
  BOOST_CHECK_EQUAL(idx.at(5).hash, x.hash);
  BOOST_CHECK_EQUAL(cursor, 5u);
  // Moves that stay at or after the cursor leave it.
  cursor = 7;
  BOOST_REQUIRE_EQUAL(idx.insert(with_home(8, 2)), 10u);
  idx.erase(8);  // slot 9's entry stays (home 9); slot 10's (home 8) moves to 8
  BOOST_CHECK_EQUAL(cursor, 7u);
  idx.watch(nullptr);
}

BOOST_AUTO_TEST_CASE(entry_bits_are_independent) {
  item_index::entry e;
  e.set_location(41, item_index::k_max_offset);
  e.set_fetched(true);
  e.set_token(true);
  BOOST_CHECK_EQUAL(e.slot(), 41u);
  BOOST_CHECK_EQUAL(e.offset(), item_index::k_max_offset);
  BOOST_CHECK(e.fetched() && e.token());
  e.set_fetched(false);
  BOOST_CHECK(!e.fetched() && e.token());
  e.set_location(3, 4096);
  BOOST_CHECK_EQUAL(e.offset(), 4096u);
  BOOST_CHECK(e.token());
  BOOST_CHECK_EQUAL(sizeof(item_index::entry), 16u);
}

BOOST_AUTO_TEST_CASE(crc32c_long_buffers_match_bytewise) {
  // Long buffers go through parallel lanes that are combined; small pieces do not. Fed in
  // pieces of at most 700 bytes, the CRC must be the same as in one shot, at every length
  // around the lane block sizes (3 x 256, 3 x 4096).
  std::string buf(40000, '\0');
  uint32_t x = 0x9E3779B9u;
  for (auto& c : buf) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = char(x);
  }
  for (size_t len : {767u, 768u, 769u, 1535u, 1536u, 12287u, 12288u, 12289u, 16384u, 16447u,
                     24576u, 25000u, 40000u}) {
    uint32_t pieces = 0x12345678u;
    for (size_t off = 0; off < len;) {
      const size_t n = std::min<size_t>(len - off, 1 + (off * 7919) % 700);
      pieces = crc32c(pieces, buf.data() + off, n);
      off += n;
    }
    BOOST_CHECK_EQUAL(crc32c(0x12345678u, buf.data(), len), pieces);
  }
}

BOOST_AUTO_TEST_CASE(crc32c_check_value) {
  const std::string s = "123456789";
  BOOST_CHECK_EQUAL(crc32c(0, s.data(), s.size()), 0xE3069283u);
  // incremental == one shot, at every split point
  const std::string long_text(1000, 'q');
  const uint32_t whole = crc32c(0, long_text.data(), long_text.size());
  for (size_t split : {0, 1, 7, 8, 9, 500, 999, 1000})
    BOOST_CHECK_EQUAL(crc32c(crc32c(0, long_text.data(), split), long_text.data() + split,
                             long_text.size() - split),
                      whole);
}

BOOST_AUTO_TEST_CASE(record_roundtrip_and_checksum_coverage) {
  std::string buf(record_size(3, 6), '\x55');
  write_record(buf.data(), "key", "value!", 7, 99, 12345, k_state_stale);
  const auto* h = reinterpret_cast<const record_header*>(buf.data());
  BOOST_CHECK_EQUAL(h->magic, k_record_magic);
  BOOST_CHECK_EQUAL(h->key_view(), "key");
  BOOST_CHECK_EQUAL(h->value_view(), "value!");
  BOOST_CHECK_EQUAL(h->flags, 7u);
  BOOST_CHECK_EQUAL(h->exptime, 99u);
  BOOST_CHECK_EQUAL(h->cas, 12345u);
  BOOST_CHECK(h->stale());
  BOOST_CHECK_EQUAL(buf.size() % 8, 0u);
  BOOST_CHECK_EQUAL(buf.back(), '\0');  // padding zeroed
  auto sum = [&] {
    return record_checksum(h->key_len, h->value_len, h->flags, h->cas, h->key_view(),
                           h->value_view());
  };
  BOOST_CHECK_EQUAL(sum(), h->checksum);
  // mutable fields are not covered; immutable ones are
  auto* m = reinterpret_cast<record_header*>(buf.data());
  m->exptime = 5;
  m->state = k_state_dead;
  BOOST_CHECK_EQUAL(sum(), h->checksum);
  m->flags = 8;
  BOOST_CHECK(sum() != h->checksum);
  m->flags = 7;
  buf[sizeof(record_header) + 4] ^= 1;  // a value byte
  BOOST_CHECK(sum() != h->checksum);
}

BOOST_AUTO_TEST_SUITE_END()
