#include "protocol/frame.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/api.h"
#include "protocol/broker_endpoints.h"
#include "protocol/header.h"
#include "protocol/wire.h"

namespace kpp::protocol {
namespace {

std::string framed(const std::string& body) {
    std::string out(4, '\0');
    store_int32_be(reinterpret_cast<std::byte*>(out.data()), int32_t(body.size()));
    return out + body;
}

byte_slice chunk_of(const std::string& text) {
    auto bytes = shared_bytes::copy_of(std::as_bytes(std::span(text.data(), text.size())));
    return byte_slice{bytes, 0, uint32_t(text.size())};
}

std::string text_of(const frame& body) {
    std::string out(body.size_bytes, '\0');
    body.copy_out(0, std::as_writable_bytes(std::span(out.data(), out.size())));
    return out;
}

TEST(frame_assembler, splits_frames_fed_in_pieces_of_every_size) {
    std::vector<std::string> bodies{"first request", "", "x", std::string(1000, 'z'), "last"};
    std::string stream;
    for (const auto& body : bodies) stream += framed(body);
    for (size_t piece = 1; piece <= stream.size(); piece = piece < 16 ? piece + 1 : piece * 2) {
        for (bool copy_partial : {false, true}) {
            frame_assembler assembler(4096);
            std::vector<std::string> seen;
            for (size_t offset = 0; offset < stream.size(); offset += piece) {
                auto status = assembler.feed(chunk_of(stream.substr(offset, piece)), copy_partial,
                                             [&](frame&& done) { seen.push_back(text_of(done)); });
                ASSERT_EQ(status, frame_status::ok);
            }
            EXPECT_EQ(seen, bodies) << "piece size " << piece << " copy " << copy_partial;
            EXPECT_FALSE(assembler.mid_frame());
        }
    }
}

TEST(frame_assembler, frame_spanning_chunks_references_receive_buffers_without_copying) {
    std::string stream = framed(std::string(100, 'a'));
    frame_assembler assembler(4096);
    auto first = chunk_of(stream.substr(0, 50));
    auto second = chunk_of(stream.substr(50));
    std::vector<frame> done;
    assembler.feed(first, false, [&](frame&& f) { done.push_back(std::move(f)); });
    assembler.feed(second, false, [&](frame&& f) { done.push_back(std::move(f)); });
    ASSERT_EQ(done.size(), 1u);
    ASSERT_EQ(done[0].pieces.size(), 2u);
    EXPECT_EQ(done[0].pieces[0].owner.data(), first.owner.data());  // same memory, not a copy
    EXPECT_EQ(done[0].pieces[1].owner.data(), second.owner.data());
}

TEST(frame_assembler, copy_all_keeps_no_receive_buffer_even_for_complete_frames) {
    std::string stream = framed("held while a broker is slow") + framed("another");
    byte_slice chunk = chunk_of(stream);
    frame_assembler assembler(1024);
    std::vector<frame> done;
    EXPECT_EQ(assembler.feed(chunk, copy_policy::all, [&](frame&& f) { done.push_back(std::move(f)); }),
              frame_status::ok);
    ASSERT_EQ(done.size(), 2u);
    EXPECT_EQ(text_of(done[0]), "held while a broker is slow");
    EXPECT_EQ(text_of(done[1]), "another");
    // Only the test's own handle holds the received memory: the frames are copies.
    EXPECT_EQ(chunk.owner.use_count(), 1u);
    for (const frame& f : done)
        for (const byte_slice& piece : f.pieces) EXPECT_NE(piece.owner.data(), chunk.owner.data());
}

TEST(frame_assembler, copy_partial_releases_the_receive_buffer) {
    std::string stream = framed(std::string(100, 'b'));
    frame_assembler assembler(4096);
    auto first = chunk_of(stream.substr(0, 30));
    assembler.feed(first, true, [](frame&&) { FAIL(); });
    EXPECT_EQ(first.owner.use_count(), 1u);  // only the test's handle is left
    std::vector<std::string> seen;
    assembler.feed(chunk_of(stream.substr(30)), true, [&](frame&& f) { seen.push_back(text_of(f)); });
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0], std::string(100, 'b'));
}

TEST(frame_assembler, oversized_and_negative_sizes_are_refused_before_the_body) {
    frame_assembler assembler(1024);
    std::string too_big(4, '\0');
    store_int32_be(reinterpret_cast<std::byte*>(too_big.data()), 1025);
    EXPECT_EQ(assembler.feed(chunk_of(too_big), false, [](frame&&) {}), frame_status::too_large);
    EXPECT_EQ(assembler.declared_size(), 1025u);  // for the log line
    frame_assembler second(1024);
    EXPECT_EQ(second.feed(chunk_of(std::string("\xff\xff\xff\xff", 4)), false, [](frame&&) {}),
              frame_status::negative_size);
}

