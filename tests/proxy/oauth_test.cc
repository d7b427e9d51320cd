#include "proxy/oauth.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

namespace kpp::oauth {
namespace {

constexpr int64_t now = 1'700'000'000;

using pkey_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

pkey_ptr rsa_key(size_t bits = 2048) { return {EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits), EVP_PKEY_free}; }
pkey_ptr ec_key(const char* curve = "P-256") {
    return {EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve), EVP_PKEY_free};
}

std::string base64url(std::string_view bytes) {
    std::string text = sasl::base64_encode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    while (!text.empty() && text.back() == '=') text.pop_back();
    for (char& c : text) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return text;
}

std::string sign_rs256(EVP_PKEY* key, std::string_view input) {
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    size_t length = 0;
    EXPECT_EQ(EVP_DigestSignInit(context, nullptr, EVP_sha256(), nullptr, key), 1);
    EXPECT_EQ(EVP_DigestSign(context, nullptr, &length, reinterpret_cast<const uint8_t*>(input.data()), input.size()),
              1);
    std::string signature(length, '\0');
    EXPECT_EQ(EVP_DigestSign(context, reinterpret_cast<uint8_t*>(signature.data()), &length,
                             reinterpret_cast<const uint8_t*>(input.data()), input.size()),
              1);
    signature.resize(length);
    EVP_MD_CTX_free(context);
    return signature;
}

// JWS wants ECDSA as raw r||s, each 32 bytes; OpenSSL signs in DER.
std::string sign_es256(EVP_PKEY* key, std::string_view input) {
    std::string der = sign_rs256(key, input);
    const unsigned char* cursor = reinterpret_cast<const unsigned char*>(der.data());
    ECDSA_SIG* signature = d2i_ECDSA_SIG(nullptr, &cursor, long(der.size()));
    EXPECT_NE(signature, nullptr);
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(signature), reinterpret_cast<uint8_t*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(signature), reinterpret_cast<uint8_t*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(signature);
    return raw;
}

std::string hs256(std::string_view secret, std::string_view input) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), secret.data(), int(secret.size()), reinterpret_cast<const uint8_t*>(input.data()),
         input.size(), out, &length);
    return std::string(reinterpret_cast<char*>(out), length);
}

// A token with the given header and claims, signed by `key` as the header's alg says.
std::string token(EVP_PKEY* key, const std::string& header, const std::string& claims) {
    std::string input = base64url(header) + "." + base64url(claims);
    bool ec = header.find("\"ES256\"") != std::string::npos;
    return input + "." + base64url(ec ? sign_es256(key, input) : sign_rs256(key, input));
}

std::string claims_with(const std::string& extra = {}, int64_t exp = now + 300) {
    std::string out = R"({"sub":"alice","exp":)" + std::to_string(exp);
    if (!extra.empty()) out += "," + extra;
    return out + "}";
}

const std::string rs256 = R"({"alg":"RS256","typ":"JWT"})";
const std::string es256 = R"({"alg":"ES256","typ":"JWT"})";

std::string pem_of(EVP_PKEY* key) {
    BIO* bio = BIO_new(BIO_s_mem());
    EXPECT_EQ(PEM_write_bio_PUBKEY(bio, key), 1);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio, &data);
    std::string out(data, size_t(length));
    BIO_free(bio);
    return out;
}

std::string private_pem_of(EVP_PKEY* key) {
    BIO* bio = BIO_new(BIO_s_mem());
    EXPECT_EQ(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio, &data);
    std::string out(data, size_t(length));
    BIO_free(bio);
    return out;
}

// A self-signed certificate only as a carrier of the key, as IdPs publish them.
std::string certificate_pem_of(EVP_PKEY* key) {
    X509* certificate = X509_new();
    X509_set_version(certificate, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(certificate), 1);
    X509_gmtime_adj(X509_getm_notBefore(certificate), 0);
    X509_gmtime_adj(X509_getm_notAfter(certificate), 3600);
    X509_NAME* name = X509_get_subject_name(certificate);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("idp"), -1, -1, 0);
    X509_set_issuer_name(certificate, name);
    X509_set_pubkey(certificate, key);
    EXPECT_GT(X509_sign(certificate, key, EVP_sha256()), 0);
    BIO* bio = BIO_new(BIO_s_mem());
    EXPECT_EQ(PEM_write_bio_X509(bio, certificate), 1);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio, &data);
    std::string out(data, size_t(length));
    BIO_free(bio);
    X509_free(certificate);
    return out;
}

