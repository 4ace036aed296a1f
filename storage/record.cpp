// Record encoding and CRC-32C. Format: storage/record.hpp.
#include "storage/record.hpp"

#include <array>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace bifrost::storage {
namespace {

constexpr uint32_t k_poly = 0x82F63B78u;  // CRC-32C, reflected

struct crc_table {
  std::array<std::array<uint32_t, 256>, 8> t{};
  constexpr crc_table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ k_poly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};
constexpr crc_table k_table{};

uint32_t crc32c_soft(uint32_t crc, const unsigned char* p, size_t n) noexcept {
  const auto& t = k_table.t;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= crc;
    crc = t[7][w & 0xFF] ^ t[6][(w >> 8) & 0xFF] ^ t[5][(w >> 16) & 0xFF] ^
          t[4][(w >> 24) & 0xFF] ^ t[3][(w >> 32) & 0xFF] ^ t[2][(w >> 40) & 0xFF] ^
          t[1][(w >> 48) & 0xFF] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return crc;
}

#if defined(__x86_64__)
/// a * b modulo the CRC-32C polynomial, in the reflected bit order of the CRC register.
constexpr uint32_t mult_mod_p(uint32_t a, uint32_t b) noexcept {
  uint32_t m = 1u << 31;
  uint32_t p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ k_poly : b >> 1;
  }
  return p;
}

/// x^(8 * n) modulo the polynomial: multiplying a CRC register by it appends n zero bytes.
constexpr uint32_t x_pow_8n(uint64_t n) noexcept {
  uint32_t result = 1u << 31;  // x^0
  uint32_t sq = 1u << 23;      // x^8
  while (n) {
    if (n & 1) result = mult_mod_p(sq, result);
    sq = mult_mod_p(sq, sq);
    n >>= 1;
  }
  return result;
}

/// Three lanes over consecutive blocks of `lane` bytes run in parallel (the crc32 instruction
/// has a latency of 3 cycles and a throughput of 1), then are combined: crc(A B C) =
/// ((crc(A) * x^8L) ^ crc0(B)) * x^8L ^ crc0(C), with crc0 started from a zero register.
template <size_t lane>
__attribute__((target("sse4.2"))) uint64_t crc32c_3lanes(uint64_t c, const unsigned char*& p,
                                                         size_t& n) noexcept {
  constexpr uint32_t k_shift = x_pow_8n(lane);
  while (n >= 3 * lane) {
    uint64_t b = 0, d = 0;
    for (size_t i = 0; i < lane; i += 8) {
      uint64_t w0, w1, w2;
      std::memcpy(&w0, p + i, 8);
      std::memcpy(&w1, p + lane + i, 8);
      std::memcpy(&w2, p + 2 * lane + i, 8);
      c = _mm_crc32_u64(c, w0);
      b = _mm_crc32_u64(b, w1);
      d = _mm_crc32_u64(d, w2);
    }
    c = mult_mod_p(k_shift, mult_mod_p(k_shift, uint32_t(c)) ^ uint32_t(b)) ^ uint32_t(d);
    p += 3 * lane;
    n -= 3 * lane;
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const unsigned char* p,
                                                     size_t n) noexcept {
  uint64_t c = crc;
  c = crc32c_3lanes<4096>(c, p, n);
  c = crc32c_3lanes<256>(c, p, n);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
const bool k_have_sse42 = __builtin_cpu_supports("sse4.2");
#endif

} // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t len) noexcept {
  auto p = static_cast<const unsigned char*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  if (k_have_sse42) return ~crc32c_hw(crc, p, len);
#endif
  return ~crc32c_soft(crc, p, len);
}

uint32_t record_checksum(uint8_t key_len, uint32_t value_len, uint32_t flags, uint64_t cas,
                         std::string_view key, std::string_view value) noexcept {
  unsigned char fixed[17];
  fixed[0] = key_len;
  std::memcpy(fixed + 1, &value_len, 4);
  std::memcpy(fixed + 5, &flags, 4);
  std::memcpy(fixed + 9, &cas, 8);
  uint32_t c = crc32c(0, fixed, sizeof fixed);
  c = crc32c(c, key.data(), key.size());
  return crc32c(c, value.data(), value.size());
}

namespace {
void publish_magic(char* dst) noexcept {
  // Everything else of the record is in place; the magic makes it valid. A release store keeps
  // the compiler (and weakly ordered CPUs) from making the magic visible before the rest.
  __atomic_store_n(reinterpret_cast<uint32_t*>(dst), k_record_magic, __ATOMIC_RELEASE);
}
} // namespace

void write_record(char* dst, std::string_view key, std::string_view value, uint32_t flags,
                  uint32_t exptime, uint64_t cas, uint8_t state) noexcept {
  record_header h{};
  h.magic = 0;
  h.version = k_record_version;
  h.state = state;
  h.key_len = static_cast<uint8_t>(key.size());
  h.value_len = static_cast<uint32_t>(value.size());
  h.flags = flags;
  h.exptime = exptime;
  h.cas = cas;
  h.checksum = record_checksum(h.key_len, h.value_len, flags, cas, key, value);
  std::memcpy(dst, &h, sizeof h);
  char* p = dst + sizeof h;
  if (!key.empty()) std::memcpy(p, key.data(), key.size());
  p += key.size();
  if (!value.empty()) std::memcpy(p, value.data(), value.size());
  p += value.size();
  const uint64_t used = record_bytes(key.size(), value.size());
  const uint64_t padded = record_size(key.size(), value.size());
  if (padded > used) std::memset(p, 0, padded - used);
  publish_magic(dst);
}

void copy_record(char* dst, const record_header* src) noexcept {
  const uint64_t padded = record_size(src->key_len, src->value_len);
  std::memset(dst, 0, 4);
  std::memcpy(dst + 4, reinterpret_cast<const char*>(src) + 4, padded - 4);
  publish_magic(dst);
}

} // namespace bifrost::storage
