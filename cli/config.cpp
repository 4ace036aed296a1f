#include "cli/config.hpp"

#include "cli/decimal.hpp"

#include "cluster/address.hpp"
#include "cluster/membership.hpp"
#include "protocol/memcache.hpp"
#include "storage/shard.hpp"

#include <CLI/CLI.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>

namespace bifrost::cli {

namespace {

constexpr uint64_t min_item_size = 1024;
constexpr uint64_t max_item_size_limit = 1024ull << 20;

// A node name travels in membership gossip and in the data link's hello line
// (`bifrost-link <version> <name>`), which splits on whitespace.
constexpr const char* k_node_name_rule =
  "must be 1..255 bytes of printable characters without spaces";
bool valid_node_name(const std::string& n) {
  return n.size() <= cluster::k_max_member_name && proto::printable_token(n);
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

constexpr int64_t max_memory_mb = int64_t(1) << 20;  // -m / memory_mb: 1 TiB

// Validation shared by flags and file; returns "" or the problem.
std::string check_port(int64_t v) {
  return v < 0 || v > 65535 ? "must be a port number 0..65535" : "";
}

struct field_error {
  std::string field;
  std::string problem;
};

// Two-valued cluster switches: YAML key, flag, the word that sets the field true, the word that
// sets it false, the field, help.
struct choice_setting {
  const char* yaml;
  const char* flag;
  const char* yes;
  const char* no;
  bool actors::node_config::*field;
  const char* help;
};
const choice_setting choice_settings[] = {
  {"rpc_thread", "--rpc-thread", "loop", "own", &actors::node_config::rpc_on_loop,
   "where the cluster RPC (KJ event loop) runs: own (a thread of its own, default) or loop (on "
   "the first I/O loop's thread)"},
  {"replication_ack", "--replication-ack", "all", "primary", &actors::node_config::wait_replicas,
   "when a write answers: primary (after the primary stored it, default) or all (after every "
   "live owner stored it)"},
  {"cluster_links", "--cluster-links", "on", "off", &actors::node_config::cluster_links,
   "forwarded ops travel on data links to the members' memcached ports (on, default) or only "
   "by RPC (off); never with --rpc-tls-*"},
  {"rereplicate", "--rereplicate", "on", "off", &actors::node_config::rereplicate,
   "with --replicas 2 or more: after a member dies, leaves, joins or comes back, keys are "
   "copied to their new owners so that each keeps R copies (on, default), or new owners only "
   "warm keys when they are read (off)"},
};

// Cluster timings: YAML key, flag, the field, its bounds, help.
struct timing_setting {
  const char* yaml;
  const char* flag;
  int64_t actors::node_config::cluster_timings::*field;
  int64_t lo, hi;
  const char* help;
};
using timings = actors::node_config::cluster_timings;
const timing_setting timing_settings[] = {
  {"swim_probe_interval_ms", "--swim-probe-interval", &timings::probe_interval_ms, 10, 60000,
   "failure detection: ms between probes (default 200)"},
  {"swim_ping_timeout_ms", "--swim-ping-timeout", &timings::ping_timeout_ms, 1, 60000,
   "ms a direct ping may stay unanswered before indirect probes (default 80)"},
  {"swim_indirect_timeout_ms", "--swim-indirect-timeout", &timings::indirect_timeout_ms, 1, 60000,
   "ms for an indirect probe's ack before suspicion (default 80)"},
  {"swim_indirect_probes", "--swim-indirect-probes", &timings::indirect_probes, 0, 16,
   "members asked to probe indirectly, 0..16 (default 3)"},
  {"swim_suspicion_timeout_ms", "--swim-suspicion-timeout", &timings::suspicion_timeout_ms, 10,
   600000, "ms a suspect has to refute before it is declared dead (default 800)"},
  {"rpc_timeout_ms", "--rpc-timeout", &timings::rpc_timeout_ms, 10, 600000,
   "ms an RPC to a peer may make no progress before it fails (default 2000)"},
  {"warm_window_ms", "--warm-window", &timings::warm_window_ms, 0, 86400000,
   "ms after a ring change during which a miss asks the owners before it and a write deletes "
   "their older copies; then a node drops the keys it no longer owns (default 30000)"},
  {"read_check_window_ms", "--read-check-window", &timings::read_check_window_ms, 0, 600000,
   "ms after a ring change during which a read that finds a moved key at its new owner also "
   "reads it at the owner before, and the later write (by CAS) answers; 0 = off (default 2000)"},
  {"swim_reconnect_interval_ms", "--swim-reconnect-interval", &timings::reconnect_interval_ms,
   50, 600000,
   "ms between pushes of this node's state to a random dead member: how soon a healed "
   "partition, or a member that missed its own death, is found (default 1000)"},
  {"forget_after_ms", "--forget-after", &timings::forget_after_ms, 0, 30ll * 86400000,
   "ms a member stays dead or left before every node forgets it (its record and peer actor "
   "go, its ring points at the next change; its name stays in a bounded graveyard); 0 = never "
   "(default 86400000, a day)"},
};

// The probe period must leave room for a direct and an indirect round (SWIM's protocol period).
std::string check_timings(const timings& t) {
  cluster::membership_config d;
  auto eff = [](int64_t v, uint32_t dflt) { return v >= 0 ? v : static_cast<int64_t>(dflt); };
  if (eff(t.probe_interval_ms, d.probe_interval_ms) <
      eff(t.ping_timeout_ms, d.ping_timeout_ms) + eff(t.indirect_timeout_ms, d.indirect_timeout_ms))
    return "must be at least the ping timeout plus the indirect timeout";
  return "";
}

// The YAML fields load_yaml_text() reads besides each_cluster_setting()'s (below), each with
// its flag (long form), for unknown_field_hint(). test_config checks that every one is a
// field it reads.
struct plain_field {
  const char* yaml;
  const char* flag;
};
const plain_field plain_fields[] = {
  {"listen", "--listen"}, {"port", "--port"}, {"threads", "--threads"},
  {"scheduler_threads", "--scheduler-threads"}, {"shards", "--shards"},
  {"shard_placement", "--shard-placement"}, {"memory_mb", "--memory-limit"},
  {"max_connections", "--conn-limit"}, {"max_item_size", "--max-item-size"},
  {"sendfile_threshold", "--sendfile-threshold"}, {"data_dir", "--data-dir"},
  {"prefix_delimiter", "--prefix-delimiter"}, {"verbosity", "--verbose"}, {"rpc", "--no-rpc"},
};

// A flag or field name as a YAML key: lower case, '_' for '-', no leading dashes.
std::string as_yaml_key(std::string_view s) {
  s.remove_prefix(std::min(s.find_first_not_of('-'), s.size()));
  std::string r = lower(s);
  std::replace(r.begin(), r.end(), '-', '_');
  return r;
}

// Edits (insert, delete, replace, swap two neighbours) from a to b.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i)
    d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j)
    d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// A comma list of seeds ("a:1, b:2"; blank items skipped) into `out`, each checked
// (check_host_port): "" or the first problem.
std::string split_seeds(const std::string& text, std::vector<std::string>& out) {
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" \t") == std::string::npos)
      continue;
    if (auto problem = cluster::check_host_port(item); !problem.empty())
      return problem;
    out.push_back(std::move(item));
  }
  return "";
}

