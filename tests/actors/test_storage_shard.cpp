// The storage shard actor: executes op batches in order, survives stray messages, and hands
// a member back the keys deleted while it was dead.
#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"
#include "actors/storage_shard.hpp"
#include "cluster/ring.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

using namespace bifrost;
using namespace bifrost::actors;

namespace {

// A small shard (8 MiB, 1 MiB segments) on `clock`.
std::unique_ptr<storage::shard> small_shard(storage::clock_fn clock) {
  storage::shard_config sc;
  sc.memory_limit = 8u << 20;
  sc.segment_size = 1u << 20;
  std::string err;
  auto sh = storage::shard::open(sc, std::move(clock), err);
  BOOST_REQUIRE_MESSAGE(sh, err);
  return sh;
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor shard;
  fixture() {
    sys = std::make_unique<caf::actor_system>(cfg);
    shard = sys->spawn<storage_shard>(nullptr, small_shard(storage::system_clock_seconds),
                                      std::chrono::milliseconds(0));
  }
  ~fixture() {
    caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
    shard = nullptr;
  }

  storage::result_batch exec(caf::scoped_actor& self, storage::op_batch ops, uint64_t tag) {
    return exec(self, shard, std::move(ops), tag);
  }
  storage::result_batch exec(caf::scoped_actor& self, const caf::actor& to,
                             storage::op_batch ops, uint64_t tag) {
    self->send(to, exec_atom::value, tag, std::move(ops));
    storage::result_batch out;
    self->receive([&](result_atom, uint64_t t, storage::result_batch& r) {
      BOOST_CHECK_EQUAL(t, tag);
      out = std::move(r);
    }, caf::after(std::chrono::seconds(5)) >> [] { BOOST_FAIL("shard did not answer"); });
    return out;
  }
};

storage::op set_op(std::string key, std::string value) {
  storage::op o;
  o.kind = storage::op_kind::store;
  o.key = std::move(key);
  o.value = std::move(value);
  return o;
}

storage::op get_op(std::string key) {
  storage::op o;
  o.kind = storage::op_kind::get;
  o.key = std::move(key);
  return o;
}

storage::op remove_op(std::string key) {
  storage::op o;
  o.kind = storage::op_kind::remove;
  o.key = std::move(key);
  return o;
}

// Stands in for a member's peer actor that answers: records every op of the hand-back
// batches (not re-replication's: tag bit 62 alone), and answers the first `refuse` batches of
// copies and the first `refuse_deletes` of deleted keys unavailable (a link just back), the
// rest as taken.
struct handed_back_ops {
  std::mutex m;
  std::vector<storage::op> ops;
  int batches = 0;
  int delete_batches = 0;
  std::vector<storage::op> take() {
    std::lock_guard<std::mutex> g(m);
    return ops;
  }
};

class answering_member : public caf::event_based_actor {
public:
  answering_member(caf::actor_config& cfg, std::shared_ptr<handed_back_ops> out, int refuse,
                   int refuse_deletes = 0)
    : caf::event_based_actor(cfg), out_(std::move(out)), refuse_(refuse),
      refuse_deletes_(refuse_deletes) {}
  caf::behavior make_behavior() override {
    set_default_handler(caf::drop);
    return {[this](warm_atom, uint64_t tag, storage::op_batch& ops) {
      if ((tag >> 62) == 1)
        return;
      storage::result_batch rs(ops.size());
      {
        std::lock_guard<std::mutex> g(out_->m);
        const bool copies = !ops.empty() && ops[0].kind == storage::op_kind::store;
        const bool refused = copies ? out_->batches++ < refuse_
                                    : out_->delete_batches++ < refuse_deletes_;
        for (size_t i = 0; i < ops.size(); ++i) {
          rs[i].st = refused ? storage::status::unavailable : storage::status::stored;
          if (!refused)
            out_->ops.push_back(ops[i]);
        }
      }
      send(caf::actor_cast<caf::actor>(current_sender()), result_atom::value, tag,
           std::move(rs));
    }};
  }

private:
  std::shared_ptr<handed_back_ops> out_;
  int refuse_;
  int refuse_deletes_;
};

// Stops its actors when it goes out of scope, also when a failed check ends a test early
// (the actor system's destructor waits for every actor).
struct stop_on_exit {
  std::vector<caf::actor> actors;
  ~stop_on_exit() {
    for (auto& a : actors)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
};

cluster_view_ptr two_member_view(const caf::actor& member, bool alive,
                                 bool rereplicate = true) {
  auto v = std::make_shared<cluster_view>();
  v->ring = cluster::ring::build(
    {{"self", "127.0.0.1:1", 1, true}, {"m", "127.0.0.1:2", 1, alive}}, alive ? 2 : 1);
  v->self_name = "self";
  v->self = *v->ring->find("self");
  v->peers.resize(2);
  if (alive)
    v->peers[*v->ring->find("m")] = member;
  v->replicas = 2;  // both own every key
  v->rereplicate = rereplicate;
  return cluster_view_ptr(v);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(storage_shard_actor, fixture)

BOOST_AUTO_TEST_CASE(batches_execute_in_order) {
  caf::scoped_actor self{*sys};
  storage::op_batch b;
  b.push_back(set_op("k", "one"));
  b.push_back(get_op("k"));
  b.push_back(set_op("k", "two"));
  b.push_back(get_op("k"));
  auto r = exec(self, std::move(b), 7);
  BOOST_REQUIRE_EQUAL(r.size(), 4u);
  BOOST_CHECK(r[0].st == storage::status::stored);
  BOOST_CHECK_EQUAL(r[1].value.view(), "one");
  BOOST_CHECK_EQUAL(r[3].value.view(), "two");
  BOOST_CHECK_EQUAL(r[1].value.view(), "one");  // the first slice still pins the old bytes
}

// Regression: a reply its receiver did not expect came back to the shard as an error message,
// and CAF's default error handler made the shard quit: every later request hung.
BOOST_AUTO_TEST_CASE(stray_errors_and_messages_do_not_kill_the_shard) {
  caf::scoped_actor self{*sys};
  self->send(shard, caf::make_error(caf::sec::unexpected_message));
  self->send(shard, caf::atom("bogus"), 42);
  storage::op_batch b;
  b.push_back(set_op("a", "x"));
  auto r = exec(self, std::move(b), 1);
  BOOST_REQUIRE_EQUAL(r.size(), 1u);
  BOOST_CHECK(r[0].st == storage::status::stored);
}

// Keys deleted here while a member that owns them was dead go to it as deletes when it is
// back, each once however often it was deleted meanwhile. (A key deleted over and over, a
// lock or a queue's head, filled the shard's max_tombstones and pushed every other key's out:
// the member kept those, deleted values back.)
BOOST_AUTO_TEST_CASE(keys_deleted_while_a_member_was_dead_are_handed_back_once_each) {
  auto got = std::make_shared<handed_back_ops>();
  auto member = sys->spawn<answering_member>(got, 0);
  auto view = [&](bool alive) { return two_member_view(member, alive); };
  auto keys_seen = [&] {
    std::map<std::string, int> seen;
    for (const auto& o : got->take())
      ++seen[o.key];
    return seen;
  };
  caf::scoped_actor self{*sys};
  self->send(shard, prune_atom::value, view(false));
  exec(self, {remove_op("once")}, 1);
  // More deletes of one key than a shard keeps notes of.
  const size_t rounds = storage_shard::max_tombstones / 4096 + 1;
  for (size_t r = 0; r < rounds; ++r) {
    storage::op_batch hot(4096, remove_op("hot"));
    exec(self, std::move(hot), 2 + r);
  }
  exec(self, {remove_op("last")}, 100);
  self->send(shard, prune_atom::value, view(true));
  std::map<std::string, int> seen;
  for (int i = 0; i < 200 && seen.size() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    seen = keys_seen();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // nothing more comes
  seen = keys_seen();
  BOOST_CHECK_EQUAL(seen.size(), 3u);
  BOOST_CHECK_EQUAL(seen["once"], 1);
  BOOST_CHECK_EQUAL(seen["hot"], 1);
  BOOST_CHECK_EQUAL(seen["last"], 1);
  storage::shard_stats st;
  self->request(shard, std::chrono::seconds(5), stats_atom::value)
    .receive([&](storage::shard_stats& s) { st = s; }, [](caf::error&) { BOOST_FAIL("stats"); });
  BOOST_CHECK_EQUAL(st.hand_back_dropped, 0u);
  BOOST_CHECK_EQUAL(st.handed_back, 3u);
  caf::anon_send_exit(member, caf::exit_reason::user_shutdown);
}

// Items stored here while a member was dead go to it, when it is back, as copies with their
// values, not as deletes: the member would read those keys as misses, or warm them from
// another node that still held the value from before (a partition's other side: 17 to 23
// of 60 keys old after the heal, some for good). Stored after this node saw it dead: an add
// (the later write by the CAS clock wins there); stored in the seconds before: a replace
// (it brings back no key the member deleted). A copy the member does not take (unavailable:
// its link just back) is sent again; a second pass sends only what came since.
BOOST_AUTO_TEST_CASE(items_written_while_a_member_was_dead_are_handed_back_as_copies) {
  auto got = std::make_shared<handed_back_ops>();
  auto member = sys->spawn<answering_member>(got, 1);
  caf::scoped_actor self{*sys};
  exec(self, {set_op("before", "b")}, 1);
  // (Without re-replication, which would copy the items too: after a partition, each side
  // takes it that it came back from the dead, and such a node sends no copies.)
  self->send(shard, prune_atom::value, two_member_view(member, false, false));
  exec(self, {set_op("during", "written-while-m-was-dead")}, 2);
  const auto during = exec(self, {get_op("during")}, 3);
  BOOST_REQUIRE_EQUAL(during.size(), 1u);
  self->send(shard, prune_atom::value, two_member_view(member, true, false));
  std::vector<storage::op> ops;
  for (int i = 0; i < 300; ++i) {  // (the copies are sent again 0.2 s after they were refused)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ops = got->take();
    if (ops.size() >= 2)
      break;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // nothing more comes
  ops = got->take();
  BOOST_REQUIRE_EQUAL(ops.size(), 2u);
  const storage::op* add = nullptr;
  const storage::op* replace = nullptr;
  for (const auto& o : ops)
    (o.key == "during" ? add : replace) = &o;
  BOOST_REQUIRE(add && replace);
  BOOST_CHECK(add->kind == storage::op_kind::store);
  BOOST_CHECK(add->mode == storage::store_mode::add);
  BOOST_CHECK(add->copy && add->hand_back);
  BOOST_CHECK_EQUAL(add->value, "written-while-m-was-dead");
  BOOST_CHECK_EQUAL(add->explicit_cas, during[0].cas);
  BOOST_CHECK_EQUAL(replace->key, "before");
  BOOST_CHECK(replace->kind == storage::op_kind::store);
  BOOST_CHECK(replace->mode == storage::store_mode::replace);
  BOOST_CHECK(replace->copy && replace->hand_back);
  BOOST_CHECK_EQUAL(replace->value, "b");
  storage::shard_stats st;
  self->request(shard, std::chrono::seconds(5), stats_atom::value)
    .receive([&](storage::shard_stats& s) { st = s; }, [](caf::error&) { BOOST_FAIL("stats"); });
  BOOST_CHECK_EQUAL(st.handed_back, 0u);         // (no deleted keys)
  BOOST_CHECK_EQUAL(st.handed_back_copies, 4u);  // (both refused once, then taken)
  caf::anon_send_exit(member, caf::exit_reason::user_shutdown);
}

// A deleted key goes back with its delete's point on the CAS clock, as a delete's copy: the
// member removes its older item and notes the delete, so that a copy of that older item
// (a past owner's, warmed on a miss after the member's return; another node's hand-back)
// is refused there, and keeps an item written after the delete (its side of a partition).
// Before, the delete went without a point and was not noted: seen under ASan in
// PartitionHealTest, the member warmed the deleted value back from a node that held it as a
// replica of the ring without the deleting node, and replicated it to the deleting node.
BOOST_AUTO_TEST_CASE(a_deleted_key_goes_back_with_its_delete_point) {
  auto there = small_shard(storage::system_clock_seconds);  // the member
  there->guard_copies(30);
  storage::op old_write = set_op("gone", "before");
  BOOST_REQUIRE(there->execute(old_write).st == storage::status::stored);
  const storage::result older = [&] {
    storage::op g = get_op("gone");
    return there->execute(g);
  }();
  BOOST_REQUIRE(older.st == storage::status::hit);

  auto got = std::make_shared<handed_back_ops>();
  auto member = sys->spawn<answering_member>(got, 0);
  stop_on_exit stop{{member}};
  caf::scoped_actor self{*sys};
  self->send(shard, prune_atom::value, two_member_view(member, false));
  exec(self, {set_op("gone", "before"), remove_op("gone"), remove_op("again"),
              set_op("again", "v"), remove_op("last"), set_op("last", "v")}, 1);
  exec(self, {remove_op("last")}, 4);  // (deleted for good after all: its point goes)
  const uint64_t at = exec(self, {get_op("gone")}, 2).at(0).deleted_cas;
  BOOST_REQUIRE(at != 0);
  exec(self, {remove_op("later")}, 3);  // (its point: before the member's write)
  storage::op later = set_op("later", "written-there-after-the-delete");
  BOOST_REQUIRE(there->execute(later).st == storage::status::stored);
  self->send(shard, prune_atom::value, two_member_view(member, true));
  std::vector<storage::op> ops;
  for (int i = 0; i < 200 && ops.size() < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ops = got->take();
  }
  std::map<std::string, storage::op> by_key;
  for (const auto& o : ops)
    if (o.kind == storage::op_kind::remove)
      by_key[o.key] = o;
  BOOST_REQUIRE_EQUAL(by_key.count("gone"), 1u);
  const storage::op& gone = by_key["gone"];
  BOOST_CHECK(gone.hand_back && gone.copy);
  BOOST_CHECK_EQUAL(gone.explicit_cas, at);
  // Written again in the delete's batch: no point (a plain hand-back delete).
  BOOST_REQUIRE_EQUAL(by_key.count("again"), 1u);
  BOOST_CHECK(by_key["again"].hand_back && !by_key["again"].copy);
  BOOST_CHECK_EQUAL(by_key["again"].explicit_cas, 0u);
  BOOST_REQUIRE_EQUAL(by_key.count("later"), 1u);
  BOOST_REQUIRE_EQUAL(by_key.count("last"), 1u);
  BOOST_CHECK(by_key["last"].hand_back && by_key["last"].copy);
  BOOST_CHECK(by_key["last"].explicit_cas != 0);

  // At the member: the older item goes, and a copy of it (a warm add) is refused after.
  storage::op d = gone;
  d.counted = false;  // (as a warm op arrives: cluster::mark_warm)
  BOOST_CHECK(there->execute(d).st == storage::status::deleted);
  storage::op warm = storage::item_copy("gone", older, storage::store_mode::add);
  BOOST_CHECK(there->execute(warm).st == storage::status::not_stored);
  storage::op g = get_op("gone");
  const storage::result miss = there->execute(g);
  BOOST_CHECK(miss.st == storage::status::miss);
  BOOST_CHECK_EQUAL(miss.deleted_cas, at);
  // The item written there after the delete stays.
  storage::op l = by_key["later"];
  BOOST_CHECK(there->execute(l).st == storage::status::exists);
  storage::op gl = get_op("later");
  BOOST_CHECK_EQUAL(there->execute(gl).value.view(), "written-there-after-the-delete");
}

// The cluster's own removes (uncounted: a past owner's copy deleted after a write at the
// owners, whatever the origin; a warm op) are no deletes of the key: one that runs here while a
// member is dead is not handed back to it. In a session 55 trial, n1's past-copy deletes to a
// member cut off from everyone reached it at the heal, while its view still had the others
// dead; it handed them back as deletes without a point to their owners, which had marked a
// return at the heal (the cut-off member's verdicts) and so removed the writes acknowledged
// during the cut, for good (9 to 11 keys a run).
BOOST_AUTO_TEST_CASE(the_clusters_own_removes_are_not_handed_back) {
  auto got = std::make_shared<handed_back_ops>();
  auto member = sys->spawn<answering_member>(got, 0);
  stop_on_exit stop{{member}};
  caf::scoped_actor self{*sys};
  self->send(shard, prune_atom::value, two_member_view(member, false));
  storage::op warm = remove_op("warm");
  warm.counted = false;  // (a member's warm op: cluster::mark_warm)
  storage::op replicated = storage::delete_copy("replicated", 0);
  replicated.counted = true;  // (as a replicated delete arrives at a replica: origin replica)
  exec(self, {set_op("past", "v"), set_op("warm", "v"), set_op("client", "v"),
              set_op("replicated", "v")}, 1);
  exec(self, {storage::past_copy_delete("past"), warm, remove_op("client"), replicated}, 2);
  self->send(shard, prune_atom::value, two_member_view(member, true));
  std::vector<storage::op> ops;
  for (int i = 0; i < 200 && ops.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ops = got->take();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // (anything more)
  std::set<std::string> removed;
  for (const auto& o : got->take())
    if (o.kind == storage::op_kind::remove)
      removed.insert(o.key);
  BOOST_CHECK_EQUAL(removed.count("client"), 1u);  // the client's delete goes back
  BOOST_CHECK_EQUAL(removed.count("replicated"), 1u);  // and a replicated one
  BOOST_CHECK_EQUAL(removed.count("past"), 0u);
  BOOST_CHECK_EQUAL(removed.count("warm"), 0u);
}

// A cut longer than the copy guard's seconds: the note the delete took here is forgotten by
// the time the member is back. Handing the delete back notes it here again at its point, so
// that the member's copy of the older write it held on its side (a hand-back's add), or a
// miss here warming it from a past owner, does not bring the key back here while the delete
// removes it there. (Before, the copy was stored here and the owners disagreed for good.)
BOOST_AUTO_TEST_CASE(a_delete_handed_back_after_a_long_cut_is_noted_again) {
  auto later = std::make_shared<std::atomic<uint32_t>>(0);  // seconds added to the clock
  auto here = sys->spawn<storage_shard>(
    nullptr, small_shard([later] { return storage::system_clock_seconds() + later->load(); }),
    std::chrono::milliseconds(0));
  auto got = std::make_shared<handed_back_ops>();
  auto member = sys->spawn<answering_member>(got, 0);
  stop_on_exit stop{{member, here}};
  caf::scoped_actor self{*sys};
  auto run = [&](storage::op_batch ops) { return exec(self, here, std::move(ops), 1); };
  self->send(here, prune_atom::value, two_member_view(member, false));
  const storage::result older = run({set_op("gone", "before"), get_op("gone")}).at(1);
  BOOST_REQUIRE(run({remove_op("gone")}).at(0).st == storage::status::deleted);
  // Deleted, then written again here with a client's CAS (meta E: no clock value, so no
  // delete's copy would spare it): the write stays.
  BOOST_REQUIRE(run({remove_op("rewritten")}).at(0).st == storage::status::not_found);
  storage::op e = set_op("rewritten", "client-cas");
  e.explicit_cas = 5;
  BOOST_REQUIRE(run({e}).at(0).st == storage::status::stored);
  const uint64_t at = run({get_op("gone")}).at(0).deleted_cas;
  BOOST_REQUIRE(at != 0);
  later->store(3600);  // (an hour: the guard's 30 s are long over)
  BOOST_REQUIRE_EQUAL(run({get_op("gone")}).at(0).deleted_cas, 0u);
  self->send(here, prune_atom::value, two_member_view(member, true));
  std::map<std::string, storage::op> removes;  // (the rewritten key's item goes as a copy)
  for (int i = 0; i < 400 && removes.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (const auto& o : got->take())
      if (o.kind == storage::op_kind::remove)
        removes[o.key] = o;
  }
  BOOST_CHECK_EQUAL(removes.size(), 2u);
  BOOST_CHECK(removes["gone"].hand_back && removes["gone"].copy);
  BOOST_CHECK_EQUAL(removes["gone"].explicit_cas, at);
  BOOST_CHECK_EQUAL(run({get_op("rewritten")}).at(0).value.view(), "client-cas");
  storage::op copy = storage::item_copy("gone", older, storage::store_mode::add);
  copy.hand_back = true;  // (the member's hand-back of the value it held)
  BOOST_CHECK(run({copy}).at(0).st == storage::status::not_stored);
  const storage::result miss = run({get_op("gone")}).at(0);
  BOOST_CHECK(miss.st == storage::status::miss);
  BOOST_CHECK_EQUAL(miss.deleted_cas, at);
}

// A deleted key its member did not take when it came back (unavailable: the first batch to
// a member whose link was marked unreachable fails at once while a probe goes out) is sent
// again; before, it was sent once, and the member kept serving the deleted value.
BOOST_AUTO_TEST_CASE(a_deleted_key_the_member_did_not_take_is_sent_again) {
  auto got = std::make_shared<handed_back_ops>();
  auto member = sys->spawn<answering_member>(got, 0, 2);
  caf::scoped_actor self{*sys};
  self->send(shard, prune_atom::value, two_member_view(member, false, false));
  exec(self, {remove_op("gone")}, 1);
  self->send(shard, prune_atom::value, two_member_view(member, true, false));
  std::vector<storage::op> ops;
  for (int i = 0; i < 300 && ops.empty(); ++i) {  // (0.2 s, then 0.4 s after refusals)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ops = got->take();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // nothing more comes
  ops = got->take();
  BOOST_REQUIRE_EQUAL(ops.size(), 1u);
  BOOST_CHECK_EQUAL(ops[0].key, "gone");
  BOOST_CHECK(ops[0].kind == storage::op_kind::remove);
  BOOST_CHECK(ops[0].hand_back);
  storage::shard_stats st;
  self->request(shard, std::chrono::seconds(5), stats_atom::value)
    .receive([&](storage::shard_stats& s) { st = s; }, [](caf::error&) { BOOST_FAIL("stats"); });
  BOOST_CHECK_EQUAL(st.handed_back, 3u);  // (refused twice, then taken)
  caf::anon_send_exit(member, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
