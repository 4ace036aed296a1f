#include "actors/io_loop.hpp"

#include <cstdio>
#include <cstdlib>
#include <future>

namespace bifrost::actors {

io_loop::io_loop(caf::actor_system& sys, int index) : actor_host(sys), index_(index) {
  if (uv_loop_init(&loop_) != 0) {
    std::fprintf(stderr, "uv_loop_init failed\n");
    std::abort();
  }
  uv_async_init(&loop_, &wake_, &io_loop::on_wake);
  wake_.data = this;
  uv_idle_init(&loop_, &idle_);
  idle_.data = this;
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
    set_host_thread();
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
    begin_stopping();
    // Close every handle still open (the wake handle too) so that uv_run returns.
    uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h))
          uv_close(h, nullptr);
      },
      nullptr);
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
  }
}

void io_loop::on_wake(uv_async_t* h) {
  static_cast<io_loop*>(h->data)->drain();
}

void io_loop::on_idle(uv_idle_t* h) {
  auto* self = static_cast<io_loop*>(h->data);
  self->idle_on_ = false;
  uv_idle_stop(h);
  self->drain();  // calls schedule_local() again if work remains
}

} // namespace bifrost::actors
