#include "reactor/listener.h"

#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>

#include "reactor/errors.h"
#include "reactor/reactor_limits.h"

namespace kpp::reactor {

int open_listening_socket(const socket_address& bind_address) {
    int fd = ::socket(bind_address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw reactor_error("socket: " + error_text(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        int error = errno;
        ::close(fd);
        throw reactor_error("SO_REUSEPORT: " + error_text(error));
    }
    if (::bind(fd, bind_address.get(), bind_address.length) != 0) {
        int error = errno;
        ::close(fd);
        throw reactor_error("cannot listen on " + bind_address.to_string() + ": " + error_text(error));
    }
    if (::listen(fd, limits::listen_backlog) != 0) {
        int error = errno;
        ::close(fd);
        throw reactor_error("listen on " + bind_address.to_string() + ": " + error_text(error));
    }
    return fd;
}

listener::listener(event_loop& loop, const socket_address& bind_address, accept_callback on_accept, void* context)
    : loop_(loop), retry_timer_(loop), on_accept_(on_accept), context_(context) {
    fd_ = open_listening_socket(bind_address);
    port_ = local_address_of(fd_).port();
    accept_completion_.callback = &listener::on_accept_completion;
    accept_completion_.context = this;
    arm();
}

listener::~listener() {
    if (fd_ >= 0) ::close(fd_);
}

void listener::arm() {
    io_uring_sqe& sqe = loop_.prepare(&accept_completion_);
    io_uring_prep_multishot_accept(&sqe, fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    accept_armed_ = true;
}

void listener::close() {
    if (closing_) return;
    closing_ = true;
    retry_timer_.cancel();
    if (accept_armed_) {
        loop_.cancel(accept_completion_);
    } else if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
}

void listener::on_accept_completion(completion& self, int32_t result, uint32_t flags) {
    listener& owner = self.owner<listener>();
    bool more = flags & IORING_CQE_F_MORE;
    if (!more) owner.accept_armed_ = false;
    if (result >= 0) {
        if (owner.closing_) {
            ::close(result);
        } else {
            int one = 1;
            setsockopt(result, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            owner.on_accept_(owner.context_, result);
        }
    } else if (result != -ECANCELED && !owner.closing_) {
        owner.on_accept_(owner.context_, result);
    }
    if (owner.accept_armed_) return;
    if (owner.closing_) {
        if (owner.fd_ >= 0) {
            ::close(owner.fd_);
            owner.fd_ = -1;
        }
        return;
    }
    // The multishot ended (e.g. EMFILE): re-arm shortly rather than spin.
    if (result < 0 && result != -ECANCELED)
        owner.retry_timer_.arm_after_ms(50, &listener::on_retry_timer, &owner);
    else
        owner.arm();
}

void listener::on_retry_timer(timer&, void* context) {
    auto& owner = *static_cast<listener*>(context);
    if (!owner.closing_ && !owner.accept_armed_) owner.arm();
}

}  // namespace kpp::reactor
