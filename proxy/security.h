// TLS contexts from the configuration (DESIGN.md section 6): the listener's (toward
// clients, listen.security.*) and the one every upstream connection uses (toward brokers,
// kafka.security_protocol and kafka.tls.*: client sessions, discovery, the offset store).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "proxy/config.h"
#include "proxy/sasl_client.h"
#include "reactor/tls.h"

namespace kpp {

// nullptr with an empty `error` when the side is not TLS; nullptr with `error` naming the
// key (e.g. "listen.security.tls.key_path: ...") when the context cannot be built.
std::shared_ptr<reactor::tls_context> listener_tls_context(const proxy_config& config, std::string& error);
std::shared_ptr<reactor::tls_context> broker_tls_context(const proxy_config& config, std::string& error);

// The proxy's own SASL identity toward brokers (kafka.sasl.*, kafka.security_protocol
// SASL_*): every upstream connection authenticates with it. Immutable; a reload makes a new one.
struct broker_sasl {
    std::string mechanism, username, password;
    std::shared_ptr<sasl::token_file> token;  // OAUTHBEARER: re-read when the file changes

    std::unique_ptr<sasl::client_mechanism> start() const;
    // "SASL SCRAM-SHA-512 authentication as 'kpp'": how failures toward brokers begin.
    std::string describe() const;
};

// nullptr with an empty `error` when the brokers are not SASL; `error` names the key when the
// identity cannot be used (an unreadable token file).
std::shared_ptr<const broker_sasl> broker_sasl_identity(const proxy_config& config, std::string& error);

// The two SASL requests the proxy sends brokers, as the bytes after the correlation id
// (client id, then the body): SaslHandshake v1 and SaslAuthenticate v1 (non-flexible, so
// no ApiVersions round trip is needed first; every broker since Kafka 2.2 takes both).
inline constexpr int16_t sasl_handshake_version = 1;
inline constexpr int16_t sasl_authenticate_version = 1;
inline constexpr int16_t api_key_sasl_authenticate = 36;
std::vector<std::byte> sasl_handshake_request_tail(const std::string& mechanism);
std::vector<std::byte> sasl_authenticate_request_tail(std::span<const uint8_t> auth_bytes);

// A broker's answer to either, from the body after the correlation id.
struct sasl_answer {
    int16_t error_code = 0;
    std::string error_message;
    std::vector<uint8_t> auth_bytes;
    int64_t session_lifetime_ms = 0;
    std::vector<std::string> mechanisms;  // SaslHandshake
    bool malformed = false;
};
sasl_answer parse_sasl_handshake_response(std::span<const std::byte> body);
sasl_answer parse_sasl_authenticate_response(std::span<const std::byte> body);
// Why a broker refused, in the words every upstream connection logs: a SaslHandshake error
// names the mechanisms the broker offers, a SaslAuthenticate error its message.
std::string sasl_handshake_refusal(const broker_sasl& identity, const sasl_answer& handshake);
std::string sasl_authenticate_refusal(const sasl_answer& answer);

// When to re-authenticate a broker session (KIP-368): at 85-95% of its lifetime, spread so
// that the connections opened together do not all re-authenticate at once.
uint64_t reauthentication_delay_ms(int64_t session_lifetime_ms);

}  // namespace kpp
