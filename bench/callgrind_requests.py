#!/usr/bin/env python3
"""Instructions the proxy executes per Produce and per Fetch request (issue 6's deterministic
regression figure).

The proxy runs under valgrind's callgrind in front of kpp-mem-broker (the in-memory benchmark
broker). A raw client sends, on one connection, phases of identical requests; before each
phase callgrind's counters are zeroed and after it they are dumped (callgrind_control), so a
phase's count holds only what the proxy's threads executed for those requests, divided by
their number. Instruction counts do not move with the machine's load, unlike timings; what
the kernel does for the proxy (io_uring, TCP) is not counted.

Phases (each after a warm-up of the same requests; records of 100 bytes, 10 to a batch):

  produce-vp    Produce v3, one batch, acks=1, to an unmapped topic (the pass-through path)
  produce-v10   the same to a topic of 40 virtual over 4 physical partitions, the virtual
                partition cycling through all 40 (each record gets its tag, the batch its CRC)
  fetch-vp      Fetch v4 from offset 0 of an unmapped partition (64 KiB per partition)
  fetch-v10     Fetch v4 from offset 0 of a virtual partition whose physical partition holds
                the records of 10 virtual partitions (the proxy keeps 1 in 10)
  produce-vp-wide, produce-v10-wide
                produce-vp and produce-v10 with 100 records to a batch instead of 10 (after
                the fetch phases, whose log they would lengthen): with the narrow phases they
                split a mapped Produce's cost into a part per record and a part per request

Printed below the table: the instructions a mapped Produce spends per record over
pass-through, ((v10-wide - v10) - (vp-wide - vp)) / 90, checked against --record-target.

The figures are compared with bench/callgrind_baseline.json (per build type); a figure more
than --tolerance above its baseline fails the run. --update writes the figures as the new
baseline. --annotate prints each phase's most expensive functions (callgrind_annotate).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import topologies as topo  # noqa: E402  (Broker, free_port, wait_port, proxy_config)
import vp_support as vs  # noqa: E402  (the raw Kafka protocol client)

VIRTUAL, PHYSICAL = 40, 4
RECORDS, RECORD_BYTES = 10, 100
WIDE_RECORDS = 100
BASELINE = HERE / "callgrind_baseline.json"


def build_type(build: Path) -> str:
    options = json.loads((build / "meson-info" / "intro-buildoptions.json").read_text())
    values = {option["name"]: option["value"] for option in options}
    sanitize = values.get("b_sanitize", "none")
    return values.get("buildtype", "unknown") + ("" if sanitize in ("none", "") else f"+{sanitize}")


class Callgrind:
    """The proxy under callgrind; zero() and dump() bracket a phase."""

    def __init__(self, proxy: str, config: Path, work: Path):
        self.work = work
        self.out = work / "callgrind.out"
        self.log = open(work / "proxy-callgrind.log", "wb")
        self.popen = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", proxy, "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.dumps = 0

    def control(self, *argv: str) -> None:
        done = subprocess.run(["callgrind_control", *argv, str(self.popen.pid)], capture_output=True, timeout=120)
        if done.returncode != 0 or b"OK" not in done.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(argv)} failed: {done.stdout!r} {done.stderr!r}")

    def zero(self) -> None:
        self.control("--zero")

    def dump(self, name: str) -> tuple[int, Path]:
        self.control("--dump=" + name)
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists():
                match = re.search(rb"^summary: (\d+)", path.read_bytes(), re.MULTILINE)
                if match:
                    return int(match.group(1)), path
            time.sleep(0.1)
        raise RuntimeError(f"no callgrind dump at {path}")

    def stop(self) -> None:
        # Under valgrind the proxy's threads sit in io_uring_enter, where valgrind delivers no
        # SIGTERM; the dumps are written, so the process is simply killed.
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self.log.close()


def annotate(path: Path, lines: int) -> str:
    done = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", str(path)],
                          capture_output=True, text=True)
    rows = []
    for row in done.stdout.splitlines():
        match = re.match(r"^\s*[\d,]+ \(\s*([\d.]+)%\)", row)
        # A dump taken after --zero charges the frames that were live at the zeroing (the
        # program total, thread start, the shard loop) with everything: those are left out.
        if match and float(match.group(1)) < 99.0:
            rows.append(row[:200])
    return "\n".join(rows[:lines])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(REPO / "build"))
    parser.add_argument("--requests", type=int, default=400, help="requests per phase")
    parser.add_argument("--warmup", type=int, default=40, help="requests before each phase")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed rise over the baseline")
    parser.add_argument("--record-target", type=float, default=400.0, metavar="N",
                        help="most instructions a mapped Produce may spend per record over pass-through "
                             "(issue 15, target 1)")
    parser.add_argument("--update", action="store_true", help="record these figures as the baseline")
    parser.add_argument("--annotate", type=int, default=0, metavar="N", help="print each phase's top N functions")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    build = Path(args.build)
    proxy = build / "proxy" / "kafka-partition-proxy"
    broker_bin = build / "bench" / "kpp-mem-broker"
    for binary in (proxy, broker_bin):
        if not os.access(binary, os.X_OK):
            print(f"missing {binary}: build first", file=sys.stderr)
            return 1
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind is not installed (tools/setup.sh installs it)", file=sys.stderr)
        return 1
    kind = build_type(build)
    work = Path(tempfile.mkdtemp(prefix="kpp-callgrind-"))
    broker = topo.Broker(str(broker_bin), work, "callgrind",
                         [f"plain:{PHYSICAL}", f"virtual:{PHYSICAL}", "__kpr_offsets:1"])
    port, metrics, base = topo.free_port(), topo.free_port(), topo.free_port()
    config = work / "proxy.yaml"
    config.write_text(topo.proxy_config(
        port, base, metrics, broker.bootstrap, 1,
        # The shared fetch window off: fetch-v10 repeats one fetch, which the window would
        # answer from memory; these phases measure the path through the broker.
        f"mapping:\n  fetch_window_bytes: 0\n  topics:\n"
        f"    virtual: {{ virtual_partitions: {VIRTUAL}, physical_partitions: {PHYSICAL} }}\n"))
    proxy_run = Callgrind(str(proxy), config, work)
    figures: dict[str, float] = {}
    try:
        topo.wait_port(port, 120)
        batch = vs.record_batch([b"v" * RECORD_BYTES] * RECORDS)
        wide_batch = vs.record_batch([b"w" * RECORD_BYTES] * WIDE_RECORDS)
        with vs.KafkaConnection("127.0.0.1", port, timeout_s=60) as connection:
            def producer(topic: str, records: bytes, cycle: int):
                """Sends `records` to `topic`, partition i % cycle for the i-th request."""
                def send(i: int) -> None:
                    (_, error, _), = connection.produce(topic, [(i % cycle, records)], acks=1)
                    assert error == 0, f"Produce to {topic}/{i % cycle}: error {error}"
                return send

            def fetch_plain(i: int) -> None:
                answer = connection.fetch("plain", [(0, 0)], max_wait_ms=0, partition_max_bytes=64 << 10)
                assert answer[0][0] == 0 and answer[0][2], f"Fetch plain/0: {answer[0][:2]}"

            def fetch_virtual(i: int) -> None:
                answer = connection.fetch("virtual", [(7, 0)], max_wait_ms=0, partition_max_bytes=64 << 10)
                assert answer[7][0] == 0 and answer[7][2], f"Fetch virtual/7: {answer[7][:2]}"

            phases = [("produce-vp", producer("plain", batch, 1)), ("produce-v10", producer("virtual", batch, VIRTUAL)),
                      ("fetch-vp", fetch_plain), ("fetch-v10", fetch_virtual),
                      ("produce-vp-wide", producer("plain", wide_batch, 1)),
                      ("produce-v10-wide", producer("virtual", wide_batch, VIRTUAL))]
            for name, send in phases:
                for i in range(args.warmup):
                    send(i)
                proxy_run.zero()
                for i in range(args.requests):
                    send(i)
                instructions, dump = proxy_run.dump(name)
                figures[name] = instructions / args.requests
                if args.annotate:
                    print(f"--- {name}: top functions (self instructions over {args.requests} requests)")
                    print(annotate(dump, args.annotate))
    finally:
        proxy_run.stop()
        broker.stop()

    baselines = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    baseline = baselines.get(kind, {})
    print(f"instructions per request through the proxy (callgrind, {kind} build, {args.requests} requests "
          f"per phase, {RECORDS} x {RECORD_BYTES}-byte records per batch)")
    print(f"{'phase':<12} {'instructions':>12} {'baseline':>10} {'ratio':>6}")
    regressions = []
    for name, value in figures.items():
        recorded = baseline.get(name)
        ratio = value / recorded if recorded else None
        print(f"{name:<12} {value:12.0f} {recorded or '-':>10} {('%.3f' % ratio) if ratio else '-':>6}")
        if ratio and ratio > 1 + args.tolerance:
            regressions.append(f"{name}: {value:.0f} instructions per request, {ratio:.2f}x the baseline {recorded}")
    wide = ("produce-vp", "produce-v10", "produce-vp-wide", "produce-v10-wide")
    per_record = None
    if all(name in figures for name in wide):
        vp, v10, vp_wide, v10_wide = (figures[name] for name in wide)
        per_record = ((v10_wide - v10) - (vp_wide - vp)) / (WIDE_RECORDS - RECORDS)
        print(f"mapped Produce, per record over pass-through: {per_record:.0f} instructions "
              f"(target {args.record_target:.0f}); per request over pass-through: "
              f"{(v10 - vp) - RECORDS * per_record:.0f}")
        if per_record > args.record_target:
            regressions.append(f"mapped Produce: {per_record:.0f} instructions per record over pass-through, "
                               f"above the target {args.record_target:.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"build_type": kind, "requests": args.requests,
                                              "per_request": figures,
                                              "produce_per_record_over_pass_through": per_record}, indent=1))
    if args.update:
        baselines[kind] = {name: round(value) for name, value in figures.items()}
        BASELINE.write_text(json.dumps(baselines, indent=1, sort_keys=True) + "\n")
        print(f"baseline for {kind} written to {BASELINE}")
    elif not baseline:
        print(f"no baseline for {kind} builds in {BASELINE.name}: figures reported only")
    if not os.environ.get("KPP_KEEP"): shutil.rmtree(work, ignore_errors=True)
    if regressions:
        print("REGRESSION (more than %.0f%% over the baseline):\n  " % (args.tolerance * 100)
              + "\n  ".join(regressions), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
