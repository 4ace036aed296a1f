// The data link's wire (cluster/link_wire.hpp): hello and answer lines, frame sizes, the
// aligned frame buffer, and calls/replies round-tripped — fed in every fragment size, and
// hostile headers refused before anything is allocated for them.
#include "cluster/convert.hpp"
#include "cluster/link_wire.hpp"

#include <capnp/serialize.h>

#include <boost/test/unit_test.hpp>

#include <random>
#include <string>
#include <vector>

using namespace bifrost;
using namespace bifrost::cluster;
namespace lw = bifrost::cluster::link_wire;

namespace {

std::string as_string(const kj::Array<capnp::word>& frame) {
  auto c = frame.asChars();
  return std::string(c.begin(), c.size());
}

storage::op_batch sample_ops() {
  storage::op_batch ops(4);
  ops[0].kind = storage::op_kind::get;
  ops[0].key = "alpha";
  ops[0].get_value = true;
  ops[0].parked = 77;  // a re-read of a parked result
  ops[0].recache = true;
  ops[0].recache_before_touch = true;  // mg R left of T
  ops[0].counts = storage::op::counting::touch_or_miss;  // mg T
  ops[1].kind = storage::op_kind::store;
  ops[1].key = "beta";
  ops[1].value = std::string(1000, 'b');
  ops[1].mode = storage::store_mode::cas;
  ops[1].flags = 77;
  ops[1].ttl = 3600;
  ops[1].compare_cas = 12345;
  ops[1].as_stale = true;
  ops[1].token_out = true;
  ops[1].as_fetched = true;
  ops[1].copy = true;
  ops[2].kind = storage::op_kind::arith;
  ops[2].key = "counter";
  ops[2].incr = false;
  ops[2].delta = 9;
  ops[3].kind = storage::op_kind::remove;
  ops[3].key = std::string(250, 'k');
  ops[3].hand_back = true;
  ops[3].counts = storage::op::counting::nothing;  // a too-large set's removal
  ops[2].routed = 2;  // placed by two nodes' own rings on its way
  return ops;
}

void check_same_ops(const storage::op_batch& a, const storage::op_batch& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    BOOST_CHECK(a[i].kind == b[i].kind);
    BOOST_CHECK_EQUAL(a[i].key, b[i].key);
    BOOST_CHECK_EQUAL(a[i].value, b[i].value);
    BOOST_CHECK(a[i].mode == b[i].mode);
    BOOST_CHECK_EQUAL(a[i].flags, b[i].flags);
    BOOST_CHECK_EQUAL(a[i].ttl, b[i].ttl);
    BOOST_CHECK_EQUAL(a[i].compare_cas, b[i].compare_cas);
    BOOST_CHECK_EQUAL(a[i].get_value, b[i].get_value);
    BOOST_CHECK_EQUAL(a[i].incr, b[i].incr);
    BOOST_CHECK_EQUAL(a[i].delta, b[i].delta);
    BOOST_CHECK_EQUAL(a[i].hand_back, b[i].hand_back);
    BOOST_CHECK_EQUAL(a[i].parked, b[i].parked);
    BOOST_CHECK_EQUAL(a[i].routed, b[i].routed);
    BOOST_CHECK_EQUAL(a[i].recache, b[i].recache);
    BOOST_CHECK_EQUAL(a[i].recache_before_touch, b[i].recache_before_touch);
    BOOST_CHECK_EQUAL(a[i].as_stale, b[i].as_stale);
    BOOST_CHECK_EQUAL(a[i].token_out, b[i].token_out);
    BOOST_CHECK_EQUAL(a[i].as_fetched, b[i].as_fetched);
    BOOST_CHECK_EQUAL(a[i].copy, b[i].copy);
    BOOST_CHECK(a[i].counts == b[i].counts);
  }
}

// Reads every whole frame out of `buf` as calls.
std::vector<lw::call> drain_calls(lw::frame_buffer& buf) {
  std::vector<lw::call> out;
  for (;;) {
    size_t size = 0, need = 0;
    auto st = lw::frame_size(buf.text(), size, need, lw::frame_limit);
    BOOST_REQUIRE(st != lw::frame_status::bad);
    if (st == lw::frame_status::incomplete) {
      BOOST_CHECK_GT(need, buf.size());
      return out;
    }
    lw::call c;
    std::string error;
    BOOST_REQUIRE_MESSAGE(lw::decode_call(buf.frame(size), c, error), error);
    buf.consume(size);
    out.push_back(std::move(c));
  }
}

