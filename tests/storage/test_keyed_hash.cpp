#include "storage/keyed_hash.hpp"

#include <boost/test/unit_test.hpp>

#include <set>
#include <string>

using namespace bifrost::storage;

BOOST_AUTO_TEST_SUITE(keyed_hash)

namespace {
hash_key reference_key() {
  // The paper's key: bytes 00 01 .. 0f, read little-endian.
  return hash_key{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
}
std::string reference_message(size_t n) {
  std::string m;
  for (size_t i = 0; i < n; ++i) m.push_back(static_cast<char>(i));
  return m;
}
} // namespace

BOOST_AUTO_TEST_CASE(siphash_2_4_matches_the_reference_vectors) {
  // Appendix A of "SipHash: a fast short-input PRF" (15-byte message), and the first and
  // eighth/ninth entries of the reference implementation's vectors.h (lengths 0, 7, 8: the
  // boundaries of the tail handling).
  const hash_key k = reference_key();
  BOOST_CHECK_EQUAL((siphash<2, 4>(reference_message(15), k)), 0xa129ca6149be45e5ull);
  BOOST_CHECK_EQUAL((siphash<2, 4>(reference_message(0), k)), 0x726fdb47dd0e0e31ull);
  BOOST_CHECK_EQUAL((siphash<2, 4>(reference_message(7), k)), 0xab0200f58b01d137ull);
  BOOST_CHECK_EQUAL((siphash<2, 4>(reference_message(8), k)), 0x93f5f5799a932462ull);
}

BOOST_AUTO_TEST_CASE(the_key_changes_every_hash) {
  const hash_key a = reference_key();
  hash_key b = a;
  b.k1 ^= 1;
  int same = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "key:" + std::to_string(i);
    same += siphash<1, 3>(key, a) == siphash<1, 3>(key, b);
  }
  BOOST_CHECK_EQUAL(same, 0);
}

BOOST_AUTO_TEST_CASE(random_keys_differ) {
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (int i = 0; i < 64; ++i) {
    const hash_key k = hash_key::random();
    seen.emplace(k.k0, k.k1);
  }
  BOOST_CHECK_EQUAL(seen.size(), 64u);
}

BOOST_AUTO_TEST_CASE(every_length_and_byte_matters) {
  // Each length 0..40 and each single-bit change of a 40-byte key gives a distinct hash.
  const hash_key k = reference_key();
  std::set<uint64_t> seen;
  std::string m = reference_message(40);
  for (size_t n = 0; n <= m.size(); ++n) seen.insert(siphash<1, 3>(std::string_view(m).substr(0, n), k));
  for (size_t i = 0; i < m.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      std::string v = m;
      v[i] = static_cast<char>(v[i] ^ (1 << bit));
      seen.insert(siphash<1, 3>(v, k));
    }
  BOOST_CHECK_EQUAL(seen.size(), 41u + 40u * 8u);
}

BOOST_AUTO_TEST_SUITE_END()
