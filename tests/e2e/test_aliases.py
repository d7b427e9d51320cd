"""Producer aliases of idempotent producers on mapped topics (DESIGN.md section 2,
"Idempotent producers: one physical producer id per virtual group").

- Through the strict broker (tests/e2e/producer_audit.py: Kafka's producer-state rules, and
  answers dropped after appending so clients retry what was written): an idempotent
  confluent-kafka producer writes every record exactly once, the broker deduplicates the
  retries, and the physical log's sequences are contiguous per producer id.
- Two proxy instances creating the alias of one client producer at the same moment agree
  on it (the earliest record in the store wins).
- A retry sent through a second instance after the first was killed goes out under the
  same alias, so the broker answers it as a duplicate with its original offset.
"""

from __future__ import annotations

import collections
import threading

import pytest

import kpp_testbed as tb
import producer_audit as pa
import vp_support as vs
from conftest import VIRTUAL_MAPPING_202

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="producer aliases exist only in the proxy")

PHYSICAL = 10
VIRTUAL = 100


def values_by_physical(bootstrap: str, topic: str) -> dict[int, list[str]]:
    return {p: [value.decode() for value in pa.physical_values(bootstrap, topic, p)] for p in range(PHYSICAL)}


def test_idempotent_retries_are_deduplicated_by_the_strict_broker(log_dir):
    topic = tb.unique_name("vp-alias-strict")
    broker = pa.StrictBroker(log_dir, {topic: PHYSICAL}, strict=True, drop_answer_every=40)
    proxy = tb.Proxy(broker, log_dir, "alias-strict", VIRTUAL_MAPPING_202)
    try:
        producer = vs.confluent_producer(proxy.bootstrap, **{"enable.idempotence": True,
                                                             "message.timeout.ms": 60000})
        failures, delivered = [], []

        def on_delivery(error, message):
            (failures if error else delivered).append(error or message.partition())

        rounds = 10
        for i in range(rounds):
            for v in range(VIRTUAL):
                producer.produce(topic, f"v{v}-{i}".encode(), partition=v, on_delivery=on_delivery)
            producer.poll(0)
        assert producer.flush(90) == 0, "records still queued after 90 s"
        assert not failures, f"delivery failures: {failures[:5]}"
        assert len(delivered) == rounds * VIRTUAL

        problems = pa.audit(broker.bootstrap, topic, PHYSICAL)
        assert not problems, "\n".join(problems[:20])
        stored = values_by_physical(broker.bootstrap, topic)
        counts = collections.Counter(value for values in stored.values() for value in values)
        assert sorted(counts) == sorted(f"v{v}-{i}" for v in range(VIRTUAL) for i in range(rounds))
        assert max(counts.values()) == 1, f"written twice: {[k for k, c in counts.items() if c > 1][:10]}"
        for p, values in stored.items():
            by_virtual = collections.defaultdict(list)
            for value in values:
                v, i = value[1:].split("-")
                by_virtual[int(v)].append(int(i))
            assert all(v % PHYSICAL == p for v in by_virtual), f"a record on the wrong physical partition {p}"
            assert all(order == list(range(rounds)) for order in by_virtual.values()), f"out of order on {p}"
        # One physical producer id per virtual group on every physical partition.
        summary = pa.count_by_producer(broker.bootstrap, topic, PHYSICAL)
        for p, producers in pa.producer_ids_per_partition(summary).items():
            assert len(producers) == VIRTUAL // PHYSICAL, f"partition {p}: producer ids {producers}"
        totals = broker.totals()
        assert totals.answers_dropped > 0, "the fault mode dropped no answer: nothing was retried"
        assert totals.duplicates_answered > 0, "no retry of a written batch reached the broker"
        assert totals.out_of_order_rejected == 0 and totals.fenced == 0, totals
        metrics = vs.metric_totals(tb.Endpoint(broker, proxy))
        assert metrics.get("kpp_producer_aliases_created_total", 0) >= VIRTUAL // PHYSICAL - 1
        assert metrics.get("kpp_producer_alias_failures_total", 0) == 0
    finally:
        proxy.stop()
        broker.stop()


def raw_produce(bootstrap: str, topic: str, virtual_partition: int, producer_id: int, sequence: int,
                values: list[bytes]) -> tuple[int, int]:
    host, port = tb.parse_bootstrap(bootstrap)[0]
    metadata = vs.metadata_of(bootstrap, [topic])
    leader = {p.partition: p.leader for p in metadata.topics[topic].partitions}[virtual_partition]
    host, port = metadata.brokers[leader]
    batch = pa.producer_batch(values, producer_id, 0, sequence)
    with vs.KafkaConnection(host, port) as connection:
        ((_, error_code, base_offset),) = connection.produce(topic, [(virtual_partition, batch)])
    return error_code, base_offset


