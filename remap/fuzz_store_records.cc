// Fuzz target: what the proxy reads back from its offset store topic. The input is a records
// field as a store Fetch returns it; committed offsets and producer alias records are parsed
// into the caches, and every alias the index then resolves must be one a record named. The
// same field is read again as a read_committed answer whose aborted transactions come from
// the input's first bytes: skipping those batches never reads more than the plain read.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "remap/offset_cache.h"
#include "remap/producer_aliases.h"

using namespace kpp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const std::byte> field(reinterpret_cast<const std::byte*>(data), size);
    offset_cache cache;
    alias_index aliases;
    offset_cache::read_result read = cache.apply_records(field, 0, &aliases);
    if (read.next_offset && *read.next_offset < 0) std::abort();
    std::vector<aborted_transaction> aborted;
    for (size_t at = 0; at + 2 <= size && aborted.size() < 4; at += 2)
        aborted.push_back({int64_t(data[at] % 8), int64_t(data[at + 1])});
    offset_cache committed;
    offset_cache::read_result committed_read = committed.apply_records(field, 0, nullptr, aborted);
    // Aborted batches are skipped whole (not even decompressed): a field that reads plainly
    // reads committed too, ending at the same offset with no more applied.
    if (read.next_offset && committed_read.next_offset != read.next_offset) std::abort();
    if (read.next_offset && committed_read.applied > read.applied) std::abort();
    for (const auto& expired : aliases.expired(INT64_MAX)) {
        auto resolved = aliases.resolve(expired.key);
        if (!resolved || resolved->alias.producer_id < 0) std::abort();
        if (aliases.records_of(expired.key).empty()) std::abort();
    }
    // The record formats alone, on the raw input.
    if (auto key = decode_alias_key(field)) {
        if (encode_alias_key(*key).size() != size) std::abort();
    }
    if (auto value = decode_alias_value(field)) {
        if (encode_alias_value(*value).size() != size) std::abort();
    }
    return 0;
}
