// kpp-mem-broker: an in-memory, single-node Kafka broker, a test component only. It serves
// two purposes:
// - the benchmarks' upstream (issue 6): fast, so that benchmarks measure the proxy, not the
//   broker: no disk, no replication, no consumer groups, no transactions, no authentication,
//   no CRC checks;
// - with --strict-producers, the test bed's strict broker (issue 12, DESIGN.md section 5):
//   Kafka's producer-state rules for every idempotent and transactional batch, which neither
//   librdkafka mock applies to idempotent producers; with --drop-answer-every it also appends
//   some Produce requests and then closes the connection unanswered, so clients retry what
//   was written and the rules must catch the duplicate.
// Without the strict flags it behaves exactly as the benchmarks expect.
//
// Usage: kpp-mem-broker [--listen HOST:PORT] [--advertise HOST:PORT]
//                       [--topic NAME:PARTITIONS]... [--retain-bytes N] [--threads N]
//                       [--strict-producers] [--drop-answer-every N]
//   --listen       where to accept connections (default 127.0.0.1:0, any free port)
//   --advertise    the host:port named in Metadata and FindCoordinator (default: the
//                  actual listen address)
//   --topic        a topic to serve (repeatable); unknown topics get error 3
//   --retain-bytes per partition: older batches are dropped past this (default 256 MiB)
//   --threads      accepted for uniform harness command lines; unused: every connection
//                  gets its own I/O thread
//   --strict-producers  per (producer id, partition), for batches with producer id >= 0:
//                  the epoch and the last 5 batches (first and last sequence, base offset).
//                  Lower epoch: INVALID_PRODUCER_EPOCH (47, what Kafka 2.x+ answers Produce);
//                  higher epoch: must start at sequence 0 unless the producer has no state,
//                  else OUT_OF_ORDER_SEQUENCE_NUMBER (45); same epoch: a batch with the
//                  sequences of one of the 5 is a duplicate, answered NONE with the original
//                  base offset and not appended, else it must start at last sequence + 1
//                  (INT32_MAX is followed by 0), else 45. A producer with no state accepts
//                  any sequence (KIP-360). No transaction coordinator: only these rules,
//                  and a transactional batch opens a transaction on the partition that a
//                  control batch of the producer (a marker a test writes as the coordinator
//                  would) ends. DescribeProducers v0 answers this state (last sequence,
//                  epoch, the open transaction's first offset).
//                  InitProducerId 0-4 is served (v2+ flexible): a new id at epoch 0, or,
//                  asked with an id and its current epoch (v3+) or with a transactional id
//                  seen before, the same id at epoch + 1.
//   --drop-answer-every N  (fault mode) every Nth Produce request with acks != 0 that
//                  appends at least one batch, counted over the whole process, is appended
//                  and then its connection is closed without the answer.
// With --strict-producers each rejected or duplicate batch gets a line on stderr, and the
// totals are printed at exit: "kpp-mem-broker: producer checks: D duplicates answered,
// O out-of-order rejected, F fenced, A answers dropped".
// Prints "BOOTSTRAP host:port" (the listen address; 127.0.0.1 for a wildcard) on stdout
// once listening; exits on stdin EOF, a "quit" line, SIGTERM or SIGINT, printing what was
// stored (chunks, records, bytes, batches per codec) to stderr.
//
// One broker, node id 1, leader of every partition (leader epoch -1). Non-flexible versions
// (InitProducerId 2-4 under --strict-producers excepted):
//   Produce 3-8 (advertised 0-8, see supported_apis): client batches are checked (v2 header
//     structure, no CRC) and stored as-is, base offsets patched in place; acks=0: no answer.
//   Fetch 4-11: whole stored batches from the one holding fetch_offset, sent with writev
//     straight from the store; max_wait_ms/min_bytes honoured; no fetch sessions.
//   ListOffsets 1-5: -2 is the log start, anything else the high watermark.
//   Metadata 0-8, FindCoordinator 0-2 (node 1), InitProducerId 0-1 (a counter; 0-4 strict),
//   DescribeProducers 0 (strict only),
//   ApiVersions 0-2 (v3+ gets UNSUPPORTED_VERSION in v0 form, so clients retry lower).
// Anything else closes the connection with a line on stderr. Each connection has its own
// thread, answering in order (a waiting Fetch holds the connection, as on Kafka); each
// partition has its own mutex.

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "protocol/api.h"
#include "protocol/header.h"
#include "protocol/kpp_messages.h"
#include "protocol/record_batch.h"
#include "protocol/wire.h"

