#include "remap/offset_cache.h"

#include <algorithm>
#include <set>

#include "protocol/codecs.h"
#include "protocol/record_batch.h"

namespace kpp {
namespace {
// A store record is small (key and value under a few KiB); a batch of them decompresses to
// far less than this. Bigger is treated as damage rather than allocated.
constexpr size_t decompressed_bytes_max = 64u << 20;

// Producer aliases share the store topic (DESIGN.md section 2): their records go to the
// partition's alias index, if the caller keeps one. False for a record not in their format.
bool apply_alias_record(std::span<const std::byte> key_bytes, const std::optional<std::span<const std::byte>>& value_bytes,
                        int64_t offset, alias_index* aliases) {
    std::optional<alias_record_key> key = decode_alias_key(key_bytes);
    if (!key) return false;
    std::optional<alias_record_value> value;
    if (value_bytes) {
        value = decode_alias_value(*value_bytes);
        if (!value) return false;
    }
    if (aliases) aliases->apply(*key, value, offset);
    return true;
}
}  // namespace

void offset_cache::apply(const offset_key& key, const std::optional<offset_value>& value, int64_t store_offset) {
    group_entries& entries = groups_[key.group];
    auto [found, inserted] = entries.try_emplace({key.topic, key.virtual_partition});
    if (inserted) {
        ++size_;
    } else if (found->second.store_offset >= store_offset) {
        return;  // what is held was written later
    }
    found->second.value = value;
    found->second.store_offset = store_offset;
}

const offset_value* offset_cache::find(std::string_view group, std::string_view topic, int32_t virtual_partition) const {
    auto entries = groups_.find(std::string(group));
    if (entries == groups_.end()) return nullptr;
    auto found = entries->second.find(std::pair<std::string, int32_t>{std::string(topic), virtual_partition});
    if (found == entries->second.end() || !found->second.value) return nullptr;
    return &*found->second.value;
}

void offset_cache::for_group(
    std::string_view group,
    const std::function<void(const std::string&, int32_t, const offset_value&)>& visit) const {
    auto entries = groups_.find(std::string(group));
    if (entries == groups_.end()) return;
    for (const auto& [key, held] : entries->second)
        if (held.value) visit(key.first, key.second, *held.value);
}

void offset_cache::clear() {
    groups_.clear();
    size_ = 0;
}

offset_cache::read_result offset_cache::apply_records(std::span<const std::byte> records_field, int64_t fetch_offset,
                                                      alias_index* aliases, std::span<const aborted_transaction> aborted,
                                                      topic_layouts* layouts) {
    read_result result;
    int64_t next = fetch_offset;
    std::vector<aborted_transaction> pending_aborts(aborted.begin(), aborted.end());
    std::sort(pending_aborts.begin(), pending_aborts.end(),
              [](const aborted_transaction& left, const aborted_transaction& right) {
                  return left.first_offset > right.first_offset;  // the lowest last: popped first
              });
    std::set<int64_t> aborting;  // producers inside an aborted transaction at this point
    protocol::batch_iterator batches(records_field);
    protocol::batch_entry batch;
    while (batches.next(batch)) {
        if (batch.magic != 2) {
            result.problem = "a record batch of magic " + std::to_string(batch.magic) + " (only v2 is written)";
            return result;
        }
        if (auto error = protocol::validate_batch(batch.bytes); error != protocol::batch_error::none) {
            result.problem = std::string("damaged record batch: ") + protocol::to_string(error);
            return result;
        }
        protocol::record_batch_view view(batch.bytes);
        int64_t after = view.last_offset() + 1;
        while (!pending_aborts.empty() && pending_aborts.back().first_offset <= view.last_offset()) {
            aborting.insert(pending_aborts.back().producer_id);
            pending_aborts.pop_back();
        }
        if (view.is_control()) {
            // The transaction's marker ends it: the producer's later batches are another one.
            if (view.is_transactional()) aborting.erase(view.producer_id());
            next = std::max(next, after);
            continue;
        }
        if (after <= next || (view.is_transactional() && aborting.count(view.producer_id()))) {
            next = std::max(next, after);
            continue;
        }
        std::span<const std::byte> section = view.records_section();
        protocol::codec_result inflated;
        if (view.compression() != protocol::codec::none) {
            inflated = protocol::decompress(view.compression(), section, decompressed_bytes_max);
            if (!inflated.ok()) {
                result.problem = std::string("record batch does not decompress: ") + protocol::to_string(inflated.error);
                return result;
            }
            section = inflated.bytes;
        }
        protocol::record_reader reader(section, view.records_count());
        protocol::record_view record;
        while (reader.next(record)) {
            int64_t offset = view.base_offset() + record.offset_delta;
            if (offset < fetch_offset) continue;
            if (record.key && is_alias_key(*record.key)) {
                if (apply_alias_record(*record.key, record.value, offset, aliases)) ++result.applied;
                else ++result.skipped;
                continue;
            }
            if (record.key && is_layout_key(*record.key)) {
                if (!layouts) continue;  // the start-up and reload checks read these, not the cores
                auto topic = decode_layout_key(*record.key);
                auto layout = record.value ? decode_layout_value(*record.value) : std::nullopt;
                if (!topic || (record.value && !layout)) {
                    ++result.skipped;
                } else {
                    if (layout) (*layouts)[*topic] = *layout;
                    else layouts->erase(*topic);
                    ++result.applied;
                }
                continue;
            }
            std::optional<offset_key> key = record.key ? decode_offset_key(*record.key) : std::nullopt;
            std::optional<offset_value> value;
            bool value_ok = true;
            if (record.value) {
                value = decode_offset_value(*record.value);
                value_ok = value.has_value();
            }
            if (!key || !value_ok) {
                ++result.skipped;
                continue;
            }
            apply(*key, value, offset);
            ++result.applied;
        }
        if (reader.error() != protocol::batch_error::none) {
            result.problem = std::string("damaged records: ") + protocol::to_string(reader.error());
            return result;
        }
        next = std::max(next, after);
    }
    if (batches.error() != protocol::batch_error::none) {
        result.problem = std::string("damaged records field: ") + protocol::to_string(batches.error());
        return result;
    }
    result.next_offset = next;
    return result;
}

}  // namespace kpp
