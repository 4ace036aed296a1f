#include "cluster/ring.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>

namespace bifrost::cluster {

// ---- xxHash64 -------------------------------------------------------------------------------
// Reference: https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md (XXH64).
namespace {

constexpr uint64_t P1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t P3 = 0x165667B19E3779F9ULL;
constexpr uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t P5 = 0x27D4EB2F165667C5ULL;

inline uint64_t rotl(uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }

// Little-endian loads, whatever the CPU: the ring must be the same on every node.
inline uint64_t load64(const unsigned char* p) noexcept {
  uint64_t v;
  std::memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}
inline uint64_t load32(const unsigned char* p) noexcept {
  uint32_t v;
  std::memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

inline uint64_t round64(uint64_t acc, uint64_t input) noexcept {
  acc += input * P2;
  acc = rotl(acc, 31);
  return acc * P1;
}
inline uint64_t merge_round(uint64_t acc, uint64_t val) noexcept {
  acc ^= round64(0, val);
  return acc * P1 + P4;
}

}  // namespace

uint64_t hash64(const void* data, size_t len, uint64_t seed) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + len;
  uint64_t h;
  if (len >= 32) {
    const unsigned char* const limit = end - 32;
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    do {
      v1 = round64(v1, load64(p));
      v2 = round64(v2, load64(p + 8));
      v3 = round64(v3, load64(p + 16));
      v4 = round64(v4, load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge_round(h, v1);
    h = merge_round(h, v2);
    h = merge_round(h, v3);
    h = merge_round(h, v4);
  } else {
    h = seed + P5;
  }
  h += static_cast<uint64_t>(len);
  while (end - p >= 8) {
    h ^= round64(0, load64(p));
    h = rotl(h, 27) * P1 + P4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= load32(p) * P1;
    h = rotl(h, 23) * P2 + P3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * P5;
    h = rotl(h, 11) * P1;
    ++p;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

// ---- ring -----------------------------------------------------------------------------------

ring::ring(std::vector<ring_member> members, uint64_t epoch, ring_options opts) : epoch_(epoch) {
  std::sort(members.begin(), members.end(), [](const ring_member& a, const ring_member& b) {
    return std::tie(a.name, a.address, a.weight, a.alive) <
           std::tie(b.name, b.address, b.weight, b.alive);
  });
  members.erase(std::unique(members.begin(), members.end(),
                            [](const ring_member& a, const ring_member& b) {
                              return a.name == b.name;
                            }),
                members.end());
  members_ = std::move(members);

  const size_t n = members_.size();
  alive_.resize(n);
  size_t total_points = 0;
  for (size_t m = 0; m < n; ++m) {
    alive_[m] = members_[m].alive ? 1 : 0;
    if (members_[m].weight > 0) {
      ++with_points_;
      if (members_[m].alive) ++live_count_;
    }
    total_points += size_t(opts.points_per_weight) * members_[m].weight;
  }
  if (opts.points_per_weight == 0) with_points_ = live_count_ = 0;
  {
    std::string id = std::to_string(opts.points_per_weight);
    for (size_t m = 0; m < n && opts.points_per_weight > 0; ++m)
      if (members_[m].alive && members_[m].weight > 0) {
        id += '\0';
        id += members_[m].name;
        id += '\0';
        id += std::to_string(members_[m].weight);
      }
    placement_ = hash64(id);
    if (placement_ == 0)
      placement_ = 1;
  }

  // Place the points: member m's point i at hash64("<name>-<i>").
  std::vector<std::pair<uint64_t, member_id>> pts;
  pts.reserve(total_points);
  std::string label;
  for (size_t m = 0; m < n; ++m) {
    const size_t count = size_t(opts.points_per_weight) * members_[m].weight;
    for (size_t i = 0; i < count; ++i) {
      label = members_[m].name;
      label += '-';
      label += std::to_string(i);
      pts.emplace_back(hash64(label), static_cast<member_id>(m));
    }
  }
  // Ties (equal positions) are broken by member id, i.e. by name: still order-independent.
  std::sort(pts.begin(), pts.end());
  all_.pos.reserve(pts.size());
  all_.owner.reserve(pts.size());
  for (const auto& [pos, m] : pts) {
    all_.pos.push_back(pos);
    all_.owner.push_back(m);
  }
  all_.index();
  if (live_count_ != with_points_ && live_count_ > 0) {
    for (const auto& [pos, m] : pts) {
      if (!alive_[m]) continue;
      live_only_.pos.push_back(pos);
      live_only_.owner.push_back(m);
    }
    live_only_.index();
  }

  share_.assign(n, 0.0);
  live_share_.assign(n, 0.0);
  all_.add_shares(share_);
  // An alive member's live arcs are those of its points among the alive members' points
  // (live_index(): all points when no member with points is dead; none when none is alive).
  live_index().add_shares(live_share_);
}

void ring::point_index::add_shares(std::vector<double>& share) const {
  // Point i owns the arc (pos[i-1], pos[i]]; point 0's arc wraps around 2^64. Arcs are summed
  // exactly (a sum of arcs converted one by one gave a lone member 1.0000000000000002).
  constexpr double k_two64 = 18446744073709551616.0;
  const size_t np = pos.size();
  std::vector<unsigned __int128> sum(share.size(), 0);
  for (size_t i = 0; i < np; ++i)
    sum[owner[i]] += np == 1 ? (unsigned __int128)1 << 64
                             : (unsigned __int128)(pos[i] - pos[i == 0 ? np - 1 : i - 1]);
  for (size_t m = 0; m < share.size(); ++m)  // (at most 2^64 each: at most 1.0)
    share[m] += static_cast<double>(sum[m]) / k_two64;
}

std::shared_ptr<const ring> ring::build(std::vector<ring_member> members, uint64_t epoch,
                                        ring_options opts) {
  return std::make_shared<const ring>(std::move(members), epoch, opts);
}

std::optional<ring::member_id> ring::find(std::string_view name) const noexcept {
  auto it = std::lower_bound(members_.begin(), members_.end(), name,
                             [](const ring_member& m, std::string_view n) { return m.name < n; });
  if (it == members_.end() || it->name != name) return std::nullopt;
  return static_cast<member_id>(it - members_.begin());
}

void ring::point_index::index() {
  const size_t np = pos.size();
  if (np == 0) return;
  // 2^bits buckets with bits = ceil(log2(points)), at least 1.
  unsigned bits = 1;
  while ((size_t(1) << bits) < np && bits < 24) ++bits;
  shift = 64 - bits;
  const size_t nb = size_t(1) << bits;
  bucket.resize(nb + 1);
  size_t p = 0;
  for (size_t b = 0; b < nb; ++b) {
    const uint64_t start = uint64_t(b) << shift;
    while (p < np && pos[p] < start) ++p;
    bucket[b] = static_cast<uint32_t>(p);
  }
  bucket[nb] = static_cast<uint32_t>(np);
}

size_t ring::point_index::first(uint64_t hash) const noexcept {
  const size_t b = static_cast<size_t>(hash >> shift);
  const uint64_t* base = pos.data();
  const uint64_t* lo = base + bucket[b];
  const uint64_t* hi = base + bucket[b + 1];
  // Usually zero to three points: a linear scan beats a binary search here.
  while (lo < hi && *lo < hash) ++lo;
  const size_t i = static_cast<size_t>(lo - base);
  return i == pos.size() ? 0 : i;
}

template <bool Live>
size_t ring::walk(uint64_t hash, size_t r, member_id* out) const noexcept {
  const size_t limit = Live ? live_count_ : with_points_;
  if (r > limit) r = limit;
  if (r == 0) return 0;
  // The live walk uses the index of alive members' points only: every point it meets counts.
  const point_index& idx = Live ? live_index() : all_;
  const size_t np = idx.pos.size();
  size_t i = idx.first(hash);
  size_t n = 0;
  // Terminates: r <= the number of eligible members, and each of them has a point there.
  for (;;) {
    const member_id m = idx.owner[i];
    bool seen = false;
    for (size_t j = 0; j < n; ++j) {
      if (out[j] == m) {
        seen = true;
        break;
      }
    }
    if (!seen) {
      out[n++] = m;
      if (n == r) return n;
    }
    if (++i == np) i = 0;
  }
}

size_t ring::owner_ids(uint64_t hash, size_t r, member_id* out) const noexcept {
  return walk<false>(hash, r, out);
}

size_t ring::live_owner_ids(uint64_t hash, size_t r, member_id* out) const noexcept {
  return walk<true>(hash, r, out);
}

namespace {

// Runs an id query into a stack buffer (or a heap one for large R) and returns pointers.
template <class Query>
std::vector<const ring_member*> to_members(const std::vector<ring_member>& members, size_t r,
                                           Query&& query) {
  constexpr size_t k_small = 16;
  ring::member_id small[k_small];
  std::vector<ring::member_id> big;
  ring::member_id* ids = small;
  if (r > k_small) {
    big.resize(r);
    ids = big.data();
  }
  const size_t n = query(ids);
  std::vector<const ring_member*> res(n);
  for (size_t i = 0; i < n; ++i) res[i] = &members[ids[i]];
  return res;
}

}  // namespace

std::vector<const ring_member*> ring::owners(std::string_view key, size_t r) const {
  r = std::min(r, with_points_);
  const uint64_t h = key_hash(key);
  return to_members(members_, r, [&](member_id* ids) { return owner_ids(h, r, ids); });
}

std::vector<const ring_member*> ring::live_owners(std::string_view key, size_t r) const {
  r = std::min(r, live_count_);
  const uint64_t h = key_hash(key);
  return to_members(members_, r, [&](member_id* ids) { return live_owner_ids(h, r, ids); });
}

const ring_member* ring::primary(std::string_view key) const noexcept {
  member_id id;
  return owner_ids(key_hash(key), 1, &id) == 1 ? &members_[id] : nullptr;
}

const ring_member* ring::live_primary(std::string_view key) const noexcept {
  member_id id;
  return live_owner_ids(key_hash(key), 1, &id) == 1 ? &members_[id] : nullptr;
}

double ring::share(std::string_view name) const noexcept {
  auto id = find(name);
  return id ? share_[*id] : 0.0;
}

double ring::live_share(std::string_view name) const noexcept {
  auto id = find(name);
  return id ? live_share_[*id] : 0.0;
}

}  // namespace bifrost::cluster
