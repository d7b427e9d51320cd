"""Helpers of the virtual-partition end-to-end tests (test_virtual.py, DESIGN.md section 2).

- a raw Kafka protocol client (Metadata v1, Produce v3, Fetch v4) with a hand-built record
  batch v2 encoder (CRC-32C over bytes 21..end), for requests real clients refuse to send
  (partitions 100 and -1) and for byte-level checks of what the broker stores;
- readers of a partition up to its end (partition EOF) with confluent-kafka, records with
  their headers;
- the kpr.vp tag, the proxy's Prometheus counters and its CPU time.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import kpp_testbed as tb

TAG_HEADER = "kpr.vp"

# Kafka error codes used by the tests.
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PARTITIONS = 37

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def tag_value(virtual_partition: int) -> bytes:
    return struct.pack(">i", virtual_partition)


def tags_of(headers) -> list[bytes]:
    """Values of every kpr.vp header among headers ([(key, value)] or None)."""
    result = []
    for key, value in headers or []:
        if (key.decode() if isinstance(key, bytes) else key) == TAG_HEADER:
            result.append(bytes(value) if value is not None else None)
    return result


def decoded_tag(headers) -> int | None:
    """The virtual partition a record's headers name; None when untagged. Fails on more
    than one tag or a tag that is not a 4-byte big-endian int32."""
    tags = tags_of(headers)
    if not tags:
        return None
    assert len(tags) == 1, f"record carries {len(tags)} {TAG_HEADER} headers: {headers}"
    assert tags[0] is not None and len(tags[0]) == 4, f"{TAG_HEADER} tag is not 4 bytes: {tags[0]!r}"
    return struct.unpack(">i", tags[0])[0]


# ---------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), table driven


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


# ---------------------------------------------------------------------------------------------
# Record batch v2 (uncompressed), built by hand


def unsigned_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag_varint(value: int) -> bytes:
    return unsigned_varint((value << 1) ^ (value >> 63))


def _varbytes(data: bytes | None) -> bytes:
    if data is None:
        return zigzag_varint(-1)
    return zigzag_varint(len(data)) + data


def encode_record(offset_delta: int, key: bytes | None, value: bytes | None,
                  headers: list[tuple[str, bytes]] = ()) -> bytes:
    body = (b"\x00"  # attributes
            + zigzag_varint(0)  # timestamp delta
            + zigzag_varint(offset_delta)
            + _varbytes(key) + _varbytes(value)
            + zigzag_varint(len(headers))
            + b"".join(_varbytes(k.encode()) + _varbytes(v) for k, v in headers))
    return zigzag_varint(len(body)) + body


def record_batch(values: list[bytes], key: bytes | None = None,
                 headers: list[tuple[str, bytes]] = ()) -> bytes:
    """A magic-2 batch of uncompressed records, base offset 0, no producer id."""
    now_ms = int(time.time() * 1000)
    records = b"".join(encode_record(i, key, value, headers) for i, value in enumerate(values))
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, now_ms, now_ms, -1, -1, -1,
                            len(values)) + records
    # batchLength counts from partitionLeaderEpoch (byte 12) to the end.
    batch_length = 4 + 1 + 4 + len(after_crc)
    return (struct.pack(">qiib", 0, batch_length, -1, 2) + struct.pack(">I", crc32c(after_crc))
            + after_crc)


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list


@dataclass
class Batch:
    base_offset: int
    last_offset: int
    codec: int
    is_control: bool
    records: list[Record] = field(default_factory=list)
    # Producer fields of the batch header (-1: none), for the producer audit.
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = -1
    records_count: int = 0
    is_transactional: bool = False


def parse_record_batches(data: bytes | None) -> list[Batch]:
    """Parses a Fetch response's records field (magic 2 only; a truncated last batch is
    dropped, as clients do). Decompression by kafka-python's codecs; CRCs are checked."""
    from kafka.record.default_records import DefaultRecordBatch

    batches = []
    position = 0
    data = data or b""
    while position + 17 <= len(data):
        base_offset, batch_length = struct.unpack_from(">qi", data, position)
        end = position + 12 + batch_length
        if end > len(data):
            break
        magic = data[position + 16]
        assert magic == 2, f"record batch with magic {magic} at offset {base_offset}"
        raw = data[position:end]
        stored_crc = struct.unpack_from(">I", raw, 17)[0]
        assert crc32c(raw[21:]) == stored_crc, f"batch at offset {base_offset}: bad CRC-32C"
        batch = DefaultRecordBatch(raw)
        producer_id, producer_epoch, base_sequence, records_count = \
            struct.unpack_from(">qhii", raw, 43)
        parsed = Batch(base_offset, base_offset + batch.last_offset_delta,
                       batch.compression_type, batch.is_control_batch,
                       producer_id=producer_id, producer_epoch=producer_epoch,
                       base_sequence=base_sequence, records_count=records_count,
                       is_transactional=batch.is_transactional)
        if not batch.is_control_batch:
            for record in batch:
                parsed.records.append(Record(record.offset, record.key, record.value,
                                             list(record.headers)))
        batches.append(parsed)
        position = end
    return batches


