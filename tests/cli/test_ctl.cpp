// bifrostctl against an in-process fake node: a `Node::Server` with canned members, stats and
// ring, a key/value map behind execute (large values streamed through the caller's sink),
// served on a real loopback TCP port by a KJ loop on a background thread. The client side is
// the real entry point (ctl::main) on the test thread, with its own KJ loop.
#include "cli/ctl.hpp"
#include "protocol/memcache.hpp"

#include <capnp/rpc-twoparty.h>
#include <nlohmann/json.hpp>

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace rpc = bifrost::cluster::rpc;
namespace ctl = bifrost::ctl;
using namespace std::chrono_literals;

namespace {

constexpr size_t inline_limit = 64 * 1024;  // the fake streams values larger than this
constexpr size_t chunk_size = 64 * 1024;

struct fake_member {
  std::string name, rpc_address, client_address;
  rpc::MemberState state;
  double share;
  uint64_t items, bytes;
  bool sizes_unknown = false;  // (MemberStatus.sizeUnknown)
};

// What a fake node answers; shared between the test thread (setup, checks) and the KJ thread.
struct fake_config {
  std::mutex mu;
  std::string name = "n1";
  uint32_t version = rpc::SCHEMA_VERSION;
  bool refuse_hello = false;      // throw, naming both versions, like a real node
  bool fail_stats = false;
  bool finish_streams = true;     // call sink.finish() after the last chunk
  std::vector<fake_member> members;
  std::vector<std::pair<std::string, std::string>> stats;
  std::map<std::string, std::string> store;
  std::map<std::string, uint32_t> flags;
  std::map<std::string, int64_t> ttls;
  std::string hello_from, ring_key;
  int executes = 0, uploads = 0;       // calls of each
  size_t upload_chunks = 0;            // chunks written to upload sinks
  bool upload_value_inline = false;    // an upload op carried a value (it must not)
  std::vector<std::string> ring_keys;  // every key asked, in order
  int drains = 0, leaves = 0;
  std::vector<bool> held;         // holdUntilExit of each drain and leave, in order
  int statuses = 0;               // status calls answered
  bool status_hangs = false;      // status never answers (a paused node)
  int lose_after = 0;             // nonzero: the lose_after-th status since the last loss
  int losses = 0;                 // ...throws DISCONNECTED, so many times (-1: always)
  uint64_t started_at_ms = 1700000000000;  // hello's startedAtMs
  uint64_t started_at_when_lost = 0;       // ...becomes this then (nonzero: "a new process")
  bool hold = true;               // drain/leave answer held = holdUntilExit (false: never)
  uint32_t stops_in_ms = 0;       // drain/leave answer stopsInMs
  int since_loss = 0;
  bool lost = false;              // a status threw DISCONNECTED
  bool hello_drops_after_loss = false;  // then hello throws DISCONNECTED (a cut, a full node)
};

std::string to_string(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
capnp::Data::Reader as_data(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

void fill_info(rpc::MemberInfo::Builder b, const fake_member& m, uint64_t incarnation) {
  b.setName(m.name);
  b.setRpcAddress(m.rpc_address);
  b.setClientAddress(m.client_address);
  b.setState(m.state);
  b.setIncarnation(incarnation);
  b.setWeight(100);
}

kj::Promise<void> stream_value(rpc::ValueSink::Client sink, std::shared_ptr<std::string> value,
                               size_t offset, uint32_t index, bool finish) {
  if (offset >= value->size()) {
    if (!finish)
      return kj::READY_NOW;
    return sink.finishRequest().send().ignoreResult();
  }
  size_t n = std::min(chunk_size, value->size() - offset);
  auto req = sink.writeRequest();
  req.setIndex(index);
  req.setChunk(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value->data() + offset), n));
  return req.send().then([sink, value, offset, n, index, finish]() mutable {
    return stream_value(kj::mv(sink), value, offset + n, index + 1, finish);
  });
}

// An upload's sink: collects the chunks of op 0's value; finish stores it, as execute would.
class upload_sink final : public rpc::ValueSink::Server {
public:
  upload_sink(fake_config& cfg, std::string key, uint32_t flags, int64_t ttl)
      : cfg_(cfg), key_(std::move(key)), flags_(flags), ttl_(ttl) {}

protected:
  kj::Promise<void> write(WriteContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    auto p = context.getParams();
    if (p.getIndex() == 0)
      value_ += to_string(p.getChunk());
    ++cfg_.upload_chunks;
    return kj::READY_NOW;
  }

