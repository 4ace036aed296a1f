// The cluster service in-process: N nodes on 127.0.0.1 (one actor system each, real storage
// shard actors, a recorder actor standing in for the route table), joined through one seed.
// Checks convergence, data through peer actors (inline, uploaded and streamed values),
// replication, failure detection, the RPC queries, hello's version check and teardown.
// Every wait is bounded.
#include "actors/cluster_route.hpp"
#include "cluster/service.hpp"
#include "test_pki.hpp"

#include "actors/cluster_view.hpp"
#include "actors/messages.hpp"
#include "actors/route_table.hpp"
#include "actors/storage_shard.hpp"
#include "cluster/bifrost.capnp.h"
#include "cluster/arrival_clock.hpp"
#include "cluster/convert.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace bifrost;
using namespace std::chrono_literals;
namespace rpc = bifrost::cluster::rpc;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

bool wait_until(std::function<bool()> pred, std::chrono::milliseconds limit) {
  auto deadline = clock_type::now() + limit;
  while (clock_type::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

struct recorder_state {
  std::mutex mu;
  std::vector<actors::cluster_view_ptr> views;
};

caf::behavior recorder(caf::event_based_actor*, std::shared_ptr<recorder_state> st) {
  return {
    [st](actors::ring_atom, actors::cluster_view_ptr& v) {
      std::lock_guard<std::mutex> g(st->mu);
      st->views.push_back(std::move(v));
    },
  };
}

struct sys_config : caf::actor_system_config {
  sys_config() {
    set("scheduler.max-threads", size_t{2});
    set("work-stealing.moderate-poll-attempts", size_t{0});
  }
};

using release_atom = caf::atom_constant<caf::atom("release")>;

// Stands in front of a shard and hands it every message as is (sender and message id kept),
// after `delay_ms` when that is set, in the order they came: a shard slower than the RPC
// timeout, which still runs everything it was sent.
caf::behavior delay_proxy(caf::event_based_actor* self, caf::actor target,
                          std::shared_ptr<std::atomic<int>> delay_ms) {
  struct held {
    caf::strong_actor_ptr sender;
    caf::message_id mid;
    caf::message msg;
  };
  auto queue = std::make_shared<std::deque<held>>();
  self->set_default_handler(
      [=](caf::scheduled_actor* s, caf::message_view& x) -> caf::result<caf::message> {
        held h{s->current_sender(), s->take_current_message_id(), x.move_content_to_message()};
        const int d = delay_ms->load();
        if (d <= 0 && queue->empty()) {
          target->enqueue(std::move(h.sender), h.mid, std::move(h.msg), s->context());
        } else {
          queue->push_back(std::move(h));
          self->delayed_send(self, std::chrono::milliseconds(std::max(d, 1)), release_atom::value);
        }
        return caf::delegated<caf::message>{};
      });
  return {
    [=](release_atom) {
      if (queue->empty())
        return;
      held h = std::move(queue->front());
      queue->pop_front();
      target->enqueue(std::move(h.sender), h.mid, std::move(h.msg), self->context());
    },
  };
}

// One simulated node: an actor system, two storage shards, a recorder and the service.
// `delayable`: the service reaches its shards through delay proxies (shard_delay_ms).
struct test_node {
  explicit test_node(const std::string& name, std::vector<std::string> seeds = {},
                     uint32_t replicas = 1, bool wait_replicas = false,
                     cluster::tls_options tls = {}, uint16_t rpc_port = 0,
                     std::string client_address = "127.0.0.1:11211",
                     std::optional<cluster::membership_config> swim = std::nullopt,
                     uint32_t rpc_timeout_ms = 2000, bool delayable = false) {
    sys = std::make_unique<caf::actor_system>(cfg);
    for (uint32_t i = 0; i < 2; ++i) {
      storage::shard_config sc;
      sc.id = i;
      sc.memory_limit = 48ull << 20;
      sc.max_item_size = 8ull << 20;
      std::string err;
      auto sh = storage::shard::open(sc, storage::system_clock_seconds, err);
      BOOST_REQUIRE_MESSAGE(sh, err);
      shards.push_back(sys->spawn<actors::storage_shard>(nullptr, std::move(sh), 1000ms));
      if (delayable) {
        real_shards.push_back(shards.back());
        shards.back() = sys->spawn(delay_proxy, shards.back(), shard_delay_ms);
      }
    }
    rec = std::make_shared<recorder_state>();
    route_table = sys->spawn(recorder, rec);
    cluster::service_config sc;
    sc.node_name = name;
    sc.rpc_port = rpc_port;
    sc.client_address = std::move(client_address);
    if (swim)
      sc.swim = *swim;
    sc.rpc_timeout_ms = rpc_timeout_ms;
    sc.join = std::move(seeds);
    sc.replicas = replicas;
    sc.wait_replicas = wait_replicas;
    sc.tls = std::move(tls);
    sc.max_value = 6ull << 20;  // (below the shards' 8 MiB: what refuses is the upload's bound)
    sc.member_writes_refused = [r = refusing] { return r->load(); };
    std::string err;
    svc = cluster::service::start(
        *sys, sc, shards, route_table,
        [name](auto reply) {
          reply(cluster::service::stat_list{{"curr_items", "7"}, {"bytes", "700"}, {"node", name}});
        },
        err);
    BOOST_REQUIRE_MESSAGE(svc, err);
  }

  ~test_node() {
    auto t = clock_type::now();
    svc.reset();
    teardown_s = seconds_since(t);
    {
      std::lock_guard<std::mutex> g(rec->mu);
      rec->views.clear();
    }
    for (auto& s : shards)
      caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    for (auto& s : real_shards)
      caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(route_table, caf::exit_reason::user_shutdown);
    shards.clear();
    real_shards.clear();
    route_table = nullptr;
    sys.reset();
  }

  actors::cluster_view_ptr view() {
    std::lock_guard<std::mutex> g(rec->mu);
    return rec->views.empty() ? nullptr : rec->views.back();
  }
  size_t view_count() {
    std::lock_guard<std::mutex> g(rec->mu);
    return rec->views.size();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(svc->rpc_port()); }

  sys_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<caf::actor> shards;
  std::vector<caf::actor> real_shards;  // behind delay proxies (`delayable`)
  std::shared_ptr<std::atomic<int>> shard_delay_ms = std::make_shared<std::atomic<int>>(0);
  /// service_config::member_writes_refused (node::refuse_member_writes in bifrostd).
  std::shared_ptr<std::atomic<bool>> refusing = std::make_shared<std::atomic<bool>>(false);
  caf::actor route_table;
  std::shared_ptr<recorder_state> rec;
  std::unique_ptr<cluster::service> svc;
  double teardown_s = 0;
};

// Member names of the live members of a view's ring.
std::vector<std::string> live_names(const actors::cluster_view_ptr& v) {
  std::vector<std::string> out;
  if (!v)
    return out;
  for (auto& m : v->ring->members())
    if (m.alive)
      out.push_back(m.name);
  return out;
}

bool converged(std::vector<test_node*> nodes, size_t n) {
  std::vector<std::string> first;
  for (auto* nd : nodes) {
    auto names = live_names(nd->view());
    if (names.size() != n)
      return false;
    if (first.empty())
      first = names;
    else if (names != first)
      return false;
  }
  return true;
}

// A 3-node cluster joined through the first node.
struct cluster3 {
  explicit cluster3(uint32_t replicas = 1, bool wait = false) {
    auto t = clock_type::now();
    nodes.push_back(std::make_unique<test_node>("n1", std::vector<std::string>{}, replicas, wait));
    auto seed = nodes[0]->address();
    nodes.push_back(
      std::make_unique<test_node>("n2", std::vector<std::string>{seed}, replicas, wait));
    nodes.push_back(
      std::make_unique<test_node>("n3", std::vector<std::string>{seed}, replicas, wait));
    bool ok = wait_until([&] { return converged(all(), 3); }, 5000ms);
    converge_s = seconds_since(t);
    BOOST_REQUIRE_MESSAGE(ok, "3 nodes did not converge within 5 s");
    BOOST_TEST_MESSAGE("3 nodes converged in " << converge_s << " s");
  }
  std::vector<test_node*> all() {
    std::vector<test_node*> v;
    for (auto& n : nodes)
      if (n)
        v.push_back(n.get());
    return v;
  }
  std::vector<std::unique_ptr<test_node>> nodes;
  double converge_s = 0;
};

// The peer actor through which `from` reaches member `name`.
caf::actor peer_of(test_node& from, const std::string& name) {
  auto v = from.view();
  auto id = v->ring->find(name);
  BOOST_REQUIRE(id);
  auto peer = v->peers[*id];
  BOOST_REQUIRE(peer);
  return peer;
}

struct exec_outcome {
  bool answered = false;
  storage::result_batch results;
  double seconds = 0;
};

exec_outcome exec(caf::actor_system& sys, const caf::actor& target, storage::op_batch ops,
                  bool warm = false, std::chrono::milliseconds limit = 10000ms) {
  caf::scoped_actor self{sys};
  static std::atomic<uint64_t> next_tag{100};  // (tests call exec from several threads)
  uint64_t tag = ++next_tag;
  auto t = clock_type::now();
  if (warm)
    self->send(target, actors::warm_atom::value, tag, std::move(ops));
  else
    self->send(target, actors::exec_atom::value, tag, std::move(ops));
  exec_outcome out;
  self->receive(
      [&](actors::result_atom, uint64_t got, storage::result_batch& r) {
        out.answered = got == tag;
        out.results = std::move(r);
      },
      caf::after(limit) >> [] {});
  out.seconds = seconds_since(t);
  return out;
}

storage::op set_op(const std::string& key, std::string value, uint32_t flags = 0) {
  storage::op o;
  o.kind = storage::op_kind::store;
  o.mode = storage::store_mode::set;
  o.key = key;
  o.value = std::move(value);
  o.flags = flags;
  return o;
}

storage::op get_op(const std::string& key) {
  storage::op o;
  o.kind = storage::op_kind::get;
  o.key = key;
  return o;
}

// The shard of `n` that holds `key` (the one its routes pick).
const caf::actor& shard_of(const test_node& n, const std::string& key) {
  return n.shards[actors::key_hash(key) % n.shards.size()];
}

// Runs `ops` at the shard of `n` that holds `key`: the node itself, no ring involved.
exec_outcome at_shard(test_node& n, const std::string& key, storage::op_batch ops) {
  return exec(*n.sys, shard_of(n, key), std::move(ops));
}

// `key` as the shard of `n` that holds it has it (that shard must answer).
storage::result held_at(test_node& n, const std::string& key) {
  auto r = at_shard(n, key, {get_op(key)});
  BOOST_REQUIRE(r.answered);
  return r.results[0];
}

// A key whose primary (in `v`) is not `v->self`; returns the primary's member id.
std::string remote_key(const actors::cluster_view_ptr& v, const std::string& prefix,
                       uint32_t& owner) {
  for (int i = 0;; ++i) {
    std::string k = prefix + std::to_string(i);
    cluster::ring::member_id id;
    BOOST_REQUIRE(v->ring->live_owner_ids(cluster::ring::key_hash(k), 1, &id) == 1);
    if (id != v->self) {
      owner = id;
      return k;
    }
  }
}

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>(seed + (i * 7 + i / 4096) % 61);
  return s;
}

// A raw Cap'n Proto client (own KJ loop on the test thread), like bifrostctl.
struct raw_client {
  explicit raw_client(const std::string& address)
    : io(kj::setupAsyncIo()),
      stream(io.provider->getNetwork().parseAddress(address).wait(io.waitScope)->connect().wait(
          io.waitScope)),
      net(*stream, capnp::rpc::twoparty::Side::CLIENT, cluster::rpc_reader_options()),
      sys(capnp::makeRpcClient(net)) {
    capnp::MallocMessageBuilder msg(8);
    auto vat = msg.initRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(capnp::rpc::twoparty::Side::SERVER);
    node = sys.bootstrap(vat).castAs<rpc::Node>();
  }
  kj::AsyncIoContext io;
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork net;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> sys;
  rpc::Node::Client node{nullptr};

  /// Greets the node as member `name` (at an address nobody dials, --replicas 1): its calls
  /// are then a member's.
  void hello_as_member(const std::string& name) {
    auto req = node.helloRequest();
    req.setVersion(rpc::SCHEMA_VERSION);
    auto from = req.initFrom();
    from.setName(name);
    from.setRpcAddress("127.0.0.1:1");
    req.setReplicas(1);
    req.send().wait(io.waitScope);
  }

  /// Node.upload of a store of `value` at `key` (sent whole in one chunk) as a member's
  /// client op placed by `ring` (0: none said); the upload and its finish stamped with
  /// `sent_ms` and `finish_sent_ms` and the sender's `timeout_ms` (0: not said); the status.
  rpc::Status upload(const std::string& key, const std::string& value, uint64_t ring,
                     uint64_t sent_ms = 0, uint64_t finish_sent_ms = 0, uint32_t timeout_ms = 0);

  /// The node's stat `name` (Node.stats), "(missing)" if it has none.
  std::string stat(const std::string& name) {
    auto stats = node.statsRequest().send().wait(io.waitScope);
    for (auto s : stats.getStats())
      if (name == s.getName().cStr())
        return s.getValue().cStr();
    return "(missing)";
  }

  /// Node.execute of `ops` as a member's client ops placed by `ring` (0: none said); the
  /// statuses.
  std::vector<rpc::Status> execute(const storage::op_batch& ops, uint64_t ring) {
    auto req = node.executeRequest();
    auto list = req.initOps(static_cast<unsigned>(ops.size()));
    for (size_t i = 0; i < ops.size(); ++i)
      cluster::to_rpc(ops[i], list[static_cast<unsigned>(i)]);
    req.setOrigin(rpc::Origin::CLIENT);
    req.setRing(ring);
    auto r = req.send().wait(io.waitScope);
    BOOST_REQUIRE_EQUAL(r.getResults().size(), ops.size());
    std::vector<rpc::Status> st;
    for (auto x : r.getResults())
      st.push_back(x.getStatus());
    return st;
  }
};

rpc::Status raw_client::upload(const std::string& key, const std::string& value, uint64_t ring,
                               uint64_t sent_ms, uint64_t finish_sent_ms, uint32_t timeout_ms) {
  auto req = node.uploadRequest();
  cluster::to_rpc(set_op(key, value), req.initOps(1)[0], false);
  req.setOrigin(rpc::Origin::CLIENT);
  req.setRing(ring);
  req.setSentAtMs(sent_ms);
  req.setTimeoutMs(timeout_ms);
  auto sent = req.send();
  auto sink = sent.getSink();
  auto w = sink.writeRequest();
  w.setIndex(0);
  w.setChunk(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
  w.send().wait(io.waitScope);
  auto fin = sink.finishRequest();
  fin.setSentAtMs(finish_sent_ms);
  fin.setTimeoutMs(timeout_ms);
  auto r = fin.send().wait(io.waitScope);
  BOOST_REQUIRE_EQUAL(r.getResults().size(), 1u);
  return r.getResults()[0].getStatus();
}

// A TCP socket listening on 127.0.0.1:<free port> that never accepts: connections complete in
// the backlog and are never answered (a hung node).
struct silent_listener {
  silent_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_REQUIRE(::listen(fd, 64) == 0);
    socklen_t len = sizeof a;
    BOOST_REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  ~silent_listener() { ::close(fd); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  int fd = -1;
  uint16_t port = 0;
};

// A "ghost" member joins `n` through a raw client, advertising `ghost_address` (a
// silent_listener, which accepts connections and never answers, or a scripted_peer). True
// when `n` answered the join with its member list.
bool join_ghost(test_node& n, const std::string& ghost_address) {
  raw_client cl(n.address());
  auto req = cl.node.swimRequest();
  auto m = req.initMsg();
  m.setKind(rpc::SwimMessage::Kind::JOIN);
  m.setFrom("ghost");
  m.setFromAddress(ghost_address);
  auto me = m.initMembers(1)[0];
  me.setName("ghost");
  me.setRpcAddress(ghost_address);
  me.setState(rpc::MemberState::ALIVE);
  me.setWeight(1);
  auto r = req.send().wait(cl.io.waitScope);
  return r.hasReply() && r.getReply().getKind() == rpc::SwimMessage::Kind::JOIN_REPLY;
}
bool join_ghost(test_node& n, silent_listener& ghost) { return join_ghost(n, ghost.address()); }

// bifrostctl's sink: collects streamed chunks.
struct sink_data {
  std::string bytes;
  uint32_t writes = 0;
  bool finished = false;
};
class test_sink final : public rpc::ValueSink::Server {
public:
  explicit test_sink(std::shared_ptr<sink_data> d) : d_(std::move(d)) {}

protected:
  kj::Promise<void> write(WriteContext context) override {
    auto c = context.getParams().getChunk();
    d_->bytes.append(reinterpret_cast<const char*>(c.begin()), c.size());
    ++d_->writes;
    return kj::READY_NOW;
  }
  kj::Promise<void> finish(FinishContext context) override {
    d_->finished = true;
    context.getResults().initResults(0);
    return kj::READY_NOW;
  }

private:
  std::shared_ptr<sink_data> d_;
};

} // namespace

BOOST_AUTO_TEST_SUITE(service)

// Members dial the RPC address a node advertises: never a wildcard (another host would dial
// itself), and an IPv6 literal in brackets (KJ reads "::1:22001" as an address without port).
BOOST_AUTO_TEST_CASE(advertised_addresses_can_be_dialled) {
  BOOST_TEST(cluster::advertised_address("127.0.0.1", 22001, "cache-1") == "127.0.0.1:22001");
  BOOST_TEST(cluster::advertised_address("0.0.0.0", 22001, "cache-1") == "cache-1:22001");
  BOOST_TEST(cluster::advertised_address("::", 22001, "cache-1") == "cache-1:22001");
  BOOST_TEST(cluster::advertised_address("", 22001, "cache-1") == "cache-1:22001");
  BOOST_TEST(cluster::advertised_address("0.0.0.0", 22001, "") == "0.0.0.0:22001");
  BOOST_TEST(cluster::advertised_address("::1", 22001, "cache-1") == "[::1]:22001");
  BOOST_TEST(cluster::advertised_address("[::1]", 22001, "cache-1") == "[::1]:22001");
  BOOST_TEST(cluster::advertised_address("::", 22001, "") == "[::]:22001");
  BOOST_TEST(cluster::advertised_address("node.example", 1, "x") == "node.example:1");
}

BOOST_AUTO_TEST_CASE(single_node_publishes_its_own_ring) {
  test_node n("solo");
  BOOST_REQUIRE(wait_until([&] { return n.view() != nullptr; }, 2000ms));
  auto v = n.view();
  BOOST_TEST(v->ring->size() == 1u);
  BOOST_TEST(v->ring->member(v->self).name == "solo");
  BOOST_TEST(v->peers.size() == 1u);
  BOOST_TEST(!v->peers[0]);
  BOOST_TEST(v->past.empty());
  BOOST_TEST(n.svc->node_name() == "solo");
  BOOST_TEST(n.svc->rpc_port() != 0);
}

BOOST_AUTO_TEST_CASE(three_nodes_converge) {
  cluster3 c;
  auto ref = c.nodes[0]->view();
  for (auto* n : c.all()) {
    auto v = n->view();
    BOOST_TEST(live_names(v) == (std::vector<std::string>{"n1", "n2", "n3"}));
    BOOST_TEST(v->ring->member(v->self).name == n->svc->node_name());
    // One peer actor per remote member, none for self.
    for (cluster::ring::member_id id = 0; id < v->ring->size(); ++id)
      BOOST_TEST(static_cast<bool>(v->peers[id]) == (id != v->self));
    BOOST_TEST(!v->past.empty());
    BOOST_TEST(v->warm_until_ms() > 0);
  }
  // Peer actors are reused across rebuilds: n1's peer for n2 is the same in its last two views.
  auto& rec = *c.nodes[0]->rec;
  std::lock_guard<std::mutex> g(rec.mu);
  BOOST_REQUIRE(rec.views.size() >= 2u);
  auto& last = rec.views.back();
  auto id = *last->ring->find("n2");
  BOOST_REQUIRE(!last->past.empty());
  auto pid = last->past.front().ring->find("n2");
  if (pid && last->past.front().peers[*pid])
    BOOST_TEST((last->past.front().peers[*pid] == last->peers[id]));
  // Each view warms from the ring it replaced, then from that view's past rings (newest
  // first), all inside the window here.
  for (size_t i = 1; i < rec.views.size(); ++i) {
    auto& before = rec.views[i - 1];
    auto& v = rec.views[i];
    if (v->ring == before->ring)
      continue;  // the same ring (only an address changed)
    BOOST_REQUIRE(!v->past.empty());
    if (v->past.front().ring != before->ring)
      continue;  // the first view with others warms from that view without itself
    BOOST_TEST(v->past.size() == std::min(before->past.size() + 1, actors::cluster_view::max_past));
    for (size_t d = 1; d < v->past.size(); ++d)
      BOOST_TEST((v->past[d].ring == before->past[d - 1].ring));
  }
  // Reads are checked at the owners of the ring each change replaced (--read-check-window):
  // on n1, the first node, its ring of itself alone when n2 joined (not the ring the first
  // view with others warms from first: n2's view of the others); later, the ring before.
  for (size_t i = 1; i < rec.views.size(); ++i) {
    auto& before = rec.views[i - 1];
    auto& v = rec.views[i];
    if (v->ring == before->ring)
      continue;
    int64_t latest = 0;
    for (const auto& p : v->past)
      latest = std::max(latest, p.check_until_ms);
    BOOST_TEST(v->check_until_ms == latest);
    if (v->past.front().ring == before->ring) {
      BOOST_TEST(v->past.front().check_until_ms > 0);
    } else {
      BOOST_TEST(v->past.front().check_until_ms == 0);
      BOOST_TEST((v->past.back().ring == before->ring));
      BOOST_TEST(v->past.back().check_until_ms > 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(exec_through_peer_actors) {
  cluster3 c;
  auto& n1 = *c.nodes[0];
  auto v = n1.view();
  uint32_t owner = 0;
  auto key = remote_key(v, "small-", owner);
  auto peer = v->peers[owner];
  BOOST_REQUIRE(peer);

  auto r = exec(*n1.sys, peer, {set_op(key, "hello world", 42)});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 1u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::stored));

  r = exec(*n1.sys, peer, {get_op(key), get_op(key + "-missing")});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 2u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::hit));
  BOOST_TEST(r.results[0].flags == 42u);
  BOOST_TEST(std::string(r.results[0].value.view()) == "hello world");
  BOOST_TEST(static_cast<int>(r.results[1].st) == static_cast<int>(storage::status::miss));
  BOOST_TEST_MESSAGE("small set+get round trips: " << r.seconds * 1000 << " ms");

  // The owner itself has it: ask its own node through another node's view of it.
  auto owner_name = v->ring->member(owner).name;

  // Empty value.
  uint32_t eowner = 0;
  auto ekey = remote_key(v, "empty-", eowner);
  r = exec(*n1.sys, v->peers[eowner], {set_op(ekey, "")});
  BOOST_REQUIRE(r.answered);
  r = exec(*n1.sys, v->peers[eowner], {get_op(ekey)});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::hit));
  BOOST_TEST(r.results[0].value.size() == 0u);

  // 5 MiB: uploaded (store) and streamed (get).
  auto big = pattern(5u << 20, 'a');
  std::string bkey;
  for (int i = 0; bkey.empty(); ++i) {  // a big key on the same owner as `key`
    uint32_t o = 0;
    auto k = remote_key(v, "big-" + std::to_string(i) + "-", o);
    if (o == owner)
      bkey = k;
  }
  auto t = clock_type::now();
  r = exec(*n1.sys, v->peers[owner], {set_op(bkey, big, 7)});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::stored));
  r = exec(*n1.sys, v->peers[owner], {get_op(bkey), get_op(key)});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 2u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::hit));
  BOOST_TEST(r.results[0].flags == 7u);
  BOOST_TEST(r.results[0].value.size() == big.size());
  BOOST_TEST((r.results[0].value.view() == big));
  BOOST_TEST(std::string(r.results[1].value.view()) == "hello world");
  BOOST_TEST_MESSAGE("5 MiB set+get: " << seconds_since(t) * 1000 << " ms");

  // An upload past the owner's max item size (6 MiB here) is dropped as it streams in (it was
  // buffered whole, however large, and stored if the shard took it): refused as too large,
  // the old value dropped as for a client's set, and the owner goes on.
  r = exec(*n1.sys, v->peers[owner], {set_op(bkey, pattern(7u << 20, 'c'), 7)});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::too_large));
  r = exec(*n1.sys, v->peers[owner], {get_op(bkey)});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::miss));
  r = exec(*n1.sys, v->peers[owner], {set_op(bkey, big, 7)});
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::stored));

  // warm_atom: a get that does not count as an access still hits.
  r = exec(*n1.sys, v->peers[owner], {get_op(key)}, true);
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::hit));
  (void) owner_name;
}

