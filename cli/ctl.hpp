// bifrostctl: the cluster's command-line client, a Cap'n Proto RPC client of `Node`
// (cluster/bifrost.capnp). This library holds all of it; cli/bifrostctl.cpp only calls main().
//
//   bifrostctl --node HOST:PORT [--json] [--timeout SECONDS] <command>
//
// Commands and the RPCs they make (every connection first calls `hello(schemaVersion,
// MemberInfo{name "bifrostctl"})`):
//   status                      Node.status
//   members                     Node.members
//   ring [--key K]              Node.ring(K) with --key; Node.members without
//   stats [--all]               Node.stats; with --all: Node.members, then Node.stats on every
//                               alive member's rpc address (a connection of its own each,
//                               at most 16 members asked at once)
//   get K                       Node.execute([get K], client, sink): value bytes raw on stdout
//   set K V [--ttl N] [--flags F]  Node.execute([store/set K V], client, null); V from
//   set K --value-file PATH|-      a file or stdin; above 64 KiB Node.upload([store/set K],
//                               client), V in 256 KiB chunks through its sink, then finish
//   delete K                    Node.execute([remove K], client, null)
//   drain, leave [--wait]       Node.drain / Node.leave (holdUntilExit with --wait, then
//                               Node.status every 200 ms (at most --timeout / 2) until the
//                               connection closes, then a new connection's hello: the same
//                               startedAtMs answering means the connection was lost, and
//                               the drain or leave is asked again on the new one)
//
// Exit statuses (`exit_code`): 0 success; 1 an RPC error, a miss (get), a store that did not
// store (set), NOT_FOUND (delete), no node answered (stats --all), or a --wait whose node
// stopped before its linger was over or whose connection was lost 4 times while the node ran;
// 2 bad usage, or the node cannot be reached (bad address, DNS failure, connection refused or
// lost, no answer within --timeout); 3 the node speaks another schema version (the message
// names both).
//
// Time bounds: every wait (address lookup, connect, each call) ends after --timeout seconds
// without progress. A streamed value counts as progress chunk by chunk, so a 1 GiB `get` is
// bounded by stalls, not by its total transfer time, and each `status` answer during a
// `drain --wait` counts too, so the wait lasts the node's linger.
//
// Threading: everything runs on the calling thread's KJ event loop; a `session` and the
// clients it hands out belong to that thread and to that loop. One exception: `stats --all`
// asks the other members from up to 15 worker threads, each with a KJ loop, a session and
// connections of its own (nothing of theirs is shared; each writes the answers of the
// members it took, read after the joins), so members that never answer cost one --timeout
// together.
#pragma once

#include "cluster/bifrost.capnp.h"
#include "cluster/tls_options.hpp"

#include <kj/async-io.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace bifrost::cluster {
class tls_context;
}

namespace bifrost::ctl {

namespace rpc = bifrost::cluster::rpc;

enum exit_code : int {
  exit_ok = 0,
  exit_failed = 1,            // RPC error, miss, not stored / not found
  exit_unreachable = 2,       // also bad usage (CLI11's errors)
  exit_version_mismatch = 3,
};

struct options {
  std::string node;               // HOST:PORT of the node's RPC listener ([v6]:port works)
  bool json = false;
  double timeout_s = 5.0;         // per wait, see "Time bounds" above
  std::string command;            // status members ring stats get set delete drain leave
  std::string key;                // get, set, delete; ring: the first --key
  std::vector<std::string> keys;  // ring: every --key, in order (one RPC each)
  bool has_key = false;           // ring: --key was given
  std::string value;              // set: VALUE, or what --value-file held
  std::string value_file;         // set: read the value from this file ('-': stdin)
  int64_t ttl = 0;                // set: raw memcached exptime (storage/ops.hpp)
  uint32_t flags = 0;             // set
  bool all = false;               // stats --all
  bool wait = false;              // drain/leave --wait: until the node has stopped
  cluster::tls_options tls;       // --tls-cert/--tls-key/--tls-ca/--tls-name: mutual TLS
};

struct parse_result {
  bool run = false;               // false: exit with `exit_code` (help printed, or an error)
  int exit_code = exit_ok;
};

/// Parses bifrostctl's arguments (argv[0] is the program name) into `opts`. --help goes to
/// `out` (exit 0); a usage error goes to `err` with CLI11's message (exit 2).
parse_result parse_args(int argc, const char* const* argv, options& opts, std::ostream& out,
                        std::ostream& err);

/// The usage text (what --help prints).
std::string usage();

/// Connections to nodes, and bounded waits on the calling thread's KJ loop.
///
/// Failures are thrown as `ctl::failure` (exit status + message without the "bifrostctl: "
/// prefix); run() and main() turn them into exit statuses. Connections live as long as the
/// session; destroy the session before the AsyncIoContext.
class session {
public:
  /// `tls` (optional, cluster/tls.hpp): every connection is mutual TLS. Throws failure
  /// {exit_unreachable, ...} when its files cannot be read or parsed.
  session(kj::AsyncIoContext& io, std::chrono::milliseconds timeout,
          const cluster::tls_options& tls = {});
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// Connects to `address` (HOST:PORT) and says hello. Throws failure: exit_unreachable
  /// (lookup, connect, disconnect, timeout), exit_version_mismatch (refused or answered
  /// another version), exit_failed (any other hello error).
  /// `hint`: a failure says what may be wrong with the address (not a node's RPC port, or a
  /// TLS node); off for the addresses of members a node listed (a paused member is no
  /// mistaken port).
  rpc::Node::Client connect(const std::string& address, bool hint = true);

