#include "proxy/security.h"

namespace kpp {

std::shared_ptr<reactor::tls_context> listener_tls_context(const proxy_config& config, std::string& error) {
    error.clear();
    const listen_security_settings& security = config.listen.security;
    if (security.protocol != "SSL" && security.protocol != "SASL_SSL") return nullptr;
    reactor::tls_settings settings;
    settings.role = reactor::tls_role::server;
    settings.cert_path = security.tls.cert_path;
    settings.key_path = security.tls.key_path;
    settings.ca_cert_path = security.tls.ca_cert_path;
    settings.require_client_cert = security.tls.require_client_cert;
    settings.min_version = security.tls.min_version;
    auto context = reactor::tls_context::create(settings, error);
    if (!context) error = "listen.security.tls." + error;
    return context;
}

std::shared_ptr<reactor::tls_context> broker_tls_context(const proxy_config& config, std::string& error) {
    error.clear();
    const kafka_settings& kafka = config.kafka;
    if (kafka.security_protocol != "SSL" && kafka.security_protocol != "SASL_SSL") return nullptr;
    reactor::tls_settings settings;
    settings.role = reactor::tls_role::client;
    settings.cert_path = kafka.tls.cert_path;
    settings.key_path = kafka.tls.key_path;
    settings.ca_cert_path = kafka.tls.ca_cert_path;
    settings.verify_peer = !kafka.tls.insecure_skip_verify;
    auto context = reactor::tls_context::create(settings, error);
    if (!context) error = "kafka.tls." + error;
    return context;
}

}  // namespace kpp