BOOST_AUTO_TEST_CASE(replication_to_second_owner) {
  cluster3 c(2);
  auto& n1 = *c.nodes[0];
  auto v = n1.view();
  BOOST_TEST(v->replicas == 2u);
  BOOST_TEST(static_cast<bool>(v->replicator));
  uint32_t owner = 0;
  auto key = remote_key(v, "rep-", owner);
  cluster::ring::member_id owners[2];
  BOOST_REQUIRE(v->ring->live_owner_ids(cluster::ring::key_hash(key), 2, owners) == 2);
  auto r = exec(*n1.sys, v->peers[owners[0]], {set_op(key, "replicated", 3)});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::stored));
  // The second owner gets a copy (origin replica) shortly after.
  bool copied = false;
  if (owners[1] == v->self) {
    copied = wait_until([&] {
      auto x = at_shard(n1, key, {get_op(key)});
      return x.answered && x.results[0].st == storage::status::hit &&
             std::string(x.results[0].value.view()) == "replicated";
    }, 3000ms);
  } else {
    copied = wait_until([&] {
      auto x = exec(*n1.sys, v->peers[owners[1]], {get_op(key)}, true);
      return x.answered && x.results[0].st == storage::status::hit &&
             std::string(x.results[0].value.view()) == "replicated" && x.results[0].flags == 3;
    }, 3000ms);
  }
  BOOST_TEST(copied);
}

