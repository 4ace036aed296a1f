// Base class of actors hosted on an I/O loop that use the loop itself (listeners,
// connections, dispatchers, data links and link sessions); actors that only run there
// (shards placed on a loop, the replicator) are hosted_actors (below), which may live on any
// actor_host.
//
// A loop_actor is an ordinary CAF event_based_actor (normal mailbox, behaviours, monitors;
// a request to it after it finished fails at once with request_receiver_down) whose
// scheduling goes to its io_loop instead of the CAF scheduler: it always runs on that loop's
// thread, so it may own uv handles and sockets of that loop directly.
//
// Thread affinity: constructed on any thread (spawn); make_behavior(), every handler and every
// uv callback of its handles run on loop().thread. Socket callbacks run outside CAF's resume
// but on the same thread, so they may touch actor state and send messages (context is the
// loop's guest unit); they must not call quit() — send close_atom to self instead.
#pragma once

#include "actors/actor_host.hpp"
#include "actors/io_loop.hpp"

#include <caf/event_based_actor.hpp>

namespace bifrost::actors {

/// An actor hosted on an actor_host (a libuv loop or the KJ thread); with no host (nullptr)
/// it is an ordinary actor of the CAF scheduler.
class hosted_actor : public caf::event_based_actor {
public:
  hosted_actor(caf::actor_config& cfg, actor_host* host)
    : caf::event_based_actor(cfg), host_(host), home_(host ? &host->home() : nullptr) {
    if (host_)
      host_->hosted_add(1);
  }
  // The host counts its actors until they terminate, not until they are destroyed: a
  // terminated actor may be destroyed much later on another thread (CAF's clock thread drops
  // a pending delayed_send to it at system shutdown, after the node freed its loops), so the
  // destructor must not touch a host that may be gone. Only an actor that never ran
  // (constructed, never launched) leaves it in its destructor.
  ~hosted_actor() override { leave_host(); }

  bool cleanup(caf::error&& fail_state, caf::execution_unit* eu) override {
    const bool r = caf::event_based_actor::cleanup(std::move(fail_state), eu);
    leave_host();
    return r;
  }

  using caf::event_based_actor::enqueue;

  // (By home_, never through host_: CAF's clock thread may ship a delayed message to a
  // terminated actor after its host was freed. The closed mailbox drops it without using the
  // unit, but a call through the freed host is one on a destroyed object: UBSan's vptr check
  // caught it in a stopping bifrostd, under load.)
  void enqueue(caf::mailbox_element_ptr ptr, caf::execution_unit* eu) override {
    caf::event_based_actor::enqueue(std::move(ptr), home_ ? home_ : eu);
  }

  void launch(caf::execution_unit* eu, bool lazy, bool hide) override {
    caf::event_based_actor::launch(home_ ? home_ : eu, lazy, hide);
  }

  actor_host* host() noexcept { return host_; }

private:
  void leave_host() noexcept {
    if (host_ && !left_host_) {
      left_host_ = true;
      host_->hosted_add(-1);
    }
  }
  actor_host* host_;
  caf::execution_unit* home_;  // host_->home(), or null with no host
  bool left_host_ = false;  // actor thread (cleanup), or the destructor after it
};

/// An actor hosted on a libuv I/O loop: may own uv handles of that loop.
class loop_actor : public hosted_actor {
public:
  loop_actor(caf::actor_config& cfg, io_loop& loop) : hosted_actor(cfg, &loop), loop_(loop) {}

  io_loop& loop() noexcept { return loop_; }

private:
  io_loop& loop_;
};

} // namespace bifrost::actors
