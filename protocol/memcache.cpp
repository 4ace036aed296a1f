// memcached text + meta request parser. See memcache.hpp for the contract and the list of
// memcached 1.6.18 behaviours mirrored here; the comments below name the memcached
// function (proto_text.c) each piece follows.
#include "protocol/memcache.hpp"

#include <climits>
#include <cstring>
#include <string>

namespace bifrost::proto {

namespace {

// ---------------------------------------------------------------------------------------
// Error strings (exactly as memcached sends them, without "\r\n").
constexpr std::string_view k_error = "ERROR";
constexpr std::string_view k_bad_format = "CLIENT_ERROR bad command line format";
constexpr std::string_view k_bad_chunk = bad_chunk_error;
constexpr std::string_view k_too_large = too_large_error;
constexpr std::string_view k_bad_delta = "CLIENT_ERROR invalid numeric delta argument";
constexpr std::string_view k_bad_exptime = "CLIENT_ERROR invalid exptime argument";
constexpr std::string_view k_delete_usage =
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
constexpr std::string_view k_shutdown = "ERROR: shutdown not enabled";
constexpr std::string_view k_dup_flag = "CLIENT_ERROR duplicate flag";
constexpr std::string_view k_invalid_flag = "CLIENT_ERROR invalid flag";
constexpr std::string_view k_bad_token = "CLIENT_ERROR bad token in command line format";
constexpr std::string_view k_m_length = "CLIENT_ERROR incorrect length for M token";
constexpr std::string_view k_bad_initial = "CLIENT_ERROR invalid numeric initial value";
constexpr std::string_view k_bad_delta_value = "CLIENT_ERROR invalid numeric delta value";
constexpr std::string_view k_decode_key = "CLIENT_ERROR error decoding key";
constexpr std::string_view k_mg_too_long = "CLIENT_ERROR options flags are too long";
constexpr std::string_view k_flags_too_long = "CLIENT_ERROR options flags too long";
constexpr std::string_view k_opaque_too_long = "CLIENT_ERROR opaque token too long";
constexpr std::string_view k_invalid_or_dup = "CLIENT_ERROR invalid or duplicate flag";
constexpr std::string_view k_ms_mode = "CLIENT_ERROR invalid mode for ms M token";
constexpr std::string_view k_ma_mode = "CLIENT_ERROR invalid mode for ma M token";

// An HTTP request line ("GET / HTTP/1.1"): its last token, trailing spaces aside, begins with
// "HTTP/". `line` is without its CR LF.
bool http_request_line(std::string_view line) {
  line = line.substr(0, line.find_last_not_of(' ') + 1);  // (npos + 1: empty)
  return line.substr(line.find_last_of(' ') + 1).substr(0, 5) == "HTTP/";
}

constexpr size_t k_long_get_max_spaces = 100;  // try_read_command_ascii

// ---------------------------------------------------------------------------------------
// Numbers: glibc strtol/strtoul/strtoull (base 10, C locale) as used by memcached's util.c.

inline bool c_isspace(unsigned char c) noexcept { return c == ' ' || (c >= '\t' && c <= '\r'); }

struct scanned {
  bool ok = false;        // digits found and followed by whitespace or the end (safe_* rule)
  bool neg = false;
  bool overflow = false;  // magnitude does not fit in 64 bits
  uint64_t mag = 0;
};

scanned scan_number(std::string_view s) noexcept {
  scanned r;
  size_t i = 0, n = s.size();
  // Fast path: 1..19 plain digits cannot overflow 64 bits.
  if (n - 1 < 19) {
    uint64_t v = 0;
    for (; i < n; ++i) {
      unsigned d = static_cast<unsigned char>(s[i]) - '0';
      if (d > 9) break;
      v = v * 10 + d;
    }
    if (i == n) {
      r.ok = true;
      r.mag = v;
      return r;
    }
    i = 0;
  }
  while (i < n && c_isspace(static_cast<unsigned char>(s[i]))) ++i;
  if (i < n && (s[i] == '+' || s[i] == '-')) {
    r.neg = s[i] == '-';
    ++i;
  }
  size_t d0 = i;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; ++i) {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (r.mag > (UINT64_MAX - d) / 10) r.overflow = true;
    else r.mag = r.mag * 10 + d;
  }
  if (i == d0) return r;  // no digits: endptr == str
  r.ok = i == n || c_isspace(static_cast<unsigned char>(s[i]));
  return r;
}

// strtoul/strtoull on LP64: 64-bit, ERANGE past 2^64-1, negation modulo 2^64.
bool scan_unsigned(std::string_view s, uint64_t& v) noexcept {
  scanned r = scan_number(s);
  if (!r.ok || r.overflow) return false;
  v = r.neg ? (~r.mag + 1) : r.mag;
  // "only check for negative signs in the uncommon case when the unsigned number is so big
  // that it's negative as a signed number" -- strchr over the whole token.
  if (static_cast<int64_t>(v) < 0 && s.find('-') != std::string_view::npos) return false;
  return true;
}

bool starts_with(std::string_view s, std::string_view p) noexcept {
  return s.size() >= p.size() && std::memcmp(s.data(), p.data(), p.size()) == 0;
}

// First ' ' in [p, end), or end. Eight bytes at a time (SWAR) while they are available: keys
// and commands are usually longer than a word.
inline const char* find_space(const char* p, const char* end) noexcept {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  constexpr uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  while (end - p >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    uint64_t x = v ^ (ones * ' ');
    uint64_t t = (x - ones) & ~x & highs;  // lowest set bit marks the first ' ' exactly
    if (t) return p + (__builtin_ctzll(t) >> 3);
    p += 8;
  }
#endif
  while (p < end && *p != ' ') ++p;
  return p;
}

// ---------------------------------------------------------------------------------------
// Tokens: memcached's tokenize_command() with MAX_TOKENS: at most 23 real tokens are
// split out; ntokens counts the terminal token, so ntokens = min(real, 23) + 1.

struct token_list {
  // Left uninitialized on purpose (zeroing 24 views costs more than parsing a get).
  struct tok {
    const char* p;
    size_t n;
  } raw[max_tokens];
  size_t real = 0;  // number of real tokens (<= max_tokens - 1)
  std::string_view t(size_t i) const noexcept { return std::string_view(raw[i].p, raw[i].n); }
  size_t ntokens() const noexcept { return real + 1; }
  std::string_view last() const noexcept { return t(real - 1); }
};

// Splits `line` into at most `cap` tokens appended to `tk`. Returns the offset of the rest.
// Tokens are short: a byte loop beats memchr here.
size_t tokenize(std::string_view line, token_list& tk, size_t cap) noexcept {
  const char* p = line.data();
  const char* end = p + line.size();
  while (p < end && tk.real < cap) {
    while (p < end && *p == ' ') ++p;
    if (p == end) break;
    const char* s = p;
    p = find_space(p, end);
    tk.raw[tk.real++] = {s, static_cast<size_t>(p - s)};
  }
  return static_cast<size_t>(p - line.data());
}

// Appends every token of `rest` to `keys` (the get family has no token limit: memcached
// re-tokenizes the remainder of the line in a loop).
void split_keys(std::string_view rest, std::vector<std::string_view>& keys) {
  const char* p = rest.data();
  const char* end = p + rest.size();
  for (;;) {
    while (p < end && *p == ' ') ++p;
    if (p == end) return;
    const char* s = p;
    p = find_space(p, end);
    keys.emplace_back(s, static_cast<size_t>(p - s));
  }
}

// ---------------------------------------------------------------------------------------
// Results.

parse_result make_error(std::string_view msg, size_t consumed, size_t swallow = 0) noexcept {
  parse_result r;
  r.status = parse_status::error;
  r.consumed = consumed;
  r.swallow = swallow;
  r.error = msg;
  return r;
}

parse_result make_ok(size_t consumed) noexcept {
  parse_result r;
  r.status = parse_status::ok;
  r.consumed = consumed;
  return r;
}

// set_noreply_maybe(): the last real token is exactly "noreply".
bool last_is_noreply(const token_list& tk) noexcept { return tk.last() == "noreply"; }

// ---------------------------------------------------------------------------------------
// Meta flags: _meta_flag_preparse().

struct preparse_out {
  std::string_view err;  // set when the function fails (may stay empty: caller's default)
  char mode = 0;
};

// Records flags tokens[start..real) into req.meta and validates them. Returns false on
// error; `o.err` is the specific string when memcached sets one.
bool meta_preparse(const token_list& tk, size_t start, request& req, preparse_out& o) noexcept {
  uint64_t seen[2] = {0, 0};
  bool has_error = false;
  meta_flags& m = req.meta;
  for (size_t i = start; i < tk.real; ++i) {
    std::string_view tok = tk.t(i);
    unsigned char c = static_cast<unsigned char>(tok[0]);
    if (c >= 127 || (seen[c >> 6] >> (c & 63)) & 1) {
      o.err = k_dup_flag;
      return false;
    }
    seen[c >> 6] |= uint64_t{1} << (c & 63);
    std::string_view arg = tok.substr(1);
    switch (c) {
      case 'b': {
        char buf[max_key_length + 4];
        std::string_view key = tk.t(1);  // <= 250 bytes, checked by the caller
        if (base64_decode(key, buf) == 0) {
          o.err = k_decode_key;
          has_error = true;
        }
        break;
      }
      case 'N': case 'T': case 'R': {
        int32_t v;
        if (!safe_strtol(arg, v)) {
          o.err = k_bad_token;
          has_error = true;
        }
        break;
      }
      case 'l': case 'O': case 'P': case 'L': case 'k': case 's': case 't': case 'c':
      case 'f': case 'v': case 'h': case 'u': case 'q': case 'I':
        break;
      case 'F': {
        uint32_t v;
        if (!safe_strtoul(arg, v)) has_error = true;  // errstr left as the default
        break;
      }
      case 'C':
      case 'E': {  // (E: newer 1.6, explicit CAS for the item written; 1.6.18: invalid flag)
        uint64_t v;
        if (!safe_strtoull(arg, v)) {
          o.err = k_bad_token;
          has_error = true;
        }
        break;
      }
      case 'M':
        if (tok.size() != 2) {
          o.err = k_m_length;
          has_error = true;
        } else {
          o.mode = tok[1];
        }
        break;
      case 'J': {
        uint64_t v;
        if (!safe_strtoull(arg, v)) {
          o.err = k_bad_initial;
          has_error = true;
        }
        break;
      }
      case 'D': {
        uint64_t v;
        if (!safe_strtoull(arg, v)) {
          o.err = k_bad_delta_value;
          has_error = true;
        }
        break;
      }
      default:
        o.err = k_invalid_flag;
        return false;
    }
    int idx = meta_flags::index(static_cast<char>(c));  // every accepted flag is a letter
    m.present |= uint64_t{1} << idx;
    m.set(idx, arg);
  }
  return !has_error;
}

void set_meta_raw(const token_list& tk, size_t start, request& req) noexcept {
  if (start >= tk.real) return;
  const char* b = tk.t(start).data();
  std::string_view last = tk.t(tk.real - 1);
  req.meta.raw = std::string_view(b, static_cast<size_t>(last.data() + last.size() - b));
}

// Any O token longer than MFLAG_MAX_OPAQUE_LENGTH (the length includes the 'O').
bool opaque_too_long(const token_list& tk, size_t start) noexcept {
  for (size_t i = start; i < tk.real; ++i)
    if (tk.t(i)[0] == 'O' && tk.t(i).size() > max_opaque_length) return true;
  return false;
}

// ---------------------------------------------------------------------------------------
// Commands.

enum class cmd_id : uint8_t {
  unknown, get, gets, gat, gats, set, add, replace, append, prepend, cas, delete_, incr, decr,
  touch, flush_all, version, verbosity, stats, quit, shutdown, mg, ms, md, ma, mn, me,
  cache_memlimit,
};

// process_command_ascii(): the command token must match exactly.
cmd_id identify(std::string_view c) noexcept {
  if (c.size() < 2) return cmd_id::unknown;
  if (c[0] == 'm' && c.size() == 2) {
    switch (c[1]) {
      case 'g': return cmd_id::mg;
      case 's': return cmd_id::ms;
      case 'd': return cmd_id::md;
      case 'a': return cmd_id::ma;
      case 'n': return cmd_id::mn;
      case 'e': return cmd_id::me;
      default: return cmd_id::unknown;
    }
  }
  switch (c.size()) {
    case 3:
      if (c == "get") return cmd_id::get;
      if (c == "set") return cmd_id::set;
      if (c == "gat") return cmd_id::gat;
      if (c == "add") return cmd_id::add;
      if (c == "cas") return cmd_id::cas;
      break;
    case 4:
      if (c == "gets") return cmd_id::gets;
      if (c == "gats") return cmd_id::gats;
      if (c == "incr") return cmd_id::incr;
      if (c == "decr") return cmd_id::decr;
      if (c == "quit") return cmd_id::quit;
      if (c == "bget") return cmd_id::get;
      break;
    case 5:
      if (c == "touch") return cmd_id::touch;
      if (c == "stats") return cmd_id::stats;
      break;
    case 6:
      if (c == "delete") return cmd_id::delete_;
      if (c == "append") return cmd_id::append;
      break;
    case 7:
      if (c == "replace") return cmd_id::replace;
      if (c == "prepend") return cmd_id::prepend;
      if (c == "version") return cmd_id::version;
      break;
    case 8:
      if (c == "shutdown") return cmd_id::shutdown;
      break;
    case 9:
      if (c == "flush_all") return cmd_id::flush_all;
      if (c == "verbosity") return cmd_id::verbosity;
      break;
    case 14:
      if (c == "cache_memlimit") return cmd_id::cache_memlimit;
      break;
    default:
      break;
  }
  return cmd_id::unknown;
}

// try_read_command_ascii(): more than 2048 bytes without a newline are only tolerated for
// "get " / "gets " after at most 100 leading spaces.
bool long_line_allowed(std::string_view in) noexcept {
  size_t i = 0;
  while (i < in.size() && in[i] == ' ') ++i;
  if (i > k_long_get_max_spaces) return false;
  std::string_view rest = in.substr(i);
  return starts_with(rest, "get ") || starts_with(rest, "gets ");
}

// Storage commands: process_update_command() + the data block (complete_nread_ascii()).
parse_result parse_update(std::string_view in, size_t line_consumed, const token_list& tk,
                          command cmd, request& req, const parser_config& cfg) noexcept {
  const bool is_cas = cmd == command::cas;
  size_t nt = tk.ntokens();
  if (is_cas ? (nt != 7 && nt != 8) : (nt != 6 && nt != 7))
    return make_error(k_error, line_consumed);
  req.noreply = last_is_noreply(tk);
  req.keys.push_back(tk.t(1));
  if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, line_consumed);
  int32_t exptime = 0, vlen = 0;
  if (!(safe_strtoul(tk.t(2), req.flags) && safe_strtol(tk.t(3), exptime) &&
        safe_strtol(tk.t(4), vlen)))
    return make_error(k_bad_format, line_consumed);
  req.exptime = exptime;
  if (is_cas && !safe_strtoull(tk.t(5), req.cas_unique))
    return make_error(k_bad_format, line_consumed);
  if (vlen < 0 || vlen > INT_MAX - 2) return make_error(k_bad_format, line_consumed);
  size_t len = static_cast<size_t>(vlen);
  if (len > cfg.max_item_size) return make_error(k_too_large, line_consumed, len + 2);
  size_t need = line_consumed + len + 2;
  if (in.size() < need) {
    parse_result r;
    r.need = need;
    return r;
  }
  const char* d = in.data() + line_consumed;
  if (d[len] != '\r' || d[len + 1] != '\n') return make_error(k_bad_chunk, need);
  req.data = std::string_view(d, len);
  return make_ok(need);
}

