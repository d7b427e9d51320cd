// The guard on topic layouts (DESIGN.md section 7, "Reload"): a mapping may raise V and add
// topics while the proxy runs, but never lower V, change P or unmap a topic it has served
// remapped, in this process or any earlier one (the offset store records each topic's
// layout). Run at start-up, at every reload and after metadata refreshes; pure, so the
// caller does the blocking reads and writes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "proxy/cluster_directory.h"
#include "proxy/config.h"
#include "remap/topic_layouts.h"

namespace kpp {

// One topic of the cluster as a mapping serves it, for the admin view.
struct topic_view {
    std::string topic;
    std::string rule;  // "mapping.topics.<key>", "mapping (default)" or "" (none)
    int32_t virtual_partitions = 0, physical_partitions = 0;
    int32_t physical_seen = 0;  // partitions the cluster has
    std::optional<topic_layout> recorded;
};

struct layout_check {
    std::vector<std::string> refusals;  // one message per topic whose change would strand records
    topic_layouts to_record;            // remapped topics the store does not know at their V yet
    std::vector<topic_view> topics;     // the cluster's topics that are remapped or recorded
};

// `running`: the mapping served now (nullptr at start-up). Only topics the cluster has are
// checked: a deleted topic's record does not hold back the name's next life.
layout_check check_topic_layouts(const mapping_settings& next, const mapping_settings* running,
                                 const layout_snapshot& snapshot, int64_t now_ms);

// The configuration key that decides a topic's mapping.
std::string mapping_rule_key(const mapping_settings& settings, const std::string& topic);

}  // namespace kpp
