#include "remap/mapping.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kpp {
namespace {

using source = topic_mapping::source;

topic_mapping_rule make_rule(std::string pattern, bool is_regex, int32_t virtual_partitions,
                             int32_t physical_partitions) {
  topic_mapping_rule rule;
  rule.pattern = std::move(pattern);
  rule.is_regex = is_regex;
  rule.virtual_partitions = virtual_partitions;
  rule.physical_partitions = physical_partitions;
  return rule;
}

mapping_settings settings_with_default(int32_t virtual_partitions, int32_t physical_partitions) {
  mapping_settings settings;
  settings.virtual_partitions = virtual_partitions;
  settings.physical_partitions = physical_partitions;
  return settings;
}

void expect_mapping(const topic_mapping& mapping, int32_t virtual_partitions, int32_t physical_partitions,
                    source from) {
  EXPECT_EQ(mapping.virtual_partitions, virtual_partitions);
  EXPECT_EQ(mapping.physical_partitions, physical_partitions);
  EXPECT_EQ(mapping.from, from);
}

TEST(mapping_registry, exact_rule_beats_earlier_regex) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule("events-.*", true, 200, 20));
  settings.topics.push_back(make_rule("events-audit", false, 30, 3));
  mapping_registry registry(settings);
  expect_mapping(registry.lookup("events-audit"), 30, 3, source::exact);
  expect_mapping(registry.lookup("events-clicks"), 200, 20, source::regex);
}

TEST(mapping_registry, first_matching_regex_in_file_order_wins) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule("tenant-a-.*", true, 40, 4));
  settings.topics.push_back(make_rule("tenant-.*", true, 80, 8));
  settings.topics.push_back(make_rule("tenant-a-x", false, 12, 6));
  mapping_registry registry(settings);
  expect_mapping(registry.lookup("tenant-a-orders"), 40, 4, source::regex);
  expect_mapping(registry.lookup("tenant-b-orders"), 80, 8, source::regex);
  expect_mapping(registry.lookup("tenant-a-x"), 12, 6, source::exact);

  mapping_settings reversed = settings_with_default(100, 10);
  reversed.topics.push_back(make_rule("tenant-.*", true, 80, 8));
  reversed.topics.push_back(make_rule("tenant-a-.*", true, 40, 4));
  expect_mapping(mapping_registry(reversed).lookup("tenant-a-orders"), 80, 8, source::regex);
}

TEST(mapping_registry, regexes_must_match_the_whole_name) {
  mapping_settings settings;
  settings.topics.push_back(make_rule("events.*", true, 20, 2));
  settings.topics.push_back(make_rule("audit\\..*", true, 30, 3));
  mapping_registry registry(settings);
  expect_mapping(registry.lookup("events"), 20, 2, source::regex);
  expect_mapping(registry.lookup("events-v2"), 20, 2, source::regex);
  expect_mapping(registry.lookup("my-events"), 0, 0, source::none);
  expect_mapping(registry.lookup("audit.login"), 30, 3, source::regex);
  expect_mapping(registry.lookup("audit-login"), 0, 0, source::none);
}

TEST(mapping_registry, key_with_dot_matches_its_literal_name_as_exact) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule("orders.*", true, 60, 6));
  settings.topics.push_back(make_rule("orders.v1", true, 8, 2));
  mapping_registry registry(settings);
  expect_mapping(registry.lookup("orders.v1"), 8, 2, source::exact);
  expect_mapping(registry.lookup("ordersXv1"), 60, 6, source::regex);
}

TEST(mapping_registry, falls_back_to_global_default) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule("special", false, 8, 8));
  mapping_registry registry(settings);
  topic_mapping mapping = registry.lookup("anything");
  expect_mapping(mapping, 100, 10, source::global_default);
  EXPECT_TRUE(mapping.remapped());
  topic_mapping special = registry.lookup("special");
  expect_mapping(special, 8, 8, source::exact);
  EXPECT_FALSE(special.remapped());
}

TEST(mapping_registry, no_default_passes_unnamed_topics_through) {
  mapping_settings settings;
  settings.topics.push_back(make_rule("orders", false, 40, 4));
  mapping_registry registry(settings);
  topic_mapping mapping = registry.lookup("payments");
  expect_mapping(mapping, 0, 0, source::none);
  EXPECT_FALSE(mapping.remapped());
  EXPECT_TRUE(registry.lookup("orders").remapped());
}

TEST(mapping_registry, internal_topics_are_never_mapped) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule(".*", true, 40, 4));
  settings.topics.push_back(make_rule("__consumer_offsets", false, 40, 4));
  mapping_registry registry(settings);
  for (std::string_view topic : {"__consumer_offsets", "__transaction_state", "__kpr_offsets", "__"}) {
    SCOPED_TRACE(topic);
    expect_mapping(registry.lookup(topic), 0, 0, source::none);
    EXPECT_FALSE(registry.lookup(topic).remapped());
  }
  expect_mapping(registry.lookup("_single_underscore"), 40, 4, source::regex);
  EXPECT_TRUE(is_internal_topic("__x"));
  EXPECT_FALSE(is_internal_topic("_x"));
}

