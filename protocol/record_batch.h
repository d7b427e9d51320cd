// A read-only view over Kafka record batches (magic 2) and their records, with every length
// and varint bounded. Nothing here copies or allocates: views point into the caller's bytes.
//
// Batch layout (big-endian, offsets in bytes):
//   0 base_offset int64 | 8 batch_length int32 (bytes after this field) | 12 leader_epoch
//   16 magic int8 | 17 crc uint32 (CRC-32C of bytes 21..end) | 21 attributes int16
//   23 last_offset_delta int32 | 27 base_timestamp | 35 max_timestamp | 43 producer_id
//   51 producer_epoch int16 | 53 base_sequence int32 | 57 records_count int32 | 61 records
// Record: length varint, attributes int8, timestamp_delta varlong, offset_delta varint,
//   key (varint length, -1 null), value (same), headers count varint, headers
//   (key: varint length + bytes; value: varint length, -1 null, + bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "protocol/codecs.h"

namespace kpp::protocol {

namespace batch_layout {
constexpr size_t base_offset_at = 0;
constexpr size_t batch_length_at = 8;
constexpr size_t partition_leader_epoch_at = 12;
constexpr size_t magic_at = 16;
constexpr size_t crc_at = 17;
constexpr size_t attributes_at = 21;
constexpr size_t last_offset_delta_at = 23;
constexpr size_t base_timestamp_at = 27;
constexpr size_t max_timestamp_at = 35;
constexpr size_t producer_id_at = 43;
constexpr size_t producer_epoch_at = 51;
constexpr size_t base_sequence_at = 53;
constexpr size_t records_count_at = 57;
constexpr size_t records_at = 61;
constexpr size_t crc_covered_from = attributes_at;
constexpr size_t log_overhead_bytes = 12;  // base_offset and batch_length precede what batch_length counts
constexpr size_t header_bytes = records_at;
// The smallest record: length, attributes, timestamp delta, offset delta, key and value
// lengths, headers count, one byte each.
constexpr size_t record_bytes_min = 7;
// Smallest log entry of any magic (a v0 message: crc, magic, attributes, key and value lengths).
constexpr size_t legacy_entry_bytes_min = 14;

constexpr uint16_t codec_mask = 0x07;
constexpr uint16_t timestamp_type_bit = 0x08;
constexpr uint16_t transactional_bit = 0x10;
constexpr uint16_t control_bit = 0x20;
}  // namespace batch_layout

enum class batch_error : uint8_t {
    none = 0,
    truncated,              // a field or record runs past the end of its container
    invalid_length,         // batch_length or a record length inconsistent with the bytes
    unsupported_magic,      // not a v2 record batch
    crc_mismatch,
    varint_too_long,
    negative_length,        // a length below -1, or -1 where null is not allowed
    record_count_mismatch,  // records_count disagrees with the records section
    unknown_codec,
    decompress_failed,
    records_too_large,      // decompressed records over the caller's limit
    compress_failed,
    invalid_tag_key,
};

const char* to_string(batch_error error);

// Decoded int values at fixed offsets. Construct only over bytes that passed
// validate_batch_header (at least header_bytes long).
class record_batch_view {
public:
    explicit record_batch_view(std::span<const std::byte> bytes) : bytes_(bytes) {}

    std::span<const std::byte> bytes() const { return bytes_; }
    int64_t base_offset() const;
    int32_t batch_length() const;
    int32_t partition_leader_epoch() const;
    int8_t magic() const { return int8_t(bytes_[batch_layout::magic_at]); }
    uint32_t stored_crc() const;
    int16_t attributes() const;
    int32_t last_offset_delta() const;
    int64_t base_timestamp() const;
    int64_t max_timestamp() const;
    int64_t producer_id() const;
    int16_t producer_epoch() const;
    int32_t base_sequence() const;
    int32_t records_count() const;

