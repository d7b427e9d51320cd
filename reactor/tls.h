// TLS as a byte-stream layer below the Kafka framing (DESIGN.md section 6): OpenSSL 3 over
// two memory BIOs, so that the bytes move through the same io_uring receive and send
// operations as plaintext connections and no socket call ever blocks a core. The engine
// knows nothing of sockets or Kafka: ciphertext from the peer goes in with feed(),
// plaintext comes out of read(); plaintext goes in with write(), ciphertext to send comes
// out of take_output(). Handshakes (TLS 1.2 and 1.3) run inside those calls.
//
// Kernel TLS (the record layer handed to the kernel after the handshake, so io_uring moves
// plaintext) is decided per connection at run time by kernel_tls_offered(); where the
// kernel lacks it the userspace path above is the one used.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "reactor/ktls.h"

// OpenSSL types, kept out of every includer's namespace.
struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

namespace kpp::reactor {

enum class tls_role : uint8_t { server, client };

// What a context is made from; every path is read when the context is built (a reload
// builds a new context, open connections keep the one they started with).
struct tls_settings {
    tls_role role = tls_role::server;
    std::string cert_path;     // PEM chain (leaf first); server: required; client: for mTLS
    std::string key_path;      // PEM private key of cert_path
    std::string ca_cert_path;  // server: CA for client certificates; client: CA for the
                               // broker (empty: the system's roots)
    bool require_client_cert = false;  // server: mTLS
    bool verify_peer = true;           // client: certificate chain and host name
    std::string min_version = "TLSv1.2";
    // server: prepare connections for kernel TLS (no session tickets, the TLS 1.3 traffic
    // secrets kept until the handoff); see tls_engine::kernel_handoff().
    bool kernel_offload = false;
};

// An SSL_CTX: certificates, keys, verification, protocol versions. Shared by the
// connections of one side and core; cheap to hold, expensive to build.
class tls_context {
public:
    // nullptr with `error` naming the file or setting at fault.
    static std::shared_ptr<tls_context> create(const tls_settings& settings, std::string& error);
    ~tls_context();
    tls_context(const tls_context&) = delete;
    tls_context& operator=(const tls_context&) = delete;

    tls_role role() const { return role_; }
    bool verify_peer() const { return verify_peer_; }
    bool kernel_offload() const { return kernel_offload_; }
    ssl_ctx_st* native() const { return context_; }

private:
    tls_context(ssl_ctx_st* context, tls_role role, bool verify_peer, bool kernel_offload)
        : context_(context), role_(role), verify_peer_(verify_peer), kernel_offload_(kernel_offload) {}
    ssl_ctx_st* context_;
    tls_role role_;
    bool verify_peer_;
    bool kernel_offload_;
};

enum class tls_state : uint8_t {
    handshaking,
    established,
    closed,  // the peer sent close_notify
    failed,  // a protocol, certificate or verification error: error() says which
};

class tls_engine {
public:
    // server_name: a client's SNI and the name its peer's certificate must carry (empty: no
    // SNI; verification then checks the chain only). Ignored by a server.
    tls_engine(std::shared_ptr<tls_context> context, std::string_view server_name = {});
    ~tls_engine();
    tls_engine(const tls_engine&) = delete;
    tls_engine& operator=(const tls_engine&) = delete;

    // A client starts the handshake: its ClientHello is then in take_output().
    void start();
    // Ciphertext received from the peer. False once the engine failed.
    bool feed(std::span<const std::byte> ciphertext);
    // Decrypted bytes, appended to `out`; returns how many (0: nothing available now).
    size_t read(std::vector<std::byte>& out, size_t max_bytes = SIZE_MAX);
    // The same straight into `out` (up to its size), with no copy in between; returns how
    // many bytes (0: nothing available now).
    size_t read_into(std::span<std::byte> out);
    // Plaintext to send; buffered until the handshake is done. False once failed.
    bool write(std::span<const std::byte> plaintext);
    // Ciphertext to put on the wire (handshake messages, records, alerts).
    std::vector<std::byte> take_output();
    // Ciphertext to put on the wire, moved out of OpenSSL's buffer into `out` (up to its
    // size) with no copy in between; returns how many bytes.
    size_t take_output_into(std::span<std::byte> out);
    size_t output_bytes() const;
    bool has_output() const;
    // Queues a close_notify alert in the output.
    void shutdown();

    tls_state state() const { return state_; }
    bool established() const { return state_ == tls_state::established; }
    const std::string& error() const { return error_; }
    // After the handshake: "TLSv1.3", the cipher, and the peer certificate's subject
    // (RFC 2253, empty without one) for principal mapping.
    std::string protocol_version() const;
    std::string cipher() const;
    std::string peer_subject() const;
    // Plaintext accepted by write() and not yet encrypted (waiting for the handshake).
    size_t pending_plaintext() const { return pending_.size(); }

    // The record keys to hand to the kernel, when this connection can switch now: a
    // context with kernel_offload, TLS 1.3 with AES-GCM, and nothing in flight inside the
    // engine (no application byte read or written yet, no ciphertext buffered either way),
    // so both sequence numbers are 0. nullopt otherwise: the connection stays here.
    std::optional<ktls_material> kernel_handoff() const;
    // Called by OpenSSL's key log with each secret of the handshake (kernel_offload only).
    void note_secret(std::string_view label, std::vector<uint8_t> secret);

private:
    void advance();
    void flush_pending();
    void fail(std::string_view what);

    std::shared_ptr<tls_context> context_;
    ssl_st* ssl_ = nullptr;
    bio_st* network_in_ = nullptr;   // ciphertext from the peer, read by OpenSSL
    bio_st* network_out_ = nullptr;  // ciphertext from OpenSSL, sent by the caller
    tls_state state_ = tls_state::handshaking;
    std::string error_;
    std::vector<std::byte> pending_;  // plaintext written before the handshake finished
    uint64_t application_bytes_ = 0;  // read or written since the handshake
    std::vector<uint8_t> client_traffic_secret_, server_traffic_secret_;  // kernel_offload only
};

// Whether this kernel offers TLS offload to sockets ("tls" among
// /proc/sys/net/ipv4/tcp_available_ulp, or loadable). `ulp_list` overrides the file's
// content for tests.
bool kernel_tls_offered(std::optional<std::string_view> ulp_list = std::nullopt);

// The last OpenSSL errors of this thread as one line (and the queue cleared).
std::string openssl_errors();

}  // namespace kpp::reactor
