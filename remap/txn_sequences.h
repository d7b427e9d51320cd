// Sequence renumbering for transactional producers (DESIGN.md section 2, "Transactional
// producers"). A transaction belongs to one producer id, so the client's producer cannot be
// split into aliases: the client keeps one sequence space per VIRTUAL partition v, the broker
// checks one per PHYSICAL partition p, and the proxy hands each client batch the next range
// of the physical space at send time. Pure state, no I/O, no clock reads (now_ms comes in).
//
// A stream is (client producer id X, epoch E, topic T, physical partition p). Per stream:
// the next physical sequence, the batches not yet acknowledged in physical sequence order
// (the order they must reach the broker in), and per v the client sequence expected next
// plus the last few batches, so a client retry of (v, base sequence) gets the same physical
// range, or the remembered answer once acknowledged.
//
// Sending: assign() queues a fresh batch; the I/O layer sends what next_to_send() names and
// reports on_sent(), so physical batches leave in sequence order and at most
// physical_sends_in_flight_max are outstanding per stream: that keeps every batch whose
// outcome is unknown within the broker's own dedupe window of 5, so a resend of it is
// deduplicated rather than answered OUT_OF_ORDER_SEQUENCE_NUMBER. Every send gets exactly one
// on_acknowledged() or on_failed() (a dropped connection fails all of its sends).
//
// One instance per core; no locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kpp {

// The stream a client batch belongs to. The topic is only viewed; the state keeps a copy.
struct txn_stream_key {
    int64_t producer_id = -1;
    int16_t producer_epoch = -1;
    std::string_view topic;
    int32_t physical_partition = 0;
};

enum class txn_assign_outcome : uint8_t {
    fresh,               // a new physical range, queued: send it when next_to_send() names it
    retry_in_flight,     // the client resent a batch still queued or on the wire: same range,
                         // nothing new to send; answer the client when that batch completes
    retry_acknowledged,  // already acknowledged: answer from `result`, send nothing
    out_of_order,        // not the sequence expected for v and not a remembered batch
    retry_mismatch,      // same (v, base sequence) as a remembered batch, other record count
    fenced_epoch,        // an epoch below the stream's current one
    poisoned,            // an earlier non-retriable failure; error_code is that failure's
    unknown_stream,      // state for this (X, E, T, p) was evicted or expired: the broker
                         // expects a sequence the proxy no longer knows
    no_room,             // v already has batches_per_virtual_partition_max unacknowledged
                         // batches, or the stream has virtual_partitions_per_stream_max v
    invalid_batch,       // negative v or base sequence, or record count below 1
    wait,                // asked with only_if_sendable: a fresh batch that could not be sent
                         // now (see can_send_fresh); nothing assigned, answer retriable
};

// What the broker answered for a batch, kept to answer the client's retries.
struct txn_batch_result {
    int64_t base_offset = -1;
    int64_t log_append_time_ms = -1;
    int64_t log_start_offset = -1;
    bool operator==(const txn_batch_result&) const = default;
};

struct txn_assignment {
    txn_assign_outcome outcome = txn_assign_outcome::invalid_batch;
    int16_t error_code = 0;               // the Kafka error to answer the client; 0: none
    int32_t physical_base_sequence = -1;  // fresh, retry_in_flight, retry_acknowledged
    txn_batch_result result;              // retry_acknowledged
};

enum class txn_batch_state : uint8_t {
    queued,  // assigned or put back after a failure: waits for next_to_send()
    sent,    // on the wire
};

struct txn_batch {
    int32_t physical_base_sequence = 0;
    int32_t record_count = 0;
    int32_t virtual_partition = 0;
    int32_t client_base_sequence = 0;
    txn_batch_state state = txn_batch_state::queued;
    bool operator==(const txn_batch&) const = default;
};

enum class txn_failure_effect : uint8_t {
    ignored,   // no such batch outstanding, or the answer to a send already put back
    resend,    // the batch and `affected` (sent after it, failed too by the broker: it sees a
               // gap) are queued again, in sequence order: follow next_to_send()
    poisoned,  // non-retriable: `affected` is every unacknowledged batch of the stream (this
               // one included), dropped; answer their clients with the error
};

struct txn_failure {
    txn_failure_effect effect = txn_failure_effect::ignored;
    std::vector<txn_batch> affected;
};

struct txn_end_report {
    size_t streams = 0;         // streams of (X, E) found
    size_t unacknowledged = 0;  // batches still outstanding on them: 0 after a clean commit
};

