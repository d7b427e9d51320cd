#include "remap/fetch_window.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kpp {
namespace {

// An answer of `held` bytes of memory holding the records of [from, to).
window_entry answer(int64_t from, int64_t to, size_t held, size_t records_bytes = 100) {
    window_entry entry;
    entry.from_offset = from;
    entry.to_offset = to;
    entry.records.push_back(reactor::byte_slice{reactor::shared_bytes::allocate(held), 0, uint32_t(records_bytes)});
    entry.bytes = records_bytes;
    entry.held_bytes = held;
    entry.fields.high_watermark = to;
    return entry;
}

const window_key orders{"orders", 3, 0};

TEST(fetch_window, finds_the_answer_that_holds_an_offset) {
    fetch_window window(1 << 20);
    window.store(orders, answer(10, 20, 1000));
    window.store(orders, answer(20, 35, 1000));
    EXPECT_EQ(window.find(orders, 9, SIZE_MAX), nullptr);
    ASSERT_NE(window.find(orders, 10, SIZE_MAX), nullptr);
    EXPECT_EQ(window.find(orders, 19, SIZE_MAX)->from_offset, 10);
    EXPECT_EQ(window.find(orders, 20, SIZE_MAX)->from_offset, 20);
    EXPECT_EQ(window.find(orders, 34, SIZE_MAX)->fields.high_watermark, 35);
    EXPECT_EQ(window.find(orders, 35, SIZE_MAX), nullptr);
    // Another partition, topic or isolation level shares nothing.
    EXPECT_EQ(window.find({"orders", 2, 0}, 15, SIZE_MAX), nullptr);
    EXPECT_EQ(window.find({"orders", 3, 1}, 15, SIZE_MAX), nullptr);
    EXPECT_EQ(window.find({"other", 3, 0}, 15, SIZE_MAX), nullptr);
    // Never more than the request may take.
    EXPECT_EQ(window.find(orders, 15, 99), nullptr);
    EXPECT_NE(window.find(orders, 15, 100), nullptr);
}

TEST(fetch_window, keeps_answers_side_by_side_but_not_behind_or_overlapping) {
    fetch_window window(1 << 20);
    window.store(orders, answer(10, 20, 1000));
    window.store(orders, answer(2, 8, 1000));  // a slow consumer's, behind everything kept
    EXPECT_EQ(window.find(orders, 6, SIZE_MAX), nullptr);
    EXPECT_EQ(window.counters().not_kept, 1u);
    window.store(orders, answer(15, 25, 1000));  // overlapping the end
    EXPECT_EQ(window.find(orders, 22, SIZE_MAX), nullptr);
    window.store(orders, answer(5, 12, 1000));  // overlapping the start
    EXPECT_EQ(window.find(orders, 6, SIZE_MAX), nullptr);
    EXPECT_EQ(window.counters().not_kept, 3u);
    window.store(orders, answer(20, 30, 1000));
    EXPECT_NE(window.find(orders, 25, SIZE_MAX), nullptr);
    window.store(orders, answer(40, 50, 1000));  // beyond, with a gap: kept beside the others
    EXPECT_NE(window.find(orders, 45, SIZE_MAX), nullptr);
    EXPECT_NE(window.find(orders, 15, SIZE_MAX), nullptr);
    EXPECT_EQ(window.find(orders, 35, SIZE_MAX), nullptr);
    window.store(orders, answer(30, 40, 1000));  // the gap, filled
    EXPECT_EQ(window.find(orders, 35, SIZE_MAX)->from_offset, 30);
    EXPECT_EQ(window.bytes(), 4000u);
    // Empty answers and answers larger than the whole window are not kept.
    window.store(orders, answer(50, 50, 10));
    window.store(orders, answer(50, 60, (1 << 20) + 1));
    EXPECT_EQ(window.find(orders, 50, SIZE_MAX), nullptr);
}

TEST(fetch_window, the_oldest_answers_make_room_and_memory_held_is_what_counts) {
    fetch_window window(3000);
    window.store(orders, answer(0, 10, 1000, 10));
    window.store({"other", 0, 0}, answer(0, 10, 1000, 10));
    window.store(orders, answer(10, 20, 1000, 10));
    EXPECT_EQ(window.bytes(), 3000u);
    window.store({"other", 0, 0}, answer(10, 20, 1500, 10));  // over: the oldest two go
    EXPECT_LE(window.bytes(), 3000u);
    EXPECT_EQ(window.find(orders, 5, SIZE_MAX), nullptr);
    EXPECT_EQ(window.find({"other", 0, 0}, 5, SIZE_MAX), nullptr);
    EXPECT_NE(window.find(orders, 15, SIZE_MAX), nullptr);
    EXPECT_NE(window.find({"other", 0, 0}, 15, SIZE_MAX), nullptr);
    // Turning it off empties it; nothing is kept while off.
    window.set_bytes_max(0);
    EXPECT_EQ(window.bytes(), 0u);
    EXPECT_EQ(window.find(orders, 15, SIZE_MAX), nullptr);
    window.store(orders, answer(20, 30, 100));
    EXPECT_EQ(window.find(orders, 25, SIZE_MAX), nullptr);
}

TEST(fetch_window, a_request_waits_only_for_a_fetch_that_answers_whenever_it_would_be_answered) {
    fetch_window window(1 << 20);
    const uint64_t second = 1'000'000'000;
    uint64_t id = window.begin_fetch(orders, 100, 1, 0, 2 * second);
    int woken = 0;
    auto count = [&] { ++woken; };
    EXPECT_FALSE(window.join(orders, 99, 1, second, count));             // needs an earlier offset
    EXPECT_FALSE(window.join(orders, 100, 0, second, count));            // would be answered with less
    EXPECT_FALSE(window.join({"orders", 3, 1}, 100, 1, second, count));  // other isolation
    EXPECT_FALSE(window.join(orders, 100, 1, 3 * second, count));        // overdue
    EXPECT_TRUE(window.join(orders, 100, 1, second, count));
    EXPECT_TRUE(window.join(orders, 250, 1024, second, count));
    auto wakes = window.end_fetch(id);
    EXPECT_EQ(woken, 0);  // the caller runs them
    ASSERT_EQ(wakes.size(), 2u);
    for (auto& wake : wakes) wake();
    EXPECT_EQ(woken, 2);
    EXPECT_TRUE(window.end_fetch(id).empty());
    EXPECT_FALSE(window.join(orders, 100, 1, second, count));  // nothing in flight now
    EXPECT_EQ(window.fetches_in_flight(), 0u);
}

TEST(fetch_window, fetches_whose_answer_never_came_are_forgotten) {
    fetch_window window(1 << 20);
    const uint64_t second = 1'000'000'000;
    window.begin_fetch(orders, 100, 1, 0, second);  // its request went away unanswered
    EXPECT_EQ(window.fetches_in_flight(), 1u);
    window.begin_fetch(orders, 120, 1, 5 * second, 6 * second);
    EXPECT_EQ(window.fetches_in_flight(), 1u);
    fetch_window off(0);
    off.begin_fetch(orders, 100, 1, 0, second);
    EXPECT_FALSE(off.join(orders, 100, 1, 0, [] {}));
}

TEST(fetch_window, answers_are_worth_keeping_only_for_a_partition_another_connection_reads) {
    fetch_window window(1 << 20);
    const uint64_t second = 1'000'000'000;
    const uintptr_t alone = 1, other = 2, third = 3;
    window.note_reader(orders, alone, 0);
    window.note_reader(orders, alone, second);
    EXPECT_FALSE(window.shared(orders, alone, second));  // a lone consumer
    window.note_reader(orders, other, 2 * second);
    EXPECT_TRUE(window.shared(orders, alone, 2 * second));
    EXPECT_TRUE(window.shared(orders, other, 2 * second));
    EXPECT_TRUE(window.shared(orders, third, 2 * second));
    EXPECT_FALSE(window.shared({"orders", 4, 0}, alone, 2 * second));
    // The other reader went away: after the horizon the partition is read alone again.
    window.note_reader(orders, alone, 2 * second + fetch_window::sharing_horizon_ns + 1);
    EXPECT_FALSE(window.shared(orders, alone, 2 * second + fetch_window::sharing_horizon_ns + 1));
    // Off: nothing noted.
    window.set_bytes_max(0);
    window.note_reader(orders, other, 3 * second);
    EXPECT_FALSE(window.shared(orders, alone, 3 * second));
}

}  // namespace
}  // namespace kpp