parse_result parse_meta(std::string_view in, size_t line_consumed, const token_list& tk,
                        cmd_id id, request& req, const parser_config& cfg) noexcept {
  size_t nt = tk.ntokens();
  switch (id) {
    case cmd_id::mn:
      req.cmd = command::mn;
      return make_ok(line_consumed);

    case cmd_id::me: {  // process_meta_command()
      req.cmd = command::me;
      if (nt >= 3) req.keys.push_back(tk.t(1));
      if (nt < 3 || tk.t(1).size() > max_key_length) return make_error(k_bad_format, line_consumed);
      set_meta_raw(tk, 2, req);
      if (nt >= 4 && tk.t(2) == "b") {
        char buf[max_key_length + 4];
        if (base64_decode(tk.t(1), buf) == 0) return make_error(k_bad_format, line_consumed);
        req.meta.present |= uint64_t{1} << meta_flags::index('b');
      }
      return make_ok(line_consumed);
    }

    case cmd_id::mg: {  // process_mget_command()
      req.cmd = command::mg;
      if (nt < 3) return make_error(k_error, line_consumed);
      req.keys.push_back(tk.t(1));
      if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, line_consumed);
      if (nt > max_meta_tokens) return make_error(k_mg_too_long, line_consumed);
      set_meta_raw(tk, 2, req);
      preparse_out o;
      if (!meta_preparse(tk, 2, req, o))
        return make_error(o.err.empty() ? k_bad_format : o.err, line_consumed);
      if (opaque_too_long(tk, 2)) return make_error(k_opaque_too_long, line_consumed);
      return make_ok(line_consumed);
    }

    case cmd_id::md:
    case cmd_id::ma: {  // process_mdelete_command() / process_marithmetic_command()
      req.cmd = id == cmd_id::md ? command::md : command::ma;
      if (nt < 3) return make_error(k_error, line_consumed);
      req.keys.push_back(tk.t(1));
      if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, line_consumed);
      if (nt > max_meta_tokens) return make_error(k_flags_too_long, line_consumed);
      set_meta_raw(tk, 2, req);
      preparse_out o;
      if (!meta_preparse(tk, 2, req, o)) return make_error(k_invalid_or_dup, line_consumed);
      if (id == cmd_id::ma) {
        switch (o.mode) {
          case 0: case 'I': case '+': case 'D': case '-': break;
          default: return make_error(k_ma_mode, line_consumed);
        }
      }
      if (opaque_too_long(tk, 2)) return make_error(k_opaque_too_long, line_consumed);
      return make_ok(line_consumed);
    }

    case cmd_id::ms: {  // process_mset_command()
      req.cmd = command::ms;
      if (nt < 3) return make_error(k_error, line_consumed);
      req.keys.push_back(tk.t(1));
      if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, line_consumed);
      if (nt == 3) return make_error(k_bad_format, line_consumed);
      if (nt > max_meta_tokens) return make_error(k_flags_too_long, line_consumed);
      int32_t vlen = 0;
      if (!safe_strtol(tk.t(2), vlen) || vlen < 0 || vlen > INT_MAX - 2)
        return make_error(k_bad_format, line_consumed);
      size_t len = static_cast<size_t>(vlen);
      // From here on memcached swallows the data block after an error.
      set_meta_raw(tk, 3, req);
      preparse_out o;
      if (!meta_preparse(tk, 3, req, o))
        return make_error(o.err.empty() ? k_bad_format : o.err, line_consumed, len + 2);
      bool has_error = opaque_too_long(tk, 3);
      switch (o.mode) {
        case 0: case 'E': case 'A': case 'P': case 'R': case 'S': break;
        default: return make_error(k_ms_mode, line_consumed, len + 2);
      }
      if (has_error) return make_error(k_opaque_too_long, line_consumed, len + 2);
      if (len > cfg.max_item_size) return make_error(k_too_large, line_consumed, len + 2);
      size_t need = line_consumed + len + 2;
      if (in.size() < need) {
        parse_result r;
        r.need = need;
        return r;
      }
      const char* d = in.data() + line_consumed;
      if (d[len] != '\r' || d[len + 1] != '\n') return make_error(k_bad_chunk, need);
      req.data = std::string_view(d, len);
      return make_ok(need);
    }

    default:
      return make_error(k_error, line_consumed);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------

