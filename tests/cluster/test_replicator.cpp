// The replicator (cluster/replicator.hpp), hosted on an I/O loop, against recording stand-ins
// for the local shard, one member's data link and another member's RPC peer actor: what it
// reads, what each owner gets, how background keys are batched, what is sent again, and what
// a waiting writer is told.
#include "actors/cluster_view.hpp"
#include "actors/io_loop.hpp"
#include "actors/messages.hpp"
#include "cluster/convert.hpp"
#include "cluster/replicator.hpp"
#include "cluster/ring.hpp"
#include "cluster/test_support.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

using namespace bifrost;
using namespace std::chrono_literals;
using actors::result_atom;

namespace {

struct received {
  caf::actor sender;
  uint64_t tag = 0;
  storage::op_batch ops;
  bool apply = false;  // came as apply_atom (else exec_atom)
};

using inbox = test::inbox<received>;

// Stands for a storage shard, a data link or a peer actor: records; the test answers.
class recorder : public caf::event_based_actor {
public:
  recorder(caf::actor_config& cfg, inbox* log) : caf::event_based_actor(cfg), log_(log) {}
  caf::behavior make_behavior() override {
    return {
      [this](actors::exec_atom, uint64_t tag, storage::op_batch& ops) {
        log_->put({caf::actor_cast<caf::actor>(current_sender()), tag, std::move(ops), false});
      },
      [this](actors::apply_atom, uint64_t tag, storage::op_batch& ops) {
        log_->put({caf::actor_cast<caf::actor>(current_sender()), tag, std::move(ops), true});
      },
    };
  }

private:
  inbox* log_;
};

storage::result hit(const std::string& v, uint32_t flags = 0, uint64_t cas = 1) {
  storage::result r;
  r.st = storage::status::hit;
  r.value = storage::pinned_slice::from_memory(std::make_shared<const std::string>(v));
  r.flags = flags;
  r.cas = cas;
  return r;
}

storage::result status_of(storage::status st) {
  storage::result r;
  r.st = st;
  return r;
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<actors::io_loop> loop;
  inbox shard_log, link_log, peer_log, peer_a_log;
  // Whether member a's link exists (the link function returns it); read on the loop.
  std::shared_ptr<std::atomic<bool>> link_up = std::make_shared<std::atomic<bool>>(true);
  caf::actor shard, link_a, peer_a, peer_b;
  caf::actor repl;
  actors::cluster_view_ptr view;
  uint32_t id_a = 0, id_b = 0;
  std::unique_ptr<caf::scoped_actor> self;

  fixture() {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    loop = std::make_unique<actors::io_loop>(*sys, 0);
    loop->start();
    shard = sys->spawn<recorder>(&shard_log);
    link_a = sys->spawn<recorder>(&link_log);
    peer_a = sys->spawn<recorder>(&peer_a_log);  // used only while a has no link
    peer_b = sys->spawn<recorder>(&peer_log);
    self = std::make_unique<caf::scoped_actor>(*sys);
  }

  ~fixture() {
    if (repl)
      (*self)->send_exit(repl, caf::exit_reason::user_shutdown);
    repl = nullptr;
    view.reset();
    shard_log.clear();
    link_log.clear();
    peer_log.clear();
    peer_a_log.clear();
    for (auto& a : {shard, link_a, peer_a, peer_b})
      (*self)->send_exit(a, caf::exit_reason::user_shutdown);
    self.reset();
    for (int i = 0; i < 1000 && loop->hosted() > 0; ++i)
      std::this_thread::sleep_for(2ms);
    // The view it holds names the replicator itself: it must drop it when it exits.
    BOOST_CHECK_MESSAGE(loop->hosted() == 0, "the replicator did not go away after its exit");
    loop->stop();
  }

  // A replicator on the loop for a ring of self, a and b, every key owned by all three (R=3):
  // member a is reached through its link, member b through its RPC peer actor.
  void start(uint32_t timeout_ms = 2000, uint32_t replicas = 3) {
    cluster::replicator_config rc;
    rc.shards = {shard};
    rc.timeout_ms = timeout_ms;
    auto ring = cluster::ring::build({{"a", "127.0.0.1:1", 1, true},
                                      {"b", "127.0.0.1:2", 1, true},
                                      {"self", "127.0.0.1:3", 1, true}},
                                     1);
    auto v = std::make_shared<actors::cluster_view>();
    v->ring = ring;
    v->peers.resize(3);
    for (uint32_t id = 0; id < 3; ++id) {
      auto& name = ring->member(id).name;
      if (name == "a")
        id_a = id;
      else if (name == "b")
        id_b = id;
      else
        v->self = id;
    }
    v->peers[id_a] = peer_a;
    v->peers[id_b] = peer_b;
    v->replicas = replicas;
    uint32_t a = id_a;
    auto link = link_a;
    auto up = link_up;
    rc.link = [a, link, up](const actors::cluster_view&, uint32_t id) {
      return id == a && up->load() ? link : caf::actor{};
    };
    repl = cluster::spawn_replicator(*sys, *loop, std::move(rc));
    v->replicator = repl;
    view = v;
    (*self)->send(repl, actors::ring_atom::value, actors::cluster_view_ptr(view));
  }

  void on_loop(std::function<void()> fn) { test::on_loop(*loop, std::move(fn)); }

  static std::vector<std::string> keys_of(const storage::op_batch& ops) {
    std::vector<std::string> k;
    for (auto& o : ops)
      k.push_back(o.key);
    return k;
  }

  std::optional<bool> replicated(uint64_t tag, std::chrono::milliseconds limit = 3000ms) {
    std::optional<bool> out;
    (*self)->receive(
      [&](actors::replicated_atom, uint64_t got, bool ok) {
        BOOST_CHECK_EQUAL(got, tag);
        out = ok;
      },
      caf::after(limit) >> [] {});
    return out;
  }
};

using strings = std::vector<std::string>;

} // namespace

