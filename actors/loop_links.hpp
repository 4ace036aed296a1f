// The seam between an I/O loop and the cluster's data links (cluster/data_link.hpp), which
// live in the cluster library: a loop sees them only through this interface.
//
// Thread affinity: one loop_links per I/O loop, owned by its loop_context; every member but
// shared_link() is called on that loop's thread only.
#pragma once

#include "actors/cluster_view.hpp"

#include <caf/actor.hpp>

#include <cstdint>
#include <string_view>

namespace bifrost::actors {

/// How a data link's first line starts (cluster/link_wire.hpp): a connection on the memcached
/// port whose first bytes are these is handed to serve().
constexpr std::string_view link_hello_prefix = "bifrost-link ";

class loop_links {
public:
  virtual ~loop_links() = default;
  /// Where this loop sends a batch of ops for member `id` of cv's ring: the loop's data link
  /// to it, or null (then cv.peers[id], the RPC peer actor).
  virtual caf::actor link_for(const cluster_view& cv, uint32_t id) = 0;
  /// The same link, from any thread (the replicator's): no per-ring cache, a lock instead. On
  /// the loop's own thread it also takes note of a newer ring, as link_for does (retiring the
  /// links of members in neither the ring nor a past one).
  virtual caf::actor shared_link(const cluster_view& cv, uint32_t id) = 0;
  /// The link to member `id` of cv.past[depth].ring, a past ring (write-on-miss warming), or
  /// null (then cv.past[depth].peers[id]).
  virtual caf::actor previous_link(const cluster_view& cv, size_t depth, uint32_t id) = 0;
  /// A new view came to this loop (its listener's snapshot): links of members it names back
  /// (cluster_view::returns) dial them now, not at the next lookup; links of members gone
  /// from its rings are retired, as a lookup would.
  virtual void note_view(const cluster_view& cv) = 0;
  /// A connection on the memcached port opened with a link hello (cluster/link_wire.hpp):
  /// serve it. Takes `fd`; `rest` is everything read so far, the hello line included.
  virtual void serve(int fd, std::string_view rest) = 0;
  /// Closes every link and session of this loop (node shutdown): their actors quit.
  virtual void close_all() = 0;
};

} // namespace bifrost::actors
