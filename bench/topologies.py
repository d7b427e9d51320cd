#!/usr/bin/env python3
"""Side-by-side benchmark of the same load through several topologies (issue 6's harness).

Every topology gets the same upstream (a fresh kpp-mem-broker, the in-memory broker for
benchmarks, so the middle process and not the broker is what is measured) and the same
load (kpp-loadgen, a librdkafka client producing and consuming in one process):

  direct     loadgen -> broker
  haproxy    loadgen -> HAProxy (TCP mode, the L4 baseline) -> broker
  proxy-vp   loadgen -> kafka-partition-proxy, V == P (no remapping: the pass-through path)
  proxy-vp-spin  the same with spin_before_sleep_us: 50 (each core asks its ring for
                 completions for 50 us before it sleeps): the latency it buys at the paced
                 rate, and the CPU it costs there
  proxy-v10  loadgen -> kafka-partition-proxy, V = 10 P, uncompressed
  proxy-v10-lz4  the same with lz4 (the proxy recompresses to tag batches)
  proxy-v10-idem V = 10 P with an idempotent producer (enable.idempotence): batches of
                 virtual group g >= 1 go out under producer aliases; the bar is within 10%
                 of proxy-v10 in throughput and CPU per GB
  haproxy-tls    loadgen --TLS--> HAProxy (TCP mode, TLS terminated and re-encrypted, the
                 backend certificate verified) --TLS--> the broker's TLS front
  proxy-tls      loadgen --TLS--> kafka-partition-proxy, V == P (listen SSL, kafka SSL)
                 --TLS--> the broker's TLS front

The TLS rows (issue 13) share a PKI made with the openssl command in the run's directory
(a CA and one certificate for IP:127.0.0.1 and DNS:localhost). kpp-mem-broker speaks
plaintext, so a second HAProxy terminates TLS in front of it and the broker advertises the
front (for proxy-tls) or the middle (for haproxy-tls); the front's CPU is not counted. Every
TLS hop negotiates TLS 1.3 with TLS_AES_128_GCM_SHA256: HAProxy is configured so, and the
generator's librdkafka is limited to it by an OpenSSL configuration file (OPENSSL_CONF);
the proxy runs with its defaults. Each TLS middle also gets a handshake measurement: new
connections, one after another from one client, each a full handshake, divided by the
middle's CPU seconds (so the figure is per core and holds on a busy machine), without and
with one ApiVersions round trip.

Each round runs every topology at saturation (produce + consume MB/s), then every topology
again at one fixed rate, half of the slowest topology's saturation rate in that round (of the
plaintext topologies; the TLS rows run at that rate too unless half the slower TLS middle's
saturation is lower, then at that, with direct run again at it for their added latency), for
produce-acknowledgement and end-to-end latency percentiles (coordinated omission corrected by
the generator): the same load for all, so the difference from direct is the latency a middle
process adds. The middle process's CPU seconds per GB moved (utime + stime from /proc, so the
figure holds on a shared, noisy machine) and its peak RSS come from the saturation run.
Ratios (against direct, against HAProxy) are taken inside a round, then the median over
--runs rounds is printed, with the lowest and highest in brackets.

InitProducerId round trips, direct and through the proxy, and the first Produce of a new
idempotent producer to a virtual partition that needs a producer alias (one store read,
InitProducerId, store write and store read) against one that does not, are timed once
per run on one connection each.

Then the proxy's thread scaling: two load generators at saturation through the proxy (V == P)
with 1 and then 2 threads, and the RSS of 1,000 idle client connections.

--topologies picks a subset (e.g. --topologies direct,haproxy,proxy-vp,haproxy-tls,proxy-tls).
--load-cpus / --middle-cpus pin the load side (generators and broker) and the middle process
to sets of processors (taskset), so the middle does not compete with the load for a core.

--short is what `meson test --benchmark` runs (a few minutes); the default is longer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
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
    """A port nothing listens on, below the ephemeral range: a port the kernel hands out
    for outgoing connections (bind to 0 picks one of those) can be taken by one of the
    many connections a run opens before the process meant to listen on it starts."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10100) - 50)  # the proxy also takes base + broker id
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, all its threads (utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


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

    def __init__(self, argv: list[str], log: Path, stdin=subprocess.DEVNULL, cpus: str | None = None):
        if cpus:
            argv = ["taskset", "-c", cpus] + argv
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
    def __init__(self, binary: str, work: Path, name: str, topics: list[str], advertise: str | None = None,
                 cpus: str | None = None):
        argv = [binary]
        for topic in topics:
            argv += ["--topic", topic]
        if advertise:
            argv += ["--advertise", advertise]
        self.port = free_port()
        argv += ["--listen", f"127.0.0.1:{self.port}"]
        super().__init__(argv, work / f"{name}-broker.log", stdin=subprocess.PIPE, cpus=cpus)
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
    """One run of one topology: at saturation (rate 0) or at a fixed rate."""
    name: str
    load: dict = field(default_factory=dict)  # the generators' figures (summed over generators)
    middle_cpu_s: float | None = None
    middle_user_s: float | None = None
    middle_sys_s: float | None = None
    moved_bytes: int = 0
    middle_rss_peak_kb: int | None = None
    wall_s: float = 0.0  # how long the load ran, start-up and drain included

    @property
    def middle_cores(self) -> float | None:
        """The middle process's average CPU use over the load run, in cores."""
        return self.middle_cpu_s / self.wall_s if self.middle_cpu_s is not None and self.wall_s else None

    @property
    def throughput_mb_s(self) -> float:
        return self.load.get("produce_mb_s", 0.0) + self.load.get("consume_mb_s", 0.0)

    @property
    def cpu_s_per_gb(self) -> float | None:
        if self.middle_cpu_s is None or self.moved_bytes == 0:
            return None
        return self.middle_cpu_s / (self.moved_bytes / 1e9)

    def as_json(self) -> dict:
        return {"load": self.load, "middle_cpu_s": self.middle_cpu_s, "middle_user_s": self.middle_user_s,
                "middle_sys_s": self.middle_sys_s, "moved_bytes": self.moved_bytes,
                "cpu_s_per_gb": self.cpu_s_per_gb, "rss_peak_kb": self.middle_rss_peak_kb,
                "wall_s": self.wall_s}


def loadgen_argv(args, bootstrap: str, topic: str, seconds: float, rate: int, compression: str,
                 producers: int, idempotence: bool = False, tls: bool = False) -> list[str]:
    argv = [args.loadgen, "--bootstrap", bootstrap, "--topic", topic, "--mode", "both", "--rate", str(rate),
            "--duration", str(seconds), "--warmup", "1", "--record-bytes", str(args.record_bytes),
            "--compression", compression, "--producers", str(producers), "--json"]
    if idempotence:
        argv += ["--idempotence", "1"]
    if tls:  # librdkafka verifies the host name (127.0.0.1) against the certificate's SAN
        argv += ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={args.pki / 'ca.pem'}"]
    if rate:  # paced runs: the producer sends as soon as a record is due (see --paced-linger-ms)
        argv += ["--linger-ms", str(args.paced_linger_ms)]
    return (["taskset", "-c", args.load_cpus] if args.load_cpus else []) + argv


def loadgen(args, bootstrap: str, topics: list[str], seconds: float, rate: int, compression: str,
            log: Path, producers: int = 1, idempotence: bool = False, tls: bool = False) -> dict:
    """Runs one generator per topic at once; returns their figures, throughputs and counts
    summed (latency percentiles are the first generator's)."""
    running = [subprocess.Popen(loadgen_argv(args, bootstrap, topic, seconds, rate, compression, producers,
                                             idempotence, tls),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=tls_client_env(args) if tls else None) for topic in topics]
    figures = []
    for index, process in enumerate(running):
        stdout, stderr = process.communicate(timeout=seconds + 120)
        path = log.with_name(f"{log.stem}-{index}{log.suffix}")
        path.write_bytes(stdout + b"\n--- stderr ---\n" + stderr)
        lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"kpp-loadgen failed (rc={process.returncode}); see {path}")
        figures.append(json.loads(lines[-1]))
    total = dict(figures[0])
    for other in figures[1:]:
        for key in ("records_produced", "bytes_produced", "produce_mb_s", "records_consumed", "consume_mb_s",
                    "errors", "achieved_rate", "target_rate"):
            total[key] = total.get(key, 0) + other.get(key, 0)
    return total


