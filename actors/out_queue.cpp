#include "actors/out_queue.hpp"

namespace bifrost::actors {

void out_queue::bytes(std::string_view b) {
  if (b.empty())
    return;
  if (chunks_.empty() || chunks_.back().slice || chunks_.back().sent != 0)
    chunks_.emplace_back();
  chunks_.back().bytes.append(b.data(), b.size());
  pending_ += b.size();
}

void out_queue::value(const storage::pinned_slice& v) {
  bool sendfile = v.fd() >= 0 && v.size() >= threshold_;
  if (!sendfile && v.size() < inline_copy_max) {
    bytes(v.view());
    return;
  }
  const uint64_t seg = v.segment_size();
  const uint64_t pin = seg > 2 * uint64_t(v.size()) ? seg : 0;  // a small part of its segment
  if (pin != 0 && pinned_ + pin > pin_budget) {
    bytes(v.view());  // copied: the segment is not held by this queue
    return;
  }
  chunk c;
  c.slice = v;
  c.use_sendfile = sendfile;
  c.pinned = pin;
  chunks_.push_back(std::move(c));
  pending_ += v.size();
  pinned_ += pin;
}

void out_queue::advance(size_t n) {
  while (n > 0 && !chunks_.empty()) {
    auto& c = chunks_.front();
    size_t len = c.slice ? c.slice.size() : c.bytes.size();
    size_t take = std::min(n, len - c.sent);
    c.sent += take;
    n -= take;
    pending_ -= take;
    if (c.sent == len)
      pop_front();
  }
}

void out_queue::pop_front() {
  if (chunks_.empty())
    return;
  auto& c = chunks_.front();
  pending_ -= (c.slice ? c.slice.size() : c.bytes.size()) - c.sent;
  pinned_ -= c.pinned;
  chunks_.pop_front();
}

} // namespace bifrost::actors
