#include "proxy/offset_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "protocol/record_batch.h"
#include "protocol/wire.h"
#include "proxy/exchange_messages.h"
#include "proxy/shard_server.h"
#include "remap/txn_sequences.h"

namespace kpp {
namespace {

namespace messages = protocol::messages;

constexpr std::string_view client_id = "kafka-partition-proxy";
constexpr int16_t network_exception = 13;
constexpr int16_t request_timed_out = 7;
constexpr int attempts_max = 4;
constexpr int32_t read_bytes_max = 64 << 20;
constexpr int32_t bootstrap_node = -1;
constexpr size_t txn_streams_max = 65536;

// Errors after which the leaders are looked up again and the request retried.
bool leader_changed(int16_t error) {
    switch (error) {
        case 3:   // UNKNOWN_TOPIC_OR_PARTITION (metadata not propagated yet)
        case 5:   // LEADER_NOT_AVAILABLE
        case 6:   // NOT_LEADER_OR_FOLLOWER
        case 7:   // REQUEST_TIMED_OUT
        case 13:  // NETWORK_EXCEPTION (the proxy's own: the connection failed)
        case 19:  // NOT_ENOUGH_REPLICAS
        case 20:  // NOT_ENOUGH_REPLICAS_AFTER_APPEND (a retry may duplicate; the store is idempotent)
        case 74:  // FENCED_LEADER_EPOCH
        case 75:  // UNKNOWN_LEADER_EPOCH
            return true;
        default:
            return false;
    }
}

}  // namespace

// One broker connection of the store, with the handlers of the requests in flight on it.
class offset_store::link final : public upstream_link::owner {
public:
    link(offset_store& store, upstream_target target)
        : store_(store),
          connection_(std::make_unique<upstream_link>(store.server_.loop(), *this, std::move(target),
                                                      store.server_.config(), store.server_.metrics())) {}

    void send(int16_t api_key, int16_t version, const std::vector<std::byte>& body, response_handler handler) {
        uint64_t id = next_id_++;
        protocol::wire_writer header;
        header.write_string(client_id, false);
        if (protocol::request_header_is_flexible(api_key, version)) header.write_empty_tagged_fields();
        header.write_raw(body);
        uint32_t length = uint32_t(header.size());
        pending_.emplace(id, waiting{std::move(handler), store_.server_.loop().now_ns()});
        std::vector<reactor::byte_slice> pieces{
            reactor::byte_slice{reactor::shared_bytes::copy_of(header.bytes()), 0, length}};
        connection_->send_built(api_key, version, std::move(pieces), id, true);
    }

    bool dead() const { return dead_; }
    bool finished() const { return pending_.empty() && connection_->closed(); }
    uint64_t oldest_sent_ns() const {
        uint64_t oldest = 0;
        for (const auto& [id, entry] : pending_)
            if (oldest == 0 || entry.sent_ns < oldest) oldest = entry.sent_ns;
        return oldest;
    }
    // Gives up on the connection: every request still waiting fails with `error`.
    void abandon(int16_t error) {
        if (!dead_) {
            dead_ = true;
            connection_->close();
        }
        fail_pending(error);
    }

private:
    struct waiting {
        response_handler handler;
        uint64_t sent_ns = 0;
    };

    void on_upstream_response(protocol::frame&& response, const in_flight_request& request) override {
        auto found = pending_.find(request.sequence);
        if (found == pending_.end()) return;
        response_handler handler = std::move(found->second.handler);
        pending_.erase(found);
        handler(&response, 0);
    }
    void on_upstream_failed(const std::string& reason) override {
        spdlog::warn("offset store: {}", reason);
        dead_ = true;
        fail_pending(network_exception);
    }
    void on_upstream_closed() override {
        dead_ = true;
        fail_pending(network_exception);
    }
    void on_upstream_drained() override {}

    void fail_pending(int16_t error) {
        std::map<uint64_t, waiting> failed;
        failed.swap(pending_);
        for (auto& [id, entry] : failed) entry.handler(nullptr, error);
    }

