// Committed offsets of virtual partitions (DESIGN.md section 2, "Committed offsets"): the
// broker keeps one committed offset per physical partition, so the proxy keeps the virtual
// ones in its offset store and uses the broker for what only it can do (membership,
// fencing, the coordinator's own errors) and for a safe physical resume point.
//
// OffsetCommit: the store partition of the group is read to its end, then a physical commit
//   of the lowest virtual offset on each physical partition goes to the broker with the
//   client's generation and member id; only for what the broker accepted are the virtual
//   offsets written to the store (acks=all); then the client gets its answer.
// OffsetFetch (all versions, v8+ groups, null "all topics"): the broker is asked for the
//   physical partitions (its errors count) while the store is read to its end; virtual
//   offsets come from the store.
// OffsetDelete and DeleteGroups: the broker's answer first, then tombstones in the store.
// Requests naming no mapped topic (OffsetCommit, OffsetDelete) are forwarded unchanged.
#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "protocol/wire.h"
#include "proxy/exchange.h"
#include "proxy/exchange_messages.h"
#include "proxy/handlers.h"
#include "proxy/offset_store.h"
#include "proxy/shard_server.h"

namespace kpp::handlers {
namespace {

namespace messages = protocol::messages;
using reactor::byte_slice;

constexpr int16_t offset_commit_key = 8;
constexpr int16_t offset_fetch_key = 9;
constexpr int16_t delete_groups_key = 42;
constexpr int16_t offset_delete_key = 47;
constexpr int16_t txn_offset_commit_key = 28;
constexpr int16_t group_id_not_found = 69;

// The outcome of one store operation, shared between the exchange and the store's callback
// (which may outlive the exchange).
struct store_cell {
    bool done = false;
    int16_t error = 0;
};

// Starts `operation` (a store sync or write taking a store_done) and returns its cell; the
// exchange is woken when it finishes.
template <typename operation_type>
std::shared_ptr<store_cell> start_store(exchange_env& env, operation_type operation) {
    auto cell = std::make_shared<store_cell>();
    operation([cell, waker = exchange_waker(env)](int16_t error) {
        cell->done = true;
        cell->error = error;
        waker();
    });
    return cell;
}

bool all_done(const std::vector<std::shared_ptr<store_cell>>& cells) {
    for (const auto& cell : cells)
        if (!cell->done) return false;
    return true;
}

int16_t first_error(const std::vector<std::shared_ptr<store_cell>>& cells) {
    for (const auto& cell : cells)
        if (cell->error != 0) return cell->error;
    return 0;
}

using exchange_util::encode_response;
using exchange_util::send_message;

template <typename message_type>
std::optional<message_type> decode_answer(exchange_env& env, const protocol::frame& response, int16_t api_key,
                                          int16_t version) {
    auto decoded = exchange_util::decode_response<message_type>(response, api_key, version);
    if (!decoded)
        spdlog::warn("malformed {} v{} response from the broker for {}", protocol::api_name(api_key), version, env.peer);
    return decoded;
}

// ---------------------------------------------------------------------------------------
// OffsetCommit

struct physical_commit {
    int32_t partition = 0;
    int64_t offset = 0;
    std::string metadata;
};

// The physical commits of one mapped topic: for every physical partition a virtual one of
// the request lies on, the lowest committed offset of its virtual partitions with the
// request's entries (those without an error) applied. The metadata is the longest committed
// on it here: the broker checks its size (offset.metadata.max.bytes) and refuses the commit
// of p if it is too large.
template <typename partition_type>
std::vector<physical_commit> physical_commits(const offset_cache& cache, const std::string& group,
                                              const std::string& topic, const topic_mapping& mapping,
                                              const std::vector<partition_type>& partitions,
                                              const std::vector<int16_t>& errors) {
    std::map<int32_t, int64_t> committed;
    cache.for_group(group, [&](const std::string& name, int32_t v, const offset_value& value) {
        if (name == topic && v < mapping.virtual_partitions) committed[v] = value.offset;
    });
    std::map<int32_t, std::string> touched;
    for (size_t i = 0; i < partitions.size(); ++i) {
        if (errors[i] != 0) continue;
        const auto& entry = partitions[i];
        committed[entry.partition_index] = entry.committed_offset;
        std::string& longest = touched[entry.partition_index % mapping.physical_partitions];
        if (entry.committed_metadata && entry.committed_metadata->size() > longest.size())
            longest = *entry.committed_metadata;
    }
    std::vector<physical_commit> out;
    for (const auto& [p, metadata] : touched) {
        auto offset = physical_commit_offset(committed, p, mapping.physical_partitions);
        if (!offset) continue;  // no virtual partition of p has an offset: nothing to protect
        out.push_back({p, *offset, metadata});
    }
    return out;
}

// Local errors of a request's entries: a virtual partition that does not exist.
template <typename topics_type>
void check_virtual_partitions(exchange_env& env, const topics_type& topics, std::vector<topic_mapping>& mappings,
                              std::vector<std::vector<int16_t>>& errors) {
    errors.resize(topics.size());
    for (size_t t = 0; t < topics.size(); ++t) {
        const auto& topic = topics[t];
        errors[t].assign(topic.partitions.size(), 0);
        topic_mapping mapping = env.remap.mappings.lookup(topic.name);
        mappings.push_back(mapping);
        if (!mapping.remapped()) continue;
        for (size_t i = 0; i < topic.partitions.size(); ++i) {
            int32_t v = topic.partitions[i].partition_index;
            if (v < 0 || v >= mapping.virtual_partitions) {
                errors[t][i] = exchange_util::unknown_topic_or_partition;
                bump(env.metrics.partition_errors_local);
            }
        }
    }
}

// What OffsetCommit and TxnOffsetCommit share: the request's local errors, the physical
// commit (the lowest virtual offset of each physical partition touched, with the request
// applied), the virtual records for the store, the broker's per-partition errors mapped
// back, and the answer. They differ in order: OffsetCommit commits physically first and
// writes the store only for what the broker accepted; TxnOffsetCommit writes the store
// inside the client's transaction first (both vanish with an abort).
template <typename request_type, typename response_type>
class commit_exchange : public request_exchange {
protected:
    commit_exchange(exchange_env& env, const client_request& request, request_type decoded, int16_t api_key)
        : api_key_(api_key), version_(request.header.fixed.api_version), header_tail_(request.header_tail),
          request_(std::move(decoded)), store_partition_(env.server.store().partition_of(request_.group_id)) {
        check_virtual_partitions(env, request_.topics, mappings_, errors_);
        read_ = start_store(env, [&](store_done done) { env.server.store().sync(store_partition_, std::move(done)); });
    }

