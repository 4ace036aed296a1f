// memcached text and meta protocol: a pure, incremental request parser.
//
// No I/O, no allocation in steady state (a `request` is reused; its key vector keeps its
// capacity), no exceptions. Views in a parsed `request` point into the caller's buffer and
// are valid until the caller discards or moves those bytes.
//
// Contract of parse():
// - ok:         `req` holds one whole request (command line and, for storage commands, its
//               data block); `consumed` bytes of the input belong to it.
// - incomplete: more bytes are needed; nothing is consumed and `req` is unspecified. `need`
//               is the minimum total input length that can complete the request when known
//               (a storage command waiting for its data block), else 0. Feeding the same
//               bytes plus more later gives the same result as feeding them all at once.
// - error:      the request is malformed; `error` is the exact response line to send, without
//               "\r\n" (e.g. "CLIENT_ERROR bad command line format", "ERROR",
//               "CLIENT_ERROR bad data chunk", "SERVER_ERROR object too large for cache").
//               Drop `consumed` bytes, then discard `swallow` more bytes as they arrive
//               (the data block of an oversized item), then continue parsing.
//               `req.command`/`req.keys` are set when known (a too-large `set` must also
//               remove the key's old value, as memcached does).
// - too_long:   unrecoverable: a line of more than 2048 bytes without a newline that is not
//               a get-family command. Nothing after it can be parsed: the connection must be
//               closed (memcached: after answering the requests before it). Like memcached,
//               only "get " / "gets " (after at most 100 spaces) may be longer; "gat"/"gats"
//               lines are closed too.
// - close:      an HTTP request line (last token "HTTP/..."): memcached hangs up at once,
//               its guard against a web client talking to the memcached port.
// Limits follow memcached 1.6: keys of at most 250 bytes (spaces cannot occur, they separate
// tokens; control characters are accepted, see below); data length a non-negative 32-bit
// integer; `max_item_size` bounds the data block.
//
// Exact memcached 1.6.18 behaviours mirrored (verified against the real server; see
// tests/protocol/test_memcache.cpp for the probe transcripts):
// - Lines end at "\n"; one "\r" before it is stripped. Tokens are separated by spaces only
//   (a tab is part of a token). The line is cut at its first NUL byte (memcached strlen()s it).
// - The text protocol does NOT reject control characters in keys (memcached stores
//   "a\x01b"); only the length (<= 250) is checked. `valid_key` is the stricter helper.
// - Numbers are read like memcached's safe_strtol/strtoul/strtoull on 64-bit Linux,
//   including their quirks: values wrap to 32 bits ("set k 4294967296 0 1" stores flags 0,
//   a length of 4294967297 means 1), "+5" and "5\t" are accepted, "-1" is rejected for
//   unsigned fields, and 2^64 overflows.
// - noreply on an error: memcached's out_string() honours noreply, so when parse() returns
//   an error with `req.noreply` set (classic commands only: "set k 0 0 noreply", a bad data
//   chunk after "set ... noreply", a too-large "set ... noreply"), memcached sends nothing.
//   Meta errors are always sent (req.noreply stays false; the `q` flag is in req.meta).
// - Meta flags are validated like memcached's _meta_flag_preparse(): unknown flag
//   ("CLIENT_ERROR invalid flag"), duplicate flag or a flag byte >= 127 ("CLIENT_ERROR
//   duplicate flag"), bad numeric tokens, M token length, base64 key (`b`), opaque length,
//   and the ms/ma mode letter, with memcached's per-command error strings; an ms with a
//   parseable length swallows its data block after such errors, exactly like memcached.
//   Semantic use of the tokens (TTL, CAS compare, ...) is the caller's.
// - Deliberate differences: (1) a non-get line is closed as soon as 2049 bytes precede its
//   "\n" even if the "\n" arrived in the same read (memcached only closes when its buffer
//   holds > 2048 bytes without any "\n", which depends on packet boundaries; this keeps
//   parsing independent of fragmentation); (2) "too large" compares the data length with
//   `max_item_size` (memcached compares the whole item including its ~50-byte header and key);
//   (3) admin commands bifrost does not implement (slabs, lru, lru_crawler, watch,
//   cache_memlimit, extstore) answer "ERROR"; "shutdown" answers memcached's default
//   "ERROR: shutdown not enabled"; the legacy "bget" parses as get.
#pragma once

#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bifrost::proto {

inline constexpr size_t max_key_length = 250;
inline constexpr size_t max_line_length = 2048;
inline constexpr size_t max_tokens = 24;            // memcached MAX_TOKENS (incl. terminal)
inline constexpr size_t max_meta_tokens = 20;       // memcached MFLAG_MAX_OPT_LENGTH
inline constexpr size_t max_opaque_length = 32;     // O token incl. the 'O' (MFLAG_MAX_OPAQUE_LENGTH)

