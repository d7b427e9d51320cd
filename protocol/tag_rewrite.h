// The virtual-partition tag (DESIGN.md "Tag", "Produce", "Fetch"): every record produced to
// virtual partition v carries one header, key `kpr.vp` by default, value v as a 4-byte
// big-endian int32.
//
// Write side: rewrite_batch_tag adds the tag to every record of a v2 batch. Uncompressed
// batches come out as a scatter list: new bytes only for what changes (each record's length
// varint, its headers count varint, the tag header, and a new 61-byte batch header with the
// new batch_length and CRC); the rest of every record is a byte_slice into the input, not a
// copy. Compressed batches are decompressed, spliced and recompressed with the same codec.
// Timestamps, offset deltas and attributes are unchanged; producer id, epoch and base
// sequence too, unless `producer` asks for new ones (producer aliases and transactional
// renumbering, DESIGN.md section 2): the CRC is recomputed anyway, so they cost nothing.
// A record that already carries the tag key (even several times) comes out with exactly
// one tag, holding the new value: a client that bypassed the proxy once, or a replayed
// batch, must not end up belonging to two partitions. Control batches never come from
// producers; they are passed through unchanged.
//
// Read side: classify_batch reads the tag of a batch's FIRST record, decompressing only
// as much of a compressed batch as that record needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "protocol/codecs.h"
#include "protocol/record_batch.h"
#include "reactor/buffer_pool.h"

namespace kpp::protocol {

using reactor::byte_slice;
using reactor::shared_bytes;

constexpr std::string_view default_tag_key = "kpr.vp";
constexpr size_t tag_key_bytes_max = 1024;
constexpr size_t tag_value_bytes = 4;
constexpr size_t records_bytes_max_default = size_t(64) << 20;

// New producer fields for the rewritten batch header.
struct producer_patch {
    int64_t producer_id = -1;
    int16_t producer_epoch = -1;
    std::optional<int32_t> base_sequence;  // nullopt: the client's passes through
};

struct tag_rewrite_options {
    std::string_view tag_key = default_tag_key;
    // Decompressed records section limit (decompression bombs).
    size_t records_bytes_max = records_bytes_max_default;
    // Refuse a batch whose CRC is wrong rather than give it a fresh, valid one.
    bool verify_input_crc = true;
    // Runs of original bytes shorter than this are copied instead of referenced: fewer
    // iovecs for batches of tiny records. 0 references every run.
    uint32_t reference_bytes_min = 0;
    // Set: the batch goes out under another producer id and epoch (and sequence).
    std::optional<producer_patch> producer;
};

struct tag_rewrite_result {
    std::vector<byte_slice> pieces;  // the new batch, in order
    size_t size_bytes = 0;
    batch_error error = batch_error::none;
    codec_error codec_detail = codec_error::none;  // when error is a codec failure
    bool ok() const { return error == batch_error::none; }
};

// `batch` holds exactly one record batch (12 + batch_length bytes).
tag_rewrite_result rewrite_batch_tag(const byte_slice& batch, int32_t virtual_partition,
                                     const tag_rewrite_options& options = {});

struct batch_classification {
    batch_error error = batch_error::none;
    bool has_tag = false;
    bool tag_malformed = false;  // the key is there but the value is not 4 bytes
    int32_t virtual_partition = 0;
    bool is_control = false;
    int32_t records_count = 0;
    int64_t base_offset = 0;
    int64_t last_offset = 0;
};

// Checks structure (not the CRC: the consumer checks that) and reads the first record's tag
// (the last header with the key, as Java's lastHeader would). Control batches and batches
// without records are not looked into.
batch_classification classify_batch(std::span<const std::byte> batch, std::string_view tag_key = default_tag_key,
                                    size_t records_bytes_max = records_bytes_max_default);

// The encoded tag header: key length varint, key, value length varint (4), value.
size_t tag_header_bytes(std::string_view tag_key);
size_t encode_tag_header(std::string_view tag_key, int32_t virtual_partition, std::byte* out);

}  // namespace kpp::protocol
