// Writes an out_queue to a non-blocking socket: byte chunks with sendmsg (MSG_MORE while
// more follows), pinned value slices with sendfile(2) from the segment file, the whole
// response batch corked (TCP_CORK) when it contains a sendfile so that header, value and
// trailer leave in full segments. When the socket is full the cork is released at once
// (a corked sub-MSS frame would otherwise wait for the kernel's cork timer).
//
// sendfile is a fast path with a fallback: EINVAL/ENOSYS switch this writer to copying from
// the segment mapping (counted); EAGAIN returns `blocked` (wait for writable, then call
// flush() again); partial sends resume where they stopped. Lengths are clamped to 1 GiB a call.
//
// Thread affinity: used by one connection on its loop thread. The `sendfile` hook exists so
// tests can inject EINVAL, EAGAIN and short writes.
#pragma once

#include "actors/out_queue.hpp"

#include <sys/types.h>

#include <cstdint>

namespace bifrost::actors {

struct write_stats {
  uint64_t bytes = 0;           // bytes written by the last flush()
  uint64_t sendfile_bytes = 0;  // of which through sendfile
  uint64_t fallbacks = 0;       // sendfile refusals that switched to copying
};

class socket_writer {
public:
  enum class status { done, blocked, error };
  using sendfile_fn = ssize_t (*)(int out_fd, int in_fd, off_t* offset, size_t count);

  explicit socket_writer(int fd, sendfile_fn sf = nullptr);

  /// Writes as much of `q` as the socket takes. `error`: the peer is gone (close).
  status flush(out_queue& q, write_stats& st);

  bool sendfile_disabled() const noexcept { return no_sendfile_; }

private:
  void cork(bool on);
  /// After a write failed with `errno` (not EINTR): blocked (uncorked) or error.
  status on_failed_write();

  int fd_;
  sendfile_fn sendfile_;
  bool no_sendfile_ = false;
  bool corked_ = false;
};

} // namespace bifrost::actors
