// bifrostd's flags and YAML config: defaults, precedence, and errors that name the field.
#include "cli/config.hpp"

#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using bifrost::actors::node_config;
using namespace bifrost::cli;

namespace {

parse_outcome run(std::vector<std::string> args, node_config& cfg) {
  args.insert(args.begin(), "bifrostd");
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  return parse_args(static_cast<int>(argv.size()), argv.data(), cfg);
}

std::string temp_file(const std::string& content) {
  char path[] = "/tmp/bifrost-config-XXXXXX";
  int fd = mkstemp(path);
  BOOST_REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path) << content;
  return path;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(sizes) {
  BOOST_CHECK_EQUAL(*parse_size("1048576"), 1048576u);
  BOOST_CHECK_EQUAL(*parse_size("1m"), 1u << 20);
  BOOST_CHECK_EQUAL(*parse_size("512K"), 512u << 10);
  BOOST_CHECK_EQUAL(*parse_size("2g"), 2ull << 30);
  BOOST_CHECK_EQUAL(*parse_size("16kb"), 16u << 10);
  BOOST_CHECK(!parse_size(""));
  BOOST_CHECK(!parse_size("m"));
  BOOST_CHECK(!parse_size("-1"));
  BOOST_CHECK(!parse_size("1.5m"));
  BOOST_CHECK(!parse_size("99999999999999999999"));
  BOOST_CHECK(!parse_size("18446744073709551615g"));
}

BOOST_AUTO_TEST_CASE(no_arguments_gives_the_embedded_default) {
  node_config cfg;
  auto r = run({}, cfg);
  BOOST_CHECK(r.what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.listen, "127.0.0.1");
  BOOST_CHECK_EQUAL(cfg.port, 11211);
  BOOST_CHECK_EQUAL(cfg.memory_limit, 64ull << 20);
  BOOST_CHECK_EQUAL(cfg.max_item_size, 1ull << 20);
  BOOST_CHECK(cfg.data_dir.empty());
}

BOOST_AUTO_TEST_CASE(memcached_flags) {
  node_config cfg;
  auto r = run({"-p", "22122", "-l", "127.0.0.2", "-m", "128", "-t", "3", "-c", "50", "-I",
                "2m", "-v", "-v", "--data-dir", "/tmp/x", "--sendfile-threshold", "64k"},
               cfg);
  BOOST_REQUIRE(r.what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.port, 22122);
  BOOST_CHECK_EQUAL(cfg.listen, "127.0.0.2");
  BOOST_CHECK_EQUAL(cfg.memory_limit, 128ull << 20);
  BOOST_CHECK_EQUAL(cfg.threads, 3u);
  BOOST_CHECK_EQUAL(cfg.max_connections, 50u);
  BOOST_CHECK_EQUAL(cfg.max_item_size, 2ull << 20);
  BOOST_CHECK_EQUAL(cfg.verbosity, 2);
  BOOST_CHECK_EQUAL(cfg.data_dir, "/tmp/x");
  BOOST_CHECK_EQUAL(cfg.sendfile_threshold, 64u << 10);
  BOOST_CHECK(!cfg.detail_stats);  // (no -D: counting per prefix waits for `stats detail on`)
  BOOST_CHECK_EQUAL(cfg.prefix_delimiter, ':');
  node_config d;
  BOOST_REQUIRE(run({"-D", "/"}, d).what == parse_outcome::action::run);
  BOOST_CHECK(d.detail_stats);
  BOOST_CHECK_EQUAL(d.prefix_delimiter, '/');
  node_config y;
  BOOST_CHECK_EQUAL(load_yaml_text("prefix_delimiter: \"#\"\n", "n.yaml", y), "");
  BOOST_CHECK(y.detail_stats);
  BOOST_CHECK_EQUAL(y.prefix_delimiter, '#');
}

BOOST_AUTO_TEST_CASE(invalid_flags_exit_2_naming_the_field) {
  struct bad {
    std::vector<std::string> args;
    std::string field;
  };
  for (auto& b : std::vector<bad>{{{"-p", "70000"}, "-p/--port"},
                                  {{"-p", "abc"}, "port"},
                                  {{"-m", "0"}, "-m/--memory-limit"},
                                  {{"-m", "lots"}, "-m/--memory-limit"},
                                  {{"-t", "0"}, "-t/--threads"},
                                  {{"-c", "0"}, "-c/--conn-limit"},
                                  {{"-I", "100"}, "-I/--max-item-size"},
                                  {{"-I", "2g"}, "-I/--max-item-size"},
                                  {{"-m", "1", "-I", "2m"}, "-I/--max-item-size"},
                                  {{"-m", "4", "-I", "4m"}, "-I/--max-item-size"},
                                  {{"-m", "4", "-I", "3m"}, "-I/--max-item-size"},
                                  {{"--sendfile-threshold", "x"}, "--sendfile-threshold"},
                                  {{"--node-name", "a b"}, "--node-name"},
                                  {{"--node-name", "x\ny"}, "--node-name"},
                                  {{"--node-name", std::string(256, 'n')}, "--node-name"},
                                  {{"--node-name", ""}, "--node-name"},
                                  {{"-D", ""}, "-D/--prefix-delimiter"},
                                  {{"-D", "::"}, "-D/--prefix-delimiter"},
                                  {{"-D", " "}, "-D/--prefix-delimiter"},
                                  {{"--no-such-flag"}, "no-such-flag"}}) {
    node_config cfg;
    auto r = run(b.args, cfg);
    BOOST_CHECK(r.what == parse_outcome::action::exit);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, b.field), r.message << " should name " << b.field);
  }
}

