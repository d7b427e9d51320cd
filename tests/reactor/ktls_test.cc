// Kernel TLS without a kernel that has it: the key schedule against RFC 8448, the keys an
// engine would hand over checked by protecting records with them by hand (what the kernel
// would do) and having the OpenSSL peer accept them, and the fallback where the kernel
// offers no TLS.
#include "reactor/ktls.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

#include "reactor/tls.h"
#include "tls_test_support.h"

namespace kpp::reactor {
namespace {

using testing::pki;

std::vector<uint8_t> hex(std::string_view text) {
    std::vector<uint8_t> out;
    std::string digits;
    for (char c : text)
        if (c != ' ') digits += c;
    for (size_t at = 0; at + 1 < digits.size(); at += 2) out.push_back(uint8_t(std::stoi(digits.substr(at, 2), nullptr, 16)));
    return out;
}

// RFC 8448 section 3 (simple 1-RTT handshake), the application traffic keys.
TEST(ktls, traffic_keys_follow_rfc_8448) {
    ktls_direction server;
    ASSERT_TRUE(tls13_traffic_keys(ktls_cipher::aes_128_gcm,
                                   hex("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f "
                                       "cb 63 16 43"),
                                   server));
    EXPECT_EQ(server.key, hex("9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"));
    EXPECT_EQ(server.iv, hex("cf 78 2b 88 dd 83 54 9a ad f1 e9 84"));
    ktls_direction client;
    ASSERT_TRUE(tls13_traffic_keys(ktls_cipher::aes_128_gcm,
                                   hex("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 "
                                       "c1 75 04 a5"),
                                   client));
    EXPECT_EQ(client.key, hex("17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"));
    EXPECT_EQ(client.iv, hex("5b 78 92 3d ee 08 57 90 33 e5 23 d9"));
    // A SHA-256 secret is not a SHA-384 one.
    EXPECT_FALSE(tls13_traffic_keys(ktls_cipher::aes_256_gcm, server.key, client));
}

TEST(ktls, only_aes_gcm_suites_go_to_the_kernel) {
    EXPECT_EQ(ktls_cipher_of("TLS_AES_128_GCM_SHA256"), ktls_cipher::aes_128_gcm);
    EXPECT_EQ(ktls_cipher_of("TLS_AES_256_GCM_SHA384"), ktls_cipher::aes_256_gcm);
    EXPECT_FALSE(ktls_cipher_of("TLS_CHACHA20_POLY1305_SHA256"));
    EXPECT_FALSE(ktls_cipher_of("ECDHE-RSA-AES128-GCM-SHA256"));
}

// TLS 1.3 record protection (RFC 8446 5.2) with sequence number 0, as the kernel does it.
std::vector<std::byte> seal_record(const ktls_material& material, const ktls_direction& keys, std::string_view text) {
    std::vector<uint8_t> inner(text.begin(), text.end());
    inner.push_back(23);  // content type: application_data
    uint16_t length = uint16_t(inner.size() + 16);
    std::vector<uint8_t> header{23, 3, 3, uint8_t(length >> 8), uint8_t(length)};
    std::vector<uint8_t> out(header);
    out.resize(header.size() + inner.size() + 16);
    EVP_CIPHER_CTX* context = EVP_CIPHER_CTX_new();
    const EVP_CIPHER* cipher = material.cipher == ktls_cipher::aes_128_gcm ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    int written = 0;
    EVP_EncryptInit_ex(context, cipher, nullptr, keys.key.data(), keys.iv.data());  // nonce = iv XOR 0
    EVP_EncryptUpdate(context, nullptr, &written, header.data(), int(header.size()));
    EVP_EncryptUpdate(context, out.data() + header.size(), &written, inner.data(), int(inner.size()));
    EVP_EncryptFinal_ex(context, out.data() + header.size() + written, &written);
    EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_GET_TAG, 16, out.data() + header.size() + inner.size());
    EVP_CIPHER_CTX_free(context);
    auto* bytes = reinterpret_cast<const std::byte*>(out.data());
    return {bytes, bytes + out.size()};
}

std::string open_record(const ktls_material& material, const ktls_direction& keys, const std::vector<std::byte>& record) {
    if (record.size() < 5 + 16 + 1) return "<short>";
    auto* data = reinterpret_cast<const uint8_t*>(record.data());
    size_t body = record.size() - 5 - 16;
    std::vector<uint8_t> plain(body);
    EVP_CIPHER_CTX* context = EVP_CIPHER_CTX_new();
    const EVP_CIPHER* cipher = material.cipher == ktls_cipher::aes_128_gcm ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    int written = 0;
    EVP_DecryptInit_ex(context, cipher, nullptr, keys.key.data(), keys.iv.data());
    EVP_DecryptUpdate(context, nullptr, &written, data, 5);
    EVP_DecryptUpdate(context, plain.data(), &written, data + 5, int(body));
    EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_TAG, 16, const_cast<uint8_t*>(data + 5 + body));
    int final_bytes = 0;
    bool ok = EVP_DecryptFinal_ex(context, plain.data() + written, &final_bytes) == 1;
    EVP_CIPHER_CTX_free(context);
    if (!ok) return "<tag mismatch>";
    while (!plain.empty() && plain.back() == 0) plain.pop_back();
    if (plain.empty() || plain.back() != 23) return "<not application data>";
    plain.pop_back();
    return std::string(plain.begin(), plain.end());
}