namespace {

using namespace kpp::protocol;
namespace msgs = kpp::protocol::messages;
using bytes_ptr = std::shared_ptr<const std::vector<std::byte>>;

constexpr int32_t node_id = 1;
// InitProducerId, spelled out: protocol/api.h names only the keys the proxy itself handles.
constexpr int16_t init_producer_id_key = 22;
constexpr int16_t error_offset_out_of_range = 1;
constexpr int16_t error_corrupt_message = 2;
constexpr int16_t error_unknown_topic_or_partition = 3;
constexpr int16_t error_unsupported_version = 35;
constexpr int16_t error_out_of_order_sequence_number = 45;
constexpr int16_t error_invalid_producer_epoch = 47;
constexpr int16_t error_invalid_producer_id_mapping = 49;
constexpr int16_t error_producer_fenced = 90;  // InitProducerId v4+ says this instead of 47
// Kafka keeps the metadata of this many recent batches per producer and partition.
constexpr size_t producer_batches_cached_max = 5;
constexpr size_t request_bytes_max = 256u << 20;

// Served versions. Produce is advertised from v0 (older requests are still refused):
// librdkafka compresses with gzip, snappy or lz4 only when the broker lists Produce v0.
// strict_max: the highest version with --strict-producers (InitProducerId v3 carries the
// producer's id and epoch, KIP-360; v2+ is flexible).
struct api_range {
    int16_t key, min, max, advertised_min, strict_max;
};
constexpr int16_t describe_producers_key = 61;
// A max below min: not served (DescribeProducers only with --strict-producers).
constexpr api_range supported_apis[] = {
    {api_key::produce, 3, 8, 0, 8},           {api_key::fetch, 4, 11, 4, 11},
    {api_key::list_offsets, 1, 5, 1, 5},      {api_key::metadata, 0, 8, 0, 8},
    {api_key::find_coordinator, 0, 2, 0, 2},  {api_key::api_versions, 0, 2, 0, 2},
    {init_producer_id_key, 0, 1, 0, 4},       {describe_producers_key, 0, -1, 0, 0},
};

volatile sig_atomic_t stop_signal_received = 0;
void on_stop_signal(int) { stop_signal_received = 1; }

int64_t load_int64_be(const std::byte* at) {
    return int64_t((uint64_t(uint32_t(load_int32_be(at))) << 32) | uint32_t(load_int32_be(at + 4)));
}
void store_int64_be(std::byte* at, int64_t value) {
    store_int32_be(at, int32_t(uint64_t(value) >> 32));
    store_int32_be(at + 4, int32_t(uint32_t(uint64_t(value))));
}

// A Fetch that waits for data registers one of these with every partition it asked for.
struct fetch_waiter {
    std::mutex mutex;
    std::condition_variable wake;
    bool signalled = false;
};

// One Produce partition's records field: one or more v2 batches, base offsets patched.
struct stored_chunk {
    int64_t base_offset;
    int64_t next_offset;
    int64_t position;  // bytes appended to the partition before this chunk
    bytes_ptr bytes;
};

// What --strict-producers remembers of one appended batch of a producer.
struct producer_batch {
    int32_t first_sequence, last_sequence;
    int64_t base_offset;
};

// One producer's state on one partition: its epoch and its last appended batches, oldest
// first (at most producer_batches_cached_max).
struct producer_state {
    int16_t epoch = -1;
    std::deque<producer_batch> batches;
    int64_t transaction_start = -1;  // first offset of its open transaction; -1: none
};

struct partition_log {
    std::mutex mutex;
    std::map<int64_t, producer_state> producers;  // by producer id; --strict-producers only
    std::deque<stored_chunk> chunks;
    int64_t log_start = 0;
    int64_t next_offset = 0;      // the high watermark
    int64_t appended_bytes = 0;   // ever appended (positions count from here)
    int64_t retained_bytes = 0;
    std::vector<fetch_waiter*> waiters;

    // First chunk holding offsets >= `offset` (chunks.size() if none). Caller holds mutex.
    size_t find(int64_t offset) const {
        auto at = std::partition_point(chunks.begin(), chunks.end(),
                                       [offset](const stored_chunk& chunk) { return chunk.next_offset <= offset; });
        return size_t(at - chunks.begin());
    }
    // Bytes from `offset` to the end (approximate: whole chunks). Caller holds mutex.
    int64_t bytes_from(int64_t offset) const {
        if (offset < log_start || offset >= next_offset) return 0;
        return appended_bytes - chunks[find(offset)].position;
    }
};

struct options {
    std::string listen_host = "127.0.0.1";
    uint16_t listen_port = 0;
    std::string advertise_host;
    int32_t advertise_port = -1;
    std::vector<std::pair<std::string, int>> topics;
    int64_t retain_bytes = int64_t(256) << 20;
    bool strict_producers = false;
    int64_t drop_answer_every = 0;  // 0: never
};

struct broker {
    options config;
    std::map<std::string, std::vector<std::unique_ptr<partition_log>>, std::less<>> topics;  // fixed after start
    std::atomic<int64_t> next_producer_id{1000};
    std::atomic<int64_t> produced_chunks{0}, produced_records{0}, produced_bytes{0};
    std::atomic<int64_t> batches_by_codec[8]{};
    std::atomic<int> connections{0};
    // --strict-producers: verdict totals, printed at exit.
    std::atomic<int64_t> duplicates_answered{0}, out_of_order_rejected{0}, fenced_rejected{0};
    // --drop-answer-every: Produce requests that appended (and would be answered), answers dropped.
    std::atomic<int64_t> appending_produce_requests{0}, answers_dropped{0};
    // InitProducerId under --strict-producers: the current epoch of every id handed out, and
    // the id of every transactional id seen.
    std::mutex producer_ids_mutex;
    std::map<int64_t, int16_t> producer_epochs;
    std::map<std::string, int64_t, std::less<>> transactional_ids;

