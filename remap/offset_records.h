// Records of the offset store (DESIGN.md section 2, "Committed offsets"): the committed
// offset of one (group, topic, virtual partition) in the proxy's compacted internal topic.
// Groundwork for the offset store; pure encoding and planning, no I/O.
//
// Key:   int16 format (0) | string group | string topic | int32 virtual partition
// Value: int16 format (0) | int64 offset | int32 leader epoch | nullable string metadata |
//        int64 commit time (ms since the epoch); a null value (tombstone) deletes the key.
// Strings are int16-length-prefixed UTF-8 as in Kafka's own offsets topic. All of one
// group's keys go to one store partition, so answering OffsetFetch reads one partition.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kpp {

struct offset_key {
    std::string group;
    std::string topic;
    int32_t virtual_partition = 0;
    bool operator==(const offset_key&) const = default;
};

struct offset_value {
    int64_t offset = -1;
    int32_t leader_epoch = -1;
    std::optional<std::string> metadata;
    int64_t commit_time_ms = 0;
    bool operator==(const offset_value&) const = default;
};

std::vector<std::byte> encode_offset_key(const offset_key& key);
std::vector<std::byte> encode_offset_value(const offset_value& value);
// nullopt for bytes this format does not describe (another format version, truncated,
// trailing bytes): a reader skips such records rather than guessing.
std::optional<offset_key> decode_offset_key(std::span<const std::byte> bytes);
std::optional<offset_value> decode_offset_value(std::span<const std::byte> bytes);

// The store partition holding a group's offsets: Kafka's murmur2 of the group name, made
// non-negative, modulo the store's partition count (> 0).
int32_t offset_store_partition(std::string_view group, int32_t partitions);
uint32_t murmur2(std::span<const std::byte> bytes);

// The physical commit that goes first (so the broker validates membership and a tool
// reading __consumer_offsets sees a safe resume point): for physical partition p, the
// smallest committed offset among p's virtual partitions that have one, after applying
// this request's commits. `committed` maps virtual partition -> offset for one (group,
// topic); nullopt when none of p's virtual partitions has a commit.
std::optional<int64_t> physical_commit_offset(const std::map<int32_t, int64_t>& committed, int32_t physical_partition,
                                              int32_t physical_partitions);

}  // namespace kpp
