#include "remap/fetch_demux.h"

#include <gtest/gtest.h>

#include "remap/fetch_window.h"

#include <string>
#include <vector>

#include "protocol/wire.h"

namespace kpp {

// Readable failures: gtest finds this by argument-dependent lookup.
void PrintTo(const field_range& range, std::ostream* out) {
    *out << "{at " << range.offset_in_field << ", " << range.length_bytes << " bytes}";
}

namespace {

using protocol::batch_error;
using protocol::batch_fields;
using protocol::codec;
using protocol::record_header_input;
using protocol::record_input;

std::string be32(int32_t value) {
    std::string out(4, '\0');
    protocol::store_int32_be(reinterpret_cast<std::byte*>(out.data()), value);
    return out;
}

std::span<const std::byte> bytes_of(const std::string& text) { return std::as_bytes(std::span(text)); }

// What a batch's records carry: a tag value per record (nullopt: no tag header).
struct batch_spec {
    int64_t base_offset = 0;
    std::vector<std::optional<std::string>> tags;  // one per record
    codec compression = codec::none;
    bool control = false;
    std::string tag_key = "kpr.vp";
};

std::vector<std::byte> build(const batch_spec& spec) {
    static const std::string value = "some value bytes";
    std::vector<record_input> records(spec.tags.size());
    for (size_t index = 0; index < spec.tags.size(); ++index) {
        record_input& record = records[index];
        record.value = bytes_of(value);
        record.offset_delta = int32_t(index);
        if (spec.tags[index]) record.headers.push_back(record_header_input{spec.tag_key, bytes_of(*spec.tags[index])});
    }
    batch_fields fields;
    fields.base_offset = spec.base_offset;
    fields.compression = spec.compression;
    fields.control = spec.control;
    fields.transactional = spec.control;
    protocol::built_batch built = protocol::build_record_batch(fields, records);
    EXPECT_TRUE(built.ok());
    return built.bytes;
}

// `count` records all tagged v (the proxy tags every record of a batch alike).
std::vector<std::byte> tagged(int64_t base_offset, int count, int32_t virtual_partition,
                              codec compression = codec::none) {
    batch_spec spec{base_offset, {}, compression};
    for (int index = 0; index < count; ++index) spec.tags.emplace_back(be32(virtual_partition));
    return build(spec);
}

std::vector<std::byte> untagged(int64_t base_offset, int count) {
    batch_spec spec{base_offset, std::vector<std::optional<std::string>>(size_t(count)), codec::none};
    return build(spec);
}

std::vector<std::byte> control_marker(int64_t offset) {
    batch_spec spec{offset, {std::nullopt}, codec::none, true};
    return build(spec);
}

// A magic 1 message with null key and value: offset, size, crc, magic, attributes,
// timestamp, key length, value length.
std::vector<std::byte> legacy_message(int64_t offset) {
    std::vector<std::byte> out(34, std::byte{0});
    for (int index = 0; index < 8; ++index) out[size_t(index)] = std::byte(uint64_t(offset) >> (56 - 8 * index));
    protocol::store_int32_be(out.data() + 8, 22);
    out[16] = std::byte{1};
    protocol::store_int32_be(out.data() + 26, -1);
    protocol::store_int32_be(out.data() + 30, -1);
    return out;
}

// A records field made of batches, remembering where each starts.
struct field_builder {
    std::vector<std::byte> bytes;
    std::vector<field_range> batches;

