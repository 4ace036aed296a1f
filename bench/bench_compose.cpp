// compose(): storage results to memcached response bytes (the per-request output hot path).
//
// Cases: a text get hit of 100 B, a 10-key gets (all hits, 100 B each), and an mg with the
// v f c t flags. Each iteration composes into a reused out_queue and then drains it, so the
// numbers include the out_queue appends but not socket I/O.
#include "actors/memcache_exec.hpp"
#include "storage/segment.hpp"

#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

using namespace bifrost;

namespace {

storage::pinned_slice value_of(size_t n) {
  static auto acct = std::make_shared<storage::segment_accounting>();
  static std::shared_ptr<storage::segment> seg;
  static uint64_t used = 0;
  if (!seg) {
    std::string error;
    seg = storage::segment::create(1, 1 << 20, "", acct, error);
    if (!seg) {
      fprintf(stderr, "segment: %s\n", error.c_str());
      abort();
    }
  }
  std::memset(seg->data() + used, 'v', n);
  storage::pinned_slice s(seg, used, static_cast<uint32_t>(n));
  used += n;
  return s;
}

storage::result hit(size_t n) {
  storage::result r;
  r.st = storage::status::hit;
  r.flags = 12345;
  r.cas = 987654321;
  r.exptime = 0;
  r.value_size = static_cast<uint32_t>(n);
  r.value = value_of(n);
  return r;
}

void run(benchmark::State& state, const proto::request& req, std::vector<storage::result> results) {
  std::vector<storage::op> ops;
  if (actors::plan(req, ops).k != actors::plan_result::kind::ops)
    abort();
  actors::out_queue out;
  size_t bytes = 0;
  for (auto _ : state) {
    actors::compose(req, ops, results, out, 1'700'000'000u);
    bytes += out.pending_bytes();
    out.advance(out.pending_bytes());
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}

void BM_compose_get_hit_100B(benchmark::State& state) {
  proto::request req;
  req.cmd = proto::command::get;
  req.keys = {"user:1234567890"};
  run(state, req, {hit(100)});
}
BENCHMARK(BM_compose_get_hit_100B);

void BM_compose_gets_10_keys(benchmark::State& state) {
  static const std::string keys[10] = {"user:1", "user:2", "user:3", "user:4", "user:5",
                                       "user:6", "user:7", "user:8", "user:9", "user:10"};
  proto::request req;
  req.cmd = proto::command::gets;
  std::vector<storage::result> results;
  for (auto& k : keys) {
    req.keys.push_back(k);
    results.push_back(hit(100));
  }
  run(state, req, std::move(results));
}
BENCHMARK(BM_compose_gets_10_keys);

void BM_compose_mg_v_f_c_t(benchmark::State& state) {
  proto::request req;
  req.cmd = proto::command::mg;
  req.keys = {"user:1234567890"};
  req.meta.raw = "v f c t";
  auto r = hit(100);
  r.exptime = 1'700'000'300u;
  run(state, req, {r});
}
BENCHMARK(BM_compose_mg_v_f_c_t);

void BM_plan_gets_10_keys(benchmark::State& state) {
  proto::request req;
  req.cmd = proto::command::gets;
  static const std::string keys[10] = {"user:1", "user:2", "user:3", "user:4", "user:5",
                                       "user:6", "user:7", "user:8", "user:9", "user:10"};
  for (auto& k : keys)
    req.keys.push_back(k);
  std::vector<storage::op> ops;
  for (auto _ : state) {
    actors::plan(req, ops);
    benchmark::DoNotOptimize(ops.data());
  }
}
BENCHMARK(BM_plan_gets_10_keys);

}  // namespace

BENCHMARK_MAIN();
