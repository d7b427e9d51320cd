#include "proxy/sasl.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <span>
#include <string>

namespace kpp::sasl {
namespace {

std::vector<uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }
std::string text(const std::vector<uint8_t>& data) { return {data.begin(), data.end()}; }

credential_store store_with(std::map<std::string, std::string> passwords,
                            std::map<std::string, scram_credential> keys = {}) {
    auto shared_passwords = std::make_shared<std::map<std::string, std::string>>(std::move(passwords));
    auto shared_keys = std::make_shared<std::map<std::string, scram_credential>>(std::move(keys));
    credential_store store;
    store.password = [shared_passwords](std::string_view user) -> std::optional<std::string> {
        auto found = shared_passwords->find(std::string(user));
        if (found == shared_passwords->end()) return std::nullopt;
        return found->second;
    };
    store.scram = [shared_keys](scram_hash, std::string_view user) -> std::optional<scram_credential> {
        auto found = shared_keys->find(std::string(user));
        if (found == shared_keys->end()) return std::nullopt;
        return found->second;
    };
    return store;
}

// RFC 7677 section 3: the SCRAM-SHA-256 exchange of user "user" with password "pencil".
TEST(sasl_scram, rfc7677_sha256_exchange) {
    auto salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==");
    ASSERT_TRUE(salt);
    credential_store store =
        store_with({}, {{"user", derive_scram_credential(scram_hash::sha256, "pencil", *salt, 4096)}});
    auto server = make_mechanism("SCRAM-SHA-256", store, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    ASSERT_TRUE(server);
    step_result first = server->step(bytes("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"));
    ASSERT_EQ(first.status, step_status::continue_exchange) << first.reason;
    EXPECT_EQ(text(first.response),
              "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    step_result final = server->step(bytes(
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
    ASSERT_EQ(final.status, step_status::succeeded) << final.reason;
    EXPECT_EQ(final.user, "user");
    EXPECT_EQ(text(final.response), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    // Nothing after the end.
    EXPECT_EQ(server->step(bytes("c=biws")).status, step_status::failed);
}

TEST(sasl_scram, a_wrong_proof_or_nonce_or_binding_fails_without_saying_which_secret) {
    auto salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==");
    credential_store store =
        store_with({}, {{"user", derive_scram_credential(scram_hash::sha256, "pencil", *salt, 4096)}});
    const std::string nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    auto attempt = [&](const std::string& final_message) {
        auto server = make_mechanism("SCRAM-SHA-256", store, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        EXPECT_EQ(server->step(bytes("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")).status, step_status::continue_exchange);
        return server->step(bytes(final_message));
    };
    auto wrong = attempt("c=biws,r=" + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVA=");
    EXPECT_EQ(wrong.status, step_status::failed);
    EXPECT_EQ(wrong.reason, "wrong password");
    EXPECT_EQ(wrong.user, "user");
    EXPECT_EQ(attempt("c=biws,r=" + nonce + "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").status,
              step_status::failed);
    EXPECT_EQ(attempt("c=eSws,r=" + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").status,
              step_status::failed);
    EXPECT_EQ(attempt("c=biws,r=" + nonce + ",p=short").status, step_status::failed);
    // The same proof in a non-canonical encoding (padding bits set) is malformed.
    EXPECT_EQ(attempt("c=biws,r=" + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR=").reason,
              "SCRAM: malformed proof");
    EXPECT_EQ(attempt("c=biws,r=" + nonce).status, step_status::failed);
    // An unknown user gets a server-first too (no enumeration), then fails as unknown.
    auto server = make_mechanism("SCRAM-SHA-256", store, "S");
    auto first = server->step(bytes("n,,n=nobody,r=abc"));
    EXPECT_EQ(first.status, step_status::continue_exchange);
    auto final = server->step(bytes("c=biws,r=abcS,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
    EXPECT_EQ(final.status, step_status::failed);
    EXPECT_EQ(final.reason, "unknown user");
    for (const auto& reason : {wrong.reason, final.reason}) EXPECT_EQ(reason.find("pencil"), std::string::npos);
}

// The client proof of RFC 5802 for `final_without_proof`, computed here from the password.
std::string proof_for(const std::string& password, std::span<const uint8_t> salt, const std::string& auth_message) {
    std::vector<uint8_t> salted(32);
    PKCS5_PBKDF2_HMAC(password.data(), int(password.size()), salt.data(), int(salt.size()), 4096, EVP_sha256(),
                      int(salted.size()), salted.data());
    auto mac = [](std::span<const uint8_t> key, std::string_view data) {
        std::vector<uint8_t> out(32);
        unsigned int length = 0;
        HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(),
             out.data(), &length);
        return out;
    };
    std::vector<uint8_t> client_key = mac(salted, "Client Key");
    std::vector<uint8_t> stored(32);
    unsigned int length = 0;
    EVP_Digest(client_key.data(), client_key.size(), stored.data(), &length, EVP_sha256(), nullptr);
    std::vector<uint8_t> signature = mac(stored, auth_message);
    for (size_t at = 0; at < client_key.size(); ++at) client_key[at] ^= signature[at];
    return base64_encode(client_key);
}

// librdkafka before 2.6.1 repeats its nonce in front of the combined one; Kafka brokers
// accept that, so the proxy does, in exactly that form.
TEST(sasl_scram, the_nonce_form_of_older_librdkafka_is_accepted_and_nothing_looser) {
    auto salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==");
    credential_store store =
        store_with({}, {{"user", derive_scram_credential(scram_hash::sha256, "pencil", *salt, 4096)}});
    const std::string client_nonce = "rOprNGfwEbeRWgbNEkqO";
    auto attempt = [&](const std::string& sent_nonce) {
        auto server = make_mechanism("SCRAM-SHA-256", store, "SERVER");
        step_result first = server->step(bytes("n,,n=user,r=" + client_nonce));
        EXPECT_EQ(first.status, step_status::continue_exchange);
        std::string without_proof = "c=biws,r=" + sent_nonce;
        std::string auth_message = "n=user,r=" + client_nonce + "," + text(first.response) + "," + without_proof;
        return server->step(bytes(without_proof + ",p=" + proof_for("pencil", *salt, auth_message)));
    };
    EXPECT_EQ(attempt(client_nonce + "SERVER").status, step_status::succeeded);
    EXPECT_EQ(attempt(client_nonce + client_nonce + "SERVER").status, step_status::succeeded);
    EXPECT_EQ(attempt("x" + client_nonce + "SERVER").reason, "SCRAM: nonce differs from the exchange's");
    EXPECT_EQ(attempt(client_nonce + "SERVER" + client_nonce).reason, "SCRAM: nonce differs from the exchange's");
    EXPECT_EQ(attempt("SERVER").reason, "SCRAM: nonce differs from the exchange's");
}

TEST(sasl_scram, malformed_client_first_messages_fail) {
    credential_store store = store_with({{"user", "pencil"}});
    for (const char* message : {"", "n", "p=tls-unique,,n=user,r=abc", "x,,n=user,r=abc", "n,,r=abc,n=user",
                                "n,,n=,r=abc", "n,,n=us=er,r=abc", "n,,n=user,r=", "n,a=other,n=user,r=abc",
                                "n,,n=user,r=abc,m=ext", "n,,n=user,r=abc,tokenauth=true", "n,,n=user,r=a,b"}) {
        auto server = make_mechanism("SCRAM-SHA-512", store);
        EXPECT_EQ(server->step(bytes(message)).status, step_status::failed) << message;
    }
    // Escaped names: "=2C" is ',' and "=3D" is '='.
    credential_store odd = store_with({{"a,b=c", "pw"}});
    auto server = make_mechanism("SCRAM-SHA-256", odd);
    auto first = server->step(bytes("n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=xyz"));
    EXPECT_EQ(first.status, step_status::continue_exchange) << first.reason;
    EXPECT_EQ(first.user, "a,b=c");
}

TEST(sasl_plain, passwords_are_checked_and_nothing_secret_is_reported) {
    credential_store store = store_with({{"alice", "s3cret"}});
    auto run = [&](std::string_view message) {
        return make_mechanism("PLAIN", store)->step(bytes(message));
    };
    auto ok = run(std::string_view("\0alice\0s3cret", 13));
    EXPECT_EQ(ok.status, step_status::succeeded);
    EXPECT_EQ(ok.user, "alice");
    EXPECT_EQ(run(std::string_view("alice\0alice\0s3cret", 18)).status, step_status::succeeded);
    auto wrong = run(std::string_view("\0alice\0s3creT", 13));
    EXPECT_EQ(wrong.status, step_status::failed);
    EXPECT_EQ(wrong.reason, "wrong password");
    EXPECT_EQ(run(std::string_view("\0alice\0s3cret!", 14)).status, step_status::failed);
    EXPECT_EQ(run(std::string_view("\0alice\0", 7)).status, step_status::failed);
    EXPECT_EQ(run(std::string_view("\0bob\0s3cret", 11)).reason, "unknown user");
    EXPECT_EQ(run(std::string_view("bob\0alice\0s3cret", 16)).status, step_status::failed);
    EXPECT_EQ(run("alice s3cret").status, step_status::failed);
    EXPECT_EQ(run(std::string_view("\0\0s3cret", 8)).status, step_status::failed);
    EXPECT_FALSE(make_mechanism("GSSAPI", store));
}

TEST(sasl, secrets_compare_equal_only_when_equal_and_base64_round_trips) {
    EXPECT_TRUE(equal_secret(bytes("abc"), bytes("abc")));
    EXPECT_FALSE(equal_secret(bytes("abd"), bytes("abc")));
    EXPECT_FALSE(equal_secret(bytes("ab"), bytes("abc")));
    EXPECT_FALSE(equal_secret(bytes("abcd"), bytes("abc")));
    EXPECT_TRUE(equal_secret(bytes(""), bytes("")));
    for (std::string sample : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
        std::string encoded = base64_encode(bytes(sample));
        auto decoded = base64_decode(encoded);
        ASSERT_TRUE(decoded) << encoded;
        EXPECT_EQ(text(*decoded), sample);
    }
    EXPECT_EQ(base64_encode(bytes("foobar")), "Zm9vYmFy");
    EXPECT_EQ(base64_encode(bytes("fo")), "Zm8=");
    for (const char* bad : {"Zm9", "Zm9v!mFy", "Zm=v", "=Zm8", "Zg==Zg==", "Zm9=", "Zh=="})
        EXPECT_FALSE(base64_decode(bad)) << bad;
}

}  // namespace
}  // namespace kpp::sasl
