#include "remap/txn_sequences.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace kpp {
namespace {

constexpr int64_t producer = 4000;
constexpr int16_t not_leader_or_follower = 6;
constexpr int16_t request_timed_out = 7;
constexpr int16_t producer_fenced = 90;
constexpr int32_t sequence_max = std::numeric_limits<int32_t>::max();

txn_stream_key stream(int16_t epoch = 0, int32_t physical_partition = 1) {
    return {producer, epoch, "orders", physical_partition};
}

// Sends everything the stream lets out now, in order; returns the physical base sequences.
std::vector<int32_t> send_all(txn_sequences& sequences, const txn_stream_key& key) {
    std::vector<int32_t> sent;
    for (int guard = 0; guard < 64; ++guard) {
        auto next = sequences.next_to_send(key);
        if (!next) break;
        EXPECT_TRUE(sequences.on_sent(key, next->physical_base_sequence));
        sent.push_back(next->physical_base_sequence);
    }
    return sent;
}

std::vector<int32_t> bases_of(const std::vector<txn_batch>& batches) {
    std::vector<int32_t> bases;
    for (const txn_batch& batch : batches) bases.push_back(batch.physical_base_sequence);
    return bases;
}

TEST(txn_sequences, fresh_batches_of_several_virtual_partitions_get_contiguous_ranges) {
    txn_sequences sequences;
    // v 1, 5 and 9 all live on physical partition 1 (P = 4); each keeps its own client space.
    auto first = sequences.assign(stream(), 1, 0, 3, 0);
    auto second = sequences.assign(stream(), 5, 0, 2, 0);
    auto third = sequences.assign(stream(), 1, 3, 4, 0);
    auto fourth = sequences.assign(stream(), 9, 0, 1, 0);
    for (const auto& assigned : {first, second, third, fourth}) {
        EXPECT_EQ(assigned.outcome, txn_assign_outcome::fresh);
        EXPECT_EQ(assigned.error_code, 0);
    }
    EXPECT_EQ(first.physical_base_sequence, 0);
    EXPECT_EQ(second.physical_base_sequence, 3);
    EXPECT_EQ(third.physical_base_sequence, 5);
    EXPECT_EQ(fourth.physical_base_sequence, 9);
    EXPECT_EQ(bases_of(sequences.in_flight(stream())), (std::vector<int32_t>{0, 3, 5, 9}));
    EXPECT_EQ(sequences.counters().renumbered_batches, 4u);
    // Another physical partition is another stream: its own space from 0.
    EXPECT_EQ(sequences.assign(stream(0, 2), 2, 0, 1, 0).physical_base_sequence, 0);
}

// The Produce path answers instead of holding: a fresh batch that could not leave at once
// takes no range, so a client that gives up on it (aborts) leaves no gap behind.
TEST(txn_sequences, only_if_sendable_takes_no_range_while_the_stream_is_full_or_resending) {
    txn_sequences sequences;
    for (int32_t v = 0; v < int32_t(txn_sequences::physical_sends_in_flight_max); ++v) {
        auto assigned = sequences.assign(stream(), v * 4 + 1, 0, 2, 0, true);
        ASSERT_EQ(assigned.outcome, txn_assign_outcome::fresh);
        ASSERT_TRUE(sequences.on_sent(stream(), assigned.physical_base_sequence));
    }
    EXPECT_FALSE(sequences.can_send_fresh(stream()));
    auto waiting = sequences.assign(stream(), 41, 0, 1, 0, true);
    EXPECT_EQ(waiting.outcome, txn_assign_outcome::wait);
    EXPECT_EQ(waiting.error_code, txn_sequences::error_not_enough_replicas);
    EXPECT_EQ(sequences.in_flight(stream()).size(), txn_sequences::physical_sends_in_flight_max);
    // A retry of a batch on the wire is still recognised while the stream is full.
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 2, 0, true).outcome, txn_assign_outcome::retry_in_flight);
    // The first acknowledged: room again, and the waiting batch gets the next range.
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 100, -1, 0));
    EXPECT_TRUE(sequences.can_send_fresh(stream()));
    auto later = sequences.assign(stream(), 41, 0, 1, 0, true);
    EXPECT_EQ(later.outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(later.physical_base_sequence, 10);
    ASSERT_TRUE(sequences.on_sent(stream(), 10));
    // A retriable failure puts ranges back: nothing fresh until they went out again.
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 2, 102, -1, 0));
    auto failed = sequences.on_failed(stream(), 4, not_leader_or_follower, true);
    EXPECT_EQ(failed.effect, txn_failure_effect::resend);
    EXPECT_FALSE(sequences.can_send_fresh(stream()));
    EXPECT_EQ(sequences.assign(stream(), 45, 0, 1, 0, true).outcome, txn_assign_outcome::wait);
    // An unknown stream (a new epoch included) always has room.
    EXPECT_TRUE(sequences.can_send_fresh(stream(1)));
}

