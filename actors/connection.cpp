#include "actors/connection.hpp"

#include "actors/cluster_view.hpp"
#include "actors/dispatcher.hpp"
#include "actors/log.hpp"
#include "actors/route_table.hpp"

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace bifrost::actors {

namespace {

constexpr size_t read_chunk = 16 * 1024;       // minimum free space before a read
constexpr size_t max_pending = 4096;           // requests waiting for replies: pause input
constexpr size_t max_output = 8u << 20;        // bytes queued for the socket: pause input
// Ops sent to other members whose requests are not written yet: pause input. A member's
// answer is a copy, held by this node until the client reads it (a local value is only a
// pinned slice of the shard's segment); and every connection's ops to a member share one
// link, in order. Without this, a client that pipelines gets of remote 60 KiB values and
// does not read made its node ask for and hold about 1000 of them (60 MiB) per connection,
// and 20 such clients queued 1.2 GB on the links: other clients' reads behind them were
// not answered within --rpc-timeout and missed.
constexpr size_t max_remote_pending = 256;
// A connection earns two bounds: of max_pending, and of max_remote_pending for the reads of
// values among those ops (their answers are the copies; writes are not counted there: the
// client sent their values, and they are sent on). At first it may use 1/16 of each, twice
// as much each time its output is written whole and its client acknowledged what came
// before (window_level_, window_grow_queued), and 1/16 again once its socket blocks. A client
// that pipelines gets and does not read thus makes its node parse a few hundred requests
// and fetch 16–64 remote values, not 4096 and 256: 100 such clients of remote 60 KiB values
// grew a node by 1.3–2.6 GB with the fixed bounds, of local 1000 B values by 1.7–2.1 GB
// (each waiting request held about 1.5 KiB); now 110–180 MiB, with small or default receive
// buffers. (A read counts where dispatch_ops placed it: a failover or a warm read from a
// past owner is not counted again; the bound on waiting requests covers them.)
constexpr unsigned max_window_level = 4;
// The window grows only while less than this of what was written to the client before the
// flush is not acknowledged yet (SIOCOUTQ): a socket's send buffer grows to megabytes, so
// "written whole" alone let a client that never read earn the whole window before its socket
// blocked. (Acknowledged is not read: the client's kernel acknowledges what fits its receive
// buffer, which does not grow while it does not read, ~128 KiB; what was just written is not
// counted, so that a client behind a long round trip still earns its window.)
constexpr size_t window_grow_queued = 64u << 10;
// Output queued while the socket is blocked: pause input (as memcached, which reads a
// connection's next requests only once their replies are written). max_output is for
// clients that read.
constexpr size_t blocked_output = 256u << 10;
// A draining connection drops at most this much of its client's input before it closes.
constexpr size_t linger_max = 4u << 20;
// A get-family request with more keys goes in parts of this many (get_rest), while fewer
// than max_parts_pending requests wait (so that a long line of keys does not put 4096 parts
// before the warming's scans).
constexpr size_t get_part_keys = 64;
constexpr size_t max_parts_pending = 64;
constexpr size_t max_get_line = 1u << 20;      // a get-family line may be long, not endless
// A new connection's value_estimate_ (at most -I): its first reads may go 32 at a time. Higher
// would pin more of -m for a client that pipelines large values at once and never reads;
// lower would make a client that writes its pipeline whole before it reads (small socket
// buffers, a long line at its end) wait for the node as the node waits for it sooner.
constexpr uint64_t initial_value_estimate = 256u << 10;
// In a cluster, the values asked of other members that a connection's pending requests may
// bring (remote_reads_pending_ × remote_estimate_): a member's answer is a copy in this
// node's memory until the client reads it, outside -m. remote_estimate_ starts at -I, so a
// new connection's first remote reads of up to -I each go 16 at a time with the default -I
// (1 MiB; as the window allowed before) and one at a time with -I 16m or more; hits lower it
// as they do value_estimate_, misses do not. Before, a
// client that pipelined 20 gets of 128 MiB values through a node that owns none of them, and
// did not read, made that node hold 2.1–2.5 GB per connection (-I 128m, a user's trial).
constexpr uint64_t remote_read_bytes = 16u << 20;

bool is_get_family(proto::command c) {
  using proto::command;
  return c == command::get || c == command::gets || c == command::gat || c == command::gats;
}

bool is_storage(proto::command c) {
  using proto::command;
  switch (c) {
    case command::set:
    case command::add:
    case command::replace:
    case command::append:
    case command::prepend:
    case command::cas:
    case command::ms:
      return true;
    default:
      return false;
  }
}

bool is_meta(proto::command c) {
  using proto::command;
  return c == command::mg || c == command::ms || c == command::md || c == command::ma ||
         c == command::mn || c == command::me;
}

// Re-points every view of `req` that lies inside [old, old+len) to the same offset in `nu`.
void rebase(proto::request& req, const char* old, size_t len, const char* nu) {
  auto fix = [&](std::string_view& v) {
    if (v.data() >= old && v.data() + v.size() <= old + len)
      v = std::string_view(nu + (v.data() - old), v.size());
    else
      v = {};
  };
  for (auto& k : req.keys)
    fix(k);
  fix(req.meta.raw);  // (the meta tokens are offsets in it)
  fix(req.stats_arg);
  fix(req.line);
  req.data = {};
}

} // namespace

connection::connection(caf::actor_config& cfg, io_loop& loop, loop_context& ctx, int fd)
  : loop_actor(cfg, loop), ctx_(ctx), fd_(fd), writer_(fd) {
  poll_.data = this;
  pcfg_.max_item_size = ctx.node->cfg.max_item_size;
  value_estimate_ = std::min<uint64_t>(ctx.node->cfg.max_item_size, initial_value_estimate);
  remote_estimate_ = std::max<uint64_t>(ctx.node->cfg.max_item_size, 1);
  out_ = out_queue(ctx.node->cfg.sendfile_threshold);
}

connection::~connection() {
  if (fd_ >= 0)
    ::close(fd_);
}

caf::behavior connection::make_behavior() {
  self_ref_ = caf::actor_cast<caf::actor>(this);
  id_ = ctx_.next_conn_id++;
  ctx_.by_id.emplace(id_, this);
  rbuf_.resize(read_chunk);
  if (uv_poll_init(loop().uv(), &poll_, fd_) != 0) {
    ::close(fd_);
    fd_ = -1;
    ctx_.by_id.erase(id_);
    ctx_.counters->add(ctx_.counters->curr_connections, static_cast<uint64_t>(-1));
    ctx_.node->connections.fetch_sub(1, std::memory_order_relaxed);
    self_ref_ = nullptr;
    quit();
    return {};
  }
  poll_.data = this;
  poll_open_ = true;
  entry_ = ctx_.node->open_conn(fd_, conn_entry::state::idle, uv_now(loop().uv()));
  update_poll();
  // Accepted just before the drain began, launched after the listener's walk of by_id: it
  // closes when idle like the others, not at the drain's deadline.
  if (ctx_.draining)
    close_when_idle();
  // A stray message must never cost the sender its life (CAF would answer it with an error
  // that quits a shard): drop anything unexpected.
  set_default_handler(caf::drop);
  return {
    // Reply to a fire-and-forget op (tag 0, see send_side_effect): nothing to do.
    [](result_atom, uint64_t, storage::result_batch&) {},
    [this](stats_atom, uint64_t seq, const storage::shard_stats& st) { on_stats(seq, st); },
    [this](replicated_atom, uint64_t seq, bool ok) { on_replicated(seq, ok); },
    [this](close_atom) { quit(); },
  };
}

// -- pending requests ---------------------------------------------------------------------------

void connection::pending::reset() noexcept {
  constexpr size_t keep = 64;  // larger buffers (a long multi-get) are not kept per connection
  kind = pending_kind::immediate;
  routing.clear();
  req.clear();
  line.clear();
  if (ops.capacity() > keep) std::vector<storage::op>().swap(ops); else ops.clear();
  if (results.capacity() > keep)
    std::vector<storage::result>().swap(results);
  else
    results.clear();
  outstanding = 0;
  remote_ops = 0;
  remote_reads = 0;
  reads = 0;
  partial = false;
  if (reply.capacity() > 4096) std::string().swap(reply); else reply.clear();
  // (a long get line's copy and its key list: kept, every slot would end up holding one)
  if (line.capacity() > 4096) std::string().swap(line);
  if (req.keys.capacity() > keep) std::vector<std::string_view>().swap(req.keys);
  close_after = false;
  replicated = false;
  must_answer = 0;
  flush_ring = 0;
  stats = storage::shard_stats{};
  stats_sub = proto::stats_kind::general;
}

connection::pending& connection::pending_ring::emplace_back() {
  if (size_ == slots_.size()) {
    std::vector<std::unique_ptr<pending>> grown(std::max<size_t>(4, slots_.size() * 2));
    for (size_t i = 0; i < size_; ++i)
      grown[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    slots_ = std::move(grown);
    head_ = 0;
  }
  auto& slot = slots_[(head_ + size_) & (slots_.size() - 1)];
  if (!slot)
    slot = std::make_unique<pending>();
  ++size_;
  return *slot;
}

void connection::pending_ring::pop_front() noexcept {
  front().reset();
  head_ = (head_ + 1) & (slots_.size() - 1);
  --size_;
  // Emptied after a deep pipeline: give back the slots past the first window (each held about
  // 1.5 KiB with its buffers; a connection that once had 4096 requests waiting kept 6 MiB
  // while idle).
  constexpr size_t keep = max_pending >> max_window_level;
  if (size_ == 0 && slots_.size() > keep) {
    slots_.resize(keep);
    slots_.shrink_to_fit();
    head_ = 0;
  }
}

void connection::pending_ring::clear() noexcept {
  while (size_ > 0)
    pop_front();
}

// -- socket events ------------------------------------------------------------------------------

void connection::on_poll(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<connection*>(h->data);
  if (status < 0) {
    self->lose_client();
    return;
  }
  if (events & UV_WRITABLE) {
    self->want_write_ = false;
    self->write_out();
    if (self->closing_)
      return;
  }
  if (events & UV_READABLE)
    self->on_readable();
}

void connection::on_readable() {
  if (lingering_ || hung_up_) {  // (hung up: the rest of the line is dropped as it comes)
    linger_read();
    return;
  }
  if (closing_ || read_closed_ || input_paused_)
    return;
  // Make room: compact consumed bytes, then grow when the free space is short. An empty
  // buffer that grew for a large value goes back to its first size (else every connection
  // that ever sent a value of -I would keep -I bytes).
  if (rpos_ == rend_ && rbuf_.size() > 4 * read_chunk) {
    std::vector<char>(read_chunk).swap(rbuf_);
    rpos_ = rend_ = 0;
  }
  if (rpos_ > 0 && (rpos_ == rend_ || rbuf_.size() - rend_ < read_chunk)) {
    std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
    rend_ -= rpos_;
    rpos_ = 0;
  }
  if (rbuf_.size() - rend_ < read_chunk) {
    // Doubling, but not past the data block a request header announced: memory follows the
    // bytes that arrive, not a length a client claims.
    size_t grow = std::max(rbuf_.size() * 2, rend_ + read_chunk);
    if (want_ > 0)
      grow = std::max(std::min(grow, rpos_ + want_ + read_chunk), rend_ + read_chunk);
    rbuf_.resize(grow);
  }
  ssize_t n = ::read(fd_, rbuf_.data() + rend_, rbuf_.size() - rend_);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return;
    lose_client();  // (a reset: what was read before it still runs)
    return;
  }
  if (n == 0) {
    // Peer finished sending: answer what was asked, then close.
    read_closed_ = true;
    process_input();
    if (!closing_ && pending_.empty() && out_.empty() && !get_rest_)
      close_now();
    else if (!closing_)
      update_poll();
    return;
  }
  ctx_.counters->add(ctx_.counters->bytes_read, static_cast<uint64_t>(n));
  rend_ += static_cast<size_t>(n);
  process_input();
}

// -- requests -----------------------------------------------------------------------------------

void connection::process_input() {
  if (!ctx_.routes)
    return;  // no route table yet: keep the bytes
  if (in_input_) {  // (from complete_ready's write_out: the pass below goes on instead)
    input_again_ = true;
    return;
  }
  // Requests that complete at once (a node not in its cluster yet, owners all unreachable)
  // resume the input from write_out while it is still being parsed: the parse goes on here
  // rather than in a call nested once per pause (a long get line of misses nested thousands).
  in_input_ = true;
  do {
    input_again_ = false;
    process_input_pass();
  } while (input_again_ && !closing_ && !lingering_);
  in_input_ = false;
}

void connection::process_input_pass() {
  while (!closing_ && !stats_barrier_ && !flush_unsent_ && (get_rest_ || rpos_ < rend_)) {
    if (get_rest_) {  // (before anything after it is parsed)
      const bool gated = read_allowance() == 0;
      if (over_budget() || gated) {
        read_gated_ = read_gated_ || gated;
        input_paused_ = true;
        break;
      }
      push_get_part();
      continue;
    }
    if (swallow_ > 0) {
      size_t take = std::min(swallow_, rend_ - rpos_);
      rpos_ += take;
      swallow_ -= take;
      continue;
    }
    if (over_budget()) {
      input_paused_ = true;
      break;
    }
    std::string_view in(rbuf_.data() + rpos_, rend_ - rpos_);
    if (!first_line_seen_) {
      auto n = std::min(in.size(), link_hello_prefix.size());
      if (ctx_.links && in.substr(0, n) == link_hello_prefix.substr(0, n)) {
        if (n < link_hello_prefix.size() && !read_closed_)
          break;  // could still be a data link hello
        if (n == link_hello_prefix.size() && hand_to_link(in))
          return;
      }
      if (static_cast<unsigned char>(in[0]) == proto::binary_request_magic) {
        if (in.size() < proto::binary_header_size && !read_closed_)
          break;  // the rest of the header: its opcode and opaque go into the answer
        ctx_.counters->add(ctx_.counters->protocol_errors);
        auto& p = push_pending(pending_kind::immediate);
        p.reply = proto::binary_not_supported(in);
        p.close_after = true;
        read_closed_ = true;
        no_linger_ = true;
        rpos_ = rend_;
        break;
      }
      const auto foreign = proto::foreign_protocol(in);
      if (foreign == proto::foreign::maybe && !read_closed_)
        break;  // (the rest of a Cap'n Proto segment table, or of a TLS record's header)
      if (foreign == proto::foreign::yes) {
        ctx_.counters->add(ctx_.counters->protocol_errors);
        auto& p = push_pending(pending_kind::immediate);
        p.reply.assign(proto::foreign_protocol_error.data(), proto::foreign_protocol_error.size());
        p.reply.append("\r\n");
        p.close_after = true;
        read_closed_ = true;
        no_linger_ = true;
        rpos_ = rend_;
        break;
      }
      first_line_seen_ = true;
    }
    auto r = proto::parse(in, req_, pcfg_);
    if (r.status == proto::parse_status::ok &&
        (is_get_family(req_.cmd) || (req_.cmd == proto::command::mg && req_.meta.has('v'))) &&
        read_allowance() == 0) {
      input_paused_ = true;  // parsed again once values went out (parse() is pure)
      read_gated_ = true;
      break;
    }
    want_ = r.status == proto::parse_status::incomplete ? r.need : 0;
    if (r.status == proto::parse_status::incomplete) {
      // A get line may legitimately be long, but not endless.
      if (r.need == 0 && in.size() > max_get_line + proto::max_line_length) {
        hang_up_after_answers();
        break;
      }
      if (r.need > rbuf_.size() - rpos_) {
        // Room for the data block, up to 1 MiB ahead of what has arrived (reading grows the
        // rest as it comes: a bare `set k 0 0 <-I>` header must not reserve -I).
        std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
        rend_ -= rpos_;
        rpos_ = 0;
        const size_t ahead = std::min<size_t>(r.need, rend_ + (size_t(1) << 20));
        if (ahead > rbuf_.size())
          rbuf_.resize(ahead + read_chunk);
      }
      break;
    }
    if (r.status == proto::parse_status::too_long) {
      hang_up_after_answers();  // the requests before it are answered first
      break;
    }
    if (r.status == proto::parse_status::close) {
      // An HTTP request line (memcached's guard against web clients) ends the connection
      // without a word, after the answers of the requests before it (as memcached: a client
      // must see that its writes before the line were applied; before, they were dropped).
      hang_up_after_answers();
      break;
    }
    if (entry_)  // (`stats conns`: every line read counts, an erroneous one too)
      entry_->last_cmd_ms.store(uv_now(loop().uv()), std::memory_order_relaxed);
    if (r.status == proto::parse_status::error) {
      ctx_.counters->add(ctx_.counters->protocol_errors);
      if (r.error == proto::too_large_error)
        ctx_.counters->add(ctx_.counters->store_too_large);
      else if (r.error == proto::bad_chunk_error && is_storage(req_.cmd))
        ctx_.counters->add(ctx_.counters->cmd_set);  // (memcached counts it, then checks)
      else if (req_.cmd == proto::command::flush_all && r.error.substr(0, 6) == "CLIENT")
        ctx_.counters->add(ctx_.counters->cmd_flush);  // (memcached counts it, then checks)
      // Text `noreply` silences even errors (memcached); meta `q` never does.
      // Only a value too large is refused with the old one removed; a malformed request
      // (bad flags, a bad token) leaves the item as it was, as in memcached.
      auto removal = r.swallow > 0 && r.error == proto::too_large_error ? refused_value_removal()
                                                                        : std::nullopt;
      if (removal) {
        // memcached unlinks the old value before it answers: the error (if any) waits for
        // the removal, routed like any delete (to the key's primary, then replicated).
        auto& p = push_pending(pending_kind::refused);
        if (!req_.noreply)
          p.reply.assign(r.error.data(), r.error.size()).append("\r\n");
        p.ops.push_back(std::move(*removal));
        p.results.resize(1);
        p.outstanding = 1;
        if (ctx_.routes->cluster)
          p.routing.assign(1, op_route{});
        route_new_op(base_seq_ + pending_.size() - 1, 0);
      } else if (!req_.noreply) {
        auto& p = push_pending(pending_kind::immediate);
        p.reply.assign(r.error.data(), r.error.size());
        p.reply.append("\r\n");
      }
      rpos_ += r.consumed;
      swallow_ = r.swallow;
      continue;
    }
    handle_request(r.consumed);
  }
  complete_ready();
}

void connection::hang_up_after_answers() {
  // memcached hangs up on such a line without a word, but sends what the requests before it
  // earned first: a client must see that its writes before the line were applied.
  // The client may still be sending the line: closing with its bytes unread would send a
  // reset, and its kernel could drop those replies. Its input is read and dropped from now on
  // (linger_read: a client that writes the whole line before it reads must not block us
  // both), and once answered our side ends with a FIN, dropping its input until it closes
  // (close_answered); past linger_max bytes dropped it gets the reset after all.
  auto& p = push_pending(pending_kind::immediate);
  p.close_after = true;
  read_closed_ = true;
  hung_up_ = true;
  rpos_ = rend_;
}

void connection::set_memory_limit(uint64_t bytes) {
  auto& node = *ctx_.node;
  std::lock_guard<std::mutex> lock(node.memlimit_mu);
  node.memory_limit.store(bytes, std::memory_order_relaxed);
  const auto& shards = ctx_.routes->local_shards();
  const uint64_t share = std::max<uint64_t>(bytes / std::max<size_t>(shards.size(), 1), 1);
  for (const auto& s : shards)  // (enqueued under the lock: in the order of the commands)
    send(s, memlimit_atom::value, share);
  // The values parked for re-reads pin segments that count in a shard's share: their bound
  // follows (node_shared::parked_limits).
  node.parked->set_max_pinned_bytes(
    node_shared::parked_pin_bound(bytes, static_cast<uint32_t>(shards.size())));
}

const caf::actor& connection::local_shard_for(const std::string& key) const {
  return ctx_.routes->local_shards()[ctx_.routes->lookup(key).shard_index(key)];
}

void connection::send_side_effect(const caf::actor& dest, storage::op o, uint64_t placed_by) {
  storage::op_batch b;
  b.push_back(std::move(o));
  // Fire and forget: the reply carries tag 0, which no batch uses (and is dropped).
  send(dest, exec_atom::value, uint64_t{0}, std::move(b), placed_by);
}

std::optional<storage::op> connection::refused_value_removal() const {
  // memcached unlinks the old value of a key whose `set` (or `ms`, in any mode) was refused
  // as too large, so that a stale value does not outlive a failed write.
  bool set_mode = req_.cmd == proto::command::set || req_.cmd == proto::command::ms;
  if (!set_mode || req_.keys.empty())
    return std::nullopt;
  storage::op o;
  o.kind = storage::op_kind::remove;
  o.counts = storage::op::counting::nothing;  // (memcached counts no delete for it)
  if (req_.cmd == proto::command::ms && req_.meta.has('b')) {
    if (!proto::base64_decode(req_.keys[0], o.key))
      return std::nullopt;
  } else {
    o.key.assign(req_.keys[0].data(), req_.keys[0].size());
  }
  return o;
}

connection::pending& connection::push_pending(pending_kind k) {
  auto& p = pending_.emplace_back();
  p.kind = k;
  return p;
}

void connection::adopt_line(pending& p) {
  // Field by field: the keys' buffers are swapped (each side keeps one).
  auto& d = p.req;
  const auto& s = req_;
  d.cmd = s.cmd;
  d.keys.swap(req_.keys);
  d.data = s.data;
  d.flags = s.flags;
  d.exptime = s.exptime;
  d.cas_unique = s.cas_unique;
  d.delta = s.delta;
  d.delay = s.delay;
  d.has_delay = s.has_delay;
  d.noreply = s.noreply;
  d.stats_arg = s.stats_arg;
  d.meta = s.meta;  // (208 bytes of token spans: copied whole)
  d.line = s.line;
  p.line.assign(p.req.line.data(), p.req.line.size());
  rebase(p.req, p.req.line.data(), p.req.line.size(), p.line.data());
}

std::atomic<uint64_t>& connection::read_counter(const proto::request& req) const {
  auto& c = *ctx_.counters;
  const bool touches = req.cmd == proto::command::gat || req.cmd == proto::command::gats;
  return touches ? c.cmd_touch : c.cmd_get;
}

void connection::handle_request(size_t consumed) {
  auto& counters = *ctx_.counters;
  auto cmd = req_.cmd;
  // As memcached: gat/gats count as touches (cmd_touch, with touch_hits/misses at the
  // shard), get/gets and mg as gets, but mg T as a touch when it found the item (counted
  // when its result comes: complete_ready), and only `me` in cmd_meta.
  // A long get-family line goes in parts (get_rest_), the first one now.
  const size_t part_keys =
    is_get_family(cmd) && req_.keys.size() > 1 ? std::min(get_part_keys, read_allowance()) : 1;
  // (Counted once the plan took the request: one it refuses, e.g. a bad base64 key, counts
  // only as a protocol error, as memcached returns before it counts.)
  std::atomic<uint64_t>* counter = nullptr;
  size_t count = 1;
  if (is_get_family(cmd)) {  // (a split line's other keys count as their parts are planned)
    counter = &read_counter(req_);
    count = std::min(req_.keys.size(), part_keys);
  } else if (is_storage(cmd)) {
    counter = &counters.cmd_set;
  } else if (cmd == proto::command::touch) {
    counter = &counters.cmd_touch;
  } else if (cmd == proto::command::mg && !req_.meta.has('T')) {
    counter = &counters.cmd_get;
  } else if (cmd == proto::command::me) {
    counter = &counters.cmd_meta;
  }

  auto& p = push_pending(pending_kind::exec);
  uint64_t seq = base_seq_ + pending_.size() - 1;
  if (is_get_family(cmd) && req_.keys.size() > part_keys) {
    // The first part now, the rest as the backpressure allows (get_rest).
    get_rest_.emplace();
    get_rest_->req.cmd = cmd;
    get_rest_->req.exptime = req_.exptime;
    size_t bytes = 0;
    for (size_t i = part_keys; i < req_.keys.size(); ++i)
      bytes += req_.keys[i].size() + 1;
    get_rest_->keys.reserve(bytes);
    for (size_t i = part_keys; i < req_.keys.size(); ++i)
      get_rest_->keys.append(req_.keys[i]).push_back(' ');
    req_.keys.resize(part_keys);
    p.partial = true;
  }
  auto pr = plan(req_, p.ops);  // copies keys and the data block out of the read buffer
  rpos_ += consumed;
  adopt_line(p);
  if (counter && pr.k != plan_result::kind::error)
    counters.add(*counter, count);
  switch (pr.k) {
    case plan_result::kind::error:
      counters.add(counters.protocol_errors);
      p.kind = pending_kind::immediate;
      p.reply = std::move(pr.error);
      p.reply.append("\r\n");
      p.ops.clear();
      return;
    case plan_result::kind::local:
      handle_local(p);
      return;
    case plan_result::kind::ops:
      break;
  }
  dispatch_ops(seq, p);
}

size_t connection::read_allowance() const {
  // The reads that fit `room` beside the `pending` ones; at least 1 when none is pending.
  auto fits = [](uint64_t room, size_t pending) -> size_t {
    if (pending == 0)
      return static_cast<size_t>(std::max<uint64_t>(room, 1));
    return room > pending ? static_cast<size_t>(room - pending) : 0;
  };
  const uint64_t queued = out_.pending_bytes();
  const uint64_t room =
    queued < max_output ? (max_output - queued) / std::max<uint64_t>(value_estimate_, 1) : 0;
  size_t allowed = fits(room, reads_pending_);
  const auto& cl = ctx_.routes->cluster;
  if (cl && cl->ring && cl->ring->size() > 1)  // (any of them may be placed at a member)
    allowed = std::min(allowed, fits(remote_read_bytes / remote_estimate_, remote_reads_pending_));
  return allowed;
}

bool connection::over_budget() const {
  return pending_.size() >= window(max_pending) || remote_pending_ >= max_remote_pending ||
         remote_reads_pending_ >= window(max_remote_pending) ||
         out_.pending_bytes() >= max_output ||
         (want_write_ && out_.pending_bytes() >= blocked_output) ||
         (get_rest_ && pending_.size() >= max_parts_pending);
}

void connection::push_get_part() {
  auto& p = push_pending(pending_kind::exec);
  uint64_t seq = base_seq_ + pending_.size() - 1;
  p.req.cmd = get_rest_->req.cmd;  // (compose_get reads only the command and the ops' keys;
                                   // the rest of p.req is a fresh request's: noreply false)
  take_get_part(p);
  dispatch_ops(seq, p);
}

void connection::take_get_part(pending& p) {
  auto& rest = *get_rest_;
  rest.req.keys.clear();
  const size_t part_keys = std::min(get_part_keys, read_allowance());
  while (rest.req.keys.size() < part_keys && rest.next < rest.keys.size()) {
    const size_t end = rest.keys.find(' ', rest.next);
    rest.req.keys.emplace_back(rest.keys.data() + rest.next, end - rest.next);
    rest.next = end + 1;
  }
  plan(rest.req, p.ops);  // (the line's keys were checked when it was parsed)
  ctx_.counters->add(read_counter(rest.req), rest.req.keys.size());
  p.partial = rest.next < rest.keys.size();
  if (!p.partial)
    get_rest_.reset();
}

void connection::dispatch_ops(uint64_t seq, pending& p) {
  p.results.resize(p.ops.size());
  p.outstanding = static_cast<uint32_t>(p.ops.size());
  for (const auto& o : p.ops)
    p.reads += storage::reads_value(o);
  reads_pending_ += p.reads;
  if (ctx_.routes->cluster)
    p.routing.assign(p.ops.size(), op_route{});
  for (uint32_t i = 0; i < p.ops.size(); ++i)
    route_new_op(seq, i);
  const auto& cl = ctx_.routes->cluster;
  if (cl && cl->ring && !cl->ring->empty()) {  // (else route_key_op placed nothing)
    for (uint32_t i = 0; i < p.routing.size(); ++i) {
      const auto& rt = p.routing[i];
      if (rt.local || rt.done)  // (done: no owner could be tried)
        continue;
      ++p.remote_ops;
      p.remote_reads += storage::reads_value(p.ops[i]);
    }
    remote_pending_ += p.remote_ops;
    remote_reads_pending_ += p.remote_reads;
  }
}

namespace {

bool is_read(const storage::op& o) {
  return o.kind == storage::op_kind::get && !storage::changes_item(o);
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

} // namespace

void connection::route_new_op(uint64_t seq, uint32_t index) {
  auto& p = pending_[seq - base_seq_];
  const auto& cl = ctx_.routes->cluster;
  // (Also once the window ended while ops are held: a later one must not overtake them.)
  if (cl && (!cl->past.empty() || held_ > 0) && index < p.routing.size() &&
      must_wait(seq, p.ops[index])) {
    p.routing[index].held = true;
    ++held_;
    return;
  }
  route_key_op(seq, index);
}

bool connection::must_wait(uint64_t seq, const storage::op& o) const {
  // (Reads pass each other, since neither changes what the other finds, except one that
  // reports the reads before it: an earlier read's warm copy lands marked read. Not when
  // that copy is not kept, e.g. the ring changed meanwhile: the held read then misses at
  // the owner, reads the previous owner, and answers h0. Nor does a read that counts as
  // an access, or may take a stale item's win token, pass one that reports the reads
  // before it: `mg k u`, `mg k h`, `get k` in one pipeline answered h1, the get having run
  // before the held mg h; `me k`, `mg k h`, `mg k u` on a stale item gave the W to mg u.)
  auto reports_reads = [](const proto::request& req) {
    return (req.cmd == proto::command::mg && (req.meta.has('h') || req.meta.has('l'))) ||
           req.cmd == proto::command::me;
  };
  const bool behind_any = storage::changes_item(o) || classify(o) == warm_class::insert ||
                          reports_reads(pending_[seq - base_seq_].req);
  if (behind_replaced_flush(seq))
    return true;
  for (uint64_t s = base_seq_; s < seq && s - base_seq_ < pending_.size(); ++s) {
    const auto& p = pending_[s - base_seq_];
    if (p.outstanding == 0)
      continue;
    for (size_t i = 0; i < p.ops.size() && i < p.routing.size(); ++i)
      if (!p.routing[i].done && p.ops[i].key == o.key &&
          (behind_any || storage::changes_item(p.ops[i]) ||
           ((o.get_bump || !o.keep_token) && reports_reads(p.req))))
        return true;
  }
  return false;
}

bool connection::behind_replaced_flush(uint64_t seq) const {
  const auto& cl = ctx_.routes->cluster;
  const uint64_t ring_now = cl && cl->ring ? cl->ring->placement() : 0;
  for (uint64_t s = base_seq_; s < seq && s - base_seq_ < pending_.size(); ++s) {
    const auto& p = pending_[s - base_seq_];
    if (p.kind == pending_kind::flush && p.outstanding > 0 && p.flush_ring != 0 &&
        p.flush_ring != ring_now)
      return true;
  }
  return false;
}

void connection::release_held(uint64_t seq, uint32_t index) {
  if (held_ == 0)
    return;
  const auto& done = pending_[seq - base_seq_];
  const bool every_key = done.kind == pending_kind::flush;
  if (every_key && done.outstanding > 0)
    return;  // (held behind the flush until its last answer)
  const std::string key = every_key ? std::string() : done.ops[index].key;
  for (uint64_t s = seq + 1; held_ > 0 && s - base_seq_ < pending_.size(); ++s) {
    auto& p = pending_[s - base_seq_];
    for (uint32_t i = 0; i < p.ops.size() && i < p.routing.size(); ++i) {
      if (!p.routing[i].held || (!every_key && p.ops[i].key != key))
        continue;
      if (must_wait(s, p.ops[i])) {
        if (!every_key)
          return;  // (an op released before it is at work: it holds the rest)
        continue;  // (it holds the later ops on its key: must_wait keeps each key's order)
      }
      p.routing[i].held = false;
      --held_;
      route_key_op(s, i);
    }
  }
}

void connection::route_key_op(uint64_t seq, uint32_t index) {
  auto& p = pending_[seq - base_seq_];
  auto& o = p.ops[index];
  const auto& snap = *ctx_.routes;
  if (snap.cluster && snap.cluster->ring && !snap.cluster->ring->empty() &&
      index < p.routing.size()) {
    const auto& cv = *snap.cluster;
    auto& rt = p.routing[index];
    if (!rt.held && !cv.past.empty() && behind_replaced_flush(seq)) {
      // An op placed again (its ring was replaced while it was out) waits too, as a new
      // one would (must_wait): release_held routes it once the flush is answered. (A
      // replaced ring stays in the view's past for the window and more: no look outside.)
      rt.held = true;
      ++held_;
      return;
    }
    switch (place(cv, cluster::ring::key_hash(o.key), rt)) {
      case placement::unavailable:  // every live owner was tried
        p.results[index].st = storage::status::unavailable;
        rt.done = true;
        if (--p.outstanding == 0)
          request_done(seq, p);  // (placed again from deliver(): its other writes ran)
        release_held(seq, index);
        return;
      case placement::peer:
      case placement::local:
        break;
    }
    // A store that may have to run again after warming keeps its value (a copy goes out);
    // an add, or an op that vivifies, asks the previous owner first. (No clock read on the
    // common path.)
    const bool in_window = !cv.past.empty();
    const bool store_in_window = o.kind == storage::op_kind::store && in_window;
    // (Not while an earlier op of this connection on the key is still at work: its own
    // warming, a delete's at the previous owner, would come after this look there.
    // Inside a window such an op waits for it, must_wait. An earlier flush_all still at
    // work does not hold it, unless sent by a ring since replaced (must_wait), and it skips
    // the look then: the flush empties the previous owners too.)
    if (in_window && !rt.looked &&
        (classify(o) == warm_class::insert || classify(o) == warm_class::update) &&
        warm_first(cv, rt, o, steady_ms()) && !earlier_request_on(seq, o.key)) {
      rt.looked = true;
      rt.warmed = true;
      rt.ahead = true;
      if (warm_next_source(seq, index, cv, warm_phase::ahead))
        return;
      rt.ahead = false;
    }
    rt.kept = store_in_window && may_run_again(cv, o, steady_ms());
    if (rt.kept) {
      send_to_owner(seq, index, cv, rt, storage::op(o));
    } else {
      std::string key = o.key;  // the value goes with the op; compose() needs the key
      send_to_owner(seq, index, cv, rt, std::move(o));
      o.key = std::move(key);
    }
    return;
  }
  if (snap.awaiting_cluster && index < p.results.size()) {  // (the service has not started yet)
    p.results[index].st = storage::status::unavailable;
    if (index < p.routing.size())
      p.routing[index].done = true;
    if (--p.outstanding == 0)
      request_done(seq, p);
    release_held(seq, index);
    return;
  }
  route_op(seq, index, snap.lookup(o.key).shard_index(o.key));
}

caf::actor connection::owner_actor(const cluster_view& cv, const op_route& rt,
                                   const std::string& key) {
  if (rt.local)
    return local_shard_for(key);
  caf::actor link = ctx_.links ? ctx_.links->link_for(cv, rt.owner) : caf::actor();
  return link ? link : cv.peers[rt.owner];
}

void connection::send_to_owner(uint64_t seq, uint32_t index, const cluster_view& cv,
                               const op_route& rt, storage::op&& o) {
  if (rt.local) {  // (by reference: no actor handle copied per local op)
    const auto& shard = local_shard_for(o.key);
    ctx_.dispatch->add(shard, id_, seq, index, std::move(o));
    return;
  }
  auto dest = owner_actor(cv, rt, o.key);
  ctx_.dispatch->add(dest, id_, seq, index, std::move(o), false, placement_of(cv, rt));
}

caf::actor connection::past_member_actor(const cluster_view& cv, size_t depth, uint32_t id) {
  if (caf::actor link = ctx_.links ? ctx_.links->previous_link(cv, depth, id) : caf::actor())
    return link;
  const auto& peers = cv.past[depth].peers;
  return id < peers.size() ? peers[id] : caf::actor();
}

void connection::send_to_previous(uint64_t seq, uint32_t index, const cluster_view& cv,
                                  const warm_from& from, storage::op&& o) {
  if (from.where == placement::peer) {
    ctx_.dispatch->add(past_member_actor(cv, from.depth, from.id), id_, seq, index,
                       std::move(o), true);
  } else {
    ctx_.dispatch->add(local_shard_for(o.key), id_, seq, index, std::move(o));
  }
}

// Without this, a key whose owners change back to a node that held it before (the new owner
// dies or leaves inside the window) would be served from that node's copy: the value a write
// at the new owner replaced. A delete reaches those copies through its erase chain already.
// Only the connection that served the write sends these (a data link's or the replicator's
// ops are some connection's writes, or copies of them).
void connection::drop_past_copies(const cluster_view& cv, const op_route& rt,
                                  const storage::op& o, storage::status st) {
  if (cv.past.empty() || classify(o) == warm_class::remove || !storage::changed_item(o, st))
    return;  // (a delete went along its erase chain; md I, which keeps the item, did not)
  delete_past_copies(cv, rt, o.key, storage::expires_now(o, storage::system_clock_seconds()));
}

// A connection closed while its requests are at work (a drain's timeout, node stop, a protocol
// error; a client's reset waits for them, lose_client) sends no replies, but the ops sent run
// all the same: deliver() never sees their results, so the copies a
// write (or a delete's erase chain) would have removed go now. An op still at its owner may
// change nothing (an add that finds an item, a CAS that does not match): its key's past
// copies go anyway, a later miss instead of a possibly older value. Ops that only looked at
// a past owner (a warm read, an add's look ahead, a copy on its way to the owner) changed
// nothing and will not run again; nor do updates (touch, incr, append, cas…) of a key not
// warmed yet: the owner most likely has no item for them to change (left: one that did).
void connection::drop_past_copies_of_unfinished() {
  if (ctx_.routes == nullptr || !ctx_.routes->cluster || ctx_.routes->cluster->past.empty())
    return;
  const auto& cv = *ctx_.routes->cluster;
  for (size_t s = 0; s < pending_.size(); ++s) {
    const auto& p = pending_[s];
    if (p.outstanding == 0)
      continue;
    for (size_t i = 0; i < p.ops.size() && i < p.routing.size(); ++i) {
      const auto& rt = p.routing[i];
      const auto& o = p.ops[i];
      if (rt.done || rt.held)
        continue;  // (its result came: deliver() did this; or it was never sent)
      // (Not an update that may find nothing at the owner, which has not warmed the key
      // yet: it changes nothing, and the past owner's copy is the current item.)
      if ((rt.phase == warm_phase::none && storage::changes_item(o) &&
           (classify(o) != warm_class::update || rt.warmed || o.vivify)) ||
          rt.phase == warm_phase::erase)
        delete_past_copies(cv, rt, o.key);
    }
  }
}

void connection::delete_past_copies(const cluster_view& cv, const op_route& rt,
                                    const std::string& key, bool gone) {
  const int64_t now = steady_ms();
  // The node the write ran at holds the new value: never one to delete at. In the ring it
  // was placed in it is an owner; when the ring changed since, it may be a past owner now.
  const std::string* ran_at = nullptr;
  if (!same_ring(cv, rt)) {
    if (rt.local)
      ran_at = &cv.self_name;
    else if (cv.past[0].ring && cv.past[0].ring->epoch() == rt.epoch &&
             rt.owner < cv.past[0].ring->size())
      ran_at = &cv.past[0].ring->member(rt.owner).name;
    else
      return;  // (several changes since: where it ran is not known here)
  }
  past_holder holders[max_past_holders];
  const size_t n =
    past_holders(cv, cluster::ring::key_hash(key), now, holders, gone && ran_at == nullptr);
  for (size_t i = 0; i < n; ++i) {
    const auto& [depth, id] = holders[i];
    const auto& past = cv.past[depth];
    const std::string& name = past.ring->member(id).name;
    if (ran_at && name == *ran_at)
      continue;
    storage::op d = storage::past_copy_delete(key);
    bool sent = false;
    if (name == cv.self_name) {
      sent = ctx_.dispatch->add_side_effect(local_shard_for(key), std::move(d), false);
    } else {
      // Where warm reads of that ring go (a node that left still serves them), as a warm op
      // (origin warm there): the node is no owner of the key, and must not replicate the
      // delete to those that are.
      if (caf::actor dest = past_member_actor(cv, depth, id))
        sent = ctx_.dispatch->add_side_effect(dest, std::move(d), true);
    }
    ctx_.counters->add(sent ? ctx_.counters->past_copy_deletes
                            : ctx_.counters->past_copy_deletes_skipped);
  }
}

bool connection::warm_next_source(uint64_t seq, uint32_t index, const cluster_view& cv,
                                  warm_phase phase) {
  auto& p = pending_[seq - base_seq_];
  auto& rt = p.routing[index];
  const auto& o = p.ops[index];
  const bool erase = phase == warm_phase::erase;
  const uint64_t hash = cluster::ring::key_hash(o.key);
  auto from = warm_source(cv, hash, rt, steady_ms(), erase);
  if (from.where == placement::unavailable)
    return false;
  if (!erase && rt.warm_next > 0 && earlier_request_on(seq, o.key, true))
    return false;
  // A client's read with a later write of this connection on the key gone out: a previous
  // owner that is an owner now (R > 1) may have that write's copy already, which this read
  // must not see. Its miss at the owner answers.
  rt.asked_owner = phase == warm_phase::read && is_read(o) && owns_now(cv, hash, from);
  if (rt.asked_owner && later_request_on(seq, o.key))
    return false;
  rt.warm_next = from.next;
  rt.phase = phase;
  if (phase != warm_phase::erase) {
    send_warm_read(seq, index, cv, from, o, classify(o) != warm_class::read);
    return true;
  }
  // The previous copy goes. Once a delete removed the item somewhere, the answer is that
  // one: nothing left to compare. (Not md I: an update, it warms the item and runs again.)
  storage::op w = o;
  if (p.results[index].st == storage::status::deleted) {
    w.compare_cas = 0;
    w.cas_given = false;
  }
  send_to_previous(seq, index, cv, from, std::move(w));
  return true;
}

void connection::keep_at_owner(const cluster_view& cv, const op_route& rt, storage::op&& copy) {
  // Sent as the client's writes to that owner are, so they stay in order with it. Kept here
  // as the key's primary, it is replicated once stored (the replicator reads the key after
  // the copy ran); a remote primary replicates what it stores.
  if (rt.local) {
    caf::actor shard = local_shard_for(copy.key);
    ctx_.dispatch->add_own_write(shard, std::move(copy));
  } else {
    caf::actor owner = owner_actor(cv, rt, copy.key);
    send_side_effect(owner, std::move(copy), placement_of(cv, rt));
  }
}

bool connection::check_at_previous(uint64_t seq, uint32_t index, const cluster_view& cv,
                                   storage::result& r) {
  if (cv.check_until_ms == 0)
    return false;  // (no change checked: the key is not even hashed)
  auto& p = pending_[seq - base_seq_];
  auto& rt = p.routing[index];
  const auto& o = p.ops[index];
  const uint64_t hash = cluster::ring::key_hash(o.key);
  const auto from = check_source(cv, hash, rt, steady_ms());
  if (from.where == placement::unavailable || earlier_request_on(seq, o.key, true))
    return false;
  rt.asked_owner = owns_now(cv, hash, from);
  if (rt.asked_owner && later_request_on(seq, o.key))
    return false;  // (that node may hold the later write's copy: warm_next_source)
  rt.phase = warm_phase::check;
  p.results[index] = std::move(r);
  // As the client asked, except that it takes no win token there (md N, R: a stale item's):
  // the owner's answer may stand.
  storage::op w = o;
  w.keep_token = true;
  send_warm_read(seq, index, cv, from, w, false);
  ctx_.counters->add(ctx_.counters->read_checks);
  return true;
}

void connection::send_warm_read(uint64_t seq, uint32_t index, const cluster_view& cv,
                                const warm_from& from, const storage::op& o, bool quiet) {
  storage::op w;
  if (quiet) {  // an update's or an add's look: a plain read, no effect on the item there
    w.kind = storage::op_kind::get;
    w.key = o.key;
    w.keep_token = true;
  } else {  // a client's read: as it asked (meta flags, the win token of a stale item)
    w = o;
  }
  w.get_value = true;
  w.get_bump = false;
  w.counted = false;  // the client's op was counted where it missed (or will be)
  send_to_previous(seq, index, cv, from, std::move(w));
}

void connection::route_op(uint64_t seq, uint32_t index, size_t shard) {
  auto& o = pending_[seq - base_seq_].ops[index];
  std::string key = o.key;  // the value goes with the op; compose() needs the key
  ctx_.dispatch->add(ctx_.routes->local_shards()[shard], id_, seq, index, std::move(o));
  o.key = std::move(key);
}

void connection::deliver(uint64_t seq, uint32_t index, storage::result&& r) {
  if (seq < base_seq_ || seq - base_seq_ >= pending_.size())
    return;
  auto& p = pending_[seq - base_seq_];
  if (index >= p.results.size() || p.outstanding == 0)
    return;
  if (index < p.routing.size() && p.routing[index].phase != warm_phase::none &&
      !(ctx_.routes && ctx_.routes->cluster)) {
    // The node left its cluster view meanwhile (a drain): this is a warming step's answer,
    // not always the op's own. An op that has not run yet (an add's or a vivifying op's
    // look ahead, the copy it waited for) runs where a new op would now; otherwise the op's
    // own result waiting in its slot answers (a read check: the owner's hit; an update: its
    // first result; a delete: its own, when it removed or refused something there).
    const auto phase = std::exchange(p.routing[index].phase, warm_phase::none);
    const auto& own = p.results[index];
    switch (phase) {
      case warm_phase::ahead:
        route_key_op(seq, index);
        return;
      case warm_phase::restore:
        if (classify(p.ops[index]) == warm_class::insert || p.routing[index].ahead) {
          route_key_op(seq, index);
          return;
        }
        r = std::move(p.results[index]);
        break;
      case warm_phase::check:
        r = std::move(p.results[index]);
        break;
      case warm_phase::read:  // (a read answers with what the previous owner had, unless
                              // the walk takes it: taken_on_walk)
        if (!is_read(p.ops[index]) || taken_on_walk(p.routing[index], r))
          r = std::move(p.results[index]);
        break;
      case warm_phase::erase:
        if (keeps_owner_answer(p.routing[index], own, r, p.ops[index].invalidate))
          r = std::move(p.results[index]);
        break;
      case warm_phase::none:
        break;
    }
  }
  if (index < p.routing.size() && ctx_.routes && ctx_.routes->cluster) {
    const auto& cv = *ctx_.routes->cluster;
    auto& rt = p.routing[index];
    auto& o = p.ops[index];
    const auto cls = classify(o);
    const auto phase = rt.phase;
    rt.phase = warm_phase::none;
    // A previous owner that answered it has no such item: the one before it (an older past
    // ring) may hold it. (Not after no answer: that one may have held a newer item, and the
    // older owner the item it replaced.) One where a delete took the key (an expiry, a
    // flush_all) says when: an item further back older than that is none (a replica that the
    // delete's replication had not reached yet).
    if (phase == warm_phase::read || phase == warm_phase::ahead) {
      if (taken_on_walk(rt, r)) {
        r = storage::result::of(storage::status::miss);
        r.deleted_cas = rt.gone_at;
      }
      if (r.st == storage::status::miss && warm_next_source(seq, index, cv, phase))
        return;
    }
    switch (phase) {
      case warm_phase::read: {
        // The previous owner's answer. For a read: answer with a hit, and keep it at the
        // owner that missed (a side effect the client does not wait for). For an update:
        // add the item at the owner first, then run the op again; with nothing to add, the
        // op's own result stands.
        // Not when a later request of this connection on the key went out meanwhile: the
        // copy (and an update run again) would land after it (a delete undone, a set
        // changed). The read still answers with the hit; an update, with its own result.
        const bool later = later_request_on(seq, o.key);
        if (keepable(cv, rt, r) && !later) {
          if (cls != warm_class::read) {
            rt.phase = warm_phase::restore;
            send_to_owner(seq, index, cv, rt, warm_copy(o.key, r));
            return;
          }
          keep_at_owner(cv, rt, read_copy(o, r));
        } else if (cls == warm_class::read) {
          // (A later write of this connection went out meanwhile, and the node asked owns
          // the key now: the hit may be that write's copy.)
          if (r.st != storage::status::hit || !r.value || (rt.asked_owner && later))
            r = std::move(p.results[index]);  // the owner's miss
        } else if (r.st == storage::status::hit && !same_ring(cv, rt) && !later) {
          route_key_op(seq, index);  // the ring changed meanwhile: run it where it goes now
          return;
        } else {
          r = std::move(p.results[index]);  // nothing to add: the op's own result
        }
        break;
      }
      case warm_phase::ahead:
        // The previous owner's answer for an add (or a vivifying mg/ma, or an update inside
        // a read-check window) that has not run yet: its item goes to the owner first (the
        // add then finds it; an older item there is replaced), or its delete's copy when a
        // delete took the key there (an older item at the owner goes), or, with neither, the
        // op runs at once. A later request of this connection on the key already went out:
        // the op would land after it, so it does not run (as a write to an unreachable owner).
        if (later_request_on(seq, o.key)) {
          r = storage::result::of(storage::status::unavailable);
          break;
        }
        if (keepable(cv, rt, r)) {
          rt.phase = warm_phase::restore;
          send_to_owner(seq, index, cv, rt, warm_copy(o.key, r));
          return;
        }
        if (rt.gone_at != 0 && r.st != storage::status::hit && owner_reachable(cv, rt)) {
          rt.phase = warm_phase::restore;
          send_to_owner(seq, index, cv, rt, storage::delete_copy(o.key, rt.gone_at));
          return;
        }
        if (cls == warm_class::update && r.st != storage::status::hit &&
            r.st != storage::status::miss) {
          rt.warmed = false;  // (no answer: the update warms as before if it finds nothing)
          rt.ahead = false;
        }
        route_key_op(seq, index);
        return;
      case warm_phase::restore:
        // A copy of the previous owner's item (or of its delete) that changed the item here
        // as the key's primary goes to the replicas too (the op run again may change
        // nothing: an add, or none at all).
        if (rt.local && (r.st == storage::status::stored || r.st == storage::status::deleted))
          replicate({o.key});
        // The previous owner's item is at the owner (or a newer write was): run the op
        // again, wherever the ring places it now — unless a later request on the key went
        // out meanwhile (see above): then an update answers its own first result, an add
        // does not run.
        if (later_request_on(seq, o.key)) {
          if (cls == warm_class::insert || rt.ahead)
            r = storage::result::of(storage::status::unavailable);
          else
            r = std::move(p.results[index]);
          break;
        }
        route_key_op(seq, index);
        return;
      case warm_phase::check: {
        // The owner's hit waits in its slot. The previous owner's item answers instead when
        // it is a later write (taken before that node heard of the change), and is added at
        // the owner, where it replaces the older item (a copy: storage::cas_clock_newer);
        // not when a later request of this connection on the key went out meanwhile (the
        // add would land after it; the later write still answers this read). Likewise its
        // miss, when a delete (an expiry, a flush_all) took the key there after the write
        // the owner holds (result::deleted_cas): the owner's item goes too (a delete's copy,
        // which removes only an item older than that delete).
        auto& own = p.results[index];
        const bool later = later_request_on(seq, o.key);
        const bool newer_delete = r.st == storage::status::miss &&
                                  own.st == storage::status::hit &&
                                  storage::cas_clock_removed(own.cas, r.deleted_cas);
        if (newer_delete && !(rt.asked_owner && later)) {
          ctx_.counters->add(ctx_.counters->read_checks_newer);
          if (owner_reachable(cv, rt) && !later)
            keep_at_owner(cv, rt, storage::delete_copy(o.key, r.deleted_cas));
        } else if (r.st == storage::status::hit && r.value && own.st == storage::status::hit &&
                   storage::cas_clock_newer(r.cas, own.cas) && !(rt.asked_owner && later)) {
          ctx_.counters->add(ctx_.counters->read_checks_newer);
          if (keepable(cv, rt, r) && !later)
            keep_at_owner(cv, rt, read_copy(o, r));
        } else {
          // (No later write there, or no answer: the owner's hit.) Of the same write (the
          // owner holds a copy of that node's, same CAS, length and flags), what reads did
          // to it there counts too, in this answer and at the owner (a copy of the write
          // held brings them: storage/shard.cpp): replication copies writes, not reads. Not
          // from a node that is an owner now: it holds the replicator's copy, whose state
          // may already count this very read (the primary's, replicated after it).
          if (r.st == storage::status::hit && own.st == storage::status::hit &&
              r.cas == own.cas && r.value_size == own.value_size && r.flags == own.flags &&
              !rt.asked_owner) {
            merge_reads(own, r);
            if ((r.fetched || r.already_won) && keepable(cv, rt, r) && !later)
              keep_at_owner(cv, rt, warm_copy(o.key, r));
          }
          r = std::move(own);
        }
        break;
      }
      case warm_phase::erase: {
        // A delete at the owner and at each previous owner in turn, newest first: the first
        // that held the item answers (deleted, or EXISTS for a CAS that does not match it,
        // which ends the chain: the older copies are hidden by the newer one it kept), and
        // the older copies go too. The owner's not_found answers when the item there expired
        // just now or a delete took it lately (storage::result::deleted_lately): a copy the
        // chain finds is older (a replica the replication of an earlier write reached after
        // the expiring write's own erase there: DELETED answered a delete of an expired key),
        // unless the CAS clock says the item it found was written after that (by a member
        // whose view lagged: the owner judges "lately" by its own view): keeps_owner_answer.
        auto& own = p.results[index];
        const bool decided = keeps_owner_answer(rt, own, r, o.invalidate);
        if (decided || !(r.st == storage::status::deleted || r.st == storage::status::exists))
          r = std::move(own);
        own = std::move(r);
        if (own.st != storage::status::exists &&
            warm_next_source(seq, index, cv, warm_phase::erase))
          return;
        r = std::move(own);
        break;
      }
      case warm_phase::none: {
        bool intact = o.kind != storage::op_kind::store || rt.kept;  // a store's value went
        if (!intact && r.st == storage::status::not_sent && r.value) {  // ...unless it came
          o.value.assign(r.value.view());                               // back unsent
          intact = true;
        }
        const auto first = r.st;
        switch (after_result(cv, rt, r.st, cls, intact, steady_ms(), r.deleted_lately,
                             r.deleted_cas)) {
          case next_step::accept:
            if (r.st == storage::status::hit && cls == warm_class::read &&
                !storage::changes_item(o) && check_at_previous(seq, index, cv, r))
              return;
            break;
          case next_step::place:
            // A write that never left (or an update that found nothing where a ring since
            // replaced placed it) is placed in the new ring, unless a later request of this
            // connection on its key went out meanwhile: it would land after that one. (The
            // update's answer then stands.)
            if (storage::changes_item(o) && later_request_on(seq, o.key)) {
              if (first == storage::status::not_sent)
                r.st = storage::status::unavailable;
              break;
            }
            route_key_op(seq, index);
            return;
          case next_step::warm: {
            // Write-on-miss warming: the key may still live on its owner before the ring
            // changed. The op's own result waits in its slot.
            rt.warmed = true;
            rt.gone_at = r.deleted_cas;  // (a delete here before the ring changed)
            p.results[index] = std::move(r);
            if (warm_next_source(seq, index, cv,
                                 cls == warm_class::remove ? warm_phase::erase
                                                           : warm_phase::read))
              return;
            r = std::move(p.results[index]);
            break;
          }
        }
        break;
      }
    }
  }
  if (r.st == storage::status::not_sent)
    r.st = storage::status::unavailable;  // (the node left its cluster view meanwhile)
  p.results[index] = std::move(r);
  if (index < p.routing.size()) {
    p.routing[index].done = true;
    if (ctx_.routes && ctx_.routes->cluster)
      drop_past_copies(*ctx_.routes->cluster, p.routing[index], p.ops[index],
                       p.results[index].st);
  }
  if (--p.outstanding == 0)
    request_done(seq, p);
  release_held(seq, index);
}

void connection::request_done(uint64_t seq, pending& p) {
  // Replicated as soon as the request is done, not when its reply's turn comes: a client
  // that closes while an earlier request waits must not leave the replicas behind.
  if (p.routing.empty())
    return;
  await_replicas(seq, p);
  report_writes(p);
}

bool connection::keepable(const cluster_view& cv, const op_route& rt,
                          const storage::result& r) {
  return r.st == storage::status::hit && r.value && owner_reachable(cv, rt);
}

bool connection::owner_reachable(const cluster_view& cv, const op_route& rt) {
  return same_ring(cv, rt) && (rt.local || (rt.owner < cv.peers.size() && cv.peers[rt.owner]));
}

bool connection::later_request_on(uint64_t seq, const std::string& key) const {
  for (uint64_t s = seq + 1; s - base_seq_ < pending_.size(); ++s) {
    const auto& p = pending_[s - base_seq_];
    if (p.kind == pending_kind::flush)
      return flush_unsent_ != s;  // every key (an unsent flush waits for every request before it)
    if (p.req.cmd == proto::command::get || p.req.cmd == proto::command::gets)
      continue;  // changes nothing (and a long line's parts are many)
    for (size_t i = 0; i < p.ops.size(); ++i)
      if (p.ops[i].key == key && storage::changes_item(p.ops[i]) &&
          !(i < p.routing.size() && p.routing[i].held))  // (not sent: it goes after `seq`)
        return true;
  }
  return false;
}

bool connection::earlier_request_on(uint64_t seq, const std::string& key,
                                    bool changes_only) const {
  for (uint64_t s = base_seq_; s < seq && s - base_seq_ < pending_.size(); ++s) {
    const auto& p = pending_[s - base_seq_];
    if (p.outstanding == 0)
      continue;  // done, with whatever warming it did
    if (p.kind == pending_kind::flush)
      return true;
    for (size_t i = 0; i < p.ops.size(); ++i)
      if (p.ops[i].key == key && !(i < p.routing.size() && p.routing[i].done) &&
          (!changes_only || storage::changes_item(p.ops[i])))
        return true;
  }
  return false;
}

bool connection::primary_write(const pending& p, size_t i) {
  return i < p.ops.size() && i < p.routing.size() && p.routing[i].local &&
         storage::changed_item(p.ops[i], p.results[i].st);
}

std::vector<std::string> connection::primary_writes(const pending& p) const {
  std::vector<std::string> keys;
  for (size_t i = 0; i < p.ops.size(); ++i)
    if (primary_write(p, i))
      keys.push_back(p.ops[i].key);
  return keys;
}

void connection::report_writes(pending& p) {
  if (p.routing.empty() || p.replicated || replicating_view(ctx_.routes) == nullptr)
    return;
  p.replicated = true;  // once
  replicate(primary_writes(p));
}

void connection::await_replicas(uint64_t seq, pending& p) {
  const auto* cv = replicating_view(ctx_.routes);
  if (cv == nullptr || !cv->wait_replicas || p.replicated)
    return;
  auto keys = primary_writes(p);
  if (keys.empty())
    return;
  p.replicated = true;
  p.outstanding = 1;  // the replicator's answer
  send(cv->replicator, replicate_atom::value, std::move(keys), seq);
}

void connection::hand_over_writes(bool adopt_running) {
  if (ctx_.dispatch == nullptr || replicating_view(ctx_.routes) == nullptr)
    return;
  std::vector<std::string> keys;
  for (size_t s = 0; s < pending_.size(); ++s) {
    auto& p = pending_[s];
    if (p.routing.empty() || p.replicated || p.outstanding == 0)
      continue;  // (done requests were handed over when their last result came)
    for (uint32_t i = 0; i < p.ops.size() && i < p.routing.size(); ++i) {
      const auto& rt = p.routing[i];
      const auto& o = p.ops[i];
      if (rt.held || !rt.local)
        continue;  // never sent; or a write to another primary, replicated there
      if (rt.done || rt.phase == warm_phase::erase) {
        // It ran here (a delete's own result waits in its slot while the previous owner
        // deletes too).
        if (storage::changed_item(o, p.results[i].st))
          keys.push_back(o.key);
        continue;
      }
      if (!adopt_running)
        continue;
      storage::op probe;  // the op still running here
      if (rt.phase == warm_phase::none && storage::changes_item(o)) {
        probe = storage::change_probe(o);
      } else if (rt.phase == warm_phase::restore) {  // the previous owner's item, on its way
        probe.kind = storage::op_kind::store;        // to a local shard
        probe.key = o.key;
      } else {
        continue;  // a look at the previous owner: nothing ran here that changed the item
      }
      ctx_.dispatch->adopt(id_, base_seq_ + s, i, std::move(probe));
    }
  }
  replicate(std::move(keys));
}

void connection::replicate(std::vector<std::string> keys) {
  if (const auto* cv = replicating_view(ctx_.routes); cv != nullptr && !keys.empty())
    send(cv->replicator, replicate_atom::value, std::move(keys));
}

void connection::on_replicated(uint64_t seq, bool ok) {
  if (seq < base_seq_ || seq - base_seq_ >= pending_.size())
    return;
  auto& p = pending_[seq - base_seq_];
  if (!p.replicated || p.outstanding != 1)
    return;
  if (!ok) {
    // Stored on the primary, but not on every live owner: the client must not count on it.
    for (size_t i = 0; i < p.ops.size(); ++i)
      if (primary_write(p, i)) {
        p.results[i].st = storage::status::unavailable;
        p.results[i].value = {};
      }
  }
  p.outstanding = 0;
  complete_ready();
}

void connection::handle_local(pending& p) {
  using proto::command;
  auto& req = p.req;
  uint64_t seq = base_seq_ + pending_.size() - 1;
  p.kind = pending_kind::immediate;
  switch (req.cmd) {
    case command::version:
      p.reply = "VERSION " + ctx_.node->version + "\r\n";
      break;
    case command::verbosity:
      // (the parser took a 32-bit number; memcached keeps at most its MAX_VERBOSITY_LEVEL)
      ctx_.node->verbosity.store(static_cast<int>(std::min<int64_t>(req.delay, 2)),
                                 std::memory_order_relaxed);
      if (!req.noreply)
        p.reply = "OK\r\n";
      break;
    case command::cache_memlimit: {
      // memcached's answers; a node also refuses to grow past the -m it started with (its
      // open files limit was sized for that many segments).
      const uint64_t mb = static_cast<uint64_t>(req.delay);
      const uint64_t bytes = mb << 20;
      auto& node = *ctx_.node;
      std::string_view r = "OK";
      if (mb < 8)
        r = "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m";
      else if (mb > 1000000000)
        r = "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes";
      else if (bytes > node.cfg.memory_limit || bytes < node.least_memory_limit)
        r = "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust";
      else
        set_memory_limit(bytes);
      if (r == "OK" && node.verbosity.load(std::memory_order_relaxed) > 0)
        log_line("maxbytes adjusted to %llum\n", static_cast<unsigned long long>(mb));
      if (!req.noreply)
        p.reply.assign(r.data(), r.size()).append("\r\n");
      break;
    }
    case command::mn:
      p.reply = "MN\r\n";
      break;
    case command::quit:
      // Nothing after quit is executed (memcached closes at once), even if it came in the
      // same read.
      p.close_after = true;
      read_closed_ = true;
      no_linger_ = true;
      rpos_ = rend_;
      break;
    case command::flush_all: {
      ctx_.counters->add(ctx_.counters->cmd_flush);
      p.kind = pending_kind::flush;
      const auto& cl = ctx_.routes->cluster;
      if (cl && (!cl->past.empty() || held_ > 0) && earlier_running()) {
        // Inside a ring change's window a request before it may be several steps from done
        // (a look at the previous owner, an op held behind a write, an item warmed and the
        // op run again), and its later steps would land after the flush: it waits until
        // they are answered, and nothing after it is read meanwhile (as `stats`).
        p.outstanding = 1;  // (until it is sent)
        flush_unsent_ = seq;
        input_paused_ = true;
        break;
      }
      send_flush(seq);
      break;
    }
    case command::stats: {
      const auto q = proto::classify_stats(req.stats_arg);
      switch (q.kind) {
        case proto::stats_kind::general:
        case proto::stats_kind::reset:
          p.kind = pending_kind::stats;
          p.stats_sub = q.kind;
          p.outstanding = static_cast<uint32_t>(ctx_.routes->local_shards().size());
          stats_barrier_ = true;
          input_paused_ = true;  // (no reading either: complete_ready lifts both)
          // The ops of the requests before it may still be on their way to the shards (the
          // dispatcher sends at the end of the loop iteration), or running: ask once they
          // are answered, so the shards have counted them.
          if (earlier_running())
            stats_unsent_ = true;
          else
            send_stats(seq);
          break;
        case proto::stats_kind::settings:
          compose_stats_settings(*ctx_.node, p.reply);
          break;
        case proto::stats_kind::sizes:  // (memcached's answer without -o track_sizes)
          p.reply = "STAT sizes_status disabled\r\nEND\r\n";
          break;
        case proto::stats_kind::slab_list:
        case proto::stats_kind::cachedump:
          // A segment store has no slab classes: the lists memcached gives per class are
          // empty here (monitoring tools ask for these groups with the others; ERROR would
          // make them count a failed scrape).
          p.reply = "END\r\n";
          break;
        case proto::stats_kind::detail_on:
        case proto::stats_kind::detail_off:
        case proto::stats_kind::detail_dump:
          p.kind = pending_kind::detail;  // (complete_ready: after the requests before it)
          p.stats_sub = q.kind;
          break;
        case proto::stats_kind::conns:
          compose_stats_conns(*ctx_.node, entry_.get(), uv_now(loop().uv()), p.reply);
          break;
        case proto::stats_kind::refused:
          p.reply.assign(q.error).append("\r\n");
          break;
        case proto::stats_kind::unknown:
          p.reply = "ERROR\r\n";
          break;
      }
      break;
    }
    default:
      p.reply = "ERROR\r\n";
      break;
  }
}

void connection::count_prefixes(const pending& p) {
  auto& table = ctx_.node->prefixes[ctx_.loop->index()];
  const char delimiter = ctx_.node->cfg.prefix_delimiter;
  const auto cmd = p.req.cmd;
  if (is_get_family(cmd)) {
    for (size_t i = 0; i < p.ops.size() && i < p.results.size(); ++i)
      table.record(p.ops[i].key, delimiter,
                   p.results[i].st == storage::status::hit ? prefix_table::what::hit
                                                           : prefix_table::what::get);
  } else if ((is_storage(cmd) && !is_meta(cmd)) || cmd == proto::command::delete_) {
    if (!p.ops.empty())
      table.record(p.ops[0].key, delimiter,
                   cmd == proto::command::delete_ ? prefix_table::what::del
                                                  : prefix_table::what::set);
  }
}

bool connection::earlier_running() const {
  for (size_t i = 0; i + 1 < pending_.size(); ++i)
    if (pending_[i].outstanding > 0)
      return true;
  return false;
}

void connection::send_flush(uint64_t seq) {
  // Every shard of this node, and in a cluster every other live member (each flushes all of
  // its shards: a flush op carries no key), as one flush_all on a single node. Inside the
  // warming window also the previous ring's members that are no longer in the ring but still
  // answer (a node that left lingers, serving warm reads): else their items would warm back
  // after the flush. They may have exited: no error.
  auto& p = pending_[seq - base_seq_];
  const auto& req = p.req;
  const auto& snap = *ctx_.routes;
  const auto& shards = snap.local_shards();
  std::vector<caf::actor> members;  // null: alive, but no way to reach it
  if (snap.joining())  // the members are not known yet: the cluster cannot be flushed
    members.push_back(caf::actor());
  size_t must_answer = members.size();
  // The ring the members were chosen by goes with the flush: a member whose view is newer
  // passes it on to the nodes that ring lacks (cluster/service.hpp, relay_flush). Not the
  // loop's ring when the dispatcher sends, which may have changed since.
  uint64_t placed_by = 0;
  if (snap.cluster && snap.cluster->ring) {
    const auto& cv = *snap.cluster;
    placed_by = cv.ring->placement();
    for (uint32_t id = 0; id < cv.ring->size(); ++id) {
      if (id == cv.self || !cv.ring->member(id).alive)
        continue;
      caf::actor peer = id < cv.peers.size() ? cv.peers[id] : caf::actor();
      caf::actor link = peer && ctx_.links ? ctx_.links->link_for(cv, id) : caf::actor();
      members.push_back(link ? link : peer);  // the link: in order with ops before
    }
    must_answer = members.size();
    const int64_t now_ms = cv.past.empty() ? 0 : steady_ms();
    std::vector<std::string_view> flushed;  // members of past rings, each once
    for (size_t d = 0; d < cv.past.size() && now_ms < cv.past[d].warm_until_ms; ++d) {
      const auto& past = cv.past[d];
      for (uint32_t id = 0; id < past.ring->size() && id < past.peers.size(); ++id) {
        const auto& name = past.ring->member(id).name;
        auto now = cv.ring->find(name);
        if (name != cv.self_name && past.peers[id] && past.ring->member(id).alive &&
            (!now || !cv.ring->member(*now).alive) &&
            std::find(flushed.begin(), flushed.end(), name) == flushed.end()) {
          // The way warm reads go to it, so that one behind this flush finds it flushed.
          flushed.push_back(name);
          members.push_back(past_member_actor(cv, d, id));
        }
      }
    }
  }
  const size_t n = shards.size() + members.size();
  p.kind = pending_kind::flush;
  p.flush_ring = placed_by;
  p.must_answer = static_cast<uint32_t>(shards.size() + must_answer);
  p.ops.clear();
  p.ops.resize(n);
  p.results.resize(n);
  p.outstanding = static_cast<uint32_t>(n);
  // One point on the CAS clock for every shard and member: a replica refuses copies of writes
  // before it for a while (storage::shard::guard_copies); its own clock when the flush
  // reached it would refuse a write's copy the client made after the flush at the primary.
  const uint64_t cut = storage::next_cas();
  for (auto& o : p.ops) {
    o.kind = storage::op_kind::flush;
    o.ttl = req.has_delay ? req.delay : 0;
    o.explicit_cas = cut;
  }
  for (uint32_t i = 0; i < shards.size(); ++i)
    route_op(seq, i, i);
  for (size_t j = 0; j < members.size(); ++j) {
    const auto i = static_cast<uint32_t>(shards.size() + j);
    if (members[j]) {
      ctx_.dispatch->add(members[j], id_, seq, i, storage::op(p.ops[i]), false, placed_by);
    } else {
      p.results[i].st = storage::status::unavailable;
      --p.outstanding;
    }
  }
}

void connection::send_stats(uint64_t seq) {
  for (auto& s : ctx_.routes->local_shards())
    send(s, stats_atom::value, seq);
}

void connection::on_stats(uint64_t seq, const storage::shard_stats& st) {
  if (seq < base_seq_ || seq - base_seq_ >= pending_.size())
    return;
  auto& p = pending_[seq - base_seq_];
  if (p.kind != pending_kind::stats || p.outstanding == 0)
    return;
  p.stats += st;
  --p.outstanding;
  complete_ready();
}

void connection::complete_ready() {
  while (!pending_.empty() && pending_.front().outstanding == 0) {
    auto& p = pending_.front();
    if (p.reads > 0) {  // (before the replies take the results' values)
      for (size_t i = 0; i < p.ops.size() && i < p.results.size(); ++i) {
        if (!storage::reads_value(p.ops[i]))
          continue;
        const auto& r = p.results[i];
        const uint64_t size = r.st == storage::status::hit ? r.value_size : 0;
        value_estimate_ = std::max(size, value_estimate_ / 2);
        if (r.st == storage::status::hit)  // (a miss says nothing of the values' sizes)
          remote_estimate_ = std::max<uint64_t>({size, remote_estimate_ / 2, 1});
      }
    }
    switch (p.kind) {
      case pending_kind::refused:  // the old value is gone (or unreachable): the error, if any
        out_.bytes(p.reply);
        break;
      case pending_kind::exec: {
        bool unavailable = false;
        for (size_t i = 0; i < p.results.size(); ++i)
          if (p.results[i].st == storage::status::unavailable) {
            // gat and gats answer a touch that could not run as a miss too, as mcrouter does:
            // an error line would take the other keys' values with it, and could not follow
            // those the earlier parts of a split request wrote.
            if (is_read(p.ops[i]) || is_get_family(p.req.cmd))
              p.results[i].st = storage::status::miss;  // a read nobody can serve: a miss
            else
              unavailable = true;
          }
        if (ctx_.node->detail_enabled.load(std::memory_order_relaxed))
          count_prefixes(p);
        if (p.req.cmd == proto::command::mg && p.req.meta.has('T') && !p.results.empty()) {
          const auto st = p.results[0].st;  // (handle_request: a touch if it found the item)
          ctx_.counters->add(st == storage::status::hit || st == storage::status::stored
                               ? ctx_.counters->cmd_touch
                               : ctx_.counters->cmd_get);
        }
        if (unavailable) {
          if (!p.req.noreply)
            out_.bytes("SERVER_ERROR unavailable\r\n");
        } else if (p.partial) {
          compose_get_values(p.req, p.ops, p.results, out_);
        } else {
          compose(p.req, p.ops, p.results, out_);
        }
        break;  // (its writes went to the replicator when its last result came: deliver)
      }
      case pending_kind::flush: {
        // A member that did not answer may still serve what it held: say so, as for a write.
        bool unavailable = false;  // not_sent: the member was found dead as it went out
        for (size_t i = 0; i < p.results.size() && i < p.must_answer; ++i)
          unavailable |= p.results[i].st == storage::status::unavailable ||
                         p.results[i].st == storage::status::not_sent;
        if (!p.req.noreply)
          out_.bytes(unavailable ? "SERVER_ERROR unavailable\r\n" : "OK\r\n");
        break;
      }
      case pending_kind::stats: {
        stats_barrier_ = false;  // (write_out resumes the input)
        if (p.stats_sub == proto::stats_kind::reset) {
          reset_stats(*ctx_.node, p.stats);
          out_.bytes("RESET\r\n");
          break;
        }
        std::string s;
        compose_stats(*ctx_.node, p.stats, s);
        out_.bytes(s);
        break;
      }
      case pending_kind::detail:
        if (p.stats_sub == proto::stats_kind::detail_dump) {
          std::map<std::string, prefix_counts, std::less<>> all;
          for (const auto& t : ctx_.node->prefixes)
            t.merge_into(all);
          std::string s;
          compose_prefix_dump(all, s);
          out_.bytes(s);
        } else {
          ctx_.node->detail_enabled.store(p.stats_sub == proto::stats_kind::detail_on,
                                          std::memory_order_relaxed);
          out_.bytes("OK\r\n");
        }
        break;
      case pending_kind::immediate:
        out_.bytes(p.reply);
        break;
    }
    bool close_after = p.close_after;
    remote_pending_ -= p.remote_ops;
    remote_reads_pending_ -= p.remote_reads;
    reads_pending_ -= p.reads;
    pending_.pop_front();
    ++base_seq_;
    if (close_after) {
      pending_.clear();
      remote_pending_ = 0;
      remote_reads_pending_ = 0;
      reads_pending_ = 0;
      get_rest_.reset();
      read_closed_ = true;
      break;
    }
  }
  if (stats_unsent_ && !pending_.empty() && pending_.front().kind == pending_kind::stats) {
    stats_unsent_ = false;  // everything before it is answered
    send_stats(base_seq_);
  }
  if (flush_unsent_ && *flush_unsent_ == base_seq_ && !pending_.empty()) {
    flush_unsent_.reset();  // everything before it is answered (write_out resumes the input)
    send_flush(base_seq_);
    if (pending_.front().outstanding == 0) {  // (nothing to flush: no shard, no member)
      complete_ready();
      return;
    }
  }
  write_out();
}

// -- output -------------------------------------------------------------------------------------

void connection::lose_client() {
  if (closing_ || client_lost_)
    return;
  if (lingering_ || (pending_.empty() && !get_rest_)) {
    close_now();  // (lingering: all was answered; the poll libuv stopped would never wake it)
    return;
  }
  if (get_rest_ && (get_rest_->req.cmd == proto::command::get ||
                    get_rest_->req.cmd == proto::command::gets))
    get_rest_.reset();  // (reads nobody will see; a gat's parts touch their items: they go)
  hand_over_writes(false);
  client_lost_ = true;
  read_closed_ = true;
  no_linger_ = true;
  want_write_ = false;
  out_.clear();
  rpos_ = rend_ = 0;
  update_poll();  // (stops the poll: no events are wanted any more)
  write_out();    // closes now if nothing is at work; else once the last request is done
}

void connection::write_out() {
  if (closing_ || lingering_)  // (lingering: our side is shut; a stray result changes nothing)
    return;
  if (client_lost_) {
    out_.clear();
  } else if (!out_.empty() && !want_write_) {
    write_stats st;
    auto status = writer_.flush(out_, st);
    auto& c = *ctx_.counters;
    c.add(c.bytes_written, st.bytes);
    if (st.sendfile_bytes)
      c.add(c.sendfile_bytes, st.sendfile_bytes);
    if (st.fallbacks)
      c.add(c.sendfile_fallbacks, st.fallbacks);
    if (status == socket_writer::status::error) {
      lose_client();
      return;
    }
    want_write_ = status == socket_writer::status::blocked;
    if (want_write_)
      window_level_ = 0;
    else if (out_.empty() && window_level_ < max_window_level && !read_gated_ &&
             client_reads(st.bytes))
      ++window_level_;
    if (out_.empty())
      read_gated_ = false;
  }
  // (Below every bound of over_budget(): process_input, which pauses again at once
  // otherwise, ends in complete_ready(), which calls this.) Before the close below: requests
  // already read are answered before a drain closes, also those a `stats` held back.
  if (input_paused_ && !stats_barrier_ && !flush_unsent_ &&
      pending_.size() < window(max_pending) / 2 &&
      remote_pending_ <= max_remote_pending / 2 &&
      remote_reads_pending_ <= window(max_remote_pending) / 2 && read_allowance() > 0 &&
      out_.pending_bytes() < (want_write_ ? blocked_output : max_output) / 2 &&
      (!get_rest_ || pending_.size() < max_parts_pending / 2)) {
    input_paused_ = false;
    if (in_input_) {  // a pass of process_input is on: it goes on once this returns
      input_again_ = true;
      return;
    }
    process_input();  // bytes already buffered may hold more requests
    if (closing_ || lingering_)
      return;
  }
  if (read_closed_ && pending_.empty() && out_.empty() && !get_rest_) {
    close_answered();
    return;
  }
  update_poll();
}

size_t connection::window(size_t bound) const {
  return bound >> (max_window_level - window_level_);
}

bool connection::client_reads(size_t just_written) const {
  int queued = 0;  // bytes the kernel holds for the client (not yet acknowledged)
  return ::ioctl(fd_, SIOCOUTQ, &queued) == 0 &&
         static_cast<size_t>(queued) < just_written + window_grow_queued;
}

void connection::update_poll() {
  if (!poll_open_ || closing_)
    return;
  if (entry_)
    entry_->st.store(want_write_        ? conn_entry::state::writing
                     : pending_.empty() ? conn_entry::state::idle
                                        : conn_entry::state::working,
                     std::memory_order_relaxed);
  int events = 0;
  if ((!read_closed_ && !input_paused_) || lingering_ || (hung_up_ && !hung_up_eof_))
    events |= UV_READABLE;
  if (want_write_)
    events |= UV_WRITABLE;
  if (events == poll_events_)
    return;
  poll_events_ = events;
  if (events == 0)
    uv_poll_stop(&poll_);
  else
    uv_poll_start(&poll_, events, &connection::on_poll);
}

// -- teardown -----------------------------------------------------------------------------------

bool connection::hand_to_link(std::string_view in) {
  if (!pending_.empty() || !out_.empty() || fd_ < 0)
    return false;
  int fd = fd_;
  std::string rest(in);
  fd_ = -1;    // the link's session owns the socket now: close_now() must not close it
  close_now(); // stops and closes the poll handle first (libuv allows one per socket)
  ctx_.links->serve(fd, rest);
  return true;
}

void connection::close_when_idle() {
  read_closed_ = true;
  if (pending_.empty() && out_.empty() && !get_rest_)
    close_answered();
  else
    update_poll();
}

void connection::close_answered() {
  int unread = 0;
  if ((!ctx_.draining && !hung_up_) || no_linger_ || fd_ < 0 ||
      (rpos_ == rend_ && (::ioctl(fd_, FIONREAD, &unread) != 0 || unread == 0))) {
    close_now();
    return;
  }
  // Draining, and the client sent more than was answered (a drain stops reading at a request
  // boundary). Closing a socket with unread input sends a reset, and the client's kernel may
  // then drop replies it had not read yet (a client with 20 000 gets in flight got
  // ECONNRESET instead of the 4000 answers written to it); the same after a line too long
  // (hang_up_after_answers), which the client may still be sending: end our side, and read
  // and drop its input until it closes too, or the drain's deadline closes everything. (Not
  // after quit: memcached closes at once, and nothing would bound the wait.)
  lingering_ = true;
  rpos_ = rend_ = 0;
  std::vector<char>().swap(rbuf_);  // (what was not parsed is dropped)
  ::shutdown(fd_, SHUT_WR);
  update_poll();
}

void connection::linger_read() {
  char sink[read_chunk];
  for (int i = 0; i < 64; ++i) {  // (at most 1 MiB per wake-up: other sockets wait)
    ssize_t n = ::read(fd_, sink, sizeof sink);
    if (n > 0) {
      // A client that keeps sending without reading would hold the drain until its deadline:
      // past linger_max it gets the reset after all.
      lingered_ += static_cast<size_t>(n);
      if (lingered_ > linger_max) {
        close_now();
        return;
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return;
    if (!lingering_) {  // hung up, replies still to write: they go first (a reset loses them)
      hung_up_eof_ = true;
      update_poll();
      return;
    }
    close_now();  // EOF or an error
    return;
  }
}

void connection::close_now() {
  if (closing_)
    return;
  closing_ = true;
  ctx_.node->close_conn(entry_);  // (before its fd can be reused)
  hand_over_writes();
  drop_past_copies_of_unfinished();
  ctx_.by_id.erase(id_);
  ctx_.counters->add(ctx_.counters->curr_connections, static_cast<uint64_t>(-1));
  ctx_.node->connections.fetch_sub(1, std::memory_order_relaxed);
  pending_.clear();
  remote_pending_ = 0;
  remote_reads_pending_ = 0;
  reads_pending_ = 0;
  get_rest_.reset();
  if (poll_open_) {
    uv_poll_stop(&poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), &connection::on_closed);
  } else {
    on_closed(reinterpret_cast<uv_handle_t*>(&poll_));
  }
}

void connection::on_closed(uv_handle_t* h) {
  auto* self = static_cast<connection*>(h->data);
  self->poll_open_ = false;
  if (self->fd_ >= 0) {
    ::close(self->fd_);
    self->fd_ = -1;
  }
  // Drop the self reference last: the close message keeps the actor alive until it quits.
  auto me = std::move(self->self_ref_);
  caf::anon_send(me, close_atom::value);
}

} // namespace bifrost::actors
