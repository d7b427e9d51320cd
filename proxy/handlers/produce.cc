// Produce to virtual partitions (DESIGN.md section 2, "Produce"): every record gets the tag
// of its virtual partition (uncompressed batches spliced, compressed ones recompressed with
// their codec), and entries whose physical partitions collide go out as successive physical
// requests on the same connection (a broker keeps only the last entry for a partition named
// twice). The answers are merged back in the client's order with its partition numbers.
// A request that names no mapped topic is forwarded unchanged.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "protocol/record_batch.h"
#include "protocol/segmented_reader.h"
#include "protocol/tag_rewrite.h"
#include "proxy/exchange.h"
#include "proxy/exchange_messages.h"
#include "proxy/handlers.h"
#include "proxy/shard_server.h"
#include "remap/produce_plan.h"
#include "remap/producer_aliases.h"
#include "remap/txn_sequences.h"

namespace kpp::handlers {
namespace {

namespace messages = protocol::messages;
using reactor::byte_slice;

struct partition_view {
    int32_t index = 0;
    bool records_null = true;
    size_t records_at = 0;  // offset in the whole request
    size_t records_bytes = 0;
};

struct topic_view {
    std::string_view name;
    std::vector<partition_view> partitions;
};

struct produce_view {
    std::optional<std::string_view> transactional_id;
    int16_t acks = 0;
    int32_t timeout_ms = 0;
    std::vector<topic_view> topics;
};

bool parse_produce(const client_request& request, produce_view& view) {
    int16_t version = request.header.fixed.api_version;
    bool flexible = version >= 9;
    std::span<const std::byte> whole = request.whole.span();
    protocol::wire_reader reader(request.body());
    view.transactional_id = reader.read_string(flexible, true);
    view.acks = reader.read_int16();
    view.timeout_ms = reader.read_int32();
    int32_t topics = reader.read_array_length(flexible, false);
    for (int32_t t = 0; t < topics && reader.ok(); ++t) {
        topic_view topic;
        topic.name = reader.read_string(flexible, false).value_or(std::string_view{});
        int32_t partitions = reader.read_array_length(flexible, false);
        for (int32_t p = 0; p < partitions && reader.ok(); ++p) {
            partition_view partition;
            partition.index = reader.read_int32();
            auto records = reader.read_bytes_field(flexible, true);
            if (records) {
                partition.records_null = false;
                partition.records_at = size_t(records->data() - whole.data());
                partition.records_bytes = records->size();
            }
            if (flexible) reader.skip_tagged_fields();
            topic.partitions.push_back(partition);
        }
        if (flexible) reader.skip_tagged_fields();
        view.topics.push_back(std::move(topic));
    }
    if (flexible) reader.skip_tagged_fields();
    return reader.ok();
}

struct entry_state {
    size_t topic = 0;        // client topic index
    int32_t partition = 0;   // as the client named it
    int32_t physical = 0;
    int round = -1;          // the physical request carrying it; -1: answered by the proxy
    int16_t local_error = 0;
    std::string local_message;
    uint32_t stats_slot = mapping_registry::no_slot;  // its topic's counters (mapped topics)
    std::vector<byte_slice> records;  // what goes upstream
    bool records_null = false;
    // Answered by the proxy from its record of an acknowledged transactional batch.
    bool local_result = false;
    int64_t local_base_offset = -1;
    int64_t local_log_append_time_ms = -1;
    int64_t local_log_start_offset = -1;
    // A transactional batch sent with a physical sequence range of the proxy's choosing.
    struct txn_send {
        std::string topic;
        int64_t producer_id = -1;
        int16_t producer_epoch = -1;
        int32_t physical_base_sequence = 0;
        bool settled = false;  // its answer (or failure) was reported to txn_sequences
    };
    std::optional<txn_send> txn;
    std::optional<int16_t> client_error;  // replaces the broker's error code for the client
};

// Producer aliases a held request waits for, filled in by the resolver's callbacks.
struct alias_answer {
    int16_t error = 0;
    alias_producer alias;
};
using alias_answers = std::map<alias_key, std::optional<alias_answer>>;

// Everything a Produce request to mapped topics needs until it is sent: a request held for
// producer aliases keeps referencing its receive buffers, nothing is copied.
struct produce_input {
    byte_slice whole;
    int16_t version = 0;
    byte_slice header_tail;
    produce_view view;
    std::vector<const partition_view*> partitions;  // per entry, in the flattened order
    produce_plan plan;
};

class produce_exchange final : public request_exchange {
public:
    produce_exchange(produce_input input, std::vector<std::string> topic_names, std::vector<entry_state> entries)
        : input_(std::move(input)), version_(input_.version), topic_names_(std::move(topic_names)),
          entries_(std::move(entries)) {}
    // Sends whose answer never came (the connection went away) failed, retriably: their
    // ranges are sent again, in order, when the client retries.
    ~produce_exchange() override;