    offset_store& store_;
    std::unique_ptr<upstream_link> connection_;
    std::map<uint64_t, waiting> pending_;
    uint64_t next_id_ = 1;
    bool dead_ = false;
};

int64_t offset_store::wall_clock_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

offset_store::offset_store(shard_server& server, offset_store_info info)
    : server_(server), info_(std::move(info)), partitions_(size_t(std::max(info_.partitions, 0))),
      leaders_(size_t(std::max(info_.partitions, 0)), -1), reap_timer_(server.loop()) {}

offset_store::~offset_store() = default;

int32_t offset_store::partition_of(std::string_view group) const {
    return offset_store_partition(group, info_.partitions);
}

void offset_store::post(std::function<void()> task) { server_.run_soon(std::move(task)); }

void offset_store::on_reap(reactor::timer&, void* context) {
    auto& store = *static_cast<offset_store*>(context);
    std::erase_if(store.retired_links_, [](const std::unique_ptr<link>& old) { return old->finished(); });
    if (!store.retired_links_.empty()) store.reap_timer_.arm_after_ms(100, &offset_store::on_reap, &store);
}

offset_store::link* offset_store::link_to(int32_t node_id) {
    auto found = links_.find(node_id);
    if (found != links_.end() && !found->second->dead()) return found->second.get();
    upstream_target target;
    if (!server_.target_for(node_id, target)) return nullptr;
    if (found != links_.end()) {
        // Never destroyed here: its callbacks may be on the stack.
        retired_links_.push_back(std::move(found->second));
        if (!reap_timer_.armed()) reap_timer_.arm_after_ms(0, &offset_store::on_reap, this);
    }
    auto fresh = std::make_unique<link>(*this, std::move(target));
    link* raw = fresh.get();
    links_[node_id] = std::move(fresh);
    return raw;
}

void offset_store::send(int32_t node_id, int16_t api_key, int16_t version, const std::vector<std::byte>& body,
                        response_handler handler) {
    link* connection = closed_ ? nullptr : link_to(node_id);
    if (!connection) {
        post([handler = std::move(handler)] { handler(nullptr, network_exception); });
        return;
    }
    connection->send(api_key, version, body, std::move(handler));
}

void offset_store::forget_leaders() { leaders_known_ = false; }

void offset_store::with_leaders(std::function<void(int16_t)> then) {
    if (leaders_known_) {
        then(0);
        return;
    }
    leader_waiters_.push_back(std::move(then));
    if (metadata_in_flight_) return;
    metadata_in_flight_ = true;
    messages::metadata_request request;
    // Before v4 naming a topic may auto-create it: ask for every topic instead.
    if (info_.metadata_version >= 4) request.topics.emplace(1, messages::metadata_request::topics_element{{}, info_.topic});
    request.allow_auto_topic_creation = false;
    protocol::wire_writer writer;
    messages::encode(request, info_.metadata_version, writer);
    send(bootstrap_node, protocol::api_key::metadata, info_.metadata_version, writer.bytes(),
         [this](protocol::frame* response, int16_t error) { on_metadata(response, error); });
}

void offset_store::on_metadata(protocol::frame* response, int16_t error) {
    metadata_in_flight_ = false;
    if (response) {
        auto decoded = exchange_util::decode_response<messages::metadata_response>(*response, protocol::api_key::metadata,
                                                                                    info_.metadata_version);
        error = unavailable_error;
        if (decoded) {
            for (const auto& topic : decoded->topics) {
                if (topic.name != info_.topic) continue;
                if (topic.error_code != 0) {
                    spdlog::warn("offset store: Metadata for {} answered error {}", info_.topic, topic.error_code);
                    break;
                }
                std::fill(leaders_.begin(), leaders_.end(), -1);
                for (const auto& partition : topic.partitions)
                    if (partition.partition_index >= 0 && size_t(partition.partition_index) < leaders_.size())
                        leaders_[size_t(partition.partition_index)] = partition.leader_id;
                bool all = std::all_of(leaders_.begin(), leaders_.end(), [](int32_t leader) { return leader >= 0; });
                if (all) error = 0;
                else spdlog::warn("offset store: some partitions of {} have no leader", info_.topic);
            }
        }
    }
    leaders_known_ = error == 0;
    std::vector<std::function<void(int16_t)>> waiters;
    waiters.swap(leader_waiters_);
    for (auto& waiter : waiters) waiter(error);
}

void offset_store::sync(int32_t partition, store_done done) {
    if (!available() || closed_ || partition < 0 || partition >= info_.partitions) {
        post([done = std::move(done)] { done(unavailable_error); });
        return;
    }
    partition_state& state = partitions_[size_t(partition)];
    state.last_used = ++use_clock_;
    if (state.reading) {
        state.next_round.push_back(std::move(done));
        return;
    }
    state.this_round.push_back(std::move(done));
    state.read_attempts = 0;
    start_read(partition);
}

void offset_store::start_read(int32_t partition) {
    partitions_[size_t(partition)].reading = true;
    with_leaders([this, partition](int16_t error) {
        if (error != 0) {
            finish_read(partition, error);
            return;
        }
        partition_state& state = partitions_[size_t(partition)];
        messages::fetch_request request;
        request.replica_id = -1;
        request.max_wait_ms = 0;
        request.min_bytes = 0;
        request.max_bytes = state.read_bytes;
        // read_committed: a TxnOffsetCommit's records count once their transaction commits.
        request.isolation_level = 1;
        request.session_id = 0;
        request.session_epoch = -1;
        messages::fetch_request::topics_element topic;
        topic.topic = info_.topic;
        messages::fetch_request::topics_element::partitions_element wanted;
        wanted.partition = partition;
        wanted.current_leader_epoch = -1;
        wanted.fetch_offset = state.next_offset;
        wanted.log_start_offset = -1;
        wanted.partition_max_bytes = state.read_bytes;
        topic.partitions.push_back(wanted);
        request.topics.push_back(std::move(topic));
        protocol::wire_writer writer;
        messages::encode(request, info_.fetch_version, writer);
        bump(server_.metrics().offset_store_reads);
        int64_t fetch_offset = state.next_offset;
        send(leaders_[size_t(partition)], protocol::api_key::fetch, info_.fetch_version, writer.bytes(),
             [this, partition, fetch_offset](protocol::frame* response, int16_t error) {
                 on_read(partition, fetch_offset, response, error);
             });
    });
}

void offset_store::on_read(int32_t partition, int64_t fetch_offset, protocol::frame* response, int16_t error) {
    partition_state& state = partitions_[size_t(partition)];
    if (closed_) {
        finish_read(partition, unavailable_error);
        return;
    }
    const messages::fetch_response::responses_element::partitions_element* answer = nullptr;
    std::optional<messages::fetch_response> decoded;
    if (response) {
        decoded = exchange_util::decode_response<messages::fetch_response>(*response, protocol::api_key::fetch,
                                                                           info_.fetch_version);
        if (decoded) {
            error = decoded->error_code;
            for (const auto& topic : decoded->responses)
                for (const auto& entry : topic.partitions)
                    if (topic.topic == info_.topic && entry.partition_index == partition) answer = &entry;
            if (error == 0 && !answer) error = unavailable_error;
            if (error == 0) error = answer->error_code;
        } else {
            spdlog::warn("offset store: malformed Fetch response for {}-{}", info_.topic, partition);
            error = unavailable_error;
        }
    }
    if (error == 1 /* OFFSET_OUT_OF_RANGE */ && ++state.read_attempts < attempts_max) {
        // The topic was emptied or recreated: what the cache holds no longer describes it.
        int64_t start = answer && answer->log_start_offset > 0 ? answer->log_start_offset : 0;
        spdlog::warn("offset store: offset {} of {}-{} is out of range; re-reading from {}", fetch_offset, info_.topic,
                     partition, start);
        state.cache.clear();
        state.aliases.clear();
        state.next_offset = start;
        start_read(partition);
        return;
    }
    if (error != 0) {
        if (leader_changed(error) && ++state.read_attempts < attempts_max) {
            forget_leaders();
            start_read(partition);
            return;
        }
        spdlog::warn("offset store: reading {}-{} failed with error {}", info_.topic, partition, error);
        finish_read(partition, unavailable_error);
        return;
    }
    std::span<const std::byte> records;
    if (answer->records) records = *answer->records;
    std::vector<aborted_transaction> aborted;
    if (answer->aborted_transactions)
        for (const auto& entry : *answer->aborted_transactions) aborted.push_back({entry.producer_id, entry.first_offset});
    offset_cache::read_result read = state.cache.apply_records(records, fetch_offset, &state.aliases, aborted);
    bump(server_.metrics().offset_store_records_read, read.applied);
    if (read.skipped > 0)
        spdlog::warn("offset store: skipped {} record(s) of {}-{} not in the store's format", read.skipped, info_.topic,
                     partition);
    if (!read.next_offset) {
        spdlog::error("offset store: {}-{} at offset {}: {}", info_.topic, partition, fetch_offset, read.problem);
        finish_read(partition, unavailable_error);
        return;
    }
    state.next_offset = std::max(state.next_offset, *read.next_offset);
    // read_committed ends at the last stable offset: an open transaction's records (and what
    // follows them) are read once it ends.
    int64_t end = answer->last_stable_offset >= 0 ? std::min(answer->last_stable_offset, answer->high_watermark)
                                                   : answer->high_watermark;
    if (state.next_offset >= end) {
        finish_read(partition, 0);
        return;
    }
    if (*read.next_offset == fetch_offset) {
        // Nothing whole came back: a batch larger than what was asked for.
        if (state.read_bytes >= read_bytes_max) {
            spdlog::error("offset store: a record batch of {}-{} at offset {} exceeds {} bytes", info_.topic, partition,
                          fetch_offset, read_bytes_max);
            finish_read(partition, unavailable_error);
            return;
        }
        state.read_bytes = std::min(read_bytes_max, state.read_bytes * 2);
    }
    start_read(partition);
}

void offset_store::finish_read(int32_t partition, int16_t error) {
    partition_state& state = partitions_[size_t(partition)];
    state.reading = false;
    if (error != 0) bump(server_.metrics().offset_store_failures);
    std::vector<store_done> satisfied;
    satisfied.swap(state.this_round);
    if (!state.next_round.empty() && !closed_) {
        state.this_round.swap(state.next_round);
        state.read_attempts = 0;
        start_read(partition);
    }
    if (error == 0) evict_beyond_bound(partition);
    for (auto& done : satisfied) done(error);
}

void offset_store::evict_beyond_bound(int32_t keep) {
    size_t held = 0;
    for (const auto& state : partitions_) held += state.cache.size();
    while (held > server_.config().offset_store.cache_entries) {
        partition_state* victim = nullptr;
        for (size_t index = 0; index < partitions_.size(); ++index) {
            partition_state& state = partitions_[index];
            if (int32_t(index) == keep || state.reading || state.cache.size() == 0) continue;
            if (!victim || state.last_used < victim->last_used) victim = &state;
        }
        if (!victim) return;
        held -= victim->cache.size();
        victim->cache.clear();
        victim->aliases.clear();
        victim->next_offset = 0;
        bump(server_.metrics().offset_store_evictions);
    }
}

void offset_store::write(int32_t partition, std::vector<store_record> records, store_done done) {
    if (!available() || closed_ || partition < 0 || partition >= info_.partitions) {
        post([done = std::move(done)] { done(unavailable_error); });
        return;
    }
    partitions_[size_t(partition)].last_used = ++use_clock_;
    auto pending = std::make_shared<pending_write>();
    pending->records = std::move(records);
    pending->done = std::move(done);
    send_write(partition, std::move(pending));
}

void offset_store::send_write(int32_t partition, std::shared_ptr<pending_write> pending) {
    with_leaders([this, partition, pending](int16_t error) {
        if (error != 0) {
            bump(server_.metrics().offset_store_failures);
            pending->done(error);
            return;
        }
        protocol::batch_fields fields;
        fields.base_timestamp = fields.max_timestamp = wall_clock_ms();
        bool built = false;
        std::vector<std::byte> batch = encode_records(pending->records, fields, built);
        if (!built) {
            bump(server_.metrics().offset_store_failures);
            pending->done(unavailable_error);
            return;
        }
        messages::produce_request request;
        request.acks = -1;
        request.timeout_ms = int32_t(std::min<uint32_t>(server_.config().kafka.request_timeout_ms, INT32_MAX));
        messages::produce_request::topic_data_element topic;
        topic.name = info_.topic;
        topic.partition_data.push_back({partition, std::move(batch)});
        request.topic_data.push_back(std::move(topic));
        protocol::wire_writer writer;
        messages::encode(request, info_.produce_version, writer);
        send(leaders_[size_t(partition)], protocol::api_key::produce, info_.produce_version, writer.bytes(),
             [this, partition, pending](protocol::frame* response, int16_t error) {
                 on_written(partition, pending, response, error);
             });
    });
}

std::vector<std::byte> offset_store::encode_records(const std::vector<store_record>& records,
                                                   const protocol::batch_fields& fields, bool& ok) const {
    std::vector<std::vector<std::byte>> keys;
    std::vector<std::vector<std::byte>> values;
    std::vector<protocol::record_input> inputs;
    keys.reserve(records.size());
    values.reserve(records.size());
    for (size_t index = 0; index < records.size(); ++index) {
        const store_record& record = records[index];
        bool has_value = record.alias ? record.alias_value.has_value() : record.value.has_value();
        if (record.alias) {
            keys.push_back(encode_alias_key(*record.alias));
            values.push_back(record.alias_value ? encode_alias_value(*record.alias_value) : std::vector<std::byte>{});
        } else {
            keys.push_back(encode_offset_key(record.key));
            values.push_back(record.value ? encode_offset_value(*record.value) : std::vector<std::byte>{});
        }
        protocol::record_input input;
        input.key = std::span<const std::byte>(keys.back());
        if (has_value) input.value = std::span<const std::byte>(values.back());
        input.offset_delta = int32_t(index);
        inputs.push_back(std::move(input));
    }
    protocol::built_batch batch = protocol::build_record_batch(fields, inputs);
    ok = batch.ok();
    if (!ok) spdlog::error("offset store: cannot build a record batch: {}", protocol::to_string(batch.error));
    return std::move(batch.bytes);
}

void offset_store::on_written(int32_t partition, std::shared_ptr<pending_write> pending, protocol::frame* response,
                              int16_t error) {
    int64_t base_offset = -1;
    if (response) {
        auto decoded = exchange_util::decode_response<messages::produce_response>(*response, protocol::api_key::produce,
                                                                                   info_.produce_version);
        error = unavailable_error;
        if (decoded) {
            for (const auto& topic : decoded->responses)
                for (const auto& entry : topic.partition_responses)
                    if (topic.name == info_.topic && entry.index == partition) {
                        error = entry.error_code;
                        base_offset = entry.base_offset;
                    }
        }
    }
    if (error == 0 && !closed_) {
        partition_state& state = partitions_[size_t(partition)];
        for (size_t index = 0; index < pending->records.size(); ++index) {
            const store_record& record = pending->records[index];
            if (record.alias)
                state.aliases.apply(*record.alias, record.alias_value, base_offset + int64_t(index));
            else
                state.cache.apply(record.key, record.value, base_offset + int64_t(index));
        }
        // Right after what was read: the next read need not fetch these records back.
        if (state.next_offset == base_offset && !state.reading)
            state.next_offset = base_offset + int64_t(pending->records.size());
        bump(server_.metrics().offset_store_records_written, pending->records.size());
        pending->done(0);
        return;
    }
    if (!closed_ && leader_changed(error) && ++pending->attempts < attempts_max) {
        forget_leaders();
        send_write(partition, std::move(pending));
        return;
    }
    spdlog::warn("offset store: writing {} record(s) to {}-{} failed with error {}", pending->records.size(),
                 info_.topic, partition, error);
    bump(server_.metrics().offset_store_failures);
    pending->done(unavailable_error);
}

void offset_store::write_in_transaction(int32_t partition, std::vector<store_record> records,
                                        store_transaction transaction, store_done done) {
    if (!available() || closed_ || partition < 0 || partition >= info_.partitions) {
        post([done = std::move(done)] { done(unavailable_error); });
        return;
    }
    auto write = std::make_shared<txn_write>();
    write->partition = partition;
    write->records = std::move(records);
    write->transaction = std::move(transaction);
    write->done = std::move(done);
    if (txn_streams_.size() >= txn_streams_max) {
        // Bounded: a forgotten producer's next write starts at sequence 0, which the broker
        // refuses; its client aborts and bumps the epoch.
        std::erase_if(txn_streams_, [](const auto& entry) { return !entry.second.in_flight; });
    }
    txn_write_stream& stream = txn_streams_[{write->transaction.producer_id, partition}];
    if (write->transaction.producer_epoch < stream.producer_epoch) {
        post([done = std::move(write->done)] { done(47 /* INVALID_PRODUCER_EPOCH */); });
        return;
    }
    if (write->transaction.producer_epoch > stream.producer_epoch) stream = {write->transaction.producer_epoch, 0, false, false};
    // One write of a producer's offsets in flight at a time: the client's TxnOffsetCommit
    // waits for its answer, so a second one is a client racing itself; it retries.
    if (stream.broken || stream.in_flight) {
        post([done = std::move(write->done)] { done(unavailable_error); });
        return;
    }
    stream.in_flight = true;
    txn_find_coordinator(std::move(write));
}

void offset_store::txn_finish(const std::shared_ptr<txn_write>& write, int16_t error) {
    auto found = txn_streams_.find({write->transaction.producer_id, write->partition});
    if (found != txn_streams_.end() && found->second.producer_epoch == write->transaction.producer_epoch)
        found->second.in_flight = false;
    if (error != 0) {
        spdlog::warn("offset store: writing {} offset(s) into transaction '{}' on {}-{} failed with error {}",
                     write->records.size(), write->transaction.transactional_id, info_.topic, write->partition, error);
        bump(server_.metrics().offset_store_failures);
    } else {
        bump(server_.metrics().offset_store_records_written, write->records.size());
    }
    write->done(error);
}

// FindCoordinator v1 (every broker from 0.11 answers it; v0 is gone from Kafka 4).
void offset_store::txn_find_coordinator(std::shared_ptr<txn_write> write) {
    constexpr int16_t version = 1;
    messages::find_coordinator_request request;
    request.key = write->transaction.transactional_id;
    request.key_type = 1;  // transaction
    protocol::wire_writer writer;
    messages::encode(request, version, writer);
    send(bootstrap_node, protocol::api_key::find_coordinator, version, writer.bytes(),
         [this, write](protocol::frame* response, int16_t error) {
             int32_t node = -1;
             if (response) {
                 auto decoded = exchange_util::decode_response<messages::find_coordinator_response>(
                     *response, protocol::api_key::find_coordinator, version);
                 error = decoded ? decoded->error_code : exchange_util::unknown_server_error;
                 if (decoded) node = decoded->node_id;
             }
             if (error == 0 && node < 0) error = unavailable_error;
             if (error != 0) {
                 txn_finish(write, unavailable_error);
                 return;
             }
             write->coordinator = node;
             txn_add_partition(write);
         });
}

void offset_store::txn_add_partition(std::shared_ptr<txn_write> write) {
    constexpr int16_t version = 1;
    messages::add_partitions_to_txn_request request;
    request.transactional_id = write->transaction.transactional_id;
    request.producer_id = write->transaction.producer_id;
    request.producer_epoch = write->transaction.producer_epoch;
    request.topics.push_back({info_.topic, {write->partition}});
    protocol::wire_writer writer;
    messages::encode(request, version, writer);
    send(write->coordinator, 24 /* AddPartitionsToTxn */, version, writer.bytes(),
         [this, write](protocol::frame* response, int16_t error) {
             if (response) {
                 auto decoded = exchange_util::decode_response<messages::add_partitions_to_txn_response>(
                     *response, 24, version);
                 error = exchange_util::unknown_server_error;
                 if (decoded)
                     for (const auto& topic : decoded->results)
                         for (const auto& result : topic.results_by_partition)
                             if (topic.name == info_.topic && result.partition_index == write->partition)
                                 error = result.partition_error_code;
             }
             // The fencing and state errors are the client's to see; the rest it retries.
             if (error == 47 || error == 48 || error == 90) {
                 txn_finish(write, error);
                 return;
             }
             if (error != 0) {
                 txn_finish(write, unavailable_error);
                 return;
             }
             txn_produce(write);
         });
}

void offset_store::txn_produce(std::shared_ptr<txn_write> write) {
    with_leaders([this, write](int16_t error) {
        if (error != 0) {
            txn_finish(write, error);
            return;
        }
        txn_write_stream& stream = txn_streams_[{write->transaction.producer_id, write->partition}];
        protocol::batch_fields fields;
        fields.base_timestamp = fields.max_timestamp = wall_clock_ms();
        fields.transactional = true;
        fields.producer_id = write->transaction.producer_id;
        fields.producer_epoch = write->transaction.producer_epoch;
        fields.base_sequence = stream.next_sequence;
        bool built = false;
        std::vector<std::byte> batch = encode_records(write->records, fields, built);
        if (!built) {
            txn_finish(write, unavailable_error);
            return;
        }
        messages::produce_request request;
        request.transactional_id = write->transaction.transactional_id;
        request.acks = -1;
        request.timeout_ms = int32_t(std::min<uint32_t>(server_.config().kafka.request_timeout_ms, INT32_MAX));
        messages::produce_request::topic_data_element topic;
        topic.name = info_.topic;
        topic.partition_data.push_back({write->partition, std::move(batch)});
        request.topic_data.push_back(std::move(topic));
        protocol::wire_writer writer;
        messages::encode(request, info_.produce_version, writer);
        send(leaders_[size_t(write->partition)], protocol::api_key::produce, info_.produce_version, writer.bytes(),
             [this, write](protocol::frame* response, int16_t error) {
                 if (response) {
                     auto decoded = exchange_util::decode_response<messages::produce_response>(
                         *response, protocol::api_key::produce, info_.produce_version);
                     error = unavailable_error;
                     if (decoded)
                         for (const auto& topic : decoded->responses)
                             for (const auto& entry : topic.partition_responses)
                                 if (topic.name == info_.topic && entry.index == write->partition)
                                     error = entry.error_code;
                 }
                 auto found = txn_streams_.find({write->transaction.producer_id, write->partition});
                 if (found == txn_streams_.end() || found->second.producer_epoch != write->transaction.producer_epoch) {
                     txn_finish(write, 47 /* INVALID_PRODUCER_EPOCH: a newer epoch took over */);
                     return;
                 }
                 txn_write_stream& stream = found->second;
                 if (error == 0 || error == 46 /* DUPLICATE_SEQUENCE_NUMBER: written before */) {
                     stream.next_sequence = txn_sequence_after(stream.next_sequence, int32_t(write->records.size()));
                     txn_finish(write, 0);
                     return;
                 }
                 // The same batch at the same sequence again is deduplicated by the broker if
                 // an earlier send did land.
                 if (!closed_ && leader_changed(error) && ++write->attempts < attempts_max) {
                     forget_leaders();
                     txn_produce(write);
                     return;
                 }
                 if (leader_changed(error)) stream.broken = true;  // written or not: unknown
                 txn_finish(write, error == 47 || error == 90 ? error : unavailable_error);
             });
    });
}

void offset_store::init_producer_id(producer_id_done done) {
    if (closed_) {
        post([done = std::move(done)] { done(unavailable_error, {}); });
        return;
    }
    // v0 is what every broker with idempotence offers; an idempotent producer id needs no
    // coordinator, so any broker answers.
    constexpr int16_t version = 0;
    messages::init_producer_id_request request;
    request.transactional_id = std::nullopt;
    request.transaction_timeout_ms = int32_t(std::min<uint32_t>(server_.config().kafka.request_timeout_ms, INT32_MAX));
    protocol::wire_writer writer;
    messages::encode(request, version, writer);
    send(bootstrap_node, protocol::api_key::init_producer_id, version, writer.bytes(),
         [done = std::move(done)](protocol::frame* response, int16_t error) {
             alias_producer producer;
             if (response) {
                 auto decoded = exchange_util::decode_response<messages::init_producer_id_response>(
                     *response, protocol::api_key::init_producer_id, version);
                 error = decoded ? decoded->error_code : exchange_util::unknown_server_error;
                 if (decoded && error == 0) producer = {decoded->producer_id, decoded->producer_epoch};
                 if (error == 0 && producer.producer_id < 0) error = exchange_util::unknown_server_error;
             }
             done(error, producer);
         });
}

void offset_store::check_timeouts(uint64_t now_ns) {
    uint64_t limit_ns = uint64_t(server_.config().kafka.request_timeout_ms) * 1'000'000u;
    for (auto& [node_id, connection] : links_) {
        uint64_t oldest = connection->oldest_sent_ns();
        if (oldest != 0 && now_ns - oldest > limit_ns && !connection->dead()) {
            spdlog::warn("offset store: no answer from node {} within kafka.request_timeout_ms; reconnecting", node_id);
            connection->abandon(request_timed_out);
        }
    }
}

void offset_store::close() {
    if (closed_) return;
    closed_ = true;
    for (auto& [node_id, connection] : links_) connection->abandon(unavailable_error);
    for (auto& connection : retired_links_) connection->abandon(unavailable_error);
}

}  // namespace kpp
