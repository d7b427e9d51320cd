"""SASL toward clients seen by the Node clients of tools/node/kpp_client.js: kafkajs 2.2.4 and
node-rdkafka 3.6.1 (librdkafka 2.12) through a SASL_SSL listener in front of the 2.0.2 mock,
whose vp-* topics are 100 virtual over 10 physical partitions (the proxy, users and tokens of
sasl_support, shared with test_sasl.py):

- kafkajs with PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER, node-rdkafka with PLAIN,
  SCRAM-SHA-512 and OAUTHBEARER (a token signed by the test): what one client produces to
  virtual partitions 0..29 (three on each physical partition) a second client with the same
  mechanism reads back, each virtual partition holding exactly its records, in order, at the
  offsets acknowledged.
- kafkajs with a wrong password stops soon with an authentication error.
- KIP-368: node-rdkafka produces for about 16 s through a listener whose sessions last 3 s;
  librdkafka re-authenticates each broker connection at 90 % of the lifetime
  (kpp_sasl_reauthentications_total grows, kpp_sasl_sessions_expired_total does not), and
  every record lands once on its virtual partition. Its bootstrap connection is closed after
  the first metadata, so it never needs to.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

import kpp_testbed as tb
from conftest import VIRTUAL_MAPPING_202
from sasl_support import (ALICE_PASSWORD, BOB_PASSWORD, claims, failed_authentications, log_text, sasl_listen,
                          sign_jwt)
from sasl_support import credentials_file, sasl_proxy, token_keys  # noqa: F401 (fixtures)
from tls_support import pki, samples  # noqa: F401 (pki is a fixture)

pytestmark = pytest.mark.skipif(tb.direct_mode(), reason="SASL is the proxy's own")

PHYSICAL = 10
PARTITIONS, PER_PARTITION = 30, 3  # virtual partitions 0..29: three on each physical partition
SESSION_LIFETIME_MS = 3000
# 800 records over about 16 s: a connection opened late in a slow run still lives past its
# third re-authentication (at about 3 x 2.7 s after it opened), with 5 s to spare.
PACED_PARTITIONS, PACED_COUNT, PACED_INTERVAL_MS = 20, 40, 20
USERS = {"PLAIN": ("alice", ALICE_PASSWORD), "SCRAM-SHA-256": ("alice", ALICE_PASSWORD),
         "SCRAM-SHA-512": ("bob", BOB_PASSWORD)}


# ---------------------------------------------------------------------------------------------
# Helpers


def security(pki: Path, mechanism: str, password: str | None = None, token: str | None = None) -> dict:
    """kpp_client.js's options for SASL_SSL with one mechanism (users as in sasl_support)."""
    options = {"security_protocol": "SASL_SSL", "ca": pki / "ca.pem", "sasl_mechanism": mechanism}
    if mechanism == "OAUTHBEARER":
        options["oauth_token"] = token
    else:
        user, known_password = USERS[mechanism]
        options.update(username=user, password=password or known_password)
    return options


def authentications(proxy, mechanism: str) -> float:
    return samples(proxy).get(f'kpp_sasl_authentications_total{{mechanism="{mechanism}"}}', 0)


def errors_of(lines: list[dict]) -> list[str]:
    return [line["error"] for line in lines if line.get("type") == "log" and "error" in line]


def produce(lib: str, bootstrap: str, topic: str, prefix: str, options: dict, partitions: int = PARTITIONS,
            count: int = PER_PARTITION, timeout_s: float = tb.CLIENT_TIMEOUT_S) -> tuple[list, list[dict]]:
    """count records to each of virtual partitions 0..partitions-1; returns (acked (partition,
    offset, value), the client's lines) after checking every record was acknowledged."""
    lines = tb.node_client(lib, "produce", bootstrap, timeout_s, topic=topic, partitions=partitions,
                           count=count, prefix=prefix, **options)
    done = lines[-1]
    assert not done.get("errors"), f"{lib}: delivery errors {done['errors'][:5]}"
    acked = tb.node_records(lines, "delivery")
    assert done["delivered"] == len(acked) == partitions * count, done
    return acked, lines