def proxy_config(port: int, base: int, metrics: int, bootstrap: str, threads: int, mapping: str,
                 listen_extra: str = "", kafka_extra: str = "", spin_us: int = 0) -> str:
    return (f"threads: {threads}\nspin_before_sleep_us: {spin_us}\n"
            f'listen:\n  address: "127.0.0.1:{port}"\n  broker_port_base: {base}\n{listen_extra}'
            f'kafka:\n  bootstrap_servers: ["{bootstrap}"]\n{kafka_extra}'
            f'metrics:\n  address: "127.0.0.1:{metrics}"\n'
            "logging: { level: warn }\n"
            f"offset_store: {{ partitions: 1, replication_factor: 1 }}\n"
            + mapping)


SPIN_US = 50  # spin_before_sleep_us of proxy-vp-spin
ALL_NAMES = ("direct", "haproxy", "proxy-vp", "proxy-vp-spin", "proxy-v10", "proxy-v10-lz4", "proxy-v10-idem",
             "haproxy-tls", "proxy-tls")
TLS_NAMES = ("haproxy-tls", "proxy-tls")
# One cipher suite on every TLS hop, so the figures compare the middles and not the ciphers.
TLS_CIPHERSUITE = "TLS_AES_128_GCM_SHA256"


def make_pki(work: Path) -> Path:
    """A CA and one server certificate (SAN IP:127.0.0.1 and DNS:localhost, P-256) made
    with the openssl command in `work`/pki, shared by the broker's TLS front and both TLS
    middles; plus client.cnf, an OpenSSL configuration that limits a client process
    (kpp-loadgen's librdkafka, the handshake client) to TLS 1.3 with TLS_CIPHERSUITE,
    which librdkafka's own settings cannot do for TLS 1.3."""
    pki = work / "pki"
    pki.mkdir()

    def openssl(*argv: str) -> None:
        done = subprocess.run(["openssl", *argv], cwd=pki, capture_output=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {argv[0]} failed: {done.stderr.decode()}")

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/O=kpp/CN=kpp bench CA")
    openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/O=kpp/CN=localhost")
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    (pki / "server-haproxy.pem").write_bytes((pki / "server.pem").read_bytes() + (pki / "server.key").read_bytes())
    (pki / "client.cnf").write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_section\n"
        "[ssl_section]\nsystem_default = tls13_only\n"
        f"[tls13_only]\nMinProtocol = TLSv1.3\nCiphersuites = {TLS_CIPHERSUITE}\n")
    return pki


