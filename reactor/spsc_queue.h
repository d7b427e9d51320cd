// Bounded single-producer single-consumer queue for cross-core messages. The bound is the
// credit: a full queue refuses, and the sender decides what that means.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <optional>
#include <utility>

namespace kpp::reactor {

template <typename value_type, size_t capacity>
class spsc_queue {
    static_assert((capacity & (capacity - 1)) == 0, "capacity must be a power of two");

public:
    bool try_push(value_type&& value) {
        size_t tail = tail_.load(std::memory_order_relaxed);
        if (tail - head_cache_ == capacity) {
            head_cache_ = head_.load(std::memory_order_acquire);
            if (tail - head_cache_ == capacity) return false;
        }
        slots_[tail & (capacity - 1)] = std::move(value);
        tail_.store(tail + 1, std::memory_order_release);
        return true;
    }

    std::optional<value_type> try_pop() {
        size_t head = head_.load(std::memory_order_relaxed);
        if (head == tail_cache_) {
            tail_cache_ = tail_.load(std::memory_order_acquire);
            if (head == tail_cache_) return std::nullopt;
        }
        value_type value = std::move(slots_[head & (capacity - 1)]);
        slots_[head & (capacity - 1)] = value_type{};
        head_.store(head + 1, std::memory_order_release);
        return value;
    }

private:
    alignas(64) std::atomic<size_t> head_{0};
    size_t tail_cache_ = 0;  // consumer's view
    alignas(64) std::atomic<size_t> tail_{0};
    size_t head_cache_ = 0;  // producer's view
    alignas(64) std::array<value_type, capacity> slots_{};
};

}  // namespace kpp::reactor
