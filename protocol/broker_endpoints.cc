#include "protocol/broker_endpoints.h"

#include <algorithm>

#include "protocol/header.h"
#include "protocol/kpp_messages.h"
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

// Collects, in wire order, the endpoint triples (node id, host, port) and the controller id
// that the generated walker reports.
struct endpoint_visitor final : messages::walk_visitor {
    struct entry {
        int32_t node_id = -1;
        size_t host_offset = 0;
        size_t host_bytes = 0;
        std::string host;
        size_t port_offset = 0;
        int32_t port = 0;
    };
    std::vector<entry> entries;
    entry current;
    std::optional<size_t> controller_offset;
    int32_t controller_id = -1;
    int8_t endpoint_type = 1;  // DescribeCluster: 1 brokers, 2 controllers

    void on_field(const messages::field_event& event) override {
        switch (event.role) {
            case messages::field_role::node_id: current.node_id = int32_t(event.value); break;
            case messages::field_role::host:
                current.host_offset = event.offset;
                current.host_bytes = event.size_bytes;
                current.host = event.text;
                break;
            case messages::field_role::port:
                // The port closes a triple in every message that carries endpoints.
                current.port_offset = event.offset;
                current.port = int32_t(event.value);
                entries.push_back(std::move(current));
                current = entry{};
                break;
            case messages::field_role::controller_id:
                controller_offset = event.offset;
                controller_id = int32_t(event.value);
                break;
            case messages::field_role::endpoint_type: endpoint_type = int8_t(event.value); break;
            default: break;
        }
    }
};

rewrite_result failed(wire_error error) {
    rewrite_result result;
    result.error = error == wire_error::none ? wire_error::invalid_value : error;
    return result;
}

// Replaces every broker endpoint with the proxy's and, where the controller named is not
// among the brokers listed, names a listed one (clients looking it up would fail).
rewrite_result rewrite_endpoints(std::span<const std::byte> response, int16_t api_key, int16_t version,
                                 const endpoint_lookup& lookup) {
    const messages::message_info* walker = messages::find_message(api_key, version, false);
    if (!walker) return failed(wire_error::invalid_value);
    bool flexible = walker->first_flexible_version >= 0 && version >= walker->first_flexible_version;
    auto body_offset = response_body_offset(response, api_key, version);
    if (!body_offset) return failed(wire_error::truncated);
    wire_reader reader(response);
    reader.skip(*body_offset);
    endpoint_visitor found;
    if (wire_error error = walker->walk_contiguous(reader, version, found); error != wire_error::none)
        return failed(error);
    rewrite_result result;
    result.controller_id = found.controller_id;
    bool rewrite = found.endpoint_type == 1;  // controller endpoints are not served by the proxy
    // Replacements are applied in wire order (the controller id precedes the brokers in
    // DescribeCluster and follows them in Metadata).
    struct replacement {
        size_t offset;
        size_t length;
        std::vector<std::byte> bytes;
    };
    std::vector<replacement> replacements;
    auto int32_bytes = [](int32_t value) {
        auto raw = encode_int32(value);
        return std::vector<std::byte>(raw.begin(), raw.end());
    };
    bool controller_listed = std::any_of(found.entries.begin(), found.entries.end(),
                                         [&](const auto& entry) { return entry.node_id == found.controller_id; });
    if (found.controller_offset && rewrite && !controller_listed && !found.entries.empty())
        replacements.push_back({*found.controller_offset, 4, int32_bytes(found.entries.front().node_id)});
    for (const endpoint_visitor::entry& entry : found.entries) {
        result.upstream.push_back(broker_entry{entry.node_id, endpoint{entry.host, entry.port}, std::nullopt});
        if (!rewrite || entry.node_id < 0) continue;  // "no coordinator" answers carry no endpoint
        endpoint advertised = lookup(entry.node_id);
        replacements.push_back({entry.host_offset, entry.host_bytes, encode_host(advertised.host, flexible)});
        replacements.push_back({entry.port_offset, 4, int32_bytes(advertised.port)});
    }
    std::sort(replacements.begin(), replacements.end(),
              [](const replacement& a, const replacement& b) { return a.offset < b.offset; });
    splice_builder splice(response);
    for (const replacement& change : replacements) splice.replace(change.offset, change.length, change.bytes);
    result.message = splice.finish();
    return result;
}