    bool on_response(exchange_env& env, protocol::frame&& response) override;
    bool on_event(exchange_env& env) override;
    std::vector<byte_slice> build(exchange_env& env);
    // Tags and sends the physical requests; true when nothing went upstream (the answer is
    // then complete: every entry was answered by the proxy).
    bool dispatch(exchange_env& env);
    // Waits in the session's queue until the aliases are known and every earlier held
    // Produce has been sent.
    void hold(exchange_env& env, std::shared_ptr<alias_answers> aliases);
    void use_aliases(std::shared_ptr<alias_answers> aliases) { aliases_ = std::move(aliases); }

private:
    // Once its turn came: asks the broker about transactional streams this instance has no
    // state for (true: a DescribeProducers went out, its answer comes to on_response).
    bool check_streams(exchange_env& env);
    void apply_check(exchange_env& env, protocol::frame&& response);
    // Leaves the session's queue and sends; true when answered without the broker.
    bool proceed(exchange_env& env);
    produce_input input_;
    int16_t version_;
    std::vector<std::string> topic_names_;
    std::vector<entry_state> entries_;
    std::vector<std::optional<messages::produce_response>> answers_;
    size_t received_ = 0;
    // Reports one round's answers for its transactional batches to the core's state.
    void settle_transactions(exchange_env& env, size_t round, const messages::produce_response* answer);

