#include "storage/keyed_hash.hpp"

#include <sys/random.h>

#include <chrono>
#include <cstring>

namespace bifrost::storage {

namespace {

inline uint64_t rotl(uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

struct sip_state {
  uint64_t v0, v1, v2, v3;
  void round() noexcept {
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
  }
};

inline uint64_t load_le64(const unsigned char* p) noexcept {
  uint64_t v;
  std::memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

uint64_t mix64(uint64_t h) noexcept {  // splitmix64's finaliser
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

} // namespace

hash_key hash_key::random() noexcept {
  hash_key k;
  uint64_t words[2] = {0, 0};
  if (getrandom(words, sizeof words, GRND_NONBLOCK) == ssize_t(sizeof words)) {
    k.k0 = words[0];
    k.k1 = words[1];
    return k;
  }
  // No entropy yet (early boot): still differs per process and per call.
  static int anchor;
  const auto t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  k.k0 = mix64(t ^ reinterpret_cast<uintptr_t>(&anchor));
  k.k1 = mix64(k.k0 ^ reinterpret_cast<uintptr_t>(&k));
  return k;
}

template <int C, int D>
uint64_t siphash(std::string_view data, const hash_key& key) noexcept {
  sip_state s{key.k0 ^ 0x736f6d6570736575ull, key.k1 ^ 0x646f72616e646f6dull,
              key.k0 ^ 0x6c7967656e657261ull, key.k1 ^ 0x7465646279746573ull};
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  const size_t whole = n & ~size_t(7);
  for (size_t i = 0; i < whole; i += 8) {
    const uint64_t m = load_le64(p + i);
    s.v3 ^= m;
    for (int r = 0; r < C; ++r) s.round();
    s.v0 ^= m;
  }
  uint64_t last = uint64_t(n & 0xff) << 56;
  for (size_t i = whole; i < n; ++i) last |= uint64_t(p[i]) << (8 * (i - whole));
  s.v3 ^= last;
  for (int r = 0; r < C; ++r) s.round();
  s.v0 ^= last;
  s.v2 ^= 0xff;
  for (int r = 0; r < D; ++r) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

template uint64_t siphash<1, 3>(std::string_view, const hash_key&) noexcept;
template uint64_t siphash<2, 4>(std::string_view, const hash_key&) noexcept;

} // namespace bifrost::storage