void meta_flags::clear() noexcept {
  uint64_t bits = present;
  while (bits) {
    int i = __builtin_ctzll(bits);
    at[static_cast<size_t>(i)] = {};
    bits &= bits - 1;
  }
  present = 0;
  raw = {};
}

void request::clear() noexcept {
  cmd = command::none;
  keys.clear();
  data = {};
  flags = 0;
  exptime = 0;
  cas_unique = 0;
  delta = 0;
  delay = 0;
  has_delay = false;
  noreply = false;
  stats_arg = {};
  meta.clear();
  line = {};
}

bool safe_strtoull(std::string_view tok, uint64_t& out) noexcept {
  out = 0;
  uint64_t v;
  if (!scan_unsigned(tok, v)) return false;
  out = v;
  return true;
}

bool safe_strtoul(std::string_view tok, uint32_t& out) noexcept {
  out = 0;
  uint64_t v;
  if (!scan_unsigned(tok, v)) return false;
  out = static_cast<uint32_t>(v);  // *out = l: unsigned long truncated to 32 bits
  return true;
}

bool safe_strtol(std::string_view tok, int32_t& out) noexcept {
  out = 0;
  scanned r = scan_number(tok);
  if (!r.ok || r.overflow) return false;
  // strtol: ERANGE outside [LONG_MIN, LONG_MAX].
  if (!r.neg && r.mag > static_cast<uint64_t>(INT64_MAX)) return false;
  if (r.neg && r.mag > static_cast<uint64_t>(INT64_MAX) + 1) return false;
  uint64_t v = r.neg ? (~r.mag + 1) : r.mag;
  out = static_cast<int32_t>(static_cast<uint32_t>(v));  // *out = l: long truncated to int32
  return true;
}