  kj::Promise<void> finish(FinishContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    cfg_.store[key_] = value_;
    cfg_.flags[key_] = flags_;
    cfg_.ttls[key_] = ttl_;
    auto r = context.getResults().initResults(1)[0];
    r.setStatus(rpc::Status::STORED);
    r.setCas(98);
    return kj::READY_NOW;
  }

private:
  fake_config& cfg_;
  std::string key_, value_;
  uint32_t flags_;
  int64_t ttl_;
};

class fake_node final : public rpc::Node::Server {
public:
  explicit fake_node(fake_config& cfg) : cfg_(cfg) {}

protected:
  kj::Promise<void> hello(HelloContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    auto peer = context.getParams().getVersion();
    cfg_.hello_from = context.getParams().getFrom().getName();
    if (cfg_.hello_drops_after_loss && cfg_.lost)
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "dropped"));
    if (cfg_.refuse_hello)
      kj::throwFatalException(KJ_EXCEPTION(FAILED, kj::str("schema version mismatch: this node "
                                                           "speaks version ", cfg_.version,
                                                           ", the peer speaks version ", peer)));
    auto r = context.getResults();
    r.setVersion(cfg_.version);
    r.setStartedAtMs(cfg_.started_at_ms);
    r.initSelf().setName(cfg_.name);
    return kj::READY_NOW;
  }

  kj::Promise<void> status(StatusContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    if (cfg_.status_hangs)
      return kj::NEVER_DONE;
    if (cfg_.lose_after != 0 && cfg_.losses != 0 && ++cfg_.since_loss == cfg_.lose_after) {
      cfg_.since_loss = 0;
      if (cfg_.losses > 0)
        --cfg_.losses;
      if (cfg_.started_at_when_lost != 0)
        cfg_.started_at_ms = cfg_.started_at_when_lost;
      cfg_.lost = true;
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "connection lost"));
    }
    ++cfg_.statuses;
    auto r = context.getResults();
    auto self = r.initSelf();
    fill_info(self.initInfo(), cfg_.members.at(0), 7);
    self.setRingShare(cfg_.members.at(0).share);
    self.setItems(cfg_.members.at(0).items);
    self.setBytes(cfg_.members.at(0).bytes);
    r.setVersion("0.1.0-fake");
    r.setUptime(3725);
    r.setCluster("3 live members");
    return kj::READY_NOW;
  }

  kj::Promise<void> members(MembersContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    auto list = context.getResults().initMembers(cfg_.members.size());
    for (size_t i = 0; i < cfg_.members.size(); ++i) {
      auto& m = cfg_.members[i];
      fill_info(list[i].initInfo(), m, i + 1);
      list[i].setRingShare(m.share);
      list[i].setItems(m.items);
      list[i].setBytes(m.bytes);
      list[i].setSizeUnknown(m.sizes_unknown);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> ring(RingContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    cfg_.ring_key = to_string(context.getParams().getKey());
    cfg_.ring_keys.push_back(cfg_.ring_key);
    auto r = context.getResults();
    r.setEpoch(42);
    auto owners = r.initOwners(2);
    fill_info(owners[0], cfg_.members.at(1), 2);
    fill_info(owners[1], cfg_.members.at(0), 1);
    return kj::READY_NOW;
  }

  kj::Promise<void> stats(StatsContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    if (cfg_.fail_stats)
      kj::throwFatalException(KJ_EXCEPTION(FAILED, "stats exploded"));
    auto list = context.getResults().initStats(cfg_.stats.size());
    for (size_t i = 0; i < cfg_.stats.size(); ++i) {
      list[i].setName(cfg_.stats[i].first);
      list[i].setValue(cfg_.stats[i].second);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> upload(UploadContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    ++cfg_.uploads;
    auto ops = context.getParams().getOps();
    KJ_REQUIRE(ops.size() == 1 && ops[0].getKind() == rpc::OpKind::STORE, "one store op");
    cfg_.upload_value_inline = ops[0].hasValue() && ops[0].getValue().size() > 0;
    context.getResults().setSink(kj::heap<upload_sink>(cfg_, to_string(ops[0].getKey()),
                                                       ops[0].getFlags(), ops[0].getTtl()));
    return kj::READY_NOW;
  }

  kj::Promise<void> execute(ExecuteContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    ++cfg_.executes;
    auto params = context.getParams();
    auto ops = params.getOps();
    auto results = context.getResults().initResults(ops.size());
    kj::Promise<void> streaming = kj::READY_NOW;
    for (size_t i = 0; i < ops.size(); ++i) {
      auto op = ops[i];
      auto key = to_string(op.getKey());
      auto res = results[i];
      switch (op.getKind()) {
        case rpc::OpKind::GET: {
          auto it = cfg_.store.find(key);
          if (it == cfg_.store.end()) {
            res.setStatus(rpc::Status::MISS);
            break;
          }
          res.setStatus(rpc::Status::HIT);
          res.setFlags(cfg_.flags[key]);
          res.setCas(99);
          res.setExptime(cfg_.ttls[key] == 0 ? 0 : 2000000000u);  // (absolute, as a node's)
          res.setValueSize(it->second.size());
          if (it->second.size() <= inline_limit || !params.hasSink()) {
            res.setValue(as_data(it->second));
          } else {
            res.setStreamed(true);
            streaming = stream_value(params.getSink(), std::make_shared<std::string>(it->second),
                                     0, 0, cfg_.finish_streams);
          }
          break;
        }
        case rpc::OpKind::STORE:
          if (key == "readonly") {
            res.setStatus(rpc::Status::NOT_STORED);
            break;
          }
          if (key == "toolarge") {
            res.setStatus(rpc::Status::TOO_LARGE);
            break;
          }
          cfg_.store[key] = to_string(op.getValue());
          cfg_.flags[key] = op.getFlags();
          cfg_.ttls[key] = op.getTtl();
          res.setStatus(rpc::Status::STORED);
          res.setCas(99);
          break;
        case rpc::OpKind::REMOVE:
          res.setStatus(cfg_.store.erase(key) ? rpc::Status::DELETED : rpc::Status::NOT_FOUND);
          break;
        default:
          res.setStatus(rpc::Status::UNAVAILABLE);
      }
    }
    // The results go back after the last chunk (or the finish call) has been delivered.
    return streaming;
  }

  kj::Promise<void> drain(DrainContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    ++cfg_.drains;
    cfg_.held.push_back(context.getParams().getHoldUntilExit());
    context.getResults().setHeld(cfg_.hold && context.getParams().getHoldUntilExit());
    context.getResults().setStopsInMs(cfg_.stops_in_ms);
    return kj::READY_NOW;
  }

  kj::Promise<void> leave(LeaveContext context) override {
    std::lock_guard<std::mutex> lock(cfg_.mu);
    ++cfg_.leaves;
    cfg_.held.push_back(context.getParams().getHoldUntilExit());
    context.getResults().setHeld(cfg_.hold && context.getParams().getHoldUntilExit());
    context.getResults().setStopsInMs(cfg_.stops_in_ms);
    return kj::READY_NOW;
  }

private:
  fake_config& cfg_;
};

// A fake node served on 127.0.0.1:<free port> by a KJ loop on its own thread.
class fake_server {
public:
  fake_server() {
    std::promise<uint16_t> started;
    thread_ = std::thread([this, &started] {
      auto io = kj::setupAsyncIo();
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      stop_ = kj::mv(stop.fulfiller);
      auto addr = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
      auto listener = addr->listen();
      capnp::TwoPartyServer server(kj::heap<fake_node>(cfg));
      auto serving = server.listen(*listener);
      started.set_value(static_cast<uint16_t>(listener->getPort()));
      stop.promise.exclusiveJoin(kj::mv(serving)).wait(io.waitScope);
    });
    port_ = started.get_future().get();
  }
  ~fake_server() {
    stop_->fulfill();
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  fake_config cfg;

private:
  std::thread thread_;
  uint16_t port_ = 0;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
};

// A TCP socket on 127.0.0.1:<free port>: listening (connections complete in the backlog but
// are never answered) or merely bound (connections are refused).
class raw_socket {
public:
  explicit raw_socket(bool listening) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    if (listening)
      BOOST_REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof a;
    BOOST_REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
  }
  ~raw_socket() { ::close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int fd() const { return fd_; }

private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

struct outcome {
  int code;
  std::string out, err;
  double seconds;
};

// An output that takes nothing: what a full disk or a closed pipe does to stdout.
struct failing_buffer final : std::streambuf {
  int_type overflow(int_type) override { return traits_type::eof(); }
  std::streamsize xsputn(const char*, std::streamsize) override { return 0; }
};

outcome ctl_run(std::vector<std::string> args, bool output_fails = false) {
  args.insert(args.begin(), "bifrostctl");
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  std::ostringstream out, err;
  failing_buffer nowhere;
  std::ostream failing(&nowhere);
  auto start = std::chrono::steady_clock::now();
  int code = ctl::main(static_cast<int>(argv.size()), argv.data(),
                       output_fails ? failing : static_cast<std::ostream&>(out), err);
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return {code, out.str(), err.str(), took.count()};
}

std::string temp_file(const std::string& content) {
  char path[] = "/tmp/bifrostctl-value-XXXXXX";
  int fd = mkstemp(path);
  BOOST_REQUIRE(fd >= 0);
  BOOST_REQUIRE(::write(fd, content.data(), content.size()) == ssize_t(content.size()));
  ::close(fd);
  return path;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A cluster of canned members: n1 (the fake itself), n2, n3 at `alive_but_down` (alive in the
// member list, nobody listening), and one member in each other state.
void set_members(fake_config& cfg, const std::string& self, const std::string& second,
                 const std::string& alive_but_down) {
  std::lock_guard<std::mutex> lock(cfg.mu);
  cfg.members = {
      {"n1", self, "127.0.0.1:11211", rpc::MemberState::ALIVE, 0.5, 10, 1000},
      {"n2", second, "127.0.0.1:11212", rpc::MemberState::ALIVE, 0.25, 5, 500},
      {"n3", alive_but_down, "127.0.0.1:11213", rpc::MemberState::ALIVE, 0.25, 0, 0},
      {"n4", "127.0.0.1:1", "127.0.0.1:11214", rpc::MemberState::SUSPECT, 0, 1, 2},
      {"n5", "127.0.0.1:1", "127.0.0.1:11215", rpc::MemberState::DEAD, 0, 0, 0},
      {"n6", "127.0.0.1:1", "127.0.0.1:11216", rpc::MemberState::LEFT, 0, 0, 0},
  };
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);)
    v.push_back(l);
  return v;
}

} // namespace

BOOST_AUTO_TEST_SUITE(bifrostctl)

BOOST_AUTO_TEST_CASE(usage_errors_exit_2_and_help_exits_0) {
  auto no_command = ctl_run({"--node", "127.0.0.1:1"});
  BOOST_TEST(no_command.code == 2);
  BOOST_TEST(contains(no_command.err, "bifrostctl: no command given; the commands are status "),
             no_command.err);
  auto bad_node = ctl_run({"--node", "localhost", "status"});
  BOOST_TEST(bad_node.code == 2);
  BOOST_TEST(contains(bad_node.err, "is not host:port"), bad_node.err);
  auto no_node = ctl_run({"status"});
  BOOST_TEST(no_node.code == 2);
  BOOST_TEST(contains(no_node.err, "--node"));
  auto missing_value = ctl_run({"--node", "127.0.0.1:1", "set", "k"});
  BOOST_TEST(missing_value.code == 2);
  // (NaN passed CLI::PositiveNumber, and 1e10 s overflowed KJ's nanoseconds: every call then
  // timed out at once)
  for (const char* t : {"-1", "0", "nan", "1e10", "inf", "x"}) {
    auto bad_timeout = ctl_run({"--node", "127.0.0.1:1", "--timeout", t, "status"});
    BOOST_TEST(bad_timeout.code == 2, t);
    BOOST_TEST(contains(bad_timeout.err, "--timeout"), bad_timeout.err);
  }
  // Integers are decimal, as in memcached (CLI11 alone reads 0600 as octal, 0x10 as hex).
  auto hex_flags = ctl_run({"--node", "127.0.0.1:1", "set", "k", "v", "--flags", "0x10"});
  BOOST_TEST(hex_flags.code == 2);
  BOOST_TEST(contains(hex_flags.err, "decimal"), hex_flags.err);
  // Keys the memcached text protocol could not address are usage errors, before any connect.
  for (const std::string& key : {std::string(), std::string(251, 'k'), std::string("a b"),
                                 std::string("a\nb"), std::string("a\x01")}) {
    for (const char* cmd : {"get", "delete", "set"}) {
      std::vector<std::string> args = {"--node", "127.0.0.1:1", cmd, key};
      if (std::string(cmd) == "set") args.push_back("v");
      auto r = ctl_run(args);
      BOOST_TEST(r.code == 2, cmd << " '" << key << "': " << r.err);
      BOOST_TEST(contains(r.err, "KEY"), r.err);
    }
  }
  auto ring_key = ctl_run({"--node", "127.0.0.1:1", "ring", "--key", std::string(251, 'k')});
  BOOST_TEST(ring_key.code == 2);
  auto bad_ttl = ctl_run({"--node", "127.0.0.1:1", "set", "k", "v", "--ttl", "99999999999"});
  BOOST_TEST(bad_ttl.code == 2);
  auto unknown = ctl_run({"--node", "127.0.0.1:1", "bogus"});
  BOOST_TEST(unknown.code == 2);
  BOOST_TEST(contains(unknown.err, "unknown command 'bogus'"), unknown.err);
  BOOST_TEST(contains(unknown.err, "members"), unknown.err);
  auto bad_flag = ctl_run({"--node", "127.0.0.1:1", "--bogus"});  // (a flag: CLI11's words)
  BOOST_TEST(bad_flag.code == 2);
  BOOST_TEST(!contains(bad_flag.err, "unknown command"), bad_flag.err);
  auto empty_file = ctl_run({"--node", "127.0.0.1:1", "set", "k", "--value-file", ""});
  BOOST_TEST(empty_file.code == 2);
  BOOST_TEST(contains(empty_file.err, "--value-file: empty path"), empty_file.err);
  auto wide_flags = ctl_run({"--node", "127.0.0.1:1", "set", "k", "v", "--flags", "4294967296"});
  BOOST_TEST(wide_flags.code == 2);
  BOOST_TEST(contains(wide_flags.err, "4294967295"), wide_flags.err);
  auto version = ctl_run({"--version"});
  BOOST_TEST(version.code == 0);
  BOOST_TEST(contains(version.out, "schema version " + std::to_string(rpc::SCHEMA_VERSION)));
  auto help = ctl_run({"--help"});
  BOOST_TEST(help.code == 0);
  BOOST_TEST(contains(help.out, "Usage"));
  BOOST_TEST(contains(help.out, "members"));
}

BOOST_AUTO_TEST_CASE(hello_names_bifrostctl_and_status_prints_a_table) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  auto r = ctl_run({"--node", a.address(), "status"});
  BOOST_TEST(r.code == 0, r.err);
  BOOST_TEST(a.cfg.hello_from == "bifrostctl");
  auto l = lines(r.out);
  BOOST_REQUIRE(l.size() >= 11);
  BOOST_TEST(l[0] == "name         n1");
  BOOST_TEST(contains(r.out, "rpc_address  " + a.address()));
  BOOST_TEST(contains(r.out, "address      127.0.0.1:11211"));
  BOOST_TEST(contains(r.out, "state        alive"));
  BOOST_TEST(contains(r.out, "incarnation  7"));
  BOOST_TEST(contains(r.out, "ring_share   50.0%"));
  BOOST_TEST(contains(r.out, "cluster      3 live members"), r.out);
  BOOST_TEST(contains(r.out, "version      0.1.0-fake"));
  BOOST_TEST(contains(r.out, "uptime       3725 s (1h02m05s)"));

  auto j = ctl_run({"--node", a.address(), "--json", "status"});
  BOOST_TEST(j.code == 0);
  auto doc = nlohmann::json::parse(j.out);
  BOOST_TEST(doc["name"] == "n1");
  BOOST_TEST(doc["uptime"] == 3725);
  BOOST_TEST(doc["version"] == "0.1.0-fake");
  BOOST_TEST(doc["cluster"] == "3 live members");
}

// A port is decimal with leading zeros too, as bifrostd's -p reads it (KJ's address parser
// alone read "0<port>" in octal and dialled another port); an IPv6 host without brackets is
// named so, before any lookup.
BOOST_AUTO_TEST_CASE(node_ports_are_decimal_and_v6_hosts_need_brackets) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  const std::string addr = a.address();
  const size_t colon = addr.rfind(':');
  const std::string zeros = addr.substr(0, colon + 1) + "00" + addr.substr(colon + 1);
  auto r = ctl_run({"--node", zeros, "status"});
  BOOST_TEST(r.code == 0, r.err);
  BOOST_TEST(contains(r.out, "name         n1"));
  auto v6 = ctl_run({"--node", "::1:22001", "status"});
  BOOST_TEST(v6.code == 2);
  BOOST_TEST(contains(v6.err, "[::1]:22001"), v6.err);
  for (const char* bad : {"127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1:1x"}) {
    auto b = ctl_run({"--node", bad, "status"});
    BOOST_TEST(b.code == 2, bad);
    BOOST_TEST(contains(b.err, "port 1..65535"), b.err);
  }
}

BOOST_AUTO_TEST_CASE(members_table_and_json) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  a.cfg.members[2].sizes_unknown = true;  // (n3 did not answer the node in time)
  a.cfg.members[4].sizes_unknown = true;  // (n5 is dead)
  auto r = ctl_run({"--node", a.address(), "members"});
  BOOST_TEST(r.code == 0, r.err);
  auto l = lines(r.out);
  BOOST_REQUIRE(l.size() == 7);
  size_t width = std::string("RPC_ADDRESS").size();
  for (const auto& m : a.cfg.members)
    width = std::max(width, m.rpc_address.size());
  const auto pad = [width](std::string s) {
    s.resize(width + 2, ' ');
    return s;
  };
  BOOST_TEST(l[0] == "NAME  ADDRESS          " + pad("RPC_ADDRESS") +
                       "STATE    INCARNATION  SHARE%  ITEMS  BYTES");
  BOOST_TEST(l[1] == "n1    127.0.0.1:11211  " + pad(a.address()) +
                       "alive    1            50.0    10     1000");
  BOOST_TEST(l[3].substr(l[3].size() - 16) == "25.0    -      -", l[3]);
  BOOST_TEST(l[4] == "n4    127.0.0.1:11214  " + pad("127.0.0.1:1") +
                       "suspect  4            0.0     1      2");

  // Global flags may follow the command too.
  auto j = ctl_run({"--node", a.address(), "members", "--json"});
  BOOST_TEST(j.code == 0, j.err);
  auto doc = nlohmann::json::parse(j.out);
  BOOST_REQUIRE(doc.is_array());
  BOOST_REQUIRE(doc.size() == 6);
  std::vector<std::string> states;
  for (auto& m : doc) {
    for (auto field : {"name", "address", "rpc_address", "state", "incarnation", "ring_share",
                       "items", "bytes"})
      BOOST_TEST(m.contains(field), "missing " << field);
    states.push_back(m["state"]);
  }
  BOOST_TEST(doc[0]["address"] == "127.0.0.1:11211");
  BOOST_TEST(doc[0]["rpc_address"] == a.address());
  BOOST_TEST(doc[0]["ring_share"] == 0.5);
  BOOST_TEST(doc[1]["bytes"] == 500);
  BOOST_TEST(doc[2]["items"].is_null());  // (not 0: an unknown member is not an empty one)
  BOOST_TEST(doc[2]["bytes"].is_null());
  BOOST_TEST(doc[3]["items"] == 1);
  std::vector<std::string> want = {"alive", "alive", "alive", "suspect", "dead", "left"};
  BOOST_TEST(states == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(ring_with_and_without_key) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  auto r = ctl_run({"--node", a.address(), "ring", "--key", "user:42"});
  BOOST_TEST(r.code == 0, r.err);
  BOOST_TEST(a.cfg.ring_key == "user:42");
  auto l = lines(r.out);
  BOOST_REQUIRE(l.size() == 4);
  BOOST_TEST(l[0] == "epoch 42");
  // RPC_ADDRESS is as wide as the fake's own address (n1, the replica).
  auto pad = std::string(a.address().size() - std::string("127.0.0.1:2").size(), ' ');
  BOOST_TEST(l[1] == "ROLE     NAME  ADDRESS          RPC_ADDRESS" +
                         std::string(a.address().size() - 11, ' ') + "  STATE");
  BOOST_TEST(l[2] == "primary  n2    127.0.0.1:11212  127.0.0.1:2" + pad + "  alive");
  BOOST_TEST(l[3] == "replica  n1    127.0.0.1:11211  " + a.address() + "  alive");

  auto j = ctl_run({"--node", a.address(), "--json", "ring", "--key", "user:42"});
  auto doc = nlohmann::json::parse(j.out);
  BOOST_TEST(doc["epoch"] == 42);
  BOOST_TEST(doc["owners"][0]["name"] == "n2");
  BOOST_TEST(doc["owners"][0]["role"] == "primary");

  // Several keys: one lookup each, in order; a list in JSON, a row each in text.
  a.cfg.ring_keys.clear();
  auto jm = ctl_run({"--node", a.address(), "--json", "ring", "--key", "a", "--key", "b:2"});
  BOOST_TEST(jm.code == 0, jm.err);
  BOOST_TEST(a.cfg.ring_keys == (std::vector<std::string>{"a", "b:2"}));
  auto list = nlohmann::json::parse(jm.out);
  BOOST_REQUIRE(list.is_array());
  BOOST_REQUIRE(list.size() == 2u);
  BOOST_TEST(list[1]["key"] == "b:2");
  BOOST_TEST(list[1]["epoch"] == 42);
  BOOST_TEST(list[1]["owners"][0]["role"] == "primary");
  BOOST_TEST(list[1]["owners"][1]["name"] == "n1");
  auto tm = ctl_run({"--node", a.address(), "ring", "--key", "a", "--key", "b:2"});
  BOOST_TEST(tm.code == 0, tm.err);
  auto lm = lines(tm.out);
  BOOST_REQUIRE(lm.size() == 3);
  BOOST_TEST(lm[0] == "KEY  EPOCH  PRIMARY  REPLICAS");
  BOOST_TEST(lm[2] == "b:2  42     n2       n1");
  // A bad key among them is refused before anything is asked.
  a.cfg.ring_keys.clear();
  auto bad = ctl_run({"--node", a.address(), "ring", "--key", "a", "--key", "b c"});
  BOOST_TEST(bad.code == 2);
  BOOST_TEST(a.cfg.ring_keys.empty());

  auto all = ctl_run({"--node", a.address(), "ring"});
  BOOST_TEST(all.code == 0, all.err);
  auto la = lines(all.out);
  BOOST_REQUIRE(la.size() == 7);
  BOOST_TEST(la[0] == "NAME  ADDRESS          STATE    SHARE%");
  BOOST_TEST(la[2] == "n2    127.0.0.1:11212  alive    25.0");
}

BOOST_AUTO_TEST_CASE(stats_table_json_and_rpc_error) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  a.cfg.stats = {{"pid", "100"}, {"curr_items", "10"}, {"version", "0.1.0"}};
  auto r = ctl_run({"--node", a.address(), "stats"});
  BOOST_TEST(r.code == 0, r.err);
  auto l = lines(r.out);
  BOOST_REQUIRE(l.size() == 4);
  BOOST_TEST(l[0] == "NAME        VALUE");
  BOOST_TEST(l[2] == "curr_items  10");

  auto j = ctl_run({"--node", a.address(), "--json", "stats"});
  auto doc = nlohmann::json::parse(j.out);
  BOOST_TEST(doc["stats"]["curr_items"] == 10);
  BOOST_TEST(doc["stats"]["version"] == "0.1.0");

  a.cfg.fail_stats = true;
  auto e = ctl_run({"--node", a.address(), "stats"});
  BOOST_TEST(e.code == 1);
  BOOST_TEST(contains(e.err, "stats exploded"), e.err);
}

BOOST_AUTO_TEST_CASE(stats_all_sums_over_alive_members) {
  fake_server a, b;
  raw_socket down(true);  // a paused member: connections complete, nothing answers
  set_members(a.cfg, a.address(), b.address(), down.address());
  set_members(b.cfg, a.address(), b.address(), down.address());
  a.cfg.stats = {{"pid", "100"}, {"curr_items", "10"}, {"rusage_user", "0.5"},
                 {"version", "0.1.0"}, {"only_a", "1"}};
  b.cfg.stats = {{"pid", "200"}, {"curr_items", "5"}, {"rusage_user", "0.25"},
                 {"version", "0.2.0"}, {"only_b", "7"}};
  auto r = ctl_run({"--node", a.address(), "--timeout", "1", "stats", "--all"});
  BOOST_TEST(r.code == 0, r.err);
  // (a member the node listed is no mistaken address: no hint about RPC ports or TLS)
  BOOST_TEST(!contains(r.err, "RPC port"), r.err);
  BOOST_TEST(contains(r.out, "2 of 3 alive members answered"), r.out);
  BOOST_TEST(contains(r.out, "curr_items   15\n"), r.out);
  BOOST_TEST(contains(r.out, "rusage_user  0.75\n"), r.out);
  BOOST_TEST(contains(r.out, "pid          100\n"), r.out);
  BOOST_TEST(contains(r.out, "version      0.1.0\n"), r.out);
  BOOST_TEST(contains(r.out, "only_b       7\n"), r.out);
  BOOST_TEST(contains(r.err, "member n3 (" + down.address() + "): cannot reach node"), r.err);

  auto j = ctl_run({"--node", a.address(), "--json", "--timeout", "1", "stats", "--all"});
  auto doc = nlohmann::json::parse(j.out);
  BOOST_TEST(doc["nodes_answered"] == 2);
  BOOST_TEST(doc["nodes_alive"] == 3);
  BOOST_TEST(doc["failed"][0]["name"] == "n3");
  BOOST_TEST(doc["stats"]["curr_items"] == 15);
}

// Members that accept and never answer are asked at once, so together they cost one
// --timeout (before: one each, here 4 s of 1 s timeouts in a row). Each is still named, in
// the members' order, and the others' stats are summed.
BOOST_AUTO_TEST_CASE(stats_all_asks_members_at_once) {
  fake_server a, b;
  std::vector<std::unique_ptr<raw_socket>> paused;
  for (int i = 0; i < 4; ++i)
    paused.push_back(std::make_unique<raw_socket>(true));
  for (auto* cfg : {&a.cfg, &b.cfg}) {
    set_members(*cfg, a.address(), b.address(), paused[0]->address());
    std::lock_guard<std::mutex> lock(cfg->mu);
    auto extra = cfg->members[2];
    for (int i = 1; i < 4; ++i) {
      extra.name = "p" + std::to_string(i);
      extra.rpc_address = paused[i]->address();
      cfg->members.push_back(extra);
    }
  }
  a.cfg.stats = {{"curr_items", "10"}};
  b.cfg.stats = {{"curr_items", "5"}};
  auto r = ctl_run({"--node", a.address(), "--timeout", "1", "stats", "--all"});
  BOOST_TEST(r.code == 0, r.err);
  BOOST_TEST(contains(r.out, "2 of 6 alive members answered"), r.out);
  BOOST_TEST(contains(r.out, "curr_items  15\n"), r.out);
  BOOST_TEST(r.seconds < 2.5, r.seconds << " s");
  auto errs = lines(r.err);
  BOOST_REQUIRE(errs.size() == 4);
  BOOST_TEST(contains(errs[0], "member n3 (" + paused[0]->address() + "): cannot reach node"),
             errs[0]);
  for (int i = 1; i < 4; ++i)
    BOOST_TEST(contains(errs[i], "member p" + std::to_string(i) + " (" + paused[i]->address() +
                                     "): cannot reach node"),
               errs[i]);
}

BOOST_AUTO_TEST_CASE(set_get_delete) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  auto s = ctl_run({"--node", a.address(), "set", "k", "hello world", "--ttl", "060", "--flags",
                    "010"});
  BOOST_TEST(s.code == 0, s.err);
  BOOST_TEST(s.out == "STORED\n");
  BOOST_TEST(a.cfg.store["k"] == "hello world");
  BOOST_TEST(a.cfg.flags["k"] == 10u);  // decimal, not octal 8
  BOOST_TEST(a.cfg.ttls["k"] == 60);

  auto g = ctl_run({"--node", a.address(), "get", "k"});
  BOOST_TEST(g.code == 0, g.err);
  BOOST_TEST(g.out == "hello world");  // raw: no newline added
  auto gj = ctl_run({"--node", a.address(), "--json", "get", "k"});
  BOOST_TEST(gj.code == 0, gj.err);
  auto got = nlohmann::json::parse(gj.out);
  BOOST_TEST(got["status"] == "HIT");
  BOOST_TEST(got["key"] == "k");
  BOOST_TEST(got["value"] == "hello world");
  BOOST_TEST(!got.contains("value_base64"));
  BOOST_TEST(got["size"] == 11);
  BOOST_TEST(got["flags"] == 10);
  BOOST_TEST(got["cas"] == 99);
  BOOST_TEST(got["exptime"] == 2000000000u);

  auto ns = ctl_run({"--node", a.address(), "set", "readonly", "x"});
  BOOST_TEST(ns.code == 1);
  BOOST_TEST(ns.out == "NOT_STORED\n");
  auto big = ctl_run({"--node", a.address(), "set", "toolarge", "xyz"});
  BOOST_TEST(big.code == 1);
  BOOST_TEST(big.out == "TOO_LARGE\n");
  BOOST_TEST(contains(big.err, "the value (3 bytes) is larger than the node's item size limit"),
             big.err);

  auto d = ctl_run({"--node", a.address(), "delete", "k"});
  BOOST_TEST(d.code == 0);
  BOOST_TEST(d.out == "DELETED\n");
  auto d2 = ctl_run({"--node", a.address(), "delete", "k"});
  BOOST_TEST(d2.code == 1);
  BOOST_TEST(d2.out == "NOT_FOUND\n");

  auto miss = ctl_run({"--node", a.address(), "get", "k"});
  BOOST_TEST(miss.code == 1);
  BOOST_TEST(miss.out.empty());
  BOOST_TEST(miss.err == "bifrostctl: get: k: not found\n", miss.err);
  auto miss_json = ctl_run({"--node", a.address(), "--json", "get", "k"});
  BOOST_TEST(miss_json.code == 1);
  BOOST_TEST(nlohmann::json::parse(miss_json.out)["status"] == "MISS", miss_json.out);

  auto sj = ctl_run({"--node", a.address(), "--json", "set", "j", "v"});
  auto doc = nlohmann::json::parse(sj.out);
  BOOST_TEST(doc["status"] == "STORED");
  BOOST_TEST(doc["cas"] == 99);
  auto nj = ctl_run({"--node", a.address(), "--json", "set", "readonly", "v"});
  BOOST_TEST(nj.code == 1);
  auto not_stored = nlohmann::json::parse(nj.out);
  BOOST_TEST(not_stored["status"] == "NOT_STORED");
  BOOST_TEST(!not_stored.contains("cas"), nj.out);  // (no CAS without a store)
}

