#include "remap/skip_hints.h"

#include <algorithm>

namespace kpp {

size_t skip_hints::key_hash::operator()(const key_view& key) const {
    size_t hash = std::hash<std::string_view>{}(key.topic);
    uint64_t partitions = (uint64_t(uint32_t(key.physical_partition)) << 32) | uint32_t(key.virtual_partition);
    // Mix the partitions in (boost's hash_combine constant): many v share one topic.
    hash ^= std::hash<uint64_t>{}(partitions) + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2);
    return hash;
}

skip_hints::skip_hints(size_t entries_max) : entries_max_(std::max<size_t>(entries_max, 1)) {}

void skip_hints::record(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                        int64_t from_offset, int64_t to_offset) {
    if (from_offset < 0 || to_offset <= from_offset) return;
    slot& entry = slots_[slot_for({topic, physical_partition, virtual_partition})];
    entry.referenced = true;
    merge_range(entry, {from_offset, to_offset});
}

std::optional<int64_t> skip_hints::empty_since(std::string_view topic, int32_t physical_partition,
                                               int32_t virtual_partition, int64_t end_offset) {
    auto found = index_.find(key_view{topic, physical_partition, virtual_partition});
    if (found == index_.end()) return std::nullopt;
    slot& entry = slots_[found->second];
    for (uint8_t index = 0; index < entry.range_count; ++index) {
        const offset_range& range = entry.ranges[index];
        if (range.from < end_offset && end_offset <= range.to) {
            entry.referenced = true;
            return range.from;
        }
    }
    return std::nullopt;
}

int64_t skip_hints::resume_offset(std::string_view topic, int32_t physical_partition, int32_t virtual_partition,
                                  int64_t fetch_offset) {
    auto found = index_.find(key_view{topic, physical_partition, virtual_partition});
    if (found == index_.end()) return fetch_offset;
    slot& entry = slots_[found->second];
    entry.referenced = true;
    // Ranges are kept merged, so one step normally suffices; walking on keeps the answer
    // right even if two ever touch. Bounded by the number of ranges.
    int64_t offset = fetch_offset;
    for (uint8_t index = 0; index < entry.range_count; ++index) {
        const offset_range& range = entry.ranges[index];
        if (range.from <= offset && offset < range.to) offset = range.to;
    }
    return offset;
}

void skip_hints::clear() {
    index_.clear();
    slots_.clear();
    clock_hand_ = 0;
}

uint32_t skip_hints::slot_for(const key_view& key) {
    auto found = index_.find(key);
    if (found != index_.end()) return found->second;
    uint32_t taken = take_free_slot();
    slot& entry = slots_[taken];
    auto inserted =
        index_.emplace(entry_key{std::string(key.topic), key.physical_partition, key.virtual_partition}, taken);
    entry.key = &inserted.first->first;
    entry.range_count = 0;
    entry.in_use = true;
    return taken;
}

// Grows until the bound, then a clock sweep: a slot used since the hand last passed gets a
// second chance. Ends within two turns, since the first turn clears every bit.
uint32_t skip_hints::take_free_slot() {
    if (slots_.size() < entries_max_) {
        slots_.emplace_back();
        return uint32_t(slots_.size() - 1);
    }
    for (;;) {
        size_t candidate = clock_hand_;
        clock_hand_ = (clock_hand_ + 1) % slots_.size();
        slot& entry = slots_[candidate];
        if (entry.in_use && entry.referenced) {
            entry.referenced = false;
            continue;
        }
        if (entry.in_use) {
            index_.erase(index_.find(entry.key->view()));
            entry.in_use = false;
            ++evictions_;
        }
        return uint32_t(candidate);
    }
}

// Keeps the ranges sorted, disjoint and non-adjacent, absorbing every range that overlaps or
// touches the new one. When full, the range ending lowest (other than the new one) goes.
void skip_hints::merge_range(slot& entry, offset_range added) {
    std::array<offset_range, ranges_per_entry_max + 1> kept{};
    size_t kept_count = 0;
    for (uint8_t index = 0; index < entry.range_count; ++index) {
        const offset_range& range = entry.ranges[index];
        if (range.to >= added.from && range.from <= added.to) {
            added = {std::min(range.from, added.from), std::max(range.to, added.to)};
        } else {
            kept[kept_count++] = range;
        }
    }
    auto position = std::find_if(kept.begin(), kept.begin() + kept_count,
                                 [&](const offset_range& range) { return range.from > added.from; });
    std::copy_backward(position, kept.begin() + kept_count, kept.begin() + kept_count + 1);
    *position = added;
    ++kept_count;
    size_t first = 0;
    if (kept_count > ranges_per_entry_max) first = kept[0].from == added.from ? 1 : 0;
    size_t out = 0;
    for (size_t index = 0; index < kept_count; ++index) {
        if (kept_count > ranges_per_entry_max && index == first) continue;
        entry.ranges[out++] = kept[index];
    }
    entry.range_count = uint8_t(out);
}

}  // namespace kpp
