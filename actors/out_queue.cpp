#include "actors/out_queue.hpp"

#include <algorithm>

namespace bifrost::actors {

void out_queue::bytes(std::string_view b) {
  if (b.empty())
    return;
  if (chunks_.empty() || chunks_.back().slice || chunks_.back().sent != 0) {
    chunks_.emplace_back();
    chunks_.back().bytes.swap(spare_);
  }
  chunks_.back().bytes.append(b.data(), b.size());
  pending_ += b.size();
  copied_ += b.size();
}

void out_queue::value(const storage::pinned_slice& v) {
  bool sendfile = v.fd() >= 0 && v.size() >= threshold_;
  const bool may_copy = copied_ < copy_budget;
  if (!sendfile && v.size() < inline_copy_max && may_copy) {
    bytes(v.view());
    return;
  }
  const uint64_t seg = v.segment_size();
  const bool small_part = seg > 2 * uint64_t(v.size());
  if (small_part) {
    auto it = std::find_if(held_.begin(), held_.end(),
                           [&](const held_segment& h) { return h.id == v.segment_id(); });
    if (it != held_.end()) {
      ++it->chunks;
    } else if (pinned_ + seg <= pin_budget || !may_copy) {
      // Past the copy budget the segment is held even beyond the pin budget: held segments
      // count in the shard's memory (-m), copies would not count anywhere.
      held_.push_back({v.segment_id(), seg, 1});
      pinned_ += seg;
    } else {
      bytes(v.view());  // copied: the segment is not held by this queue
      return;
    }
  }
  chunk c;
  c.slice = v;
  c.use_sendfile = sendfile;
  c.pinned = small_part;
  chunks_.push_back(std::move(c));
  pending_ += v.size();
}

void out_queue::unpin(const chunk& c) {
  if (!c.pinned)
    return;
  for (auto it = held_.begin(); it != held_.end(); ++it)
    if (it->id == c.slice.segment_id()) {
      if (--it->chunks == 0) {
        pinned_ -= it->size;
        held_.erase(it);
      }
      return;
    }
}

void out_queue::advance(size_t n) {
  while (n > 0 && !chunks_.empty()) {
    auto& c = chunks_.front();
    size_t len = c.slice ? c.slice.size() : c.bytes.size();
    size_t take = std::min(n, len - c.sent);
    c.sent += take;
    n -= take;
    pending_ -= take;
    if (!c.slice)
      copied_ -= take;
    if (c.sent == len)
      pop_front();
  }
}

void out_queue::pop_front() {
  if (chunks_.empty())
    return;
  auto& c = chunks_.front();
  pending_ -= (c.slice ? c.slice.size() : c.bytes.size()) - c.sent;
  if (!c.slice)
    copied_ -= c.bytes.size() - c.sent;
  unpin(c);
  if (!c.slice && c.bytes.capacity() <= spare_max && c.bytes.capacity() > spare_.capacity()) {
    c.bytes.clear();
    spare_.swap(c.bytes);
  }
  chunks_.pop_front();
}

} // namespace bifrost::actors
