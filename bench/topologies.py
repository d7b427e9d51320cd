#!/usr/bin/env python3
"""Side-by-side benchmark of the same load through several topologies (issue 6's harness).

Every topology gets the same upstream (a fresh kpp-mem-broker, the in-memory broker for
benchmarks, so the middle process and not the broker is what is measured) and the same
load (kpp-loadgen, a librdkafka client producing and consuming in one process):

  direct     loadgen -> broker
  haproxy    loadgen -> HAProxy (TCP mode, the L4 baseline) -> broker
  proxy-vp   loadgen -> kafka-partition-proxy, V == P (no remapping: the pass-through path)
  proxy-v10  loadgen -> kafka-partition-proxy, V = 10 P, uncompressed
  proxy-v10-lz4  the same with lz4 (the proxy recompresses to tag batches)

For each: throughput at saturation (produce + consume MB/s), then produce and end-to-end
latency percentiles at half of the direct saturation rate (fixed rate, coordinated
omission corrected by the generator), and the middle process's CPU seconds per GB moved
(utime + stime from /proc, so the figure holds on a shared, noisy machine) and peak RSS.
Ratios against direct and HAProxy are printed as a table (and written as JSON).

--short is what `meson test --benchmark` runs (a few minutes); the default is longer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHYSICAL = 4
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


class Process:
    """A child process in its own session, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, stdin=subprocess.DEVNULL):
        self.log = open(log, "wb")
        self.popen = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=self.log,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


class Broker(Process):
    def __init__(self, binary: str, work: Path, name: str, topics: list[str], advertise: str | None = None):
        argv = [binary]
        for topic in topics:
            argv += ["--topic", topic]
        if advertise:
            argv += ["--advertise", advertise]
        self.port = free_port()
        argv += ["--listen", f"127.0.0.1:{self.port}"]
        super().__init__(argv, work / f"{name}-broker.log", stdin=subprocess.PIPE)
        line = self.popen.stdout.readline().decode().strip()
        if not line.startswith("BOOTSTRAP "):
            raise RuntimeError(f"kpp-mem-broker did not start: {line!r}; see {work / (name + '-broker.log')}")
        self.bootstrap = line.split()[1]

    def stop(self) -> None:
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        super().stop()


@dataclass
class Result:
    name: str
    saturation: dict = field(default_factory=dict)
    paced: dict = field(default_factory=dict)
    middle_cpu_s: float | None = None
    moved_bytes: int = 0
    middle_rss_peak_kb: int | None = None

    @property
    def throughput_mb_s(self) -> float:
        return self.saturation.get("produce_mb_s", 0.0) + self.saturation.get("consume_mb_s", 0.0)

    @property
    def cpu_s_per_gb(self) -> float | None:
        if self.middle_cpu_s is None or self.moved_bytes == 0:
            return None
        return self.middle_cpu_s / (self.moved_bytes / 1e9)


def loadgen(binary: str, bootstrap: str, topic: str, seconds: float, rate: int, record_bytes: int,
            compression: str, log: Path) -> dict:
    argv = [binary, "--bootstrap", bootstrap, "--topic", topic, "--mode", "both", "--rate", str(rate),
            "--duration", str(seconds), "--warmup", "1", "--record-bytes", str(record_bytes),
            "--compression", compression, "--json"]
    done = subprocess.run(argv, capture_output=True, timeout=seconds + 120)
    log.write_bytes(done.stdout + b"\n--- stderr ---\n" + done.stderr)
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"kpp-loadgen failed (rc={done.returncode}); see {log}")
    return json.loads(lines[-1])


def proxy_config(port: int, base: int, metrics: int, bootstrap: str, threads: int, mapping: str) -> str:
    return (f"threads: {threads}\n"
            f'listen:\n  address: "127.0.0.1:{port}"\n  broker_port_base: {base}\n'
            f'kafka:\n  bootstrap_servers: ["{bootstrap}"]\n'
            f'metrics:\n  address: "127.0.0.1:{metrics}"\n'
            "logging: { level: warn }\n"
            f"offset_store: {{ partitions: 1, replication_factor: 1 }}\n"
            + mapping)


