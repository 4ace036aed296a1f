// Storage shard micro-benchmarks: get hit / miss, set of 100 B and 16 KiB values.
//
// One shard, memfd segments, 64 MiB limit. The set benchmarks fill the shard past its limit
// before timing, so they measure the steady state: every new segment evicts the oldest.
#include "storage/shard.hpp"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace bifrost::storage;

constexpr int k_keys = 100000;

std::unique_ptr<shard> make_shard() {
  shard_config cfg;
  cfg.memory_limit = 64ull << 20;
  std::string err;
  auto s = shard::open(cfg, system_clock_seconds, err);
  if (!s) std::fprintf(stderr, "shard::open: %s\n", err.c_str());
  return s;
}

std::vector<std::string> make_keys(const char* prefix) {
  std::vector<std::string> keys;
  keys.reserve(k_keys);
  char buf[64];
  for (int i = 0; i < k_keys; ++i) {
    std::snprintf(buf, sizeof buf, "%s:%08d", prefix, i);
    keys.emplace_back(buf);
  }
  return keys;
}

void fill(shard& s, const std::vector<std::string>& keys, size_t value_size) {
  op o;
  o.kind = op_kind::store;
  o.value.assign(value_size, 'v');
  for (const auto& k : keys) {
    o.key = k;
    s.execute(o);
  }
}

void BM_shard_get_hit_100B(benchmark::State& state) {
  auto s = make_shard();
  const auto keys = make_keys("key");
  fill(*s, keys, 100);
  op o;
  o.kind = op_kind::get;
  size_t i = 0;
  for (auto _ : state) {
    o.key = keys[i++ % keys.size()];
    result r = s->execute(o);
    benchmark::DoNotOptimize(r.value.view().data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_shard_get_hit_100B);

void BM_shard_get_miss(benchmark::State& state) {
  auto s = make_shard();
  fill(*s, make_keys("key"), 100);
  const auto missing = make_keys("nokey");
  op o;
  o.kind = op_kind::get;
  size_t i = 0;
  for (auto _ : state) {
    o.key = missing[i++ % missing.size()];
    result r = s->execute(o);
    benchmark::DoNotOptimize(r.st);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_shard_get_miss);

void set_bench(benchmark::State& state, size_t value_size) {
  auto s = make_shard();
  const auto keys = make_keys("key");
  op o;
  o.kind = op_kind::store;
  o.value.assign(value_size, 'v');
  const size_t prefill = (80ull << 20) / (value_size + 64);
  for (size_t j = 0; j < prefill; ++j) {
    o.key = "prefill:" + std::to_string(j);
    s->execute(o);
  }
  size_t i = 0;
  for (auto _ : state) {
    o.key = keys[i++ % keys.size()];
    result r = s->execute(o);
    benchmark::DoNotOptimize(r.st);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(value_size));
  state.counters["evictions"] = double(s->stats().evictions);
}

void BM_shard_set_100B(benchmark::State& state) { set_bench(state, 100); }
BENCHMARK(BM_shard_set_100B);

void BM_shard_set_16KiB(benchmark::State& state) { set_bench(state, 16 << 10); }
BENCHMARK(BM_shard_set_16KiB);

} // namespace

BENCHMARK_MAIN();
