#include "remap/offset_records.h"

#include <algorithm>

#include "protocol/wire.h"

namespace kpp {
namespace {

constexpr int16_t format_version = 0;

}  // namespace

std::vector<std::byte> encode_offset_key(const offset_key& key) {
    protocol::wire_writer writer;
    writer.write_int16(format_version);
    writer.write_string(key.group, false);
    writer.write_string(key.topic, false);
    writer.write_int32(key.virtual_partition);
    return std::move(writer.bytes());
}

std::vector<std::byte> encode_offset_value(const offset_value& value) {
    protocol::wire_writer writer;
    writer.write_int16(format_version);
    writer.write_int64(value.offset);
    writer.write_int32(value.leader_epoch);
    writer.write_string(value.metadata ? std::optional<std::string_view>(*value.metadata) : std::nullopt, false);
    writer.write_int64(value.commit_time_ms);
    return std::move(writer.bytes());
}

std::optional<offset_key> decode_offset_key(std::span<const std::byte> bytes) {
    protocol::wire_reader reader(bytes);
    if (reader.read_int16() != format_version || !reader.ok()) return std::nullopt;
    offset_key key;
    auto group = reader.read_string(false, false);
    auto topic = reader.read_string(false, false);
    key.virtual_partition = reader.read_int32();
    if (!reader.ok() || reader.remaining() != 0 || !group || !topic) return std::nullopt;
    key.group = std::string(*group);
    key.topic = std::string(*topic);
    return key;
}

std::optional<offset_value> decode_offset_value(std::span<const std::byte> bytes) {
    protocol::wire_reader reader(bytes);
    if (reader.read_int16() != format_version || !reader.ok()) return std::nullopt;
    offset_value value;
    value.offset = reader.read_int64();
    value.leader_epoch = reader.read_int32();
    auto metadata = reader.read_string(false, true);
    value.commit_time_ms = reader.read_int64();
    if (!reader.ok() || reader.remaining() != 0) return std::nullopt;
    if (metadata) value.metadata = std::string(*metadata);
    return value;
}

uint32_t murmur2(std::span<const std::byte> bytes) {
    // Kafka's Utils.murmur2 (seed 0x9747b28c), which its default partitioner uses.
    constexpr uint32_t m = 0x5bd1e995;
    constexpr int r = 24;
    size_t length = bytes.size();
    uint32_t h = 0x9747b28cu ^ uint32_t(length);
    size_t whole = length / 4;
    for (size_t index = 0; index < whole; ++index) {
        const std::byte* at = bytes.data() + index * 4;
        uint32_t k = uint32_t(at[0]) | (uint32_t(at[1]) << 8) | (uint32_t(at[2]) << 16) | (uint32_t(at[3]) << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const std::byte* tail = bytes.data() + whole * 4;
    switch (length % 4) {
        case 3: h ^= uint32_t(tail[2]) << 16; [[fallthrough]];
        case 2: h ^= uint32_t(tail[1]) << 8; [[fallthrough]];
        case 1:
            h ^= uint32_t(tail[0]);
            h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

int32_t offset_store_partition(std::string_view group, int32_t partitions) {
    uint32_t hash = murmur2(std::as_bytes(std::span(group.data(), group.size())));
    return int32_t((hash & 0x7fffffffu) % uint32_t(std::max(partitions, 1)));
}

std::optional<int64_t> physical_commit_offset(const std::map<int32_t, int64_t>& committed, int32_t physical_partition,
                                              int32_t physical_partitions) {
    std::optional<int64_t> lowest;
    if (physical_partitions <= 0) return lowest;
    for (const auto& [virtual_partition, offset] : committed) {
        if (virtual_partition < 0 || virtual_partition % physical_partitions != physical_partition) continue;
        if (offset < 0) continue;  // "no offset" is not a position
        lowest = lowest ? std::min(*lowest, offset) : offset;
    }
    return lowest;
}

}  // namespace kpp