std::string bignum_param(EVP_PKEY* key, const char* name) {
    BIGNUM* value = nullptr;
    EXPECT_EQ(EVP_PKEY_get_bn_param(key, name, &value), 1);
    std::string out(size_t(BN_num_bytes(value)), '\0');
    BN_bn2bin(value, reinterpret_cast<uint8_t*>(out.data()));
    BN_free(value);
    return out;
}

std::string rsa_jwk(EVP_PKEY* key, const std::string& kid, const std::string& extra = {}) {
    return R"({"kty":"RSA","kid":")" + kid + R"(","n":")" + base64url(bignum_param(key, OSSL_PKEY_PARAM_RSA_N)) +
           R"(","e":")" + base64url(bignum_param(key, OSSL_PKEY_PARAM_RSA_E)) + "\"" + extra + "}";
}

std::string ec_point(EVP_PKEY* key) {
    unsigned char point[65];
    size_t length = 0;
    EXPECT_EQ(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &length), 1);
    EXPECT_EQ(length, 65u);
    return std::string(reinterpret_cast<char*>(point), length);
}

std::string ec_jwk(EVP_PKEY* key, const std::string& kid, const std::string& extra = {}) {
    std::string point = ec_point(key);
    return R"({"kty":"EC","crv":"P-256","kid":")" + kid + R"(","x":")" + base64url(point.substr(1, 32)) +
           R"(","y":")" + base64url(point.substr(33, 32)) + "\"" + extra + "}";
}

class oauth_files : public ::testing::Test {
protected:
    void SetUp() override {
        char pattern[] = "/tmp/kpp-oauth-test.XXXXXX";
        ASSERT_NE(mkdtemp(pattern), nullptr);
        directory_ = pattern;
    }
    void TearDown() override { std::filesystem::remove_all(directory_); }

    std::string write(const std::string& name, const std::string& content) {
        std::string path = (directory_ / name).string();
        std::ofstream(path, std::ios::binary) << content;
        return path;
    }

    key_set load(const std::string& name, const std::string& content) {
        std::string error;
        std::optional<key_set> keys = load_keys(write(name, content), error);
        EXPECT_TRUE(keys) << error;
        return keys.value_or(key_set{});
    }

    std::string load_error(const std::string& content) {
        std::string error;
        std::optional<key_set> keys = load_keys(write("bad", content), error);
        EXPECT_FALSE(keys);
        return error;
    }

    std::filesystem::path directory_;
};


TEST_F(oauth_files, pem_with_public_keys_and_a_certificate_loads_every_key) {
    pkey_ptr rsa = rsa_key();
    pkey_ptr ec = ec_key();
    pkey_ptr other = rsa_key();
    key_set keys = load("keys.pem", pem_of(rsa.get()) + pem_of(ec.get()) + certificate_pem_of(other.get()));
    ASSERT_EQ(keys.keys.size(), 3u);
    EXPECT_EQ(keys.keys[0].type, key_type::rsa);
    EXPECT_EQ(keys.keys[1].type, key_type::ec_p256);
    EXPECT_EQ(keys.keys[2].type, key_type::rsa);
    EXPECT_TRUE(keys.keys[0].kid.empty());
    // The certificate's key is the one that verifies its holder's tokens.
    EXPECT_TRUE(validate(token(other.get(), rs256, claims_with()), keys, {}, now).ok);
}

TEST_F(oauth_files, jwks_loads_rsa_and_ec_keys_with_their_kids_and_skips_encryption_keys) {
    pkey_ptr rsa = rsa_key();
    pkey_ptr ec = ec_key();
    pkey_ptr encryption = rsa_key();
    key_set keys = load("keys.json", R"({"keys":[)" + rsa_jwk(rsa.get(), "r1", R"(,"alg":"RS256","use":"sig")") +
                                         "," + ec_jwk(ec.get(), "e1") + "," +
                                         rsa_jwk(encryption.get(), "x", R"(,"use":"enc","alg":"RSA-OAEP")") +
                                         "]}");
    ASSERT_EQ(keys.keys.size(), 2u);
    EXPECT_EQ(keys.keys[0].type, key_type::rsa);
    EXPECT_EQ(keys.keys[0].kid, "r1");
    EXPECT_EQ(keys.keys[0].alg, "RS256");
    EXPECT_EQ(keys.keys[1].type, key_type::ec_p256);
    EXPECT_EQ(keys.keys[1].kid, "e1");
    EXPECT_TRUE(validate(token(ec.get(), es256, claims_with()), keys, {}, now).ok);
}

