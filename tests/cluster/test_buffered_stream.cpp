// The RPC connections' stream buffer (cluster/buffered_stream.hpp). Reads: every byte arrives
// once and in order whatever the writer's chunking and the reader's (min, max), end of stream
// is reported, and Cap'n Proto messages read through it are intact. Writes: one turn's writes
// reach the socket as one write, in order, large pieces uncopied; writers wait past the high
// water mark; a failed write fails every later one; shutdownWrite waits for the queue.
#include "cluster/buffered_stream.hpp"

#include <capnp/message.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <optional>
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

// Passes writes on to `inner` and counts them (each would be one writev on a socket).
class counting_stream final : public kj::AsyncIoStream {
public:
  explicit counting_stream(kj::Own<kj::AsyncIoStream> inner, size_t& writes)
    : inner_(kj::mv(inner)), writes_(writes) {}
  kj::Promise<size_t> tryRead(void* b, size_t min, size_t max) override {
    return inner_->tryRead(b, min, max);
  }
  kj::Promise<void> write(const void* b, size_t n) override {
    ++writes_;
    return inner_->write(b, n);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    ++writes_;
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }

private:
  kj::Own<kj::AsyncIoStream> inner_;
  size_t& writes_;
};

// Reads until end of stream.
std::vector<kj::byte> read_all(kj::AsyncIoStream& in, kj::WaitScope& ws) {
  std::vector<kj::byte> got;
  kj::byte buf[4096];
  for (;;) {
    size_t n = in.tryRead(buf, 1, sizeof(buf)).wait(ws);
    if (n == 0)
      return got;
    got.insert(got.end(), buf, buf + n);
  }
}

// A buffered stream writing into an in-memory pipe (a write completes only as it is read):
// `out` is the stream under test, `pipe.ends[1]` the reading peer.
struct memory_pipe {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::WaitScope& ws = io.waitScope;
  kj::TwoWayPipe pipe = kj::newTwoWayPipe();
  kj::Own<kj::AsyncIoStream> out = cluster::buffered(kj::mv(pipe.ends[0]));
};

// The type of the exception `p` fails with; nothing if it succeeds.
std::optional<kj::Exception::Type> failure_of(kj::Promise<void> p, kj::WaitScope& ws) {
  try {
    p.wait(ws);
  } catch (kj::Exception& e) {
    return e.getType();
  }
  return std::nullopt;
}

} // namespace

BOOST_AUTO_TEST_SUITE(buffered_stream)

BOOST_AUTO_TEST_CASE(one_turns_writes_go_out_as_one_write_in_order) {
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  auto pipe = kj::newTwoWayPipe();
  size_t inner_writes = 0;
  auto out = cluster::buffered(kj::heap<counting_stream>(kj::mv(pipe.ends[0]), inner_writes));
  // Small writes (copied), a 40 KiB one (written from our memory) between them, and pieces.
  auto small = pattern(3000, 1), big = pattern(40 << 10, 2), tail = pattern(500, 3);
  std::vector<kj::byte> expect;
  kj::Vector<kj::Promise<void>> writes;
  for (size_t i = 0; i < 10; ++i) {
    writes.add(out->write(&small[i * 300], 300));
    expect.insert(expect.end(), &small[i * 300], &small[i * 300] + 300);
  }
  writes.add(out->write(big.data(), big.size()));
  size_t big_write = writes.size() - 1;
  expect.insert(expect.end(), big.begin(), big.end());
  kj::ArrayPtr<const kj::byte> pieces[] = {{tail.data(), 200}, {tail.data() + 200, 300}};
  writes.add(out->write(kj::arrayPtr(pieces, 2)));
  expect.insert(expect.end(), tail.begin(), tail.end());
  BOOST_TEST(inner_writes == 0u);  // nothing before the turn ends
  BOOST_TEST(writes[0].poll(ws));   // copied: done at once
  // Written from our memory: not done while the bytes wait in the (in-memory) pipe.
  BOOST_TEST(!writes[big_write].poll(ws));
  BOOST_TEST(inner_writes == 1u);  // the turn ended: everything went as one write
  out->shutdownWrite();            // waits for the queue
  auto got = read_all(*pipe.ends[1], ws);
  kj::joinPromises(writes.releaseAsArray()).wait(ws);
  BOOST_TEST(inner_writes == 1u);
  BOOST_REQUIRE_EQUAL(got.size(), expect.size());
  BOOST_CHECK(got == expect);
}