BOOST_AUTO_TEST_CASE(a_data_directory_keeps_its_shard_count) {
  // Keys hash over the shards: reopening a data directory with another count would strand
  // its items (misses now, old values back when the count returns).
  char tmpl[] = "/tmp/bifrost-config-dir-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  node_config fresh;
  BOOST_REQUIRE(run({"--data-dir", dir}, fresh).what != parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(fresh.shards, 0u);  // nothing there yet: the default
  for (int i = 0; i < 3; ++i)
    BOOST_REQUIRE(std::filesystem::create_directory(dir + "/shard-" + std::to_string(i)));
  node_config cfg;
  BOOST_REQUIRE(run({"--data-dir", dir, "-t", "1"}, cfg).what != parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(cfg.shards, 3u);  // not one per thread: what the directory holds
  node_config same;
  BOOST_REQUIRE(run({"--data-dir", dir, "--shards", "3"}, same).what != parse_outcome::action::exit);
  node_config small;  // adopted, not held to the memory rule: the directory decides
  BOOST_CHECK(run({"--data-dir", dir, "-m", "2"}, small).what != parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(small.shards, 3u);
  node_config other;
  auto r = run({"--data-dir", dir, "--shards", "2"}, other);
  BOOST_CHECK(r.what == parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "--shards") && contains(r.message, "holds 3 shards"),
                      r.message);
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_data_directory_that_is_a_file_is_a_config_error) {
  // (It was an exit 1 at start: "cannot open .../lock: Not a directory".)
  const std::string file = temp_file("not a directory\n");
  for (const std::string& dir : {file, file + "/sub"}) {
    node_config cfg;
    auto r = run({"--data-dir", dir}, cfg);
    BOOST_CHECK(r.what == parse_outcome::action::exit);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, "--data-dir") &&
                          contains(r.message, "Not a directory"),
                        r.message);
  }
  std::remove(file.c_str());
  // A symbolic link to nothing, or a path under one, passed the check and failed at start
  // ("cannot open .../lock: No such file or directory", exit 1): mkdir cannot make it.
  char tmpl[] = "/tmp/bifrost-config-link-XXXXXX";
  const std::string base = ::mkdtemp(tmpl);
  const std::string link = base + "/dangling";
  BOOST_REQUIRE(::symlink((base + "/nowhere").c_str(), link.c_str()) == 0);
  for (const std::string& dir : {link, link + "/sub/more"}) {
    node_config cfg;
    auto r = run({"--data-dir", dir}, cfg);
    BOOST_CHECK(r.what == parse_outcome::action::exit);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, "--data-dir") &&
                          contains(r.message, link + " is a symbolic link to a path that does "
                                                     "not exist"),
                        r.message);
  }
  {  // (a path still to make, beside it, is not refused)
    node_config cfg;
    auto r = run({"--data-dir", base + "/new/sub"}, cfg);
    BOOST_CHECK(r.what != parse_outcome::action::exit);
  }
  std::filesystem::remove_all(base);
}

