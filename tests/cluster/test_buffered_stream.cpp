// The RPC connections' read buffer (cluster/buffered_stream.hpp): every byte arrives once and
// in order whatever the writer's chunking and the reader's (min, max), end of stream is
// reported, and Cap'n Proto messages read through it are intact.
#include "cluster/buffered_stream.hpp"

#include <capnp/message.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

using namespace bifrost;

namespace {

std::vector<kj::byte> pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<kj::byte> v(n);
  for (auto& b : v)
    b = static_cast<kj::byte>(rng());
  return v;
}

} // namespace

BOOST_AUTO_TEST_SUITE(buffered_stream)

BOOST_AUTO_TEST_CASE(bytes_arrive_once_and_in_order_for_every_chunking) {
  auto io = kj::setupAsyncIo();
  for (size_t capacity : {64u, 100u, 4096u}) {
    for (size_t chunk : {1u, 7u, 64u, 1000u, 50000u}) {
      auto pipe = kj::newTwoWayPipe();
      auto reader = cluster::read_buffered(kj::mv(pipe.ends[0]), capacity);
      auto& writer = *pipe.ends[1];
      auto data = pattern(120000, static_cast<uint32_t>(capacity * 31 + chunk));
      // The writer sends in `chunk`-sized pieces, then ends the stream.
      kj::Promise<void> sending = kj::READY_NOW;
      for (size_t off = 0; off < data.size(); off += chunk) {
        size_t n = std::min(chunk, data.size() - off);
        sending = sending.then([&writer, &data, off, n] { return writer.write(&data[off], n); });
      }
      sending = sending.then([&writer] { writer.shutdownWrite(); }).eagerlyEvaluate(nullptr);
      // The reader asks with varying (min, max): exact 8-byte reads like capnp's segment
      // table, small ranges, and reads larger than the buffer.
      std::vector<kj::byte> got(data.size() + 16);
      size_t at = 0;
      std::mt19937 rng(static_cast<uint32_t>(chunk));
      for (;;) {
        size_t max = 1 + rng() % 9000;
        if (rng() % 4 == 0)
          max = 8;
        max = std::min(max, got.size() - at);
        size_t min = max == 8 ? 8 : 1 + rng() % max;
        size_t n = reader->tryRead(&got[at], min, max).wait(io.waitScope);
        at += n;
        if (n < min)
          break;  // end of stream
      }
      sending.wait(io.waitScope);
      BOOST_REQUIRE_EQUAL(at, data.size());
      BOOST_CHECK(std::equal(data.begin(), data.end(), got.begin()));
    }
  }
}

BOOST_AUTO_TEST_CASE(capnp_messages_read_through_it_are_intact) {
  auto io = kj::setupAsyncIo();
  auto pipe = kj::newTwoWayPipe();
  auto reader = cluster::read_buffered(kj::mv(pipe.ends[0]), 256);
  auto& writer = *pipe.ends[1];
  // Messages of growing size, some larger than the buffer, written back to back.
  std::vector<kj::Own<capnp::MallocMessageBuilder>> sent;
  kj::Promise<void> sending = kj::READY_NOW;
  for (size_t i = 0; i < 40; ++i) {
    auto m = kj::heap<capnp::MallocMessageBuilder>();
    auto text = std::string(i * i * 7, static_cast<char>('a' + i % 26));
    m->getRoot<capnp::AnyPointer>().setAs<capnp::Text>(kj::StringPtr(text.c_str()));
    auto* mp = m.get();
    sending = sending.then([&writer, mp] { return capnp::writeMessage(writer, *mp); });
    sent.push_back(kj::mv(m));
  }
  sending = sending.eagerlyEvaluate(nullptr);
  for (size_t i = 0; i < 40; ++i) {
    auto msg = capnp::readMessage(*reader).wait(io.waitScope);
    auto text = msg->getRoot<capnp::AnyPointer>().getAs<capnp::Text>();
    BOOST_REQUIRE_EQUAL(text.size(), i * i * 7);
    BOOST_CHECK(text.size() == 0 || text[0] == static_cast<char>('a' + i % 26));
  }
  sending.wait(io.waitScope);
}

BOOST_AUTO_TEST_SUITE_END()
