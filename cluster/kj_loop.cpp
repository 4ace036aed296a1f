#include "cluster/kj_loop.hpp"

#include "actors/io_loop.hpp"
#include "actors/log.hpp"

#include <kj/async-unix.h>
#include <kj/debug.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace bifrost::cluster {

// Attached mode: what the blocked driver waits for. `fire()` ends the current wait (if any);
// each watched fd re-arms its observer in the same turn it fired, so no edge is lost (KJ's
// observers are edge-triggered and drop an event nobody waits for).
struct kj_loop::waker : kj::TaskSet::ErrorHandler {
  struct watched {
    kj::UnixEventPort::FdObserver obs;
    bool ready = true;
    watched(kj::UnixEventPort& port, int fd)
      : obs(port, fd, kj::UnixEventPort::FdObserver::OBSERVE_READ) {}
  };

  waker(kj::UnixEventPort& port, int bell_fd, int uv_fd)
    : bell(port, bell_fd), uv(port, uv_fd), watchers(*this) {
    watchers.add(watch(bell));
    watchers.add(watch(uv));
  }

  kj::Promise<void> watch(watched& w) {
    return w.obs.whenBecomesReadable().then([this, &w] {
      w.ready = true;
      fire();
      return watch(w);
    });
  }
  void fire() {
    KJ_IF_MAYBE (f, waiting) {
      (*f)->fulfill();
      waiting = nullptr;
    }
  }
  void taskFailed(kj::Exception&& e) override {
    log_line("bifrost: KJ loop watcher: %s\n", e.getDescription().cStr());
  }

  watched bell, uv;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> waiting;
  kj::TaskSet watchers;  // declared last: destroyed first
};

kj_loop::kj_loop(caf::actor_system& sys) : actors::actor_host(sys) {
  doorbell_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (doorbell_ < 0) {
    std::perror("eventfd");
    std::abort();
  }
  finished_future_ = finished_->get_future().share();
}

kj_loop::~kj_loop() {
  stop();
  ::close(doorbell_);
}

void kj_loop::attach(actors::io_loop& l) {
  attached_ = &l;
  running_ = true;  // the driver starts the KJ side with the loop's thread
  l.set_driver([this] { run_attached(); },
               [this] {
                 if (waker_)
                   waker_->fire();
               });
}

void kj_loop::wake() {
  uint64_t one = 1;
  ssize_t n = ::write(doorbell_, &one, sizeof(one));
  (void) n;  // EAGAIN: the counter is saturated, the loop is awake anyway
}

void kj_loop::schedule_local() {
  // On the loop's own thread. Attached, the driver checks for local work before it blocks;
  // it only has to be woken when this runs from inside its wait (a KJ callback).
  if (waker_)
    waker_->fire();
  else
    wake();
}

void kj_loop::ring_off() {
  uint64_t n;
  while (::read(doorbell_, &n, sizeof(n)) > 0) {
  }
}

std::string kj_loop::start(std::function<std::string(kj::AsyncIoContext&)> setup) {
  if (attached_) {
    auto started = std::make_shared<std::promise<std::string>>();
    auto fut = started->get_future();
    post([this, setup = std::move(setup), started]() mutable {
      std::string err;
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { err = setup(*io_); })) {
        err = e->getDescription().cStr();
      }
      started->set_value(err);
    });
    if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
      return "the I/O loop that hosts the RPC is not running";
    return fut.get();
  }
  std::promise<std::string> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, setup = std::move(setup), &started]() mutable {
    run(std::move(setup), started);
  });
  auto err = fut.get();
  if (!err.empty()) {
    thread_.join();
    release_leftovers();
  } else {
    running_ = true;
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
    ring_off();
    drain();
  }
  finish(io);
}

void kj_loop::run_attached() {
  driver_started_ = true;
  // The KJ host now lives on the I/O loop's thread: a loop actor that readies a KJ-hosted
  // actor (the dispatcher sending to the bridge) takes the same-thread path, with no lock and
  // no doorbell write, as between two actors of one loop.
  set_host_thread();
  auto finished = finished_;
  uv_loop_t* uv = attached_->uv();
  int uv_fd = uv_backend_fd(uv);
  bool uv_alive = true;
  {
    auto io = kj::setupAsyncIo();
    io_ = &io;
    waker w(io.unixEventPort, doorbell_, uv_fd);
    waker_ = &w;
    auto uv_has_events = [uv_fd] {
      // libuv's epoll is level-triggered inside: events it left for the next round keep its
      // fd readable without a new edge for KJ's (edge-triggered) observer.
      struct pollfd p = {uv_fd, POLLIN, 0};
      return ::poll(&p, 1, 0) > 0;
    };
    while (!stop_requested_) {
      w.uv.ready = false;
      if (uv_run(uv, UV_RUN_NOWAIT) == 0) {
        uv_alive = false;  // the I/O loop was stopped first: end the KJ side too
        break;
      }
      if (w.bell.ready || has_local_work()) {
        if (w.bell.ready) {  // read the eventfd only when it rang (actors of this thread
          w.bell.ready = false;  // readied by this thread do not ring it)
          ring_off();
        }
        drain();
      }
      io.waitScope.poll();
      if (stop_requested_)
        break;
      if (w.bell.ready || w.uv.ready || has_local_work() || uv_backend_timeout(uv) == 0 ||
          uv_has_events())
        continue;
      auto paf = kj::newPromiseAndFulfiller<void>();
      w.waiting = kj::mv(paf.fulfiller);
      int timeout = uv_backend_timeout(uv);
      if (timeout > 0)
        paf.promise.exclusiveJoin(io.provider->getTimer().afterDelay(timeout * kj::MILLISECONDS))
          .wait(io.waitScope);
      else
        paf.promise.wait(io.waitScope);
      w.waiting = nullptr;
    }
    finish(io);
    waker_ = nullptr;
    attached_->clear_poke();  // this object may go away while the I/O loop runs on
  }
  finished->set_value();
  if (uv_alive)
    uv_run(uv, UV_RUN_DEFAULT);  // the rest of the I/O loop's life, without KJ
}

void kj_loop::finish(kj::AsyncIoContext& io) {
  begin_stopping();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 if (teardown_)
                   teardown_();
                 teardown_ = nullptr;
                 // Let the loop finish what the teardown cancelled (disconnects, destructors).
                 for (int i = 0; i < 8; ++i)
                   io.waitScope.poll();
               })) {
    log_line("bifrost: KJ teardown: %s\n", e->getDescription().cStr());
  }
  io_ = nullptr;
}

void kj_loop::stop(std::function<void()> teardown) {
  if (!running_)
    return;
  running_ = false;
  post([this, teardown = std::move(teardown)]() mutable {
    teardown_ = std::move(teardown);
    stop_requested_ = true;
  });
  if (attached_) {
    if (driver_started_ && on_host_thread() &&
        finished_future_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      // From the loop's own thread the wait below could never end, and the leftovers would be
      // released under the running driver: a caller's bug (kj_loop.hpp), stopped loudly.
      std::fprintf(stderr, "bifrost: kj_loop::stop called on the thread that runs it\n");
      std::abort();
    }
    if (!driver_started_) {
      begin_stopping();  // the I/O loop never ran: nothing to wait for
    } else {
      finished_future_.wait();
    }
  } else {
    thread_.join();
  }
  release_leftovers();
}

} // namespace bifrost::cluster