TEST(frame, slices_from_and_contiguous_cover_the_body) {
    std::string stream = framed("0123456789");
    frame_assembler assembler(64);
    frame whole;
    assembler.feed(chunk_of(stream.substr(0, 7)), false, [](frame&&) {});
    assembler.feed(chunk_of(stream.substr(7)), false, [&](frame&& f) { whole = std::move(f); });
    std::vector<byte_slice> tail;
    whole.slices_from(4, tail);
    std::string joined;
    for (auto& slice : tail) joined.append(reinterpret_cast<const char*>(slice.data()), slice.length);
    EXPECT_EQ(joined, "456789");
    auto contiguous = whole.contiguous();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(contiguous.data()), contiguous.length), "0123456789");
}

TEST(request_header, parses_v1_and_flexible_v2_headers) {
    auto request = encode_metadata_request(9, 77, "client-a");  // flexible: header v2
    wire_error error = wire_error::none;
    auto header = parse_request_header(request, error);
    ASSERT_TRUE(header);
    EXPECT_EQ(header->fixed.api_key, api_key::metadata);
    EXPECT_EQ(header->fixed.api_version, 9);
    EXPECT_EQ(header->fixed.correlation_id, 77);
    EXPECT_EQ(header->client_id.value(), "client-a");
    EXPECT_EQ(header->header_bytes, 8u + 2u + 8u + 1u);  // fixed, client id, tagged fields
    auto classic = encode_metadata_request(1, 5, "c");
    auto classic_header = parse_request_header(classic, error);
    ASSERT_TRUE(classic_header);
    EXPECT_EQ(classic_header->header_bytes, 8u + 2u + 1u);
}

TEST(api_table, names_and_flexible_versions_line_up_with_keys) {
    EXPECT_EQ(api_name(0), "Produce");
    EXPECT_EQ(api_name(18), "ApiVersions");
    EXPECT_EQ(api_name(60), "DescribeCluster");
    EXPECT_EQ(api_name(92), "DeleteShareGroupOffsets");
    EXPECT_EQ(api_name(500), "Unknown");
    EXPECT_TRUE(request_header_is_flexible(api_key::metadata, 9));
    EXPECT_FALSE(request_header_is_flexible(api_key::metadata, 8));
    EXPECT_FALSE(request_header_is_flexible(api_key::sasl_handshake, 1));
    EXPECT_TRUE(request_header_is_flexible(api_key::api_versions, 3));
    EXPECT_FALSE(response_header_is_flexible(api_key::api_versions, 3));
}

}  // namespace
}  // namespace kpp::protocol

#include "protocol/conformance.h"

namespace kpp::protocol {
namespace {

frame frame_in_pieces(const std::vector<std::byte>& body, size_t piece_bytes) {
    frame whole;
    whole.size_bytes = uint32_t(body.size());
    for (size_t offset = 0; offset < body.size(); offset += piece_bytes) {
        size_t length = std::min(piece_bytes, body.size() - offset);
        auto piece = shared_bytes::copy_of(std::span(body).subspan(offset, length));
        whole.pieces.push_back(byte_slice{piece, 0, uint32_t(length)});
    }
    return whole;
}

TEST(validate_request, well_formed_requests_pass_in_any_pieces_and_malformed_ones_are_named) {
    auto request = encode_metadata_request(9, 3, "validator");
    for (size_t piece_bytes : {size_t(1), size_t(3), size_t(7), request.size()})
        EXPECT_FALSE(validate_request(frame_in_pieces(request, piece_bytes))) << piece_bytes;
    // Trailing bytes after a complete body are tolerated (librdkafka 2.12 sends some).
    auto with_trailing = request;
    with_trailing.push_back(std::byte{0});
    EXPECT_FALSE(validate_request(frame_in_pieces(with_trailing, 4)));
    // A topics count far beyond the bytes left (what crashed the 2.0.2 mock).
    auto lying = encode_metadata_request(1, 4, "validator");
    lying.resize(lying.size() - 4);  // drop the null (-1) topics count
    for (std::byte b : {std::byte{0x3f}, std::byte{0xff}, std::byte{0xff}, std::byte{0xf0}}) lying.push_back(b);
    auto problem = validate_request(frame_in_pieces(lying, 5));
    ASSERT_TRUE(problem);
    EXPECT_NE(problem->find("metadata_request v1"), std::string::npos) << *problem;
    // Unknown API keys are not judged: they are forwarded untouched.
    std::vector<std::byte> unknown{std::byte{0x03}, std::byte{0xe7}, std::byte{0}, std::byte{0},
                                   std::byte{0}, std::byte{0}, std::byte{0}, std::byte{1}, std::byte{0xff}, std::byte{0xff}};
    EXPECT_FALSE(validate_request(frame_in_pieces(unknown, 2)));
}

}  // namespace
}  // namespace kpp::protocol
