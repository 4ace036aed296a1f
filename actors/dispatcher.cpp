#include "actors/dispatcher.hpp"

#include "actors/connection.hpp"
#include "actors/route_table.hpp"

#include <algorithm>
#include <iterator>

namespace bifrost::actors {

dispatcher::dispatcher(caf::actor_config& cfg, io_loop& loop, loop_context& ctx)
  : loop_actor(cfg, loop), ctx_(ctx) {}

caf::behavior dispatcher::make_behavior() {
  set_error_handler([](caf::error&) {});
  set_default_handler(caf::drop);
  hook_ = loop().add_check_hook([this] { flush(); });
  return {
    [this](result_atom, uint64_t tag, storage::result_batch& results) {
      on_results(tag, results);
    },
  };
}

void dispatcher::on_exit() {
  if (hook_ != 0)
    loop().remove_check_hook(hook_);
  hook_ = 0;
  if (ctx_.dispatch == this)
    ctx_.dispatch = nullptr;
  out_.clear();
  inflight_.clear();
  orphans_.clear();
}

void dispatcher::adopt(uint64_t conn, uint64_t seq, uint32_t index, storage::op&& probe) {
  orphans_.insert_or_assign(orphan_id{conn, seq, index}, std::move(probe));
}

void dispatcher::add_own_write(const caf::actor& shard, storage::op&& op) {
  const uint64_t seq = next_own_write_++;
  if (replicating_view(ctx_.routes) != nullptr)
    adopt(own_writes, seq, 0, storage::change_probe(op));
  add(shard, own_writes, seq, 0, std::move(op));
}

bool dispatcher::add_side_effect(const caf::actor& dest, storage::op&& op, bool warm) {
  // A handful of destinations at a time (past owners): a linear search.
  uint32_t n = 0, free_n = static_cast<uint32_t>(side_dests_.size());
  for (; n < side_dests_.size(); ++n) {
    if (side_dests_[n].in_flight > 0 && side_dests_[n].dest == dest.id())
      break;
    if (side_dests_[n].in_flight == 0 && free_n == side_dests_.size())
      free_n = n;
  }
  if (n == side_dests_.size()) {
    n = free_n;
    if (n == side_dests_.size())
      side_dests_.emplace_back();
    side_dests_[n].dest = dest.id();
  }
  if (side_dests_[n].in_flight >= max_side_effects)
    return false;
  ++side_dests_[n].in_flight;
  add(dest, own_writes, side_effect_bit | next_side_effect_++, n, std::move(op), warm);
  return true;
}

void dispatcher::add(const caf::actor& dest, uint64_t conn, uint64_t seq, uint32_t index,
                     storage::op&& op, bool warm, uint64_t placed_by) {
  // The destination's latest batch, when its ops were placed by the same ring and are flushes
  // as this one is or is not; else a new one (sent after it: the destination gets its ops in
  // the order they were added).
  const bool flush = op.kind == storage::op_kind::flush;
  outgoing* o = nullptr;
  for (auto x = out_.rbegin(); x != out_.rend(); ++x)
    if (x->dest == dest && x->warm == warm) {
      if (x->placed_by == placed_by && x->flushes == flush)
        o = &*x;
      break;
    }
  if (o == nullptr) {
    if (out_.empty())
      loop().keep_awake();  // ops may be added outside the poll phase: flush without blocking
    out_.push_back(outgoing{dest, warm, placed_by, flush, {}, {}});
    o = &out_.back();
    o->ops.reserve(first_batch_capacity);  // no regrowth (moving whole ops) for most batches
    o->refs.reserve(first_batch_capacity);
  }
  o->ops.push_back(std::move(op));
  o->refs.push_back({conn, seq, index});
}

void dispatcher::flush() {
  for (auto& o : out_) {
    size_t n = o.ops.size();
    for (size_t first = 0; first < n;) {
      // The next part: at most max_batch_ops ops and max_batch_bytes of keys and values (at
      // least one op), in order.
      size_t last = first, bytes = 0;
      while (last < n && last - first < max_batch_ops &&
             (last == first || bytes + o.ops[last].key.size() + o.ops[last].value.size() <=
                                 max_batch_bytes)) {
        bytes += o.ops[last].key.size() + o.ops[last].value.size();
        ++last;
      }
      storage::op_batch ops;
      std::vector<ref> refs;
      if (first == 0 && last == n) {
        ops = std::move(o.ops);
        refs = std::move(o.refs);
      } else {
        ops.assign(std::make_move_iterator(o.ops.begin() + first),
                   std::make_move_iterator(o.ops.begin() + last));
        refs.assign(o.refs.begin() + first, o.refs.begin() + last);
      }
      uint64_t tag = next_tag_++;
      inflight_.emplace(tag, std::move(refs));
      if (o.warm)
        send(o.dest, warm_atom::value, tag, std::move(ops));
      else if (o.placed_by != 0)
        send(o.dest, exec_atom::value, tag, std::move(ops), o.placed_by);
      else
        send(o.dest, exec_atom::value, tag, std::move(ops));
      first = last;
    }
  }
  out_.clear();
}

void dispatcher::on_results(uint64_t tag, storage::result_batch& results) {
  auto it = inflight_.find(tag);
  if (it == inflight_.end())
    return;
  auto refs = std::move(it->second);
  inflight_.erase(it);
  if (!side_dests_.empty())
    for (const auto& r : refs)
      if (r.conn == own_writes && (r.seq & side_effect_bit) != 0 &&
          r.index < side_dests_.size() && side_dests_[r.index].in_flight > 0)
        --side_dests_[r.index].in_flight;
  touched_.clear();
  for (size_t i = 0; i < refs.size() && i < results.size(); ++i) {
    auto c = ctx_.by_id.find(refs[i].conn);
    if (c == ctx_.by_id.end()) {
      // Closed meanwhile: the result (and any pinned value) is dropped, after an adopted
      // write's key is kept for the replicator.
      if (!orphans_.empty())
        on_orphan_result(refs[i], results[i].st);
      continue;
    }
    c->second->deliver(refs[i].seq, refs[i].index, std::move(results[i]));
    if (touched_.empty() || touched_.back() != refs[i].conn)
      touched_.push_back(refs[i].conn);
  }
  if (!orphan_keys_.empty()) {
    if (const auto* cv = replicating_view(ctx_.routes))
      send(cv->replicator, replicate_atom::value, std::move(orphan_keys_));
    orphan_keys_.clear();
  }
  std::sort(touched_.begin(), touched_.end());
  touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
  for (auto id : touched_) {
    auto c = ctx_.by_id.find(id);
    if (c != ctx_.by_id.end())
      c->second->complete_ready();
  }
}

void dispatcher::on_orphan_result(const ref& r, storage::status st) {
  auto it = orphans_.find(orphan_id{r.conn, r.seq, r.index});
  if (it == orphans_.end())
    return;
  if (storage::changed_item(it->second, st))
    orphan_keys_.push_back(std::move(it->second.key));
  orphans_.erase(it);
}

} // namespace bifrost::actors