BOOST_FIXTURE_TEST_SUITE(replicator, fixture)

BOOST_AUTO_TEST_CASE(background_keys_are_read_once_and_sent_to_each_owner_as_state) {
  start();
  // Two messages in one go (posted on the loop, so both wait in the mailbox): one batch.
  auto r = repl;
  on_loop([r] {
    caf::anon_send(r, actors::replicate_atom::value, strings{"k2", "k1"});
    caf::anon_send(r, actors::replicate_atom::value, strings{"k3", "k2"});
  });
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  BOOST_CHECK(!read->apply);
  BOOST_CHECK((keys_of(read->ops) == strings{"k1", "k2", "k3"}));
  for (auto& o : read->ops) {
    BOOST_CHECK(o.kind == storage::op_kind::get);
    BOOST_CHECK(!o.get_bump);  // replication counts no access
    BOOST_CHECK(o.keep_token);  // nor takes a stale item's win token
  }
  BOOST_CHECK(!shard_log.take(100ms));  // one read for all
  storage::result_batch state;
  state.push_back(hit("one", 5, 77));
  state.push_back(status_of(storage::status::miss));
  state.push_back(hit("three"));
  state[2].exptime = 2000000000;
  caf::anon_send(read->sender, result_atom::value, read->tag, std::move(state));

  for (auto* log : {&link_log, &peer_log}) {
    auto got = log->take();
    BOOST_REQUIRE(got);
    BOOST_CHECK(got->apply);
    BOOST_REQUIRE((keys_of(got->ops) == strings{"k1", "k2", "k3"}));
    auto& o = got->ops;
    BOOST_CHECK(o[0].kind == storage::op_kind::store && o[0].mode == storage::store_mode::set);
    BOOST_CHECK_EQUAL(o[0].value, "one");
    BOOST_CHECK_EQUAL(o[0].flags, 5u);
    BOOST_CHECK_EQUAL(o[0].explicit_cas, 77u);
    BOOST_CHECK(o[1].kind == storage::op_kind::remove);  // the absence is replicated too,
    BOOST_CHECK(o[1].copy);  // as a delete's copy: no delete was noted here, so without a
    BOOST_CHECK_EQUAL(o[1].explicit_cas, 0u);  // point (the replica notes none either)
    BOOST_CHECK_EQUAL(o[2].value, "three");
    BOOST_CHECK_EQUAL(o[2].ttl, 2000000000);  // absolute expiry, as read
    caf::anon_send(got->sender, result_atom::value, got->tag,
                   storage::result_batch(3, status_of(storage::status::stored)));
  }
  // Every owner took it: nothing is sent again.
  BOOST_CHECK(!shard_log.take(400ms));
}

