// An I/O loop: one libuv loop on its own thread, hosting CAF actors (actors/actor_host.hpp)
// on this loop's thread: listeners and connections (which own its sockets), its dispatcher,
// the storage shards placed on it, a cluster node's data links and link sessions, and on
// loop 0 the replicator.
//
// Wake-up: uv_async_send from other threads; a uv_idle handle for work readied on the loop
// thread itself (runs in the same iteration, no syscall). Thread affinity: construct and destroy on the owning (main) thread;
// start() spawns the loop thread; uv handles are touched only on that thread (or before
// start()). Shutdown order: quit hosted actors -> stop() -> destroy the actor system.
#pragma once

#include "actors/actor_host.hpp"

#include <uv.h>

#include <functional>
#include <thread>

namespace bifrost::actors {

class io_loop : public actor_host {
public:
  io_loop(caf::actor_system& sys, int index);
  ~io_loop() override;

  /// Before start(): the loop thread runs `driver` instead of uv_run(UV_RUN_DEFAULT). The
  /// driver runs this loop itself (uv_run with UV_RUN_NOWAIT between waits of its own) and
  /// returns once uv_run reports no active handles (after stop()). Used to run the KJ event
  /// loop of the cluster RPC on this thread (cluster/kj_loop.hpp, attach()).
  /// `poke` is called on the loop thread whenever work becomes ready on the loop thread itself
  /// (schedule_local), so that a driver blocked in its own wait (called back from there) does
  /// not sleep through it.
  void set_driver(std::function<void()> driver, std::function<void()> poke) {
    driver_ = std::move(driver);
    poke_ = std::move(poke);
  }
  /// Loop thread: no more pokes (the driver's waiting side is gone).
  void clear_poke() { poke_ = nullptr; }
  /// Starts the loop thread. Returns once the loop runs.
  void start();
  /// Runs `on_stop` on the loop thread, closes every remaining handle, joins the thread.
  void stop(std::function<void()> on_stop = {});

  /// Loop thread: runs `fn` at the end of every loop iteration, after the socket callbacks
  /// (uv_check), until remove_check_hook(id). Used to flush per-iteration batches.
  uint64_t add_check_hook(std::function<void()> fn);
  /// Loop thread: the next poll must not block (work is pending for the check hooks).
  void keep_awake() { schedule_local(); }
  void remove_check_hook(uint64_t id);

  uv_loop_t* uv() noexcept { return &loop_; }
  int index() const noexcept { return index_; }
  bool on_loop_thread() const noexcept { return on_host_thread(); }

protected:
  void wake() override;
  void schedule_local() override;

private:
  static void on_wake(uv_async_t* h);
  static void on_idle(uv_idle_t* h);
  static void on_check(uv_check_t* h);

  int index_;
  uv_loop_t loop_;
  uv_async_t wake_;
  uv_idle_t idle_;      // active while same-thread work waits: the loop polls without blocking
  bool idle_on_ = false;
  uv_check_t check_;
  std::vector<std::pair<uint64_t, std::function<void()>>> check_hooks_;  // loop thread only
  uint64_t next_hook_ = 1;
  bool started_ = false;  // owning thread
  std::function<void()> driver_;
  std::function<void()> poke_;
  std::thread thread_;
};

} // namespace bifrost::actors
