#include "protocol/codecs.h"

#include <gtest/gtest.h>
#include <snappy.h>
#include <zlib.h>

#include <cstring>
#include <random>
#include <string>

namespace kpp::protocol {
namespace {

constexpr codec compressed_codecs[] = {codec::gzip, codec::snappy, codec::lz4, codec::zstd};
constexpr codec all_codecs[] = {codec::none, codec::gzip, codec::snappy, codec::lz4, codec::zstd};

// Compressible but not trivial: text-like records with a random component.
std::vector<std::byte> sample_bytes(size_t size, uint32_t seed = 1) {
    std::mt19937 generator(seed);
    std::vector<std::byte> bytes(size);
    const char* words[] = {"key-", "value ", "kafka ", "partition ", "0123456789", "{\"id\":"};
    size_t at = 0;
    while (at < size) {
        const char* word = words[generator() % 6];
        for (size_t i = 0; word[i] && at < size; ++i) bytes[at++] = std::byte(word[i]);
        if (at < size) bytes[at++] = std::byte(generator() & 0xff);
    }
    return bytes;
}

std::string name_of(codec kind) { return to_string(kind); }

TEST(codecs, round_trip_each_codec_and_size) {
    for (codec kind : all_codecs)
        for (size_t size : {0u, 1u, 7u, 100u, 4096u, 32768u, 32769u, 100000u, 300000u}) {
            auto input = sample_bytes(size, uint32_t(size));
            codec_result packed = compress(kind, input);
            ASSERT_TRUE(packed.ok()) << name_of(kind) << " " << size;
            codec_result unpacked = decompress(kind, packed.bytes, size);
            ASSERT_TRUE(unpacked.ok()) << name_of(kind) << " " << size << ": " << to_string(unpacked.error);
            EXPECT_TRUE(unpacked.complete);
            EXPECT_EQ(unpacked.bytes, input) << name_of(kind) << " " << size;
        }
}

TEST(codecs, empty_input_round_trips) {
    for (codec kind : all_codecs) {
        codec_result packed = compress(kind, {});
        ASSERT_TRUE(packed.ok());
        codec_result unpacked = decompress(kind, packed.bytes, 0);
        ASSERT_TRUE(unpacked.ok()) << name_of(kind) << ": " << to_string(unpacked.error);
        EXPECT_TRUE(unpacked.bytes.empty());
    }
}

TEST(codecs, output_over_the_limit_is_refused) {
    // 1 MiB of zeros compresses to a few hundred bytes: a small decompression bomb.
    std::vector<std::byte> zeros(1 << 20);
    for (codec kind : all_codecs) {
        codec_result packed = compress(kind, zeros);
        ASSERT_TRUE(packed.ok());
        EXPECT_EQ(decompress(kind, packed.bytes, zeros.size() - 1).error, codec_error::output_too_large)
            << name_of(kind);
        EXPECT_EQ(decompress(kind, packed.bytes, 4096).error, codec_error::output_too_large) << name_of(kind);
        codec_result exact = decompress(kind, packed.bytes, zeros.size());
        ASSERT_TRUE(exact.ok()) << name_of(kind);
        EXPECT_EQ(exact.bytes.size(), zeros.size());
    }
}

TEST(codecs, truncated_input_is_an_error) {
    auto input = sample_bytes(50000);
    for (codec kind : compressed_codecs) {
        codec_result packed = compress(kind, input);
        ASSERT_TRUE(packed.ok());
        for (size_t keep : {size_t(0), size_t(3), packed.bytes.size() / 2, packed.bytes.size() - 1}) {
            std::span<const std::byte> cut(packed.bytes.data(), keep);
            codec_result result = decompress(kind, cut, 1 << 20);
            EXPECT_FALSE(result.ok()) << name_of(kind) << " kept " << keep;
        }
    }
}

TEST(codecs, garbage_is_an_error_not_a_crash) {
    std::mt19937 generator(5);
    for (codec kind : compressed_codecs)
        for (int round = 0; round < 200; ++round) {
            std::vector<std::byte> garbage(generator() % 300);
            for (auto& byte : garbage) byte = std::byte(generator() & 0xff);
            codec_result result = decompress(kind, garbage, 1 << 16);
            if (result.ok()) {
                EXPECT_LE(result.bytes.size(), size_t(1) << 16);
            }
        }
}

TEST(codecs, corrupted_body_is_an_error) {
    auto input = sample_bytes(20000);
    for (codec kind : {codec::gzip, codec::zstd}) {  // these two carry a content checksum
        codec_result packed = compress(kind, input);
        packed.bytes[packed.bytes.size() / 2] ^= std::byte(0x5a);
        codec_result result = decompress(kind, packed.bytes, 1 << 20);
        EXPECT_TRUE(!result.ok() || result.bytes != input) << name_of(kind);
    }
}

TEST(codecs, unknown_codec_is_refused) {
    auto input = sample_bytes(10);
    EXPECT_EQ(decompress(codec(5), input, 100).error, codec_error::unknown_codec);
    EXPECT_EQ(compress(codec(7), input).error, codec_error::unknown_codec);
}

TEST(codecs, snappy_xerial_framing_as_java_writes_it) {
    auto input = sample_bytes(70000);
    codec_result packed = compress(codec::snappy, input);
    ASSERT_TRUE(packed.ok());
    const uint8_t header[16] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1};
    ASSERT_GE(packed.bytes.size(), 16u);
    EXPECT_EQ(std::memcmp(packed.bytes.data(), header, 16), 0);
    // Chunks of at most 32 KiB of input each: 70000 bytes make 3.
    size_t at = 16, chunks = 0, decoded = 0;
    while (at < packed.bytes.size()) {
        uint32_t length = (uint32_t(packed.bytes[at]) << 24) | (uint32_t(packed.bytes[at + 1]) << 16) |
                          (uint32_t(packed.bytes[at + 2]) << 8) | uint32_t(packed.bytes[at + 3]);
        size_t block_bytes = 0;
        ASSERT_TRUE(snappy::GetUncompressedLength(reinterpret_cast<const char*>(packed.bytes.data() + at + 4),
                                                  length, &block_bytes));
        EXPECT_LE(block_bytes, 32768u);
        decoded += block_bytes;
        at += 4 + length;
        ++chunks;
    }
    EXPECT_EQ(at, packed.bytes.size());
    EXPECT_EQ(chunks, 3u);
    EXPECT_EQ(decoded, input.size());
}

TEST(codecs, snappy_xerial_hand_built_decodes) {
    // Two chunks made independently with the snappy library, framed by hand.
    std::string first = "hello, ", second = "xerial snappy";
    std::string block1, block2;
    snappy::Compress(first.data(), first.size(), &block1);
    snappy::Compress(second.data(), second.size(), &block2);
    std::string framed("\x82SNAPPY\0\0\0\0\1\0\0\0\1", 16);
    for (const std::string* block : {&block1, &block2}) {
        uint32_t length = uint32_t(block->size());
        framed += char(length >> 24);
        framed += char(length >> 16);
        framed += char(length >> 8);
        framed += char(length);
        framed += *block;
    }
    codec_result result = decompress(codec::snappy, std::as_bytes(std::span(framed)), 1000);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(result.bytes.data()), result.bytes.size()),
              "hello, xerial snappy");
    // A header alone is an empty stream; a chunk length past the end is truncation.
    EXPECT_TRUE(decompress(codec::snappy, std::as_bytes(std::span(framed.data(), 16)), 10).ok());
    EXPECT_EQ(decompress(codec::snappy, std::as_bytes(std::span(framed.data(), framed.size() - 1)), 1000).error,
              codec_error::truncated);
}

