#include "storage/segment.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bifrost::storage {
namespace {
std::string sys_error(const char* what, const std::string& path) {
  std::string m = what;
  if (!path.empty()) m += " " + path;
  m += ": ";
  m += std::strerror(errno);
  return m;
}
} // namespace

segment::segment(int fd, char* base, uint64_t size, uint64_t seq, std::string path,
                 std::shared_ptr<segment_accounting> acct) noexcept
  : fd_(fd), base_(base), size_(size), seq_(seq), path_(std::move(path)), acct_(std::move(acct)) {
  if (acct_) {
    acct_->bytes.fetch_add(size_, std::memory_order_relaxed);
    acct_->count.fetch_add(1, std::memory_order_relaxed);
  }
}

segment::~segment() {
  if (base_) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
  if (acct_) {
    acct_->bytes.fetch_sub(size_, std::memory_order_relaxed);
    acct_->count.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::shared_ptr<segment> segment::create(uint64_t seq, uint64_t size, const std::string& path,
                                         std::shared_ptr<segment_accounting> acct,
                                         std::string& error, bool* no_space) noexcept {
  if (no_space) *no_space = false;
  int fd;
  if (path.empty()) {
    fd = ::memfd_create("bifrost-segment", MFD_CLOEXEC);
    if (fd < 0) {
      error = sys_error("memfd_create", "");
      return nullptr;
    }
  } else {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (no_space) *no_space = errno == ENOSPC || errno == EDQUOT;  // no inode left
      error = sys_error("open", path);
      return nullptr;
    }
  }
  auto fail = [&](const char* what) -> std::shared_ptr<segment> {
    if (no_space) *no_space = errno == ENOSPC || errno == EDQUOT;
    error = sys_error(what, path);
    ::close(fd);
    if (!path.empty()) ::unlink(path.c_str());
    return nullptr;
  };
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return fail("ftruncate");
  if (!path.empty()) {
    // The blocks now: a sparse file's first write to a page of a full file system raises
    // SIGBUS in whichever thread touches the mapping. (glibc falls back to writing a byte per
    // block where the file system has no fallocate.)
    const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
    if (rc != 0) {
      errno = rc;
      return fail("posix_fallocate");
    }
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail("mmap");
  try {
    return std::shared_ptr<segment>(
        new segment(fd, static_cast<char*>(p), size, seq, path, std::move(acct)));
  } catch (...) {
    ::munmap(p, size);
    errno = ENOMEM;
    return fail("allocating segment");
  }
}

std::shared_ptr<segment> segment::open_file(uint64_t seq, const std::string& path,
                                            std::shared_ptr<segment_accounting> acct,
                                            std::string& error, bool& unusable) noexcept {
  unusable = false;
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    // Not a file we can hold data in (a directory, a dangling link, a device): the file's
    // fault. Anything else (EMFILE, ENOMEM, EACCES, EIO…) is the system's.
    unusable = errno == EISDIR || errno == ENOENT || errno == ELOOP || errno == ENXIO ||
               errno == ENODEV || errno == ETXTBSY || errno == EINVAL;
    error = sys_error("open", path);
    return nullptr;
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    error = sys_error("fstat", path);
    ::close(fd);
    return nullptr;
  }
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
    error = "not a non-empty regular file: " + path;
    unusable = true;
    ::close(fd);
    return nullptr;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    error = sys_error("mmap", path);
    ::close(fd);
    return nullptr;
  }
  try {
    return std::shared_ptr<segment>(
        new segment(fd, static_cast<char*>(p), size, seq, path, std::move(acct)));
  } catch (...) {
    ::munmap(p, size);
    ::close(fd);
    error = "out of memory opening " + path;
    return nullptr;
  }
}

void segment::unlink_file() noexcept {
  if (!path_.empty() && !unlinked_) {
    ::unlink(path_.c_str());
    unlinked_ = true;
  }
}

} // namespace bifrost::storage
