"""An upstream broker goes down and comes back (the launcher's `down N` / `up N`).

While it is down, clients get retriable errors or reconnect but never hang, and partitions led
by the other brokers keep working. After `up`, producing and consuming work again on every
partition and every acknowledged record is consumable, once, in order. The 2.0.2 mock does not
move leadership when a broker goes down, so the victim's partitions are simply unavailable."""

import subprocess
import time

import pytest

import kpp_testbed as tb

RECORDS_PER_PARTITION = 10


class Reader:
    """A confluent-kafka consumer assigned to every partition from the beginning, kept open
    across the outage."""

    def __init__(self, endpoint, topic, partitions):
        import confluent_kafka

        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": endpoint.bootstrap, "group.id": tb.unique_name("down"),
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "reconnect.backoff.max.ms": 1000})
        self.consumer.assign([confluent_kafka.TopicPartition(topic, p,
                                                             confluent_kafka.OFFSET_BEGINNING)
                              for p in range(partitions)])
        self.records = []

    def read_until(self, wanted, timeout_s, what):
        """Polls until every (partition, offset, value) in wanted has been read."""
        def done():
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.records.append((message.partition(), message.offset(),
                                     message.value().decode()))
            return set(wanted) <= set(self.records)
        tb.wait_until(done, timeout_s, what, interval_s=0)

    def drain(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.records.append((message.partition(), message.offset(),
                                     message.value().decode()))

    def close(self):
        self.consumer.close()


def leaders(endpoint, topic):
    import confluent_kafka.admin

    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": endpoint.bootstrap})
    metadata = admin.list_topics(topic=topic, timeout=15)
    return {p.id: p.leader for p in metadata.topics[topic].partitions.values()}


def check_acked_consumed_once_in_order(records, acked):
    keys = [(partition, offset) for partition, offset, _ in records]
    assert len(keys) == len(set(keys)), "a record was consumed twice"
    missing = set(acked) - set(records)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    by_partition = {}
    for partition, offset, value in sorted(records):
        by_partition.setdefault(partition, []).append(value)
    for partition, offset, value in acked:
        assert value in by_partition[partition]
    for partition in by_partition:
        acked_values = [v for p, _, v in sorted(acked) if p == partition]
        consumed_acked = [v for v in by_partition[partition] if v in set(acked_values)]
        assert consumed_acked == acked_values, f"partition {partition}: order differs"


@pytest.mark.parametrize("victim", [1, 2, 3])
def test_broker_down_and_up(proxy202, victim):
    """Each broker in turn, so the one the proxy happens to use for bootstrap-port traffic
    (metadata of new clients) is among the victims."""
    endpoint = proxy202
    topic, partitions = endpoint.create_topic("down", 6)
    leader_by_partition = tb.wait_until(lambda: leaders(endpoint, topic), 30, "metadata")
    victim_partitions = {p for p, leader in leader_by_partition.items() if leader == victim}
    healthy_partitions = set(range(partitions)) - victim_partitions
    reader = Reader(endpoint, topic, partitions)
    try:
        before = tb.expected_values("before", partitions, RECORDS_PER_PARTITION)
        acked_before, failed = tb.confluent_produce(endpoint.bootstrap, topic, before)
        assert not failed, failed[:5]
        reader.read_until(acked_before, 30, "records produced before the outage")

        endpoint.upstream.broker_down(victim)
        started = time.monotonic()
        during = tb.expected_values("during", partitions, RECORDS_PER_PARTITION)
        acked_during, failed_during = tb.confluent_produce(
            endpoint.bootstrap, topic, during,
            extra_config={"message.timeout.ms": 8000, "retry.backoff.ms": 200},
            flush_timeout_s=30)
        assert time.monotonic() - started < 30, "producing during the outage hung"
        assert not {p for p, _, _ in acked_during} & victim_partitions, \
            f"records acknowledged on partitions of the down broker {victim}: {acked_during}"
        acked_healthy = {p for p, _, _ in acked_during}
        assert acked_healthy == healthy_partitions, (
            f"partitions {sorted(healthy_partitions - acked_healthy)} led by live brokers did "
            f"not accept records while broker {victim} was down; errors: {failed_during[:3]}")
        reader.read_until(acked_during, 30, "healthy partitions' records during the outage")
        # Fresh clients bootstrap through the proxy's single address: every one of them must
        # get metadata although one upstream broker is down (several, because the proxy
        # spreads bootstrap connections over the upstream brokers).
        for attempt in range(6):
            try:
                metadata = subprocess.run(["kcat", "-b", endpoint.bootstrap, "-L", "-J",
                                           "-m", "10"], capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"metadata request hung while broker {victim} was down")
            assert metadata.returncode == 0, (
                f"fresh client #{attempt}: no metadata within 10 s while broker {victim} was "
                f"down: {metadata.stderr[-500:]!r}")

        endpoint.upstream.broker_up(victim)
        after = tb.expected_values("after", partitions, RECORDS_PER_PARTITION)
        acked_after, failed_after = tb.confluent_produce(
            endpoint.bootstrap, topic, after, extra_config={"message.timeout.ms": 30000},
            flush_timeout_s=45)
        assert not failed_after, f"producing after `up {victim}` failed: {failed_after[:3]}"
        reader.read_until(acked_after, 60, "records produced after the outage")
        reader.read_until(acked_before + acked_during + acked_after, 10, "every acked record")
        reader.drain(2.0)  # give duplicates a chance to show up
        check_acked_consumed_once_in_order(reader.records,
                                           acked_before + acked_during + acked_after)
    finally:
        reader.close()

    # A fresh client and another tool agree after the outage.
    total_acked = len(acked_before) + len(acked_during) + len(acked_after)
    fresh = tb.kafka_python_consume_assigned(endpoint.bootstrap, topic, partitions, total_acked)
    check_acked_consumed_once_in_order(fresh, acked_before + acked_during + acked_after)


def test_all_brokers_down_then_up(proxy202):
    """Every upstream broker down: clients get errors within their timeouts, no hang;
    then everything works again."""
    endpoint = proxy202
    topic, partitions = endpoint.create_topic("alldown", 3)
    expected = tb.expected_values("pre", partitions, 3)
    acked, failed = tb.confluent_produce(endpoint.bootstrap, topic, expected)
    assert not failed
    broker_ids = sorted(endpoint.upstream.broker_addresses)
    for broker_id in broker_ids:
        endpoint.upstream.broker_down(broker_id)
    try:
        started = time.monotonic()
        _, failed_down = tb.confluent_produce(
            endpoint.bootstrap, topic, tb.expected_values("lost", partitions, 2),
            extra_config={"message.timeout.ms": 5000}, flush_timeout_s=30)
        assert time.monotonic() - started < 30, "producing with every broker down hung"
        try:
            subprocess.run(["kcat", "-b", endpoint.bootstrap, "-L", "-m", "5"],
                           capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("kcat -L hung with every broker down")
        if not endpoint.direct:
            assert endpoint.proxy.alive(), endpoint.proxy.log_tail()
    finally:
        for broker_id in broker_ids:
            endpoint.upstream.broker_up(broker_id)
    after = tb.expected_values("post", partitions, 3)
    acked_after, failed_after = tb.confluent_produce(
        endpoint.bootstrap, topic, after, extra_config={"message.timeout.ms": 30000},
        flush_timeout_s=45)
    assert not failed_after, failed_after[:3]
    received = tb.confluent_consume_assigned(endpoint.bootstrap, topic, partitions,
                                             len(acked) + len(acked_after), drain_s=2.0)
    check_acked_consumed_once_in_order(received, acked + acked_after)
