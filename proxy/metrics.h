// Metrics: each shard writes its own counters (single writer, relaxed atomics, no shared
// cache lines between cores); a scrape sums the shards into Prometheus families.
#pragma once

#include <prometheus/collectable.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kpp {

inline void bump(std::atomic<uint64_t>& counter, uint64_t amount = 1) {
    // Only the owning shard writes: a plain read-modify-write with no locked instruction.
    counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

inline constexpr size_t metrics_api_keys = 128;  // keys above are counted as key 127
inline constexpr std::array<double, 14> latency_bucket_bounds_seconds{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

struct alignas(64) shard_metrics {
    std::array<std::atomic<uint64_t>, metrics_api_keys> requests_by_api{};
    std::array<std::atomic<uint64_t>, latency_bucket_bounds_seconds.size() + 1> latency_buckets{};
    std::atomic<uint64_t> latency_sum_ns{0};
    std::atomic<uint64_t> latency_count{0};
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
    // Virtual partitions (fetch demultiplexing and scan-ahead).
    std::atomic<uint64_t> fetch_scanned_bytes{0};    // records bytes of mapped partitions read from brokers
    std::atomic<uint64_t> fetch_delivered_bytes{0};  // of those, bytes sent on to clients
    std::atomic<uint64_t> fetch_scan_rounds{0};      // extra physical fetches made by scan-ahead
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

    void count_request(int16_t api_key) {
        size_t index = api_key < 0 ? metrics_api_keys - 1 : std::min<size_t>(size_t(api_key), metrics_api_keys - 1);
        bump(requests_by_api[index]);
    }
    void observe_latency_ns(uint64_t elapsed_ns);
};

class metrics_registry : public prometheus::Collectable {
public:
    explicit metrics_registry(uint32_t shard_count);
    shard_metrics& shard(uint32_t index) { return *shards_[index]; }
    std::vector<prometheus::MetricFamily> Collect() const override;
    std::string render_text() const;  // Prometheus text exposition
    int64_t active_client_connections() const;

private:
    std::vector<std::unique_ptr<shard_metrics>> shards_;
};

}  // namespace kpp