    // Sends the physical commit (true: nothing to send, the caller goes on).
    bool send_physical(exchange_env& env) {
        const offset_cache& cache = env.server.store().cache(store_partition_);
        request_type physical = request_;
        physical.topics.clear();
        for (size_t t = 0; t < request_.topics.size(); ++t) {
            const auto& topic = request_.topics[t];
            if (!mappings_[t].remapped()) {
                physical.topics.push_back(topic);
                continue;
            }
            typename request_type::topics_element out;
            out.name = topic.name;
            for (const physical_commit& commit :
                 physical_commits(cache, request_.group_id, topic.name, mappings_[t], topic.partitions, errors_[t])) {
                typename request_type::topics_element::partitions_element entry;
                entry.partition_index = commit.partition;
                entry.committed_offset = commit.offset;
                entry.committed_leader_epoch = -1;
                entry.committed_metadata = commit.metadata;
                out.partitions.push_back(std::move(entry));
                physically_committed_.insert({t, commit.partition});
            }
            if (!out.partitions.empty()) physical.topics.push_back(std::move(out));
        }
        if (physical.topics.empty()) return true;
        send_message(env, header_tail_, api_key_, version_, physical);
        return false;
    }

    // The broker's answer to the physical commit: its errors for unmapped partitions, and
    // for virtual partitions whose physical partition was committed. False: it does not decode.
    bool take_physical_errors(exchange_env& env, protocol::frame& response) {
        auto decoded = decode_answer<response_type>(env, response, api_key_, version_);
        if (!decoded) return false;
        throttle_ms_ = decoded->throttle_time_ms;
        auto physical_error = [&](const std::string& name, int32_t partition) -> int16_t {
            for (const auto& topic : decoded->topics)
                if (topic.name == name)
                    for (const auto& entry : topic.partitions)
                        if (entry.partition_index == partition) return entry.error_code;
            return exchange_util::unknown_server_error;
        };
        for (size_t t = 0; t < request_.topics.size(); ++t) {
            const auto& topic = request_.topics[t];
            for (size_t i = 0; i < topic.partitions.size(); ++i) {
                if (errors_[t][i] != 0) continue;
                int32_t partition = topic.partitions[i].partition_index;
                if (!mappings_[t].remapped())
                    errors_[t][i] = physical_error(topic.name, partition);
                else if (physically_committed_.count({t, partition % mappings_[t].physical_partitions}))
                    errors_[t][i] = physical_error(topic.name, partition % mappings_[t].physical_partitions);
            }
        }
        return true;
    }

