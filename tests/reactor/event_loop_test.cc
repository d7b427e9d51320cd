#include "reactor/event_loop.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "tests/reactor/reactor_test_support.h"

namespace kpp::reactor {
namespace {

TEST(event_loop, creates_ring_with_required_opcodes) {
    event_loop loop;
    EXPECT_GE(loop.ring_fd(), 0);
    EXPECT_EQ(loop.operations_in_flight(), 0u);
    EXPECT_EQ(loop.buffers().available(), loop.options().buffer_count);
}

TEST(event_loop, timers_fire_in_deadline_order_and_cancelled_ones_never) {
    event_loop loop;
    std::vector<int> fired;
    struct entry {
        std::vector<int>* fired;
        int id;
    };
    entry late{&fired, 3}, early{&fired, 1}, middle{&fired, 2}, cancelled{&fired, 4};
    auto record = [](timer&, void* context) {
        auto* item = static_cast<entry*>(context);
        item->fired->push_back(item->id);
    };
    timer t3(loop), t1(loop), t2(loop), t4(loop);
    t3.arm_after_ms(60, record, &late);
    t1.arm_after_ms(10, record, &early);
    t2.arm_after_ms(30, record, &middle);
    t4.arm_after_ms(20, record, &cancelled);
    t4.cancel();
    EXPECT_FALSE(t4.armed());
    ASSERT_TRUE(testing::run_until(loop, [&] { return fired.size() == 3; }));
    EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
    EXPECT_FALSE(t1.armed());
}

TEST(event_loop, run_returns_once_stop_requested_and_idle) {
    event_loop loop;
    timer stopper(loop);
    stopper.arm_after_ms(5, [](timer&, void* context) { static_cast<event_loop*>(context)->request_stop(); }, &loop);
    loop.run();
    EXPECT_TRUE(loop.stop_requested());
}

TEST(event_loop, timer_destroyed_while_armed_is_forgotten) {
    event_loop loop;
    bool fired = false;
    {
        timer doomed(loop);
        doomed.arm_after_ms(1, [](timer&, void* context) { *static_cast<bool*>(context) = true; }, &fired);
    }
    timer later(loop);
    bool later_fired = false;
    later.arm_after_ms(20, [](timer&, void* context) { *static_cast<bool*>(context) = true; }, &later_fired);
    ASSERT_TRUE(testing::run_until(loop, [&] { return later_fired; }));
    EXPECT_FALSE(fired);
}

struct pipe_read {
    completion done;
    int32_t result = 0;
    bool finished = false;
};

TEST(event_loop, spin_before_sleep_picks_up_a_completion_without_sleeping) {
    loop_options options;
    options.spin_before_sleep_ns = 1'000'000'000;  // far longer than the writer's delay
    event_loop loop(options);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    char byte = 0;
    pipe_read reading;
    reading.done = {[](completion& self, int32_t result, uint32_t) {
                        auto* read = static_cast<pipe_read*>(self.context);
                        read->result = result;
                        read->finished = true;
                    },
                    &reading};
    io_uring_prep_read(&loop.prepare(&reading.done), fds[0], &byte, 1, 0);
    std::thread writer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ASSERT_EQ(write(fds[1], "x", 1), 1);
    });
    loop.run_once(true);  // no timer: only the read can end this call
    writer.join();
    EXPECT_TRUE(reading.finished);
    EXPECT_EQ(reading.result, 1);
    EXPECT_EQ(byte, 'x');
    EXPECT_EQ(loop.spins().found_work, 1u);
    EXPECT_EQ(loop.spins().slept, 0u);
    close(fds[0]);
    close(fds[1]);
}

TEST(event_loop, spin_before_sleep_ends_at_the_next_timer) {
    loop_options options;
    options.spin_before_sleep_ns = 1'000'000'000;
    event_loop loop(options);
    bool fired = false;
    timer soon(loop);
    soon.arm_after_ms(20, [](timer&, void* context) { *static_cast<bool*>(context) = true; }, &fired);
    loop.run_once(true);  // spins until the timer is due, then fires it in the same call
    EXPECT_TRUE(fired);
    EXPECT_EQ(loop.spins().found_work, 0u);
    EXPECT_EQ(loop.spins().slept, 1u);
}

TEST(event_loop, no_spin_by_default) {
    event_loop loop;
    bool fired = false;
    timer soon(loop);
    soon.arm_after_ms(1, [](timer&, void* context) { *static_cast<bool*>(context) = true; }, &fired);
    ASSERT_TRUE(testing::run_until(loop, [&] { return fired; }));
    EXPECT_EQ(loop.spins().found_work + loop.spins().slept, 0u);
}

}  // namespace
}  // namespace kpp::reactor
