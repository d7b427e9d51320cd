// Record batches captured from real clients (tools/capture_batches.py): librdkafka 2.0.2
// (confluent-kafka), kafka-python 2.0.2, node-rdkafka (librdkafka 2.12) and kafkajs 2.2.4,
// each codec the client supports. Every fixture must parse, validate, take the tag and keep
// its records, and classify back to the tag.
//
// The fixture folder comes from the KPP_FIXTURES_DIR environment variable, else from the
// KPP_FIXTURES_DIR compile definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "protocol/crc32c.h"
#include "protocol/record_batch.h"
#include "protocol/tag_rewrite.h"
#include "protocol/wire.h"

namespace kpp::protocol {
namespace {

using header_list = std::vector<std::pair<std::string, std::optional<std::string>>>;

struct decoded_record {
    std::optional<std::string> key, value;
    header_list headers;
    int64_t timestamp_delta = 0;
    int32_t offset_delta = 0;
    bool operator==(const decoded_record&) const = default;
};

// What tools/capture_batches.py produces (RECORDS there), in order.
std::vector<decoded_record> expected_records() {
    std::string long_value = "v1-";
    for (int i = 0; i < 8; ++i) long_value += "abcdefgh";
    std::string digits = "v4-";
    for (int i = 0; i < 12; ++i) digits += "0123456789";
    return {
        {"k0", "v0-hello", {{"h1", "a"}, {"h2", "bb"}}},
        {"k1", long_value, {}},
        {"k2", std::nullopt, {{"h3", "c"}}},
        {std::nullopt, "v3-no-key", {}},
        {"k4", digits, {{"h4", ""}, {"h5", "five"}}},
    };
}

std::filesystem::path fixtures_dir() {
    if (const char* from_environment = std::getenv("KPP_FIXTURES_DIR")) return from_environment;
#ifdef KPP_FIXTURES_DIR
    return KPP_FIXTURES_DIR;
#else
    return "tests/protocol/fixtures";
#endif
}

std::vector<std::filesystem::path> fixture_files() {
    std::vector<std::filesystem::path> files;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(fixtures_dir(), error))
        if (entry.path().extension() == ".bin") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    return files;
}

std::vector<std::byte> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> bytes(chars.size());
    std::memcpy(bytes.data(), chars.data(), chars.size());
    return bytes;
}

std::optional<std::string> text_of(const std::optional<std::span<const std::byte>>& field) {
    if (!field) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(field->data()), field->size());
}

std::vector<decoded_record> decode_records(std::span<const std::byte> batch) {
    record_batch_view view(batch);
    codec_result section = decompress(view.compression(), view.records_section(), 1 << 20);
    EXPECT_TRUE(section.ok()) << to_string(section.error);
    std::vector<decoded_record> out;
    record_reader reader(section.bytes, view.records_count());
    record_view record;
    while (reader.next(record)) {
        decoded_record decoded{text_of(record.key), text_of(record.value), {}, record.timestamp_delta,
                               record.offset_delta};
        header_reader headers(record);
        record_header_view header;
        while (headers.next(header)) decoded.headers.emplace_back(std::string(header.key), text_of(header.value));
        out.push_back(std::move(decoded));
    }
    EXPECT_EQ(reader.error(), batch_error::none);
    return out;
}

std::vector<std::span<const std::byte>> batches_of(std::span<const std::byte> field) {
    std::vector<std::span<const std::byte>> batches;
    batch_iterator iterator(field);
    batch_entry entry;
    while (iterator.next(entry)) batches.push_back(entry.bytes);
    EXPECT_EQ(iterator.error(), batch_error::none);
    EXPECT_FALSE(iterator.partial());
    return batches;
}

codec codec_named(const std::string& file_stem) {
    static const std::map<std::string, codec> by_name = {
        {"none", codec::none}, {"gzip", codec::gzip}, {"snappy", codec::snappy}, {"lz4", codec::lz4}, {"zstd", codec::zstd}};
    auto found = by_name.find(file_stem.substr(file_stem.rfind('_') + 1));
    EXPECT_NE(found, by_name.end()) << file_stem;
    return found == by_name.end() ? codec::none : found->second;
}

std::string be32(int32_t value) {
    std::string out(4, '\0');
    store_int32_be(reinterpret_cast<std::byte*>(out.data()), value);
    return out;
}

