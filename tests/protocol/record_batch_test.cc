#include "protocol/record_batch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "protocol/crc32c.h"
#include "protocol/wire.h"

namespace kpp::protocol {
namespace {

using bytes = std::vector<std::byte>;

// Independent little encoders, so the parser is not checked against its own builder.
void put(bytes& out, std::initializer_list<int> values) {
    for (int value : values) out.push_back(std::byte(value));
}
void put_be(bytes& out, uint64_t value, int width) {
    for (int index = width - 1; index >= 0; --index) out.push_back(std::byte(value >> (8 * index)));
}
void put_zigzag(bytes& out, int64_t value) {
    uint64_t raw = (uint64_t(value) << 1) ^ uint64_t(value >> 63);
    while (raw >= 0x80) {
        out.push_back(std::byte((raw & 0x7f) | 0x80));
        raw >>= 7;
    }
    out.push_back(std::byte(raw));
}
void put_text(bytes& out, std::string_view text) {
    for (char c : text) out.push_back(std::byte(c));
}
std::string text_of(std::span<const std::byte> span) { return {reinterpret_cast<const char*>(span.data()), span.size()}; }

// A record body: attributes 0, the given deltas, key/value (nullopt = null), headers.
bytes record_body(int64_t timestamp_delta, int32_t offset_delta, std::optional<std::string> key,
                  std::optional<std::string> value,
                  std::vector<std::pair<std::string, std::optional<std::string>>> headers = {}) {
    bytes body;
    put(body, {0});
    put_zigzag(body, timestamp_delta);
    put_zigzag(body, offset_delta);
    for (const auto& field : {key, value}) {
        put_zigzag(body, field ? int64_t(field->size()) : -1);
        if (field) put_text(body, *field);
    }
    put_zigzag(body, int64_t(headers.size()));
    for (const auto& [header_key, header_value] : headers) {
        put_zigzag(body, int64_t(header_key.size()));
        put_text(body, header_key);
        put_zigzag(body, header_value ? int64_t(header_value->size()) : -1);
        if (header_value) put_text(body, *header_value);
    }
    return body;
}

bytes with_length(const bytes& body) {
    bytes record;
    put_zigzag(record, int64_t(body.size()));
    record.insert(record.end(), body.begin(), body.end());
    return record;
}

bytes batch_around(const bytes& section, int32_t records_count, uint16_t attributes = 0, int32_t last_offset_delta = 1) {
    bytes batch;
    put_be(batch, 1000, 8);                      // base_offset
    put_be(batch, 49 + section.size(), 4);       // batch_length
    put_be(batch, 7, 4);                         // partition leader epoch
    put(batch, {2});                             // magic
    put_be(batch, 0, 4);                         // crc
    put_be(batch, attributes, 2);
    put_be(batch, uint32_t(last_offset_delta), 4);
    put_be(batch, 1700000000000ull, 8);          // base timestamp
    put_be(batch, 1700000000005ull, 8);          // max timestamp
    put_be(batch, 4242, 8);                      // producer id
    put_be(batch, 3, 2);                         // producer epoch
    put_be(batch, 17, 4);                        // base sequence
    put_be(batch, uint32_t(records_count), 4);
    batch.insert(batch.end(), section.begin(), section.end());
    uint32_t crc = crc32c_portable(std::span<const std::byte>(batch).subspan(21));
    store_int32_be(batch.data() + 17, int32_t(crc));
    return batch;
}

bytes two_record_section() {
    bytes section = with_length(record_body(0, 0, "k1", "v1", {{"h1", "x"}, {"kpr.vp", std::string("\0\0\0\5", 4)}, {"h2", std::nullopt}}));
    bytes second = with_length(record_body(5, 1, std::nullopt, std::nullopt));
    section.insert(section.end(), second.begin(), second.end());
    return section;
}

TEST(record_batch, header_fields_at_their_offsets) {
    bytes batch = batch_around(two_record_section(), 2, 0x0010 | 3);
    ASSERT_EQ(validate_batch(batch), batch_error::none);
    record_batch_view view(batch);
    EXPECT_EQ(view.base_offset(), 1000);
    EXPECT_EQ(size_t(view.batch_length()), batch.size() - 12);
    EXPECT_EQ(view.partition_leader_epoch(), 7);
    EXPECT_EQ(view.magic(), 2);
    EXPECT_EQ(view.stored_crc(), view.computed_crc());
    EXPECT_EQ(view.compression(), codec::lz4);
    EXPECT_TRUE(view.is_transactional());
    EXPECT_FALSE(view.is_control());
    EXPECT_EQ(view.last_offset_delta(), 1);
    EXPECT_EQ(view.last_offset(), 1001);
    EXPECT_EQ(view.base_timestamp(), 1700000000000);
    EXPECT_EQ(view.max_timestamp(), 1700000000005);
    EXPECT_EQ(view.producer_id(), 4242);
    EXPECT_EQ(view.producer_epoch(), 3);
    EXPECT_EQ(view.base_sequence(), 17);
    EXPECT_EQ(view.records_count(), 2);
    EXPECT_EQ(view.records_section().size(), two_record_section().size());
}

TEST(record_batch, control_bit) {
    bytes batch = batch_around(two_record_section(), 2, 0x0020);
    EXPECT_TRUE(record_batch_view(batch).is_control());
}

TEST(record_batch, validation_errors) {
    bytes good = batch_around(two_record_section(), 2);
    bytes flipped = good;
    flipped[70] ^= std::byte(1);
    EXPECT_EQ(validate_batch(flipped), batch_error::crc_mismatch);
    EXPECT_EQ(validate_batch_header(flipped), batch_error::none);

    bytes old_magic = good;
    old_magic[16] = std::byte(1);
    EXPECT_EQ(validate_batch(old_magic), batch_error::unsupported_magic);

    EXPECT_EQ(validate_batch(std::span(good).first(10)), batch_error::truncated);
    EXPECT_EQ(validate_batch(std::span(good).first(40)), batch_error::truncated);
    EXPECT_EQ(validate_batch(std::span(good).first(good.size() - 1)), batch_error::invalid_length);

    bytes negative_count = batch_around(two_record_section(), -1);
    EXPECT_EQ(validate_batch(negative_count), batch_error::negative_length);
    bytes absurd_count = batch_around(two_record_section(), 1000000);
    EXPECT_EQ(validate_batch(absurd_count), batch_error::record_count_mismatch);
    bytes bad_codec = batch_around(two_record_section(), 2, 6);
    EXPECT_EQ(validate_batch(bad_codec), batch_error::unknown_codec);
}

TEST(record_batch, iterates_records_and_headers) {
    bytes batch = batch_around(two_record_section(), 2);
    record_batch_view view(batch);
    record_reader reader(view.records_section(), view.records_count());
    record_view record;
    ASSERT_TRUE(reader.next(record));
    EXPECT_EQ(record.timestamp_delta, 0);
    EXPECT_EQ(record.offset_delta, 0);
    ASSERT_TRUE(record.key && record.value);
    EXPECT_EQ(text_of(*record.key), "k1");
    EXPECT_EQ(text_of(*record.value), "v1");
    EXPECT_EQ(record.headers_count, 3);
    header_reader headers(record);
    record_header_view header;
    std::vector<std::string> keys;
    while (headers.next(header)) keys.emplace_back(header.key);
    EXPECT_EQ(headers.error(), batch_error::none);
    EXPECT_EQ(keys, (std::vector<std::string>{"h1", "kpr.vp", "h2"}));
    auto tag = find_last_header(record, "kpr.vp");
    ASSERT_TRUE(tag && tag->value);
    EXPECT_EQ(load_int32_be(tag->value->data()), 5);
    auto null_header = find_last_header(record, "h2");
    ASSERT_TRUE(null_header);
    EXPECT_FALSE(null_header->value);
    EXPECT_FALSE(find_last_header(record, "absent"));

    ASSERT_TRUE(reader.next(record));
    EXPECT_EQ(record.timestamp_delta, 5);
    EXPECT_EQ(record.offset_delta, 1);
    EXPECT_FALSE(record.key);
    EXPECT_FALSE(record.value);
    EXPECT_EQ(record.headers_count, 0);
    EXPECT_FALSE(reader.next(record));
    EXPECT_EQ(reader.error(), batch_error::none);
    EXPECT_EQ(reader.position(), view.records_section().size());
}

TEST(record_batch, last_header_wins) {
    bytes section = with_length(record_body(0, 0, "k", "v", {{"kpr.vp", std::string("\0\0\0\1", 4)}, {"kpr.vp", std::string("\0\0\0\2", 4)}}));
    record_reader reader(section, 1);
    record_view record;
    ASSERT_TRUE(reader.next(record));
    EXPECT_EQ(load_int32_be(find_last_header(record, "kpr.vp")->value->data()), 2);

    // The one-pass form (the fetch path's) notes the same header as find_last_header.
    record_view parsed;
    size_t consumed = 0;
    std::optional<record_header_view> noted;
    ASSERT_EQ(parse_record(section, parsed, consumed, "kpr.vp", noted), batch_error::none);
    EXPECT_EQ(consumed, section.size());
    ASSERT_TRUE(noted && noted->value);
    EXPECT_EQ(load_int32_be(noted->value->data()), 2);
    EXPECT_EQ(noted->bytes.data(), find_last_header(record, "kpr.vp")->bytes.data());
    ASSERT_EQ(parse_record(section, parsed, consumed, "absent", noted), batch_error::none);
    EXPECT_FALSE(noted);
}

// scan_record against parse_record on one input: the same error, and when both accept it,
// the same size and layout.
void expect_scan_agrees(std::span<const std::byte> input, const std::string& what) {
    record_view parsed;
    record_layout scanned;
    size_t parsed_bytes = 0, scanned_bytes = 0;
    batch_error parse_error = parse_record(input, parsed, parsed_bytes);
    batch_error scan_error = scan_record(input, scanned, scanned_bytes);
    ASSERT_EQ(scan_error, parse_error) << what << ": scan says " << to_string(scan_error) << ", parse says "
                                       << to_string(parse_error);
    if (parse_error != batch_error::none) return;
    EXPECT_EQ(scanned_bytes, parsed_bytes) << what;
    EXPECT_EQ(scanned.bytes.data(), parsed.bytes.data()) << what;
    EXPECT_EQ(scanned.bytes.size(), parsed.bytes.size()) << what;
    EXPECT_EQ(scanned.body_at, parsed.body_at) << what;
    EXPECT_EQ(scanned.headers_count_at, parsed.headers_count_at) << what;
    EXPECT_EQ(scanned.headers_at, parsed.headers_at) << what;
    EXPECT_EQ(scanned.headers_count, parsed.headers_count) << what;
}

// The error of the section's records, read with parse_record; the same walk with
// scan_record must end the same way.
batch_error first_record_error(const bytes& section, int32_t count = 1) {
    record_reader reader(section, count);
    record_view record;
    while (reader.next(record)) {
    }
    record_reader scanner(section, count);
    record_layout layout;
    while (scanner.next(layout)) {
    }
    EXPECT_EQ(scanner.error(), reader.error()) << "scan_record and parse_record disagree";
    EXPECT_EQ(scanner.position(), reader.position());
    if (!section.empty()) expect_scan_agrees(section, "first record");
    return reader.error();
}

TEST(record_batch, record_count_must_match_the_section) {
    bytes section = two_record_section();
    EXPECT_EQ(first_record_error(section, 2), batch_error::none);
    EXPECT_EQ(first_record_error(section, 3), batch_error::record_count_mismatch);
    EXPECT_EQ(first_record_error(section, 1), batch_error::record_count_mismatch);
    EXPECT_EQ(first_record_error(section, -1), batch_error::negative_length);
    EXPECT_EQ(first_record_error({}, 0), batch_error::none);
}

TEST(record_batch, six_byte_varint_is_refused) {
    bytes section;
    put(section, {0x80, 0x80, 0x80, 0x80, 0x80, 0x00});  // record length as a 6-byte varint
    EXPECT_EQ(first_record_error(section), batch_error::varint_too_long);
    bytes overflowing;
    put(overflowing, {0xff, 0xff, 0xff, 0xff, 0x7f});  // fifth byte uses bits past 32
    EXPECT_EQ(first_record_error(overflowing), batch_error::varint_too_long);
    // A 6-byte offset delta inside a record.
    bytes body;
    put(body, {0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 1, 0});
    EXPECT_EQ(first_record_error(with_length(body)), batch_error::varint_too_long);
}

TEST(record_batch, negative_lengths_are_refused) {
    bytes negative_record;
    put_zigzag(negative_record, -3);
    put(negative_record, {0, 0, 0});
    EXPECT_EQ(first_record_error(negative_record), batch_error::negative_length);

    bytes key_minus_two;
    put(key_minus_two, {0, 0, 0});
    put_zigzag(key_minus_two, -2);
    put(key_minus_two, {1, 0});
    EXPECT_EQ(first_record_error(with_length(key_minus_two)), batch_error::negative_length);

    bytes null_header_key = record_body(0, 0, "k", "v");
    null_header_key.back() = std::byte(2);  // one header
    put_zigzag(null_header_key, -1);        // null key: not allowed
    put_zigzag(null_header_key, -1);
    EXPECT_EQ(first_record_error(with_length(null_header_key)), batch_error::negative_length);

    bytes negative_header_count = record_body(0, 0, "k", "v");
    negative_header_count.back() = std::byte(3);  // zig-zag -2
    EXPECT_EQ(first_record_error(with_length(negative_header_count)), batch_error::negative_length);

    bytes header_value_minus_two = record_body(0, 0, "k", "v", {{"h", "x"}});
    header_value_minus_two[header_value_minus_two.size() - 2] = std::byte(3);  // value length -2
    EXPECT_EQ(first_record_error(with_length(header_value_minus_two)), batch_error::negative_length);
}

TEST(record_batch, truncation_and_lying_lengths) {
    bytes record = with_length(record_body(1, 2, "key", "value", {{"h", "x"}}));
    for (size_t keep = 0; keep < record.size(); ++keep) {
        bytes cut(record.begin(), record.begin() + long(keep));
        EXPECT_NE(first_record_error(cut), batch_error::none) << keep;
    }
    record_view view;
    size_t consumed = 0;
    EXPECT_EQ(parse_record(std::span(record).first(record.size() - 1), view, consumed), batch_error::truncated);

    // The record length says one byte more than the fields use.
    bytes body = record_body(1, 2, "key", "value");
    body.push_back(std::byte{0});
    EXPECT_EQ(first_record_error(with_length(body)), batch_error::invalid_length);
    // A key that runs past the record's length.
    bytes long_key;
    put(long_key, {0, 0, 0});
    put_zigzag(long_key, 50);
    put(long_key, {1, 2, 3});
    EXPECT_EQ(first_record_error(with_length(long_key)), batch_error::invalid_length);
    // More headers than the bytes could hold.
    bytes many_headers = record_body(0, 0, "k", "v");
    many_headers.back() = std::byte(0x7e);  // 63 headers, no bytes for them
    EXPECT_EQ(first_record_error(with_length(many_headers)), batch_error::invalid_length);
}

TEST(record_batch, scan_agrees_with_parse_on_every_cut_and_every_flipped_byte) {
    // Records whose varints take one to ten bytes, null and empty fields, headers (the tag's
    // key among them), and every prefix and single-byte change of each.
    std::vector<bytes> records = {
        with_length(record_body(0, 0, std::nullopt, std::nullopt)),
        with_length(record_body(0, 0, "", "")),
        with_length(record_body(-1, 63, "k", std::string(100, 'v'))),
        with_length(record_body(-70000, 64, std::string(300, 'k'), std::string(20000, 'v'), {{"h", "x"}})),
        with_length(record_body(int64_t(1) << 40, 1 << 20, "key", "value",
                                {{"kpr.vp", std::string("\0\0\0\7", 4)}, {"", std::nullopt}, {"trace", ""}})),
        with_length(record_body(INT64_MIN, INT32_MIN, std::nullopt, "v", {{std::string(200, 'h'), "x"}})),
        with_length(record_body(INT64_MAX, INT32_MAX, "k", std::nullopt)),
    };
    for (size_t index = 0; index < records.size(); ++index) {
        const bytes& record = records[index];
        std::string name = "record " + std::to_string(index);
        expect_scan_agrees(record, name);
        for (size_t keep = 0; keep < record.size(); ++keep)
            expect_scan_agrees(std::span(record).first(keep), name + " cut to " + std::to_string(keep));
        // Bytes after the record are not its own.
        bytes followed = record;
        put(followed, {0x01, 0x80, 0xff});
        expect_scan_agrees(followed, name + " followed by more bytes");
        size_t positions = std::min<size_t>(record.size(), 400);  // the long value's bytes are alike
        for (size_t at = 0; at < positions; ++at)
            for (int value : {0x00, 0x01, 0x02, 0x03, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff,
                              (int(record[at]) + 1) & 0xff, (int(record[at]) + 0xff) & 0xff}) {
                bytes changed = record;
                changed[at] = std::byte(value);
                expect_scan_agrees(changed, name + " with byte " + std::to_string(at) + " = " + std::to_string(value));
            }
    }
}

TEST(record_batch, record_size_from_the_first_bytes) {
    bytes record = with_length(record_body(0, 0, std::string(300, 'k'), "v"));
    size_t size = 0;
    ASSERT_EQ(record_size(std::span(record).first(2), size), batch_error::none);
    EXPECT_EQ(size, record.size());
    EXPECT_EQ(record_size(std::span(record).first(1), size), batch_error::truncated);
}

TEST(record_batch, batch_iterator_reports_a_partial_tail) {
    bytes first = batch_around(two_record_section(), 2);
    bytes second = batch_around(with_length(record_body(0, 0, "a", "b")), 1, 0, 0);
    bytes field = first;
    field.insert(field.end(), second.begin(), second.end());
    for (size_t cut : {size_t(0), size_t(5), size_t(11), size_t(12), size_t(40), second.size() - 1, second.size()}) {
        bytes truncated(field.begin(), field.begin() + long(first.size() + cut));
        batch_iterator iterator(truncated);
        batch_entry entry;
        ASSERT_TRUE(iterator.next(entry));
        EXPECT_EQ(entry.bytes.size(), first.size());
        EXPECT_EQ(entry.magic, 2);
        EXPECT_EQ(validate_batch(entry.bytes), batch_error::none);
        bool whole_second = cut == second.size();
        EXPECT_EQ(iterator.next(entry), whole_second) << cut;
        if (whole_second) {
            EXPECT_EQ(entry.offset_in_field, first.size());
            EXPECT_FALSE(iterator.next(entry));
        }
        EXPECT_EQ(iterator.error(), batch_error::none);
        EXPECT_EQ(iterator.partial(), cut != 0 && !whole_second) << cut;
        EXPECT_EQ(iterator.complete_bytes(), first.size() + (whole_second ? second.size() : 0));
    }
}

TEST(record_batch, batch_iterator_refuses_impossible_lengths) {
    bytes field = batch_around(two_record_section(), 2);
    store_int32_be(field.data() + 8, 3);
    batch_iterator iterator(field);
    batch_entry entry;
    EXPECT_FALSE(iterator.next(entry));
    EXPECT_EQ(iterator.error(), batch_error::invalid_length);
    store_int32_be(field.data() + 8, -1);
    batch_iterator negative(field);
    EXPECT_FALSE(negative.next(entry));
    EXPECT_EQ(negative.error(), batch_error::invalid_length);
    batch_iterator empty(std::span<const std::byte>{});
    EXPECT_FALSE(empty.next(entry));
    EXPECT_FALSE(empty.partial());
}

TEST(record_batch, varint_encoding_matches_the_wire_reader) {
    for (int32_t value : {0, 1, -1, 63, -64, 64, -65, 8191, 8192, 1 << 20, INT32_MAX, INT32_MIN}) {
        std::byte encoded[varint_bytes_max];
        size_t size = encode_varint(value, encoded);
        EXPECT_EQ(size, encoded_varint_size(value));
        wire_reader reader(std::span<const std::byte>(encoded, size));
        EXPECT_EQ(reader.read_varint(), value);
        EXPECT_TRUE(reader.ok());
        EXPECT_EQ(reader.remaining(), 0u);
    }
}

TEST(record_batch, builder_output_parses_back_for_every_codec) {
    std::string key = "key", value(200, 'v'), header_value = "hv";
    std::vector<record_input> records(3);
    for (int index = 0; index < 3; ++index) {
        records[index].key = std::as_bytes(std::span(key));
        records[index].value = std::as_bytes(std::span(value));
        records[index].offset_delta = index;
        records[index].timestamp_delta = index * 10;
    }
    records[1].headers.push_back({"h", std::as_bytes(std::span(header_value))});
    records[2].value.reset();
    for (codec kind : {codec::none, codec::gzip, codec::snappy, codec::lz4, codec::zstd}) {
        batch_fields fields;
        fields.compression = kind;
        fields.base_offset = 5;
        built_batch built = build_record_batch(fields, records);
        ASSERT_TRUE(built.ok());
        ASSERT_EQ(validate_batch(built.bytes), batch_error::none);
        record_batch_view view(built.bytes);
        EXPECT_EQ(view.compression(), kind);
        EXPECT_EQ(view.last_offset(), 7);
        codec_result section = decompress(kind, view.records_section(), 1 << 20);
        ASSERT_TRUE(section.ok());
        record_reader reader(section.bytes, view.records_count());
        record_view record;
        int count = 0;
        while (reader.next(record)) {
            EXPECT_EQ(record.offset_delta, count);
            EXPECT_EQ(record.timestamp_delta, count * 10);
            EXPECT_EQ(text_of(*record.key), key);
            EXPECT_EQ(record.value.has_value(), count != 2);
            EXPECT_EQ(record.headers_count, count == 1 ? 1 : 0);
            ++count;
        }
        EXPECT_EQ(reader.error(), batch_error::none);
        EXPECT_EQ(count, 3);
    }
}

}  // namespace
}  // namespace kpp::protocol
