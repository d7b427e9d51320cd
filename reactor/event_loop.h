// One io_uring ring per core: submission, completion dispatch, timers and cross-ring
// doorbells. Knows nothing of Kafka.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>

#include "reactor/buffer_pool.h"
#include "reactor/completion.h"
#include "reactor/reactor_limits.h"

namespace kpp::reactor {

struct loop_options {
    uint32_t submission_entries = limits::submission_entries_default;
    uint32_t completion_entries = limits::completion_entries_default;
    uint16_t buffer_count = limits::buffer_count_default;
    uint16_t upstream_buffer_count = limits::upstream_buffer_count_default;  // 0: one ring for all
    uint32_t buffer_bytes = limits::buffer_bytes_default;
    uint32_t zero_copy_send_bytes_min = limits::zero_copy_send_bytes_min;
    bool zero_copy_send = true;  // used only where the kernel offers SENDMSG_ZC
    // When there is nothing to do, keep asking the ring for completions (non-blocking
    // io_uring_enter) this long before sleeping in it: a request that arrives meanwhile is
    // handled without the scheduler's wake-up, at the price of a busy core. 0: sleep at once.
    uint32_t spin_before_sleep_ns = 0;
};

// What the spin before sleeping did (zero while it is off).
struct spin_counters {
    uint64_t found_work = 0;  // spins that ended with a completion: a sleep avoided
    uint64_t slept = 0;       // spins that ran their time out, then slept
};

uint64_t monotonic_now_ns();

class event_loop;

// A receiver stalled on -ENOBUFS; woken (once per returned buffer) after the current batch.
struct buffer_waiter {
    void (*callback)(buffer_waiter& self) = nullptr;
    void* context = nullptr;
    buffer_pool* pool = nullptr;  // the ring it waits on (null: the loop's client ring)
    bool queued = false;
    std::list<buffer_waiter*>::iterator position;
};

// A one-shot timer kept in the loop's deadline map; the loop waits no longer than the
// earliest deadline. Holds no kernel operation, so it can be destroyed at any time.
class timer {
public:
    using callback_type = void (*)(timer& self, void* context);
    explicit timer(event_loop& loop) : loop_(loop) {}
    ~timer() { cancel(); }
    timer(const timer&) = delete;
    timer& operator=(const timer&) = delete;

    void arm_after_ms(uint64_t delay_ms, callback_type callback, void* context);
    void arm_at_ns(uint64_t deadline_ns, callback_type callback, void* context);
    void cancel();
    bool armed() const { return armed_; }
    uint64_t deadline_ns() const { return deadline_ns_; }

private:
    friend class event_loop;
    event_loop& loop_;
    callback_type callback_ = nullptr;
    void* context_ = nullptr;
    uint64_t deadline_ns_ = 0;
    bool armed_ = false;
    std::multimap<uint64_t, timer*>::iterator position_;
};

class event_loop {
public:
    explicit event_loop(const loop_options& options = {});  // throws reactor_error
    ~event_loop();
    event_loop(const event_loop&) = delete;
    event_loop& operator=(const event_loop&) = delete;

    // An SQE for an operation whose CQEs go to `target` (counted as in flight until its
    // final CQE). Submits queued entries first when the SQ is full.
    io_uring_sqe& prepare(completion* target);
    // An SQE whose CQE is ignored (link timeouts, cancels).
    io_uring_sqe& prepare_untracked();

    void cancel(completion& target);  // async cancel of every operation of `target`
    // Posts a CQE carrying `target` on another ring; `target` must live on that ring's core.
    void post_to(int ring_fd, completion& target, int32_t value);

    // Runs until request_stop() was called and no operation is in flight.
    void run();
    // Submits, waits for at least one CQE (or the next timer) if `wait`, dispatches.
    void run_once(bool wait);
    void request_stop() { stop_requested_ = true; }
    bool stop_requested() const { return stop_requested_; }

    int ring_fd() const { return ring_.ring_fd; }
    buffer_pool& buffers() { return *buffers_; }
    // The ring broker connections receive into (the client ring when none was made).
    buffer_pool& upstream_buffers() { return upstream_buffers_ ? *upstream_buffers_ : *buffers_; }
    const loop_options& options() const { return options_; }
    bool zero_copy_send_supported() const { return zero_copy_supported_; }
    uint64_t operations_in_flight() const { return operations_in_flight_; }
    uint64_t now_ns() const { return now_ns_; }  // refreshed once per loop iteration
    const spin_counters& spins() const { return spins_; }
    io_uring& ring() { return ring_; }

    void wait_for_buffers(buffer_waiter& waiter);
    void forget_buffer_waiter(buffer_waiter& waiter);

private:
    // The spin before sleeping: true when completions arrived within
    // options_.spin_before_sleep_ns (or before `deadline`).
    bool spin_for_completions(std::optional<uint64_t> deadline);
    friend class timer;
    void probe_or_throw();
    void dispatch_batch();
    void fire_due_timers();
    void wake_buffer_waiters();
    static void on_buffers_replenished(void* context);
    static void on_upstream_buffers_replenished(void* context);
    void wake_waiters_of(std::list<buffer_waiter*>& waiters, uint32_t returned);
    std::optional<uint64_t> next_deadline_ns() const;

    loop_options options_;
    spin_counters spins_;
    io_uring ring_{};
    std::unique_ptr<buffer_pool> buffers_;
    std::unique_ptr<buffer_pool> upstream_buffers_;
    std::multimap<uint64_t, timer*> timers_;
    std::list<buffer_waiter*> buffer_waiters_;           // of the client ring
    std::list<buffer_waiter*> upstream_buffer_waiters_;  // of the upstream ring
    uint32_t buffers_returned_ = 0;  // since the waiters were last woken
    uint32_t upstream_buffers_returned_ = 0;
    uint64_t operations_in_flight_ = 0;
    uint64_t now_ns_ = 0;
    bool stop_requested_ = false;
    bool zero_copy_supported_ = false;
};

}  // namespace kpp::reactor
