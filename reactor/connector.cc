#include "reactor/connector.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace kpp::reactor {

connect_attempt* connect_attempt::start(event_loop& loop, const socket_address& address, uint32_t timeout_ms,
                                        done_callback on_done, void* context) {
    auto* attempt = new connect_attempt();
    attempt->done_ = {&connect_attempt::on_connect_completion, attempt};
    attempt->address_ = address;
    attempt->on_done_ = on_done;
    attempt->context_ = context;
    attempt->fd_ = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (attempt->fd_ < 0) {
        // Report through the loop like any other completion, never synchronously.
        int error = errno;
        io_uring_sqe& sqe = loop.prepare(&attempt->done_);
        io_uring_prep_nop(&sqe);
        attempt->fd_ = -error;
        return attempt;
    }
    int one = 1;
    setsockopt(attempt->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    attempt->timeout_.tv_sec = timeout_ms / 1000;
    attempt->timeout_.tv_nsec = (timeout_ms % 1000) * 1'000'000ll;
    io_uring_sqe& sqe = loop.prepare(&attempt->done_);
    io_uring_prep_connect(&sqe, attempt->fd_, attempt->address_.get(), attempt->address_.length);
    sqe.flags |= IOSQE_IO_LINK;
    io_uring_sqe& deadline = loop.prepare_untracked();
    io_uring_prep_link_timeout(&deadline, &attempt->timeout_, 0);
    return attempt;
}

void connect_attempt::abandon() { abandoned_ = true; }

void connect_attempt::on_connect_completion(completion& self, int32_t result, uint32_t) {
    auto* attempt = static_cast<connect_attempt*>(self.context);
    int outcome;
    if (attempt->fd_ < 0) {
        outcome = attempt->fd_;  // socket() failed
    } else if (result == 0) {
        outcome = attempt->fd_;
    } else {
        ::close(attempt->fd_);
        outcome = result == -ECANCELED ? -ETIMEDOUT : result;
    }
    if (attempt->abandoned_) {
        if (outcome >= 0) ::close(outcome);
    } else {
        attempt->on_done_(attempt->context_, outcome);
    }
    delete attempt;
}

}  // namespace kpp::reactor
