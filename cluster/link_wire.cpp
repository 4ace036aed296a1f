#include "cluster/link_wire.hpp"

#include "cluster/address.hpp"
#include "cluster/convert.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/debug.h>
#include <kj/exception.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace bifrost::cluster::link_wire {

namespace {

uint32_t le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // x86 and every platform Debian builds Cap'n Proto for here are little-endian
}

// The line at the front of `in`, ending in "\r\n" (or "\n") within max_hello_line bytes:
// `line` without its ending, `taken` with it.
enum class line_state { ok, incomplete, too_long };
line_state front_line(std::string_view in, std::string_view& line, size_t& taken) {
  auto nl = in.find('\n');
  if (nl == std::string_view::npos)
    return in.size() > max_hello_line ? line_state::too_long : line_state::incomplete;
  size_t len = nl > 0 && in[nl - 1] == '\r' ? nl - 1 : nl;
  if (len > max_hello_line)
    return line_state::too_long;
  line = in.substr(0, len);
  taken = nl + 1;
  return line_state::ok;
}

bool parse_u32(std::string_view s, uint32_t& v) {
  if (s.empty())
    return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

} // namespace

std::string dial_address(std::string_view client, std::string_view rpc) {
  auto c = client.rfind(':');
  if (c == std::string_view::npos || c + 1 == client.size())
    return {};
  std::string_view host = client.substr(0, c);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (is_wildcard_host(host)) {
    auto r = rpc.rfind(':');
    if (r == std::string_view::npos || r == 0)
      return {};
    return std::string(rpc.substr(0, r)) + std::string(client.substr(c));
  }
  return std::string(client);
}

std::string hello_line(uint32_t version, std::string_view node_name) {
  std::string s(hello_prefix);
  s += std::to_string(version);
  s += ' ';
  s += node_name;
  s += "\r\n";
  return s;
}

std::string accept_line(uint32_t version, std::string_view node_name) {
  std::string s = "LINK " + std::to_string(version) + " ";
  s += node_name;
  s += "\r\n";
  return s;
}

hello_status parse_hello(std::string_view in, hello& out, size_t& consumed, std::string& error) {
  size_t n = std::min(in.size(), hello_prefix.size());
  if (in.substr(0, n) != hello_prefix.substr(0, n))
    return hello_status::not_hello;
  std::string_view line;
  size_t taken = 0;
  switch (front_line(in, line, taken)) {
    case line_state::incomplete:
      return hello_status::incomplete;
    case line_state::too_long:
      error = "hello line too long";
      return hello_status::bad;
    case line_state::ok:
      break;
  }
  // The prefix has no line ending, so a complete line holds all of it.
  std::string_view rest = line.substr(std::min(line.size(), hello_prefix.size()));
  auto sp = rest.find(' ');
  std::string_view name = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
  if (sp == std::string_view::npos || !parse_u32(rest.substr(0, sp), out.version) ||
      name.empty() || name.find_first_of(" \t\r") != std::string_view::npos) {
    error = "malformed hello line (expected: bifrost-link <version> <node name>)";
    return hello_status::bad;
  }
  out.name.assign(name);
  consumed = taken;
  return hello_status::ok;
}

answer_status parse_answer(std::string_view in, uint32_t version, std::string_view expected_name,
                           size_t& consumed, std::string& error) {
  std::string_view line;
  size_t taken = 0;
  switch (front_line(in, line, taken)) {
    case line_state::incomplete:
      return answer_status::incomplete;
    case line_state::too_long:
      error = "answer line too long";
      return answer_status::refused;
    case line_state::ok:
      break;
  }
  consumed = taken;
  std::string head = "LINK " + std::to_string(version) + " ";
  if (line == std::string_view(head).substr(0, head.size() - 1))
    return answer_status::ok;  // a node from before answers named themselves: trusted as then
  if (line.substr(0, std::min(line.size(), head.size())) == head) {
    std::string_view name = line.substr(head.size());
    if (name == expected_name)
      return answer_status::ok;
    error = "the node there is '" + std::string(name) + "', not '" + std::string(expected_name) +
            "' (a stale address)";
    return answer_status::refused;
  }
  error.assign(line);
  return answer_status::refused;
}

frame_status frame_size(std::string_view in, size_t& size, size_t& need, size_t limit) {
  if (in.size() < 8) {
    need = 8;
    return frame_status::incomplete;
  }
  uint64_t segments = uint64_t(le32(in.data())) + 1;
  if (segments > max_segments)
    return frame_status::bad;
  uint64_t header = (segments / 2 + 1) * 8;  // count + sizes, padded to a word
  if (in.size() < header) {
    need = header;
    return frame_status::incomplete;
  }
  uint64_t total = header;
  for (uint64_t i = 0; i < segments; ++i) {
    total += uint64_t(le32(in.data() + 4 + 4 * i)) * 8;
    if (total > limit)
      return frame_status::bad;
  }
  if (in.size() < total) {
    need = total;
    return frame_status::incomplete;
  }
  size = total;
  return frame_status::ok;
}

