#include "reactor/event_loop.h"

#include <sys/utsname.h>

#include <array>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>

#include "reactor/errors.h"

namespace kpp::reactor {

uint64_t monotonic_now_ns() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return uint64_t(now.tv_sec) * 1'000'000'000u + uint64_t(now.tv_nsec);
}

void timer::arm_after_ms(uint64_t delay_ms, callback_type callback, void* context) {
    arm_at_ns(monotonic_now_ns() + delay_ms * 1'000'000u, callback, context);
}

void timer::arm_at_ns(uint64_t deadline_ns, callback_type callback, void* context) {
    cancel();
    callback_ = callback;
    context_ = context;
    deadline_ns_ = deadline_ns;
    position_ = loop_.timers_.emplace(deadline_ns, this);
    armed_ = true;
}

void timer::cancel() {
    if (!armed_) return;
    loop_.timers_.erase(position_);
    armed_ = false;
}

event_loop::event_loop(const loop_options& options) : options_(options) {
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    params.cq_entries = options.completion_entries;
    int rc = io_uring_queue_init_params(options.submission_entries, &ring_, &params);
    if (rc < 0) {
        utsname name{};
        uname(&name);
        throw reactor_error("io_uring: cannot create a ring with SINGLE_ISSUER|DEFER_TASKRUN (" +
                            error_text(-rc) + ") on kernel " + name.release +
                            "; Linux 6.1 or newer with io_uring enabled is required" +
                            std::string(rc == -ENOSYS || rc == -EPERM
                                            ? " (ENOSYS or EPERM on a new kernel: a seccomp profile, such as a "
                                              "container runtime's default, or kernel.io_uring_disabled refuses "
                                              "io_uring; see docs/deployment.md)"
                                            : ""));
    }
    try {
        probe_or_throw();
        buffers_ = std::make_unique<buffer_pool>(ring_, 0, options.buffer_count, options.buffer_bytes);
        buffers_->set_replenished_callback(&event_loop::on_buffers_replenished, this);
        if (options.upstream_buffer_count > 0) {
            upstream_buffers_ = std::make_unique<buffer_pool>(ring_, 1, options.upstream_buffer_count, options.buffer_bytes);
            upstream_buffers_->set_replenished_callback(&event_loop::on_upstream_buffers_replenished, this);
        }
    } catch (...) {
        io_uring_queue_exit(&ring_);
        throw;
    }
    now_ns_ = monotonic_now_ns();
}

event_loop::~event_loop() {
    upstream_buffers_.reset();
    buffers_.reset();
    io_uring_queue_exit(&ring_);
}

void event_loop::probe_or_throw() {
    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
    if (!probe) throw reactor_error("io_uring: the kernel does not answer opcode probes (too old)");
    struct required_opcode {
        int opcode;
        const char* name;
    };
    static constexpr std::array required{
        required_opcode{IORING_OP_ACCEPT, "ACCEPT"},       required_opcode{IORING_OP_RECV, "RECV"},
        required_opcode{IORING_OP_SEND, "SEND"},           required_opcode{IORING_OP_SENDMSG, "SENDMSG"},
        required_opcode{IORING_OP_CONNECT, "CONNECT"},     required_opcode{IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
        required_opcode{IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, required_opcode{IORING_OP_MSG_RING, "MSG_RING"},
        required_opcode{IORING_OP_SHUTDOWN, "SHUTDOWN"},   required_opcode{IORING_OP_CLOSE, "CLOSE"},
    };
    std::string missing;
    for (const auto& op : required) {
        if (!io_uring_opcode_supported(probe, op.opcode)) missing += std::string(missing.empty() ? "" : ", ") + op.name;
    }
    zero_copy_supported_ = options_.zero_copy_send && io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC);
    io_uring_free_probe(probe);
    if (!missing.empty())
        throw reactor_error("io_uring: required opcodes missing in this kernel: " + missing);
}

io_uring_sqe& event_loop::prepare(completion* target) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(target));
    ++operations_in_flight_;
    return *sqe;
}

io_uring_sqe& event_loop::prepare_untracked() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    io_uring_sqe_set_data64(sqe, user_data_ignored);
    return *sqe;
}

