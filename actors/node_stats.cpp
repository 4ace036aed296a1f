#include "actors/node_stats.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace bifrost::actors {

namespace {

void stat(std::string& out, std::string_view name, uint64_t v) {
  char num[24];
  auto r = std::to_chars(num, num + sizeof(num), v);
  out.append("STAT ").append(name).append(" ").append(num, r.ptr).append("\r\n");
}

void stat(std::string& out, std::string_view name, std::string_view v) {
  out.append("STAT ").append(name).append(" ").append(v).append("\r\n");
}

std::string seconds_dot_micros(const timeval& tv) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%ld.%06ld", static_cast<long>(tv.tv_sec),
                static_cast<long>(tv.tv_usec));
  return buf;
}

uint64_t sum(const node_shared& n, std::atomic<uint64_t> loop_counters::*field) {
  uint64_t s = 0;
  for (auto& l : n.loops)
    s += (l.*field).load(std::memory_order_relaxed);
  return s + (n.tools.*field).load(std::memory_order_relaxed);
}

} // namespace

namespace {

// The one list of general stats. A cumulative counter goes through `counter`, which either
// reports it less its reset baseline, or (with `reset` set) makes its value the baseline.
// Called with node.reset_mu held.
void general_stats(const node_shared& node, const storage::shard_stats& sh, std::string& out,
                   std::map<std::string, uint64_t, std::less<>>& base, bool reset) {
  auto counter = [&](std::string_view name, uint64_t v) {
    auto it = base.find(name);
    if (reset) {
      if (it == base.end())
        base.emplace(std::string(name), v);
      else
        it->second = v;
      return;
    }
    const uint64_t b = it == base.end() ? 0 : it->second;
    stat(out, name, v >= b ? v - b : 0);
  };
  auto now = static_cast<uint32_t>(std::time(nullptr));
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  stat(out, "pid", static_cast<uint64_t>(getpid()));
  stat(out, "uptime", now - node.started_at);
  stat(out, "time", now);
  stat(out, "version", node.version);
  stat(out, "pointer_size", sizeof(void*) * 8);
  stat(out, "rusage_user", seconds_dot_micros(ru.ru_utime));
  stat(out, "rusage_system", seconds_dot_micros(ru.ru_stime));
  stat(out, "max_connections", node.client_limit);
  stat(out, "curr_connections", sum(node, &loop_counters::curr_connections));
  counter("total_connections", sum(node, &loop_counters::total_connections));
  counter("rejected_connections", sum(node, &loop_counters::rejected_connections));
  counter("cmd_get", sum(node, &loop_counters::cmd_get));
  counter("cmd_set", sum(node, &loop_counters::cmd_set));
  counter("cmd_flush", sum(node, &loop_counters::cmd_flush));
  counter("cmd_touch", sum(node, &loop_counters::cmd_touch));
  counter("cmd_meta", sum(node, &loop_counters::cmd_meta));
  counter("get_hits", sh.get_hits);
  counter("get_misses", sh.get_misses);
  counter("get_expired", sh.get_expired);
  counter("get_flushed", sh.get_flushed);
  counter("delete_misses", sh.delete_misses);
  counter("delete_hits", sh.delete_hits);
  counter("incr_misses", sh.incr_misses);
  counter("incr_hits", sh.incr_hits);
  counter("decr_misses", sh.decr_misses);
  counter("decr_hits", sh.decr_hits);
  counter("cas_misses", sh.cas_misses);
  counter("cas_hits", sh.cas_hits);
  counter("cas_badval", sh.cas_badval);
  counter("touch_hits", sh.touch_hits);
  counter("touch_misses", sh.touch_misses);
  counter("bytes_read", sum(node, &loop_counters::bytes_read));
  counter("bytes_written", sum(node, &loop_counters::bytes_written));
  stat(out, "limit_maxbytes", node.memory_limit.load(std::memory_order_relaxed));
  stat(out, "accepting_conns", 1);
  stat(out, "threads", node.loops.size());
  stat(out, "bytes", sh.bytes);
  stat(out, "curr_items", sh.curr_items);
  counter("total_items", sh.total_items);
  counter("expired_unfetched", sh.expired_unfetched);
  counter("evicted_unfetched", sh.evicted_unfetched);
  counter("evictions", sh.evictions);
  counter("reclaimed", sh.reclaimed);
  counter("store_too_large", sum(node, &loop_counters::store_too_large));
  counter("store_no_memory", sh.store_no_memory);
  // Bifrost's own counters.
  stat(out, "storage_segments", sh.segments);
  stat(out, "storage_segment_bytes", sh.segment_bytes);
  stat(out, "recovered_items", sh.recovered_items);
  stat(out, "recovery_skipped", sh.recovery_skipped);
  counter("storage_disk_full_evictions", sh.disk_full_evictions);
  counter("cluster_pruned_items", sh.pruned);
  counter("cluster_handed_back_deletes", sh.handed_back);
  counter("cluster_handed_back_copies", sh.handed_back_copies);
  counter("cluster_handed_back_dropped", sh.hand_back_dropped);
  counter("cluster_rereplicated_items", sh.rereplicated);
  counter("cluster_rereplicated_deletes", sh.rereplicated_deletes);
  counter("cluster_rereplicate_redone", sh.rereplicate_redone);
  counter("cluster_copies_refused", sh.copies_refused);
  counter("cluster_copies_superseded", sh.copies_superseded);
  counter("cluster_copies_replaced", sh.copies_replaced);
  const auto parked = node.parked->stats();
  stat(out, "cluster_parked_values", parked.entries);
  stat(out, "cluster_parked_bytes", parked.pinned_bytes);
  counter("cluster_parked_dropped", parked.dropped);
  counter("cluster_past_copy_deletes", sum(node, &loop_counters::past_copy_deletes));
  counter("cluster_past_copy_deletes_skipped",
          sum(node, &loop_counters::past_copy_deletes_skipped));
  counter("cluster_read_checks", sum(node, &loop_counters::read_checks));
  counter("cluster_read_checks_newer", sum(node, &loop_counters::read_checks_newer));
  // (The loops take a new view one after another: the largest count, not their sum.)
  uint64_t warm_rings = 0;
  for (const auto& l : node.loops)
    warm_rings = std::max(warm_rings, l.warm_rings.load(std::memory_order_relaxed));
  stat(out, "cluster_warm_rings", warm_rings);
  counter("sendfile_bytes", sum(node, &loop_counters::sendfile_bytes));
  counter("cluster_link_calls_sent", sum(node, &loop_counters::link_calls_sent));
  counter("cluster_link_ops_sent", sum(node, &loop_counters::link_ops_sent));
  counter("cluster_link_calls_served", sum(node, &loop_counters::link_calls_served));
  counter("cluster_link_ops_served", sum(node, &loop_counters::link_ops_served));
  stat(out, "cluster_links_open", sum(node, &loop_counters::links_open));
  stat(out, "cluster_link_sessions_open", sum(node, &loop_counters::link_sessions_open));
  stat(out, "cluster_link_reply_bytes", sum(node, &loop_counters::link_reply_bytes));
  stat(out, "cluster_links_unreachable", sum(node, &loop_counters::links_unreachable));
  counter("cluster_link_calls_failed_fast", sum(node, &loop_counters::link_calls_failed_fast));
  counter("cluster_link_probe_redials", sum(node, &loop_counters::link_redials));
  counter("cluster_link_late_calls_refused", sum(node, &loop_counters::link_late_calls_refused));
  counter("sendfile_fallbacks", sum(node, &loop_counters::sendfile_fallbacks));
  counter("protocol_errors", sum(node, &loop_counters::protocol_errors));
  out.append("END\r\n");
}

} // namespace

