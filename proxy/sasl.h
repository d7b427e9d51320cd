// SASL server mechanisms toward clients (DESIGN.md section 6): PLAIN (RFC 4616) and
// SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), as the exchanges of SaslAuthenticate
// carry them. Pure: the messages in, the answers and the outcome out; no I/O, no clock.
// Secrets are compared in constant time and never appear in an error text.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kpp::sasl {

enum class scram_hash : uint8_t { sha256, sha512 };

// What the proxy keeps per SCRAM user: never the password once derived.
struct scram_credential {
    std::vector<uint8_t> salt;
    uint32_t iterations = 4096;
    std::vector<uint8_t> stored_key;  // H(ClientKey)
    std::vector<uint8_t> server_key;  // HMAC(SaltedPassword, "Server Key")
};

// Derives the stored and server keys from a password (PBKDF2-HMAC with the hash).
scram_credential derive_scram_credential(scram_hash hash, std::string_view password, std::span<const uint8_t> salt,
                                         uint32_t iterations);

// Looks a user up; the answers are copied, so a reload may replace the store meanwhile.
struct credential_store {
    std::function<std::optional<std::string>(std::string_view user)> password;  // PLAIN (and SCRAM when no keys)
    std::function<std::optional<scram_credential>(scram_hash hash, std::string_view user)> scram;
};

enum class step_status : uint8_t {
    continue_exchange,  // send `response`, expect another SaslAuthenticate
    succeeded,          // send `response` (may be empty); the client is `user`
    failed,             // answer SASL_AUTHENTICATION_FAILED with a generic message
};

struct step_result {
    step_status status = step_status::failed;
    std::vector<uint8_t> response;
    std::string user;    // the user as far as known (for the log line), also on failure
    std::string reason;  // why it failed, for the log (never a secret)
};

class mechanism {
public:
    virtual ~mechanism() = default;
    virtual step_result step(std::span<const uint8_t> message) = 0;
};

// "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"; nullptr for any other name. `nonce` makes the
// server's SCRAM nonce part (tests pass a fixed one; empty: random).
std::unique_ptr<mechanism> make_mechanism(std::string_view name, const credential_store& store,
                                          std::string nonce = {});

// Constant time in the length of `expected`.
bool equal_secret(std::span<const uint8_t> given, std::span<const uint8_t> expected);

std::string base64_encode(std::span<const uint8_t> bytes);
std::optional<std::vector<uint8_t>> base64_decode(std::string_view text);

}  // namespace kpp::sasl
