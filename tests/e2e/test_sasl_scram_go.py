"""The proxy's SCRAM against an independent SCRAM implementation: xdg-go/scram (Go, Debian's
golang-github-xdg-go-scram-dev), on both sides of the proxy (issue 13).

Toward brokers (the proxy as SCRAM client): kpp-mem-broker behind tools/scram_front, a Kafka
SASL front whose SCRAM server is xdg-go/scram's, with keys xdg derives from the password.
A proxy with kafka.security_protocol SASL_PLAINTEXT and SCRAM-SHA-256 or SCRAM-SHA-512
authenticates to it; confluent-kafka produces to every virtual partition of a vp- topic and
reads them back exactly; the proxy counts successful broker authentications and the front
logs each one. A wrong password, a mechanism the front does not enable, or a front that
accepts the proof but signs with another password's server key keeps the proxy from ever
becoming ready, with a log line naming the cause; that last front behind the advertised
broker only (start-up meets a right one) is refused by the data path's connections too.
A control first shows the front serving kafka-python (SaslHandshake v0, raw tokens) and
sarama (SaslAuthenticate v0), so a failure with the proxy is the proxy's.

Toward clients (the proxy as SCRAM server): sarama 1.22 (tools/sarama/vp_sarama.go) with
xdg-go/scram's client, which checks the proxy's server signature, authenticates to a
SASL_PLAINTEXT listener: with SCRAM-SHA-256 as a user given by password, with SCRAM-SHA-512
as a user given only as keys that xdg-go/scram derived. It produces to every virtual
partition and reads a spread of them back exactly; a wrong password is refused with
SASL_AUTHENTICATION_FAILED, reported by sarama as an error rather than a hang.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from pathlib import Path

import pytest

import kpp_testbed as tb
import producer_audit
from conftest import VIRTUAL_MAPPING_202
from tls_support import samples

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="SASL is the proxy's own")

PHYSICAL, VIRTUAL, PER_PARTITION = 10, 100, 2
FRONT_USER, FRONT_PASSWORD = "kpp-proxy", "Front-Secret-7"
ALICE_PASSWORD, BOB_PASSWORD, CAROL_PASSWORD = "alice-Go-Secret-1", "bob-Go-Secret-2", "carol-Go-Secret-3"
READ_BACK = [0, 1, 9, 10, 37, 55, 90, 99]  # first, last and inner ones of several groups


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# ---------------------------------------------------------------------------------------------
# Toward brokers: the proxy's SCRAM client against xdg-go/scram's server


class ScramFrontedBroker:
    """kpp-mem-broker behind scram_front; shaped like the other upstreams of
    kpp_testbed.Proxy (bootstrap, broker_addresses, broker_count). With data_extra the broker
    advertises a second front, started with those arguments, while the first stays the
    bootstrap server: the proxy's start-up and its data path then meet different fronts."""

    def __init__(self, binary: str, log_dir: Path, topics: dict[str, int], name: str,
                 mechanisms: str = "SCRAM-SHA-256,SCRAM-SHA-512", extra: tuple[str, ...] = (),
                 data_extra: tuple[str, ...] | None = None):
        self.front_port = tb.free_port()
        data_port = self.front_port
        while data_extra is not None and data_port == self.front_port:
            data_port = tb.free_port()
        self.broker = producer_audit.StrictBroker(log_dir, topics, strict=False, name=f"{name}-broker",
                                                  advertise=f"127.0.0.1:{data_port}")
        self.log_path = log_dir / f"{name}-scram-front.log"
        self.data_log_path = self.log_path if data_extra is None else log_dir / f"{name}-scram-front-data.log"
        self._fronts: list[tb.LineProcess] = []
        try:
            self._start_front(binary, self.front_port, self.log_path, mechanisms, extra)
            if data_extra is not None:
                self._start_front(binary, data_port, self.data_log_path, mechanisms, data_extra)
        except AssertionError:
            self.stop()
            raise
        self.kind = "mem-broker"
        self.broker_count = 1
        self.bootstrap = f"127.0.0.1:{self.front_port}"
        self.broker_addresses = {1: ("127.0.0.1", self.front_port)}  # what the proxy bootstraps from

    def _start_front(self, binary: str, port: int, log_path: Path, mechanisms: str, extra: tuple[str, ...]) -> None:
        front = tb.LineProcess(
            [binary, "--listen", f"127.0.0.1:{port}={self.broker.bootstrap}", "--user", FRONT_USER,
             "--password", FRONT_PASSWORD, "--mechanisms", mechanisms, "--exit-on-eof", *extra], log_path)
        self._fronts.append(front)
        assert front.read_line(15).startswith(f"LISTENING 127.0.0.1:{port} -> ")
        assert front.read_line(15) == "READY"

    def create_topic(self, name: str, partitions: int = 10) -> int:
        return self.broker.create_topic(name, partitions)

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        for front in self._fronts:
            front.stop()
        self.broker.stop()


