// What the proxy knows of the upstream cluster: its brokers (node id -> address) as an
// immutable snapshot shared by the cores, and the blocking discovery used at start-up
// and by the periodic refresh (never on a data-plane thread).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "protocol/broker_endpoints.h"
#include "proxy/config.h"
#include "reactor/address.h"
#include "remap/topic_layouts.h"

namespace kpp {

struct upstream_broker {
    int32_t node_id = -1;
    protocol::endpoint advertised;  // as the cluster names it
    reactor::socket_address address;
    uint16_t proxy_port = 0;        // where the proxy serves it
};

struct cluster_directory {
    std::map<int32_t, upstream_broker> brokers;
    int32_t controller_id = -1;
    // The API version ranges of the bootstrap server that answered (key -> min, max): what
    // the proxy tells a client before SASL authentication, without asking a broker.
    std::map<int16_t, std::pair<int16_t, int16_t>> api_ranges;

    const upstream_broker* find(int32_t node_id) const {
        auto found = brokers.find(node_id);
        return found == brokers.end() ? nullptr : &found->second;
    }
    bool same_brokers(const cluster_directory& other) const;
};

struct discovery_result {
    std::shared_ptr<const cluster_directory> directory;
    std::string bootstrap_used;
    std::string error;  // empty on success
};

// The offset store topic as found (or created) at start-up, and the request versions the
// proxy's own store requests use (the highest non-flexible ones the cluster offers).
struct offset_store_info {
    std::string topic;
    int32_t partitions = 0;  // 0: no store (nothing is remapped)
    int16_t metadata_version = 1;
    int16_t produce_version = 3;
    int16_t fetch_version = 4;
    // DescribeProducers, when the cluster offers it (Kafka 2.8+): how the Produce path learns
    // where a transactional producer it has no state for stands on a partition.
    std::optional<int16_t> describe_producers_version;
};

struct offset_store_result {
    std::optional<offset_store_info> info;
    std::string error;  // why info is missing
    bool fatal = false; // a cluster that answered but cannot hold the store: stop start-up
};

// Checks that offset_store.topic exists, creating it (compacted) through CreateTopics where
// the cluster offers that API; learns its real partition count. Blocking, for start-up.
offset_store_result prepare_offset_store(const proxy_config& config, const cluster_directory& directory);

// What the start-up, reload and refresh checks of topic layouts read (blocking, never on a
// core): every topic of the cluster with its partition count, and the layouts the offset
// store recorded (remap/topic_layouts.h).
struct layout_snapshot {
    std::map<std::string, int32_t, std::less<>> cluster_topics;
    topic_layouts recorded;
    std::string error;  // empty on success
};
layout_snapshot read_layout_snapshot(const proxy_config& config, const offset_store_info& store);
// Appends layout records to the store (acks=all). Returns why it failed, empty on success.
std::string record_topic_layouts(const proxy_config& config, const offset_store_info& store,
                                 const topic_layouts& layouts);

// Asks the bootstrap servers in turn (ApiVersions, then Metadata at the best version both
// sides speak) and resolves every broker. Fails with a message; never throws for network
// errors. Throws config_error when a broker's node id has no usable proxy port.
discovery_result discover_cluster(const proxy_config& config);

}  // namespace kpp
