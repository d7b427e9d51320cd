#include "proxy/client_auth.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>

#include "protocol/api.h"
#include "protocol/wire.h"
#include "proxy/metrics.h"
#include "proxy/oauth.h"

namespace kpp {
namespace {

constexpr int16_t unsupported_version = 35;
constexpr int16_t unsupported_sasl_mechanism = 33;
constexpr int16_t illegal_sasl_state = 34;
constexpr int16_t sasl_authentication_failed = 58;
constexpr int16_t api_key_sasl_authenticate = 36;
// Says nothing of which part was wrong: a user name that exists looks like one that does not.
constexpr std::string_view generic_failure = "Authentication failed: invalid credentials";

std::span<const uint8_t> as_bytes(std::span<const std::byte> bytes) {
    return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

void write_bytes_field(protocol::wire_writer& writer, std::span<const uint8_t> bytes, bool flexible) {
    if (flexible)
        writer.write_unsigned_varint(uint32_t(bytes.size()) + 1);
    else
        writer.write_int32(int32_t(bytes.size()));
    writer.write_raw({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
}

std::vector<uint8_t> random_salt() {
    std::vector<uint8_t> salt(16);
    if (RAND_bytes(salt.data(), int(salt.size())) != 1) throw std::runtime_error("no random bytes for a SCRAM salt");
    return salt;
}

// Adds one user to the tables; `where` names the entry for errors.
void add_user(sasl_listener& out, const std::string& name, const sasl_user& user) {
    if (!user.password.empty()) {
        out.passwords[name] = user.password;
        // SCRAM keys are derived once here, not per login: PBKDF2 is deliberately slow.
        for (sasl::scram_hash hash : {sasl::scram_hash::sha256, sasl::scram_hash::sha512})
            out.scram[{hash, name}] = sasl::derive_scram_credential(hash, user.password, random_salt(), user.iterations);
        return;
    }
    sasl::scram_credential credential;
    credential.salt = *sasl::base64_decode(user.salt);
    credential.iterations = user.iterations;
    credential.stored_key = *sasl::base64_decode(user.stored_key);
    credential.server_key = *sasl::base64_decode(user.server_key);
    sasl::scram_hash hash = credential.stored_key.size() == 32 ? sasl::scram_hash::sha256 : sasl::scram_hash::sha512;
    out.scram[{hash, name}] = std::move(credential);
}

// What a client sent, fit for a log line: printable ASCII only, bounded.
std::string printable(std::string_view text, size_t max_bytes = 64) {
    std::string out;
    for (char c : text.substr(0, max_bytes)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    if (text.size() > max_bytes) out += "...";
    return out;
}

bool is_enabled(const sasl_listener& listener, std::string_view name) {
    return std::find(listener.mechanisms.begin(), listener.mechanisms.end(), name) != listener.mechanisms.end();
}

// Loads the keys that sign tokens (a PEM file, or a JWKS file named by path or file://).
bool attach_oauthbearer(sasl_listener& listener, const listen_sasl_settings& settings, std::string& error) {
    oauth::key_set keys;
    auto load = [&](const std::string& path, const char* key) {
        std::string problem;
        auto loaded = oauth::load_keys(path, problem);
        if (!loaded) {
            error = std::string("listen.security.sasl.oauthbearer.") + key + ": " + problem;
            return false;
        }
        for (auto& entry : loaded->keys) keys.keys.push_back(std::move(entry));
        return true;
    };
    if (!settings.public_key_path.empty() && !load(settings.public_key_path, "public_key_path")) return false;
    if (!settings.jwks_url.empty()) {
        std::string path = settings.jwks_url.rfind("file://", 0) == 0 ? settings.jwks_url.substr(7) : settings.jwks_url;
        if (!load(path, "jwks_url")) return false;
    }
    auto shared_keys = std::make_shared<const oauth::key_set>(std::move(keys));
    oauth::settings rules;
    rules.issuer = settings.issuer;
    rules.audience = settings.audience;
    rules.required_scopes = settings.required_scopes;
    rules.clock_skew_seconds = int64_t(settings.clock_skew_seconds);
    listener.make_oauthbearer = [shared_keys, rules] { return oauth::make_oauthbearer(shared_keys, rules, {}); };
    listener.oauth_expiry = [](const sasl::mechanism& mechanism) -> std::optional<int64_t> {
        auto* oauth = dynamic_cast<const oauth::oauthbearer_mechanism*>(&mechanism);
        return oauth ? oauth->session_expiry_unix() : std::nullopt;
    };
    return true;
}

}  // namespace

std::shared_ptr<const sasl_listener> build_sasl_listener(const proxy_config& config, std::string& error) {
    const listen_security_settings& security = config.listen.security;
    if (security.protocol != "SASL_PLAINTEXT" && security.protocol != "SASL_SSL") return nullptr;
    const listen_sasl_settings& settings = security.sasl;
    auto listener = std::make_shared<sasl_listener>();
    listener->mechanisms = settings.enabled_mechanisms;
    listener->session_lifetime_ms = settings.session_lifetime_ms;
    listener->failed_authentication_delay_ms = settings.failed_authentication_delay_ms;
    sasl_user_map users = settings.users;
    if (!settings.credentials_file.empty()) {
        try {
            for (auto& [name, user] : load_sasl_credentials_file(settings.credentials_file)) {
                if (users.count(name) != 0) {
                    error = "listen.security.sasl.credentials.file: user '" + name +
                            "' is also in listen.security.sasl.credentials.users";
                    return nullptr;
                }
                users[name] = std::move(user);
            }
        } catch (const config_error& failure) {
            error = std::string("listen.security.sasl.credentials.file: ") + failure.what();
            return nullptr;
        }
    }
    for (const auto& [name, user] : users) add_user(*listener, name, user);
    // The store looks up the listener it belongs to; the listener outlives every mechanism
    // made from it (sessions hold it).
    const sasl_listener* self = listener.get();
    listener->store.password = [self](std::string_view user) -> std::optional<std::string> {
        auto found = self->passwords.find(user);
        if (found == self->passwords.end()) return std::nullopt;
        return found->second;
    };
    listener->store.scram = [self](sasl::scram_hash hash,
                                   std::string_view user) -> std::optional<sasl::scram_credential> {
        auto found = self->scram.find(std::pair{hash, std::string(user)});
        if (found == self->scram.end()) return std::nullopt;
        return found->second;
    };
    if (is_enabled(*listener, "OAUTHBEARER")) {
        if (!attach_oauthbearer(*listener, settings, error)) return nullptr;
    }
    return listener;
}

client_authenticator::client_authenticator(std::shared_ptr<const sasl_listener> listener, std::string peer,
                                           shard_metrics& metrics)
    : listener_(std::move(listener)), peer_(std::move(peer)), metrics_(metrics) {}

client_authenticator::outcome client_authenticator::handshake(std::span<const std::byte> body, int16_t version) {
    protocol::wire_reader reader(body);
    auto requested = reader.read_string(false, false);
    outcome out;
    protocol::wire_writer writer;
    int16_t error_code = 0;
    if (!reader.ok() || !requested) {
        out.close = true;
        return out;
    }
    std::string name(*requested);
    if (mechanism_) {
        // A handshake in the middle of an exchange: the client lost track of the state.
        error_code = illegal_sasl_state;
        out.delay_then_close = true;
    } else if (!is_enabled(*listener_, name)) {
        error_code = unsupported_sasl_mechanism;
        spdlog::warn("client {}: SASL mechanism '{}' is not enabled (listen.security.sasl.enabled_mechanisms)", peer_,
                     printable(name));
    } else {
        mechanism_ = name == "OAUTHBEARER" ? listener_->make_oauthbearer()
                                           : sasl::make_mechanism(name, listener_->store);
        mechanism_name_ = name;
        raw_tokens_ = version == 0;
    }
    writer.write_int16(error_code);
    writer.write_array_length(int32_t(listener_->mechanisms.size()), false);
    for (const std::string& enabled : listener_->mechanisms) writer.write_string(std::string_view(enabled), false);
    out.body = std::move(writer.bytes());
    return out;
}

client_authenticator::step_answer client_authenticator::step(std::span<const uint8_t> message, uint64_t now_ns) {
    step_answer answer;
    if (!mechanism_) {
        answer.error_code = illegal_sasl_state;
        answer.failed = true;
        spdlog::warn("client {}: SaslAuthenticate without a SaslHandshake first", peer_);
        return answer;
    }
    sasl::step_result result = mechanism_->step(message);
    if (result.status == sasl::step_status::continue_exchange) {
        answer.bytes = std::move(result.response);
        return answer;
    }
    bool reauthentication = authenticated_;
    if (result.status == sasl::step_status::succeeded && reauthentication && result.user != principal_) {
        // KIP-368: a re-authentication may not change who the connection is.
        result.status = sasl::step_status::failed;
        result.reason = "re-authentication as another user (the session is '" + printable(principal_, 128) + "')";
    }
    if (result.status == sasl::step_status::failed) {
        count(false);
        spdlog::warn("client {}: SASL {} authentication failed for user '{}': {}", peer_, mechanism_name_,
                     printable(result.user, 128), result.reason);
        answer.error_code = sasl_authentication_failed;
        answer.failed = true;
        mechanism_.reset();
        return answer;
    }
    count(true);
    if (reauthentication) bump(metrics_.sasl_reauthentications);
    uint64_t lifetime_ms = listener_->session_lifetime_ms;
    if (mechanism_name_ == "OAUTHBEARER" && listener_->oauth_expiry) {
        // The session never outlives the token it was opened with.
        if (auto expires = listener_->oauth_expiry(*mechanism_)) {
            int64_t left_ms = (*expires - int64_t(std::time(nullptr))) * 1000;
            uint64_t bounded = uint64_t(std::max<int64_t>(left_ms, 1));
            lifetime_ms = lifetime_ms == 0 ? bounded : std::min(lifetime_ms, bounded);
        }
    }
    expiry_ns_ = lifetime_ms == 0 ? 0 : now_ns + lifetime_ms * 1'000'000u;
    answer.session_lifetime_ms = int64_t(lifetime_ms);
    answer.bytes = std::move(result.response);
    authenticated_ = true;
    principal_ = result.user;
    spdlog::debug("client {}: {} as '{}' with SASL {}", peer_, reauthentication ? "re-authenticated" : "authenticated",
                  printable(principal_, 128), mechanism_name_);
    mechanism_.reset();
    return answer;
}

client_authenticator::outcome client_authenticator::authenticate(std::span<const std::byte> body, int16_t version,
                                                                 uint64_t now_ns) {
    bool flexible = version >= 2;
    protocol::wire_reader reader(body);
    auto token = reader.read_bytes_field(flexible, false);
    outcome out;
    if (!reader.ok() || !token) {
        out.close = true;
        return out;
    }
    step_answer answer = step(as_bytes(*token), now_ns);
    protocol::wire_writer writer;
    writer.write_int16(answer.error_code);
    if (answer.error_code == 0)
        writer.write_string(std::nullopt, flexible);
    else
        writer.write_string(answer.error_code == sasl_authentication_failed ? generic_failure
                                                                            : std::string_view("Unexpected SASL request"),
                            flexible);
    write_bytes_field(writer, answer.bytes, flexible);
    if (version >= 1) writer.write_int64(answer.session_lifetime_ms);
    if (flexible) writer.write_empty_tagged_fields();
    out.body = std::move(writer.bytes());
    out.delay_then_close = answer.failed;
    return out;
}

client_authenticator::outcome client_authenticator::raw_token(std::span<const std::byte> token, uint64_t now_ns) {
    step_answer answer = step(as_bytes(token), now_ns);
    outcome out;
    // Raw exchanges (SaslHandshake v0) have no error field: a failure closes the connection.
    if (answer.failed) {
        out.close = true;
        return out;
    }
    if (!mechanism_) raw_tokens_ = false;  // done: Kafka requests follow
    out.body.assign(reinterpret_cast<const std::byte*>(answer.bytes.data()),
                    reinterpret_cast<const std::byte*>(answer.bytes.data()) + answer.bytes.size());
    return out;
}

void client_authenticator::count(bool ok) {
    std::atomic<uint64_t>* counter = nullptr;
    if (mechanism_name_ == "PLAIN") counter = ok ? &metrics_.sasl_plain_ok : &metrics_.sasl_plain_failed;
    if (mechanism_name_ == "SCRAM-SHA-256") counter = ok ? &metrics_.sasl_scram256_ok : &metrics_.sasl_scram256_failed;
    if (mechanism_name_ == "SCRAM-SHA-512") counter = ok ? &metrics_.sasl_scram512_ok : &metrics_.sasl_scram512_failed;
    if (mechanism_name_ == "OAUTHBEARER") counter = ok ? &metrics_.sasl_oauth_ok : &metrics_.sasl_oauth_failed;
    if (counter) bump(*counter);
}

std::vector<std::byte> api_versions_answer(const std::map<int16_t, std::pair<int16_t, int16_t>>& broker_ranges,
                                           int16_t version, const std::function<bool(int16_t)>& withheld) {
    protocol::wire_writer writer;
    if (version < 0 || version > 3) {
        // Brokers answer an ApiVersions version they do not know in v0, naming their range.
        writer.write_int16(unsupported_version);
        writer.write_array_length(1, false);
        writer.write_int16(protocol::api_key::api_versions);
        writer.write_int16(0);
        writer.write_int16(3);
        return std::move(writer.bytes());
    }
    // Narrowed as forwarded answers are (the proxy's own ranges for the APIs it rewrites,
    // nothing that is unsafe under remapping), then SASL as this listener serves it.
    std::map<int16_t, std::pair<int16_t, int16_t>> ranges;
    for (const auto& [key, range] : broker_ranges) {
        if (withheld && withheld(key)) continue;
        int16_t low = range.first, high = range.second;
        if (auto own = protocol::proxy_rewrite_range(key)) {
            low = std::max(low, own->min);
            high = std::min(high, own->max);
            if (low > high) continue;
        }
        ranges[key] = {low, high};
    }
    ranges[protocol::api_key::sasl_handshake] = {0, 1};
    ranges[api_key_sasl_authenticate] = {0, 2};
    ranges[protocol::api_key::api_versions] = {0, 3};
    bool flexible = version >= 3;
    writer.write_int16(0);
    writer.write_array_length(int32_t(ranges.size()), flexible);
    for (const auto& [key, range] : ranges) {
        writer.write_int16(key);
        writer.write_int16(range.first);
        writer.write_int16(range.second);
        if (flexible) writer.write_empty_tagged_fields();
    }
    if (version >= 1) writer.write_int32(0);  // throttle_time_ms
    if (flexible) writer.write_empty_tagged_fields();
    return std::move(writer.bytes());
}

}  // namespace kpp
