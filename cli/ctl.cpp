// bifrostctl: argument parsing, the RPC session, one handler per command, table/JSON output.
// See cli/ctl.hpp for the contract.
#include "cli/ctl.hpp"

#include "cli/decimal.hpp"

#include "cluster/address.hpp"
#include "cluster/convert.hpp"
#include "cluster/tls.hpp"
#include "protocol/memcache.hpp"

#include <CLI/CLI.hpp>
#include <capnp/rpc-twoparty.h>
#include <capnp/message.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>

namespace bifrost::ctl {

using json = nlohmann::json;

namespace {

// -- small helpers ------------------------------------------------------------------------------

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

capnp::Data::Reader as_data(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

// Names, addresses and values come from the network: never let invalid UTF-8 throw.
void print_json(std::ostream& out, const json& j) {
  out << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
}

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", fraction * 100.0);
  return buf;
}

std::string describe(const kj::Exception& e) { return e.getDescription().cStr(); }

// KJ's description of a failed lookup or connect, said in words: KJ appends its debug
// parameters ("DNS lookup failed.; params.host = h; ...; gai_strerror(status) = Name or
// service not known"), of which the system's own message is the part worth reading.
std::string plain_words(const kj::Exception& e) {
  std::string d = describe(e);
  constexpr std::string_view dns = "DNS lookup failed.";
  constexpr std::string_view gai = "gai_strerror(status) = ";
  if (d.compare(0, dns.size(), dns) == 0)
    if (auto at = d.find(gai); at != std::string::npos)
      return "DNS lookup failed: " + d.substr(at + gai.size());
  return d;
}

std::string human_uptime(uint64_t s) {
  char buf[64];
  if (s >= 86400)
    std::snprintf(buf, sizeof buf, "%llud%02lluh%02llum", (unsigned long long)(s / 86400),
                  (unsigned long long)(s % 86400 / 3600), (unsigned long long)(s % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%lluh%02llum%02llus", (unsigned long long)(s / 3600),
                  (unsigned long long)(s % 3600 / 60), (unsigned long long)(s % 60));
  return buf;
}

json info_json(rpc::MemberInfo::Reader i) {
  return json{{"name", text(i.getName())},
              {"address", text(i.getClientAddress())},
              {"rpc_address", text(i.getRpcAddress())},
              {"state", state_name(i.getState())},
              {"incarnation", i.getIncarnation()},
              {"weight", i.getWeight()}};
}

json member_json(rpc::MemberStatus::Reader m) {
  json j = info_json(m.getInfo());
  j["ring_share"] = m.getRingShare();
  if (m.getSizeUnknown()) {  // (no answer in time, or dead: not an empty member)
    j["items"] = nullptr;
    j["bytes"] = nullptr;
  } else {
    j["items"] = m.getItems();
    j["bytes"] = m.getBytes();
  }
  return j;
}

// -- stat values: numeric ones are summed by `stats --all` -----------------------------------------

struct stat_value {
  enum class kind { uint, real, text } k = kind::text;
  uint64_t u = 0;
  double d = 0;
  std::string s;
};

stat_value classify(const std::string& s) {
  stat_value v;
  v.s = s;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  if (s.empty())
    return v;
  if (auto [end, ec] = std::from_chars(first, last, v.u); ec == std::errc() && end == last) {
    v.k = stat_value::kind::uint;
    return v;
  }
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (end == s.c_str() + s.size() && std::isfinite(d) && !std::isspace((unsigned char)s[0])) {
    v.k = stat_value::kind::real;
    v.d = d;
  }
  return v;
}

std::string format_real(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", d);
  std::string s = buf;
  while (s.size() > 1 && s.back() == '0')
    s.pop_back();
  if (s.back() == '.')
    s.pop_back();
  return s;
}

json stat_json(const stat_value& v) {
  switch (v.k) {
    case stat_value::kind::uint: return v.u;
    case stat_value::kind::real: return v.d;
    case stat_value::kind::text: break;
  }
  return v.s;
}

std::string stat_text(const stat_value& v) {
  switch (v.k) {
    case stat_value::kind::uint: return std::to_string(v.u);
    case stat_value::kind::real: return format_real(v.d);
    case stat_value::kind::text: break;
  }
  return v.s;
}

// Numeric, but meaningless as a cluster sum: `stats --all` shows the first node's value.
bool per_node_stat(const std::string& name) {
  static const std::set<std::string> names = {"pid", "uptime", "time", "pointer_size"};
  return names.count(name) != 0;
}

// One node's stats (NAME, VALUE), copied out of its RPC answer.
using stat_list = std::vector<std::pair<std::string, std::string>>;

stat_list copy_stats(capnp::List<rpc::Stat>::Reader stats) {
  stat_list out;
  out.reserve(stats.size());
  for (auto st : stats)
    out.emplace_back(text(st.getName()), text(st.getValue()));
  return out;
}

// Sums stats across nodes, in the first node's order (names first seen later are appended).
class stat_sum {
public:
  void add(const stat_list& stats) {
    ++nodes_;
    for (auto& [name, value] : stats) {
      auto v = classify(value);
      auto it = index_.find(name);
      if (it == index_.end()) {
        index_.emplace(name, entries_.size());
        entries_.push_back({name, v});
        continue;
      }
      auto& acc = entries_[it->second].second;
      if (per_node_stat(name) || acc.k == stat_value::kind::text)
        continue;
      if (v.k == stat_value::kind::text) {
        acc.k = stat_value::kind::text;  // mixed: keep the first node's text
        continue;
      }
      if (acc.k == stat_value::kind::uint && v.k == stat_value::kind::uint) {
        acc.u += v.u;
      } else {
        double a = acc.k == stat_value::kind::uint ? double(acc.u) : acc.d;
        acc.d = a + (v.k == stat_value::kind::uint ? double(v.u) : v.d);
        acc.k = stat_value::kind::real;
      }
    }
  }
  const std::vector<std::pair<std::string, stat_value>>& entries() const { return entries_; }

private:
  int nodes_ = 0;
  std::map<std::string, size_t> index_;
  std::vector<std::pair<std::string, stat_value>> entries_;
};

// -- ValueSink for `get`: chunks go straight to the output stream -------------------------------
//
// Chunks are written in arrival order: calls on one capability are delivered in order
// (E-order), so they are also in `index` order. The command ends when `valueSize` bytes have
// arrived or the node calls finish().

struct sink_state {
  std::ostream* out = nullptr;    // null once the command has returned
  session* s = nullptr;           // ditto
  uint64_t received = 0;
  bool finished = false;
  kj::Maybe<uint64_t> expected;   // set when execute's result says `streamed`
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> done;

  void check_done() {
    bool complete = finished;
    KJ_IF_MAYBE(e, expected) { complete = complete || received >= *e; }
    if (!complete)
      return;
    KJ_IF_MAYBE(f, done) { (*f)->fulfill(); }
    done = nullptr;
  }
};

class output_sink final : public rpc::ValueSink::Server {
public:
  explicit output_sink(std::shared_ptr<sink_state> state) : state_(std::move(state)) {}

protected:
  kj::Promise<void> write(WriteContext context) override {
    auto chunk = context.getParams().getChunk();
    if (state_->out)
      state_->out->write(reinterpret_cast<const char*>(chunk.begin()),
                         static_cast<std::streamsize>(chunk.size()));
    state_->received += chunk.size();
    if (state_->s)
      state_->s->note_progress();
    state_->check_done();
    return kj::READY_NOW;
  }

  kj::Promise<void> finish(FinishContext context) override {
    context.getResults().initResults(0);
    state_->finished = true;
    state_->check_done();
    return kj::READY_NOW;
  }

private:
  std::shared_ptr<sink_state> state_;
};

// -- commands ---------------------------------------------------------------------------------

struct context {
  session& s;
  rpc::Node::Client& node;
  const options& opts;
  std::ostream& out;
  std::ostream& err;
};

int cmd_status(context& c) {
  auto r = c.s.wait(c.node.statusRequest().send(), c.opts.node, "status");
  auto self = r.getSelf();
  auto info = self.getInfo();
  if (c.opts.json) {
    json j = member_json(self);
    j["version"] = text(r.getVersion());
    j["uptime"] = r.getUptime();
    j["cluster"] = text(r.getCluster());
    print_json(c.out, j);
    return exit_ok;
  }
  print_table(c.out, {
      {"name", text(info.getName())},
      {"rpc_address", text(info.getRpcAddress())},
      {"address", text(info.getClientAddress())},
      {"state", state_name(info.getState())},
      {"incarnation", std::to_string(info.getIncarnation())},
      {"weight", std::to_string(info.getWeight())},
      {"ring_share", percent(self.getRingShare()) + "%"},
      {"cluster", r.hasCluster() && r.getCluster().size() > 0 ? text(r.getCluster()) : "-"},
      {"items", std::to_string(self.getItems())},
      {"bytes", std::to_string(self.getBytes())},
      {"version", text(r.getVersion())},
      {"uptime", std::to_string(r.getUptime()) + " s (" + human_uptime(r.getUptime()) + ")"},
  });
  return exit_ok;
}

int cmd_members(context& c) {
  auto r = c.s.wait(c.node.membersRequest().send(), c.opts.node, "members");
  if (c.opts.json) {
    json list = json::array();
    for (auto m : r.getMembers())
      list.push_back(member_json(m));
    print_json(c.out, list);
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ADDRESS", "RPC_ADDRESS", "STATE", "INCARNATION", "SHARE%", "ITEMS", "BYTES"}};
  for (auto m : r.getMembers()) {
    auto i = m.getInfo();
    const bool unknown = m.getSizeUnknown();  // "-": it did not answer in time, or is dead
    rows.push_back({text(i.getName()), text(i.getClientAddress()), text(i.getRpcAddress()),
                    state_name(i.getState()), std::to_string(i.getIncarnation()),
                    percent(m.getRingShare()), unknown ? "-" : std::to_string(m.getItems()),
                    unknown ? "-" : std::to_string(m.getBytes())});
  }
  print_table(c.out, rows);
  return exit_ok;
}

// A key's owners as `ring --key --json` lists them: primary first, then the replicas.
json owners_json(capnp::List<rpc::MemberInfo>::Reader owners) {
  json list = json::array();
  for (auto o : owners) {
    json j = info_json(o);
    j["role"] = list.empty() ? "primary" : "replica";
    list.push_back(std::move(j));
  }
  return list;
}

// ring --key A --key B...: one lookup per key over the one connection; JSON: a list of what
// `ring --key` prints for one key; text: one row per key.
int ring_of_keys(context& c) {
  json list = json::array();
  std::vector<std::vector<std::string>> rows = {{"KEY", "EPOCH", "PRIMARY", "REPLICAS"}};
  for (const auto& key : c.opts.keys) {
    auto req = c.node.ringRequest();
    req.setKey(as_data(key));
    auto r = c.s.wait(req.send(), c.opts.node, "ring");
    std::string primary, replicas;
    for (auto o : r.getOwners()) {
      auto name = text(o.getName());
      if (primary.empty())
        primary = name;
      else
        replicas += (replicas.empty() ? "" : ",") + name;
    }
    list.push_back({{"key", key}, {"epoch", r.getEpoch()}, {"owners", owners_json(r.getOwners())}});
    rows.push_back({key, std::to_string(r.getEpoch()), primary.empty() ? "-" : primary,
                    replicas.empty() ? "-" : replicas});
  }
  if (c.opts.json)
    print_json(c.out, list);
  else
    print_table(c.out, rows);
  return exit_ok;
}

int cmd_ring(context& c) {
  if (!c.opts.has_key) {
    auto req = c.node.membersRequest();
    req.setWithoutSizes(true);  // (a member that does not answer would hold it up 0.5 s)
    auto r = c.s.wait(req.send(), c.opts.node, "members");
    if (c.opts.json) {
      json list = json::array();
      for (auto m : r.getMembers()) {
        auto i = m.getInfo();
        list.push_back({{"name", text(i.getName())},
                        {"address", text(i.getClientAddress())},
                        {"rpc_address", text(i.getRpcAddress())},
                        {"state", state_name(i.getState())},
                        {"ring_share", m.getRingShare()}});
      }
      print_json(c.out, list);
      return exit_ok;
    }
    std::vector<std::vector<std::string>> rows = {{"NAME", "ADDRESS", "STATE", "SHARE%"}};
    for (auto m : r.getMembers()) {
      auto i = m.getInfo();
      rows.push_back({text(i.getName()), text(i.getClientAddress()), state_name(i.getState()),
                      percent(m.getRingShare())});
    }
    print_table(c.out, rows);
    return exit_ok;
  }
  if (c.opts.keys.size() > 1)
    return ring_of_keys(c);
  auto req = c.node.ringRequest();
  req.setKey(as_data(c.opts.key));
  auto r = c.s.wait(req.send(), c.opts.node, "ring");
  if (c.opts.json) {
    print_json(c.out, {{"key", c.opts.key},
                       {"epoch", r.getEpoch()},
                       {"owners", owners_json(r.getOwners())}});
    return exit_ok;
  }
  c.out << "epoch " << r.getEpoch() << "\n";
  std::vector<std::vector<std::string>> rows = {{"ROLE", "NAME", "ADDRESS", "RPC_ADDRESS", "STATE"}};
  for (auto o : r.getOwners())
    rows.push_back({rows.size() == 1 ? "primary" : "replica", text(o.getName()),
                    text(o.getClientAddress()), text(o.getRpcAddress()), state_name(o.getState())});
  print_table(c.out, rows);
  return exit_ok;
}

void print_stats(context& c, const stat_sum& sum, json extra) {
  if (c.opts.json) {
    json stats = json::object();
    for (auto& [name, v] : sum.entries())
      stats[name] = stat_json(v);
    extra["stats"] = std::move(stats);
    print_json(c.out, extra);
    return;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "VALUE"}};
  for (auto& [name, v] : sum.entries())
    rows.push_back({name, stat_text(v)});
  print_table(c.out, rows);
}

// What one member answered `stats --all`: its stats, or why not.
struct member_answer {
  bool answered = false;
  stat_list stats;
  std::string error;
};

// The stats of the node `node` when given, else of a new connection to `address`, over `s`.
stat_list fetch_stats(session& s, const std::string& address, rpc::Node::Client* node) {
  auto client = node ? *node : s.connect(address, false);
  auto r = s.wait(client.statsRequest().send(), address, "stats");
  return copy_stats(r.getStats());
}

// Runs `fetch` (a stat_list), turning what it throws into the answer's error.
template <typename Fetch>
member_answer answer_of(Fetch&& fetch) noexcept {
  member_answer a;
  try {
    a.stats = fetch();
    a.answered = true;
  } catch (failure& f) {
    a.error = f.message;
  } catch (kj::Exception& e) {
    a.error = describe(e);
  } catch (std::exception& e) {
    a.error = e.what();
  }
  return a;
}

member_answer ask_stats(session& s, const std::string& address, rpc::Node::Client* node) {
  return answer_of([&] { return fetch_stats(s, address, node); });
}

// The same from a worker thread of `stats --all`: with a KJ loop and a session of its own.
member_answer ask_stats_on_own_loop(const options& opts, std::chrono::milliseconds timeout,
                                    const std::string& address) {
  return answer_of([&] {
    auto io = kj::setupAsyncIo();
    session s(io, timeout, opts.tls);
    return fetch_stats(s, address, nullptr);
  });
}

// At most this many members are asked at once by `stats --all` (a thread each, this one too).
constexpr size_t stats_all_workers = 16;

int cmd_stats(context& c) {
  if (!c.opts.all) {
    auto r = c.s.wait(c.node.statsRequest().send(), c.opts.node, "stats");
    stat_sum one;
    one.add(copy_stats(r.getStats()));
    print_stats(c, one, json{{"node", c.opts.node}});
    return exit_ok;
  }
  struct target { std::string name, rpc_address; };
  std::vector<target> targets;
  {
    auto req = c.node.membersRequest();
    req.setWithoutSizes(true);  // (only who is alive: no wait for one that does not answer)
    auto r = c.s.wait(req.send(), c.opts.node, "members");
    for (auto m : r.getMembers()) {
      auto i = m.getInfo();
      if (i.getState() == rpc::MemberState::ALIVE)
        targets.push_back({text(i.getName()), text(i.getRpcAddress())});
    }
  }
  // The node we are connected to is asked over the existing connection, on this thread; the
  // other members from worker threads (a connection, session and KJ loop each), so members
  // that accept and never answer cost one --timeout together, not one each. This thread
  // then takes members from the same queue (asking over its own session), so the command
  // works with no worker at all. An answer is written by the thread that took its member
  // and read after the joins.
  std::vector<member_answer> answers(targets.size());
  std::vector<size_t> queue;
  for (size_t i = 0; i < targets.size(); ++i)
    if (targets[i].rpc_address != c.opts.node)
      queue.push_back(i);
  std::atomic<size_t> next{0};
  const auto timeout = c.s.timeout();
  std::vector<std::thread> workers;
  KJ_DEFER(for (auto& t : workers) t.join());
  try {
    while (workers.size() < std::min(queue.size(), stats_all_workers - 1))
      workers.emplace_back([&] {
        for (size_t k; (k = next.fetch_add(1)) < queue.size();) {
          auto i = queue[k];
          answers[i] = ask_stats_on_own_loop(c.opts, timeout, targets[i].rpc_address);
        }
      });
  } catch (std::system_error&) {
    // (no more threads: those started and this one ask the rest)
  }
  for (size_t i = 0; i < targets.size(); ++i)
    if (targets[i].rpc_address == c.opts.node)
      answers[i] = ask_stats(c.s, c.opts.node, &c.node);
  for (size_t k; (k = next.fetch_add(1)) < queue.size();)
    answers[queue[k]] = ask_stats(c.s, targets[queue[k]].rpc_address, nullptr);
  for (auto& t : workers)
    t.join();
  workers.clear();

  stat_sum sum;
  json failed = json::array();
  int answered = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    auto& [name, address] = targets[i];
    if (answers[i].answered) {
      sum.add(answers[i].stats);
      ++answered;
      continue;
    }
    auto& error = answers[i].error;
    c.err << "bifrostctl: member " << name << " (" << address << "): " << error << "\n";
    failed.push_back({{"name", name}, {"rpc_address", address}, {"error", error}});
  }
  if (!c.opts.json)
    c.out << answered << " of " << targets.size() << " alive members answered\n";
  print_stats(c, sum, json{{"nodes_alive", targets.size()}, {"nodes_answered", answered},
                           {"failed", failed}});
  if (answered == 0) {
    c.err << "bifrostctl: no member answered\n";
    return exit_failed;
  }
  return exit_ok;
}

rpc::Result::Reader single_result(capnp::List<rpc::Result>::Reader results) {
  if (results.size() != 1)
    throw failure{exit_failed, "node answered " + std::to_string(results.size()) +
                                   " results for 1 op"};
  return results[0];
}

// A value in a JSON document: as text when it is UTF-8, else as base64 (`value_base64`).
void put_value(json& doc, const std::string& value) {
  try {
    (void)json(value).dump(-1, ' ', false, json::error_handler_t::strict);
    doc["value"] = value;
  } catch (const json::type_error&) {
    std::string b64;
    proto::base64_encode(value, b64);
    doc["value_base64"] = std::move(b64);
  }
}

int cmd_get(context& c) {
  auto state = std::make_shared<sink_state>();
  std::ostringstream json_value;  // --json: the value is collected, then printed in the document
  state->out = c.opts.json ? static_cast<std::ostream*>(&json_value) : &c.out;
  state->s = &c.s;
  // The sink may outlive this call (the node holds a reference): cut it off from our streams.
  KJ_DEFER(state->out = nullptr; state->s = nullptr; state->done = nullptr);

  auto req = c.node.executeRequest();
  auto op = req.initOps(1)[0];
  op.setKind(rpc::OpKind::GET);
  op.setKey(as_data(c.opts.key));
  op.setGetValue(true);
  op.setGetBump(true);
  req.setOrigin(rpc::Origin::CLIENT);
  req.setSink(kj::heap<output_sink>(state));
  auto r = c.s.wait(req.send(), c.opts.node, "get");
  auto res = single_result(r.getResults());
  switch (res.getStatus()) {
    case rpc::Status::HIT: break;
    case rpc::Status::MISS:
    case rpc::Status::NOT_FOUND:
      if (c.opts.json)
        print_json(c.out, {{"status", "MISS"}, {"key", c.opts.key}});
      c.err << "bifrostctl: get: " << c.opts.key << ": not found\n";
      return exit_failed;
    default: throw failure{exit_failed, std::string("get: ") + status_name(res.getStatus())};
  }
  if (!res.getStreamed()) {
    auto v = res.getValue();
    state->out->write(reinterpret_cast<const char*>(v.begin()),
                      static_cast<std::streamsize>(v.size()));
  } else {
    uint64_t size = res.getValueSize();
    state->expected = size;
    if (state->received < size && !state->finished) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      state->done = kj::mv(paf.fulfiller);
      c.s.wait(paf.promise.then([]() { return true; }), c.opts.node, "the value stream");
    }
    if (state->received != size)
      throw failure{exit_failed, "get: the value stream ended after " +
                                     std::to_string(state->received) + " of " +
                                     std::to_string(size) + " bytes"};
  }
  if (c.opts.json) {
    json doc{{"status", "HIT"}, {"key", c.opts.key}, {"flags", res.getFlags()},
             {"cas", res.getCas()}, {"exptime", res.getExptime()}};
    const std::string value = json_value.str();
    doc["size"] = value.size();
    put_value(doc, value);
    print_json(c.out, doc);
  }
  return exit_ok;  // (main() checks that the value reached the output)
}

// A value larger than what a node takes inline goes through Node.upload: the op without its
// value, then the value in chunks through the returned sink (each chunk counts as progress),
// then the sink's finish, which stores it and answers.
void fill_set(rpc::Op::Builder op, const options& opts, bool with_value) {
  op.setKind(rpc::OpKind::STORE);
  op.setMode(rpc::StoreMode::SET);
  op.setKey(as_data(opts.key));
  if (with_value)
    op.setValue(as_data(opts.value));
  op.setFlags(opts.flags);
  op.setTtl(opts.ttl);
}

kj::Promise<void> upload_chunks(rpc::ValueSink::Client sink, const std::string& value,
                                size_t offset, session& s) {
  if (offset >= value.size())
    return kj::READY_NOW;
  const size_t n = std::min(cluster::stream_chunk_size, value.size() - offset);
  auto req = sink.writeRequest();
  req.setIndex(0);
  req.setChunk(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data() + offset), n));
  return req.send().then([sink, &value, offset, n, &s]() mutable {
    s.note_progress();
    return upload_chunks(kj::mv(sink), value, offset + n, s);
  });
}

