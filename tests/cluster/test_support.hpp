// Helpers of the cluster tests.
// - inbox: a queue the test thread waits on: actors standing in for shards, links or peers put
//   what they were given (from their own threads), and the test takes it in order, with a time
//   limit. put() from any thread; take() and clear() from the test thread.
// - on_loop: runs a function on an I/O loop's thread and waits for it (test thread).
#pragma once

#include "actors/io_loop.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>

namespace bifrost::test {

inline void on_loop(actors::io_loop& loop, std::function<void()> fn) {
  std::promise<void> done;
  loop.post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

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
