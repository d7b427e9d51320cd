#include "protocol/broker_endpoints.h"

#include <algorithm>

#include "protocol/header.h"
#include "protocol/splice.h"

namespace kpp::protocol {
namespace {

std::vector<std::byte> encode_host(const std::string& host, bool flexible) {
    wire_writer writer;
    writer.write_string(host, flexible);
    return std::move(writer.bytes());
}

std::array<std::byte, 4> encode_int32(int32_t value) {
    std::array<std::byte, 4> raw{};
    store_int32_be(raw.data(), value);
    return raw;
}

// Reads one (node id, host, port) triple and schedules the replacement of host and port.
bool rewrite_endpoint(wire_reader& reader, splice_builder& splice, bool flexible, int32_t node_id,
                      const endpoint_lookup& lookup, endpoint& upstream_out) {
    size_t host_offset = reader.position();
    auto host = reader.read_string(flexible, false);
    size_t host_end = reader.position();
    size_t port_offset = reader.position();
    int32_t port = reader.read_int32();
    if (!reader.ok()) return false;
    upstream_out = endpoint{std::string(host.value_or("")), port};
    if (node_id < 0) return true;  // "no coordinator" answers carry no endpoint to rewrite
    endpoint advertised = lookup(node_id);
    splice.replace(host_offset, host_end - host_offset, encode_host(advertised.host, flexible));
    splice.replace(port_offset, 4, encode_int32(advertised.port));
    return true;
}

// A reader positioned after the response header (correlation id, and tagged fields in v1).
wire_reader reader_at_body(std::span<const std::byte> response, int16_t key, int16_t version) {
    wire_reader reader(response);
    auto body_offset = response_body_offset(response, key, version);
    if (!body_offset)
        reader.fail(wire_error::truncated);
    else
        reader.skip(*body_offset);
    return reader;
}

rewrite_result failed(wire_error error) {
    rewrite_result result;
    result.error = error == wire_error::none ? wire_error::invalid_value : error;
    return result;
}

}  // namespace

rewrite_result rewrite_metadata_response(std::span<const std::byte> response, int16_t version,
                                         const endpoint_lookup& lookup) {
    bool flexible = version >= 9;
    wire_reader reader = reader_at_body(response, api_key::metadata, version);
    if (!reader.ok()) return failed(reader.error());
    splice_builder splice(response);
    rewrite_result result;
    if (version >= 3) reader.read_int32();  // throttle_time_ms
    int32_t broker_count = reader.read_array_length(flexible, false, 10);
    for (int32_t index = 0; index < broker_count && reader.ok(); ++index) {
        broker_entry broker;
        broker.node_id = reader.read_int32();
        if (!rewrite_endpoint(reader, splice, flexible, broker.node_id, lookup, broker.address)) break;
        if (version >= 1) {
            auto rack = reader.read_string(flexible, true);
            if (rack) broker.rack = std::string(*rack);
        }
        if (flexible) reader.skip_tagged_fields();
        result.upstream.push_back(std::move(broker));
    }
    if (version >= 2) reader.read_string(flexible, true);  // cluster_id
    if (version >= 1) {
        size_t controller_offset = reader.position();
        result.controller_id = reader.read_int32();
        if (!reader.ok()) return failed(reader.error());
        // Some brokers (and the mock cluster) name a controller that is not in the list;
        // clients that then look it up fail, so name a broker that exists.
        bool listed = std::any_of(result.upstream.begin(), result.upstream.end(),
                                  [&](const broker_entry& b) { return b.node_id == result.controller_id; });
        if (!listed && !result.upstream.empty())
            splice.replace(controller_offset, 4, encode_int32(result.upstream.front().node_id));
    }
    if (!reader.ok()) return failed(reader.error());
    result.message = splice.finish();
    return result;
}

rewrite_result rewrite_find_coordinator_response(std::span<const std::byte> response, int16_t version,
                                                 const endpoint_lookup& lookup) {
    bool flexible = version >= 3;
    wire_reader reader = reader_at_body(response, api_key::find_coordinator, version);
    if (!reader.ok()) return failed(reader.error());
    splice_builder splice(response);
    rewrite_result result;
    if (version >= 1) reader.read_int32();  // throttle_time_ms
    if (version <= 3) {
        reader.read_int16();                                  // error_code
        if (version >= 1) reader.read_string(flexible, true); // error_message
        broker_entry coordinator;
        coordinator.node_id = reader.read_int32();
        if (rewrite_endpoint(reader, splice, flexible, coordinator.node_id, lookup, coordinator.address))
            result.upstream.push_back(coordinator);
    } else {
        int32_t count = reader.read_array_length(true, false, 12);
        for (int32_t index = 0; index < count && reader.ok(); ++index) {
            reader.read_string(true, false);  // key
            broker_entry coordinator;
            coordinator.node_id = reader.read_int32();
            if (!rewrite_endpoint(reader, splice, true, coordinator.node_id, lookup, coordinator.address)) break;
            reader.read_int16();              // error_code
            reader.read_string(true, true);   // error_message
            reader.skip_tagged_fields();
            result.upstream.push_back(coordinator);
        }
    }
    if (!reader.ok()) return failed(reader.error());
    result.message = splice.finish();
    return result;
}

rewrite_result rewrite_describe_cluster_response(std::span<const std::byte> response, int16_t version,
                                                 const endpoint_lookup& lookup) {
    wire_reader reader = reader_at_body(response, api_key::describe_cluster, version);
    if (!reader.ok()) return failed(reader.error());
    splice_builder splice(response);
    rewrite_result result;
    reader.read_int32();              // throttle_time_ms
    reader.read_int16();              // error_code
    reader.read_string(true, true);   // error_message
    int8_t endpoint_type = version >= 1 ? reader.read_int8() : 1;
    reader.read_string(true, false);  // cluster_id
    size_t controller_offset = reader.position();
    result.controller_id = reader.read_int32();
    int32_t count = reader.read_array_length(true, false, 10);
    for (int32_t index = 0; index < count && reader.ok(); ++index) {
        broker_entry broker;
        broker.node_id = reader.read_int32();
        // Controller endpoints (type 2) are not reachable through the proxy; list them as-is.
        endpoint_lookup keep = [&](int32_t) { return broker.address; };
        if (!rewrite_endpoint(reader, splice, true, broker.node_id, endpoint_type == 1 ? lookup : keep,
                              broker.address))
            break;
        auto rack = reader.read_string(true, true);
        if (rack) broker.rack = std::string(*rack);
        if (version >= 2) reader.read_int8();  // is_fenced
        reader.skip_tagged_fields();
        result.upstream.push_back(std::move(broker));
    }
    if (!reader.ok()) return failed(reader.error());
    bool listed = std::any_of(result.upstream.begin(), result.upstream.end(),
                              [&](const broker_entry& b) { return b.node_id == result.controller_id; });
    if (!listed && !result.upstream.empty() && endpoint_type == 1) {
        // Offsets must be replaced in order: the controller id precedes the brokers.
        splice_builder ordered(response);
        ordered.replace(controller_offset, 4, encode_int32(result.upstream.front().node_id));
        std::vector<std::byte> with_controller = ordered.finish();
        auto rewritten = rewrite_describe_cluster_response(with_controller, version, lookup);
        rewritten.controller_id = result.controller_id;
        return rewritten;
    }
    result.message = splice.finish();
    return result;
}

api_versions_result rewrite_api_versions_response(std::span<const std::byte> response, int16_t version,
                                                  const std::function<bool(int16_t key)>& withheld) {
    bool flexible = version >= 3;
    api_versions_result result;
    wire_reader reader(response);
    reader.read_int32();  // correlation id (header v0 always)
    result.error_code = reader.read_int16();
    if (!reader.ok()) {
        result.error = reader.error();
        return result;
    }
    if (result.error_code != 0) {
        // An error answer (UNSUPPORTED_VERSION) only tells the client which ApiVersions
        // versions to retry with; brokers differ in how they encode it, so it goes unchanged.
        result.message.assign(response.begin(), response.end());
        return result;
    }
    size_t array_offset = reader.position();
    bool body_flexible = flexible;
    int32_t count = reader.read_array_length(body_flexible, false, 6);
    wire_writer entries;
    int32_t kept = 0;
    for (int32_t index = 0; index < count && reader.ok(); ++index) {
        int16_t key = reader.read_int16();
        int16_t min_version = reader.read_int16();
        int16_t max_version = reader.read_int16();
        if (body_flexible) reader.skip_tagged_fields();
        if (!reader.ok()) break;
        if (withheld && withheld(key)) continue;
        if (auto range = proxy_rewrite_range(key)) {
            min_version = std::max(min_version, range->min);
            max_version = std::min(max_version, range->max);
            if (min_version > max_version) continue;
        }
        entries.write_int16(key);
        entries.write_int16(min_version);
        entries.write_int16(max_version);
        if (body_flexible) entries.write_empty_tagged_fields();
        ++kept;
    }
    if (!reader.ok()) {
        result.error = reader.error();
        return result;
    }
    wire_writer array;
    array.write_array_length(kept, body_flexible);
    array.write_raw(entries.bytes());
    splice_builder splice(response);
    splice.replace(array_offset, reader.position() - array_offset, array.bytes());
    result.message = splice.finish();
    return result;
}

std::vector<std::byte> encode_metadata_request(int16_t version, int32_t correlation_id, std::string_view client_id) {
    bool flexible = version >= 9;
    wire_writer writer;
    writer.write_int16(api_key::metadata);
    writer.write_int16(version);
    writer.write_int32(correlation_id);
    writer.write_string(client_id, false);
    if (flexible) writer.write_empty_tagged_fields();
    // topics: null (all topics) from v1; an empty array meant "all" only in v0.
    if (version == 0)
        writer.write_array_length(0, false);
    else
        writer.write_array_length(-1, flexible);
    if (version >= 4) writer.write_int8(1);  // allow_auto_topic_creation
    if (version >= 8 && version <= 10) writer.write_int8(0);  // include_cluster_authorized_operations
    if (version >= 8) writer.write_int8(0);  // include_topic_authorized_operations
    if (flexible) writer.write_empty_tagged_fields();
    return std::move(writer.bytes());
}

std::vector<std::byte> encode_api_versions_request(int16_t version, int32_t correlation_id, std::string_view client_id) {
    wire_writer writer;
    writer.write_int16(api_key::api_versions);
    writer.write_int16(version);
    writer.write_int32(correlation_id);
    writer.write_string(client_id, false);
    if (version >= 3) {
        writer.write_empty_tagged_fields();
        writer.write_string("kafka-partition-proxy", true);
        writer.write_string("0", true);
        writer.write_empty_tagged_fields();
    }
    return std::move(writer.bytes());
}

}  // namespace kpp::protocol
