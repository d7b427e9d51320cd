#include "proxy/handlers.h"

#include <array>

#include "protocol/api.h"

namespace kpp {
namespace {

struct registration {
    int16_t api_key;
    response_rewriter rewrite;
};

constexpr std::array registry{
    registration{protocol::api_key::api_versions, &handlers::api_versions},
    registration{protocol::api_key::metadata, &handlers::metadata},
    registration{protocol::api_key::find_coordinator, &handlers::find_coordinator},
    registration{protocol::api_key::describe_cluster, &handlers::describe_cluster},
};

}  // namespace

response_rewriter find_response_rewriter(int16_t api_key) {
    for (const registration& entry : registry)
        if (entry.api_key == api_key) return entry.rewrite;
    return nullptr;
}

namespace handlers {

protocol::endpoint advertised_endpoint(const handler_context& context, int32_t node_id) {
    auto port = broker_port_of(context.config.listen, node_id);
    return protocol::endpoint{context.advertised.host, port ? int32_t(*port) : 0};
}

rewritten_response finish_endpoint_rewrite(const handler_context& context, protocol::rewrite_result&& result,
                                           const char* api_name) {
    rewritten_response out;
    if (result.error != protocol::wire_error::none) {
        out.problem = std::string("malformed ") + api_name + " response: " + protocol::to_string(result.error);
        return out;
    }
    for (const auto& broker : result.upstream)
        if (broker.node_id >= 0 && (!context.directory || !context.directory->find(broker.node_id)))
            out.unknown_node_ids.push_back(broker.node_id);
    out.message = std::move(result.message);
    return out;
}

}  // namespace handlers
}  // namespace kpp
