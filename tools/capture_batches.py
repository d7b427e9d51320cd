#!/usr/bin/python3
"""Captures record batches exactly as real Kafka clients write them, for the protocol tests.

Starts the librdkafka mock cluster (tools/mock_cluster.cc), produces the same few records
with each client and codec to a topic of its own, reads the stored batches back with a
hand-written Fetch v4 request, and writes the records field (one or more whole batches) to
tests/protocol/fixtures/<client>_<codec>.bin.

Clients: confluent-kafka and kcat's library (librdkafka 2.0.2), kafka-python 2.0.2 (its lz4,
snappy and zstd need python3-lz4, python3-snappy, python3-zstandard), node-rdkafka
(librdkafka 2.12) and kafkajs 2.2.4 (Node, from the cache of tools/setup.sh). kafkajs has
only gzip built in: snappy, lz4 and zstd need codec plugins the test bed does not install,
so kafkajs fixtures exist for none and gzip only.

Must run under /usr/bin/python3 (the Debian one, where the client packages live):
    /usr/bin/python3 tools/capture_batches.py [--mock-cluster build/tools/kpp-mock-cluster]
        [--out tests/protocol/fixtures] [--only CLIENT[_CODEC]]
The fixtures are committed; the tests never run this tool.
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_IDS = {name: index for index, name in enumerate(CODECS)}
CLIENT_CODECS = {
    "librdkafka": CODECS,
    "kafkapython": CODECS,
    "noderdkafka": CODECS,
    "kafkajs": ["none", "gzip"],
}

# The records every client produces, in order: (key, value, headers). Keep in step with
# expected_records() in tests/protocol/record_fixtures_test.cc.
RECORDS = [
    (b"k0", b"v0-hello", [("h1", b"a"), ("h2", b"bb")]),
    (b"k1", b"v1-" + b"abcdefgh" * 8, []),
    (b"k2", None, [("h3", b"c")]),
    (None, b"v3-no-key", []),
    (b"k4", b"v4-" + b"0123456789" * 12, [("h4", b""), ("h5", b"five")]),
]


# ---- the mock cluster ------------------------------------------------------------------------

class MockCluster:
    def __init__(self, binary):
        self.process = subprocess.Popen([binary, "--brokers", "1", "--topic", "cap:1"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)
        line = self.process.stdout.readline().strip()
        if not line.startswith("BOOTSTRAP "):
            raise RuntimeError("mock cluster did not print BOOTSTRAP: %r" % line)
        self.bootstrap = line.split()[1]

    def command(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().strip()
        if not reply.startswith("OK"):
            raise RuntimeError("mock cluster: %s -> %s" % (line, reply))
        return reply

    def close(self):
        try:
            self.command("quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---- Fetch v4 by hand -----------------------------------------------------------------------

def kafka_string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def fetch_records(bootstrap, topic, partition=0, offset=0):
    """The records field of partition `partition` from `offset`, via Fetch v4."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    body = struct.pack(">iiiib", -1, 500, 1, 1 << 20, 0)  # replica, max wait, min/max bytes, isolation
    body += struct.pack(">i", 1) + kafka_string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20)
    header = struct.pack(">hhi", 1, 4, 7) + kafka_string("capture_batches")
    request = header + body
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", receive_exactly(connection, 4))[0]
        response = receive_exactly(connection, size)
    return parse_fetch_v4(response)


def receive_exactly(connection, count):
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise RuntimeError("connection closed mid-response")
        data += chunk
    return data


def parse_fetch_v4(response):
    position = 4 + 4  # correlation id, throttle time
    (topics,) = struct.unpack_from(">i", response, position)
    position += 4
    if topics != 1:
        raise RuntimeError("fetch: %d topics" % topics)
    (name_bytes,) = struct.unpack_from(">h", response, position)
    position += 2 + name_bytes
    (partitions,) = struct.unpack_from(">i", response, position)
    position += 4
    if partitions != 1:
        raise RuntimeError("fetch: %d partitions" % partitions)
    _, error_code, _, _ = struct.unpack_from(">ihqq", response, position)
    position += 4 + 2 + 8 + 8
    if error_code != 0:
        raise RuntimeError("fetch: error code %d" % error_code)
    (aborted,) = struct.unpack_from(">i", response, position)
    position += 4 + max(aborted, 0) * 16
    (records_bytes,) = struct.unpack_from(">i", response, position)
    position += 4
    return response[position:position + max(records_bytes, 0)]


def batch_codecs(records_field):
    """The codec id of each whole batch in a records field."""
    codecs, position = [], 0
    while position + 12 <= len(records_field):
        (length,) = struct.unpack_from(">i", records_field, position + 8)
        if position + 12 + length > len(records_field):
            break
        magic = records_field[position + 16]
        if magic != 2:
            raise RuntimeError("magic %d batch" % magic)
        (attributes,) = struct.unpack_from(">h", records_field, position + 21)
        codecs.append(attributes & 7)
        position += 12 + length
    return codecs


# ---- producers ------------------------------------------------------------------------------

def produce_librdkafka(bootstrap, topic, codec):
    import confluent_kafka
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "compression.codec": codec, "linger.ms": 200,
        "batch.num.messages": 100, "enable.idempotence": False})
    for key, value, headers in RECORDS:
        producer.produce(topic, value=value, key=key, partition=0, headers=headers or None)
    if producer.flush(20) != 0:
        raise RuntimeError("librdkafka: records left unsent")


