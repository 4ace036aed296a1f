// plan()/compose(): memcached requests to storage ops, and results to response bytes.
//
// Every expected byte string below was first observed on a real memcached 1.6.18
// (`memcached -p <port> -U 0 -l 127.0.0.1`, probed with python sockets); the transcript line
// is quoted next to each case as "mc:". Results are fabricated storage::result values, so the
// cases pin exactly the protocol spelling, independently of the storage engine.
#include "actors/memcache_exec.hpp"

#include "storage/segment.hpp"

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

using namespace bifrost;
using actors::plan_result;
using proto::command;
using storage::op_kind;
using storage::status;
using storage::store_mode;

namespace {

constexpr uint32_t now = 1'000'000;

std::string flatten(actors::out_queue& out) {
  std::string s;
  for (auto& c : out.chunks()) {
    if (c.slice)
      s.append(c.slice.view());
    else
      s.append(c.bytes);
  }
  return s;
}

/// A value held in its own memfd segment, like the shard hands out.
storage::pinned_slice make_value(std::string_view v) {
  static auto acct = std::make_shared<storage::segment_accounting>();
  static uint64_t seq = 0;
  std::string error;
  auto seg = storage::segment::create(++seq, 4096 + v.size(), "", acct, error);
  BOOST_REQUIRE_MESSAGE(seg, error);
  std::memcpy(seg->data() + 64, v.data(), v.size());
  return storage::pinned_slice(seg, 64, static_cast<uint32_t>(v.size()));
}

proto::request text(command c, std::initializer_list<std::string_view> keys) {
  proto::request r;
  r.cmd = c;
  r.keys.assign(keys.begin(), keys.end());
  return r;
}

proto::request meta(command c, std::string_view key, std::string_view raw,
                    std::string_view data = {}) {
  proto::request r;
  r.cmd = c;
  r.keys.push_back(key);
  r.meta.raw = raw;
  r.data = data;
  return r;
}

std::vector<storage::op> plan_ok(const proto::request& req) {
  std::vector<storage::op> ops;
  auto pr = actors::plan(req, ops);
  BOOST_REQUIRE_MESSAGE(pr.k == plan_result::kind::ops, "plan error: " << pr.error);
  return ops;
}

std::string plan_error(const proto::request& req) {
  std::vector<storage::op> ops;
  auto pr = actors::plan(req, ops);
  BOOST_REQUIRE(pr.k == plan_result::kind::error);
  BOOST_CHECK(ops.empty());
  return pr.error;
}

std::string compose(const proto::request& req, const std::vector<storage::op>& ops,
                    std::vector<storage::result> results) {
  actors::out_queue out;
  actors::compose(req, ops, results, out, now);
  return flatten(out);
}

/// plan + compose with one result.
std::string run(const proto::request& req, const storage::result& r) {
  auto ops = plan_ok(req);
  BOOST_REQUIRE_EQUAL(ops.size(), 1u);
  return compose(req, ops, {r});
}

storage::result res(status st) {
  storage::result r;
  r.st = st;
  return r;
}

storage::result hit(std::string_view value, uint32_t flags = 0, uint64_t cas = 0) {
  storage::result r;
  r.st = status::hit;
  r.flags = flags;
  r.cas = cas;
  r.value_size = static_cast<uint32_t>(value.size());
  r.value = make_value(value);
  return r;
}

storage::result meta_hit(uint32_t size, uint32_t flags = 0, uint64_t cas = 0) {
  storage::result r;
  r.st = status::hit;
  r.flags = flags;
  r.cas = cas;
  r.value_size = size;
  return r;
}

storage::result number(uint64_t n, uint64_t cas = 0) {
  storage::result r;
  r.st = status::hit;
  r.number = n;
  r.cas = cas;
  return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(memcache_exec)

// -- text: retrieval ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(get_plans_one_op_per_key) {
  auto req = text(command::get, {"a", "b", "a"});
  auto ops = plan_ok(req);
  BOOST_REQUIRE_EQUAL(ops.size(), 3u);
  for (auto& o : ops) {
    BOOST_CHECK(o.kind == op_kind::get);
    BOOST_CHECK(o.get_value);
    BOOST_CHECK(o.get_bump);
    BOOST_CHECK(!o.get_touch);
  }
  BOOST_CHECK_EQUAL(ops[0].key, "a");
  BOOST_CHECK_EQUAL(ops[1].key, "b");
  BOOST_CHECK_EQUAL(ops[2].key, "a");
}

BOOST_AUTO_TEST_CASE(get_hits_and_misses) {
  // mc: "gets n k2 n" with n missing k2 -> each hit in key order, misses skipped, END.
  auto req = text(command::get, {"a", "miss", "bb"});
  auto ops = plan_ok(req);
  BOOST_CHECK_EQUAL(compose(req, ops, {hit("bar", 5), res(status::miss), hit("", 7)}),
                    "VALUE a 5 3\r\nbar\r\nVALUE bb 7 0\r\n\r\nEND\r\n");
  BOOST_CHECK_EQUAL(compose(req, ops, {res(status::miss), res(status::miss), res(status::miss)}),
                    "END\r\n");
}

BOOST_AUTO_TEST_CASE(gets_adds_cas) {
  // mc: "gets n" -> "VALUE n 3 2 16\r\n10\r\nEND\r\n"
  auto req = text(command::gets, {"n"});
  BOOST_CHECK_EQUAL(run(req, hit("10", 3, 16)), "VALUE n 3 2 16\r\n10\r\nEND\r\n");
}

BOOST_AUTO_TEST_CASE(gat_and_gats_touch) {
  // mc: "gat 100 n" -> "VALUE n 3 2\r\n10\r\nEND"; "gats 100 n nn" -> "VALUE n 3 2 16 ...END"
  auto req = text(command::gat, {"n"});
  req.exptime = 100;
  auto ops = plan_ok(req);
  BOOST_REQUIRE_EQUAL(ops.size(), 1u);
  BOOST_CHECK(ops[0].kind == op_kind::get);
  BOOST_CHECK(ops[0].get_touch);
  BOOST_CHECK_EQUAL(ops[0].ttl, 100);
  BOOST_CHECK_EQUAL(compose(req, ops, {hit("10", 3, 16)}), "VALUE n 3 2\r\n10\r\nEND\r\n");

  auto reqs = text(command::gats, {"n", "nn"});
  reqs.exptime = -1;
  auto ops2 = plan_ok(reqs);
  BOOST_REQUIRE_EQUAL(ops2.size(), 2u);
  BOOST_CHECK(ops2[1].get_touch);
  BOOST_CHECK_EQUAL(ops2[1].ttl, -1);
  BOOST_CHECK_EQUAL(compose(reqs, ops2, {hit("10", 3, 16), res(status::miss)}),
                    "VALUE n 3 2 16\r\n10\r\nEND\r\n");
}

BOOST_AUTO_TEST_CASE(gat_without_keys_answers_end) {
  // mc: "gat 10" -> "END\r\n"
  auto req = text(command::gat, {});
  req.exptime = 10;
  auto ops = plan_ok(req);
  BOOST_CHECK(ops.empty());
  BOOST_CHECK_EQUAL(compose(req, ops, {}), "END\r\n");
}

BOOST_AUTO_TEST_CASE(large_values_are_queued_as_slices) {
  auto req = text(command::get, {"a", "b"});
  auto ops = plan_ok(req);
  std::string big(100, 'x');
  actors::out_queue out(64);  // sendfile threshold 64 bytes
  actors::compose(req, ops, {hit(big, 1), hit("small", 2)}, out, now);
  auto& ch = out.chunks();
  BOOST_REQUIRE_EQUAL(ch.size(), 3u);
  BOOST_CHECK_EQUAL(ch[0].bytes, "VALUE a 1 100\r\n");
  BOOST_CHECK(ch[1].slice);
  BOOST_CHECK_EQUAL(ch[1].slice.size(), 100u);
  BOOST_CHECK_EQUAL(ch[2].bytes, "\r\nVALUE b 2 5\r\nsmall\r\nEND\r\n");
  BOOST_CHECK_EQUAL(flatten(out), "VALUE a 1 100\r\n" + big + "\r\nVALUE b 2 5\r\nsmall\r\nEND\r\n");
}

// -- text: storage -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(storage_commands_plan_store_ops) {
  struct {
    command c;
    store_mode m;
  } cases[] = {{command::set, store_mode::set},         {command::add, store_mode::add},
               {command::replace, store_mode::replace}, {command::append, store_mode::append},
               {command::prepend, store_mode::prepend}, {command::cas, store_mode::cas}};
  for (auto& c : cases) {
    auto req = text(c.c, {"k"});
    req.flags = 42;
    req.exptime = 300;
    req.data = "hello";
    req.cas_unique = c.c == command::cas ? 77 : 0;
    auto ops = plan_ok(req);
    BOOST_REQUIRE_EQUAL(ops.size(), 1u);
    BOOST_CHECK(ops[0].kind == op_kind::store);
    BOOST_CHECK(ops[0].mode == c.m);
    BOOST_CHECK_EQUAL(ops[0].key, "k");
    BOOST_CHECK_EQUAL(ops[0].value, "hello");
    BOOST_CHECK_EQUAL(ops[0].flags, 42u);
    BOOST_CHECK_EQUAL(ops[0].ttl, 300);
    BOOST_CHECK_EQUAL(ops[0].compare_cas, c.c == command::cas ? 77u : 0u);
  }
}

