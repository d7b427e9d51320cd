#include "remap/produce_plan.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace kpp {
namespace {

topic_mapping lookup(std::string_view topic) {
    if (topic == "orders") return topic_mapping{100, 10, topic_mapping::source::exact};
    if (topic == "events") return topic_mapping{40, 4, topic_mapping::source::regex};
    return topic_mapping{};  // unmapped: passes through
}

TEST(produce_plan, virtual_partitions_sharing_a_physical_one_go_in_successive_requests) {
    // 0, 10 and 20 all live on physical partition 0 of "orders" (the Rust tool let the
    // broker keep only the last of them).
    std::vector<produce_entry> entries{{"orders", 0}, {"orders", 10}, {"orders", 20}, {"orders", 1}};
    produce_plan plan = plan_produce(entries, lookup);
    ASSERT_EQ(plan.rounds.size(), 3u);
    EXPECT_TRUE(plan.rejected.empty());
    ASSERT_EQ(plan.rounds[0].size(), 2u);  // 0 (on p0) and 1 (on p1) together
    EXPECT_EQ(plan.rounds[0][0].entry_index, 0u);
    EXPECT_EQ(plan.rounds[0][1].entry_index, 3u);
    EXPECT_EQ(plan.rounds[0][1].physical_partition, 1);
    ASSERT_EQ(plan.rounds[1].size(), 1u);
    EXPECT_EQ(plan.rounds[1][0].entry_index, 1u);
    ASSERT_EQ(plan.rounds[2].size(), 1u);
    EXPECT_EQ(plan.rounds[2][0].entry_index, 2u);
    for (const auto& round : plan.rounds)
        for (const auto& planned : round) {
            EXPECT_EQ(planned.physical_partition, entries[planned.entry_index].partition % 10);
            EXPECT_TRUE(planned.tag);
        }
}

TEST(produce_plan, no_round_names_a_physical_partition_twice_and_order_per_partition_is_kept) {
    std::vector<produce_entry> entries;
    for (int32_t v = 0; v < 100; ++v) entries.push_back({"orders", (v * 37) % 100});
    for (int32_t v = 0; v < 40; ++v) entries.push_back({"events", v});
    produce_plan plan = plan_produce(entries, lookup);
    EXPECT_EQ(plan.rounds.size(), 10u);  // 10 virtual partitions per physical one at most
    size_t planned_count = 0;
    std::map<std::pair<std::string, int32_t>, size_t> last_index;
    for (const auto& round : plan.rounds) {
        std::set<std::pair<std::string, int32_t>> seen;
        for (const auto& planned : round) {
            std::pair<std::string, int32_t> key{std::string(entries[planned.entry_index].topic), planned.physical_partition};
            EXPECT_TRUE(seen.insert(key).second) << key.first << " p" << key.second << " twice in a round";
            auto previous = last_index.find(key);
            if (previous != last_index.end()) {
                EXPECT_GT(planned.entry_index, previous->second);
            }
            last_index[key] = planned.entry_index;
            ++planned_count;
        }
    }
    EXPECT_EQ(planned_count, entries.size());
}

TEST(produce_plan, out_of_range_virtual_partitions_are_rejected_and_the_rest_goes_out) {
    std::vector<produce_entry> entries{{"orders", 100}, {"orders", -1}, {"orders", 99}, {"events", 40}};
    produce_plan plan = plan_produce(entries, lookup);
    EXPECT_EQ(plan.rejected, (std::vector<size_t>{0, 1, 3}));
    ASSERT_EQ(plan.rounds.size(), 1u);
    ASSERT_EQ(plan.rounds[0].size(), 1u);
    EXPECT_EQ(plan.rounds[0][0].physical_partition, 9);
}

TEST(produce_plan, unmapped_topics_pass_through_untagged_but_duplicates_still_split) {
    std::vector<produce_entry> entries{{"plain", 3}, {"plain", 3}, {"plain", 55}};
    produce_plan plan = plan_produce(entries, lookup);
    EXPECT_TRUE(plan.rejected.empty());  // the broker answers for partitions it lacks
    ASSERT_EQ(plan.rounds.size(), 2u);
    EXPECT_EQ(plan.rounds[0].size(), 2u);
    EXPECT_EQ(plan.rounds[0][1].physical_partition, 55);
    EXPECT_FALSE(plan.rounds[0][0].tag);
    EXPECT_EQ(plan.rounds[1][0].entry_index, 1u);
}

}  // namespace
}  // namespace kpp
