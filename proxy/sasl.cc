#include "proxy/sasl.h"
#include "proxy/sasl_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>

namespace kpp::sasl {

const EVP_MD* digest_of(scram_hash hash) { return hash == scram_hash::sha256 ? EVP_sha256() : EVP_sha512(); }

std::vector<uint8_t> hmac(scram_hash hash, std::span<const uint8_t> key, std::string_view data) {
    std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
    unsigned int length = 0;
    HMAC(digest_of(hash), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
         data.size(), out.data(), &length);
    out.resize(length);
    return out;
}

std::vector<uint8_t> digest(scram_hash hash, std::span<const uint8_t> data) {
    std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
    unsigned int length = 0;
    EVP_Digest(data.data(), data.size(), out.data(), &length, digest_of(hash), nullptr);
    out.resize(length);
    return out;
}

namespace {

std::span<const uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::string_view text_of(std::span<const uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

step_result failure(std::string user, std::string reason) {
    step_result result;
    result.status = step_status::failed;
    result.user = std::move(user);
    result.reason = std::move(reason);
    return result;
}

// PLAIN: [authzid] NUL authcid NUL passwd.
class plain_mechanism final : public mechanism {
public:
    explicit plain_mechanism(const credential_store& store) : store_(store) {}

    step_result step(std::span<const uint8_t> message) override {
        std::string_view text = text_of(message);
        size_t first = text.find('\0');
        size_t second = first == std::string_view::npos ? first : text.find('\0', first + 1);
        if (second == std::string_view::npos) return failure({}, "malformed PLAIN message");
        std::string_view authzid = text.substr(0, first);
        std::string_view user = text.substr(first + 1, second - first - 1);
        std::string_view password = text.substr(second + 1);
        if (user.empty()) return failure({}, "PLAIN without a user name");
        if (!authzid.empty() && authzid != user)
            return failure(std::string(user), "PLAIN authorization id differs from the user");
        std::optional<std::string> expected = store_.password ? store_.password(user) : std::nullopt;
        // An unknown user costs the same comparison as a known one.
        std::string reference = expected.value_or(std::string(password.size() + 1, '\0'));
        bool match = equal_secret(bytes_of(password), bytes_of(reference));
        if (!expected || !match) return failure(std::string(user), expected ? "wrong password" : "unknown user");
        step_result result;
        result.status = step_status::succeeded;
        result.user = std::string(user);
        return result;
    }

private:
    const credential_store& store_;
};


}  // namespace

// RFC 5802 / RFC 5801 saslname: "=2C" is ',' and "=3D" is '='; any other '=' is malformed.
std::optional<std::string> decode_saslname(std::string_view text) {
    std::string out;
    for (size_t at = 0; at < text.size(); ++at) {
        if (text[at] == ',') return std::nullopt;
        if (text[at] != '=') {
            out += text[at];
            continue;
        }
        if (text.substr(at, 3) == "=2C") out += ',';
        else if (text.substr(at, 3) == "=3D") out += '=';
        else return std::nullopt;
        at += 2;
    }
    return out;
}

// The attributes of a SCRAM message, in order ("n=user", "r=nonce", ...).
std::vector<std::pair<char, std::string_view>> attributes_of(std::string_view text) {
    std::vector<std::pair<char, std::string_view>> out;
    size_t at = 0;
    while (at <= text.size()) {
        size_t end = text.find(',', at);
        if (end == std::string_view::npos) end = text.size();
        std::string_view item = text.substr(at, end - at);
        if (item.size() < 2 || item[1] != '=') return {};
        out.emplace_back(item[0], item.substr(2));
        at = end + 1;
    }
    return out;
}

bool printable_nonce(std::string_view nonce) {
    return !nonce.empty() &&
           std::all_of(nonce.begin(), nonce.end(), [](char c) { return c >= 0x21 && c <= 0x7e && c != ','; });
}

namespace {

class scram_mechanism final : public mechanism {
public:
    scram_mechanism(scram_hash hash, const credential_store& store, std::string nonce)
        : hash_(hash), store_(store), server_nonce_(std::move(nonce)) {
        if (server_nonce_.empty()) {
            uint8_t random[18];
            RAND_bytes(random, sizeof random);
            server_nonce_ = base64_encode(random);
        }
    }