BOOST_AUTO_TEST_CASE(storage_replies) {
  // mc: "cas n 0 0 1 1" (wrong cas) -> EXISTS; on a missing key -> NOT_FOUND;
  // "add" existing / "replace"/"append" missing -> NOT_STORED; "prepend" -> STORED.
  auto req = text(command::set, {"k"});
  req.data = "v";
  BOOST_CHECK_EQUAL(run(req, res(status::stored)), "STORED\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::not_stored)), "NOT_STORED\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::exists)), "EXISTS\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::not_found)), "NOT_FOUND\r\n");
  // mc: "set k1 0 0 2000000" (above -I 1m) -> "SERVER_ERROR object too large for cache"
  BOOST_CHECK_EQUAL(run(req, res(status::too_large)),
                    "SERVER_ERROR object too large for cache\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::no_memory)),
                    "SERVER_ERROR out of memory storing object\r\n");
}

BOOST_AUTO_TEST_CASE(noreply_suppresses_everything) {
  // mc: "set k1 0 0 2000000 noreply" + data + "mn" -> only "MN": even SERVER_ERROR is dropped;
  // "incr k2 1 noreply" on "hi" -> nothing (the non-numeric error is dropped too);
  // "cas n 0 0 1 1 noreply", "delete k2 noreply", "incr nokey 1 noreply" -> nothing.
  for (auto c : {command::set, command::add, command::replace, command::append, command::prepend,
                 command::cas}) {
    auto req = text(c, {"k"});
    req.noreply = true;
    for (auto st : {status::stored, status::not_stored, status::exists, status::not_found,
                    status::too_large, status::no_memory})
      BOOST_CHECK_EQUAL(run(req, res(st)), "");
  }
  for (auto c : {command::delete_, command::incr, command::decr, command::touch}) {
    auto req = text(c, {"k"});
    req.noreply = true;
    for (auto st : {status::hit, status::miss, status::deleted, status::not_found,
                    status::non_numeric, status::no_memory})
      BOOST_CHECK_EQUAL(run(req, res(st)), "");
  }
}

BOOST_AUTO_TEST_CASE(delete_replies) {
  // mc: "delete k2 0" -> DELETED; missing -> NOT_FOUND
  auto req = text(command::delete_, {"k"});
  auto ops = plan_ok(req);
  BOOST_CHECK(ops[0].kind == op_kind::remove);
  BOOST_CHECK_EQUAL(ops[0].compare_cas, 0u);
  BOOST_CHECK(!ops[0].invalidate);
  BOOST_CHECK_EQUAL(run(req, res(status::deleted)), "DELETED\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::not_found)), "NOT_FOUND\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::miss)), "NOT_FOUND\r\n");
}

BOOST_AUTO_TEST_CASE(incr_decr_replies) {
  // mc: "set n 3 0 2 / 10", "incr n 5" -> "15", "decr n 100" -> "0",
  // "incr n 18446744073709551615" -> "18446744073709551615", "incr n 2" -> "1" (wraps);
  // "incr k2 1" on "hi" -> "CLIENT_ERROR cannot increment or decrement non-numeric value".
  auto req = text(command::incr, {"n"});
  req.delta = 5;
  auto ops = plan_ok(req);
  BOOST_CHECK(ops[0].kind == op_kind::arith);
  BOOST_CHECK(ops[0].incr);
  BOOST_CHECK_EQUAL(ops[0].delta, 5u);
  BOOST_CHECK(!ops[0].vivify);
  BOOST_CHECK_EQUAL(run(req, number(15)), "15\r\n");
  BOOST_CHECK_EQUAL(run(req, number(18446744073709551615ull)), "18446744073709551615\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::not_found)), "NOT_FOUND\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::miss)), "NOT_FOUND\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::non_numeric)),
                    "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::no_memory)), "SERVER_ERROR out of memory\r\n");

  auto dreq = text(command::decr, {"n"});
  dreq.delta = 100;
  auto dops = plan_ok(dreq);
  BOOST_CHECK(!dops[0].incr);
  BOOST_CHECK_EQUAL(dops[0].delta, 100u);
  BOOST_CHECK_EQUAL(run(dreq, number(0)), "0\r\n");
}

