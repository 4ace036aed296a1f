// The dispatcher's hand-over of writes no connection waits for: a write still running at a
// local shard when its connection closed (dispatcher::adopt), and the node's own writes
// (dispatcher::add_own_write), go to the replicator once their result says they changed the
// item, and only then.
#include "actors/connection.hpp"
#include "actors/dispatcher.hpp"
#include "actors/io_loop.hpp"
#include "actors/messages.hpp"
#include "actors/route_table.hpp"
#include "cluster/ring.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace bifrost;
using namespace bifrost::actors;
using namespace std::chrono_literals;

namespace {

// Stands in for a storage shard: answers each batch with the status its key maps to (miss
// for any other key).
class fake_shard : public caf::event_based_actor {
public:
  fake_shard(caf::actor_config& cfg, std::map<std::string, storage::status> answers)
    : caf::event_based_actor(cfg), answers_(std::move(answers)) {}
  caf::behavior make_behavior() override {
    return {
      [this](exec_atom, uint64_t tag, storage::op_batch& ops) {
        storage::result_batch rs(ops.size());
        for (size_t i = 0; i < ops.size(); ++i) {
          auto it = answers_.find(ops[i].key);
          rs[i].st = it == answers_.end() ? storage::status::miss : it->second;
        }
        send(caf::actor_cast<caf::actor>(current_sender()), result_atom::value, tag,
             std::move(rs));
      },
    };
  }

private:
  std::map<std::string, storage::status> answers_;
};

// Stands in for a member that stopped answering: keeps every batch (and its sender) unanswered
// until it gets (close_atom), then answers them all `not_found`.
class silent_member : public caf::event_based_actor {
public:
  using caf::event_based_actor::event_based_actor;
  caf::behavior make_behavior() override {
    return {
      [this](warm_atom, uint64_t tag, storage::op_batch& ops) {
        held_.push_back({caf::actor_cast<caf::actor>(current_sender()), tag, ops.size()});
      },
      [this](close_atom) {
        for (auto& h : held_)
          send(h.to, result_atom::value, h.tag,
               storage::result_batch(h.ops, storage::result::of(storage::status::not_found)));
        held_.clear();
      },
    };
  }

private:
  struct held {
    caf::actor to;
    uint64_t tag;
    size_t ops;
  };
  std::vector<held> held_;
};

// Stands in for a member (its data link or peer actor): records each exec batch's keys and
// the placement it came with (0: none), in order, and answers nothing.
class recording_member : public caf::event_based_actor {
public:
  struct batch {
    std::vector<std::string> keys;
    uint64_t placed_by;
  };
  recording_member(caf::actor_config& cfg, std::shared_ptr<std::vector<batch>> log,
                   std::shared_ptr<std::mutex> m)
    : caf::event_based_actor(cfg), log_(std::move(log)), m_(std::move(m)) {}
  caf::behavior make_behavior() override {
    return {
      [this](exec_atom, uint64_t, storage::op_batch& ops) { record(ops, 0); },
      [this](exec_atom, uint64_t, storage::op_batch& ops, uint64_t placed_by) {
        record(ops, placed_by);
      },
    };
  }

private:
  void record(const storage::op_batch& ops, uint64_t placed_by) {
    batch b{{}, placed_by};
    for (const auto& o : ops)
      b.keys.push_back(o.key);
    std::lock_guard<std::mutex> lock(*m_);
    log_->push_back(std::move(b));
  }
  std::shared_ptr<std::vector<batch>> log_;
  std::shared_ptr<std::mutex> m_;
};

// The batches in `log` once it holds `n` of them, or after 3 s (fewer then).
std::vector<recording_member::batch> wait_for_batches(
    const std::vector<recording_member::batch>& log, std::mutex& m, size_t n) {
  for (int i = 0; i < 300; ++i) {
    {
      std::lock_guard<std::mutex> lock(m);
      if (log.size() >= n)
        return log;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::lock_guard<std::mutex> lock(m);
  return log;
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<io_loop> loop;
  loop_counters counters;
  loop_context ctx;
  std::unique_ptr<caf::scoped_actor> replicator;  // the test thread stands in for it
  caf::actor dispatch_handle;

  fixture() {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    loop = std::make_unique<io_loop>(*sys, 0);
    loop->start();
    replicator = std::make_unique<caf::scoped_actor>(*sys);
    auto cv = std::make_shared<cluster_view>();
    cv->replicas = 2;
    cv->replicator = caf::actor_cast<caf::actor>(*replicator);
    auto snap = std::make_shared<route_snapshot>();
    snap->cluster = cv;
    ctx.loop = loop.get();
    ctx.counters = &counters;
    ctx.routes = snap;
    dispatch_handle = sys->spawn<dispatcher>(*loop, ctx);
    ctx.dispatch = static_cast<dispatcher*>(caf::actor_cast<caf::abstract_actor*>(dispatch_handle));
  }
  ~fixture() {
    (*replicator)->send_exit(dispatch_handle, caf::exit_reason::user_shutdown);
    dispatch_handle = nullptr;
    for (int i = 0; i < 1000 && loop->hosted() > 0; ++i)
      std::this_thread::sleep_for(2ms);
    replicator.reset();
    loop->stop();
  }

  void on_loop(std::function<void()> fn) {
    std::promise<void> done;
    loop->post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

  static storage::op op_of(storage::op_kind kind, const std::string& key) {
    storage::op o;
    o.kind = kind;
    o.key = key;
    return o;
  }

  // The keys of the next replicate message, or none within `limit`.
  std::optional<std::vector<std::string>> replicated(std::chrono::milliseconds limit) {
    std::optional<std::vector<std::string>> out;
    (*replicator)->receive(
      [&](replicate_atom, std::vector<std::string>& keys) { out = std::move(keys); },
      caf::after(limit) >> [] {});
    return out;
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(dispatcher_hand_over, fixture)

BOOST_AUTO_TEST_CASE(a_closed_connections_running_writes_reach_the_replicator_once_they_ran) {
  using storage::op_kind;
  using storage::status;
  auto shard = sys->spawn<fake_shard>(std::map<std::string, status>{
    {"set", status::stored}, {"add-lost", status::not_stored}, {"del", status::deleted},
    {"gat", status::hit}, {"get", status::hit}, {"open", status::stored}});
  // Connection 7 is closed (no entry in ctx.by_id): its writes were adopted. Connection 8's
  // "open" was not: nobody adopted it, so it is dropped as before.
  on_loop([&] {
    auto& d = *ctx.dispatch;
    d.add(shard, 7, 1, 0, op_of(op_kind::store, "set"));
    d.add(shard, 7, 2, 0, op_of(op_kind::store, "add-lost"));
    d.add(shard, 7, 3, 0, op_of(op_kind::remove, "del"));
    auto gat = op_of(op_kind::get, "gat");
    gat.get_touch = true;
    d.add(shard, 7, 4, 0, storage::op(gat));
    d.add(shard, 7, 5, 0, op_of(op_kind::get, "get"));
    d.add(shard, 8, 1, 0, op_of(op_kind::store, "open"));
    d.adopt(7, 1, 0, op_of(op_kind::store, "set"));
    d.adopt(7, 2, 0, op_of(op_kind::store, "add-lost"));
    d.adopt(7, 3, 0, op_of(op_kind::remove, "del"));
    gat.value.clear();
    d.adopt(7, 4, 0, std::move(gat));
    d.adopt(7, 5, 0, op_of(op_kind::get, "get"));  // a plain read changes nothing
  });
  auto keys = replicated(3000ms);
  BOOST_REQUIRE(keys);
  BOOST_CHECK_EQUAL(keys->size(), 3u);
  for (const char* k : {"set", "del", "gat"})
    BOOST_CHECK_MESSAGE(std::find(keys->begin(), keys->end(), k) != keys->end(),
                        k << " not handed to the replicator");
  BOOST_CHECK(!replicated(200ms));  // nothing more, nothing twice
  // A later result for the same request number (a connection id is never reused) finds no
  // adopted write left.
  on_loop([&] { ctx.dispatch->add(shard, 7, 1, 0, op_of(op_kind::store, "set")); });
  BOOST_CHECK(!replicated(200ms));
  (*replicator)->send_exit(shard, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(the_nodes_own_writes_reach_the_replicator_once_stored) {
  using storage::status;
  auto shard = sys->spawn<fake_shard>(
    std::map<std::string, status>{{"kept", status::stored}, {"there", status::not_stored}});
  on_loop([&] {
    auto keep = op_of(storage::op_kind::store, "kept");
    keep.mode = storage::store_mode::add;
    keep.value = "v";
    ctx.dispatch->add_own_write(shard, std::move(keep));
    auto refused = op_of(storage::op_kind::store, "there");  // a write got there first
    refused.mode = storage::store_mode::add;
    ctx.dispatch->add_own_write(shard, std::move(refused));
  });
  auto keys = replicated(3000ms);
  BOOST_REQUIRE(keys);
  BOOST_CHECK_EQUAL(keys->size(), 1u);
  BOOST_CHECK_EQUAL(keys->at(0), "kept");
  BOOST_CHECK(!replicated(200ms));
  (*replicator)->send_exit(shard, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(without_replicas_nothing_is_handed_over) {
  auto cv = std::make_shared<cluster_view>();
  cv->replicas = 1;  // the cluster view changed to R = 1 after the write was adopted
  cv->replicator = caf::actor_cast<caf::actor>(*replicator);
  auto snap = std::make_shared<route_snapshot>();
  snap->cluster = cv;
  auto shard = sys->spawn<fake_shard>(
    std::map<std::string, storage::status>{{"set", storage::status::stored}});
  on_loop([&] {
    ctx.routes = snap;
    ctx.dispatch->add(shard, 3, 1, 0, op_of(storage::op_kind::store, "set"));
    ctx.dispatch->adopt(3, 1, 0, op_of(storage::op_kind::store, "set"));
    ctx.dispatch->add_own_write(shard, op_of(storage::op_kind::store, "set"));
  });
  BOOST_CHECK(!replicated(300ms));
  (*replicator)->send_exit(shard, caf::exit_reason::user_shutdown);
}

// Deletes of past owners' copies (add_side_effect) to a member that stopped answering do not
// pile up without bound: past max_side_effects unanswered ones, more to it are refused (to
// others not); answers make room again. Nothing of theirs goes to the replicator.
BOOST_AUTO_TEST_CASE(side_effects_a_member_does_not_answer_are_bounded) {
  auto member = sys->spawn<silent_member>();
  size_t taken = 0, refused = 0;
  on_loop([&] {
    for (size_t i = 0; i < dispatcher::max_side_effects + 100; ++i)
      (ctx.dispatch->add_side_effect(member, op_of(storage::op_kind::remove, "k" + std::to_string(i)),
                                     true)
         ? taken
         : refused) += 1;
  });
  BOOST_CHECK_EQUAL(taken, dispatcher::max_side_effects);
  BOOST_CHECK_EQUAL(refused, 100u);
  // Another member's go on meanwhile.
  auto other = sys->spawn<fake_shard>(std::map<std::string, storage::status>{});
  bool others = false;
  on_loop([&] {
    others = ctx.dispatch->add_side_effect(other, op_of(storage::op_kind::remove, "o"), false);
  });
  BOOST_CHECK(others);
  bool room = false;
  for (int i = 0; i < 300 && !room; ++i) {
    // It answers all it holds (the batches leave at the end of the loop's turn: asked again).
    (*replicator)->send(member, close_atom::value);
    std::this_thread::sleep_for(10ms);
    on_loop([&] {
      room = ctx.dispatch->add_side_effect(member, op_of(storage::op_kind::remove, "again"), true);
    });
  }
  BOOST_CHECK(room);
  BOOST_CHECK(!replicated(200ms));
  (*replicator)->send_exit(member, caf::exit_reason::user_shutdown);
  (*replicator)->send_exit(other, caf::exit_reason::user_shutdown);
}

// A member's client ops go with the placement of the ring they were placed by (the data link
// and the peer actor name it in the call: actors/cluster_route.hpp, placement_of), ops
// placed by different rings in different batches, in the order they were added.
BOOST_AUTO_TEST_CASE(a_members_ops_go_with_the_ring_they_were_placed_by) {
  auto log = std::make_shared<std::vector<recording_member::batch>>();
  auto m = std::make_shared<std::mutex>();
  auto member = sys->spawn<recording_member>(log, m);
  on_loop([&] {
    auto& d = *ctx.dispatch;
    d.add(member, 5, 1, 0, op_of(storage::op_kind::get, "a"), false, 11);
    d.add(member, 5, 1, 1, op_of(storage::op_kind::get, "b"), false, 11);
    d.add(member, 5, 2, 0, op_of(storage::op_kind::get, "c"), false, 22);
    d.add(member, 5, 3, 0, op_of(storage::op_kind::get, "d"), false, 11);
    d.add(member, 5, 4, 0, op_of(storage::op_kind::get, "e"));
  });
  const auto got = wait_for_batches(*log, *m, 4);
  BOOST_REQUIRE_EQUAL(got.size(), 4u);
  const std::vector<std::vector<std::string>> keys{{"a", "b"}, {"c"}, {"d"}, {"e"}};
  const std::vector<uint64_t> placed{11, 22, 11, 0};
  for (size_t i = 0; i < 4; ++i) {
    BOOST_TEST(got[i].keys == keys[i], "batch " << i);
    BOOST_TEST(got[i].placed_by == placed[i], "batch " << i);
  }
  (*replicator)->send_exit(member, caf::exit_reason::user_shutdown);
}

// A flush_all goes to a member in a batch of flushes only, though the ops around it were
// placed by the same ring: a member that passes the flush on to nodes that ring lacks answers
// once they have it, and ops after it (a later call) land after it there. In one batch, those
// the member placed again ran beside the passing on (a delete found what the flush took).
BOOST_AUTO_TEST_CASE(a_flush_goes_to_a_member_in_a_batch_of_its_own) {
  auto log = std::make_shared<std::vector<recording_member::batch>>();
  auto m = std::make_shared<std::mutex>();
  auto member = sys->spawn<recording_member>(log, m);
  on_loop([&] {
    auto& d = *ctx.dispatch;
    d.add(member, 5, 1, 0, op_of(storage::op_kind::store, "a"), false, 11);
    d.add(member, 5, 2, 0, op_of(storage::op_kind::flush, ""), false, 11);
    d.add(member, 6, 7, 0, op_of(storage::op_kind::flush, ""), false, 11);  // (another's)
    d.add(member, 5, 3, 0, op_of(storage::op_kind::remove, "b"), false, 11);
  });
  const auto got = wait_for_batches(*log, *m, 3);
  BOOST_REQUIRE_EQUAL(got.size(), 3u);
  const std::vector<std::vector<std::string>> keys{{"a"}, {"", ""}, {"b"}};
  for (size_t i = 0; i < 3; ++i) {
    BOOST_TEST(got[i].keys == keys[i], "batch " << i);
    BOOST_TEST(got[i].placed_by == 11u, "batch " << i);
  }
  (*replicator)->send_exit(member, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(route_table_tests)

// A view that only names a member back (cluster_view::returns_only: a member back from a
// suspicion keeps the rings) reaches the loops, but does not restart the shards' prune and
// copy passes, which it would for nothing: refuted suspicions, common under load, would keep
// a re-replication after a death from finishing. Any other view does.
BOOST_AUTO_TEST_CASE(a_view_that_only_names_a_member_back_leaves_the_prune_alone) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", size_t{2});
  cfg.set("logger.console", caf::atom("none"));
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  caf::actor test = caf::actor_cast<caf::actor>(self);
  // (`test` an argument: CAF 0.17 binds a null tuple for a function actor without one, which
  // UBSan reports.)
  auto shard = sys.spawn([](caf::event_based_actor*, caf::actor test) -> caf::behavior {
    return {[test](prune_atom, cluster_view_ptr&) { caf::anon_send(test, std::string("pruned")); }};
  }, test);
  route_snapshot initial;
  initial.fallback.shards = {shard};
  auto table = sys.spawn<route_table>(initial);
  self->send(table, subscribe_atom::value, test);
  auto next = [&] {  // what came next: "routes", "pruned" or "" (nothing within 300 ms)
    std::string got;
    self->receive([&](routes_atom, route_snapshot_ptr&) { got = "routes"; },
                  [&](std::string& what) { got = what; }, caf::after(300ms) >> [] {});
    return got;
  };
  BOOST_CHECK_EQUAL(next(), "routes");  // (the subscription's)
  auto view = std::make_shared<cluster_view>();
  view->ring = cluster::ring::build({{"a", "127.0.0.1:1", 1, true}}, 1);
  self->send(table, ring_atom::value, cluster_view_ptr(view));
  std::multiset<std::string> got{next(), next()};
  BOOST_CHECK((got == std::multiset<std::string>{"pruned", "routes"}));
  auto back = std::make_shared<cluster_view>(*view);
  back->returns = std::make_shared<const std::map<std::string, uint64_t>>(
    std::map<std::string, uint64_t>{{"b", 1}});
  back->returns_only = true;
  self->send(table, ring_atom::value, cluster_view_ptr(back));
  BOOST_CHECK_EQUAL(next(), "routes");
  BOOST_CHECK_EQUAL(next(), "");
  self->send_exit(table, caf::exit_reason::user_shutdown);
  self->send_exit(shard, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