    // Wrapping, not undefined, when a hostile batch puts base_offset near INT64_MAX (found by
    // fuzzing); a real log never gets there.
    int64_t last_offset() const { return int64_t(uint64_t(base_offset()) + uint64_t(int64_t(last_offset_delta()))); }
    codec compression() const { return codec(uint16_t(attributes()) & batch_layout::codec_mask); }
    bool is_transactional() const { return uint16_t(attributes()) & batch_layout::transactional_bit; }
    bool is_control() const { return uint16_t(attributes()) & batch_layout::control_bit; }
    // The records section: raw records, or the compressed stream of them.
    std::span<const std::byte> records_section() const { return bytes_.subspan(batch_layout::records_at); }
    uint32_t computed_crc() const;

private:
    std::span<const std::byte> bytes_;
};

// Structure only: size, batch_length == size - 12, magic 2, records_count >= 0 and, for an
// uncompressed batch, not more records than the section could hold.
batch_error validate_batch_header(std::span<const std::byte> batch);
// Structure and CRC.
batch_error validate_batch(std::span<const std::byte> batch);

// One record, as spans into the records section.
// Where a record's parts lie: what splicing a header into it needs.
struct record_layout {
    std::span<const std::byte> bytes;  // the whole record, its length varint included
    uint32_t body_at = 0;              // offset in `bytes` of attributes (after the length varint)
    uint32_t headers_count_at = 0;     // offset in `bytes` of the headers count varint
    uint32_t headers_at = 0;           // offset in `bytes` of the first header
    int32_t headers_count = 0;

    std::span<const std::byte> headers() const { return bytes.subspan(headers_at); }
};

// A parsed record: its layout and its fields' values.
struct record_view : record_layout {
    int8_t attributes = 0;
    int64_t timestamp_delta = 0;
    int32_t offset_delta = 0;
    std::optional<std::span<const std::byte>> key;
    std::optional<std::span<const std::byte>> value;
};

struct record_header_view {
    std::span<const std::byte> bytes;  // the whole encoded header
    std::string_view key;
    std::optional<std::span<const std::byte>> value;
};

// Parses the record at the start of `input`; `consumed` is its size. truncated when the
// input ends inside it (the record may continue in bytes not yet decompressed).
batch_error parse_record(std::span<const std::byte> input, record_view& record, size_t& consumed);
// The same, noting in the same pass the last header with `key` (what find_last_header
// returns for the parsed record): the fetch path's one walk over a batch's first record.
batch_error parse_record(std::span<const std::byte> input, record_view& record, size_t& consumed,
                         std::string_view key, std::optional<record_header_view>& last_with_key);

// The layout of the record at the start of `input`, checked as parse_record checks it but
// without decoding the values (tens of instructions a record: the Produce path scans every
// record it tags). A record parse_record refuses is refused with the same error, and one it
// accepts gets the same layout: anything but the plain case is handed to parse_record.
batch_error scan_record(std::span<const std::byte> input, record_layout& layout, size_t& consumed);

// Size of the record at the start of `input` (length varint plus length) from its first
// bytes; truncated when even the length varint is incomplete.
batch_error record_size(std::span<const std::byte> input, size_t& size_bytes);

// Iterates the records of an uncompressed (or decompressed) records section, checking that
// exactly `records_count` records fill it.
class record_reader {
public:
    record_reader(std::span<const std::byte> records_section, int32_t records_count)
        : section_(records_section), records_left_(records_count < 0 ? 0 : records_count) {
        if (records_count < 0) error_ = batch_error::negative_length;
    }
    // False at the end or on an error; then error() tells which.
    bool next(record_view& record) { return advance(record); }
    // The same with scan_record: the layout only.
    bool next(record_layout& layout) { return advance(layout); }
    batch_error error() const { return error_; }
    size_t position() const { return position_; }

private:
    template <typename parsed_type>
    bool advance(parsed_type& parsed) {
        if (error_ != batch_error::none) return false;
        if (records_left_ == 0) {
            if (position_ != section_.size()) error_ = batch_error::record_count_mismatch;
            return false;
        }
        if (position_ == section_.size()) {
            error_ = batch_error::record_count_mismatch;
            return false;
        }
        size_t consumed = 0;
        if constexpr (std::is_same_v<parsed_type, record_view>)
            error_ = parse_record(section_.subspan(position_), parsed, consumed);
        else
            error_ = scan_record(section_.subspan(position_), parsed, consumed);
        if (error_ != batch_error::none) return false;
        position_ += consumed;
        --records_left_;
        return true;
    }

