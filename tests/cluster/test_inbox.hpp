// A queue the test thread waits on: actors standing in for shards, links or peers put what
// they were given (from their own threads), and the test takes it in order, with a time limit.
// Thread affinity: put() from any thread; take() and clear() from the test thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace bifrost::test {

template <class T>
class inbox {
public:
  void put(T v) {
    std::lock_guard<std::mutex> g(m_);
    q_.push_back(std::move(v));
    cv_.notify_all();
  }
  void clear() {
    std::lock_guard<std::mutex> g(m_);
    q_.clear();
  }
  /// The next item, or nothing within `limit`.
  std::optional<T> take(std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
    std::unique_lock<std::mutex> g(m_);
    if (!cv_.wait_for(g, limit, [&] { return !q_.empty(); }))
      return std::nullopt;
    T v = std::move(q_.front());
    q_.pop_front();
    return v;
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<T> q_;
};

} // namespace bifrost::test
