#include "storage/index.hpp"

namespace bifrost::storage {

item_index::item_index(size_t initial_capacity) {
  if (initial_capacity < 16) initial_capacity = 16;
  slots_.reset(new entry[initial_capacity]());
  cap_ = initial_capacity;
}

void item_index::reserve_one() {
  // Max load 80%: linear probing stays short (about 3 probes per hit, 13 per miss, most of
  // them in the same cache lines) and the 1.5x growth keeps the table 53..80% full.
  if ((count_ + 1) * 5 <= cap_ * 4) return;
  rehash(cap_ + cap_ / 2);
}

void item_index::rehash(size_t new_cap) {
  std::unique_ptr<entry[]> fresh(new entry[new_cap]());
  std::unique_ptr<entry[]> old = std::move(slots_);
  const size_t old_cap = cap_;
  ++generation_;
  slots_ = std::move(fresh);
  cap_ = new_cap;
  for (size_t i = 0; i < old_cap; ++i) {
    const entry& e = old[i];
    if (e.empty()) continue;
    size_t j = home(e.hash);
    while (!slots_[j].empty())
      if (++j == cap_) j = 0;
    slots_[j] = e;
  }
}

size_t item_index::insert(const entry& e) noexcept {
  size_t i = home(e.hash);
  while (!slots_[i].empty())
    if (++i == cap_) i = 0;
  slots_[i] = e;
  ++count_;
  return i;
}

void item_index::erase(size_t pos) noexcept {
  ++generation_;
  size_t i = pos;
  size_t j = pos;
  for (;;) {
    if (++j == cap_) j = 0;
    const entry& ej = slots_[j];
    if (ej.empty()) break;
    const size_t k = home(ej.hash);
    // ej may move back to the hole at i unless its home lies cyclically in (i, j].
    const bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      slots_[i] = ej;
      if (watch_ && i < j && i < *watch_ && j >= *watch_)
        *watch_ = i;  // an unvisited entry moved behind the scan (a wrapped move never does)
      i = j;
    }
  }
  slots_[i] = entry{};
  --count_;
}

void item_index::clear() noexcept {
  ++generation_;
  for (size_t i = 0; i < cap_; ++i) slots_[i] = entry{};
  count_ = 0;
}

} // namespace bifrost::storage
