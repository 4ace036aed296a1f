#include "storage/parked.hpp"

#include <chrono>
#include <exception>
#include <unistd.h>
#include <random>
#include <utility>
#include <vector>

namespace bifrost::storage {

namespace {
uint64_t random_start() {
  uint64_t t = 0;
  try {
    std::random_device rd;
    t = (uint64_t{rd()} << 32) ^ rd();
  } catch (const std::exception&) {  // no entropy source: the clock and the pid will do
    t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        (static_cast<uint64_t>(::getpid()) << 40);
  }
  t &= ~(uint64_t{1} << 63);  // room to grow without wrapping to 0
  t &= ~uint64_t{1};          // even: the low bit tells strict entries
  return t == 0 ? 2 : t;
}
} // namespace

parked_values::parked_values(limits l) : limits_(l), next_token_(random_start()) {}

uint64_t parked_values::clock_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count());
}

void parked_values::hold(const pinned_slice& v) {
  if (v.segment_id() == nullptr) {
    pinned_ += v.size();
  } else if (segments_[v.segment_id()]++ == 0) {
    pinned_ += v.segment_size();
  }
}

void parked_values::release(const pinned_slice& v) {
  if (v.segment_id() == nullptr) {
    pinned_ -= v.size();
    return;
  }
  auto it = segments_.find(v.segment_id());
  if (it != segments_.end() && --it->second == 0) {
    pinned_ -= v.segment_size();
    segments_.erase(it);
  }
}

void parked_values::drop_front(std::vector<result>& gone) {
  auto it = entries_.begin();
  release(it->second.res.value);
  gone.push_back(std::move(it->second.res));
  entries_.erase(it);
  ++dropped_;
}

uint64_t parked_values::park(result r, uint64_t now_ms, bool strict) {
  std::vector<result> gone;  // destroyed after the lock: a last pin unmaps its segment
  std::lock_guard<std::mutex> guard(mu_);
  uint64_t token = next_token_ | (strict ? 1 : 0);
  next_token_ += 2;
  hold(r.value);
  entries_.emplace(token, entry{std::move(r), now_ms});
  while (entries_.size() > 1 &&
         (entries_.size() > limits_.max_entries || pinned_ > limits_.max_pinned_bytes))
    drop_front(gone);
  while (!entries_.empty() && entries_.begin()->second.at_ms + limits_.keep_ms < now_ms)
    drop_front(gone);
  return token;
}

void parked_values::set_max_pinned_bytes(uint64_t bytes) {
  std::vector<result> gone;  // destroyed after the lock: a last pin unmaps its segment
  std::lock_guard<std::mutex> guard(mu_);
  limits_.max_pinned_bytes = bytes;
  while (entries_.size() > 1 && pinned_ > bytes)
    drop_front(gone);
}

bool parked_values::take(uint64_t token, result& out) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = entries_.find(token);
  if (it == entries_.end())
    return false;
  release(it->second.res.value);
  out = std::move(it->second.res);
  entries_.erase(it);
  return true;
}

void parked_values::expire(uint64_t now_ms) {
  std::vector<result> gone;
  std::lock_guard<std::mutex> guard(mu_);
  while (!entries_.empty() && entries_.begin()->second.at_ms + limits_.keep_ms < now_ms)
    drop_front(gone);
}

parked_values::counts parked_values::stats() const {
  std::lock_guard<std::mutex> guard(mu_);
  return counts{entries_.size(), pinned_, dropped_};
}

} // namespace bifrost::storage
