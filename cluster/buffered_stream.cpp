#include "cluster/buffered_stream.hpp"

#include <algorithm>
#include <cstring>

namespace bifrost::cluster {

namespace {

class read_buffered_stream final : public kj::AsyncIoStream {
public:
  read_buffered_stream(kj::Own<kj::AsyncIoStream> inner, size_t capacity)
    : inner_(kj::mv(inner)), buf_(kj::heapArray<kj::byte>(std::max<size_t>(capacity, 64))) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    auto* out = static_cast<kj::byte*>(buffer);
    size_t have = take(out, maxBytes);
    if (have >= minBytes)
      return have;
    return fill(out, have, minBytes, maxBytes);  // the buffer is empty now
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, uint* length) override {
    inner_->getpeername(addr, length);
  }

private:
  size_t take(kj::byte* out, size_t max) {
    size_t n = std::min(end_ - pos_, max);
    if (n > 0)
      std::memcpy(out, buf_.begin() + pos_, n);
    pos_ += n;
    if (pos_ == end_)
      pos_ = end_ = 0;
    return n;
  }

  kj::Promise<size_t> fill(kj::byte* out, size_t have, size_t minBytes, size_t maxBytes) {
    if (maxBytes - have >= buf_.size()) {
      // A big read (a large message body): straight into the caller's buffer.
      return inner_->tryRead(out + have, minBytes - have, maxBytes - have)
        .then([have](size_t n) { return have + n; });
    }
    return inner_->tryRead(buf_.begin(), 1, buf_.size())
      .then([this, out, have, minBytes, maxBytes](size_t n) -> kj::Promise<size_t> {
        if (n == 0)
          return have;  // end of stream
        pos_ = 0;
        end_ = n;
        size_t got = have + take(out + have, maxBytes - have);
        if (got >= minBytes)
          return got;
        return fill(out, got, minBytes, maxBytes);
      });
  }

  kj::Own<kj::AsyncIoStream> inner_;
  kj::Array<kj::byte> buf_;
  size_t pos_ = 0;  // next unread byte
  size_t end_ = 0;  // end of the buffered bytes
};

} // namespace

kj::Own<kj::AsyncIoStream> read_buffered(kj::Own<kj::AsyncIoStream> inner, size_t capacity) {
  return kj::heap<read_buffered_stream>(kj::mv(inner), capacity);
}

} // namespace bifrost::cluster
