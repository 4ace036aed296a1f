// Test/fuzz helpers for the memcached parser (header-only; not used by the server).
//
// describe():   a stable, printable rendering of one parse result + request.
// stream_sim:   feeds bytes the way a connection does (append, parse until incomplete, drop
//               consumed bytes, swallow after errors, stop on close) and records the
//               sequence of described results. Checks the parse() contract on every call and
//               reports the first violation in `violation`.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/memcache.hpp"

namespace bifrost::proto::testing {

inline const char* command_name(command c) {
  switch (c) {
    case command::none: return "none";
    case command::get: return "get";
    case command::gets: return "gets";
    case command::gat: return "gat";
    case command::gats: return "gats";
    case command::set: return "set";
    case command::add: return "add";
    case command::replace: return "replace";
    case command::append: return "append";
    case command::prepend: return "prepend";
    case command::cas: return "cas";
    case command::delete_: return "delete";
    case command::incr: return "incr";
    case command::decr: return "decr";
    case command::touch: return "touch";
    case command::flush_all: return "flush_all";
    case command::version: return "version";
    case command::verbosity: return "verbosity";
    case command::cache_memlimit: return "cache_memlimit";
    case command::stats: return "stats";
    case command::quit: return "quit";
    case command::mg: return "mg";
    case command::ms: return "ms";
    case command::md: return "md";
    case command::ma: return "ma";
    case command::mn: return "mn";
    case command::me: return "me";
  }
  return "?";
}

inline void append_escaped(std::string& out, std::string_view s, size_t limit = 64) {
  out.push_back('"');
  size_t n = s.size() < limit ? s.size() : limit;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (n < s.size()) out += "...(" + std::to_string(s.size()) + ")";
  out.push_back('"');
}

inline std::string describe(const parse_result& r, const request& q) {
  std::string s;
  switch (r.status) {
    case parse_status::ok: s = "ok"; break;
    case parse_status::incomplete: return "incomplete need=" + std::to_string(r.need);
    case parse_status::too_long: return "too_long";
    case parse_status::close: return "close";
    case parse_status::error:
      s = "error ";
      append_escaped(s, r.error);
      break;
  }
  s += " consumed=" + std::to_string(r.consumed);
  if (r.swallow) s += " swallow=" + std::to_string(r.swallow);
  s += std::string(" cmd=") + command_name(q.cmd);
  if (!q.keys.empty()) {
    s += " keys=[";
    for (size_t i = 0; i < q.keys.size(); ++i) {
      if (i) s += ",";
      append_escaped(s, q.keys[i]);
    }
    s += "]";
  }
  if (r.status == parse_status::ok) {
    if (q.data.data()) {
      s += " data=";
      append_escaped(s, q.data);
    }
    if (q.flags) s += " flags=" + std::to_string(q.flags);
    if (q.exptime) s += " exptime=" + std::to_string(q.exptime);
    if (q.cas_unique) s += " cas=" + std::to_string(q.cas_unique);
    if (q.delta) s += " delta=" + std::to_string(q.delta);
    if (q.has_delay || q.delay) s += " delay=" + std::to_string(q.delay);
    if (!q.stats_arg.empty()) {
      s += " stats_arg=";
      append_escaped(s, q.stats_arg);
    }
  }
  if (q.noreply) s += " noreply";
  if (q.meta.present) {
    s += " meta={";
    for (char c = 'A'; c <= 'z'; ++c) {
      if (meta_flags::index(c) < 0 || !q.meta.has(c)) continue;
      s.push_back(c);
      if (!q.meta.get(c).empty()) append_escaped(s, q.meta.get(c));
      s.push_back(' ');
    }
    s += "}";
  }
  if (!q.meta.raw.empty()) {
    s += " raw=";
    append_escaped(s, q.meta.raw);
  }
  return s;
}

// Feeds a byte stream in chunks like a connection would.
class stream_sim {
 public:
  explicit stream_sim(parser_config cfg = {}) : cfg_(cfg) {}

