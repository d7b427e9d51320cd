"""Pipelined Fetch requests on one connection (issue 16, item 3).

A client keeps ten Fetch v11 requests in flight on one connection to the broker port that
leads its partitions, each for another partition, while a producer writes to most of them
(the others stay empty: the mixed case). Kafka answers the requests of one connection in
order, so a request's latency includes the wait of those ahead of it; the bar is therefore
"as direct": through the proxy, a fetch for a partition that had records before it was sent
must not come back empty after max_wait, and latency percentiles must stay close to those
of the same client against the mock itself.

Three runs, each with its own topic:
  direct    the mock's own broker port, a plain topic;
  unmapped  the proxy, a plain topic (forwarded unchanged);
  mapped    the proxy, a vp-* topic (100 virtual over 10 physical): the virtual partitions
            fetched share physical partitions with each other and with others that are
            written too, so the proxy must filter and scan ahead.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import pytest

import kpp_testbed as tb
import vp_support as vs

V, P = 100, 10           # the vp-* rule of conftest.VIRTUAL_MAPPING_202
IN_FLIGHT = 10           # fetches in flight on the one connection
MAX_WAIT_MS = 500
RUN_S = 6.0              # fetching time per run
COLD = {2, 6}            # slots whose partition is never written (the mixed case)
FETCH_VERSION = 11       # the newest non-flexible version, which both the mock and the proxy offer
# A fetch answered empty this long after it was sent waited for max_wait.
STALL_MS = MAX_WAIT_MS * 0.8
# The bars through the proxy, against the same client direct to the mock.
STALLS_TOLERANCE = 2
# Sanitizer builds run the proxy several times slower: its slack is three times as wide
# there (the no-stall assertion is the same everywhere).
SLACK_SCALE = 3.0 if os.environ.get("KPP_SANITIZED") == "1" else 1.0
LATENCY_SLACK_MS = 100.0 * SLACK_SCALE
# A fetch of a mapped topic takes several upstream rounds (the 2.0.2 mock answers one batch
# per partition and fetch, and the neighbours' batches lie between), and the mock's answers
# now and then wait about 44 ms for the next one to go out (seen direct too: p99 = 500 + 44):
# measured p50 at direct + 100..130 ms. The same slack holds for p95.
MAPPED_SLACK_MS = 250.0 * SLACK_SCALE
# How long the proxy goes on reading ahead past max_wait (scan_overtime_ms_max in
# proxy/handlers/fetch.cc).
SCAN_OVERTIME_MS = 1000


# ---------------------------------------------------------------------------------------------
# Fetch v11 by hand, pipelined


def _fetch_request(correlation_id: int, topic: str, partition: int, offset: int) -> bytes:
    client_id = b"kpp-e2e-pipelined"
    header = struct.pack(">hhih", 1, FETCH_VERSION, correlation_id, len(client_id)) + client_id
    name = topic.encode()
    body = (struct.pack(">iiiib", -1, MAX_WAIT_MS, 1, 4 << 20, 0)   # replica, wait, min/max bytes, isolation
            + struct.pack(">ii", 0, -1)                               # sessionless
            + struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
            + struct.pack(">i", 1) + struct.pack(">iiqqi", partition, -1, offset, -1, 1 << 20)
            + struct.pack(">i", 0)                                    # forgotten topics
            + struct.pack(">h", 0))                                   # rack id ""
    message = header + body
    return struct.pack(">i", len(message)) + message


def _parse_fetch_response(payload: bytes, partition: int) -> tuple[int, int, int]:
    """(error code, records bytes, next offset or -1) of the one partition asked for."""
    reader = vs.Reader(payload)
    reader.pos = 4  # correlation id
    _throttle, top_error, _session = reader.take("ihi")
    assert top_error == 0, f"Fetch v{FETCH_VERSION}: top-level error {top_error}"
    next_offset, error, size = -1, 0, 0
    for _ in range(reader.take("i")):
        reader.string()
        for _ in range(reader.take("i")):
            index, error, _hw, _lso, _log_start = reader.take("ihqqq")
            reader.array(lambda: reader.take("qq"))
            reader.take("i")  # preferred read replica
            records = reader.bytes_() or b""
            assert index == partition, f"asked for partition {partition}, answered {index}"
            size = len(records)
            # Batch headers only: base offset, length, ..., last offset delta at byte 23.
            at = 0
            while at + 27 <= len(records):
                base, length = struct.unpack_from(">qi", records, at)
                if at + 12 + length > len(records):
                    break
                last_delta = struct.unpack_from(">i", records, at + 23)[0]
                next_offset = max(next_offset, base + last_delta + 1)
                at += 12 + length
    assert reader.done(), f"trailing bytes after a Fetch v{FETCH_VERSION} response"
    return error, size, next_offset


@dataclass
class FetchStats:
    latencies_ms: list[float] = field(default_factory=list)
    answered: int = 0
    with_records: int = 0
    # Answered empty after about max_wait although the partition had records at or past the
    # fetch offset before the request was sent.
    stalled: int = 0
    stalled_examples: list = field(default_factory=list)
    errors: int = 0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    def summary(self) -> str:
        return (f"{self.answered} fetches, {self.with_records} with records, {self.stalled} stalled "
                f"(empty at max_wait with records available), {self.errors} errors, "
                f"p50 {self.percentile(0.5):.0f} ms, p95 {self.percentile(0.95):.0f} ms, "
                f"p99 {self.percentile(0.99):.0f} ms, max {max(self.latencies_ms, default=0):.0f} ms")


class Written:
    """Per partition the highest offset the producer has had acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.highest: dict[int, int] = {}

    def note(self, partition: int, offset: int) -> None:
        with self.lock:
            if offset > self.highest.get(partition, -1):
                self.highest[partition] = offset

    def has_from(self, partition: int, offset: int) -> bool:
        with self.lock:
            return self.highest.get(partition, -1) >= offset