TEST_F(oauth_files, bad_key_files_are_refused_with_a_reason) {
    pkey_ptr rsa = rsa_key();
    pkey_ptr p384 = ec_key("P-384");
    std::string point = ec_point(ec_key().get());
    std::string error;
    EXPECT_FALSE(load_keys((directory_ / "absent.pem").string(), error));
    EXPECT_NE(error.find("absent.pem"), std::string::npos) << error;

    error = load_error(R"({"keys":[)" + rsa_jwk(rsa.get(), "r") +
                       R"(,{"kty":"EC","crv":"P-384","kid":"abc","x":"AA","y":"AA"}]})");
    EXPECT_NE(error.find("key 2 (kid abc): unsupported curve P-384"), std::string::npos) << error;
    error = load_error(pem_of(p384.get()));
    EXPECT_NE(error.find("PEM block 1: unsupported curve secp384r1"), std::string::npos) << error;
    error = load_error(pem_of(rsa_key(1024).get()));
    EXPECT_NE(error.find("1024 bits is too small"), std::string::npos) << error;
    error = load_error(R"({"keys":[)" + rsa_jwk(rsa_key(1024).get(), "small") + "]}");
    EXPECT_NE(error.find("key 1 (kid small): RSA key of 1024 bits"), std::string::npos) << error;
    error = load_error(private_pem_of(rsa.get()));
    EXPECT_NE(error.find("unsupported type PRIVATE KEY"), std::string::npos) << error;
    error = load_error(pem_of(rsa.get()) + "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n");
    EXPECT_NE(error.find("PEM block 2"), std::string::npos) << error;
    EXPECT_NE(load_error("hello").find("neither PEM nor"), std::string::npos);
    EXPECT_NE(load_error("").find("empty"), std::string::npos);
    EXPECT_NE(load_error("{\"keys\":[").find("not valid JSON"), std::string::npos);
    EXPECT_NE(load_error(R"({"keys":{}})").find("\"keys\" array"), std::string::npos);
    EXPECT_NE(load_error(R"({"keys":[]})").find("without a signing key"), std::string::npos);
    EXPECT_NE(load_error(R"({"keys":[{"kty":"oct","k":"AAAA"}]})").find("key 1: unsupported key type oct"),
              std::string::npos);
    EXPECT_NE(load_error(R"({"keys":[)" + rsa_jwk(rsa.get(), "r", R"(,"alg":"RS512")") + "]}")
                  .find("key 1 (kid r): unsupported alg RS512"),
              std::string::npos);
    EXPECT_NE(load_error(R"({"keys":[{"kty":"RSA","n":"AQAB"}]})").find("no \"e\""), std::string::npos);
    EXPECT_NE(load_error(R"({"keys":[{"kty":"RSA","n":"A+/=","e":"AQAB"}]})").find("\"n\" is not base64url"),
              std::string::npos);
    EXPECT_NE(load_error(R"({"keys":[{"kty":"EC","crv":"P-256","x":")" + base64url(point.substr(1, 31)) +
                         R"(","y":")" + base64url(point.substr(33, 32)) + "\"}]}")
                  .find("32 bytes"),
              std::string::npos);
    // A point off the curve: y changed.
    std::string bent_y = point.substr(33, 32);
    bent_y[31] = char(bent_y[31] ^ 1);
    EXPECT_NE(load_error(R"({"keys":[{"kty":"EC","crv":"P-256","x":")" + base64url(point.substr(1, 32)) +
                         R"(","y":")" + base64url(bent_y) + "\"}]}")
                  .find("not on P-256"),
              std::string::npos);
    EXPECT_NE(load_error("{\"keys\":" + std::string(5000, '[') + "}").find("not valid JSON"), std::string::npos);
}


