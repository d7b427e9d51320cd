// SASL client mechanisms toward brokers (DESIGN.md section 6, kafka.sasl.*): PLAIN (RFC 4616),
// SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677) and OAUTHBEARER (RFC 7628). Pure like
// sasl.h: messages in, messages and the outcome out; the caller carries them in
// SaslAuthenticate requests. Only token_file touches the file system.
//
// Round trips, with `initial()` sent in the first SaslAuthenticate and each response's
// auth_bytes given to `step()` (a response with an error code ends the exchange before that):
//   PLAIN         initial() = "\0user\0password"; step(empty) -> done.
//   SCRAM-SHA-*   initial() = client-first-message; step(server-first-message) -> continue
//                 with client-final-message; step(server-final-message) -> done once its v=
//                 matches the server signature (the broker proved it knows the password), or
//                 failed on a mismatch or an e= error (named in the reason).
//   OAUTHBEARER   initial() = "n,,\x01auth=Bearer <token>\x01\x01"; step(empty) -> done; an
//                 error JSON from the broker -> failed with its "status" in the reason.
// An empty initial() means the mechanism cannot start (PLAIN credentials holding a NUL byte,
// no or a malformed OAUTHBEARER token, no random nonce); the next step() then fails and says
// why, without anything having to be sent.
//
// SCRAM user names and passwords are used as given (UTF-8), without SASLprep, as Kafka's own
// client does; ',' and '=' in the user name are escaped as "=2C" and "=3D".
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kpp::sasl {

// The iteration counts a SCRAM client accepts: Kafka's minimum, and a maximum so a broker (or
// whoever sits between) cannot make the proxy spend seconds of CPU per connection.
inline constexpr uint32_t scram_client_iterations_min = 4096;
inline constexpr uint32_t scram_client_iterations_max = 100000;
inline constexpr size_t scram_client_nonce_random_bytes = 24;  // 32 base64 characters
inline constexpr size_t token_file_bytes_max = 16 * 1024;
static_assert(scram_client_iterations_min <= scram_client_iterations_max);
static_assert(scram_client_nonce_random_bytes % 3 == 0, "a nonce without base64 padding");

enum class client_status : uint8_t {
    continue_exchange,  // send `message` in the next SaslAuthenticate
    done,               // authenticated; nothing more to send
    failed,             // give the connection up; `reason` says why
};

struct client_step {
    client_status status = client_status::failed;
    std::vector<uint8_t> message;
    std::string reason;  // for the log; never a secret
};

class client_mechanism {
public:
    virtual ~client_mechanism() = default;
    // Starts (or restarts, for re-authentication) an exchange.
    virtual std::vector<uint8_t> initial() = 0;
    virtual client_step step(std::span<const uint8_t> server_message) = 0;
};

// "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512" (user, password) or "OAUTHBEARER" (`token`, called
// at each initial() so a rotated token is picked up); nullptr for any other name. `nonce` fixes
// the SCRAM client nonce (tests; empty: 24 random bytes in base64).
std::unique_ptr<client_mechanism> make_client_mechanism(std::string_view name, std::string user,
                                                        std::string password,
                                                        std::function<std::string()> token = {},
                                                        std::string nonce = {});

// An OAUTHBEARER token kept in a file and replaced from outside (a Kubernetes projected
// token). Shared by all cores, hence the mutex.
class token_file {
public:
    explicit token_file(std::string path);

    // The token with surrounding white space trimmed; the file is read again only when its
    // modification time, size or inode changed since the last good read. On an error (missing,
    // empty, over token_file_bytes_max) returns empty and sets `error`, naming the path;
    // clears `error` otherwise.
    std::string current(std::string& error);

private:
    struct file_stamp {
        dev_t device = 0;
        ino_t inode = 0;
        off_t size_bytes = -1;
        int64_t modified_ns = 0;
        bool operator==(const file_stamp&) const = default;
    };
    static file_stamp stamp_of(const struct stat& status);
    std::string read_locked(std::string& error);

    const std::string path_;
    std::mutex lock_;
    bool loaded_ = false;
    file_stamp stamp_;
    std::string token_;
};

}  // namespace kpp::sasl
