// The wire of a data link (cluster/data_link.hpp): the fast path that carries forwarded ops
// between members without the Cap'n Proto RPC machinery (cluster/bifrost.capnp, LinkCall).
//
//   member A (client)                                   member B (server, its memcached port)
//   "bifrost-link <schemaVersion> <A's name>\r\n"  ──►
//                                                  ◄──  "LINK <schemaVersion> <B's name>\r\n"
//                                                       (or any other line, e.g. "ERROR" from
//                                                        a node that serves no links, or
//                                                        another name: refused)
//   LinkCall frame, LinkCall frame, …              ──►
//                                                  ◄──  LinkReply frames (by id, any order)
//
// A frame is one Cap'n Proto message in the standard stream framing (segment count − 1,
// segment sizes, padding, segments; little-endian, a multiple of 8 bytes). A frame that
// announces more than frame_limit bytes or more than max_segments segments is refused
// at its header, before anything is allocated for it.
//
// Everything here is pure (no I/O, no clock, no actor): the parsers are fuzzed
// (cluster/fuzz_link_wire.cpp) and fed in every fragment size (tests/cluster/test_link_wire.cpp).
// Thread affinity: none; a frame_buffer belongs to the one actor that reads into it.
#pragma once

#include "actors/loop_links.hpp"
#include "cluster/arrival_clock.hpp"
#include "cluster/bifrost.capnp.h"
#include "cluster/convert.hpp"
#include "storage/ops.hpp"

#include <capnp/common.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bifrost::cluster::link_wire {

/// What a client's first line starts with.
constexpr std::string_view hello_prefix = actors::link_hello_prefix;
/// The longest first line a server reads (version, name and the prefix).
constexpr size_t max_hello_line = 512;
/// The largest frame either side reads: a call carries at most call_max_ops ops and
/// call_max_bytes of keys and values (the client sends larger batches by RPC), a reply at most
/// call_max_ops inline values; 1 MiB covers the structure around them.
constexpr size_t frame_limit = call_max_bytes + (size_t(1) << 20);
/// Cap'n Proto's own reader refuses more segments than this; so do we, at the header.
constexpr uint32_t max_segments = 512;

/// Where a link to a member dials: its memcached address, with the host of its RPC address
/// when the memcached listener is bound to a wildcard (0.0.0.0, ::, or no host). Empty when
/// the client address is not "host:port".
std::string dial_address(std::string_view client_address, std::string_view rpc_address);

/// The client's first line.
std::string hello_line(uint32_t version, std::string_view node_name);
/// The server's answer to a hello of the same version: "LINK <version> <its node name>". The
/// name lets the client check that it reached the member it dialed, not whatever now listens
/// on an address that member advertised once.
std::string accept_line(uint32_t version, std::string_view node_name);

enum class hello_status {
  incomplete,  // a prefix of a hello line: wait for more
  ok,          // `version`, `name` and `consumed` set
  not_hello,   // not a link hello: a memcached client (decided from the first bytes)
  bad,         // starts like a hello but is malformed or too long: `error` says why
};
struct hello {
  uint32_t version = 0;
  std::string name;
};
/// Server side: the first line of a connection on the memcached port.
hello_status parse_hello(std::string_view in, hello& out, size_t& consumed, std::string& error);

enum class answer_status { incomplete, ok, refused };
/// Client side: the server's answer line, from member `expected_name`. `ok`: "LINK <version>
/// <expected_name>", or "LINK <version>" alone (a node from before answers named themselves,
/// trusted as then). `refused`: any other complete line — another version, another node's
/// name (a stale address), an error — or a line that is too long; `error` holds it (or says
/// why).
answer_status parse_answer(std::string_view in, uint32_t version, std::string_view expected_name,
                           size_t& consumed, std::string& error);

enum class frame_status {
  incomplete,  // need more bytes (`need`: the frame's size once the header is known)
  ok,          // a whole frame of `size` bytes is at the front
  bad,         // announces too many segments or too many bytes: close the connection
};
/// Looks at the frame at the front of `in` (any alignment). `limit`: the largest frame.
frame_status frame_size(std::string_view in, size_t& size, size_t& need, size_t limit);

/// A byte stream in, whole word-aligned frames out (a Cap'n Proto reader needs aligned words).
/// Bytes are read straight into it (space/commit); text lines before the frames are read with
/// text() and consume().
class frame_buffer {
public:
  /// At least `min` writable bytes at the end.
  char* space(size_t min);
  size_t space_size() const noexcept { return cap_bytes() - end_; }
  void commit(size_t n) noexcept { end_ += n; }
  void append(std::string_view bytes);
  /// Unread bytes.
  std::string_view text() const noexcept {
    return {reinterpret_cast<const char*>(buf_.data()) + begin_, end_ - begin_};
  }
  size_t size() const noexcept { return end_ - begin_; }
  /// Drops `n` unread bytes from the front.
  void consume(size_t n) noexcept;
  /// The whole frame at the front (`frame_size` said ok with `size`), word-aligned; valid
  /// until the next call of any other member.
  kj::ArrayPtr<const capnp::word> frame(size_t size);

private:
  static constexpr size_t keep_bytes = 1 << 20;  // an empty buffer larger than this is freed
  size_t cap_bytes() const noexcept { return buf_.size() * sizeof(uint64_t); }
  void compact();

  std::vector<uint64_t> buf_;  // words (capnp::word itself cannot be copied or moved)
  size_t begin_ = 0;  // bytes
  size_t end_ = 0;    // bytes
};

/// One LinkCall, decoded.
struct call {
  uint64_t id = 0;
  rpc::Origin origin = rpc::Origin::CLIENT;
  storage::op_batch ops;
  bool park = false;  // LinkCall.park
  uint64_t ring = 0;  // LinkCall.ring: the placement the caller placed the ops by (0: not said)
  call_stamp stamp;  // LinkCall.sentAtMs and timeoutMs
};

/// Encodes a call / a reply as one frame. A result's value travels inline up to
/// inline_value_limit; a larger one is left out and the result marked streamed.
/// `park`: ask the member to keep a streamed value for the re-read (LinkCall.park); `ring`:
/// LinkCall.ring; `stamp`: LinkCall.sentAtMs and timeoutMs.
kj::Array<capnp::word> encode_call(uint64_t id, rpc::Origin origin, const storage::op_batch& ops,
                                   bool park = false, uint64_t ring = 0, call_stamp stamp = {});
kj::Array<capnp::word> encode_reply(uint64_t id, const storage::result_batch& rs);

/// Decodes one frame; false with `error` when it is not a valid message of that type.
bool decode_call(kj::ArrayPtr<const capnp::word> frame, call& out, std::string& error);
bool decode_reply(kj::ArrayPtr<const capnp::word> frame, uint64_t& id,
                  storage::result_batch& out, std::vector<bool>& streamed, std::string& error);

} // namespace bifrost::cluster::link_wire
