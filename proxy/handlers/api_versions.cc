// ApiVersions: advertise the intersection of the broker's ranges and what the proxy can
// rewrite; APIs forwarded without decoding keep the broker's range; APIs unsafe under
// remapping (WriteTxnMarkers, KIP-848 and share groups) are not advertised.
#include "protocol/broker_endpoints.h"
#include "proxy/handlers.h"

namespace kpp::handlers {

rewritten_response api_versions(const handler_context&, std::span<const std::byte> response, int16_t version) {
    auto result = protocol::rewrite_api_versions_response(response, version, &protocol::withheld_under_remapping);
    rewritten_response out;
    if (result.error != protocol::wire_error::none) {
        out.problem = std::string("malformed ApiVersions response: ") + protocol::to_string(result.error);
        return out;
    }
    out.message = std::move(result.message);
    return out;
}

}  // namespace kpp::handlers