def tls_client_env(args) -> dict:
    return dict(os.environ, OPENSSL_CONF=str(args.pki / "client.cnf"))


def haproxy_tls_bind(args) -> str:
    return f"ssl crt {args.pki / 'server-haproxy.pem'} ssl-min-ver TLSv1.3 ciphersuites {TLS_CIPHERSUITE}"


@dataclass
class Topology:
    """What start_topology started: the upstream (broker, and its TLS front for the TLS
    topologies), the middle process (none for direct) and the address clients dial."""
    broker: Broker
    bootstrap: str
    middle: Process | None = None
    front: Process | None = None

    def stop(self) -> None:
        for process in (self.middle, self.front, self.broker):
            if process:
                process.stop()


def haproxy_config(path: Path, threads: int, bind: str, server: str) -> Path:
    path.write_text(
        f"global\n  maxconn 4000\n  nbthread {threads}\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
        f"frontend kafka\n  bind {bind}\n  default_backend broker\n"
        f"backend broker\n  server b1 {server}\n")
    return path


def start_topology(name: str, args, work: Path, label: str, topics: list[str], threads: int | None = None,
                   generators: int = 1) -> Topology:
    """A fresh broker and middle process for `name`. The TLS topologies put the broker
    behind a TLS front (HAProxy terminating TLS, not measured: it stands for a broker
    that speaks TLS), which both TLS middles reach with verification on."""
    threads = threads or args.threads
    port = free_port()  # the middle's listener (bootstrap)
    front_port = free_port() if name in TLS_NAMES else None
    # Metadata must name the address clients use: HAProxy's for the L4 middles (they pass
    # it through), the front's for the proxy (it rewrites Metadata to its own ports).
    advertise = {"haproxy": port, "haproxy-tls": port, "proxy-tls": front_port}.get(name)
    broker = Broker(args.broker, work, label, topics, advertise=f"127.0.0.1:{advertise}" if advertise else None,
                    cpus=args.load_cpus)
    topology = Topology(broker, broker.bootstrap)
    try:
        if front_port:
            config = haproxy_config(work / f"{label}-front.cfg", 1,
                                    f"127.0.0.1:{front_port} {haproxy_tls_bind(args)}", broker.bootstrap)
            topology.front = Process([args.haproxy, "-db", "-f", str(config)], work / f"{label}-front.log",
                                     cpus=args.load_cpus)
            wait_port(front_port)
        if name == "direct":
            return topology
        if name.startswith("haproxy"):
            bind, server = f"127.0.0.1:{port}", broker.bootstrap
            if name == "haproxy-tls":
                bind += " " + haproxy_tls_bind(args)
                server = (f"127.0.0.1:{front_port} ssl verify required ca-file {args.pki / 'ca.pem'} "
                          f"verifyhost localhost ssl-min-ver TLSv1.3 ciphersuites {TLS_CIPHERSUITE}")
            config = haproxy_config(work / f"{label}.cfg", threads, bind, server)
            topology.middle = Process([args.haproxy, "-db", "-f", str(config)], work / f"{label}-middle.log",
                                      cpus=args.middle_cpus)
        else:
            metrics, base = free_port(), free_port()
            mapping = "mapping:\n  topics:\n" + "".join(
                f"    bench-v{i}: {{ virtual_partitions: {10 * PHYSICAL}, physical_partitions: {PHYSICAL} }}\n"
                for i in range(generators))
            upstream, listen_extra, kafka_extra = broker.bootstrap, "", ""
            if name == "proxy-tls":  # the proxy's TLS defaults: its peers settle the version and suite
                upstream = f"127.0.0.1:{front_port}"
                listen_extra = ("  security:\n    protocol: SSL\n    tls: { "
                                f"cert_path: {args.pki / 'server.pem'}, key_path: {args.pki / 'server.key'} }}\n")
                kafka_extra = f"  security_protocol: SSL\n  tls: {{ ca_cert_path: {args.pki / 'ca.pem'} }}\n"
            config = work / f"{label}.yaml"
            config.write_text(proxy_config(port, base, metrics, upstream, threads, mapping, listen_extra, kafka_extra,
                                           spin_us=SPIN_US if name.endswith("-spin") else 0))
            topology.middle = Process([args.proxy, "-c", str(config)], work / f"{label}-middle.log",
                                      cpus=args.middle_cpus)
        wait_port(port)
        topology.bootstrap = f"127.0.0.1:{port}"
        return topology
    except BaseException:
        topology.stop()
        raise


