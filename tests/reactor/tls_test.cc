#include "reactor/tls.h"

#include "tests/reactor/tls_test_support.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace kpp::reactor {
namespace {

namespace fs = std::filesystem;
using testing::pki;

std::shared_ptr<tls_context> server_context(bool require_client_cert = false) {
    auto context = testing::test_server_context(require_client_cert);
    EXPECT_TRUE(context);
    return context;
}

std::shared_ptr<tls_context> client_context(const std::string& ca = "ca", bool with_cert = false) {
    auto context = testing::test_client_context(ca, with_cert);
    EXPECT_TRUE(context);
    return context;
}

std::vector<std::byte> bytes_of(const std::string& text) {
    std::vector<std::byte> out(text.size());
    std::memcpy(out.data(), text.data(), text.size());
    return out;
}

std::string text_of(const std::vector<std::byte>& bytes) {
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// Moves what each side has to send to the other, cut into pieces of random sizes as TCP
// may deliver them, until neither has anything left.
void pump(tls_engine& client, tls_engine& server, std::mt19937& random) {
    for (int rounds = 0; rounds < 1000; ++rounds) {
        bool moved = false;
        for (auto [from, to] : {std::pair{&client, &server}, std::pair{&server, &client}}) {
            std::vector<std::byte> out = from->take_output();
            size_t at = 0;
            while (at < out.size()) {
                size_t piece = std::min<size_t>(out.size() - at, 1 + random() % 3000);
                to->feed(std::span(out).subspan(at, piece));
                at += piece;
                moved = true;
            }
        }
        if (!moved) return;
    }
    FAIL() << "the engines kept talking";
}

TEST(tls, handshake_and_data_both_ways_in_tls_1_3_and_1_2) {
    for (bool tls12 : {false, true}) {
        std::mt19937 random(tls12 ? 12 : 13);
        auto client_side = client_context();
        if (tls12) SSL_CTX_set_max_proto_version(client_side->native(), TLS1_2_VERSION);
        tls_engine server(server_context());
        tls_engine client(client_side, "localhost");
        // Written before the handshake: held, then sent once it is done.
        ASSERT_TRUE(client.write(bytes_of("early request")));
        EXPECT_EQ(client.pending_plaintext(), 13u);
        client.start();
        pump(client, server, random);
        ASSERT_TRUE(client.established()) << client.error();
        ASSERT_TRUE(server.established()) << server.error();
        EXPECT_EQ(client.protocol_version(), tls12 ? "TLSv1.2" : "TLSv1.3");
        EXPECT_FALSE(client.cipher().empty());
        EXPECT_EQ(client.pending_plaintext(), 0u);
        std::vector<std::byte> got;
        server.read(got);
        EXPECT_EQ(text_of(got), "early request");

        // A megabyte each way, in uneven writes, arrives whole and in order.
        std::string big;
        for (int i = 0; big.size() < (1 << 20); ++i) big += std::to_string(i) + ",";
        for (size_t at = 0; at < big.size();) {
            size_t piece = std::min<size_t>(big.size() - at, 1 + random() % 40000);
            ASSERT_TRUE(server.write(bytes_of(big.substr(at, piece))));
            ASSERT_TRUE(client.write(bytes_of(big.substr(at, piece))));
            at += piece;
            pump(client, server, random);
        }
        std::vector<std::byte> at_client, at_server;
        client.read(at_client);
        server.read(at_server);
        EXPECT_EQ(text_of(at_client), big);
        EXPECT_EQ(text_of(at_server), big);

        // close_notify: the peer sees the end.
        client.shutdown();
        pump(client, server, random);
        std::vector<std::byte> none;
        EXPECT_EQ(server.read(none), 0u);
        EXPECT_EQ(server.state(), tls_state::closed);
    }
}

TEST(tls, a_certificate_for_another_name_or_from_another_ca_is_refused) {
    std::mt19937 random(1);
    {
        tls_engine server(server_context());
        tls_engine client(client_context(), "broker.example.com");
        client.start();
        pump(client, server, random);
        EXPECT_EQ(client.state(), tls_state::failed);
        EXPECT_NE(client.error().find("hostname mismatch"), std::string::npos) << client.error();
    }
    {
        tls_engine server(server_context());
        tls_engine client(client_context("other-ca"), "localhost");
        client.start();
        pump(client, server, random);
        EXPECT_EQ(client.state(), tls_state::failed);
        EXPECT_NE(client.error().find("certificate verification failed"), std::string::npos) << client.error();
        EXPECT_FALSE(client.write(bytes_of("x")));
    }
    {
        // An IP address is checked against the certificate's IP entries.
        tls_engine server(server_context());
        tls_engine client(client_context(), "127.0.0.1");
        client.start();
        pump(client, server, random);
        EXPECT_TRUE(client.established()) << client.error();
    }
    {
        // Verification off: any certificate (the configuration warns about it).
        tls_settings settings;
        settings.role = tls_role::client;
        settings.verify_peer = false;
        std::string error;
        auto lax = tls_context::create(settings, error);
        ASSERT_TRUE(lax) << error;
        tls_engine server(server_context());
        tls_engine client(lax, "broker.example.com");
        client.start();
        pump(client, server, random);
        EXPECT_TRUE(client.established()) << client.error();
    }
}

TEST(tls, client_certificates_when_required) {
    std::mt19937 random(2);
    {
        tls_engine server(server_context(true));
        tls_engine client(client_context("ca", true), "localhost");
        client.start();
        pump(client, server, random);
        ASSERT_TRUE(server.established()) << server.error();
        EXPECT_EQ(server.peer_subject(), "CN=alice,O=kpp");
        EXPECT_EQ(client.peer_subject(), "CN=localhost,O=kpp");
    }
    {
        tls_engine server(server_context(true));
        tls_engine client(client_context(), "localhost");
        client.start();
        pump(client, server, random);
        EXPECT_EQ(server.state(), tls_state::failed);
        EXPECT_FALSE(client.established() && server.established());
    }
}

TEST(tls, garbage_and_truncated_handshakes_fail_or_wait_without_harm) {
    std::mt19937 random(3);
    {
        // A plaintext Kafka request on a TLS port.
        tls_engine server(server_context());
        std::vector<std::byte> request{std::byte{0}, std::byte{0}, std::byte{0}, std::byte{20}, std::byte{0},
                                       std::byte{18}, std::byte{0}, std::byte{3}};
        EXPECT_FALSE(server.feed(request));
        EXPECT_EQ(server.state(), tls_state::failed);
        EXPECT_FALSE(server.error().empty());
        EXPECT_FALSE(server.feed(request));  // stays failed
        std::vector<std::byte> none;
        EXPECT_EQ(server.read(none), 0u);
    }
    for (int seed = 0; seed < 50; ++seed) {
        // Random bytes after a valid start, or a ClientHello cut short.
        tls_engine server(server_context());
        tls_engine client(client_context(), "localhost");
        client.start();
        std::vector<std::byte> hello = client.take_output();
        ASSERT_GT(hello.size(), 10u);
        std::mt19937 bytes(seed);
        size_t cut = 1 + bytes() % (hello.size() - 1);
        server.feed(std::span(hello).first(cut));
        if (seed % 2 == 0) {
            EXPECT_EQ(server.state(), tls_state::handshaking);  // waits for the rest (the deadline is the caller's)
        } else {
            std::vector<std::byte> noise(200);
            for (auto& b : noise) b = std::byte(bytes());
            server.feed(noise);
            EXPECT_NE(server.state(), tls_state::established);
        }
    }
}

TEST(tls, context_errors_name_the_setting) {
    std::string error;
    tls_settings settings;
    settings.role = tls_role::server;
    EXPECT_FALSE(tls_context::create(settings, error));
    EXPECT_NE(error.find("cert_path"), std::string::npos) << error;
    settings.cert_path = (pki().dir() / "missing.pem").string();
    settings.key_path = pki().key("server");
    EXPECT_FALSE(tls_context::create(settings, error));
    EXPECT_NE(error.find("cert_path"), std::string::npos) << error;
    EXPECT_NE(error.find("missing.pem"), std::string::npos) << error;
    settings.cert_path = pki().cert("server");
    settings.key_path = pki().key("client");
    EXPECT_FALSE(tls_context::create(settings, error));
    EXPECT_NE(error.find("does not match"), std::string::npos) << error;
    settings.key_path = pki().key("server");
    settings.require_client_cert = true;
    EXPECT_FALSE(tls_context::create(settings, error));
    EXPECT_NE(error.find("ca_cert_path"), std::string::npos) << error;
    settings.require_client_cert = false;
    settings.min_version = "TLSv1.1";
    EXPECT_FALSE(tls_context::create(settings, error));
    EXPECT_NE(error.find("min_version"), std::string::npos) << error;
    settings.min_version = "TLSv1.3";
    EXPECT_TRUE(tls_context::create(settings, error)) << error;
}

// The kernel path is chosen only where the kernel offers it; this machine's kernel has no
// TLS ULP (CONFIG_TLS off), so the userspace path is what runs here.
TEST(tls, kernel_tls_is_offered_only_where_the_kernel_lists_it) {
    EXPECT_TRUE(kernel_tls_offered("tls"));
    EXPECT_TRUE(kernel_tls_offered("espintcp mptcp tls\n"));
    EXPECT_FALSE(kernel_tls_offered("espintcp mptcp\n"));
    EXPECT_FALSE(kernel_tls_offered(""));
    EXPECT_FALSE(kernel_tls_offered("tlsx"));
    std::ifstream file("/proc/sys/net/ipv4/tcp_available_ulp");
    std::string listed((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    EXPECT_EQ(kernel_tls_offered(), kernel_tls_offered(listed)) << "listed: '" << listed << "'";
}

}  // namespace
}  // namespace kpp::reactor
