// The client side of a data link (cluster/data_link.hpp) against a scripted link server on a
// loopback socket and a recording stand-in for the member's RPC peer actor: which transport a
// batch takes, that no batch overtakes a call in flight on the other transport, and what
// failures (refusal, lost connection, timeout) answer. The server side is covered by the
// multi-node suite (tests/integration/test_cluster.cpp), which runs every scenario over links.
#include "actors/connection.hpp"
#include "actors/io_loop.hpp"
#include "actors/messages.hpp"
#include "actors/node_stats.hpp"
#include "actors/route_table.hpp"
#include "cluster/arrival_clock.hpp"
#include "cluster/convert.hpp"
#include "cluster/data_link.hpp"
#include "cluster/link_wire.hpp"
#include "cluster/ring.hpp"
#include "cluster/test_support.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace bifrost;
using namespace std::chrono_literals;
namespace lw = bifrost::cluster::link_wire;
using actors::exec_atom;
using actors::result_atom;

namespace {

// Records what it was given, in order, and hands it to the test thread.
using test::inbox;

struct rpc_batch {
  caf::actor sender;
  uint64_t tag;
  storage::op_batch ops;
  bool warm;  // came as warm_atom
  bool replica = false;  // came as apply_atom
  uint64_t placed_by = 0;  // came as (exec_atom, tag, ops, placed_by)
};

// Stands in for the member's RPC peer actor: records every batch; the test answers.
class fake_rpc_peer : public caf::event_based_actor {
public:
  fake_rpc_peer(caf::actor_config& cfg, inbox<rpc_batch>* log)
    : caf::event_based_actor(cfg), log_(log) {}
  caf::behavior make_behavior() override {
    return {
      [this](exec_atom, uint64_t tag, storage::op_batch& ops) {
        log_->put({caf::actor_cast<caf::actor>(current_sender()), tag, std::move(ops), false});
      },
      [this](exec_atom, uint64_t tag, storage::op_batch& ops, uint64_t placed_by) {
        log_->put({caf::actor_cast<caf::actor>(current_sender()), tag, std::move(ops), false,
                   false, placed_by});
      },
      [this](actors::warm_atom, uint64_t tag, storage::op_batch& ops) {
        log_->put({caf::actor_cast<caf::actor>(current_sender()), tag, std::move(ops), true});
      },
      [this](actors::apply_atom, uint64_t tag, storage::op_batch& ops) {
        log_->put({caf::actor_cast<caf::actor>(current_sender()), tag, std::move(ops), false, true});
      },
    };
  }

private:
  inbox<rpc_batch>* log_;
};

// A link server on a loopback port, one connection at a time: answers the hello with
// `greeting`, records the calls; the test answers them (or closes the connection).
class fake_link_server {
public:
  explicit fake_link_server(
    std::string greeting = lw::accept_line(cluster::rpc::SCHEMA_VERSION, "peer"))
    : greeting_(std::move(greeting)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("fake link server: bind/listen failed");
    port = ntohs(a.sin_port);
    th_ = std::thread([this] { run(); });
  }
  ~fake_link_server() {
    stop_ = true;
    th_.join();
    drop();
    heal();
    ::close(fd_);
  }

  // Drops SYNs, as a cut does: takes no new connection (unanswering), and fills its listen
  // queue with connections of its own (the kernel drops a SYN to a full queue) until heal().
  void cut() {
    unanswering = true;
    sockaddr_in a = loopback();
    for (int i = 0; i < 64; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      (void)::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      pollfd p{c, POLLOUT, 0};
      if (::poll(&p, 1, 100) != 1) {  // not through: the queue is full
        ::close(c);
        return;
      }
      fillers_.push_back(c);
    }
    throw std::runtime_error("fake link server: the listen queue never filled");
  }
  // Ends cut(): its connections close, and the server takes them (and then the next); returns
  // once a connect gets through again (a SYN is taken).
  void heal() {
    const bool was_cut = !fillers_.empty();
    for (int c : fillers_)
      ::close(c);
    fillers_.clear();
    unanswering = false;
    for (int i = 0; was_cut && i < 100; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      sockaddr_in a = loopback();
      (void)::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      pollfd p{c, POLLOUT, 0};
      const bool through = ::poll(&p, 1, 30) == 1;
      ::close(c);
      if (through)
        return;
    }
  }

  void reply(uint64_t id, const storage::result_batch& rs) {
    auto frame = lw::encode_reply(id, rs);
    auto bytes = frame.asChars();
    std::lock_guard<std::mutex> g(m_);
    if (conn_ >= 0)
      (void)::send(conn_, bytes.begin(), bytes.size(), MSG_NOSIGNAL);
  }
  // Closes the current connection; later connections are closed at once (so a link that
  // redials early still cannot carry anything: no test depends on its backoff's timing).
  void drop() {
    std::lock_guard<std::mutex> g(m_);
    dropped_ = true;
    if (conn_ >= 0)
      ::shutdown(conn_, SHUT_RDWR);
  }

  int port = 0;
  inbox<lw::call> calls;
  std::atomic<int> hellos{0};
  std::atomic<bool> deaf{false};  // reads nothing more: the link's writes back up
  // Takes no new connection: a connect completes (the listen backlog) but its hello is never
  // answered, as a member the network cuts off, or one stopped.
  std::atomic<bool> unanswering{false};
  // Takes connections but answers no hello (a member stopped after its kernel accepted them),
  // and tells each connection's end in `closed`: a probe the link gave up on.
  std::atomic<bool> holding{false};
  inbox<int> closed;
  std::atomic<int> accepted{0};  // connections taken

private:
  sockaddr_in loopback() const {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    return a;
  }
  void run() {
    while (!stop_) {
      if (unanswering) {
        std::this_thread::sleep_for(20ms);
        continue;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0 || unanswering)  // (set while it waited: not taken)
        continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0)
        continue;
      ++accepted;
      {
        std::lock_guard<std::mutex> g(m_);
        if (dropped_) {
          ::close(c);
          continue;
        }
        conn_ = c;
      }
      serve(c);
      closed.put(c);
      std::lock_guard<std::mutex> g(m_);
      ::close(c);
      conn_ = -1;
    }
  }
  void serve(int c) {
    lw::frame_buffer in;
    bool greeted = false;
    while (!stop_) {
      pollfd p{c, POLLIN, 0};
      if (deaf) {
        std::this_thread::sleep_for(20ms);
        continue;
      }
      if (::poll(&p, 1, 20) > 0) {
        char* space = in.space(65536);
        ssize_t n = ::read(c, space, in.space_size());
        if (n <= 0)
          return;
        in.commit(static_cast<size_t>(n));
      } else if (greeted || holding) {
        continue;  // (a hello held while holding is answered once it ends)
      }
      if (!greeted && holding)
        continue;
      if (!greeted) {
        lw::hello h;
        size_t used = 0;
        std::string error;
        if (lw::parse_hello(in.text(), h, used, error) != lw::hello_status::ok)
          continue;
        in.consume(used);
        ++hellos;
        greeted = true;
        (void)::send(c, greeting_.data(), greeting_.size(), MSG_NOSIGNAL);
      }
      for (;;) {
        size_t size = 0, need = 0;
        if (lw::frame_size(in.text(), size, need, lw::frame_limit) != lw::frame_status::ok)
          break;
        lw::call call;
        std::string error;
        if (!lw::decode_call(in.frame(size), call, error))
          return;
        in.consume(size);
        calls.put(std::move(call));
      }
    }
  }

  std::string greeting_;
  int fd_ = -1;
  std::vector<int> fillers_;  // cut(): connections filling the listen queue
  std::mutex m_;
  int conn_ = -1;
  bool dropped_ = false;
  std::atomic<bool> stop_{false};
  std::thread th_;
};

storage::op_batch gets(std::initializer_list<const char*> keys) {
  storage::op_batch ops;
  for (auto* k : keys) {
    ops.emplace_back();
    ops.back().kind = storage::op_kind::get;
    ops.back().key = k;
    ops.back().get_value = true;
  }
  return ops;
}