def upstream_scram(mechanism: str, password: str = FRONT_PASSWORD) -> str:
    return ("  security_protocol: SASL_PLAINTEXT\n"
            f"  sasl:\n    mechanism: {mechanism}\n    username: {FRONT_USER}\n    password: {password}\n")


@pytest.fixture(scope="module")
def scram_front(log_dir) -> str:
    return tb.scram_front_binary(log_dir)


def raw_request(sock: socket.socket, api_key: int, version: int, body: bytes, flexible: bool = False) -> bytes:
    """One request (header v1, v2 when flexible); the response after its correlation id."""
    header = struct.pack(">hhih", api_key, version, 7, 3) + b"raw" + (b"\0" if flexible else b"")
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    response = recv_exact(sock, size)
    assert struct.unpack(">i", response[:4])[0] == 7
    return response[4:]


def recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed by the front")
        data += chunk
    return data


def test_the_front_serves_other_scram_clients(scram_front, sarama, tmp_path):
    """A control for the tests after it: the front answers ApiVersions v0 and v3 itself and
    lets kafka-python (SaslHandshake v0, raw SCRAM tokens) and sarama (SaslAuthenticate v0)
    through to the broker, so a failure with the proxy is the proxy's."""
    topic = tb.unique_name("vp-scram-go-front")
    upstream = ScramFrontedBroker(scram_front, tmp_path, {topic: PHYSICAL}, "scram-control")
    try:
        with socket.create_connection(("127.0.0.1", upstream.front_port), timeout=10) as sock:
            body = raw_request(sock, 18, 0, b"")
            count = struct.unpack(">i", body[2:6])[0]
            v0 = {struct.unpack(">h", body[6 + 6 * i:8 + 6 * i])[0]: struct.unpack(">hh", body[8 + 6 * i:12 + 6 * i])
                  for i in range(count)}
            assert body[:2] == b"\0\0" and v0 == {18: (0, 3), 17: (0, 1), 36: (0, 2)}, v0
            body = raw_request(sock, 18, 3, b"\x04kpp\x021\0", flexible=True)
            assert body[:3] == b"\0\0\x04", body  # no error, a compact array of 3
            v3 = {struct.unpack(">h", body[3 + 7 * i:5 + 7 * i])[0]: struct.unpack(">hh", body[5 + 7 * i:9 + 7 * i])
                  for i in range(3)}
            assert v3 == v0, v3
            with pytest.raises(ConnectionError):
                raw_request(sock, 3, 1, struct.pack(">i", -1))  # Metadata before authenticating
        import kafka

        producer = kafka.KafkaProducer(bootstrap_servers=upstream.bootstrap, security_protocol="SASL_PLAINTEXT",
                                       sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=FRONT_USER,
                                       sasl_plain_password=FRONT_PASSWORD, acks="all", request_timeout_ms=15000,
                                       max_block_ms=20000)
        try:
            metadata = producer.send(topic, value=b"from-kafka-python", partition=3).get(timeout=30)
            assert (metadata.partition, metadata.offset) == (3, 0)
        finally:
            producer.close(timeout=10)
        lines, stderr = run_sarama(sarama, "produce", upstream.bootstrap, topic, "3", "SCRAM-SHA-256", FRONT_USER,
                                   FRONT_PASSWORD, "--prefix", "from-sarama", timeout_s=40.0)
        assert lines[-1].get("delivered") == 1 and not lines[-1].get("error"), (lines[-1], stderr[-3000:])
        front_log = upstream.log()
        assert "with SCRAM-SHA-512 (SaslHandshake v0, raw tokens after SaslHandshake v0)" in front_log, front_log
        assert "with SCRAM-SHA-256 (SaslHandshake v1, SaslAuthenticate v0)" in front_log, front_log
        assert "API key 3 v1 before authentication: closing" in front_log, front_log
    finally:
        upstream.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_virtual_partitions_through_an_xdg_scram_front(scram_front, tmp_path, mechanism):
    topic = tb.unique_name("vp-scram-go")
    upstream = ScramFrontedBroker(scram_front, tmp_path, {topic: PHYSICAL}, "scram-up")
    proxy = None
    try:
        proxy = tb.Proxy(upstream, tmp_path, "scram-up-proxy", VIRTUAL_MAPPING_202,
                         kafka_extra=upstream_scram(mechanism))
        expected = tb.expected_values("go", VIRTUAL, PER_PARTITION)
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, expected)
        assert not failed and len(acked) == VIRTUAL * PER_PARTITION, failed[:5]
        tb.check_partition_streams(sorted(acked), expected)
        received = tb.confluent_consume_assigned(proxy.bootstrap, topic, VIRTUAL, VIRTUAL * PER_PARTITION,
                                                 timeout_s=40, drain_s=0.5)
        tb.check_partition_streams(received, expected)
        metrics = samples(proxy)
        assert metrics.get('kpp_sasl_broker_authentications_total{outcome="success"}', 0) > 0, metrics
        assert metrics.get('kpp_sasl_broker_authentications_total{outcome="failure"}', 0) == 0, metrics
        front_log = upstream.log()
        successes = re.findall(rf"authenticated user '{FRONT_USER}' with {mechanism} \(SaslHandshake v1, "
                               r"SaslAuthenticate v\d\)", front_log)
        # The start-up metadata connection and at least one data connection of the proxy.
        assert len(successes) >= 2, front_log[-3000:]
        assert "authentication failed" not in front_log, front_log[-3000:]
        # The data path's own link (not only start-up's metadata connection) says so too.
        assert re.search(rf"SASL {mechanism} authentication as '{FRONT_USER}' to broker 1 at \S+ succeeded",
                         proxy.log_tail(2000)), proxy.log_tail(100)
    finally:
        if proxy:
            proxy.stop()
        upstream.stop()