BOOST_AUTO_TEST_CASE(stray_shard_entries_in_a_data_directory_are_refused) {
  // A gap (shard-5 beside shard-0..1) used to raise the count to 6 and strand most items; a
  // huge id made the node create every directory up to it. Each is a config error naming it.
  struct stray_case {
    const char* name;
    bool as_file;
    const char* says;
  };
  for (const stray_case& c : {stray_case{"shard-5", false, "shard-2 is not"},
                              stray_case{"shard-999999", false, "shard-999999 is not a shard"},
                              stray_case{"shard-1024", false, "shard-1024 is not a shard"},
                              stray_case{"shard-01", false, "shard-01 is not a shard"},
                              stray_case{"shard-x", false, "shard-x is not a shard"},
                              stray_case{"shard-2", true, "shard-2 is not a shard"}}) {
    char tmpl[] = "/tmp/bifrost-config-dir-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    for (int i = 0; i < 2; ++i)
      BOOST_REQUIRE(std::filesystem::create_directory(dir + "/shard-" + std::to_string(i)));
    if (c.as_file)
      std::ofstream(dir + "/" + c.name) << "x";
    else
      BOOST_REQUIRE(std::filesystem::create_directory(dir + "/" + c.name));
    node_config cfg;
    auto r = run({"--data-dir", dir}, cfg);
    BOOST_CHECK_MESSAGE(r.what == parse_outcome::action::exit, c.name);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, "--data-dir") && contains(r.message, c.says),
                        c.name << ": " << r.message);
    std::filesystem::remove_all(dir);
  }
  // shard-0 .. shard-1023 is the most a directory may hold, and is accepted.
  char tmpl[] = "/tmp/bifrost-config-dir-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  for (int i = 0; i < 1024; ++i)
    BOOST_REQUIRE(std::filesystem::create_directory(dir + "/shard-" + std::to_string(i)));
  node_config cfg;
  auto r = run({"--data-dir", dir, "-m", "4096"}, cfg);
  BOOST_CHECK_MESSAGE(r.what != parse_outcome::action::exit, r.message);
  BOOST_CHECK_EQUAL(cfg.shards, 1024u);
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(default_node_names) {
  using bifrost::cli::default_node_name;
  BOOST_CHECK_EQUAL(default_node_name("127.0.0.1", 11211, "cache-3"), "127.0.0.1:11211");
  BOOST_CHECK_EQUAL(default_node_name("10.0.0.7", 11211, "cache-3"), "10.0.0.7:11211");
  // A wildcard would give every host the same name: the host name tells them apart.
  BOOST_CHECK_EQUAL(default_node_name("0.0.0.0", 11211, "cache-3"), "cache-3:11211");
  BOOST_CHECK_EQUAL(default_node_name("::", 22122, "cache-3"), "cache-3:22122");
  BOOST_CHECK_EQUAL(default_node_name("[::]", 22122, "cache-3"), "cache-3:22122");
  BOOST_CHECK_EQUAL(default_node_name("[::]", 22122, ""), "[::]:22122");  // (no host name)
  BOOST_CHECK_EQUAL(default_node_name("0.0.0.0", 11211, ""), "0.0.0.0:11211");  // no host name
  BOOST_CHECK_EQUAL(default_node_name("::1", 11211, "cache-3"), "[::1]:11211");
}

BOOST_AUTO_TEST_CASE(every_shard_gets_twice_the_max_item_size) {
  // As memcached wants -I at most half of -m: per shard, or items near -I could never be
  // stored (and storing one would empty its shard).
  node_config cfg;
  auto r = run({"-m", "64", "--shards", "64"}, cfg);  // 1 MiB each, -I 1m
  BOOST_CHECK(r.what == parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "--shards") && contains(r.message, "at most 32"), r.message);
  node_config ok;
  BOOST_CHECK(run({"-m", "64", "--shards", "32"}, ok).what != parse_outcome::action::exit);
  node_config one;  // one shard takes all of -m: only -I <= -m / 2 applies
  BOOST_CHECK(run({"-m", "2", "--shards", "1"}, one).what != parse_outcome::action::exit);
  node_config half;
  BOOST_CHECK(run({"-m", "4", "-I", "2m"}, half).what != parse_outcome::action::exit);
  // The default yields instead: 64 cores, -m 64 -> 32 shards; -m 1 -I 1k -> 8 (128 KiB each).
  node_config many;
  many.threads = 64;
  many.scheduler_threads = 64;
  BOOST_CHECK_EQUAL(bifrost::actors::default_shards(many), 32u);
  many.memory_limit = 1u << 20;
  many.max_item_size = 1024;
  BOOST_CHECK_EQUAL(bifrost::actors::default_shards(many), 8u);
  many.threads = 2;
  BOOST_CHECK_EQUAL(bifrost::actors::default_shards(many), 2u);
}

BOOST_AUTO_TEST_CASE(yaml_file_and_flag_precedence) {
  auto path = temp_file("# node config\nport: 23000\nmemory_mb: 32\nmax_item_size: 512k\n"
                        "listen: 127.0.0.3\n");
  node_config cfg;
  auto r = run({"--config", path, "-p", "23001"}, cfg);
  BOOST_REQUIRE(r.what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.port, 23001);  // the flag wins
  BOOST_CHECK_EQUAL(cfg.memory_limit, 32ull << 20);
  BOOST_CHECK_EQUAL(cfg.max_item_size, 512u << 10);
  BOOST_CHECK_EQUAL(cfg.listen, "127.0.0.3");
  std::remove(path.c_str());
}