def _produce_until(bootstrap: str, topic: str, partitions: list[int], written: Written,
                   stop: threading.Event) -> None:
    """One record to each of `partitions` in turn every 25 ms at most, so that the batches
    of different partitions interleave."""
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                         "linger.ms": 2, "message.timeout.ms": 20000})

    def on_delivery(error, message):
        if error is None:
            written.note(message.partition(), message.offset())

    index = 0
    while not stop.is_set():
        for partition in partitions:
            producer.produce(topic, value=f"r-{index}".encode(), partition=partition,
                             on_delivery=on_delivery)
            index += 1
        producer.poll(0)
        time.sleep(0.025)
    producer.flush(10)


def _pipelined_fetches(host: str, port: int, topic: str, slots: list[int], written: Written,
                       run_s: float) -> FetchStats:
    """Keeps one fetch per slot in flight on one connection, slot i always for partition
    slots[i], each from where that partition's last answer ended."""
    stats = FetchStats()
    offsets = {partition: 0 for partition in slots}
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending: deque = deque()  # (correlation id, partition, offset, sent at, had records)
    correlation = 0

    def send(partition: int) -> None:
        nonlocal correlation
        correlation += 1
        offset = offsets[partition]
        had_records = written.has_from(partition, offset)
        pending.append((correlation, partition, offset, time.monotonic(), had_records))
        sock.sendall(_fetch_request(correlation, topic, partition, offset))

    def recv_exact(count: int) -> bytes:
        chunks, remaining = [], count
        while remaining:
            chunk = sock.recv(remaining)
            if not chunk:
                raise AssertionError(f"{host}:{port} closed the connection")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    try:
        for partition in slots:
            send(partition)
        deadline = time.monotonic() + run_s
        while pending:
            size = struct.unpack(">i", recv_exact(4))[0]
            payload = recv_exact(size)
            now = time.monotonic()
            expected, partition, offset, sent_at, had_records = pending.popleft()
            got = struct.unpack_from(">i", payload)[0]
            assert got == expected, f"correlation id {got}, expected {expected} (answers out of order)"
            error, size_bytes, next_offset = _parse_fetch_response(payload, partition)
            latency_ms = (now - sent_at) * 1000
            stats.answered += 1
            stats.latencies_ms.append(latency_ms)
            if error != 0:
                stats.errors += 1
            elif next_offset > offset:
                stats.with_records += 1
                offsets[partition] = next_offset
            elif had_records and latency_ms >= STALL_MS:
                stats.stalled += 1
                if len(stats.stalled_examples) < 5:
                    stats.stalled_examples.append((partition, offset, round(latency_ms)))
            if now < deadline:
                send(partition)
    finally:
        sock.close()
    return stats