@pytest.mark.parametrize("case", ["wrong-password", "mechanism-not-enabled", "front-without-the-password"])
def test_a_refused_upstream_login_is_named(scram_front, tmp_path, monkeypatch, case):
    """The front refuses the proxy (a wrong password, a mechanism it does not enable), or the
    proxy refuses the front: one that accepts the proof but signs its final message with
    another password's server key does not know the password."""
    topic = tb.unique_name("vp-scram-go-bad")
    front_mechanisms = "SCRAM-SHA-256" if case == "mechanism-not-enabled" else "SCRAM-SHA-256,SCRAM-SHA-512"
    extra = ("--server-key-of-another-password",) if case == "front-without-the-password" else ()
    upstream = ScramFrontedBroker(scram_front, tmp_path, {topic: PHYSICAL}, f"scram-{case}", front_mechanisms, extra)
    wrong = "Wrong-Secret-9"
    password = wrong if case == "wrong-password" else FRONT_PASSWORD
    monkeypatch.setattr(tb, "PROXY_READY_TIMEOUT_S", 4.0)
    try:
        # Start-up waits for the cluster, which it never reaches: /ready stays false.
        with pytest.raises(AssertionError, match="proxy /ready"):
            tb.Proxy(upstream, tmp_path, f"scram-{case}-proxy", VIRTUAL_MAPPING_202,
                     kafka_extra=upstream_scram("SCRAM-SHA-512", password))
        log = read_log(tmp_path / f"scram-{case}-proxy.log")
        front_log = upstream.log()
        failures = [line for line in log.splitlines()
                    if f"SASL SCRAM-SHA-512 authentication as '{FRONT_USER}'" in line and "failed" in line]
        if case == "wrong-password":
            assert failures, log[-3000:]
            # The front's error message, passed on, and the setting to check.
            assert any("invalid credentials" in line for line in failures), failures
            assert not any(wrong in line for line in log.splitlines()), "the password was logged"
            assert "SCRAM-SHA-512 authentication failed (SaslAuthenticate v" in front_log, front_log[-3000:]
            assert "challenge proof invalid" in front_log, front_log[-3000:]
            assert "authenticated user" not in front_log, front_log[-3000:]
        elif case == "mechanism-not-enabled":
            assert "does not enable SCRAM-SHA-512" in log, log[-3000:]
            assert 'asked for "SCRAM-SHA-512", not enabled (error 33)' in front_log, front_log[-3000:]
            assert "authenticated user" not in front_log, front_log[-3000:]
        else:
            # The front saw a right proof; the proxy must still not go on.
            assert "authenticated user" in front_log, front_log[-3000:]
            assert "SASL SCRAM-SHA-512 authentication as 'kpp-proxy' failed: SCRAM: wrong server signature" in log, log[-3000:]
    finally:
        upstream.stop()


