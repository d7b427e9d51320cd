"""What the SASL tests share (test_sasl.py, test_sasl_node.py): users and their secrets, SCRAM
credentials and OAUTHBEARER tokens made by the test, the listener's configuration and the
module-scoped fixtures of a SASL_SSL proxy in front of the 2.0.2 mock with the virtual mapping.

A test module takes the fixtures by importing them (pytest finds fixtures by name in the
requesting module), together with tls_support.pki they depend on; module scope then means one
instance per test module.

Users: alice has a password (in a credentials file re-read on SIGHUP), bob SCRAM-SHA-512 keys
only; tokens are signed with rsa.key (RS256) or ec.key (ES256) and checked against keys.pem.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path

import pytest

import kpp_testbed as tb
from conftest import VIRTUAL_MAPPING_202
from tls_support import openssl, pki, samples  # noqa: F401 (pki is a fixture)

ALICE_PASSWORD = "alice-Secret-1"
BOB_PASSWORD = "bob-Secret-2"
ISSUER, AUDIENCE = "https://idp.kpp.test", "kafka-proxy"


# ---------------------------------------------------------------------------------------------
# Credentials and tokens made by the test


def scram_keys(password: str, salt: bytes, iterations: int, name: str) -> dict:
    """The stored and server keys of RFC 5802 (what Kafka's SCRAM credentials hold)."""
    salted = hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    return {"salt": base64.b64encode(salt).decode(), "iterations": iterations,
            "stored_key": base64.b64encode(hashlib.new(name, client_key).digest()).decode(),
            "server_key": base64.b64encode(hmac.new(salted, b"Server Key", name).digest()).decode()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der: bytes) -> bytes:
    """An ECDSA signature from DER (SEQUENCE of two INTEGERs) to JWS's r || s, 32 bytes each."""
    assert der[0] == 0x30
    at = 2 if der[1] < 0x80 else 3
    parts = []
    for _ in range(2):
        assert der[at] == 0x02
        length = der[at + 1]
        parts.append(der[at + 2:at + 2 + length].lstrip(b"\0").rjust(32, b"\0"))
        at += 2 + length
    return b"".join(parts)


def sign_jwt(keys: Path, alg: str, claims: dict) -> str:
    header = {"alg": alg, "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    key = keys / ("rsa.key" if alg == "RS256" else "ec.key")
    result = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(),
                            capture_output=True, timeout=30, check=True)
    signature = result.stdout if alg == "RS256" else der_to_raw(result.stdout)
    return f"{signing_input}.{b64url(signature)}"


def claims(subject: str, lifetime_s: int = 600, **extra) -> dict:
    now = int(time.time())
    return {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + lifetime_s,
            "scope": "kafka", **extra}


@pytest.fixture(scope="module")
def token_keys(pki) -> Path:
    """rsa.key / ec.key sign tokens; keys.pem holds both public keys (what the proxy reads)."""
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key", cwd=pki)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.key", cwd=pki)
    openssl("pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub", cwd=pki)
    openssl("pkey", "-in", "ec.key", "-pubout", "-out", "ec.pub", cwd=pki)
    (pki / "keys.pem").write_bytes((pki / "rsa.pub").read_bytes() + (pki / "ec.pub").read_bytes())
    return pki


# ---------------------------------------------------------------------------------------------
# The listener and its clients


def sasl_listen(protocol: str, pki: Path, credentials_file: Path, extra: str = "") -> str:
    """listen.security for `protocol` (SASL_SSL or SASL_PLAINTEXT) with every mechanism;
    `extra` adds lines under listen.security.sasl (six spaces in)."""
    bob = scram_keys(BOB_PASSWORD, b"bob-salt-0123456", 4096, "sha512")
    text = ("  security:\n"
            f"    protocol: {protocol}\n")
    if protocol == "SASL_SSL":
        text += ("    tls:\n"
                 f"      cert_path: {pki / 'server.pem'}\n"
                 f"      key_path: {pki / 'server.key'}\n")
    text += ("    sasl:\n"
             "      enabled_mechanisms: [PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER]\n"
             "      failed_authentication_delay_ms: 50\n"
             "      credentials:\n"
             f"        file: {credentials_file}\n"
             "        users:\n"
             f"          bob: {json.dumps(bob)}\n"
             "      oauthbearer:\n"
             f"        public_key_path: {pki / 'keys.pem'}\n"
             f"        issuer: {ISSUER}\n"
             f"        audience: {AUDIENCE}\n"
             "        required_scopes: [kafka]\n"
             "        clock_skew_seconds: 5\n" + extra)
    return text


def client_config(pki: Path, mechanism: str, user: str = "alice", password: str = ALICE_PASSWORD,
                  token: str | None = None, tls: bool = True) -> dict:
    """confluent-kafka settings for one mechanism."""
    config = {"security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT", "sasl.mechanisms": mechanism}
    if tls:
        config.update({"ssl.ca.location": str(pki / "ca.pem"), "ssl.endpoint.identification.algorithm": "https"})
    if mechanism == "OAUTHBEARER":
        config["oauth_cb"] = lambda _config: (token, time.time() + 300)
    else:
        config.update({"sasl.username": user, "sasl.password": password})
    return config


@pytest.fixture(scope="module")
def credentials_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sasl-creds") / "users.yaml"
    path.write_text(f"alice: {ALICE_PASSWORD}\n")
    return path


@pytest.fixture(scope="module")
def sasl_proxy(mock202, pki, token_keys, credentials_file, tmp_path_factory):
    """A SASL_SSL proxy with the virtual mapping of the 2.0.2 mock."""
    log_dir = tmp_path_factory.mktemp("sasl-proxy")
    proxy = tb.Proxy(mock202, log_dir, "sasl-proxy", VIRTUAL_MAPPING_202,
                     listen_extra=sasl_listen("SASL_SSL", pki, credentials_file))
    yield proxy
    proxy.stop()


def log_text(proxy) -> str:
    proxy._log_file.flush()
    return proxy.log_path.read_text(errors="replace")


def failed_authentications(proxy) -> float:
    return sum(value for name, value in samples(proxy).items()
               if name.startswith("kpp_sasl_authentication_failures_total"))