struct txn_sequence_counters {
    uint64_t renumbered_batches = 0;            // fresh assignments
    uint64_t retries_answered_from_record = 0;  // retry_acknowledged
    uint64_t retries_in_flight = 0;             // retry_in_flight
    uint64_t resends = 0;                       // batches queued again after a retriable failure
    uint64_t out_of_order = 0;                  // out_of_order and retry_mismatch
    uint64_t fenced = 0;                        // fenced_epoch
    uint64_t poisoned_streams = 0;
    uint64_t unknown_streams = 0;               // assigns answered unknown_stream
    uint64_t no_room = 0;
    uint64_t streams_evicted = 0;               // least recently used, over streams_max
    uint64_t streams_expired = 0;               // idle past idle_ms
};

struct txn_sequences_limits {
    size_t streams_max = 65536;
    // Streams forgotten (evicted or expired) whose key and epoch are kept to answer
    // unknown_stream rather than restart at physical sequence 0; oldest forgotten go first.
    size_t forgotten_streams_max = 65536;
    // The broker's default producer.id.expiration.ms: after that it forgets the producer too.
    int64_t idle_ms = 24 * 60 * 60 * 1000;
    // Virtual partitions one physical partition carries (V / P of the topic, rounded up).
    size_t virtual_partitions_per_stream_max = 4096;
};

// `sequence` advanced by `increment`, wrapping from INT32_MAX to 0 as Kafka does.
int32_t txn_sequence_after(int32_t sequence, int32_t increment);

class txn_sequences {
public:
    // Kafka's window: the broker deduplicates against the last 5 batches per producer and
    // partition, and idempotent clients keep at most 5 batches in flight per partition.
    static constexpr size_t batches_per_virtual_partition_max = 5;
    static constexpr size_t physical_sends_in_flight_max = 5;

    // Kafka error codes the outcomes map to.
    static constexpr int16_t error_not_enough_replicas = 19;  // retriable: try again later
    static constexpr int16_t error_out_of_order_sequence_number = 45;
    static constexpr int16_t error_invalid_producer_epoch = 47;
    static constexpr int16_t error_invalid_record = 87;

    explicit txn_sequences(const txn_sequences_limits& limits = {});

    // At send time, for one client batch of virtual partition v on key's physical partition.
    // only_if_sendable: a fresh batch is assigned only when can_send_fresh() holds, else the
    // outcome is `wait` (for callers that answer the client rather than hold the batch).
    txn_assignment assign(const txn_stream_key& key, int32_t virtual_partition, int32_t client_base_sequence,
                          int32_t record_count, int64_t now_ms, bool only_if_sendable = false);

    // The broker acknowledged the batch at physical_base_sequence. The batch (for answering
    // its client), or nullopt when nothing was outstanding there (a duplicate answer, an old
    // epoch, a forgotten stream).
    std::optional<txn_batch> on_acknowledged(const txn_stream_key& key, int32_t physical_base_sequence,
                                             int64_t base_offset, int64_t log_append_time_ms,
                                             int64_t log_start_offset);
    std::optional<txn_batch> on_acknowledged(const txn_stream_key& key, int32_t physical_base_sequence,
                                             const txn_batch_result& result);
    // The broker (or the connection) failed the send of the batch at physical_base_sequence.
    txn_failure on_failed(const txn_stream_key& key, int32_t physical_base_sequence, int16_t error_code,
                          bool retriable);

    // Whether the proxy has (or had) state for the stream's epoch: false means the first batch
    // of (X, E, T, p) on this instance, whose broker-side position is not known here.
    bool knows(const txn_stream_key& key) const;
    // What the broker said about a stream the proxy did not know (DescribeProducers): the
    // producer has no open transaction there and its epoch's next sequence is `next_sequence`
    // (0 when the broker has no state for it). Does nothing for a known stream.
    void start_at(const txn_stream_key& key, int32_t next_sequence, int64_t now_ms);
    // The producer has an open transaction there that this instance holds no state for
    // (another instance failed mid-transaction): every batch of this epoch is answered
    // unknown_stream, so the client aborts and moves to a new epoch. Does nothing for a
    // known stream.
    void mark_unknown(const txn_stream_key& key);
    // Whether a fresh batch assigned now could be sent at once: no batch of the stream waits
    // to be sent again and fewer than physical_sends_in_flight_max sends are outstanding. A
    // caller that cannot hold a batch asks this first and answers a retriable error instead
    // of assigning, so that no physical range is taken by a batch that never leaves.
    bool can_send_fresh(const txn_stream_key& key) const;
    // The batch to send next: the lowest queued one, when fewer than
    // physical_sends_in_flight_max sends of the stream are outstanding. nullopt otherwise.
    std::optional<txn_batch> next_to_send(const txn_stream_key& key) const;
    // The batch next_to_send() named went out. False (and nothing changes) for any other.
    bool on_sent(const txn_stream_key& key, int32_t physical_base_sequence);
    // Every unacknowledged batch of the stream, in physical sequence order.
    std::vector<txn_batch> in_flight(const txn_stream_key& key) const;