TEST(codecs, snappy_raw_block_decodes) {
    auto input = sample_bytes(5000);
    codec_result raw = compress_snappy_raw(input);
    ASSERT_TRUE(raw.ok());
    codec_result result = decompress(codec::snappy, raw.bytes, input.size());
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result.bytes, input);
    EXPECT_EQ(decompress(codec::snappy, raw.bytes, input.size() - 1).error, codec_error::output_too_large);
}

TEST(codecs, gzip_output_has_the_gzip_wrapper_and_zlib_reads_it) {
    auto input = sample_bytes(3000);
    codec_result packed = compress(codec::gzip, input);
    ASSERT_GE(packed.bytes.size(), 18u);
    EXPECT_EQ(packed.bytes[0], std::byte(0x1f));
    EXPECT_EQ(packed.bytes[1], std::byte(0x8b));
    std::vector<std::byte> output(input.size());
    z_stream stream{};
    ASSERT_EQ(inflateInit2(&stream, 15 + 16), Z_OK);
    stream.next_in = reinterpret_cast<Bytef*>(packed.bytes.data());
    stream.avail_in = uInt(packed.bytes.size());
    stream.next_out = reinterpret_cast<Bytef*>(output.data());
    stream.avail_out = uInt(output.size());
    EXPECT_EQ(inflate(&stream, Z_FINISH), Z_STREAM_END);
    inflateEnd(&stream);
    EXPECT_EQ(output, input);
}

TEST(codecs, gzip_concatenated_members_decode_as_one_stream) {
    auto first = sample_bytes(1000, 1), second = sample_bytes(2000, 2);
    auto packed = compress(codec::gzip, first).bytes;
    auto tail = compress(codec::gzip, second).bytes;
    packed.insert(packed.end(), tail.begin(), tail.end());
    codec_result result = decompress(codec::gzip, packed, 3000);
    ASSERT_TRUE(result.ok());
    first.insert(first.end(), second.begin(), second.end());
    EXPECT_EQ(result.bytes, first);
}

