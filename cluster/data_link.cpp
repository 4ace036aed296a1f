#include "cluster/data_link.hpp"

#include "actors/cluster_route.hpp"
#include "actors/connection.hpp"
#include "actors/log.hpp"
#include "actors/loop_actor.hpp"
#include "actors/messages.hpp"
#include "actors/node_stats.hpp"
#include "actors/out_queue.hpp"
#include "actors/route_table.hpp"
#include "actors/socket_writer.hpp"
#include "cluster/arrival_clock.hpp"
#include "cluster/convert.hpp"
#include "cluster/link_wire.hpp"
#include "storage/parked.hpp"

#include <caf/actor_cast.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace bifrost::cluster {

namespace {

using actors::exec_atom;
using actors::result_atom;
using actors::close_atom;
/// (link_retire_atom) from the loop's links: this link's member left the rings; quit once idle
/// (data_link::retirable). (link_quit_atom) to itself: the timer found it retirable.
using link_retire_atom = caf::atom_constant<caf::atom("lretire")>;
using link_quit_atom = caf::atom_constant<caf::atom("lquit")>;
/// (link_wake_atom) from the loop's links: this link's member is back (cluster_view::returns):
/// data_link::on_member_back.
using link_wake_atom = caf::atom_constant<caf::atom("lwake")>;
/// (link_budget_atom, bool output) to a session waiting for the loop's input budget (false) or
/// output budget (true): there is room again.
using link_budget_atom = caf::atom_constant<caf::atom("lbudget")>;

constexpr size_t read_chunk = 64 * 1024;
// A session stops reading while this many calls are executing, or while the reply bytes
// waiting plus those its running calls may still produce (each value read up to the inline
// limit) reach session_max_output; one call always runs. So a peer that sends small calls
// reading large values and never reads the replies holds at most about that much here (plus
// one call's replies), not 1024 replies of up to 16 MiB.
constexpr size_t session_max_calls = 1024;
constexpr size_t session_max_output = 8 << 20;

// The most reply bytes a call can produce: a value up to the inline limit for every op that
// reads one, a result header for the others.
size_t reply_reserve(const link_wire::call& c) {
  size_t n = 64;
  for (const auto& o : c.ops) {
    n += 64 + o.key.size();
    if (o.get_value && o.kind == storage::op_kind::get)
      n += inline_value_limit;
  }
  return n;
}
constexpr uint64_t backoff_first_ms = 100;
constexpr uint64_t backoff_max_ms = 5000;
constexpr uint64_t refused_backoff_ms = 30000;
// An unreachable member is probed (connect and hello) at most this long after the last probe
// started (and failed: data_link.hpp, "Unreachable"), however long it has been unreachable.
constexpr uint64_t unreachable_probe_max_ms = 1000;
// A probe's connect not through after this long (or 4 times the last connect's time at the
// address, if more; at most half the timeout: redial_ms) is dialled anew: its SYN may have
// been dropped by a cut that has healed since, and the kernel would try again only a second
// after it, then after three.
constexpr uint64_t probe_redial_min_ms = 200;

// A socket watched by a uv_poll on one loop. Heap-allocated: closing it frees it and closes
// the fd in libuv's close callback, independent of the actor that used it.
struct watched_socket {
  uv_poll_t poll;
  int fd = -1;
  int events = 0;

