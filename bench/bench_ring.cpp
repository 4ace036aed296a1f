// Placement lookups: key -> R distinct owners on 3- and 50-member rings (160 points per
// member), for 20-byte keys. The hot path (hash + owner_ids) must stay well under ~50 ns;
// the allocating owners() form is measured alongside for comparison, and live lookups on a
// ring where hundreds of members died (they keep their points).
#include "cluster/ring.hpp"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

using namespace bifrost::cluster;

namespace {

std::vector<std::string> make_keys() {
  std::vector<std::string> keys;
  keys.reserve(4096);
  for (size_t i = 0; i < 4096; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "user:%015zu", i * 7919);  // 20 bytes
    keys.emplace_back(buf);
  }
  return keys;
}

ring make_ring(size_t members) {
  std::vector<ring_member> m;
  for (size_t i = 0; i < members; ++i)
    m.push_back({"node-" + std::to_string(i), "10.0.0." + std::to_string(i) + ":7000", 1, true});
  return ring(std::move(m));
}

// args: members, R
// The hot path over 4096 keys: hash + owner_ids (Live: live_owner_ids); state.range(1) is R.
template <bool Live>
void run_lookups(benchmark::State& state, const ring& r) {
  const size_t rr = static_cast<size_t>(state.range(1));
  const auto keys = make_keys();
  ring::member_id out[8];
  size_t i = 0;
  for (auto _ : state) {
    const uint64_t h = ring::key_hash(keys[i++ & 4095]);
    benchmark::DoNotOptimize(Live ? r.live_owner_ids(h, rr, out) : r.owner_ids(h, rr, out));
    benchmark::DoNotOptimize(out[0]);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_owner_ids(benchmark::State& state) {
  run_lookups<false>(state, make_ring(static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_owner_ids)->ArgNames({"members", "R"})->Args({3, 1})->Args({3, 2})
    ->Args({50, 1})->Args({50, 2});

void BM_live_owner_ids_one_dead(benchmark::State& state) {
  std::vector<ring_member> m;
  for (int64_t i = 0; i < state.range(0); ++i)
    m.push_back({"node-" + std::to_string(i), "h:1", 1, i != 1});
  const ring r(std::move(m));
  run_lookups<true>(state, r);
}
BENCHMARK(BM_live_owner_ids_one_dead)->ArgNames({"members", "R"})->Args({3, 2})->Args({50, 2});

// A cluster that has seen many members come and die: 3 live members and `dead` dead ones (a
// dead member keeps its points). args: dead, R
void BM_live_owner_ids_many_dead(benchmark::State& state) {
  std::vector<ring_member> m;
  const int64_t dead = state.range(0);
  for (int64_t i = 0; i < dead + 3; ++i)
    m.push_back({"node-" + std::to_string(i), "h:1", 1, i >= dead});
  const ring r(std::move(m));
  run_lookups<true>(state, r);
}
BENCHMARK(BM_live_owner_ids_many_dead)->ArgNames({"dead", "R"})->Args({0, 1})->Args({30, 1})
    ->Args({300, 1})->Args({300, 2});

// The convenience form: allocates the result vector.
void BM_owners_vector(benchmark::State& state) {
  const ring r = make_ring(static_cast<size_t>(state.range(0)));
  const size_t rr = static_cast<size_t>(state.range(1));
  const auto keys = make_keys();
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(r.owners(keys[i++ & 4095], rr));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_owners_vector)->ArgNames({"members", "R"})->Args({3, 1})->Args({3, 2})
    ->Args({50, 1})->Args({50, 2});

void BM_key_hash_20B(benchmark::State& state) {
  const auto keys = make_keys();
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(ring::key_hash(keys[i++ & 4095]));
}
BENCHMARK(BM_key_hash_20B);

void BM_build(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(make_ring(static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_build)->Arg(3)->Arg(50)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
