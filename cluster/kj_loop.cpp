#include "cluster/kj_loop.hpp"

#include <kj/async-unix.h>
#include <kj/debug.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace bifrost::cluster {

kj_loop::kj_loop(caf::actor_system& sys) : actors::actor_host(sys) {
  doorbell_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (doorbell_ < 0) {
    std::perror("eventfd");
    std::abort();
  }
}

kj_loop::~kj_loop() {
  stop();
  ::close(doorbell_);
}

void kj_loop::wake() {
  uint64_t one = 1;
  ssize_t n = ::write(doorbell_, &one, sizeof(one));
  (void) n;  // EAGAIN: the counter is saturated, the loop is awake anyway
}

std::string kj_loop::start(std::function<std::string(kj::AsyncIoContext&)> setup) {
  std::promise<std::string> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, setup = std::move(setup), &started]() mutable {
    run(std::move(setup), started);
  });
  auto err = fut.get();
  if (!err.empty()) {
    thread_.join();
    release_leftovers();
  }
  return err;
}

void kj_loop::run(std::function<std::string(kj::AsyncIoContext&)> setup,
                  std::promise<std::string>& started) {
  set_host_thread();
  auto io = kj::setupAsyncIo();
  io_ = &io;
  std::string err;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { err = setup(io); })) {
    err = e->getDescription().cStr();
  }
  if (!err.empty()) {
    begin_stopping();
    io_ = nullptr;
    started.set_value(err);
    return;
  }
  started.set_value("");
  kj::UnixEventPort::FdObserver bell(io.unixEventPort, doorbell_,
                                     kj::UnixEventPort::FdObserver::OBSERVE_READ);
  while (!stop_requested_) {
    // Wait for the doorbell while the loop serves RPC; then run posted work and actors.
    bell.whenBecomesReadable().wait(io.waitScope);
    uint64_t n;
    while (::read(doorbell_, &n, sizeof(n)) > 0) {
    }
    drain();
  }
  begin_stopping();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 if (teardown_)
                   teardown_();
                 teardown_ = nullptr;
                 // Let the loop finish what the teardown cancelled (disconnects, destructors).
                 for (int i = 0; i < 8; ++i)
                   io.waitScope.poll();
               })) {
    std::fprintf(stderr, "bifrost: KJ teardown: %s\n", e->getDescription().cStr());
  }
  io_ = nullptr;
}

void kj_loop::stop(std::function<void()> teardown) {
  if (!thread_.joinable())
    return;
  post([this, teardown = std::move(teardown)]() mutable {
    teardown_ = std::move(teardown);
    stop_requested_ = true;
  });
  thread_.join();
  release_leftovers();
}

} // namespace bifrost::cluster