  // Takes `fd` (closed on failure).
  static watched_socket* open(uv_loop_t* loop, int fd, void* owner) {
    auto* s = new watched_socket;
    s->fd = fd;
    if (uv_poll_init(loop, &s->poll, fd) != 0) {
      ::close(fd);
      delete s;
      return nullptr;
    }
    s->poll.data = owner;
    return s;
  }
  // The next close resets the connection (RST) instead of sending what the kernel still
  // holds: for a peer cut off for not reading, whose unread bytes would otherwise stay queued
  // in the kernel until it read them.
  void reset_on_close() const {
    linger lg{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  void watch(int ev, uv_poll_cb cb) {
    if (ev == events)
      return;
    events = ev;
    if (ev == 0)
      uv_poll_stop(&poll);
    else
      uv_poll_start(&poll, ev, cb);
  }
  // Frees this object: no callback reaches the owner afterwards.
  void close() {
    poll.data = this;
    uv_poll_stop(&poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), [](uv_handle_t* h) {
      auto* self = static_cast<watched_socket*>(h->data);
      ::close(self->fd);
      delete self;
    });
  }
};

// A repeating timer of a loop actor; heap-allocated and freed by its close callback.
struct loop_timer {
  uv_timer_t timer;
  uv_timer_cb cb = nullptr;
  uint64_t every_ms = 0;
  static loop_timer* start(uv_loop_t* loop, uint64_t every_ms, void* owner, uv_timer_cb cb) {
    auto* t = new loop_timer;
    uv_timer_init(loop, &t->timer);
    t->timer.data = owner;
    t->cb = cb;
    t->every_ms = every_ms;
    uv_timer_start(&t->timer, cb, every_ms, every_ms);
    uv_unref(reinterpret_cast<uv_handle_t*>(&t->timer));  // never keeps a stopping loop alive
    return t;
  }
  // Ticks every `ms` from now on (the next tick `ms` from now), if that is a change.
  void every(uint64_t ms) {
    if (ms == every_ms)
      return;
    every_ms = ms;
    uv_timer_start(&timer, cb, ms, ms);
  }
  void close() {
    uv_timer_stop(&timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer),
             [](uv_handle_t* h) { delete reinterpret_cast<loop_timer*>(h); });
  }
};

// Reads what the socket holds into `in`: >0 bytes read, 0 nothing now, -1 closed or failed.
ssize_t read_into(int fd, link_wire::frame_buffer& in) {
  char* p = in.space(read_chunk);
  ssize_t n = ::read(fd, p, in.space_size());
  if (n > 0) {
    in.commit(static_cast<size_t>(n));
    return n;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return 0;
  return -1;
}

void append_frame(actors::out_queue& out, const kj::Array<capnp::word>& frame) {
  auto bytes = frame.asChars();
  out.bytes(std::string_view(bytes.begin(), bytes.size()));
}

// The socket of one end of a link (a session or a client link): the watched socket, its
// output queue and writer, and the frame buffer it reads into. Loop thread only.
struct link_io {
  watched_socket* sock = nullptr;
  actors::socket_writer writer{-1};
  actors::out_queue out{SIZE_MAX};  // bytes only: frames are copied in
  link_wire::frame_buffer in;
  bool want_write = false;

  bool open() const noexcept { return sock != nullptr; }
  // Takes `fd`, watched on `loop` for `owner`; false (fd closed) when libuv refuses it.
  bool attach(uv_loop_t* loop, int fd, void* owner) {
    sock = watched_socket::open(loop, fd, owner);
    writer = actors::socket_writer(fd);
    return sock != nullptr;
  }
  // Writes what the socket takes now; false when the peer is gone. `bytes`: how many.
  bool flush(uint64_t& bytes) {
    bytes = 0;
    if (out.empty() || want_write)
      return true;
    actors::write_stats st;
    auto status = writer.flush(out, st);
    bytes = st.bytes;
    want_write = status == actors::socket_writer::status::blocked;
    return status != actors::socket_writer::status::error;
  }
  // Closes the socket (if open) and drops what was queued or read.
  void close() {
    if (sock)
      sock->close();
    sock = nullptr;
    out = actors::out_queue(SIZE_MAX);
    in = link_wire::frame_buffer();
    want_write = false;
  }
};

// Socket events of a link end: an error -> on_socket_error(), writable -> on_writable(),
// readable -> on_readable() (while the socket is still open).
template <class End>
void on_link_events(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<End*>(h->data);
  if (status < 0) {
    self->on_socket_error();
    return;
  }
  if (events & UV_WRITABLE)
    self->on_writable();
  if ((events & UV_READABLE) && self->io_.open())
    self->on_readable();
  else if ((events & UV_DISCONNECT) && self->io_.open())
    self->on_socket_error();  // asked for only while not reading: the peer hung up
}

// The loop's sessions and links, shared with the actors so that a session can leave it when
// it ends (the loop_links may be gone by then).
struct registry {
  registry(std::string name, uint64_t deadline_ms, std::shared_ptr<storage::parked_values> p)
    : node_name(std::move(name)), frame_deadline_ms(deadline_ms), parked(std::move(p)) {}
  const std::string node_name;  // this node's: a session's accept line names it
  const uint64_t frame_deadline_ms;  // see link_session::on_timer
  const std::shared_ptr<storage::parked_values> parked;  // any thread (its own mutex); may be null
  size_t buffered = 0;  // loop thread: input bytes the sessions hold (loop_max_buffered)
  std::vector<uint64_t> budget_waiters;  // loop thread: sessions that stopped reading for it
  size_t output = 0;    // loop thread: reply bytes encoded, not yet written (loop_max_output)
  uint64_t pinned = 0;  // loop thread: segment bytes waiting replies pin (loop_max_pinned)
  std::vector<uint64_t> output_waiters;  // loop thread: sessions that stopped for that
  std::unordered_map<uint64_t, caf::actor> sessions;
  uint64_t next_session = 1;
  std::atomic<size_t> serving{0};  // sessions spawned and not destroyed (any thread may
                                   // drop a session's last reference)
  bool closed = false;  // close_all ran: a session that starts now ends at once
  // loop thread: the last line a session logged, and the lines left out since. What a peer
  // sends (anyone may open a link) is logged at most once every 10 s per loop.
  uint64_t logged_ms = 0;
  uint64_t unlogged = 0;
};

// Sessions one loop serves at once; more link hellos are refused (a member opens one per
// loop, so this bounds what anyone reaching the memcached port can hold open).
constexpr size_t max_sessions_per_loop = 256;
// Unread input the sessions of one loop may hold together: unfinished frames (up to
// frame_limit each) and calls read but not run yet. Past it, a session that holds
// session_small_hold or more does not read until the total is below it again (the frame
// deadline closes sessions whose frames do not move), so anyone reaching the memcached port
// cannot hold 256 half-sent frames of 17 MiB per loop. Sessions holding less go on reading:
// a member's ordinary calls (a few KiB) are not stalled by someone else's pile, and all of
// them together add at most 256 x 256 KiB.
constexpr size_t loop_max_buffered = 4 * link_wire::frame_limit;
constexpr size_t session_small_hold = 256 * 1024;
// Reply bytes the sessions of one loop may hold together, encoded and not yet written. Past
// it, a finished call's reply is encoded only if it keeps its session's unwritten replies
// under session_small_hold; else the call's results wait, pinned (no copy), until there is
// room (registry::output_waiters); and a session with a reply that has waited, unencoded or
// unwritten, for the frame deadline is reset. Else anyone reaching the memcached port could
// open 256 sessions per loop that each read a 64 KiB value 256 times a call and never read
// the replies: about 24 MiB each (session_max_output plus one call), 6 GiB per loop. The
// gate weighs the reply's real size, not the call's reserve (64 KiB per get): a member's
// calls of small values go on while someone holds the budget.
constexpr size_t loop_max_output = 4 * link_wire::frame_limit;
// Segment bytes the waiting replies of one loop's sessions may keep pinned together (a value
// pins its whole segment, which the shard cannot reuse meanwhile: out_queue's pin budget
// guards client connections the same way). A reply that would pin more answers its values
// `unavailable` instead (the member's reads fail over) and waits without them.
constexpr uint64_t loop_max_pinned = 64ull << 20;

// About the bytes a reply frame takes: the values it carries inline, and a result header
// each.
size_t reply_bytes(const storage::result_batch& rs) {
  size_t n = 64;
  for (const auto& r : rs)
    n += 64 + (r.value ? std::min<size_t>(r.value.size(), inline_value_limit) : 0);
  return n;
}

// -- server side --------------------------------------------------------------------------------

class link_session final : public actors::loop_actor, private actors::drain_end_listener {
public:
  link_session(caf::actor_config& cfg, actors::io_loop& loop, actors::loop_context& ctx, int fd,
               std::string rest, std::shared_ptr<registry> reg)
    : loop_actor(cfg, loop), ctx_(ctx), fd_(fd), rest_(std::move(rest)), reg_(std::move(reg)) {
    ++reg_->serving;
  }
  ~link_session() override {
    if (fd_ >= 0)
      ::close(fd_);  // never launched (its loop was stopping): the socket was never attached
    --reg_->serving;
  }
  const char* name() const override { return "link_session"; }

  caf::behavior make_behavior() override {
    set_default_handler(caf::drop);
    set_error_handler([](caf::error&) {});
    if (reg_->closed) {  // spawned before close_all ran, launched after it
      quit();
      return {};
    }
    id_ = reg_->next_session++;
    reg_->sessions.emplace(id_, caf::actor_cast<caf::actor>(this));
    int fd = std::exchange(fd_, -1);  // io_ owns it now (closes it even if attaching fails)
    if (!io_.attach(loop().uv(), fd, this)) {
      quit();
      return {};
    }
    counters().add(counters().link_sessions_open);
    counted_ = true;
    frame_started_ = uv_now(loop().uv());
    io_.in.append(rest_);
    std::string().swap(rest_);
    timer_ = loop_timer::start(loop().uv(), tick_ms(),
                               this, &link_session::on_timer);
    process();
    update_poll();
    return {
      [this](result_atom, uint64_t tag, storage::result_batch& rs) { on_shard_result(tag, rs); },
      [this](link_budget_atom, bool output) {
        // Reads again, or encodes the replies that waited; and waits again if others took
        // the room first.
        (output ? output_wait_ : budget_wait_) = false;
        if (output) {
          send_held();
          if (quit_when_done_ && calls_.empty()) {
            quit();
            return;
          }
          if (io_.open() && !closing_ && !input_paused())
            process();  // (the held replies kept their reserve: the input may have paused)
        }
        update_poll();
      },
      [this](close_atom) {
        write_out();  // replies computed before the close (best effort: never blocks)
        // Calls still running in the shards may change items: stay for their results, so
        // that what they changed is replicated (the replies have nowhere to go): a second at
        // a time while the node runs (a shard slower than that still answers; once, its
        // late writes were never replicated), up to max_close_wait_s; one second at
        // shutdown, when a shard may be gone and never answer.
        if (calls_.empty() || (quit_when_done_ && (reg_->closed || close_waits_ >= max_close_wait_s))) {
          quit();
        } else {
          quit_when_done_ = true;
          ++close_waits_;
          delayed_send(this, std::chrono::seconds(1), close_atom::value);
        }
      },
    };
  }

  void on_exit() override {
    close_socket();
    reg_->sessions.erase(id_);
    calls_.clear();
    groups_.clear();
  }

private:
  struct running_call {
    uint64_t id = 0;
    link_wire::call call;
    storage::result_batch results;
    size_t outstanding = 0;  // shard groups not answered yet
    size_t reserve = 0;      // reply_reserve(call), counted in reserved_ until its reply
    bool kept = false;       // call.ops still hold the ops (replicates(origin) at execute)
    caf::actor replicator;   // kept: the view's replicator at execute, which replicate() uses
                             // (the loops drop the view as the node stops, with the write
                             // still at its shard: it is replicated all the same)
    std::vector<bool> again; // by op (empty: none): placed again through the router (its
                             // owner replicates it; its op here was moved out)
    uint64_t answer_by = 0;  // steady ms its member gives up on it (0: not said): ops placed
                             // again carry it (storage::op::answer_by_ms)
  };
  struct group {
    uint64_t call = 0;             // key of calls_
    std::vector<uint32_t> index;   // the call's op indexes this shard batch answers (empty:
                                   // all of them, in order: the node has one shard)
  };

  actors::loop_counters& counters() { return *ctx_.counters; }

  friend void on_link_events<link_session>(uv_poll_t*, int, int);
  void on_socket_error() { close_socket(); }
  void on_writable() {
    io_.want_write = false;
    write_out();
  }

  void on_readable() {
    if (wait_for_budget()) {
      update_poll();
      return;
    }
    if (io_.in.size() == 0)
      frame_started_ = uv_now(loop().uv());
    ssize_t n = read_into(io_.sock->fd, io_.in);
    if (n < 0) {
      close_socket();  // the member went away: the calls it waits for are dropped
      return;
    }
    if (n > 0)
      process();
    update_poll();
  }

  // True (and registered to be told when there is room) while the loop's sessions hold more
  // unread input than loop_max_buffered and this one holds session_small_hold or more: it
  // then reads nothing more (it still runs the whole calls it holds, which frees room).
  bool wait_for_budget() {
    if (budget_wait_)
      return true;
    if (reg_->buffered <= loop_max_buffered || held_ < session_small_hold)
      return false;
    budget_wait_ = true;
    reg_->budget_waiters.push_back(id_);
    return true;
  }

  // True while the reply carrying `rs` may be encoded now: the loop's sessions hold no more
  // unwritten replies than loop_max_output, or it keeps this session's under
  // session_small_hold. (The reply is weighed only when the loop is over its budget.)
  bool room_for(const storage::result_batch& rs) const {
    return reg_->output <= loop_max_output || out_held_ + reply_bytes(rs) < session_small_hold;
  }
  // Encodes the replies that waited, oldest first, each that has room (the peer matches
  // replies by call id); waits (registered to be told) for room for the rest.
  void send_held() {
    bool blocked = false;
    for (auto w = waiting_replies_.begin(); w != waiting_replies_.end();) {
      auto it = calls_.find(w->call);
      if (it != calls_.end() && io_.open() && !room_for(it->second.results)) {
        blocked = true;
        ++w;
        continue;
      }
      reg_->pinned -= w->pinned;
      w = waiting_replies_.erase(w);
      if (it != calls_.end())
        finish(it);
    }
    if (blocked && !output_wait_) {
      output_wait_ = true;
      reg_->output_waiters.push_back(id_);
    }
  }
  // A finished call whose reply has no room now waits; past the loop's pin budget, without
  // the values it read (answered unavailable).
  void hold(std::unordered_map<uint64_t, running_call>::iterator it) {
    uint64_t pins = 0;  // each segment once (a call often reads one value many times)
    std::vector<const void*> seen;
    for (const auto& r : it->second.results)
      if (r.value && r.value.segment_id() != nullptr &&
          std::find(seen.begin(), seen.end(), r.value.segment_id()) == seen.end()) {
        seen.push_back(r.value.segment_id());
        pins += r.value.segment_size();
      }
    if (pins > 0 && reg_->pinned + pins > loop_max_pinned) {
      for (auto& r : it->second.results)
        if (r.value)
          r = storage::result::of(storage::status::unavailable);
      pins = 0;
    }
    reg_->pinned += pins;
    waiting_replies_.push_back(waiting_reply{it->first, uv_now(loop().uv()), pins});
  }
  // The call's reply goes out (unless the socket is gone) and the call ends.
  void finish(std::unordered_map<uint64_t, running_call>::iterator it) {
    reply(it->second);
    reserved_ -= it->second.reserve;
    calls_.erase(it);
    account();
  }

  // Keeps reg_->buffered and reg_->output equal to the input and the reply bytes the loop's
  // sessions hold, and tells the sessions waiting for room once there is.
  void account() {
    size_t now_held = io_.open() ? io_.in.size() : 0;
    reg_->buffered = reg_->buffered - held_ + now_held;
    held_ = now_held;
    size_t now_out = io_.open() ? io_.out.pending_bytes() : 0;
    if (now_out != out_held_)  // (a decrease wraps, as the gauge's other updates do)
      counters().add(counters().link_reply_bytes, uint64_t{now_out} - out_held_);
    reg_->output = reg_->output - out_held_ + now_out;
    out_held_ = now_out;
    if (reg_->buffered <= loop_max_buffered && !reg_->budget_waiters.empty())
      wake(reg_->budget_waiters, false);
    if (reg_->output <= loop_max_output && !reg_->output_waiters.empty())
      wake(reg_->output_waiters, true);
  }
  void wake(std::vector<uint64_t>& list, bool output) {
    auto waiters = std::move(list);
    list.clear();
    for (auto id : waiters)
      if (auto it = reg_->sessions.find(id); it != reg_->sessions.end())
        caf::anon_send(it->second, link_budget_atom::value, output);
  }

  // A hello or frame that has been arriving for frame_deadline_ms (4 RPC timeouts) closes the
  // session: the member that sends it has failed the call long before (its data_link gives up
  // after one RPC timeout without an answer), so only a stalled or hostile peer is cut off.
  // A session that stopped reading (input_paused) waits for its own calls, not for its peer.
  static void on_timer(uv_timer_t* h) {
    auto* self = static_cast<link_session*>(h->data);
    uint64_t now = uv_now(self->loop().uv());
    // A tick this late: the loop stood still (the process was stopped, or something held
    // the loop), and its member heard nothing meanwhile (arrived_late). libuv runs timers
    // before it reads, so this is seen before the calls that waited.
    const uint64_t steady = steady_now_ms();
    if (self->ticked_at_ != 0 && steady - self->ticked_at_ > 2 * self->tick_ms() + 200)
      self->stalled_at_ = steady;
    self->ticked_at_ = steady;
    // A reply the peer has not taken whole for as long (queued, or waiting for room): a member
    // reads replies as they come (and gave up on the call long before), so only a stalled,
    // hostile or trickling peer holds one that long. (The oldest reply's age, not the last
    // progress: a peer reading a little now and then must not hold the loop's reply budget.)
    if (self->reply_late(now)) {
      if (self->io_.want_write) {  // our own loop may have stalled: take what the socket takes
        self->io_.want_write = false;
        self->write_out();
      }
      if (self->reply_late(now)) {
        self->log(now,
                     "bifrost cluster: data link from '%s': a reply not taken for over %llu ms "
                     "(%zu bytes queued, %zu replies waiting for room); closing it\n",
                     self->peer_.c_str(),
                     static_cast<unsigned long long>(self->reg_->frame_deadline_ms),
                     self->io_.out.pending_bytes(), self->waiting_replies_.size());
        self->io_.sock->reset_on_close();
        self->close_socket();
        return;
      }
    }
    if (self->input_paused()) {
      self->frame_started_ = now;  // the peer's frame waits for us, not we for it
      return;
    }
    if (!self->io_.open() || self->io_.in.size() == 0 || self->closing_)
      return;
    if (now - self->frame_started_ <= self->reg_->frame_deadline_ms)
      return;
    self->log(now,
                 "bifrost cluster: data link from '%s': %s unfinished for %llu ms; closing it\n",
                 self->peer_.empty() ? "(no hello yet)" : self->peer_.c_str(),
                 self->greeted_ ? "a call" : "the hello",
                 static_cast<unsigned long long>(now - self->frame_started_));
    self->close_socket();
  }

  uint64_t tick_ms() const { return std::max<uint64_t>(reg_->frame_deadline_ms / 16, 50); }

  // Refuses the link with one line (the peer reads it as the answer to its hello), then closes.
  void refuse(const std::string& line) {
    io_.out.bytes(line);
    closing_ = true;
    write_out();
  }

  // Runs the hello and every whole call buffered, until a bound (calls running, replies
  // queued) is reached. Not re-entrant: the write_out() it calls may ask for it again.
  void process() {
    if (processing_)
      return;
    processing_ = true;
    process_input();
    processing_ = false;
    account();
  }

  void process_input() {
    while (io_.open() && !closing_) {
      if (!greeted_) {
        link_wire::hello h;
        size_t used = 0;
        std::string error;
        switch (link_wire::parse_hello(io_.in.text(), h, used, error)) {
          case link_wire::hello_status::incomplete:
            return;
          case link_wire::hello_status::not_hello:
          case link_wire::hello_status::bad:
            refuse("CLIENT_ERROR " + (error.empty() ? std::string("not a link hello") : error) +
                   "\r\n");
            return;
          case link_wire::hello_status::ok:
            break;
        }
        io_.in.consume(used);
        frame_started_ = uv_now(loop().uv());
        if (h.version != rpc::SCHEMA_VERSION) {
          refuse("SERVER_ERROR data link version mismatch: this node speaks version " +
                 std::to_string(rpc::SCHEMA_VERSION) + ", the peer speaks version " +
                 std::to_string(h.version) + "\r\n");
          return;
        }
        peer_ = h.name;
        greeted_ = true;
        io_.out.bytes(link_wire::accept_line(rpc::SCHEMA_VERSION, reg_->node_name));
        write_out();
        continue;
      }
      if (input_paused())
        return;  // resumed when replies went out
      size_t size = 0, need = 0;
      auto st = link_wire::frame_size(io_.in.text(), size, need, link_wire::frame_limit);
      if (st == link_wire::frame_status::incomplete)
        return;
      std::string error;
      running_call rc;
      if (st == link_wire::frame_status::bad)
        error = "frame too large or too many segments";
      else if (!link_wire::decode_call(io_.in.frame(size), rc.call, error))
        ;
      else if (rc.call.origin != rpc::Origin::CLIENT && rc.call.origin != rpc::Origin::WARM &&
               rc.call.origin != rpc::Origin::REPLICA)
        error = "unknown origin";
      if (!error.empty()) {
        log(uv_now(loop().uv()), "bifrost cluster: data link from '%s': %s; closing it\n",
            peer_.c_str(), error.c_str());
        close_socket();
        return;
      }
      io_.in.consume(size);
      frame_started_ = uv_now(loop().uv());  // the next one starts now
      execute(std::move(rc));
    }
  }

  void execute(running_call rc) {
    auto& c = counters();
    c.add(c.link_calls_served);
    c.add(c.link_ops_served, rc.call.ops.size());
    size_t n = rc.call.ops.size();
    rc.results.resize(n);
    // (Late: its caller has answered its client, and nothing runs here.)
    if (arrived_late(rc.call, rc.answer_by)) {
      rc.results = unavailable(n);
      reply(rc);
      return;
    }
    // Placed by a ring this node has replaced (the member's view lags a ring change): the ops
    // of keys this node no longer owns are placed again by its ring (cluster_route.hpp).
    std::vector<bool> again;
    const actors::cluster_view* cv = ctx_.routes ? ctx_.routes->cluster.get() : nullptr;
    if (rc.call.origin == rpc::Origin::CLIENT && cv && cv->router &&
        actors::placed_by_replaced_ring(*cv, rc.call.ring)) {
      for (uint32_t i = 0; i < n; ++i)
        if (actors::place_again(*cv, rc.call.ops[i])) {
          again.resize(n);
          again[i] = true;
        }
    }
    if (!ctx_.routes || n == 0 || refused(rc.call, again)) {  // shutting down (or an empty
      if (n > 0)                                              // call): nothing runs here
        rc.results = unavailable(n);
      reply(rc);
      return;
    }
    uint64_t key = next_call_++;
    rc.reserve = reply_reserve(rc.call);
    reserved_ += rc.reserve;
    if (rc.call.origin == rpc::Origin::WARM)
      mark_warm(rc.call.ops);
    // The call keeps its ops (without values) only when their changes are replicated
    // afterwards; otherwise the shards take them whole.
    rc.kept = replicates(rc.call.origin);
    if (rc.kept)
      rc.replicator = actors::replicating_view(ctx_.routes)->replicator;
    auto take = [kept = rc.kept](storage::op& o) {
      if (!kept)
        return std::move(o);
      std::string value = std::move(o.value);
      storage::op copy = o;
      copy.value = std::move(value);
      return copy;
    };
    auto& shards = ctx_.routes->local_shards();
    auto& r = calls_[key];
    r = std::move(rc);
    if (shards.size() == 1 && again.empty()) {  // the whole call is one batch, in op order
      storage::op_batch ops;
      if (!r.kept) {
        ops = std::move(r.call.ops);
      } else {
        ops.reserve(n);
        for (auto& o : r.call.ops)
          ops.push_back(take(o));
      }
      r.outstanding = 1;
      uint64_t tag = next_tag_++;
      groups_.emplace(tag, group{key, {}});
      send(shards[0], exec_atom::value, tag, std::move(ops));
      return;
    }
    // One batch per local shard, in op order (a shard runs a batch in order), and one of the
    // ops placed again, to the router.
    std::vector<std::pair<storage::op_batch, std::vector<uint32_t>>> by_shard(shards.size() + 1);
    for (uint32_t i = 0; i < n; ++i) {
      auto& o = r.call.ops[i];
      if (!again.empty() && again[i]) {
        o.answer_by_ms = r.answer_by;  // (the call placing it again says what is left)
        by_shard.back().first.push_back(std::move(o));  // (not replicated from here)
        by_shard.back().second.push_back(i);
        continue;
      }
      auto& g = by_shard[ctx_.routes->lookup(o.key).shard_index(o.key)];
      g.first.push_back(take(o));
      g.second.push_back(i);
    }
    r.again = std::move(again);
    r.outstanding = 0;
    for (size_t s = 0; s < by_shard.size(); ++s) {
      auto& g = by_shard[s];
      if (g.first.empty())
        continue;
      ++r.outstanding;
      uint64_t tag = next_tag_++;
      groups_.emplace(tag, group{key, std::move(g.second)});
      send(s < shards.size() ? shards[s] : cv->router, exec_atom::value, tag, std::move(g.first));
    }
  }

  void on_shard_result(uint64_t tag, storage::result_batch& rs) {
    auto g = groups_.find(tag);
    if (g == groups_.end())
      return;
    auto it = calls_.find(g->second.call);
    if (it != calls_.end()) {
      auto& r = it->second;
      auto& idx = g->second.index;  // empty: the whole call, in order
      const size_t answers = idx.empty() ? r.results.size() : idx.size();
      for (size_t j = 0; j < answers; ++j)
        r.results[idx.empty() ? j : idx[j]] =
          j < rs.size() ? std::move(rs[j]) : storage::result::of(storage::status::unavailable);
      replicate(r, idx);
      if (--r.outstanding == 0) {
        // Its reply goes out now if there is room, else waits (results pinned) for it.
        if (!io_.open() || room_for(r.results)) {
          finish(it);
        } else {
          hold(it);
          send_held();  // (registers for room)
        }
      }
    }
    groups_.erase(g);
    if (quit_when_done_ && calls_.empty()) {
      quit();
      return;
    }
    if (io_.open() && !closing_ && !input_paused())
      process();  // input paused at the bound may continue
    update_poll();
  }

  // A member's client call that reaches this node later than the member's RPC timeout after it
  // was sent (cluster/arrival_clock.hpp: this node was stopped, or a cut held the bytes): the
  // member has answered its client `unavailable`, and the call, run now, would be stamped now
  // and win over the writes the key's other owners acknowledged meanwhile. Unless this session
  // held it back itself (held_back): the member saw it at work and waits up to
  // queued_limit_factor timeouts.
  // (Every stamped call sets the baseline: replicated state and warm reads too.) `answer_by`:
  // when the member gives up on a client call that is run (steady_now_ms; 0: not said).
  bool arrived_late(const link_wire::call& call, uint64_t& answer_by) {
    answer_by = 0;
    if (call.stamp.sent_ms == 0)
      return false;
    const uint64_t now = steady_now_ms();
    const uint64_t late = arrivals_.late_ms(call.stamp.sent_ms, now);
    if (call.origin != rpc::Origin::CLIENT)
      return false;
    const bool held = late != 0 && held_back(now - late, call.stamp.timeout_ms);
    if (!refuse_late(late, call.stamp.timeout_ms, held, queued_limit_factor)) {
      answer_by = answer_deadline(now, late, call.stamp.timeout_ms, held, queued_limit_factor);
      return false;
    }
    counters().add(counters().link_late_calls_refused);
    log(uv_now(loop().uv()),
        "bifrost cluster: data link from '%s': refused a call that came %llu ms later than the "
        "quickest (its RPC timeout: %u ms; this node stopped, or the network held it)\n",
        peer_.c_str(), static_cast<unsigned long long>(late), call.stamp.timeout_ms);
    return true;
  }
  // Whether this session held a call sent at `t` (steady ms, here) back itself while its
  // member, which waits `timeout` without a word, saw it at work: it stopped reading for its
  // own replies at some time from before the call until after it was sent, beginning within
  // the timeout, and the loop did not stand still since (a stop: the member heard nothing,
  // and the backlog read on waking holds the session too).
  bool held_back(uint64_t t, uint64_t timeout) const {
    if (stalled_at_ >= t || hold_began_ == 0 || hold_began_ > t + timeout)
      return false;
    return holding_ || held_until_ >= t;
  }

  // A member's client call is refused while this node stops for good (node_shared::
  // member_writes_refused) when a write of it would run here: it would be neither replicated
  // (R = 1; or the loops are about to forget the cluster view, the replicator ends) nor kept.
  // Writes placed again (`again`: keys this node no longer owns, by a ring the member has not
  // caught up with) go to their owners and are not refused.
  bool refused(const link_wire::call& call, const std::vector<bool>& again) const {
    if (call.origin != rpc::Origin::CLIENT || !ctx_.node ||
        !ctx_.node->member_writes_refused.load(std::memory_order_relaxed))
      return false;
    for (size_t i = 0; i < call.ops.size(); ++i)
      if (storage::changes_item(call.ops[i]) && (again.empty() || !again[i]))
        return true;
    return false;
  }

  // Origin client: this node is the keys' primary; their other owners get the change in the
  // background (the replicator actor), as after Node.execute.
  bool replicates(rpc::Origin origin) const {
    return origin == rpc::Origin::CLIENT && actors::replicating_view(ctx_.routes) != nullptr;
  }
  // The changes of the ops `idx` names (empty: all of them) go to the replicator, once their
  // shard answered: not when the whole call did, which the router's part (ops placed again,
  // replicated by their owners) can hold past the session's end.
  void replicate(const running_call& r, const std::vector<uint32_t>& idx) {
    if (!r.kept || !r.replicator)
      return;
    std::vector<std::string> keys;
    const size_t n = idx.empty() ? r.call.ops.size() : idx.size();
    for (size_t j = 0; j < n; ++j) {
      const size_t i = idx.empty() ? j : idx[j];
      if ((r.again.empty() || !r.again[i]) && storage::changed_item(r.call.ops[i], r.results[i].st))
        keys.push_back(r.call.ops[i].key);
    }
    if (!keys.empty())
      send(r.replicator, actors::replicate_atom::value, std::move(keys));
  }

  // The hello named a member of this node's current ring or of a past one it still warms
  // from. (A node that joined but is in no ring here yet gets no parking: its re-reads
  // read afresh, as before parking.)
  bool peer_is_member() const {
    const auto* cv = ctx_.routes ? ctx_.routes->cluster.get() : nullptr;
    if (!cv || !cv->ring)
      return false;
    if (cv->ring->find(peer_))
      return true;
    for (const auto& p : cv->past)
      if (p.ring && p.ring->find(peer_))
        return true;
    return false;
  }

  // The reply leaves at the end of the loop's drain, after every shard result that was ready:
  // a read often holds several calls, and their replies then share one send (measured on the
  // 3-node bench: one sendmsg per call was the most frequent syscall of a node).
  void reply(running_call& r) {
    if (!io_.open())
      return;
    // A value too large for the reply is left out; the member reads it again by RPC. It gets
    // this read's result from the park, whatever later calls on this link did to the item.
    // (Only for a caller that asks, and names a member of the ring: nobody else re-reads.)
    if (reg_->parked && r.call.park) {
      auto left_out = [](const storage::result& x) {
        return x.value && x.value.size() > inline_value_limit;
      };
      if (std::any_of(r.results.begin(), r.results.end(), left_out) && peer_is_member())
        for (auto& x : r.results)
          if (left_out(x))
            x.parked = x.placed_again ? reg_->parked->park_strict(x) : reg_->parked->park(x);
    }
    append_frame(io_.out, link_wire::encode_reply(r.call.id, r.results));
    reply_frames_.emplace_back(out_written_ + io_.out.pending_bytes(), uv_now(loop().uv()));
    queue_flush();
  }

  void queue_flush() { loop().at_drain_end(this, caf::actor_cast<caf::strong_actor_ptr>(this)); }
  void on_drain_end() override { write_out(); }

  void write_out() {
    if (!io_.open())
      return;
    uint64_t bytes = 0;
    bool ok = io_.flush(bytes);
    counters().add(counters().bytes_written, bytes);
    if (!ok || (closing_ && io_.out.empty())) {
      close_socket();
      return;
    }
    out_written_ += bytes;
    while (!reply_frames_.empty() && reply_frames_.front().first <= out_written_)
      reply_frames_.pop_front();
    // Calls already read may have waited for the output to drain: run them now (the peer may
    // have nothing more to send, so no readable event would come for them).
    if (greeted_ && !closing_ && io_.in.size() > 0)
      process();  // stops again at the bounds; does nothing when called from inside itself
    else if (bytes > 0)
      account();
    // A waiting reply may fit now that this session's own replies left (the loop-wide room
    // is told by message, this session's is not).
    if (bytes > 0 && !waiting_replies_.empty())
      send_held();
    update_poll();
  }

  void update_poll() {
    if (!io_.open())
      return;
    int ev = io_.want_write ? UV_WRITABLE : 0;
    const bool reading = !closing_ && !input_paused() && !budget_wait_;
    if (reading == holding_) {  // (transitions only: arrived_late's held_back)
      const uint64_t now = std::max<uint64_t>(steady_now_ms(), 1);
      (reading ? held_until_ : hold_began_) = now;
      holding_ = !reading;
    }
    if (reading)
      ev |= UV_READABLE;
    else if (budget_wait_ || !waiting_replies_.empty())
      ev |= UV_DISCONNECT;  // a holder that hangs up while waiting gives its room back
    io_.sock->watch(ev, &on_link_events<link_session>);
  }

  /// A line about what the peer did, unless this loop's sessions logged one in the last 10 s
  /// (then it is counted, and the next line says how many were left out).
  __attribute__((format(printf, 3, 4))) void log(uint64_t now, const char* fmt, ...) {
    if (reg_->logged_ms != 0 && now - reg_->logged_ms < 10000) {
      ++reg_->unlogged;
      return;
    }
    reg_->logged_ms = now;
    if (reg_->unlogged != 0)
      log_line("bifrost cluster: (%llu data link lines left out in 10 s)\n",
               static_cast<unsigned long long>(reg_->unlogged));
    reg_->unlogged = 0;
    va_list args;
    va_start(args, fmt);
    log_linev(fmt, args);
    va_end(args);
  }

  void close_socket() {
    if (timer_)
      timer_->close();
    timer_ = nullptr;
    if (!io_.open())
      return;
    io_.close();
    reply_frames_.clear();
    // The replies that waited have nowhere to go: their calls end (their changes were
    // replicated when they finished).
    for (auto& w : waiting_replies_) {
      reg_->pinned -= w.pinned;
      if (auto it = calls_.find(w.call); it != calls_.end())
        finish(it);  // (no reply: the socket is closed)
    }
    waiting_replies_.clear();
    account();
    if (counted_)
      counters().add(counters().link_sessions_open, static_cast<uint64_t>(-1));
    counted_ = false;
    caf::anon_send(caf::actor_cast<caf::actor>(this), close_atom::value);
  }

  actors::loop_context& ctx_;
  int fd_;
  static constexpr uint32_t max_close_wait_s = 60;
  uint32_t close_waits_ = 0;  // seconds waited for running calls since the socket closed
  std::string rest_;
  std::shared_ptr<registry> reg_;
  uint64_t id_ = 0;
  link_io io_;
  bool counted_ = false;
  bool greeted_ = false;
  bool closing_ = false;  // refused: close once the answer is out
  bool quit_when_done_ = false;  // the socket closed: quit once the running calls are done
  bool processing_ = false;  // inside process(): its write_out must not start it again
  loop_timer* timer_ = nullptr;  // on_timer: the frame deadline
  uint64_t frame_started_ = 0;   // loop ms: the front hello or frame began arriving
  size_t held_ = 0;              // io_.in bytes counted in reg_->buffered
  bool budget_wait_ = false;     // in reg_->budget_waiters: reads nothing until told
  size_t out_held_ = 0;          // unwritten reply bytes counted in reg_->output
  bool output_wait_ = false;     // in reg_->output_waiters: waiting_replies_ wait for room
  arrival_clock arrivals_;       // how late members' calls come (arrived_late)
  bool holding_ = false;         // it stopped reading for itself (its replies, the loop's budget)
  uint64_t hold_began_ = 0;      // steady ms the last such hold began (0: never)
  uint64_t held_until_ = 0;      // steady ms it last read again after that
  uint64_t ticked_at_ = 0;       // steady ms of on_timer's last tick
  uint64_t stalled_at_ = 0;      // steady ms on_timer last found the loop had stood still
  // Finished calls whose replies wait for room (results pinned), oldest first.
  struct waiting_reply {
    uint64_t call;    // calls_ key
    uint64_t since;   // loop ms it finished
    uint64_t pinned;  // segment bytes its values pin (counted in reg_->pinned)
  };
  std::list<waiting_reply> waiting_replies_;
  uint64_t out_written_ = 0;     // bytes written to the socket so far
  // Replies not yet written whole, oldest first: (their end in the byte stream, loop ms
  // queued). on_timer closes the session when the front one is older than the frame deadline.
  std::deque<std::pair<uint64_t, uint64_t>> reply_frames_;

  bool reply_late(uint64_t now) const {
    if (!io_.open() || closing_)
      return false;
    const uint64_t limit = reg_->frame_deadline_ms;
    return (!reply_frames_.empty() && now - reply_frames_.front().second > limit) ||
           (!waiting_replies_.empty() && now - waiting_replies_.front().since > limit);
  }
  std::string peer_;
  std::unordered_map<uint64_t, running_call> calls_;
  std::unordered_map<uint64_t, group> groups_;
  uint64_t next_call_ = 1;
  uint64_t next_tag_ = 1;
  size_t reserved_ = 0;  // reply bytes the running calls may still produce (reply_reserve)

  bool input_paused() const {
    return calls_.size() >= session_max_calls ||
           (!calls_.empty() && reserved_ + io_.out.pending_bytes() >= session_max_output) ||
           io_.out.pending_bytes() >= session_max_output;
  }
};

// -- client side --------------------------------------------------------------------------------

class data_link final : public actors::loop_actor, private actors::drain_end_listener {
public:
  data_link(caf::actor_config& cfg, actors::io_loop& loop, actors::loop_context& ctx,
            link_settings settings, std::string address, std::string peer, caf::actor rpc_peer)
    : loop_actor(cfg, loop), ctx_(ctx), settings_(std::move(settings)),
      address_(std::move(address)), peer_(std::move(peer)), rpc_peer_(std::move(rpc_peer)) {}
  const char* name() const override { return "data_link"; }

  caf::behavior make_behavior() override {
    set_default_handler(caf::drop);
    set_error_handler([](caf::error&) {});
    timer_ = loop_timer::start(loop().uv(), tick_ms(), this, &data_link::on_timer);
    // The member's RPC peer actor ends once the member is forgotten (cluster/service.cpp,
    // reap_peers): what it was asked is dropped with it, so its calls answer unavailable
    // here, and later ones at once; a member back under its name has a new peer actor, and a
    // new link (links_impl keys links by the peer actor too: link_key).
    if (rpc_peer_)
      monitor(rpc_peer_);
    set_down_handler([this](caf::down_msg& m) {
      if (m.source == rpc_peer_.address())
        on_rpc_peer_down();
    });
    return {
      [this](exec_atom, uint64_t tag, storage::op_batch& ops) {
        take(tag, ops, rpc::Origin::CLIENT);
      },
      [this](exec_atom, uint64_t tag, storage::op_batch& ops, uint64_t placed_by) {
        take(tag, ops, rpc::Origin::CLIENT, placed_by);
      },
      [this](actors::apply_atom, uint64_t tag, storage::op_batch& ops) {
        take(tag, ops, rpc::Origin::REPLICA);
      },
      [this](actors::warm_atom, uint64_t tag, storage::op_batch& ops) {
        take(tag, ops, rpc::Origin::WARM);
      },
      [this](link_retire_atom) {
        retiring_ = true;
        used_at_ = now();
      },
      [this](link_wake_atom) { on_member_back(); },
      [this](link_quit_atom) {
        quit_sent_ = false;
        if (retirable())
          quit();
      },
      [this](result_atom, uint64_t tag, storage::result_batch& rs) { on_rpc_result(tag, rs); },
    };
  }

  void on_exit() override {
    if (timer_)
      timer_->close();
    timer_ = nullptr;
    close_socket();
    set_unreachable(false);
    // Whatever was asked of this link gets an answer.
    fail_sent();
    for (auto& b : waiting_)
      send_result(b.sender, b.tag, unavailable(b.ops.size()));
    waiting_.clear();
    for (auto& q : queue_) {
      for (auto& b : q)
        send_result(b.sender, b.tag, unavailable(b.ops.size()));
      q.clear();
    }
    fail_rpc_calls();
  }

private:
  enum class state { idle, connecting, greeting, ready, backoff };
  struct batch {
    caf::actor sender;
    uint64_t tag = 0;
    storage::op_batch ops;
    rpc::Origin origin = rpc::Origin::CLIENT;  // or warm (warm_atom), replica (apply_atom)
    uint64_t placed_by = 0;  // client ops: the placement they were placed by (0: unknown)
    uint64_t sent_at = 0;                      // loop ms the call was queued (on the link)
    uint64_t frame_at = 0;  // offset of its frame in the socket's byte stream (see written_)
  };
  struct rpc_call {
    caf::actor sender;
    uint64_t tag = 0;
    size_t n = 0;
    // A re-read of streamed values: the link call's results, waiting for these indexes.
    storage::result_batch results;
    std::vector<size_t> rereads;
    size_t stream = 0;  // stream_of(origin)
  };

  actors::loop_counters& counters() { return *ctx_.counters; }
  uint64_t now() { return uv_now(loop().uv()); }

  void set_unreachable(bool on) {
    if (on != unreachable_)
      counters().add(counters().links_unreachable, on ? 1 : static_cast<uint64_t>(-1));
    unreachable_ = on;
  }

  void fail_fast(const batch& b) {
    counters().add(counters().link_calls_failed_fast);
    send_result(b.sender, b.tag, unavailable(b.ops.size()));
  }

  // Every call through RPC answers unavailable.
  void fail_rpc_calls() {
    for (auto& [t, c] : rpc_calls_) {
      if (c.rereads.empty()) {
        send_result(c.sender, c.tag, unavailable(c.n));
        continue;
      }
      for (auto i : c.rereads)  // a hit whose value never came is no hit
        c.results[i] = storage::result::of(storage::status::unavailable);
      send_result(c.sender, c.tag, std::move(c.results));
    }
    rpc_calls_.clear();
    rpc_in_flight_[0] = rpc_in_flight_[1] = 0;
  }

  // (The link stays registered and alive, answering what would go by RPC at once, until a
  // ring without the member retires it: a view that still names the ended peer actor finds
  // a live link, never a quit one that would drop its batches.)
  void on_rpc_peer_down() {
    rpc_gone_ = true;
    fail_rpc_calls();
    pump();  // batches held behind those calls
  }

  // The member is back (SWIM has it alive again, or a new process under its name): what this
  // link learnt while it was away goes. A backoff ends (the next batch dials), but not a
  // refused hello's (a member that serves no links would refuse again at every return); an
  // unreachable link is probed now, not when a batch comes a second after its last probe
  // failed; and a probe still connecting may have been dialled while the member was away —
  // its SYN dropped by a cut, the kernel's next try a second on, the probe's own limit a
  // timeout — so it is dialled anew (one connected, its hello sent, is left: a stopped
  // member answers it on waking). Batches that come meanwhile still answer unavailable, for
  // one round trip: SWIM may have heard of the member through a third node (it refuted a
  // suspicion by gossip) while the way from here is still cut. (Before, writes forwarded to
  // a member back from a cut or a pause were refused until the next probe, up to a second
  // or more after it was seen alive again: test_partition.py, ComebackTest.)
  void on_member_back() {
    if (retiring_ || rpc_gone_ || refused_)
      return;
    backoff_ms_ = backoff_first_ms;
    if (state_ == state::backoff) {
      retry_at_ = now();
      if (unreachable_)
        connect();  // the probe
    } else if (unreachable_ && state_ == state::connecting) {
      close_socket();
      silent_seen_ = false;
      connect();
    }
  }

  // `placed_by`: client ops' placement, as the sender gave it; else the loop's ring now (the
  // batch may wait here while the ring changes: the call names the ring it was taken in).
  void take(uint64_t tag, storage::op_batch& ops, rpc::Origin origin, uint64_t placed_by = 0) {
    used_at_ = now();
    auto sender = caf::actor_cast<caf::actor>(current_sender());
    if (origin != rpc::Origin::CLIENT) {
      placed_by = 0;
    } else if (placed_by == 0) {
      const auto* cv = ctx_.routes ? ctx_.routes->cluster.get() : nullptr;
      placed_by = cv && cv->ring ? cv->ring->placement() : 0;
    }
    queue_[stream_of(origin)].push_back(
      batch{std::move(sender), tag, std::move(ops), origin, placed_by});
    pump();
  }

  // Retired, nothing pending, and nothing asked for retire_idle_ms.
  bool retirable() {
    return retiring_ && !queued() && waiting_.empty() && sent_.empty() &&
           rpc_calls_.empty() && lookup_ == nullptr && state_ != state::connecting &&
           state_ != state::greeting && now() - used_at_ >= settings_.retire_idle_ms;
  }

  void send_result(const caf::actor& to, uint64_t tag, storage::result_batch rs) {
    if (to)
      send(to, result_atom::value, tag, std::move(rs));
  }

  bool fits_link(const storage::op_batch& ops, rpc::Origin origin) const {
    if (ops.empty() || ops.size() > call_max_ops)
      return false;
    size_t bytes = 0;
    for (auto& o : ops) {
      if (o.value.size() > inline_value_limit || o.kind == storage::op_kind::flush)
        return false;
      if (storage::reads_value(o) && storage::changes_item(o))
        return false;  // may not run twice: a large value needs the RPC's sink
      if (origin == rpc::Origin::CLIENT && settings_.wait_replicas && storage::changes_item(o))
        return false;
      bytes += inline_bytes_of(o);
    }
    return bytes <= call_max_bytes;
  }

  bool link_usable() const {
    return !unreachable_ && (state_ != state::backoff || now_cached_ >= retry_at_);
  }

  // Two order streams share this link: the connections' batches (origin client and warm)
  // and the replicator's copies (origin replica). Each keeps its own order across the two
  // transports; neither waits for the other. They must not: with --replication-ack all a
  // client write goes by RPC and its primary answers only once its own replicator's copies
  // were acknowledged. Two members forwarding writes to each other then each held the copy
  // the other's call waited for behind their own call, until the RPC timeout.
  static size_t stream_of(rpc::Origin o) { return o == rpc::Origin::REPLICA ? 1 : 0; }

  // Issues queued batches in order, each on its transport, never overtaking a call of its
  // stream in flight on the other transport.
  void pump() {
    now_cached_ = now();
    if (unreachable_) {
      // Connections' batches answer at once; replicated state goes by RPC as while backing
      // off (the replicator's retries span a timeout each, as before). A probe is made on
      // demand, for a batch that came: an idle link to a member gone for good (or behind a
      // cut) dials nothing, and a probe's failure (fail() pumps) starts no next one itself.
      const bool demand = queued();
      for (auto& b : queue_[0])
        fail_fast(b);
      queue_[0].clear();
      if (demand && state_ == state::backoff && now_cached_ >= retry_at_ && !retiring_ &&
          !rpc_gone_)
        connect();  // the probe
    }
    for (size_t s = 0; s < streams; ++s) {
      while (!queue_[s].empty()) {
        auto& b = queue_[s].front();
        bool via_link = fits_link(b.ops, b.origin) && link_usable();
        if (via_link ? rpc_in_flight_[s] > 0 : in_flight_link(s))
          break;
        batch next = std::move(b);
        queue_[s].pop_front();
        if (via_link)
          issue_link(std::move(next));
        else
          issue_rpc(std::move(next));
      }
    }
  }

  bool in_flight_link(size_t s) const {
    auto of = [s](const batch& b) { return stream_of(b.origin) == s; };
    return std::any_of(sent_.begin(), sent_.end(), [&](const auto& e) { return of(e.second); }) ||
           std::any_of(waiting_.begin(), waiting_.end(), of);
  }

  bool queued() const { return !queue_[0].empty() || !queue_[1].empty(); }

  void issue_rpc(batch b) {
    if (rpc_gone_) {
      send_result(b.sender, b.tag, unavailable(b.ops.size()));
      return;
    }
    uint64_t t = next_rpc_tag_++;
    size_t s = stream_of(b.origin);
    rpc_calls_.emplace(t, rpc_call{std::move(b.sender), b.tag, b.ops.size(), {}, {}, s});
    ++rpc_in_flight_[s];
    to_peer(b.origin, t, std::move(b.ops), b.placed_by);
  }

  // To the member's RPC peer actor, with the batch's origin (and client ops' placement); it
  // answers this link.
  void to_peer(rpc::Origin origin, uint64_t tag, storage::op_batch ops, uint64_t placed_by) {
    if (origin == rpc::Origin::WARM)
      send(rpc_peer_, actors::warm_atom::value, tag, std::move(ops));
    else if (origin == rpc::Origin::REPLICA)
      send(rpc_peer_, actors::apply_atom::value, tag, std::move(ops));
    else  // (placed_by 0, no ring known: the peer actor names the service's)
      send(rpc_peer_, exec_atom::value, tag, std::move(ops), placed_by);
  }

  void issue_link(batch b) {
    if (state_ == state::ready) {
      send_call(std::move(b));
      return;
    }
    waiting_.push_back(std::move(b));
    if (state_ == state::idle || state_ == state::backoff)
      connect();
  }

  void send_call(batch b) {
    uint64_t id = next_id_++;
    auto& c = counters();
    c.add(c.link_calls_sent);
    c.add(c.link_ops_sent, b.ops.size());
    b.frame_at = written_ + io_.out.pending_bytes();
    // Client ops: the placement they were placed by (take()), so that a member whose ring is
    // newer places them again (actors/cluster_route.hpp, stale placements).
    // Stamped (cluster/arrival_clock.hpp): a member that reads a client call later than this
    // node waits for its answer refuses it.
    append_frame(io_.out, link_wire::encode_call(id, b.origin, b.ops, true, b.placed_by,
                                                 {steady_now_ms(), settings_.rpc_timeout_ms}));
    b.sent_at = now();
    sent_.emplace(id, std::move(b));
    queue_flush();  // batches of the replicator and the dispatcher, in one drain: one send
  }

  void queue_flush() { loop().at_drain_end(this, caf::actor_cast<caf::strong_actor_ptr>(this)); }
  void on_drain_end() override { write_out(); }

  // -- connection -------------------------------------------------------------------------

  void connect() {
    state_ = state::connecting;
    progress_at_ = now();
    probe_at_ = progress_at_;
    tune_timer();
    auto c = address_.rfind(':');
    if (c == std::string::npos) {
      fail("connect " + address_ + ": not host:port", backoff_ms_);
      return;
    }
    std::string host = address_.substr(0, c), port = address_.substr(c + 1);
    if (host.size() >= 2 && host.front() == '[')
      host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) == 0 && res) {
      dial(res);  // a numeric address (the usual advertised one): no lookup
      freeaddrinfo(res);
      return;
    }
    // A host name: resolved on libuv's thread pool, so the loop never waits for DNS.
    hints.ai_flags = AI_NUMERICSERV;
    auto* l = new lookup{{}, this};
    l->req.data = l;
    int rc = uv_getaddrinfo(loop().uv(), &l->req, &data_link::on_resolved, host.c_str(),
                            port.c_str(), &hints);
    if (rc != 0) {
      delete l;
      fail("resolve " + address_ + ": " + uv_strerror(rc), backoff_ms_);
      return;
    }
    lookup_ = l;
  }