// Calls note(whether `c` differs from the default, flag, YAML field) for every cluster
// setting (RPC, membership, replication, TLS, timings).
template <class F>
void each_cluster_setting(const actors::node_config& c, F note) {
  const actors::node_config d;
  note(c.rpc_port >= 0, "--rpc-port", "rpc_port");
  note(!c.rpc_listen.empty(), "--rpc-listen", "rpc_listen");
  note(!c.rpc_advertise.empty(), "--rpc-advertise", "rpc_advertise");
  note(!c.node_name.empty(), "--node-name", "node_name");
  note(!c.join.empty(), "--join", "join");
  note(c.replicas != d.replicas, "--replicas", "replicas");
  note(c.wait_replicas != d.wait_replicas, "--replication-ack", "replication_ack");
  note(c.rpc_on_loop != d.rpc_on_loop, "--rpc-thread", "rpc_thread");
  note(c.cluster_links != d.cluster_links, "--cluster-links", "cluster_links");
  note(c.rereplicate != d.rereplicate, "--rereplicate", "rereplicate");
  note(!c.rpc_tls.cert_file.empty(), "--rpc-tls-cert", "rpc_tls_cert");
  note(!c.rpc_tls.key_file.empty(), "--rpc-tls-key", "rpc_tls_key");
  note(!c.rpc_tls.ca_file.empty(), "--rpc-tls-ca", "rpc_tls_ca");
  note(!c.rpc_tls.peer_name.empty(), "--rpc-tls-name", "rpc_tls_name");
  for (auto& t : timing_settings)
    note(c.timings.*(t.field) >= 0, t.flag, t.yaml);
}
} // namespace

std::vector<std::pair<const char*, const char*>> cluster_settings_of(
  const actors::node_config& c) {
  std::vector<std::pair<const char*, const char*>> out;
  each_cluster_setting(c, [&](bool given, const char* flag, const char* yaml) {
    if (given)
      out.emplace_back(flag, yaml);
  });
  return out;
}

namespace {
// Every YAML field with its flag (long form): (yaml, flag).
std::vector<std::pair<std::string, std::string>> fields_and_flags() {
  std::vector<std::pair<std::string, std::string>> fields;
  for (const auto& f : plain_fields)
    fields.emplace_back(f.yaml, f.flag);
  each_cluster_setting(actors::node_config{}, [&](bool, const char* flag, const char* yaml) {
    fields.emplace_back(yaml, flag);
  });
  return fields;
}
}  // namespace

std::string unknown_flag_hint(const std::string& flag) {
  auto yaml = unknown_field_hint(flag);
  for (const auto& [y, f] : fields_and_flags())
    if (y == yaml)
      return f;
  return "";
}

