#!/usr/bin/python3
"""A consume-transform-produce loop with exactly-once semantics (Kafka transactions), for the
end-to-end test of transactions through the proxy (tests/e2e/test_producers.py).

Reads the input topic as a member of a consumer group (isolation.level=read_committed,
enable.auto.commit=false) and, for each input record of partition v, produces the value
"out-" + input value with the same key to partition v % --output-partitions of the output
topic. Records are handled in transactions of up to --batch records: begin, produce, hand
the consumer's positions to the transaction (send_offsets_to_transaction), commit. So after
a crash, a restart with the same --transactional-id and --group resumes exactly after the
last committed transaction: every input record appears in the output exactly once.

Usage: /usr/bin/python3 tools/eos_transformer.py --bootstrap B --input T --output T
           --group G --transactional-id ID --output-partitions N
           [--batch 20] [--pause-ms 0] [--idle-exit-s 5] [--timeout-s 120]
  --pause-ms    sleep after each committed transaction (lets a test kill it mid-way)
  --idle-exit-s exit when no input came for this long once partitions are assigned (a
                restart waits for the group to drop the killed member first)
  --timeout-s   overall deadline (then "done" with "timed_out": true, exit 3)
Output: JSON lines on stdout:
  {"type": "assigned", "partitions": [...]}           after each rebalance
  {"type": "committed", "index", "records", "total", "first", "last"}   per transaction
      (first/last: "partition:offset" of its first and last input record)
  {"type": "done", "total", ...}                      at the end (exit 0; 1 with "error")
Needs confluent-kafka (Debian's python3-confluent-kafka, librdkafka 2.0.2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import confluent_kafka


def emit(line: dict) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional-id", required=True)
    parser.add_argument("--output-partitions", type=int, required=True)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--pause-ms", type=int, default=0)
    parser.add_argument("--idle-exit-s", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    return parser.parse_args(argv)


_assigned = [False]


def make_consumer(args):
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": args.group,
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100})

    def on_assign(_consumer, partitions):
        _assigned[0] = bool(partitions)
        emit({"type": "assigned", "partitions": sorted(tp.partition for tp in partitions)})

    consumer.subscribe([args.input], on_assign=on_assign)
    return consumer


def make_producer(args):
    producer = confluent_kafka.Producer({
        "bootstrap.servers": args.bootstrap, "transactional.id": args.transactional_id,
        "transaction.timeout.ms": 30000, "linger.ms": 5, "message.timeout.ms": 25000})
    producer.init_transactions(30)
    return producer


def next_batch(consumer, args, deadline: float) -> list:
    """Up to --batch input records; [] once the input was idle for --idle-exit-s."""
    batch: list = []
    idle_since = time.monotonic()
    while len(batch) < args.batch and time.monotonic() < deadline:
        messages = consumer.consume(num_messages=args.batch - len(batch), timeout=0.2)
        for message in messages:
            if message.error() is not None:
                if message.error().code() != confluent_kafka.KafkaError._PARTITION_EOF:
                    emit({"type": "log", "error": str(message.error())})
                continue
            batch.append(message)
        if messages or not _assigned[0]:
            idle_since = time.monotonic()
        elif batch or time.monotonic() - idle_since >= args.idle_exit_s:
            # A partial batch goes out as soon as the input pauses.
            break
    return batch


def transform(consumer, producer, args, batch: list) -> None:
    """One transaction: the outputs of batch and the consumer's positions after it."""
    producer.begin_transaction()
    for message in batch:
        producer.produce(args.output, key=message.key(),
                         value=b"out-" + (message.value() or b""),
                         partition=message.partition() % args.output_partitions)
    positions = consumer.position(consumer.assignment())
    producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(30)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout_s
    producer = make_producer(args)
    consumer = make_consumer(args)
    total = 0
    index = 0
    try:
        while True:
            if time.monotonic() >= deadline:
                emit({"type": "done", "total": total, "timed_out": True})
                return 3
            batch = next_batch(consumer, args, deadline)
            if not batch:
                break
            transform(consumer, producer, args, batch)
            total += len(batch)
            emit({"type": "committed", "index": index, "records": len(batch), "total": total,
                  "first": f"{batch[0].partition()}:{batch[0].offset()}",
                  "last": f"{batch[-1].partition()}:{batch[-1].offset()}"})
            index += 1
            if args.pause_ms:
                time.sleep(args.pause_ms / 1000)
    except confluent_kafka.KafkaException as error:
        emit({"type": "done", "total": total, "error": str(error)})
        return 1
    finally:
        consumer.close()
    emit({"type": "done", "total": total, "transactions": index})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
