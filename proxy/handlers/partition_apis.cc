// The APIs that name partitions besides Produce and Fetch (DESIGN.md section 2):
// ListOffsets, OffsetForLeaderEpoch and DescribeProducers map each virtual partition to its
// physical one (virtual partitions sharing a physical one go out in successive requests, a
// broker refuses a partition named twice) and map the answers back; DeleteRecords and
// CreatePartitions are refused per mapped topic; CreateTopics creates P physical partitions
// for a mapped name. Requests naming no mapped topic are forwarded unchanged.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "proxy/exchange.h"
#include "proxy/exchange_messages.h"
#include "proxy/handlers.h"
#include "proxy/shard_server.h"

namespace kpp::handlers {
namespace {

namespace messages = protocol::messages;
using reactor::byte_slice;

constexpr int16_t list_offsets_key = 2;
constexpr int16_t create_topics_key = 19;
constexpr int16_t delete_records_key = 21;
constexpr int16_t offset_for_leader_epoch_key = 23;
constexpr int16_t create_partitions_key = 37;
constexpr int16_t describe_producers_key = 61;
constexpr int16_t add_partitions_to_txn_key = 24;
constexpr int16_t operation_not_attempted = 55;
constexpr int64_t latest_timestamp = -1;

// A request split into rounds; each answer decoded into `response_type`, then `finish`
// builds the client's response from all of them (missing ones: nullopt).
template <typename response_type>
class rounds_exchange final : public request_exchange {
public:
    using answers = std::vector<std::optional<response_type>>;
    using finisher = std::function<response_type(exchange_env&, answers&)>;

    rounds_exchange(int16_t api_key, int16_t version, size_t rounds, finisher finish)
        : api_key_(api_key), version_(version), answers_(rounds), finish_(std::move(finish)) {}

    bool on_response(exchange_env& env, protocol::frame&& response) override {
        size_t round = received_++;
        answers_[round] = exchange_util::decode_response<response_type>(response, api_key_, version_);
        if (!answers_[round])
            spdlog::warn("malformed {} v{} response from the broker for {}", protocol::api_name(api_key_), version_,
                         env.peer);
        if (received_ < answers_.size()) return false;
        answer = encode_answer(finish_(env, answers_));
        return true;
    }

