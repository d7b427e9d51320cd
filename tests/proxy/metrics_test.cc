#include "proxy/metrics.h"

#include <gtest/gtest.h>

namespace kpp {
namespace {

TEST(metrics, shards_are_summed_into_prometheus_text) {
    metrics_registry registry(2);
    registry.shard(0).count_request(0);
    registry.shard(1).count_request(0);
    registry.shard(1).count_request(3);
    registry.shard(0).observe_latency_ns(200'000);    // 0.2 ms
    registry.shard(1).observe_latency_ns(3'000'000);  // 3 ms
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

}  // namespace
}  // namespace kpp
