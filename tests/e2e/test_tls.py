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

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="TLS toward clients is the proxy's listener")

PHYSICAL, VIRTUAL, PER_PARTITION = 10, 100, 3


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem, server.pem/.key (SAN 127.0.0.1, localhost), client.pem/.key (CN=alice)."""
    where = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/O=kpp/CN=kpp e2e CA",
            cwd=where)
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, extension in (("server", "/O=kpp/CN=localhost", ["-extfile", "san.ext"]),
                                     ("client", "/O=kpp/CN=alice", [])):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=where)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extension, cwd=where)
    return where


def samples(proxy) -> dict[str, float]:
    """Every /metrics sample by its full name with labels, e.g. 'kpp_tls_handshakes_total{side="client"}'."""
    status, text = proxy.http_get("/metrics")
    assert status == 200, f"/metrics answered {status}"
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name.strip()] = float(value)
    return values


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


def test_client_certificates_when_required(mock202, pki, tmp_path):
    listen = tls_listen(pki, f"      ca_cert_path: {pki / 'ca.pem'}\n      require_client_cert: true\n")
    proxy = tb.Proxy(mock202, tmp_path, "mtls-proxy", VIRTUAL_MAPPING_202, listen_extra=listen)
    try:
        topic, _ = tb.Endpoint(mock202, proxy).create_topic("vp-mtls", PHYSICAL)
        acked, failed = tb.confluent_produce(proxy.bootstrap, topic, {13: ["m-13-0"]},
                                             extra_config=ssl_client(pki, with_cert=True))
        assert not failed and len(acked) == 1, failed
        refused, failed = tb.confluent_produce(
            proxy.bootstrap, topic, {14: ["m-14-0"]},
            extra_config={**ssl_client(pki), "message.timeout.ms": 4000}, flush_timeout_s=10)
        assert not refused and len(failed) == 1, (refused, failed)
        assert "TLS handshake failed" in proxy.log_tail(200)
    finally:
        proxy.stop()


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
