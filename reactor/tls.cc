#include "reactor/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <sstream>

namespace kpp::reactor {

std::string openssl_errors() {
    std::string text;
    unsigned long code = 0;
    while ((code = ERR_get_error()) != 0) {
        char line[256];
        ERR_error_string_n(code, line, sizeof line);
        if (!text.empty()) text += "; ";
        text += line;
    }
    return text.empty() ? std::string("no OpenSSL error recorded") : text;
}

namespace {

std::optional<int> protocol_version_of(std::string_view name) {
    if (name == "TLSv1.2") return TLS1_2_VERSION;
    if (name == "TLSv1.3") return TLS1_3_VERSION;
    return std::nullopt;
}

bool is_ip_literal(const std::string& name) {
    unsigned char buffer[16];
    return inet_pton(AF_INET, name.c_str(), buffer) == 1 || inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

}  // namespace

std::shared_ptr<tls_context> tls_context::create(const tls_settings& settings, std::string& error) {
    ERR_clear_error();
    bool server = settings.role == tls_role::server;
    auto version = protocol_version_of(settings.min_version);
    if (!version) {
        error = "min_version: '" + settings.min_version + "' is not TLSv1.2 or TLSv1.3";
        return nullptr;
    }
    SSL_CTX* context = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!context) {
        error = "cannot create a TLS context: " + openssl_errors();
        return nullptr;
    }
    auto release = [&](std::string message) {
        error = std::move(message);
        SSL_CTX_free(context);
        return std::shared_ptr<tls_context>();
    };
    SSL_CTX_set_min_proto_version(context, *version);
    // No TLS compression (CRIME) and no renegotiation (a peer could make a core redo
    // handshakes at will); TLS 1.3 has neither anyway.
    SSL_CTX_set_options(context, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!settings.cert_path.empty() || !settings.key_path.empty()) {
        if (settings.cert_path.empty() || settings.key_path.empty())
            return release("cert_path and key_path: both are needed, or neither");
        if (SSL_CTX_use_certificate_chain_file(context, settings.cert_path.c_str()) != 1)
            return release("cert_path: cannot load a PEM certificate chain from '" + settings.cert_path +
                           "': " + openssl_errors());
        if (SSL_CTX_use_PrivateKey_file(context, settings.key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
            if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
                ERR_clear_error();
                return release("key_path: the key in '" + settings.key_path +
                               "' does not match the certificate in '" + settings.cert_path + "'");
            }
            return release("key_path: cannot load a PEM private key from '" + settings.key_path +
                           "': " + openssl_errors());
        }
        if (SSL_CTX_check_private_key(context) != 1)
            return release("key_path: the key in '" + settings.key_path + "' does not match the certificate in '" +
                           settings.cert_path + "'");
    } else if (server) {
        return release("cert_path: a TLS listener needs a certificate chain and key");
    }
    bool verify_peer = server ? settings.require_client_cert || !settings.ca_cert_path.empty() : settings.verify_peer;
    if (!settings.ca_cert_path.empty()) {
        if (SSL_CTX_load_verify_locations(context, settings.ca_cert_path.c_str(), nullptr) != 1)
            return release("ca_cert_path: cannot load PEM CA certificates from '" + settings.ca_cert_path +
                           "': " + openssl_errors());
    } else if (!server && settings.verify_peer) {
        if (SSL_CTX_set_default_verify_paths(context) != 1)
            return release("ca_cert_path: the system's CA certificates cannot be loaded: " + openssl_errors());
    }
    if (server && settings.require_client_cert && settings.ca_cert_path.empty())
        return release("ca_cert_path: client certificates are required but no CA is given to verify them");
    int mode = SSL_VERIFY_NONE;
    if (verify_peer) {
        mode = SSL_VERIFY_PEER;
        if (server && settings.require_client_cert) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_CTX_set_verify(context, mode, nullptr);
    if (server) SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_SERVER);
    bool offload = server && settings.kernel_offload;
    if (offload) {
        // A ticket sent after the handshake would move the sequence number the kernel must
        // start from; clients of a proxy reconnect rarely enough to do without resumption.
        SSL_CTX_set_num_tickets(context, 0);
        SSL_CTX_set_keylog_callback(context, [](const SSL* ssl, const char* line) {
            auto* engine = static_cast<tls_engine*>(SSL_get_app_data(ssl));
            std::string_view text(line);
            size_t first = text.find(' ');
            size_t second = first == std::string_view::npos ? first : text.find(' ', first + 1);
            if (!engine || second == std::string_view::npos) return;
            std::string_view hex = text.substr(second + 1);
            std::vector<uint8_t> secret;
            for (size_t at = 0; at + 1 < hex.size(); at += 2)
                secret.push_back(uint8_t(std::stoi(std::string(hex.substr(at, 2)), nullptr, 16)));
            engine->note_secret(text.substr(0, first), std::move(secret));
        });
    }
    return std::shared_ptr<tls_context>(new tls_context(context, settings.role, verify_peer, offload));
}

tls_context::~tls_context() { SSL_CTX_free(context_); }

tls_engine::tls_engine(std::shared_ptr<tls_context> context, std::string_view server_name)
    : context_(std::move(context)) {
    ssl_ = SSL_new(context_->native());
    network_in_ = BIO_new(BIO_s_mem());
    network_out_ = BIO_new(BIO_s_mem());
    if (!ssl_ || !network_in_ || !network_out_) {
        if (network_in_) BIO_free(network_in_);
        if (network_out_) BIO_free(network_out_);
        network_in_ = network_out_ = nullptr;
        fail("cannot create a TLS connection");
        return;
    }
    // An empty memory BIO reads as "retry later", not end of file.
    BIO_set_mem_eof_return(network_in_, -1);
    SSL_set_app_data(ssl_, this);  // the key log callback finds the engine
    SSL_set_bio(ssl_, network_in_, network_out_);  // ssl_ owns both now
    if (context_->role() == tls_role::server) {
        SSL_set_accept_state(ssl_);
        return;
    }
    SSL_set_connect_state(ssl_);
    std::string name(server_name);
    if (name.empty()) return;
    bool ip = is_ip_literal(name);
    if (!ip) SSL_set_tlsext_host_name(ssl_, name.c_str());  // SNI carries host names only
    if (!context_->verify_peer()) return;
    X509_VERIFY_PARAM* parameters = SSL_get0_param(ssl_);
    if (ip) {
        X509_VERIFY_PARAM_set1_ip_asc(parameters, name.c_str());
    } else {
        X509_VERIFY_PARAM_set_hostflags(parameters, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_set1_host(ssl_, name.c_str());
    }
}

tls_engine::~tls_engine() {
    if (ssl_) SSL_free(ssl_);  // frees both BIOs
}

void tls_engine::fail(std::string_view what) {
    if (state_ == tls_state::failed) return;
    state_ = tls_state::failed;
    error_ = std::string(what);
    pending_.clear();
}

void tls_engine::start() { advance(); }

void tls_engine::advance() {
    if (state_ != tls_state::handshaking || !ssl_) return;
    ERR_clear_error();
    int result = SSL_do_handshake(ssl_);
    if (result == 1) {
        state_ = tls_state::established;
        flush_pending();
        return;
    }
    int reason = SSL_get_error(ssl_, result);
    if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) return;
    long verified = SSL_get_verify_result(ssl_);
    if (verified != X509_V_OK) {
        fail(std::string("certificate verification failed: ") + X509_verify_cert_error_string(verified));
        return;
    }
    fail("TLS handshake failed: " + openssl_errors());
}

bool tls_engine::feed(std::span<const std::byte> ciphertext) {
    if (state_ == tls_state::failed || !ssl_) return false;
    if (!ciphertext.empty() && BIO_write(network_in_, ciphertext.data(), int(ciphertext.size())) != int(ciphertext.size())) {
        fail("TLS input buffer: " + openssl_errors());
        return false;
    }
    advance();
    return state_ != tls_state::failed;
}

size_t tls_engine::read_into(std::span<std::byte> out) {
    if (state_ != tls_state::established) return 0;
    size_t total = 0;
    while (total < out.size()) {
        ERR_clear_error();
        size_t got = 0;
        if (SSL_read_ex(ssl_, out.data() + total, out.size() - total, &got) == 1) {
            total += got;
            application_bytes_ += got;
            continue;
        }
        int reason = SSL_get_error(ssl_, 0);
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) break;
        if (reason == SSL_ERROR_ZERO_RETURN) {
            state_ = tls_state::closed;
            break;
        }
        fail("TLS record error: " + openssl_errors());
        break;
    }
    return total;
}

