#include "proxy/oauth.h"
#include "proxy/sasl_internal.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

namespace kpp::oauth {
namespace {

using sasl::step_result;
using sasl::step_status;

template <typename T, void (*release)(T*)>
struct openssl_deleter {
    void operator()(T* object) const { release(object); }
};
struct openssl_memory_deleter {
    void operator()(void* memory) const { OPENSSL_free(memory); }
};
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO, BIO_free_all>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, openssl_deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, openssl_deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BIGNUM, BN_free>>;
using param_bld_ptr = std::unique_ptr<OSSL_PARAM_BLD, openssl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using params_ptr = std::unique_ptr<OSSL_PARAM, openssl_deleter<OSSL_PARAM, OSSL_PARAM_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, openssl_deleter<ECDSA_SIG, ECDSA_SIG_free>>;

// A JWKS nests keys inside an array inside the root object; some carry x5c arrays.
constexpr size_t jwks_json_depth_max = 16;
constexpr size_t ec_p256_coordinate_bytes = 32;
// Claims copied into a log reason are cut to this.
constexpr size_t logged_claim_bytes_max = 128;

std::span<const uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::string_view text_of(std::span<const uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Text from a token or a key file, made safe for a log line: cut short, controls replaced.
std::string loggable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, logged_claim_bytes_max)) out += (c >= 0x20 && c != 0x7f) ? c : '?';
    if (text.size() > logged_claim_bytes_max) out += "...";
    return out;
}

// RFC 7515 section 2: the URL-safe alphabet, no padding, no white space. The unused low
// bits of the last character must be zero, so each byte string has exactly one text.
std::optional<std::string> base64url_decode(std::string_view text) {
    if (text.size() % 4 == 1) return std::nullopt;
    auto value_of = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '-') return 62;
        if (c == '_') return 63;
        return -1;
    };
    std::string out;
    out.reserve(text.size() / 4 * 3 + 2);
    uint32_t buffer = 0;
    int bits = 0;
    for (char c : text) {
        int value = value_of(c);
        if (value < 0) return std::nullopt;
        buffer = (buffer << 6 | uint32_t(value)) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += char((buffer >> bits) & 0xff);
        }
    }
    if ((buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
    return out;
}

// Token dates are attacker-chosen numbers; time arithmetic on them must not overflow.
int64_t saturating_add(int64_t a, int64_t b) {
    int64_t sum = 0;
    if (!__builtin_add_overflow(a, b, &sum)) return sum;
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
}

int64_t saturating_sub(int64_t a, int64_t b) {
    int64_t difference = 0;
    if (!__builtin_sub_overflow(a, b, &difference)) return difference;
    return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
}


// Which of the supported kinds a key is; nullopt with `error` for any other.
std::optional<key_type> type_of(EVP_PKEY* key, std::string& error) {
    if (EVP_PKEY_is_a(key, "RSA")) {
        int bits = EVP_PKEY_get_bits(key);
        if (bits < rsa_key_bits_min) {
            error = "RSA key of " + std::to_string(bits) + " bits is too small (minimum " +
                    std::to_string(rsa_key_bits_min) + ")";
            return std::nullopt;
        }
        return key_type::rsa;
    }
    if (EVP_PKEY_is_a(key, "EC")) {
        char group[80] = {};
        size_t length = 0;
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &length) != 1) {
            ERR_clear_error();
            error = "EC key without a named curve";
            return std::nullopt;
        }
        if (OBJ_sn2nid(group) != NID_X9_62_prime256v1 && EC_curve_nist2nid(group) != NID_X9_62_prime256v1) {
            error = "unsupported curve " + loggable(group) + " (only P-256)";
            return std::nullopt;
        }
        // The point must lie on the curve: a bogus one can leak nothing here, but it marks a broken file.
        pkey_ctx_ptr context(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
        if (!context || EVP_PKEY_public_check(context.get()) != 1) {
            ERR_clear_error();
            error = "EC public point is not on P-256";
            return std::nullopt;
        }
        return key_type::ec_p256;
    }
    const char* name = EVP_PKEY_get0_type_name(key);
    error = std::string("unsupported key type ") + (name ? name : "(unknown)") + " (only RSA and EC P-256)";
    return std::nullopt;
}

