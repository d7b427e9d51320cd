// Generated-message helpers shared by the exchanges and the offset store: send a request
// the proxy built from a decoded message, encode a response the proxy answers with, decode
// a broker's answer. Kept apart from exchange.h so only their users pull in every message.
#pragma once

#include <optional>
#include <vector>

#include "protocol/kpp_messages.h"
#include "proxy/exchange.h"

namespace kpp::exchange_util {

// Encodes `message` at `version` and sends it upstream after the client's header tail.
template <typename message_type>
void send_message(exchange_env& env, const reactor::byte_slice& header_tail, int16_t api_key, int16_t version,
                  const message_type& message) {
    protocol::wire_writer writer;
    protocol::messages::encode(message, version, writer);
    uint32_t length = uint32_t(writer.size());
    std::vector<reactor::byte_slice> body{reactor::byte_slice{reactor::shared_bytes::copy_of(writer.bytes()), 0, length}};
    send_upstream(env, api_key, version, header_tail, std::move(body), true);
}

// The client's response (everything after the correlation id) holding `message`.
template <typename message_type>
std::vector<reactor::byte_slice> encode_response(int16_t api_key, int16_t version, const message_type& message) {
    protocol::wire_writer writer;
    protocol::messages::encode(message, version, writer);
    return response_pieces(api_key, version, std::move(writer.bytes()));
}

// A broker's answer decoded; nullopt when it does not decode (callers say so in a log line).
template <typename message_type>
std::optional<message_type> decode_response(const protocol::frame& response, int16_t api_key, int16_t version) {
    auto body = response_body(response, api_key, version);
    message_type decoded;
    if (body && protocol::messages::decode(decoded, version, body->span()) == protocol::wire_error::none)
        return decoded;
    return std::nullopt;
}

}  // namespace kpp::exchange_util
