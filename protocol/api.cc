#include "protocol/api.h"

#include <array>

namespace kpp::protocol {
namespace {

// Index = API key. First flexible versions follow the Kafka protocol's message definitions.
constexpr std::array<api_info, api_key::count_known> known_apis{{
    {"Produce", 9}, {"Fetch", 12}, {"ListOffsets", 6}, {"Metadata", 9},
    {"LeaderAndIsr", 4}, {"StopReplica", 2}, {"UpdateMetadata", 6}, {"ControlledShutdown", 3},
    {"OffsetCommit", 8}, {"OffsetFetch", 6}, {"FindCoordinator", 3}, {"JoinGroup", 6},
    {"Heartbeat", 4}, {"LeaveGroup", 4}, {"SyncGroup", 4}, {"DescribeGroups", 5},
    {"ListGroups", 3}, {"SaslHandshake", -1}, {"ApiVersions", 3}, {"CreateTopics", 5},
    {"DeleteTopics", 4}, {"DeleteRecords", 2}, {"InitProducerId", 2}, {"OffsetForLeaderEpoch", 4},
    {"AddPartitionsToTxn", 3}, {"AddOffsetsToTxn", 3}, {"EndTxn", 3}, {"WriteTxnMarkers", 1},
    {"TxnOffsetCommit", 3}, {"DescribeAcls", 2}, {"CreateAcls", 2}, {"DeleteAcls", 2},
    {"DescribeConfigs", 4}, {"AlterConfigs", 2}, {"AlterReplicaLogDirs", 2}, {"DescribeLogDirs", 2},
    {"SaslAuthenticate", 2}, {"CreatePartitions", 2}, {"CreateDelegationToken", 2}, {"RenewDelegationToken", 2},
    {"ExpireDelegationToken", 2}, {"DescribeDelegationToken", 2}, {"DeleteGroups", 2}, {"ElectLeaders", 2},
    {"IncrementalAlterConfigs", 1}, {"AlterPartitionReassignments", 0}, {"ListPartitionReassignments", 0},
    {"OffsetDelete", -1}, {"DescribeClientQuotas", 1}, {"AlterClientQuotas", 1},
    {"DescribeUserScramCredentials", 0}, {"AlterUserScramCredentials", 0}, {"Vote", 0},
    {"BeginQuorumEpoch", 1}, {"EndQuorumEpoch", 1}, {"DescribeQuorum", 0}, {"AlterPartition", 0},
    {"UpdateFeatures", 0}, {"Envelope", 0}, {"FetchSnapshot", 0}, {"DescribeCluster", 0},
    {"DescribeProducers", 0}, {"BrokerRegistration", 0}, {"BrokerHeartbeat", 0}, {"UnregisterBroker", 0},
    {"DescribeTransactions", 0}, {"ListTransactions", 0}, {"AllocateProducerIds", 0},
    {"ConsumerGroupHeartbeat", 0}, {"ConsumerGroupDescribe", 0}, {"ControllerRegistration", 0},
    {"GetTelemetrySubscriptions", 0}, {"PushTelemetry", 0}, {"AssignReplicasToDirs", 0},
    {"ListConfigResources", 0}, {"DescribeTopicPartitions", 0}, {"ShareGroupHeartbeat", 0},
    {"ShareGroupDescribe", 0}, {"ShareFetch", 0}, {"ShareAcknowledge", 0}, {"AddRaftVoter", 0},
    {"RemoveRaftVoter", 0}, {"UpdateRaftVoter", 0}, {"InitializeShareGroupState", 0},
    {"ReadShareGroupState", 0}, {"WriteShareGroupState", 0}, {"DeleteShareGroupState", 0},
    {"ReadShareGroupStateSummary", 0}, {"StreamsGroupHeartbeat", 0}, {"StreamsGroupDescribe", 0},
    {"DescribeShareGroupOffsets", 0}, {"AlterShareGroupOffsets", 0}, {"DeleteShareGroupOffsets", 0},
}};

}  // namespace

std::optional<api_info> find_api(int16_t key) {
    if (key < 0 || key >= api_key::count_known) return std::nullopt;
    return known_apis[size_t(key)];
}

std::string_view api_name(int16_t key) {
    auto info = find_api(key);
    return info ? info->name : std::string_view("Unknown");
}

bool request_header_is_flexible(int16_t key, int16_t version) {
    auto info = find_api(key);
    return info && info->first_flexible_version >= 0 && version >= info->first_flexible_version;
}

bool response_header_is_flexible(int16_t key, int16_t version) {
    if (key == api_key::api_versions) return false;
    return request_header_is_flexible(key, version);
}

bool withheld_under_remapping(int16_t key) {
    switch (key) {
        case 27:  // WriteTxnMarkers: broker-to-broker, names physical partitions
        case 68:  // ConsumerGroupHeartbeat (KIP-848): the broker would assign physical partitions
        case 76:  // ShareGroupHeartbeat
        case 77:  // ShareGroupDescribe
        case 78:  // ShareFetch
        case 79:  // ShareAcknowledge
        case 90:  // DescribeShareGroupOffsets
        case 91:  // AlterShareGroupOffsets
        case 92:  // DeleteShareGroupOffsets
            return true;
        default:
            return false;
    }
}

std::optional<version_range> proxy_rewrite_range(int16_t key) {
    switch (key) {
        case api_key::metadata: return version_range{0, 12};
        case api_key::find_coordinator: return version_range{0, 6};
        case api_key::describe_cluster: return version_range{0, 2};
        case api_key::api_versions: return version_range{0, 4};
        // Only the highest versions are narrowed: clients derive features from the lowest
        // ones (librdkafka turns gzip, snappy and lz4 off unless Produce v0 and Fetch v2 are
        // listed). A request to a mapped topic below the rebuilt versions is refused.
        // Rebuilt for virtual partitions (acks=0 has no response): v13 names topics by id.
        // v12 belongs to transactions v2 (KIP-890: partitions join a transaction implicitly
        // with their first Produce), which the proxy does not offer: the transactional
        // sequence state and AddPartitionsToTxn mapping need the partitions named first.
        case api_key::produce: return version_range{0, 11};
        // Client form only (v4+ is brokers verifying for each other; v5 is KIP-890).
        case 24 /* AddPartitionsToTxn */: return version_range{0, 3};
        case 26 /* EndTxn */: return version_range{0, 4};
        case 28 /* TxnOffsetCommit */: return version_range{0, 4};
        // Filtered and rebuilt for virtual partitions from v4; v17+ not yet.
        case api_key::fetch: return version_range{0, 16};
        case api_key::list_offsets: return version_range{0, 10};
        // Committed offsets of virtual partitions (offset store); v10 names topics by id.
        case 8 /* OffsetCommit */: return version_range{0, 9};
        case api_key::offset_fetch: return version_range{0, 9};
        case 42 /* DeleteGroups */: return version_range{0, 2};
        case 47 /* OffsetDelete */: return version_range{0, 0};
        case 19 /* CreateTopics */: return version_range{0, 7};
        case 21 /* DeleteRecords */: return version_range{0, 2};
        case 23 /* OffsetForLeaderEpoch */: return version_range{0, 4};
        case 37 /* CreatePartitions */: return version_range{0, 3};
        case 61 /* DescribeProducers */: return version_range{0, 0};
        // v0 switches the connection to raw SASL frames that are not Kafka requests.
        case api_key::sasl_handshake: return version_range{1, 1};
        default: return std::nullopt;
    }
}

}  // namespace kpp::protocol
