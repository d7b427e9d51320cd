// SASL toward clients (DESIGN.md section 6): what a SASL listener checks credentials against
// (built from the configuration, rebuilt on reload), and the per-connection authenticator
// that answers SaslHandshake and SaslAuthenticate itself (they never reach a broker) and
// tells the session whether a request may pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "proxy/config.h"
#include "proxy/sasl.h"

namespace kpp {

struct shard_metrics;

// Immutable once built; sessions keep the one they started with, so a reload that replaces
// it never changes an exchange half-way.
struct sasl_listener {
    std::vector<std::string> mechanisms;  // as enabled, in the configured order
    std::map<std::string, std::string, std::less<>> passwords;
    std::map<std::pair<sasl::scram_hash, std::string>, sasl::scram_credential, std::less<>> scram;
    sasl::credential_store store;  // looks up the two tables above
    // OAUTHBEARER: makes a mechanism for one exchange, and reads the expiry of the token it
    // accepted (unix seconds); empty when OAUTHBEARER is not enabled.
    std::function<std::unique_ptr<sasl::mechanism>()> make_oauthbearer;
    std::function<std::optional<int64_t>(const sasl::mechanism&)> oauth_expiry;
    uint64_t session_lifetime_ms = 0;
    uint32_t failed_authentication_delay_ms = 100;
};

// nullptr with an empty `error` when the listener is not SASL; nullptr with `error` naming
// the key when something cannot be read (credentials file, OAUTHBEARER keys).
std::shared_ptr<const sasl_listener> build_sasl_listener(const proxy_config& config, std::string& error);

class client_authenticator {
public:
    client_authenticator(std::shared_ptr<const sasl_listener> listener, std::string peer, shard_metrics& metrics);

    // What the session does with a SASL request.
    struct outcome {
        std::vector<std::byte> body;  // the response body (after the response header), or the raw token
        bool delay_then_close = false;  // a failed attempt: answer after the delay, then close
        bool close = false;             // close without answering (a raw v0 exchange failed)
    };

    bool authenticated() const { return authenticated_; }
    const std::string& principal() const { return principal_; }
    // After SaslHandshake v0 the next frames are bare SASL tokens, not Kafka requests.
    bool expects_raw_token() const { return raw_tokens_; }
    // Monotonic deadline of the session (0: none): past it only a re-authentication passes.
    uint64_t expiry_ns() const { return expiry_ns_; }
    bool expired(uint64_t now_ns) const { return expiry_ns_ != 0 && now_ns >= expiry_ns_; }
    uint32_t failure_delay_ms() const { return listener_->failed_authentication_delay_ms; }

    outcome handshake(std::span<const std::byte> body, int16_t version);
    outcome authenticate(std::span<const std::byte> body, int16_t version, uint64_t now_ns);
    outcome raw_token(std::span<const std::byte> token, uint64_t now_ns);

private:
    struct step_answer {
        int16_t error_code = 0;
        std::vector<uint8_t> bytes;
        int64_t session_lifetime_ms = 0;
        bool failed = false;
    };
    step_answer step(std::span<const uint8_t> message, uint64_t now_ns);
    void count(bool ok);

    std::shared_ptr<const sasl_listener> listener_;
    std::string peer_;
    shard_metrics& metrics_;
    std::unique_ptr<sasl::mechanism> mechanism_;
    std::string mechanism_name_;
    std::string principal_;
    uint64_t expiry_ns_ = 0;
    bool authenticated_ = false;
    bool raw_tokens_ = false;
};

// The ApiVersions response body (after the response header) the proxy gives a client that
// has not authenticated yet: the ranges learnt from the cluster at start-up, narrowed as
// forwarded ApiVersions responses are, with SaslHandshake v0-1 and SaslAuthenticate v0-2.
// Versions above 3 get UNSUPPORTED_VERSION with the proxy's ApiVersions range, as brokers do.
std::vector<std::byte> api_versions_answer(const std::map<int16_t, std::pair<int16_t, int16_t>>& broker_ranges,
                                           int16_t version, const std::function<bool(int16_t)>& withheld);

}  // namespace kpp