stats_query classify_stats(std::string_view arg) noexcept {
  // memcached's tokens: words split on spaces (runs of spaces make no empty word).
  std::string_view words[4];
  size_t n = 0;
  for (size_t i = 0; i < arg.size() && n < 4;) {
    if (arg[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = arg.find(' ', i);
    if (end == std::string_view::npos) end = arg.size();
    words[n++] = arg.substr(i, end - i);
    i = end;
  }
  if (n == 0) return {stats_kind::general, {}};
  const std::string_view sub = words[0];
  if (sub == "reset") return {stats_kind::reset, {}};
  if (sub == "settings") return {stats_kind::settings, {}};
  if (sub == "items" || sub == "slabs") return {stats_kind::slab_list, {}};
  if (sub == "sizes") return {stats_kind::sizes, {}};
  if (sub == "conns") return {stats_kind::conns, {}};
  if (sub == "detail") {
    if (words[1] == "on") return {stats_kind::detail_on, {}};
    if (words[1] == "off") return {stats_kind::detail_off, {}};
    if (words[1] == "dump") return {stats_kind::detail_dump, {}};
    return {stats_kind::refused, "CLIENT_ERROR usage: stats detail on|off|dump"};
  }
  if (sub == "cachedump") {
    if (n < 3) return {stats_kind::refused, "CLIENT_ERROR bad command line"};
    uint32_t id = 0, limit = 0;
    if (!safe_strtoul(words[1], id) || !safe_strtoul(words[2], limit))
      return {stats_kind::refused, "CLIENT_ERROR bad command line format"};
    if (id >= 64)  // memcached's MAX_NUMBER_OF_SLAB_CLASSES
      return {stats_kind::refused, "CLIENT_ERROR Illegal slab id"};
    return {stats_kind::cachedump, {}};
  }
  return {stats_kind::unknown, {}};
}

foreign foreign_protocol(std::string_view in) noexcept {
  const auto at = [&](size_t i) { return static_cast<unsigned char>(in[i]); };
  if (in.empty())
    return foreign::maybe;
  if (at(0) == 0x16) {  // TLS: record type handshake, version 3.x
    if (in.size() < 3)
      return in.size() < 2 || at(1) == 0x03 ? foreign::maybe : foreign::no;
    return at(1) == 0x03 && at(2) <= 0x04 ? foreign::yes : foreign::no;
  }
  for (size_t i = 0; i < 4 && i < in.size(); ++i)  // one segment
    if (at(i) != 0)
      return foreign::no;
  // A newline in the table's 8 bytes ends a line of NULs (memcached's ERROR), however the
  // bytes arrive.
  if (in.substr(0, 8).find('\n') != std::string_view::npos)
    return foreign::no;
  if (in.size() < 8)
    return foreign::maybe;
  const uint32_t words = uint32_t(at(4)) | uint32_t(at(5)) << 8 | uint32_t(at(6)) << 16 |
                         uint32_t(at(7)) << 24;
  return words >= 1 && words <= (1u << 24) ? foreign::yes : foreign::no;
}

rpc_greeting rpc_greeting_of(std::string_view in) noexcept {
  const auto at = [&](size_t i) { return static_cast<unsigned char>(in[i]); };
  // Cap'n Proto's segment count: bytes 1..3 of at most 0x000001ff.
  bool table = true;
  for (size_t i = 1; i < 4 && i < in.size(); ++i)
    table = table && at(i) <= (i == 1 ? 1 : 0);
  if (table)
    return in.size() < 4 ? rpc_greeting::maybe : rpc_greeting::rpc;
  // The first line, up to a newline in the first rpc_greeting_max bytes, or those bytes
  // (fixed once they arrived: later bytes change nothing): printable ASCII and tabs, and a CR
  // right before the newline.
  const std::string_view head = in.substr(0, rpc_greeting_max);
  const size_t newline = head.find('\n');
  const bool whole = newline != std::string_view::npos || head.size() == rpc_greeting_max;
  const std::string_view line = head.substr(0, newline);
  for (size_t i = 0; i < line.size(); ++i) {
    const unsigned char c = at(i);
    if (c == '\r' && i + 1 == line.size()) {
      if (newline != std::string_view::npos)
        continue;  // the line's CR LF
      if (!whole)
        return rpc_greeting::maybe;  // its newline may come next
    }
    if ((c < ' ' && c != '\t') || c >= 0x7f)
      return rpc_greeting::other;
  }
  if (!whole)
    return rpc_greeting::maybe;
  const bool cr = !line.empty() && line.back() == '\r';
  return http_request_line(line.substr(0, line.size() - cr)) ? rpc_greeting::http
                                                             : rpc_greeting::text;
}

std::string rpc_port_answer(rpc_greeting kind, std::string_view memcached_address) {
  std::string use = "memcached clients use the node's memcached port";
  if (!memcached_address.empty())
    use.append(" (").append(memcached_address).append(")");
  if (kind == rpc_greeting::http) {
    const std::string body = "this is a bifrost node's RPC port (Cap'n Proto, for bifrostctl "
                             "and cluster nodes), not HTTP; " + use + "\n";
    return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }
  return "SERVER_ERROR this is a bifrost node's RPC port (Cap'n Proto, for bifrostctl and "
         "cluster nodes): " + use + "\r\n";
}

std::string binary_not_supported(std::string_view in) {
  static constexpr std::string_view body = "binary protocol not supported: use the text or meta protocol";
  std::string r(binary_header_size, '\0');
  auto at = [&](size_t i) { return i < in.size() ? in[i] : '\0'; };
  r[0] = static_cast<char>(0x81);  // response magic
  r[1] = at(1);                    // opcode
  r[6] = 0x00;                     // status 0x0083: not supported
  r[7] = static_cast<char>(0x83);
  const auto len = static_cast<uint32_t>(body.size());  // total body length, big-endian
  r[8] = static_cast<char>(len >> 24);
  r[9] = static_cast<char>(len >> 16);
  r[10] = static_cast<char>(len >> 8);
  r[11] = static_cast<char>(len);
  for (size_t i = 12; i < 16; ++i)  // opaque
    r[i] = at(i);
  r.append(body);
  return r;
}

bool printable_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (c <= ' ' || c == 0x7f) return false;
  return true;
}

bool valid_key(std::string_view key) noexcept {
  return key.size() <= max_key_length && printable_token(key);
}

// ---------------------------------------------------------------------------------------
// base64 (memcached base64.c semantics).

namespace {
constexpr char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct b64_table {
  unsigned char v[256];
  constexpr b64_table() : v() {
    for (int i = 0; i < 256; ++i) v[i] = 0x80;
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(k_b64[i])] = static_cast<unsigned char>(i);
    v[static_cast<unsigned char>('=')] = 0;
  }
};
constexpr b64_table k_dtable{};
}  // namespace