class oauth_tokens : public ::testing::Test {
protected:
    void SetUp() override {
        rsa_ = rsa_key();
        ec_ = ec_key();
        std::string error;
        auto loaded = parse_keys(pem_of(rsa_.get()) + pem_of(ec_.get()), error);
        ASSERT_TRUE(loaded) << error;
        keys_ = *loaded;
    }

    validation check(const std::string& jwt, const settings& rules = {}) { return validate(jwt, keys_, rules, now); }

    pkey_ptr rsa_{nullptr, EVP_PKEY_free};
    pkey_ptr ec_{nullptr, EVP_PKEY_free};
    key_set keys_;
};

TEST_F(oauth_tokens, valid_rs256_and_es256_tokens_give_sub_and_exp) {
    validation rs = check(token(rsa_.get(), rs256, claims_with({}, now + 300)));
    ASSERT_TRUE(rs.ok) << rs.reason;
    EXPECT_EQ(rs.principal, "alice");
    EXPECT_EQ(rs.expires_at_unix, now + 300);
    EXPECT_TRUE(rs.reason.empty());
    validation es = check(token(ec_.get(), es256, R"({"sub":"bob","exp":)" + std::to_string(now + 60) + "}"));
    ASSERT_TRUE(es.ok) << es.reason;
    EXPECT_EQ(es.principal, "bob");
    EXPECT_EQ(es.expires_at_unix, now + 60);
    // A fractional NumericDate rounds down.
    validation fractional = check(token(rsa_.get(), rs256, R"({"sub":"a","exp":1700000100.75})"));
    ASSERT_TRUE(fractional.ok) << fractional.reason;
    EXPECT_EQ(fractional.expires_at_unix, 1700000100);
}

TEST_F(oauth_tokens, alg_none_and_hmac_and_other_algs_are_refused) {
    std::string claims = base64url(claims_with());
    validation none = check(base64url(R"({"alg":"none"})") + "." + claims + ".");
    EXPECT_FALSE(none.ok);
    EXPECT_NE(none.reason.find("alg none not accepted"), std::string::npos) << none.reason;
    // The classic confusion: HMAC keyed with the public key's PEM text.
    std::string input = base64url(R"({"alg":"HS256"})") + "." + claims;
    validation hmac = check(input + "." + base64url(hs256(pem_of(rsa_.get()), input)));
    EXPECT_FALSE(hmac.ok);
    EXPECT_NE(hmac.reason.find("alg HS256 not accepted"), std::string::npos) << hmac.reason;
    // RS512 with a valid RS256 signature is still refused: only the two named algs.
    EXPECT_FALSE(check(token(rsa_.get(), R"({"alg":"RS512"})", claims_with())).ok);
    EXPECT_FALSE(check(token(rsa_.get(), R"({"alg":"PS256"})", claims_with())).ok);
    EXPECT_FALSE(check(token(rsa_.get(), R"({"typ":"JWT"})", claims_with())).ok);
    // ES256 in the header with an RSA signature: no EC key verifies it.
    std::string rs_input = base64url(es256) + "." + claims;
    EXPECT_FALSE(check(rs_input + "." + base64url(sign_rs256(rsa_.get(), rs_input))).ok);
}

TEST_F(oauth_tokens, a_tampered_payload_or_a_foreign_key_is_refused) {
    std::string good = token(rsa_.get(), rs256, claims_with());
    ASSERT_TRUE(check(good).ok);
    size_t first_dot = good.find('.');
    size_t second_dot = good.find('.', first_dot + 1);
    std::string forged = good.substr(0, first_dot + 1) + base64url(R"({"sub":"admin","exp":1900000000})") +
                         good.substr(second_dot);
    validation tampered = check(forged);
    EXPECT_FALSE(tampered.ok);
    EXPECT_EQ(tampered.reason, "signature does not verify");
    EXPECT_EQ(tampered.principal, "");

    pkey_ptr stranger = rsa_key();
    EXPECT_EQ(check(token(stranger.get(), rs256, claims_with())).reason, "signature does not verify");
    pkey_ptr ec_stranger = ec_key();
    EXPECT_EQ(check(token(ec_stranger.get(), es256, claims_with())).reason, "signature does not verify");
    // An ES256 signature that is DER instead of raw r||s.
    std::string input = base64url(es256) + "." + base64url(claims_with());
    EXPECT_FALSE(check(input + "." + base64url(sign_rs256(ec_.get(), input))).ok);
    // Every prefix of a good token and every single changed character fail, none crash.
    for (size_t length = 0; length < good.size(); ++length) EXPECT_FALSE(check(good.substr(0, length)).ok) << length;
    for (size_t at = 0; at < good.size(); at += 7) {
        std::string bent = good;
        bent[at] = bent[at] == 'A' ? 'B' : 'A';
        EXPECT_FALSE(check(bent).ok) << at;
    }
}

