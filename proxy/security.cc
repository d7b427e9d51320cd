#include "proxy/security.h"

#include <cstdlib>
#include <random>
#include <string_view>

#include "protocol/wire.h"

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
    // KPP_TLS_TRY_KERNEL=1 attempts the handoff even where the kernel lacks TLS (it then
    // fails and the connection stays in userspace): how the switch is tested on such kernels.
    const char* force = std::getenv("KPP_TLS_TRY_KERNEL");
    settings.kernel_offload = security.tls.kernel_offload &&
                              (reactor::kernel_tls_offered() || (force && std::string_view(force) == "1"));
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

std::unique_ptr<sasl::client_mechanism> broker_sasl::start() const {
    std::function<std::string()> read_token;
    if (token) {
        std::shared_ptr<sasl::token_file> file = token;
        read_token = [file] {
            std::string error;
            return file->current(error);
        };
    }
    return sasl::make_client_mechanism(mechanism, username, password, std::move(read_token));
}

std::string broker_sasl::describe() const {
    return "SASL " + mechanism + " authentication" + (username.empty() ? std::string() : " as '" + username + "'");
}

std::string sasl_handshake_refusal(const broker_sasl& identity, const sasl_answer& handshake) {
    std::string offered;
    for (const std::string& name : handshake.mechanisms) offered += (offered.empty() ? "" : ", ") + name;
    return "the broker does not enable " + identity.mechanism + " (it offers: " +
           (offered.empty() ? std::string("none") : offered) + "); set kafka.sasl.mechanism";
}

std::string sasl_authenticate_refusal(const sasl_answer& answer) {
    return answer.error_message.empty() ? "error " + std::to_string(answer.error_code)
                                        : answer.error_message + " (check kafka.sasl.username and password)";
}

std::shared_ptr<const broker_sasl> broker_sasl_identity(const proxy_config& config, std::string& error) {
    error.clear();
    const kafka_settings& kafka = config.kafka;
    if (kafka.security_protocol != "SASL_PLAINTEXT" && kafka.security_protocol != "SASL_SSL") return nullptr;
    auto identity = std::make_shared<broker_sasl>();
    identity->mechanism = kafka.sasl.mechanism;
    identity->username = kafka.sasl.username;
    identity->password = kafka.sasl.password;
    if (identity->mechanism == "OAUTHBEARER") {
        identity->token = std::make_shared<sasl::token_file>(kafka.sasl.token_file);
        std::string problem;
        if (identity->token->current(problem).empty()) {
            error = "kafka.sasl.token_file: " + problem;
            return nullptr;
        }
    }
    return identity;
}

namespace {

void write_client_id(protocol::wire_writer& writer) {
    writer.write_string(std::string_view("kafka-partition-proxy"), false);
}

}  // namespace

std::vector<std::byte> sasl_handshake_request_tail(const std::string& mechanism) {
    protocol::wire_writer writer;
    write_client_id(writer);
    writer.write_string(std::string_view(mechanism), false);
    return std::move(writer.bytes());
}

std::vector<std::byte> sasl_authenticate_request_tail(std::span<const uint8_t> auth_bytes) {
    protocol::wire_writer writer;
    write_client_id(writer);
    writer.write_int32(int32_t(auth_bytes.size()));
    writer.write_raw({reinterpret_cast<const std::byte*>(auth_bytes.data()), auth_bytes.size()});
    return std::move(writer.bytes());
}

sasl_answer parse_sasl_handshake_response(std::span<const std::byte> body) {
    sasl_answer answer;
    protocol::wire_reader reader(body);
    answer.error_code = reader.read_int16();
    int32_t count = reader.read_array_length(false, false, 2);
    for (int32_t index = 0; index < count && reader.ok(); ++index) {
        auto name = reader.read_string(false, false);
        if (name) answer.mechanisms.emplace_back(*name);
    }
    answer.malformed = !reader.ok();
    return answer;
}

sasl_answer parse_sasl_authenticate_response(std::span<const std::byte> body) {
    sasl_answer answer;
    protocol::wire_reader reader(body);
    answer.error_code = reader.read_int16();
    if (auto message = reader.read_string(false, true)) answer.error_message = std::string(*message);
    if (auto bytes = reader.read_bytes_field(false, false))
        answer.auth_bytes.assign(reinterpret_cast<const uint8_t*>(bytes->data()),
                                 reinterpret_cast<const uint8_t*>(bytes->data()) + bytes->size());
    answer.session_lifetime_ms = reader.read_int64();
    answer.malformed = !reader.ok();
    return answer;
}

uint64_t reauthentication_delay_ms(int64_t session_lifetime_ms) {
    if (session_lifetime_ms <= 0) return 0;
    thread_local std::minstd_rand random{std::random_device{}()};
    double share = 0.85 + 0.10 * std::uniform_real_distribution<double>(0.0, 1.0)(random);
    return std::max<uint64_t>(1, uint64_t(double(session_lifetime_ms) * share));
}

}  // namespace kpp
