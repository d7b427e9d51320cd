// Metrics: each shard writes its own counters (single writer, relaxed atomics, no shared
// cache lines between cores); a scrape sums the shards into Prometheus families.
#pragma once

#include <prometheus/collectable.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kpp {

inline void bump(std::atomic<uint64_t>& counter, uint64_t amount = 1) {
    // Only the owning shard writes: a plain read-modify-write with no locked instruction.
    counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

inline constexpr size_t metrics_api_keys = 128;  // keys above are counted as key 127
inline constexpr std::array<double, 14> latency_bucket_bounds_seconds{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

struct latency_histogram {
    std::array<std::atomic<uint64_t>, latency_bucket_bounds_seconds.size() + 1> buckets{};
    std::atomic<uint64_t> sum_ns{0};
    std::atomic<uint64_t> count{0};
};

// Figures of one mapped (virtual) topic on one shard. Summed over its slots they are also
// the shard-wide figures (kpp_fetch_*_bytes_total, kafka_proxy_partitions_remapped_total):
// the data path counts each thing once.
struct alignas(64) topic_counters {
    std::atomic<uint64_t> partitions_remapped{0};  // Produce and Fetch entries of virtual partitions sent to their physical one
    std::atomic<uint64_t> produced_records{0};     // records of the batches sent to brokers (as the client counted them)
    std::atomic<uint64_t> produced_bytes{0};       // bytes of those batches as the client sent them (before the tag)
    std::atomic<uint64_t> fetched_bytes{0};        // records bytes read from brokers, scan-ahead included
    std::atomic<uint64_t> delivered_records{0};    // records of the data batches sent on to clients
    std::atomic<uint64_t> delivered_bytes{0};      // bytes of the batches sent on to clients (control batches included)
};

// Which mapped topic owns which slot of the per-topic counters, for the whole process (the
// label sets of every shard agree, so a scrape sums slot by slot). Bounded: the first
// `labels_max` topics met get a slot each, later ones share the last slot, exported as
// topic="__other__" (no mapped topic can be called that: names starting "__" are never
// mapped). Locked only when a core's mapping memo meets a topic for the first time, never
// per request. Slots are per name and never reused, so a reload that adds topics or
// rebuilds the mapping memo finds the same slots again.
class topic_slots {
public:
    static constexpr uint32_t labels_max_default = 100;
    static constexpr uint32_t labels_max_limit = 10000;
    static constexpr std::string_view other_label = "__other__";

    explicit topic_slots(uint32_t labels_max);
    uint32_t slot_of(std::string_view topic);
    uint32_t other_slot() const { return labels_max_; }
    uint32_t count() const { return labels_max_ + 1; }
    std::vector<std::string> names() const;  // by slot, the other slot left out

private:
    struct string_hash {
        using is_transparent = void;
        size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
    };
    uint32_t labels_max_;
    mutable std::mutex lock_;
    std::vector<std::string> names_;
    std::unordered_map<std::string, uint32_t, string_hash, std::equal_to<>> slots_;
};

struct alignas(64) shard_metrics {
    // Without a slot table (tests, fuzzers) every topic counts in the one "other" slot.
    explicit shard_metrics(topic_slots* slots = nullptr)
        : slots_(slots), topic_count_(slots ? slots->count() : 1), topics_(new topic_counters[topic_count_]) {}

    std::array<std::atomic<uint64_t>, metrics_api_keys> requests_by_api{};
    // Arrival to response queued, by API key (the aggregate is summed at scrape).
    std::array<latency_histogram, metrics_api_keys> latency_by_api{};
    std::atomic<uint64_t> client_connections_opened{0};
    std::atomic<uint64_t> client_connections_closed{0};
    std::atomic<uint64_t> client_connections_refused{0};
    std::atomic<uint64_t> bytes_from_clients{0};
    std::atomic<uint64_t> bytes_to_clients{0};
    std::atomic<uint64_t> bytes_from_upstream{0};
    std::atomic<uint64_t> bytes_to_upstream{0};
    std::atomic<uint64_t> upstream_connect_failures{0};
    std::atomic<uint64_t> upstream_failures{0};
    std::atomic<uint64_t> requests_rejected{0};  // frames refused: too large or malformed
    // Virtual partitions (fetch demultiplexing and scan-ahead); bytes read and delivered are
    // counted per topic (topic_counters).
    std::atomic<uint64_t> fetch_scan_rounds{0};      // extra physical fetches made by scan-ahead
    std::atomic<uint64_t> fetch_window_rounds{0};    // physical partition rounds served from the fetch window
    std::atomic<uint64_t> fetch_window_bytes{0};     // records bytes those rounds read from the window
    std::atomic<uint64_t> fetch_window_joins{0};     // waits for another request's fetch instead of a new one
    std::atomic<uint64_t> fetch_hint_skipped_offsets{0};  // offsets skipped thanks to skip hints
    std::atomic<uint64_t> produce_tagged_batches{0};
    std::atomic<uint64_t> produce_extra_requests{0};    // physical requests beyond one per client request
    std::atomic<uint64_t> partition_errors_local{0};    // per-partition errors answered by the proxy
    std::atomic<uint64_t> mapping_mismatches{0};        // topics whose physical count differs from P
    // Offset store (committed offsets of virtual partitions).
    std::atomic<uint64_t> offset_store_reads{0};          // Fetch requests to the store topic
    std::atomic<uint64_t> offset_store_records_read{0};   // store records applied to the cache
    std::atomic<uint64_t> offset_store_records_written{0};
    std::atomic<uint64_t> offset_store_failures{0};       // reads or writes answered with an error
    std::atomic<uint64_t> offset_store_evictions{0};      // store partitions dropped from the cache
    // Idempotent producers on mapped topics (producer aliases).
    std::atomic<uint64_t> producer_aliases_created{0};    // aliases this core created (InitProducerId + store)
    std::atomic<uint64_t> producer_aliases_from_store{0}; // aliases found in the store (another core or instance made them)
    std::atomic<uint64_t> producer_alias_failures{0};     // resolutions that failed (entries answered retriable)
    std::atomic<uint64_t> producer_aliases_tombstoned{0}; // aliases forgotten: a newer client epoch, or idle
    std::atomic<uint64_t> produce_alias_batches{0};       // batches sent under an alias producer id
    std::atomic<uint64_t> txn_renumbered_batches{0};      // transactional batches given a physical sequence range
    std::atomic<uint64_t> txn_retries_answered{0};        // client retries of acknowledged batches answered from the record
    std::atomic<uint64_t> txn_resends{0};                 // batches sent again with their range after a retriable failure
    std::atomic<uint64_t> txn_held_back{0};               // batches answered retriable to keep the physical order
    std::atomic<uint64_t> txn_refused{0};                 // batches refused (out of order, fenced, unknown stream)
    std::atomic<uint64_t> txn_takeovers{0};               // open transactions met without state (client aborts)
    std::atomic<uint64_t> tls_client_handshakes{0};          // TLS handshakes completed with clients
    std::atomic<uint64_t> tls_client_handshake_failures{0};  // failed, or not finished in time
    std::atomic<uint64_t> tls_broker_handshakes{0};          // TLS handshakes completed with brokers
    std::atomic<uint64_t> tls_broker_handshake_failures{0};
    std::atomic<uint64_t> tls_userspace_connections{0};      // TLS connections on OpenSSL in the proxy
    std::atomic<uint64_t> tls_kernel_connections{0};         // TLS connections with the record layer in the kernel
    // SASL toward clients, by mechanism and outcome (re-authentications included).
    std::atomic<uint64_t> sasl_plain_ok{0}, sasl_plain_failed{0};
    std::atomic<uint64_t> sasl_scram256_ok{0}, sasl_scram256_failed{0};
    std::atomic<uint64_t> sasl_scram512_ok{0}, sasl_scram512_failed{0};
    std::atomic<uint64_t> sasl_oauth_ok{0}, sasl_oauth_failed{0};
    std::atomic<uint64_t> sasl_reauthentications{0};      // successful KIP-368 re-authentications
    std::atomic<uint64_t> sasl_sessions_expired{0};       // connections closed: session over, not re-authenticated
    std::atomic<uint64_t> sasl_unauthenticated_closed{0}; // connections closed for a request before authentication
    // SASL toward brokers (the proxy's own principal).
    std::atomic<uint64_t> sasl_broker_ok{0}, sasl_broker_failed{0};

    static size_t api_index(int16_t api_key) {
        return api_key < 0 ? metrics_api_keys - 1 : std::min<size_t>(size_t(api_key), metrics_api_keys - 1);
    }
    void count_request(int16_t api_key) { bump(requests_by_api[api_index(api_key)]); }
    void observe_latency_ns(int16_t api_key, uint64_t elapsed_ns);

    // The slot of a mapped topic: resolve it where the handler looks the topic's mapping up
    // (mapping_registry::lookup_counted remembers it), then index topic() per entry or batch.
    uint32_t topic_slot(std::string_view topic) { return slots_ ? slots_->slot_of(topic) : 0; }
    topic_counters& topic(uint32_t slot) { return topics_[slot < topic_count_ ? slot : topic_count_ - 1]; }
    const topic_counters& topic(uint32_t slot) const { return topics_[slot < topic_count_ ? slot : topic_count_ - 1]; }
    uint32_t topic_count() const { return topic_count_; }

private:
    topic_slots* slots_;
    uint32_t topic_count_;
    std::unique_ptr<topic_counters[]> topics_;
};

class metrics_registry : public prometheus::Collectable {
public:
    explicit metrics_registry(uint32_t shard_count, uint32_t topic_labels_max = topic_slots::labels_max_default);
    shard_metrics& shard(uint32_t index) { return *shards_[index]; }
    uint32_t shard_count() const { return uint32_t(shards_.size()); }
    std::vector<prometheus::MetricFamily> Collect() const override;
    std::string render_text() const;  // Prometheus text exposition
    int64_t active_client_connections() const;

private:
    std::unique_ptr<topic_slots> topic_slots_;
    std::vector<std::unique_ptr<shard_metrics>> shards_;
};

}  // namespace kpp