enum class command : uint8_t {
  none,
  // classic text
  get, gets, gat, gats,
  set, add, replace, append, prepend, cas,
  delete_, incr, decr, touch,
  flush_all, version, verbosity, stats, quit, cache_memlimit,
  // meta
  mg, ms, md, ma, mn, me,
};

/// Meta command flags: one bit per flag letter, and the token that followed the letter.
// actors/connection.cpp (adopt_line) copies request field by field (meta_flags whole): keep it
// in step with new fields.
struct meta_flags {
  uint64_t present = 0;  // bit index(c) set when flag c was given
  /// The flags in the order they appeared, as written (for echoing O, k, b... back). Every
  /// token lies in it.
  std::string_view raw;
  /// Where each flag's token (after its letter; may be empty) lies in `raw`: an offset and a
  /// length, not a view (a meta line has at most max_line_length bytes), so that a request
  /// stays small (52 views made it 1 KiB, held by every request waiting for its reply) and
  /// moving the line moves the tokens with `raw`. Empty unless the flag is present.
  struct span {
    uint16_t off = 0;
    uint16_t len = 0;
  };
  std::array<span, 52> at{};

  static constexpr int index(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? c - 'A' : (c >= 'a' && c <= 'z') ? 26 + (c - 'a') : -1;
  }
  bool has(char c) const noexcept {
    int i = index(c);
    return i >= 0 && (present >> i) & 1;
  }
  std::string_view get(char c) const noexcept {
    int i = index(c);
    if (i < 0)
      return {};
    const span s = at[static_cast<size_t>(i)];
    return s.len == 0 ? std::string_view{} : std::string_view(raw.data() + s.off, s.len);
  }
  /// Records flag `i`'s token `arg`, which lies in `raw`.
  void set(int i, std::string_view arg) noexcept {
    assert(arg.data() >= raw.data() && arg.data() + arg.size() <= raw.data() + raw.size());
    at[static_cast<size_t>(i)] = {static_cast<uint16_t>(arg.data() - raw.data()),
                                  static_cast<uint16_t>(arg.size())};
  }

  void clear() noexcept;
};
static_assert(max_line_length < 65536, "meta_flags::span holds offsets in a line");

struct request {
  command cmd = command::none;
  std::vector<std::string_view> keys;  // get/gets/gat/gats: all keys; others: keys[0]
                                       // (gat/gats may have none: "gat 10" answers "END";
                                       // meta with `b`: the key as sent, still base64)
  std::string_view data;               // storage commands / ms: the data block (no \r\n)
  uint32_t flags = 0;                  // set-family client flags
  int64_t exptime = 0;                 // set-family, touch, gat(s): raw exptime
  uint64_t cas_unique = 0;             // cas
  uint64_t delta = 0;                  // incr/decr
  int64_t delay = 0;                   // flush_all [delay]; verbosity level
  bool has_delay = false;              // flush_all had an explicit delay argument
  bool noreply = false;                // text: trailing "noreply"
  std::string_view stats_arg;          // stats <arg> (e.g. "settings"); empty for general;
                                       // everything after "stats", trimmed ("detail on")
  meta_flags meta;                     // meta commands
  std::string_view line;               // the whole command line without \r\n (forwarding)

  void clear() noexcept;
};

enum class parse_status : uint8_t { ok, incomplete, error, too_long, close };

/// What `stats <arg>` asks for, decided memcached's way (proto_text.c process_stat): by the
/// first word of `request::stats_arg`, case-sensitive; words after it are ignored unless the
/// subcommand reads them (detail's on|off|dump, cachedump's class and limit).
enum class stats_kind : uint8_t {
  general,      // `stats`
  reset,        // `stats reset`: RESET
  settings,     // `stats settings`
  slab_list,    // `stats items|slabs`: per slab class (a segment store has none)
  sizes,        // `stats sizes`: "STAT sizes_status disabled" (memcached without track_sizes)
  cachedump,    // `stats cachedump <class> <limit>`, both valid: the class's keys (none)
  detail_on,    // `stats detail on`: OK
  detail_off,   // `stats detail off`: OK
  detail_dump,  // `stats detail dump`: PREFIX lines, END
  conns,        // `stats conns`
  refused,      // a known subcommand with bad arguments: `stats_query::error`
  unknown,      // anything else: ERROR
};
struct stats_query {
  stats_kind kind = stats_kind::general;
  std::string_view error;  // refused: memcached's reply line, without \r\n
};
/// Pure.
stats_query classify_stats(std::string_view arg) noexcept;

/// The error of a data block over the max item size: the only refusal after which memcached
/// removes the key's old value (a set, or an ms in any mode), so no stale value outlives it.
inline constexpr std::string_view too_large_error = "SERVER_ERROR object too large for cache";
/// The error of a data block not followed by "\r\n" (memcached counts the set in cmd_set).
inline constexpr std::string_view bad_chunk_error = "CLIENT_ERROR bad data chunk";

