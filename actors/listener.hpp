// The listener actor: accepts memcached clients on one I/O loop.
//
// Every loop has its own listener bound to the same address with SO_REUSEPORT, so the kernel
// spreads connections over loops and no accept hand-off crosses threads. The node creates and
// binds the sockets up front (bind errors surface at start-up, before any thread runs) and
// hands each listener its fd.
//
// It subscribes to the route table and publishes each snapshot to its loop's connections
// (loop_context::routes); it starts accepting once the first snapshot is there. Beyond
// `max_connections` open connections (node-wide) a new client is told
// "ERROR Too many open connections" and closed, as memcached does. So is a client that comes
// when the process has no file descriptor left (EMFILE, ENFILE): the listener keeps one in
// reserve (/dev/null), gives it up to accept the client (only while one waits: accept4 fails
// for want of descriptors whether or not one does), answers, and closes the client by copying
// a second /dev/null descriptor onto the client's (dup3): the client's descriptor is the
// reserve again, never free for another thread in between. (Once it was: a client that read
// its refusal and came again could reach the listener beside this one in that moment, and be
// served.) Only between giving the reserve up and the accept may another thread take it: then
// the listener stops polling for 100 ms (a level-triggered poll would otherwise wake it at
// once, over and over) and takes a reserve again when one is free. When the system as a
// whole is out of open files (ENFILE), a copy frees none: both /dev/null descriptors are given
// up, and the reserve is opened again after the client's close (a moment it is free).
//
// Interface: (routes_atom, route_snapshot_ptr) from the route table; (close_atom) stops
// accepting and closes the loop's connections once their pending replies are written;
// (close_atom, true) only stops accepting (a node that drains out of a cluster keeps serving
// its open connections meanwhile); (finish_atom) ends it (node::stop). Until then, with its
// socket closed, it still publishes each snapshot to its loop: the data link sessions there
// serve members' calls while the node leaves its cluster, and must place a write by the ring
// without this node (an actor that ended at the drain froze the loop's routes: a member's
// write was then run on the leaving node, or refused, instead of placed again).
// Thread affinity: its loop thread only. Owns the listening fd.
#pragma once

#include "actors/connection.hpp"
#include "actors/loop_actor.hpp"

#include <caf/actor.hpp>

#include <uv.h>

namespace bifrost::actors {

class listener : public loop_actor {
public:
  listener(caf::actor_config& cfg, io_loop& loop, loop_context& ctx, int fd,
           caf::actor route_table);
  ~listener() override;

  caf::behavior make_behavior() override;
  const char* name() const override { return "listener"; }

  /// Creates the node's first listening socket, non-blocking, bound to host:port with
  /// SO_REUSEPORT (the other loops' join it: bind_beside). It must not join another
  /// process's: SO_REUSEPORT lets any process of the same user bind a port already listened
  /// on, and the kernel would then split new clients between two caches; so a port other
  /// than 0 is first bound without it, which fails while anyone listens there.
  /// Returns the fd, or -1 with `error` set (names the address and the errno text).
  static int bind_socket(const std::string& host, uint16_t port, std::string& error);
  /// Another listening socket on exactly the address `first` (from bind_socket) is bound to,
  /// with SO_REUSEPORT: for the node's other loops (a host name may resolve to several
  /// addresses, and a later loop must not join another process's socket on one of them).
  static int bind_beside(int first, std::string& error);
  /// The port a bound socket listens on.
  static uint16_t local_port(int fd);

private:
  static void on_accept(uv_poll_t* h, int status, int events);
  static void on_closed(uv_handle_t* h);
  void accept_all();
  /// accept4 failed for want of file descriptors (`why`: EMFILE or ENFILE): turns the waiting
  /// client away (see above). True: one was refused, more may wait. False: nobody waits (the
  /// reserve is kept, or given up and taken back when the client went meanwhile); or no
  /// descriptor could be freed or the accept failed otherwise (polling is paused for 100 ms).
  bool refuse_without_fds(int why);
  /// A reserve of its own (not a copy of null_fd_); -1 when no descriptor is free.
  void reopen_reserve();
  /// The reserve and null_fd_, each when missing.
  void take_spares();
  void stop(bool close_connections = true);

  loop_context& ctx_;
  int fd_;
  int reserve_fd_ = -1;  // /dev/null, given up to refuse a client when descriptors run out
  int null_fd_ = -1;     // /dev/null, copied onto the refused client's descriptor (the reserve)
  bool reserve_shared_ = false;  // the reserve is such a copy: closing it frees no open file
  bool paused_ = false;  // polling stopped until an accept_atom (descriptors ran out)
  uv_poll_t poll_;
  bool polling_ = false;
  std::shared_ptr<conn_entry> entry_;  // in node_shared::conns while the socket is open
  bool stopped_ = false;
  bool ending_ = false;  // finish_atom came: it quits once its handle is closed
  caf::actor route_table_;
  caf::actor self_ref_;
};

} // namespace bifrost::actors
