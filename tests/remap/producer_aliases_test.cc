#include "remap/producer_aliases.h"

#include <gtest/gtest.h>

#include "protocol/record_batch.h"
#include "remap/offset_cache.h"

namespace kpp {
namespace {

alias_record_value value_of(int64_t producer_id, int64_t created_ms = 1000, int64_t used_ms = 1000) {
    return alias_record_value{{producer_id, 0}, created_ms, used_ms};
}

TEST(producer_aliases, records_round_trip_and_are_told_from_offset_keys) {
    alias_record_key key{{4242, 3, 7}, "host-a:17:0badf00d/1"};
    auto encoded = encode_alias_key(key);
    EXPECT_TRUE(is_alias_key(encoded));
    EXPECT_EQ(decode_alias_key(encoded), key);
    alias_record_key resolved{{4242, 3, 7}, ""};
    EXPECT_EQ(decode_alias_key(encode_alias_key(resolved)), resolved);
    alias_record_value value{{99000, 2}, 1795000000000, 1795000001000};
    EXPECT_EQ(decode_alias_value(encode_alias_value(value)), value);
    // The offset store's own keys start with format 0: never taken for alias keys.
    EXPECT_FALSE(is_alias_key(encode_offset_key({"group", "topic", 1})));
    EXPECT_EQ(decode_alias_key(encode_offset_key({"group", "topic", 1})), std::nullopt);
}

TEST(producer_aliases, damaged_or_foreign_bytes_are_refused) {
    auto key = encode_alias_key({{1, 0, 1}, "w"});
    auto truncated = key;
    truncated.pop_back();
    EXPECT_EQ(decode_alias_key(truncated), std::nullopt);
    auto trailing = key;
    trailing.push_back(std::byte{0});
    EXPECT_EQ(decode_alias_key(trailing), std::nullopt);
    EXPECT_EQ(decode_alias_key(encode_alias_key({{-1, 0, 1}, "w"})), std::nullopt);
    EXPECT_EQ(decode_alias_key(encode_alias_key({{1, 0, -2}, "w"})), std::nullopt);
    EXPECT_EQ(decode_alias_key(encode_alias_key({{1, 0, 1}, std::string(alias_writer_bytes_max + 1, 'x')})),
              std::nullopt);
    auto value = encode_alias_value(value_of(5));
    value.pop_back();
    EXPECT_EQ(decode_alias_value(value), std::nullopt);
    EXPECT_EQ(decode_alias_value(encode_alias_value(value_of(-1))), std::nullopt);
    EXPECT_EQ(decode_alias_value({}), std::nullopt);
}

TEST(producer_aliases, store_partition_is_the_same_for_every_epoch_and_group) {
    int32_t partition = alias_store_partition(123456789, 16);
    EXPECT_GE(partition, 0);
    EXPECT_LT(partition, 16);
    EXPECT_EQ(alias_store_partition(123456789, 16), partition);
    EXPECT_EQ(alias_store_partition(5, 1), 0);
}

TEST(producer_aliases, the_earliest_candidate_wins_whatever_order_records_arrive_in) {
    alias_key key{10, 0, 1};
    alias_index seen_in_order;
    seen_in_order.apply({key, "instance-a/0"}, value_of(500), 40);
    seen_in_order.apply({key, "instance-b/0"}, value_of(300), 41);
    alias_index seen_reversed;  // an acknowledged write applied before an earlier record is read
    seen_reversed.apply({key, "instance-b/0"}, value_of(300), 41);
    seen_reversed.apply({key, "instance-a/0"}, value_of(500), 40);
    ASSERT_TRUE(seen_in_order.resolve(key));
    EXPECT_EQ(seen_in_order.resolve(key)->alias.producer_id, 500);
    EXPECT_EQ(seen_reversed.resolve(key)->alias.producer_id, 500);
    EXPECT_EQ(seen_in_order.resolve({10, 0, 2}), std::nullopt);
    EXPECT_EQ(seen_in_order.resolve({10, 1, 1}), std::nullopt);
}

TEST(producer_aliases, a_resolved_record_wins_and_may_be_rewritten) {
    alias_key key{10, 0, 1};
    alias_index index;
    index.apply({key, "b"}, value_of(300), 5);
    index.apply({key, ""}, value_of(700, 1000, 2000), 9);  // another instance resolved it earlier
    EXPECT_EQ(index.resolve(key)->alias.producer_id, 700);
    index.apply({key, ""}, value_of(700, 1000, 9000), 20);  // a touch
    index.apply({key, ""}, value_of(700, 1000, 2000), 9);   // read back late: older, ignored
    EXPECT_EQ(index.resolve(key)->used_ms, 9000);
    EXPECT_EQ(index.size(), 2u);
}

TEST(producer_aliases, tombstones_forget_every_record_of_an_alias) {
    alias_key key{10, 0, 1};
    alias_index index;
    index.apply({key, "a"}, value_of(500), 1);
    index.apply({key, "b"}, value_of(600), 2);
    index.apply({key, ""}, value_of(500), 3);
    auto records = index.records_of(key);
    EXPECT_EQ(records.size(), 3u);
    int64_t offset = 10;
    for (const auto& record : records) index.apply(record, std::nullopt, offset++);
    EXPECT_EQ(index.resolve(key), std::nullopt);
    EXPECT_TRUE(index.records_of(key).empty());
    // A tombstone read back before the record it deletes still wins.
    alias_index late;
    late.apply({key, "a"}, std::nullopt, 10);
    late.apply({key, "a"}, value_of(500), 1);
    EXPECT_EQ(late.resolve(key), std::nullopt);
}

TEST(producer_aliases, expiry_finds_old_epochs_and_idle_aliases) {
    alias_index index;
    index.apply({{10, 0, 1}, ""}, value_of(500, 1000, 50000), 1);   // epoch 0, used lately
    index.apply({{10, 1, 1}, "a"}, value_of(501, 60000, 60000), 2); // epoch 1 of the same producer
    index.apply({{11, 0, 2}, "a"}, value_of(600, 1000, 1000), 3);   // idle since 1000
    index.apply({{12, 0, 3}, ""}, value_of(700, 1000, 90000), 4);   // in use
    auto expired = index.expired(40000);
    ASSERT_EQ(expired.size(), 2u);
    EXPECT_EQ(expired[0].key, (alias_key{10, 0, 1}));
    EXPECT_TRUE(expired[0].superseded);
    EXPECT_EQ(expired[1].key, (alias_key{11, 0, 2}));
    EXPECT_FALSE(expired[1].superseded);
}

TEST(producer_aliases, offset_cache_routes_alias_records_to_the_index) {
    // One store batch holding an offset commit, an alias candidate and a damaged alias record.
    auto offset_key_bytes = encode_offset_key({"g", "t", 3});
    auto offset_value_bytes = encode_offset_value({42, -1, std::nullopt, 0});
    auto alias_key_bytes = encode_alias_key({{10, 0, 1}, "a"});
    auto alias_value_bytes = encode_alias_value(value_of(500));
    auto damaged_value = alias_value_bytes;
    damaged_value.pop_back();
    std::vector<protocol::record_input> records(3);
    records[0].key = std::span<const std::byte>(offset_key_bytes);
    records[0].value = std::span<const std::byte>(offset_value_bytes);
    records[1].key = std::span<const std::byte>(alias_key_bytes);
    records[1].value = std::span<const std::byte>(alias_value_bytes);
    records[1].offset_delta = 1;
    records[2].key = std::span<const std::byte>(alias_key_bytes);
    records[2].value = std::span<const std::byte>(damaged_value);
    records[2].offset_delta = 2;
    protocol::batch_fields fields;
    fields.base_offset = 100;
    auto batch = protocol::build_record_batch(fields, records);
    ASSERT_TRUE(batch.ok());
    offset_cache cache;
    alias_index aliases;
    auto read = cache.apply_records(batch.bytes, 100, &aliases);
    ASSERT_TRUE(read.next_offset);
    EXPECT_EQ(*read.next_offset, 103);
    EXPECT_EQ(read.applied, 2u);
    EXPECT_EQ(read.skipped, 1u);
    ASSERT_NE(cache.find("g", "t", 3), nullptr);
    EXPECT_EQ(cache.find("g", "t", 3)->offset, 42);
    ASSERT_TRUE(aliases.resolve({10, 0, 1}));
    EXPECT_EQ(aliases.resolve({10, 0, 1})->alias.producer_id, 500);
}

}  // namespace
}  // namespace kpp