    step_result step(std::span<const uint8_t> message) override {
        std::string_view text = text_of(message);
        if (stage_ == 0) return client_first(text);
        if (stage_ == 1) return client_final(text);
        return failure(user_, "a SCRAM message after the exchange ended");
    }

private:
    step_result client_first(std::string_view text) {
        stage_ = 2;  // any failure ends the exchange
        // gs2-header: channel binding not supported by the client ("n") or thought
        // unsupported by the server ("y"); "p=" asks for binding the proxy does not offer.
        if (text.size() < 3 || (text[0] != 'n' && text[0] != 'y') || text[1] != ',')
            return failure({}, "SCRAM: unsupported or malformed GS2 header");
        size_t header_end = text.find(',', 2);
        if (header_end == std::string_view::npos) return failure({}, "SCRAM: malformed GS2 header");
        std::string_view authzid = text.substr(2, header_end - 2);
        if (!authzid.empty() && authzid.substr(0, 2) != "a=") return failure({}, "SCRAM: malformed authorization id");
        gs2_header_ = std::string(text.substr(0, header_end + 1));
        client_first_bare_ = std::string(text.substr(header_end + 1));
        auto attributes = attributes_of(client_first_bare_);
        if (attributes.size() < 2 || attributes[0].first != 'n' || attributes[1].first != 'r')
            return failure({}, "SCRAM: client-first-message without n= and r=");
        std::optional<std::string> user = decode_saslname(attributes[0].second);
        if (!user || user->empty()) return failure({}, "SCRAM: malformed user name");
        user_ = *user;
        if (!authzid.empty()) {
            std::optional<std::string> authz = decode_saslname(authzid.substr(2));
            if (!authz || *authz != user_) return failure(user_, "SCRAM: authorization id differs from the user");
        }
        if (!printable_nonce(attributes[1].second)) return failure(user_, "SCRAM: malformed client nonce");
        for (size_t index = 2; index < attributes.size(); ++index) {
            // Kafka's tokenauth=true (delegation tokens) and any mandatory extension.
            if (attributes[index].first == 'm') return failure(user_, "SCRAM: mandatory extension not supported");
        }
        if (client_first_bare_.find("tokenauth=") != std::string::npos)
            return failure(user_, "SCRAM: delegation tokens are not supported");
        client_nonce_ = std::string(attributes[1].second);
        nonce_ = client_nonce_ + server_nonce_;
        credential_ = lookup(user_);
        known_user_ = credential_.has_value();
        if (!credential_) {
            // Carry on with made-up keys so an unknown user looks like a wrong password.
            uint8_t salt[16];
            RAND_bytes(salt, sizeof salt);
            credential_ = scram_credential{{salt, salt + sizeof salt}, 4096,
                                           std::vector<uint8_t>(EVP_MD_get_size(digest_of(hash_)), 0),
                                           std::vector<uint8_t>(EVP_MD_get_size(digest_of(hash_)), 0)};
        }
        server_first_ = "r=" + nonce_ + ",s=" + base64_encode(credential_->salt) +
                        ",i=" + std::to_string(credential_->iterations);
        stage_ = 1;
        step_result result;
        result.status = step_status::continue_exchange;
        result.user = user_;
        result.response.assign(server_first_.begin(), server_first_.end());
        return result;
    }

    step_result client_final(std::string_view text) {
        stage_ = 2;
        size_t proof_at = text.rfind(",p=");
        if (proof_at == std::string_view::npos) return failure(user_, "SCRAM: client-final-message without a proof");
        std::string_view without_proof = text.substr(0, proof_at);
        auto attributes = attributes_of(without_proof);
        if (attributes.size() < 2 || attributes[0].first != 'c' || attributes[1].first != 'r')
            return failure(user_, "SCRAM: client-final-message without c= and r=");
        if (attributes[0].second != base64_encode(bytes_of(gs2_header_)))
            return failure(user_, "SCRAM: channel binding differs from the GS2 header");
        // librdkafka before 2.6.1 sends its own nonce once more in front of the combined one
        // (so Kafka 3.8.1+ accepts a nonce that ends with the combined one); that exact form
        // is taken, nothing looser.
        std::string_view final_nonce = attributes[1].second;
        bool librdkafka_form = final_nonce.size() == client_nonce_.size() + nonce_.size() &&
                               final_nonce.substr(0, client_nonce_.size()) == client_nonce_ &&
                               final_nonce.substr(client_nonce_.size()) == nonce_;
        if (final_nonce != nonce_ && !librdkafka_form)
            return failure(user_, "SCRAM: nonce differs from the exchange's");
        std::optional<std::vector<uint8_t>> proof = base64_decode(text.substr(proof_at + 3));
        size_t key_bytes = size_t(EVP_MD_get_size(digest_of(hash_)));
        if (!proof || proof->size() != key_bytes) return failure(user_, "SCRAM: malformed proof");
        std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
        std::vector<uint8_t> client_signature = hmac(hash_, credential_->stored_key, auth_message);
        std::vector<uint8_t> client_key(key_bytes);
        for (size_t at = 0; at < key_bytes; ++at) client_key[at] = (*proof)[at] ^ client_signature[at];
        bool match = equal_secret(digest(hash_, client_key), credential_->stored_key);
        if (!known_user_) return failure(user_, "unknown user");
        if (!match) return failure(user_, "wrong password");
        std::string server_final = "v=" + base64_encode(hmac(hash_, credential_->server_key, auth_message));
        step_result result;
        result.status = step_status::succeeded;
        result.user = user_;
        result.response.assign(server_final.begin(), server_final.end());
        return result;
    }

