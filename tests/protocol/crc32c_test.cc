#include "protocol/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string_view>
#include <vector>

namespace kpp::protocol {
namespace {

std::span<const std::byte> as_bytes(std::string_view text) { return std::as_bytes(std::span(text)); }

std::vector<std::byte> filled(size_t size, uint8_t value) { return std::vector<std::byte>(size, std::byte(value)); }

std::vector<std::byte> random_bytes(size_t size, uint32_t seed) {
    std::mt19937 generator(seed);
    std::vector<std::byte> bytes(size);
    for (auto& byte : bytes) byte = std::byte(generator() & 0xff);
    return bytes;
}

TEST(crc32c, check_value) {
    EXPECT_EQ(crc32c(as_bytes("123456789")), 0xE3069283u);
    EXPECT_EQ(crc32c_portable(as_bytes("123456789")), 0xE3069283u);
}

TEST(crc32c, empty_input_is_zero) {
    EXPECT_EQ(crc32c({}), 0u);
    EXPECT_EQ(crc32c_portable({}), 0u);
    EXPECT_EQ(crc32c_extend(0x12345678u, {}), 0x12345678u);
}

// RFC 3720 appendix B.4.
TEST(crc32c, iscsi_vectors) {
    std::vector<std::byte> ascending(32), descending(32);
    for (size_t i = 0; i < 32; ++i) {
        ascending[i] = std::byte(i);
        descending[i] = std::byte(31 - i);
    }
    for (auto* function : {&crc32c, &crc32c_portable}) {
        EXPECT_EQ(function(filled(32, 0x00)), 0x8A9136AAu);
        EXPECT_EQ(function(filled(32, 0xFF)), 0x62A8AB43u);
        EXPECT_EQ(function(ascending), 0x46DD794Eu);
        EXPECT_EQ(function(descending), 0x113FDB5Cu);
    }
}

TEST(crc32c, hardware_matches_portable_for_every_length_and_alignment) {
    if (!crc32c_hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
    auto buffer = random_bytes(1024 + 16, 7);
    for (size_t misalignment = 0; misalignment < 8; ++misalignment)
        for (size_t length = 0; length <= 1024; ++length) {
            std::span<const std::byte> piece(buffer.data() + misalignment, length);
            ASSERT_EQ(crc32c(piece), crc32c_portable(piece)) << "length " << length << " offset " << misalignment;
        }
}

TEST(crc32c, hardware_matches_portable_on_large_buffers) {
    if (!crc32c_hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
    for (size_t length : {12287u, 12288u, 12289u, 65536u, 100003u, 1u << 20}) {
        auto buffer = random_bytes(length + 3, uint32_t(length));
        std::span<const std::byte> piece(buffer.data() + 3, length);
        EXPECT_EQ(crc32c(piece), crc32c_portable(piece)) << "length " << length;
    }
}

TEST(crc32c, extend_over_pieces_equals_whole) {
    auto buffer = random_bytes(5000, 11);
    std::span<const std::byte> whole(buffer);
    uint32_t expected = crc32c_portable(whole);
    for (size_t split : {0u, 1u, 7u, 8u, 100u, 777u, 4096u, 4999u, 5000u}) {
        EXPECT_EQ(crc32c_extend(crc32c(whole.first(split)), whole.subspan(split)), expected) << split;
        EXPECT_EQ(crc32c_portable_extend(crc32c_portable(whole.first(split)), whole.subspan(split)), expected);
    }
    // Many small pieces, as a batch split over iovecs.
    uint32_t crc = 0;
    for (size_t at = 0; at < whole.size(); at += 13) crc = crc32c_extend(crc, whole.subspan(at, std::min<size_t>(13, whole.size() - at)));
    EXPECT_EQ(crc, expected);
}

TEST(crc32c, detects_a_flipped_bit) {
    auto buffer = random_bytes(256, 3);
    uint32_t before = crc32c(buffer);
    buffer[100] ^= std::byte(0x10);
    EXPECT_NE(crc32c(buffer), before);
}

}  // namespace
}  // namespace kpp::protocol