// More keys than a data link call carries: each owner gets them in pieces of at most
// call_max_ops, in order, and the job ends when every piece is answered.
BOOST_AUTO_TEST_CASE(a_batch_larger_than_a_link_call_goes_in_pieces) {
  start(2000, 2);  // R=2: a key's other owners are a, b or both
  strings keys;
  for (int i = 0; i < 600; ++i)
    keys.push_back("key-" + std::to_string(1000 + i));  // sorted as numbers and as strings
  (*self)->send(repl, actors::replicate_atom::value, keys);
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  BOOST_REQUIRE_EQUAL(read->ops.size(), keys.size());  // the local read is not cut
  storage::result_batch state;
  for (size_t i = 0; i < keys.size(); ++i)
    state.push_back(hit("v"));
  caf::anon_send(read->sender, result_atom::value, read->tag, std::move(state));

  size_t got_keys = 0, link_pieces = 0;
  strings link_keys;
  for (inbox* log : {&link_log, &peer_log}) {
    while (auto piece = log->take(400ms)) {
      BOOST_CHECK(piece->apply);
      BOOST_CHECK_LE(piece->ops.size(), cluster::call_max_ops);
      got_keys += piece->ops.size();
      if (log == &link_log) {
        ++link_pieces;
        for (auto& o : piece->ops)
          link_keys.push_back(o.key);
      }
      caf::anon_send(piece->sender, result_atom::value, piece->tag,
                     storage::result_batch(piece->ops.size(), status_of(storage::status::stored)));
    }
  }
  size_t want = 0;  // a copy per owner other than this node
  std::vector<cluster::ring::member_id> owners(2);
  for (auto& k : keys) {
    size_t n = view->ring->live_owner_ids(cluster::ring::key_hash(k), 2, owners.data());
    want += static_cast<size_t>(std::count_if(owners.begin(), owners.begin() + n,
                                              [&](auto o) { return o != view->self; }));
  }
  BOOST_CHECK_EQUAL(got_keys, want);
  BOOST_CHECK_GT(link_pieces, 1u);  // member a holds a copy of ~400 keys: more than one call
  BOOST_CHECK(std::is_sorted(link_keys.begin(), link_keys.end()));  // pieces in order
  BOOST_CHECK(!shard_log.take(400ms));  // all taken: nothing is read again
}

// Member a's link goes away while state sent through it is unanswered: newer state for a may
// not take a's peer actor yet (it could arrive first and be overwritten by the older state),
// nor stay on the old link for good: it is held back until the link has answered, then goes
// to the peer actor, in order. With nothing in flight, state goes the new way at once.
BOOST_AUTO_TEST_CASE(state_to_an_owner_waits_for_its_old_route_to_drain_then_takes_the_new) {
  start(2000, 3);
  auto replicate = [&](const std::string& key, const std::string& value) {
    (*self)->send(repl, actors::replicate_atom::value, strings{key});
    auto read = shard_log.take();
    BOOST_REQUIRE(read);
    storage::result_batch state;
    state.push_back(hit(value));
    caf::anon_send(read->sender, result_atom::value, read->tag, std::move(state));
  };
  auto answer = [](const received& r) {
    caf::anon_send(r.sender, result_atom::value, r.tag,
                   storage::result_batch(r.ops.size(), status_of(storage::status::stored)));
  };
  auto answer_b = [&] {
    auto to_b = peer_log.take();
    BOOST_REQUIRE(to_b);
    answer(*to_b);
  };
  replicate("k", "old");
  auto first = link_log.take();
  BOOST_REQUIRE(first);
  BOOST_CHECK_EQUAL(first->ops[0].value, "old");
  answer_b();
  link_up->store(false);  // the link is gone; the first state is still unanswered
  replicate("k", "new");
  replicate("k", "newer");
  answer_b();
  answer_b();
  BOOST_CHECK_MESSAGE(!peer_a_log.take(150ms), "newer state overtook the state in flight");
  BOOST_CHECK(!link_log.take(10ms));
  answer(*first);  // the old route drained: the held state goes the new way, in order
  auto second = peer_a_log.take();
  auto third = peer_a_log.take();
  BOOST_REQUIRE(second && third);
  BOOST_CHECK_EQUAL(second->ops[0].value, "new");
  BOOST_CHECK_EQUAL(third->ops[0].value, "newer");
  answer(*second);
  answer(*third);
  replicate("k", "newest");  // nothing in flight to a: straight to its peer actor
  auto fourth = peer_a_log.take();
  BOOST_REQUIRE(fourth);
  BOOST_CHECK_EQUAL(fourth->ops[0].value, "newest");
  answer(*fourth);
  answer_b();
  BOOST_CHECK(!link_log.take(100ms));
  BOOST_CHECK(!shard_log.take(300ms));  // every copy was taken: nothing read again
}

