#include "actors/node.hpp"

#include "actors/connection.hpp"
#include "actors/dispatcher.hpp"
#include "actors/io_loop.hpp"
#include "actors/listener.hpp"
#include "actors/log.hpp"
#include "actors/messages.hpp"
#include "actors/node_stats.hpp"
#include "actors/route_table.hpp"
#include "actors/storage_shard.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <future>
#include <thread>

namespace bifrost::actors {

namespace {

uint32_t cores() {
  auto n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

// `cfg` with the defaults it leaves open (0: threads, scheduler threads, shards) filled in.
void fill_defaults(node_config& cfg) {
  if (cfg.threads == 0)
    cfg.threads = cores();
  if (cfg.scheduler_threads == 0)
    cfg.scheduler_threads = cores();
  if (cfg.shards == 0)
    cfg.shards = default_shards(cfg);
}

// Each storage shard's share of -m, and its segment size (a 16th of it, within 64 KiB and
// the configured segment size).
struct shard_sizes {
  uint64_t memory;
  uint32_t segment;
};
shard_sizes sizes_of_shards(const node_config& cfg) {
  const uint64_t per_shard = std::max<uint64_t>(cfg.memory_limit / cfg.shards, 1);
  return {per_shard, static_cast<uint32_t>(std::clamp<uint64_t>(
                       per_shard / 16, 64 * 1024, std::max<uint32_t>(cfg.segment_size, 64 * 1024)))};
}

// Waits until `done()` or `timeout`; returns done().
template <class F>
bool wait_for(F done, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until)
      return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// An exclusive lock on `<data dir>/lock` for as long as the node runs: two nodes on one data
// directory would recover the same segment files, and each one's evictions would unlink
// files the other still serves. The file holds the pid of the node that has it (for the
// error); the kernel drops the lock when that process ends, even by kill -9.
struct data_dir_lock {
  int fd = -1;
  data_dir_lock() = default;
  data_dir_lock(const data_dir_lock&) = delete;
  data_dir_lock& operator=(const data_dir_lock&) = delete;
  ~data_dir_lock() {
    if (fd >= 0)
      ::close(fd);
  }

  bool take(const std::string& dir, std::string& error) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::string path = dir + "/" + storage::data_dir_lock_name;
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      error = "cannot open " + path + ": " + std::strerror(errno);
      return false;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char held[24] = {};
      const ssize_t n = ::pread(fd, held, sizeof held - 1, 0);
      std::string pid(held, n > 0 ? static_cast<size_t>(n) : 0);
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
        pid.pop_back();
      error = err == EWOULDBLOCK
                  ? "the data directory " + dir + " is in use by another bifrostd" +
                        (pid.empty() ? std::string() : " (pid " + pid + ")") +
                        ": each node needs a directory of its own"
                  : "cannot lock " + path + ": " + std::strerror(err);
      return false;
    }
    const std::string mine = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, mine.data(), mine.size(), 0) < 0) {
      // (the lock holds without the pid: the message would only lack it)
    }
    return true;
  }
};

} // namespace

struct node::impl {
  data_dir_lock dir_lock;  // (first: released after everything else is gone)
  node_config cfg;
  caf::actor_system_config sys_cfg;
  std::unique_ptr<caf::actor_system> system;
  std::unique_ptr<node_shared> shared;
  std::vector<std::unique_ptr<io_loop>> loops;
  std::vector<std::unique_ptr<loop_context>> contexts;
  std::vector<caf::actor> shards;
  caf::actor routes;
  std::vector<caf::actor> listeners;
  std::vector<caf::actor> dispatchers;
  uint16_t port = 0;
  bool stopped = false;

  ~impl() { stop(); }

  bool drained = false;

  void stop_accepting() {
    if (drained || !system)
      return;
    for (auto& l : listeners)
      caf::anon_send(l, close_atom::value, true);
  }

