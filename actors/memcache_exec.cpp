// Translation between memcached requests and storage ops, and from results to the exact bytes
// memcached 1.6 answers. Everything here was checked byte for byte against a real memcached
// 1.6.18 (see tests/actors/test_memcache_exec.cpp for the transcripts).
#include "actors/memcache_exec.hpp"

#include "storage/shard.hpp"

#include <charconv>
#include <cstring>
#include <ctime>

namespace bifrost::actors {

namespace {

using proto::command;
using storage::op_kind;
using storage::status;

// -- small helpers ------------------------------------------------------------------------------

/// A response line built in a stack buffer (spills to the heap only for absurd lengths), so
/// each line goes into the out_queue with one append.
class line_buf {
public:
  void put(std::string_view s) {
    if (!spilled_ && n_ + s.size() <= sizeof(buf_)) {
      std::memcpy(buf_ + n_, s.data(), s.size());
      n_ += s.size();
      return;
    }
    spill();
    heap_.append(s.data(), s.size());
  }
  void put(char c) { put(std::string_view(&c, 1)); }
  void num(uint64_t v) {
    if (!spilled_ && n_ + 24 <= sizeof(buf_)) {
      n_ = static_cast<size_t>(std::to_chars(buf_ + n_, buf_ + sizeof(buf_), v).ptr - buf_);
      return;
    }
    char t[24];
    put(std::string_view(t, static_cast<size_t>(std::to_chars(t, t + sizeof(t), v).ptr - t)));
  }
  void snum(int64_t v) {
    if (v < 0) {
      put('-');
      num(0 - static_cast<uint64_t>(v));
    } else {
      num(static_cast<uint64_t>(v));
    }
  }
  std::string_view view() const noexcept {
    return spilled_ ? std::string_view(heap_) : std::string_view(buf_, n_);
  }
  /// Bytes that still fit in the stack buffer.
  size_t room() const noexcept { return spilled_ ? 0 : sizeof(buf_) - n_; }
  /// Appends the line(s) built so far to `out` and starts over.
  void flush(out_queue& out) {
    out.bytes(view());
    clear();
  }
  void clear() noexcept {
    n_ = 0;
    spilled_ = false;
    heap_.clear();
  }

private:
  void spill() {
    if (!spilled_) {
      heap_.assign(buf_, n_);
      spilled_ = true;
    }
  }
  char buf_[2048];
  size_t n_ = 0;
  bool spilled_ = false;
  std::string heap_;
};

/// Calls f(token) for each space-separated token of `s` (memcached splits on ' ' only).
template <class F>
void each_token(std::string_view s, F&& f) {
  size_t i = 0, n = s.size();
  while (i < n) {
    while (i < n && s[i] == ' ')
      ++i;
    size_t j = i;
    while (j < n && s[j] != ' ')
      ++j;
    if (j > i)
      f(s.substr(i, j - i));
    i = j;
  }
}

// Tokens are read with memcached's own number readers: proto::safe_strtol/strtoul/strtoull.
using proto::safe_strtol;
using proto::safe_strtoul;
using proto::safe_strtoull;

// -- meta flags -----------------------------------------------------------------------------

constexpr size_t max_meta_flags = 17;          // mg/md/ma; ms allows 16
constexpr size_t max_opaque_length = 32;       // MFLAG_MAX_OPAQUE_LENGTH, 'O' included
constexpr std::string_view err_format = "CLIENT_ERROR bad command line format";
constexpr std::string_view err_bad_token = "CLIENT_ERROR bad token in command line format";

/// The meta flags of one request, validated the way memcached's _meta_flag_preparse does.
struct meta_opts {
  std::string_view err;  // non-empty: the error line to answer
  bool b = false, q = false, v = false, u = false;
  bool has_T = false, has_N = false, has_R = false, has_C = false, has_E = false, has_I = false;
  bool T_after_N = false;  // both given, T later: memcached makes a vivified item with T's TTL
  bool R_after_T = false;  // both given, R later: R compares the TTL T set
  int32_t T = 0, N = 0, R = 0;
  uint32_t F = 0;
  uint64_t C = 0, J = 0, D = 1, E = 0;
  char mode = 0;
};

/// Parses `raw` for `cmd`; decodes the key into `key` (base64 with b, else copied).
meta_opts parse_meta(command cmd, std::string_view raw, std::string_view key_token,
                     std::string& key) {
  meta_opts m;
  size_t count = 0;
  each_token(raw, [&](std::string_view) { ++count; });
  // memcached counts tokens (command, key, ms's length, flags, terminal) against 20.
  if (count > (cmd == command::ms ? max_meta_flags - 1 : max_meta_flags)) {
    m.err = cmd == command::mg ? "CLIENT_ERROR options flags are too long"
                               : "CLIENT_ERROR options flags too long";
    return m;
  }

  std::string_view errstr = err_format;
  bool has_error = false;
  bool fatal = false;  // duplicate / unknown flag: stop at once
  bool seen[128] = {};
  key.assign(key_token.data(), key_token.size());
  each_token(raw, [&](std::string_view t) {
    if (fatal)
      return;
    auto o = static_cast<unsigned char>(t[0]);
    if (o >= 127 || seen[o]) {
      errstr = "CLIENT_ERROR duplicate flag";
      fatal = true;
      return;
    }
    seen[o] = true;
    std::string_view arg = t.substr(1);
    switch (o) {
      case 'b':
        m.b = true;
        key.clear();
        if (!proto::base64_decode(key_token, key) || key.empty()) {
          errstr = "CLIENT_ERROR error decoding key";
          has_error = true;
        }
        break;
      case 'N':
        m.has_N = true;
        if (!safe_strtol(arg, m.N)) {
          errstr = err_bad_token;
          has_error = true;
        }
        break;
      case 'T':
        m.has_T = true;
        m.T_after_N = m.has_N;
        if (!safe_strtol(arg, m.T)) {
          errstr = err_bad_token;
          has_error = true;
        }
        break;
      case 'R':
        m.has_R = true;
        m.R_after_T = m.has_T;
        if (!safe_strtol(arg, m.R)) {
          errstr = err_bad_token;
          has_error = true;
        }
        break;
      case 'l': case 'O': case 'P': case 'L': case 'k': case 's': case 't': case 'c':
      case 'f': case 'h':
        break;
      case 'v':
        m.v = true;
        break;
      case 'u':
        m.u = true;
        break;
      case 'q':
        m.q = true;
        break;
      case 'F':
        if (!safe_strtoul(arg, m.F))
          has_error = true;  // memcached leaves errstr as it was
        break;
      case 'C':
        m.has_C = true;
        if (!safe_strtoull(arg, m.C)) {
          errstr = err_bad_token;
          has_error = true;
        }
        break;
      case 'E':  // newer memcached: explicit CAS for the new item (1.6.18: invalid flag)
        m.has_E = true;
        if (!safe_strtoull(arg, m.E)) {
          errstr = err_bad_token;
          has_error = true;
        }
        break;
      case 'M':
        if (t.size() != 2) {
          errstr = "CLIENT_ERROR incorrect length for M token";
          has_error = true;
        } else {
          m.mode = t[1];
        }
        break;
      case 'J':
        if (!safe_strtoull(arg, m.J)) {
          errstr = "CLIENT_ERROR invalid numeric initial value";
          has_error = true;
        }
        break;
      case 'D':
        if (!safe_strtoull(arg, m.D)) {
          errstr = "CLIENT_ERROR invalid numeric delta value";
          has_error = true;
        }
        break;
      case 'I':
        m.has_I = true;
        break;
      default:
        errstr = "CLIENT_ERROR invalid flag";
        fatal = true;
        break;
    }
  });
  if (fatal || has_error) {
    // md and ma answer one generic line for every flag error.
    m.err = (cmd == command::md || cmd == command::ma) ? "CLIENT_ERROR invalid or duplicate flag"
                                                       : errstr;
    return m;
  }

  bool long_opaque = false;
  each_token(raw, [&](std::string_view t) {
    if (t[0] == 'O' && t.size() > max_opaque_length)
      long_opaque = true;
  });
  if (cmd == command::ms) {
    // memcached checks the mode after the opaque length, and a bad mode wins.
    switch (m.mode) {
      case 0: case 'E': case 'A': case 'P': case 'R': case 'S':
        break;
      default:
        m.err = "CLIENT_ERROR invalid mode for ms M token";
        return m;
    }
  }
  if (long_opaque) {
    m.err = "CLIENT_ERROR opaque token too long";
    return m;
  }
  if (cmd == command::ma) {
    switch (m.mode) {
      case 0: case 'I': case '+': case 'D': case '-':
        break;
      default:
        m.err = "CLIENT_ERROR invalid mode for ma M token";
        return m;
    }
  }
  return m;
}

/// The flag letters present in `raw` (bit meta_flags::index(letter)); compose reads them
/// from the raw text so that it only depends on what was written on the wire.
struct flag_set {
  uint64_t bits = 0;
  explicit flag_set(std::string_view raw) noexcept {
    each_token(raw, [&](std::string_view t) {
      int i = proto::meta_flags::index(t[0]);
      if (i >= 0)
        bits |= uint64_t{1} << i;
    });
  }
  bool has(char c) const noexcept { return (bits >> proto::meta_flags::index(c)) & 1; }
};

plan_result error_result(std::string_view e) {
  plan_result r;
  r.k = plan_result::kind::error;
  r.error.assign(e.data(), e.size());
  return r;
}

plan_result plan_meta(const proto::request& req, std::vector<storage::op>& ops) {
  if (req.keys.empty())
    return error_result(err_format);
  storage::op& o = ops.emplace_back();
  meta_opts m = parse_meta(req.cmd, req.meta.raw, req.keys[0], o.key);
  if (!m.err.empty()) {
    ops.clear();
    return error_result(m.err);
  }
  o.explicit_cas = m.has_E ? m.E : 0;
  switch (req.cmd) {
    case command::mg:
      o.kind = op_kind::get;
      o.get_value = m.v;
      o.get_bump = !m.u;
      if (m.has_T) {
        o.get_touch = true;
        o.ttl = m.T;
        o.counts = storage::op::counting::touch_or_miss;  // (memcached's counters)
      }
      if (m.has_N) {  // the item made on a miss takes the TTL of N or T, whichever came later
        o.vivify = true;
        o.vivify_ttl = m.T_after_N ? m.T : m.N;
      }
      if (m.has_R) {
        o.recache = true;
        o.recache_ttl = m.R;
        o.recache_before_touch = m.has_T && !m.R_after_T;
      }
      break;
    case command::ms:
      o.kind = op_kind::store;
      o.value.assign(req.data.data(), req.data.size());
      o.flags = m.F;
      o.ttl = m.has_T ? m.T : 0;
      o.invalidate = m.has_I;
      switch (m.mode) {
        case 'E': o.mode = storage::store_mode::add; break;
        case 'A': o.mode = storage::store_mode::append; break;
        case 'P': o.mode = storage::store_mode::prepend; break;
        case 'R': o.mode = storage::store_mode::replace; break;
        default: o.mode = storage::store_mode::set; break;
      }
      if (m.has_C) {
        o.compare_cas = m.C;
        // memcached upgrades set and replace with a CAS value to a CAS store.
        if (o.mode == storage::store_mode::set || o.mode == storage::store_mode::replace)
          o.mode = storage::store_mode::cas;
      }
      break;
    case command::md:
      o.kind = op_kind::remove;
      o.compare_cas = m.has_C ? m.C : 0;
      o.cas_given = m.has_C;
      o.invalidate = m.has_I;
      if (m.has_T) {  // only used with I: the stale item's new TTL
        o.get_touch = true;
        o.ttl = m.T;
      }
      break;
    case command::ma:
      o.kind = op_kind::arith;
      o.incr = !(m.mode == 'D' || m.mode == '-');
      o.delta = m.D;
      o.initial = m.J;
      o.compare_cas = m.has_C ? m.C : 0;
      if (m.has_N) {  // the counter made on a miss: N's TTL or T's, whichever came later
        o.vivify = true;
        o.vivify_ttl = m.T_after_N ? m.T : m.N;
        o.ttl = o.vivify_ttl;  // (an older node makes the counter with `ttl`)
      }
      if (m.has_T) {  // update the TTL of the item
        o.get_touch = true;
        o.ttl = m.T;
      }
      break;
    default:
      break;
  }
  return {};
}

// -- compose helpers ------------------------------------------------------------------------

void put_key(line_buf& l, std::string_view key, bool b) {
  l.put(" k");
  if (!b) {
    l.put(key);
    return;
  }
  std::string enc;
  proto::base64_encode(key, enc);
  l.put(enc);
  l.put(" b");
}

/// Echoes the O and k flags in request order (the flags every meta reply carries).
void put_opaque_key(line_buf& l, std::string_view raw, std::string_view key, bool b) {
  each_token(raw, [&](std::string_view t) {
    if (t[0] == 'O') {
      l.put(' ');
      l.put(t);
    } else if (t[0] == 'k') {
      put_key(l, key, b);
    }
  });
}

void put_ttl(line_buf& l, uint32_t exptime, uint32_t now) {
  if (exptime == 0)
    l.put("-1");
  else
    l.num(exptime > now ? exptime - now : 0);
}

/// Meta `t` as memcached shows it: mg and ma apply T, and N to an item N made (`created`),
/// where they stand among the flags, so a `t` left of them shows the TTL before. Walks the
/// flags of `raw`, calling put(token, exptime there) for each.
template <class Put>
void each_flag_with_ttl(std::string_view raw, const storage::result& r, bool created, uint32_t now,
                        Put&& put) {
  const char* last = nullptr;  // the last T or N that applies: its TTL is the item's (r.exptime)
  each_token(raw, [&](std::string_view t) {
    if (t[0] == 'T' || (t[0] == 'N' && created))
      last = t.data();
  });
  uint32_t exptime = r.exptime_before;
  each_token(raw, [&](std::string_view t) {
    if (t[0] == 'T' || (t[0] == 'N' && created)) {
      int32_t ttl = 0;
      exptime = t.data() == last ? r.exptime
                                 : (safe_strtol(t.substr(1), ttl) ? storage::absolute_exptime(ttl, now)
                                                                  : r.exptime);
    }
    put(t, exptime);
  });
}

void end_line(line_buf& l, out_queue& out) {
  l.put("\r\n");
  out.bytes(l.view());
}

const storage::result* result_at(const std::vector<storage::result>& results, size_t i) {
  return i < results.size() ? &results[i] : nullptr;
}

uint32_t value_bytes(const storage::result& r) noexcept {
  return r.value ? r.value.size() : r.value_size;
}

// memcached's slab classes with its defaults (-n 48, -f 1.25, slab_chunk_max 512 KiB): `me`
// reports the class and total item size memcached would use for the item.
struct slab_table {
  uint32_t size[64] = {};
  uint32_t largest = 0;
};

constexpr slab_table make_slab_table() {
  slab_table t;
  uint32_t size = 48 + 48;  // sizeof(item) + chunk_size
  const uint32_t chunk_max = 512 * 1024;
  uint32_t i = 0;
  while (++i < 63) {
    if (static_cast<double>(size) >= chunk_max / 1.25)
      break;
    if (size % 8)
      size += 8 - size % 8;
    t.size[i] = size;
    size = static_cast<uint32_t>(size * 1.25);
  }
  t.largest = i;
  t.size[i] = chunk_max;
  return t;
}

constexpr slab_table slabs = make_slab_table();

uint32_t slab_class(uint64_t ntotal) noexcept {
  for (uint32_t i = 1; i < slabs.largest; ++i)
    if (ntotal <= slabs.size[i])
      return i;
  return slabs.largest;  // the largest class, or the header of a chunked item
}

// -- compose: text --------------------------------------------------------------------------

/// Appends a value after its header line: small values are copied into `l` so that header,
/// value and the following \r\n reach the out_queue in one append; others go through
/// out.value() (copied there, or queued for sendfile at/above the threshold).
void put_value(line_buf& l, const storage::result& r, out_queue& out) {
  const storage::pinned_slice& v = r.value;
  if (v && v.size() < out.threshold() && v.size() + 2 <= l.room()) {
    l.put(v.view());
    return;
  }
  l.flush(out);
  out.value(v);
}

void compose_get(const proto::request& req, const std::vector<storage::op>& ops,
                 const std::vector<storage::result>& results, out_queue& out, bool end = true) {
  const bool with_cas = req.cmd == command::gets || req.cmd == command::gats;
  line_buf l;
  for (size_t i = 0; i < ops.size(); ++i) {
    const storage::result* r = result_at(results, i);
    if (!r || r->st != status::hit)
      continue;
    const std::string_view key = ops[i].key;
    if (l.room() < key.size() + 64)
      l.flush(out);
    l.put("VALUE ");
    l.put(key);
    l.put(' ');
    l.num(r->flags);
    l.put(' ');
    l.num(value_bytes(*r));
    if (with_cas) {
      l.put(' ');
      l.num(r->cas);
    }
    l.put("\r\n");
    put_value(l, *r, out);
    l.put("\r\n");
  }
  if (end)
    l.put("END\r\n");
  l.flush(out);
}

void put_text_line(out_queue& out, std::string_view s) {
  line_buf l;
  l.put(s);
  end_line(l, out);
}

void compose_text_single(const proto::request& req, const storage::result& r, out_queue& out) {
  if (req.noreply)
    return;  // memcached suppresses every reply, errors included, under noreply
  std::string_view line;
  switch (req.cmd) {
    case command::set: case command::add: case command::replace: case command::append:
    case command::prepend: case command::cas:
      switch (r.st) {
        case status::stored: line = "STORED"; break;
        case status::not_stored: line = "NOT_STORED"; break;
        case status::exists: line = "EXISTS"; break;
        case status::not_found: case status::miss: line = "NOT_FOUND"; break;
        case status::too_large: case status::no_memory: line = error_line(r.st); break;
        default: line = "SERVER_ERROR Unhandled storage type."; break;
      }
      break;
    case command::delete_:
      line = (r.st == status::deleted || r.st == status::hit) ? "DELETED" : "NOT_FOUND";
      break;
    case command::touch:
      line = (r.st == status::hit || r.st == status::stored || r.st == status::ok) ? "TOUCHED"
                                                                                  : "NOT_FOUND";
      break;
    case command::incr: case command::decr:
      switch (r.st) {
        case status::hit: case status::stored: {
          line_buf l;
          l.num(r.number);
          end_line(l, out);
          return;
        }
        case status::non_numeric:
          line = "CLIENT_ERROR cannot increment or decrement non-numeric value";
          break;
        case status::no_memory: line = "SERVER_ERROR out of memory"; break;
        default: line = "NOT_FOUND"; break;
      }
      break;
    default:
      return;
  }
  put_text_line(out, line);
}

// -- compose: meta --------------------------------------------------------------------------

void compose_mg(const proto::request& req, const storage::op& o, const storage::result& r,
                out_queue& out, uint32_t now) {
  std::string_view raw = req.meta.raw;
  const flag_set fl(raw);
  const bool b = fl.has('b');
  line_buf l;
  if (r.st != status::hit && r.st != status::stored) {
    if (fl.has('q'))
      return;  // q: EN is elided
    l.put("EN");
    put_opaque_key(l, raw, o.key, b);
    end_line(l, out);
    return;
  }
  const bool v = fl.has('v');
  if (v) {
    l.put("VA ");
    l.num(value_bytes(r));
  } else {
    l.put("HD");
  }
  each_flag_with_ttl(raw, r, r.st == status::stored, now, [&](std::string_view t, uint32_t exptime) {
    switch (t[0]) {
      case 's': l.put(" s"); l.num(r.value_size); break;
      case 't': l.put(" t"); put_ttl(l, exptime, now); break;
      case 'c': l.put(" c"); l.num(r.cas); break;
      case 'f': l.put(" f"); l.num(r.flags); break;
      case 'l': l.put(" l"); l.num(now > r.last_access ? now - r.last_access : 0); break;
      case 'h': l.put(r.fetched ? " h1" : " h0"); break;
      case 'O': l.put(' '); l.put(t); break;
      case 'k': put_key(l, o.key, b); break;
      default: break;
    }
  });
  // memcached appends these after the requested flags, in this order.
  if (r.already_won)
    l.put(" Z");
  if (r.stale)
    l.put(" X");
  if (r.win)
    l.put(" W");
  l.put("\r\n");
  if (v) {
    put_value(l, r, out);
    l.put("\r\n");
  }
  l.flush(out);
}

void compose_ms(const proto::request& req, const storage::op& o, const storage::result& r,
                out_queue& out) {
  std::string_view raw = req.meta.raw;
  const flag_set fl(raw);
  std::string_view code;
  switch (r.st) {
    case status::stored:
      if (fl.has('q'))
        return;
      code = "HD";
      break;
    case status::exists: code = "EX"; break;
    case status::not_found: case status::miss: code = "NF"; break;
    case status::not_stored: code = "NS"; break;
    case status::too_large: case status::no_memory:
      put_text_line(out, error_line(r.st));
      return;
    default:
      put_text_line(out, "SERVER_ERROR Unhandled storage type.");
      return;
  }
  const bool b = fl.has('b');
  line_buf l;
  l.put(code);
  each_token(raw, [&](std::string_view t) {
    switch (t[0]) {
      case 'O': l.put(' '); l.put(t); break;
      case 'k': put_key(l, o.key, b); break;
      case 'c': l.put(" c"); l.num(r.st == status::stored ? r.cas : 0); break;
      default: break;
    }
  });
  end_line(l, out);
}

void compose_md(const proto::request& req, const storage::op& o, const storage::result& r,
                out_queue& out) {
  std::string_view raw = req.meta.raw;
  const flag_set fl(raw);
  std::string_view code;
  switch (r.st) {
    case status::deleted: case status::hit: case status::stored: case status::ok:
      if (fl.has('q'))
        return;
      code = "HD";
      break;
    case status::exists: code = "EX"; break;
    case status::no_memory: case status::too_large:
      put_text_line(out, error_line(r.st));
      return;
    default: code = "NF"; break;
  }
  line_buf l;
  l.put(code);
  put_opaque_key(l, raw, o.key, fl.has('b'));
  end_line(l, out);
}

void compose_ma(const proto::request& req, const storage::op& o, const storage::result& r,
                out_queue& out, uint32_t now) {
  std::string_view raw = req.meta.raw;
  const flag_set fl(raw);
  const bool b = fl.has('b');
  line_buf l;
  switch (r.st) {
    case status::hit: case status::stored: {
      // q elides the reply to an existing counter; memcached still answers when N created it
      // (a shard reports that creation as `stored`).
      if (fl.has('q') && r.st == status::hit)
        return;
      char num[24];
      size_t nlen = static_cast<size_t>(std::to_chars(num, num + sizeof(num), r.number).ptr - num);
      const bool v = fl.has('v');
      if (v) {
        l.put("VA ");
        l.num(nlen);
      } else {
        l.put("HD");
      }
      each_flag_with_ttl(raw, r, r.st == status::stored, now, [&](std::string_view t, uint32_t exptime) {
        switch (t[0]) {
          case 'c': l.put(" c"); l.num(r.cas); break;
          case 't': l.put(" t"); put_ttl(l, exptime, now); break;
          case 'O': l.put(' '); l.put(t); break;
          case 'k': put_key(l, o.key, b); break;
          default: break;
        }
      });
      if (v) {
        l.put("\r\n");
        l.put(std::string_view(num, nlen));
      }
      end_line(l, out);
      return;
    }
    case status::non_numeric:
      put_text_line(out, "CLIENT_ERROR cannot increment or decrement non-numeric value");
      return;
    case status::no_memory:
      put_text_line(out, "SERVER_ERROR out of memory");
      return;
    case status::exists: l.put("EX"); break;
    case status::not_stored: l.put("NS"); break;
    default: l.put("NF"); break;
  }
  put_opaque_key(l, raw, o.key, b);
  end_line(l, out);
}

void compose_me(const proto::request& req, const storage::op& o, const storage::result& r,
                out_queue& out, uint32_t now) {
  if (r.st != status::hit) {
    out.bytes("EN\r\n");
    return;
  }
  line_buf l;
  l.put("ME ");
  bool b = false;
  each_token(req.meta.raw, [&, first = true](std::string_view t) mutable {
    if (first)
      b = t == "b";
    first = false;
  });
  if (b) {
    std::string enc;
    proto::base64_encode(o.key, enc);
    l.put(enc);
  } else {
    l.put(o.key);
  }
  // memcached prints exp as (now - exptime): negative while the item is alive.
  l.put(" exp=");
  l.snum(r.exptime == 0 ? -1 : static_cast<int64_t>(now) - static_cast<int64_t>(r.exptime));
  l.put(" la=");
  l.num(now > r.last_access ? now - r.last_access : 0);
  l.put(" cas=");
  l.num(r.cas);
  l.put(r.fetched ? " fetch=yes" : " fetch=no");
  // ITEM_ntotal: header with CAS (56) + key + NUL + client flags (4, when non-zero) + value + \r\n
  uint64_t ntotal = 56 + o.key.size() + 1 + (r.flags ? 4 : 0) + r.value_size + 2;
  l.put(" cls=");
  l.num(slab_class(ntotal));
  l.put(" size=");
  l.num(ntotal);
  end_line(l, out);
}

}  // namespace

// -- public API ---------------------------------------------------------------------------------

plan_result plan(const proto::request& req, std::vector<storage::op>& ops) {
  ops.clear();
  switch (req.cmd) {
    case command::get: case command::gets: case command::gat: case command::gats: {
      const bool touch = req.cmd == command::gat || req.cmd == command::gats;
      ops.reserve(req.keys.size());
      for (auto k : req.keys) {
        storage::op& o = ops.emplace_back();
        o.kind = op_kind::get;
        o.key.assign(k.data(), k.size());
        o.keep_token = true;
        if (touch) {
          o.get_touch = true;
          o.ttl = req.exptime;
        }
      }
      return {};  // "gat 10" (no key) plans nothing and answers END, like memcached
    }
    case command::set: case command::add: case command::replace: case command::append:
    case command::prepend: case command::cas: {
      if (req.keys.empty())
        return error_result("ERROR");
      storage::op& o = ops.emplace_back();
      o.kind = op_kind::store;
      o.key.assign(req.keys[0].data(), req.keys[0].size());
      o.value.assign(req.data.data(), req.data.size());
      o.flags = req.flags;
      o.ttl = req.exptime;
      switch (req.cmd) {
        case command::add: o.mode = storage::store_mode::add; break;
        case command::replace: o.mode = storage::store_mode::replace; break;
        case command::append: o.mode = storage::store_mode::append; break;
        case command::prepend: o.mode = storage::store_mode::prepend; break;
        case command::cas:
          o.mode = storage::store_mode::cas;
          o.compare_cas = req.cas_unique;
          break;
        default: o.mode = storage::store_mode::set; break;
      }
      return {};
    }
    case command::delete_: case command::incr: case command::decr: case command::touch: {
      if (req.keys.empty())
        return error_result("ERROR");
      storage::op& o = ops.emplace_back();
      o.key.assign(req.keys[0].data(), req.keys[0].size());
      if (req.cmd == command::delete_) {
        o.kind = op_kind::remove;
      } else if (req.cmd == command::touch) {
        o.kind = op_kind::touch;
        o.ttl = req.exptime;
      } else {
        o.kind = op_kind::arith;
        o.incr = req.cmd == command::incr;
        o.delta = req.delta;
      }
      return {};
    }
    case command::flush_all: case command::version: case command::verbosity:
    case command::cache_memlimit:
    case command::stats: case command::quit: case command::mn: {
      plan_result r;
      r.k = plan_result::kind::local;
      return r;
    }
    case command::mg: case command::ms: case command::md: case command::ma:
      return plan_meta(req, ops);
    case command::me: {
      if (req.keys.empty())
        return error_result(err_format);
      storage::op& o = ops.emplace_back();
      o.kind = op_kind::get;
      o.get_value = false;
      o.get_bump = false;
      o.keep_token = true;
      o.counts = storage::op::counting::nothing;  // (memcached counts no hit nor miss for it)
      // memcached's `me` only looks at a "b" right after the key and ignores anything else.
      bool b = false;
      each_token(req.meta.raw, [&, first = true](std::string_view t) mutable {
        if (first)
          b = t == "b";
        first = false;
      });
      if (b) {
        if (!proto::base64_decode(req.keys[0], o.key) || o.key.empty()) {
          ops.clear();
          return error_result(err_format);
        }
      } else {
        o.key.assign(req.keys[0].data(), req.keys[0].size());
      }
      return {};
    }
    case command::none:
      break;
  }
  return error_result("ERROR");
}

void compose(const proto::request& req, const std::vector<storage::op>& ops,
             const std::vector<storage::result>& results, out_queue& out) {
  compose(req, ops, results, out, static_cast<uint32_t>(std::time(nullptr)));
}

void compose_get_values(const proto::request& req, const std::vector<storage::op>& ops,
                        const std::vector<storage::result>& results, out_queue& out) {
  compose_get(req, ops, results, out, false);
}

void compose(const proto::request& req, const std::vector<storage::op>& ops,
             const std::vector<storage::result>& results, out_queue& out, uint32_t now) {
  switch (req.cmd) {
    case command::get: case command::gets: case command::gat: case command::gats:
      compose_get(req, ops, results, out);
      return;
    default:
      break;
  }
  if (ops.empty())
    return;  // local commands are answered by the connection
  static const storage::result missing{};  // a result that never came: answer as a miss
  const storage::result& r = results.empty() ? missing : results[0];
  const storage::op& o = ops[0];
  switch (req.cmd) {
    case command::mg: compose_mg(req, o, r, out, now); return;
    case command::ms: compose_ms(req, o, r, out); return;
    case command::md: compose_md(req, o, r, out); return;
    case command::ma: compose_ma(req, o, r, out, now); return;
    case command::me: compose_me(req, o, r, out, now); return;
    default: compose_text_single(req, r, out); return;
  }
}

std::string_view error_line(storage::status st) noexcept {
  switch (st) {
    case status::too_large: return "SERVER_ERROR object too large for cache";
    case status::no_memory: return "SERVER_ERROR out of memory storing object";
    default: return {};
  }
}

}  // namespace bifrost::actors