std::shared_ptr<EVP_PKEY> shared_key(pkey_ptr key) { return {key.release(), EVP_PKEY_free}; }

// A PUBLIC KEY block is a SubjectPublicKeyInfo. A CERTIFICATE only carries the key: its
// dates and chain are not checked, since trust comes from whoever installed the file.
std::optional<key_set> parse_pem(std::string_view content, std::string& error) {
    bio_ptr bio(BIO_new_mem_buf(content.data(), int(content.size())));
    if (!bio) {
        error = "out of memory";
        return std::nullopt;
    }
    key_set out;
    for (size_t block = 1;; ++block) {
        char* name = nullptr;
        char* header = nullptr;
        unsigned char* data = nullptr;
        long length = 0;
        if (PEM_read_bio(bio.get(), &name, &header, &data, &length) != 1) {
            // The end of the input reads as "no start line"; anything else is a damaged block.
            unsigned long code = ERR_peek_last_error();
            ERR_clear_error();
            if (ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE) break;
            error = "PEM block " + std::to_string(block) + ": malformed";
            return std::nullopt;
        }
        std::unique_ptr<char, openssl_memory_deleter> name_owner(name), header_owner(header);
        std::unique_ptr<unsigned char, openssl_memory_deleter> data_owner(data);
        std::string label = "PEM block " + std::to_string(block);
        if (block > key_count_max) {
            error = "more than " + std::to_string(key_count_max) + " keys";
            return std::nullopt;
        }
        const unsigned char* cursor = data;
        pkey_ptr key;
        if (std::strcmp(name, "PUBLIC KEY") == 0) {
            key.reset(d2i_PUBKEY(nullptr, &cursor, length));
        } else if (std::strcmp(name, "CERTIFICATE") == 0) {
            x509_ptr certificate(d2i_X509(nullptr, &cursor, length));
            if (certificate) key.reset(X509_get_pubkey(certificate.get()));
        } else {
            error = label + ": unsupported type " + loggable(name) + " (only PUBLIC KEY and CERTIFICATE)";
            return std::nullopt;
        }
        if (!key || cursor != data + length) {
            ERR_clear_error();
            error = label + " (" + name + "): malformed";
            return std::nullopt;
        }
        std::optional<key_type> type = type_of(key.get(), error);
        if (!type) {
            error = label + ": " + error;
            return std::nullopt;
        }
        out.keys.push_back(public_key{*type, {}, {}, shared_key(std::move(key))});
    }
    if (out.keys.empty()) {
        error = "no PUBLIC KEY or CERTIFICATE block";
        return std::nullopt;
    }
    return out;
}

