// Fetch from virtual partitions (DESIGN.md section 2, "Fetch" and "Scan-ahead, never stall").
//
// Toward the broker: one sessionless entry per physical partition, at the smallest offset any
// requested virtual partition on it needs (moved on by skip hints). Back to the client: each
// requested virtual partition exactly once, with exactly the batches tagged with it (control
// batches to all), as slices of the broker's receive buffers: the proxy writes only the
// bytes around them (partition headers, sizes, high watermarks). When filtering leaves every
// virtual partition of a physical one empty while the broker has more, the proxy fetches
// further itself, remembering what it skipped: while the broker holds more (below its high
// watermark) on a connection of the session's own (the scan link, so these rounds never wait
// behind the client's other long polls), with max_wait 0 and a little past the client's
// max_wait if need be; at the end waiting for new records within max_wait. A virtual
// partition known to hold nothing up to the physical high watermark is answered with a
// high watermark at its fetch offset, so lag reaches 0 and end-of-partition fires.
// A request naming no mapped topic is forwarded unchanged.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "protocol/api.h"
#include "protocol/kpp_messages.h"
#include "protocol/segmented_reader.h"
#include "proxy/exchange.h"
#include "proxy/handlers.h"
#include "proxy/shard_server.h"
#include "remap/fetch_demux.h"

namespace kpp::handlers {
namespace {

namespace messages = protocol::messages;
using reactor::byte_slice;

constexpr int fetch_version_topic_ids = 13;
constexpr int fetch_version_flexible = 12;
// Scan-ahead stops after this many records bytes for one client request (besides max_wait).
constexpr size_t scan_bytes_budget = size_t(256) << 20;
constexpr int scan_rounds_max = 512;
// Reading through records the broker holds goes on past max_wait, but not beyond this: a
// request that waited behind others on the client's connection (answered in order) still
// gets the records its partition had (issue 16).
constexpr int64_t scan_overtime_ms_max = 1000;
constexpr int16_t offset_out_of_range = 1;
// A fetch in flight is expected back within its max_wait and this; past that, no request
// waits for it any more (shared fetch).
constexpr uint64_t window_wait_grace_ns = 500'000'000;

// ---- the broker's answer, parsed in place over its receive buffers ----

// The partition-level fields (high watermark, last stable offset, log start, aborted
// transactions, preferred replica, tagged fields) are what the shared window keeps beside
// the records: window_fields.
struct fetched_partition : window_fields {
    int32_t index = 0;
    int16_t error_code = 0;
    bool records_null = true;
    size_t records_at = 0;  // in the frame
    size_t records_bytes = 0;
};

struct fetched_topic {
    std::string name;
    topic_uuid id{};
    std::vector<fetched_partition> partitions;
};

struct node_endpoint {
    int32_t node_id = 0;
    std::string host;
    int32_t port = 0;
    std::optional<std::string> rack;
};

struct fetched_response {
    int32_t throttle_time_ms = 0;
    int16_t error_code = 0;
    std::vector<fetched_topic> topics;
    std::vector<node_endpoint> node_endpoints;
};

class response_parser {
public:
    response_parser(protocol::segmented_reader& reader, int16_t version)
        : reader_(reader), version_(version), flexible_(version >= fetch_version_flexible) {}

