// Placement: a ketama-style consistent-hash ring of virtual nodes.
//
// Every member gets `points_per_weight * weight` points (virtual nodes) on a 64-bit circle.
// Point i of member "node-a" sits at hash64("node-a-<i>"); a key sits at hash64(key). The
// owners of a key are the first R *distinct* members met walking clockwise from the key's
// position (the first point whose position is >= the key's, wrapping around at 2^64). This is
// ketama (libketama, 2007) with two documented differences:
//   - positions are 64-bit xxHash64 values, not 32-bit slices of an MD5 digest: one fast,
//     well-known, non-cryptographic hash serves both keys (hot path, ~5 ns for 20 B) and
//     points (built once). xxHash64 (Yann Collet, XXH64, seed 0) is written out in ring.cpp
//     and checked against its published test vectors; the bytes are read little-endian, so
//     every node, build and CPU computes the same ring. std::hash is never used.
//   - each member has exactly points_per_weight * weight points (no rounding of a share of
//     a total), so adding a member never moves another member's points.
// Consequences: adding a member moves only the keys that land on its new points (about
// weight/total of them) and only to it; removing a member moves only its keys.
//
// Equal point positions (a 2^-64 event) are ordered by member name, so the ring stays a pure
// function of the member list.
//
// Immutable: build once per membership change, share as std::shared_ptr<const ring>; every
// const member is safe to call from any number of threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bifrost::cluster {

/// XXH64 of `data` with `seed` (bit-identical to the reference xxHash64 on every platform).
uint64_t hash64(const void* data, size_t len, uint64_t seed = 0) noexcept;
inline uint64_t hash64(std::string_view s, uint64_t seed = 0) noexcept {
  return hash64(s.data(), s.size(), seed);
}

/// One node as the ring sees it.
struct ring_member {
  std::string name;     ///< unique cluster-wide; the points are placed by it
  std::string address;  ///< "host:port" of its RPC endpoint (carried, not hashed)
  uint32_t weight = 1;  ///< relative capacity; 0 = listed but owns nothing
  bool alive = true;    ///< false: still holds its points, skipped by the live_* queries

  bool operator==(const ring_member& o) const {
    return name == o.name && address == o.address && weight == o.weight && alive == o.alive;
  }
};

struct ring_options {
  uint32_t points_per_weight = 160;  ///< ketama's 160 points per unit of weight
};

class ring {
public:
  /// Index into members() (which is sorted by name).
  using member_id = uint32_t;

  /// Builds the ring. The input order does not matter: members are sorted by name, and a
  /// duplicated name keeps only the entry that sorts first by (name, address, weight, alive).
  /// `epoch` is the caller's version number (e.g. the membership view version); it is only
  /// carried. Cost: O(P log P) for P points (8,000 points for 50 members of weight 1).
  explicit ring(std::vector<ring_member> members, uint64_t epoch = 0, ring_options opts = {});
  /// Same, shared immutable.
  static std::shared_ptr<const ring> build(std::vector<ring_member> members, uint64_t epoch = 0,
                                           ring_options opts = {});

  uint64_t epoch() const noexcept { return epoch_; }
  /// What the live placement is a function of — the alive members with points, their weights
  /// and points_per_weight — hashed (never 0). Two rings with the same value place every key
  /// on the same live owners, whichever node built them and whatever their dead members: a
  /// member tells another which ring it placed a forwarded op by (cluster/service.hpp,
  /// stale placements).
  uint64_t placement() const noexcept { return placement_; }
  /// Members, sorted by name (dead ones included).
  const std::vector<ring_member>& members() const noexcept { return members_; }
  const ring_member& member(member_id id) const noexcept { return members_[id]; }
  size_t size() const noexcept { return members_.size(); }
  /// Number of alive members with at least one point (the most live owners a key can have).
  size_t live_size() const noexcept { return live_count_; }
  /// Number of virtual nodes.
  size_t points() const noexcept { return all_.pos.size(); }
  /// True when no member owns any point: every owner query then returns nothing.
  bool empty() const noexcept { return all_.pos.empty(); }
  std::optional<member_id> find(std::string_view name) const noexcept;

  /// The position of a key on the ring (hash64(key), seed 0).
  static uint64_t key_hash(std::string_view key) noexcept { return hash64(key); }

  /// Hot path, allocation-free: writes the first min(r, members with points) distinct members
  /// clockwise from `hash` into out[0..], primary first, dead members included. Returns the
  /// count. `out` must have room for r ids.
  size_t owner_ids(uint64_t hash, size_t r, member_id* out) const noexcept;
  /// Same, skipping members that are not alive (at most live_size() results). Walks an index
  /// of the alive members' points only: the cost does not grow with the dead members.
  size_t live_owner_ids(uint64_t hash, size_t r, member_id* out) const noexcept;

  /// Convenience forms (allocate the result). Pointers stay valid as long as the ring.
  std::vector<const ring_member*> owners(std::string_view key, size_t r) const;
  std::vector<const ring_member*> live_owners(std::string_view key, size_t r) const;
  /// owners(key, 1)[0], or nullptr on an empty ring.
  const ring_member* primary(std::string_view key) const noexcept;
  /// live_owners(key, 1)[0], or nullptr when no alive member owns points.
  const ring_member* live_primary(std::string_view key) const noexcept;

  /// Fraction of the hash space (0..1) that `name` owns as primary, counting every member;
  /// 0 for an unknown name. Sums to 1 over members() on a non-empty ring.
  double share(std::string_view name) const noexcept;
  /// Fraction it owns as live primary (dead members' arcs go to the next alive member);
  /// 0 for a dead member. Sums to 1 over alive members when live_size() > 0.
  double live_share(std::string_view name) const noexcept;

private:
  // Sorted point positions with their owners and a bucket index: bucket[b] = first point
  // whose position >= b << shift (size 2^bits + 1), so a lookup jumps to its bucket and
  // searches a couple of points instead of the whole array.
  struct point_index {
    std::vector<uint64_t> pos;
    std::vector<member_id> owner;  // parallel to pos
    std::vector<uint32_t> bucket;
    unsigned shift = 64;
    void index();                  // builds bucket from pos
    size_t first(uint64_t hash) const noexcept;  // first point at or after hash (wraps to 0)
    void add_shares(std::vector<double>& share) const;  // each owner's arcs, of 2^64
  };
  template <bool Live>
  size_t walk(uint64_t hash, size_t r, member_id* out) const noexcept;

  uint64_t epoch_;
  uint64_t placement_ = 1;
  std::vector<ring_member> members_;
  std::vector<uint8_t> alive_;         // per member_id, 1 = alive
  size_t with_points_ = 0;             // members with weight > 0
  size_t live_count_ = 0;              // alive members with weight > 0
  point_index all_;                    // every member's points
  // Only the alive members' points, when some member with points is dead (else all_ serves
  // both): a live lookup then never walks dead points, however many members died.
  point_index live_only_;
  const point_index& live_index() const noexcept {
    return live_count_ == with_points_ ? all_ : live_only_;
  }
  std::vector<double> share_;          // per member_id
  std::vector<double> live_share_;     // per member_id
};

}  // namespace bifrost::cluster
