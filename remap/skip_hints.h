// Soft state for scan-ahead (DESIGN.md section 2, "Scan-ahead, never stall"): "virtual
// partition v of (topic, p) has no records in [from, to)", so the next fetch for v can start
// at `to` instead of rescanning its neighbours' records.
//
// Losing a hint only costs a rescan, never changes what a client receives, so memory is
// bounded by evicting with a clock sweep. Correctness rests on the caller: record only
// ranges below the high watermark it saw (offsets there never change), and key by topic id
// where the Fetch version carries one (a recreated topic reuses its name, not its id).
//
// One instance per core; no locks.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kpp {

class skip_hints {
public:
    static constexpr size_t entries_max_default = 65536;
    // Disjoint ranges kept per (topic, p, v): room for a few consumers at different
    // positions; the range ending lowest goes first, since consumers only move forward.
    static constexpr size_t ranges_per_entry_max = 4;

    // An entry is one (topic, p, v); entries_max 0 is taken as 1.
    explicit skip_hints(size_t entries_max = entries_max_default);

    // v has no records in [from_offset, to_offset). Empty or negative ranges are ignored.
    void record(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                int64_t from_offset, int64_t to_offset);
    // Where a fetch for v at fetch_offset may start instead: the end of the known-empty range
    // holding fetch_offset (following ranges that chain on), else fetch_offset itself.
    int64_t resume_offset(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                          int64_t fetch_offset);
    // Where a known-empty range for v ending at or after `end_offset` starts, when one
    // holds end_offset - 1: v has no records in [that start, end_offset). nullopt otherwise.
    std::optional<int64_t> empty_since(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                                       int64_t end_offset);
    void clear();

    size_t size() const { return index_.size(); }
    size_t entries_max() const { return entries_max_; }
    uint64_t evictions() const { return evictions_; }

private:
    struct offset_range {
        int64_t from = 0;
        int64_t to = 0;  // exclusive
    };
    struct key_view {
        std::string_view topic;
        int32_t physical_partition = 0;
        int32_t virtual_partition = 0;
        bool operator==(const key_view&) const = default;
    };
    struct entry_key {
        std::string topic;
        int32_t physical_partition = 0;
        int32_t virtual_partition = 0;
        key_view view() const { return {topic, physical_partition, virtual_partition}; }
    };
    // Lets lookups use a string_view topic without building a std::string.
    struct key_hash {
        using is_transparent = void;
        size_t operator()(const key_view& key) const;
        size_t operator()(const entry_key& key) const { return (*this)(key.view()); }
    };
    struct key_equal {
        using is_transparent = void;
        template <typename left_type, typename right_type>
        bool operator()(const left_type& left, const right_type& right) const {
            return view_of(left) == view_of(right);
        }
        static key_view view_of(const key_view& key) { return key; }
        static key_view view_of(const entry_key& key) { return key.view(); }
    };
    struct slot {
        const entry_key* key = nullptr;  // the index's own copy: map nodes never move
        std::array<offset_range, ranges_per_entry_max> ranges{};  // sorted, disjoint, not adjacent
        uint8_t range_count = 0;
        bool referenced = false;  // the clock's second chance
        bool in_use = false;
    };

    uint32_t slot_for(const key_view& key);
    uint32_t take_free_slot();
    static void merge_range(slot& entry, offset_range added);

    size_t entries_max_;
    std::vector<slot> slots_;  // grows to entries_max_, then slots are reused
    std::unordered_map<entry_key, uint32_t, key_hash, key_equal> index_;
    size_t clock_hand_ = 0;
    uint64_t evictions_ = 0;
};

}  // namespace kpp