def test_the_data_path_checks_the_server_signature(scram_front, tmp_path):
    """Start-up meets a right front, the broker connections one that does not know the
    password: the proxy is ready but refuses to use those connections, and says why."""
    topic = tb.unique_name("vp-scram-go-data")
    upstream = ScramFrontedBroker(scram_front, tmp_path, {topic: PHYSICAL}, "scram-data",
                                  data_extra=("--server-key-of-another-password",))
    proxy = None
    try:
        proxy = tb.Proxy(upstream, tmp_path, "scram-data-proxy", VIRTUAL_MAPPING_202,
                         kafka_extra=upstream_scram("SCRAM-SHA-256"))
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, {7: ["never-7"]},
                                             extra_config={"message.timeout.ms": 4000}, flush_timeout_s=15)
        assert not acked and len(failed) == 1, (acked, failed)
        tb.wait_until(lambda: samples(proxy).get('kpp_sasl_broker_authentications_total{outcome="failure"}', 0) > 0,
                      10, "the failed broker authentication counted")
        log = proxy.log_tail(2000)
        assert re.search(rf"SASL SCRAM-SHA-256 authentication as '{FRONT_USER}' to broker 1 at \S+ failed: "
                         r".*wrong server signature", log), log[-3000:]
        assert "authenticated user" in read_log(upstream.data_log_path)  # the proof was right
        assert "authenticated user" in upstream.log()  # start-up's connection
    finally:
        if proxy:
            proxy.stop()
        upstream.stop()


# ---------------------------------------------------------------------------------------------
# Toward clients: sarama with xdg-go/scram's client against the proxy's SCRAM server


@pytest.fixture(scope="module")
def sarama(log_dir) -> str:
    return tb.sarama_binary(log_dir)


@pytest.fixture(scope="module")
def scram_listener_proxy(scram_front, tmp_path_factory):
    """A proxy with a SASL_PLAINTEXT listener (alice by password, bob by SCRAM-SHA-512 keys
    that xdg-go/scram derived) in front of a plain kpp-mem-broker. carol's stored key is
    right but her server key belongs to another password: the proxy accepts her proof and
    then signs with a key the client does not expect."""
    log_dir = tmp_path_factory.mktemp("scram-listen")
    topic = tb.unique_name("vp-scram-sarama")

    def xdg_keys(user: str, password: str, salt: str) -> dict:
        return json.loads(tb.run_checked([scram_front, "credentials", "--mechanism", "SCRAM-SHA-512", "--user", user,
                                          "--password", password, "--salt", salt, "--iterations", "4096"]).stdout)

    bob = xdg_keys("bob", BOB_PASSWORD, "bob-salt-xdg-0123")
    assert len(bob["stored_key"]) == 88, bob  # 64 bytes in base64: a SCRAM-SHA-512 key
    carol = {**xdg_keys("carol", CAROL_PASSWORD, "carol-salt-xdg"),
             "server_key": xdg_keys("carol", "not-" + CAROL_PASSWORD, "carol-salt-xdg")["server_key"]}
    listen = ("  security:\n"
              "    protocol: SASL_PLAINTEXT\n"
              "    sasl:\n"
              "      enabled_mechanisms: [SCRAM-SHA-256, SCRAM-SHA-512]\n"
              "      failed_authentication_delay_ms: 50\n"
              "      credentials:\n"
              "        users:\n"
              f"          alice: {ALICE_PASSWORD}\n"
              f"          bob: {json.dumps(bob)}\n"
              f"          carol: {json.dumps(carol)}\n")
    broker = producer_audit.StrictBroker(log_dir, {topic: PHYSICAL}, strict=False, name="scram-listen-broker")
    try:
        proxy = tb.Proxy(broker, log_dir, "scram-listen-proxy", VIRTUAL_MAPPING_202, listen_extra=listen)
    except AssertionError:
        broker.stop()
        raise
    yield proxy, topic
    proxy.stop()
    broker.stop()


