#include "storage/pinned_slice.hpp"

#include "storage/segment.hpp"

namespace bifrost::storage {

int pinned_slice::fd() const noexcept { return seg_ ? seg_->fd() : -1; }

uint64_t pinned_slice::segment_size() const noexcept { return seg_ ? seg_->size() : 0; }

std::string_view pinned_slice::view() const noexcept {
  if (mem_)
    return {mem_->data(), mem_->size()};
  if (!seg_) return {};
  return {seg_->data() + offset_, length_};
}

void pinned_slice::note_spliced() const noexcept {
  if (seg_) seg_->note_spliced();
}

} // namespace bifrost::storage