    // Store records for the mapped entries without an error; `written` lists them.
    std::vector<store_record> virtual_records(std::vector<std::pair<size_t, size_t>>& written) const {
        std::vector<store_record> records;
        int64_t now_ms = offset_store::wall_clock_ms();
        for (size_t t = 0; t < request_.topics.size(); ++t) {
            if (!mappings_[t].remapped()) continue;
            const auto& topic = request_.topics[t];
            for (size_t i = 0; i < topic.partitions.size(); ++i) {
                if (errors_[t][i] != 0) continue;
                const auto& entry = topic.partitions[i];
                offset_value value{entry.committed_offset, entry.committed_leader_epoch, entry.committed_metadata, now_ms};
                records.push_back({{request_.group_id, topic.name, entry.partition_index}, std::move(value)});
                written.push_back({t, i});
            }
        }
        return records;
    }

    bool answer_all(int16_t error) {
        for (auto& topic : errors_)
            for (auto& entry : topic)
                if (entry == 0) entry = error;
        return finish();
    }

    bool finish() {
        response_type out;
        out.throttle_time_ms = throttle_ms_;
        for (size_t t = 0; t < request_.topics.size(); ++t) {
            typename response_type::topics_element topic;
            topic.name = request_.topics[t].name;
            for (size_t i = 0; i < request_.topics[t].partitions.size(); ++i)
                topic.partitions.push_back({request_.topics[t].partitions[i].partition_index, errors_[t][i]});
            out.topics.push_back(std::move(topic));
        }
        answer = encode_response(api_key_, version_, out);
        return true;
    }