def read_back(lib: str, bootstrap: str, topic: str, prefix: str, options: dict, acked: list,
              partitions: int = PARTITIONS, count: int = PER_PARTITION) -> list[dict]:
    """Reads virtual partitions 0..partitions-1 (node-rdkafka assigns them, kafkajs subscribes
    to the topic in a group of its own) and checks each holds exactly its records, in order,
    at the offsets the producer was given."""
    lines = tb.node_client(lib, "consume", bootstrap, topic=topic, partitions=partitions,
                           expect=partitions * count, **options)
    received = tb.node_records(lines, "record")
    tb.check_partition_streams(received, tb.expected_values(prefix, partitions, count))
    assert sorted(received) == sorted(acked), "records read back are not those acknowledged"
    return lines


# ---------------------------------------------------------------------------------------------
# Both libraries through the SASL_SSL listener


@pytest.mark.parametrize("lib, mechanism", [
    ("kafkajs", "PLAIN"), ("kafkajs", "SCRAM-SHA-256"), ("kafkajs", "SCRAM-SHA-512"), ("kafkajs", "OAUTHBEARER"),
    ("rdkafka", "PLAIN"), ("rdkafka", "SCRAM-SHA-512"), ("rdkafka", "OAUTHBEARER"),
])
def test_virtual_partitions_round_trip(sasl_proxy, mock202, pki, token_keys, lib, mechanism):
    topic, created = tb.Endpoint(mock202, sasl_proxy).create_topic(f"vp-sasl-{lib}", PHYSICAL)
    assert created == PHYSICAL
    token = sign_jwt(token_keys, "RS256", claims("svc-node")) if mechanism == "OAUTHBEARER" else None
    options = security(pki, mechanism, token=token)
    before = authentications(sasl_proxy, mechanism)
    acked, _ = produce(lib, sasl_proxy.bootstrap, topic, mechanism.lower(), options)
    tb.check_partition_streams(acked, tb.expected_values(mechanism.lower(), PARTITIONS, PER_PARTITION))
    read_back(lib, sasl_proxy.bootstrap, topic, mechanism.lower(), options, acked)
    # Both clients authenticated with this mechanism (at least one connection each).
    assert authentications(sasl_proxy, mechanism) >= before + 2


def test_kafkajs_wrong_password_is_reported(sasl_proxy, pki):
    before = failed_authentications(sasl_proxy)
    started = time.monotonic()
    lines = tb.node_client("kafkajs", "produce", sasl_proxy.bootstrap, 40, allow_error=True,
                           topic="vp-sasl-refused", partitions=1, count=1,
                           **security(pki, "SCRAM-SHA-256", password="not-" + ALICE_PASSWORD))
    elapsed_s = time.monotonic() - started
    done = lines[-1]
    assert not done.get("timed_out"), f"kafkajs hung on a refused authentication: {done}"
    assert not tb.node_records(lines, "delivery"), "a record went through with a wrong password"
    error = done.get("error", "")
    assert "SASL" in error and "authentication failed" in error.lower(), error[:2000]
    assert elapsed_s < 30, f"the refusal took {elapsed_s:.1f} s to reach the client"
    tb.wait_until(lambda: failed_authentications(sasl_proxy) > before, 10, "the failure counted")
    log = log_text(sasl_proxy)
    assert "SASL SCRAM-SHA-256 authentication failed for user 'alice'" in log
    assert "not-" + ALICE_PASSWORD not in log


# ---------------------------------------------------------------------------------------------
# KIP-368: librdkafka re-authenticates before the session ends