// A client write whose primary's shard answers after the RPC timeout: the caller is told
// unavailable, the write then lands on the primary, and its key is replicated all the same
// (once, its late result was dropped and the other owner kept the older value for good).
BOOST_AUTO_TEST_CASE(a_write_that_ends_after_the_timeout_is_still_replicated) {
  test_node n1("n1", {}, 2, false, {}, 0, "127.0.0.1:11211", std::nullopt, 500, true);
  test_node n2("n2", {n1.address()}, 2);
  BOOST_REQUIRE(wait_until([&] { return converged({&n1, &n2}, 2); }, 5000ms));
  auto v2 = n2.view();
  const auto n1_id = v2->ring->find("n1");
  BOOST_REQUIRE(n1_id);
  std::string key;
  for (int i = 0; key.empty(); ++i) {  // a key n1 is primary of
    const std::string k = "late-" + std::to_string(i);
    cluster::ring::member_id id;
    BOOST_REQUIRE(v2->ring->live_owner_ids(cluster::ring::key_hash(k), 1, &id) == 1);
    if (id == *n1_id)
      key = k;
  }
  auto on_n2 = [&] {
    return at_shard(n2, key, {get_op(key)});
  };
  auto r = exec(*n2.sys, v2->peers[*n1_id], {set_op(key, "v1")});
  BOOST_REQUIRE(r.answered && r.results[0].st == storage::status::stored);
  BOOST_REQUIRE(wait_until([&] {
    auto x = on_n2();
    return x.answered && x.results[0].st == storage::status::hit &&
           std::string(x.results[0].value.view()) == "v1";
  }, 5000ms));
  n1.shard_delay_ms->store(1500);  // n1's shards now answer after its 500 ms RPC timeout
  r = exec(*n2.sys, v2->peers[*n1_id], {set_op(key, "v2")});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::unavailable));
  n1.shard_delay_ms->store(0);
  const bool copied = wait_until([&] {
    auto x = on_n2();
    return x.answered && x.results[0].st == storage::status::hit &&
           std::string(x.results[0].value.view()) == "v2";
  }, 6000ms);
  BOOST_TEST(copied);  // the write stored on n1 (late) reached its other owner
  auto x = exec(*n1.sys, n1.real_shards[actors::key_hash(key) % n1.real_shards.size()], {get_op(key)});
  BOOST_REQUIRE(x.answered && x.results[0].st == storage::status::hit);
  BOOST_TEST(std::string(x.results[0].value.view()) == "v2");
}

// Reads `key` on ring member `id` of n1's view without counting an access: the local shard
// when it is n1 itself, else through the peer actor (origin warm).
exec_outcome read_on(test_node& n1, uint32_t id, const std::string& key) {
  auto v = n1.view();
  if (id == v->self)
    return at_shard(n1, key, {get_op(key)});
  return exec(*n1.sys, v->peers[id], {get_op(key)}, true);
}

// (replicate_atom, keys, tag) to the replicator; the (replicated_atom, tag, ok) answer.
std::optional<bool> replicate_and_wait(test_node& n, std::vector<std::string> keys,
                                       std::chrono::milliseconds limit = 10000ms) {
  caf::scoped_actor self{*n.sys};
  uint64_t tag = 4242;
  self->send(n.view()->replicator, actors::replicate_atom::value, std::move(keys), tag);
  std::optional<bool> out;
  self->receive([&](actors::replicated_atom, uint64_t got, bool ok) {
                  if (got == tag)
                    out = ok;
                },
                caf::after(limit) >> [] {});
  return out;
}

BOOST_AUTO_TEST_CASE(wait_replicas_answers_after_every_owner) {
  cluster3 c(2, true);
  auto& n1 = *c.nodes[0];
  auto v = n1.view();
  BOOST_REQUIRE(v->wait_replicas);
  // A write forwarded to its (remote) primary answers only once the second owner has it:
  // read it there at once, no waiting.
  for (int i = 0; i < 20; ++i) {
    uint32_t owner = 0;
    auto key = remote_key(v, "wait-" + std::to_string(i) + "-", owner);
    cluster::ring::member_id owners[2];
    BOOST_REQUIRE(v->ring->live_owner_ids(cluster::ring::key_hash(key), 2, owners) == 2);
    auto r = exec(*n1.sys, v->peers[owners[0]], {set_op(key, "all-" + key, 9)});
    BOOST_REQUIRE(r.answered);
    BOOST_REQUIRE(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::stored));
    auto x = read_on(n1, owners[1], key);
    BOOST_REQUIRE(x.answered);
    BOOST_TEST(static_cast<int>(x.results[0].st) == static_cast<int>(storage::status::hit));
    BOOST_TEST(std::string(x.results[0].value.view()) == "all-" + key);
    BOOST_TEST(x.results[0].flags == 9u);
  }
  // A key n1 is primary of (what a connection does): store locally, then the replicator's
  // answer comes after the other owner stored it.
  std::string key;
  cluster::ring::member_id owners[2];
  for (int i = 0;; ++i) {
    key = "local-" + std::to_string(i);
    BOOST_REQUIRE(v->ring->live_owner_ids(cluster::ring::key_hash(key), 2, owners) == 2);
    if (owners[0] == v->self)
      break;
  }
  auto& shard = shard_of(n1, key);
  auto w = exec(*n1.sys, shard, {set_op(key, "primary-copy", 4)});
  BOOST_REQUIRE(w.answered);
  auto ok = replicate_and_wait(n1, {key});
  BOOST_REQUIRE(ok.has_value());
  BOOST_TEST(*ok);
  auto x = read_on(n1, owners[1], key);
  BOOST_REQUIRE(x.answered);
  BOOST_TEST(static_cast<int>(x.results[0].st) == static_cast<int>(storage::status::hit));
  BOOST_TEST(std::string(x.results[0].value.view()) == "primary-copy");
  // A delete replicates its absence the same way.
  auto d = exec(*n1.sys, shard, {[&] {
                  storage::op o;
                  o.kind = storage::op_kind::remove;
                  o.key = key;
                  return o;
                }()});
  BOOST_REQUIRE(d.answered);
  ok = replicate_and_wait(n1, {key});
  BOOST_REQUIRE(ok.has_value());
  BOOST_TEST(*ok);
  x = read_on(n1, owners[1], key);
  BOOST_REQUIRE(x.answered);
  BOOST_TEST(static_cast<int>(x.results[0].st) == static_cast<int>(storage::status::miss));
}

BOOST_AUTO_TEST_CASE(wait_replicas_reports_an_owner_that_did_not_take_it) {
  // n1 and a "ghost" member that never answers: with R=2 the ghost owns every key too.
  test_node n("n1", {}, 2, true);
  silent_listener ghost;
  BOOST_REQUIRE(join_ghost(n, ghost));
  BOOST_REQUIRE(wait_until([&] { return live_names(n.view()).size() == 2; }, 2000ms));
  auto& shard = shard_of(n, "k");
  BOOST_REQUIRE(exec(*n.sys, shard, {set_op("k", "v")}).answered);
  auto t = clock_type::now();
  auto ok = replicate_and_wait(n, {"k"});
  BOOST_REQUIRE(ok.has_value());  // answered, bounded by the RPC timeout
  BOOST_TEST(!*ok);
  BOOST_TEST(seconds_since(t) < 4.0);
  BOOST_TEST_MESSAGE("replication to a hung owner answered false in " << seconds_since(t) << " s");
}

BOOST_AUTO_TEST_CASE(mutual_tls_members_converge_and_outsiders_are_refused) {
  test::test_pki pki;
  const std::string name = test::test_pki::name;
  cluster::tls_options good{pki.cert("node"), pki.key("node"), pki.ca("good"), name};
  test_node n1("n1", {}, 1, false, good);
  test_node n2("n2", {n1.address()}, 1, false, good);
  BOOST_REQUIRE(wait_until([&] { return converged({&n1, &n2}, 2); }, 5000ms));
  // Data crosses the TLS connection.
  auto v = n1.view();
  uint32_t owner = 0;
  auto key = remote_key(v, "tls-", owner);
  auto w = exec(*n1.sys, v->peers[owner], {set_op(key, "over tls", 5)});
  BOOST_REQUIRE(w.answered);
  BOOST_TEST(static_cast<int>(w.results[0].st) == static_cast<int>(storage::status::stored));
  auto r = exec(*n1.sys, v->peers[owner], {get_op(key)});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(std::string(r.results[0].value.view()) == "over tls");
  // Outsiders: a certificate from another CA (trusting either CA), and no TLS at all.
  test_node evil("evil", {n1.address()}, 1, false,
                 {pki.cert("intruder"), pki.key("intruder"), pki.ca("evil"), name});
  test_node mixed("mixed", {n1.address()}, 1, false,
                  {pki.cert("intruder"), pki.key("intruder"), pki.ca("good"), name});
  test_node plain("plain", {n1.address()});
  // A good certificate that does not carry the name the others expect.
  test_node misnamed("misnamed", {n1.address()}, 1, false,
                     {pki.cert("node"), pki.key("node"), pki.ca("good"), "other.name"});
  std::this_thread::sleep_for(1500ms);  // joins are retried every 500 ms
  BOOST_TEST(live_names(n1.view()) == (std::vector<std::string>{"n1", "n2"}));
  BOOST_TEST(live_names(n2.view()) == (std::vector<std::string>{"n1", "n2"}));
  for (auto* outsider : {&evil, &mixed, &plain, &misnamed})
    BOOST_TEST(live_names(outsider->view()).size() == 1u);
}

BOOST_AUTO_TEST_CASE(tls_configuration_errors_name_the_file) {
  test::test_pki pki;
  auto start_error = [](cluster::tls_options tls) {
    sys_config cfg;
    caf::actor_system sys{cfg};
    cluster::service_config sc;
    sc.node_name = "n";
    sc.tls = std::move(tls);
    std::string err;
    auto svc = cluster::service::start(sys, sc, {}, nullptr, nullptr, err);
    if (svc)
      svc->stop();
    return svc ? std::string() : err;
  };
  auto garbage = pki.dir() + "/garbage.pem";
  std::ofstream(garbage) << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n";
  struct bad {
    cluster::tls_options tls;
    std::string expect;
  };
  for (auto& b : std::vector<bad>{
         {{"/nonexistent/cert.pem", pki.key("node"), pki.ca("good"), ""},
          "cannot read the TLS certificate file '/nonexistent/cert.pem'"},
         {{pki.cert("node"), "/nonexistent/key.pem", pki.ca("good"), ""},
          "cannot read the TLS key file '/nonexistent/key.pem'"},
         {{garbage, pki.key("node"), pki.ca("good"), ""},
          "invalid TLS certificate file '" + garbage + "'"},
         {{pki.cert("node"), pki.key("node"), garbage, ""}, "invalid TLS CA file"},
         {{pki.cert("node"), pki.cert("node"), pki.ca("good"), ""}, "invalid TLS key file"},
         {{pki.cert("node"), pki.key("intruder"), pki.ca("good"), ""}, "certificate and key"},
         {{pki.cert("node"), "", "", ""}, "go together"},
       }) {
    auto err = start_error(b.tls);
    BOOST_TEST(err.find(b.expect) != std::string::npos, "'" << err << "' should contain '"
                                                             << b.expect << "'");
  }
}

BOOST_AUTO_TEST_CASE(crashed_node_is_detected_and_unavailable) {
  cluster3 c;
  auto& n1 = *c.nodes[0];
  auto v = n1.view();
  auto id3 = *v->ring->find("n3");
  auto peer3 = v->peers[id3];
  BOOST_REQUIRE(peer3);

  auto t = clock_type::now();
  c.nodes[2]->svc->halt();  // no leave announcement: a crash as far as the others can tell
  BOOST_TEST_MESSAGE("halt took " << seconds_since(t) << " s");

  // Right away: the connection is refused -> unavailable, quickly.
  auto r = exec(*n1.sys, peer3, {get_op("x"), get_op("y")});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 2u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::unavailable));
  BOOST_TEST(static_cast<int>(r.results[1].st) == static_cast<int>(storage::status::unavailable));
  BOOST_TEST(r.seconds < 2.5);
  BOOST_TEST_MESSAGE("exec to a halted node answered unavailable in " << r.seconds * 1000 << " ms");

  auto dead_everywhere = [&] {
    for (int i = 0; i < 2; ++i) {
      auto names = live_names(c.nodes[i]->view());
      if (names != std::vector<std::string>{"n1", "n2"})
        return false;
    }
    return true;
  };
  bool detected = wait_until(dead_everywhere, 5000ms);
  double took = seconds_since(t);
  BOOST_TEST(detected);
  BOOST_TEST(took < 3.5);
  BOOST_TEST_MESSAGE("crash detected by both survivors in " << took << " s");

  // Dead in the view: no peer for it, and the old peer actor answers at once that it sent
  // nothing (a connection still on the old ring places the op again on the new one).
  auto v2 = n1.view();
  BOOST_TEST(!v2->peers[*v2->ring->find("n3")]);
  r = exec(*n1.sys, peer3, {get_op("x")});
  BOOST_REQUIRE(r.answered);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::not_sent));
  // A store's value comes back with it, so that it can be placed again whole.
  r = exec(*n1.sys, peer3, {set_op("x", "the value"), get_op("x")});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 2u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::not_sent));
  BOOST_TEST(r.results[0].value.view() == "the value");
  BOOST_TEST(!r.results[1].value);
  BOOST_TEST(r.seconds < 0.5);
}

