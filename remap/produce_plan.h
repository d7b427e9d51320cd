// Planning a client's Produce request onto physical partitions (DESIGN.md "Produce").
//
// The broker keeps only the LAST entry when one Produce request names a partition twice
// and accepts one batch per partition, so virtual partitions that share a physical one
// are never put in the same physical request: the plan is a sequence of rounds, each a
// physical request with every (topic, physical partition) at most once, sent in order on
// one connection. Entry order per physical partition is kept (round k carries the k-th
// entry aimed at it), so records land in the order the client sent them.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "remap/mapping.h"

namespace kpp {

struct produce_entry {
    std::string_view topic;
    int32_t partition = 0;  // as the client named it: virtual for a mapped topic
};

struct planned_entry {
    size_t entry_index = 0;           // into the client's entries
    int32_t physical_partition = 0;
    bool tag = false;                 // records get the virtual-partition header
};

struct produce_plan {
    std::vector<std::vector<planned_entry>> rounds;  // physical requests, in sending order
    // Entries answered by the proxy itself with UNKNOWN_TOPIC_OR_PARTITION: a virtual
    // partition outside [0, V) of a mapped topic. The rest of the request still goes out.
    std::vector<size_t> rejected;
};

using mapping_lookup = std::function<topic_mapping(std::string_view topic)>;

produce_plan plan_produce(std::span<const produce_entry> entries, const mapping_lookup& lookup);

}  // namespace kpp