BOOST_AUTO_TEST_CASE(touch_replies) {
  // mc: "touch n 10" -> TOUCHED; "touch nn 10" -> NOT_FOUND
  auto req = text(command::touch, {"n"});
  req.exptime = 10;
  auto ops = plan_ok(req);
  BOOST_CHECK(ops[0].kind == op_kind::touch);
  BOOST_CHECK_EQUAL(ops[0].ttl, 10);
  BOOST_CHECK_EQUAL(run(req, res(status::hit)), "TOUCHED\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::miss)), "NOT_FOUND\r\n");
  BOOST_CHECK_EQUAL(run(req, res(status::not_found)), "NOT_FOUND\r\n");
}

BOOST_AUTO_TEST_CASE(local_commands) {
  for (auto c : {command::flush_all, command::version, command::verbosity, command::stats,
                 command::quit, command::mn}) {
    auto req = text(c, {});
    std::vector<storage::op> ops(2);
    auto pr = actors::plan(req, ops);
    BOOST_CHECK(pr.k == plan_result::kind::local);
    BOOST_CHECK(ops.empty());
  }
  std::vector<storage::op> ops;
  BOOST_CHECK(actors::plan(text(command::none, {}), ops).k == plan_result::kind::error);
}

BOOST_AUTO_TEST_CASE(error_lines) {
  BOOST_CHECK_EQUAL(actors::error_line(status::too_large),
                    "SERVER_ERROR object too large for cache");
  BOOST_CHECK_EQUAL(actors::error_line(status::no_memory),
                    "SERVER_ERROR out of memory storing object");
  BOOST_CHECK(actors::error_line(status::stored).empty());
}

// -- mg ----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(mg_plan) {
  auto ops = plan_ok(meta(command::mg, "foo", "v"));
  BOOST_REQUIRE_EQUAL(ops.size(), 1u);
  BOOST_CHECK(ops[0].kind == op_kind::get);
  BOOST_CHECK_EQUAL(ops[0].key, "foo");
  BOOST_CHECK(ops[0].get_value);
  BOOST_CHECK(ops[0].get_bump);
  BOOST_CHECK(!ops[0].get_touch && !ops[0].vivify && !ops[0].recache);

  ops = plan_ok(meta(command::mg, "foo", "s t c"));
  BOOST_CHECK(!ops[0].get_value);  // metadata only: no slice pinned

  ops = plan_ok(meta(command::mg, "foo", "T30 N40 R50 u E99"));
  BOOST_CHECK(ops[0].get_touch);
  BOOST_CHECK_EQUAL(ops[0].ttl, 30);
  BOOST_CHECK(ops[0].vivify);
  BOOST_CHECK_EQUAL(ops[0].vivify_ttl, 40);
  BOOST_CHECK(ops[0].recache);
  BOOST_CHECK_EQUAL(ops[0].recache_ttl, 50);
  BOOST_CHECK(!ops[0].recache_before_touch);  // R right of T: compares T's TTL
  BOOST_CHECK(plan_ok(meta(command::mg, "foo", "R50 T30"))[0].recache_before_touch);
  BOOST_CHECK(!plan_ok(meta(command::mg, "foo", "R50"))[0].recache_before_touch);
  BOOST_CHECK(!ops[0].get_bump);
  BOOST_CHECK_EQUAL(ops[0].explicit_cas, 99u);
  // N and T: an item made on a miss takes the later one's TTL (mc: "mg k N30 T1000 t" ->
  // t1000, "mg k T1000 N30 t" -> t30); a hit is touched to T's either way.
  ops = plan_ok(meta(command::mg, "foo", "N40 T30"));
  BOOST_CHECK_EQUAL(ops[0].vivify_ttl, 30);
  BOOST_CHECK_EQUAL(ops[0].ttl, 30);

  // mc: "mg foo T-5 t" expired the item; "T+5" parses; "T99999999999" is accepted by
  // 1.6.18 (strtol without range check, truncated to 32 bits).
  ops = plan_ok(meta(command::mg, "foo", "T-5"));
  BOOST_CHECK_EQUAL(ops[0].ttl, -5);
  ops = plan_ok(meta(command::mg, "foo", "T+5"));
  BOOST_CHECK_EQUAL(ops[0].ttl, 5);
  ops = plan_ok(meta(command::mg, "foo", "T99999999999"));
  BOOST_CHECK_EQUAL(ops[0].ttl, static_cast<int32_t>(99999999999ll & 0xffffffff));
  // mc: "mg foo D5 J5 C5 F5 MX I v" -> "VA 3" (flags of other commands are accepted)
  plan_ok(meta(command::mg, "foo", "D5 J5 C5 F5 MX I v"));
  // mc: "mg foo P L v" -> "VA 3\r\nbar" (P and L ignored)
  plan_ok(meta(command::mg, "foo", "P L v"));
}

BOOST_AUTO_TEST_CASE(mg_hit_flags_in_request_order) {
  // mc: "set foo 5 0 3 / bar", "mg foo v f c t s k O123 h l"
  //  -> "VA 3 f5 c1 t-1 s3 kfoo O123 h0 l1\r\nbar\r\n"
  auto r = hit("bar", 5, 1);
  r.last_access = now - 1;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", "v f c t s k O123 h l"), r),
                    "VA 3 f5 c1 t-1 s3 kfoo O123 h0 l1\r\nbar\r\n");
  // mc: "mg foo k v" -> "VA 3 kfoo\r\nbar\r\n"; "mg foo t s v" -> "VA 3 t-1 s3\r\nbar\r\n"
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", "k v"), hit("bar", 5, 1)),
                    "VA 3 kfoo\r\nbar\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", "t s v"), hit("bar", 5, 1)),
                    "VA 3 t-1 s3\r\nbar\r\n");
  // mc: "mg foo v O" -> "VA 3 O\r\nbar\r\n"
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", "v O"), hit("bar")), "VA 3 O\r\nbar\r\n");
}

BOOST_AUTO_TEST_CASE(mg_hit_without_value) {
  // mc: "mg foo" -> "HD\r\n"; "mg foo q" (hit) -> "HD\r\n" (q only elides EN);
  // "mg r T10 R200 t h l" -> "HD t10 h1 l0 Z"
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", ""), meta_hit(3)), "HD\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", "q"), meta_hit(3)), "HD\r\n");
  auto r = meta_hit(1);
  r.exptime = now + 10;
  r.fetched = true;
  r.last_access = now;
  r.already_won = true;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "r", "T10 R200 t h l"), r), "HD t10 h1 l0 Z\r\n");
  // s reports the value size from the metadata.
  BOOST_CHECK_EQUAL(run(meta(command::mg, "foo", "s f"), meta_hit(1234, 9)), "HD s1234 f9\r\n");
}