TEST_F(oauth_files, kid_selects_the_key_in_a_jwks) {
    pkey_ptr first = rsa_key();
    pkey_ptr second = rsa_key();
    key_set keys = load("keys.json", R"({"keys":[)" + rsa_jwk(first.get(), "k1") + "," + rsa_jwk(second.get(), "k2") +
                                         "]}");
    ASSERT_EQ(keys.keys.size(), 2u);
    EXPECT_TRUE(validate(token(second.get(), R"({"alg":"RS256","kid":"k2"})", claims_with()), keys, {}, now).ok);
    EXPECT_TRUE(validate(token(first.get(), R"({"alg":"RS256","kid":"k1"})", claims_with()), keys, {}, now).ok);
    // The kid names the other key: that one alone is tried, and it does not verify.
    validation crossed = validate(token(second.get(), R"({"alg":"RS256","kid":"k1"})", claims_with()), keys, {}, now);
    EXPECT_FALSE(crossed.ok);
    EXPECT_EQ(crossed.reason, "signature does not verify");
    validation unknown = validate(token(second.get(), R"({"alg":"RS256","kid":"k3"})", claims_with()), keys, {}, now);
    EXPECT_FALSE(unknown.ok);
    EXPECT_EQ(unknown.reason, "no RS256 key with kid k3");
    // Without a kid every key of the type is tried.
    EXPECT_TRUE(validate(token(second.get(), rs256, claims_with()), keys, {}, now).ok);
    EXPECT_FALSE(validate(token(second.get(), R"({"alg":"RS256","kid":7})", claims_with()), keys, {}, now).ok);
}

TEST_F(oauth_tokens, exp_and_nbf_are_checked_with_the_skew) {
    settings rules;
    rules.clock_skew_seconds = 60;
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with({}, now - 30)), rules).ok);
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with({}, now - 59)), rules).ok);
    validation expired = check(token(rsa_.get(), rs256, claims_with({}, now - 60)), rules);
    EXPECT_FALSE(expired.ok);
    EXPECT_EQ(expired.reason, "token expired 60 s ago");
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with({}, now - 3600)), rules).ok);
    rules.clock_skew_seconds = 0;
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with({}, now)), rules).ok);
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with({}, now + 1)), rules).ok);
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with({}, std::numeric_limits<int64_t>::min())), rules).ok);

    rules.clock_skew_seconds = 60;
    validation early = check(token(rsa_.get(), rs256, claims_with("\"nbf\":" + std::to_string(now + 120))), rules);
    EXPECT_FALSE(early.ok);
    EXPECT_NE(early.reason.find("(nbf)"), std::string::npos) << early.reason;
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with("\"nbf\":" + std::to_string(now + 30))), rules).ok);
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with("\"nbf\":" + std::to_string(now - 30))), rules).ok);
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with("\"nbf\":\"soon\"")), rules).ok);
    // iat is not looked at, even in the future.
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with("\"iat\":" + std::to_string(now + 9999))), rules).ok);

    EXPECT_EQ(check(token(rsa_.get(), rs256, R"({"sub":"alice"})")).reason, "no exp claim");
    EXPECT_EQ(check(token(rsa_.get(), rs256, R"({"sub":"alice","exp":"1900000000"})")).reason, "exp is not a number");
    EXPECT_EQ(check(token(rsa_.get(), rs256, R"({"exp":1900000000})")).reason, "no sub claim");
    EXPECT_EQ(check(token(rsa_.get(), rs256, R"({"sub":"","exp":1900000000})")).reason, "no sub claim");
    EXPECT_EQ(check(token(rsa_.get(), rs256, R"({"sub":7,"exp":1900000000})")).reason, "no sub claim");
    EXPECT_FALSE(check(token(rsa_.get(), rs256, R"({"sub":"a\nb","exp":1900000000})")).ok);
}