storage::op_batch big_store(const char* key) {
  storage::op_batch ops(1);
  ops[0].kind = storage::op_kind::store;
  ops[0].key = key;
  ops[0].value = std::string(cluster::inline_value_limit + 1, 'v');
  return ops;
}

storage::result_batch hits(size_t n, const std::string& value) {
  storage::result_batch rs(n);
  for (auto& r : rs) {
    r.st = storage::status::hit;
    r.value = storage::pinned_slice::from_memory(std::make_shared<const std::string>(value));
  }
  return rs;
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<actors::io_loop> loop;
  actors::loop_counters counters;
  actors::loop_context ctx;
  inbox<rpc_batch> rpc_log;
  caf::actor rpc_peer;
  std::unique_ptr<caf::scoped_actor> self;

  fixture() {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    loop = std::make_unique<actors::io_loop>(*sys, 0);
    loop->start();
    ctx.loop = loop.get();
    ctx.counters = &counters;
    rpc_peer = sys->spawn<fake_rpc_peer>(&rpc_log);
    self = std::make_unique<caf::scoped_actor>(*sys);
  }
  ~fixture() {
    on_loop([&] {
      if (ctx.links)
        ctx.links->close_all();
      ctx.links.reset();
    });
    rpc_log.clear();  // recorded batches hold their senders (the links) alive
    (*self)->send_exit(rpc_peer, caf::exit_reason::user_shutdown);
    self.reset();     // so do answers the test did not take from its mailbox
    for (int i = 0; i < 1000 && loop->hosted() > 0; ++i)
      std::this_thread::sleep_for(2ms);
    BOOST_CHECK_MESSAGE(loop->hosted() == 0, "a link actor did not quit after close_all");
    loop->stop();
  }

  void on_loop(std::function<void()> fn) { test::on_loop(*loop, std::move(fn)); }

  // A view of the ring {peer, self} in which member "peer" has memcached address
  // host:port; `peer_id` is its id.
  actors::cluster_view view_with(int port, const std::string& host = "127.0.0.1") {
    actors::cluster_view cv;
    cv.ring = ring_;
    cv.peers.resize(2);
    cv.clients.resize(2);
    cv.self = 1 - peer_id;
    cv.peers[peer_id] = rpc_peer;
    cv.clients[peer_id] = host + ":" + std::to_string(port);
    return cv;
  }

  // The loop's link to member "peer" dialling `port`.
  caf::actor link_to(int port, uint32_t timeout_ms = 2000, const std::string& host = "127.0.0.1",
                     uint32_t retire_idle_ms = 10000) {
    cluster::link_settings s;
    s.node_name = "self";
    s.rpc_timeout_ms = timeout_ms;
    s.retire_idle_ms = retire_idle_ms;
    auto cv = view_with(port, host);
    caf::actor link;
    on_loop([&] {
      ctx.links = cluster::make_loop_links(*loop, ctx, s);
      link = ctx.links->link_for(cv, peer_id);
    });
    BOOST_REQUIRE(link);
    return link;
  }

  std::shared_ptr<const cluster::ring> ring_ = cluster::ring::build(
    {{"peer", "127.0.0.1:1", 1, true}, {"self", "127.0.0.1:2", 1, true}}, 1);
  uint32_t peer_id = ring_->member(0).name == "peer" ? 0 : 1;

  void send(const caf::actor& link, uint64_t tag, storage::op_batch ops) {
    (*self)->send(link, exec_atom::value, tag, std::move(ops));
  }

  // Sends `ops` as batch `tag` and returns the call the server received for it.
  std::optional<lw::call> call_through(fake_link_server& server, const caf::actor& link,
                                       uint64_t tag, storage::op_batch ops) {
    send(link, tag, std::move(ops));
    auto call = server.calls.take();
    BOOST_REQUIRE(call);
    return call;
  }

  // A link to `server` that found its member silent: call 1 unanswered for `timeout_ms`, and
  // the server answers nothing more (no reply, no probe's hello) until told.
  // `silence`: how the server stops answering (unanswering: takes no connection; holding).
  caf::actor unreachable_link(
    fake_link_server& server, uint32_t timeout_ms,
    std::atomic<bool> fake_link_server::*silence = &fake_link_server::unanswering) {
    auto link = link_to(server.port, timeout_ms);
    BOOST_REQUIRE(call_through(server, link, 1, gets({"a"})));
    server.*silence = true;
    auto [tag, rs] = result(std::chrono::milliseconds(2 * timeout_ms + 1000));  // (2 ticks on)
    BOOST_CHECK_EQUAL(tag, 1u);
    BOOST_REQUIRE_EQUAL(rs.size(), 1u);
    BOOST_CHECK(rs[0].st == storage::status::unavailable);
    BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 1u);
    return link;
  }

  // Sends a get `every` (from tag `tag` on) until one goes over the link to `server`, each
  // before it answered `unavailable` at once, for at most `limit`: the call the server got
  // (none: every batch failed fast). A batch not answered within `every` went over the link
  // (or waits for the link's greeting): its call is taken with the usual limit.
  std::optional<lw::call> first_call_over(fake_link_server& server, const caf::actor& link,
                                          uint64_t& tag, std::chrono::milliseconds every,
                                          std::chrono::milliseconds limit) {
    for (auto start = std::chrono::steady_clock::now();
         std::chrono::steady_clock::now() - start < limit; ++tag) {
      auto batch_at = std::chrono::steady_clock::now();
      send(link, tag, gets({"c"}));
      std::optional<std::pair<uint64_t, storage::result_batch>> r;
      (*self)->receive(
        [&](result_atom, uint64_t t, storage::result_batch& rs) {
          r.emplace(t, std::move(rs));
        },
        caf::after(every) >> [] {});
      if (!r) {
        auto call = server.calls.take();
        BOOST_REQUIRE_MESSAGE(call, "batch " << tag << " neither answered nor sent");
        return call;
      }
      BOOST_CHECK_EQUAL(r->first, tag);
      BOOST_REQUIRE_EQUAL(r->second.size(), 1u);
      BOOST_CHECK(r->second[0].st == storage::status::unavailable);
      std::this_thread::sleep_until(batch_at + every);
    }
    return std::nullopt;
  }

  // `back`, a call that went over the link, answered: it gives a hit, and nothing went by RPC.
  void answered_over_the_link(fake_link_server& server, const lw::call& back) {
    server.reply(back.id, hits(1, "v"));
    auto rs = result().second;
    BOOST_REQUIRE_EQUAL(rs.size(), 1u);
    BOOST_CHECK(rs[0].st == storage::status::hit);
    BOOST_CHECK(!rpc_log.take(0ms));
  }

  // `back` (first_call_over's) came within `within` of `since` (`what`: a heal, the member
  // answering again), and is answered over the link.
  void back_over_the_link(fake_link_server& server, const std::optional<lw::call>& back,
                          std::chrono::steady_clock::time_point since,
                          std::chrono::milliseconds within, const char* what) {
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - since);
    BOOST_REQUIRE_MESSAGE(back, "no call over the link within 4 s of " << what);
    BOOST_CHECK_MESSAGE(took < within,
                        "a call went over the link " << took.count() << " ms after " << what);
    BOOST_TEST_MESSAGE("over the link " << took.count() << " ms after " << what);
    answered_over_the_link(server, *back);
  }

  // A link to `server` that found its member silent (call 1 unanswered for `timeout_ms`)
  // while the server takes connections but answers no hello (`holding`: a probe's connect
  // goes through, its hello waits out its limit); the connection of call 1 has ended.
  caf::actor held_link(fake_link_server& server, uint32_t timeout_ms) {
    auto link = unreachable_link(server, timeout_ms, &fake_link_server::holding);
    BOOST_REQUIRE(server.closed.take());
    return link;
  }

  // The next result message to the test's sender.
  std::pair<uint64_t, storage::result_batch> result(std::chrono::milliseconds limit = 3000ms) {
    std::pair<uint64_t, storage::result_batch> out{0, {}};
    (*self)->receive(
      [&](result_atom, uint64_t tag, storage::result_batch& rs) { out = {tag, std::move(rs)}; },
      caf::after(limit) >> [&] { BOOST_FAIL("no result within the limit"); });
    return out;
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(data_link_client, fixture)

BOOST_AUTO_TEST_CASE(small_batches_go_over_the_link) {
  fake_link_server server;
  auto link = link_to(server.port);
  auto call = call_through(server, link, 7, gets({"a", "b"}));
  BOOST_CHECK(call->origin == cluster::rpc::Origin::CLIENT);
  BOOST_REQUIRE_EQUAL(call->ops.size(), 2u);
  BOOST_CHECK_EQUAL(call->ops[1].key, "b");
  server.reply(call->id, hits(2, "value"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 7u);
  BOOST_REQUIRE_EQUAL(rs.size(), 2u);
  BOOST_CHECK_EQUAL(std::string(rs[1].value.view()), "value");
  BOOST_CHECK(!rpc_log.take(50ms));  // nothing went by RPC
  BOOST_CHECK_EQUAL(counters.link_calls_sent.load(), 1u);
  BOOST_CHECK_EQUAL(counters.link_ops_sent.load(), 2u);
  BOOST_CHECK_EQUAL(counters.links_open.load(), 1u);
}

// A client batch names the ring its ops were placed by (the sender's placed_by), on the link
// and through the peer actor, not the loop's ring when it leaves: the loop's view may have
// changed in between, and a member whose ring is that newer one ran an op placed by the
// older ring although it owned the key no longer (`ma k0` answered NF for an item at the new
// owner: the ring-change sweep, seed 6953). Without placed_by, the loop's ring as the batch
// came.
BOOST_AUTO_TEST_CASE(a_call_names_the_ring_its_ops_were_placed_by) {
  fake_link_server server;
  auto link = link_to(server.port);
  auto now_ring = cluster::ring::build(
    {{"peer", "127.0.0.1:1", 1, true}, {"self", "127.0.0.1:2", 1, true},
     {"third", "127.0.0.1:3", 1, true}}, 2);
  BOOST_REQUIRE(now_ring->placement() != ring_->placement());
  auto cv = std::make_shared<actors::cluster_view>(view_with(server.port));
  cv->ring = now_ring;  // (the loop's ring now; the ops were placed by ring_)
  auto snap = std::make_shared<actors::route_snapshot>();
  snap->cluster = cv;
  on_loop([&] { ctx.routes = snap; });
  const uint64_t placed = ring_->placement();
  (*self)->send(link, exec_atom::value, uint64_t{1}, gets({"a"}), placed);
  auto call = server.calls.take();
  BOOST_REQUIRE(call);
  BOOST_CHECK_EQUAL(call->ring, placed);
  server.reply(call->id, hits(1, "v"));
  BOOST_CHECK_EQUAL(result().first, 1u);
  auto touch = gets({"touched"});  // (a get that writes goes by RPC)
  touch[0].get_touch = true;
  (*self)->send(link, exec_atom::value, uint64_t{2}, std::move(touch), placed);
  auto by_rpc = rpc_log.take();
  BOOST_REQUIRE(by_rpc);
  BOOST_CHECK_EQUAL(by_rpc->placed_by, placed);
  caf::anon_send(by_rpc->sender, result_atom::value, by_rpc->tag, hits(1, "v"));
  BOOST_CHECK_EQUAL(result().first, 2u);
  send(link, 3, gets({"b"}));  // no placement given: the loop's ring
  call = server.calls.take();
  BOOST_REQUIRE(call);
  BOOST_CHECK_EQUAL(call->ring, now_ring->placement());
  server.reply(call->id, hits(1, "v"));
  BOOST_CHECK_EQUAL(result().first, 3u);
  on_loop([&] { ctx.routes = nullptr; });
}

BOOST_AUTO_TEST_CASE(a_host_name_is_resolved_off_the_loop) {
  // The link dials the first address a name resolves to; the fake server listens on
  // 127.0.0.1, so this needs "localhost" to resolve there first (it does on the CI image).
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  bool v4_first = getaddrinfo("localhost", "1", &hints, &res) == 0 && res &&
                  res->ai_family == AF_INET &&
                  reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr.s_addr ==
                    htonl(INADDR_LOOPBACK);
  if (res)
    freeaddrinfo(res);
  if (!v4_first) {
    BOOST_TEST_MESSAGE("skipped: localhost does not resolve to 127.0.0.1 first here");
    return;
  }
  fake_link_server server;
  auto link = link_to(server.port, 2000, "localhost");
  auto call = call_through(server, link, 30, gets({"by-name"}));
  server.reply(call->id, hits(1, "v"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 30u);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "v");
  BOOST_CHECK(!rpc_log.take(50ms));
}

BOOST_AUTO_TEST_CASE(an_unresolvable_host_sends_the_batch_by_rpc) {
  auto link = link_to(1, 2000, "no-such-host.invalid");
  send(link, 31, gets({"k"}));
  auto b = rpc_log.take(5000ms);
  BOOST_REQUIRE(b);
  BOOST_CHECK_EQUAL(b->ops[0].key, "k");
}

BOOST_AUTO_TEST_CASE(no_batch_overtakes_a_call_on_the_other_transport) {
  fake_link_server server;
  auto link = link_to(server.port);
  // 1: too large for the link -> RPC, held there. 2: fits the link, but must wait for 1.
  send(link, 1, big_store("big"));
  auto first = rpc_log.take();
  BOOST_REQUIRE(first);
  send(link, 2, gets({"after-big"}));
  BOOST_CHECK_MESSAGE(!server.calls.take(200ms), "a link call overtook an RPC call in flight");
  caf::anon_send(first->sender, result_atom::value, first->tag,
                 storage::result_batch(1, storage::result::of(storage::status::stored)));
  auto call = server.calls.take();
  BOOST_REQUIRE(call);
  BOOST_CHECK_EQUAL(call->ops[0].key, "after-big");
  // 3: on the link, held by the server. 4: RPC-only (a get that touches), must wait for 3.
  auto held = call_through(server, link, 3, gets({"held"}));
  auto touch = gets({"touched"});
  touch[0].get_touch = true;
  send(link, 4, std::move(touch));
  BOOST_CHECK_MESSAGE(!rpc_log.take(200ms), "an RPC call overtook a link call in flight");
  server.reply(call->id, hits(1, "x"));
  server.reply(held->id, hits(1, "y"));
  auto fourth = rpc_log.take();
  BOOST_REQUIRE(fourth);
  BOOST_CHECK_EQUAL(fourth->ops[0].key, "touched");
  caf::anon_send(fourth->sender, result_atom::value, fourth->tag, hits(1, "z"));
  // Every batch answered once, with its own tag.
  std::map<uint64_t, std::string> got;
  for (int i = 0; i < 4; ++i) {
    auto [tag, rs] = result();
    got[tag] = rs.empty() || !rs[0].value ? std::string("-") : std::string(rs[0].value.view());
  }
  BOOST_CHECK_EQUAL(got.size(), 4u);
  BOOST_CHECK_EQUAL(got[2], "x");
  BOOST_CHECK_EQUAL(got[3], "y");
  BOOST_CHECK_EQUAL(got[4], "z");
}

BOOST_AUTO_TEST_CASE(replicated_state_does_not_wait_for_a_client_call_on_the_rpc) {
  // With --replication-ack all a forwarded write goes by RPC and its primary answers only
  // once its replicator's copies were acknowledged; two members forwarding writes to each
  // other deadlocked until the RPC timeout when each one's copy waited behind its own call.
  fake_link_server server;
  auto link = link_to(server.port);
  send(link, 1, big_store("client"));  // a client batch for the RPC, held there
  auto client = rpc_log.take();
  BOOST_REQUIRE(client);
  storage::op_batch ops(1);
  ops[0].kind = storage::op_kind::store;
  ops[0].key = "r";
  ops[0].value = "state";
  (*self)->send(link, actors::apply_atom::value, uint64_t(2), ops);
  auto call = server.calls.take();
  BOOST_REQUIRE_MESSAGE(call, "replicated state waited for a client call on the RPC");
  BOOST_CHECK(call->origin == cluster::rpc::Origin::REPLICA);
  // Replicated state keeps its own order: state too large for the link waits for the copy
  // on the link.
  (*self)->send(link, actors::apply_atom::value, uint64_t(3), big_store("r2"));
  BOOST_CHECK_MESSAGE(!rpc_log.take(200ms), "replicated state overtook a copy on the link");
  server.reply(call->id, storage::result_batch(1, storage::result::of(storage::status::stored)));
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);
  BOOST_CHECK(b->replica);
  for (auto* c : {&*client, &*b})
    caf::anon_send(c->sender, result_atom::value, c->tag,
                   storage::result_batch(1, storage::result::of(storage::status::stored)));
  std::set<uint64_t> tags;
  for (int i = 0; i < 3; ++i)
    tags.insert(result().first);
  BOOST_CHECK_EQUAL(tags.size(), 3u);
}

BOOST_AUTO_TEST_CASE(a_reply_issues_the_batch_queued_behind_it_at_once) {
  // A batch for the RPC waits while a link call is in flight; the reply must issue it, not
  // the link's next timer tick (once a second with this timeout: a batch issued within 150
  // ms, three times over, was issued by the replies).
  fake_link_server server;
  auto link = link_to(server.port, 60000);
  for (uint64_t round = 0; round < 3; ++round) {
    auto held = call_through(server, link, 10 * round + 1, gets({"held"}));
    auto touch = gets({"touched"});
    touch[0].get_touch = true;  // RPC only
    send(link, 10 * round + 2, std::move(touch));
    BOOST_CHECK(!rpc_log.take(30ms));
    server.reply(held->id, hits(1, "y"));
    auto behind = rpc_log.take(150ms);
    BOOST_REQUIRE_MESSAGE(behind, "round " << round << ": the batch waited past the reply");
    caf::anon_send(behind->sender, result_atom::value, behind->tag, hits(1, "z"));
    for (int i = 0; i < 2; ++i)
      result();
  }
}

BOOST_AUTO_TEST_CASE(a_refused_hello_sends_the_batch_by_rpc) {
  fake_link_server server("ERROR\r\n");  // a node that serves no links
  auto link = link_to(server.port);
  send(link, 9, gets({"k"}));
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);
  BOOST_CHECK_EQUAL(b->ops[0].key, "k");
  caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "v"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 9u);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "v");
  // It stays on RPC (no second hello) while it backs off.
  send(link, 10, gets({"k2"}));
  BOOST_REQUIRE(rpc_log.take());
  BOOST_CHECK_EQUAL(server.hellos.load(), 1);
  BOOST_CHECK(!server.calls.take(50ms));
}