    bool parse(fetched_response& out, const protocol::frame& frame) {
        reader_.read_int32();  // correlation id
        if (flexible_) skip_tagged();
        out.throttle_time_ms = reader_.read_int32();
        if (version_ >= 7) {
            out.error_code = reader_.read_int16();
            reader_.read_int32();  // session id
        }
        int32_t topics = array_length();
        for (int32_t t = 0; t < topics && reader_.ok(); ++t) {
            fetched_topic topic;
            if (version_ >= fetch_version_topic_ids)
                read_uuid(topic.id);
            else
                topic.name = string();
            int32_t partitions = array_length();
            for (int32_t p = 0; p < partitions && reader_.ok(); ++p) {
                fetched_partition partition;
                partition.index = reader_.read_int32();
                partition.error_code = reader_.read_int16();
                partition.high_watermark = reader_.read_int64();
                partition.last_stable_offset = reader_.read_int64();
                if (version_ >= 5) partition.log_start_offset = reader_.read_int64();
                int32_t aborted = array_length();
                partition.aborted_null = aborted < 0;
                for (int32_t a = 0; a < aborted && reader_.ok(); ++a) {
                    int64_t producer_id = reader_.read_int64();
                    int64_t first_offset = reader_.read_int64();
                    if (flexible_) skip_tagged();
                    partition.aborted.emplace_back(producer_id, first_offset);
                }
                if (version_ >= 11) partition.preferred_read_replica = reader_.read_int32();
                int64_t records = flexible_ ? int64_t(reader_.read_unsigned_varint()) - 1 : reader_.read_int32();
                if (records >= 0) {
                    if (size_t(records) > reader_.remaining()) reader_.fail(protocol::wire_error::truncated);
                    partition.records_null = false;
                    partition.records_at = reader_.position();
                    partition.records_bytes = size_t(records);
                    reader_.skip(size_t(records));
                }
                if (flexible_) {
                    size_t start = reader_.position();
                    skip_tagged();
                    if (reader_.ok()) {
                        partition.tagged.resize(reader_.position() - start);
                        frame.copy_out(start, partition.tagged);
                    }
                }
                topic.partitions.push_back(std::move(partition));
            }
            if (flexible_) skip_tagged();
            out.topics.push_back(std::move(topic));
        }
        if (flexible_) read_top_tagged(out);
        return reader_.ok();
    }

private:
    int32_t array_length() {
        int64_t count = flexible_ ? int64_t(reader_.read_unsigned_varint()) - 1 : reader_.read_int32();
        if (count > int64_t(reader_.remaining())) {
            reader_.fail(protocol::wire_error::array_too_large);
            return 0;
        }
        return int32_t(count);
    }
    std::string string() {
        int64_t length = flexible_ ? int64_t(reader_.read_unsigned_varint()) - 1 : reader_.read_int16();
        std::string text;
        if (length > 0) {
            if (size_t(length) > reader_.remaining()) reader_.fail(protocol::wire_error::truncated);
            else reader_.read_into(size_t(length), text);
        }
        return text;
    }
    void read_uuid(topic_uuid& id) {
        for (auto& byte : id) byte = uint8_t(reader_.read_int8());
    }
    void skip_tagged() {
        uint32_t count = reader_.read_unsigned_varint();
        for (uint32_t index = 0; index < count && reader_.ok(); ++index) {
            reader_.read_unsigned_varint();
            uint32_t size = reader_.read_unsigned_varint();
            if (size > reader_.remaining()) reader_.fail(protocol::wire_error::truncated);
            else reader_.skip(size);
        }
    }
    void read_top_tagged(fetched_response& out) {
        uint32_t count = reader_.read_unsigned_varint();
        for (uint32_t index = 0; index < count && reader_.ok(); ++index) {
            uint32_t tag = reader_.read_unsigned_varint();
            uint32_t size = reader_.read_unsigned_varint();
            if (size > reader_.remaining()) {
                reader_.fail(protocol::wire_error::truncated);
                return;
            }
            size_t end = reader_.position() + size;
            if (tag == 0 && version_ >= 16) {
                int32_t nodes = array_length();
                for (int32_t n = 0; n < nodes && reader_.ok(); ++n) {
                    node_endpoint node;
                    node.node_id = reader_.read_int32();
                    node.host = string();
                    node.port = reader_.read_int32();
                    int64_t rack_length = int64_t(reader_.read_unsigned_varint()) - 1;
                    if (rack_length >= 0) {
                        std::string rack;
                        if (size_t(rack_length) > reader_.remaining()) reader_.fail(protocol::wire_error::truncated);
                        else reader_.read_into(size_t(rack_length), rack);
                        node.rack = std::move(rack);
                    }
                    skip_tagged();
                    out.node_endpoints.push_back(std::move(node));
                }
            }
            if (reader_.position() < end) reader_.skip(end - reader_.position());
        }
    }

    protocol::segmented_reader& reader_;
    int16_t version_;
    bool flexible_;
};

// ---- the exchange ----

struct client_partition {
    size_t topic = 0;  // client topic index
    int32_t partition = 0;
    int64_t fetch_offset = 0;
    int32_t max_bytes = 0;
    int32_t current_leader_epoch = -1;
    int16_t local_error = 0;
    int physical = -1;  // index into physicals
    // The answer so far.
    bool answered = false;
    fetched_partition fields;  // everything but the records
    std::vector<byte_slice> records;
    size_t records_bytes = 0;
    int64_t last_offset = -1;
};

struct client_topic {
    std::string name;  // resolved from the id for v13+
    topic_uuid id{};
    std::string hint_key;
    topic_mapping mapping;
    uint32_t stats_slot = mapping_registry::no_slot;  // its counters, when mapped
};

struct physical_partition {
    size_t topic = 0;  // client topic index of the first entry naming it
    int32_t partition = 0;
    bool mapped = false;
    int64_t fetch_offset = 0;
    int32_t max_bytes = 0;
    int32_t current_leader_epoch = -1;
    std::vector<size_t> clients;
    bool active = true;  // still fetched in the next round
    bool at_end = false;
    uint64_t window_fetch = 0;  // this round's fetch, as the window knows it (0: none)
};

std::string hint_key_of(const std::string& name, const topic_uuid& id, int16_t version) {
    if (version < fetch_version_topic_ids) return name;
    // A recreated topic keeps its name but not its id: hints must not outlive it.
    return name + '\0' + std::string(reinterpret_cast<const char*>(id.data()), id.size());
}

fetched_partition answer_of(const window_entry& entry, int32_t partition) {
    fetched_partition answer;
    static_cast<window_fields&>(answer) = entry.fields;
    answer.index = partition;
    answer.records_null = false;
    answer.records_bytes = entry.bytes;
    return answer;
}

// Memory the slices hold: the blocks they keep alive (a receive buffer is held whole by
// any slice of it), each counted once per entry.
size_t held_bytes(const std::vector<byte_slice>& slices) {
    size_t held = 0;
    const std::byte* last = nullptr;
    for (const byte_slice& slice : slices) {
        if (slice.owner.data() == last) continue;
        last = slice.owner.data();
        held += slice.owner.size();
    }
    return held;
}

class fetch_exchange final : public request_exchange {
public:
    fetch_exchange(int16_t version, byte_slice header_tail, messages::fetch_request request, uint64_t start_ns)
        : version_(version), header_tail_(std::move(header_tail)), request_(std::move(request)), start_ns_(start_ns) {}
    ~fetch_exchange() override;