BOOST_AUTO_TEST_CASE(a_member_back_at_once_with_another_memcached_port_is_dialed_there) {
  // n2 crashes and comes back at once on the same RPC port but another memcached port, before
  // anyone declared it dead (a suspicion lasts 30 s here): the ring stays the same, yet the
  // data links must dial the new port (the old one may be another node's by now).
  cluster::membership_config swim;
  swim.suspicion_timeout_ms = 30000;
  auto n1 = std::make_unique<test_node>("n1", std::vector<std::string>{}, 1, false,
                                        cluster::tls_options{}, 0, "127.0.0.1:11211", swim);
  auto seeds = std::vector<std::string>{n1->address()};
  auto n2 = std::make_unique<test_node>("n2", seeds, 1, false, cluster::tls_options{}, 0,
                                        "127.0.0.1:11211", swim);
  BOOST_REQUIRE(wait_until([&] { return converged({n1.get(), n2.get()}, 2); }, 5000ms));
  auto client_of_n2 = [&]() -> std::string {
    auto v = n1->view();
    auto id = v ? v->ring->find("n2") : std::nullopt;
    return id && *id < v->clients.size() ? v->clients[*id] : std::string();
  };
  BOOST_TEST(client_of_n2() == "127.0.0.1:11211");
  auto epoch = n1->view()->ring->epoch();
  uint16_t rpc_port = n2->svc->rpc_port();
  n2->svc->halt();
  n2.reset();
  n2 = std::make_unique<test_node>("n2", seeds, 1, false, cluster::tls_options{}, rpc_port,
                                   "127.0.0.1:22122", swim);
  BOOST_TEST(wait_until([&] { return client_of_n2() == "127.0.0.1:22122"; }, 5000ms));
  auto v = n1->view();
  BOOST_TEST(live_names(v) == (std::vector<std::string>{"n1", "n2"}));
  BOOST_TEST(v->ring->epoch() == epoch);  // the same ring: only the addresses changed
}

BOOST_AUTO_TEST_CASE(graceful_stop_is_seen_as_left) {
  cluster3 c;
  auto t = clock_type::now();
  c.nodes[2]->svc->stop();
  double stop_s = seconds_since(t);
  bool gone = wait_until([&] {
    for (int i = 0; i < 2; ++i)
      if (live_names(c.nodes[i]->view()) != std::vector<std::string>{"n1", "n2"})
        return false;
    return true;
  }, 3000ms);
  BOOST_TEST(gone);
  BOOST_TEST(stop_s < 2.5);
  BOOST_TEST_MESSAGE("graceful stop took " << stop_s << " s; seen by both in "
                                           << seconds_since(t) << " s");
  // The leaver is `left` (omitted from the ring input), not dead.
  auto v = c.nodes[0]->view();
  BOOST_TEST(!v->ring->find("n3").has_value());
  c.nodes[2]->svc->stop();  // idempotent
}

BOOST_AUTO_TEST_CASE(hung_peer_times_out) {
  test_node n("n1");
  silent_listener ghost;
  BOOST_REQUIRE(join_ghost(n, ghost));
  BOOST_REQUIRE(wait_until([&] { return live_names(n.view()).size() == 2; }, 2000ms));
  auto peer = peer_of(n, "ghost");
  auto r = exec(*n.sys, peer, {get_op("a"), set_op("b", "c")});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 2u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::unavailable));
  BOOST_TEST(static_cast<int>(r.results[1].st) == static_cast<int>(storage::status::unavailable));
  BOOST_TEST(r.seconds < 3.0);
  BOOST_TEST_MESSAGE("exec to a hung peer answered unavailable in " << r.seconds << " s");
  // Failure detection declares it dead (it never acks).
  BOOST_TEST(wait_until([&] { return live_names(n.view()).size() == 1; }, 4000ms));
}

// A member played by the test, on its own KJ thread: it answers hello, drops SWIM messages
// (answers them empty; never, once `answer_swim` is false), answers ring queries only while
// `answer_rings`, and runs each execute call by the first op's key: "slow..." streams
// `chunks` chunks to the call's sink, one every `every`, then answers hit; "behind..."
// answers hit once every slow call before it has answered; anything else is never answered.
class scripted_peer {
public:
  scripted_peer(int chunks, std::chrono::milliseconds every) {
    std::promise<std::string> ready;
    auto addr = ready.get_future();
    thread_ = std::thread([this, &ready, chunks, every] {
      bool told = false;
      try {
        auto io = kj::setupAsyncIo();
        auto stop = kj::newPromiseAndFulfiller<void>();
        {
          std::lock_guard<std::mutex> g(mu_);
          executor_ = kj::getCurrentThreadExecutor().addRef();
          stop_ = kj::mv(stop.fulfiller);
        }
        auto listener =
            io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
        ready.set_value("127.0.0.1:" + std::to_string(listener->getPort()));
        told = true;
        capnp::TwoPartyServer server(kj::heap<node_impl>(io.provider->getTimer(), chunks,
                                                         every.count() * kj::MILLISECONDS,
                                                         executes_, hellos_, rings_,
                                                         answer_swim, answer_rings));
        stop.promise.exclusiveJoin(server.listen(*listener)).wait(io.waitScope);
      } catch (...) {
        if (!told)
          ready.set_exception(std::current_exception());
      }
      std::lock_guard<std::mutex> g(mu_);
      executor_ = nullptr;
    });
    address_ = addr.get();
  }
  ~scripted_peer() {
    kj::Own<const kj::Executor> exec;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (executor_)
        exec = executor_->addRef();
    }
    if (exec) {
      try {
        exec->executeSync([this] {
          if (stop_->isWaiting())
            stop_->fulfill();
        });
      } catch (...) {  // the thread ended meanwhile
      }
    }
    thread_.join();
  }
  const std::string& address() const { return address_; }
  // Execute calls, hellos and ring queries received so far.
  int executes() const { return executes_.load(); }
  int hellos() const { return hellos_.load(); }
  int rings() const { return rings_.load(); }
  std::atomic<bool> answer_swim{true};
  std::atomic<bool> answer_rings{false};

private:
  class node_impl final : public rpc::Node::Server {
  public:
    node_impl(kj::Timer& timer, int chunks, kj::Duration every, std::atomic<int>& executes,
              std::atomic<int>& hellos, std::atomic<int>& rings, std::atomic<bool>& answer_swim,
              std::atomic<bool>& answer_rings)
      : timer_(timer), chunks_(chunks), every_(every), executes_(executes), hellos_(hellos),
        rings_(rings), answer_swim_(answer_swim), answer_rings_(answer_rings) {}

  protected:
    kj::Promise<void> hello(HelloContext context) override {
      ++hellos_;
      auto r = context.getResults();
      r.setVersion(rpc::SCHEMA_VERSION);
      r.initSelf().setName("ghost");
      return kj::READY_NOW;
    }
    kj::Promise<void> swim(SwimContext) override {
      return answer_swim_ ? kj::Promise<void>(kj::READY_NOW) : kj::Promise<void>(kj::NEVER_DONE);
    }
    kj::Promise<void> ring(RingContext) override {
      ++rings_;
      return answer_rings_ ? kj::Promise<void>(kj::READY_NOW) : kj::Promise<void>(kj::NEVER_DONE);
    }
    kj::Promise<void> execute(ExecuteContext context) override {
      ++executes_;
      auto params = context.getParams();
      auto ops = params.getOps();
      std::string key(reinterpret_cast<const char*>(ops[0].getKey().begin()),
                      ops[0].getKey().size());
      unsigned n = ops.size();
      auto answer = [context, n]() mutable {
        auto rs = context.getResults().initResults(n);
        for (unsigned i = 0; i < n; ++i) {
          rs[i].setStatus(rpc::Status::HIT);
          rs[i].setValue(kj::StringPtr("v").asBytes());
          rs[i].setValueSize(1);
        }
      };
      if (key.rfind("slow", 0) == 0) {
        ++slow_running_;
        auto done = kj::defer([this] {
          if (--slow_running_ == 0)
            for (auto& f : behind_)
              f->fulfill();
          behind_.clear();
        });
        return stream(params.getSink(), 0).then(kj::mv(answer)).attach(kj::mv(done));
      }
      if (key.rfind("behind", 0) == 0) {
        if (slow_running_ == 0) {
          answer();
          return kj::READY_NOW;
        }
        auto paf = kj::newPromiseAndFulfiller<void>();
        behind_.push_back(kj::mv(paf.fulfiller));
        return paf.promise.then(kj::mv(answer));
      }
      return kj::NEVER_DONE;
    }

  private:
    kj::Promise<void> stream(rpc::ValueSink::Client sink, int sent) {
      if (sent == chunks_)
        return kj::READY_NOW;
      return timer_.afterDelay(every_).then([this, sink, sent]() mutable {
        auto req = sink.writeRequest();
        req.setIndex(0);
        req.setChunk(kj::StringPtr("chunk").asBytes());
        return req.send().then([this, sink, sent]() mutable { return stream(sink, sent + 1); });
      });
    }
    kj::Timer& timer_;
    int chunks_;
    kj::Duration every_;
    std::atomic<int>& executes_;
    std::atomic<int>& hellos_;
    std::atomic<int>& rings_;
    std::atomic<bool>& answer_swim_;
    std::atomic<bool>& answer_rings_;
    int slow_running_ = 0;
    std::vector<kj::Own<kj::PromiseFulfiller<void>>> behind_;
  };

  std::thread thread_;
  std::mutex mu_;
  kj::Own<const kj::Executor> executor_;  // the KJ thread's, while it runs
  kj::Own<kj::PromiseFulfiller<void>> stop_;
  std::atomic<int> executes_{0};
  std::atomic<int> hellos_{0};
  std::atomic<int> rings_{0};
  std::string address_;
};

// n1, with a 1 s RPC timeout (a probe waits this long: the fast calls fit in it), joined by a
// scripted member `ghost` that answers no SWIM (a SWIM answer is a word from it too; it stays
// suspect, so live) and no ring query until told. get(key): a read of the key at the ghost
// through n1's peer actor, its status and how long it took.
struct silent_ghost {
  scripted_peer ghost{0, 100ms};
  std::unique_ptr<test_node> n;
  caf::actor peer;
  static constexpr int hit = static_cast<int>(storage::status::hit);
  static constexpr int unavailable = static_cast<int>(storage::status::unavailable);

  silent_ghost() {
    ghost.answer_swim = false;
    cluster::membership_config swim;
    swim.suspicion_timeout_ms = 60000;
    n = std::make_unique<test_node>("n1", std::vector<std::string>{}, 1, false,
                                    cluster::tls_options{}, 0, "127.0.0.1:11211", swim, 1000);
    BOOST_REQUIRE(join_ghost(*n, ghost.address()));
    BOOST_REQUIRE(wait_until([&] { return live_names(n->view()).size() == 2; }, 2000ms));
    peer = peer_of(*n, "ghost");
  }
  std::pair<int, double> get(const std::string& key) {
    storage::op o = get_op(key);
    o.get_value = true;
    auto r = exec(*n->sys, peer, {o});
    BOOST_REQUIRE(r.answered);
    BOOST_REQUIRE_EQUAL(r.results.size(), 1u);
    return std::make_pair(static_cast<int>(r.results[0].st), r.seconds);
  }
};

// A member that stops answering data calls while its RPC port stays up (a cut that SWIM does
// not see: test_partition.py): the call that heard nothing from it for the timeout marks it
// unreachable, and data calls then answer unavailable at once, unsent, instead of each
// waiting a timeout, until a probe is answered — a ring query on its connection, or, once a
// probe went unanswered (that connection is broken), a new connection's hello.
BOOST_AUTO_TEST_CASE(a_silent_member_fails_data_calls_at_once_until_a_probe_is_answered) {
  silent_ghost g;
  auto& ghost = g.ghost;
  const int hit = g.hit, unavailable = g.unavailable;
  auto get = [&](const char* key) { return g.get(key); };
  auto back = [&](const char* key) {  // a hit within 5 s
    for (auto until = std::chrono::steady_clock::now() + 5s;
         std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(50ms))
      if (get(key).first == hit)
        return true;
    return false;
  };

  // The probe is answered on the connection there is.
  auto [st1, s1] = get("stuck-1");
  BOOST_TEST(st1 == unavailable);
  BOOST_TEST(s1 >= 0.8);
  BOOST_TEST(ghost.executes() == 1);
  ghost.answer_rings = true;
  auto [st2, s2] = get("behind-1");
  BOOST_TEST(st2 == unavailable);  // at once (and it makes the probe)
  BOOST_TEST(s2 < 0.2);
  BOOST_TEST(ghost.executes() == 1);
  BOOST_TEST(wait_until([&] { return ghost.rings() == 1; }, 2000ms));
  const int hellos = ghost.hellos();
  BOOST_TEST(back("behind-2"));
  BOOST_TEST(ghost.hellos() == hellos);  // the same connection

  // The probe is not answered: calls keep failing at once; its connection is broken, and a
  // new one's hello (answered) ends it.
  ghost.answer_rings = false;
  auto [st3, s3] = get("stuck-2");
  BOOST_TEST(st3 == unavailable);
  BOOST_TEST(s3 >= 0.8);
  const int executes = ghost.executes();
  for (const char* key : {"behind-3", "behind-4"}) {
    auto [st, secs] = get(key);
    BOOST_TEST(st == unavailable);
    BOOST_TEST(secs < 0.2);
  }
  BOOST_TEST(ghost.executes() == executes);  // not sent
  BOOST_TEST(wait_until([&] { return ghost.rings() == 2; }, 2000ms));
  std::this_thread::sleep_for(100ms);
  BOOST_TEST(ghost.rings() == 2);  // one probe at a time
  BOOST_TEST(back("behind-6"));
  BOOST_TEST(ghost.hellos() > hellos);  // a new connection
}

