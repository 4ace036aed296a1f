// bifrostd's command line and YAML configuration.
//
// Precedence: built-in defaults < the YAML file given by --config < flags on the command line.
// memcached's flags keep their meaning (-p -l -m -t -c -I -v). Every error names the field
// (and, for the file, the line) and makes bifrostd exit with status 2.
#pragma once

#include "actors/node_config.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bifrost::cli {

struct parse_outcome {
  enum class action { run, exit } what = action::run;
  int exit_code = 0;       // with action::exit: 0 for --help/--version, 2 for errors
  std::string message;     // printed by the caller (stdout for 0, stderr for 2)
};

/// Parses bifrostd's arguments (argv[0] is the program name) into `cfg`.
parse_outcome parse_args(int argc, const char* const* argv, actors::node_config& cfg);

/// The node name when --node-name is not given: "<listen>:<port>", unique among the nodes of
/// one host; with a wildcard listen address (0.0.0.0, ::) "<host name>:<port>" instead, which
/// is also unique across hosts (every host would otherwise be "0.0.0.0:11211"); an IPv6
/// address in brackets.
std::string default_node_name(const std::string& listen, uint16_t port, const std::string& host);

/// Applies a YAML config file to `cfg`. Returns an error message naming file, line and field,
/// or an empty string. `lines`: where each field given stands (for errors found later, in
/// checks across fields).
std::string load_yaml_file(const std::string& path, actors::node_config& cfg,
                           std::map<std::string, int>* lines = nullptr);
/// Same, from YAML text (`origin` names it in messages).
std::string load_yaml_text(const std::string& text, const std::string& origin,
                           actors::node_config& cfg, std::map<std::string, int>* lines = nullptr);

/// The YAML field an unknown `key` most likely meant, or "": the field of a flag's name
/// (`memory-limit`, `--conn-limit`), a field spelt a few letters off, or one without its unit
/// (`memory` for `memory_mb`). load_yaml_text()'s "unknown field" error names it.
std::string unknown_field_hint(const std::string& key);
/// The same for a flag bifrostd does not know (`--memory`): the flag it likely meant, or "".
std::string unknown_flag_hint(const std::string& flag);
/// Every YAML field unknown_field_hint() may name.
std::vector<std::string> yaml_fields();

/// Parses a size with an optional unit: "1048576", "512k", "1m", "1g" (binary units,
/// case-insensitive, optional trailing 'b'). nullopt when malformed or overflowing.
std::optional<uint64_t> parse_size(std::string_view s);

/// The cluster settings (RPC, membership, replication, TLS, timings) `cfg` holds with other
/// values than the defaults, as (flag, YAML field) pairs: empty for a node that asked for
/// nothing of the cluster.
std::vector<std::pair<const char*, const char*>> cluster_settings_of(
  const actors::node_config& cfg);

/// Every option with its default, one per line (bifrostd --help lists the same).
std::string describe_defaults();

} // namespace bifrost::cli
