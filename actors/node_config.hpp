// Settings of one node, as the daemon's flags and config file resolve them (cli/config.hpp).
#pragma once

#include "cluster/tls_options.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace bifrost::actors {

/// Connections the RPC listener serves at once (members' and bifrostctl's); past it a new one
/// is closed at once. Counted in the node's open files budget (node::descriptors_wanted).
constexpr uint32_t max_rpc_connections = 256;

struct node_config {
  std::string listen = "127.0.0.1";       // -l: address of the memcached listener
  uint16_t port = 11211;                  // -p: 0 picks a free port (printed at start)
  uint32_t threads = 0;                   // -t: I/O loops; 0 = one per core
  uint32_t scheduler_threads = 0;         // CAF scheduler workers; 0 = one per core
  uint32_t shards = 0;                    // storage shards; 0 = one per I/O loop (loop
                                          // placement) or 2 x scheduler threads
  bool shards_on_loops = true;            // host shard actors on the I/O loops (round robin);
                                          // false: on the CAF scheduler
  uint64_t memory_limit = 64ull << 20;    // -m: bytes of storage over all shards
  uint32_t max_connections = 1024;        // -c
  uint64_t max_item_size = 1ull << 20;    // -I: max value bytes
  uint32_t segment_size = 1u << 20;       // bytes per storage segment
  // Values >= this many bytes go out with sendfile. 1 MiB by measurement (bench/RESULTS.md):
  // on loopback, copying beat sendfile at 16 KiB (sendfile 0.88x) and 512 KiB (0.40x).
  uint64_t sendfile_threshold = 1u << 20;
  std::string data_dir;                   // --data-dir: empty = memfd (no persistence)
  int verbosity = 0;                      // -v count
  char prefix_delimiter = ':';            // -D: per-prefix stats split keys at this byte
  bool detail_stats = false;              // -D given: `stats detail` counting starts on
  std::chrono::milliseconds sweep_interval{1000};  // expiry sweep period per shard
  std::chrono::milliseconds drain_timeout{5000};   // shutdown: wait for connections to close

  // Cluster (started by bifrostd next to the node: cluster/service.hpp).
  bool rpc_enabled = true;                // serve the Node RPC (cluster and bifrostctl)
  std::string rpc_listen;                 // --rpc-listen: default = `listen`
  std::string rpc_advertise;              // --rpc-advertise host:port: default = listen host
                                          // (a wildcard one: the host name) and the RPC port
  int32_t rpc_port = -1;                  // --rpc-port: -1 = memcached port + 1000 (with -p 0
                                          // the port chosen + 1000)
  std::string node_name;                  // --node-name: default "<listen>:<port>"
  std::vector<std::string> join;          // --join host:port[,host:port...] (RPC addresses)
  uint32_t replicas = 1;                  // --replicas R
  bool wait_replicas = false;             // --replication-ack all (default primary)
  bool rpc_on_loop = false;               // --rpc-thread loop | own (default): where KJ runs
  bool cluster_links = true;              // --cluster-links on (default) | off: data links
  bool rereplicate = true;                // --rereplicate on (default) | off: copies to new owners
  cluster::tls_options rpc_tls;           // --rpc-tls-cert/-key/-ca/-name: mutual TLS
  // Cluster timings; -1 = the built-in default (cluster/membership.hpp, cluster/service.hpp).
  struct cluster_timings {
    int64_t probe_interval_ms = -1;     // --swim-probe-interval
    int64_t ping_timeout_ms = -1;       // --swim-ping-timeout
    int64_t indirect_timeout_ms = -1;   // --swim-indirect-timeout
    int64_t indirect_probes = -1;       // --swim-indirect-probes
    int64_t suspicion_timeout_ms = -1;  // --swim-suspicion-timeout
    int64_t rpc_timeout_ms = -1;        // --rpc-timeout
    int64_t warm_window_ms = -1;        // --warm-window
    int64_t read_check_window_ms = -1;  // --read-check-window
    int64_t forget_after_ms = -1;       // --forget-after (0 = never)
    int64_t reconnect_interval_ms = -1; // --swim-reconnect-interval
  } timings;
};

/// The least memory one shard may get: twice the max item size and at least two 64 KiB
/// segments (as memcached wants -I at most half of -m), or items near -I could never be
/// stored, storing one would empty the shard, and the segments would exceed -m.
inline uint64_t min_shard_memory(const node_config& c) {
  return 2 * std::max<uint64_t>(c.max_item_size, 64 * 1024);
}

/// The shard count when --shards is not given (threads and scheduler_threads resolved): one
/// per I/O loop (or two per scheduler thread), but not so many that a shard's share of -m
/// falls below min_shard_memory (many cores, a small -m); fewer shards than loops is fine
/// (shard j lives on loop j mod N).
inline uint32_t default_shards(const node_config& c) {
  const uint64_t wanted = c.shards_on_loops ? c.threads : 2ull * c.scheduler_threads;
  const uint64_t most = std::max<uint64_t>(1, c.memory_limit / min_shard_memory(c));
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min(wanted, most)));
}

} // namespace bifrost::actors