std::vector<std::string> yaml_fields() {
  std::vector<std::string> out;
  for (auto& f : fields_and_flags())
    out.push_back(f.first);
  return out;
}

std::string unknown_field_hint(const std::string& key) {
  const auto fields = fields_and_flags();
  const std::string k = as_yaml_key(key);
  if (k.empty() || k.size() > 64)
    return "";
  // The flag's name (`memory-limit`, `--conn-limit`), or the field in other case or with '-'.
  for (const auto& [yaml, flag] : fields)
    if (k == as_yaml_key(flag) || k == yaml)
      return yaml;
  // A few letters off, or a field with a word more or less: `memory` for `memory_mb`,
  // `port_number` for `port`, `name` for `node_name`.
  auto word_more = [](std::string_view longer, std::string_view w) {
    return w.size() >= 4 && longer.size() > w.size() + 1 &&
           ((longer.substr(0, w.size()) == w && longer[w.size()] == '_') ||
            (longer.substr(longer.size() - w.size()) == w &&
             longer[longer.size() - w.size() - 1] == '_'));
  };
  std::string best;
  size_t best_d = std::max<size_t>(1, k.size() / 3) + 1;
  for (const auto& [yaml, flag] : fields) {
    const std::string_view y(yaml);
    size_t d = std::min(edit_distance(k, y), edit_distance(k, as_yaml_key(flag)));
    if (word_more(y, k) || word_more(k, y))
      d = std::min<size_t>(d, 1);
    if (d < best_d) {
      best = yaml;
      best_d = d;
    }
  }
  return best;
}

std::optional<uint64_t> parse_size(std::string_view s) {
  if (s.empty())
    return std::nullopt;
  auto t = lower(s);
  if (t.back() == 'b')
    t.pop_back();
  uint64_t mult = 1;
  if (!t.empty()) {
    switch (t.back()) {
      case 'k': mult = 1ull << 10; t.pop_back(); break;
      case 'm': mult = 1ull << 20; t.pop_back(); break;
      case 'g': mult = 1ull << 30; t.pop_back(); break;
      default: break;
    }
  }
  if (t.empty() || t.size() > 19)
    return std::nullopt;
  uint64_t v = 0;
  for (char c : t) {
    if (c < '0' || c > '9')
      return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > std::numeric_limits<uint64_t>::max() / mult)
    return std::nullopt;
  return v * mult;
}

// -D: one byte a key can hold (printable, no space), as memcached's prefix_delimiter.
constexpr const char* delimiter_problem = "must be one printable character, not a space";
bool delimiter_ok(const std::string& s) {
  return s.size() == 1 && s[0] > ' ' && s[0] < 0x7f;
}

std::string describe_defaults() {
  actors::node_config d;
  std::ostringstream o;
  o << "listen: " << d.listen << "\n"
    << "port: " << d.port << "\n"
    << "threads: 0 (one per core)\n"
    << "memory_mb: " << (d.memory_limit >> 20) << "\n"
    << "max_connections: " << d.max_connections << "\n"
    << "max_item_size: " << d.max_item_size << "\n"
    << "sendfile_threshold: " << d.sendfile_threshold << "\n"
    << "shards: 0 (one per I/O thread; scheduler placement: two per scheduler thread)\n"
    << "shard_placement: loop\n"
    << "scheduler_threads: 0 (one per core)\n"
    << "data_dir: \"\" (memfd segments, nothing survives a restart)\n"
    << "verbosity: 0\n";
  return o.str();
}