  void feed(std::string_view chunk) {
    if (closed_) return;
    if (swallow_) {
      size_t k = swallow_ < chunk.size() ? swallow_ : chunk.size();
      chunk.remove_prefix(k);
      swallow_ -= k;
      if (swallow_) return;
    }
    buf_.append(chunk.data(), chunk.size());
    for (;;) {
      std::string_view in(buf_.data() + pos_, buf_.size() - pos_);
      parse_result r = parse(in, req_, cfg_);
      switch (r.status) {
        case parse_status::incomplete:
          if (r.consumed != 0) fail("incomplete consumed bytes");
          if (r.need && r.need <= in.size()) fail("need not beyond the input");
          if (r.need) last_need_ = r.need;
          compact();
          return;
        case parse_status::too_long:
        case parse_status::close:
          events_.push_back(r.status == parse_status::close ? "close" : "too_long");
          closed_ = true;
          return;
        case parse_status::ok:
        case parse_status::error: {
          if (r.consumed == 0) fail("no progress on ok/error");
          if (r.consumed > in.size()) fail("consumed beyond the input");
          if (r.status == parse_status::error && r.error.empty()) fail("error without text");
          check_views(in, r);
          if (last_need_ && r.swallow == 0 && r.consumed != last_need_ &&
              (req_.cmd == command::set || req_.cmd == command::add ||
               req_.cmd == command::replace || req_.cmd == command::append ||
               req_.cmd == command::prepend || req_.cmd == command::cas ||
               req_.cmd == command::ms))
            fail("need did not match the final consumed size");
          last_need_ = 0;
          events_.push_back(describe(r, req_));
          pos_ += r.consumed;
          if (r.swallow) {
            size_t avail = buf_.size() - pos_;
            size_t k = r.swallow < avail ? r.swallow : avail;
            pos_ += k;
            swallow_ = r.swallow - k;
            if (swallow_) {
              buf_.clear();
              pos_ = 0;
              return;
            }
          }
          break;
        }
      }
    }
  }

  const std::vector<std::string>& events() const { return events_; }
  bool closed() const { return closed_; }
  size_t pending() const { return buf_.size() - pos_; }
  size_t swallow_left() const { return swallow_; }
  const std::string& violation() const { return violation_; }

 private:
  void fail(const char* what) {
    if (violation_.empty()) violation_ = what;
  }
  static bool inside(std::string_view in, std::string_view v) {
    if (v.empty()) return true;
    return v.data() >= in.data() && v.data() + v.size() <= in.data() + in.size();
  }
  void check_views(std::string_view in, const parse_result& r) {
    std::string_view used = in.substr(0, r.consumed);
    bool ok = inside(used, req_.line) && inside(used, req_.data) &&
              inside(used, req_.stats_arg) && inside(used, req_.meta.raw);
    for (auto k : req_.keys) ok = ok && inside(used, k);
    for (char c = 'A'; c <= 'z'; ++c)
      if (meta_flags::index(c) >= 0 && req_.meta.has(c))
        ok = ok && inside(req_.meta.raw, req_.meta.get(c));  // (raw is inside `used`)
    if (!ok) fail("view outside the consumed input");
    if (r.status == parse_status::error) {
      // The error string must be one of the static strings (valid forever): just make sure
      // it does not point into the input.
      if (r.error.data() >= in.data() && r.error.data() < in.data() + in.size())
        fail("error text points into the input");
    }
  }
  void compact() {
    if (pos_ > 4096 && pos_ * 2 > buf_.size()) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }

  parser_config cfg_;
  request req_;
  std::string buf_;
  size_t pos_ = 0;
  size_t swallow_ = 0;
  size_t last_need_ = 0;
  bool closed_ = false;
  std::vector<std::string> events_;
  std::string violation_;
};

/// Events for `in` fed in chunks of `chunk` bytes (0 = all at once).
inline std::vector<std::string> run_chunks(std::string_view in, size_t chunk,
                                           parser_config cfg = {}, std::string* violation = nullptr) {
  stream_sim sim(cfg);
  if (chunk == 0) chunk = in.size() ? in.size() : 1;
  for (size_t i = 0; i < in.size(); i += chunk) sim.feed(in.substr(i, chunk));
  if (violation && violation->empty()) *violation = sim.violation();
  return sim.events();
}

/// Events for `in` split at the given points.
inline std::vector<std::string> run_splits(std::string_view in, const std::vector<size_t>& at,
                                           parser_config cfg = {}, std::string* violation = nullptr) {
  stream_sim sim(cfg);
  size_t prev = 0;
  for (size_t p : at) {
    if (p < prev || p > in.size()) continue;
    sim.feed(in.substr(prev, p - prev));
    prev = p;
  }
  sim.feed(in.substr(prev));
  if (violation && violation->empty()) *violation = sim.violation();
  return sim.events();
}

}  // namespace bifrost::proto::testing
