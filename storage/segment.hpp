// Segments: fixed-size, append-only files that hold item records (storage/record.hpp).
//
// Backing: a memfd (memfd_create, MFD_CLOEXEC) by default, or the file
// `<data_dir>/shard-<id>/seg-<seq>.dat` when the shard has a data directory. The file is sized
// with ftruncate and mapped MAP_SHARED read/write; its fd is what sendfile(2) reads from. A
// file's blocks are allocated when it is created (posix_fallocate), not when a store first
// writes a page of the mapping: on a full disk that write would raise SIGBUS, while create()
// can fail with ENOSPC, which the shard answers by evicting (storage/shard.hpp).
//
// Ownership: a segment owns its fd and its mapping (move-free, non-copyable; the destructor
// munmaps and closes). It is always held by std::shared_ptr: the shard holds one reference
// while the segment is live, every pinned_slice holds another. When the shard evicts or
// reclaims a segment it calls `unlink_file()` (data-directory segments only: the file leaves
// the directory at once so recovery never sees it, while the fd and mapping stay valid for
// in-flight readers) and drops its reference; the memory goes when the last slice drops.
//
// Accounting: every segment adds its size to a shared `segment_accounting` when created and
// subtracts it in its destructor, which may run on any thread (atomics). The shard compares
// that total against its memory limit, so retired-but-pinned segments are counted until the
// last pin drops.
//
// Thread affinity: created, appended to and retired on the owning shard's thread. The
// destructor, the const accessors (fd, data, size) and note_spliced() are safe on any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace bifrost::storage {

/// Bytes and count of all segments alive (live in a shard, or retired and still pinned).
struct segment_accounting {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> count{0};
};

class segment {
public:
  /// Creates a new zero-filled segment of `size` bytes: a memfd when `path` is empty, else a
  /// new file at `path` (must not exist) with its blocks allocated. Returns nullptr and sets
  /// `error` on failure; `no_space`, if given, says whether the file system was full (ENOSPC,
  /// EDQUOT: room may be made by removing other segments' files).
  static std::shared_ptr<segment> create(uint64_t seq, uint64_t size, const std::string& path,
                                         std::shared_ptr<segment_accounting> acct,
                                         std::string& error, bool* no_space = nullptr) noexcept;

  /// Maps an existing segment file (recovery). Its size is the file's size (must be > 0).
  /// On failure `unusable` tells the file's fault (not a regular file, empty) from the
  /// system's (open or mmap failed: too many files, no memory, permissions), after which the
  /// file must be kept.
  static std::shared_ptr<segment> open_file(uint64_t seq, const std::string& path,
                                            std::shared_ptr<segment_accounting> acct,
                                            std::string& error, bool& unusable) noexcept;

  ~segment();
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;

  int fd() const noexcept { return fd_; }
  /// The mapping (size() bytes). Value bytes of records are immutable; only header words
  /// (state, exptime) are written after a record is published, and only by the shard thread.
  char* data() const noexcept { return base_; }
  uint64_t size() const noexcept { return size_; }
  uint64_t seq() const noexcept { return seq_; }
  const std::string& path() const noexcept { return path_; }

  /// Removes the backing file from the data directory now (no-op for memfd segments).
  void unlink_file() noexcept;

  /// Any thread holding a slice of this segment, before sendfile(2) from it: the kernel's
  /// sendfile queues references to the file's pages (they are read when the data is sent,
  /// retransmitted, or read by a loopback receiver), not copies, so these bytes may be read
  /// after the last slice is gone. A spliced segment is never rewritten in place (no reuse,
  /// no compaction); it is freed, and the pages live on as long as the kernel needs them.
  void note_spliced() const noexcept { spliced_.store(true, std::memory_order_relaxed); }
  /// Shard thread, after seeing use_count() == 1 and an acquire fence (the flag is set before
  /// the last slice's release decrement).
  bool spliced() const noexcept { return spliced_.load(std::memory_order_relaxed); }

private:
  segment(int fd, char* base, uint64_t size, uint64_t seq, std::string path,
          std::shared_ptr<segment_accounting> acct) noexcept;

  int fd_;
  char* base_;
  uint64_t size_;
  uint64_t seq_;
  std::string path_;
  bool unlinked_ = false;
  mutable std::atomic<bool> spliced_{false};
  std::shared_ptr<segment_accounting> acct_;
};

} // namespace bifrost::storage
