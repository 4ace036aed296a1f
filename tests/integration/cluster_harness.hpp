// Multi-node integration harness: real bifrostd processes on 127.0.0.1, a tiny memcached text
// client and bifrostctl runs, every wait bounded.
//
//   cluster c;                                   // temp dir for node stderr files
//   auto& n1 = c.start("n1");                    // fresh ports, waits for the ready line
//   auto& n2 = c.start("n2", {n1.rpc_port});     // --join 127.0.0.1:<n1 rpc>
//   mc_client m(n1.port); m.set("k", "v");
//   auto r = run_ctl({"--node", n1.rpc(), "members", "--json"});
//   c.kill9(n2); c.stop(n1);                     // by pid only; ~cluster kills what is left
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace bifrost::it {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t);

// Polls pred every `step` until it is true or `limit` has passed; returns the last answer.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit,
                std::chrono::milliseconds step = std::chrono::milliseconds(20));

// A loopback port nobody listens on right now (bind port 0, read it, close). Never hands out
// the same port twice within the process.
int free_port();

// Directory of bifrostd / bifrostctl: $BIFROST_BIN_DIR if set, else the build's bin dir.
std::string bin_dir();

// Prints to stdout and to the Boost.Test log (message level).
void report(const std::string& msg);

// ---------------------------------------------------------------------------------------------
// bifrostctl

struct ctl_result {
  int exit_code = -1;  // -1: killed after the timeout, or did not start
  std::string out;
  std::string err;
  bool timed_out = false;
  double seconds = 0;
};

// Runs bifrostctl with args (fork/execv, stdout and stderr captured), killing it (by its pid)
// after `limit`.
ctl_result run_ctl(const std::vector<std::string>& args,
                   std::chrono::milliseconds limit = std::chrono::milliseconds(10000));

// `members --json` of the node at rpc_port; nullopt when the call failed or is not JSON.
std::optional<nlohmann::json> members(int rpc_port);
// name -> state from members(rpc_port); empty when the call failed.
std::map<std::string, std::string> member_states(int rpc_port);
// `stats --json`-like: NAME VALUE lines parsed into a map (empty on failure).
std::map<std::string, std::string> node_stats(int rpc_port);

// ---------------------------------------------------------------------------------------------
// Nodes

struct node {
  std::string name;
  int port = 0;      // memcached
  int rpc_port = 0;  // cluster / bifrostctl
  pid_t pid = -1;    // -1 once reaped
  int stdout_fd = -1;
  std::string stderr_path;
  int exit_status = -1;  // raw waitpid status once reaped
  std::vector<std::string> last_args;

  std::string rpc() const { return "127.0.0.1:" + std::to_string(rpc_port); }
  bool running() const { return pid > 0; }
};

struct node_options {
  std::vector<int> join;  // seeds' rpc ports
  int replicas = 1;
  int port = 0;      // 0: pick a free one
  int rpc_port = 0;  // 0: pick a free one
  std::vector<std::string> extra_args;  // appended to bifrostd's command line
  std::chrono::milliseconds ready_timeout{10000};
};

class cluster {
public:
  cluster();
  ~cluster();  // SIGKILLs (by pid) every node still running, reaps it
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  // Starts a node and waits for its ready line; throws (after killing it) when none comes.
  node& start(const std::string& name, node_options opt = {});
  node& start(const std::string& name, std::vector<int> join, int replicas = 1);
  // Starts a stopped node again with the same name and ports.
  node& restart(node& n, std::vector<int> join, int replicas = 1);
  node& restart(node& n, const node_options& opt);  // opt.port / rpc_port are n's

  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit code (or 128+signal).
  int stop(node& n, std::chrono::milliseconds grace = std::chrono::milliseconds(10000));
  void kill9(node& n);
  // Non-blocking: true (and records the status) when the process has exited.
  bool reap(node& n);

  std::vector<node*> nodes();
  node& get(const std::string& name);
  std::string stderr_tail(const node& n, size_t bytes = 2000) const;
  void dump_logs() const;  // tail of every node's stderr to stdout
  const std::string& dir() const { return dir_; }

private:
  node& spawn(node& n, const node_options& opt);
  std::string dir_;
  std::vector<std::unique_ptr<node>> nodes_;
};

// True when `members --json` on every observer answers and shows exactly `names` as its alive
// members (members in other states are ignored).
bool all_see_alive(const std::vector<node*>& observers, const std::vector<std::string>& names);

// ---------------------------------------------------------------------------------------------
// memcached text client

struct mc_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class mc_client {
public:
  explicit mc_client(int port, std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));
  ~mc_client();
  mc_client(const mc_client&) = delete;
  mc_client& operator=(const mc_client&) = delete;

  // The reply line ("STORED", "SERVER_ERROR ...", ...). Throws mc_error on I/O failure/timeout.
  std::string set(const std::string& key, const std::string& value, uint32_t flags = 0,
                  uint32_t exptime = 0);
  // nullopt on a miss; throws mc_error on an error reply, I/O failure or timeout.
  std::optional<std::string> get(const std::string& key);
  std::string del(const std::string& key);
  // One "get k1 k2 ...": the (key, value) pairs in reply order.
  std::vector<std::pair<std::string, std::string>> multi_get(const std::vector<std::string>& keys);
  // Pipelined: all sets written, then all replies read. Returns the reply lines, in order.
  std::vector<std::string> set_pipelined(const std::vector<std::pair<std::string, std::string>>& kv);
  // Pipelined single-key gets; one optional per key, in order.
  std::vector<std::optional<std::string>> get_pipelined(const std::vector<std::string>& keys);

  void send_all(const std::string& data);
  std::string read_line();               // without the CRLF
  std::string read_exact(size_t n);      // exactly n bytes

private:
  void fill();  // at least one more byte into buf_, or throw
  // Reads one get-style reply ("VALUE ..."* "END"), appending the hits.
  void read_values(std::vector<std::pair<std::string, std::string>>& out);
  int fd_ = -1;
  std::chrono::milliseconds timeout_;
  clock_type::time_point deadline_;
  std::string buf_;
  size_t pos_ = 0;
};

}  // namespace bifrost::it
