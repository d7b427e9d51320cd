// Request and response headers. Only what the proxy routes on is decoded: key, version,
// correlation id, and (when the body is needed) where the header ends.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "protocol/frame.h"
#include "protocol/wire.h"

namespace kpp::protocol {

// The fixed part shared by every request header version: api key, version, correlation id.
inline constexpr uint32_t request_header_fixed_bytes = 8;
inline constexpr uint32_t response_correlation_bytes = 4;

struct request_header {
    int16_t api_key = 0;
    int16_t api_version = 0;
    int32_t correlation_id = 0;
};

// Reads the fixed header from the start of a request body; nullopt if the frame is shorter.
std::optional<request_header> peek_request_header(const frame& body);

struct parsed_request_header {
    request_header fixed;
    std::optional<std::string_view> client_id;
    uint32_t header_bytes = 0;  // where the request body starts
};

// Parses the whole header (v1 or v2 by key and version) from contiguous bytes.
std::optional<parsed_request_header> parse_request_header(std::span<const std::byte> bytes, wire_error& error);

// Where a response body starts: after the correlation id, and after the header's tagged
// fields for flexible versions (header v1).
std::optional<uint32_t> response_body_offset(std::span<const std::byte> bytes, int16_t api_key, int16_t api_version);

}  // namespace kpp::protocol