BOOST_AUTO_TEST_CASE(mg_miss) {
  // mc: "mg miss v k Oxx" -> "EN kmiss Oxx\r\n" (only O and k are echoed);
  // "mg miss" -> "EN\r\n"; "mg miss v k Oxx q" -> nothing; "mg miss s v q k Oxx" -> nothing.
  BOOST_CHECK_EQUAL(run(meta(command::mg, "miss", "v k Oxx"), res(status::miss)),
                    "EN kmiss Oxx\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "miss", "s v Oxx k f"), res(status::miss)),
                    "EN Oxx kmiss\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "miss", ""), res(status::miss)), "EN\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "miss", "v k Oxx q"), res(status::miss)), "");
  // A vivify that could not allocate is a miss for memcached too.
  BOOST_CHECK_EQUAL(run(meta(command::mg, "miss", "N30 v"), res(status::no_memory)), "EN\r\n");
}

BOOST_AUTO_TEST_CASE(mg_win_stale_flags) {
  // mc: "mg viv N30 v c t s f k q" (creates) -> "VA 0 c35 t30 s0 f0 kviv W\r\n\r\n";
  // again -> "VA 0 c35 t30 Z\r\n\r\n"
  auto r = hit("", 0, 35);
  r.st = status::stored;  // (a shard's answer when N made the item: its TTL before N is none)
  r.exptime = now + 30;
  r.exptime_before = 0;
  r.win = true;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "viv", "N30 v c t s f k q"), r),
                    "VA 0 c35 t30 s0 f0 kviv W\r\n\r\n");
  // mc: a t left of the N that made the item shows none ("mg viv t N30" -> "HD t-1 W")
  BOOST_CHECK_EQUAL(run(meta(command::mg, "viv", "t N30"), r), "HD t-1 W\r\n");
  r.st = status::hit;  // the next reader's: N made nothing
  r.exptime_before = r.exptime;
  r.win = false;
  r.already_won = true;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "viv", "N30 v c t q"), r), "VA 0 c35 t30 Z\r\n\r\n");
  // mc: after "md a I T30": "mg a v c t" -> "VA 1 c21 t30 X W", then "VA 1 c21 t30 Z X"
  auto s = hit("1", 0, 21);
  s.exptime = s.exptime_before = now + 30;
  s.stale = true;
  s.win = true;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "a", "v c t"), s), "VA 1 c21 t30 X W\r\n1\r\n");
  s.win = false;
  s.already_won = true;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "a", "v c t"), s), "VA 1 c21 t30 Z X\r\n1\r\n");
  // mc: "mg r R200 v t" (TTL 100 < 200) -> "VA 1 t100 W\r\nx\r\n"
  auto w = hit("x");
  w.exptime = w.exptime_before = now + 100;
  w.win = true;
  BOOST_CHECK_EQUAL(run(meta(command::mg, "r", "R200 v t"), w), "VA 1 t100 W\r\nx\r\n");
}

BOOST_AUTO_TEST_CASE(mg_base64_keys) {
  // mc: "mg Zm9v b v" -> "VA 3\r\nbar\r\n" (b alone echoes nothing)
  auto ops = plan_ok(meta(command::mg, "Zm9v", "b v"));
  BOOST_CHECK_EQUAL(ops[0].key, "foo");
  BOOST_CHECK_EQUAL(compose(meta(command::mg, "Zm9v", "b v"), ops, {hit("bar")}),
                    "VA 3\r\nbar\r\n");
  // mc: "ms Zm9vYg== 2 b k c" then "mg Zm9vYg== b k v" -> "VA 2 kZm9vYg== b\r\nhi\r\n"
  BOOST_CHECK_EQUAL(run(meta(command::mg, "Zm9vYg==", "b k v"), hit("hi")),
                    "VA 2 kZm9vYg== b\r\nhi\r\n");
  // mc: "mg Zm9v k b s" -> key echoed base64 with its b marker at the k position
  BOOST_CHECK_EQUAL(run(meta(command::mg, "Zm9v", "k b s"), meta_hit(3)), "HD kZm9v b s3\r\n");
  // mc: "mg bWlzcw== b k v" -> "EN kbWlzcw== b\r\n"; "mg bWlzcw== b v" -> "EN\r\n"
  BOOST_CHECK_EQUAL(run(meta(command::mg, "bWlzcw==", "b k v"), res(status::miss)),
                    "EN kbWlzcw== b\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "bWlzcw==", "b v"), res(status::miss)), "EN\r\n");
  // mc: "mg YQ==YQ== b k" -> "EN kYQ== b" and "mg YR== b k" -> "EN kYQ== b": the echo is the
  // decoded key re-encoded, not the token as sent.
  ops = plan_ok(meta(command::mg, "YQ==YQ==", "b k"));
  BOOST_CHECK_EQUAL(ops[0].key, "a");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "YQ==YQ==", "b k"), res(status::miss)), "EN kYQ== b\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::mg, "YR==", "b k"), res(status::miss)), "EN kYQ== b\r\n");
  // Binary keys are allowed after decoding ("AA==" is one NUL byte; mc: "EN kAA== b").
  ops = plan_ok(meta(command::mg, "AA==", "b k"));
  BOOST_CHECK_EQUAL(ops[0].key, std::string(1, '\0'));
  BOOST_CHECK_EQUAL(run(meta(command::mg, "AA==", "b k"), res(status::miss)), "EN kAA== b\r\n");
}

BOOST_AUTO_TEST_CASE(mg_errors) {
  // mc, one line each:
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "!!!", "b v")), "CLIENT_ERROR error decoding key");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "YQ", "b k")), "CLIENT_ERROR error decoding key");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "====", "b k")), "CLIENT_ERROR error decoding key");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "v v")), "CLIENT_ERROR duplicate flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "v X")), "CLIENT_ERROR invalid flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "x")), "CLIENT_ERROR invalid flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "k", "!")), "CLIENT_ERROR invalid flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "k", "\x80")), "CLIENT_ERROR duplicate flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Tabc v")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "T t")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Nx v")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Rx v")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Cx v")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Dx v")),
                    "CLIENT_ERROR invalid numeric delta value");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Jx v")),
                    "CLIENT_ERROR invalid numeric initial value");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Fx v")),
                    "CLIENT_ERROR bad command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "MXX v")),
                    "CLIENT_ERROR incorrect length for M token");
  // Token errors keep going; the last message set wins, F sets none.
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Tx Nx Dx v")),
                    "CLIENT_ERROR invalid numeric delta value");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "k", "Fx Tx")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "k", "Tx Fx")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Tb b")), "CLIENT_ERROR error decoding key");
  // ... but an unknown or duplicate flag stops at once with its own message.
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Tx Z v")), "CLIENT_ERROR invalid flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "Tx v v")), "CLIENT_ERROR duplicate flag");
  // mc: 1.6.18 has no E flag ("mg foo E5 v" -> invalid flag); bifrost accepts it (newer 1.6).
  // Opaque: at most 32 bytes including the O.
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "v O123456789012345678901234567890123")),
                    "CLIENT_ERROR opaque token too long");
  plan_ok(meta(command::mg, "foo", "v O1234567890123456789012345678901"));
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "k", "O123456789012345678901234567890123 Tx")),
                    "CLIENT_ERROR bad token in command line format");
  // mc: 17 flags are fine, 18 -> "CLIENT_ERROR options flags are too long"
  plan_ok(meta(command::mg, "foo", "v s t c f k h l q O1 P L u R5 D1 J1 C1"));
  BOOST_CHECK_EQUAL(plan_error(meta(command::mg, "foo", "v s t c f k h l q O1 P L u R5 D1 J1 C1 F1")),
                    "CLIENT_ERROR options flags are too long");
}