    field_builder& add(const std::vector<std::byte>& batch) {
        batches.push_back({bytes.size(), batch.size()});
        bytes.insert(bytes.end(), batch.begin(), batch.end());
        return *this;
    }
    // The first `keep_bytes` of a batch, as a broker cuts the last one at its byte limit.
    field_builder& add_cut(const std::vector<std::byte>& batch, size_t keep_bytes) {
        bytes.insert(bytes.end(), batch.begin(), batch.begin() + std::ptrdiff_t(keep_bytes));
        return *this;
    }
};

// V = 12 over P = 4, looking at p = 1: virtual partitions 1, 5 and 9 live there.
demux_mapping mapping_on_p1() { return {12, 4, 1}; }

std::vector<field_range> ranges_of(const field_builder& field, std::initializer_list<size_t> batch_indexes) {
    std::vector<field_range> out;
    for (size_t index : batch_indexes) out.push_back(field.batches[index]);
    return out;
}

field_range joined(const field_builder& field, size_t first, size_t last) {
    const field_range& end = field.batches[last];
    return {field.batches[first].offset_in_field, end.offset_in_field + end.length_bytes - field.batches[first].offset_in_field};
}

TEST(fetch_demux, interleaved_batches_go_to_their_tags) {
    field_builder field;
    field.add(tagged(0, 3, 1)).add(tagged(3, 2, 5)).add(tagged(5, 1, 9)).add(tagged(6, 2, 5)).add(tagged(8, 1, 1));
    std::vector<demux_request> requests{{1, 0}, {5, 0}, {9, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);

    ASSERT_EQ(result.partitions.size(), 3u);
    EXPECT_EQ(result.partitions[0].virtual_partition, 1);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {0, 4}));
    EXPECT_EQ(result.partitions[0].last_offset, 8);
    EXPECT_EQ(result.partitions[0].batches, 2);
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {1, 3}));
    EXPECT_EQ(result.partitions[1].last_offset, 7);
    EXPECT_EQ(result.partitions[2].ranges, ranges_of(field, {2}));
    EXPECT_EQ(result.partitions[2].last_offset, 5);
    // Records delivered, for the per-topic metrics: 3 + 1 on v1, 2 + 2 on v5, 1 on v9.
    EXPECT_EQ(result.partitions[0].records, 4u);
    EXPECT_EQ(result.partitions[1].records, 4u);
    EXPECT_EQ(result.partitions[2].records, 1u);
    EXPECT_EQ(result.next_fetch_offset, 9);
    EXPECT_FALSE(result.partial_tail);
    EXPECT_EQ(result.first_error, batch_error::none);
    EXPECT_EQ(result.counts.batches, 5);
}

TEST(fetch_demux, only_requested_partitions_are_answered_in_request_order) {
    field_builder field;
    field.add(tagged(0, 1, 1)).add(tagged(1, 1, 5)).add(tagged(2, 1, 9));
    std::vector<demux_request> requests{{9, 0}, {1, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    ASSERT_EQ(result.partitions.size(), 2u);
    EXPECT_EQ(result.partitions[0].virtual_partition, 9);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {2}));
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {0}));
    EXPECT_EQ(result.counts.bytes_delivered, field.batches[0].length_bytes + field.batches[2].length_bytes);
    EXPECT_EQ(result.next_fetch_offset, 3);
}

TEST(fetch_demux, the_first_record_decides) {
    batch_spec mixed{0, {be32(5), be32(9), std::nullopt}};
    field_builder field;
    field.add(build(mixed));
    std::vector<demux_request> requests{{1, 0}, {5, 0}, {9, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_TRUE(result.partitions[0].ranges.empty());
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {0}));
    EXPECT_TRUE(result.partitions[2].ranges.empty());
}

TEST(fetch_demux, untagged_batches_belong_to_group_zero) {
    field_builder field;
    field.add(untagged(0, 2)).add(tagged(2, 1, 5)).add(untagged(3, 1));
    std::vector<demux_request> requests{{1, 0}, {5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {0, 2}));
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {1}));
}

TEST(fetch_demux, legacy_entries_belong_to_group_zero) {
    field_builder field;
    field.add(legacy_message(0)).add(legacy_message(1)).add(tagged(2, 1, 5));
    std::vector<demux_request> requests{{1, 0}, {5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, std::vector<field_range>{joined(field, 0, 1)});
    EXPECT_EQ(result.partitions[0].last_offset, 1);
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {2}));
    EXPECT_EQ(result.counts.legacy_entries, 2);
    EXPECT_EQ(result.next_fetch_offset, 3);
}

