"""Test-bed helpers for the end-to-end tests (DESIGN.md section 5).

Upstreams: the librdkafka 2.0.2 mock cluster (tools/mock_cluster.cc, `kpp-mock-cluster`) and the
librdkafka 2.12 mock cluster inside Node (tools/node/mock_cluster.js). Clients: kcat,
confluent-kafka and kafka-python (Debian's /usr/bin/python3), node-rdkafka and kafkajs
(tools/node/kpp_client.js).

Environment:
  KPP_PROXY_BIN         the proxy executable
  KPP_MOCK_CLUSTER_BIN  the kpp-mock-cluster launcher (default: build/tools/kpp-mock-cluster)
  KPP_NODE_DIR          the Node cache with node_modules (default: tools/setup.sh --print-node-dir)
  KPP_E2E_DIRECT=1      run the clients against the mocks directly (no proxy) to validate tests
  KPP_E2E_KEEP_LOGS=1   keep the log directory even when everything passed
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_TOOLS_DIR = REPO_ROOT / "tools" / "node"
PROXY_READY_TIMEOUT_S = 20.0
PROXY_SHUTDOWN_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 15.0
CLIENT_TIMEOUT_S = 60.0
OFFSET_STORE_TOPIC = "__kpr_offsets"
# Same as the mocks' auto-create default, so both upstreams look alike to the proxy.
OFFSET_STORE_PARTITIONS = 4


def direct_mode() -> bool:
    return os.environ.get("KPP_E2E_DIRECT", "") not in ("", "0")


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}-{random.randrange(10**6)}"


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               interval_s: float = 0.1, describe: Callable[[], str] | None = None):
    """Polls predicate until it returns a truthy value; fails the test after timeout_s,
    with describe()'s account of the state then when given."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            if describe is not None:
                detail += f"; {describe()}"
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(interval_s)


# ---------------------------------------------------------------------------------------------
# Ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_base(count: int) -> int:
    """A base such that base+1 .. base+count are free, below the ephemeral range (where the
    mocks' listeners and every client socket live) to avoid collisions."""
    for _ in range(1000):
        base = random.randrange(15000, 30000 - count - 1)
        if all(_port_free(base + offset) for offset in range(1, count + 1)):
            return base
    raise RuntimeError("no free port block found")


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    pairs = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        pairs.append((host, int(port)))
    return pairs


# ---------------------------------------------------------------------------------------------
# Line-oriented child processes (the mock launchers)