std::shared_ptr<tls_context> offload_server_context() {
    tls_settings settings;
    settings.role = tls_role::server;
    settings.cert_path = pki().cert("server");
    settings.key_path = pki().key("server");
    settings.kernel_offload = true;
    std::string error;
    auto context = tls_context::create(settings, error);
    EXPECT_TRUE(context) << error;
    return context;
}

void exchange(tls_engine& client, tls_engine& server) {
    for (int round = 0; round < 50; ++round) {
        auto to_server = client.take_output();
        auto to_client = server.take_output();
        if (to_server.empty() && to_client.empty()) return;
        if (!to_server.empty()) server.feed(to_server);
        if (!to_client.empty()) client.feed(to_client);
    }
}

TEST(ktls, handed_over_keys_protect_records_the_peer_accepts) {
    auto server_context = offload_server_context();
    ASSERT_TRUE(server_context);
    tls_engine server(server_context);
    tls_engine client(testing::test_client_context(), "localhost");
    client.start();
    exchange(client, server);
    ASSERT_TRUE(client.established()) << client.error();
    ASSERT_TRUE(server.established()) << server.error();
    auto material = server.kernel_handoff();
    ASSERT_TRUE(material) << "a fresh TLS 1.3 connection on an offload context can switch";
    // What the kernel would send: the client's OpenSSL must read it.
    std::vector<std::byte> record = seal_record(*material, material->transmit, "from the kernel");
    ASSERT_TRUE(client.feed(record)) << client.error();
    std::vector<std::byte> plain;
    client.read(plain);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(plain.data()), plain.size()), "from the kernel");
    // What the client sends: the kernel's receive keys must open it.
    std::string request = "ApiVersions, say";
    ASSERT_TRUE(client.write(std::as_bytes(std::span(request.data(), request.size()))));
    EXPECT_EQ(open_record(*material, material->receive, client.take_output()), request);
}

TEST(ktls, a_connection_that_already_moved_data_or_is_not_tls_1_3_stays_in_userspace) {
    auto server_context = offload_server_context();
    {
        tls_engine server(server_context);
        tls_engine client(testing::test_client_context(), "localhost");
        client.start();
        std::string early = "pipelined with the handshake";
        client.write(std::as_bytes(std::span(early.data(), early.size())));
        exchange(client, server);
        std::vector<std::byte> plain;
        server.read(plain);
        ASSERT_FALSE(plain.empty());
        EXPECT_FALSE(server.kernel_handoff()) << "sequence numbers moved: the kernel cannot continue";
    }
    {
        tls_settings settings;
        settings.role = tls_role::client;
        settings.ca_cert_path = pki().cert("ca");
        std::string error;
        auto client_context = tls_context::create(settings, error);
        ASSERT_TRUE(client_context) << error;
        SSL_CTX_set_max_proto_version(client_context->native(), TLS1_2_VERSION);
        tls_engine server(server_context);
        tls_engine client(client_context, "localhost");
        client.start();
        exchange(client, server);
        ASSERT_TRUE(server.established()) << server.error();
        EXPECT_EQ(server.protocol_version(), "TLSv1.2");
        EXPECT_FALSE(server.kernel_handoff()) << "the TLS 1.2 path is not handed over";
    }
    // Without kernel_offload nothing is kept for a handoff.
    tls_engine server(testing::test_server_context());
    tls_engine client(testing::test_client_context(), "localhost");
    client.start();
    exchange(client, server);
    ASSERT_TRUE(server.established());
    EXPECT_FALSE(server.kernel_handoff());
}

TEST(ktls, installing_on_a_kernel_without_tls_fails_cleanly) {
    int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    socklen_t length = sizeof address;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
    ::listen(listener, 1);
    int client = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ktls_material material;
    material.transmit.key.assign(16, 1);
    material.transmit.iv.assign(12, 2);
    material.receive = material.transmit;
    std::string error;
    bool installed = install_kernel_tls(client, material, error) == ktls_install::installed;
    if (kernel_tls_offered()) {
        EXPECT_TRUE(installed) << error;
    } else {
        // The machines here: no TLS ULP. The call says so and the socket is unchanged.
        EXPECT_FALSE(installed);
        EXPECT_NE(error.find("TCP_ULP"), std::string::npos) << error;
        EXPECT_EQ(::send(client, "x", 1, 0), 1);
    }
    material.transmit.key.resize(5);
    EXPECT_EQ(install_kernel_tls(client, material, error), ktls_install::unavailable);
    EXPECT_EQ(error, "key material of the wrong size");
    ::close(client);
    ::close(listener);
}

}  // namespace
}  // namespace kpp::reactor
