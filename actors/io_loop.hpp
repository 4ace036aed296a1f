// An I/O loop: one libuv loop on its own thread, able to host CAF actors.
//
// Hosting (see docs/ARCHITECTURE.md, "Threads"): a loop-hosted actor (actors/loop_actor.hpp)
// overrides enqueue/launch so that CAF schedules it on this loop's `home` execution unit;
// `home.exec_later()` queues the actor and wakes the loop with uv_async_send, and the loop
// thread calls `resume()`. While an actor runs on this loop, its context is `guest`, whose
// exec_later hands every other actor to the CAF scheduler: a scheduler actor woken by a
// message from a loop actor never runs on the I/O thread.
//
// Thread affinity: construct and destroy on the owning (main) thread. start() spawns the
// loop thread; everything else (uv handles, hosted actors' sockets) is touched only on that
// thread. post() and the execution units are safe from any thread.
// Shutdown order: quit hosted actors -> stop() (joins the thread after closing every handle)
// -> destroy the actor system.
#pragma once

#include <caf/execution_unit.hpp>
#include <caf/fwd.hpp>
#include <caf/resumable.hpp>

#include <uv.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bifrost::actors {

class io_loop {
public:
  io_loop(caf::actor_system& sys, int index);
  ~io_loop();
  io_loop(const io_loop&) = delete;
  io_loop& operator=(const io_loop&) = delete;

  /// Starts the loop thread. Returns once the loop runs.
  void start();
  /// Runs `on_stop` on the loop thread, closes every remaining handle, joins the thread.
  void stop(std::function<void()> on_stop = {});

  /// Runs `fn` on the loop thread (from any thread; FIFO).
  void post(std::function<void()> fn);

  uv_loop_t* uv() noexcept { return &loop_; }
  int index() const noexcept { return index_; }
  bool on_loop_thread() const noexcept { return std::this_thread::get_id() == thread_id_; }
  caf::actor_system& system() noexcept { return sys_; }

  /// Execution unit that schedules actors on this loop (used by loop_actor's enqueue/launch).
  caf::execution_unit& home() noexcept { return home_; }

  /// Loop-hosted actors alive on this loop (constructed and not yet destroyed).
  int hosted() const noexcept { return hosted_.load(std::memory_order_acquire); }
  void hosted_add(int d) noexcept { hosted_.fetch_add(d, std::memory_order_acq_rel); }

  /// Resumed actors, messages and wake-ups handled on this loop (for stats).
  uint64_t resumes() const noexcept { return resumes_.load(std::memory_order_relaxed); }

private:
  struct home_unit : caf::execution_unit {
    home_unit(caf::actor_system* sys, io_loop* l) : caf::execution_unit(sys), loop(l) {}
    void exec_later(caf::resumable* ptr) override;
    io_loop* loop;
  };
  struct guest_unit : caf::execution_unit {
    explicit guest_unit(caf::actor_system* sys) : caf::execution_unit(sys) {}
    void exec_later(caf::resumable* ptr) override;
  };

  static void on_wake(uv_async_t* h);
  void drain();

  caf::actor_system& sys_;
  int index_;
  uv_loop_t loop_;
  uv_async_t wake_;
  std::thread thread_;
  std::thread::id thread_id_;
  home_unit home_;
  guest_unit guest_;

  std::mutex mtx_;
  std::vector<caf::resumable*> ready_;             // guarded by mtx_
  std::vector<std::function<void()>> posted_;      // guarded by mtx_
  bool stopping_ = false;                          // guarded by mtx_
  std::atomic<uint64_t> resumes_{0};
  std::atomic<int> hosted_{0};
};

} // namespace bifrost::actors