// -- ms ----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(ms_plan) {
  auto ops = plan_ok(meta(command::ms, "k1", "T30 F7 I E5", "hi"));
  BOOST_REQUIRE_EQUAL(ops.size(), 1u);
  BOOST_CHECK(ops[0].kind == op_kind::store);
  BOOST_CHECK(ops[0].mode == store_mode::set);
  BOOST_CHECK_EQUAL(ops[0].key, "k1");
  BOOST_CHECK_EQUAL(ops[0].value, "hi");
  BOOST_CHECK_EQUAL(ops[0].ttl, 30);
  BOOST_CHECK_EQUAL(ops[0].flags, 7u);
  BOOST_CHECK(ops[0].invalidate);
  BOOST_CHECK_EQUAL(ops[0].explicit_cas, 5u);
  BOOST_CHECK_EQUAL(ops[0].compare_cas, 0u);

  struct {
    const char* raw;
    store_mode m;
    uint64_t cas;
  } modes[] = {{"ME", store_mode::add, 0},     {"MA", store_mode::append, 0},
               {"MP", store_mode::prepend, 0}, {"MR", store_mode::replace, 0},
               {"MS", store_mode::set, 0},     {"C9", store_mode::cas, 9},
               {"MS C9", store_mode::cas, 9},  {"MR C9", store_mode::cas, 9},
               {"ME C9", store_mode::add, 9},  {"MA C9", store_mode::append, 9}};
  for (auto& m : modes) {
    ops = plan_ok(meta(command::ms, "k", m.raw, "v"));
    BOOST_CHECK_MESSAGE(ops[0].mode == m.m, m.raw);
    BOOST_CHECK_EQUAL(ops[0].compare_cas, m.cas);
  }
  // mc: "ms a 1 F4294967296" then "mg a f" -> "HD f0" (wraps); "F+7" -> f7; "F-0" accepted.
  BOOST_CHECK_EQUAL(plan_ok(meta(command::ms, "a", "F4294967296", "x"))[0].flags, 0u);
  BOOST_CHECK_EQUAL(plan_ok(meta(command::ms, "a", "F+7", "x"))[0].flags, 7u);
  BOOST_CHECK_EQUAL(plan_ok(meta(command::ms, "a", "F-0", "x"))[0].flags, 0u);
  // mc: flags of other commands are accepted and ignored ("ms k1 2 s" / "v" / "f" -> HD)
  plan_ok(meta(command::ms, "foo", "N5 R5 D5 J5 h l u P L s t v f", "x"));
  // Base64 key.
  BOOST_CHECK_EQUAL(plan_ok(meta(command::ms, "Zm9vYg==", "b", "hi"))[0].key, "foob");
}

BOOST_AUTO_TEST_CASE(ms_replies) {
  // mc: "ms k1 2 T0 F7 c k O9" -> "HD c2 kk1 O9\r\n" (request order)
  auto stored = res(status::stored);
  stored.cas = 2;
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "T0 F7 c k O9", "hi"), stored), "HD c2 kk1 O9\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "", "hi"), stored), "HD\r\n");
  // mc: "ms k1 2 q" -> nothing; "ms k1 2 ME" on existing -> NS; "ms nokey 2 MA q" -> "NS";
  // "ms k1 2 C1 q" -> "EX"; "ms nokey 2 C1" -> "NF"
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "q", "hi"), stored), "");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "ME", "hi"), res(status::not_stored)), "NS\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "nokey", "MA q", "hi"), res(status::not_stored)),
                    "NS\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "C1 q", "hi"), res(status::exists)), "EX\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "nokey", "C1", "hi"), res(status::not_found)), "NF\r\n");
  // mc: "ms nokey 2 MR O1 k" -> "NS O1 knokey"; "ms nokey 2 MR c k" -> "NS c0 knokey";
  // "ms nokey 2 C5 c" -> "NF c0"; "ms k 1 C1 c" -> "EX c0" (c is 0 unless stored)
  auto ns = res(status::not_stored);
  ns.cas = 99;
  BOOST_CHECK_EQUAL(run(meta(command::ms, "nokey", "MR O1 k", "hi"), ns), "NS O1 knokey\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "nokey", "MR c k", "hi"), ns), "NS c0 knokey\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "nokey", "C5 c", "hi"), res(status::not_found)),
                    "NF c0\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k", "C1 c", "y"), res(status::exists)), "EX c0\r\n");
  // mc: "ms Zm9vYg== 2 b k c" -> "HD kZm9vYg== b c5";
  // "ms bm9rZXk= 2 MR b k c O1" -> "NS kbm9rZXk= b c0 O1"
  auto st5 = res(status::stored);
  st5.cas = 5;
  BOOST_CHECK_EQUAL(run(meta(command::ms, "Zm9vYg==", "b k c", "hi"), st5),
                    "HD kZm9vYg== b c5\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "bm9rZXk=", "MR b k c O1", "hi"), ns),
                    "NS kbm9rZXk= b c0 O1\r\n");
  // mc: "ms k1 2000000 q" + data -> "SERVER_ERROR object too large for cache" despite q
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "q", "hi"), res(status::too_large)),
                    "SERVER_ERROR object too large for cache\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ms, "k1", "q", "hi"), res(status::no_memory)),
                    "SERVER_ERROR out of memory storing object\r\n");
}

