// The output queue of one connection: response bytes and pinned value slices, in order.
//
// A slice keeps its whole segment (up to 1 MiB) from being reused or evicted-and-freed. A
// value that fills less than half of its segment is therefore queued as a slice only while
// the queue's slices of such values hold at most `pin_budget` bytes of distinct segments;
// past that it is copied, so a client that does not read cannot make a few thousand small
// values hold the shard's memory (its eviction would then find nothing to free and empty the
// shard). Values from a segment the queue already holds cost nothing more.
//
// Copies are bounded too: once the queue's byte chunks (copied values and reply lines) hold
// `copy_budget` bytes, further values are queued as slices whatever they pin. A client that
// asks for many large values and does not read (one get line may name 100 000 keys) then
// holds segments, which count in the shard's memory (-m), instead of copies, which count
// nowhere: at worst writes fail for lack of memory while it holds them (as memcached's item
// references do), the process does not grow.
//
// Values at or above the sendfile threshold are queued as pinned slices and sent with
// sendfile(2) from the segment file; below it, small values (< inline_copy_max) are copied
// into the byte stream and the others queued as slices written with writev straight from the
// segment mapping (no user-space copy). The slice keeps the segment alive until the send
// completes.
//
// Thread affinity: owned by one connection actor; used only on that connection's loop thread.
#pragma once

#include "storage/pinned_slice.hpp"

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace bifrost::actors {

class out_queue {
public:
  struct chunk {
    std::string bytes;            // used when !slice
    storage::pinned_slice slice;  // a value written from its segment
    bool use_sendfile = false;    // slice: sendfile(2) from the fd; else writev from the mapping
    size_t sent = 0;              // bytes of this chunk already written
    bool pinned = false;          // a small part of its segment: counted in held_
  };

  /// Segment bytes the slices of values much smaller than their segment may pin at once.
  static constexpr uint64_t pin_budget = 4u << 20;

  /// Values smaller than this are copied into the byte stream (cheaper than an iovec entry).
  static constexpr size_t inline_copy_max = 2048;

  /// Bytes the byte chunks may hold before values are no longer copied.
  static constexpr size_t copy_budget = 4u << 20;

  /// A written byte chunk's buffer up to this capacity is kept for the next chunk: a reply
  /// (or link frame) then costs no allocation; an idle queue holds at most this much.
  static constexpr size_t spare_max = 1024;

  explicit out_queue(size_t sendfile_threshold = 16 * 1024) : threshold_(sendfile_threshold) {}

  /// Appends response bytes (coalesced with the previous byte chunk).
  void bytes(std::string_view b);
  /// Appends a value: copied when smaller than the threshold, else queued for sendfile.
  void value(const storage::pinned_slice& v);
  /// Appends raw bytes of a value that is already in memory.
  void value(std::string_view v) { bytes(v); }

  bool empty() const noexcept { return chunks_.empty(); }
  size_t pending_bytes() const noexcept { return pending_; }
  /// Bytes of the distinct segments held for values that fill a small part of them.
  uint64_t pinned_bytes() const noexcept { return pinned_; }
  /// Bytes of the byte chunks (copies and reply lines) not yet written.
  size_t copied_bytes() const noexcept { return copied_; }
  std::deque<chunk>& chunks() noexcept { return chunks_; }
  /// Marks `n` bytes of the front chunk written; pops it when complete.
  void advance(size_t n);
  /// Drops the front chunk (an empty slice: nothing to write).
  void pop_front();
  /// Drops every chunk (nobody will read them), releasing the segments they pin.
  void clear() {
    while (!chunks_.empty())
      pop_front();
  }
  size_t threshold() const noexcept { return threshold_; }

private:
  struct held_segment {
    const void* id;
    uint64_t size;
    uint32_t chunks;
  };
  void unpin(const chunk& c);

  std::deque<chunk> chunks_;
  size_t pending_ = 0;
  size_t copied_ = 0;  // bytes of byte chunks not yet written
  uint64_t pinned_ = 0;
  std::vector<held_segment> held_;  // at most pin_budget / 64 KiB entries
  std::string spare_;                // empty; capacity <= spare_max (see bytes(), pop_front())
  size_t threshold_;
};

} // namespace bifrost::actors
