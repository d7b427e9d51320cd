// Reload's pure parts: the topic layout records of the offset store, the guard that refuses
// lowering V, changing P or unmapping, and the diff that sorts keys into live, restart-only
// and refused.
#include "proxy/reload.h"

#include <gtest/gtest.h>

#include "protocol/record_batch.h"
#include "proxy/layout_guard.h"
#include "remap/offset_cache.h"
#include "remap/topic_layouts.h"

namespace kpp {
namespace {

TEST(TopicLayoutRecords, RoundTripAndRefuseOtherFormats) {
    auto key = encode_layout_key("orders");
    EXPECT_TRUE(is_layout_key(key));
    EXPECT_EQ(decode_layout_key(key), "orders");
    topic_layout layout{200, 10, 1234};
    EXPECT_EQ(decode_layout_value(encode_layout_value(layout)), layout);
    // An offset record's key (format 0) is not a layout key, nor a truncated one.
    EXPECT_FALSE(is_layout_key(encode_offset_key({"group", "orders", 3})));
    key.pop_back();
    EXPECT_FALSE(decode_layout_key(key).has_value());
    // A layout that is no remapping (V <= P) is not one the store writes.
    EXPECT_FALSE(decode_layout_value(encode_layout_value({10, 10, 0})).has_value());
    auto value = encode_layout_value(layout);
    value.push_back(std::byte{0});
    EXPECT_FALSE(decode_layout_value(value).has_value());
}

TEST(TopicLayoutRecords, TheStoreReaderCollectsThemBesideCommittedOffsets) {
    std::vector<std::vector<std::byte>> keys{encode_layout_key("a"), encode_offset_key({"g", "a", 1}),
                                             encode_layout_key("b"), encode_layout_key("a")};
    std::vector<std::vector<std::byte>> values{encode_layout_value({100, 10, 1}),
                                               encode_offset_value({42, -1, std::nullopt, 5}),
                                               encode_layout_value({30, 3, 2}), encode_layout_value({200, 10, 3})};
    std::vector<protocol::record_input> inputs;
    for (size_t index = 0; index < keys.size(); ++index) {
        protocol::record_input input;
        input.key = std::span<const std::byte>(keys[index]);
        input.value = std::span<const std::byte>(values[index]);
        input.offset_delta = int32_t(index);
        inputs.push_back(input);
    }
    // And a tombstone for b.
    auto tombstone_key = encode_layout_key("b");
    protocol::record_input tombstone;
    tombstone.key = std::span<const std::byte>(tombstone_key);
    tombstone.offset_delta = 4;
    inputs.push_back(tombstone);
    protocol::built_batch batch = protocol::build_record_batch({}, inputs);
    ASSERT_TRUE(batch.ok());

    offset_cache cache;
    topic_layouts layouts;
    auto read = cache.apply_records(batch.bytes, 0, nullptr, {}, &layouts);
    ASSERT_TRUE(read.next_offset.has_value());
    EXPECT_EQ(*read.next_offset, 5);
    EXPECT_EQ(read.skipped, 0u);
    ASSERT_EQ(layouts.size(), 1u);
    EXPECT_EQ(layouts.at("a"), (topic_layout{200, 10, 3}));  // the later record wins
    ASSERT_NE(cache.find("g", "a", 1), nullptr);
    EXPECT_EQ(cache.find("g", "a", 1)->offset, 42);

    // The cores read the same partition without a sink: layout records are neither applied
    // nor reported as foreign.
    offset_cache core;
    auto plain = core.apply_records(batch.bytes, 0);
    EXPECT_EQ(plain.skipped, 0u);
    EXPECT_EQ(plain.applied, 1u);
}

TEST(LayoutChangeRefusal, OnlyRaisingVIsSafe) {
    topic_layout before{100, 10, 0};
    EXPECT_EQ(layout_change_refusal("t", before, {100, 10, 0}, "mapping"), "");
    EXPECT_EQ(layout_change_refusal("t", before, {200, 10, 0}, "mapping"), "");
    std::string lower = layout_change_refusal("t", before, {50, 10, 0}, "mapping.topics.t");
    EXPECT_NE(lower.find("mapping.topics.t: topic 't'"), std::string::npos) << lower;
    EXPECT_NE(lower.find("cannot lower V to 50"), std::string::npos) << lower;
    EXPECT_NE(lower.find("50..99"), std::string::npos) << lower;
    EXPECT_NE(layout_change_refusal("t", before, {200, 20, 0}, "m").find("cannot change P to 20"), std::string::npos);
    EXPECT_NE(layout_change_refusal("t", before, {0, 0, 0}, "m").find("no longer be remapped"), std::string::npos);
    EXPECT_NE(layout_change_refusal("t", before, {10, 10, 0}, "m").find("no longer be remapped"), std::string::npos);
}

mapping_settings rule(const std::string& pattern, bool regex, int32_t v, int32_t p) {
    mapping_settings settings;
    settings.topics.push_back({pattern, regex, v, p});
    return settings;
}

TEST(TopicLayoutGuard, ChecksTheStoreAndTheRunningMappingForTopicsTheClusterHas) {
    layout_snapshot snapshot;
    snapshot.cluster_topics = {{"orders", 10}, {"clicks", 10}, {"plain", 3}, {"__kpr_offsets", 16}};
    snapshot.recorded = {{"orders", {100, 10, 1}}, {"gone", {500, 10, 1}}};

    // Same layout: nothing to refuse; clicks (new to the store) is recorded, orders is not again.
    mapping_settings next = rule(".*", true, 100, 10);
    layout_check check = check_topic_layouts(next, nullptr, snapshot, 7);
    EXPECT_TRUE(check.refusals.empty());
    // plain has 3 partitions but the rule says P = 10: still served remapped, recorded as such.
    EXPECT_EQ(check.to_record.count("orders"), 0u);
    EXPECT_EQ(check.to_record.at("clicks"), (topic_layout{100, 10, 7}));
    EXPECT_EQ(check.to_record.count("__kpr_offsets"), 0u);  // internal topics are never mapped
    EXPECT_EQ(check.to_record.count("gone"), 0u);           // not in the cluster: neither checked nor recorded
    ASSERT_EQ(check.topics.size(), 3u);
    EXPECT_EQ(check.topics[1].topic, "orders");
    EXPECT_EQ(check.topics[1].rule, "mapping.topics..*");
    EXPECT_EQ(check.topics[1].recorded, (topic_layout{100, 10, 1}));

    // Lower V than the store recorded: refused, naming the topic; the deleted topic's
    // record (V 500) does not matter.
    check = check_topic_layouts(rule(".*", true, 50, 10), nullptr, snapshot, 7);
    ASSERT_EQ(check.refusals.size(), 1u);
    EXPECT_NE(check.refusals[0].find("topic 'orders'"), std::string::npos) << check.refusals[0];

    // The running mapping counts even when the store has nothing (clicks at 100 now).
    mapping_settings running = rule(".*", true, 100, 10);
    check = check_topic_layouts(rule("orders", false, 100, 10), &running, snapshot, 7);
    EXPECT_EQ(check.refusals.size(), 2u);  // clicks and plain would be unmapped
    check = check_topic_layouts(rule(".*", true, 120, 10), &running, snapshot, 7);
    EXPECT_TRUE(check.refusals.empty());
    EXPECT_EQ(check.to_record.size(), 3u);  // orders, clicks and plain at V = 120
}

TEST(ConfigDiff, SortsKeysIntoLiveRestartAndRefused) {
    proxy_config running;
    running.mapping = rule("orders", false, 100, 10);
    proxy_config next = running;
    config_diff diff = diff_configs(running, next);
    EXPECT_TRUE(diff.live.empty() && diff.restart.empty() && diff.refused.empty());
    EXPECT_FALSE(diff.mapping);

    next.mapping.topics[0].virtual_partitions = 200;
    next.mapping.topics.push_back({"clicks", false, 30, 3});
    next.logging.level = "debug";
    next.listen.max_connections = 5;
    next.threads = 4;
    next.listen.address.port = 19092;
    diff = diff_configs(running, next);
    EXPECT_TRUE(diff.mapping && diff.logging_level && diff.max_connections);
    EXPECT_EQ(diff.live, (std::vector<std::string>{"listen.max_connections", "mapping", "logging.level"}));
    EXPECT_EQ(diff.restart, (std::vector<std::string>{"threads", "listen.address"}));
    EXPECT_TRUE(diff.refused.empty());

    next = running;
    next.mapping.tag_header = "other";
    next.listen.security.protocol = "SSL";
    diff = diff_configs(running, next);
    EXPECT_EQ(diff.refused, (std::vector<std::string>{"listen.security.protocol", "mapping.tag_header"}));
}

}  // namespace
}  // namespace kpp