// What the broker said about a stream met for the first time (DescribeProducers).
TEST(txn_sequences, streams_met_without_state_start_where_the_broker_stands_or_are_refused) {
    txn_sequences sequences;
    EXPECT_FALSE(sequences.knows(stream()));
    // No open transaction, the epoch's last sequence 41: the next range starts at 42.
    sequences.start_at(stream(), 42, 0);
    EXPECT_TRUE(sequences.knows(stream()));
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 3, 0).physical_base_sequence, 42);
    sequences.start_at(stream(), 0, 0);  // known: nothing changes
    EXPECT_EQ(sequences.assign(stream(), 5, 0, 1, 0).physical_base_sequence, 45);

    // An open transaction without state: every batch of that epoch is refused, retries too.
    auto other = stream(0, 2);
    sequences.mark_unknown(other);
    EXPECT_TRUE(sequences.knows(other));
    auto refused = sequences.assign(other, 2, 0, 1, 0);
    EXPECT_EQ(refused.outcome, txn_assign_outcome::unknown_stream);
    EXPECT_EQ(refused.error_code, txn_sequences::error_out_of_order_sequence_number);
    EXPECT_EQ(sequences.assign(other, 6, 7, 1, 0).outcome, txn_assign_outcome::unknown_stream);
    // The client's next epoch is a new stream from 0; older epochs stay fenced.
    EXPECT_FALSE(sequences.knows(stream(1, 2)));
    auto bumped = sequences.assign(stream(1, 2), 2, 0, 1, 0);
    EXPECT_EQ(bumped.outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(bumped.physical_base_sequence, 0);
    EXPECT_TRUE(sequences.knows(other));  // epoch 0 is below the stream's epoch 1 now
    EXPECT_EQ(sequences.assign(other, 2, 0, 1, 0).outcome, txn_assign_outcome::fenced_epoch);
    // A stream with state is never marked unknown by a late answer.
    sequences.mark_unknown(stream());
    EXPECT_EQ(sequences.assign(stream(), 5, 1, 1, 0).outcome, txn_assign_outcome::fresh);
}

TEST(txn_sequences, retry_of_a_batch_in_flight_reuses_its_range) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 3, 0);
    sequences.assign(stream(), 5, 0, 2, 0);
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{0, 3}));
    auto retried = sequences.assign(stream(), 5, 0, 2, 0);
    EXPECT_EQ(retried.outcome, txn_assign_outcome::retry_in_flight);
    EXPECT_EQ(retried.physical_base_sequence, 3);
    EXPECT_EQ(sequences.in_flight(stream()).size(), 2u);  // nothing new queued
    EXPECT_FALSE(sequences.next_to_send(stream()));
    EXPECT_EQ(sequences.counters().retries_in_flight, 1u);
    // The next fresh batch continues after the last range, not after the retry.
    EXPECT_EQ(sequences.assign(stream(), 5, 2, 1, 0).physical_base_sequence, 5);
}

TEST(txn_sequences, retry_after_acknowledgement_is_answered_from_the_record) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 10, 3, 0);  // a first batch may start anywhere
    send_all(sequences, stream());
    auto acknowledged = sequences.on_acknowledged(stream(), 0, 7000, 123456, 100);
    ASSERT_TRUE(acknowledged);
    EXPECT_EQ(acknowledged->virtual_partition, 1);
    EXPECT_EQ(acknowledged->client_base_sequence, 10);
    EXPECT_FALSE(sequences.on_acknowledged(stream(), 0, 9999, 0, 0));  // a duplicate answer
    auto retried = sequences.assign(stream(), 1, 10, 3, 0);
    EXPECT_EQ(retried.outcome, txn_assign_outcome::retry_acknowledged);
    EXPECT_EQ(retried.error_code, 0);
    EXPECT_EQ(retried.result, (txn_batch_result{7000, 123456, 100}));
    EXPECT_TRUE(sequences.in_flight(stream()).empty());
    EXPECT_EQ(sequences.counters().retries_answered_from_record, 1u);
}