// --value-file: any bytes; a small value inline (execute), a large one through upload's sink.
BOOST_AUTO_TEST_CASE(set_value_file_small_inline_large_uploaded) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  const std::string small("a\0b\r\nc", 7);
  auto small_file = temp_file(small);
  auto s = ctl_run({"--node", a.address(), "set", "s", "--value-file", small_file});
  BOOST_TEST(s.code == 0, s.err);
  BOOST_TEST(s.out == "STORED\n");
  BOOST_TEST((a.cfg.store["s"] == small));
  BOOST_TEST(a.cfg.uploads == 0);

  std::string big(1024 * 1024 + 3, '\0');
  std::mt19937_64 rng(7);
  for (auto& c : big)
    c = static_cast<char>(rng());
  auto big_file = temp_file(big);
  auto b = ctl_run({"--node", a.address(), "--json", "set", "big", "--value-file", big_file,
                    "--flags", "5", "--ttl", "30"});
  BOOST_TEST(b.code == 0, b.err);
  BOOST_TEST(nlohmann::json::parse(b.out)["cas"] == 98);
  BOOST_TEST(a.cfg.uploads == 1);
  BOOST_TEST(a.cfg.upload_chunks == 5u);  // 256 KiB chunks
  BOOST_TEST(!a.cfg.upload_value_inline);
  BOOST_TEST(a.cfg.store["big"].size() == big.size());
  BOOST_TEST((a.cfg.store["big"] == big));
  BOOST_TEST(a.cfg.flags["big"] == 5u);
  BOOST_TEST(a.cfg.ttls["big"] == 30);
  auto g = ctl_run({"--node", a.address(), "get", "big"});  // (streamed back)
  BOOST_TEST((g.out == big));
  // --json: bytes that are not UTF-8 come as base64, streamed ones too; UTF-8 ones as text.
  auto gj = ctl_run({"--node", a.address(), "--json", "get", "big"});
  BOOST_TEST(gj.code == 0, gj.err);
  auto got = nlohmann::json::parse(gj.out);
  BOOST_TEST(!got.contains("value"));
  BOOST_TEST(got["size"] == big.size());
  BOOST_TEST(got["flags"] == 5);
  std::string decoded;
  BOOST_TEST(bifrost::proto::base64_decode(got["value_base64"].get<std::string>(), decoded));
  BOOST_TEST((decoded == big));
  auto sj = ctl_run({"--node", a.address(), "--json", "get", "s"});
  BOOST_TEST((nlohmann::json::parse(sj.out)["value"].get<std::string>() == small), sj.out);

  // A value at exactly the inline limit still goes inline.
  auto edge_file = temp_file(std::string(inline_limit, 'e'));
  BOOST_TEST(ctl_run({"--node", a.address(), "set", "e", "--value-file", edge_file}).code == 0);
  BOOST_TEST(a.cfg.uploads == 1);
  for (auto* f : {&small_file, &big_file, &edge_file})
    std::remove(f->c_str());

  auto both = ctl_run({"--node", a.address(), "set", "k", "v", "--value-file", "/dev/null"});
  BOOST_TEST(both.code == 2);
  auto neither = ctl_run({"--node", a.address(), "set", "k"});
  BOOST_TEST(neither.code == 2);
  BOOST_TEST(contains(neither.err, "VALUE or --value-file"), neither.err);
  auto missing = ctl_run({"--node", a.address(), "set", "k", "--value-file", "/nonexistent/v"});
  BOOST_TEST(missing.code == 2);
  BOOST_TEST(contains(missing.err, "/nonexistent/v: No such file"), missing.err);
  auto dir = ctl_run({"--node", a.address(), "set", "k", "--value-file", "/tmp"});
  BOOST_TEST(dir.code == 2, dir.err);
  BOOST_TEST(a.cfg.executes == 5);  // (s, e and the gets: none of the refused ones reached it)
}