std::string le32(uint32_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 4);
}

} // namespace

BOOST_AUTO_TEST_SUITE(link_wire)

BOOST_AUTO_TEST_CASE(hello_lines_parse_in_every_fragment) {
  std::string line = lw::hello_line(rpc::SCHEMA_VERSION, "node-a");
  BOOST_CHECK_EQUAL(line, "bifrost-link " + std::to_string(rpc::SCHEMA_VERSION) + " node-a\r\n");
  std::string in = line + "XYZ";  // frames follow the line
  for (size_t cut = 0; cut <= in.size(); ++cut) {
    lw::hello h;
    size_t used = 0;
    std::string error;
    auto st = lw::parse_hello(std::string_view(in).substr(0, cut), h, used, error);
    if (cut < line.size()) {
      BOOST_CHECK_MESSAGE(st == lw::hello_status::incomplete, "cut " << cut);
    } else {
      BOOST_REQUIRE(st == lw::hello_status::ok);
      BOOST_CHECK_EQUAL(used, line.size());
      BOOST_CHECK_EQUAL(h.version, rpc::SCHEMA_VERSION);
      BOOST_CHECK_EQUAL(h.name, "node-a");
    }
  }
  // Bare "\n" endings are accepted too.
  lw::hello h;
  size_t used = 0;
  std::string error;
  BOOST_CHECK(lw::parse_hello("bifrost-link 7 n\n", h, used, error) == lw::hello_status::ok);
  BOOST_CHECK_EQUAL(h.version, 7u);
  BOOST_CHECK_EQUAL(used, 17u);
}

BOOST_AUTO_TEST_CASE(other_first_lines_are_not_hellos_or_are_refused) {
  lw::hello h;
  size_t used = 0;
  std::string error;
  for (std::string s : std::vector<std::string>{"get foo\r\n", "g", "bifrost-lin\r\n",
                                                "bifrost-linkX 1 a\r\n", "set"})
    BOOST_CHECK_MESSAGE(lw::parse_hello(s, h, used, error) == lw::hello_status::not_hello, s);
  // Without the space after the prefix it is not a hello (a memcached command line)...
  BOOST_CHECK(lw::parse_hello("bifrost-link\r\n", h, used, error) == lw::hello_status::not_hello);
  // ... with it, a malformed hello is refused, never handed to the memcached parser.
  for (std::string s : std::vector<std::string>{
         "bifrost-link 1\r\n", "bifrost-link x a\r\n", "bifrost-link 1 \r\n",
        "bifrost-link 1 a b\r\n", "bifrost-link -1 a\r\n", "bifrost-link 99999999999 a\r\n",
        "bifrost-link " + std::string(600, '1') + " a\r\n"}) {
    error.clear();
    auto st = lw::parse_hello(s, h, used, error);
    BOOST_CHECK_MESSAGE(st == lw::hello_status::bad, s);
    BOOST_CHECK(!error.empty());
  }
  // An endless line is refused once it passes the bound, not buffered for ever.
  std::string endless = "bifrost-link 1 " + std::string(lw::max_hello_line, 'n');
  BOOST_CHECK(lw::parse_hello(endless, h, used, error) == lw::hello_status::bad);
}