void compose_stats(const node_shared& node, const storage::shard_stats& sh, std::string& out) {
  std::lock_guard<std::mutex> lock(node.reset_mu);
  general_stats(node, sh, out, node.reset_base, false);
}

void reset_stats(const node_shared& node, const storage::shard_stats& sh) {
  std::string unused;
  std::lock_guard<std::mutex> lock(node.reset_mu);
  general_stats(node, sh, unused, node.reset_base, true);
  for (auto& t : node.prefixes)  // (memcached's stats_reset clears them too)
    t.clear();
}

void compose_stats_settings(const node_shared& node, std::string& out) {
  const auto& c = node.cfg;
  stat(out, "maxbytes", node.memory_limit.load(std::memory_order_relaxed));
  stat(out, "maxconns", node.client_limit);
  stat(out, "tcpport", c.port);
  stat(out, "udpport", 0);
  stat(out, "inter", c.listen);
  stat(out, "verbosity", static_cast<uint64_t>(node.verbosity.load(std::memory_order_relaxed)));
  stat(out, "num_threads", node.loops.size());
  stat(out, "item_size_max", c.max_item_size);
  stat(out, "cas_enabled", "yes");
  stat(out, "evictions", "on");
  stat(out, "binding_protocol", "ascii");
  stat(out, "storage_shards", c.shards);
  stat(out, "segment_size", c.segment_size);
  stat(out, "sendfile_threshold", c.sendfile_threshold);
  stat(out, "data_dir", c.data_dir.empty() ? std::string_view("(memfd)") : c.data_dir);
  stat(out, "stat_key_prefix", std::string_view(&c.prefix_delimiter, 1));
  stat(out, "detail_enabled",
       node.detail_enabled.load(std::memory_order_relaxed) ? "yes" : "no");
  out.append("END\r\n");
}

