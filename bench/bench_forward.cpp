// Forwarded GET round trip: what a GET costs when the node that received it is not the key's
// owner and forwards it over Cap'n Proto RPC, compared with the same exec on the owner's local
// shard actor and with bare RPC round trips to the owner.
//
// Setup (once, in main): two in-process nodes A and B on 127.0.0.1, each an actor system
// (scheduler.max-threads 2, moderate-poll-attempts 0, as bifrostd), one storage shard actor on
// the CAF scheduler and a cluster::service; B joins A's RPC address; both wait until their
// cluster view has 2 live members. Per value size (100 B and 16 KiB), 1024 keys whose primary
// is B in both views are preloaded with distinct values through A's peer actor for B.
//
// Measured (wall-clock time drives the iterations; "CPU" is the whole process, both nodes and
// all threads, per iteration):
//   BM_forwarded_get/1           scoped_actor on A -> A's peer actor for B (KJ thread of A) ->
//                                RPC Node.execute -> B's KJ thread -> B's bridge -> B's shard
//                                (scheduler) -> back the same way; one GET per round trip, so
//                                time per iteration = latency per GET.
//   BM_forwarded_get_batch/N     the same with N GETs in one exec (one RPC); items/s = GETs/s.
//   BM_forwarded_get_16KiB/N     16 KiB values (inline in the RPC result, below 64 KiB).
//   BM_local_shard_get[_16KiB]/N scoped_actor on B -> B's shard actor directly (one actor
//                                message each way): what the forwarded path adds to.
//   BM_rpc_status                bare Cap'n Proto round trip (Node.status) from a client with
//                                its own KJ loop on the benchmark thread to B's KJ thread.
//   BM_rpc_execute_get[_sink]/N  Node.execute of N GETs from that client (a tool, so B routes
//                                each op to its owner, B): RPC + B's bridge and shard, without
//                                A's actors; _sink passes a ValueSink as the peer actor does.
// `per_op` is wall-clock time per GET. Every iteration checks each result (status hit, value
// size) and the bytes of the first (and last) value; a mismatch or a 5 s timeout stops the
// benchmark with an error.
//
// Expectation: forwarding should cost about one RPC round trip (the architecture notes quote ~16 us
// on loopback, quiet machine) plus one local exec (~5 us per actor message round trip). The
// path crosses 6 thread hand-offs (caller -> KJ A -> KJ B -> shard worker -> KJ B -> KJ A ->
// caller) and 4 RPC messages (call, return, finish, release of the per-call sink), so it is
// several times BM_local_shard_get; batching must amortise it (/64 >> 10x the GETs/s of /1).
// Results, per-op system calls and a profile: bench/RESULTS.md, "Forwarded GET".

#include "cluster/service.hpp"

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"
#include "actors/storage_shard.hpp"
#include "cluster/bifrost.capnp.h"
#include "cluster/convert.hpp"
#include "cluster/ring.hpp"
#include "storage/shard.hpp"

#include <benchmark/benchmark.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace bifrost;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

constexpr size_t k_keys = 1024;
constexpr auto k_reply_limit = 5s;

struct sys_config : caf::actor_system_config {
  sys_config() {
    set("scheduler.max-threads", size_t{2});
    set("work-stealing.moderate-poll-attempts", size_t{0});
    set("logger.console", caf::atom("none"));
    set("logger.file-verbosity", caf::atom("quiet"));
  }
};

// Stands in for the route table: keeps the last cluster view the service published.
struct view_box {
  std::mutex mu;
  actors::cluster_view_ptr last;
  actors::cluster_view_ptr get() {
    std::lock_guard<std::mutex> g(mu);
    return last;
  }
};

caf::behavior view_recorder(caf::event_based_actor*, std::shared_ptr<view_box> box) {
  return {
    [box](actors::ring_atom, actors::cluster_view_ptr& v) {
      std::lock_guard<std::mutex> g(box->mu);
      box->last = std::move(v);
    },
  };
}