def run_sarama(binary: str, op: str, bootstrap: str, topic: str, partitions: str, mechanism: str, user: str,
               password: str, *extra: str, timeout_s: float = 60.0) -> tuple[list[dict], str]:
    """vp-sarama's JSON lines (the last is "done") and its stderr; never fails on the exit
    code, the caller checks "done"."""
    import subprocess

    argv = [binary, op, "--bootstrap", bootstrap, "--topic", topic, "--partitions", partitions,
            "--sasl-mechanism", mechanism, "--sasl-user", user, "--sasl-password", password,
            "--timeout-ms", str(int(timeout_s * 1000) - 10000), *extra]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vp-sarama hung: {argv}") from None
    lines = [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("type") == "done", (result.returncode, result.stdout[-2000:],
                                                       result.stderr[-3000:])
    return lines, result.stderr.decode(errors="replace")


def test_sarama_with_xdg_scram_carries_virtual_partitions(scram_listener_proxy, sarama):
    proxy, topic = scram_listener_proxy
    before = samples(proxy)
    expected = tb.expected_values("sarama", VIRTUAL, PER_PARTITION)
    lines, stderr = run_sarama(sarama, "produce", proxy.bootstrap, topic, f"0-{VIRTUAL - 1}", "SCRAM-SHA-256",
                               "alice", ALICE_PASSWORD, "--count", str(PER_PARTITION), "--prefix", "sarama",
                               "--order", "round")
    done = lines[-1]
    assert not done.get("error") and not done.get("timed_out"), (done, stderr[-3000:])
    assert done["error_count"] == 0 and done["delivered"] == VIRTUAL * PER_PARTITION, done
    tb.check_partition_streams(sorted(tb.node_records(lines, "delivery")), expected)
    lines, stderr = run_sarama(sarama, "consume", proxy.bootstrap, topic, ",".join(map(str, READ_BACK)),
                               "SCRAM-SHA-512", "bob", BOB_PASSWORD, "--expect", str(PER_PARTITION),
                               "--drain-ms", "300", "--partition-timeout-ms", "10000")
    done = lines[-1]
    assert not done.get("error") and not done.get("partition_timed_out"), (done, stderr[-3000:])
    records = [(line["partition"], line["offset"], line["value"]) for line in lines if line["type"] == "record"]
    tb.check_partition_streams(records, {p: expected[p] for p in READ_BACK})
    after = samples(proxy)
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        name = f'kpp_sasl_authentications_total{{mechanism="{mechanism}"}}'
        assert after.get(name, 0) > before.get(name, 0), (mechanism, after)
    failures = sum(value for name, value in after.items() if name.startswith("kpp_sasl_authentication_failures_total"))
    assert failures == sum(value for name, value in before.items()
                           if name.startswith("kpp_sasl_authentication_failures_total")), after


@pytest.mark.parametrize("mechanism,user", [("SCRAM-SHA-256", "alice"), ("SCRAM-SHA-512", "bob")])
def test_sarama_with_a_wrong_password_is_refused(scram_listener_proxy, sarama, mechanism, user):
    proxy, topic = scram_listener_proxy
    wrong = f"not-{user}-password"
    lines, stderr = run_sarama(sarama, "produce", proxy.bootstrap, topic, "0", mechanism, user, wrong,
                               "--verbose", "1", timeout_s=40.0)
    done = lines[-1]
    assert done.get("error") and not done.get("timed_out"), done
    assert not tb.node_records(lines, "delivery"), lines[:5]
    # sarama's text of error 58 (SASL_AUTHENTICATION_FAILED) from the SaslAuthenticate answer.
    assert "SASL Authentication failed" in stderr, stderr[-3000:]
    log = proxy.log_tail(400)
    assert f"authentication failed for user '{user}'" in log, log[-3000:]
    assert wrong not in log
    tb.wait_until(lambda: samples(proxy).get(f'kpp_sasl_authentication_failures_total{{mechanism="{mechanism}"}}', 0)
                  >= 1, 10, "the failure counted")


def test_sarama_checks_the_proxy_server_signature(scram_listener_proxy, sarama):
    """The other half of the success above: xdg-go/scram's client does verify the server's
    final message, so the proxy's right signatures there were checked, not ignored."""
    proxy, topic = scram_listener_proxy
    lines, stderr = run_sarama(sarama, "produce", proxy.bootstrap, topic, "0", "SCRAM-SHA-512", "carol",
                               CAROL_PASSWORD, "--verbose", "1", timeout_s=40.0)
    assert lines[-1].get("error") and not tb.node_records(lines, "delivery"), lines[-1]
    assert "server validation failed" in stderr, stderr[-3000:]
    assert "authenticated as 'carol' with SASL SCRAM-SHA-512" in proxy.log_tail(400)