  void drain() {
    if (drained || !system)
      return;
    drained = true;
    // 1. Stop accepting; connections finish what they were asked, then close.
    for (auto& l : listeners)
      caf::anon_send(l, close_atom::value);  // (they go on publishing routes until stop())
    if (!shared ||
        wait_for([&] { return shared->connections.load() == 0; }, cfg.drain_timeout))
      return;
    // 2. What is still open (a client that does not read its answers) is closed now, before
    // the daemon takes the cluster view away: its loop would go on running the requests it
    // has read, each answered as stored here alone, neither replicated nor kept.
    for (size_t i = 0; i < loops.size(); ++i) {
      auto* ctx = contexts[i].get();
      loops[i]->post([ctx] { close_connections(*ctx); });
    }
    wait_for([&] { return shared->connections.load() == 0; }, std::chrono::milliseconds(1000));
  }

  // Closes every connection of a loop (on its thread; closing one takes it out of by_id).
  static void close_connections(loop_context& ctx) {
    std::vector<connection*> conns;
    for (auto& kv : ctx.by_id)
      conns.push_back(kv.second);
    for (auto* c : conns)
      c->close_now();
  }

  void stop() {
    if (stopped || !system)
      return;
    drain();
    stopped = true;
    for (auto& l : listeners)
      caf::anon_send(l, finish_atom::value);
    listeners.clear();
    // 2. Whatever is still open after the drain timeout is closed now; loops forget routes.
    for (size_t i = 0; i < loops.size(); ++i) {
      auto* ctx = contexts[i].get();
      loops[i]->post([ctx] {
        if (ctx->links) {
          ctx->links->close_all();  // data links and sessions: their actors quit
          ctx->links.reset();
        }
        close_connections(*ctx);
        ctx->routes = nullptr;
      });
    }
    // 3. The shards and the route table exit (shards may be hosted on the loops).
    for (auto& s : shards)
      caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    for (auto& d : dispatchers)
      caf::anon_send_exit(d, caf::exit_reason::user_shutdown);
    dispatchers.clear();
    if (routes)
      caf::anon_send_exit(routes, caf::exit_reason::user_shutdown);
    shards.clear();
    routes = nullptr;
    // 4. Every loop-hosted actor gone (a live one would hang the system), then the loops.
    for (auto& l : loops)
      wait_for([&] { return l->hosted() == 0; }, std::chrono::milliseconds(3000));
    for (auto& l : loops)
      l->stop();
    system->await_all_actors_done();
    contexts.clear();
    loops.clear();
    system.reset();
  }
};

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

node::~node() = default;

uint16_t node::port() const {
  return impl_->port;
}

void node::stop() {
  impl_->stop();
}

void node::stop_accepting() {
  impl_->stop_accepting();
}

void node::drain() {
  impl_->drain();
}

void node::refuse_member_writes() {
  impl_->shared->member_writes_refused.store(true);
}

bool node::member_writes_refused() const {
  return impl_->shared->member_writes_refused.load(std::memory_order_relaxed);
}

caf::actor_system& node::system() {
  return *impl_->system;
}

std::vector<caf::actor> node::shards() const {
  return impl_->shards;
}

std::shared_ptr<storage::parked_values> node::parked() const {
  return impl_->shared->parked;
}

void node::count_tool_ops(const std::vector<storage::op>& ops) {
  auto& c = impl_->shared->tools;
  for (const auto& o : ops) {
    if (o.kind == storage::op_kind::get)
      c.add(o.get_touch ? c.cmd_touch : c.cmd_get);
    else if (o.kind == storage::op_kind::store)
      c.add(c.cmd_set);
    else if (o.kind == storage::op_kind::touch)
      c.add(c.cmd_touch);
  }
}

caf::actor node::route_table() const {
  return impl_->routes;
}

caf::actor node::link_for(size_t loop, const cluster_view& cv, uint32_t id) {
  if (loop >= impl_->contexts.size() || !impl_->contexts[loop]->links)
    return {};
  return impl_->contexts[loop]->links->shared_link(cv, id);
}

void node::set_links(links_factory make) {
  auto shared = std::make_shared<links_factory>(std::move(make));
  std::vector<std::future<void>> installed;
  for (size_t i = 0; i < impl_->loops.size(); ++i) {
    auto* loop = impl_->loops[i].get();
    auto* ctx = impl_->contexts[i].get();
    auto done = std::make_shared<std::promise<void>>();
    installed.push_back(done->get_future());
    loop->post([loop, ctx, shared, done] {
      ctx->links = (*shared)(*loop, *ctx);
      done->set_value();
    });
  }
  for (auto& f : installed)  // served before the caller goes on (e.g. joins a cluster)
    f.wait();
}