BOOST_AUTO_TEST_CASE(yaml_errors_name_field_and_line) {
  struct bad {
    std::string text;
    std::string expect;
  };
  for (auto& b : std::vector<bad>{
         {"port: 1\nmemory_mb: -5\n", ":2: field 'memory_mb'"},
         {"port: http\n", ":1: field 'port'"},
         {"\n\nmax_item_size: huge\n", ":3: field 'max_item_size'"},
         {"threads: [1, 2]\n", ":1: field 'threads'"},
         {"colour: blue\n", ":1: unknown field 'colour'"},
         {"port: [1\n", "config error"},
         {"- a\n- b\n", "mapping"},
         {"port: 1\nnode_name: \"x y\"\n", ":2: field 'node_name'"},
         {"port: 1\nprefix_delimiter: ab\n", ":2: field 'prefix_delimiter'"},
         {"node_name: \"x\\ny\"\n", ":1: field 'node_name'"},
         {"port: 1\nthreads: 2\nport: 2\n", ":3: field 'port' given twice (first on line 1)"},
         {"join: a:1\njoin:\n  - b:2\n", ":2: field 'join' given twice (first on line 1)"},
         // A field left empty: its own line (yaml-cpp marks the token after it).
         {"port: 1\nmemory_mb:\n", ":2: field 'memory_mb': no value given; must be"},
         {"port: 1\nmemory_mb:\n\n\n# c\nthreads: 1\n", ":2: field 'memory_mb': no value"},
         {"memory_mb: ~\nport: 1\n", ":1: field 'memory_mb': no value given"},
         {"port: 1\nlisten:\n", ":2: field 'listen': no value given"},
       }) {
    node_config cfg;
    auto err = load_yaml_text(b.text, "node.yaml", cfg);
    BOOST_CHECK_MESSAGE(contains(err, b.expect), "'" << err << "' should contain " << b.expect);
  }
  node_config cfg;
  auto r = run({"--config", "/nonexistent/bifrost.yaml"}, cfg);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK(contains(r.message, "config"));
  // A directory opens as a stream and reads as empty: it must not pass for an empty file.
  r = run({"--config", "/tmp"}, cfg);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "field 'config'") && contains(r.message, "directory"),
                      r.message);
  node_config named;
  BOOST_CHECK(run({"--node-name", "cache-3.internal:11211"}, named).what !=
              parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(named.node_name, "cache-3.internal:11211");
}

// An unknown field names the one it most likely meant: a flag's name, a typo, a missing unit.
BOOST_AUTO_TEST_CASE(unknown_yaml_field_names_the_likely_one) {
  struct typo {
    std::string text;
    std::string hint;  // "" = no hint
  };
  for (auto& t : std::vector<typo>{
         {"memory: 64\n", "memory_mb"},
         {"memory-limit: 64\n", "memory_mb"},
         {"memory_limit: 64\n", "memory_mb"},
         {"conn-limit: 10\n", "max_connections"},
         {"max_item_sise: 1m\n", "max_item_size"},
         {"Port: 11211\n", "port"},
         {"verbose: 1\n", "verbosity"},
         {"swim_probe_interval: 100\n", "swim_probe_interval_ms"},
         {"replication-ack: all\n", "replication_ack"},
         {"no-rpc: true\n", "rpc"},
         {"thraeds: 2\n", "threads"},
         {"port_number: 1\n", "port"},
         {"name: n1\n", "node_name"},
         {"data: /tmp\n", "data_dir"},
         {"colour: blue\n", ""},
         {"x: 1\n", ""},
         {"abcdefghijklmnopqrstuvwxyz: 1\n", ""},
       }) {
    node_config cfg;
    auto err = load_yaml_text(t.text, "node.yaml", cfg);
    BOOST_CHECK_MESSAGE(contains(err, ":1: unknown field '"), err);
    if (t.hint.empty())
      BOOST_CHECK_MESSAGE(!contains(err, "did you mean"), err);
    else
      BOOST_CHECK_MESSAGE(contains(err, "(did you mean '" + t.hint + "'?)"), err);
  }
  // A flag the same way, by its own name.
  for (auto [args, hint] : std::vector<std::pair<std::vector<std::string>, std::string>>{
         {{"--memory", "64"}, "--memory-limit"},
         {{"--threds=2"}, "--threads"},
         {{"--swim-probe-interval-ms", "100"}, "--swim-probe-interval"},
         {{"-p", "1", "--colour", "blue"}, ""},
       }) {
    node_config cfg;
    auto r = run(args, cfg);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    if (hint.empty())
      BOOST_CHECK_MESSAGE(!contains(r.message, "did you mean"), r.message);
    else
      BOOST_CHECK_MESSAGE(contains(r.message, "(did you mean '" + hint + "'?)"), r.message);
  }
  // Every field a hint may name is one the file reads (a bad value names the field instead).
  const auto fields = bifrost::cli::yaml_fields();
  BOOST_CHECK_GE(fields.size(), 30u);
  for (const auto& f : fields) {
    node_config cfg;
    auto err = load_yaml_text(f + ": [1, 2]\n", "node.yaml", cfg);
    BOOST_CHECK_MESSAGE(contains(err, "field '" + f + "'") && !contains(err, "unknown"),
                        f << ": " << err);
    BOOST_CHECK_EQUAL(bifrost::cli::unknown_field_hint(f), f);
  }
}

