"""The producer audit of a physical log and the strict broker (issue 12, DESIGN.md section 5).

Neither librdkafka mock checks the sequences of idempotent (non-transactional) producers, so
the test bed checks them in two other ways:

- the audit: every batch of a physical partition is read straight from its leader, and for
  every (producer id, epoch) in it the base sequences must run contiguously from where they
  started (next base = previous base + previous record count, wrapping after INT32_MAX to
  0), with no range written twice. Control batches and batches without a producer id are
  left out;
- the strict broker: kpp-mem-broker with --strict-producers applies Kafka's producer-state
  rules to every producer, and with --drop-answer-every N appends every Nth Produce request
  and closes the connection unanswered, so that clients retry what was written.

Environment: KPP_MEM_BROKER_BIN, the kpp-mem-broker executable (default:
build/bench/kpp-mem-broker).
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import kpp_testbed as tb
import vp_support as vp

INT32_MAX = 2**31 - 1

# Kafka error codes of the producer-state rules.
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_PRODUCER_ID_MAPPING = 49
PRODUCER_FENCED = 90

TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20


def next_sequence(base_sequence: int, record_count: int) -> int:
    """The base sequence that follows a batch of record_count records from base_sequence."""
    following = base_sequence + record_count
    return following - INT32_MAX - 1 if following > INT32_MAX else following


# ---------------------------------------------------------------------------------------------
# Reading the physical log


@dataclass(frozen=True)
class BatchHeader:
    """The header fields of one stored batch that the audit looks at."""

    partition: int
    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    is_transactional: bool
    is_control: bool


def physical_batches(bootstrap: str, topic: str, partition: int,
                     timeout_s: float = 30.0) -> list[BatchHeader]:
    """Every batch of (topic, partition), read with raw Fetch requests from its leader, from
    offset 0 to the high watermark, in log order."""
    return [BatchHeader(partition, batch.base_offset, batch.last_offset, batch.producer_id,
                        batch.producer_epoch, batch.base_sequence, batch.records_count,
                        batch.is_transactional, batch.is_control)
            for batch in vp.read_physical_raw(bootstrap, topic, partition, timeout_s)]


def physical_values(bootstrap: str, topic: str, partition: int,
                    timeout_s: float = 30.0) -> list[bytes]:
    """The values of every data record of (topic, partition), in log order."""
    return [record.value for batch in vp.read_physical_raw(bootstrap, topic, partition, timeout_s)
            if not batch.is_control for record in batch.records]


# ---------------------------------------------------------------------------------------------
# The audit


def audit_batches(batches: Iterable[BatchHeader], where: str = "") -> list[str]:
    """Problems in the sequences of one partition's batches (log order); empty when clean.
    Per (producer id, epoch): each base sequence must follow the previous batch's range, and
    no range may appear twice. A repeated range is reported once and does not move the
    expected sequence on, so what follows it is judged against the stream it repeats."""
    problems = []
    expected: dict[tuple[int, int], int] = {}
    seen: dict[tuple[int, int], dict[tuple[int, int], int]] = defaultdict(dict)
    prefix = f"{where}: " if where else ""
    for batch in batches:
        if batch.is_control or batch.producer_id < 0:
            continue
        producer = (batch.producer_id, batch.producer_epoch)
        sequences = (batch.base_sequence, batch.records_count)
        name = f"producer id {batch.producer_id} epoch {batch.producer_epoch}"
        last_sequence = next_sequence(batch.base_sequence, batch.records_count - 1)
        if sequences in seen[producer]:
            problems.append(
                f"{prefix}{name}: sequences {batch.base_sequence}..{last_sequence} written twice "
                f"(offsets {seen[producer][sequences]} and {batch.base_offset})")
            continue
        if producer in expected and batch.base_sequence != expected[producer]:
            problems.append(
                f"{prefix}{name}: batch at offset {batch.base_offset} starts at sequence "
                f"{batch.base_sequence}, expected {expected[producer]}")
        seen[producer][sequences] = batch.base_offset
        expected[producer] = next_sequence(batch.base_sequence, batch.records_count)
    return problems


def audit(bootstrap: str, topic: str, partitions: int, timeout_s: float = 30.0) -> list[str]:
    """Problems in the producer sequences of every partition of a physical topic (empty
    list: clean)."""
    problems = []
    for partition in range(partitions):
        problems += audit_batches(physical_batches(bootstrap, topic, partition, timeout_s),
                                  f"{topic} [{partition}]")
    return problems


def count_by_producer(bootstrap: str, topic: str, partitions: int,
                      timeout_s: float = 30.0) -> dict[int, dict[tuple[int, int], int]]:
    """{partition: {(producer id, epoch): records}} over the data batches of a physical
    topic that carry a producer id."""
    summary: dict[int, dict[tuple[int, int], int]] = {}
    for partition in range(partitions):
        counts: dict[tuple[int, int], int] = defaultdict(int)
        for batch in physical_batches(bootstrap, topic, partition, timeout_s):
            if not batch.is_control and batch.producer_id >= 0:
                counts[(batch.producer_id, batch.producer_epoch)] += batch.records_count
        summary[partition] = dict(counts)
    return summary


def producer_ids_per_partition(summary: dict[int, dict[tuple[int, int], int]]) -> dict[int, set[int]]:
    """The distinct producer ids of each partition in a count_by_producer summary."""
    return {partition: {producer_id for producer_id, _ in counts}
            for partition, counts in summary.items()}


# ---------------------------------------------------------------------------------------------
# Raw batches and requests with producer fields


def producer_batch(values: list[bytes], producer_id: int, producer_epoch: int,
                   base_sequence: int, transactional: bool = False, control: bool = False,
                   key: bytes | None = None, headers: list[tuple[str, bytes]] = ()) -> bytes:
    """A magic-2 batch of uncompressed records (base offset 0) with the given producer id,
    epoch and base sequence, like vp_support.record_batch otherwise."""
    now_ms = int(time.time() * 1000)
    records = b"".join(vp.encode_record(i, key, value, headers) for i, value in enumerate(values))
    attributes = (TRANSACTIONAL_BIT if transactional else 0) | (CONTROL_BIT if control else 0)
    after_crc = struct.pack(">hiqqqhii", attributes, len(values) - 1, now_ms, now_ms, producer_id,
                            producer_epoch, base_sequence, len(values)) + records
    batch_length = 4 + 1 + 4 + len(after_crc)
    return (struct.pack(">qiib", 0, batch_length, -1, 2) + struct.pack(">I", vp.crc32c(after_crc))
            + after_crc)


def control_batch(producer_id: int, producer_epoch: int, commit: bool = True) -> bytes:
    """A transaction marker (COMMIT or ABORT) as a control batch, base sequence -1."""
    key = struct.pack(">hh", 0, 1 if commit else 0)
    value = struct.pack(">hi", 0, 0)
    return producer_batch([value], producer_id, producer_epoch, -1, transactional=True,
                          control=True, key=key)


def init_producer_id(connection: vp.KafkaConnection, version: int,
                     transactional_id: str | None = None, producer_id: int = -1,
                     producer_epoch: int = -1,
                     transaction_timeout_ms: int = 60000) -> tuple[int, int, int]:
    """InitProducerId v0-4 on a raw connection. Returns (error code, producer id, epoch)."""
    flexible = version >= 2
    connection.correlation_id += 1
    client_id = connection.client_id.encode()
    header = struct.pack(">hhih", 22, version, connection.correlation_id, len(client_id)) + client_id
    if flexible:
        header += b"\x00"  # request header v2: no tagged fields
        if transactional_id is None:
            body = vp.unsigned_varint(0)
        else:
            raw = transactional_id.encode()
            body = vp.unsigned_varint(len(raw) + 1) + raw
    else:
        body = vp._string(transactional_id)
    body += struct.pack(">i", transaction_timeout_ms)
    if version >= 3:
        body += struct.pack(">qh", producer_id, producer_epoch)
    if flexible:
        body += b"\x00"
    message = header + body
    connection.sock.sendall(struct.pack(">i", len(message)) + message)
    size = struct.unpack(">i", connection._recv_exact(4))[0]
    payload = connection._recv_exact(size)
    correlation_id = struct.unpack_from(">i", payload)[0]
    assert correlation_id == connection.correlation_id, \
        f"InitProducerId answered correlation id {correlation_id}, sent {connection.correlation_id}"
    position = 4 + (1 if flexible else 0)  # response header v1: empty tagged fields
    _throttle, error_code, answered_id, answered_epoch = struct.unpack_from(">ihqh", payload, position)
    return error_code, answered_id, answered_epoch


def _read_unsigned_varint(payload: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = payload[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def describe_producers(connection: vp.KafkaConnection, topic: str,
                       partitions: list[int]) -> dict[int, tuple[int, list[tuple[int, int, int, int]]]]:
    """DescribeProducers v0 (flexible) on a raw connection. Returns {partition: (error code,
    [(producer id, epoch, last sequence, current transaction start offset)])}."""
    connection.correlation_id += 1
    client_id = connection.client_id.encode()
    header = struct.pack(">hhih", 61, 0, connection.correlation_id, len(client_id)) + client_id + b"\x00"
    raw_topic = topic.encode()
    body = (vp.unsigned_varint(2) + vp.unsigned_varint(len(raw_topic) + 1) + raw_topic
            + vp.unsigned_varint(len(partitions) + 1)
            + b"".join(struct.pack(">i", partition) for partition in partitions) + b"\x00\x00")
    message = header + body
    connection.sock.sendall(struct.pack(">i", len(message)) + message)
    size = struct.unpack(">i", connection._recv_exact(4))[0]
    payload = connection._recv_exact(size)
    assert struct.unpack_from(">i", payload)[0] == connection.correlation_id
    position = 4 + 1 + 4  # correlation id, header tagged fields, throttle time
    topics, position = _read_unsigned_varint(payload, position)
    answered = {}
    for _ in range(topics - 1):
        name_length, position = _read_unsigned_varint(payload, position)
        position += name_length - 1
        count, position = _read_unsigned_varint(payload, position)
        for _ in range(count - 1):
            partition, error_code = struct.unpack_from(">ih", payload, position)
            position += 6
            message_length, position = _read_unsigned_varint(payload, position)
            position += max(message_length - 1, 0)
            producers_count, position = _read_unsigned_varint(payload, position)
            producers = []
            for _ in range(producers_count - 1):
                producer_id, epoch, last_sequence, _timestamp, _coordinator_epoch, txn_start = \
                    struct.unpack_from(">qiiqiq", payload, position)
                position += 36
                position += 1  # tagged fields (empty)
                producers.append((producer_id, epoch, last_sequence, txn_start))
            position += 1  # partition tagged fields
            answered[partition] = (error_code, producers)
        position += 1  # topic tagged fields
    return answered


# ---------------------------------------------------------------------------------------------
# The strict broker


def mem_broker_bin() -> str:
    explicit = os.environ.get("KPP_MEM_BROKER_BIN")
    if explicit:
        return explicit
    return str(tb.REPO_ROOT / "build" / "bench" / "kpp-mem-broker")


@dataclass
class BrokerTotals:
    """The producer-check totals kpp-mem-broker prints at exit."""

    duplicates_answered: int
    out_of_order_rejected: int
    fenced: int
    answers_dropped: int


_TOTALS_LINE = re.compile(
    r"producer checks: (\d+) duplicates answered, (\d+) out-of-order rejected, "
    r"(\d+) fenced, (\d+) answers dropped")


class StrictBroker:
    """kpp-mem-broker as an upstream: one node (id 1) serving the given topics plus the
    proxy's offset store topic. strict=True adds --strict-producers; drop_answer_every > 0
    adds --drop-answer-every. Shaped like kpp_testbed.MockCluster (bootstrap,
    broker_addresses, broker_count, create_topic for the topics it was started with, stop),
    so kpp_testbed.Proxy can stand in front of it."""

    def __init__(self, log_dir: Path, topics: dict[str, int], strict: bool = True,
                 drop_answer_every: int = 0, name: str = "strict-broker", advertise: str | None = None):
        binary = mem_broker_bin()
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"kpp-mem-broker binary {binary} not found (set KPP_MEM_BROKER_BIN)")
        self.topics = {tb.OFFSET_STORE_TOPIC: tb.OFFSET_STORE_PARTITIONS, **topics}
        argv = [tb.private_alias(binary, log_dir, "kpp-e2e-mem-broker"), "--listen", "127.0.0.1:0"]
        for topic, partitions in self.topics.items():
            argv += ["--topic", f"{topic}:{partitions}"]
        if strict:
            argv.append("--strict-producers")
        if drop_answer_every > 0:
            argv += ["--drop-answer-every", str(drop_answer_every)]
        if advertise:  # host:port the broker names in Metadata (a front in between)
            argv += ["--advertise", advertise]
        self.kind = "mem-broker"
        self.broker_count = 1
        self.log_path = log_dir / f"{name}.stderr.log"
        self._process = tb.LineProcess(argv, self.log_path)
        first = self._process.read_line(15.0)
        if not first.startswith("BOOTSTRAP "):
            raise AssertionError(f"kpp-mem-broker: expected a BOOTSTRAP line, got {first!r}")
        self.bootstrap = first.split(" ", 1)[1].strip()
        self.broker_addresses = {1: tb.parse_bootstrap(advertise or self.bootstrap)[0]}
        self.ports = {port for _, port in self.broker_addresses.values()}
        self.exit_code: int | None = None

    supports_broker_down = False

    def create_topic(self, name: str, partitions: int = 10) -> int:
        """Topics are fixed at start; this only checks that name was one of them."""
        assert self.topics.get(name) == partitions, \
            f"kpp-mem-broker serves {name!r} with {self.topics.get(name)} partitions, not {partitions}"
        return partitions

    def connect(self) -> vp.KafkaConnection:
        host, port = self.broker_addresses[1]
        return vp.KafkaConnection(host, port)

    def stderr_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def verdict_lines(self) -> list[str]:
        """The lines of rejected and duplicate batches and dropped answers so far."""
        return [line for line in self.stderr_lines()
                if re.search(r"\((45|47|0)\): |dropped the answer", line)]

    def stop(self) -> int:
        if self.exit_code is None:
            self.exit_code = self._process.stop()
        return self.exit_code

    def totals(self) -> BrokerTotals:
        """The producer-check totals; stops the broker first (they are printed at exit)."""
        self.stop()
        for line in reversed(self.stderr_lines()):
            match = _TOTALS_LINE.search(line)
            if match:
                return BrokerTotals(*(int(group) for group in match.groups()))
        raise AssertionError(f"kpp-mem-broker printed no producer totals; stderr:\n"
                             f"{tb.tail_of(self.log_path)}")

    def log_tail(self, lines: int = 40) -> str:
        return tb.tail_of(self.log_path, lines)