def run_topology(name: str, args, work: Path, rate: int, seconds: float, threads: int | None = None,
                 generators: int = 1, tag: str = "") -> Result:
    """Starts a fresh broker and middle process, runs the load (at saturation when rate is
    0), returns the figures."""
    compression = "lz4" if name.endswith("lz4") else "none"
    virtual = name.startswith("proxy-v10")
    topics = [f"bench{i}:{PHYSICAL}" for i in range(generators)] + \
             [f"bench-v{i}:{PHYSICAL}" for i in range(generators)] + ["__kpr_offsets:1"]
    load_topics = [f"bench-v{i}" if virtual else f"bench{i}" for i in range(generators)]
    label = f"{name}{tag}-{'paced' if rate else 'saturation'}"
    topology = start_topology(name, args, work, label, topics, threads, generators)
    middle = topology.middle
    try:
        result = Result(name)
        before = cpu_split(middle.pid) if middle else None
        started = time.monotonic()
        result.load = loadgen(args, topology.bootstrap, load_topics, seconds, rate, compression,
                              work / f"{label}.json", producers=2 if generators > 1 else 1,
                              idempotence=name.endswith("-idem"), tls=name in TLS_NAMES)
        result.wall_s = time.monotonic() - started
        if middle:
            after = cpu_split(middle.pid)
            result.middle_user_s, result.middle_sys_s = after[0] - before[0], after[1] - before[1]
            result.middle_cpu_s = result.middle_user_s + result.middle_sys_s
            result.middle_rss_peak_kb = rss_kb(middle.pid, "VmHWM")
        # Payload bytes through the middle: produced once, consumed once.
        result.moved_bytes = int(result.load.get("bytes_produced", 0) +
                                 result.load.get("records_consumed", 0) * args.record_bytes)
        return result
    finally:
        topology.stop()


# Run as `python3 -c` with OPENSSL_CONF=client.cnf (TLS 1.3, TLS_CIPHERSUITE only): opens
# connections one after another for a while, each a full handshake (no resumption) with the
# certificate and host name verified, then, with "request", one ApiVersions v0 round trip;
# prints the count and what the last connection negotiated.
HANDSHAKE_CLIENT = """
import socket, ssl, sys, time
host, port, ca, mode, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
context = ssl.create_default_context(cafile=ca)
request = b"\\x00\\x12\\x00\\x00" + (7).to_bytes(4, "big") + b"\\x00\\x05bench"
frame = len(request).to_bytes(4, "big") + request
def read(tls, size):
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        if not chunk:
            raise SystemExit("connection closed before the response")
        data += chunk
    return data
count, deadline = 0, time.monotonic() + seconds
while time.monotonic() < deadline:
    with socket.create_connection((host, port)) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        if mode == "request":
            tls.sendall(frame)
            read(tls, int.from_bytes(read(tls, 4), "big"))
        negotiated = tls.version() + " " + tls.cipher()[0]
    count += 1
print(count, negotiated)
"""


@dataclass
class HandshakeRun:
    """One handshake measurement against one middle: `connections` in `wall_s` seconds,
    costing the middle `cpu_s` CPU seconds (user + system)."""
    name: str
    mode: str
    connections: int
    wall_s: float
    cpu_s: float
    negotiated: str

    @property
    def per_core_second(self) -> float | None:
        return self.connections / self.cpu_s if self.cpu_s > 0 else None

    def as_json(self) -> dict:
        return {"mode": self.mode, "connections": self.connections, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "negotiated": self.negotiated}


def handshake_rates(name: str, args, work: Path, seconds: float, tag: str) -> list[HandshakeRun]:
    """New TLS connections per CPU second of the middle: sequential full handshakes from one
    client, without ("handshake") and with ("request") one ApiVersions round trip. HAProxy
    dials its backend (a TLS handshake toward the front) for every client connection; the
    proxy dials the broker only when a request needs it, so "request" counts that too."""
    label = f"{name}{tag}-handshakes"
    topology = start_topology(name, args, work, label, [f"bench0:{PHYSICAL}", "__kpr_offsets:1"])
    runs = []
    try:
        host, port = topology.bootstrap.rsplit(":", 1)
        for mode in ("handshake", "request"):
            before = cpu_seconds(topology.middle.pid)
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-c", HANDSHAKE_CLIENT, host, port, str(args.pki / "ca.pem"), mode,
                                   str(seconds)], capture_output=True, env=tls_client_env(args), timeout=seconds + 60,
                                  cwd=work)
            wall = time.monotonic() - started
            time.sleep(0.3)  # the middle closes what the client left
            if done.returncode != 0:
                raise RuntimeError(f"the handshake client failed against {name}: {done.stderr.decode()[-2000:]}")
            count, negotiated = done.stdout.decode().split(" ", 1)
            runs.append(HandshakeRun(name, mode, int(count), wall, cpu_seconds(topology.middle.pid) - before,
                                     negotiated.strip()))
        return runs
    finally:
        topology.stop()