    // False when nothing needs the broker (all partitions answered locally).
    bool prepare(exchange_env& env);
    bool any_mapped() const { return any_mapped_; }
    // The next round: from the shared window while it holds what the partitions need, else
    // waiting for another request's fetch of the partition, else asking the broker. True
    // once `answer` holds the response.
    bool advance(exchange_env& env);
    bool on_response(exchange_env& env, protocol::frame&& response) override;
    bool on_event(exchange_env& env) override;
    std::vector<byte_slice> build(exchange_env& env);
    // Fetch sessions are not kept: a client naming one is told to start over, sessionless.
    void refuse_session() { top_error_ = exchange_util::fetch_session_id_not_found; }

private:
    void send_round(exchange_env& env);
    bool serve_from_window(exchange_env& env);
    bool wait_for_fetch_in_flight(exchange_env& env);
    void end_window_fetches();
    window_key key_of(const physical_partition& physical) const;
    static void on_deadline(reactor::timer& self, void* context);
    void absorb(exchange_env& env, const protocol::frame& frame, fetched_topic& topic, fetched_partition& partition,
                const std::vector<bool>& asked);
    // One physical partition's answer: its fields and records field (as slices), from the
    // broker or from the window.
    void absorb_field(exchange_env& env, size_t physical_index, const fetched_partition& answer,
                      const std::vector<byte_slice>& field, bool from_broker);
    void keep_in_window(const physical_partition& physical, const fetched_partition& answer,
                        const std::vector<byte_slice>& field, const demux_result& result, uint64_t now_ns);
    int find_physical(const fetched_topic& topic, int32_t partition, const std::vector<bool>& asked) const;
    bool should_answer(exchange_env& env) const;
    // Some physical partition still has records below its high watermark to read through.
    bool reads_ahead() const;

