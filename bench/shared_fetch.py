#!/usr/bin/env python3
"""Shared fetch (issue 15, target 3): bytes the proxy reads from the broker per byte it
delivers, when 10 consumers read the 10 virtual partitions of one physical partition, each on
a connection of its own, with the shared fetch window on (mapping.fetch_window_bytes, 2 MiB)
and off (0), in the same run.

Two phases for each setting, against kpp-mem-broker (the in-memory benchmark broker):

  backlog  the partition already holds --records records for each virtual partition; the ten
           consumers start together from offset 0 and read to the end
  live     the ten consumers wait at the end (long polls, max_wait 500 ms) while a producer
           writes --records records to each, ten to a batch, round-robin

Every consumer checks that it got exactly its own records, in order, once. The figure is
the read amplification, kpp_fetch_scanned_bytes_total / kpp_fetch_delivered_bytes_total over
the phase (1.0: every byte read once; 10 here: every consumer read the whole partition). The
run fails when the window's figure is above --target in a phase.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import topologies as topo  # noqa: E402  (Broker, Process, free_port, wait_port, proxy_config)
import vp_support as vs  # noqa: E402  (the raw Kafka protocol client)

VIRTUAL = 10
TOPIC = "shared"
RECORD_BYTES = 200
MAX_WAIT_MS = 500


def metric_totals(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_part, _, value = line.rpartition(" ")
            name = name_part.split("{", 1)[0].strip()
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def value_of(phase: str, v: int, index: int) -> bytes:
    text = f"{phase}-{v}-{index}-".encode()
    return text + b"x" * (RECORD_BYTES - len(text))


def produce(port: int, phase: str, records: int, pause_s: float) -> None:
    with vs.KafkaConnection("127.0.0.1", port, timeout_s=30) as connection:
        for first in range(0, records, 10):
            for v in range(VIRTUAL):
                batch = vs.record_batch([value_of(phase, v, i) for i in range(first, min(first + 10, records))])
                (_, error, _), = connection.produce(TOPIC, [(v, batch)], acks=1)
                if error != 0:
                    raise AssertionError(f"Produce to {TOPIC}/{v}: error {error}")
                if pause_s:
                    time.sleep(pause_s)


def consume(port: int, phase: str, v: int, offset: int, records: int, deadline: float, errors: list[str],
            ends: dict[int, int]) -> None:
    got = 0
    try:
        with vs.KafkaConnection("127.0.0.1", port, timeout_s=30) as connection:
            while got < records:
                if time.monotonic() > deadline:
                    raise AssertionError(f"v {v}: {got} of {records} records before the deadline")
                answer = connection.fetch(TOPIC, [(v, offset)], max_wait_ms=MAX_WAIT_MS)
                error, _, data = answer[v]
                if error != 0:
                    raise AssertionError(f"v {v}: Fetch error {error}")
                for batch in vs.parse_record_batches(data):
                    for record in batch.records:
                        if record.offset < offset:
                            continue
                        expected = value_of(phase, v, got)
                        if record.value != expected:
                            raise AssertionError(f"v {v}: record {got} is {record.value[:40]!r}, "
                                                 f"expected {expected[:40]!r}")
                        got += 1
                        offset = record.offset + 1
            ends[v] = offset
    except Exception as problem:  # noqa: BLE001  (reported by the caller)
        errors.append(str(problem))


def run_phase(port: int, metrics: int, phase: str, records: int, offsets: dict[int, int]) -> dict:
    before = metric_totals(metrics)
    errors: list[str] = []
    ends: dict[int, int] = {}
    deadline = time.monotonic() + 120
    consumers = [threading.Thread(target=consume, args=(port, phase, v, offsets[v], records, deadline, errors, ends))
                 for v in range(VIRTUAL)]
    started = time.monotonic()
    if phase == "backlog":
        produce(port, phase, records, 0)
        for thread in consumers:
            thread.start()
    else:
        for thread in consumers:
            thread.start()
        time.sleep(0.3)  # every consumer waits at the end
        produce(port, phase, records, 0.002)
    for thread in consumers:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise AssertionError(f"{phase}: " + "; ".join(errors[:3]))
    offsets.update(ends)
    after = metric_totals(metrics)
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    scanned = delta.get("kpp_fetch_scanned_bytes_total", 0.0)
    delivered = delta.get("kpp_fetch_delivered_bytes_total", 0.0)
    return {"phase": phase, "seconds": elapsed, "scanned": scanned, "delivered": delivered,
            "amplification": scanned / delivered if delivered else float("inf"),
            "window_rounds": delta.get("kpp_fetch_window_rounds_total", 0.0),
            "joins": delta.get("kpp_fetch_window_joins_total", 0.0)}


def run_setting(build: Path, work: Path, window_bytes: int, records: int) -> list[dict]:
    name = f"window-{window_bytes}"
    broker = topo.Broker(str(build / "bench" / "kpp-mem-broker"), work, name, [f"{TOPIC}:1", "__kpr_offsets:1"])
    port, metrics, base = topo.free_port(), topo.free_port(), topo.free_port()
    config = work / f"{name}.yaml"
    config.write_text(topo.proxy_config(
        port, base, metrics, broker.bootstrap, 1,
        f"mapping:\n  fetch_window_bytes: {window_bytes}\n  topics:\n"
        f"    {TOPIC}: {{ virtual_partitions: {VIRTUAL}, physical_partitions: 1 }}\n"))
    proxy = topo.Process([str(build / "proxy" / "kafka-partition-proxy"), "-c", str(config)], work / f"{name}-proxy.log")
    try:
        topo.wait_port(port, 60)
        offsets = {v: 0 for v in range(VIRTUAL)}
        return [run_phase(port, metrics, phase, records, offsets) for phase in ("backlog", "live")]
    finally:
        proxy.stop()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(REPO / "build"))
    parser.add_argument("--records", type=int, default=1000, help="records per virtual partition and phase")
    parser.add_argument("--target", type=float, default=1.5, help="most read amplification with the window")
    args = parser.parse_args()
    build = Path(args.build)
    work = Path(tempfile.mkdtemp(prefix="kpp-shared-fetch-"))
    failures = []
    try:
        results = {setting: run_setting(build, work, bytes_max, args.records)
                   for setting, bytes_max in (("off", 0), ("on", 2 << 20))}
    except Exception:
        print(f"logs kept in {work}", file=sys.stderr)
        raise
    print(f"read amplification (bytes read from the broker / bytes delivered), {VIRTUAL} consumers on the "
          f"{VIRTUAL} virtual partitions of one physical partition, {args.records} records of {RECORD_BYTES} "
          "bytes each per virtual partition and phase")
    print(f"{'phase':<8} {'window':<7} {'amplification':>13} {'read MB':>8} {'delivered MB':>12} "
          f"{'window rounds':>13} {'joins':>6} {'seconds':>7}")
    for setting in ("off", "on"):
        for figures in results[setting]:
            print(f"{figures['phase']:<8} {setting:<7} {figures['amplification']:13.2f} "
                  f"{figures['scanned'] / 1e6:8.2f} {figures['delivered'] / 1e6:12.2f} "
                  f"{figures['window_rounds']:13.0f} {figures['joins']:6.0f} {figures['seconds']:7.2f}")
    for off, on in zip(results["off"], results["on"]):
        print(f"{on['phase']}: the window reads {on['amplification'] / off['amplification']:.2f}x the bytes "
              "of the same run without it")
        if on["amplification"] > args.target:
            failures.append(f"{on['phase']}: read amplification {on['amplification']:.2f} with the window, "
                            f"above the target {args.target}")
    shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
