#include "protocol/header.h"

#include "protocol/api.h"

namespace kpp::protocol {

std::optional<request_header> peek_request_header(const frame& body) {
    std::array<std::byte, request_header_fixed_bytes> raw{};
    if (body.copy_out(0, raw) < raw.size()) return std::nullopt;
    return request_header{load_int16_be(raw.data()), load_int16_be(raw.data() + 2), load_int32_be(raw.data() + 4)};
}

std::optional<parsed_request_header> parse_request_header(std::span<const std::byte> bytes, wire_error& error) {
    wire_reader reader(bytes);
    parsed_request_header header;
    header.fixed.api_key = reader.read_int16();
    header.fixed.api_version = reader.read_int16();
    header.fixed.correlation_id = reader.read_int32();
    // client_id is a classic nullable string even in header v2.
    header.client_id = reader.read_string(false, true);
    if (request_header_is_flexible(header.fixed.api_key, header.fixed.api_version)) reader.skip_tagged_fields();
    if (!reader.ok()) {
        error = reader.error();
        return std::nullopt;
    }
    header.header_bytes = static_cast<uint32_t>(reader.position());
    return header;
}

std::optional<uint32_t> response_body_offset(std::span<const std::byte> bytes, int16_t api_key, int16_t api_version) {
    wire_reader reader(bytes);
    reader.read_int32();
    if (response_header_is_flexible(api_key, api_version)) reader.skip_tagged_fields();
    if (!reader.ok()) return std::nullopt;
    return static_cast<uint32_t>(reader.position());
}

}  // namespace kpp::protocol
