// A throwaway PKI for the TLS tests, generated in-process with OpenSSL: a CA, a server
// certificate for localhost and 127.0.0.1, a client certificate (CN=alice,O=kpp), and a
// second CA that signed none of them. PEM files in a temporary directory.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "reactor/tls.h"

namespace kpp::reactor::testing {

class test_pki {
public:
    test_pki() : dir_(std::filesystem::temp_directory_path() / ("kpp-tls-test-" + std::to_string(::getpid()))) {
        std::filesystem::create_directories(dir_);
        EVP_PKEY* ca_key = new_key();
        X509* ca = make_cert(ca_key, ca_key, nullptr, "kpp test CA", true, {});
        write(ca, ca_key, "ca");
        EVP_PKEY* other_key = new_key();
        X509* other = make_cert(other_key, other_key, nullptr, "another CA", true, {});
        write(other, other_key, "other-ca");
        EVP_PKEY* server_key = new_key();
        X509* server = make_cert(server_key, ca_key, ca, "localhost", false, "DNS:localhost,IP:127.0.0.1");
        write(server, server_key, "server");
        EVP_PKEY* client_key = new_key();
        X509* client = make_cert(client_key, ca_key, ca, "alice", false, {});
        write(client, client_key, "client");
        for (X509* cert : {ca, other, server, client}) X509_free(cert);
        for (EVP_PKEY* key : {ca_key, other_key, server_key, client_key}) EVP_PKEY_free(key);
    }
    ~test_pki() { std::filesystem::remove_all(dir_); }

    std::string cert(const std::string& name) const { return (dir_ / (name + ".pem")).string(); }
    std::string key(const std::string& name) const { return (dir_ / (name + ".key")).string(); }
    std::filesystem::path dir() const { return dir_; }

private:
    static EVP_PKEY* new_key() { return EVP_EC_gen("P-256"); }

    static X509* make_cert(EVP_PKEY* key, EVP_PKEY* signer, X509* issuer, const std::string& common_name, bool ca,
                           const std::string& alt_names) {
        static long serial = 1;
        X509* cert = X509_new();
        X509_set_version(cert, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
        X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
        X509_gmtime_adj(X509_getm_notAfter(cert), 3600 * 24);
        X509_set_pubkey(cert, key);
        X509_NAME* name = X509_get_subject_name(cert);
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("kpp"), -1, -1, 0);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
        X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
        X509V3_CTX context;
        X509V3_set_ctx_nodb(&context);
        X509V3_set_ctx(&context, issuer ? issuer : cert, cert, nullptr, nullptr, 0);
        auto add = [&](int nid, const std::string& value) {
            X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str());
            X509_add_ext(cert, extension, -1);
            X509_EXTENSION_free(extension);
        };
        add(NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
        if (ca) add(NID_key_usage, "critical,keyCertSign,cRLSign");
        if (!alt_names.empty()) add(NID_subject_alt_name, alt_names);
        X509_sign(cert, signer, EVP_sha256());
        return cert;
    }

    void write(X509* cert, EVP_PKEY* key, const std::string& name) const {
        FILE* cert_file = std::fopen(this->cert(name).c_str(), "w");
        PEM_write_X509(cert_file, cert);
        std::fclose(cert_file);
        FILE* key_file = std::fopen(this->key(name).c_str(), "w");
        PEM_write_PrivateKey(key_file, key, nullptr, nullptr, 0, nullptr, nullptr);
        std::fclose(key_file);
    }

    std::filesystem::path dir_;
};

inline const test_pki& pki() {
    static test_pki instance;
    return instance;
}

// Contexts over that PKI; nullptr (and a test failure) when one cannot be built.
inline std::shared_ptr<tls_context> test_server_context(bool require_client_cert = false) {
    tls_settings settings;
    settings.role = tls_role::server;
    settings.cert_path = pki().cert("server");
    settings.key_path = pki().key("server");
    if (require_client_cert) {
        settings.ca_cert_path = pki().cert("ca");
        settings.require_client_cert = true;
    }
    std::string error;
    return tls_context::create(settings, error);
}

inline std::shared_ptr<tls_context> test_client_context(const std::string& ca = "ca", bool with_cert = false) {
    tls_settings settings;
    settings.role = tls_role::client;
    settings.ca_cert_path = pki().cert(ca);
    if (with_cert) {
        settings.cert_path = pki().cert("client");
        settings.key_path = pki().key("client");
    }
    std::string error;
    return tls_context::create(settings, error);
}

}  // namespace kpp::reactor::testing
