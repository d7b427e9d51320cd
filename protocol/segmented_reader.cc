#include "protocol/segmented_reader.h"

namespace kpp::protocol {

segmented_reader::segmented_reader(std::span<const std::span<const std::byte>> pieces) : pieces_(pieces) {
    for (const auto& piece : pieces) size_ += piece.size();
    while (piece_ < pieces_.size() && pieces_[piece_].empty()) ++piece_;
}

void segmented_reader::fail(wire_error error) {
    if (error_ == wire_error::none) error_ = error;
    position_ = size_;
}

bool segmented_reader::need(size_t count) {
    if (error_ != wire_error::none) return false;
    if (size_ - position_ < count) {
        fail(wire_error::truncated);
        return false;
    }
    return true;
}

std::byte segmented_reader::next_byte() {
    std::byte value = pieces_[piece_][piece_offset_];
    ++position_;
    if (++piece_offset_ == pieces_[piece_].size()) {
        piece_offset_ = 0;
        ++piece_;
        while (piece_ < pieces_.size() && pieces_[piece_].empty()) ++piece_;
    }
    return value;
}

uint64_t segmented_reader::read_big_endian(size_t bytes) {
    if (!need(bytes)) return 0;
    uint64_t value = 0;
    const auto& piece = pieces_[piece_];
    if (piece.size() - piece_offset_ > bytes) {  // fast path: stays inside this piece
        for (size_t i = 0; i < bytes; ++i) value = (value << 8) | uint8_t(piece[piece_offset_ + i]);
        piece_offset_ += bytes;
        position_ += bytes;
        return value;
    }
    for (size_t i = 0; i < bytes; ++i) value = (value << 8) | uint8_t(next_byte());
    return value;
}

int8_t segmented_reader::read_int8() { return static_cast<int8_t>(read_big_endian(1)); }
int16_t segmented_reader::read_int16() { return static_cast<int16_t>(read_big_endian(2)); }
int32_t segmented_reader::read_int32() { return static_cast<int32_t>(read_big_endian(4)); }
int64_t segmented_reader::read_int64() { return static_cast<int64_t>(read_big_endian(8)); }

uint32_t segmented_reader::read_unsigned_varint() { return decode_unsigned_varint<uint32_t>(*this); }

int32_t segmented_reader::read_varint() { return zigzag_decode<int32_t>(decode_unsigned_varint<uint32_t>(*this)); }

int64_t segmented_reader::read_varlong() { return zigzag_decode<int64_t>(decode_unsigned_varint<uint64_t>(*this)); }

void segmented_reader::skip(size_t count) {
    if (!need(count)) return;
    while (count > 0) {
        size_t in_piece = pieces_[piece_].size() - piece_offset_;
        size_t step = std::min(in_piece, count);
        count -= step;
        position_ += step;
        piece_offset_ += step;
        if (piece_offset_ == pieces_[piece_].size()) {
            piece_offset_ = 0;
            ++piece_;
            while (piece_ < pieces_.size() && pieces_[piece_].empty()) ++piece_;
        }
    }
}

void segmented_reader::read_into(size_t count, std::string& out) {
    if (!need(count)) return;
    out.reserve(out.size() + count);
    for (size_t i = 0; i < count; ++i) out.push_back(char(next_byte()));
}

}  // namespace kpp::protocol
