// Translation between the memcached protocol and storage operations. Pure: no actors, no I/O.
//
// The connection actor parses a request (protocol/memcache.hpp), calls `plan()` to turn it
// into storage ops (one per key), sends each op to the shard that owns its key, and once all
// results are back calls `compose()` to write the exact bytes memcached would answer.
// Commands that are not about keys (stats, version, verbosity, flush_all, quit, mn) are
// answered by the connection itself; `plan()` reports them as `kind::local`.
#pragma once

#include "actors/out_queue.hpp"
#include "protocol/memcache.hpp"
#include "storage/ops.hpp"

#include <string>
#include <vector>

namespace bifrost::actors {

struct plan_result {
  enum class kind : uint8_t {
    ops,    // `ops` to execute, then compose()
    local,  // answered by the connection (stats, version, verbosity, flush_all, quit, mn)
    error,  // answer `error` (a full response line without \r\n) and continue
  };
  kind k = kind::ops;
  std::string error;
};

/// Fills `ops` (cleared first) for `req`. Validates what the parser leaves to semantics:
/// meta flag tokens (numbers, base64 keys, modes), key validity after base64 decoding.
plan_result plan(const proto::request& req, std::vector<storage::op>& ops);

/// Writes the response to `req` given the results of its ops (same order as planned).
/// Honors noreply (text) and q (meta: suppress EN/HD/NF, keep errors) and the O/k/b echo.
/// Only the ops' keys and scalar fields are read (their `value` may have been moved out).
/// Relative times (mg t/l, ma t, me exp/la) are computed against the wall clock.
void compose(const proto::request& req, const std::vector<storage::op>& ops,
             const std::vector<storage::result>& results, out_queue& out);
/// Same, with an explicit "now" in unix seconds (tests; a connection with an injected clock).
void compose(const proto::request& req, const std::vector<storage::op>& ops,
             const std::vector<storage::result>& results, out_queue& out, uint32_t now);

/// A get-family request's VALUE blocks for its hits, without the END: a part of a long
/// request that is not its last (actors/connection.hpp, get parts).
void compose_get_values(const proto::request& req, const std::vector<storage::op>& ops,
                        const std::vector<storage::result>& results, out_queue& out);

/// Response line for a storage failure status that maps to an error (too_large, no_memory).
std::string_view error_line(storage::status st) noexcept;

} // namespace bifrost::actors