int cmd_set(context& c) {
  rpc::Result::Reader res;
  kj::Maybe<capnp::Response<rpc::Node::ExecuteResults>> executed;
  kj::Maybe<capnp::Response<rpc::ValueSink::FinishResults>> finished;
  if (c.opts.value.size() <= cluster::inline_value_limit) {
    auto req = c.node.executeRequest();
    fill_set(req.initOps(1)[0], c.opts, true);
    req.setOrigin(rpc::Origin::CLIENT);
    res = single_result(executed.emplace(c.s.wait(req.send(), c.opts.node, "set")).getResults());
  } else {
    auto req = c.node.uploadRequest();
    fill_set(req.initOps(1)[0], c.opts, false);
    req.setOrigin(rpc::Origin::CLIENT);
    auto sent = req.send();
    rpc::ValueSink::Client sink = sent.getSink();
    auto stored = upload_chunks(sink, c.opts.value, 0, c.s)
                    .then([sink]() mutable { return sink.finishRequest().send(); })
                    .attach(kj::mv(sent));
    res = single_result(finished.emplace(c.s.wait(kj::mv(stored), c.opts.node, "set")).getResults());
  }
  bool stored = res.getStatus() == rpc::Status::STORED;
  if (c.opts.json) {
    json doc{{"status", status_name(res.getStatus())}};
    if (stored)  // (a failed set has no CAS: README, `{status[, cas]}`)
      doc["cas"] = res.getCas();
    print_json(c.out, doc);
  } else {
    c.out << status_name(res.getStatus()) << "\n";
  }
  if (res.getStatus() == rpc::Status::TOO_LARGE)
    c.err << "bifrostctl: set: the value (" << c.opts.value.size()
          << " bytes) is larger than the node's item size limit (its -I)\n";
  return stored ? exit_ok : exit_failed;
}

