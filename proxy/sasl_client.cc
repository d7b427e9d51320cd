#include "proxy/sasl_client.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>
#include <system_error>

#include "proxy/sasl.h"
#include "proxy/sasl_internal.h"

namespace kpp::sasl {
namespace {

// Every mechanism here starts with initial() and ends in `ended` once done or failed.
enum class stage : uint8_t { idle, sent_first, sent_final, ended };

constexpr std::string_view gs2_header = "n,,";  // no channel binding, no authorization id
constexpr char oauth_separator = '\x01';        // RFC 7628 kvsep

std::span<const uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::string_view text_of(std::span<const uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::vector<uint8_t> vector_of(std::string_view text) { return {text.begin(), text.end()}; }

client_step failure(std::string reason) {
    client_step result;
    result.status = client_status::failed;
    result.reason = std::move(reason);
    return result;
}

client_step reply(std::string_view message) {
    client_step result;
    result.status = client_status::continue_exchange;
    result.message = vector_of(message);
    return result;
}

client_step finished() {
    client_step result;
    result.status = client_status::done;
    return result;
}

// Text a broker sent, made safe for a log line: printable ASCII only, and short.
std::string log_excerpt(std::string_view text) {
    constexpr size_t excerpt_chars_max = 64;
    std::string out;
    for (char c : text.substr(0, excerpt_chars_max)) out += c >= 0x20 && c <= 0x7e ? c : '?';
    if (text.size() > excerpt_chars_max) out += "...";
    return out;
}

// The reason an exchange that ended gets for any further message.
std::string ended_reason(std::string_view mechanism_name, const std::string& unusable) {
    if (!unusable.empty()) return unusable;
    return std::string(mechanism_name) + ": a server message outside the exchange";
}

class plain_client final : public client_mechanism {
public:
    plain_client(std::string user, std::string password) : user_(std::move(user)), password_(std::move(password)) {}
    ~plain_client() override { OPENSSL_cleanse(password_.data(), password_.size()); }

    std::vector<uint8_t> initial() override {
        stage_ = stage::ended;
        unusable_.clear();
        // A NUL would shift the fields the broker reads.
        if (user_.empty() || user_.find('\0') != std::string::npos || password_.find('\0') != std::string::npos) {
            unusable_ = "PLAIN: the user name is empty or a credential holds a NUL byte";
            return {};
        }
        stage_ = stage::sent_first;
        std::string message = std::string(1, '\0') + user_ + '\0' + password_;
        std::vector<uint8_t> out = vector_of(message);
        OPENSSL_cleanse(message.data(), message.size());
        return out;
    }

    client_step step(std::span<const uint8_t> server_message) override {
        if (stage_ != stage::sent_first) return failure(ended_reason("PLAIN", unusable_));
        stage_ = stage::ended;
        if (!server_message.empty()) return failure("PLAIN: the broker answered with data, expected none");
        return finished();
    }

private:
    std::string user_;
    std::string password_;
    stage stage_ = stage::idle;
    std::string unusable_;
};

// RFC 5802 saslname: ',' and '=' are escaped; a NUL has no encoding.
std::optional<std::string> encode_saslname(std::string_view name) {
    std::string out;
    for (char c : name) {
        if (c == '\0') return std::nullopt;
        if (c == ',') out += "=2C";
        else if (c == '=') out += "=3D";
        else out += c;
    }
    return out;
}

std::string random_nonce() {
    uint8_t random[scram_client_nonce_random_bytes];
    if (RAND_bytes(random, sizeof random) != 1) return {};
    return base64_encode(random);
}

std::optional<uint32_t> parse_iterations(std::string_view text) {
    uint32_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

class scram_client final : public client_mechanism {
public:
    scram_client(scram_hash hash, std::string user, std::string password, std::string nonce)
        : hash_(hash), user_(std::move(user)), password_(std::move(password)), fixed_nonce_(std::move(nonce)) {}
    ~scram_client() override {
        OPENSSL_cleanse(password_.data(), password_.size());
        OPENSSL_cleanse(server_signature_.data(), server_signature_.size());
    }

    std::vector<uint8_t> initial() override {
        stage_ = stage::ended;
        unusable_.clear();
        server_signature_.clear();
        std::optional<std::string> name = encode_saslname(user_);
        if (!name || name->empty()) {
            unusable_ = "SCRAM: the user name is empty or holds a NUL byte";
            return {};
        }
        // A fresh nonce per exchange, so a re-authentication never replays one.
        client_nonce_ = fixed_nonce_.empty() ? random_nonce() : fixed_nonce_;
        if (client_nonce_.empty()) {
            unusable_ = "SCRAM: no random bytes for the client nonce";
            return {};
        }
        if (!printable_nonce(client_nonce_)) {
            unusable_ = "SCRAM: malformed client nonce";
            return {};
        }
        client_first_bare_ = "n=" + *name + ",r=" + client_nonce_;
        stage_ = stage::sent_first;
        return vector_of(std::string(gs2_header) + client_first_bare_);
    }

    client_step step(std::span<const uint8_t> server_message) override {
        std::string_view text = text_of(server_message);
        if (stage_ == stage::sent_first) return server_first(text);
        if (stage_ == stage::sent_final) return server_final(text);
        return failure(ended_reason("SCRAM", unusable_));
    }

private:
    client_step server_first(std::string_view text) {
        stage_ = stage::ended;  // any failure ends the exchange
        auto attributes = attributes_of(text);
        if (!attributes.empty() && attributes[0].first == 'm')
            return failure("SCRAM: the broker requires an extension this client does not know");
        if (attributes.size() < 3 || attributes[0].first != 'r' || attributes[1].first != 's' ||
            attributes[2].first != 'i')
            return failure("SCRAM: malformed server-first-message");
        std::string_view nonce = attributes[0].second;
        // The server appends its part; anything else is a replay or a broken server.
        if (nonce.size() <= client_nonce_.size() || !nonce.starts_with(client_nonce_) || !printable_nonce(nonce))
            return failure("SCRAM: the server nonce does not extend the client nonce");
        std::optional<std::vector<uint8_t>> salt = base64_decode(attributes[1].second);
        if (!salt || salt->empty()) return failure("SCRAM: malformed salt");
        std::optional<uint32_t> iterations = parse_iterations(attributes[2].second);
        if (!iterations) return failure("SCRAM: malformed iteration count");
        if (*iterations < scram_client_iterations_min || *iterations > scram_client_iterations_max)
            return failure("SCRAM: iteration count " + std::to_string(*iterations) + " outside " +
                           std::to_string(scram_client_iterations_min) + ".." +
                           std::to_string(scram_client_iterations_max));

        std::string final_without_proof = "c=" + base64_encode(bytes_of(gs2_header)) + ",r=" + std::string(nonce);
        std::string auth_message = client_first_bare_ + "," + std::string(text) + "," + final_without_proof;
        std::optional<std::vector<uint8_t>> proof = prove(*salt, *iterations, auth_message);
        if (!proof) return failure("SCRAM: key derivation failed");
        stage_ = stage::sent_final;
        return reply(final_without_proof + ",p=" + base64_encode(*proof));
    }

    // ClientProof for the message; keeps the ServerSignature the server-final must carry.
    std::optional<std::vector<uint8_t>> prove(std::span<const uint8_t> salt, uint32_t iterations,
                                              std::string_view auth_message) {
        size_t key_bytes = size_t(EVP_MD_get_size(digest_of(hash_)));
        std::vector<uint8_t> salted(key_bytes);
        if (PKCS5_PBKDF2_HMAC(password_.data(), int(password_.size()), salt.data(), int(salt.size()),
                              int(iterations), digest_of(hash_), int(key_bytes), salted.data()) != 1)
            return std::nullopt;
        std::vector<uint8_t> client_key = hmac(hash_, salted, "Client Key");
        std::vector<uint8_t> server_key = hmac(hash_, salted, "Server Key");
        std::vector<uint8_t> proof = hmac(hash_, digest(hash_, client_key), auth_message);
        for (size_t at = 0; at < proof.size(); ++at) proof[at] ^= client_key[at];
        server_signature_ = hmac(hash_, server_key, auth_message);
        OPENSSL_cleanse(salted.data(), salted.size());
        OPENSSL_cleanse(client_key.data(), client_key.size());
        OPENSSL_cleanse(server_key.data(), server_key.size());
        return proof;
    }

    client_step server_final(std::string_view text) {
        stage_ = stage::ended;
        auto attributes = attributes_of(text);
        if (!attributes.empty() && attributes[0].first == 'e')
            return failure("SCRAM: the broker answered e=" + log_excerpt(attributes[0].second));
        if (attributes.empty() || attributes[0].first != 'v') return failure("SCRAM: malformed server-final-message");
        std::optional<std::vector<uint8_t>> signature = base64_decode(attributes[0].second);
        if (!signature) return failure("SCRAM: malformed server signature");
        // A broker that does not know the password (or a party in between) cannot make this.
        if (!equal_secret(*signature, server_signature_)) return failure("SCRAM: wrong server signature");
        return finished();
    }

    scram_hash hash_;
    std::string user_;
    std::string password_;
    std::string fixed_nonce_;
    stage stage_ = stage::idle;
    std::string unusable_;
    std::string client_nonce_;
    std::string client_first_bare_;
    std::vector<uint8_t> server_signature_;
};

// RFC 6750 b64token: what a bearer token may hold, so it cannot break the framing.
bool bearer_token(std::string_view token) {
    size_t padding_at = token.find_last_not_of('=') + 1;
    if (padding_at == 0) return false;  // empty, or padding only
    return std::all_of(token.begin(), token.begin() + ptrdiff_t(padding_at), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
               c == '_' || c == '~' || c == '+' || c == '/';
    });
}

// The "status" member of the broker's RFC 7628 error JSON, found without a JSON parser: the
// value only goes to a log line, through log_excerpt.
std::optional<std::string_view> error_status_of(std::string_view json) {
    constexpr std::string_view key = "\"status\"";
    size_t at = json.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    at = json.find_first_not_of(" \t\r\n", at + key.size());
    if (at == std::string_view::npos || json[at] != ':') return std::nullopt;
    at = json.find_first_not_of(" \t\r\n", at + 1);
    if (at == std::string_view::npos || json[at] != '"') return std::nullopt;
    size_t end = json.find('"', at + 1);
    if (end == std::string_view::npos) return std::nullopt;
    return json.substr(at + 1, end - at - 1);
}

class oauthbearer_client final : public client_mechanism {
public:
    explicit oauthbearer_client(std::function<std::string()> token) : token_(std::move(token)) {}

    std::vector<uint8_t> initial() override {
        stage_ = stage::ended;
        unusable_.clear();
        std::string token = token_ ? token_() : std::string();
        if (token.empty()) {
            unusable_ = "OAUTHBEARER: no token";
            return {};
        }
        if (!bearer_token(token)) {
            unusable_ = "OAUTHBEARER: the token holds characters a bearer token cannot";
            return {};
        }
        stage_ = stage::sent_first;
        std::string message = std::string(gs2_header) + oauth_separator + "auth=Bearer " + token + oauth_separator +
                              oauth_separator;
        std::vector<uint8_t> out = vector_of(message);
        OPENSSL_cleanse(message.data(), message.size());
        OPENSSL_cleanse(token.data(), token.size());
        return out;
    }

    client_step step(std::span<const uint8_t> server_message) override {
        if (stage_ != stage::sent_first) return failure(ended_reason("OAUTHBEARER", unusable_));
        stage_ = stage::ended;
        if (server_message.empty()) return finished();
        // RFC 7628 has the client answer the error with a lone kvsep so the broker can fail
        // the exchange; the proxy gives the connection up instead, which ends it as surely.
        std::optional<std::string_view> status = error_status_of(text_of(server_message));
        if (!status) return failure("OAUTHBEARER: the broker rejected the token without a status");
        return failure("OAUTHBEARER: the broker rejected the token, status " + log_excerpt(*status));
    }

private:
    std::function<std::string()> token_;
    stage stage_ = stage::idle;
    std::string unusable_;
};

}  // namespace

std::unique_ptr<client_mechanism> make_client_mechanism(std::string_view name, std::string user,
                                                        std::string password, std::function<std::string()> token,
                                                        std::string nonce) {
    if (name == "PLAIN") return std::make_unique<plain_client>(std::move(user), std::move(password));
    if (name == "SCRAM-SHA-256")
        return std::make_unique<scram_client>(scram_hash::sha256, std::move(user), std::move(password),
                                              std::move(nonce));
    if (name == "SCRAM-SHA-512")
        return std::make_unique<scram_client>(scram_hash::sha512, std::move(user), std::move(password),
                                              std::move(nonce));
    if (name == "OAUTHBEARER") return std::make_unique<oauthbearer_client>(std::move(token));
    return nullptr;
}

token_file::token_file(std::string path) : path_(std::move(path)) {}

token_file::file_stamp token_file::stamp_of(const struct stat& status) {
    return {status.st_dev, status.st_ino, status.st_size,
            int64_t(status.st_mtim.tv_sec) * 1000000000 + status.st_mtim.tv_nsec};
}

std::string token_file::current(std::string& error) {
    std::lock_guard lock(lock_);
    struct stat status {};
    if (::stat(path_.c_str(), &status) != 0) {
        loaded_ = false;
        error = "token file " + path_ + ": " + std::generic_category().message(errno);
        return {};
    }
    if (loaded_ && stamp_of(status) == stamp_) {
        error.clear();
        return token_;
    }
    return read_locked(error);
}

std::string token_file::read_locked(std::string& error) {
    loaded_ = false;  // until a read succeeds, every call tries again
    // O_NONBLOCK: a FIFO put there must not hang the core; it fails the regular-file check.
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        error = "token file " + path_ + ": " + std::generic_category().message(errno);
        return {};
    }
    // The stamp of what is read, not of what stat saw: the file may have been replaced since.
    struct stat status {};
    std::string text;
    bool regular = ::fstat(fd, &status) == 0 && S_ISREG(status.st_mode);
    bool too_large = regular && size_t(status.st_size) > token_file_bytes_max;
    int read_errno = 0;
    if (regular && !too_large) {
        // One byte past the limit shows a file that grew after fstat.
        text.resize(token_file_bytes_max + 1);
        size_t filled = 0;
        while (filled < text.size()) {
            ssize_t got = ::read(fd, text.data() + filled, text.size() - filled);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) read_errno = errno;
            if (got <= 0) break;
            filled += size_t(got);
        }
        text.resize(filled);
        too_large = filled > token_file_bytes_max;
    }
    ::close(fd);
    if (!regular) {
        error = "token file " + path_ + ": not a regular file";
        return {};
    }
    if (read_errno != 0) {
        error = "token file " + path_ + ": " + std::generic_category().message(read_errno);
        return {};
    }
    if (too_large) {
        error = "token file " + path_ + ": larger than " + std::to_string(token_file_bytes_max) + " bytes";
        return {};
    }
    constexpr std::string_view white_space = " \t\r\n\v\f";
    size_t first = text.find_first_not_of(white_space);
    if (first == std::string::npos) {
        error = "token file " + path_ + ": empty";
        return {};
    }
    token_ = text.substr(first, text.find_last_not_of(white_space) - first + 1);
    OPENSSL_cleanse(text.data(), text.size());
    stamp_ = stamp_of(status);
    loaded_ = true;
    error.clear();
    return token_;
}

}  // namespace kpp::sasl
