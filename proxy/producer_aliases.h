// Producer aliases of idempotent producers (DESIGN.md section 2; record formats and the
// agreement rule in remap/producer_aliases.h). The registry is shared by all cores of the
// process (a leader move can bring one client stream to another core); each core resolves
// what the registry does not hold through the offset store topic and InitProducerId.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "reactor/event_loop.h"
#include "remap/producer_aliases.h"

namespace kpp {

class shard_server;

// Aliases resolved in this process. Bounded by `entries_max`: the least recently used go
// first, and cost one store read when met again.
class alias_registry {
public:
    void set_entries_max(size_t entries_max) { entries_max_ = entries_max; }

    struct found {
        alias_record_value record;  // used_ms: when the store last heard of a use
        bool touch_due = false;     // this caller should record the use in the store now
    };
    // Marks the alias used at `now_ms`; touch_due is set for one caller once the stored
    // use is older than `touch_after_ms`.
    std::optional<found> find(const alias_key& key, int64_t now_ms, int64_t touch_after_ms);
    void remember(const alias_key& key, const alias_record_value& record, int64_t now_ms);
    // True when this process used the alias at or after `since_ms`.
    bool used_since(const alias_key& key, int64_t since_ms) const;
    // The client producer behind an alias producer id (DescribeProducers answers).
    std::optional<alias_key> owner_of(int64_t alias_producer_id) const;
    size_t size() const;

private:
    struct entry {
        alias_record_value record;
        int64_t used_ms = 0;
    };
    void evict_locked();

    mutable std::mutex lock_;
    std::map<alias_key, entry> entries_;
    std::map<int64_t, alias_key> owners_;
    size_t entries_max_ = 1000000;
};

using alias_done = std::function<void(int16_t error, alias_producer alias)>;

// One core's side: resolves aliases the registry lacks, one store round per key at a time.
class alias_resolver {
public:
    alias_resolver(shard_server& server, alias_registry& registry, std::string writer);

    // The alias of `key` when the process already knows it (and records the use).
    std::optional<alias_producer> lookup(const alias_key& key);
    // Finds or creates the alias through the store; `done` runs later, never inside this call.
    void resolve(const alias_key& key, alias_done done);
    // Runs `task` after the current completions (never inside the caller).
    void defer(std::function<void()> task);
    const alias_registry& registry() const { return registry_; }

    // The error a Produce entry gets when its alias cannot be had: retriable, and the batch
    // was not written.
    static constexpr int16_t unavailable_error = 19;  // NOT_ENOUGH_REPLICAS

private:
    struct pending {
        std::vector<alias_done> waiters;
        int32_t partition = 0;
    };
    void on_first_sync(const alias_key& key, int16_t error);
    void on_producer_id(const alias_key& key, int16_t error, alias_producer created);
    void on_second_sync(const alias_key& key, alias_producer created, int16_t error);
    void finish(const alias_key& key, int16_t error, alias_producer alias);
    void touch(const alias_key& key, const alias_record_value& record);
    void expire(int32_t partition);

    shard_server& server_;
    alias_registry& registry_;
    std::string writer_;  // names this core of this instance in candidate records
    std::map<alias_key, pending> pending_;
    std::map<int32_t, int64_t> expired_at_ms_;  // store partition -> last expiry pass
};

}  // namespace kpp
