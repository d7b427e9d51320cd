"""Shared fetch (issue 15): consumers of different virtual partitions of one physical
partition, each on a connection of its own, read the broker's answers once through the
proxy's per-core fetch window (mapping.fetch_window_bytes, on by default), and each still
gets exactly its own records, in order, once. Against the librdkafka 2.0.2 mock with the
mapping of conftest.VIRTUAL_MAPPING_202 (vp-.*: 100 virtual over 10 physical), with
confluent-kafka consumers (librdkafka's default isolation level, read_committed).
"""

from __future__ import annotations

import threading
import time

import pytest

import kpp_testbed as tb
import vp_support as vs

V, P = 100, 10
PHYSICAL = 3
SHARING = [v for v in range(V) if v % P == PHYSICAL]  # the ten virtual partitions of p = 3
PER_PARTITION = 300


@pytest.fixture
def vp(vproxy202):
    if vproxy202.direct:
        pytest.skip("the shared fetch window is the proxy's")
    return vproxy202


def window_counters(endpoint) -> tuple[float, float]:
    totals = vs.metric_totals(endpoint)
    return totals.get("kpp_fetch_window_rounds_total", 0.0), totals.get("kpp_fetch_window_joins_total", 0.0)


def consume_together(endpoint, topic: str, partitions: list[int], count: int, timeout_s: float,
                     started: threading.Event | None = None) -> dict[int, list[tuple[int, str]]]:
    """One confluent-kafka consumer per partition, all at once, each assigned its partition
    from the beginning and reading until it holds `count` records."""
    import confluent_kafka

    got: dict[int, list[tuple[int, str]]] = {v: [] for v in partitions}
    errors: list[str] = []
    ready = threading.Barrier(len(partitions) + (1 if started else 0))

    def read(v: int) -> None:
        consumer = vs.eof_consumer(endpoint.bootstrap, **{"fetch.wait.max.ms": 500})
        try:
            consumer.assign([confluent_kafka.TopicPartition(topic, v, confluent_kafka.OFFSET_BEGINNING)])
            ready.wait(30)
            deadline = time.monotonic() + timeout_s
            while len(got[v]) < count and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() != confluent_kafka.KafkaError._PARTITION_EOF:
                        errors.append(f"v {v}: {message.error()}")
                    continue
                got[v].append((message.offset(), message.value().decode()))
        except Exception as problem:  # noqa: BLE001  (reported below)
            errors.append(f"v {v}: {problem!r}")
        finally:
            consumer.close()

    threads = [threading.Thread(target=read, args=(v,)) for v in partitions]
    for thread in threads:
        thread.start()
    if started:
        ready.wait(30)
        started.set()
    for thread in threads:
        thread.join(timeout_s + 60)
    assert not errors, f"consumer errors: {errors[:5]}"
    return got


def check_exact(got: dict[int, list[tuple[int, str]]], acked: list[tuple[int, int, str]], count: int,
                prefix: str) -> None:
    for v, records in got.items():
        values = [value for _, value in records]
        assert values == [f"{prefix}-{v}-{i}" for i in range(count)], (
            f"v {v}: {len(values)} records, first differences "
            f"{[(i, a) for i, a in enumerate(values) if a != f'{prefix}-{v}-{i}'][:3]}")
        offsets = [offset for offset, _ in records]
        assert offsets == sorted(set(offsets)), f"v {v}: offsets not strictly increasing"
    acked_offsets = {(p, value): offset for p, offset, value in acked}
    wrong = [(v, offset, value) for v, records in got.items() for offset, value in records
             if acked_offsets.get((v, value)) != offset]
    assert not wrong, f"records read at other offsets than their producer was told: {wrong[:5]}"


def produce(endpoint, topic: str, count: int, prefix: str, pause_s: float = 0.0) -> list[tuple[int, int, str]]:
    producer = vs.confluent_producer(endpoint.bootstrap, **{"linger.ms": 5})
    acked = []
    for first in range(0, count, 20):
        acked += vs.confluent_send(producer, [
            (topic, v, None, f"{prefix}-{v}-{i}".encode(), None)
            for v in SHARING for i in range(first, min(first + 20, count))])
        if pause_s:
            time.sleep(pause_s)
    return acked


def test_consumers_of_one_physical_partition_share_its_backlog(vp):
    topic, _ = vp.create_topic("vp-shared-backlog", P)
    acked = produce(vp, topic, PER_PARTITION, "bk")
    rounds_before, _ = window_counters(vp)
    got = consume_together(vp, topic, SHARING, PER_PARTITION, timeout_s=90)
    check_exact(got, acked, PER_PARTITION, "bk")
    rounds_after, _ = window_counters(vp)
    # Ten consumers reading the same physical partition together: rounds of the later ones
    # are answered from what the earlier ones fetched.
    assert rounds_after > rounds_before, "no Fetch round was served from the shared window"


def test_consumers_waiting_at_the_end_share_the_new_records(vp):
    topic, _ = vp.create_topic("vp-shared-live", P)
    started = threading.Event()
    result: dict = {}

    def consume() -> None:
        result["got"] = consume_together(vp, topic, SHARING, PER_PARTITION, timeout_s=120, started=started)

    reader = threading.Thread(target=consume)
    reader.start()
    assert started.wait(60), "the consumers did not start"
    time.sleep(1.0)  # every consumer at the (empty) end, waiting
    acked = produce(vp, topic, PER_PARTITION, "lv", pause_s=0.01)
    reader.join(200)
    assert "got" in result, "the consumers did not finish"
    check_exact(result["got"], acked, PER_PARTITION, "lv")