BOOST_AUTO_TEST_CASE(answers_accept_only_the_same_version_from_the_member_dialed) {
  size_t used = 0;
  std::string error;
  std::string ok = lw::accept_line(3, "node-b");
  BOOST_CHECK_EQUAL(ok, "LINK 3 node-b\r\n");
  for (size_t cut = 0; cut < ok.size(); ++cut)
    BOOST_CHECK(lw::parse_answer(ok.substr(0, cut), 3, "node-b", used, error) ==
                lw::answer_status::incomplete);
  BOOST_CHECK(lw::parse_answer(ok + "frames", 3, "node-b", used, error) == lw::answer_status::ok);
  BOOST_CHECK_EQUAL(used, ok.size());
  // Another node answers where node-b's memcached port was: a stale address, refused.
  BOOST_CHECK(lw::parse_answer(ok, 3, "node-c", used, error) == lw::answer_status::refused);
  BOOST_CHECK_EQUAL(error, "the node there is 'node-b', not 'node-c' (a stale address)");
  BOOST_CHECK(lw::parse_answer("LINK 3 node-bb\r\n", 3, "node-b", used, error) ==
              lw::answer_status::refused);
  BOOST_CHECK(lw::parse_answer("LINK 3 \r\n", 3, "node-b", used, error) ==
              lw::answer_status::refused);
  // A node from before answers carried names: accepted as it was then (rolling upgrades).
  BOOST_CHECK(lw::parse_answer("LINK 3\r\nframes", 3, "node-b", used, error) ==
              lw::answer_status::ok);
  BOOST_CHECK_EQUAL(used, 8u);
  BOOST_CHECK(lw::parse_answer("LINK 4 node-b\r\n", 3, "node-b", used, error) ==
              lw::answer_status::refused);
  BOOST_CHECK(lw::parse_answer("LINK 33 node-b\r\n", 3, "node-b", used, error) ==
              lw::answer_status::refused);
  BOOST_CHECK(lw::parse_answer("ERROR\r\n", 3, "node-b", used, error) ==
              lw::answer_status::refused);
  BOOST_CHECK_EQUAL(error, "ERROR");
  BOOST_CHECK(lw::parse_answer("SERVER_ERROR data link version mismatch\r\n", 3, "node-b", used,
                               error) == lw::answer_status::refused);
  BOOST_CHECK(lw::parse_answer(std::string(1000, 'x'), 3, "node-b", used, error) ==
              lw::answer_status::refused);
}

BOOST_AUTO_TEST_CASE(dial_address_replaces_wildcard_hosts) {
  BOOST_CHECK_EQUAL(lw::dial_address("10.0.0.5:11211", "10.0.0.5:12211"), "10.0.0.5:11211");
  BOOST_CHECK_EQUAL(lw::dial_address("0.0.0.0:11211", "10.0.0.5:12211"), "10.0.0.5:11211");
  BOOST_CHECK_EQUAL(lw::dial_address("[::]:11211", "[fd00::1]:12211"), "[fd00::1]:11211");
  BOOST_CHECK_EQUAL(lw::dial_address(":11211", "host-b:12211"), "host-b:11211");
  BOOST_CHECK_EQUAL(lw::dial_address("localhost:11211", "x:1"), "localhost:11211");
  BOOST_CHECK_EQUAL(lw::dial_address("", "x:1"), "");
  BOOST_CHECK_EQUAL(lw::dial_address("nohost", "x:1"), "");
  BOOST_CHECK_EQUAL(lw::dial_address("0.0.0.0:1", "noport"), "");
}