def run_topology(name: str, args, work: Path, rate: int, seconds: float, compression: str = "none") -> Result:
    """Starts broker and middle process, runs one loadgen, returns the figures."""
    topic = "bench-v" if name.startswith("proxy-v10") else "bench"
    topics = [f"bench:{PHYSICAL}", f"bench-v:{PHYSICAL}", "__kpr_offsets:1"]
    middle: Process | None = None
    broker: Broker | None = None
    try:
        if name == "direct":
            broker = Broker(args.broker, work, name, topics)
            bootstrap = broker.bootstrap
        elif name == "haproxy":
            port = free_port()
            broker = Broker(args.broker, work, name, topics, advertise=f"127.0.0.1:{port}")
            config = work / "haproxy.cfg"
            config.write_text(
                "global\n  maxconn 4000\n  nbthread 2\n"
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
                f"frontend kafka\n  bind 127.0.0.1:{port}\n  default_backend broker\n"
                f"backend broker\n  server b1 {broker.bootstrap}\n")
            middle = Process([args.haproxy, "-db", "-f", str(config)], work / f"{name}-middle.log")
            wait_port(port)
            bootstrap = f"127.0.0.1:{port}"
        else:
            broker = Broker(args.broker, work, name, topics)
            port, metrics, base = free_port(), free_port(), free_port()
            mapping = (f"mapping:\n  topics:\n    bench-v: {{ virtual_partitions: {10 * PHYSICAL}, "
                       f"physical_partitions: {PHYSICAL} }}\n")
            config = work / f"{name}.yaml"
            config.write_text(proxy_config(port, base, metrics, broker.bootstrap, args.threads, mapping))
            middle = Process([args.proxy, "-c", str(config)], work / f"{name}-middle.log")
            wait_port(port)
            bootstrap = f"127.0.0.1:{port}"
        result = Result(name)
        before = cpu_seconds(middle.pid) if middle else None
        result.saturation = loadgen(args.loadgen, bootstrap, topic, seconds, 0, args.record_bytes, compression,
                                    work / f"{name}-saturation.json")
        if middle:
            result.middle_cpu_s = cpu_seconds(middle.pid) - before
        # Payload bytes through the middle: produced once, consumed once.
        result.moved_bytes = int(result.saturation.get("bytes_produced", 0) +
                                 result.saturation.get("records_consumed", 0) * args.record_bytes)
        if rate > 0:
            result.paced = loadgen(args.loadgen, bootstrap, topic, seconds, rate, args.record_bytes, compression,
                                   work / f"{name}-paced.json")
        if middle:
            result.middle_rss_peak_kb = rss_kb(middle.pid, "VmHWM")
        return result
    finally:
        if middle:
            middle.stop()
        if broker:
            broker.stop()


def idle_connections_rss(args, work: Path, count: int) -> tuple[int, int]:
    """Proxy RSS (kB) before and after `count` client connections that each sent one
    ApiVersions request and then stay idle."""
    broker = Broker(args.broker, work, "idle", [f"bench:{PHYSICAL}", "__kpr_offsets:1"])
    port, metrics, base = free_port(), free_port(), free_port()
    config = work / "idle.yaml"
    config.write_text(proxy_config(port, base, metrics, broker.bootstrap, args.threads, ""))
    proxy = Process([args.proxy, "-c", str(config)], work / "idle-middle.log")
    sockets = []
    try:
        wait_port(port)
        before = rss_kb(proxy.pid)
        request = (b"\x00\x12\x00\x00" + (1).to_bytes(4, "big") + b"\x00\x05bench")  # ApiVersions v0
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(len(request).to_bytes(4, "big") + request)
            sockets.append(connection)
        for connection in sockets:
            size = int.from_bytes(connection.recv(4, socket.MSG_WAITALL), "big")
            connection.recv(size, socket.MSG_WAITALL)
        time.sleep(0.5)
        return before, rss_kb(proxy.pid)
    finally:
        for connection in sockets:
            connection.close()
        proxy.stop()
        broker.stop()