// Job 1 reads k (its read is slow: say it waits on another shard too); job 2, after a newer
// write, reads k and is answered first. Job 2's newer state must not leave before job 1's.
BOOST_AUTO_TEST_CASE(state_leaves_in_the_order_it_was_read) {
  start(2000, 2);
  std::string key;  // a key whose other owner is member a (reached through its link)
  std::vector<cluster::ring::member_id> owners(2);
  for (int i = 0; key.empty(); ++i) {
    std::string k = "key-" + std::to_string(i);
    size_t n = view->ring->live_owner_ids(cluster::ring::key_hash(k), 2, owners.data());
    if (n == 2 && ((owners[0] == view->self && owners[1] == id_a) ||
                   (owners[1] == view->self && owners[0] == id_a)))
      key = k;
  }
  (*self)->send(repl, actors::replicate_atom::value, strings{key});
  auto read1 = shard_log.take();
  BOOST_REQUIRE(read1);
  (*self)->send(repl, actors::replicate_atom::value, strings{key});
  auto read2 = shard_log.take();
  BOOST_REQUIRE(read2);
  BOOST_REQUIRE(read1->tag != read2->tag);
  storage::result_batch newer, older;
  newer.push_back(hit("new"));
  older.push_back(hit("old"));
  caf::anon_send(read2->sender, result_atom::value, read2->tag, std::move(newer));
  BOOST_CHECK_MESSAGE(!link_log.take(150ms), "the newer state left before the older one");
  caf::anon_send(read1->sender, result_atom::value, read1->tag, std::move(older));
  auto first = link_log.take();
  auto second = link_log.take();
  BOOST_REQUIRE(first && second);
  BOOST_CHECK_EQUAL(first->ops[0].value, "old");
  BOOST_CHECK_EQUAL(second->ops[0].value, "new");
  for (auto* r : {&*first, &*second})
    caf::anon_send(r->sender, result_atom::value, r->tag,
                   storage::result_batch(1, status_of(storage::status::stored)));
  BOOST_CHECK(!shard_log.take(300ms));  // both taken: nothing read again
}

BOOST_AUTO_TEST_CASE(a_key_an_owner_did_not_take_is_read_again_and_sent_again) {
  start();
  (*self)->send(repl, actors::replicate_atom::value, strings{"k1", "k2"});
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  caf::anon_send(read->sender, result_atom::value, read->tag,
                 storage::result_batch{hit("old1"), hit("old2")});
  auto at_a = link_log.take();
  auto at_b = peer_log.take();
  BOOST_REQUIRE(at_a && at_b);
  storage::result_batch partly{status_of(storage::status::stored),
                               status_of(storage::status::unavailable)};
  caf::anon_send(at_a->sender, result_atom::value, at_a->tag, partly);
  caf::anon_send(at_b->sender, result_atom::value, at_b->tag,
                 storage::result_batch(2, status_of(storage::status::stored)));
  // After the first backoff (0.2 s) only k2 is read again, and its new state goes out.
  auto t0 = std::chrono::steady_clock::now();
  auto again = shard_log.take(5000ms);
  BOOST_REQUIRE(again);
  auto waited = std::chrono::steady_clock::now() - t0;
  BOOST_CHECK(waited >= 150ms);
  BOOST_CHECK((keys_of(again->ops) == strings{"k2"}));
  caf::anon_send(again->sender, result_atom::value, again->tag,
                 storage::result_batch{hit("new2")});
  for (auto* log : {&link_log, &peer_log}) {
    auto got = log->take();
    BOOST_REQUIRE(got);
    BOOST_REQUIRE((keys_of(got->ops) == strings{"k2"}));
    BOOST_CHECK_EQUAL(got->ops[0].value, "new2");
    caf::anon_send(got->sender, result_atom::value, got->tag,
                   storage::result_batch(1, status_of(storage::status::stored)));
  }
  BOOST_CHECK(!shard_log.take(400ms));
}

