#include "protocol/broker_endpoints.h"

#include <gtest/gtest.h>

#include <tuple>

#include <map>

#include <string>
#include <vector>

#include "protocol/wire.h"

namespace kpp::protocol {
namespace {

struct test_broker {
    int32_t node_id;
    std::string host;
    int32_t port;
};

const std::vector<test_broker> upstream_brokers{{1, "broker-one.internal", 9092}, {2, "b2", 9093}, {3, "b3", 9094}};

endpoint proxy_lookup(int32_t node_id) { return endpoint{"proxy.example", 30000 + node_id}; }

// Encodes a Metadata response (correlation id onward) with one topic after the brokers.
std::vector<std::byte> metadata_response(int16_t version, int32_t controller_id, std::vector<std::byte>& topics_out) {
    bool flexible = version >= 9;
    wire_writer writer;
    writer.write_int32(99);  // correlation id
    if (flexible) writer.write_empty_tagged_fields();
    if (version >= 3) writer.write_int32(0);
    writer.write_array_length(int32_t(upstream_brokers.size()), flexible);
    for (const auto& broker : upstream_brokers) {
        writer.write_int32(broker.node_id);
        writer.write_string(broker.host, flexible);
        writer.write_int32(broker.port);
        if (version >= 1) writer.write_string("rack-a", flexible);
        if (flexible) writer.write_empty_tagged_fields();
    }
    if (version >= 2) writer.write_string("cluster-x", flexible);
    if (version >= 1) writer.write_int32(controller_id);
    size_t topics_start = writer.size();
    // Topics: one topic with one partition; bytes here must come back unchanged.
    writer.write_array_length(1, flexible);
    writer.write_int16(0);
    writer.write_string("orders", flexible);
    if (version >= 10) writer.write_raw(std::vector<std::byte>(16, std::byte{7}));
    if (version >= 1) writer.write_int8(0);
    writer.write_array_length(1, flexible);
    writer.write_int16(0);
    writer.write_int32(0);
    writer.write_int32(2);
    if (version >= 7) writer.write_int32(5);
    writer.write_array_length(1, flexible);
    writer.write_int32(2);
    writer.write_array_length(1, flexible);
    writer.write_int32(2);
    if (version >= 5) writer.write_array_length(0, flexible);
    if (flexible) writer.write_empty_tagged_fields();
    if (version >= 8) writer.write_int32(0);
    if (flexible) writer.write_empty_tagged_fields();
    if (version >= 8 && version <= 10) writer.write_int32(0);
    if (flexible) writer.write_empty_tagged_fields();
    auto& bytes = writer.bytes();
    topics_out.assign(bytes.begin() + long(topics_start), bytes.end());
    return bytes;
}

struct decoded_metadata {
    std::vector<test_broker> brokers;
    int32_t controller_id = -1;
    std::vector<std::byte> rest;
};

decoded_metadata decode_metadata(const std::vector<std::byte>& message, int16_t version) {
    bool flexible = version >= 9;
    wire_reader reader(message);
    decoded_metadata out;
    reader.read_int32();
    if (flexible) reader.skip_tagged_fields();
    if (version >= 3) reader.read_int32();
    int32_t count = reader.read_array_length(flexible, false);
    for (int32_t i = 0; i < count; ++i) {
        test_broker broker;
        broker.node_id = reader.read_int32();
        broker.host = std::string(reader.read_string(flexible, false).value_or(""));
        broker.port = reader.read_int32();
        if (version >= 1) reader.read_string(flexible, true);
        if (flexible) reader.skip_tagged_fields();
        out.brokers.push_back(broker);
    }
    if (version >= 2) reader.read_string(flexible, true);
    if (version >= 1) out.controller_id = reader.read_int32();
    EXPECT_TRUE(reader.ok());
    out.rest.assign(message.begin() + long(reader.position()), message.end());
    return out;
}

class metadata_versions : public ::testing::TestWithParam<int16_t> {};

TEST_P(metadata_versions, brokers_point_at_the_proxy_and_the_rest_is_untouched) {
    int16_t version = GetParam();
    std::vector<std::byte> topics;
    auto original = metadata_response(version, 2, topics);
    auto result = rewrite_metadata_response(original, version, proxy_lookup);
    ASSERT_EQ(result.error, wire_error::none);
    ASSERT_EQ(result.upstream.size(), 3u);
    EXPECT_EQ(result.upstream[0].address.host, "broker-one.internal");
    auto decoded = decode_metadata(result.message, version);
    ASSERT_EQ(decoded.brokers.size(), 3u);
    for (const auto& broker : decoded.brokers) {
        EXPECT_EQ(broker.host, "proxy.example");
        EXPECT_EQ(broker.port, 30000 + broker.node_id);
    }
    if (version >= 1) {
        EXPECT_EQ(decoded.controller_id, 2);
    }
    EXPECT_EQ(decoded.rest, topics);
    EXPECT_EQ(load_int32_be(result.message.data()), 99);
}

TEST_P(metadata_versions, unknown_controller_is_replaced_by_a_listed_broker) {
    int16_t version = GetParam();
    if (version < 1) GTEST_SKIP() << "v0 has no controller id";
    std::vector<std::byte> topics;
    auto original = metadata_response(version, 0, topics);  // node 0 does not exist
    auto result = rewrite_metadata_response(original, version, proxy_lookup);
    ASSERT_EQ(result.error, wire_error::none);
    EXPECT_EQ(result.controller_id, 0);  // reported as the upstream said
    EXPECT_EQ(decode_metadata(result.message, version).controller_id, 1);
}

TEST_P(metadata_versions, every_truncation_is_an_error_value) {
    int16_t version = GetParam();
    std::vector<std::byte> topics;
    auto original = metadata_response(version, 2, topics);
    size_t brokers_end = original.size() - topics.size();
    for (size_t length = 0; length < brokers_end; ++length) {
        std::vector<std::byte> cut(original.begin(), original.begin() + long(length));
        auto result = rewrite_metadata_response(cut, version, proxy_lookup);
        EXPECT_NE(result.error, wire_error::none) << "length " << length;
        EXPECT_TRUE(result.message.empty());
    }
}

INSTANTIATE_TEST_SUITE_P(all, metadata_versions, ::testing::Range<int16_t>(0, 13));

std::vector<std::byte> find_coordinator_response(int16_t version, int32_t node_id) {
    bool flexible = version >= 3;
    wire_writer writer;
    writer.write_int32(7);
    if (flexible) writer.write_empty_tagged_fields();
    if (version >= 1) writer.write_int32(0);
    if (version <= 3) {
        writer.write_int16(0);
        if (version >= 1) writer.write_string(std::nullopt, flexible);
        writer.write_int32(node_id);
        writer.write_string("b2", flexible);
        writer.write_int32(9093);
    } else {
        writer.write_array_length(2, true);
        for (const char* key : {"group-a", "group-b"}) {
            writer.write_string(key, true);
            writer.write_int32(node_id);
            writer.write_string("b2", true);
            writer.write_int32(9093);
            writer.write_int16(0);
            writer.write_string(std::nullopt, true);
            writer.write_empty_tagged_fields();
        }
    }
    if (flexible) writer.write_empty_tagged_fields();
    return writer.bytes();
}

TEST(find_coordinator, every_version_names_the_proxy_port_of_the_coordinator) {
    for (int16_t version = 0; version <= 6; ++version) {
        auto result = rewrite_find_coordinator_response(find_coordinator_response(version, 2), version, proxy_lookup);
        ASSERT_EQ(result.error, wire_error::none) << "v" << version;
        auto again = rewrite_find_coordinator_response(result.message, version, proxy_lookup);
        ASSERT_EQ(again.error, wire_error::none);
        ASSERT_EQ(again.upstream.size(), version >= 4 ? 2u : 1u);
        for (const auto& coordinator : again.upstream) {
            EXPECT_EQ(coordinator.address.host, "proxy.example");
            EXPECT_EQ(coordinator.address.port, 30002);
        }
    }
}

TEST(find_coordinator, no_coordinator_answer_is_left_alone) {
    auto original = find_coordinator_response(1, -1);
    auto result = rewrite_find_coordinator_response(original, 1, proxy_lookup);
    ASSERT_EQ(result.error, wire_error::none);
    EXPECT_EQ(result.message, original);
}

std::vector<std::byte> describe_cluster_response(int16_t version, int32_t controller_id) {
    wire_writer writer;
    writer.write_int32(3);
    writer.write_empty_tagged_fields();
    writer.write_int32(0);
    writer.write_int16(0);
    writer.write_string(std::nullopt, true);
    if (version >= 1) writer.write_int8(1);
    writer.write_string("cluster-x", true);
    writer.write_int32(controller_id);
    writer.write_array_length(int32_t(upstream_brokers.size()), true);
    for (const auto& broker : upstream_brokers) {
        writer.write_int32(broker.node_id);
        writer.write_string(broker.host, true);
        writer.write_int32(broker.port);
        writer.write_string(std::nullopt, true);
        if (version >= 2) writer.write_int8(0);
        writer.write_empty_tagged_fields();
    }
    writer.write_int32(0);
    writer.write_empty_tagged_fields();
    return writer.bytes();
}

TEST(describe_cluster, brokers_and_unknown_controller_are_rewritten) {
    for (int16_t version = 0; version <= 2; ++version) {
        auto result = rewrite_describe_cluster_response(describe_cluster_response(version, 9), version, proxy_lookup);
        ASSERT_EQ(result.error, wire_error::none);
        EXPECT_EQ(result.controller_id, 9);
        auto again = rewrite_describe_cluster_response(result.message, version, proxy_lookup);
        ASSERT_EQ(again.error, wire_error::none);
        EXPECT_EQ(again.controller_id, 1);
        for (const auto& broker : again.upstream) {
            EXPECT_EQ(broker.address.host, "proxy.example");
            EXPECT_EQ(broker.address.port, 30000 + broker.node_id);
        }
    }
}

std::vector<std::byte> api_versions_response(int16_t version, int16_t error_code,
                                             const std::vector<std::array<int16_t, 3>>& entries) {
    bool flexible = version >= 3 && error_code == 0;
    wire_writer writer;
    writer.write_int32(1);
    writer.write_int16(error_code);
    writer.write_array_length(int32_t(entries.size()), flexible);
    for (const auto& entry : entries) {
        writer.write_int16(entry[0]);
        writer.write_int16(entry[1]);
        writer.write_int16(entry[2]);
        if (flexible) writer.write_empty_tagged_fields();
    }
    if (version >= 1) writer.write_int32(0);
    if (flexible) writer.write_empty_tagged_fields();
    return writer.bytes();
}

std::vector<std::array<int16_t, 3>> decode_api_versions(const std::vector<std::byte>& message, bool flexible) {
    wire_reader reader(message);
    reader.read_int32();
    reader.read_int16();
    int32_t count = reader.read_array_length(flexible, false);
    std::vector<std::array<int16_t, 3>> entries;
    for (int32_t i = 0; i < count; ++i) {
        std::array<int16_t, 3> entry{reader.read_int16(), reader.read_int16(), reader.read_int16()};
        if (flexible) reader.skip_tagged_fields();
        entries.push_back(entry);
    }
    EXPECT_TRUE(reader.ok());
    return entries;
}

TEST(api_versions, ranges_are_intersected_and_unknown_keys_kept) {
    for (int16_t version : {int16_t(0), int16_t(1), int16_t(2), int16_t(3)}) {
        auto original = api_versions_response(version, 0,
                                              {{0, 0, 11}, {3, 0, 13}, {17, 0, 1}, {18, 0, 4}, {1, 0, 17}, {1000, 2, 5}});
        auto result = rewrite_api_versions_response(original, version, nullptr);
        ASSERT_EQ(result.error, wire_error::none);
        auto entries = decode_api_versions(result.message, version >= 3);
        std::vector<std::array<int16_t, 3>> expected{
            {0, 0, 11},     // Produce: the broker's lowest version stays (clients derive features from it)
            {3, 0, 12},     // Metadata: the proxy rewrites up to v12
            {17, 1, 1},     // SaslHandshake v0 would switch to raw SASL frames
            {18, 0, 4},     // ApiVersions
            {1, 0, 16},     // Fetch: rebuilt for virtual partitions up to v16
            {1000, 2, 5}};  // an unknown key passes through
        EXPECT_EQ(entries, expected) << "v" << version;
    }
}

// The features of a v3+ answer: SupportedFeatures (tag 0), FinalizedFeaturesEpoch (tag 1),
// FinalizedFeatures (tag 2), each feature a name and two int16 levels.
using feature_list = std::vector<std::tuple<std::string, int16_t, int16_t>>;

std::vector<std::byte> features_field(const feature_list& features) {
    wire_writer field;
    field.write_array_length(int32_t(features.size()), true);
    for (const auto& [name, first, second] : features) {
        field.write_string(name, true);
        field.write_int16(first);
        field.write_int16(second);
        field.write_empty_tagged_fields();
    }
    return field.bytes();
}

std::map<uint32_t, std::vector<std::byte>> tags_of(const std::vector<std::byte>& message) {
    wire_reader reader(message);
    reader.read_int32();
    reader.read_int16();
    int32_t count = reader.read_array_length(true, false);
    for (int32_t i = 0; i < count; ++i) {
        reader.skip(6);
        reader.skip_tagged_fields();
    }
    reader.read_int32();
    std::map<uint32_t, std::vector<std::byte>> tags;
    uint32_t tag_count = reader.read_unsigned_varint();
    for (uint32_t i = 0; i < tag_count; ++i) {
        uint32_t tag = reader.read_unsigned_varint();
        uint32_t size = reader.read_unsigned_varint();
        tags[tag].assign(reader.data() + reader.position(), reader.data() + reader.position() + size);
        reader.skip(size);
    }
    EXPECT_TRUE(reader.ok());
    EXPECT_EQ(reader.remaining(), 0u);
    return tags;
}

// Transactions v2 (KIP-890) is not offered through the proxy: a client that saw
// transaction.version 2 finalized would add partitions implicitly with Produce v12.
TEST(api_versions, transaction_version_feature_is_not_offered) {
    wire_writer writer;
    writer.write_int32(1);
    writer.write_int16(0);
    writer.write_array_length(1, true);
    writer.write_int16(0);
    writer.write_int16(0);
    writer.write_int16(12);
    writer.write_empty_tagged_fields();
    writer.write_int32(0);  // throttle
    auto supported = features_field({{"transaction.version", 0, 2}, {"metadata.version", 1, 25}});
    wire_writer epoch;
    epoch.write_int64(77);
    auto finalized = features_field({{"group.version", 1, 1}, {"transaction.version", 2, 2}});
    writer.write_unsigned_varint(3);
    for (auto& [tag, bytes] : std::vector<std::pair<uint32_t, std::vector<std::byte>>>{
             {0, supported}, {1, epoch.bytes()}, {2, finalized}}) {
        writer.write_unsigned_varint(tag);
        writer.write_unsigned_varint(uint32_t(bytes.size()));
        writer.write_raw(bytes);
    }
    auto result = rewrite_api_versions_response(writer.bytes(), 3, nullptr);
    ASSERT_EQ(result.error, wire_error::none);
    EXPECT_EQ(decode_api_versions(result.message, true), (std::vector<std::array<int16_t, 3>>{{0, 0, 11}}));
    auto tags = tags_of(result.message);
    EXPECT_EQ(tags[0], features_field({{"metadata.version", 1, 25}}));
    EXPECT_EQ(tags[1], epoch.bytes());
    EXPECT_EQ(tags[2], features_field({{"group.version", 1, 1}}));

    // Without the feature the tagged fields pass unchanged; a lying size is an error.
    auto plain = api_versions_response(3, 0, {{0, 0, 11}});
    EXPECT_EQ(rewrite_api_versions_response(plain, 3, nullptr).message, plain);
    auto lying = writer.bytes();
    lying.pop_back();
    EXPECT_NE(rewrite_api_versions_response(lying, 3, nullptr).error, wire_error::none);
}

TEST(api_versions, withheld_and_empty_intersections_are_dropped) {
    // SaslHandshake v0 only: the proxy cannot serve raw SASL frames, nothing is left.
    auto original = api_versions_response(3, 0, {{17, 0, 0}, {60, 0, 1}, {68, 0, 1}});
    auto result = rewrite_api_versions_response(original, 3, [](int16_t key) { return key == 68; });
    ASSERT_EQ(result.error, wire_error::none);
    auto entries = decode_api_versions(result.message, true);
    EXPECT_EQ(entries, (std::vector<std::array<int16_t, 3>>{{60, 0, 1}}));
}

TEST(api_versions, apis_unsafe_under_remapping_are_withheld) {
    // WriteTxnMarkers, ConsumerGroupHeartbeat (KIP-848) and share groups would let a broker
    // act on physical partitions behind the proxy's back; DescribeCluster stays.
    auto original = api_versions_response(3, 0, {{27, 0, 1}, {60, 0, 1}, {68, 0, 1}, {76, 0, 1}, {78, 0, 1}, {92, 0, 0}});
    auto result = rewrite_api_versions_response(original, 3, &kpp::protocol::withheld_under_remapping);
    ASSERT_EQ(result.error, wire_error::none);
    auto entries = decode_api_versions(result.message, true);
    EXPECT_EQ(entries, (std::vector<std::array<int16_t, 3>>{{60, 0, 1}}));
}

TEST(api_versions, error_answers_pass_through_unchanged) {
    // As the 2.0.2 mock cluster answers an ApiVersions v3 it does not support: a compact
    // array whose count byte disagrees with its single entry.
    std::vector<std::byte> mock_answer;
    for (int value : {0, 0, 0, 7, 0x00, 0x23, 0x01, 0x00, 0x12, 0, 0, 0, 2, 0, 0, 0, 0, 0})
        mock_answer.push_back(std::byte(value));
    auto result = rewrite_api_versions_response(mock_answer, 3, nullptr);
    ASSERT_EQ(result.error, wire_error::none);
    EXPECT_EQ(result.error_code, 35);
    EXPECT_EQ(result.message, mock_answer);
}

}  // namespace
}  // namespace kpp::protocol