TEST(txn_sequences, a_gap_in_the_client_sequence_is_out_of_order) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 3, 0);
    auto ahead = sequences.assign(stream(), 1, 4, 1, 0);  // 3 expected
    EXPECT_EQ(ahead.outcome, txn_assign_outcome::out_of_order);
    EXPECT_EQ(ahead.error_code, 45);
    auto behind = sequences.assign(stream(), 1, 1, 1, 0);  // inside a batch, not its start
    EXPECT_EQ(behind.outcome, txn_assign_outcome::out_of_order);
    // Neither took a range: the next batch in order still gets 3.
    EXPECT_EQ(sequences.assign(stream(), 1, 3, 1, 0).physical_base_sequence, 3);
    EXPECT_EQ(sequences.counters().out_of_order, 2u);
}

TEST(txn_sequences, a_retry_with_another_record_count_is_a_mismatch) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 3, 0);
    auto mismatch = sequences.assign(stream(), 1, 0, 2, 0);
    EXPECT_EQ(mismatch.outcome, txn_assign_outcome::retry_mismatch);
    EXPECT_EQ(mismatch.error_code, 45);
    EXPECT_EQ(sequences.in_flight(stream()).size(), 1u);
}

TEST(txn_sequences, invalid_batches_are_refused_without_state) {
    txn_sequences sequences;
    EXPECT_EQ(sequences.assign(stream(), -1, 0, 1, 0).outcome, txn_assign_outcome::invalid_batch);
    EXPECT_EQ(sequences.assign(stream(), 1, -1, 1, 0).error_code, 87);
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 0, 0).outcome, txn_assign_outcome::invalid_batch);
    EXPECT_EQ(sequences.size(), 0u);
}

TEST(txn_sequences, retriable_failure_puts_back_the_later_sends_in_order) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 2, 0);  // physical 0
    sequences.assign(stream(), 5, 0, 2, 0);  // physical 2
    sequences.assign(stream(), 1, 2, 2, 0);  // physical 4
    sequences.assign(stream(), 9, 0, 2, 0);  // physical 6
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{0, 2, 4, 6}));
    sequences.assign(stream(), 5, 2, 1, 0);  // physical 8: queued, not sent yet
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 100, -1, 0));

    auto failure = sequences.on_failed(stream(), 2, not_leader_or_follower, true);
    EXPECT_EQ(failure.effect, txn_failure_effect::resend);
    EXPECT_EQ(bases_of(failure.affected), (std::vector<int32_t>{4, 6}));  // not 8: never sent
    // The broker fails the later ones too, seeing the gap: those answers change nothing.
    EXPECT_EQ(sequences.on_failed(stream(), 4, 45, false).effect, txn_failure_effect::ignored);
    EXPECT_EQ(sequences.on_failed(stream(), 6, not_leader_or_follower, true).effect, txn_failure_effect::ignored);
    EXPECT_EQ(sequences.counters().resends, 3u);

    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{2, 4, 6, 8}));
    for (int32_t base : {2, 4, 6, 8}) EXPECT_TRUE(sequences.on_acknowledged(stream(), base, 100 + base, -1, 0));
    EXPECT_TRUE(sequences.in_flight(stream()).empty());
    EXPECT_EQ(sequences.assign(stream(), 9, 2, 1, 0).physical_base_sequence, 9);
    EXPECT_EQ(sequences.assign(stream(), 5, 2, 1, 0).result.base_offset, 108);
}

// A timed-out send may have landed: the later sends then succeed, and the resend is a
// duplicate the broker answers with the original offset.
TEST(txn_sequences, acknowledgement_of_a_put_back_batch_is_believed) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 1, 0);
    sequences.assign(stream(), 5, 0, 1, 0);
    send_all(sequences, stream());
    EXPECT_EQ(bases_of(sequences.on_failed(stream(), 0, request_timed_out, true).affected),
              (std::vector<int32_t>{1}));
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 1, 51, -1, 0));
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{0}));  // 1 is done
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 50, -1, 0));
    EXPECT_TRUE(sequences.in_flight(stream()).empty());
}