    partition_log* find(std::string_view topic, int32_t partition) {
        auto it = topics.find(topic);
        if (it == topics.end() || partition < 0 || size_t(partition) >= it->second.size()) return nullptr;
        return it->second[size_t(partition)].get();
    }
};

// The producer fields of one batch of a Produce request, for --strict-producers.
struct producer_batch_info {
    int64_t producer_id;  // -1: none, the batch is not checked
    int16_t epoch;
    int32_t first_sequence, last_sequence;
    bool transactional = false;
    bool control = false;  // a transaction marker: ends the open transaction, no sequence
};

// Sequences run 0..INT32_MAX and then start again at 0.
int32_t next_sequence(int32_t sequence) { return sequence == INT32_MAX ? 0 : sequence + 1; }
int32_t last_sequence_of(int32_t first_sequence, int32_t last_offset_delta) {
    int64_t last = int64_t(first_sequence) + last_offset_delta;
    return last > INT32_MAX ? int32_t(last - INT32_MAX - 1) : int32_t(last);
}

// Checks a Produce records field (v2 batches only, structure not CRC) and counts its records
// and batches per codec. With `infos`, also lists each batch's producer fields, in order.
int16_t check_records(std::span<const std::byte> field, int64_t& records, int64_t (&by_codec)[8],
                      std::vector<producer_batch_info>* infos) {
    batch_iterator batches(field);
    batch_entry entry;
    records = 0;
    while (batches.next(entry)) {
        if (entry.magic != 2 || validate_batch_header(entry.bytes) != batch_error::none) return error_corrupt_message;
        record_batch_view view(entry.bytes);
        if (view.last_offset_delta() < 0) return error_corrupt_message;
        records += int64_t(view.last_offset_delta()) + 1;
        ++by_codec[size_t(view.compression()) & 7];
        if (infos) {
            int64_t producer_id = view.producer_id() < 0 ? -1 : view.producer_id();
            // A producer id without a sequence cannot be checked: malformed here (markers
            // written by a test as the coordinator would have none).
            if (producer_id >= 0 && !view.is_control() && (view.base_sequence() < 0 || view.producer_epoch() < 0))
                return error_corrupt_message;
            infos->push_back({producer_id, view.producer_epoch(), view.base_sequence(),
                              last_sequence_of(view.base_sequence(), view.last_offset_delta()),
                              view.is_transactional(), view.is_control()});
        }
    }
    if (batches.error() != batch_error::none || batches.partial() || records == 0) return error_corrupt_message;
    return 0;
}

// What Kafka's producer-state rules say of one batch, given the producer's state on the
// partition (null: none).
struct producer_verdict {
    int16_t error_code = 0;
    int64_t duplicate_of = -1;  // >= 0: a repeat of the batch appended at this base offset
    std::string reason;
};

producer_verdict check_producer_batch(const producer_state* state, const producer_batch_info& batch) {
    char reason[160];
    if (!state || state->batches.empty()) return {};  // no state: any sequence (KIP-360)
    if (batch.epoch < state->epoch) {
        std::snprintf(reason, sizeof reason, "epoch %d is below the producer's %d", batch.epoch, state->epoch);
        return {error_invalid_producer_epoch, -1, reason};
    }
    if (batch.epoch > state->epoch) {
        if (batch.first_sequence == 0) return {};
        std::snprintf(reason, sizeof reason, "a new epoch (was %d) must start at sequence 0", state->epoch);
        return {error_out_of_order_sequence_number, -1, reason};
    }
    for (const producer_batch& cached : state->batches)
        if (cached.first_sequence == batch.first_sequence && cached.last_sequence == batch.last_sequence)
            return {0, cached.base_offset, "duplicate"};
    int32_t expected = next_sequence(state->batches.back().last_sequence);
    if (batch.first_sequence == expected) return {};
    std::snprintf(reason, sizeof reason, "expected sequence %d", expected);
    return {error_out_of_order_sequence_number, -1, reason};
}

void record_producer_batch(producer_state& state, const producer_batch_info& batch, int64_t base_offset) {
    if (batch.control) {
        state.transaction_start = -1;
        return;
    }
    if (batch.epoch != state.epoch) {
        state.batches.clear();
        state.transaction_start = -1;
    }
    state.epoch = batch.epoch;
    state.batches.push_back({batch.first_sequence, batch.last_sequence, base_offset});
    if (state.batches.size() > producer_batches_cached_max) state.batches.pop_front();
    if (batch.transactional && state.transaction_start < 0) state.transaction_start = base_offset;
}

// Checks every batch of one Produce partition entry in order, as if the earlier ones were
// appended. The first error or duplicate decides for the whole entry, as on Kafka. Caller
// holds the partition's mutex.
producer_verdict check_producer_batches(const partition_log& log, const std::vector<producer_batch_info>& infos,
                                        const producer_batch_info*& decided_by) {
    std::map<int64_t, producer_state> scratch;  // states as the earlier batches left them
    for (const producer_batch_info& batch : infos) {
        if (batch.producer_id < 0 || batch.control) continue;
        const producer_state* state = nullptr;
        if (auto found = scratch.find(batch.producer_id); found != scratch.end()) {
            state = &found->second;
        } else if (auto stored = log.producers.find(batch.producer_id); stored != log.producers.end()) {
            state = &stored->second;
        }
        producer_verdict verdict = check_producer_batch(state, batch);
        if (verdict.error_code != 0 || verdict.duplicate_of >= 0) {
            decided_by = &batch;
            return verdict;
        }
        producer_state next = state ? *state : producer_state{};
        record_producer_batch(next, batch, -1);
        scratch[batch.producer_id] = std::move(next);
    }
    return {};
}

const char* producer_error_name(int16_t error_code) {
    switch (error_code) {
        case 0: return "NONE (duplicate)";
        case error_out_of_order_sequence_number: return "OUT_OF_ORDER_SEQUENCE_NUMBER";
        case error_invalid_producer_epoch: return "INVALID_PRODUCER_EPOCH";
        default: return "error";
    }
}

class connection {
public:
    connection(int fd, broker& state) : fd_(fd), state_(state) {}
    ~connection() { ::close(fd_); }

    void run() {
        for (;;) {
            // Answer every complete request already read, then send the answers together.
            for (;;) {
                size_t have = in_end_ - in_begin_;
                if (have < 4) break;
                int32_t size = load_int32_be(in_.get() + in_begin_);
                if (size < int32_t(request_header_fixed_bytes) || size_t(size) > request_bytes_max) {
                    std::fprintf(stderr, "kpp-mem-broker: closing connection: bad request size %d\n", size);
                    return;
                }
                if (have < 4 + size_t(size)) {
                    if (in_size_ - in_begin_ < 4 + size_t(size)) make_room(4 + size_t(size));
                    break;
                }
                std::span<std::byte> request(in_.get() + in_begin_ + 4, size_t(size));
                in_begin_ += 4 + size_t(size);
                if (!handle(request)) {
                    flush();
                    return;
                }
            }
            if (!flush()) return;
            if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
            if (in_end_ == in_size_) make_room(in_size_ - in_begin_ + 1);
            ssize_t got = ::read(fd_, in_.get() + in_end_, in_size_ - in_end_);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) return;
            in_end_ += size_t(got);
        }
    }

private:
    // Moves unread bytes to the front and grows the buffer to hold at least `needed`.
    void make_room(size_t needed) {
        if (in_size_ < needed) {
            size_t size = std::max(needed, in_size_ * 2);
            auto bigger = std::make_unique_for_overwrite<std::byte[]>(size);
            std::memcpy(bigger.get(), in_.get() + in_begin_, in_end_ - in_begin_);
            in_ = std::move(bigger);
            in_size_ = size;
        } else {
            std::memmove(in_.get(), in_.get() + in_begin_, in_end_ - in_begin_);
        }
        in_end_ -= in_begin_;
        in_begin_ = 0;
    }

