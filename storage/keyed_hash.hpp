// Keyed hashing of item keys for the shard's index, so that clients cannot choose keys that
// collide (hash flooding).
//
// The index probes linearly from a home slot derived from a key's hash. With a hash anyone can
// compute (std::hash has a fixed seed), a client can cheaply search for many keys whose home
// slots fall into one small region of the table, and every lookup there then walks a long
// run of entries. SipHash with a secret key drawn at random per shard makes the slots
// unpredictable; SipHash-1-3 (one compression round per word, three at the end) is the
// variant hash tables use (Rust's HashMap, CPython's str hash): far from cryptographic
// margins but enough against flooding, at ~1.5 ns for a short key here (bench_storage).
//
// Only the in-memory index uses it: nothing hashed with it is written to disk or sent to
// another node (the ring and the shard choice need hashes every node and run agrees on, and
// use route_table's / ring's unkeyed hashes).
//
// Thread affinity: pure functions; hash_key::random() reads the kernel's random source and may
// be called on any thread.
#pragma once

#include <cstdint>
#include <string_view>

namespace bifrost::storage {

struct hash_key {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
  /// 128 random bits from the kernel (getrandom); falls back to a clock and address mix if
  /// the kernel has none to give (never blocks).
  static hash_key random() noexcept;
};

/// SipHash-c-d of `data` under `key` (Aumasson and Bernstein); siphash<2, 4> is the reference
/// function, siphash<1, 3> the one the index uses.
template <int C, int D>
uint64_t siphash(std::string_view data, const hash_key& key) noexcept;

extern template uint64_t siphash<1, 3>(std::string_view, const hash_key&) noexcept;
extern template uint64_t siphash<2, 4>(std::string_view, const hash_key&) noexcept;

} // namespace bifrost::storage
