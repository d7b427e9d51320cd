#include "protocol/record_batch.h"

#include <climits>

#include "protocol/crc32c.h"
#include "protocol/wire.h"

namespace kpp::protocol {

const char* to_string(batch_error error) {
    switch (error) {
        case batch_error::none: return "ok";
        case batch_error::truncated: return "truncated";
        case batch_error::invalid_length: return "invalid length";
        case batch_error::unsupported_magic: return "unsupported magic (not a v2 record batch)";
        case batch_error::crc_mismatch: return "CRC mismatch";
        case batch_error::varint_too_long: return "varint too long";
        case batch_error::negative_length: return "negative length";
        case batch_error::record_count_mismatch: return "records_count disagrees with the records";
        case batch_error::unknown_codec: return "unknown compression codec";
        case batch_error::decompress_failed: return "decompression failed";
        case batch_error::records_too_large: return "decompressed records over the limit";
        case batch_error::compress_failed: return "compression failed";
        case batch_error::invalid_tag_key: return "invalid tag header key";
    }
    return "unknown batch error";
}

namespace {

int64_t load_int64_be(const std::byte* at) {
    return int64_t((uint64_t(uint32_t(load_int32_be(at))) << 32) | uint64_t(uint32_t(load_int32_be(at + 4))));
}

batch_error from_wire(wire_error error) {
    switch (error) {
        case wire_error::none: return batch_error::none;
        case wire_error::truncated: return batch_error::truncated;
        case wire_error::varint_too_long: return batch_error::varint_too_long;
        case wire_error::negative_length: return batch_error::negative_length;
        default: return batch_error::invalid_length;
    }
}

// A varint-prefixed byte field: -1 is null when `nullable`, anything below is refused.
// Inline, as the record parse below: they run for every record a Produce tags.
[[gnu::always_inline]] inline batch_error read_varint_bytes(wire_reader& reader, bool nullable, std::optional<std::span<const std::byte>>& field) {
    int32_t length = reader.read_varint();
    if (!reader.ok()) return from_wire(reader.error());
    if (length < -1 || (length == -1 && !nullable)) return batch_error::negative_length;
    if (length == -1) {
        field.reset();
        return batch_error::none;
    }
    if (size_t(length) > reader.remaining()) return batch_error::truncated;
    field = std::span<const std::byte>(reader.data() + reader.position(), size_t(length));
    reader.skip(size_t(length));
    return batch_error::none;
}

// Header key and value, bounded by the reader (the record's body).
batch_error parse_header(wire_reader& reader, record_header_view& header) {
    size_t start = reader.position();
    std::optional<std::span<const std::byte>> key;
    if (batch_error error = read_varint_bytes(reader, false, key); error != batch_error::none) return error;
    if (batch_error error = read_varint_bytes(reader, true, header.value); error != batch_error::none) return error;
    header.key = std::string_view(reinterpret_cast<const char*>(key->data()), key->size());
    header.bytes = std::span<const std::byte>(reader.data() + start, reader.position() - start);
    return batch_error::none;
}

// Attributes through the headers count; the reader spans exactly the record body.
// With `last_with_key`, notes the last header whose key is `key` on the way.
[[gnu::always_inline]] inline batch_error parse_record_body(wire_reader& body, record_view& record, std::string_view key,
                              std::optional<record_header_view>* last_with_key) {
    record.attributes = body.read_int8();
    record.timestamp_delta = body.read_varlong();
    record.offset_delta = body.read_varint();
    if (!body.ok()) return from_wire(body.error());
    if (batch_error error = read_varint_bytes(body, true, record.key); error != batch_error::none) return error;
    if (batch_error error = read_varint_bytes(body, true, record.value); error != batch_error::none) return error;
    size_t count_at = body.position();
    record.headers_count = body.read_varint();
    if (!body.ok()) return from_wire(body.error());
    if (record.headers_count < 0) return batch_error::negative_length;
    // Each header takes at least two bytes (two length varints).
    if (size_t(record.headers_count) > body.remaining() / 2) return batch_error::invalid_length;
    record.headers_count_at = uint32_t(record.body_at + count_at);
    record.headers_at = uint32_t(record.body_at + body.position());
    record_header_view header;
    for (int32_t index = 0; index < record.headers_count; ++index) {
        if (batch_error error = parse_header(body, header); error != batch_error::none) return error;
        if (last_with_key && header.key == key) *last_with_key = header;
    }
    // The headers must end exactly where the record's length says it ends.
    return body.remaining() == 0 ? batch_error::none : batch_error::invalid_length;
}

}  // namespace

int64_t record_batch_view::base_offset() const { return load_int64_be(bytes_.data() + batch_layout::base_offset_at); }
int32_t record_batch_view::batch_length() const { return load_int32_be(bytes_.data() + batch_layout::batch_length_at); }
int32_t record_batch_view::partition_leader_epoch() const {
    return load_int32_be(bytes_.data() + batch_layout::partition_leader_epoch_at);
}
uint32_t record_batch_view::stored_crc() const { return uint32_t(load_int32_be(bytes_.data() + batch_layout::crc_at)); }
int16_t record_batch_view::attributes() const { return load_int16_be(bytes_.data() + batch_layout::attributes_at); }
int32_t record_batch_view::last_offset_delta() const {
    return load_int32_be(bytes_.data() + batch_layout::last_offset_delta_at);
}
int64_t record_batch_view::base_timestamp() const { return load_int64_be(bytes_.data() + batch_layout::base_timestamp_at); }
int64_t record_batch_view::max_timestamp() const { return load_int64_be(bytes_.data() + batch_layout::max_timestamp_at); }
int64_t record_batch_view::producer_id() const { return load_int64_be(bytes_.data() + batch_layout::producer_id_at); }
int16_t record_batch_view::producer_epoch() const { return load_int16_be(bytes_.data() + batch_layout::producer_epoch_at); }
int32_t record_batch_view::base_sequence() const { return load_int32_be(bytes_.data() + batch_layout::base_sequence_at); }
int32_t record_batch_view::records_count() const { return load_int32_be(bytes_.data() + batch_layout::records_count_at); }

uint32_t record_batch_view::computed_crc() const { return crc32c(bytes_.subspan(batch_layout::crc_covered_from)); }

batch_error validate_batch_header(std::span<const std::byte> batch) {
    if (batch.size() <= batch_layout::magic_at) return batch_error::truncated;
    if (int8_t(batch[batch_layout::magic_at]) != 2) return batch_error::unsupported_magic;
    if (batch.size() < batch_layout::header_bytes) return batch_error::truncated;
    record_batch_view view(batch);
    if (view.batch_length() < 0 || size_t(view.batch_length()) != batch.size() - batch_layout::log_overhead_bytes)
        return batch_error::invalid_length;
    if (view.records_count() < 0) return batch_error::negative_length;
    if (view.compression() == codec::none &&
        size_t(view.records_count()) > view.records_section().size() / batch_layout::record_bytes_min)
        return batch_error::record_count_mismatch;
    if (uint16_t(view.compression()) > uint16_t(codec::zstd)) return batch_error::unknown_codec;
    return batch_error::none;
}

batch_error validate_batch(std::span<const std::byte> batch) {
    if (batch_error error = validate_batch_header(batch); error != batch_error::none) return error;
    record_batch_view view(batch);
    return view.computed_crc() == view.stored_crc() ? batch_error::none : batch_error::crc_mismatch;
}

batch_error record_size(std::span<const std::byte> input, size_t& size_bytes) {
    wire_reader reader(input);
    int32_t length = reader.read_varint();
    if (!reader.ok()) return from_wire(reader.error());
    if (length < 0) return batch_error::negative_length;
    size_bytes = reader.position() + size_t(length);
    return batch_error::none;
}

namespace {

batch_error parse_record_noting(std::span<const std::byte> input, record_view& record, size_t& consumed,
                                std::string_view key, std::optional<record_header_view>* last_with_key) {
    // The length varint, read once (what record_size reads).
    wire_reader length_reader(input);
    int32_t length = length_reader.read_varint();
    if (!length_reader.ok()) return from_wire(length_reader.error());
    if (length < 0) return batch_error::negative_length;
    size_t size_bytes = length_reader.position() + size_t(length);
    if (size_bytes > input.size()) return batch_error::truncated;
    record = record_view{};
    record.bytes = input.first(size_bytes);
    record.body_at = uint32_t(length_reader.position());
    wire_reader body(record.bytes.subspan(record.body_at));
    if (last_with_key) last_with_key->reset();
    batch_error error = parse_record_body(body, record, key, last_with_key);
    // Inside a complete record, running out of bytes means the length lied.
    if (error == batch_error::truncated) return batch_error::invalid_length;
    if (error != batch_error::none) return error;
    consumed = size_bytes;
    return batch_error::none;
}

}  // namespace

batch_error parse_record(std::span<const std::byte> input, record_view& record, size_t& consumed) {
    return parse_record_noting(input, record, consumed, {}, nullptr);
}

batch_error parse_record(std::span<const std::byte> input, record_view& record, size_t& consumed,
                         std::string_view key, std::optional<record_header_view>& last_with_key) {
    return parse_record_noting(input, record, consumed, key, &last_with_key);
}

namespace {

// The raw bits of a varint of fewer than `bytes_max` bytes at `at`, below `end` (zig-zag
// still to undo). False on anything else (running out, a longer encoding): the caller then
// asks parse_record, which decodes every length and names the error.
template <int bytes_max>
[[gnu::always_inline]] inline bool plain_varint_raw(const std::byte*& at, const std::byte* end, uint64_t& raw) {
    if (at == end) return false;
    auto first = uint8_t(at[0]);
    if (!(first & 0x80)) {  // one byte and two: almost every length and delta
        ++at;
        raw = first;
        return true;
    }
    if (end - at >= 2 && !(uint8_t(at[1]) & 0x80)) {
        raw = uint64_t(first & 0x7f) | (uint64_t(uint8_t(at[1])) << 7);
        at += 2;
        return true;
    }
    raw = 0;
    for (int index = 0; index < bytes_max - 1 && at != end; ++index) {
        auto byte = uint8_t(*at++);
        raw |= uint64_t(byte & 0x7f) << (7 * index);
        if (!(byte & 0x80)) return true;
    }
    return false;
}

// The same, decoded.
template <int bytes_max>
[[gnu::always_inline]] inline bool plain_varint(const std::byte*& at, const std::byte* end, int64_t& value) {
    uint64_t raw = 0;
    if (!plain_varint_raw<bytes_max>(at, end, raw)) return false;
    value = int64_t(raw >> 1) ^ -int64_t(raw & 1);
    return true;
}

// A varint-prefixed byte field (null allowed when `nullable`) that fits before `end`.
[[gnu::always_inline]] inline bool plain_bytes_field(const std::byte*& at, const std::byte* end, bool nullable) {
    int64_t length = 0;
    if (!plain_varint<5>(at, end, length) || length < (nullable ? -1 : 0) || length > end - at) return false;
    if (length > 0) at += length;
    return true;
}

[[gnu::cold, gnu::noinline]] batch_error scan_record_carefully(std::span<const std::byte> input, record_layout& layout,
                                                         size_t& consumed) {
    record_view record;
    batch_error error = parse_record(input, record, consumed);
    if (error == batch_error::none) layout = record;
    return error;
}

}  // namespace

batch_error scan_record(std::span<const std::byte> input, record_layout& layout, size_t& consumed) {
    const std::byte* at = input.data();
    const std::byte* const input_end = at + input.size();
    int64_t length = 0;
    if (!plain_varint<5>(at, input_end, length) || length < 0 || length > input_end - at)
        return scan_record_carefully(input, layout, consumed);
    const std::byte* const body = at;
    const std::byte* const end = at + length;
    uint64_t ignored = 0;
    if (end == at) return scan_record_carefully(input, layout, consumed);
    ++at;  // attributes
    if (!plain_varint_raw<10>(at, end, ignored) || !plain_varint_raw<5>(at, end, ignored) ||  // timestamp, offset deltas
        !plain_bytes_field(at, end, true) || !plain_bytes_field(at, end, true))      // key, value
        return scan_record_carefully(input, layout, consumed);
    const std::byte* const count_at = at;
    int64_t headers_count = 0;
    if (!plain_varint<5>(at, end, headers_count) || headers_count < 0 || headers_count > (end - at) / 2)
        return scan_record_carefully(input, layout, consumed);
    const std::byte* const headers_at = at;
    for (int64_t index = 0; index < headers_count; ++index)
        if (!plain_bytes_field(at, end, false) || !plain_bytes_field(at, end, true))
            return scan_record_carefully(input, layout, consumed);
    if (at != end) return scan_record_carefully(input, layout, consumed);
    layout.bytes = input.first(size_t(end - input.data()));
    layout.body_at = uint32_t(body - input.data());
    layout.headers_count_at = uint32_t(count_at - input.data());
    layout.headers_at = uint32_t(headers_at - input.data());
    layout.headers_count = int32_t(headers_count);
    consumed = layout.bytes.size();
    return batch_error::none;
}

bool header_reader::next(record_header_view& header) {
    if (error_ != batch_error::none || headers_left_ <= 0) return false;
    wire_reader reader(headers_.subspan(position_));
    error_ = parse_header(reader, header);
    if (error_ != batch_error::none) return false;
    position_ += reader.position();
    --headers_left_;
    return true;
}

std::optional<record_header_view> find_last_header(const record_view& record, std::string_view key) {
    std::optional<record_header_view> found;
    header_reader reader(record);
    record_header_view header;
    while (reader.next(header))
        if (header.key == key) found = header;
    return found;
}

bool batch_iterator::next(batch_entry& entry) {
    if (error_ != batch_error::none || partial_ || position_ == field_.size()) return false;
    std::span<const std::byte> rest = field_.subspan(position_);
    if (rest.size() < batch_layout::log_overhead_bytes) {
        partial_ = true;
        return false;
    }
    int32_t length = load_int32_be(rest.data() + batch_layout::batch_length_at);
    if (length < int32_t(batch_layout::legacy_entry_bytes_min)) {
        error_ = batch_error::invalid_length;
        return false;
    }
    size_t entry_bytes = batch_layout::log_overhead_bytes + size_t(length);
    if (entry_bytes > rest.size()) {
        partial_ = true;
        return false;
    }
    entry.bytes = rest.first(entry_bytes);
    entry.offset_in_field = position_;
    entry.magic = int8_t(rest[batch_layout::magic_at]);
    position_ += entry_bytes;
    return true;
}


namespace {

void append_varint(int32_t value, std::vector<std::byte>& out) {
    std::byte encoded[varint_bytes_max];
    out.insert(out.end(), encoded, encoded + encode_varint(value, encoded));
}

void append_varlong(int64_t value, std::vector<std::byte>& out) {
    uint64_t raw = (uint64_t(value) << 1) ^ uint64_t(value >> 63);
    for (; raw >= 0x80; raw >>= 7) out.push_back(std::byte(uint8_t(raw) | 0x80));
    out.push_back(std::byte(raw));
}

void append_varint_bytes(std::optional<std::span<const std::byte>> field, std::vector<std::byte>& out) {
    if (!field) {
        append_varint(-1, out);
        return;
    }
    append_varint(int32_t(field->size()), out);
    out.insert(out.end(), field->begin(), field->end());
}

void append_be(uint64_t value, size_t bytes, std::vector<std::byte>& out) {
    for (size_t index = bytes; index-- > 0;) out.push_back(std::byte(value >> (8 * index)));
}

}  // namespace

void append_record(const record_input& record, std::vector<std::byte>& out) {
    std::vector<std::byte> body;
    body.push_back(std::byte{0});  // record attributes: unused, always 0
    append_varlong(record.timestamp_delta, body);
    append_varint(record.offset_delta, body);
    append_varint_bytes(record.key, body);
    append_varint_bytes(record.value, body);
    append_varint(int32_t(record.headers.size()), body);
    for (const record_header_input& header : record.headers) {
        append_varint_bytes(std::as_bytes(std::span(header.key)), body);
        append_varint_bytes(header.value, body);
    }
    append_varint(int32_t(body.size()), out);
    out.insert(out.end(), body.begin(), body.end());
}

built_batch build_record_batch(const batch_fields& fields, std::span<const record_input> records) {
    std::vector<std::byte> section;
    for (const record_input& record : records) append_record(record, section);
    if (fields.compression != codec::none) {
        codec_result packed = compress(fields.compression, section);
        if (!packed.ok()) return {{}, packed.error == codec_error::unknown_codec ? batch_error::unknown_codec
                                                                                 : batch_error::compress_failed};
        section = std::move(packed.bytes);
    }
    uint16_t attributes = uint16_t(fields.compression) & batch_layout::codec_mask;
    if (fields.log_append_time) attributes |= batch_layout::timestamp_type_bit;
    if (fields.transactional) attributes |= batch_layout::transactional_bit;
    if (fields.control) attributes |= batch_layout::control_bit;
    size_t size_bytes = batch_layout::header_bytes + section.size();
    if (size_bytes - batch_layout::log_overhead_bytes > size_t(INT32_MAX)) return {{}, batch_error::invalid_length};

    built_batch built;
    auto& out = built.bytes;
    out.reserve(size_bytes);
    append_be(uint64_t(fields.base_offset), 8, out);
    append_be(uint64_t(size_bytes - batch_layout::log_overhead_bytes), 4, out);
    append_be(uint32_t(fields.partition_leader_epoch), 4, out);
    out.push_back(std::byte{2});
    append_be(0, 4, out);  // CRC, patched below
    append_be(attributes, 2, out);
    append_be(uint32_t(records.empty() ? 0 : records.back().offset_delta), 4, out);
    append_be(uint64_t(fields.base_timestamp), 8, out);
    append_be(uint64_t(fields.max_timestamp), 8, out);
    append_be(uint64_t(fields.producer_id), 8, out);
    append_be(uint16_t(fields.producer_epoch), 2, out);
    append_be(uint32_t(fields.base_sequence), 4, out);
    append_be(uint32_t(records.size()), 4, out);
    out.insert(out.end(), section.begin(), section.end());
    uint32_t crc = crc32c(std::span<const std::byte>(out).subspan(batch_layout::crc_covered_from));
    store_int32_be(out.data() + batch_layout::crc_at, int32_t(crc));
    return built;
}

}  // namespace kpp::protocol
