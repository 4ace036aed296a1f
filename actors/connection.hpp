// The connection actor: one client socket speaking the memcached text and meta protocols.
//
// Hosted on the I/O loop that accepted the socket (actors/loop_actor.hpp). It reads, parses
// every complete request in the buffer (pipelining), turns each into storage ops
// (actors/memcache_exec.hpp), routes every key through the current route snapshot to its
// shard, and sends one (exec_atom) batch per shard per read — so a single GET costs one
// message to its shard and one back. Responses are written strictly in request order; values
// arrive as pinned slices and go out by copy or sendfile (actors/socket_writer.hpp).
//
// Backpressure: reading pauses while more than `max_pending` requests wait or more than
// `max_output` bytes are queued, and resumes when they drain.
// Ownership: the actor owns the fd and its uv_poll handle; it holds a strong reference to
// itself until the handle is closed, then quits. Thread affinity: the loop thread only.
#pragma once

#include "actors/loop_actor.hpp"
#include "actors/memcache_exec.hpp"
#include "actors/messages.hpp"
#include "actors/node_stats.hpp"
#include "actors/out_queue.hpp"
#include "actors/socket_writer.hpp"
#include "protocol/memcache.hpp"

#include <caf/actor.hpp>

#include <uv.h>

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace bifrost::actors {

class connection;

/// What the actors of one I/O loop share. Owned by the node; touched only on that loop.
struct loop_context {
  io_loop* loop = nullptr;
  node_shared* node = nullptr;
  loop_counters* counters = nullptr;
  route_snapshot_ptr routes;               // replaced by the listener on every update
  std::unordered_set<connection*> conns;   // live connections of this loop
  bool draining = false;                   // shutting down: close idle connections
};

class connection : public loop_actor {
public:
  connection(caf::actor_config& cfg, io_loop& loop, loop_context& ctx, int fd);
  ~connection() override;

  caf::behavior make_behavior() override;
  const char* name() const override { return "connection"; }

  /// Closes the socket now (loop thread only); pending replies are dropped.
  void close_now();
  /// Stops reading; closes once every pending reply is written.
  void close_when_idle();

private:
  enum class pending_kind : uint8_t { exec, flush, stats, immediate };

  struct pending {
    pending_kind kind = pending_kind::immediate;
    proto::request req;        // views point into `line`
    std::string line;          // owned copy of the command line
    std::vector<storage::op> ops;
    std::vector<storage::result> results;
    uint32_t outstanding = 0;
    std::string reply;         // immediate / error reply bytes
    bool close_after = false;  // quit
    storage::shard_stats stats;
  };

  struct batch_ref {
    uint64_t seq;
    uint32_t op;
  };

  static void on_poll(uv_poll_t* h, int status, int events);
  static void on_closed(uv_handle_t* h);

  void on_readable();
  void process_input();
  void handle_request(size_t consumed);
  void drop_refused_value(const std::vector<caf::actor>& shards);
  void handle_local(pending& p);
  void route_op(uint64_t seq, uint32_t index, size_t shard);
  void send_batches();
  void on_results(uint64_t tag, storage::result_batch& results);
  void on_stats(uint64_t seq, const storage::shard_stats& st);
  void complete_ready();
  void write_out();
  void update_poll();
  pending& push_pending(pending_kind k);
  void adopt_line(pending& p);

  loop_context& ctx_;
  int fd_;
  uv_poll_t poll_;
  int poll_events_ = 0;
  bool poll_open_ = false;
  bool closing_ = false;
  bool read_closed_ = false;   // EOF, quit, or draining: no more input
  bool input_paused_ = false;
  caf::actor self_ref_;        // keeps the actor alive until the handle is closed

  std::vector<char> rbuf_;
  size_t rpos_ = 0;
  size_t rend_ = 0;
  size_t swallow_ = 0;
  proto::request req_;
  proto::parser_config pcfg_;

  std::deque<pending> pending_;
  uint64_t base_seq_ = 0;      // sequence number of pending_.front()
  uint64_t next_tag_ = 1;
  std::vector<storage::op_batch> out_batches_;           // per shard, reused
  std::vector<std::vector<batch_ref>> out_refs_;         // per shard, reused
  std::unordered_map<uint64_t, std::vector<batch_ref>> inflight_;

  out_queue out_;
  socket_writer writer_;
  bool want_write_ = false;
};

} // namespace bifrost::actors