// A data call sent before a silent member answered again (a probe's answer), and timed out
// after that answer, does not mark the member unreachable again: the word it waited for in
// vain was due before the member came back. (Before, a call sent before a pause re-marked the
// member right after it answered a probe, and the calls of the next probe's round trip failed
// at once: 0-10 ms in session 54's trial.)
BOOST_AUTO_TEST_CASE(a_call_older_than_a_members_answer_does_not_mark_it_again) {
  silent_ghost g;
  auto& ghost = g.ghost;
  ghost.answer_rings = true;
  const int hit = g.hit, unavailable = g.unavailable;
  auto get = [&](const std::string& key) { return g.get(key); };
  std::pair<int, double> first, older;
  std::thread a([&] { first = get("stuck-1"); });  // unanswered: marks it after a timeout
  BOOST_REQUIRE(wait_until([&] { return ghost.executes() == 1; }, 2000ms));
  std::this_thread::sleep_for(400ms);
  std::thread c([&] { older = get("stuck-2"); });  // sent before the member answers again
  BOOST_REQUIRE(wait_until([&] { return ghost.executes() == 2; }, 2000ms));
  a.join();
  BOOST_TEST(first.first == unavailable);
  BOOST_TEST(first.second >= 0.8);
  auto [st, secs] = get("behind-1");  // at once, and it makes the probe, which is answered
  BOOST_TEST(st == unavailable);
  BOOST_TEST(secs < 0.2);
  BOOST_TEST(wait_until([&] { return ghost.rings() == 1; }, 300ms));
  std::this_thread::sleep_for(50ms);  // (its answer is taken; no data call answered since)
  c.join();  // timed out, after the answer
  BOOST_TEST(older.first == unavailable);
  BOOST_TEST(older.second >= 0.8);
  for (int i = 2; i < 5; ++i) {
    auto [st3, secs3] = get("behind-" + std::to_string(i));
    BOOST_TEST(st3 == hit, "behind-" << i << " after the older call timed out");
    BOOST_TEST(secs3 < 0.2);
  }
}

// Replicated state still goes to a member marked unreachable; its answer is a word from the
// member, and ends the mark as a probe's answer does. (Before, the mark stayed until a client
// call made a probe that was answered: here the member answers no probe, and every client
// call failed at once.)
BOOST_AUTO_TEST_CASE(an_answered_copy_ends_an_unreachable_mark) {
  silent_ghost g;  // (no ring query is answered: probes)
  auto& ghost = g.ghost;
  const int hit = g.hit, unavailable = g.unavailable;
  auto get = [&](const std::string& key) { return g.get(key); };
  auto [st1, s1] = get("stuck-1");  // marks it
  BOOST_TEST(st1 == unavailable);
  BOOST_TEST(s1 >= 0.8);
  auto [st2, s2] = get("behind-1");  // at once (its probe is not answered)
  BOOST_TEST(st2 == unavailable);
  BOOST_TEST(s2 < 0.2);
  const int executes = ghost.executes();
  {
    caf::scoped_actor self{*g.n->sys};
    self->send(g.peer, actors::apply_atom::value, uint64_t{7},
               storage::op_batch{get_op("behind-copy")});
    bool answered = false;
    self->receive([&](actors::result_atom, uint64_t tag, storage::result_batch& rs) {
                    answered = tag == 7 && rs.size() == 1 && rs[0].st == storage::status::hit;
                  },
                  caf::after(3000ms) >> [] {});
    BOOST_TEST(answered);
  }
  BOOST_TEST(ghost.executes() == executes + 1);
  auto [st3, s3] = get("behind-2");
  BOOST_TEST(st3 == hit);
  BOOST_TEST(s3 < 0.2);
  BOOST_TEST(ghost.rings() == 1);  // (the one probe, never answered)
}

// A data call that waits behind another call's values on a busy member is not failed while
// that member streams them (the member is at work), and still fails once the member does
// nothing more for it: one or two timeouts after the member's last progress, or 15 to 16
// timeouts without progress of its own however busy the member is. (Before, each call failed
// one or two timeouts after its own last progress, busy member or not.)
BOOST_AUTO_TEST_CASE(a_call_behind_a_busy_members_values_waits_for_them) {
  cluster::membership_config swim;
  swim.suspicion_timeout_ms = 60000;  // the scripted member never acks: it stays suspect (live)
  const uint32_t timeout_ms = 400;
  auto run = [&](int chunks) {
    struct outcome {
      exec_outcome slow, behind, stuck;
    };
    scripted_peer ghost(chunks, 100ms);
    test_node n("n1", {}, 1, false, {}, 0, "127.0.0.1:11211", swim, timeout_ms);
    BOOST_REQUIRE(join_ghost(n, ghost.address()));
    BOOST_REQUIRE(wait_until([&] { return live_names(n.view()).size() == 2; }, 2000ms));
    auto peer = peer_of(n, "ghost");
    storage::op slow = get_op("slow");
    slow.get_value = true;
    slow.get_touch = true;  // a get that writes goes with a sink at once
    storage::op behind = get_op("behind"), stuck = get_op("stuck");
    behind.get_value = stuck.get_value = true;
    outcome o;
    // Separate calls, in this order: each once the member has the one before.
    std::thread a([&] { o.slow = exec(*n.sys, peer, {slow}, false, 20000ms); });
    BOOST_REQUIRE(wait_until([&] { return ghost.executes() == 1; }, 5000ms));
    std::thread b([&] { o.behind = exec(*n.sys, peer, {behind}, false, 20000ms); });
    BOOST_REQUIRE(wait_until([&] { return ghost.executes() == 2; }, 5000ms));
    std::thread c([&] { o.stuck = exec(*n.sys, peer, {stuck}, false, 20000ms); });
    a.join();
    b.join();
    c.join();
    BOOST_TEST_MESSAGE(chunks << " chunks: answered after slow " << o.slow.seconds
                              << " s, behind " << o.behind.seconds << " s, stuck "
                              << o.stuck.seconds << " s (each from its own start)");
    return o;
  };
  auto st = [](const exec_outcome& e) {
    return e.answered && e.results.size() == 1 ? static_cast<int>(e.results[0].st) : -1;
  };
  const int hit = static_cast<int>(storage::status::hit);
  const int unavailable = static_cast<int>(storage::status::unavailable);
  {
    // The slow call streams for 2 s (5 timeouts): the call behind it waits and is answered;
    // the one never answered fails one or two timeouts after the last chunk.
    auto o = run(20);
    BOOST_TEST(st(o.slow) == hit);
    BOOST_TEST(st(o.behind) == hit);
    BOOST_TEST(o.behind.seconds > 1.5);
    BOOST_TEST(st(o.stuck) == unavailable);
    BOOST_TEST(o.stuck.seconds > 1.5);
    BOOST_TEST(o.stuck.seconds < 3.8);
  }
  {
    // Streaming for 8 s: the calls without progress of their own fail at 15 to 16 timeouts
    // (6 to 6.4 s), busy member or not: the one never answered and the one behind the stream.
    auto o = run(80);
    BOOST_TEST(st(o.slow) == hit);
    BOOST_TEST(st(o.stuck) == unavailable);
    BOOST_TEST(o.stuck.seconds > 5.5);
    BOOST_TEST(o.stuck.seconds < 7.8);
    BOOST_TEST(st(o.behind) == unavailable);
  }
}

BOOST_AUTO_TEST_CASE(tool_requests_are_routed_to_owners) {
  cluster3 c;
  // Like bifrostctl: hello as a tool, then set through one node and get through another.
  auto hello = [](raw_client& cl) {
    auto req = cl.node.helloRequest();
    req.setVersion(rpc::SCHEMA_VERSION);
    req.initFrom().setName("bifrostctl");
    req.send().wait(cl.io.waitScope);
  };
  std::vector<std::string> keys;
  for (int i = 0; i < 12; ++i)
    keys.push_back("tool-" + std::to_string(i));
  auto big = pattern(700 << 10, 'q');
  {
    raw_client a(c.nodes[0]->address());  // one KJ loop per thread: one client at a time
    hello(a);
    auto req = a.node.executeRequest();
    auto ops = req.initOps(static_cast<unsigned>(keys.size()));
    for (size_t i = 0; i < keys.size(); ++i)
      cluster::to_rpc(set_op(keys[i], i == 3 ? big : "v" + std::to_string(i)),
                      ops[static_cast<unsigned>(i)]);
    req.setOrigin(rpc::Origin::CLIENT);
    auto r = req.send().wait(a.io.waitScope);
    BOOST_REQUIRE(r.getResults().size() == keys.size());
    for (auto x : r.getResults())
      BOOST_TEST((x.getStatus() == rpc::Status::STORED));
  }
  // Every key landed on its owner (checked through the owner's own shards).
  auto v = c.nodes[0]->view();
  for (auto& k : keys) {
    auto owner = v->ring->live_primary(k)->name;
    test_node* n = nullptr;
    for (auto* x : c.all())
      if (x->svc->node_name() == owner)
        n = x;
    BOOST_REQUIRE(n);
    auto r = at_shard(*n, k, {get_op(k)});
    BOOST_TEST(r.answered);
    BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::hit));
  }
  raw_client b(c.nodes[2]->address());
  hello(b);
  auto data = std::make_shared<sink_data>();
  auto req = b.node.executeRequest();
  auto ops = req.initOps(2);
  cluster::to_rpc(get_op(keys[3]), ops[0]);
  cluster::to_rpc(get_op(keys[5]), ops[1]);
  req.setOrigin(rpc::Origin::CLIENT);
  req.setSink(kj::heap<test_sink>(data));
  auto r = req.send().wait(b.io.waitScope);
  BOOST_REQUIRE(r.getResults().size() == 2u);
  auto r0 = r.getResults()[0];
  BOOST_TEST((r0.getStatus() == rpc::Status::HIT));
  BOOST_TEST(r0.getStreamed());
  BOOST_TEST(r0.getValueSize() == big.size());
  BOOST_TEST(data->bytes.size() == big.size());
  BOOST_TEST((data->bytes == big));
  BOOST_TEST(data->writes == 3u);  // 700 KiB in 256 KiB chunks
  BOOST_TEST(!data->finished);     // get sinks are never finished
  BOOST_TEST(cluster::to_string(r.getResults()[1].getValue()) == "v5");
}

// Bytes that are not Cap'n Proto on the RPC port: the node drops that connection (or waits
// for the rest of a message that never ends, until the peer closes) and goes on serving.
BOOST_AUTO_TEST_CASE(hostile_bytes_on_the_rpc_port_leave_the_node_serving) {
  test_node n("h");
  auto connect_raw = [&]() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(n.svc->rpc_port()));
    BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  };
  // Reads until the node closes; false if it did not within the receive timeout.
  auto closed_by_node = [](int fd) {
    char buf[4096];
    for (;;) {
      ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno == ECONNRESET))
        return true;
      if (r < 0)
        return false;  // timed out
    }
  };
  auto le32 = [](std::string& s, uint32_t v) {
    for (int i = 0; i < 4; ++i)
      s += static_cast<char>((v >> (8 * i)) & 0xff);
  };
  std::string random;
  for (int i = 0; i < 65536; ++i)
    random += static_cast<char>((i * 2654435761u) >> 24);
  std::string many_segments, huge_segment, truncated;
  le32(many_segments, 0xfffffffeu);  // segment count - 1
  le32(many_segments, 1);
  le32(huge_segment, 0);
  le32(huge_segment, 1u << 27);  // one segment of 1 GiB
  le32(truncated, 0);
  le32(truncated, 100);  // 800 bytes announced, 5 sent
  truncated += "abcde";
  struct payload {
    const char* what;
    std::string bytes;
    bool node_closes;  // else the node waits for the rest: we close our side first
  };
  // A connection that never says anything stays open beside all of this.
  int idle = connect_raw();
  for (auto& p : {payload{"random bytes", random, true},
                  payload{"HTTP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
                  payload{"2^32-1 segments", many_segments, true},
                  payload{"a 1 GiB segment", huge_segment, true},
                  payload{"a truncated message", truncated, false}}) {
    int fd = connect_raw();
    size_t off = 0;
    while (off < p.bytes.size()) {
      ssize_t w = ::send(fd, p.bytes.data() + off, p.bytes.size() - off, MSG_NOSIGNAL);
      if (w <= 0)
        break;  // the node may close before reading everything
      off += static_cast<size_t>(w);
    }
    if (!p.node_closes)
      ::shutdown(fd, SHUT_WR);
    BOOST_CHECK_MESSAGE(closed_by_node(fd), p.what << ": the node kept the connection open");
    ::close(fd);
    // Still serving: a real client gets its answer.
    raw_client cl(n.address());
    auto st = cl.node.statusRequest().send().wait(cl.io.waitScope);
    BOOST_TEST(std::string(st.getSelf().getInfo().getName().cStr()) == "h", p.what);
  }
  ::close(idle);
}