class LineProcess:
    """A child whose stdout is read line by line on a thread, so every read has a timeout."""

    def __init__(self, argv: list[str], stderr_path: Path, env: dict | None = None):
        self.argv = argv
        self.stderr_path = stderr_path
        self._stderr_file = open(stderr_path, "wb")
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr_file,
            env=env, start_new_session=True)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def read_line(self, timeout_s: float) -> str:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"{self.argv[0]}: no output within {timeout_s} s; stderr: "
                                 f"{tail_of(self.stderr_path)}") from None
        if line is None:
            raise AssertionError(f"{self.argv[0]} exited (rc={self.process.poll()}); stderr: "
                                 f"{tail_of(self.stderr_path)}")
        return line

    def command(self, text: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        self.process.stdin.write((text + "\n").encode())
        self.process.stdin.flush()
        reply = self.read_line(timeout_s)
        if not reply.startswith("OK"):
            raise AssertionError(f"{self.argv[0]}: command {text!r} answered {reply!r}")
        return reply

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # EOF asks the launcher to exit
            except OSError:
                pass
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        self._stderr_file.close()
        return self.process.returncode


class MockCluster:
    """An upstream mock cluster. kind is "mock202" (librdkafka 2.0.2 launcher, broker down/up,
    topics of any size) or "mock212" (librdkafka 2.12 in Node, topics auto-create with 4
    partitions)."""

    def __init__(self, kind: str, log_dir: Path, brokers: int = 3):
        self.kind = kind
        self.broker_count = brokers
        if kind == "mock202":
            launcher = private_alias(mock_cluster_bin(), log_dir, "kpp-e2e-mock202")
            argv = [launcher, "--brokers", str(brokers),
                    "--topic", f"{OFFSET_STORE_TOPIC}:{OFFSET_STORE_PARTITIONS}"]
            env = None
        elif kind == "mock212":
            argv = ["node", str(NODE_TOOLS_DIR / "mock_cluster.js"), "--brokers", str(brokers),
                    "--topic", OFFSET_STORE_TOPIC]
            env = node_env()
        else:
            raise ValueError(kind)
        self.log_path = log_dir / f"{kind}.stderr.log"
        self._process = LineProcess(argv, self.log_path, env=env)
        first = self._process.read_line(30.0)
        if not first.startswith("BOOTSTRAP "):
            raise AssertionError(f"{kind}: expected a BOOTSTRAP line, got {first!r}")
        self.bootstrap = first.split(" ", 1)[1].strip()
        # Both mocks number brokers 1..N and list them in id order.
        self.broker_addresses = {
            node_id: address for node_id, address in
            enumerate(parse_bootstrap(self.bootstrap), start=1)}
        self.ports = {port for _, port in self.broker_addresses.values()}

    @property
    def supports_broker_down(self) -> bool:
        return self.kind == "mock202"

    def create_topic(self, name: str, partitions: int = 10) -> int:
        """Creates a topic and returns its partition count (mock212 always makes 4)."""
        if self.kind == "mock202":
            self._process.command(f"topic {name} {partitions}")
            return partitions
        reply = self._process.command(f"topic {name}")
        return int(reply.split()[-1])

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """mock202 only: the 2.0.2 mock picks each partition's leader at random."""
        self._process.command(f"leader {topic} {partition} {broker_id}")

    def spread_leaders(self, topic: str, partitions: int) -> None:
        """Leads partition p from broker p % N + 1, so every broker leads some of the topic."""
        for partition in range(partitions):
            self.set_leader(topic, partition, partition % self.broker_count + 1)

    def broker_down(self, broker_id: int) -> None:
        self._process.command(f"down {broker_id}")

    def broker_up(self, broker_id: int) -> None:
        self._process.command(f"up {broker_id}")

    def stop(self) -> int:
        return self._process.stop()


# ---------------------------------------------------------------------------------------------
# The proxy


def proxy_bin() -> str:
    explicit = os.environ.get("KPP_PROXY_BIN")
    if explicit:
        return explicit
    return str(REPO_ROOT / "build" / "proxy" / "kafka-partition-proxy")


def mock_cluster_bin() -> str:
    explicit = os.environ.get("KPP_MOCK_CLUSTER_BIN")
    if explicit:
        return explicit
    return str(REPO_ROOT / "build" / "tools" / "kpp-mock-cluster")


class Proxy:
    """kafka-partition-proxy in front of one mock cluster. Without `extra_config` the config
    has no mapping (everything passes through); `extra_config` is YAML appended to the file,
    e.g. a `mapping:` section; `listen_extra` goes under `listen:` (e.g. `security:`),
    `kafka_extra` under `kafka:` (e.g. `security_protocol:` and `tls:`)."""

    def __init__(self, upstream: MockCluster, log_dir: Path, name: str, extra_config: str = "",
                 listen_extra: str = "", kafka_extra: str = ""):
        self.upstream = upstream
        self.extra_config = extra_config
        self.listen_extra = listen_extra  # YAML lines under `listen:`, indented two spaces
        self.kafka_extra = kafka_extra    # YAML lines under `kafka:`, indented two spaces
        self.port = free_port()
        self.metrics_port = free_port()
        self.broker_port_base = free_port_base(upstream.broker_count)
        self.config_path = log_dir / f"{name}.yaml"
        self.log_path = log_dir / f"{name}.log"
        self.config_path.write_text(self._config_text())
        self._log_file = open(self.log_path, "wb")
        binary = proxy_bin()
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"proxy binary {binary} not found (set KPP_PROXY_BIN, or "
                                 f"KPP_E2E_DIRECT=1 to test against the mocks alone)")
        self.process = subprocess.Popen(
            [private_alias(binary, log_dir, "kpp-e2e-proxy"), "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            # Every message of a schema'd API is walked against the schema files.
            env={**os.environ, "KPP_VERIFY_PROTOCOL": "1"})
        self.exit_code: int | None = None
        self._wait_ready()

    def _config_text(self) -> str:
        upstream = ", ".join(f'"{host}:{port}"'
                             for host, port in self.upstream.broker_addresses.values())
        return (
            "threads: 2\n"
            "listen:\n"
            f'  address: "127.0.0.1:{self.port}"\n'
            f"  broker_port_base: {self.broker_port_base}\n"
            + self.listen_extra +
            "kafka:\n"
            f"  bootstrap_servers: [{upstream}]\n"
            + self.kafka_extra +
            "metrics:\n"
            f'  address: "127.0.0.1:{self.metrics_port}"\n'
            "logging: { level: debug }\n"
            + self.extra_config)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def broker_port(self, node_id: int) -> int:
        return self.broker_port_base + node_id

    def http_get(self, path: str, timeout_s: float = 3.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def _wait_ready(self) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"proxy exited during start-up with rc="
                                     f"{self.process.returncode}; log:\n{self.log_tail()}")
            try:
                return self.http_get("/ready", timeout_s=1.0)[0] == 200
            except OSError:
                return False
        try:
            wait_until(ready, PROXY_READY_TIMEOUT_S, "proxy /ready")
        except AssertionError:
            self.kill()
            raise

    def log_tail(self, lines: int = 80) -> str:
        self._log_file.flush()
        return tail_of(self.log_path, lines)

    def stop(self) -> int:
        """SIGTERM, then waits for the shutdown deadline; returns the exit code (-9: killed)."""
        if self.exit_code is not None:
            return self.exit_code
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=PROXY_SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                self.exit_code = -9
                return self.exit_code
        self.exit_code = self.process.returncode
        self._log_file.close()
        return self.exit_code

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def private_alias(binary: str, log_dir: Path, alias: str) -> str:
    """A symlink to binary under a test-only name. Other people on the same machine stop their
    own proxies and mocks by name (pkill kafka-partition-proxy); under this name ours are not
    caught by that, and a process that does die is reported as such."""
    link = log_dir / alias
    if not link.exists():
        link.symlink_to(Path(binary).resolve())
    return str(link)


def tail_of(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Endpoint:
    """What a test talks to: the proxy in front of an upstream mock, or the mock itself in
    direct mode."""

    upstream: MockCluster
    proxy: Proxy | None

    @property
    def direct(self) -> bool:
        return self.proxy is None

    @property
    def kind(self) -> str:
        return self.upstream.kind

    @property
    def bootstrap(self) -> str:
        return self.upstream.bootstrap if self.proxy is None else self.proxy.bootstrap

    def expected_brokers(self) -> dict[int, tuple[str, int]]:
        """node id -> (host, port) the clients must see in metadata."""
        if self.proxy is None:
            return dict(self.upstream.broker_addresses)
        return {node_id: ("127.0.0.1", self.proxy.broker_port(node_id))
                for node_id in self.upstream.broker_addresses}

    def create_topic(self, prefix: str, partitions: int = 10) -> tuple[str, int]:
        name = unique_name(prefix)
        return name, self.upstream.create_topic(name, partitions)


# ---------------------------------------------------------------------------------------------
# Expected data and checks


def expected_values(prefix: str, partitions: int, count: int) -> dict[int, list[str]]:
    return {p: [f"{prefix}-{p}-{i}" for i in range(count)] for p in range(partitions)}


def check_partition_streams(received: Iterable[tuple[int, int, str]],
                            expected: dict[int, list[str]]) -> None:
    """received: (partition, offset, value) in consumption order. Each partition must hold
    exactly its expected values, in order, at increasing offsets."""
    by_partition: dict[int, list[tuple[int, str]]] = {}
    for partition, offset, value in received:
        by_partition.setdefault(partition, []).append((offset, value))
    assert set(by_partition) <= set(expected), \
        f"records from unexpected partitions {sorted(set(by_partition) - set(expected))}"
    for partition, values in expected.items():
        got = by_partition.get(partition, [])
        offsets = [offset for offset, _ in got]
        assert offsets == sorted(set(offsets)), \
            f"partition {partition}: offsets not strictly increasing: {offsets[:20]}"
        got_values = [value for _, value in got]
        assert got_values == values, (
            f"partition {partition}: expected {len(values)} records {values[:5]}..., got "
            f"{len(got_values)}: {got_values[:5]}...")


# ---------------------------------------------------------------------------------------------
# kcat


GOPATH_DEBIAN = Path("/usr/share/gocode")


def go_binary(log_dir: Path, source: Path, name: str, packages: dict[str, str]) -> str:
    """source built once per log directory with Go offline against Debian's GOPATH
    (GO111MODULE=off); skips the test where Go or one of packages (import path -> Debian
    package) is not installed."""
    import pytest

    binary = log_dir / name
    if binary.exists():
        return str(binary)
    if shutil.which("go") is None:
        pytest.skip("go is not installed (tools/setup.sh installs golang-go)")
    for import_path, debian_package in packages.items():
        if not (GOPATH_DEBIAN / "src" / import_path).is_dir():
            pytest.skip(f"{import_path} is not installed ({debian_package})")
    env = {**os.environ, "GOPATH": str(GOPATH_DEBIAN), "GO111MODULE": "off",
           "GOCACHE": str(log_dir / "go-cache"), "GOFLAGS": ""}
    run_checked(["go", "build", "-o", str(binary), str(source)], timeout_s=300, env=env)
    return str(binary)


def sarama_binary(log_dir: Path) -> str:
    """tools/sarama/vp_sarama.go (sarama 1.22, Debian's package, with xdg-go/scram for its
    SCRAM option) built once per log directory; skips the test where Go or they are not
    installed."""
    return go_binary(log_dir, REPO_ROOT / "tools" / "sarama" / "vp_sarama.go", "vp-sarama", {
        "github.com/Shopify/sarama": "golang-github-shopify-sarama-dev",
        "github.com/xdg-go/scram": "golang-github-xdg-go-scram-dev"})


def scram_front_binary(log_dir: Path) -> str:
    """tools/scram_front/scram_front.go (a Kafka SASL/SCRAM front on xdg-go/scram's server)
    built once per log directory; skips the test where Go or xdg-go/scram is not installed."""
    return go_binary(log_dir, REPO_ROOT / "tools" / "scram_front" / "scram_front.go", "scram-front", {
        "github.com/xdg-go/scram": "golang-github-xdg-go-scram-dev"})


def run_checked(argv: list[str], timeout_s: float = CLIENT_TIMEOUT_S, input_bytes=None,
                env=None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, input=input_bytes, capture_output=True,
                                timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{argv[0]} did not finish within {timeout_s} s: {argv}\n"
                             f"stderr: {error.stderr!r}") from None
    if result.returncode != 0:
        raise AssertionError(f"{argv} failed rc={result.returncode}\n"
                             f"stdout: {result.stdout[-2000:]!r}\nstderr: "
                             f"{result.stderr[-2000:]!r}")
    return result


def kcat_metadata(bootstrap: str, topic: str | None = None) -> tuple[dict, str]:
    argv = ["kcat", "-b", bootstrap, "-L", "-J", "-m", "15"]
    if topic:
        argv += ["-t", topic]
    result = run_checked(argv, timeout_s=30)
    text = result.stdout.decode()
    return json.loads(text), text


def kcat_produce(bootstrap: str, topic: str, partition: int, values: list[str]) -> None:
    payload = "".join(value + "\n" for value in values).encode()
    result = run_checked(["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", str(partition),
                          "-X", "acks=all", "-X", "message.timeout.ms=20000"],
                         input_bytes=payload, timeout_s=40)
    assert b"fail" not in result.stderr.lower(), result.stderr


def kcat_consume(bootstrap: str, topic: str, partition: int) -> list[tuple[int, int, str]]:
    result = run_checked(["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", str(partition),
                          "-o", "beginning", "-e", "-J", "-m", "15"], timeout_s=40)
    records = []
    for line in result.stdout.decode().splitlines():
        if line.strip():
            message = json.loads(line)
            records.append((message["partition"], message["offset"], message["payload"]))
    return records


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka 2.0.2)


def confluent_produce(bootstrap: str, topic: str, expected: dict[int, list[str]],
                      extra_config: dict | None = None,
                      flush_timeout_s: float = 30.0) -> tuple[list, list]:
    """Produces expected[p] to each partition p; returns (acked, failed) as lists of
    (partition, offset, value) and (partition, value, error)."""
    import confluent_kafka

    config = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
              "message.timeout.ms": 20000}
    config.update(extra_config or {})
    producer = confluent_kafka.Producer(config)
    acked, failed = [], []

    def on_delivery(error, message):
        value = message.value().decode()
        if error is None:
            acked.append((message.partition(), message.offset(), value))
        else:
            failed.append((message.partition(), value, str(error)))

    for partition, values in expected.items():
        for index, value in enumerate(values):
            producer.produce(topic, value=value.encode(), key=f"k-{index}".encode(),
                             partition=partition, on_delivery=on_delivery)
            producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    assert remaining == 0, f"confluent-kafka producer: {remaining} records still in flight " \
                           f"after {flush_timeout_s} s"
    return acked, failed


