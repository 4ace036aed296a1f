// Hosting CAF actors on a libuv loop: where actors run, what a dead loop actor answers, and
// that the documented shutdown order does not hang.
#include "actors/io_loop.hpp"
#include "actors/loop_actor.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>

using namespace bifrost::actors;

namespace {

using where_atom = caf::atom_constant<caf::atom("where")>;
using relay_atom = caf::atom_constant<caf::atom("relay")>;
using note_atom = caf::atom_constant<caf::atom("note")>;
using go_atom = caf::atom_constant<caf::atom("go")>;

// Answers with the id of the thread it runs on.
class probe_on_loop : public loop_actor {
public:
  probe_on_loop(caf::actor_config& cfg, io_loop& l) : loop_actor(cfg, l) {}
  caf::behavior make_behavior() override {
    return {
      [](where_atom) { return std::hash<std::thread::id>{}(std::this_thread::get_id()); },
      // Asks a scheduler actor where *it* runs and forwards the answer.
      [this](relay_atom, caf::actor& other) -> caf::result<size_t> {
        auto rp = make_response_promise<size_t>();
        request(other, caf::infinite, where_atom::value).then([rp](size_t id) mutable {
          rp.deliver(id);
        });
        return rp;
      },
    };
  }
};

// A class, not a function: CAF 0.17 dereferences a null shared_ptr<tuple<>> when it spawns a
// function-based actor without arguments (UBSan reports it in CAF's own header).
class probe_on_scheduler : public caf::event_based_actor {
public:
  using caf::event_based_actor::event_based_actor;
  caf::behavior make_behavior() override {
    return {[](where_atom) { return std::hash<std::thread::id>{}(std::this_thread::get_id()); }};
  }
};

// Logs every note, and asks for a drain-end call with each (as a link end asks to write out
// each frame its handlers queue); the call records how many notes it saw.
struct drain_log {
  std::vector<int> notes;
  std::vector<size_t> flushes;  // notes.size() at each drain-end call
  std::atomic<int> calls{0};
};

class collector : public loop_actor, private drain_end_listener {
public:
  collector(caf::actor_config& cfg, io_loop& l, drain_log& log) : loop_actor(cfg, l), log_(log) {}
  caf::behavior make_behavior() override {
    return {[this](note_atom, int i) {
      log_.notes.push_back(i);
      ask();
    }};
  }
  void ask() { loop().at_drain_end(this, caf::actor_cast<caf::strong_actor_ptr>(this)); }

private:
  void on_drain_end() override {
    log_.flushes.push_back(log_.notes.size());
    ++log_.calls;
  }
  drain_log& log_;
};

// On (go, n, to): sends n notes to `to`, from the loop itself.
class sender_on_loop : public loop_actor {
public:
  sender_on_loop(caf::actor_config& cfg, io_loop& l) : loop_actor(cfg, l) {}
  caf::behavior make_behavior() override {
    return {[this](go_atom, int n, caf::actor& to) {
      for (int i = 0; i < n; ++i)
        send(to, note_atom::value, i);
    }};
  }
};

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  fixture() {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

size_t loop_thread_id(io_loop& l) {
  std::atomic<size_t> id{0};
  l.post([&] { id = std::hash<std::thread::id>{}(std::this_thread::get_id()); });
  while (id == 0)
    std::this_thread::yield();
  return id;
}

} // namespace

BOOST_AUTO_TEST_SUITE(io_loop_hosting)

BOOST_FIXTURE_TEST_CASE(loop_actor_runs_on_its_loop_thread, fixture) {
  io_loop loop(*sys, 0);
  loop.start();
  size_t loop_id = loop_thread_id(loop);
  {
    auto a = sys->spawn<probe_on_loop>(loop);
    caf::scoped_actor self{*sys};
    for (int i = 0; i < 100; ++i) {
      self->request(a, std::chrono::seconds(5), where_atom::value)
        .receive([&](size_t id) { BOOST_CHECK_EQUAL(id, loop_id); },
                 [&](caf::error& e) { BOOST_FAIL("request failed: " + sys->render(e)); });
    }
    self->send_exit(a, caf::exit_reason::user_shutdown);
  }
  BOOST_CHECK(loop.hosted() >= 0);
  for (int i = 0; i < 1000 && loop.hosted() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  BOOST_CHECK_EQUAL(loop.hosted(), 0);
  loop.stop();
}

// A loop actor with a delayed message pending (a shard's next prune pass, seconds away) that
// exits: it counts as gone at once, so the node's shutdown does not wait for it, and frees
// its loop; the message, dropped later by CAF's clock thread, destroys the actor without
// touching the loop (before: the count stayed 1 until then, the node waited 3 s, freed the
// loop, and the clock thread's destructor call used the freed loop: ASan, in a chaos run).
class delayed_on_loop : public loop_actor {
public:
  delayed_on_loop(caf::actor_config& cfg, io_loop& l) : loop_actor(cfg, l) {}
  caf::behavior make_behavior() override {
    delayed_send(this, std::chrono::seconds(30), note_atom::value, 1);
    return {[](note_atom, int) {}};
  }
};

BOOST_FIXTURE_TEST_CASE(an_exited_loop_actor_with_a_delayed_message_leaves_its_loop, fixture) {
  auto loop = std::make_unique<io_loop>(*sys, 0);
  loop->start();
  {
    auto a = sys->spawn<delayed_on_loop>(*loop);
    caf::scoped_actor self{*sys};
    self->send_exit(a, caf::exit_reason::user_shutdown);
  }
  for (int i = 0; i < 500 && loop->hosted() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  BOOST_CHECK_EQUAL(loop->hosted(), 0);
  loop->stop();
  loop.reset();  // the actor object still lives (the clock holds the message); ASan: no use
}

BOOST_FIXTURE_TEST_CASE(scheduler_actor_woken_by_loop_actor_stays_off_the_loop, fixture) {
  io_loop loop(*sys, 0);
  loop.start();
  size_t loop_id = loop_thread_id(loop);
  {
    auto a = sys->spawn<probe_on_loop>(loop);
    auto s = sys->spawn<probe_on_scheduler>();
    caf::scoped_actor self{*sys};
    for (int i = 0; i < 200; ++i) {
      self->request(a, std::chrono::seconds(5), relay_atom::value, s)
        .receive([&](size_t id) { BOOST_CHECK_NE(id, loop_id); },
                 [&](caf::error& e) { BOOST_FAIL("relay failed: " + sys->render(e)); });
    }
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->send_exit(s, caf::exit_reason::user_shutdown);
  }
  for (int i = 0; i < 1000 && loop.hosted() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  loop.stop();
}

BOOST_FIXTURE_TEST_CASE(request_to_finished_loop_actor_fails_at_once, fixture) {
  io_loop loop(*sys, 0);
  loop.start();
  {
    auto a = sys->spawn<probe_on_loop>(loop);
    caf::scoped_actor self{*sys};
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
    auto t0 = std::chrono::steady_clock::now();
    bool failed = false;
    self->request(a, std::chrono::seconds(10), where_atom::value)
      .receive([](size_t) {}, [&](caf::error& e) {
        failed = true;
        BOOST_CHECK(e == caf::sec::request_receiver_down);
      });
    BOOST_CHECK(failed);
    BOOST_CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  }
  for (int i = 0; i < 1000 && loop.hosted() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  loop.stop();
}

BOOST_FIXTURE_TEST_CASE(post_runs_in_order_on_the_loop, fixture) {
  io_loop loop(*sys, 0);
  loop.start();
  std::vector<int> seen;
  std::atomic<bool> done{false};
  for (int i = 0; i < 1000; ++i)
    loop.post([&, i] {
      BOOST_CHECK(loop.on_loop_thread());
      seen.push_back(i);
      if (i == 999)
        done = true;
    });
  while (!done)
    std::this_thread::yield();
  loop.stop();
  BOOST_REQUIRE_EQUAL(seen.size(), 1000u);
  for (int i = 0; i < 1000; ++i)
    BOOST_CHECK_EQUAL(seen[static_cast<size_t>(i)], i);
}

BOOST_FIXTURE_TEST_CASE(drain_end_runs_once_after_every_ready_actor_ran, fixture) {
  io_loop loop(*sys, 0);
  loop.start();
  drain_log log;
  {
    auto c = sys->spawn<collector>(loop, log);
    auto s = sys->spawn<sender_on_loop>(loop);
    // 200 notes: more than one resume of the collector takes (64), in one drain.
    caf::anon_send(s, go_atom::value, 200, c);
    for (int i = 0; i < 2000 && log.calls == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<size_t> flushes;
    size_t notes = 0;
    std::atomic<bool> read{false};
    loop.post([&] {
      flushes = log.flushes;
      notes = log.notes.size();
      read = true;
    });
    while (!read)
      std::this_thread::yield();
    BOOST_CHECK_EQUAL(notes, 200u);
    BOOST_REQUIRE_EQUAL(flushes.size(), 1u);
    BOOST_CHECK_EQUAL(flushes[0], 200u);  // after every note, not after the first resume
    caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  }
  for (int i = 0; i < 1000 && loop.hosted() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  loop.stop();
}

BOOST_FIXTURE_TEST_CASE(drain_end_asked_outside_a_drain_runs_without_another_event, fixture) {
  io_loop loop(*sys, 0);
  loop.start();
  drain_log log;
  {
    auto c = sys->spawn<collector>(loop, log);
    // From a check hook (the end of a loop iteration, outside any drain), once: nothing else
    // wakes the loop afterwards, so the call must not wait for another event.
    auto* raw = caf::actor_cast<caf::abstract_actor*>(c);
    std::atomic<bool> hooked{false};
    uint64_t hook = 0;
    loop.post([&] {
      hook = loop.add_check_hook([&] {
        if (hooked.exchange(true))
          return;
        static_cast<collector*>(raw)->ask();
      });
    });
    for (int i = 0; i < 5000 && log.calls == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    BOOST_CHECK(hooked);
    BOOST_CHECK_EQUAL(log.calls.load(), 1);
    std::atomic<bool> removed{false};
    loop.post([&] {
      loop.remove_check_hook(hook);
      removed = true;
    });
    while (!removed)
      std::this_thread::yield();
    caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  }
  for (int i = 0; i < 1000 && loop.hosted() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  loop.stop();
}

BOOST_AUTO_TEST_SUITE_END()