struct parse_result {
  parse_status status = parse_status::incomplete;
  size_t consumed = 0;
  size_t need = 0;
  size_t swallow = 0;
  std::string_view error;  // static string; valid forever
};

struct parser_config {
  uint64_t max_item_size = 1ull << 20;  // data blocks above this: SERVER_ERROR object too large
};

/// Parses the first request in `in`. Pure: the same input always gives the same output.
parse_result parse(std::string_view in, request& req, const parser_config& cfg = {}) noexcept;

/// memcached's binary protocol is not served. A connection whose first byte is the binary
/// request magic is answered once in that protocol and closed, so a binary client fails at
/// once with "not supported" instead of waiting for a reply to a request the text parser
/// would never see end.
inline constexpr unsigned char binary_request_magic = 0x80;
/// The 24-byte binary response header the binary protocol needs before it can be answered.
inline constexpr size_t binary_header_size = 24;
/// That answer to the binary request whose header begins `in` (at least binary_header_size
/// bytes, or what arrived before the client stopped sending): status 0x83 "not supported",
/// the request's opcode and opaque echoed, the reason as the body. Pure.
std::string binary_not_supported(std::string_view in);

/// A connection that begins with a Cap'n Proto message (bifrostctl, or a node's RPC, dialled
/// at the memcached port: a segment table of one segment, four zero bytes, then its size in
/// words, 1..2^24, little endian) or a TLS handshake record (0x16 0x03 0x00..0x04) is no
/// memcached client: it is answered with foreign_protocol_error and closed at once. memcached
/// would wait for a newline that never comes, and bifrostctl for an answer until its
/// --timeout. (A line of NULs is not such a table: "\0\0\0\r\n" answers ERROR, as memcached.)
enum class foreign { no, yes, maybe /* too few bytes yet to tell */ };
foreign foreign_protocol(std::string_view first_bytes) noexcept;
inline constexpr std::string_view foreign_protocol_error =
  "SERVER_ERROR this is a memcached port: bifrostctl and cluster nodes use the node's RPC port "
  "(--rpc-port)";

/// What the first bytes of a connection to a node's RPC port (--rpc-port) are. Cap'n Proto
/// begins every message with its segment count less one, 0..511, as 4 bytes little endian:
/// such a start is `rpc`, and so is anything neither text nor HTTP (`other`: Cap'n Proto
/// refuses it in its own way). A first line of printable ASCII is a person or a memcached
/// client at the wrong port (`text`), or a web client (`http`: its last token "HTTP/…", as
/// the memcached parser's `close`); it is answered with rpc_port_answer and closed, where
/// Cap'n Proto would answer in binary (or wait for the 8 bytes of a segment table). `maybe`:
/// too few bytes yet to tell, at most rpc_greeting_max of them. Once not `maybe`, every longer
/// prefix gets the same answer.
enum class rpc_greeting { maybe, rpc, text, http, other };
rpc_greeting rpc_greeting_of(std::string_view first_bytes) noexcept;
/// The most bytes rpc_greeting_of waits for: a text line longer than this without a newline is
/// `text`.
inline constexpr size_t rpc_greeting_max = 1024;
/// The answer to a `text` or `http` greeting (an HTTP 400 for `http`, a SERVER_ERROR line for
/// `text`), naming the node's memcached address when it is known (not empty).
std::string rpc_port_answer(rpc_greeting kind, std::string_view memcached_address);

/// True when `s` is non-empty and has no control character or space (memcached's key bytes;
/// also what a node name must be).
bool printable_token(std::string_view s) noexcept;

/// True when `key` is a valid memcached key (1..250 bytes, a printable_token).
bool valid_key(std::string_view key) noexcept;

/// Decodes base64 (meta `b` flag) exactly like memcached's base64_decode(): characters
/// outside the alphabet are skipped, the alphabet characters must come in groups of four,
/// decoding stops after the first padded group. Replaces `out`. Returns false on malformed
/// input or an empty result (memcached treats both as "error decoding key").
bool base64_decode(std::string_view in, std::string& out);
/// Allocation-free variant: writes at most `in.size()` bytes to `out`; returns the decoded
/// length, 0 on failure.
size_t base64_decode(std::string_view in, char* out) noexcept;
/// Encodes base64 into `out` (appending).
void base64_encode(std::string_view in, std::string& out);

/// memcached's number readers (util.c safe_strtol/safe_strtoul/safe_strtoull on LP64), for
/// callers that interpret meta tokens: leading whitespace and a sign are accepted, the
/// digits must be followed by whitespace or the end of the token, results wrap to the
/// output width (strtol/strtoul produce 64-bit values that are then truncated), and the
/// unsigned readers reject a '-' only when the 64-bit value looks negative.
bool safe_strtol(std::string_view tok, int32_t& out) noexcept;
bool safe_strtoul(std::string_view tok, uint32_t& out) noexcept;
bool safe_strtoull(std::string_view tok, uint64_t& out) noexcept;

} // namespace bifrost::proto
