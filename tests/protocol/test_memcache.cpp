// Unit tests for the memcached text/meta request parser (protocol/memcache.hpp).
//
// Expected behaviour was verified against a real memcached 1.6.18 (`memcached -p 22122 -U 0
// -l 127.0.0.1`, probed with python sockets); the comments quote what the server answered
// ("=> ..."). Beyond these hand-written probes, a differential run fed ~13,000 random
// hostile inputs to both this parser (through an empty-cache response emulator) and the
// real server and compared the bytes: the only differences are the deliberate ones listed
// in memcache.hpp (a >2048-byte non-get line that arrives with its "\n" in one read).
//
// Every input parsed through P()/events() is also fed in every fragment size and at every
// split point (or a representative set of sizes for long inputs), accumulating like a
// connection, and must give the same sequence of results (see check_fragmentation()).
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <ostream>
#include <string>
#include <vector>

#include "protocol/memcache.hpp"
#include "protocol/memcache_testing.hpp"

namespace bifrost::proto {
// Printable enums for BOOST_TEST messages.
inline std::ostream& operator<<(std::ostream& os, parse_status s) {
  const char* n[] = {"ok", "incomplete", "error", "too_long", "close"};
  return os << n[static_cast<int>(s)];
}
inline std::ostream& operator<<(std::ostream& os, command c) {
  return os << testing::command_name(c);
}
}  // namespace bifrost::proto

using namespace bifrost::proto;
namespace T = bifrost::proto::testing;
using namespace std::string_literals;

// ---------------------------------------------------------------------------------------
// Allocation counting (for the steady-state allocation-free test).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<long> g_allocs{0};
}
void* operator new(size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (auto& e : v) s += e + "\n";
  return s;
}

// Feeds `s` in many fragmentations and requires the all-at-once result every time.
void check_fragmentation(const std::string& s, const parser_config& cfg) {
  std::string violation;
  const std::string whole = join(T::run_chunks(s, 0, cfg, &violation));
  BOOST_TEST_REQUIRE(violation.empty(), violation);
  std::vector<size_t> sizes;
  if (s.size() <= 300) {
    for (size_t i = 1; i <= s.size(); ++i) sizes.push_back(i);
  } else {
    for (size_t i : {1, 2, 3, 5, 7, 10, 100, 1000, 4096, 65536})
      if (i < s.size() && (i > 1 || s.size() <= 300000)) sizes.push_back(i);
  }
  for (size_t c : sizes) {
    std::string got = join(T::run_chunks(s, c, cfg, &violation));
    BOOST_TEST_REQUIRE(violation.empty(), violation << " (chunk " << c << ")");
    BOOST_TEST_REQUIRE(got == whole, "chunk size " << c << " changed the result for input of "
                                                   << s.size() << " bytes");
  }
  if (s.size() <= 300) {
    for (size_t p = 0; p <= s.size(); ++p) {
      std::string got = join(T::run_splits(s, {p}, cfg, &violation));
      BOOST_TEST_REQUIRE(violation.empty(), violation);
      BOOST_TEST_REQUIRE(got == whole, "split at " << p << " changed the result");
    }
  }
}

struct one {
  std::unique_ptr<std::string> in;  // heap: views stay valid when `one` moves
  parse_result r;
  request req;
};

// Parses the first request of `s` (and checks fragmentation over all of `s`).
one P(std::string s, parser_config cfg = {}) {
  one o;
  o.in = std::make_unique<std::string>(std::move(s));
  o.r = parse(*o.in, o.req, cfg);
  check_fragmentation(*o.in, cfg);
  return o;
}

// All results for `s` fed at once, as describe() strings, one per line.
std::string events(const std::string& s, parser_config cfg = {}) {
  check_fragmentation(s, cfg);
  return join(T::run_chunks(s, 0, cfg));
}

// The first result's error string (or "ok"/"incomplete"/"too_long"/"close").
std::string status_of(const std::string& s, parser_config cfg = {}) {
  one o = P(s, cfg);
  switch (o.r.status) {
    case parse_status::ok: return "ok";
    case parse_status::incomplete: return "incomplete";
    case parse_status::too_long: return "too_long";
    case parse_status::close: return "close";
    case parse_status::error: return std::string(o.r.error);
  }
  return "?";
}

const std::string k_bad_format = "CLIENT_ERROR bad command line format";
const std::string k_key250(250, 'k');
const std::string k_key251(251, 'k');

}  // namespace

// =======================================================================================
BOOST_AUTO_TEST_SUITE(memcache_parse)

