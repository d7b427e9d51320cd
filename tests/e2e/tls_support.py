"""The test bed's PKI and metric helpers shared by the TLS and SASL tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


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
