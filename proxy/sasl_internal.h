// Helpers of sasl.cc that the client mechanisms in sasl_client.cc share, so the SCRAM key
// schedule and message parsing exist once. Internal to proxy/sasl*.cc.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <optional>
#include <string>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/sasl.h"

namespace kpp::sasl {

const EVP_MD* digest_of(scram_hash hash);
std::vector<uint8_t> hmac(scram_hash hash, std::span<const uint8_t> key, std::string_view data);
std::vector<uint8_t> digest(scram_hash hash, std::span<const uint8_t> data);

// The attributes of a SCRAM message, in order ("r=nonce", "s=salt", ...); empty when malformed.
std::vector<std::pair<char, std::string_view>> attributes_of(std::string_view text);

// RFC 5802 / RFC 5801 saslname: "=2C" is ',' and "=3D" is '='; any other '=' or a raw ','
// is malformed (nullopt). SCRAM user names and OAUTHBEARER's authzid use it.
std::optional<std::string> decode_saslname(std::string_view text);

// A SCRAM nonce: printable ASCII without ','.
bool printable_nonce(std::string_view nonce);

}  // namespace kpp::sasl
