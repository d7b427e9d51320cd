#include "reactor/event_loop.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kpp::reactor