// Output that cannot be written (a full disk, a closed pipe) fails the command.
BOOST_AUTO_TEST_CASE(unwritable_output_exits_1) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  for (std::vector<std::string> cmd : {std::vector<std::string>{"--json", "members"},
                                       std::vector<std::string>{"status"},
                                       std::vector<std::string>{"ring", "--key", "k"},
                                       std::vector<std::string>{"delete", "nothing"}}) {
    cmd.insert(cmd.begin(), {"--node", a.address()});
    auto r = ctl_run(cmd, true);
    BOOST_TEST(r.code == 1, cmd.back() << ": " << r.err);
    BOOST_TEST(contains(r.err, "cannot write the output"), r.err);
  }
}

BOOST_AUTO_TEST_CASE(get_streams_a_5_mib_value_exactly) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  std::string big(5 * 1024 * 1024 + 17, '\0');
  std::mt19937_64 rng(1);
  for (auto& c : big)
    c = static_cast<char>(rng());
  a.cfg.store["big"] = big;
  auto g = ctl_run({"--node", a.address(), "get", "big"});
  BOOST_TEST(g.code == 0, g.err);
  BOOST_TEST(g.out.size() == big.size());
  BOOST_TEST((g.out == big));

  // A node that does not call finish(): the client stops at valueSize bytes.
  a.cfg.finish_streams = false;
  auto g2 = ctl_run({"--node", a.address(), "--timeout", "2", "get", "big"});
  BOOST_TEST(g2.code == 0, g2.err);
  BOOST_TEST((g2.out == big));
}