BOOST_AUTO_TEST_CASE(hello_checks_the_schema_version) {
  test_node n("v1");
  raw_client cl(n.address());
  {
    auto req = cl.node.helloRequest();
    req.setVersion(rpc::SCHEMA_VERSION);
    req.initFrom().setName("test");
    auto r = req.send().wait(cl.io.waitScope);
    BOOST_TEST(r.getVersion() == rpc::SCHEMA_VERSION);
    BOOST_TEST(std::string(r.getSelf().getName().cStr()) == "v1");
  }
  auto req = cl.node.helloRequest();
  req.setVersion(rpc::SCHEMA_VERSION + 41);
  req.initFrom().setName("future");
  std::string desc;
  kj::Exception::Type type = kj::Exception::Type::OVERLOADED;
  try {
    req.send().wait(cl.io.waitScope);
  } catch (kj::Exception& e) {
    desc = e.getDescription().cStr();
    type = e.getType();
  }
  BOOST_TEST_MESSAGE("refusal: " << desc);
  BOOST_TEST((type == kj::Exception::Type::FAILED));
  BOOST_TEST(desc.find("version") != std::string::npos);
  BOOST_TEST(desc.find(std::to_string(rpc::SCHEMA_VERSION)) != std::string::npos);
  BOOST_TEST(desc.find(std::to_string(rpc::SCHEMA_VERSION + 41)) != std::string::npos);
}

BOOST_AUTO_TEST_CASE(queries_answer) {
  cluster3 c;
  raw_client cl(c.nodes[1]->address());
  auto& ws = cl.io.waitScope;

  auto st = cl.node.statusRequest().send().wait(ws);
  auto self = st.getSelf();
  BOOST_TEST(std::string(self.getInfo().getName().cStr()) == "n2");
  BOOST_TEST(std::string(self.getInfo().getRpcAddress().cStr()) == c.nodes[1]->address());
  BOOST_TEST((self.getInfo().getState() == rpc::MemberState::ALIVE));
  BOOST_TEST(self.getRingShare() > 0.1);
  BOOST_TEST(self.getRingShare() < 0.6);
  BOOST_TEST(self.getItems() == 7u);
  BOOST_TEST(self.getBytes() == 700u);
  BOOST_TEST(!self.getDraining());
  BOOST_TEST(std::string(st.getVersion().cStr()).find("bifrost") != std::string::npos);

  auto mem = cl.node.membersRequest().send().wait(ws);
  BOOST_REQUIRE(mem.getMembers().size() == 3u);
  double sum = 0;
  for (auto m : mem.getMembers()) {
    BOOST_TEST((m.getInfo().getState() == rpc::MemberState::ALIVE));
    BOOST_TEST(m.getItems() == 7u);  // remote ones asked over RPC
    sum += m.getRingShare();
  }
  BOOST_TEST(sum > 0.999);
  BOOST_TEST(sum < 1.001);

  auto req = cl.node.ringRequest();
  req.setKey(cluster::as_data("some-key"));
  auto rg = req.send().wait(ws);
  BOOST_REQUIRE(rg.getOwners().size() == 1u);
  auto expect = c.nodes[1]->view()->ring->live_primary("some-key")->name;
  BOOST_TEST(std::string(rg.getOwners()[0].getName().cStr()) == expect);
  BOOST_TEST(rg.getEpoch() == c.nodes[1]->view()->ring->epoch());

  // The node's own stats, then its data-call counters.
  auto stat = [&](const std::string& name) { return cl.stat(name); };
  auto stats = cl.node.statsRequest().send().wait(ws);
  BOOST_REQUIRE(stats.getStats().size() == 17u);
  BOOST_TEST(std::string(stats.getStats()[2].getValue().cStr()) == "n2");
  BOOST_TEST(stat("cluster_members_known") == "3");
  BOOST_TEST(stat("cluster_members_forgotten") == "0");
  BOOST_TEST(stat("cluster_ops_placed_again") == "0");
  BOOST_TEST(stat("cluster_late_writes_replicated") == "0");
  BOOST_TEST(stat("cluster_peer_actors") == "2");
  BOOST_TEST(stat("cluster_rpc_unreachable") == "0");
  BOOST_TEST(stat("cluster_rpc_calls_failed_fast") == "0");
  BOOST_TEST(stat("cluster_rpc_late_calls_refused") == "0");
  auto served_calls = std::stoull(stat("cluster_calls_served"));
  auto served_ops = std::stoull(stat("cluster_ops_served"));
  BOOST_TEST(stat("cluster_calls_sent") != "(missing)");
  BOOST_TEST(stat("cluster_ops_sent") != "(missing)");

  cl.node.drainRequest().send().wait(ws);
  st = cl.node.statusRequest().send().wait(ws);
  BOOST_TEST(st.getSelf().getDraining());

  // execute through the raw client: a set inline, then a 300 KiB get streamed to our sink.
  {
    auto ex = cl.node.executeRequest();
    auto op = ex.initOps(1)[0];
    storage::op o = set_op("raw", pattern(300 << 10, 'k'));
    cluster::to_rpc(o, op);
    ex.setOrigin(rpc::Origin::CLIENT);
    auto r = ex.send().wait(ws);
    BOOST_TEST((r.getResults()[0].getStatus() == rpc::Status::STORED));
  }
  // That execute is one data call of one op served; a second of three ops follows.
  BOOST_TEST(std::stoull(stat("cluster_calls_served")) == served_calls + 1);
  BOOST_TEST(std::stoull(stat("cluster_ops_served")) == served_ops + 1);
  {
    auto ex = cl.node.executeRequest();
    auto ops = ex.initOps(3);
    for (unsigned i = 0; i < 3; ++i)
      cluster::to_rpc(get_op("q" + std::to_string(i)), ops[i]);
    ex.setOrigin(rpc::Origin::CLIENT);
    BOOST_TEST(ex.send().wait(ws).getResults().size() == 3u);
  }
  BOOST_TEST(std::stoull(stat("cluster_calls_served")) == served_calls + 2);
  BOOST_TEST(std::stoull(stat("cluster_ops_served")) == served_ops + 4);

  cl.node.leaveRequest().send().wait(ws);
  bool left = wait_until([&] {
    return live_names(c.nodes[0]->view()) == std::vector<std::string>{"n1", "n3"};
  }, 3000ms);
  BOOST_TEST(left);
}

// A connection may still route with the ring from before a graceful leave for a moment: the
// leaver serves until it exits, so ops sent to it then are executed, not refused.
// A batch larger than one data call may carry (256 ops, or 16 MiB of inline values) goes as
// several calls, and its results come back whole and in order.
BOOST_AUTO_TEST_CASE(large_batches_are_split_into_bounded_calls) {
  cluster3 c;
  auto& n1 = *c.nodes[0];
  auto peer2 = peer_of(n1, "n2");
  raw_client cl(n1.address());
  auto calls_sent = [&] {
    const auto v = cl.stat("cluster_calls_sent");
    return v == "(missing)" ? 0ull : std::stoull(v);
  };
  auto before = calls_sent();
  storage::op_batch sets, gets;
  for (int i = 0; i < 600; ++i) {
    sets.push_back(set_op("split-" + std::to_string(i), "v" + std::to_string(i)));
    gets.push_back(get_op("split-" + std::to_string(i)));
  }
  auto r = exec(*n1.sys, peer2, std::move(sets));
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 600u);
  for (auto& x : r.results)
    BOOST_TEST(static_cast<int>(x.st) == static_cast<int>(storage::status::stored));
  BOOST_TEST(calls_sent() == before + 3);  // 256 + 256 + 88
  auto g = exec(*n1.sys, peer2, std::move(gets));
  BOOST_REQUIRE(g.results.size() == 600u);
  for (int i = 0; i < 600; ++i)
    BOOST_TEST(g.results[static_cast<size_t>(i)].value.view() == "v" + std::to_string(i));
  // By bytes: 256 values of 64 KiB (the largest that travel inline) fit the op count but not
  // 16 MiB with their keys: two calls.
  before = calls_sent();
  auto value = [](int i) { return pattern(64 << 10, static_cast<char>('a' + i % 26)); };
  storage::op_batch big, back;
  for (int i = 0; i < 256; ++i) {
    big.push_back(set_op("big-" + std::to_string(i), value(i)));
    back.push_back(get_op("big-" + std::to_string(i)));
  }
  auto b = exec(*n1.sys, peer2, std::move(big));
  BOOST_REQUIRE(b.results.size() == 256u);
  for (auto& x : b.results)
    BOOST_TEST(static_cast<int>(x.st) == static_cast<int>(storage::status::stored));
  BOOST_TEST(calls_sent() == before + 2);
  auto bb = exec(*n1.sys, peer2, std::move(back));
  BOOST_REQUIRE(bb.results.size() == 256u);
  for (int i = 0; i < 256; ++i)
    BOOST_TEST(bb.results[static_cast<size_t>(i)].value.view() == value(i));
}

BOOST_AUTO_TEST_CASE(a_member_that_left_still_serves_until_it_exits) {
  cluster3 c;
  auto& n1 = *c.nodes[0];
  auto peer2 = peer_of(n1, "n2");
  raw_client cl(c.nodes[1]->address());
  cl.node.leaveRequest().send().wait(cl.io.waitScope);
  bool left = wait_until([&] {
    return live_names(n1.view()) == std::vector<std::string>{"n1", "n3"};
  }, 3000ms);
  BOOST_REQUIRE(left);
  auto r = exec(*n1.sys, peer2, {set_op("late", "still here"), get_op("late")});
  BOOST_REQUIRE(r.answered);
  BOOST_REQUIRE(r.results.size() == 2u);
  BOOST_TEST(static_cast<int>(r.results[0].st) == static_cast<int>(storage::status::stored));
  BOOST_TEST(static_cast<int>(r.results[1].st) == static_cast<int>(storage::status::hit));
  BOOST_TEST(r.results[1].value.view() == "still here");
}

// n1 and n2, then n3 (its shards behind delay proxies with `delayable`) into `nodes`,
// converged; n1's view from before n3 joined.
actors::cluster_view_ptr pair_joined_by_n3(std::vector<std::unique_ptr<test_node>>& nodes,
                                           bool delayable = false,
                                           bool pair_delayable = false) {
  auto pair_node = [&](const std::string& name, std::vector<std::string> seeds) {
    return std::make_unique<test_node>(name, std::move(seeds), 1, false, cluster::tls_options{},
                                       0, "127.0.0.1:11211", std::nullopt, 2000,
                                       pair_delayable);
  };
  nodes.push_back(pair_node("n1", {}));
  const auto seed = nodes[0]->address();
  nodes.push_back(pair_node("n2", {seed}));
  BOOST_REQUIRE(wait_until([&] { return converged({nodes[0].get(), nodes[1].get()}, 2); },
                           5000ms));
  auto before = nodes[0]->view();
  nodes.push_back(std::make_unique<test_node>("n3", std::vector<std::string>{seed}, 1, false,
                                              cluster::tls_options{}, 0, "127.0.0.1:11211",
                                              std::nullopt, 2000, delayable));
  BOOST_REQUIRE(wait_until(
    [&] { return converged({nodes[0].get(), nodes[1].get(), nodes[2].get()}, 3); }, 5000ms));
  return before;
}

// `count` keys named prefix-N whose primary was `was` in `before` and is `now` in `after`.
std::vector<std::string> keys_moved(const actors::cluster_view& before,
                                    const actors::cluster_view& after, const std::string& prefix,
                                    const std::string& was, const std::string& now,
                                    size_t count) {
  std::vector<std::string> keys;
  for (int i = 0; i < 100000 && keys.size() < count; ++i) {
    std::string k = prefix + std::to_string(i);
    if (before.ring->live_primary(k)->name == was && after.ring->live_primary(k)->name == now)
      keys.push_back(k);
  }
  BOOST_REQUIRE_EQUAL(keys.size(), count);
  return keys;
}