// Builds a key from its parameters (OpenSSL 3 provider form, no deprecated per-type APIs).
pkey_ptr key_from_params(const char* type, OSSL_PARAM_BLD* builder) {
    params_ptr params(OSSL_PARAM_BLD_to_param(builder));
    pkey_ctx_ptr context(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
    EVP_PKEY* key = nullptr;
    if (!params || !context || EVP_PKEY_fromdata_init(context.get()) != 1 ||
        EVP_PKEY_fromdata(context.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
        ERR_clear_error();
        return nullptr;
    }
    return pkey_ptr(key);
}

// A base64url member of a JWK, decoded; nullopt with `error` naming it when absent or bad.
std::optional<std::string> jwk_bytes(const simdjson::dom::object& jwk, const char* member, std::string& error) {
    std::string_view text;
    if (jwk.at_key(member).get_string().get(text) != simdjson::SUCCESS) {
        error = std::string("no \"") + member + "\" string";
        return std::nullopt;
    }
    std::optional<std::string> bytes = base64url_decode(text);
    if (!bytes || bytes->empty()) {
        error = std::string("\"") + member + "\" is not base64url";
        return std::nullopt;
    }
    return bytes;
}

pkey_ptr rsa_key_of(const simdjson::dom::object& jwk, std::string& error) {
    std::optional<std::string> modulus = jwk_bytes(jwk, "n", error);
    if (!modulus) return nullptr;
    std::optional<std::string> exponent = jwk_bytes(jwk, "e", error);
    if (!exponent) return nullptr;
    bignum_ptr n(BN_bin2bn(bytes_of(*modulus).data(), int(modulus->size()), nullptr));
    bignum_ptr e(BN_bin2bn(bytes_of(*exponent).data(), int(exponent->size()), nullptr));
    param_bld_ptr builder(OSSL_PARAM_BLD_new());
    if (!n || !e || !builder || OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
        ERR_clear_error();
        error = "cannot build the RSA key";
        return nullptr;
    }
    pkey_ptr key = key_from_params("RSA", builder.get());
    if (!key) error = "invalid RSA parameters";
    return key;
}

pkey_ptr ec_key_of(const simdjson::dom::object& jwk, std::string& error) {
    std::string_view curve;
    if (jwk.at_key("crv").get_string().get(curve) != simdjson::SUCCESS) {
        error = "no \"crv\" string";
        return nullptr;
    }
    if (curve != "P-256") {
        error = "unsupported curve " + loggable(curve) + " (only P-256)";
        return nullptr;
    }
    std::optional<std::string> x = jwk_bytes(jwk, "x", error);
    if (!x) return nullptr;
    std::optional<std::string> y = jwk_bytes(jwk, "y", error);
    if (!y) return nullptr;
    // RFC 7518 section 6.2.1.2: each coordinate is the full length of the field.
    if (x->size() != ec_p256_coordinate_bytes || y->size() != ec_p256_coordinate_bytes) {
        error = "\"x\" and \"y\" must be 32 bytes each for P-256";
        return nullptr;
    }
    std::string point = "\x04" + *x + *y;  // SEC 1 uncompressed form
    param_bld_ptr builder(OSSL_PARAM_BLD_new());
    if (!builder || OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
        ERR_clear_error();
        error = "cannot build the EC key";
        return nullptr;
    }
    pkey_ptr key = key_from_params("EC", builder.get());
    if (!key) error = "EC public point is not on P-256";
    return key;
}

// One JWK; nullopt with an empty `error` for a key to skip (encryption keys).
std::optional<public_key> jwk_key(const simdjson::dom::element& item, std::string& error) {
    simdjson::dom::object jwk;
    if (item.get_object().get(jwk) != simdjson::SUCCESS) {
        error = "not a JSON object";
        return std::nullopt;
    }
    public_key out;
    std::string_view text;
    if (jwk.at_key("kid").get_string().get(text) == simdjson::SUCCESS) out.kid = std::string(text);
    std::string_view use;
    if (jwk.at_key("use").get_string().get(use) == simdjson::SUCCESS && use != "sig") {
        // An IdP often publishes its encryption key beside the signing ones.
        if (use == "enc") return std::nullopt;
        error = "unsupported \"use\" " + loggable(use);
        return std::nullopt;
    }
    std::string_view kty;
    if (jwk.at_key("kty").get_string().get(kty) != simdjson::SUCCESS) {
        error = "no \"kty\" string";
        return std::nullopt;
    }
    pkey_ptr key;
    if (kty == "RSA") {
        out.type = key_type::rsa;
        key = rsa_key_of(jwk, error);
    } else if (kty == "EC") {
        out.type = key_type::ec_p256;
        key = ec_key_of(jwk, error);
    } else {
        error = "unsupported key type " + loggable(kty) + " (only RSA and EC P-256)";
        return std::nullopt;
    }
    if (!key) return std::nullopt;
    std::optional<key_type> checked = type_of(key.get(), error);
    if (!checked) return std::nullopt;
    if (jwk.at_key("alg").get_string().get(text) == simdjson::SUCCESS) {
        std::string_view fits = out.type == key_type::rsa ? "RS256" : "ES256";
        if (text != fits) {
            error = "unsupported alg " + loggable(text) + " for a " + std::string(kty) + " key (only " +
                    std::string(fits) + ")";
            return std::nullopt;
        }
        out.alg = std::string(text);
    }
    out.key = shared_key(std::move(key));
    return out;
}

std::optional<key_set> parse_jwks(std::string_view content, std::string& error) {
    simdjson::dom::parser parser;
    if (parser.allocate(content.size(), jwks_json_depth_max) != simdjson::SUCCESS) {
        error = "out of memory";
        return std::nullopt;
    }
    simdjson::dom::element root;
    if (auto code = parser.parse(content.data(), content.size()).get(root); code != simdjson::SUCCESS) {
        error = std::string("not valid JSON: ") + simdjson::error_message(code);
        return std::nullopt;
    }
    simdjson::dom::array items;
    if (root.at_key("keys").get_array().get(items) != simdjson::SUCCESS) {
        error = "JWKS without a \"keys\" array";
        return std::nullopt;
    }
    if (items.size() > key_count_max) {
        error = "more than " + std::to_string(key_count_max) + " keys";
        return std::nullopt;
    }
    key_set out;
    size_t index = 0;
    for (simdjson::dom::element item : items) {
        ++index;
        std::string key_error;
        std::optional<public_key> key = jwk_key(item, key_error);
        if (key) {
            out.keys.push_back(std::move(*key));
            continue;
        }
        if (key_error.empty()) continue;  // skipped on purpose
        std::string label = "key " + std::to_string(index);
        std::string_view kid;
        if (item.at_key("kid").get_string().get(kid) == simdjson::SUCCESS) label += " (kid " + loggable(kid) + ")";
        error = label + ": " + key_error;
        return std::nullopt;
    }
    if (out.keys.empty()) {
        error = "JWKS without a signing key";
        return std::nullopt;
    }
    return out;
}


validation refusal(std::string reason) {
    validation out;
    out.reason = std::move(reason);
    return out;
}

// Parses a JOSE header or a claims set. A member given twice is refused: parsers disagree
// on which one counts, so the IdP and this proxy could read different claims.
bool parse_object(simdjson::dom::parser& parser, std::string_view json, simdjson::dom::object& out) {
    if (parser.parse(json.data(), json.size()).get_object().get(out) != simdjson::SUCCESS) return false;
    std::vector<std::string_view> names;
    for (simdjson::dom::key_value_pair member : out) names.push_back(member.key);
    std::sort(names.begin(), names.end());
    return std::adjacent_find(names.begin(), names.end()) == names.end();
}

struct numeric_date {
    bool present = false;
    bool valid = false;
    int64_t seconds = 0;
};

// RFC 7519 section 2 NumericDate: seconds, maybe fractional (rounded down); out-of-range
// values saturate, so a date far in the future stays in the future.
numeric_date numeric_date_of(const simdjson::dom::object& claims, const char* name) {
    numeric_date out;
    simdjson::dom::element value;
    if (claims.at_key(name).get(value) != simdjson::SUCCESS) return out;
    out.present = true;
    int64_t whole = 0;
    double fractional = 0;
    if (value.get_int64().get(whole) == simdjson::SUCCESS) {
        out.valid = true;
        out.seconds = whole;
    } else if (value.is_uint64()) {
        out.valid = true;
        out.seconds = std::numeric_limits<int64_t>::max();
    } else if (value.get_double().get(fractional) == simdjson::SUCCESS) {
        out.valid = true;
        if (fractional >= 9.2e18) out.seconds = std::numeric_limits<int64_t>::max();
        else if (fractional <= -9.2e18) out.seconds = std::numeric_limits<int64_t>::min();
        else out.seconds = int64_t(std::floor(fractional));
    }
    return out;
}

// Appends the space-separated scopes of a string, or the strings of an array.
bool collect_scopes(const simdjson::dom::element& value, std::set<std::string_view>& scopes) {
    auto split = [&scopes](std::string_view text) {
        size_t at = 0;
        while (at < text.size()) {
            size_t end = std::min(text.find(' ', at), text.size());
            if (end > at) scopes.insert(text.substr(at, end - at));
            at = end + 1;
        }
    };
    std::string_view text;
    if (value.get_string().get(text) == simdjson::SUCCESS) {
        split(text);
        return true;
    }
    simdjson::dom::array items;
    if (value.get_array().get(items) != simdjson::SUCCESS) return false;
    for (simdjson::dom::element item : items) {
        if (item.get_string().get(text) != simdjson::SUCCESS) return false;
        scopes.insert(text);
    }
    return true;
}

// JWS carries ECDSA as raw r||s (RFC 7518 section 3.4); OpenSSL verifies the DER form.
std::optional<std::vector<uint8_t>> ecdsa_der_of(std::span<const uint8_t> raw) {
    if (raw.size() != 2 * ec_p256_coordinate_bytes) return std::nullopt;
    ecdsa_sig_ptr signature(ECDSA_SIG_new());
    BIGNUM* r = BN_bin2bn(raw.data(), int(ec_p256_coordinate_bytes), nullptr);
    BIGNUM* s = BN_bin2bn(raw.data() + ec_p256_coordinate_bytes, int(ec_p256_coordinate_bytes), nullptr);
    if (!signature || !r || !s || ECDSA_SIG_set0(signature.get(), r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return std::nullopt;
    }
    int length = i2d_ECDSA_SIG(signature.get(), nullptr);
    if (length <= 0) return std::nullopt;
    std::vector<uint8_t> der(size_t(length), 0);
    unsigned char* cursor = der.data();
    if (i2d_ECDSA_SIG(signature.get(), &cursor) != length) return std::nullopt;
    return der;
}

bool signature_verifies(EVP_PKEY* key, key_type type, std::string_view signing_input,
                        std::span<const uint8_t> signature) {
    std::optional<std::vector<uint8_t>> der;
    if (type == key_type::ec_p256) {
        der = ecdsa_der_of(signature);
        if (!der) return false;
        signature = *der;
    }
    md_ctx_ptr context(EVP_MD_CTX_new());
    bool verified = context && EVP_DigestVerifyInit(context.get(), nullptr, EVP_sha256(), nullptr, key) == 1 &&
                    EVP_DigestVerify(context.get(), signature.data(), signature.size(),
                                     bytes_of(signing_input).data(), signing_input.size()) == 1;
    // A failed check leaves errors queued, and the TLS code on this thread reads that queue.
    ERR_clear_error();
    return verified;
}

struct jose_header {
    std::string alg;
    std::string kid;
};

std::optional<jose_header> header_of(simdjson::dom::parser& parser, std::string_view json, std::string& reason) {
    simdjson::dom::object header;
    if (!parse_object(parser, json, header)) {
        reason = "header is not a JSON object with unique members";
        return std::nullopt;
    }
    jose_header out;
    std::string_view text;
    if (header.at_key("alg").get_string().get(text) != simdjson::SUCCESS) {
        reason = "header without an alg string";
        return std::nullopt;
    }
    out.alg = std::string(text);
    // Only the algorithms a key here can hold; above all never "none" nor an HMAC, whose
    // secret would be taken from the public key by a confused verifier.
    if (out.alg != "RS256" && out.alg != "ES256") {
        reason = "alg " + loggable(out.alg) + " not accepted (only RS256 and ES256)";
        return std::nullopt;
    }
    simdjson::dom::element value;
    if (header.at_key("kid").get(value) == simdjson::SUCCESS) {
        if (value.get_string().get(text) != simdjson::SUCCESS) {
            reason = "kid is not a string";
            return std::nullopt;
        }
        out.kid = std::string(text);
    }
    // RFC 7515 section 4.1.11: extensions the verifier does not know must fail the token.
    if (header.at_key("crit").get(value) == simdjson::SUCCESS) {
        reason = "crit header extensions not supported";
        return std::nullopt;
    }
    return out;
}

// Tries the keys the header allows: a kid picks the keys with that kid, keys named by none
// (PEM files) are tried for any token, and the key's type and alg must fit the header's.
std::optional<std::string> check_signature(const jose_header& header, const key_set& keys,
                                           std::string_view signing_input, std::span<const uint8_t> signature) {
    key_type wanted = header.alg == "RS256" ? key_type::rsa : key_type::ec_p256;
    bool tried = false;
    for (const public_key& key : keys.keys) {
        if (key.type != wanted || !key.key) continue;
        if (!key.alg.empty() && key.alg != header.alg) continue;
        if (!header.kid.empty() && !key.kid.empty() && key.kid != header.kid) continue;
        tried = true;
        if (signature_verifies(key.key.get(), key.type, signing_input, signature)) return std::nullopt;
    }
    if (!tried) {
        if (!header.kid.empty()) return "no " + header.alg + " key with kid " + loggable(header.kid);
        return "no " + header.alg + " key";
    }
    return std::string("signature does not verify");
}

std::optional<std::string> check_audience(const simdjson::dom::object& claims, const std::string& audience) {
    simdjson::dom::element value;
    if (claims.at_key("aud").get(value) != simdjson::SUCCESS) return std::string("no aud claim");
    std::string_view text;
    if (value.get_string().get(text) == simdjson::SUCCESS) {
        if (text == audience) return std::nullopt;
        return "aud " + loggable(text) + " is not the expected audience";
    }
    simdjson::dom::array items;
    if (value.get_array().get(items) != simdjson::SUCCESS) return std::string("aud is neither a string nor an array");
    for (simdjson::dom::element item : items) {
        if (item.get_string().get(text) == simdjson::SUCCESS && text == audience) return std::nullopt;
    }
    return std::string("aud does not hold the expected audience");
}

std::optional<std::string> check_scopes(const simdjson::dom::object& claims, const std::vector<std::string>& required) {
    if (required.empty()) return std::nullopt;
    std::set<std::string_view> scopes;
    // "scope" is RFC 8693's space-separated string; "scp" is what several IdPs send instead.
    for (const char* name : {"scope", "scp"}) {
        simdjson::dom::element value;
        if (claims.at_key(name).get(value) != simdjson::SUCCESS) continue;
        if (!collect_scopes(value, scopes)) return std::string(name) + " is neither a string nor an array of strings";
    }
    for (const std::string& scope : required) {
        if (!scopes.contains(scope)) return "scope " + loggable(scope) + " missing";
    }
    return std::nullopt;
}

validation check_claims(const simdjson::dom::object& claims, const settings& rules, int64_t now) {
    int64_t skew = std::max<int64_t>(rules.clock_skew_seconds, 0);
    std::string_view subject;
    if (claims.at_key("sub").get_string().get(subject) != simdjson::SUCCESS || subject.empty())
        return refusal("no sub claim");
    // The subject becomes the principal in logs and ACLs, where a control character lies.
    if (std::any_of(subject.begin(), subject.end(), [](char c) { return uint8_t(c) < 0x20 || c == 0x7f; }))
        return refusal("sub holds control characters");
    numeric_date expiry = numeric_date_of(claims, "exp");
    if (!expiry.present) return refusal("no exp claim");
    if (!expiry.valid) return refusal("exp is not a number");
    if (expiry.seconds <= saturating_sub(now, skew))
        return refusal("token expired " + std::to_string(saturating_sub(now, expiry.seconds)) + " s ago");
    numeric_date not_before = numeric_date_of(claims, "nbf");
    if (not_before.present && !not_before.valid) return refusal("nbf is not a number");
    if (not_before.present && not_before.seconds > saturating_add(now, skew))
        return refusal("token not valid for another " + std::to_string(saturating_sub(not_before.seconds, now)) +
                       " s (nbf)");
    if (!rules.issuer.empty()) {
        std::string_view issuer;
        if (claims.at_key("iss").get_string().get(issuer) != simdjson::SUCCESS) return refusal("no iss claim");
        if (issuer != rules.issuer) return refusal("iss " + loggable(issuer) + " is not the expected issuer");
    }
    if (!rules.audience.empty()) {
        if (auto fault = check_audience(claims, rules.audience)) return refusal(*fault);
    }
    if (auto fault = check_scopes(claims, rules.required_scopes)) return refusal(*fault);
    validation out;
    out.ok = true;
    out.principal = std::string(subject);
    out.expires_at_unix = expiry.seconds;
    return out;
}


step_result failure(std::string user, std::string reason) {
    step_result result;
    result.status = step_status::failed;
    result.user = std::move(user);
    result.reason = "OAUTHBEARER: " + std::move(reason);
    return result;
}


struct client_message {
    std::string authzid;  // empty when the client named none
    std::string_view token;
};

// RFC 7628 section 3.1 key = 1*ALPHA; value = *(VCHAR / SP / HTAB / CR / LF).
bool valid_pair(std::string_view key, std::string_view value) {
    auto alpha = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); };
    auto value_char = [](char c) { return (c >= 0x20 && c <= 0x7e) || c == '\t' || c == '\r' || c == '\n'; };
    return !key.empty() && std::all_of(key.begin(), key.end(), alpha) &&
           std::all_of(value.begin(), value.end(), value_char);
}

// The token of "Bearer <token>"; the scheme is case-insensitive as in HTTP.
std::optional<std::string_view> bearer_token(std::string_view value) {
    constexpr std::string_view scheme = "bearer";
    if (value.size() <= scheme.size() || value[scheme.size()] != ' ') return std::nullopt;
    for (size_t at = 0; at < scheme.size(); ++at) {
        char c = value[at];
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
        if (c != scheme[at]) return std::nullopt;
    }
    std::string_view token = value.substr(scheme.size());
    token.remove_prefix(std::min(token.find_first_not_of(' '), token.size()));
    if (token.empty() || token.find_first_of(" \t\r\n") != std::string_view::npos) return std::nullopt;
    return token;
}

// *(kvpair kvsep) kvsep after the GS2 header's kvsep; the token is the auth pair's.
// Extensions (the other pairs) are accepted and ignored.
bool parse_pairs(std::string_view pairs, client_message& out, std::string& reason) {
    bool have_token = false;
    size_t at = 0;
    while (true) {
        size_t end = pairs.find('\x01', at);
        if (end == std::string_view::npos) {
            reason = "message does not end with \\x01\\x01";
            return false;
        }
        if (end == at) {
            if (end + 1 == pairs.size()) break;
            reason = "data after the closing separator";
            return false;
        }
        std::string_view pair = pairs.substr(at, end - at);
        size_t equals = pair.find('=');
        std::string_view key = pair.substr(0, equals);
        std::string_view value = equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1);
        if (equals == std::string_view::npos || !valid_pair(key, value)) {
            reason = "malformed key=value pair";
            return false;
        }
        if (key == "auth") {
            std::optional<std::string_view> token = bearer_token(value);
            if (have_token || !token) {
                reason = have_token ? "auth given twice" : "auth is not \"Bearer <token>\"";
                return false;
            }
            out.token = *token;
            have_token = true;
        }
        at = end + 1;
    }
    if (!have_token) reason = "no auth=Bearer pair";
    return have_token;
}

