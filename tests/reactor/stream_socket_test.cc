#include "reactor/stream_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "reactor/connector.h"
#include "reactor/listener.h"
#include "tests/reactor/reactor_test_support.h"
#include "tests/reactor/tls_test_support.h"

namespace kpp::reactor {
namespace {

using testing::run_until;

// Records everything a socket reports; optionally holds received slices (pinning buffers).
struct recorder : stream_socket::events {
    std::string received;
    std::vector<byte_slice> held;
    bool hold_slices = false;
    bool ended = false;
    int end_error = 1;
    bool closed = false;
    int drained = 0;
    void on_data(byte_slice chunk) override {
        received.append(reinterpret_cast<const char*>(chunk.data()), chunk.length);
        if (hold_slices) held.push_back(std::move(chunk));
    }
    void on_end(int error) override {
        ended = true;
        end_error = error;
    }
    void on_closed() override { closed = true; }
    void on_send_drained() override { ++drained; }
};

std::pair<int, int> make_socket_pair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    return {fds[0], fds[1]};
}

byte_slice slice_of(const std::string& text) {
    shared_bytes bytes = shared_bytes::copy_of(std::as_bytes(std::span(text.data(), text.size())));
    return byte_slice{bytes, 0, static_cast<uint32_t>(text.size())};
}

TEST(stream_socket, round_trips_bytes_in_order_over_a_socketpair) {
    event_loop loop;
    auto [a, b] = make_socket_pair();
    recorder events_a, events_b;
    stream_socket left(loop, a, events_a), right(loop, b, events_b);
    right.start_receive();
    std::string expected;
    for (int i = 0; i < 200; ++i) {
        std::string piece = "message-" + std::to_string(i) + ";";
        expected += piece;
        left.send(slice_of(piece));
    }
    ASSERT_TRUE(run_until(loop, [&] { return events_b.received.size() == expected.size(); }));
    EXPECT_EQ(events_b.received, expected);
    EXPECT_GE(events_a.drained, 1);
    EXPECT_EQ(left.queued_bytes(), 0u);
    left.close();
    ASSERT_TRUE(run_until(loop, [&] { return events_b.ended && events_a.closed; }));
    EXPECT_EQ(events_b.end_error, 0);  // orderly EOF
    right.close();
    ASSERT_TRUE(run_until(loop, [&] { return events_b.closed; }));
    EXPECT_EQ(loop.operations_in_flight(), 0u);
}

// TLS below the stream: what one side sends arrives decrypted and in order at the other,
// including bytes sent before the handshake finished; the provided buffers go back to the
// ring at once (the plaintext lives in buffers of its own).
TEST(stream_socket, tls_round_trips_bytes_in_order_over_a_socketpair) {
    event_loop loop;
    auto [a, b] = make_socket_pair();
    recorder events_client, events_server;
    stream_socket client(loop, a, events_client), server(loop, b, events_server);
    auto server_context = testing::test_server_context();
    auto client_context = testing::test_client_context();
    ASSERT_TRUE(server_context && client_context);
    server.enable_tls(std::make_unique<tls_engine>(server_context));
    server.start_receive();
    client.enable_tls(std::make_unique<tls_engine>(client_context, "localhost"));
    client.start_receive();
    std::string expected;
    for (int i = 0; i < 300; ++i) {
        std::string piece = "message-" + std::to_string(i) + ";" + std::string(size_t(i) * 37, 'x');
        expected += piece;
        client.send(slice_of(piece));
    }
    ASSERT_TRUE(run_until(loop, [&] { return events_server.received.size() == expected.size(); }));
    EXPECT_EQ(events_server.received, expected);
    EXPECT_TRUE(server.tls()->established());
    EXPECT_EQ(server.tls()->protocol_version(), "TLSv1.3");
    server.send(slice_of("answer"));
    ASSERT_TRUE(run_until(loop, [&] { return events_client.received == "answer"; }));
    client.close();
    ASSERT_TRUE(run_until(loop, [&] { return events_server.ended && events_client.closed; }));
    server.close();
    ASSERT_TRUE(run_until(loop, [&] { return events_server.closed; }));
    EXPECT_EQ(loop.operations_in_flight(), 0u);
}

// A plaintext client on a TLS socket: the stream ends with -EPROTO and the engine says why.
TEST(stream_socket, tls_failure_ends_the_stream_with_eproto) {
    event_loop loop;
    auto [a, b] = make_socket_pair();
    recorder events_plain, events_server;
    stream_socket plain(loop, a, events_plain), server(loop, b, events_server);
    server.enable_tls(std::make_unique<tls_engine>(testing::test_server_context()));
    server.start_receive();
    plain.start_receive();
    plain.send(slice_of(std::string("\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00", 14)));
    ASSERT_TRUE(run_until(loop, [&] { return events_server.ended; }));
    EXPECT_EQ(events_server.end_error, -EPROTO);
    EXPECT_EQ(server.tls()->state(), tls_state::failed);
    EXPECT_TRUE(events_server.received.empty());
    ASSERT_TRUE(run_until(loop, [&] { return events_server.closed && events_plain.ended; }));
    plain.close();
    ASSERT_TRUE(run_until(loop, [&] { return events_plain.closed; }));
}

TEST(stream_socket, stalls_on_empty_buffer_ring_and_resumes_when_buffers_return) {
    loop_options options;
    options.buffer_count = 4;
    options.buffer_bytes = 4096;
    event_loop loop(options);
    auto [a, b] = make_socket_pair();
    recorder sink;
    sink.hold_slices = true;
    stream_socket receiver(loop, b, sink);
    receiver.start_receive();
    std::string payload(64 * 1024, '\0');
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
    size_t written = 0;
    // Write from the test itself; the receiver can only hold 4 x 4 KiB at a time.
    ASSERT_TRUE(run_until(loop, [&] {
        ssize_t n = ::write(a, payload.data() + written, payload.size() - written);
        if (n > 0) written += size_t(n);
        return receiver.stats().buffer_stalls > 0;
    }));
    EXPECT_EQ(loop.buffers().available(), 0u);
    EXPECT_LE(sink.received.size(), 4u * 4096u);
    // Releasing the held slices gives buffers back and receiving resumes.
    ASSERT_TRUE(run_until(loop, [&] {
        sink.held.clear();
        if (written < payload.size()) {
            ssize_t n = ::write(a, payload.data() + written, payload.size() - written);
            if (n > 0) written += size_t(n);
        }
        return sink.received.size() == payload.size();
    }));
    EXPECT_EQ(sink.received, payload);
    sink.held.clear();
    EXPECT_EQ(loop.buffers().available(), 4u);
    receiver.close();
    ::close(a);
    ASSERT_TRUE(run_until(loop, [&] { return sink.closed; }));
}

// Issue 16: requests waiting for a broker pin client buffers. With one ring the broker's
// answer could not be read while they were pinned; broker connections have a ring of their
// own, so a client ring held empty leaves them receiving.
TEST(stream_socket, a_client_ring_held_empty_does_not_stop_broker_connections) {
    loop_options options;
    options.buffer_count = 4;
    options.upstream_buffer_count = 4;
    options.buffer_bytes = 4096;
    event_loop loop(options);
    auto [client_peer, client_end] = make_socket_pair();
    auto [broker_peer, broker_end] = make_socket_pair();
    recorder client_sink, broker_sink;
    client_sink.hold_slices = true;  // like pending requests: nothing goes back
    stream_socket client(loop, client_end, client_sink);
    stream_socket broker(loop, broker_end, broker_sink);
    broker.receive_into_upstream_buffers();
    EXPECT_EQ(&broker.receive_buffers(), &loop.upstream_buffers());
    EXPECT_NE(&loop.upstream_buffers(), &loop.buffers());
    client.start_receive();
    broker.start_receive();
    std::string flood(64 * 1024, 'c');
    size_t written = 0;
    ASSERT_TRUE(run_until(loop, [&] {
        ssize_t n = ::write(client_peer, flood.data() + written, flood.size() - written);
        if (n > 0) written += size_t(n);
        return client.stats().buffer_stalls > 0;
    }));
    EXPECT_EQ(loop.buffers().available(), 0u);
    // The broker's answer still arrives, and keeps arriving.
    std::string answer(20 * 1024, 'b');
    size_t sent = 0;
    ASSERT_TRUE(run_until(loop, [&] {
        if (sent < answer.size()) {
            ssize_t n = ::write(broker_peer, answer.data() + sent, answer.size() - sent);
            if (n > 0) sent += size_t(n);
        }
        return broker_sink.received.size() == answer.size();
    }));
    EXPECT_EQ(broker_sink.received, answer);
    EXPECT_EQ(loop.buffers().available(), 0u);  // the client ring is still held
    EXPECT_EQ(loop.upstream_buffers().available(), 4u);
    client_sink.held.clear();
    client.close();
    broker.close();
    ::close(client_peer);
    ::close(broker_peer);
    ASSERT_TRUE(run_until(loop, [&] { return client_sink.closed && broker_sink.closed; }));
}

TEST(stream_socket, pause_stops_delivery_and_resume_restarts_it) {
    event_loop loop;
    auto [a, b] = make_socket_pair();
    recorder sink;
    stream_socket receiver(loop, b, sink);
    receiver.start_receive();
    ASSERT_EQ(::write(a, "one", 3), 3);
    ASSERT_TRUE(run_until(loop, [&] { return sink.received == "one"; }));
    receiver.pause_receive();
    ASSERT_EQ(::write(a, "two", 3), 3);
    // Give the loop time: nothing may arrive while paused.
    run_until(loop, [] { return false; }, std::chrono::milliseconds(100));
    EXPECT_EQ(sink.received, "one");
    receiver.resume_receive();
    ASSERT_TRUE(run_until(loop, [&] { return sink.received == "onetwo"; }));
    receiver.close();
    ::close(a);
    ASSERT_TRUE(run_until(loop, [&] { return sink.closed; }));
}

TEST(stream_socket, teardown_with_receive_and_blocked_send_in_flight) {
    event_loop loop;
    auto [a, b] = make_socket_pair();
    int size = 4096;
    setsockopt(a, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    recorder events;
    stream_socket sender(loop, a, events);
    sender.start_receive();
    // The peer never reads: the send stays parked in the kernel.
    std::string big(4 * 1024 * 1024, 'x');
    sender.send(slice_of(big));
    run_until(loop, [] { return false; }, std::chrono::milliseconds(50));
    EXPECT_GT(sender.queued_bytes(), 0u);
    EXPECT_GT(loop.operations_in_flight(), 0u);
    sender.close();
    ASSERT_TRUE(run_until(loop, [&] { return events.closed; }));
    EXPECT_EQ(loop.operations_in_flight(), 0u);
    ::close(b);
}

struct accept_log {
    std::vector<int> fds;
    static void on_accept(void* context, int fd) { static_cast<accept_log*>(context)->fds.push_back(fd); }
};

struct connect_log {
    int result = 1;
    bool done = false;
    static void on_done(void* context, int result) {
        auto* log = static_cast<connect_log*>(context);
        log->result = result;
        log->done = true;
    }
};

TEST(listener, multishot_accept_takes_many_connections_and_close_stops_it) {
    event_loop loop;
    accept_log accepted;
    listener server(loop, resolve_address("127.0.0.1", 0, true), &accept_log::on_accept, &accepted);
    ASSERT_GT(server.port(), 0);
    socket_address target = resolve_address("127.0.0.1", server.port());
    std::vector<connect_log> clients(5);
    for (auto& client : clients) connect_attempt::start(loop, target, 1000, &connect_log::on_done, &client);
    ASSERT_TRUE(run_until(loop, [&] {
        bool all_connected = true;
        for (auto& client : clients) all_connected &= client.done;
        return all_connected && accepted.fds.size() == clients.size();
    }));
    for (auto& client : clients) {
        EXPECT_GE(client.result, 0);
        ::close(client.result);
    }
    for (int fd : accepted.fds) ::close(fd);
    server.close();
    ASSERT_TRUE(run_until(loop, [&] { return server.idle(); }));
    connect_log refused;
    connect_attempt::start(loop, target, 1000, &connect_log::on_done, &refused);
    ASSERT_TRUE(run_until(loop, [&] { return refused.done; }));
    EXPECT_EQ(refused.result, -ECONNREFUSED);
}

TEST(listener, two_listeners_share_a_port_with_reuseport) {
    event_loop loop;
    accept_log first_log, second_log;
    listener first(loop, resolve_address("127.0.0.1", 0, true), &accept_log::on_accept, &first_log);
    listener second(loop, resolve_address("127.0.0.1", first.port(), true), &accept_log::on_accept, &second_log);
    EXPECT_EQ(first.port(), second.port());
    first.close();
    second.close();
    ASSERT_TRUE(run_until(loop, [&] { return first.idle() && second.idle(); }));
}

TEST(connect_attempt, times_out_against_a_full_accept_queue) {
    event_loop loop;
    int server = open_listening_socket(resolve_address("127.0.0.1", 0, true));
    ::listen(server, 0);
    socket_address target = local_address_of(server);
    // Fill the accept queue (never accepted) until a connect no longer completes at once.
    std::vector<connect_log> fillers(8);
    for (auto& filler : fillers) connect_attempt::start(loop, target, 200, &connect_log::on_done, &filler);
    ASSERT_TRUE(run_until(loop, [&] {
        for (auto& filler : fillers)
            if (!filler.done) return false;
        return true;
    }));
    int timed_out = 0;
    for (auto& filler : fillers) {
        if (filler.result == -ETIMEDOUT) ++timed_out;
        if (filler.result >= 0) ::close(filler.result);
    }
    EXPECT_GT(timed_out, 0) << "a connect to a full accept queue must end by the deadline";
    EXPECT_EQ(loop.operations_in_flight(), 0u);
    ::close(server);
}

TEST(stream_socket, large_sends_use_zero_copy_over_tcp_and_arrive_intact) {
    event_loop loop;
    if (!loop.zero_copy_send_supported()) GTEST_SKIP() << "kernel lacks SENDMSG_ZC";
    accept_log accepted;
    listener server(loop, resolve_address("127.0.0.1", 0, true), &accept_log::on_accept, &accepted);
    connect_log client;
    connect_attempt::start(loop, resolve_address("127.0.0.1", server.port()), 1000, &connect_log::on_done, &client);
    ASSERT_TRUE(run_until(loop, [&] { return client.done && accepted.fds.size() == 1; }));
    ASSERT_GE(client.result, 0);
    recorder sender_events, receiver_events;
    stream_socket sender(loop, client.result, sender_events);
    stream_socket receiver(loop, accepted.fds[0], receiver_events);
    EXPECT_TRUE(stream_socket::peer_is_local(client.result));
    sender.allow_zero_copy(true);  // loopback turns it off by default; exercise the path anyway
    receiver.start_receive();
    std::string payload(1024 * 1024, '\0');
    std::iota(payload.begin(), payload.end(), 0);
    sender.send(slice_of(payload.substr(0, 100)));
    sender.send(slice_of(payload.substr(100)));
    ASSERT_TRUE(run_until(loop, [&] { return receiver_events.received.size() == payload.size(); }));
    EXPECT_EQ(receiver_events.received, payload);
    EXPECT_GT(sender.stats().zero_copy_sends, 0u);
    sender.close();
    receiver.close();
    server.close();
    ASSERT_TRUE(run_until(loop, [&] { return sender_events.closed && receiver_events.closed && server.idle(); }));
    EXPECT_EQ(loop.operations_in_flight(), 0u);
}

}  // namespace
}  // namespace kpp::reactor