// The two-valued cluster switches: default, both words by flag (the last one wins) and by YAML,
// and a clear error naming the flag, or the field and line.
BOOST_AUTO_TEST_CASE(two_valued_switches) {
  struct choice {
    const char* flag;
    const char* yaml;
    const char* yes;
    const char* no;
    bool node_config::*field;
    bool by_default;
  };
  for (const choice& c : {
         choice{"--replication-ack", "replication_ack", "all", "primary",
                &node_config::wait_replicas, false},  // default: answer after the primary
         choice{"--rpc-thread", "rpc_thread", "loop", "own", &node_config::rpc_on_loop,
                false},  // default: the RPC runs on a thread of its own
         choice{"--cluster-links", "cluster_links", "on", "off", &node_config::cluster_links,
                true},  // default: forwarded ops travel on data links
         choice{"--rereplicate", "rereplicate", "on", "off", &node_config::rereplicate,
                true},  // default: keys are copied to their new owners
       }) {
    BOOST_TEST_CONTEXT(c.flag) {
      BOOST_CHECK_EQUAL(node_config{}.*(c.field), c.by_default);
      for (bool want : {true, false}) {
        node_config cfg;
        const char* word = want ? c.yes : c.no;
        auto r = run({c.flag, want ? c.no : c.yes, c.flag, word}, cfg);  // last wins
        BOOST_REQUIRE(r.what == parse_outcome::action::run);
        BOOST_CHECK_EQUAL(cfg.*(c.field), want);
        node_config y;
        BOOST_CHECK_EQUAL(
          load_yaml_text("replicas: 2\n" + std::string(c.yaml) + ": " + word + "\n", "n.yaml", y),
          "");
        BOOST_CHECK_EQUAL(y.*(c.field), want);
      }
      node_config bad;
      auto r = run({c.flag, "maybe"}, bad);
      BOOST_CHECK_EQUAL(r.exit_code, 2);
      BOOST_CHECK_MESSAGE(contains(r.message, c.flag), r.message);
      BOOST_CHECK_MESSAGE(contains(r.message, std::string("must be ") + c.yes + " or " + c.no),
                          r.message);
      for (const char* v : {"maybe", "[on]"}) {
        node_config ybad;
        auto err = load_yaml_text("replicas: 2\n" + std::string(c.yaml) + ": " + v + "\n",
                                  "n.yaml", ybad);
        BOOST_CHECK_MESSAGE(contains(err, ":2: field '" + std::string(c.yaml) + "'"), err);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(rpc_tls_files_go_together) {
  node_config cfg;
  auto r = run({"--rpc-tls-cert", "/c.pem", "--rpc-tls-key", "/k.pem", "--rpc-tls-ca", "/ca.pem",
                "--rpc-tls-name", "node.example"},
               cfg);
  BOOST_REQUIRE(r.what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.rpc_tls.cert_file, "/c.pem");
  BOOST_CHECK_EQUAL(cfg.rpc_tls.key_file, "/k.pem");
  BOOST_CHECK_EQUAL(cfg.rpc_tls.ca_file, "/ca.pem");
  BOOST_CHECK_EQUAL(cfg.rpc_tls.peer_name, "node.example");
  node_config half;
  r = run({"--rpc-tls-cert", "/c.pem"}, half);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "go together"), r.message);
  node_config empty;
  r = run({"--rpc-tls-ca", ""}, empty);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "--rpc-tls-ca"), r.message);
  node_config y;
  BOOST_CHECK_EQUAL(load_yaml_text("rpc_tls_cert: /c.pem\nrpc_tls_key: /k.pem\n"
                                   "rpc_tls_ca: /ca.pem\n",
                                   "n.yaml", y),
                    "");
  BOOST_CHECK_EQUAL(y.rpc_tls.ca_file, "/ca.pem");
  node_config ybad;
  auto err = load_yaml_text("rpc_tls_key: [a]\n", "n.yaml", ybad);
  BOOST_CHECK_MESSAGE(contains(err, ":1: field 'rpc_tls_key'"), err);
}

