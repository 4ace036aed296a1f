#include "actors/actor_host.hpp"

#include <caf/actor_system.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

namespace bifrost::actors {

namespace {
// Messages an actor may handle per resume before the host serves its other events again.
constexpr size_t host_max_throughput = 64;
} // namespace

actor_host::actor_host(caf::actor_system& sys) : sys_(sys), home_(&sys, this), guest_(&sys) {}

actor_host::~actor_host() = default;

void actor_host::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> g(mtx_);
    if (stopping_)
      return;
    posted_.push_back(std::move(fn));
  }
  wake();
}

void actor_host::home_unit::exec_later(caf::resumable* ptr) {
  if (host->on_host_thread()) {
    if (host->stopping_) {  // written only on this thread: no lock needed to read it here
      caf::intrusive_ptr_release(ptr);
      return;
    }
    bool first = host->local_ready_.empty();
    host->local_ready_.push_back(ptr);
    if (first)
      host->schedule_local();
    return;
  }
  {
    std::lock_guard<std::mutex> g(host->mtx_);
    if (host->stopping_) {
      caf::intrusive_ptr_release(ptr);
      return;
    }
    host->ready_.push_back(ptr);
  }
  host->wake();
}

void actor_host::guest_unit::exec_later(caf::resumable* ptr) {
  // Not ours: a scheduler actor woken by a hosted actor runs on the scheduler.
  system().scheduler().enqueue(ptr);
}

void actor_host::at_drain_end(drain_end_listener* l, caf::strong_actor_ptr keep) {
  if (stopping_)  // written only on this thread: no lock needed to read it here
    return;       // (the reference goes now; nothing runs at a drain's end any more)
  if (l->drain_end_due_)
    return;  // asked already: one call serves both
  l->drain_end_due_ = true;
  bool first = drain_end_.empty();
  drain_end_.push_back({l, std::move(keep)});
  if (first && !draining_)
    schedule_local();  // outside a drain (a socket callback): make the next one come soon
}

void actor_host::drain() {
  draining_ = true;
  // Members, empty between drains (cleared at its end) and kept: their buffers pass back and
  // forth with ready_, posted_ and local_ready_ (no allocation per drain). drain() is never
  // re-entered.
  auto& ready = ready_scratch_;
  auto& posted = posted_scratch_;
  {
    std::lock_guard<std::mutex> g(mtx_);
    ready.swap(ready_);
    posted.swap(posted_);
  }
  for (auto& fn : posted)
    fn();
  // Actors readied from other threads, then those readied here (by each other, e.g. a
  // connection and a shard ping-ponging a request), a bounded number of rounds so that the
  // loop's sockets are served in between.
  for (int round = 0; round < 8; ++round) {
    if (round > 0) {
      if (local_ready_.empty())
        break;
      ready.clear();
    }
    if (!local_ready_.empty()) {
      if (ready.empty())
        ready.swap(local_ready_);
      else {
        ready.insert(ready.end(), local_ready_.begin(), local_ready_.end());
        local_ready_.clear();
      }
    }
    for (auto* r : ready) {
      resumes_.fetch_add(1, std::memory_order_relaxed);
      switch (r->resume(&guest_, host_max_throughput)) {
        case caf::resumable::resume_later:
          home_.exec_later(r);  // keeps the reference
          break;
        case caf::resumable::done:
        case caf::resumable::awaiting_message:
        case caf::resumable::shutdown_execution_unit:
          caf::intrusive_ptr_release(r);
          break;
      }
    }
  }
  draining_ = false;
  ready.clear();
  posted.clear();
  if (!drain_end_.empty()) {
    auto& due = due_scratch_;
    due.swap(drain_end_);
    for (auto& e : due)
      if (!stopping_) {  // written only on this thread (begin_stopping): no lock to read it
        e.listener->drain_end_due_ = false;
        e.listener->on_drain_end();  // may ask again: at_drain_end then schedules a drain
      }
    due.clear();
  }
  if (!local_ready_.empty())
    schedule_local();
}

void actor_host::begin_stopping() {
  std::lock_guard<std::mutex> g(mtx_);
  stopping_ = true;
}

void actor_host::release_leftovers() {
  std::vector<caf::resumable*> ready;
  {
    std::lock_guard<std::mutex> g(mtx_);
    ready.swap(ready_);
    posted_.clear();
  }
  ready.insert(ready.end(), local_ready_.begin(), local_ready_.end());
  local_ready_.clear();
  drain_end_.clear();
  for (auto* r : ready)
    caf::intrusive_ptr_release(r);
}

} // namespace bifrost::actors