    // Responses are queued as pieces: owned bytes plus stored chunks, sent with writev.
    void queue(bytes_ptr bytes, size_t offset, size_t length) {
        if (length == 0) return;
        out_.push_back(iovec{const_cast<std::byte*>(bytes->data() + offset), length});
        holds_.push_back(std::move(bytes));
    }
    // Starts a response in `writer`: size placeholder and correlation id (header v0).
    static void begin_response(wire_writer& writer, int32_t correlation_id) {
        writer.write_int32(0);
        writer.write_int32(correlation_id);
    }
    void queue_response(wire_writer& writer) {
        writer.patch_int32(0, int32_t(writer.size() - 4));
        auto owned = std::make_shared<std::vector<std::byte>>(std::move(writer.bytes()));
        size_t length = owned->size();
        queue(std::move(owned), 0, length);
    }
    template <typename message_type>
    void respond(int32_t correlation_id, const message_type& message, int16_t version, bool flexible_header = false) {
        wire_writer writer;
        begin_response(writer, correlation_id);
        if (flexible_header) writer.write_empty_tagged_fields();  // response header v1
        msgs::encode(message, version, writer);
        queue_response(writer);
    }

    bool flush() {
        size_t next = 0;
        while (next < out_.size()) {
            int count = int(std::min<size_t>(out_.size() - next, IOV_MAX));
            ssize_t wrote = ::writev(fd_, out_.data() + next, count);
            if (wrote < 0) {
                if (errno == EINTR) continue;
                return false;
            }
            for (size_t left = size_t(wrote); left > 0;) {
                iovec& piece = out_[next];
                size_t used = std::min(left, piece.iov_len);
                piece.iov_base = static_cast<std::byte*>(piece.iov_base) + used;
                piece.iov_len -= used;
                left -= used;
                if (piece.iov_len == 0) ++next;
            }
            while (next < out_.size() && out_[next].iov_len == 0) ++next;
        }
        out_.clear();
        holds_.clear();
        return true;
    }

    bool handle(std::span<std::byte> request) {
        wire_error error = wire_error::none;
        auto header = parse_request_header(request, error);
        if (!header) {
            std::fprintf(stderr, "kpp-mem-broker: closing connection: bad request header (%s)\n", to_string(error));
            return false;
        }
        int16_t key = header->fixed.api_key, version = header->fixed.api_version;
        int32_t correlation_id = header->fixed.correlation_id;
        auto body = request.subspan(header->header_bytes);
        if (key == api_key::api_versions && version > 2) return api_versions(correlation_id, 0, error_unsupported_version);
        auto range = std::find_if(std::begin(supported_apis), std::end(supported_apis),
                                  [key](const api_range& api) { return api.key == key; });
        if (range == std::end(supported_apis) || version < range->min || version > served_max(*range)) {
            std::fprintf(stderr, "kpp-mem-broker: closing connection: unsupported request %.*s (key %d) v%d\n",
                         int(api_name(key).size()), api_name(key).data(), key, version);
            return false;
        }
        bool ok = true;
        switch (key) {
            case api_key::produce: ok = produce(correlation_id, version, body); break;
            case api_key::fetch: ok = fetch(correlation_id, version, body); break;
            case api_key::list_offsets: ok = list_offsets(correlation_id, version, body); break;
            case api_key::metadata: ok = metadata(correlation_id, version, body); break;
            case api_key::find_coordinator: ok = find_coordinator(correlation_id, version, body); break;
            case api_key::api_versions: ok = api_versions(correlation_id, version, 0); break;
            case describe_producers_key: ok = describe_producers(correlation_id, version, body); break;
            default: ok = init_producer_id(correlation_id, version, body); break;
        }
        if (!ok && !answer_dropped_)
            std::fprintf(stderr, "kpp-mem-broker: closing connection: malformed %.*s v%d request\n",
                         int(api_name(key).size()), api_name(key).data(), version);
        return ok;
    }

    int16_t served_max(const api_range& api) const { return state_.config.strict_producers ? api.strict_max : api.max; }

    bool api_versions(int32_t correlation_id, int16_t version, int16_t error_code) {
        msgs::api_versions_response response;
        response.error_code = error_code;
        for (const api_range& api : supported_apis)
            if (served_max(api) >= api.min) response.api_keys.push_back({api.key, api.advertised_min, served_max(api)});
        respond(correlation_id, response, version);
        return true;
    }

    // Produce v3-8, read by hand so that each records field is copied once, from the read
    // buffer into the stored chunk (the generated decoder copies bytes fields twice).
    bool produce(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        wire_reader reader(body);
        reader.read_string(false, true);  // transactional_id
        int16_t acks = reader.read_int16();
        reader.read_int32();  // timeout_ms
        msgs::produce_response response;
        bool appended_any = false;
        int32_t topic_count = reader.read_array_length(false, false, 6);
        for (int32_t topic_index = 0; topic_index < topic_count && reader.ok(); ++topic_index) {
            auto name = reader.read_string(false, false);
            int32_t partition_count = reader.read_array_length(false, false, 8);
            if (!reader.ok()) break;
            auto& topic_out = response.responses.emplace_back();
            topic_out.name = std::string(*name);
            for (int32_t partition_index = 0; partition_index < partition_count && reader.ok(); ++partition_index) {
                int32_t partition = reader.read_int32();
                auto records = reader.read_bytes_field(false, true);
                if (reader.ok())
                    topic_out.partition_responses.push_back(append(topic_out.name, partition, records, appended_any));
            }
        }
        if (!reader.ok()) return false;
        if (acks == 0) return true;
        if (int64_t every = state_.config.drop_answer_every; every > 0 && appended_any &&
                                                             ++state_.appending_produce_requests % every == 0) {
            // Written, never answered: the client must retry what the log already holds.
            ++state_.answers_dropped;
            answer_dropped_ = true;
            std::fprintf(stderr, "kpp-mem-broker: dropped the answer to Produce correlation id %d and closed the "
                                 "connection (--drop-answer-every %lld)\n", correlation_id, (long long)every);
            return false;
        }
        respond(correlation_id, response, version);
        return true;
    }