TEST(record_fixtures, every_codec_is_covered) {
    auto files = fixture_files();
    ASSERT_FALSE(files.empty()) << "no fixtures in " << fixtures_dir();
    std::map<codec, int> per_codec;
    for (const auto& file : files) ++per_codec[codec_named(file.stem().string())];
    for (codec kind : {codec::none, codec::gzip, codec::snappy, codec::lz4, codec::zstd})
        EXPECT_GE(per_codec[kind], 2) << to_string(kind);
}

TEST(record_fixtures, parse_validate_and_hold_the_produced_records) {
    for (const auto& file : fixture_files()) {
        SCOPED_TRACE(file.filename().string());
        auto field = read_file(file);
        std::vector<decoded_record> records;
        for (auto batch : batches_of(field)) {
            ASSERT_EQ(validate_batch(batch), batch_error::none);
            record_batch_view view(batch);
            EXPECT_EQ(view.compression(), codec_named(file.stem().string()));
            EXPECT_EQ(view.stored_crc(), crc32c_portable(batch.subspan(batch_layout::crc_covered_from)));
            auto decoded = decode_records(batch);
            ASSERT_EQ(decoded.size(), size_t(view.records_count()));
            ASSERT_FALSE(decoded.empty());
            EXPECT_EQ(decoded.back().offset_delta, view.last_offset_delta());
            records.insert(records.end(), decoded.begin(), decoded.end());
        }
        auto expected = expected_records();
        ASSERT_EQ(records.size(), expected.size());
        for (size_t index = 0; index < records.size(); ++index) {
            EXPECT_EQ(records[index].key, expected[index].key) << index;
            EXPECT_EQ(records[index].value, expected[index].value) << index;
            EXPECT_EQ(records[index].headers, expected[index].headers) << index;
        }
    }
}

TEST(record_fixtures, tag_rewrite_keeps_records_and_classify_reads_the_tag) {
    int32_t virtual_partition = 1000;
    for (const auto& file : fixture_files()) {
        SCOPED_TRACE(file.filename().string());
        auto field = read_file(file);
        for (auto batch : batches_of(field)) {
            ++virtual_partition;
            EXPECT_FALSE(classify_batch(batch).has_tag);
            shared_bytes owner = shared_bytes::copy_of(batch);
            tag_rewrite_result result = rewrite_batch_tag(byte_slice{owner, 0, uint32_t(batch.size())}, virtual_partition);
            ASSERT_TRUE(result.ok()) << to_string(result.error);
            std::vector<std::byte> output;
            for (const byte_slice& piece : result.pieces) output.insert(output.end(), piece.span().begin(), piece.span().end());
            ASSERT_EQ(output.size(), result.size_bytes);
            ASSERT_EQ(validate_batch(output), batch_error::none);
            EXPECT_EQ(uint32_t(load_int32_be(output.data() + batch_layout::crc_at)),
                      crc32c_portable(std::span(output).subspan(batch_layout::crc_covered_from)));
            record_batch_view before(batch), after(output);
            EXPECT_EQ(after.compression(), before.compression());
            EXPECT_EQ(after.records_count(), before.records_count());
            EXPECT_EQ(after.last_offset_delta(), before.last_offset_delta());
            EXPECT_EQ(after.producer_id(), before.producer_id());
            EXPECT_EQ(after.base_sequence(), before.base_sequence());
            EXPECT_EQ(after.max_timestamp(), before.max_timestamp());

            auto original = decode_records(batch);
            auto tagged = decode_records(output);
            ASSERT_EQ(tagged.size(), original.size());
            for (size_t index = 0; index < original.size(); ++index) {
                decoded_record expected = original[index];
                expected.headers.emplace_back("kpr.vp", be32(virtual_partition));
                EXPECT_EQ(tagged[index], expected) << "record " << index;
            }
            batch_classification classified = classify_batch(output);
            EXPECT_EQ(classified.error, batch_error::none);
            EXPECT_TRUE(classified.has_tag);
            EXPECT_EQ(classified.virtual_partition, virtual_partition);
            EXPECT_EQ(classified.records_count, before.records_count());
            EXPECT_EQ(classified.last_offset, before.last_offset());
        }
    }
}

}  // namespace
}  // namespace kpp::protocol
