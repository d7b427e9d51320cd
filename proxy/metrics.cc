#include "proxy/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include "protocol/api.h"

#include <limits>
#include <span>

namespace kpp {

void shard_metrics::observe_latency_ns(int16_t api_key, uint64_t elapsed_ns) {
    latency_histogram& histogram = latency_by_api[api_index(api_key)];
    double seconds = double(elapsed_ns) / 1e9;
    size_t bucket = 0;
    while (bucket < latency_bucket_bounds_seconds.size() && seconds > latency_bucket_bounds_seconds[bucket]) ++bucket;
    bump(histogram.buckets[bucket]);
    bump(histogram.sum_ns, elapsed_ns);
    bump(histogram.count);
}

topic_slots::topic_slots(uint32_t labels_max) : labels_max_(std::min(labels_max, labels_max_limit)) {}

uint32_t topic_slots::slot_of(std::string_view topic) {
    std::lock_guard guard(lock_);
    if (auto found = slots_.find(topic); found != slots_.end()) return found->second;
    if (names_.size() >= labels_max_) return other_slot();
    uint32_t slot = uint32_t(names_.size());
    names_.emplace_back(topic);
    slots_.emplace(std::string(topic), slot);
    return slot;
}

std::vector<std::string> topic_slots::names() const {
    std::lock_guard guard(lock_);
    return names_;
}

metrics_registry::metrics_registry(uint32_t shard_count, uint32_t topic_labels_max)
    : topic_slots_(std::make_unique<topic_slots>(topic_labels_max)) {
    for (uint32_t index = 0; index < shard_count; ++index)
        shards_.push_back(std::make_unique<shard_metrics>(topic_slots_.get()));
}

namespace {

// The earlier Rust tool's buckets: all among ours, so its histogram is exact.
constexpr std::array<double, 11> rust_latency_bounds_seconds{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025,
                                                             0.05,   0.1,    0.25,  0.5,   1.0};

uint64_t sum(const std::vector<std::unique_ptr<shard_metrics>>& shards,
             std::atomic<uint64_t> shard_metrics::*field) {
    uint64_t total = 0;
    for (const auto& shard : shards) total += ((*shard).*field).load(std::memory_order_relaxed);
    return total;
}

prometheus::MetricFamily counter_family(std::string name, std::string help, double value) {
    prometheus::MetricFamily family{std::move(name), std::move(help), prometheus::MetricType::Counter, {}};
    prometheus::ClientMetric metric;
    metric.counter.value = value;
    family.metric.push_back(metric);
    return family;
}

prometheus::ClientMetric gauge_metric(double value) {
    prometheus::ClientMetric metric;
    metric.gauge.value = value;
    return metric;
}

using shard_list = std::vector<std::unique_ptr<shard_metrics>>;

uint64_t sum_topics(const shard_list& shards, std::atomic<uint64_t> topic_counters::*field) {
    uint64_t total = 0;
    for (const auto& shard : shards)
        for (uint32_t slot = 0; slot < shard->topic_count(); ++slot)
            total += (shard->topic(slot).*field).load(std::memory_order_relaxed);
    return total;
}

uint64_t requests_of(const shard_list& shards, size_t key) {
    uint64_t total = 0;
    for (const auto& shard : shards) total += shard->requests_by_api[key].load(std::memory_order_relaxed);
    return total;
}

// One histogram over the given API keys, with the buckets whose bounds are in `bounds`
// (a subset of latency_bucket_bounds_seconds: counts below a shared bound are exact).
prometheus::ClientMetric latency_metric(const shard_list& shards, size_t key_first, size_t key_end,
                                        std::span<const double> bounds) {
    prometheus::ClientMetric metric;
    uint64_t cumulative = 0, count = 0, sum_ns = 0;
    size_t next_bound = 0;
    for (size_t bucket = 0; bucket <= latency_bucket_bounds_seconds.size(); ++bucket) {
        for (const auto& shard : shards)
            for (size_t key = key_first; key < key_end; ++key)
                cumulative += shard->latency_by_api[key].buckets[bucket].load(std::memory_order_relaxed);
        bool last = bucket == latency_bucket_bounds_seconds.size();
        if (!last && (next_bound >= bounds.size() || bounds[next_bound] != latency_bucket_bounds_seconds[bucket]))
            continue;
        prometheus::ClientMetric::Bucket entry;
        entry.cumulative_count = cumulative;
        entry.upper_bound = last ? std::numeric_limits<double>::infinity() : bounds[next_bound++];
        metric.histogram.bucket.push_back(entry);
    }
    for (const auto& shard : shards)
        for (size_t key = key_first; key < key_end; ++key) {
            count += shard->latency_by_api[key].count.load(std::memory_order_relaxed);
            sum_ns += shard->latency_by_api[key].sum_ns.load(std::memory_order_relaxed);
        }
    metric.histogram.sample_count = count;
    metric.histogram.sample_sum = double(sum_ns) / 1e9;
    return metric;
}

void add_request_families(const shard_list& shards, std::vector<prometheus::MetricFamily>& families) {
    prometheus::MetricFamily requests{"kpp_requests_total", "Client requests received, by API",
                                      prometheus::MetricType::Counter, {}};
    for (size_t key = 0; key < metrics_api_keys; ++key) {
        uint64_t total = requests_of(shards, key);
        if (total == 0) continue;
        prometheus::ClientMetric metric;
        metric.label.push_back({"api", std::string(protocol::api_name(int16_t(key)))});
        metric.label.push_back({"api_key", std::to_string(key)});
        metric.counter.value = double(total);
        requests.metric.push_back(metric);
    }
    families.push_back(std::move(requests));
    prometheus::MetricFamily latency{"kpp_request_latency_seconds",
                                     "Time from a request's arrival to its response being queued to the client",
                                     prometheus::MetricType::Histogram, {}};
    latency.metric.push_back(latency_metric(shards, 0, metrics_api_keys, latency_bucket_bounds_seconds));
    families.push_back(std::move(latency));
}

// The earlier Rust kafka-partition-remapper's names and labels (its dashboards keep working):
// api_key carries the API's name, as there. Derived from the counters above, never counted twice.
void add_rust_families(const shard_list& shards, int64_t active_connections,
                       std::vector<prometheus::MetricFamily>& families) {
    prometheus::MetricFamily requests{"kafka_proxy_requests_total", "Total number of requests processed by API key",
                                      prometheus::MetricType::Counter, {}};
    prometheus::MetricFamily duration{"kafka_proxy_request_duration_seconds", "Request latency in seconds",
                                      prometheus::MetricType::Histogram, {}};
    for (size_t key = 0; key < metrics_api_keys; ++key) {
        uint64_t total = requests_of(shards, key);
        if (total == 0) continue;
        std::string name(protocol::api_name(int16_t(key)));
        prometheus::ClientMetric metric;
        metric.label.push_back({"api_key", name});
        metric.counter.value = double(total);
        requests.metric.push_back(metric);
        prometheus::ClientMetric histogram = latency_metric(shards, key, key + 1, rust_latency_bounds_seconds);
        histogram.label.push_back({"api_key", name});
        duration.metric.push_back(histogram);
    }
    families.push_back(std::move(requests));
    families.push_back(std::move(duration));
    prometheus::MetricFamily active{"kafka_proxy_active_client_connections",
                                    "Current number of active client connections", prometheus::MetricType::Gauge, {}};
    active.metric.push_back(gauge_metric(double(active_connections)));
    families.push_back(std::move(active));
    families.push_back(counter_family("kafka_proxy_partitions_remapped_total",
                                      "Total number of partition remapping operations",
                                      double(sum_topics(shards, &topic_counters::partitions_remapped))));
    families.push_back(counter_family("kafka_proxy_bytes_received_total", "Total bytes received from clients",
                                      double(sum(shards, &shard_metrics::bytes_from_clients))));
    families.push_back(counter_family("kafka_proxy_bytes_sent_total", "Total bytes sent to clients",
                                      double(sum(shards, &shard_metrics::bytes_to_clients))));
}

void add_topic_families(const shard_list& shards, const topic_slots& slots,
                        std::vector<prometheus::MetricFamily>& families) {
    std::vector<std::string> names = slots.names();
    struct figure {
        const char* name;
        const char* help;
        std::atomic<uint64_t> topic_counters::*field;
    };
    static constexpr figure figures[] = {
        {"kpp_topic_produced_records_total", "Records sent to brokers for a mapped topic (Produce)",
         &topic_counters::produced_records},
        {"kpp_topic_produced_bytes_total", "Record batch bytes sent to brokers for a mapped topic, as clients sent them",
         &topic_counters::produced_bytes},
        {"kpp_topic_delivered_records_total", "Records of a mapped topic sent on to consumers (Fetch)",
         &topic_counters::delivered_records},
        {"kpp_topic_delivered_bytes_total", "Record batch bytes of a mapped topic sent on to consumers",
         &topic_counters::delivered_bytes},
        {"kpp_topic_fetched_bytes_total",
         "Records bytes of a mapped topic read from brokers (scan-ahead included); over delivered bytes: the read "
         "amplification",
         &topic_counters::fetched_bytes},
        {"kpp_topic_partitions_remapped_total",
         "Virtual partition entries of Produce and Fetch requests sent to their physical partition",
         &topic_counters::partitions_remapped},
    };
    auto slot_total = [&](uint32_t slot, std::atomic<uint64_t> topic_counters::*field) {
        uint64_t total = 0;
        for (const auto& shard : shards) total += (shard->topic(slot).*field).load(std::memory_order_relaxed);
        return total;
    };
    // The other slot is shown once every label is taken (or anything was counted there).
    bool other_used = names.size() >= slots.other_slot();
    for (const figure& each : figures) other_used = other_used || slot_total(slots.other_slot(), each.field) > 0;
    for (const figure& each : figures) {
        prometheus::MetricFamily family{each.name, each.help, prometheus::MetricType::Counter, {}};
        auto add = [&](const std::string& label, uint32_t slot) {
            prometheus::ClientMetric metric;
            metric.label.push_back({"topic", label});
            metric.counter.value = double(slot_total(slot, each.field));
            family.metric.push_back(metric);
        };
        for (uint32_t slot = 0; slot < names.size(); ++slot) add(names[slot], slot);
        if (other_used) add(std::string(topic_slots::other_label), slots.other_slot());
        families.push_back(std::move(family));
    }
    prometheus::MetricFamily used{"kpp_topic_labels_used",
                                  "Mapped topics with their own topic label; later ones count as topic=\"__other__\"",
                                  prometheus::MetricType::Gauge, {}};
    used.metric.push_back(gauge_metric(double(names.size())));
    families.push_back(std::move(used));
    prometheus::MetricFamily limit{"kpp_topic_labels_max", "metrics.topic_labels_max: the bound on topic labels",
                                   prometheus::MetricType::Gauge, {}};
    limit.metric.push_back(gauge_metric(double(slots.other_slot())));
    families.push_back(std::move(limit));
}

void add_shard_families(const shard_list& shards, std::vector<prometheus::MetricFamily>& families) {
    prometheus::MetricFamily connections{"kpp_shard_client_connections_active", "Client connections open now, by shard",
                                         prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily requests{"kpp_shard_requests_total", "Client requests received, by shard",
                                      prometheus::MetricType::Counter, {}};
    for (size_t index = 0; index < shards.size(); ++index) {
        const shard_metrics& shard = *shards[index];
        prometheus::ClientMetric open = gauge_metric(
            double(int64_t(shard.client_connections_opened.load(std::memory_order_relaxed)) -
                   int64_t(shard.client_connections_closed.load(std::memory_order_relaxed))));
        open.label.push_back({"shard", std::to_string(index)});
        connections.metric.push_back(open);
        uint64_t total = 0;
        for (const auto& counter : shard.requests_by_api) total += counter.load(std::memory_order_relaxed);
        prometheus::ClientMetric counted;
        counted.label.push_back({"shard", std::to_string(index)});
        counted.counter.value = double(total);
        requests.metric.push_back(counted);
    }
    families.push_back(std::move(connections));
    families.push_back(std::move(requests));
}

}  // namespace

int64_t metrics_registry::active_client_connections() const {
    return int64_t(sum(shards_, &shard_metrics::client_connections_opened)) -
           int64_t(sum(shards_, &shard_metrics::client_connections_closed));
}

std::vector<prometheus::MetricFamily> metrics_registry::Collect() const {
    std::vector<prometheus::MetricFamily> families;
    add_request_families(shards_, families);
    prometheus::MetricFamily active{"kpp_client_connections_active", "Client connections open now",
                                    prometheus::MetricType::Gauge, {}};
    active.metric.push_back(gauge_metric(double(active_client_connections())));
    families.push_back(std::move(active));
    add_rust_families(shards_, active_client_connections(), families);
    add_topic_families(shards_, *topic_slots_, families);
    add_shard_families(shards_, families);

    auto add_counter = [&](const char* name, const char* help, std::atomic<uint64_t> shard_metrics::*field) {
        families.push_back(counter_family(name, help, double(sum(shards_, field))));
    };
    families.push_back(counter_family("kpp_fetch_scanned_bytes_total",
                                      "Records bytes of mapped partitions read from brokers",
                                      double(sum_topics(shards_, &topic_counters::fetched_bytes))));
    families.push_back(counter_family("kpp_fetch_delivered_bytes_total",
                                      "Records bytes of mapped partitions sent on to clients",
                                      double(sum_topics(shards_, &topic_counters::delivered_bytes))));
    add_counter("kpp_fetch_scan_rounds_total", "Extra physical fetches made to scan ahead for a virtual partition",
                &shard_metrics::fetch_scan_rounds);
    add_counter("kpp_fetch_hint_skipped_offsets_total", "Offsets skipped thanks to skip hints",
                &shard_metrics::fetch_hint_skipped_offsets);
    add_counter("kpp_fetch_window_rounds_total",
                "Physical partition rounds of Fetch requests served from the shared fetch window, not the broker",
                &shard_metrics::fetch_window_rounds);
    add_counter("kpp_fetch_window_bytes_total", "Records bytes Fetch requests read from the shared fetch window",
                &shard_metrics::fetch_window_bytes);
    add_counter("kpp_fetch_window_joins_total",
                "Fetch requests that waited for another request's fetch of the same partition instead of sending one",
                &shard_metrics::fetch_window_joins);
    add_counter("kpp_produce_tagged_batches_total", "Record batches tagged with their virtual partition",
                &shard_metrics::produce_tagged_batches);
    add_counter("kpp_produce_extra_requests_total",
                "Physical Produce requests beyond one per client request (virtual partitions sharing a physical one)",
                &shard_metrics::produce_extra_requests);
    add_counter("kpp_partition_errors_local_total", "Per-partition errors answered by the proxy itself",
                &shard_metrics::partition_errors_local);
    add_counter("kpp_mapping_mismatches_total",
                "Metadata answers naming a mapped topic whose physical partition count differs from its P",
                &shard_metrics::mapping_mismatches);
    add_counter("kpp_offset_store_reads_total", "Fetch requests the proxy sent to its offset store topic",
                &shard_metrics::offset_store_reads);
    add_counter("kpp_offset_store_records_read_total", "Offset store records read back into the per-core caches",
                &shard_metrics::offset_store_records_read);
    add_counter("kpp_offset_store_records_written_total", "Offset store records written (commits and tombstones)",
                &shard_metrics::offset_store_records_written);
    add_counter("kpp_offset_store_failures_total",
                "Offset store reads or writes that failed (clients got a retriable error)",
                &shard_metrics::offset_store_failures);
    add_counter("kpp_offset_store_evictions_total",
                "Store partitions dropped from a per-core cache to stay within offset_store.cache_entries",
                &shard_metrics::offset_store_evictions);
    add_counter("kpp_producer_aliases_created_total",
                "Producer aliases created for idempotent producers on mapped topics (InitProducerId, recorded in the store)",
                &shard_metrics::producer_aliases_created);
    add_counter("kpp_producer_aliases_resolved_from_store_total",
                "Producer aliases found in the offset store topic (made by another core or proxy instance)",
                &shard_metrics::producer_aliases_from_store);
    add_counter("kpp_producer_alias_failures_total",
                "Producer alias resolutions that failed (the Produce entries got a retriable error)",
                &shard_metrics::producer_alias_failures);
    add_counter("kpp_producer_aliases_tombstoned_total",
                "Producer aliases tombstoned in the store (the client producer moved to a new epoch, or idle)",
                &shard_metrics::producer_aliases_tombstoned);
    add_counter("kpp_produce_alias_batches_total", "Record batches sent under a producer alias",
                &shard_metrics::produce_alias_batches);
    add_counter("kpp_txn_renumbered_batches_total",
                "Transactional record batches on mapped topics given the next range of their physical partition's sequence",
                &shard_metrics::txn_renumbered_batches);
    add_counter("kpp_txn_retries_answered_total",
                "Client retries of acknowledged transactional batches answered from the proxy's record, not sent again",
                &shard_metrics::txn_retries_answered);
    add_counter("kpp_txn_resends_total",
                "Transactional batches sent again with their original physical range after a retriable failure",
                &shard_metrics::txn_resends);
    add_counter("kpp_txn_held_back_total",
                "Transactional batches answered with a retriable error because an earlier range of their physical "
                "partition had to reach the broker first",
                &shard_metrics::txn_held_back);
    add_counter("kpp_txn_refused_total",
                "Transactional batches refused: out of order, fenced epoch, or a stream another instance had open",
                &shard_metrics::txn_refused);
    add_counter("kpp_txn_takeovers_total",
                "Open transactions met on a partition that this instance held no sequence state for (another "
                "instance failed mid-transaction, or this one restarted): answered so that the client aborts",
                &shard_metrics::txn_takeovers);
    auto labelled = [&](const char* name, const char* help, const char* label,
                        std::initializer_list<std::pair<const char*, std::atomic<uint64_t> shard_metrics::*>> values) {
        prometheus::MetricFamily family{name, help, prometheus::MetricType::Counter, {}};
        for (const auto& [value, field] : values) {
            prometheus::ClientMetric metric;
            metric.label.push_back({label, value});
            metric.counter.value = double(sum(shards_, field));
            family.metric.push_back(metric);
        }
        families.push_back(std::move(family));
    };
    labelled("kpp_tls_handshakes_total", "TLS handshakes completed, by side", "side",
             {{"client", &shard_metrics::tls_client_handshakes}, {"broker", &shard_metrics::tls_broker_handshakes}});
    labelled("kpp_tls_handshake_failures_total",
             "TLS handshakes that failed or did not finish within the handshake timeout, by side", "side",
             {{"client", &shard_metrics::tls_client_handshake_failures},
              {"broker", &shard_metrics::tls_broker_handshake_failures}});
    labelled("kpp_tls_connections_total", "TLS connections by where the record layer runs", "mode",
             {{"userspace", &shard_metrics::tls_userspace_connections},
              {"kernel", &shard_metrics::tls_kernel_connections}});
    labelled("kpp_sasl_authentications_total", "Successful SASL authentications of clients, by mechanism",
             "mechanism",
             {{"PLAIN", &shard_metrics::sasl_plain_ok},
              {"SCRAM-SHA-256", &shard_metrics::sasl_scram256_ok},
              {"SCRAM-SHA-512", &shard_metrics::sasl_scram512_ok},
              {"OAUTHBEARER", &shard_metrics::sasl_oauth_ok}});
    labelled("kpp_sasl_authentication_failures_total", "Failed SASL authentications of clients, by mechanism",
             "mechanism",
             {{"PLAIN", &shard_metrics::sasl_plain_failed},
              {"SCRAM-SHA-256", &shard_metrics::sasl_scram256_failed},
              {"SCRAM-SHA-512", &shard_metrics::sasl_scram512_failed},
              {"OAUTHBEARER", &shard_metrics::sasl_oauth_failed}});
    labelled("kpp_sasl_broker_authentications_total", "SASL authentications of the proxy to brokers, by outcome",
             "outcome", {{"success", &shard_metrics::sasl_broker_ok}, {"failure", &shard_metrics::sasl_broker_failed}});
    families.push_back(counter_family("kpp_sasl_reauthentications_total",
                                      "Client sessions re-authenticated (KIP-368) before they expired",
                                      sum(shards_, &shard_metrics::sasl_reauthentications)));
    families.push_back(counter_family("kpp_sasl_sessions_expired_total",
                                      "Client connections closed because their SASL session ended without re-authentication",
                                      sum(shards_, &shard_metrics::sasl_sessions_expired)));
    families.push_back(counter_family("kpp_sasl_unauthenticated_requests_total",
                                      "Client connections closed for a request other than ApiVersions or SASL before authenticating",
                                      sum(shards_, &shard_metrics::sasl_unauthenticated_closed)));
    families.push_back(counter_family("kpp_client_connections_total", "Client connections accepted",
                                      double(sum(shards_, &shard_metrics::client_connections_opened))));
    families.push_back(counter_family("kpp_client_connections_refused_total",
                                      "Client connections refused (listen.max_connections reached)",
                                      double(sum(shards_, &shard_metrics::client_connections_refused))));
    prometheus::MetricFamily bytes{"kpp_bytes_total", "Bytes moved, by direction", prometheus::MetricType::Counter, {}};
    auto add_bytes = [&](const char* direction, std::atomic<uint64_t> shard_metrics::*field) {
        prometheus::ClientMetric metric;
        metric.label.push_back({"direction", direction});
        metric.counter.value = double(sum(shards_, field));
        bytes.metric.push_back(metric);
    };
    add_bytes("from_clients", &shard_metrics::bytes_from_clients);
    add_bytes("to_clients", &shard_metrics::bytes_to_clients);
    add_bytes("from_upstream", &shard_metrics::bytes_from_upstream);
    add_bytes("to_upstream", &shard_metrics::bytes_to_upstream);
    families.push_back(std::move(bytes));
    families.push_back(counter_family("kpp_upstream_connect_failures_total", "Failed connects to brokers",
                                      double(sum(shards_, &shard_metrics::upstream_connect_failures))));
    families.push_back(counter_family("kpp_upstream_failures_total",
                                      "Upstream connections lost or timed out with requests in flight",
                                      double(sum(shards_, &shard_metrics::upstream_failures))));
    families.push_back(counter_family("kpp_requests_rejected_total", "Client frames refused (too large or malformed)",
                                      double(sum(shards_, &shard_metrics::requests_rejected))));
    return families;
}

std::string metrics_registry::render_text() const {
    return prometheus::TextSerializer().Serialize(Collect());
}

}  // namespace kpp