size_t base64_decode(std::string_view in, char* out) noexcept {
  size_t count = 0;
  for (unsigned char c : in)
    if (k_dtable.v[c] != 0x80) ++count;
  if (count == 0 || count % 4) return 0;
  unsigned char block[4];
  size_t pos = 0;
  int pad = 0;
  count = 0;
  for (unsigned char c : in) {
    unsigned char tmp = k_dtable.v[c];
    if (tmp == 0x80) continue;
    if (c == '=') ++pad;
    block[count++] = tmp;
    if (count == 4) {
      out[pos++] = static_cast<char>((block[0] << 2) | (block[1] >> 4));
      out[pos++] = static_cast<char>((block[1] << 4) | (block[2] >> 2));
      out[pos++] = static_cast<char>((block[2] << 6) | block[3]);
      count = 0;
      if (pad) {
        if (pad == 1) pos -= 1;
        else if (pad == 2) pos -= 2;
        else return 0;  // invalid padding
        break;
      }
    }
  }
  return pos;
}

bool base64_decode(std::string_view in, std::string& out) {
  out.resize(in.size() / 4 * 3 + 3);
  size_t n = base64_decode(in, out.data());
  out.resize(n);
  return n != 0;
}

void base64_encode(std::string_view in, std::string& out) {
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  size_t n = in.size(), i = 0;
  out.reserve(out.size() + (n + 2) / 3 * 4);
  for (; n - i >= 3; i += 3) {
    out.push_back(k_b64[s[i] >> 2]);
    out.push_back(k_b64[((s[i] & 0x03) << 4) | (s[i + 1] >> 4)]);
    out.push_back(k_b64[((s[i + 1] & 0x0f) << 2) | (s[i + 2] >> 6)]);
    out.push_back(k_b64[s[i + 2] & 0x3f]);
  }
  if (n - i == 1) {
    out.push_back(k_b64[s[i] >> 2]);
    out.push_back(k_b64[(s[i] & 0x03) << 4]);
    out.append("==");
  } else if (n - i == 2) {
    out.push_back(k_b64[s[i] >> 2]);
    out.push_back(k_b64[((s[i] & 0x03) << 4) | (s[i + 1] >> 4)]);
    out.push_back(k_b64[(s[i + 1] & 0x0f) << 2]);
    out.push_back('=');
  }
}

