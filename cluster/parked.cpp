#include "cluster/parked.hpp"

#include <chrono>
#include <utility>

namespace bifrost::cluster {

uint64_t parked_values::clock_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count());
}

uint64_t parked_values::park(storage::result r, uint64_t now_ms) {
  std::lock_guard<std::mutex> guard(mu_);
  uint64_t token = next_token_++;
  bytes_ += r.value.size();
  entries_.emplace(token, entry{std::move(r), now_ms});
  while (entries_.size() > 1 && (entries_.size() > max_entries || bytes_ > max_bytes))
    drop_front();
  while (!entries_.empty() && entries_.begin()->second.at_ms + keep_ms < now_ms)
    drop_front();
  return token;
}

bool parked_values::take(uint64_t token, storage::result& out) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = entries_.find(token);
  if (it == entries_.end())
    return false;
  bytes_ -= it->second.result.value.size();
  out = std::move(it->second.result);
  entries_.erase(it);
  return true;
}

void parked_values::expire(uint64_t now_ms) {
  std::lock_guard<std::mutex> guard(mu_);
  while (!entries_.empty() && entries_.begin()->second.at_ms + keep_ms < now_ms)
    drop_front();
}

void parked_values::drop_front() {
  auto it = entries_.begin();
  bytes_ -= it->second.result.value.size();
  entries_.erase(it);
  ++dropped_;
}

size_t parked_values::size() const {
  std::lock_guard<std::mutex> guard(mu_);
  return entries_.size();
}

uint64_t parked_values::bytes() const {
  std::lock_guard<std::mutex> guard(mu_);
  return bytes_;
}

uint64_t parked_values::dropped() const {
  std::lock_guard<std::mutex> guard(mu_);
  return dropped_;
}

} // namespace bifrost::cluster
