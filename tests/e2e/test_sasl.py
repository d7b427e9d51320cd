"""SASL toward clients and toward brokers (issue 13, DESIGN.md section 6).

Toward clients, a SASL_SSL listener (the PKI of tls_support) in front of the 2.0.2 mock with
the virtual mapping, users given as passwords (alice, in a credentials file re-read on
SIGHUP) and as SCRAM keys only (bob, SCRAM-SHA-512), OAUTHBEARER tokens signed by the test
(RS256 and ES256, with the openssl command) and checked against a PEM file:

- confluent-kafka (librdkafka 2.0.2) with PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and
  OAUTHBEARER, kcat (librdkafka 1.9) with PLAIN and SCRAM-SHA-512, kafka-python with PLAIN
  and SCRAM-SHA-256: every virtual partition read holds exactly what was produced to it.
- Wrong passwords, unknown users, unsigned (alg none) and expired tokens are refused with
  SASL_AUTHENTICATION_FAILED; the log names peer and user and never the secret.
- Before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are answered,
  by the proxy itself (no byte goes upstream); anything else closes the connection.
- KIP-368: the session lifetime is returned, a re-authentication renews it, and a request
  after it ran out closes the connection.
- SIGHUP re-reads the credentials file: a new user gets in, open connections go on, and a
  broken file changes nothing.

Toward brokers, a second proxy with kafka.security_protocol SASL_PLAINTEXT authenticates to
the first one (whose server side the tests above verify) with each mechanism; a wrong
password keeps it from ever reaching the cluster, with a message saying so.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

import kpp_testbed as tb
import vp_support as vs
from conftest import VIRTUAL_MAPPING_202
from sasl_support import (ALICE_PASSWORD, BOB_PASSWORD, b64url, claims, client_config, failed_authentications,
                          log_text, sasl_listen, sign_jwt)
from sasl_support import credentials_file, sasl_proxy, token_keys  # noqa: F401 (fixtures)
from tls_support import pki, samples  # noqa: F401 (pki is a fixture)

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="SASL is the proxy's own")

PHYSICAL, VIRTUAL, PER_PARTITION = 10, 100, 2


# ---------------------------------------------------------------------------------------------
# Real clients through the SASL_SSL listener


def test_each_mechanism_carries_virtual_partitions(sasl_proxy, mock202, pki, token_keys):
    topic, created = tb.Endpoint(mock202, sasl_proxy).create_topic("vp-sasl", PHYSICAL)
    assert created == PHYSICAL
    expected = tb.expected_values("sasl", VIRTUAL, PER_PARTITION)
    acked, failed = tb.confluent_produce(sasl_proxy.bootstrap, topic, expected,
                                         extra_config=client_config(pki, "PLAIN"))
    assert not failed, failed[:5]
    assert len(acked) == VIRTUAL * PER_PARTITION
    # confluent-kafka with each mechanism reads virtual partitions of different groups.
    rs256 = sign_jwt(token_keys, "RS256", claims("svc-reader"))
    es256 = sign_jwt(token_keys, "ES256", claims("svc-reader"))
    readers = {
        (0, 1, 2): client_config(pki, "SCRAM-SHA-256"),
        (13, 27): client_config(pki, "SCRAM-SHA-512", "bob", BOB_PASSWORD),
        (41, 99): client_config(pki, "OAUTHBEARER", token=rs256),
        (58, 64): client_config(pki, "OAUTHBEARER", token=es256),
    }
    for partitions, config in readers.items():
        reads = vs.read_partitions(sasl_proxy.bootstrap, topic, partitions, **config)
        tb.check_partition_streams(vs.as_stream(reads), {p: expected[p] for p in partitions})
    # kcat (librdkafka 1.9 of Debian): PLAIN and SCRAM-SHA-512.
    for mechanism, user, password, partition in (("PLAIN", "alice", ALICE_PASSWORD, 37),
                                                 ("SCRAM-SHA-512", "bob", BOB_PASSWORD, 73)):
        result = tb.run_checked(
            ["kcat", "-b", sasl_proxy.bootstrap, "-X", "security.protocol=SASL_SSL",
             "-X", f"ssl.ca.location={pki / 'ca.pem'}", "-X", f"sasl.mechanisms={mechanism}",
             "-X", f"sasl.username={user}", "-X", f"sasl.password={password}",
             "-C", "-t", topic, "-p", str(partition), "-o", "beginning", "-e", "-J"], timeout_s=40)
        values = [json.loads(line)["payload"] for line in result.stdout.decode().splitlines() if line.strip()]
        assert values == expected[partition], (mechanism, values)
    # kafka-python 2.0.2: PLAIN and SCRAM-SHA-256.
    import kafka

    for mechanism, partition in (("PLAIN", 5), ("SCRAM-SHA-256", 88)):
        consumer = kafka.KafkaConsumer(bootstrap_servers=sasl_proxy.bootstrap, security_protocol="SASL_SSL",
                                       ssl_cafile=str(pki / "ca.pem"), sasl_mechanism=mechanism,
                                       sasl_plain_username="alice", sasl_plain_password=ALICE_PASSWORD,
                                       enable_auto_commit=False, auto_offset_reset="earliest", group_id=None,
                                       request_timeout_ms=15000)
        try:
            consumer.assign([kafka.TopicPartition(topic, partition)])
            consumer.seek_to_beginning()
            got, deadline = [], time.monotonic() + 30
            while len(got) < PER_PARTITION and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    got.extend(m.value.decode() for m in batch)
            assert got == expected[partition], (mechanism, got)
        finally:
            consumer.close()
    metrics = samples(sasl_proxy)
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"):
        assert metrics.get(f'kpp_sasl_authentications_total{{mechanism="{mechanism}"}}', 0) >= 2, (mechanism, metrics)


def produce_error(bootstrap: str, config: dict, topic: str) -> str:
    """The error a confluent-kafka producer reports (through error_cb or delivery)."""
    import confluent_kafka

    errors = []
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 6000,
                                         "error_cb": lambda error: errors.append(str(error)), **config})
    producer.produce(topic, value=b"never", partition=0,
                     on_delivery=lambda error, _m: errors.append(str(error)) if error else None)
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    producer.purge()
    producer.flush(1)
    return " | ".join(errors)


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "alg-none", "expired", "wrong-audience",
                                  "tampered-signature"])
def test_bad_credentials_are_refused(sasl_proxy, mock202, pki, token_keys, case):
    before = failed_authentications(sasl_proxy)
    if case == "wrong-password":
        config = client_config(pki, "SCRAM-SHA-256", password="not-" + ALICE_PASSWORD)
    elif case == "unknown-user":
        config = client_config(pki, "PLAIN", user="mallory", password="guess")
    elif case == "alg-none":
        header = b64url(json.dumps({"alg": "none"}).encode())
        unsigned = f"{header}.{b64url(json.dumps(claims('svc-reader')).encode())}."
        config = client_config(pki, "OAUTHBEARER", token=unsigned)
    elif case == "expired":
        config = client_config(pki, "OAUTHBEARER",
                               token=sign_jwt(token_keys, "RS256", claims("svc-reader", lifetime_s=-60)))
    elif case == "wrong-audience":
        config = client_config(pki, "OAUTHBEARER",
                               token=sign_jwt(token_keys, "ES256", claims("svc-reader", aud="another")))
    else:
        # A valid token whose claims were changed after signing (another subject).
        token = sign_jwt(token_keys, "RS256", claims("svc-reader"))
        head, _, signature = token.split(".")
        forged = f"{head}.{b64url(json.dumps(claims('admin')).encode())}.{signature}"
        config = client_config(pki, "OAUTHBEARER", token=forged)
    error = produce_error(sasl_proxy.bootstrap, config, "vp-sasl-refused")
    assert "Authentication failed" in error or "AUTHENTICATION" in error.upper(), error
    tb.wait_until(lambda: failed_authentications(sasl_proxy) > before, 10, "the failure counted")
    log = log_text(sasl_proxy)
    assert "authentication failed for user" in log
    if case == "wrong-password":
        assert "for user 'alice'" in log
        assert "not-" + ALICE_PASSWORD not in log
    if case == "unknown-user":
        assert "for user 'mallory'" in log and "guess" not in log


# ---------------------------------------------------------------------------------------------
# The protocol seen from a raw socket (SASL_PLAINTEXT, session lifetime)


class RawClient:
    """Kafka requests by hand: header v1, non-flexible versions only."""

    def __init__(self, bootstrap: str):
        host, port = tb.parse_bootstrap(bootstrap)[0]
        self.sock = socket.create_connection((host, port), timeout=10)
        self.correlation = 0

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        client_id = b"raw-sasl"
        payload = struct.pack(">hhih", api_key, version, self.correlation, len(client_id)) + client_id + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", self.recv_exact(4))[0]
        response = self.recv_exact(size)
        assert struct.unpack(">i", response[:4])[0] == self.correlation
        return response[4:]

    def recv_exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed by the proxy")
            data += chunk
        return data

    def closed_by_peer(self, timeout_s: float = 5.0) -> bool:
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def handshake(self, mechanism: str) -> int:
        body = self.request(17, 1, struct.pack(">h", len(mechanism)) + mechanism.encode())
        return struct.unpack(">h", body[:2])[0]

    def authenticate(self, token: bytes) -> tuple[int, int]:
        """(error code, session lifetime ms) of SaslAuthenticate v1."""
        body = self.request(36, 1, struct.pack(">i", len(token)) + token)
        error = struct.unpack(">h", body[:2])[0]
        at = 2
        length = struct.unpack(">h", body[at:at + 2])[0]
        at += 2 + max(length, 0)
        length = struct.unpack(">i", body[at:at + 4])[0]
        at += 4 + max(length, 0)
        return error, struct.unpack(">q", body[at:at + 8])[0]

    def metadata(self) -> bytes:
        return self.request(3, 1, struct.pack(">i", -1))

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def short_session_proxy(mock202, pki, token_keys, credentials_file, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("sasl-short")
    proxy = tb.Proxy(mock202, log_dir, "sasl-short", VIRTUAL_MAPPING_202,
                     listen_extra=sasl_listen("SASL_PLAINTEXT", pki, credentials_file,
                                              "      session_lifetime_ms: 1500\n"))
    yield proxy
    proxy.stop()


def upstream_bytes(proxy) -> float:
    metrics = samples(proxy)
    return metrics.get('kpp_bytes_total{direction="to_upstream"}', 0)


def test_only_sasl_is_answered_before_authentication(short_session_proxy):
    proxy = short_session_proxy
    sent_before = upstream_bytes(proxy)
    client = RawClient(proxy.bootstrap)
    try:
        versions = client.request(18, 1, b"")
        error, count = struct.unpack(">hi", versions[:6])
        assert error == 0
        keys = {struct.unpack(">hhh", versions[6 + 6 * i:12 + 6 * i])[0]:
                struct.unpack(">hhh", versions[6 + 6 * i:12 + 6 * i])[1:] for i in range(count)}
        assert keys[17] == (0, 1) and keys[36] == (0, 2), keys
        assert 3 in keys and 0 in keys and 1 in keys, keys  # Metadata, Produce, Fetch from the cluster's list
        assert client.handshake("GSSAPI") == 33  # UNSUPPORTED_SASL_MECHANISM
        # Metadata before authenticating: the connection is closed, nothing answered.
        with pytest.raises(ConnectionError):
            client.metadata()
    finally:
        client.close()
    assert upstream_bytes(proxy) == sent_before, "an unauthenticated client caused upstream traffic"
    tb.wait_until(lambda: samples(proxy).get("kpp_sasl_unauthenticated_requests_total", 0) >= 1, 5,
                  "the refused request counted")
    assert "Metadata request before SASL authentication" in log_text(proxy)


def test_session_lifetime_reauthentication_and_expiry(short_session_proxy):
    proxy = short_session_proxy
    plain = b"\0alice\0" + ALICE_PASSWORD.encode()
    client = RawClient(proxy.bootstrap)
    try:
        assert client.handshake("PLAIN") == 0
        error, lifetime = client.authenticate(plain)
        assert (error, lifetime) == (0, 1500)
        assert client.metadata()  # authenticated: forwarded and answered
        time.sleep(0.8)
        # KIP-368 re-authentication on the same connection renews the session.
        assert client.handshake("PLAIN") == 0
        assert client.authenticate(plain) == (0, 1500)
        time.sleep(0.9)  # past the first session's end, inside the renewed one
        assert client.metadata()
        # Another user may not take over the connection.
        assert client.handshake("SCRAM-SHA-512") == 0
    finally:
        client.close()
    metrics = samples(proxy)
    assert metrics.get("kpp_sasl_reauthentications_total", 0) >= 1, metrics
    # A session that runs out: the next request closes the connection.
    client = RawClient(proxy.bootstrap)
    try:
        assert client.handshake("PLAIN") == 0
        assert client.authenticate(plain) == (0, 1500)
        time.sleep(1.7)
        try:
            client.metadata()
            closed = client.closed_by_peer()
        except (ConnectionError, OSError):
            closed = True
        assert closed, "a request after the session ended was served"
    finally:
        client.close()
    tb.wait_until(lambda: samples(proxy).get("kpp_sasl_sessions_expired_total", 0) >= 1, 5, "expiry counted")
    assert "expired without re-authentication" in log_text(proxy)


def test_failed_attempt_is_answered_late_and_closes(short_session_proxy):
    client = RawClient(short_session_proxy.bootstrap)
    try:
        assert client.handshake("PLAIN") == 0
        started = time.monotonic()
        error, _ = client.authenticate(b"\0alice\0wrong")
        assert error == 58  # SASL_AUTHENTICATION_FAILED
        assert time.monotonic() - started >= 0.04  # failed_authentication_delay_ms: 50
        assert client.closed_by_peer()
    finally:
        client.close()


def test_sighup_rereads_credentials(short_session_proxy, credentials_file):
    proxy = short_session_proxy
    carol = b"\0carol\0carol-Secret-3"
    alice = b"\0alice\0" + ALICE_PASSWORD.encode()
    open_client = RawClient(proxy.bootstrap)
    try:
        assert open_client.handshake("PLAIN") == 0
        assert open_client.authenticate(alice)[0] == 0
        probe = RawClient(proxy.bootstrap)
        assert probe.handshake("PLAIN") == 0
        assert probe.authenticate(carol)[0] == 58
        probe.close()
        original = credentials_file.read_text()
        credentials_file.write_text(original + "carol: carol-Secret-3\n")
        proxy.process.send_signal(signal.SIGHUP)
        tb.wait_until(lambda: "reload (SIGHUP)" in log_text(proxy), 10, "the reload logged")

        def carol_gets_in() -> bool:
            attempt = RawClient(proxy.bootstrap)
            try:
                return attempt.handshake("PLAIN") == 0 and attempt.authenticate(carol)[0] == 0
            finally:
                attempt.close()
        tb.wait_until(carol_gets_in, 10, "carol accepted after SIGHUP")
        assert open_client.metadata()  # the connection opened before the reload goes on
        # A broken file: refused, named, and nothing changes.
        credentials_file.write_text("carol: {iterations: 5}\n")
        proxy.process.send_signal(signal.SIGHUP)
        tb.wait_until(lambda: "reload (SIGHUP) refused" in log_text(proxy), 10, "the refusal logged")
        assert "listen.security.sasl.credentials.file" in log_text(proxy)
        assert carol_gets_in()
    finally:
        credentials_file.write_text(f"alice: {ALICE_PASSWORD}\n")
        open_client.close()


def send_frame(sock: socket.socket, declared: int, payload: bytes) -> None:
    sock.sendall(struct.pack(">i", declared) + payload)


def sasl_header(api_key: int, version: int) -> bytes:
    return struct.pack(">hhih", api_key, version, 7, 3) + b"bad"


@pytest.mark.parametrize("case", ["oversized-frame", "auth-bytes-past-the-end", "handshake-string-past-the-end",
                                  "huge-garbage-token"])
def test_malformed_and_oversized_sasl_requests_close_only_that_connection(short_session_proxy, case):
    proxy = short_session_proxy
    plain = b"\0alice\0" + ALICE_PASSWORD.encode()
    bystander = RawClient(proxy.bootstrap)
    assert bystander.handshake("PLAIN") == 0 and bystander.authenticate(plain)[0] == 0
    attacker = RawClient(proxy.bootstrap)
    try:
        sock = attacker.sock
        if case == "oversized-frame":
            # Before authentication at most 512 KiB (Kafka's sasl.server.max.receive.size).
            send_frame(sock, 1 << 20, sasl_header(36, 1) + b"x" * 1000)
            expected_log = "bytes before SASL authentication (at most 524288 bytes until then)"
        elif case == "auth-bytes-past-the-end":
            assert attacker.handshake("PLAIN") == 0
            body = sasl_header(36, 1) + struct.pack(">i", 0x7FFFFFFF) + b"short"
            send_frame(sock, len(body), body)
            expected_log = "malformed request"
        elif case == "handshake-string-past-the-end":
            body = sasl_header(17, 1) + struct.pack(">h", 300) + b"PLAIN"
            send_frame(sock, len(body), body)
            expected_log = "malformed request"
        else:
            assert attacker.handshake("PLAIN") == 0
            token = b"\0alice\0" + b"z" * (400 * 1024)
            error, _ = attacker.authenticate(token)
            assert error == 58
            expected_log = "authentication failed for user 'alice'"
        assert attacker.closed_by_peer(), "the connection stayed open"
    finally:
        attacker.close()
    assert proxy.alive()
    assert bystander.metadata(), "another client's connection was hurt"
    bystander.close()
    assert expected_log in log_text(proxy)


@pytest.fixture(scope="module")
def crowded_proxy(mock202, pki, token_keys, credentials_file, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("sasl-crowd")
    proxy = tb.Proxy(mock202, log_dir, "sasl-crowd", VIRTUAL_MAPPING_202,
                     listen_extra="  max_connections: 1500\n" + sasl_listen("SASL_SSL", pki, credentials_file))
    yield proxy
    proxy.stop()


def test_a_thousand_concurrent_tls_handshakes(crowded_proxy, pki):
    """1,000 clients handshake at once and each gets its ApiVersions answer (answered by the
    proxy before authentication); afterwards an authenticated client works as before."""
    import asyncio
    import ssl

    host, port = tb.parse_bootstrap(crowded_proxy.bootstrap)[0]
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    request = struct.pack(">hhih", 18, 1, 42, 5) + b"crowd"

    answered = []

    async def one(gate: asyncio.Event):
        reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname="localhost")
        writer.write(struct.pack(">i", len(request)) + request)
        await writer.drain()
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        answer = await reader.readexactly(size)
        answered.append(1)
        await gate.wait()  # every connection stays open until all 1,000 are answered
        writer.close()
        return struct.unpack(">ih", answer[:6])

    async def crowd():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(one(gate)) for _ in range(1000)]
        while len(answered) < len(tasks) and not any(task.done() for task in tasks):
            await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(asyncio.wait_for(crowd(), 120))
    assert len(results) == 1000
    assert all(correlation == 42 and error == 0 for correlation, error in results)
    metrics = samples(crowded_proxy)
    assert metrics.get('kpp_tls_handshakes_total{side="client"}', 0) >= 1000, metrics
    assert crowded_proxy.alive()
    topic, _ = tb.Endpoint(crowded_proxy.upstream, crowded_proxy).create_topic(tb.unique_name("vp-crowd"), PHYSICAL)
    acked, failed = tb.confluent_produce(crowded_proxy.bootstrap, topic, {7: ["after-the-crowd"]},
                                         extra_config=client_config(pki, "PLAIN"))
    assert not failed and len(acked) == 1, failed


# ---------------------------------------------------------------------------------------------
# SASL toward brokers: a second proxy authenticates to the first


class ProxyAsUpstream:
    """What tb.Proxy needs of its upstream, pointing at another proxy's ports."""

    def __init__(self, proxy, broker_count: int):
        self.broker_count = broker_count
        self.broker_addresses = {node: ("127.0.0.1", proxy.broker_port(node)) for node in range(1, broker_count + 1)}
        self.bootstrap = proxy.bootstrap