def producer_id_latencies(args, work: Path, count: int) -> dict[str, list[float]]:
    """Round trips in microseconds, each on one connection: InitProducerId v0 direct and
    through the proxy, and the first Produce (one record, acks=all) of `count` new idempotent
    producers to virtual partition 0 (no alias) and to virtual partition PHYSICAL (group 1:
    the proxy resolves an alias first) of a V = 10 P topic."""
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    import producer_audit
    import vp_support

    broker = Broker(args.broker, work, "producer-ids", [f"bench-v0:{PHYSICAL}", "__kpr_offsets:1"])
    port, metrics, base = free_port(), free_port(), free_port()
    config = work / "producer-ids.yaml"
    config.write_text(proxy_config(port, base, metrics, broker.bootstrap, args.threads,
                                   "mapping:\n  topics:\n    bench-v0: { virtual_partitions: "
                                   f"{10 * PHYSICAL}, physical_partitions: {PHYSICAL} }}\n"))
    proxy = Process([args.proxy, "-c", str(config)], work / "producer-ids-middle.log", cpus=args.middle_cpus)
    figures: dict[str, list[float]] = {}
    try:
        wait_port(port)
        broker_host, broker_port = broker.bootstrap.rsplit(":", 1)
        # Alternating on two open connections, so that drift of a noisy machine hits both.
        with vp_support.KafkaConnection(broker_host, int(broker_port)) as direct, \
                vp_support.KafkaConnection("127.0.0.1", port) as proxied:
            figures["init_direct"], figures["init_proxy"] = [], []
            for index in range(count + 10):
                for label, connection in (("init_direct", direct), ("init_proxy", proxied)):
                    started = time.perf_counter_ns()
                    error, _, _ = producer_audit.init_producer_id(connection, 0)
                    elapsed = (time.perf_counter_ns() - started) / 1000
                    if error:
                        raise RuntimeError(f"InitProducerId answered error {error} ({label})")
                    if index >= 10:  # the first ones warm both paths up
                        figures[label].append(elapsed)
        # Through the proxy every virtual partition has the proxy's port of broker 1.
        with vp_support.KafkaConnection("127.0.0.1", base + 1) as connection:
            figures["first_produce_no_alias"], figures["first_produce_alias"] = [], []
            for index in range(count):
                for label, partition in (("first_produce_no_alias", 0), ("first_produce_alias", PHYSICAL)):
                    producer_id = 700000 + 2 * index + (1 if partition else 0)
                    batch = producer_audit.producer_batch([b"x" * 100], producer_id, 0, 0)
                    started = time.perf_counter_ns()
                    ((_, error, _),) = connection.produce("bench-v0", [(partition, batch)])
                    figures[label].append((time.perf_counter_ns() - started) / 1000)
                    if error:
                        raise RuntimeError(f"Produce answered error {error} ({label})")
        return figures
    finally:
        proxy.stop()
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


def print_tls_summary(rounds: list[dict], names: list[str], per_round, sat, tls_rate: str) -> None:
    """The TLS rows against each other and against their plaintext twins, the middles' CPU
    split between user and system, and the handshake rates."""
    print(f"TLS rows: TLS 1.3 {TLS_CIPHERSUITE} on every hop, V == P, the broker behind a TLS front (HAProxy, "
          f"not counted); paced at {tls_rate} records/s; their 'vs HAProxy' is against haproxy-tls and "
          f"'+p99 vs direct' against plaintext direct at that rate.")
    if "haproxy-tls" in names and "proxy-tls" in names:
        cpu = per_round("proxy-tls", lambda r, n: sat(r, n).cpu_s_per_gb / sat(r, "haproxy-tls").cpu_s_per_gb)
        mb = per_round("proxy-tls", lambda r, n: sat(r, n).throughput_mb_s / sat(r, "haproxy-tls").throughput_mb_s)
        print(f"proxy-tls vs haproxy-tls (bar: CPU s/GB no more than HAProxy's): CPU s/GB {spread(cpu)}, "
              f"throughput {spread(mb)}")
    for tls, plain in (("haproxy-tls", "haproxy"), ("proxy-tls", "proxy-vp")):
        if tls in names and plain in names:
            cost = per_round(tls, lambda r, n: sat(r, n).cpu_s_per_gb / sat(r, plain).cpu_s_per_gb)
            print(f"{tls} vs {plain} (what TLS costs the middle): CPU s/GB {spread(cost)}")
    split = []
    for name in names:
        if name in ("haproxy", "proxy-vp") or name in TLS_NAMES:
            user = per_round(name, lambda r, n: sat(r, n).middle_user_s / (sat(r, n).moved_bytes / 1e9))
            system = per_round(name, lambda r, n: sat(r, n).middle_sys_s / (sat(r, n).moved_bytes / 1e9))
            split.append(f"{name} {spread(user).split(' ')[0]} + {spread(system).split(' ')[0]}")
    print(f"middle CPU s/GB, user + system: {'; '.join(split)}")
    for mode, what in (("handshake", "full handshake, then close"),
                       ("request", "full handshake, one ApiVersions round trip, close")):
        figures = []
        for name in TLS_NAMES:
            runs = [h for r in rounds for h in r["handshakes"] if h.name == name and h.mode == mode]
            if runs:
                figures.append(f"{name} {spread([h.per_core_second for h in runs], 0)} per CPU second "
                               f"({spread([h.connections / h.wall_s for h in runs], 0)}/s wall, "
                               f"{runs[-1].negotiated})")
        if figures:
            print(f"new TLS connections per CPU second of the middle ({what}; one client, sequential): "
                  + "; ".join(figures))