void event_loop::cancel(completion& target) {
    io_uring_sqe& sqe = prepare_untracked();
    io_uring_prep_cancel64(&sqe, reinterpret_cast<uint64_t>(&target), IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(&sqe, user_data_ignored);
}

void event_loop::post_to(int ring_fd, completion& target, int32_t value) {
    io_uring_sqe& sqe = prepare_untracked();
    io_uring_prep_msg_ring(&sqe, ring_fd, static_cast<unsigned>(value),
                           reinterpret_cast<uint64_t>(&target) | user_data_remote_bit, 0);
    // Our own CQE for the send is ignored; CQE_SKIP would save it but needs a newer liburing.
    io_uring_sqe_set_data64(&sqe, user_data_ignored);
}

std::optional<uint64_t> event_loop::next_deadline_ns() const {
    if (timers_.empty()) return std::nullopt;
    return timers_.begin()->first;
}

bool event_loop::spin_for_completions(std::optional<uint64_t> deadline) {
    // The ring defers task work (IORING_SETUP_DEFER_TASKRUN): completions are posted only
    // when this thread enters the kernel asking for events, so the spin is a loop of
    // non-blocking enters, not a watch of the completion queue alone.
    uint64_t spin_until = now_ns_ + options_.spin_before_sleep_ns;
    if (deadline && *deadline < spin_until) spin_until = *deadline;
    for (;;) {
        io_uring_submit_and_get_events(&ring_);
        if (io_uring_cq_ready(&ring_) > 0) {
            ++spins_.found_work;
            return true;
        }
        if (monotonic_now_ns() >= spin_until) {
            ++spins_.slept;
            return false;
        }
    }
}

void event_loop::run_once(bool wait) {
    std::optional<uint64_t> deadline = next_deadline_ns();
    now_ns_ = monotonic_now_ns();
    bool timer_due = deadline && *deadline <= now_ns_;
    if (wait && !timer_due && options_.spin_before_sleep_ns > 0 && io_uring_cq_ready(&ring_) == 0) {
        if (spin_for_completions(deadline)) wait = false;  // dispatch them without sleeping
        now_ns_ = monotonic_now_ns();
        timer_due = deadline && *deadline <= now_ns_;
    }
    if (!wait || timer_due) {
        io_uring_submit_and_get_events(&ring_);
    } else if (deadline) {
        uint64_t wait_ns = *deadline - now_ns_;
        __kernel_timespec timeout{static_cast<int64_t>(wait_ns / 1'000'000'000u),
                                  static_cast<long long>(wait_ns % 1'000'000'000u)};
        io_uring_cqe* cqe = nullptr;
        io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &timeout, nullptr);
    } else {
        io_uring_submit_and_wait(&ring_, 1);
    }
    now_ns_ = monotonic_now_ns();
    dispatch_batch();
    fire_due_timers();
    wake_buffer_waiters();
}

void event_loop::on_buffers_replenished(void* context) {
    // Deferred to the end of the batch: this runs inside whatever released the buffer.
    ++static_cast<event_loop*>(context)->buffers_returned_;
}

void event_loop::on_upstream_buffers_replenished(void* context) {
    ++static_cast<event_loop*>(context)->upstream_buffers_returned_;
}

void event_loop::wait_for_buffers(buffer_waiter& waiter) {
    if (waiter.queued) return;
    bool upstream = upstream_buffers_ && waiter.pool == upstream_buffers_.get();
    auto& waiters = upstream ? upstream_buffer_waiters_ : buffer_waiters_;
    waiter.position = waiters.insert(waiters.end(), &waiter);
    waiter.queued = true;
}

void event_loop::forget_buffer_waiter(buffer_waiter& waiter) {
    if (!waiter.queued) return;
    bool upstream = upstream_buffers_ && waiter.pool == upstream_buffers_.get();
    (upstream ? upstream_buffer_waiters_ : buffer_waiters_).erase(waiter.position);
    waiter.queued = false;
}

void event_loop::wake_waiters_of(std::list<buffer_waiter*>& waiters, uint32_t returned) {
    while (returned-- > 0 && !waiters.empty()) {
        buffer_waiter* waiter = waiters.front();
        waiters.pop_front();
        waiter->queued = false;
        waiter->callback(*waiter);
    }
}

void event_loop::wake_buffer_waiters() {
    wake_waiters_of(buffer_waiters_, std::exchange(buffers_returned_, 0));
    wake_waiters_of(upstream_buffer_waiters_, std::exchange(upstream_buffers_returned_, 0));
}

void event_loop::dispatch_batch() {
    // Copy CQEs out first and advance the CQ, then run callbacks: callbacks queue new SQEs
    // but never re-enter the ring, and a multishot completion may appear several times.
    struct reaped {
        uint64_t user_data;
        int32_t result;
        uint32_t flags;
    };
    std::array<reaped, limits::completion_batch_max> batch;
    for (;;) {
        unsigned count = 0;
        unsigned head;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            if (count == batch.size()) break;
            batch[count++] = {cqe->user_data, cqe->res, cqe->flags};
        }
        if (count == 0) return;
        io_uring_cq_advance(&ring_, count);
        for (unsigned i = 0; i < count; ++i) {
            const reaped& entry = batch[i];
            if (entry.user_data == user_data_ignored) continue;
            bool remote = (entry.user_data & user_data_remote_bit) != 0;
            auto* target = reinterpret_cast<completion*>(entry.user_data & ~user_data_remote_bit);
            if (!remote && !(entry.flags & IORING_CQE_F_MORE)) {
                assert(operations_in_flight_ > 0);
                --operations_in_flight_;
            }
            target->callback(*target, entry.result, entry.flags);
        }
        if (count < batch.size()) return;
    }
}

void event_loop::fire_due_timers() {
    // Bounded: only timers due now; a callback re-arming for "now" runs next iteration.
    uint64_t now = now_ns_;
    size_t budget = timers_.size();
    while (budget-- > 0 && !timers_.empty() && timers_.begin()->first <= now) {
        timer* due = timers_.begin()->second;
        timers_.erase(timers_.begin());
        due->armed_ = false;
        due->callback_(*due, due->context_);
    }
}

void event_loop::run() {
    while (!(stop_requested_ && operations_in_flight_ == 0)) run_once(true);
    io_uring_submit(&ring_);
}

}  // namespace kpp::reactor
