// bifrostd: wiring only. Parses the configuration, starts a node and (unless --no-rpc) the
// cluster service next to it, waits for SIGINT/SIGTERM/SIGUSR1 (or a bifrostctl drain; SIGHUP
// is ignored), then stops in order: the node drains its clients, the service leaves the
// cluster and tears down the KJ thread, the node tears down its actors and loops. Exit status
// 0; 1 when the node cannot start (a port in use...) or after a fatal cluster error
// (on_fatal); 2 on a configuration error.
#include "actors/log.hpp"
#include "actors/messages.hpp"
#include "actors/io_loop.hpp"
#include "actors/node.hpp"
#include "cli/config.hpp"
#include "cluster/data_link.hpp"
#include "cluster/kj_loop.hpp"
#include "cluster/service.hpp"

#include <caf/send.hpp>
#ifdef BIFROST_TCMALLOC
#include <gperftools/malloc_extension.h>
#endif

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>
#include <type_traits>
#include <vector>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>

namespace {

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

/// The least time a node that left by `bifrostctl leave` or `drain` keeps answering before
/// it stops (members that have not heard yet still route to it); it stays for the warming
/// window when that is longer, so the others can warm its keys from it.
constexpr int64_t k_leave_grace_ms = 2000;
/// When that stop is due (steady ms), 0 while no leave was asked for. Set on the KJ thread,
/// read by the main thread.
std::atomic<int64_t> leave_stop_at_ms{0};
/// Exit status when the cluster service found that this node cannot take part (1), else 0.
std::atomic<int> fatal_exit{0};
/// bifrostctl drain asked (on the KJ thread) that the node take no new clients.
std::atomic<bool> stop_accepting_asked{false};

/// bifrostctl drain/leave --wait: duplicates of the waiters' sockets, closed only by the
/// process's end, so a waiter sees its connection close when the node has stopped: the data
/// directory's lock and the ports are free then (the service closes its own end of the
/// connection earlier, when it stops). As many as the RPC connections the node serves; when
/// that many are held, those whose waiter has gone (a killed bifrostctl) make room. The KJ
/// thread's only.
std::vector<int> held_fds;

bool hold_until_exit(int fd) {
  if (held_fds.size() >= bifrost::actors::max_rpc_connections) {
    auto gone = [](int h) {
      pollfd p{h, POLLRDHUP, 0};
      if (::poll(&p, 1, 0) != 1 || (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0)
        return false;
      ::close(h);
      return true;
    };
    held_fds.erase(std::remove_if(held_fds.begin(), held_fds.end(), gone), held_fds.end());
    if (held_fds.size() >= bifrost::actors::max_rpc_connections)
      return false;
  }
  const int kept = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (kept < 0)
    return false;  // (out of fds: the waiter sees the service's close)
  held_fds.push_back(kept);
  return true;
}

/// Gives the allocator's free pages back to the system, at most once a second (called by the
/// main thread's tick). tcmalloc keeps freed pages mapped by default, so the index's growth
/// (its old arrays freed) would stay in the RSS: 212 instead of 185 MiB after 1 000 000 items
/// of 100 B. Giving them back at every free (tcmalloc's aggressive_memory_decommit, used until
/// session 19) made every large buffer fault its pages in afresh: a 256 KiB Cap'n Proto chunk,
/// a value assembled from chunks; page faults and page clearing were a quarter of a node's
/// CPU while it forwarded reads of 512 KiB values. Released once a second, such buffers reuse
/// the same pages, and the RSS still comes back within a second of the load.
void release_free_memory(int64_t now_ms) {
#ifdef BIFROST_TCMALLOC
  static int64_t last_ms = 0;  // (the main thread only)
  if (now_ms - last_ms < 1000)
    return;
  last_ms = now_ms;
  MallocExtension::instance()->ReleaseFreeMemory();
#else
  (void)now_ms;
#endif
}

// Raises the open files limit to what the node may hold (client connections, segments), as
// memcached does from -c; where the hard limit is lower and cannot be raised (no
// CAP_SYS_RESOURCE), as far as it goes, with a warning. A node out of descriptors turns new
// clients away with "ERROR Too many open connections" (actors/listener.hpp).
void raise_open_files_limit(const bifrost::actors::node_config& cfg) {
  const rlim_t want = static_cast<rlim_t>(bifrost::actors::node::descriptors_wanted(cfg));
  rlimit now{};
  if (::getrlimit(RLIMIT_NOFILE, &now) != 0 || now.rlim_cur == RLIM_INFINITY || now.rlim_cur >= want)
    return;
  rlimit up = now;
  up.rlim_cur = want;
  if (up.rlim_max != RLIM_INFINITY && up.rlim_max < want)
    up.rlim_max = want;
  if (::setrlimit(RLIMIT_NOFILE, &up) == 0)
    return;
  up = now;
  up.rlim_cur = now.rlim_max;
  if (up.rlim_cur > now.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &up) != 0)
    up.rlim_cur = now.rlim_cur;
  std::cerr << "bifrostd: warning: the open files limit is " << up.rlim_cur << ", below the "
            << want << " that -c " << cfg.max_connections << " and -m may need: at most "
            << bifrost::actors::node::client_limit(cfg, up.rlim_cur)
            << " clients are served at once (the others are told ERROR Too many open "
               "connections), so that storage segments find descriptors\n";
}

} // namespace

