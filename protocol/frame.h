// Kafka framing over received chunks: a 4-byte big-endian size, then the body. A frame may
// span chunks; its body is handed on as slices of the receive buffers, not copied, unless
// the caller asks for partial frames to be copied out (to give buffers back under pressure).
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <span>
#include <vector>

#include "reactor/buffer_pool.h"

namespace kpp::protocol {

using reactor::byte_slice;
using reactor::shared_bytes;

// A frame body as a list of slices (the 4-byte size prefix is not included).
struct frame {
    std::vector<byte_slice> pieces;
    uint32_t size_bytes = 0;

    // Copies up to `destination.size()` bytes from `offset` into destination; returns count.
    size_t copy_out(size_t offset, std::span<std::byte> destination) const;
    // The body as one contiguous block (shares the piece when there is only one).
    byte_slice contiguous() const;
    // Slices covering [offset, end) of the body.
    void slices_from(size_t offset, std::vector<byte_slice>& out) const;
};

enum class frame_status { ok, too_large, negative_size };

// What frames may keep referencing of the receive buffers they came in.
enum class copy_policy : uint8_t {
    reference,  // everything: no copy
    partial,    // complete frames only; an incomplete frame at the end of a chunk is copied
    all,        // nothing: every byte is copied to the heap (the ring is running out, and a
                // frame may be held for long: a request waiting for a slow broker)
};

class frame_assembler {
public:
    explicit frame_assembler(uint32_t frame_bytes_max) : frame_bytes_max_(frame_bytes_max) {}
    // Applies from the next frame header on (a frame already being read keeps its size).
    void set_frame_bytes_max(uint32_t frame_bytes_max) { frame_bytes_max_ = frame_bytes_max; }
    uint32_t frame_bytes_max() const { return frame_bytes_max_; }

    // Feeds one received chunk; `on_frame(frame&&)` runs for each completed frame. With
    // `copy_partial`, bytes of a frame still incomplete at the end of the chunk are copied
    // to the heap so the receive buffer can go back to the kernel.
    template <typename frame_callback>
    frame_status feed(byte_slice chunk, bool copy_partial, frame_callback&& on_frame) {
        return feed(std::move(chunk), copy_partial ? copy_policy::partial : copy_policy::reference,
                    std::forward<frame_callback>(on_frame));
    }
    template <typename frame_callback>
    frame_status feed(byte_slice chunk, copy_policy policy, frame_callback&& on_frame);

    uint32_t declared_size() const { return body_bytes_expected_; }
    bool mid_frame() const { return header_bytes_ > 0; }
    size_t buffered_bytes() const { return body_bytes_received_; }

private:
    void append_body(const byte_slice& piece, bool copy_partial);

    uint32_t frame_bytes_max_;
    std::array<std::byte, 4> header_{};
    uint32_t header_bytes_ = 0;  // 0..4 bytes of the size prefix seen
    uint32_t body_bytes_expected_ = 0;
    uint32_t body_bytes_received_ = 0;
    frame current_;
    shared_bytes copy_target_;  // heap body once copying started
};

template <typename frame_callback>
frame_status frame_assembler::feed(byte_slice chunk, copy_policy policy, frame_callback&& on_frame) {
    uint32_t offset = 0;
    while (offset < chunk.length) {
        if (header_bytes_ < 4) {
            uint32_t take = std::min<uint32_t>(4 - header_bytes_, chunk.length - offset);
            for (uint32_t i = 0; i < take; ++i) header_[header_bytes_ + i] = chunk.data()[offset + i];
            header_bytes_ += take;
            offset += take;
            if (header_bytes_ < 4) break;
            int32_t declared = int32_t((uint32_t(header_[0]) << 24) | (uint32_t(header_[1]) << 16) |
                                       (uint32_t(header_[2]) << 8) | uint32_t(header_[3]));
            // Checked before a single body byte is accepted.
            if (declared < 0) return frame_status::negative_size;
            body_bytes_expected_ = uint32_t(declared);
            if (body_bytes_expected_ > frame_bytes_max_) return frame_status::too_large;
            body_bytes_received_ = 0;
            current_ = frame{};
            current_.size_bytes = body_bytes_expected_;
        }
        uint32_t take = std::min<uint32_t>(body_bytes_expected_ - body_bytes_received_, chunk.length - offset);
        bool completes = body_bytes_received_ + take == body_bytes_expected_;
        bool copy = policy == copy_policy::all || (policy == copy_policy::partial && !completes);
        if (take > 0) append_body(byte_slice{chunk.owner, chunk.offset + offset, take}, copy);
        offset += take;
        if (completes) {
            header_bytes_ = 0;
            copy_target_ = shared_bytes();
            on_frame(std::move(current_));
            current_ = frame{};
        }
    }
    return frame_status::ok;
}

}  // namespace kpp::protocol