// A member whose view lags a ring change places by the ring before it: n3 joined n1 and n2,
// and the member (a raw client that says it is one) still sends n1 the keys n1 owned before.
// n1 places those it no longer owns again by its own ring (execute's `ring` names the ring
// the member placed by); an op placed on its way as often as allowed (`routed`), and a call
// that names no ring (an older node) or n1's own, run at n1 as before.
BOOST_AUTO_TEST_CASE(ops_placed_by_a_replaced_ring_are_placed_again) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes);
  auto& n1 = *nodes[0];
  auto& n3 = *nodes[2];
  const auto v = n1.view();
  BOOST_REQUIRE(!v->past.empty());
  const uint64_t before = old_view->ring->placement();
  BOOST_REQUIRE_EQUAL(v->past.front().ring->placement(), before);
  // Keys n1 owned and n3 owns now; one n1 still owns.
  std::vector<std::string> moved, kept;
  for (int i = 0; i < 100000 && (moved.size() < 7 || kept.size() < 3); ++i) {
    std::string k = "lag-" + std::to_string(i);
    if (old_view->ring->live_primary(k)->name != "n1")
      continue;
    if (v->ring->live_primary(k)->name == "n3" && moved.size() < 7)
      moved.push_back(k);
    else if (v->ring->live_primary(k)->name == "n1" && kept.size() < 3)
      kept.push_back(k);
  }
  BOOST_REQUIRE(moved.size() == 7 && kept.size() == 3);

  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  auto execute = [&](storage::op_batch ops, uint64_t ring) {
    for (auto st : cl.execute(ops, ring))
      BOOST_TEST((st == rpc::Status::STORED));
  };
  // A store of a value too large to travel inline (Node.upload: its sink gets the value).
  const std::string large = pattern(cluster::inline_value_limit + 10, 'u');
  auto upload = [&](const std::string& key, uint64_t ring) {
    return cl.upload(key, large, ring);
  };
  auto routed = set_op(moved[1], "ran here");
  routed.routed = actors::max_routed;
  execute({set_op(moved[0], "placed again"), set_op(kept[0], "mine"), routed}, before);
  execute({set_op(moved[2], "no ring said")}, 0);
  execute({set_op(moved[3], "n1's own ring")}, v->ring->placement());

  auto held = [](test_node& n, const std::string& k) -> std::string {
    const auto r = held_at(n, k);
    return r.st == storage::status::hit ? std::string(r.value.view()) : std::string("(miss)");
  };
  BOOST_TEST(held(n3, moved[0]) == "placed again");
  BOOST_TEST(held(n1, moved[0]) == "(miss)");
  BOOST_TEST(held(n1, kept[0]) == "mine");
  BOOST_TEST(held(n1, moved[1]) == "ran here");
  BOOST_TEST(held(n3, moved[1]) == "(miss)");
  BOOST_TEST(held(n1, moved[2]) == "no ring said");
  BOOST_TEST(held(n1, moved[3]) == "n1's own ring");
  BOOST_TEST(held(n3, moved[3]) == "(miss)");
  // An upload's stores too (before, they ran here whatever ring the member placed them by).
  BOOST_TEST((upload(moved[5], before) == rpc::Status::STORED));
  BOOST_TEST(held(n3, moved[5]) == large);
  BOOST_TEST(held(n1, moved[5]) == "(miss)");
  BOOST_TEST(cl.stat("cluster_ops_placed_again") == "2");  // moved[0] and moved[5]

  // A member's re-read of a value left out of a reply whose entry is gone reads afresh here,
  // except a strict entry's (odd token: a result the key's owner answered after this node
  // placed the op again), whose re-read here would read an older copy: unavailable.
  auto reread = [&](uint64_t token) {
    auto req = cl.node.executeRequest();
    auto op = get_op(kept[0]);
    op.parked = token;
    cluster::to_rpc(op, req.initOps(1)[0]);
    req.setOrigin(rpc::Origin::WARM);
    auto r = req.send().wait(cl.io.waitScope);
    BOOST_REQUIRE_EQUAL(r.getResults().size(), 1u);
    return r.getResults()[0].getStatus();
  };
  BOOST_TEST((reread(1000000000002ULL) == rpc::Status::HIT));
  BOOST_TEST((reread(1000000000003ULL) == rpc::Status::UNAVAILABLE));

  // n1 leaves for good (bifrostd: node::refuse_member_writes): a member's call with a write
  // that would run here is refused, over the RPC as over a data link; one whose writes are
  // all placed again on their owners, and reads, are not. (Both used to run here: the
  // process would have exited with the only copy after answering STORED.)
  n1.refusing->store(true);
  auto refused = cl.execute({set_op(kept[1], "refused"), get_op(kept[0])}, 0);
  BOOST_TEST((refused == std::vector<rpc::Status>(2, rpc::Status::UNAVAILABLE)));
  refused = cl.execute({set_op(kept[1], "refused"), set_op(moved[4], "placed again")}, before);
  BOOST_TEST((refused == std::vector<rpc::Status>(2, rpc::Status::UNAVAILABLE)));
  BOOST_TEST((cl.execute({set_op(moved[4], "placed again")}, before) ==
              std::vector<rpc::Status>{rpc::Status::STORED}));
  BOOST_TEST((cl.execute({get_op(kept[0])}, 0) == std::vector<rpc::Status>{rpc::Status::HIT}));
  BOOST_TEST((upload(kept[2], 0) == rpc::Status::UNAVAILABLE));
  BOOST_TEST((upload(moved[6], before) == rpc::Status::STORED));
  BOOST_TEST(held(n1, kept[1]) == "(miss)");
  BOOST_TEST(held(n1, kept[2]) == "(miss)");
  BOOST_TEST(held(n3, moved[4]) == "placed again");
  BOOST_TEST(held(n1, moved[4]) == "(miss)");
  BOOST_TEST(held(n3, moved[6]) == large);
}

// A read that a node places again (a member placed it by a ring this node replaced) and that
// misses at the key's owner warms from the past owners by the CAS clock, not by the owner's
// `deleted_lately` alone. That says a flush_all or delete took the key after the owner's view
// named its ring, so that past owners hold nothing newer; but a member whose view lagged (here
// a raw one: its write placed as often as allowed runs at n1) wrote the key at a past owner
// after the flush, and that item was not warmed (the ring-change sweep's seed 1614: right
// after a drain, `mg k t` answered EN). An item the past owner holds from before the flush
// counts as gone all the same, and so does one whose CAS is no clock value (meta E), which
// the clock cannot order after the flush.
BOOST_AUTO_TEST_CASE(a_read_placed_again_warms_an_item_written_after_a_flush_at_its_owner) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes);
  auto& n1 = *nodes[0];
  const auto v = n1.view();
  BOOST_REQUIRE(!v->past.empty());
  const uint64_t before = old_view->ring->placement();
  std::vector<std::string> moved;  // n1's before n3 joined, n3's now
  for (int i = 0; i < 100000 && moved.size() < 4; ++i) {
    std::string k = "flushed-" + std::to_string(i);
    if (old_view->ring->live_primary(k)->name == "n1" && v->ring->live_primary(k)->name == "n3")
      moved.push_back(k);
  }
  BOOST_REQUIRE_EQUAL(moved.size(), 4u);
  // The shards as bifrostd's route table tells them of a view: copy guard on, ring named.
  for (auto& n : nodes)
    for (auto& s : n->shards)
      caf::anon_send(s, actors::prune_atom::value, n->view());
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  auto run = [&](const storage::op_batch& ops) { return cl.execute(ops, before); };
  auto at_n1 = [](const std::string& k, const std::string& value) {
    auto o = set_op(k, value);
    o.routed = actors::max_routed;  // (placed as often as allowed: it runs at n1)
    return o;
  };
  BOOST_TEST((run({at_n1(moved[1], "before the flush")})[0] == rpc::Status::STORED));
  storage::op flush;  // at the owner n3 (and n2), not yet at n1
  flush.kind = storage::op_kind::flush;
  for (size_t n = 1; n < nodes.size(); ++n)
    for (auto& s : nodes[n]->shards)
      BOOST_REQUIRE(exec(*nodes[n]->sys, s, {flush}).answered);
  BOOST_TEST((run({at_n1(moved[0], "after the flush")})[0] == rpc::Status::STORED));
  auto unclocked = at_n1(moved[2], "after the flush, CAS 12345");
  unclocked.explicit_cas = 12345;  // (meta E)
  BOOST_TEST((run({unclocked})[0] == rpc::Status::STORED));
  auto got = run({get_op(moved[0]), get_op(moved[1]), get_op(moved[2])});
  BOOST_TEST((got[0] == rpc::Status::HIT));   // before: MISS
  BOOST_TEST((got[1] == rpc::Status::MISS));  // (n1's copy is older than the flush at n3)
  BOOST_TEST((got[2] == rpc::Status::MISS));  // (not ordered by the clock: taken as older)
  // A delete placed again finds the later write at the past owner and answers for it.
  BOOST_TEST((run({at_n1(moved[3], "after the flush")})[0] == rpc::Status::STORED));
  storage::op del;
  del.kind = storage::op_kind::remove;
  del.key = moved[3];
  BOOST_TEST((run({del})[0] == rpc::Status::DELETED));  // before: NOT_FOUND
  del.key = moved[1];
  BOOST_TEST((run({del})[0] == rpc::Status::NOT_FOUND));  // (only an older copy there)
  // One that compares a CAS (md C) compares it there too, as a client's erase chain does: a
  // CAS that does not match the later item keeps it and answers EX (before: a plain delete
  // went there, which removed it, and NOT_FOUND answered); the item's own CAS removes it.
  BOOST_TEST((run({at_n1(moved[2], "after the flush, again")})[0] == rpc::Status::STORED));
  const auto later = held_at(n1, moved[2]);
  BOOST_REQUIRE((later.st == storage::status::hit));
  del.key = moved[2];
  del.compare_cas = later.cas + 1;
  del.cas_given = true;
  BOOST_TEST((run({del})[0] == rpc::Status::EXISTS));
  BOOST_TEST((held_at(n1, moved[2]).st == storage::status::hit));
  BOOST_TEST(held_at(n1, moved[2]).cas == later.cas);
  del.compare_cas = later.cas;
  BOOST_TEST((run({del})[0] == rpc::Status::DELETED));
  BOOST_TEST((held_at(n1, moved[2]).st == storage::status::miss));
  // (md C0 matches no item: EX for the later one, as memcached answers.)
  BOOST_TEST((run({at_n1(moved[2], "once more")})[0] == rpc::Status::STORED));
  del.compare_cas = 0;
  BOOST_TEST((run({del})[0] == rpc::Status::EXISTS));
  BOOST_TEST((held_at(n1, moved[2]).st == storage::status::hit));
  auto gone = run({get_op(moved[3]), get_op(moved[1])});
  BOOST_TEST((gone[0] == rpc::Status::MISS));
  BOOST_TEST((gone[1] == rpc::Status::MISS));
}

// A node's peer actor names, in its call, the ring a client op was placed by when its loop
// says so ((exec_atom, tag, ops, placed_by): the dispatcher's and the data link's), not the
// ring its service holds when the call leaves, which may be newer by then: the member took
// the op for placed by its own ring and ran it, though it owned the key no longer (the
// ring-change sweep, seed 6953: `ma k0` answered NF, the item at the new owner). Here n2
// owned the key before n3 joined; n1 sends n2 a write placed by that ring, which n2 places
// again: n3 stores it.
BOOST_AUTO_TEST_CASE(a_peer_call_names_the_ring_its_ops_were_placed_by) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes);
  auto& n1 = *nodes[0];
  auto& n2 = *nodes[1];
  auto& n3 = *nodes[2];
  const auto keys = keys_moved(*old_view, *n1.view(), "placed-", "n2", "n3", 1);
  const auto peer = peer_of(n1, "n2");
  caf::scoped_actor self{*n1.sys};
  storage::op_batch ops{set_op(keys[0], "placed by the ring before")};
  self->send(peer, actors::exec_atom::value, uint64_t{1}, std::move(ops),
             old_view->ring->placement());
  bool stored = false;
  self->receive(
    [&](actors::result_atom, uint64_t, storage::result_batch& rs) {
      stored = rs.size() == 1 && rs[0].st == storage::status::stored;
    },
    caf::after(5000ms) >> [] {});
  BOOST_TEST(stored);
  BOOST_TEST((held_at(n3, keys[0]).st == storage::status::hit));  // (before: no answer at all)
  BOOST_TEST((held_at(n2, keys[0]).st == storage::status::miss));
}