int cmd_delete(context& c) {
  auto req = c.node.executeRequest();
  auto op = req.initOps(1)[0];
  op.setKind(rpc::OpKind::REMOVE);
  op.setKey(as_data(c.opts.key));
  req.setOrigin(rpc::Origin::CLIENT);
  auto r = c.s.wait(req.send(), c.opts.node, "delete");
  auto res = single_result(r.getResults());
  if (c.opts.json)
    print_json(c.out, {{"status", status_name(res.getStatus())}});
  else
    c.out << status_name(res.getStatus()) << "\n";
  return res.getStatus() == rpc::Status::DELETED ? exit_ok : exit_failed;
}

int print_ok(context& c) {
  if (c.opts.json)
    print_json(c.out, {{"ok", true}});
  else
    c.out << "ok\n";
  return exit_ok;
}

// Asks `status` every `every` until the connection closes; each answer counts as progress.
kj::Promise<void> until_closed(session& s, rpc::Node::Client node, kj::Duration every) {
  return node.statusRequest().send().then(
    [&s, node, every](capnp::Response<rpc::Node::StatusResults>&&) mutable {
      s.note_progress();
      return s.io().provider->getTimer().afterDelay(every).then(
        [&s, node = kj::mv(node), every]() mutable {
          return until_closed(s, kj::mv(node), every);
        });
    },
    [](kj::Exception&& e) -> kj::Promise<void> {
      if (e.getType() == kj::Exception::Type::DISCONNECTED)
        return kj::READY_NOW;  // (closed: the node has stopped, or the connection was lost)
      return kj::mv(e);
    });
}

