#include "reactor/shard_group.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace kpp::reactor {
namespace {

TEST(shard_group, tasks_cross_cores_through_msg_ring_and_stop_drains) {
    shard_group_options options;
    options.shard_count = 2;
    std::atomic<int> setups{0};
    shard_group group(options, [&](shard&) { setups.fetch_add(1); });
    group.start();
    EXPECT_EQ(setups.load(), 2);

    // Ping-pong 1000 times between shard 0 and shard 1, each hop a cross-core message.
    std::atomic<int> hops{0};
    std::atomic<bool> wrong_core{false};
    std::function<void(shard&, int)> bounce = [&](shard& self, int remaining) {
        hops.fetch_add(1);
        if (remaining == 0) return;
        uint32_t next = 1 - self.index();
        bool sent = self.send_to(next, [&, remaining, next](shard& target) {
            if (target.index() != next) wrong_core = true;
            bounce(target, remaining - 1);
        });
        if (!sent) wrong_core = true;
    };
    group.post(0, [&](shard& self) { bounce(self, 999); });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (hops.load() < 1000 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(hops.load(), 1000);
    EXPECT_FALSE(wrong_core.load());

    std::atomic<int> stops{0};
    for (uint32_t index = 0; index < group.size(); ++index)
        group.post(index, [&](shard& self) { self.on_stop = [&](shard&) { stops.fetch_add(1); }; });
    group.request_stop();
    group.join();
    EXPECT_EQ(stops.load(), 2);
}

TEST(shard_group, setup_failure_is_reported_by_start) {
    shard_group_options options;
    options.shard_count = 2;
    shard_group group(options, [](shard& self) {
        if (self.index() == 1) throw std::runtime_error("port in use");
    });
    EXPECT_THROW(group.start(), std::runtime_error);
}

TEST(shard_group, threads_are_pinned_to_available_cpus) {
    std::vector<int> cpus = shard_group::available_cpus();
    ASSERT_FALSE(cpus.empty());
    shard_group_options options;
    options.shard_count = 1;
    std::atomic<int> pinned_cpu{-1};
    shard_group group(options, [&](shard&) {
        cpu_set_t set;
        CPU_ZERO(&set);
        pthread_getaffinity_np(pthread_self(), sizeof set, &set);
        if (CPU_COUNT(&set) == 1) pinned_cpu = cpus[0];
    });
    group.start();
    EXPECT_EQ(pinned_cpu.load(), cpus[0]);
    group.request_stop();
    group.join();
}

}  // namespace
}  // namespace kpp::reactor
