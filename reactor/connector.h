// Outbound TCP connect with a deadline (IORING_OP_CONNECT linked to a LINK_TIMEOUT).
#pragma once

#include "reactor/address.h"
#include "reactor/completion.h"
#include "reactor/event_loop.h"

namespace kpp::reactor {

// One connect attempt. The owner keeps it alive until on_done ran (or abandon() was called,
// after which the attempt cleans itself up).
class connect_attempt {
public:
    // result: a connected non-blocking fd (>= 0) or -errno (-ETIMEDOUT on deadline).
    using done_callback = void (*)(void* context, int result);

    static connect_attempt* start(event_loop& loop, const socket_address& address, uint32_t timeout_ms,
                                  done_callback on_done, void* context);
    // The owner goes away: no callback will run; the attempt frees itself when the kernel is done.
    void abandon();

private:
    connect_attempt() = default;
    static void on_connect_completion(completion& self, int32_t result, uint32_t flags);

    completion done_;
    socket_address address_;
    __kernel_timespec timeout_{};
    int fd_ = -1;
    done_callback on_done_ = nullptr;
    void* context_ = nullptr;
    bool abandoned_ = false;
};

}  // namespace kpp::reactor