    msgs::produce_response::responses_element::partition_responses_element append(
        std::string_view topic, int32_t partition, std::optional<std::span<const std::byte>> records,
        bool& appended) {
        msgs::produce_response::responses_element::partition_responses_element out;
        out.index = partition;
        out.base_offset = out.log_append_time_ms = out.log_start_offset = -1;
        partition_log* log = state_.find(topic, partition);
        int64_t record_count = 0;
        if (!log) {
            out.error_code = error_unknown_topic_or_partition;
            return out;
        }
        bool strict = state_.config.strict_producers;
        std::vector<producer_batch_info> infos;
        int64_t by_codec[8]{};
        if (!records || check_records(*records, record_count, by_codec, strict ? &infos : nullptr) != 0) {
            out.error_code = error_corrupt_message;
            return out;
        }
        auto stored = std::make_shared<std::vector<std::byte>>(records->begin(), records->end());
        int64_t size = int64_t(stored->size());
        std::lock_guard lock(log->mutex);
        if (strict) {
            const producer_batch_info* decided_by = nullptr;
            producer_verdict verdict = check_producer_batches(*log, infos, decided_by);
            if (decided_by) {
                std::fprintf(stderr,
                             "kpp-mem-broker: %s (%d): %.*s [%d] producer id %lld epoch %d sequences %d..%d: %s\n",
                             producer_error_name(verdict.error_code), verdict.error_code, int(topic.size()),
                             topic.data(), partition, (long long)decided_by->producer_id, decided_by->epoch,
                             decided_by->first_sequence, decided_by->last_sequence, verdict.reason.c_str());
                if (verdict.error_code == error_invalid_producer_epoch) ++state_.fenced_rejected;
                else if (verdict.error_code != 0) ++state_.out_of_order_rejected;
                else ++state_.duplicates_answered;
                out.error_code = verdict.error_code;
                out.base_offset = verdict.error_code ? -1 : verdict.duplicate_of;
                out.log_start_offset = log->log_start;
                return out;
            }
        }
        int64_t base = log->next_offset, next = base;
        size_t batch_index = 0;
        for (size_t at = 0; at < stored->size(); ++batch_index) {  // base offsets, in place
            std::byte* batch = stored->data() + at;
            store_int64_be(batch, next);
            if (strict && infos[batch_index].producer_id >= 0)
                record_producer_batch(log->producers[infos[batch_index].producer_id], infos[batch_index], next);
            next += int64_t(load_int32_be(batch + batch_layout::last_offset_delta_at)) + 1;
            at += batch_layout::log_overhead_bytes + size_t(load_int32_be(batch + batch_layout::batch_length_at));
        }
        log->chunks.push_back({base, next, log->appended_bytes, std::move(stored)});
        log->next_offset = next;
        log->appended_bytes += size;
        log->retained_bytes += size;
        while (log->retained_bytes > state_.config.retain_bytes && log->chunks.size() > 1) {
            log->retained_bytes -= int64_t(log->chunks.front().bytes->size());
            log->chunks.pop_front();
            log->log_start = log->chunks.front().base_offset;
        }
        for (fetch_waiter* waiter : log->waiters) {
            std::lock_guard wake_lock(waiter->mutex);
            waiter->signalled = true;
            waiter->wake.notify_one();
        }
        out.base_offset = base;
        out.log_start_offset = log->log_start;
        appended = true;
        for (size_t codec = 0; codec < 8; ++codec)
            if (by_codec[codec]) state_.batches_by_codec[codec] += by_codec[codec];
        state_.produced_chunks += 1;
        state_.produced_records += record_count;
        state_.produced_bytes += size;
        return out;
    }