@pytest.fixture(scope="module")
def short_session_proxy(mock202, pki, token_keys, credentials_file, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("sasl-node-reauth")
    proxy = tb.Proxy(mock202, log_dir, "sasl-node-reauth", VIRTUAL_MAPPING_202,
                     listen_extra=sasl_listen("SASL_SSL", pki, credentials_file,
                                              f"      session_lifetime_ms: {SESSION_LIFETIME_MS}\n"))
    yield proxy
    proxy.stop()


def session_counters(proxy) -> tuple[float, float]:
    metrics = samples(proxy)
    return (metrics.get("kpp_sasl_reauthentications_total", 0),
            metrics.get("kpp_sasl_sessions_expired_total", 0))


def lifetimes_by_broker(lines: list[dict]) -> dict[str, list[str]]:
    """librdkafka's "Received session lifetime N ms" debug lines by broker thread (the bootstrap
    connection, which librdkafka 2.12 closes after its first metadata, left out)."""
    by_broker: dict[str, list[str]] = {}
    for line in lines:
        match = re.match(r"\[thrd:([^\]]+)\]: (Received session lifetime .*)", line.get("message", ""))
        if line.get("type") == "debug" and match and not match.group(1).endswith("/bootstrap"):
            by_broker.setdefault(match.group(1), []).append(match.group(2))
    return by_broker


def test_rdkafka_reauthenticates_within_the_session_lifetime(short_session_proxy, mock202, pki):
    proxy = short_session_proxy
    topic, _ = tb.Endpoint(mock202, proxy).create_topic("vp-sasl-reauth", PHYSICAL)
    # The mock picks leaders at random (all 10 on two brokers about one run in twenty); the
    # checks below want a connection to every broker.
    mock202.spread_leaders(topic, PHYSICAL)
    options = security(pki, "SCRAM-SHA-512")
    reauthenticated_before, expired_before = session_counters(proxy)
    started = time.monotonic()
    acked, lines = produce("rdkafka", proxy.bootstrap, topic, "paced",
                           {**options, "interval_ms": PACED_INTERVAL_MS, "debug": "security"},
                           partitions=PACED_PARTITIONS, count=PACED_COUNT, timeout_s=90)
    elapsed_s = time.monotonic() - started
    reauthenticated, expired = session_counters(proxy)
    by_broker = lifetimes_by_broker(lines)
    per_connection = Counter(re.findall(r"client (\S+): re-authenticated as 'bob' with SASL SCRAM-SHA-512",
                                        log_text(proxy)))
    lifetime_counts = {name: len(got) for name, got in by_broker.items()}
    evidence = (f"producer ran {elapsed_s:.1f} s; session lifetimes librdkafka received per broker "
                f"{lifetime_counts}; re-authentications per client connection in the proxy log "
                f"{dict(per_connection)}; client errors {errors_of(lines)[:5]}")
    # The records go to virtual partitions on every broker, each over one connection that lives
    # the whole run (about 16 s): librdkafka re-authenticates at 90 % of the lifetime, so at
    # least three times on each.
    assert elapsed_s >= 4 * SESSION_LIFETIME_MS / 1000, evidence
    assert len(by_broker) == mock202.broker_count, evidence
    for got in by_broker.values():
        assert len(got) >= 4 and all(f"{SESSION_LIFETIME_MS} ms" in m for m in got), evidence
    assert reauthenticated - reauthenticated_before >= 3 * mock202.broker_count, evidence
    assert sum(1 for count in per_connection.values() if count >= 3) >= mock202.broker_count, evidence
    assert expired == expired_before, f"sessions expired without re-authentication; {evidence}"
    assert not errors_of(lines), evidence
    # Everything produced is there once, on its virtual partition.
    tb.check_partition_streams(acked, tb.expected_values("paced", PACED_PARTITIONS, PACED_COUNT))
    read_back("rdkafka", proxy.bootstrap, topic, "paced", options, acked,
              partitions=PACED_PARTITIONS, count=PACED_COUNT)
    assert session_counters(proxy)[1] == expired_before, "a session of the reader expired"
    assert "expired without re-authentication" not in log_text(proxy)