# ---------------------------------------------------------------------------------------------
# Raw protocol client


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(">" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(">" + fmt)
        return values if len(values) > 1 else values[0]

    def string(self) -> str | None:
        length = self.take("h")
        if length < 0:
            return None
        text = self.data[self.pos:self.pos + length].decode()
        self.pos += length
        return text

    def bytes_(self) -> bytes | None:
        length = self.take("i")
        if length < 0:
            return None
        value = self.data[self.pos:self.pos + length]
        self.pos += length
        return value

    def array(self, read_item) -> list | None:
        count = self.take("i")
        if count < 0:
            return None
        return [read_item() for _ in range(count)]

    def done(self) -> bool:
        return self.pos == len(self.data)


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _bytes(data: bytes | None) -> bytes:
    if data is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(data)) + data


def _array(items: list[bytes]) -> bytes:
    return struct.pack(">i", len(items)) + b"".join(items)


@dataclass
class MetadataPartition:
    error_code: int
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass
class MetadataTopic:
    error_code: int
    name: str
    is_internal: bool
    partitions: list[MetadataPartition]


@dataclass
class Metadata:
    brokers: dict[int, tuple[str, int]]
    controller_id: int
    topics: dict[str, MetadataTopic]


class KafkaConnection:
    """One TCP connection speaking the Kafka protocol; requests are answered in order."""

    def __init__(self, host: str, port: int, timeout_s: float = 15.0,
                 client_id: str = "kpp-e2e-raw"):
        self.address = (host, port)
        self.sock = socket.create_connection(self.address, timeout=timeout_s)
        self.client_id = client_id
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, count: int) -> bytes:
        chunks, remaining = [], count
        while remaining:
            chunk = self.sock.recv(remaining)
            if not chunk:
                raise AssertionError(f"{self.address}: connection closed by the peer "
                                     f"({count - remaining} of {count} bytes read)")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def request(self, api_key: int, api_version: int, body: bytes) -> Reader:
        """Sends a request (header v1) and returns a reader positioned after the response
        header (v0: correlation id, which must match)."""
        self.correlation_id += 1
        header = struct.pack(">hhi", api_key, api_version, self.correlation_id) + \
            _string(self.client_id)
        message = header + body
        self.sock.sendall(struct.pack(">i", len(message)) + message)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        payload = self._recv_exact(size)
        correlation_id = struct.unpack_from(">i", payload)[0]
        assert correlation_id == self.correlation_id, \
            f"response correlation id {correlation_id}, expected {self.correlation_id}"
        reader = Reader(payload)
        reader.pos = 4
        return reader

    # -- ApiVersions v0 -------------------------------------------------------------------

    def api_versions(self) -> dict[int, tuple[int, int]]:
        reader = self.request(18, 0, b"")
        error_code = reader.take("h")
        assert error_code == NONE, f"ApiVersions error {error_code}"
        versions = {}
        for _ in range(reader.take("i")):
            api_key, low, high = reader.take("hhh")
            versions[api_key] = (low, high)
        return versions

    # -- Metadata v1 ----------------------------------------------------------------------

    def metadata(self, topics: list[str] | None) -> Metadata:
        body = struct.pack(">i", -1) if topics is None else _array([_string(t) for t in topics])
        reader = self.request(3, 1, body)
        brokers = {}
        for _ in range(reader.take("i")):
            node_id = reader.take("i")
            host = reader.string()
            port = reader.take("i")
            reader.string()  # rack
            brokers[node_id] = (host, port)
        controller_id = reader.take("i")
        result = {}
        for _ in range(reader.take("i")):
            error_code = reader.take("h")
            name = reader.string()
            is_internal = bool(reader.take("b"))
            partitions = []
            for _ in range(reader.take("i")):
                p_error, p_index, leader = reader.take("hii")
                replicas = reader.array(lambda: reader.take("i"))
                isr = reader.array(lambda: reader.take("i"))
                partitions.append(MetadataPartition(p_error, p_index, leader, replicas, isr))
            result[name] = MetadataTopic(error_code, name, is_internal, partitions)
        assert reader.done(), "trailing bytes after a Metadata v1 response"
        return Metadata(brokers, controller_id, result)

    # -- Produce v3 -----------------------------------------------------------------------

    def produce(self, topic: str, entries: list[tuple[int, bytes]], acks: int = -1,
                timeout_ms: int = 15000) -> list[tuple[int, int, int]]:
        """entries: (partition, record batch), sent in this order in one request.
        Returns (partition, error_code, base_offset) in response order."""
        partitions = [struct.pack(">i", p) + _bytes(batch) for p, batch in entries]
        body = _string(None) + struct.pack(">hi", acks, timeout_ms) + \
            _array([_string(topic) + _array(partitions)])
        reader = self.request(0, 3, body)
        result = []
        for _ in range(reader.take("i")):
            name = reader.string()
            assert name == topic, f"Produce response names topic {name!r}, sent {topic!r}"
            for _ in range(reader.take("i")):
                partition, error_code, base_offset, _log_append_time = reader.take("ihqq")
                result.append((partition, error_code, base_offset))
        reader.take("i")  # throttle time
        assert reader.done(), "trailing bytes after a Produce v3 response"
        return result

    # -- Fetch v4 -------------------------------------------------------------------------

    def fetch(self, topic: str, entries: list[tuple[int, int]], max_wait_ms: int = 100,
              max_bytes: int = 4 << 20, partition_max_bytes: int = 1 << 20) -> dict:
        """entries: (partition, fetch offset). Returns {partition: (error_code,
        high_watermark, records bytes)}; fails on a partition answered twice."""
        partitions = [struct.pack(">iqi", p, offset, partition_max_bytes)
                      for p, offset in entries]
        body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0) + \
            _array([_string(topic) + _array(partitions)])
        reader = self.request(1, 4, body)
        reader.take("i")  # throttle time
        result = {}
        for _ in range(reader.take("i")):
            name = reader.string()
            assert name == topic, f"Fetch response names topic {name!r}, asked for {topic!r}"
            for _ in range(reader.take("i")):
                partition, error_code, high_watermark, _lso = reader.take("ihqq")
                reader.array(lambda: reader.take("qq"))  # aborted transactions
                records = reader.bytes_()
                assert partition not in result, f"Fetch response lists partition {partition} twice"
                result[partition] = (error_code, high_watermark, records)
        assert reader.done(), "trailing bytes after a Fetch v4 response"
        return result


