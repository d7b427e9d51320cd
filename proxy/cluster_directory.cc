#include "proxy/cluster_directory.h"

#include "proxy/security.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <thread>

#include "protocol/api.h"
#include "protocol/header.h"
#include "protocol/kpp_messages.h"
#include "protocol/record_batch.h"
#include "protocol/wire.h"
#include "remap/offset_cache.h"
#include "reactor/errors.h"

namespace kpp {
namespace {

// A minimal blocking Kafka exchange with a deadline, for discovery only.
class blocking_connection {
public:
    // With `tls`, the connection speaks TLS with `host` as server name (SNI, verification).
    blocking_connection(const reactor::socket_address& address, uint32_t timeout_ms,
                        std::shared_ptr<reactor::tls_context> tls = nullptr, const std::string& host = {},
                        std::shared_ptr<const broker_sasl> sasl = nullptr)
        : timeout_ms_(timeout_ms) {
        fd_ = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd_ < 0) throw std::runtime_error(reactor::error_text(errno));
        if (::connect(fd_, address.get(), address.length) != 0 && errno != EINPROGRESS)
            throw std::runtime_error(reactor::error_text(errno));
        pollfd entry{fd_, POLLOUT, 0};
        if (::poll(&entry, 1, int(timeout_ms)) <= 0) throw std::runtime_error("connect timed out");
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) throw std::runtime_error(reactor::error_text(error));
        if (tls) handshake(std::move(tls), host);
        if (sasl) authenticate(*sasl);
    }
    ~blocking_connection() {
        if (fd_ >= 0) ::close(fd_);
    }

    std::vector<std::byte> exchange(const std::vector<std::byte>& request) {
        std::vector<std::byte> framed(4);
        protocol::store_int32_be(framed.data(), int32_t(request.size()));
        framed.insert(framed.end(), request.begin(), request.end());
        send_plain(framed);
        std::vector<std::byte> size(4);
        receive_plain(size);
        int32_t body_bytes = protocol::load_int32_be(size.data());
        if (body_bytes < 4 || body_bytes > 64 * 1024 * 1024) throw std::runtime_error("bad response size");
        std::vector<std::byte> body(static_cast<size_t>(body_bytes));
        receive_plain(body);
        return body;
    }

private:
    std::vector<std::byte> sasl_exchange(int16_t api_key, int16_t version, std::vector<std::byte> tail) {
        std::vector<std::byte> request(8);
        protocol::store_int16_be(request.data(), api_key);
        protocol::store_int16_be(request.data() + 2, version);
        protocol::store_int32_be(request.data() + 4, 1);
        request.insert(request.end(), tail.begin(), tail.end());
        std::vector<std::byte> response = exchange(request);
        response.erase(response.begin(), response.begin() + 4);  // correlation id
        return response;
    }
    // SaslHandshake, then SaslAuthenticate rounds until the mechanism is done; failures
    // worded as the cores' connections word them (upstream_link).
    void authenticate(const broker_sasl& identity) {
        auto failed = [&](const std::string& why) { return std::runtime_error(identity.describe() + " failed: " + why); };
        sasl_answer handshake = parse_sasl_handshake_response(sasl_exchange(
            protocol::api_key::sasl_handshake, sasl_handshake_version, sasl_handshake_request_tail(identity.mechanism)));
        if (handshake.malformed) throw failed("malformed SaslHandshake response");
        if (handshake.error_code != 0) throw failed(sasl_handshake_refusal(identity, handshake));
        auto mechanism = identity.start();
        if (!mechanism) throw failed("unknown mechanism");
        std::vector<uint8_t> message = mechanism->initial();
        if (message.empty()) throw failed(mechanism->step({}).reason);
        for (int round = 0; round < 8; ++round) {
            sasl_answer answer = parse_sasl_authenticate_response(sasl_exchange(
                api_key_sasl_authenticate, sasl_authenticate_version, sasl_authenticate_request_tail(message)));
            if (answer.malformed) throw failed("malformed SaslAuthenticate response");
            if (answer.error_code != 0) throw failed(sasl_authenticate_refusal(answer));
            sasl::client_step step = mechanism->step(answer.auth_bytes);
            if (step.status == sasl::client_status::done) return;
            if (step.status == sasl::client_status::failed) throw failed(step.reason);
            message = std::move(step.message);
        }
        throw failed("the exchange did not end");
    }