BOOST_AUTO_TEST_CASE(cluster_timings) {
  node_config dflt;
  BOOST_CHECK_EQUAL(dflt.timings.probe_interval_ms, -1);  // built-in defaults
  node_config cfg;
  auto r = run({"--swim-probe-interval", "500", "--swim-ping-timeout", "100",
                "--swim-indirect-timeout", "150", "--swim-indirect-probes", "0",
                "--swim-suspicion-timeout", "3000", "--rpc-timeout", "4000", "--warm-window", "0",
                "--forget-after", "3600000", "--swim-reconnect-interval", "250"},
               cfg);
  BOOST_REQUIRE(r.what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.timings.probe_interval_ms, 500);
  BOOST_CHECK_EQUAL(cfg.timings.ping_timeout_ms, 100);
  BOOST_CHECK_EQUAL(cfg.timings.indirect_timeout_ms, 150);
  BOOST_CHECK_EQUAL(cfg.timings.indirect_probes, 0);
  BOOST_CHECK_EQUAL(cfg.timings.suspicion_timeout_ms, 3000);
  BOOST_CHECK_EQUAL(cfg.timings.rpc_timeout_ms, 4000);
  BOOST_CHECK_EQUAL(cfg.timings.warm_window_ms, 0);
  BOOST_CHECK_EQUAL(cfg.timings.forget_after_ms, 3600000);
  BOOST_CHECK_EQUAL(cfg.timings.reconnect_interval_ms, 250);
  struct bad {
    std::vector<std::string> args;
    std::string field;
  };
  for (auto& b : std::vector<bad>{{{"--swim-probe-interval", "5"}, "--swim-probe-interval"},
                                  {{"--swim-indirect-probes", "17"}, "--swim-indirect-probes"},
                                  {{"--rpc-timeout", "x"}, "--rpc-timeout"},
                                  {{"--forget-after", "-1"}, "--forget-after"},
                                  {{"--forget-after", "2592000001"}, "--forget-after"},
                                  {{"--swim-reconnect-interval", "0"},
                                   "--swim-reconnect-interval"},
                                  {{"--swim-probe-interval", "100", "--swim-ping-timeout", "90"},
                                   "ping timeout plus the indirect timeout"}}) {
    node_config c;
    auto e = run(b.args, c);
    BOOST_CHECK_EQUAL(e.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(e.message, b.field), e.message << " should name " << b.field);
  }
  node_config y;
  BOOST_CHECK_EQUAL(
    load_yaml_text("swim_suspicion_timeout_ms: 1500\nrpc_timeout_ms: 900\nforget_after_ms: 0\n",
                   "n.yaml", y),
    "");
  BOOST_CHECK_EQUAL(y.timings.forget_after_ms, 0);
  BOOST_CHECK_EQUAL(y.timings.suspicion_timeout_ms, 1500);
  BOOST_CHECK_EQUAL(y.timings.rpc_timeout_ms, 900);
  node_config ybad;
  auto err = load_yaml_text("port: 1\nswim_probe_interval_ms: 0\n", "n.yaml", ybad);
  BOOST_CHECK_MESSAGE(contains(err, ":2: field 'swim_probe_interval_ms'"), err);
}

// CLI11 reads integers with base 0; memcached (and the YAML file) with base 10.
BOOST_AUTO_TEST_CASE(integer_flags_are_decimal) {
  node_config cfg;
  BOOST_REQUIRE(run({"-p", "011211", "-c", "01024", "--replicas", "010", "-t", "+2"}, cfg).what ==
                parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.port, 11211);  // not 4745 (octal)
  BOOST_CHECK_EQUAL(cfg.max_connections, 1024u);
  BOOST_CHECK_EQUAL(cfg.replicas, 10u);
  BOOST_CHECK_EQUAL(cfg.threads, 2u);
  node_config zero;
  BOOST_REQUIRE(run({"-p", "0", "--rpc-port", "000"}, zero).what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(zero.port, 0);
  BOOST_CHECK_EQUAL(zero.rpc_port, 0);
  for (auto& args : std::vector<std::vector<std::string>>{{"-p", "0x2BCB"},
                                                          {"-p", "08080x"},
                                                          {"--swim-probe-interval", "0x100"},
                                                          {"-t", "-"},
                                                          {"-c", "1e3"}}) {
    node_config c;
    auto r = run(args, c);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, "is not a decimal integer"), r.message);
  }
  node_config octal_looking;  // (strtol base 0 refused 08080 as a bad octal number)
  BOOST_REQUIRE(run({"-p", "08080"}, octal_looking).what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(octal_looking.port, 8080);
}