def metadata_of(bootstrap: str, topics: list[str] | None) -> Metadata:
    host, port = tb.parse_bootstrap(bootstrap)[0]
    with KafkaConnection(host, port) as connection:
        return connection.metadata(topics)


def librdkafka_202_compresses(api_versions: dict[int, tuple[int, int]], codec: str) -> bool:
    """Whether librdkafka 2.0.2 compresses a batch with codec for a broker advertising
    api_versions: it needs Produce v0 in the range for gzip, snappy and lz4 (it checks for
    the version that introduced the codec), Produce v7 and Fetch v10 for zstd; otherwise it
    logs "Broker does not support compression type" and sends the batch uncompressed."""
    produce, fetch = api_versions.get(0, (1, 0)), api_versions.get(1, (1, 0))
    if codec == "zstd":
        return produce[0] <= 7 <= produce[1] and fetch[0] <= 10 <= fetch[1]
    return produce[0] == 0


def read_physical_raw(upstream_bootstrap: str, topic: str, partition: int,
                      timeout_s: float = 30.0) -> list[Batch]:
    """Every batch of one partition, read with raw Fetch v4 requests from its leader (the
    upstream mock directly), from offset 0 up to the high watermark."""
    metadata = metadata_of(upstream_bootstrap, [topic])
    leader = {p.partition: p.leader for p in metadata.topics[topic].partitions}[partition]
    host, port = metadata.brokers[leader]
    batches: list[Batch] = []
    offset = 0
    deadline = time.monotonic() + timeout_s
    with KafkaConnection(host, port) as connection:
        while True:
            error_code, high_watermark, records = connection.fetch(
                topic, [(partition, offset)])[partition]
            assert error_code == NONE, f"{topic} [{partition}] fetch error {error_code}"
            if offset >= high_watermark:
                return batches
            got = parse_record_batches(records)
            for batch in got:
                if batch.last_offset >= offset:
                    batches.append(batch)
                    offset = batch.last_offset + 1
            assert time.monotonic() < deadline, \
                f"{topic} [{partition}] not read to its end ({high_watermark}) in {timeout_s} s"


