// Item records: the on-segment (and on-disk) format of one item.
//
// A record is a 32-byte header, then the key bytes, then the value bytes, padded with zero
// bytes to a multiple of 8 (so every record, and every header, starts 8-aligned):
//
//   offset size field      notes
//   0      4    magic      k_record_magic; written LAST (release store) so a torn write has 0
//   4      1    version    k_record_version (1)
//   5      1    state      MUTABLE, not checksummed: bit0 dead (overwritten / deleted /
//                          flushed / evicted), bit1 stale (meta invalidate; set when written)
//   6      1    key_len    1..250
//   7      1    pad        0
//   8      4    value_len  bytes of value
//   12     4    flags      client flags
//   16     4    exptime    MUTABLE, not checksummed: absolute unix seconds, 0 = never (touch)
//   20     4    checksum   CRC-32C over key_len, value_len, flags, cas (little-endian, in that
//                          order: 1 + 4 + 4 + 8 bytes), then the key bytes, then the value bytes
//   24     8    cas
//   32     key_len bytes of key, value_len bytes of value, zero padding to 8
//
// Host byte order (little-endian on every platform we build for). A record is written once;
// afterwards only `state` and `exptime` change in place. Value bytes never change while the
// segment exists, which is what lets a pinned_slice keep reading them (copy-on-write).
//
// Recovery (shard::open with a data directory) trusts a record only if magic, version, lengths
// (within the file) and checksum all agree; see shard.cpp `recover_segment`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace bifrost::storage {

inline constexpr uint32_t k_record_magic = 0xB1F7C0DEu;
inline constexpr uint8_t k_record_version = 1;
inline constexpr uint8_t k_state_dead = 0x01;
inline constexpr uint8_t k_state_stale = 0x02;
/// meta W: the win token was handed out (mutable, as the dead mark: it survives a restart).
inline constexpr uint8_t k_state_token = 0x04;
inline constexpr size_t k_max_key_len = 250;

struct record_header {
  uint32_t magic;
  uint8_t version;
  uint8_t state;
  uint8_t key_len;
  uint8_t pad;
  uint32_t value_len;
  uint32_t flags;
  uint32_t exptime;
  uint32_t checksum;
  uint64_t cas;

  const char* key() const noexcept { return reinterpret_cast<const char*>(this + 1); }
  const char* value() const noexcept { return key() + key_len; }
  std::string_view key_view() const noexcept { return {key(), key_len}; }
  std::string_view value_view() const noexcept { return {value(), value_len}; }
  bool dead() const noexcept { return (state & k_state_dead) != 0; }
  bool stale() const noexcept { return (state & k_state_stale) != 0; }
  bool token() const noexcept { return (state & k_state_token) != 0; }
};
static_assert(sizeof(record_header) == 32, "record header layout is part of the file format");
static_assert(offsetof(record_header, cas) == 24, "record header layout is part of the file format");

/// Header + key + value, without padding (what the `bytes` stat counts).
inline constexpr uint64_t record_bytes(uint64_t key_len, uint64_t value_len) noexcept {
  return sizeof(record_header) + key_len + value_len;
}
/// Bytes the record occupies in its segment (padded to 8).
inline constexpr uint64_t record_size(uint64_t key_len, uint64_t value_len) noexcept {
  return (record_bytes(key_len, value_len) + 7) & ~uint64_t(7);
}

/// CRC-32C (Castagnoli), continuing from `crc` (start with 0). Uses SSE4.2 when available.
uint32_t crc32c(uint32_t crc, const void* data, size_t len) noexcept;

/// The checksum stored in a record header (see the layout above).
uint32_t record_checksum(uint8_t key_len, uint32_t value_len, uint32_t flags, uint64_t cas,
                         std::string_view key, std::string_view value) noexcept;

/// Writes a complete record at `dst` (which must have record_size() bytes, zero-filled or not):
/// header with magic 0, key, value, padding, checksum, and finally the magic (release store).
void write_record(char* dst, std::string_view key, std::string_view value, uint32_t flags,
                  uint32_t exptime, uint64_t cas, uint8_t state) noexcept;

/// Copies an existing valid record (as written by write_record) to `dst`, magic last.
void copy_record(char* dst, const record_header* src) noexcept;

} // namespace bifrost::storage
