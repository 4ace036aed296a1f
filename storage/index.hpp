// The item index: key -> record location, as a compact open-addressing hash table.
//
// Layout: one flat array of 16-byte entries, no per-item heap node:
//
//   uint32_t hash   high 32 bits of the key's 64-bit hash (home slot and tag)
//   uint32_t seg    shard segment slot + 1; 0 marks an empty entry
//   uint32_t loc    bits 0..29: record offset / 8 within the segment (segments up to 8 GiB)
//                   bit 30: fetched (read since stored)   bit 31: win token handed out
//   uint32_t atime  last access, unix seconds
//
// Keys are not stored here: a lookup compares the 32-bit hash first and only then reads the
// record's key in its segment (the caller's `eq` callback). Flags, CAS, expiry and the value
// length live in the record header. The home slot is fastrange(hash, capacity), so capacity
// need not be a power of two; probing is linear, deletion shifts followers back (no
// tombstones), and the table grows by 1.5x when it would pass 80% load. Per item that is
// 16 / load = 20..30 bytes (about 24 at one million items).
//
// Thread affinity: owned by one shard; single-threaded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace bifrost::storage {

class item_index {
public:
  struct entry {
    uint32_t hash = 0;
    uint32_t seg = 0;
    uint32_t loc = 0;
    uint32_t atime = 0;

    bool empty() const noexcept { return seg == 0; }
    uint64_t offset() const noexcept { return uint64_t(loc & k_off_mask) << 3; }
    bool fetched() const noexcept { return (loc & k_fetched) != 0; }
    bool token() const noexcept { return (loc & k_token) != 0; }
    void set_fetched(bool v) noexcept { loc = v ? (loc | k_fetched) : (loc & ~k_fetched); }
    void set_token(bool v) noexcept { loc = v ? (loc | k_token) : (loc & ~k_token); }
    void set_location(uint32_t seg_slot, uint64_t offset) noexcept {
      seg = seg_slot + 1;
      loc = (loc & ~k_off_mask) | static_cast<uint32_t>(offset >> 3);
    }
    uint32_t slot() const noexcept { return seg - 1; }
  };
  static_assert(sizeof(uint32_t) * 4 == 16, "entry is 16 bytes");

  static constexpr uint32_t k_off_mask = (1u << 30) - 1;
  static constexpr uint32_t k_fetched = 1u << 30;
  static constexpr uint32_t k_token = 1u << 31;
  static constexpr uint64_t k_max_offset = uint64_t(k_off_mask) << 3;
  static constexpr size_t npos = ~size_t(0);

  explicit item_index(size_t initial_capacity = 1024);

  size_t size() const noexcept { return count_; }
  size_t capacity() const noexcept { return cap_; }
  size_t memory_bytes() const noexcept { return cap_ * sizeof(entry); }

  /// Position of the entry with this hash for which `eq(entry)` is true, or npos.
  template <class Eq>
  size_t find(uint32_t hash, Eq&& eq) const {
    size_t i = home(hash);
    for (;;) {
      const entry& e = slots_[i];
      if (e.empty()) return npos;
      if (e.hash == hash && eq(e)) return i;
      if (++i == cap_) i = 0;
    }
  }

  /// Prefetches the cache line of `hash`'s home slot (the start of its probe sequence).
  void prefetch(uint32_t hash) const noexcept { __builtin_prefetch(&slots_[home(hash)]); }

  /// The first entry with this hash (the likely match), or nullptr. Reads only the index.
  const entry* first_with_hash(uint32_t hash) const noexcept {
    size_t i = home(hash);
    for (;;) {
      const entry& e = slots_[i];
      if (e.empty()) return nullptr;
      if (e.hash == hash) return &e;
      if (++i == cap_) i = 0;
    }
  }

  /// Makes room for one more entry (may rehash: positions become invalid). Throws bad_alloc.
  void reserve_one();
  /// Inserts an entry whose key is not present. Call reserve_one() first. Returns its position.
  size_t insert(const entry& e) noexcept;
  /// Removes the entry at `pos`; later entries may move (positions become invalid).
  void erase(size_t pos) noexcept;
  /// Removes every entry (keeps the capacity).
  void clear() noexcept;

  /// Changes whenever entries may have moved (erase, rehash, clear): a position found earlier
  /// is still valid while the generation is unchanged.
  uint64_t generation() const noexcept { return generation_; }

  /// A scan cursor (slots below it visited) that erase() keeps exact: an entry it moves from
  /// at or above the cursor to below it lowers the cursor to its new slot, so a scan that
  /// pauses between erasures visits every entry. (A rehash moves everything: the scan starts
  /// over.) Null: none. The pointee must outlive the index or be unset first.
  void watch(size_t* cursor) noexcept { watch_ = cursor; }

  entry& at(size_t pos) noexcept { return slots_[pos]; }
  const entry& at(size_t pos) const noexcept { return slots_[pos]; }

private:
  size_t home(uint32_t h) const noexcept { return static_cast<size_t>((uint64_t(h) * cap_) >> 32); }
  void rehash(size_t new_cap);

  std::unique_ptr<entry[]> slots_;
  size_t cap_ = 0;
  size_t count_ = 0;
  uint64_t generation_ = 0;
  size_t* watch_ = nullptr;
};

} // namespace bifrost::storage