    std::shared_ptr<alias_answers> aliases_;  // null: nothing to patch
    bool held_ = false;
    bool checked_ = false;   // check_streams ran
    bool checking_ = false;  // its DescribeProducers is in flight
    // (topic index, physical partition) -> the transactional producers (id, epoch) asked about
    std::map<std::pair<size_t, int32_t>, std::set<std::pair<int64_t, int16_t>>> asked_;
    // What the broker answered DescribeProducers with for a partition, when not 0: the
    // entries of that partition get it (the client retries).
    std::map<std::pair<size_t, int32_t>, int16_t> check_errors_;
    shared_txn_sequences* transactions_ = nullptr;  // set once a transactional batch went out
};

produce_exchange::~produce_exchange() {
    if (transactions_ == nullptr) return;
    for (entry_state& entry : entries_) {
        if (!entry.txn || entry.txn->settled) continue;
        txn_stream_key key{entry.txn->producer_id, entry.txn->producer_epoch, entry.txn->topic, entry.physical};
        transactions_->lock()->on_failed(key, entry.txn->physical_base_sequence, 13 /* NETWORK_EXCEPTION */, true);
    }
}

bool txn_error_retriable(int16_t error) {
    switch (error) {
        case 5:   // LEADER_NOT_AVAILABLE
        case 6:   // NOT_LEADER_OR_FOLLOWER
        case 7:   // REQUEST_TIMED_OUT
        case 13:  // NETWORK_EXCEPTION
        case 19:  // NOT_ENOUGH_REPLICAS
        case 20:  // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        case 56:  // KAFKA_STORAGE_ERROR
        case 74:  // FENCED_LEADER_EPOCH
        case 75:  // UNKNOWN_LEADER_EPOCH
            return true;
        default:
            return false;
    }
}

void produce_exchange::settle_transactions(exchange_env& env, size_t round, const messages::produce_response* answer) {
    if (transactions_ == nullptr) return;
    for (entry_state& entry : entries_) {
        if (!entry.txn || entry.txn->settled || entry.round != int(round)) continue;
        entry.txn->settled = true;
        txn_stream_key key{entry.txn->producer_id, entry.txn->producer_epoch, entry.txn->topic, entry.physical};
        const messages::produce_response::responses_element::partition_responses_element* found = nullptr;
        if (answer) {
            for (const auto& topic : answer->responses) {
                if (topic.name != topic_names_[entry.topic]) continue;
                for (const auto& partition : topic.partition_responses)
                    if (partition.index == entry.physical) found = &partition;
            }
        }
        int16_t error = found ? found->error_code : int16_t(exchange_util::unknown_server_error);
        // DUPLICATE_SEQUENCE_NUMBER: written before (older brokers say so instead of
        // answering the original offset).
        if (found && (error == 0 || error == 46)) {
            transactions_->lock()->on_acknowledged(key, entry.txn->physical_base_sequence, found->base_offset,
                                           found->log_append_time_ms, found->log_start_offset);
            continue;
        }
        bool retriable = !found || txn_error_retriable(error);
        txn_failure failure =
            transactions_->lock()->on_failed(key, entry.txn->physical_base_sequence, error, retriable);
        // The broker refused a range behind one that failed first: the client only has to
        // send it again, the proxy keeps its range and sends it in order.
        if (failure.effect != txn_failure_effect::poisoned && !retriable) entry.client_error = int16_t(19);
        if (!found) entry.client_error = int16_t(19);
        if (failure.effect == txn_failure_effect::resend) bump(env.metrics.txn_resends, failure.affected.size() + 1);
    }
}

bool produce_exchange::on_response(exchange_env& env, protocol::frame&& response) {
    if (checking_) {
        checking_ = false;
        apply_check(env, std::move(response));
        if (!proceed(env)) return false;
        answer = build(env);
        return true;
    }
    size_t round = received_++;
    auto body = exchange_util::response_body(response, protocol::api_key::produce, version_);
    messages::produce_response decoded;
    if (body && messages::decode(decoded, version_, body->span()) == protocol::wire_error::none)
        answers_[round] = std::move(decoded);
    else
        spdlog::warn("malformed Produce v{} response from the broker for {}: partitions answered UNKNOWN_SERVER_ERROR",
                     version_, env.peer);
    settle_transactions(env, round, answers_[round] ? &*answers_[round] : nullptr);
    if (received_ < answers_.size()) return false;
    answer = build(env);
    return true;
}

void produce_exchange::hold(exchange_env& env, std::shared_ptr<alias_answers> aliases) {
    aliases_ = std::move(aliases);
    held_ = true;
    env.held_produces.push_back(env.sequence);
}

bool produce_exchange::on_event(exchange_env& env) {
    if (!held_ || checking_ || env.held_produces.empty() || env.held_produces.front() != env.sequence) return false;
    for (const auto& [key, answer] : *aliases_)
        if (!answer) return false;
    if (!checked_ && check_streams(env)) return false;
    if (!proceed(env)) return false;
    answer = build(env);
    return true;
}

bool produce_exchange::proceed(exchange_env& env) {
    held_ = false;
    env.held_produces.pop_front();
    if (!env.held_produces.empty()) {
        // Never inside this call: the next one may complete its slot at once.
        env.server.aliases().defer(exchange_waker(env.session, env.held_produces.front()));
    }
    return dispatch(env);
}

std::vector<byte_slice> produce_exchange::build(exchange_env& env) {
    messages::produce_response out;
    std::map<int32_t, messages::produce_response::node_endpoints_element> nodes;
    for (const auto& round : answers_) {
        if (!round) continue;
        out.throttle_time_ms = std::max(out.throttle_time_ms, round->throttle_time_ms);
        for (const auto& node : round->node_endpoints) nodes[node.node_id] = node;
    }
    for (size_t t = 0; t < topic_names_.size(); ++t) {
        out.responses.emplace_back();
        out.responses.back().name = topic_names_[t];
    }
    for (const entry_state& entry : entries_) {
        auto& topic = out.responses[entry.topic];
        messages::produce_response::responses_element::partition_responses_element result;
        result.index = entry.partition;
        result.base_offset = -1;
        result.log_append_time_ms = -1;
        result.log_start_offset = -1;
        if (entry.round < 0) {
            result.error_code = entry.local_error;
            if (!entry.local_message.empty()) result.error_message = entry.local_message;
            if (entry.local_result) {
                result.base_offset = entry.local_base_offset;
                result.log_append_time_ms = entry.local_log_append_time_ms;
                result.log_start_offset = entry.local_log_start_offset;
            }
            topic.partition_responses.push_back(std::move(result));
            continue;
        }
        result.error_code = exchange_util::unknown_server_error;
        if (const auto& round = answers_[size_t(entry.round)]) {
            for (const auto& answered_topic : round->responses) {
                if (answered_topic.name != topic_names_[entry.topic]) continue;
                for (const auto& answered : answered_topic.partition_responses) {
                    if (answered.index != entry.physical) continue;
                    result = answered;
                    result.index = entry.partition;
                }
            }
        }
        if (entry.client_error) {
            result.error_code = *entry.client_error;
            result.error_message = "sent again by the proxy in sequence order; retry";
        }
        topic.partition_responses.push_back(std::move(result));
    }
    for (auto& [node_id, node] : nodes) {
        auto port = broker_port_of(env.server.config().listen, node_id);
        node.host = env.server.advertised().host;
        node.port = port ? int32_t(*port) : 0;
        out.node_endpoints.push_back(node);
    }
    protocol::wire_writer writer;
    messages::encode(out, version_, writer);
    return exchange_util::response_pieces(protocol::api_key::produce, version_, std::move(writer.bytes()));
}

// The producer alias a batch needs (DESIGN.md section 2): a batch of an idempotent producer
// (producer id set, not transactional: transactions are renumbered instead) going to a
// virtual partition of group g = v / P >= 1. nullopt: the batch keeps its producer.
std::optional<alias_key> alias_key_of(std::span<const std::byte> batch, int32_t virtual_partition,
                                      int32_t physical_partitions) {
    if (physical_partitions <= 0 || virtual_partition < physical_partitions) return std::nullopt;
    if (protocol::validate_batch_header(batch) != protocol::batch_error::none) return std::nullopt;
    protocol::record_batch_view view(batch);
    if (view.producer_id() < 0 || view.is_transactional() || view.is_control()) return std::nullopt;
    return alias_key{view.producer_id(), view.producer_epoch(), virtual_partition / physical_partitions};
}

// Tags every batch of one partition's records; false (with the entry's error set) when a
// batch cannot be tagged.
// The physical range a transactional batch goes out with (DESIGN.md section 2,
// "Transactional producers"), or nullopt with the entry answered by the proxy: a retry of an
// acknowledged batch from the record, a batch that must wait for an earlier range with a
// retriable error, a refused one with the error a broker would give.
std::optional<int32_t> renumber(exchange_env& env, const std::string& topic, const protocol::record_batch_view& view,
                                entry_state& entry) {
    int64_t now_ms = int64_t(env.now_ns / 1'000'000);
    env.server.shared_transactions().expire(now_ms);
    auto locked = env.server.transactions();
    txn_sequences& transactions = *locked;
    txn_stream_key key{view.producer_id(), view.producer_epoch(), topic, entry.physical};
    txn_assignment assigned = transactions.assign(key, entry.partition, view.base_sequence(),
                                                  view.last_offset_delta() + 1, now_ms, true);
    switch (assigned.outcome) {
        case txn_assign_outcome::fresh:
        case txn_assign_outcome::retry_in_flight: {
            std::optional<txn_batch> next = transactions.next_to_send(key);
            if (next && next->physical_base_sequence == assigned.physical_base_sequence &&
                transactions.on_sent(key, assigned.physical_base_sequence)) {
                bump(assigned.outcome == txn_assign_outcome::fresh ? env.metrics.txn_renumbered_batches
                                                                   : env.metrics.txn_resends);
                entry.txn = entry_state::txn_send{topic, view.producer_id(), view.producer_epoch(),
                                                  assigned.physical_base_sequence, false};
                return assigned.physical_base_sequence;
            }
            if (assigned.outcome == txn_assign_outcome::fresh) {
                // Not reachable with only_if_sendable; never leave a taken range unsent.
                transactions.on_failed(key, assigned.physical_base_sequence, -1, false);
            }
            bump(env.metrics.txn_held_back);
            entry.local_error = txn_sequences::error_not_enough_replicas;
            entry.local_message = "an earlier batch of this physical partition goes to the broker first; retry";
            return std::nullopt;
        }
        case txn_assign_outcome::wait:
            bump(env.metrics.txn_held_back);
            entry.local_error = assigned.error_code;
            entry.local_message = "earlier batches of this physical partition are still in flight; retry";
            return std::nullopt;
        case txn_assign_outcome::retry_acknowledged:
            bump(env.metrics.txn_retries_answered);
            entry.local_error = 0;
            entry.local_result = true;
            entry.local_base_offset = assigned.result.base_offset;
            entry.local_log_append_time_ms = assigned.result.log_append_time_ms;
            entry.local_log_start_offset = assigned.result.log_start_offset;
            return std::nullopt;
        case txn_assign_outcome::no_room:
            bump(env.metrics.txn_held_back);
            entry.local_error = assigned.error_code;
            entry.local_message = "too many unacknowledged batches; retry";
            return std::nullopt;
        default:
            bump(env.metrics.txn_refused);
            entry.local_error = assigned.error_code;
            entry.local_message = assigned.outcome == txn_assign_outcome::unknown_stream
                                      ? "this proxy instance holds no sequence state for the open transaction on "
                                        "this partition; abort and retry the transaction"
                                      : "refused by the proxy's transactional sequence check";
            return std::nullopt;
    }
}

// Runs of a client's record bytes shorter than this are copied into the rewritten batch
// instead of referenced: a reference costs a slice with its count, an iovec and a CRC call,
// more than copying a few hundred bytes; values of this size and larger stay referenced.
constexpr uint32_t copy_record_runs_below_bytes = 512;

bool tag_records(exchange_env& env, const byte_slice& whole, const partition_view& partition, int32_t virtual_partition,
                 int32_t physical_partitions, const alias_answers* aliases, const std::string& topic, bool acks,
                 entry_state& entry) {
    byte_slice field{whole.owner, uint32_t(whole.offset + partition.records_at), uint32_t(partition.records_bytes)};
    protocol::batch_iterator batches(field.span());
    protocol::batch_entry batch;
    protocol::tag_rewrite_options options;
    options.tag_key = env.remap.tag_key;
    options.reference_bytes_min = copy_record_runs_below_bytes;
    size_t batch_count = 0;
    bool any_transactional = false;
    {
        protocol::batch_iterator counting(field.span());
        protocol::batch_entry counted;
        while (counting.next(counted)) {
            ++batch_count;
            if (counted.magic == 2 && protocol::validate_batch_header(counted.bytes) == protocol::batch_error::none) {
                protocol::record_batch_view view(counted.bytes);
                any_transactional |= view.is_transactional() && !view.is_control() && view.producer_id() >= 0;
            }
        }
        if (counting.error() != protocol::batch_error::none || counting.partial()) {
            entry.local_error = exchange_util::corrupt_message;
            entry.local_message = "records field does not end on a record batch boundary";
            return false;
        }
    }
    if (any_transactional && acks && batch_count != 1) {
        entry.local_error = txn_sequences::error_invalid_record;
        entry.local_message = "a transactional Produce carries exactly one record batch per partition";
        return false;
    }
    uint64_t records_tagged = 0, bytes_tagged = 0;
    while (batches.next(batch)) {
        if (batch.magic != 2) {
            entry.local_error = exchange_util::corrupt_message;
            entry.local_message = "record batches older than magic 2 cannot carry a virtual partition tag";
            return false;
        }
        byte_slice one{field.owner, uint32_t(field.offset + batch.offset_in_field), uint32_t(batch.bytes.size())};
        options.producer.reset();
        if (any_transactional && acks && protocol::validate_batch_header(batch.bytes) == protocol::batch_error::none) {
            protocol::record_batch_view view(batch.bytes);
            if (view.is_transactional() && !view.is_control() && view.producer_id() >= 0) {
                std::optional<int32_t> sequence = renumber(env, topic, view, entry);
                if (!sequence) return false;
                options.producer = protocol::producer_patch{view.producer_id(), view.producer_epoch(), *sequence};
            }
        }
        if (auto key = alias_key_of(batch.bytes, virtual_partition, physical_partitions); key && aliases) {
            auto found = aliases->find(*key);
            if (found == aliases->end() || !found->second || found->second->error != 0) {
                entry.local_error = alias_resolver::unavailable_error;
                entry.local_message = "the proxy could not obtain a producer id for this virtual partition's "
                                      "idempotent stream; retry";
                return false;
            }
            options.producer = protocol::producer_patch{found->second->alias.producer_id,
                                                        found->second->alias.producer_epoch, std::nullopt};
            bump(env.metrics.produce_alias_batches);
        }
        auto rewritten = protocol::rewrite_batch_tag(one, virtual_partition, options);
        if (!rewritten.ok()) {
            entry.local_error = exchange_util::corrupt_message;
            entry.local_message = std::string("record batch refused by the proxy: ") + protocol::to_string(rewritten.error);
            if (entry.txn) {
                // Its range was taken and cannot be sent: the stream cannot go on without a gap.
                txn_stream_key key{entry.txn->producer_id, entry.txn->producer_epoch, entry.txn->topic, entry.physical};
                env.server.transactions()->on_failed(key, entry.txn->physical_base_sequence, entry.local_error, false);
                entry.txn.reset();
            }
            return false;
        }
        bump(env.metrics.produce_tagged_batches);
        records_tagged += uint64_t(std::max(protocol::record_batch_view(batch.bytes).records_count(), 0));
        bytes_tagged += batch.bytes.size();
        for (auto& piece : rewritten.pieces) entry.records.push_back(std::move(piece));
    }
    if (batches.error() != protocol::batch_error::none || batches.partial()) {
        entry.local_error = exchange_util::corrupt_message;
        entry.local_message = "records field does not end on a record batch boundary";
        return false;
    }
    topic_counters& counted = env.metrics.topic(entry.stats_slot);
    bump(counted.produced_records, records_tagged);
    bump(counted.produced_bytes, bytes_tagged);
    return true;
}

void write_round(piece_builder& out, const produce_view& view, int16_t version,
                 const std::vector<std::string>& topic_names, const std::vector<entry_state*>& entries) {
    bool flexible = version >= 9;
    auto& writer = out.writer();
    writer.write_string(view.transactional_id, flexible);
    writer.write_int16(view.acks);
    writer.write_int32(view.timeout_ms);
    // Topics in order of first appearance, each with its entries of this round.
    std::vector<size_t> topic_order;
    for (const entry_state* entry : entries)
        if (std::find(topic_order.begin(), topic_order.end(), entry->topic) == topic_order.end())
            topic_order.push_back(entry->topic);
    writer.write_array_length(int32_t(topic_order.size()), flexible);
    for (size_t topic : topic_order) {
        writer.write_string(topic_names[topic], flexible);
        int32_t count = int32_t(std::count_if(entries.begin(), entries.end(),
                                              [&](const entry_state* entry) { return entry->topic == topic; }));
        writer.write_array_length(count, flexible);
        for (const entry_state* entry : entries) {
            if (entry->topic != topic) continue;
            writer.write_int32(entry->physical);
            if (entry->records_null) {
                if (flexible)
                    writer.write_unsigned_varint(0);
                else
                    writer.write_int32(-1);
            } else {
                size_t size = 0;
                for (const auto& piece : entry->records) size += piece.length;
                if (flexible)
                    writer.write_unsigned_varint(uint32_t(size + 1));
                else
                    writer.write_int32(int32_t(size));
                out.append(entry->records);
            }
            if (flexible) out.writer().write_empty_tagged_fields();
        }
        if (flexible) out.writer().write_empty_tagged_fields();
    }
    if (flexible) out.writer().write_empty_tagged_fields();
}

}  // namespace

bool produce_names_mapped_topic(const remap_state& remap, const protocol::frame& request) {
    std::vector<std::span<const std::byte>> pieces;
    pieces.reserve(request.pieces.size());
    for (const auto& piece : request.pieces) pieces.push_back(piece.span());
    protocol::segmented_reader reader(pieces);
    reader.read_int16();  // api key
    int16_t version = reader.read_int16();
    reader.read_int32();  // correlation id
    bool flexible = version >= 9;
    auto skip_length_prefixed = [&](bool compact, bool int16_length) {
        int64_t length = compact ? int64_t(reader.read_unsigned_varint()) - 1
                                 : (int16_length ? reader.read_int16() : reader.read_int32());
        if (length > 0) reader.skip(size_t(length));
    };
    auto skip_tagged = [&] {
        uint32_t count = reader.read_unsigned_varint();
        for (uint32_t index = 0; index < count && reader.ok(); ++index) {
            reader.read_unsigned_varint();
            reader.skip(reader.read_unsigned_varint());
        }
    };
    auto array_length = [&] {
        int64_t count = flexible ? int64_t(reader.read_unsigned_varint()) - 1 : reader.read_int32();
        return count > int64_t(reader.remaining()) ? int64_t(0) : count;
    };
    skip_length_prefixed(false, true);  // client id: a plain string even in header v2
    if (flexible) skip_tagged();
    if (version >= 3) skip_length_prefixed(flexible, true);  // transactional id
    reader.read_int16();  // acks
    reader.read_int32();  // timeout
    int64_t topics = array_length();
    for (int64_t t = 0; t < topics && reader.ok(); ++t) {
        int64_t name_length = flexible ? int64_t(reader.read_unsigned_varint()) - 1 : reader.read_int16();
        std::string name;
        if (name_length > 0 && size_t(name_length) <= reader.remaining()) reader.read_into(size_t(name_length), name);
        if (reader.ok() && remap.mappings.lookup(name).remapped()) return true;
        int64_t partitions = array_length();
        for (int64_t p = 0; p < partitions && reader.ok(); ++p) {
            reader.read_int32();
            skip_length_prefixed(flexible, false);  // records
            if (flexible) skip_tagged();
        }
        if (flexible) skip_tagged();
    }
    // A request that does not parse is the broker's to judge, as before (validated already).
    return false;
}

// The transactional streams of the request this instance has no state for, by (topic index,
// physical partition): their first batch here needs the broker's view first (DESIGN.md
// section 2: an instance that meets an open transaction it holds no state for makes the
// client abort; it never guesses a sequence).
std::map<std::pair<size_t, int32_t>, std::set<std::pair<int64_t, int16_t>>> unknown_streams(
    exchange_env& env, const produce_input& input, const std::vector<std::string>& topic_names,
    const std::vector<entry_state>& entries) {
    std::map<std::pair<size_t, int32_t>, std::set<std::pair<int64_t, int16_t>>> unknown;
    if (input.view.acks == 0) return unknown;
    for (const auto& round : input.plan.rounds)
        for (const planned_entry& planned : round) {
            const partition_view& partition = *input.partitions[planned.entry_index];
            if (!planned.tag || partition.records_null) continue;
            const entry_state& entry = entries[planned.entry_index];
            auto field = input.whole.span().subspan(partition.records_at, partition.records_bytes);
            protocol::batch_iterator batches(field);
            protocol::batch_entry batch;
            while (batches.next(batch)) {
                if (batch.magic != 2 || protocol::validate_batch_header(batch.bytes) != protocol::batch_error::none)
                    continue;
                protocol::record_batch_view view(batch.bytes);
                if (!view.is_transactional() || view.is_control() || view.producer_id() < 0) continue;
                txn_stream_key key{view.producer_id(), view.producer_epoch(), topic_names[entry.topic],
                                   planned.physical_partition};
                if (!env.server.transactions()->knows(key))
                    unknown[{entry.topic, planned.physical_partition}].insert({view.producer_id(), view.producer_epoch()});
            }
        }
    return unknown;
}

bool produce_exchange::check_streams(exchange_env& env) {
    checked_ = true;
    auto version = env.server.store().describe_producers_version();
    if (!version) return false;
    asked_ = unknown_streams(env, input_, topic_names_, entries_);
    if (asked_.empty()) return false;
    messages::describe_producers_request request;
    std::map<size_t, size_t> slot;
    for (const auto& [where, producers] : asked_) {
        auto found = slot.find(where.first);
        if (found == slot.end()) {
            found = slot.emplace(where.first, request.topics.size()).first;
            request.topics.emplace_back().name = topic_names_[where.first];
        }
        request.topics[found->second].partition_indexes.push_back(where.second);
    }
    // DescribeProducers is flexible from v0: its header carries tagged fields, which the
    // header of a Produce below v9 does not have.
    byte_slice header_tail = input_.header_tail;
    if (version_ < 9) {
        std::vector<std::byte> tail(header_tail.span().begin(), header_tail.span().end());
        tail.push_back(std::byte{0});
        uint32_t length = uint32_t(tail.size());
        header_tail = byte_slice{reactor::shared_bytes::copy_of(tail), 0, length};
    }
    exchange_util::send_message(env, header_tail, 61 /* DescribeProducers */, *version, request);
    checking_ = true;
    return true;
}

void produce_exchange::apply_check(exchange_env& env, protocol::frame&& response) {
    auto version = env.server.store().describe_producers_version();
    auto decoded = exchange_util::decode_response<messages::describe_producers_response>(response, 61, *version);
    int64_t now_ms = int64_t(env.now_ns / 1'000'000);
    auto locked = env.server.transactions();
    txn_sequences& transactions = *locked;
    for (const auto& [where, producers] : asked_) {
        const messages::describe_producers_response::topics_element::partitions_element* answered = nullptr;
        if (decoded)
            for (const auto& topic : decoded->topics)
                if (topic.name == topic_names_[where.first])
                    for (const auto& partition : topic.partitions)
                        if (partition.partition_index == where.second) answered = &partition;
        if (answered && answered->error_code == 29 /* TOPIC_AUTHORIZATION_FAILED */) {
            // DescribeProducers needs READ on the topic, which a producer's principal often
            // lacks: without the broker's view the ranges start at 0 (README: the residual risk).
            spdlog::warn("DescribeProducers of {}-{} is not authorized for {}: transactional ranges there start at 0 "
                         "without the broker's view of the producer",
                         topic_names_[where.first], where.second, env.peer);
            for (const auto& [producer_id, producer_epoch] : producers)
                transactions.start_at({producer_id, producer_epoch, topic_names_[where.first], where.second}, 0,
                                      now_ms);
            continue;
        }
        if (!answered || answered->error_code != 0) {
            // Retriable for the client (NOT_LEADER_OR_FOLLOWER and the like come through).
            int16_t error = answered ? answered->error_code : int16_t(txn_sequences::error_not_enough_replicas);
            check_errors_[where] = error;
            spdlog::warn("DescribeProducers of {}-{} for a transactional producer answered error {} to {}",
                         topic_names_[where.first], where.second, error, env.peer);
            continue;
        }
        for (const auto& [producer_id, producer_epoch] : producers) {
            txn_stream_key key{producer_id, producer_epoch, topic_names_[where.first], where.second};
            const auto* state = static_cast<const messages::describe_producers_response::topics_element::
                                                partitions_element::active_producers_element*>(nullptr);
            for (const auto& producer : answered->active_producers)
                if (producer.producer_id == producer_id) state = &producer;
            if (state && state->producer_epoch == producer_epoch && state->current_txn_start_offset >= 0) {
                transactions.mark_unknown(key);
                bump(env.metrics.txn_takeovers);
                spdlog::warn("producer {} epoch {} has an open transaction on {}-{} that this proxy instance holds no "
                             "sequence state for: its batches are refused so that the client aborts and retries",
                             producer_id, producer_epoch, topic_names_[where.first], where.second);
            } else if (state && state->producer_epoch == producer_epoch) {
                transactions.start_at(key, txn_sequence_after(state->last_sequence, 1), now_ms);
            } else {
                transactions.start_at(key, 0, now_ms);  // the broker has no state for this epoch
            }
        }
    }
}

bool produce_exchange::dispatch(exchange_env& env) {
    std::vector<std::vector<entry_state*>> rounds;
    for (const auto& round : input_.plan.rounds) {
        std::vector<entry_state*> sent;
        for (const planned_entry& planned : round) {
            entry_state& entry = entries_[planned.entry_index];
            const partition_view& partition = *input_.partitions[planned.entry_index];
            entry.physical = planned.physical_partition;
            entry.records_null = partition.records_null;
            if (auto failed = check_errors_.find({entry.topic, entry.physical}); failed != check_errors_.end()) {
                entry.local_error = failed->second;
                entry.local_message = "the proxy could not learn this transactional producer's position on the "
                                      "partition; retry";
                bump(env.metrics.partition_errors_local);
                continue;
            }
            if (!partition.records_null) {
                if (planned.tag) {
                    int32_t physical_partitions = env.remap.mappings.lookup(topic_names_[entry.topic]).physical_partitions;
                    if (!tag_records(env, input_.whole, partition, entry.partition, physical_partitions, aliases_.get(),
                                     topic_names_[entry.topic], input_.view.acks != 0, entry)) {
                        if (!entry.local_result) bump(env.metrics.partition_errors_local);
                        continue;
                    }
                    if (entry.txn) transactions_ = &env.server.shared_transactions();
                } else {
                    entry.records.push_back(byte_slice{input_.whole.owner,
                                                       uint32_t(input_.whole.offset + partition.records_at),
                                                       uint32_t(partition.records_bytes)});
                }
            }
            if (planned.tag) bump(env.metrics.topic(entry.stats_slot).partitions_remapped);
            sent.push_back(&entry);
        }
        if (sent.empty()) continue;
        for (entry_state* entry : sent) entry->round = int(rounds.size());
        rounds.push_back(std::move(sent));
    }
    bool expects_response = input_.view.acks != 0;
    if (rounds.size() > 1) bump(env.metrics.produce_extra_requests, rounds.size() - 1);
    for (const auto& round : rounds) {
        piece_builder body;
        write_round(body, input_.view, version_, topic_names_, round);
        send_upstream(env, protocol::api_key::produce, version_, input_.header_tail, body.finish(), expects_response);
    }
    answers_.resize(rounds.size());
    return rounds.empty();
}

// The aliases the request's batches need (none for acks=0: the broker refuses idempotent
// batches without acks=all, and there is no slot to wait in).
std::set<alias_key> needed_aliases(exchange_env& env, const produce_input& input,
                                   const std::vector<std::string>& topic_names, const std::vector<entry_state>& entries) {
    std::set<alias_key> keys;
    if (input.view.acks == 0) return keys;
    for (const auto& round : input.plan.rounds)
        for (const planned_entry& planned : round) {
            const partition_view& partition = *input.partitions[planned.entry_index];
            if (!planned.tag || partition.records_null) continue;
            const entry_state& entry = entries[planned.entry_index];
            int32_t physical_partitions = env.remap.mappings.lookup(topic_names[entry.topic]).physical_partitions;
            if (entry.partition < physical_partitions) continue;
            auto field = input.whole.span().subspan(partition.records_at, partition.records_bytes);
            protocol::batch_iterator batches(field);
            protocol::batch_entry batch;
            while (batches.next(batch))
                if (auto key = alias_key_of(batch.bytes, entry.partition, physical_partitions)) keys.insert(*key);
        }
    return keys;
}

exchange_start start_produce(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    if (version < 3) return exchange_util::refuse_old_version_if_mapped(env, request);
    produce_input input{request.whole, version, request.header_tail, {}, {}, {}};
    if (!parse_produce(request, input.view)) return start;  // validated already; forwarding lets the broker judge
    // find_exchange_starter saw a mapped topic in it; each topic's mapping and counter slot
    // are looked up once here.
    std::vector<std::string> topic_names;
    std::vector<produce_entry> planned_input;
    std::vector<entry_state> entries;
    bool any_mapped = false;
    auto assign_slot = [&](std::string_view name) { return env.metrics.topic_slot(name); };
    for (size_t t = 0; t < input.view.topics.size(); ++t) {
        topic_names.emplace_back(input.view.topics[t].name);
        auto counted = env.remap.mappings.lookup_counted(input.view.topics[t].name, assign_slot);
        any_mapped = any_mapped || counted.mapping.remapped();
        uint32_t stats_slot = counted.slot;
        for (const auto& partition : input.view.topics[t].partitions) {
            planned_input.push_back({input.view.topics[t].name, partition.index});
            entry_state entry;
            entry.topic = t;
            entry.partition = partition.index;
            entry.stats_slot = stats_slot;
            entries.push_back(std::move(entry));
            input.partitions.push_back(&partition);
        }
    }
    if (!any_mapped) return start;
    input.plan = plan_produce(planned_input, [&](std::string_view topic) { return env.remap.mappings.lookup(topic); });
    for (size_t index : input.plan.rejected) {
        entries[index].local_error = exchange_util::unknown_topic_or_partition;
        entries[index].local_message = "virtual partition " + std::to_string(entries[index].partition) +
                                       " does not exist in topic " + topic_names[entries[index].topic];
        bump(env.metrics.partition_errors_local);
    }

    std::set<alias_key> keys = needed_aliases(env, input, topic_names, entries);
    auto aliases = std::make_shared<alias_answers>();
    bool all_known = true;
    for (const alias_key& key : keys) {
        if (auto known = env.server.aliases().lookup(key)) {
            (*aliases)[key] = alias_answer{0, *known};
        } else {
            (*aliases)[key] = std::nullopt;
            all_known = false;
        }
    }
    bool expects_response = input.view.acks != 0;
    bool needs_check = env.server.store().describe_producers_version().has_value() &&
                       !unknown_streams(env, input, topic_names, entries).empty();
    auto exchange = std::make_unique<produce_exchange>(std::move(input), std::move(topic_names), std::move(entries));
    if (!all_known || needs_check || (expects_response && !env.held_produces.empty())) {
        exchange->hold(env, aliases);
        exchange_waker wake(env);
        for (auto& entry : *aliases) {
            if (entry.second) continue;
            // A named copy, not a structured binding: clang before 16 cannot capture those.
            auto key = entry.first;
            env.server.aliases().resolve(key, [aliases, key, wake](int16_t error, alias_producer alias) {
                (*aliases)[key] = alias_answer{error, alias};
                wake();
            });
        }
        // Its turn may have come already (aliases known, queue empty before it).
        if (all_known) env.server.aliases().defer(wake);
        start.what = exchange_start::kind::pending;
        start.exchange = std::move(exchange);
        return start;
    }
    if (!keys.empty()) exchange->use_aliases(std::move(aliases));
    bool answered_locally = exchange->dispatch(env);
    if (!expects_response) {
        start.what = exchange_start::kind::no_answer;
        return start;
    }
    if (answered_locally) {
        start.what = exchange_start::kind::answered;
        start.answer = exchange->build(env);
        return start;
    }
    start.what = exchange_start::kind::pending;
    start.exchange = std::move(exchange);
    return start;
}

}  // namespace kpp::handlers
