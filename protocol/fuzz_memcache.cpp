// libFuzzer target for the memcached request parser.
//
// 1. Parses the input repeatedly like a connection (consume, continue, swallow after errors,
//    stop on close) and checks the parse() contract on every call: consumed <= size,
//    progress on ok/error, incomplete consumes nothing, `need` lies beyond the input,
//    every view lies inside the consumed bytes, parse() is pure (same input, same output).
// 2. Feeds the same input split at a few points (derived from the input) and in small
//    chunks, and requires the identical sequence of results.
// 3. base64: decode(encode(x)) == x, and decoding arbitrary input never overruns.
// 4. A stats line's subcommand reader (classify_stats) is pure, and gives an error line
//    exactly when it refuses.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/memcache.hpp"
#include "protocol/memcache_testing.hpp"

using namespace bifrost::proto;

namespace {

[[noreturn]] void die(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz_memcache invariant violated: %s %s\n", what, detail.c_str());
  std::abort();
}

bool inside(std::string_view in, std::string_view v) {
  return v.empty() ||
         (v.data() >= in.data() && v.data() + v.size() <= in.data() + in.size());
}

void check_one(std::string_view in, const parser_config& cfg, request& req, request& req2) {
  size_t pos = 0;
  for (int guard = 0; guard < 1 << 20; ++guard) {
    std::string_view rest = in.substr(pos);
    parse_result r = parse(rest, req, cfg);
    parse_result r2 = parse(rest, req2, cfg);
    if (testing::describe(r, req) != testing::describe(r2, req2) || r.need != r2.need)
      die("parse() is not pure");
    switch (r.status) {
      case parse_status::incomplete:
        if (r.consumed != 0 || r.swallow != 0) die("incomplete consumed");
        if (r.need != 0 && r.need <= rest.size()) die("need within the input");
        return;
      case parse_status::too_long: {
        // Legitimate only for a line of more than 2048 bytes.
        if (rest.size() <= max_line_length) die("too_long on a short input");
        return;
      }
      case parse_status::close: {
        // Legitimate only for an HTTP request line, complete and within the line limit.
        const size_t nl = rest.find('\n');
        if (nl == std::string_view::npos || nl > max_line_length)
          die("close without a complete line");
        if (rest.substr(0, nl).find("HTTP/") == std::string_view::npos)
          die("close on a line that is not HTTP");
        return;
      }
      case parse_status::ok:
      case parse_status::error: {
        if (r.consumed == 0) die("no progress");
        if (r.consumed > rest.size()) die("consumed > size");
        std::string_view used = rest.substr(0, r.consumed);
        if (!inside(used, req.line) || !inside(used, req.data) || !inside(used, req.stats_arg) ||
            !inside(used, req.meta.raw))
          die("view outside the input");
        for (auto k : req.keys) {
          if (!inside(used, k)) die("key outside the input");
          if (k.empty()) die("empty key");
          if (r.status == parse_status::ok && k.size() > max_key_length) die("long key accepted");
        }
        for (char c = 'A'; c <= 'z'; ++c)
          if (meta_flags::index(c) >= 0 && req.meta.has(c) && !inside(req.meta.raw, req.meta.get(c)))
            die("meta token outside the flags");
        if (r.status == parse_status::error && r.error.empty()) die("error without text");
        if (r.status == parse_status::ok && req.cmd == command::none) die("ok without command");
        if (r.status == parse_status::ok && req.cmd == command::stats) {
          // The stats subcommand's reader (on any words, under the sanitizers): pure, and an
          // error line exactly when it refuses.
          const stats_query q = classify_stats(req.stats_arg);
          const stats_query q2 = classify_stats(req.stats_arg);
          if (q.kind != q2.kind || q.error != q2.error)
            die("classify_stats is not pure", std::string(req.stats_arg));
          if ((q.kind == stats_kind::refused) != !q.error.empty())
            die("stats refusal without its error", std::string(req.stats_arg));
        }
        if (r.status == parse_status::ok && !req.data.empty() &&
            (req.data.size() > cfg.max_item_size))
          die("data larger than max_item_size");
        pos += r.consumed;
        if (r.swallow) {
          if (r.swallow >= rest.size() - r.consumed) return;
          pos += r.swallow;
        }
        break;
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  static request req, req2;
  // A small max item size too, so that "too large" and swallowing get exercised.
  parser_config big{};
  parser_config small{};
  small.max_item_size = 16;
  check_one(in, big, req, req2);
  check_one(in, small, req, req2);

  // The binary refusal: a well-formed header whatever the request bytes.
  {
    std::string b = binary_not_supported(in);
    if (b.size() < binary_header_size || static_cast<unsigned char>(b[0]) != 0x81)
      die("binary refusal:", "bad header");
    size_t body = 0;
    for (size_t i = 8; i < 12; ++i)
      body = body << 8 | static_cast<unsigned char>(b[i]);
    if (body != b.size() - binary_header_size || (size > 1 && b[1] != in[1]))
      die("binary refusal:", "length or opcode");
  }

  // The foreign-protocol check decides once: every longer prefix gets the same answer, and
  // it waits (maybe) only while no newline came.
  {
    foreign first = foreign::maybe;
    for (size_t n = 0; n <= size && n <= 16; ++n) {
      const foreign f = foreign_protocol(in.substr(0, n));
      if (first != foreign::maybe && f != first)
        die("foreign_protocol:", "changed its answer on more bytes");
      if (f == foreign::maybe && in.substr(0, n).find('\n') != std::string_view::npos)
        die("foreign_protocol:", "waits past a newline");
      first = f;
    }
  }

  // The RPC port's greeting check likewise decides once, waits only while no newline came in
  // its first rpc_greeting_max bytes (or while they could be a segment table).
  {
    rpc_greeting first = rpc_greeting::maybe;
    for (size_t n = 0; n <= size && n <= rpc_greeting_max + 1; ++n) {
      const std::string_view prefix = in.substr(0, n);
      const rpc_greeting g = rpc_greeting_of(prefix);
      if (first != rpc_greeting::maybe && g != first)
        die("rpc_greeting_of:", "changed its answer on more bytes");
      if (g == rpc_greeting::maybe && (n > rpc_greeting_max ||
                                       (n >= 4 && prefix.find('\n') != std::string_view::npos)))
        die("rpc_greeting_of:", "waits past a newline or its most bytes");
      first = g;
    }
  }

  // Split invariance.
  for (const parser_config& cfg : {big, small}) {
    std::string v;
    auto whole = testing::run_chunks(in, 0, cfg, &v);
    if (!v.empty()) die("stream contract:", v);
    std::vector<size_t> at;
    if (size) {
      at.push_back(data[0] % (size + 1));
      at.push_back(size / 3);
      at.push_back(size / 2);
      at.push_back(size - (size > 0 ? data[size - 1] % (size) : 0));
    }
    std::vector<size_t> sorted;
    for (size_t a : at)
      if (sorted.empty() || a >= sorted.back()) sorted.push_back(a);
    auto split = testing::run_splits(in, sorted, cfg, &v);
    if (!v.empty()) die("stream contract (split):", v);
    if (split != whole) die("split changed the result");
    // Byte-by-byte is the strongest check but costs O(size) parses: small inputs only.
    std::vector<size_t> chunks = size <= 256 ? std::vector<size_t>{1, 2, 7}
                                             : std::vector<size_t>{3, 61};
    if (size <= 8192) {
      for (size_t chunk : chunks) {
        auto c = testing::run_chunks(in, chunk, cfg, &v);
        if (!v.empty()) die("stream contract (chunks):", v);
        if (c != whole) {
          std::string d = "chunk=" + std::to_string(chunk);
          die("chunking changed the result", d);
        }
      }
    }
  }

  // base64 round trip and hostile decoding.
  std::string enc, dec;
  std::string_view raw = in.substr(0, 300);
  base64_encode(raw, enc);
  if (!raw.empty()) {
    if (!base64_decode(enc, dec) || dec != raw) die("base64 round trip");
  }
  std::vector<char> out(raw.size() + 1);
  size_t n = base64_decode(raw, out.data());
  if (n > raw.size()) die("base64 decode overrun");
  return 0;
}
