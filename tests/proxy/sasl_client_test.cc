#include "proxy/sasl_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "proxy/sasl.h"
#include "proxy/sasl_internal.h"

namespace kpp::sasl {
namespace {

std::vector<uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }
std::string text(const std::vector<uint8_t>& data) { return {data.begin(), data.end()}; }

const std::string rfc_client_nonce = "rOprNGfwEbeRWgbNEkqO";
const std::string rfc_server_first =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const std::string rfc_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const std::string rfc_server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// A client that has sent the RFC 7677 client-first and awaits the server-first.
std::unique_ptr<client_mechanism> rfc_client_started() {
    auto client = make_client_mechanism("SCRAM-SHA-256", "user", "pencil", {}, rfc_client_nonce);
    EXPECT_EQ(text(client->initial()), "n,,n=user,r=" + rfc_client_nonce);
    return client;
}

credential_store store_with_passwords(std::map<std::string, std::string> passwords) {
    auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(passwords));
    credential_store store;
    store.password = [shared](std::string_view user) -> std::optional<std::string> {
        auto found = shared->find(std::string(user));
        if (found == shared->end()) return std::nullopt;
        return found->second;
    };
    return store;
}

struct exchange_outcome {
    client_status client = client_status::failed;
    std::string client_reason;
    step_status server = step_status::failed;
    std::string server_user;
    int round_trips = 0;
};

// Plays the exchange as the proxy and a broker would: the broker's answers go to the client
// until the broker ends it; a broker failure (an error code in Kafka) is never stepped.
exchange_outcome run_exchange(client_mechanism& client, mechanism& server) {
    exchange_outcome outcome;
    std::vector<uint8_t> message = client.initial();
    for (int round = 0; round < 4; ++round) {
        ++outcome.round_trips;
        step_result answer = server.step(message);
        outcome.server = answer.status;
        outcome.server_user = answer.user;
        if (answer.status == step_status::failed) return outcome;
        client_step next = client.step(answer.response);
        outcome.client = next.status;
        outcome.client_reason = next.reason;
        if (answer.status == step_status::succeeded || next.status != client_status::continue_exchange)
            return outcome;
        message = next.message;
    }
    ADD_FAILURE() << "the exchange did not end";
    return outcome;
}

// RFC 7677 section 3: the SCRAM-SHA-256 exchange of user "user" with password "pencil".
TEST(sasl_client_scram, rfc7677_sha256_exchange) {
    auto client = rfc_client_started();
    client_step final_step = client->step(bytes(rfc_server_first));
    ASSERT_EQ(final_step.status, client_status::continue_exchange) << final_step.reason;
    EXPECT_EQ(text(final_step.message), rfc_client_final);
    client_step done = client->step(bytes(rfc_server_final));
    EXPECT_EQ(done.status, client_status::done) << done.reason;
    EXPECT_TRUE(done.message.empty());
    // Nothing after the end.
    EXPECT_EQ(client->step(bytes(rfc_server_final)).status, client_status::failed);
}