def _leaders(bootstrap: str, topic: str) -> tuple[dict[int, tuple[str, int]], dict[int, int]]:
    """(broker id -> address, partition -> leader) as `bootstrap` shows them."""
    metadata = vs.metadata_of(bootstrap, [topic])
    described = metadata.topics[topic]
    assert described.error_code == vs.NONE, f"{topic}: metadata error {described.error_code}"
    return metadata.brokers, {p.partition: p.leader for p in described.partitions}


def _run(bootstrap: str, topic: str, pick_slots) -> FetchStats:
    """Picks the busiest broker's partitions (pick_slots(partitions it leads) -> slots and
    written partitions), produces and fetches for RUN_S seconds."""
    brokers, leaders = _leaders(bootstrap, topic)
    by_leader: dict[int, list[int]] = {}
    for partition, leader in sorted(leaders.items()):
        by_leader.setdefault(leader, []).append(partition)
    leader = max(by_leader, key=lambda node: len(by_leader[node]))
    slots, hot = pick_slots(by_leader[leader])
    assert len(slots) == IN_FLIGHT, f"broker {leader} leads only {by_leader[leader]}"
    written = Written()
    stop = threading.Event()
    producer = threading.Thread(target=_produce_until, args=(bootstrap, topic, hot, written, stop),
                                daemon=True)
    producer.start()
    try:
        tb.wait_until(lambda: all(written.has_from(p, 0) for p in hot), 20.0,
                      "first records acknowledged on every written partition")
        host, port = brokers[leader]
        return _pipelined_fetches(host, port, topic, slots, written, RUN_S)
    finally:
        stop.set()
        producer.join(timeout=15)


def _plain_slots(led: list[int]) -> tuple[list[int], list[int]]:
    slots = led[:IN_FLIGHT]
    return slots, [p for index, p in enumerate(slots) if index not in COLD]