    int16_t api_key_;
    int16_t version_;
    byte_slice header_tail_;
    request_type request_;
    int32_t store_partition_;
    std::vector<topic_mapping> mappings_;
    std::vector<std::vector<int16_t>> errors_;  // per request topic and partition
    std::set<std::pair<size_t, int32_t>> physically_committed_;  // (topic index, p)
    std::shared_ptr<store_cell> read_;
    std::shared_ptr<store_cell> write_;
    int32_t throttle_ms_ = 0;
};

class offset_commit_exchange final
    : public commit_exchange<messages::offset_commit_request, messages::offset_commit_response> {
public:
    offset_commit_exchange(exchange_env& env, const client_request& request, messages::offset_commit_request decoded)
        : commit_exchange(env, request, std::move(decoded), offset_commit_key) {}

    bool on_event(exchange_env& env) override {
        if (stage_ == stage::reading) {
            if (!read_->done) return false;
            if (read_->error != 0) return answer_all(read_->error);
            stage_ = stage::committing;
            return send_physical(env) && write_virtual(env);
        }
        if (stage_ == stage::writing) {
            if (!write_->done) return false;
            if (write_->error != 0)
                for (auto [t, i] : written_) errors_[t][i] = write_->error;
            return finish();
        }
        return false;
    }

    bool on_response(exchange_env& env, protocol::frame&& response) override {
        if (!take_physical_errors(env, response)) return answer_all(exchange_util::unknown_server_error);
        return write_virtual(env);
    }

private:
    enum class stage { reading, committing, writing };

    // Only for what the broker accepted.
    bool write_virtual(exchange_env& env) {
        std::vector<store_record> records = virtual_records(written_);
        if (records.empty()) return finish();
        stage_ = stage::writing;
        write_ = start_store(env, [&](store_done done) {
            env.server.store().write(store_partition_, std::move(records), std::move(done));
        });
        return false;
    }

    std::vector<std::pair<size_t, size_t>> written_;
    stage stage_ = stage::reading;
};

// TxnOffsetCommit naming mapped topics (DESIGN.md section 2, "Transactional producers"): the
// group's store partition is read to its end, the virtual offsets are written to it inside
// the client's transaction (the proxy adds the store partition to the transaction and
// produces with the client's producer id and epoch), then the physical minimum goes to the
// group coordinator in the client's TxnOffsetCommit. The commit or abort marker of the
// client's EndTxn makes both visible or discards both.
class txn_offset_commit_exchange final
    : public commit_exchange<messages::txn_offset_commit_request, messages::txn_offset_commit_response> {
public:
    txn_offset_commit_exchange(exchange_env& env, const client_request& request,
                               messages::txn_offset_commit_request decoded)
        : commit_exchange(env, request, std::move(decoded), txn_offset_commit_key) {}

    bool on_event(exchange_env& env) override {
        if (stage_ == stage::reading) {
            if (!read_->done) return false;
            if (read_->error != 0) return answer_all(read_->error);
            return write_virtual(env);
        }
        if (stage_ == stage::writing) {
            if (!write_->done) return false;
            // Nothing of the client's offsets may count without the virtual ones: the client
            // retries or aborts.
            if (write_->error != 0) return answer_all(write_->error);
            stage_ = stage::committing;
            return send_physical(env) && finish();
        }
        return false;
    }

    bool on_response(exchange_env& env, protocol::frame&& response) override {
        if (!take_physical_errors(env, response)) return answer_all(exchange_util::unknown_server_error);
        return finish();
    }

private:
    enum class stage { reading, writing, committing };

    bool write_virtual(exchange_env& env) {
        std::vector<std::pair<size_t, size_t>> written;
        std::vector<store_record> records = virtual_records(written);
        if (records.empty()) {
            stage_ = stage::committing;
            return send_physical(env) && finish();
        }
        stage_ = stage::writing;
        store_transaction transaction{request_.transactional_id, request_.producer_id, request_.producer_epoch};
        write_ = start_store(env, [&](store_done done) {
            env.server.store().write_in_transaction(store_partition_, std::move(records), std::move(transaction),
                                                    std::move(done));
        });
        return false;
    }

    stage stage_ = stage::reading;
};

// ---------------------------------------------------------------------------------------
// OffsetFetch

// One group of an OffsetFetch request, whatever the version's layout.
struct fetch_group {
    std::string group_id;
    std::optional<std::vector<std::pair<std::string, std::vector<int32_t>>>> topics;  // nullopt: all topics
};

class offset_fetch_exchange final : public request_exchange {
public:
    offset_fetch_exchange(exchange_env& env, const client_request& request, messages::offset_fetch_request decoded,
                          std::vector<fetch_group> groups)
        : version_(request.header.fixed.api_version), groups_(std::move(groups)) {
        // The broker is asked for the physical partitions of mapped topics: its errors
        // (coordinator moved, unstable offsets, authorization) stand for theirs.
        messages::offset_fetch_request physical = std::move(decoded);
        auto to_physical = [&](const std::string& name, std::vector<int32_t>& partitions) {
            topic_mapping mapping = env.remap.mappings.lookup(name);
            if (!mapping.remapped()) return;
            std::set<int32_t> unique;
            for (int32_t v : partitions)
                if (v >= 0 && v < mapping.virtual_partitions) unique.insert(v % mapping.physical_partitions);
            partitions.assign(unique.begin(), unique.end());
        };
        if (physical.topics)
            for (auto& topic : *physical.topics) to_physical(topic.name, topic.partition_indexes);
        for (auto& group : physical.groups)
            if (group.topics)
                for (auto& topic : *group.topics) to_physical(topic.name, topic.partition_indexes);
        std::set<int32_t> partitions;
        for (const auto& group : groups_) partitions.insert(env.server.store().partition_of(group.group_id));
        for (int32_t partition : partitions)
            reads_.push_back(start_store(env, [&](store_done done) { env.server.store().sync(partition, std::move(done)); }));
        send_message(env, request.header_tail, offset_fetch_key, version_, physical);
    }

