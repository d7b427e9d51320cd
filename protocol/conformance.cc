#include "protocol/conformance.h"

#include "protocol/api.h"
#include "protocol/header.h"
#include "protocol/kpp_messages.h"
#include "protocol/segmented_reader.h"

namespace kpp::protocol {
namespace {

using messages::find_message;

// The first bytes of the body in hex, so a mismatch seen in the field can be decoded.
std::string hex_excerpt(std::span<const std::byte> bytes, size_t offset) {
    static const char digits[] = "0123456789abcdef";
    std::string text;
    for (size_t index = offset; index < bytes.size() && index < offset + 96; ++index) {
        text += digits[uint8_t(bytes[index]) >> 4];
        text += digits[uint8_t(bytes[index]) & 15];
    }
    return text;
}

std::optional<conformance_problem> walk_body(const messages::message_info& info, std::span<const std::byte> message,
                                     size_t body_offset, int16_t version) {
    wire_reader reader(message);
    reader.skip(body_offset);
    messages::walk_visitor ignore;
    wire_error error = info.walk_contiguous(reader, version, ignore);
    if (error != wire_error::none)
        return conformance_problem{false, std::string(info.type_name) + " v" + std::to_string(version) + ": " + to_string(error) + " at byte " +
               std::to_string(reader.position()) + " of " + std::to_string(message.size()) + "; body " +
               hex_excerpt(message, body_offset)};
    if (reader.position() != message.size())
        return conformance_problem{true, std::string(info.type_name) + " v" + std::to_string(version) + ": schema ends at byte " +
               std::to_string(reader.position()) + " of " + std::to_string(message.size()) + "; body " +
               hex_excerpt(message, body_offset)};
    return std::nullopt;
}

}  // namespace

std::optional<conformance_problem> check_request(std::span<const std::byte> message) {
    wire_error error = wire_error::none;
    auto header = parse_request_header(message, error);
    if (!header) return std::nullopt;  // not a request at all: framing and routing deal with it
    const auto* info = find_message(header->fixed.api_key, header->fixed.api_version, true);
    if (!info) return std::nullopt;
    return walk_body(*info, message, header->header_bytes, header->fixed.api_version);
}

std::optional<conformance_problem> check_response(std::span<const std::byte> message, int16_t api_key, int16_t api_version) {
    const auto* info = find_message(api_key, api_version, false);
    if (!info) return std::nullopt;
    // ApiVersions error answers are encoded as v0 whatever was asked (see broker_endpoints).
    if (api_key == api_key::api_versions && message.size() >= 6 && load_int16_be(message.data() + 4) != 0)
        return std::nullopt;
    auto body_offset = response_body_offset(message, api_key, api_version);
    if (!body_offset) return conformance_problem{false, "response header truncated"};
    return walk_body(*info, message, *body_offset, api_version);
}

std::optional<std::string> validate_request(const frame& request) {
    // The header is copied out (it is small); the body is walked where it lies.
    constexpr size_t header_bytes_guess = 512;
    constexpr size_t header_bytes_max = 8 + 2 + 32767 + 5 + 1024;  // fixed, client id, tagged fields
    std::vector<std::byte> head(std::min<size_t>(request.size_bytes, header_bytes_guess));
    request.copy_out(0, head);
    wire_error error = wire_error::none;
    auto header = parse_request_header(head, error);
    if (!header && error == wire_error::truncated && request.size_bytes > head.size()) {
        head.resize(std::min<size_t>(request.size_bytes, header_bytes_max));
        request.copy_out(0, head);
        header = parse_request_header(head, error);
    }
    if (!header) return std::string("malformed request header: ") + to_string(error);
    const auto* info = find_message(header->fixed.api_key, header->fixed.api_version, true);
    if (!info) return std::nullopt;
    std::vector<std::span<const std::byte>> pieces;
    pieces.reserve(request.pieces.size());
    for (const byte_slice& piece : request.pieces) pieces.push_back(piece.span());
    segmented_reader reader(pieces);
    reader.skip(header->header_bytes);
    messages::walk_visitor ignore;
    error = info->walk_segmented(reader, header->fixed.api_version, ignore);
    if (error == wire_error::none) return std::nullopt;
    return std::string(info->type_name) + " v" + std::to_string(header->fixed.api_version) + ": " + to_string(error) +
           " at byte " + std::to_string(reader.position()) + " of " + std::to_string(request.size_bytes);
}

}  // namespace kpp::protocol
