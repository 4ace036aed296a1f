// Node-wide counters kept by connections and listeners, and the `stats` response.
//
// Thread affinity: one `loop_counters` per I/O loop, written only by that loop's thread
// (relaxed atomics so that a `stats` request on another loop can read them without a hop).
#pragma once

#include "actors/node_config.hpp"
#include "actors/prefix_stats.hpp"
#include "storage/parked.hpp"
#include "storage/shard.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <cstdint>
#include <string>
#include <vector>

namespace bifrost::actors {

struct loop_counters {
  std::atomic<uint64_t> curr_connections{0};
  std::atomic<uint64_t> total_connections{0};
  std::atomic<uint64_t> rejected_connections{0};
  std::atomic<uint64_t> cmd_get{0};       // keys of get/gets, mg (mg T: one that missed)
  std::atomic<uint64_t> cmd_set{0};       // storage commands
  std::atomic<uint64_t> cmd_flush{0};
  std::atomic<uint64_t> cmd_touch{0};     // touch, keys of gat/gats, an mg T that hit (memcached)
  std::atomic<uint64_t> store_too_large{0};  // writes refused as larger than -I
  std::atomic<uint64_t> cmd_meta{0};      // `me` (memcached counts no other meta command here)
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> bytes_written{0};
  std::atomic<uint64_t> sendfile_bytes{0};  // value bytes sent with sendfile(2)
  std::atomic<uint64_t> sendfile_fallbacks{0};  // sendfile refused (EINVAL/ENOSYS): copied
  std::atomic<uint64_t> protocol_errors{0};
  // Data links (cluster/data_link.hpp): calls and ops this loop sent to other members, and
  // served for them; links_open: client links connected and greeted, sessions_open: served.
  std::atomic<uint64_t> link_calls_sent{0};
  std::atomic<uint64_t> link_ops_sent{0};
  std::atomic<uint64_t> link_calls_served{0};
  std::atomic<uint64_t> link_ops_served{0};
  std::atomic<uint64_t> links_open{0};
  std::atomic<uint64_t> link_sessions_open{0};
  std::atomic<uint64_t> link_reply_bytes{0};  // sessions' replies encoded, not yet written
  // Links to members found unreachable (silent for a timeout, or a connect or hello timed
  // out), and the calls they answered unavailable at once meanwhile (cluster/data_link.cpp).
  std::atomic<uint64_t> links_unreachable{0};
  std::atomic<uint64_t> link_calls_failed_fast{0};
  std::atomic<uint64_t> link_redials{0};  // probes' connects dialled anew (no SYN-ACK in time)
  // Members' client calls a session refused as later than their sender's RPC timeout
  // (cluster/arrival_clock.hpp).
  std::atomic<uint64_t> link_late_calls_refused{0};
  // Warming (actors/cluster_view.hpp): past rings of the loop's current view (still warmed
  // from), and deletes of older copies at past owners sent after writes inside a window.
  std::atomic<uint64_t> warm_rings{0};
  std::atomic<uint64_t> past_copy_deletes{0};
  std::atomic<uint64_t> past_copy_deletes_skipped{0};  // too many unanswered (dispatcher)
  // Reads of moved keys checked at their owner before a recent ring change (check_source),
  // and those that found a later write there (it answered).
  std::atomic<uint64_t> read_checks{0};
  std::atomic<uint64_t> read_checks_newer{0};