# ---------------------------------------------------------------------------------------------
# confluent-kafka readers


@dataclass
class Message:
    partition: int
    offset: int
    value: bytes
    key: bytes | None
    headers: list


@dataclass
class PartitionRead:
    messages: list[Message]
    eof_offset: int | None  # offset the partition EOF event was raised at
    seconds: float
    consumer_position: int | None = None
    cached_high_watermark: int | None = None
    queried_high_watermark: int | None = None


def eof_consumer(bootstrap: str, **extra):
    import confluent_kafka

    config = {"bootstrap.servers": bootstrap, "group.id": tb.unique_name("kpp-vp-read"),
              "enable.auto.commit": False, "auto.offset.reset": "earliest",
              "enable.partition.eof": True, "fetch.wait.max.ms": 100}
    config.update(extra)
    return confluent_kafka.Consumer(config)


def read_until_eof(consumer, topic: str, partition: int, timeout_s: float = 30.0,
                   watermarks: bool = False) -> PartitionRead:
    """Assigns only (topic, partition) from the beginning and reads until the partition EOF
    event; fails after timeout_s. Messages of any other partition fail the test."""
    import confluent_kafka

    consumer.assign([confluent_kafka.TopicPartition(topic, partition,
                                                    confluent_kafka.OFFSET_BEGINNING)])
    messages: list[Message] = []
    started = time.monotonic()
    deadline = started + timeout_s
    eof_offset = None
    while eof_offset is None:
        remaining = deadline - time.monotonic()
        assert remaining > 0, (
            f"{topic} [{partition}]: no partition EOF within {timeout_s} s "
            f"({len(messages)} records read, last offset "
            f"{messages[-1].offset if messages else None})")
        for message in consumer.consume(num_messages=10000, timeout=min(remaining, 0.05)):
            error = message.error()
            if error is not None:
                if error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    assert message.partition() == partition, \
                        f"EOF for partition {message.partition()}, reading {partition}"
                    eof_offset = message.offset()
                    continue
                raise AssertionError(f"{topic} [{partition}]: consumer error {error}")
            assert message.partition() == partition, (
                f"reading only {topic} [{partition}], got a record of partition "
                f"{message.partition()} at offset {message.offset()}")
            assert eof_offset is None, "a record after the partition EOF event"
            messages.append(Message(message.partition(), message.offset(), message.value(),
                                    message.key(), message.headers() or []))
    result = PartitionRead(messages, eof_offset, time.monotonic() - started)
    if watermarks:
        tp = confluent_kafka.TopicPartition(topic, partition)
        result.consumer_position = consumer.position([tp])[0].offset
        result.cached_high_watermark = consumer.get_watermark_offsets(tp, cached=True)[1]
        result.queried_high_watermark = consumer.get_watermark_offsets(tp, timeout=10)[1]
    return result