int main(int argc, char** argv) {
  bifrost::actors::node_config cfg;
  auto outcome = bifrost::cli::parse_args(argc, argv, cfg);
  if (outcome.what == bifrost::cli::parse_outcome::action::exit) {
    (outcome.exit_code == 0 ? std::cout : std::cerr) << outcome.message;
    return outcome.exit_code;
  }
  // Block the stop signals before any thread starts, so that only sigwait() below sees them.
  // SIGUSR1 stops as SIGTERM does (memcached 1.6's graceful stop). SIGHUP (a closed terminal,
  // a logrotate's kill -HUP) is waited for too, and ignored: its default would end the node
  // as kill -9 does, without a drain or a leave. (Nothing to reload: logs go to stderr, the
  // configuration is read once.)
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGUSR1);
  sigset_t waited = stop_signals;
  sigaddset(&waited, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &waited, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  raise_open_files_limit(cfg);

  // A --data-dir that does not exist yet is made at start (parents too): said once, so that a
  // mistyped path is seen to start an empty cache rather than to reopen one.
  std::error_code dir_ec;
  const bool new_data_dir =
    !cfg.data_dir.empty() && !std::filesystem::exists(cfg.data_dir, dir_ec) && !dir_ec;
  std::string error;
  // The cluster RPC's KJ loop runs on a thread of its own, or with --rpc-thread loop on the
  // first I/O loop's thread (docs/ARCHITECTURE.md, "RPC on the I/O loop").
  std::shared_ptr<bifrost::cluster::kj_loop> rpc_host;
  bifrost::actors::io_loop* first_loop = nullptr;
  auto node = bifrost::actors::node::start(cfg, error, [&](bifrost::actors::io_loop& l) {
    first_loop = &l;
    if (cfg.rpc_enabled && cfg.rpc_on_loop) {
      rpc_host = std::make_shared<bifrost::cluster::kj_loop>(l.system());
      rpc_host->attach(l);
    }
  });
  if (!node) {
    std::cerr << "bifrostd: " << error << "\n";
    return 1;
  }
  std::string listen = bifrost::cluster::advertised_address(cfg.listen, node->port(), "");

  std::unique_ptr<bifrost::cluster::service> cluster;
  if (cfg.rpc_enabled) {
    bifrost::cluster::service_config sc;
    sc.rpc_host = cfg.rpc_listen.empty() ? cfg.listen : cfg.rpc_listen;
    if (cfg.rpc_port >= 0)
      sc.rpc_port = static_cast<uint16_t>(cfg.rpc_port);
    else
      sc.rpc_port = node->port() == 0 || node->port() > 64535
                      ? 0
                      : static_cast<uint16_t>(node->port() + 1000);
    sc.node_name = cfg.node_name.empty()
                     ? bifrost::cli::default_node_name(cfg.listen, node->port(),
                                                       bifrost::cluster::host_name())
                     : cfg.node_name;
    sc.rpc_advertise = cfg.rpc_advertise;
    // (a wildcard host stays: members dial this node's data links at its RPC address's host)
    sc.client_address = listen;
    sc.join = cfg.join;
    sc.recovers_items = !cfg.data_dir.empty();
    sc.replicas = cfg.replicas;
    sc.wait_replicas = cfg.wait_replicas;
    sc.rereplicate = cfg.rereplicate;
    sc.tls = cfg.rpc_tls;
    sc.parked = node->parked();
    sc.max_value = cfg.max_item_size;
    sc.member_writes_refused = [n = node.get()] { return n->member_writes_refused(); };
    sc.count_tool_ops = [n = node.get()](const bifrost::storage::op_batch& ops) {
      n->count_tool_ops(ops);
    };
    const auto& t = cfg.timings;
    auto set = [](auto& field, int64_t v) {
      if (v >= 0)
        field = static_cast<std::remove_reference_t<decltype(field)>>(v);
    };
    set(sc.swim.probe_interval_ms, t.probe_interval_ms);
    set(sc.swim.ping_timeout_ms, t.ping_timeout_ms);
    set(sc.swim.indirect_timeout_ms, t.indirect_timeout_ms);
    set(sc.swim.indirect_probes, t.indirect_probes);
    set(sc.swim.suspicion_timeout_ms, t.suspicion_timeout_ms);
    set(sc.rpc_timeout_ms, t.rpc_timeout_ms);
    set(sc.warm_window_ms, t.warm_window_ms);
    set(sc.read_check_window_ms, t.read_check_window_ms);
    set(sc.swim.forget_after_ms, t.forget_after_ms);
    set(sc.swim.reconnect_interval_ms, t.reconnect_interval_ms);
    // bifrostctl leave: the node has announced that it left and stops following the cluster.
    // It keeps answering for the linger (members that have not heard yet still route to it,
    // and the new owners of its keys warm them from it as they are read), then stops as on
    // SIGTERM. bifrostctl drain: the same, and it stops taking new clients at once.
    const int64_t linger_ms =
      std::max<int64_t>(k_leave_grace_ms, static_cast<int64_t>(sc.warm_window_ms));
    sc.on_leave = [linger_ms] {
      int64_t none = 0;
      leave_stop_at_ms.compare_exchange_strong(none, steady_ms() + linger_ms);
    };
    sc.on_fatal = [](const std::string& why) {
      bifrost::log_line("bifrostd: %s\n", why.c_str());
      fatal_exit = 1;
      int64_t none = 0;
      leave_stop_at_ms.compare_exchange_strong(none, steady_ms());
    };
    sc.hold_until_exit = hold_until_exit;
    sc.stops_in_ms = [] {
      const int64_t at = leave_stop_at_ms.load();
      return at == 0 ? 0u : static_cast<uint32_t>(std::max<int64_t>(0, at - steady_ms()));
    };
    sc.on_drain = [linger_ms] {
      stop_accepting_asked = true;  // the main thread closes the listeners (it owns the node)
      int64_t none = 0;
      leave_stop_at_ms.compare_exchange_strong(none, steady_ms() + linger_ms);
    };
    if (cfg.cluster_links && !cfg.rpc_tls.enabled()) {
      // Forwarded ops travel on data links (cluster/data_link.hpp); not with TLS, where they
      // would cross the network in clear text. Served before the node joins: a member that
      // learns of this node dials at once.
      bifrost::cluster::link_settings ls;
      ls.node_name = sc.node_name;
      ls.rpc_timeout_ms = sc.rpc_timeout_ms;
      ls.wait_replicas = sc.wait_replicas;
      ls.parked = sc.parked;
      node->set_links([ls](bifrost::actors::io_loop& l, bifrost::actors::loop_context& ctx) {
        return bifrost::cluster::make_loop_links(l, ctx, ls);
      });
      // The replicator sends replicated state through the first loop's links.
      auto* n = node.get();
      sc.replica_link = [n](const bifrost::actors::cluster_view& cv, uint32_t id) {
        return n->link_for(0, cv, id);
      };
    }
    // The replicator runs on the first I/O loop, with that loop's shards and links: replication
    // crosses no thread, whichever thread runs the RPC (cluster/replicator.hpp).
    sc.replicator_host = first_loop;
    auto* n = node.get();
    cluster = bifrost::cluster::service::start(
      n->system(), sc, n->shards(), n->route_table(),
      [n](auto reply) { n->stats_async(std::chrono::milliseconds(250), std::move(reply)); },
      error, rpc_host);
    // Only a node that asked for nothing of the cluster runs on without it (the default RPC
    // port taken by another node on this host): a cluster setting, or TLS files that do
    // not load, is an error to stop on, not a node that silently serves alone.
    if (!cluster && !bifrost::cli::cluster_settings_of(cfg).empty()) {
      std::cerr << "bifrostd: cannot start the cluster RPC: " << error << "\n";
      node->stop();
      return 1;
    }
    if (cluster)
      std::printf("bifrostd: serving memcached on %s, rpc on %s as node '%s'\n", listen.c_str(),
                  cluster->rpc_address().c_str(), cluster->node_name().c_str());
    else  // the default RPC port was taken: a standalone node still serves memcached
      std::printf("bifrostd: serving memcached on %s (no rpc: %s; use --rpc-port)\n",
                  listen.c_str(), error.c_str());
  } else {
    std::printf("bifrostd: serving memcached on %s\n", listen.c_str());
  }
  if (new_data_dir)
    std::printf("bifrostd: made the data directory %s (it did not exist: the cache starts "
                "empty)\n",
                cfg.data_dir.c_str());
  std::fflush(stdout);

  int sig = 0;
  int64_t hup_said_ms = -1;
  for (;;) {  // a stop signal, or the end of a leave's grace period
    const timespec tick{0, 100 * 1000 * 1000};
    sig = sigtimedwait(&waited, nullptr, &tick);
    if (sig > 0 && sig != SIGHUP)
      break;
    // SIGHUP: said at most every 10 s, and the tick's work still done (a stream of them,
    // one per 20 ms, kept a leave from ever ending).
    if (sig == SIGHUP && (hup_said_ms < 0 || steady_ms() - hup_said_ms >= 10000)) {
      hup_said_ms = steady_ms();
      bifrost::log_line("bifrostd: SIGHUP ignored (nothing to reload); SIGTERM stops\n");
    }
    if (stop_accepting_asked.exchange(false))
      node->stop_accepting();
    release_free_memory(steady_ms());
    const int64_t at = leave_stop_at_ms.load();
    if (at != 0 && steady_ms() >= at) {
      sig = 0;
      break;
    }
  }
  if (cfg.verbosity > 0) {
    if (sig > 0)
      bifrost::log_line("bifrostd: signal %d, draining\n", sig);
    else
      bifrost::log_line("bifrostd: left the cluster, draining\n");
  }
  // A second SIGINT/SIGTERM/SIGUSR1 cuts a stop a signal began short (an operator's second
  // Ctrl-C, as memcached stops on it): the process exits at once with status 1, as kill -9
  // (replies in flight are cut off; a data directory recovers what it holds). The thread
  // inherits the blocked mask, so only it sees the signal from now on. (A stop that a leave
  // or drain began is not cut short by one signal: it hands on acknowledged writes.)
  if (sig > 0) {
    try {
      std::thread([stop_signals] {
        int again = 0;
        if (sigwait(&stop_signals, &again) == 0) {
          bifrost::log_line("bifrostd: signal %d again: exiting without finishing the stop\n",
                            again);
          std::_Exit(1);
        }
      }).detach();
    } catch (const std::exception&) {
      // no thread (a pids limit): a second signal does nothing, as before
    }
  }
  node->drain();
  if (cluster) {
    // Leave first (the others told, the writes acknowledged here handed on): members place
    // their writes on the owners without this node from then on, and what they sent before
    // they knew is placed again on those owners (this node's ring has it no more) or, with
    // R >= 2, runs here and is replicated to them. (With R = 1 nothing is replicated: a write
    // that would run here is refused from the start, or it would be answered STORED and go
    // with the process.) Then members' writes that would run here are refused (they would be
    // neither replicated nor kept), connections route no more keys through the cluster, and
    // the service hands on what came meanwhile and tears down.
    if (cfg.replicas < 2)
      node->refuse_member_writes();
    cluster->leave();
    node->refuse_member_writes();
    cluster->forget_routes();
    cluster->stop();
    cluster.reset();
  }
  rpc_host.reset();  // the KJ side has ended (or never started); the I/O loop goes on
  node->stop();
  return fatal_exit.load();
}
