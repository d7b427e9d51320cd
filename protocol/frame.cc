#include "protocol/frame.h"

#include <algorithm>
#include <cstring>

namespace kpp::protocol {

size_t frame::copy_out(size_t offset, std::span<std::byte> destination) const {
    size_t copied = 0;
    size_t skipped = 0;
    for (const byte_slice& piece : pieces) {
        if (copied == destination.size()) break;
        if (skipped + piece.length <= offset) {
            skipped += piece.length;
            continue;
        }
        size_t start = offset > skipped ? offset - skipped : 0;
        size_t count = std::min<size_t>(piece.length - start, destination.size() - copied);
        std::memcpy(destination.data() + copied, piece.data() + start, count);
        copied += count;
        skipped += piece.length;
    }
    return copied;
}

byte_slice frame::contiguous() const {
    if (pieces.size() == 1) return pieces.front();
    shared_bytes joined = shared_bytes::allocate(size_bytes);
    size_t written = 0;
    for (const byte_slice& piece : pieces) {
        std::memcpy(joined.data() + written, piece.data(), piece.length);
        written += piece.length;
    }
    return byte_slice{std::move(joined), 0, size_bytes};
}

void frame::slices_from(size_t offset, std::vector<byte_slice>& out) const {
    size_t skipped = 0;
    for (const byte_slice& piece : pieces) {
        if (skipped + piece.length <= offset) {
            skipped += piece.length;
            continue;
        }
        uint32_t start = offset > skipped ? uint32_t(offset - skipped) : 0;
        out.push_back(byte_slice{piece.owner, piece.offset + start, piece.length - start});
        skipped += piece.length;
    }
}

void frame_assembler::append_body(const byte_slice& piece, bool copy_partial) {
    if (!copy_partial && !copy_target_) {
        current_.pieces.push_back(piece);
        body_bytes_received_ += piece.length;
        return;
    }
    // Copy mode: one heap block for the whole body; earlier slices are moved into it so
    // the frame holds no receive buffer.
    if (!copy_target_) {
        copy_target_ = shared_bytes::allocate(body_bytes_expected_);
        size_t written = 0;
        for (const byte_slice& earlier : current_.pieces) {
            std::memcpy(copy_target_.data() + written, earlier.data(), earlier.length);
            written += earlier.length;
        }
        current_.pieces.clear();
        current_.pieces.push_back(byte_slice{copy_target_, 0, 0});
    }
    std::memcpy(copy_target_.data() + body_bytes_received_, piece.data(), piece.length);
    body_bytes_received_ += piece.length;
    current_.pieces.front().length = body_bytes_received_;
}

}  // namespace kpp::protocol
