// A bounds-checked reader over a message that lies in several pieces (the receive buffers
// of one frame), with the interface of wire_reader so generated walkers serve both. Reads
// inside one piece take the fast path; a field spanning pieces is assembled byte by byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "protocol/wire.h"

namespace kpp::protocol {

class segmented_reader {
public:
    explicit segmented_reader(std::span<const std::span<const std::byte>> pieces);

    size_t position() const { return position_; }
    size_t size() const { return size_; }
    size_t remaining() const { return error_ == wire_error::none ? size_ - position_ : 0; }
    bool ok() const { return error_ == wire_error::none; }
    wire_error error() const { return error_; }
    void fail(wire_error error);

    int8_t read_int8();
    int16_t read_int16();
    int32_t read_int32();
    int64_t read_int64();
    uint32_t read_unsigned_varint();
    int32_t read_varint();
    int64_t read_varlong();
    void skip(size_t count);
    // Copies `count` bytes at the current position into `out` (appending) and advances.
    void read_into(size_t count, std::string& out);

private:
    bool need(size_t count);
    std::byte next_byte();
    uint64_t read_big_endian(size_t bytes);

    std::span<const std::span<const std::byte>> pieces_;
    size_t piece_ = 0;         // index of the piece holding position_
    size_t piece_offset_ = 0;  // offset of position_ within that piece
    size_t position_ = 0;
    size_t size_ = 0;
    wire_error error_ = wire_error::none;
};

}  // namespace kpp::protocol