BOOST_AUTO_TEST_CASE(calls_and_replies_round_trip) {
  auto ops = sample_ops();
  auto frame = lw::encode_call(42, rpc::Origin::WARM, ops, true, 0xfeedULL,
                               {0x123456789abULL, 1500});
  lw::call c;
  std::string error;
  BOOST_REQUIRE(lw::decode_call(frame.asPtr(), c, error));
  BOOST_CHECK_EQUAL(c.id, 42u);
  BOOST_CHECK(c.origin == rpc::Origin::WARM);
  BOOST_CHECK(c.park);
  BOOST_CHECK_EQUAL(c.ring, 0xfeedULL);
  BOOST_CHECK_EQUAL(c.stamp.sent_ms, 0x123456789abULL);
  BOOST_CHECK_EQUAL(c.stamp.timeout_ms, 1500u);
  lw::call plain;  // not asked (an older member's call decodes so too)
  BOOST_REQUIRE(lw::decode_call(lw::encode_call(43, rpc::Origin::CLIENT, ops).asPtr(), plain, error));
  BOOST_CHECK(!plain.park);
  BOOST_CHECK_EQUAL(plain.ring, 0u);
  BOOST_CHECK_EQUAL(plain.stamp.sent_ms, 0u);
  BOOST_CHECK_EQUAL(plain.stamp.timeout_ms, 0u);
  check_same_ops(ops, c.ops);

  storage::result_batch rs(3);
  rs[0].st = storage::status::hit;
  rs[0].flags = 5;
  rs[0].cas = 99;
  rs[0].exptime = 1700000100;
  rs[0].exptime_before = 1700000030;  // mg T changed it (a meta t left of T shows this one)
  rs[0].value = storage::pinned_slice::from_memory(std::make_shared<const std::string>("v0"));
  rs[1].st = storage::status::hit;  // too large to inline: streamed, empty, size kept
  rs[1].value = storage::pinned_slice::from_memory(
    std::make_shared<const std::string>(std::string(inline_value_limit + 1, 'z')));
  rs[1].parked = 1234;  // the owner keeps it for the re-read
  rs[2].st = storage::status::not_found;
  auto reply = lw::encode_reply(7, rs);
  uint64_t id = 0;
  storage::result_batch got;
  std::vector<bool> streamed;
  BOOST_REQUIRE(lw::decode_reply(reply.asPtr(), id, got, streamed, error));
  BOOST_CHECK_EQUAL(id, 7u);
  BOOST_REQUIRE_EQUAL(got.size(), 3u);
  BOOST_CHECK(got[0].st == storage::status::hit);
  BOOST_CHECK_EQUAL(got[0].flags, 5u);
  BOOST_CHECK_EQUAL(got[0].cas, 99u);
  BOOST_CHECK_EQUAL(got[0].exptime, 1700000100u);
  BOOST_CHECK_EQUAL(got[0].exptime_before, 1700000030u);
  BOOST_CHECK_EQUAL(std::string(got[0].value.view()), "v0");
  BOOST_CHECK(!streamed[0]);
  BOOST_CHECK(streamed[1]);
  BOOST_CHECK(!got[1].value);
  BOOST_CHECK_EQUAL(got[1].value_size, inline_value_limit + 1);
  BOOST_CHECK_EQUAL(got[1].parked, 1234u);
  BOOST_CHECK_EQUAL(got[0].parked, 0u);
  BOOST_CHECK(got[2].st == storage::status::not_found);

  // A reply is not a call (and garbage is neither): refused with a reason, no throw.
  lw::call wrong;
  BOOST_CHECK(!lw::decode_call(kj::arrayPtr(reply.begin(), 1), wrong, error));
  BOOST_CHECK(!error.empty());
}

BOOST_AUTO_TEST_CASE(frames_after_a_line_arrive_whole_in_every_fragment_size) {
  // A text line first (as on a link: the answer line), then frames of many sizes.
  std::mt19937 rng(7);
  std::string stream = lw::accept_line(1, "server");
  std::vector<storage::op_batch> sent;
  for (int i = 0; i < 12; ++i) {
    storage::op_batch ops(1 + rng() % 5);
    for (auto& o : ops) {
      o.kind = storage::op_kind::store;
      o.key = "k" + std::to_string(rng());
      o.value = std::string(rng() % (i % 3 == 0 ? 70000 : 300), char('a' + i));
    }
    stream += as_string(lw::encode_call(static_cast<uint64_t>(i), rpc::Origin::CLIENT, ops));
    sent.push_back(std::move(ops));
  }
  for (size_t step : {size_t(1), size_t(3), size_t(7), size_t(8), size_t(13), size_t(4096),
                      size_t(65536), stream.size()}) {
    lw::frame_buffer buf;
    std::vector<lw::call> got;
    bool line_done = false;
    for (size_t pos = 0; pos < stream.size(); pos += step) {
      buf.append(std::string_view(stream).substr(pos, step));
      if (!line_done) {
        size_t used = 0;
        std::string error;
        auto st = lw::parse_answer(buf.text(), 1, "server", used, error);
        if (st == lw::answer_status::incomplete)
          continue;
        BOOST_REQUIRE(st == lw::answer_status::ok);
        buf.consume(used);
        line_done = true;
      }
      for (auto& c : drain_calls(buf))
        got.push_back(std::move(c));
    }
    BOOST_REQUIRE_EQUAL(got.size(), sent.size());
    for (size_t i = 0; i < sent.size(); ++i) {
      BOOST_CHECK_EQUAL(got[i].id, i);
      check_same_ops(sent[i], got[i].ops);
    }
    BOOST_CHECK_EQUAL(buf.size(), 0u);
  }
}