  // A pending host-name lookup; freed by its callback. `owner` is cleared when the link stops
  // waiting for it (failure, timeout, exit), and the answer is then dropped.
  struct lookup {
    uv_getaddrinfo_t req;
    data_link* owner;
  };

  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* l = static_cast<lookup*>(req->data);
    data_link* self = l->owner;
    delete l;
    if (self) {
      self->lookup_ = nullptr;
      if (status == 0 && res)
        self->dial(res);
      else
        self->fail("resolve " + self->address_ + ": " + uv_strerror(status), self->backoff_ms_);
    }
    if (res)
      uv_freeaddrinfo(res);
  }

  void forget_lookup() {
    if (!lookup_)
      return;
    lookup_->owner = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(&lookup_->req));  // its callback still frees it
    lookup_ = nullptr;
  }

  // Opens a non-blocking connection to the first address of `res` (kept for redial()).
  void dial(const addrinfo* res) {
    if (res->ai_addrlen > sizeof dialled_addr_) {
      fail("connect " + address_ + ": address too long", backoff_ms_);
      return;
    }
    std::memcpy(&dialled_addr_, res->ai_addr, res->ai_addrlen);
    dialled_len_ = res->ai_addrlen;
    dial_to();
  }
  void dial_to() {
    dialled_at_ = now();
    const auto* to = reinterpret_cast<const sockaddr*>(&dialled_addr_);
    int fd = ::socket(to->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      fail("connect " + address_ + ": " + std::strerror(errno), backoff_ms_);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, to, dialled_len_) != 0 && errno != EINPROGRESS) {
      int err = errno;
      ::close(fd);
      fail("connect " + address_ + ": " + std::strerror(err), backoff_ms_);
      return;
    }
    if (!io_.attach(loop().uv(), fd, this)) {
      fail("connect " + address_ + ": cannot watch the socket", backoff_ms_);
      return;
    }
    io_.sock->watch(UV_WRITABLE, &on_link_events<data_link>);
  }

  friend void on_link_events<data_link>(uv_poll_t*, int, int);
  void on_socket_error() { fail("connection to " + address_ + " failed", backoff_ms_); }
  void on_writable() {
    if (state_ == state::connecting) {
      on_connected();
      return;
    }
    io_.want_write = false;
    write_out();
  }

  void on_connected() {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(io_.sock->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      fail("connect " + address_ + ": " + std::strerror(err), backoff_ms_);
      return;
    }
    state_ = state::greeting;
    progress_at_ = now();
    connect_ms_ = progress_at_ - dialled_at_;
    io_.out.bytes(link_wire::hello_line(rpc::SCHEMA_VERSION, settings_.node_name));
    write_out();
  }

  void on_readable() {
    if (state_ == state::connecting) {
      on_connected();  // a failed connect may read as readable
      return;
    }
    ssize_t n = read_into(io_.sock->fd, io_.in);
    if (n < 0) {
      fail("connection to " + address_ + " closed", backoff_ms_);
      return;
    }
    if (n == 0)
      return;
    progress_at_ = now();
    if (state_ == state::greeting) {
      size_t used = 0;
      std::string error;
      switch (link_wire::parse_answer(io_.in.text(), rpc::SCHEMA_VERSION, peer_, used, error)) {
        case link_wire::answer_status::incomplete:
          return;
        case link_wire::answer_status::refused:
          // Refused: an older node, links off there, another version, or another node now
          // listening where this member's memcached port was (a stale address). RPC it is.
          set_unreachable(false);  // it answers: what it refuses goes by RPC
          fail("refused by " + peer_ + " (" + error + ")", refused_backoff_ms, true);
          refused_ = true;
          return;
        case link_wire::answer_status::ok:
          break;
      }
      io_.in.consume(used);
      state_ = state::ready;
      refused_ = false;
      backoff_ms_ = backoff_first_ms;
      greeted_once_ = true;
      if (unreachable_)
        log_line("bifrost cluster: data link to '%s': answers again\n", peer_.c_str());
      set_unreachable(false);
      counters().add(counters().links_open);
      open_counted_ = true;
      // Queued in order; if the write fails, fail() sends the calls it did not write by RPC,
      // in order, before anything queued behind them.
      while (!waiting_.empty() && state_ == state::ready) {
        batch b = std::move(waiting_.front());
        waiting_.pop_front();
        send_call(std::move(b));
      }
      if (!io_.open())
        return;
    }
    read_replies();
  }

  void read_replies() {
    while (io_.open()) {
      size_t size = 0, need = 0;
      auto st = link_wire::frame_size(io_.in.text(), size, need, link_wire::frame_limit);
      if (st == link_wire::frame_status::incomplete)
        break;  // then pump(): a batch for the RPC may have waited for these replies
      uint64_t id = 0;
      storage::result_batch rs;
      std::vector<bool> streamed;  // (a streamed hit has no value and its size: rereads_of)
      std::string error;
      if (st == link_wire::frame_status::bad ||
          !link_wire::decode_reply(io_.in.frame(size), id, rs, streamed, error)) {
        fail("bad reply from " + peer_ + (error.empty() ? "" : ": " + error), backoff_ms_);
        return;
      }
      io_.in.consume(size);
      reply_at_ = now();  // (whole replies count for on_timer, not bytes trickling in)
      auto it = sent_.find(id);
      if (it == sent_.end())
        continue;  // not ours (cannot happen with a sane peer): ignored
      batch b = std::move(it->second);
      sent_.erase(it);
      if (rs.size() != b.ops.size()) {
        send_result(b.sender, b.tag, unavailable(b.ops.size()));
        continue;
      }
      // Values too large to travel inline (`streamed`): read again through RPC (with a sink).
      std::vector<size_t> again;
      storage::op_batch reads = rereads_of(b.ops, rs, again);
      if (again.empty()) {
        send_result(b.sender, b.tag, std::move(rs));
        continue;
      }
      if (rpc_gone_) {
        for (auto i : again)  // (as fail_rpc_calls: the value cannot come)
          rs[i] = storage::result::of(storage::status::unavailable);
        send_result(b.sender, b.tag, std::move(rs));
        continue;
      }
      uint64_t t = next_rpc_tag_++;
      size_t s = stream_of(b.origin);
      rpc_calls_.emplace(t, rpc_call{std::move(b.sender), b.tag, rs.size(), std::move(rs),
                                     std::move(again), s});
      ++rpc_in_flight_[s];
      // As a warm read: the member neither counts it nor takes it for an access (the first
      // read was both; merge_reread keeps what that one saw).
      to_peer(rpc::Origin::WARM, t, std::move(reads), 0);
    }
    pump();
  }

  void on_rpc_result(uint64_t t, storage::result_batch& rs) {
    auto it = rpc_calls_.find(t);
    if (it == rpc_calls_.end())
      return;
    auto c = std::move(it->second);
    rpc_calls_.erase(it);
    --rpc_in_flight_[c.stream];
    if (c.rereads.empty()) {
      send_result(c.sender, c.tag, std::move(rs));
    } else {
      for (size_t j = 0; j < c.rereads.size(); ++j) {
        if (j < rs.size())
          storage::merge_reread(c.results[c.rereads[j]], std::move(rs[j]));
        else
          c.results[c.rereads[j]] = storage::result::of(storage::status::unavailable);
      }
      send_result(c.sender, c.tag, std::move(c.results));
    }
    pump();
  }

  static void on_timer(uv_timer_t* h) {
    auto* self = static_cast<data_link*>(h->data);
    // Connecting or greeting without progress for the timeout. Or a call unanswered for the
    // timeout while no whole reply came for as long: a call queued behind other calls'
    // replies waits while they come (a node whose clients asked for much, or a busy member:
    // the link is one byte stream), as an RPC data call does (service.cpp, `bounded`), up to
    // queued_limit_factor timeouts. Replicated state too: newer state goes on the same
    // stream, behind it (and pump() holds it from the RPC meanwhile), and the replicator
    // gives up on a copy by itself. Silence fails the link at the tick after it was seen, so
    // that replies (or a connect, or a hello's answer) that came while this loop was stalled
    // are read first (libuv runs timers before it polls).
    const uint64_t timeout = self->settings_.rpc_timeout_ms, now = self->now();
    bool failed = false, silent = false;
    if (self->state_ == state::connecting || self->state_ == state::greeting) {
      silent = now - self->progress_at_ > timeout;
      failed = silent && self->silent_seen_;
    } else {
      // The oldest call waited longest: ids are queue order, and sent_at follows them.
      const uint64_t waited =
        self->sent_.empty() ? 0 : now - self->sent_.begin()->second.sent_at;
      silent = waited > timeout && now - self->reply_at_ > timeout;
      failed = waited > uint64_t{queued_limit_factor} * timeout || (silent && self->silent_seen_);
    }
    self->silent_seen_ = silent && !failed;
    // Silent: unreachable (data_link.hpp), once the link was greeted at that address: a
    // connect that never got through may be a port closed to this node only (a firewall, a
    // memcached address not reachable from here) while the RPC works. A call unanswered for
    // queued_limit_factor timeouts while others were answered is the member's own trouble
    // with it: the RPC may still serve the next.
    if (failed)
      self->fail("no answer from " + self->peer_ + " within " +
                   std::to_string(self->settings_.rpc_timeout_ms) + " ms",
                 self->backoff_ms_, false, silent && self->greeted_once_);
    else if (self->probe_stuck(now))
      self->redial();
    else if (self->queued())
      self->pump();  // a backoff may have run out
    self->tune_timer();
    if (self->retirable() && !self->quit_sent_) {
      self->quit_sent_ = true;  // a socket callback may not quit(): the handler does
      self->send(self, link_quit_atom::value);
    }
  }

  // How often on_timer ticks: a quarter of the timeout (so silence is seen at two ticks soon
  // after it passed); while a probe connects, often enough to dial it anew in time.
  uint64_t tick_ms() const {
    uint64_t every = std::clamp<uint64_t>(settings_.rpc_timeout_ms / 4, 10, 1000);
    if (unreachable_ && state_ == state::connecting)
      every = std::min(every, redial_ms() / 2);
    return every;
  }
  void tune_timer() {
    if (timer_)
      timer_->every(tick_ms());
  }
  // Never more than half the probe's limit (a connect that took long once — a kernel's SYN
  // retry, a stalled loop — does not turn redials off).
  uint64_t redial_ms() const {
    return std::min(std::max(probe_redial_min_ms, 4 * connect_ms_),
                    std::max<uint64_t>(settings_.rpc_timeout_ms / 2, 50));
  }

  // A probe's connect (an unreachable link's) not through after redial_ms: a cut that dropped
  // its SYN may have healed since, and the kernel would send the next one only a second
  // after the first (then three): a member back from a one-way cut, which SWIM never saw
  // go (no return to wake the link: on_member_back), waited for it or for the probe's
  // limit and the next probe, up to 2.5 s at the default timeout. A SYN every 200 ms while
  // a probe lasts (one made for a batch that came) costs nothing. The probe keeps its limit
  // (a timeout from its first dial) and the address it dialled (no new host-name lookup).
  bool probe_stuck(uint64_t now) const {
    return unreachable_ && state_ == state::connecting && io_.open() && !retiring_ &&
           !rpc_gone_ && now - dialled_at_ >= redial_ms();
  }
  void redial() {
    close_socket();
    counters().add(counters().link_redials);
    dial_to();
  }

  // -- output -----------------------------------------------------------------------------

  void write_out() {
    if (!io_.open() || state_ == state::connecting)
      return;
    uint64_t bytes = 0;
    bool ok = io_.flush(bytes);
    written_ += bytes;
    if (!ok) {
      fail("write to " + address_ + " failed", backoff_ms_);
      return;
    }
    io_.sock->watch(UV_READABLE | (io_.want_write ? UV_WRITABLE : 0), &on_link_events<data_link>);
  }

  // -- failure ----------------------------------------------------------------------------

  void close_socket() {
    forget_lookup();
    io_.close();
    written_ = 0;  // the next socket's stream starts at 0 (its queue starts empty)
    if (open_counted_)
      counters().add(counters().links_open, static_cast<uint64_t>(-1));
    open_counted_ = false;
  }

  void fail_sent() {
    for (auto& [id, b] : sent_)
      send_result(b.sender, b.tag, unavailable(b.ops.size()));
    sent_.clear();
  }

  // Calls queued on the link of which not one byte reached the kernel, in call order: they
  // cannot have run on the member, so they may go by RPC instead. Frames are queued in call
  // order, so these are the last calls of sent_. Loop thread.
  std::vector<batch> take_unwritten() {
    auto first = std::find_if(sent_.begin(), sent_.end(),
                              [&](const auto& e) { return e.second.frame_at >= written_; });
    std::vector<batch> out;
    for (auto it = first; it != sent_.end(); ++it)
      out.push_back(std::move(it->second));
    sent_.erase(first, sent_.end());
    return out;
  }

  // The connection failed (or was refused): calls that may have reached the member answer
  // `unavailable`; calls never written and batches that never left go through RPC, in order
  // (`unreachable`, the member was silent: they answer unavailable too); the link rests for
  // `wait_ms` — a failed probe's rest counts from when it started: one that waited out its
  // limit (a cut dropping its SYNs) is followed by the next at once when a batch comes, so
  // that a cut that healed between two probes is found by the next batch, not a second on.
  void fail(const std::string& why, uint64_t wait_ms, bool always_log = false,
            bool unreachable = false) {
    const bool probe = unreachable_ && (state_ == state::connecting || state_ == state::greeting);
    if (unreachable && !unreachable_)
      log_line("bifrost cluster: data link to '%s': %s; unreachable: calls to it fail at "
               "once until it answers a probe\n",
               peer_.c_str(), why.c_str());
    else if (!unreachable_ && (always_log || state_ == state::ready))
      log_line("bifrost cluster: data link to '%s': %s; using RPC for %.1f s\n",
               peer_.c_str(), why.c_str(), static_cast<double>(wait_ms) / 1000.0);
    if (unreachable)
      set_unreachable(true);
    if (unreachable_)  // (a probe refused a connect: still unreachable, as often probed)
      wait_ms = std::min(wait_ms, unreachable_probe_max_ms);
    auto unwritten = take_unwritten();
    close_socket();
    fail_sent();
    state_ = state::backoff;
    silent_seen_ = false;
    retry_at_ = probe ? std::max(now(), probe_at_ + wait_ms) : now() + wait_ms;
    backoff_ms_ = std::min(backoff_max_ms, backoff_ms_ * 2);
    auto w = std::move(waiting_);
    waiting_.clear();
    auto resend = [this](batch& b) {
      if (unreachable_ && stream_of(b.origin) == 0)
        fail_fast(b);
      else
        issue_rpc(std::move(b));
    };
    std::for_each(unwritten.begin(), unwritten.end(), resend);
    std::for_each(w.begin(), w.end(), resend);
    if (!in_fail_) {
      in_fail_ = true;
      pump();
      in_fail_ = false;
    }
  }

  actors::loop_context& ctx_;
  link_settings settings_;
  std::string address_;
  std::string peer_;
  caf::actor rpc_peer_;
  state state_ = state::idle;
  link_io io_;
  lookup* lookup_ = nullptr;  // a host-name lookup in flight (connecting)
  bool retiring_ = false;     // link_retire_atom came: quit once retirable()
  bool rpc_gone_ = false;     // the RPC peer actor ended: what would go by RPC is unavailable
  bool unreachable_ = false;  // the member was silent: batches answer unavailable (pump())
  bool greeted_once_ = false;  // a hello was answered at this address (on_timer)
  bool refused_ = false;       // the last hello was refused (until one is answered)
  bool quit_sent_ = false;
  uint64_t used_at_ = 0;      // loop ms of the last batch asked of this link
  loop_timer* timer_ = nullptr;
  bool open_counted_ = false;
  bool in_fail_ = false;  // fail() runs pump() once, not from inside itself
  static constexpr size_t streams = 2;           // stream_of(): client and warm, replica
  std::deque<batch> queue_[streams];             // not issued yet, in arrival order
  size_t rpc_in_flight_[streams] = {};           // rpc_calls_ per stream
  std::deque<batch> waiting_;                    // on the link, before it is ready
  std::map<uint64_t, batch> sent_;               // on the link, by call id (= queue order)
  std::unordered_map<uint64_t, rpc_call> rpc_calls_;  // through RPC, by our tag
  uint64_t next_id_ = 1;
  uint64_t next_rpc_tag_ = 1;
  uint64_t progress_at_ = 0;
  uint64_t dialled_at_ = 0;  // loop ms of the last dial (a probe's redial too)
  uint64_t probe_at_ = 0;    // loop ms the last connect began (a probe: fail())
  uint64_t connect_ms_ = 0;  // how long the last connect that got through took (redial_ms)
  sockaddr_storage dialled_addr_{};  // the address the last dial went to (redial())
  socklen_t dialled_len_ = 0;
  uint64_t reply_at_ = 0;     // loop ms the last whole reply was read (on_timer)
  bool silent_seen_ = false;  // on_timer found the member silent: it fails at the next tick
  uint64_t retry_at_ = 0;
  uint64_t now_cached_ = 0;
  uint64_t backoff_ms_ = backoff_first_ms;
  uint64_t written_ = 0;  // bytes of this socket's stream handed to the kernel so far
};