    std::vector<byte_slice> encode_answer(const response_type& message) const {
        return exchange_util::encode_response(api_key_, version_, message);
    }

private:
    int16_t api_key_;
    int16_t version_;
    answers answers_;
    finisher finish_;
    size_t received_ = 0;
};

template <typename request_type>
void send_message(exchange_env& env, const client_request& request, int16_t api_key, const request_type& message) {
    exchange_util::send_message(env, request.header_tail, api_key, request.header.fixed.api_version, message);
}

// One requested partition of a partition-mapped API.
struct mapped_entry {
    size_t topic = 0;
    int32_t partition = 0;   // as the client named it
    int32_t physical = 0;
    bool mapped = false;
    int round = -1;          // -1: answered by the proxy with `local_error`
    int16_t local_error = 0;
};

// Maps partitions, validates virtual ones and assigns rounds so that no round names one
// (topic, physical partition) twice. Returns the number of rounds; sets any_mapped.
size_t plan_entries(exchange_env& env, const std::vector<std::string>& topic_names, std::vector<mapped_entry>& entries,
                    bool& any_mapped) {
    std::map<std::pair<size_t, int32_t>, int> uses;
    size_t rounds = 0;
    any_mapped = false;
    for (mapped_entry& entry : entries) {
        topic_mapping mapping = env.remap.mappings.lookup(topic_names[entry.topic]);
        entry.physical = entry.partition;
        if (mapping.remapped()) {
            any_mapped = true;
            entry.mapped = true;
            if (entry.partition < 0 || entry.partition >= mapping.virtual_partitions) {
                entry.local_error = exchange_util::unknown_topic_or_partition;
                bump(env.metrics.partition_errors_local);
                continue;
            }
            entry.physical = entry.partition % mapping.physical_partitions;
        }
        entry.round = uses[{entry.topic, entry.physical}]++;
        rounds = std::max(rounds, size_t(entry.round + 1));
    }
    return rounds;
}

// Finds, in one round's answer, the element for (topic name, physical partition).
template <typename topics_type, typename name_of, typename partitions_of, typename index_of>
auto* find_answer(topics_type& topics, const std::string& name, int32_t partition, name_of topic_name,
                  partitions_of partitions, index_of index) {
    using element = std::remove_reference_t<decltype(partitions(topics.front()).front())>;
    for (auto& topic : topics) {
        if (topic_name(topic) != name) continue;
        for (auto& found : partitions(topic))
            if (index(found) == partition) return &found;
    }
    return static_cast<element*>(nullptr);
}

// Starts the exchange: answered at once when nothing needs the broker, else pending.
template <typename response_type>
exchange_start launch(exchange_env& env, int16_t api_key, int16_t version, size_t rounds,
                      typename rounds_exchange<response_type>::finisher finish) {
    exchange_start start;
    auto exchange = std::make_unique<rounds_exchange<response_type>>(api_key, version, rounds, finish);
    if (rounds == 0) {
        typename rounds_exchange<response_type>::answers none;
        start.what = exchange_start::kind::answered;
        start.answer = exchange->encode_answer(finish(env, none));
        return start;
    }
    start.what = exchange_start::kind::pending;
    start.exchange = std::move(exchange);
    return start;
}

// Sends one request per round, each naming the entries of that round with their physical
// partition: `add_topic(message, name)` appends a topic and returns it,
// `add_partition(topic, entry_index, physical)` appends one partition to it.
template <typename request_type, typename add_topic_type, typename add_partition_type>
void send_rounds(exchange_env& env, const client_request& request, int16_t api_key, size_t rounds,
                 const request_type& base, const std::vector<std::string>& names, const std::vector<mapped_entry>& entries,
                 add_topic_type add_topic, add_partition_type add_partition) {
    for (size_t round = 0; round < rounds; ++round) {
        request_type out = base;
        std::map<size_t, size_t> slot;
        for (size_t index = 0; index < entries.size(); ++index) {
            const mapped_entry& entry = entries[index];
            if (entry.round != int(round)) continue;
            auto found = slot.find(entry.topic);
            if (found == slot.end()) {
                found = slot.emplace(entry.topic, out.topics.size()).first;
                add_topic(out, names[entry.topic]);
            }
            add_partition(out.topics[found->second], index, entry.physical);
        }
        send_message(env, request, api_key, out);
    }
}

std::string hint_key_for(exchange_env& env, const std::string& name) {
    (void)env;
    return name;
}

}  // namespace

// ---- ListOffsets ----

exchange_start start_list_offsets(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    if (version < 1) return exchange_util::refuse_old_version_if_mapped(env, request);
    messages::list_offsets_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::vector<std::string> names;
    std::vector<mapped_entry> entries;
    std::vector<messages::list_offsets_request::topics_element::partitions_element> wanted;
    for (size_t t = 0; t < decoded.topics.size(); ++t) {
        names.push_back(decoded.topics[t].name);
        for (const auto& partition : decoded.topics[t].partitions) {
            entries.push_back({t, partition.partition_index});
            wanted.push_back(partition);
        }
    }
    bool any_mapped = false;
    size_t rounds = plan_entries(env, names, entries, any_mapped);
    if (!any_mapped) return start;
    messages::list_offsets_request base = decoded;
    base.topics.clear();
    send_rounds(
        env, request, list_offsets_key, rounds, base, names, entries,
        [](auto& out, const std::string& name) { out.topics.emplace_back().name = name; },
        [&](auto& topic, size_t index, int32_t physical) {
            topic.partitions.push_back(wanted[index]);
            topic.partitions.back().partition_index = physical;
        });
    using response = messages::list_offsets_response;
    auto finish = [names, entries, wanted](exchange_env& env, rounds_exchange<response>::answers& answers) {
        response out;
        for (const auto& name : names) {
            out.topics.emplace_back();
            out.topics.back().name = name;
        }
        for (const auto& round : answers)
            if (round) out.throttle_time_ms = std::max(out.throttle_time_ms, round->throttle_time_ms);
        for (size_t index = 0; index < entries.size(); ++index) {
            const mapped_entry& entry = entries[index];
            response::topics_element::partitions_element result;
            result.partition_index = entry.partition;
            result.timestamp = -1;
            result.offset = -1;
            result.leader_epoch = -1;
            result.error_code = entry.local_error != 0 ? entry.local_error : exchange_util::unknown_server_error;
            if (entry.round >= 0 && answers[size_t(entry.round)]) {
                auto* found = find_answer(
                    answers[size_t(entry.round)]->topics, names[entry.topic], entry.physical,
                    [](auto& topic) -> const std::string& { return topic.name; },
                    [](auto& topic) -> auto& { return topic.partitions; }, [](auto& p) { return p.partition_index; });
                if (found) {
                    result = *found;
                    result.partition_index = entry.partition;
                    // LATEST: the virtual partition's own end when scan-ahead learnt it (nothing
                    // of v between that offset and the physical end).
                    if (entry.mapped && result.error_code == 0 && wanted[index].timestamp == latest_timestamp &&
                        result.offset >= 0) {
                        if (auto since = env.remap.hints.empty_since(hint_key_for(env, names[entry.topic]),
                                                                     entry.physical, entry.partition, result.offset))
                            result.offset = *since;
                        else if (auto end = env.remap.ends.find(names[entry.topic], entry.physical, entry.partition,
                                                                result.offset))
                            result.offset = *end;  // learnt by a fetch on another core
                    }
                }
            }
            out.topics[entry.topic].partitions.push_back(result);
        }
        return out;
    };
    return launch<response>(env, list_offsets_key, version, rounds, finish);
}

// ---- OffsetForLeaderEpoch ----

exchange_start start_offset_for_leader_epoch(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    messages::offset_for_leader_epoch_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::vector<std::string> names;
    std::vector<mapped_entry> entries;
    std::vector<messages::offset_for_leader_epoch_request::topics_element::partitions_element> wanted;
    for (size_t t = 0; t < decoded.topics.size(); ++t) {
        names.push_back(decoded.topics[t].topic);
        for (const auto& partition : decoded.topics[t].partitions) {
            entries.push_back({t, partition.partition});
            wanted.push_back(partition);
        }
    }
    bool any_mapped = false;
    size_t rounds = plan_entries(env, names, entries, any_mapped);
    if (!any_mapped) return start;
    messages::offset_for_leader_epoch_request base = decoded;
    base.topics.clear();
    send_rounds(
        env, request, offset_for_leader_epoch_key, rounds, base, names, entries,
        [](auto& out, const std::string& name) { out.topics.emplace_back().topic = name; },
        [&](auto& topic, size_t index, int32_t physical) {
            topic.partitions.push_back(wanted[index]);
            topic.partitions.back().partition = physical;
        });
    using response = messages::offset_for_leader_epoch_response;
    auto finish = [names, entries](exchange_env&, rounds_exchange<response>::answers& answers) {
        response out;
        for (const auto& name : names) {
            out.topics.emplace_back();
            out.topics.back().topic = name;
        }
        for (const auto& round : answers)
            if (round) out.throttle_time_ms = std::max(out.throttle_time_ms, round->throttle_time_ms);
        for (const mapped_entry& entry : entries) {
            response::topics_element::partitions_element result;
            result.partition = entry.partition;
            result.leader_epoch = -1;
            result.end_offset = -1;
            result.error_code = entry.local_error != 0 ? entry.local_error : exchange_util::unknown_server_error;
            if (entry.round >= 0 && answers[size_t(entry.round)]) {
                auto* found = find_answer(
                    answers[size_t(entry.round)]->topics, names[entry.topic], entry.physical,
                    [](auto& topic) -> const std::string& { return topic.topic; },
                    [](auto& topic) -> auto& { return topic.partitions; }, [](auto& p) { return p.partition; });
                if (found) {
                    result = *found;
                    result.partition = entry.partition;
                }
            }
            out.topics[entry.topic].partitions.push_back(result);
        }
        return out;
    };
    return launch<response>(env, offset_for_leader_epoch_key, version, rounds, finish);
}

// ---- DescribeProducers ----

exchange_start start_describe_producers(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    messages::describe_producers_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::vector<std::string> names;
    std::vector<mapped_entry> entries;
    for (size_t t = 0; t < decoded.topics.size(); ++t) {
        names.push_back(decoded.topics[t].name);
        for (int32_t partition : decoded.topics[t].partition_indexes) entries.push_back({t, partition});
    }
    bool any_mapped = false;
    size_t rounds = plan_entries(env, names, entries, any_mapped);
    if (!any_mapped) return start;
    send_rounds(
        env, request, describe_producers_key, rounds, messages::describe_producers_request{}, names, entries,
        [](auto& out, const std::string& name) { out.topics.emplace_back().name = name; },
        [](auto& topic, size_t, int32_t physical) { topic.partition_indexes.push_back(physical); });
    using response = messages::describe_producers_response;
    auto finish = [names, entries](exchange_env& env, rounds_exchange<response>::answers& answers) {
        response out;
        for (const auto& name : names) {
            out.topics.emplace_back();
            out.topics.back().name = name;
        }
        for (const auto& round : answers)
            if (round) out.throttle_time_ms = std::max(out.throttle_time_ms, round->throttle_time_ms);
        // A virtual partition's producers: of group g = v / P, the aliases of group g shown as
        // the client producers they stand for; of group 0, the producers that are no alias.
        auto producers_of_virtual = [&env](auto& result, int32_t virtual_partition, int32_t physical_partitions) {
            int32_t group = virtual_partition / physical_partitions;
            const alias_registry& registry = env.server.aliases().registry();
            std::erase_if(result.active_producers, [&](auto& producer) {
                std::optional<alias_key> owner = registry.owner_of(producer.producer_id);
                if (!owner) return group != 0;
                if (owner->group != group) return true;
                producer.producer_id = owner->producer_id;
                producer.producer_epoch = owner->producer_epoch;
                return false;
            });
        };
        for (const mapped_entry& entry : entries) {
            response::topics_element::partitions_element result;
            result.partition_index = entry.partition;
            result.error_code = entry.local_error != 0 ? entry.local_error : exchange_util::unknown_server_error;
            if (entry.round >= 0 && answers[size_t(entry.round)]) {
                auto* found = find_answer(
                    answers[size_t(entry.round)]->topics, names[entry.topic], entry.physical,
                    [](auto& topic) -> const std::string& { return topic.name; },
                    [](auto& topic) -> auto& { return topic.partitions; }, [](auto& p) { return p.partition_index; });
                if (found) {
                    result = *found;
                    result.partition_index = entry.partition;
                    topic_mapping mapping = env.remap.mappings.lookup(names[entry.topic]);
                    if (mapping.remapped()) producers_of_virtual(result, entry.partition, mapping.physical_partitions);
                }
            }
            out.topics[entry.topic].partitions.push_back(result);
        }
        return out;
    };
    return launch<response>(env, describe_producers_key, version, rounds, finish);
}

// ---- AddPartitionsToTxn: virtual partitions added as their physical ones ----

// The client form (v0-3) names its transaction's partitions; each virtual partition of a
// mapped topic is its physical partition, named once however many virtual partitions share
// it, and every virtual partition gets its physical partition's result. A virtual
// partition that does not exist fails the request as a broker does: that partition
// UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED, nothing sent. The broker
// form (v4+, brokers verifying for each other) is forwarded.
exchange_start start_add_partitions_to_txn(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    if (version > 3) return start;
    messages::add_partitions_to_txn_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::vector<std::string> names;
    std::vector<mapped_entry> entries;
    for (size_t t = 0; t < decoded.topics.size(); ++t) {
        names.push_back(decoded.topics[t].name);
        for (int32_t partition : decoded.topics[t].partitions) entries.push_back({t, partition});
    }
    bool any_mapped = false;
    plan_entries(env, names, entries, any_mapped);
    if (!any_mapped) return start;
    bool any_local_error = std::any_of(entries.begin(), entries.end(),
                                       [](const mapped_entry& entry) { return entry.local_error != 0; });
    size_t rounds = any_local_error ? 0 : 1;
    if (!any_local_error) {
        messages::add_partitions_to_txn_request out = decoded;
        out.topics.clear();
        std::map<size_t, size_t> slot;
        std::set<std::pair<size_t, int32_t>> named;
        for (mapped_entry& entry : entries) {
            entry.round = 0;  // one request: each physical partition named once
            if (!named.insert({entry.topic, entry.physical}).second) continue;
            auto found = slot.find(entry.topic);
            if (found == slot.end()) {
                found = slot.emplace(entry.topic, out.topics.size()).first;
                out.topics.emplace_back().name = names[entry.topic];
            }
            out.topics[found->second].partitions.push_back(entry.physical);
        }
        send_message(env, request, add_partitions_to_txn_key, out);
    }
    using response = messages::add_partitions_to_txn_response;
    auto finish = [names, entries, any_local_error](exchange_env&, rounds_exchange<response>::answers& answers) {
        response out;
        for (const auto& name : names) out.results.emplace_back().name = name;
        if (!answers.empty() && answers[0]) out.throttle_time_ms = answers[0]->throttle_time_ms;
        for (const mapped_entry& entry : entries) {
            response::results_element::results_by_partition_element result;
            result.partition_index = entry.partition;
            if (any_local_error) {
                result.partition_error_code = entry.local_error != 0 ? entry.local_error : operation_not_attempted;
            } else {
                result.partition_error_code = exchange_util::unknown_server_error;
                if (answers[0]) {
                    auto* found = find_answer(
                        answers[0]->results, names[entry.topic], entry.physical,
                        [](auto& topic) -> const std::string& { return topic.name; },
                        [](auto& topic) -> auto& { return topic.results_by_partition; },
                        [](auto& p) { return p.partition_index; });
                    if (found) result.partition_error_code = found->partition_error_code;
                }
            }
            out.results[entry.topic].results_by_partition.push_back(result);
        }
        return out;
    };
    return launch<response>(env, add_partitions_to_txn_key, version, rounds, finish);
}

// ---- DeleteRecords: refused on mapped topics (it would truncate the neighbours) ----

exchange_start start_delete_records(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    messages::delete_records_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::vector<bool> refused;
    messages::delete_records_request forwarded;
    forwarded.timeout_ms = decoded.timeout_ms;
    for (const auto& topic : decoded.topics) {
        bool mapped = env.remap.mappings.lookup(topic.name).remapped();
        refused.push_back(mapped);
        if (!mapped) forwarded.topics.push_back(topic);
    }
    if (std::none_of(refused.begin(), refused.end(), [](bool value) { return value; })) return start;
    for (const auto& topic : decoded.topics)
        if (env.remap.mappings.lookup(topic.name).remapped())
            spdlog::warn("DeleteRecords from {} on mapped topic '{}' refused: it would delete other virtual "
                         "partitions' records too",
                         env.peer, topic.name);
    using response = messages::delete_records_response;
    auto finish = [decoded, refused](exchange_env& env, rounds_exchange<response>::answers& answers) {
        response out;
        if (!answers.empty() && answers[0]) out.throttle_time_ms = answers[0]->throttle_time_ms;
        for (size_t t = 0; t < decoded.topics.size(); ++t) {
            const auto& topic = decoded.topics[t];
            if (!refused[t] && !answers.empty() && answers[0]) {
                for (const auto& answered : answers[0]->topics)
                    if (answered.name == topic.name) out.topics.push_back(answered);
                continue;
            }
            out.topics.emplace_back();
            out.topics.back().name = topic.name;
            for (const auto& partition : topic.partitions) {
                response::topics_element::partitions_element result;
                result.partition_index = partition.partition_index;
                result.low_watermark = -1;
                result.error_code = refused[t] ? exchange_util::policy_violation : exchange_util::unknown_server_error;
                if (refused[t]) bump(env.metrics.partition_errors_local);
                out.topics.back().partitions.push_back(result);
            }
        }
        return out;
    };
    bool send = !forwarded.topics.empty();
    if (send) send_message(env, request, delete_records_key, forwarded);
    return launch<response>(env, delete_records_key, version, send ? 1 : 0, finish);
}

// ---- CreatePartitions: virtual counts live in the config ----

exchange_start start_create_partitions(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    messages::create_partitions_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::vector<bool> refused;
    messages::create_partitions_request forwarded = decoded;
    forwarded.topics.clear();
    for (const auto& topic : decoded.topics) {
        bool mapped = env.remap.mappings.lookup(topic.name).remapped();
        refused.push_back(mapped);
        if (!mapped) forwarded.topics.push_back(topic);
    }
    if (std::none_of(refused.begin(), refused.end(), [](bool value) { return value; })) return start;
    using response = messages::create_partitions_response;
    auto finish = [decoded, refused](exchange_env&, rounds_exchange<response>::answers& answers) {
        response out;
        if (!answers.empty() && answers[0]) out.throttle_time_ms = answers[0]->throttle_time_ms;
        for (size_t t = 0; t < decoded.topics.size(); ++t) {
            const auto& topic = decoded.topics[t];
            response::results_element result;
            result.name = topic.name;
            if (refused[t]) {
                result.error_code = exchange_util::invalid_request;
                result.error_message = "topic '" + topic.name +
                                       "' is mapped to virtual partitions by kafka-partition-proxy: its partition "
                                       "count is set by mapping.virtual_partitions in the proxy config";
            } else {
                result.error_code = exchange_util::unknown_server_error;
                if (!answers.empty() && answers[0])
                    for (const auto& answered : answers[0]->results)
                        if (answered.name == topic.name) result = answered;
            }
            out.results.push_back(result);
        }
        return out;
    };
    bool send = !forwarded.topics.empty();
    if (send) send_message(env, request, create_partitions_key, forwarded);
    return launch<response>(env, create_partitions_key, version, send ? 1 : 0, finish);
}

// ---- CreateTopics: a mapped name gets P physical partitions; the client is told V ----

exchange_start start_create_topics(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    messages::create_topics_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    std::map<std::string, topic_mapping> mapped;
    for (auto& topic : decoded.topics) {
        topic_mapping mapping = env.remap.mappings.lookup(topic.name);
        if (!mapping.remapped()) continue;
        mapped[topic.name] = mapping;
        topic.num_partitions = mapping.physical_partitions;
        topic.assignments.clear();  // a manual assignment of virtual partitions means nothing to the broker
    }
    if (mapped.empty()) return start;
    send_message(env, request, create_topics_key, decoded);
    using response = messages::create_topics_response;
    auto finish = [mapped](exchange_env&, rounds_exchange<response>::answers& answers) {
        response out;
        if (answers[0]) out = *answers[0];
        for (auto& topic : out.topics) {
            auto found = mapped.find(topic.name);
            if (found != mapped.end() && topic.error_code == 0 && topic.num_partitions > 0)
                topic.num_partitions = found->second.virtual_partitions;
        }
        return out;
    };
    start.what = exchange_start::kind::pending;
    start.exchange = std::make_unique<rounds_exchange<response>>(create_topics_key, version, 1, finish);
    return start;
}

}  // namespace kpp::handlers