    std::optional<scram_credential> lookup(const std::string& user) {
        if (store_.scram) {
            if (auto found = store_.scram(hash_, user)) return found;
        }
        if (store_.password) {
            if (auto password = store_.password(user)) {
                // A password from the configuration: keys derived for this exchange.
                uint8_t salt[16];
                RAND_bytes(salt, sizeof salt);
                return derive_scram_credential(hash_, *password, salt, 4096);
            }
        }
        return std::nullopt;
    }

    scram_hash hash_;
    const credential_store& store_;
    std::string server_nonce_;
    int stage_ = 0;  // 0: expects client-first, 1: client-final, 2: done
    std::string user_;
    std::string gs2_header_;
    std::string client_first_bare_;
    std::string server_first_;
    std::string client_nonce_;
    std::string nonce_;  // the client's and the server's
    std::optional<scram_credential> credential_;
    bool known_user_ = false;
};

}  // namespace

scram_credential derive_scram_credential(scram_hash hash, std::string_view password, std::span<const uint8_t> salt,
                                         uint32_t iterations) {
    size_t key_bytes = size_t(EVP_MD_get_size(digest_of(hash)));
    std::vector<uint8_t> salted(key_bytes);
    PKCS5_PBKDF2_HMAC(password.data(), int(password.size()), salt.data(), int(salt.size()), int(iterations),
                      digest_of(hash), int(key_bytes), salted.data());
    scram_credential credential;
    credential.salt.assign(salt.begin(), salt.end());
    credential.iterations = iterations;
    std::vector<uint8_t> client_key = hmac(hash, salted, "Client Key");
    credential.stored_key = digest(hash, client_key);
    credential.server_key = hmac(hash, salted, "Server Key");
    OPENSSL_cleanse(salted.data(), salted.size());
    return credential;
}

std::unique_ptr<mechanism> make_mechanism(std::string_view name, const credential_store& store, std::string nonce) {
    if (name == "PLAIN") return std::make_unique<plain_mechanism>(store);
    if (name == "SCRAM-SHA-256") return std::make_unique<scram_mechanism>(scram_hash::sha256, store, std::move(nonce));
    if (name == "SCRAM-SHA-512") return std::make_unique<scram_mechanism>(scram_hash::sha512, store, std::move(nonce));
    return nullptr;
}

bool equal_secret(std::span<const uint8_t> given, std::span<const uint8_t> expected) {
    // Every byte of `expected` is looked at, whatever `given` holds.
    uint8_t difference = given.size() == expected.size() ? 0 : 1;
    for (size_t at = 0; at < expected.size(); ++at)
        difference |= uint8_t(expected[at] ^ (at < given.size() ? given[at] : uint8_t(~expected[at])));
    return difference == 0;
}

std::string base64_encode(std::span<const uint8_t> bytes) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    for (size_t at = 0; at < bytes.size(); at += 3) {
        uint32_t chunk = uint32_t(bytes[at]) << 16;
        if (at + 1 < bytes.size()) chunk |= uint32_t(bytes[at + 1]) << 8;
        if (at + 2 < bytes.size()) chunk |= bytes[at + 2];
        out += alphabet[(chunk >> 18) & 63];
        out += alphabet[(chunk >> 12) & 63];
        out += at + 1 < bytes.size() ? alphabet[(chunk >> 6) & 63] : '=';
        out += at + 2 < bytes.size() ? alphabet[chunk & 63] : '=';
    }
    return out;
}

std::optional<std::vector<uint8_t>> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    auto value_of = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::vector<uint8_t> out;
    for (size_t at = 0; at < text.size(); at += 4) {
        int values[4];
        int padding = 0;
        for (int i = 0; i < 4; ++i) {
            char c = text[at + size_t(i)];
            if (c == '=' && at + 4 == text.size() && i >= 2) {
                values[i] = 0;
                ++padding;
                continue;
            }
            if (padding > 0) return std::nullopt;  // data after padding
            values[i] = value_of(c);
            if (values[i] < 0) return std::nullopt;
        }
        // Canonical only: the bits the padding drops must be zero.
        if ((padding == 1 && (values[2] & 3) != 0) || (padding == 2 && (values[1] & 15) != 0)) return std::nullopt;
        uint32_t chunk = uint32_t(values[0]) << 18 | uint32_t(values[1]) << 12 | uint32_t(values[2]) << 6 |
                         uint32_t(values[3]);
        out.push_back(uint8_t(chunk >> 16));
        if (padding < 2) out.push_back(uint8_t(chunk >> 8));
        if (padding < 1) out.push_back(uint8_t(chunk));
    }
    return out;
}

}  // namespace kpp::sasl