  /// Waits for `promise` on the loop, at most `timeout` without progress. A timeout, or a
  /// DISCONNECTED exception, throws failure{exit_unreachable, "cannot reach node <address>:
  /// ..."}; other kj exceptions propagate unchanged.
  template <typename T>
  T wait(kj::Promise<T>&& promise, const std::string& address, const char* what);

  /// When the node at `address` started (ms since the epoch, from its last hello here; 0
  /// if never greeted, or an older node): tells a restarted process from the same one.
  uint64_t started_at_ms(const std::string& address) const {
    auto it = started_at_.find(address);
    return it == started_at_.end() ? 0 : it->second;
  }

  /// Counts progress (a received chunk): restarts the current wait's timeout.
  void note_progress() noexcept { ++progress_; }

  kj::AsyncIoContext& io() noexcept { return io_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

private:
  struct connection;
  kj::Promise<void> watchdog(uint64_t seen);

  kj::AsyncIoContext& io_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<cluster::tls_context> tls_;
  uint64_t progress_ = 0;
  std::vector<kj::Own<connection>> connections_;
  std::map<std::string, uint64_t> started_at_;  // address -> hello's startedAtMs
};

/// An error that ends the command with `code`; `message` has no "bifrostctl: " prefix.
struct failure {
  int code;
  std::string message;
  bool refused = false;  // session::connect: the connection was refused (nothing listens)
};

/// Runs `opts.command` against `node` (connected to `opts.node`, already greeted). Results go
/// to `out` (for `get`: the raw value bytes), diagnostics to `err`. Returns the exit status.
int run_command(session& s, rpc::Node::Client node, const options& opts, std::ostream& out,
                std::ostream& err);

/// Connects to `opts.node` on `io`, says hello and runs the command. Returns the exit status.
int run(kj::AsyncIoContext& io, const options& opts, std::ostream& out, std::ostream& err);

/// The whole program: parses `argv`, sets up a KJ loop on this thread, runs. What main() calls.
int main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

/// "5 s", "1.5 s".
std::string format_seconds(std::chrono::milliseconds d);

/// Text names used in tables and JSON.
const char* state_name(rpc::MemberState s);   // alive suspect dead left
const char* status_name(rpc::Status s);       // STORED NOT_STORED EXISTS NOT_FOUND DELETED ...

/// Formats rows as space-aligned columns (two spaces between, last column unpadded).
void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

// -- implementation ---------------------------------------------------------------------------

template <typename T>
T session::wait(kj::Promise<T>&& promise, const std::string& address, const char* what) {
  auto raced = promise.then([](T&& value) { return kj::Maybe<T>(kj::mv(value)); })
                   .exclusiveJoin(watchdog(progress_).then([]() { return kj::Maybe<T>(nullptr); }));
  kj::Maybe<T> result = nullptr;
  try {
    result = raced.wait(io_.waitScope);
  } catch (kj::Exception& e) {
    if (e.getType() != kj::Exception::Type::DISCONNECTED)
      throw;
    throw failure{exit_unreachable, "cannot reach node " + address + ": " +
                                        std::string(e.getDescription().cStr())};
  }
  KJ_IF_MAYBE(value, result) { return kj::mv(*value); }
  throw failure{exit_unreachable, "cannot reach node " + address + ": no answer to " + what +
                                      " within " + format_seconds(timeout_)};
}

} // namespace bifrost::ctl