BOOST_AUTO_TEST_CASE(another_node_at_the_address_sends_the_batch_by_rpc) {
  // Member "peer" advertised this port once; another member listens there now (it answers
  // with its own name). Nothing may run there: the batch goes to peer's RPC actor.
  fake_link_server other(lw::accept_line(cluster::rpc::SCHEMA_VERSION, "somebody-else"));
  auto link = link_to(other.port);
  send(link, 4, gets({"k"}));
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);
  BOOST_CHECK_EQUAL(b->ops[0].key, "k");
  caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "from-peer"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 4u);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "from-peer");
  BOOST_CHECK(!other.calls.take(50ms));
  BOOST_CHECK_EQUAL(counters.links_open.load(), 0u);
}

BOOST_AUTO_TEST_CASE(a_new_address_on_the_same_ring_gets_a_link_of_its_own) {
  // The member moved its memcached port; the ring (epoch) is the same.
  fake_link_server before, after;
  auto old_link = link_to(before.port);
  auto b = call_through(before, old_link, 1, gets({"k"}));
  before.reply(b->id, hits(1, "old"));
  BOOST_CHECK_EQUAL(std::string(result().second[0].value.view()), "old");
  auto cv = view_with(after.port);
  caf::actor same, moved;
  on_loop([&] {
    same = ctx.links->link_for(view_with(before.port), peer_id);
    moved = ctx.links->link_for(cv, peer_id);
  });
  BOOST_CHECK(same == old_link);
  BOOST_REQUIRE(moved);
  BOOST_CHECK(moved != old_link);
  auto c = call_through(after, moved, 2, gets({"k"}));
  after.reply(c->id, hits(1, "new"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 2u);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "new");
  caf::actor again;
  on_loop([&] { again = ctx.links->link_for(cv, peer_id); });
  BOOST_CHECK(again == moved);
}