BOOST_AUTO_TEST_CASE(hostile_headers_are_refused_before_allocation) {
  size_t size = 0, need = 0;
  // 2^32 segments, 513 segments: refused at the first word.
  BOOST_CHECK(lw::frame_size(le32(0xffffffffu) + le32(1), size, need, lw::frame_limit) ==
              lw::frame_status::bad);
  BOOST_CHECK(lw::frame_size(le32(512) + le32(1), size, need, lw::frame_limit) ==
              lw::frame_status::bad);
  // One segment announcing 1 GiB, and two that add up past the limit.
  BOOST_CHECK(lw::frame_size(le32(0) + le32(1u << 27), size, need, lw::frame_limit) ==
              lw::frame_status::bad);
  std::string two = le32(1) + le32(1u << 21) + le32(1u << 21) + std::string(4, '\0');  // 2 x 16 MiB
  BOOST_CHECK(lw::frame_size(two, size, need, lw::frame_limit) == lw::frame_status::bad);
  // Within the limit: incomplete until every announced byte is there, `need` says how many.
  std::string small = le32(0) + le32(2);
  BOOST_CHECK(lw::frame_size(small, size, need, lw::frame_limit) ==
              lw::frame_status::incomplete);
  BOOST_CHECK_EQUAL(need, 24u);
  small += std::string(16, '\0');
  BOOST_CHECK(lw::frame_size(small, size, need, lw::frame_limit) == lw::frame_status::ok);
  BOOST_CHECK_EQUAL(size, 24u);
  // Whole but meaningless frames decode to an error, never a crash.
  lw::call c;
  std::string error;
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint64_t> words(1 + rng() % 16);
    for (auto& w : words)
      for (auto& b : reinterpret_cast<uint8_t(&)[8]>(w))
        b = static_cast<uint8_t>(rng());
    std::string_view bytes(reinterpret_cast<const char*>(words.data()), words.size() * 8);
    if (lw::frame_size(bytes, size, need, lw::frame_limit) != lw::frame_status::ok)
      continue;
    (void) lw::decode_call(
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(words.data()), size / 8), c, error);
  }
}

// A few bytes that announce a million empty ops (an inline-composite list of zero-sized
// structs: Cap'n Proto charges its traversal limit one word per element, so the message
// passes it) are refused before a million ops are allocated.
BOOST_AUTO_TEST_CASE(an_amplified_op_list_is_refused) {
  for (uint64_t count : {uint64_t(call_max_ops + 1), uint64_t(1) << 20}) {
    std::vector<uint64_t> w = {
      uint64_t(5) << 32,                           // segment table: 1 segment of 5 words
      (uint64_t(2) << 32) | (uint64_t(1) << 48),   // root: struct, 2 data words, 1 pointer
      7,                                           // id
      0,                                           // origin client
      1 | (uint64_t(7) << 32),                     // ops: inline-composite list, 0 words
      count << 2,                                  // tag: `count` structs of 0 data, 0 ptrs
    };
    size_t size = 0, need = 0;
    std::string_view bytes(reinterpret_cast<const char*>(w.data()), w.size() * 8);
    BOOST_REQUIRE(lw::frame_size(bytes, size, need, lw::frame_limit) == lw::frame_status::ok);
    lw::call c;
    std::string error;
    BOOST_CHECK(!lw::decode_call(
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(w.data()), size / 8), c, error));
    BOOST_CHECK_MESSAGE(error.find("too many ops") != std::string::npos, error);
    BOOST_CHECK(c.ops.empty());
  }
  // At the bound it is a valid call of empty ops (the session then runs them).
  std::vector<uint64_t> w = {uint64_t(5) << 32, (uint64_t(2) << 32) | (uint64_t(1) << 48), 7, 0,
                             1 | (uint64_t(7) << 32), uint64_t(call_max_ops) << 2};
  lw::call c;
  std::string error;
  BOOST_CHECK_MESSAGE(
    lw::decode_call(kj::arrayPtr(reinterpret_cast<const capnp::word*>(w.data()), w.size()), c,
                    error),
    error);
  BOOST_CHECK_EQUAL(c.ops.size(), call_max_ops);
}

BOOST_AUTO_TEST_SUITE_END()

// The same amplification on the RPC side: a SWIM message listing a million empty members is
// dropped, and Node.execute's ops are read through the bounded from_rpc (above, via a link).
BOOST_AUTO_TEST_SUITE(rpc_bounds)

