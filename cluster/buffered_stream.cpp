#include "cluster/buffered_stream.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include <kj/debug.h>
#include <kj/vector.h>

namespace bifrost::cluster {

namespace {

class buffered_stream final : public kj::AsyncIoStream {
public:
  buffered_stream(kj::Own<kj::AsyncIoStream> inner, size_t capacity,
                  kj::ArrayPtr<const kj::byte> read_ahead)
    : inner_(kj::mv(inner)),
      buf_(kj::heapArray<kj::byte>(std::max<size_t>({capacity, read_ahead.size(), 64}))) {
    if (read_ahead.size() > 0)
      std::memcpy(buf_.begin(), read_ahead.begin(), read_ahead.size());
    end_ = read_ahead.size();
  }

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    auto* out = static_cast<kj::byte*>(buffer);
    size_t have = take(out, maxBytes);
    if (have >= minBytes)
      return have;
    return fill(out, have, minBytes, maxBytes);  // the buffer is empty now
  }

  ~buffered_stream() noexcept(false) {
    // Writes not yet on the socket end as a disconnect, not as a broken promise.
    reject_writers(KJ_EXCEPTION(DISCONNECTED, "stream destroyed before the write went out"));
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    kj::ArrayPtr<const kj::byte> one(static_cast<const kj::byte*>(buffer), size);
    return write(kj::arrayPtr(&one, 1));
  }

  // Small pieces are copied into the queue and reported written at once; a large piece is
  // queued by reference and its promise resolves once it is on the socket (the caller keeps
  // it alive until then, as for any write). Everything queued goes out in one writev at the
  // end of the KJ turn (evalLast), or right after the write in progress.
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    KJ_IF_MAYBE (e, failed_) {
      return kj::cp(*e);
    }
    if (shut_)
      return KJ_EXCEPTION(DISCONNECTED, "write after shutdownWrite");
    bool borrowed = false;
    for (auto& p : pieces) {
      if (p.size() == 0)
        continue;
      if (p.size() >= borrow_min) {
        queue_.add(piece{p.begin(), 0, p.size()});
        borrowed = true;
      } else {
        size_t at = copied_.size();
        copied_.addAll(p);
        queue_.add(piece{nullptr, at, p.size()});
      }
    }
    schedule();
    if (!borrowed && copied_.size() < high_water)
      return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();  // until this batch is on the socket
    waiters_.add(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }

  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }

  // Starts writing the queue now rather than at the end of the turn: Cap'n Proto drops a
  // connection right after shutting it down (its Abort message is in the queue), and a
  // socket's write hands the bytes to the kernel during the call. The inner stream is shut
  // down once the queue is written.
  void shutdownWrite() override {
    if (shut_)
      return;
    shut_ = true;
    if (failed_ != nullptr || writing_)
      return;  // failed: nothing more goes out; writing: the write under way ends with it
    flushes_.add(kj::evalNow([this] { return flush(); }));
  }
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
  // A queued piece: borrowed (ptr set) or at `offset` in `copied_`.
  struct piece {
    const kj::byte* ptr;
    size_t offset;
    size_t size;
  };
  static constexpr size_t borrow_min = 16 * 1024;   // larger pieces are not copied
  static constexpr size_t high_water = 256 * 1024;  // copied bytes before writers wait

  struct flush_errors : kj::TaskSet::ErrorHandler {
    buffered_stream& self;
    explicit flush_errors(buffered_stream& s) : self(s) {}
    void taskFailed(kj::Exception&& e) override { self.fail(kj::mv(e)); }
  };

  void schedule() {
    if (scheduled_ || writing_ || queue_.empty())
      return;
    scheduled_ = true;
    flushes_.add(kj::evalLast([this]() -> kj::Promise<void> {
      scheduled_ = false;
      if (writing_)
        return kj::READY_NOW;  // shutdownWrite started it meanwhile
      return flush();
    }));
  }

  // Writes the queue, then what was queued meanwhile, until it is empty; then shuts the inner
  // stream down if that was asked for. Runs only while no other write is under way.
  kj::Promise<void> flush() {
    if (failed_ != nullptr)
      return kj::READY_NOW;
    if (queue_.empty()) {
      writing_ = false;
      if (shut_ && !inner_shut_) {
        inner_shut_ = true;
        inner_->shutdownWrite();
      }
      return kj::READY_NOW;
    }
    writing_ = true;
    // The bytes and the piece list under way stay in members until the write completes; the
    // buffers swap roles, so their capacity is kept from one flush to the next.
    std::swap(copied_, sending_);  // sending_ was emptied when the last write completed
    pieces_.clear();
    for (auto& p : queue_)
      pieces_.add(p.ptr ? p.ptr : sending_.begin() + p.offset, p.size);
    queue_.clear();
    std::swap(in_flight_, waiters_);  // in_flight_ was emptied likewise
    return inner_->write(pieces_.asPtr()).then([this]() {
      for (auto& w : in_flight_)
        w->fulfill();
      in_flight_.clear();
      sending_.clear();
      return flush();  // what was queued meanwhile
    });
  }

  // Every write not reported done yet (under way or queued) fails with `e`.
  void reject_writers(const kj::Exception& e) {
    for (auto* list : {&in_flight_, &waiters_}) {
      for (auto& w : *list)
        w->reject(kj::cp(e));
      list->clear();
    }
  }

  void fail(kj::Exception&& e) {
    writing_ = false;
    reject_writers(e);
    queue_.clear();
    copied_.clear();
    sending_.clear();
    failed_ = kj::mv(e);
    if (shut_ && !inner_shut_) {  // best effort: the socket is likely gone already
      inner_shut_ = true;
      kj::runCatchingExceptions([this] { inner_->shutdownWrite(); });
    }
  }

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

  kj::Vector<kj::byte> copied_;   // small pieces queued since the last flush
  kj::Vector<kj::byte> sending_;  // the copied pieces of the write under way
  kj::Vector<piece> queue_;       // every queued piece, in write order
  kj::Vector<kj::ArrayPtr<const kj::byte>> pieces_;  // the write under way
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;    // queued writes not reported done
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> in_flight_;  // those in the write under way
  kj::Maybe<kj::Exception> failed_;  // a flush failed: every later write fails with this
  bool scheduled_ = false;           // a flush waits for the end of the turn
  bool writing_ = false;             // an inner write is under way
  bool shut_ = false;                // shutdownWrite was asked for
  bool inner_shut_ = false;          // ... and passed on
  flush_errors on_error_{*this};
  kj::TaskSet flushes_{on_error_};   // declared last: cancelled before the rest goes
};

} // namespace

kj::Own<kj::AsyncIoStream> buffered(kj::Own<kj::AsyncIoStream> inner, size_t capacity,
                                    kj::ArrayPtr<const kj::byte> read_ahead) {
  return kj::heap<buffered_stream>(kj::mv(inner), capacity, read_ahead);
}

} // namespace bifrost::cluster
