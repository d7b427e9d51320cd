"""TLS toward clients (issue 13, DESIGN.md section 6): listen.security.protocol SSL.

A PKI made with the openssl command for each run (a CA, a server certificate for
127.0.0.1 and localhost, a client certificate), a proxy with the virtual mapping of the
2.0.2 mock behind an SSL listener (every port: bootstrap and per broker):

- confluent-kafka (librdkafka 2.0.2, host name verification on) and kcat produce and
  consume virtual partitions over TLS: each virtual partition holds exactly its records;
  kafka-python reads them too.
- Clients that do not speak TLS, or stop half-way, are closed with a log line and a
  metric; the proxy keeps serving TLS clients; a handshake that never finishes is closed
  at listen.security.tls.handshake_timeout_ms.
- mTLS: with require_client_cert the client certificate is needed, and a client without
  one is refused.
- The record layer runs in the proxy (kernel TLS is not offered by this kernel).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

import kpp_testbed as tb
import vp_support as vs
from conftest import VIRTUAL_MAPPING_202
from tls_support import openssl, pki, samples  # noqa: F401 (pki is a fixture)

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="TLS toward clients is the proxy's listener")

PHYSICAL, VIRTUAL, PER_PARTITION = 10, 100, 3


def tls_listen(pki: Path, extra: str = "") -> str:
    return ("  security:\n"
            "    protocol: SSL\n"
            "    tls:\n"
            f"      cert_path: {pki / 'server.pem'}\n"
            f"      key_path: {pki / 'server.key'}\n"
            "      handshake_timeout_ms: 1500\n" + extra)


def ssl_client(pki: Path, with_cert: bool = False) -> dict:
    config = {"security.protocol": "SSL", "ssl.ca.location": str(pki / "ca.pem"),
              "ssl.endpoint.identification.algorithm": "https"}
    if with_cert:
        config.update({"ssl.certificate.location": str(pki / "client.pem"),
                       "ssl.key.location": str(pki / "client.key")})
    return config


@pytest.fixture(scope="module")
def tls_proxy(mock202, pki, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tls-proxy")
    proxy = tb.Proxy(mock202, log_dir, "tls-proxy", VIRTUAL_MAPPING_202, listen_extra=tls_listen(pki))
    yield proxy
    proxy.stop()


def test_virtual_partitions_over_tls(tls_proxy, mock202, pki):
    topic, created = tb.Endpoint(mock202, tls_proxy).create_topic("vp-tls", PHYSICAL)
    assert created == PHYSICAL
    expected = tb.expected_values("tls", VIRTUAL, PER_PARTITION)
    acked, failed = tb.confluent_produce(tls_proxy.bootstrap, topic, expected, extra_config=ssl_client(pki))
    assert not failed, failed[:5]
    assert len(acked) == VIRTUAL * PER_PARTITION
    reads = vs.read_partitions(tls_proxy.bootstrap, topic, range(VIRTUAL), **ssl_client(pki))
    tb.check_partition_streams(vs.as_stream(reads), expected)
    # kcat (librdkafka 1.9 of Debian) over TLS: one more virtual partition, read back.
    tls_flags = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={pki / 'ca.pem'}"]
    result = tb.run_checked(["kcat", "-b", tls_proxy.bootstrap, *tls_flags, "-C", "-t", topic,
                             "-p", "37", "-o", "beginning", "-e", "-J", "-m", "15"], timeout_s=40)
    import json

    values = [json.loads(line)["payload"] for line in result.stdout.decode().splitlines() if line.strip()]
    assert values == expected[37], values
    # kafka-python over TLS reads a virtual partition of another group.
    import kafka

    consumer = kafka.KafkaConsumer(bootstrap_servers=tls_proxy.bootstrap, security_protocol="SSL",
                                   ssl_cafile=str(pki / "ca.pem"), enable_auto_commit=False,
                                   auto_offset_reset="earliest", group_id=None, request_timeout_ms=15000)
    try:
        consumer.assign([kafka.TopicPartition(topic, 58)])
        consumer.seek_to_beginning()
        got, deadline = [], time.monotonic() + 30
        while len(got) < PER_PARTITION and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend(m.value.decode() for m in batch)
        assert got == expected[58], got
    finally:
        consumer.close()
    metrics = samples(tls_proxy)
    assert metrics.get('kpp_tls_handshakes_total{side="client"}', 0) >= 3, metrics
    assert metrics.get('kpp_tls_connections_total{mode="userspace"}', 0) >= 3
    assert metrics.get('kpp_tls_connections_total{mode="kernel"}', 0) == 0


def test_plaintext_garbage_and_stalled_handshakes_are_closed(tls_proxy, mock202, pki):
    host, port = "127.0.0.1", tls_proxy.port
    before = samples(tls_proxy)
    failures_before = before.get('kpp_tls_handshake_failures_total{side="client"}', 0)
    # A plaintext ApiVersions request: the TLS layer refuses it, the connection ends.
    with socket.create_connection((host, port), timeout=5) as plain:
        request = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04test"
        plain.sendall(len(request).to_bytes(4, "big") + request)
        answer = plain.recv(4096)
        assert not answer.startswith(b"\x00\x00"), "answered in plaintext"
        plain.settimeout(5)
        while plain.recv(4096):
            pass
    # Noise, and a connection that sends nothing: both closed, the second at the deadline.
    with socket.create_connection((host, port), timeout=5) as noise:
        noise.sendall(bytes(range(256)) * 4)
        noise.settimeout(5)
        while noise.recv(4096):
            pass
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=10) as silent:
        assert silent.recv(4096) == b""
    waited = time.monotonic() - started
    assert 1.0 < waited < 6.0, f"a silent connection was closed after {waited:.1f} s (timeout 1.5 s)"
    tb.wait_until(lambda: samples(tls_proxy).get(
        'kpp_tls_handshake_failures_total{side="client"}', 0) >= failures_before + 3, 10,
        "three counted handshake failures")
    log = tls_proxy.log_tail(200)
    assert "TLS handshake failed" in log and "handshake_timeout_ms" in log, log[-2000:]
    # The proxy still serves TLS clients.
    producer = vs.confluent_producer(tls_proxy.bootstrap, **ssl_client(pki))
    topic, _ = tb.Endpoint(mock202, tls_proxy).create_topic("vp-tls-after", PHYSICAL)
    assert len(vs.confluent_send(producer, [(topic, 42, None, b"after", None)])) == 1


def test_kernel_tls_is_not_chosen_where_the_kernel_lacks_it(mock202, pki, tmp_path, monkeypatch):
    """This kernel has no TLS ULP. Forced to try (KPP_TLS_TRY_KERNEL=1), the proxy stops
    receiving after each handshake, tries to install the keys, is refused, and carries on
    in userspace: clients see nothing of it, and the metric says where the records went."""
    monkeypatch.setenv("KPP_TLS_TRY_KERNEL", "1")
    proxy = tb.Proxy(mock202, tmp_path, "tls-ktls-proxy", VIRTUAL_MAPPING_202, listen_extra=tls_listen(pki))
    monkeypatch.delenv("KPP_TLS_TRY_KERNEL")
    try:
        topic, _ = tb.Endpoint(mock202, proxy).create_topic(tb.unique_name("vp-ktls"), PHYSICAL)
        expected = tb.expected_values("k", VIRTUAL, 2)
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, expected, extra_config=ssl_client(pki))
        assert not failed and len(acked) == VIRTUAL * 2, failed[:5]
        reads = vs.read_partitions(proxy.bootstrap, topic, [3, 50, 97], **ssl_client(pki))
        tb.check_partition_streams(vs.as_stream(reads), {p: expected[p] for p in (3, 50, 97)})
        metrics = samples(proxy)
        assert metrics.get('kpp_tls_connections_total{mode="kernel"}', 0) == 0, metrics
        assert metrics.get('kpp_tls_connections_total{mode="userspace"}', 0) >= 2
        assert "kernel TLS not offered by this kernel" in proxy.log_tail(400)
    finally:
        proxy.stop()


def test_client_certificates_when_required(mock202, pki, tmp_path):
    listen = tls_listen(pki, f"      ca_cert_path: {pki / 'ca.pem'}\n      require_client_cert: true\n"
                             "      principal:\n"
                             "        mapping_rules: ['RULE:^CN=([^,]+),O=other$/$1/', 'RULE:^CN=([^,]+),.*$/$1/U', DEFAULT]\n")
    proxy = tb.Proxy(mock202, tmp_path, "mtls-proxy", VIRTUAL_MAPPING_202, listen_extra=listen)
    try:
        topic, _ = tb.Endpoint(mock202, proxy).create_topic("vp-mtls", PHYSICAL)
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, {13: ["m-13-0"]},
                                             extra_config=ssl_client(pki, with_cert=True))
        assert not failed and len(acked) == 1, failed
        # The certificate's subject through the mapping rules: the second rule matches.
        assert "TLS client certificate 'CN=alice,O=kpp', principal 'ALICE'" in proxy.log_tail(400)
        refused, failed = tb.confluent_produce(
            proxy.bootstrap, topic, {14: ["m-14-0"]},
            extra_config={**ssl_client(pki), "message.timeout.ms": 4000}, flush_timeout_s=10)
        assert not refused and len(failed) == 1, (refused, failed)
        assert "TLS handshake failed" in proxy.log_tail(200)
    finally:
        proxy.stop()


def test_a_bad_principal_rule_stops_start_up_naming_it(mock202, pki, tmp_path):
    config = tmp_path / "bad-rule.yaml"
    config.write_text(f"listen:\n  address: 127.0.0.1:{tb.free_port()}\n" + tls_listen(pki, "      principal: {mapping_rules: ['RULE:^CN=(x$/y/']}\n")
                      + f"kafka:\n  bootstrap_servers: [\"{mock202.bootstrap.split(',')[0]}\"]\n")
    result = subprocess.run([tb.proxy_bin(), "-c", str(config)], capture_output=True, timeout=30)
    assert result.returncode == 2
    assert b"listen.security.tls.principal.mapping_rules: rule 1" in result.stderr + result.stdout, result.stderr


def test_start_up_names_the_setting_of_a_bad_certificate(mock202, pki, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"listen:\n  address: \"127.0.0.1:{tb.free_port()}\"\n  broker_port_base: {tb.free_port_base(3)}\n"
        + tls_listen(pki).replace(str(pki / "server.key"), str(pki / "client.key"))
        + f"kafka:\n  bootstrap_servers: [\"{mock202.bootstrap.split(',')[0]}\"]\n")
    result = subprocess.run([tb.proxy_bin(), "-c", str(config)], capture_output=True, timeout=30)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 2, output
    assert "listen.security.tls.key_path" in output and "does not match" in output, output


# ---------------------------------------------------------------------------------------------
# TLS toward brokers: HAProxy (Debian's, a TLS server this project did not write) terminates
# TLS in front of the in-memory broker, which advertises HAProxy's port.


class TlsFrontedBroker:
    """kpp-mem-broker behind an HAProxy TLS front; shaped like the other upstreams of
    kpp_testbed.Proxy (bootstrap, broker_addresses, broker_count)."""

    def __init__(self, log_dir: Path, topics: dict[str, int], pem: Path, name: str):
        import producer_audit

        self.front_port = tb.free_port()
        self.broker = producer_audit.StrictBroker(log_dir, topics, strict=False, name=f"{name}-broker",
                                                  advertise=f"127.0.0.1:{self.front_port}")
        config = log_dir / f"{name}-haproxy.cfg"
        config.write_text(
            "global\n  maxconn 1000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
            f"frontend tls\n  bind 127.0.0.1:{self.front_port} ssl crt {pem}\n  default_backend broker\n"
            f"backend broker\n  server b1 {self.broker.bootstrap}\n")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=open(log_dir / f"{name}-haproxy.log", "wb"))
        tb.wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", self.front_port)) == 0, 10, "HAProxy")
        self.kind = "mem-broker"
        self.broker_count = 1
        self.bootstrap = f"127.0.0.1:{self.front_port}"
        self.broker_addresses = {1: ("127.0.0.1", self.front_port)}
        self.topics = self.broker.topics

    def create_topic(self, name: str, partitions: int = 10) -> int:
        return self.broker.create_topic(name, partitions)

    def stop(self) -> None:
        self.haproxy.terminate()
        self.haproxy.wait(timeout=10)
        self.broker.stop()


def haproxy_pem(pki: Path, name: str) -> Path:
    pem = pki / f"{name}-haproxy.pem"
    pem.write_bytes((pki / f"{name}.pem").read_bytes() + (pki / f"{name}.key").read_bytes())
    return pem


def tls_upstream(ca: Path) -> str:
    return f"  security_protocol: SSL\n  tls:\n    ca_cert_path: {ca}\n"


@pytest.fixture(scope="module")
def wrong_name_cert(pki) -> Path:
    """A certificate from the same CA for another host only: no 127.0.0.1 in it."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "wrong.key",
            "-out", "wrong.csr", "-subj", "/O=kpp/CN=broker.example.com", cwd=pki)
    (pki / "wrong.ext").write_text("subjectAltName=DNS:broker.example.com\n")
    openssl("x509", "-req", "-in", "wrong.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "wrong.pem", "-days", "2", "-extfile", "wrong.ext", cwd=pki)
    return haproxy_pem(pki, "wrong")


def test_virtual_partitions_through_a_tls_upstream(pki, tmp_path):
    topic = tb.unique_name("vp-tls-up")
    upstream = TlsFrontedBroker(tmp_path, {topic: PHYSICAL}, haproxy_pem(pki, "server"), "tls-up")
    proxy = None
    try:
        proxy = tb.Proxy(upstream, tmp_path, "tls-up-proxy", VIRTUAL_MAPPING_202,
                         kafka_extra=tls_upstream(pki / "ca.pem"))
        expected = tb.expected_values("up", VIRTUAL, 2)
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, expected)
        assert not failed and len(acked) == VIRTUAL * 2, failed[:5]
        reads = vs.read_partitions(proxy.bootstrap, topic, [0, 9, 10, 55, 99])
        tb.check_partition_streams(vs.as_stream(reads), {v: expected[v] for v in (0, 9, 10, 55, 99)})
        metrics = samples(proxy)
        assert metrics.get('kpp_tls_handshakes_total{side="broker"}', 0) >= 1, metrics
        assert metrics.get('kpp_tls_handshake_failures_total{side="broker"}', 0) == 0
        assert "TLS toward brokers" in proxy.log_tail(400)
    finally:
        if proxy:
            proxy.stop()
        upstream.stop()


@pytest.mark.parametrize("case", ["wrong-ca", "wrong-name"])
def test_an_untrusted_upstream_is_refused_with_a_clear_message(pki, wrong_name_cert, tmp_path, case):
    """A broker certificate from another CA, or for another host name, is never talked to:
    start-up waits for the upstream and the log says why."""
    topic = tb.unique_name("vp-tls-bad")
    pem = wrong_name_cert if case == "wrong-name" else haproxy_pem(pki, "server")
    upstream = TlsFrontedBroker(tmp_path, {topic: PHYSICAL}, pem, f"tls-{case}")
    ca = pki / "ca.pem"
    if case == "wrong-ca":
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=other", cwd=pki)
        ca = pki / "other-ca.pem"
    try:
        with pytest.raises(AssertionError):
            tb.Proxy(upstream, tmp_path, f"tls-{case}-proxy", VIRTUAL_MAPPING_202, kafka_extra=tls_upstream(ca))
        log = (tmp_path / f"tls-{case}-proxy.log").read_text(errors="replace")
        want = "certificate verification failed"
        assert want in log, log[-3000:]
        assert ("IP address mismatch" in log) == (case == "wrong-name"), log[-3000:]
    finally:
        upstream.stop()