namespace {

// memcached's general stats of the node as name/value pairs.
stat_list stat_pairs(const node_shared& shared, const storage::shard_stats& sum) {
  std::string text;
  compose_stats(shared, sum, text);
  stat_list out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find("\r\n", pos);
    if (nl == std::string::npos)
      break;
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 2;
    if (line.substr(0, 5) != "STAT ")
      continue;
    line.remove_prefix(5);
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos)
      out.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
  }
  return out;
}

// Gathers every shard's stats for node::stats_async, then quits. (A class, not a function:
// CAF 0.17 dereferences a null shared_ptr<tuple<>> when it spawns a function-based actor
// without arguments.)
class stats_gatherer : public caf::event_based_actor {
public:
  stats_gatherer(caf::actor_config& cfg, std::vector<caf::actor> shards, const node_shared* shared,
                 std::chrono::milliseconds timeout, std::function<void(stat_list)> done)
    : caf::event_based_actor(cfg), shards_(std::move(shards)), shared_(shared),
      timeout_(timeout), done_(std::move(done)), left_(shards_.size()) {}

  caf::behavior make_behavior() override {
    for (auto& s : shards_)
      request(s, timeout_, stats_atom::value)
        .then(
          [this](storage::shard_stats& st) {
            sum_ += st;
            one_done();
          },
          [this](caf::error&) { one_done(); });
    return {[](int) {}};
  }
  const char* name() const override { return "stats_gatherer"; }

private:
  void one_done() {
    if (--left_ == 0) {
      done_(stat_pairs(*shared_, sum_));
      quit();
    }
  }

  std::vector<caf::actor> shards_;
  const node_shared* shared_;
  std::chrono::milliseconds timeout_;
  std::function<void(stat_list)> done_;
  size_t left_;
  storage::shard_stats sum_;
};

} // namespace

void node::stats_async(std::chrono::milliseconds timeout, std::function<void(stat_list)> done) {
  if (impl_->shards.empty()) {
    done(stat_pairs(*impl_->shared, storage::shard_stats{}));
    return;
  }
  impl_->system->spawn<stats_gatherer>(impl_->shards, impl_->shared.get(), timeout,
                                       std::move(done));
}

namespace {

// Descriptors a node (defaults filled) holds beside its connections: every storage segment
// (twice over for retired ones a send still pins), listeners, loops, the RPC's connections
// and as many held for `drain --wait` callers (cli/bifrostd.cpp, hold_until_exit).
uint64_t fixed_descriptors(const node_config& cfg) {
  const auto sizes = sizes_of_shards(cfg);
  const uint64_t segments = cfg.shards * (sizes.memory / sizes.segment + 2);
  return 2 * segments + 256 + 2 * max_rpc_connections + 8ull * cfg.threads;
}

} // namespace

uint64_t node::descriptors_wanted(node_config cfg) {
  fill_defaults(cfg);
  // (data links: up to 256 sessions served per loop, and a link per member dialled)
  return cfg.max_connections + fixed_descriptors(cfg) + 2ull * 256 * cfg.threads;
}

uint32_t node::client_limit(node_config cfg, uint64_t open_files) {
  fill_defaults(cfg);
  // (data links come to the memcached port: they count among its connections here)
  const uint64_t rest = fixed_descriptors(cfg);
  const uint64_t room = open_files > rest ? open_files - rest : 0;
  const uint64_t floor = std::min<uint64_t>(cfg.max_connections, open_files / 2);
  return static_cast<uint32_t>(std::clamp<uint64_t>(room, floor, cfg.max_connections));
}

uint32_t node::client_limit() const {
  return impl_->shared->client_limit;
}

