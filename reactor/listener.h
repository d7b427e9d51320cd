// A listening TCP socket with SO_REUSEPORT (one per core per port, so the kernel spreads
// connections across cores) and a multishot accept armed once.
#pragma once

#include "reactor/address.h"
#include "reactor/completion.h"
#include "reactor/event_loop.h"

namespace kpp::reactor {

class listener {
public:
    // `on_accept(context, fd)`: fd >= 0 is a new connected, non-blocking socket owned by the
    // callee; fd < 0 is -errno of an accept failure (the listener keeps going).
    using accept_callback = void (*)(void* context, int fd);

    // Binds and listens; throws reactor_error naming the address on failure.
    listener(event_loop& loop, const socket_address& bind_address, accept_callback on_accept, void* context);
    ~listener();
    listener(const listener&) = delete;
    listener& operator=(const listener&) = delete;

    // Stops accepting; the fd is closed once the accept operation has ended.
    void close();
    bool idle() const { return !accept_armed_ && fd_ < 0; }
    uint16_t port() const { return port_; }

private:
    static void on_accept_completion(completion& self, int32_t result, uint32_t flags);
    static void on_retry_timer(timer& self, void* context);
    void arm();

    event_loop& loop_;
    int fd_ = -1;
    uint16_t port_ = 0;
    bool accept_armed_ = false;
    bool closing_ = false;
    completion accept_completion_;
    timer retry_timer_;
    accept_callback on_accept_;
    void* context_;
};

// Opens a listening socket (SO_REUSEADDR|SO_REUSEPORT, non-blocking); throws reactor_error.
int open_listening_socket(const socket_address& bind_address);

}  // namespace kpp::reactor
