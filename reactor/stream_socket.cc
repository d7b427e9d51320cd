#include "reactor/stream_socket.h"

#include "reactor/address.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>

namespace kpp::reactor {
namespace {

// Blocks decrypted records are read into: a few records each, below malloc's mmap
// threshold so freeing one does not hand pages back to the kernel.
constexpr size_t tls_plaintext_block_bytes = 64 * 1024;
constexpr size_t tls_small_read_bytes = 16 * 1024;

}  // namespace

stream_socket::stream_socket(event_loop& loop, int fd, events& handler)
    : loop_(loop), fd_(fd), handler_(handler), pool_(&loop.buffers()) {
    receive_completion_ = {&stream_socket::on_receive_completion, this};
    send_completion_ = {&stream_socket::on_send_completion, this};
    buffer_waiter_.callback = &stream_socket::on_buffers_available;
    buffer_waiter_.context = this;
    buffer_waiter_.pool = pool_;
    // Over loopback the kernel copies anyway and holds the pages until the peer has read
    // them: zero-copy only adds notification work and latency there (measured: a 400 KB
    // response took ~1.6x longer end to end).
    zero_copy_allowed_ = !peer_is_local(fd);
}

bool stream_socket::peer_is_local(int fd) {
    socket_address peer = peer_address_of(fd);
    if (peer.family() == AF_INET) {
        auto address = reinterpret_cast<const sockaddr_in*>(&peer.storage)->sin_addr.s_addr;
        return (ntohl(address) >> 24) == 127;
    }
    if (peer.family() == AF_INET6) {
        const in6_addr& address = reinterpret_cast<const sockaddr_in6*>(&peer.storage)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(&address) ||
               (IN6_IS_ADDR_V4MAPPED(&address) && address.s6_addr[12] == 127);
    }
    return true;  // AF_UNIX and anything else: no zero-copy
}

stream_socket::~stream_socket() {
    // Owners free the socket only after on_closed, when nothing references it.
    assert(!receiving_ && !send_in_flight_ && zero_copy_in_flight_ == 0);
    loop_.forget_buffer_waiter(buffer_waiter_);
    if (!closed_ && fd_ >= 0) ::close(fd_);
}

void stream_socket::start_receive() {
    receive_wanted_ = true;
    if (!receive_paused_) arm_receive();
}

void stream_socket::arm_receive() {
    if (receiving_ || closing_ || !receive_wanted_ || kernel_switching_) return;
    io_uring_sqe& sqe = loop_.prepare(&receive_completion_);
    io_uring_prep_recv_multishot(&sqe, fd_, nullptr, 0, 0);
    sqe.flags |= IOSQE_BUFFER_SELECT;
    sqe.buf_group = pool_->group_id();
    receiving_ = true;
}

void stream_socket::pause_receive() {
    if (receive_paused_) return;
    receive_paused_ = true;
    loop_.forget_buffer_waiter(buffer_waiter_);
    if (receiving_) loop_.cancel(receive_completion_);
}

void stream_socket::resume_receive() {
    if (!receive_paused_) return;
    receive_paused_ = false;
    if (!receiving_) arm_receive();  // else: re-armed when the cancelled receive reports
}

void stream_socket::on_buffers_available(buffer_waiter& waiter) {
    auto& socket = *static_cast<stream_socket*>(waiter.context);
    if (!socket.receive_paused_) socket.arm_receive();
}

void stream_socket::on_receive_completion(completion& self, int32_t result, uint32_t flags) {
    stream_socket& socket = self.owner<stream_socket>();
    if (!(flags & IORING_CQE_F_MORE)) socket.receiving_ = false;
    if (result > 0) {
        assert(flags & IORING_CQE_F_BUFFER);
        uint16_t buffer_id = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        shared_bytes bytes = socket.pool_->claim(buffer_id, static_cast<uint32_t>(result));
        socket.stats_.bytes_received += static_cast<uint32_t>(result);
        if (socket.tls_) {
            // Decrypted into buffers of its own: the provided buffer returns to the ring now.
            if (!socket.closing_) socket.on_tls_data(std::span<const std::byte>(bytes.data(), static_cast<uint32_t>(result)));
        } else if (!socket.closing_) {
            socket.handler_.on_data(byte_slice{std::move(bytes), 0, static_cast<uint32_t>(result)});
        }
    } else if (result == -ENOBUFS) {
        // Backpressure: every provided buffer is held by data not yet forwarded.
        ++socket.stats_.buffer_stalls;
        if (!socket.receiving_ && !socket.closing_ && !socket.receive_paused_)
            socket.loop_.wait_for_buffers(socket.buffer_waiter_);
        return;
    } else if (result == -ECANCELED) {
        // Paused or closing.
    } else if (result == 0 || result < 0) {
        socket.receive_wanted_ = false;
        if (!socket.end_reported_ && !socket.closing_) {
            socket.end_reported_ = true;
            socket.handler_.on_end(result == 0 ? 0 : result);
        }
    }
    if (socket.closing_) {
        socket.maybe_finish_close();
        return;
    }
    if (!socket.receiving_ && socket.kernel_switching_) socket.finish_kernel_switch();
    if (!socket.receiving_ && socket.receive_wanted_ && !socket.receive_paused_) socket.arm_receive();
}

void stream_socket::enqueue(byte_slice slice) {
    const std::byte* data = slice.data();
    queued_bytes_ += slice.length;
    queue_.push_back(segment{std::move(slice.owner), data, slice.length});
    if (!send_in_flight_) flush();
}

void stream_socket::send(byte_slice slice) {
    if (closing_ || slice.length == 0) return;
    if (tls_) {
        if (!tls_->write(slice.span())) return;  // failed: the receive side reports it
        send_tls_output();
        return;
    }
    enqueue(std::move(slice));
}

void stream_socket::receive_into_upstream_buffers() {
    pool_ = &loop_.upstream_buffers();
    buffer_waiter_.pool = pool_;
}

void stream_socket::enable_tls(std::unique_ptr<tls_engine> engine, bool try_kernel) {
    tls_ = std::move(engine);
    kernel_wanted_ = try_kernel;
    zero_copy_allowed_ = false;  // ciphertext is the proxy's own memory, sent once
    tls_->start();
    send_tls_output();
}

void stream_socket::send_tls_output() {
    if (closing_) return;
    // Straight from OpenSSL's buffer into blocks the send queue owns, no larger than
    // tls_plaintext_block_bytes: big blocks would be mapped and unmapped by malloc each time.
    while (size_t pending = tls_->output_bytes()) {
        size_t size = std::min(pending, tls_plaintext_block_bytes);
        shared_bytes ciphertext = shared_bytes::allocate(size);
        size_t got = tls_->take_output_into(std::span<std::byte>(ciphertext.data(), size));
        if (got == 0) return;
        enqueue(byte_slice{std::move(ciphertext), 0, static_cast<uint32_t>(got)});
    }
}

void stream_socket::on_tls_data(std::span<const std::byte> ciphertext) {
    bool fed = tls_->feed(ciphertext);
    send_tls_output();  // handshake messages, alerts, session tickets, key updates
    // Decrypted straight into blocks handed on as they are: a record is at most 16 KiB.
    while (fed && !closing_) {
        shared_bytes plaintext = shared_bytes::allocate(tls_plaintext_block_bytes);
        size_t got = tls_->read_into(std::span<std::byte>(plaintext.data(), tls_plaintext_block_bytes));
        send_tls_output();
        if (got == 0) break;
        // A small read is copied to a block of its size: requests waiting for a broker
        // must not each hold 64 KiB.
        if (got < tls_small_read_bytes)
            plaintext = shared_bytes::copy_of(std::span<const std::byte>(plaintext.data(), got));
        handler_.on_data(byte_slice{std::move(plaintext), 0, static_cast<uint32_t>(got)});
        if (got < tls_plaintext_block_bytes) break;
    }
    if (closing_ || !tls_) return;
    if (!tls_decided_ && tls_->established()) decide_record_layer();
    if (!tls_) return;  // handed to the kernel
    if (tls_->state() == tls_state::failed) {
        fail_and_close(-EPROTO);
    } else if (tls_->state() == tls_state::closed && !end_reported_) {
        end_reported_ = true;
        receive_wanted_ = false;
        handler_.on_end(0);
    }
}

void stream_socket::decide_record_layer() {
    tls_decided_ = true;
    tls_peer_subject_ = tls_->peer_subject();
    if (!kernel_wanted_ || !tls_->kernel_handoff()) {
        handler_.on_tls_ready(false);
        return;
    }
    // A multishot receive may already hold ciphertext read before the keys are installed:
    // stop it, and switch when it reports that it ended.
    kernel_switching_ = true;
    if (receiving_)
        loop_.cancel(receive_completion_);
    else
        finish_kernel_switch();
}

void stream_socket::finish_kernel_switch() {
    kernel_switching_ = false;
    // Bytes that arrived meanwhile went through the engine: then it can no longer hand over.
    std::optional<ktls_material> material = tls_ ? tls_->kernel_handoff() : std::nullopt;
    if (!material) {
        handler_.on_tls_ready(false);
        return;
    }
    std::string error;
    switch (install_kernel_tls(fd_, *material, error)) {
    case ktls_install::installed:
        tls_.reset();
        handler_.on_tls_ready(true);
        return;
    case ktls_install::unavailable:
        handler_.on_tls_ready(false);
        return;
    case ktls_install::broken:
        fail_and_close(-EPROTO);
        return;
    }
}

void stream_socket::send(std::span<const byte_slice> slices) {
    if (closing_) return;
    if (tls_) {
        for (const byte_slice& slice : slices) {
            if (slice.length != 0 && !tls_->write(slice.span())) return;
            // Drained as it grows, so OpenSSL's output buffer stays small.
            if (tls_->output_bytes() >= tls_plaintext_block_bytes) send_tls_output();
        }
        send_tls_output();
        return;
    }
    for (const byte_slice& slice : slices) {
        if (slice.length == 0) continue;
        queued_bytes_ += slice.length;
        queue_.push_back(segment{slice.owner, slice.data(), slice.length});
    }
    if (!send_in_flight_) flush();
}

size_t stream_socket::gather(std::array<iovec, limits::send_iovecs_max>& iovecs, uint64_t& total_bytes) const {
    size_t count = 0;
    total_bytes = 0;
    for (const segment& item : queue_) {
        if (count == iovecs.size()) break;
        iovecs[count++] = iovec{const_cast<std::byte*>(item.data), item.length};
        total_bytes += item.length;
    }
    return count;
}

void stream_socket::flush() {
    if (send_in_flight_ || queue_.empty() || closed_) return;
    uint64_t total_bytes = 0;
    if (zero_copy_allowed_ && loop_.zero_copy_send_supported() && queued_bytes_ >= loop_.options().zero_copy_send_bytes_min) {
        auto* operation = new zero_copy_send{};
        operation->done = {&stream_socket::on_zero_copy_completion, operation};
        operation->socket = this;
        size_t count = gather(operation->iovecs, total_bytes);
        operation->header.msg_iov = operation->iovecs.data();
        operation->header.msg_iovlen = count;
        io_uring_sqe& sqe = loop_.prepare(&operation->done);
        io_uring_prep_sendmsg_zc(&sqe, fd_, &operation->header, MSG_NOSIGNAL | MSG_WAITALL);
        send_in_flight_ = true;
        ++zero_copy_in_flight_;
        ++stats_.zero_copy_sends;
        return;
    }
    size_t count = gather(send_iovecs_, total_bytes);
    send_header_ = msghdr{};
    send_header_.msg_iov = send_iovecs_.data();
    send_header_.msg_iovlen = count;
    io_uring_sqe& sqe = loop_.prepare(&send_completion_);
    io_uring_prep_sendmsg(&sqe, fd_, &send_header_, MSG_NOSIGNAL | MSG_WAITALL);
    send_in_flight_ = true;
}

void stream_socket::consume_sent(uint64_t sent_bytes, std::deque<segment>* keep) {
    stats_.bytes_sent += sent_bytes;
    queued_bytes_ -= sent_bytes;
    while (sent_bytes > 0) {
        assert(!queue_.empty());
        segment& head = queue_.front();
        if (sent_bytes >= head.length) {
            sent_bytes -= head.length;
            if (keep) keep->push_back(std::move(head));
            queue_.pop_front();
        } else {
            // A partial segment: pin a reference for zero-copy, keep the rest queued.
            if (keep) keep->push_back(segment{head.owner, head.data, static_cast<uint32_t>(sent_bytes)});
            head.data += sent_bytes;
            head.length -= static_cast<uint32_t>(sent_bytes);
            sent_bytes = 0;
        }
    }
}

void stream_socket::on_send_completion(completion& self, int32_t result, uint32_t) {
    stream_socket& socket = self.owner<stream_socket>();
    socket.send_in_flight_ = false;
    if (socket.closing_ && !socket.close_when_flushed_) {
        socket.maybe_finish_close();
        return;
    }
    if (result < 0) {
        socket.fail_and_close(result);
        return;
    }
    socket.consume_sent(static_cast<uint64_t>(result), nullptr);
    socket.continue_sending();
}

void stream_socket::continue_sending() {
    if (queue_.empty()) {
        if (close_when_flushed_) {
            close();
            return;
        }
        handler_.on_send_drained();
    }
    flush();
}

void stream_socket::on_zero_copy_completion(completion& self, int32_t result, uint32_t flags) {
    auto* operation = static_cast<zero_copy_send*>(self.context);
    stream_socket& socket = *operation->socket;
    if (flags & IORING_CQE_F_NOTIF) {
        // The kernel no longer references the pages: release them.
        --socket.zero_copy_in_flight_;
        delete operation;
        if (socket.closing_) socket.maybe_finish_close();
        return;
    }
    operation->result_seen = true;
    socket.send_in_flight_ = false;
    bool notification_follows = flags & IORING_CQE_F_MORE;
    if (result >= 0 && !(socket.closing_ && !socket.close_when_flushed_))
        socket.consume_sent(static_cast<uint64_t>(result), &operation->pinned);
    if (!notification_follows) {
        --socket.zero_copy_in_flight_;
        delete operation;
    }
    if (socket.closing_ && !socket.close_when_flushed_) {
        socket.maybe_finish_close();
        return;
    }
    if (result == -EOPNOTSUPP || result == -EINVAL) {
        // Not every socket family takes zero-copy sends (AF_UNIX does not): fall back for good.
        socket.zero_copy_allowed_ = false;
        socket.flush();
        return;
    }
    if (result < 0) {
        socket.fail_and_close(result);
        return;
    }
    socket.continue_sending();
}

void stream_socket::fail_and_close(int error) {
    if (!end_reported_) {
        end_reported_ = true;
        handler_.on_end(error);
    }
    close();
}

void stream_socket::close_after_flush() {
    if (closing_) return;
    if (queue_.empty() && !send_in_flight_) {
        close();
        return;
    }
    close_when_flushed_ = true;
}

void stream_socket::close() {
    if (closing_ && !close_when_flushed_) return;
    closing_ = true;
    close_when_flushed_ = false;
    receive_wanted_ = false;
    loop_.forget_buffer_waiter(buffer_waiter_);
    // A sendmsg in flight may still read queued memory: keep it until that send reports.
    if (!send_in_flight_) {
        queue_.clear();
        queued_bytes_ = 0;
    }
    // shutdown() wakes any receive or send parked in the kernel; the cancel covers the rest.
    ::shutdown(fd_, SHUT_RDWR);
    if (receiving_) loop_.cancel(receive_completion_);
    maybe_finish_close();
}

void stream_socket::maybe_finish_close() {
    if (closed_ || receiving_ || send_in_flight_ || zero_copy_in_flight_ > 0) return;
    closed_ = true;
    queue_.clear();
    queued_bytes_ = 0;
    ::close(fd_);
    handler_.on_closed();  // may delete this
}

}  // namespace kpp::reactor