std::string load_yaml_text(const std::string& text, const std::string& origin,
                           actors::node_config& cfg, std::map<std::string, int>* lines) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return "config error: " + origin + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg;
  }
  if (root.IsNull())
    return "";
  if (!root.IsMap())
    return "config error: " + origin + ":" + std::to_string(root.Mark().line + 1) +
           ": the top level must be a mapping of field: value";
  // yaml-cpp keeps every entry of a mapping, and a field given twice would silently take
  // one of its values (a second `port:` further down a long file): an error instead.
  std::map<std::string, int> first_line;
  for (auto it = root.begin(); it != root.end(); ++it) {
    std::string key = it->first.as<std::string>("");
    const YAML::Node v = it->second;  // a handle: it->second is a temporary proxy
    // (A field with no value, `memory_mb:`, is null; yaml-cpp marks it where the next token
    // starts, lines further down: the field's own line names it.)
    auto where = [&](const std::string& problem) {
      const bool empty = v.IsNull();
      return "config error: " + origin + ":" +
             std::to_string((empty ? it->first.Mark() : v.Mark()).line + 1) + ": field '" + key +
             "': " + (empty ? "no value given; " : "") + problem;
    };
    auto [seen, fresh] = first_line.emplace(key, it->first.Mark().line + 1);
    if (!fresh)
      return "config error: " + origin + ":" + std::to_string(it->first.Mark().line + 1) +
             ": field '" + key + "' given twice (first on line " +
             std::to_string(seen->second) + ")";
    auto scalar = [&]() -> std::optional<std::string> {
      if (!v.IsScalar())
        return std::nullopt;
      return v.Scalar();
    };
    auto integer = [&](int64_t lo, int64_t hi) -> std::optional<int64_t> {
      auto s = scalar();
      if (!s || s->empty())
        return std::nullopt;
      try {
        size_t pos = 0;
        long long n = std::stoll(*s, &pos, 10);
        if (pos != s->size() || n < lo || n > hi)
          return std::nullopt;
        return n;
      } catch (...) {
        return std::nullopt;
      }
    };
    auto range = [](int64_t lo, int64_t hi) {
      return "must be an integer " + std::to_string(lo) + ".." + std::to_string(hi);
    };
    if (key == "listen") {
      auto s = scalar();
      if (!s || s->empty())
        return where("must be an address such as 127.0.0.1");
      cfg.listen = *s;
    } else if (key == "port") {
      auto n = integer(0, 65535);
      if (!n)
        return where(range(0, 65535));
      cfg.port = static_cast<uint16_t>(*n);
    } else if (key == "threads") {
      auto n = integer(0, 256);
      if (!n)
        return where(range(0, 256));
      cfg.threads = static_cast<uint32_t>(*n);
    } else if (key == "scheduler_threads") {
      auto n = integer(0, 256);
      if (!n)
        return where(range(0, 256));
      cfg.scheduler_threads = static_cast<uint32_t>(*n);
    } else if (key == "shards") {
      auto n = integer(0, storage::k_max_shards);
      if (!n)
        return where(range(0, storage::k_max_shards));
      cfg.shards = static_cast<uint32_t>(*n);
    } else if (key == "memory_mb") {
      auto n = integer(1, max_memory_mb);
      if (!n)
        return where(range(1, max_memory_mb));
      cfg.memory_limit = static_cast<uint64_t>(*n) << 20;
    } else if (key == "max_connections") {
      auto n = integer(1, 1 << 20);
      if (!n)
        return where(range(1, 1 << 20));
      cfg.max_connections = static_cast<uint32_t>(*n);
    } else if (key == "max_item_size") {
      auto s = scalar();
      auto n = s ? parse_size(*s) : std::nullopt;
      if (!n || *n < min_item_size || *n > max_item_size_limit)
        return where("must be a size between 1k and 1024m (e.g. 1m, 512k)");
      cfg.max_item_size = *n;
    } else if (key == "sendfile_threshold") {
      auto s = scalar();
      auto n = s ? parse_size(*s) : std::nullopt;
      if (!n)
        return where("must be a size in bytes (e.g. 16k)");
      cfg.sendfile_threshold = *n;
    } else if (key == "data_dir") {
      auto s = scalar();
      if (!s)
        return where("must be a directory path");
      cfg.data_dir = *s;
    } else if (key == "shard_placement") {
      auto s = scalar();
      if (!s || (*s != "loop" && *s != "scheduler"))
        return where("must be 'loop' or 'scheduler'");
      cfg.shards_on_loops = *s == "loop";
    } else if (key == "rpc_port") {
      auto n = integer(0, 65535);
      if (!n)
        return where(range(0, 65535));
      cfg.rpc_port = static_cast<int32_t>(*n);
    } else if (key == "rpc_advertise") {
      auto s = scalar();
      if (!s)
        return where("must be host:port");
      std::string a = *s;
      if (auto problem = cluster::check_host_port(a); !problem.empty())
        return where(problem);
      cfg.rpc_advertise = a;
    } else if (key == "rpc_listen") {
      auto s = scalar();
      if (!s || s->empty())
        return where("must be an address such as 127.0.0.1");
      cfg.rpc_listen = *s;
    } else if (key == "rpc") {
      auto s = scalar();
      if (!s || (*s != "on" && *s != "off" && *s != "true" && *s != "false"))
        return where("must be on or off");
      cfg.rpc_enabled = *s == "on" || *s == "true";
    } else if (key == "node_name") {
      auto s = scalar();
      if (!s || !valid_node_name(*s))
        return where(k_node_name_rule);
      cfg.node_name = *s;
    } else if (key == "replicas") {
      auto n = integer(1, 16);
      if (!n)
        return where(range(1, 16));
      cfg.replicas = static_cast<uint32_t>(*n);
    } else if (key == "rpc_tls_cert" || key == "rpc_tls_key" || key == "rpc_tls_ca" ||
               key == "rpc_tls_name") {
      auto s = scalar();
      if (!s || s->empty())
        return where(key == "rpc_tls_name" ? "must be a host name" : "must be a file path");
      auto& t = cfg.rpc_tls;
      (key == "rpc_tls_cert" ? t.cert_file
       : key == "rpc_tls_key" ? t.key_file
       : key == "rpc_tls_ca"  ? t.ca_file
                              : t.peer_name) = *s;
    } else if (auto ts = std::find_if(std::begin(timing_settings), std::end(timing_settings),
                                      [&](const timing_setting& t) { return key == t.yaml; });
               ts != std::end(timing_settings)) {
      auto n = integer(ts->lo, ts->hi);
      if (!n)
        return where(range(ts->lo, ts->hi));
      cfg.timings.*(ts->field) = *n;
    } else if (auto cs = std::find_if(std::begin(choice_settings), std::end(choice_settings),
                                      [&](const choice_setting& c) { return key == c.yaml; });
               cs != std::end(choice_settings)) {
      auto s = scalar();
      if (!s || (*s != cs->yes && *s != cs->no))
        return where(std::string("must be ") + cs->yes + " or " + cs->no);
      cfg.*(cs->field) = *s == cs->yes;
    } else if (key == "join") {
      std::vector<std::string> seeds;
      if (v.IsSequence()) {
        for (const auto& e : v) {
          if (!e.IsScalar() || e.Scalar().empty())
            return where("must be a list of host:port");
          seeds.push_back(e.Scalar());
          if (auto problem = cluster::check_host_port(seeds.back()); !problem.empty())
            return where(problem);
        }
      } else if (auto s = scalar()) {
        if (auto problem = split_seeds(*s, seeds); !problem.empty())
          return where(problem);
        if (seeds.empty())
          return where("names no seed: give host:port[,host:port...] (or a list), or leave "
                       "join out to start a cluster of one");
      } else {
        return where("must be host:port[,host:port...] or a list");
      }
      cfg.join = std::move(seeds);
    } else if (key == "prefix_delimiter") {
      auto s = scalar();
      if (!s || !delimiter_ok(*s))
        return where(delimiter_problem);
      cfg.prefix_delimiter = (*s)[0];
      cfg.detail_stats = true;
    } else if (key == "verbosity") {
      auto n = integer(0, 3);
      if (!n)
        return where(range(0, 3));
      cfg.verbosity = static_cast<int>(*n);
    } else {
      auto hint = unknown_field_hint(key);
      return "config error: " + origin + ":" + std::to_string(it->first.Mark().line + 1) +
             ": unknown field '" + key + "'" +
             (hint.empty() ? "" : " (did you mean '" + hint + "'?)");
    }
  }
  if (lines)
    *lines = std::move(first_line);
  return "";
}