// A delete placed again that finds nothing at the key's owner walks the erase chain in turn,
// newest past ring first, as a client's connection does: the first past owner that holds the
// item answers, and once one removed it the older copies just go. Here n2 owned the key
// before n3 joined and holds a later item; n1, its owner while alone (past rings still in
// n1's window), an older one. md C with the later item's CAS removes both (before: the compare
// went to every past holder at once, and n1's older copy, which it does not match, stayed and
// could be warmed back); a CAS that matches neither answers EX for n2's item, and both stay.
BOOST_AUTO_TEST_CASE(a_delete_placed_again_walks_the_erase_chain_in_turn) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes, false, true);
  auto& n1 = *nodes[0];
  auto& n2 = *nodes[1];
  const auto v = n1.view();
  // (n1's past rings, newest first: n1 and n2, that ring as n2 joined it, n1 alone. The
  // chain of a key n2 owned: n2, then n1 in an older one.)
  BOOST_REQUIRE_GE(v->past.size(), 2u);
  BOOST_REQUIRE_EQUAL(v->past.back().ring->size(), 1u);
  const uint64_t before = old_view->ring->placement();
  BOOST_REQUIRE_EQUAL(v->past.front().ring->placement(), before);
  const auto keys = keys_moved(*old_view, *v, "chain-", "n2", "n3", 2);  // (n2's, n3's now)
  auto put = [&](test_node& n, const std::string& k, const std::string& value) {
    auto r = at_shard(n, k, {set_op(k, value)});
    BOOST_REQUIRE(r.answered);
    BOOST_REQUIRE((r.results[0].st == storage::status::stored));
  };
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  auto md = [&](const std::string& k, uint64_t cas) {
    storage::op del;
    del.kind = storage::op_kind::remove;
    del.key = k;
    del.compare_cas = cas;
    del.cas_given = true;
    return cl.execute({del}, before)[0];
  };
  for (const auto& k : keys) {
    put(n1, k, "older, at n1");
    put(n2, k, "later, at n2");
  }
  const auto later = held_at(n2, keys[0]);
  BOOST_REQUIRE((later.st == storage::status::hit));
  BOOST_TEST((md(keys[0], later.cas) == rpc::Status::DELETED));
  BOOST_TEST((held_at(n2, keys[0]).st == storage::status::miss));
  BOOST_TEST((held_at(n1, keys[0]).st == storage::status::miss));  // (before: a hit, EX there)
  const auto kept = held_at(n2, keys[1]);
  BOOST_TEST((md(keys[1], kept.cas + 1) == rpc::Status::EXISTS));
  BOOST_TEST(held_at(n2, keys[1]).cas == kept.cas);
  BOOST_TEST((held_at(n1, keys[1]).st == storage::status::hit));  // (hidden by n2's, which stays)

  // Slow past owners: the walk takes at most about half the member's call timeout (2 s)
  // before the rest of the chain gets plain deletes it does not wait for. n2 and n1 answer
  // after 1.2 s each: n2's answer comes after the 1 s bound, and n1's older copy goes
  // without the member waiting 2.4 s (past its call timeout) for it.
  for (const auto& k : {keys[0]}) {
    put(n1, k, "older, at n1");
    put(n2, k, "later, at n2");
  }
  const auto again = held_at(n2, keys[0]);
  n1.shard_delay_ms->store(1200);
  n2.shard_delay_ms->store(1200);
  const auto t0 = clock_type::now();
  BOOST_TEST((md(keys[0], again.cas) == rpc::Status::DELETED));
  const auto took_ms =
    std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
  BOOST_TEST(took_ms < 2000);
  n1.shard_delay_ms->store(0);
  n2.shard_delay_ms->store(0);
  BOOST_TEST(wait_until([&] { return held_at(n1, keys[0]).st == storage::status::miss; }, 3000ms));
  BOOST_TEST((held_at(n2, keys[0]).st == storage::status::miss));
}

// An update placed again acts on the item its member's client knew: the node that places it
// copies the item to the key's owner first, from its own shards or, inside a warming window,
// from the past owner that holds it, as a connection's update warms (before, only its own:
// the append below answered NOT_STORED, n2's item left as it was, and md I NOT_FOUND,
// n2's item removed).
// Here n2 owned the keys before n3 joined; n1, which places the member's ops again, has none.
BOOST_AUTO_TEST_CASE(an_update_placed_again_finds_the_item_at_a_past_owner) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes);
  auto& n1 = *nodes[0];
  auto& n2 = *nodes[1];
  auto& n3 = *nodes[2];
  const auto v = n1.view();
  const uint64_t before = old_view->ring->placement();
  BOOST_REQUIRE(!v->past.empty());
  BOOST_REQUIRE_EQUAL(v->past.front().ring->placement(), before);
  const auto keys = keys_moved(*old_view, *v, "update-", "n2", "n3", 2);  // (n2's, n3's now)
  for (const auto& k : keys) {
    auto r = at_shard(n2, k, {set_op(k, "at n2")});
    BOOST_REQUIRE((r.answered && r.results[0].st == storage::status::stored));
  }
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  auto append = set_op(keys[0], " and more");
  append.mode = storage::store_mode::append;
  BOOST_TEST((cl.execute({append}, before)[0] == rpc::Status::STORED));
  const auto got = held_at(n3, keys[0]);
  BOOST_REQUIRE((got.st == storage::status::hit));
  BOOST_TEST(std::string(got.value.view()) == "at n2 and more");
  storage::op invalidate;  // md I
  invalidate.kind = storage::op_kind::remove;
  invalidate.key = keys[1];
  invalidate.invalidate = true;
  BOOST_TEST((cl.execute({invalidate}, before)[0] == rpc::Status::DELETED));
  const auto stale = held_at(n3, keys[1]);
  BOOST_REQUIRE((stale.st == storage::status::hit));
  BOOST_TEST(stale.stale);
  BOOST_TEST(std::string(stale.value.view()) == "at n2");
  // (The past copies go, as after a connection's write.)
  BOOST_TEST(wait_until([&] { return held_at(n2, keys[0]).st == storage::status::miss &&
                                     held_at(n2, keys[1]).st == storage::status::miss; },
                        3000ms));
}

// A flush_all from a member whose view lags (it placed its call by a ring this node
// replaced) flushed the members of its ring only: one that joined since kept its items,
// which ops placed again here reach (the ring-change sweep's seed 3464, traced: right after
// a fourth node joined, `flush_all noreply` then `delete k2` answered DELETED, the new node
// never having seen the flush). The node that gets it passes the flush on to them before it
// answers.
BOOST_AUTO_TEST_CASE(a_flush_from_a_lagging_member_reaches_the_members_it_did_not_know) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes);
  auto& n1 = *nodes[0];
  auto& n3 = *nodes[2];
  const uint64_t before = old_view->ring->placement();
  BOOST_REQUIRE_EQUAL(n1.view()->past.front().ring->placement(), before);
  for (const std::string k : {"f1", "f2", "f3"}) {
    auto r = at_shard(n3, k, {set_op(k, "v")});
    BOOST_REQUIRE(r.answered);
  }
  auto& n2 = *nodes[1];  // (live in both rings: the member flushed it itself)
  auto kept = at_shard(n2, "f4", {set_op("f4", "v")});
  BOOST_REQUIRE(kept.answered);
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  storage::op flush;
  flush.kind = storage::op_kind::flush;
  // n1's own ring named: n3 is in it, the member flushed it itself: nothing passed on.
  BOOST_TEST((cl.execute({flush}, n1.view()->ring->placement())[0] == rpc::Status::OK));
  BOOST_TEST((held_at(n3, "f1").st == storage::status::hit));
  // The ring before n3 joined: n3 gets it from n1 (before: its items stayed).
  BOOST_TEST((cl.execute({flush, get_op("f2")}, before)[0] == rpc::Status::OK));
  BOOST_TEST((held_at(n3, "f1").st == storage::status::miss));
  BOOST_TEST((held_at(n3, "f3").st == storage::status::miss));
  BOOST_TEST((held_at(n2, "f4").st == storage::status::hit));
}

// A member's write that a node placed again on the key's owner is answered before that node
// stops for good (stop waits for such calls, at most the RPC timeout): the teardown used to
// cancel it in flight, and the member saw a failure for a write the owner then stored.
BOOST_AUTO_TEST_CASE(a_stopping_node_answers_the_writes_it_placed_again_first) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes, true);
  auto& n1 = *nodes[0];
  auto& n3 = *nodes[2];
  const auto v = n1.view();
  std::string moved;  // n1's before n3 joined, n3's now
  for (int i = 0; i < 100000 && moved.empty(); ++i) {
    std::string k = "stop-again-" + std::to_string(i);
    if (old_view->ring->live_primary(k)->name == "n1" && v->ring->live_primary(k)->name == "n3")
      moved = k;
  }
  BOOST_REQUIRE(!moved.empty());
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  n3.shard_delay_ms->store(700);  // n3's shards answer after 0.7 s (its RPC timeout: 2 s)
  auto req = cl.node.executeRequest();
  cluster::to_rpc(set_op(moved, "placed again"), req.initOps(1)[0]);
  req.setOrigin(rpc::Origin::CLIENT);
  req.setRing(old_view->ring->placement());
  auto answer = req.send();
  auto placed_again = [&] {  // (the wait also sends the execute)
    return cl.stat("cluster_ops_placed_again");
  };
  BOOST_REQUIRE(wait_until([&] { return placed_again() == "1"; }, 3000ms));
  n1.svc->stop();  // leaves, then waits for the call it placed on n3
  bool answered = false, stored = false;
  auto got = answer
               .then(
                 [&](capnp::Response<rpc::Node::ExecuteResults>&& r) {
                   answered = true;
                   stored = r.getResults().size() == 1 &&
                            r.getResults()[0].getStatus() == rpc::Status::STORED;
                 },
                 [&](kj::Exception&&) { answered = true; })
               .eagerlyEvaluate(nullptr);
  // (Bounded: should the teardown cancel it, the member sees a failure, as a client would.)
  BOOST_CHECK(wait_until(
    [&] {
      cl.io.waitScope.poll();
      return answered;
    },
    5000ms));
  BOOST_TEST(stored);
  n3.shard_delay_ms->store(0);
}

// An op a node places again (its member placed it by a ring this node replaced) goes on with
// what is left of the member's timeout, not a fresh one: once the member gave up on it (it
// answered its client `unavailable`), it must not run anywhere, or it would win over the
// writes acknowledged meanwhile (session 55's late calls). Here n1's own look at the key
// before it places an add again takes longer than the member waits: nothing reaches n3.
// (Before, the call to n3 left with n1's whole RPC timeout and n3 stored the add.)
BOOST_AUTO_TEST_CASE(an_op_placed_again_keeps_its_senders_deadline) {
  std::vector<std::unique_ptr<test_node>> nodes;
  const auto old_view = pair_joined_by_n3(nodes, false, true);
  auto& n1 = *nodes[0];
  auto& n3 = *nodes[2];
  const auto keys = keys_moved(*old_view, *n1.view(), "deadline-", "n1", "n3", 2);
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  auto add = [&](const std::string& key, uint32_t timeout_ms) {
    storage::op o = set_op(key, "placed again");
    o.mode = storage::store_mode::add;  // (an add: n1 looks for the key's item first)
    auto req = cl.node.executeRequest();
    cluster::to_rpc(o, req.initOps(1)[0]);
    req.setOrigin(rpc::Origin::CLIENT);
    req.setRing(old_view->ring->placement());
    req.setSentAtMs(cluster::steady_now_ms());
    req.setTimeoutMs(timeout_ms);
    auto r = req.send().wait(cl.io.waitScope);
    BOOST_REQUIRE_EQUAL(r.getResults().size(), 1u);
    return r.getResults()[0].getStatus();
  };
  // The member waits long enough: placed again, stored at n3.
  n1.shard_delay_ms->store(100);
  BOOST_TEST((add(keys[0], 2000) == rpc::Status::STORED));
  BOOST_TEST((held_at(n3, keys[0]).st == storage::status::hit));
  // It waits 300 ms, and n1's look takes 600: unavailable, and n3 never saw it.
  n1.shard_delay_ms->store(600);
  BOOST_TEST((add(keys[1], 300) == rpc::Status::UNAVAILABLE));
  n1.shard_delay_ms->store(0);
  std::this_thread::sleep_for(200ms);
  BOOST_TEST((held_at(n3, keys[1]).st == storage::status::miss));
}

// An upload whose stores run at its finish: a finish that comes later than its sender waits
// (it was sent before this node stopped, or a cut held its bytes) is refused even though the
// upload itself came in time — every op `unavailable`, nothing stored. (The check at the
// finish had no test that failed without it: the integration test's upload is refused at its
// start, which came as late.)
BOOST_AUTO_TEST_CASE(an_uploads_late_finish_stores_nothing) {
  test_node n1("n1");
  raw_client cl(n1.address());
  cl.hello_as_member("lagger");
  const std::string large = pattern(cluster::inline_value_limit + 10, 'f');
  auto upload = [&](const std::string& key, uint64_t finish_sent_ms_ago) {
    const uint64_t now = cluster::steady_now_ms();
    return cl.upload(key, large, 0, now, now - finish_sent_ms_ago, 1000);
  };
  BOOST_TEST((upload("in-time", 0) == rpc::Status::STORED));
  BOOST_TEST(std::string(held_at(n1, "in-time").value.view()) == large);
  // Its finish sent 3 s ago (three times its sender's wait): the sender has given up.
  BOOST_TEST((upload("late-finish", 3000) == rpc::Status::UNAVAILABLE));
  BOOST_TEST((held_at(n1, "late-finish").st == storage::status::miss));
  BOOST_TEST(cl.stat("cluster_rpc_late_calls_refused") == "1");
}

BOOST_AUTO_TEST_CASE(teardown_is_bounded) {
  auto t = clock_type::now();
  {
    cluster3 c;
    // Traffic in flight while everything stops.
    {
      auto v = c.nodes[0]->view();
      caf::scoped_actor self{*c.nodes[0]->sys};
      for (uint32_t id = 0; id < v->ring->size(); ++id)
        if (v->peers[id])
          for (int i = 0; i < 50; ++i)
            self->send(v->peers[id], actors::exec_atom::value, uint64_t(i),
                       storage::op_batch{get_op("k" + std::to_string(i))});
    }
    c.nodes[1].reset();
    c.nodes[0].reset();
    c.nodes[2].reset();
  }
  BOOST_TEST(seconds_since(t) < 15.0);
}

BOOST_AUTO_TEST_CASE(port_in_use_is_an_error) {
  test_node n("first");
  sys_config cfg;
  caf::actor_system sys(cfg);
  cluster::service_config sc;
  sc.node_name = "second";
  sc.rpc_port = n.svc->rpc_port();
  std::string err;
  auto svc = cluster::service::start(sys, sc, {}, caf::actor(), {}, err);
  BOOST_TEST(!svc);
  BOOST_TEST(!err.empty());
  BOOST_TEST_MESSAGE(err);
}

BOOST_AUTO_TEST_SUITE_END()