TEST(txn_sequences, non_retriable_failure_poisons_the_stream_until_a_new_epoch) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 1, 0);
    sequences.assign(stream(), 5, 0, 1, 0);
    sequences.assign(stream(), 9, 0, 1, 0);
    send_all(sequences, stream());
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 10, -1, 0));
    auto failure = sequences.on_failed(stream(), 1, producer_fenced, false);
    EXPECT_EQ(failure.effect, txn_failure_effect::poisoned);
    EXPECT_EQ(bases_of(failure.affected), (std::vector<int32_t>{1, 2}));
    EXPECT_TRUE(sequences.in_flight(stream()).empty());
    EXPECT_FALSE(sequences.next_to_send(stream()));
    auto later = sequences.assign(stream(), 1, 1, 1, 0);
    EXPECT_EQ(later.outcome, txn_assign_outcome::poisoned);
    EXPECT_EQ(later.error_code, producer_fenced);
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 1, 0).outcome, txn_assign_outcome::poisoned);  // even a retry
    EXPECT_EQ(sequences.counters().poisoned_streams, 1u);

    auto renewed = sequences.assign(stream(1), 1, 0, 1, 0);
    EXPECT_EQ(renewed.outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(renewed.physical_base_sequence, 0);
}

TEST(txn_sequences, a_new_epoch_starts_at_zero_and_an_older_one_is_fenced) {
    txn_sequences sequences;
    sequences.assign(stream(3), 1, 0, 5, 0);
    sequences.assign(stream(3), 5, 0, 5, 0);
    send_all(sequences, stream(3));
    auto bumped = sequences.assign(stream(4), 1, 0, 2, 0);
    EXPECT_EQ(bumped.outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(bumped.physical_base_sequence, 0);
    EXPECT_EQ(bases_of(sequences.in_flight(stream(4))), (std::vector<int32_t>{0}));
    // The old epoch's answers find nothing; the old epoch is fenced.
    EXPECT_FALSE(sequences.on_acknowledged(stream(3), 0, 1, -1, 0));
    EXPECT_EQ(sequences.on_failed(stream(3), 5, 47, false).effect, txn_failure_effect::ignored);
    auto old = sequences.assign(stream(3), 1, 5, 1, 0);
    EXPECT_EQ(old.outcome, txn_assign_outcome::fenced_epoch);
    EXPECT_EQ(old.error_code, 47);
    EXPECT_EQ(sequences.counters().fenced, 1u);
    EXPECT_EQ(sequences.assign(stream(4), 1, 2, 1, 0).physical_base_sequence, 2);
}

TEST(txn_sequences, sequences_wrap_from_int32_max_to_zero) {
    EXPECT_EQ(txn_sequence_after(sequence_max, 1), 0);
    EXPECT_EQ(txn_sequence_after(sequence_max - 1, 3), 1);
    EXPECT_EQ(txn_sequence_after(5, 3), 8);
    txn_sequences sequences;
    // The client's space wraps: its first batch ends at INT32_MAX, its next starts at 0.
    EXPECT_EQ(sequences.assign(stream(), 1, sequence_max - 1, 2, 0).outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 1, 0).outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(sequences.assign(stream(), 1, sequence_max, 1, 0).outcome, txn_assign_outcome::out_of_order);

    // The physical space wraps: drive it near the top with one large client batch per v.
    txn_sequences physical;
    EXPECT_EQ(physical.assign(stream(), 1, 0, sequence_max - 1, 0).physical_base_sequence, 0);
    EXPECT_EQ(physical.assign(stream(), 5, 0, 3, 0).physical_base_sequence, sequence_max - 1);
    EXPECT_EQ(physical.assign(stream(), 9, 0, 1, 0).physical_base_sequence, 1);
}

TEST(txn_sequences, the_window_keeps_five_batches_per_virtual_partition) {
    txn_sequences sequences;
    for (int32_t batch = 0; batch < 5; ++batch) sequences.assign(stream(), 1, batch, 1, 0);
    // Five unacknowledged: a sixth has no room (Kafka clients keep at most 5 in flight).
    auto sixth = sequences.assign(stream(), 1, 5, 1, 0);
    EXPECT_EQ(sixth.outcome, txn_assign_outcome::no_room);
    EXPECT_EQ(sixth.error_code, 19);
    send_all(sequences, stream());
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 100, -1, 0));
    EXPECT_EQ(sequences.assign(stream(), 1, 5, 1, 0).outcome, txn_assign_outcome::fresh);
    // The oldest acknowledged batch made room: a retry of it is now out of order, as a
    // broker that dropped it from its window would say.
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 1, 0).outcome, txn_assign_outcome::out_of_order);
    EXPECT_EQ(sequences.assign(stream(), 1, 1, 1, 0).outcome, txn_assign_outcome::retry_in_flight);
    // Another v has a window of its own.
    EXPECT_EQ(sequences.assign(stream(), 5, 0, 1, 0).outcome, txn_assign_outcome::fresh);
}