std::string socket_address(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((peer ? ::getpeername(fd, sa, &len) : ::getsockname(fd, sa, &len)) != 0)
    return {};
  char ip[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    return std::string("tcp:") + ip + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
    return std::string("tcp6:[") + ip + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return {};
}

std::shared_ptr<conn_entry> node_shared::open_conn(int fd, conn_entry::state st,
                                                   uint64_t now_ms) {
  auto e = std::make_shared<conn_entry>();
  e->fd = fd;
  e->last_cmd_ms.store(now_ms, std::memory_order_relaxed);
  e->st.store(st, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(conns_mu);
  conns.insert(e);
  return e;
}

void node_shared::close_conn(std::shared_ptr<conn_entry>& entry) {
  if (!entry)
    return;
  {
    std::lock_guard<std::mutex> lock(conns_mu);
    conns.erase(entry);
  }
  entry.reset();
}

void compose_stats_conns(const node_shared& node, const conn_entry* asking, uint64_t now_ms,
                         std::string& out) {
  // (The addresses are asked for here, not kept from the accept: every connection would pay
  // two syscalls and two strings for a listing few ever ask for. Under the mutex no listed
  // socket can be closed, so its fd names it.)
  std::lock_guard<std::mutex> lock(node.conns_mu);
  std::vector<const conn_entry*> all;
  all.reserve(node.conns.size());
  for (const auto& e : node.conns)
    all.push_back(e.get());
  std::sort(all.begin(), all.end(), [](const auto* a, const auto* b) { return a->fd < b->fd; });
  for (const auto* e : all) {
    const std::string p = std::to_string(e->fd) + ":";
    const auto st = e->st.load(std::memory_order_relaxed);
    const bool listening = st == conn_entry::state::listening;
    stat(out, p + "addr", socket_address(e->fd, !listening));
    if (!listening)
      stat(out, p + "listen_addr", socket_address(e->fd, false));
    std::string_view state = "conn_read";  // (memcached's word for one waiting for input)
    switch (st) {
      case conn_entry::state::listening: state = "conn_listening"; break;
      case conn_entry::state::idle: break;
      case conn_entry::state::working: state = "conn_io_queue"; break;  // (ops at shards)
      case conn_entry::state::writing: state = "conn_mwrite"; break;
    }
    if (e == asking)
      state = "conn_parse_cmd";
    stat(out, p + "state", state);
    const uint64_t last = e->last_cmd_ms.load(std::memory_order_relaxed);
    stat(out, p + "secs_since_last_cmd", now_ms > last ? (now_ms - last) / 1000 : 0);
  }
  out.append("END\r\n");
}

} // namespace bifrost::actors