@pytest.fixture(scope="module")
def sasl_front(mock202, pki, token_keys, credentials_file, tmp_path_factory):
    """The first proxy: SASL_PLAINTEXT, passing partitions through (no mapping)."""
    log_dir = tmp_path_factory.mktemp("sasl-front")
    proxy = tb.Proxy(mock202, log_dir, "sasl-front", "",
                     listen_extra=sasl_listen("SASL_PLAINTEXT", pki, credentials_file))
    yield proxy
    proxy.stop()


def upstream_sasl(mechanism: str, token_file: Path | None = None, password: str = ALICE_PASSWORD) -> str:
    text = f"  security_protocol: SASL_PLAINTEXT\n  sasl:\n    mechanism: {mechanism}\n"
    if mechanism == "OAUTHBEARER":
        return text + f"    token_file: {token_file}\n"
    user = "bob" if mechanism == "SCRAM-SHA-512" else "alice"
    if user == "bob" and password == ALICE_PASSWORD:
        password = BOB_PASSWORD
    return text + f"    username: {user}\n    password: {password}\n"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"])
def test_virtual_partitions_through_a_sasl_upstream(sasl_front, mock202, token_keys, tmp_path, mechanism):
    token_file = tmp_path / "token"
    token_file.write_text(sign_jwt(token_keys, "RS256", claims("kpp-proxy")) + "\n")
    upstream = ProxyAsUpstream(sasl_front, mock202.broker_count)
    before = samples(sasl_front).get(f'kpp_sasl_authentications_total{{mechanism="{mechanism}"}}', 0)
    proxy = tb.Proxy(upstream, tmp_path, f"sasl-up-{mechanism.lower()}", VIRTUAL_MAPPING_202,
                     kafka_extra=upstream_sasl(mechanism, token_file))
    try:
        topic, _ = tb.Endpoint(mock202, proxy).create_topic(tb.unique_name("vp-sasl-up"), PHYSICAL)
        expected = tb.expected_values("up", VIRTUAL, PER_PARTITION)
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, expected)
        assert not failed and len(acked) == VIRTUAL * PER_PARTITION, failed[:5]
        partitions = [0, 9, 10, 55, 99]
        reads = vs.read_partitions(proxy.bootstrap, topic, partitions)
        tb.check_partition_streams(vs.as_stream(reads), {p: expected[p] for p in partitions})
        ours = samples(proxy)
        assert ours.get('kpp_sasl_broker_authentications_total{outcome="success"}', 0) >= 2, ours
        assert ours.get('kpp_sasl_broker_authentications_total{outcome="failure"}', 0) == 0
        after = samples(sasl_front).get(f'kpp_sasl_authentications_total{{mechanism="{mechanism}"}}', 0)
        assert after > before
    finally:
        proxy.stop()


def test_a_wrong_upstream_password_is_named(sasl_front, mock202, tmp_path):
    upstream = ProxyAsUpstream(sasl_front, mock202.broker_count)
    with pytest.raises(AssertionError):
        # Start-up waits for the cluster, which it never reaches: /ready stays false.
        tb.PROXY_READY_TIMEOUT_S, saved = 6, tb.PROXY_READY_TIMEOUT_S
        try:
            tb.Proxy(upstream, tmp_path, "sasl-up-wrong", VIRTUAL_MAPPING_202,
                     kafka_extra=upstream_sasl("SCRAM-SHA-256", password="wrong"))
        finally:
            tb.PROXY_READY_TIMEOUT_S = saved
    log = (tmp_path / "sasl-up-wrong.log").read_text(errors="replace")
    assert "SASL SCRAM-SHA-256 authentication as 'alice' failed" in log, log[-2000:]
    failure_line = next(line for line in log.splitlines() if "authentication as 'alice' failed" in line)
    assert "wrong" not in failure_line, failure_line
