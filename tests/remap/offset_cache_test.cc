#include "remap/offset_cache.h"

#include <gtest/gtest.h>

#include <string>

#include "protocol/record_batch.h"

namespace kpp {
namespace {

struct written {
    offset_key key;
    std::optional<offset_value> value;
};

// A batch at `base_offset` as a broker would return it from the store topic.
std::vector<std::byte> store_batch(int64_t base_offset, const std::vector<written>& records,
                                   protocol::codec compression = protocol::codec::none, bool control = false,
                                   int64_t transactional_producer = -1) {
    std::vector<std::vector<std::byte>> keys, values;
    std::vector<protocol::record_input> inputs;
    keys.reserve(records.size());
    values.reserve(records.size());
    for (size_t index = 0; index < records.size(); ++index) {
        keys.push_back(encode_offset_key(records[index].key));
        values.push_back(records[index].value ? encode_offset_value(*records[index].value) : std::vector<std::byte>{});
        protocol::record_input input;
        input.key = std::span<const std::byte>(keys.back());
        if (records[index].value) input.value = std::span<const std::byte>(values.back());
        input.offset_delta = int32_t(index);
        inputs.push_back(input);
    }
    protocol::batch_fields fields;
    fields.base_offset = base_offset;
    fields.compression = compression;
    fields.control = control;
    if (transactional_producer >= 0) {
        fields.transactional = true;
        fields.producer_id = transactional_producer;
        fields.producer_epoch = 0;
        fields.base_sequence = 0;
    }
    auto built = protocol::build_record_batch(fields, inputs);
    EXPECT_TRUE(built.ok());
    return built.bytes;
}

void append(std::vector<std::byte>& field, const std::vector<std::byte>& batch) {
    field.insert(field.end(), batch.begin(), batch.end());
}

offset_value at(int64_t offset, std::string metadata = "") { return {offset, 3, metadata, 1795000000000}; }

TEST(offset_cache, newest_store_record_wins_in_any_order) {
    offset_cache cache;
    offset_key key{"g", "orders", 57};
    cache.apply(key, at(100), 10);
    cache.apply(key, at(50), 4);  // read back later, written earlier
    ASSERT_NE(cache.find("g", "orders", 57), nullptr);
    EXPECT_EQ(cache.find("g", "orders", 57)->offset, 100);
    cache.apply(key, at(120), 11);
    EXPECT_EQ(cache.find("g", "orders", 57)->offset, 120);
    EXPECT_EQ(cache.find("g", "orders", 56), nullptr);
    EXPECT_EQ(cache.find("other", "orders", 57), nullptr);
}

TEST(offset_cache, tombstone_deletes_and_stays_deleted_against_older_records) {
    offset_cache cache;
    offset_key key{"g", "orders", 3};
    cache.apply(key, at(7), 1);
    cache.apply(key, std::nullopt, 5);
    EXPECT_EQ(cache.find("g", "orders", 3), nullptr);
    cache.apply(key, at(7), 1);  // a re-read of the old record must not resurrect it
    EXPECT_EQ(cache.find("g", "orders", 3), nullptr);
    cache.apply(key, at(9), 6);
    ASSERT_NE(cache.find("g", "orders", 3), nullptr);
    EXPECT_EQ(cache.find("g", "orders", 3)->offset, 9);
    EXPECT_EQ(cache.size(), 1u);
}

TEST(offset_cache, for_group_lists_live_entries_in_order) {
    offset_cache cache;
    cache.apply({"g", "b", 12}, at(1), 0);
    cache.apply({"g", "a", 40}, at(2), 1);
    cache.apply({"g", "a", 3}, at(3), 2);
    cache.apply({"g", "a", 5}, std::nullopt, 3);
    cache.apply({"h", "a", 1}, at(4), 4);
    std::vector<std::tuple<std::string, int32_t, int64_t>> seen;
    cache.for_group("g", [&](const std::string& topic, int32_t v, const offset_value& value) {
        seen.emplace_back(topic, v, value.offset);
    });
    std::vector<std::tuple<std::string, int32_t, int64_t>> expected{{"a", 3, 3}, {"a", 40, 2}, {"b", 12, 1}};
    EXPECT_EQ(seen, expected);
    cache.clear();
    EXPECT_EQ(cache.size(), 0u);
    EXPECT_EQ(cache.find("g", "a", 3), nullptr);
}

TEST(offset_cache, applies_store_records_of_every_codec_and_skips_control_batches) {
    for (auto compression : {protocol::codec::none, protocol::codec::gzip, protocol::codec::snappy,
                             protocol::codec::lz4, protocol::codec::zstd}) {
        offset_cache cache;
        auto field = store_batch(20, {{{"g", "t", 1}, at(5, "m")}, {{"g", "t", 2}, at(6)}}, compression);
        auto control = store_batch(22, {{{"g", "t", 1}, at(999)}}, protocol::codec::none, true);
        field.insert(field.end(), control.begin(), control.end());
        auto later = store_batch(23, {{{"g", "t", 1}, std::nullopt}, {{"g", "t", 3}, at(8)}});
        field.insert(field.end(), later.begin(), later.end());
        auto result = cache.apply_records(field, 20);
        ASSERT_TRUE(result.next_offset) << result.problem;
        EXPECT_EQ(*result.next_offset, 25);
        EXPECT_EQ(result.applied, 4u);
        EXPECT_EQ(cache.find("g", "t", 1), nullptr);
        ASSERT_NE(cache.find("g", "t", 2), nullptr);
        EXPECT_EQ(cache.find("g", "t", 2)->offset, 6);
        EXPECT_EQ(cache.find("g", "t", 3)->offset, 8);
    }
}

// TxnOffsetCommit records are written inside the client's transaction; a read_committed
// answer lists the aborted ones, whose records must not count, up to their abort marker.
TEST(offset_cache, batches_of_aborted_transactions_are_skipped_up_to_their_marker) {
    offset_cache cache;
    std::vector<std::byte> field;
    append(field, store_batch(10, {{{"g", "t", 1}, at(5)}}));                                    // plain commit
    append(field, store_batch(11, {{{"g", "t", 1}, at(50)}}, protocol::codec::none, false, 7));  // aborted txn of 7
    append(field, store_batch(12, {{{"g", "t", 2}, at(60)}}, protocol::codec::none, false, 8));  // committed txn of 8
    append(field, store_batch(13, {{{"g", "t", 3}, at(0)}}, protocol::codec::none, true, 7));    // 7's abort marker
    append(field, store_batch(14, {{{"g", "t", 3}, at(0)}}, protocol::codec::none, true, 8));    // 8's commit marker
    append(field, store_batch(15, {{{"g", "t", 1}, at(70)}}, protocol::codec::none, false, 7));  // 7's next txn
    std::vector<aborted_transaction> aborted{{7, 11}};
    auto result = cache.apply_records(field, 10, nullptr, aborted);
    ASSERT_TRUE(result.next_offset) << result.problem;
    EXPECT_EQ(*result.next_offset, 16);
    EXPECT_EQ(result.applied, 3u);
    ASSERT_NE(cache.find("g", "t", 1), nullptr);
    EXPECT_EQ(cache.find("g", "t", 1)->offset, 70);
    EXPECT_EQ(cache.find("g", "t", 2)->offset, 60);
    EXPECT_EQ(cache.find("g", "t", 3), nullptr);

    // Without the abort listed, 7's first transaction counts (read_uncommitted).
    offset_cache uncommitted;
    std::vector<std::byte> first(field.begin(), field.begin() + ptrdiff_t(store_batch(10, {{{"g", "t", 1}, at(5)}}).size()));
    append(first, store_batch(11, {{{"g", "t", 1}, at(50)}}, protocol::codec::none, false, 7));
    ASSERT_TRUE(uncommitted.apply_records(first, 10).next_offset);
    EXPECT_EQ(uncommitted.find("g", "t", 1)->offset, 50);
    offset_cache committed;
    ASSERT_TRUE(committed.apply_records(first, 10, nullptr, aborted).next_offset);
    EXPECT_EQ(committed.find("g", "t", 1)->offset, 5);
}

TEST(offset_cache, records_before_the_fetch_offset_and_cut_tails_are_not_applied) {
    offset_cache cache;
    auto field = store_batch(10, {{{"g", "t", 1}, at(1)}, {{"g", "t", 2}, at(2)}});
    auto tail = store_batch(12, {{{"g", "t", 3}, at(3)}});
    field.insert(field.end(), tail.begin(), tail.end() - 5);  // a broker cut the last batch short
    auto result = cache.apply_records(field, 11);
    ASSERT_TRUE(result.next_offset) << result.problem;
    EXPECT_EQ(*result.next_offset, 12);  // the cut batch is read again next time
    EXPECT_EQ(cache.find("g", "t", 1), nullptr);
    EXPECT_NE(cache.find("g", "t", 2), nullptr);
    EXPECT_EQ(cache.find("g", "t", 3), nullptr);
}

TEST(offset_cache, foreign_records_are_skipped_and_damage_is_reported) {
    offset_cache cache;
    protocol::record_input foreign;
    std::string text = "not a store key";
    foreign.key = std::as_bytes(std::span(text.data(), text.size()));
    auto built = protocol::build_record_batch({}, std::span(&foreign, 1));
    ASSERT_TRUE(built.ok());
    auto result = cache.apply_records(built.bytes, 0);
    ASSERT_TRUE(result.next_offset);
    EXPECT_EQ(result.skipped, 1u);
    EXPECT_EQ(cache.size(), 0u);

    auto damaged = store_batch(0, {{{"g", "t", 1}, at(1)}});
    damaged.back() ^= std::byte{0xff};  // breaks the CRC
    auto refused = cache.apply_records(damaged, 0);
    EXPECT_FALSE(refused.next_offset);
    EXPECT_FALSE(refused.problem.empty());
}

}  // namespace
}  // namespace kpp