// What a drain or leave answered.
struct stop_answer {
  bool held = false;       // the node holds the connection open to its process's end
  uint32_t stops_in_ms = 0;  // its linger from the answer on (0: unknown)
};

const char* stop_name(bool drain) { return drain ? "drain" : "leave"; }

stop_answer ask_stop(context& c, rpc::Node::Client& node, bool drain) {
  auto ask = [&](auto request) {
    request.setHoldUntilExit(c.opts.wait);
    auto r = c.s.wait(request.send(), c.opts.node, stop_name(drain));
    return stop_answer{r.getHeld(), r.getStopsInMs()};
  };
  return drain ? ask(node.drainRequest()) : ask(node.leaveRequest());
}

// After the connection closed during a --wait: connects again. Refused (nothing listens), or
// another process answering (a restart, another version), is a stop: false. The same process
// answering is a lost connection: true, and the drain or leave is asked again on the new one
// (unless `ask` is false).
// Anything else (a timeout, a connection dropped before hello: a cut, the node's 256
// connections) tells nothing: tried again every 200 ms until --timeout passes, then exit 2.
bool ask_again(context& c, rpc::Node::Client& node, bool drain, stop_answer& answer,
               bool ask) {
  const uint64_t was = c.s.started_at_ms(c.opts.node);
  const auto give_up = std::chrono::steady_clock::now() + c.s.timeout();
  for (;;) {
    std::string why;
    try {
      auto again = c.s.connect(c.opts.node, false);
      if (c.s.started_at_ms(c.opts.node) != was)
        return false;
      if (!ask)
        return true;
      answer = ask_stop(c, again, drain);  // (the node holds the new connection)
      node = kj::mv(again);
      return true;
    } catch (failure& f) {
      if (f.refused || f.code == exit_version_mismatch)
        return false;
      why = f.message;
    }
    if (std::chrono::steady_clock::now() >= give_up)
      throw failure{exit_unreachable, "lost the connection to node " + c.opts.node +
                                        " during the " + stop_name(drain) +
                                        " --wait and cannot tell whether it stopped: " + why};
    c.s.io().provider->getTimer().afterDelay(200 * kj::MILLISECONDS).wait(c.s.io().waitScope);
  }
}

