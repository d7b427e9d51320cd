// What one core needs to present virtual partitions: the mapping registry (memoised per
// core), the skip hints of scan-ahead (soft state, per core), and the topic names behind
// the topic ids clients use from Fetch v13 on (shared by all cores: a client may learn an
// id from a Metadata answer on one core and fetch with it on another).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "proxy/config.h"
#include "remap/fetch_window.h"
#include "remap/mapping.h"
#include "remap/skip_hints.h"

namespace kpp {

using topic_uuid = std::array<uint8_t, 16>;

// Topic id -> name, learned from every Metadata answer that passes through. Bounded: a
// forgotten id only makes one Fetch answer UNKNOWN_TOPIC_ID, after which the client asks
// for metadata again.
class topic_names {
public:
    static constexpr size_t entries_max = 100000;

    void learn(const topic_uuid& id, std::string_view name);
    std::optional<std::string> find(const topic_uuid& id) const;

private:
    struct uuid_hash {
        size_t operator()(const topic_uuid& id) const;
    };
    mutable std::shared_mutex lock_;
    std::unordered_map<topic_uuid, std::string, uuid_hash> names_;
};

// Virtual high watermarks learnt by Fetch ("v has no records in [end, physical end)"),
// shared by all cores: a lag tool asks ListOffsets on its own connection, which may land on
// another core than the consumers whose fetches learnt them. Bounded; soft state.
class virtual_ends {
public:
    static constexpr size_t entries_max = 262144;

    void learn(std::string_view topic, int32_t physical_partition, int32_t virtual_partition, int64_t end,
               int64_t physical_end);
    // v's end when v has no records in [end, physical_end) is known; nullopt otherwise.
    std::optional<int64_t> find(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                                int64_t physical_end) const;

private:
    struct known {
        int64_t end = 0;
        int64_t physical_end = 0;
    };
    mutable std::shared_mutex lock_;
    std::unordered_map<std::string, known> ends_;  // key: topic '\0' p '\0' v
};

struct remap_state {
    remap_state(const proxy_config& config, topic_names& names, virtual_ends& ends)
        : mappings(config.mapping), names(names), ends(ends), tag_key(config.mapping.tag_header),
          window(config.mapping.fetch_window_bytes) {}

    mapping_registry mappings;
    skip_hints hints;
    topic_names& names;
    virtual_ends& ends;
    std::string tag_key;
    // Topics covered only by the default whose physical count is not P: warned about once.
    std::unordered_set<std::string> default_mismatch_warned;
    // Topics whose records carry a tag outside [0, V) (V lowered, or written around the proxy).
    std::unordered_set<std::string> foreign_tag_warned;
    // Recent physical answers and fetches in flight, shared by this core's Fetch requests.
    fetch_window window;
};

}  // namespace kpp