def produce_kafkapython(bootstrap, topic, codec):
    import kafka
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
        linger_ms=200, api_version=(2, 1, 0))
    futures = [producer.send(topic, value=value, key=key, partition=0, headers=headers)
               for key, value, headers in RECORDS]
    producer.flush(20)
    for future in futures:
        future.get(timeout=20)
    producer.close(5)


NODE_PRODUCER = r"""
'use strict';
const [lib, bootstrap, topic, codec, recordsJson] = process.argv.slice(1);
const records = JSON.parse(recordsJson).map(([key, value, headers]) => ({
  key: key === null ? null : Buffer.from(key, 'latin1'),
  value: value === null ? null : Buffer.from(value, 'latin1'),
  headers: headers.map(([k, v]) => [k, Buffer.from(v, 'latin1')]),
}));
function fail(error) { console.error(String(error)); process.exit(1); }
setTimeout(() => fail('timed out'), 30000).unref();
if (lib === 'kafkajs') {
  const { Kafka, CompressionTypes, logLevel } = require('kafkajs');
  const kafka = new Kafka({ clientId: 'capture', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  const types = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP };
  (async () => {
    await producer.connect();
    await producer.send({ topic, compression: types[codec], acks: -1,
      messages: records.map((r) => ({ partition: 0, key: r.key, value: r.value,
        headers: Object.fromEntries(r.headers) })) });
    await producer.disconnect();
  })().catch(fail);
} else {
  const Kafka = require('node-rdkafka');
  const producer = new Kafka.Producer({ 'bootstrap.servers': bootstrap, 'compression.codec': codec,
    'linger.ms': 200, 'dr_cb': true, 'enable.idempotence': false });
  let delivered = 0;
  producer.on('delivery-report', (error) => {
    if (error) fail(error);
    if (++delivered === records.length) producer.disconnect();
  });
  producer.on('event.error', fail);
  producer.setPollInterval(20);
  producer.connect({}, (error) => {
    if (error) fail(error);
    for (const r of records)
      producer.produce(topic, 0, r.value, r.key, Date.now(), null,
                       r.headers.map(([k, v]) => ({ [k]: v })));
  });
}
"""


def produce_node(lib, bootstrap, topic, codec):
    import json
    node_dir = subprocess.run(["bash", os.path.join(REPO_ROOT, "tools", "setup.sh"), "--print-node-dir"],
                              check=True, capture_output=True, text=True).stdout.strip()
    latin = lambda data: None if data is None else data.decode("latin1")
    records = [[latin(key), latin(value), [[k, latin(v)] for k, v in headers]]
               for key, value, headers in RECORDS]
    environment = dict(os.environ, NODE_PATH=os.path.join(node_dir, "node_modules"))
    # With -e, node puts the arguments after "--" at process.argv[1:].
    finished = subprocess.run(["node", "-e", NODE_PRODUCER, "--", lib, bootstrap, topic, codec, json.dumps(records)],
                              env=environment, timeout=60, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError("node %s producer: %s" % (lib, finished.stderr.strip()[-2000:]))


def produce(client, bootstrap, topic, codec):
    if client == "librdkafka":
        produce_librdkafka(bootstrap, topic, codec)
    elif client == "kafkapython":
        produce_kafkapython(bootstrap, topic, codec)
    elif client == "noderdkafka":
        produce_node("rdkafka", bootstrap, topic, codec)
    else:
        produce_node("kafkajs", bootstrap, topic, codec)


# ---- main -----------------------------------------------------------------------------------

def capture(cluster, client, codec, out_dir):
    # librdkafka 2.0.2 now and then sends a snappy batch uncompressed; a fresh topic and a
    # second try get the compressed one.
    for attempt in range(3):
        try:
            return capture_once(cluster, client, codec, out_dir, "cap_%s_%s_%d" % (client, codec, attempt))
        except WrongCodec as error:
            last_error = error
    raise last_error


class WrongCodec(RuntimeError):
    pass


def capture_once(cluster, client, codec, out_dir, topic):
    cluster.command("topic %s 1" % topic)
    produce(client, cluster.bootstrap, topic, codec)
    records_field = b""
    for _ in range(50):  # the mock cluster answers a fetch at once; the data may lag a little
        records_field = fetch_records(cluster.bootstrap, topic)
        if records_field:
            break
        time.sleep(0.1)
    codecs = batch_codecs(records_field)
    if not codecs or any(found != CODEC_IDS[codec] for found in codecs):
        raise WrongCodec("%s: batches with codecs %r, wanted %s" % (topic, codecs, codec))
    path = os.path.join(out_dir, "%s_%s.bin" % (client, codec))
    with open(path, "wb") as out:
        out.write(records_field)
    print("%s: %d batch(es), %d bytes" % (path, len(codecs), len(records_field)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mock-cluster", default=os.path.join(REPO_ROOT, "build", "tools", "kpp-mock-cluster"))
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "protocol", "fixtures"))
    parser.add_argument("--only", action="append", default=[],
                        help="capture only CLIENT or CLIENT_CODEC (repeatable)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cluster = MockCluster(args.mock_cluster)
    failures = 0
    try:
        for client, codecs in CLIENT_CODECS.items():
            for codec in codecs:
                name = "%s_%s" % (client, codec)
                if args.only and client not in args.only and name not in args.only:
                    continue
                try:
                    capture(cluster, client, codec, args.out)
                except Exception as error:  # one client failing should not hide the others
                    failures += 1
                    print("%s: FAILED: %s" % (name, error), file=sys.stderr)
    finally:
        cluster.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