BOOST_AUTO_TEST_CASE(ms_errors) {
  // mc, one line each:
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Me", "hi")),
                    "CLIENT_ERROR invalid mode for ms M token");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Ma", "hi")),
                    "CLIENT_ERROR invalid mode for ms M token");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "MX", "hi")),
                    "CLIENT_ERROR invalid mode for ms M token");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "MEE", "hi")),
                    "CLIENT_ERROR incorrect length for M token");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Tx", "hi")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Fx", "hi")),
                    "CLIENT_ERROR bad command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "a", "F-1", "x")),
                    "CLIENT_ERROR bad command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Cx", "hi")),
                    "CLIENT_ERROR bad token in command line format");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Dx", "hi")),
                    "CLIENT_ERROR invalid numeric delta value");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "Jx", "hi")),
                    "CLIENT_ERROR invalid numeric initial value");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "q q", "hi")), "CLIENT_ERROR duplicate flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "!!!", "b", "hi")),
                    "CLIENT_ERROR error decoding key");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k1", "x", "hi")), "CLIENT_ERROR invalid flag");
  // mc: opaque over 32 -> "CLIENT_ERROR opaque token too long"; with a bad mode the mode error
  // wins; with a bad token the token error wins.
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k", "O12345678901234567890123456789012", "x")),
                    "CLIENT_ERROR opaque token too long");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k", "O123456789012345678901234567890123 MX", "x")),
                    "CLIENT_ERROR invalid mode for ms M token");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "k", "O123456789012345678901234567890123 Tx", "x")),
                    "CLIENT_ERROR bad token in command line format");
  // mc: ms counts its length token too: 16 flags -> "HD c82 kfoo O1"; 17 -> "CLIENT_ERROR
  // options flags too long" (and memcached then does not swallow the data block).
  plan_ok(meta(command::ms, "foo", "s t c f k h l O1 P L u R5 D1 J1 N1 v", "x"));
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "foo", "s t c f k h l O1 P L u R5 D1 J1 N1 v q", "x")),
                    "CLIENT_ERROR options flags too long");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ms, "foo", "s t c f k h l O1 P L u R5 D1 J1 N1 v T0", "x")),
                    "CLIENT_ERROR options flags too long");
}

// -- md ----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(md_plan) {
  auto ops = plan_ok(meta(command::md, "a", ""));
  BOOST_CHECK(ops[0].kind == op_kind::remove);
  BOOST_CHECK_EQUAL(ops[0].key, "a");
  BOOST_CHECK(!ops[0].invalidate);
  BOOST_CHECK(!ops[0].get_touch);
  ops = plan_ok(meta(command::md, "a", "C5 I T30"));
  BOOST_CHECK_EQUAL(ops[0].compare_cas, 5u);
  BOOST_CHECK(ops[0].invalidate);
  BOOST_CHECK(ops[0].get_touch);  // T given: the stale item gets this TTL
  BOOST_CHECK_EQUAL(ops[0].ttl, 30);
  BOOST_CHECK_EQUAL(plan_ok(meta(command::md, "YQ==", "b k"))[0].key, "a");
  // mc: "md a s" -> HD (s t c f ... accepted and ignored)
  plan_ok(meta(command::md, "foo", "s t c f k h l O1 P L u R5 D1 J1 v C1"));
}

BOOST_AUTO_TEST_CASE(md_replies) {
  // mc: "md a k O5 q" (deleted) -> nothing; then "md a k O5" -> "NF ka O5"; "md a q" -> "NF";
  // "md a C1 O5 k" (cas mismatch) -> "EX O5 ka"; "md a I T30 k" -> "HD ka";
  // "md d C5 q k" -> "EX kd"; "md YQ== b k" -> "NF kYQ== b"
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", "k O5 q"), res(status::deleted)), "");
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", "k O5"), res(status::not_found)), "NF ka O5\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", "q"), res(status::not_found)), "NF\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", "C1 O5 k"), res(status::exists)), "EX O5 ka\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", "I T30 k"), res(status::deleted)), "HD ka\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "d", "C5 q k"), res(status::exists)), "EX kd\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "YQ==", "b k"), res(status::not_found)), "NF kYQ== b\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", ""), res(status::deleted)), "HD\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::md, "a", ""), res(status::miss)), "NF\r\n");
}

BOOST_AUTO_TEST_CASE(md_errors) {
  // mc: md answers every flag error with one line ("md a Cx", "md a Z", "md a q q",
  // "md !!! b", "md k Tx").
  for (auto raw : {"Cx", "Z", "q q", "Tx", "x"})
    BOOST_CHECK_EQUAL(plan_error(meta(command::md, "a", raw)),
                      "CLIENT_ERROR invalid or duplicate flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::md, "!!!", "b")),
                    "CLIENT_ERROR invalid or duplicate flag");
  // mc: "md k O123456789012345678901234567890123" -> "CLIENT_ERROR opaque token too long"
  BOOST_CHECK_EQUAL(plan_error(meta(command::md, "k", "O123456789012345678901234567890123")),
                    "CLIENT_ERROR opaque token too long");
  // mc: 17 flags -> "EX kfoo O1"; 18 -> "CLIENT_ERROR options flags too long"
  BOOST_CHECK_EQUAL(plan_error(meta(command::md, "foo", "s t c f k h l O1 P L u R5 D1 J1 v C1 F1 N1")),
                    "CLIENT_ERROR options flags too long");
}

// -- ma ----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(ma_plan) {
  auto ops = plan_ok(meta(command::ma, "cnt", ""));
  BOOST_CHECK(ops[0].kind == op_kind::arith);
  BOOST_CHECK(ops[0].incr);
  BOOST_CHECK_EQUAL(ops[0].delta, 1u);
  BOOST_CHECK(!ops[0].vivify);
  BOOST_CHECK(!ops[0].get_touch);

  ops = plan_ok(meta(command::ma, "cnt", "N0 J10 D3 MD C4"));
  BOOST_CHECK(!ops[0].incr);
  BOOST_CHECK_EQUAL(ops[0].delta, 3u);
  BOOST_CHECK(ops[0].vivify);
  BOOST_CHECK_EQUAL(ops[0].vivify_ttl, 0);
  BOOST_CHECK_EQUAL(ops[0].initial, 10u);
  BOOST_CHECK_EQUAL(ops[0].compare_cas, 4u);

  // mc: "ma k N30 T1000 t" -> t1000, "ma k T1000 N0 t" -> t-1: the later flag's TTL.
  ops = plan_ok(meta(command::ma, "cnt", "N30 T60"));
  BOOST_CHECK_EQUAL(ops[0].vivify_ttl, 60);
  BOOST_CHECK(ops[0].get_touch);
  BOOST_CHECK_EQUAL(ops[0].ttl, 60);
  ops = plan_ok(meta(command::ma, "cnt", "T60 N0"));
  BOOST_CHECK_EQUAL(ops[0].vivify_ttl, 0);
  BOOST_CHECK_EQUAL(ops[0].ttl, 60);
  ops = plan_ok(meta(command::ma, "cnt", "N30"));
  BOOST_CHECK_EQUAL(ops[0].ttl, 30);  // vivify TTL mirrored into ttl (for older nodes)

  // mc: modes I + D - (uppercase only in 1.6.18: "Mi"/"Md" are invalid)
  BOOST_CHECK(plan_ok(meta(command::ma, "c", "MI"))[0].incr);
  BOOST_CHECK(plan_ok(meta(command::ma, "c", "M+"))[0].incr);
  BOOST_CHECK(!plan_ok(meta(command::ma, "c", "MD"))[0].incr);
  BOOST_CHECK(!plan_ok(meta(command::ma, "c", "M-"))[0].incr);
  // mc: "ma zz N0 J18446744073709551615 v" -> "VA 20 ... 18446744073709551615"; "D+2" accepted
  BOOST_CHECK_EQUAL(plan_ok(meta(command::ma, "c", "J18446744073709551615"))[0].initial,
                    18446744073709551615ull);
  BOOST_CHECK_EQUAL(plan_ok(meta(command::ma, "c", "D+2"))[0].delta, 2u);
}