// -- frame_buffer -------------------------------------------------------------------------------

void frame_buffer::compact() {
  if (begin_ == 0)
    return;
  auto* b = reinterpret_cast<char*>(buf_.data());
  std::memmove(b, b + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
}

char* frame_buffer::space(size_t min) {
  if (cap_bytes() - end_ < min) {
    compact();
    if (cap_bytes() - end_ < min)
      buf_.resize((std::max(end_ + min, cap_bytes() * 2) + 7) / 8);
  }
  return reinterpret_cast<char*>(buf_.data()) + end_;
}

void frame_buffer::append(std::string_view bytes) {
  std::memcpy(space(bytes.size()), bytes.data(), bytes.size());
  commit(bytes.size());
}

void frame_buffer::consume(size_t n) noexcept {
  begin_ += std::min(n, end_ - begin_);
  if (begin_ == end_) {
    begin_ = end_ = 0;
    if (cap_bytes() > keep_bytes)
      std::vector<uint64_t>().swap(buf_);  // one large frame does not pin its buffer for life
  }
}

kj::ArrayPtr<const capnp::word> frame_buffer::frame(size_t size) {
  if (begin_ % sizeof(capnp::word) != 0)
    compact();  // a text line before the frames left them unaligned
  return {reinterpret_cast<const capnp::word*>(buf_.data()) + begin_ / sizeof(capnp::word),
          size / sizeof(capnp::word)};
}

// -- messages -----------------------------------------------------------------------------------

kj::Array<capnp::word> encode_call(uint64_t id, rpc::Origin origin,
                                   const storage::op_batch& ops, bool park, uint64_t ring,
                                   call_stamp stamp) {
  capnp::MallocMessageBuilder mb(ops_size(ops).wordCount);
  auto c = mb.initRoot<rpc::LinkCall>();
  c.setId(id);
  c.setOrigin(origin);
  c.setPark(park);
  c.setRing(ring);
  c.setSentAtMs(stamp.sent_ms);
  c.setTimeoutMs(stamp.timeout_ms);
  auto list = c.initOps(static_cast<unsigned>(ops.size()));
  for (size_t i = 0; i < ops.size(); ++i)
    to_rpc(ops[i], list[static_cast<unsigned>(i)]);
  return capnp::messageToFlatArray(mb);
}

kj::Array<capnp::word> encode_reply(uint64_t id, const storage::result_batch& rs) {
  capnp::MallocMessageBuilder mb(results_size(rs).wordCount);
  auto r = mb.initRoot<rpc::LinkReply>();
  r.setId(id);
  auto list = r.initResults(static_cast<unsigned>(rs.size()));
  for (size_t i = 0; i < rs.size(); ++i) {
    auto b = list[static_cast<unsigned>(i)];
    to_rpc_meta(rs[i], b);
    if (!rs[i].value)
      continue;
    if (rs[i].value.size() <= inline_value_limit)
      b.setValue(as_data(rs[i].value.view()));
    else
      b.setStreamed(true);
  }
  return capnp::messageToFlatArray(mb);
}

bool decode_call(kj::ArrayPtr<const capnp::word> frame, call& out, std::string& error) {
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 capnp::FlatArrayMessageReader reader(frame, rpc_reader_options());
                 auto c = reader.getRoot<rpc::LinkCall>();
                 out.id = c.getId();
                 out.origin = c.getOrigin();
                 out.park = c.getPark();
                 out.ring = c.getRing();
                 out.stamp = {c.getSentAtMs(), c.getTimeoutMs()};
                 out.ops = from_rpc(c.getOps());  // at most call_max_ops (throws)
               })) {
    error = e->getDescription().cStr();
    return false;
  }
  return true;
}

bool decode_reply(kj::ArrayPtr<const capnp::word> frame, uint64_t& id,
                  storage::result_batch& out, std::vector<bool>& streamed, std::string& error) {
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 capnp::FlatArrayMessageReader reader(frame, rpc_reader_options());
                 auto r = reader.getRoot<rpc::LinkReply>();
                 id = r.getId();
                 auto list = r.getResults();
                 KJ_REQUIRE(list.size() <= call_max_ops, "too many results in one reply",
                            list.size());
                 out.clear();
                 out.reserve(list.size());
                 streamed.assign(list.size(), false);
                 for (auto x : list) {
                   streamed[out.size()] = x.getStreamed();
                   out.push_back(from_rpc(x));
                 }
               })) {
    error = e->getDescription().cStr();
    return false;
  }
  return true;
}

} // namespace bifrost::cluster::link_wire
