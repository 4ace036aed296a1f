// Pinned slices: how a value leaves storage without being copied.
//
// A `segment` is one append-only file (memfd, or a file under --data-dir) that holds item
// records back to back; it is mapped MAP_SHARED for the copy path and exposes its fd for
// sendfile(2). A `pinned_slice` is (shared segment handle, offset, length): as long as a slice
// exists the segment's fd and mapping stay valid, even if the shard has since evicted,
// overwritten or deleted the item (copy-on-write: new versions are always appended elsewhere,
// old bytes are never modified while reachable). The storage memory accounting counts a
// retired-but-pinned segment until its last slice is dropped.
//
// Thread affinity: a pinned_slice may be created on a shard's thread and moved to and dropped
// on any thread (the segment handle is an atomically ref-counted std::shared_ptr). The bytes
// it refers to are immutable for the slice's lifetime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace bifrost::storage {

class segment;  // defined in storage/segment.hpp

class pinned_slice {
public:
  pinned_slice() = default;
  pinned_slice(std::shared_ptr<const segment> seg, uint64_t offset, uint32_t length) noexcept
    : seg_(std::move(seg)), offset_(offset), length_(length) {}

  /// A value that lives in memory, not in a segment (e.g. received from another node):
  /// fd() is -1, so it is always copied out, never sendfile'd.
  static pinned_slice from_memory(std::shared_ptr<const std::string> bytes) noexcept {
    pinned_slice s;
    s.length_ = bytes ? static_cast<uint32_t>(bytes->size()) : 0;
    s.mem_ = std::move(bytes);
    return s;
  }

  /// True when the slice refers to bytes (a zero-length value still has a segment).
  explicit operator bool() const noexcept { return seg_ != nullptr || mem_ != nullptr; }

  /// The segment's file descriptor, for sendfile(2). Owned by the segment; never close it.
  /// -1 for an empty (default-constructed) slice.
  int fd() const noexcept;
  /// Offset of the first byte within the segment file.
  uint64_t offset() const noexcept { return offset_; }
  uint32_t size() const noexcept { return length_; }
  /// Bytes of the segment this slice keeps alive (0 for an in-memory value).
  uint64_t segment_size() const noexcept;
  /// Which segment (slices of one segment share it); null for an in-memory value.
  const void* segment_id() const noexcept { return seg_.get(); }
  /// The same bytes through the segment's mapping (copy path and sendfile fallback).
  std::string_view view() const noexcept;
  /// Call before sendfile(2) from fd(): the segment is then never rewritten in place
  /// (segment::note_spliced). No-op for an in-memory slice.
  void note_spliced() const noexcept;

private:
  std::shared_ptr<const segment> seg_;
  std::shared_ptr<const std::string> mem_;  // set instead of seg_ for in-memory values
  uint64_t offset_ = 0;
  uint32_t length_ = 0;
};

} // namespace bifrost::storage