// Member "peer" was forgotten (its RPC peer actor ended: cluster/service.cpp, reap_peers) and
// came back under its name and address, with a new peer actor. The link kept the ended one:
// a batch it sent by RPC (here a value too large for the link) was dropped, never answered,
// and every later batch waited behind it. Now a lookup with the new peer actor gets a link of
// its own, and the old link answers what it sends by RPC unavailable at once.
BOOST_AUTO_TEST_CASE(a_member_back_with_a_new_rpc_peer_actor_gets_a_new_link) {
  fake_link_server server;
  auto old_link = link_to(server.port);
  auto b = call_through(server, old_link, 1, gets({"k"}));
  server.reply(b->id, hits(1, "v"));
  BOOST_CHECK_EQUAL(std::string(result().second[0].value.view()), "v");
  (*self)->send_exit(rpc_peer, caf::exit_reason::user_shutdown);  // reaped
  // The old link, still asked (a lookup by an older view): its RPC batch answers at once.
  send(old_link, 2, big_store("big"));
  auto [tag, rs] = result(1000ms);
  BOOST_CHECK_EQUAL(tag, 2u);
  BOOST_REQUIRE_EQUAL(rs.size(), 1u);
  BOOST_CHECK(rs[0].st == storage::status::unavailable);
  // Back: a new peer actor in the view.
  rpc_peer = sys->spawn<fake_rpc_peer>(&rpc_log);
  auto cv = view_with(server.port);
  caf::actor fresh;
  on_loop([&] { fresh = ctx.links->link_for(cv, peer_id); });
  BOOST_REQUIRE(fresh);
  BOOST_CHECK(fresh != old_link);
  send(fresh, 3, big_store("big"));  // by RPC, to the new peer actor
  auto r = rpc_log.take();
  BOOST_REQUIRE(r);
  BOOST_CHECK_EQUAL(r->ops[0].key, "big");
  caf::anon_send(r->sender, result_atom::value, r->tag, storage::result_batch(1));
  BOOST_CHECK_EQUAL(result().first, 3u);
}

// Member "peer" leaves: one ring later its link stays (warming may still dial the previous
// ring's owners); two rings later it is retired (noticed by link_for, then by shared_link),
// and quits once it has been idle for retire_idle_ms, not while a call is unanswered. A
// lookup afterwards gets a new link.
BOOST_AUTO_TEST_CASE(a_link_to_a_member_gone_for_two_rings_quits_once_idle) {
  fake_link_server server;
  auto link = link_to(server.port, 2000, "127.0.0.1", 100);
  auto first = view_with(server.port);
  auto ring_without = [](uint64_t epoch) {
    return cluster::ring::build({{"other", "127.0.0.1:3", 1, true},
                                 {"self", "127.0.0.1:2", 1, true}}, epoch);
  };
  actors::cluster_view second;  // peer gone; the previous ring still has it
  second.ring = ring_without(2);
  second.peers.resize(2);
  second.clients.resize(2);
  second.self = second.ring->member(0).name == "self" ? 0 : 1;
  second.past = {{first.ring, first.peers, first.clients, INT64_MAX}};
  actors::cluster_view third = second;  // peer in neither ring (first's window ended)
  third.ring = ring_without(3);
  third.past = {{second.ring, second.peers, second.clients, INT64_MAX}};

  (*self)->monitor(link);
  auto gone_within = [&](std::chrono::milliseconds limit) {
    bool down = false;
    (*self)->receive([&](caf::down_msg& d) { down = d.source == link.address(); },
                     caf::after(limit) >> [] {});
    return down;
  };
  auto c0 = call_through(server, link, 7, gets({"k"}));
  server.reply(c0->id, hits(1, "u"));
  BOOST_CHECK_EQUAL(result().first, 7u);
  on_loop([&] { ctx.links->link_for(second, 0); });
  BOOST_CHECK(!gone_within(700ms));  // idle, but its member is in the previous ring
  send(link, 1, gets({"k"}));  // unanswered for now
  auto call = server.calls.take();
  BOOST_REQUIRE(call);
  // The replicator's lookup (on the loop) takes note of the new ring as link_for does.
  on_loop([&] { ctx.links->shared_link(third, 0); });
  BOOST_CHECK(!gone_within(700ms));  // retired, but a call is unanswered (a tick is 500 ms)
  server.reply(call->id, hits(1, "v"));  // well inside the 2 s call timeout
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 1u);
  BOOST_REQUIRE_EQUAL(rs.size(), 1u);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "v");
  BOOST_CHECK(gone_within(2000ms));  // idle for 100 ms: it quits
  caf::actor again;  // a caller still on the first ring gets a new link, which works
  on_loop([&] { again = ctx.links->link_for(first, peer_id); });
  BOOST_REQUIRE(again);
  BOOST_CHECK(again != link);
  auto c2 = call_through(server, again, 2, gets({"k"}));
  server.reply(c2->id, hits(1, "w"));
  BOOST_CHECK_EQUAL(std::string(result().second[0].value.view()), "w");
}