// drain, leave. With --wait the node holds the connection open until its process ends
// (holdUntilExit) and the command returns then: "ok" at once, "stopped after S s" at the end
// (JSON: one object at the end). The wait lasts the node's linger: it answers `status`
// meanwhile, and one that answers nothing for --timeout without closing (paused) ends it
// (exit 2). A connection lost while the same process still answers at the address is asked
// again (up to 3 times, then exit 1); a process that ends before its linger is over was cut
// short (exit 1).
int stop_node(context& c, bool drain) {
  const char* what = stop_name(drain);
  rpc::Node::Client node = c.node;
  const auto sent = std::chrono::steady_clock::now();  // (the linger runs from a later moment)
  stop_answer answer = ask_stop(c, node, drain);
  if (!c.opts.wait)
    return print_ok(c);
  if (!c.opts.json)
    c.out << "ok" << std::endl;  // (flushed: the stop takes the warming window)
  const auto began = std::chrono::steady_clock::now();
  const uint32_t lingers_ms = answer.stops_in_ms;  // (the first answer's)
  // (polled at least twice per --timeout: an answer every poll is the progress it waits for)
  const auto every =
    std::min<int64_t>(200, std::max<int64_t>(1, c.s.timeout().count() / 2)) * kj::MILLISECONDS;
  for (int lost = 0;; ++lost) {
    try {
      c.s.wait(until_closed(c.s, node, every).then([] { return true; }), c.opts.node,
               "status");
    } catch (failure& f) {
      if (f.code == exit_unreachable)
        f.message += " (it took the " + std::string(what) + " but has not stopped: it neither "
                     "answers nor closes the connection)";
      throw;
    }
    const bool last = lost == 3;
    if (!ask_again(c, node, drain, answer, !last))
      break;
    if (last)
      throw failure{exit_failed, "lost the connection to node " + c.opts.node + " " +
                                   std::to_string(lost + 1) + " times during the " + what +
                                   " --wait, but it still runs (the same process answers): "
                                   "it has not stopped"};
  }
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t);
  };
  const auto took = since(began);
  // (a clean stop comes at least stopsInMs after the answer, which came after `sent`)
  const bool cut_short = lingers_ms > 0 && since(sent).count() + 10 < int64_t(lingers_ms);
  if (c.opts.json) {
    json doc{{"ok", !cut_short}, {"stopped", true}, {"held", answer.held},
             {"seconds", double(took.count()) / 1000.0}};
    if (cut_short)
      doc["linger_seconds"] = double(lingers_ms) / 1000.0;
    print_json(c.out, doc);
  } else {
    c.out << "stopped after " << format_seconds(took) << "\n";
  }
  if (cut_short) {
    c.err << "bifrostctl: node " << c.opts.node << " stopped before the end of its linger ("
          << format_seconds(std::chrono::milliseconds(lingers_ms)) << "): a signal, a crash "
          << "or kill -9 cut the hand-over of its keys short\n";
    return exit_failed;
  }
  if (!answer.held)
    c.err << "bifrostctl: node " << c.opts.node << " closed the connection without holding "
          << "it to its process's end (an older node, or out of file descriptors): the "
          << "process may take a moment more to exit\n";
  return exit_ok;
}