BOOST_AUTO_TEST_CASE(drain_and_leave_print_ok) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  auto d = ctl_run({"--node", a.address(), "drain"});
  BOOST_TEST(d.code == 0);
  BOOST_TEST(d.out == "ok\n");
  auto l = ctl_run({"--node", a.address(), "leave"});
  BOOST_TEST(l.code == 0);
  BOOST_TEST(l.out == "ok\n");
  BOOST_TEST(a.cfg.drains == 1);
  BOOST_TEST(a.cfg.leaves == 1);
  BOOST_TEST((a.cfg.held == std::vector<bool>{false, false}));  // (no --wait: nothing held)
}

// --wait asks the node to hold the connection open until its process ends (holdUntilExit),
// then asks `status` until the connection closes: it returns when the node is gone, however
// long past --timeout it lingers while it answers.
BOOST_AUTO_TEST_CASE(drain_and_leave_wait_returns_when_the_node_closes_the_connection) {
  for (const std::string json : {"", "--json"}) {
    for (const std::string command : {"drain", "leave"}) {
      BOOST_TEST_CONTEXT(command << " " << json) {
        auto a = std::make_unique<fake_server>();
        set_members(a->cfg, a->address(), "127.0.0.1:2", "127.0.0.1:3");
        std::vector<std::string> args{"--node", a->address(), "--timeout", "1", command,
                                      "--wait"};
        if (!json.empty())
          args.push_back(json);
        auto waiting = std::async(std::launch::async, [args] { return ctl_run(args); });
        BOOST_TEST((waiting.wait_for(2500ms) == std::future_status::timeout));
        {
          std::lock_guard<std::mutex> lock(a->cfg.mu);
          BOOST_TEST((a->cfg.held == std::vector<bool>{true}));
          BOOST_TEST(a->cfg.statuses >= 5);  // (every 200 ms)
        }
        a.reset();  // the node's process ends: its connections close
        BOOST_REQUIRE((waiting.wait_for(5s) == std::future_status::ready));
        auto r = waiting.get();
        BOOST_TEST(r.code == 0, r.err);
        BOOST_TEST(r.err == "");
        if (json.empty()) {
          BOOST_TEST(r.out.rfind("ok\nstopped after ", 0) == 0, r.out);
        } else {
          auto doc = nlohmann::json::parse(r.out);
          BOOST_TEST(doc["ok"] == true);
          BOOST_TEST(doc["stopped"] == true);
          BOOST_TEST(doc["seconds"].get<double>() >= 2.0);
        }
      }
    }
  }
}

