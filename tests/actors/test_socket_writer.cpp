// socket_writer: bytes and pinned slices reach the peer intact and in order, over the
// sendfile fast path and every fallback (EINVAL/ENOSYS -> copy, EAGAIN -> blocked, partial).
#include "actors/out_queue.hpp"
#include "actors/socket_writer.hpp"
#include "storage/pinned_slice.hpp"
#include "storage/segment.hpp"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

using namespace bifrost;
using actors::out_queue;
using actors::socket_writer;
using actors::write_stats;

namespace {

// A connected TCP pair on loopback: `w` non-blocking (the writer's side), `r` blocking.
struct tcp_pair {
  int w = -1, r = -1;
  tcp_pair() {
    int l = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    BOOST_REQUIRE(::listen(l, 1) == 0);
    socklen_t len = sizeof(a);
    ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
    w = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(::connect(w, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    r = ::accept(l, nullptr, nullptr);
    ::close(l);
    ::fcntl(w, F_SETFL, ::fcntl(w, F_GETFL) | O_NONBLOCK);
  }
  ~tcp_pair() {
    ::close(w);
    ::close(r);
  }
};

std::shared_ptr<storage::segment> make_segment(const std::string& content) {
  std::string err;
  auto acct = std::make_shared<storage::segment_accounting>();
  auto seg = storage::segment::create(1, 4u << 20, "", acct, err);
  BOOST_REQUIRE_MESSAGE(seg, err);
  std::memcpy(seg->data() + 4096, content.data(), content.size());
  return seg;
}

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((i * 131 + seed) & 0xff);
  return s;
}

// Flushes `q` completely, reading the peer side whenever the writer is blocked.
std::string drain(socket_writer& wr, out_queue& q, tcp_pair& p, write_stats& st,
                  size_t expect) {
  std::string got;
  char buf[65536];
  for (int rounds = 0; rounds < 100000 && (got.size() < expect); ++rounds) {
    if (!q.empty()) {
      auto s = wr.flush(q, st);
      BOOST_REQUIRE(s != socket_writer::status::error);
    }
    pollfd pf{p.r, POLLIN, 0};
    if (::poll(&pf, 1, 1000) <= 0)
      break;
    ssize_t n = ::recv(p.r, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

thread_local int injected_errno = 0;
thread_local int injected_times = 0;
thread_local size_t short_write = 0;

ssize_t failing_sendfile(int o, int i, off_t* off, size_t n) {
  if (injected_times > 0) {
    --injected_times;
    errno = injected_errno;
    return -1;
  }
  if (short_write > 0)
    n = std::min(n, short_write);
  return ::sendfile(o, i, off, n);
}

} // namespace

BOOST_AUTO_TEST_SUITE(socket_writer_paths)

BOOST_AUTO_TEST_CASE(bytes_and_slices_arrive_in_order) {
  tcp_pair p;
  auto big = pattern(300 * 1024, 7);
  auto seg = make_segment(big);
  storage::pinned_slice slice(seg, 4096, static_cast<uint32_t>(big.size()));
  out_queue q(16 * 1024);
  q.bytes("VALUE k 0 307200\r\n");
  q.value(slice);
  q.bytes("\r\nEND\r\n");
  std::string expect = "VALUE k 0 307200\r\n" + big + "\r\nEND\r\n";
  socket_writer wr(p.w);
  write_stats st;
  auto got = drain(wr, q, p, st, expect.size());
  BOOST_CHECK(got == expect);
  BOOST_CHECK_EQUAL(st.sendfile_bytes, big.size());
  BOOST_CHECK_EQUAL(st.fallbacks, 0u);
  BOOST_CHECK(q.empty());
  // The kernel may still read those pages: the segment must never be rewritten in place.
  BOOST_CHECK(seg->spliced());
}

BOOST_AUTO_TEST_CASE(small_values_are_copied_not_sendfiled) {
  tcp_pair p;
  auto small = pattern(100, 3);
  auto seg = make_segment(small);
  out_queue q(16 * 1024);
  q.value(storage::pinned_slice(seg, 4096, 100));
  socket_writer wr(p.w);
  write_stats st;
  auto got = drain(wr, q, p, st, 100);
  BOOST_CHECK(got == small);
  BOOST_CHECK_EQUAL(st.sendfile_bytes, 0u);
}

BOOST_AUTO_TEST_CASE(mid_size_values_are_written_from_the_mapping_without_a_copy) {
  tcp_pair p;
  auto mid = pattern(16 * 1024, 5);
  auto seg = make_segment(mid);
  out_queue q(1u << 20);  // sendfile only from 1 MiB
  q.bytes("VALUE k 0 16384\r\n");
  q.value(storage::pinned_slice(seg, 4096, static_cast<uint32_t>(mid.size())));
  q.bytes("\r\nEND\r\n");
  // Not copied into the byte stream: queued as a slice that is not sent with sendfile.
  BOOST_REQUIRE_EQUAL(q.chunks().size(), 3u);
  BOOST_CHECK(q.chunks()[1].slice);
  BOOST_CHECK(!q.chunks()[1].use_sendfile);
  socket_writer wr(p.w);
  write_stats st;
  std::string expect = "VALUE k 0 16384\r\n" + mid + "\r\nEND\r\n";
  auto got = drain(wr, q, p, st, expect.size());
  BOOST_CHECK(got == expect);
  BOOST_CHECK_EQUAL(st.sendfile_bytes, 0u);
  BOOST_CHECK(!seg->spliced());  // sendmsg copied the bytes: the segment may be reused
}

BOOST_AUTO_TEST_CASE(a_queue_pins_few_segments_for_small_values) {
  // A client that does not read must not hold thousands of segments through small values:
  // past pin_budget bytes of such segments, values are copied and their segments let go.
  tcp_pair p;
  auto mid = pattern(16 * 1024, 9);
  // 4 MiB each (the budget): a value fills far less than half of one.
  std::vector<std::shared_ptr<storage::segment>> segs{make_segment(mid), make_segment(mid)};
  out_queue q(1u << 20);
  std::string expect;
  for (int i = 0; i < 100; ++i) {
    q.bytes("VALUE k 0 16384\r\n");
    q.value(storage::pinned_slice(segs[i / 50], 4096, static_cast<uint32_t>(mid.size())));
    q.bytes("\r\n");
    expect += "VALUE k 0 16384\r\n" + mid + "\r\n";
  }
  BOOST_CHECK_EQUAL(q.pinned_bytes(), out_queue::pin_budget);
  BOOST_CHECK_EQUAL(segs[0].use_count(), 51);  // one segment held: all its values zero-copy
  BOOST_CHECK_EQUAL(segs[1].use_count(), 1);   // over the budget: copied, not held
  socket_writer wr(p.w);
  write_stats st;
  auto got = drain(wr, q, p, st, expect.size());
  BOOST_CHECK(got == expect);  // copied or not, the same bytes
  BOOST_CHECK(q.empty());
  BOOST_CHECK_EQUAL(q.pinned_bytes(), 0u);
  BOOST_CHECK_EQUAL(segs[0].use_count(), 1);
  // A value that fills its segment (a large item's own) is always queued as a slice.
  auto own = make_segment(pattern(3u << 20, 2));
  for (int i = 0; i < 3; ++i)
    q.value(storage::pinned_slice(own, 4096, 3u << 20));
  BOOST_CHECK_EQUAL(own.use_count(), 4);
  BOOST_CHECK_EQUAL(q.pinned_bytes(), 0u);
}

BOOST_AUTO_TEST_CASE(a_queue_copies_at_most_its_copy_budget) {
  // One get line may name 100 000 keys. A client that does not read must not make the node
  // copy them all: past copy_budget bytes of copies, values are queued as slices (segments
  // count in the shard's memory), small ones and those past the pin budget too.
  tcp_pair p;
  auto mid = pattern(16 * 1024, 5);
  std::vector<std::shared_ptr<storage::segment>> segs;
  for (int i = 0; i < 8; ++i) segs.push_back(make_segment(mid));  // 4 MiB each
  out_queue q(1u << 20);
  std::string expect;
  const int n = 2000;  // 32 MiB of values over 8 segments: copies alone would hold ~28 MiB
  for (int i = 0; i < n; ++i) {
    q.bytes("VALUE k 0 16384\r\n");
    q.value(storage::pinned_slice(segs[i % 8], 4096, static_cast<uint32_t>(mid.size())));
    q.bytes("\r\n");
    expect += "VALUE k 0 16384\r\n" + mid + "\r\n";
  }
  auto small = make_segment(std::string(100, 's'));
  for (int i = 0; i < 100; ++i) {  // small values past the budget: slices too
    q.value(storage::pinned_slice(small, 4096, 100));
    expect += std::string(100, 's');
  }
  BOOST_CHECK_LE(q.copied_bytes(), out_queue::copy_budget + 64 * 1024);
  BOOST_CHECK_GT(q.pinned_bytes(), out_queue::pin_budget);  // every segment held instead
  BOOST_CHECK_EQUAL(small.use_count(), 101);
  socket_writer wr(p.w);
  write_stats st;
  auto got = drain(wr, q, p, st, expect.size());
  BOOST_CHECK(got == expect);  // copied or not, the same bytes in the same order
  BOOST_CHECK(q.empty());
  BOOST_CHECK_EQUAL(q.copied_bytes(), 0u);
  BOOST_CHECK_EQUAL(q.pinned_bytes(), 0u);
  for (auto& sg : segs) BOOST_CHECK_EQUAL(sg.use_count(), 1);
}

BOOST_AUTO_TEST_CASE(einval_and_enosys_fall_back_to_copy) {
  for (int e : {EINVAL, ENOSYS}) {
    tcp_pair p;
    auto big = pattern(200 * 1024, static_cast<unsigned>(e));
    auto seg = make_segment(big);
    out_queue q(1024);
    q.bytes("H");
    q.value(storage::pinned_slice(seg, 4096, static_cast<uint32_t>(big.size())));
    q.bytes("T");
    injected_errno = e;
    injected_times = 1;
    socket_writer wr(p.w, &failing_sendfile);
    write_stats st;
    auto got = drain(wr, q, p, st, big.size() + 2);
    BOOST_CHECK(got == "H" + big + "T");
    BOOST_CHECK_EQUAL(st.fallbacks, 1u);
    BOOST_CHECK(wr.sendfile_disabled());
  }
}

BOOST_AUTO_TEST_CASE(eagain_blocks_then_resumes) {
  tcp_pair p;
  auto big = pattern(64 * 1024, 9);
  auto seg = make_segment(big);
  out_queue q(1024);
  q.value(storage::pinned_slice(seg, 4096, static_cast<uint32_t>(big.size())));
  injected_errno = EAGAIN;
  injected_times = 1;
  socket_writer wr(p.w, &failing_sendfile);
  write_stats st;
  BOOST_CHECK(wr.flush(q, st) == socket_writer::status::blocked);
  BOOST_CHECK(!q.empty());
  auto got = drain(wr, q, p, st, big.size());
  BOOST_CHECK(got == big);
  BOOST_CHECK(!wr.sendfile_disabled());
}

BOOST_AUTO_TEST_CASE(partial_sendfile_resumes_where_it_stopped) {
  tcp_pair p;
  auto big = pattern(100 * 1024 + 17, 11);
  auto seg = make_segment(big);
  out_queue q(1024);
  q.bytes("A");
  q.value(storage::pinned_slice(seg, 4096, static_cast<uint32_t>(big.size())));
  q.bytes("Z");
  short_write = 999;
  socket_writer wr(p.w, &failing_sendfile);
  write_stats st;
  auto got = drain(wr, q, p, st, big.size() + 2);
  short_write = 0;
  BOOST_CHECK(got == "A" + big + "Z");
  BOOST_CHECK_EQUAL(st.sendfile_bytes, big.size());
}

BOOST_AUTO_TEST_CASE(a_full_socket_buffer_blocks_and_nothing_is_lost) {
  tcp_pair p;
  // 64 KiB, not less: with a send buffer of a few KiB, Linux answers sendfile from shmem with
  // EAGAIN even after the peer drained everything (seen on this kernel, cork or not).
  int small = 64 * 1024;
  ::setsockopt(p.w, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  auto big = pattern(2u << 20, 13);
  auto seg = make_segment(big);
  out_queue q(1024);
  std::string expect;
  for (int i = 0; i < 3; ++i) {
    q.bytes("hdr" + std::to_string(i));
    q.value(storage::pinned_slice(seg, 4096, static_cast<uint32_t>(big.size())));
    expect += "hdr" + std::to_string(i) + big;
  }
  socket_writer wr(p.w);
  write_stats st;
  BOOST_CHECK(wr.flush(q, st) == socket_writer::status::blocked);
  auto got = drain(wr, q, p, st, expect.size());
  BOOST_CHECK_EQUAL(got.size(), expect.size());
  BOOST_CHECK(got == expect);
}

BOOST_AUTO_TEST_CASE(slice_outlives_the_segment_owner) {
  // The shard drops its reference (eviction); the queued slice still sends the old bytes.
  tcp_pair p;
  auto big = pattern(50 * 1024, 21);
  out_queue q(1024);
  {
    auto seg = make_segment(big);
    q.value(storage::pinned_slice(seg, 4096, static_cast<uint32_t>(big.size())));
  }
  socket_writer wr(p.w);
  write_stats st;
  BOOST_CHECK(drain(wr, q, p, st, big.size()) == big);
}

BOOST_AUTO_TEST_CASE(peer_gone_is_an_error) {
  auto* p = new tcp_pair;
  ::close(p->r);
  p->r = ::socket(AF_INET, SOCK_STREAM, 0);
  out_queue q(1024);
  std::string blob(1 << 20, 'x');
  socket_writer wr(p->w);
  write_stats st;
  auto s = socket_writer::status::done;
  for (int i = 0; i < 50 && s != socket_writer::status::error; ++i) {
    q.bytes(blob);
    s = wr.flush(q, st);
    if (s == socket_writer::status::blocked)
      ::usleep(1000);
  }
  BOOST_CHECK(s == socket_writer::status::error);
  delete p;
}

BOOST_AUTO_TEST_SUITE_END()