BOOST_AUTO_TEST_CASE(no_server_sends_the_batch_by_rpc) {
  int port = 0;
  {
    fake_link_server gone;  // a port nobody listens on any more
    port = gone.port;
  }
  auto link = link_to(port);
  send(link, 5, gets({"k"}));
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);
  BOOST_CHECK_EQUAL(b->ops[0].key, "k");
  caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "by-rpc"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 5u);  // the sender's own tag, not the link's internal one
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "by-rpc");
  BOOST_CHECK_EQUAL(counters.links_open.load(), 0u);
}

BOOST_AUTO_TEST_CASE(a_lost_connection_answers_calls_in_flight_unavailable) {
  fake_link_server server;
  auto link = link_to(server.port);
  send(link, 11, gets({"a", "b", "c"}));
  BOOST_REQUIRE(server.calls.take());
  server.drop();
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 11u);
  BOOST_REQUIRE_EQUAL(rs.size(), 3u);
  for (auto& r : rs)
    BOOST_CHECK(r.st == storage::status::unavailable);
  // Backing off: the next batch goes by RPC.
  send(link, 12, gets({"d"}));
  BOOST_REQUIRE(rpc_log.take());
  BOOST_CHECK_EQUAL(counters.links_open.load(), 0u);
}

// A member that stops reading: the link's socket fills up. When the member closes the
// connection, the call in the socket answers unavailable (it may have run there), but a call
// of which not one byte left cannot have run: it goes by RPC. (Had the member been silent
// for the timeout instead, the link would find it unreachable, and the call would answer
// unavailable at once: a_silent_member_is_unreachable_until_a_probe_is_greeted.)
BOOST_AUTO_TEST_CASE(a_call_never_written_goes_by_rpc_when_the_link_fails) {
  fake_link_server server;
  auto link = link_to(server.port, 2000);
  auto first = call_through(server, link, 1, gets({"a"}));
  server.reply(first->id, hits(1, "v"));
  BOOST_CHECK_EQUAL(result().first, 1u);
  server.deaf = true;
  // More than loopback's socket buffers hold (a few MiB each way), within one link call.
  storage::op_batch big(240);
  for (size_t i = 0; i < big.size(); ++i) {
    big[i].kind = storage::op_kind::store;
    big[i].key = "big-" + std::to_string(i);
    big[i].value = std::string(cluster::inline_value_limit, 'x');
  }
  send(link, 2, std::move(big));
  send(link, 3, gets({"z"}));
  std::this_thread::sleep_for(300ms);
  BOOST_CHECK(!rpc_log.take(0ms));
  server.drop();
  auto [tag, rs] = result(3000ms);
  BOOST_CHECK_EQUAL(tag, 2u);  // partly written: it may have run, so no second try
  BOOST_REQUIRE_EQUAL(rs.size(), 240u);
  BOOST_CHECK(rs[0].st == storage::status::unavailable);
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);  // never written: by RPC
  BOOST_REQUIRE_EQUAL(b->ops.size(), 1u);
  BOOST_CHECK_EQUAL(b->ops[0].key, "z");
  caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "by-rpc"));
  auto [tag3, rs3] = result();
  BOOST_CHECK_EQUAL(tag3, 3u);
  BOOST_CHECK_EQUAL(std::string(rs3[0].value.view()), "by-rpc");
  server.deaf = false;
}

BOOST_AUTO_TEST_CASE(a_call_without_progress_times_out_unavailable) {
  fake_link_server server;
  auto link = link_to(server.port, 200);
  send(link, 13, gets({"slow"}));
  BOOST_REQUIRE(server.calls.take());
  auto t0 = std::chrono::steady_clock::now();
  auto [tag, rs] = result(3000ms);
  auto waited = std::chrono::steady_clock::now() - t0;
  BOOST_CHECK_EQUAL(tag, 13u);
  BOOST_REQUIRE_EQUAL(rs.size(), 1u);
  BOOST_CHECK(rs[0].st == storage::status::unavailable);
  BOOST_CHECK(waited >= 150ms);
  BOOST_CHECK(waited < 1500ms);
}

// A member silent for the timeout (a call unanswered while nothing came) is unreachable, as
// in mcrouter's TKO: whatever is asked of it meanwhile answers unavailable at once (reads
// fail over, writes report an error), also what would go by RPC, where it would wait out the
// same timeout (with only two members of three cut off from each other, SWIM keeps both alive
// through the third, and each op of a client forwarded to the other stalled 2-5 s).
// Replicated state still goes by RPC. A probe, a connect and hello made when a batch comes,
// ends it once greeted; its hello times out as a call does.
BOOST_AUTO_TEST_CASE(a_silent_member_is_unreachable_until_a_probe_is_greeted) {
  fake_link_server server;
  auto link = unreachable_link(server, 500);
  // Over 1.5 s: across probes that time out.
  for (uint64_t t = 2; t < 8; ++t) {
    auto t0 = std::chrono::steady_clock::now();
    send(link, t, t % 2 == 0 ? gets({"b"}) : big_store("big"));  // link-bound, RPC-bound
    auto [tag2, rs2] = result(3000ms);
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);
    BOOST_CHECK_EQUAL(tag2, t);
    BOOST_REQUIRE_EQUAL(rs2.size(), 1u);
    BOOST_CHECK(rs2[0].st == storage::status::unavailable);
    BOOST_CHECK_MESSAGE(waited < 450ms, "batch " << t << " waited " << waited.count() << " ms");
    std::this_thread::sleep_for(250ms);
  }
  BOOST_CHECK(!rpc_log.take(0ms));  // nothing went by RPC
  storage::op_batch state(1);
  state[0].kind = storage::op_kind::store;
  state[0].key = "r";
  state[0].value = "state";
  (*self)->send(link, actors::apply_atom::value, uint64_t(9), state);
  auto copy = rpc_log.take();
  BOOST_REQUIRE(copy);
  BOOST_CHECK(copy->replica);
  caf::anon_send(copy->sender, result_atom::value, copy->tag,
                 storage::result_batch(1, storage::result::of(storage::status::stored)));
  BOOST_CHECK_EQUAL(result().first, 9u);
  BOOST_CHECK_EQUAL(counters.link_calls_failed_fast.load(), 6u);
  BOOST_CHECK(!server.calls.take(0ms));  // no probe got as far as a call
  // It answers again: within a probe interval and a hello, calls go over the link again.
  server.unanswering = false;
  uint64_t t = 10;
  auto back = first_call_over(server, link, t, 300ms, 5s);
  BOOST_REQUIRE_MESSAGE(back, "no call over the link within 5 s of the member answering");
  answered_over_the_link(server, *back);
  BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 0u);
}

