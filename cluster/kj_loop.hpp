// The KJ thread: one kj event loop (Cap'n Proto RPC, kj-tls) on its own thread, hosting CAF
// actors (actors/actor_host.hpp) — the peer actors, one per remote node.
//
// Wake-up: an eventfd "doorbell" observed by KJ's UnixEventPort; any thread may ring it
// (kj::Executor::executeAsync would need a KJ loop on the calling thread, which CAF workers do
// not have). Every KJ object is created and destroyed on this thread only.
//
// Lifecycle: start(setup) runs `setup` on the KJ thread (e.g. bind the RPC listener) and
// returns its error synchronously; stop(teardown) runs `teardown` on the KJ thread (cancel
// task sets, destroy the RPC system), lets the loop drain, ends the thread and releases actors
// that never ran again. Quit hosted actors before stop(); stop() before destroying the system.
#pragma once

#include "actors/actor_host.hpp"

#include <kj/async-io.h>

#include <functional>
#include <future>
#include <string>
#include <thread>

namespace bifrost::cluster {

class kj_loop : public actors::actor_host {
public:
  explicit kj_loop(caf::actor_system& sys);
  ~kj_loop() override;

  /// Starts the thread and runs `setup` there; returns setup's error ("" = running).
  std::string start(std::function<std::string(kj::AsyncIoContext&)> setup);
  /// Runs `teardown` on the KJ thread, drains the loop, joins the thread. Idempotent.
  void stop(std::function<void()> teardown = {});

  /// The async I/O context of the KJ thread (only valid on that thread, while running).
  kj::AsyncIoContext& io() noexcept { return *io_; }

protected:
  void wake() override;

private:
  void run(std::function<std::string(kj::AsyncIoContext&)> setup, std::promise<std::string>& started);

  int doorbell_ = -1;  // eventfd
  std::thread thread_;
  kj::AsyncIoContext* io_ = nullptr;
  bool stop_requested_ = false;  // KJ thread only
  std::function<void()> teardown_;
};

} // namespace bifrost::cluster