    bool fetch(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        msgs::fetch_request request;
        if (msgs::decode(request, version, body) != wire_error::none) return false;
        std::vector<partition_log*> logs;  // per requested partition, in order; null: unknown
        for (const auto& topic : request.topics)
            for (const auto& partition : topic.partitions) logs.push_back(state_.find(topic.topic, partition.partition));

        // Bytes available now, capped per partition; -1 when some partition has an error.
        auto available = [&]() -> int64_t {
            int64_t total = 0;
            size_t index = 0;
            for (const auto& topic : request.topics)
                for (const auto& partition : topic.partitions) {
                    partition_log* log = logs[index++];
                    if (!log) return -1;
                    std::lock_guard lock(log->mutex);
                    if (partition.fetch_offset < log->log_start || partition.fetch_offset > log->next_offset) return -1;
                    total += std::min<int64_t>(log->bytes_from(partition.fetch_offset), partition.partition_max_bytes);
                }
            return total;
        };
        int64_t ready = available();
        if (ready >= 0 && ready < request.min_bytes && request.max_wait_ms > 0) {
            if (!flush()) return false;  // earlier answers should not wait behind this one
            auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(request.max_wait_ms);
            fetch_waiter waiter;
            for (partition_log* log : logs) {
                std::lock_guard lock(log->mutex);
                log->waiters.push_back(&waiter);
            }
            for (;;) {
                ready = available();
                if (ready < 0 || ready >= request.min_bytes) break;
                std::unique_lock lock(waiter.mutex);
                if (!waiter.wake.wait_until(lock, deadline, [&] { return waiter.signalled; })) break;
                waiter.signalled = false;
            }
            for (partition_log* log : logs) {
                std::lock_guard lock(log->mutex);
                std::erase(log->waiters, &waiter);
            }
        }

        // Fetch v4-11, written here so stored batches go out without a copy: the response is
        // owned pieces (fields) between references to stored chunks.
        size_t first_piece = out_.size();
        std::shared_ptr<std::vector<std::byte>> head;  // holds the size prefix
        wire_writer writer;
        auto cut = [&] {
            auto owned = std::make_shared<std::vector<std::byte>>(std::move(writer.bytes()));
            writer.bytes().clear();
            if (!head) head = owned;
            size_t length = owned->size();
            queue(std::move(owned), 0, length);
        };
        begin_response(writer, correlation_id);
        writer.write_int32(0);  // throttle_time_ms
        if (version >= 7) {
            writer.write_int16(0);  // error_code
            writer.write_int32(0);  // session_id
        }
        int64_t response_bytes = 0;
        struct piece {
            bytes_ptr chunk;
            size_t offset, length;
        };
        std::vector<piece> pieces;
        writer.write_array_length(int32_t(request.topics.size()), false);
        size_t index = 0;
        for (const auto& topic : request.topics) {
            writer.write_string(topic.topic, false);
            writer.write_array_length(int32_t(topic.partitions.size()), false);
            for (const auto& partition : topic.partitions) {
                partition_log* log = logs[index++];
                int16_t error_code = 0;
                int64_t high_watermark = -1, log_start = -1, partition_bytes = 0;
                pieces.clear();
                if (!log) {
                    error_code = error_unknown_topic_or_partition;
                } else {
                    std::lock_guard lock(log->mutex);
                    high_watermark = log->next_offset;
                    log_start = log->log_start;
                    int64_t offset = partition.fetch_offset;
                    if (offset < log_start || offset > high_watermark) error_code = error_offset_out_of_range;
                    bool full = false;
                    size_t at = error_code ? log->chunks.size() : log->find(offset);
                    for (; at < log->chunks.size() && !full; ++at) {
                        const stored_chunk& chunk = log->chunks[at];
                        size_t begin = 0, end = 0;
                        for (size_t batch_at = 0; batch_at < chunk.bytes->size();) {
                            const std::byte* batch = chunk.bytes->data() + batch_at;
                            size_t size = batch_layout::log_overhead_bytes +
                                          size_t(load_int32_be(batch + batch_layout::batch_length_at));
                            int64_t last = load_int64_be(batch) + load_int32_be(batch + batch_layout::last_offset_delta_at);
                            if (last < offset) {  // only in the first chunk
                                batch_at = begin = end = batch_at + size;
                                continue;
                            }
                            // Whole batches within both limits; the first of a partition goes
                            // while the response has room, and the response's first always.
                            bool fits = partition_bytes + int64_t(size) <= partition.partition_max_bytes &&
                                        response_bytes + int64_t(size) <= request.max_bytes;
                            bool first = partition_bytes == 0 &&
                                         (response_bytes == 0 || response_bytes + int64_t(size) <= request.max_bytes);
                            if (!fits && !first) {
                                full = true;
                                break;
                            }
                            partition_bytes += int64_t(size);
                            response_bytes += int64_t(size);
                            batch_at = end = batch_at + size;
                        }
                        if (end > begin) pieces.push_back({chunk.bytes, begin, end - begin});
                    }
                }
                writer.write_int32(partition.partition);
                writer.write_int16(error_code);
                writer.write_int64(high_watermark);
                writer.write_int64(high_watermark);  // last_stable_offset
                if (version >= 5) writer.write_int64(log_start);
                writer.write_array_length(request.isolation_level ? 0 : -1, false);  // aborted_transactions
                if (version >= 11) writer.write_int32(-1);                           // preferred_read_replica
                writer.write_int32(int32_t(partition_bytes));
                if (pieces.empty()) continue;
                cut();
                for (piece& stored : pieces) queue(std::move(stored.chunk), stored.offset, stored.length);
            }
        }
        cut();
        size_t total = 0;
        for (size_t at = first_piece; at < out_.size(); ++at) total += out_[at].iov_len;
        store_int32_be(head->data(), int32_t(total - 4));
        return true;
    }

    bool list_offsets(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        msgs::list_offsets_request request;
        if (msgs::decode(request, version, body) != wire_error::none) return false;
        msgs::list_offsets_response response;
        for (const auto& topic : request.topics) {
            auto& topic_out = response.topics.emplace_back();
            topic_out.name = topic.name;
            for (const auto& partition : topic.partitions) {
                auto& out = topic_out.partitions.emplace_back();
                out.partition_index = partition.partition_index;
                out.timestamp = -1;
                out.offset = -1;
                out.leader_epoch = -1;
                partition_log* log = state_.find(topic.name, partition.partition_index);
                if (!log) {
                    out.error_code = error_unknown_topic_or_partition;
                    continue;
                }
                std::lock_guard lock(log->mutex);
                out.offset = partition.timestamp == -2 ? log->log_start : log->next_offset;
            }
        }
        respond(correlation_id, response, version);
        return true;
    }

    bool metadata(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        msgs::metadata_request request;
        if (msgs::decode(request, version, body) != wire_error::none) return false;
        msgs::metadata_response response;
        response.brokers.push_back({node_id, state_.config.advertise_host, state_.config.advertise_port, std::nullopt});
        response.cluster_id = "kpp-mem-broker";
        response.controller_id = node_id;
        response.cluster_authorized_operations = INT32_MIN;
        auto describe = [&](const std::string& name) {
            auto& out = response.topics.emplace_back();
            out.name = name;
            out.topic_authorized_operations = INT32_MIN;
            auto found = state_.topics.find(name);
            if (found == state_.topics.end()) {
                out.error_code = error_unknown_topic_or_partition;
                return;
            }
            for (size_t index = 0; index < found->second.size(); ++index)
                out.partitions.push_back({0, int32_t(index), node_id, -1, {node_id}, {node_id}, {}});
        };
        // All topics: null from v1, an empty array in v0.
        bool all = !request.topics || (version == 0 && request.topics->empty());
        if (all) {
            for (const auto& [name, partitions] : state_.topics) describe(name);
        } else {
            for (const auto& topic : *request.topics) describe(topic.name.value_or(""));
        }
        respond(correlation_id, response, version);
        return true;
    }