BOOST_AUTO_TEST_CASE(memory_limit_bounds) {
  for (auto& m : {"17592186044480", "17592186044416", "1048577", "2048g"}) {
    node_config c;
    auto r = run({"-m", m}, c);  // (1 << 44 MB wrapped to 64 MiB, and 1 << 44 + 64 to 0)
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, "-m/--memory-limit") && contains(r.message, "at most"),
                        r.message);
  }
  node_config big;
  BOOST_REQUIRE(run({"-m", "1048576"}, big).what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(big.memory_limit, 1ull << 40);
  node_config unit;
  BOOST_REQUIRE(run({"-m", "1536m"}, unit).what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(unit.memory_limit, 1536ull << 20);
}

BOOST_AUTO_TEST_CASE(join_seeds_are_host_and_port) {
  node_config cfg;
  BOOST_REQUIRE(run({"--join", " a:22001 ,b.example:1,, [::1]:65535 "}, cfg).what ==
                parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.join.size(), 3u);
  BOOST_CHECK_EQUAL(cfg.join.at(0), "a:22001");  // blanks trimmed
  BOOST_CHECK_EQUAL(cfg.join.at(1), "b.example:1");
  BOOST_CHECK_EQUAL(cfg.join.at(2), "[::1]:65535");
  // A port is decimal, leading zeros dropped (KJ's address parser would read them in octal).
  node_config zeros;
  BOOST_REQUIRE(run({"--join", "a:022001,b:02200"}, zeros).what == parse_outcome::action::run);
  BOOST_CHECK_EQUAL(zeros.join.at(0), "a:22001");
  BOOST_CHECK_EQUAL(zeros.join.at(1), "b:2200");
  for (auto& seed : {"10.0.0.1:2200l", "a:99999", "a:0", "a:", ":22001", "a", "::1:22001",
                     "[::1]", "a b:1", "a:-1", "a:1234567", "", " , "}) {
    node_config c;
    auto r = run({"--join", seed}, c);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, "--join"), seed << ": " << r.message);
    node_config y;
    auto err = load_yaml_text("port: 1\njoin: \"" + std::string(seed) + "\"\n", "n.yaml", y);
    BOOST_CHECK_MESSAGE(contains(err, ":2: field 'join'"), seed << ": " << err);
  }
  node_config list;
  BOOST_CHECK_EQUAL(load_yaml_text("join:\n  - \" a:1\"\n  - \"[fe80::1]:2\"\n", "n.yaml", list),
                    "");
  BOOST_CHECK_EQUAL(list.join.at(0), "a:1");
  node_config badlist;
  auto err = load_yaml_text("join:\n  - a:1\n  - b:x\n", "n.yaml", badlist);
  BOOST_CHECK_MESSAGE(contains(err, "field 'join'") && contains(err, "'b:x'"), err);
}

// A check across settings names what was given: the flag, else the file's field and line.
BOOST_AUTO_TEST_CASE(checks_across_settings_name_where_the_value_came_from) {
  auto path = temp_file("port: 23000\nmemory_mb: 1\n");
  node_config cfg;
  auto r = run({"--config", path}, cfg);  // -I's default 1m is more than half of 1 MB
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, path + ":2: field 'memory_mb'"), r.message);
  node_config flag;
  r = run({"--config", path, "-I", "1m"}, flag);
  BOOST_CHECK_MESSAGE(contains(r.message, "-I/--max-item-size") && !contains(r.message, path),
                      r.message);
  std::remove(path.c_str());
  for (auto [text, where] : {std::pair{"# timings\nswim_ping_timeout_ms: 150\n",
                                       ":2: field 'swim_ping_timeout_ms'"},
                             std::pair{"shards: 64\n", ":1: field 'shards'"},
                             std::pair{"rpc: off\njoin: a:1\n", ":2: field 'join'"}}) {
    const auto file = temp_file(text);
    node_config c;
    auto e = run({"--config", file}, c);
    BOOST_CHECK_MESSAGE(contains(e.message, file + where), e.message);
    std::remove(file.c_str());
  }
}

