#include "protocol/wire.h"

#include <gtest/gtest.h>

#include <vector>

namespace kpp::protocol {
namespace {

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
    std::vector<std::byte> out;
    for (int value : values) out.push_back(std::byte(value));
    return out;
}

TEST(wire, fixed_width_integers_are_big_endian) {
    wire_writer writer;
    writer.write_int16(-2);
    writer.write_int32(0x01020304);
    writer.write_int64(-5);
    wire_reader reader(writer.bytes());
    EXPECT_EQ(reader.read_int16(), -2);
    EXPECT_EQ(reader.read_int32(), 0x01020304);
    EXPECT_EQ(reader.read_int64(), -5);
    EXPECT_TRUE(reader.ok());
    EXPECT_EQ(reader.remaining(), 0u);
    EXPECT_EQ(writer.bytes()[2], std::byte{0x01});
}

TEST(wire, varints_round_trip_and_zigzag) {
    for (int32_t value : {0, 1, -1, 63, -64, 64, 300, -300, INT32_MAX, INT32_MIN}) {
        wire_writer writer;
        writer.write_varint(value);
        wire_reader reader(writer.bytes());
        EXPECT_EQ(reader.read_varint(), value);
        EXPECT_TRUE(reader.ok());
    }
    wire_writer writer;
    writer.write_varint(-1);
    EXPECT_EQ(writer.bytes(), bytes_of({0x01}));  // zig-zag: -1 -> 1
}

TEST(wire, unsigned_varint_longer_than_five_bytes_is_refused) {
    auto too_long = bytes_of({0x80, 0x80, 0x80, 0x80, 0x80, 0x01});
    wire_reader reader(too_long);
    reader.read_unsigned_varint();
    EXPECT_EQ(reader.error(), wire_error::varint_too_long);
    auto overflow = bytes_of({0xff, 0xff, 0xff, 0xff, 0x1f});  // fifth byte carries bits past 32
    wire_reader second(overflow);
    second.read_unsigned_varint();
    EXPECT_EQ(second.error(), wire_error::varint_too_long);
}

TEST(wire, varlong_is_bounded_at_ten_bytes) {
    std::vector<std::byte> eleven(10, std::byte{0x80});
    eleven.push_back(std::byte{0x01});
    wire_reader reader(eleven);
    reader.read_varlong();
    EXPECT_EQ(reader.error(), wire_error::varint_too_long);
}

TEST(wire, strings_classic_and_compact_with_null) {
    wire_writer writer;
    writer.write_string("abc", false);
    writer.write_string(std::nullopt, false);
    writer.write_string("xy", true);
    writer.write_string(std::nullopt, true);
    wire_reader reader(writer.bytes());
    EXPECT_EQ(reader.read_string(false, false).value(), "abc");
    EXPECT_FALSE(reader.read_string(false, true).has_value());
    EXPECT_EQ(reader.read_string(true, false).value(), "xy");
    EXPECT_FALSE(reader.read_string(true, true).has_value());
    EXPECT_TRUE(reader.ok());
}

TEST(wire, null_where_not_nullable_and_truncation_are_errors) {
    wire_writer writer;
    writer.write_string(std::nullopt, false);
    wire_reader reader(writer.bytes());
    reader.read_string(false, false);
    EXPECT_EQ(reader.error(), wire_error::negative_length);

    auto truncated = bytes_of({0x00, 0x05, 'a', 'b'});
    wire_reader short_reader(truncated);
    short_reader.read_string(false, false);
    EXPECT_EQ(short_reader.error(), wire_error::truncated);
    EXPECT_EQ(short_reader.remaining(), 0u);
    EXPECT_EQ(short_reader.read_int32(), 0);  // reads after an error yield zero, never past the end
}

TEST(wire, array_length_larger_than_the_message_is_refused) {
    auto huge = bytes_of({0x7f, 0xff, 0xff, 0xff, 0x00});
    wire_reader reader(huge);
    reader.read_array_length(false, false, 4);
    EXPECT_EQ(reader.error(), wire_error::array_too_large);
    auto negative = bytes_of({0xff, 0xff, 0xff, 0xfe});
    wire_reader second(negative);
    second.read_array_length(false, true, 1);
    EXPECT_EQ(second.error(), wire_error::negative_length);
}

TEST(wire, tagged_fields_are_skipped_with_bounds) {
    wire_writer writer;
    writer.write_unsigned_varint(2);
    writer.write_unsigned_varint(0);
    writer.write_unsigned_varint(3);
    writer.write_raw(bytes_of({1, 2, 3}));
    writer.write_unsigned_varint(5);
    writer.write_unsigned_varint(0);
    writer.write_int8(42);
    wire_reader reader(writer.bytes());
    reader.skip_tagged_fields();
    EXPECT_EQ(reader.read_int8(), 42);
    EXPECT_TRUE(reader.ok());

    auto lying = bytes_of({0x01, 0x00, 0x7f});  // one field claiming 127 bytes
    wire_reader bad(lying);
    bad.skip_tagged_fields();
    EXPECT_EQ(bad.error(), wire_error::truncated);
}

}  // namespace
}  // namespace kpp::protocol

namespace kpp::protocol {
namespace {

TEST(wire, varlong_round_trips_extremes_and_accepts_ten_bytes) {
    // INT64_MIN zig-zags to all ones: the longest legal encoding, ten bytes ending in 0x01.
    std::vector<std::byte> longest(9, std::byte{0xff});
    longest.push_back(std::byte{0x01});
    wire_reader reader(longest);
    EXPECT_EQ(reader.read_varlong(), INT64_MIN);
    EXPECT_TRUE(reader.ok());
    std::vector<std::byte> five_max{std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                                    std::byte{0x0f}};
    wire_reader second(five_max);
    EXPECT_EQ(second.read_unsigned_varint(), UINT32_MAX);
    EXPECT_TRUE(second.ok());
}

}  // namespace
}  // namespace kpp::protocol