// gs2-header kvsep *(kvpair kvsep) kvsep, e.g. "n,,\x01auth=Bearer <token>\x01\x01" as
// Kafka's clients send it.
std::optional<client_message> parse_client_message(std::string_view text, std::string& reason) {
    if (text.size() > message_bytes_max) {
        reason = "message longer than " + std::to_string(message_bytes_max) + " bytes";
        return std::nullopt;
    }
    // No channel binding in OAUTHBEARER: "n" or "y" (client could, thinks the server cannot).
    if (text.size() < 2 || (text[0] != 'n' && text[0] != 'y') || text[1] != ',') {
        reason = text.starts_with("p=") ? "channel binding not supported" : "malformed GS2 header";
        return std::nullopt;
    }
    size_t header_end = text.find(',', 2);
    if (header_end == std::string_view::npos) {
        reason = "malformed GS2 header";
        return std::nullopt;
    }
    client_message out;
    std::string_view authzid = text.substr(2, header_end - 2);
    if (!authzid.empty()) {
        std::optional<std::string> decoded =
            authzid.starts_with("a=") ? sasl::decode_saslname(authzid.substr(2)) : std::nullopt;
        if (!decoded || decoded->empty()) {
            reason = "malformed authorization id";
            return std::nullopt;
        }
        out.authzid = std::move(*decoded);
    }
    std::string_view rest = text.substr(header_end + 1);
    if (rest.empty() || rest[0] != '\x01') {
        reason = "no separator after the GS2 header";
        return std::nullopt;
    }
    if (!parse_pairs(rest.substr(1), out, reason)) return std::nullopt;
    return out;
}

}  // namespace