TEST(txn_sequences, at_most_five_sends_are_outstanding_per_stream) {
    txn_sequences sequences;
    for (int32_t v = 1; v <= 29; v += 4) sequences.assign(stream(), v, 0, 1, 0);  // 8 batches
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{0, 1, 2, 3, 4}));
    EXPECT_FALSE(sequences.on_sent(stream(), 5));  // not allowed out yet
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 1, -1, 0));
    EXPECT_FALSE(sequences.on_sent(stream(), 6));  // out of order
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{5}));
    // After a failure the put-back sends still count until their answers arrive: 2 to 5
    // are still at the broker, so only the failed one may go again.
    sequences.on_failed(stream(), 1, not_leader_or_follower, true);
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{1}));
    for (int32_t base : {2, 3}) sequences.on_failed(stream(), base, 45, false);
    EXPECT_EQ(send_all(sequences, stream()), (std::vector<int32_t>{2, 3}));
}

TEST(txn_sequences, end_of_transaction_keeps_sequences_and_the_window) {
    txn_sequences sequences;
    sequences.assign(stream(), 1, 0, 2, 0);
    sequences.assign(stream(0, 2), 2, 0, 3, 0);
    send_all(sequences, stream());
    send_all(sequences, stream(0, 2));
    ASSERT_TRUE(sequences.on_acknowledged(stream(), 0, 40, -1, 0));
    auto open = sequences.end_transaction(producer, 0, 10);
    EXPECT_EQ(open.streams, 2u);
    EXPECT_EQ(open.unacknowledged, 1u);  // partition 2's batch is still out
    ASSERT_TRUE(sequences.on_acknowledged(stream(0, 2), 0, 41, -1, 0));
    EXPECT_EQ(sequences.end_transaction(producer, 0, 10).unacknowledged, 0u);
    EXPECT_EQ(sequences.end_transaction(producer, 1, 10).streams, 0u);
    EXPECT_EQ(sequences.end_transaction(producer + 1, 0, 10).streams, 0u);
    // The next transaction continues both spaces.
    EXPECT_EQ(sequences.assign(stream(), 1, 2, 1, 20).physical_base_sequence, 2);
    EXPECT_EQ(sequences.assign(stream(), 1, 0, 2, 20).result.base_offset, 40);
}

TEST(txn_sequences, least_recently_used_streams_go_and_come_back_unknown) {
    txn_sequences_limits limits;
    limits.streams_max = 2;
    txn_sequences sequences(limits);
    sequences.assign(stream(1, 1), 1, 0, 1, 0);
    sequences.assign(stream(1, 2), 2, 0, 1, 1);
    sequences.assign(stream(1, 1), 1, 1, 1, 2);  // partition 1 used last
    sequences.assign(stream(1, 3), 3, 0, 1, 3);  // evicts partition 2
    EXPECT_EQ(sequences.size(), 2u);
    EXPECT_EQ(sequences.counters().streams_evicted, 1u);
    EXPECT_TRUE(sequences.in_flight(stream(1, 2)).empty());
    auto again = sequences.assign(stream(1, 2), 2, 1, 1, 4);
    EXPECT_EQ(again.outcome, txn_assign_outcome::unknown_stream);
    EXPECT_EQ(again.error_code, 45);
    EXPECT_EQ(sequences.counters().unknown_streams, 1u);
    EXPECT_EQ(sequences.assign(stream(1, 1), 1, 2, 1, 5).physical_base_sequence, 2);  // kept
    // An older epoch is still fenced; a newer one starts afresh.
    EXPECT_EQ(sequences.assign(stream(0, 2), 2, 0, 1, 6).outcome, txn_assign_outcome::fenced_epoch);
    EXPECT_EQ(sequences.assign(stream(2, 2), 2, 0, 1, 6).outcome, txn_assign_outcome::fresh);
}

