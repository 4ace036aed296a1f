#include "actors/io_loop.hpp"

#include <cstdio>
#include <cstdlib>
#include <future>

namespace bifrost::actors {

namespace {

// Closes every handle of `loop` that is not closing yet (uv_run then returns once they are).
void close_all(uv_loop_t* loop) {
  uv_walk(
    loop,
    [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h))
        uv_close(h, nullptr);
    },
    nullptr);
}

} // namespace

io_loop::io_loop(caf::actor_system& sys, int index) : actor_host(sys), index_(index) {
  if (uv_loop_init(&loop_) != 0) {
    std::fprintf(stderr, "uv_loop_init failed\n");
    std::abort();
  }
  uv_async_init(&loop_, &wake_, &io_loop::on_wake);
  wake_.data = this;
  uv_idle_init(&loop_, &idle_);
  idle_.data = this;
  uv_check_init(&loop_, &check_);
  check_.data = this;
}

io_loop::~io_loop() {
  if (thread_.joinable()) {
    stop();
  } else if (!started_) {
    // Never started: close the handles made by the constructor here (no loop thread exists),
    // or uv_loop_close would fail and leak the loop's memory.
    close_all(&loop_);
    uv_run(&loop_, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop_);
}

void io_loop::start() {
  started_ = true;
  std::promise<void> running;
  auto fut = running.get_future();
  thread_ = std::thread([this, &running] {
    set_host_thread();
    running.set_value();
    if (driver_)
      driver_();
    else
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
    begin_stopping();
    // Close every handle still open (the wake handle too) so that uv_run returns.
    close_all(&loop_);
  });
  thread_.join();
  release_leftovers();
}

void io_loop::wake() {
  uv_async_send(&wake_);
}

void io_loop::schedule_local() {
  if (!idle_on_) {
    idle_on_ = true;
    uv_idle_start(&idle_, &io_loop::on_idle);
    if (poke_)
      poke_();
  }
}

void io_loop::on_wake(uv_async_t* h) {
  static_cast<io_loop*>(h->data)->drain();
}

uint64_t io_loop::add_check_hook(std::function<void()> fn) {
  if (check_hooks_.empty())
    uv_check_start(&check_, &io_loop::on_check);
  check_hooks_.emplace_back(next_hook_, std::move(fn));
  return next_hook_++;
}

void io_loop::remove_check_hook(uint64_t id) {
  for (auto it = check_hooks_.begin(); it != check_hooks_.end(); ++it)
    if (it->first == id) {
      check_hooks_.erase(it);
      break;
    }
  if (check_hooks_.empty() && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&check_)))
    uv_check_stop(&check_);
}

void io_loop::on_check(uv_check_t* h) {
  auto* self = static_cast<io_loop*>(h->data);
  for (size_t i = 0; i < self->check_hooks_.size(); ++i)
    self->check_hooks_[i].second();
}

void io_loop::on_idle(uv_idle_t* h) {
  auto* self = static_cast<io_loop*>(h->data);
  self->idle_on_ = false;
  uv_idle_stop(h);
  self->drain();  // calls schedule_local() again if work remains
}

} // namespace bifrost::actors