// A job whose reads are in waits behind an earlier job whose read never comes back. When that
// one is given up on, the waiting job sends, with a deadline of its own: the tick that gave
// up on the first must not give up on the second too (their first deadlines were the same
// tick's, give or take milliseconds).
BOOST_AUTO_TEST_CASE(a_job_sent_when_the_one_before_it_expired_gets_its_own_deadline) {
  start(200);  // deadline 1.2 s, a tick every 50 ms
  (*self)->send(repl, actors::replicate_atom::value, strings{"slow"});
  auto stuck = shard_log.take();
  BOOST_REQUIRE(stuck);  // never answered
  (*self)->send(repl, actors::replicate_atom::value, strings{"w"}, uint64_t(9));
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  caf::anon_send(read->sender, result_atom::value, read->tag, storage::result_batch{hit("x")});
  BOOST_CHECK(!link_log.take(300ms));  // it waits for the job before it
  auto at_a = link_log.take(3000ms);   // sent once that one was given up on
  auto at_b = peer_log.take();
  BOOST_REQUIRE(at_a && at_b);
  for (auto* r : {&*at_a, &*at_b})
    caf::anon_send(r->sender, result_atom::value, r->tag,
                   storage::result_batch{status_of(storage::status::stored)});
  auto ok = replicated(9);
  BOOST_REQUIRE(ok);
  BOOST_CHECK(*ok);  // both owners took it within its own deadline
}

// Neither a read that did not answer (unavailable) nor one that failed (no_memory: the
// shard's answer when an allocation fails) is an absence: no delete's copy goes for it.
BOOST_AUTO_TEST_CASE(an_unreadable_state_is_never_sent_as_an_absence) {
  start();
  (*self)->send(repl, actors::replicate_atom::value, strings{"k1", "k2", "k3"});
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  caf::anon_send(read->sender, result_atom::value, read->tag,
                 storage::result_batch{hit("v1"), status_of(storage::status::unavailable),
                                       status_of(storage::status::no_memory)});
  for (auto* log : {&link_log, &peer_log}) {
    auto got = log->take();
    BOOST_REQUIRE(got);
    BOOST_CHECK((keys_of(got->ops) == strings{"k1"}));  // no delete for k2 or k3
    caf::anon_send(got->sender, result_atom::value, got->tag,
                   storage::result_batch(1, status_of(storage::status::stored)));
  }
  auto again = shard_log.take(5000ms);  // k2 and k3 are read again later
  BOOST_REQUIRE(again);
  BOOST_CHECK((keys_of(again->ops) == strings{"k2", "k3"}));
}

BOOST_AUTO_TEST_CASE(a_waiting_write_is_told_whether_every_owner_took_it_and_not_retried) {
  start();
  (*self)->send(repl, actors::replicate_atom::value, strings{"w"}, uint64_t(7));
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  caf::anon_send(read->sender, result_atom::value, read->tag, storage::result_batch{hit("x")});
  auto at_a = link_log.take();
  auto at_b = peer_log.take();
  BOOST_REQUIRE(at_a && at_b);
  caf::anon_send(at_a->sender, result_atom::value, at_a->tag,
                 storage::result_batch{status_of(storage::status::stored)});
  // not_sent (a member that is gone) counts as not taken, like unavailable.
  caf::anon_send(at_b->sender, result_atom::value, at_b->tag,
                 storage::result_batch{status_of(storage::status::not_sent)});
  auto ok = replicated(7);
  BOOST_REQUIRE(ok);
  BOOST_CHECK(!*ok);
  BOOST_CHECK(!shard_log.take(400ms));  // the writer was told: no background retry

  (*self)->send(repl, actors::replicate_atom::value, strings{"w"}, uint64_t(8));
  read = shard_log.take();
  BOOST_REQUIRE(read);
  caf::anon_send(read->sender, result_atom::value, read->tag,
                 storage::result_batch{status_of(storage::status::miss)});
  for (auto* log : {&link_log, &peer_log}) {
    auto got = log->take();
    BOOST_REQUIRE(got);
    BOOST_CHECK(got->ops[0].kind == storage::op_kind::remove);
    caf::anon_send(got->sender, result_atom::value, got->tag,
                   storage::result_batch{status_of(storage::status::stored)});
  }
  ok = replicated(8);
  BOOST_REQUIRE(ok);
  BOOST_CHECK(*ok);
}