// -- per loop -----------------------------------------------------------------------------------

class links_impl final : public actors::loop_links {
public:
  links_impl(actors::io_loop& loop, actors::loop_context& ctx, link_settings s)
    : loop_(loop), ctx_(ctx), settings_(std::move(s)),
      reg_(std::make_shared<registry>(settings_.node_name,
                                      uint64_t{4} * std::max<uint32_t>(settings_.rpc_timeout_ms, 1),
                                      settings_.parked)) {}

  ~links_impl() override { close_all(); }

  caf::actor link_for(const actors::cluster_view& cv, uint32_t id) override {
    if (closed_ || !cv.ring)
      return {};
    note_ring(cv);
    uint64_t epoch = cv.ring->epoch();
    if (!linkable(cv.ring.get(), cv.peers, cv.clients, id))
      return {};
    if (epoch < epoch_ || id >= by_id_.size())  // a caller still on an older ring
      return find_or_spawn(*cv.ring, cv.peers, cv.clients, id);
    // The same ring may come with a member's new address (a view with only the addresses
    // changed, cluster/service.cpp): the link to the old one is not that member's any more.
    auto& c = by_id_[id];
    if (!c.link || c.address != cv.clients[id] || c.peer != cv.peers[id]) {
      c.link = find_or_spawn(*cv.ring, cv.peers, cv.clients, id);
      c.address = cv.clients[id];
      c.peer = cv.peers[id];
    }
    return c.link;
  }

