// The KJ loop: one kj event loop (Cap'n Proto RPC, kj-tls) hosting CAF actors
// (actors/actor_host.hpp) — the peer actors (one per remote node), the bridge to the local
// shards, the router (ops placed again) and, when the service is given no I/O loop for it,
// the replicator (bifrostd hosts it on loop 0). It runs either on a thread of its own or,
// attached, on an I/O loop's thread (attach()), which then serves libuv and KJ together.
//
// Wake-up: an eventfd "doorbell" observed by KJ's UnixEventPort; any thread may ring it
// (kj::Executor::executeAsync would need a KJ loop on the calling thread, which CAF workers do
// not have). Every KJ object is created and destroyed on the loop's thread only.
//
// Attached (measured reason: docs/ARCHITECTURE.md, "RPC on the I/O loop"): the I/O loop's
// thread runs KJ's event loop, and libuv inside it. libuv's backend (epoll) fd is observed by
// KJ; each turn runs uv_run(UV_RUN_NOWAIT), the hosted actors, and KJ's ready events, then
// blocks in KJ's epoll until the doorbell, libuv's fd, libuv's next timer, or work readied on
// the thread itself (schedule_local, the io_loop's poke). A forwarded request then crosses no
// thread: connection -> peer actor -> RPC, and RPC -> shard -> RPC on the owner.
//
// Lifecycle: start(setup) runs `setup` on the KJ loop (e.g. bind the RPC listener) and
// returns its error synchronously; stop(teardown) runs `teardown` there (cancel task sets,
// destroy the RPC system), lets the loop drain, and ends the KJ side (joins the own thread;
// attached, the I/O loop goes on without KJ). Quit hosted actors before stop(); stop() before
// destroying the system. Attached, stop() must not be called from the loop's thread, and the
// I/O loop must not be stopped before the KJ side (if it is, the KJ side ends first, without
// teardown).
#pragma once

#include "actors/actor_host.hpp"

#include <kj/async-io.h>

#include <atomic>
#include <functional>
#include <memory>
#include <future>
#include <string>
#include <thread>

namespace bifrost::actors {
class io_loop;
}

namespace bifrost::cluster {

class kj_loop : public actors::actor_host {
public:
  explicit kj_loop(caf::actor_system& sys);
  ~kj_loop() override;

  /// Before `l` starts: run on l's thread instead of a thread of our own (see above).
  void attach(actors::io_loop& l);
  bool attached() const noexcept { return attached_ != nullptr; }

  /// Starts the KJ side and runs `setup` there; returns setup's error ("" = running).
  std::string start(std::function<std::string(kj::AsyncIoContext&)> setup);
  /// Runs `teardown` on the KJ loop, drains it, ends the KJ side. Idempotent.
  void stop(std::function<void()> teardown = {});

  /// The async I/O context of the KJ loop (only valid on its thread, while running).
  kj::AsyncIoContext& io() noexcept { return *io_; }

protected:
  void wake() override;
  void schedule_local() override;

private:
  struct waker;
  void run(std::function<std::string(kj::AsyncIoContext&)> setup, std::promise<std::string>& started);
  void run_attached();
  void ring_off();  // reads the doorbell until it is empty
  void finish(kj::AsyncIoContext& io);

  int doorbell_ = -1;  // eventfd
  std::thread thread_;
  actors::io_loop* attached_ = nullptr;
  waker* waker_ = nullptr;           // attached, while the KJ side runs (its thread only)
  // attached: the KJ side ended (shared: set_value may still run while stop() returns)
  std::shared_ptr<std::promise<void>> finished_ = std::make_shared<std::promise<void>>();
  std::shared_future<void> finished_future_;
  bool running_ = false;             // the KJ side was started and has not been stopped
  std::atomic<bool> driver_started_{false};  // attached: the loop's thread began run_attached
  kj::AsyncIoContext* io_ = nullptr;
  bool stop_requested_ = false;  // KJ thread only
  std::function<void()> teardown_;
};

} // namespace bifrost::cluster