std::optional<key_set> parse_keys(std::string_view content, std::string& error) {
    if (content.size() > key_file_bytes_max) {
        error = "larger than " + std::to_string(key_file_bytes_max) + " bytes";
        return std::nullopt;
    }
    size_t first = content.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) {
        error = "empty";
        return std::nullopt;
    }
    if (content[first] == '{') return parse_jwks(content, error);
    if (content.find("-----BEGIN ") != std::string_view::npos) return parse_pem(content, error);
    error = "neither PEM nor a JWKS JSON document";
    return std::nullopt;
}

std::optional<key_set> load_keys(const std::string& path, std::string& error) {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        error = path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    // One byte past the limit is enough to tell a file that is too large.
    std::string content(key_file_bytes_max + 1, '\0');
    file.read(content.data(), std::streamsize(content.size()));
    if (file.bad()) {
        error = path + ": read error";
        return std::nullopt;
    }
    content.resize(size_t(file.gcount()));
    std::optional<key_set> keys = parse_keys(content, error);
    if (!keys) error = path + ": " + error;
    return keys;
}

validation validate(std::string_view jwt, const key_set& keys, const settings& rules, int64_t now_unix_seconds) {
    if (jwt.size() > token_bytes_max) return refusal("token longer than " + std::to_string(token_bytes_max) + " bytes");
    size_t first_dot = jwt.find('.');
    size_t second_dot = first_dot == std::string_view::npos ? first_dot : jwt.find('.', first_dot + 1);
    if (second_dot == std::string_view::npos || jwt.find('.', second_dot + 1) != std::string_view::npos)
        return refusal("not a compact JWS (three parts separated by dots)");
    std::string_view signing_input = jwt.substr(0, second_dot);
    std::optional<std::string> header_json = base64url_decode(jwt.substr(0, first_dot));
    if (!header_json) return refusal("header is not base64url");
    std::optional<std::string> payload_json = base64url_decode(jwt.substr(first_dot + 1, second_dot - first_dot - 1));
    if (!payload_json) return refusal("payload is not base64url");
    std::optional<std::string> signature = base64url_decode(jwt.substr(second_dot + 1));
    if (!signature) return refusal("signature is not base64url");

    simdjson::dom::parser parser;
    if (parser.allocate(token_bytes_max, token_json_depth_max) != simdjson::SUCCESS) return refusal("out of memory");
    std::string reason;
    std::optional<jose_header> header = header_of(parser, *header_json, reason);
    if (!header) return refusal(reason);
    // The signature before the claims: what a forged token says is never looked at.
    if (auto fault = check_signature(*header, keys, signing_input, bytes_of(*signature))) return refusal(*fault);
    simdjson::dom::object claims;
    if (!parse_object(parser, *payload_json, claims))
        return refusal("claims are not a JSON object with unique members");
    return check_claims(claims, rules, now_unix_seconds);
}