int cmd_drain(context& c) { return stop_node(c, true); }

int cmd_leave(context& c) { return stop_node(c, false); }

// One entry per command: a new command is an entry, a handler and a test.
struct command {
  const char* name;
  const char* help;
  int (*handler)(context&);
};

const command commands[] = {
    {"status", "this node: name, addresses, state, incarnation, ring share, cluster, items, "
               "bytes, version, uptime", cmd_status},
    {"members", "every member: NAME ADDRESS RPC_ADDRESS STATE INCARNATION SHARE% ITEMS BYTES "
                "(ITEMS and BYTES '-' when it did not answer in time)", cmd_members},
    {"ring", "the owners of --key (primary first) and the ring epoch (several --key: one row "
             "each); without --key every member's share", cmd_ring},
    {"stats", "the node's stats (NAME VALUE); --all: summed over every alive member", cmd_stats},
    {"get", "print the value of KEY, raw, on stdout (--json: with its flags, CAS and exptime; "
            "exit 1 on a miss)",
     cmd_get},
    {"set", "store VALUE (or --value-file's bytes) at KEY; prints STORED or the status",
     cmd_set},
    {"delete", "delete KEY; prints DELETED or NOT_FOUND", cmd_delete},
    {"drain", "leave, take no new clients, let the others warm its keys from it for the warming window, then stop", cmd_drain},
    {"leave", "leave the cluster, serve the warming window out (its keys warm from it), then stop", cmd_leave},
};

const char* const exit_status_help =
    "Exit status: 0 ok; 1 RPC error, miss, not stored / not found, no member answered;\n"
    "2 bad usage or node unreachable (lookup, connect, timeout); 3 schema version mismatch.\n";

// Keys as the memcached text protocol takes them (the only way most clients can read them
// back): 1..250 bytes, no spaces or control characters.
std::string check_key(const std::string& k) {
  if (k.empty() || k.size() > proto::max_key_length)
    return "KEY must be 1..250 bytes (got " + std::to_string(k.size()) + ")";
  if (!proto::valid_key(k))
    return "KEY must not contain spaces or control characters (the memcached text protocol "
           "could not address it)";
  return "";
}

// The whole of `path` ("-": standard input) into `value`: "" or what went wrong. Bounded by
// the largest item a node can hold (-I at most 1024m).
std::string read_value_file(const std::string& path, std::string& value) {
  constexpr size_t most = size_t(1) << 30;
  FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (!f)
    return path + ": " + std::strerror(errno);
  value.clear();
  char buf[64 * 1024];
  size_t n = 0;
  std::string problem;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    if (value.size() + n > most) {
      problem = path + ": larger than any node stores (1 GiB, the largest -I)";
      break;
    }
    value.append(buf, n);
  }
  if (problem.empty() && std::ferror(f))
    problem = path + ": cannot read: " + std::strerror(errno);
  if (f != stdin)
    std::fclose(f);
  return problem;
}

