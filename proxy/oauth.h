// SASL OAUTHBEARER toward clients (RFC 7628, as Kafka's SaslAuthenticate carries it) with the
// bearer token checked locally as a JWT (RFC 7519) signed with RS256 or ES256 (RFC 7518).
// The keys come from a PEM file or a JWKS document read at start-up or reload; validating a
// token does no I/O and reads the time from the caller. No token, signature or key material
// ever appears in an error text.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/sasl.h"

namespace kpp::oauth {

// A token longer than this is refused before it is decoded: real ones are a few KiB.
inline constexpr size_t token_bytes_max = 16 * 1024;
// The whole client message: the token plus the GS2 header and a few extensions.
inline constexpr size_t message_bytes_max = token_bytes_max + 4 * 1024;
static_assert(message_bytes_max > token_bytes_max);
// A JWT header or claims set nested deeper than this is refused (legitimate ones are 2-3 deep).
inline constexpr size_t token_json_depth_max = 8;
// A key file larger than this is refused; a JWKS with dozens of keys is still far below it.
inline constexpr size_t key_file_bytes_max = 1024 * 1024;
// Smaller RSA moduli are refused: NIST has disallowed them for signatures since 2013.
inline constexpr int rsa_key_bits_min = 2048;
// Every key may be tried against a token without a kid, so their number is bounded.
inline constexpr size_t key_count_max = 64;

enum class key_type : uint8_t { rsa, ec_p256 };

struct public_key {
    key_type type = key_type::rsa;
    std::string kid;  // empty when the file names none (PEM, or a JWK without "kid")
    std::string alg;  // the JWK's "alg" (RS256 or ES256); empty: whichever fits the type
    std::shared_ptr<EVP_PKEY> key;
};

// Immutable once loaded; a reload builds a new set and swaps the shared pointer.
struct key_set {
    std::vector<public_key> keys;
};

// Reads a PEM file (PUBLIC KEY and/or CERTIFICATE blocks) or a JWKS JSON document, told
// apart by the content. nullopt with `error` naming the file's fault ("key 2 (kid abc):
// unsupported curve P-384") when any key cannot be used: a half-loaded set would refuse
// tokens for reasons no log line explains. JWKS keys with "use":"enc" are skipped.
std::optional<key_set> load_keys(const std::string& path, std::string& error);
// The same from the file's content, for callers that hold it already (and tests).
std::optional<key_set> parse_keys(std::string_view content, std::string& error);

struct settings {
    std::string issuer;                        // "iss" must equal it; empty: not checked
    std::string audience;                      // "aud" (string or array) must hold it; empty: not checked
    std::vector<std::string> required_scopes;  // each must be in "scope" or "scp"
    int64_t clock_skew_seconds = 60;           // tolerance on exp and nbf; negative counts as 0
};

struct validation {
    bool ok = false;
    std::string principal;        // "sub"
    int64_t expires_at_unix = 0;  // "exp", without the skew: a session must not outlive it
    std::string reason;           // why it was refused, for the log (never the token)
};

// Checks a compact JWS: its form, the alg (RS256 or ES256 only), the signature, then the
// claims sub, exp, nbf, iss, aud and scopes; the first fault names the reason. A header kid
// picks the keys with that kid; keys without one (PEM files) are tried for every token.
// iat is not looked at.
validation validate(std::string_view jwt, const key_set& keys, const settings& rules, int64_t now_unix_seconds);

// One OAUTHBEARER exchange: a single client message, then success or failure. A failure
// is final (the RFC 7628 error round trip is not offered; Kafka clients give up anyway).
class oauthbearer_mechanism final : public sasl::mechanism {
public:
    oauthbearer_mechanism(std::shared_ptr<const key_set> keys, settings rules, std::function<int64_t()> now);

    sasl::step_result step(std::span<const uint8_t> message) override;

    // The token's exp once the exchange succeeded: the session must end by then (KIP-368).
    std::optional<int64_t> session_expiry_unix() const { return session_expiry_unix_; }

private:
    std::shared_ptr<const key_set> keys_;
    settings rules_;
    std::function<int64_t()> now_;
    bool done_ = false;
    std::optional<int64_t> session_expiry_unix_;
};

// `now` gives the Unix time in seconds; empty: the system clock. The result is an
// oauthbearer_mechanism (dynamic_cast to read session_expiry_unix()).
std::unique_ptr<sasl::mechanism> make_oauthbearer(std::shared_ptr<const key_set> keys, settings rules,
                                                  std::function<int64_t()> now);

}  // namespace kpp::oauth
