// Shared fetch (issue 15): a per-core window of the physical records recently fetched for
// mapped topics, so that consumers of different virtual partitions of one physical partition
// read it from the broker once instead of once each.
//
// Two parts, both keyed by (topic, physical partition, isolation level):
//  - stored answers: the complete batches of a broker's answer, as slices of the buffers they
//    arrived in (never copied), with the partition fields that came with them (high
//    watermark, last stable offset, aborted transactions). A later fetch whose physical
//    offset lies inside one is served from it, round by round, as if the broker had sent it
//    again. Answers are kept side by side, gaps allowed (a consumer whose skip hints start it
//    further on); one behind all the stored ones (a slow consumer) is not kept, so a slow
//    consumer reads alone and never holds the window for the others. Bounded in bytes per
//    core (the memory the answers hold): the oldest answers go first.
//  - fetches in flight: a request about to ask the broker for a partition another request
//    already asked for (at an offset no later than its own, with no larger min_bytes, so
//    that answer comes as soon as anything this request could get exists) waits for that
//    answer instead, and is woken when it is stored.
//
// Pure bookkeeping: no I/O, no clock of its own; wakes are handed back to the caller to run.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "reactor/buffer_pool.h"

namespace kpp {

// Partition-level fields of the broker's answer a window entry came in.
struct window_fields {
    int64_t high_watermark = -1;
    int64_t last_stable_offset = -1;
    int64_t log_start_offset = -1;
    bool aborted_null = true;
    std::vector<std::pair<int64_t, int64_t>> aborted;  // producer id, first offset
    int32_t preferred_read_replica = -1;
    std::vector<std::byte> tagged;  // flexible versions: the partition's tagged fields as sent
};

struct window_key {
    std::string topic;  // the skip hints' key: the name, and the id for Fetch v13+
    int32_t partition = 0;
    int8_t isolation_level = 0;
    auto operator<=>(const window_key&) const = default;
};

// One stored answer: the records of [from_offset, to_offset), whole batches.
struct window_entry {
    int64_t from_offset = 0;  // the physical offset it was fetched at
    int64_t to_offset = 0;    // one past its last complete batch
    std::vector<reactor::byte_slice> records;
    size_t bytes = 0;       // records bytes
    size_t held_bytes = 0;  // memory the records keep alive (whole receive buffers): what the bound counts
    window_fields fields;
};

struct window_counters {
    uint64_t stored = 0;         // answers kept
    uint64_t stored_bytes = 0;
    uint64_t evicted_bytes = 0;  // dropped for room, or replaced
    uint64_t not_kept = 0;       // answers behind or overlapping the stored ones
};

class fetch_window {
public:
    using wake = std::function<void()>;

    explicit fetch_window(size_t bytes_max = 0) : bytes_max_(bytes_max) {}

    // 0 turns the window off and empties it.
    void set_bytes_max(size_t bytes_max);
    bool enabled() const { return bytes_max_ > 0; }
    size_t bytes() const { return bytes_; }  // held bytes of every stored answer
    size_t fetches_in_flight() const;
    size_t bytes_max() const { return bytes_max_; }
    const window_counters& counters() const { return counters_; }

    // The stored answer holding `offset` (from_offset <= offset < to_offset), if it holds at
    // most `bytes_max` bytes: a fetch must not get more than the broker would have sent it.
    const window_entry* find(const window_key& key, int64_t offset, size_t bytes_max) const;

    // Keeps an answer fetched at entry.from_offset, unless it overlaps one kept or lies wholly
    // before all of its key's (a slow consumer's). Then evicts the oldest answers, any key,
    // until within bounds.
    void store(const window_key& key, window_entry entry);

    // Readers: `reader` (a client connection) reads `key` at `now_ns`. Answers are worth
    // keeping only for a partition that another connection of this core read within
    // `sharing_horizon_ns`: a lone consumer's answers are neither copied nor kept.
    static constexpr uint64_t sharing_horizon_ns = 5'000'000'000;
    void note_reader(const window_key& key, uintptr_t reader, uint64_t now_ns);
    bool shared(const window_key& key, uintptr_t reader, uint64_t now_ns) const;

    // A fetch of `key` at `offset` with `min_bytes`, sent to the broker at `now_ns`, due back
    // by `due_ns`. Returns its id. Fetches of the key overdue at `now_ns` are forgotten (their
    // requests went away without an answer; whoever waited has a deadline of its own).
    uint64_t begin_fetch(const window_key& key, int64_t offset, int32_t min_bytes, uint64_t now_ns, uint64_t due_ns);
    // Its answer came (or it will not): the wakes of the requests that waited for it, for the
    // caller to run once it is done with the current answer.
    std::vector<wake> end_fetch(uint64_t id);
    // Waits for a fetch in flight of `key` at an offset <= `offset` with min_bytes <=
    // `min_bytes`, not overdue at `now_ns`. False when there is none: ask the broker.
    bool join(const window_key& key, int64_t offset, int32_t min_bytes, uint64_t now_ns, wake on_done);

private:
    struct in_flight {
        uint64_t id = 0;
        int64_t offset = 0;
        int32_t min_bytes = 0;
        uint64_t due_ns = 0;
        std::vector<wake> waiters;
    };
    struct recent_readers {
        uintptr_t reader[2] = {0, 0};  // the last two distinct readers, latest first
        uint64_t at_ns[2] = {0, 0};
    };
    struct stored_key {
        window_key key;
        int64_t from_offset;
    };

    static constexpr size_t readers_max = 65536;

    void evict_oldest();
    static void forget_overdue(std::vector<in_flight>& fetches, uint64_t now_ns);

    size_t bytes_max_;
    size_t bytes_ = 0;
    std::map<window_key, std::map<int64_t, window_entry>> entries_;  // by from_offset
    std::deque<stored_key> order_;  // oldest first, for eviction
    std::map<window_key, std::vector<in_flight>> in_flight_;
    std::map<window_key, recent_readers> readers_;
    uint64_t next_id_ = 1;
    window_counters counters_;
};

}  // namespace kpp
