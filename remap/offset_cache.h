// One store partition's committed offsets as the proxy last read them (DESIGN.md section 2,
// "Committed offsets"): pure state, no I/O. Records are applied by their offset in the
// store, so the proxy's own acknowledged writes and records read back from the store can
// arrive in any order and the newest always wins; a tombstone is kept as a marker for the
// same reason, until the whole cache is dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "remap/offset_records.h"
#include "remap/producer_aliases.h"
#include "remap/topic_layouts.h"

namespace kpp {

// One entry of a Fetch answer's aborted transactions.
struct aborted_transaction {
    int64_t producer_id = -1;
    int64_t first_offset = 0;
};

class offset_cache {
public:
    // The record at `store_offset` of the store partition: `value` nullopt is a tombstone.
    void apply(const offset_key& key, const std::optional<offset_value>& value, int64_t store_offset);
    // nullptr when the group has no committed offset for (topic, v).
    const offset_value* find(std::string_view group, std::string_view topic, int32_t virtual_partition) const;
    // Every live committed offset of a group, ordered by topic then virtual partition.
    void for_group(std::string_view group,
                   const std::function<void(const std::string& topic, int32_t virtual_partition,
                                            const offset_value& value)>& visit) const;
    // Entries held, tombstone markers included (what the cache bound counts).
    size_t size() const { return size_; }
    void clear();

    // Applies every record of a records field read from the store (a Fetch answer's
    // records): batches of any codec, control batches skipped, records whose key or value
    // is not in the store's format skipped and counted. Returns the offset after the last
    // complete batch (where the next read starts), or nullopt when a batch is damaged.
    struct read_result {
        std::optional<int64_t> next_offset;
        size_t applied = 0;
        size_t skipped = 0;
        std::string problem;  // why next_offset is nullopt
    };
    // Producer alias records (remap/producer_aliases.h) go to `aliases` when given, topic
    // layout records (remap/topic_layouts.h) to `layouts`.
    // `aborted`: a read_committed Fetch answer's aborted transactions; the batches of those
    // transactions are skipped up to each one's abort marker, as a read_committed consumer
    // does (records past the last stable offset never come in such an answer).
    read_result apply_records(std::span<const std::byte> records_field, int64_t fetch_offset,
                              alias_index* aliases = nullptr, std::span<const aborted_transaction> aborted = {},
                              topic_layouts* layouts = nullptr);

private:
    struct entry {
        std::optional<offset_value> value;  // nullopt: deleted
        int64_t store_offset = -1;
    };
    using group_entries = std::map<std::pair<std::string, int32_t>, entry, std::less<>>;
    std::unordered_map<std::string, group_entries> groups_;
    size_t size_ = 0;
};

}  // namespace kpp