  void add(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

/// One open socket as `stats conns` shows it (memcached's per-connection lines), registered
/// by the listener or connection that owns it while it is open (its owner takes it out
/// before it closes the socket, under node_shared::conns_mu, so a `stats conns` holding that
/// mutex may ask the socket for its addresses). `last_cmd_ms` and `st` are written by the
/// owner's loop thread (relaxed) and read by any `stats conns`.
struct conn_entry {
  enum class state : uint8_t { listening, idle, working, writing };
  int fd = -1;
  std::atomic<uint64_t> last_cmd_ms{0};  // monotonic ms (uv_now) of its last request
  std::atomic<state> st{state::idle};    // a listener's stays `listening`
};

/// "tcp:<ip>:<port>" ("tcp6:[<ip>]:<port>") of a socket's peer or local address, as memcached
/// prints them; empty if the socket has none.
std::string socket_address(int fd, bool peer);

/// Shared by every actor of a node; outlives them (owned by the node).
struct node_shared {
  node_config cfg;
  std::vector<loop_counters> loops;     // one per I/O loop (indexed by io_loop::index())
  /// The commands tools (bifrostctl, on the RPC port) sent: written only by the thread the
  /// cluster RPC runs on (node::count_tool_ops), summed with the loops' in `stats`.
  loop_counters tools;
  /// `stats detail on|off` (on from the start with -D); read relaxed on every request.
  std::atomic<bool> detail_enabled{false};
  /// `stats settings` verbosity: -v's count, then what the `verbosity N` command set (at most
  /// 2, memcached's MAX_VERBOSITY_LEVEL). Any thread, relaxed.
  std::atomic<int> verbosity{0};
  /// -m in bytes as `stats` shows it (limit_maxbytes, maxbytes): cfg.memory_limit, then what
  /// `cache_memlimit` set (at most cfg.memory_limit). Any thread, relaxed; written under
  /// memlimit_mu, which also orders the shards' messages (two commands at once on two loops
  /// leave every shard with the later one's share).
  std::atomic<uint64_t> memory_limit{0};
  std::mutex memlimit_mu;
  /// The least `cache_memlimit` takes: each shard keeps min_shard_memory and two of its
  /// segments (set at start).
  uint64_t least_memory_limit = 0;
  mutable std::vector<prefix_table> prefixes;  // one per I/O loop, like `loops`
  std::atomic<uint64_t> connections{0}; // open client connections, all loops (for -c)
  /// Clients served at once (set at start, then read only): -c, or fewer when the open files
  /// limit cannot hold -c beside what storage segments and the rest need (node::start).
  uint32_t client_limit = 0;
  /// Set once the node leaves its cluster for good (node::refuse_member_writes): a write a
  /// member sends it over a data link (or the RPC) that would run here answers unavailable,
  /// as it could neither be replicated any more nor outlive the exit (one placed again on
  /// its owners goes there). Any thread.
  std::atomic<bool> member_writes_refused{false};
  /// Every open client connection and listener (`stats conns`); any thread, under conns_mu.
  mutable std::mutex conns_mu;
  std::set<std::shared_ptr<conn_entry>> conns;  // guarded by conns_mu
  uint32_t started_at = 0;              // unix seconds
  std::string version = "1.6.21-bifrost-0.1.0";
  // What `stats reset` zeroed: each cumulative counter's value at the last reset, taken away
  // from what `stats` reports. (The counters themselves belong to the loops and shards that
  // count them; a baseline resets them without writing across threads.) Any thread.
  mutable std::mutex reset_mu;
  mutable std::map<std::string, uint64_t, std::less<>> reset_base;  // guarded by reset_mu

  /// Results whose values a reply left out, kept for their readers' re-reads (the cluster's
  /// data links and RPC: storage/parked.hpp). Any thread.
  const std::shared_ptr<storage::parked_values> parked;

  explicit node_shared(node_config c, size_t nloops)
    : cfg(std::move(c)), loops(nloops), detail_enabled(cfg.detail_stats),
      verbosity(cfg.verbosity), memory_limit(cfg.memory_limit), prefixes(nloops),
      parked(std::make_shared<storage::parked_values>(parked_limits(cfg))) {}

  /// Registers a socket for `stats conns` (its owner's loop thread); `now_ms`: uv_now.
  std::shared_ptr<conn_entry> open_conn(int fd, conn_entry::state st, uint64_t now_ms);
  /// Takes it out again, before its socket is closed (its fd may be reused at once).
  void close_conn(std::shared_ptr<conn_entry>& entry);

  /// The park pins at most a quarter of -m and half of one shard's share of it (a segment
  /// its shard retired still counts in that shard's memory, and the pins may all be one
  /// shard's), 1 MiB at least (the newest entry stays whatever its size).
  static storage::parked_values::limits parked_limits(const node_config& c) {
    storage::parked_values::limits l;
    l.max_pinned_bytes = parked_pin_bound(c.memory_limit, c.shards);
    return l;
  }
  static uint64_t parked_pin_bound(uint64_t memory_limit, uint32_t shards) {
    const uint64_t per_shard = memory_limit / std::max<uint32_t>(shards, 1);
    return std::max<uint64_t>(1ull << 20, std::min(memory_limit / 4, per_shard / 2));
  }
};

/// Appends memcached's `stats` (general) response, "STAT name value\r\n"... "END\r\n".
/// Cumulative counters count from the last `stats reset`.
void compose_stats(const node_shared& node, const storage::shard_stats& shards,
                   std::string& out);
/// `stats reset`: the cumulative counters that `compose_stats` reports (as memcached: hits,
/// misses, commands, bytes read and written, total items and connections, evictions...)
/// start again from 0. Gauges (curr_items, bytes, curr_connections...) are not counters.
void reset_stats(const node_shared& node, const storage::shard_stats& shards);
/// Appends `stats settings`.
void compose_stats_settings(const node_shared& node, std::string& out);
/// Appends `stats conns`: per open socket (fd order) its addr, listen_addr (connections),
/// state and secs_since_last_cmd, then END. `asking`: the connection that asked (memcached
/// shows it parsing its command); `now_ms` on uv_now's clock.
void compose_stats_conns(const node_shared& node, const conn_entry* asking, uint64_t now_ms,
                         std::string& out);

} // namespace bifrost::actors