    bool on_response(exchange_env& env, protocol::frame&& response) override {
        physical_ = decode_fetch_answer(env, response);
        answered_ = true;
        return maybe_finish(env);
    }
    bool on_event(exchange_env& env) override { return maybe_finish(env); }

private:
    using partition_out = messages::offset_fetch_response::groups_element::topics_element::partitions_element;
    using topic_out = messages::offset_fetch_response::groups_element::topics_element;
    using group_out = messages::offset_fetch_response::groups_element;

    // librdkafka's mock cluster answers the "all topics" form (v2-v5) with a null topics
    // array, which the schema does not allow; read as no topics rather than as no answer.
    std::optional<messages::offset_fetch_response> decode_fetch_answer(exchange_env& env, const protocol::frame& response) {
        auto body = exchange_util::response_body(response, offset_fetch_key, version_);
        messages::offset_fetch_response decoded;
        if (body && messages::decode(decoded, version_, body->span()) == protocol::wire_error::none) return decoded;
        size_t array_at = version_ >= 3 ? 4 : 0;
        if (body && version_ >= 2 && version_ <= 5 && body->length >= array_at + 4 &&
            protocol::load_int32_be(body->span().data() + array_at) == -1) {
            std::vector<std::byte> patched(body->span().begin(), body->span().end());
            protocol::store_int32_be(patched.data() + array_at, 0);
            if (messages::decode(decoded, version_, patched) == protocol::wire_error::none) return decoded;
        }
        spdlog::warn("malformed OffsetFetch v{} response from the broker for {}", version_, env.peer);
        return std::nullopt;
    }

    bool maybe_finish(exchange_env& env) {
        if (!answered_ || !all_done(reads_)) return false;
        int16_t store_error = first_error(reads_);
        std::vector<group_out> physical_groups;
        if (physical_) {
            if (version_ >= 8) {
                physical_groups = physical_->groups;
            } else {
                group_out single;
                single.group_id = groups_.empty() ? std::string() : groups_.front().group_id;
                single.error_code = physical_->error_code;
                for (const auto& topic : physical_->topics) {
                    topic_out copy;
                    copy.name = topic.name;
                    for (const auto& entry : topic.partitions)
                        copy.partitions.push_back({entry.partition_index, entry.committed_offset,
                                                   entry.committed_leader_epoch, entry.metadata, entry.error_code});
                    single.topics.push_back(std::move(copy));
                }
                physical_groups.push_back(std::move(single));
            }
        }
        std::vector<group_out> groups;
        for (const fetch_group& group : groups_) {
            const group_out* physical = nullptr;
            for (const auto& candidate : physical_groups)
                if (candidate.group_id == group.group_id) physical = &candidate;
            groups.push_back(answer_group(env, group, physical, store_error));
        }
        messages::offset_fetch_response out;
        out.throttle_time_ms = physical_ ? physical_->throttle_time_ms : 0;
        if (version_ >= 8) {
            out.groups = std::move(groups);
        } else if (!groups.empty()) {
            out.error_code = groups.front().error_code;
            for (auto& topic : groups.front().topics) {
                messages::offset_fetch_response::topics_element copy;
                copy.name = topic.name;
                for (auto& entry : topic.partitions)
                    copy.partitions.push_back({entry.partition_index, entry.committed_offset,
                                               entry.committed_leader_epoch, entry.metadata, entry.error_code});
                out.topics.push_back(std::move(copy));
            }
        }
        answer = encode_response(offset_fetch_key, version_, out);
        return true;
    }

