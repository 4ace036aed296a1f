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
  chunk c;
  c.slice = v;
  c.use_sendfile = sendfile;
  chunks_.push_back(std::move(c));
  pending_ += v.size();
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
      chunks_.pop_front();
  }
}

} // namespace bifrost::actors