TEST(txn_sequences, forgotten_streams_are_bounded_too) {
    txn_sequences_limits limits;
    limits.streams_max = 1;
    limits.forgotten_streams_max = 1;
    txn_sequences sequences(limits);
    sequences.assign(stream(0, 1), 1, 0, 1, 0);
    sequences.assign(stream(0, 2), 2, 0, 1, 0);  // forgets 1
    sequences.assign(stream(0, 3), 3, 0, 1, 0);  // forgets 2; 1 is no longer remembered
    EXPECT_EQ(sequences.assign(stream(0, 2), 2, 1, 1, 0).outcome, txn_assign_outcome::unknown_stream);
    EXPECT_EQ(sequences.assign(stream(0, 1), 1, 1, 1, 0).outcome, txn_assign_outcome::fresh);
}

TEST(txn_sequences, idle_streams_expire) {
    txn_sequences_limits limits;
    limits.idle_ms = 1000;
    txn_sequences sequences(limits);
    sequences.assign(stream(0, 1), 1, 0, 1, 0);
    sequences.assign(stream(0, 2), 2, 0, 1, 500);
    EXPECT_EQ(sequences.expire_idle(999), 0u);
    EXPECT_EQ(sequences.expire_idle(1000), 1u);
    EXPECT_EQ(sequences.size(), 1u);
    EXPECT_EQ(sequences.assign(stream(0, 1), 1, 1, 1, 1100).outcome, txn_assign_outcome::unknown_stream);
    sequences.end_transaction(producer, 0, 1400);  // keeps partition 2 alive
    EXPECT_EQ(sequences.expire_idle(2000), 0u);
    EXPECT_EQ(sequences.expire_idle(2400), 1u);
    EXPECT_EQ(sequences.counters().streams_expired, 2u);
}

TEST(txn_sequences, virtual_partitions_per_stream_are_bounded) {
    txn_sequences_limits limits;
    limits.virtual_partitions_per_stream_max = 2;
    txn_sequences sequences(limits);
    sequences.assign(stream(), 1, 0, 1, 0);
    sequences.assign(stream(), 5, 0, 1, 0);
    EXPECT_EQ(sequences.assign(stream(), 9, 0, 1, 0).outcome, txn_assign_outcome::no_room);
    EXPECT_EQ(sequences.assign(stream(), 5, 1, 1, 0).outcome, txn_assign_outcome::fresh);
    EXPECT_EQ(sequences.counters().no_room, 1u);
}

// A seeded walk: clients on several virtual partitions send and retry, the proxy sends in the
// order the state dictates over one in-order connection, and a broker model (sequence checks,
// a dedupe window of 5) fails some sends, some after writing them. What the broker writes for
// the stream must be contiguous from 0, never overlapping, and every client batch exactly once.
struct broker_model {
    struct written {
        int32_t base = 0;
        int32_t count = 0;
        int64_t offset = 0;
    };
    struct answer {
        int32_t base = 0;
        int16_t error = 0;
        int64_t offset = -1;
    };
    int32_t next_sequence = 0;
    int64_t log_end = 0;
    std::deque<written> window;    // the last 5 written
    std::vector<written> log;      // every batch written, in order
    std::deque<int32_t> requests;  // physical bases, in sending order

    answer handle(int32_t base, int32_t count, std::mt19937& random) {
        for (const written& batch : window) {
            if (batch.base == base && batch.count == count) return {base, 0, batch.offset};
        }
        if (base != next_sequence) return {base, 45};
        if (random() % 8 == 0) return {base, not_leader_or_follower};  // not written
        log.push_back({base, count, log_end});
        window.push_back(log.back());
        if (window.size() > 5) window.pop_front();
        next_sequence = txn_sequence_after(base, count);
        log_end += count;
        if (random() % 10 == 0) return {base, request_timed_out};  // written, answer lost
        return {base, 0, log.back().offset};
    }
};

