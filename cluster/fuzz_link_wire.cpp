// libFuzzer target for the data link's wire (cluster/link_wire.hpp), as a link session reads
// it: a hello line, then frames.
//
// 1. The input is read whole and in chunks (sizes derived from the input); both readings must
//    give the same sequence of events (hello result, frames and their decoded calls, the
//    point where the stream is refused).
// 2. frame_size's contract: an ok frame lies inside the input, is a multiple of 8 bytes and
//    within the limit; `need` of an incomplete frame lies beyond the input.
// 3. Every decoded call re-encodes to a frame that decodes to the same call.
// 4. The client's side of the greeting, parse_answer: the input's every prefix is either
//    undecided or decided as the whole input is, and an accepted answer consumed a line
//    inside it.
#include "cluster/link_wire.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace lw = bifrost::cluster::link_wire;

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_link_wire invariant violated: %s\n", what);
  std::abort();
}

std::string describe(const lw::call& c) {
  std::string s = "call " + std::to_string(c.id) + " " +
                  std::to_string(static_cast<int>(c.origin)) + " " + std::to_string(c.ops.size()) +
                  " " + std::to_string(c.park) + " " + std::to_string(c.ring);
  for (auto& o : c.ops)
    s += "|" + std::to_string(static_cast<int>(o.kind)) + ":" + o.key + ":" + o.value + ":" +
         std::to_string(o.flags) + ":" + std::to_string(o.ttl) + ":" + std::to_string(o.delta) +
         ":" + std::to_string(o.routed) + ":" + std::to_string(o.recache_before_touch);
  return s;
}

// Reads `in` in chunks of `step` bytes (0: whole) like a session; returns the events.
std::vector<std::string> read_stream(std::string_view in, size_t step) {
  std::vector<std::string> events;
  lw::frame_buffer buf;
  bool greeted = false, stop = false;
  size_t pos = 0;
  while (!stop && pos < in.size()) {
    size_t n = step == 0 ? in.size() : std::min(step, in.size() - pos);
    buf.append(in.substr(pos, n));
    pos += n;
    while (!stop) {
      if (!greeted) {
        lw::hello h;
        size_t used = 0;
        std::string error;
        auto st = lw::parse_hello(buf.text(), h, used, error);
        if (st == lw::hello_status::incomplete)
          break;
        if (st != lw::hello_status::ok) {
          events.push_back("refused hello " + std::to_string(static_cast<int>(st)));
          stop = true;
          break;
        }
        if (used == 0 || used > buf.size())
          die("hello consumed nothing or too much");
        events.push_back("hello " + std::to_string(h.version) + " " + h.name);
        buf.consume(used);
        greeted = true;
        continue;
      }
      size_t size = 0, need = 0;
      auto st = lw::frame_size(buf.text(), size, need, lw::frame_limit);
      if (st == lw::frame_status::incomplete) {
        if (need <= buf.size())
          die("incomplete frame whose need is already there");
        break;
      }
      if (st == lw::frame_status::bad) {
        events.push_back("bad frame");
        stop = true;
        break;
      }
      if (size > buf.size() || size % 8 != 0 || size == 0 || size > lw::frame_limit)
        die("frame size outside the input, unaligned or over the limit");
      lw::call c;
      std::string error;
      if (!lw::decode_call(buf.frame(size), c, error)) {
        events.push_back("undecodable frame");
        stop = true;
        break;
      }
      auto again = lw::encode_call(c.id, c.origin, c.ops, c.park, c.ring);
      lw::call c2;
      if (!lw::decode_call(again.asPtr(), c2, error) || describe(c) != describe(c2))
        die("a decoded call does not survive re-encoding");
      events.push_back(describe(c));
      buf.consume(size);
    }
  }
  return events;
}

void check_answer(std::string_view in) {
  size_t used = 0;
  std::string error;
  auto whole = lw::parse_answer(in, 1, "node", used, error);
  if (whole == lw::answer_status::ok && (used == 0 || used > in.size()))
    die("an accepted answer consumed nothing or too much");
  size_t upto = std::min(in.size(), lw::max_hello_line + 8);
  for (size_t cut = 0; cut < upto; ++cut) {
    size_t u = 0;
    auto st = lw::parse_answer(in.substr(0, cut), 1, "node", u, error);
    if (st != lw::answer_status::incomplete && st != whole)
      die("parse_answer decides a prefix otherwise than the whole input");
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto whole = read_stream(in, 0);
  size_t seed = size > 0 ? data[0] : 0;
  for (size_t step : {size_t(1), size_t(7), 1 + seed % 64, size_t(4096)})
    if (read_stream(in, step) != whole)
      die("chunked reading differs from whole reading");
  check_answer(in);
  return 0;
}
