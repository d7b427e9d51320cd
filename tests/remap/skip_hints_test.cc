#include "remap/skip_hints.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

namespace kpp {
namespace {

TEST(skip_hints, unknown_key_resumes_where_asked) {
    skip_hints hints(16);
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 42), 42);
    EXPECT_EQ(hints.size(), 0u);  // a lookup creates nothing
}

TEST(skip_hints, offset_inside_a_range_resumes_at_its_end) {
    skip_hints hints(16);
    hints.record("orders", 1, 5, 100, 200);
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 100), 200);
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 150), 200);
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 199), 200);
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 200), 200);  // the end is exclusive
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 99), 99);
    EXPECT_EQ(hints.resume_offset("orders", 1, 5, 500), 500);
}

// ListOffsets LATEST asks where v's own end lies: the start of the empty range that reaches
// the physical end.
TEST(skip_hints, empty_since_finds_the_range_reaching_an_offset) {
    skip_hints hints(16);
    EXPECT_EQ(hints.empty_since("orders", 1, 5, 300), std::nullopt);
    hints.record("orders", 1, 5, 100, 200);
    EXPECT_EQ(hints.empty_since("orders", 1, 5, 200), 100);
    EXPECT_EQ(hints.empty_since("orders", 1, 5, 150), 100);  // v is empty in [100, 150) too
    EXPECT_EQ(hints.empty_since("orders", 1, 5, 201), std::nullopt);  // 200 itself is unknown
    EXPECT_EQ(hints.empty_since("orders", 1, 5, 100), std::nullopt);  // an empty range, nothing known
    EXPECT_EQ(hints.empty_since("orders", 1, 9, 200), std::nullopt);
}

TEST(skip_hints, keys_do_not_leak_into_each_other) {
    skip_hints hints(16);
    hints.record("orders", 1, 5, 100, 200);
    EXPECT_EQ(hints.resume_offset("orders", 1, 9, 150), 150);
    EXPECT_EQ(hints.resume_offset("orders", 2, 5, 150), 150);
    EXPECT_EQ(hints.resume_offset("orders2", 1, 5, 150), 150);
    EXPECT_EQ(hints.resume_offset("order", 1, 5, 150), 150);
}

TEST(skip_hints, chained_ranges_are_followed) {
    skip_hints hints(16);
    hints.record("t", 0, 4, 300, 400);
    hints.record("t", 0, 4, 100, 200);
    hints.record("t", 0, 4, 200, 300);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 100), 400);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 250), 400);
}

TEST(skip_hints, overlapping_and_adjacent_ranges_merge) {
    skip_hints hints(16);
    hints.record("t", 0, 4, 100, 200);
    hints.record("t", 0, 4, 150, 250);  // overlaps
    hints.record("t", 0, 4, 250, 260);  // touches
    hints.record("t", 0, 4, 50, 60);    // apart
    hints.record("t", 0, 4, 120, 130);  // inside
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 100), 260);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 55), 60);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 60), 60);  // the gap [60, 100) is not known empty
    hints.record("t", 0, 4, 60, 100);  // fills the gap: one range now
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 50), 260);
    EXPECT_EQ(hints.size(), 1u);
}

TEST(skip_hints, empty_and_negative_ranges_are_ignored) {
    skip_hints hints(16);
    hints.record("t", 0, 4, 100, 100);
    hints.record("t", 0, 4, 200, 150);
    hints.record("t", 0, 4, -5, 10);
    EXPECT_EQ(hints.size(), 0u);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 100), 100);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 0), 0);
}

TEST(skip_hints, too_many_ranges_for_one_key_drop_the_lowest) {
    skip_hints hints(16);
    for (int64_t index = 0; index < int64_t(skip_hints::ranges_per_entry_max) + 1; ++index) {
        hints.record("t", 0, 4, index * 100, index * 100 + 10);
    }
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 5), 5);  // forgotten: costs a rescan, not a wrong answer
    for (int64_t index = 1; index < int64_t(skip_hints::ranges_per_entry_max) + 1; ++index) {
        EXPECT_EQ(hints.resume_offset("t", 0, 4, index * 100 + 5), index * 100 + 10);
    }
    // A new range below all others is kept; the lowest older one goes.
    hints.record("t", 0, 4, 0, 10);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 5), 10);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 105), 105);
}

