#include "actors/node_stats.hpp"

#include <sys/resource.h>
#include <unistd.h>

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
  return s;
}

} // namespace

void compose_stats(const node_shared& node, const storage::shard_stats& sh, std::string& out) {
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
  stat(out, "max_connections", node.cfg.max_connections);
  stat(out, "curr_connections", sum(node, &loop_counters::curr_connections));
  stat(out, "total_connections", sum(node, &loop_counters::total_connections));
  stat(out, "rejected_connections", sum(node, &loop_counters::rejected_connections));
  stat(out, "cmd_get", sum(node, &loop_counters::cmd_get));
  stat(out, "cmd_set", sum(node, &loop_counters::cmd_set));
  stat(out, "cmd_flush", sum(node, &loop_counters::cmd_flush));
  stat(out, "cmd_touch", sum(node, &loop_counters::cmd_touch));
  stat(out, "cmd_meta", sum(node, &loop_counters::cmd_meta));
  stat(out, "get_hits", sh.get_hits);
  stat(out, "get_misses", sh.get_misses);
  stat(out, "get_expired", sh.get_expired);
  stat(out, "get_flushed", sh.get_flushed);
  stat(out, "delete_misses", sh.delete_misses);
  stat(out, "delete_hits", sh.delete_hits);
  stat(out, "incr_misses", sh.incr_misses);
  stat(out, "incr_hits", sh.incr_hits);
  stat(out, "decr_misses", sh.decr_misses);
  stat(out, "decr_hits", sh.decr_hits);
  stat(out, "cas_misses", sh.cas_misses);
  stat(out, "cas_hits", sh.cas_hits);
  stat(out, "cas_badval", sh.cas_badval);
  stat(out, "touch_hits", sh.touch_hits);
  stat(out, "touch_misses", sh.touch_misses);
  stat(out, "bytes_read", sum(node, &loop_counters::bytes_read));
  stat(out, "bytes_written", sum(node, &loop_counters::bytes_written));
  stat(out, "limit_maxbytes", node.cfg.memory_limit);
  stat(out, "accepting_conns", 1);
  stat(out, "threads", node.loops.size());
  stat(out, "bytes", sh.bytes);
  stat(out, "curr_items", sh.curr_items);
  stat(out, "total_items", sh.total_items);
  stat(out, "expired_unfetched", sh.expired_unfetched);
  stat(out, "evicted_unfetched", sh.evicted_unfetched);
  stat(out, "evictions", sh.evictions);
  stat(out, "reclaimed", sh.reclaimed);
  // Bifrost's own counters.
  stat(out, "storage_segments", sh.segments);
  stat(out, "storage_segment_bytes", sh.segment_bytes);
  stat(out, "recovered_items", sh.recovered_items);
  stat(out, "recovery_skipped", sh.recovery_skipped);
  stat(out, "sendfile_bytes", sum(node, &loop_counters::sendfile_bytes));
  stat(out, "cluster_link_calls_sent", sum(node, &loop_counters::link_calls_sent));
  stat(out, "cluster_link_ops_sent", sum(node, &loop_counters::link_ops_sent));
  stat(out, "cluster_link_calls_served", sum(node, &loop_counters::link_calls_served));
  stat(out, "cluster_link_ops_served", sum(node, &loop_counters::link_ops_served));
  stat(out, "cluster_links_open", sum(node, &loop_counters::links_open));
  stat(out, "cluster_link_sessions_open", sum(node, &loop_counters::link_sessions_open));
  stat(out, "sendfile_fallbacks", sum(node, &loop_counters::sendfile_fallbacks));
  stat(out, "protocol_errors", sum(node, &loop_counters::protocol_errors));
  out.append("END\r\n");
}

void compose_stats_settings(const node_shared& node, std::string& out) {
  const auto& c = node.cfg;
  stat(out, "maxbytes", c.memory_limit);
  stat(out, "maxconns", c.max_connections);
  stat(out, "tcpport", c.port);
  stat(out, "udpport", 0);
  stat(out, "inter", c.listen);
  stat(out, "verbosity", static_cast<uint64_t>(c.verbosity));
  stat(out, "num_threads", node.loops.size());
  stat(out, "item_size_max", c.max_item_size);
  stat(out, "cas_enabled", "yes");
  stat(out, "evictions", "on");
  stat(out, "binding_protocol", "ascii");
  stat(out, "storage_shards", c.shards);
  stat(out, "segment_size", c.segment_size);
  stat(out, "sendfile_threshold", c.sendfile_threshold);
  stat(out, "data_dir", c.data_dir.empty() ? std::string_view("(memfd)") : c.data_dir);
  out.append("END\r\n");
}

} // namespace bifrost::actors