    group_out answer_group(exchange_env& env, const fetch_group& group, const group_out* physical, int16_t store_error) {
        group_out out;
        out.group_id = group.group_id;
        out.error_code = physical ? physical->error_code : exchange_util::unknown_server_error;
        if (out.error_code == 0 && store_error != 0) out.error_code = store_error;
        const offset_cache& cache = env.server.store().cache(env.server.store().partition_of(group.group_id));
        auto physical_error = [&](const std::string& name, int32_t partition) -> int16_t {
            if (!physical) return exchange_util::unknown_server_error;
            for (const auto& topic : physical->topics)
                if (topic.name == name)
                    for (const auto& entry : topic.partitions)
                        if (entry.partition_index == partition) return entry.error_code;
            return 0;
        };
        auto virtual_entry = [&](const std::string& name, int32_t v, int16_t error) {
            partition_out entry{v, -1, -1, std::string(), error};
            if (error != 0) return entry;
            if (const offset_value* value = cache.find(group.group_id, name, v)) {
                entry.committed_offset = value->offset;
                entry.committed_leader_epoch = value->leader_epoch;
                entry.metadata = value->metadata;
            }
            return entry;
        };
        if (group.topics) {
            for (const auto& [name, partitions] : *group.topics) {
                topic_mapping mapping = env.remap.mappings.lookup(name);
                if (!mapping.remapped()) {
                    topic_out copy;
                    copy.name = name;
                    if (physical)
                        for (const auto& topic : physical->topics)
                            if (topic.name == name) copy = topic;
                    out.topics.push_back(std::move(copy));
                    continue;
                }
                topic_out topic;
                topic.name = name;
                for (int32_t v : partitions) {
                    int16_t error = 0;
                    if (v < 0 || v >= mapping.virtual_partitions) {
                        error = exchange_util::unknown_topic_or_partition;
                        bump(env.metrics.partition_errors_local);
                    } else if (store_error != 0) {
                        error = store_error;
                    } else {
                        error = physical_error(name, v % mapping.physical_partitions);
                    }
                    topic.partitions.push_back(virtual_entry(name, v, error));
                }
                out.topics.push_back(std::move(topic));
            }
            return out;
        }
        // All topics: the broker's unmapped ones, then every mapped one the store holds.
        if (physical)
            for (const auto& topic : physical->topics)
                if (!env.remap.mappings.lookup(topic.name).remapped()) out.topics.push_back(topic);
        if (out.error_code != 0) return out;
        std::map<std::string, topic_out> mapped;
        cache.for_group(group.group_id, [&](const std::string& name, int32_t v, const offset_value&) {
            topic_mapping mapping = env.remap.mappings.lookup(name);
            if (!mapping.remapped() || v >= mapping.virtual_partitions) return;
            topic_out& topic = mapped[name];
            topic.name = name;
            topic.partitions.push_back(virtual_entry(name, v, 0));
        });
        for (auto& [name, topic] : mapped) out.topics.push_back(std::move(topic));
        return out;
    }

    int16_t version_;
    std::vector<fetch_group> groups_;
    std::vector<std::shared_ptr<store_cell>> reads_;
    std::optional<messages::offset_fetch_response> physical_;
    bool answered_ = false;
};

// ---------------------------------------------------------------------------------------
// OffsetDelete

class offset_delete_exchange final : public request_exchange {
public:
    offset_delete_exchange(exchange_env& env, const client_request& request, messages::offset_delete_request decoded)
        : version_(request.header.fixed.api_version), request_(std::move(decoded)) {
        messages::offset_delete_request physical = request_;
        for (auto& topic : physical.topics) {
            topic_mapping mapping = env.remap.mappings.lookup(topic.name);
            if (!mapping.remapped()) continue;
            std::set<int32_t> unique;
            for (const auto& entry : topic.partitions)
                if (entry.partition_index >= 0 && entry.partition_index < mapping.virtual_partitions)
                    unique.insert(entry.partition_index % mapping.physical_partitions);
            topic.partitions.clear();
            for (int32_t p : unique) topic.partitions.push_back({p});
        }
        send_message(env, request.header_tail, offset_delete_key, version_, physical);
    }

