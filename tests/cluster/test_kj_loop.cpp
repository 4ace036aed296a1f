// The KJ loop attached to an I/O loop (cluster/kj_loop.hpp): one thread serves libuv and KJ —
// KJ timers and libuv timers both fire while the other side is idle, work readied from inside
// a KJ callback is not slept through, actors of both hosts talk on that thread, and every
// stop order ends without a hang.
#include "cluster/kj_loop.hpp"

#include "actors/io_loop.hpp"
#include "actors/loop_actor.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

using namespace bifrost;
using namespace std::chrono_literals;

namespace {

using where_atom = caf::atom_constant<caf::atom("where")>;
using hit_atom = caf::atom_constant<caf::atom("hit")>;

size_t this_thread() {
  return std::hash<std::thread::id>{}(std::this_thread::get_id());
}

// On the I/O loop: answers where it runs; counts hits.
class on_loop : public actors::loop_actor {
public:
  on_loop(caf::actor_config& cfg, actors::io_loop& l, std::shared_ptr<std::atomic<int>> hits)
    : actors::loop_actor(cfg, l), hits_(std::move(hits)) {}
  caf::behavior make_behavior() override {
    return {
      [](where_atom) { return this_thread(); },
      [this](hit_atom) { ++*hits_; },
    };
  }

private:
  std::shared_ptr<std::atomic<int>> hits_;
};

// On the KJ loop: asks the loop actor where it runs and answers both thread ids.
class on_kj : public actors::hosted_actor {
public:
  on_kj(caf::actor_config& cfg, cluster::kj_loop* l, caf::actor other)
    : actors::hosted_actor(cfg, l), other_(std::move(other)) {}
  caf::behavior make_behavior() override {
    return {
      [this](where_atom) -> caf::result<size_t, size_t> {
        auto rp = make_response_promise<size_t, size_t>();
        request(other_, caf::infinite, where_atom::value).then([rp](size_t theirs) mutable {
          rp.deliver(this_thread(), theirs);
        });
        return rp;
      },
    };
  }

private:
  caf::actor other_;
};

template <class F>
bool eventually(F f, std::chrono::milliseconds limit = 2000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f())
      return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  fixture() {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

// KJ objects owned by the test, created and destroyed on the KJ side.
struct kj_side {
  kj::Maybe<kj::Promise<void>> timer;
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(kj_loop_attached, fixture)

BOOST_AUTO_TEST_CASE(one_thread_serves_libuv_and_kj) {
  actors::io_loop loop(*sys, 0);
  auto kj = std::make_shared<cluster::kj_loop>(*sys);
  kj->attach(loop);
  loop.start();
  std::atomic<size_t> kj_thread{0};
  auto* side = new kj_side;
  auto err = kj->start([&](kj::AsyncIoContext&) {
    kj_thread = this_thread();
    return std::string();
  });
  BOOST_REQUIRE_EQUAL(err, "");
  std::promise<size_t> loop_thread;
  loop.post([&] { loop_thread.set_value(this_thread()); });
  BOOST_CHECK_EQUAL(loop_thread.get_future().get(), kj_thread.load());

  auto hits = std::make_shared<std::atomic<int>>(0);
  auto la = sys->spawn<on_loop>(loop, hits);
  // A KJ timer fires while libuv has nothing to do, and its callback readies the loop actor
  // from inside KJ's wait: the driver must not sleep through that.
  std::atomic<bool> kj_fired{false};
  kj->post([&, side, la] {
    side->timer = kj->io()
                    .provider->getTimer()
                    .afterDelay(30 * kj::MILLISECONDS)
                    .then([&, la] {
                      kj_fired = true;
                      caf::anon_send(la, hit_atom::value);
                    })
                    .eagerlyEvaluate(nullptr);
  });
  BOOST_CHECK(eventually([&] { return kj_fired.load(); }));
  BOOST_CHECK(eventually([&] { return hits->load() == 1; }, 500ms));

  // A libuv timer fires while KJ has nothing to do.
  std::atomic<bool> uv_fired{false};
  uv_timer_t t;
  t.data = &uv_fired;
  loop.post([&] {
    uv_timer_init(loop.uv(), &t);
    uv_timer_start(
      &t, [](uv_timer_t* h) { static_cast<std::atomic<bool>*>(h->data)->store(true); }, 30, 0);
  });
  BOOST_CHECK(eventually([&] { return uv_fired.load(); }));
  loop.post([&] { uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr); });

  // Actors of both hosts talk, on one thread.
  {
    auto ka = sys->spawn<on_kj>(kj.get(), la);
    caf::scoped_actor self{*sys};
    self->request(ka, 2s, where_atom::value)
      .receive(
        [&](size_t mine, size_t theirs) {
          BOOST_CHECK_EQUAL(mine, kj_thread.load());
          BOOST_CHECK_EQUAL(theirs, kj_thread.load());
        },
        [&](caf::error& e) { BOOST_FAIL("no answer: " << sys->render(e)); });
    caf::anon_send_exit(ka, caf::exit_reason::user_shutdown);
    ka = nullptr;
    BOOST_CHECK(eventually([&] { return kj->hosted() == 0; }));
  }

  // The KJ side ends first; the I/O loop goes on without it.
  kj->stop([side] { delete side; });
  std::promise<void> still;
  loop.post([&] { still.set_value(); });
  BOOST_CHECK(still.get_future().wait_for(2s) == std::future_status::ready);
  caf::anon_send(la, hit_atom::value);
  BOOST_CHECK(eventually([&] { return hits->load() == 2; }));
  caf::anon_send_exit(la, caf::exit_reason::user_shutdown);
  la = nullptr;
  BOOST_CHECK(eventually([&] { return loop.hosted() == 0; }));
  loop.stop();
}

BOOST_AUTO_TEST_CASE(io_loop_stopped_first_ends_the_kj_side) {
  actors::io_loop loop(*sys, 0);
  auto kj = std::make_shared<cluster::kj_loop>(*sys);
  kj->attach(loop);
  loop.start();
  BOOST_REQUIRE_EQUAL(kj->start([](kj::AsyncIoContext&) { return std::string(); }), "");
  auto t0 = std::chrono::steady_clock::now();
  loop.stop();
  kj->stop();  // already ended with the loop: returns at once
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

BOOST_AUTO_TEST_CASE(attached_but_never_run) {
  actors::io_loop loop(*sys, 0);
  auto kj = std::make_shared<cluster::kj_loop>(*sys);
  kj->attach(loop);
  kj->stop();  // the loop never started: nothing to wait for
  BOOST_CHECK(kj->attached());
}

BOOST_AUTO_TEST_CASE(setup_errors_are_returned) {
  actors::io_loop loop(*sys, 0);
  auto kj = std::make_shared<cluster::kj_loop>(*sys);
  kj->attach(loop);
  loop.start();
  BOOST_CHECK_EQUAL(kj->start([](kj::AsyncIoContext&) -> std::string { return "no port"; }),
                    "no port");
  BOOST_CHECK_EQUAL(
    kj->start([](kj::AsyncIoContext&) -> std::string { KJ_FAIL_REQUIRE("thrown"); }).empty(),
    false);
  kj->stop();
  loop.stop();
}

BOOST_AUTO_TEST_SUITE_END()
