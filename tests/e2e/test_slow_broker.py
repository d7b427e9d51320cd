"""A slow or down broker must never stall a core (issue 16, defect 1).

Measured before the fix: with librdkafka producing 2,000 records/s to a mapped topic, a
broker slowed to 5 s for 5 s left the other brokers' partitions unacknowledged for up to
28 s, because the Produce requests waiting for the slow broker pinned every receive
buffer of the core and no broker answer could be read until the request timeout; the
client's resends then duplicated what had been written. Broker connections now receive
into a ring of their own.

Here, through the proxy with the virtual mapping (100 virtual over 10 physical on the 2.0.2
mock): two producers at once, one with librdkafka's default in-flight limit (the one that
piled requests up) and one idempotent, 2,000 records/s together, while broker 1 answers
after 5 s (`rtt 1 5000`) for 5 s:
- partitions led by brokers 2 and 3 keep acknowledging within 2 s all along;
- broker 1's partitions are acknowledged within 2 s of its recovery;
- afterwards every acknowledged record is read back exactly once from its virtual
  partition (no loss, no duplicate), and no client connection was closed by a timeout.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import kpp_testbed as tb
from conftest import VIRTUAL_MAPPING_202
from tls_support import samples

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="the stall was the proxy's")

PHYSICAL, VIRTUAL = 10, 100
RATE_PER_PRODUCER = 1000  # records per second
SLOW_AFTER_S, SLOW_FOR_S, RUN_S = 3.0, 5.0, 13.0
VICTIM = 1
# The bound: 2 s. A sanitizer build runs the proxy several times slower (and every
# message is checked against the schemas): there the bound is the worst delay of the
# same run before the broker was slowed plus 12 s (a loaded 2-core CI machine running the
# sanitized proxy failed it once at 6 s), so a loaded machine's slowness is not blamed on the slow
# broker, and the 28 s stall this test guards against still fails it.
SANITIZED = os.environ.get("KPP_SANITIZED") == "1"
BOUND_S = 2.0
SANITIZED_SLACK_S = 12.0


class TimedProducer:
    """Produces RATE_PER_PRODUCER records/s round robin over the virtual partitions, noting
    when each was sent and acknowledged."""

    def __init__(self, bootstrap: str, topic: str, name: str, extra: dict):
        import confluent_kafka

        self.name = name
        self.topic = topic
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": 60000,
            "request.timeout.ms": 30000, **extra})
        self.sent: dict[str, tuple[int, float]] = {}
        self.acked: dict[str, tuple[int, int, float]] = {}
        self.failed: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on_delivery(self, error, message):
        value = message.value().decode()
        if error is not None:
            self.failed.append((value, str(error)))
        else:
            self.acked[value] = (message.partition(), message.offset(), time.monotonic())

    def run(self):
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < RUN_S:
            due = started + index / RATE_PER_PRODUCER
            now = time.monotonic()
            if now < due:
                self.producer.poll(min(due - now, 0.01))
                continue
            value = f"{self.name}-{index}"
            partition = index % VIRTUAL
            self.sent[value] = (partition, time.monotonic())
            self.producer.produce(self.topic, value=value.encode(), partition=partition, on_delivery=self.on_delivery)
            self.producer.poll(0)
            index += 1
        self.producer.flush(60)


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    import confluent_kafka.admin

    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(topic=topic, timeout=15)
    return {p.id: p.leader for p in metadata.topics[topic].partitions.values()}


@pytest.fixture
def slow_setup(tmp_path):
    cluster = tb.MockCluster("mock202", tmp_path)
    proxy = tb.Proxy(cluster, tmp_path, "slow-proxy", VIRTUAL_MAPPING_202)
    yield cluster, proxy
    proxy.stop()
    cluster.stop()


def test_a_slow_broker_delays_only_its_own_partitions(slow_setup):
    cluster, proxy = slow_setup
    topic = tb.unique_name("vp-slow")
    assert cluster.create_topic(topic, PHYSICAL) == PHYSICAL
    leader_of = tb.wait_until(lambda: leaders(proxy.bootstrap, topic), 30, "metadata")
    slow_partitions = {p for p, leader in leader_of.items() if leader == VICTIM}
    assert slow_partitions and len(slow_partitions) < VIRTUAL, leader_of
    producers = [TimedProducer(proxy.bootstrap, topic, "plain", {}),
                 TimedProducer(proxy.bootstrap, topic, "idem", {"enable.idempotence": True})]
    started = time.monotonic()
    for producer in producers:
        producer.thread.start()
    time.sleep(SLOW_AFTER_S)
    slowed_at = time.monotonic()
    cluster._process.command(f"rtt {VICTIM} 5000")
    time.sleep(SLOW_FOR_S)
    cluster._process.command(f"rtt {VICTIM} 0")
    recovered_at = time.monotonic()
    for producer in producers:
        producer.thread.join(timeout=RUN_S + 90)
        assert not producer.thread.is_alive(), f"{producer.name} hung"
    assert time.monotonic() - started < RUN_S + 60

    for producer in producers:
        assert not producer.failed, (producer.name, producer.failed[:5])
        assert len(producer.acked) == len(producer.sent), (producer.name, len(producer.acked), len(producer.sent))
        healthy_delays = sorted(acked_at - producer.sent[value][1]
                                for value, (partition, _, acked_at) in producer.acked.items()
                                if partition not in slow_partitions)
        worst = healthy_delays[-1]
        bound = BOUND_S
        if SANITIZED:
            before = [acked_at - producer.sent[value][1] for value, (partition, _, acked_at) in producer.acked.items()
                      if producer.sent[value][1] < slowed_at and partition not in slow_partitions]
            bound = max(before) + SANITIZED_SLACK_S
        assert worst <= bound, (f"{producer.name}: a record of a healthy broker's partition waited {worst:.1f} s "
                              f"(p99 {healthy_delays[int(len(healthy_delays) * 0.99)]:.2f} s)")
        late = [(value, acked_at - recovered_at) for value, (partition, _, acked_at) in producer.acked.items()
                if partition in slow_partitions and acked_at - recovered_at > bound
                and producer.sent[value][1] < recovered_at]
        assert not late, (f"{producer.name}: {len(late)} records of broker {VICTIM} acknowledged > {bound:.1f} s "
                          "after it recovered")
        assert any(producer.sent[value][1] > slowed_at and producer.sent[value][1] < recovered_at
                   for value, (partition, _, _) in producer.acked.items() if partition in slow_partitions), \
            "nothing was produced to the slow broker while it was slow: the test proves nothing"

    # Every acknowledged record exactly once, in its virtual partition.
    import vp_support as vs

    reads = vs.read_partitions(proxy.bootstrap, topic, range(VIRTUAL), timeout_s=60, readers=2)
    seen: dict[str, int] = {}
    for partition, read in reads.items():
        for message in read.messages:
            value = message.value.decode()
            assert value not in seen, f"{value} read twice (partitions {seen[value]} and {partition})"
            seen[value] = partition
    for producer in producers:
        for value, (partition, _, _) in producer.acked.items():
            assert seen.get(value) == partition, f"{value}: acknowledged on {partition}, read on {seen.get(value)}"
    metrics = samples(proxy)
    assert metrics.get("kpp_upstream_failures_total", 0) == 0, "a client connection was closed by a timeout"