TEST_F(oauth_tokens, issuer_and_audience_are_checked_when_configured) {
    settings rules;
    rules.issuer = "https://idp.example";
    rules.audience = "kafka";
    std::string iss = R"("iss":"https://idp.example")";
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with(iss + R"(,"aud":"kafka")")), rules).ok);
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with(iss + R"(,"aud":["web","kafka"])")), rules).ok);
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with(iss + R"(,"aud":["web","mobile"])")), rules).ok);
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with(iss + R"(,"aud":"kafka-admin")")), rules).ok);
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with(iss + R"(,"aud":7)")), rules).ok);
    EXPECT_EQ(check(token(rsa_.get(), rs256, claims_with(iss)), rules).reason, "no aud claim");
    validation wrong_issuer =
        check(token(rsa_.get(), rs256, claims_with(R"("iss":"https://evil.example","aud":"kafka")")), rules);
    EXPECT_FALSE(wrong_issuer.ok);
    EXPECT_EQ(wrong_issuer.reason, "iss https://evil.example is not the expected issuer");
    EXPECT_EQ(check(token(rsa_.get(), rs256, claims_with(R"("aud":"kafka")")), rules).reason, "no iss claim");
    // Unconfigured: not looked at.
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with(R"("iss":"anyone","aud":"anything")"))).ok);
}

TEST_F(oauth_tokens, required_scopes_must_all_be_present) {
    settings rules;
    rules.required_scopes = {"kafka.read", "kafka.write"};
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with(R"("scope":"openid kafka.read kafka.write")")), rules).ok);
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with(R"("scp":["kafka.write","kafka.read"])")), rules).ok);
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with(R"("scp":"kafka.write  kafka.read")")), rules).ok);
    validation missing = check(token(rsa_.get(), rs256, claims_with(R"("scope":"openid kafka.read")")), rules);
    EXPECT_FALSE(missing.ok);
    EXPECT_EQ(missing.reason, "scope kafka.write missing");
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with()), rules).ok);
    // A scope is a whole word, never a prefix.
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with(R"("scope":"kafka.reader kafka.writer")")), rules).ok);
    EXPECT_FALSE(check(token(rsa_.get(), rs256, claims_with(R"("scp":["kafka.read",5])")), rules).ok);
}

TEST_F(oauth_tokens, malformed_tokens_are_refused_without_crashing) {
    std::string good = token(rsa_.get(), rs256, claims_with());
    std::string claims = base64url(claims_with());
    EXPECT_EQ(check("").reason, "not a compact JWS (three parts separated by dots)");
    EXPECT_FALSE(check("abc").ok);
    EXPECT_FALSE(check("a.b").ok);
    EXPECT_FALSE(check(good + ".extra").ok);
    EXPECT_FALSE(check("..").ok);
    // Standard base64 characters, padding, and stray bytes in each part.
    std::string header = base64url(rs256);
    std::string signature = good.substr(good.rfind('.') + 1);
    EXPECT_EQ(check(header + "=." + claims + "." + signature).reason, "header is not base64url");
    EXPECT_EQ(check(header + "." + claims + "." + signature + "=").reason, "signature is not base64url");
    EXPECT_EQ(check(header + "." + claims + "+." + signature).reason, "payload is not base64url");
    EXPECT_EQ(check(header + " ." + claims + "." + signature).reason, "header is not base64url");
    EXPECT_EQ(check(header + "." + claims + "." + signature + "\n").reason, "signature is not base64url");
    std::string padded_json = R"({"alg":"RS256"} )";  // 16 bytes: two padding characters
    std::string with_padding = sasl::base64_encode(
        {reinterpret_cast<const uint8_t*>(padded_json.data()), padded_json.size()});
    ASSERT_EQ(with_padding.back(), '=');
    EXPECT_FALSE(check(with_padding + "." + claims + "." + signature).ok);
    // Not JSON, not an object, duplicate members, crit, and nesting past the limit.
    EXPECT_EQ(check(base64url("not json") + "." + claims + "." + signature).reason,
              "header is not a JSON object with unique members");
    EXPECT_FALSE(check(base64url("[\"RS256\"]") + "." + claims + "." + signature).ok);
    EXPECT_FALSE(check(base64url(R"({"alg":"RS256","alg":"none"})") + "." + claims + "." + signature).ok);
    EXPECT_EQ(check(token(rsa_.get(), R"({"alg":"RS256","crit":["exp"]})", claims_with())).reason,
              "crit header extensions not supported");
    EXPECT_EQ(check(token(rsa_.get(), rs256, R"({"sub":"alice","sub":"admin","exp":1900000000})")).reason,
              "claims are not a JSON object with unique members");
    EXPECT_FALSE(check(token(rsa_.get(), rs256, "not json")).ok);
    std::string deep = std::string(50, '[') + std::string(50, ']');
    EXPECT_EQ(check(token(rsa_.get(), rs256, claims_with("\"x\":" + deep))).reason,
              "claims are not a JSON object with unique members");
    std::string shallow = std::string(4, '[') + std::string(4, ']');
    EXPECT_TRUE(check(token(rsa_.get(), rs256, claims_with("\"x\":" + shallow))).ok);
    // Beyond the size limit, even with a valid signature.
    std::string huge = token(rsa_.get(), rs256, claims_with("\"pad\":\"" + std::string(token_bytes_max, 'x') + "\""));
    EXPECT_GT(huge.size(), token_bytes_max);
    EXPECT_NE(check(huge).reason.find("token longer than"), std::string::npos);
    EXPECT_FALSE(check(std::string(1 << 20, 'A')).ok);
    // A reason never carries the token or its signature.
    validation refused = check(header + "." + claims + "." + signature + "AA");
    EXPECT_FALSE(refused.ok);
    EXPECT_EQ(refused.reason.find(signature), std::string::npos);
    EXPECT_EQ(refused.reason.find(claims), std::string::npos);
}