def test_two_instances_creating_one_alias_at_once_agree(mock202, log_dir):
    topic = tb.unique_name("vp-alias-race")
    mock202.create_topic(topic, PHYSICAL)
    first = tb.Proxy(mock202, log_dir, "alias-race-a", VIRTUAL_MAPPING_202)
    second = tb.Proxy(mock202, log_dir, "alias-race-b", VIRTUAL_MAPPING_202)
    try:
        producer_ids = [910000 + n for n in range(6)]
        results: dict[tuple[int, int], tuple[int, int]] = {}

        def send(proxy, producer_id: int, virtual_partition: int):
            results[(producer_id, virtual_partition)] = raw_produce(
                proxy.bootstrap, topic, virtual_partition, producer_id, 0, [f"{producer_id}-{virtual_partition}".encode()])

        # Group g = 1 of each client producer: virtual partition 10 (physical 0) through one
        # instance and 11 (physical 1) through the other, all at the same moment.
        threads = [threading.Thread(target=send, args=(proxy, producer_id, v))
                   for producer_id in producer_ids for proxy, v in ((first, 10), (second, 11))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert all(error == 0 for error, _ in results.values()), results
        headers = {p: pa.physical_batches(mock202.bootstrap, topic, p) for p in (0, 1)}
        used = {}
        for p, batches in headers.items():
            for batch in batches:
                assert batch.producer_id not in producer_ids, "a group 1 batch kept the client's producer id"
                used.setdefault(p, []).append(batch.producer_id)
        assert len(used[0]) == len(used[1]) == len(producer_ids)
        # Same client producer -> same alias on both physical partitions, whichever instance sent it.
        assert sorted(used[0]) == sorted(used[1]), used
        assert len(set(used[0])) == len(producer_ids)
    finally:
        first.stop()
        second.stop()


def test_a_retry_through_another_instance_is_a_duplicate_for_the_broker(log_dir):
    topic = tb.unique_name("vp-alias-takeover")
    broker = pa.StrictBroker(log_dir, {topic: PHYSICAL}, strict=True)
    first = tb.Proxy(broker, log_dir, "alias-takeover-a", VIRTUAL_MAPPING_202)
    second = None
    try:
        producer_id, virtual_partition = 424242, 37  # group 3 of physical partition 7
        values = [b"t-0", b"t-1", b"t-2"]
        error, offset = raw_produce(first.bootstrap, topic, virtual_partition, producer_id, 0, values)
        assert error == 0
        first.kill()
        second = tb.Proxy(broker, log_dir, "alias-takeover-b", VIRTUAL_MAPPING_202)
        # The client did not get the answer and retries the same batch elsewhere.
        retry_error, retry_offset = raw_produce(second.bootstrap, topic, virtual_partition, producer_id, 0, values)
        assert (retry_error, retry_offset) == (0, offset), "the retry was not taken for a duplicate"
        error, next_offset = raw_produce(second.bootstrap, topic, virtual_partition, producer_id, 3, [b"t-3"])
        assert error == 0 and next_offset == offset + 3
        assert [v.decode() for v in pa.physical_values(broker.bootstrap, topic, 7)] == ["t-0", "t-1", "t-2", "t-3"]
        assert not pa.audit(broker.bootstrap, topic, PHYSICAL)
        assert broker.totals().duplicates_answered == 1
        assert vs.metric_totals(tb.Endpoint(broker, second)).get("kpp_producer_aliases_resolved_from_store_total", 0) >= 1
    finally:
        if second:
            second.stop()
        broker.stop()


def test_describe_producers_of_a_virtual_partition_shows_the_client_producer(log_dir):
    """DescribeProducers through the proxy, per virtual partition: the producers of its
    virtual group, an alias shown as the client producer (id and epoch) it stands for, with
    the client's own last sequence (aliases keep the client's sequences); a group nobody
    wrote to shows nobody. Straight from the broker the same physical partition lists the
    client's id and its alias."""
    topic = tb.unique_name("vp-describe")
    broker = pa.StrictBroker(log_dir, {topic: PHYSICAL}, strict=True)
    proxy = tb.Proxy(broker, log_dir, "alias-describe", VIRTUAL_MAPPING_202)
    client_producer = 940000
    try:
        # Group 0 (v = 3) gets 2 batches of 2 records, group 1 (v = 13) one batch of 3.
        assert raw_produce(proxy.bootstrap, topic, 3, client_producer, 0, [b"a", b"b"])[0] == 0
        assert raw_produce(proxy.bootstrap, topic, 3, client_producer, 2, [b"c", b"d"])[0] == 0
        assert raw_produce(proxy.bootstrap, topic, 13, client_producer, 0, [b"e", b"f", b"g"])[0] == 0
        host, port = tb.parse_bootstrap(broker.bootstrap)[0]
        with vs.KafkaConnection(host, port) as connection:
            physical = pa.describe_producers(connection, topic, [3])
        error, producers = physical[3]
        assert error == 0 and len(producers) == 2, physical
        assert {producer_id for producer_id, _, _, _ in producers} - {client_producer}, producers
        metadata = vs.metadata_of(proxy.bootstrap, [topic])
        leader = {p.partition: p.leader for p in metadata.topics[topic].partitions}[3]
        with vs.KafkaConnection(*metadata.brokers[leader]) as connection:
            virtual = pa.describe_producers(connection, topic, [3, 13, 23])
        assert virtual[3] == (0, [(client_producer, 0, 3, -1)]), virtual[3]
        assert virtual[13] == (0, [(client_producer, 0, 2, -1)]), virtual[13]
        assert virtual[23] == (0, []), virtual[23]
    finally:
        proxy.stop()
        broker.stop()
