// An event-loop thread that hosts CAF actors: the mechanism shared by the libuv I/O loops
// (actors/io_loop.hpp) and the Cap'n Proto/KJ thread (cluster/kj_loop.hpp).
//
// A hosted actor (actors/loop_actor.hpp) overrides enqueue/launch so that CAF schedules it on
// its host's `home` execution unit: `home.exec_later()` queues the actor and calls `wake()`;
// the host's thread then runs `drain()`, which resumes every queued actor with the host's
// `guest` unit as context. `guest.exec_later()` hands every other actor to the CAF scheduler,
// so a scheduler actor woken by a hosted actor never runs on the host thread.
//
// A message between two actors of the same host (a connection and a storage shard on one
// loop) takes the same-thread path: no lock, no syscall, no context switch — the receiver
// runs in the same loop iteration.
//
// Thread affinity: post(), home().exec_later() and hosted() are safe from any thread; drain()
// runs on the host thread only. Shutdown order: quit hosted actors -> stop the host thread ->
// destroy the actor system.
#pragma once

#include <caf/execution_unit.hpp>
#include <caf/fwd.hpp>
#include <caf/resumable.hpp>
#include <caf/actor_control_block.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bifrost::actors {

/// Something a hosted actor does once the host has run every actor that was ready (see
/// actor_host::at_drain_end).
class drain_end_listener {
public:
  virtual void on_drain_end() = 0;

protected:
  ~drain_end_listener() = default;

private:
  friend class actor_host;
  bool drain_end_due_ = false;  // host thread: queued in the host's drain_end_
};

class actor_host {
public:
  explicit actor_host(caf::actor_system& sys);
  virtual ~actor_host();
  actor_host(const actor_host&) = delete;
  actor_host& operator=(const actor_host&) = delete;

  /// Runs `fn` on the host thread (from any thread; FIFO). Dropped once stopping.
  void post(std::function<void()> fn);

  /// Execution unit that schedules actors on this host (used by loop_actor).
  caf::execution_unit& home() noexcept { return home_; }
  caf::actor_system& system() noexcept { return sys_; }
  bool on_host_thread() const noexcept { return std::this_thread::get_id() == thread_id_; }

  /// Hosted actors alive (constructed and not yet terminated; see ~hosted_actor).
  int hosted() const noexcept { return hosted_.load(std::memory_order_acquire); }
  void hosted_add(int d) noexcept { hosted_.fetch_add(d, std::memory_order_acq_rel); }
  /// Host thread: `l->on_drain_end()` runs once, at the end of the drain that is running (or
  /// of the next one), after every actor readied meanwhile has run, however often it was
  /// asked for until then; `keep` (the hosted actor that `l` belongs to) stays alive until
  /// then. A link end asks for each frame it queues and writes them out in one send (no
  /// message to itself, no extra wake-up). Not run once the host is stopping (the reference
  /// is released at stop).
  void at_drain_end(drain_end_listener* l, caf::strong_actor_ptr keep);

  /// Actor resumptions so far (for stats and tests).
  uint64_t resumes() const noexcept { return resumes_.load(std::memory_order_relaxed); }

protected:
  /// Wakes the host thread so that it calls drain() soon. Any thread.
  virtual void wake() = 0;
  /// Host thread: an actor became ready on the host thread itself; make sure drain() runs
  /// before the thread blocks again (no syscall needed). Default: wake().
  virtual void schedule_local() { wake(); }
  /// True while actors readied on the host thread (or drain-end calls) wait for drain().
  bool has_local_work() const noexcept { return !local_ready_.empty() || !drain_end_.empty(); }
  /// Host thread: runs posted functions, then resumes queued actors.
  void drain();
  /// Host thread, at stop: refuse new work from now on.
  void begin_stopping();
  /// Owning thread, after the host thread ended: release actors that never ran again.
  void release_leftovers();
  void set_host_thread() noexcept { thread_id_ = std::this_thread::get_id(); }

private:
  struct home_unit : caf::execution_unit {
    home_unit(caf::actor_system* sys, actor_host* h) : caf::execution_unit(sys), host(h) {}
    void exec_later(caf::resumable* ptr) override;
    actor_host* host;
  };
  struct guest_unit : caf::execution_unit {
    explicit guest_unit(caf::actor_system* sys) : caf::execution_unit(sys) {}
    void exec_later(caf::resumable* ptr) override;
  };

  caf::actor_system& sys_;
  home_unit home_;
  guest_unit guest_;
  std::thread::id thread_id_;
  std::mutex mtx_;
  std::vector<caf::resumable*> ready_;         // guarded by mtx_
  std::vector<caf::resumable*> local_ready_;   // host thread only: readied by the host itself
  struct drain_end_entry {
    drain_end_listener* listener;
    caf::strong_actor_ptr keep;
  };
  std::vector<drain_end_entry> drain_end_;     // host thread only
  // drain()'s working lists (host thread only), kept for their buffers.
  std::vector<caf::resumable*> ready_scratch_;
  std::vector<std::function<void()>> posted_scratch_;
  std::vector<drain_end_entry> due_scratch_;
  bool draining_ = false;                      // host thread only: inside drain()'s rounds
  std::vector<std::function<void()>> posted_;  // guarded by mtx_
  bool stopping_ = false;                      // guarded by mtx_
  std::atomic<uint64_t> resumes_{0};
  std::atomic<int> hosted_{0};
};

} // namespace bifrost::actors
