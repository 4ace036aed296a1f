#include "actors/listener.hpp"

#include "actors/route_table.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace bifrost::actors {

namespace {
constexpr int max_accepts_per_wakeup = 64;
constexpr std::string_view too_many = "ERROR Too many open connections\r\n";

int open_reserve() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }
} // namespace

listener::listener(caf::actor_config& cfg, io_loop& loop, loop_context& ctx, int fd,
                   caf::actor route_table)
  : loop_actor(cfg, loop), ctx_(ctx), fd_(fd), route_table_(std::move(route_table)) {
  poll_.data = this;
  reserve_fd_ = open_reserve();
  null_fd_ = open_reserve();
}

listener::~listener() {
  if (fd_ >= 0)
    ::close(fd_);
  if (reserve_fd_ >= 0)
    ::close(reserve_fd_);
  if (null_fd_ >= 0)
    ::close(null_fd_);
}

int listener::bind_socket(const std::string& host, uint16_t port, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  auto service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    error = "cannot resolve listen address '" + host + "': " + gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  std::string last;
  for (auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (port != 0) {
      // A bind without SO_REUSEPORT fails while anyone listens on the port (as memcached's
      // does): only then may ours share it with the node's other loops. (A process binding
      // between the two calls is not caught.)
      if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        last = std::strerror(errno);
        ::close(fd);
        fd = -1;
        continue;
      }
      ::close(fd);
      fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        last = std::strerror(errno);
        continue;
      }
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 1024) == 0)
      break;
    last = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0)
    error = "cannot listen on " + host + ":" + service + ": " + last;
  return fd;
}

int listener::bind_beside(int first, std::string& error) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(first, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    error = std::string("getsockname: ") + std::strerror(errno);
    return -1;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (ss.ss_family == AF_INET6) {  // as the first (a v6 wildcard may take v4 clients too)
    int v6only = 0;
    socklen_t n = sizeof(v6only);
    if (::getsockopt(first, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &n) == 0)
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 1024) != 0) {
    error = "cannot listen beside the first socket on port " + std::to_string(local_port(first)) +
            ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

uint16_t listener::local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

caf::behavior listener::make_behavior() {
  self_ref_ = caf::actor_cast<caf::actor>(this);
  send(route_table_, subscribe_atom::value, caf::actor_cast<caf::actor>(this));
  return {
    [this](routes_atom, route_snapshot_ptr& snap) {
      if (ending_)
        return;  // (the node's teardown took the loop's routes away)
      ctx_.routes = std::move(snap);
      if (ctx_.links && ctx_.routes && ctx_.routes->cluster)
        ctx_.links->note_view(*ctx_.routes->cluster);  // (a member back is dialled now)
      ctx_.counters->warm_rings.store(ctx_.routes && ctx_.routes->cluster
                                          ? ctx_.routes->cluster->past.size()
                                          : 0,
                                      std::memory_order_relaxed);
      if (!polling_ && !stopped_ && uv_poll_init(loop().uv(), &poll_, fd_) == 0) {
        polling_ = true;
        uv_poll_start(&poll_, UV_READABLE, &listener::on_accept);
        if (!entry_)
          entry_ = ctx_.node->open_conn(fd_, conn_entry::state::listening, uv_now(loop().uv()));
      }
      // Connections waiting for their first snapshot may hold complete requests.
    },
    [this](close_atom) {
      stop();  // (accepting may have stopped earlier: now the connections close too)
    },
    [this](finish_atom) {
      // (A snapshot queued before this one may have come after node::stop's teardown took
      // the loop's routes away: they go again.)
      ctx_.routes = nullptr;
      ctx_.counters->warm_rings.store(0, std::memory_order_relaxed);
      ending_ = true;
      if (!stopped_) {
        stop(false);  // on_closed finishes it
      } else if (fd_ < 0) {  // the listening handle is closed (see on_closed)
        self_ref_ = nullptr;
        quit();
      }
    },
    [this](accept_atom) {
      if (!paused_ || stopped_ || !polling_)
        return;
      paused_ = false;
      take_spares();
      uv_poll_start(&poll_, UV_READABLE, &listener::on_accept);
    },
    [this](close_atom, bool keep_connections) {
      stop(!keep_connections);
    },
  };
}

void listener::on_accept(uv_poll_t* h, int status, int) {
  auto* self = static_cast<listener*>(h->data);
  if (status >= 0)
    self->accept_all();
}

void listener::accept_all() {
  auto& node = *ctx_.node;
  for (int i = 0; i < max_accepts_per_wakeup && !stopped_; ++i) {
    int cfd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if ((errno == EMFILE || errno == ENFILE) && refuse_without_fds(errno))
        continue;
      return;  // EAGAIN, or a transient error (ECONNABORTED): try on the next wakeup
    }
    int one = 1;
    ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (node.connections.load(std::memory_order_relaxed) >= node.client_limit) {
      // Best effort, like memcached: the reply fits any socket buffer.
      ssize_t ignored = ::send(cfd, too_many.data(), too_many.size(), MSG_NOSIGNAL);
      (void) ignored;
      ::close(cfd);
      ctx_.counters->add(ctx_.counters->rejected_connections);
      continue;
    }
    node.connections.fetch_add(1, std::memory_order_relaxed);
    ctx_.counters->add(ctx_.counters->curr_connections);
    ctx_.counters->add(ctx_.counters->total_connections);
    system().spawn<connection>(loop(), ctx_, cfd);
  }
}

