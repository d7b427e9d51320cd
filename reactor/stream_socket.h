// A connected TCP socket on one core: multishot receive into provided buffers, a send
// queue of byte slices with one send in flight (zero-copy above a size threshold), and a
// teardown that waits until no operation is in flight before closing the fd.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>

#include "reactor/buffer_pool.h"
#include "reactor/completion.h"
#include "reactor/event_loop.h"
#include "reactor/reactor_limits.h"
#include "reactor/tls.h"

namespace kpp::reactor {

class stream_socket {
public:
    struct events {
        virtual void on_data(byte_slice chunk) = 0;  // bytes received, in order
        virtual void on_end(int error) = 0;          // peer closed (0) or -errno; no more on_data
        virtual void on_closed() = 0;                // fd closed, nothing in flight: owner may free
        virtual void on_send_drained() {}            // the send queue became empty
        // TLS: the handshake is done and the record layer stays in the proxy (false) or
        // moved to the kernel (true); called once per connection.
        virtual void on_tls_ready(bool /*kernel*/) {}
        virtual ~events() = default;
    };

    stream_socket(event_loop& loop, int fd, events& handler);
    ~stream_socket();
    stream_socket(const stream_socket&) = delete;
    stream_socket& operator=(const stream_socket&) = delete;

    // Receives into the loop's upstream ring (broker connections), before start_receive().
    void receive_into_upstream_buffers();
    buffer_pool& receive_buffers() const { return *pool_; }
    void start_receive();
    void pause_receive();   // backpressure from the consumer of on_data
    void resume_receive();
    bool receive_paused() const { return receive_paused_; }

    // Queues bytes for sending; the slice keeps its memory alive until the kernel is done.
    // With TLS the bytes are encrypted first and the ciphertext is what is queued.
    void send(byte_slice slice);
    void send(std::span<const byte_slice> slices);
    uint64_t queued_bytes() const { return queued_bytes_; }

    // TLS below everything: each received chunk is ciphertext for the engine and on_data
    // gets what it decrypts; send() encrypts. The handshake's messages go out by themselves
    // (a client engine's ClientHello at once); plaintext sent during the handshake waits in
    // the engine. A TLS failure or the peer's close_notify ends the stream like a closed
    // connection: on_end(-EPROTO) or on_end(0); tls()->error() says what failed. Call
    // before start_receive(). With `try_kernel`, a connection the engine can hand over
    // (tls_engine::kernel_handoff) moves its record layer to the kernel after the handshake:
    // receiving stops, the keys are installed once no receive can hold ciphertext, and the
    // socket then moves plaintext; where the kernel refuses, the engine goes on.
    void enable_tls(std::unique_ptr<tls_engine> engine, bool try_kernel = false);
    const tls_engine* tls() const { return tls_.get(); }
    // The peer certificate's subject (RFC 2253), kept from the engine once on_tls_ready ran
    // (the engine is gone after a handoff to the kernel); empty without a certificate.
    const std::string& tls_peer_subject() const { return tls_peer_subject_; }

    // Shuts the socket down now (pending sends are dropped) and closes it once every
    // operation has ended; on_closed follows.
    void close();
    // Closes after everything queued has been sent.
    void close_after_flush();
    bool closing() const { return closing_; }
    int fd() const { return fd_; }

    struct counters {
        uint64_t bytes_received = 0;
        uint64_t bytes_sent = 0;
        uint64_t zero_copy_sends = 0;
        uint64_t buffer_stalls = 0;  // -ENOBUFS: the provided ring was empty
    };
    const counters& stats() const { return stats_; }
    // Zero-copy is worth it only toward a real NIC; see the constructor.
    static bool peer_is_local(int fd);
    void allow_zero_copy(bool allowed) { zero_copy_allowed_ = allowed; }

private:
    struct segment {
        shared_bytes owner;
        const std::byte* data;
        uint32_t length;
    };
    // A zero-copy send: its memory stays pinned until the kernel's notification CQE.
    struct zero_copy_send {
        completion done;
        stream_socket* socket;
        std::deque<segment> pinned;
        msghdr header{};
        std::array<iovec, limits::send_iovecs_max> iovecs{};
        bool result_seen = false;
    };

    void arm_receive();
    void flush();
    void continue_sending();  // after a send completed: drained, close or next send
    size_t gather(std::array<iovec, limits::send_iovecs_max>& iovecs, uint64_t& total_bytes) const;
    void consume_sent(uint64_t sent_bytes, std::deque<segment>* keep);
    void maybe_finish_close();
    void fail_and_close(int error);
    void enqueue(byte_slice slice);
    void send_tls_output();
    void on_tls_data(std::span<const std::byte> ciphertext);
    void decide_record_layer();
    void finish_kernel_switch();
    static void on_receive_completion(completion& self, int32_t result, uint32_t flags);
    static void on_send_completion(completion& self, int32_t result, uint32_t flags);
    static void on_zero_copy_completion(completion& self, int32_t result, uint32_t flags);
    static void on_buffers_available(buffer_waiter& waiter);

    event_loop& loop_;
    int fd_;
    events& handler_;
    completion receive_completion_;
    completion send_completion_;
    buffer_waiter buffer_waiter_;
    buffer_pool* pool_;  // the provided-buffer ring receives take from
    std::deque<segment> queue_;
    uint64_t queued_bytes_ = 0;
    msghdr send_header_{};
    std::array<iovec, limits::send_iovecs_max> send_iovecs_{};
    uint32_t zero_copy_in_flight_ = 0;
    bool zero_copy_allowed_ = true;
    bool receiving_ = false;        // a receive is armed in the kernel
    bool receive_wanted_ = false;   // started and not ended by EOF or error
    bool receive_paused_ = false;
    bool send_in_flight_ = false;
    bool closing_ = false;
    bool close_when_flushed_ = false;
    bool closed_ = false;
    bool end_reported_ = false;
    counters stats_;
    std::unique_ptr<tls_engine> tls_;
    std::string tls_peer_subject_;
    bool kernel_wanted_ = false;     // enable_tls(try_kernel)
    bool tls_decided_ = false;       // on_tls_ready reported
    bool kernel_switching_ = false;  // waiting for the receive to stop before installing keys
};

}  // namespace kpp::reactor
