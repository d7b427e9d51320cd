#include "remap/fetch_demux.h"

#include "protocol/wire.h"

#include <algorithm>

namespace kpp {
namespace {

using protocol::batch_entry;
using protocol::batch_error;

// Who receives one complete entry of the field.
struct batch_owner {
    enum class kind : uint8_t { one, every, nobody } to = kind::nobody;
    int32_t virtual_partition = 0;  // when `one`
    int64_t last_offset = 0;
    bool offsets_known = false;     // false when the header itself was unreadable
    uint32_t records = 0;           // data records in it (0 for control batches)
};

int64_t load_int64_be(const std::byte* at) {
    uint64_t value = 0;
    for (int index = 0; index < 8; ++index) value = (value << 8) | uint64_t(at[index]);
    return int64_t(value);
}

void note_error(demux_result& result, batch_error error, size_t at) {
    if (result.first_error != batch_error::none) return;
    result.first_error = error;
    result.error_at = at;
}

bool tag_is_ours(const demux_mapping& mapping, int32_t virtual_partition) {
    return virtual_partition >= 0 && virtual_partition < mapping.virtual_partitions &&
           virtual_partition % mapping.physical_partitions == mapping.physical_partition;
}

// Magic 0/1 message sets predate headers, so they cannot carry a tag: group 0. Their offset
// field holds the last offset (of the inner messages, for a compressed wrapper).
batch_owner legacy_owner(const batch_entry& entry, const demux_mapping& mapping, demux_counts& counts) {
    ++counts.legacy_entries;
    // One message per entry (a compressed wrapper's inner messages are not counted).
    return {batch_owner::kind::one, mapping.physical_partition, load_int64_be(entry.bytes.data()), true, 1};
}

batch_owner classify_owner(const batch_entry& entry, const demux_mapping& mapping, demux_result& result) {
    demux_counts& counts = result.counts;
    if (entry.magic >= 0 && entry.magic < 2) return legacy_owner(entry, mapping, counts);
    protocol::batch_classification found =
        protocol::classify_batch(entry.bytes, mapping.tag_key, mapping.records_bytes_max);
    batch_owner owner{batch_owner::kind::nobody, 0, found.last_offset, true};
    if (found.error != batch_error::none) {
        // A bad record inside a sound header still has known offsets; a bad header has none.
        owner.offsets_known = protocol::validate_batch_header(entry.bytes) == batch_error::none;
        ++counts.unreadable_batches;
        note_error(result, found.error, entry.offset_in_field);
        return owner;
    }
    if (found.records_count == 0) {
        ++counts.empty_batches;  // compaction leaves these to keep producer state; no client needs them
        return owner;
    }
    if (found.is_control) {
        ++counts.control_batches;
        owner.to = batch_owner::kind::every;
        return owner;
    }
    if (!found.has_tag && !found.tag_malformed) {
        owner.to = batch_owner::kind::one;
        owner.virtual_partition = mapping.physical_partition;
        owner.records = uint32_t(found.records_count);
        return owner;
    }
    // A malformed tag still says the batch is not group 0's.
    if (found.tag_malformed || !tag_is_ours(mapping, found.virtual_partition)) {
        ++counts.foreign_tag_batches;  // written around the proxy with a wrong tag: nobody's
        return owner;
    }
    owner.to = batch_owner::kind::one;
    owner.virtual_partition = found.virtual_partition;
    owner.records = uint32_t(found.records_count);
    return owner;
}

void deliver(virtual_partition_slice& slice, const batch_entry& entry, const batch_owner& owner, demux_counts& counts) {
    bool follows_previous = !slice.ranges.empty() &&
                            slice.ranges.back().offset_in_field + slice.ranges.back().length_bytes ==
                                entry.offset_in_field;
    if (follows_previous) {
        slice.ranges.back().length_bytes += entry.bytes.size();
    } else {
        slice.ranges.push_back({entry.offset_in_field, entry.bytes.size()});
    }
    slice.size_bytes += entry.bytes.size();
    slice.batches += 1;
    slice.records += owner.records;
    slice.last_offset = owner.last_offset;
    counts.bytes_delivered += entry.bytes.size();
}

// Requests per physical partition are few (at most V / P), so a linear pass beats building
// an index for every response.
void route(const batch_owner& owner, const batch_entry& entry, std::span<const demux_request> requests,
           demux_result& result) {
    if (owner.to == batch_owner::kind::nobody) return;
    for (size_t index = 0; index < requests.size(); ++index) {
        const demux_request& request = requests[index];
        if (owner.to == batch_owner::kind::one && request.virtual_partition != owner.virtual_partition) continue;
        // A batch that ends before the fetch offset holds nothing the client asked for.
        if (owner.last_offset < request.fetch_offset) continue;
        deliver(result.partitions[index], entry, owner, result.counts);
    }
}

// batch_iterator's walk over a field in pieces.
class piecewise_batch_iterator {
public:
    piecewise_batch_iterator(std::span<const std::span<const std::byte>> pieces, std::vector<std::byte>& scratch)
        : pieces_(pieces), scratch_(scratch) {
        for (const auto& piece : pieces) size_ += piece.size();
    }

