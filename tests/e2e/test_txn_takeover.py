"""A proxy instance meeting a transactional producer it holds no sequence state for
(DESIGN.md section 2, "Transactional producers"): another instance failed mid-transaction,
or this one restarted. It asks the broker (DescribeProducers) where the producer stands on
the physical partition before the first batch: an open transaction there is refused with
OUT_OF_ORDER_SEQUENCE_NUMBER, so that the client aborts and moves to a new epoch (nothing
written, no range guessed); without an open transaction the stream continues after the
broker's last sequence; a new epoch starts at 0.

Runs against the strict broker (tests/e2e/producer_audit.py), which checks every producer's
sequences as Kafka does and answers DescribeProducers; neither librdkafka mock offers
DescribeProducers, and transaction markers are written here by the test, as a coordinator
would. Batches are sent raw so that each step is exactly one batch.
"""

from __future__ import annotations

import pytest

import kpp_testbed as tb
import producer_audit as pa
import vp_support as vs
from conftest import VIRTUAL_MAPPING_202

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="sequence renumbering exists only in the proxy")

PHYSICAL = 10
PRODUCER = 930000
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def txn_produce(bootstrap: str, topic: str, virtual_partition: int, epoch: int, sequence: int,
                value: str) -> tuple[int, int]:
    """One transactional batch of one record through `bootstrap` (a proxy): (error, offset)."""
    metadata = vs.metadata_of(bootstrap, [topic])
    leader = {p.partition: p.leader for p in metadata.topics[topic].partitions}[virtual_partition]
    host, port = metadata.brokers[leader]
    batch = pa.producer_batch([value.encode()], PRODUCER, epoch, sequence, transactional=True)
    with vs.KafkaConnection(host, port) as connection:
        ((_, error_code, base_offset),) = connection.produce(topic, [(virtual_partition, batch)])
    return error_code, base_offset


def write_marker(broker, topic: str, physical_partition: int, epoch: int) -> None:
    """A COMMIT marker for PRODUCER, written straight to the broker as a coordinator would."""
    host, port = tb.parse_bootstrap(broker.bootstrap)[0]
    with vs.KafkaConnection(host, port) as connection:
        ((_, error_code, _),) = connection.produce(
            topic, [(physical_partition, pa.control_batch(PRODUCER, epoch, commit=True))])
    assert error_code == 0, f"marker refused with {error_code}"


def batches_of(broker, topic: str, physical_partition: int) -> list[tuple[int, int, bool]]:
    """(epoch, base sequence, control) of PRODUCER's batches on a physical partition."""
    return [(batch.producer_epoch, batch.base_sequence, batch.is_control)
            for batch in pa.physical_batches(broker.bootstrap, topic, physical_partition)
            if batch.producer_id == PRODUCER]


def test_an_instance_without_state_refuses_an_open_transaction_and_continues_a_closed_one(log_dir):
    topic = tb.unique_name("vp-txn-takeover")
    broker = pa.StrictBroker(log_dir, {topic: PHYSICAL}, strict=True)
    first = tb.Proxy(broker, log_dir, "txn-takeover-a", VIRTUAL_MAPPING_202)
    second = None
    try:
        # Instance A: virtual partitions 1 and 11 share physical partition 1 (ranges 0 and 1);
        # virtual partition 2 is alone on physical partition 2, whose transaction then ends.
        assert txn_produce(first.bootstrap, topic, 1, 0, 0, "a-1")[0] == 0
        assert txn_produce(first.bootstrap, topic, 11, 0, 0, "a-11")[0] == 0
        assert txn_produce(first.bootstrap, topic, 2, 0, 0, "a-2")[0] == 0
        assert batches_of(broker, topic, 1) == [(0, 0, False), (0, 1, False)]
        write_marker(broker, topic, 2, 0)

        # Instance B knows nothing of producer 930000.
        second = tb.Proxy(broker, log_dir, "txn-takeover-b", VIRTUAL_MAPPING_202)
        # Physical partition 1 has the producer's open transaction: refused, nothing written
        # (starting at range 0 would have been taken by the broker for a retry of "a-1").
        error, _ = txn_produce(second.bootstrap, topic, 21, 0, 0, "b-21")
        assert error == OUT_OF_ORDER_SEQUENCE_NUMBER, error
        assert batches_of(broker, topic, 1) == [(0, 0, False), (0, 1, False)]
        # And stays refused for that epoch, retries of what A had sent included.
        assert txn_produce(second.bootstrap, topic, 1, 0, 0, "a-1")[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        # Physical partition 2: the transaction ended; the next range follows the broker's.
        error, _ = txn_produce(second.bootstrap, topic, 12, 0, 0, "b-12")
        assert error == 0, error
        assert batches_of(broker, topic, 2) == [(0, 0, False), (0, -1, True), (0, 1, False)]
        # The client's new epoch (after its abort) starts at range 0, also on partition 1.
        error, _ = txn_produce(second.bootstrap, topic, 21, 1, 0, "b-21")
        assert error == 0, error
        assert batches_of(broker, topic, 1)[-1] == (1, 0, False)

        problems = pa.audit(broker.bootstrap, topic, PHYSICAL)
        assert not problems, "\n".join(problems[:20])
        totals = broker.totals()
        assert totals.out_of_order_rejected == 0 and totals.fenced == 0, totals
        metrics = vs.metric_totals(tb.Endpoint(broker, second))
        assert metrics.get("kpp_txn_takeovers_total", 0) == 1, metrics.get("kpp_txn_takeovers_total")
    finally:
        if second is not None:
            second.stop()
        first.stop()
        broker.stop()
