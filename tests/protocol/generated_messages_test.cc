// Generated round-trip tests: one case per (API, direction, version) of the schema files.
// Each encodes the generator's sample (every field present), then checks that decode and
// re-encode give the same bytes, that the walker stops exactly at the end even with
// trailing garbage, that it reports the same fields when the message arrives in pieces of
// every size, and that every truncation and a set of corruptions give an error value
// (under the sanitizer build: never an out-of-bounds read).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "protocol/segmented_reader.h"

namespace kpp::protocol::messages {
namespace {

struct recorded_event {
    field_role role;
    size_t offset;
    size_t size_bytes;
    int64_t value;
    std::string text;
    int depth;
    bool operator==(const recorded_event&) const = default;
};

struct recording_visitor : walk_visitor {
    std::vector<recorded_event> events;
    int depth = 0;
    int elements = 0;
    void on_field(const field_event& event) override {
        events.push_back({event.role, event.offset, event.size_bytes, event.value, event.text, depth});
    }
    void on_element_begin(std::string_view, int32_t) override {
        ++depth;
        ++elements;
    }
    void on_element_end() override { --depth; }
};

struct message_case {
    const message_info* info;
    int16_t version;
};

std::vector<message_case> all_cases() {
    std::vector<message_case> cases;
    for (const message_info& info : all_messages())
        for (int16_t version = info.min_version; version <= info.max_version; ++version) cases.push_back({&info, version});
    return cases;
}

std::string case_name(const ::testing::TestParamInfo<message_case>& param) {
    return std::string(param.param.info->type_name) + "_v" + std::to_string(param.param.version);
}

class generated_message : public ::testing::TestWithParam<message_case> {};

recording_visitor walk_whole(const message_info& info, int16_t version, std::span<const std::byte> bytes,
                             size_t& consumed, wire_error& error) {
    recording_visitor visitor;
    wire_reader reader(bytes);
    error = info.walk_contiguous(reader, version, visitor);
    consumed = reader.position();
    return visitor;
}

TEST_P(generated_message, encode_decode_reencode_is_identical) {
    const auto& [info, version] = GetParam();
    std::vector<std::byte> encoded = info->encode_sample(version);  // empty for ApiVersions v0-2 requests
    std::vector<std::byte> again{std::byte{0x5a}};
    ASSERT_TRUE(info->decode_reencode(encoded, version, again));
    EXPECT_EQ(again, encoded);
}

TEST_P(generated_message, walker_stops_at_the_end_despite_trailing_garbage) {
    const auto& [info, version] = GetParam();
    std::vector<std::byte> encoded = info->encode_sample(version);
    std::vector<std::byte> with_garbage = encoded;
    for (int i = 0; i < 9; ++i) with_garbage.push_back(std::byte{0xab});
    size_t consumed = 0;
    wire_error error = wire_error::none;
    recording_visitor visitor = walk_whole(*info, version, with_garbage, consumed, error);
    EXPECT_EQ(error, wire_error::none) << to_string(error);
    EXPECT_EQ(consumed, encoded.size());
    EXPECT_EQ(visitor.depth, 0);
    for (const recorded_event& event : visitor.events) EXPECT_LE(event.offset + event.size_bytes, encoded.size());
}

TEST_P(generated_message, walker_gives_the_same_fields_when_fed_in_pieces_of_every_size) {
    const auto& [info, version] = GetParam();
    std::vector<std::byte> encoded = info->encode_sample(version);
    size_t consumed = 0;
    wire_error error = wire_error::none;
    recording_visitor whole = walk_whole(*info, version, encoded, consumed, error);
    ASSERT_EQ(error, wire_error::none);
    for (size_t piece_bytes = 1; piece_bytes <= encoded.size(); piece_bytes = piece_bytes < 32 ? piece_bytes + 1 : piece_bytes * 2) {
        std::vector<std::span<const std::byte>> pieces;
        for (size_t offset = 0; offset < encoded.size(); offset += piece_bytes)
            pieces.push_back(std::span<const std::byte>(encoded).subspan(offset, std::min(piece_bytes, encoded.size() - offset)));
        segmented_reader reader(pieces);
        recording_visitor in_pieces;
        EXPECT_EQ(info->walk_segmented(reader, version, in_pieces), wire_error::none) << "pieces of " << piece_bytes;
        EXPECT_EQ(reader.position(), encoded.size());
        EXPECT_EQ(in_pieces.events, whole.events) << "pieces of " << piece_bytes;
    }
}

TEST_P(generated_message, every_truncation_is_an_error_value) {
    const auto& [info, version] = GetParam();
    std::vector<std::byte> encoded = info->encode_sample(version);
    for (size_t length = 0; length < encoded.size(); ++length) {
        // A copy of exactly `length` bytes, so a read past it is caught by the sanitizers.
        std::vector<std::byte> prefix(encoded.begin(), encoded.begin() + long(length));
        size_t consumed = 0;
        wire_error error = wire_error::none;
        walk_whole(*info, version, prefix, consumed, error);
        EXPECT_NE(error, wire_error::none) << "prefix of " << length << " bytes walked as complete";
        EXPECT_LE(consumed, length);
    }
}

TEST_P(generated_message, corrupted_lengths_never_read_out_of_bounds) {
    const auto& [info, version] = GetParam();
    std::vector<std::byte> encoded = info->encode_sample(version);
    // At every offset: a negative int16/int32 length, a huge int32 count, a varint that
    // never ends. The walker must answer with an error or a clean walk, never crash.
    const std::vector<std::vector<std::byte>> patches{
        {std::byte{0xff}, std::byte{0xfe}},
        {std::byte{0x7f}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff}},
        {std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff}},
    };
    for (const auto& patch : patches) {
        for (size_t offset = 0; offset + patch.size() <= encoded.size(); ++offset) {
            std::vector<std::byte> corrupted = encoded;
            std::copy(patch.begin(), patch.end(), corrupted.begin() + long(offset));
            size_t consumed = 0;
            wire_error error = wire_error::none;
            walk_whole(*info, version, corrupted, consumed, error);
            EXPECT_LE(consumed, corrupted.size());
            // A walk that reports success consumed a consistent message: walking again gives
            // the same answer (no state leaks between walks).
            size_t consumed_again = 0;
            wire_error error_again = wire_error::none;
            walk_whole(*info, version, corrupted, consumed_again, error_again);
            EXPECT_EQ(error_again, error);
            EXPECT_EQ(consumed_again, consumed);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(schemas, generated_message, ::testing::ValuesIn(all_cases()), case_name);

TEST(generated_table, flexible_versions_agree_with_the_header_table) {
    ASSERT_FALSE(all_messages().empty());
    for (const message_info& info : all_messages()) {
        auto known = find_api(info.api_key);
        ASSERT_TRUE(known) << info.api_name;
        EXPECT_EQ(known->name, info.api_name);
        for (int16_t version = info.min_version; version <= info.max_version; ++version) {
            bool generated_flexible = info.first_flexible_version >= 0 && version >= info.first_flexible_version;
            EXPECT_EQ(request_header_is_flexible(info.api_key, version), generated_flexible)
                << info.type_name << " v" << version;
        }
    }
}

TEST(generated_table, every_api_has_a_request_and_a_response_with_the_same_versions) {
    for (const message_info& request : all_messages()) {
        if (!request.is_request) continue;
        bool paired = false;
        for (const message_info& response : all_messages()) {
            if (response.is_request || response.api_key != request.api_key) continue;
            paired = true;
            EXPECT_EQ(response.min_version, request.min_version) << request.api_name;
            EXPECT_EQ(response.max_version, request.max_version) << request.api_name;
            EXPECT_EQ(response.first_flexible_version, request.first_flexible_version) << request.api_name;
        }
        EXPECT_TRUE(paired) << request.api_name;
    }
}

}  // namespace
}  // namespace kpp::protocol::messages
