// Fuzz target: every SASL parser that reads bytes from a client or a broker. The first byte
// picks one; the rest is its input (split in two at the first 0xff byte where a parser takes
// two messages). Nothing may crash or read outside the input, no exchange may succeed with
// made-up credentials, and no failure reason may contain the password.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/client_auth.h"
#include "proxy/metrics.h"
#include "proxy/oauth.h"
#include "proxy/sasl.h"
#include "proxy/sasl_client.h"
#include "proxy/security.h"

using namespace kpp;

namespace {

constexpr std::string_view password = "fuzz-Password-7";

sasl::credential_store& store() {
    static sasl::credential_store instance = [] {
        sasl::credential_store made;
        made.password = [](std::string_view user) -> std::optional<std::string> {
            if (user == "alice") return std::string(password);
            return std::nullopt;
        };
        made.scram = [](sasl::scram_hash hash, std::string_view user) -> std::optional<sasl::scram_credential> {
            if (user != "alice") return std::nullopt;
            static const std::vector<uint8_t> salt{1, 2, 3, 4, 5, 6, 7, 8};
            return sasl::derive_scram_credential(hash, password, salt, 4096);
        };
        return made;
    }();
    return instance;
}

// One EC P-256 key, so OAUTHBEARER gets as far as signature checks.
std::shared_ptr<const oauth::key_set> keys() {
    static std::shared_ptr<const oauth::key_set> instance = [] {
        EVP_PKEY* key = EVP_EC_gen("P-256");
        BIO* out = BIO_new(BIO_s_mem());
        PEM_write_bio_PUBKEY(out, key);
        char* data = nullptr;
        long length = BIO_get_mem_data(out, &data);
        std::string error;
        auto parsed = oauth::parse_keys(std::string_view(data, size_t(length)), error);
        BIO_free(out);
        EVP_PKEY_free(key);
        if (!parsed) std::abort();
        return std::make_shared<const oauth::key_set>(std::move(*parsed));
    }();
    return instance;
}

void check(const sasl::step_result& result) {
    if (result.status == sasl::step_status::failed && result.reason.find(password) != std::string::npos) std::abort();
}

std::span<const uint8_t> as_span(std::string_view text) {
    return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    static const bool quiet = [] {
        spdlog::set_level(spdlog::level::off);  // failures are logged by design; millions of lines help nobody
        return true;
    }();
    (void)quiet;
    std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    size_t split = rest.find('\xff');
    std::string_view first = rest.substr(0, split);
    std::string_view second = split == std::string_view::npos ? std::string_view() : rest.substr(split + 1);
    switch (data[0] % 8) {
    case 0: {  // PLAIN
        auto plain = sasl::make_mechanism("PLAIN", store());
        auto result = plain->step(as_span(rest));
        check(result);
        if (result.status == sasl::step_status::succeeded && rest.find(password) == std::string_view::npos) std::abort();
        break;
    }
    case 1:
    case 2: {  // SCRAM server: client-first, then client-final
        auto scram = sasl::make_mechanism(data[0] % 8 == 1 ? "SCRAM-SHA-256" : "SCRAM-SHA-512", store(), "SERVERNONCE");
        auto result = scram->step(as_span(first));
        check(result);
        if (result.status == sasl::step_status::continue_exchange) {
            auto final = scram->step(as_span(second));
            check(final);
            // A proof takes the password: random bytes never get in.
            if (final.status == sasl::step_status::succeeded) std::abort();
        }
        break;
    }
    case 3: {  // OAUTHBEARER: GS2 header, key=value pairs, the JWT
        auto mechanism = oauth::make_oauthbearer(keys(), oauth::settings{}, [] { return int64_t(1'700'000'000); });
        auto result = mechanism->step(as_span(rest));
        check(result);
        if (result.status == sasl::step_status::succeeded) std::abort();  // no valid signature without the key
        oauth::validate(rest, *keys(), oauth::settings{}, 1'700'000'000);
        break;
    }
    case 4: {  // SCRAM client: the broker's server-first, then server-final
        auto client = sasl::make_client_mechanism(data[0] & 0x80 ? "SCRAM-SHA-512" : "SCRAM-SHA-256", "alice",
                                                  std::string(password), {}, "CLIENTNONCE");
        client->initial();
        auto step = client->step(as_span(first));
        if (step.status == sasl::client_status::failed && step.reason.find(password) != std::string::npos) std::abort();
        if (step.status == sasl::client_status::continue_exchange) {
            auto done = client->step(as_span(second));
            // The server signature needs the password: random bytes never complete it.
            if (done.status == sasl::client_status::done) std::abort();
        }
        break;
    }
    case 5: {  // the broker's SaslHandshake and SaslAuthenticate responses
        auto bytes = std::as_bytes(std::span(rest.data(), rest.size()));
        parse_sasl_handshake_response(bytes);
        parse_sasl_authenticate_response(bytes);
        break;
    }
    case 6:
    case 7: {  // a client's SaslHandshake then SaslAuthenticate bodies, any version, or raw tokens
        static shard_metrics metrics;
        static std::shared_ptr<const sasl_listener> listener = [] {
            proxy_config config = load_config_string(
                "kafka: {bootstrap_servers: ['127.0.0.1:9092']}\n"
                "listen: {security: {protocol: SASL_PLAINTEXT, sasl: {enabled_mechanisms: [PLAIN, SCRAM-SHA-256], "
                "credentials: {users: {alice: fuzz-Password-7}}}}}\n");
            std::string error;
            auto built = build_sasl_listener(config, error);
            if (!built) std::abort();
            return built;
        }();
        client_authenticator auth(listener, "fuzz", metrics);
        int16_t version = int16_t(data[0] >> 4) % 3;
        auto handshake = auth.handshake(std::as_bytes(std::span(first.data(), first.size())), int16_t(version % 2));
        if (handshake.close) break;
        auto second_bytes = std::as_bytes(std::span(second.data(), second.size()));
        auto answer = auth.expects_raw_token() ? auth.raw_token(second_bytes, 1) : auth.authenticate(second_bytes, version, 1);
        (void)answer;
        if (auth.authenticated() && second.find(password) == std::string_view::npos) std::abort();
        break;
    }
    }
    return 0;
}
