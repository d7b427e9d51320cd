#include "proxy/metrics.h"

#include <gtest/gtest.h>

namespace kpp {
namespace {

TEST(metrics, shards_are_summed_into_prometheus_text) {
    metrics_registry registry(2);
    registry.shard(0).count_request(0);
    registry.shard(1).count_request(0);
    registry.shard(1).count_request(3);
    registry.shard(0).observe_latency_ns(0, 200'000);    // 0.2 ms
    registry.shard(1).observe_latency_ns(3, 3'000'000);  // 3 ms
    bump(registry.shard(0).client_connections_opened, 3);
    bump(registry.shard(1).client_connections_closed, 1);
    bump(registry.shard(1).bytes_from_clients, 1000);
    std::string text = registry.render_text();
    EXPECT_NE(text.find("kpp_requests_total{api=\"Produce\",api_key=\"0\"} 2"), std::string::npos) << text;
    EXPECT_NE(text.find("kpp_requests_total{api=\"Metadata\",api_key=\"3\"} 1"), std::string::npos);
    EXPECT_NE(text.find("kpp_request_latency_seconds_count 2"), std::string::npos);
    EXPECT_NE(text.find("kpp_request_latency_seconds_bucket{le=\"0.00025\"} 1"), std::string::npos);
    EXPECT_NE(text.find("kpp_request_latency_seconds_bucket{le=\"0.005\"} 2"), std::string::npos);
    EXPECT_NE(text.find("kpp_client_connections_active 2"), std::string::npos);
    EXPECT_NE(text.find("kpp_bytes_total{direction=\"from_clients\"} 1000"), std::string::npos);
    EXPECT_EQ(registry.active_client_connections(), 2);
}

TEST(metrics, out_of_range_api_keys_share_the_last_slot) {
    metrics_registry registry(1);
    registry.shard(0).count_request(-5);
    registry.shard(0).count_request(5000);
    EXPECT_EQ(registry.shard(0).requests_by_api[metrics_api_keys - 1].load(), 2u);
}

bool has(const std::string& text, const std::string& line) {
    return text.find("\n" + line + "\n") != std::string::npos || text.starts_with(line + "\n");
}

TEST(metrics, the_rust_tools_names_are_derived_from_the_same_counters) {
    metrics_registry registry(2);
    registry.shard(0).count_request(0);
    registry.shard(1).count_request(0);
    registry.shard(1).count_request(1);
    registry.shard(0).observe_latency_ns(0, 300'000);    // 0.3 ms: le 0.0005 in both bucket sets
    registry.shard(1).observe_latency_ns(0, 2'000'000);  // 2 ms: between the Rust tool's 0.001 and 0.005
    registry.shard(1).observe_latency_ns(1, 7'000'000'000);  // above every finite bound
    bump(registry.shard(0).client_connections_opened, 4);
    bump(registry.shard(0).client_connections_closed, 1);
    bump(registry.shard(1).client_connections_opened, 2);
    bump(registry.shard(0).bytes_from_clients, 700);
    bump(registry.shard(1).bytes_from_clients, 300);
    bump(registry.shard(1).bytes_to_clients, 50);
    uint32_t orders = registry.shard(0).topic_slot("orders");
    bump(registry.shard(0).topic(orders).partitions_remapped, 3);
    bump(registry.shard(1).topic(registry.shard(1).topic_slot("orders")).partitions_remapped, 2);
    bump(registry.shard(1).topic(registry.shard(1).topic_slot("events")).partitions_remapped, 1);
    std::string text = registry.render_text();
    EXPECT_TRUE(has(text, "kafka_proxy_requests_total{api_key=\"Produce\"} 2")) << text;
    EXPECT_TRUE(has(text, "kafka_proxy_requests_total{api_key=\"Fetch\"} 1"));
    EXPECT_TRUE(has(text, "# TYPE kafka_proxy_request_duration_seconds histogram"));
    // The Rust tool's bucket bounds exactly (ours are a superset, so the counts are exact).
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Produce\",le=\"0.0001\"} 0"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Produce\",le=\"0.0005\"} 1"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Produce\",le=\"0.001\"} 1"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Produce\",le=\"0.005\"} 2"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Produce\",le=\"+Inf\"} 2"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_count{api_key=\"Produce\"} 2"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Fetch\",le=\"1\"} 0"));
    EXPECT_TRUE(has(text, "kafka_proxy_request_duration_seconds_bucket{api_key=\"Fetch\",le=\"+Inf\"} 1"));
    EXPECT_EQ(text.find("kafka_proxy_request_duration_seconds_bucket{api_key=\"Produce\",le=\"0.00025\"}"),
              std::string::npos);
    // Our own histogram sums every API with our buckets.
    EXPECT_TRUE(has(text, "kpp_request_latency_seconds_count 3"));
    EXPECT_TRUE(has(text, "kpp_request_latency_seconds_bucket{le=\"0.0025\"} 2"));
    EXPECT_TRUE(has(text, "kafka_proxy_active_client_connections 5"));
    EXPECT_TRUE(has(text, "kpp_client_connections_active 5"));
    EXPECT_TRUE(has(text, "kafka_proxy_bytes_received_total 1000"));
    EXPECT_TRUE(has(text, "kafka_proxy_bytes_sent_total 50"));
    EXPECT_TRUE(has(text, "kafka_proxy_partitions_remapped_total 6"));
    EXPECT_TRUE(has(text, "kpp_topic_partitions_remapped_total{topic=\"orders\"} 5"));
    EXPECT_TRUE(has(text, "kpp_topic_partitions_remapped_total{topic=\"events\"} 1"));
}

TEST(metrics, shards_are_shown_one_by_one) {
    metrics_registry registry(2);
    bump(registry.shard(0).client_connections_opened, 3);
    bump(registry.shard(0).client_connections_closed, 1);
    bump(registry.shard(1).client_connections_opened, 1);
    registry.shard(1).count_request(3);
    registry.shard(1).count_request(18);
    std::string text = registry.render_text();
    EXPECT_TRUE(has(text, "kpp_shard_client_connections_active{shard=\"0\"} 2")) << text;
    EXPECT_TRUE(has(text, "kpp_shard_client_connections_active{shard=\"1\"} 1"));
    EXPECT_TRUE(has(text, "kpp_shard_requests_total{shard=\"0\"} 0"));
    EXPECT_TRUE(has(text, "kpp_shard_requests_total{shard=\"1\"} 2"));
}

TEST(metrics, topic_figures_sum_shards_slot_by_slot) {
    metrics_registry registry(2);
    shard_metrics& first = registry.shard(0);
    shard_metrics& second = registry.shard(1);
    // Slots are per name for the whole process, whichever core meets a topic first.
    uint32_t slot = second.topic_slot("payments");
    EXPECT_EQ(first.topic_slot("payments"), slot);
    bump(first.topic(slot).produced_records, 10);
    bump(second.topic(slot).produced_records, 5);
    bump(first.topic(slot).produced_bytes, 1000);
    bump(second.topic(slot).delivered_records, 12);
    bump(second.topic(slot).delivered_bytes, 900);
    bump(first.topic(slot).fetched_bytes, 2700);
    std::string text = registry.render_text();
    EXPECT_TRUE(has(text, "kpp_topic_produced_records_total{topic=\"payments\"} 15")) << text;
    EXPECT_TRUE(has(text, "kpp_topic_produced_bytes_total{topic=\"payments\"} 1000"));
    EXPECT_TRUE(has(text, "kpp_topic_delivered_records_total{topic=\"payments\"} 12"));
    EXPECT_TRUE(has(text, "kpp_topic_delivered_bytes_total{topic=\"payments\"} 900"));
    EXPECT_TRUE(has(text, "kpp_topic_fetched_bytes_total{topic=\"payments\"} 2700"));
    // The shard-wide figures are the sums over topics: nothing is counted twice.
    EXPECT_TRUE(has(text, "kpp_fetch_scanned_bytes_total 2700"));
    EXPECT_TRUE(has(text, "kpp_fetch_delivered_bytes_total 900"));
    // No topic fell into the other slot: it is not shown.
    EXPECT_EQ(text.find("{topic=\"__other__\"}"), std::string::npos);
    EXPECT_TRUE(has(text, "kpp_topic_labels_used 1"));
    EXPECT_TRUE(has(text, "kpp_topic_labels_max 100"));
}

TEST(metrics, topic_labels_are_bounded_and_the_rest_is_other) {
    metrics_registry registry(1, 2);
    shard_metrics& shard = registry.shard(0);
    const char* names[] = {"t1", "t2", "t3", "t4"};
    for (const char* name : names) bump(shard.topic(shard.topic_slot(name)).produced_records, 1);
    bump(shard.topic(shard.topic_slot("t4")).produced_records, 1);
    bump(shard.topic(shard.topic_slot("t1")).produced_records, 1);
    std::string text = registry.render_text();
    EXPECT_TRUE(has(text, "kpp_topic_produced_records_total{topic=\"t1\"} 2")) << text;
    EXPECT_TRUE(has(text, "kpp_topic_produced_records_total{topic=\"t2\"} 1"));
    EXPECT_TRUE(has(text, "kpp_topic_produced_records_total{topic=\"__other__\"} 3"));
    EXPECT_EQ(text.find("topic=\"t3\""), std::string::npos);
    EXPECT_EQ(text.find("topic=\"t4\""), std::string::npos);
    EXPECT_TRUE(has(text, "kpp_topic_labels_used 2"));
    EXPECT_TRUE(has(text, "kpp_topic_labels_max 2"));
    // Out-of-range slots (an unmapped topic's no_slot) land in the other slot, never past the array.
    bump(shard.topic(UINT32_MAX).produced_records, 1);
    EXPECT_TRUE(has(registry.render_text(), "kpp_topic_produced_records_total{topic=\"__other__\"} 4"));
}

TEST(metrics, without_a_slot_table_everything_is_other) {
    shard_metrics lone;
    EXPECT_EQ(lone.topic_count(), 1u);
    EXPECT_EQ(lone.topic_slot("orders"), 0u);
    bump(lone.topic(lone.topic_slot("orders")).delivered_records, 2);
    EXPECT_EQ(lone.topic(0).delivered_records.load(), 2u);
}

TEST(metrics, the_label_bound_has_a_ceiling) {
    topic_slots slots(1'000'000);
    EXPECT_EQ(slots.other_slot(), topic_slots::labels_max_limit);
}

}  // namespace
}  // namespace kpp