// A member seen back (cluster_view::returns: SWIM has it alive again, or a new process under
// its name) is probed at once by a link that found it unreachable, so that the next batch goes
// over the link. (Before, a probe was made only when a batch came a second after the last one
// failed: the first batches after the member's return answered unavailable, and with a cut's
// dropped SYN for up to a second.) A link that is fine is left alone.
BOOST_AUTO_TEST_CASE(a_member_seen_back_is_probed_at_once) {
  fake_link_server server;
  auto link = unreachable_link(server, 300);
  std::this_thread::sleep_for(200ms);  // (past the first backoff: the next batch probes)
  send(link, 2, gets({"b"}));  // away: answered at once, and its probe goes unanswered
  BOOST_CHECK(result().second[0].st == storage::status::unavailable);
  std::this_thread::sleep_for(1000ms);  // the probe's hello times out; no batch, no probe
  BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 1u);
  BOOST_CHECK_EQUAL(counters.link_calls_failed_fast.load(), 1u);

  server.unanswering = false;
  auto back = [&](uint64_t n) {
    auto cv = view_with(server.port);
    cv.returns = std::make_shared<const std::map<std::string, uint64_t>>(
      std::map<std::string, uint64_t>{{"peer", n}, {"self", 1}});
    on_loop([&] { ctx.links->note_view(cv); });  // (as the loop's listener takes it)
  };
  back(1);
  for (int i = 0; i < 100 && counters.links_unreachable.load() != 0; ++i)
    std::this_thread::sleep_for(5ms);
  BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 0u);
  auto call = call_through(server, link, 3, gets({"c"}));
  server.reply(call->id, hits(1, "v"));
  auto [tag3, rs3] = result();
  BOOST_CHECK_EQUAL(tag3, 3u);
  BOOST_CHECK(rs3[0].st == storage::status::hit);
  BOOST_CHECK_EQUAL(counters.link_calls_failed_fast.load(), 1u);
  BOOST_CHECK(!rpc_log.take(0ms));

  // Back again (a later return) while the link is ready: the same connection goes on.
  const int hellos = server.hellos.load();
  back(2);
  std::this_thread::sleep_for(100ms);
  call = call_through(server, link, 4, gets({"d"}));
  server.reply(call->id, hits(1, "w"));
  BOOST_CHECK(result().second[0].st == storage::status::hit);
  BOOST_CHECK_EQUAL(server.hellos.load(), hellos);
}

// A cut that drops SYNs (a firewall, a partition), which SWIM never saw (a third member reaches
// both: no return wakes the link) heals while a probe's connect waits: the probe is dialled
// anew every 200 ms, so the next batch finds the member within about that. (Before, the
// probe waited for the kernel's next SYN, 3 s after its dial, or for its limit and the next
// probe: 0.9 s after the heal here, up to 2.5 s at the default timeout.)
BOOST_AUTO_TEST_CASE(a_probe_whose_syn_was_dropped_is_dialled_anew) {
  fake_link_server server;
  auto link = unreachable_link(server, 2000);  // (the default timeout)
  server.cut();
  std::this_thread::sleep_for(200ms);  // (past the first backoff: the next batch probes)
  send(link, 2, gets({"b"}));  // answered at once; its probe's SYN is dropped
  BOOST_CHECK(result().second[0].st == storage::status::unavailable);
  std::this_thread::sleep_for(1150ms);  // past the kernel's own retry, a second after the dial
  BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 1u);
  BOOST_CHECK(counters.link_redials.load() >= 3u);
  server.heal();
  auto healed = std::chrono::steady_clock::now();
  uint64_t t = 3;
  auto back = first_call_over(server, link, t, 50ms, 4s);
  back_over_the_link(server, back, healed, 700ms, "the heal");
}

// A probe is made for a batch that came, and for nothing else: one that waited out its limit
// starts no next one by itself, so an idle link to a member behind a cut (or stopped) dials
// nothing however long it lasts. (A probe's failure pumps the link, and a probe's rest counts
// from its start: the next probe must still wait for a batch.)
BOOST_AUTO_TEST_CASE(a_probe_that_failed_starts_no_next_one_without_a_batch) {
  fake_link_server server;
  auto link = held_link(server, 300);
  std::this_thread::sleep_for(200ms);   // (past the first backoff: the next batch probes)
  send(link, 2, gets({"b"}));
  BOOST_CHECK(result().second[0].st == storage::status::unavailable);
  BOOST_REQUIRE(server.closed.take(2s));  // its probe, given up on
  const int accepted = server.accepted.load();
  std::this_thread::sleep_for(1500ms);  // five probe limits, no batch
  BOOST_CHECK_EQUAL(server.accepted.load(), accepted);
  BOOST_CHECK(!server.closed.take(0ms));
  BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 1u);
}

// A member seen back while a probe's connect waits (its SYN dropped by the cut) has that
// connect dialled anew at once, not when the probe's own redial comes (200 ms after it was
// dialled) or the kernel's next SYN (a second).
BOOST_AUTO_TEST_CASE(a_member_seen_back_while_a_probe_connects_is_dialled_anew) {
  fake_link_server server;
  auto link = unreachable_link(server, 2000);
  server.cut();
  std::this_thread::sleep_for(200ms);  // (past the first backoff: the next batch probes)
  auto probed = std::chrono::steady_clock::now();
  send(link, 2, gets({"b"}));  // answered at once; its probe's SYN is dropped
  BOOST_CHECK(result().second[0].st == storage::status::unavailable);
  std::this_thread::sleep_for(20ms);
  server.heal();  // (a SYN is taken again; the probe's own redial comes 200 ms after its dial)
  auto cv = view_with(server.port);
  cv.returns = std::make_shared<const std::map<std::string, uint64_t>>(
    std::map<std::string, uint64_t>{{"peer", 1}, {"self", 1}});
  auto seen_back = std::chrono::steady_clock::now();
  on_loop([&] { ctx.links->note_view(cv); });
  while (counters.links_unreachable.load() != 0 &&
         std::chrono::steady_clock::now() - seen_back < 2s)
    std::this_thread::sleep_for(2ms);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
    std::chrono::steady_clock::now() - seen_back);
  // Before the kernel's next SYN (a second after the dial), and, unless the machine was too
  // slow to tell the two apart, before the probe's own redial (which counts): by the wake.
  BOOST_CHECK_MESSAGE(took < 500ms, "greeted " << took.count() << " ms after it was seen back");
  if (seen_back - probed < 150ms)
    BOOST_CHECK_EQUAL(counters.link_redials.load(), 0u);
  auto call = call_through(server, link, 3, gets({"c"}));
  server.reply(call->id, hits(1, "v"));
  BOOST_CHECK(result().second[0].st == storage::status::hit);
}

// A probe that waited out its limit (the member's kernel took the connection, the member
// answered no hello: stopped, or a cut that drops what follows) is followed by the next at
// once when a batch comes: what a probe rests counts from its start, at most a second, so a
// member that answers again between two probes is found by the next batch. (Before, the rest
// counted from the failure and doubled with each, to a second: writes were refused for up to
// a second after the member answered again, here 800 ms.)
BOOST_AUTO_TEST_CASE(a_probe_that_waited_out_its_limit_is_followed_at_once) {
  fake_link_server server;
  auto link = held_link(server, 1000);
  // Batches come, each answered at once, until three probes have waited out their limit.
  uint64_t t = 2;
  auto batch_fails_fast = [&] {
    send(link, t, gets({"b"}));
    auto [tag, rs] = result();
    BOOST_CHECK_EQUAL(tag, t++);
    BOOST_CHECK(rs[0].st == storage::status::unavailable);
  };
  auto start = std::chrono::steady_clock::now();
  for (int probes = 0; probes < 3 && std::chrono::steady_clock::now() - start < 15s;) {
    batch_fails_fast();
    if (server.closed.take(50ms))
      ++probes;
  }
  server.holding = false;  // the member answers again
  auto back_at = std::chrono::steady_clock::now();
  auto back = first_call_over(server, link, t, 20ms, 4s);
  back_over_the_link(server, back, back_at, 400ms, "the member answered");
}

// A member whose hello was never answered at that address is not taken for unreachable: its
// memcached port may be closed to this node only while its RPC port is open. Batches go by
// RPC while the link backs off, as after a refusal.
BOOST_AUTO_TEST_CASE(a_member_never_greeted_is_reached_by_rpc) {
  fake_link_server server;
  server.unanswering = true;
  auto link = link_to(server.port, 300);
  send(link, 1, gets({"a"}));
  auto b = rpc_log.take();  // after the hello's timeout
  BOOST_REQUIRE(b);
  caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "by-rpc"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 1u);
  BOOST_CHECK(rs[0].st == storage::status::hit);
  BOOST_CHECK_EQUAL(counters.links_unreachable.load(), 0u);
  BOOST_CHECK_EQUAL(counters.link_calls_failed_fast.load(), 0u);
}