TEST(fetch_demux, control_batches_go_to_every_requested_partition) {
    field_builder field;
    field.add(tagged(0, 2, 5)).add(control_marker(2)).add(tagged(3, 1, 9)).add(control_marker(4));
    // v9 asked from offset 3: the first marker ends before that.
    std::vector<demux_request> requests{{1, 0}, {5, 0}, {9, 3}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {1, 3}));
    EXPECT_EQ(result.partitions[0].last_offset, 4);
    EXPECT_EQ(result.partitions[1].ranges, std::vector<field_range>({joined(field, 0, 1), field.batches[3]}));
    EXPECT_EQ(result.partitions[2].ranges, std::vector<field_range>{joined(field, 2, 3)});
    EXPECT_EQ(result.counts.control_batches, 2);
    // Markers are not records a consumer sees: only data records are counted.
    EXPECT_EQ(result.partitions[0].records, 0u);
    EXPECT_EQ(result.partitions[1].records, 2u);
    EXPECT_EQ(result.partitions[2].records, 1u);
    // Each copy of a marker counts as delivered.
    size_t marker_bytes = field.batches[1].length_bytes;
    EXPECT_EQ(result.counts.bytes_delivered, field.bytes.size() + 3 * marker_bytes);
}

TEST(fetch_demux, batches_ending_before_the_fetch_offset_are_left_out) {
    field_builder field;
    // The broker answers from the batch holding the fetch offset, so it can start earlier.
    field.add(tagged(0, 4, 5)).add(tagged(4, 4, 5)).add(tagged(8, 2, 1)).add(tagged(10, 2, 5));
    std::vector<demux_request> requests{{5, 4}, {1, 10}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {1, 3}));
    EXPECT_TRUE(result.partitions[1].ranges.empty());
    EXPECT_EQ(result.partitions[1].last_offset, -1);
    EXPECT_EQ(result.next_fetch_offset, 12);

    // A batch whose last offset equals the fetch offset is still delivered.
    std::vector<demux_request> at_last{{5, 7}};
    demux_result second = demux_fetch_records(field.bytes, mapping_on_p1(), at_last, 0);
    EXPECT_EQ(second.partitions[0].ranges, ranges_of(field, {1, 3}));
}

TEST(fetch_demux, batches_without_records_are_dropped) {
    field_builder field;
    batch_spec empty{5, {}};
    field.add(tagged(0, 5, 1)).add(build(empty)).add(tagged(6, 1, 1));
    std::vector<demux_request> requests{{1, 0}, {5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {0, 2}));
    EXPECT_TRUE(result.partitions[1].ranges.empty());
    EXPECT_EQ(result.counts.empty_batches, 1);
    EXPECT_EQ(result.next_fetch_offset, 7);
}

TEST(fetch_demux, partial_tail_is_reported_not_delivered) {
    field_builder field;
    std::vector<std::byte> last = tagged(3, 2, 5);
    field.add(tagged(0, 3, 5)).add_cut(last, last.size() - 5);
    std::vector<demux_request> requests{{5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {0}));
    EXPECT_TRUE(result.partial_tail);
    EXPECT_EQ(result.partial_tail_at, field.batches[0].length_bytes);
    EXPECT_EQ(result.next_fetch_offset, 3);
    EXPECT_EQ(result.first_error, batch_error::none);
    EXPECT_EQ(result.counts.bytes_scanned, field.bytes.size());
    EXPECT_EQ(result.counts.bytes_delivered, field.batches[0].length_bytes);
}

TEST(fetch_demux, only_a_partial_batch_keeps_the_fetch_offset) {
    for (size_t keep_bytes : {size_t(0), size_t(7), size_t(40)}) {
        field_builder field;
        field.add_cut(tagged(100, 3, 5), keep_bytes);
        std::vector<demux_request> requests{{5, 90}, {1, 100}};
        demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 95);
        EXPECT_EQ(result.next_fetch_offset, 95) << keep_bytes;
        EXPECT_EQ(result.partial_tail, keep_bytes > 0) << keep_bytes;
        EXPECT_EQ(result.partial_tail_at, 0u);
        EXPECT_EQ(result.counts.batches, 0);
    }
}

TEST(fetch_demux, foreign_and_invalid_tags_go_to_nobody) {
    field_builder field;
    field.add(tagged(0, 1, 2))    // lives on p = 2
        .add(tagged(1, 1, 13))    // 13 % 4 == 1 but 13 >= V
        .add(tagged(2, 1, -3))
        .add(tagged(3, 1, 5));
    batch_spec malformed{4, {std::string("\x00\x05", 2)}};
    field.add(build(malformed));
    std::vector<demux_request> requests{{1, 0}, {5, 0}, {9, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_TRUE(result.partitions[0].ranges.empty());
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {3}));
    EXPECT_TRUE(result.partitions[2].ranges.empty());
    EXPECT_EQ(result.counts.foreign_tag_batches, 4);
    EXPECT_EQ(result.next_fetch_offset, 5);  // skipped, not stuck
    EXPECT_EQ(result.first_error, batch_error::none);
}

