// DescribeCluster: every broker endpoint becomes the proxy's address for that broker.
#include "proxy/handlers.h"

namespace kpp::handlers {

rewritten_response describe_cluster(const handler_context& context, std::span<const std::byte> response, int16_t version) {
    auto lookup = [&](int32_t node_id) { return advertised_endpoint(context, node_id); };
    return finish_endpoint_rewrite(context, protocol::rewrite_describe_cluster_response(response, version, lookup), "DescribeCluster");
}

}  // namespace kpp::handlers
