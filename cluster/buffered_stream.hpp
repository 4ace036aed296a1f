// A read-buffering wrapper for the RPC connections' byte streams.
//
// Cap'n Proto 0.9 reads every message with at least two reads — its 8-byte segment table,
// then the body (`capnp::AsyncMessageReader`) — and KJ's socket stream turns each into a
// read(2). Under load several messages wait in the socket; this wrapper reads whatever is
// there (up to its capacity) with one read(2) and serves the message reader from memory.
// Reads larger than the buffer go straight to the inner stream (no extra copy); writes pass
// through untouched.
//
// Thread affinity: a KJ object — created, used and destroyed on its KJ loop's thread.
#pragma once

#include <kj/async-io.h>

#include <cstddef>

namespace bifrost::cluster {

/// Wraps `inner` (a socket, or a TLS stream over one) with a read buffer of `capacity` bytes.
kj::Own<kj::AsyncIoStream> read_buffered(kj::Own<kj::AsyncIoStream> inner,
                                         size_t capacity = 32 * 1024);

} // namespace bifrost::cluster