// A call behind other calls' replies (a node whose clients asked for much: the link is one
// byte stream) waits while the member answers the others; it fails once the member answered
// nothing for the timeout, or after queued_limit_factor timeouts however busy the member is.
// (It failed one timeout after it was sent, and with it every call in flight: with twenty
// clients pipelining gets of 60 KiB values through a node, every other client's reads missed.)
// Replicated state waits the same way (newer state goes behind it on the same stream).
namespace {
constexpr auto behind_timeout = 400ms;
}

BOOST_AUTO_TEST_CASE(a_call_behind_other_replies_waits_while_they_come) {
  fake_link_server server;
  auto link = link_to(server.port, behind_timeout.count());
  storage::op_batch state(1);
  state[0].kind = storage::op_kind::store;
  state[0].key = "r";
  state[0].value = "state";
  // The member answers a call every 50 ms, but not call 30 nor replicated call 40, for 4
  // timeouts; then both.
  auto held = call_through(server, link, 30, gets({"held"}));
  (*self)->send(link, actors::apply_atom::value, uint64_t(40), state);
  auto held_state = server.calls.take();
  BOOST_REQUIRE(held_state);
  auto until = std::chrono::steady_clock::now() + 4 * behind_timeout;
  for (uint64_t tag = 100; std::chrono::steady_clock::now() < until; ++tag) {
    auto c = call_through(server, link, tag, gets({"other"}));
    std::this_thread::sleep_for(50ms);
    server.reply(c->id, hits(1, "o"));
    auto [t, rs] = result();
    BOOST_REQUIRE_EQUAL(t, tag);  // (not a held call, failed)
    BOOST_REQUIRE(rs[0].st == storage::status::hit);
  }
  server.reply(held->id, hits(1, "v"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 30u);
  BOOST_REQUIRE_EQUAL(rs.size(), 1u);
  BOOST_CHECK(rs[0].st == storage::status::hit);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "v");
  server.reply(held_state->id, storage::result_batch(1, storage::result::of(storage::status::stored)));
  auto [tag2, rs2] = result();
  BOOST_CHECK_EQUAL(tag2, 40u);
  BOOST_REQUIRE_EQUAL(rs2.size(), 1u);
  BOOST_CHECK(rs2[0].st == storage::status::stored);
}

// A call never answered while the others are: unavailable after 15 timeouts. The link fails
// with it: another call then in flight answers unavailable too, and the next goes by RPC.
BOOST_AUTO_TEST_CASE(a_call_never_answered_fails_after_fifteen_timeouts) {
  fake_link_server server;
  auto link = link_to(server.port, behind_timeout.count());
  auto t0 = std::chrono::steady_clock::now();
  BOOST_REQUIRE(call_through(server, link, 31, gets({"never"})));
  std::optional<std::chrono::milliseconds> failed_after;
  for (uint64_t t = 200; !failed_after && std::chrono::steady_clock::now() - t0 < 10s; ++t) {
    send(link, t, gets({"other"}));
    if (auto c = server.calls.take(500ms)) {
      std::this_thread::sleep_for(50ms);
      server.reply(c->id, hits(1, "o"));
    } else {
      auto b = rpc_log.take();  // the link failed before t: by RPC
      BOOST_REQUIRE(b);
      caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "o"));
    }
    for (bool seen_t = false; !seen_t;) {
      auto [rt, rrs] = result();
      if (rt == 31u) {
        failed_after = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - t0);
        BOOST_CHECK(rrs[0].st == storage::status::unavailable);
        break;
      }
      BOOST_REQUIRE_EQUAL(rt, t);
      seen_t = true;
    }
  }
  BOOST_REQUIRE(failed_after);
  BOOST_CHECK_MESSAGE(*failed_after >= 15 * behind_timeout - 100ms &&
                        *failed_after < 15 * behind_timeout + 2s,
                      "failed after " << failed_after->count() << " ms");
}

BOOST_AUTO_TEST_CASE(streamed_values_are_read_again_by_rpc) {
  fake_link_server server;
  auto link = link_to(server.port);
  auto call = call_through(server, link, 14, gets({"small", "large"}));
  storage::result_batch rs = hits(2, "s");
  rs[1].value = storage::pinned_slice::from_memory(
    std::make_shared<const std::string>(std::string(cluster::inline_value_limit + 10, 'L')));
  server.reply(call->id, rs);  // the large value travels as `streamed`, without its bytes
  auto again = rpc_log.take();
  BOOST_REQUIRE(again);
  BOOST_REQUIRE_EQUAL(again->ops.size(), 1u);
  BOOST_CHECK_EQUAL(again->ops[0].key, "large");
  caf::anon_send(again->sender, result_atom::value, again->tag,
                 hits(1, std::string(cluster::inline_value_limit + 10, 'L')));
  auto [tag, got] = result();
  BOOST_CHECK_EQUAL(tag, 14u);
  BOOST_REQUIRE_EQUAL(got.size(), 2u);
  BOOST_CHECK_EQUAL(std::string(got[0].value.view()), "s");
  BOOST_CHECK_EQUAL(got[1].value.size(), cluster::inline_value_limit + 10);
}

BOOST_AUTO_TEST_CASE(warm_reads_go_over_the_link_or_to_the_peer_as_warm_reads) {
  fake_link_server server;
  auto link = link_to(server.port);
  auto warm = gets({"w"});
  warm[0].get_bump = false;
  (*self)->send(link, actors::warm_atom::value, uint64_t(40), warm);
  auto call = server.calls.take();
  BOOST_REQUIRE(call);
  BOOST_CHECK(call->origin == cluster::rpc::Origin::WARM);
  server.reply(call->id, hits(1, "warm"));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 40u);
  BOOST_CHECK_EQUAL(std::string(rs[0].value.view()), "warm");
  // Lost link: the next warm read goes to the RPC peer, still as a warm read.
  server.drop();
  for (int i = 0; i < 100 && counters.links_open.load() != 0; ++i)
    std::this_thread::sleep_for(10ms);
  (*self)->send(link, actors::warm_atom::value, uint64_t(41), warm);
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);
  BOOST_CHECK(b->warm);
  caf::anon_send(b->sender, result_atom::value, b->tag, hits(1, "via-rpc"));
  auto [tag2, rs2] = result();
  BOOST_CHECK_EQUAL(tag2, 41u);
  BOOST_CHECK_EQUAL(std::string(rs2[0].value.view()), "via-rpc");
}

BOOST_AUTO_TEST_CASE(replicated_state_goes_over_the_link_or_to_the_peer_as_replica) {
  fake_link_server server;
  auto link = link_to(server.port);
  storage::op_batch ops(1);
  ops[0].kind = storage::op_kind::store;
  ops[0].key = "r";
  ops[0].value = "state";
  (*self)->send(link, actors::apply_atom::value, uint64_t(20), ops);
  auto call = server.calls.take();
  BOOST_REQUIRE(call);
  BOOST_CHECK(call->origin == cluster::rpc::Origin::REPLICA);
  BOOST_CHECK_EQUAL(call->ops[0].value, "state");
  server.reply(call->id, storage::result_batch(1, storage::result::of(storage::status::stored)));
  auto [tag, rs] = result();
  BOOST_CHECK_EQUAL(tag, 20u);
  BOOST_CHECK(rs[0].st == storage::status::stored);
  // Too large for a link: to the RPC peer actor, still as replicated state; its answer is
  // the link's answer.
  (*self)->send(link, actors::apply_atom::value, uint64_t(21), big_store("r2"));
  auto b = rpc_log.take();
  BOOST_REQUIRE(b);
  BOOST_CHECK(b->replica);
  BOOST_CHECK_EQUAL(b->ops[0].key, "r2");
  caf::anon_send(b->sender, result_atom::value, b->tag,
                 storage::result_batch(1, storage::result::of(storage::status::stored)));
  auto [tag2, rs2] = result();
  BOOST_CHECK_EQUAL(tag2, 21u);
  BOOST_REQUIRE_EQUAL(rs2.size(), 1u);
  BOOST_CHECK(rs2[0].st == storage::status::stored);
  // The link lost: replicated state in flight fails (the replicator retries), and new state
  // goes to the RPC peer while the link backs off.
  (*self)->send(link, actors::apply_atom::value, uint64_t(22), ops);
  BOOST_REQUIRE(server.calls.take());
  server.drop();
  auto [tag3, rs3] = result();
  BOOST_CHECK_EQUAL(tag3, 22u);
  BOOST_CHECK(rs3[0].st == storage::status::unavailable);
  (*self)->send(link, actors::apply_atom::value, uint64_t(23), ops);
  auto b2 = rpc_log.take();
  BOOST_REQUIRE(b2);
  BOOST_CHECK(b2->replica);
  BOOST_CHECK_EQUAL(b2->ops[0].value, "state");
  caf::anon_send(b2->sender, result_atom::value, b2->tag,
                 storage::result_batch(1, storage::result::of(storage::status::stored)));
  auto [tag4, rs4] = result();
  BOOST_CHECK_EQUAL(tag4, 23u);
  BOOST_CHECK(rs4[0].st == storage::status::stored);
}