TEST(sasl_client_scram, a_server_signature_that_does_not_match_fails) {
    for (std::string tampered : {std::string("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
                                 std::string("v=6rriTRBi23WpRR/wcouB84dhjr/BKU0+ZeZD5kZOYQw="),
                                 std::string("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9"), std::string("v="),
                                 std::string("v=not base64!")}) {
        auto client = rfc_client_started();
        ASSERT_EQ(client->step(bytes(rfc_server_first)).status, client_status::continue_exchange);
        client_step result = client->step(bytes(tampered));
        EXPECT_EQ(result.status, client_status::failed) << tampered;
        EXPECT_NE(result.reason, "") << tampered;
    }
    // Well-formed but wrong: one bit off, and another exchange's signature.
    for (std::string wrong : {std::string("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
                              std::string("v=6rriTRBi23WpRR/wcouB84dhjr/BKU0+ZeZD5kZOYQw=")}) {
        auto client = rfc_client_started();
        ASSERT_EQ(client->step(bytes(rfc_server_first)).status, client_status::continue_exchange);
        EXPECT_EQ(client->step(bytes(wrong)).reason, "SCRAM: wrong server signature") << wrong;
    }
}

TEST(sasl_client_scram, a_server_error_is_named_in_the_reason) {
    auto client = rfc_client_started();
    ASSERT_EQ(client->step(bytes(rfc_server_first)).status, client_status::continue_exchange);
    client_step result = client->step(bytes("e=invalid-proof"));
    EXPECT_EQ(result.status, client_status::failed);
    EXPECT_EQ(result.reason, "SCRAM: the broker answered e=invalid-proof");
    // Control characters from the broker do not reach the log line.
    client = rfc_client_started();
    ASSERT_EQ(client->step(bytes(rfc_server_first)).status, client_status::continue_exchange);
    EXPECT_EQ(client->step(bytes("e=bad\nline")).reason, "SCRAM: the broker answered e=bad?line");
}

TEST(sasl_client_scram, a_bad_server_first_message_fails) {
    const std::string rest = ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    auto attempt = [](const std::string& server_first) {
        auto client = rfc_client_started();
        client_step result = client->step(bytes(server_first));
        if (result.status == client_status::failed) {
            EXPECT_TRUE(result.message.empty());
        }
        return result;
    };
    // The server nonce must extend the client's, not replace or merely repeat it.
    EXPECT_EQ(attempt("r=XOprNGfwEbeRWgbNEkqO%hvYD" + rest).reason,
              "SCRAM: the server nonce does not extend the client nonce");
    EXPECT_EQ(attempt("r=" + rfc_client_nonce + rest).reason,
              "SCRAM: the server nonce does not extend the client nonce");
    EXPECT_EQ(attempt("r=rOprNGfwEbeRWgbNEkq" + rest).reason,
              "SCRAM: the server nonce does not extend the client nonce");
    // Iteration counts Kafka would not use, or that would cost too much CPU.
    const std::string start = "r=rOprNGfwEbeRWgbNEkqO%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=";
    EXPECT_EQ(attempt(start + "1000").reason, "SCRAM: iteration count 1000 outside 4096..100000");
    EXPECT_EQ(attempt(start + "4095").status, client_status::failed);
    EXPECT_EQ(attempt(start + "100001").status, client_status::failed);
    EXPECT_EQ(attempt(start + "99999999999").reason, "SCRAM: malformed iteration count");
    EXPECT_EQ(attempt(start + "-4096").reason, "SCRAM: malformed iteration count");
    EXPECT_EQ(attempt(start + "4096x").reason, "SCRAM: malformed iteration count");
    EXPECT_EQ(attempt(start).status, client_status::failed);
    EXPECT_EQ(attempt("r=rOprNGfwEbeRWgbNEkqO%hvYD,s=%%%,i=4096").reason, "SCRAM: malformed salt");
    EXPECT_EQ(attempt("r=rOprNGfwEbeRWgbNEkqO%hvYD,s=,i=4096").reason, "SCRAM: malformed salt");
    EXPECT_EQ(attempt("r=rOprNGfwEbeRWgbNEkqO%hvYD,i=4096").reason, "SCRAM: malformed server-first-message");
    EXPECT_EQ(attempt("").reason, "SCRAM: malformed server-first-message");
    EXPECT_EQ(attempt("m=ext," + std::string("r=rOprNGfwEbeRWgbNEkqO%hvYD") + rest).reason,
              "SCRAM: the broker requires an extension this client does not know");
    // The edge of the accepted range works.
    EXPECT_EQ(attempt(start + "4096").status, client_status::continue_exchange);
}

TEST(sasl_client_scram, sha512_against_the_server_mechanism) {
    credential_store store = store_with_passwords({{"alice", "wonderland"}});
    auto server = make_mechanism("SCRAM-SHA-512", store);
    auto client = make_client_mechanism("SCRAM-SHA-512", "alice", "wonderland");
    ASSERT_TRUE(server && client);
    exchange_outcome outcome = run_exchange(*client, *server);
    EXPECT_EQ(outcome.server, step_status::succeeded);
    EXPECT_EQ(outcome.server_user, "alice");
    EXPECT_EQ(outcome.client, client_status::done) << outcome.client_reason;
    EXPECT_EQ(outcome.round_trips, 2);

    // Re-authentication with the same client object: a fresh exchange, a fresh nonce.
    auto again = make_mechanism("SCRAM-SHA-512", store);
    EXPECT_EQ(run_exchange(*client, *again).client, client_status::done);

    auto wrong = make_client_mechanism("SCRAM-SHA-512", "alice", "wonder1and");
    auto server_for_wrong = make_mechanism("SCRAM-SHA-512", store);
    exchange_outcome failed = run_exchange(*wrong, *server_for_wrong);
    EXPECT_EQ(failed.server, step_status::failed);
    EXPECT_NE(failed.client, client_status::done);
}

TEST(sasl_client_scram, a_sha256_client_does_not_pass_a_sha512_server) {
    credential_store store = store_with_passwords({{"alice", "wonderland"}});
    auto server = make_mechanism("SCRAM-SHA-512", store);
    auto client = make_client_mechanism("SCRAM-SHA-256", "alice", "wonderland");
    EXPECT_EQ(run_exchange(*client, *server).server, step_status::failed);
}

// A broker (or a party in between) that does not know the password: its signature, made
// with keys from another password over the same transcript, is refused; the true one passes.
TEST(sasl_client_scram, a_server_without_the_password_is_caught) {
    const std::string client_nonce = "fixednonce0123456789abcdef";
    const std::vector<uint8_t> salt = bytes("salt-of-16-bytes");
    const std::string server_first = "r=" + client_nonce + "SERVERPART,s=" + base64_encode(salt) + ",i=4096";
    auto signature_with = [&](std::string_view password) {
        auto client = make_client_mechanism("SCRAM-SHA-512", "alice", "wonderland", {}, client_nonce);
        std::string client_first = text(client->initial());
        client_step client_final = client->step(bytes(server_first));
        EXPECT_EQ(client_final.status, client_status::continue_exchange) << client_final.reason;
        std::string final_message = text(client_final.message);
        std::string auth_message = client_first.substr(3) + "," + server_first + "," +
                                   final_message.substr(0, final_message.rfind(",p="));
        scram_credential keys = derive_scram_credential(scram_hash::sha512, password, salt, 4096);
        return client->step(bytes("v=" + base64_encode(hmac(scram_hash::sha512, keys.server_key, auth_message))));
    };
    client_step forged = signature_with("somethingelse");
    EXPECT_EQ(forged.status, client_status::failed);
    EXPECT_EQ(forged.reason, "SCRAM: wrong server signature");
    client_step genuine = signature_with("wonderland");
    EXPECT_EQ(genuine.status, client_status::done) << genuine.reason;
}

TEST(sasl_client_scram, user_names_with_comma_and_equals_are_escaped) {
    auto client = make_client_mechanism("SCRAM-SHA-256", "a,b=c", "pw", {}, "nonce12345678901234567890");
    EXPECT_EQ(text(client->initial()), "n,,n=a=2Cb=3Dc,r=nonce12345678901234567890");
    // The server mechanism decodes it back to the configured user.
    credential_store store = store_with_passwords({{"a,b=c", "pw"}});
    auto server = make_mechanism("SCRAM-SHA-256", store);
    auto fresh = make_client_mechanism("SCRAM-SHA-256", "a,b=c", "pw");
    exchange_outcome outcome = run_exchange(*fresh, *server);
    EXPECT_EQ(outcome.client, client_status::done) << outcome.client_reason;
    EXPECT_EQ(outcome.server_user, "a,b=c");
}

TEST(sasl_client_scram, random_nonces_are_long_printable_and_fresh) {
    auto client = make_client_mechanism("SCRAM-SHA-256", "user", "pencil");
    std::string first = text(client->initial());
    std::string second = text(client->initial());
    ASSERT_EQ(first.rfind("n,,n=user,r=", 0), 0u);
    std::string nonce = first.substr(12);
    EXPECT_GE(nonce.size(), 24u);
    for (char c : nonce) EXPECT_TRUE(c > 0x20 && c < 0x7f && c != ',') << int(c);
    EXPECT_NE(first, second);
}

TEST(sasl_client_scram, a_client_that_cannot_start_says_why) {
    auto no_user = make_client_mechanism("SCRAM-SHA-256", "", "pw");
    EXPECT_TRUE(no_user->initial().empty());
    EXPECT_EQ(no_user->step({}).reason, "SCRAM: the user name is empty or holds a NUL byte");
    auto bad_nonce = make_client_mechanism("SCRAM-SHA-256", "user", "pw", {}, "has,comma");
    EXPECT_TRUE(bad_nonce->initial().empty());
    EXPECT_EQ(bad_nonce->step(bytes(rfc_server_first)).reason, "SCRAM: malformed client nonce");
    // Before initial() nothing is expected.
    auto idle = make_client_mechanism("SCRAM-SHA-256", "user", "pw");
    EXPECT_EQ(idle->step(bytes(rfc_server_first)).status, client_status::failed);
}

TEST(sasl_client_plain, bytes_are_exact_and_the_server_accepts_them) {
    auto client = make_client_mechanism("PLAIN", "user", "pencil");
    ASSERT_TRUE(client);
    std::vector<uint8_t> initial = client->initial();
    EXPECT_EQ(initial, bytes(std::string_view("\0user\0pencil", 12)));
    credential_store store = store_with_passwords({{"user", "pencil"}});
    auto server = make_mechanism("PLAIN", store);
    step_result answer = server->step(initial);
    ASSERT_EQ(answer.status, step_status::succeeded) << answer.reason;
    EXPECT_EQ(answer.user, "user");
    EXPECT_EQ(client->step(answer.response).status, client_status::done);
    EXPECT_EQ(client->step({}).status, client_status::failed);

    auto wrong = make_client_mechanism("PLAIN", "user", "pencil2");
    auto server_for_wrong = make_mechanism("PLAIN", store);
    EXPECT_EQ(run_exchange(*wrong, *server_for_wrong).server, step_status::failed);
}

TEST(sasl_client_plain, unexpected_data_or_a_nul_fails) {
    auto client = make_client_mechanism("PLAIN", "user", "pencil");
    client->initial();
    EXPECT_EQ(client->step(bytes("x")).status, client_status::failed);
    auto nul = make_client_mechanism("PLAIN", std::string("us\0er", 5), "pencil");
    EXPECT_TRUE(nul->initial().empty());
    EXPECT_EQ(nul->step({}).reason, "PLAIN: the user name is empty or a credential holds a NUL byte");
}

TEST(sasl_client_oauthbearer, initial_bytes_are_exact_and_the_token_is_read_each_time) {
    int calls = 0;
    auto client = make_client_mechanism("OAUTHBEARER", "", "", [&calls] {
        ++calls;
        return "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcm94eSJ9.c2ln-_" + std::to_string(calls);
    });
    ASSERT_TRUE(client);
    std::string expected = std::string("n,,\x01", 4) + "auth=Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcm94eSJ9.c2ln-_1" +
                           std::string("\x01\x01", 2);
    EXPECT_EQ(text(client->initial()), expected);
    client_step done = client->step({});
    EXPECT_EQ(done.status, client_status::done) << done.reason;
    EXPECT_TRUE(done.message.empty());
    EXPECT_EQ(text(client->initial()), std::string("n,,\x01", 4) +
                                           "auth=Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcm94eSJ9.c2ln-_2" +
                                           std::string("\x01\x01", 2));
    EXPECT_EQ(calls, 2);
}

TEST(sasl_client_oauthbearer, an_error_json_fails_with_its_status) {
    auto client = make_client_mechanism("OAUTHBEARER", "", "", [] { return std::string("token"); });
    ASSERT_FALSE(client->initial().empty());
    client_step result = client->step(bytes(R"({"status": "invalid_token", "scope": "kafka"})"));
    EXPECT_EQ(result.status, client_status::failed);
    EXPECT_EQ(result.reason, "OAUTHBEARER: the broker rejected the token, status invalid_token");
    client->initial();
    EXPECT_EQ(client->step(bytes("{}")).reason, "OAUTHBEARER: the broker rejected the token without a status");
}

TEST(sasl_client_oauthbearer, no_token_or_a_malformed_one_cannot_start) {
    auto empty = make_client_mechanism("OAUTHBEARER", "", "", [] { return std::string(); });
    EXPECT_TRUE(empty->initial().empty());
    EXPECT_EQ(empty->step({}).reason, "OAUTHBEARER: no token");
    auto missing = make_client_mechanism("OAUTHBEARER", "", "");
    EXPECT_TRUE(missing->initial().empty());
    EXPECT_EQ(missing->step({}).status, client_status::failed);
    // A kvsep or a space would change the framing.
    for (std::string token : {std::string("abc\x01" "def"), std::string("abc def"), std::string("==")}) {
        auto bad = make_client_mechanism("OAUTHBEARER", "", "", [token] { return token; });
        EXPECT_TRUE(bad->initial().empty()) << token;
        EXPECT_EQ(bad->step({}).status, client_status::failed);
    }
    auto padded = make_client_mechanism("OAUTHBEARER", "", "", [] { return std::string("abc=="); });
    EXPECT_FALSE(padded->initial().empty());
}

TEST(sasl_client, unknown_mechanisms_are_not_made) {
    EXPECT_EQ(make_client_mechanism("SCRAM-SHA-1", "u", "p"), nullptr);
    EXPECT_EQ(make_client_mechanism("GSSAPI", "u", "p"), nullptr);
    EXPECT_EQ(make_client_mechanism("plain", "u", "p"), nullptr);
}

class token_file_test : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("kpp-token-test-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir_);
        path_ = (dir_ / "token").string();
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    void write(const std::string& path, const std::string& contents) {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << contents;
    }

    std::filesystem::path dir_;
    std::string path_;
};

TEST_F(token_file_test, reads_trims_and_rereads_after_a_change) {
    write(path_, "  first-token\n");
    token_file file(path_);
    std::string error = "stale";
    EXPECT_EQ(file.current(error), "first-token");
    EXPECT_EQ(error, "");
    // Rewritten in place with another size.
    write(path_, "second-token-longer\r\n");
    EXPECT_EQ(file.current(error), "second-token-longer");
    // Replaced by a rename (as Kubernetes swaps projected files), same size.
    write(path_ + ".new", "third--token-longer\n");
    std::filesystem::rename(path_ + ".new", path_);
    EXPECT_EQ(file.current(error), "third--token-longer");
    EXPECT_EQ(error, "");
}

TEST_F(token_file_test, an_unchanged_file_is_not_read_again) {
    write(path_, "token-one\n");
    token_file file(path_);
    std::string error;
    ASSERT_EQ(file.current(error), "token-one");
    struct stat before {};
    ASSERT_EQ(::stat(path_.c_str(), &before), 0);
    // Same inode, size and modification time: the cached token stands.
    write(path_, "token-two\n");
    timespec times[2] = {before.st_atim, before.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, path_.c_str(), times, 0), 0);
    EXPECT_EQ(file.current(error), "token-one");
    // A different modification time alone makes it read again.
    times[1].tv_sec += 1;
    ASSERT_EQ(::utimensat(AT_FDCWD, path_.c_str(), times, 0), 0);
    EXPECT_EQ(file.current(error), "token-two");
}

TEST_F(token_file_test, errors_name_the_path) {
    token_file missing(path_);
    std::string error;
    EXPECT_EQ(missing.current(error), "");
    EXPECT_NE(error.find(path_), std::string::npos) << error;
    EXPECT_NE(error.find("No such file"), std::string::npos) << error;

    write(path_, " \n\t\n");
    token_file empty(path_);
    EXPECT_EQ(empty.current(error), "");
    EXPECT_EQ(error, "token file " + path_ + ": empty");

    write(path_, std::string(token_file_bytes_max + 1, 'a'));
    token_file large(path_);
    EXPECT_EQ(large.current(error), "");
    EXPECT_EQ(error, "token file " + path_ + ": larger than 16384 bytes");
    write(path_, std::string(token_file_bytes_max, 'a'));
    EXPECT_EQ(large.current(error).size(), token_file_bytes_max);
    EXPECT_EQ(error, "");

    token_file directory(dir_.string());
    EXPECT_EQ(directory.current(error), "");
    EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;
}

TEST_F(token_file_test, recovers_after_an_error_and_errs_after_a_removal) {
    token_file file(path_);
    std::string error;
    EXPECT_EQ(file.current(error), "");
    EXPECT_NE(error, "");
    write(path_, "late-token");
    EXPECT_EQ(file.current(error), "late-token");
    EXPECT_EQ(error, "");
    std::filesystem::remove(path_);
    EXPECT_EQ(file.current(error), "");
    EXPECT_NE(error.find(path_), std::string::npos);
}

TEST_F(token_file_test, cores_may_share_one) {
    write(path_, "shared-token\n");
    token_file file(path_);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 200; ++i) {
                std::string error;
                if (file.current(error) != "shared-token" || !error.empty()) ++wrong;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace kpp::sasl
