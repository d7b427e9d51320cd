#include "remap/offset_records.h"

#include <gtest/gtest.h>

#include <string>

namespace kpp {
namespace {

std::span<const std::byte> bytes_of(std::string_view text) { return std::as_bytes(std::span(text.data(), text.size())); }

TEST(offset_records, keys_and_values_round_trip) {
    offset_key key{"billing-consumers", "orders", 57};
    auto encoded = encode_offset_key(key);
    EXPECT_EQ(encoded.size(), 2u + 2 + 17 + 2 + 6 + 4);
    EXPECT_EQ(decode_offset_key(encoded), key);
    for (std::optional<std::string> metadata : {std::optional<std::string>{}, std::optional<std::string>{""},
                                                std::optional<std::string>{"client-meta"}}) {
        offset_value value{123456789012, 7, metadata, 1795000000000};
        EXPECT_EQ(decode_offset_value(encode_offset_value(value)), value);
    }
}

TEST(offset_records, foreign_or_damaged_bytes_are_refused) {
    auto key = encode_offset_key({"g", "t", 1});
    auto truncated = key;
    truncated.pop_back();
    EXPECT_EQ(decode_offset_key(truncated), std::nullopt);
    auto trailing = key;
    trailing.push_back(std::byte{0});
    EXPECT_EQ(decode_offset_key(trailing), std::nullopt);
    auto other_format = key;
    other_format[1] = std::byte{1};
    EXPECT_EQ(decode_offset_key(other_format), std::nullopt);
    EXPECT_EQ(decode_offset_value({}), std::nullopt);
    auto value = encode_offset_value({5, -1, std::nullopt, 0});
    value.resize(value.size() - 3);
    EXPECT_EQ(decode_offset_value(value), std::nullopt);
}

// Kafka's murmur2 (the default partitioner's hash): known outputs, as signed Java ints. A
// change in the store's partitioning would orphan stored offsets.
TEST(offset_records, group_partition_is_stable_and_in_range) {
    for (int32_t partitions : {1, 4, 16, 50}) {
        for (std::string_view group : {"", "a", "ab", "abc", "abcd", "group-with-a-longer-name"}) {
            int32_t partition = offset_store_partition(group, partitions);
            EXPECT_GE(partition, 0);
            EXPECT_LT(partition, partitions);
            EXPECT_EQ(partition, offset_store_partition(group, partitions));
        }
    }
    EXPECT_EQ(int32_t(murmur2(bytes_of("21"))), -973932308);
    EXPECT_EQ(int32_t(murmur2(bytes_of("foobar"))), -790332482);
    EXPECT_EQ(int32_t(murmur2(bytes_of("a-little-bit-long-string"))), -985981536);
    EXPECT_EQ(int32_t(murmur2(bytes_of("a-little-bit-longer-string"))), -1486304829);
    EXPECT_EQ(int32_t(murmur2(bytes_of("abc"))), 479470107);
}

TEST(offset_records, physical_commit_is_the_lowest_virtual_offset_on_p) {
    // V = 12 over P = 4: p = 1 holds v = 1, 5, 9.
    std::map<int32_t, int64_t> committed{{1, 500}, {5, 120}, {9, 900}, {2, 3}, {6, -1}};
    EXPECT_EQ(physical_commit_offset(committed, 1, 4), 120);
    EXPECT_EQ(physical_commit_offset(committed, 2, 4), 3);   // v = 6 has no position
    EXPECT_EQ(physical_commit_offset(committed, 3, 4), std::nullopt);
    EXPECT_EQ(physical_commit_offset(committed, 1, 0), std::nullopt);
}

}  // namespace
}  // namespace kpp
