#include "protocol/wire.h"

namespace kpp::protocol {

const char* to_string(wire_error error) {
    switch (error) {
        case wire_error::none: return "no error";
        case wire_error::truncated: return "truncated";
        case wire_error::negative_length: return "negative length";
        case wire_error::varint_too_long: return "varint too long";
        case wire_error::array_too_large: return "array larger than the message";
        case wire_error::invalid_value: return "invalid value";
    }
    return "unknown";
}

int64_t wire_reader::read_int64() {
    if (!need(8)) return 0;
    uint64_t high = static_cast<uint32_t>(load_int32_be(data_ + position_));
    uint64_t low = static_cast<uint32_t>(load_int32_be(data_ + position_ + 4));
    position_ += 8;
    return static_cast<int64_t>((high << 32) | low);
}

uint32_t wire_reader::read_unsigned_varint_slow() { return decode_unsigned_varint<uint32_t>(*this); }

uint64_t wire_reader::read_unsigned_varlong_slow() { return decode_unsigned_varint<uint64_t>(*this); }

std::optional<std::span<const std::byte>> wire_reader::read_length_prefixed(bool flexible, bool int16_length,
                                                                         bool nullable) {
    int64_t length;
    if (flexible)
        length = int64_t(read_unsigned_varint()) - 1;
    else
        length = int16_length ? read_int16() : read_int32();
    if (!ok()) return std::nullopt;
    if (length < 0) {
        if (length == -1 && nullable) return std::nullopt;
        fail(wire_error::negative_length);
        return std::nullopt;
    }
    if (!need(size_t(length))) return std::nullopt;
    std::span<const std::byte> field(data_ + position_, size_t(length));
    position_ += size_t(length);
    return field;
}

std::optional<std::string_view> wire_reader::read_string(bool flexible, bool nullable) {
    auto field = read_length_prefixed(flexible, true, nullable);
    if (!field) return std::nullopt;
    return std::string_view(reinterpret_cast<const char*>(field->data()), field->size());
}

int32_t wire_reader::read_array_length(bool flexible, bool nullable, size_t element_bytes_min) {
    int64_t count = flexible ? int64_t(read_unsigned_varint()) - 1 : read_int32();
    if (!ok()) return 0;
    if (count < 0) {
        if (count == -1 && nullable) return -1;
        fail(wire_error::negative_length);
        return 0;
    }
    if (element_bytes_min > 0 && uint64_t(count) * element_bytes_min > remaining()) {
        fail(wire_error::array_too_large);
        return 0;
    }
    return static_cast<int32_t>(count);
}

std::optional<std::span<const std::byte>> wire_reader::read_bytes_field(bool flexible, bool nullable) {
    return read_length_prefixed(flexible, false, nullable);
}

void wire_reader::skip_bytes_field(bool flexible, bool nullable) { (void)read_bytes_field(flexible, nullable); }

void wire_reader::skip_tagged_fields() {
    uint32_t count = read_unsigned_varint();
    if (ok() && count > remaining() / 2) {  // each tagged field takes at least 2 bytes
        fail(wire_error::array_too_large);
        return;
    }
    for (uint32_t index = 0; index < count && ok(); ++index) {
        read_unsigned_varint();  // tag
        uint32_t size = read_unsigned_varint();
        skip(size);
    }
}

void wire_writer::write_int16(int16_t value) {
    std::byte raw[2];
    store_int16_be(raw, value);
    bytes_.insert(bytes_.end(), raw, raw + 2);
}

void wire_writer::write_int32(int32_t value) {
    std::byte raw[4];
    store_int32_be(raw, value);
    bytes_.insert(bytes_.end(), raw, raw + 4);
}

void wire_writer::write_int64(int64_t value) {
    write_int32(static_cast<int32_t>(uint64_t(value) >> 32));
    write_int32(static_cast<int32_t>(uint64_t(value) & 0xffffffffu));
}

void wire_writer::write_unsigned_varint(uint32_t value) {
    while (value >= 0x80) {
        bytes_.push_back(std::byte((value & 0x7f) | 0x80));
        value >>= 7;
    }
    bytes_.push_back(std::byte(value));
}

void wire_writer::write_varint(int32_t value) {
    write_unsigned_varint((uint32_t(value) << 1) ^ uint32_t(value >> 31));
}

void wire_writer::write_string(std::optional<std::string_view> value, bool flexible) {
    if (!value) {
        if (flexible)
            write_unsigned_varint(0);
        else
            write_int16(-1);
        return;
    }
    if (flexible)
        write_unsigned_varint(uint32_t(value->size()) + 1);
    else
        write_int16(static_cast<int16_t>(value->size()));
    write_raw(std::as_bytes(std::span(value->data(), value->size())));
}

void wire_writer::write_array_length(int32_t count, bool flexible) {
    if (flexible)
        write_unsigned_varint(count < 0 ? 0 : uint32_t(count) + 1);
    else
        write_int32(count);
}

void wire_writer::patch_int32(size_t offset, int32_t value) { store_int32_be(bytes_.data() + offset, value); }

}  // namespace kpp::protocol
