// Kafka wire primitives: a bounds-checked reader over contiguous bytes and an appending
// writer. Every length read from the wire is checked against what remains; varints are
// bounded (5 bytes for 32-bit, 10 for 64-bit). Errors are values, never exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kpp::protocol {

enum class wire_error : uint8_t {
    none = 0,
    truncated,          // a field runs past the end of the message
    negative_length,    // a length below -1 (or -1 where null is not allowed)
    varint_too_long,    // more than 5 (or 10) bytes
    array_too_large,    // more elements than bytes left could possibly hold
    invalid_value,      // a value the protocol forbids
};

const char* to_string(wire_error error);

template <typename signed_type, typename unsigned_type>
signed_type zigzag_decode(unsigned_type raw) {
    return static_cast<signed_type>((raw >> 1) ^ (~(raw & 1) + 1));
}

inline int32_t load_int32_be(const std::byte* at) {
    uint32_t value = (uint32_t(at[0]) << 24) | (uint32_t(at[1]) << 16) | (uint32_t(at[2]) << 8) | uint32_t(at[3]);
    return static_cast<int32_t>(value);
}
inline int16_t load_int16_be(const std::byte* at) {
    return static_cast<int16_t>((uint16_t(at[0]) << 8) | uint16_t(at[1]));
}

class wire_reader {
public:
    wire_reader() = default;
    explicit wire_reader(std::span<const std::byte> bytes) : data_(bytes.data()), size_(bytes.size()) {}

    size_t position() const { return position_; }
    size_t remaining() const { return error_ == wire_error::none ? size_ - position_ : 0; }
    bool ok() const { return error_ == wire_error::none; }
    wire_error error() const { return error_; }
    const std::byte* data() const { return data_; }
    size_t size() const { return size_; }
    void fail(wire_error error) {
        if (error_ == wire_error::none) error_ = error;
        position_ = size_;
    }

    // The fixed-size reads, skip and one- and two-byte varints are inline: record and
    // request walks call them for every field.
    int8_t read_int8() {
        if (!need(1)) return 0;
        return static_cast<int8_t>(data_[position_++]);
    }
    int16_t read_int16() {
        if (!need(2)) return 0;
        int16_t value = load_int16_be(data_ + position_);
        position_ += 2;
        return value;
    }
    int32_t read_int32() {
        if (!need(4)) return 0;
        int32_t value = load_int32_be(data_ + position_);
        position_ += 4;
        return value;
    }
    int64_t read_int64();
    uint32_t read_unsigned_varint() {  // at most 5 bytes
        uint64_t raw;
        if (short_varint(raw)) return static_cast<uint32_t>(raw);
        return read_unsigned_varint_slow();
    }
    int32_t read_varint() { return zigzag_decode<int32_t>(read_unsigned_varint()); }  // zig-zag, at most 5 bytes
    int64_t read_varlong() {  // zig-zag, at most 10 bytes
        uint64_t raw;
        if (!short_varint(raw)) raw = read_unsigned_varlong_slow();
        return zigzag_decode<int64_t>(raw);
    }
    void skip(size_t count) {
        if (need(count)) position_ += count;
    }
    // Copies `count` bytes at the current position into `out` (appending) and advances;
    // the same call exists on segmented_reader so generated walkers serve both.
    void read_into(size_t count, std::string& out) {
        if (!need(count)) return;
        out.append(reinterpret_cast<const char*>(data_ + position_), count);
        position_ += count;
    }