def read_partitions(bootstrap: str, topic: str, partitions, timeout_s: float = 30.0,
                    readers: int = 1, **extra) -> dict[int, PartitionRead]:
    """Each partition alone (one assignment at a time), from the beginning to its EOF;
    `readers` consumers share the partitions out, each reading its share one by one."""
    partitions = list(partitions)

    def read_share(share):
        consumer = eof_consumer(bootstrap, **extra)
        try:
            return {p: read_until_eof(consumer, topic, p, timeout_s) for p in share}
        finally:
            consumer.close()

    if readers <= 1:
        return read_share(partitions)
    result = {}
    with ThreadPoolExecutor(max_workers=readers) as pool:
        for reads in pool.map(read_share, [partitions[i::readers] for i in range(readers)]):
            result.update(reads)
    return {p: result[p] for p in partitions}


def as_stream(reads: dict[int, PartitionRead]) -> list[tuple[int, int, str]]:
    """(partition, offset, value) of every record read, for check_partition_streams."""
    return [(m.partition, m.offset, m.value.decode()) for read in reads.values()
            for m in read.messages]


# ---------------------------------------------------------------------------------------------
# Producers


def confluent_producer(bootstrap: str, **extra):
    import confluent_kafka

    config = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
              "message.timeout.ms": 20000}
    config.update(extra)
    return confluent_kafka.Producer(config)


def confluent_send(producer, records, flush_timeout_s: float = 30.0):
    """records: (topic, partition or None, key, value, headers). Returns the delivery
    reports in ack order as (partition, offset, value str); fails on any delivery error."""
    acked, failed = [], []

    def on_delivery(error, message):
        if error is None:
            acked.append((message.partition(), message.offset(), message.value().decode()))
        else:
            failed.append((message.partition(), message.value(), str(error)))

    for topic, partition, key, value, headers in records:
        kwargs = {"value": value, "key": key, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    assert remaining == 0, f"{remaining} records still in flight after {flush_timeout_s} s"
    assert not failed, f"{len(failed)} deliveries failed: {failed[:5]}"
    return acked


def fill_partition_directly(upstream_bootstrap: str, topic: str, partition: int, count: int,
                            prefix: str, batch_records: int = 10000) -> None:
    """count small untagged records written straight to the mock, fast, in batches of up to
    batch_records records."""
    producer = confluent_producer(upstream_bootstrap, **{
        "linger.ms": 50, "batch.num.messages": batch_records,
        "queue.buffering.max.messages": 500000, "acks": 1})
    failed = []

    def on_delivery(error, _message):
        if error is not None:
            failed.append(str(error))

    for index in range(count):
        while True:
            try:
                producer.produce(topic, value=f"{prefix}{index}".encode(), partition=partition,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "direct fill did not complete"
    assert not failed, failed[:5]


# ---------------------------------------------------------------------------------------------
# Keys that a client's partitioner sends to a chosen partition


def librdkafka_consistent_partition(key: bytes, partitions: int) -> int:
    """librdkafka's `consistent` / `consistent_random` partitioner for a non-empty key."""
    return zlib.crc32(key) % partitions


def kafka_python_partition(key: bytes, partitions: int) -> int:
    """kafka-python's DefaultPartitioner (the Java client's murmur2) for a non-empty key."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def keys_per_partition(hash_partition, partitions: int, per_partition: int,
                       prefix: str) -> dict[int, list[bytes]]:
    """per_partition distinct keys for each partition that hash_partition sends there."""
    keys: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    missing = partitions
    candidate = 0
    while missing:
        key = f"{prefix}-{candidate}".encode()
        candidate += 1
        bucket = keys[hash_partition(key, partitions)]
        if len(bucket) < per_partition:
            bucket.append(key)
            if len(bucket) == per_partition:
                missing -= 1
    return keys


# ---------------------------------------------------------------------------------------------
# Proxy process and metrics


def metric_totals(endpoint) -> dict[str, float]:
    """Every sample of the proxy's /metrics summed per metric name (labels dropped)."""
    status, text = endpoint.proxy.http_get("/metrics")
    assert status == 200, f"/metrics answered {status}"
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def find_metric(totals: dict[str, float], *fragments: str) -> tuple[str | None, float | None]:
    """The first metric whose name contains every fragment (names may still change)."""
    for name in sorted(totals):
        if all(fragment in name for fragment in fragments):
            return name, totals[name]
    return None, None


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