    bool find_coordinator(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        msgs::find_coordinator_request request;
        if (msgs::decode(request, version, body) != wire_error::none) return false;
        msgs::find_coordinator_response response;
        response.node_id = node_id;
        response.host = state_.config.advertise_host;
        response.port = state_.config.advertise_port;
        respond(correlation_id, response, version);
        return true;
    }

    // --strict-producers: the producer state of each partition asked for (last sequence,
    // epoch, the open transaction's first offset), as Kafka's DescribeProducers.
    bool describe_producers(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        msgs::describe_producers_request request;
        if (msgs::decode(request, version, body) != wire_error::none) return false;
        msgs::describe_producers_response response;
        for (const auto& topic : request.topics) {
            auto& out = response.topics.emplace_back();
            out.name = topic.name;
            for (int32_t index : topic.partition_indexes) {
                auto& partition = out.partitions.emplace_back();
                partition.partition_index = index;
                partition_log* log = state_.find(topic.name, index);
                if (!log) {
                    partition.error_code = error_unknown_topic_or_partition;
                    continue;
                }
                std::lock_guard lock(log->mutex);
                for (const auto& [producer_id, state] : log->producers) {
                    auto& producer = partition.active_producers.emplace_back();
                    producer.producer_id = producer_id;
                    producer.producer_epoch = state.epoch;
                    producer.last_sequence = state.batches.empty() ? -1 : state.batches.back().last_sequence;
                    producer.last_timestamp = -1;
                    producer.coordinator_epoch = -1;
                    producer.current_txn_start_offset = state.transaction_start;
                }
            }
        }
        respond(correlation_id, response, version, true);  // flexible from v0
        return true;
    }

    // A new id at epoch 0 (a counter). Under --strict-producers also the epoch bump: asked
    // with an id and its current epoch (v3+, KIP-360), or with a transactional id seen before,
    // the same id at epoch + 1 (a new id once the epoch is used up). Kafka itself gives an
    // idempotent producer (no transactional id) a new id instead of the bump; here the bump
    // keeps the id, so that tests see one producer id move to a new epoch.
    bool init_producer_id(int32_t correlation_id, int16_t version, std::span<const std::byte> body) {
        msgs::init_producer_id_response response;
        if (!state_.config.strict_producers) {
            response.producer_id = state_.next_producer_id++;
            response.producer_epoch = 0;
            respond(correlation_id, response, version);
            return true;
        }
        msgs::init_producer_id_request request;
        if (msgs::decode(request, version, body) != wire_error::none) return false;
        int64_t asked_id = version >= 3 ? request.producer_id : -1;
        std::lock_guard lock(state_.producer_ids_mutex);
        int64_t id = -1;
        response.producer_id = -1;
        response.producer_epoch = -1;
        if (asked_id >= 0) {
            auto found = state_.producer_epochs.find(asked_id);
            if (found == state_.producer_epochs.end()) {
                response.error_code = error_invalid_producer_id_mapping;
            } else if (found->second != request.producer_epoch) {
                response.error_code = version >= 4 ? error_producer_fenced : error_invalid_producer_epoch;
            } else {
                id = asked_id;
            }
        } else if (request.transactional_id) {
            if (auto found = state_.transactional_ids.find(*request.transactional_id);
                found != state_.transactional_ids.end())
                id = found->second;
        }
        if (response.error_code == 0) {
            if (id >= 0 && state_.producer_epochs[id] < INT16_MAX - 1) {
                response.producer_epoch = ++state_.producer_epochs[id];
            } else {
                id = state_.next_producer_id++;
                response.producer_epoch = 0;
                state_.producer_epochs[id] = 0;
            }
            response.producer_id = id;
            if (request.transactional_id) state_.transactional_ids[*request.transactional_id] = id;
        }
        respond(correlation_id, response, version, response_header_is_flexible(init_producer_id_key, version));
        return true;
    }

    int fd_;
    broker& state_;
    // Read buffer, big enough that frames seldom straddle its end (pages untouched until used).
    size_t in_size_ = 4u << 20;
    std::unique_ptr<std::byte[]> in_ = std::make_unique_for_overwrite<std::byte[]>(in_size_);
    size_t in_begin_ = 0, in_end_ = 0;
    std::vector<iovec> out_;
    std::vector<bytes_ptr> holds_;
    bool answer_dropped_ = false;  // the connection closes on purpose (--drop-answer-every)
};

[[noreturn]] void usage_exit(const char* message) {
    std::fprintf(stderr,
                 "kpp-mem-broker: %s\n"
                 "usage: kpp-mem-broker [--listen HOST:PORT] [--advertise HOST:PORT] [--topic NAME:PARTITIONS]...\n"
                 "                      [--retain-bytes N] [--threads N] [--strict-producers]\n"
                 "                      [--drop-answer-every N]\n",
                 message);
    std::exit(2);
}

template <typename number>
bool parse_number(std::string_view text, number& value) {
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    return error == std::errc() && end == text.data() + text.size();
}