BOOST_FIXTURE_TEST_CASE(bytes_arrive_in_order_across_turns_and_sizes, memory_pipe) {
  auto data = pattern(3 << 20, 7);
  std::mt19937 rng(11);
  // A writer that sometimes waits for its write (a turn ends) and sometimes does not.
  kj::Promise<void> chain = kj::READY_NOW;
  size_t off = 0;
  while (off < data.size()) {
    size_t n = std::min<size_t>(data.size() - off, rng() % 3 == 0 ? 1 + rng() % 70000 : 1 + rng() % 900);
    bool wait = rng() % 2 == 0;
    chain = chain.then([this, &data, off, n, wait]() -> kj::Promise<void> {
      auto w = out->write(&data[off], n);
      if (wait)
        return w;
      w.eagerlyEvaluate(nullptr).detach([](kj::Exception&&) {});
      return kj::READY_NOW;
    });
    off += n;
  }
  chain = chain.then([this] { out->shutdownWrite(); }).eagerlyEvaluate(nullptr);
  auto got = read_all(*pipe.ends[1], ws);
  chain.wait(ws);
  BOOST_REQUIRE_EQUAL(got.size(), data.size());
  BOOST_CHECK(got == data);
}

BOOST_FIXTURE_TEST_CASE(writers_wait_past_the_high_water_mark, memory_pipe) {
  auto chunk = pattern(1024, 5);
  kj::Vector<kj::Promise<void>> writes;
  for (int i = 0; i < 300; ++i)
    writes.add(out->write(chunk.data(), chunk.size()));
  BOOST_TEST(writes[0].poll(ws));     // under the mark: done at once
  BOOST_TEST(!writes[299].poll(ws));  // 300 KiB queued, nobody reads: waits
  kj::byte buf[64 << 10];
  size_t read = 0;
  while (!writes[299].poll(ws))
    read += pipe.ends[1]->tryRead(buf, 1, sizeof(buf)).wait(ws);
  kj::joinPromises(writes.releaseAsArray()).wait(ws);
  BOOST_TEST(read == 300u * 1024u);
}

BOOST_FIXTURE_TEST_CASE(a_failed_write_fails_every_later_write, memory_pipe) {
  pipe.ends[1] = nullptr;  // the peer is gone
  auto first = out->write("abc", 3);  // copied: reported done, the flush fails
  first.wait(ws);
  auto big = pattern(64 << 10, 9);
  bool failed = false;
  try {
    out->write(big.data(), big.size()).wait(ws);
    out->write("x", 1).wait(ws);
  } catch (kj::Exception& e) {
    failed = true;
    BOOST_TEST_MESSAGE("write failed: " << e.getDescription().cStr());
  }
  BOOST_TEST(failed);
  BOOST_TEST(failure_of(out->write("y", 1), ws).has_value());  // and every later one
}


BOOST_AUTO_TEST_CASE(bytes_arrive_once_and_in_order_for_every_chunking) {
  auto io = kj::setupAsyncIo();
  for (size_t capacity : {64u, 100u, 4096u}) {
    for (size_t chunk : {1u, 7u, 64u, 1000u, 50000u}) {
      auto pipe = kj::newTwoWayPipe();
      auto reader = cluster::buffered(kj::mv(pipe.ends[0]), capacity);
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
  auto reader = cluster::buffered(kj::mv(pipe.ends[0]), 256);
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

BOOST_AUTO_TEST_CASE(queued_bytes_go_out_when_the_stream_is_dropped_after_shutdown) {
  // Cap'n Proto queues its Abort message, shuts the stream down and drops the connection in
  // one go: what was queued must still reach the socket. A real socket pair (the kernel takes
  // the bytes during the write call).
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  auto pipe = io.provider->newTwoWayPipe();
  auto out = cluster::buffered(kj::mv(pipe.ends[0]));
  auto data = pattern(5000, 13);
  for (size_t off = 0; off < data.size(); off += 500)
    out->write(&data[off], 500).wait(ws);  // copied: done at once, still queued
  out->shutdownWrite();
  out = nullptr;  // dropped before the turn ends
  auto got = read_all(*pipe.ends[1], ws);
  BOOST_REQUIRE_EQUAL(got.size(), data.size());
  BOOST_CHECK(got == data);
}

BOOST_FIXTURE_TEST_CASE(writes_after_shutdown_or_destruction_fail_as_disconnects, memory_pipe) {
  auto big = pattern(64 << 10, 17);
  auto pending = out->write(big.data(), big.size());  // nobody reads: stays pending
  BOOST_TEST(!pending.poll(ws));
  out->shutdownWrite();
  BOOST_TEST((failure_of(out->write("late", 4), ws) == kj::Exception::Type::DISCONNECTED));
  out = nullptr;  // the large write never went out
  BOOST_TEST((failure_of(kj::mv(pending), ws) == kj::Exception::Type::DISCONNECTED));
}

BOOST_AUTO_TEST_SUITE_END()
