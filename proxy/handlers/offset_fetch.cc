// OffsetFetch on mapped topics, until the offset store answers it (DESIGN.md section 2,
// "Committed offsets"): the broker knows only physical partitions, so it answers a virtual
// partition at or above P with UNKNOWN_TOPIC_OR_PARTITION, which makes librdkafka give up
// on that partition. Such answers become "no committed offset" (offset -1, no error): the
// group then starts there from auto.offset.reset, as on a topic nobody committed to.
#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "proxy/exchange.h"
#include "proxy/handlers.h"

namespace kpp::handlers {
namespace {

namespace messages = protocol::messages;

template <typename partition_type>
bool clear_virtual_errors(const handler_context& context, const std::string& topic,
                          std::vector<partition_type>& partitions) {
    topic_mapping mapping = context.remap->mappings.lookup(topic);
    if (!mapping.remapped()) return false;
    bool changed = false;
    for (auto& partition : partitions) {
        if (partition.error_code != exchange_util::unknown_topic_or_partition) continue;
        if (partition.partition_index < mapping.physical_partitions ||
            partition.partition_index >= mapping.virtual_partitions)
            continue;
        partition.error_code = 0;
        partition.committed_offset = -1;
        partition.committed_leader_epoch = -1;
        partition.metadata = std::string();
        changed = true;
    }
    return changed;
}

}  // namespace

rewritten_response offset_fetch(const handler_context& context, std::span<const std::byte> response, int16_t version) {
    rewritten_response out;
    if (!context.remap) {
        out.problem = "no mapping state";
        return out;
    }
    if (!context.remap->mappings.remaps_anything()) {
        out.message.assign(response.begin(), response.end());
        return out;
    }
    auto body_offset = protocol::response_body_offset(response, protocol::api_key::offset_fetch, version);
    messages::offset_fetch_response decoded;
    if (!body_offset ||
        messages::decode(decoded, version, response.subspan(*body_offset)) != protocol::wire_error::none) {
        out.problem = "OffsetFetch response does not decode";
        return out;
    }
    bool changed = false;
    for (auto& topic : decoded.topics) changed = clear_virtual_errors(context, topic.name, topic.partitions) || changed;
    for (auto& group : decoded.groups) {
        for (auto& topic : group.topics) {
            std::string name = topic.name;
            if (name.empty()) {
                if (auto found = context.remap->names.find(topic.topic_id)) name = *found;
            }
            changed = clear_virtual_errors(context, name, topic.partitions) || changed;
        }
    }
    if (!changed) {
        out.message.assign(response.begin(), response.end());
        return out;
    }
    protocol::wire_writer writer;
    writer.write_raw(response.first(*body_offset));
    messages::encode(decoded, version, writer);
    out.message = std::move(writer.bytes());
    return out;
}

}  // namespace kpp::handlers
