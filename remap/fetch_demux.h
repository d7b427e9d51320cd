// Splits one physical partition's Fetch records field among the virtual partitions a client
// asked for on it (DESIGN.md section 2, "Fetch" and "Scan-ahead, never stall").
//
// Each batch belongs to the virtual partition named by the tag of its FIRST record (the
// broker never merges batches of different producers, and the proxy tags every record of a
// batch alike). Untagged batches and legacy (magic 0/1) entries belong to v = p. Control
// batches (transaction markers) go to every requested v: each consumer needs the commit or
// abort to finish its view of a transaction. Batches without records are dropped. The
// answer is byte ranges of the input, never copies, so the response can be sent as a
// scatter list straight from the buffers it arrived in.
//
// Pure logic: no I/O, no logging, no allocation beyond the result vectors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "protocol/record_batch.h"
#include "protocol/tag_rewrite.h"

namespace kpp {

struct demux_mapping {
    int32_t virtual_partitions = 0;   // V
    int32_t physical_partitions = 0;  // P
    int32_t physical_partition = 0;   // p, the partition whose records field this is
    std::string_view tag_key = protocol::default_tag_key;
    // Decompressed bytes classify_batch may produce per batch (decompression bombs).
    size_t records_bytes_max = protocol::records_bytes_max_default;
};

struct demux_request {
    int32_t virtual_partition = 0;
    int64_t fetch_offset = 0;
};

// A run of whole batches in the records field.
struct field_range {
    size_t offset_in_field = 0;
    size_t length_bytes = 0;
    bool operator==(const field_range&) const = default;
};

struct virtual_partition_slice {
    int32_t virtual_partition = 0;
    std::vector<field_range> ranges;  // in field order, adjacent runs merged
    size_t size_bytes = 0;
    int32_t batches = 0;
    uint64_t records = 0;      // records of the data batches delivered (control batches not counted)
    int64_t last_offset = -1;  // last offset of the last batch delivered; -1 when none
};

struct demux_counts {
    int32_t batches = 0;                  // complete entries seen (any magic)
    int32_t control_batches = 0;
    int32_t legacy_entries = 0;           // magic 0/1, given to v = p
    int32_t empty_batches = 0;            // no records: dropped
    int32_t foreign_tag_batches = 0;      // tag outside V, not on p, or malformed: dropped
    int32_t unreadable_batches = 0;       // classify_batch failed: dropped, see first_error
    size_t bytes_scanned = 0;             // the whole field, partial tail included
    size_t bytes_delivered = 0;           // sum over requested v (a control batch counts per v)
};

struct demux_result {
    std::vector<virtual_partition_slice> partitions;  // one per request, same order
    // Where the next physical fetch should start: one past the last complete entry, never
    // below the offset this fetch started at.
    int64_t next_fetch_offset = 0;
    // A batch cut short by the broker's byte limit: delivered to nobody (clients drop it
    // too), refetched next time from next_fetch_offset.
    bool partial_tail = false;
    size_t partial_tail_at = 0;  // offset in field where it starts
    // The first structural problem: the field walk stopping (nothing after error_at was
    // looked at) or a batch that could not be classified. The caller should not scan ahead
    // past it and may answer CORRUPT_MESSAGE.
    protocol::batch_error first_error = protocol::batch_error::none;
    size_t error_at = 0;
    demux_counts counts;
};

// `records_field` is the records of partition `mapping.physical_partition` from a Fetch
// response that was fetched from `physical_fetch_offset` (the smallest requested fetch
// offset, or further when skip hints moved it on). Requests for v that do not live on p
// simply receive control batches only; the caller validates requests.
demux_result demux_fetch_records(std::span<const std::byte> records_field, const demux_mapping& mapping,
                                 std::span<const demux_request> requests, int64_t physical_fetch_offset);

// The same over a records field that lies in several pieces (the receive buffers of one
// response). A batch inside one piece is read in place; only a batch that straddles pieces
// is gathered into `scratch` to be classified. Ranges are still offsets in the whole field.
demux_result demux_fetch_records(std::span<const std::span<const std::byte>> field_pieces, const demux_mapping& mapping,
                                 std::span<const demux_request> requests, int64_t physical_fetch_offset,
                                 std::vector<std::byte>& scratch);

}  // namespace kpp