BOOST_AUTO_TEST_CASE(get_single_and_multi) {
  auto o = P("get foo\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.r.consumed == 9u);
  BOOST_TEST((o.req.cmd == command::get));
  BOOST_TEST_REQUIRE(o.req.keys.size() == 1u);
  BOOST_TEST(o.req.keys[0] == "foo");
  BOOST_TEST(o.req.line == "get foo");

  o = P("get a bb  ccc \r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST_REQUIRE(o.req.keys.size() == 3u);
  BOOST_TEST(o.req.keys[0] == "a");
  BOOST_TEST(o.req.keys[1] == "bb");
  BOOST_TEST(o.req.keys[2] == "ccc");

  // Bare "\n" ends a line too (memcached: "get foo\n" => END).
  o = P("get foo\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.r.consumed == 8u);
  BOOST_TEST(o.req.keys[0] == "foo");

  // Leading spaces are skipped (" get a" => VALUE ...).
  o = P("   gets x y\r\n");
  BOOST_TEST((o.req.cmd == command::gets));
  BOOST_TEST(o.req.keys.size() == 2u);

  // The ancient "bget" is a get (=> END).
  o = P("bget n\r\n");
  BOOST_TEST((o.req.cmd == command::get));
  BOOST_TEST(o.req.keys[0] == "n");
}

BOOST_AUTO_TEST_CASE(get_many_keys_beyond_max_tokens) {
  // memcached re-tokenizes long get lines: 30 keys => END (no token limit for get).
  std::string s = "get";
  for (int i = 0; i < 30; ++i) s += " k" + std::to_string(i);
  auto o = P(s + "\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST_REQUIRE(o.req.keys.size() == 30u);
  BOOST_TEST(o.req.keys[29] == "k29");
}

BOOST_AUTO_TEST_CASE(gat_and_gats) {
  auto o = P("gat 10 a b\r\n");
  BOOST_TEST((o.req.cmd == command::gat));
  BOOST_TEST(o.req.exptime == 10);
  BOOST_TEST(o.req.keys.size() == 2u);
  o = P("gats -1 a\r\n");
  BOOST_TEST((o.req.cmd == command::gats));
  BOOST_TEST(o.req.exptime == -1);
  // "gat 10" => END: accepted with no keys.
  o = P("gat 10\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.keys.empty());
  // "gat" => ERROR; "gat x a" => CLIENT_ERROR invalid exptime argument.
  BOOST_TEST(status_of("gat\r\n") == "ERROR");
  BOOST_TEST(status_of("gat x a\r\n") == "CLIENT_ERROR invalid exptime argument");
  // "gat 10 <251 k>" => CLIENT_ERROR bad command line format
  BOOST_TEST(status_of("gat 10 " + k_key251 + "\r\n") == k_bad_format);
}

BOOST_AUTO_TEST_CASE(storage_commands) {
  struct {
    const char* name;
    command cmd;
  } cases[] = {{"set", command::set}, {"add", command::add}, {"replace", command::replace},
               {"append", command::append}, {"prepend", command::prepend}};
  for (auto& c : cases) {
    std::string line = std::string(c.name) + " key 123 456 5";
    auto o = P(line + "\r\nhello\r\n");
    BOOST_TEST(o.r.status == parse_status::ok);
    BOOST_TEST((o.req.cmd == c.cmd));
    BOOST_TEST(o.r.consumed == line.size() + 2 + 5 + 2);
    BOOST_TEST(o.req.keys.size() == 1u);
    BOOST_TEST(o.req.keys[0] == "key");
    BOOST_TEST(o.req.flags == 123u);
    BOOST_TEST(o.req.exptime == 456);
    BOOST_TEST(o.req.data == "hello");
    BOOST_TEST(!o.req.noreply);
    BOOST_TEST(o.req.line == line);

    o = P(std::string(c.name) + " key 0 0 2 noreply\r\nab\r\n");
    BOOST_TEST(o.r.status == parse_status::ok);
    BOOST_TEST(o.req.noreply);
    BOOST_TEST(o.req.data == "ab");
  }
  // Data may contain \r and \n; only the 2 bytes after it must be "\r\n".
  auto o = P("set a 0 0 4\r\n\r\n\r\n\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.data == "\r\n\r\n");
  // Empty value ("set a 0 0 0\r\n\r\n" => STORED, get => VALUE a 0 0).
  o = P("set a 0 0 0\r\n\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.data.empty());
  // A bare "\n" command line works for storage too ("set a 0 0 1\nX\r\n" => STORED).
  o = P("set a 0 0 1\nX\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.data == "X");
  // Extra spaces ("set  a   0  0  1 " => STORED).
  o = P("set  a   0  0  1 \r\nX\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.keys[0] == "a");
}

BOOST_AUTO_TEST_CASE(cas_command) {
  auto o = P("cas k 1 2 3 99\r\nabc\r\n");
  BOOST_TEST((o.req.cmd == command::cas));
  BOOST_TEST(o.req.flags == 1u);
  BOOST_TEST(o.req.exptime == 2);
  BOOST_TEST(o.req.cas_unique == 99u);
  BOOST_TEST(o.req.data == "abc");
  o = P("cas k 0 0 1 18446744073709551615 noreply\r\nX\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.cas_unique == 18446744073709551615ull);
  BOOST_TEST(o.req.noreply);
}

BOOST_AUTO_TEST_CASE(delete_command) {
  auto o = P("delete a\r\n");
  BOOST_TEST((o.req.cmd == command::delete_));
  BOOST_TEST(o.req.keys[0] == "a");
  BOOST_TEST(!o.req.noreply);
  // Legacy "delete a 0" => NOT_FOUND (accepted).
  BOOST_TEST(status_of("delete a 0\r\n") == "ok");
  o = P("delete a noreply\r\n");
  BOOST_TEST(o.req.noreply);
  o = P("delete a 0 noreply\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.noreply);
  // "delete noreply" deletes the key "noreply" (=> DELETED after setting it).
  o = P("delete noreply\r\n");
  BOOST_TEST(o.req.keys[0] == "noreply");
  BOOST_TEST(!o.req.noreply);
}

BOOST_AUTO_TEST_CASE(arithmetic_and_touch) {
  auto o = P("incr n 5\r\n");
  BOOST_TEST((o.req.cmd == command::incr));
  BOOST_TEST(o.req.keys[0] == "n");
  BOOST_TEST(o.req.delta == 5u);
  o = P("decr n 18446744073709551615 noreply\r\n");
  BOOST_TEST((o.req.cmd == command::decr));
  BOOST_TEST(o.req.delta == 18446744073709551615ull);
  BOOST_TEST(o.req.noreply);
  // "incr n 1 foo" => 6 (the 5th token is ignored unless it is "noreply").
  o = P("incr n 1 foo\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(!o.req.noreply);

  o = P("touch k 100\r\n");
  BOOST_TEST((o.req.cmd == command::touch));
  BOOST_TEST(o.req.exptime == 100);
  o = P("touch k -1 noreply\r\n");
  BOOST_TEST(o.req.exptime == -1);
  BOOST_TEST(o.req.noreply);
  // "touch a 10 foo" => NOT_FOUND (accepted).
  BOOST_TEST(status_of("touch a 10 foo\r\n") == "ok");
}

BOOST_AUTO_TEST_CASE(admin_commands) {
  auto o = P("flush_all\r\n");
  BOOST_TEST((o.req.cmd == command::flush_all));
  BOOST_TEST(!o.req.has_delay);
  o = P("flush_all 30\r\n");
  BOOST_TEST(o.req.has_delay);
  BOOST_TEST(o.req.delay == 30);
  o = P("flush_all noreply\r\n");  // => (nothing)
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(!o.req.has_delay);
  BOOST_TEST(o.req.noreply);
  o = P("flush_all 0 noreply\r\n");
  BOOST_TEST(o.req.has_delay);
  BOOST_TEST(o.req.delay == 0);
  BOOST_TEST(o.req.noreply);
  o = P("flush_all -1\r\n");  // => OK
  BOOST_TEST(o.req.delay == -1);
  o = P("flush_all 10 foo\r\n");  // => OK: "foo" is ignored
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.delay == 10);

  o = P("version\r\n");
  BOOST_TEST((o.req.cmd == command::version));
  BOOST_TEST(status_of("version foo bar\r\n") == "ok");  // => VERSION 1.6.18

  o = P("verbosity 1\r\n");
  BOOST_TEST((o.req.cmd == command::verbosity));
  BOOST_TEST(o.req.delay == 1);
  o = P("verbosity 1 noreply\r\n");
  BOOST_TEST(o.req.noreply);
  BOOST_TEST(status_of("verbosity 1 foo\r\n") == "ok");  // => OK

  o = P("cache_memlimit 100\r\n");
  BOOST_TEST((o.req.cmd == command::cache_memlimit));
  BOOST_TEST(o.req.delay == 100);
  o = P("cache_memlimit 4294967304 noreply\r\n");  // (memcached's 32-bit number: 8)
  BOOST_TEST(o.req.delay == 8);
  BOOST_TEST(o.req.noreply);
  BOOST_TEST(status_of("cache_memlimit 20 x\r\n") == "ok");
  for (const char* bad : {"cache_memlimit\r\n", "cache_memlimit abc\r\n", "cache_memlimit -5\r\n",
                          "cache_memlimit 20 x y\r\n", "cache_memlimit 0x10\r\n"})
    BOOST_TEST(status_of(bad) == "ERROR", bad);  // (memcached's plain ERROR)

  o = P("stats\r\n");
  BOOST_TEST((o.req.cmd == command::stats));
  BOOST_TEST(o.req.stats_arg.empty());
  o = P("stats  \r\n");  // => the general stats
  BOOST_TEST(o.req.stats_arg.empty());
  o = P("stats settings\r\n");
  BOOST_TEST(o.req.stats_arg == "settings");
  o = P("stats  detail  on \r\n");
  BOOST_TEST(o.req.stats_arg == "detail  on");

  o = P("quit\r\n");
  BOOST_TEST((o.req.cmd == command::quit));
  BOOST_TEST(status_of("quit foo\r\n") == "ok");  // => connection closed

  // Not supported by bifrost; memcached's default answer.
  BOOST_TEST(status_of("shutdown\r\n") == "ERROR: shutdown not enabled");
}

BOOST_AUTO_TEST_CASE(meta_get) {
  auto o = P("mg foo v k c f t s T30 Oabc N10 q\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST((o.req.cmd == command::mg));
  BOOST_TEST(o.req.keys[0] == "foo");
  for (char c : std::string("vkcftsTONq")) BOOST_TEST(o.req.meta.has(c), c);
  BOOST_TEST(!o.req.meta.has('h'));
  BOOST_TEST(!o.req.meta.has('1'));
  BOOST_TEST(o.req.meta.get('T') == "30");
  BOOST_TEST(o.req.meta.get('O') == "abc");
  BOOST_TEST(o.req.meta.get('N') == "10");
  BOOST_TEST(o.req.meta.get('v').empty());
  BOOST_TEST(o.req.meta.raw == "v k c f t s T30 Oabc N10 q");
  BOOST_TEST(!o.req.noreply);  // q lives in meta

  o = P("mg foo\r\n");  // => EN
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.meta.present == 0u);
  BOOST_TEST(o.req.meta.raw.empty());

  // All flags memcached 1.6.18 accepts for mg (17 flags = its maximum).
  o = P("mg a v k c f s t O1 q h l u N1 R1 T1 P L I\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  // base64 key: validated, left encoded for the caller.
  o = P("mg Zm9v b v\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.keys[0] == "Zm9v");
  BOOST_TEST(o.req.meta.has('b'));
}

BOOST_AUTO_TEST_CASE(meta_set) {
  auto o = P("ms foo 5 T60 F7 MS c Oxyz\r\nhello\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST((o.req.cmd == command::ms));
  BOOST_TEST(o.req.keys[0] == "foo");
  BOOST_TEST(o.req.data == "hello");
  BOOST_TEST(o.req.meta.get('T') == "60");
  BOOST_TEST(o.req.meta.get('F') == "7");
  BOOST_TEST(o.req.meta.get('M') == "S");
  BOOST_TEST(o.req.meta.has('c'));
  BOOST_TEST(o.req.meta.get('O') == "xyz");
  BOOST_TEST(o.req.meta.raw == "T60 F7 MS c Oxyz");
  BOOST_TEST(o.r.consumed == o.in->size());

  o = P("ms foo 0\r\n\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.data.empty());
  BOOST_TEST(o.req.meta.present == 0u);

  for (const char* mode : {"E", "A", "P", "R", "S"}) {
    o = P("ms k 1 M"s + mode + "\r\nX\r\n");
    BOOST_TEST(o.r.status == parse_status::ok, mode);
  }
  // 16 flags is the maximum for ms (=> MN after a quiet HD).
  o = P("ms a 1 v k c f s t O1 q h l u N1 R1 T1 P L\r\nX\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
}

BOOST_AUTO_TEST_CASE(meta_delete_arith_noop_debug) {
  auto o = P("md foo q Oab C123 I T30\r\n");
  BOOST_TEST((o.req.cmd == command::md));
  BOOST_TEST(o.req.keys[0] == "foo");
  BOOST_TEST(o.req.meta.get('C') == "123");
  BOOST_TEST(o.req.meta.has('I'));
  // md does not check the M mode ("md a MX" => NF).
  BOOST_TEST(status_of("md a MX\r\n") == "ok");

  o = P("ma cnt N0 J10 D5 MD v t\r\n");
  BOOST_TEST((o.req.cmd == command::ma));
  BOOST_TEST(o.req.meta.get('J') == "10");
  BOOST_TEST(o.req.meta.get('D') == "5");
  BOOST_TEST(o.req.meta.get('M') == "D");
  for (const char* mode : {"I", "+", "D", "-"}) BOOST_TEST(status_of("ma a M"s + mode + "\r\n") == "ok");

  o = P("mn\r\n");
  BOOST_TEST((o.req.cmd == command::mn));
  BOOST_TEST(status_of("mn foo bar\r\n") == "ok");  // => MN

  o = P("me foo\r\n");
  BOOST_TEST((o.req.cmd == command::me));
  BOOST_TEST(o.req.keys[0] == "foo");
  // me ignores other tokens ("me a x y z" => EN, "me a !" => EN).
  BOOST_TEST(status_of("me a x y z\r\n") == "ok");
  BOOST_TEST(status_of("me a !\r\n") == "ok");
  o = P("me Zm9v b\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.meta.has('b'));
}

BOOST_AUTO_TEST_CASE(line_endings) {
  // One "\r" before "\n" is stripped; a second one is part of the line.
  auto o = P("get a\r\r\n");
  BOOST_TEST(o.req.keys[0] == "a\r");
  o = P("get a\n");
  BOOST_TEST(o.req.line == "get a");
  // "\r\n", "\n", "   \r\n", "x\r\n" => ERROR
  BOOST_TEST(status_of("\r\n") == "ERROR");
  BOOST_TEST(status_of("\n") == "ERROR");
  BOOST_TEST(status_of("   \r\n") == "ERROR");
  BOOST_TEST(status_of("x\r\n") == "ERROR");
}

BOOST_AUTO_TEST_CASE(incomplete_input) {
  request req;
  for (std::string s : {"", "g", "get foo", "get foo\r", "set a 0 0 5", "mg a v"}) {
    auto r = parse(s, req);
    BOOST_TEST((r.status == parse_status::incomplete), s);
    BOOST_TEST(r.consumed == 0u);
    BOOST_TEST(r.need == 0u);
  }
  // Waiting for a data block: `need` is the total length that completes it.
  std::string s = "set a 0 0 5\r\nhel";
  auto r = parse(s, req);
  BOOST_TEST((r.status == parse_status::incomplete));
  BOOST_TEST(r.consumed == 0u);
  BOOST_TEST(r.need == 13u + 7u);
  s = "set a 0 0 5\r\nhello\r";
  r = parse(s, req);
  BOOST_TEST((r.status == parse_status::incomplete));
  BOOST_TEST(r.need == 20u);
  s = "ms a 3 T1\r\n";
  r = parse(s, req);
  BOOST_TEST((r.status == parse_status::incomplete));
  BOOST_TEST(r.need == s.size() + 5);
}

BOOST_AUTO_TEST_SUITE_END()

// =======================================================================================
BOOST_AUTO_TEST_SUITE(memcache_hostile)

BOOST_AUTO_TEST_CASE(key_length_limits) {
  // 250 => STORED; 251 => "CLIENT_ERROR bad command line format" then the data line is
  // parsed as a command ("X" => ERROR): memcached does NOT swallow the data block here.
  BOOST_TEST(status_of("set " + k_key250 + " 0 0 1\r\nX\r\n") == "ok");
  BOOST_TEST(events("set " + k_key251 + " 0 0 1\r\nX\r\n") ==
             "error \"CLIENT_ERROR bad command line format\" consumed=263 cmd=set keys=[\"" +
                 std::string(64, 'k') + "...(251)\"]\n"
                 "error \"ERROR\" consumed=3 cmd=none\n");
  // With noreply the error is silent ("set <251> 0 0 1 noreply\r\nX\r\n" => only ERROR).
  auto o = P("set " + k_key251 + " 0 0 1 noreply\r\nX\r\n");
  BOOST_TEST(std::string(o.r.error) == k_bad_format);
  BOOST_TEST(o.req.noreply);

  for (std::string cmd : {"get ", "gets ", "gat 1 ", "delete ", "incr ", "decr ", "touch ",
                          "mg ", "md ", "ma ", "me ", "ms "}) {
    std::string suffix = cmd == "incr " || cmd == "decr " ? " 1"
                         : cmd == "touch "                ? " 10"
                         : cmd == "ms "                   ? " 1"
                                                          : "";
    std::string data = cmd == "ms " ? "X\r\n" : "";
    BOOST_TEST(status_of(cmd + k_key250 + suffix + "\r\n" + data) == "ok", cmd);
    BOOST_TEST(status_of(cmd + k_key251 + suffix + "\r\n" + data) == k_bad_format, cmd);
  }
  // A long key anywhere in a multi-get fails the whole command (=> one CLIENT_ERROR).
  BOOST_TEST(status_of("get a " + k_key251 + " b\r\n") == k_bad_format);
  // ms with a long key does not swallow its data either (=> CLIENT_ERROR ..., ERROR).
  BOOST_TEST(events("ms " + k_key251 + " 1\r\nX\r\n").find("swallow") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(control_characters_in_keys) {
  // memcached's text protocol only checks key length: "set a\x01b 0 0 1" => STORED and
  // "get a\x01b" => VALUE a\x01b 0 1; same for \x7f. Tabs are not separators
  // ("get a\tb" => END, i.e. one key "a\tb"; "get\ta" => ERROR).
  for (std::string k : {"a\x01"s + "b", "a\x7f" "b"s, "a\tb"s, "a\x0b" "b"s, "\xff\xfe"s}) {
    auto o = P("set " + k + " 0 0 1\r\nX\r\n");
    BOOST_TEST(o.r.status == parse_status::ok);
    BOOST_TEST(o.req.keys[0] == k);
    o = P("get " + k + "\r\n");
    BOOST_TEST(o.req.keys[0] == k);
  }
  BOOST_TEST(status_of("get\ta\r\n") == "ERROR");
}

BOOST_AUTO_TEST_CASE(long_lines) {
  // 2048 bytes without a newline: keep waiting; 2049: too long (memcached closes the socket).
  BOOST_TEST(status_of(std::string(2048, 'x')) == "incomplete");
  BOOST_TEST(status_of(std::string(2049, 'x')) == "too_long");
  // Exactly 2048 bytes, then "\n" => ERROR (memcached, the "\n" sent separately).
  BOOST_TEST(status_of(std::string(2048, 'x') + "\n") == "ERROR");
  // 2049 bytes before the "\n" ("\r" included) close, even if the "\n" came in the same
  // read: memcached would close when the bytes arrive split (=> connection closed), and
  // the parser must not depend on packet boundaries (documented deviation).
  BOOST_TEST(status_of(std::string(2048, 'x') + "\r\n") == "too_long");
  BOOST_TEST(status_of("set " + std::string(2045, 'a') + "\r\n") == "too_long");

  // get/gets may be arbitrarily long ("get a a a ... " 3000 bytes => keeps reading).
  std::string keys;
  for (int i = 0; i < 1500; ++i) keys += "a ";
  BOOST_TEST(status_of("get " + keys) == "incomplete");
  BOOST_TEST(status_of("gets " + keys) == "incomplete");
  auto o = P("get " + keys + "\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.keys.size() == 1500u);
  // ... but not gat/gats (memcached only checks "get " and "gets " => closed).
  BOOST_TEST(status_of("gat 0 " + keys) == "too_long");
  BOOST_TEST(status_of("gats 0 " + keys) == "too_long");
  // At most 100 leading spaces (100 => still reading; 101 => closed).
  BOOST_TEST(status_of(std::string(100, ' ') + "get " + keys) == "incomplete");
  BOOST_TEST(status_of(std::string(101, ' ') + "get " + keys) == "too_long");
  // A long get with a long key somewhere => CLIENT_ERROR bad command line format.
  BOOST_TEST(status_of("get " + k_key251 + " " + keys + "\r\n") == k_bad_format);
  // A get line of 100 kB.
  std::string big = "get";
  for (int i = 0; i < 10000; ++i) big += " key" + std::to_string(i);
  o = P(big + "\r\n");
  BOOST_TEST(o.req.keys.size() == 10000u);
}

BOOST_AUTO_TEST_CASE(numbers) {
  // flags are read with strtoul and truncated to 32 bits:
  // "set a 4294967296 0 1" => STORED, "gets a" => VALUE a 0 1 ...
  BOOST_TEST(P("set a 4294967295 0 1\r\nX\r\n").req.flags == 4294967295u);
  auto o = P("set a 4294967296 0 1\r\nX\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.flags == 0u);
  // "set a -1 0 1" => CLIENT_ERROR bad command line format (then "X" => ERROR)
  BOOST_TEST(status_of("set a -1 0 1\r\nX\r\n") == k_bad_format);
  // The length is strtol truncated to 32 bits: "set a 0 0 4294967297\r\nX\r\n" => STORED 1 byte.
  o = P("set a 0 0 4294967297\r\nX\r\n");
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.data == "X");
  // 2^31 wraps negative => bad format; -1 => bad format; INT_MAX-1 => bad format.
  BOOST_TEST(status_of("set a 0 0 2147483648\r\nX\r\n") == k_bad_format);
  BOOST_TEST(status_of("set a 0 0 -1\r\nX\r\n") == k_bad_format);
  BOOST_TEST(status_of("set a 0 0 2147483646\r\nX\r\n") == k_bad_format);
  // INT_MAX-2 passes the range check and is too large (swallowing bytes + 2).
  o = P("set a 0 0 2147483645\r\nX\r\n");
  BOOST_TEST(std::string(o.r.error) == "SERVER_ERROR object too large for cache");
  BOOST_TEST(o.r.swallow == 2147483647u);
  // "+1" and "1\t" are numbers; "1x" and "abc" are not.
  BOOST_TEST(status_of("set a 0 0 +1\r\nX\r\n") == "ok");
  BOOST_TEST(status_of("set a 0 0 1\t\r\nX\r\n") == "ok");
  BOOST_TEST(status_of("set a 0 0 1x\r\nX\r\n") == k_bad_format);
  BOOST_TEST(status_of("set a 0 0 abc\r\nX\r\n") == k_bad_format);
  // exptime: strtol truncated to 32 bits. -4294967296 => 0 (item never expires: verified
  // with get), 9999999999999999999 overflows long => bad format.
  o = P("set a 0 -4294967296 1\r\nX\r\n");
  BOOST_TEST(o.req.exptime == 0);
  BOOST_TEST(P("set a 0 -1 1\r\nX\r\n").req.exptime == -1);
  BOOST_TEST(P("set a 0 2147483648 1\r\nX\r\n").req.exptime == INT32_MIN);
  BOOST_TEST(status_of("set a 0 9999999999999999999 1\r\nX\r\n") == k_bad_format);
  // cas: strtoull; 2^64 overflows, "-1" rejected.
  BOOST_TEST(status_of("cas a 0 0 1 18446744073709551616\r\nX\r\n") == k_bad_format);
  BOOST_TEST(status_of("cas a 0 0 1 -1\r\nX\r\n") == k_bad_format);
  BOOST_TEST(status_of("cas a 0 0 1 x\r\nX\r\n") == k_bad_format);
  // incr: "incr n -1", "incr n abc", "incr n 18446744073709551616" =>
  // CLIENT_ERROR invalid numeric delta argument; 18446744073709551615 is fine.
  for (std::string d : {"-1", "abc", "18446744073709551616", "", "1.5"})
    BOOST_TEST(status_of("incr n " + d + "\r\n") ==
                   (d.empty() ? "ERROR" : "CLIENT_ERROR invalid numeric delta argument"),
               d);
  BOOST_TEST(P("incr n 18446744073709551615\r\n").req.delta == 18446744073709551615ull);
  // touch / flush_all / verbosity number errors.
  BOOST_TEST(status_of("touch a x\r\n") == "CLIENT_ERROR invalid exptime argument");
  BOOST_TEST(status_of("flush_all x\r\n") == "CLIENT_ERROR invalid exptime argument");
  BOOST_TEST(status_of("verbosity -1\r\n") == k_bad_format);
  BOOST_TEST(status_of("verbosity x\r\n") == k_bad_format);
}

BOOST_AUTO_TEST_CASE(number_readers) {
  int32_t i;
  uint32_t u;
  uint64_t ull;
  BOOST_TEST(safe_strtol("123", i));
  BOOST_TEST(i == 123);
  BOOST_TEST(safe_strtol(" \t-5", i));
  BOOST_TEST(i == -5);
  BOOST_TEST(safe_strtol("5\tjunk", i));  // whitespace after the digits ends the number
  BOOST_TEST(!safe_strtol("5j", i));
  BOOST_TEST(!safe_strtol("", i));
  BOOST_TEST(!safe_strtol("-", i));
  BOOST_TEST(safe_strtol("-9223372036854775808", i));
  BOOST_TEST(!safe_strtol("-9223372036854775809", i));
  BOOST_TEST(!safe_strtol("9223372036854775808", i));
  BOOST_TEST(safe_strtol("4294967301", i));
  BOOST_TEST(i == 5);
  BOOST_TEST(safe_strtoul("4294967296", u));
  BOOST_TEST(u == 0u);
  BOOST_TEST(!safe_strtoul("-1", u));
  BOOST_TEST(safe_strtoul("-0", u));
  // strtoul negates modulo 2^64; the '-' check only fires when the result looks negative.
  BOOST_TEST(safe_strtoull("-9223372036854775809", ull));
  BOOST_TEST(ull == 9223372036854775807ull);
  BOOST_TEST(!safe_strtoull("-9223372036854775808", ull));
  BOOST_TEST(safe_strtoull("18446744073709551615", ull));
  BOOST_TEST(!safe_strtoull("18446744073709551616", ull));
  BOOST_TEST(!safe_strtoull("99999999999999999999999", ull));
}

BOOST_AUTO_TEST_CASE(bad_data_chunk) {
  // "set a 0 0 1\r\nXYZget a\r\n" => CLIENT_ERROR bad data chunk, then VALUE a ...:
  // memcached consumes line + bytes + 2 and carries on with what follows.
  BOOST_TEST(events("set a 0 0 1\r\nXYZget a\r\n") ==
             "error \"CLIENT_ERROR bad data chunk\" consumed=16 cmd=set keys=[\"a\"]\n"
             "ok consumed=7 cmd=get keys=[\"a\"]\n");
  // "set a 0 0 1\r\nXY\r\nget a\r\n" => bad data chunk, ERROR (the lone "\n"), VALUE ...
  BOOST_TEST(events("set a 0 0 1\r\nXY\r\nget a\r\n") ==
             "error \"CLIENT_ERROR bad data chunk\" consumed=16 cmd=set keys=[\"a\"]\n"
             "error \"ERROR\" consumed=1 cmd=none\n"
             "ok consumed=7 cmd=get keys=[\"a\"]\n");
  // "set a 0 0 1\r\nX\nget a\r\n" => bad data chunk, ERROR ("et a")
  BOOST_TEST(events("set a 0 0 1\r\nX\nget a\r\n") ==
             "error \"CLIENT_ERROR bad data chunk\" consumed=16 cmd=set keys=[\"a\"]\n"
             "error \"ERROR\" consumed=6 cmd=none\n");
  // "set a 0 0 0\r\n\nget a" => bad data chunk, ERROR
  BOOST_TEST(status_of("set a 0 0 0\r\n\nget a\r\n") == "CLIENT_ERROR bad data chunk");
  // With noreply the error is not sent ("... noreply\r\nXYZget a" => VALUE ... only).
  auto o = P("set a 0 0 1 noreply\r\nXYZget a\r\n");
  BOOST_TEST(std::string(o.r.error) == "CLIENT_ERROR bad data chunk");
  BOOST_TEST(o.req.noreply);
  // ms always reports it (even with q): "ms a 1 q\r\nXY\r\nmn" => bad data chunk, ERROR, MN.
  BOOST_TEST(events("ms a 1 q\r\nXY\r\nmn\r\n") ==
             "error \"CLIENT_ERROR bad data chunk\" consumed=13 cmd=ms keys=[\"a\"] meta={q } "
             "raw=\"q\"\n"
             "error \"ERROR\" consumed=1 cmd=none\n"
             "ok consumed=4 cmd=mn\n");
  // "set a 0 0 2\r\nX\r\r\n" => STORED with data "X\r".
  BOOST_TEST(P("set a 0 0 2\r\nX\r\r\n").req.data == "X\r");
}

BOOST_AUTO_TEST_CASE(too_large_swallows) {
  parser_config small;
  small.max_item_size = 10;
  // The whole data block + "\r\n" is swallowed, whatever it contains, then parsing resumes.
  BOOST_TEST(events("set a 0 0 11\r\nhello\r\nworl\r\nget a\r\n", small) ==
             "error \"SERVER_ERROR object too large for cache\" consumed=14 swallow=13 cmd=set "
             "keys=[\"a\"]\n"
             "ok consumed=7 cmd=get keys=[\"a\"]\n");
  BOOST_TEST(status_of("set a 0 0 10\r\n0123456789\r\n", small) == "ok");
  // noreply: "set a 0 0 1048577 noreply\r\n<data>\r\nget a" => END only.
  auto o = P("set a 0 0 11 noreply\r\nxxxxxxxxxxx\r\n", small);
  BOOST_TEST(o.req.noreply);
  BOOST_TEST(o.r.swallow == 13u);
  // Swallowed bytes are not checked: "...1048577\r\n<x*1048577>ZZversion" => SERVER_ERROR,
  // VERSION.
  BOOST_TEST(events("set a 0 0 11\r\nxxxxxxxxxxxZZversion\r\n", small) ==
             "error \"SERVER_ERROR object too large for cache\" consumed=14 swallow=13 cmd=set "
             "keys=[\"a\"]\n"
             "ok consumed=9 cmd=version\n");
  // ms too large swallows too (=> SERVER_ERROR object too large for cache, MN).
  o = P("ms a 11 T0\r\nxxxxxxxxxxx\r\nmn\r\n", small);
  BOOST_TEST(std::string(o.r.error) == "SERVER_ERROR object too large for cache");
  BOOST_TEST(o.r.swallow == 13u);
  BOOST_TEST(o.req.keys[0] == "a");
  BOOST_TEST(!o.req.noreply);
  // The real default: 1 MiB + 1 with the default config.
  std::string big = "set a 0 0 1048577\r\n" + std::string(1048577, 'x') + "\r\nget a\r\n";
  BOOST_TEST(events(big) ==
             "error \"SERVER_ERROR object too large for cache\" consumed=19 swallow=1048579 "
             "cmd=set keys=[\"a\"]\n"
             "ok consumed=7 cmd=get keys=[\"a\"]\n");
}

BOOST_AUTO_TEST_CASE(nul_bytes) {
  // memcached strlen()s the line: the command ends at the first NUL.
  // "set a 0 0 1\0junk\r\nX\r\n" => STORED; "get a\0 junk" => VALUE a (only a);
  // "\0get a" => ERROR; "version\0xx" => VERSION; "set a 0 0 1 \0noreply" => STORED.
  auto o = P("set a 0 0 1\0junk\r\nX\r\n"s);
  BOOST_TEST(o.r.status == parse_status::ok);
  BOOST_TEST(o.req.data == "X");
  BOOST_TEST(o.req.line == "set a 0 0 1\0junk"s);
  o = P("get a\0 junk\r\n"s);
  BOOST_TEST(o.req.keys.size() == 1u);
  BOOST_TEST(o.req.keys[0] == "a");
  BOOST_TEST(status_of("\0get a\r\n"s) == "ERROR");
  BOOST_TEST(status_of("\0\r\n"s) == "ERROR");
  BOOST_TEST(status_of("version\0xx\r\n"s) == "ok");
  o = P("set a 0 0 1 \0noreply\r\nX\r\n"s);
  BOOST_TEST(!o.req.noreply);
  // NULs inside a data block are data.
  o = P("set a 0 0 3\r\n\0\0\0\r\n"s);
  BOOST_TEST(o.req.data == "\0\0\0"s);
}

BOOST_AUTO_TEST_CASE(missing_and_extra_tokens) {
  // Wrong token counts => ERROR (and the data line of a storage command => ERROR too).
  BOOST_TEST(events("set a 0 0\r\nX\r\n") ==
             "error \"ERROR\" consumed=11 cmd=set\nerror \"ERROR\" consumed=3 cmd=none\n");
  for (std::string s : {"get", "gets", "gat", "gats", "set a 0 0 1 noreply extra", "cas a 0 0 1",
                        "cas a 0 0 1 1 noreply x", "delete", "delete a x y z", "incr a",
                        "incr n 1 2 3", "touch a", "flush_all 1 2 3", "verbosity",
                        "verbosity 1 2 3", "mg", "ms", "md", "ma", "GET a", "getx a", "sets a",
                        "m", "mx", "a b c d e f g h i j k l m n o p q r s t u v w x y z"})
    BOOST_TEST(status_of(s + "\r\n") == "ERROR", s);
  BOOST_TEST(status_of("me\r\n") == k_bad_format);
  BOOST_TEST(status_of("ms a\r\nX\r\n") == k_bad_format);
  // delete's legacy hold argument: only "0" ("delete a 1", "delete a 00", "delete a 0 0" =>
  // CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]).
  const std::string usage = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
  BOOST_TEST(status_of("delete a 1\r\n") == usage);
  BOOST_TEST(status_of("delete a 00\r\n") == usage);
  BOOST_TEST(status_of("delete a 0 0\r\n") == usage);
  auto o = P("delete a 1 noreply\r\n");  // => (nothing)
  BOOST_TEST(std::string(o.r.error) == usage);
  BOOST_TEST(o.req.noreply);
  // Too many tokens: memcached's tokenizer stops at 24; set with 30 tokens => ERROR.
  std::string s = "set a 0 0 1";
  for (int i = 0; i < 30; ++i) s += " t";
  BOOST_TEST(status_of(s + "\r\nX\r\n") == "ERROR");
}

BOOST_AUTO_TEST_CASE(noreply_variations) {
  // set_noreply_maybe(): the last token is exactly "noreply", checked before anything else,
  // so even errors are silent: "set a 0 0 noreply", "incr n noreply", "touch a noreply",
  // "verbosity noreply", "flush_all noreply noreply", "cas a 0 0 1 noreply" => nothing.
  struct {
    std::string in, err;
  } silent[] = {
      {"set a 0 0 noreply\r\n", k_bad_format},
      {"incr n noreply\r\n", "CLIENT_ERROR invalid numeric delta argument"},
      {"incr n abc noreply\r\n", "CLIENT_ERROR invalid numeric delta argument"},
      {"touch a noreply\r\n", "CLIENT_ERROR invalid exptime argument"},
      {"touch a x noreply\r\n", "CLIENT_ERROR invalid exptime argument"},
      {"verbosity noreply\r\n", k_bad_format},
      {"verbosity noreply noreply\r\n", k_bad_format},
      {"flush_all noreply noreply\r\n", "CLIENT_ERROR invalid exptime argument"},
      {"cas a 0 0 1 noreply\r\nX\r\n", k_bad_format},
      {"delete " + k_key251 + " noreply\r\n", k_bad_format},
  };
  for (auto& c : silent) {
    auto o = P(c.in);
    BOOST_TEST(std::string(o.r.error) == c.err, c.in);
    BOOST_TEST(o.req.noreply, c.in);
  }
  // Not noreply: case matters; position matters.
  BOOST_TEST(!P("set a 0 0 1 NOREPLY\r\nX\r\n").req.noreply);  // => STORED
  auto o = P("flush_all noreply 10\r\n");  // => CLIENT_ERROR invalid exptime argument
  BOOST_TEST(std::string(o.r.error) == "CLIENT_ERROR invalid exptime argument");
  BOOST_TEST(!o.req.noreply);
  o = P("get a noreply\r\n");  // a key
  BOOST_TEST(o.req.keys.size() == 2u);
  BOOST_TEST(!o.req.noreply);
  // Meta errors are never silent (out_errstring clears noreply).
  o = P("mg a q v v\r\n");
  BOOST_TEST(std::string(o.r.error) == "CLIENT_ERROR duplicate flag");
  BOOST_TEST(!o.req.noreply);
}

BOOST_AUTO_TEST_CASE(meta_garbage_flags) {
  struct {
    std::string in, err;
  } cases[] = {
      // mg: errors straight from _meta_flag_preparse() (all verified).
      {"mg a v v", "CLIENT_ERROR duplicate flag"},
      {"mg a 1", "CLIENT_ERROR invalid flag"},
      {"mg a !", "CLIENT_ERROR invalid flag"},
      {"mg a \x01", "CLIENT_ERROR invalid flag"},
      {"mg a \x7f", "CLIENT_ERROR duplicate flag"},
      {"mg a \x80", "CLIENT_ERROR duplicate flag"},
      {"mg a E", "CLIENT_ERROR bad token in command line format"},  // (1.6.18: no E flag)
      {"mg a Ex", "CLIENT_ERROR bad token in command line format"},
      {"mg a x", "CLIENT_ERROR invalid flag"},
      {"mg a S", "CLIENT_ERROR invalid flag"},
      {"mg a Tx", "CLIENT_ERROR bad token in command line format"},
      {"mg a T", "CLIENT_ERROR bad token in command line format"},
      {"mg a N", "CLIENT_ERROR bad token in command line format"},
      {"mg a R", "CLIENT_ERROR bad token in command line format"},
      {"mg a C", "CLIENT_ERROR bad token in command line format"},
      {"mg a Tx !", "CLIENT_ERROR invalid flag"},
      {"mg a Tx v v", "CLIENT_ERROR duplicate flag"},
      {"mg a F", k_bad_format},
      {"mg a D", "CLIENT_ERROR invalid numeric delta value"},
      {"mg a J", "CLIENT_ERROR invalid numeric initial value"},
      {"mg a M", "CLIENT_ERROR incorrect length for M token"},
      {"mg a MSS", "CLIENT_ERROR incorrect length for M token"},
      {"mg a b", "CLIENT_ERROR error decoding key"},
      {"mg a O" + std::string(32, 'x'), "CLIENT_ERROR opaque token too long"},
      {"mg a O1 O1", "CLIENT_ERROR duplicate flag"},
      {"mg a v k c f s t O1 q h l u N1 R1 T1 P L I C1", "CLIENT_ERROR options flags are too long"},
      {"mg " + k_key251 + " !", k_bad_format},  // the key is checked first
      // md/ma report every preparse failure the same way.
      {"md a !", "CLIENT_ERROR invalid or duplicate flag"},
      {"md a v v", "CLIENT_ERROR invalid or duplicate flag"},
      {"md a Tx", "CLIENT_ERROR invalid or duplicate flag"},
      {"md a b", "CLIENT_ERROR invalid or duplicate flag"},
      {"md a O" + std::string(32, 'x'), "CLIENT_ERROR opaque token too long"},
      {"md a v k c f s t O1 q h l u N1 R1 T1 P L I C1", "CLIENT_ERROR options flags too long"},
      {"ma a !", "CLIENT_ERROR invalid or duplicate flag"},
      {"ma a Dx", "CLIENT_ERROR invalid or duplicate flag"},
      {"ma a MX", "CLIENT_ERROR invalid mode for ma M token"},
      {"ma a Mx", "CLIENT_ERROR invalid mode for ma M token"},
      {"ma a O" + std::string(32, 'x'), "CLIENT_ERROR opaque token too long"},
      {"ma a v k c f s t O1 q h l u N1 R1 T1 P L I C1", "CLIENT_ERROR options flags too long"},
      // me: only "b" as the first flag means anything.
      {"me a b", k_bad_format},
      {"me a b c", k_bad_format},
  };
  for (auto& c : cases) {
    auto o = P(c.in + "\r\n");
    BOOST_TEST(o.r.status == parse_status::error, c.in);
    BOOST_TEST(std::string(o.r.error) == c.err, c.in);
    BOOST_TEST(o.r.swallow == 0u, c.in);
  }
  // A 31-byte opaque is fine ("ms a 1 O<31 x>" => HD O<31 x>).
  BOOST_TEST(status_of("mg a O" + std::string(31, 'x') + "\r\n") == "ok");
  // Flag tokens may carry trailing whitespace-like bytes: "T30\t" is a number.
  BOOST_TEST(status_of("mg a T30\t\r\n") == "ok");
}

BOOST_AUTO_TEST_CASE(meta_set_errors_and_swallow) {
  // Before the length is known nothing is swallowed (the data line => ERROR):
  // "ms\r\nX" => ERROR ERROR; "ms a" / "ms a x" / "ms a -1" / "ms a 2147483646" /
  // "ms a S1 T0" (old syntax) / 17 flags => error, then ERROR for "X".
  struct {
    std::string in, err;
  } noswallow[] = {
      {"ms", "ERROR"},
      {"ms a", k_bad_format},
      {"ms a x", k_bad_format},
      {"ms a -1", k_bad_format},
      {"ms a 2147483646", k_bad_format},
      {"ms a S1 T0", k_bad_format},
      {"ms " + k_key251 + " 1", k_bad_format},
      {"ms a 1 v k c f s t O1 q h l u N1 R1 T1 P L I", "CLIENT_ERROR options flags too long"},
  };
  for (auto& c : noswallow) {
    auto o = P(c.in + "\r\nX\r\n");
    BOOST_TEST(std::string(o.r.error) == c.err, c.in);
    BOOST_TEST(o.r.swallow == 0u, c.in);
  }
  // After the length is known, memcached swallows <len>+2 bytes on any error
  // ("ms a 1 !\r\nX\r\nmn" => CLIENT_ERROR invalid flag, MN).
  struct {
    std::string in, err;
  } swallow[] = {
      {"ms a 1 !", "CLIENT_ERROR invalid flag"},
      {"ms a 1 v v", "CLIENT_ERROR duplicate flag"},
      {"ms a 1 Tx", "CLIENT_ERROR bad token in command line format"},
      {"ms a 1 Fx", k_bad_format},
      {"ms a 1 Cx", "CLIENT_ERROR bad token in command line format"},
      {"ms a 1 C-1", "CLIENT_ERROR bad token in command line format"},
      {"ms a 1 MX", "CLIENT_ERROR invalid mode for ms M token"},
      {"ms a 1 Ms", "CLIENT_ERROR invalid mode for ms M token"},
      {"ms a 1 MSS", "CLIENT_ERROR incorrect length for M token"},
      {"ms a 1 O" + std::string(32, 'x'), "CLIENT_ERROR opaque token too long"},
      // The mode check comes after the opaque check and overrides its message.
      {"ms a 1 O" + std::string(32, 'x') + " MX", "CLIENT_ERROR invalid mode for ms M token"},
      {"ms a 1 b", "CLIENT_ERROR error decoding key"},
  };
  for (auto& c : swallow) {
    std::string in = c.in + "\r\nX\r\nmn\r\n";
    auto o = P(in);
    BOOST_TEST(std::string(o.r.error) == c.err, c.in);
    BOOST_TEST(o.r.swallow == 3u, c.in);
    BOOST_TEST(o.r.consumed == c.in.size() + 2, c.in);
    // ... and the next request is the mn.
    std::string ev = events(in);
    BOOST_TEST(ev.substr(ev.find('\n') + 1) == "ok consumed=4 cmd=mn\n", c.in);
  }
  // F is read with strtoul: F4294967296 is flags 0 ("mg a f v" => VA 1 f0).
  BOOST_TEST(status_of("ms a 1 F4294967296\r\nX\r\n") == "ok");
  // The length wraps like text set: "ms a 4294967297\r\nX\r\n" => HD with 1 byte.
  BOOST_TEST(P("ms a 4294967297\r\nX\r\n").req.data == "X");
}

BOOST_AUTO_TEST_CASE(base64) {
  std::string out;
  BOOST_TEST(base64_decode("Zm9v", out));
  BOOST_TEST(out == "foo");
  BOOST_TEST(base64_decode("YQ==", out));
  BOOST_TEST(out == "a");
  BOOST_TEST(base64_decode("YWI=", out));
  BOOST_TEST(out == "ab");
  // memcached's decoder skips bytes outside the alphabet and stops after padding.
  BOOST_TEST(base64_decode("Zm9v!!", out));
  BOOST_TEST(out == "foo");
  BOOST_TEST(base64_decode("YQ==Zm9v", out));
  BOOST_TEST(out == "a");
  BOOST_TEST(!base64_decode("YQ", out));    // not a multiple of 4
  BOOST_TEST(!base64_decode("A===", out));  // 3 pad characters
  BOOST_TEST(!base64_decode("====", out));
  BOOST_TEST(!base64_decode("", out));
  BOOST_TEST(!base64_decode("!!!!", out));
  std::string enc;
  base64_encode("foobar", enc);
  BOOST_TEST(enc == "Zm9vYmFy");
  base64_encode("a", enc);  // appends
  BOOST_TEST(enc == "Zm9vYmFyYQ==");
  for (int n = 1; n < 300; ++n) {
    std::string raw;
    for (int i = 0; i < n; ++i) raw.push_back(static_cast<char>(i * 37 + n));
    std::string e, d;
    base64_encode(raw, e);
    BOOST_TEST_REQUIRE(base64_decode(e, d));
    BOOST_TEST_REQUIRE(d == raw);
  }
  // The parser applies the same rules to `b` keys: "mg Zm9v!! b" is fine, "mg YQ b" is not.
  BOOST_TEST(status_of("mg Zm9v!! b\r\n") == "ok");
  BOOST_TEST(status_of("mg YQ b\r\n") == "CLIENT_ERROR error decoding key");
  BOOST_TEST(status_of("ma YQ b\r\n") == "CLIENT_ERROR invalid or duplicate flag");
}

BOOST_AUTO_TEST_CASE(valid_key_helper) {
  BOOST_TEST(valid_key("a"));
  BOOST_TEST(valid_key(k_key250));
  BOOST_TEST(!valid_key(k_key251));
  BOOST_TEST(!valid_key(""));
  BOOST_TEST(!valid_key("a b"));
  BOOST_TEST(!valid_key("a\x01"));
  BOOST_TEST(!valid_key("a\x7f"));
  BOOST_TEST(!valid_key("a\r"));
  BOOST_TEST(valid_key("\xc3\xa9t\xc3\xa9"));  // UTF-8 is fine
}

BOOST_AUTO_TEST_SUITE_END()

// =======================================================================================
BOOST_AUTO_TEST_SUITE(memcache_stream)

BOOST_AUTO_TEST_CASE(pipelined_mixed_commands) {
  const std::string in =
      "get a b\r\n"
      "set k 1 2 3\r\nabc\r\n"
      "ms k 2 T30 v Oab\r\nxy\r\n"
      "mg k v k\r\n"
      "gat 10 a\r\n"
      "delete a 0 noreply\r\n"
      "incr a 5\r\n"
      "\r\n"
      "set k 0 0 1\r\nXYZ"
      "cas k 0 0 1 7\r\nZ\r\n"
      "mn\r\n"
      "stats items\r\n"
      "version\r\n";
  BOOST_TEST(events(in) ==
             "ok consumed=9 cmd=get keys=[\"a\",\"b\"]\n"
             "ok consumed=18 cmd=set keys=[\"k\"] data=\"abc\" flags=1 exptime=2\n"
             "ok consumed=22 cmd=ms keys=[\"k\"] data=\"xy\" meta={O\"ab\" T\"30\" v } raw=\"T30 v Oab\"\n"
             "ok consumed=10 cmd=mg keys=[\"k\"] meta={k v } raw=\"v k\"\n"
             "ok consumed=10 cmd=gat keys=[\"a\"] exptime=10\n"
             "ok consumed=20 cmd=delete keys=[\"a\"] noreply\n"
             "ok consumed=10 cmd=incr keys=[\"a\"] delta=5\n"
             "error \"ERROR\" consumed=2 cmd=none\n"
             "error \"CLIENT_ERROR bad data chunk\" consumed=16 cmd=set keys=[\"k\"]\n"
             "ok consumed=18 cmd=cas keys=[\"k\"] data=\"Z\" cas=7\n"
             "ok consumed=4 cmd=mn\n"
             "ok consumed=13 cmd=stats stats_arg=\"items\"\n"
             "ok consumed=9 cmd=version\n");
}

BOOST_AUTO_TEST_CASE(long_pipeline_all_fragment_sizes) {
  // ~200 requests of every kind (including errors, swallows and bad chunks).
  parser_config small;
  small.max_item_size = 64;
  std::string in;
  for (int i = 0; i < 12; ++i) {
    std::string k = "key" + std::to_string(i);
    in += "get " + k + " other" + std::to_string(i) + "\r\n";
    in += "set " + k + " " + std::to_string(i) + " 0 " + std::to_string(i) + "\r\n" +
          std::string(static_cast<size_t>(i), 'v') + "\r\n";
    in += "set " + k + " 0 0 100\r\n" + std::string(100, 'L') + "\r\n";  // too large
    in += "add " + k + " 0 0 2 noreply\r\nxyz";                          // bad chunk
    in += "mg " + k + " v t T" + std::to_string(i) + " O" + std::to_string(i) + "\n";
    in += "ms " + k + " 3 MA q\r\nabc\r\n";
    in += "ms " + k + " 2 !\r\nzz\r\n";  // swallowed
    in += "md " + k + " q\r\nma " + k + " D3\r\nmn\r\n";
    in += "gets " + k + "\nincr " + k + " 1\r\ndecr " + k + " x\r\ntouch " + k + " 5\r\n";
    in += "delete " + k + "\r\nbogus\r\n\r\nverbosity 0\r\nflush_all 0\r\n";
  }
  std::string violation;
  const std::string whole = join(T::run_chunks(in, 0, small, &violation));
  BOOST_TEST_REQUIRE(violation.empty(), violation);
  BOOST_TEST(std::count(whole.begin(), whole.end(), '\n') > 200);
  BOOST_TEST(whole.find("close") == std::string::npos);
  BOOST_TEST(whole.find("too_long") == std::string::npos);
  for (size_t c = 1; c <= 128; ++c) {
    BOOST_TEST_REQUIRE(join(T::run_chunks(in, c, small, &violation)) == whole, "chunk " << c);
    BOOST_TEST_REQUIRE(violation.empty(), violation);
  }
  for (size_t c : {257, 1000, 4096}) BOOST_TEST(join(T::run_chunks(in, c, small)) == whole);
  // Irregular fragments.
  std::vector<size_t> at;
  for (size_t p = 0, step = 1; p < in.size(); p += step, step = step * 7 % 61 + 1) at.push_back(p);
  BOOST_TEST(join(T::run_splits(in, at, small)) == whole);
}

BOOST_AUTO_TEST_CASE(too_long_and_close_stop_the_stream) {
  // Requests before a too-long line or an HTTP one are parsed; the connection answers them,
  // then closes. The parser tells the two ends apart (too_long, close).
  std::string in = "get a\r\n" + std::string(3000, 'z') + "\r\nget b\r\n";
  BOOST_TEST(events(in) == "ok consumed=7 cmd=get keys=[\"a\"]\ntoo_long\n");
  in = "get a\r\nGET /a HTTP/1.1\r\nget b\r\n";
  BOOST_TEST(events(in) == "ok consumed=7 cmd=get keys=[\"a\"]\nclose\n");
  // An HTTP line of more than 2048 bytes is a line too long first (memcached reads no further).
  in = "GET /" + std::string(2100, 'a') + " HTTP/1.1\r\n";
  BOOST_TEST(events(in) == "too_long\n");
}

BOOST_AUTO_TEST_CASE(steady_state_is_allocation_free) {
  request req;
  std::string in = "get k1 k2 k3 k4 k5 k6 k7 k8 k9 k10\r\n";
  std::string set = "set foo 0 0 100\r\n" + std::string(100, 'x') + "\r\n";
  std::string mg = "mg foo v k c f t s T30 Oabc\r\n";
  parse(in, req);  // warm up: the key vector grows once
  long before = g_allocs.load();
  for (int i = 0; i < 1000; ++i) {
    BOOST_TEST_REQUIRE(parse(in, req).status == parse_status::ok);
    BOOST_TEST_REQUIRE(parse(set, req).status == parse_status::ok);
    BOOST_TEST_REQUIRE(parse(mg, req).status == parse_status::ok);
  }
  BOOST_TEST(g_allocs.load() - before == 0);
  BOOST_TEST(req.keys.capacity() >= 10u);
}

BOOST_AUTO_TEST_CASE(request_is_fully_reset) {
  request req;
  std::string a = "ms k 2 T30 F5 Oq b\r\nxy\r\n";
  parse("ms Zm9v 2 T30 F5 Oq b\r\nxy\r\n", req);
  std::string b = "mg k\r\n";
  auto r = parse(b, req);
  BOOST_TEST(r.status == parse_status::ok);
  BOOST_TEST(req.meta.present == 0u);
  BOOST_TEST(req.meta.get('T').empty());
  BOOST_TEST(req.meta.raw.empty());
  BOOST_TEST(req.data.empty());
  BOOST_TEST(req.keys.size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

// memcached hangs up on an HTTP request line rather than answering ERROR line by line.
BOOST_AUTO_TEST_SUITE(http_request_line)

BOOST_AUTO_TEST_CASE(http_request_line_closes_in_every_fragment_size) {
  using namespace bifrost::proto;
  for (std::string in : {"GET / HTTP/1.1\r\n", "PUT /x HTTP/1.0\r\nHost: a\r\n", "DELETE /k HTTP/2 \r\n"}) {
    for (size_t chunk = 1; chunk <= in.size(); ++chunk) {
      std::string buf;
      request req;
      parse_result r;
      for (size_t pos = 0; pos < in.size(); pos += chunk) {
        buf.append(in, pos, chunk);
        r = parse(buf, req);
        if (r.status != parse_status::incomplete)
          break;
      }
      BOOST_CHECK(r.status == parse_status::close);
    }
  }
  request req;
  // A known command whose last token looks like HTTP is still that command.
  BOOST_CHECK(parse("get HTTP/1.1\r\n", req).status == parse_status::ok);
  BOOST_CHECK(parse("bogus thing\r\n", req).status == parse_status::error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(binary_refusal)

// A Cap'n Proto message (bifrostctl at the memcached port) or a TLS handshake is told apart
// from a text line on its first bytes, fed one byte at a time: undecided while it could still
// be either, and never once a newline came (a line of NULs answers ERROR, as in memcached).
BOOST_AUTO_TEST_CASE(foreign_protocols_are_told_apart_from_lines_byte_by_byte) {
  struct tcase {
    std::string bytes;
    foreign want;
  };
  const std::vector<tcase> cases = {
      {std::string("\0\0\0\0\x05\0\0\0\0\0", 10), foreign::yes},  // capnp, 5 words
      {std::string("\x16\x03\x01\x02\x00", 5), foreign::yes},          // TLS ClientHello
      {std::string("\0\0\0\r\n", 5), foreign::no},
      {std::string("\0\0\0\0\n", 5), foreign::no},
      {std::string("\0\0\0\0\x01\0\n\0", 8), foreign::no},  // (a newline at byte 6)
      {std::string("\0\0\0\0\0\0\0\0\r\n", 10), foreign::no},  // 0 words: no message
      {std::string("\0\0\0\0\0\0\0\x02", 8), foreign::no},      // 2^25 words: too large
      {std::string("\x16\n", 2), foreign::no},
      {"get k\r\n", foreign::no},
      {std::string("\x80\0", 2), foreign::no},  // (binary: its own answer)
  };
  for (const auto& c : cases) {
    foreign last = foreign::maybe;
    for (size_t n = 1; n <= c.bytes.size(); ++n) {
      const foreign f = foreign_protocol(std::string_view(c.bytes).substr(0, n));
      BOOST_TEST((last == foreign::maybe || f == last), "changed at byte " << n);
      last = f;
    }
    BOOST_TEST((last == c.want), "case " << c.bytes.size() << " bytes");
  }
}

// The RPC port's side of the same mistake: a person or memcached client (a line of text) or a
// web client (an HTTP request line) at a node's RPC port is told apart from Cap'n Proto (a
// segment count under 512 first) byte by byte, and answered in its own protocol.
BOOST_AUTO_TEST_CASE(text_and_http_at_the_rpc_port_are_told_apart_byte_by_byte) {
  struct tcase {
    std::string bytes;
    rpc_greeting want;
  };
  const std::string long_line(rpc_greeting_max, 'x');
  const std::vector<tcase> cases = {
      {std::string("\0\0\0\0\x05\0\0\0", 8), rpc_greeting::rpc},  // one segment
      {std::string("\x01\x01\0\0", 4), rpc_greeting::rpc},          // 258 segments
      {std::string("\n\0\0\0", 4), rpc_greeting::rpc},              // (11 segments)
      {"get foo\r\n", rpc_greeting::text},
      {"stats\r\n", rpc_greeting::text},  // shorter than a segment table
      {"\r\n", rpc_greeting::text},
      {"ab\n", rpc_greeting::text},
      {"set k\t0 0 1\r\n", rpc_greeting::text},
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", rpc_greeting::http},
      {"OPTIONS * HTTP/1.0  \r\n", rpc_greeting::http},
      {"HTTP/1.1\n", rpc_greeting::http},
      {long_line + "HTTP/1.1\r\n", rpc_greeting::text},  // no newline in the first 1 KiB
      {"ab\rc\r\n", rpc_greeting::other},                // a CR inside the line
      {std::string("\x16\x03\x01\x02\x00", 5), rpc_greeting::other},  // TLS ClientHello
      {std::string("\x80\x01\0\x03", 4), rpc_greeting::other},  // memcached binary
      {"caf\xc3\xa9\r\n", rpc_greeting::other},
  };
  for (const auto& c : cases) {
    rpc_greeting last = rpc_greeting::maybe;
    for (size_t n = 0; n <= c.bytes.size(); ++n) {
      const rpc_greeting g = rpc_greeting_of(std::string_view(c.bytes).substr(0, n));
      BOOST_TEST((last == rpc_greeting::maybe || g == last), "changed at byte " << n);
      last = g;
    }
    BOOST_TEST((last == c.want), "case " << c.bytes.substr(0, 20));
  }
  BOOST_TEST((rpc_greeting_of(long_line) == rpc_greeting::text));
  BOOST_TEST((rpc_greeting_of(long_line.substr(1)) == rpc_greeting::maybe));
  BOOST_TEST((rpc_greeting_of("get foo\r") == rpc_greeting::maybe));

  const std::string text = rpc_port_answer(rpc_greeting::text, "127.0.0.1:11211");
  BOOST_TEST(text ==
             "SERVER_ERROR this is a bifrost node's RPC port (Cap'n Proto, for bifrostctl and "
             "cluster nodes): memcached clients use the node's memcached port "
             "(127.0.0.1:11211)\r\n");
  const std::string http = rpc_port_answer(rpc_greeting::http, "");
  const size_t head_end = http.find("\r\n\r\n");
  BOOST_TEST_REQUIRE(head_end != std::string::npos);
  BOOST_TEST(http.substr(0, 26) == "HTTP/1.1 400 Bad Request\r\n");
  BOOST_TEST(http.find("Content-Length: " + std::to_string(http.size() - head_end - 4) +
                       "\r\n") < head_end);
  BOOST_TEST(http.find("memcached clients use the node's memcached port\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(binary_not_supported_echoes_opcode_and_opaque) {
  using namespace bifrost::proto;
  // A binary "set" header (opcode 1) with opaque 01 02 03 04, then more bytes.
  std::string req(24, '\0');
  req[0] = static_cast<char>(binary_request_magic);
  req[1] = 0x01;
  req[12] = 1, req[13] = 2, req[14] = 3, req[15] = 4;
  req += "rest of the request";
  std::string r = binary_not_supported(req);
  BOOST_REQUIRE_GE(r.size(), binary_header_size);
  BOOST_CHECK_EQUAL(static_cast<unsigned char>(r[0]), 0x81);
  BOOST_CHECK_EQUAL(r[1], 0x01);
  BOOST_CHECK_EQUAL(static_cast<unsigned char>(r[6]) << 8 | static_cast<unsigned char>(r[7]), 0x83);
  uint32_t body = 0;
  for (int i = 8; i < 12; ++i)
    body = body << 8 | static_cast<unsigned char>(r[i]);
  BOOST_CHECK_EQUAL(body, r.size() - binary_header_size);
  BOOST_CHECK(r.substr(12, 4) == std::string("\x01\x02\x03\x04", 4));
  BOOST_CHECK_EQUAL(r.substr(16, 8), std::string(8, '\0'));  // cas 0
  BOOST_CHECK(r.find("not supported") != std::string::npos);
  // A client that stopped before the whole header: what it sent, the rest zero.
  std::string shortr = binary_not_supported(req.substr(0, 2));
  BOOST_CHECK_EQUAL(shortr.size(), r.size());
  BOOST_CHECK_EQUAL(shortr[1], 0x01);
  BOOST_CHECK(shortr.substr(12, 4) == std::string(4, '\0'));
}

// memcached 1.6.18's answers, each checked against it (proto_text.c process_stat): the first
// word decides, later words count only where the subcommand reads them.
BOOST_AUTO_TEST_CASE(stats_subcommands_decide_by_their_first_word) {
  struct want {
    const char* arg;
    stats_kind kind;
    const char* error;
  };
  const char* usage = "CLIENT_ERROR usage: stats detail on|off|dump";
  for (const auto& w : std::vector<want>{
         {"", stats_kind::general, ""},
         {"reset", stats_kind::reset, ""},
         {"reset x", stats_kind::reset, ""},
         {"settings x", stats_kind::settings, ""},
         {"items", stats_kind::slab_list, ""},
         {"items foo", stats_kind::slab_list, ""},
         {"slabs x", stats_kind::slab_list, ""},
         {"sizes", stats_kind::sizes, ""},
         {"conns x", stats_kind::conns, ""},
         {"detail on", stats_kind::detail_on, ""},
         {"detail on extra", stats_kind::detail_on, ""},
         {"detail off", stats_kind::detail_off, ""},
         {"detail  dump", stats_kind::detail_dump, ""},
         {"detail", stats_kind::refused, usage},
         {"detail ON", stats_kind::refused, usage},
         {"detail dumps", stats_kind::refused, usage},
         {"cachedump 1", stats_kind::refused, "CLIENT_ERROR bad command line"},
         {"cachedump x 1", stats_kind::refused, "CLIENT_ERROR bad command line format"},
         {"cachedump -1 1", stats_kind::refused, "CLIENT_ERROR bad command line format"},
         {"cachedump 1 -5", stats_kind::refused, "CLIENT_ERROR bad command line format"},
         {"cachedump 1 1x", stats_kind::refused, "CLIENT_ERROR bad command line format"},
         {"cachedump 64 1", stats_kind::refused, "CLIENT_ERROR Illegal slab id"},
         {"cachedump 63 1", stats_kind::cachedump, ""},
         {"cachedump 1 0 1", stats_kind::cachedump, ""},
         {"cachedump 1 99999999999", stats_kind::cachedump, ""},
         {"cachedump 4294967296 1", stats_kind::cachedump, ""},  // (memcached: id wraps to 0)
         {"Items", stats_kind::unknown, ""},
         {"foo", stats_kind::unknown, ""},
         {"extstore", stats_kind::unknown, ""},
       }) {
    const auto q = classify_stats(w.arg);
    BOOST_TEST((q.kind == w.kind), "stats " << w.arg);
    BOOST_TEST(q.error == w.error, "stats " << w.arg);
  }
}

BOOST_AUTO_TEST_SUITE_END()
