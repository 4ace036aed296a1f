// Helpers shared by the storage tests: an injectable clock, a scratch directory, op shorthands.
#pragma once

#include "storage/shard.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>

namespace bifrost::storage {
inline std::ostream& operator<<(std::ostream& os, status st) {
  static const char* const names[] = {"hit",       "miss",     "stored",    "not_stored",
                                      "exists",    "not_found", "deleted",  "too_large",
                                      "no_memory", "non_numeric", "ok"};
  const auto i = static_cast<size_t>(st);
  return os << (i < sizeof names / sizeof *names ? names[i] : "?");
}
} // namespace bifrost::storage

namespace bifrost::storage::test {

inline constexpr uint32_t k_t0 = 1700000000;  // a plausible "now" (well above 30 days)

struct fake_clock {
  std::shared_ptr<uint32_t> t = std::make_shared<uint32_t>(k_t0);
  clock_fn fn() const {
    auto p = t;
    return [p] { return *p; };
  }
  void advance(uint32_t s) { *t += s; }
  uint32_t now() const { return *t; }
};

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/bifrost-storage-test-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    BOOST_REQUIRE(p != nullptr);
    path = p;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

inline shard_config small_config() {
  shard_config c;
  c.segment_size = 64 << 10;
  c.memory_limit = 16 << 20;
  c.max_item_size = 1 << 20;
  return c;
}

inline std::unique_ptr<shard> open_shard(const shard_config& cfg, const fake_clock& clk) {
  std::string err;
  auto s = shard::open(cfg, clk.fn(), err);
  BOOST_REQUIRE_MESSAGE(s != nullptr, "shard::open: " << err);
  return s;
}

inline op store_op(const std::string& key, const std::string& value,
                   store_mode mode = store_mode::set) {
  op o;
  o.kind = op_kind::store;
  o.key = key;
  o.value = value;
  o.mode = mode;
  return o;
}

inline result do_store(shard& s, const std::string& key, const std::string& value,
                       store_mode mode = store_mode::set, int64_t ttl = 0, uint32_t flags = 0,
                       uint64_t compare_cas = 0) {
  op o = store_op(key, value, mode);
  o.ttl = ttl;
  o.flags = flags;
  o.compare_cas = compare_cas;
  return s.execute(o);
}

inline result do_set(shard& s, const std::string& key, const std::string& value, int64_t ttl = 0,
                     uint32_t flags = 0) {
  return do_store(s, key, value, store_mode::set, ttl, flags);
}

inline result do_get(shard& s, const std::string& key) {
  op o;
  o.kind = op_kind::get;
  o.key = key;
  return s.execute(o);
}

inline result do_delete(shard& s, const std::string& key, uint64_t compare_cas = 0) {
  op o;
  o.kind = op_kind::remove;
  o.key = key;
  o.compare_cas = compare_cas;
  return s.execute(o);
}

inline result do_arith(shard& s, const std::string& key, bool incr, uint64_t delta) {
  op o;
  o.kind = op_kind::arith;
  o.key = key;
  o.incr = incr;
  o.delta = delta;
  return s.execute(o);
}

inline result do_touch(shard& s, const std::string& key, int64_t ttl) {
  op o;
  o.kind = op_kind::touch;
  o.key = key;
  o.ttl = ttl;
  return s.execute(o);
}

inline result do_flush(shard& s, int64_t ttl) {
  op o;
  o.kind = op_kind::flush;
  o.ttl = ttl;
  return s.execute(o);
}

/// The value of `key`, or "<miss>".
inline std::string value_of(shard& s, const std::string& key) {
  result r = do_get(s, key);
  if (r.st != status::hit) return "<miss>";
  return std::string(r.value.view());
}

} // namespace bifrost::storage::test