size_t tls_engine::output_bytes() const { return network_out_ ? BIO_ctrl_pending(network_out_) : 0; }

size_t tls_engine::take_output_into(std::span<std::byte> out) {
    if (!network_out_ || out.empty()) return 0;
    int got = BIO_read(network_out_, out.data(), int(std::min<size_t>(out.size(), INT32_MAX)));
    return got > 0 ? size_t(got) : 0;
}

size_t tls_engine::read(std::vector<std::byte>& out, size_t max_bytes) {
    // read_into in chunks, appended: for callers that keep one growing buffer.
    size_t total = 0;
    std::byte chunk[16384];
    while (total < max_bytes) {
        size_t got = read_into(std::span<std::byte>(chunk, std::min(sizeof chunk, max_bytes - total)));
        if (got == 0) break;
        out.insert(out.end(), chunk, chunk + got);
        total += got;
    }
    return total;
}

bool tls_engine::write(std::span<const std::byte> plaintext) {
    if (state_ == tls_state::failed || state_ == tls_state::closed || !ssl_) return false;
    if (state_ == tls_state::handshaking) {
        pending_.insert(pending_.end(), plaintext.begin(), plaintext.end());
        return true;
    }
    size_t done = 0;
    while (done < plaintext.size()) {
        ERR_clear_error();
        size_t wrote = 0;
        if (SSL_write_ex(ssl_, plaintext.data() + done, plaintext.size() - done, &wrote) != 1) {
            fail("TLS write failed: " + openssl_errors());
            return false;
        }
        done += wrote;
        application_bytes_ += wrote;
    }
    return true;
}