    // The same engine as the cores' connections, driven by blocking reads and writes.
    void handshake(std::shared_ptr<reactor::tls_context> context, const std::string& host) {
        tls_ = std::make_unique<reactor::tls_engine>(std::move(context), host);
        tls_->start();
        while (!tls_->established()) {
            write_all(tls_->take_output());
            if (tls_->state() == reactor::tls_state::failed) throw std::runtime_error("TLS: " + tls_->error());
            std::vector<std::byte> chunk(16384);
            size_t got = read_some(chunk);
            if (!tls_->feed(std::span(chunk).first(got))) {
                write_all(tls_->take_output());  // the alert, so the broker logs why
                throw std::runtime_error("TLS: " + tls_->error());
            }
        }
        write_all(tls_->take_output());
    }
    void send_plain(const std::vector<std::byte>& bytes) {
        if (!tls_) {
            write_all(bytes);
            return;
        }
        if (!tls_->write(bytes)) throw std::runtime_error("TLS: " + tls_->error());
        write_all(tls_->take_output());
    }
    void receive_plain(std::vector<std::byte>& bytes) {
        if (!tls_) {
            read_exact(bytes);
            return;
        }
        while (plain_.size() < bytes.size()) {
            std::vector<std::byte> chunk(16384);
            size_t got = read_some(chunk);
            if (!tls_->feed(std::span(chunk).first(got))) throw std::runtime_error("TLS: " + tls_->error());
            tls_->read(plain_);
            write_all(tls_->take_output());
            if (tls_->state() == reactor::tls_state::closed && plain_.size() < bytes.size())
                throw std::runtime_error("connection closed by the broker");
        }
        std::copy(plain_.begin(), plain_.begin() + long(bytes.size()), bytes.begin());
        plain_.erase(plain_.begin(), plain_.begin() + long(bytes.size()));
    }
    size_t read_some(std::vector<std::byte>& chunk) {
        while (true) {
            ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
            if (n > 0) return size_t(n);
            if (n < 0 && errno == EAGAIN) {
                wait(POLLIN);
                continue;
            }
            throw std::runtime_error(n == 0 ? "connection closed by the broker" : reactor::error_text(errno));
        }
    }

    void wait(short events) {
        pollfd entry{fd_, events, 0};
        if (::poll(&entry, 1, int(timeout_ms_)) <= 0) throw std::runtime_error("timed out");
    }
    void write_all(const std::vector<std::byte>& bytes) {
        size_t sent = 0;
        while (sent < bytes.size()) {
            ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += size_t(n);
            } else if (n < 0 && errno == EAGAIN) {
                wait(POLLOUT);
            } else {
                throw std::runtime_error(n == 0 ? "closed" : reactor::error_text(errno));
            }
        }
    }
    void read_exact(std::vector<std::byte>& bytes) {
        size_t received = 0;
        while (received < bytes.size()) {
            ssize_t n = ::recv(fd_, bytes.data() + received, bytes.size() - received, 0);
            if (n > 0) {
                received += size_t(n);
            } else if (n < 0 && errno == EAGAIN) {
                wait(POLLIN);
            } else {
                throw std::runtime_error(n == 0 ? "connection closed by the broker" : reactor::error_text(errno));
            }
        }
    }

    int fd_ = -1;
    uint32_t timeout_ms_;
    std::unique_ptr<reactor::tls_engine> tls_;
    std::vector<std::byte> plain_;  // decrypted, not yet asked for
};


using version_ranges = std::map<int16_t, std::pair<int16_t, int16_t>>;

