#include "remap/producer_aliases.h"

#include <algorithm>
#include <string_view>

#include "protocol/wire.h"
#include "remap/offset_records.h"

namespace kpp {
namespace {

constexpr int16_t value_format = 0;

}  // namespace

std::vector<std::byte> encode_alias_key(const alias_record_key& key) {
    protocol::wire_writer writer;
    writer.write_int16(alias_key_kind);
    writer.write_int64(key.key.producer_id);
    writer.write_int16(key.key.producer_epoch);
    writer.write_int32(key.key.group);
    writer.write_string(key.writer, false);
    return std::move(writer.bytes());
}

std::vector<std::byte> encode_alias_value(const alias_record_value& value) {
    protocol::wire_writer writer;
    writer.write_int16(value_format);
    writer.write_int64(value.alias.producer_id);
    writer.write_int16(value.alias.producer_epoch);
    writer.write_int64(value.created_ms);
    writer.write_int64(value.used_ms);
    return std::move(writer.bytes());
}

bool is_alias_key(std::span<const std::byte> key) {
    return key.size() >= 2 && protocol::load_int16_be(key.data()) == alias_key_kind;
}

std::optional<alias_record_key> decode_alias_key(std::span<const std::byte> bytes) {
    protocol::wire_reader reader(bytes);
    if (reader.read_int16() != alias_key_kind || !reader.ok()) return std::nullopt;
    alias_record_key key;
    key.key.producer_id = reader.read_int64();
    key.key.producer_epoch = reader.read_int16();
    key.key.group = reader.read_int32();
    auto writer = reader.read_string(false, false);
    if (!reader.ok() || reader.remaining() != 0 || !writer) return std::nullopt;
    if (key.key.producer_id < 0 || key.key.group < 0 || writer->size() > alias_writer_bytes_max) return std::nullopt;
    key.writer = std::string(*writer);
    return key;
}

std::optional<alias_record_value> decode_alias_value(std::span<const std::byte> bytes) {
    protocol::wire_reader reader(bytes);
    if (reader.read_int16() != value_format || !reader.ok()) return std::nullopt;
    alias_record_value value;
    value.alias.producer_id = reader.read_int64();
    value.alias.producer_epoch = reader.read_int16();
    value.created_ms = reader.read_int64();
    value.used_ms = reader.read_int64();
    if (!reader.ok() || reader.remaining() != 0 || value.alias.producer_id < 0) return std::nullopt;
    return value;
}

int32_t alias_store_partition(int64_t producer_id, int32_t partitions) {
    std::string name = "producer:" + std::to_string(producer_id);
    return offset_store_partition(name, partitions);
}

void alias_index::apply(const alias_record_key& key, const std::optional<alias_record_value>& value,
                        int64_t store_offset) {
    entry& found = entries_[key.key];
    held* slot = nullptr;
    if (key.writer.empty()) {
        slot = &found.resolved;
        if (slot->store_offset < 0) ++records_;
    } else {
        auto [candidate, inserted] = found.candidates.try_emplace(key.writer);
        if (inserted) ++records_;
        slot = &candidate->second;
    }
    if (slot->store_offset >= store_offset) return;  // what is held was written later
    slot->value = value;
    slot->store_offset = store_offset;
}

std::optional<alias_record_value> alias_index::resolve(const alias_key& key) const {
    auto found = entries_.find(key);
    if (found == entries_.end()) return std::nullopt;
    if (found->second.resolved.value) return found->second.resolved.value;
    const held* earliest = nullptr;
    for (const auto& [writer, candidate] : found->second.candidates)
        if (candidate.value && (!earliest || candidate.store_offset < earliest->store_offset)) earliest = &candidate;
    if (!earliest) return std::nullopt;
    return earliest->value;
}

std::vector<alias_record_key> alias_index::records_of(const alias_key& key) const {
    std::vector<alias_record_key> records;
    auto found = entries_.find(key);
    if (found == entries_.end()) return records;
    if (found->second.resolved.value) records.push_back({key, {}});
    for (const auto& [writer, candidate] : found->second.candidates)
        if (candidate.value) records.push_back({key, writer});
    return records;
}

std::vector<alias_index::expired_alias> alias_index::expired(int64_t idle_before_ms) const {
    // Newest epoch per client producer among live aliases.
    std::map<int64_t, int16_t> newest_epoch;
    for (const auto& [key, held_entry] : entries_) {
        if (!resolve(key)) continue;
        auto [found, inserted] = newest_epoch.try_emplace(key.producer_id, key.producer_epoch);
        if (!inserted) found->second = std::max(found->second, key.producer_epoch);
    }
    std::vector<expired_alias> out;
    for (const auto& [key, held_entry] : entries_) {
        std::optional<alias_record_value> live = resolve(key);
        if (!live) continue;
        bool superseded = newest_epoch[key.producer_id] > key.producer_epoch;
        int64_t last_used = std::max(live->used_ms, live->created_ms);
        if (superseded || last_used < idle_before_ms) out.push_back({key, superseded});
    }
    return out;
}

void alias_index::clear() {
    entries_.clear();
    records_ = 0;
}

}  // namespace kpp
