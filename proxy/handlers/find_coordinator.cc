// FindCoordinator: every broker endpoint becomes the proxy's address for that broker.
#include "proxy/handlers.h"

namespace kpp::handlers {

rewritten_response find_coordinator(const handler_context& context, std::span<const std::byte> response, int16_t version) {
    auto lookup = [&](int32_t node_id) { return advertised_endpoint(context, node_id); };
    return finish_endpoint_rewrite(context, protocol::rewrite_find_coordinator_response(response, version, lookup), "FindCoordinator");
}

}  // namespace kpp::handlers
