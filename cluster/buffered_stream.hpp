// A buffering wrapper for the RPC connections' byte streams, both directions.
//
// Reads: Cap'n Proto 0.9 reads every message with at least two reads — its 8-byte segment
// table, then the body (`capnp::AsyncMessageReader`) — and KJ's socket stream turns each into
// a read(2). Under load several messages wait in the socket; this wrapper reads whatever is
// there (up to its capacity) with one read(2) and serves the message reader from memory.
// Reads larger than the buffer go straight to the inner stream (no extra copy).
//
// Writes: Cap'n Proto 0.9 writes every message (call, return, finish) with its own writev(2)
// as soon as it is sent. This wrapper queues them and writes everything queued in one turn of
// the KJ loop with one writev at the end of that turn (`kj::evalLast`), or, while a write is
// under way, right after it. Pieces under 16 KiB are copied and their write reports done at
// once; larger pieces are written from the caller's memory and their write reports done when
// they are on the socket. Past 256 KiB of copied bytes, writes wait (backpressure). After a
// failed write every later write fails with the same error. shutdownWrite starts writing the
// queue at once and shuts the inner stream down after it (a socket takes the bytes during the
// write call, so they go out even if the connection is dropped right after, as Cap'n Proto
// does after its Abort message). A caller that drops the promise of a large write must keep
// its bytes until the stream is destroyed (Cap'n Proto does: its network owns both).
//
// Thread affinity: a KJ object — created, used and destroyed on its KJ loop's thread.
#pragma once

#include <kj/async-io.h>

#include <cstddef>

namespace bifrost::cluster {

/// Wraps `inner` (a socket, or a TLS stream over one) with a read buffer of `capacity` bytes
/// and a write queue. `read_ahead`: bytes already read from `inner` (the greeting check's),
/// read first.
kj::Own<kj::AsyncIoStream> buffered(kj::Own<kj::AsyncIoStream> inner,
                                         size_t capacity = 32 * 1024,
                                         kj::ArrayPtr<const kj::byte> read_ahead = nullptr);

} // namespace bifrost::cluster