void build_app(CLI::App& app, options& opts) {
  app.description("bifrostctl: query and administer a Bifrost cluster through one node's RPC "
                  "port.");
  app.footer(exit_status_help);
  app.require_subcommand(1);
  app.set_version_flag("--version", "bifrostctl 0.1.0 (schema version " +
                                      std::to_string(rpc::SCHEMA_VERSION) + ")");
  app.fallthrough();  // global flags may also follow the command
  app.add_option("--node", opts.node, "HOST:PORT of a node's RPC listener")
      ->required()
      ->check([](const std::string& a) -> std::string {
        std::string t = a;
        return cluster::check_host_port(t);
      });
  app.add_flag("--json", opts.json, "machine-readable output");
  app.add_option("--tls-cert", opts.tls.cert_file,
                 "mutual TLS (nodes started with --rpc-tls-*): this client's certificate (PEM)");
  app.add_option("--tls-key", opts.tls.key_file, "mutual TLS: this client's private key (PEM)");
  app.add_option("--tls-ca", opts.tls.ca_file, "mutual TLS: the cluster's CA (PEM)");
  app.add_option("--tls-name", opts.tls.peer_name,
                 "mutual TLS: the DNS name the nodes' certificates carry (default: the host "
                 "of --node)");
  app.add_option("--timeout", opts.timeout_s,
                 "seconds to wait for the node (per step, without progress)")
      ->check(
        [](const std::string& text) -> std::string {
          double v = 0;
          // (CLI::Range lets NaN through: every comparison with it is false)
          if (!CLI::detail::lexical_cast(text, v) || !(v >= 0.001 && v <= 86400.0))
            return "'" + text + "' is not a number of seconds 0.001..86400";
          return "";
        },
        "0.001..86400")
      ->capture_default_str();
  for (auto& cmd : commands) {
    auto* sub = app.add_subcommand(cmd.name, cmd.help);
    std::string name = cmd.name;
    if (name == "ring") {
      sub->add_option("--key", opts.keys,
                      "the key whose owners to show (repeatable: one row or object per key)")
          ->check(check_key);
    } else if (name == "stats") {
      sub->add_flag("--all", opts.all, "sum over every alive member");
    } else if (name == "drain" || name == "leave") {
      sub->add_flag("--wait", opts.wait,
                    "return once the node has stopped (its process ended: the warming window, "
                    "30 s by default, then its clients' drain); exit 1 if it ended before its "
                    "linger was over, 2 if it stops answering for --timeout before");
    } else if (name == "get" || name == "delete") {
      sub->add_option("key", opts.key, "the key")->required()->check(check_key);
    } else if (name == "set") {
      sub->add_option("key", opts.key, "the key")->required()->check(check_key);
      auto* value = sub->add_option("value", opts.value, "the value");
      sub->add_option("--value-file", opts.value_file,
                      "store this file's bytes ('-': standard input) instead of VALUE: any "
                      "bytes, any size the node takes (-I)")
          ->excludes(value);
      sub->add_option("--ttl", opts.ttl, "memcached exptime: 0 never, seconds, or unix time")
          ->transform(bifrost::cli::decimal())
          ->check(CLI::Range(int64_t(INT32_MIN), int64_t(INT32_MAX)))  // memcached's range
          ->capture_default_str();
      sub->add_option("--flags", opts.flags, "client flags (uint32)")
          ->transform(bifrost::cli::decimal())
          ->check(CLI::Range(uint64_t(0), uint64_t(UINT32_MAX)))
          ->capture_default_str();
    }
  }
}

} // namespace

// -- public -----------------------------------------------------------------------------------

std::string format_seconds(std::chrono::milliseconds d) {
  return format_real(double(d.count()) / 1000.0) + " s";
}

const char* state_name(rpc::MemberState s) {
  switch (s) {
    case rpc::MemberState::ALIVE: return "alive";
    case rpc::MemberState::SUSPECT: return "suspect";
    case rpc::MemberState::DEAD: return "dead";
    case rpc::MemberState::LEFT: return "left";
  }
  return "unknown";
}

const char* status_name(rpc::Status s) {
  switch (s) {
    case rpc::Status::HIT: return "HIT";
    case rpc::Status::MISS: return "MISS";
    case rpc::Status::STORED: return "STORED";
    case rpc::Status::NOT_STORED: return "NOT_STORED";
    case rpc::Status::EXISTS: return "EXISTS";
    case rpc::Status::NOT_FOUND: return "NOT_FOUND";
    case rpc::Status::DELETED: return "DELETED";
    case rpc::Status::TOO_LARGE: return "TOO_LARGE";
    case rpc::Status::NO_MEMORY: return "NO_MEMORY";
    case rpc::Status::NON_NUMERIC: return "NON_NUMERIC";
    case rpc::Status::OK: return "OK";
    case rpc::Status::UNAVAILABLE: return "UNAVAILABLE";
  }
  return "UNKNOWN";
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i)
        width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line.append(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string usage() {
  options opts;
  CLI::App app{"", "bifrostctl"};
  build_app(app, opts);
  return app.help();
}

parse_result parse_args(int argc, const char* const* argv, options& opts, std::ostream& out,
                        std::ostream& err) {
  CLI::App app{"", "bifrostctl"};
  build_app(app, opts);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      app.exit(e, out, err);
      return {false, exit_ok};
    }
    std::string what = e.what();
    auto command_list = [&] {
      std::string l;
      for (auto& cmd : commands)
        l += std::string(" ") + cmd.name;
      return l;
    };
    // (CLI11 takes an unknown command for a stray argument and asks for a subcommand)
    if (app.get_subcommands().empty() && !app.remaining().empty() &&
        app.remaining().front().rfind("-", 0) != 0)
      what = "unknown command '" + app.remaining().front() + "'; the commands are" +
             command_list();
    else if (app.get_subcommands().empty() && app.remaining().empty() &&
             dynamic_cast<const CLI::RequiredError*>(&e) != nullptr)
      what = "no command given; the commands are" + command_list();
    err << "bifrostctl: " << what << "\n";
    err << "Run with --help for more information.\n";
    return {false, exit_unreachable};
  }
  auto subs = app.get_subcommands();
  opts.command = subs.front()->get_name();
  if (opts.command == "set") {
    if (subs.front()->count("--value-file") > 0 && opts.value_file.empty()) {
      err << "bifrostctl: --value-file: empty path (give a file, or - for stdin)\n";
      return {false, exit_unreachable};
    }
    if (opts.value_file.empty() && subs.front()->count("value") == 0) {
      err << "bifrostctl: set needs a VALUE or --value-file\n";
      return {false, exit_unreachable};
    }
    if (!opts.value_file.empty()) {
      if (auto problem = read_value_file(opts.value_file, opts.value); !problem.empty()) {
        err << "bifrostctl: --value-file: " << problem << "\n";
        return {false, exit_unreachable};
      }
    }
  }
  if (opts.command == "ring" && !opts.keys.empty())
    opts.key = opts.keys.front();
  opts.has_key = opts.command != "ring" || !opts.keys.empty();
  return {true, exit_ok};
}

// -- session ----------------------------------------------------------------------------------

// One TCP connection and its two-party RPC system. Members are destroyed in reverse order:
// the RPC system before the network before the stream.
struct session::connection {
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> system;

  explicit connection(kj::Own<kj::AsyncIoStream> s)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT, cluster::rpc_reader_options()),
        system(capnp::makeRpcClient(network)) {}

  rpc::Node::Client bootstrap() {
    capnp::MallocMessageBuilder message(16);
    auto vat = message.initRoot<capnp::rpc::twoparty::VatId>();
    vat.setSide(capnp::rpc::twoparty::Side::SERVER);
    return system.bootstrap(vat).castAs<rpc::Node>();
  }
};

