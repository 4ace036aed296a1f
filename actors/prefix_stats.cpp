#include "actors/prefix_stats.hpp"

#include <charconv>

namespace bifrost::actors {

std::optional<std::string_view> key_prefix(std::string_view key, char delimiter) noexcept {
  const size_t at = key.find(delimiter);
  if (at == std::string_view::npos)
    return std::nullopt;
  return key.substr(0, at);
}

void prefix_table::record(std::string_view key, char delimiter, what w) {
  auto prefix = key_prefix(key, delimiter);
  if (!prefix)
    return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(*prefix);
  if (it == counts_.end()) {
    if (counts_.size() >= max_prefixes)
      return;
    it = counts_.emplace(std::string(*prefix), prefix_counts{}).first;
  }
  auto& c = it->second;
  switch (w) {
    case what::hit:
      ++c.hit;
      [[fallthrough]];
    case what::get:
      ++c.get;
      break;
    case what::set:
      ++c.set;
      break;
    case what::del:
      ++c.del;
      break;
  }
}

void prefix_table::merge_into(std::map<std::string, prefix_counts, std::less<>>& into) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [prefix, c] : counts_) {
    auto& sum = into[prefix];
    sum.get += c.get;
    sum.hit += c.hit;
    sum.set += c.set;
    sum.del += c.del;
  }
}

void prefix_table::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  counts_.clear();
}

void compose_prefix_dump(const std::map<std::string, prefix_counts, std::less<>>& all,
                         std::string& out) {
  auto num = [&out](std::string_view label, uint64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(label).append(buf, r.ptr);
  };
  for (const auto& [prefix, c] : all) {
    out.append("PREFIX ").append(prefix);
    num(" get ", c.get);
    num(" hit ", c.hit);
    num(" set ", c.set);
    num(" del ", c.del);
    out.append("\r\n");
  }
  out.append("END\r\n");
}

} // namespace bifrost::actors