    bool on_response(exchange_env& env, protocol::frame&& response) override {
        auto decoded = decode_answer<messages::offset_delete_response>(env, response, offset_delete_key, version_);
        out_.throttle_time_ms = decoded ? decoded->throttle_time_ms : 0;
        out_.error_code = decoded ? decoded->error_code : exchange_util::unknown_server_error;
        std::vector<store_record> tombstones;
        for (const auto& topic : request_.topics) {
            topic_mapping mapping = env.remap.mappings.lookup(topic.name);
            messages::offset_delete_response::topics_element answer_topic;
            answer_topic.name = topic.name;
            for (const auto& entry : topic.partitions) {
                int32_t index = entry.partition_index;
                bool in_range = !mapping.remapped() || (index >= 0 && index < mapping.virtual_partitions);
                int32_t physical = mapping.remapped() && in_range ? index % mapping.physical_partitions : index;
                int16_t error = in_range ? exchange_util::unknown_server_error : exchange_util::unknown_topic_or_partition;
                if (decoded && in_range) {
                    error = 0;
                    for (const auto& answered : decoded->topics)
                        if (answered.name == topic.name)
                            for (const auto& partition : answered.partitions)
                                if (partition.partition_index == physical) error = partition.error_code;
                }
                if (mapping.remapped() && error == 0 && out_.error_code == 0) {
                    tombstones.push_back({{request_.group_id, topic.name, index}, std::nullopt});
                    deleted_.push_back({out_.topics.size(), answer_topic.partitions.size()});
                }
                answer_topic.partitions.push_back({index, error});
            }
            out_.topics.push_back(std::move(answer_topic));
        }
        if (tombstones.empty()) return finish();
        int32_t partition = env.server.store().partition_of(request_.group_id);
        write_ = start_store(env, [&](store_done done) {
            env.server.store().write(partition, std::move(tombstones), std::move(done));
        });
        return false;
    }

    bool on_event(exchange_env&) override {
        if (!write_ || !write_->done) return false;
        if (write_->error != 0)
            for (auto [t, i] : deleted_) out_.topics[t].partitions[i].error_code = write_->error;
        return finish();
    }

private:
    bool finish() {
        answer = encode_response(offset_delete_key, version_, out_);
        return true;
    }

    int16_t version_;
    messages::offset_delete_request request_;
    messages::offset_delete_response out_;
    std::vector<std::pair<size_t, size_t>> deleted_;
    std::shared_ptr<store_cell> write_;
};

// ---------------------------------------------------------------------------------------
// DeleteGroups

class delete_groups_exchange final : public request_exchange {
public:
    delete_groups_exchange(exchange_env& env, const client_request& request, messages::delete_groups_request decoded)
        : version_(request.header.fixed.api_version) {
        send_message(env, request.header_tail, delete_groups_key, version_, decoded);
    }

    bool on_response(exchange_env& env, protocol::frame&& response) override {
        auto decoded = decode_answer<messages::delete_groups_response>(env, response, delete_groups_key, version_);
        if (!decoded) {
            out_.results.clear();
            answer = encode_response(delete_groups_key, version_, out_);
            return true;
        }
        out_ = *decoded;
        // Deleted groups (and groups the broker no longer knows, whose virtual entries may
        // outlive them after an earlier failure) lose their virtual entries too.
        std::set<int32_t> partitions;
        for (const auto& result : out_.results)
            if (result.error_code == 0 || result.error_code == group_id_not_found)
                partitions.insert(env.server.store().partition_of(result.group_id));
        if (partitions.empty()) return finish();
        for (int32_t partition : partitions)
            reads_.push_back(start_store(env, [&](store_done done) { env.server.store().sync(partition, std::move(done)); }));
        return false;
    }

    bool on_event(exchange_env& env) override {
        if (!writes_.empty()) {
            if (!all_done(writes_)) return false;
            for (size_t index = 0; index < out_.results.size(); ++index) {
                auto found = written_by_result_.find(index);
                if (found == written_by_result_.end()) continue;
                int16_t error = writes_[found->second]->error;
                out_.results[index].error_code = error != 0 ? error : 0;
            }
            return finish();
        }
        if (!all_done(reads_)) return false;
        int16_t read_error = first_error(reads_);
        offset_store& store = env.server.store();
        std::map<int32_t, std::vector<store_record>> tombstones;
        std::map<int32_t, std::vector<size_t>> results_of;
        for (size_t index = 0; index < out_.results.size(); ++index) {
            auto& result = out_.results[index];
            if (result.error_code != 0 && result.error_code != group_id_not_found) continue;
            if (read_error != 0) {
                result.error_code = read_error;
                continue;
            }
            int32_t partition = store.partition_of(result.group_id);
            size_t before = tombstones[partition].size();
            store.cache(partition).for_group(result.group_id, [&](const std::string& topic, int32_t v, const offset_value&) {
                tombstones[partition].push_back({{result.group_id, topic, v}, std::nullopt});
            });
            if (tombstones[partition].size() > before) results_of[partition].push_back(index);
        }
        for (auto& entry : tombstones) {
            // Named, not structured bindings: clang before 16 cannot capture those.
            int32_t partition = entry.first;
            auto& records = entry.second;
            if (records.empty()) continue;
            for (size_t index : results_of[partition]) written_by_result_[index] = writes_.size();
            writes_.push_back(start_store(env, [&](store_done done) {
                store.write(partition, std::move(records), std::move(done));
            }));
        }
        if (writes_.empty()) return finish();
        return false;
    }

private:
    bool finish() {
        answer = encode_response(delete_groups_key, version_, out_);
        return true;
    }