TEST(fetch_demux, compressed_batches_are_classified_by_their_first_record) {
    for (codec kind : {codec::gzip, codec::snappy, codec::lz4, codec::zstd}) {
        field_builder field;
        field.add(tagged(0, 20, 9, kind)).add(tagged(20, 20, 5, kind)).add(untagged(40, 3)).add(tagged(43, 5, 9, kind));
        std::vector<demux_request> requests{{1, 0}, {5, 0}, {9, 0}};
        demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
        EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {2})) << int(kind);
        EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {1})) << int(kind);
        EXPECT_EQ(result.partitions[2].ranges, ranges_of(field, {0, 3})) << int(kind);
        EXPECT_EQ(result.next_fetch_offset, 48) << int(kind);
        EXPECT_EQ(result.first_error, batch_error::none) << int(kind);
    }
}

TEST(fetch_demux, adjacent_batches_become_one_range) {
    field_builder field;
    field.add(tagged(0, 1, 5)).add(tagged(1, 1, 5)).add(untagged(2, 1)).add(tagged(3, 1, 5)).add(tagged(4, 1, 5))
        .add(tagged(5, 1, 5));
    std::vector<demux_request> requests{{5, 0}, {1, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, std::vector<field_range>({joined(field, 0, 1), joined(field, 3, 5)}));
    EXPECT_EQ(result.partitions[0].batches, 5);
    EXPECT_EQ(result.partitions[0].size_bytes, field.bytes.size() - field.batches[2].length_bytes);
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {2}));
}