TEST(txn_sequences, property_written_ranges_are_contiguous_and_each_client_batch_lands_once) {
    for (uint32_t seed = 1; seed <= 20; ++seed) {
        std::mt19937 random(seed);
        txn_sequences sequences;
        broker_model broker;
        const txn_stream_key key = stream();
        const std::vector<int32_t> virtual_partitions{1, 5, 9};
        std::map<int32_t, int32_t> client_next;                          // per v
        std::map<std::pair<int32_t, int32_t>, int32_t> client_batches;  // (v, base) -> count
        std::map<std::pair<int32_t, int32_t>, int64_t> client_acknowledged;
        std::map<int32_t, int32_t> physical_count;  // physical base -> count, for the broker
        std::deque<broker_model::answer> answers;
        for (int step = 0; step < 4000; ++step) {
            switch (random() % 5) {
            case 0: {  // a client sends a new batch
                int32_t v = virtual_partitions[random() % virtual_partitions.size()];
                int32_t count = int32_t(1 + random() % 4);
                auto assigned = sequences.assign(key, v, client_next[v], count, step);
                if (assigned.outcome == txn_assign_outcome::no_room) break;
                ASSERT_EQ(assigned.outcome, txn_assign_outcome::fresh) << "seed " << seed;
                client_batches[{v, client_next[v]}] = count;
                physical_count[assigned.physical_base_sequence] = count;
                client_next[v] = txn_sequence_after(client_next[v], count);
                break;
            }
            case 1: {  // a client retries one of its batches still in the window
                if (client_batches.empty()) break;
                auto retried = std::next(client_batches.begin(), random() % client_batches.size());
                auto assigned = sequences.assign(key, retried->first.first, retried->first.second, retried->second, step);
                ASSERT_NE(assigned.outcome, txn_assign_outcome::fresh) << "seed " << seed;
                if (assigned.outcome == txn_assign_outcome::retry_acknowledged) {
                    ASSERT_EQ(assigned.result.base_offset, client_acknowledged.at(retried->first));
                }
                break;
            }
            case 2:  // the proxy sends what it may
                for (int32_t base : send_all(sequences, key)) broker.requests.push_back(base);
                break;
            case 3:  // the broker handles one request
                if (broker.requests.empty()) break;
                answers.push_back(broker.handle(broker.requests.front(), physical_count.at(broker.requests.front()), random));
                broker.requests.pop_front();
                break;
            default: {  // one answer reaches the proxy
                if (answers.empty()) break;
                broker_model::answer answer = answers.front();
                answers.pop_front();
                if (answer.error == 0) {
                    auto batch = sequences.on_acknowledged(key, answer.base, answer.offset, -1, 0);
                    if (batch) client_acknowledged[{batch->virtual_partition, batch->client_base_sequence}] = answer.offset;
                    break;
                }
                bool retriable = answer.error != 45;
                ASSERT_NE(sequences.on_failed(key, answer.base, answer.error, retriable).effect,
                          txn_failure_effect::poisoned) << "seed " << seed << " step " << step;
                break;
            }
            }
            // Client batches the state no longer remembers are never retried again.
            if (client_batches.size() > 40) client_batches.erase(client_batches.begin());
        }
        // Drain: send, handle and answer until nothing is outstanding (bounded).
        for (int round = 0; round < 1000 && !sequences.in_flight(key).empty(); ++round) {
            for (int32_t base : send_all(sequences, key)) broker.requests.push_back(base);
            while (!broker.requests.empty()) {
                answers.push_back(broker.handle(broker.requests.front(), physical_count.at(broker.requests.front()), random));
                broker.requests.pop_front();
            }
            for (; !answers.empty(); answers.pop_front()) {
                const auto& answer = answers.front();
                if (answer.error == 0) {
                    sequences.on_acknowledged(key, answer.base, answer.offset, -1, 0);
                } else {
                    ASSERT_NE(sequences.on_failed(key, answer.base, answer.error, answer.error != 45).effect,
                              txn_failure_effect::poisoned);
                }
            }
        }
        ASSERT_TRUE(sequences.in_flight(key).empty()) << "seed " << seed;
        // Contiguous from 0, no overlap, every assigned range written exactly once.
        ASSERT_FALSE(broker.log.empty());
        int32_t expected = 0;
        std::set<int32_t> written_bases;
        for (const auto& batch : broker.log) {
            ASSERT_EQ(batch.base, expected) << "seed " << seed;
            ASSERT_TRUE(written_bases.insert(batch.base).second);
            expected = txn_sequence_after(batch.base, batch.count);
        }
        ASSERT_EQ(written_bases.size(), physical_count.size()) << "seed " << seed;
        EXPECT_GT(sequences.counters().resends, 0u) << "seed " << seed;  // failures were exercised
    }
}

}  // namespace
}  // namespace kpp