size_t live_members(const actors::cluster_view_ptr& v) {
  return v ? v->ring->live_size() : 0;
}

// One node: an actor system, one storage shard actor, a view recorder and the service.
struct bench_node {
  bool start(const std::string& name, std::vector<std::string> seeds, std::string& err) {
    sys = std::make_unique<caf::actor_system>(cfg);
    storage::shard_config sc;
    sc.memory_limit = 64ull << 20;
    auto sh = storage::shard::open(sc, storage::system_clock_seconds, err);
    if (!sh)
      return false;
    shard = sys->spawn<actors::storage_shard>(nullptr, std::move(sh), 1000ms);
    box = std::make_shared<view_box>();
    route_table = sys->spawn(view_recorder, box);
    cluster::service_config c;
    c.node_name = name;
    c.client_address = "127.0.0.1:11211";
    c.join = std::move(seeds);
    svc = cluster::service::start(
        *sys, c, {shard}, route_table,
        [](auto reply) { reply(cluster::service::stat_list{}); }, err);
    return svc != nullptr;
  }

  // Order (cluster/service.hpp, actors/node.cpp): the service stops (its hosted actors quit),
  // every handle to a hosted peer actor is dropped (views), then the local actors exit and the
  // system is destroyed.
  void stop_service() {
    if (svc)
      svc->stop();
    svc.reset();
  }
  void destroy() {
    stop_service();
    if (box) {
      std::lock_guard<std::mutex> g(box->mu);
      box->last = nullptr;
    }
    if (sys) {
      caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(route_table, caf::exit_reason::user_shutdown);
    }
    shard = nullptr;
    route_table = nullptr;
    sys.reset();
    if (box) {  // a view that arrived between the clear and the recorder's exit
      std::lock_guard<std::mutex> g(box->mu);
      box->last = nullptr;
    }
  }
  ~bench_node() { destroy(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(svc->rpc_port()); }

  sys_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor shard;
  caf::actor route_table;
  std::shared_ptr<view_box> box;
  std::unique_ptr<cluster::service> svc;
};

// Keys owned by B and their (distinct) values for one value size.
struct data_set {
  size_t value_size = 0;
  std::vector<std::string> keys;
  std::vector<std::string> values;
};

storage::op get_op(const std::string& key) {
  storage::op o;
  o.kind = storage::op_kind::get;
  o.key = key;
  return o;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto deadline = clock_type::now() + limit;
  while (clock_type::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// Sends one exec and waits for its result; false on timeout or a wrong tag.
bool exec(caf::scoped_actor& self, const caf::actor& target, uint64_t tag, storage::op_batch ops,
          storage::result_batch& out) {
  self->send(target, actors::exec_atom::value, tag, std::move(ops));
  bool ok = false;
  self->receive(
      [&](actors::result_atom, uint64_t got, storage::result_batch& r) {
        ok = got == tag;
        out = std::move(r);
      },
      caf::after(k_reply_limit) >> [] {});
  return ok;
}

struct two_nodes {
  bench_node a, b;
  caf::actor peer_b;  // A's peer actor for B
  data_set small, large;

  bool start(std::string& err) {
    auto t0 = clock_type::now();
    if (!a.start("bench-a", {}, err) || !b.start("bench-b", {a.address()}, err))
      return false;
    bool joined = wait_until(
        [&] {
          auto va = a.box->get();
          auto vb = b.box->get();
          return live_members(va) == 2 && live_members(vb) == 2 &&
                 va->ring->find("bench-b") && vb->ring->find("bench-a");
        },
        10000ms);
    if (!joined) {
      err = "the two nodes did not converge within 10 s";
      return false;
    }
    auto va = a.box->get();
    auto vb = b.box->get();
    auto b_id = *va->ring->find("bench-b");
    peer_b = va->peers[b_id];
    if (!peer_b) {
      err = "A's view has no peer actor for B";
      return false;
    }
    std::fprintf(stderr, "bench_forward: 2 nodes converged in %.2f s (A %s, B %s)\n",
                 std::chrono::duration<double>(clock_type::now() - t0).count(),
                 a.address().c_str(), b.address().c_str());
    return preload(small, va, vb, 100, "s", err) && preload(large, va, vb, 16 << 10, "L", err);
  }

  // k_keys keys whose live primary is B in both views (B's RPC server runs a member's ops on
  // its local shard whatever the owner; this keeps the data where B's own routing looks), each
  // with a distinct value, stored through A's peer actor for B.
  bool preload(data_set& d, const actors::cluster_view_ptr& va,
               const actors::cluster_view_ptr& vb, size_t size, const char* prefix,
               std::string& err) {
    d.value_size = size;
    auto b_id = *va->ring->find("bench-b");
    for (size_t i = 0; d.keys.size() < k_keys; ++i) {
      std::string k = std::string("fwd:") + prefix + ":" + std::to_string(i * 7919);
      cluster::ring::member_id pa = 0, pb = 0;
      auto h = cluster::ring::key_hash(k);
      if (va->ring->live_owner_ids(h, 1, &pa) == 1 && pa == b_id &&
          vb->ring->live_owner_ids(h, 1, &pb) == 1 && pb == vb->self)
        d.keys.push_back(std::move(k));
    }
    for (size_t i = 0; i < d.keys.size(); ++i) {
      std::string v(size, static_cast<char>('a' + i % 26));
      char head[32];
      int n = std::snprintf(head, sizeof head, "%zu:%zu:", i, size);
      std::memcpy(v.data(), head, std::min(size, static_cast<size_t>(n)));
      d.values.push_back(std::move(v));
    }
    caf::scoped_actor self{*a.sys};
    uint64_t tag = 1;
    for (size_t i = 0; i < d.keys.size(); i += 64) {
      storage::op_batch ops;
      for (size_t j = i; j < std::min(i + 64, d.keys.size()); ++j) {
        storage::op o;
        o.kind = storage::op_kind::store;
        o.mode = storage::store_mode::set;
        o.key = d.keys[j];
        o.value = d.values[j];
        ops.push_back(std::move(o));
      }
      size_t n = ops.size();
      storage::result_batch r;
      if (!exec(self, peer_b, ++tag, std::move(ops), r) || r.size() != n) {
        err = "preload: no answer from B";
        return false;
      }
      for (auto& x : r)
        if (x.st != storage::status::stored) {
          err = "preload: a set through the peer actor was not stored (status " +
                std::to_string(static_cast<int>(x.st)) + ")";
          return false;
        }
    }
    return true;
  }

  void stop() {
    peer_b = nullptr;  // a handle to a hosted actor must not outlive the system
    b.stop_service();  // B leaves first; A sees it leave
    a.stop_service();
    b.destroy();
    a.destroy();
  }
};

two_nodes* g_nodes = nullptr;
// Timed round trips of all benchmarks run (printed at exit: with a --benchmark_filter that
// selects one benchmark, `perf stat` counts divided by this are per round trip).
uint64_t g_round_trips = 0;

enum class path { forwarded, local };

// Checks one exec's results; "" when every GET hit with the right value.
std::string check(const data_set& d, size_t first, const storage::result_batch& r,
                  size_t batch) {
  if (r.size() != batch)
    return "result count " + std::to_string(r.size()) + " != " + std::to_string(batch);
  for (size_t j = 0; j < batch; ++j) {
    if (r[j].st != storage::status::hit)
      return "op " + std::to_string(j) + ": status " + std::to_string(static_cast<int>(r[j].st));
    if (r[j].value.size() != d.value_size)
      return "op " + std::to_string(j) + ": value size " + std::to_string(r[j].value.size());
  }
  for (size_t j : {size_t{0}, batch - 1})
    if (r[j].value.view() != d.values[(first + j) % d.keys.size()])
      return "op " + std::to_string(j) + ": wrong value bytes";
  return {};
}

void run_gets(benchmark::State& state, path p, bool large) {
  if (!g_nodes) {
    state.SkipWithError("cluster not running");
    return;
  }
  auto& c = *g_nodes;
  const data_set& d = large ? c.large : c.small;
  const size_t batch = static_cast<size_t>(state.range(0));
  const caf::actor& target = p == path::forwarded ? c.peer_b : c.b.shard;
  caf::scoped_actor self{p == path::forwarded ? *c.a.sys : *c.b.sys};
  uint64_t tag = 1000;
  size_t next = 0;
  storage::result_batch r;
  for (auto _ : state) {
    storage::op_batch ops;
    ops.reserve(batch);
    for (size_t j = 0; j < batch; ++j)
      ops.push_back(get_op(d.keys[(next + j) % d.keys.size()]));
    if (!exec(self, target, ++tag, std::move(ops), r)) {
      state.SkipWithError("no result within 5 s (or a wrong tag)");
      break;
    }
    auto bad = check(d, next, r, batch);
    if (!bad.empty()) {
      state.SkipWithError(bad.c_str());
      break;
    }
    r.clear();  // drop the pinned slices inside the loop, as a connection would
    next = (next + batch) % d.keys.size();
    ++g_round_trips;
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(batch));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(batch * d.value_size));
  // Wall-clock time per GET (for /1 this is the round-trip latency), printed as e.g. "120us".
  state.counters["per_op"] = benchmark::Counter(
      double(state.iterations()) * double(batch),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// -- the same GET as a raw RPC, without A's actors ---------------------------------------------
// A Cap'n Proto client with its own KJ loop on the benchmark thread, connected to B (like
// bifrostctl: hello as a tool, so B routes each op to its owner, which is B itself). This
// separates the RPC from the actor hops of the forwarded path:
//   BM_rpc_status               Node.status: one RPC round trip, B's KJ thread only.
//   BM_rpc_execute_get/N        Node.execute with N GETs, no sink: RPC + B's bridge and shard.
//   BM_rpc_execute_get_sink/N   the same with a ValueSink capability in the request, as the
//                               peer actor always sends one (B releases it afterwards).

namespace rpc = bifrost::cluster::rpc;

struct raw_client {
  explicit raw_client(const std::string& address)
    : io(kj::setupAsyncIo()),
      stream(io.provider->getNetwork().parseAddress(address).wait(io.waitScope)->connect().wait(
          io.waitScope)),
      net(*stream, capnp::rpc::twoparty::Side::CLIENT, cluster::rpc_reader_options()),
      sys(capnp::makeRpcClient(net)) {
    capnp::MallocMessageBuilder msg(8);
    auto vat = msg.initRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(capnp::rpc::twoparty::Side::SERVER);
    node = sys.bootstrap(vat).castAs<rpc::Node>();
    auto req = node.helloRequest();
    req.setVersion(rpc::SCHEMA_VERSION);
    req.initFrom().setName("bench_forward");
    req.send().wait(io.waitScope);
  }
  kj::AsyncIoContext io;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork net;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> sys;
  rpc::Node::Client node{nullptr};
};

// Never written to for values under the inline limit.
class null_sink final : public rpc::ValueSink::Server {};

void BM_rpc_status(benchmark::State& state) {
  if (!g_nodes) {
    state.SkipWithError("cluster not running");
    return;
  }
  raw_client cl(g_nodes->b.address());
  for (auto _ : state) {
    auto r = cl.node.statusRequest().send().wait(cl.io.waitScope);
    if (std::string_view(r.getSelf().getInfo().getName().cStr()) != "bench-b") {
      state.SkipWithError("status answered by the wrong node");
      break;
    }
    ++g_round_trips;
  }
  state.SetItemsProcessed(state.iterations());
}

void rpc_gets(benchmark::State& state, bool with_sink) {
  if (!g_nodes) {
    state.SkipWithError("cluster not running");
    return;
  }
  const data_set& d = g_nodes->small;
  const size_t batch = static_cast<size_t>(state.range(0));
  raw_client cl(g_nodes->b.address());
  size_t next = 0;
  for (auto _ : state) {
    auto req = cl.node.executeRequest();
    auto list = req.initOps(static_cast<unsigned>(batch));
    for (size_t j = 0; j < batch; ++j)
      cluster::to_rpc(get_op(d.keys[(next + j) % d.keys.size()]),
                      list[static_cast<unsigned>(j)]);
    req.setOrigin(rpc::Origin::CLIENT);
    if (with_sink)
      req.setSink(kj::heap<null_sink>());
    auto resp = req.send().wait(cl.io.waitScope);
    auto rs = resp.getResults();
    std::string bad;
    if (rs.size() != batch)
      bad = "result count " + std::to_string(rs.size());
    for (unsigned j = 0; bad.empty() && j < rs.size(); ++j)
      if (rs[j].getStatus() != rpc::Status::HIT || rs[j].getValue().size() != d.value_size)
        bad = "op " + std::to_string(j) + ": status " +
              std::to_string(static_cast<int>(rs[j].getStatus())) + ", value size " +
              std::to_string(rs[j].getValue().size());
    if (bad.empty() && cluster::to_string(rs[0].getValue()) != d.values[next % d.keys.size()])
      bad = "wrong value bytes";
    if (!bad.empty()) {
      state.SkipWithError(bad.c_str());
      break;
    }
    next = (next + batch) % d.keys.size();
    ++g_round_trips;
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(batch));
  state.counters["per_op"] = benchmark::Counter(
      double(state.iterations()) * double(batch),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_rpc_execute_get(benchmark::State& s) { rpc_gets(s, false); }
void BM_rpc_execute_get_sink(benchmark::State& s) { rpc_gets(s, true); }

void BM_forwarded_get(benchmark::State& s) { run_gets(s, path::forwarded, false); }
void BM_forwarded_get_batch(benchmark::State& s) { run_gets(s, path::forwarded, false); }
void BM_forwarded_get_16KiB(benchmark::State& s) { run_gets(s, path::forwarded, true); }
void BM_local_shard_get(benchmark::State& s) { run_gets(s, path::local, false); }
void BM_local_shard_get_16KiB(benchmark::State& s) { run_gets(s, path::local, true); }

// Real time drives the iteration count; "CPU" is the whole process (both nodes, all threads)
// per iteration, i.e. the CPU cost of one exec end to end.
#define BIFROST_FWD_BENCH(fn) \
  BENCHMARK(fn)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond)
BIFROST_FWD_BENCH(BM_forwarded_get)->Arg(1);
BIFROST_FWD_BENCH(BM_forwarded_get_batch)->Arg(16)->Arg(64);
BIFROST_FWD_BENCH(BM_forwarded_get_16KiB)->Arg(1)->Arg(16);
BIFROST_FWD_BENCH(BM_local_shard_get)->Arg(1)->Arg(16)->Arg(64);
BIFROST_FWD_BENCH(BM_local_shard_get_16KiB)->Arg(1)->Arg(16);
BIFROST_FWD_BENCH(BM_rpc_status);
BIFROST_FWD_BENCH(BM_rpc_execute_get)->Arg(1)->Arg(64);
BIFROST_FWD_BENCH(BM_rpc_execute_get_sink)->Arg(1);

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;
  int rc = 0;
  {
    two_nodes nodes;
    std::string err;
    if (nodes.start(err)) {
      g_nodes = &nodes;
      benchmark::RunSpecifiedBenchmarks();
      g_nodes = nullptr;
      std::fprintf(stderr, "bench_forward: %llu round trips\n",
                   static_cast<unsigned long long>(g_round_trips));
    } else {
      std::fprintf(stderr, "bench_forward: setup failed: %s\n", err.c_str());
      rc = 1;
    }
    nodes.stop();
  }
  benchmark::Shutdown();
  return rc;
}