// Batches larger than a data call are cut where call_part_ends says: by op count, by inline
// bytes (streamed values do not count), never an empty part.
BOOST_AUTO_TEST_CASE(batches_are_cut_into_calls_by_ops_and_inline_bytes) {
  auto batch = [](size_t n, size_t value_size) {
    storage::op_batch ops(n);
    for (size_t i = 0; i < n; ++i) {
      ops[i].kind = storage::op_kind::store;
      ops[i].key = "k" + std::to_string(10000 + i);  // 6 bytes
      ops[i].value = std::string(value_size, 'v');
    }
    return ops;
  };
  BOOST_CHECK(call_part_ends({}).empty());
  BOOST_CHECK((call_part_ends(batch(1, 10)) == std::vector<size_t>{1}));
  BOOST_CHECK((call_part_ends(batch(600, 10)) == std::vector<size_t>{256, 512, 600}));
  // 16 MiB / (6 + 64 KiB) = 255.98: 255 ops of inline values fill a call.
  BOOST_CHECK((call_part_ends(batch(300, inline_value_limit)) == std::vector<size_t>{255, 300}));
  // Values over the inline limit are streamed: only their keys count.
  BOOST_CHECK((call_part_ends(batch(300, inline_value_limit + 1)) ==
               std::vector<size_t>{256, 300}));
}

BOOST_AUTO_TEST_CASE(a_swim_message_with_an_amplified_member_list_is_dropped) {
  for (uint64_t count : {uint64_t(3), uint64_t(1) << 20}) {
    std::vector<uint64_t> w = {
      uint64_t(11) << 32,                         // segment table: 1 segment of 11 words
      (uint64_t(2) << 32) | (uint64_t(7) << 48),  // root: SwimMessage, 2 data words, 7 pointers
      0,                                          // kind ping
      1,                                          // seq
      0, 0, 0,                                    // from, target, targetAddress
      1 | (3 << 2) | (uint64_t(7) << 32),         // updates: inline-composite list, 0 words
      0, 0, 0,                                    // members, fromAddress, to
      count << 2,                                 // tag: `count` empty MemberInfo structs
    };
    capnp::FlatArrayMessageReader reader(
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(w.data()), w.size()), rpc_reader_options());
    message m;
    bool ok = from_rpc(reader.getRoot<rpc::SwimMessage>(), m);
    BOOST_CHECK_EQUAL(ok, count <= max_swim_members);
    BOOST_CHECK_LE(m.updates.size(), max_swim_members);
  }
}

BOOST_AUTO_TEST_SUITE_END()

// The reads a reply left a value out of are read again, naming the owner's parked token;
// a touch or an arith that answers `hit` with a large size and no value is no read.
BOOST_AUTO_TEST_CASE(rereads_are_the_reads_whose_value_was_left_out) {
  storage::op_batch ops(5);
  ops[0].kind = storage::op_kind::get;    // streamed: read again
  ops[1].kind = storage::op_kind::touch;  // hit, large, no value: not a read
  ops[2].kind = storage::op_kind::get;    // value inline
  ops[3].kind = storage::op_kind::get;    // metadata only (mg without v)
  ops[3].get_value = false;
  ops[4].kind = storage::op_kind::arith;
  for (size_t i = 0; i < ops.size(); ++i)
    ops[i].key = "k" + std::to_string(i);
  storage::result_batch rs(5);
  for (auto& r : rs) {
    r.st = storage::status::hit;
    r.value_size = inline_value_limit + 1;
  }
  rs[0].parked = 77;
  rs[2].value = storage::pinned_slice::from_memory(
    std::make_shared<const std::string>(std::string(inline_value_limit + 1, 'v')));
  std::vector<size_t> again{9};
  auto reads = rereads_of(ops, rs, again);
  BOOST_REQUIRE_EQUAL(again.size(), 1u);
  BOOST_CHECK_EQUAL(again[0], 0u);
  BOOST_REQUIRE_EQUAL(reads.size(), 1u);
  BOOST_CHECK_EQUAL(reads[0].key, "k0");
  BOOST_CHECK_EQUAL(reads[0].parked, 77u);
  rs[0].st = storage::status::miss;
  BOOST_CHECK(rereads_of(ops, rs, again).empty() && again.empty());
}