    int16_t version_;
    byte_slice header_tail_;
    messages::fetch_request request_;
    uint64_t start_ns_;
    std::vector<client_topic> topics_;
    std::vector<client_partition> clients_;
    std::vector<physical_partition> physicals_;
    std::vector<node_endpoint> node_endpoints_;
    int32_t throttle_time_ms_ = 0;
    int16_t top_error_ = 0;
    int rounds_ = 0;
    size_t scanned_bytes_ = 0;
    bool any_mapped_ = false;
    std::vector<std::byte> scratch_;
    // Shared fetch: the core's window, and the wait for another request's fetch.
    fetch_window* window_ = nullptr;
    uintptr_t reader_ = 0;  // the client connection, as the window tells readers apart
    shard_server* server_ = nullptr;
    std::optional<exchange_waker> waker_;
    std::unique_ptr<reactor::timer> deadline_;
    bool waiting_for_fetch_ = false;
};

fetch_exchange::~fetch_exchange() { end_window_fetches(); }

window_key fetch_exchange::key_of(const physical_partition& physical) const {
    return window_key{topics_[physical.topic].hint_key, physical.partition, request_.isolation_level};
}

// The fetches this exchange sent are over (answered, or it is going away): whoever waited
// for one is woken after the current answer is handled.
void fetch_exchange::end_window_fetches() {
    if (!window_) return;
    for (physical_partition& physical : physicals_) {
        if (physical.window_fetch == 0) continue;
        for (auto& wake : window_->end_fetch(physical.window_fetch)) server_->run_soon(std::move(wake));
        physical.window_fetch = 0;
    }
}

bool fetch_exchange::advance(exchange_env& env) {
    while (serve_from_window(env))
        if (should_answer(env)) {
            answer = build(env);
            return true;
        }
    if (rounds_ > 0 && should_answer(env)) {
        answer = build(env);
        return true;
    }
    if (wait_for_fetch_in_flight(env)) return false;
    send_round(env);
    return false;
}

bool fetch_exchange::serve_from_window(exchange_env& env) {
    if (!window_ || !window_->enabled()) return false;
    bool served = false;
    for (size_t index = 0; index < physicals_.size(); ++index) {
        physical_partition& physical = physicals_[index];
        if (!physical.active || !physical.mapped) continue;
        // No more than the broker would have sent this request for the partition.
        int32_t bytes_max = std::min(physical.max_bytes, request_.max_bytes);
        if (bytes_max <= 0) continue;
        const window_entry* entry = window_->find(key_of(physical), physical.fetch_offset, size_t(bytes_max));
        if (!entry) continue;
        physical.active = false;
        bump(env.metrics.fetch_window_rounds);
        bump(env.metrics.fetch_window_bytes, entry->bytes);
        absorb_field(env, index, answer_of(*entry, physical.partition), entry->records, false);
        served = true;
    }
    if (served) ++rounds_;
    return served;
}

// A request for one physical partition whose fetch another request of this core already
// sent (at an offset no later, due back in time) waits for that answer: it lands in the
// window, and this request is woken to take its part from there.
bool fetch_exchange::wait_for_fetch_in_flight(exchange_env& env) {
    if (!window_ || !window_->enabled()) return false;
    const physical_partition* only = nullptr;
    for (const physical_partition& physical : physicals_) {
        if (!physical.active) continue;
        if (only || !physical.mapped) return false;
        only = &physical;
    }
    if (!only) return false;
    // The fetch waited for comes back as soon as the partition holds anything past its offset
    // (its min_bytes is no larger): if it has not by this request's max_wait, there was
    // nothing for this request either, and it is answered then, as the broker would.
    uint64_t deadline_ns = start_ns_ + uint64_t(std::max(request_.max_wait_ms, 0)) * 1'000'000u;
    if (!waker_) waker_.emplace(env);
    exchange_waker waker = *waker_;
    if (!window_->join(key_of(*only), only->fetch_offset, request_.min_bytes, env.now_ns, [waker] { waker(); }))
        return false;
    bump(env.metrics.fetch_window_joins);
    waiting_for_fetch_ = true;
    if (!deadline_) {
        deadline_ = std::make_unique<reactor::timer>(env.server.loop());
        deadline_->arm_at_ns(deadline_ns, &fetch_exchange::on_deadline, this);
    }
    return true;
}

// The fetch waited for may never be answered (its client went away): the wait ends at the
// request's own deadline. The wake runs after the timer's callback, which this may outlive.
void fetch_exchange::on_deadline(reactor::timer&, void* context) {
    auto& exchange = *static_cast<fetch_exchange*>(context);
    exchange_waker waker = *exchange.waker_;
    exchange.server_->run_soon([waker] { waker(); });
}

bool fetch_exchange::on_event(exchange_env& env) {
    if (!waiting_for_fetch_) return false;  // a late wake: this request asked the broker since
    waiting_for_fetch_ = false;
    return advance(env);
}

bool fetch_exchange::reads_ahead() const {
    for (const physical_partition& physical : physicals_)
        if (physical.active && !physical.at_end) return true;
    return false;
}

bool fetch_exchange::prepare(exchange_env& env) {
    window_ = &env.remap.window;
    reader_ = reinterpret_cast<uintptr_t>(env.session.get());
    server_ = &env.server;
    std::map<std::pair<std::string, int32_t>, int> physical_index;
    for (auto& requested : request_.topics) {
        client_topic topic;
        topic.id = requested.topic_id;
        if (version_ >= fetch_version_topic_ids) {
            if (auto name = env.remap.names.find(requested.topic_id)) topic.name = *name;
        } else {
            topic.name = requested.topic;
        }
        topic.hint_key = hint_key_of(topic.name, topic.id, version_);
        if (!topic.name.empty()) {
            auto counted = env.remap.mappings.lookup_counted(
                topic.name, [&](std::string_view name) { return env.metrics.topic_slot(name); });
            topic.mapping = counted.mapping;
            topic.stats_slot = counted.slot;
        }
        bool unknown_id = topic.name.empty() && version_ >= fetch_version_topic_ids;
        if (unknown_id || topic.mapping.remapped()) any_mapped_ = true;
        size_t topic_index = topics_.size();
        topics_.push_back(std::move(topic));
        const client_topic& current = topics_.back();
        for (const auto& wanted : requested.partitions) {
            client_partition entry;
            entry.topic = topic_index;
            entry.partition = wanted.partition;
            entry.fetch_offset = wanted.fetch_offset;
            entry.max_bytes = wanted.partition_max_bytes;
            entry.current_leader_epoch = wanted.current_leader_epoch;
            int32_t physical = wanted.partition;
            bool mapped = current.mapping.remapped();
            if (unknown_id) {
                entry.local_error = exchange_util::unknown_topic_id;
            } else if (mapped && (wanted.partition < 0 || wanted.partition >= current.mapping.virtual_partitions)) {
                entry.local_error = exchange_util::unknown_topic_or_partition;
            } else if (mapped) {
                physical = wanted.partition % current.mapping.physical_partitions;
            }
            if (entry.local_error != 0) {
                bump(env.metrics.partition_errors_local);
                clients_.push_back(std::move(entry));
                continue;
            }
            int64_t start = entry.fetch_offset;
            if (mapped) {
                bump(env.metrics.topic(current.stats_slot).partitions_remapped);
                start = env.remap.hints.resume_offset(current.hint_key, physical, wanted.partition, entry.fetch_offset);
                if (start > entry.fetch_offset) bump(env.metrics.fetch_hint_skipped_offsets, uint64_t(start - entry.fetch_offset));
            }
            auto key = std::make_pair(current.name, physical);
            auto found = physical_index.find(key);
            if (found == physical_index.end()) {
                physical_partition added;
                added.topic = topic_index;
                added.partition = physical;
                added.mapped = mapped;
                added.fetch_offset = start;
                added.max_bytes = entry.max_bytes;
                added.current_leader_epoch = entry.current_leader_epoch;
                found = physical_index.emplace(key, int(physicals_.size())).first;
                physicals_.push_back(std::move(added));
            } else {
                physical_partition& shared = physicals_[size_t(found->second)];
                shared.fetch_offset = std::min(shared.fetch_offset, start);
                shared.max_bytes = std::max(shared.max_bytes, entry.max_bytes);
                shared.current_leader_epoch = std::max(shared.current_leader_epoch, entry.current_leader_epoch);
            }
            entry.physical = found->second;
            physicals_[size_t(found->second)].clients.push_back(clients_.size());
            clients_.push_back(std::move(entry));
        }
    }
    for (const physical_partition& physical : physicals_)
        if (physical.mapped) window_->note_reader(key_of(physical), reader_, env.now_ns);
    return !physicals_.empty();
}

void fetch_exchange::send_round(exchange_env& env) {
    messages::fetch_request out;
    out.replica_id = -1;
    uint64_t elapsed_ms = (env.now_ns - start_ns_) / 1'000'000u;
    int32_t wait_ms = request_.max_wait_ms;
    if (rounds_ > 0) wait_ms = int32_t(std::max<int64_t>(0, int64_t(request_.max_wait_ms) - int64_t(elapsed_ms)));
    // Reading through what the broker holds: at once, on the scan link.
    upstream_link* scan = rounds_ > 0 && reads_ahead() && env.scan ? env.scan->scan_link() : nullptr;
    if (scan) wait_ms = 0;
    out.max_wait_ms = wait_ms;
    out.min_bytes = request_.min_bytes;
    out.max_bytes = request_.max_bytes;
    out.isolation_level = request_.isolation_level;
    out.session_id = 0;
    out.session_epoch = -1;
    out.rack_id = request_.rack_id;
    std::map<size_t, size_t> topic_slot;  // client topic -> index in out.topics
    for (const physical_partition& physical : physicals_) {
        if (!physical.active) continue;
        auto slot = topic_slot.find(physical.topic);
        if (slot == topic_slot.end()) {
            messages::fetch_request::topics_element topic;
            topic.topic = topics_[physical.topic].name;
            topic.topic_id = topics_[physical.topic].id;
            slot = topic_slot.emplace(physical.topic, out.topics.size()).first;
            out.topics.push_back(std::move(topic));
        }
        messages::fetch_request::topics_element::partitions_element partition;
        partition.partition = physical.partition;
        partition.current_leader_epoch = physical.current_leader_epoch;
        partition.fetch_offset = physical.fetch_offset;
        partition.last_fetched_epoch = -1;
        partition.log_start_offset = -1;
        partition.partition_max_bytes = physical.max_bytes;
        out.topics[slot->second].partitions.push_back(partition);
    }
    // Others may wait for this fetch only when its connection carries nothing else: behind
    // other requests (pipelined fetches) it could come back long after its max_wait.
    upstream_link& link = scan ? *scan : env.upstream;
    if (window_ && window_->enabled() && link.in_flight() == 0) {
        uint64_t due_ns = env.now_ns + uint64_t(wait_ms) * 1'000'000u + window_wait_grace_ns;
        for (physical_partition& physical : physicals_)
            if (physical.active && physical.mapped)
                physical.window_fetch = window_->begin_fetch(key_of(physical), physical.fetch_offset, request_.min_bytes,
                                                             env.now_ns, due_ns);
    }
    protocol::wire_writer writer;
    messages::encode(out, version_, writer);
    uint32_t length = uint32_t(writer.size());
    std::vector<byte_slice> body{byte_slice{reactor::shared_bytes::copy_of(writer.bytes()), 0, length}};
    if (scan)
        send_upstream_on(*scan, env, protocol::api_key::fetch, version_, header_tail_, std::move(body), true);
    else
        send_upstream(env, protocol::api_key::fetch, version_, header_tail_, std::move(body), true);
    if (rounds_ > 0) bump(env.metrics.fetch_scan_rounds);
    ++rounds_;
}

int fetch_exchange::find_physical(const fetched_topic& topic, int32_t partition, const std::vector<bool>& asked) const {
    for (size_t index = 0; index < physicals_.size(); ++index) {
        const physical_partition& physical = physicals_[index];
        if (!asked[index] || physical.partition != partition) continue;
        const client_topic& named = topics_[physical.topic];
        if (version_ >= fetch_version_topic_ids ? named.id == topic.id : named.name == topic.name) return int(index);
    }
    return -1;
}

void fetch_exchange::absorb(exchange_env& env, const protocol::frame& frame, fetched_topic& topic,
                            fetched_partition& answer, const std::vector<bool>& asked) {
    int found = find_physical(topic, answer.index, asked);
    if (found < 0) return;  // not asked for in this round: ignored
    std::vector<byte_slice> field;
    if (!answer.records_null && answer.records_bytes > 0)
        exchange_util::slices_of(frame, answer.records_at, answer.records_bytes, field);
    absorb_field(env, size_t(found), answer, field, true);
}

// A broker's answer for a mapped partition goes into the window (its whole batches) for the
// other requests of this core that read the partition, when another connection read it
// lately: a lone consumer's answers are neither copied nor kept.
void fetch_exchange::keep_in_window(const physical_partition& physical, const fetched_partition& answer,
                                    const std::vector<byte_slice>& field, const demux_result& result,
                                    uint64_t now_ns) {
    if (!window_ || !window_->enabled() || answer.error_code != 0 || answer.records_null ||
        result.first_error != protocol::batch_error::none || result.next_fetch_offset <= physical.fetch_offset ||
        !window_->shared(key_of(physical), reader_, now_ns))
        return;
    window_entry entry;
    entry.from_offset = physical.fetch_offset;
    entry.to_offset = result.next_fetch_offset;
    entry.bytes = result.partial_tail ? result.partial_tail_at : answer.records_bytes;
    exchange_util::slices_of(field, 0, entry.bytes, entry.records);
    // Bytes still in receive buffers are copied, once, into a block of their own for every
    // consumer they serve: kept by reference they would hold buffers the broker connections
    // need (a few records can hold a whole buffer). Frames already copied out of the ring
    // (upstream_link does under pressure) are referenced.
    bool pooled = std::any_of(entry.records.begin(), entry.records.end(),
                              [](const byte_slice& slice) { return slice.owner.pooled(); });
    if (pooled) {
        reactor::shared_bytes block = reactor::shared_bytes::allocate(entry.bytes);
        size_t at = 0;
        for (const byte_slice& slice : entry.records) {
            std::memcpy(block.data() + at, slice.data(), slice.length);
            at += slice.length;
        }
        entry.records = {byte_slice{std::move(block), 0, uint32_t(entry.bytes)}};
    }
    entry.held_bytes = held_bytes(entry.records);
    entry.fields = answer;  // its window_fields
    window_->store(key_of(physical), std::move(entry));
}

void fetch_exchange::absorb_field(exchange_env& env, size_t physical_index, const fetched_partition& answer,
                                  const std::vector<byte_slice>& field, bool from_broker) {
    physical_partition& physical = physicals_[physical_index];
    auto fill_fields = [&](client_partition& client) {
        client.answered = true;
        client.fields = answer;
        client.fields.records_null = true;
    };
    if (answer.error_code != 0 || !physical.mapped) {
        for (size_t index : physical.clients) {
            client_partition& client = clients_[index];
            fill_fields(client);
            if (answer.error_code == 0 && !answer.records_null) {
                client.records.insert(client.records.end(), field.begin(), field.end());
                client.records_bytes = answer.records_bytes;
            }
        }
        return;
    }
    const client_topic& named = topics_[physical.topic];
    std::vector<demux_request> wanted;
    wanted.reserve(physical.clients.size());
    for (size_t index : physical.clients) wanted.push_back({clients_[index].partition, clients_[index].fetch_offset});
    demux_mapping mapping;
    mapping.virtual_partitions = named.mapping.virtual_partitions;
    mapping.physical_partitions = named.mapping.physical_partitions;
    mapping.physical_partition = physical.partition;
    mapping.tag_key = env.remap.tag_key;
    demux_result result;
    result.next_fetch_offset = physical.fetch_offset;
    if (!answer.records_null && answer.records_bytes > 0) {
        std::vector<std::span<const std::byte>> pieces;
        pieces.reserve(field.size());
        for (const byte_slice& slice : field) pieces.push_back(slice.span());
        result = demux_fetch_records(pieces, mapping, wanted, physical.fetch_offset, scratch_);
    }
    scanned_bytes_ += answer.records_bytes;
    topic_counters& counted = env.metrics.topic(named.stats_slot);
    if (from_broker) {
        bump(counted.fetched_bytes, answer.records_bytes);
        keep_in_window(physical, answer, field, result, env.now_ns);
    }
    if (result.first_error != protocol::batch_error::none)
        spdlog::warn("fetch from {} partition {}: {} at byte {} of the records; delivered what came before",
                     named.name, physical.partition, protocol::to_string(result.first_error), result.error_at);
    if (result.counts.foreign_tag_batches > 0 && env.remap.foreign_tag_warned.size() < 10000 &&
        env.remap.foreign_tag_warned.insert(named.name).second)
        spdlog::warn("topic '{}' partition {} holds record batches tagged with a virtual partition outside [0, {}) "
                     "or not living on it (was mapping.virtual_partitions lowered, or were they written around the "
                     "proxy?): they are delivered to no one",
                     named.name, physical.partition, named.mapping.virtual_partitions);
    bool progress = result.next_fetch_offset > physical.fetch_offset;
    int64_t next = std::min(result.next_fetch_offset, answer.high_watermark);
    bool at_end = !result.partial_tail && result.first_error == protocol::batch_error::none &&
                  std::max(result.next_fetch_offset, physical.fetch_offset) >= answer.high_watermark;
    physical.at_end = at_end;
    bool all_empty = true;
    for (size_t slot = 0; slot < physical.clients.size(); ++slot) {
        client_partition& client = clients_[physical.clients[slot]];
        const virtual_partition_slice& slice = result.partitions.empty() ? virtual_partition_slice{} : result.partitions[slot];
        fill_fields(client);
        for (const field_range& range : slice.ranges)
            exchange_util::slices_of(field, range.offset_in_field, range.length_bytes, client.records);
        client.records_bytes += slice.size_bytes;
        bump(counted.delivered_bytes, slice.size_bytes);
        bump(counted.delivered_records, slice.records);
        if (slice.batches > 0) {
            all_empty = false;
            client.last_offset = std::max(client.last_offset, slice.last_offset);
        }
        // Soft state: v has nothing between what it got (or asked for) and where the scan ended.
        int64_t empty_from = client.last_offset >= 0 ? client.last_offset + 1 : client.fetch_offset;
        if (next > empty_from)
            env.remap.hints.record(named.hint_key, physical.partition, client.partition, empty_from, next);
        if (at_end && client.fields.high_watermark >= 0) {
            // Nothing more for v below the physical high watermark: its own ends here.
            int64_t virtual_end = std::min(client.fields.high_watermark, empty_from);
            client.fields.high_watermark = virtual_end;
            env.remap.ends.learn(named.hint_key, physical.partition, client.partition, virtual_end,
                                 answer.high_watermark);
            if (client.fields.last_stable_offset > virtual_end) client.fields.last_stable_offset = virtual_end;
        }
    }
    // Scan on while every virtual partition here is still empty and the broker has more (or,
    // at the end, wait there for new records for the rest of max_wait).
    if (all_empty && result.first_error == protocol::batch_error::none && (progress || at_end)) {
        physical.active = true;
        physical.fetch_offset = std::max(physical.fetch_offset, result.next_fetch_offset);
    }
}

bool fetch_exchange::should_answer(exchange_env& env) const {
    bool any_active = false;
    for (const physical_partition& physical : physicals_) any_active = any_active || physical.active;
    if (!any_active) return true;
    for (const client_partition& client : clients_)
        if (client.records_bytes > 0 || (client.answered && client.fields.error_code != 0)) return true;
    if (rounds_ >= scan_rounds_max || scanned_bytes_ >= scan_bytes_budget) return true;
    uint64_t elapsed_ms = (env.now_ns - start_ns_) / 1'000'000u;
    if (reads_ahead() && env.scan && env.scan->scan_link())
        return int64_t(elapsed_ms) >= int64_t(request_.max_wait_ms) + scan_overtime_ms_max;
    return int64_t(elapsed_ms) + 1 >= int64_t(request_.max_wait_ms);
}

bool fetch_exchange::on_response(exchange_env& env, protocol::frame&& response) {
    std::vector<std::span<const std::byte>> pieces;
    pieces.reserve(response.pieces.size());
    for (const auto& piece : response.pieces) pieces.push_back(piece.span());
    protocol::segmented_reader reader(pieces);
    fetched_response parsed;
    response_parser parser(reader, version_);
    if (!parser.parse(parsed, response)) {
        end_window_fetches();
        spdlog::warn("malformed Fetch v{} response from the broker for {} ({}): answering UNKNOWN_SERVER_ERROR",
                     version_, env.peer, protocol::to_string(reader.error()));
        top_error_ = exchange_util::unknown_server_error;
        answer = build(env);
        return true;
    }
    throttle_time_ms_ = std::max(throttle_time_ms_, parsed.throttle_time_ms);
    if (!parsed.node_endpoints.empty()) node_endpoints_ = parsed.node_endpoints;
    if (parsed.error_code != 0) {
        end_window_fetches();
        top_error_ = parsed.error_code;
        answer = build(env);
        return true;
    }
    // Each round answers every active partition; one the broker left out is not asked again.
    std::vector<bool> asked;
    for (auto& physical : physicals_) {
        asked.push_back(physical.active);
        physical.active = false;
    }
    for (auto& topic : parsed.topics)
        for (auto& partition : topic.partitions) absorb(env, response, topic, partition, asked);
    end_window_fetches();
    return advance(env);
}

std::vector<byte_slice> fetch_exchange::build(exchange_env& env) {
    bool flexible = version_ >= fetch_version_flexible;
    piece_builder out;
    auto& w = out.writer();
    if (flexible) w.write_empty_tagged_fields();  // response header v1
    w.write_int32(throttle_time_ms_);
    if (version_ >= 7) {
        w.write_int16(top_error_);
        w.write_int32(0);  // session id: the proxy keeps no fetch sessions
    }
    if (top_error_ != 0) {
        out.writer().write_array_length(0, flexible);
    } else {
        out.writer().write_array_length(int32_t(topics_.size()), flexible);
        for (size_t t = 0; t < topics_.size(); ++t) {
            const auto& requested = request_.topics[t];
            if (version_ >= fetch_version_topic_ids)
                for (uint8_t byte : requested.topic_id) out.writer().write_int8(int8_t(byte));
            else
                out.writer().write_string(requested.topic, flexible);
            int32_t count = 0;
            for (const auto& client : clients_) count += client.topic == t ? 1 : 0;
            out.writer().write_array_length(count, flexible);
            for (const auto& client : clients_) {
                if (client.topic != t) continue;
                auto& pw = out.writer();
                pw.write_int32(client.partition);
                bool local = client.local_error != 0 || !client.answered;
                const fetched_partition& fields = client.fields;
                // A partition the broker left out (should not happen) is answered as retriable.
                int16_t error = client.local_error != 0 ? client.local_error
                                : !client.answered      ? int16_t(6) /* NOT_LEADER_OR_FOLLOWER */
                                                        : fields.error_code;
                pw.write_int16(error);
                pw.write_int64(local ? -1 : fields.high_watermark);
                pw.write_int64(local ? -1 : fields.last_stable_offset);
                if (version_ >= 5) pw.write_int64(local ? -1 : fields.log_start_offset);
                if (local || fields.aborted_null) {
                    pw.write_array_length(-1, flexible);
                } else {
                    pw.write_array_length(int32_t(fields.aborted.size()), flexible);
                    for (const auto& [producer_id, first_offset] : fields.aborted) {
                        pw.write_int64(producer_id);
                        pw.write_int64(first_offset);
                        if (flexible) pw.write_empty_tagged_fields();
                    }
                }
                if (version_ >= 11) pw.write_int32(local ? -1 : fields.preferred_read_replica);
                if (flexible)
                    pw.write_unsigned_varint(uint32_t(client.records_bytes + 1));
                else
                    pw.write_int32(int32_t(client.records_bytes));
                out.append(client.records);
                if (flexible) {
                    if (local || fields.tagged.empty())
                        out.writer().write_empty_tagged_fields();
                    else
                        out.writer().write_raw(fields.tagged);
                }
            }
            if (flexible) out.writer().write_empty_tagged_fields();
        }
    }
    if (flexible) {
        if (node_endpoints_.empty()) {
            out.writer().write_empty_tagged_fields();
        } else {
            protocol::wire_writer nodes;
            nodes.write_array_length(int32_t(node_endpoints_.size()), true);
            for (const auto& node : node_endpoints_) {
                auto port = broker_port_of(env.server.config().listen, node.node_id);
                nodes.write_int32(node.node_id);
                nodes.write_string(env.server.advertised().host, true);
                nodes.write_int32(port ? int32_t(*port) : 0);
                nodes.write_string(node.rack, true);
                nodes.write_empty_tagged_fields();
            }
            out.writer().write_unsigned_varint(1);
            out.writer().write_unsigned_varint(0);
            out.writer().write_unsigned_varint(uint32_t(nodes.size()));
            out.writer().write_raw(nodes.bytes());
        }
    }
    return out.finish();
}

}  // namespace

exchange_start start_fetch(exchange_env& env, const client_request& request) {
    exchange_start start;
    int16_t version = request.header.fixed.api_version;
    if (version < 4) return exchange_util::refuse_old_version_if_mapped(env, request);
    messages::fetch_request decoded;
    if (messages::decode(decoded, version, request.body()) != protocol::wire_error::none) return start;
    int32_t decoded_session_id = decoded.session_id;
    auto exchange = std::make_unique<fetch_exchange>(version, request.header_tail, std::move(decoded), env.now_ns);
    bool needs_broker = exchange->prepare(env);
    if (!exchange->any_mapped()) return start;
    start.what = exchange_start::kind::pending;
    bool foreign_session = decoded_session_id != 0;
    if (foreign_session) exchange->refuse_session();
    if (!needs_broker || foreign_session) {
        start.what = exchange_start::kind::answered;
        start.answer = exchange->build(env);
        return start;
    }
    if (exchange->advance(env)) {
        start.what = exchange_start::kind::answered;
        start.answer = std::move(exchange->answer);
        return start;
    }
    start.exchange = std::move(exchange);
    return start;
}

}  // namespace kpp::handlers