std::string load_yaml_file(const std::string& path, actors::node_config& cfg,
                           std::map<std::string, int>* lines) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return "config error: field 'config': '" + path + "' is a directory, not a file";
  std::ifstream in(path);
  if (!in)
    return "config error: field 'config': cannot read file '" + path + "'";
  std::stringstream ss;
  ss << in.rdbuf();
  return load_yaml_text(ss.str(), path, cfg, lines);
}

std::string default_node_name(const std::string& listen, uint16_t port, const std::string& host) {
  const std::string p = ":" + std::to_string(port);
  if (cluster::is_wildcard_host(listen) && !host.empty() &&
      valid_node_name(host + p))
    return host + p;
  if (listen.find(':') != std::string::npos && listen.front() != '[')
    return "[" + listen + "]" + p;
  return listen + p;
}

parse_outcome parse_args(int argc, const char* const* argv, actors::node_config& cfg) {
  CLI::App app{"bifrostd: a Bifrost cache node (memcached text and meta protocol)", "bifrostd"};
  std::string config_file, listen, memory, item_size, sendfile_threshold, data_dir, placement;
  std::string delimiter;
  std::string rpc_listen, rpc_advertise, node_name, join;
  int64_t port = 0, threads = 0, conns = 0, shards = 0, sched = 0, rpc_port = 0, replicas = 0;
  app.set_version_flag("--version", "bifrostd 0.1.0");
  // As in memcached, a flag given twice takes its last value.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--config", config_file, "YAML config file (flags override it)");
  app.add_option("-p,--port", port, "TCP port to listen on (default 11211; 0 = any free port)")
      ->transform(decimal());
  app.add_option("-l,--listen", listen, "interface to listen on (default 127.0.0.1)");
  app.add_option("-m,--memory-limit", memory, "item memory in megabytes (default 64)");
  app.add_option("-t,--threads", threads, "I/O threads (default: one per core)")
      ->transform(decimal());
  app.add_option("-c,--conn-limit", conns, "max simultaneous connections (default 1024)")
      ->transform(decimal());
  app.add_option("-I,--max-item-size", item_size,
                 "max value size, 1k..1024m (default 1m)");
  auto* verbose = app.add_flag("-v,--verbose", "verbose logging (repeat for more)");
  app.add_option("-D,--prefix-delimiter", delimiter,
                 "per-prefix stats (`stats detail`) split keys at this character, and count "
                 "from the start (default ':', counting off until `stats detail on`)");
  app.add_option("--data-dir", data_dir, "keep segments as files here: a restart keeps the cache");
  app.add_option("--sendfile-threshold", sendfile_threshold,
                 "values of at least this size are sent with sendfile(2) (default 1m)");
  app.add_option("--shards", shards,
                 "storage shards (default: one per I/O thread; scheduler placement: two per "
                 "scheduler thread)")
      ->transform(decimal());
  app.add_option("--shard-placement", placement,
                 "where shard actors run: loop (on the I/O threads, default) or scheduler");
  app.add_option("--scheduler-threads", sched, "CAF scheduler threads (default: one per core)")
      ->transform(decimal());
  app.add_option("--rpc-port", rpc_port,
                 "cluster/bifrostctl RPC port (default: memcached port + 1000; 0 = any)")
      ->transform(decimal());
  app.add_option("--rpc-listen", rpc_listen, "RPC listen address (default: -l)");
  app.add_option("--rpc-advertise", rpc_advertise,
                 "host:port other nodes dial for this node's RPC (default: the RPC listen "
                 "address, the host name for a wildcard one, and the RPC port)");
  auto* no_rpc = app.add_flag("--no-rpc", "do not serve the RPC port (no cluster, no bifrostctl)");
  app.add_option("--node-name", node_name, "unique node name (default: <listen>:<port>, or <host name>:<port> with a wildcard -l)");
  app.add_option("--join", join, "seed nodes' RPC addresses, host:port[,host:port...]");
  app.add_option("--replicas", replicas, "owners per key in the cluster, 1..16 (default 1)")
      ->transform(decimal());
  timings flag_timings;
  for (auto& t : timing_settings)
    app.add_option(t.flag, flag_timings.*(t.field), t.help)->transform(decimal());
  cluster::tls_options tls;
  app.add_option("--rpc-tls-cert", tls.cert_file,
                 "mutual TLS on the RPC port: this node's certificate (PEM)");
  app.add_option("--rpc-tls-key", tls.key_file, "mutual TLS: this node's private key (PEM)");
  app.add_option("--rpc-tls-ca", tls.ca_file,
                 "mutual TLS: the CA that signs every node's and bifrostctl's certificate (PEM)");
  app.add_option("--rpc-tls-name", tls.peer_name,
                 "mutual TLS: the DNS name every node's certificate carries (default: the host "
                 "of the address dialled)");
  std::vector<std::string> choices(std::size(choice_settings));
  for (size_t i = 0; i < choices.size(); ++i)
    app.add_option(choice_settings[i].flag, choices[i], choice_settings[i].help);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return {parse_outcome::action::exit, 0, app.help()};
  } catch (const CLI::CallForVersion&) {
    return {parse_outcome::action::exit, 0, "bifrostd 0.1.0\n"};
  } catch (const CLI::ParseError& e) {
    std::string msg = std::string("bifrostd: ") + e.what() + "\n";
    for (int i = 1; i < argc; ++i) {  // a flag it does not know: the one it likely meant
      std::string a = argv[i];
      a = a.substr(0, a.find('='));
      if (a.size() < 3 || a.compare(0, 2, "--") != 0 || app.get_option_no_throw(a))
        continue;
      if (auto hint = unknown_flag_hint(a); !hint.empty())
        msg += "bifrostd: unknown flag '" + a + "' (did you mean '" + hint + "'?)\n";
    }
    return {parse_outcome::action::exit, 2, msg};
  }
  auto fail = [](const std::string& field, const std::string& problem) {
    return parse_outcome{parse_outcome::action::exit, 2,
                         "bifrostd: invalid value for " + field + ": " + problem + "\n"};
  };
  std::map<std::string, int> yaml_lines;  // field -> line, of the --config file
  if (!config_file.empty()) {
    auto err = load_yaml_file(config_file, cfg, &yaml_lines);
    if (!err.empty())
      return {parse_outcome::action::exit, 2, "bifrostd: " + err + "\n"};
  }
  // A check across settings names the first of `sources` the command line gave, else the
  // first the file gave (with its line), else the first flag.
  auto blame = [&](std::initializer_list<std::pair<const char*, const char*>> sources,
                   const std::string& problem) {
    for (auto [flag, yaml] : sources)  // ("-I/--max-item-size": counted by its long name)
      if (app.count(std::string(flag).substr(std::string(flag).rfind('/') + 1)))
        return fail(flag, problem);
    for (auto [flag, yaml] : sources)
      if (auto at = yaml_lines.find(yaml); at != yaml_lines.end())
        return parse_outcome{parse_outcome::action::exit, 2,
                             "bifrostd: config error: " + config_file + ":" +
                               std::to_string(at->second) + ": field '" + yaml + "': " +
                               problem + "\n"};
    return fail(sources.begin()->first, problem);
  };
  if (app.count("--port")) {
    if (!check_port(port).empty())
      return fail("-p/--port", check_port(port));
    cfg.port = static_cast<uint16_t>(port);
  }
  if (app.count("--listen")) {
    if (listen.empty())
      return fail("-l/--listen", "must be an address such as 127.0.0.1");
    cfg.listen = listen;
  }
  if (app.count("--memory-limit")) {
    auto n = parse_size(memory);  // plain numbers are megabytes, as in memcached
    if (!n || *n == 0)
      return fail("-m/--memory-limit", "must be a positive number of megabytes");
    bool has_unit = std::isalpha(static_cast<unsigned char>(memory.back()));
    // (checked before the shift: `<< 20` of a large count wraps)
    if (*n > (has_unit ? uint64_t(max_memory_mb) << 20 : uint64_t(max_memory_mb)))
      return fail("-m/--memory-limit", "must be at most " + std::to_string(max_memory_mb) +
                                           " megabytes (1 TiB)");
    cfg.memory_limit = has_unit ? *n : (*n << 20);
    if (cfg.memory_limit < (1u << 20))
      return fail("-m/--memory-limit", "must be at least 1 megabyte");
  }
  if (app.count("--threads")) {
    if (threads < 1 || threads > 256)
      return fail("-t/--threads", "must be 1..256");
    cfg.threads = static_cast<uint32_t>(threads);
  }
  if (app.count("--conn-limit")) {
    if (conns < 1 || conns > (1 << 20))
      return fail("-c/--conn-limit", "must be 1..1048576");
    cfg.max_connections = static_cast<uint32_t>(conns);
  }
  if (app.count("--prefix-delimiter")) {
    if (!delimiter_ok(delimiter))
      return fail("-D/--prefix-delimiter", delimiter_problem);
    cfg.prefix_delimiter = delimiter[0];
    cfg.detail_stats = true;
  }
  if (app.count("--max-item-size")) {
    auto n = parse_size(item_size);
    if (!n || *n < min_item_size || *n > max_item_size_limit)
      return fail("-I/--max-item-size", "must be a size between 1k and 1024m (e.g. 1m, 512k)");
    cfg.max_item_size = *n;
  }
  if (app.count("--sendfile-threshold")) {
    auto n = parse_size(sendfile_threshold);
    if (!n)
      return fail("--sendfile-threshold", "must be a size in bytes (e.g. 16k)");
    cfg.sendfile_threshold = *n;
  }
  if (app.count("--shards")) {
    if (shards < 1 || shards > storage::k_max_shards)
      return fail("--shards", "must be 1.." + std::to_string(storage::k_max_shards));
    cfg.shards = static_cast<uint32_t>(shards);
  }
  if (app.count("--shard-placement")) {
    if (placement != "loop" && placement != "scheduler")
      return fail("--shard-placement", "must be 'loop' or 'scheduler'");
    cfg.shards_on_loops = placement == "loop";
  }
  if (app.count("--scheduler-threads")) {
    if (sched < 1 || sched > 256)
      return fail("--scheduler-threads", "must be 1..256");
    cfg.scheduler_threads = static_cast<uint32_t>(sched);
  }
  if (app.count("--rpc-port")) {
    if (rpc_port < 0 || rpc_port > 65535)
      return fail("--rpc-port", "must be a port number 0..65535");
    cfg.rpc_port = static_cast<int32_t>(rpc_port);
  }
  if (app.count("--rpc-listen")) {
    if (rpc_listen.empty())
      return fail("--rpc-listen", "must be an address such as 127.0.0.1");
    cfg.rpc_listen = rpc_listen;
  }
  if (app.count("--rpc-advertise")) {
    if (auto problem = cluster::check_host_port(rpc_advertise); !problem.empty())
      return fail("--rpc-advertise", problem);
    cfg.rpc_advertise = rpc_advertise;
  }
  if (no_rpc->count() > 0)
    cfg.rpc_enabled = false;
  if (app.count("--node-name")) {
    if (!valid_node_name(node_name))
      return fail("--node-name", k_node_name_rule);
    cfg.node_name = node_name;
  }
  if (app.count("--join")) {
    cfg.join.clear();
    if (auto problem = split_seeds(join, cfg.join); !problem.empty())
      return fail("--join", problem);
    if (cfg.join.empty())  // (`--join ""`: a template's empty variable, most likely)
      return fail("--join", "names no seed: give host:port[,host:port...], or leave --join out "
                            "to start a cluster of one");
  }
  for (auto [flag, field, value] :
       {std::tuple{"--rpc-tls-cert", &cfg.rpc_tls.cert_file, &tls.cert_file},
        std::tuple{"--rpc-tls-key", &cfg.rpc_tls.key_file, &tls.key_file},
        std::tuple{"--rpc-tls-ca", &cfg.rpc_tls.ca_file, &tls.ca_file},
        std::tuple{"--rpc-tls-name", &cfg.rpc_tls.peer_name, &tls.peer_name}}) {
    if (!app.count(flag))
      continue;
    if (value->empty())
      return fail(flag, "must not be empty");
    *field = *value;
  }
  if (auto problem = cluster::check_tls_options(cfg.rpc_tls); !problem.empty())
    return blame({{"--rpc-tls-cert", "rpc_tls_cert"}, {"--rpc-tls-key", "rpc_tls_key"},
                  {"--rpc-tls-ca", "rpc_tls_ca"}, {"--rpc-tls-name", "rpc_tls_name"}},
                 problem);
  for (auto& t : timing_settings) {
    if (!app.count(t.flag))
      continue;
    int64_t v = flag_timings.*(t.field);
    if (v < t.lo || v > t.hi)
      return fail(t.flag, "must be " + std::to_string(t.lo) + ".." + std::to_string(t.hi));
    cfg.timings.*(t.field) = v;
  }
  if (auto problem = check_timings(cfg.timings); !problem.empty())
    return blame({{"--swim-probe-interval", "swim_probe_interval_ms"},
                  {"--swim-ping-timeout", "swim_ping_timeout_ms"},
                  {"--swim-indirect-timeout", "swim_indirect_timeout_ms"}},
                 problem);
  for (size_t i = 0; i < choices.size(); ++i) {
    auto& c = choice_settings[i];
    if (!app.count(c.flag))
      continue;
    if (choices[i] != c.yes && choices[i] != c.no)
      return fail(c.flag, std::string("must be ") + c.yes + " or " + c.no);
    cfg.*(c.field) = choices[i] == c.yes;
  }
  if (app.count("--replicas")) {
    if (replicas < 1 || replicas > 16)
      return fail("--replicas", "must be 1..16");
    cfg.replicas = static_cast<uint32_t>(replicas);
  }
  if (!cfg.rpc_enabled) {
    // A cluster setting next to --no-rpc (or `rpc: off`): one of the two is a mistake, and
    // ignoring one would hide which.
    auto given = cluster_settings_of(cfg);
    if (no_rpc->count() > 0)  // (also a flag given with its default value)
      each_cluster_setting(cfg, [&](bool, const char* flag, const char* yaml) {
        if (app.count(flag))
          given.emplace_back(flag, yaml);
      });
    if (!given.empty())
      return blame({given.front(), {"--no-rpc", "rpc"}},
                   "is a cluster setting, and the RPC is off (--no-rpc or rpc: off): drop one");
  }
  if (cfg.rpc_enabled && cfg.rpc_port < 0 && cfg.port > 64535)
    return blame({{"-p/--port", "port"}, {"--rpc-port", "rpc_port"}},
                 "the RPC port defaults to the memcached port + 1000, past 65535 for port " +
                   std::to_string(cfg.port) + ": give --rpc-port (or --no-rpc)");
  if (cfg.rpc_enabled && cfg.port != 0 && cfg.rpc_port == int32_t(cfg.port) &&
      (cfg.rpc_listen.empty() || cfg.rpc_listen == cfg.listen))
    return blame({{"--rpc-port", "rpc_port"}, {"-p/--port", "port"}},
                 "the RPC port must differ from the memcached port (" +
                   std::to_string(cfg.port) + "): both listen on " + cfg.listen);
  if (app.count("--data-dir"))
    cfg.data_dir = data_dir;
  if (verbose->count() > 0)
    cfg.verbosity = static_cast<int>(verbose->count());
  if (cfg.max_item_size * 2 > cfg.memory_limit)  // memcached: "higher than 1/2 of memory max"
    return blame({{"-I/--max-item-size", "max_item_size"}, {"-m/--memory-limit", "memory_mb"}},
                 "the max item size (-I) must be at most half the memory limit (-m), as in "
                 "memcached: an item of -I could not be stored otherwise");
  // Shard count given (flag or YAML): each must get min_shard_memory (one shard takes all of
  // -m, at least twice -I). A count adopted from a data directory is not checked: the
  // directory decides.
  if (cfg.shards > 1 && cfg.memory_limit / cfg.shards < actors::min_shard_memory(cfg)) {
    const uint64_t most = std::max<uint64_t>(1, cfg.memory_limit / actors::min_shard_memory(cfg));
    return blame({{"--shards", "shards"}, {"-m/--memory-limit", "memory_mb"},
                  {"-I/--max-item-size", "max_item_size"}},
                 std::to_string(cfg.shards) + " shards leave each less than twice "
                                "the max item size (-I, and at least 128 KiB) of the memory "
                                "limit (-m): use at most " + std::to_string(most) +
                                " shards, or a larger -m");
  }
  if (!cfg.data_dir.empty()) {
    // Keys hash over the shards: a data directory must be reopened with its shard count.
    std::string bad;
    const uint32_t held = storage::data_dir_shards(cfg.data_dir, bad);
    if (!bad.empty())
      return fail("--data-dir", bad);
    if (held > 0) {
      if (cfg.shards == 0)
        cfg.shards = held;  // the default (one per I/O thread) yields to what is on disk
      else if (cfg.shards != held)
        return fail("--shards", "the data directory " + cfg.data_dir + " holds " +
                                    std::to_string(held) + " shards from an earlier run: start "
                                    "with --shards " + std::to_string(held) +
                                    " (or without --shards), or use an empty directory");
    }
  }
  return {};
}

} // namespace bifrost::cli