// Runs bifrostctl with `args` on its own thread; the fake node it talks to goes away (its
// process ends: its connections close) after `stop_after`.
outcome run_until_stopped(std::unique_ptr<fake_server> a, std::vector<std::string> args,
                          std::chrono::milliseconds stop_after) {
  args.at(1) = a->address();  // (args: "--node", "", ...)
  auto waiting = std::async(std::launch::async, [args] { return ctl_run(args); });
  if (waiting.wait_for(stop_after) == std::future_status::ready)
    return waiting.get();  // (returned before the node went away)
  a.reset();
  BOOST_REQUIRE((waiting.wait_for(5s) == std::future_status::ready));
  return waiting.get();
}

// The connection ends while the node still runs (the network dropped it): the same process
// answering at the address is asked again and waited for; lost over and over, exit 1. When
// another process answers there by then (a supervisor restarted the node), it did stop.
BOOST_AUTO_TEST_CASE(drain_wait_tells_a_lost_connection_from_a_stop) {
  {  // lost every third status
    fake_server a;
    set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
    a.cfg.lose_after = 3;
    a.cfg.losses = -1;
    auto r = ctl_run({"--node", a.address(), "--timeout", "2", "drain", "--wait"});
    BOOST_TEST(r.code == 1);
    BOOST_TEST(r.out == "ok\n");
    BOOST_TEST(r.err.find("lost the connection to node " + a.address() + " 4 times during the "
                          "drain --wait, but it still runs (the same process answers): it "
                          "has not stopped") != std::string::npos,
               r.err);
    BOOST_TEST(a.cfg.drains == 4);  // (asked again on each new connection)
  }
  {  // lost once, then the node stops: the wait goes on, on a new connection
    auto a = std::make_unique<fake_server>();
    set_members(a->cfg, a->address(), "127.0.0.1:2", "127.0.0.1:3");
    a->cfg.lose_after = 3;
    a->cfg.losses = 1;
    const std::string address = a->address();
    auto waiting = std::async(std::launch::async, [address] {
      return ctl_run({"--node", address, "--timeout", "2", "drain", "--wait"});
    });
    BOOST_TEST((waiting.wait_for(2000ms) == std::future_status::timeout));
    {
      std::lock_guard<std::mutex> lock(a->cfg.mu);
      BOOST_TEST(a->cfg.drains == 2);
      BOOST_TEST((a->cfg.held == std::vector<bool>{true, true}));
    }
    a.reset();
    BOOST_REQUIRE((waiting.wait_for(5s) == std::future_status::ready));
    auto r = waiting.get();
    BOOST_TEST(r.code == 0, r.err);
    BOOST_TEST(r.out.rfind("ok\nstopped after ", 0) == 0, r.out);
  }
  {  // nothing tells: the node cannot be greeted again (a cut, its connections full)
    fake_server a;
    set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
    a.cfg.lose_after = 3;
    a.cfg.losses = 1;
    a.cfg.hello_drops_after_loss = true;
    auto r = ctl_run({"--node", a.address(), "--timeout", "1", "drain", "--wait"});
    BOOST_TEST(r.code == 2);
    BOOST_TEST(r.err.find("lost the connection to node " + a.address() + " during the drain "
                          "--wait and cannot tell whether it stopped") != std::string::npos,
               r.err);
    BOOST_TEST(r.seconds < 4.0);
  }
  {  // another process answers: stopped
    fake_server a;
    set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
    a.cfg.lose_after = 3;
    a.cfg.losses = 1;
    a.cfg.started_at_when_lost = 1700000005000;
    auto r = ctl_run({"--node", a.address(), "--timeout", "2", "leave", "--wait"});
    BOOST_TEST(r.code == 0, r.err);
    BOOST_TEST(r.out.rfind("ok\nstopped after ", 0) == 0, r.out);
    BOOST_TEST(a.cfg.leaves == 1);
  }
}

