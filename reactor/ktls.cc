#include "reactor/ktls.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

namespace kpp::reactor {
namespace {

size_t key_bytes(ktls_cipher cipher) { return cipher == ktls_cipher::aes_128_gcm ? 16 : 32; }
size_t hash_bytes(ktls_cipher cipher) { return cipher == ktls_cipher::aes_128_gcm ? 32 : 48; }
const char* hash_name(ktls_cipher cipher) { return cipher == ktls_cipher::aes_128_gcm ? "SHA256" : "SHA384"; }

// HKDF-Expand-Label with an empty context.
bool expand_label(ktls_cipher cipher, std::span<const uint8_t> secret, std::string_view label, size_t length,
                  std::vector<uint8_t>& out) {
    std::string full = "tls13 " + std::string(label);
    std::vector<uint8_t> info;
    info.push_back(uint8_t(length >> 8));
    info.push_back(uint8_t(length));
    info.push_back(uint8_t(full.size()));
    info.insert(info.end(), full.begin(), full.end());
    info.push_back(0);  // context length
    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
    if (!kdf) return false;
    EVP_KDF_CTX* context = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!context) return false;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(hash_name(cipher)), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()), secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_end(),
    };
    out.assign(length, 0);
    bool ok = EVP_KDF_derive(context, out.data(), out.size(), params) == 1;
    EVP_KDF_CTX_free(context);
    return ok;
}

template <typename info_type>
void fill(info_type& info, uint16_t cipher_type, const ktls_direction& direction) {
    std::memset(&info, 0, sizeof info);
    info.info.version = TLS_1_3_VERSION;
    info.info.cipher_type = cipher_type;
    std::memcpy(info.key, direction.key.data(), sizeof info.key);
    std::memcpy(info.salt, direction.iv.data(), sizeof info.salt);
    std::memcpy(info.iv, direction.iv.data() + sizeof info.salt, sizeof info.iv);
    for (size_t at = 0; at < sizeof info.rec_seq; ++at)
        info.rec_seq[at] = uint8_t(direction.sequence >> (8 * (sizeof info.rec_seq - 1 - at)));
}

bool install_direction(int fd, int option, ktls_cipher cipher, const ktls_direction& direction) {
    if (cipher == ktls_cipher::aes_128_gcm) {
        tls12_crypto_info_aes_gcm_128 info;
        fill(info, TLS_CIPHER_AES_GCM_128, direction);
        return setsockopt(fd, SOL_TLS, option, &info, sizeof info) == 0;
    }
    tls12_crypto_info_aes_gcm_256 info;
    fill(info, TLS_CIPHER_AES_GCM_256, direction);
    return setsockopt(fd, SOL_TLS, option, &info, sizeof info) == 0;
}

}  // namespace

std::optional<ktls_cipher> ktls_cipher_of(std::string_view openssl_suite_name) {
    if (openssl_suite_name == "TLS_AES_128_GCM_SHA256") return ktls_cipher::aes_128_gcm;
    if (openssl_suite_name == "TLS_AES_256_GCM_SHA384") return ktls_cipher::aes_256_gcm;
    return std::nullopt;
}

bool tls13_traffic_keys(ktls_cipher cipher, std::span<const uint8_t> secret, ktls_direction& out) {
    if (secret.size() != hash_bytes(cipher)) return false;
    return expand_label(cipher, secret, "key", key_bytes(cipher), out.key) &&
           expand_label(cipher, secret, "iv", 12, out.iv);
}

ktls_install install_kernel_tls(int fd, const ktls_material& material, std::string& error) {
    if (material.transmit.key.size() != key_bytes(material.cipher) || material.transmit.iv.size() != 12 ||
        material.receive.key.size() != key_bytes(material.cipher) || material.receive.iv.size() != 12) {
        error = "key material of the wrong size";
        return ktls_install::unavailable;
    }
    if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") != 0) {
        error = std::string("TCP_ULP tls: ") + std::strerror(errno);
        return ktls_install::unavailable;
    }
    if (!install_direction(fd, TLS_TX, material.cipher, material.transmit)) {
        error = std::string("TLS_TX: ") + std::strerror(errno);
        return ktls_install::unavailable;
    }
    if (!install_direction(fd, TLS_RX, material.cipher, material.receive)) {
        // The transmit side is in the kernel already: the connection cannot go back.
        error = std::string("TLS_RX: ") + std::strerror(errno);
        return ktls_install::broken;
    }
    return ktls_install::installed;
}

}  // namespace kpp::reactor