    bool next(batch_entry& entry) {
        if (error_ != batch_error::none || partial_ || position_ == size_) return false;
        size_t rest = size_ - position_;
        if (rest < protocol::batch_layout::log_overhead_bytes) {
            partial_ = true;
            return false;
        }
        std::byte overhead[protocol::batch_layout::log_overhead_bytes];
        copy(position_, overhead, sizeof overhead);
        int32_t length = protocol::load_int32_be(overhead + protocol::batch_layout::batch_length_at);
        if (length < int32_t(protocol::batch_layout::legacy_entry_bytes_min)) {
            error_ = batch_error::invalid_length;
            return false;
        }
        size_t entry_bytes = protocol::batch_layout::log_overhead_bytes + size_t(length);
        if (entry_bytes > rest) {
            partial_ = true;
            return false;
        }
        entry.bytes = view(position_, entry_bytes);
        entry.offset_in_field = position_;
        entry.magic = int8_t(entry.bytes[protocol::batch_layout::magic_at]);
        position_ += entry_bytes;
        return true;
    }
    batch_error error() const { return error_; }
    bool partial() const { return partial_; }
    size_t complete_bytes() const { return position_; }

private:
    // Moves the cursor to the piece holding `at` (positions only grow).
    void seek(size_t at) {
        while (piece_ < pieces_.size() && at >= piece_start_ + pieces_[piece_].size()) {
            piece_start_ += pieces_[piece_].size();
            ++piece_;
        }
    }
    void copy(size_t at, std::byte* out, size_t count) {
        seek(at);
        size_t index = piece_, start = piece_start_;
        while (count > 0 && index < pieces_.size()) {
            size_t within = at - start;
            size_t take = std::min(count, pieces_[index].size() - within);
            std::copy_n(pieces_[index].data() + within, take, out);
            out += take;
            at += take;
            count -= take;
            start += pieces_[index].size();
            ++index;
        }
    }
    std::span<const std::byte> view(size_t at, size_t count) {
        seek(at);
        size_t within = at - piece_start_;
        if (within + count <= pieces_[piece_].size()) return pieces_[piece_].subspan(within, count);
        scratch_.resize(count);
        copy(at, scratch_.data(), count);
        return scratch_;
    }

    std::span<const std::span<const std::byte>> pieces_;
    std::vector<std::byte>& scratch_;
    size_t size_ = 0;
    size_t position_ = 0;
    size_t piece_ = 0;
    size_t piece_start_ = 0;
    bool partial_ = false;
    batch_error error_ = batch_error::none;
};

template <typename iterator_type>
demux_result demux_walk(iterator_type& walker, size_t field_bytes, const demux_mapping& mapping,
                        std::span<const demux_request> requests, int64_t physical_fetch_offset) {
    demux_result result;
    result.next_fetch_offset = physical_fetch_offset;
    result.counts.bytes_scanned = field_bytes;
    result.partitions.resize(requests.size());
    for (size_t index = 0; index < requests.size(); ++index) {
        result.partitions[index].virtual_partition = requests[index].virtual_partition;
    }
    if (mapping.physical_partitions <= 0) return result;  // guards the modulo; the caller never maps P = 0

    batch_entry entry;
    while (walker.next(entry)) {
        ++result.counts.batches;
        batch_owner owner = classify_owner(entry, mapping, result);
        route(owner, entry, requests, result);
        // max: a hostile or corrupt batch must not move the fetch position backwards.
        if (owner.offsets_known && owner.last_offset != INT64_MAX) {
            result.next_fetch_offset = std::max(result.next_fetch_offset, owner.last_offset + 1);
        }
    }
    if (walker.error() != batch_error::none) note_error(result, walker.error(), walker.complete_bytes());
    if (walker.partial()) {
        result.partial_tail = true;
        result.partial_tail_at = walker.complete_bytes();
    }
    return result;
}

}  // namespace

demux_result demux_fetch_records(std::span<const std::byte> records_field, const demux_mapping& mapping,
                                 std::span<const demux_request> requests, int64_t physical_fetch_offset) {
    protocol::batch_iterator walker(records_field);
    return demux_walk(walker, records_field.size(), mapping, requests, physical_fetch_offset);
}

demux_result demux_fetch_records(std::span<const std::span<const std::byte>> field_pieces, const demux_mapping& mapping,
                                 std::span<const demux_request> requests, int64_t physical_fetch_offset,
                                 std::vector<std::byte>& scratch) {
    piecewise_batch_iterator walker(field_pieces, scratch);
    size_t field_bytes = 0;
    for (const auto& piece : field_pieces) field_bytes += piece.size();
    return demux_walk(walker, field_bytes, mapping, requests, physical_fetch_offset);
}

}  // namespace kpp