TEST(fetch_demux, amplification_counters) {
    field_builder field;
    field.add(tagged(0, 10, 1)).add(tagged(10, 10, 9)).add(tagged(20, 10, 5)).add(tagged(30, 1, 2));
    std::vector<std::byte> tail = tagged(31, 10, 5);
    field.add_cut(tail, 30);
    std::vector<demux_request> requests{{5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.counts.batches, 4);
    EXPECT_EQ(result.counts.bytes_scanned, field.bytes.size());
    EXPECT_EQ(result.counts.bytes_delivered, field.batches[2].length_bytes);
    EXPECT_EQ(result.counts.foreign_tag_batches, 1);
    EXPECT_EQ(result.partitions[0].size_bytes, result.counts.bytes_delivered);
}

TEST(fetch_demux, corrupt_compressed_batch_is_reported_and_skipped) {
    field_builder field;
    std::vector<std::byte> broken = tagged(3, 5, 5, codec::lz4);
    for (size_t index = protocol::batch_layout::records_at; index < broken.size(); ++index) broken[index] = std::byte{0xff};
    field.add(tagged(0, 3, 5)).add(broken).add(tagged(8, 1, 5));
    std::vector<demux_request> requests{{5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {0, 2}));
    EXPECT_EQ(result.counts.unreadable_batches, 1);
    EXPECT_NE(result.first_error, batch_error::none);
    EXPECT_EQ(result.error_at, field.batches[1].offset_in_field);
    EXPECT_EQ(result.next_fetch_offset, 9);
}

TEST(fetch_demux, a_bad_entry_length_stops_the_walk) {
    field_builder field;
    field.add(tagged(0, 3, 5));
    std::vector<std::byte> garbage(20, std::byte{0});  // batch_length 0: below any entry
    field.add(garbage).add(tagged(3, 1, 5));
    std::vector<demux_request> requests{{5, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {0}));
    EXPECT_EQ(result.first_error, batch_error::invalid_length);
    EXPECT_EQ(result.error_at, field.batches[1].offset_in_field);
    EXPECT_EQ(result.next_fetch_offset, 3);
}

TEST(fetch_demux, configured_tag_key_is_used) {
    batch_spec custom{0, {be32(5)}};
    custom.tag_key = "x-vp";
    field_builder field;
    field.add(build(custom)).add(tagged(1, 1, 9));  // the default key means nothing here
    demux_mapping mapping = mapping_on_p1();
    mapping.tag_key = "x-vp";
    std::vector<demux_request> requests{{1, 0}, {5, 0}, {9, 0}};
    demux_result result = demux_fetch_records(field.bytes, mapping, requests, 0);
    EXPECT_EQ(result.partitions[0].ranges, ranges_of(field, {1}));
    EXPECT_EQ(result.partitions[1].ranges, ranges_of(field, {0}));
    EXPECT_TRUE(result.partitions[2].ranges.empty());
}

// The receive buffers of a response cut a records field anywhere: the piecewise walk must
// agree with the contiguous one for every cut, including cuts inside batch headers, and
// with a partial tail.
TEST(fetch_demux, pieces_agree_with_the_contiguous_field_for_every_cut) {
    field_builder field;
    field.add(tagged(0, 3, 1)).add(untagged(3, 2)).add(tagged(5, 1, 9)).add(control_marker(6)).add(tagged(7, 4, 5));
    field.add_cut(tagged(11, 2, 1), 30);
    std::vector<demux_request> requests{{1, 0}, {5, 4}, {9, 0}};
    demux_result whole = demux_fetch_records(field.bytes, mapping_on_p1(), requests, 0);
    std::vector<std::byte> scratch;
    std::span<const std::byte> bytes(field.bytes);
    for (size_t first_cut = 0; first_cut <= bytes.size(); first_cut += 7) {
        for (size_t second_cut = first_cut; second_cut <= bytes.size(); second_cut += 13) {
            std::vector<std::span<const std::byte>> pieces{bytes.first(first_cut),
                                                           bytes.subspan(first_cut, second_cut - first_cut),
                                                           bytes.subspan(second_cut)};
            demux_result split = demux_fetch_records(pieces, mapping_on_p1(), requests, 0, scratch);
            ASSERT_EQ(split.partitions.size(), whole.partitions.size());
            for (size_t index = 0; index < whole.partitions.size(); ++index) {
                EXPECT_EQ(split.partitions[index].ranges, whole.partitions[index].ranges)
                    << "cuts at " << first_cut << " and " << second_cut;
                EXPECT_EQ(split.partitions[index].last_offset, whole.partitions[index].last_offset);
            }
            EXPECT_EQ(split.next_fetch_offset, whole.next_fetch_offset);
            EXPECT_EQ(split.partial_tail, whole.partial_tail);
            EXPECT_EQ(split.partial_tail_at, whole.partial_tail_at);
            EXPECT_EQ(split.counts.bytes_delivered, whole.counts.bytes_delivered);
        }
    }
    EXPECT_TRUE(whole.partial_tail);
    EXPECT_EQ(whole.next_fetch_offset, 11);
}

// What the window gives a request: entry after entry from its offset, each demultiplexed as
// the exchange does with it, the ranges turned into the batches' bytes.
struct served {
    std::vector<std::vector<std::byte>> bytes;  // per request, the delivered batches concatenated
    int64_t next_fetch_offset = 0;
};

served serve_from(const fetch_window& window, const window_key& key, std::span<const demux_request> requests,
                  int64_t offset) {
    served out;
    out.bytes.resize(requests.size());
    std::vector<std::byte> scratch;
    out.next_fetch_offset = offset;
    while (const window_entry* entry = window.find(key, out.next_fetch_offset, SIZE_MAX)) {
        std::vector<std::span<const std::byte>> pieces;
        for (const auto& slice : entry->records) pieces.push_back(slice.span());
        demux_result result = demux_fetch_records(pieces, mapping_on_p1(), requests, out.next_fetch_offset, scratch);
        std::vector<std::byte> flat;
        for (const auto& piece : pieces) flat.insert(flat.end(), piece.begin(), piece.end());
        for (size_t index = 0; index < requests.size(); ++index)
            for (const field_range& range : result.partitions[index].ranges)
                out.bytes[index].insert(out.bytes[index].end(), flat.begin() + std::ptrdiff_t(range.offset_in_field),
                                        flat.begin() + std::ptrdiff_t(range.offset_in_field + range.length_bytes));
        EXPECT_GT(result.next_fetch_offset, out.next_fetch_offset);
        out.next_fetch_offset = result.next_fetch_offset;
    }
    return out;
}

TEST(fetch_demux, the_shared_window_agrees_with_the_contiguous_log_for_every_split_and_offset) {
    // The log of one physical partition; one request fetched it in answers split at every
    // pair of batch boundaries (each answer's bytes in receive buffers cut at odd places),
    // and the window kept them. A request for any offset served from the window must get
    // exactly what the contiguous log gives it.
    field_builder log;
    log.add(tagged(0, 3, 1)).add(untagged(3, 2)).add(tagged(5, 1, 9)).add(control_marker(6)).add(tagged(7, 4, 5));
    log.add(tagged(11, 2, 1)).add(tagged(13, 1, 9)).add(tagged(14, 3, 5));
    const std::vector<int64_t> batch_start{0, 3, 5, 6, 7, 11, 13, 14};
    const int64_t log_end = 17;
    const window_key key{"topic", 1, 0};
    for (size_t first = 1; first < log.batches.size(); ++first) {
        for (size_t second = first; second <= log.batches.size(); ++second) {
            fetch_window window(size_t(1) << 20);
            auto keep = [&](size_t from_batch, size_t to_batch) {
                if (from_batch == to_batch) return;
                size_t at = log.batches[from_batch].offset_in_field;
                size_t end = to_batch == log.batches.size() ? log.bytes.size() : log.batches[to_batch].offset_in_field;
                // The answer arrived in two receive buffers, cut in the middle.
                reactor::shared_bytes buffer = reactor::shared_bytes::copy_of(std::span(log.bytes).subspan(at, end - at));
                uint32_t cut = uint32_t((end - at) / 2);
                window_entry entry;
                entry.from_offset = batch_start[from_batch];
                entry.to_offset = to_batch == log.batches.size() ? log_end : batch_start[to_batch];
                entry.records = {reactor::byte_slice{buffer, 0, cut}, reactor::byte_slice{buffer, cut, uint32_t(end - at) - cut}};
                entry.bytes = end - at;
                entry.held_bytes = buffer.size();
                window.store(key, std::move(entry));
            };
            keep(0, first);
            keep(first, second);
            keep(second, log.batches.size());
            for (int64_t offset = 0; offset < log_end; ++offset) {
                std::vector<demux_request> requests{{1, offset}, {5, offset}, {9, offset}};
                served got = serve_from(window, key, requests, offset);
                demux_result whole = demux_fetch_records(log.bytes, mapping_on_p1(), requests, offset);
                for (size_t index = 0; index < requests.size(); ++index) {
                    std::vector<std::byte> expected;
                    for (const field_range& range : whole.partitions[index].ranges)
                        expected.insert(expected.end(), log.bytes.begin() + std::ptrdiff_t(range.offset_in_field),
                                        log.bytes.begin() + std::ptrdiff_t(range.offset_in_field + range.length_bytes));
                    EXPECT_EQ(got.bytes[index], expected) << "answers split before batches " << first << " and "
                                                          << second << ", v " << requests[index].virtual_partition
                                                          << " from offset " << offset;
                }
                EXPECT_EQ(got.next_fetch_offset, whole.next_fetch_offset) << first << " " << second << " " << offset;
            }
        }
    }
}

TEST(fetch_demux, empty_field_and_no_requests) {
    std::vector<demux_request> requests{{5, 42}};
    demux_result result = demux_fetch_records({}, mapping_on_p1(), requests, 42);
    EXPECT_EQ(result.next_fetch_offset, 42);
    EXPECT_FALSE(result.partial_tail);
    ASSERT_EQ(result.partitions.size(), 1u);
    EXPECT_TRUE(result.partitions[0].ranges.empty());

    field_builder field;
    field.add(tagged(42, 2, 5));
    demux_result nobody = demux_fetch_records(field.bytes, mapping_on_p1(), {}, 42);
    EXPECT_TRUE(nobody.partitions.empty());
    EXPECT_EQ(nobody.next_fetch_offset, 44);
    EXPECT_EQ(nobody.counts.bytes_delivered, 0u);
}

}  // namespace
}  // namespace kpp
