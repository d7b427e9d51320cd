#include "protocol/tag_rewrite.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "protocol/crc32c.h"
#include "protocol/wire.h"

namespace kpp::protocol {
namespace {

using header_list = std::vector<std::pair<std::string, std::optional<std::string>>>;

struct decoded_record {
    int8_t attributes = 0;
    int64_t timestamp_delta = 0;
    int32_t offset_delta = 0;
    std::optional<std::string> key, value;
    header_list headers;
    bool operator==(const decoded_record&) const = default;
};

std::optional<std::string> text_of(const std::optional<std::span<const std::byte>>& field) {
    if (!field) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(field->data()), field->size());
}

std::span<const std::byte> bytes_of(const std::string& text) { return std::as_bytes(std::span(text)); }

std::string be32(int32_t value) {
    std::string out(4, '\0');
    store_int32_be(reinterpret_cast<std::byte*>(out.data()), value);
    return out;
}

std::vector<decoded_record> decode_records(std::span<const std::byte> batch) {
    record_batch_view view(batch);
    codec_result section = decompress(view.compression(), view.records_section(), 64 << 20);
    EXPECT_TRUE(section.ok());
    std::vector<decoded_record> out;
    record_reader reader(section.bytes, view.records_count());
    record_view record;
    while (reader.next(record)) {
        decoded_record decoded{record.attributes, record.timestamp_delta, record.offset_delta,
                               text_of(record.key), text_of(record.value), {}};
        header_reader headers(record);
        record_header_view header;
        while (headers.next(header)) decoded.headers.emplace_back(std::string(header.key), text_of(header.value));
        EXPECT_EQ(headers.error(), batch_error::none);
        out.push_back(std::move(decoded));
    }
    EXPECT_EQ(reader.error(), batch_error::none);
    return out;
}

std::vector<std::byte> flatten(const tag_rewrite_result& result) {
    std::vector<std::byte> out;
    for (const byte_slice& piece : result.pieces) out.insert(out.end(), piece.span().begin(), piece.span().end());
    EXPECT_EQ(out.size(), result.size_bytes);
    return out;
}

// Records of assorted shapes: sizes that cross the 1- and 2-byte varint boundaries once the
// tag is added, null keys and values, other headers, null header values.
struct record_texts {
    std::vector<std::string> keys, values, header_values;
};

std::vector<record_input> assorted_records(record_texts& texts, int count) {
    texts.keys.resize(size_t(count));
    texts.values.resize(size_t(count));
    texts.header_values.resize(size_t(count));
    std::vector<record_input> records(static_cast<size_t>(count));
    for (int index = 0; index < count; ++index) {
        auto& record = records[size_t(index)];
        texts.keys[size_t(index)] = "key-" + std::to_string(index);
        texts.values[size_t(index)] = std::string(size_t(index * 7 % 300), char('a' + index % 26));
        texts.header_values[size_t(index)] = "hv" + std::to_string(index);
        if (index % 5 != 3) record.key = bytes_of(texts.keys[size_t(index)]);
        if (index % 7 != 4) record.value = bytes_of(texts.values[size_t(index)]);
        if (index % 3 == 0) record.headers.push_back({"trace", bytes_of(texts.header_values[size_t(index)])});
        if (index % 4 == 1) record.headers.push_back({"empty", std::nullopt});
        record.offset_delta = index;
        record.timestamp_delta = index * 3;
    }
    return records;
}

batch_fields idempotent_fields(codec kind) {
    batch_fields fields;
    fields.compression = kind;
    fields.base_offset = 0;
    fields.partition_leader_epoch = -1;
    fields.base_timestamp = 1700000000000;
    fields.max_timestamp = 1700000000123;
    fields.producer_id = 9001;
    fields.producer_epoch = 2;
    fields.base_sequence = 40;
    return fields;
}

byte_slice as_slice(const std::vector<std::byte>& bytes) {
    shared_bytes owner = shared_bytes::copy_of(bytes);
    return byte_slice{owner, 0, uint32_t(bytes.size())};
}

// Every record of `after` is the record of `before` with exactly one tag header holding
// `virtual_partition` appended, other headers in their order.
void expect_tagged(const std::vector<decoded_record>& before, const std::vector<decoded_record>& after,
                   int32_t virtual_partition, std::string_view tag_key = default_tag_key) {
    ASSERT_EQ(before.size(), after.size());
    for (size_t index = 0; index < before.size(); ++index) {
        decoded_record expected = before[index];
        std::erase_if(expected.headers, [&](const auto& header) { return header.first == tag_key; });
        expected.headers.emplace_back(std::string(tag_key), be32(virtual_partition));
        EXPECT_EQ(after[index], expected) << "record " << index;
    }
}

// The header fields other than batch_length and CRC are byte-identical; those two are right.
void expect_header_kept(std::span<const std::byte> before, std::span<const std::byte> after) {
    ASSERT_GE(after.size(), batch_layout::header_bytes);
    EXPECT_TRUE(std::equal(before.begin(), before.begin() + 8, after.begin()));
    EXPECT_TRUE(std::equal(before.begin() + 12, before.begin() + 17, after.begin() + 12));
    EXPECT_TRUE(std::equal(before.begin() + 21, before.begin() + 61, after.begin() + 21));
    EXPECT_EQ(size_t(load_int32_be(after.data() + 8)), after.size() - 12);
    EXPECT_EQ(uint32_t(load_int32_be(after.data() + 17)), crc32c_portable(after.subspan(21)));
}

TEST(tag_rewrite, uncompressed_every_record_tagged_and_bytes_kept) {
    record_texts texts;
    auto records = assorted_records(texts, 40);
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    ASSERT_TRUE(built.ok());
    tag_rewrite_result result = rewrite_batch_tag(as_slice(built.bytes), 7);
    ASSERT_TRUE(result.ok()) << to_string(result.error);
    auto output = flatten(result);
    EXPECT_EQ(validate_batch(output), batch_error::none);
    expect_header_kept(built.bytes, output);
    expect_tagged(decode_records(built.bytes), decode_records(output), 7);
}

TEST(tag_rewrite, uncompressed_record_bodies_are_referenced_not_copied) {
    record_texts texts;
    auto records = assorted_records(texts, 30);
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    byte_slice input = as_slice(built.bytes);
    tag_rewrite_result result = rewrite_batch_tag(input, 3);
    ASSERT_TRUE(result.ok());

    // Input bytes the output references, and how many new bytes it carries.
    std::vector<bool> referenced(input.length, false);
    size_t new_bytes = 0;
    for (const byte_slice& piece : result.pieces) {
        if (piece.owner.data() == input.owner.data()) {
            ASSERT_LE(piece.offset + piece.length, input.length);
            for (uint32_t at = 0; at < piece.length; ++at) referenced[piece.offset + at] = true;
        } else {
            new_bytes += piece.length;
        }
    }
    // New bytes: the batch header, and per record a length varint, a count varint and the tag.
    size_t tag_bytes = tag_header_bytes(default_tag_key);
    EXPECT_LE(new_bytes, batch_layout::header_bytes + records.size() * (5 + 5 + tag_bytes));
    EXPECT_GE(new_bytes, batch_layout::header_bytes + records.size() * (1 + 1 + tag_bytes));

    record_batch_view view(input.span());
    record_reader reader(view.records_section(), view.records_count());
    record_view record;
    while (reader.next(record)) {
        // Attributes through the value, and the existing headers, all come from the input.
        size_t record_at = size_t(record.bytes.data() - input.data());
        for (size_t at = record.body_at; at < record.headers_count_at; ++at)
            EXPECT_TRUE(referenced[record_at + at]) << "record byte " << at;
        for (size_t at = record.headers_at; at < record.bytes.size(); ++at)
            EXPECT_TRUE(referenced[record_at + at]) << "header byte " << at;
    }
    EXPECT_EQ(reader.error(), batch_error::none);
}

TEST(tag_rewrite, each_codec_is_recompressed_with_the_same_codec) {
    for (codec kind : {codec::gzip, codec::snappy, codec::lz4, codec::zstd}) {
        record_texts texts;
        auto records = assorted_records(texts, 60);
        built_batch built = build_record_batch(idempotent_fields(kind), records);
        ASSERT_TRUE(built.ok());
        tag_rewrite_result result = rewrite_batch_tag(as_slice(built.bytes), 123456);
        ASSERT_TRUE(result.ok()) << to_string(kind) << ": " << to_string(result.error);
        auto output = flatten(result);
        EXPECT_EQ(validate_batch(output), batch_error::none) << to_string(kind);
        expect_header_kept(built.bytes, output);
        EXPECT_EQ(record_batch_view(output).compression(), kind);
        expect_tagged(decode_records(built.bytes), decode_records(output), 123456);
    }
}

TEST(tag_rewrite, producer_fields_and_offsets_unchanged) {
    record_texts texts;
    auto records = assorted_records(texts, 5);
    batch_fields fields = idempotent_fields(codec::lz4);
    fields.transactional = true;
    fields.base_offset = 77;
    built_batch built = build_record_batch(fields, records);
    auto output = flatten(rewrite_batch_tag(as_slice(built.bytes), 1));
    record_batch_view before(built.bytes), after(output);
    EXPECT_EQ(after.base_offset(), 77);
    EXPECT_EQ(after.producer_id(), before.producer_id());
    EXPECT_EQ(after.producer_epoch(), before.producer_epoch());
    EXPECT_EQ(after.base_sequence(), before.base_sequence());
    EXPECT_EQ(after.base_timestamp(), before.base_timestamp());
    EXPECT_EQ(after.max_timestamp(), before.max_timestamp());
    EXPECT_EQ(after.last_offset_delta(), before.last_offset_delta());
    EXPECT_EQ(after.attributes(), before.attributes());
    EXPECT_EQ(after.records_count(), before.records_count());
    EXPECT_TRUE(after.is_transactional());
}

TEST(tag_rewrite, existing_tags_are_replaced_by_exactly_one) {
    std::string old_one = be32(1), old_two = be32(2), other = "x", key = "k", value = "v";
    std::vector<record_input> records(3);
    for (auto& record : records) {
        record.key = bytes_of(key);
        record.value = bytes_of(value);
    }
    records[0].headers = {{"kpr.vp", bytes_of(old_one)}};
    records[1].headers = {{"a", bytes_of(other)}, {"kpr.vp", bytes_of(old_one)}, {"b", std::nullopt},
                          {"kpr.vp", bytes_of(old_two)}, {"c", bytes_of(other)}};
    records[2].headers = {{"kpr.vp", std::nullopt}};  // malformed old tag: replaced as well
    for (codec kind : {codec::none, codec::zstd}) {
        built_batch built = build_record_batch(idempotent_fields(kind), records);
        auto output = flatten(rewrite_batch_tag(as_slice(built.bytes), 9));
        ASSERT_EQ(validate_batch(output), batch_error::none);
        auto after = decode_records(output);
        ASSERT_EQ(after.size(), 3u);
        EXPECT_EQ(after[0].headers, (header_list{{"kpr.vp", be32(9)}}));
        EXPECT_EQ(after[1].headers, (header_list{{"a", "x"}, {"b", std::nullopt}, {"c", "x"}, {"kpr.vp", be32(9)}}));
        EXPECT_EQ(after[2].headers, (header_list{{"kpr.vp", be32(9)}}));
        // Rewriting twice gives the same bytes as rewriting once.
        auto twice = flatten(rewrite_batch_tag(as_slice(output), 9));
        EXPECT_EQ(twice, output) << to_string(kind);
    }
}

TEST(tag_rewrite, configurable_tag_key) {
    record_texts texts;
    auto records = assorted_records(texts, 4);
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    tag_rewrite_options options;
    options.tag_key = "tenant.partition";
    auto output = flatten(rewrite_batch_tag(as_slice(built.bytes), 12, options));
    expect_tagged(decode_records(built.bytes), decode_records(output), 12, "tenant.partition");
    options.tag_key = "";
    EXPECT_EQ(rewrite_batch_tag(as_slice(built.bytes), 12, options).error, batch_error::invalid_tag_key);
}

TEST(tag_rewrite, negative_and_large_partition_values) {
    record_texts texts;
    auto records = assorted_records(texts, 2);
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    for (int32_t value : {0, 255, 256, 65536, INT32_MAX}) {
        auto output = flatten(rewrite_batch_tag(as_slice(built.bytes), value));
        batch_classification classified = classify_batch(output);
        ASSERT_TRUE(classified.has_tag);
        EXPECT_EQ(classified.virtual_partition, value);
    }
}

TEST(tag_rewrite, records_grow_past_varint_boundaries) {
    // Record bodies of every size from 1 to 200 bytes: the length varint grows from 1 to 2
    // bytes (zig-zag: at 64) once the tag is added.
    std::vector<std::string> values;
    for (int size = 0; size < 200; ++size) values.emplace_back(size_t(size), 'z');
    std::vector<record_input> records(values.size());
    for (size_t index = 0; index < values.size(); ++index) {
        records[index].value = bytes_of(values[index]);
        records[index].offset_delta = int32_t(index);
    }
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    auto output = flatten(rewrite_batch_tag(as_slice(built.bytes), 4));
    ASSERT_EQ(validate_batch(output), batch_error::none);
    expect_tagged(decode_records(built.bytes), decode_records(output), 4);
}

TEST(tag_rewrite, copying_small_runs_gives_the_same_bytes_with_fewer_pieces) {
    record_texts texts;
    auto records = assorted_records(texts, 50);
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    tag_rewrite_result referenced = rewrite_batch_tag(as_slice(built.bytes), 5);
    tag_rewrite_options options;
    options.reference_bytes_min = 1 << 20;  // copy everything
    tag_rewrite_result copied = rewrite_batch_tag(as_slice(built.bytes), 5, options);
    ASSERT_TRUE(referenced.ok() && copied.ok());
    EXPECT_EQ(flatten(referenced), flatten(copied));
    EXPECT_EQ(copied.pieces.size(), 1u);
    EXPECT_GT(referenced.pieces.size(), records.size());
}

TEST(tag_rewrite, with_a_copy_threshold_large_values_stay_referenced_and_the_rest_is_one_run) {
    // The Produce path's setting: runs under 512 bytes copied, longer ones referenced.
    std::vector<std::string> values = {"a", std::string(2000, 'B'), "c", "d", std::string(600, 'E'), "f"};
    std::vector<record_input> records(values.size());
    for (size_t index = 0; index < values.size(); ++index) {
        records[index].value = bytes_of(values[index]);
        records[index].offset_delta = int32_t(index);
    }
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    byte_slice input = as_slice(built.bytes);
    tag_rewrite_options options;
    options.reference_bytes_min = 512;
    tag_rewrite_result mixed = rewrite_batch_tag(input, 9, options);
    tag_rewrite_result referenced = rewrite_batch_tag(input, 9);
    ASSERT_TRUE(mixed.ok() && referenced.ok());
    EXPECT_EQ(flatten(mixed), flatten(referenced));
    expect_tagged(decode_records(built.bytes), decode_records(flatten(mixed)), 9);
    // The two long bodies are referenced; everything between them is copied into runs of
    // new bytes: new, long, new, long, new.
    std::vector<size_t> referenced_lengths;
    for (const byte_slice& piece : mixed.pieces)
        if (piece.owner.data() == input.owner.data()) referenced_lengths.push_back(piece.length);
    ASSERT_EQ(referenced_lengths.size(), 2u);
    EXPECT_GE(referenced_lengths[0], 2000u);
    EXPECT_GE(referenced_lengths[1], 600u);
    EXPECT_EQ(mixed.pieces.size(), 5u);
}

TEST(tag_rewrite, control_batches_pass_unchanged) {
    std::string key = std::string("\0\0\0\1", 4), value = std::string(6, '\0');
    std::vector<record_input> records(1);
    records[0].key = bytes_of(key);
    records[0].value = bytes_of(value);
    batch_fields fields = idempotent_fields(codec::none);
    fields.control = true;
    fields.transactional = true;
    built_batch built = build_record_batch(fields, records);
    tag_rewrite_result result = rewrite_batch_tag(as_slice(built.bytes), 5);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(flatten(result), built.bytes);
    batch_classification classified = classify_batch(built.bytes);
    EXPECT_TRUE(classified.is_control);
    EXPECT_FALSE(classified.has_tag);
}

TEST(tag_rewrite, empty_batch_stays_valid) {
    built_batch built = build_record_batch(idempotent_fields(codec::none), {});
    auto output = flatten(rewrite_batch_tag(as_slice(built.bytes), 5));
    EXPECT_EQ(output, built.bytes);
    EXPECT_EQ(classify_batch(output).records_count, 0);
}

TEST(tag_rewrite, bad_input_is_an_error_value) {
    record_texts texts;
    auto records = assorted_records(texts, 3);
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    auto corrupt = built.bytes;
    corrupt[batch_layout::crc_at] ^= std::byte(1);
    EXPECT_EQ(rewrite_batch_tag(as_slice(corrupt), 1).error, batch_error::crc_mismatch);
    tag_rewrite_options lenient;
    lenient.verify_input_crc = false;
    EXPECT_TRUE(rewrite_batch_tag(as_slice(corrupt), 1, lenient).ok());

    // records_count one too many, CRC made right: the records do not fill the count.
    auto miscounted = built.bytes;
    store_int32_be(miscounted.data() + 57, 4);
    store_int32_be(miscounted.data() + 17, int32_t(crc32c(std::span(miscounted).subspan(21))));
    EXPECT_EQ(rewrite_batch_tag(as_slice(miscounted), 1).error, batch_error::record_count_mismatch);

    EXPECT_EQ(rewrite_batch_tag(as_slice(std::vector<std::byte>(built.bytes.begin(), built.bytes.end() - 1)), 1).error,
              batch_error::invalid_length);
}

TEST(tag_rewrite, decompression_limit_refuses_bombs) {
    std::string zeros(1 << 20, '\0');
    std::vector<record_input> records(1);
    records[0].value = bytes_of(zeros);
    built_batch built = build_record_batch(idempotent_fields(codec::zstd), records);
    ASSERT_LT(built.bytes.size(), 1000u);
    tag_rewrite_options options;
    options.records_bytes_max = 64 << 10;
    tag_rewrite_result result = rewrite_batch_tag(as_slice(built.bytes), 1, options);
    EXPECT_EQ(result.error, batch_error::records_too_large);
    EXPECT_EQ(classify_batch(built.bytes, default_tag_key, 64 << 10).error, batch_error::records_too_large);
}

TEST(classify, reads_the_first_records_tag_for_every_codec) {
    record_texts texts;
    auto records = assorted_records(texts, 20);
    for (codec kind : {codec::none, codec::gzip, codec::snappy, codec::lz4, codec::zstd}) {
        batch_fields fields = idempotent_fields(kind);
        fields.base_offset = 1000;
        built_batch built = build_record_batch(fields, records);
        batch_classification untagged = classify_batch(built.bytes);
        EXPECT_EQ(untagged.error, batch_error::none);
        EXPECT_FALSE(untagged.has_tag);
        EXPECT_EQ(untagged.records_count, 20);
        EXPECT_EQ(untagged.base_offset, 1000);
        EXPECT_EQ(untagged.last_offset, 1019);

        auto tagged = flatten(rewrite_batch_tag(as_slice(built.bytes), 31));
        batch_classification classified = classify_batch(tagged);
        EXPECT_EQ(classified.error, batch_error::none) << to_string(kind);
        EXPECT_TRUE(classified.has_tag) << to_string(kind);
        EXPECT_EQ(classified.virtual_partition, 31);
        EXPECT_FALSE(classified.is_control);
    }
}

TEST(classify, a_first_record_larger_than_the_first_guess) {
    std::string big(200000, 'q'), small = "s";
    for (codec kind : {codec::gzip, codec::snappy, codec::lz4, codec::zstd}) {
        std::vector<record_input> records(2);
        records[0].value = bytes_of(big);
        records[1].value = bytes_of(small);
        records[1].offset_delta = 1;
        built_batch built = build_record_batch(idempotent_fields(kind), records);
        auto tagged = flatten(rewrite_batch_tag(as_slice(built.bytes), 8));
        batch_classification classified = classify_batch(tagged);
        EXPECT_EQ(classified.error, batch_error::none) << to_string(kind);
        EXPECT_TRUE(classified.has_tag) << to_string(kind);
        EXPECT_EQ(classified.virtual_partition, 8);
    }
}

TEST(classify, malformed_tag_is_reported_not_trusted) {
    std::string three = "abc";
    std::vector<record_input> records(1);
    records[0].headers = {{"kpr.vp", bytes_of(three)}};
    built_batch built = build_record_batch(idempotent_fields(codec::none), records);
    batch_classification classified = classify_batch(built.bytes);
    EXPECT_FALSE(classified.has_tag);
    EXPECT_TRUE(classified.tag_malformed);
}

TEST(classify, corrupt_compressed_records_are_an_error) {
    record_texts texts;
    auto records = assorted_records(texts, 10);
    built_batch built = build_record_batch(idempotent_fields(codec::lz4), records);
    auto broken = built.bytes;
    for (size_t at = 61; at < broken.size(); ++at) broken[at] = std::byte(0xff);
    EXPECT_EQ(classify_batch(broken).error, batch_error::decompress_failed);
    EXPECT_EQ(classify_batch(std::span(built.bytes).first(30)).error, batch_error::truncated);
}

TEST(tag_rewrite, mutated_batches_never_crash) {
    record_texts texts;
    auto records = assorted_records(texts, 12);
    std::mt19937 generator(99);
    tag_rewrite_options lenient;
    lenient.verify_input_crc = false;
    lenient.records_bytes_max = 1 << 20;
    for (codec kind : {codec::none, codec::gzip, codec::snappy, codec::lz4, codec::zstd}) {
        built_batch built = build_record_batch(idempotent_fields(kind), records);
        for (int round = 0; round < 400; ++round) {
            auto mutated = built.bytes;
            for (int flips = 1 + int(generator() % 3); flips > 0; --flips)
                mutated[21 + generator() % (mutated.size() - 21)] = std::byte(generator() & 0xff);
            tag_rewrite_result result = rewrite_batch_tag(as_slice(mutated), 2, lenient);
            // A control batch passes unchanged, its (unverified) CRC included.
            if (result.ok() && !record_batch_view(mutated).is_control()) {
                EXPECT_EQ(validate_batch(flatten(result)), batch_error::none);
            }
            classify_batch(mutated, default_tag_key, 1 << 20);
        }
    }
}

}  // namespace
}  // namespace kpp::protocol
