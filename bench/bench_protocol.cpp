// Micro-benchmarks for the memcached request parser (protocol/memcache.hpp).
#include <benchmark/benchmark.h>

#include <string>

#include "protocol/memcache.hpp"

using namespace bifrost::proto;

namespace {

void parse_loop(benchmark::State& state, const std::string& in, size_t expected_requests) {
  request req;
  size_t n = 0;
  for (auto _ : state) {
    std::string_view rest = in;
    size_t got = 0;
    while (!rest.empty()) {
      parse_result r = parse(rest, req);
      if (r.status != parse_status::ok) {
        state.SkipWithError("unexpected parse status");
        return;
      }
      rest.remove_prefix(r.consumed);
      ++got;
    }
    benchmark::DoNotOptimize(req.keys.data());
    n += got;
  }
  if (n != expected_requests * static_cast<size_t>(state.iterations())) state.SkipWithError("count");
  state.SetItemsProcessed(static_cast<int64_t>(n));
  state.SetBytesProcessed(static_cast<int64_t>(in.size()) * state.iterations());
}

void BM_get(benchmark::State& state) {
  parse_loop(state, "get user:1234567890\r\n", 1);
}
BENCHMARK(BM_get);

void BM_set_100B(benchmark::State& state) {
  parse_loop(state, "set user:1234567890 0 3600 100\r\n" + std::string(100, 'v') + "\r\n", 1);
}
BENCHMARK(BM_set_100B);

void BM_get_10_keys(benchmark::State& state) {
  std::string in = "get";
  for (int i = 0; i < 10; ++i) in += " user:" + std::to_string(1000000 + i);
  parse_loop(state, in + "\r\n", 1);
}
BENCHMARK(BM_get_10_keys);

void BM_pipelined_16_gets(benchmark::State& state) {
  std::string in;
  for (int i = 0; i < 16; ++i) in += "get user:" + std::to_string(1000000 + i) + "\r\n";
  parse_loop(state, in, 16);
}
BENCHMARK(BM_pipelined_16_gets);

void BM_mg_flags(benchmark::State& state) {
  parse_loop(state, "mg user:1234567890 v c f t k s T30 Oopaque123 q\r\n", 1);
}
BENCHMARK(BM_mg_flags);

void BM_ms_100B(benchmark::State& state) {
  parse_loop(state, "ms user:1234567890 100 T3600 F5 c\r\n" + std::string(100, 'v') + "\r\n", 1);
}
BENCHMARK(BM_ms_100B);

}  // namespace

BENCHMARK_MAIN();