class oauth_mechanism : public oauth_tokens {
protected:
    std::unique_ptr<sasl::mechanism> server(settings rules = {}) {
        return make_oauthbearer(std::make_shared<const key_set>(keys_), std::move(rules), [] { return now; });
    }

    static std::vector<uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }
    static std::optional<int64_t> expiry_of(const sasl::mechanism& mechanism) {
        auto* oauth = dynamic_cast<const oauthbearer_mechanism*>(&mechanism);
        EXPECT_NE(oauth, nullptr);
        return oauth ? oauth->session_expiry_unix() : std::nullopt;
    }
};

TEST_F(oauth_mechanism, kafka_client_message_succeeds_with_sub_and_expiry) {
    std::string jwt = token(rsa_.get(), rs256, claims_with({}, now + 900));
    auto mechanism = server();
    EXPECT_EQ(expiry_of(*mechanism), std::nullopt);
    sasl::step_result result = mechanism->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01\x01"));
    ASSERT_EQ(result.status, sasl::step_status::succeeded) << result.reason;
    EXPECT_EQ(result.user, "alice");
    EXPECT_TRUE(result.response.empty());
    EXPECT_EQ(expiry_of(*mechanism), now + 900);
    // One message decides; nothing follows.
    EXPECT_EQ(mechanism->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01\x01")).status, sasl::step_status::failed);
}

TEST_F(oauth_mechanism, extensions_are_accepted_and_ignored) {
    std::string jwt = token(ec_.get(), es256, claims_with());
    std::string extensions_after =
        "n,,\x01" "auth=Bearer " + jwt + "\x01" "logicalCluster=lkc-1\x01" "traceId=a b\x01\x01";
    EXPECT_EQ(server()->step(bytes(extensions_after)).status, sasl::step_status::succeeded);
    std::string extensions_before = "n,,\x01" "host=broker\x01" "port=9092\x01" "auth=bearer  " + jwt + "\x01\x01";
    EXPECT_EQ(server()->step(bytes(extensions_before)).status, sasl::step_status::succeeded);
    EXPECT_EQ(server()->step(bytes("y,,\x01" "auth=Bearer " + jwt + "\x01\x01")).status, sasl::step_status::succeeded);
    // Keys are letters only; values are printable.
    EXPECT_EQ(server()->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01" "trace-id=1\x01\x01")).status,
              sasl::step_status::failed);
    EXPECT_EQ(server()->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01" "x=\x02\x01\x01")).status,
              sasl::step_status::failed);
}

TEST_F(oauth_mechanism, authorization_id_must_name_the_subject) {
    std::string jwt = token(rsa_.get(), rs256, claims_with());
    sasl::step_result same = server()->step(bytes("n,a=alice,\x01" "auth=Bearer " + jwt + "\x01\x01"));
    EXPECT_EQ(same.status, sasl::step_status::succeeded) << same.reason;
    EXPECT_EQ(same.user, "alice");
    auto mechanism = server();
    sasl::step_result other = mechanism->step(bytes("n,a=admin,\x01" "auth=Bearer " + jwt + "\x01\x01"));
    EXPECT_EQ(other.status, sasl::step_status::failed);
    EXPECT_NE(other.reason.find("authorization id differs"), std::string::npos) << other.reason;
    EXPECT_EQ(expiry_of(*mechanism), std::nullopt);
    EXPECT_EQ(server()->step(bytes("n,b=alice,\x01" "auth=Bearer " + jwt + "\x01\x01")).status,
              sasl::step_status::failed);
    EXPECT_EQ(server()->step(bytes("n,a=,\x01" "auth=Bearer " + jwt + "\x01\x01")).status, sasl::step_status::failed);
}

TEST_F(oauth_mechanism, malformed_messages_fail) {
    std::string jwt = token(rsa_.get(), rs256, claims_with());
    auto fails = [&](const std::string& message, const std::string& reason_part) {
        sasl::step_result result = server()->step(bytes(message));
        EXPECT_EQ(result.status, sasl::step_status::failed) << message.size();
        EXPECT_NE(result.reason.find(reason_part), std::string::npos) << result.reason;
        EXPECT_EQ(result.reason.find(jwt.substr(jwt.rfind('.') + 1)), std::string::npos);
    };
    fails("n,,\x01" "host=broker\x01\x01", "no auth=Bearer pair");
    fails("n,,\x01" "auth=Bearer " + jwt, "does not end with");
    fails("n,,\x01" "auth=Bearer " + jwt + "\x01", "does not end with");
    fails("n,,\x01" "auth=Bearer " + jwt + "\x01\x01" "x", "data after the closing separator");
    fails("n,,auth=Bearer " + jwt + "\x01\x01", "no separator after the GS2 header");
    fails("n,\x01" "auth=Bearer " + jwt + "\x01\x01", "malformed GS2 header");
    fails("p=tls-unique,,\x01" "auth=Bearer " + jwt + "\x01\x01", "channel binding");
    fails("", "malformed GS2 header");
    fails("n,,\x01" "auth=Basic YWxpY2U6cGFzcw==\x01\x01", "Bearer");
    fails("n,,\x01" "auth=Bearer\x01\x01", "Bearer");
    fails("n,,\x01" "auth=Bearer " + jwt + "\x01" "auth=Bearer " + jwt + "\x01\x01", "auth given twice");
    fails("n,,\x01" "auth\x01\x01", "malformed key=value");
    fails("n,,\x01" "auth=Bearer " + jwt.substr(0, jwt.size() - 4) + "\x01\x01", "token refused");
    fails("n,,\x01" "auth=Bearer " + std::string(message_bytes_max, 'A') + "\x01\x01", "message longer than");
    fails(std::string("n,,\x01" "auth=Bearer ") + "a.b.c" + "\x01\x01", "token refused");
    // No keys at all.
    sasl::step_result no_keys =
        make_oauthbearer(nullptr, {}, [] { return now; })->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01\x01"));
    EXPECT_EQ(no_keys.status, sasl::step_status::failed);
}

TEST_F(oauth_mechanism, settings_and_clock_reach_the_validation) {
    settings rules;
    rules.audience = "kafka";
    std::string jwt = token(rsa_.get(), rs256, claims_with(R"("aud":"kafka")", now + 10));
    EXPECT_EQ(server(rules)->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01\x01")).status,
              sasl::step_status::succeeded);
    rules.audience = "other";
    EXPECT_EQ(server(rules)->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01\x01")).status,
              sasl::step_status::failed);
    settings no_skew;
    no_skew.clock_skew_seconds = 0;
    auto later = make_oauthbearer(std::make_shared<const key_set>(keys_), no_skew, [] { return now + 10; });
    EXPECT_EQ(later->step(bytes("n,,\x01" "auth=Bearer " + jwt + "\x01\x01")).status, sasl::step_status::failed);
}

}  // namespace
}  // namespace kpp::oauth
