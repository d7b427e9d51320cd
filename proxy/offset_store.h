// The offset store client of one core (DESIGN.md section 2, "Committed offsets"): virtual
// committed offsets live in a compacted topic of the cluster (offset_store.topic); this
// reads a store partition up to its current end on demand, writes records with acks=all,
// and caches what it read per store partition within offset_store.cache_entries. Losing
// the cache only costs a re-read. It keeps its own broker connections (store partitions
// have their own leaders); nothing is shared with other cores but the topic itself.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/record_batch.h"
#include "proxy/cluster_directory.h"
#include "proxy/upstream_link.h"
#include "reactor/event_loop.h"
#include "remap/offset_cache.h"
#include "remap/producer_aliases.h"

namespace kpp {

class shard_server;

// 0 on success, else the Kafka error code to answer with.
using store_done = std::function<void(int16_t error)>;

struct store_record {
    offset_key key;
    std::optional<offset_value> value;  // nullopt: tombstone
    // Set: a producer alias record (remap/producer_aliases.h) instead of a committed offset;
    // `alias_value` nullopt is its tombstone.
    std::optional<alias_record_key> alias;
    std::optional<alias_record_value> alias_value;
};

// A client's open transaction the proxy writes store records into (TxnOffsetCommit of
// mapped topics, DESIGN.md section 2): they become visible with its commit marker and vanish
// with its abort marker.
struct store_transaction {
    std::string transactional_id;
    int64_t producer_id = -1;
    int16_t producer_epoch = -1;
};

// InitProducerId's answer: 0 and the producer, or the Kafka error code.
using producer_id_done = std::function<void(int16_t error, alias_producer producer)>;

class offset_store {
public:
    offset_store(shard_server& server, offset_store_info info);
    ~offset_store();
    offset_store(const offset_store&) = delete;
    offset_store& operator=(const offset_store&) = delete;

    bool available() const { return info_.partitions > 0; }
    int32_t partitions() const { return info_.partitions; }
    std::optional<int16_t> describe_producers_version() const { return info_.describe_producers_version; }
    int32_t partition_of(std::string_view group) const;
    // Reads the store partition up to its end as of now; `done` runs later (never inside
    // this call) once the cache holds every record acknowledged before the call.
    void sync(int32_t partition, store_done done);
    // Appends the records (acks=all); on success they are in the cache before `done` runs.
    void write(int32_t partition, std::vector<store_record> records, store_done done);
    // Valid until control returns to the event loop.
    const offset_cache& cache(int32_t partition) const { return partitions_[size_t(partition)].cache; }
    // The producer aliases recorded in a store partition, as read by the last sync.
    const alias_index& aliases(int32_t partition) const { return partitions_[size_t(partition)].aliases; }
    // Appends the records inside the client's transaction: the store partition is added to
    // it (AddPartitionsToTxn at the transaction coordinator) and the batch is written with the
    // client's producer id and epoch and a sequence this core keeps per (producer, store
    // partition). Nothing enters the cache: a later read finds the records once committed.
    void write_in_transaction(int32_t partition, std::vector<store_record> records, store_transaction transaction,
                              store_done done);
    // Asks any broker for a new idempotent producer id (InitProducerId, no transactional id).
    void init_producer_id(producer_id_done done);
    // Runs `task` after the current completions, never inside the caller (shard_server::run_soon).
    void post(std::function<void()> task);
    // Fails requests the brokers did not answer within kafka.request_timeout_ms.
    void check_timeouts(uint64_t now_ns);
    // At shutdown: closes the broker connections, failing what still waits.
    void close();

    // The error the proxy answers with while the store cannot be read or written: retriable
    // for every client, which retries the commit or offset fetch.
    static constexpr int16_t unavailable_error = 14;  // COORDINATOR_LOAD_IN_PROGRESS
    // Commit times and record timestamps (ms since the epoch).
    static int64_t wall_clock_ms();

private:
    class link;
    using response_handler = std::function<void(protocol::frame* response, int16_t error)>;

    struct pending_write {
        std::vector<store_record> records;
        store_done done;
        int attempts = 0;
    };
    // The sequence of the proxy's own transactional writes, per (producer id, store partition).
    struct txn_write_stream {
        int16_t producer_epoch = -1;
        int32_t next_sequence = 0;
        bool in_flight = false;  // one write at a time keeps the sequence in order
        bool broken = false;     // a write's outcome stayed unknown: this epoch cannot go on
    };
    struct txn_write {
        int32_t partition = 0;
        std::vector<store_record> records;
        store_transaction transaction;
        store_done done;
        int32_t coordinator = -1;
        int attempts = 0;
    };
    void txn_find_coordinator(std::shared_ptr<txn_write> write);
    void txn_add_partition(std::shared_ptr<txn_write> write);
    void txn_produce(std::shared_ptr<txn_write> write);
    void txn_finish(const std::shared_ptr<txn_write>& write, int16_t error);
    std::vector<std::byte> encode_records(const std::vector<store_record>& records, const protocol::batch_fields& fields,
                                          bool& ok) const;

    struct partition_state {
        offset_cache cache;
        alias_index aliases;
        int64_t next_offset = 0;      // where the next read starts
        bool reading = false;         // a read round is in flight
        int read_attempts = 0;
        int32_t read_bytes = 1 << 20;
        std::vector<store_done> this_round;  // satisfied when the round in flight ends
        std::vector<store_done> next_round;  // arrived while a round was in flight
        uint64_t last_used = 0;
    };

    link* link_to(int32_t node_id);
    void send(int32_t node_id, int16_t api_key, int16_t version, const std::vector<std::byte>& body,
              response_handler handler);
    // Runs `then` once store partition leaders are known (error != 0: they cannot be learnt).
    void with_leaders(std::function<void(int16_t error)> then);
    void on_metadata(protocol::frame* response, int16_t error);
    void forget_leaders();
    void start_read(int32_t partition);
    void on_read(int32_t partition, int64_t fetch_offset, protocol::frame* response, int16_t error);
    void finish_read(int32_t partition, int16_t error);
    void send_write(int32_t partition, std::shared_ptr<pending_write> write);
    void on_written(int32_t partition, std::shared_ptr<pending_write> write, protocol::frame* response, int16_t error);
    void evict_beyond_bound(int32_t keep);
    static void on_reap(reactor::timer& self, void* context);

    shard_server& server_;
    offset_store_info info_;
    std::vector<partition_state> partitions_;
    std::vector<int32_t> leaders_;  // per store partition; -1 unknown
    bool leaders_known_ = false;
    bool metadata_in_flight_ = false;
    std::vector<std::function<void(int16_t)>> leader_waiters_;
    std::map<int32_t, std::unique_ptr<link>> links_;  // node id -> connection; -1: bootstrap
    std::vector<std::unique_ptr<link>> retired_links_;
    std::map<std::pair<int64_t, int32_t>, txn_write_stream> txn_streams_;
    reactor::timer reap_timer_;
    uint64_t use_clock_ = 0;
    bool closed_ = false;
};

}  // namespace kpp
