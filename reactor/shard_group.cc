#include "reactor/shard_group.h"

#include <pthread.h>
#include <sched.h>

#include <cassert>
#include <chrono>
#include <condition_variable>

#include "reactor/errors.h"

namespace kpp::reactor {

std::vector<int> shard_group::available_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
    if (cpus.empty()) cpus.push_back(0);
    return cpus;
}

shard_group::shard_group(shard_group_options options, shard::task setup)
    : options_(std::move(options)), setup_(std::move(setup)) {
    std::vector<int> cpus = available_cpus();
    uint32_t count = options_.shard_count ? options_.shard_count : static_cast<uint32_t>(cpus.size());
    if (count > limits::shards_max) throw reactor_error("too many threads: " + std::to_string(count));
    for (uint32_t index = 0; index < count; ++index) {
        shards_.emplace_back(new shard(*this, index));
        for (uint32_t sender = 0; sender < count; ++sender)
            shards_.back()->inbound_.emplace_back(std::make_unique<spsc_queue<shard::task, limits::mailbox_slots>>());
    }
}

shard_group::~shard_group() {
    request_stop();
    join();
    if (outside_ring_) io_uring_queue_exit(outside_ring_.get());
}

void shard_group::start() {
    std::vector<int> cpus = available_cpus();
    start_errors_.assign(shards_.size(), nullptr);
    for (uint32_t index = 0; index < shards_.size(); ++index) {
        int cpu = options_.pin_threads ? cpus[index % cpus.size()] : -1;
        threads_.emplace_back([this, index, cpu] { run_shard(index, cpu); });
    }
    // Wait until every shard has set up (or failed).
    while (started_.load(std::memory_order_acquire) < shards_.size())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (auto& error : start_errors_) {
        if (error) {
            request_stop();
            join();
            std::rethrow_exception(error);
        }
    }
}

void shard_group::run_shard(uint32_t index, int cpu) {
    shard& self = *shards_[index];
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    std::string name = "kpp-shard-" + std::to_string(index);
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    try {
        // The ring is created on its own thread: SINGLE_ISSUER binds it to the creator.
        self.loop_ = std::make_unique<event_loop>(options_.loop);
        self.doorbell_ = {&shard::on_doorbell, &self};
        self.ring_fd_.store(self.loop_->ring_fd(), std::memory_order_release);
        if (setup_) setup_(self);
    } catch (...) {
        {
            std::lock_guard lock(start_mutex_);
            start_errors_[index] = std::current_exception();
        }
        self.loop_.reset();
        self.ring_fd_.store(-1, std::memory_order_release);
        started_.fetch_add(1, std::memory_order_acq_rel);
        return;
    }
    started_.fetch_add(1, std::memory_order_acq_rel);
    self.drain_inbox();  // messages posted before the ring was known
    self.loop_->run();
    self.drain_inbox();
    self.ring_fd_.store(-1, std::memory_order_release);
    self.user_state.reset();
    self.loop_.reset();
}

void shard_group::ring_doorbell(shard& target, event_loop* from) {
    // One doorbell per batch: only the sender that flips the flag rings.
    if (target.doorbell_rung_.exchange(true, std::memory_order_acq_rel)) return;
    int fd = target.ring_fd_.load(std::memory_order_acquire);
    if (fd < 0) return;  // not running yet (drained at start) or already stopped
    if (from) {
        from->post_to(fd, target.doorbell_, 0);
        return;
    }
    std::lock_guard lock(outside_ring_mutex_);
    if (!outside_ring_) {
        outside_ring_ = std::make_unique<io_uring>();
        if (io_uring_queue_init(8, outside_ring_.get(), 0) < 0) throw reactor_error("io_uring: cannot create the signalling ring");
    }
    io_uring_sqe* sqe = io_uring_get_sqe(outside_ring_.get());
    io_uring_prep_msg_ring(sqe, fd, 0, reinterpret_cast<uint64_t>(&target.doorbell_) | user_data_remote_bit, 0);
    io_uring_submit_and_wait(outside_ring_.get(), 1);
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(outside_ring_.get(), &cqe) == 0) io_uring_cqe_seen(outside_ring_.get(), cqe);
}

bool shard::send_to(uint32_t to, task work) {
    shard& target = group_.at(to);
    if (!target.inbound_[index_]->try_push(std::move(work))) return false;
    group_.ring_doorbell(target, loop_.get());
    return true;
}

void shard_group::post(uint32_t to, shard::task work) {
    shard& target = at(to);
    {
        std::lock_guard lock(target.outside_mutex_);
        target.outside_tasks_.push_back(std::move(work));
    }
    ring_doorbell(target, nullptr);
}

void shard::on_doorbell(completion& self, int32_t, uint32_t) {
    self.owner<shard>().drain_inbox();
}

void shard::drain_inbox() {
    doorbell_rung_.store(false, std::memory_order_release);
    for (auto& queue : inbound_) {
        // Bounded by the queue's capacity per pass; later arrivals ring again.
        for (size_t budget = limits::mailbox_slots; budget > 0; --budget) {
            std::optional<task> work = queue->try_pop();
            if (!work) break;
            (*work)(*this);
        }
    }
    std::vector<task> outside;
    {
        std::lock_guard lock(outside_mutex_);
        outside.swap(outside_tasks_);
    }
    for (task& work : outside) work(*this);
}

void shard_group::request_stop() {
    for (uint32_t index = 0; index < shards_.size(); ++index) {
        post(index, [](shard& self) {
            if (self.loop().stop_requested()) return;
            if (self.on_stop) self.on_stop(self);
            self.loop().request_stop();
        });
    }
}

void shard_group::join() {
    for (std::thread& thread : threads_)
        if (thread.joinable()) thread.join();
    threads_.clear();
}

}  // namespace kpp::reactor