def _virtual_slots(led: list[int]) -> tuple[list[int], list[int]]:
    """Virtual partitions of two physical ones on which every virtual partition is written,
    so that each one's records are interleaved with its neighbours' (the proxy filters and
    scans ahead); the cold slots on a third physical partition nobody writes, so their
    fetches wait for max_wait and the answers behind them wait too, as they would direct."""
    physicals = sorted({v % P for v in led})
    assert len(physicals) >= 3, f"the broker leads only physical partitions {physicals}"
    written, idle = physicals[:2], physicals[2]
    hot_slots = iter(p + group * P for group in range(V // P) for p in written)
    cold_slots = iter(idle + group * P for group in range(V // P))
    chosen = [next(cold_slots) if index in COLD else next(hot_slots) for index in range(IN_FLIGHT)]
    hot = [v for v in led if v % P in written]
    return chosen, hot


def _plain_topic(upstream, prefix: str) -> str:
    topic = tb.unique_name(prefix)
    # Enough partitions for one broker of three to lead ten.
    assert upstream.create_topic(topic, 3 * IN_FLIGHT) == 3 * IN_FLIGHT
    return topic


@pytest.fixture(scope="module")
def direct_stats(mock202):
    topic = _plain_topic(mock202, "pf-direct")
    return _run(mock202.bootstrap, topic, _plain_slots)


def _report(what: str, stats: FetchStats, direct: FetchStats) -> str:
    report = f"{what}: {stats.summary()}; direct: {direct.summary()}"
    print(report)
    assert stats.errors == 0, report
    assert stats.with_records > 0, report
    return report


def _check_latency(report: str, fraction: float, stats: FetchStats, direct: FetchStats,
                   slack_ms: float) -> None:
    assert stats.percentile(fraction) <= direct.percentile(fraction) + slack_ms, (
        f"{report}: p{int(fraction * 100)} more than {slack_ms:.0f} ms above direct")


def _check_no_stalls(report: str, stats: FetchStats, direct: FetchStats) -> None:
    assert stats.stalled <= direct.stalled + STALLS_TOLERANCE, (
        f"{report}; stalled (partition, offset, ms): {stats.stalled_examples}")


def test_direct_baseline(direct_stats):
    """The mock answers a fetch with records at once and only empty ones at max_wait."""
    print(f"direct: {direct_stats.summary()}")
    assert direct_stats.errors == 0 and direct_stats.with_records > 0, direct_stats.summary()
    assert direct_stats.stalled <= STALLS_TOLERANCE, direct_stats.summary()


def test_pipelined_unmapped_as_direct(vproxy202, direct_stats):
    if vproxy202.direct:
        pytest.skip("compares the proxy with the mock (KPP_E2E_DIRECT is set)")
    topic = _plain_topic(vproxy202.upstream, "pf-plain")
    stats = _run(vproxy202.bootstrap, topic, _plain_slots)
    report = _report("unmapped through the proxy", stats, direct_stats)
    _check_no_stalls(report, stats, direct_stats)
    for fraction in (0.5, 0.99):
        _check_latency(report, fraction, stats, direct_stats, LATENCY_SLACK_MS)


@pytest.fixture(scope="module")
def mapped_stats(vproxy202):
    if vproxy202.direct:
        pytest.skip("virtual partitions need the proxy (KPP_E2E_DIRECT is set)")
    topic = tb.unique_name("vp-pf")
    assert vproxy202.upstream.create_topic(topic, P) == P
    return _run(vproxy202.bootstrap, topic, _virtual_slots)


def test_pipelined_mapped_answers_with_records(mapped_stats, direct_stats):
    """Issue 16 item 3: the proxy gave up scanning ahead at max_wait counted from the
    client's request, although the broker's answer had only waited behind the long polls
    ahead of it on the connection, and answered empty (87 of 121 fetches here). Reading ahead
    now runs on a connection of the session's own (with max_wait 0) and may finish a little
    past max_wait."""
    report = _report("mapped through the proxy", mapped_stats, direct_stats)
    _check_no_stalls(report, mapped_stats, direct_stats)
    _check_latency(report, 0.5, mapped_stats, direct_stats, MAPPED_SLACK_MS)


def test_pipelined_mapped_tail_latency_as_direct(mapped_stats, direct_stats):
    """The tail: p95 within the mapped slack of direct (a mapped fetch's several upstream
    rounds, as for p50), and no fetch longer than the proxy's own bound for a mapped fetch
    (max_wait, then reading ahead through what the broker holds for at most
    SCAN_OVERTIME_MS more). About 120 fetches per run make p99 the second slowest: it was
    compared with direct + 100 ms once and one scheduling hiccup of a loaded CI machine
    (712 ms against 648) failed it; p95 with the same 100 ms came within 11 ms of failing
    on a loaded machine here (633 ms against 544), where more than 5% of the fetches take
    the extra rounds. So the hard bound is on the maximum."""
    report = _report("mapped through the proxy", mapped_stats, direct_stats)
    _check_latency(report, 0.95, mapped_stats, direct_stats, MAPPED_SLACK_MS)
    slowest = max(mapped_stats.latencies_ms)
    assert slowest <= MAX_WAIT_MS + SCAN_OVERTIME_MS + LATENCY_SLACK_MS, (
        f"{report}: the slowest fetch took {slowest:.0f} ms, more than max_wait + "
        f"{SCAN_OVERTIME_MS} ms of reading ahead")
