// Thread per core: one pinned thread per shard, each owning an event_loop; cross-core
// messages travel through per-pair SPSC queues with an IORING_OP_MSG_RING doorbell.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "reactor/event_loop.h"
#include "reactor/reactor_limits.h"
#include "reactor/spsc_queue.h"

namespace kpp::reactor {

class shard_group;

class shard {
public:
    using task = std::function<void(shard&)>;

    uint32_t index() const { return index_; }
    event_loop& loop() { return *loop_; }
    shard_group& group() { return group_; }
    // Sends a task to run on shard `to`; false when that queue is full (no credit).
    bool send_to(uint32_t to, task work);
    // Called on this shard when the group is asked to stop; owners drain and close here.
    std::function<void(shard&)> on_stop;
    // Whatever the application hangs on the shard (its server state).
    std::shared_ptr<void> user_state;

private:
    friend class shard_group;
    shard(shard_group& group, uint32_t index) : group_(group), index_(index) {}
    static void on_doorbell(completion& self, int32_t result, uint32_t flags);
    void drain_inbox();

    shard_group& group_;
    uint32_t index_;
    std::unique_ptr<event_loop> loop_;
    completion doorbell_;
    std::atomic<bool> doorbell_rung_{false};
    std::atomic<int> ring_fd_{-1};
    std::vector<std::unique_ptr<spsc_queue<task, limits::mailbox_slots>>> inbound_;  // one per sender shard
    std::mutex outside_mutex_;
    std::vector<task> outside_tasks_;  // from threads that are not shards (signals, admin)
};

struct shard_group_options {
    uint32_t shard_count = 0;  // 0: one per CPU available to the process
    bool pin_threads = true;
    loop_options loop;
};

class shard_group {
public:
    // `setup` runs on each shard's thread after its loop exists and before it runs; an
    // exception there fails start().
    shard_group(shard_group_options options, shard::task setup);
    ~shard_group();

    void start();           // throws the first shard's start-up error
    void post(uint32_t to, shard::task work);  // from any thread that is not a shard
    void request_stop();    // from any thread; each shard runs on_stop then drains
    void join();
    uint32_t size() const { return static_cast<uint32_t>(shards_.size()); }
    shard& at(uint32_t index) { return *shards_[index]; }

    static std::vector<int> available_cpus();

private:
    friend class shard;
    void run_shard(uint32_t index, int cpu);
    void ring_doorbell(shard& target, event_loop* from);

    shard_group_options options_;
    shard::task setup_;
    std::vector<std::unique_ptr<shard>> shards_;
    std::vector<std::thread> threads_;
    std::mutex outside_ring_mutex_;
    std::unique_ptr<io_uring> outside_ring_;  // sends doorbells from non-shard threads
    std::mutex start_mutex_;
    std::vector<std::exception_ptr> start_errors_;
    std::atomic<uint32_t> started_{0};
};

}  // namespace kpp::reactor
