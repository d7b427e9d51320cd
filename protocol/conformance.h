// Checks a whole request or response body against its generated walker: used by the
// proxy's verification mode (KPP_VERIFY_PROTOCOL=1) so end-to-end runs with real clients
// and brokers prove the schema files right, message by message.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "protocol/frame.h"

namespace kpp::protocol {

struct conformance_problem {
    // A message the schema cannot walk is a mismatch. One that walks completely and leaves
    // bytes over is reported apart: librdkafka 2.12 (client and mock alike) appends bytes
    // after Metadata v12 requests and responses, which every peer ignores.
    bool trailing_bytes_only = false;
    std::string text;
};

// `message` starts after the 4-byte size: at the request header or at the response's
// correlation id. nullopt when the message walks to exactly its end, or when its API and
// version have no schema (not an error: it is forwarded untouched).
std::optional<conformance_problem> check_request(std::span<const std::byte> message);
std::optional<conformance_problem> check_response(std::span<const std::byte> message, int16_t api_key,
                                                  int16_t api_version);

// The data-path check of a client request lying in receive buffers (no copy of its body):
// an API with a schema must walk without error; bytes left after a complete walk are
// allowed (some clients send them). Returns why the request is malformed, or nullopt.
std::optional<std::string> validate_request(const frame& request);

}  // namespace kpp::protocol