version_ranges api_version_ranges(blocking_connection& connection) {
    auto response = connection.exchange(protocol::encode_api_versions_request(0, 1, "kafka-partition-proxy"));
    protocol::wire_reader reader(response);
    reader.read_int32();
    int16_t error_code = reader.read_int16();
    int32_t count = reader.read_array_length(false, false, 6);
    if (!reader.ok() || error_code != 0) throw std::runtime_error("ApiVersions failed");
    version_ranges ranges;
    for (int32_t index = 0; index < count && reader.ok(); ++index) {
        int16_t key = reader.read_int16();
        int16_t min_version = reader.read_int16();
        int16_t max_version = reader.read_int16();
        ranges[key] = {min_version, max_version};
    }
    if (!reader.ok()) throw std::runtime_error("malformed ApiVersions response");
    return ranges;
}

int16_t metadata_version_to_use(const version_ranges& ranges) {
    auto found = ranges.find(protocol::api_key::metadata);
    if (found == ranges.end()) throw std::runtime_error("the broker does not offer Metadata");
    int16_t chosen = std::min<int16_t>(found->second.second, 12);
    if (chosen < found->second.first) throw std::runtime_error("no common Metadata version");
    return chosen;
}

// The highest version in [lowest, highest] the broker offers; nullopt when none.
std::optional<int16_t> pick_version(const version_ranges& ranges, int16_t key, int16_t lowest, int16_t highest) {
    auto found = ranges.find(key);
    if (found == ranges.end()) return std::nullopt;
    int16_t chosen = std::min(found->second.second, highest);
    if (chosen < std::max(found->second.first, lowest)) return std::nullopt;
    return chosen;
}

// A request with header v1 (v2 for flexible versions) and correlation id 1.
template <typename message_type>
std::vector<std::byte> encode_request(int16_t api_key, int16_t version, const message_type& message) {
    protocol::wire_writer writer;
    writer.write_int16(api_key);
    writer.write_int16(version);
    writer.write_int32(1);
    writer.write_string(std::string_view("kafka-partition-proxy"), false);
    if (protocol::request_header_is_flexible(api_key, version)) writer.write_empty_tagged_fields();
    protocol::messages::encode(message, version, writer);
    return std::move(writer.bytes());
}

template <typename message_type>
message_type decode_response(int16_t api_key, int16_t version, const std::vector<std::byte>& response) {
    auto offset = protocol::response_body_offset(response, api_key, version);
    message_type decoded;
    if (!offset || protocol::messages::decode(decoded, version, std::span(response).subspan(*offset)) !=
                       protocol::wire_error::none)
        throw std::runtime_error("malformed " + std::string(protocol::api_name(api_key)) + " response");
    return decoded;
}

// The store topic's partition count; 0 when the cluster does not know the topic; throws
// while its partitions have no leader yet.
int32_t store_partitions(blocking_connection& connection, int16_t version, const std::string& topic) {
    protocol::messages::metadata_request request;
    // Before v4 naming a topic may auto-create it (with the broker's defaults, not
    // compacted): ask for every topic instead.
    if (version >= 4) request.topics.emplace(1, protocol::messages::metadata_request::topics_element{{}, topic});
    request.allow_auto_topic_creation = false;
    auto decoded = decode_response<protocol::messages::metadata_response>(
        protocol::api_key::metadata, version,
        connection.exchange(encode_request(protocol::api_key::metadata, version, request)));
    for (const auto& entry : decoded.topics) {
        if (entry.name != topic) continue;
        if (entry.error_code == 3) return 0;  // UNKNOWN_TOPIC_OR_PARTITION
        if (entry.error_code != 0)
            throw std::runtime_error("Metadata for " + topic + " answered error " + std::to_string(entry.error_code));
        for (const auto& partition : entry.partitions)
            if (partition.leader_id < 0) throw std::runtime_error(topic + " has partitions without a leader");
        return int32_t(entry.partitions.size());
    }
    return 0;
}

}  // namespace