TEST(skip_hints, eviction_keeps_the_bound_and_never_invents_a_skip) {
    constexpr size_t entries_max = 64;
    skip_hints hints(entries_max);
    for (int32_t v = 0; v < 1000; ++v) hints.record("t", 0, v, 1000 * int64_t(v), 1000 * int64_t(v) + 500);
    EXPECT_EQ(hints.size(), entries_max);
    EXPECT_EQ(hints.evictions(), 1000u - entries_max);
    size_t remembered = 0;
    for (int32_t v = 0; v < 1000; ++v) {
        int64_t from = 1000 * int64_t(v);
        int64_t resumed = hints.resume_offset("t", 0, v, from + 10);
        // Either the right answer or no skip at all.
        EXPECT_TRUE(resumed == from + 500 || resumed == from + 10) << v;
        remembered += resumed == from + 500;
        EXPECT_EQ(hints.resume_offset("t", 0, v, from + 500), from + 500);
    }
    EXPECT_EQ(remembered, entries_max);
    // The most recent ones survive.
    EXPECT_EQ(hints.resume_offset("t", 0, 999, 999000), 999500);
}

TEST(skip_hints, recently_used_entries_get_a_second_chance) {
    skip_hints hints(4);
    for (int32_t v = 0; v < 4; ++v) hints.record("t", 0, v, 0, 10);
    // The clock hand clears every bit on its first turn; then v0 is used again.
    hints.record("t", 0, 4, 0, 10);  // evicts v0 (all referenced: one full turn, then the first)
    EXPECT_EQ(hints.resume_offset("t", 0, 0, 0), 0);
    EXPECT_EQ(hints.resume_offset("t", 0, 2, 0), 10);  // referenced again
    hints.record("t", 0, 5, 0, 10);  // the hand is at v1's slot, unreferenced: v1 goes
    EXPECT_EQ(hints.resume_offset("t", 0, 1, 0), 0);
    hints.record("t", 0, 6, 0, 10);  // v2 was used since: spared, v3 goes
    EXPECT_EQ(hints.resume_offset("t", 0, 2, 0), 10);
    EXPECT_EQ(hints.resume_offset("t", 0, 3, 0), 0);
    EXPECT_EQ(hints.size(), 4u);
}

TEST(skip_hints, many_keys_against_a_reference_model) {
    // Random traffic on more keys than fit: an answer may stop short of what an unbounded
    // model knows, but never skips past anything the model does not know to be empty.
    constexpr size_t entries_max = 256;
    skip_hints hints(entries_max);
    std::mt19937_64 random(7);
    std::vector<std::string> topics{"a", "orders", "a-topic-name-long-enough-to-leave-small-string-storage"};
    struct model_key {
        size_t topic;
        int32_t p, v;
        auto operator<=>(const model_key&) const = default;
    };
    std::map<model_key, std::vector<std::pair<int64_t, int64_t>>> model;
    auto model_resume = [&](const model_key& key, int64_t offset) {
        for (bool moved = true; moved;) {
            moved = false;
            for (auto [from, to] : model[key]) {
                if (from <= offset && offset < to) {
                    offset = to;
                    moved = true;
                }
            }
        }
        return offset;
    };
    for (int step = 0; step < 200000; ++step) {
        model_key key{random() % topics.size(), int32_t(random() % 8), int32_t(random() % 64)};
        int64_t from = int64_t(random() % 10000);
        if (random() % 2 == 0) {
            int64_t to = from + int64_t(random() % 300) + 1;
            hints.record(topics[key.topic], key.p, key.v, from, to);
            model[key].emplace_back(from, to);
            // The range just recorded is always kept; older ones it chains into may be gone.
            int64_t resumed = hints.resume_offset(topics[key.topic], key.p, key.v, from);
            ASSERT_GE(resumed, to);
            ASSERT_LE(resumed, model_resume(key, from));
        } else {
            int64_t resumed = hints.resume_offset(topics[key.topic], key.p, key.v, from);
            int64_t expected = model_resume(key, from);
            ASSERT_GE(resumed, from);
            ASSERT_LE(resumed, expected);
            // Whatever it skips to, the model agrees nothing of v lies between.
            ASSERT_EQ(model_resume(key, from), model_resume(key, resumed));
        }
        ASSERT_LE(hints.size(), entries_max);
    }
}

TEST(skip_hints, clear_forgets_everything) {
    skip_hints hints(8);
    hints.record("t", 0, 4, 0, 10);
    hints.clear();
    EXPECT_EQ(hints.size(), 0u);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 0), 0);
    hints.record("t", 0, 4, 0, 10);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 0), 10);
}

TEST(skip_hints, zero_bound_still_holds_one_entry) {
    skip_hints hints(0);
    hints.record("t", 0, 4, 0, 10);
    hints.record("t", 0, 5, 0, 10);
    EXPECT_EQ(hints.size(), 1u);
    EXPECT_EQ(hints.resume_offset("t", 0, 5, 0), 10);
    EXPECT_EQ(hints.resume_offset("t", 0, 4, 0), 0);
}

}  // namespace
}  // namespace kpp