// ---------------------------------------------------------------------------------------

parse_result parse(std::string_view in, request& req, const parser_config& cfg) noexcept {
  req.clear();
  const size_t n = in.size();
  if (n == 0) return {};
  const char* p = in.data();

  // try_read_command_ascii(): find the line end. A line of more than 2048 bytes before its
  // "\n" is only allowed for get/gets (see the header for why the "\n" being already present
  // does not matter here).
  const size_t window = n < max_line_length + 1 ? n : max_line_length + 1;
  const char* nl = static_cast<const char*>(std::memchr(p, '\n', window));
  if (!nl) {
    if (n <= max_line_length) return {};
    if (!long_line_allowed(in)) {
      parse_result r;
      r.status = parse_status::too_long;
      return r;
    }
    nl = static_cast<const char*>(std::memchr(p + window, '\n', n - window));
    if (!nl) return {};
  }
  size_t line_len = static_cast<size_t>(nl - p);
  const size_t consumed = line_len + 1;
  if (line_len > 1 && p[line_len - 1] == '\r') --line_len;
  req.line = std::string_view(p, line_len);
  // The command is a C string: it ends at the first NUL.
  if (const void* z = std::memchr(p, '\0', line_len)) line_len = static_cast<size_t>(static_cast<const char*>(z) - p);
  std::string_view line(p, line_len);

  // Command token.
  size_t i = 0;
  while (i < line_len && p[i] == ' ') ++i;
  size_t cstart = i;
  size_t cend = static_cast<size_t>(find_space(p + i, p + line_len) - p);
  std::string_view ctok(p + cstart, cend - cstart);
  cmd_id id = identify(ctok);  // empty line / 1-byte command -> unknown -> ERROR

  switch (id) {
    case cmd_id::get:
    case cmd_id::gets:
    case cmd_id::gat:
    case cmd_id::gats: {  // process_get_command()
      std::string_view rest = line.substr(cend);
      bool touch = id == cmd_id::gat || id == cmd_id::gats;
      req.cmd = id == cmd_id::get    ? command::get
                : id == cmd_id::gets ? command::gets
                : id == cmd_id::gat  ? command::gat
                                     : command::gats;
      if (touch) {
        token_list et;
        et.real = 0;
        size_t off = tokenize(rest, et, 1);
        if (et.real == 0) return make_error(k_error, consumed);  // WANT_TOKENS_MIN(ntokens, 3)
        int32_t e;
        if (!safe_strtol(et.t(0), e)) return make_error(k_bad_exptime, consumed);
        req.exptime = e;
        split_keys(rest.substr(off), req.keys);
      } else {
        split_keys(rest, req.keys);
        if (req.keys.empty()) return make_error(k_error, consumed);
      }
      for (std::string_view k : req.keys)
        if (k.size() > max_key_length) return make_error(k_bad_format, consumed);
      return make_ok(consumed);
    }
    case cmd_id::unknown: {
      // memcached hangs up on an HTTP request line (last token "HTTP/x.y") instead of
      // answering ERROR to each of its lines.
      if (http_request_line(line)) {
        parse_result r;
        r.status = parse_status::close;
        return r;
      }
      return make_error(k_error, consumed);
    }
    default:
      break;
  }

  token_list tk;
  tk.raw[0] = {ctok.data(), ctok.size()};
  tk.real = 1;
  tokenize(line.substr(cend), tk, max_tokens - 1);
  const size_t nt = tk.ntokens();

  switch (id) {
    case cmd_id::set: req.cmd = command::set; return parse_update(in, consumed, tk, req.cmd, req, cfg);
    case cmd_id::add: req.cmd = command::add; return parse_update(in, consumed, tk, req.cmd, req, cfg);
    case cmd_id::replace: req.cmd = command::replace; return parse_update(in, consumed, tk, req.cmd, req, cfg);
    case cmd_id::append: req.cmd = command::append; return parse_update(in, consumed, tk, req.cmd, req, cfg);
    case cmd_id::prepend: req.cmd = command::prepend; return parse_update(in, consumed, tk, req.cmd, req, cfg);
    case cmd_id::cas: req.cmd = command::cas; return parse_update(in, consumed, tk, req.cmd, req, cfg);

    case cmd_id::delete_: {  // process_delete_command()
      req.cmd = command::delete_;
      if (nt < 3 || nt > 5) return make_error(k_error, consumed);
      req.keys.push_back(tk.t(1));
      if (nt > 3) {
        bool hold_is_zero = tk.t(2) == "0";
        bool sets_noreply = req.noreply = last_is_noreply(tk);
        bool valid = (nt == 4 && (hold_is_zero || sets_noreply)) ||
                     (nt == 5 && hold_is_zero && sets_noreply);
        if (!valid) return make_error(k_delete_usage, consumed);
      }
      if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, consumed);
      return make_ok(consumed);
    }

    case cmd_id::incr:
    case cmd_id::decr: {  // process_arithmetic_command()
      req.cmd = id == cmd_id::incr ? command::incr : command::decr;
      if (nt != 4 && nt != 5) return make_error(k_error, consumed);
      req.noreply = last_is_noreply(tk);
      req.keys.push_back(tk.t(1));
      if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, consumed);
      if (!safe_strtoull(tk.t(2), req.delta)) return make_error(k_bad_delta, consumed);
      return make_ok(consumed);
    }

    case cmd_id::touch: {  // process_touch_command()
      req.cmd = command::touch;
      if (nt != 4 && nt != 5) return make_error(k_error, consumed);
      req.noreply = last_is_noreply(tk);
      req.keys.push_back(tk.t(1));
      if (tk.t(1).size() > max_key_length) return make_error(k_bad_format, consumed);
      int32_t e;
      if (!safe_strtol(tk.t(2), e)) return make_error(k_bad_exptime, consumed);
      req.exptime = e;
      return make_ok(consumed);
    }

    case cmd_id::flush_all: {  // process_flush_all_command()
      req.cmd = command::flush_all;
      if (nt < 2 || nt > 4) return make_error(k_error, consumed);
      req.noreply = last_is_noreply(tk);
      if (nt != (req.noreply ? 3u : 2u)) {
        int32_t e;
        if (!safe_strtol(tk.t(1), e)) return make_error(k_bad_exptime, consumed);
        req.delay = e;
        req.has_delay = true;
      }
      return make_ok(consumed);
    }

    case cmd_id::verbosity: {  // process_verbosity_command()
      req.cmd = command::verbosity;
      if (nt != 3 && nt != 4) return make_error(k_error, consumed);
      req.noreply = last_is_noreply(tk);
      uint32_t level;
      if (!safe_strtoul(tk.t(1), level)) return make_error(k_bad_format, consumed);
      req.delay = level;
      return make_ok(consumed);
    }

    case cmd_id::cache_memlimit: {  // process_memlimit_command(): a bad number is "ERROR"
      req.cmd = command::cache_memlimit;
      if (nt != 3 && nt != 4) return make_error(k_error, consumed);
      req.noreply = last_is_noreply(tk);
      uint32_t megabytes;
      if (!safe_strtoul(tk.t(1), megabytes)) return make_error(k_error, consumed);
      req.delay = megabytes;
      return make_ok(consumed);
    }

    case cmd_id::version: req.cmd = command::version; return make_ok(consumed);
    case cmd_id::quit: req.cmd = command::quit; return make_ok(consumed);

    case cmd_id::stats: {
      req.cmd = command::stats;
      std::string_view rest = line.substr(cend);
      size_t b = 0, e = rest.size();
      while (b < e && rest[b] == ' ') ++b;
      while (e > b && rest[e - 1] == ' ') --e;
      req.stats_arg = rest.substr(b, e - b);
      return make_ok(consumed);
    }

    case cmd_id::shutdown: return make_error(k_shutdown, consumed);

    case cmd_id::mg: case cmd_id::ms: case cmd_id::md: case cmd_id::ma:
    case cmd_id::mn: case cmd_id::me:
      return parse_meta(in, consumed, tk, id, req, cfg);

    default:
      return make_error(k_error, consumed);
  }
}

}  // namespace bifrost::proto
