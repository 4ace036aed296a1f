// Per-prefix request counts: memcached's `stats detail on|off|dump` (and its -D delimiter).
// A key's prefix is what comes before the first delimiter (':' unless -D says otherwise); a
// key without one is not counted. What counts is memcached's: each key a get, gets, gat or
// gats asks for (and whether it hit), each storage command (set, add, replace, append,
// prepend, cas: whether it stored or not), each delete. Meta commands, touch and incr/decr do
// not count, as in memcached. A connection counts each request as it answers it, and does
// `stats detail` when the requests before it are answered, so a pipeline counts as memcached
// counts it. Not counted (memcached counts it): a set refused as too large.
//
// Thread affinity: one `prefix_table` per I/O loop, written only by that loop's connections
// (its thread) under the table's mutex, which is otherwise free: `dump`/`clear` take it from
// the loop of the connection that asked (any thread). Nothing is taken while detail is off
// (`node_shared::detail_enabled`, read relaxed on every request).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace bifrost::actors {

struct prefix_counts {
  uint64_t get = 0, hit = 0, set = 0, del = 0;
};

/// The part of `key` before its first `delimiter`, or none (no delimiter: not counted).
std::optional<std::string_view> key_prefix(std::string_view key, char delimiter) noexcept;

class prefix_table {
public:
  /// Distinct prefixes one table keeps: a new prefix past it is not counted (memcached has no
  /// bound, so a client making up prefixes grows its table without end).
  static constexpr size_t max_prefixes = 16384;

  enum class what { get, hit, set, del };
  /// Counts `w` for `key`'s prefix (no-op for a key without `delimiter`). A hit counts a get
  /// too, as memcached's record_get(key, is_hit) does. Loop thread.
  void record(std::string_view key, char delimiter, what w);
  /// Adds this table's counts into `into` (prefix order). Any thread.
  void merge_into(std::map<std::string, prefix_counts, std::less<>>& into) const;
  /// Forgets every count (`stats reset`). Any thread.
  void clear();

private:
  mutable std::mutex mu_;
  std::map<std::string, prefix_counts, std::less<>> counts_;  // guarded by mu_
};

/// Appends memcached's `stats detail dump` body: "PREFIX <prefix> get <n> hit <n> set <n> del
/// <n>\r\n" per prefix (sorted; memcached's order is its hash table's), then "END\r\n".
void compose_prefix_dump(const std::map<std::string, prefix_counts, std::less<>>& all,
                         std::string& out);

} // namespace bifrost::actors
