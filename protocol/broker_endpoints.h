// Rewrites of the responses that name broker endpoints (Metadata, FindCoordinator,
// DescribeCluster), so clients only ever see the proxy's addresses, and the ApiVersions
// intersection. Inputs are response bodies after the 4-byte size prefix, correlation id
// included; outputs are the same with fields replaced.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "protocol/api.h"
#include "protocol/wire.h"

namespace kpp::protocol {

struct endpoint {
    std::string host;
    int32_t port = 0;
};

struct broker_entry {
    int32_t node_id = -1;
    endpoint address;
    std::optional<std::string> rack;
};

// node id -> the endpoint clients must be told for that broker.
using endpoint_lookup = std::function<endpoint(int32_t node_id)>;

struct rewrite_result {
    std::vector<std::byte> message;       // rewritten response (correlation id onward)
    std::vector<broker_entry> upstream;   // brokers as the upstream described them
    int32_t controller_id = -1;           // as the upstream described it
    wire_error error = wire_error::none;  // on error `message` is empty: forward unchanged or fail
};

rewrite_result rewrite_metadata_response(std::span<const std::byte> response, int16_t version,
                                         const endpoint_lookup& lookup);
rewrite_result rewrite_find_coordinator_response(std::span<const std::byte> response, int16_t version,
                                                 const endpoint_lookup& lookup);
rewrite_result rewrite_describe_cluster_response(std::span<const std::byte> response, int16_t version,
                                                 const endpoint_lookup& lookup);

// Narrows each API's range to what the proxy handles (proxy_rewrite_range); APIs the proxy
// forwards untouched keep the broker's range; `withheld(key)` removes an API entirely.
struct api_versions_result {
    std::vector<std::byte> message;
    wire_error error = wire_error::none;
    int16_t error_code = 0;
};
api_versions_result rewrite_api_versions_response(std::span<const std::byte> response, int16_t version,
                                                  const std::function<bool(int16_t key)>& withheld);

// Encodes a broker list request-free for tests and for the blocking discovery client.
std::vector<std::byte> encode_metadata_request(int16_t version, int32_t correlation_id, std::string_view client_id);
std::vector<std::byte> encode_api_versions_request(int16_t version, int32_t correlation_id, std::string_view client_id);

}  // namespace kpp::protocol
