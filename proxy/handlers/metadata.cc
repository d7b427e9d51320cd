// Metadata: a mapped topic lists its V virtual partitions, each a copy of its physical
// partition p = v % P (leader, epoch, replicas, ISR, offline replicas); every broker endpoint
// becomes the proxy's address for that broker; topic ids are remembered for Fetch v13+.
#include <spdlog/spdlog.h>

#include "protocol/kpp_messages.h"
#include "protocol/api.h"
#include "proxy/exchange.h"
#include "proxy/handlers.h"

namespace kpp::handlers {
namespace {

namespace messages = protocol::messages;

// Returns true when the message changed.
bool expand_topics(const handler_context& context, messages::metadata_response& message, int16_t version) {
    remap_state& remap = *context.remap;
    bool changed = false;
    for (auto& topic : message.topics) {
        if (!topic.name || topic.name->empty()) continue;
        if (version >= 10) remap.names.learn(topic.topic_id, *topic.name);
        if (topic.error_code != 0) continue;
        topic_mapping mapping = remap.mappings.lookup(*topic.name);
        if (!mapping.remapped()) continue;
        int32_t physical = mapping.physical_partitions;
        std::vector<const messages::metadata_response::topics_element::partitions_element*> by_index(size_t(physical),
                                                                                                  nullptr);
        bool complete = int32_t(topic.partitions.size()) == physical;
        for (const auto& partition : topic.partitions) {
            if (partition.partition_index < 0 || partition.partition_index >= physical) {
                complete = false;
                break;
            }
            by_index[size_t(partition.partition_index)] = &partition;
        }
        for (const auto* found : by_index) complete = complete && found != nullptr;
        if (!complete) {
            if (context.metrics) bump(context.metrics->mapping_mismatches);
            if (mapping.from == topic_mapping::source::global_default) {
                // Only the default covers it: shown as it is, with one warning per core.
                if (remap.default_mismatch_warned.size() < 10000 &&
                    remap.default_mismatch_warned.insert(*topic.name).second)
                    spdlog::warn("topic '{}' has {} physical partitions, not the {} of mapping.physical_partitions: "
                                 "passed through unmapped",
                                 *topic.name, topic.partitions.size(), physical);
                continue;
            }
            spdlog::error("topic '{}' has {} physical partitions but its mapping rule says physical_partitions {}: "
                          "answering INVALID_PARTITIONS and not remapping it; fix the rule or the topic",
                          *topic.name, topic.partitions.size(), physical);
            topic.error_code = exchange_util::invalid_partitions;
            topic.partitions.clear();
            changed = true;
            continue;
        }
        std::vector<messages::metadata_response::topics_element::partitions_element> expanded;
        expanded.reserve(size_t(mapping.virtual_partitions));
        for (int32_t virtual_partition = 0; virtual_partition < mapping.virtual_partitions; ++virtual_partition) {
            expanded.push_back(*by_index[size_t(virtual_partition % physical)]);
            expanded.back().partition_index = virtual_partition;
        }
        topic.partitions = std::move(expanded);
        changed = true;
    }
    return changed;
}

}  // namespace

rewritten_response metadata(const handler_context& context, std::span<const std::byte> response, int16_t version) {
    std::vector<std::byte> expanded;
    std::span<const std::byte> source = response;
    if (context.remap && context.remap->mappings.remaps_anything()) {
        auto body_offset = protocol::response_body_offset(response, protocol::api_key::metadata, version);
        messages::metadata_response decoded;
        // A body that does not decode is reported by the endpoint rewrite below.
        if (body_offset &&
            messages::decode(decoded, version, response.subspan(*body_offset)) == protocol::wire_error::none &&
            expand_topics(context, decoded, version)) {
            protocol::wire_writer writer;
            writer.write_raw(response.first(*body_offset));
            messages::encode(decoded, version, writer);
            expanded = std::move(writer.bytes());
            source = expanded;
        }
    }
    auto lookup = [&](int32_t node_id) { return advertised_endpoint(context, node_id); };
    return finish_endpoint_rewrite(context, protocol::rewrite_metadata_response(source, version, lookup), "Metadata");
}

}  // namespace kpp::handlers