oauthbearer_mechanism::oauthbearer_mechanism(std::shared_ptr<const key_set> keys, settings rules,
                                             std::function<int64_t()> now)
    : keys_(std::move(keys)), rules_(std::move(rules)), now_(std::move(now)) {
    if (!now_) {
        now_ = [] {
            return int64_t(std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count());
        };
    }
}

sasl::step_result oauthbearer_mechanism::step(std::span<const uint8_t> message) {
    if (done_) return failure({}, "a message after the exchange ended");
    done_ = true;  // one message decides; any later one fails
    std::string reason;
    std::optional<client_message> parsed = parse_client_message(text_of(message), reason);
    if (!parsed) return failure({}, reason);
    if (!keys_) return failure({}, "no keys loaded");
    validation checked = validate(parsed->token, *keys_, rules_, now_());
    if (!checked.ok) return failure({}, "token refused: " + checked.reason);
    if (!parsed->authzid.empty() && parsed->authzid != checked.principal)
        return failure(checked.principal, "authorization id differs from the token's sub");
    session_expiry_unix_ = checked.expires_at_unix;
    step_result result;
    result.status = step_status::succeeded;
    result.user = std::move(checked.principal);
    return result;
}

std::unique_ptr<sasl::mechanism> make_oauthbearer(std::shared_ptr<const key_set> keys, settings rules,
                                                  std::function<int64_t()> now) {
    return std::make_unique<oauthbearer_mechanism>(std::move(keys), std::move(rules), std::move(now));
}

}  // namespace kpp::oauth