// A process that ends before the linger the node announced (stopsInMs) was cut short (a
// signal, a crash, kill -9): its keys' hand-over did not finish. Exit 1, said.
BOOST_AUTO_TEST_CASE(drain_wait_says_when_the_node_stopped_before_its_linger) {
  auto a = std::make_unique<fake_server>();
  set_members(a->cfg, a->address(), "127.0.0.1:2", "127.0.0.1:3");
  a->cfg.stops_in_ms = 30000;
  auto r = run_until_stopped(std::move(a), {"--node", "", "--json", "drain", "--wait"}, 1000ms);
  BOOST_TEST(r.code == 1);
  BOOST_TEST(r.err.find("stopped before the end of its linger (30 s): a signal, a crash or "
                        "kill -9 cut the hand-over of its keys short") != std::string::npos,
             r.err);
  auto doc = nlohmann::json::parse(r.out);
  BOOST_TEST(doc["ok"] == false);
  BOOST_TEST(doc["stopped"] == true);
  BOOST_TEST(doc["linger_seconds"].get<double>() == 30.0);
}

// A node that could not hold the connection (an older node, out of fds): stopped, said with a
// caveat. A --timeout shorter than the 200 ms poll still waits (polled at half of it).
BOOST_AUTO_TEST_CASE(drain_wait_on_a_node_that_does_not_hold_the_connection) {
  auto a = std::make_unique<fake_server>();
  set_members(a->cfg, a->address(), "127.0.0.1:2", "127.0.0.1:3");
  a->cfg.hold = false;
  a->cfg.stops_in_ms = 500;
  auto r = run_until_stopped(std::move(a), {"--node", "", "--timeout", "0.1", "leave", "--wait"},
                             1000ms);
  BOOST_TEST(r.code == 0, r.err);
  BOOST_TEST(r.out.rfind("ok\nstopped after ", 0) == 0, r.out);
  BOOST_TEST(r.err.find("closed the connection without holding it to its process's end") !=
               std::string::npos,
             r.err);
}