def confluent_consume_assigned(bootstrap: str, topic: str, partitions: int, expect: int,
                               timeout_s: float = CLIENT_TIMEOUT_S,
                               drain_s: float = 0.0) -> list:
    """Reads partitions 0..partitions-1 from the beginning until expect records arrived (or
    timeout_s), then for drain_s more seconds to catch anything extra (duplicates)."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique_name("kpp-assign"),
        "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, p,
                                                        confluent_kafka.OFFSET_BEGINNING)
                         for p in range(partitions)])
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append((message.partition(), message.offset(), message.value().decode()))
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                records.append((message.partition(), message.offset(),
                                message.value().decode()))
        return records
    finally:
        consumer.close()


def confluent_end_offsets(consumer, topic: str, partitions: int) -> dict[int, int]:
    return {p: consumer.get_watermark_offsets(
        __import__("confluent_kafka").TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)}


# ---------------------------------------------------------------------------------------------
# kafka-python 2.0.2


def kafka_python_produce(bootstrap: str, topic: str, expected: dict[int, list[str]]) -> list:
    import kafka

    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                   request_timeout_ms=15000, max_block_ms=20000)
    acked = []
    try:
        futures = []
        for partition, values in expected.items():
            for index, value in enumerate(values):
                futures.append((value, producer.send(topic, value=value.encode(),
                                                     key=f"k-{index}".encode(),
                                                     partition=partition)))
        producer.flush(timeout=30)
        for value, future in futures:
            metadata = future.get(timeout=30)
            acked.append((metadata.partition, metadata.offset, value))
    finally:
        producer.close(timeout=10)
    return acked


def kafka_python_consume_assigned(bootstrap: str, topic: str, partitions: int, expect: int,
                                  timeout_s: float = CLIENT_TIMEOUT_S) -> list:
    import kafka

    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                   auto_offset_reset="earliest", group_id=None,
                                   request_timeout_ms=15000)
    try:
        consumer.assign([kafka.TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((m.partition, m.offset, m.value.decode()) for m in batch)
        return records
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# Node clients (node-rdkafka with librdkafka 2.12, kafkajs)


_node_dir_cache: list[str] = []


def node_dir() -> str:
    if not _node_dir_cache:
        explicit = os.environ.get("KPP_NODE_DIR")
        if explicit:
            _node_dir_cache.append(explicit)
        else:
            result = run_checked(["bash", str(REPO_ROOT / "tools" / "setup.sh"),
                                  "--print-node-dir"], timeout_s=30)
            _node_dir_cache.append(result.stdout.decode().strip())
    return _node_dir_cache[0]


def node_env() -> dict:
    modules = Path(node_dir()) / "node_modules"
    addon = modules / "node-rdkafka" / "build" / "Release" / "node-librdkafka.node"
    if not addon.exists():
        raise AssertionError(f"node-rdkafka not installed at {modules}: run tools/setup.sh")
    env = dict(os.environ)
    env["NODE_PATH"] = str(modules)
    return env


def node_client(lib: str, op: str, bootstrap: str, timeout_s: float = CLIENT_TIMEOUT_S,
                script: str = "kpp_client.js", allow_error: bool = False, **options) -> list[dict]:
    """Runs a Node client of tools/node (kpp_client.js unless `script` says otherwise) and
    returns its JSON lines (the last is "done"). Fails the test when the client fails,
    unless allow_error (then the "done" line tells)."""
    argv = ["node", str(NODE_TOOLS_DIR / script), lib, op, "--bootstrap", bootstrap,
            "--timeout-ms", str(int(timeout_s * 1000))]
    for key, value in options.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout_s + 15,
                                env=node_env())
    except subprocess.TimeoutExpired:
        raise AssertionError(f"node client hung: {argv}") from None
    lines = []
    for line in result.stdout.decode(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    done = lines[-1] if lines and lines[-1].get("type") == "done" else None
    failed = result.returncode != 0 or done is None or done.get("error") or done.get("timed_out")
    assert done is not None and (allow_error or not failed), (
        f"{lib} {op} failed rc={result.returncode} done={done}\nargv: {argv}\n"
        f"stderr: {result.stderr.decode(errors='replace')[-3000:]}")
    return lines


def node_records(lines: list[dict], kind: str) -> list[tuple[int, int, str]]:
    return [(line["partition"], int(line["offset"]), line["value"])
            for line in lines if line.get("type") == kind]
