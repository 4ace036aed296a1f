// Conversions between the in-process types (storage/ops.hpp, cluster/membership.hpp) and the
// Cap'n Proto schema (cluster/bifrost.capnp), field for field.
//
// Thread affinity: none (pure functions); builders and readers belong to the KJ thread that
// owns the message.
#pragma once

#include "cluster/bifrost.capnp.h"
#include "cluster/membership.hpp"
#include "cluster/ring.hpp"
#include "storage/ops.hpp"

#include <capnp/message.h>

#include <string>
#include <string_view>
#include <vector>

namespace bifrost::cluster {

/// Values up to this size travel inline in Op.value / Result.value; larger ones are streamed.
constexpr size_t inline_value_limit = 64 * 1024;
/// Size of one ValueSink.write chunk.
constexpr size_t stream_chunk_size = 256 * 1024;
/// A data call (RPC or data link) whose member keeps answering the calls before it waits
/// for its own answer up to this many RPC timeouts (service.cpp `bounded`, data_link.cpp
/// `on_timer`); a member that sends nothing fails it after one.
constexpr uint32_t queued_limit_factor = 15;

/// The largest RPC message a node or bifrostctl reads. Values over inline_value_limit are
/// streamed in chunks and a data call carries at most 256 ops and 16 MiB inline (the service
/// splits larger batches), so real messages stay far below this; a peer announcing a larger
/// message (a broken or hostile one) is disconnected at its first 8 bytes, before anything is
/// allocated for it.
constexpr size_t rpc_message_limit = 128ull << 20;

/// True when a failed RPC connection's error says the peer answered in another protocol
/// (an HTTP or memcached port that speaks first): Cap'n Proto reads its first bytes as a
/// segment table and refuses it ("Message has too many segments", or one past the limit).
inline bool answered_another_protocol(std::string_view error) noexcept {
  return error.find("segment") != std::string_view::npos ||
         error.find("Message") != std::string_view::npos;
}

/// Every data call (an RPC execute or a data link's LinkCall) carries at most this many ops and
/// this many bytes of inline keys and values, so that calls and results stay far below the
/// readers' message limit: results hold at most call_max_ops values of up to
/// inline_value_limit each (16 MiB). Larger batches are split (or, on a link, go by RPC).
constexpr size_t call_max_ops = 256;
constexpr size_t call_max_bytes = 16 << 20;

/// What `o` puts inline in a data call: its key, and its value unless that is streamed.
inline size_t inline_bytes_of(const storage::op& o) {
  return o.key.size() + (o.value.size() > inline_value_limit ? 0 : o.value.size());
}

/// The reads of `ops` whose results `rs` came back without their value (over the inline
/// limit, no sink): their indexes in `again`, and the ops that read them again, each naming
/// the token its owner parked the first result under (0: none; storage/parked.hpp). Only
/// a read counts: a touch or an arith answers `hit` with the item's size and no value
/// (get_value is their default), and running it again would be a second write.
inline storage::op_batch rereads_of(const storage::op_batch& ops, const storage::result_batch& rs,
                                    std::vector<size_t>& again) {
  storage::op_batch reads;
  again.clear();
  for (size_t i = 0; i < rs.size() && i < ops.size(); ++i) {
    const auto& o = ops[i];
    const auto& r = rs[i];
    if (o.kind == storage::op_kind::get && o.get_value && r.st == storage::status::hit &&
        r.value_size > inline_value_limit && !r.value) {
      again.push_back(i);
      reads.push_back(o);
      reads.back().parked = r.parked;
    }
  }
  return reads;
}

/// Where `ops` is cut into data calls: the end index of each part, in order. Every part holds
/// at least one op, at most call_max_ops ops and at most call_max_bytes inline bytes (unless a
/// single op is larger).
inline std::vector<size_t> call_part_ends(const storage::op_batch& ops) {
  std::vector<size_t> ends;
  size_t count = 0, bytes = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    size_t b = inline_bytes_of(ops[i]);
    if (count > 0 && (count == call_max_ops || bytes + b > call_max_bytes)) {
      ends.push_back(i);
      count = 0;
      bytes = 0;
    }
    ++count;
    bytes += b;
  }
  if (count > 0)
    ends.push_back(ops.size());
  return ends;
}

/// `n` results of status `st` (a batch that could not run, or was not sent).
inline storage::result_batch unavailable(size_t n,
                                         storage::status st = storage::status::unavailable) {
  return storage::result_batch(n, storage::result::of(st));
}

/// Message size hints: the first segment is allocated to fit the ops or results, instead of
/// capnp's default 8 KiB segment per message (calloc + memset + free were ~9 % of a node's
/// CPU in a forwarding profile).
capnp::MessageSize ops_size(const storage::op_batch& ops);
capnp::MessageSize results_size(const storage::result_batch& rs);

/// Reader options for every RPC connection (nodes and bifrostctl): rpc_message_limit.
inline capnp::ReaderOptions rpc_reader_options() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = rpc_message_limit / sizeof(capnp::word);
  return o;
}

inline capnp::Data::Reader as_data(std::string_view s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}
inline std::string to_string(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
inline std::string to_string(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// -- ops and results ----------------------------------------------------------------------------

/// Writes `o` into `b`; with `with_value` false the value is left out (sent through a sink).
void to_rpc(const storage::op& o, rpc::Op::Builder b, bool with_value = true);
storage::op from_rpc(rpc::Op::Reader r);

/// The ops of a data call (Node.execute/upload, a link's LinkCall). Throws (KJ) for more than
/// call_max_ops: a list of empty structs costs its sender nothing per element and passes the
/// traversal limit, so it is refused before anything is allocated for its elements.
storage::op_batch from_rpc(capnp::List<rpc::Op>::Reader list);
/// Ops that arrived with origin warm are the cluster's own (warm reads, copies, a past owner's
/// copy dropped, hand-backs), no client's: reads are no access, and nothing counts as a
/// client's (gets in get_hits / get_misses, removes in storage::shard::guard_copies).
void mark_warm(storage::op_batch& ops);

/// A SWIM message listing more members than this (updates or the full list) is dropped.
constexpr size_t max_swim_members = 65536;

/// Writes `r` without its value (the caller decides inline or streamed).
void to_rpc_meta(const storage::result& r, rpc::Result::Builder b);
/// Reads a result; an inline value becomes an in-memory pinned slice.
storage::result from_rpc(rpc::Result::Reader r);

rpc::Status to_rpc(storage::status s);
storage::status from_rpc(rpc::Status s);

// -- membership ---------------------------------------------------------------------------------

rpc::MemberState to_rpc(member_state s);
member_state from_rpc(rpc::MemberState s);

void to_rpc(const member_update& u, rpc::MemberInfo::Builder b);
member_update from_rpc(rpc::MemberInfo::Reader r);
void to_rpc(const member_info& i, rpc::MemberInfo::Builder b);
/// A ring's member (name, RPC address, weight; state alive or dead), for a member record this
/// node does not have (ring queries, a join reply's past rings).
void to_rpc(const ring_member& m, rpc::MemberInfo::Builder b);

void to_rpc(const message& m, rpc::SwimMessage::Builder b);
/// False when the message has a kind this node does not understand (it is then dropped).
bool from_rpc(rpc::SwimMessage::Reader r, message& out);

} // namespace bifrost::cluster