// A node that took the drain but then neither answers nor closes (paused, or hung in its
// stop) ends the wait after --timeout with exit 2, saying so.
BOOST_AUTO_TEST_CASE(drain_wait_ends_with_exit_2_when_the_node_stops_answering) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  a.cfg.status_hangs = true;
  auto r = ctl_run({"--node", a.address(), "--timeout", "1", "drain", "--wait"});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(r.out == "ok\n");
  BOOST_TEST(r.err.find("no answer to status within 1 s") != std::string::npos, r.err);
  BOOST_TEST(r.err.find("it took the drain but has not stopped") != std::string::npos, r.err);
  BOOST_TEST(r.seconds < 4.0);
}

BOOST_AUTO_TEST_CASE(schema_version_mismatch_exits_3_naming_both_versions) {
  fake_server a;
  set_members(a.cfg, a.address(), "127.0.0.1:2", "127.0.0.1:3");
  a.cfg.version = rpc::SCHEMA_VERSION + 1;
  const auto ours = "version " + std::to_string(rpc::SCHEMA_VERSION);
  const auto theirs = "version " + std::to_string(rpc::SCHEMA_VERSION + 1);

  auto answered = ctl_run({"--node", a.address(), "status"});  // the node answers its version
  BOOST_TEST(answered.code == 3);
  BOOST_TEST(answered.out.empty());
  BOOST_TEST(contains(answered.err, ours), answered.err);
  BOOST_TEST(contains(answered.err, theirs), answered.err);

  a.cfg.refuse_hello = true;  // the node throws
  auto refused = ctl_run({"--node", a.address(), "members"});
  BOOST_TEST(refused.code == 3);
  BOOST_TEST(contains(refused.err, ours), refused.err);
  BOOST_TEST(contains(refused.err, theirs), refused.err);
}

// A name that does not resolve: the system's words, not KJ's debug parameters.
BOOST_AUTO_TEST_CASE(a_name_that_does_not_resolve_is_said_in_words) {
  auto r = ctl_run({"--node", "nosuchhost.invalid:1", "--timeout", "3", "status"});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(contains(r.err, "bifrostctl: cannot reach node nosuchhost.invalid:1: "), r.err);
  BOOST_TEST(!contains(r.err, "params."), r.err);
  BOOST_TEST(!contains(r.err, "gai_strerror"), r.err);
}

BOOST_AUTO_TEST_CASE(unreachable_port_exits_2_promptly) {
  raw_socket bound(false);  // bound, not listening: connections are refused
  auto r = ctl_run({"--node", bound.address(), "--timeout", "2", "status"});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(r.seconds < 2.0);
  BOOST_TEST(contains(r.err, "bifrostctl: cannot reach node " + bound.address() + ": "), r.err);
}

// A port whose server speaks first in another protocol (HTTP here): said in words, not in
// Cap'n Proto's ("Message has too many segments"), with the hint about RPC ports.
BOOST_AUTO_TEST_CASE(a_port_that_speaks_another_protocol_is_named_so) {
  raw_socket http(true);
  std::thread server([&] {
    int c = ::accept(http.fd(), nullptr, nullptr);
    if (c < 0)
      return;
    const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    (void)!::write(c, reply, sizeof reply - 1);
    char buf[256];
    timeval tv{3, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (::read(c, buf, sizeof buf) > 0) {
    }
    ::close(c);
  });
  auto r = ctl_run({"--node", http.address(), "--timeout", "2", "status"});
  server.join();
  BOOST_TEST(r.code == 2);
  BOOST_TEST(contains(r.err, "it answered, but not in Cap'n Proto RPC"), r.err);
  BOOST_TEST(contains(r.err, "RPC port"), r.err);
  BOOST_TEST(!contains(r.err, "segment"), r.err);
}

BOOST_AUTO_TEST_CASE(timeout_bounds_a_silent_node) {
  raw_socket silent(true);  // accepts (in the backlog) and never answers
  auto r = ctl_run({"--node", silent.address(), "--timeout", "1", "members"});
  BOOST_TEST(r.code == 2);
  BOOST_TEST(r.seconds >= 0.9);
  BOOST_TEST(r.seconds < 2.0);
  BOOST_TEST(contains(r.err, "bifrostctl: cannot reach node " + silent.address() + ": "), r.err);
  BOOST_TEST(contains(r.err, "within 1 s"), r.err);
}

BOOST_AUTO_TEST_SUITE_END()