    // After EndTxn (commit or abort) for (X, E). Streams keep their next sequence, as Kafka
    // keeps sequences across the transactions of one epoch, and their windows (already
    // bounded to the last batches_per_virtual_partition_max per v); they count as used now.
    txn_end_report end_transaction(int64_t producer_id, int16_t producer_epoch, int64_t now_ms);
    // Forgets streams unused for limits.idle_ms; returns how many.
    size_t expire_idle(int64_t now_ms);

    size_t size() const { return streams_.size(); }
    const txn_sequence_counters& counters() const { return counters_; }

private:
    // (X, T, p): one epoch at a time lives under it.
    struct stream_id {
        int64_t producer_id = -1;
        std::string topic;
        int32_t physical_partition = 0;
    };
    struct stream_id_view {
        int64_t producer_id = -1;
        std::string_view topic;
        int32_t physical_partition = 0;
    };
    struct stream_id_less {
        using is_transparent = void;
        template <typename left_type, typename right_type>
        bool operator()(const left_type& left, const right_type& right) const {
            return order(view_of(left), view_of(right));
        }
        static bool order(const stream_id_view& left, const stream_id_view& right);
        static stream_id_view view_of(const stream_id& id) { return {id.producer_id, id.topic, id.physical_partition}; }
        static stream_id_view view_of(const stream_id_view& id) { return id; }
    };
    struct pending_batch {
        txn_batch batch;
        uint32_t stale_answers = 0;  // answers still due for sends that were put back
    };
    struct remembered_batch {
        int32_t client_base_sequence = 0;
        int32_t record_count = 0;
        int32_t physical_base_sequence = 0;
        bool acknowledged = false;
        txn_batch_result result;
    };
    struct virtual_window {
        std::optional<int32_t> next_client_sequence;
        std::deque<remembered_batch> batches;  // oldest first, at most the window
    };
    struct stream_state {
        int16_t producer_epoch = -1;
        int32_t next_physical_sequence = 0;
        std::optional<int16_t> poison_error;
        int64_t used_ms = 0;
        std::deque<pending_batch> unacknowledged;  // physical sequence order
        std::map<int32_t, virtual_window> windows;  // by v
        std::list<const stream_id*>::iterator lru_position;  // the map's own key: nodes never move
    };
    using stream_map = std::map<stream_id, stream_state, stream_id_less>;
    struct forgotten_stream {
        int16_t producer_epoch = -1;
        uint64_t serial = 0;  // tells the current entry from an older one in forgotten_order_
    };

    stream_state* stream_for(const txn_stream_key& key);
    const stream_state* stream_for(const txn_stream_key& key) const;
    // The stream to assign on, created or reset to a new epoch; nullptr with `refused` set.
    stream_state* stream_for_assign(const txn_stream_key& key, int64_t now_ms, txn_assignment& refused);
    stream_state& create_stream(const txn_stream_key& key, int16_t producer_epoch);
    void reset_to_epoch(stream_state& stream, int16_t producer_epoch);
    void touch(stream_state& stream, int64_t now_ms);
    void forget(stream_map::iterator stream);
    void remember_forgotten(const stream_id& id, int16_t producer_epoch);
    txn_assignment assign_in_window(stream_state& stream, int32_t virtual_partition, int32_t client_base_sequence,
                                    int32_t record_count, bool only_if_sendable);
    static bool room_for_fresh(const stream_state& stream);
    static std::deque<pending_batch>::iterator find_pending(stream_state& stream, int32_t physical_base_sequence);
    static remembered_batch* find_remembered(stream_state& stream, int32_t virtual_partition,
                                             int32_t client_base_sequence);
    txn_failure poison(stream_state& stream, int16_t error_code);

    txn_sequences_limits limits_;
    stream_map streams_;
    std::list<const stream_id*> lru_;  // most recently used first
    std::map<stream_id, forgotten_stream, stream_id_less> forgotten_;
    std::deque<std::pair<stream_id, uint64_t>> forgotten_order_;  // oldest first
    uint64_t forgotten_serial_ = 0;
    txn_sequence_counters counters_;
};

}  // namespace kpp