    std::span<const std::byte> section_;
    size_t position_ = 0;
    int32_t records_left_;
    batch_error error_ = batch_error::none;
};

class header_reader {
public:
    explicit header_reader(const record_layout& record)
        : headers_(record.headers()), headers_left_(record.headers_count) {}
    bool next(record_header_view& header);
    batch_error error() const { return error_; }

private:
    std::span<const std::byte> headers_;
    size_t position_ = 0;
    int32_t headers_left_;
    batch_error error_ = batch_error::none;
};

// The last header with `key` (Java's Headers.lastHeader), or nullopt.
std::optional<record_header_view> find_last_header(const record_view& record, std::string_view key);

// One log entry of a records field (a Fetch response's or a Produce request's).
struct batch_entry {
    std::span<const std::byte> bytes;  // base_offset through the end of the entry
    size_t offset_in_field = 0;
    int8_t magic = -1;                 // -1 when the entry is too short to hold one
};

// Walks a records field: a sequence of batches, the last one possibly cut short (brokers
// fill Fetch responses up to the byte limit and send the partial batch; clients ignore it).
// A cut-short tail ends the walk with partial() true; it is not an error.
class batch_iterator {
public:
    explicit batch_iterator(std::span<const std::byte> records_field) : field_(records_field) {}
    bool next(batch_entry& entry);
    batch_error error() const { return error_; }
    bool partial() const { return partial_; }
    // Bytes of whole entries seen so far (where the partial tail starts once done).
    size_t complete_bytes() const { return position_; }

private:
    std::span<const std::byte> field_;
    size_t position_ = 0;
    bool partial_ = false;
    batch_error error_ = batch_error::none;
};

// Building batches: for what the proxy writes itself (its offset store), tests and benchmarks.
struct record_header_input {
    std::string_view key;
    std::optional<std::span<const std::byte>> value;
};

struct record_input {
    std::optional<std::span<const std::byte>> key;
    std::optional<std::span<const std::byte>> value;
    std::vector<record_header_input> headers;
    int64_t timestamp_delta = 0;
    int32_t offset_delta = 0;  // the builder does not check that these ascend
};

struct batch_fields {
    int64_t base_offset = 0;
    int32_t partition_leader_epoch = -1;
    codec compression = codec::none;
    bool transactional = false;
    bool control = false;
    bool log_append_time = false;
    int64_t base_timestamp = 0;
    int64_t max_timestamp = 0;
    int64_t producer_id = -1;
    int16_t producer_epoch = -1;
    int32_t base_sequence = -1;
};

struct built_batch {
    std::vector<std::byte> bytes;
    batch_error error = batch_error::none;
    bool ok() const { return error == batch_error::none; }
};

// last_offset_delta is the last record's offset_delta (0 with no records).
built_batch build_record_batch(const batch_fields& fields, std::span<const record_input> records);
// The records section, uncompressed.
void append_record(const record_input& record, std::vector<std::byte>& out);

// Zig-zag varint encoding, as record lengths and header counts use.
constexpr size_t varint_bytes_max = 5;
// Inline: the Produce path writes two for every record it tags.
inline size_t encoded_varint_size(int32_t value) {
    uint32_t raw = (uint32_t(value) << 1) ^ uint32_t(value >> 31);
    size_t size = 1;
    for (; raw >= 0x80; raw >>= 7) ++size;
    return size;
}
inline size_t encode_varint(int32_t value, std::byte* out) {  // out needs varint_bytes_max bytes
    uint32_t raw = (uint32_t(value) << 1) ^ uint32_t(value >> 31);
    size_t size = 0;
    for (; raw >= 0x80; raw >>= 7) out[size++] = std::byte(uint8_t(raw) | 0x80);
    out[size++] = std::byte(raw);
    return size;
}

}  // namespace kpp::protocol