  caf::actor shared_link(const actors::cluster_view& cv, uint32_t id) override {
    if (!closed_ && cv.ring && loop_.on_loop_thread()) {
      note_ring(cv);  // a loop whose only lookups are the replicator's retires links too
      note_returns(cv);  // (the replicator's view may come before the listener's)
    }
    if (closed_ || !linkable(cv.ring.get(), cv.peers, cv.clients, id))
      return {};
    return find_or_spawn(*cv.ring, cv.peers, cv.clients, id);
  }

  caf::actor previous_link(const actors::cluster_view& cv, size_t depth, uint32_t id) override {
    if (!closed_ && cv.ring)
      note_ring(cv);
    if (closed_ || depth >= cv.past.size())
      return {};
    const auto& past = cv.past[depth];
    if (!linkable(past.ring.get(), past.peers, past.clients, id))
      return {};
    return find_or_spawn(*past.ring, past.peers, past.clients, id);
  }

  void note_view(const actors::cluster_view& cv) override {
    if (closed_ || !cv.ring)
      return;
    note_ring(cv);
    note_returns(cv);
  }

  void serve(int fd, std::string_view rest) override {
    if (closed_) {
      ::close(fd);
      return;
    }
    if (reg_->serving >= max_sessions_per_loop) {
      static const char refusal[] = "SERVER_ERROR too many data links\r\n";
      (void) ::send(fd, refusal, sizeof refusal - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      return;
    }
    loop_.system().spawn<link_session>(loop_, ctx_, fd, std::string(rest), reg_);
  }

  void close_all() override {
    closed_ = true;
    std::lock_guard<std::mutex> guard(links_mutex_);
    for (auto& [k, a] : links_)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    links_.clear();
    for (auto& r : retired_)  // retired, not yet idle long enough to quit
      if (auto a = caf::actor_cast<caf::actor>(r))
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    retired_.clear();
    by_id_.clear();
    reg_->closed = true;
    for (auto& [id, a] : reg_->sessions)
      caf::anon_send(a, close_atom::value);
  }

private:
  // Loop thread: cv's ring is newer than any seen here: forget the ids of the old one, and
  // retire the links of members it and its predecessor lack.
  void note_ring(const actors::cluster_view& cv) {
    uint64_t epoch = cv.ring->epoch();
    if (epoch <= epoch_)
      return;
    epoch_ = epoch;
    by_id_.assign(cv.ring->size(), cached{});
    retire_absent(cv);
  }

  // Loop thread: cv names members back since the returns seen here (cluster_view::returns):
  // their links (any address, any peer actor: a lookup may still use an older view) dial at
  // once. Views may be skipped (only the newest is looked at): a return's number stays in
  // the views that follow, so none is missed. (From note_view, as the loop's listener takes
  // a snapshot, before any connection of the loop can look up by it; and from shared_link.)
  void note_returns(const actors::cluster_view& cv) {
    if (cv.returns == returns_)
      return;
    returns_ = cv.returns;
    if (!returns_)
      return;
    uint64_t newest = returns_seen_;
    std::vector<std::string> back;
    for (const auto& [name, n] : *returns_)
      if (n > returns_seen_) {
        back.push_back(name + "\n");
        newest = std::max(newest, n);
      }
    returns_seen_ = newest;
    if (back.empty())
      return;  // (an older view's map again: connections may hold the one before a while)
    std::lock_guard<std::mutex> guard(links_mutex_);
    for (const auto& [key, a] : links_)
      for (const auto& prefix : back)
        if (key.compare(0, prefix.size(), prefix) == 0)
          caf::anon_send(a, link_wake_atom::value);
  }

  // Links to a member (at an address) in neither this ring nor a past one (cv.past: the
  // rings warmed from) — it left, is dead, or moved, and its window ended — are retired: each
  // quits once idle (data_link), and a later lookup spawns a new one.
  void retire_absent(const actors::cluster_view& cv) {
    std::unordered_set<std::string> keep;
    auto add = [&](const cluster::ring* r, const std::vector<caf::actor>& peers,
                   const std::vector<std::string>& clients) {
      if (r)
        for (uint32_t id = 0; id < r->size(); ++id)
          if (linkable(r, peers, clients, id))
            keep.insert(link_key(r->member(id).name, clients[id], peers[id]));
    };
    add(cv.ring.get(), cv.peers, cv.clients);
    for (const auto& past : cv.past)
      add(past.ring.get(), past.peers, past.clients);
    std::lock_guard<std::mutex> guard(links_mutex_);
    // Retired links that quit meanwhile are forgotten (weak references).
    retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                  [](const caf::actor_addr& a) {
                                    return !caf::actor_cast<caf::actor>(a);
                                  }),
                   retired_.end());
    for (auto it = links_.begin(); it != links_.end();) {
      if (keep.count(it->first) != 0) {
        ++it;
        continue;
      }
      caf::anon_send(it->second, link_retire_atom::value);
      retired_.push_back(it->second.address());
      it = links_.erase(it);
    }
  }

  // A link is to a member (name) at an address through its RPC peer actor: a member forgotten
  // and back under its name has a new peer actor, and the old link's would drop its calls.
  static std::string link_key(const std::string& name, const std::string& address,
                              const caf::actor& peer) {
    return name + "\n" + address + "\n" + std::to_string(peer.id());
  }

  // A member's link, by link_key, spawned on first use. A ring change does not end
  // links: a member that left still serves until it exits, and calls in flight to it must not
  // fail; only two ring changes without the member retire its link (retire_absent), and a
  // retired link quits only when idle. Member `id` of `ring` has a peer actor and a memcached
  // address to dial.
  static bool linkable(const cluster::ring* ring, const std::vector<caf::actor>& peers,
                       const std::vector<std::string>& clients, uint32_t id) {
    return ring && id < ring->size() && id < peers.size() && peers[id] && id < clients.size() &&
           !clients[id].empty();
  }

  caf::actor find_or_spawn(const cluster::ring& ring, const std::vector<caf::actor>& peers,
                           const std::vector<std::string>& clients, uint32_t id) {
    std::lock_guard<std::mutex> guard(links_mutex_);  // shared_link() comes from any thread
    if (closed_)
      return {};  // close_all() ran: no link may start after it
    const auto& name = ring.member(id).name;
    std::string key = link_key(name, clients[id], peers[id]);
    auto it = links_.find(key);
    if (it != links_.end())
      return it->second;
    auto a = loop_.system().spawn<data_link>(loop_, ctx_, settings_, clients[id], name, peers[id]);
    links_.emplace(std::move(key), a);
    return a;
  }

  actors::io_loop& loop_;
  actors::loop_context& ctx_;
  link_settings settings_;
  std::shared_ptr<registry> reg_;
  std::mutex links_mutex_;
  std::unordered_map<std::string, caf::actor> links_;  // by link_key (mutex)
  std::vector<caf::actor_addr> retired_;  // retired links, until they quit (mutex)
  struct cached {
    caf::actor link;
    std::string address;  // what it dials
    caf::actor peer;      // the member's RPC peer actor it falls back to
  };
  std::vector<cached> by_id_;  // by member id of the ring of epoch_
  uint64_t epoch_ = 0;
  std::shared_ptr<const std::map<std::string, uint64_t>> returns_;  // the last view's (loop)
  uint64_t returns_seen_ = 0;  // the number of the latest return acted on (note_returns)
  std::atomic<bool> closed_{false};
};

} // namespace

std::unique_ptr<actors::loop_links> make_loop_links(actors::io_loop& loop,
                                                    actors::loop_context& ctx,
                                                    link_settings settings) {
  return std::make_unique<links_impl>(loop, ctx, std::move(settings));
}

} // namespace bifrost::cluster
