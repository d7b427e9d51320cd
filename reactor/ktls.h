// Kernel TLS (DESIGN.md section 6): after a TLS 1.3 handshake done by OpenSSL over memory
// buffers, the record layer can be handed to the kernel (TCP_ULP "tls" with TLS_TX and
// TLS_RX), so io_uring then moves plaintext and zero-copy sends keep working. This file
// holds the pieces that do not need a socket to be checked: the traffic keys from a TLS 1.3
// secret (RFC 8446 section 7.3) and the decision; install_kernel_tls() is the only call
// that touches a socket, and it fails cleanly (ENOENT, ENOPROTOOPT) where the kernel has no
// TLS, which is what the connection's owner then falls back from.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kpp::reactor {

enum class ktls_cipher : uint8_t { aes_128_gcm, aes_256_gcm };

// One direction's record protection: key, the 12-byte IV (the kernel takes its first 4
// bytes as the salt) and the sequence number of the next record.
struct ktls_direction {
    std::vector<uint8_t> key;
    std::vector<uint8_t> iv;
    uint64_t sequence = 0;
};

struct ktls_material {
    ktls_cipher cipher = ktls_cipher::aes_128_gcm;
    ktls_direction transmit;  // what this side sends
    ktls_direction receive;   // what the peer sends
};

// The cipher of an OpenSSL TLS 1.3 suite name; nullopt for suites the kernel path does
// not take (ChaCha20-Poly1305 and CCM stay in userspace).
std::optional<ktls_cipher> ktls_cipher_of(std::string_view openssl_suite_name);

// RFC 8446 7.3: key = HKDF-Expand-Label(secret, "key", "", key length) and
// iv = HKDF-Expand-Label(secret, "iv", "", 12), with SHA-256 (AES-128-GCM) or SHA-384
// (AES-256-GCM). False when the secret's length does not fit the cipher's hash.
bool tls13_traffic_keys(ktls_cipher cipher, std::span<const uint8_t> secret, ktls_direction& out);

// Attaches the TLS ULP and installs both directions. `unavailable` (with `error`, errno
// text) when the kernel refuses the ULP or the first direction: the socket passes bytes
// through unchanged and the userspace engine goes on. `broken` when the transmit side went
// in but the receive side did not: the connection cannot continue either way.
enum class ktls_install : uint8_t { installed, unavailable, broken };
ktls_install install_kernel_tls(int fd, const ktls_material& material, std::string& error);

}  // namespace kpp::reactor