BOOST_AUTO_TEST_CASE(an_owner_that_never_answers_fails_the_phase_after_the_timeout) {
  start(100);  // phases wait 1.1 s, looked at every 25 ms
  auto t0 = std::chrono::steady_clock::now();
  (*self)->send(repl, actors::replicate_atom::value, strings{"w"}, uint64_t(9));
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  caf::anon_send(read->sender, result_atom::value, read->tag, storage::result_batch{hit("x")});
  auto at_a = link_log.take();
  BOOST_REQUIRE(at_a);
  caf::anon_send(at_a->sender, result_atom::value, at_a->tag,
                 storage::result_batch{status_of(storage::status::stored)});
  BOOST_REQUIRE(peer_log.take());  // b never answers
  auto ok = replicated(9, 5000ms);
  auto took = std::chrono::steady_clock::now() - t0;
  BOOST_REQUIRE(ok);
  BOOST_CHECK(!*ok);
  BOOST_CHECK(took >= 1000ms);
  BOOST_CHECK(took < 3000ms);
  BOOST_TEST_MESSAGE("silent owner failed the write after "
                     << std::chrono::duration<double>(took).count() << " s");
}

BOOST_AUTO_TEST_CASE(without_other_owners_a_waiting_write_is_done_at_once) {
  start(2000, 1);  // R=1: no other owner
  (*self)->send(repl, actors::replicate_atom::value, strings{"w"}, uint64_t(3));
  auto ok = replicated(3, 1000ms);
  BOOST_REQUIRE(ok);
  BOOST_CHECK(*ok);
  BOOST_CHECK(!shard_log.take(100ms));
}

// A waiting writer and a settle (service::stop) both hear false.
BOOST_AUTO_TEST_CASE(waiters_still_waiting_when_the_replicator_stops_are_told_false) {
  start();
  (*self)->send(repl, actors::replicate_atom::value, strings{"w"}, uint64_t(4));
  (*self)->send(repl, actors::settle_atom::value, uint64_t(5));
  BOOST_REQUIRE(shard_log.take());  // the read is never answered
  (*self)->send_exit(repl, caf::exit_reason::user_shutdown);
  for (uint64_t tag : {4, 5}) {
    auto ok = replicated(tag, 2000ms);
    BOOST_REQUIRE(ok);
    BOOST_CHECK(!*ok);
  }
}

// How a stopping node waits for its replication (service::stop): settle is answered at once
// when nothing is pending, else only once every job, and every retry after its backoff, ended.
BOOST_AUTO_TEST_CASE(settle_is_answered_once_nothing_is_queued_in_flight_or_to_be_retried) {
  start();
  (*self)->send(repl, actors::settle_atom::value, uint64_t(1));
  auto idle = replicated(1, 1000ms);
  BOOST_REQUIRE(idle);
  BOOST_CHECK(*idle);
  (*self)->send(repl, actors::replicate_atom::value, strings{"k1", "k2"});
  (*self)->send(repl, actors::settle_atom::value, uint64_t(2));
  auto read = shard_log.take();
  BOOST_REQUIRE(read);
  BOOST_CHECK_MESSAGE(!replicated(2, 100ms), "settled while reading");
  caf::anon_send(read->sender, result_atom::value, read->tag,
                 storage::result_batch{hit("v1"), hit("v2")});
  auto at_a = link_log.take();
  auto at_b = peer_log.take();
  BOOST_REQUIRE(at_a && at_b);
  BOOST_CHECK_MESSAGE(!replicated(2, 100ms), "settled while sending");
  caf::anon_send(at_a->sender, result_atom::value, at_a->tag,
                 storage::result_batch{status_of(storage::status::stored),
                                       status_of(storage::status::unavailable)});
  caf::anon_send(at_b->sender, result_atom::value, at_b->tag,
                 storage::result_batch(2, status_of(storage::status::stored)));
  BOOST_CHECK_MESSAGE(!replicated(2, 100ms), "settled with k2 waiting for its retry");
  auto again = shard_log.take(5000ms);
  BOOST_REQUIRE(again);
  BOOST_CHECK((keys_of(again->ops) == strings{"k2"}));
  caf::anon_send(again->sender, result_atom::value, again->tag,
                 storage::result_batch{hit("v2")});
  for (auto* log : {&link_log, &peer_log}) {
    auto got = log->take();
    BOOST_REQUIRE(got);
    BOOST_CHECK_MESSAGE(!replicated(2, 50ms), "settled before every owner answered the retry");
    caf::anon_send(got->sender, result_atom::value, got->tag,
                   storage::result_batch(1, status_of(storage::status::stored)));
  }
  auto done = replicated(2, 2000ms);
  BOOST_REQUIRE(done);
  BOOST_CHECK(*done);
  BOOST_CHECK(!shard_log.take(300ms));
}

BOOST_AUTO_TEST_SUITE_END()