offset_store_result prepare_offset_store(const proxy_config& config, const cluster_directory& directory) {
    offset_store_result result;
    std::string tls_error;
    std::shared_ptr<reactor::tls_context> tls = broker_tls_context(config, tls_error);
    if (!tls_error.empty()) {
        result.fatal = true;
        result.error = tls_error;
        return result;
    }
    std::shared_ptr<const broker_sasl> sasl = broker_sasl_identity(config, tls_error);
    if (!tls_error.empty()) {
        result.fatal = true;
        result.error = tls_error;
        return result;
    }
    const offset_store_settings& settings = config.offset_store;
    for (const host_port& server : config.kafka.bootstrap_servers) {
        try {
            reactor::socket_address address = reactor::resolve_address(server.host, server.port);
            blocking_connection connection(address, config.kafka.connection_timeout_ms, tls, server.host, sasl);
            version_ranges ranges = api_version_ranges(connection);
            offset_store_info info;
            info.topic = settings.topic;
            // Non-flexible versions every broker since Kafka 0.11 and up to 4.x offers.
            auto metadata = pick_version(ranges, protocol::api_key::metadata, 0, 8);
            auto produce = pick_version(ranges, protocol::api_key::produce, 3, 8);
            auto fetch = pick_version(ranges, protocol::api_key::fetch, 4, 11);
            if (!metadata || !produce || !fetch) {
                result.fatal = true;
                result.error = "offset_store.topic: the cluster offers no Metadata v0-8, Produce v3-8 or Fetch v4-11 "
                               "for the proxy's offset store";
                return result;
            }
            info.metadata_version = *metadata;
            info.produce_version = *produce;
            info.fetch_version = *fetch;
            info.describe_producers_version = pick_version(ranges, 61 /* DescribeProducers */, 0, 0);
            info.partitions = store_partitions(connection, *metadata, settings.topic);
            if (info.partitions == 0) {
                auto create = pick_version(ranges, 19 /* CreateTopics */, 0, 4);
                if (!create) {
                    result.fatal = true;
                    result.error = "offset_store.topic: topic '" + settings.topic +
                                   "' does not exist and this cluster does not offer CreateTopics; create it "
                                   "(cleanup.policy=compact, " + std::to_string(settings.partitions) +
                                   " partitions) or name an existing topic";
                    return result;
                }
                protocol::messages::create_topics_request request;
                protocol::messages::create_topics_request::topics_element topic;
                topic.name = settings.topic;
                topic.num_partitions = settings.partitions;
                topic.replication_factor = settings.replication_factor;
                topic.configs.push_back({"cleanup.policy", std::string("compact")});
                request.topics.push_back(std::move(topic));
                request.timeout_ms = int32_t(config.kafka.request_timeout_ms);
                // The controller creates topics (older brokers refuse elsewhere).
                std::unique_ptr<blocking_connection> controller;
                blocking_connection* target = &connection;
                if (const upstream_broker* broker = directory.find(directory.controller_id)) {
                    try {
                        controller = std::make_unique<blocking_connection>(broker->address,
                                                                           config.kafka.connection_timeout_ms);
                        target = controller.get();
                    } catch (const std::exception&) {
                    }
                }
                auto created = decode_response<protocol::messages::create_topics_response>(
                    19, *create, target->exchange(encode_request(19, *create, request)));
                for (const auto& entry : created.topics) {
                    if (entry.name != settings.topic || entry.error_code == 0 || entry.error_code == 36) continue;
                    result.fatal = entry.error_code != 41 && entry.error_code != 7;  // NOT_CONTROLLER, timed out
                    result.error = "offset_store.topic: creating '" + settings.topic + "' failed with error " +
                                   std::to_string(entry.error_code) +
                                   (entry.error_message ? ": " + *entry.error_message : std::string());
                    return result;
                }
                // Wait for the new partitions to get leaders.
                for (int attempt = 0; attempt < 50 && info.partitions == 0; ++attempt) {
                    try {
                        info.partitions = store_partitions(connection, *metadata, settings.topic);
                    } catch (const std::exception&) {
                    }
                    if (info.partitions == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
                }
                if (info.partitions == 0) throw std::runtime_error("created " + settings.topic + " but it has no leaders yet");
            }
            result.info = info;
            result.error.clear();
            return result;
        } catch (const std::exception& error) {
            result.error += (result.error.empty() ? "" : "; ") + server.to_string() + ": " + error.what();
        }
    }
    return result;
}

namespace {

// A connection to the first bootstrap server that answers, with the config's TLS and SASL.
std::unique_ptr<blocking_connection> connect_bootstrap(const proxy_config& config, std::string& error) {
    std::shared_ptr<reactor::tls_context> tls = broker_tls_context(config, error);
    if (!error.empty()) return nullptr;
    std::shared_ptr<const broker_sasl> sasl = broker_sasl_identity(config, error);
    if (!error.empty()) return nullptr;
    for (const host_port& server : config.kafka.bootstrap_servers) {
        try {
            reactor::socket_address address = reactor::resolve_address(server.host, server.port);
            auto connection = std::make_unique<blocking_connection>(address, config.kafka.connection_timeout_ms, tls,
                                                                    server.host, sasl);
            error.clear();
            return connection;
        } catch (const std::exception& failure) {
            error += (error.empty() ? "" : "; ") + server.to_string() + ": " + failure.what();
        }
    }
    return nullptr;
}

// A connection to the leader of the store partition holding the topic layouts, as `metadata`
// (an answer naming the store topic) has it. Throws naming what is missing.
std::unique_ptr<blocking_connection> connect_layout_leader(const proxy_config& config, const offset_store_info& store,
                                                           const protocol::messages::metadata_response& metadata) {
    int32_t leader = -1;
    for (const auto& topic : metadata.topics)
        if (topic.name == store.topic)
            for (const auto& partition : topic.partitions)
                if (partition.partition_index == layout_store_partition) leader = partition.leader_id;
    const protocol::messages::metadata_response::brokers_element* broker = nullptr;
    for (const auto& entry : metadata.brokers)
        if (entry.node_id == leader) broker = &entry;
    if (!broker) throw std::runtime_error(store.topic + "-0 has no leader");
    std::string error;
    std::shared_ptr<reactor::tls_context> tls = broker_tls_context(config, error);
    std::shared_ptr<const broker_sasl> sasl = error.empty() ? broker_sasl_identity(config, error) : nullptr;
    if (!error.empty()) throw std::runtime_error(error);
    return std::make_unique<blocking_connection>(reactor::resolve_address(broker->host, uint16_t(broker->port)),
                                                 config.kafka.connection_timeout_ms, tls, broker->host, sasl);
}

}  // namespace

layout_snapshot read_layout_snapshot(const proxy_config& config, const offset_store_info& store) {
    layout_snapshot snapshot;
    try {
        auto connection = connect_bootstrap(config, snapshot.error);
        if (!connection) return snapshot;
        protocol::messages::metadata_request request;
        if (store.metadata_version == 0) request.topics.emplace();  // v0: an empty list means every topic
        auto metadata = decode_response<protocol::messages::metadata_response>(
            protocol::api_key::metadata, store.metadata_version,
            connection->exchange(encode_request(protocol::api_key::metadata, store.metadata_version, request)));
        for (const auto& topic : metadata.topics)
            if (topic.name && topic.error_code == 0)
                snapshot.cluster_topics[*topic.name] = int32_t(topic.partitions.size());
        if (store.partitions == 0) return snapshot;  // no store: nothing recorded
        auto leader = connect_layout_leader(config, store, metadata);
        blocking_connection& reader = *leader;
        offset_cache scratch;  // committed offsets read on the way, dropped
        int64_t next = 0;
        for (int round = 0; round < 100000; ++round) {
            protocol::messages::fetch_request fetch;
            fetch.replica_id = -1;
            fetch.max_wait_ms = 0;
            fetch.min_bytes = 0;
            fetch.max_bytes = 4 << 20;
            fetch.isolation_level = 1;  // read_committed, as the cores read the store
            fetch.session_id = 0;
            fetch.session_epoch = -1;
            protocol::messages::fetch_request::topics_element topic;
            topic.topic = store.topic;
            protocol::messages::fetch_request::topics_element::partitions_element wanted;
            wanted.partition = layout_store_partition;
            wanted.current_leader_epoch = -1;
            wanted.fetch_offset = next;
            wanted.log_start_offset = -1;
            wanted.partition_max_bytes = 4 << 20;
            topic.partitions.push_back(wanted);
            fetch.topics.push_back(std::move(topic));
            auto answer = decode_response<protocol::messages::fetch_response>(
                protocol::api_key::fetch, store.fetch_version,
                reader.exchange(encode_request(protocol::api_key::fetch, store.fetch_version, fetch)));
            const protocol::messages::fetch_response::responses_element::partitions_element* part = nullptr;
            for (const auto& entry : answer.responses)
                for (const auto& candidate : entry.partitions)
                    if (entry.topic == store.topic && candidate.partition_index == layout_store_partition)
                        part = &candidate;
            if (answer.error_code != 0 || !part)
                throw std::runtime_error("Fetch of " + store.topic + "-0 answered error " +
                                         std::to_string(part ? part->error_code : answer.error_code));
            if (part->error_code == 1 /* OFFSET_OUT_OF_RANGE */ && part->log_start_offset > next) {
                next = part->log_start_offset;
                continue;
            }
            if (part->error_code != 0)
                throw std::runtime_error("Fetch of " + store.topic + "-0 answered error " +
                                         std::to_string(part->error_code));
            int64_t end = part->last_stable_offset >= 0 ? part->last_stable_offset : part->high_watermark;
            if (next >= end) break;
            std::span<const std::byte> records;
            if (part->records) records = *part->records;
            std::vector<aborted_transaction> aborted;
            if (part->aborted_transactions)
                for (const auto& entry : *part->aborted_transactions)
                    aborted.push_back({entry.producer_id, entry.first_offset});
            offset_cache::read_result read = scratch.apply_records(records, next, nullptr, aborted, &snapshot.recorded);
            scratch.clear();
            if (!read.next_offset) throw std::runtime_error(store.topic + "-0: " + read.problem);
            if (*read.next_offset <= next) throw std::runtime_error(store.topic + "-0: a read made no progress");
            next = *read.next_offset;
        }
    } catch (const std::exception& failure) {
        snapshot.error = std::string("reading the topic layouts from offset_store.topic: ") + failure.what();
    }
    return snapshot;
}

std::string record_topic_layouts(const proxy_config& config, const offset_store_info& store,
                                 const topic_layouts& layouts) {
    if (layouts.empty() || store.partitions == 0) return {};
    std::string error;
    try {
        auto connection = connect_bootstrap(config, error);
        if (!connection) return error;
        protocol::messages::metadata_request request;
        request.topics.emplace(1, protocol::messages::metadata_request::topics_element{{}, store.topic});
        if (store.metadata_version == 0) request.topics->front().name = store.topic;
        auto metadata = decode_response<protocol::messages::metadata_response>(
            protocol::api_key::metadata, store.metadata_version,
            connection->exchange(encode_request(protocol::api_key::metadata, store.metadata_version, request)));
        auto leader = connect_layout_leader(config, store, metadata);
        blocking_connection& writer = *leader;
        std::vector<std::vector<std::byte>> keys, values;
        std::vector<protocol::record_input> inputs;
        keys.reserve(layouts.size());
        values.reserve(layouts.size());
        for (const auto& [topic, layout] : layouts) {
            keys.push_back(encode_layout_key(topic));
            values.push_back(encode_layout_value(layout));
            protocol::record_input input;
            input.key = std::span<const std::byte>(keys.back());
            input.value = std::span<const std::byte>(values.back());
            input.offset_delta = int32_t(inputs.size());
            inputs.push_back(std::move(input));
        }
        protocol::batch_fields fields;
        fields.base_timestamp = fields.max_timestamp =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        protocol::built_batch batch = protocol::build_record_batch(fields, inputs);
        if (!batch.ok()) return std::string("cannot build a record batch: ") + protocol::to_string(batch.error);
        protocol::messages::produce_request produce;
        produce.acks = -1;
        produce.timeout_ms = int32_t(std::min<uint32_t>(config.kafka.request_timeout_ms, INT32_MAX));
        protocol::messages::produce_request::topic_data_element topic;
        topic.name = store.topic;
        topic.partition_data.push_back({layout_store_partition, std::move(batch.bytes)});
        produce.topic_data.push_back(std::move(topic));
        auto answer = decode_response<protocol::messages::produce_response>(
            protocol::api_key::produce, store.produce_version,
            writer.exchange(encode_request(protocol::api_key::produce, store.produce_version, produce)));
        for (const auto& entry : answer.responses)
            for (const auto& partition : entry.partition_responses)
                if (partition.error_code != 0)
                    return "writing topic layouts to " + store.topic + "-0 answered error " +
                           std::to_string(partition.error_code);
        return {};
    } catch (const std::exception& failure) {
        return std::string("writing topic layouts to offset_store.topic: ") + failure.what();
    }
}

bool cluster_directory::same_brokers(const cluster_directory& other) const {
    if (brokers.size() != other.brokers.size()) return false;
    for (const auto& [node_id, broker] : brokers) {
        const upstream_broker* twin = other.find(node_id);
        if (!twin || twin->advertised.host != broker.advertised.host || twin->advertised.port != broker.advertised.port)
            return false;
    }
    return true;
}

discovery_result discover_cluster(const proxy_config& config) {
    discovery_result result;
    std::string tls_error;
    std::shared_ptr<reactor::tls_context> tls = broker_tls_context(config, tls_error);
    if (!tls_error.empty()) {
        result.error = tls_error;
        return result;
    }
    std::shared_ptr<const broker_sasl> sasl = broker_sasl_identity(config, tls_error);
    if (!tls_error.empty()) {
        result.error = tls_error;
        return result;
    }
    for (const host_port& server : config.kafka.bootstrap_servers) {
        try {
            reactor::socket_address address = reactor::resolve_address(server.host, server.port);
            blocking_connection connection(address, config.kafka.connection_timeout_ms, tls, server.host, sasl);
            version_ranges ranges = api_version_ranges(connection);
            int16_t version = metadata_version_to_use(ranges);
            auto response = connection.exchange(protocol::encode_metadata_request(version, 2, "kafka-partition-proxy"));
            auto parsed = protocol::rewrite_metadata_response(response, version,
                                                              [](int32_t) { return protocol::endpoint{}; });
            if (parsed.error != protocol::wire_error::none)
                throw std::runtime_error(std::string("malformed Metadata response: ") + protocol::to_string(parsed.error));
            if (parsed.upstream.empty()) throw std::runtime_error("the cluster lists no brokers");
            auto directory = std::make_shared<cluster_directory>();
            directory->controller_id = parsed.controller_id;
            directory->api_ranges = std::move(ranges);
            for (const protocol::broker_entry& entry : parsed.upstream) {
                upstream_broker broker;
                broker.node_id = entry.node_id;
                broker.advertised = entry.address;
                broker.address = reactor::resolve_address(entry.address.host, uint16_t(entry.address.port));
                auto port = broker_port_of(config.listen, entry.node_id);
                if (!port)
                    throw config_error("listen.broker_port_base: broker node " + std::to_string(entry.node_id) +
                                       " has no port below 65536; set listen.broker_ports for it");
                broker.proxy_port = *port;
                directory->brokers[entry.node_id] = broker;
            }
            result.directory = std::move(directory);
            result.bootstrap_used = server.to_string();
            result.error.clear();
            return result;
        } catch (const config_error&) {
            throw;
        } catch (const std::exception& error) {
            result.error += (result.error.empty() ? "" : "; ") + server.to_string() + ": " + error.what();
        }
    }
    return result;
}

}  // namespace kpp