std::unique_ptr<node> node::start(const node_config& given, std::string& error,
                                  std::function<void(io_loop&)> before_first_loop) {
  auto p = std::make_unique<impl>();
  auto& cfg = p->cfg;
  cfg = given;
  fill_defaults(cfg);
  if (!cfg.data_dir.empty() && !p->dir_lock.take(cfg.data_dir, error))
    return nullptr;

  // Measured in the prototype: without this, idle workers sleep ~50 us between polls and a
  // loop<->scheduler round trip costs 110-160 us; with it ~5 us.
  p->sys_cfg.set("scheduler.max-threads", static_cast<size_t>(cfg.scheduler_threads));
  p->sys_cfg.set("work-stealing.moderate-poll-attempts", static_cast<size_t>(0));
  p->sys_cfg.set("logger.console", caf::atom("none"));
  p->sys_cfg.set("logger.file-verbosity", caf::atom("quiet"));
  p->system = std::make_unique<caf::actor_system>(p->sys_cfg);
  auto& sys = *p->system;

  p->shared = std::make_unique<node_shared>(cfg, cfg.threads);
  p->shared->started_at = static_cast<uint32_t>(std::time(nullptr));
  {
    const auto sizes = sizes_of_shards(cfg);
    p->shared->least_memory_limit =
      uint64_t(cfg.shards) * std::max<uint64_t>(min_shard_memory(cfg), 2ull * sizes.segment);
  }
  rlimit files{};
  p->shared->client_limit =
    ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
      ? client_limit(cfg, files.rlim_cur)
      : cfg.max_connections;

  // I/O loops first: shard actors may live on them.
  for (uint32_t i = 0; i < cfg.threads; ++i) {
    auto loop = std::make_unique<io_loop>(sys, static_cast<int>(i));
    auto ctx = std::make_unique<loop_context>();
    ctx->loop = loop.get();
    ctx->node = p->shared.get();
    ctx->counters = &p->shared->loops[i];
    if (i == 0 && before_first_loop)
      before_first_loop(*loop);
    loop->start();
    auto d = sys.spawn<dispatcher>(*loop, *ctx);
    // Known before any connection exists (the listeners are spawned later).
    ctx->dispatch = static_cast<dispatcher*>(caf::actor_cast<caf::abstract_actor*>(d));
    p->dispatchers.push_back(std::move(d));
    p->loops.push_back(std::move(loop));
    p->contexts.push_back(std::move(ctx));
  }

  // Storage shards, round robin over the loops (or on the scheduler).
  const auto sizes = sizes_of_shards(cfg);
  for (uint32_t i = 0; i < cfg.shards; ++i) {
    storage::shard_config sc;
    sc.id = i;
    sc.memory_limit = sizes.memory;
    sc.segment_size = sizes.segment;
    sc.max_item_size = cfg.max_item_size;
    sc.data_dir = cfg.data_dir;
    sc.warn = [i](const std::string& line) {  // (rare: a full disk, once a minute at most)
      log_line("bifrostd: warning: shard %u: %s\n", i, line.c_str());
    };
    auto sh = storage::shard::open(sc, storage::system_clock_seconds, error);
    if (!sh)
      return nullptr;  // impl's destructor stops what was started so far
    actor_host* host = cfg.shards_on_loops ? p->loops[i % p->loops.size()].get() : nullptr;
    p->shards.push_back(sys.spawn<storage_shard>(host, std::move(sh), cfg.sweep_interval));
  }
  route_snapshot snap;
  snap.version = 1;
  snap.fallback.k = route_target::kind::local;
  snap.fallback.shards = p->shards;
  snap.awaiting_cluster = cfg.rpc_enabled && !cfg.join.empty();
  p->routes = sys.spawn<actors::route_table>(std::move(snap));

  // Listening sockets: the first decides the port (when 0), the others share it.
  std::vector<int> fds;
  for (uint32_t i = 0; i < cfg.threads; ++i) {
    int fd = i == 0 ? listener::bind_socket(cfg.listen, cfg.port, error)
                    : listener::bind_beside(fds[0], error);
    if (fd < 0) {
      for (int f : fds)
        ::close(f);
      return nullptr;
    }
    if (i == 0)
      p->port = listener::local_port(fd);
    fds.push_back(fd);
  }
  p->shared->cfg.port = p->port;
  for (uint32_t i = 0; i < cfg.threads; ++i)
    p->listeners.push_back(sys.spawn<listener>(*p->loops[i], *p->contexts[i], fds[i], p->routes));
  return std::unique_ptr<node>(new node(std::move(p)));
}

} // namespace bifrost::actors
