"""The strict broker and the producer audit themselves (issue 12, DESIGN.md section 5).

kpp-mem-broker --strict-producers must apply Kafka's producer-state rules (in-order
sequences, dedupe of the last 5 batches with the original offset, epoch fencing, no state
accepts any sequence), and --drop-answer-every must make a client retry what was written
without a duplicate in the log. The audit must find a planted gap and a planted repeated
range and pass a clean log. No proxy here: raw requests and confluent-kafka, straight to
the broker.
"""

from __future__ import annotations


import pytest

import producer_audit as pa
import vp_support as vp

NONE = 0


@pytest.fixture
def brokers(log_dir):
    started = []

    def start(topics: dict[str, int], **options) -> pa.StrictBroker:
        broker = pa.StrictBroker(log_dir, topics, name=f"strict-broker-{len(started)}", **options)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def values(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{index}".encode() for index in range(count)]


def produce_one(connection: vp.KafkaConnection, topic: str, partition: int,
                batch: bytes) -> tuple[int, int]:
    """(error code, base offset) of a one-batch Produce."""
    [(answered_partition, error_code, base_offset)] = connection.produce(topic, [(partition, batch)])
    assert answered_partition == partition
    return error_code, base_offset


def test_producer_state_rules(brokers):
    broker = brokers({"rules": 2})
    producer_id = 7000  # never handed out: the broker has no state for it
    with broker.connect() as connection:
        def send(sequence: int, count: int, epoch: int = 0, producer: int = producer_id,
                 partition: int = 0) -> tuple[int, int]:
            batch = pa.producer_batch(values(f"p{producer}e{epoch}s{sequence}", count), producer,
                                      epoch, sequence)
            return produce_one(connection, "rules", partition, batch)

        # A producer with no state accepts any first sequence (KIP-360); then in order.
        assert send(100, 3) == (NONE, 0)
        assert send(103, 2) == (NONE, 3)
        # A gap and a partial overlap are out of order, and nothing is appended.
        assert send(106, 1)[0] == pa.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert send(104, 2)[0] == pa.OUT_OF_ORDER_SEQUENCE_NUMBER
        # A repeat of a recent batch: NONE with its original offset, not appended.
        assert send(100, 3) == (NONE, 0)
        assert send(103, 2) == (NONE, 3)
        # Only the last 5 batches are remembered: after 4 more, the first is out of the window.
        for index, sequence in enumerate(range(105, 109)):
            assert send(sequence, 1) == (NONE, 5 + index)
        assert send(103, 2) == (NONE, 3)  # still among the last 5
        assert send(100, 3)[0] == pa.OUT_OF_ORDER_SEQUENCE_NUMBER
        # Epochs: a new epoch starts at sequence 0; then the old epoch is fenced.
        assert send(109, 1, epoch=1)[0] == pa.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert send(0, 2, epoch=1) == (NONE, 9)
        assert send(109, 1, epoch=0)[0] == pa.INVALID_PRODUCER_EPOCH
        assert send(2, 1, epoch=1) == (NONE, 11)
        # State is per (producer id, partition): the same id starts afresh on partition 1,
        # and a new id accepts any sequence.
        assert send(55, 1, partition=1) == (NONE, 0)
        assert send(5000, 1, producer=producer_id + 1) == (NONE, 12)
        # Sequences wrap: INT32_MAX is followed by 0.
        wrap_id = producer_id + 2
        assert send(pa.INT32_MAX - 1, 3, producer=wrap_id) == (NONE, 13)  # ..INT32_MAX, 0
        assert send(1, 1, producer=wrap_id) == (NONE, 16)
        assert send(pa.INT32_MAX - 1, 3, producer=wrap_id) == (NONE, 13)  # duplicate across the wrap
        # Batches without a producer id are never checked.
        assert produce_one(connection, "rules", 0, vp.record_batch(values("plain", 2))) == (NONE, 17)

    batches = pa.physical_batches(broker.bootstrap, "rules", 0)
    assert [(b.producer_id, b.producer_epoch, b.base_sequence, b.records_count) for b in batches] == [
        (producer_id, 0, 100, 3), (producer_id, 0, 103, 2),
        (producer_id, 0, 105, 1), (producer_id, 0, 106, 1), (producer_id, 0, 107, 1),
        (producer_id, 0, 108, 1), (producer_id, 1, 0, 2), (producer_id, 1, 2, 1),
        (producer_id + 1, 0, 5000, 1), (wrap_id, 0, pa.INT32_MAX - 1, 3), (wrap_id, 0, 1, 1),
        (-1, -1, -1, 2)]
    assert pa.audit(broker.bootstrap, "rules", 2) == []
    totals = broker.totals()
    assert (totals.duplicates_answered, totals.out_of_order_rejected, totals.fenced,
            totals.answers_dropped) == (4, 4, 1, 0), broker.log_tail()
    verdicts = broker.verdict_lines()
    assert len(verdicts) == 9, verdicts
    assert any("OUT_OF_ORDER_SEQUENCE_NUMBER (45)" in line and f"producer id {producer_id} epoch 0"
               in line and "sequences 106..106" in line for line in verdicts), verdicts


def test_init_producer_id(brokers):
    broker = brokers({"ids": 1})
    with broker.connect() as connection:
        versions = connection.api_versions()
        assert versions[22] == (0, 4)
        first = pa.init_producer_id(connection, 1)
        second = pa.init_producer_id(connection, 4)
        assert first[0] == second[0] == NONE and first[1] != second[1]
        assert first[2] == second[2] == 0
        # KIP-360: the same id at epoch + 1, then the old epoch is refused.
        assert pa.init_producer_id(connection, 3, producer_id=second[1], producer_epoch=0) == \
            (NONE, second[1], 1)
        assert pa.init_producer_id(connection, 3, producer_id=second[1], producer_epoch=0)[0] == \
            pa.INVALID_PRODUCER_EPOCH
        assert pa.init_producer_id(connection, 4, producer_id=second[1], producer_epoch=0)[0] == \
            pa.PRODUCER_FENCED
        assert pa.init_producer_id(connection, 4, producer_id=424242, producer_epoch=0)[0] == \
            pa.INVALID_PRODUCER_ID_MAPPING
        # A transactional id seen before gets its id back at the next epoch.
        transactional = pa.init_producer_id(connection, 2, transactional_id="kpp-txn")
        assert pa.init_producer_id(connection, 0, transactional_id="kpp-txn") == \
            (NONE, transactional[1], transactional[2] + 1)
        # The bumped epoch fences the old one on the partition.
        epoch0 = pa.producer_batch(values("e0", 1), second[1], 0, 0)
        epoch1 = pa.producer_batch(values("e1", 1), second[1], 1, 0)
        assert produce_one(connection, "ids", 0, epoch0) == (NONE, 0)
        assert produce_one(connection, "ids", 0, epoch1) == (NONE, 1)
        assert produce_one(connection, "ids", 0, epoch0)[0] == pa.INVALID_PRODUCER_EPOCH


def test_dropped_answer_then_retry(brokers):
    broker = brokers({"drops": 1}, drop_answer_every=2)
    producer_id = 8000
    first = pa.producer_batch(values("first", 2), producer_id, 0, 0)
    second = pa.producer_batch(values("second", 3), producer_id, 0, 2)
    third = pa.producer_batch(values("third", 1), producer_id, 0, 5)
    with broker.connect() as connection:
        assert produce_one(connection, "drops", 0, first) == (NONE, 0)
        # The second appending request is written and then the connection closes unanswered.
        with pytest.raises((AssertionError, ConnectionError)):
            produce_one(connection, "drops", 0, second)
    with broker.connect() as connection:
        # The retry is a duplicate: its original offset, and not written again (a duplicate
        # appends nothing, so it does not count towards the next drop either).
        assert produce_one(connection, "drops", 0, second) == (NONE, 2)
        assert produce_one(connection, "drops", 0, third) == (NONE, 5)
    batches = pa.physical_batches(broker.bootstrap, "drops", 0)
    assert [(b.base_offset, b.base_sequence, b.records_count) for b in batches] == \
        [(0, 0, 2), (2, 2, 3), (5, 5, 1)]
    assert pa.physical_values(broker.bootstrap, "drops", 0) == \
        values("first", 2) + values("second", 3) + values("third", 1)
    totals = broker.totals()
    assert (totals.duplicates_answered, totals.answers_dropped) == (1, 1), broker.log_tail()


def test_audit_finds_planted_problems(brokers):
    # Not strict: this broker stores whatever it is sent, as the librdkafka mocks do for
    # idempotent producers.
    broker = brokers({"planted": 3}, strict=False)
    with broker.connect() as connection:
        def put(partition: int, producer_id: int, epoch: int, sequence: int, count: int):
            batch = pa.producer_batch(values(f"{producer_id}-{sequence}", count), producer_id,
                                      epoch, sequence)
            assert produce_one(connection, "planted", partition, batch)[0] == NONE

        # Partition 0: a gap (sequences 5..9 missing).
        put(0, 100, 0, 0, 3)
        put(0, 100, 0, 3, 2)
        put(0, 100, 0, 10, 1)
        # Partition 1: one range written twice, the stream continuing after it.
        put(1, 200, 0, 0, 2)
        put(1, 200, 0, 2, 2)
        put(1, 200, 0, 2, 2)
        put(1, 200, 0, 4, 1)
        # Partition 2 is clean: two producers interleaved, an epoch restarting at 0, a
        # stream starting anywhere, sequences wrapping, a transaction marker and batches
        # without a producer id (both left out).
        put(2, 300, 0, 0, 2)
        put(2, 301, 0, 40, 5)
        put(2, 300, 0, 2, 1)
        put(2, 300, 1, 0, 4)
        put(2, 302, 0, pa.INT32_MAX, 2)
        put(2, 302, 0, 1, 1)
        assert produce_one(connection, "planted", 2, pa.control_batch(300, 1))[0] == NONE
        assert produce_one(connection, "planted", 2, vp.record_batch(values("plain", 3)))[0] == NONE
        put(2, 300, 1, 4, 2)

    assert pa.audit_batches(pa.physical_batches(broker.bootstrap, "planted", 2)) == []
    problems = pa.audit(broker.bootstrap, "planted", 3)
    assert len(problems) == 2, problems
    assert problems[0].startswith("planted [0]: producer id 100 epoch 0") and \
        "starts at sequence 10, expected 5" in problems[0], problems
    assert problems[1].startswith("planted [1]: producer id 200 epoch 0") and \
        "sequences 2..3 written twice (offsets 2 and 4)" in problems[1], problems
    summary = pa.count_by_producer(broker.bootstrap, "planted", 3)
    assert summary == {0: {(100, 0): 6}, 1: {(200, 0): 7},
                       2: {(300, 0): 3, (301, 0): 5, (300, 1): 6, (302, 0): 3}}
    assert pa.producer_ids_per_partition(summary) == {0: {100}, 1: {200}, 2: {300, 301, 302}}


def test_confluent_idempotent_exactly_once(brokers):
    """An idempotent librdkafka producer straight to the strict broker, with every 7th
    answer dropped: every record lands exactly once, and the audit is clean."""
    partitions, count = 4, 500
    broker = brokers({"exactly-once": partitions}, drop_answer_every=7)
    producer = vp.confluent_producer(broker.bootstrap, **{
        "enable.idempotence": True, "linger.ms": 2, "retry.backoff.ms": 10,
        "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100,
        "log_level": 3})  # the dropped connections are expected: no warnings about them
    acked, failed = [], []

    def on_delivery(error, message):
        (failed if error is not None else acked).append(
            (message.partition(), message.offset(), message.value(), str(error)))

    sent = values("eo", count)
    # In rounds, each flushed, so that the records go out in many Produce requests (and many
    # are dropped) however busy the machine is: polled only, a starved client thread batched
    # all 500 records into 4 requests and no answer was dropped.
    for start in range(0, count, 10):
        for index in range(start, start + 10):
            producer.produce("exactly-once", value=sent[index], partition=index % partitions,
                             on_delivery=on_delivery)
        assert producer.flush(30) == 0, f"round at {start}: records still in flight after 30 s"

    assert producer.flush(30) == 0, "records still in flight after 30 s"
    assert not failed, failed[:5]
    assert len(acked) == count

    for partition in range(partitions):
        stored = pa.physical_values(broker.bootstrap, "exactly-once", partition)
        assert stored == sent[partition::partitions], \
            f"partition {partition}: {len(stored)} records, {len(set(stored))} distinct"
    # Each delivery report names the offset the record really has.
    for partition, offset, value, _ in acked:
        assert sent.index(value) % partitions == partition
    offsets = {(partition, offset) for partition, offset, _, _ in acked}
    assert len(offsets) == count
    assert pa.audit(broker.bootstrap, "exactly-once", partitions) == []
    summary = pa.count_by_producer(broker.bootstrap, "exactly-once", partitions)
    assert [len(ids) for ids in pa.producer_ids_per_partition(summary).values()] == [1] * partitions
    totals = broker.totals()
    assert totals.answers_dropped >= 3, broker.log_tail()
    assert totals.out_of_order_rejected == totals.fenced == 0, broker.log_tail()


def test_audit_catches_what_a_lax_broker_writes_twice(brokers):
    """The same producer and fault without --strict-producers: the retries of dropped
    answers are written again, and the audit says where."""
    partitions, count = 4, 200
    broker = brokers({"lax": partitions}, strict=False, drop_answer_every=5)
    producer = vp.confluent_producer(broker.bootstrap, **{
        "enable.idempotence": True, "linger.ms": 2, "retry.backoff.ms": 10,
        "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100, "log_level": 3})
    sent = values("lax", count)
    for start in range(0, count, 10):
        for index in range(start, start + 10):
            producer.produce("lax", value=sent[index], partition=index % partitions)
        producer.poll(0.01)
    assert producer.flush(30) == 0
    stored = [value for partition in range(partitions)
              for value in pa.physical_values(broker.bootstrap, "lax", partition)]
    assert sorted(set(stored)) == sorted(sent)
    assert len(stored) > count
    problems = pa.audit(broker.bootstrap, "lax", partitions)
    assert problems and all("written twice" in problem for problem in problems), problems
    assert broker.totals().answers_dropped >= 1
