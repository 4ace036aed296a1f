#include "actors/socket_writer.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>

namespace bifrost::actors {

namespace {
constexpr size_t max_iov = 64;
constexpr size_t max_sendfile = 1u << 30;

bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }
} // namespace

socket_writer::socket_writer(int fd, sendfile_fn sf)
  : fd_(fd), sendfile_(sf ? sf : [](int o, int i, off_t* off, size_t n) -> ssize_t {
      return ::sendfile(o, i, off, n);
    }) {}

void socket_writer::cork(bool on) {
  if (corked_ == on)
    return;
  int v = on ? 1 : 0;
  // Fails harmlessly on non-TCP sockets (tests use socketpairs too).
  ::setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
  corked_ = on;
}

socket_writer::status socket_writer::on_failed_write() {
  if (!would_block(errno))
    return status::error;
  // The socket is full: push out what is corked. A corked partial frame smaller than the MSS
  // would otherwise wait for the cork timer (and with a small send buffer, stall the sender).
  cork(false);
  return status::blocked;
}

socket_writer::status socket_writer::flush(out_queue& q, write_stats& st) {
  auto& chunks = q.chunks();
  while (!chunks.empty()) {
    auto& front = chunks.front();
    if (!front.use_sendfile) {
      // Response bytes and values written from their segment mapping, in one writev.
      iovec iov[max_iov];
      size_t n = 0;
      auto it = chunks.begin();
      for (; it != chunks.end() && n < max_iov && !it->use_sendfile; ++it, ++n) {
        std::string_view b = it->slice ? it->slice.view() : std::string_view(it->bytes);
        iov[n].iov_base = const_cast<char*>(b.data() + it->sent);
        iov[n].iov_len = b.size() - it->sent;
      }
      bool more = it != chunks.end();
      if (more && it->use_sendfile)
        cork(true);
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = n;
      ssize_t w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
      if (w < 0) {
        if (errno == EINTR)
          continue;
        return on_failed_write();
      }
      q.advance(static_cast<size_t>(w));
      st.bytes += static_cast<uint64_t>(w);
      continue;
    }
    cork(true);
    size_t remaining = front.slice.size() - front.sent;
    if (remaining == 0) {
      q.pop_front();
      continue;
    }
    if (!no_sendfile_) {
      front.slice.note_spliced();  // the kernel may read these pages after the slice is gone
      off_t off = static_cast<off_t>(front.slice.offset() + front.sent);
      ssize_t w = sendfile_(fd_, front.slice.fd(), &off, std::min(remaining, max_sendfile));
      if (w < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EINVAL || errno == ENOSYS) {
          no_sendfile_ = true;
          ++st.fallbacks;
          continue;
        }
        return on_failed_write();
      }
      if (w == 0)
        return status::error;  // the segment is shorter than the slice: never send garbage
      q.advance(static_cast<size_t>(w));
      st.bytes += static_cast<uint64_t>(w);
      st.sendfile_bytes += static_cast<uint64_t>(w);
      continue;
    }
    auto v = front.slice.view().substr(front.sent);
    ssize_t w = ::send(fd_, v.data(), std::min(v.size(), max_sendfile), MSG_NOSIGNAL | MSG_MORE);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return on_failed_write();
    }
    q.advance(static_cast<size_t>(w));
    st.bytes += static_cast<uint64_t>(w);
  }
  cork(false);
  return status::done;
}

} // namespace bifrost::actors