def ratio(value, base) -> str:
    if value is None or base in (None, 0):
        return "-"
    return f"{value / base:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the quick run of `meson test --benchmark`")
    parser.add_argument("--build", default=str(REPO / "build"))
    parser.add_argument("--threads", type=int, default=1, help="proxy threads")
    parser.add_argument("--record-bytes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    build = Path(args.build)
    args.proxy = str(build / "proxy" / "kafka-partition-proxy")
    args.broker = str(build / "bench" / "kpp-mem-broker")
    args.loadgen = str(build / "bench" / "kpp-loadgen")
    args.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    seconds = args.seconds or (5.0 if args.short else 20.0)
    for binary in (args.proxy, args.broker, args.loadgen):
        if not os.access(binary, os.X_OK):
            print(f"missing {binary}: build first", file=sys.stderr)
            return 1
    names = ["direct", "haproxy", "proxy-vp", "proxy-v10", "proxy-v10-lz4"]
    if not os.access(args.haproxy, os.X_OK):
        print("haproxy not installed (tools/setup.sh installs it): its row is left out", file=sys.stderr)
        names.remove("haproxy")
    work = Path(tempfile.mkdtemp(prefix="kpp-bench-"))
    print(f"kpp bench: {seconds:.0f} s per run, {args.record_bytes}-byte records, proxy threads {args.threads}, "
          f"logs in {work}", flush=True)
    results: dict[str, Result] = {}
    direct = run_topology("direct", args, work, 0, seconds)
    half_rate = int(direct.saturation.get("achieved_rate", 0) / 2)
    results["direct"] = run_topology("direct", args, work, half_rate, seconds) if half_rate else direct
    results["direct"].saturation = direct.saturation
    for name in names[1:]:
        compression = "lz4" if name.endswith("lz4") else "none"
        results[name] = run_topology(name, args, work, half_rate, seconds, compression)
        print(f"  {name}: done", flush=True)
    before, after = idle_connections_rss(args, work, 1000)

    base, l4 = results["direct"], results.get("haproxy")
    header = (f"{'topology':<15} {'MB/s':>8} {'vs direct':>9} {'ack p50':>8} {'ack p99':>8} {'ack p99.9':>9} "
              f"{'e2e p99':>8} {'CPU s/GB':>9} {'vs HAProxy':>10} {'RSS MB':>7}")
    print(header)
    for name, result in results.items():
        paced = result.paced
        cpu = result.cpu_s_per_gb
        print(f"{name:<15} {result.throughput_mb_s:8.1f} {ratio(result.throughput_mb_s, base.throughput_mb_s):>9} "
              f"{paced.get('ack_p50_us', 0):8.0f} {paced.get('ack_p99_us', 0):8.0f} {paced.get('ack_p999_us', 0):9.0f} "
              f"{paced.get('e2e_p99_us', 0):8.0f} {('%.2f' % cpu) if cpu is not None else '-':>9} "
              f"{ratio(cpu, l4.cpu_s_per_gb if l4 else None):>10} "
              f"{(result.middle_rss_peak_kb or 0) / 1024:7.1f}")
    print(f"latency at {half_rate} records/s (half of direct saturation); ack = produce acknowledgement, "
          f"e2e = produce to consume, in microseconds")
    print(f"1000 idle client connections: proxy RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "seconds": seconds, "record_bytes": args.record_bytes, "threads": args.threads, "half_rate": half_rate,
            "results": {name: {"saturation": r.saturation, "paced": r.paced, "middle_cpu_s": r.middle_cpu_s,
                               "moved_bytes": r.moved_bytes, "cpu_s_per_gb": r.cpu_s_per_gb,
                               "rss_peak_kb": r.middle_rss_peak_kb} for name, r in results.items()},
            "idle_rss_kb": {"before": before, "after_1000": after}}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