    int16_t version_;
    messages::delete_groups_response out_;
    std::vector<std::shared_ptr<store_cell>> reads_;
    std::vector<std::shared_ptr<store_cell>> writes_;
    std::map<size_t, size_t> written_by_result_;  // result index -> write
};

template <typename exchange_type, typename... arguments>
exchange_start pending(arguments&&... args) {
    exchange_start start;
    start.what = exchange_start::kind::pending;
    start.exchange = std::make_unique<exchange_type>(std::forward<arguments>(args)...);
    return start;
}

bool store_ready(exchange_env& env) {
    if (env.server.store().available()) return true;
    spdlog::warn("no offset store: committed offsets of virtual partitions cannot be served to {}", env.peer);
    return false;
}

}  // namespace

exchange_start start_offset_commit(exchange_env& env, const client_request& request) {
    messages::offset_commit_request decoded;
    if (messages::decode(decoded, request.header.fixed.api_version, request.body()) != protocol::wire_error::none)
        return {};
    bool any_mapped = false;
    for (const auto& topic : decoded.topics) any_mapped |= env.remap.mappings.lookup(topic.name).remapped();
    if (!any_mapped || !store_ready(env)) return {};
    return pending<offset_commit_exchange>(env, request, std::move(decoded));
}

exchange_start start_txn_offset_commit(exchange_env& env, const client_request& request) {
    messages::txn_offset_commit_request decoded;
    if (messages::decode(decoded, request.header.fixed.api_version, request.body()) != protocol::wire_error::none)
        return {};
    bool any_mapped = false;
    for (const auto& topic : decoded.topics) any_mapped |= env.remap.mappings.lookup(topic.name).remapped();
    if (!any_mapped || !store_ready(env)) return {};
    return pending<txn_offset_commit_exchange>(env, request, std::move(decoded));
}

exchange_start start_offset_fetch(exchange_env& env, const client_request& request) {
    int16_t version = request.header.fixed.api_version;
    messages::offset_fetch_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return {};
    std::vector<fetch_group> groups;
    bool needs_store = false;
    auto convert = [&](const std::string& group_id, const auto& topics) {
        fetch_group group{group_id, std::nullopt};
        if (!topics) {
            needs_store = true;  // "all topics" may include mapped ones
        } else {
            group.topics.emplace();
            for (const auto& topic : *topics) {
                needs_store |= env.remap.mappings.lookup(topic.name).remapped();
                group.topics->push_back({topic.name, topic.partition_indexes});
            }
        }
        groups.push_back(std::move(group));
    };
    if (version >= 8) {
        for (const auto& group : decoded.groups) convert(group.group_id, group.topics);
    } else {
        convert(decoded.group_id, decoded.topics);
    }
    if (!needs_store || !store_ready(env)) return {};
    return pending<offset_fetch_exchange>(env, request, std::move(decoded), std::move(groups));
}

exchange_start start_offset_delete(exchange_env& env, const client_request& request) {
    messages::offset_delete_request decoded;
    if (messages::decode(decoded, request.header.fixed.api_version, request.body()) != protocol::wire_error::none)
        return {};
    bool any_mapped = false;
    for (const auto& topic : decoded.topics) any_mapped |= env.remap.mappings.lookup(topic.name).remapped();
    if (!any_mapped || !store_ready(env)) return {};
    return pending<offset_delete_exchange>(env, request, std::move(decoded));
}

exchange_start start_delete_groups(exchange_env& env, const client_request& request) {
    messages::delete_groups_request decoded;
    if (messages::decode(decoded, request.header.fixed.api_version, request.body()) != protocol::wire_error::none)
        return {};
    if (!env.server.store().available()) return {};
    return pending<delete_groups_exchange>(env, request, std::move(decoded));
}

}  // namespace kpp::handlers
