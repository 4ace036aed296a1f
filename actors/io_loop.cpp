#include "actors/io_loop.hpp"

#include <caf/actor_system.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

#include <cstdio>
#include <cstdlib>
#include <future>

namespace bifrost::actors {

namespace {
// Messages an actor may handle per resume before the loop serves sockets again.
constexpr size_t loop_max_throughput = 64;
} // namespace

io_loop::io_loop(caf::actor_system& sys, int index)
  : sys_(sys), index_(index), home_(&sys, this), guest_(&sys) {
  if (uv_loop_init(&loop_) != 0) {
    std::fprintf(stderr, "uv_loop_init failed\n");
    std::abort();
  }
  uv_async_init(&loop_, &wake_, &io_loop::on_wake);
  wake_.data = this;
}

io_loop::~io_loop() {
  if (thread_.joinable())
    stop();
  uv_loop_close(&loop_);
}

void io_loop::start() {
  std::promise<void> running;
  auto fut = running.get_future();
  thread_ = std::thread([this, &running] {
    thread_id_ = std::this_thread::get_id();
    running.set_value();
    uv_run(&loop_, UV_RUN_DEFAULT);
  });
  fut.wait();
}

void io_loop::stop(std::function<void()> on_stop) {
  if (!thread_.joinable())
    return;
  post([this, on_stop = std::move(on_stop)] {
    if (on_stop)
      on_stop();
    {
      std::lock_guard<std::mutex> g(mtx_);
      stopping_ = true;
    }
    // Close every handle still open (the wake handle last) so uv_run returns.
    uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h))
          uv_close(h, nullptr);
      },
      nullptr);
  });
  thread_.join();
  // Actors still queued never run again: release the scheduler's reference.
  for (auto* r : ready_)
    caf::intrusive_ptr_release(r);
  ready_.clear();
}

void io_loop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> g(mtx_);
    if (stopping_)
      return;
    posted_.push_back(std::move(fn));
  }
  uv_async_send(&wake_);
}

void io_loop::home_unit::exec_later(caf::resumable* ptr) {
  {
    std::lock_guard<std::mutex> g(loop->mtx_);
    if (loop->stopping_) {
      caf::intrusive_ptr_release(ptr);
      return;
    }
    loop->ready_.push_back(ptr);
  }
  uv_async_send(&loop->wake_);
}

void io_loop::guest_unit::exec_later(caf::resumable* ptr) {
  // Not ours: a scheduler actor woken by a loop-hosted actor runs on the scheduler.
  system().scheduler().enqueue(ptr);
}

void io_loop::on_wake(uv_async_t* h) {
  static_cast<io_loop*>(h->data)->drain();
}

void io_loop::drain() {
  std::vector<caf::resumable*> ready;
  std::vector<std::function<void()>> posted;
  {
    std::lock_guard<std::mutex> g(mtx_);
    ready.swap(ready_);
    posted.swap(posted_);
  }
  for (auto& fn : posted)
    fn();
  for (auto* r : ready) {
    resumes_.fetch_add(1, std::memory_order_relaxed);
    switch (r->resume(&guest_, loop_max_throughput)) {
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

} // namespace bifrost::actors
