#include "actors/route_table.hpp"

#include <algorithm>

namespace bifrost::actors {

uint64_t key_hash(std::string_view key) noexcept {
  // FNV-1a 64 with a final avalanche (splitmix64) so that `% n` spreads well.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

const route_target& route_snapshot::lookup(std::string_view key) const noexcept {
  for (auto& r : routes)
    if (key.substr(0, r.prefix.size()) == r.prefix)
      return r.target;
  return fallback;
}

route_table::route_table(caf::actor_config& cfg, route_snapshot initial)
  : caf::event_based_actor(cfg),
    current_(std::make_shared<const route_snapshot>(std::move(initial))) {}

caf::behavior route_table::make_behavior() {
  set_down_handler([this](caf::down_msg& dm) {
    subscribers_.erase(std::remove_if(subscribers_.begin(), subscribers_.end(),
                                      [&](const caf::actor& a) { return a.address() == dm.source; }),
                       subscribers_.end());
  });
  return {
    [this](ring_atom, cluster_view_ptr& view) {
      // Copies of keys this node owns in none of the view's rings (the current one, and the
      // past ones it still warms from) are read by nobody: the shards drop them (a key's
      // owners may change back to this node later, and an old copy would then be served as
      // current). Each view restarts that with its rings (a ring change keeps more, the end of
      // a window fewer). Sent before the snapshot, so the node's ops routed by it find the
      // shards told. (Not for a view that only names a member back: its rings are the same.)
      if (view && view->ring && !view->returns_only)
        for (auto& shard : current_->local_shards())
          send(shard, prune_atom::value, view);
      auto next = std::make_shared<route_snapshot>(*current_);
      next->version = current_->version + 1;
      next->awaiting_cluster = false;  // (a null view at shutdown: served here while draining)
      next->cluster = std::move(view);
      current_ = std::move(next);
      for (auto& s : subscribers_)
        send(s, routes_atom::value, current_);
    },
    [this](subscribe_atom, caf::actor& who) {
      monitor(who);
      send(who, routes_atom::value, current_);
      subscribers_.push_back(std::move(who));
    },
  };
}

} // namespace bifrost::actors