    // Strings and byte fields return the byte range they occupy; nullopt for null.
    std::optional<std::string_view> read_string(bool flexible, bool nullable);
    // Array element count; -1 (null) returned as -1 only when nullable. Bounded by the bytes
    // left: each element takes at least `element_bytes_min` bytes.
    int32_t read_array_length(bool flexible, bool nullable, size_t element_bytes_min = 1);
    void skip_bytes_field(bool flexible, bool nullable);  // BYTES / RECORDS
    std::optional<std::span<const std::byte>> read_bytes_field(bool flexible, bool nullable);
    void skip_tagged_fields();

private:
    // A varint of one or two bytes (lengths under 8 KiB), decoded in place; false leaves
    // everything else, errors included, to decode_unsigned_varint.
    bool short_varint(uint64_t& raw) {
        if (error_ != wire_error::none || size_ - position_ < 2) return false;
        auto first = static_cast<uint8_t>(data_[position_]);
        if (!(first & 0x80)) {
            raw = first;
            position_ += 1;
            return true;
        }
        auto second = static_cast<uint8_t>(data_[position_ + 1]);
        if (second & 0x80) return false;
        raw = uint64_t(first & 0x7f) | (uint64_t(second) << 7);
        position_ += 2;
        return true;
    }
    // Every length of varint, the errors included (decode_unsigned_varint).
    uint32_t read_unsigned_varint_slow();
    uint64_t read_unsigned_varlong_slow();
    // A string (int16 length) or bytes field (int32 length), compact when flexible.
    std::optional<std::span<const std::byte>> read_length_prefixed(bool flexible, bool int16_length, bool nullable);
    bool need(size_t count) {
        if (error_ != wire_error::none) return false;
        if (size_ - position_ < count) {
            fail(wire_error::truncated);
            return false;
        }
        return true;
    }

    const std::byte* data_ = nullptr;
    size_t size_ = 0;
    size_t position_ = 0;
    wire_error error_ = wire_error::none;
};

class wire_writer {
public:
    std::vector<std::byte>& bytes() { return bytes_; }
    size_t size() const { return bytes_.size(); }

    void write_int8(int8_t value) { bytes_.push_back(static_cast<std::byte>(value)); }
    void write_int16(int16_t value);
    void write_int32(int32_t value);
    void write_int64(int64_t value);
    void write_unsigned_varint(uint32_t value);
    void write_varint(int32_t value);
    void write_string(std::optional<std::string_view> value, bool flexible);
    void write_array_length(int32_t count, bool flexible);  // -1 for null
    void write_raw(std::span<const std::byte> raw) { bytes_.insert(bytes_.end(), raw.begin(), raw.end()); }
    void write_empty_tagged_fields() { write_unsigned_varint(0); }
    void patch_int32(size_t offset, int32_t value);

private:
    std::vector<std::byte> bytes_;
};

// Unsigned varint decoding shared by every reader type: 7 bits a byte, at most 5 bytes for
// 32 bits and 10 for 64; the last byte may use only the bits left, so an over-long or
// overflowing encoding is refused with varint_too_long.
template <typename unsigned_type, typename reader_type>
unsigned_type decode_unsigned_varint(reader_type& reader) {
    constexpr int value_bits = sizeof(unsigned_type) * 8;
    constexpr int bytes_max = (value_bits + 6) / 7;
    constexpr unsigned last_byte_mask = 0x7fu & ~((1u << (value_bits - 7 * (bytes_max - 1))) - 1u);
    unsigned_type value = 0;
    for (int index = 0; index < bytes_max; ++index) {
        uint8_t byte = static_cast<uint8_t>(reader.read_int8());
        if (!reader.ok()) return 0;
        if (index == bytes_max - 1 && ((byte & last_byte_mask) != 0 || (byte & 0x80) != 0)) break;
        value |= unsigned_type(byte & 0x7f) << (7 * index);
        if (!(byte & 0x80)) return value;
    }
    reader.fail(wire_error::varint_too_long);
    return 0;
}

inline void store_int32_be(std::byte* at, int32_t value) {
    uint32_t v = static_cast<uint32_t>(value);
    at[0] = std::byte(v >> 24);
    at[1] = std::byte(v >> 16);
    at[2] = std::byte(v >> 8);
    at[3] = std::byte(v);
}
inline void store_int64_be(std::byte* at, int64_t value) {
    store_int32_be(at, int32_t(uint64_t(value) >> 32));
    store_int32_be(at + 4, int32_t(uint64_t(value) & 0xffffffffu));
}
inline void store_int16_be(std::byte* at, int16_t value) {
    uint16_t v = static_cast<uint16_t>(value);
    at[0] = std::byte(v >> 8);
    at[1] = std::byte(v);
}

}  // namespace kpp::protocol