// Features the proxy does not offer whatever the brokers finalized: transaction.version 2 is
// transactions v2 (KIP-890), whose Produce v12 adds partitions to a transaction implicitly,
// bypassing the AddPartitionsToTxn mapping and the proxy's transactional sequence state.
bool withheld_feature(std::string_view name) { return name == "transaction.version"; }

// Reads an ApiVersions response's tagged fields (SupportedFeatures = 0, FinalizedFeatures =
// 2) and re-encodes them without the withheld features; nullopt when none was there.
std::optional<std::vector<std::byte>> without_withheld_features(wire_reader& reader) {
    uint32_t count = reader.read_unsigned_varint();
    wire_writer out;
    out.write_unsigned_varint(count);
    bool changed = false;
    for (uint32_t index = 0; index < count && reader.ok(); ++index) {
        uint32_t tag = reader.read_unsigned_varint();
        uint32_t size = reader.read_unsigned_varint();
        size_t start = reader.position();
        if (!reader.ok() || size > reader.remaining()) {
            reader.skip(size);  // fails the reader
            return std::nullopt;
        }
        out.write_unsigned_varint(tag);
        if (tag != 0 && tag != 2) {
            out.write_unsigned_varint(size);
            out.write_raw(std::span<const std::byte>(reader.data() + start, size));
            reader.skip(size);
            continue;
        }
        // Both arrays: name (compact string), two int16 levels, tagged fields.
        wire_writer field;
        int32_t features = reader.read_array_length(true, false, 6);
        std::vector<std::vector<std::byte>> kept;
        for (int32_t feature = 0; feature < features && reader.ok(); ++feature) {
            size_t feature_start = reader.position();
            auto name = reader.read_string(true, false).value_or(std::string_view{});
            reader.read_int16();
            reader.read_int16();
            reader.skip_tagged_fields();
            if (!reader.ok()) return std::nullopt;
            if (withheld_feature(name)) {
                changed = true;
                continue;
            }
            kept.emplace_back(reader.data() + feature_start, reader.data() + reader.position());
        }
        if (!reader.ok() || reader.position() != start + size) {
            if (reader.ok()) reader.skip(reader.remaining() + 1);  // a field longer than its size says
            return std::nullopt;
        }
        field.write_array_length(int32_t(kept.size()), true);
        for (const auto& bytes : kept) field.write_raw(bytes);
        out.write_unsigned_varint(uint32_t(field.size()));
        out.write_raw(field.bytes());
    }
    if (!reader.ok() || !changed) return std::nullopt;
    return std::move(out.bytes());
}

}  // namespace

rewrite_result rewrite_metadata_response(std::span<const std::byte> response, int16_t version,
                                         const endpoint_lookup& lookup) {
    return rewrite_endpoints(response, api_key::metadata, version, lookup);
}

rewrite_result rewrite_find_coordinator_response(std::span<const std::byte> response, int16_t version,
                                                 const endpoint_lookup& lookup) {
    return rewrite_endpoints(response, api_key::find_coordinator, version, lookup);
}

rewrite_result rewrite_describe_cluster_response(std::span<const std::byte> response, int16_t version,
                                                 const endpoint_lookup& lookup) {
    return rewrite_endpoints(response, api_key::describe_cluster, version, lookup);
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
    size_t array_end = reader.position();
    wire_writer array;
    array.write_array_length(kept, body_flexible);
    array.write_raw(entries.bytes());
    splice_builder splice(response);
    splice.replace(array_offset, array_end - array_offset, array.bytes());
    // v3+: the features after the throttle time, as tagged fields.
    if (body_flexible) {
        reader.read_int32();  // throttle_time_ms
        size_t tags_offset = reader.position();
        std::optional<std::vector<std::byte>> tags = without_withheld_features(reader);
        if (!reader.ok()) {
            result.error = reader.error();
            return result;
        }
        if (tags) splice.replace(tags_offset, reader.position() - tags_offset, *tags);
    }
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