TEST(codecs, lz4_old_kafka_header_checksum_is_accepted) {
    auto input = sample_bytes(2000);
    codec_result packed = compress(codec::lz4, input);
    ASSERT_TRUE(packed.ok());
    // Frame header: magic(4) FLG BD HC; rebuild HC the way Kafka 0.8/0.9 did (over the
    // magic too), with an independent xxHash32 of those 6 bytes computed here by hand.
    ASSERT_EQ(uint8_t(packed.bytes[4]) & 0x09, 0);  // no content size, no dictionary id
    auto xxh32 = [](const uint8_t* p, size_t n) {
        const uint32_t p1 = 2654435761u, p2 = 2246822519u, p3 = 3266489917u, p4 = 668265263u, p5 = 374761393u;
        auto rotl = [](uint32_t v, int r) { return (v << r) | (v >> (32 - r)); };
        uint32_t h = p5 + uint32_t(n);
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            uint32_t w;
            std::memcpy(&w, p + i, 4);
            h = rotl(h + w * p3, 17) * p4;
        }
        for (; i < n; ++i) h = rotl(h + p[i] * p5, 11) * p1;
        h ^= h >> 15, h *= p2, h ^= h >> 13, h *= p3, h ^= h >> 16;
        return h;
    };
    const auto* bytes = reinterpret_cast<const uint8_t*>(packed.bytes.data());
    ASSERT_EQ(uint8_t(packed.bytes[6]), uint8_t(xxh32(bytes + 4, 2) >> 8));  // our own frames are correct
    packed.bytes[6] = std::byte(uint8_t(xxh32(bytes, 6) >> 8));
    codec_result result = decompress(codec::lz4, packed.bytes, input.size());
    ASSERT_TRUE(result.ok()) << to_string(result.error);
    EXPECT_EQ(result.bytes, input);
    packed.bytes[6] ^= std::byte(1);  // neither checksum: refused
    EXPECT_FALSE(decompress(codec::lz4, packed.bytes, input.size()).ok());
}

TEST(codecs, prefix_stops_early_for_streaming_codecs) {
    auto input = sample_bytes(200000);
    for (codec kind : all_codecs) {
        codec_result packed = compress(kind, input);
        codec_result prefix = decompress_prefix(kind, packed.bytes, 100);
        ASSERT_TRUE(prefix.ok()) << name_of(kind) << ": " << to_string(prefix.error);
        ASSERT_GE(prefix.bytes.size(), 100u) << name_of(kind);
        EXPECT_TRUE(std::equal(prefix.bytes.begin(), prefix.bytes.end(), input.begin())) << name_of(kind);
        if (kind == codec::snappy) {
            EXPECT_EQ(prefix.bytes.size(), 32768u);  // one whole xerial chunk
            EXPECT_FALSE(prefix.complete);
        } else if (kind != codec::none) {
            EXPECT_LT(prefix.bytes.size(), 70000u) << name_of(kind);
            EXPECT_FALSE(prefix.complete) << name_of(kind);
        }
    }
}

TEST(codecs, prefix_of_a_short_stream_is_the_whole_stream) {
    auto input = sample_bytes(50);
    for (codec kind : all_codecs) {
        codec_result prefix = decompress_prefix(kind, compress(kind, input).bytes, 1000);
        ASSERT_TRUE(prefix.ok()) << name_of(kind);
        EXPECT_TRUE(prefix.complete) << name_of(kind);
        EXPECT_EQ(prefix.bytes, input) << name_of(kind);
    }
}

TEST(codecs, prefix_can_grow) {
    auto input = sample_bytes(100000);
    for (codec kind : compressed_codecs) {
        auto packed = compress(kind, input).bytes;
        for (size_t wanted : {10u, 1000u, 40000u, 99999u}) {
            codec_result prefix = decompress_prefix(kind, packed, wanted);
            ASSERT_TRUE(prefix.ok()) << name_of(kind);
            ASSERT_GE(prefix.bytes.size(), wanted);
            EXPECT_TRUE(std::equal(prefix.bytes.begin(), prefix.bytes.end(), input.begin()));
        }
    }
}

TEST(codecs, prefix_respects_the_chunk_limit) {
    auto input = sample_bytes(30000);
    auto raw = compress_snappy_raw(input).bytes;
    EXPECT_EQ(decompress_prefix(codec::snappy, raw, 10, 20000).error, codec_error::output_too_large);
    EXPECT_TRUE(decompress_prefix(codec::snappy, raw, 10, 30000).ok());
}

}  // namespace
}  // namespace kpp::protocol