TEST(mapping_registry, rules_loaded_from_config_inherit_global_values) {
  proxy_config config = load_config_string(R"(
kafka: {bootstrap_servers: "b:9092"}
mapping:
  virtual_partitions: 100
  physical_partitions: 10
  topics:
    "metrics\\..*": {virtual_partitions: 50}
    orders: {physical_partitions: 5}
)");
  mapping_registry registry(config.mapping);
  expect_mapping(registry.lookup("metrics.cpu"), 50, 10, source::regex);
  expect_mapping(registry.lookup("orders"), 100, 5, source::exact);
}

TEST(mapping_registry, repeated_and_many_lookups_stay_correct) {
  mapping_settings settings = settings_with_default(12, 4);
  settings.topics.push_back(make_rule("t-1.*", true, 20, 5));
  mapping_registry registry(settings);
  // Past the cache bound, so the cache is cleared at least once along the way.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < static_cast<int>(mapping_registry::cache_entries_max) + 500; ++i) {
      std::string topic = "t-" + std::to_string(i);
      topic_mapping mapping = registry.lookup(topic);
      bool regex_hit = topic.starts_with("t-1");
      ASSERT_EQ(mapping.virtual_partitions, regex_hit ? 20 : 12) << topic;
      ASSERT_EQ(mapping.from, regex_hit ? source::regex : source::global_default) << topic;
    }
  }
  expect_mapping(registry.lookup("t-1"), 20, 5, source::regex);
  expect_mapping(registry.lookup("t-1"), 20, 5, source::regex);
}

TEST(mapping_registry, bad_regex_throws_config_error_naming_the_key) {
  mapping_settings settings;
  settings.topics.push_back(make_rule("bad(", true, 4, 2));
  try {
    mapping_registry registry(settings);
    FAIL() << "expected config_error";
  } catch (const config_error& error) {
    EXPECT_NE(std::string(error.what()).find("mapping.topics.bad(: invalid regular expression"), std::string::npos);
  }
}

TEST(mapping_registry, describe_lists_default_and_rules_in_order) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule("events.*", true, 200, 20));
  settings.topics.push_back(make_rule("orders", false, 6, 6));
  EXPECT_EQ(mapping_registry(settings).describe(),
            "Mapping: 100 virtual -> 10 physical partitions (10:1)\n"
            "Mapping for 'events.*' (regex): 200 virtual -> 20 physical (10:1)\n"
            "Mapping for 'orders' (exact): 6 virtual -> 6 physical (1:1)");
  EXPECT_EQ(mapping_registry(mapping_settings{}).describe(), "Mapping: no default (unmapped topics pass through)");
}

TEST(topic_mapping, remapped_needs_more_virtual_than_physical) {
  EXPECT_TRUE((topic_mapping{8, 2, source::exact}).remapped());
  EXPECT_FALSE((topic_mapping{2, 2, source::exact}).remapped());
  EXPECT_FALSE((topic_mapping{8, 0, source::exact}).remapped());
  EXPECT_FALSE(topic_mapping{}.remapped());
}

// The data path skips looking inside requests when nothing is remapped.
TEST(mapping_registry, remaps_anything_only_with_a_rule_or_default_of_v_above_p) {
  EXPECT_FALSE(mapping_registry(mapping_settings{}).remaps_anything());
  mapping_settings same = settings_with_default(0, 0);
  same.topics.push_back(make_rule("same-.*", true, 5, 5));
  EXPECT_FALSE(mapping_registry(same).remaps_anything());
  mapping_settings with_rule = same;
  with_rule.topics.push_back(make_rule("orders", false, 30, 3));
  EXPECT_TRUE(mapping_registry(with_rule).remaps_anything());
  EXPECT_TRUE(mapping_registry(settings_with_default(100, 10)).remaps_anything());
}

TEST(mapping_registry, counter_slots_are_assigned_once_per_mapped_topic) {
  mapping_settings settings = settings_with_default(100, 10);
  settings.topics.push_back(make_rule("plain", false, 4, 4));
  mapping_registry registry(settings);
  std::vector<std::string> asked;
  auto assign = [&](std::string_view topic) {
    asked.emplace_back(topic);
    return uint32_t(asked.size() + 6);
  };
  auto first = registry.lookup_counted("orders", assign);
  EXPECT_TRUE(first.mapping.remapped());
  EXPECT_EQ(first.slot, 7u);
  // Remembered beside the mapping: a later lookup, counted or not, asks nobody.
  EXPECT_TRUE(registry.lookup("orders").remapped());
  EXPECT_EQ(registry.lookup_counted("orders", assign).slot, 7u);
  EXPECT_EQ(registry.lookup_counted("events", assign).slot, 8u);
  // Topics that are not remapped (V == P, internal) get no slot and cost no call.
  EXPECT_EQ(registry.lookup_counted("plain", assign).slot, mapping_registry::no_slot);
  EXPECT_EQ(registry.lookup_counted("__consumer_offsets", assign).slot, mapping_registry::no_slot);
  EXPECT_EQ(asked, (std::vector<std::string>{"orders", "events"}));
}

TEST(mapping_registry, a_topic_met_before_counting_gets_its_slot_later) {
  mapping_registry registry(settings_with_default(100, 10));
  EXPECT_TRUE(registry.lookup("orders").remapped());  // memoised without a slot
  auto counted = registry.lookup_counted("orders", [](std::string_view) { return uint32_t(3); });
  EXPECT_EQ(counted.slot, 3u);
}

}  // namespace
}  // namespace kpp