def spread(values: list[float], digits: int = 2) -> str:
    """The median, with the lowest and highest in brackets when there are several."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    middle = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the quick run of `meson test --benchmark`")
    parser.add_argument("--build", default=str(REPO / "build"))
    parser.add_argument("--threads", type=int, default=1, help="proxy (and HAProxy) threads")
    parser.add_argument("--record-bytes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=None, help="length of each load run")
    parser.add_argument("--runs", type=int, default=None, help="rounds (medians are printed)")
    parser.add_argument("--load-cpus", default=None, help="pin generators and broker (taskset list, e.g. 0)")
    parser.add_argument("--middle-cpus", default=None, help="pin HAProxy / the proxy (taskset list, e.g. 1)")
    parser.add_argument("--paced-linger-ms", type=int, default=5,
                        help="producer linger.ms of the fixed-rate runs (librdkafka 2.0 default: 5, as at saturation)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1-vs-2-thread run")
    parser.add_argument("--topologies", default=None,
                        help=f"comma-separated subset of {','.join(ALL_NAMES)} (default: all)")
    parser.add_argument("--handshake-seconds", type=float, default=None,
                        help="length of each TLS handshake measurement (default 2, 4 without --short)")
    parser.add_argument("--out", default=None, help="write every round's figures as JSON here")
    args = parser.parse_args()
    build = Path(args.build)
    args.proxy = str(build / "proxy" / "kafka-partition-proxy")
    args.broker = str(build / "bench" / "kpp-mem-broker")
    args.loadgen = str(build / "bench" / "kpp-loadgen")
    args.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    seconds = args.seconds or (4.0 if args.short else 15.0)
    runs = args.runs or (1 if args.short else 3)
    for binary in (args.proxy, args.broker, args.loadgen):
        if not os.access(binary, os.X_OK):
            print(f"missing {binary}: build first", file=sys.stderr)
            return 1
    names = list(ALL_NAMES)
    if args.topologies:
        names = [name.strip() for name in args.topologies.split(",") if name.strip()]
        unknown = [name for name in names if name not in ALL_NAMES]
        if unknown or not names:
            print(f"--topologies: unknown {unknown}; choose from {', '.join(ALL_NAMES)}", file=sys.stderr)
            return 2
        names = [name for name in ALL_NAMES if name in names]
    if not os.access(args.haproxy, os.X_OK):
        # The TLS topologies need it too: it is the broker's TLS front.
        print("haproxy not installed (tools/setup.sh installs it): the haproxy and TLS rows are left out",
              file=sys.stderr)
        names = [name for name in names if name != "haproxy" and name not in TLS_NAMES]
    if not shutil.which("openssl") and any(name in TLS_NAMES for name in names):
        print("the openssl command is missing (it makes the TLS rows' certificates): the TLS rows are left out",
              file=sys.stderr)
        names = [name for name in names if name not in TLS_NAMES]
    if not names:
        return 1
    tls_names = [name for name in names if name in TLS_NAMES]
    plain_names = [name for name in names if name not in TLS_NAMES]
    handshake_seconds = args.handshake_seconds or (2.0 if args.short else 4.0)
    work = Path(tempfile.mkdtemp(prefix="kpp-bench-"))
    args.pki = make_pki(work) if tls_names else None
    pins = (f", load on CPUs {args.load_cpus or 'any'}, middle on CPUs {args.middle_cpus or 'any'}"
            if args.load_cpus or args.middle_cpus else "")
    print(f"kpp bench: {runs} round(s), {seconds:.0f} s per load run, {args.record_bytes}-byte records, "
          f"middle threads {args.threads}{pins}; logs in {work}", flush=True)

    def half_slowest(saturated: dict, group: list[str]) -> int | None:
        return int(min(saturated[name].load.get("achieved_rate", 0) for name in group) / 2) if group else None

    rounds = []
    for round_number in range(runs):
        tag = f"-r{round_number}"
        saturated = {name: run_topology(name, args, work, 0, seconds, tag=tag) for name in names}
        # The plaintext rows are paced as before (half the slowest plaintext topology), so
        # adding the TLS rows changes none of their figures; the TLS rows at the same rate
        # when both TLS middles sustain it, else at half the slower one's saturation.
        rate = half_slowest(saturated, plain_names)
        tls_rate = half_slowest(saturated, tls_names)
        if rate is not None and tls_rate is not None:
            tls_rate = min(rate, tls_rate)
        paced = {name: run_topology(name, args, work, tls_rate if name in TLS_NAMES else rate, seconds, tag=tag)
                 for name in names}
        # Added latency of the TLS rows is against direct at their rate.
        direct_at_tls_rate = None
        if "direct" in names and tls_names:
            direct_at_tls_rate = paced["direct"] if tls_rate == rate else \
                run_topology("direct", args, work, tls_rate, seconds, tag=f"{tag}-tls-rate")
        handshakes = [run for name in tls_names for run in handshake_rates(name, args, work, handshake_seconds, tag)]
        rounds.append({"rate": rate, "tls_rate": tls_rate, "saturated": saturated, "paced": paced,
                       "direct_at_tls_rate": direct_at_tls_rate, "handshakes": handshakes})
        paced_at = ([f"paced at {rate} records/s"] if plain_names else []) + \
                   ([f"TLS rows at {tls_rate}"] if tls_names else [])
        print(f"  round {round_number + 1}: done ({', '.join(paced_at)})", flush=True)
    scaling = []
    if not args.no_scaling:
        for round_number in range(runs):
            one = run_topology("proxy-vp", args, work, 0, seconds, threads=1, generators=2, tag=f"-t1-r{round_number}")
            two = run_topology("proxy-vp", args, work, 0, seconds, threads=2, generators=2, tag=f"-t2-r{round_number}")
            scaling.append((one, two))
    before, after = idle_connections_rss(args, work, 1000)
    producer_ids = producer_id_latencies(args, work, 100 if args.short else 300)

    def per_round(name: str, figure) -> list[float]:
        values = []
        for r in rounds:
            try:
                values.append(figure(r, name))
            except (KeyError, TypeError, ZeroDivisionError):
                pass
        return values

    def sat(r, name):
        return r["saturated"][name]

    def lat(r, name, key):
        return r["paced"][name].load[key]

    def direct_lat(r, name, key):
        """direct's figure at the rate `name` was paced at."""
        reference = r["direct_at_tls_rate"] if name in TLS_NAMES else r["paced"]["direct"]
        if reference is None:
            raise KeyError("direct")
        return reference.load[key]

    def l4(name: str) -> str:
        """The HAProxy row a row's CPU is compared with: TLS with TLS, plaintext with plaintext."""
        return "haproxy-tls" if name in TLS_NAMES else "haproxy"

    print(f"{'topology':<14} {'MB/s':>6} {'vs direct':>17} {'ack p50':>7} {'ack p99':>7} {'+p99 vs direct':>17} "
          f"{'ack p99.9':>9} {'e2e p99':>7} {'CPU s/GB':>8} {'vs HAProxy':>17} {'RSS MB':>6}")
    for name in names:
        mb = per_round(name, lambda r, n: sat(r, n).throughput_mb_s)
        vs_direct = per_round(name, lambda r, n: sat(r, n).throughput_mb_s / sat(r, "direct").throughput_mb_s)
        added = per_round(name, lambda r, n: lat(r, n, "ack_p99_us") - direct_lat(r, n, "ack_p99_us"))
        cpu = per_round(name, lambda r, n: sat(r, n).cpu_s_per_gb)
        vs_l4 = per_round(name, lambda r, n: sat(r, n).cpu_s_per_gb / sat(r, l4(n)).cpu_s_per_gb) \
            if l4(name) in names and name != "direct" else []
        rss = per_round(name, lambda r, n: sat(r, n).middle_rss_peak_kb / 1024)
        med = lambda key: spread(per_round(name, lambda r, n: lat(r, n, key)), 0).split(" ")[0]  # noqa: E731
        print(f"{name:<14} {spread(mb, 0).split(' ')[0]:>6} {spread(vs_direct):>17} {med('ack_p50_us'):>7} "
              f"{med('ack_p99_us'):>7} {spread(added, 0) if name != 'direct' else '-':>17} {med('ack_p999_us'):>9} "
              f"{med('e2e_p99_us'):>7} {spread(cpu).split(' ')[0]:>8} {spread(vs_l4) if vs_l4 else '-':>17} "
              f"{spread(rss, 1).split(' ')[0]:>6}")
    rates = [r["rate"] for r in rounds]
    print(f"MB/s: produce + consume at saturation. Latency (microseconds; ack = produce acknowledgement, "
          f"e2e = produce to consume) at {spread(rates, 0)} records/s, half of the slowest topology's "
          f"saturation in each round, linger.ms {args.paced_linger_ms}. Ratios: median of the rounds' ratios (lowest-highest).")
    if tls_names:
        print_tls_summary(rounds, names, per_round, sat, spread([r["tls_rate"] for r in rounds], 0))
    if scaling:
        ratios = [two.throughput_mb_s / one.throughput_mb_s for one, two in scaling if one.throughput_mb_s]
        print(f"proxy threads (V == P, 2 generators at saturation): 1 thread "
              f"{spread([one.throughput_mb_s for one, _ in scaling], 0)} MB/s, 2 threads "
              f"{spread([two.throughput_mb_s for _, two in scaling], 0)} MB/s, ratio {spread(ratios)}; "
              f"CPU s/GB {spread([one.cpu_s_per_gb for one, _ in scaling])} -> "
              f"{spread([two.cpu_s_per_gb for _, two in scaling])}; proxy CPU use "
              f"{spread([one.middle_cores for one, _ in scaling])} -> "
              f"{spread([two.middle_cores for _, two in scaling])} cores")
    # Per core, CPU-time based (it needs no idle core: on 2 cores the generator competes with
    # the proxy, so MB/s at saturation understates what a dedicated core would carry).
    for name in [n for n in names if n.startswith("proxy")]:
        records = per_round(name, lambda r, n: sat(r, n).moved_bytes / args.record_bytes / sat(r, n).middle_cpu_s)
        mb = per_round(name, lambda r, n: sat(r, n).moved_bytes / 1e6 / sat(r, n).middle_cpu_s)
        if records:
            print(f"per proxy core at saturation, {name}: {spread(records, 0)} records (produced + consumed) "
                  f"per CPU-second, {spread(mb, 0)} MB per CPU-second")
    if "proxy-vp-spin" in names and "proxy-vp" in names and "direct" in names:
        def added(name):
            return per_round(name, lambda r, n: lat(r, n, "ack_p99_us") - direct_lat(r, n, "ack_p99_us"))

        def paced_cores(name):
            return per_round(name, lambda r, n: r["paced"][n].middle_cores)
        print(f"spin before sleep ({SPIN_US} us) at the paced rate: added ack p99 over direct "
              f"{spread(added('proxy-vp'), 0)} us without, {spread(added('proxy-vp-spin'), 0)} us with; proxy CPU "
              f"{spread(paced_cores('proxy-vp'))} -> {spread(paced_cores('proxy-vp-spin'))} cores")
    if "proxy-v10-idem" in names and "proxy-v10" in names:
        idem_mb = per_round("proxy-v10-idem",
                            lambda r, n: sat(r, n).throughput_mb_s / sat(r, "proxy-v10").throughput_mb_s)
        idem_cpu = per_round("proxy-v10-idem", lambda r, n: sat(r, n).cpu_s_per_gb / sat(r, "proxy-v10").cpu_s_per_gb)
        print(f"idempotence on vs off at V = 10P (bar: within 10%): throughput {spread(idem_mb)}, "
              f"CPU s/GB {spread(idem_cpu)}")

    def quantiles(samples: list[float]) -> str:
        ordered = sorted(samples)
        return f"p50 {statistics.median(ordered):.0f} us, p99 {ordered[int(len(ordered) * 0.99) - 1]:.0f} us"

    print(f"InitProducerId ({len(producer_ids['init_direct'])} on one connection): direct "
          f"{quantiles(producer_ids['init_direct'])}; through the proxy {quantiles(producer_ids['init_proxy'])}; "
          f"median ratio {statistics.median(producer_ids['init_proxy']) / statistics.median(producer_ids['init_direct']):.2f}")
    print(f"first Produce of a new idempotent producer through the proxy: virtual group 0 (no alias) "
          f"{quantiles(producer_ids['first_produce_no_alias'])}; group 1 (alias resolved first) "
          f"{quantiles(producer_ids['first_produce_alias'])}")
    print(f"1000 idle client connections: proxy RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "seconds": seconds, "record_bytes": args.record_bytes, "threads": args.threads,
            "load_cpus": args.load_cpus, "middle_cpus": args.middle_cpus,
            "rounds": [{"rate": r["rate"], "tls_rate": r["tls_rate"],
                        "saturated": {n: x.as_json() for n, x in r["saturated"].items()},
                        "paced": {n: x.as_json() for n, x in r["paced"].items()},
                        "direct_at_tls_rate": r["direct_at_tls_rate"].as_json() if r["direct_at_tls_rate"] else None,
                        "handshakes": {f"{h.name} {h.mode}": h.as_json() for h in r["handshakes"]}}
                       for r in rounds],
            "scaling": [{"threads_1": one.as_json(), "threads_2": two.as_json()} for one, two in scaling],
            "idle_rss_kb": {"before": before, "after_1000": after},
            "producer_id_latencies_us": producer_ids}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