session::session(kj::AsyncIoContext& io, std::chrono::milliseconds timeout,
                 const cluster::tls_options& tls)
    : io_(io), timeout_(std::max(timeout, std::chrono::milliseconds(1))) {
  if (tls.enabled()) {
    std::string error;
    tls_ = cluster::tls_context::load(tls, nullptr, error);
    if (!tls_)
      throw failure{exit_unreachable, error};
  }
}

session::~session() = default;

kj::Promise<void> session::watchdog(uint64_t seen) {
  return io_.provider->getTimer()
      .afterDelay(timeout_.count() * kj::MILLISECONDS)
      .then([this, seen]() -> kj::Promise<void> {
        if (progress_ != seen)
          return watchdog(progress_);
        return kj::READY_NOW;
      });
}

rpc::Node::Client session::connect(const std::string& address, bool hint) {
  std::string dial = address;  // (its port in plain decimal: KJ would read "0123" in octal)
  if (auto problem = cluster::check_host_port(dial); !problem.empty())
    throw failure{exit_unreachable, "cannot reach node " + address + ": " + problem};
  kj::Own<kj::AsyncIoStream> stream;
  try {
    auto addr = wait(io_.provider->getNetwork().parseAddress(dial), address,
                     "the address lookup");
    stream = wait(addr->connect(), address, "connect");
    if (tls_)
      stream = wait(tls_->wrap_client(kj::mv(stream), address), address, "the TLS handshake");
  } catch (failure& f) {  // (wait's: a timeout, or a DISCONNECTED exception in KJ's words)
    f.refused = f.message.find(std::strerror(ECONNREFUSED)) != std::string::npos;
    throw;
  } catch (kj::Exception& e) {  // (not DISCONNECTED, so never a refusal: KJ's type for it)
    throw failure{exit_unreachable, "cannot reach node " + address + ": " + plain_words(e)};
  }
  auto conn = kj::heap<connection>(kj::mv(stream));
  auto node = conn->bootstrap();
  connections_.push_back(kj::mv(conn));

  auto req = node.helloRequest();
  req.setVersion(rpc::SCHEMA_VERSION);
  req.initFrom().setName("bifrostctl");
  const std::string ours = std::to_string(rpc::SCHEMA_VERSION);
  try {
    auto r = wait(req.send(), address, "hello");
    if (r.getVersion() != rpc::SCHEMA_VERSION)
      throw failure{exit_version_mismatch,
                    "schema version mismatch: bifrostctl speaks version " + ours + ", node " +
                        address + " speaks version " + std::to_string(r.getVersion())};
    started_at_[address] = r.getStartedAtMs();
  } catch (failure& f) {
    // Another protocol's bytes, read as a Cap'n Proto segment table (an HTTP or memcached
    // port that speaks first): Cap'n Proto's own words ("too many segments") say nothing.
    if (f.code == exit_unreachable && cluster::answered_another_protocol(f.message))
      f.message = "cannot reach node " + address + ": it answered, but not in Cap'n Proto RPC";
    // Connected, then dropped before hello's answer: what a TLS node does to a plain client.
    if (hint && !tls_ && f.code == exit_unreachable)
      f.message += " (is " + address + " a node's RPC port? The RPC port is the memcached port "
                   "+ 1000 unless --rpc-port says otherwise; and a node started with "
                   "--rpc-tls-* drops clients without a certificate: pass --tls-cert, --tls-key "
                   "and --tls-ca)";
    throw;
  } catch (kj::Exception& e) {
    // hello's only documented refusal is a version mismatch, described with both versions.
    auto d = describe(e);
    if (e.getType() == kj::Exception::Type::FAILED && d.find("version") != std::string::npos)
      throw failure{exit_version_mismatch, "schema version mismatch: bifrostctl speaks version " +
                                               ours + ", node " + address +
                                               " refused hello: " + d};
    throw failure{exit_failed, "hello to " + address + " failed: " + d};
  }
  return node;
}

// -- entry points -----------------------------------------------------------------------------

int run_command(session& s, rpc::Node::Client node, const options& opts, std::ostream& out,
                std::ostream& err) {
  context c{s, node, opts, out, err};
  for (auto& cmd : commands) {
    if (opts.command != cmd.name)
      continue;
    try {
      return cmd.handler(c);
    } catch (failure& f) {
      err << "bifrostctl: " << f.message << "\n";
      return f.code;
    } catch (kj::Exception& e) {
      err << "bifrostctl: " << opts.command << ": " << describe(e) << "\n";
      return exit_failed;
    }
  }
  err << "bifrostctl: unknown command '" << opts.command << "'\n";
  return exit_unreachable;
}

int run(kj::AsyncIoContext& io, const options& opts, std::ostream& out, std::ostream& err) {
  std::unique_ptr<session> owned;
  try {
    owned = std::make_unique<session>(
      io, std::chrono::milliseconds(std::llround(opts.timeout_s * 1000.0)), opts.tls);
  } catch (failure& f) {
    err << "bifrostctl: " << f.message << "\n";
    return f.code;
  }
  auto& s = *owned;
  try {
    auto node = s.connect(opts.node);
    return run_command(s, node, opts, out, err);
  } catch (failure& f) {
    err << "bifrostctl: " << f.message << "\n";
    return f.code;
  } catch (kj::Exception& e) {
    err << "bifrostctl: " << describe(e) << "\n";
    return exit_failed;
  }
}

int main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  options opts;
  auto parsed = parse_args(argc, argv, opts, out, err);
  if (!parsed.run)
    return parsed.exit_code;
  int code = exit_failed;
  try {
    auto io = kj::setupAsyncIo();
    code = run(io, opts, out, err);
  } catch (kj::Exception& e) {
    err << "bifrostctl: " << describe(e) << "\n";
  }
  // What was printed must have reached the output (a full disk, a closed pipe): a script
  // that saves `members --json` must not get a cut file and success.
  if (!out.flush()) {
    err << "bifrostctl: cannot write the output\n";
    code = code == exit_ok ? exit_failed : code;
  }
  return code;
}

} // namespace bifrost::ctl