// The RPC port must not be the memcached port, nor default past 65535 (it would become any
// free port: bifrostctl and --join by convention would miss it).
BOOST_AUTO_TEST_CASE(rpc_port_clashes_are_config_errors) {
  node_config same;
  auto r = run({"-p", "23000", "--rpc-port", "23000"}, same);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "--rpc-port") && contains(r.message, "differ"),
                      r.message);
  const auto file = temp_file("port: 23000\nrpc_port: 23000\n");
  node_config y;
  r = run({"--config", file}, y);
  BOOST_CHECK_MESSAGE(contains(r.message, file + ":2: field 'rpc_port'"), r.message);
  std::remove(file.c_str());
  node_config apart;  // (another RPC address: no clash)
  BOOST_CHECK(run({"-p", "23000", "--rpc-port", "23000", "--rpc-listen", "127.0.0.2"}, apart)
                .what == parse_outcome::action::run);
  node_config high;
  r = run({"-p", "65000"}, high);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "-p/--port") && contains(r.message, "--rpc-port"),
                      r.message);
  for (auto ok : {std::vector<std::string>{"-p", "65000", "--rpc-port", "1234"},
                  std::vector<std::string>{"-p", "65000", "--no-rpc"},
                  std::vector<std::string>{"-p", "64535"},
                  std::vector<std::string>{"-p", "0", "--rpc-port", "0"}}) {
    node_config c;
    auto o = run(ok, c);
    BOOST_CHECK_MESSAGE(o.what == parse_outcome::action::run, ok.at(1) << ": " << o.message);
  }
}

BOOST_AUTO_TEST_CASE(rpc_advertise) {
  node_config cfg;
  BOOST_REQUIRE(run({"--rpc-advertise", "cache-1.example:22001"}, cfg).what ==
                parse_outcome::action::run);
  BOOST_CHECK_EQUAL(cfg.rpc_advertise, "cache-1.example:22001");
  node_config bad;
  auto r = run({"--rpc-advertise", "cache-1.example"}, bad);
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(contains(r.message, "--rpc-advertise"), r.message);
  node_config y;
  BOOST_CHECK_EQUAL(load_yaml_text("rpc_advertise: \"[fd00::1]:22001\"\n", "n.yaml", y), "");
  BOOST_CHECK_EQUAL(y.rpc_advertise, "[fd00::1]:22001");
  auto err = load_yaml_text("port: 1\nrpc_advertise: x\n", "n.yaml", y);
  BOOST_CHECK_MESSAGE(contains(err, ":2: field 'rpc_advertise'"), err);
}

BOOST_AUTO_TEST_CASE(no_rpc_refuses_cluster_settings) {
  for (auto& args : std::vector<std::vector<std::string>>{{"--rpc-port", "1"},
                                                          {"--node-name", "n1"},
                                                          {"--replicas", "2"},
                                                          {"--rpc-listen", "127.0.0.1"},
                                                          {"--replication-ack", "all"},
                                                          {"--replicas", "1"},
                                                          {"--warm-window", "1000"},
                                                          {"--rpc-advertise", "a:1"},
                                                          {"--join", "a:1"}}) {
    node_config c;
    auto with = args;
    with.push_back("--no-rpc");
    auto r = run(with, c);
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(contains(r.message, args[0]) && contains(r.message, "--no-rpc"),
                        r.message);
  }
  node_config alone;
  BOOST_CHECK(run({"--no-rpc", "-p", "0"}, alone).what == parse_outcome::action::run);
  BOOST_CHECK(!alone.rpc_enabled);
  BOOST_CHECK(cluster_settings_of(alone).empty());
  auto path = temp_file("rpc: off\nreplicas: 2\n");
  node_config y;
  auto r = run({"--config", path}, y);
  BOOST_CHECK_MESSAGE(contains(r.message, path + ":2: field 'replicas'"), r.message);
  node_config yf;
  r = run({"--config", path, "--replicas", "1", "--swim-probe-interval", "300"}, yf);
  BOOST_CHECK_MESSAGE(contains(r.message, "--swim-probe-interval"), r.message);
  std::remove(path.c_str());
  node_config timed;  // what bifrostd checks before it runs on without its RPC
  BOOST_REQUIRE(run({"--warm-window", "1000"}, timed).what == parse_outcome::action::run);
  BOOST_CHECK(!cluster_settings_of(timed).empty());
}

BOOST_AUTO_TEST_CASE(help_exits_0) {
  node_config cfg;
  auto r = run({"--help"}, cfg);
  BOOST_CHECK(r.what == parse_outcome::action::exit);
  BOOST_CHECK_EQUAL(r.exit_code, 0);
  BOOST_CHECK(contains(r.message, "--data-dir"));
}

BOOST_AUTO_TEST_SUITE_END()