void listener::reopen_reserve() {
  reserve_fd_ = open_reserve();
  reserve_shared_ = false;
}

void listener::take_spares() {
  if (reserve_fd_ < 0)
    reopen_reserve();
  if (null_fd_ < 0)
    null_fd_ = open_reserve();
}

bool listener::refuse_without_fds(int why) {
  // accept4 fails so whether or not a client waits: give nothing up when nobody does (the
  // reserve given up and taken back for nothing was a moment another thread could take it).
  pollfd waiting{fd_, POLLIN, 0};
  if (::poll(&waiting, 1, 0) == 0)
    return false;  // (a client comes: the level-triggered poll wakes the loop again)
  take_spares();  // (the reserve lost to another thread last time, or never had: try again)
  if (reserve_fd_ >= 0) {
    ::close(reserve_fd_);
    reserve_fd_ = -1;
    // Out of open files system-wide (ENFILE): a reserve copied from null_fd_ shares its open
    // file, and only giving up both frees one.
    const bool whole_file = why == ENFILE;
    if (whole_file && reserve_shared_ && null_fd_ >= 0) {
      ::close(null_fd_);
      null_fd_ = -1;
    }
    int cfd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int accept_errno = errno;
    if (cfd >= 0) {
      ssize_t ignored = ::send(cfd, too_many.data(), too_many.size(), MSG_NOSIGNAL);
      (void) ignored;
      // The client's socket closes as its descriptor turns into the reserve in one step: the
      // descriptor is never free, so no other thread (a listener beside this one accepting)
      // takes it between the client's end and the reserve's return. (For ENFILE, or without
      // a second /dev/null, the reserve is opened again after the close, as it once always was.)
      if (!whole_file && null_fd_ >= 0 && ::dup3(null_fd_, cfd, O_CLOEXEC) >= 0) {
        reserve_fd_ = cfd;
        reserve_shared_ = true;
      } else {
        ::close(cfd);
        reopen_reserve();
      }
      ctx_.counters->add(ctx_.counters->rejected_connections);
      return true;  // more may wait
    }
    reopen_reserve();
    if (reserve_fd_ >= 0 && (accept_errno == EAGAIN || accept_errno == EWOULDBLOCK))
      return false;  // nobody waits any more (the client went)
  }
  // No descriptor to give up; another thread took the one just freed; or the accept failed
  // otherwise (ECONNABORTED: the client went): stop polling for a while (connections that
  // close meanwhile free descriptors).
  if (polling_ && !paused_) {
    paused_ = true;
    uv_poll_stop(&poll_);
    delayed_send(this, std::chrono::milliseconds(100), accept_atom::value);
  }
  return false;
}

void listener::stop(bool close_connections) {
  if (close_connections && !ctx_.draining) {
    ctx_.draining = true;
    std::vector<connection*> conns;
    for (auto& kv : ctx_.by_id)
      conns.push_back(kv.second);
    for (auto* c : conns)
      c->close_when_idle();
  }
  if (stopped_)
    return;
  stopped_ = true;
  if (polling_) {
    uv_poll_stop(&poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), &listener::on_closed);
  } else {
    on_closed(reinterpret_cast<uv_handle_t*>(&poll_));
  }
}

void listener::on_closed(uv_handle_t* h) {
  auto* self = static_cast<listener*>(h->data);
  self->polling_ = false;
  self->ctx_.node->close_conn(self->entry_);  // (before its fd can be reused)
  if (self->fd_ >= 0) {
    ::close(self->fd_);
    self->fd_ = -1;
  }
  self->route_table_ = nullptr;
  if (!self->ending_)
    return;  // it goes on publishing the routes to its loop until the node's finish_atom
  auto me = std::move(self->self_ref_);
  caf::anon_send(me, finish_atom::value);
}

} // namespace bifrost::actors