BOOST_AUTO_TEST_CASE(ma_replies) {
  // mc: "ma cnt" (missing) -> "NF"; "ma cnt N0 J10 v t c k O1" -> "VA 2 t-1 c22 kcnt O1\r\n10";
  // "ma cnt v" -> "VA 2\r\n11"; "ma cnt MD D3 v" -> "VA 1\r\n8";
  // "ma cnt M+ D100 v T0 t" -> "VA 3 t-1\r\n107"; "ma cnt q" (hit) -> nothing;
  // "ma nn q" -> "NF"; "ma nn q O1 k" -> "NF O1 knn"; "ma nn t c v k" -> "NF knn"
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", ""), res(status::not_found)), "NF\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", "N0 J10 v t c k O1"), number(10, 22)),
                    "VA 2 t-1 c22 kcnt O1\r\n10\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", "v"), number(11)), "VA 2\r\n11\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", "MD D3 v"), number(8)), "VA 1\r\n8\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", "M+ D100 v T0 t"), number(107)),
                    "VA 3 t-1\r\n107\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", ""), number(108)), "HD\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", "q"), number(108)), "");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "cnt", "q v O1"), number(108)), "");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "nn", "q"), res(status::not_found)), "NF\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "nn", "q O1 k"), res(status::miss)), "NF O1 knn\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "nn", "t c v k"), res(status::not_found)), "NF knn\r\n");
  // mc: "ma c1 N0 J5 q v" (creates) -> "VA 1\r\n5" despite q; "ma c1 q v" (exists) -> nothing.
  // The creation is answered only if the shard reports it as `stored`.
  auto created = number(5);
  created.st = status::stored;
  BOOST_CHECK_EQUAL(run(meta(command::ma, "c1", "N0 J5 q v"), created), "VA 1\r\n5\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "c1", "q v"), number(6)), "");
  // mc: "ma x N30 t v" (created) -> "VA 1 t30\r\n0"
  auto viv = number(0);
  viv.st = status::stored;  // (made by N: no TTL before it)
  viv.exptime = now + 30;
  BOOST_CHECK_EQUAL(run(meta(command::ma, "x", "N30 t v"), viv), "VA 1 t30\r\n0\r\n");
  // mc: "ma y t N30" (created) -> "HD t-1"; "ma c t T30 v" on 5 without TTL -> "VA 1 t-1"
  BOOST_CHECK_EQUAL(run(meta(command::ma, "y", "t N30"), viv), "HD t-1\r\n");
  auto touched = number(6);
  touched.exptime = now + 30;
  touched.exptime_before = 0;
  BOOST_CHECK_EQUAL(run(meta(command::ma, "c", "t T30 v"), touched), "VA 1 t-1\r\n6\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "c", "T30 t v"), touched), "VA 1 t30\r\n6\r\n");
  // CAS mismatch (C): EX with O/k.
  BOOST_CHECK_EQUAL(run(meta(command::ma, "x", "C1 k"), res(status::exists)), "EX kx\r\n");
  // mc: "ma s" on "a" -> non-numeric error, also with q
  BOOST_CHECK_EQUAL(run(meta(command::ma, "s", "q"), res(status::non_numeric)),
                    "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "s", ""), res(status::no_memory)),
                    "SERVER_ERROR out of memory\r\n");
  BOOST_CHECK_EQUAL(run(meta(command::ma, "Y250", "b k v"), number(3)), "VA 1 kY250 b\r\n3\r\n");
}

BOOST_AUTO_TEST_CASE(ma_errors) {
  // mc: every flag error of ma is "CLIENT_ERROR invalid or duplicate flag"
  // ("ma c1 Dx", "Jx", "Nx", "Tx", "MDD", "Z", "v v", "!!! b", "J-1", "J18446744073709551616")
  for (auto raw : {"Dx", "Jx", "Nx", "Tx", "MDD", "Z", "v v", "J-1", "J18446744073709551616",
                   "MX Dx"})
    BOOST_CHECK_EQUAL(plan_error(meta(command::ma, "c1", raw)),
                      "CLIENT_ERROR invalid or duplicate flag");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ma, "!!!", "b")),
                    "CLIENT_ERROR invalid or duplicate flag");
  for (auto raw : {"Mx", "Mi", "Md", "MX"})
    BOOST_CHECK_EQUAL(plan_error(meta(command::ma, "cnt", raw)),
                      "CLIENT_ERROR invalid mode for ma M token");
  BOOST_CHECK_EQUAL(plan_error(meta(command::ma, "foo", "s t c f k h l O1 P L u R5 D1 J1 v C1 F1 N1")),
                    "CLIENT_ERROR options flags too long");
}