void tls_engine::note_secret(std::string_view label, std::vector<uint8_t> secret) {
    if (label == "CLIENT_TRAFFIC_SECRET_0") client_traffic_secret_ = std::move(secret);
    if (label == "SERVER_TRAFFIC_SECRET_0") server_traffic_secret_ = std::move(secret);
}

std::optional<ktls_material> tls_engine::kernel_handoff() const {
    if (state_ != tls_state::established || !context_->kernel_offload() || !ssl_) return std::nullopt;
    if (SSL_version(ssl_) != TLS1_3_VERSION) return std::nullopt;
    const SSL_CIPHER* suite = SSL_get_current_cipher(ssl_);
    auto cipher = suite ? ktls_cipher_of(SSL_CIPHER_get_name(suite)) : std::nullopt;
    if (!cipher || client_traffic_secret_.empty() || server_traffic_secret_.empty()) return std::nullopt;
    // Both sequence numbers are 0 only while nothing was protected with the traffic keys,
    // and the kernel continues from the socket's next byte only if nothing is buffered here.
    if (application_bytes_ != 0 || !pending_.empty() || SSL_has_pending(ssl_) || BIO_ctrl_pending(network_in_) != 0 ||
        BIO_ctrl_pending(network_out_) != 0)
        return std::nullopt;
    bool server = context_->role() == tls_role::server;
    ktls_material material;
    material.cipher = *cipher;
    if (!tls13_traffic_keys(*cipher, server ? server_traffic_secret_ : client_traffic_secret_, material.transmit) ||
        !tls13_traffic_keys(*cipher, server ? client_traffic_secret_ : server_traffic_secret_, material.receive))
        return std::nullopt;
    return material;
}

void tls_engine::flush_pending() {
    if (pending_.empty()) return;
    std::vector<std::byte> waiting;
    waiting.swap(pending_);
    write(waiting);
}

std::vector<std::byte> tls_engine::take_output() {
    std::vector<std::byte> out;
    if (!network_out_) return out;
    size_t pending = BIO_ctrl_pending(network_out_);
    if (pending == 0) return out;
    out.resize(pending);
    int got = BIO_read(network_out_, out.data(), int(pending));
    out.resize(got > 0 ? size_t(got) : 0);
    return out;
}

bool tls_engine::has_output() const { return network_out_ && BIO_ctrl_pending(network_out_) > 0; }

void tls_engine::shutdown() {
    if (!ssl_ || state_ == tls_state::failed) return;
    ERR_clear_error();
    SSL_shutdown(ssl_);
}

std::string tls_engine::protocol_version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }

std::string tls_engine::cipher() const {
    const char* name = ssl_ ? SSL_get_cipher_name(ssl_) : nullptr;
    return name ? name : "";
}

std::string tls_engine::peer_subject() const {
    if (!ssl_) return {};
    X509* peer = SSL_get0_peer_certificate(ssl_);
    if (!peer) return {};
    BIO* text = BIO_new(BIO_s_mem());
    if (!text) return {};
    X509_NAME_print_ex(text, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long length = BIO_get_mem_data(text, &data);
    std::string subject(data, size_t(length > 0 ? length : 0));
    BIO_free(text);
    return subject;
}

bool kernel_tls_offered(std::optional<std::string_view> ulp_list) {
    std::string content;
    if (ulp_list) {
        content = std::string(*ulp_list);
    } else {
        std::ifstream file("/proc/sys/net/ipv4/tcp_available_ulp");
        if (!file) return false;
        std::ostringstream read;
        read << file.rdbuf();
        content = read.str();
    }
    std::istringstream words(content);
    std::string word;
    while (words >> word)
        if (word == "tls") return true;
    return false;
}

}  // namespace kpp::reactor
