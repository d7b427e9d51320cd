// Producer aliases (DESIGN.md section 2, "Idempotent producers: one physical producer id per
// virtual group"): batches of the client's idempotent producer (X, E) for virtual partition v
// of a topic with P physical partitions go out under X itself when g = v / P is 0, and under
// an alias producer id obtained with InitProducerId when g >= 1, so every (physical producer,
// physical partition) pair carries exactly one client stream. Pure state and record formats;
// the store I/O and InitProducerId live in proxy/producer_aliases.
//
// Aliases are recorded in the offset store topic so that every proxy instance resolves
// (X, E, g) to the same alias. Two kinds of record, both keyed (X, E, g):
//   candidate: key names its writer (an instance and core); written by whoever created an
//              alias. Each writer writes its candidate once, so compaction never moves it,
//              and the candidate with the LOWEST store offset is the alias everyone uses:
//              an instance that read the partition to its end after its own write and
//              found no earlier candidate knows that any later writer will find its own.
//   resolved:  key with an empty writer; holds the winning alias and when it was last used.
//              Rewritten freely (touches), always with the same alias. Present: it wins.
// Key:   int16 kind (1) | int64 producer id | int16 epoch | int32 group | string writer
// Value: int16 format (0) | int64 alias producer id | int16 alias epoch |
//        int64 created (ms since the epoch) | int64 last used (ms since the epoch)
// A null value (tombstone) deletes the key. The offset store's own keys start with int16 0.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kpp {

// The client's producer and the virtual group an alias stands for.
struct alias_key {
    int64_t producer_id = -1;
    int16_t producer_epoch = -1;
    int32_t group = 0;
    auto operator<=>(const alias_key&) const = default;
};

// A physical producer: what the batch header gets.
struct alias_producer {
    int64_t producer_id = -1;
    int16_t producer_epoch = -1;
    bool operator==(const alias_producer&) const = default;
};

struct alias_record_key {
    alias_key key;
    std::string writer;  // empty: the resolved record
    bool operator==(const alias_record_key&) const = default;
};

struct alias_record_value {
    alias_producer alias;
    int64_t created_ms = 0;
    int64_t used_ms = 0;
    bool operator==(const alias_record_value&) const = default;
};

inline constexpr int16_t alias_key_kind = 1;
inline constexpr size_t alias_writer_bytes_max = 256;

std::vector<std::byte> encode_alias_key(const alias_record_key& key);
std::vector<std::byte> encode_alias_value(const alias_record_value& value);
// True when a store record key is an alias key (its kind field says so), whatever follows.
bool is_alias_key(std::span<const std::byte> key);
// nullopt for bytes this format does not describe (truncated, trailing bytes, a negative
// producer id or group, a writer longer than alias_writer_bytes_max).
std::optional<alias_record_key> decode_alias_key(std::span<const std::byte> bytes);
std::optional<alias_record_value> decode_alias_value(std::span<const std::byte> bytes);

// The store partition holding a client producer's aliases (all its epochs and groups).
int32_t alias_store_partition(int64_t producer_id, int32_t partitions);

// What one store partition says about aliases, applied by store offset like offset_cache
// (acknowledged writes and records read back may arrive in any order).
class alias_index {
public:
    void apply(const alias_record_key& key, const std::optional<alias_record_value>& value, int64_t store_offset);
    // The alias every instance agrees on: the live resolved record, else the live candidate
    // with the lowest store offset; nullopt when there is neither.
    std::optional<alias_record_value> resolve(const alias_key& key) const;
    // The records to tombstone to forget `key` entirely (resolved and every candidate known).
    std::vector<alias_record_key> records_of(const alias_key& key) const;
    // Aliases that may go: those of an epoch older than a newer epoch of the same client
    // producer found in this index, and those whose resolved record was last used before
    // `idle_before_ms` (a candidate never resolved counts from its creation time).
    struct expired_alias {
        alias_key key;
        bool superseded = false;  // a newer epoch exists (else: idle)
    };
    std::vector<expired_alias> expired(int64_t idle_before_ms) const;
    size_t size() const { return records_; }
    void clear();

private:
    struct held {
        std::optional<alias_record_value> value;  // nullopt: tombstone marker
        int64_t store_offset = -1;
    };
    struct entry {
        held resolved;
        std::map<std::string, held> candidates;  // by writer
    };
    std::map<alias_key, entry> entries_;
    size_t records_ = 0;
};

}  // namespace kpp