// -- me / mn -----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(me_debug) {
  auto req = meta(command::me, "e", "");
  auto ops = plan_ok(req);
  BOOST_REQUIRE_EQUAL(ops.size(), 1u);
  BOOST_CHECK(ops[0].kind == op_kind::get);
  BOOST_CHECK(!ops[0].get_value);
  BOOST_CHECK(!ops[0].get_bump);
  // mc: "set e 3 100 2 / hi", "me e" -> "ME e exp=-100 la=0 cas=34 fetch=no cls=1 size=66"
  // (exp is now - exptime: negative while alive); after "mg e v": fetch=yes
  auto r = meta_hit(2, 3, 34);
  r.exptime = now + 100;
  r.last_access = now;
  BOOST_CHECK_EQUAL(compose(req, ops, {r}), "ME e exp=-100 la=0 cas=34 fetch=no cls=1 size=66\r\n");
  r.fetched = true;
  r.last_access = now - 7;
  BOOST_CHECK_EQUAL(compose(req, ops, {r}), "ME e exp=-100 la=7 cas=34 fetch=yes cls=1 size=66\r\n");
  // mc: no expiry -> exp=-1; size = ITEM_ntotal, cls = memcached's default slab class:
  // "kk0_0" flags 0 value 0 -> cls=1 size=64; "kk37_0" 37 B -> cls=2 size=102;
  // "kk100_5" -> cls=4 size=170; "kk1000_0" -> cls=12 size=1067; "kk10000_0" -> cls=22
  // size=10068; "kk100000_0" -> cls=32 size=100069; "kk600000_0" -> cls=39 size=600069.
  struct {
    const char* key;
    uint32_t size, flags;
    const char* tail;
  } sizes[] = {{"kk0_0", 0, 0, "cls=1 size=64"},          {"kk37_0", 37, 0, "cls=2 size=102"},
               {"kk100_5", 100, 5, "cls=4 size=170"},     {"kk1000_0", 1000, 0, "cls=12 size=1067"},
               {"kk10000_0", 10000, 0, "cls=22 size=10068"},
               {"kk100000_0", 100000, 0, "cls=32 size=100069"},
               {"kk500000_0", 500000, 0, "cls=39 size=500069"},
               {"kk600000_0", 600000, 0, "cls=39 size=600069"}};
  for (auto& s : sizes) {
    auto q = meta(command::me, s.key, "");
    auto o = plan_ok(q);
    auto h = meta_hit(s.size, s.flags, 44);
    h.last_access = now;
    BOOST_CHECK_EQUAL(compose(q, o, {h}), std::string("ME ") + s.key +
                                              " exp=-1 la=0 cas=44 fetch=no " + s.tail + "\r\n");
  }
  // mc: "me nope" -> "EN"; "me YQ== b" (missing) -> "EN"; "me !!! b" -> bad command line
  // format; "me e x y" -> extra tokens ignored.
  BOOST_CHECK_EQUAL(run(meta(command::me, "nope", ""), res(status::miss)), "EN\r\n");
  BOOST_CHECK_EQUAL(plan_ok(meta(command::me, "YQ==", "b"))[0].key, "a");
  BOOST_CHECK_EQUAL(plan_ok(meta(command::me, "YQ==", "k b"))[0].key, "YQ==");  // b must be first
  BOOST_CHECK_EQUAL(plan_error(meta(command::me, "!!!", "b")), "CLIENT_ERROR bad command line format");
  BOOST_CHECK_EQUAL(plan_ok(meta(command::me, "e", "x y"))[0].key, "e");
  auto bin = meta(command::me, "YQ==", "b");
  auto hb = meta_hit(1);
  hb.last_access = now;
  BOOST_CHECK_EQUAL(compose(bin, plan_ok(bin), {hb}),
                    "ME YQ== exp=-1 la=0 cas=0 fetch=no cls=1 size=61\r\n");
}

BOOST_AUTO_TEST_CASE(compose_survives_moved_values_and_missing_results) {
  // The connection moves op.value to the shard before compose(); only keys are read back.
  auto req = meta(command::ms, "k", "k c", "data");
  auto ops = plan_ok(req);
  ops[0].value.clear();
  auto st = res(status::stored);
  st.cas = 8;
  BOOST_CHECK_EQUAL(compose(req, ops, {st}), "HD kk c8\r\n");
  // A result that never came is answered like a miss rather than crashing.
  BOOST_CHECK_EQUAL(compose(meta(command::mg, "k", "v"), plan_ok(meta(command::mg, "k", "v")), {}),
                    "EN\r\n");
  auto g = text(command::get, {"a", "b"});
  BOOST_CHECK_EQUAL(compose(g, plan_ok(g), {hit("x")}), "VALUE a 0 1\r\nx\r\nEND\r\n");
}

// -- through the parser -----------------------------------------------------------------------

namespace {

/// Parses one request from wire bytes (kept alive by `buf`), then plans it.
struct wire {
  std::string buf;
  proto::request req;
  std::vector<storage::op> ops;
  explicit wire(std::string bytes) : buf(std::move(bytes)) {
    auto r = proto::parse(buf, req);
    BOOST_REQUIRE_MESSAGE(r.status == proto::parse_status::ok, "parse: " << r.error);
    BOOST_REQUIRE_EQUAL(r.consumed, buf.size());
    ops = plan_ok(req);
  }
  std::string answer(std::vector<storage::result> results) {
    return compose(req, ops, std::move(results));
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(parsed_requests_end_to_end) {
  {
    wire w("mg foo v f c t s k O123 h l\r\n");
    auto r = hit("bar", 5, 1);
    r.last_access = now - 1;
    BOOST_CHECK_EQUAL(w.answer({r}), "VA 3 f5 c1 t-1 s3 kfoo O123 h0 l1\r\nbar\r\n");
  }
  {
    wire w("mg miss v k Oxx\r\n");
    BOOST_CHECK_EQUAL(w.answer({res(status::miss)}), "EN kmiss Oxx\r\n");
  }
  {
    wire w("mg bWlzcw== b k v\r\n");
    BOOST_CHECK_EQUAL(w.ops[0].key, "miss");
    BOOST_CHECK_EQUAL(w.answer({res(status::miss)}), "EN kbWlzcw== b\r\n");
  }
  {
    wire w("ms k1 2 T0 F7 c k O9\r\nhi\r\n");
    BOOST_CHECK_EQUAL(w.ops[0].value, "hi");
    BOOST_CHECK_EQUAL(w.ops[0].flags, 7u);
    auto st = res(status::stored);
    st.cas = 2;
    BOOST_CHECK_EQUAL(w.answer({st}), "HD c2 kk1 O9\r\n");
  }
  {
    wire w("ma cnt N0 J10 v t c k O1\r\n");
    BOOST_CHECK(w.ops[0].vivify);
    BOOST_CHECK_EQUAL(w.ops[0].initial, 10u);
    BOOST_CHECK_EQUAL(w.answer({number(10, 22)}), "VA 2 t-1 c22 kcnt O1\r\n10\r\n");
  }
  {
    wire w("md a C1 O5 k\r\n");
    BOOST_CHECK_EQUAL(w.ops[0].compare_cas, 1u);
    BOOST_CHECK_EQUAL(w.answer({res(status::exists)}), "EX O5 ka\r\n");
  }
  {
    wire w("me YQ== b\r\n");
    BOOST_CHECK_EQUAL(w.ops[0].key, "a");
    BOOST_CHECK_EQUAL(w.answer({res(status::miss)}), "EN\r\n");
  }
  {
    wire w("gets a b\r\n");
    BOOST_CHECK_EQUAL(w.answer({hit("x", 1, 9), hit("yz", 0, 10)}),
                      "VALUE a 1 1 9\r\nx\r\nVALUE b 0 2 10\r\nyz\r\nEND\r\n");
  }
  {
    wire w("set k 5 0 2 noreply\r\nhi\r\n");
    BOOST_CHECK_EQUAL(w.ops[0].value, "hi");
    BOOST_CHECK_EQUAL(w.answer({res(status::stored)}), "");
  }
  {
    wire w("incr n 5\r\n");
    BOOST_CHECK_EQUAL(w.answer({number(15)}), "15\r\n");
  }
}

BOOST_AUTO_TEST_SUITE_END()
