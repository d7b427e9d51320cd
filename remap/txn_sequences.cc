#include "remap/txn_sequences.h"

#include <algorithm>
#include <limits>
#include <tuple>

namespace kpp {

int32_t txn_sequence_after(int32_t sequence, int32_t increment) {
    constexpr int32_t sequence_max = std::numeric_limits<int32_t>::max();
    if (sequence > sequence_max - increment) return increment - (sequence_max - sequence) - 1;
    return sequence + increment;
}

bool txn_sequences::stream_id_less::order(const stream_id_view& left, const stream_id_view& right) {
    return std::tie(left.producer_id, left.topic, left.physical_partition) <
           std::tie(right.producer_id, right.topic, right.physical_partition);
}

txn_sequences::txn_sequences(const txn_sequences_limits& limits) : limits_(limits) {
    limits_.streams_max = std::max<size_t>(limits_.streams_max, 1);
}

txn_assignment txn_sequences::assign(const txn_stream_key& key, int32_t virtual_partition,
                                     int32_t client_base_sequence, int32_t record_count, int64_t now_ms,
                                     bool only_if_sendable) {
    // The batch parser should have refused these already; the broker would answer the same.
    if (virtual_partition < 0 || client_base_sequence < 0 || record_count < 1) {
        return {txn_assign_outcome::invalid_batch, error_invalid_record};
    }
    txn_assignment refused;
    stream_state* stream = stream_for_assign(key, now_ms, refused);
    if (stream == nullptr) return refused;
    if (stream->poison_error) return {txn_assign_outcome::poisoned, *stream->poison_error};
    return assign_in_window(*stream, virtual_partition, client_base_sequence, record_count, only_if_sendable);
}

txn_sequences::stream_state* txn_sequences::stream_for_assign(const txn_stream_key& key, int64_t now_ms,
                                                              txn_assignment& refused) {
    stream_id_view id{key.producer_id, key.topic, key.physical_partition};
    auto found = streams_.find(id);
    if (found != streams_.end()) {
        stream_state& stream = found->second;
        if (key.producer_epoch < stream.producer_epoch) {
            ++counters_.fenced;
            refused = {txn_assign_outcome::fenced_epoch, error_invalid_producer_epoch};
            return nullptr;
        }
        // A new epoch starts the broker's sequence at 0; the old epoch's batches are fenced.
        if (key.producer_epoch > stream.producer_epoch) reset_to_epoch(stream, key.producer_epoch);
        touch(stream, now_ms);
        return &stream;
    }
    auto gone = forgotten_.find(id);
    if (gone != forgotten_.end()) {
        if (key.producer_epoch < gone->second.producer_epoch) {
            ++counters_.fenced;
            refused = {txn_assign_outcome::fenced_epoch, error_invalid_producer_epoch};
            return nullptr;
        }
        // The broker holds a sequence for this epoch that the proxy no longer knows: starting
        // again at 0 would be refused, guessing would risk writing a batch twice.
        if (key.producer_epoch == gone->second.producer_epoch) {
            ++counters_.unknown_streams;
            refused = {txn_assign_outcome::unknown_stream, error_out_of_order_sequence_number};
            return nullptr;
        }
        forgotten_.erase(gone);
    }
    stream_state& stream = create_stream(key, key.producer_epoch);
    touch(stream, now_ms);
    return &stream;
}

txn_sequences::stream_state& txn_sequences::create_stream(const txn_stream_key& key, int16_t producer_epoch) {
    if (streams_.size() >= limits_.streams_max && !lru_.empty()) {
        forget(streams_.find(*lru_.back()));
        ++counters_.streams_evicted;
    }
    auto inserted = streams_.emplace(stream_id{key.producer_id, std::string(key.topic), key.physical_partition},
                                     stream_state{});
    stream_state& stream = inserted.first->second;
    stream.producer_epoch = producer_epoch;
    lru_.push_front(&inserted.first->first);
    stream.lru_position = lru_.begin();
    return stream;
}

void txn_sequences::reset_to_epoch(stream_state& stream, int16_t producer_epoch) {
    stream.producer_epoch = producer_epoch;
    stream.next_physical_sequence = 0;
    stream.poison_error.reset();
    stream.unacknowledged.clear();
    stream.windows.clear();
}

void txn_sequences::touch(stream_state& stream, int64_t now_ms) {
    stream.used_ms = now_ms;
    lru_.splice(lru_.begin(), lru_, stream.lru_position);
}

// Keeps the key and epoch for a while, so meeting the stream again is told apart from
// meeting a new one. forgotten_order_ may hold superseded entries; the serial tells.
void txn_sequences::forget(stream_map::iterator stream) {
    remember_forgotten(stream->first, stream->second.producer_epoch);
    lru_.erase(stream->second.lru_position);
    streams_.erase(stream);
}

void txn_sequences::remember_forgotten(const stream_id& id, int16_t producer_epoch) {
    uint64_t serial = ++forgotten_serial_;
    forgotten_.insert_or_assign(id, forgotten_stream{producer_epoch, serial});
    forgotten_order_.emplace_back(id, serial);
    while (forgotten_order_.size() > limits_.forgotten_streams_max) {
        auto oldest = forgotten_.find(forgotten_order_.front().first);
        if (oldest != forgotten_.end() && oldest->second.serial == forgotten_order_.front().second) {
            forgotten_.erase(oldest);
        }
        forgotten_order_.pop_front();
    }
}

txn_assignment txn_sequences::assign_in_window(stream_state& stream, int32_t virtual_partition,
                                               int32_t client_base_sequence, int32_t record_count,
                                               bool only_if_sendable) {
    auto window_at = stream.windows.find(virtual_partition);
    if (window_at == stream.windows.end()) {
        if (stream.windows.size() >= limits_.virtual_partitions_per_stream_max) {
            ++counters_.no_room;
            return {txn_assign_outcome::no_room, error_not_enough_replicas};
        }
        window_at = stream.windows.emplace(virtual_partition, virtual_window{}).first;
    }
    virtual_window& window = window_at->second;
    for (const remembered_batch& batch : window.batches) {
        if (batch.client_base_sequence != client_base_sequence) continue;
        // Not the same batch: the broker would find no duplicate and see a sequence behind.
        if (batch.record_count != record_count) {
            ++counters_.out_of_order;
            return {txn_assign_outcome::retry_mismatch, error_out_of_order_sequence_number};
        }
        if (batch.acknowledged) {
            ++counters_.retries_answered_from_record;
            return {txn_assign_outcome::retry_acknowledged, 0, batch.physical_base_sequence, batch.result};
        }
        ++counters_.retries_in_flight;
        return {txn_assign_outcome::retry_in_flight, 0, batch.physical_base_sequence};
    }
    // The first batch seen for v sets its sequence: meeting a stream mid-way happens only on
    // a takeover, which the caller detects before it gets here.
    if (window.next_client_sequence && *window.next_client_sequence != client_base_sequence) {
        ++counters_.out_of_order;
        return {txn_assign_outcome::out_of_order, error_out_of_order_sequence_number};
    }
    if (only_if_sendable && !room_for_fresh(stream)) return {txn_assign_outcome::wait, error_not_enough_replicas};
    if (window.batches.size() >= batches_per_virtual_partition_max) {
        auto oldest_acknowledged = std::find_if(window.batches.begin(), window.batches.end(),
                                                [](const remembered_batch& batch) { return batch.acknowledged; });
        // All unacknowledged: the client has more in flight than Kafka lets it; it may retry.
        if (oldest_acknowledged == window.batches.end()) {
            ++counters_.no_room;
            return {txn_assign_outcome::no_room, error_not_enough_replicas};
        }
        window.batches.erase(oldest_acknowledged);
    }
    int32_t physical_base_sequence = stream.next_physical_sequence;
    stream.next_physical_sequence = txn_sequence_after(physical_base_sequence, record_count);
    window.next_client_sequence = txn_sequence_after(client_base_sequence, record_count);
    window.batches.push_back({client_base_sequence, record_count, physical_base_sequence, false, {}});
    stream.unacknowledged.push_back(
        {{physical_base_sequence, record_count, virtual_partition, client_base_sequence, txn_batch_state::queued}, 0});
    ++counters_.renumbered_batches;
    return {txn_assign_outcome::fresh, 0, physical_base_sequence, {}};
}

std::optional<txn_batch> txn_sequences::on_acknowledged(const txn_stream_key& key, int32_t physical_base_sequence,
                                                        int64_t base_offset, int64_t log_append_time_ms,
                                                        int64_t log_start_offset) {
    return on_acknowledged(key, physical_base_sequence, txn_batch_result{base_offset, log_append_time_ms, log_start_offset});
}

// An acknowledgement is always believed, even for a batch put back for resending: the broker
// wrote it at that sequence (a timed-out send that did land), so the resend is not needed.
std::optional<txn_batch> txn_sequences::on_acknowledged(const txn_stream_key& key, int32_t physical_base_sequence,
                                                        const txn_batch_result& result) {
    stream_state* stream = stream_for(key);
    if (stream == nullptr) return std::nullopt;
    auto pending = find_pending(*stream, physical_base_sequence);
    if (pending == stream->unacknowledged.end()) return std::nullopt;
    txn_batch batch = pending->batch;
    stream->unacknowledged.erase(pending);
    remembered_batch* remembered = find_remembered(*stream, batch.virtual_partition, batch.client_base_sequence);
    if (remembered != nullptr && remembered->physical_base_sequence == physical_base_sequence) {
        remembered->acknowledged = true;
        remembered->result = result;
    }
    return batch;
}

txn_failure txn_sequences::on_failed(const txn_stream_key& key, int32_t physical_base_sequence, int16_t error_code,
                                     bool retriable) {
    stream_state* stream = stream_for(key);
    if (stream == nullptr) return {};
    auto pending = find_pending(*stream, physical_base_sequence);
    if (pending == stream->unacknowledged.end()) return {};
    if (pending->stale_answers > 0) {
        // The answer to a send already put back: the broker saw the gap before it and said so.
        --pending->stale_answers;
        if (retriable || error_code == error_out_of_order_sequence_number) return {};
        return poison(*stream, error_code);  // a fence is a fence, whichever send met it
    }
    if (pending->batch.state != txn_batch_state::sent) return {};
    if (!retriable) return poison(*stream, error_code);
    txn_failure failure{txn_failure_effect::resend, {}};
    pending->batch.state = txn_batch_state::queued;
    ++counters_.resends;
    // Bounded by the stream's unacknowledged batches.
    for (auto later = std::next(pending); later != stream->unacknowledged.end(); ++later) {
        if (later->batch.state != txn_batch_state::sent) continue;
        later->batch.state = txn_batch_state::queued;
        ++later->stale_answers;
        ++counters_.resends;
        failure.affected.push_back(later->batch);
    }
    return failure;
}

txn_failure txn_sequences::poison(stream_state& stream, int16_t error_code) {
    txn_failure failure{txn_failure_effect::poisoned, {}};
    failure.affected.reserve(stream.unacknowledged.size());
    for (const pending_batch& pending : stream.unacknowledged) failure.affected.push_back(pending.batch);
    stream.unacknowledged.clear();
    for (auto& [virtual_partition, window] : stream.windows) {
        std::erase_if(window.batches, [](const remembered_batch& batch) { return !batch.acknowledged; });
    }
    // 0 is no error; a non-retriable failure without a code still has to stick.
    stream.poison_error = error_code != 0 ? error_code : int16_t(-1);
    ++counters_.poisoned_streams;
    return failure;
}

std::optional<txn_batch> txn_sequences::next_to_send(const txn_stream_key& key) const {
    const stream_state* stream = stream_for(key);
    if (stream == nullptr || stream->poison_error) return std::nullopt;
    // Answers still due for put-back sends count too: those sends are still at the broker.
    size_t sends_outstanding = 0;
    const pending_batch* first_queued = nullptr;
    for (const pending_batch& pending : stream->unacknowledged) {
        sends_outstanding += pending.stale_answers + (pending.batch.state == txn_batch_state::sent ? 1 : 0);
        if (first_queued == nullptr && pending.batch.state == txn_batch_state::queued) first_queued = &pending;
    }
    if (first_queued == nullptr || sends_outstanding >= physical_sends_in_flight_max) return std::nullopt;
    return first_queued->batch;
}

bool txn_sequences::knows(const txn_stream_key& key) const {
    stream_id_view id{key.producer_id, key.topic, key.physical_partition};
    if (auto found = streams_.find(id); found != streams_.end()) return found->second.producer_epoch >= key.producer_epoch;
    if (auto gone = forgotten_.find(id); gone != forgotten_.end()) return gone->second.producer_epoch >= key.producer_epoch;
    return false;
}

void txn_sequences::start_at(const txn_stream_key& key, int32_t next_sequence, int64_t now_ms) {
    if (knows(key)) return;
    stream_id_view id{key.producer_id, key.topic, key.physical_partition};
    if (auto gone = forgotten_.find(id); gone != forgotten_.end()) forgotten_.erase(gone);
    stream_state* stream = nullptr;
    if (auto found = streams_.find(id); found != streams_.end()) {
        stream = &found->second;
        reset_to_epoch(*stream, key.producer_epoch);
    } else {
        stream = &create_stream(key, key.producer_epoch);
    }
    stream->next_physical_sequence = std::max(next_sequence, 0);
    touch(*stream, now_ms);
}

void txn_sequences::mark_unknown(const txn_stream_key& key) {
    if (knows(key)) return;
    stream_id_view id{key.producer_id, key.topic, key.physical_partition};
    if (auto found = streams_.find(id); found != streams_.end()) forget(found);
    remember_forgotten(stream_id{key.producer_id, std::string(key.topic), key.physical_partition}, key.producer_epoch);
}

bool txn_sequences::can_send_fresh(const txn_stream_key& key) const {
    const stream_state* stream = stream_for(key);
    if (stream == nullptr || stream->poison_error) return true;  // assign() decides
    return room_for_fresh(*stream);
}

bool txn_sequences::room_for_fresh(const stream_state& stream) {
    size_t sends_outstanding = 0;
    for (const pending_batch& pending : stream.unacknowledged) {
        if (pending.batch.state == txn_batch_state::queued) return false;
        sends_outstanding += pending.stale_answers + 1;
    }
    return sends_outstanding < physical_sends_in_flight_max;
}

bool txn_sequences::on_sent(const txn_stream_key& key, int32_t physical_base_sequence) {
    std::optional<txn_batch> next = next_to_send(key);
    if (!next || next->physical_base_sequence != physical_base_sequence) return false;
    stream_state* stream = stream_for(key);
    find_pending(*stream, physical_base_sequence)->batch.state = txn_batch_state::sent;
    return true;
}

std::vector<txn_batch> txn_sequences::in_flight(const txn_stream_key& key) const {
    std::vector<txn_batch> batches;
    const stream_state* stream = stream_for(key);
    if (stream == nullptr) return batches;
    batches.reserve(stream->unacknowledged.size());
    for (const pending_batch& pending : stream->unacknowledged) batches.push_back(pending.batch);
    return batches;
}

txn_end_report txn_sequences::end_transaction(int64_t producer_id, int16_t producer_epoch, int64_t now_ms) {
    txn_end_report report;
    // The empty topic and the lowest partition order first among the producer's streams.
    auto stream = streams_.lower_bound(
        stream_id_view{producer_id, std::string_view(), std::numeric_limits<int32_t>::min()});
    for (; stream != streams_.end() && stream->first.producer_id == producer_id; ++stream) {
        if (stream->second.producer_epoch != producer_epoch) continue;
        ++report.streams;
        report.unacknowledged += stream->second.unacknowledged.size();
        touch(stream->second, now_ms);
    }
    return report;
}

size_t txn_sequences::expire_idle(int64_t now_ms) {
    size_t expired = 0;
    // The least recently used is the longest idle; at most every stream once.
    for (size_t checked = 0, streams = streams_.size(); checked < streams && !lru_.empty(); ++checked) {
        auto stream = streams_.find(*lru_.back());
        if (now_ms - stream->second.used_ms < limits_.idle_ms) break;
        forget(stream);
        ++expired;
        ++counters_.streams_expired;
    }
    return expired;
}

txn_sequences::stream_state* txn_sequences::stream_for(const txn_stream_key& key) {
    auto found = streams_.find(stream_id_view{key.producer_id, key.topic, key.physical_partition});
    if (found == streams_.end() || found->second.producer_epoch != key.producer_epoch) return nullptr;
    return &found->second;
}

const txn_sequences::stream_state* txn_sequences::stream_for(const txn_stream_key& key) const {
    auto found = streams_.find(stream_id_view{key.producer_id, key.topic, key.physical_partition});
    if (found == streams_.end() || found->second.producer_epoch != key.producer_epoch) return nullptr;
    return &found->second;
}

std::deque<txn_sequences::pending_batch>::iterator txn_sequences::find_pending(stream_state& stream,
                                                                               int32_t physical_base_sequence) {
    return std::find_if(stream.unacknowledged.begin(), stream.unacknowledged.end(), [&](const pending_batch& pending) {
        return pending.batch.physical_base_sequence == physical_base_sequence;
    });
}

txn_sequences::remembered_batch* txn_sequences::find_remembered(stream_state& stream, int32_t virtual_partition,
                                                                int32_t client_base_sequence) {
    auto window = stream.windows.find(virtual_partition);
    if (window == stream.windows.end()) return nullptr;
    for (remembered_batch& batch : window->second.batches) {
        if (batch.client_base_sequence == client_base_sequence) return &batch;
    }
    return nullptr;
}

}  // namespace kpp