bool parse_host_port(std::string_view text, std::string& host, int32_t& port) {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    host = std::string(text.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return parse_number(text.substr(colon + 1), port) && port >= 0 && port <= 65535;
}

options parse_options(int argc, char** argv) {
    options parsed;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto next = [&]() -> std::string_view {
            if (i + 1 >= argc) usage_exit("missing value after option");
            return argv[++i];
        };
        int32_t port = 0;
        if (arg == "--listen") {
            if (!parse_host_port(next(), parsed.listen_host, port)) usage_exit("--listen wants HOST:PORT");
            parsed.listen_port = uint16_t(port);
        } else if (arg == "--advertise") {
            if (!parse_host_port(next(), parsed.advertise_host, parsed.advertise_port) || parsed.advertise_port == 0)
                usage_exit("--advertise wants HOST:PORT");
        } else if (arg == "--topic") {
            std::string_view spec = next();
            auto colon = spec.rfind(':');
            int partitions = 0;
            if (colon == std::string_view::npos || colon == 0 || !parse_number(spec.substr(colon + 1), partitions) ||
                partitions <= 0 || partitions > 100000)
                usage_exit("--topic wants NAME:PARTITIONS");
            parsed.topics.emplace_back(std::string(spec.substr(0, colon)), partitions);
        } else if (arg == "--retain-bytes") {
            if (!parse_number(next(), parsed.retain_bytes) || parsed.retain_bytes <= 0)
                usage_exit("--retain-bytes wants a positive number");
        } else if (arg == "--strict-producers") {
            parsed.strict_producers = true;
        } else if (arg == "--drop-answer-every") {
            if (!parse_number(next(), parsed.drop_answer_every) || parsed.drop_answer_every <= 0)
                usage_exit("--drop-answer-every wants a positive number");
        } else if (arg == "--threads") {
            int threads = 0;
            if (!parse_number(next(), threads) || threads <= 0) usage_exit("--threads wants a positive number");
        } else {
            usage_exit(arg == "--help" || arg == "-h" ? "help" : "unknown option");
        }
    }
    return parsed;
}

int listen_socket(const options& config, int32_t& bound_port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    std::string port = std::to_string(config.listen_port);
    if (int rc = getaddrinfo(config.listen_host.c_str(), port.c_str(), &hints, &found); rc != 0) {
        std::fprintf(stderr, "kpp-mem-broker: %s: %s\n", config.listen_host.c_str(), gai_strerror(rc));
        return -1;
    }
    int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (fd < 0 || ::bind(fd, found->ai_addr, found->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
        std::fprintf(stderr, "kpp-mem-broker: listen on %s:%s: %s\n", config.listen_host.c_str(), port.c_str(),
                     std::strerror(errno));
        freeaddrinfo(found);
        return -1;
    }
    freeaddrinfo(found);
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    bound_port = ntohs(address.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&address)->sin6_port
                                                     : reinterpret_cast<sockaddr_in*>(&address)->sin_port);
    return fd;
}

void accept_loop(int listen_fd, broker& state) {
    for (;;) {
        int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
        }
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        std::thread([fd, &state] {
            ++state.connections;
            connection(fd, state).run();
            --state.connections;
        }).detach();
    }
}

// Until stdin ends, a "quit" line, or a stop signal.
void wait_for_stop() {
    std::string pending;
    char chunk[4096];
    while (!stop_signal_received) {
        pollfd input{STDIN_FILENO, POLLIN, 0};
        int ready = poll(&input, 1, 200);
        if (ready <= 0) {
            if (ready < 0 && errno != EINTR) return;
            continue;
        }
        ssize_t got = ::read(STDIN_FILENO, chunk, sizeof chunk);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (got <= 0) return;
        pending.append(chunk, size_t(got));
        for (auto newline = pending.find('\n'); newline != std::string::npos; newline = pending.find('\n')) {
            std::string line = pending.substr(0, newline);
            pending.erase(0, newline + 1);
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
            if (line == "quit" || line == "exit") return;
        }
        if (pending.size() > 4096) pending.clear();
    }
}

}  // namespace

int main(int argc, char** argv) {
    auto* state = new broker;  // never freed: connection threads may outlive main's return path
    state->config = parse_options(argc, argv);
    for (const auto& [name, partitions] : state->config.topics) {
        auto& logs = state->topics[name];
        logs.clear();
        for (int index = 0; index < partitions; ++index) logs.push_back(std::make_unique<partition_log>());
    }

    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, nullptr);  // no SA_RESTART: poll() must see EINTR
    sigaction(SIGINT, &action, nullptr);
    signal(SIGPIPE, SIG_IGN);

    int32_t port = 0;
    int listen_fd = listen_socket(state->config, port);
    if (listen_fd < 0) return 1;
    // Clients bootstrap from where the broker listens (127.0.0.1 for a wildcard address);
    // Metadata names the advertised address, that one unless --advertise says otherwise.
    options& config = state->config;
    bool wildcard = config.listen_host == "0.0.0.0" || config.listen_host == "::" || config.listen_host.empty();
    std::string bootstrap_host = wildcard ? "127.0.0.1" : config.listen_host;
    if (config.advertise_host.empty()) {
        config.advertise_host = bootstrap_host;
        config.advertise_port = port;
    }
    std::thread(accept_loop, listen_fd, std::ref(*state)).detach();

    bool v6 = bootstrap_host.find(':') != std::string::npos;
    std::printf("BOOTSTRAP %s%s%s:%d\n", v6 ? "[" : "", bootstrap_host.c_str(), v6 ? "]" : "", port);
    std::fflush(stdout);

    wait_for_stop();

    static const char* codec_names[8] = {"none", "gzip", "snappy", "lz4", "zstd", "5", "6", "7"};
    std::fprintf(stderr, "kpp-mem-broker: stored %lld produce chunks, %lld records, %lld bytes; batches by codec:",
                 (long long)state->produced_chunks.load(), (long long)state->produced_records.load(),
                 (long long)state->produced_bytes.load());
    for (size_t codec = 0; codec < 8; ++codec)
        if (auto count = state->batches_by_codec[codec].load()) std::fprintf(stderr, " %s=%lld", codec_names[codec], (long long)count);
    std::fprintf(stderr, "; %d connections open\n", state->connections.load());
    if (config.strict_producers || config.drop_answer_every > 0)
        std::fprintf(stderr,
                     "kpp-mem-broker: producer checks: %lld duplicates answered, %lld out-of-order rejected, "
                     "%lld fenced, %lld answers dropped\n",
                     (long long)state->duplicates_answered.load(), (long long)state->out_of_order_rejected.load(),
                     (long long)state->fenced_rejected.load(), (long long)state->answers_dropped.load());
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(0);
}
