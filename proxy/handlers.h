// Per-API response rewriting, registered in one table that dispatch consults: an API
// without an entry is forwarded without decoding. One file per API under handlers/.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "protocol/broker_endpoints.h"
#include "proxy/cluster_directory.h"
#include "proxy/config.h"
#include "proxy/metrics.h"
#include "proxy/remap_state.h"

namespace kpp {

struct handler_context {
    const proxy_config& config;
    const host_port& advertised;  // host clients are told
    const cluster_directory* directory;
    remap_state* remap = nullptr;      // mapping, topic names; null in tests of endpoint rewrites
    shard_metrics* metrics = nullptr;
};

struct rewritten_response {
    std::vector<std::byte> message;  // correlation id onward; empty: forward the original
    std::string problem;             // why the original was forwarded (for a log line)
    std::vector<int32_t> unknown_node_ids;  // brokers the directory did not know yet
};

using response_rewriter = rewritten_response (*)(const handler_context& context,
                                                 std::span<const std::byte> response, int16_t version);

// nullptr when the API's responses pass through untouched.
response_rewriter find_response_rewriter(int16_t api_key);

namespace handlers {
rewritten_response api_versions(const handler_context&, std::span<const std::byte>, int16_t);
rewritten_response metadata(const handler_context&, std::span<const std::byte>, int16_t);
rewritten_response find_coordinator(const handler_context&, std::span<const std::byte>, int16_t);
rewritten_response describe_cluster(const handler_context&, std::span<const std::byte>, int16_t);
// Shared by the endpoint rewrites: where broker `node_id` is served by the proxy.
protocol::endpoint advertised_endpoint(const handler_context& context, int32_t node_id);
// Turns the result of an endpoint rewrite into the handler's answer.
rewritten_response finish_endpoint_rewrite(const handler_context& context, protocol::rewrite_result&& result,
                                           const char* api_name);
}  // namespace handlers

}  // namespace kpp