// A member's client call placed by a ring this node replaced: the ops of keys this node no
// longer owns go to the router, which places them again on their owners, each op with what
// is left of its sender's wait (storage::op::answer_by_ms; the RPC service stamps the call
// that places it again with it, or answers unavailable once it passed: test_service.cpp,
// an_op_placed_again_keeps_its_senders_deadline). Before, they went without it, and the
// call placing them again had a whole timeout of its own.
BOOST_AUTO_TEST_CASE(ops_placed_again_from_a_session_keep_their_senders_deadline) {
  caf::actor test = caf::actor_cast<caf::actor>(*self);
  // (`test` an argument: see a_closed_session_replicates_the_writes_a_slow_shard_ran.)
  auto router = sys->spawn([](caf::event_based_actor* a, caf::actor test) -> caf::behavior {
    return {[a, test](exec_atom, uint64_t tag, storage::op_batch& ops) {
      for (const auto& o : ops)
        a->send(test, o.key, o.answer_by_ms);
      return caf::make_message(result_atom::value, tag,
                               storage::result_batch(ops.size(), storage::result::of(
                                                                   storage::status::stored)));
    }};
  }, test);
  auto cv = std::make_shared<actors::cluster_view>(view_with(1));
  cv->router = router;
  cv->self_name = "self";
  auto alone = cluster::ring::build({{"self", "127.0.0.1:2", 1, true}}, 2);  // the member's
  cv->past.push_back({alone, {caf::actor()}, {""}, 0});
  std::string key;  // one "peer" owns now
  for (int i = 0; key.empty(); ++i)
    if (cv->ring->live_primary("again-" + std::to_string(i))->name == "peer")
      key = "again-" + std::to_string(i);
  auto snap = std::make_shared<actors::route_snapshot>();
  snap->cluster = cv;
  int sv[2];
  BOOST_REQUIRE_EQUAL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  on_loop([&] {
    cluster::link_settings ls;
    ls.node_name = "self";
    ctx.routes = snap;
    ctx.links = cluster::make_loop_links(*loop, ctx, ls);
    ctx.links->serve(sv[1], lw::hello_line(cluster::rpc::SCHEMA_VERSION, "peer"));
  });
  storage::op_batch ops(1);
  ops[0].kind = storage::op_kind::store;
  ops[0].key = key;
  ops[0].value = "v";
  const uint64_t sent = cluster::steady_now_ms();
  auto frame = lw::encode_call(1, cluster::rpc::Origin::CLIENT, ops, true,
                               alone->placement(), {sent, 300});
  auto bytes = frame.asChars();
  BOOST_REQUIRE_EQUAL(::send(sv[0], bytes.begin(), bytes.size(), MSG_NOSIGNAL),
                      ssize_t(bytes.size()));
  std::string got;
  uint64_t by = 0;
  (*self)->receive([&](std::string& k, uint64_t answer_by) { got = k, by = answer_by; },
                   caf::after(std::chrono::milliseconds(3000)) >> [] {});
  BOOST_CHECK_EQUAL(got, key);
  BOOST_CHECK_GT(by, sent);  // (the first call on the session is on time: 300 ms are left)
  BOOST_CHECK_LE(by, cluster::steady_now_ms() + 300);
  ::close(sv[0]);
  on_loop([&] { ctx.routes = nullptr; });
  (*self)->send_exit(router, caf::exit_reason::user_shutdown);
}

// The server side: a session whose socket closes while a client call still runs at a shard
// stays for the call's results and replicates what they changed. Once, it waited a second
// and ended: the writes of a shard slower than that were never replicated (their results
// came to nobody), and the keys' other owners kept the older values.
BOOST_AUTO_TEST_CASE(a_closed_session_replicates_the_writes_a_slow_shard_ran) {
  // A shard that answers after 1.5 s: a set stored, anything else a miss.
  // (An argument: CAF 0.17 binds a null tuple for a function actor without one, which UBSan
  // reports.)
  auto shard = sys->spawn([](caf::event_based_actor* a, std::chrono::milliseconds delay) -> caf::behavior {
    return {[a, delay](exec_atom, uint64_t tag, storage::op_batch& ops) {
      storage::result_batch rs(ops.size());
      for (size_t i = 0; i < ops.size(); ++i)
        rs[i].st = ops[i].kind == storage::op_kind::store ? storage::status::stored
                                                           : storage::status::miss;
      a->delayed_send(caf::actor_cast<caf::actor>(a->current_sender()), delay, result_atom::value,
                      tag, std::move(rs));
    }};
  }, 1500ms);
  auto cv = std::make_shared<actors::cluster_view>(view_with(1));
  cv->replicas = 2;
  cv->replicator = caf::actor_cast<caf::actor>(*self);  // the test takes replicate_atom
  auto snap = std::make_shared<actors::route_snapshot>();
  snap->fallback.shards = {shard};
  snap->cluster = cv;
  int sv[2];
  BOOST_REQUIRE_EQUAL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  const std::string hello = lw::hello_line(cluster::rpc::SCHEMA_VERSION, "peer");
  on_loop([&] {
    cluster::link_settings ls;
    ls.node_name = "self";
    ctx.routes = snap;
    ctx.links = cluster::make_loop_links(*loop, ctx, ls);
    ctx.links->serve(sv[1], hello);
  });
  storage::op_batch ops(2);
  ops[0].kind = storage::op_kind::store;
  ops[0].key = "written-late";
  ops[0].value = "v";
  ops[1].kind = storage::op_kind::get;  // a plain read changes nothing: not replicated
  ops[1].key = "read-late";
  ops.emplace_back();
  ops[2].kind = storage::op_kind::remove;  // a delete of nothing (miss): not replicated
  ops[2].key = "deleted-late";
  auto frame = lw::encode_call(1, cluster::rpc::Origin::CLIENT, ops);
  auto bytes = frame.asChars();
  BOOST_REQUIRE_EQUAL(::send(sv[0], bytes.begin(), bytes.size(), MSG_NOSIGNAL), ssize_t(bytes.size()));
  pollfd p{sv[0], POLLIN, 0};
  BOOST_REQUIRE_EQUAL(::poll(&p, 1, 3000), 1);  // the accept line: the call was read after it
  char line[256];
  BOOST_REQUIRE_GT(::read(sv[0], line, sizeof line), 0);
  std::this_thread::sleep_for(100ms);  // (the call reaches the shard)
  ::close(sv[0]);
  std::vector<std::string> keys;
  (*self)->receive(
    [&](actors::replicate_atom, std::vector<std::string>& k) { keys = std::move(k); },
    caf::after(std::chrono::milliseconds(4000)) >> [] {});
  BOOST_CHECK(keys == std::vector<std::string>{"written-late"});
  on_loop([&] { ctx.routes = nullptr; });
  (*self)->send_exit(shard, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
